"""Training profiles: the same math, different speed levers.

`exact` is the notes' recipe as is. `fast` is the same math, 2.3-3.2x faster; it is the default on the GPUs
where it was proven (`default_for`: Hopper, i.e. H100 and H200; bench/RESULTS.md). `lean` is fast's launcher
with gradient checkpointing kept, for cards with less memory than fast needs (24 GB); exact elsewhere. A
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
    expected: str = ""  # the s/step measured (bench/RESULTS.md), shown by `check`

    def launcher_path(self) -> Path | None:
        return Path(__file__).parent / "launch" / self.launcher if self.launcher else None

    def fits(self, memory_gb: float) -> bool:
        """Whether a GPU with this much memory has room for the profile's measured peak, with headroom."""
        return memory_gb >= self.peak_gib * HEADROOM


PROFILES: dict[str, Profile] = {
    "exact": Profile("exact", note="the notes' command, unchanged",
                     expected="0.89-1.53 s/step on an H200, 1.07-1.51 on an H100"),
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
                    note="same math, 2.3-3.2x faster; no gradient checkpointing, SDPA, compiled blocks; ~33 GB of GPU memory",
                    expected="0.28-0.55 s/step on an H200, 0.36-0.52 on an H100, after 1-6 min of compiling"),
    # For cards with less memory than fast needs (24 GB: RTX 4090/3090, A5000, L4): fast's launcher (compiled
    # blocks, flat optimizer step, SDPA) with exact's gradient checkpointing, made non-reentrant so that the
    # checkpointed forward runs the compiled bodies too; latents cached 4 images per VAE call (~10 GiB).
    # Measured on H200s capped at 22 GB (20.5 GiB) of allocations: it trained, sampled and saved within it,
    # 15.6 GiB allocated at peak; 0.71-0.85 s/step against exact's 1.23-1.35 side by side (1.5-1.7x), and
    # over 200 steps as close to exact as fast is (bench/RESULTS.md, fourth session).
    "lean": Profile("lean", overrides=("xformers=false", "sdpa=true", "vae_batch_size=4"),
                    # 18.3 GiB on nvidia-smi under the cap; 20 GiB with fits()' 10 % asks 22 GiB: the L4's
                    # 22.5 qualifies
                    launcher="fastsdxl.py", compiles=True, peak_gib=20.0,
                    note="same math for cards under fast's ~33 GB: gradient checkpointing, SDPA, compiled blocks; "
                         "ran within 22 GB",
                    expected="0.71-0.85 s/step on an H200 capped at 22 GB (exact 1.23-1.35 side by side), not yet "
                             "measured on a 24 GB card"),
}
PROVEN_ON = 9  # fast was proven on compute capability 9.x (Hopper: the H100; the H200 runs the same sm_90 kernels)
BF16 = 8  # lean: compute capability 8.0 on (Ampere, Ada, Hopper), where the recipe's bf16 runs
HEADROOM = 1.1  # a GPU needs 10 % more memory than a profile's measured peak


def default_for(gpus: list | None, compiler_missing: str | None = None) -> tuple[str, str]:
    """The profile to use when none is asked for, and why: fast on GPUs where it was proven, with room for
    its peak memory and a compiler for its kernels; lean where only the memory is short (24 GB cards); exact
    anywhere else (and on the CPU)."""
    fast, lean = PROFILES["fast"], PROFILES["lean"]
    if not gpus:
        return "exact", "no GPU"
    if compiler_missing:
        return "exact", f"fast and lean compile kernels and need {compiler_missing}"
    small = next((g for g in gpus if not fast.fits(g.memory_gb)), None)
    if small and all(g.capability[0] >= BF16 and lean.fits(g.memory_gb) for g in gpus):
        return "lean", (f"fast peaks at {fast.peak_gib} GiB; {small.name} has {small.memory_gb:.0f} GiB: lean keeps "
                        f"gradient checkpointing and runs within 22 GB")
    if other := next((g for g in gpus if g.capability[0] != PROVEN_ON), None):
        return "exact", f"fast is proven on Hopper GPUs (H100, H200), not on {other.name}"
    if small:
        return "exact", f"fast peaks at {fast.peak_gib} GiB; {small.name} has {small.memory_gb:.0f} GiB"
    return "fast", f"the same math as exact, 2.3-3.2x faster, proven on Hopper GPUs ({gpus[0].name})"


def get(name: str) -> Profile:
    if name not in PROFILES:
        raise BespokeError(f"unknown profile '{name}'", "--profile", f"use one of: {', '.join(PROFILES)}")
    return PROFILES[name]
