"""The container entrypoint's decisions: env -> options, mount detection, finish policy, signals.

The process seam (entrypoint.proc.spawn / replace) is replaced by FakeSeam, whose FakeChild stands in
for `bespoke run`, nvidia-smi, sshd, TensorBoard and runpodctl. Signals are real: the tests send them
to this process, and one test forwards them to a real child through the real seam.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from bespoke import switches
from entrypoint import finish, main, mounts, proc, services, settings, survey, verify

PIN = (Path(__file__).parents[1] / "bespoke" / "SD_SCRIPTS_COMMIT").read_text().strip()

# /proc/self/mountinfo of a container started with `docker run -v $PWD/workspace:/workspace`.
MOUNTINFO_WITH_VOLUME = textwrap.dedent("""\
    1081 988 0:85 / / rw,relatime master:500 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/A
    1082 1081 0:88 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
    1090 1081 259:2 /home/me/workspace /workspace rw,relatime - ext4 /dev/nvme0n1p2 rw
    1091 1081 259:2 /var/lib/docker/containers/x/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/nvme0n1p2 rw
""")
MOUNTINFO_WITHOUT_VOLUME = "\n".join(
    line for line in MOUNTINFO_WITH_VOLUME.splitlines() if " /workspace " not in line)


# --- fakes at the process boundary ---------------------------------------------------------------

class FakeChild:
    """Stands in for a started process: exits with `code`; `during_wait` runs while we wait on it.
    A `service` (TensorBoard, sshd) runs until it is signalled, as the real ones do."""

    def __init__(self, argv, code=0, stdout=b"", during_wait=None, exits_on_signal=True, service=False):
        self.argv, self.code, self.stdout = argv, code, stdout
        self.during_wait, self.exits_on_signal = during_wait, exits_on_signal
        self.signals: list[int] = []
        self.returncode = None
        self.service = threading.Event() if service else None

    def wait(self, timeout=None):
        if self.service is not None:
            if not self.service.wait(timeout):
                raise subprocess.TimeoutExpired(self.argv, timeout)
            return self.returncode
        if self.returncode is None:
            if self.during_wait:
                self.during_wait(self)
            if self.returncode is None:
                self.returncode = self.code
        return self.returncode

    def communicate(self, timeout=None):
        self.wait()
        return self.stdout, None

    def poll(self):
        return self.returncode

    def send_signal(self, signum):
        self.signals.append(signum)
        if self.exits_on_signal:
            self.returncode = 128 + signum  # what bespoke does: 143 for SIGTERM, 130 for SIGINT
            if self.service is not None:
                self.service.set()

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)


class FakeExec(Exception):
    """Raised by FakeSeam.replace: a real exec never returns either."""


class FakeSeam:
    """Records every process the entrypoint starts; `programs` maps a name in argv to a FakeChild maker."""

    def __init__(self, **programs):
        self.programs = programs
        self.started: list[tuple[list[str], dict]] = []
        self.children: list[FakeChild] = []
        self.replaced = None

    def spawn(self, argv, env=None, **kw):
        self.started.append((list(argv), dict(env or {})))
        for key, make in self.programs.items():
            if key in " ".join(argv):
                child = make(argv)
                break
        else:
            child = FakeChild(argv, service="tensorboard.main" in argv or argv[0].endswith("/sshd"))
        self.children.append(child)
        return child

    def replace(self, argv, env):
        self.replaced = (list(argv), dict(env))
        raise FakeExec(argv[0])

    def argvs(self):
        return [argv for argv, _ in self.started]

    def env_of(self, needle):
        return next(env for argv, env in self.started if needle in " ".join(argv))


@pytest.fixture(autouse=True)
def no_writes_to_this_machines_etc(monkeypatch, tmp_path):
    """sshd's shell environment goes to /etc in the image; here, to tmp_path (tests run as root)."""
    shell_env_paths(monkeypatch, tmp_path)


@pytest.fixture
def seam(monkeypatch):
    fake = FakeSeam()
    monkeypatch.setattr(proc, "spawn", fake.spawn)
    monkeypatch.setattr(proc, "replace", fake.replace)
    return fake


@pytest.fixture
def env(tmp_path):
    """A container environment with the workspace in tmp_path and no RunPod variables."""
    ws = tmp_path / "workspace"
    ws.mkdir()
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "BESPOKE_WORKSPACE": str(ws)}


def never_sleep(seconds):
    raise AssertionError("the entrypoint slept, but this policy should have exited")


def sigterm_self(seconds):
    """A sleep that is ended by `docker stop`: SIGTERM to this process."""
    os.kill(os.getpid(), signal.SIGTERM)


# --- env -> options ------------------------------------------------------------------------------

