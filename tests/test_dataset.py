import hashlib
import json
import os
import random
import zipfile

import pytest
from PIL import Image

from bespoke import dataset, demo
from bespoke.errors import DataError
from tests.conftest import CAPTION, png_bytes, write_pair

RULES = dataset.Rules()


def problems(path, rules=RULES) -> list[str]:
    with pytest.raises(DataError) as e:
        dataset.load(path, rules)
    return e.value.problems


# --- every refusal names its file -----------------------------------------------------------------

def test_image_without_caption(data_dir):
    write_pair(data_dir, "lonely", seed=9, caption=None)
    (p,) = problems(data_dir)
    assert "lonely.png" in p and "without a caption" in p


def test_caption_without_image(data_dir):
    (data_dir / "ghost.txt").write_text(CAPTION)
    (p,) = problems(data_dir)
    assert "ghost.txt" in p and "without an image" in p


def test_two_images_with_the_same_stem(data_dir):
    write_pair(data_dir / "a", "twin", seed=10)
    write_pair(data_dir / "b", "twin", seed=11)
    (p,) = problems(data_dir)
    assert "a/twin.png" in p and "b/twin.png" in p and "two images named 'twin'" in p


def test_identical_pixels_name_both_files(data_dir):
    write_pair(data_dir, "copy", seed=0)  # same sprite as p0
    (p,) = problems(data_dir)
    assert "p0.png" in p and "copy.png" in p and "identical pixels" in p


