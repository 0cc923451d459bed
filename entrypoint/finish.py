"""After the run: record a failure in status.json, then exit, sleep, or stop the RunPod pod.

RunPod restarts a container whose process exits, so on RunPod the default is to sleep (the pod stays
up for downloads; a restart would find DONE.json and do nothing, but costs a model load).
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

from bespoke.fsutil import atomic_write_json, read_json_object
from bespoke.workspace import Workspace
from entrypoint import proc
from entrypoint.settings import Settings

TERMINATING = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def say(line: str) -> None:
    print(f"bespoke-entrypoint: {line}", flush=True)


def _read_status(path: Path) -> dict:
    """status.json as a dict; {} when it is missing, unreadable or not an object."""
    return read_json_object(path) or {}


def _write_status(path: Path, status: dict) -> Path | None:
    try:
        atomic_write_json(path, status)
    except OSError as e:
        say(f"could not write {path} ({e.strerror})")
        return None
    return path


def record_failure(workspace: Path, code: int, interrupted: bool) -> Path | None:
    """Make status.json show a failed run even when bespoke died before it could say so itself."""
    path = Workspace.of(workspace).status
    status = _read_status(path)
    if status.get("stage") in ("failed", "interrupted"):
        return None  # bespoke already wrote the stage and its own last_error
    status["stage"] = "interrupted" if interrupted else "failed"
    status["last_error"] = status.get("last_error") or f"bespoke run exited with code {code}; see the container log"
    status["updated_at"] = time.time()
    return _write_status(path, status)


def record_setting_error(workspace: Path, error: str) -> Path | None:
    """Put an unusable setting in status.json beside the run's own fields (bespoke rewrites the file while
    it runs, so this is written once the run has ended)."""
    path = Workspace.of(workspace).status
    status = _read_status(path)
    status["on_finish_error"] = error
    return _write_status(path, status)


def sleep_until_signal(sleep: Callable[[float], None] | None = None) -> int:
    """Block until SIGTERM/SIGINT/SIGHUP/SIGQUIT (docker stop, pod stop) and return that signal."""
    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)

    sleep = sleep or time.sleep
    previous = {s: signal.signal(s, handler) for s in TERMINATING}
    try:
        while not received:
            sleep(1.0)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return received[0]


def finish(settings: Settings, code: int, env: dict[str, str],
           sleep: Callable[[float], None] | None = None) -> int:
    """Follow BESPOKE_ON_FINISH for a run that ended by itself (success or failure) with `code`."""
    policy = settings.on_finish
    why = "status.json says why" if _read_status(Workspace.of(settings.workspace).status) else "the log above says why"
    outcome = "succeeded" if code == 0 else f"failed (exit {code}); {why}"
    if settings.on_finish_error:
        say(f"error: {settings.on_finish_error}")
        record_setting_error(settings.workspace, settings.on_finish_error)
    if policy == "exit":
        say(f"run {outcome}; exiting (BESPOKE_ON_FINISH=exit)")
        return code
    if policy == "stop":
        if not settings.pod_id:
            say(f"run {outcome}; BESPOKE_ON_FINISH=stop but RUNPOD_POD_ID is not set (not on RunPod), "
                "so there is no pod to stop: exiting")
            return code
        runpodctl = shutil.which("runpodctl", path=env.get("PATH"))
        if runpodctl is None:
            say(f"run {outcome}; BESPOKE_ON_FINISH=stop but runpodctl is not in this container, so the pod "
                f"cannot stop itself; fix: stop pod {settings.pod_id} in the RunPod console (or run "
                f"`runpodctl stop pod {settings.pod_id}` on your machine). Sleeping, so RunPod does not restart the run.")
        else:
            rc = proc.spawn([runpodctl, "stop", "pod", settings.pod_id], env).wait()
            if rc == 0:
                say(f"run {outcome}; asked RunPod to stop pod {settings.pod_id}; waiting for it")
            else:
                say(f"run {outcome}; `runpodctl stop pod {settings.pod_id}` failed (exit {rc}); fix: stop the pod "
                    "in the RunPod console. Sleeping, so RunPod does not restart the run.")
    else:
        say(f"run {outcome}; sleeping so the pod stays up to download {Workspace(settings.workspace).output} "
            f"({settings.on_finish_reason}; BESPOKE_ON_FINISH=exit or stop changes this)")
    sleep_until_signal(sleep)
    return code