def test_bespoke_set_becomes_one_set_option_per_pair():
    assert settings.set_args("max_train_epochs=12 network_dim=64") == [
        "--set", "max_train_epochs=12", "--set", "network_dim=64"]


def test_bespoke_set_keeps_quoted_values_whole():
    assert settings.set_args("output_name='my lora'  seed=7") == ["--set", "output_name=my lora", "--set", "seed=7"]


def test_bespoke_set_empty_adds_nothing():
    assert settings.set_args("") == [] and settings.set_args("   ") == []


@pytest.mark.parametrize("value", ["max_train_epochs", "=12", "network_dim=64 oops"])
def test_bespoke_set_refuses_a_word_without_name_and_value(value):
    with pytest.raises(settings.SettingError) as e:
        settings.set_args(value)
    line = e.value.line()
    assert "is not NAME=VALUE" in line and "fix:" in line and "\n" not in line


def test_bespoke_set_refuses_unbalanced_quotes():
    with pytest.raises(settings.SettingError, match="cannot be split"):
        settings.set_args("output_name='my lora")


def test_bespoke_args_are_split_like_a_shell():
    assert settings.extra_args("--expect 203 --trigger 'bespoke punk'") == [
        "--expect", "203", "--trigger", "bespoke punk"]


def test_pipeline_argv_puts_user_arguments_before_env_ones(env):
    s = settings.from_env({**env, "BESPOKE_SET": "max_train_epochs=12", "BESPOKE_ARGS": "--expect 203"})
    argv = settings.pipeline_argv(["bespoke", "run", "--force"], s, python="/opt/venv/bin/python")
    assert argv == ["/opt/venv/bin/python", "-m", "bespoke", "run", "--force",
                    "--set", "max_train_epochs=12", "--expect", "203"]


@pytest.mark.parametrize("argv, expected", [
    ([], True),
    (["bespoke", "run"], True),
    (["bespoke", "run", "--expect", "203"], True),
    (["bespoke", "check"], False),
    (["bespoke"], False),
    (["bash"], False),
    (["make", "smoke-test"], False),
])
def test_only_bespoke_run_is_the_pipeline(argv, expected):
    assert settings.is_pipeline(argv) is expected


@pytest.mark.parametrize("environ, expected", [
    ({}, ("exit", "default off RunPod")),
    ({"RUNPOD_POD_ID": "abc123"}, ("sleep", "default on RunPod (RUNPOD_POD_ID is set)")),
    ({"RUNPOD_POD_ID": "abc123", "BESPOKE_ON_FINISH": "exit"}, ("exit", "BESPOKE_ON_FINISH")),
    ({"BESPOKE_ON_FINISH": " Stop "}, ("stop", "BESPOKE_ON_FINISH")),
    ({"BESPOKE_ON_FINISH": ""}, ("exit", "default off RunPod")),
])
def test_finish_policy_defaults_to_sleep_only_on_runpod(environ, expected):
    assert settings.finish_policy(environ) == expected


def test_unknown_finish_policy_falls_back_to_sleep_with_a_one_line_error():
    """Exiting at once would be a restart loop on RunPod: sleep instead, and say why."""
    assert settings.finish_policy({"BESPOKE_ON_FINISH": "hibernate"})[0] == "sleep"
    error = settings.finish_policy_error({"BESPOKE_ON_FINISH": "hibernate"})
    assert "'hibernate'" in error and "sleep, exit, stop" in error and "fix: set BESPOKE_ON_FINISH=" in error
    assert settings.finish_policy_error({"BESPOKE_ON_FINISH": "exit"}) is None


def test_unknown_finish_policy_runs_then_sleeps_with_the_error_in_the_log_and_status(seam, env, capsys, monkeypatch):
    monkeypatch.setattr(finish, "sleep_until_signal", lambda sleep=None: signal.SIGTERM)
    environ = {**env, "BESPOKE_ON_FINISH": "hibernate", "BESPOKE_TENSORBOARD": "0"}
    assert main.main([], environ) == 0
    assert len(bespoke_runs(seam)) == 1
    out = capsys.readouterr().out
    (warning,) = [x for x in out.splitlines() if x.startswith("bespoke-entrypoint: warning: BESPOKE_ON_FINISH")]
    assert "'hibernate'" in warning and "sleeps after the run" in warning
    assert "bespoke-entrypoint: error: BESPOKE_ON_FINISH='hibernate'" in out and "sleeping so the pod stays up" in out
    status = json.loads((Path(env["BESPOKE_WORKSPACE"]) / "output" / "status.json").read_text())
    assert "'hibernate' is not one of sleep, exit, stop" in status["on_finish_error"]