def test_corrupt_image(data_dir):
    good = (data_dir / "p0.png").read_bytes()
    (data_dir / "broken.png").write_bytes(good[: len(good) // 2])
    (data_dir / "broken.txt").write_text(CAPTION)
    (p,) = problems(data_dir)
    assert "broken.png" in p and "corrupt" in p


def test_not_an_image_despite_its_extension(data_dir):
    (data_dir / "fake.png").write_text("I am text")
    (data_dir / "fake.txt").write_text(CAPTION)
    (p,) = problems(data_dir)
    assert "fake.png" in p and "not an image" in p


def test_empty_caption(data_dir):
    write_pair(data_dir, "blank", seed=12, caption="  \n ")
    (p,) = problems(data_dir)
    assert "blank.txt" in p and "empty caption" in p


def test_caption_not_utf8(data_dir):
    write_pair(data_dir, "latin", seed=13, caption=None)
    (data_dir / "latin.txt").write_bytes(CAPTION.replace("lad", "lad caf\xe9").encode("latin-1"))
    (p,) = problems(data_dir)
    assert "latin.txt" in p and "not UTF-8" in p


def test_caption_without_prefix(data_dir):
    write_pair(data_dir, "noprefix", seed=14, caption="portrait of bespoke punk lad, pixel art, 24x24")
    (p,) = problems(data_dir)
    assert "noprefix.txt" in p and "does not start with 'pixel art, 24x24'" in p


def test_custom_prefix(data_dir):
    rules = dataset.Rules(caption_prefix="pixel art, 24x24, portrait")
    ds = dataset.load(data_dir, rules)
    assert len(ds.items) == 3
    assert problems(data_dir, dataset.Rules(caption_prefix="sprite,"))


def test_caption_without_trigger(data_dir):
    write_pair(data_dir, "notrigger", seed=15, caption="pixel art, 24x24, portrait of a punk")
    (p,) = problems(data_dir)
    assert "notrigger.txt" in p and "no trigger" in p


def test_extra_trigger_accepted(data_dir):
    write_pair(data_dir, "kid", seed=15, caption="pixel art, 24x24, portrait of bespoke kid")
    assert problems(data_dir)
    ds = dataset.load(data_dir, dataset.Rules(triggers=("bespoke punk", "bespoke kid")))
    assert len(ds.items) == 4


def test_wrong_size(data_dir):
    write_pair(data_dir, "big", img=demo.make_sprite(16).resize((48, 48), Image.NEAREST))
    (p,) = problems(data_dir)
    assert "big.png" in p and "48x48, expected 24x24" in p


def test_count_differs_from_expect(data_dir):
    (p,) = problems(data_dir, dataset.Rules(expect=203))
    assert str(data_dir) in p and "3 images, expected 203" in p


def test_two_repeat_folders_the_406_latents_failure(tmp_path):
    for i, folder in enumerate(("10_bespoke_baby", "5_bespoke_baby")):
        write_pair(tmp_path / "in" / folder, f"x{i}", seed=i)
    (p,) = problems(tmp_path / "in")
    assert "10_bespoke_baby" in p and "5_bespoke_baby" in p and "406 latents" in p


def test_one_repeat_folder_is_accepted(tmp_path):
    write_pair(tmp_path / "in" / "10_bespoke_baby", "x", seed=1)
    ds = dataset.load(tmp_path / "in", RULES)
    assert ds.layout_hint == "10_bespoke_baby"


def test_zip_entry_outside_the_data(tmp_path):
    z = tmp_path / "data.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ok.png", png_bytes(demo.make_sprite(1)))
        zf.writestr("ok.txt", CAPTION)
        zf.writestr("../evil.png", png_bytes(demo.make_sprite(2)))
    (p,) = problems(z)
    assert "../evil.png" in p and "outside the data" in p


def test_symlink_outside_the_data(data_dir, tmp_path):
    outside = write_pair(tmp_path / "elsewhere", "secret", seed=20)
    os.symlink(outside, data_dir / "link.png")
    (data_dir / "link.txt").write_text(CAPTION)
    ps = problems(data_dir)
    assert any("link.png" in p and "symlink points outside" in p for p in ps)


def test_every_file_is_checked_before_stopping(data_dir):
    write_pair(data_dir, "lonely", seed=9, caption=None)
    write_pair(data_dir, "blank", seed=12, caption="")
    (data_dir / "ghost.txt").write_text(CAPTION)
    ps = problems(data_dir)
    assert len(ps) == 3
    assert {"lonely.png", "blank.txt", "ghost.txt"} <= {n for p in ps for n in ("lonely.png", "blank.txt", "ghost.txt") if n in p}


# --- warnings ------------------------------------------------------------------------------------

def test_alpha_is_flattened_onto_the_border_colour(data_dir):
    sprite = demo.make_sprite(21).convert("RGBA")
    border = sprite.getpixel((0, 0))[:3]
    sprite.putpixel((12, 12), (0, 0, 0, 0))  # a transparent pixel inside the face
    write_pair(data_dir, "alpha", img=sprite)
    ds = dataset.load(data_dir, RULES)
    item = next(i for i in ds.items if i.stem == "alpha")
    assert item.image.mode == "RGB" and item.image.getpixel((12, 12)) == border
    assert any("alpha.png" in w and "alpha channel" in w for w in ds.warnings)


def test_many_colours_warns(data_dir):
    noisy = Image.frombytes("RGB", (24, 24), random.Random(0).randbytes(24 * 24 * 3))
    write_pair(data_dir, "noisy", img=noisy)
    ds = dataset.load(data_dir, RULES)
    assert any("noisy.png" in w and "colours" in w for w in ds.warnings)


def test_long_captions_are_counted_with_the_clip_tokenizer(data_dir, tok_dir):
    long = CAPTION + ", " + ", ".join(f"detail {i} (#a0b1a6)" for i in range(20))
    write_pair(data_dir, "long", seed=30, caption=long)
    ds = dataset.load(data_dir, RULES, tok_dir=tok_dir)
    item = next(i for i in ds.items if i.stem == "long")
    assert item.tokens > 75
    (w,) = [w for w in ds.warnings if "CLIP tokens" in w]
    assert "long.txt" in w and "max_token_length=225" in w


# --- layout --------------------------------------------------------------------------------------

def _tree_hashes(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def test_layout_is_one_repeat_folder_upscaled_nearest(data_dir, workspace):
    before = _tree_hashes(data_dir)
    ds = dataset.load(data_dir, RULES)
    lay = dataset.lay_out(ds, workspace, repeats=10, concept="bespoke_baby")
    assert [p.name for p in (workspace / "training_data").iterdir()] == ["10_bespoke_baby"]
    assert lay.folder == workspace / "training_data" / "10_bespoke_baby" and lay.rebuilt
    out = Image.open(lay.folder / "p0.png")
    assert out.size == (1024, 1024) and out.mode == "RGB"
    src = demo.make_sprite(0)
    assert len(out.getcolors(1 << 16)) == len(src.getcolors(1 << 16))  # nearest: no new colours
    assert (lay.folder / "p0.txt").read_text() == CAPTION + "\n"
    manifest = json.loads((lay.folder / "manifest.json").read_text())
    assert manifest["images"] == 3 and manifest["dataset_hash"] == ds.hash
    assert {f["stem"] for f in manifest["files"]} == {"p0", "p1", "p2"}
    assert all(len(f["sha256"]) == 64 and f["written_size"] == [1024, 1024] for f in manifest["files"])
    assert _tree_hashes(data_dir) == before  # the user's files are untouched


def test_upscale_none_keeps_originals(data_dir, workspace):
    lay = dataset.lay_out(dataset.load(data_dir, RULES), workspace, upscale="none")
    assert Image.open(lay.folder / "p1.png").size == (24, 24)


def test_same_data_twice_does_no_work(data_dir, workspace):
    ds = dataset.load(data_dir, RULES)
    first = dataset.lay_out(ds, workspace)
    stamp = (first.folder / "p0.png").stat().st_mtime_ns
    again = dataset.lay_out(dataset.load(data_dir, RULES), workspace)
    assert not again.rebuilt and (again.folder / "p0.png").stat().st_mtime_ns == stamp


def test_changed_input_rebuilds_the_layout(data_dir, workspace):
    dataset.lay_out(dataset.load(data_dir, RULES), workspace)
    write_pair(data_dir, "p3", seed=3)
    lay = dataset.lay_out(dataset.load(data_dir, RULES), workspace, repeats=5)
    assert lay.rebuilt and [p.name for p in (workspace / "training_data").iterdir()] == ["5_bespoke_baby"]
    assert (lay.folder / "p3.png").exists()
    assert not list(workspace.glob(".training_data*"))  # no build leftovers


def test_preview_grid(data_dir, tmp_path):
    ds = dataset.load(data_dir, RULES)
    path = dataset.write_preview(ds, tmp_path / "preview.png")
    img = Image.open(path)
    assert img.size == (2 * 96 + 3 * 2, 2 * 96 + 3 * 2)  # 3 images -> 2x2 grid of 4x tiles


# --- finding the input ---------------------------------------------------------------------------

def test_loose_files_in_training_data_are_refused(workspace):
    write_pair(workspace / "training_data", "loose", seed=1)
    with pytest.raises(DataError) as e:
        dataset.find_input(workspace, None)
    assert "training_data" in e.value.where and "dataset" in e.value.fix


def test_input_search_order(workspace):
    with pytest.raises(DataError) as e:
        dataset.find_input(workspace, None)
    assert "no training data" in e.value.what
    (workspace / "runpod_package" / "training_data").mkdir(parents=True)
    assert dataset.find_input(workspace, None).name == "training_data"
    (workspace / "data.zip").write_bytes(b"")
    assert dataset.find_input(workspace, None).name == "data.zip"
    (workspace / "dataset").mkdir()
    assert dataset.find_input(workspace, None) == workspace / "dataset"


def test_zip_input_nested(tmp_path, workspace):
    z = tmp_path / "bespoke_baby_runpod_training.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i in range(2):
            zf.writestr(f"runpod_package/training_data/p{i}.png", png_bytes(demo.make_sprite(i)))
            zf.writestr(f"runpod_package/training_data/p{i}.txt", CAPTION)
        zf.writestr("__MACOSX/._p0.png", b"junk")
    ds = dataset.load(z, RULES)
    assert sorted(i.stem for i in ds.items) == ["p0", "p1"]
