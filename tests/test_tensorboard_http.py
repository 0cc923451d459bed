"""TensorBoard itself serves bespoke's run: its HTTP API lists the tags tblog wrote.

Needs the tensorboard package (in the kohya environment: `make kohya-env`); run with
`.venv-kohya/bin/pytest -m kohya tests/test_tensorboard_http.py`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bespoke import recipe, tblog
from bespoke.workspace import Workspace
from tests.test_tblog import photo, pixel_art, scored_epoch

pytestmark = pytest.mark.kohya


def serve(logdir: Path):
    """Start TensorBoard on a free loopback port; returns the process and its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
                             "127.0.0.1", "--port", "0", "--load_fast", "false", "--reload_interval", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if m := re.search(r"(http://127\.0\.0\.1:\d+)/", line):
            return proc, m[1]
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("TensorBoard did not start:\n" + "".join(seen))


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_tensorboard_lists_samples_sprites_scores_and_the_verdict(tmp_path):
    pytest.importorskip("tensorboard", reason="needs tensorboard: use the kohya environment (make kohya-env)")
    ws = Workspace(tmp_path)
    logs = ws.logs
    board = tblog.Board(ws.board, recipe.TEST_PROMPTS)
    board.epoch(1, 10, scored_epoch(tmp_path, 1, [photo] * 4), alarm="0/4 pixel art")
    board.epoch(2, 20, scored_epoch(tmp_path, 2, [pixel_art] * 4))
    board.final({"contact_sheet": str(tmp_path / "output" / "report" / "sprites" / "e000002_p00.png"),
                 "recommended": {"epoch": 2, "mean_score": 0.9}, "reason": "epoch 2", "epochs": []}, 20)
    board.close()
    proc, base = serve(logs)
    try:
        deadline = time.monotonic() + 120  # a loaded machine: TensorBoard's first load can take a minute
        while True:
            images = get_json(f"{base}/data/plugin/images/tags").get(tblog.RUN, {})
            scalars = get_json(f"{base}/data/plugin/scalars/tags").get(tblog.RUN, {})
            if len(images) >= 9 and len(scalars) >= 6 or time.monotonic() > deadline:
                break
            time.sleep(1)
        text = get_json(f"{base}/data/plugin/text/tags").get(tblog.RUN, [])
    finally:
        proc.kill()
        proc.wait()
    labels = [tblog.prompt_label(i, recipe.TEST_PROMPTS) for i in range(4)]
    assert set(images) == {*(f"sample/{x}" for x in labels), *(f"sprite/{x}" for x in labels),
                           "report/contact_sheet"}
    assert set(scalars) == {*(f"score/{x}" for x in labels), "score/mean", "score/pixel_art_share"}
    assert {"alarm/text_summary", "report/recommendation/text_summary"} <= set(text)
