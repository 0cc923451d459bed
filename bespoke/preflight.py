"""Preflight: the workspace, caches, disk headroom, GPUs and libraries, as findings.

Each check returns findings (severity, what was found, the fix); one failing check never hides the
others. Nothing here needs torch: GPU and library checks import it lazily and report its absence.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bespoke import proc, profiles, runs
from bespoke.errors import BespokeError
from bespoke.fsutil import atomic_write_text, read_json_object
from bespoke.lorameta import read_header
from bespoke.workspace import Workspace

ERROR, WARN, OK, INFO = "error", "warn", "ok", "info"

GB = 1e9
BASE_MODEL_BYTES = 6_938_078_334  # sd_xl_base_1.0.safetensors
BASE_MODEL_PARAMS = BASE_MODEL_BYTES / 2  # its tensors are fp16; the header is a few hundred kB
LORA_BYTES_DIM128_FP32 = 1.82 * GB  # measured on SDXL base: dim 128, text-encoder LoRA included, fp32
PNG_BYTES_1024 = 40_000  # a nearest-upscaled 24x24 portrait at 1024x1024, generous
MARGIN = 0.10


@dataclass(frozen=True)
class Finding:
    severity: str
    check: str
    message: str
    fix: str = ""


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity == ERROR for f in findings)


def table(findings: list[Finding], tag=None) -> list[str]:
    """The findings as a table: severity, check, message, and the fix under each error or warning.
    `tag(severity, text)` may dress the severity column (the CLI colours it)."""
    tag = tag or (lambda severity, text: text)
    width = max((len(f.check) for f in findings), default=5)
    lines = [f"{'':7} {'check':{width}}  finding / fix"]
    for f in findings:
        lines.append(f"{tag(f.severity, f'{f.severity:7}')} {f.check:{width}}  {f.message}")
        if f.fix and f.severity in (ERROR, WARN):
            lines.append(f"{'':7} {'':{width}}  -> {f.fix}")
    return lines


# --- workspace and caches ------------------------------------------------------------------------

def check_workspace(ws: Workspace | Path, root: Path = Path("/")) -> list[Finding]:
    ws = Workspace.of(ws).root
    if not ws.is_dir():
        return [Finding(ERROR, "workspace", f"{ws} does not exist",
                        "mount a volume there (docker run -v DIR:/workspace) or pass --workspace DIR")]
    try:
        with tempfile.NamedTemporaryFile(dir=ws, prefix=".bespoke-write-test"):
            pass
    except OSError as e:
        return [Finding(ERROR, "workspace", f"{ws} is not writable ({e.strerror})",
                        "mount it read-write, or run the container as a user that owns it")]
    out = [Finding(OK, "workspace", f"{ws} is writable")]
    if ws.stat().st_dev == Path(root).stat().st_dev:
        out.append(Finding(WARN, "workspace", f"{ws} is on the same filesystem as / (not a volume)",
                           "outputs vanish with the container: mount a volume at /workspace"))
    return out


def apply_cache_env(workspace: Workspace | Path, environ: dict | None = None) -> list[Finding]:
    """Set every cache under the workspace in `environ` (os.environ by default) and report strays."""
    ws = Workspace.of(workspace)
    root = ws.root.resolve()
    findings = [Finding(WARN, "caches", f"{var}={value} is outside the workspace",
                        f"unset {var} so bespoke keeps it under {root} (a full root disk killed the notes' run)")
                for var, value in ws.apply_cache_env(environ)]
    return findings or [Finding(OK, "caches", f"all caches under {root / ws.cache.name}")]


# --- disk ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DiskTerm:
    name: str
    bytes: float
    path: Path


def disk_terms(
    *, ws: Workspace | Path, hub_cache: Path, images: int, resolution: tuple[int, int], epochs: int, save_every: int,
    dim: int, save_precision: str | None, model_cached: bool, model_params: int | None = None,
) -> list[DiskTerm]:
    """What the run will write, where. `model_params`, the base model's parameter count where its file is
    at hand (model_params()), scales the LoRA from SDXL base's: a smaller model has smaller layers."""
    ws = Workspace.of(ws)
    out = ws.output
    saves = len(runs.saved_epochs(epochs, save_every))  # the files train expects: every n-th and the last
    lora_fp32 = LORA_BYTES_DIM128_FP32 * dim / 128 * (model_params / BASE_MODEL_PARAMS if model_params else 1.0)
    lora = lora_fp32 * (0.5 if save_precision in ("fp16", "bf16") else 1.0)
    latent = resolution[0] // 8 * resolution[1] // 8 * 4 * 4 + 1024  # fp32 4-channel latent in an .npz
    png = PNG_BYTES_1024 * resolution[0] * resolution[1] / 1024**2
    terms = []
    if not model_cached:
        terms.append(DiskTerm("base model download", BASE_MODEL_BYTES, Path(hub_cache)))
    terms += [
        DiskTerm(f"prepared images + latents ({images})", images * (png + latent), ws.training_data),
        DiskTerm(f"LoRA files ({saves} x {lora / GB:.2f} GB)", saves * lora, out),
        # weights in fp32 plus AdamW8bit's two 8-bit moments; the new state is written before the old goes
        DiskTerm("training state (2 x weights + optimizer)", 2 * 1.5 * lora_fp32, out),
    ]
    return terms


