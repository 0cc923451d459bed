"""evaluate: finding kohya's samples, the recommendation rule, best.safetensors, report.json, the alarm."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from safetensors import safe_open

from bespoke.cli import cli
from bespoke.demo import make_sprite
from bespoke.errors import BespokeError
from bespoke.eval import evaluate, pixelart

NAME = evaluate.DEFAULT_OUTPUT_NAME


def photo(seed: int) -> Image.Image:
    """A smooth photo-like image: what SD 1.5 gave the user instead of pixel art."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize((1024, 1024), Image.Resampling.BICUBIC)


def pixel_art(seed: int) -> Image.Image:
    return make_sprite(seed).resize((1024, 1024), Image.Resampling.NEAREST)


def off_palette(seed: int) -> Image.Image:
    return Image.fromarray(255 - np.asarray(pixel_art(seed)))


def write_sample(ws: Path, epoch: int, prompt: int, img: Image.Image, ts: str = "20250101120000",
                 seed: int | None = 42, name: str = NAME) -> Path:
    folder = ws / "output" / "sample"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_e{epoch:06d}_{prompt:02d}_{ts}{'' if seed is None else f'_{seed}'}.png"
    img.save(path)
    return path


def write_lora(ws: Path, epoch: int | None, name: str = NAME) -> Path:
    """A tiny real LoRA file (evaluate copies it and merges its recommendation into the header)."""
    from safetensors.numpy import save_file

    path = ws / "output" / (f"{name}.safetensors" if epoch is None else f"{name}-{epoch:06d}.safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_x.lora_down.weight": np.full((2, 3), epoch or -1, dtype=np.float16)}, str(path),
              metadata={"ss_output_name": name, "modelspec.title": name})
    return path


def write_training_data(ws: Path, count: int = 6) -> None:
    folder = ws / "training_data" / "10_bespoke"
    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(count):
        pixel_art(seed).save(folder / f"{seed:03d}.png")  # prepare writes nearest-upscaled 1024 px images


def build(ws: Path, plan: dict[int, list], last: int) -> None:
    """plan: epoch -> one image maker per prompt. LoRAs for every epoch >= 1, the last unnumbered."""
    for epoch, makers in plan.items():
        for prompt, make in enumerate(makers):
            write_sample(ws, epoch, prompt, make(prompt))
        if epoch >= 1:
            write_lora(ws, None if epoch == last else epoch)


def test_find_samples_parses_kohya_names_and_keeps_the_newest(tmp_path):
    write_sample(tmp_path, 2, 1, pixel_art(0), ts="20250101120000")
    newer = write_sample(tmp_path, 2, 1, pixel_art(1), ts="20250102120000", seed=None)
    write_sample(tmp_path, 0, 0, photo(0), ts="20250101110000")
    write_sample(tmp_path, 1, 0, pixel_art(2), name="other_run")
    (tmp_path / "output" / "sample" / f"{NAME}_000500_00_20250101120000.png").write_bytes(b"step sample")
    found = evaluate.find_samples(tmp_path / "output" / "sample", NAME)
    assert [(s.epoch, s.prompt) for s in found] == [(0, 0), (2, 1)]
    assert found[1].path == newer and found[1].seed is None and found[0].seed == 42


def test_output_name_comes_from_status_json(tmp_path):
    out = tmp_path / "output"
    out.mkdir()
    assert evaluate.output_name(tmp_path) == NAME
    (out / "status.json").write_text(json.dumps({"output_name": "mine"}))
    assert evaluate.output_name(tmp_path) == "mine"


def test_lora_file_maps_the_last_epoch_to_the_unnumbered_file(tmp_path):
    out = tmp_path / "output"
    one, last = write_lora(tmp_path, 1), write_lora(tmp_path, None)
    assert evaluate.lora_file(out, NAME, 1, 3) == one
    assert evaluate.lora_file(out, NAME, 3, 3) == last
    assert evaluate.lora_file(out, NAME, 2, 3) is None


def _epoch(n, samples, good, palette=None, lora=True):
    return evaluate.Epoch(n, samples, good, palette, 0.5, Path(f"/x/{n}") if lora else None)


