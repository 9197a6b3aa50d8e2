"""Search step schedules with AutoDiffusion's evolutionary search on the analytic proxy (CPU, seconds each).

    $(python3 tools/host.py python) tools/search_schedule.py --family sd3 --steps 8 --sampler dpmpp_2m \
        --out out/s.json
    $(python3 tools/host.py python) tools/search_schedule.py --family all --steps 4,6,8,10,15,20 \
        --sampler euler,dpmpp_2m \
        --out core/samplers/searched_schedules.json        # regenerates the pack's stored schedules

Every (family, sampler, steps) combination is searched independently; the JSON written to --out has the
stored-schedule format (core/samplers/searched_schedules.py) with the exact command in its metadata.
--reference DIR: match the band power of the images (png/jpg/webp) or 3-channel pixel-space tensors
(.safetensors/.latent/.pt, values in [-1, 1]) in DIR instead of the exact ODE solution.
--backend host: run the host's own comfy.k_diffusion sampler functions (any deterministic sampler name)
instead of the pack's host-free euler / dpmpp_2m.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from _host import import_host, pack_module  # noqa: E402

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
TENSOR_SUFFIXES = {".safetensors", ".latent", ".pt"}


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _load_tensor(path: Path) -> torch.Tensor:
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    return tensors.get("latent_tensor", next(iter(tensors.values())))


def load_reference(folder: Path) -> list[torch.Tensor]:
    """Every reference in `folder` as a (B, 3, H, W) float tensor in model space ([-1, 1])."""
    import numpy as np
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | TENSOR_SUFFIXES)
    if not files:
        raise SystemExit(f"--reference {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) or tensors "
                         f"({', '.join(sorted(TENSOR_SUFFIXES))}) found")
    out = []
    for path in files:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(path) as im:
                rgb = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32))
            out.append((rgb.permute(2, 0, 1)[None] / 127.5 - 1).double())
        else:
            tensor = _load_tensor(path).double()
            out.append(tensor[None] if tensor.ndim == 3 else tensor)
    return out


def sampler_function(name: str, backend: str):
    if backend == "fast":
        samplers = pack_module("core.samplers.ode_samplers").SAMPLERS
        if name not in samplers:
            raise SystemExit(f"--sampler {name}: the host-free backend has {', '.join(samplers)}; "
                             "use --backend host for the host's other deterministic samplers")
        return samplers[name]
    import_host(cpu=True)
    import comfy.k_diffusion.sampling as kds

    if not hasattr(kds, f"sample_{name}"):
        raise SystemExit(f"--sampler {name}: comfy.k_diffusion.sampling has no sample_{name}")
    return getattr(kds, f"sample_{name}")


def search_one(args, family, sampler_name: str, steps: int, reference) -> dict:
    proxy_mod, search_mod = pack_module("core.samplers.schedule_proxy"), pack_module("core.samplers.schedule_search")
    proxy = proxy_mod.BandErrorProxy(family, sampler_function(sampler_name, args.backend), size=args.size,
                                     samples=args.samples, seed=args.seed, reference=reference(family))
    search = search_mod.EvolutionarySearch(proxy, family.grid(), steps, population=args.population,
                                           select=args.select, mutations=args.mutations,
                                           crossovers=args.crossovers, m_prob=args.m_prob, seed=args.seed)
    result = search.run(args.generations, log=lambda m: print(f"  {family.name} {sampler_name} {steps}: {m}",
                                                               flush=True))
    return {"fractions": [round(float(u), 8) for u in search.fractions(result.best)],
            "grid_indices": list(reversed(result.best)), "score": round(result.score, 6),
            "uniform_score": round(result.uniform_score, 6),
            "initial_best_score": round(result.initial_best_score, 6), "evaluated": result.evaluated}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="all", help="comma list of sd15, sdxl, sd3, flux, wan21, or all")
    parser.add_argument("--steps", type=_int_list, default=[4, 6, 8, 10, 15, 20], help="comma list")
    parser.add_argument("--sampler", default="euler,dpmpp_2m", help="comma list")
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--population", type=int, default=40)
    parser.add_argument("--select", type=int, default=10)
    parser.add_argument("--mutations", type=int, default=20)
    parser.add_argument("--crossovers", type=int, default=20)
    parser.add_argument("--m-prob", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="noise batch and search seed")
    parser.add_argument("--samples", type=int, default=8, help="noise samples of the proxy")
    parser.add_argument("--size", type=int, default=None, help="proxy pixels per side (default: per family)")
    parser.add_argument("--reference", type=Path, default=None, help="folder of reference images / tensors")
    parser.add_argument("--backend", choices=("fast", "host"), default="fast")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)  # thousands of tiny tensor ops: threads only add overhead
    families_mod, analytic = pack_module("core.samplers.schedule_families"), pack_module("core.analytic")
    names = list(families_mod.FAMILIES) if args.family == "all" else args.family.split(",")
    families = [families_mod.get_family(n) for n in names]
    prior = analytic.NaturalImagePrior()
    images = load_reference(args.reference) if args.reference else None

    def reference(family):
        if images is None:
            return None
        size = args.size or family.proxy_size
        proxy_mod = pack_module("core.samplers.schedule_proxy")
        return torch.stack([proxy_mod.reference_band_power(im, size, prior) for im in images]).mean(0)

    t0 = time.perf_counter()
    schedules: dict = {}
    for family in families:
        for sampler_name in args.sampler.split(","):
            for steps in args.steps:
                entry = search_one(args, family, sampler_name, steps, reference)
                schedules.setdefault(family.name, {}).setdefault(sampler_name, {})[str(steps)] = entry
                print(f"{family.name} {sampler_name} {steps} steps: score {entry['score']:.5f} "
                      f"(uniform {entry['uniform_score']:.5f}) fractions {entry['fractions']}", flush=True)
    out = {
        "format": 1,
        "description": "AutoDiffusion-style searched schedules: model-time fractions u (descending from 1, then "
                       "sigma 0), mapped to sigma by the model's model_sampling.percent_to_sigma(1 - u).",
        "command": "python tools/search_schedule.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"), "seconds": round(time.perf_counter() - t0, 1),
        "torch": torch.__version__,
        "proxy": {"model": "analytic NaturalImagePrior (defaults)", "prior": dataclasses.asdict(prior),
                  "samples": args.samples, "seed": args.seed, "bands": 8, "backend": args.backend,
                  "target": f"reference set {args.reference.name}" if args.reference else "exact PF-ODE solution",
                  "score": "mean over channels and bands of |log(band power / target)|"},
        "search": {k: getattr(args, k) for k in ("generations", "population", "select", "mutations",
                                                 "crossovers", "m_prob")},
        "families": {f.name: {"parametrisation": f.parametrisation, "shift": f.shift,
                              "proxy_size": args.size or f.proxy_size} for f in families},
        "schedules": schedules,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} in {out['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