@pytest.mark.parametrize("value, expected", [(None, True), ("1", True), ("0", False), ("off", False),
                                             ("False", False), ("yes", True)])
def test_tensorboard_switch(value, expected):
    environ = {} if value is None else {"BESPOKE_TENSORBOARD": value}
    assert switches.switch("BESPOKE_TENSORBOARD", environ) is expected


def test_tensorboard_switch_refuses_other_words():
    with pytest.raises(settings.SettingError, match="BESPOKE_TENSORBOARD=1 or BESPOKE_TENSORBOARD=0"):
        switches.switch("BESPOKE_TENSORBOARD", {"BESPOKE_TENSORBOARD": "maybe"})


def test_child_env_puts_caches_under_the_workspace_and_keeps_the_users(env):
    ws = Path(env["BESPOKE_WORKSPACE"])
    child = settings.child_env({**env, "TORCH_HOME": "/data/torch"}, ws, pipeline=True)
    for var in ("HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE", "XDG_CACHE_HOME",
                "TRITON_CACHE_DIR", "CUDA_CACHE_PATH"):
        assert Path(child[var]).is_relative_to(ws), var
    assert child["TORCH_HOME"] == "/data/torch"


def test_child_env_consumes_bespoke_set_only_for_the_pipeline(env):
    ws = Path(env["BESPOKE_WORKSPACE"])
    environ = {**env, "BESPOKE_SET": "network_dim=64", "BESPOKE_DATA": "/workspace/my.zip"}
    assert "BESPOKE_SET" not in settings.child_env(environ, ws, pipeline=True)  # it became --set
    passthrough = settings.child_env(environ, ws, pipeline=False)
    assert passthrough["BESPOKE_SET"] == "network_dim=64"  # `bespoke train` reads it itself
    assert passthrough["BESPOKE_DATA"] == "/workspace/my.zip"


def test_child_env_gives_a_writable_home_when_the_users_is_not(env, tmp_path):
    ws = Path(env["BESPOKE_WORKSPACE"])
    child = settings.child_env({**env, "HOME": str(tmp_path / "no-such-home")}, ws, pipeline=True)
    assert child["HOME"] == str(ws / ".cache" / "home") and Path(child["HOME"]).is_dir()
    assert settings.child_env(env, ws, pipeline=True)["HOME"] == env["HOME"]


# --- mount detection -----------------------------------------------------------------------------

def test_mountinfo_with_a_volume_at_workspace():
    assert mounts.is_mounted(Path("/workspace"), MOUNTINFO_WITH_VOLUME)
    assert not mounts.is_mounted(Path("/workspace"), MOUNTINFO_WITHOUT_VOLUME)
    assert not mounts.is_mounted(Path("/workspace/output"), MOUNTINFO_WITH_VOLUME)


def test_mountinfo_escapes_are_undone():
    line = "2000 1081 259:2 /home/me/my\\040ws /my\\040workspace rw - ext4 /dev/x rw"
    assert mounts.mount_points(line) == {"/my workspace"}


def test_workspace_that_is_not_a_volume_warns_with_the_fix(tmp_path):
    (warning,) = mounts.workspace_warnings(tmp_path, MOUNTINFO_WITHOUT_VOLUME)
    assert "not a mounted volume" in warning and f"-v \"$PWD/workspace:{tmp_path}\"" in warning


def test_missing_workspace_warns_with_the_fix(tmp_path):
    (warning,) = mounts.workspace_warnings(tmp_path / "workspace", MOUNTINFO_WITHOUT_VOLUME)
    assert "does not exist" in warning and "RunPod: set the volume mount path" in warning


def test_mounted_writable_workspace_has_no_warning(tmp_path):
    info = f"1090 1081 259:2 /home/me/ws {tmp_path} rw,relatime - ext4 /dev/nvme0n1p2 rw"
    assert mounts.workspace_warnings(tmp_path, info) == []


# --- what it found -------------------------------------------------------------------------------

def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 99\n")  # never run: the seam is a fake
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_gpus_come_from_nvidia_smi(seam, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(executable(tmp_path / "bin" / "nvidia-smi").parent))
    seam.programs["nvidia-smi"] = lambda argv: FakeChild(argv, stdout=(
        b"0, NVIDIA H100 80GB HBM3, 81559 MiB, 570.124.06\n1, NVIDIA H100 80GB HBM3, 81559 MiB, 570.124.06\n"))
    lines, problem = survey.gpus()
    assert problem is None
    assert lines == ["0, NVIDIA H100 80GB HBM3, 81559 MiB, 570.124.06", "1, NVIDIA H100 80GB HBM3, 81559 MiB, 570.124.06"]
    assert seam.argvs() == [survey.NVIDIA_SMI_QUERY]


