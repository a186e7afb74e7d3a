"""The walls of the house (ARCHITECTURE.md, "The floors"), held against the code's own imports: a module
imports only from its own floor or the floors below it, and no two modules import each other in a loop."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "storefs"

# Top floor first. A module belongs to the first entry its dotted name starts with.
FLOORS: list[tuple[str, ...]] = [
    ("storefs.cli", "storefs.__main__", "storefs.statuscmd"),
    ("storefs.mounting", "storefs.vaultadmin"),
    ("storefs.fuse", "storefs.status"),
    ("storefs.fs",),
    ("storefs.retrieval",),
    ("storefs.providers", "storefs.vaults"),
    ("storefs.attrs", "storefs.config", "storefs.configcmd"),
    ("storefs.store",),
    ("storefs.wire",),
    ("storefs.options", "storefs.paths", "storefs.errors", "storefs.localfiles", "storefs.isotime",
     "storefs.logsetup", "storefs.mounthelper", "storefs.unitfile", "storefs.sdnotify", "storefs"),
]


def floor_of(module: str) -> int:
    for index, prefixes in enumerate(FLOORS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise AssertionError(f"{module} stands on no floor: add it to FLOORS and to ARCHITECTURE.md")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The storefs modules `module` imports (a name imported from a package counts as its module
    where it is one)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names if alias.name.startswith("storefs"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not source.startswith("storefs"):
                continue
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                targets.add(candidate if candidate in known else source)
    return {target for target in targets if target in known and target != module}


def test_every_import_goes_to_the_same_floor_or_below():
    known = modules()
    upward = []
    for module, path in sorted(known.items()):
        for target in sorted(imports_of(module, path, known)):
            if floor_of(target) < floor_of(module):
                upward.append(f"{module} imports {target}")
    assert not upward, "imports that run up a floor:\n" + "\n".join(upward)


def test_no_import_loops():
    known = modules()
    graph = {module: imports_of(module, path, known) for module, path in known.items()}
    # A package's __init__ re-exporting its own modules is not a loop of design.
    graph = {module: {t for t in targets if not module.startswith(t + ".")} for module, targets in graph.items()}
    state: dict[str, int] = {}
    loops: list[list[str]] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                loops.append(trail[trail.index(target):] + [target] if target in trail else [module, target])
            elif target not in state:
                visit(target, trail + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not loops, "import loops:\n" + "\n".join(" -> ".join(loop) for loop in loops)


@pytest.mark.parametrize("forbidden, allowed_in", [("requests", {"storefs.wire.transport_requests"}),
                                                   ("urllib3", {"storefs.wire.transport_requests"}),
                                                   ("fuse", {"storefs.fuse.bindings"}),
                                                   ("mfusepy", {"storefs.fuse.bindings"})])
def test_third_party_walls(forbidden, allowed_in):
    found = set()
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(name == forbidden or name.startswith(forbidden + ".") for name in names):
                found.add(module)
    assert found <= allowed_in, f"{forbidden} imported outside {allowed_in}: {sorted(found - allowed_in)}"
