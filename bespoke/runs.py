"""One training run in $WS/output: its identity, resume from saved state, and DONE.json.

A run is identified by its key: the sd-scripts arguments (less --resume) and the dataset hash. The
same key resumes or is a no-op when done; a different key never overwrites a run: --force archives it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bespoke.errors import BespokeError
from bespoke.fsutil import atomic_write_json, sha256_file

RUN_FILE = "run.json"
DONE_FILE = "DONE.json"
# What accelerate's save_state and kohya's hook leave in a finished state folder.
STATE_FILES = ("train_state.json", "optimizer.bin", "scheduler.bin", "random_states_0.pkl")


def run_key(argv: list[str], dataset_hash: str) -> str:
    stable = [a for a in argv if not a.startswith("--resume")]
    return hashlib.sha256(json.dumps([stable, dataset_hash]).encode()).hexdigest()


def state_complete(path: Path) -> bool:
    return all((path / f).is_file() for f in STATE_FILES) and any(path.glob("model*.safetensors"))


def states(output: Path, output_name: str) -> list[tuple[int, Path]]:
    """Complete per-epoch state folders, oldest first."""
    pat = re.compile(rf"^{re.escape(output_name)}-(\d{{6}})-state$")
    found = []
    for p in Path(output).glob(f"{output_name}-*-state"):
        m = pat.match(p.name)
        if m and p.is_dir() and state_complete(p):
            found.append((int(m[1]), p))
    return sorted(found)


def epoch_file(output: Path, output_name: str, epoch: int, epochs: int, ext: str = ".safetensors") -> Path:
    """kohya names every epoch but the last `<name>-NNNNNN`; the last is `<name>`."""
    name = output_name if epoch == epochs else f"{output_name}-{epoch:06d}"
    return Path(output) / f"{name}{ext}"


@dataclass
class Plan:
    action: str  # "fresh", "resume" or "done"
    state: Path | None = None
    state_epoch: int = 0
    note: str = ""


def plan(output: Path, key: str, output_name: str, force: bool = False) -> Plan:
    output = Path(output)
    done = _read(output / DONE_FILE)
    run = _read(output / RUN_FILE)
    previous = done or run
    if previous is not None and previous.get("run_key") != key:
        kind = "finished" if done else "unfinished"
        if not force:
            raise BespokeError(
                f"{output} holds a {kind} run with a different recipe or data",
                str(output / (DONE_FILE if done else RUN_FILE)),
                "rerun with --force to move it to $WS/archive/ and start fresh (nothing is deleted)",
            )
        archive(output)
        return Plan("fresh", note=f"archived the previous {kind} run")
    if done is not None:
        return Plan("done", note=f"already trained: {output / DONE_FILE}")
    found = states(output, output_name)
    if found:
        epoch, path = found[-1]
        return Plan("resume", path, epoch, f"resuming from epoch {epoch} ({path.name})")
    return Plan("fresh")


def archive(output: Path) -> Path:
    output = Path(output)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = output.parent / "archive" / f"output-{stamp}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(output, dest)
    output.mkdir()
    preview = dest / "dataset-preview.png"  # it shows the data, not the archived run: keep it in place
    if preview.exists():
        shutil.copy2(preview, output / preview.name)
    return dest


def start(output: Path, key: str, info: dict) -> None:
    atomic_write_json(Path(output) / RUN_FILE, {"run_key": key, "started_at": time.time(), **info})


def saved_epochs(epochs: int, every: int = 1) -> list[int]:
    """The epochs sd-scripts writes a LoRA for: every `every`-th (save_every_n_epochs) and the last."""
    return sorted({e for e in range(1, epochs + 1) if e % max(every, 1) == 0} | {epochs})


def finish(output: Path, key: str, output_name: str, epochs: int, info: dict, every: int = 1) -> dict:
    """Check each saved epoch's LoRA, give the last the notes' numbered name too, write DONE.json."""
    output = Path(output)
    files = []
    for e in saved_epochs(epochs, every):
        f = epoch_file(output, output_name, e, epochs)
        if not f.is_file():
            raise BespokeError(f"sd-scripts finished but epoch {e}'s LoRA is missing", str(f),
                               "see the training log; rerun with --force to train again")
        files.append({"epoch": e, "file": f.name, "sha256": sha256_file(f), "bytes": f.stat().st_size})
    last = output / f"{output_name}-{epochs:06d}.safetensors"
    if not last.exists():
        try:
            os.link(epoch_file(output, output_name, epochs, epochs), last)  # same bytes, no extra disk
        except OSError:
            shutil.copy2(epoch_file(output, output_name, epochs, epochs), last)
    done = {"run_key": key, "finished_at": time.time(), "epochs": files, **info}
    atomic_write_json(output / DONE_FILE, done)
    return done


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
