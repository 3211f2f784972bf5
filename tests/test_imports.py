"""No import circles among earshot's own modules, type-only imports included: core and the adapters build on each
other in one direction."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "bots")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Modules of ours `path` imports, those under `if TYPE_CHECKING:` included: a type-only import is still a
    dependency a reader has to follow, so it may not run back up either."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: {m for m in _imports(path, name) if m in files and m != name}
            for name, path in files.items()}


def test_no_import_circles() -> None:
    graph = _graph()
    assert "core.flow.service" in graph and "bots.telegram.handlers" in graph
    state: dict[str, int] = {}        # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    # a package's __init__ re-exporting its own modules is not a circle between modules
    circles = [c for c in circles
               if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:], strict=False))]
    assert circles == [], "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_core_knows_no_platform() -> None:
    graph = _graph()
    leaks = {m: sorted(i for i in imports if i.startswith("bots"))
             for m, imports in graph.items() if m.startswith("core")}
    assert {m: i for m, i in leaks.items() if i} == {}


def test_type_only_imports_count(tmp_path: Path) -> None:
    module = tmp_path / "actions.py"
    module.write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .listeners import Handlers\n")
    assert "bots.slack.listeners" in _imports(module, "bots.slack.actions")
