"""The entrypoint's flow: ready the environment, report, run `bespoke run` with signals forwarded, finish.

`docker run IMAGE` (CMD `bespoke run`) is the pipeline. Any other command (`bespoke check`, `bash`,
`make smoke-test`) gets the same environment and replaces this process, so it behaves exactly as if
run directly: its own terminal, its own signals from tini, its own exit code.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from bespoke import kohya, switches
from bespoke.errors import BespokeError, print_error, user_error
from bespoke.masking import mask_argv, secret_values
from bespoke.workspace import Workspace
from entrypoint import finish, mounts, proc, services, settings, survey

FORWARDED = (*finish.TERMINATING, signal.SIGUSR1, signal.SIGUSR2)


class CommandNotFound(BespokeError):
    exit_code = 127


def main(argv: list[str], environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ) if environ is None else environ
    try:
        return run(argv, environ)
    except (BespokeError, OSError) as e:
        worded = user_error(e)  # a path too long, through a file, unwritable: one line; any other OSError is a bug
        if worded is None:
            raise
        return print_error(worded, debug=switches.debug(environ))


def run(argv: list[str], environ: dict[str, str]) -> int:
    if argv[:1] == ["--verify-image"]:
        from entrypoint import verify

        return verify.main(argv[1:])
    if not settings.is_pipeline(argv):
        workspace = settings.workspace_from(environ)
        try:
            proc.replace(argv, settings.child_env(environ, workspace, pipeline=False))
        except FileNotFoundError:
            raise CommandNotFound(f"{argv[0]}: command not found", "docker run IMAGE COMMAND",
                                  "use bespoke, bash, make smoke-test, or a full path") from None
        return 0  # only reached when the seam is a fake
    return pipeline(argv, environ)


def pipeline(argv: list[str], environ: dict[str, str]) -> int:
    s = settings.from_env(environ)
    env = settings.child_env(environ, s.workspace, pipeline=True)
    command = settings.pipeline_argv(argv, s)
    running = services.Services()
    try:
        if s.public_key:
            services.start_sshd(running, s.public_key, env)
        if s.tensorboard:
            services.start_tensorboard(running, Workspace(s.workspace).logs, env)
        report(s, env, command, running.lines)
        code, signalled = run_forwarding(command, env)
        if code != 0:
            finish.record_failure(s.workspace, code, interrupted=signalled is not None)
        if signalled is not None:
            finish.say(f"stopped by {signal.Signals(signalled).name}; bespoke run exited with {code}")
            return code  # the container is being stopped: no sleeping, no restart dance
        return finish.finish(s, code, env)
    finally:
        running.stop()


def run_forwarding(argv: list[str], env: dict[str, str]) -> tuple[int, int | None]:
    """Run `argv` through the seam, forwarding our signals to it; return its exit code and the first
    terminating signal we received (None when it ended by itself)."""
    child = proc.spawn(argv, env)
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code < 0:  # killed by a signal: report it the way a shell would
        code = 128 - code
    return code, next((s for s in received if s in finish.TERMINATING), None)


def report(s: settings.Settings, env: dict[str, str], command: list[str], service_lines: list[str]) -> None:
    say = finish.say
    warnings = list(mounts.workspace_warnings(s.workspace))
    gpu_lines, gpu_problem = survey.gpus()
    sd_line, sd_problem = survey.sd_scripts_line(kohya.default_dir(env), kohya.pinned_commit())
    warnings += [w for w in (s.on_finish_error, gpu_problem, sd_problem) if w]
    if s.pod_id and s.on_finish == "exit":
        warnings.append("BESPOKE_ON_FINISH=exit on RunPod: RunPod restarts a container that exits, and the "
                        "restarted run finds DONE.json and exits again; fix: BESPOKE_ON_FINISH=sleep or stop")
    versions = survey.library_versions()
    say(f"workspace   {survey.disk_line(s.workspace)}"
        f"{'' if mounts.is_mounted(s.workspace) else ' (not a volume)'}")
    say(f"container   {survey.disk_line(Path('/'))}")
    for line in gpu_lines or ["none"]:
        say(f"gpu         {line}")
    say(f"sd-scripts  {sd_line}")
    say("libraries   " + ", ".join(f"{k} {v or 'missing'}" for k, v in versions.items()))
    say(f"caches      under {Workspace(s.workspace).cache} (HF_HOME={env.get('HF_HOME')})")
    say(f"on finish   {s.on_finish} ({s.on_finish_reason})")
    for line in service_lines:
        say(line)
    for w in warnings:
        say(f"warning: {w}")
    say("running     " + " ".join(mask_argv(command, secret_values(env))))
