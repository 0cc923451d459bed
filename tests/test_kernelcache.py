"""bespoke.kernelcache: the compile caches are used only at the path they were written at, and only whole."""

import json

import pytest

from bespoke import kernelcache


def cache(root, where="ws"):
    """A workspace's two caches, recorded there, with an entry each, and the portable artifacts beside them."""
    inductor, triton = root / where / "torchinductor", root / where / "triton"
    assert kernelcache.prepare(inductor, triton) is None
    (inductor / "qe").mkdir(parents=True)
    (inductor / "qe" / "graph.py").write_text("compiled")
    (inductor / "bespoke-artifacts").mkdir()
    (inductor / "bespoke-artifacts" / "k.bin").write_bytes(b"portable")
    (triton / "ab").mkdir(parents=True)
    (triton / "ab" / "kernel.cubin").write_bytes(b"cubin")
    return inductor, triton


def test_a_new_cache_is_recorded_and_then_kept(tmp_path):
    inductor, triton = tmp_path / "ws" / "torchinductor", tmp_path / "ws" / "triton"
    assert kernelcache.prepare(inductor, triton) is None
    mark = json.loads((inductor / kernelcache.MARK).read_text())
    assert mark == {"inductor": str(inductor.resolve()), "triton": str(triton.resolve())}
    (inductor / "qe").mkdir()
    (triton / "ab").mkdir(parents=True)
    assert kernelcache.prepare(inductor, triton) is None  # written here, both halves: a warm start
    assert (inductor / "qe").is_dir() and (triton / "ab").is_dir()


def emptied(inductor, triton):
    """Nothing left but the artifacts and the new mark."""
    return (sorted(p.name for p in inductor.iterdir()) == ["bespoke-artifacts", kernelcache.MARK]
            and (inductor / "bespoke-artifacts" / "k.bin").read_bytes() == b"portable" and not triton.exists())


def test_a_cache_copied_from_another_path_is_emptied(tmp_path):
    inductor, triton = cache(tmp_path, "old")
    assert kernelcache.prepare(inductor, triton) is None
    moved = tmp_path / "new"
    (tmp_path / "old").rename(moved)  # a volume mounted elsewhere, or a copy
    line = kernelcache.prepare(moved / "torchinductor", moved / "triton")
    assert line and f"written at {inductor.resolve()}" in line and "compiles from scratch" in line
    assert emptied(moved / "torchinductor", moved / "triton")
    assert json.loads((moved / "torchinductor" / kernelcache.MARK).read_text())["inductor"] == str(
        (moved / "torchinductor").resolve())


@pytest.mark.parametrize("damage, says", [
    (lambda ind, tri: (ind / kernelcache.MARK).unlink(), "does not say where"),  # an older bespoke's cache
    (lambda ind, tri: (ind / kernelcache.MARK).write_text("{not json"), "does not say where"),
    (lambda ind, tri: (ind / kernelcache.MARK).write_text("[1, 2]"), "does not say where"),
])
def test_a_cache_of_unknown_origin_is_emptied(tmp_path, damage, says):
    inductor, triton = cache(tmp_path)
    damage(inductor, triton)
    line = kernelcache.prepare(inductor, triton)
    assert line and says in line
    assert emptied(inductor, triton)


def test_inductors_half_without_tritons_is_emptied(tmp_path):
    inductor, triton = cache(tmp_path)
    assert kernelcache.prepare(inductor, triton) is None
    for p in triton.iterdir():
        for f in p.iterdir():
            f.unlink()
        p.rmdir()  # a user freeing disk space, say
    line = kernelcache.prepare(inductor, triton)
    assert line and "Triton's half of it is gone" in line
    assert emptied(inductor, triton)


def test_only_artifacts_is_not_a_cache_to_empty(tmp_path):
    inductor, triton = tmp_path / "torchinductor", tmp_path / "triton"
    (inductor / "bespoke-artifacts").mkdir(parents=True)
    (inductor / "bespoke-artifacts" / "k.bin").write_bytes(b"portable")  # copied onto a fresh volume on purpose
    assert kernelcache.prepare(inductor, triton) is None
    assert (inductor / "bespoke-artifacts" / "k.bin").read_bytes() == b"portable"
