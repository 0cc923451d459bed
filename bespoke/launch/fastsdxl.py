"""The `fast` profile's launcher: compiles SDXL's repeated blocks with torch.compile, from outside sd-scripts.

A training step is bound by the host launching ~18k small kernels, not by the GPU (bench/RESULTS.md).
Compiling fuses the elementwise work (norms, LoRA's scale-and-add, GEGLU, residuals) and launches the
rest from generated code. sd-scripts' own `--torch_compile` crashes in step 1 (strategy_sdxl.py calls
len() on the compiled text-encoder wrapper accelerate 1.6.0 keeps), and compiling the whole UNet
outran a 4-minute run. So only the repeated blocks are compiled, one class method each: the UNet's
BasicTransformerBlock and ResnetBlock2D bodies and the text encoders' CLIPEncoderLayer. Blocks of one
shape share one compiled graph, so SDXL needs a few dozen small graphs, not one huge one. The LoRA
modules those blocks call (networks/lora.py rebinds each Linear's forward) are traced into the same
graphs: the math is the blocks' own. Gradient checkpointing still wraps the compiled bodies.

It also cuts the per-tensor launches around the step (bespoke/launch/fewsteps.py): AdamW8bit over one flat
copy of each parameter group, and one gradient all-reduce instead of one per tensor, bit for bit the
same. BESPOKE_FLAT_STEP=off leaves those as sd-scripts has them.

Only training runs the compiled bodies. With gradients off (sd-scripts' sample images, validation) the
blocks run eagerly: a compiled graph is guarded on grad mode, and compiling the no-grad variant of every
block stalled the first sampling ~75 s for 4 images (issue 16). Gradient checkpointing (the lean profile)
is made non-reentrant, so that its first forward runs with gradients on, through the compiled bodies.

BESPOKE_COMPILE picks torch.compile's mode: default, max-autotune-no-cudagraphs, or off. CUDA graphs
(reduce-overhead) are not offered: with graphs shared by blocks they re-recorded every step (64 s a step),
and with one graph per block the second step never finished (bench/RESULTS.md). Inductor launches the
compiled kernels from generated C++ rather than Python (its cpp_wrapper: the same kernels, less host time
per launch) where it can build that launcher (a C++ compiler and CUDA's headers: the image has them);
BESPOKE_CPP_WRAPPER=0 turns that off. The volume's compile cache warms a restart (bespoke/kernelcache.py keeps
it where it was written). With kernels launched from Python, what was compiled is also kept as one portable
file of torch's cache artifacts (bespoke/launch/compilecache.py), loaded before the next start's first
compile; BESPOKE_COMPILE_ARTIFACTS=0 turns that off. As a program it is accelerate's training script:
    fastsdxl.py <sd-scripts>/sdxl_train_network.py ARGS...
"""

from __future__ import annotations

import atexit
import functools
import importlib
import os
from pathlib import Path

from bespoke import switches
from bespoke.launch import compilecache
from bespoke.launch.patching import rebind, run_patched, use_sd_scripts

MODES = switches.COMPILE_MODES
# (module, class, method): the bodies that repeat. forward_body, not forward, so that sd-scripts'
# gradient checkpointing (which wraps forward_body in forward) recomputes the compiled body.
BLOCKS = (
    ("library.sdxl_original_unet", "BasicTransformerBlock", "forward_body"),
    ("library.sdxl_original_unet", "ResnetBlock2D", "forward_body"),
    ("transformers.models.clip.modeling_clip", "CLIPEncoderLayer", "forward"),
)
RECOMPILE_LIMIT = 64  # one graph per block shape: SDXL's UNet has ~20 resnet shapes, dynamo's default allows 8


