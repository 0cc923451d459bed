"""What torch sees of the GPUs, and whether xformers and bitsandbytes work on them, as JSON.

Run as its own process (`python -m bespoke.launch.gpuprobe [--imports-only]`, through bespoke.proc; --imports-only
is what `train` needs before it launches: the GPUs and whether xformers imports, no kernels): touching
CUDA creates a context that holds GPU memory and shares the card for as long as the process lives, and
bespoke's launcher lives as long as the training. Nothing CUDA happens in the launcher itself.
"""

from __future__ import annotations

import json
import sys


def _library(name: str, kernel) -> dict:
    try:
        module = __import__(name)
        if kernel is not None:
            kernel()
        return {"ok": True, "version": getattr(module, "__version__", "?"), "ran": kernel is not None}
    except Exception as e:  # noqa: BLE001 — any failure is the finding
        return {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}


def probe(imports_only: bool = False) -> dict:
    out = {"torch": None, "device_count": 0, "gpus": [], "arch_list": []}
    try:
        import torch
    except ImportError:
        return out
    out["torch"] = torch.__version__
    out["device_count"] = torch.cuda.device_count()  # NVML: no CUDA context
    gpu = out["device_count"] > 0 and not imports_only
    if out["device_count"]:  # names, memory and capability: `train` picks its default profile by them
        out["arch_list"] = torch.cuda.get_arch_list()
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out["gpus"].append({"index": i, "name": p.name, "memory_gb": p.total_memory / 2**30,
                                "capability": [p.major, p.minor]})

    def attention():
        import xformers.ops

        if gpu:
            q = torch.randn(1, 16, 2, 64, device="cuda", dtype=torch.bfloat16)
            xformers.ops.memory_efficient_attention(q, q, q)

    def adamw8bit():
        import bitsandbytes as bnb

        p = torch.nn.Parameter(torch.ones(8192, device="cuda"))  # >= 4096 elements: the 8-bit path
        p.grad = torch.ones_like(p)
        bnb.optim.AdamW8bit([p]).step()

    out["xformers"] = _library("xformers", attention)
    if not imports_only:  # `train` decides on the GPU count and xformers only; bitsandbytes' import alone takes seconds
        out["bitsandbytes"] = _library("bitsandbytes", adamw8bit if gpu else None)
    return out


if __name__ == "__main__":
    print(json.dumps(probe(imports_only="--imports-only" in sys.argv[1:])))