def model_params(path: Path) -> int | None:
    """The parameter count in a .safetensors file's header (no tensor is read); None for anything else."""
    if Path(path).suffix != ".safetensors" or not Path(path).is_file():
        return None
    try:
        header, _ = read_header(Path(path))
    except (BespokeError, OSError):
        return None
    try:
        total = sum(math.prod(int(d) for d in t.get("shape", ())) for name, t in header.items()
                    if name != "__metadata__" and isinstance(t, dict))
    except (TypeError, ValueError):  # a shape that is not a list of numbers: not a model we can size
        return None
    return total or None


def _existing(p: Path) -> Path:
    p = Path(p)
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_disk(terms: list[DiskTerm], free: Callable[[Path], int] | None = None) -> list[Finding]:
    """One line per term; an error per filesystem whose need (+10%) exceeds its free space."""
    free = free or (lambda p: shutil.disk_usage(p).free)
    findings = [Finding(INFO, "disk", f"{t.name}: {t.bytes / GB:.2f} GB in {t.path}") for t in terms]
    by_fs: dict[int, list[DiskTerm]] = {}
    for t in terms:
        by_fs.setdefault(_existing(t.path).stat().st_dev, []).append(t)
    for group in by_fs.values():
        where = _existing(group[0].path)
        need = sum(t.bytes for t in group) * (1 + MARGIN)
        have = free(where)
        line = f"need {need / GB:.1f} GB (with {MARGIN:.0%} margin) on the filesystem of {where}, {have / GB:.1f} GB free"
        if need > have:
            findings.append(Finding(ERROR, "disk", line,
                                    f"free {(need - have) / GB:.1f} GB, use a bigger volume, or --set save_precision=bf16 "
                                    "to halve the LoRA files"))
        else:
            findings.append(Finding(OK, "disk", line))
    return findings


# --- GPU and libraries ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_gb: float
    capability: tuple[int, int]


def probe(imports_only: bool = False, run=None, cache: Path | None = None) -> dict:
    """bespoke.launch.gpuprobe's answer, from its own process: the launcher never creates a CUDA context.

    With a `cache` folder, an answer that found GPUs and working libraries is kept there, under a key of
    what it depends on: this Python, the torch, xformers and bitsandbytes installed, and the GPUs
    (`nvidia-smi -L`, with their UUIDs). The probe imports torch and xformers and starts CUDA: 7.5 s of
    every `train` on an H100 (bench/RESULTS.md)."""
    run = run or proc.run
    key = _probe_key(imports_only, run) if cache is not None else None
    kept = Path(cache) / f"gpuprobe-{key}.json" if key else None
    if kept is not None and (answer := read_json_object(kept)) is not None:
        return answer  # a damaged file (or not a file): probe again and replace it
    argv = [sys.executable, "-m", "bespoke.launch.gpuprobe", *(["--imports-only"] if imports_only else [])]
    try:
        r = run(argv, timeout=300)
        found = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError, OSError, subprocess.TimeoutExpired) as e:
        return {"torch": None, "device_count": 0, "gpus": [], "arch_list": [], "error": f"the GPU probe failed ({e})"}
    libraries_ok = all((found.get(lib) or {"ok": True}).get("ok") for lib in ("xformers", "bitsandbytes"))
    if kept is not None and found.get("gpus") and "error" not in found and libraries_ok:
        atomic_write_text(kept, json.dumps(found))  # only a healthy answer: a fix must not meet a stale failure
    return found


