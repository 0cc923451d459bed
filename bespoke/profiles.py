"""Training profiles: the same math, different speed levers.

`exact` is the notes' recipe as is and stays the default until another profile is proven equivalent
on a GPU (see bench/RESULTS.md). A profile adds recipe overrides and may name a launcher script that
patches sd-scripts at run time (as the smoke test's tiny model does), never its code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bespoke.errors import BespokeError


@dataclass(frozen=True)
class Profile:
    name: str
    overrides: tuple[str, ...] = ()
    launcher: str | None = None  # a script beside this module, run by accelerate with sd-scripts' script as argv[1]
    note: str = ""

    def launcher_path(self) -> Path | None:
        return Path(__file__).with_name(self.launcher) if self.launcher else None


PROFILES: dict[str, Profile] = {
    "exact": Profile("exact", note="the notes' command, unchanged"),
}
DEFAULT = "exact"


def get(name: str | None) -> Profile:
    name = name or DEFAULT
    if name not in PROFILES:
        raise BespokeError(f"unknown profile '{name}'", "--profile", f"use one of: {', '.join(PROFILES)}")
    return PROFILES[name]
