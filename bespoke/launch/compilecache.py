"""torch.compile's work kept as one file on the volume: torch's portable cache artifacts.

Inductor's own cache (TORCHINDUCTOR_CACHE_DIR, on the volume) already spares a resumed run the kernel builds.
The artifacts are the same results (inductor's FX graphs and kernels, AOTAutograd's graphs) in one blob,
which `torch.compiler.load_cache_artifacts` puts into any cache directory before the first compile: a copy of
the file is enough to warm a fresh pod's empty cache. The file is named by what the kernels depend on (torch,
CUDA, the GPUs, the compile settings) and kept with its sha256; each cache entry inside it is guarded by
inductor's own keys too. A missing, damaged or foreign file is a cold compile, never a failure.

    <TORCHINDUCTOR_CACHE_DIR>/bespoke-artifacts/<key>.bin  and  <key>.sha256

Loaded when the fast profile's launcher patches (before any compile), saved by the first process when it
exits (the artifacts are what this process compiled or loaded; a run killed before then saves nothing, and
a run that ended before it compiled more than it loaded keeps the file as it was).

Only with kernels launched from Python (BESPOKE_CPP_WRAPPER=0). Inductor's cached C++ launchers name their
kernels' files by absolute path: restored from the artifacts into an empty cache they failed at the first
step with "CUDA driver error: file not found" (H200, torch 2.11, 2026-11-29, bench/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from bespoke.fsutil import atomic_write_bytes, atomic_write_text

FOLDER = "bespoke-artifacts"
NOT_WITH_CPP = ("compile artifacts not used: with kernels launched from C++ they do not restore (torch names "
                "the kernel files by path); the volume's compile cache warms the next start")
_loaded = 0  # entries this process loaded from the file: a save with no more than these keeps the file


def key(settings: dict) -> str:
    """What compiled kernels depend on beyond the graph itself: torch and its CUDA, the GPU model and count,
    `settings`."""
    import torch

    gpu = "cpu"
    if torch.cuda.is_available():  # this process's GPU only: a pod's GPUs are one model, and no other is touched
        p = torch.cuda.get_device_properties(int(os.environ.get("LOCAL_RANK", 0)))
        gpu = [p.name, p.major, p.minor, torch.cuda.device_count()]
    facts = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": gpu, **settings}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def path_for(settings: dict, cache_dir: str | None = None) -> Path | None:
    cache_dir = cache_dir or os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return Path(cache_dir) / FOLDER / f"{key(settings)}.bin" if cache_dir else None


def load(path: Path | None) -> str:
    """Warm this process's compile cache from `path`; says what happened, in one line."""
    import torch

    if path is None or not path.is_file():
        return "no compile artifacts yet: a cold compile, saved for the next start"
    data = path.read_bytes()
    digest = path.with_suffix(".sha256")
    if not digest.is_file() or digest.read_text().strip() != hashlib.sha256(data).hexdigest():
        return f"compile artifacts {path.name} do not match their sha256: ignored, a cold compile"
    try:
        info = torch.compiler.load_cache_artifacts(data)
    except Exception as e:  # a foreign or older torch's blob: the cache is an optimization, never a failure
        return f"compile artifacts {path.name} not loaded ({type(e).__name__}: {e}): a cold compile"
    global _loaded
    n = _loaded = sum(len(v) for v in info.artifacts.values()) if info is not None else 0
    return f"compile artifacts loaded: {n} entries from {path.name} ({len(data) / 1e6:.1f} MB)"


def save(path: Path | None) -> str:
    """Write what this process compiled (or loaded) to `path`, atomically, with its sha256."""
    import torch

    if path is None:
        return "no TORCHINDUCTOR_CACHE_DIR: compile artifacts not kept"
    got = torch.compiler.save_cache_artifacts()
    if not got or not got[0]:
        return "no compile artifacts to keep"
    data, info = got
    n = sum(len(v) for v in info.artifacts.values())
    if path.is_file() and n <= _loaded:  # e.g. a run that failed at its first step: keep the fuller file
        return f"compile artifacts kept as they were: this process added nothing to the {_loaded} loaded"
    atomic_write_bytes(path, data)
    atomic_write_text(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest() + "\n")
    return f"compile artifacts saved: {n} entries in {path} ({len(data) / 1e6:.1f} MB)"


def first_process() -> bool:
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"
