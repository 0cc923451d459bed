"""The compiled-kernel caches on the volume (inductor's and Triton's): used only where they were written.

Inductor's cached C++ launchers (the fast profile's default, BESPOKE_CPP_WRAPPER) name their kernel files by
absolute path, in Triton's cache. A cache copied or mounted at another path, or one whose Triton half was
deleted, fails at the first step with "CUDA driver error: file not found" (H200, torch 2.11, 2026-11-29,
bench/RESULTS.md). So before a compiling run: where the caches were written at another path, came from an
older bespoke that did not say where, or inductor's is there without Triton's, both are emptied (a cold
compile, said in one line) and the path is recorded. The portable artifacts folder (bespoke/launch/
compilecache.py) is kept: it is what moves.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bespoke.fsutil import atomic_write_text, read_json_object

MARK = "bespoke-location.json"
KEEP = {MARK, "bespoke-artifacts"}


def _entries(folder: Path, keep: set[str] = frozenset()) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.name not in keep]
    except OSError:
        return []


def prepare(inductor_dir: str | Path, triton_dir: str | Path) -> str | None:
    """Empty the two caches when they cannot be used here, then record where they are. Returns the line to
    show when they were emptied, else None."""
    inductor, triton = Path(inductor_dir), Path(triton_dir)
    here = {"inductor": str(inductor.resolve()), "triton": str(triton.resolve())}
    stale = _entries(inductor, KEEP)
    reason = None
    if stale:
        was = read_json_object(inductor / MARK)
        if was is None:
            reason = "it does not say where it was written"
        elif was != here:
            reason = f"it was written at {was.get('inductor')}, and its kernels are named by that path"
        elif not _entries(triton):
            reason = f"Triton's half of it is gone ({triton})"
    if reason:
        for p in stale:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        shutil.rmtree(triton, ignore_errors=True)
    inductor.mkdir(parents=True, exist_ok=True)
    atomic_write_text(inductor / MARK, json.dumps(here, sort_keys=True) + "\n")
    if reason:
        return f"compile cache emptied ({inductor}): {reason}; this start compiles from scratch (1-6 min)"
    return None
