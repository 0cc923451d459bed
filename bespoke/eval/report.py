"""The evaluation report: the epoch x prompt contact sheet (PNG) and a self-contained report.html.

The HTML embeds its images as data URIs and draws the loss curve as inline SVG, so it opens from
the volume or the RunPod file browser with nothing beside it.
"""

from __future__ import annotations

import base64
import html as _html
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bespoke import safeio
from bespoke.eval import pixelart

THUMB = 168  # px, the sample's thumbnail
SPRITE_SCALE = 7  # a 24 px sprite shown at 168 px, next to its sample
GAP = 4
PAD = 8
TEXT_H = 20
LABEL_W = 112
HEADER_H = 28
BACKGROUND, INK, DIM = (24, 24, 28), (235, 235, 235), (140, 140, 150)
GOOD, BAD, BEST, RUNNER = (90, 200, 110), (235, 90, 80), (250, 200, 60), (120, 170, 240)


@dataclass(frozen=True)
class Layout:
    """Where everything sits on a sheet of `rows` epochs by `cols` prompts."""

    rows: int
    cols: int
    grid: int = pixelart.GRID

    @property
    def sprite_px(self) -> int:
        return self.grid * SPRITE_SCALE

    @property
    def cell(self) -> tuple[int, int]:
        return THUMB + GAP + self.sprite_px, max(THUMB, self.sprite_px) + TEXT_H

    @property
    def size(self) -> tuple[int, int]:
        w, h = self.cell
        return LABEL_W + self.cols * (w + PAD) + PAD, HEADER_H + self.rows * (h + PAD) + PAD

    def origin(self, row: int, col: int) -> tuple[int, int]:
        w, h = self.cell
        return LABEL_W + PAD + col * (w + PAD), HEADER_H + PAD + row * (h + PAD)

    def thumb_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        x, y = self.origin(row, col)
        return x, y, x + THUMB, y + THUMB

    def sprite_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        x, y = self.origin(row, col)
        return x + THUMB + GAP, y, x + THUMB + GAP + self.sprite_px, y + self.sprite_px


def _font(size: int):
    try:
        return ImageFont.load_default(size)  # Pillow's bundled TrueType font
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _sprite_of(sample, grid: int) -> np.ndarray:
    if sample.sprite is not None and sample.sprite.is_file():
        return pixelart.load_rgb(sample.sprite)
    return pixelart.pixelate(pixelart.load_rgb(sample.path), grid)