def test_no_nvidia_smi_means_no_gpu_with_the_fix(seam, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    lines, problem = survey.gpus()
    assert lines == [] and "--gpus all" in problem and seam.started == []


def test_nvidia_smi_failure_is_reported(seam, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(executable(tmp_path / "bin" / "nvidia-smi").parent))
    seam.programs["nvidia-smi"] = lambda argv: FakeChild(
        argv, code=9, stdout=b"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n")
    lines, problem = survey.gpus()
    assert lines == [] and "couldn't communicate with the NVIDIA driver" in problem


def sd_scripts_dir(tmp_path: Path, commit: str | None) -> Path:
    d = tmp_path / "sd-scripts"
    d.mkdir()
    (d / "sdxl_train_network.py").write_text("# stand-in\n")
    if commit:
        (d / ".bespoke-commit").write_text(commit + "\n")
    return d


def test_sd_scripts_at_the_pin(tmp_path):
    line, problem = survey.sd_scripts_line(sd_scripts_dir(tmp_path, PIN), PIN)
    assert problem is None and PIN[:12] in line and "pinned" in line


def test_sd_scripts_at_another_commit_names_both(tmp_path):
    other = "0" * 40
    line, problem = survey.sd_scripts_line(sd_scripts_dir(tmp_path, other), PIN)
    assert other in problem and PIN in problem and "fix:" in problem


def test_sd_scripts_missing(tmp_path):
    _, problem = survey.sd_scripts_line(tmp_path / "nowhere", PIN)
    assert "not in" in problem and "SD_SCRIPTS_DIR" in problem


# --- services ------------------------------------------------------------------------------------

def pubkey(kind: str = "ssh-ed25519", comment: str = "me@laptop", seed: int = 0) -> str:
    """An OpenSSH public key line of the right shape (its blob names its type), as ssh-keygen writes."""
    def field(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b
    return f"{kind} {base64.b64encode(field(kind.encode()) + field(bytes([seed]) * 32)).decode()} {comment}"


def test_public_key_is_authorized_once_with_sshd_permissions(tmp_path):
    key, second = pubkey(), pubkey("ssh-rsa", "second@key", 1)
    keys = services.authorize_key(tmp_path, key)
    services.authorize_key(tmp_path, key + "\\n" + second)
    assert keys.read_text().splitlines() == [key, second]
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.parent.stat().st_mode) == 0o700


def test_sshd_starts_as_root_with_host_keys_made_per_container(seam, tmp_path, monkeypatch):
    monkeypatch.setattr(services, "SSHD", str(executable(tmp_path / "sbin" / "sshd")))
    monkeypatch.setattr(services, "SSHD_RUN_DIR", tmp_path / "run-sshd")
    monkeypatch.setattr(services, "LOG_DIR", tmp_path)
    bin_dir = executable(tmp_path / "bin" / "ssh-keygen").parent
    running = services.Services()
    environ = {"HOME": str(tmp_path / "root"), "PATH": str(bin_dir), "RUNPOD_POD_ID": "p1", "HF_TOKEN": "hf_x"}
    services.start_sshd(running, pubkey(), environ, uid=0)
    assert seam.argvs() == [["ssh-keygen", "-A"], services.sshd_argv()]
    assert "-D" in services.sshd_argv() and "PasswordAuthentication=no" in services.sshd_argv()
    assert (tmp_path / "root" / ".ssh" / "authorized_keys").read_text() == pubkey() + "\n"
    assert "port 22" in running.lines[0]
    exported = services.SHELL_ENV_FILE.read_text()
    assert f"export PATH={bin_dir}\n" in exported and "export RUNPOD_POD_ID=p1\n" in exported
    assert "HF_TOKEN" not in exported and "HOME" not in exported  # no secrets on disk; HOME is per session
    running.stop()


def shell_env_paths(monkeypatch, tmp_path):
    """Where the shell environment goes, in tmp_path instead of this machine's /etc."""
    monkeypatch.setattr(services, "SHELL_ENV_FILE", tmp_path / "etc" / "rp_environment")
    monkeypatch.setattr(services, "SHELL_ENV_HOOK", tmp_path / "etc" / "profile.d" / "rp_environment.sh")
    monkeypatch.setattr(services, "SYSTEM_BASHRC", tmp_path / "etc" / "bash.bashrc")
    (tmp_path / "etc").mkdir(exist_ok=True)


def test_shell_environment_is_sourced_first_by_bash_and_by_login_shells(tmp_path):
    services.SYSTEM_BASHRC.write_text("[ -z \"$PS1\" ] && return\n")
    for _ in range(2):  # a restarted container adds nothing twice
        services.export_shell_environment({"PATH": "/opt/venv/bin:/usr/bin", "QUOTED": "a 'b' $c"})
    source = f"[ -r {services.SHELL_ENV_FILE} ] && . {services.SHELL_ENV_FILE}\n"
    assert services.SYSTEM_BASHRC.read_text() == source + "[ -z \"$PS1\" ] && return\n"
    assert services.SHELL_ENV_HOOK.read_text() == source
    out = subprocess.run(["sh", "-c", f". {services.SHELL_ENV_FILE} && printf %s \"$QUOTED\""],
                         capture_output=True, text=True, env={}).stdout
    assert out == "a 'b' $c"


def test_shell_environment_leaves_out_every_secret_by_name_or_by_value(tmp_path):
    secrets = {"HF_TOKEN": "x1", "WANDB_API_KEY": "x2", "RUNPOD_API_KEY": "x3", "AWS_SECRET_ACCESS_KEY": "x4",
               "DB_PASSWORD": "x5", "GIT_CREDENTIALS": "x6", "SSH_PRIVATE": "x7", "hf_token": "x8",
               "SOME_SETTING": "hf_abcdefghijklmnop", "OTHER": "ghp_abcdefghijklmnopqrstu"}
    services.export_shell_environment({**secrets, "RUNPOD_POD_ID": "p1"})
    exported = services.SHELL_ENV_FILE.read_text()
    assert "export RUNPOD_POD_ID=p1\n" in exported
    for name, value in secrets.items():
        assert name not in exported and value not in exported, name
    assert stat.S_IMODE(services.SHELL_ENV_FILE.stat().st_mode) == 0o644


def test_sshd_is_skipped_when_not_root(seam, tmp_path):
    running = services.Services()
    services.start_sshd(running, "ssh-ed25519 AAAA me", {"HOME": str(tmp_path)}, uid=1000)
    assert seam.started == [] and "needs root" in running.lines[0] and "uid 1000" in running.lines[0]


def test_tensorboard_serves_the_logs_on_6006(seam, tmp_path, monkeypatch):
    monkeypatch.setattr(services, "LOG_DIR", tmp_path)
    running = services.Services()
    services.start_tensorboard(running, tmp_path / "output" / "logs", {})
    (argv,) = seam.argvs()
    assert argv == [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path / "output" / "logs"),
                    "--host", "0.0.0.0", "--port", "6006"]
    assert (tmp_path / "output" / "logs").is_dir()


