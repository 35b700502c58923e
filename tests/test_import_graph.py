"""The import graph of ``broker/`` and ``sandbox/``: no cycle between modules, no import against the
layering of docs/architecture.md ("Dependencies").

Imports are read with ``ast``, at module level and inside functions alike: an import moved into a
function to dodge a cycle still is one. Only ``if TYPE_CHECKING:`` blocks are left out, since they never
run (this is what lets every layer annotate with ``broker.services.Services``).
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: docs/architecture.md, "Dependencies", lowest layer first. A module may import its own layer and the
#: layers below it; the longest prefix in this table places a module. Keep the two tables identical.
LAYERS: dict[str, int] = {
    # 0: the base, which imports nothing above it
    "sandbox": 0,
    "broker.errors": 0,
    "broker.json_fields": 0,
    "broker.services": 0,  # its imports are for type checking only
    # 1: the core and the configuration
    "broker.core": 1,
    "broker.config": 1,
    # 2: the outgoing clients and the metrics
    "broker.network": 2,
    "broker.peers": 2,
    "broker.dicom": 2,  # the SCU, the association slots, TCP_NODELAY; the SCP is a front end (layer 5)
    "broker.metrics": 2,
    # 3: the jobs engine
    "broker.jobs": 3,
    # 4: scripting
    "broker.scripting": 4,
    # 5: the front ends and the event dispatcher
    "broker.http": 5,
    "broker.rest": 5,
    "broker.dicom.scp": 5,
    "broker.dicom.retrieve_scp": 5,  # an asynchronous C-MOVE is a job
    "broker.dicom.find_scp": 5,
    "broker.dicom.worklist_scp": 5,
    "broker.events": 5,
    # 6: start and stop
    "broker.server": 6,
    "broker.tenant": 6,
    "broker.cli": 6,
    "broker.workers": 6,
}

#: Imports that break the rules today and that other work of issue 8 removes; whoever merges that work
#: deletes the line. Keep this set minimal: a new entry needs an issue that removes it.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = {
}


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in ("broker", "sandbox"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    del modules["broker"]  # an empty __init__: the package is its modules
    return modules


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import under ``node``, skipping the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for sub in child.orelse:
                yield from _import_nodes(sub)
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from _import_nodes(child)


def _own_module(name: str) -> str | None:
    """The module of ``broker``/``sandbox`` that importing ``name`` runs (a package runs its ``__init__``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    """The modules of the project that ``module`` names in its imports."""
    path = MODULES[module]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        found.update(target for target in map(_own_module, names) if target is not None)
    found.discard(module)
    return found


def _run_by(module: str, imported: set[str]) -> set[str]:
    """``imported`` and the packages above each one, whose ``__init__`` runs first (but not the packages
    of ``module`` itself, which are already running)."""
    run = set(imported)
    for target in imported:
        parent = target.rpartition(".")[0]
        while parent in MODULES and not module.startswith(parent + "."):
            run.add(parent)
            parent = parent.rpartition(".")[0]
    return run


#: module -> the modules it names in its imports (the layers are checked on these)
IMPORTS = {module: _imports(module) for module in MODULES}
#: module -> the modules importing it runs (the cycles are looked for in these)
GRAPH = {module: _run_by(module, targets) for module, targets in IMPORTS.items()}


def layer(module: str) -> int:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    assert prefixes, f"{module} has no layer: add it to LAYERS here and to docs/architecture.md"
    return LAYERS[max(prefixes, key=len)]


def _cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(GRAPH):
        if root in index:
            continue
        work = [(root, iter(sorted(GRAPH[root])))]
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
                    work.append((child, iter(sorted(GRAPH[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer(module)


def test_no_import_cycle() -> None:
    cycles = _cycles()
    assert not cycles, "import cycles:\n" + "\n".join(
        " <-> ".join(component) + ": " + "; ".join(f"{a} -> {b}" for a in component for b in sorted(GRAPH[a])
                                                    if b in component)
        for component in cycles)


def test_imports_point_down_the_layers() -> None:
    upward = sorted((module, target) for module, targets in IMPORTS.items() for target in targets
                    if layer(target) > layer(module) and (module, target) not in KNOWN_EXCEPTIONS)
    assert not upward, "imports against docs/architecture.md's layers:\n" + "\n".join(
        f"{module} (layer {layer(module)}) -> {target} (layer {layer(target)})" for module, target in upward)


def test_sandbox_imports_nothing_of_broker() -> None:
    leaks = sorted((module, target) for module, targets in IMPORTS.items() if module.startswith("sandbox")
                   for target in targets if target.startswith("broker"))
    assert not leaks, f"sandbox/ must not know the broker: {leaks}"


def test_known_exceptions_are_still_needed() -> None:
    """A fixed exception comes off the list, so that it cannot come back unnoticed."""
    stale = sorted(pair for pair in KNOWN_EXCEPTIONS if pair[1] not in IMPORTS.get(pair[0], set()))
    assert not stale, f"no longer imported, remove from KNOWN_EXCEPTIONS: {stale}"


def test_the_layer_table_is_the_documented_one() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = {}
    for line in doc.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            for name in cells[1].split(","):
                name = name.strip().strip("`").removesuffix(".py").removesuffix("/").replace("/", ".")
                if name:
                    table[name] = int(cells[0])
    assert table == LAYERS