def contact_sheet(samples, epochs, recommendation, grid: int = pixelart.GRID) -> Image.Image:
    """Rows are epochs (epoch 0, the base model, as a baseline), columns prompts; each cell shows the
    sample, its recovered sprite and its score. The recommended row is framed gold, the runner-up blue."""
    rows = [e.epoch for e in epochs]
    cols = sorted({s.prompt for s in samples})
    layout = Layout(len(rows), len(cols), grid)
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font, small = _font(15), _font(13)
    best = recommendation.epoch.epoch if recommendation.epoch else None
    runner = recommendation.runner_up.epoch if recommendation.runner_up else None

    for c, prompt in enumerate(cols):
        x, _ = layout.origin(0, c)
        draw.text((x, 6), f"prompt {prompt}", fill=INK, font=font)
    by_cell = {(s.epoch, s.prompt): s for s in samples}
    for r, epoch in enumerate(rows):
        x, y = layout.origin(r, 0)
        summary = epochs[r]
        draw.text((PAD, y), "base" if epoch == 0 else f"epoch {epoch}", fill=INK, font=font)
        draw.text((PAD, y + 22), f"{summary.pixel_art}/{summary.samples} pixel art", fill=DIM, font=small)
        tag = {best: ("best", BEST), runner: ("runner-up", RUNNER)}.get(epoch) if epoch in (best, runner) else None
        if tag:
            draw.text((PAD, y + 42), tag[0], fill=tag[1], font=font)
            w, h = layout.cell
            right = layout.origin(r, len(cols) - 1)[0] + w
            draw.rectangle((LABEL_W + PAD // 2, y - PAD // 2, right + PAD // 2 - 1, y + h + PAD // 2 - 1),
                           outline=tag[1], width=2)
        for c, prompt in enumerate(cols):
            sample = by_cell.get((epoch, prompt))
            tx, ty, _, _ = layout.thumb_box(r, c)
            if sample is None or sample.score is None:
                draw.rectangle(layout.thumb_box(r, c), outline=DIM)
                draw.text((tx + 8, ty + 8), "no sample", fill=DIM, font=small)
                continue
            img = safeio.load_image(sample.path)[0]
            sheet.paste(img.resize((THUMB, THUMB), Image.Resampling.LANCZOS), (tx, ty))
            sprite = pixelart.enlarge(_sprite_of(sample, grid), SPRITE_SCALE)
            sheet.paste(sprite, layout.sprite_box(r, c)[:2])
            sc = sample.score
            verdict = "pixel art" if sc.pixel_art else "not pixel art"
            palette = "" if sc.palette_ok is None else ("  palette ok" if sc.palette_ok else "  off palette")
            draw.text((tx, ty + max(THUMB, layout.sprite_px) + 2), f"{sc.score:.2f} {verdict}{palette}",
                      fill=GOOD if sc.pixel_art else BAD, font=small)
    return sheet


def _data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def loss_svg(points: list[dict], width: int = 760, height: int = 260) -> str:
    """The loss per step (faint) and its running average (bold), epoch starts dashed; plain SVG."""
    left, right, top, bottom = 56, 12, 12, 34
    steps = np.array([p["step"] for p in points], dtype=float)
    loss = np.array([p["loss"] for p in points], dtype=float)
    order = np.argsort(steps, kind="stable")
    steps, loss, epochs = steps[order], loss[order], np.array([p["epoch"] for p in points])[order]
    lo, hi = float(loss.min()), float(loss.max())
    hi = hi if hi > lo else lo + 1e-6
    x0, x1 = float(steps.min()), float(max(steps.max(), steps.min() + 1))

    def sx(v):
        return left + (v - x0) / (x1 - x0) * (width - left - right)

    def sy(v):
        return top + (hi - v) / (hi - lo) * (height - top - bottom)

    ema, smooth = loss[0], []
    for v in loss:  # TensorBoard-style smoothing
        ema = 0.9 * ema + 0.1 * v
        smooth.append(ema)
    stride = max(1, len(steps) // 1500)  # keep the file small on long runs

    def polyline(ys, style):
        pts = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(steps[::stride], ys[::stride], strict=True))
        return f'<polyline fill="none" {style} points="{pts}"/>'

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="training loss">',
             f'<rect width="{width}" height="{height}" fill="#fff"/>']
    for e in np.unique(epochs):
        first = float(steps[np.argmax(epochs == e)])
        parts.append(f'<line x1="{sx(first):.1f}" x2="{sx(first):.1f}" y1="{top}" y2="{height - bottom}" '
                     f'stroke="#bbb" stroke-dasharray="4 3"/><text x="{sx(first) + 3:.1f}" y="{top + 10}" '
                     f'font-size="10" fill="#777">e{int(e)}</text>')
    for v in (lo, (lo + hi) / 2, hi):
        parts.append(f'<text x="{left - 6}" y="{sy(v) + 4:.1f}" font-size="11" text-anchor="end">{v:.4g}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{height - bottom}" stroke="#333"/>')
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{height - bottom}" y2="{height - bottom}" stroke="#333"/>')
    for v in (x0, x1):
        parts.append(f'<text x="{sx(v):.1f}" y="{height - bottom + 16}" font-size="11" text-anchor="middle">{int(v)}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 4}" font-size="11" text-anchor="middle">step</text>')
    parts.append(polyline(loss, 'stroke="#9ab" stroke-width="1"'))
    parts.append(polyline(np.array(smooth), 'stroke="#c33" stroke-width="2"'))
    parts.append("</svg>")
    return "\n".join(parts)