def patch(sd_scripts: Path, mode: str | None = None, backend: str = "inductor") -> str:
    """Compile each repeated block's method with the given mode. Idempotent. Returns the mode used.
    (backend="aot_eager" traces the same graphs, forward and backward, without generating kernels:
    the CPU test uses it.)"""
    mode = mode or switches.compile_mode()
    if mode not in MODES:
        raise SystemExit(f"BESPOKE_COMPILE={mode}: use one of {', '.join(MODES)}")
    use_sd_scripts(sd_scripts)
    if switches.switch("BESPOKE_CPU_AFFINITY"):
        from bespoke.launch import affinity

        if line := affinity.bind():
            print(f"bespoke fastsdxl: {line}", flush=True)
    if switches.switch("BESPOKE_FLAT_STEP"):
        from bespoke.launch import fewsteps

        fewsteps.flatten_8bit_groups()
        fewsteps.bucketed_all_reduce()
        print("bespoke fastsdxl: flat AdamW8bit groups, one gradient all-reduce per step", flush=True)
    if mode == "off":
        return mode
    import torch
    import torch._dynamo
    import torch._inductor.config

    if switches.switch("BESPOKE_CPP_WRAPPER"):  # launch the kernels from C++: 1.22x (bench/RESULTS.md)
        from bespoke.preflight import cpp_launcher_problem

        if lack := cpp_launcher_problem():
            print(f"bespoke fastsdxl: kernels launched from Python (~1.2x slower); C++ needs {lack}", flush=True)
        else:
            torch._inductor.config.cpp_wrapper = True
    cap_memory()
    non_reentrant_checkpointing()
    for name in ("recompile_limit", "cache_size_limit"):  # the name changed across torch releases
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), RECOMPILE_LIMIT))
    for module, cls_name, method in BLOCKS:
        cls = getattr(importlib.import_module(module), cls_name)
        if getattr(cls, "_bespoke_compiled", None) == method:
            continue
        original = getattr(cls, method)
        options = {"backend": backend, "dynamic": False}
        if backend == "inductor":
            options["mode"] = None if mode == "default" else mode
        rebind(cls, method, training_only(original, torch.compile(original, **options)))
        cls._bespoke_compiled = method
    print(f"bespoke fastsdxl: {len(BLOCKS)} block types compiled with torch.compile mode={mode}, "
          f"{torch._inductor.config.compile_threads} compile workers", flush=True)
    atexit.register(_report_graphs)
    if backend == "inductor" and switches.switch("BESPOKE_COMPILE_ARTIFACTS") and torch._inductor.config.cpp_wrapper:
        print(f"bespoke fastsdxl: {compilecache.NOT_WITH_CPP}", flush=True)
    elif backend == "inductor" and switches.switch("BESPOKE_COMPILE_ARTIFACTS"):
        artifacts = compilecache.path_for({"mode": mode, "cpp_wrapper": bool(torch._inductor.config.cpp_wrapper),
                                           "blocks": BLOCKS})
        print(f"bespoke fastsdxl: {compilecache.load(artifacts)}", flush=True)
        if compilecache.first_process():
            atexit.register(lambda: print(f"bespoke fastsdxl: {compilecache.save(artifacts)}", flush=True))
    return mode


def training_only(original, compiled):
    """The compiled body while gradients are on (training), the eager one otherwise (sampling, validation)."""
    import torch

    @functools.wraps(original)
    def body(*args, **kwargs):
        return (compiled if torch.is_grad_enabled() else original)(*args, **kwargs)

    body._bespoke_eager = original
    return body


def non_reentrant_checkpointing() -> None:
    """sd-scripts' UNet and transformers' text encoders checkpoint reentrantly by default, which runs the first
    forward with gradients off (so, here, eagerly); the non-reentrant form recomputes the same ops with
    gradients on. Only matters where gradient checkpointing is on."""
    from library import sdxl_original_unet
    from transformers import PreTrainedModel

    rebind(sdxl_original_unet, "USE_REENTRANT", False)
    enable = PreTrainedModel.gradient_checkpointing_enable
    if getattr(enable, "_bespoke", False):
        return

    @functools.wraps(enable)
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        return enable(self, gradient_checkpointing_kwargs={"use_reentrant": False, **(gradient_checkpointing_kwargs or {})})

    gradient_checkpointing_enable._bespoke = True
    rebind(PreTrainedModel, "gradient_checkpointing_enable", gradient_checkpointing_enable)


def cap_memory() -> None:
    """BESPOKE_GPU_MEMORY_GB=N: this process may allocate at most N GB of its GPU (the bench's stand-in for
    a smaller card)."""
    import torch

    if not (gb := switches.gpu_memory_gb()) or not torch.cuda.is_available():
        return
    device = int(os.environ.get("LOCAL_RANK", 0))
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gb * 1e9 / total), device)
    print(f"bespoke fastsdxl: GPU memory capped at {gb:g} GB of {total / 1e9:.0f}", flush=True)


def _report_graphs() -> None:
    import torch
    from torch._dynamo.utils import counters

    stats = counters["stats"]
    print(f"bespoke fastsdxl: {stats['unique_graphs']} compiled graphs, {stats['calls_captured']} calls captured",
          flush=True)
    if torch.cuda.is_available():  # what the profile needs (peak_gib), which a memory cap hides from nvidia-smi
        print(f"bespoke fastsdxl: peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB allocated, "
              f"{torch.cuda.max_memory_reserved() / 2**30:.1f} GiB reserved", flush=True)


if __name__ == "__main__":
    run_patched(patch)
