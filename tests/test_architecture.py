"""The shape of the code, read from every module's imports with `ast` (function-level ones included):
imports point one way, no module imports itself in a circle, other packages are reached through their
`__init__` (its `__all__`, no private names), and `orchestrator/` holds packages and the composition root.
"""
from __future__ import annotations

import ast
import graphlib
import importlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_PACKAGES = ("machines", "bridge", "orchestrator")

# A module may import its own unit and units of a lower rank, never a unit of the same or a higher rank.
# A unit is the longest of these names that is the module or contains it.
RANKS = {
    "machines": 0,
    "bridge": 0,
    "orchestrator.config": 1,
    "orchestrator.telemetry": 1,
    "orchestrator.testing": 1,  # test doubles shipped with the package: on the wire protocols alone
    "orchestrator.engines": 2,
    "orchestrator.store": 2,
    "orchestrator.call": 3,
    "orchestrator.rollout": 3,
    "orchestrator.server": 4,
    "orchestrator.composition": 5,  # the composition root
    "orchestrator.replay": 6,
    "orchestrator.studio": 7,  # Studio executions are read as a corpus of past calls
    "orchestrator.commands": 8,
}
ROOT_MODULES = {"orchestrator", "orchestrator.composition"}  # the only modules of orchestrator/ itself

# Known exceptions: packages whose submodules may still be imported, and modules that may still import
# other packages' submodules. Empty: keep them so (a test below fails when a listed one is no longer needed).
PENDING_FACES: set[str] = set()
PENDING_IMPORTERS: set[str] = set()


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module named by the statement
    names: tuple[str, ...]  # what `from target import ...` takes; () for `import target`
    line: int

    def __str__(self) -> str:
        taken = f" import {', '.join(self.names)}" if self.names else ""
        return f"{self.importer}:{self.line}: from {self.target}{taken}"


@cache
def modules() -> dict[str, Path]:
    found = {}
    for top in TOP_PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def is_package(module: str) -> bool:
    return modules()[module].name == "__init__.py"


def package_of(module: str) -> str:
    return module if is_package(module) else module.rpartition(".")[0]


@cache
def statements() -> tuple[tuple[str, ast.Import | ast.ImportFrom], ...]:
    return tuple(
        (module, node)
        for module, path in modules().items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, (ast.Import, ast.ImportFrom))
    )


@cache
def imports() -> tuple[Import, ...]:
    """Every import of one of our modules (relative ones are refused by their own test)."""
    found = []
    for module, node in statements():
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, (), node.lineno) for alias in node.names]
        elif node.level == 0 and node.module:
            found.append(Import(module, node.module, tuple(alias.name for alias in node.names), node.lineno))
    return tuple(found for found in found if found.target.split(".")[0] in TOP_PACKAGES)


def unit_of(module: str) -> str | None:
    owners = [unit for unit in RANKS if module == unit or module.startswith(unit + ".")]
    return max(owners, key=len, default=None)


@cache
def exported(module: str) -> frozenset[str] | None:
    """The module's `__all__` (a package's, from its `__init__`); None when it has none."""
    names = getattr(importlib.import_module(module), "__all__", None)
    return None if names is None else frozenset(names)


def test_imports_are_absolute():
    relative = [f"{module}:{node.lineno}" for module, node in statements()
                if isinstance(node, ast.ImportFrom) and node.level]
    assert relative == []


def test_every_module_belongs_to_a_ranked_unit():
    assert [module for module in modules() if unit_of(module) is None and module not in ROOT_MODULES] == []


def test_imports_point_one_way():
    against = [
        f"{found} ({unit_of(found.importer)} may not import {unit_of(found.target)})"
        for found in imports()
        if (importer := unit_of(found.importer)) != (target := unit_of(found.target))
        and (importer is None or target is None or RANKS[target] >= RANKS[importer])
    ]
    assert against == []


def test_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = {module: set() for module in modules()}
    for found in imports():
        # `from package import submodule` imports the submodule (a package's own `__init__` runs first for
        # every import of its modules, and is left out here as it is for those)
        submodules = {f"{found.target}.{name}" for name in found.names} & graph.keys()
        graph[found.importer] |= submodules
        if len(submodules) < len(found.names) or not found.names:
            graph[found.importer].add(found.target)
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as cycle:
        pytest.fail(f"import cycle: {' -> '.join(cycle.args[1])}")


def test_other_packages_are_imported_through_their_faces():
    wrong = []
    for found in imports():
        own, theirs = package_of(found.importer), package_of(found.target)
        if found.target in ROOT_MODULES:  # the composition root is a module: its face is its own __all__
            theirs = found.target
        if own == theirs or found.importer in PENDING_IMPORTERS:
            continue
        if found.target != theirs:
            if theirs not in PENDING_FACES:
                wrong.append(f"{found} (import from {theirs}, not its module {found.target})")
            continue
        names = exported(theirs) or frozenset()
        wrong += [f"{found} ({name} is not in {theirs}.__all__)" for name in found.names if name not in names]
    assert wrong == []


def test_the_known_exceptions_are_still_needed():
    through_modules = {
        found.importer
        for found in imports()
        if found.target not in ROOT_MODULES and package_of(found.target) not in (found.target, package_of(found.importer))
    }
    assert PENDING_IMPORTERS <= through_modules
    assert {package for package in PENDING_FACES if exported(package) is None} == PENDING_FACES


def test_no_private_name_is_imported_from_another_package():
    private = [
        f"{found} ({name})"
        for found in imports()
        if package_of(found.importer) != package_of(found.target)
        for name in found.names
        if name.startswith("_") and name != "__future__"
    ]
    assert private == []


def test_every_package_exports_what_its_all_names():
    missing = []
    for package in modules():
        if not (is_package(package) or package in ROOT_MODULES) or package in PENDING_FACES:
            continue
        names = exported(package)
        if names is None:
            missing.append(f"{package} has no __all__")
            continue
        loaded = importlib.import_module(package)
        missing += [f"{package}.__all__ names {name}, which it does not have" for name in sorted(names)
                    if not hasattr(loaded, name)]
    assert missing == []


def test_orchestrator_holds_packages_and_the_composition_root():
    loose = [path.name for path in sorted((ROOT / "orchestrator").glob("*.py"))]
    assert loose == ["__init__.py", "composition.py"]
