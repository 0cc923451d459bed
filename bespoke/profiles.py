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

    def launcher_path(self) -> Path | None:
        return Path(__file__).with_name(self.launcher) if self.launcher else None


PROFILES: dict[str, Profile] = {
    "exact": Profile("exact", note="the notes' command, unchanged"),
    # Same math as exact (batch 2, bf16, dim 128/alpha 64, AdamW8bit, TE LoRA, scheduler, steps, seed);
    # only levers measured faster on an H100 (bench/RESULTS.md: 0.96 vs 1.37 s/step, 29 vs 14 GB).
    # Not the default: equivalence over 200+ steps is not yet proven. bespoke/fastsdxl.py (UNet
    # torch.compile) joins it only once measured: its compile outran a 5-minute run.
    "fast": Profile("fast", overrides=("gradient_checkpointing=false",),
                    note="no gradient checkpointing: same math, about 29 GB of GPU memory"),
    # fast, plus PyTorch's attention kernel and the repeated blocks compiled (bespoke/fastsdxl.py).
    # Being measured (bench/RESULTS.md); compiling costs minutes at the start of each run.
    "compiled": Profile("compiled", overrides=("gradient_checkpointing=false", "xformers=false", "sdpa=true"),
                        launcher="fastsdxl.py",
                        note="fast + sdpa + torch.compile of the UNet and text-encoder blocks (experimental)"),
}
DEFAULT = "exact"


def get(name: str | None) -> Profile:
    name = name or DEFAULT
    if name not in PROFILES:
        raise BespokeError(f"unknown profile '{name}'", "--profile", f"use one of: {', '.join(PROFILES)}")
    return PROFILES[name]
