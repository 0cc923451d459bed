"""The services beside the run, started for real as entrypoint/services.py starts them: TensorBoard over
a run's scalars, sshd with a key and an ssh login that sees the container's environment. Marked `kohya`:
they need the environment the image has (TensorBoard, torch's SummaryWriter), and sshd with root.

Enable with:  make kohya-test  (apt-get install openssh-server openssh-client for the ssh test)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from entrypoint import services

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.kohya


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def until(what, timeout: float, child=None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        if child is not None and child.poll() is not None:
            pytest.fail(f"the service died (exit {child.returncode}): {log.read_text() if log else ''}")
        try:
            value = what()
            if value:
                return value
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"not there after {timeout} s: {log.read_text() if log else ''}")
        time.sleep(0.5)


@pytest.fixture
def tensorboard_env():
    pytest.importorskip("tensorboard", reason="needs TensorBoard: make kohya-env, then run with .venv-kohya/bin/pytest")
    return dict(os.environ)


def write_scalars(logdir: Path) -> list[float]:
    """A run's scalars, written the way sd-scripts writes them (accelerate's tensorboard tracker)."""
    from torch.utils.tensorboard import SummaryWriter

    losses = [0.5, 0.25, 0.125, 0.0625]
    writer = SummaryWriter(str(logdir / "network_train"))
    for step, loss in enumerate(losses):
        writer.add_scalar("loss/current", loss, step)
    writer.close()
    return losses


def test_tensorboard_serves_a_runs_scalars(tmp_path, monkeypatch, tensorboard_env):
    monkeypatch.setattr(services, "LOG_DIR", tmp_path)
    logdir = tmp_path / "output" / "logs"
    losses = write_scalars(logdir)
    port = free_port()
    running = services.Services()
    services.start_tensorboard(running, logdir, tensorboard_env, port=port, host="127.0.0.1")
    (child,) = running.children
    base = f"http://127.0.0.1:{port}/data"
    try:
        runs = until(lambda: get_json(f"{base}/runs"), 90, child, tmp_path / "bespoke-tensorboard.log")
        assert runs == ["network_train"]
        series = until(lambda: get_json(f"{base}/plugin/scalars/scalars?run=network_train&tag=loss/current"),
                       60, child, tmp_path / "bespoke-tensorboard.log")
        assert [(step, value) for _, step, value in series] == list(enumerate(losses))
    finally:
        running.stop()
    assert child.poll() is not None


def test_a_service_that_dies_at_start_is_one_line_with_its_cause(tmp_path, monkeypatch, capfd, tensorboard_env):
    monkeypatch.setattr(services, "LOG_DIR", tmp_path)
    with socket.socket() as taken:  # the port is in use: TensorBoard cannot bind and exits
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        running = services.Services()
        services.start_tensorboard(running, tmp_path / "logs", tensorboard_env, port=port, host="127.0.0.1")
        try:
            out = until(lambda: "exited" in (text := capfd.readouterr().out) and text, 90)
        finally:
            running.stop()
    (line,) = [x for x in out.splitlines() if "tensorboard" in x]
    assert line.startswith("bespoke-entrypoint: tensorboard exited with code ")
    assert f"port {port}" in line and "in use" in line and str(tmp_path / "bespoke-tensorboard.log") in line


# --- sshd ----------------------------------------------------------------------------------------

# Runs inside a private mount namespace in which /etc, /root/.ssh and /run are copies in tmp_path (and
# root's dotfiles are /etc/skel's, as in a fresh image), so the entrypoint writes host keys,
# authorized_keys, /etc/rp_environment and its profile hook exactly where it does in the image, without
# touching this machine's.
START_SSHD = """
import os, signal, sys, time
from pathlib import Path
from bespoke.workspace import CACHE_VARS
from entrypoint import services, settings

# The image's environment: the venv first on PATH, the workspace, RunPod's variables, a secret.
environ = {k: v for k, v in os.environ.items() if k not in CACHE_VARS}
environ.update(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", VIRTUAL_ENV=sys.prefix,
               BESPOKE_WORKSPACE=sys.argv[3], RUNPOD_POD_ID="pod-under-test", BESPOKE_ON_FINISH="sleep",
               HF_TOKEN="hf_not_for_the_disk")
env = settings.child_env(environ, Path(sys.argv[3]), pipeline=True)
services.LOG_DIR = Path(sys.argv[3])
running = services.Services()
services.start_sshd(running, Path(sys.argv[1]).read_text(), env, port=int(sys.argv[2]), address="127.0.0.1")
print("\\n".join(running.lines), flush=True)
signal.signal(signal.SIGTERM, lambda *a: (running.stop(), sys.exit(0)))
while True:
    time.sleep(1)
