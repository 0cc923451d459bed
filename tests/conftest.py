"""Shared fixtures: small real data (PNG files, captions, tokenizers) made in tmp_path."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from bespoke import demo, tokens

CAPTION = "pixel art, 24x24, portrait of bespoke punk lad, green background (#638b6f), sharp pixel edges"


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_pair(folder: Path, stem: str, img: Image.Image | None = None, caption: str | None = CAPTION,
               seed: int = 0) -> Path:
    """One portrait and its caption; img defaults to a demo sprite for `seed`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.png"
    path.write_bytes(png_bytes(img if img is not None else demo.make_sprite(seed)))
    if caption is not None:
        (folder / f"{stem}.txt").write_text(caption, encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """Three valid, distinct portraits with captions."""
    d = tmp_path / "data"
    for i in range(3):
        write_pair(d, f"p{i}", seed=i)
    return d


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory) -> Path:
    """Both CLIP tokenizers in --tokenizer_cache_dir layout, built offline from open-clip's BPE file."""
    return tokens.build(tmp_path_factory.mktemp("tokenizers"))


@pytest.fixture
def workspace(tmp_path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture(autouse=True)
def shown_log():
    """What the stages say reaches stdout as it does under the CLI (cli.show_log), so capsys sees it."""
    from bespoke.cli import show_log

    show_log()


def pytest_addoption(parser):
    parser.addoption("--fail-on-skip", action="store_true",
                     help="a skipped test fails the run (CI's kohya run: every kohya test must really run)")


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if session.config.getoption("--fail-on-skip") and skipped and exitstatus == 0:
        reporter.write_line(f"--fail-on-skip: {len(skipped)} test(s) skipped; each skip reason says what to install")
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def own_environment():
    """`train` points the cache variables at its workspace in os.environ (the CLI runs once per process);
    each test starts from the environment the session started with."""
    kept = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(kept)
