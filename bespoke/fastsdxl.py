"""The `fast` profile's launcher: compiles sd-scripts' SDXL UNet with torch.compile, from outside.

sd-scripts' own `--torch_compile` crashes in step 1 (library/strategy_sdxl.py calls len() on the
compiled text-encoder wrapper that accelerate 1.6.0's unwrap_model keeps), and it compiles the text
encoders too. Here only the UNet's forward is compiled, by rebinding the class method before the
unmodified training script runs through runpy (as tinysdxl.py does). The math is the UNet's own:
the LoRA modules it calls are traced into the same graph. Shapes are fixed (1024², batch 2), so the
graph is built once. BESPOKE_COMPILE picks torch.compile's mode: default, reduce-overhead (CUDA
graphs), max-autotune-no-cudagraphs, or off.

As a program it is accelerate's training script:  fastsdxl.py <sd-scripts>/sdxl_train_network.py ARGS...
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune", "off")


def patch(sd_scripts: Path, mode: str | None = None) -> str:
    """Compile SdxlUNet2DConditionModel.forward with the given mode. Returns the mode used."""
    mode = mode or os.environ.get("BESPOKE_COMPILE", "default")
    if mode not in MODES:
        raise SystemExit(f"BESPOKE_COMPILE={mode}: use one of {', '.join(MODES)}")
    if str(sd_scripts) not in sys.path:
        sys.path.insert(0, str(sd_scripts))
    if mode == "off":
        return mode
    import torch
    from library import sdxl_original_unet as unet

    cls = unet.SdxlUNet2DConditionModel
    if not getattr(cls, "_bespoke_compiled", False):
        cls.forward = torch.compile(cls.forward, mode=None if mode == "default" else mode, dynamic=False)
        cls._bespoke_compiled = True
    print(f"bespoke fastsdxl: UNet forward compiled with torch.compile mode={mode}", flush=True)
    return mode


if __name__ == "__main__":
    from bespoke.kohya import run_patched

    run_patched(patch)
