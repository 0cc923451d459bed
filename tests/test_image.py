"""The built image, where a Docker engine and an image are there (as TGI's DOCKER_IMAGE). Marked `docker`.

Enable with:  DOCKER_IMAGE=ghcr.io/<owner>/bespoke:latest pytest -m docker
"""

import os
import shutil
import subprocess

import pytest

IMAGE = os.environ.get("DOCKER_IMAGE")


def _engine() -> bool:
    return bool(shutil.which("docker")) and subprocess.run(["docker", "info"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not (IMAGE and _engine()),
                       reason="needs a Docker engine and DOCKER_IMAGE=<image> (CI's image workflow sets both)"),
]


def docker_run(*args, env=()):
    flags = [x for k, v in env for x in ("-e", f"{k}={v}")]
    return subprocess.run(["docker", "run", "--rm", *flags, IMAGE, *args], capture_output=True, text=True,
                          timeout=600)


def test_image_verifies_itself():
    r = docker_run("python", "-m", "entrypoint", "--verify-image")
    assert r.returncode == 0, r.stdout + r.stderr


def test_image_has_the_pinned_sd_scripts():
    from bespoke.kohya import pinned_commit

    r = docker_run("cat", "/opt/sd-scripts/.bespoke-commit")
    assert r.stdout.strip() == pinned_commit()


def test_dry_run_in_the_image_prints_the_launch(tmp_path):
    r = subprocess.run(["docker", "run", "--rm", "-v", f"{tmp_path}:/workspace", IMAGE, "bash", "-c",
                        "bespoke demo-data --out /workspace/dataset --count 3 && bespoke prepare --expect 3 "
                        "&& bespoke train --dry-run"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 x 10 = 30" in r.stdout and "accelerate.commands.launch" in r.stdout
