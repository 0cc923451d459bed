"""Training profiles: the same math, different speed levers.

`exact` is the notes' recipe as is. `fast` is the same math, 2.3-3.2x faster; it is the default on the GPUs
where it was proven (`default_for`: Hopper, i.e. H100 and H200; bench/RESULTS.md), exact elsewhere. A
profile adds recipe overrides and may name a launcher script that patches sd-scripts at run time (as the
smoke test's tiny model does), never its code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bespoke.errors import BespokeError


@dataclass(frozen=True)
class Profile:
    name: str
    overrides: tuple[str, ...] = ()
    launcher: str | None = None  # a script in bespoke/launch/, run by accelerate with sd-scripts' script as argv[1]
    note: str = ""
    compiles: bool = False  # its launcher runs torch.compile: it needs C and C++ compilers and Python's headers
    peak_gib: float = 13.5  # GPU memory it peaked at on H100/H200s, 1 or 2 GPUs (nvidia-smi, bench/RESULTS.md)

    def launcher_path(self) -> Path | None:
        return Path(__file__).parent / "launch" / self.launcher if self.launcher else None

    def fits(self, memory_gb: float) -> bool:
        """Whether a GPU with this much memory has room for the profile's measured peak, with headroom."""
        return memory_gb >= self.peak_gib * HEADROOM


PROFILES: dict[str, Profile] = {
    "exact": Profile("exact", note="the notes' command, unchanged"),
    # The same math as exact: batch 2, bf16, dim 128/alpha 64, AdamW8bit, TE LoRA, scheduler, steps,
    # seed. Faster by: no gradient checkpointing (memory allows), PyTorch's SDPA attention kernel,
    # SDXL's repeated blocks compiled by bespoke/launch/fastsdxl.py (kernels launched from C++), and one
    # optimizer update and one all-reduce per step instead of one per LoRA tensor (bespoke/launch/fewsteps.py,
    # bit-identical). Measured (bench/RESULTS.md), same machine: 3.15x exact on an H200 (0.28 vs 0.89
    # s/step) and on an H100 (0.38 vs 1.21), 2.27x on another H100; 1-4 min of compiling per start.
    # Same seed, 200 steps on H100s: each profile nearly reproduces itself, and fast differs from exact
    # as much as exact differs from itself when its random draws shift (loss and LoRA).
    # Latents are cached 8 images per VAE call: 0.10 vs ~0.4 s an image (H100, 203 images), 20 GiB. The
    # VAE's math is per image; the batch changes its kernels' choice and how its noise sample is drawn.
    "fast": Profile("fast", overrides=("gradient_checkpointing=false", "xformers=false", "sdpa=true",
                                       "vae_batch_size=8"),
                    launcher="fastsdxl.py", compiles=True, peak_gib=32.6,
                    note="same math, 2.3-3.2x faster; no gradient checkpointing, SDPA, compiled blocks; ~33 GB of GPU memory"),
}
PROVEN_ON = 9  # fast was proven on compute capability 9.x (Hopper: the H100; the H200 runs the same sm_90 kernels)
HEADROOM = 1.1  # a GPU needs 10 % more memory than a profile's measured peak


def default_for(gpus: list | None, compiler_missing: str | None = None) -> tuple[str, str]:
    """The profile to use when none is asked for, and why: fast on GPUs where it was proven, with room for
    its peak memory and a compiler for its kernels; exact anywhere else (and on the CPU)."""
    fast = PROFILES["fast"]
    if not gpus:
        return "exact", "no GPU"
    if other := next((g for g in gpus if g.capability[0] != PROVEN_ON), None):
        return "exact", f"fast is proven on Hopper GPUs (H100, H200), not on {other.name}"
    if small := next((g for g in gpus if not fast.fits(g.memory_gb)), None):
        return "exact", f"fast peaks at {fast.peak_gib} GiB; {small.name} has {small.memory_gb:.0f} GiB"
    if compiler_missing:
        return "exact", f"fast compiles kernels and needs {compiler_missing}"
    return "fast", f"the same math as exact, 2.3-3.2x faster, proven on Hopper GPUs ({gpus[0].name})"


def get(name: str) -> Profile:
    if name not in PROFILES:
        raise BespokeError(f"unknown profile '{name}'", "--profile", f"use one of: {', '.join(PROFILES)}")
    return PROFILES[name]
