"""Typed errors the user can fix. The CLI words them in one place (cli.main)."""

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
