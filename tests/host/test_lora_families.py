"""The LoRA tools (extract, resize, merge: nodes/adapters.py) on the tiny models of the 2026 families
(host/tiny_image_families.py, host/tiny_video_families.py), in process: one table.

Per family a perturbed copy of the base (a clone with rank-RANK deltas on a few of the family's linears, its key
styles: fused qkv, Flux's linear1, Qwen's img_mlp, LTX-2's audio and audio-to-video attention..., and a full delta
on one bare parameter where the family has one: Wan's modulation, LTX's scale_shift_table, Z-Image's pad token)
never touches the base. Each file a tool writes is loaded by the host's own LoraLoaderModelOnly path
(comfy.sd.load_lora_for_models -> comfy.lora.load_lora with comfy.lora.model_lora_keys_unet's key map), with
every "lora key not loaded" / "NOT LOADED" log line captured: a cell runs when no key is left unmatched, the
patched keys are exactly the perturbed ones, and the patched weights at strength 1 are what the tool promises:
- extract (WeLore threshold rule, exact SVD, fp32): the perturbed weights (the rule must find rank RANK);
- resize to rank 1: the base plus the best rank-1 approximation of each delta (Eckart-Young), bare parameters
  unchanged;
- merge (sum) of two extractions A and B at rank 2 * RANK: base + delta_A + delta_B;
- kohya: the extraction renamed to kohya's lora_unet_<path with underscores> keys, resized at its own rank with the
  model connected: back under diffusion_model.* keys, the perturbed weights.
A cell that cannot run must refuse with a message that names the family and says what to do; "mismatch" is such a
cell: the family's file resized against a model of another family. The expected table is written out below.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

IMAGE = ("flux2", "flux2_klein", "chroma", "qwen_image", "z_image")
VIDEO = ("wan22_ti2v_5b", "wan22_a14b_high", "wan22_a14b_low", "hunyuan_video15", "ltxv", "ltx2")
FAMILIES = IMAGE + VIDEO
RANK = 2
RUNS = "runs"
_WAN = ("blocks.0.self_attn.q", "blocks.1.cross_attn.k", "blocks.0.ffn.0")
# family -> (linears to perturb at rank RANK, bare parameters to perturb in full), module paths in the model
TARGETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "flux2": (("double_blocks.0.img_attn.qkv", "single_blocks.1.linear1", "double_stream_modulation_img.lin"), ()),
    "flux2_klein": (("double_blocks.0.txt_mlp.0", "single_blocks.0.linear1", "single_stream_modulation.lin"), ()),
    "chroma": (("double_blocks.0.img_attn.qkv", "single_blocks.0.linear1",
                "distilled_guidance_layer.layers.0.in_layer"), ()),
    "qwen_image": (("transformer_blocks.0.img_mlp.net.0.proj", "transformer_blocks.1.attn.add_q_proj",
                    "transformer_blocks.0.txt_mod.1"), ()),
    "z_image": (("layers.0.attention.qkv", "noise_refiner.0.feed_forward.w1", "context_refiner.0.attention.out"),
                ("x_pad_token",)),
    "wan22_ti2v_5b": (_WAN, ("blocks.0.modulation",)),
    "wan22_a14b_high": (_WAN, ("blocks.1.modulation",)),
    "wan22_a14b_low": (_WAN, ("head.modulation",)),
    "hunyuan_video15": (("double_blocks.0.img_attn.qkv", "double_blocks.1.img_mod.lin", "double_blocks.0.img_mlp.0",
                         "txt_in.individual_token_refiner.blocks.0.self_attn.qkv"), ()),
    "ltxv": (("transformer_blocks.0.attn1.to_q", "transformer_blocks.1.ff.net.0.proj", "adaln_single.linear"),
             ("transformer_blocks.0.scale_shift_table",)),
    "ltx2": (("transformer_blocks.0.audio_attn1.to_q", "transformer_blocks.0.audio_to_video_attn.to_v",
              "transformer_blocks.1.audio_ff.net.0.proj",
              "audio_embeddings_connector.transformer_1d_blocks.0.attn1.to_k"),
             ("transformer_blocks.0.audio_scale_shift_table",)),
}
# family -> (the family the file's keys are guessed as, the family whose model the "mismatch" cell connects)
GUESS = {
    "flux2": ("Flux.2", "qwen_image"), "flux2_klein": ("Flux.2", "ltxv"), "chroma": ("Chroma", "z_image"),
    "qwen_image": ("Qwen-Image", "flux2"), "z_image": ("Z-Image", "ltxv"), "wan22_ti2v_5b": ("Wan", "flux2"),
    "wan22_a14b_high": ("Wan", "qwen_image"), "wan22_a14b_low": ("Wan", "z_image"),
    "hunyuan_video15": ("HunyuanVideo", "qwen_image"), "ltxv": ("LTX-Video", "flux2"), "ltx2": ("LTX-2", "z_image"),
}
TOOLS = ("extract", "resize", "merge", "kohya", "mismatch")
# (tool, family) -> RUNS, or a piece of the refusal's message
EXPECTED: dict[tuple[str, str], str] = {
    **{(t, f): RUNS for t in ("extract", "resize", "merge", "kohya") for f in FAMILIES},
    **{("mismatch", f): f"looks made for {GUESS[f][0]}" for f in FAMILIES},   # 0 modules match the other model
}
HINTS = ("connect", "leave the model input unconnected")
TOL = 1e-4  # relative error of an fp32 exact-SVD factorisation at or above the delta's rank


class _Family:
    """Build, perturb and check one family (one instance per family, cached for the module)."""

    def __init__(self, comfy_host, family: str):
        image = family in IMAGE
        self.mod = comfy_host.module("host.tiny_image_families" if image else "host.tiny_video_families")
        missing = self.mod.missing_host_class(family) if image else self.mod.missing_host_classes(family)
        if missing:
            pytest.skip(f"this host lacks what {family} needs: {missing}")
        self.family = family
        self.base = self.mod.build(family)
        self.weights = {k: v.detach().float().clone() for k, v in self.base.model.state_dict().items()}
        self.files: dict[str, str] = {}

    def deltas(self, seed: int) -> dict[str, torch.Tensor]:
        """key -> the perturbation: rank RANK on TARGETS' linears, dense on its bare parameters."""
        g = torch.Generator().manual_seed(seed)
        linears, bare = TARGETS[self.family]
        out = {}
        for path in linears:
            key = f"diffusion_model.{path}.weight"
            w = self.weights[key]
            d = torch.randn(w.shape[0], RANK, generator=g) @ torch.randn(RANK, w[0].numel(), generator=g)
            out[key] = (0.3 * float(w.std()) / float(d.std()) * d).reshape(w.shape)
        for path in bare:
            key = f"diffusion_model.{path}"
            w = self.weights[key]
            out[key] = 0.1 * (float(w.std()) or 1.0) * torch.randn(w.shape, generator=g)
        return out

    def perturbed(self, seed: int):
        ft = self.base.clone()  # the base keeps its weights and gets no patches
        ft.add_patches({k: (d,) for k, d in self.deltas(seed).items()}, 1.0)
        return ft


