"""The hostile corpus (bench/hostile.py) in CI: every case must hold through the real CLI."""

from __future__ import annotations

import pytest

from bench import hostile


@pytest.mark.slow
def test_the_hostile_corpus_holds():
    results = hostile.run()
    failed = [r for r in results if not r.ok]
    assert len(results) >= 60
    assert not failed, "\n" + hostile.table(failed)


def test_the_corpus_covers_every_class():
    names = " ".join(c.name.lower() for c in hostile.CASES)
    for word in ("fifo", "socket", "symlink", "bomb", "zip", "16-bit", "caption", "--concept", "--repeats",
                 "output_name", "token", "batch", "nan", "quote", "pixelate", "1x1", "bespoke_args", "non-utf-8"):
        assert word in names, word
