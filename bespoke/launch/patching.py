"""The one way bespoke changes sd-scripts (or a library it runs on) at run time: rebinding a name, from
outside, through `rebind`, which raises when the name is gone; and only in the sd-scripts bespoke is
pinned to (`use_sd_scripts` refuses any other commit). A renamed constant upstream is then an error at
start, never a patch that silently does nothing.

A launcher (tinysdxl.py, fastsdxl.py) is accelerate's training script: `run_patched(patch)` takes
sd-scripts' script from argv[1], applies the patch, then runs the unmodified script as __main__.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from bespoke.errors import BespokeError


class PatchError(BespokeError):
    """A name bespoke rebinds is missing, or sd-scripts is not at the pinned commit."""


_checked: set[str] = set()


def use_sd_scripts(sd_scripts: Path) -> Path:
    """Put sd-scripts on sys.path, once it is known to be at the pinned commit."""
    from bespoke.kohya import pin_check

    sd_scripts = Path(sd_scripts)
    if str(sd_scripts) not in _checked:
        pin = pin_check(sd_scripts)
        if not pin.ok:
            raise PatchError(f"bespoke patches only the pinned sd-scripts: {pin.problem()}", str(sd_scripts),
                             f"use sd-scripts at {pin.pin} (`make sd-scripts`, or the bespoke image)")
        _checked.add(str(sd_scripts))
    if str(sd_scripts) not in sys.path:
        sys.path.insert(0, str(sd_scripts))
    return sd_scripts


def _has(owner, name: str) -> bool:
    if isinstance(owner, type):  # a class: defined on it or a base of its own, not inherited from object
        return any(name in vars(k) for k in owner.__mro__ if k is not object)
    return hasattr(owner, name)


def rebind(owner, name: str, value):
    """Set `owner.name` to `value` and return what it was; raise PatchError when there is no such name."""
    if not _has(owner, name):
        label = getattr(owner, "__qualname__", None) or getattr(owner, "__name__", repr(owner))
        raise PatchError(f"{label}.{name} is not there to patch (renamed upstream?)",
                         getattr(owner, "__module__", None) or label,
                         "update bespoke's patch for this sd-scripts commit, or use the pinned one")
    old = getattr(owner, name)
    setattr(owner, name, value)
    return old


def run_patched(patch) -> None:
    """The main of a launcher script that accelerate runs in place of sd-scripts' script: argv[1] is
    sd-scripts' training script; patch(its folder) rebinds what it must, then the unmodified script runs
    as __main__."""
    here = str(Path(sys.argv[0]).resolve().parent)
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != Path(here)]  # launch/*.py are not top-level
    script = Path(sys.argv[1]).resolve()
    sys.argv = [str(script), *sys.argv[2:]]
    use_sd_scripts(script.parent)
    patch(script.parent)
    runpy.run_path(str(script), run_name="__main__")
