"""One training run in the workspace's output: its identity, resume from saved state, and DONE.json.

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
from bespoke.fsutil import atomic_write_json, read_json_object, sha256_file
from bespoke.workspace import Workspace

# What accelerate's save_state and kohya's hook leave in a finished state folder.
STATE_FILES = ("train_state.json", "optimizer.bin", "scheduler.bin", "random_states_0.pkl")


def run_key(argv: list[str], dataset_hash: str) -> str:
    # The LoRA's metadata says what the run is; it does not change the training, so it is not its identity.
    stable = [a for a in argv if not a.startswith(("--resume", "--metadata_"))]
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


def numbered_file(output: Path, output_name: str, epoch: int, ext: str = ".safetensors") -> Path:
    """`<name>-NNNNNN`: kohya's name for every epoch but the last, and the notes' name for the last too."""
    return Path(output) / f"{output_name}-{epoch:06d}{ext}"


def epoch_file(output: Path, output_name: str, epoch: int, epochs: int, ext: str = ".safetensors") -> Path:
    """The file kohya writes for `epoch` of `epochs`: numbered, except the last, which is `<name>`."""
    return Path(output) / f"{output_name}{ext}" if epoch == epochs else numbered_file(output, output_name, epoch, ext)


@dataclass(frozen=True)
class Plan:
    action: str  # "fresh", "resume" or "done"
    state: Path | None = None
    state_epoch: int = 0
    note: str = ""
    archive: bool = False  # --force: move the different run in the way to the archive first


def plan(ws: Workspace, key: str, output_name: str, force: bool = False) -> Plan:
    """What this run does: start fresh, resume from the newest complete state, or nothing (done). A
    different run in the way is refused, or with `force` marked to be archived first. Reads only."""
    output = ws.output
    done = read_json_object(ws.done_file)
    run = read_json_object(ws.run_file)
    previous = done or run
    if previous is not None and previous.get("run_key") != key:
        kind = "finished" if done else "unfinished"
        if not force:
            raise BespokeError(
                f"{output} holds a {kind} run with a different recipe or data",
                str(ws.done_file if done else ws.run_file),
                "rerun with --force to move it to $WS/archive/ and start fresh (nothing is deleted)",
            )
        return Plan("fresh", archive=True, note=f"archiving the previous {kind} run (--force)")
    if done is not None:
        return Plan("done", note=f"already trained: {ws.done_file}")
    found = states(output, output_name)
    if found:
        epoch, path = found[-1]
        return Plan("resume", path, epoch, f"resuming from epoch {epoch} ({path.name})")
    return Plan("fresh")


def archive(ws: Workspace) -> Path:
    """Move the output folder to the workspace's archive, keeping the data's preview in place."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = ws.archive / f"{ws.output.name}-{stamp}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(ws.output, dest)
    ws.output.mkdir()
    preview = dest / ws.preview.name  # it shows the data, not the archived run: keep it in place
    if preview.exists():
        shutil.copy2(preview, ws.preview)
    return dest


def start(ws: Workspace, key: str, info: dict) -> None:
    atomic_write_json(ws.run_file, {"run_key": key, "started_at": time.time(), **info})


def saved_epochs(epochs: int, every: int = 1) -> list[int]:
    """The epochs sd-scripts writes a LoRA for: every `every`-th (save_every_n_epochs) and the last."""
    return sorted({e for e in range(1, epochs + 1) if e % max(every, 1) == 0} | {epochs})


def finish(ws: Workspace, key: str, output_name: str, epochs: int, info: dict, every: int = 1) -> dict:
    """Check each saved epoch's LoRA, give the last the notes' numbered name too, write DONE.json."""
    output = ws.output
    files = []
    for e in saved_epochs(epochs, every):
        f = epoch_file(output, output_name, e, epochs)
        if not f.is_file():
            raise BespokeError(f"sd-scripts finished but epoch {e}'s LoRA is missing", str(f),
                               "see the training log; rerun with --force to train again")
        files.append({"epoch": e, "file": f.name, "sha256": sha256_file(f), "bytes": f.stat().st_size})
    last = numbered_file(output, output_name, epochs)
    if not last.exists():
        try:
            os.link(epoch_file(output, output_name, epochs, epochs), last)  # same bytes, no extra disk
        except OSError:
            shutil.copy2(epoch_file(output, output_name, epochs, epochs), last)
    done = {"run_key": key, "finished_at": time.time(), "epochs": files, **info}
    atomic_write_json(ws.done_file, done)
    return done


def read_done(ws: Workspace) -> dict | None:
    """DONE.json of a finished run, or None."""
    return read_json_object(ws.done_file)

