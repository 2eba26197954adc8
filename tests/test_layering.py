"""The package layering, read off the imports (static: every ``import`` / ``from`` in every module).

common (torch-free ground floor) <- quant, exitlogic, hls, rtl, hwsim <- analysis; no package of the
lower floors imports ``analysis``, ``common`` imports no other project package and no torch, and the
package-level import graph has no cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "quant", "exitlogic", "hls", "rtl", "hwsim", "analysis")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = path.relative_to(ROOT).parts[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            out.add(pkg if node.level else (node.module or "").split(".")[0])
    return out


def _graph() -> dict[str, dict[str, list[str]]]:
    g: dict[str, dict[str, list[str]]] = {p: {} for p in PACKAGES}
    for p in PACKAGES:
        for f in sorted((ROOT / p).rglob("*.py")):
            for m in _imports(f):
                g[p].setdefault(m, []).append(str(f.relative_to(ROOT)))
    return g


def test_lower_floors_never_import_analysis():
    g = _graph()
    for p in ("common", "quant", "exitlogic", "hls", "rtl", "hwsim"):
        assert "analysis" not in g[p], (p, g[p].get("analysis"))


def test_common_is_the_ground_floor():
    g = _graph()["common"]
    assert not {m for m in g if m in PACKAGES and m != "common"}, g
    assert "torch" not in g


def test_no_import_cycle_between_packages():
    g = _graph()
    edges = {p: {m for m in g[p] if m in PACKAGES and m != p} for p in PACKAGES}
    state: dict[str, int] = {}

    def visit(p, path):
        state[p] = 1
        for q in edges[p]:
            assert state.get(q) != 1, f"import cycle: {' -> '.join(path + [q])}"
            if q not in state:
                visit(q, path + [q])
        state[p] = 2

    for p in PACKAGES:
        if p not in state:
            visit(p, [p])
