"""Evaluation: score every epoch's samples, recommend an epoch, copy its LoRA, write the report.

Inputs are what sd-scripts and the training follower leave in the workspace's output (Workspace:
samples, one LoRA per epoch, status.json and loss.jsonl). Outputs go to its report folder (report.json,
contact-sheet.png, report.html, sprites/) and best.safetensors with its sha256.
"""

from __future__ import annotations

import io
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from bespoke import lorameta, recipe, runs, safeio
from bespoke.errors import BespokeError
from bespoke.eval import pixelart, report
from bespoke.fsutil import (
    atomic_copy,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json_object,
    sha256_file,
)
from bespoke.workspace import Workspace

DEFAULT_OUTPUT_NAME = recipe.OUTPUT_NAME
# kohya's train_util.sample_image_inference: {output_name}_e{epoch:06d}_{prompt:02d}_{timestamp}[_{seed}].png
SAMPLE_NAME = re.compile(r"^(?P<name>.+)_e(?P<epoch>\d{6})_(?P<prompt>\d{2})_(?P<ts>\d{14})(?:_(?P<seed>\d+))?$")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


@dataclass
class Sample:
    path: Path
    epoch: int
    prompt: int
    timestamp: str
    seed: int | None = None
    score: pixelart.Score | None = None
    sprite: Path | None = None

    def as_dict(self) -> dict:
        return {
            "path": str(self.path), "epoch": self.epoch, "prompt": self.prompt, "seed": self.seed,
            "sprite": str(self.sprite) if self.sprite else None, **(self.score.as_dict() if self.score else {}),
        }


@dataclass
class Epoch:
    epoch: int
    samples: int
    pixel_art: int
    palette_ok: int | None  # None without a palette
    mean_score: float
    lora: Path | None
    loss: float | None = None  # mean training loss over the epoch, when logged

    @property
    def share(self) -> float:
        return self.pixel_art / self.samples if self.samples else 0.0

    @property
    def palette_share(self) -> float:
        return self.palette_ok / self.samples if self.samples and self.palette_ok is not None else 0.0

    def as_dict(self) -> dict:
        return {
            "epoch": self.epoch, "baseline": self.epoch == 0, "count": self.samples, "pixel_art": self.pixel_art,
            "palette_ok": self.palette_ok, "mean_score": round(self.mean_score, 4),
            "lora": str(self.lora) if self.lora else None, "loss": self.loss,
        }


@dataclass
class Recommendation:
    epoch: Epoch | None
    runner_up: Epoch | None
    reason: str
    ranking: list[int] = field(default_factory=list)


def output_name(ws: Workspace | Path) -> str:
    """The run's output name from status.json, else sd-scripts' name in our recipe."""
    name = (read_json_object(Workspace.of(ws).status) or {}).get("output_name")
    return name if isinstance(name, str) and name else DEFAULT_OUTPUT_NAME


def find_samples(sample_dir: Path, name: str) -> list[Sample]:
    """kohya's per-epoch samples for `name`; the newest file wins where a resumed run sampled twice."""
    latest: dict[tuple[int, int], Sample] = {}
    for path in sorted(Path(sample_dir).glob("*")) if Path(sample_dir).is_dir() else []:
        m = SAMPLE_NAME.match(path.stem)
        if path.suffix.lower() not in IMAGE_SUFFIXES or not m or m["name"] != name:
            continue  # step-numbered samples have no epoch and no LoRA of their own
        s = Sample(path, int(m["epoch"]), int(m["prompt"]), m["ts"], int(m["seed"]) if m["seed"] else None)
        key = (s.epoch, s.prompt)
        if key not in latest or s.timestamp >= latest[key].timestamp:
            latest[key] = s
    return sorted(latest.values(), key=lambda s: (s.epoch, s.prompt))


def default_palette_dir(ws: Workspace | Path) -> Path | None:
    """The workspace's training_data when it holds images (prepare writes them there), else no palette check."""
    folder = Workspace.of(ws).training_data
    if folder.is_dir() and safeio.image_files(folder, IMAGE_SUFFIXES):
        return folder
    return None


_palettes: dict[tuple, pixelart.Palette] = {}


