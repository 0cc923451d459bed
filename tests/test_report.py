"""report: the contact sheet's size and layout, and what report.html contains."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bespoke.demo import make_sprite
from bespoke.eval import evaluate, pixelart, report
from tests.test_evaluate import write_lora

NAME = evaluate.DEFAULT_OUTPUT_NAME
BLURRY = (200, 40, 160)  # a flat magenta render: no edges, so not pixel art


def sample(ws: Path, epoch: int, prompt: int, img: Image.Image) -> None:
    folder = ws / "output" / "sample"
    folder.mkdir(parents=True, exist_ok=True)
    img.save(folder / f"{NAME}_e{epoch:06d}_{prompt:02d}_20250101120000_7.png")


def sprite_render(seed: int) -> Image.Image:
    return make_sprite(seed).resize((1024, 1024), Image.Resampling.NEAREST)


@pytest.fixture
def workspace(tmp_path) -> Path:
    """Base model and three epochs, three prompts; epoch 2 lacks prompt 1; LoRAs for epochs 1-3."""
    for epoch in range(4):
        for prompt in range(3):
            if (epoch, prompt) == (2, 1):
                continue
            good = epoch >= 2 or (epoch, prompt) == (1, 0)
            sample(tmp_path, epoch, prompt, sprite_render(prompt) if good else Image.new("RGB", (1024, 1024), BLURRY))
    for epoch in (1, 2, None):  # None: the last epoch, kohya's unnumbered file
        write_lora(tmp_path, epoch)
    return tmp_path


def test_layout_arithmetic():
    layout = report.Layout(rows=4, cols=3)
    w, h = layout.cell
    assert (w, h) == (report.THUMB + report.GAP + 24 * report.SPRITE_SCALE, report.THUMB + report.TEXT_H)
    assert layout.size == (report.LABEL_W + 3 * (w + report.PAD) + report.PAD,
                           report.HEADER_H + 4 * (h + report.PAD) + report.PAD)
    x0, y0, x1, y1 = layout.sprite_box(3, 2)
    assert x1 - x0 == y1 - y0 == 24 * report.SPRITE_SCALE
    assert x1 <= layout.size[0] - report.PAD and y1 <= layout.size[1]


def test_contact_sheet_has_a_row_per_epoch_and_a_column_per_prompt(workspace):
    evaluate.evaluate(workspace)
    sheet = Image.open(workspace / "output" / "report" / "contact-sheet.png").convert("RGB")
    layout = report.Layout(rows=4, cols=3)
    assert sheet.size == layout.size
    pixels = np.asarray(sheet)

    # epoch 3 (row 3), prompt 1: the enlarged sprite is the demo sprite, cell for cell
    x0, y0, x1, y1 = layout.sprite_box(3, 1)
    shown = pixels[y0:y1:report.SPRITE_SCALE, x0:x1:report.SPRITE_SCALE]
    assert np.array_equal(shown, np.asarray(make_sprite(1)))
    # base row (row 0), prompt 2: the flat render's thumbnail
    tx0, ty0, tx1, ty1 = layout.thumb_box(0, 2)
    assert (pixels[ty0 + 10 : ty1 - 10, tx0 + 10 : tx1 - 10] == BLURRY).all()
    # epoch 2 has no prompt 1: the cell stays background, with an outline
    mx0, my0, mx1, my1 = layout.thumb_box(2, 1)
    assert (pixels[my0 + 40 : my1 - 5, mx0 + 5 : mx1 - 5] == report.BACKGROUND).all()


def test_contact_sheet_frames_the_recommended_and_runner_up_rows(workspace):
    result = evaluate.evaluate(workspace)
    assert (result["recommended"]["epoch"], result["runner_up"]["epoch"]) == (3, 2)
    pixels = np.asarray(Image.open(workspace / "output" / "report" / "contact-sheet.png").convert("RGB"))
    layout = report.Layout(rows=4, cols=3)
    frame_x = report.LABEL_W + report.PAD // 2 + 1  # inside the 2 px frame, left of the first cell

    def frame_colour(row):
        _, y = layout.origin(row, 0)
        return tuple(pixels[y + 50, frame_x])

    assert frame_colour(3) == report.BEST and frame_colour(2) == report.RUNNER
    assert frame_colour(1) == frame_colour(0) == report.BACKGROUND


def test_html_is_self_contained_and_says_what_was_recommended(workspace):
    logs = workspace / "output" / "logs"
    logs.mkdir()
    (logs / "loss.jsonl").write_text("".join(
        json.dumps({"step": s, "epoch": 1 + s // 5, "loss": 0.3 - 0.01 * s}) + "\n" for s in range(15)))
    result = evaluate.evaluate(workspace)
    page = (workspace / "output" / "report" / "report.html").read_text()

    assert "Recommended: epoch 3" in page and "Runner-up: epoch 2" in page
    assert result["reason"] in page.replace("&#x27;", "'")
    assert result["best"]["sha256"] in page
    # nothing fetched from elsewhere: every src/href is a data URI
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert page.count("<polyline") == 2 and ">e3</text>" in page  # loss, its average and epoch marks
    table = page[page.index("<h2>Epochs</h2>") : page.index("<h2>Samples</h2>")]
    assert table.count("<tr>") == 1 + 4 and "<td>base</td>" in table
    assert page.count("not pixel art</td>") == sum(not s["pixel_art"] for e in result["epochs"] for s in e["samples"])
    assert pixelart.PHOTO_ALARM in page  # epoch 1 is mostly not pixel art


def test_html_says_when_there_is_no_loss_history(workspace):
    evaluate.evaluate(workspace)
    page = (workspace / "output" / "report" / "report.html").read_text()
    assert "No loss history" in page and "<svg" not in page


def test_html_without_a_recommendation_warns(tmp_path):
    for prompt in range(2):
        sample(tmp_path, 1, prompt, Image.new("RGB", (1024, 1024), BLURRY))
    evaluate.evaluate(tmp_path)
    page = (tmp_path / "output" / "report" / "report.html").read_text()
    assert "No epoch recommended" in page and "Recommended: epoch" not in page


def test_loss_svg_copes_with_a_single_point():
    svg = report.loss_svg([{"step": 3, "epoch": 1, "loss": 0.1}])
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "nan" not in svg
