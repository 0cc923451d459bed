"""kohya sd-scripts: find it at the pinned commit, build the accelerate launch, run and follow it.

sd-scripts runs unmodified. Every process start goes through bespoke.proc.spawn.
"""

from __future__ import annotations

import os
import re
import select
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bespoke import masking, proc
from bespoke.errors import BespokeError
from bespoke.preflight import ERROR, OK, WARN, Finding
from bespoke.progress import Follower

ENV_DIR = "SD_SCRIPTS_DIR"
DEFAULT_DIR = "/opt/sd-scripts"  # where the image keeps it
SCRIPT = "sdxl_train_network.py"
COMMIT_FILE = ".bespoke-commit"
UPSTREAM = "https://github.com/kohya-ss/sd-scripts"


def pinned_commit() -> str:
    return resources.files("bespoke").joinpath("SD_SCRIPTS_COMMIT").read_text().strip()


@dataclass(frozen=True)
class SdScripts:
    path: Path
    commit: str | None

    @property
    def script(self) -> Path:
        return self.path / SCRIPT


def locate(environ: dict | None = None) -> SdScripts:
    path = default_dir(environ).absolute()  # the child runs with sd-scripts as its cwd
    if not (path / SCRIPT).is_file():
        raise BespokeError(
            "kohya sd-scripts not found", str(path),
            f"run `make sd-scripts` (clones {UPSTREAM} at the pinned commit) and set {ENV_DIR}, "
            f"or use the bespoke image, which has it in {DEFAULT_DIR}",
        )
    return SdScripts(path, commit_of(path))


