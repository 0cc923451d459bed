"""The locks (requirements/lock-*.txt, `make lock`): current with their inputs, complete, and the same
outside torch's family, so CI's environment and the image's differ only in the torch build."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from entrypoint import verify
from tools import lock

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("flavour", sorted(lock.FLAVOURS))
def test_lock_is_current_with_its_inputs(flavour):
    path = lock.lock_path(flavour)
    assert path.is_file(), f"{path} is missing; fix: make lock"
    assert lock.recorded_digest(path) == lock.inputs_digest(flavour), (
        f"a requirement file or pyproject.toml's dependencies changed since {path.name} was made; fix: make lock")


def test_the_digest_follows_every_input(tmp_path, monkeypatch):
    req = tmp_path / "requirements"
    shutil.copytree(ROOT / "requirements", req)
    monkeypatch.setattr(lock, "REQ", req)
    before = {f: lock.inputs_digest(f) for f in lock.FLAVOURS}
    (req / "sd-scripts.txt").write_text((req / "sd-scripts.txt").read_text() + "# a comment changes nothing\n")
    assert {f: lock.inputs_digest(f) for f in lock.FLAVOURS} == before
    text = (req / "sd-scripts.txt").read_text()
    (req / "sd-scripts.txt").write_text(text.replace("toml==0.10.2", "toml==0.10.1"))
    assert all(lock.inputs_digest(f) != before[f] for f in lock.FLAVOURS)
    (req / "sd-scripts.txt").write_text(text)
    (req / "torch-cpu.txt").write_text((req / "torch-cpu.txt").read_text().replace("torch==2.14.1", "torch==2.14.0"))
    assert lock.inputs_digest("cpu") != before["cpu"] and lock.inputs_digest("cu128") == before["cu128"]


@pytest.mark.parametrize("flavour", sorted(lock.FLAVOURS))
def test_lock_holds_every_pinned_input_at_its_pin(flavour):
    locked = lock.pins(lock.lock_path(flavour))
    inputs = [ROOT / "requirements" / n for n in (lock.FLAVOURS[flavour], *lock.SHARED_INPUTS)]
    wanted = {verify.canonical(n): v for p in inputs for n, v in lock.pins(p).items()}
    wanted |= {verify.canonical(n): v for r in lock.pyproject_requirements()
               for n, v in [r.split("==", 1)]}
    assert {n: locked.get(n) for n in wanted} == wanted


def test_the_two_locks_differ_only_in_torchs_family():
    cpu, cu128 = (lock.pins(lock.lock_path(f)) for f in ("cpu", "cu128"))
    differ = {n for n in cpu.keys() | cu128.keys() if cpu.get(n) != cu128.get(n)}
    assert differ, "the torch builds differ, so something must"
    assert {n for n in differ if not lock.TORCH_FAMILY.match(n)} == set()
    assert cpu["torch"] == "2.14.1" and cu128["torch"] == "2.10.0+cu128" and cu128["xformers"] == "0.0.34"


def test_tensorboard_starts_without_pkg_resources():
    """tensorboard 2.20.0 imports pkg_resources, which setuptools 82 removed (TensorBoard died at start)."""
    for flavour in lock.FLAVOURS:
        locked = lock.pins(lock.lock_path(flavour))
        tb = tuple(int(x) for x in locked["tensorboard"].split(".")[:2])
        setuptools = int(locked["setuptools"].split(".")[0])
        assert tb >= (2, 21) or setuptools < 82, (flavour, locked["tensorboard"], locked["setuptools"])
    header = lock.lock_path("cu128").read_text().split("\n\n")[0]
    assert "pkg_resources" in header and "make lock" in header


def test_every_install_goes_through_a_lock():
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for text, lock_ref in ((makefile, r"(\$\(LOCK\)|requirements/lock-\$\(TORCH\)\.txt)"),
                           (dockerfile, r"requirements/lock-\$\{TORCH\}\.txt")):
        for m in re.finditer(r"pip install ([^&;\n]*)", text):
            args = m.group(1)
            if "--no-deps" in args or "uv==" in args:
                continue  # tokenizer-data (its data file only) and bespoke itself; uv for `make lock`
            assert re.search(rf"-c {lock_ref}", args), f"`pip install {args}` bypasses the lock"


def test_check_lock_finds_what_floats(tmp_path):
    from importlib import metadata

    pytest_version = metadata.version("pytest")
    path = tmp_path / "lock.txt"
    everything = {verify.canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    path.write_text("".join(f"{n}=={v}\n" for n, v in everything.items() if n != "pytest"))
    assert verify.check_lock(path, skip=()) == [f"pytest {pytest_version} is installed but not in {path} (fix: make lock)"]
    path.write_text("".join(f"{n}=={v}\n" for n, v in everything.items()) + "")
    path.write_text(path.read_text().replace(f"pytest=={pytest_version}", "pytest==0.1"))
    assert verify.check_lock(path, skip=()) == [f"pytest is {pytest_version}, {path} locks 0.1"]
