"""End to end: one sampling step of a Flux-size DiT (random bf16 weights, the host's own Flux class) at 1024x1024,
dense vs PyraSparsify with every eligible linear layer sparsified (no speed check, no low-rank term).
Step time two ways: a 4-step run over 4 (the run's fixed cost included, as before) and the marginal step, the
difference of a 20-step and a 4-step run over 16 (what each further step of a longer run costs).
Memory: the dense model is unloaded before the sparse run (as the host does when the user switches models);
steady_* is torch.cuda.memory_allocated() with the model loaded and its ops built, peak_*_sampling the peak of
a further run on the loaded model; the peak_gib_*_run keys (first run, including the load) are kept. Under dynamic
VRAM the host's weight buffers come from comfy-aimdo's allocator, which torch's counters do not see, so the
device's own used memory (cudaMemGetInfo, after emptying torch's cache) is recorded beside them: weight_memory_ratio
is what the loaded sparse model holds on the device over what the loaded dense model holds.
Run through benchmarks/sparse24.py (--parts e2e or e2e_wanda); needs the host on PYTHONPATH (benchmarks/device_env.sh).
"""

from __future__ import annotations

import statistics
import time

from _host import import_host, pack_module


def run_seconds(patcher, cond, side: int, steps: int, repeats: int = 5) -> float:
    """Median seconds of a whole sampling run of `steps` Euler steps (`repeats` timed runs after a warm-up run)."""
    import comfy.samplers
    import torch
    from progressive_speed import timed

    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(cond, cond)
    guider.set_cfg(1.0)
    sampler = comfy.samplers.sampler_object("euler")
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", steps).cpu()
    x = torch.zeros(1, 16, side // 8, side // 8)

    def run():
        guider.sample(torch.randn_like(x), x, sampler, sigmas, seed=0, disable_pbar=True)

    run()  # warm-up: loads the model; for the sparse model, compresses weights and searches plans
    return statistics.median(timed(run, repeats))


def sampling_step_seconds(patcher, cond, side: int, steps: int) -> float:
    """Seconds per step of a `steps`-step run, the run's fixed cost (load, setup) spread over its steps."""
    return run_seconds(patcher, cond, side, steps) / steps


def marginal_step_seconds(patcher, cond, side: int, steps: int, long_steps: int) -> tuple[float, float]:
    """(seconds per step of a `steps`-step run, seconds one more step adds): the second is the difference of a
    `long_steps` and a `steps` run over the steps between, so the per-run cost (under dynamic VRAM a load at
    every run, ~0.1 s here) drops out."""
    short = run_seconds(patcher, cond, side, steps)
    return short / steps, (run_seconds(patcher, cond, side, long_steps) - short) / (long_steps - steps)


def device_used() -> int:
    """Bytes in use on the device by every allocator (torch's cache emptied first)."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    return total - free


def run_e2e(side: int = 1024, steps: int = 4, score: str = "magnitude", long_steps: int = 20) -> dict:
    """score "wanda": calibrated on the first step of the warm-up run, so the timed runs are fully sparse.
    Beside the default run (each layer on the faster of the 2:4 kernel and the dense matmul of its 2:4 weight at
    the token count it sees), the same model with every layer on the kernel (the behaviour before that choice)."""
    import_host()
    import comfy.model_management as mm
    import torch
    from progressive_speed import build

    sparsify = pack_module("host.sparsify")
    k24 = pack_module("kernels.sparse24_linear")
    # offload to the CPU, as a user's host does: unloading then really frees the GPU
    used = {"before": device_used()}
    t_start = time.perf_counter()
    patcher, cond, *_ = build("flux", torch.device("cuda"), offload_device=torch.device("cpu"))
    print(f"e2e: built in {time.perf_counter() - t_start:.1f} s", flush=True)
    torch.cuda.reset_peak_memory_stats()
    dense, dense_marginal = marginal_step_seconds(patcher, cond, side, steps, long_steps)
    dense_peak = torch.cuda.max_memory_allocated()
    print(f"e2e: dense step {dense:.3f} s ({time.perf_counter() - t_start:.1f} s)", flush=True)
    steady = {"dense": torch.cuda.memory_allocated()}  # after the runs: the loaded model, what a user keeps
    used["dense"] = device_used()
    torch.cuda.reset_peak_memory_stats()
    sampling_step_seconds(patcher, cond, side, steps)
    peak = {"dense": torch.cuda.max_memory_allocated()}  # a run on the loaded model, as the sparse one below
    mm.unload_all_models()  # what a user sees: the dense model leaves the GPU before the sparse one loads
    mm.soft_empty_cache()
    idle = torch.cuda.memory_allocated()
    used["idle"] = device_used()
    t0 = time.perf_counter()
    sparse_patcher, results = sparsify.sparsify_model(patcher, "all", rank=0, check_tokens=0, score=score,
                                                      calibration_steps=1)
    prepare = time.perf_counter() - t0
    print(f"e2e: sparsified in {prepare:.1f} s ({time.perf_counter() - t_start:.1f} s)", flush=True)
    torch.cuda.reset_peak_memory_stats()
    sparse, sparse_marginal = marginal_step_seconds(sparse_patcher, cond, side, steps, long_steps)
    sparse_peak = torch.cuda.max_memory_allocated()
    steady["sparse"] = torch.cuda.memory_allocated()  # loaded, every op built (the warm-up built them)
    used["sparse"] = device_used()
    torch.cuda.reset_peak_memory_stats()
    sampling_step_seconds(sparse_patcher, cond, side, steps)
    peak["sparse"] = torch.cuda.max_memory_allocated()
    mods = [m for m in sparse_patcher.object_patches.values() if isinstance(m, sparsify.PyraSparseLinear)]
    fast = [m._op for m in mods if m._op is not None and m._op.backend == "cusparselt"]
    dense_run = [m for m in mods if m._op is not None and m._op.reason == k24.REQUESTED]
    all_kernel, all_kernel_marginal = all_on_kernel(sparse_patcher, mods, cond, side, steps, long_steps)
    out = {
        "score": score, "side": side, "steps": steps, "long_steps": long_steps,
        "dense_step_s": dense, "sparse_step_s": sparse, "speedup": dense / sparse,
        "dense_marginal_step_s": dense_marginal, "sparse_marginal_step_s": sparse_marginal,
        "marginal_step_speedup": dense_marginal / sparse_marginal,
        "all_on_kernel_step_s": all_kernel, "all_on_kernel_marginal_step_s": all_kernel_marginal,
        "all_on_kernel_speedup": dense / all_kernel,
        "all_on_kernel_marginal_speedup": dense_marginal / all_kernel_marginal,
        "layers_sparsified": len(mods), "layers_total": len(results),
        "layers_on_cusparselt": len(fast), "layers_dense_by_speed": len(dense_run), "prepare_s": prepare,
        "linear_weight_gib_dense": sum(m.weight.numel() * m.weight.element_size() for m in mods) / 2**30,
        "linear_weight_gib_compressed": sum(op.fast.compressed.numel() for op in fast) / 2**30,
        "peak_gib_dense_run": dense_peak / 2**30, "peak_gib_sparse_run": sparse_peak / 2**30,
        "idle_gib_after_unload": idle / 2**30,
        "sparse_model_added_gib": (steady["sparse"] - idle) / 2**30,  # what loading the sparse model added
        "steady_gib_dense_loaded": steady["dense"] / 2**30, "steady_gib_sparse_loaded": steady["sparse"] / 2**30,
        "peak_gib_dense_sampling": peak["dense"] / 2**30, "peak_gib_sparse_sampling": peak["sparse"] / 2**30,
        "device_used_gib": {k: v / 2**30 for k, v in used.items()},
        "weight_memory_ratio": (used["sparse"] - used["idle"]) / (used["dense"] - used["before"]),
        "all_pruned_2_4": all(m.norms is None and bool((m.weight != 0).reshape(-1, 4).sum(-1).le(2).all())
                              for m in mods),
    }
    errs = [r.rel_err for r in results if r.rel_err is not None]
    if errs:
        out["mean_rel_err_random_inputs"] = statistics.mean(errs)
    print("e2e:", out, flush=True)
    return out


def all_on_kernel(patcher, mods: list, cond, side: int, steps: int, long_steps: int) -> tuple[float, float]:
    """marginal_step_seconds with every layer on the 2:4 kernel (no dense choice); the ops are rebuilt before and
    after, so the caller's model is left as it was."""
    sparse_linear = pack_module("host.sparse_linear")
    choose = sparse_linear.dense_is_faster
    for m in mods:
        m.invalidate()
    sparse_linear.dense_is_faster = lambda *_: False
    try:
        return marginal_step_seconds(patcher, cond, side, steps, long_steps)
    finally:
        sparse_linear.dense_is_faster = choose
        for m in mods:
            m.invalidate()
