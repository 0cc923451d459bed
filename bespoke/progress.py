"""Following sd-scripts: parse its tqdm and log lines, show progress, write status.json atomically."""

from __future__ import annotations

import json
import re
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bespoke.estimate import STEPS_TO_MEASURE
from bespoke.fsutil import atomic_write_json

# tqdm: "steps:  10%|█         | 1015/10150 [25:14<3:47:20,  1.49s/it, avr_loss=0.0812]"
_TQDM = re.compile(
    r"steps:\s*\d+%\|[^|]*\|\s*(?P<step>\d+)/(?P<total>\d+)\s*\[(?P<elapsed>[\d:]+)<(?P<eta>[\d:?]+),\s*"
    r"(?P<rate>[\d.]+|\?)(?P<unit>s/it|it/s)(?:,\s*(?P<post>[^\]]*))?\]"
)
_OTHER_BAR = re.compile(r"\d+%\|[^|]*\|\s*\d+/\d+\s*\[")
_LOSS = re.compile(r"avr_loss=(?P<loss>[-+\w.]+)")
_EPOCH = re.compile(r"^\s*epoch (?P<epoch>\d+)/(?P<epochs>\d+)\s*$")
_STAGES = (
    ("caching latents", "caching latents"),
    ("generating sample images", "sampling"),
    ("saving checkpoint:", "saving"),
)


@dataclass
class Tick:
    step: int
    total: int
    seconds_per_step: float | None
    eta: str
    loss: float | None


def parse_tqdm(line: str) -> Tick | None:
    m = _TQDM.search(line)
    if not m:
        return None
    rate = m["rate"]
    sps = None
    if rate != "?":
        r = float(rate)
        sps = r if m["unit"] == "s/it" else (1 / r if r else None)
    loss = None
    if m["post"] and (lm := _LOSS.search(m["post"])):
        try:
            loss = float(lm["loss"])
        except ValueError:
            loss = None
    return Tick(int(m["step"]), int(m["total"]), sps, m["eta"], loss)


def parse_epoch(line: str) -> tuple[int, int] | None:
    m = _EPOCH.match(line)
    return (int(m["epoch"]), int(m["epochs"])) if m else None


def parse_stage(line: str) -> str | None:
    low = line.lower()
    for needle, stage in _STAGES:
        if needle in low:
            return stage
    return None


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


@dataclass
class Status:
    """What status.json says. step/total are for the whole run, also after a resume."""

    stage: str = "starting"
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    total: int = 0
    loss: float | None = None
    seconds_per_step: float | None = None
    eta: str | None = None
    last_error: str | None = None
    message: str | None = None
    log: str | None = None
    output_name: str | None = None
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    alarms: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0  # since bespoke started following sd-scripts