def test_recommend_by_share_then_palette_then_later_epoch():
    share = evaluate.recommend([_epoch(1, 4, 4, 1), _epoch(2, 4, 3, 4), _epoch(3, 4, 2, 4)])
    assert share.epoch.epoch == 1 and share.runner_up.epoch == 2 and "more pixel art" in share.reason
    palette = evaluate.recommend([_epoch(1, 4, 4, 3), _epoch(2, 4, 4, 2)])
    assert palette.epoch.epoch == 1 and "closer to the palette" in palette.reason
    tie = evaluate.recommend([_epoch(1, 4, 4, 4), _epoch(2, 4, 4, 4), _epoch(3, 4, 1, 4)])
    assert (tie.epoch.epoch, tie.runner_up.epoch) == (2, 1) and "later epoch wins" in tie.reason
    assert tie.ranking == [2, 1, 3]


def test_recommend_never_picks_the_base_model_or_an_epoch_without_pixel_art():
    rec = evaluate.recommend([_epoch(0, 4, 4, lora=False), _epoch(1, 4, 0), _epoch(2, 4, 1)])
    assert rec.epoch.epoch == 2 and rec.runner_up is None
    none = evaluate.recommend([_epoch(0, 4, 4, lora=False), _epoch(1, 4, 0)])
    assert none.epoch is None and "no trained epoch" in none.reason


def test_recommend_prefers_epochs_whose_lora_exists():
    rec = evaluate.recommend([_epoch(1, 4, 3), _epoch(2, 4, 4, lora=False)])
    assert rec.epoch.epoch == 1