def palette_for(folder: Path | None, grid: int) -> pixelart.Palette | None:
    """The training palette, read once per set of files: the alarm asks again after every epoch."""
    if folder is None:
        return None
    folder = Path(folder)
    if not folder.is_dir():
        raise BespokeError("palette folder not found", str(folder), "pass the training images' folder")
    files = safeio.image_files(folder, IMAGE_SUFFIXES)
    stats = ((str(p), st.st_mtime_ns, st.st_size) for p, st in ((p, p.lstat()) for p in files))
    key = (str(folder.resolve()), grid, tuple(stats))
    if key not in _palettes:
        _palettes.clear()
        _palettes[key] = pixelart.load_palette(folder, grid)
    return _palettes[key]


def score_samples(samples: list[Sample], palette: pixelart.Palette | None, grid: int,
                  sprite_dir: Path | None = None) -> None:
    """Score each sample in place; with sprite_dir, also write its recovered grid x grid sprite there."""
    for s in samples:
        s.score, sprite = pixelart.score(pixelart.load_rgb(s.path), grid, palette)
        if sprite_dir is not None:
            s.sprite = sprite_dir / f"e{s.epoch:06d}_p{s.prompt:02d}.png"
            atomic_write_bytes(s.sprite, _png(pixelart.enlarge(sprite, 1)))


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def lora_file(output: Path, name: str, epoch: int, last_epoch: int) -> Path | None:
    """Epoch N's LoRA in `output` (kohya's naming: runs.epoch_file), the numbered name first; the last
    epoch's may have only the unnumbered name."""
    numbered = runs.numbered_file(output, name, epoch)
    if numbered.is_file():
        return numbered
    final = runs.epoch_file(output, name, epoch, epoch)
    return final if epoch == last_epoch and final.is_file() else None


def read_loss(path: Path) -> list[dict] | None:
    """The follower's loss history, skipping lines it was still writing; None if there is none."""
    if not path.is_file():
        return None
    points = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            p = json.loads(line)
            points.append({"step": int(p["step"]), "epoch": int(p["epoch"]), "loss": float(p["loss"])})
        except (ValueError, KeyError, TypeError, RecursionError):
            continue
    return points


def summarise(samples: list[Sample], output: Path, name: str, last_epoch: int,
              loss: list[dict] | None, with_palette: bool) -> list[Epoch]:
    epochs = []
    for e in sorted({s.epoch for s in samples}):
        mine = [s for s in samples if s.epoch == e and s.score]
        losses = [p["loss"] for p in loss or [] if p["epoch"] == e]
        epochs.append(Epoch(
            epoch=e, samples=len(mine), pixel_art=sum(s.score.pixel_art for s in mine),
            palette_ok=sum(bool(s.score.palette_ok) for s in mine) if with_palette else None,
            mean_score=sum(s.score.score for s in mine) / len(mine) if mine else 0.0,
            lora=lora_file(output, name, e, last_epoch) if e > 0 else None,
            loss=round(sum(losses) / len(losses), 5) if losses else None,
        ))
    return epochs


def recommend(epochs: list[Epoch]) -> Recommendation:
    """Most samples judged pixel art, then most on the training palette, then the later epoch.

    Epoch 0 is the base model (sampled before training) and never a candidate; nor is an epoch
    with no pixel art at all. Epochs whose LoRA file exists come first, since only they can be copied.
    """
    pool = [e for e in epochs if e.epoch > 0 and e.pixel_art > 0]
    if any(e.lora for e in pool):
        pool = [e for e in pool if e.lora]
    ranked = sorted(pool, key=lambda e: (e.share, e.palette_share, e.epoch), reverse=True)
    if not ranked:
        return Recommendation(None, None, "no trained epoch produced a sample judged pixel art")
    best, runner = ranked[0], ranked[1] if len(ranked) > 1 else None
    reason = f"epoch {best.epoch}: {best.pixel_art}/{best.samples} samples pixel art"
    if best.palette_ok is not None:
        reason += f", {best.palette_ok}/{best.samples} on the training palette"
    if runner is None:
        reason += "; the only candidate"
    elif best.share != runner.share:
        reason += f"; more pixel art than epoch {runner.epoch} ({runner.pixel_art}/{runner.samples})"
    elif best.palette_share != runner.palette_share:
        reason += f"; as much pixel art as epoch {runner.epoch}, closer to the palette ({runner.palette_ok}/{runner.samples})"
    else:
        reason += f"; tied with epoch {runner.epoch}, and the later epoch wins ties"
    return Recommendation(best, runner, reason, [e.epoch for e in ranked])


