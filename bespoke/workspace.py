"""The workspace: the one owner of bespoke's on-disk layout, its cache environment, containment and lock.

Every stage and the entrypoint take a `Workspace`; no other module joins a workspace path from a
string. The layout, under the root (`/workspace` in the container, `--workspace` / `BESPOKE_WORKSPACE`):

    dataset/                  the user's images and captions (one of the default inputs)
    runpod_package/training_data/   the other default input, the user's RunPod upload
    training_data/            prepare's layout: <repeats>_<concept>/ with bespoke's manifest
    output/                   sd-scripts' output_dir: the epoch LoRAs and their training state
        status.json run.json DONE.json sample-prompts.txt dataset-preview.png best.safetensors
        logs/                 the training logs, TensorBoard's events, loss.jsonl
        sample/               kohya's per-epoch samples
        report/               evaluate's report.html, report.json, contact-sheet.png, sprites/
    archive/                  runs that --force moved aside
    .cache/                   every ML library's cache (CACHE_VARS), the tokenizers, the GPU probe's answer
    .bespoke.lock             the workspace lock: one bespoke prepare/train/evaluate/run at a time

Use it as:

    ws = Workspace(path)          # or Workspace.of(path_or_workspace)
    ws.training_data, ws.output, ws.status, ws.done_file, ws.logs, ws.samples, ws.report ...
    ws.cache_env()                # the cache variables under ws/.cache, keeping those the user set
    ws.contains(path)             # True when path resolves inside the workspace
    with ws.lock("train"): ...    # exclusive; another holder is refused in one line (errors.LockedError)

A `Workspace` is frozen and names paths only: nothing here writes, except `apply_cache_env` (to the
environment it is given) and `lock` (its lock file).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bespoke import proc
from bespoke.errors import LockedError

DEFAULT_ROOT = "/workspace"
LOCK_FILE = ".bespoke.lock"
RUN_FILE = "run.json"
DONE_FILE = "DONE.json"

# Every cache that ML libraries write, relative to the workspace (the notes' full root disk).
CACHE_VARS = {
    "HF_HOME": ".cache/huggingface",
    "HF_HUB_CACHE": ".cache/huggingface/hub",
    "TRANSFORMERS_CACHE": ".cache/huggingface/hub",
    "HF_DATASETS_CACHE": ".cache/huggingface/datasets",
    "TORCH_HOME": ".cache/torch",
    "XDG_CACHE_HOME": ".cache",
    "TRITON_CACHE_DIR": ".cache/triton",
    "TORCHINDUCTOR_CACHE_DIR": ".cache/torchinductor",  # compiled kernels: a resumed fast run reuses them
}


@dataclass(frozen=True)
class Workspace:
    """The workspace rooted at `root`, and every path bespoke reads or writes in it."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of(cls, where: Workspace | str | os.PathLike) -> Workspace:
        return where if isinstance(where, Workspace) else cls(Path(where))

    def __str__(self) -> str:
        return str(self.root)

    def __fspath__(self) -> str:
        return str(self.root)

    # --- inputs ----------------------------------------------------------------------------------
    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def runpod_data(self) -> Path:
        return self.root / "runpod_package" / "training_data"

    def zips(self) -> list[Path]:
        return sorted(self.root.glob("*.zip"))

    # --- prepare ---------------------------------------------------------------------------------
    @property
    def training_data(self) -> Path:
        return self.root / "training_data"

    def concept_folder(self, repeats: int, concept: str) -> Path:
        """kohya's <repeats>_<concept>/ folder in training_data/."""
        return self.training_data / f"{repeats}_{concept}"

    def build_dir(self, pid: int) -> Path:
        """Where prepare builds a new layout before it replaces training_data/ in one rename."""
        return self.root / f".training_data.build-{pid}"

    def old_dir(self, pid: int) -> Path:
        """Where the previous training_data/ waits while the new one takes its place."""
        return self.root / f".training_data.old-{pid}"

    # --- train -----------------------------------------------------------------------------------
    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def logs(self) -> Path:
        return self.output / "logs"

    @property
    def loss(self) -> Path:
        return self.logs / "loss.jsonl"

    def train_log(self, stamp: str) -> Path:
        return self.logs / f"train-{stamp}.log"

    @property
    def samples(self) -> Path:
        return self.output / "sample"

    @property
    def status(self) -> Path:
        return self.output / "status.json"

    @property
    def run_file(self) -> Path:
        return self.output / RUN_FILE

    @property
    def done_file(self) -> Path:
        return self.output / DONE_FILE

    @property
    def sample_prompts(self) -> Path:
        return self.output / "sample-prompts.txt"

    @property
    def preview(self) -> Path:
        return self.output / "dataset-preview.png"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    # --- evaluate --------------------------------------------------------------------------------
    @property
    def report(self) -> Path:
        return self.output / "report"

    @property
    def best(self) -> Path:
        return self.output / "best.safetensors"

    @property
    def board(self) -> Path:
        """bespoke's own TensorBoard run beside sd-scripts' (bespoke.tblog)."""
        return self.logs / "bespoke"

    @property
    def model_card(self) -> Path:
        """The Hub's README.md for the run, written by `bespoke publish` and uploaded with it."""
        return self.output / "README.md"

    # --- caches ----------------------------------------------------------------------------------
    @property
    def cache(self) -> Path:
        return self.root / ".cache"

    @property
    def tokenizers(self) -> Path:
        """The CLIP tokenizers' folder when the image does not bake them (tokens.default_dir)."""
        return self.cache / "tokenizers"

    @property
    def probe_cache(self) -> Path:
        """Where the GPU probe's answer is kept between runs (preflight.probe)."""
        return self.cache / "bespoke"

    @property
    def tiny_model(self) -> Path:
        """The smoke test's tiny SDXL checkpoint."""
        return self.cache / "tiny-sdxl" / "tiny_sdxl.safetensors"

    @property
    def cuda_cache(self) -> Path:
        """The CUDA driver's JIT cache (CUDA_CACHE_PATH)."""
        return self.cache / "nv"

    @property
    def home(self) -> Path:
        """A writable HOME for a container user whose own HOME is not."""
        return self.cache / "home"

    def cache_env(self, environ: dict | None = None) -> dict[str, str]:
        """Every cache variable under the workspace, keeping any the user set."""
        environ = os.environ if environ is None else environ
        return {var: environ.get(var) or str(self.root / sub) for var, sub in CACHE_VARS.items()}

    @property
    def hub_cache(self) -> Path:
        return Path(self.cache_env()["HF_HUB_CACHE"])

    def apply_cache_env(self, environ: dict | None = None) -> list[tuple[str, str]]:
        """Set every cache variable in `environ` (os.environ by default); returns the (name, value) of
        those the user set outside the workspace."""
        environ = os.environ if environ is None else environ
        strays = []
        for var, value in Workspace(self.root.resolve()).cache_env(environ).items():
            environ[var] = value
            if not self.contains(value):
                strays.append((var, value))
        return strays

    # --- containment -----------------------------------------------------------------------------
    def contains(self, path: str | os.PathLike) -> bool:
        """True when `path` (relative paths are taken from the root) resolves to the root or inside it,
        symlinks followed."""
        root = self.root.resolve()
        p = (self.root / path).resolve()
        return p == root or root in p.parents

    # --- the lock --------------------------------------------------------------------------------
    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_FILE

    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the workspace for `command` (prepare, train, evaluate, run): an exclusive flock on the lock
        file, so a second bespoke on the same workspace is refused in one line naming the holder's PID and
        start time. The kernel drops the lock when its process ends, however it ends: a lock file left by a
        dead process never blocks. The training a holder starts (bespoke.proc.spawn) holds it too, so a
        bespoke killed mid-run leaves the workspace locked until its training ends, not open to a second
        one. Re-entrant within one process (run holds it through its stages)."""
        path = self.lock_file
        key = os.path.realpath(path)
        if key in _HELD:
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(f"the workspace is in use by {_holder(fd)}", str(self.root),
                                  "one bespoke per workspace: wait for it to finish, or stop that process and "
                                  "the training it started (a lock of processes that have ended never blocks)") from None
            holder = json.dumps({"pid": os.getpid(), "command": command, "started_at": time.time()})
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode() + b"\n", 0)
            _HELD[key] = 1
            proc.INHERITED.add(fd)
            try:
                yield
            finally:
                proc.INHERITED.discard(fd)
                del _HELD[key]
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the flock


_HELD: dict[str, int] = {}  # lock files this process holds, and how deep


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it exists
        return True
    return True


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it: `bespoke train (PID 123, started 2026-11-29 17:40:01 UTC)`."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(info["started_at"])))
        pid = int(info["pid"])
        said = f"bespoke {info.get('command', '?')} (PID {pid}, started {started})"
        return said if _alive(pid) else f"the training started by {said}, which has itself ended"
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return "another bespoke process (it has not written its PID yet)"
