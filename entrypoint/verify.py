"""`python -m entrypoint --verify-image`: the image's own facts, checked at the end of its build and
again by the image workflow: sd-scripts at the pin, the baked tokenizers, the torch/xformers pairing,
the C compiler that the fast profile's Triton kernels need.

`bespoke check` is the user's preflight and needs a GPU, a volume and data, none of which a build has;
this checks what the build itself is responsible for, and fails the build when one is wrong.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from importlib import metadata
from pathlib import Path

from bespoke.kohya import default_dir, pin_check, pinned_commit
from bespoke.tokens import TOKENIZER_IDS as TOKENIZERS
from bespoke.tokens import cache_name

# "a photo of a cat" in the CLIP BPE vocabulary, start and end tokens included.
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]
REQUIREMENTS_DIR = Path("/opt/bespoke/requirements")
FLAVOURS = ("cu128", "cpu")  # requirements/torch-<x>.txt and lock-<x>.txt
PIN_LINE = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: Path) -> dict[str, str]:
    out = {}
    for line in Path(requirements).read_text().splitlines():
        if m := PIN_LINE.match(line.strip()):
            out[canonical(m.group(1))] = m.group(2)
    return out


def check_lock(lock: Path, skip: tuple[str, ...] = ("bespoke", "pip")) -> list[str]:
    """Every distribution installed here is in the lock, at the lock's version: nothing floated."""
    locked = pins(lock)
    problems = []
    for dist in metadata.distributions():
        name = canonical(dist.metadata["Name"])
        if name in skip:
            continue
        if name not in locked:
            problems.append(f"{name} {dist.version} is installed but not in {lock} (fix: make lock)")
        elif locked[name] != dist.version:
            problems.append(f"{name} is {dist.version}, {lock} locks {locked[name]}")
    return sorted(problems)


def check_sd_scripts(sd_dir: Path, pin: str) -> list[str]:
    found = pin_check(sd_dir, pin)
    problems = [] if found.present else [f"{sd_dir}/sdxl_train_network.py is missing"]
    if found.commit != pin:
        problems.append(f"{sd_dir} is at {found.commit!r}, bespoke/SD_SCRIPTS_COMMIT says {pin!r}")
    return problems


def tokenizer_dirs(root: Path) -> list[Path]:
    """sd-scripts' --tokenizer_cache_dir layout: the model id with "/" replaced by "_"."""
    return [root / cache_name(model_id) for model_id in TOKENIZERS]


def check_tokenizers(root: Path) -> list[str]:
    problems = []
    for d in tokenizer_dirs(root):
        missing = [n for n in ("vocab.json", "merges.txt", "tokenizer_config.json") if not (d / n).is_file()]
        if missing:
            problems.append(f"{d} lacks {', '.join(missing)}")
            continue
        from transformers import CLIPTokenizer

        # From the folder alone, as training will load it (HF_HUB_OFFLINE=1).
        ids = CLIPTokenizer.from_pretrained(str(d), local_files_only=True)("a photo of a cat")["input_ids"]
        if ids != CAT_IDS:
            problems.append(f"{d} encodes 'a photo of a cat' as {ids}, expected {CAT_IDS}")
    return problems


def check_versions(requirements: Path) -> list[str]:
    problems = []
    for name, want in pins(requirements).items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have != want:
            problems.append(f"{name} is {have}, {requirements} pins {want}")
    return problems


def check_xformers_build() -> list[str]:
    """xformers' C++ ops only load into the exact torch they were compiled against."""
    try:
        dist = metadata.distribution("xformers")
    except metadata.PackageNotFoundError:
        return ["xformers is not installed"]
    built = json.loads(Path(dist.locate_file("xformers/cpp_lib.json")).read_text())["version"]["torch"]
    torch_version = metadata.version("torch")
    return [] if same_torch(built, torch_version) else [f"xformers was built for torch {built}, torch is {torch_version}"]


def same_torch(built: str, installed: str) -> bool:
    """`built` (xformers' cpp_lib.json) is the installed torch. A torch without a local label is PyPI's, the
    default CUDA build of its version, which PyPI's xformers is built against: 2.10.0 is 2.10.0+cu128."""
    return built == installed or ("+" not in installed and built.split("+")[0] == installed)


def cuda_headers_installed(marker: Path = Path("/etc/bespoke-cuda-headers")) -> bool:
    """The Dockerfile's OS layer writes its CUDA_DEV_PACKAGES there: empty in `make image-test`'s build."""
    return not marker.is_file() or bool(marker.read_text().strip())


def built_for(requirements_dir: Path) -> str:
    """The torch build this image was made with (the Dockerfile's ARG TORCH): the lock that pins it."""
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return FLAVOURS[0]
    for flavour in FLAVOURS:
        lock = requirements_dir / f"lock-{flavour}.txt"
        if lock.is_file() and pins(lock).get("torch") == torch_version:
            return flavour
    return FLAVOURS[0]


def check_imports(modules=("torch", "torchvision.ops", "xformers", "bitsandbytes", "cv2")) -> list[str]:
    problems = []
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as e:  # any failure here is the finding, whatever its type
            problems.append(f"import {module} failed: {type(e).__name__}: {e}")
    return problems


def check_compiler(cuda: bool = True) -> list[str]:
    """The fast profile's torch.compile builds Triton's launcher (cc, Python.h) and inductor's C++ kernel
    launcher (c++, CUDA's headers) at run time."""
    from bespoke.preflight import compiler_problem, cpp_launcher_problem

    out = []
    if lack := compiler_problem():
        out.append(f"Triton needs {lack}: add gcc and python3-dev to the Dockerfile's OS layer")
    if cuda and (lack := cpp_launcher_problem()):
        out.append(f"inductor's C++ launcher needs {lack}: add g++, cuda-cudart-dev, cuda-crt, cuda-driver-dev "
                   "and cuda-cccl to the Dockerfile's OS layer")
    return out


def main(argv: list[str]) -> int:
    flavour = built_for(REQUIREMENTS_DIR)
    cuda = flavour == "cu128"  # a CPU build (make image-test) has no xformers and no CUDA headers
    requirements = [Path(a) for a in argv] or [REQUIREMENTS_DIR / f"torch-{flavour}.txt",
                                               REQUIREMENTS_DIR / "sd-scripts.txt"]
    print(f"torch build: {flavour}", flush=True)
    checks = {
        "sd-scripts": lambda: check_sd_scripts(default_dir(), pinned_commit()),
        "tokenizers": lambda: check_tokenizers(Path(os.environ.get("BESPOKE_TOKENIZER_DIR",
                                                                   "/opt/bespoke/tokenizers"))),
        "versions": lambda: [p for r in requirements for p in check_versions(r)],
        "lock": lambda: check_lock(REQUIREMENTS_DIR / f"lock-{flavour}.txt"),
        "xformers build": check_xformers_build if cuda else list,
        "imports": lambda: check_imports() if cuda else check_imports(("torch", "torchvision.ops", "bitsandbytes", "cv2")),
        "compiler (fast profile)": lambda: check_compiler(cuda and cuda_headers_installed()),
    }
    failed = 0
    for name, check in checks.items():
        problems = check()
        failed += bool(problems)
        print(f"{'FAIL' if problems else 'ok'}  {name}" + "".join(f"\n      {p}" for p in problems), flush=True)
    return 1 if failed else 0
