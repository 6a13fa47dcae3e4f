"""No import cycle through the poll path (agent, worker, poller, service, exporter, mib, api).

Imports are read from the source with `ast`, those inside functions included (a lazy import
is still a dependency), those under `if TYPE_CHECKING:` left out. The worker used to import
`agent.poller_from`, and the agent imports the worker: `poller_from` now lives in `poller`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POLL_PATH = ("pmta_snmp.agent", "pmta_snmp.worker", "pmta_snmp.poller", "pmta_snmp.service",
             "pmta_snmp.exporter", "pmta_snmp.mib", "pmta_snmp.api")


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in (ROOT / "pmta_snmp").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in modules}


def _cycles() -> list[list[str]]:
    """The import cycles among pmta_snmp's modules (strongly connected components > 1)."""
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for name in graph:
        if name not in index:
            connect(name)
    return out


def test_no_import_cycle_runs_through_the_poll_path() -> None:
    through = [c for c in _cycles() if any(m.startswith(POLL_PATH) for m in c)]
    assert through == []


def test_the_worker_child_starts_without_the_agent() -> None:
    """The poll worker child needs the poller and the view, not the serving side."""
    modules = _modules()
    assert "pmta_snmp.agent" not in _imports(modules["pmta_snmp.worker"], modules)
