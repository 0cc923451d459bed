"""Where a training step's time goes: bespoke/launch/fastsdxl.py (or no patch: PROFILED_BASE=exact) plus timers.

    accelerate launch ... profiled.py <sd-scripts>/sdxl_train_network.py ARGS...
    (run.sh's `prof*` configs swap it in for the launcher in bespoke's launch line)

Steps 10-19: each phase (text encoders, UNet forward, the rest of the forward, backward, all-reduce,
clipping, optimizer, zero_grad) between two sync(), so its time is the later of the
host launching it and the GPU running it. Steps 25-26: torch.profiler, for kernel count, GPU kernel
time per step and the ops that cost the host most. Tables in $PROFILE_OUT: NAME.phases.json,
NAME.cpu_ops.txt, NAME.gpu_ops.txt.
"""

import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

SYNC_STEPS = range(10, 20)
PROFILE_STEPS = (25, 27)  # [start, stop)
NAME = os.environ.get("PROFILE_NAME", "prof")
OUT = Path(os.environ.get("PROFILE_OUT", "/tmp"))


def install(sd_scripts):
    import accelerate
    import accelerate.optimizer
    import library.sdxl_original_unet as sdxl_unet
    import library.strategy_sdxl as strategy_sdxl
    import torch
    import train_network

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    done = [0]  # optimizer steps finished
    times: dict[str, list[float]] = {}
    prof = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            if done[0] not in SYNC_STEPS:
                return fn(*args, **kwargs)
            sync()
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            sync()
            times.setdefault(name, []).append(time.perf_counter() - t)
            return out
        return wrapper

    def ranged(name, fn):
        def wrapper(*args, **kwargs):
            with torch.profiler.record_function(f"## {name}"):
                return fn(*args, **kwargs)
        return wrapper

    def wrap(owner, attr, name):
        setattr(owner, attr, timed(name, ranged(name, getattr(owner, attr))))

    wrap(train_network.NetworkTrainer, "process_batch", "forward (all)")
    wrap(strategy_sdxl.SdxlTextEncodingStrategy, "encode_tokens", "text encoders")
    wrap(sdxl_unet.SdxlUNet2DConditionModel, "forward", "unet forward")
    wrap(accelerate.Accelerator, "backward", "backward")
    wrap(train_network.NetworkTrainer, "all_reduce_network", "all-reduce")
    wrap(accelerate.Accelerator, "clip_grad_norm_", "clip")
    wrap(accelerate.optimizer.AcceleratedOptimizer, "zero_grad", "zero_grad")

    step = accelerate.optimizer.AcceleratedOptimizer.step
    stamps = []

    def counted_step(self, *args, **kwargs):
        out = timed("optimizer", ranged("optimizer", step))(self, *args, **kwargs)
        stamps.append((done[0], time.perf_counter()))
        done[0] += 1
        if done[0] == PROFILE_STEPS[0] - 1:
            sync()
            prof["p"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                           torch.profiler.ProfilerActivity.CUDA])
        if done[0] == PROFILE_STEPS[0] and "p" in prof:
            sync()
            prof["p"].start()
            prof["t0"] = time.perf_counter()
        if done[0] == PROFILE_STEPS[1] and "p" in prof:
            sync()
            prof["t1"] = time.perf_counter()
            prof["p"].stop()
            report(prof, times, stamps)
        return out

    accelerate.optimizer.AcceleratedOptimizer.step = counted_step


def report(prof, times, stamps):
    from torch.autograd import DeviceType

    p, n = prof["p"], PROFILE_STEPS[1] - PROFILE_STEPS[0]
    events = p.key_averages()
    kernels = [e for e in p.events() if e.device_type == DeviceType.CUDA]
    gpu_us = sum(e.self_device_time_total for e in events if not e.key.startswith("## "))  # not the ranges
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(stamps)]
    free = [g for (i, _), g in zip(stamps[1:], gaps, strict=True) if i > 5 and i not in SYNC_STEPS and i - 1 not in SYNC_STEPS
            and not (PROFILE_STEPS[0] - 1 <= i <= PROFILE_STEPS[1])]
    summary = {
        "name": NAME,
        "phase_s_mean": {k: round(statistics.mean(v), 4) for k, v in times.items()},
        "synced_step_s_median": round(statistics.median([g for (i, _), g in zip(stamps[1:], gaps, strict=True)
                                                         if i in SYNC_STEPS and i - 1 in SYNC_STEPS]), 4),
        "unsynced_step_s_median": round(statistics.median(free), 4) if free else None,
        "profiled_step_s": round((prof["t1"] - prof["t0"]) / n, 4),
        "kernels_per_step": len(kernels) // n,
        "gpu_kernel_s_per_step": round(gpu_us / 1e6 / n, 4),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{NAME}.phases.json").write_text(json.dumps(summary, indent=1))
    (OUT / f"{NAME}.cpu_ops.txt").write_text(events.table(sort_by="self_cpu_time_total", row_limit=45))
    sort = "self_device_time_total" if "self_device_time_total" in events.table(row_limit=1) else "self_cuda_time_total"
    try:
        (OUT / f"{NAME}.gpu_ops.txt").write_text(events.table(sort_by=sort, row_limit=30))
    except Exception as e:  # noqa: BLE001 - a bench: keep what was measured
        (OUT / f"{NAME}.gpu_ops.txt").write_text(repr(e))
    print("bespoke profiled:", json.dumps(summary), flush=True)


def patch(sd_scripts):
    if str(sd_scripts) not in sys.path:
        sys.path.insert(0, str(sd_scripts))
    base = os.environ.get("PROFILED_BASE", "fast")
    if base == "fast":
        from bespoke.launch import fastsdxl

        fastsdxl.patch(sd_scripts)
    elif base == "tiny":  # the CPU check: the smoke test's tiny SDXL
        from bespoke.launch import tinysdxl

        tinysdxl.patch(sd_scripts)
    install(sd_scripts)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bespoke.launch.patching import run_patched

    run_patched(patch)
