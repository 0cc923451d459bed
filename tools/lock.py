"""Regenerate the locks: every package of the kohya environment, transitive ones included (`make lock`).

    .venv-lock/bin/python tools/lock.py          # what `make lock` runs (uv from PyPI, pinned in the Makefile)

Two locks from the same inputs, one per torch file, resolved by `uv pip compile` for linux x86_64,
valid for CPython 3.11 (CI's and the development machines') and 3.12 (the image's) with the same pins:

    requirements/lock-cu128.txt   the image: requirements/torch-cu128.txt
    requirements/lock-cpu.txt     make kohya-env, make smoke-test and CI: requirements/torch-cpu.txt

Two, because the torches differ (2.10.0+cu128 in the image, PyPI's 2.14.1 on CPU machines) and with them
torch's own dependencies (triton, the nvidia-* CUDA wheels, sympy...): one file cannot pin both. Every other
package is resolved from the same inputs, and tests/test_lock.py checks that both locks pin it to the same
version, so the image and CI differ only in torch's family.

Every install goes through a lock as a constraints file (`pip install -c requirements/lock-<x>.txt ...`),
and `python -m entrypoint --verify-image` (`tools/lock.py --check-installed` outside the image) fails when an installed
package is missing from the lock or differs from it. The header records a digest of the inputs; a test
fails when a requirement file changes and the lock was not regenerated.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / "requirements"
# Resolved for the lowest Python the locks install on (3.11: the CI and development machines), then
# checked to resolve to the very same pins for 3.12 (the image), so both get the same versions.
PYTHON_VERSION = "3.11"
ALSO_FOR = "3.12"
PLATFORM = "x86_64-manylinux_2_28"
FLAVOURS = {"cu128": "torch-cu128.txt", "cpu": "torch-cpu.txt"}
SHARED_INPUTS = ("sd-scripts.txt", "tokenizer-data.txt")
DIGEST_LINE = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})$", re.MULTILINE)
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)")
# Packages whose version follows the torch build, so they may differ between the two locks.
TORCH_FAMILY = re.compile(r"^(torch|torchvision|xformers|triton|nvidia-.*|cuda-.*)$")

WHY = """\
# Why some versions are what they are:
#   tensorboard 2.21.0 (requirements/sd-scripts.txt): 2.20.0 imports pkg_resources, which setuptools 82
#     removed; on Python 3.12 setuptools comes in only as torch's dependency, resolved to the newest, so
#     TensorBoard died at start in a freshly built image. 2.21.0 no longer uses pkg_resources; setuptools
#     stays whatever the resolver picks and is pinned here like every other package.
#   torch: resolved against PyPI's torch (the PyTorch index is not needed to lock). PyPI's torch 2.10.0 for
#     linux x86_64 is the CUDA 12.8 build with the same Requires-Dist as 2.10.0+cu128, and the image's
#     line keeps the local label, so the lock says exactly what the image installs from the cu128 index.
#   open-clip-torch (requirements/tokenizer-data.txt) is installed --no-deps for its vocabulary file: it
#     is appended as pinned, its dependencies are not resolved.
"""


def pyproject_requirements() -> list[str]:
    import tomllib  # Python 3.11+; only `make lock` and the drift test need it

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["test"]]


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of a file, without comments, blank lines and pip options."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out.append(line)
    return out


def inputs_digest(flavour: str) -> str:
    """What the lock is made from: the torch file, the shared requirement files, bespoke's pinned
    dependencies and the target. Comments and ordering-neutral whitespace do not count."""
    parts = [f"python {PYTHON_VERSION} {ALSO_FOR} {PLATFORM}", f"torch {FLAVOURS[flavour]}"]
    for name in (FLAVOURS[flavour], *SHARED_INPUTS):
        parts += [f"{name}: {line}" for line in requirement_lines(REQ / name)]
    parts += [f"pyproject: {r}" for r in pyproject_requirements()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def recorded_digest(lock: Path) -> str | None:
    m = DIGEST_LINE.search(lock.read_text()) if lock.is_file() else None
    return m.group(1) if m else None


def lock_path(flavour: str) -> Path:
    return REQ / f"lock-{flavour}.txt"


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if m := PIN.match(line.strip()):
            out[canonical(m.group(1))] = m.group(2)
    return out


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def uv_compile(uv: str, inputs: Path, python: str, constraints: Path | None = None) -> str:
    return subprocess.run(
        [uv, "pip", "compile", str(inputs), "--python-version", python, "--python-platform", PLATFORM,
         *(["-c", str(constraints)] if constraints else []),
         "--no-header", "--no-annotate", "--quiet", "--no-config", "--index-url", "https://pypi.org/simple"],
        check=True, capture_output=True, text=True).stdout


def compile_lock(flavour: str, uv: str) -> str:
    torch_pins = pins(REQ / FLAVOURS[flavour])
    resolvable = [re.sub(r"\+[\w.]+$", "", f"{n}=={v}") for n, v in torch_pins.items()]
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.txt"
        inputs.write_text("\n".join([*resolvable, *requirement_lines(REQ / "sd-scripts.txt"),
                                     *pyproject_requirements()]) + "\n")
        out = uv_compile(uv, inputs, PYTHON_VERSION)
        first = Path(tmp) / "first.txt"
        first.write_text(out)
        again = uv_compile(uv, inputs, ALSO_FOR, constraints=first)
        if pins(first) != {canonical(n): v for n, v in (PIN.match(x).groups() for x in again.splitlines() if PIN.match(x))}:
            raise SystemExit(f"the {flavour} lock resolves differently for Python {ALSO_FOR}:\n{out}\n---\n{again}")
    lines = []
    for line in out.splitlines():
        m = PIN.match(line)
        if m and canonical(m.group(1)) in torch_pins:  # keep the torch file's local label (+cu128)
            line = f"{m.group(1)}=={torch_pins[canonical(m.group(1))]}"
        lines.append(line)
    no_deps = requirement_lines(REQ / "tokenizer-data.txt")
    uv_version = subprocess.run([uv, "--version"], check=True, capture_output=True, text=True).stdout.strip()
    header = (f"# The {flavour} lock: every package of the kohya environment with requirements/{FLAVOURS[flavour]}.\n"
              f"# Generated by `make lock` (tools/lock.py, {uv_version}: uv pip compile for {PLATFORM},\n"
              f"# CPython {PYTHON_VERSION}, checked to resolve to the same pins for {ALSO_FOR}) from\n"
              f"# requirements/{FLAVOURS[flavour]}, requirements/sd-scripts.txt, requirements/tokenizer-data.txt\n"
              "# and pyproject.toml's dependencies and test extra. Do not edit.\n"
              "# Installed as constraints: pip install -c <this file> -r <requirement files>.\n"
              f"{WHY}# inputs-sha256: {inputs_digest(flavour)}\n")
    return header + "\n".join(lines) + "\n# installed --no-deps (requirements/tokenizer-data.txt)\n" + "\n".join(no_deps) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uv", default=str(Path(sys.executable).parent / "uv"))
    parser.add_argument("--check-installed", metavar="LOCK", type=Path,
                        help="check this environment against LOCK instead of regenerating")
    args = parser.parse_args(argv)
    if args.check_installed:
        sys.path.insert(0, str(ROOT))
        from entrypoint.verify import check_lock

        problems = check_lock(args.check_installed)
        print(f"{'FAIL' if problems else 'ok'}  this environment against {args.check_installed}"
              + "".join(f"\n      {p}" for p in problems))
        return 1 if problems else 0
    for flavour in FLAVOURS:
        text = compile_lock(flavour, args.uv)
        path = lock_path(flavour)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        print(f"wrote {path.relative_to(ROOT)} ({len(pins(path))} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
