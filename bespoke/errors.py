"""Typed errors the user can fix, and the one place they are worded (print_error: the CLI and the entrypoint)."""

from __future__ import annotations


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
    """An override names an unknown flag or has the wrong type."""


class PreflightError(BespokeError):
    """Preflight found at least one error."""


class TrainingError(BespokeError):
    """sd-scripts exited non-zero or could not start."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None, exit_code: int = 1):
        self.exit_code = exit_code
        super().__init__(what, where, fix)


class LockedError(BespokeError):
    """Another bespoke process holds the workspace (Workspace.lock)."""


class SettingError(BespokeError):
    """An environment variable has a value bespoke cannot use."""


def print_error(e: BespokeError, debug: bool, file=None) -> int:
    """Word a user-fixable error: each problem on its own line, then one `error: what (where); fix: ...`
    line; the traceback first only with `debug` (switches.debug: BESPOKE_DEBUG). The one printer of the
    CLI and the entrypoint. Returns the exit code."""
    import sys
    import traceback

    file = file or sys.stderr
    if debug:
        traceback.print_exception(type(e), e, e.__traceback__, file=file)
    for problem in getattr(e, "problems", ()):
        print(f"  {problem}", file=file, flush=True)
    line = f"error: {e.line()}"
    tty = getattr(file, "isatty", lambda: False)()
    print(f"\033[31m{line}\033[0m" if tty else line, file=file, flush=True)  # red on a terminal
    return getattr(e, "exit_code", 1)