# --- the pipeline through main() -----------------------------------------------------------------

def bespoke_runs(seam):
    return [argv for argv in seam.argvs() if argv[1:4] == ["-m", "bespoke", "run"]]


def test_default_command_runs_bespoke_run_with_env_options_and_exits(seam, env, capsys):
    environ = {**env, "BESPOKE_SET": "max_train_epochs=12 network_dim=64", "BESPOKE_TENSORBOARD": "0"}
    assert main.main(["bespoke", "run"], environ) == 0
    assert bespoke_runs(seam) == [[sys.executable, "-m", "bespoke", "run",
                                   "--set", "max_train_epochs=12", "--set", "network_dim=64"]]
    child_env = seam.env_of("bespoke run")
    assert "BESPOKE_SET" not in child_env
    assert child_env["HF_HOME"].startswith(env["BESPOKE_WORKSPACE"])
    out = capsys.readouterr().out
    assert "running     " in out and "max_train_epochs=12" in out
    assert "on finish   exit (default off RunPod)" in out
    assert "not a mounted volume" in out  # tmp_path is no mount point
    assert not any("tensorboard" in " ".join(a) for a in seam.argvs())


def test_exit_on_runpod_warns_about_the_restart_loop(seam, env, capsys):
    environ = {**env, "RUNPOD_POD_ID": "pod123", "BESPOKE_ON_FINISH": "exit", "BESPOKE_TENSORBOARD": "0"}
    assert main.main([], environ) == 0
    assert "warning: BESPOKE_ON_FINISH=exit on RunPod" in capsys.readouterr().out


def test_tensorboard_runs_beside_the_pipeline_unless_turned_off(seam, env, monkeypatch, tmp_path):
    monkeypatch.setattr(services, "LOG_DIR", tmp_path)
    assert main.main([], env) == 0
    assert any("tensorboard.main" in a for argv in seam.argvs() for a in argv)
    tensorboard = next(c for c in seam.children if "tensorboard.main" in c.argv)
    assert tensorboard.signals == [signal.SIGTERM]  # stopped when the entrypoint leaves


