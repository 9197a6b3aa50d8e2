"""Every Pyra node that takes a MODEL, on the tiny models of the 2026 families (host/tiny_image_families.py,
host/tiny_video_families.py), in process: one table. A cell either runs (a short sampling run gives a finite
latent of the right shape; feature slicing also equals the plain model) or refuses at once with a message that
names the model and says what to do. The expected table is written out below, so a change of behaviour on any
family shows as a failing cell; README's family table says the same."""

from __future__ import annotations

import pytest
import torch
from family_helpers import IMAGE_FAMILIES, TinyFamily

IMAGE = IMAGE_FAMILIES
VIDEO = ("wan22_ti2v_5b", "wan22_a14b_high", "wan22_a14b_low", "hunyuan_video15", "ltxv", "ltx2")
FAMILIES = IMAGE + VIDEO
RUNS = "runs"
# (node, family) -> RUNS, or a piece of the refusal's message
EXPECTED: dict[tuple[str, str], str] = {
    **{("PyraStepCache", f): RUNS for f in ("flux2", "flux2_klein")},   # as Flux.1: its preset, untuned here
    **{("PyraStepCache", f): RUNS for f in ("chroma", "qwen_image")},   # their own presets, untuned here
    ("PyraStepCache", "z_image"): RUNS,   # its layers gated by object patches (no block-replace hook in the class)
    **{("PyraSparseAttention", f): RUNS for f in ("flux2", "flux2_klein", "chroma", "qwen_image")},
    ("PyraSparseAttention", "z_image"): RUNS,   # caption (and padding) kept, the image grid sparse
    **{("PyraSparsify", f): RUNS for f in FAMILIES},
    **{("PyraFeatureSlicing", f): RUNS for f in ("flux2", "flux2_klein", "chroma", "qwen_image")},
    ("PyraFeatureSlicing", "z_image"): RUNS,   # the feed-forward of its layers and refiners
    **{("PyraPyramidSampler", f): RUNS for f in FAMILIES},
    **{("PyraDiffuseHigh", f): RUNS for f in FAMILIES},   # latent guidance, one 2x stage
    **{("PyraSearchedSigmas", f): "cannot tell the family of this model" for f in FAMILIES},
    **{("PyraDFMConvert", f): "not Flux 2" for f in ("flux2", "flux2_klein")},
    **{("PyraDFMConvert", f): "is not one: load an SD3, Flux.1 or Wan 2.1"
       for f in ("chroma", "qwen_image", "z_image")},
    # video: Wan 2.2 is the host's WanModel (14B experts load as Wan 2.1 T2V); HunyuanVideo 1.5 and LTX are not
    **{(n, f): RUNS for n in ("PyraStepCache", "PyraSparseAttention", "PyraDFMConvert", "PyraSearchedSigmas")
       for f in ("wan22_a14b_high", "wan22_a14b_low")},
    **{(n, "wan22_ti2v_5b"): RUNS for n in ("PyraStepCache", "PyraSparseAttention")},
    **{(n, f): RUNS for n in ("PyraSparsify", "PyraFeatureSlicing", "PyraPyramidSampler") for f in VIDEO},
    **{("PyraStepCache", f): RUNS for f in ("hunyuan_video15", "ltxv", "ltx2")},
    **{("PyraSparseAttention", f): RUNS for f in ("hunyuan_video15", "ltxv", "ltx2")},
    **{("PyraSearchedSigmas", f): "cannot tell the family of this model"
       for f in ("wan22_ti2v_5b", "hunyuan_video15", "ltxv", "ltx2")},
    ("PyraDFMConvert", "wan22_ti2v_5b"): "maps 48 to 48 channels",
    **{("PyraDFMConvert", f): "is not one: load an SD3, Flux.1 or Wan 2.1"
       for f in ("hunyuan_video15", "ltxv", "ltx2")},
}
HINTS = ("connect", "load ", "set family", "leave this node out")


def _defaults(node) -> dict:
    types = node.INPUT_TYPES()
    out = {}
    for group in ("required", "optional"):
        for name, spec in types.get(group, {}).items():
            info = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            options = spec[0] if isinstance(spec[0], (list, tuple)) else info.get("options")
            if "default" in info:
                out[name] = info["default"]
            elif options:
                out[name] = options[0]
    return out


def _sample(model, tiny: TinyFamily, steps=2):
    import comfy.sample

    shape = tiny.shape
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    pos, neg = tiny.conditioning(1), tiny.conditioning(2)
    return comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", pos, neg, torch.zeros(shape),
                               seed=1, disable_pbar=True)


def _cell(comfy_host, tiny: TinyFamily, node_id: str) -> str:
    node = comfy_host.node(node_id)
    model = tiny.build()
    shape = tiny.shape
    values = _defaults(node)
    try:
        if node_id in ("PyraPyramidSampler",):
            values.update(model=model, seed=1, steps=4, cfg=1.0, positive=tiny.conditioning(1),
                          negative=tiny.conditioning(2), latent_image={"samples": torch.zeros(shape)})
            out = node.execute(**values).args[0]["samples"]
        elif node_id == "PyraDiffuseHigh":
            values.update(model=model, seed=1, steps=2, guidance_steps=1, positive=tiny.conditioning(1),
                          negative=tiny.conditioning(2),
                          latent={"samples": torch.zeros(shape)})
            out = node.execute(**values).args[0]["samples"]
            want = (*shape[:-2], 2 * shape[-2], 2 * shape[-1])
            return RUNS if tuple(out.shape) == want and torch.isfinite(out).all() else f"bad output {tuple(out.shape)}"
        elif node_id == "PyraSearchedSigmas":
            values.update(model=model)
            out = node.execute(**values).args[0]
            return RUNS if torch.isfinite(out).all() else "non-finite sigmas"
        elif node_id == "PyraDFMConvert":
            values.update(model=model)
            converted = node.execute(**values).args[0]
            return RUNS if converted is not model else "returned the input model"
        else:
            values.update(model=model)
            patched = node.execute(**values).args[0]
            assert patched is not model, "a patch node must return a clone"
            out = _sample(patched, tiny)
            if node_id == "PyraFeatureSlicing":  # exact by construction: the same latent as the plain model
                plain = _sample(model, tiny)
                if not torch.allclose(out, plain, rtol=1e-4, atol=1e-5):
                    return f"differs from the plain model by {(out - plain).abs().max().item():.2e}"
    except Exception as err:  # the cell's refusal: its message is checked by the caller
        return f"refused: {type(err).__name__}: {err}"
    return RUNS if out.shape == shape and torch.isfinite(out).all() else f"bad output {tuple(out.shape)}"


NODES = ("PyraStepCache", "PyraSparseAttention", "PyraSparsify", "PyraFeatureSlicing", "PyraPyramidSampler",
         "PyraDiffuseHigh", "PyraSearchedSigmas", "PyraDFMConvert")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("node_id", NODES)
def test_cell(comfy_host, node_id, family):
    outcome = _cell(comfy_host, TinyFamily(comfy_host, family), node_id)
    print(f"CELL {node_id} {family} :: {outcome}")
    if outcome != RUNS:
        assert outcome.startswith("refused"), outcome
        assert any(h in outcome for h in HINTS), f"the refusal does not say what to do: {outcome}"
    expected = EXPECTED[(node_id, family)]
    assert (outcome == RUNS) if expected == RUNS else (expected in outcome), outcome
