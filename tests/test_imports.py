"""The import graph of hf_ext and trainers: no cycles, and imports only go downward.

The graph is read from the source (``ast``), not by importing: every ``import`` and ``from ... import``
of a module counts, at any depth (function-level imports included: they run too), with relative
imports resolved and a name taken from a package resolved to the submodule its ``__init__``
re-exports it from. Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``, so those
are edges too, except the importing module's own enclosing packages (Python has already started
them). ``importlib.import_module(".name", __name__)`` with the relative names a package's lazy
``__getattr__`` table holds counts as an import of those submodules.

Layers, bottom to top: the base modules (``hf_ext/*.py`` other than ``cli``, and ``hf_ext.hub``),
the domains (``select``, ``curate``, ``merge``, ``adapters``, ``scaling``, ``critique``,
``evaluation``, ``metrics``), ``hf_ext.cli``, then ``trainers``. An import may only point to the
same layer or one below it, and nothing may go round in a circle: not between modules, and not
between domains (``select`` -> ``critique`` -> ``select`` via two acyclic module paths is still a
circle of concepts).

The job registry (``hf_ext.config.JOBS``: "module:attribute" strings) is not an import here: it
names runners the command line loads, as entry points would.
"""

from __future__ import annotations

import ast
from collections import defaultdict, deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hf_ext", "trainers")
DOMAINS = ("select", "curate", "merge", "adapters", "scaling", "critique", "evaluation", "metrics")

# Cycles still allowed, each as the sorted tuple of the modules of its strongly connected component.
# Empty when the graph is clean; an entry here is a known, owned debt, never a way to silence a new cycle.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve_relative(module: str, level: int, target: str | None) -> str:
    package = module if _is_package(module) else module.rpartition(".")[0]
    base = package.split(".")
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _imports(name: str) -> list[tuple[str, list[str] | None, int]]:
    """(imported module, names taken from it or None for ``import x``, line) of every import in a module."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found: list[tuple[str, list[str] | None, int]] = []
    dynamic = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve_relative(name, node.level, node.module) if node.level else node.module
            found.append((module, [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module":
            dynamic = True
    if dynamic:  # lazy tables: {"Name": ".submodule"} read by importlib.import_module(..., __name__)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("."):
                relative = node.value.lstrip(".")
                if relative and relative.replace(".", "").replace("_", "").isalnum():
                    level = len(node.value) - len(relative)
                    found.append((_resolve_relative(name, level, relative), None, node.lineno))
    return found


def _reexport_source(package: str, attribute: str, seen: frozenset = frozenset()) -> str:
    """The module that defines ``attribute`` when it is taken from ``package``'s ``__init__``."""
    if f"{package}.{attribute}" in MODULES:
        return f"{package}.{attribute}"
    if package in seen or not _is_package(package):
        return package
    for module, names, _ in _imports(package):
        if names and attribute in names and module in MODULES and module != package:
            return _reexport_source(module, attribute, seen | {package}) if _is_package(module) else module
    return package


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: first line}, for the modules of hf_ext and trainers."""
    graph: dict[str, dict[str, int]] = {name: {} for name in MODULES}
    for name in MODULES:
        own = set(_ancestors(name)) | {name}
        for module, names, line in _imports(name):
            if module is None or module.split(".")[0] not in PACKAGES:
                continue
            targets = [a for a in _ancestors(module) if a in MODULES]
            if module in MODULES:
                targets.append(module)
                if names and _is_package(module):  # `from package import name`: also where name comes from
                    targets += [_reexport_source(module, n) for n in names]
            for target in targets:
                if target not in own:
                    graph[name].setdefault(target, line)
    return graph


def _components(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.get(child, {}))))
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


def _shortest_cycle(graph: dict[str, dict[str, int]], start: str, members: set[str]) -> list[str]:
    previous = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in graph[node]:
            if child == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child in members and child not in previous:
                previous[child] = node
                queue.append(child)
    return [start]


def _describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    steps = [f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join([*steps, cycle[-1]])


def layer(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "trainers":
        return "trainers"
    if name == "hf_ext.cli":
        return "cli"
    if len(parts) > 1 and parts[1] in DOMAINS:
        return "domain"
    return "base"


RANK = {"base": 0, "domain": 1, "cli": 2, "trainers": 3}


def test_the_graph_reads_the_known_shapes():
    graph = import_graph()
    assert "hf_ext.errors" in graph["hf_ext"]  # relative import in a package __init__
    assert "hf_ext.hub.sync" in graph["hf_ext.hub"]
    # a name from a package resolves to the submodule that defines it, and the package's own __init__ counts
    users = [m for m, deps in graph.items() if "hf_ext.hub" in deps]
    assert users and all("hf_ext.hub.sync" in graph[m] or "hf_ext.hub.cards" in graph[m] or m == "hf_ext.cli"
                         or any(d.startswith("hf_ext.hub.") for d in graph[m]) for m in users)
    assert "hf_ext.select.sae.featurizer" in graph["hf_ext.select.sae"]  # the lazy table of a __getattr__
    toy = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    assert _components(toy) == [["a", "b", "c"]]
    assert _describe(toy, _shortest_cycle(toy, "a", {"a", "b", "c"})) == "a (line 1) -> b (line 2) -> c (line 3) -> a"


def test_no_import_cycles():
    graph = import_graph()
    found = {tuple(c): c for c in _components(graph)}
    unexpected = [_describe(graph, _shortest_cycle(graph, c[0], set(c))) + f"  [component: {', '.join(c)}]"
                  for key, c in found.items() if key not in KNOWN_CYCLES]
    assert not unexpected, "import cycles:\n" + "\n".join(unexpected)
    stale = KNOWN_CYCLES - set(found)
    assert not stale, f"these cycles are gone; remove them from KNOWN_CYCLES: {sorted(stale)}"


def test_no_cycles_between_domains():
    graph = import_graph()
    domains: dict[str, dict[str, int]] = defaultdict(dict)
    via: dict[tuple[str, str], str] = {}
    for name, deps in graph.items():
        if layer(name) != "domain":
            continue
        here = name.split(".")[1]
        domains.setdefault(here, {})
        for dep, line in deps.items():
            if layer(dep) == "domain" and (there := dep.split(".")[1]) != here:
                domains[here].setdefault(there, line)
                via.setdefault((here, there), f"{name} (line {line}) imports {dep}")
    for d in list(domains):
        for e in domains[d]:
            domains.setdefault(e, {})
    cycles = []
    for component in _components(domains):
        cycle = _shortest_cycle(domains, component[0], set(component))
        cycles.append(" -> ".join(cycle) + ": " + "; ".join(via[a, b] for a, b in zip(cycle, cycle[1:])))
    assert not cycles, "domains that import each other:\n" + "\n".join(cycles)


def test_imports_only_go_downward():
    graph = import_graph()
    upward = [f"{name} ({layer(name)}) imports {dep} ({layer(dep)}) at line {line}"
              for name, deps in graph.items() for dep, line in deps.items() if RANK[layer(dep)] > RANK[layer(name)]]
    assert not upward, "imports that go upward (base < domain < cli < trainers):\n" + "\n".join(upward)