@pytest.fixture(scope="module")
def loras_dir(comfy_host) -> Path:
    import folder_paths

    out = Path(folder_paths.get_output_directory()) / "loras"
    out.mkdir(exist_ok=True)
    folder_paths.add_model_folder_path("loras", str(out))  # as main.py does for output/loras
    return out


@pytest.fixture(scope="module")
def built() -> dict[str, _Family]:
    """Families built so far in this module (emptied at its end: a ModelPatcher collected at interpreter exit
    finds the host's modules gone)."""
    cache: dict[str, _Family] = {}
    yield cache
    cache.clear()


@pytest.fixture
def fam(comfy_host, built):
    def get(family: str) -> _Family:
        if family not in built:
            built[family] = _Family(comfy_host, family)
        return built[family]

    return get


@contextlib.contextmanager
def unmatched_keys():
    """Collect the keys the host logs as not loaded ("lora key not loaded: k" in comfy.lora.load_lora, "NOT
    LOADED k" in comfy.sd.load_lora_for_models for a key the model lacks)."""
    found: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            for marker in ("lora key not loaded: ", "NOT LOADED "):
                if msg.startswith(marker):
                    found.append(msg[len(marker):])

    handler = Catch(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield found
    finally:
        root.removeHandler(handler)


def newest(folder: Path, stem: str) -> str:
    path = max(folder.glob(f"{stem}_*_.safetensors"), key=lambda p: p.stat().st_mtime_ns)
    return str(path.relative_to(folder))


def check_file(f: _Family, name: str, want: dict[str, torch.Tensor], tol: float = TOL) -> list[str]:
    """Problems of the loras-folder file `name` on f.base through LoraLoaderModelOnly: unmatched keys, patched keys
    other than `want`'s, and patched deltas off `want` by more than `tol` relative (empty: all good)."""
    import comfy.lora

    import nodes

    with unmatched_keys() as lost:
        (patched,) = nodes.LoraLoaderModelOnly().load_lora_model_only(f.base, name, 1.0)
    problems = [f"{len(lost)} keys not loaded, e.g. {lost[0]}"] if lost else []
    if set(patched.patches) != set(want):
        problems.append(f"patched {sorted(set(patched.patches) ^ set(want))[:3]} (symmetric difference with want)")
    for key in set(patched.patches) & set(want):
        w = f.weights[key]
        got = comfy.lora.calculate_weight(patched.patches[key], w.clone(), key, intermediate_dtype=torch.float32) - w
        err = float((got - want[key]).norm() / want[key].norm())
        if not err <= tol:
            problems.append(f"{key}: relative error {err:.2e} > {tol:g}")
    return problems


def best_rank(d: torch.Tensor, k: int) -> torch.Tensor:
    """Eckart-Young: the best rank-k approximation of d.flatten(1), float64, reshaped back."""
    u, s, vh = torch.linalg.svd(d.double().flatten(1), full_matrices=False)
    return ((u[:, :k] * s[:k]) @ vh[:k]).float().reshape(d.shape)


def extract(comfy_host, f: _Family, seed: int, loras_dir: Path) -> str:
    stem = f"pyra_fam_{f.family}_{seed}"
    comfy_host.node("PyraExtractLoRA").execute(f.perturbed(seed), "threshold", 0.01, 8, "exact", "cpu", True,
                                               "fp32", f"loras/{stem}", model_b=f.base)
    return newest(loras_dir, stem)


def _run(comfy_host, f: _Family, tool: str, loras_dir: Path, fam) -> str:
    a = f.files.get("a") or f.files.setdefault("a", extract(comfy_host, f, 1, loras_dir))
    da = f.deltas(1)
    if tool == "extract":
        sd = load_file(str(loras_dir / a))
        ranks = {t.shape[1] for k, t in sd.items() if k.endswith(".lora_up.weight")}
        if ranks != {RANK}:
            return f"the threshold rule chose ranks {sorted(ranks)}, not the planted {RANK}"
        problems = check_file(f, a, da)
    elif tool == "resize":
        comfy_host.node("PyraResizeLoRA").execute(a, "rank", 1.0, "fp32", f"loras/pyra_fam_rs_{f.family}",
                                                  model=f.base)
        want = {k: best_rank(d, 1) if k.endswith(".weight") and d.ndim >= 2 else d for k, d in da.items()}
        problems = check_file(f, newest(loras_dir, f"pyra_fam_rs_{f.family}"), want, tol=1e-3)
    elif tool == "merge":
        b = f.files.get("b") or f.files.setdefault("b", extract(comfy_host, f, 2, loras_dir))
        comfy_host.node("PyraMergeLoRA").execute(
            "sum", 1.0, 0, "rank", float(2 * RANK), "fp32", f"loras/pyra_fam_mg_{f.family}", model=f.base,
            lora_1=a, weight_1=1.0, lora_2=b, weight_2=1.0, lora_3="None", weight_3=1.0, lora_4="None",
            weight_4=1.0)
        db = f.deltas(2)
        problems = check_file(f, newest(loras_dir, f"pyra_fam_mg_{f.family}"), {k: da[k] + db[k] for k in da})
    elif tool == "kohya":  # the file renamed to kohya's lora_unet_<path with underscores>, resized at its rank
        from comfy.utils import save_torch_file

        sd = load_file(str(loras_dir / a))
        renamed = {(("lora_unet_" + k[len("diffusion_model."):].rsplit(".", 2)[0].replace(".", "_") + "."
                     + ".".join(k.rsplit(".", 2)[1:])) if k.endswith(".weight") else
                    ("lora_unet_" + k[len("diffusion_model."):-len(".alpha")].replace(".", "_") + ".alpha")
                    if k.endswith(".alpha") else k): v for k, v in sd.items()}
        name = f"pyra_fam_kohya_{f.family}.safetensors"
        save_torch_file(renamed, str(loras_dir / name))
        comfy_host.node("PyraResizeLoRA").execute(name, "rank", float(RANK), "fp32", f"loras/pyra_fam_kh_{f.family}",
                                                  model=f.base)
        out = newest(loras_dir, f"pyra_fam_kh_{f.family}")
        if any(k.startswith("lora_unet_") for k in load_file(str(loras_dir / out))):
            return "resize against the model kept kohya names"
        problems = check_file(f, out, da)
    else:  # mismatch: the file against a model of another family
        other = fam(GUESS[f.family][1])
        comfy_host.node("PyraResizeLoRA").execute(a, "rank", 1.0, "fp32", "loras/pyra_fam_mismatch",
                                                  model=other.base)
        return "ran against a model of another family"
    return RUNS if not problems else "; ".join(problems)


def cell(comfy_host, f: _Family, tool: str, loras_dir: Path, fam) -> str:
    try:
        return _run(comfy_host, f, tool, loras_dir, fam)
    except Exception as err:  # the cell's refusal: its message is checked by the caller
        return f"refused: {type(err).__name__}: {err}"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("tool", TOOLS)
def test_cell(comfy_host, fam, loras_dir, tool, family):
    f = fam(family)
    outcome = cell(comfy_host, f, tool, loras_dir, fam)
    print(f"CELL {tool} {family} :: {outcome}")
    if outcome != RUNS:
        assert outcome.startswith("refused"), outcome
        assert any(h in outcome for h in HINTS), f"the refusal does not say what to do: {outcome}"
    expected = EXPECTED[(tool, family)]
    assert (outcome == RUNS) if expected == RUNS else (expected in outcome), outcome
    assert not f.base.patches, "the tools must not patch the base model"


@pytest.mark.parametrize("family", ["qwen_image", "ltx2"])
def test_the_checks_fail_on_broken_files(comfy_host, fam, loras_dir, family):
    """Each check of a cell catches what it is there for, on a family's real extraction: a wrong key prefix leaves
    keys unmatched, a dropped module or a wrong alpha is seen, and the resize and merge references are not met
    by the unresized / unmerged file."""
    from comfy.utils import save_torch_file

    f = fam(family)
    if "a" not in f.files:
        f.files["a"] = extract(comfy_host, f, 1, loras_dir)
    sd, da = load_file(str(loras_dir / f.files["a"])), f.deltas(1)
    assert check_file(f, f.files["a"], da) == []

    def broken(name: str, tensors: dict) -> list[str]:
        save_torch_file(tensors, str(loras_dir / f"{name}.safetensors"))
        return check_file(f, f"{name}.safetensors", da)

    wrong_prefix = broken("pyra_bad_prefix", {k.replace("diffusion_model.", "diffusion_modle.", 1): v
                                              for k, v in sd.items()})
    assert any("keys not loaded" in p for p in wrong_prefix), wrong_prefix
    first = next(k for k in sd if k.endswith(".alpha"))[: -len(".alpha")]
    dropped = broken("pyra_bad_drop", {k: v for k, v in sd.items() if not k.startswith(first + ".")})
    assert any("symmetric difference" in p for p in dropped), dropped
    doubled = broken("pyra_bad_alpha", {k: 2 * v if k == first + ".alpha" else v for k, v in sd.items()})
    assert any(p.startswith(first) and "relative error" in p for p in doubled), doubled
    want_rank1 = {k: best_rank(d, 1) if k.endswith(".weight") else d for k, d in da.items()}
    assert any("relative error" in p for p in check_file(f, f.files["a"], want_rank1, tol=1e-3))
    db = f.deltas(2)
    assert any("relative error" in p for p in check_file(f, f.files["a"], {k: da[k] + db[k] for k in da}))
