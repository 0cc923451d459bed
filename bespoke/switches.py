"""The BESPOKE_* environment: every on/off switch read through one function, with one set of spellings,
and BESPOKE_SET split the same way for the CLI and the container.

| switch | default | what it turns on |
| --- | --- | --- |
| BESPOKE_DEBUG | off | tracebacks with errors; what a swallowed failure was |
| BESPOKE_STOP_ON_PHOTO | off | stop training when an epoch's samples look like photos |
| BESPOKE_CPP_WRAPPER | on | the fast profile launches its kernels from C++ |
| BESPOKE_FLAT_STEP | on | the fast profile's flat AdamW8bit groups and one gradient all-reduce |
| BESPOKE_COMPILE_ARTIFACTS | on | the fast profile keeps what it compiled as one file on the volume |
| BESPOKE_CPU_AFFINITY | off | with several GPUs, each process on CPU cores of its own near its GPU |
| BESPOKE_TENSORBOARD | on | the container starts TensorBoard beside the run |

On: 1, true, yes, on. Off: 0, false, no, off (any case). Unset or empty: the default. Anything else
is refused in one line naming the variable.

BESPOKE_COMPILE is not on/off but a mode (`compile_mode`): default, max-autotune-no-cudagraphs, or off
(any of the off spellings).
"""

from __future__ import annotations

import functools
import os
import shlex

from bespoke.errors import SettingError

ON = ("1", "true", "yes", "on")
OFF = ("0", "false", "no", "off")
SWITCHES = {
    "BESPOKE_DEBUG": False,
    "BESPOKE_STOP_ON_PHOTO": False,
    "BESPOKE_CPP_WRAPPER": True,
    "BESPOKE_FLAT_STEP": True,
    "BESPOKE_COMPILE_ARTIFACTS": True,
    "BESPOKE_CPU_AFFINITY": False,
    "BESPOKE_TENSORBOARD": True,
}


def switch(name: str, environ: dict | None = None, default: bool | None = None) -> bool:
    """The on/off value of `name` in `environ` (os.environ by default); its default from SWITCHES."""
    environ = os.environ if environ is None else environ
    default = SWITCHES[name] if default is None else default
    value = (environ.get(name) or "").strip().lower()
    if not value:
        return default
    if value in ON:
        return True
    if value in OFF:
        return False
    raise SettingError(f"{name}={value!r} is not a yes/no value", "environment", f"set {name}=1 or {name}=0")

COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "off")


def debug(environ: dict | None = None) -> bool:
    """BESPOKE_DEBUG: errors with tracebacks, and a word on every failure bespoke otherwise passes over.
    Never raises (it decides how errors are shown): an unreadable value is off."""
    try:
        return switch("BESPOKE_DEBUG", environ)
    except SettingError:
        return False


def split_sets(value: str, where: str = "BESPOKE_SET") -> list[str]:
    """BESPOKE_SET="max_train_epochs=12 output_name='my lora'" -> ["max_train_epochs=12", "output_name=my lora"].

    Split like a shell, so a value with spaces can be quoted; each word must be NAME=VALUE.
    """
    try:
        words = shlex.split(value or "")
    except ValueError as e:
        raise SettingError(f"{where} cannot be split into words ({e})", "environment",
                           f"balance the quotes, e.g. {where}=\"max_train_epochs=12 network_dim=64\"") from None
    for word in words:
        name, eq, _ = word.partition("=")
        if not eq or not name:
            raise SettingError(f"{where} entry {word!r} is not NAME=VALUE", "environment",
                               f"write it as {where}=\"max_train_epochs=12 network_dim=64\"")
    return words


def compile_mode(environ: dict | None = None) -> str:
    """BESPOKE_COMPILE: the fast profile's torch.compile mode, one of COMPILE_MODES."""
    environ = os.environ if environ is None else environ
    value = (environ.get("BESPOKE_COMPILE") or "").strip().lower()
    if not value:
        return "default"
    if value in OFF:
        return "off"
    if value not in COMPILE_MODES:
        raise SettingError(f"BESPOKE_COMPILE={value!r} is not one of {', '.join(COMPILE_MODES)}", "environment",
                           "set BESPOKE_COMPILE=default, max-autotune-no-cudagraphs or off")
    return value


def gpu_memory_gb(environ: dict | None = None) -> float | None:
    """BESPOKE_GPU_MEMORY_GB: the GPU memory each fast or lean training process may allocate (the bench's
    stand-in for a smaller card), or None (unset)."""
    environ = os.environ if environ is None else environ
    value = (environ.get("BESPOKE_GPU_MEMORY_GB") or "").strip()
    if not value:
        return None
    try:
        gb = float(value)
    except ValueError:
        gb = -1.0
    if not (0 < gb <= 10_000):  # also refuses nan and inf
        raise SettingError(f"BESPOKE_GPU_MEMORY_GB={value[:40]!r} is not a number of GB from 0 to 10000",
                           "environment", "set it to the memory to allow, e.g. BESPOKE_GPU_MEMORY_GB=22, or unset it")
    return gb


def problems(environ: dict | None = None) -> list[SettingError]:
    """Every on/off switch and BESPOKE_GPU_MEMORY_GB that would be refused where it is first read (mid-run),
    for `check` to list before the run."""
    found = []
    for read in [*(functools.partial(switch, name) for name in SWITCHES), gpu_memory_gb]:
        try:
            read(environ)
        except SettingError as e:
            found.append(e)
    return found