def _probe_key(imports_only: bool, run) -> str | None:
    """What a probe's answer depends on, hashed; None without nvidia-smi (no GPUs to name: no caching)."""
    try:
        smi = run(["nvidia-smi", "-L"], timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if smi.returncode != 0 or not smi.stdout.strip():
        return None
    parts = [sys.executable, str(imports_only), os.environ.get("CUDA_VISIBLE_DEVICES", "-"), smi.stdout.strip()]
    for dist in ("torch", "xformers", "bitsandbytes"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist} -")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def gpus(found: dict) -> list[Gpu] | None:
    """The visible CUDA GPUs in a probe's answer, or None when torch is not installed."""
    if found.get("torch") is None:
        return None
    return [Gpu(g["index"], g["name"], g["memory_gb"], tuple(g["capability"])) for g in found["gpus"]]


def check_gpus(found: list[Gpu] | None, arch_list: list[str]) -> list[Finding]:
    if found is None:
        return [Finding(WARN, "gpu", "torch not installed",
                        "use the bespoke image, or `make kohya-env` for a local environment")]
    if not found:
        return [Finding(WARN, "gpu", "no CUDA GPU visible",
                        "run on a GPU pod (docker run --gpus all); only `bespoke smoke-test` trains on CPU")]
    out = [Finding(OK, "gpu", f"{len(found)} GPU(s): " + ", ".join(f"{g.name} {g.memory_gb:.0f} GiB" for g in found))]
    for g in found:
        sm = f"sm_{g.capability[0]}{g.capability[1]}"
        if g.capability < (8, 0):
            out.append(Finding(ERROR, "gpu", f"GPU {g.index} ({g.name}, {sm}) has no bf16",
                               "use an Ampere or newer GPU, or --set mixed_precision=fp16"))
        if not runs_on(g.capability, arch_list):
            out.append(Finding(ERROR, "gpu", f"this torch was built for {', '.join(arch_list)}, not {g.name} ({sm})",
                               "use the bespoke image (torch built for CUDA 12.8, which covers Blackwell)"))
    return out


def compiler_problem(environ: dict | None = None, include: str | None = None) -> str | None:
    """What torch.compile's Triton kernels lack to build here: a C compiler and Python's headers."""
    env = os.environ if environ is None else environ
    cc = env.get("CC") or shutil.which("cc", path=env.get("PATH")) or shutil.which("gcc", path=env.get("PATH"))
    include = include or sysconfig.get_paths()["include"]
    missing = [what for what, ok in (("a C compiler (cc/gcc)", cc), ("Python.h (" + include + ")",
                                     Path(include, "Python.h").is_file())) if not ok]
    return " and ".join(missing) if missing else None


# What inductor's C++ kernel launcher includes (torch/csrc/inductor/aoti_runtime/utils_cuda.h, with the crt/
# headers cuda_runtime.h needs and the CCCL one cuda_fp16.h needs): CUDA's headers, which pip's torch lacks.
CUDA_HEADERS = ("cuda.h", "cuda_runtime.h", "crt/host_config.h", "cuda_bf16.h", "cuda_fp8.h", "nv/target")


def cuda_home(environ: dict | None = None, default: str = "/usr/local/cuda") -> Path | None:
    """Where torch looks for the CUDA toolkit (torch.utils.cpp_extension._find_cuda_home)."""
    env = os.environ if environ is None else environ
    home = env.get("CUDA_HOME") or env.get("CUDA_PATH")
    if not home:
        nvcc = shutil.which("nvcc", path=env.get("PATH"))
        home = str(Path(nvcc).resolve().parent.parent) if nvcc else default
        if not Path(home).exists():
            return None
    return Path(home)


def cpp_launcher_problem(environ: dict | None = None, default_home: str = "/usr/local/cuda") -> str | None:
    """What the fast profile's C++ kernel launcher (inductor's cpp_wrapper) lacks here: a C++ compiler and
    CUDA's headers. Without them fast launches its kernels from Python (bench/RESULTS.md: ~1.2x slower)."""
    env = os.environ if environ is None else environ
    path = env.get("PATH")
    missing = []
    if not (env.get("CXX") or shutil.which("c++", path=path) or shutil.which("g++", path=path)):
        missing.append("a C++ compiler (c++/g++)")
    home = cuda_home(env, default_home)
    dirs = [home / "include"] if home else []
    dirs += [Path(env["CUDA_INC_PATH"])] if env.get("CUDA_INC_PATH") else []
    absent = [h for h in CUDA_HEADERS if not any((d / h).is_file() for d in dirs)]
    if absent:
        where = ", ".join(map(str, dirs)) or "no CUDA_HOME"
        missing.append(f"CUDA's headers ({', '.join(absent)}; looked in {where})")
    return " and ".join(missing) if missing else None


def check_profile(profile, found: list[Gpu] | None, compiler: str | None, why: str | None = None,
                  cpp_launcher: str | None = None) -> list[Finding]:
    """A speed profile's own needs: a compiler for the compiled one, GPU memory for its measured peak."""
    out = []
    if profile.compiles and compiler:
        out.append(Finding(ERROR, "profile", f"{profile.name} compiles GPU kernels with Triton, which needs {compiler}",
                           "install gcc and python3-dev (the image has both), set BESPOKE_COMPILE=off, "
                           "or use --profile exact"))
    elif profile.compiles and cpp_launcher:
        out.append(Finding(WARN, "profile", f"{profile.name} will launch its kernels from Python, ~1.2x slower "
                           f"than from C++, which needs {cpp_launcher}",
                           "install g++ and CUDA's dev headers (cuda-cudart-dev, cuda-crt, cuda-driver-dev, "
                           "cuda-cccl; the image has them), or leave it"))
    for g in found or []:
        if not profile.fits(g.memory_gb):
            out.append(Finding(WARN, "profile", f"{profile.name} needs up to {profile.peak_gib} GiB (measured on H100/H200s); GPU "
                               f"{g.index} ({g.name}) has {g.memory_gb:.0f} GiB and may run out of memory",
                               f"use --profile lean (22 GB) or exact ({profiles.get('exact').peak_gib} GiB)"
                               if profile.name == "fast" else f"use --profile exact ({profiles.get('exact').peak_gib} GiB)"))
    if not out:
        out.append(Finding(OK, "profile", f"{profile.name}: {profile.note}" + (f" ({why})" if why else "")
                           + (f"; expected {profile.expected}" if profile.expected else "")))
    return out


def runs_on(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether kernels built for `arch_list` run on a GPU: an sm_XY binary runs on the same major
    with a minor >= Y; compute_XY (PTX) is JIT-compiled for any newer GPU."""
    major, minor = capability
    for arch in arch_list:
        kind, _, num = arch.partition("_")
        n = int(num.rstrip("af"))
        if kind == "sm" and n // 10 == major and n % 10 <= minor:
            return True
        if kind == "compute" and n <= major * 10 + minor:
            return True
    return False


def check_libraries(found: dict, gpu_present: bool) -> list[Finding]:
    """xformers and bitsandbytes import, and on a GPU each ran one tiny kernel (in the probe): a broken
    CUDA setup often imports fine and fails at the first step."""
    out = []
    xf = found.get("xformers") or {"ok": False, "error": "torch not installed"}
    if xf["ok"]:
        out.append(Finding(OK, "xformers", f"xformers {xf['version']}" + (" (attention ran)" if xf.get("ran") and gpu_present else "")))
    else:
        out.append(Finding(WARN, "xformers", f"xformers not usable ({xf['error']})"[:200],
                           "training uses --sdpa instead (same math, PyTorch attention)"))
    bnb = found.get("bitsandbytes") or {"ok": False, "error": "torch not installed"}
    if bnb["ok"]:
        out.append(Finding(OK, "bitsandbytes", f"bitsandbytes {bnb['version']}" + (" (AdamW8bit ran)" if bnb.get("ran") else "")))
    else:
        out.append(Finding(ERROR if gpu_present else WARN, "bitsandbytes", f"bitsandbytes not usable ({bnb['error']})"[:200],
                           "AdamW8bit needs it: use the bespoke image, or pip install -r requirements/sd-scripts.txt"))
    return out
