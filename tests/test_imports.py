"""The shape of the package: no import cycle, click only in the CLI, torch only in bespoke/launch/ and the
smoke test, and each workspace layout name spelled only in bespoke/workspace.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bespoke", "entrypoint")


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every project module `path` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known}
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    g = graph()
    assert len(g) > 20 and g["bespoke.pipeline"]  # the walk found the package and its imports
    assert find_cycle(g) is None, " -> ".join(find_cycle(g))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_only_the_cli_imports_click():
    for name, path in modules().items():
        if name != "bespoke.cli":
            assert not re.search(r"^\s*(import click|from click)", path.read_text(), re.M), name


def test_torch_only_in_the_launch_package_and_the_smoke_test():
    allowed = ("bespoke.launch", "bespoke.smoke")
    for name, path in modules().items():
        if not name.startswith(allowed):
            assert not re.search(r"^\s*(import torch|from torch)", path.read_text(), re.M), name


def test_layout_names_are_spelled_only_in_the_workspace_module():
    names = ('"training_data"', '"output"', '"status.json"', '"DONE.json"', '"run.json"', '"loss.jsonl"',
             '"sample"', '"report"', '"logs"', '".cache"')
    for name, path in modules().items():
        if name != "bespoke.workspace":
            text = path.read_text()
            assert not [n for n in names if n in text], name
