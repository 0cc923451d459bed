"""RunPod conventions beside the run: sshd with PUBLIC_KEY (to copy LoRAs out) and TensorBoard on 6006.

A service that dies is reported in the pod log at once, in one line with the last line of its log."""

from __future__ import annotations

import base64
import binascii
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bespoke import masking
from bespoke.fsutil import atomic_write_text
from entrypoint import proc
from entrypoint.settings import TENSORBOARD_PORT

SSHD = "/usr/sbin/sshd"
SSHD_RUN_DIR = Path("/run/sshd")  # privilege separation directory sshd insists on
LOG_DIR = Path("/tmp")
# An ssh session starts from sshd's bare environment. As in RunPod's own images, the container's is
# written at start to /etc/rp_environment, and sourced by login shells from /etc/profile.d (after
# /etc/profile resets PATH) and by every other bash from the first line of /etc/bash.bashrc (bash runs
# it, then ~/.bashrc, for `ssh pod COMMAND`, and ignores BASH_ENV there).
SHELL_ENV_FILE = Path("/etc/rp_environment")
SHELL_ENV_HOOK = Path("/etc/profile.d/rp_environment.sh")
SYSTEM_BASHRC = Path("/etc/bash.bashrc")
# Per-session variables that sshd and login set. Secrets (bespoke.masking's rule: a credential-like name or
# value) are never written to disk either.
_SESSION_VARS = {"HOME", "USER", "LOGNAME", "SHELL", "TERM", "PWD", "OLDPWD", "SHLVL", "HOSTNAME", "MAIL", "_",
                 "PUBLIC_KEY"}


@dataclass
class Services:
    """The background children we started, one line about each for the report, and a watcher per child
    that says in one line when one of them dies (the cause is the last line of its log)."""

    children: list = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def watch(self, name: str, child, log: Path, say=None) -> None:
        def wait() -> None:
            code = child.wait()
            if not self.stopping.is_set():
                (say or _say)(f"{name} exited with code {code}: {last_line(log)} (log {log})")

        threading.Thread(target=wait, name=f"watch {name}", daemon=True).start()

    def stop(self, grace: float = 5) -> None:
        self.stopping.set()
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                child.kill()


def _say(line: str) -> None:
    from entrypoint.finish import say

    say(line)


def last_line(log: Path) -> str:
    """The cause, as the service wrote it: the last non-blank line of its log."""
    try:
        lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        lines = []
    return lines[-1] if lines else "it wrote nothing"