def default_dir(environ: dict | None = None) -> Path:
    """SD_SCRIPTS_DIR, else where the image keeps sd-scripts."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(ENV_DIR) or DEFAULT_DIR)


def commit_of(path: Path) -> str | None:
    """The commit of an sd-scripts folder: git's HEAD in a checkout, else the .bespoke-commit that
    `make sd-scripts` and the image write beside it."""
    path = Path(path)
    if (path / ".git").exists():
        r = proc.run(["git", "-C", str(path), "rev-parse", "HEAD"])
        if r.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", r.stdout.strip()):
            return r.stdout.strip()
    f = path / COMMIT_FILE
    return f.read_text().strip() if f.is_file() else None


@dataclass(frozen=True)
class Pin:
    """Whether an sd-scripts folder is the one bespoke is pinned to: the one pin check (check, the
    entrypoint's survey, the image's verify and the launchers' patch helper all ask this)."""

    path: Path
    present: bool
    commit: str | None
    pin: str

    @property
    def ok(self) -> bool:
        return self.present and self.commit == self.pin

    def problem(self) -> str | None:
        if not self.present:
            return f"sd-scripts is not in {self.path} (no {SCRIPT})"
        if self.commit is None:
            return f"{self.path}: commit unknown (no git checkout, no {COMMIT_FILE})"
        if self.commit != self.pin:
            return f"{self.path} is at {self.commit}, bespoke pins {self.pin}"
        return None


def pin_check(path: Path, pin: str | None = None) -> Pin:
    path = Path(path)
    present = (path / SCRIPT).is_file()
    return Pin(path, present, commit_of(path) if present else None, pin or pinned_commit())


def check(environ: dict | None = None) -> list[Finding]:
    try:
        sd = locate(environ)
    except BespokeError as e:
        return [Finding(ERROR, "sd-scripts", f"{e.what} ({e.where})", e.fix or "")]
    pin = pin_check(sd.path)
    if pin.commit is None:
        return [Finding(WARN, "sd-scripts", pin.problem(),
                        f"write the commit into {sd.path / COMMIT_FILE}, or `make sd-scripts`")]
    if not pin.ok:
        return [Finding(WARN, "sd-scripts", f"{sd.path} is at {pin.commit[:12]}, bespoke pins {pin.pin[:12]}",
                        f"git -C {sd.path} checkout {pin.pin}")]
    return [Finding(OK, "sd-scripts", f"{sd.path} at the pinned commit {pin.pin[:12]}")]


# --- the launch command --------------------------------------------------------------------------

@dataclass(frozen=True)
class Machines:
    """accelerate's multi-node settings; one machine unless told otherwise."""

    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None


def launch_argv(script: Path | str, recipe_argv: list[str], gpus: int, *, mixed_precision: str = "bf16",
                python: str = sys.executable, machines: Machines | None = None) -> list[str]:
    """`accelerate launch` for every visible GPU (CPU mode when there is none)."""
    machines = machines or Machines()
    argv = [python, "-m", "accelerate.commands.launch", "--dynamo_backend", "no"]
    if gpus <= 0:
        argv += ["--cpu", "--num_processes", "1", "--num_cpu_threads_per_process", str(os.cpu_count() or 1)]
    else:
        argv += ["--num_processes", str(gpus * machines.num_machines)]
        if gpus * machines.num_machines > 1:
            argv.append("--multi_gpu")
    argv += ["--num_machines", str(machines.num_machines), "--mixed_precision", mixed_precision]
    if machines.num_machines > 1:
        argv += ["--machine_rank", str(machines.machine_rank)]
        if machines.main_process_ip:
            argv += ["--main_process_ip", machines.main_process_ip]
        if machines.main_process_port:
            argv += ["--main_process_port", str(machines.main_process_port)]
    return argv + [str(script), *recipe_argv]


def shell_line(argv: list[str], env: dict[str, str] | None = None) -> str:
    import shlex

    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    return (prefix + " " if prefix else "") + shlex.join(argv)


# --- known failures ------------------------------------------------------------------------------

# (pattern in the log, what it means, the fix). Checked newest line first.
KNOWN_ERRORS: tuple[tuple[re.Pattern, str, str], ...] = tuple(
    (re.compile(p, re.I), what, fix) for p, what, fix in (
        (r"No space left on device|Errno 28", "the disk is full",
         "free space on the volume (bespoke check prints the disk table), or --set save_precision=bf16"),
        (r"CUDA out of memory|OutOfMemoryError", "the GPU ran out of memory",
         "keep gradient_checkpointing on, --set train_batch_size=1, or use a GPU with more memory"),
        (r"No data found", "kohya found no images in train_data_dir",
         "run `bespoke prepare`; train_data_dir must hold one <repeats>_<concept>/ folder"),
        (r"NaN detected in latents", "the VAE produced NaN latents",
         "--set no_half_vae=true (SDXL's VAE overflows in half precision)"),
        (r"avr_loss=nan|loss is nan|NaN detected", "the loss became NaN",
         "lower the learning rate (--set unet_lr=0.00005) and check the images"),
        (r"xformers|memory_efficient_attention", "xformers is not available or does not match torch",
         "--set xformers=false --set sdpa=true, or use the bespoke image (xformers built for its torch)"),
        (r"bitsandbytes|libbitsandbytes|CUDA Setup failed", "bitsandbytes could not set up CUDA",
         "use the bespoke image (bitsandbytes built for its CUDA), or --set optimizer_type=AdamW"),
        (r"CppCompileError|CUDA_HOME environment variable is not set|cannot find -lcuda|fatal error: (cuda|nv/)",
         "the fast profile could not build its C++ kernel launcher",
         "rerun with BESPOKE_CPP_WRAPPER=0 (kernels launched from Python, ~1.2x slower), or --profile exact"),
        (r"InductorError|BackendCompilerFailed|torch\._dynamo\.exc\.", "the fast profile's torch.compile failed",
         "rerun with BESPOKE_COMPILE=off (fast without compiling) or --profile exact"),
        (r"(Can't load tokenizer|couldn't connect to 'https://huggingface.co'|LocalEntryNotFoundError|"
         r"offline mode is enabled|HF_HUB_OFFLINE)",
         "a tokenizer or model had to be downloaded while offline",
         "use the bespoke image (tokenizers baked in), or unset HF_HUB_OFFLINE with network access"),
    )
)


def _failure_scope(lines: list[str]) -> list[str]:
    """The lines that say why the child failed: its last traceback, without accelerate's wrapper
    traceback after it (CalledProcessError); the last 40 lines when there is no traceback."""
    wrapper = [i for i, line in enumerate(lines) if "CalledProcessError" in line]
    if wrapper:
        starts = [i for i, line in enumerate(lines[: wrapper[-1]]) if line.startswith("Traceback")]
        lines = lines[: starts[-1]] if starts else lines
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
    return lines[starts[-1]:] if starts else lines[-40:]


def explain(lines: list[str]) -> tuple[str, str] | None:
    """The known error behind a failed run: (what, fix), or None. Only the failure's own lines count: a
    start-up warning that mentions xformers must not explain a crash that has nothing to do with it."""
    for line in reversed(_failure_scope(lines)):
        for pattern, what, fix in KNOWN_ERRORS:
            if pattern.search(line):
                return what, fix
    return None


def last_error_line(lines: list[str]) -> str | None:
    """The child's own exception line; accelerate's CalledProcessError wrapper says nothing new."""
    for line in reversed(lines):
        if "CalledProcessError" in line or line.startswith(" "):
            continue
        if re.search(r"(Error|Exception|error:)", line):
            return line.strip()[:300]
    return None


# --- running -------------------------------------------------------------------------------------

@dataclass
class Outcome:
    exit_code: int
    interrupted_by: int | None
    tail: list[str]
    seconds: float


def follow(argv: list[str], env: dict[str, str], log_path: Path, follower: Follower, *, cwd: str | None = None,
           grace: float = 60.0, spawn=None, on_line=None) -> Outcome:
    """Run the child, tee its output to the console (through follower) and the log, forward signals.

    On SIGTERM/SIGINT the signal goes to the child's process group; after `grace` seconds it is killed.
    """
    spawn = spawn or proc.spawn
    start = time.time()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child = spawn(argv, env, cwd)
    received: list[int] = []
    received_at: list[float] = []

    def forward(signum, _frame):
        if not received:
            received.append(signum)
            received_at.append(time.time())
            follower.set(stage="interrupted", message=f"received {signal.Signals(signum).name}, stopping sd-scripts")
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    tail: deque[str] = deque(maxlen=200)
    fd = child.stdout.fileno()
    buf = b""
    secrets = masking.secret_values(env)

    def masked(raw: bytes) -> bytes:  # the child may print a token (its args, a URL): never kept or shown
        return masking.mask_text(raw.decode("utf-8", "surrogateescape"), secrets).encode("utf-8", "surrogateescape")

    def emit(raw: bytes) -> None:
        if raw.strip():
            line = masked(raw).decode("utf-8", "replace").rstrip()
            tail.append(line)
            follower.feed(line)
            if on_line is not None:
                on_line(line)

    try:
        with open(log_path, "ab") as log:
            while True:
                if received and time.time() - received_at[0] > grace:
                    _kill(child)
                ready, _, _ = select.select([fd], [], [], 0.5)
                if not ready:
                    if child.poll() is not None:
                        break
                    follower.idle()
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                *parts, buf = re.split(rb"([\r\n])", buf + chunk)  # lines and their separators
                for raw, sep in zip(parts[0::2], parts[1::2], strict=True):
                    log.write(masked(raw) + sep)
                    emit(raw)
                log.flush()
            log.write(masked(buf))
            emit(buf)
        code = child.wait()
        follower.flush()
    except BaseException:
        _kill(child)  # a hook raised (or we were interrupted hard): never leave sd-scripts running
        child.wait()
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return Outcome(code, received[0] if received else None, list(tail), time.time() - start)


def _kill(child) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
