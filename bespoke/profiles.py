"""Training profiles: the same math, different speed levers.

`exact` is the notes' recipe as is and stays the default until another profile is proven equivalent
on a GPU (see bench/RESULTS.md). A profile adds recipe overrides and may name a launcher script that
patches sd-scripts at run time (as the smoke test's tiny model does), never its code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bespoke.errors import BespokeError


@dataclass(frozen=True)
class Profile:
    name: str
    overrides: tuple[str, ...] = ()
    launcher: str | None = None  # a script beside this module, run by accelerate with sd-scripts' script as argv[1]
    note: str = ""
    compiles: bool = False  # its launcher runs torch.compile: Triton needs a C compiler and Python headers
    peak_gib: float = 13.5  # GPU memory it peaked at on an H100 (nvidia-smi, bench/RESULTS.md)

    def launcher_path(self) -> Path | None:
        return Path(__file__).with_name(self.launcher) if self.launcher else None


PROFILES: dict[str, Profile] = {
    "exact": Profile("exact", note="the notes' command, unchanged"),
    # The same math as exact: batch 2, bf16, dim 128/alpha 64, AdamW8bit, TE LoRA, scheduler, steps,
    # seed. Faster by: no gradient checkpointing (memory allows: 24 GB), PyTorch's SDPA attention
    # kernel, and SDXL's repeated blocks compiled by bespoke/fastsdxl.py. Measured on H100s
    # (bench/RESULTS.md): 0.64 vs 1.19 s/step, ~80 s of compiling per run, and a 200-step same-seed
    # loss curve within 6% of the curve's own step-to-step spread. Not the default: the LoRA weights
    # agree only loosely (median cosine 0.90), and no exact-vs-exact rerun yet says whether that is
    # GPU-kernel noise.
    "fast": Profile("fast", overrides=("gradient_checkpointing=false", "xformers=false", "sdpa=true"),
                    launcher="fastsdxl.py", compiles=True, peak_gib=23.3,
                    note="same math; no gradient checkpointing, SDPA attention, compiled blocks; ~24 GB of GPU memory"),
}
DEFAULT = "exact"


def get(name: str | None) -> Profile:
    name = name or DEFAULT
    if name not in PROFILES:
        raise BespokeError(f"unknown profile '{name}'", "--profile", f"use one of: {', '.join(PROFILES)}")
    return PROFILES[name]