def publish_best(ws: Workspace, lora: Path | None, meta: dict[str, str] | None = None) -> dict | None:
    """Copy the recommended LoRA to best.safetensors with a sha256sum-style checksum beside it; `meta`
    goes into its header (bespoke.lorameta), the tensors untouched.

    Without a recommendation an older best.safetensors is removed: it would belong to another run.
    """
    best = ws.best
    checksum = best.with_name(best.name + ".sha256")
    if lora is None:
        best.unlink(missing_ok=True)
        checksum.unlink(missing_ok=True)
        return None
    try:  # a LoRA cut short (a full disk, a killed save) must not replace a good best.safetensors
        lorameta.read_header(lora)
    except BespokeError as e:
        raise BespokeError(f"the recommended epoch's LoRA is damaged: {e.what}", str(lora),
                           "a full disk or a killed save cuts a LoRA short: free space and train that epoch again; "
                           "best.safetensors is unchanged") from None
    atomic_copy(lora, best)
    if meta:
        lorameta.merge_metadata(best, meta)
    digest = sha256_file(best)
    atomic_write_text(checksum, f"{digest}  {best.name}\n")
    return {"path": str(best), "sha256": digest, "source": str(lora)}


def evaluate(workspace: Workspace | Path, grid: int = pixelart.GRID, palette_dir: Path | None = None) -> dict:
    """Score every sample, write the sprites and the report, copy the recommended LoRA; returns report.json.
    Holds the workspace lock."""
    ws = Workspace.of(workspace)
    with ws.lock("evaluate"):
        return _evaluate(ws, grid, palette_dir)


def _evaluate(ws: Workspace, grid: int, palette_dir: Path | None) -> dict:
    name = output_name(ws)
    samples = find_samples(ws.samples, name)
    if not samples:
        raise BespokeError(
            f"no samples named {name}_e<epoch>_... to evaluate", str(ws.samples),
            "train with sample prompts (bespoke run does), or check --workspace",
        )
    report_dir = ws.report
    if report_dir.is_symlink() and not Workspace(ws.output).contains(report_dir):  # it would write there
        raise BespokeError("the report folder is a link out of the output folder", safeio.show(report_dir),
                           "remove the link: evaluate writes its report (and only that) there")
    if palette_dir is not None and _overlap(Path(palette_dir), report_dir):
        raise BespokeError("the palette folder overlaps the report folder, which evaluate rewrites",
                           safeio.show(palette_dir), "pass --palette-from the training images' folder")
    palette_dir = palette_dir or default_palette_dir(ws)
    palette = palette_for(palette_dir, grid)
    score_samples(samples, palette, grid, report_dir / "sprites")
    loss = read_loss(ws.loss)
    epochs = summarise(samples, ws.output, name, max(s.epoch for s in samples), loss, palette is not None)
    rec = recommend(epochs)
    best = publish_best(ws, rec.epoch.lora if rec.epoch else None, best_meta(rec, samples))
    result = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "workspace": str(ws.root), "output_name": name, "grid": grid,
        "palette": None if palette is None else {
            "source": palette.source, "colours": len(palette.colours), "count_range": list(palette.count_range),
        },
        "thresholds": thresholds(),
        "recommended": rec.epoch.as_dict() if rec.epoch else None,
        "runner_up": rec.runner_up.as_dict() if rec.runner_up else None,
        "reason": rec.reason, "ranking": rec.ranking, "best": best,
        "epochs": [{**e.as_dict(), "samples": [s.as_dict() for s in samples if s.epoch == e.epoch]} for e in epochs],
        "loss": {"path": str(ws.loss), "points": len(loss)} if loss else None, "loss_file": str(ws.loss),
        "contact_sheet": str(report_dir / "contact-sheet.png"),
        "html": str(report_dir / "report.html"),
    }
    sheet = report.contact_sheet(samples, epochs, rec)
    atomic_write_bytes(report_dir / "contact-sheet.png", _png(sheet))
    atomic_write_text(report_dir / "report.html", report.html(result, sheet, loss))
    atomic_write_json(report_dir / "report.json", result)
    return result