def _esc(value) -> str:
    return _html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:8px 0 24px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}.rec{border:3px solid #d9a400;padding:12px 16px;background:#fffbea}
.warn{border:3px solid #c33;padding:12px 16px;background:#fff0f0}img{max-width:100%}
code{background:#f4f4f4;padding:1px 4px}"""


def html(result: dict, sheet: Image.Image, loss: list[dict] | None) -> str:
    """report.html: the recommendation, the contact sheet, the loss curve and the tables, in one file."""
    rec, runner, best = result["recommended"], result["runner_up"], result["best"]
    if rec:
        box = f'<div class="rec"><h2>Recommended: epoch {rec["epoch"]}</h2><p>{_esc(result["reason"])}.</p>'
        box += f"<p>Runner-up: epoch {runner['epoch']}.</p>" if runner else "<p>No runner-up.</p>"
        if best:
            box += f"<p>Copied to <code>{_esc(best['path'])}</code>, sha256 <code>{_esc(best['sha256'])}</code>.</p>"
        else:
            box += "<p>Its LoRA file was not found, so best.safetensors was not written.</p>"
        box += "<p>The score only looks for pixel-art structure; look at the sheet before you trust it.</p></div>"
    else:
        box = f'<div class="warn"><h2>No epoch recommended</h2><p>{_esc(result["reason"])}.</p></div>'
    if any(e["epoch"] > 0 and pixelart.looks_like_photos(e["pixel_art"], e["count"]) for e in result["epochs"]):
        box += f'<div class="warn"><p>Some epochs: {_esc(pixelart.PHOTO_ALARM)}.</p></div>'

    loss_html = loss_svg(loss) if loss else (
        f"<p>No loss history: <code>{_esc(result['loss_file'])}</code> was not found "
        "(the training follower writes it during <code>bespoke train</code>).</p>")
    epochs = _table(
        ["epoch", "samples", "pixel art", "on palette", "mean score", "mean loss", "LoRA"],
        [["base" if e["baseline"] else e["epoch"], e["count"], e["pixel_art"],
          "-" if e["palette_ok"] is None else e["palette_ok"], f"{e['mean_score']:.2f}",
          "-" if e["loss"] is None else f"{e['loss']:.4f}", (e["lora"] or "-").rsplit("/", 1)[-1]]
         for e in result["epochs"]])
    samples = _table(
        ["epoch", "prompt", "verdict", "score", "mismatch", "purity", "boundary", "period px", "colours",
         "palette p95", "why"],
        [[s["epoch"], s["prompt"], "pixel art" if s["pixel_art"] else "not pixel art", f"{s['score']:.2f}",
          f"{s['mismatch']:.3f}", f"{s['purity']:.3f}", f"{s['boundary']:.3f}", f"{s['grid_period']:.1f}",
          s["colours"], "-" if s["palette_p95"] is None else f"{s['palette_p95']:.1f}", "; ".join(s["reasons"])]
         for e in result["epochs"] for s in e["samples"]])
    t = result["thresholds"]
    palette = result["palette"]
    palette_line = (f"Palette: {palette['colours']} colours from <code>{_esc(palette['source'])}</code>, "
                    f"{palette['count_range'][0]}-{palette['count_range'][1]} colours per sprite allowed."
                    if palette else "Palette: no training images found, so the palette was not checked.")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bespoke evaluation</title><style>{CSS}</style></head>
<body>
<h1>bespoke evaluation</h1>
<p>{_esc(result['output_name'])} in <code>{_esc(result['workspace'])}</code>, {_esc(result['generated_at'])}.</p>
{box}
<h2>Contact sheet</h2>
<p>Rows are epochs (<em>base</em> is the model before training), columns are prompts. Each cell: the sample,
its recovered {result['grid']}&times;{result['grid']} sprite, and its score (0.5 or more is pixel art).</p>
<img alt="contact sheet" src="{_data_uri(sheet)}">
<h2>Training loss</h2>
{loss_html}
<h2>Epochs</h2>
{epochs}
<h2>Samples</h2>
{samples}
<h2>How the score works</h2>
<p>Every sample is judged on a {result['grid']}&times;{result['grid']} grid. Pixel art needs all four:
mismatch &le; {t['mismatch_max']} (pixels more than {t['mismatch_tol']}/255 from the upscaled sprite, in cells
next to a colour change), purity &ge; {t['purity_min']} (cell centres within {t['purity_tol']}/255 of their
median), boundary &ge; {t['boundary_min']} (share of edge strength within {t['band_px']} px of a cell line;
chance is about 0.12), and a grid period within {t['period_tol']:.0%} of the cell size. {palette_line}
An epoch is recommended by its share of pixel-art samples, then its share on the palette, then the later epoch.</p>
</body></html>
"""
