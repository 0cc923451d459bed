"""Regenerate the list of flags sdxl_train_network.py accepts (run in the sd-scripts environment).

    SD_SCRIPTS_DIR=.cache/sd-scripts .venv-kohya/bin/python tools/dump_flags.py bespoke/data/sdxl_train_network_flags.json

`bespoke train --set NAME=VALUE` checks names and value types against this file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def flags_of(parser: argparse.ArgumentParser) -> dict:
    out = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest == "help":
            continue
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            kind = "bool"
        elif action.type in (int, float):
            kind = action.type.__name__
        else:
            kind = "str"
        entry = {"type": kind}
        if action.choices:
            entry["choices"] = [str(c) for c in action.choices]
        if action.nargs not in (None, 0):
            entry["nargs"] = str(action.nargs)
        for name in longs:
            out[name[2:]] = entry
    return dict(sorted(out.items()))


def main() -> None:
    sd = Path(os.environ.get("SD_SCRIPTS_DIR", "/opt/sd-scripts")).resolve()
    sys.path.insert(0, str(sd))
    os.chdir(sd)
    import sdxl_train_network  # noqa: E402  (sd-scripts, on sys.path above)

    commit = (sd / ".bespoke-commit").read_text().strip() if (sd / ".bespoke-commit").exists() else "unknown"
    data = {"script": "sdxl_train_network.py", "sd_scripts_commit": commit,
            "flags": flags_of(sdxl_train_network.setup_parser())}
    Path(sys.argv[1]).resolve().write_text(json.dumps(data, indent=1) + "\n") if len(sys.argv) > 1 else print(
        json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
