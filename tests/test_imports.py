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
``evaluation``, ``metrics``), ``trainers``, then ``hf_ext.cli`` (which loads every job). An import
may only point to the same layer or one below it, no module of hf_ext imports trainers, and
nothing may go round in a circle: not between modules, and not between domains (``select`` ->
``critique`` -> ``select`` via two acyclic module paths is still a circle of concepts).

The job registry (``hf_ext.config.JOBS``: "module:attribute" strings) is not an import here: it
names runners the command line loads, as entry points would.
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict, deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hf_ext", "trainers")
DOMAINS = ("select", "curate", "merge", "adapters", "scaling", "critique", "evaluation", "metrics")


def find_modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the packages (a package is its ``__init__``)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


class _Reader:
    def __init__(self, modules: dict[str, Path]):
        self.modules = modules
        self._cache: dict[str, list[tuple[str, list[str] | None, int]]] = {}

    def is_package(self, name: str) -> bool:
        return self.modules[name].name == "__init__.py"

    def resolve_relative(self, module: str, level: int, target: str | None) -> str:
        base = (module if self.is_package(module) else module.rpartition(".")[0]).split(".")
        base = base[: len(base) - (level - 1)]
        return ".".join([*base, target] if target else base)

    def imports(self, name: str) -> list[tuple[str, list[str] | None, int]]:
        """(imported module, names taken from it or None for ``import x``, line) of every import in a module."""
        if name in self._cache:
            return self._cache[name]
        tree = ast.parse(self.modules[name].read_text(encoding="utf-8"))
        found: list[tuple[str, list[str] | None, int]] = []
        dynamic = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(alias.name, None, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = self.resolve_relative(name, node.level, node.module) if node.level else node.module
                found.append((module, [alias.name for alias in node.names], node.lineno))
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module":
                dynamic = True
        if dynamic:  # lazy tables: {"Name": ".submodule"} read by importlib.import_module(..., __name__)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("."):
                    relative = node.value.lstrip(".")
                    if relative:
                        module = self.resolve_relative(name, len(node.value) - len(relative), relative)
                        if module in self.modules:
                            found.append((module, None, node.lineno))
        self._cache[name] = found
        return found

    def reexport_source(self, package: str, attribute: str, seen: frozenset = frozenset()) -> str:
        """The module that defines ``attribute`` when it is taken from ``package``'s ``__init__``."""
        if f"{package}.{attribute}" in self.modules:
            return f"{package}.{attribute}"
        if package in seen or not self.is_package(package):
            return package
        for module, names, _ in self.imports(package):
            if names and attribute in names and module in self.modules and module != package:
                return self.reexport_source(module, attribute, seen | {package})
        return package


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first such import}, between the given modules (default:
    hf_ext and trainers)."""
    modules = find_modules() if modules is None else modules
    reader = _Reader(modules)
    roots = {name.split(".")[0] for name in modules}
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name in modules:
        own = set(_ancestors(name)) | {name}  # started before this module runs
        for module, names, line in reader.imports(name):
            if module is None or module.split(".")[0] not in roots:
                continue
            targets = [a for a in _ancestors(module) if a in modules]
            if module in modules:
                targets.append(module)
                if names and reader.is_package(module):  # `from package import name`: also where name comes from
                    targets += [reader.reexport_source(module, n) for n in names]
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


RANK = {"base": 0, "domain": 1, "trainers": 2, "cli": 3}


@functools.cache
def _repo_graph() -> dict[str, dict[str, int]]:
    return import_graph()


def test_the_reader_follows_every_kind_of_import(tmp_path):
    files = {
        "pkg/__init__.py": "from .core import Thing\n",
        "pkg/core.py": "import os\nThing = 1\n",
        "pkg/base/__init__.py": "from .low import helper\n",
        "pkg/base/low.py": "def helper():\n    from ..domain import lazy  # function level, two dots\n",
        "pkg/domain/__init__.py": (
            "import importlib\n_LAZY = {'lazy': '.heavy'}\n"
            "def __getattr__(name):\n    return getattr(importlib.import_module(_LAZY[name], __name__), name)\n"
        ),
        "pkg/domain/heavy.py": "from pkg.base import helper  # a re-export: the edge goes to base.low\nlazy = 2\n",
        "pkg/domain/sibling.py": "from . import heavy\nimport pkg.core\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    graph = import_graph(find_modules(tmp_path, ("pkg",)))
    assert graph["pkg"] == {"pkg.core": 1}
    assert graph["pkg.core"] == {}  # outside modules do not count
    assert graph["pkg.base.low"] == {"pkg.domain": 2}
    assert graph["pkg.domain"] == {"pkg.domain.heavy": 2}  # the lazy table of a __getattr__
    assert graph["pkg.domain.heavy"] == {"pkg.base": 1, "pkg.base.low": 1}  # the package's __init__ runs too
    assert graph["pkg.domain.sibling"] == {"pkg.domain.heavy": 1, "pkg.core": 2}  # own packages are already started
    cycle = ["pkg.base.low", "pkg.domain", "pkg.domain.heavy", "pkg.base.low"]
    assert _components(graph) == [sorted(["pkg.base", *cycle[:3]])]
    assert _describe(graph, _shortest_cycle(graph, "pkg.base.low", set(cycle))) == (
        "pkg.base.low (line 2) -> pkg.domain (line 2) -> pkg.domain.heavy (line 1) -> pkg.base.low")


def test_no_import_cycles():
    graph = _repo_graph()
    cycles = [_describe(graph, _shortest_cycle(graph, c[0], set(c))) + f"  [component: {', '.join(c)}]"
              for c in _components(graph)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_cycles_between_domains():
    graph = _repo_graph()
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
    graph = _repo_graph()
    upward = [f"{name} ({layer(name)}) imports {dep} ({layer(dep)}) at line {line}"
              for name, deps in graph.items() for dep, line in deps.items() if RANK[layer(dep)] > RANK[layer(name)]]
    assert not upward, "imports that go upward (base < domain < trainers < cli):\n" + "\n".join(upward)


def test_hf_ext_never_imports_trainers():
    graph = _repo_graph()
    found = [f"{name} imports {dep} at line {line}" for name, deps in graph.items() if name.startswith("hf_ext")
             for dep, line in deps.items() if dep.split(".")[0] == "trainers"]
    assert not found, "hf_ext must not import trainers (trainers build on hf_ext):\n" + "\n".join(found)