class Follower:
    """Turns child output lines into status updates, a progress display and a loss history."""

    RATE_WINDOW = 100  # steps: the s/step and ETA shown come from the last ones seen
    WAITING = ("starting", "compiling")  # stages before this process's first step is done: no ETA yet

    def __init__(self, status_path: Path, loss_path: Path | None, status: Status, *, step_offset: int = 0,
                 total: int | None = None, tty: bool | None = None, out=None, plain_every: float = 30.0,
                 clock=time.monotonic, first_stage: str = "starting"):
        self.path = Path(status_path)
        self.loss_path = loss_path
        self.status = status
        self.step_offset = step_offset
        self.total = total  # the run's own math; after a resume kohya's bar total is not to be trusted
        status.step = max(status.step, step_offset)
        status.total = total or status.total
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.plain_every = plain_every
        self._last_write = 0.0
        self._last_plain = 0.0
        self._last_plain_step = -1
        self._pending = None
        self._last_step = -1
        self._bar_shown = False
        self.clock = clock
        self._t0 = self._last_idle = clock()
        self.first_stage = first_stage  # "compiling" when the profile compiles inside step 1
        self._measured = False  # a step finished in this process: from then on the rate is measured
        self._seen: deque[tuple[float, int]] = deque(maxlen=self.RATE_WINDOW)  # (time, step) as each step appears
        self.write(force=True)

    def write(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._last_write >= 1.0:
            self.status.updated_at = now
            self.status.elapsed_s = round(self.clock() - self._t0, 1)
            atomic_write_json(self.path, asdict(self.status))
            self._last_write = now

    def set(self, force: bool = True, **fields) -> None:
        for k, v in fields.items():
            setattr(self.status, k, v)
        self.write(force=force)

    def feed(self, line: str) -> None:
        """One line of child output (tqdm updates arrive as separate '\\r' segments)."""
        tick = parse_tqdm(line)
        if tick is not None:
            self._on_tick(tick)
            return
        if _OTHER_BAR.search(line):
            return  # the sampler's and cacher's own bars: the log keeps them, the console need not
        self._clear_bar()
        print(line, file=self.out, flush=True)
        if (ep := parse_epoch(line)) is not None:
            self.set(epoch=ep[0], epochs=ep[1], stage="training")
        elif (stage := parse_stage(line)) is not None:
            self.set(stage=stage)

    def _on_tick(self, t: Tick) -> None:
        s = self.status
        s.step = self.step_offset + t.step
        s.total = self.total or self.step_offset + t.total
        s.loss = t.loss if t.loss is not None else s.loss
        if t.step > 0 and t.step != self._last_step:
            self._seen.append((self.clock(), t.step))  # step 0 (and so step 1's compile) never enters the rate
        # Only steps timed here give a rate: tqdm's is the run's average, which a compiling step 1 inflates
        # (233.9 s/step on an H200 whose steps took 0.3 s).
        s.seconds_per_step = self._recent_rate()
        s.eta = fmt_seconds(s.seconds_per_step * (s.total - s.step)) if s.seconds_per_step else None
        if not self._measured and len(self._seen) > STEPS_TO_MEASURE:
            self._measured = True  # the estimate a card without a measured figure was promised
            self._clear_bar()
            print(f"measured over {STEPS_TO_MEASURE} steps: {s.seconds_per_step:.3f} s/step; "
                  f"{s.total - s.step} steps to go, about {s.eta}", file=self.out, flush=True)
        if s.stage not in ("sampling", "saving", "caching latents") or t.step != self._last_step:
            s.stage = "training" if self._seen else self.first_stage  # a step after step 0 was seen
        # tqdm shows a step first with the previous loss, then again with its own: keep the last one seen
        if t.step != self._last_step:
            self.flush()
        if t.loss is not None and t.step > 0:
            self._pending = {"step": s.step, "epoch": s.epoch, "loss": t.loss}
        self._last_step = t.step
        self.write()
        self._show(s)

    def _recent_rate(self) -> float | None:
        """Seconds per step over the last steps seen, from step 1 on. sd-scripts' tqdm averages over the whole
        run (smoothing=0), so a first step that waited minutes for torch.compile would inflate its ETA for hours."""
        if len(self._seen) < 2 or self._seen[-1][1] <= self._seen[0][1]:
            return None
        (t0, s0), (t1, s1) = self._seen[0], self._seen[-1]
        return (t1 - t0) / (s1 - s0)

    def flush(self) -> None:
        """Append the last step's loss to the loss history (loss.jsonl)."""
        if self._pending is not None and self.loss_path is not None:
            with open(self.loss_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(self._pending) + "\n")
        self._pending = None

    def idle(self) -> None:
        """No output for a while (the child is loading or compiling): keep the elapsed time fresh while
        the first step is awaited."""
        s = self.status
        if s.stage in self.WAITING and self.clock() - self._last_idle >= 1.0:
            self._last_idle = self.clock()
            self.write(force=True)
            self._show(s, heartbeat=True)

    def line(self) -> str:
        s = self.status
        if s.stage in self.WAITING:
            what = "compiling (torch.compile, inside step 1)" if s.stage == "compiling" else "starting"
            return (f"epoch {s.epoch}/{s.epochs}  step {s.step}/{s.total}  {what}: "
                    f"{self.clock() - self._t0:.0f} s elapsed, no ETA until a step is timed")
        loss = f"{s.loss:.4f}" if s.loss is not None else "?"
        sps = f"{s.seconds_per_step:.2f} s/step" if s.seconds_per_step else "? s/step"
        pct = 100 * s.step / s.total if s.total else 0
        eta = s.eta or "after the next step"
        return f"epoch {s.epoch}/{s.epochs}  step {s.step}/{s.total} ({pct:.0f}%)  loss {loss}  {sps}  ETA {eta}"

    def _show(self, s: Status, heartbeat: bool = False) -> None:
        if self.tty:
            self.out.write("\r\033[K" + self.line())
            self.out.flush()
            self._bar_shown = True
        elif heartbeat:
            if time.time() - self._last_plain >= self.plain_every:
                print(self.line(), file=self.out, flush=True)
                self._last_plain = time.time()
        elif s.step != self._last_plain_step and (time.time() - self._last_plain >= self.plain_every
                                                  or s.step == s.total):
            print(self.line(), file=self.out, flush=True)
            self._last_plain, self._last_plain_step = time.time(), s.step

    def _clear_bar(self) -> None:
        if self._bar_shown:
            self.out.write("\r\033[K")
            self._bar_shown = False