def test_failed_run_exits_with_its_code_and_status_json_says_failed(seam, env):
    seam.programs["bespoke run"] = lambda argv: FakeChild(argv, code=1)
    assert main.main([], {**env, "BESPOKE_TENSORBOARD": "0"}) == 1
    status = json.loads((Path(env["BESPOKE_WORKSPACE"]) / "output" / "status.json").read_text())
    assert status["stage"] == "failed" and "exited with code 1" in status["last_error"]


def test_failure_bespoke_recorded_itself_is_left_alone(tmp_path):
    path = tmp_path / "output" / "status.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"stage": "failed", "last_error": "CUDA out of memory; fix: ..."}))
    assert finish.record_failure(tmp_path, 1, interrupted=False) is None
    assert json.loads(path.read_text())["last_error"] == "CUDA out of memory; fix: ..."


def test_failed_run_on_runpod_sleeps_like_a_finished_one(seam, env, capsys):
    s = settings.from_env({**env, "RUNPOD_POD_ID": "pod123"})
    assert finish.finish(s, 1, env, sleep=sigterm_self) == 1
    assert "failed (exit 1)" in capsys.readouterr().out and seam.started == []


def test_sigterm_during_the_run_is_forwarded_and_skips_the_sleep(seam, env):
    def docker_stop(child):
        os.kill(os.getpid(), signal.SIGTERM)  # the entrypoint's handler forwards it to the child

    seam.programs["bespoke run"] = lambda argv: FakeChild(argv, code=0, during_wait=docker_stop)
    environ = {**env, "RUNPOD_POD_ID": "pod123", "BESPOKE_TENSORBOARD": "0"}  # policy would be sleep
    assert main.main([], environ) == 143
    run = next(c for c in seam.children if "bespoke" in c.argv)
    assert run.signals == [signal.SIGTERM]
    status = json.loads((Path(env["BESPOKE_WORKSPACE"]) / "output" / "status.json").read_text())
    assert status["stage"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_sigusr1_is_forwarded_without_ending_the_run(seam, env):
    def poke(child):
        os.kill(os.getpid(), signal.SIGUSR1)

    seam.programs["bespoke run"] = lambda argv: FakeChild(argv, code=0, during_wait=poke, exits_on_signal=False)
    assert main.main([], {**env, "BESPOKE_TENSORBOARD": "0"}) == 0
    run = next(c for c in seam.children if "bespoke" in c.argv)
    assert run.signals == [signal.SIGUSR1]


def test_sleep_policy_waits_for_docker_stop(seam, env, capsys):
    s = settings.from_env({**env, "BESPOKE_ON_FINISH": "sleep"})
    assert finish.finish(s, 0, env, sleep=sigterm_self) == 0
    assert "sleeping so the pod stays up" in capsys.readouterr().out


def test_stop_policy_asks_runpodctl_to_stop_this_pod(seam, env, tmp_path):
    runpodctl = executable(tmp_path / "bin" / "runpodctl")
    environ = {**env, "PATH": str(runpodctl.parent), "BESPOKE_ON_FINISH": "stop", "RUNPOD_POD_ID": "pod123"}
    assert finish.finish(settings.from_env(environ), 0, environ, sleep=sigterm_self) == 0
    assert seam.argvs() == [[str(runpodctl), "stop", "pod", "pod123"]]


def test_stop_policy_without_runpodctl_says_so_and_sleeps(seam, env, tmp_path, capsys):
    environ = {**env, "PATH": str(tmp_path), "BESPOKE_ON_FINISH": "stop", "RUNPOD_POD_ID": "pod123"}
    slept = []
    assert finish.finish(settings.from_env(environ), 0, environ,
                         sleep=lambda s: (slept.append(s), sigterm_self(s))) == 0
    out = capsys.readouterr().out
    assert "runpodctl is not in this container" in out and "fix: stop pod pod123" in out
    assert slept and seam.started == []


def test_stop_policy_off_runpod_exits(seam, env, capsys):
    environ = {**env, "BESPOKE_ON_FINISH": "stop"}
    assert finish.finish(settings.from_env(environ), 3, environ, sleep=never_sleep) == 3
    assert "RUNPOD_POD_ID is not set" in capsys.readouterr().out


def test_failing_runpodctl_falls_back_to_sleep(seam, env, tmp_path, capsys):
    runpodctl = executable(tmp_path / "bin" / "runpodctl")
    seam.programs["runpodctl"] = lambda argv: FakeChild(argv, code=1)
    environ = {**env, "PATH": str(runpodctl.parent), "BESPOKE_ON_FINISH": "stop", "RUNPOD_POD_ID": "pod123"}
    assert finish.finish(settings.from_env(environ), 0, environ, sleep=sigterm_self) == 0
    assert "failed (exit 1)" in capsys.readouterr().out


def test_bad_setting_is_one_line_on_stderr_and_exit_1(seam, env, capsys):
    assert main.main([], {**env, "BESPOKE_SET": "max_train_epochs"}) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: BESPOKE_SET entry 'max_train_epochs' is not NAME=VALUE") and err.count("\n") == 1
    assert "Traceback" not in err and seam.started == []


def test_bespoke_debug_adds_the_traceback(seam, env, capsys):
    assert main.main([], {**env, "BESPOKE_SET": "max_train_epochs", "BESPOKE_DEBUG": "1"}) == 1
    assert "Traceback" in capsys.readouterr().err


# --- other commands ------------------------------------------------------------------------------

def test_other_commands_replace_the_entrypoint_with_the_same_environment(seam, env):
    with pytest.raises(FakeExec):
        main.main(["bash", "-lc", "ls"], {**env, "BESPOKE_SET": "seed=1"})
    argv, child_env = seam.replaced
    assert argv == ["bash", "-lc", "ls"]
    assert child_env["HF_HOME"].startswith(env["BESPOKE_WORKSPACE"]) and child_env["BESPOKE_SET"] == "seed=1"
    assert seam.started == []  # no services, no report: the command runs as if alone


def test_unknown_command_is_one_line_and_exit_127(env, capsys):
    # The real seam: exec of a missing program fails before anything is replaced.
    assert main.main(["no-such-command-bespoke"], env) == 127
    assert capsys.readouterr().err.strip() == (
        "error: no-such-command-bespoke: command not found (docker run IMAGE COMMAND); "
        "fix: use bespoke, bash, make smoke-test, or a full path")


# --- the real seam, a real child -----------------------------------------------------------------

CHILD = textwrap.dedent("""\
    import pathlib, signal, sys, time
    signal.signal(signal.SIGTERM, lambda s, f: (print("child got", s, flush=True), sys.exit(143)))
    pathlib.Path(sys.argv[1]).write_text("ready")
    time.sleep(30)
    sys.exit(0)
""")


def test_sigterm_reaches_a_real_child_through_the_real_seam(tmp_path, capfd):
    ready = tmp_path / "ready"

    def docker_stop():
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=docker_stop, daemon=True).start()
    started = time.monotonic()
    code, signalled = main.run_forwarding([sys.executable, "-c", CHILD, str(ready)], dict(os.environ))
    assert (code, signalled) == (143, signal.SIGTERM)
    assert time.monotonic() - started < 20
    assert "child got 15" in capfd.readouterr().out


