"""The one seam through which bespoke starts processes. Tests replace `spawn` with a fake child."""

from __future__ import annotations

import subprocess

# Open descriptors every spawned child keeps: the workspace locks this process holds (Workspace.lock). A flock
# lasts while any copy of its descriptor is open, so a training outlives a killed bespoke with the lock.
INHERITED: set[int] = set()


def spawn(argv: list[str], env: dict[str, str], cwd: str | None = None) -> subprocess.Popen:
    """Start `argv` in its own process group, stdout and stderr merged into one binary pipe, holding the
    workspace locks this process holds."""
    return subprocess.Popen(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, pass_fds=tuple(sorted(INHERITED)),
    )


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a short command to completion (nvidia-smi, git), capturing its output as text."""
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
