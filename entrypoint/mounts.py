"""Is the workspace a mounted volume? Outputs written anywhere else vanish with the container."""

from __future__ import annotations

import os
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")


def mount_points(mountinfo: str) -> set[str]:
    """The mount points in /proc/self/mountinfo text (field 5, with the kernel's octal escapes undone)."""
    points = set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.add(_unescape(fields[4]))
    return points


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in mount points as \040 \011 \012 \134.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def is_mounted(path: Path, mountinfo: str | None = None) -> bool:
    """True when `path` itself is a mount point (a docker -v bind mount, a named volume, RunPod's volume)."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return os.path.ismount(path)
    return str(Path(path)) in mount_points(mountinfo)


def workspace_warnings(path: Path, mountinfo: str | None = None) -> list[str]:
    """Warnings, each with its fix, about where the workspace lives."""
    path = Path(path)
    if not path.exists():
        return [f"{path} does not exist: nothing was mounted there; fix: docker run -v \"$PWD/workspace:{path}\" "
                f"(RunPod: set the volume mount path to {path})"]
    if not is_mounted(path, mountinfo):
        return [f"{path} is not a mounted volume, so the LoRAs and caches vanish with the container; "
                f"fix: docker run -v \"$PWD/workspace:{path}\" (RunPod: set the volume mount path to {path})"]
    if not os.access(path, os.W_OK):
        return [f"{path} is not writable by uid {os.getuid()}; fix: run as its owner "
                f"(docker run --user \"$(id -u):$(id -g)\") or chown the folder on the host"]
    return []