"""


def namespace_ready() -> str | None:
    if os.geteuid() != 0:
        return "needs root (sshd, and a private mount namespace for /etc and /root)"
    missing = [p for p in ("/usr/sbin/sshd", "ssh", "ssh-keygen", "unshare", "mount") if not shutil.which(p)]
    if missing:
        return f"needs {', '.join(missing)}: apt-get install openssh-server openssh-client"
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        return "needs unshare --mount (a private mount namespace)"
    return None


@pytest.fixture
def sshd(tmp_path):
    if reason := namespace_ready():
        pytest.skip(reason)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True)
    etc, dot_ssh = tmp_path / "etc", tmp_path / "dot-ssh"
    shutil.copytree("/etc", etc, symlinks=True, ignore_dangling_symlinks=True)
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()  # the image has none: the entrypoint makes them per container
    dot_ssh.mkdir(mode=0o700)
    # The scratch copy is mounted over /root/.ssh, so that must exist: made empty here when it does not (a
    # fresh CI machine), and removed again afterwards.
    made_dot_ssh = not Path("/root/.ssh").exists()
    if made_dot_ssh:
        Path("/root/.ssh").mkdir(mode=0o700)
    mounts = [f"mount --bind {etc} /etc", f"mount --bind {dot_ssh} /root/.ssh", "mount -t tmpfs tmpfs /run"]
    mounts += [f"mount --bind /etc/skel/{f} /root/{f}" for f in (".bashrc", ".profile")
               if Path("/etc/skel", f).is_file() and Path("/root", f).is_file()]
    (tmp_path / "ws").mkdir()
    (tmp_path / "start_sshd.py").write_text(START_SSHD)
    port = free_port()
    mounts = " && ".join(mounts)
    log = open(tmp_path / "namespace.log", "wb")
    child = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f'{mounts} && cd {ROOT} && exec "$0" {tmp_path / "start_sshd.py"} {tmp_path / "id.pub"} {port} {tmp_path / "ws"}',
         sys.executable], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        until(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, 60, child,
              tmp_path / "namespace.log")
        yield port, tmp_path
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        if made_dot_ssh:
            Path("/root/.ssh").rmdir()  # still empty: every write went to the scratch copy


def ssh(port: int, tmp_path: Path, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-i", str(tmp_path / "id"), "-p", str(port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}", "-o", "LogLevel=ERROR", "root@127.0.0.1", command],
        capture_output=True, text=True, timeout=60)


def test_ssh_login_runs_bespoke_with_the_containers_environment(sshd):
    port, tmp_path = sshd
    version = subprocess.run([str(Path(sys.executable).parent / "bespoke"), "--version"], capture_output=True,
                             text=True, check=True).stdout
    r = ssh(port, tmp_path, "bespoke --version")
    assert r.returncode == 0, r.stderr + (tmp_path / "namespace.log").read_text()
    assert r.stdout == version
    show = 'echo "$PATH|$VIRTUAL_ENV|$HF_HOME|$BESPOKE_WORKSPACE|$RUNPOD_POD_ID|${HF_TOKEN:-no token}"'
    venv_bin = str(Path(sys.executable).parent)
    for how, command in (("ssh pod COMMAND", show), ("a login shell", f"bash -lc '{show}'")):
        r = ssh(port, tmp_path, command)
        assert r.returncode == 0, (how, r.stderr)
        path, virtual_env, hf_home, workspace, pod, token = r.stdout.strip().split("|")
        assert path.split(":")[0] == venv_bin, (how, path)
        assert virtual_env == sys.prefix, how
        assert hf_home == str(tmp_path / "ws" / ".cache" / "huggingface"), how
        assert (workspace, pod, token) == (str(tmp_path / "ws"), "pod-under-test", "no token"), how
    exported = (tmp_path / "etc" / "rp_environment").read_text()
    assert "export RUNPOD_POD_ID=pod-under-test" in exported and "hf_not_for_the_disk" not in exported
    source = "[ -r /etc/rp_environment ] && . /etc/rp_environment\n"
    assert (tmp_path / "etc" / "profile.d" / "rp_environment.sh").read_text() == source
    assert (tmp_path / "etc" / "bash.bashrc").read_text() == source + Path("/etc/bash.bashrc").read_text()
    assert list((tmp_path / "etc" / "ssh").glob("ssh_host_*_key")), "the entrypoint makes the host keys"
