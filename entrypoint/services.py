"""RunPod conventions beside the run: sshd with PUBLIC_KEY (to copy LoRAs out) and TensorBoard on 6006."""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from entrypoint import proc
from entrypoint.settings import TENSORBOARD_PORT

SSHD = "/usr/sbin/sshd"
SSHD_RUN_DIR = Path("/run/sshd")  # privilege separation directory sshd insists on
LOG_DIR = Path("/tmp")


@dataclass
class Services:
    """The background children we started, and one line about each for the report."""

    children: list = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def stop(self, grace: float = 5) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                child.kill()


def tensorboard_argv(logdir: Path, port: int = TENSORBOARD_PORT, python: str = sys.executable) -> list[str]:
    return [python, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "0.0.0.0", "--port", str(port)]


def start_tensorboard(services: Services, logdir: Path, env: dict[str, str]) -> None:
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        services.lines.append(f"tensorboard: not started ({logdir}: {e.strerror})")
        return
    log = open(LOG_DIR / "bespoke-tensorboard.log", "ab")  # the child keeps it open
    services.children.append(proc.spawn(tensorboard_argv(logdir), env, stdout=log, stderr=subprocess.STDOUT))
    services.lines.append(f"tensorboard: http://0.0.0.0:{TENSORBOARD_PORT} (logdir {logdir}; "
                          f"log {LOG_DIR / 'bespoke-tensorboard.log'}; BESPOKE_TENSORBOARD=0 turns it off)")


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


def sshd_argv() -> list[str]:
    return [SSHD, "-D", "-e", "-o", "PasswordAuthentication=no", "-o", "PermitRootLogin=prohibit-password"]


def start_sshd(services: Services, public_key: str, env: dict[str, str], uid: int | None = None) -> None:
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
    log = open(LOG_DIR / "bespoke-sshd.log", "ab")  # the child keeps it open
    services.children.append(proc.spawn(sshd_argv(), env, stdout=log, stderr=subprocess.STDOUT))
    services.lines.append(f"ssh: sshd on port 22 with the PUBLIC_KEY in {keys} (log {LOG_DIR / 'bespoke-sshd.log'})")
