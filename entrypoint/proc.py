"""The one seam through which the entrypoint starts processes. Tests replace these with fakes."""

from __future__ import annotations

import os
import subprocess
from typing import NoReturn


def spawn(argv: list[str], env: dict[str, str] | None = None, *, own_session: bool = True,
          stdout=None, stderr=None) -> subprocess.Popen:
    """Start `argv`; in its own session by default, so signals reach it only through us (once)."""
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                            start_new_session=own_session)


def replace(argv: list[str], env: dict[str, str]) -> NoReturn:
    """Become `argv` (exec): a command the user named gets our PID, the terminal and tini's signals."""
    os.execvpe(argv[0], argv, env)
