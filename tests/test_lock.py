"""One bespoke per workspace (issue 13, class 7): an exclusive flock held by prepare, train, evaluate and
run. A second process is refused in one line naming the holder's PID and start time; a lock whose process
has ended, however it ended, never blocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bespoke import pipeline
from bespoke.errors import LockedError
from bespoke.workspace import Workspace

HOLD = """
import sys, time
from bespoke.workspace import Workspace
with Workspace(sys.argv[1]).lock(sys.argv[2]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the workspace lock, as a running `bespoke <command>` does."""
    started = []

    def start(ws: Path, command: str = "train") -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(ws), command], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "held"
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()
        p.wait()


def test_a_second_holder_is_refused_naming_the_first(tmp_path, holder):
    ws = Workspace(tmp_path / "ws")
    p = holder(ws.root, "train")
    with pytest.raises(LockedError) as e:
        with ws.lock("prepare"):
            pass
    line = e.value.line()
    assert f"PID {p.pid}" in line and "bespoke train" in line and time.strftime("%Y-%m-%d", time.gmtime()) in line
    assert "UTC" in line and "fix:" in line and "\n" not in line


@pytest.mark.parametrize("argv", [
    ["prepare", "--data", "{data}"],
    ["train"],
    ["run", "--data", "{data}"],
    ["evaluate"],
])
def test_every_writing_command_refuses_a_held_workspace_in_one_line(tmp_path, data_dir, holder, argv):
    ws = tmp_path / "ws"
    p = holder(ws, "run")
    before = sorted(str(q) for q in ws.rglob("*"))
    r = subprocess.run([sys.executable, "-m", "bespoke", *[a.format(data=data_dir) for a in argv], "--workspace",
                        str(ws)], capture_output=True, text=True, env={**os.environ, "SD_SCRIPTS_DIR": str(tmp_path)})
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: the workspace is in use by bespoke run") and f"PID {p.pid}" in r.stderr
    assert sorted(str(q) for q in ws.rglob("*")) == before  # nothing written


def test_check_and_a_dry_run_do_not_need_the_lock(workspace, data_dir, holder, monkeypatch, tmp_path):
    holder(workspace, "train")
    assert pipeline.check(workspace, data_dir, probed={"torch": None})  # reads only
    sd = tmp_path / "sd-scripts"
    sd.mkdir()
    (sd / "sdxl_train_network.py").write_text("# never run\n")
    monkeypatch.setenv("SD_SCRIPTS_DIR", str(sd))
    with pytest.raises(LockedError):
        pipeline.prepare(workspace, data_dir, pipeline.PrepareOptions(resolution=(64, 64)))
    with pytest.raises(Exception) as e:  # the dry run gets past the lock to the missing data
        pipeline.train(workspace, pipeline.TrainOptions(dry_run=True), rig=pipeline.Rig())
    assert "no prepared data" in str(e.value)


@pytest.mark.parametrize("end", ["exit", "kill -9"])
def test_the_lock_of_an_ended_process_never_blocks(tmp_path, holder, end):
    ws = Workspace(tmp_path / "ws")
    p = holder(ws.root, "train")
    if end == "kill -9":
        p.send_signal(signal.SIGKILL)
    else:
        p.terminate()
    p.wait()
    assert json.loads(ws.lock_file.read_text() or "{}").get("pid") in (p.pid, None)  # the file may stay behind
    with ws.lock("prepare"):
        assert json.loads(ws.lock_file.read_text())["pid"] == os.getpid()


TRAIN = """
import sys, time
from bespoke import proc
from bespoke.workspace import Workspace
with Workspace(sys.argv[1]).lock("train"):
    child = proc.spawn([sys.executable, "-c", "import time; print('training', flush=True); time.sleep(120)"], {})
    print(child.pid, flush=True)
    time.sleep(120)
"""


def test_a_killed_bespoke_leaves_the_lock_to_its_training_until_that_ends(tmp_path):
    """bespoke.proc.spawn hands the lock's descriptor to the training: `kill -9` of bespoke mid-run must not
    open the workspace to a second bespoke while sd-scripts still writes to it."""
    ws = Workspace(tmp_path / "ws")
    p = subprocess.Popen([sys.executable, "-c", TRAIN, str(ws.root)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    child = int(p.stdout.readline())
    try:
        p.send_signal(signal.SIGKILL)
        p.wait()
        with pytest.raises(LockedError) as e:
            with ws.lock("train"):
                pass
        line = e.value.line()
        assert f"the training started by bespoke train (PID {p.pid}" in line and "has itself ended" in line
    finally:
        os.killpg(child, signal.SIGKILL)  # its own process group (start_new_session)
    deadline = time.time() + 10
    while True:  # the kernel drops the lock once the training's descriptor closes with it
        try:
            with ws.lock("train"):
                break
        except LockedError:
            assert time.time() < deadline, "the lock outlived the training"
            time.sleep(0.1)


def test_a_lock_file_naming_a_dead_process_never_blocks(tmp_path):
    ws = Workspace(tmp_path)
    ws.lock_file.write_text(json.dumps({"pid": 999999, "command": "train", "started_at": 0}))
    with ws.lock("train"):
        pass


def test_the_lock_is_reentrant_in_one_process(tmp_path, holder):
    ws = Workspace(tmp_path / "ws")
    with ws.lock("run"), Workspace(str(ws.root)).lock("prepare"), ws.lock("train"):
        assert json.loads(ws.lock_file.read_text())["command"] == "run"
    with ws.lock("evaluate"):  # released and taken again
        pass
    holder(ws.root)  # and free for another process once released
