"""The import graph keeps one way down: no circle, no upward import between layers, no module over 400 lines.

Read with `ast`, not by importing, so optional extras (torch, aiomqtt, AWS) need not be installed. Every
import counts, wherever it is: one under `if TYPE_CHECKING:` or inside a function must be followed by a
reader all the same. Importing `a.b` is not counted as importing the package `a` (its `__init__`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("facewatchd", "plugins")  # the import graph
SOURCES = ("facewatchd", "plugins", "bench", "deploy")  # the length limit
MAX_LINES = 400

# Top first. A module may import its own layer and the layers below it, never one above. A name covers
# the module and everything under it; the longest name that matches a module places it.
LAYERS: list[tuple[str, ...]] = [
    ("facewatchd.cli", "facewatchd.cli_faces", "facewatchd.__main__", "facewatchd.review_mode"),  # commands
    ("plugins",),  # built-in integrations: the core never imports one
    ("facewatchd.app", "facewatchd.plugins"),  # the two applications, the config they assemble, the plugin host
    ("facewatchd.web", "facewatchd.control", "facewatchd.systemd", "facewatchd.watchdog"),  # shared wiring
    ("facewatchd.hookspecs",),
    ("facewatchd.pipeline",),
    ("facewatchd.resolver",),  # core over ports, and its adapters
    ("facewatchd.link", "facewatchd.shadow"),
    ("facewatchd.vision",),
    ("facewatchd.config", "facewatchd.identity", "facewatchd.messages", "facewatchd.events", "facewatchd.state",
     "facewatchd.outbox", "facewatchd.aio", "facewatchd.logs", "facewatchd"),  # foundation
]

# What is left, each with why. Empty is the aim.
ALLOWED_CIRCLES: list[set[str]] = []
ALLOWED_UPWARD: set[tuple[str, str]] = {
    # The host finds the built-in integrations by their package, as it finds third-party ones by entry point:
    # it imports only `plugins/__init__.py` (two lines, for its path) and loads each integration by name.
    ("facewatchd.plugins", "plugins"),
}
ALLOWED_LONG: set[str] = set()  # none left: every source module is at most 400 lines


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for top in PACKAGES for p in sorted((ROOT / top).rglob("*.py"))}


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` imports (the nearest known module of each imported name)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            # `from a import b` imports the module a.b when there is one, else a name from a.
            names.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    found = set()
    for imp in names:
        while imp and imp not in known:
            imp = imp.rpartition(".")[0]
        if imp and imp != name:
            found.add(imp)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def layer_of(module: str) -> int:
    best, level = "", -1
    for i, names in enumerate(LAYERS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, level = prefix, i
    if level < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return level


def circles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_no_import_circle() -> None:
    found = [c for c in circles(graph()) if c not in ALLOWED_CIRCLES]
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in found)


def test_no_upward_import() -> None:
    upward = sorted((src, dst) for src, dsts in graph().items() for dst in dsts
                    if layer_of(dst) < layer_of(src) and (src, dst) not in ALLOWED_UPWARD)
    assert not upward, "upward imports:\n" + "\n".join(f"{s} -> {d}" for s, d in upward)


def test_no_long_module() -> None:
    long = sorted(f"{p.relative_to(ROOT)}: {n} lines" for top in SOURCES for p in (ROOT / top).rglob("*.py")
                  if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
                  and str(p.relative_to(ROOT)) not in ALLOWED_LONG)
    assert not long, f"modules over {MAX_LINES} lines:\n" + "\n".join(long)


def test_allow_lists_hold_only_live_violations() -> None:
    # A fixed violation leaves the allow-list, so the list always says what is left.
    edges = graph()
    live = circles(edges)
    assert all(c in live for c in ALLOWED_CIRCLES), "an allowed circle is gone: remove it from ALLOWED_CIRCLES"
    assert all(d in edges.get(s, ()) and layer_of(d) < layer_of(s) for s, d in ALLOWED_UPWARD), \
        "an allowed upward import is gone: remove it from ALLOWED_UPWARD"
    assert all(len((ROOT / p).read_text(encoding="utf-8").splitlines()) > MAX_LINES for p in ALLOWED_LONG
               if (ROOT / p).exists()), "an allowed long module is short now: remove it from ALLOWED_LONG"


@pytest.mark.parametrize("source, expected", [
    ("import facewatchd.web\nfrom facewatchd.config import Config\n", {"facewatchd.web", "facewatchd.config"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from facewatchd import hookspecs\n",
     {"facewatchd.hookspecs"}),
    ("def f():\n    from ..link.base import Link\n", {"facewatchd.link.base"}),
])
def test_imports_are_found_wherever_they_are(tmp_path: Path, source: str, expected: set[str]) -> None:
    path = tmp_path / "mod.py"
    path.write_text(source)
    known = {"facewatchd": ROOT, "facewatchd.web": ROOT, "facewatchd.config": ROOT, "facewatchd.hookspecs": ROOT,
             "facewatchd.link.base": ROOT, "facewatchd.pipeline.x": path}
    assert imported("facewatchd.pipeline.x", path, known) == expected


def test_a_circle_is_found() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
