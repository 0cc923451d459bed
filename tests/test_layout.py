"""prepare, check and train run one layout check on training_data (issue 13, class 9): anything bespoke did
not write there is refused, naming it, and train and check refuse more than one prepared folder (kohya
would train them all)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from bespoke import dataset, pipeline
from bespoke.preflight import ERROR
from bespoke.workspace import Workspace
from tests.conftest import write_pair


@pytest.fixture
def prepared(workspace, data_dir):
    pipeline.prepare(workspace, data_dir, pipeline.PrepareOptions(resolution=(64, 64)))
    return Workspace(workspace)


def stray_folder(ws: Workspace) -> str:
    write_pair(ws.training_data / "5_other", "x", seed=7)  # a user's folder: images, no manifest
    return "5_other"


def stray_file(ws: Workspace) -> str:
    (ws.training_data / "notes.txt").write_text("mine")
    return "notes.txt"


def second_prepared_folder(ws: Workspace) -> str:
    (only,) = [p for p in ws.training_data.iterdir()]
    shutil.copytree(only, ws.training_data / "5_copy")  # bespoke's own, manifest and all: kohya trains both
    return "5_copy"


def snapshot(root):
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def bespoke(*args):
    return subprocess.run([sys.executable, "-m", "bespoke", *args], capture_output=True, text=True)


@pytest.mark.parametrize("make", [stray_folder, stray_file, second_prepared_folder])
def test_train_refuses_a_layout_prepare_would_not_leave(prepared, make):
    name = make(prepared)
    before = snapshot(prepared.training_data)
    r = bespoke("train", "--workspace", str(prepared.root), "--dry-run")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert name in r.stderr and str(prepared.training_data) in r.stderr and "fix:" in r.stderr
    assert snapshot(prepared.training_data) == before  # the user's files untouched
    with pytest.raises(dataset.DataError, match=name):  # the library, not only the CLI
        pipeline.train(prepared, pipeline.TrainOptions(), rig=pipeline.Rig())


@pytest.mark.parametrize("make", [stray_folder, stray_file, second_prepared_folder])
def test_check_reports_it_and_still_shows_the_data_and_disk(prepared, data_dir, make):
    name = make(prepared)
    findings = pipeline.check(prepared, data_dir, probed={"torch": None})
    (layout,) = [f for f in findings if f.check == "layout"]
    assert layout.severity == ERROR and name in layout.message
    assert any(f.check == "data" and f.severity == "ok" for f in findings)
    assert any(f.check == "disk" for f in findings)


@pytest.mark.parametrize("make", [stray_folder, stray_file])
def test_prepare_refuses_what_it_did_not_write(prepared, data_dir, make):
    name = make(prepared)
    before = snapshot(prepared.training_data)
    with pytest.raises(dataset.DataError, match=name):
        pipeline.prepare(prepared, data_dir, pipeline.PrepareOptions(resolution=(64, 64)))
    assert snapshot(prepared.training_data) == before


def test_prepare_replaces_a_second_prepared_folder_with_exactly_one(prepared, data_dir):
    second_prepared_folder(prepared)
    _, lay = pipeline.prepare(prepared, data_dir, pipeline.PrepareOptions(resolution=(64, 64)))
    assert lay.rebuilt and [p.name for p in prepared.training_data.iterdir()] == ["10_bespoke_baby"]
    assert dataset.check_layout(prepared)["images"] == 3


def test_a_clean_layout_passes_and_a_damaged_manifest_is_one_line(prepared):
    assert dataset.check_layout(prepared)["repeats"] == 10
    (manifest,) = prepared.training_data.glob(f"*/{dataset.MANIFEST}")
    manifest.write_text("{not json")
    r = bespoke("train", "--workspace", str(prepared.root), "--dry-run")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "manifest is missing, damaged" in r.stderr


def _without(key):
    def damage(m):
        del m[key]
        return m
    return damage


@pytest.mark.parametrize("damage", [
    _without("resolution"), _without("repeats"), _without("files"),
    lambda m: {**m, "resolution": 1024}, lambda m: {**m, "repeats": "10"}, lambda m: {**m, "files": [1, 2]},
    lambda m: {**m, "images": True}, lambda m: [m], lambda m: "[" * 100_000 + "]" * 100_000,
    "a folder", "a broken link",
])
def test_a_manifest_damaged_in_any_way_is_one_line_and_prepare_lays_it_out_again(prepared, damage, data_dir):
    (manifest,) = prepared.training_data.glob(f"*/{dataset.MANIFEST}")
    if damage == "a folder":
        manifest.unlink()
        manifest.mkdir()
    elif damage == "a broken link":
        manifest.unlink()
        manifest.symlink_to(prepared.root / "nowhere")
    else:
        m = damage(json.loads(manifest.read_text()))
        manifest.write_text(m if isinstance(m, str) else json.dumps(m))
    for command in (["train", "--workspace", str(prepared.root), "--dry-run"],
                    ["check", "--workspace", str(prepared.root)]):
        r = bespoke(*command)
        assert r.returncode == 1 and "Traceback" not in r.stderr + r.stdout, r.stderr
        assert "manifest is missing, damaged" in r.stderr + r.stdout
    r = bespoke("prepare", "--workspace", str(prepared.root), "--data", str(data_dir))
    assert r.returncode == 0 and "written" in r.stdout + r.stderr, r.stderr
    assert dataset.check_layout(prepared)["repeats"] == 10
