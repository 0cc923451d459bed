"""What the environment asks for: the entrypoint's decisions as pure functions of env and argv.

A RunPod template has only env vars, so every choice the container makes can be given as one.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from bespoke.errors import SettingError
from bespoke.switches import split_sets, switch
from bespoke.workspace import DEFAULT_ROOT, Workspace

DEFAULT_WORKSPACE = DEFAULT_ROOT
FINISH_POLICIES = ("sleep", "exit", "stop")
TENSORBOARD_PORT = 6006


@dataclass(frozen=True)
class Settings:
    workspace: Path
    on_finish: str
    on_finish_reason: str
    tensorboard: bool
    public_key: str | None
    pod_id: str | None
    run_args: tuple[str, ...]
    on_finish_error: str | None = None  # an unusable BESPOKE_ON_FINISH, reported while sleeping instead


def workspace_from(environ: dict[str, str]) -> Path:
    """BESPOKE_WORKSPACE without the spaces around it, blank counting as unset ("  " would be a folder in the
    current one)."""
    value = (environ.get("BESPOKE_WORKSPACE") or "").strip()  # " /workspace" from a template is /workspace
    return Path(value) if value else DEFAULT_WORKSPACE


def from_env(environ: dict[str, str]) -> Settings:
    on_finish, reason = finish_policy(environ)
    return Settings(
        workspace=workspace_from(environ),
        on_finish=on_finish,
        on_finish_reason=reason,
        tensorboard=switch("BESPOKE_TENSORBOARD", environ),
        public_key=(environ.get("PUBLIC_KEY") or "").strip() or None,
        pod_id=environ.get("RUNPOD_POD_ID") or None,
        run_args=(*set_args(environ.get("BESPOKE_SET", "")), *extra_args(environ.get("BESPOKE_ARGS", ""), environ)),
        on_finish_error=finish_policy_error(environ),
    )


def finish_policy_error(environ: dict[str, str]) -> str | None:
    """One line for a BESPOKE_ON_FINISH that is none of the policies. Not an error that stops the
    container: exiting at once would be a restart loop on RunPod, so the entrypoint sleeps instead."""
    value = (environ.get("BESPOKE_ON_FINISH") or "").strip().lower()
    if not value or value in FINISH_POLICIES:
        return None
    return SettingError(f"BESPOKE_ON_FINISH={value!r} is not one of {', '.join(FINISH_POLICIES)}, so the "
                        "container sleeps after the run", "container env",
                        "set BESPOKE_ON_FINISH=sleep, exit or stop, or leave it unset").line()


def finish_policy(environ: dict[str, str]) -> tuple[str, str]:
    """BESPOKE_ON_FINISH, else sleep on RunPod (which restarts a container that exits) and exit elsewhere.
    An unusable value means sleep (finish_policy_error says why)."""
    value = (environ.get("BESPOKE_ON_FINISH") or "").strip().lower()
    if value:
        if value not in FINISH_POLICIES:
            return "sleep", "BESPOKE_ON_FINISH is invalid, see the warning"
        return value, "BESPOKE_ON_FINISH"
    if environ.get("RUNPOD_POD_ID"):
        return "sleep", "default on RunPod (RUNPOD_POD_ID is set)"
    return "exit", "default off RunPod"


def set_args(value: str) -> list[str]:
    """BESPOKE_SET="max_train_epochs=12 network_dim=64" -> --set max_train_epochs=12 --set network_dim=64,
    split as `bespoke` itself splits it (switches.split_sets: like a shell, so values can be quoted)."""
    return [arg for word in split_sets(value) for arg in ("--set", word)]


def extra_args(value: str, environ: dict[str, str] | None = None) -> list[str]:
    """BESPOKE_ARGS: more options for `bespoke run`, shell-split (e.g. "--expect 203 --repeats 10").

    ${VAR} and $VAR are expanded from the container's environment, since a RunPod template cannot:
    an Instant Cluster sets NODE_RANK, PRIMARY_ADDR... on each node (docs/runpod.md)."""
    environ = {} if environ is None else environ
    unset = sorted({m[1] or m[2] for m in re.finditer(r"\$\{(\w+)\}|\$(\w+)", value)} - set(environ))
    if unset:
        raise SettingError(f"BESPOKE_ARGS uses {', '.join('$' + v for v in unset)}, which "
                           f"{'is' if len(unset) == 1 else 'are'} not set", "container env",
                           f"set {unset[0]} in the pod's environment, or remove it from BESPOKE_ARGS")
    value = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: environ[m[1] or m[2]], value)
    try:
        return shlex.split(value)
    except ValueError as e:
        raise SettingError(f"BESPOKE_ARGS cannot be split into words ({e})", "container env",
                           "balance the quotes, e.g. BESPOKE_ARGS=\"--expect 203\"") from None


def is_pipeline(argv: list[str]) -> bool:
    """No command, or `bespoke run ...` (the image's CMD): the pipeline, with services and finish policy."""
    return not argv or argv[:2] == ["bespoke", "run"]


def pipeline_argv(argv: list[str], settings: Settings, python: str = sys.executable) -> list[str]:
    """`bespoke run` with the user's own arguments first, then those from env."""
    return [python, "-m", "bespoke", "run", *argv[2:], *settings.run_args]


def child_env(environ: dict[str, str], workspace: Workspace | Path, pipeline: bool) -> dict[str, str]:
    """The environment every child gets: caches under the workspace (unless the user set them elsewhere),
    a writable HOME, and, for the pipeline, BESPOKE_SET consumed into --set (so it is not applied twice)."""
    ws = Workspace.of(workspace)
    env = dict(environ)
    env.update(ws.cache_env(environ))
    # The CUDA driver caches JIT-compiled PTX (xformers ships sm_80 PTX, JIT-compiled on Blackwell).
    env.setdefault("CUDA_CACHE_PATH", str(ws.cuda_cache))
    home = env.get("HOME") or "/"
    if not os.access(home, os.W_OK):  # e.g. docker run --user 1000:1000, where HOME=/
        env["HOME"] = str(ws.home)
        try:
            Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # an unwritable workspace is reported by the mount check and by bespoke's preflight
    env.setdefault("PYTHONUNBUFFERED", "1")
    if pipeline:
        env.pop("BESPOKE_SET", None)
        env.pop("BESPOKE_ARGS", None)
    return env