def test_a_child_killed_by_a_signal_exits_like_a_shell_says(tmp_path):
    code, signalled = main.run_forwarding([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"],
                                          dict(os.environ))
    assert (code, signalled) == (137, None)


def test_the_real_seam_starts_children_in_their_own_session():
    child = proc.spawn([sys.executable, "-c", "import os; print(os.getsid(0))"], stdout=subprocess.PIPE)
    out, _ = child.communicate(timeout=30)
    assert int(out) == child.pid != os.getsid(0)


# --- the image verifier --------------------------------------------------------------------------

def test_tokenizer_folders_use_sd_scripts_cache_names(tmp_path):
    assert [d.name for d in verify.tokenizer_dirs(tmp_path)] == [
        "openai_clip-vit-large-patch14", "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"]


def test_verify_accepts_real_clip_tokenizers_in_that_layout(tmp_path):
    import importlib.util

    if importlib.util.find_spec("open_clip") is None:  # its data file only; importing it needs torch
        pytest.skip("needs the CLIP vocabulary: pip install --no-deps -r requirements/tokenizer-data.txt "
                    "(make test does)")
    from bespoke import tokens

    tokens.build(tmp_path)
    assert verify.check_tokenizers(tmp_path) == []


def test_verify_names_a_missing_tokenizer(tmp_path):
    (problem, other) = verify.check_tokenizers(tmp_path)
    assert "openai_clip-vit-large-patch14 lacks vocab.json" in problem


def test_verify_reads_the_image_pins():
    pins = verify.pins(Path(__file__).parents[1] / "requirements" / "torch-cu128.txt")
    assert pins == {"torch": "2.10.0+cu128", "torchvision": "0.25.0+cu128", "xformers": "0.0.34"}


def test_verify_compares_installed_versions_with_pins(tmp_path):
    from importlib import metadata

    req = tmp_path / "r.txt"
    req.write_text(f"--extra-index-url https://example.invalid\nclick=={metadata.version('click')}\n")
    assert verify.check_versions(req) == []
    req.write_text("click==0.0.1\n")
    (problem,) = verify.check_versions(req)
    assert "click is" in problem and "pins 0.0.1" in problem


def test_verify_sd_scripts_commit(tmp_path):
    assert verify.check_sd_scripts(sd_scripts_dir(tmp_path, PIN), PIN) == []
    (problem,) = verify.check_sd_scripts(tmp_path / "sd-scripts", "f" * 40)
    assert PIN in problem and "f" * 40 in problem


def test_bespoke_args_expand_the_cluster_variables():
    env = {"NUM_NODES": "2", "NODE_RANK": "1", "PRIMARY_ADDR": "10.65.0.2", "PRIMARY_PORT": "29500"}
    args = settings.extra_args("--num-machines ${NUM_NODES} --machine-rank $NODE_RANK "
                               "--main-process-ip ${PRIMARY_ADDR} --main-process-port ${PRIMARY_PORT}", env)
    assert args == ["--num-machines", "2", "--machine-rank", "1", "--main-process-ip", "10.65.0.2",
                    "--main-process-port", "29500"]


@pytest.mark.parametrize("text", ["--expect ${UNSET}", "--repeats $NOPE", "--data ${A}/${B}"])
def test_bespoke_args_refuse_an_unset_variable_naming_it(text):
    with pytest.raises(settings.SettingError) as e:
        settings.extra_args(text, {"A": "x"})
    missing = [v for v in ("UNSET", "NOPE", "B") if v in text]
    assert all(f"${v}" in e.value.line() for v in missing) and "\n" not in e.value.line()


def test_public_key_lines_that_are_not_keys_are_skipped_with_a_warning_keeping_the_good_ones(tmp_path):
    private = "-----BEGIN OPENSSH PRIVATE KEY-----"
    bad = [private, "ssh-ed25519 notbase64!!", "ssh-rsa " + pubkey().split()[1], "hello world", "ssh-ed25519"]
    good = [pubkey(), pubkey("ecdsa-sha2-nistp256", "x", 2)]
    keys, warnings = services.public_keys("\n".join([bad[0], good[0], *bad[1:], good[1]]))
    assert keys == good
    assert len(warnings) == len(bad) and all("not an SSH public key" in w for w in warnings)
    assert not any(private in w or "notbase64" in w for w in warnings)  # a pasted secret is never echoed
    keys_file = services.authorize_key(tmp_path, "\n".join(bad + good))
    assert keys_file.read_text().splitlines() == good


def test_sshd_is_not_started_without_one_valid_key(seam, tmp_path):
    running = services.Services()
    services.start_sshd(running, "not a key", {"HOME": str(tmp_path)}, uid=0)
    assert seam.started == [] and "no SSH public key" in running.lines[-1]


def test_a_driver_older_than_570_is_one_line_with_the_fix():
    lines = ["0, NVIDIA A40, 46068 MiB, 535.129.03"]
    problem = survey.driver_problem(lines)
    assert "535.129.03" in problem and "570" in problem and "fix: on RunPod filter for CUDA 12.8" in problem
    assert "\n" not in problem
    assert survey.driver_problem(["0, NVIDIA H100 80GB HBM3, 81559 MiB, 570.86.15"]) is None


@pytest.mark.parametrize("value", ["lots", "0", "-3", "nan", "inf", "1e300"])
def test_gpu_memory_cap_refuses_what_is_not_a_size(value):
    with pytest.raises(settings.SettingError, match="BESPOKE_GPU_MEMORY_GB=22"):
        switches.gpu_memory_gb({"BESPOKE_GPU_MEMORY_GB": value})
    assert switches.gpu_memory_gb({"BESPOKE_GPU_MEMORY_GB": " 22 "}) == 22 and switches.gpu_memory_gb({}) is None


def test_problems_lists_every_refused_setting():
    env = {"BESPOKE_FLAT_STEP": "maybe", "BESPOKE_GPU_MEMORY_GB": "lots", "BESPOKE_TENSORBOARD": "0"}
    assert [e.what.split("=")[0] for e in switches.problems(env)] == ["BESPOKE_FLAT_STEP", "BESPOKE_GPU_MEMORY_GB"]
    assert switches.problems({}) == []


def test_a_failed_run_whose_status_cannot_be_written_points_at_the_log(seam, env, capsys):
    output = Path(env["BESPOKE_WORKSPACE"]) / "output"
    shutil.rmtree(output, ignore_errors=True)
    output.write_text("")  # a file where the output folder goes: status.json cannot be written
    s = settings.from_env({**env, "BESPOKE_ON_FINISH": "exit"})
    finish.record_failure(s.workspace, 1, interrupted=False)
    out = capsys.readouterr().out if finish.finish(s, 1, env) == 1 else ""
    assert "could not write" in out and "the log above says why" in out and "status.json says why" not in out
