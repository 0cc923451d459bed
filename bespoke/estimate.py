"""How long a run will take and what it costs, before it starts: measured figures, not guesses.

Every figure in FIGURES names the card, the date and where it was measured (bench/RESULTS.md). An
estimate is steps x s/step for the card and profile, plus start-up and compile. A card with no figure
gets no number: the progress line gives an honest one after STEPS_TO_MEASURE steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from bespoke.errors import BespokeError

ASSUMED_CARD = "NVIDIA H200"  # where no GPU is visible (a dry run on a laptop): the pod the figures are for
STEPS_TO_MEASURE = 20  # the progress line's rate settles after this many steps


@dataclass(frozen=True)
class Figure:
    card: str  # matched as a substring of the GPU's name, upper case: "H200", "H100"
    profile: str  # exact or fast
    seconds_per_step: float  # median, one GPU, batch 2, 1024x1024, the notes' recipe
    startup_s: float  # launch to the first step less compiling, the model cached
    compile_s: float  # fast's torch.compile before step 1, from the volume's cache (cold: compile_cold_s)
    compile_cold_s: float
    date: str
    source: str


FIGURES: tuple[Figure, ...] = (
    # the median of five H200 runs on three machines, 0.89-1.53 s/step (RESULTS.md call 12, issue 16 calls 4,
    # 10, 11, 14)
    Figure("H200", "exact", 1.35, 57.0, 0.0, 0.0, "2026-11-30",
           "bench/RESULTS.md call 12 and issue 16 (H200, exact; median of 0.89-1.53 s/step on three machines)"),
    # the median of six H200 runs on five machines, 0.28-0.55 s/step: the host sets the pace (RESULTS.md)
    Figure("H200", "fast", 0.46, 50.0, 39.0, 260.0, "2026-11-29",
           "bench/RESULTS.md calls 11-12 and issue 16 (H200, fast, C++ launcher; median of 0.28-0.55 s/step "
           "on five machines; compile 39 s warm, 190-343 s cold)"),
    Figure("H100", "exact", 1.209, 69.0, 0.0, 0.0, "2026-11-26",
           "bench/RESULTS.md call 21 (H100 80GB HBM3, exact, 40 steps, latents cached in the run)"),
    Figure("H100", "fast", 0.383, 60.0, 40.0, 215.0, "2026-11-26",
           "bench/RESULTS.md calls 13, 21 (H100 80GB HBM3, fast, C++ launcher; 208-225 s cold compile)"),
)

# Two GPUs: the per-step time of one, measured with each GPU's own batch (bench/RESULTS.md call 11:
# 2x H200 fast 0.444 s/step against 0.363-0.444 on one; calls 6-7: 2x H100 exact 1.39-1.43 vs 1.25).
MULTI_GPU_SLOWDOWN = 1.15


@dataclass(frozen=True)
class Estimate:
    steps: int
    gpus: int
    profile: str
    card: str | None  # the GPU's name, None when unknown (no GPU seen)
    figure: Figure | None
    gpus_assumed: bool = False
    price_per_hour: float | None = None
    compile_cached: bool = False

    @property
    def seconds_per_step(self) -> float | None:
        if self.figure is None:
            return None
        return self.figure.seconds_per_step * (MULTI_GPU_SLOWDOWN if self.gpus > 1 else 1.0)

    @property
    def overhead_s(self) -> float:
        f = self.figure
        if f is None:
            return 0.0
        return f.startup_s + (f.compile_s if self.compile_cached else f.compile_cold_s)

    @property
    def seconds(self) -> float | None:
        sps = self.seconds_per_step
        return None if sps is None else self.steps * sps + self.overhead_s

    @property
    def cost(self) -> float | None:
        """The pod's price for the run: price per hour is for the whole pod (all its GPUs)."""
        if self.price_per_hour is None or self.seconds is None:
            return None
        return self.seconds / 3600 * self.price_per_hour

    def lines(self) -> list[str]:
        gpu_note = f"{self.gpus} GPU{'s' if self.gpus > 1 else ''}"
        if self.gpus_assumed:
            gpu_note += f" (assumed: no GPU seen here, {self.card or 'card unknown'}; --gpus N to change)"
        if self.figure is None:
            card = self.card or "this card"
            return [f"estimate:        no measured s/step for {card} ({self.profile}) on {gpu_note}; "
                    f"the progress line gives the ETA after {STEPS_TO_MEASURE} steps"]
        f = self.figure
        compile_part = ""
        if f.compile_s or f.compile_cold_s:
            compile_part = (f" + compile {f.compile_s if self.compile_cached else f.compile_cold_s:.0f} s"
                            f" ({'cached' if self.compile_cached else 'cold; ~40 s once cached'})")
        lines = [
            f"estimate:        {self.steps} steps x {self.seconds_per_step:.3f} s/step + start-up {f.startup_s:.0f} s"
            f"{compile_part} = {fmt_duration(self.seconds)} on {gpu_note}",
            f"  figure:        {f.card} {f.profile}, {f.seconds_per_step} s/step, measured {f.date}: {f.source}",
        ]
        if self.card and f.card not in self.card.upper():
            lines.append(f"  note:          {self.card} has no figure of its own")
        if self.cost is not None:
            lines.append(f"cost:            {fmt_duration(self.seconds)} x {self.price_per_hour:.2f}/h = "
                         f"{self.cost:.2f}")
        return lines


def find(card: str | None, profile: str) -> Figure | None:
    """The figure for this card and profile, matching the card's name (e.g. 'NVIDIA H200')."""
    if not card:
        return None
    name = card.upper()
    return next((f for f in FIGURES if f.card in name and f.profile == profile), None)


def estimate(steps: int, profile: str, card: str | None, gpus: int, *, gpus_assumed: bool = False,
             price_per_hour: float | None = None, compile_cached: bool = False,
             assume_card: str | None = None) -> Estimate:
    """The estimate for `steps` on `gpus` x `card`. With no GPU seen, `assume_card` (e.g. the image's
    target, H200) stands in, and the estimate says it is assumed."""
    figure = find(card or assume_card, profile)
    return Estimate(steps, max(gpus, 1), profile, card or assume_card, figure, gpus_assumed, price_per_hour,
                    compile_cached)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    h, m = s // 3600, s // 60 % 60
    return f"{h} h {m:02d} min" if h else f"{m} min {s % 60:02d} s"


MAX_PRICE = 10_000  # per pod hour, in any currency: more is a typo (a 300-digit cost line)


def parse_price(value: str | float | None) -> float | None:
    """--price-per-hour / BESPOKE_PRICE_PER_HOUR: a positive number of your currency per pod hour."""
    if value is None or value == "":
        return None
    try:
        price = float(value)
    except ValueError:
        price = -1.0
    if not (0 <= price <= MAX_PRICE):  # float() also takes "nan" and "inf", which fail both
        raise BespokeError(f"price per hour {str(value)[:40]!r} is not a number from 0 to {MAX_PRICE}", "--price-per-hour",
                           "give the pod's price per hour, e.g. --price-per-hour 3.59")
    return price
