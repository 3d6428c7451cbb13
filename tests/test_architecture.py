"""The package layout is the architecture: each package may import only the packages below it (docs/architecture.md).
Checked on the source, function-level imports included, so a shortcut across layers fails here first."""

from __future__ import annotations

import ast
from pathlib import Path

import k2

ROOT = Path(k2.__file__).parent

BASE = {"errors", "settings", "faults", "retry", "arrow_util", "schemas", "obs", "filelock"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "faults": set(),
    "retry": set(),
    "filelock": set(),
    "runtime": set(),
    "arrow_util": set(),
    "data": set(),
    "console": set(),
    "obs": set(),
    "settings": {"errors", "faults"},
    "schemas": set(),
    "codec": {"errors", "schemas", "arrow_util"},
    "registry": {"errors", "schemas", "settings"},
    "sources": {"errors", "schemas", "arrow_util"},
    "kafka": BASE | {"codec", "registry"},
    "lake": BASE,
    "ingest": BASE | {"codec", "registry", "kafka", "lake", "sources"},
    "query": BASE | {"lake"},
    "replay": BASE | {"lake", "query", "kafka", "registry"},
    "api": BASE | {"lake", "query", "replay", "kafka", "console"},
    "engines": BASE | {"lake"},
    "recovery": BASE | {"lake", "registry"},
    "cli": BASE | {"codec", "registry", "sources", "kafka", "lake", "ingest", "query", "replay", "api", "data",
            "runtime", "engines", "recovery"},
}


def _imports(path: Path) -> set[str]:
    """Top-level K2 packages or modules that `path` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "k2":
                names = [f"k2.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found |= {name.split(".")[1] for name in names if name.startswith("k2.")}
    return found


def _unit(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return parts[0]


def test_every_module_belongs_to_a_known_layer() -> None:
    units = {_unit(p) for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT}
    assert units <= set(ALLOWED), units - set(ALLOWED)


def test_packages_import_only_the_layers_below_them() -> None:
    violations = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.parent == ROOT and path.name == "__init__.py":
            continue
        unit = _unit(path)
        for imported in _imports(path) - {unit}:
            if imported not in ALLOWED[unit]:
                violations.append(f"{path.relative_to(ROOT)} imports k2.{imported}")
    assert not violations, "\n".join(violations)


def test_the_layers_have_no_cycle() -> None:
    seen: dict[str, int] = {}

    def visit(unit: str, stack: tuple[str, ...]) -> None:
        assert unit not in stack, " → ".join((*stack, unit))
        if seen.get(unit):
            return
        for below in ALLOWED[unit]:
            visit(below, (*stack, unit))
        seen[unit] = 1

    for unit in ALLOWED:
        visit(unit, ())