def _overlap(a: Path, b: Path) -> bool:
    """One folder is, holds or is inside the other (links followed: the workspace's containment rule)."""
    a, b = Path(a).absolute(), Path(b).absolute()  # contains() takes a relative path from its own root
    return Workspace(a).contains(b) or Workspace(b).contains(a)


def best_meta(rec: Recommendation, samples: list[Sample]) -> dict[str, str] | None:
    """best.safetensors' own header keys: the recommendation and its best sample as the thumbnail."""
    e = rec.epoch
    if e is None:
        return None
    mine = [s for s in samples if s.epoch == e.epoch and s.score]
    top = max(mine, key=lambda s: s.score.score, default=None)
    return lorameta.best_keys(e.epoch, e.mean_score, f"{e.pixel_art}/{e.samples}", rec.reason,
                              top.path if top else None)


def thresholds() -> dict:
    p = pixelart
    return {
        "mismatch_max": p.MISMATCH_MAX, "mismatch_tol": p.MISMATCH_TOL, "purity_min": p.PURITY_MIN,
        "purity_tol": p.PURITY_TOL, "boundary_min": p.BOUNDARY_MIN, "edge_step": p.EDGE_STEP, "band_px": p.BAND,
        "period_tol": p.PERIOD_TOL, "palette_p95_max": p.PALETTE_P95_MAX,
    }


def epoch_alarm(workspace: Workspace | Path, epoch: int, palette_dir: Path | None) -> tuple[str, bool]:
    """One line on an epoch's samples, and True when they look like photos (pixelart.looks_like_photos).

    Without palette_dir the prepared training data (the workspace's training_data) is the palette, if any.
    """
    line, photo_like, _ = epoch_verdict(workspace, epoch, palette_dir)
    return line, photo_like


def epoch_verdict(workspace: Workspace | Path, epoch: int, palette_dir: Path | None,
                  sprite_dir: Path | None = None) -> tuple[str, bool, list[Sample]]:
    """epoch_alarm's line and flag, and the scored samples (their sprites written to sprite_dir, if given)."""
    ws = Workspace.of(workspace)
    samples = [s for s in find_samples(ws.samples, output_name(ws)) if s.epoch == epoch]
    if not samples:
        return f"epoch {epoch}: no samples in {ws.samples}", False, []
    palette = palette_for(palette_dir or default_palette_dir(ws), pixelart.GRID)
    score_samples(samples, palette, pixelart.GRID, sprite_dir)
    n, good = len(samples), sum(s.score.pixel_art for s in samples)
    line = f"epoch {epoch}: {good}/{n} pixel art"
    if palette is None:
        line += ", no palette to check"
    else:
        off = sum(not s.score.palette_ok for s in samples)
        line += ", palette ok" if off == 0 else f", palette off in {off}/{n}"
    return line, pixelart.looks_like_photos(good, n), samples


def summary_lines(result: dict) -> list[str]:
    """What `bespoke evaluate` prints: one line per epoch, the recommendation and where the report is."""
    lines = []
    for e in result["epochs"]:
        label = "base" if e["baseline"] else f"epoch {e['epoch']}"
        pal = "" if e["palette_ok"] is None else f", {e['palette_ok']}/{e['count']} on palette"
        lines.append(f"{label}: {e['pixel_art']}/{e['count']} pixel art{pal}, mean score {e['mean_score']:.2f}")
    rec = result["recommended"]
    lines.append(f"recommended: {result['reason']}" if rec else f"no recommendation: {result['reason']}")
    if result["runner_up"]:
        lines.append(f"runner-up: epoch {result['runner_up']['epoch']}")
    if result["best"]:
        lines.append(f"best LoRA: {result['best']['path']} (sha256 {result['best']['sha256'][:12]}...)")
    lines.append(f"report: {result['html']}")
    return lines
