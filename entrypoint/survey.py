"""What the container found at start: GPUs, sd-scripts commit, library versions, free disk.

Nothing here imports torch: versions come from package metadata and GPUs from nvidia-smi, so the
report prints in a second even on a pod whose CUDA setup is broken (bespoke check goes deeper).
"""

from __future__ import annotations

import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from bespoke.kohya import pin_check
from entrypoint import proc

LIBRARIES = ("torch", "torchvision", "xformers", "bitsandbytes", "accelerate", "transformers", "diffusers")
NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader"]
# The image's torch is built for CUDA 12.8, whose kernels need a host driver of release 570 or later.
MIN_DRIVER = 570


def gpus(timeout: float = 20) -> tuple[list[str], str | None]:
    """One line per GPU from nvidia-smi, or an explanation of why there are none."""
    if shutil.which(NVIDIA_SMI_QUERY[0]) is None:
        return [], ("no GPU visible (nvidia-smi is not in the container); fix: docker run --gpus all, "
                    "or the compose file's GPU reservation; on RunPod pick a GPU pod")
    child = proc.spawn(NVIDIA_SMI_QUERY, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return [], f"nvidia-smi did not answer in {timeout:.0f} s; the GPU or its driver is stuck"
    text = (out or b"").decode(errors="replace").strip()
    if child.returncode != 0:
        return [], f"nvidia-smi failed: {text.splitlines()[-1] if text else 'exit ' + str(child.returncode)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines, driver_problem(lines)


def driver_problem(lines: list[str]) -> str | None:
    """One line when the host's driver is too old for CUDA 12.8 (RunPod may place a pod on such a host)."""
    for line in lines:
        driver = line.rsplit(",", 1)[-1].strip()
        major = driver.split(".")[0]
        if major.isdigit() and int(major) < MIN_DRIVER:
            return (f"the host's NVIDIA driver is {driver}, older than the {MIN_DRIVER} that CUDA 12.8 (this image's "
                    f"torch) needs, so training cannot use the GPU; fix: on RunPod filter for CUDA 12.8 or newer "
                    f"when deploying, elsewhere update the driver to {MIN_DRIVER} or later")
    return None


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def sd_scripts_line(sd_dir: Path, pin: str) -> tuple[str, str | None]:
    """The sd-scripts line, and a warning when it is missing or not at the pinned commit (kohya.pin_check)."""
    found = pin_check(sd_dir, pin)
    if not found.present:
        return f"{sd_dir}: missing", (f"sd-scripts is not in {sd_dir}; fix: use the bespoke image unchanged, "
                                      "or set SD_SCRIPTS_DIR to a checkout made by `make sd-scripts`")
    commit = found.commit
    if found.ok:
        return f"{sd_dir} @ {commit[:12]} (the pinned commit)", None
    return f"{sd_dir} @ {commit or 'unknown commit'}", (
        f"sd-scripts in {sd_dir} is at {commit or 'an unknown commit'}, bespoke is pinned to {pin}; "
        "fix: rebuild the image, or `make sd-scripts` into a fresh SD_SCRIPTS_DIR")


def disk_line(path: Path) -> str:
    try:
        usage = shutil.disk_usage(path)
    except OSError as e:
        return f"{path}: {e.strerror}"
    return f"{path}: {usage.free / 1e9:.1f} GB free of {usage.total / 1e9:.1f} GB"