def test_evaluate_writes_report_sprites_and_best(tmp_path):
    write_training_data(tmp_path)
    build(tmp_path, {
        0: [photo, photo, photo],
        1: [photo, pixel_art, photo],
        2: [pixel_art, pixel_art, off_palette],
        3: [pixel_art, pixel_art, pixel_art],
    }, last=3)
    (tmp_path / "output" / "logs").mkdir()
    (tmp_path / "output" / "logs" / "loss.jsonl").write_text(
        "".join(json.dumps({"step": s, "epoch": 1 + s // 10, "loss": 0.2 - s / 1000}) + "\n" for s in range(30))
        + '{"step": 31, "epo')  # a line still being written
    result = evaluate.evaluate(tmp_path)

    out = tmp_path / "output"
    assert result["recommended"]["epoch"] == 3 and result["runner_up"]["epoch"] == 2
    assert json.loads((out / "report" / "report.json").read_text())["recommended"]["epoch"] == 3
    best = (out / "best.safetensors").read_bytes()
    with safe_open(str(out / "best.safetensors"), framework="numpy") as f, \
            safe_open(str(out / f"{NAME}.safetensors"), framework="numpy") as g:
        assert list(f.keys()) == list(g.keys())
        assert all(np.array_equal(f.get_tensor(k), g.get_tensor(k)) for k in f.keys())
        meta = f.metadata()
    assert meta["modelspec.title"] == NAME and meta["bespoke.recommended_epoch"] == "3"
    assert meta["bespoke.pixel_art"] == "3/3" and float(meta["bespoke.mean_score"]) > 0
    assert meta["modelspec.thumbnail"].startswith("data:image/jpeg;base64,")
    digest = hashlib.sha256(best).hexdigest()
    assert (out / "best.safetensors.sha256").read_text() == f"{digest}  best.safetensors\n"
    assert result["best"]["sha256"] == digest

    rows = {e["epoch"]: e for e in result["epochs"]}
    assert rows[0]["baseline"] and rows[0]["pixel_art"] == 0 and rows[0]["lora"] is None
    assert (rows[1]["pixel_art"], rows[2]["pixel_art"], rows[3]["pixel_art"]) == (1, 3, 3)
    assert (rows[2]["palette_ok"], rows[3]["palette_ok"]) == (2, 3)
    assert rows[1]["loss"] == pytest.approx(np.mean([0.2 - s / 1000 for s in range(10)]))
    assert result["loss"]["points"] == 30

    sprites = sorted((out / "report" / "sprites").glob("*.png"))
    assert len(sprites) == sum(len(e["samples"]) for e in result["epochs"]) == 12
    assert [s["prompt"] for s in rows[2]["samples"]] == [0, 1, 2] and rows[2]["count"] == 3
    assert np.array_equal(np.asarray(Image.open(out / "report" / "sprites" / "e000003_p01.png")),
                          np.asarray(make_sprite(1)))
    assert (out / "report" / "contact-sheet.png").is_file() and (out / "report" / "report.html").is_file()


def test_no_pixel_art_anywhere_recommends_nothing_and_removes_a_stale_best(tmp_path):
    build(tmp_path, {1: [photo, photo], 2: [photo, photo]}, last=2)
    (tmp_path / "output" / "best.safetensors").write_bytes(b"from an older run")
    result = evaluate.evaluate(tmp_path)
    assert result["recommended"] is None and result["best"] is None and result["palette"] is None
    assert not (tmp_path / "output" / "best.safetensors").exists()
    assert result["loss"] is None


def test_evaluate_without_samples_is_a_user_error(tmp_path):
    with pytest.raises(BespokeError, match="no samples"):
        evaluate.evaluate(tmp_path)


def test_epoch_alarm_line_and_flag(tmp_path):
    write_training_data(tmp_path)
    build(tmp_path, {1: [photo, photo, pixel_art, photo], 2: [pixel_art] * 4, 3: [pixel_art, off_palette, photo, photo]},
          last=3)
    assert evaluate.epoch_alarm(tmp_path, 2, None) == ("epoch 2: 4/4 pixel art, palette ok", False)
    assert evaluate.epoch_alarm(tmp_path, 1, None) == ("epoch 1: 1/4 pixel art, palette off in 3/4", True)
    line, alarm = evaluate.epoch_alarm(tmp_path, 3, None)
    assert alarm and line.startswith("epoch 3: 2/4 pixel art")  # half is enough to raise it
    assert evaluate.epoch_alarm(tmp_path, 9, None)[1] is False
    assert "photos, not pixel art" in pixelart.PHOTO_ALARM


def test_epoch_alarm_without_training_data_skips_the_palette(tmp_path):
    build(tmp_path, {1: [pixel_art, pixel_art]}, last=1)
    assert evaluate.epoch_alarm(tmp_path, 1, None) == ("epoch 1: 2/2 pixel art, no palette to check", False)


def test_cli_evaluate_prints_the_recommendation(tmp_path):
    build(tmp_path, {1: [pixel_art, photo], 2: [pixel_art, pixel_art]}, last=2)
    result = CliRunner().invoke(cli, ["evaluate", "--workspace", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "recommended: epoch 2" in result.output and "runner-up: epoch 1" in result.output
    assert "report.html" in result.output


def test_cli_score_json_and_pixelate(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    pixel_art(3).save(a)
    photo(3).save(b)
    result = CliRunner().invoke(cli, ["score", str(a), str(b), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(Path(r["path"]).name, r["pixel_art"]) for r in rows] == [("a.png", True), ("b.png", False)]
    assert all({"score", "mismatch", "purity", "boundary", "grid_period", "palette_p95"} <= r.keys() for r in rows)

    text = CliRunner().invoke(cli, ["score", str(a)])
    assert "pixel_art: true" in text.output

    out = tmp_path / "sprites"
    result = CliRunner().invoke(cli, ["pixelate", str(a), "--out", str(out), "--scale", "4"])
    assert result.exit_code == 0, result.output
    written = Image.open(out / "a.png")
    assert written.size == (96, 96)
    assert np.array_equal(np.asarray(written.convert("RGB"))[::4, ::4], np.asarray(make_sprite(3)))


def test_cli_score_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    result = CliRunner().invoke(cli, ["score", str(bad)])
    assert result.exit_code != 0 and isinstance(result.exception, BespokeError)


@pytest.mark.parametrize("command", ["score", "pixelate", "evaluate"])
def test_every_evaluation_command_has_an_example(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "Example" in result.output
