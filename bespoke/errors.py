"""Typed errors the user can fix, and the one place they are worded (print_error: the CLI and the entrypoint)."""

from __future__ import annotations

import errno
import os
import shutil


class BespokeError(Exception):
    """Something the user can fix: what is wrong, where, and how to fix it."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.line())

    def line(self) -> str:
        text = self.what
        if self.where:
            text += f" ({self.where})"
        if self.fix:
            text += f"; fix: {self.fix}"
        return text


class DataError(BespokeError):
    """The training data breaks a rule; `problems` lists every offending file."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None, problems=()):
        self.problems = list(problems)
        super().__init__(what, where, fix)


class RecipeError(BespokeError):
    """An override names an unknown flag or has the wrong type or range; `problems` lists each when several."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None, problems=()):
        self.problems = list(problems)
        super().__init__(what, where, fix)


class PreflightError(BespokeError):
    """Preflight found at least one error."""


class TrainingError(BespokeError):
    """sd-scripts exited non-zero or could not start."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None, exit_code: int = 1):
        self.exit_code = exit_code
        super().__init__(what, where, fix)


class LockedError(BespokeError):
    """Another bespoke process holds the workspace (Workspace.lock)."""


class DiskError(BespokeError):
    """Writing failed for a reason the user can fix: a full disk, a read-only or unwritable folder."""


def from_os_error(e: OSError) -> DiskError | None:
    """The one-line wording of an OSError the user can fix, or None for one that is a bug."""
    where = os.fsdecode(e.filename) if e.filename is not None else None
    shown = (where or "").encode("unicode_escape").decode("ascii") if where else None
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        free = _free(where)
        return DiskError(f"the disk is full{'' if free is None else f' ({free / 1e6:.1f} MB free)'}, or out of "
                         "inodes (too many files)", shown,
                         "free space on the volume (bespoke check prints what a run needs) and run again")
    if e.errno in (errno.EACCES, errno.EPERM):
        return DiskError("permission denied", shown, "make it writable by this user (`chattr -i` if `lsattr` shows "
                         "it immutable), or pick another --workspace")
    if e.errno == errno.EEXIST:
        return DiskError("something that is not a folder (a file or a broken symlink) is in the way of a folder",
                         shown, "move it away or remove it, then run again")
    if e.errno == errno.EROFS:
        return DiskError("the file system is read-only", shown, "mount the workspace read-write")
    if e.errno == errno.ENOTDIR:
        return DiskError("a part of this path is a file, not a folder", shown,
                         "pick a path whose parent folders are folders, or move that file away")
    if e.errno == errno.EISDIR:
        return DiskError("this is a folder, where a file is needed", shown, "give the path of a file")
    if e.errno == errno.ENAMETOOLONG:
        return DiskError("the path or a name in it is too long", shown, "use a shorter path")
    if e.errno == errno.ELOOP:
        return DiskError("the path runs through a symlink loop", shown, "remove or fix the looping symlink")
    return None


def user_error(e: BaseException) -> BespokeError | None:
    """`e` as an error the user can fix (itself, or an OSError worded by from_os_error), or None for a bug."""
    if isinstance(e, BespokeError):
        return e
    if isinstance(e, OSError) and (worded := from_os_error(e)) is not None:
        return worded.with_traceback(e.__traceback__)
    return None


def _free(path: str | None) -> int | None:
    while path:
        try:
            return shutil.disk_usage(path).free
        except OSError:
            parent = os.path.dirname(path)
            path = None if parent == path else parent
    return None


class SettingError(BespokeError):
    """An environment variable has a value bespoke cannot use."""


# Bidi overrides and isolates: printed as is, they reorder what the terminal shows.
BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def show(name: object) -> str:
    """A file name as one printable line: control bytes, bidi overrides and non-UTF-8 bytes escaped."""
    text = os.fspath(name) if isinstance(name, os.PathLike) else str(name)
    if text.isprintable() and not BIDI.intersection(text):
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable() and ch not in BIDI:
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def print_error(e: BespokeError, debug: bool, file=None) -> int:
    """Word a user-fixable error: each problem on its own line, then one `error: what (where); fix: ...`
    line; the traceback first only with `debug` (switches.debug: BESPOKE_DEBUG). The one printer of the
    CLI and the entrypoint. Returns the exit code."""
    import sys
    import traceback

    from bespoke import masking

    file = file or sys.stderr
    secrets = masking.secret_values(os.environ)  # whatever the message quotes, a credential is never printed
    if debug:
        trace = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        print(masking.mask_text(trace, secrets), file=file, end="", flush=True)
    for problem in getattr(e, "problems", ()):
        print(f"  {show(masking.mask_text(str(problem), secrets))}", file=file, flush=True)
    line = show(masking.mask_text(f"error: {e.line()}", secrets))
    tty = getattr(file, "isatty", lambda: False)()
    print(f"\033[31m{line}\033[0m" if tty else line, file=file, flush=True)  # red on a terminal
    return getattr(e, "exit_code", 1)