def tensorboard_argv(logdir: Path, port: int = TENSORBOARD_PORT, python: str = sys.executable,
                     host: str = "0.0.0.0") -> list[str]:
    return [python, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", host, "--port", str(port)]


def start_tensorboard(services: Services, logdir: Path, env: dict[str, str], port: int = TENSORBOARD_PORT,
                      host: str = "0.0.0.0") -> None:
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        services.lines.append(f"tensorboard: not started ({logdir}: {e.strerror})")
        return
    path = LOG_DIR / "bespoke-tensorboard.log"
    path.write_bytes(b"")  # this start's lines only, so a death is reported with its own cause
    log = open(path, "ab")  # the child keeps it open
    child = proc.spawn(tensorboard_argv(logdir, port, host=host), env, stdout=log, stderr=subprocess.STDOUT)
    services.children.append(child)
    services.watch("tensorboard", child, path)
    services.lines.append(f"tensorboard: http://{host}:{port} (logdir {logdir}; "
                          f"log {path}; BESPOKE_TENSORBOARD=0 turns it off)")


KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-dss")


def is_public_key(line: str) -> bool:
    """`TYPE BASE64 [comment]` whose base64 blob starts with the same TYPE, as every OpenSSH key does."""
    parts = line.split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        return False
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(blob) < 4:
        return False
    n = struct.unpack(">I", blob[:4])[0]
    return blob[4 : 4 + n] == parts[0].encode() and len(blob) > 4 + n + 4


def public_keys(public_key: str) -> tuple[list[str], list[str]]:
    """The lines of PUBLIC_KEY that are SSH public keys, and a warning for each that is not.

    A warning never quotes the line: a private key pasted by mistake must not reach the log."""
    keys, warnings = [], []
    lines = [k.strip() for k in public_key.replace("\\n", "\n").splitlines() if k.strip()]
    for i, line in enumerate(lines, 1):
        if is_public_key(line):
            keys.append(line)
        else:
            warnings.append(f"ssh: PUBLIC_KEY line {i} of {len(lines)} is not an SSH public key "
                            "(expected e.g. 'ssh-ed25519 AAAA... you@laptop'); skipped it")
    return keys, warnings


def authorize_key(home: Path, public_key: str) -> Path:
    """Add the SSH public keys of `public_key` to ~/.ssh/authorized_keys once, with sshd's permissions."""
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    ssh.chmod(0o700)
    keys = ssh / "authorized_keys"
    existing = keys.read_text().splitlines() if keys.exists() else []
    new = public_keys(public_key)[0]
    keys.write_text("\n".join(existing + [k for k in new if k not in existing]) + "\n")
    keys.chmod(0o600)
    return keys


def sshd_argv(port: int = 22, address: str | None = None) -> list[str]:
    return [SSHD, "-D", "-e", "-p", str(port), *(["-o", f"ListenAddress={address}"] if address else []),
            "-o", "PasswordAuthentication=no", "-o", "PermitRootLogin=prohibit-password"]


def export_shell_environment(env: dict[str, str]) -> Path:
    """Write the container's environment where ssh sessions pick it up (SHELL_ENV_FILE, sourced by
    SHELL_ENV_HOOK and SYSTEM_BASHRC's first line), leaving out per-session variables and secrets."""
    lines = ["# The container's environment at start, for ssh sessions (written by the entrypoint).",
             "# Secrets (names with TOKEN, SECRET, KEY...) are left out: they are never written to disk."]
    for name, value in sorted(env.items()):
        if (name in _SESSION_VARS or masking.is_secret_name(name) or masking.looks_secret(value)
                or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)):
            continue
        lines.append(f"export {name}={shlex.quote(value)}")
    atomic_write_text(SHELL_ENV_FILE, "\n".join(lines) + "\n")
    SHELL_ENV_FILE.chmod(0o644)  # readable by every ssh session, as /etc files are
    source = f"[ -r {SHELL_ENV_FILE} ] && . {SHELL_ENV_FILE}\n"
    SHELL_ENV_HOOK.parent.mkdir(parents=True, exist_ok=True)
    SHELL_ENV_HOOK.write_text(source)
    bashrc = SYSTEM_BASHRC.read_text() if SYSTEM_BASHRC.is_file() else ""
    if not bashrc.startswith(source):  # first: Debian's bash.bashrc returns early when not interactive
        SYSTEM_BASHRC.write_text(source + bashrc)
    return SHELL_ENV_FILE


def start_sshd(services: Services, public_key: str, env: dict[str, str], uid: int | None = None,
               port: int = 22, address: str | None = None) -> None:
    uid = os.getuid() if uid is None else uid
    if uid != 0:
        services.lines.append(f"ssh: not started: sshd needs root and this container runs as uid {uid} "
                              "(copy files from the host's workspace folder instead)")
        return
    if not Path(SSHD).exists() or shutil.which("ssh-keygen", path=env.get("PATH")) is None:
        services.lines.append("ssh: not started: openssh-server is not in this image")
        return
    valid, warnings = public_keys(public_key)
    services.lines += warnings
    if not valid:
        services.lines.append("ssh: not started: PUBLIC_KEY holds no SSH public key")
        return
    keys = authorize_key(Path(env.get("HOME") or "/root"), public_key)
    SSHD_RUN_DIR.mkdir(mode=0o755, exist_ok=True)
    # Host keys are made per container, never baked into the image (everyone would share them).
    keygen = proc.spawn(["ssh-keygen", "-A"], env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    if keygen.wait() != 0:
        services.lines.append("ssh: not started: ssh-keygen -A failed to make host keys")
        return
    export_shell_environment(env)
    path = LOG_DIR / "bespoke-sshd.log"
    path.write_bytes(b"")
    log = open(path, "ab")  # the child keeps it open
    child = proc.spawn(sshd_argv(port, address), env, stdout=log, stderr=subprocess.STDOUT)
    services.children.append(child)
    services.watch("sshd", child, path)
    services.lines.append(f"ssh: sshd on port {port} with the PUBLIC_KEY in {keys} (log {path}; "
                          f"sessions get the container's environment from {SHELL_ENV_FILE})")
