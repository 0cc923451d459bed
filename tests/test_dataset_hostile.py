"""The data layer against hostile input: odd names, zips, special files, a full disk, dead build folders.

bench/hostile.py runs the same classes through the real CLI; these tests vary each class more widely
(hypothesis for names and zip entries) and reach the failure modes a CLI run cannot set up.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bespoke import dataset, safeio
from bespoke.errors import DataError

HYPO = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
RULES = dataset.Rules()
REPO = Path(__file__).resolve().parents[1]


def sprite(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 4, (24, 24, 1), dtype=np.uint8).repeat(3, 2) * 60).save(buf, format="PNG")
    return buf.getvalue()


def caption(i: int) -> bytes:
    return f"pixel art, 24x24, bespoke punk {i}".encode()


def write_set(folder: Path, n: int = 3, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (folder / f"p{i:03d}.png").write_bytes(sprite(i))
        (folder / f"p{i:03d}.txt").write_bytes(caption(i))
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {os.fsdecode(p): p.read_bytes() for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink()}


def load_or_problems(folder) -> list[str] | None:
    try:
        dataset.load(folder, RULES)
    except DataError as e:
        return e.problems + [e.line()]
    return None


NAME = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1, max_size=24)


@HYPO
@given(stem=NAME)
def test_any_file_name_loads_or_is_refused_in_one_line_naming_it(tmp_path_factory, stem):
    folder = write_set(tmp_path_factory.mktemp("d"))
    try:
        (folder / f"{stem}.png").write_bytes(sprite(99))
        (folder / f"{stem}.txt").write_bytes(caption(99))
    except OSError:
        return  # a name this file system cannot hold (too long)
    before = snapshot(folder)
    problems = load_or_problems(folder)
    assert snapshot(folder) == before
    if problems is not None:
        assert all("\n" not in p and "\r" not in p and "\x1b" not in p for p in problems)
        named = [p for p in problems if safeio.show(stem) in p]
        assert named or stem.startswith("."), problems


@pytest.mark.parametrize("raw", [b"bad\xff", b"\xc3\x28x", b"new\nline", b"tab\there", b"esc\x1b[0m", b"\x7fdel"])
def test_names_that_are_not_text_are_refused_escaped(tmp_path, raw):
    folder = write_set(tmp_path / "d")
    base = os.fsencode(folder)
    for ext in (b".png", b".txt"):
        with open(base + b"/" + raw + ext, "wb") as f:
            f.write(sprite(9) if ext == b".png" else caption(9))
    problems = load_or_problems(folder)
    shown = safeio.show(os.fsdecode(raw))
    assert problems and any(shown in p and "rename it" in p for p in problems)
    assert all("\n" not in p for p in problems)


ENTRY = st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=200))


@pytest.mark.filterwarnings("ignore:Duplicate name")
@HYPO
@given(entries=st.lists(ENTRY, max_size=6))
def test_any_zip_loads_or_is_refused_in_one_line(tmp_path_factory, entries):
    z = tmp_path_factory.mktemp("z") / "data.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(2):
            zf.writestr(f"p{i}.png", sprite(i))
            zf.writestr(f"p{i}.txt", caption(i))
        for name, data in entries:
            try:
                zf.writestr(name, data)
            except (UnicodeEncodeError, ValueError, IndexError):
                pass  # a name zipfile itself cannot write (a lone NUL)
    before = z.read_bytes()
    try:
        dataset.load(z, RULES)
    except DataError as e:
        assert all("\n" not in p for p in e.problems) and "\n" not in e.line()
    assert z.read_bytes() == before


def test_two_captions_for_one_image_are_refused(tmp_path):
    folder = write_set(tmp_path / "d")
    (folder / "p001.TXT").write_bytes(caption(50))
    problems = load_or_problems(folder)
    assert any("p001.TXT" in p and "two captions" in p for p in problems)


@pytest.mark.parametrize("bad", [b"\0", b"\x1b[2J", b"\x07", "\u202e".encode(), b"\x08"])
def test_control_characters_in_a_caption_are_refused_naming_the_file(tmp_path, bad):
    folder = write_set(tmp_path / "d")
    (folder / "p002.txt").write_bytes(caption(2) + bad)
    problems = load_or_problems(folder)
    assert any("p002.txt" in p and "control character" in p for p in problems)


def test_special_files_are_refused_or_skipped_and_nothing_blocks(tmp_path):
    folder = write_set(tmp_path / "d")
    os.mkfifo(folder / "pipe.png")
    os.mkfifo(folder / "notes")
    (folder / "loop.txt").symlink_to("loop.txt")
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to("..")  # a folder loop, inside the data: not followed
    with pytest.raises(DataError) as e:
        dataset.load(folder, RULES)
    assert any("pipe.png" in p and "FIFO" in p for p in e.value.problems)
    assert any("loop.txt" in p and "symlink loop" in p for p in e.value.problems)
    (folder / "pipe.png").unlink()
    (folder / "loop.txt").unlink()
    ds = dataset.load(folder, RULES)
    assert len(ds.items) == 3 and any("notes" in w and "skipped" in w for w in ds.warnings)


# --- layout options ------------------------------------------------------------------------------

@pytest.mark.parametrize("repeats,concept,resolution,needle", [
    (-5, "x", (1024, 1024), "--repeats"), (0, "x", (1024, 1024), "--repeats"), (10, "a/b", (1024, 1024), "--concept"),
    (10, "..", (1024, 1024), "--concept"), (10, "", (1024, 1024), "--concept"), (10, "-rf", (1024, 1024), "--concept"),
    (10, "a\nb", (1024, 1024), "--concept"), (10, "x", (0, 0), "resolution"), (10, "x", (-64, 64), "resolution"),
    (10, "x", (99999, 64), "resolution"),
])
def test_layout_options_that_would_leave_the_workspace_or_break_kohya_are_refused(tmp_path, repeats, concept,
                                                                                  resolution, needle):
    ds = dataset.load(write_set(tmp_path / "d"), RULES)
    with pytest.raises(DataError, match=needle) as e:
        dataset.lay_out(ds, tmp_path / "ws", repeats, concept, resolution)
    assert "\n" not in e.value.line()
    assert not (tmp_path / "ws" / "training_data").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # nothing written anywhere


@HYPO
@given(concept=st.text(max_size=30))
def test_a_concept_either_stays_one_folder_inside_the_workspace_or_is_refused(tmp_path_factory, concept):
    problems = dataset.option_problems(10, concept, (1024, 1024))
    if not problems:
        folder = (Path("/ws/training_data") / f"10_{concept}").resolve()
        assert folder.parent == Path("/ws/training_data") and "/" not in concept


def test_relative_data_beside_a_relative_workspace_is_not_taken_for_its_insides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_set(tmp_path / "data")
    assert dataset.find_input(Path("ws"), Path("data")) == Path("data")
    with pytest.raises(DataError, match="bespoke rebuilds"):
        dataset.find_input(Path("ws"), Path("ws/output/x"))


def test_data_that_holds_or_is_inside_the_built_folders_is_refused(tmp_path):
    ws = tmp_path / "ws"
    write_set(ws / "output" / "mine")
    for data in (ws, ws / "output" / "mine", ws / "output"):
        with pytest.raises(DataError, match="bespoke rebuilds"):
            dataset.find_input(ws, data)


# --- a full disk, a kill -9 ---------------------------------------------------------------------------

def _unshare_ok() -> bool:
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return r.returncode == 0


needs_tmpfs = pytest.mark.skipif(not _unshare_ok(), reason="needs `unshare -Urm` to mount a small tmpfs "
                                 "(util-linux and user namespaces)")


def _on_small_disk(ws: Path, size: str, code: str) -> subprocess.CompletedProcess:
    """Run python `code` with `ws` a tmpfs of `size`, in a private mount namespace (a real full disk)."""
    ws.mkdir(parents=True, exist_ok=True)
    script = f"mount -t tmpfs -o size={size} tmpfs {ws} && exec {sys.executable} -c \"$0\""
    return subprocess.run(["unshare", "-Urm", "sh", "-c", script, textwrap.dedent(code)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)


@needs_tmpfs
@pytest.mark.parametrize("measured", ["real", "fooled"])
def test_a_full_disk_is_one_line_and_the_previous_layout_survives(tmp_path, measured):
    """`real`: the free-space check refuses. `fooled`: disk_usage is told to report plenty, so the real
    ENOSPC comes from the kernel mid-write, and is worded the same."""
    data = write_set(tmp_path / "d", 3)
    ws = tmp_path / "ws"
    fool = "shutil.disk_usage = lambda p: type('U', (), {'free': 1 << 40})()" if measured == "fooled" else ""
    r = _on_small_disk(ws, "256k", f"""
        import os, shutil, sys
        from pathlib import Path
        from bespoke import dataset
        from bespoke.errors import DataError
        ws, data = Path({str(ws)!r}), Path({str(data)!r})
        rules = dataset.Rules()
        dataset.lay_out(dataset.load(data, rules), ws, 10, "x", (64, 64))
        first = sorted(p.name for p in (ws / "training_data").rglob("*"))
        from bespoke.demo import make_sprite
        for i in range(3, 40):  # now far more than 256 KB at 1024 px
            make_sprite(100 + i).save(data / f"q{{i:03d}}.png")
            (data / f"q{{i:03d}}.txt").write_text(f"pixel art, 24x24, bespoke punk {{i}}")
        {fool}
        try:
            dataset.lay_out(dataset.load(data, rules), ws, 10, "x", (1024, 1024))
        except DataError as e:
            print("LINE", e.line())
        print("AFTER", sorted(p.name for p in (ws / "training_data").rglob("*")) == first)
        print("LEFT", sorted(p.name for p in ws.iterdir()))
    """)
    assert r.returncode == 0, r.stderr
    line = next(x[5:] for x in r.stdout.splitlines() if x.startswith("LINE "))
    assert "not enough disk" in line and "needs" in line and "free" in line and str(ws) in line
    assert "AFTER True" in r.stdout
    assert "LEFT ['training_data']" in r.stdout  # no .training_data.build-PID behind


def test_build_folders_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    ws = tmp_path / "ws"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name in (f".training_data.build-{dead.pid}", f".training_data.build-{os.getppid()}", ".training_data.build-x"):
        (ws / name / "10_x").mkdir(parents=True)
    ds = dataset.load(write_set(tmp_path / "d"), RULES)
    dataset.lay_out(ds, ws, 10, "x", (64, 64))
    left = sorted(p.name for p in ws.iterdir())
    assert f".training_data.build-{dead.pid}" not in left
    assert f".training_data.build-{os.getppid()}" in left  # a live process may be building right now
    assert "training_data" in left


def test_a_kill_between_the_swaps_puts_the_previous_layout_back(tmp_path):
    """kill -9 after the old layout moved aside and before the new one moved in: the next run restores it."""
    ws = tmp_path / "ws"
    ds = dataset.load(write_set(tmp_path / "d"), RULES)
    dataset.lay_out(ds, ws, 10, "x", (64, 64))
    manifest = json.loads((ws / "training_data" / "10_x" / "manifest.json").read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    os.replace(ws / "training_data", ws / f".training_data.old-{dead.pid}")
    dataset.remove_dead_builds(ws)
    assert json.loads((ws / "training_data" / "10_x" / "manifest.json").read_text()) == manifest


@needs_tmpfs
@pytest.mark.parametrize("mount_opts,needle", [("size=8k", "the disk is full"), ("size=1m,ro", "read-only")])
def test_any_command_on_a_full_or_read_only_disk_ends_in_one_line(tmp_path, mount_opts, needle):
    out = tmp_path / "mnt"
    out.mkdir()
    script = (f"mount -t tmpfs -o {mount_opts} tmpfs {out} && "
              f"exec {sys.executable} -m bespoke demo-data --out {out}/demo --count 40")
    r = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    [line] = [x for x in r.stderr.splitlines() if x.startswith("error: ")]
    assert needle in line and "fix: " in line and str(out) in line


def test_an_os_error_that_is_a_bug_is_not_worded_away():
    from bespoke.errors import from_os_error

    assert from_os_error(OSError(22, "Invalid argument")) is None
    with pytest.raises(OSError) as e, open("/dev/full", "wb") as f:  # the kernel's own ENOSPC
        f.write(b"x")
        f.flush()
    worded = from_os_error(e.value)
    assert worded is not None and "disk is full" in worded.line()
    named = from_os_error(OSError(e.value.errno, e.value.strerror, "/dev/full"))  # as atomic_write_bytes raises it
    assert "/dev/full" in named.line() and "fix: " in named.line()


def _mode_sprite(mode: str) -> Image.Image:
    """A 24x24 sprite in `mode` with several distinct values (16-bit grey spread over its whole range)."""
    if mode == "I;16":
        levels = np.array([0, 3000, 20000, 45000, 65535], dtype=np.uint16)
        return Image.fromarray(levels[np.arange(576).reshape(24, 24) // 5 % 5])
    rng = np.random.default_rng(3)
    palette = np.array([[0, 0, 0], [255, 255, 255], [200, 30, 30], [30, 200, 30], [30, 30, 200]], dtype=np.uint8)
    rgb = Image.fromarray(palette[rng.integers(0, 5, (24, 24))])
    return rgb.convert(mode) if mode != "PA" else rgb.convert("P").convert("PA")


@pytest.mark.parametrize("mode,fmt", [("1", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGB", "PNG"),
                                      ("RGBA", "PNG"), ("I;16", "PNG"), ("I", "PNG"),
                                      ("P", "GIF"), ("RGB", "BMP"), ("RGBA", "WEBP")])
def test_laid_out_pixels_keep_the_sources_distinct_colours_in_every_mode(tmp_path, mode, fmt):
    src = _mode_sprite(mode)
    ext = {"PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp"}[fmt]
    folder = write_set(tmp_path / "d", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Pillow 11 still writes mode I as a 16-bit PNG
        src.save(folder / f"m{ext}", format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    (folder / "m.txt").write_bytes(caption(7))
    ds = dataset.load(folder, RULES)
    lay = dataset.lay_out(ds, tmp_path / "ws", 10, "x", (72, 72))
    out = Image.open(lay.folder / "m.png")
    distinct_in = len(set(src.getdata()))
    distinct_out = len(out.convert("RGB").getcolors(1 << 16))
    assert distinct_out == distinct_in, f"{mode} {fmt}: {distinct_in} values in, {distinct_out} colours laid out"
    if mode == "I;16":
        assert (0, 0, 0) in [c for _, c in out.getcolors()] and len(out.getcolors()) > 1  # not one white square
