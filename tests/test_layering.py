"""The import graph of `core/`, derived from the source: no cycle, and no import upward.

`core/` is grouped by side, bottom to top: the shared base (the modules at its top level: the
plugin API, the registry, the store and its formats), `worker/` (running a job's cells), `report/`
(records to tables, files, comparisons and the site), `parent/` (options, plan, the engine's
grid loop, one `rbench run`) and `frontend/` (the command line and its console). A module
imports its own side or a side below it, at module level or inside a function alike; the
package's faces, `__init__.py` (the public API) and `__main__.py`, may import any side.
docs/architecture.md describes this order.
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "core"
SIDES = ("", "worker", "report", "parent", "frontend")  # bottom to top; "" is the base
FACES = {"__init__", "__main__"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(CORE).with_suffix("").parts)


def side(module: str) -> str:
    head, _, rest = module.partition(".")
    return head if rest and head in SIDES else ""


def import_graph() -> dict[str, set[str]]:
    """Each module of core (dotted, relative to the package) and the modules of core it imports."""
    modules = {module_name(p) for p in CORE.rglob("*.py")}
    packages = {m.rsplit(".", 1)[0] for m in modules if m.endswith("__init__") and "." in m}
    graph: dict[str, set[str]] = {}
    for path in CORE.rglob("*.py"):
        name = module_name(path)
        package = name.rsplit(".", 1)[0] if "." in name else ""
        if name.endswith("__init__"):
            package = name.rsplit(".", 1)[0] if "." in name else ""
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package else []
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    prefix = ".".join([*base, *(node.module.split(".") if node.module else [])])
                elif node.module and (node.module == "rbench" or node.module.startswith("rbench.")):
                    prefix = node.module[len("rbench."):] if node.module != "rbench" else ""
                else:
                    continue
                for alias in node.names:
                    full = f"{prefix}.{alias.name}" if prefix else alias.name
                    targets.append(full if (full in modules or full in packages) else prefix)
            elif isinstance(node, ast.Import):
                targets = [a.name[len("rbench."):] for a in node.names if a.name.startswith("rbench.")]
            for target in targets:
                if target in packages:
                    target = f"{target}.__init__"
                if target in modules and target != name:
                    found.add(target)
                elif target == "":
                    found.add("__init__")
        graph[name] = found
    return graph


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if target.split(".")[-1] in FACES and target.count(".") == 0:
                continue  # the faces import everything; nothing in core imports them
            if state.get(target) == 1:
                cycles.append(" -> ".join([*trail[trail.index(target):], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state and node not in FACES:
            visit(node, [node])
    assert not cycles, "import cycles in core/:\n" + "\n".join(cycles)


def test_no_module_imports_a_side_above_its_own():
    graph = import_graph()
    upward = [f"{name} ({side(name) or 'base'}) imports {target} ({side(target) or 'base'})"
              for name, targets in sorted(graph.items()) if name not in FACES
              for target in sorted(targets) if SIDES.index(side(target)) > SIDES.index(side(name))]
    assert not upward, "upward imports in core/:\n" + "\n".join(upward)


def test_the_graph_is_derived_from_the_source():
    """The derivation itself: it sees imports inside functions, relative and absolute ones."""
    graph = import_graph()
    assert "errors" in graph["files"]  # `from .errors import RbenchError` inside a function
    assert any(target.startswith("parent.") for target in graph["frontend.cli"])
