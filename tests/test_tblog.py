"""bespoke.tblog: the event files hold each epoch's samples, sprites, scores, the alarm and the verdict.

Read back record by record with tensorboardX's own Event message (TFRecord framing: length, its CRC, the
event, its CRC). tests/test_tensorboard_http.py serves the same files with TensorBoard itself.
"""

from __future__ import annotations

import struct
from pathlib import Path

from PIL import Image
from tensorboardX.proto.event_pb2 import Event

from bespoke import recipe, tblog
from bespoke.eval import evaluate, pixelart
from bespoke.workspace import Workspace
from tests.test_evaluate import photo, pixel_art, write_sample


def read_events(run: Path) -> list[Event]:
    events = []
    for f in sorted(run.glob("events.out.tfevents.*")):
        data = f.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            e = Event()
            e.ParseFromString(data[i + 12:i + 12 + n])
            events.append(e)
            i += 12 + n + 4
    return events


def tags(events) -> dict[str, list[tuple[int, object]]]:
    out: dict[str, list] = {}
    for e in events:
        for v in e.summary.value:
            kind = v.WhichOneof("value")
            value = v.simple_value if kind == "simple_value" else v.image if kind == "image" else v.tensor
            out.setdefault(v.tag, []).append((e.step, value))
    return out


def scored_epoch(ws: Path, epoch: int, images) -> list[evaluate.Sample]:
    for p, make in enumerate(images):
        write_sample(ws, epoch, p, make(p))
    samples = [s for s in evaluate.find_samples(ws / "output" / "sample", evaluate.DEFAULT_OUTPUT_NAME)
               if s.epoch == epoch]
    evaluate.score_samples(samples, None, pixelart.GRID, ws / "output" / "report" / "sprites")
    return samples


def test_epochs_and_verdict_land_as_images_scalars_and_text(tmp_path):
    board = tblog.Board(Workspace(tmp_path).board, recipe.TEST_PROMPTS)
    e1 = scored_epoch(tmp_path, 1, [photo] * 4)
    board.epoch(1, 10, e1, alarm="epoch 1: 0/4 pixel art: samples look like photos")
    e2 = scored_epoch(tmp_path, 2, [pixel_art] * 4)
    board.epoch(2, 20, e2)
    sheet = tmp_path / "sheet.png"
    Image.new("RGB", (300, 200), "white").save(sheet)
    board.final({"contact_sheet": str(sheet), "recommended": {"epoch": 2, "mean_score": 0.9},
                 "reason": "epoch 2: 4/4 samples pixel art", "epochs": [
                     {"epoch": 1, "baseline": False, "pixel_art": 0, "count": 4, "mean_score": 0.1},
                     {"epoch": 2, "baseline": False, "pixel_art": 4, "count": 4, "mean_score": 0.9}]}, 20)
    board.close()

    t = tags(read_events(Workspace(tmp_path).board))
    label = tblog.prompt_label(0, recipe.TEST_PROMPTS)
    assert label == "0_bespoke_punk_green_solid_background"
    for i in range(4):
        lab = tblog.prompt_label(i, recipe.TEST_PROMPTS)
        assert [s for s, _ in t[f"sample/{lab}"]] == [10, 20]
        assert [s for s, _ in t[f"sprite/{lab}"]] == [10, 20]
        assert len(t[f"score/{lab}"]) == 2
    img = t[f"sprite/{label}"][1][1]
    assert (img.width, img.height) == (24 * tblog.SPRITE_SCALE,) * 2
    mean = dict(t["score/mean"])
    assert mean[20] > mean[10]
    assert dict(t["score/pixel_art_share"]) == {10: 0.0, 20: 1.0}
    assert [s for s, _ in t["alarm/text_summary"]] == [10]
    assert b"epoch 1: 0/4 pixel art" in t["alarm/text_summary"][0][1].string_val[0]
    assert [s for s, _ in t["report/contact_sheet"]] == [20]
    assert b"recommended: epoch 2" in t["report/recommendation/text_summary"][0][1].string_val[0]


def test_nothing_is_written_until_something_is_logged(tmp_path):
    board = tblog.Board(tmp_path / "logs" / "bespoke")
    board.close()
    assert not (tmp_path / "logs").exists()


def test_writers_in_one_second_keep_their_own_files_in_order(tmp_path):
    """tensorboardX names a file by the second and the host: the verdict's writer, opened right after the
    epochs' one, must neither truncate it nor sort before it."""
    for step in (1, 2, 3):
        board = tblog.Board(tmp_path)
        board.writer.add_scalar("x", float(step), step)
        board.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 3
    assert [s for s, _ in tags(read_events(tmp_path))["x"]] == [1, 2, 3]
