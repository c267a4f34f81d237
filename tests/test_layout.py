"""The package's layout: imports only go down the layers, no module imports in a circle,
and the top of the package holds the ground floor alone."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "flowbound"

#: The layers, lowest first: a module may import its own layer and those below.
LAYERS = ["", "threat", "networks", "attacks", "certificates", "training", "book"]

#: The ground floor: the only modules at the top of the package.
GROUND = {"__init__", "blas", "cache", "checks", "data", "device", "progress", "registry", "stats"}


def _name(path: Path) -> str:
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["flowbound", *parts])


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 or parts[-1] in LAYERS[1:] else 0


def imports() -> dict[str, set[str]]:
    """Every flowbound module each module imports, at the top or inside a function."""
    out: dict[str, set[str]] = {}
    for path in sorted(PKG.rglob("*.py")):
        me = _name(path)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = me.split(".")[
                        : len(me.split(".")) - node.level + (path.stem == "__init__")
                    ]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for n in names:
                if (
                    n.startswith("flowbound")
                    and (PKG.parent / (n.replace(".", "/") + ".py")).exists()
                ):
                    found.add(n)
                elif n.startswith("flowbound") and (PKG.parent / n.replace(".", "/")).is_dir():
                    found.add(n)
        out[me] = found - {me}
    return out


def test_imports_only_go_down_the_layers():
    bad = [
        f"{me} ({LAYERS[_layer(me)] or 'ground'}) imports {other} ({LAYERS[_layer(other)]})"
        for me, found in imports().items()
        for other in found
        if _layer(other) > _layer(me)
    ]
    assert not bad, "\n".join(bad)


def test_no_module_imports_in_a_circle():
    graph = imports()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_the_top_of_the_package_is_the_ground_floor():
    top = {p.stem for p in PKG.glob("*.py")}
    assert top == GROUND, sorted(top ^ GROUND)
    assert {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(
        LAYERS[1:]
    )


def test_threat_sets_are_named_in_their_module_only():
    """No "tied"/"full" literal outside flowbound.threat.sets (and the profile data): the
    rest of the code reads the threat-set objects."""
    import re

    found = [
        f"{p.relative_to(PKG)}:{i}"
        for p in sorted(PKG.rglob("*.py"))
        if p.name != "sets.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"""["'](tied|full)["']""", line)
    ]
    assert not found, found
