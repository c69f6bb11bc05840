"""Imports run one way (docs/architecture.md, floors): wire <- nat, dhcp <- vswitch; the
siblings nat and dhcp do not import each other; no module imports itself round a circle.

The walk reads every module's imports with ``ast`` (top level and inside functions alike).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FLOORS = {"wire": 0, "nat": 1, "dhcp": 1, "vswitch": 2}

#: (importer, imported) pairs that break a rule and are being moved (none now: keep it so).
KNOWN: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[str]:
    """The project modules ``path`` imports (``from a.b import c`` counts a.b.c when that is a
    module, else a.b)."""
    found: set[str] = set()
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" \
        else module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            if name.split(".")[0] in FLOORS:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for floor in FLOORS for p in (REPO / floor).rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges[name] = {n for n in project_imports(path) if n in modules and n != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Edges that lie on a circle: (a, b) where b reaches a again."""
    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(edges.get(node, ()))
        return False

    return {(a, b) for a, targets in edges.items() for b in targets if reaches(b, a)}


def test_imports_run_downhill_and_round_no_circle():
    edges = graph()
    uphill = {(a, b) for a, targets in edges.items() for b in targets
              if FLOORS[b.split(".")[0]] > FLOORS[a.split(".")[0]]}
    across = {(a, b) for a, targets in edges.items() for b in targets
              if {a.split(".")[0], b.split(".")[0]} == {"nat", "dhcp"}}
    broken = uphill | across | cycles(edges)
    assert broken - KNOWN == set(), "imports that run uphill or round a circle"
    assert KNOWN - broken == set(), "fixed: take these off KNOWN"


def test_the_ground_floor_imports_nothing_above_it():
    for path in (REPO / "wire").rglob("*.py"):
        assert {n.split(".")[0] for n in project_imports(path)} <= {"wire"}, path
