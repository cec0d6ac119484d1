"""The import graph of ``yoso_deploy``, read from the source with :mod:`ast` (nothing is imported).

Every way one module reaches another counts as an edge:

* ``import a.b`` / ``from a import b`` / relative ``from ..x import y`` -- at module level or inside a function;
* ``importlib.import_module("a.b")`` / ``import_module(".x", __package__)`` with a string literal;
* ``require("a.b", ...)`` (``yoso_deploy.errors.require``, which imports its argument);
* a package's lazy table (``_LAZY = {"Name": ".module"}``, resolved by PEP 562 ``__getattr__``): an edge from the
  package to each module it names, and from ``from pkg import Name`` to the module that defines ``Name``.

Each edge records whether it runs at import time (module level) or later (inside a function, through a lazy
table). Stages are the first package level under ``yoso_deploy`` (``runtime``, ``serving``, ...); the shared
modules at the top (``errors``, ``constants``, ``tasks``, ``manifest``, ...) form the stage ``core``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "yoso_deploy"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str  # a yoso_deploy module, or a third-party top-level name
    lineno: int
    eager: bool  # runs when ``source`` is imported
    table: bool = False  # an entry of a package's lazy table: loaded only when that name is asked for


@dataclass
class Graph:
    modules: dict[str, Path]
    edges: list[Edge] = field(default_factory=list)

    def internal(self, eager_only: bool = False, tables: bool = False) -> dict[str, set[str]]:
        """yoso_deploy module -> the modules it imports (``tables``: with the lazy tables' entries, which load only
        when asked for -- they count for cycles, not for what importing a module loads)."""
        out: dict[str, set[str]] = {m: set() for m in self.modules}
        for e in self.edges:
            if e.target in self.modules and (e.eager or not eager_only) and (tables or not e.table):
                out[e.source].add(e.target)
        return out

    def external(self, module: str, eager_only: bool = False) -> set[str]:
        return {e.target for e in self.edges if e.source == module and e.target not in self.modules
                and (e.eager or not eager_only) and not e.table}

    def closure(self, start: str, eager_only: bool = False) -> set[str]:
        """Every yoso_deploy module that importing ``start`` (and, unless ``eager_only``, calling its functions)
        may load, ``start`` and the packages above each module included."""
        graph = self.internal(eager_only)
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            todo.extend(graph[m])
            todo.extend(p for p in parents(m) if p in self.modules)  # a package's __init__ runs first
        return seen

    def third_party_closure(self, start: str, eager_only: bool = False) -> dict[str, list[str]]:
        """Third-party top-level names reachable from ``start`` -> the import chain that reaches each one."""
        graph = self.internal(eager_only)
        prev: dict[str, str | None] = {start: None}
        todo = [start]
        while todo:
            m = todo.pop(0)
            for n in sorted(graph[m]) + [p for p in parents(m) if p in self.modules]:
                if n not in prev:
                    prev[n] = m
                    todo.append(n)
        out: dict[str, list[str]] = {}
        for m in prev:
            for ext in self.external(m, eager_only):
                if ext in out:
                    continue
                chain, cur = [ext], m
                while cur is not None:
                    chain.append(cur)
                    cur = prev[cur]
                out[ext] = chain[::-1]
        return out

    def stage_graph(self) -> dict[str, set[str]]:
        """stage -> the stages its modules import (lazy tables included)."""
        out: dict[str, set[str]] = {}
        for src, targets in self.internal(tables=True).items():
            for t in targets:
                if stage(src) != stage(t):
                    out.setdefault(stage(src), set()).add(stage(t))
        return out

    def cycles(self) -> list[list[str]]:
        """Strongly connected components of more than one module (or a module importing itself)."""
        graph = self.internal(tables=True)
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on: set[str] = set()
        out: list[list[str]] = []
        counter = [0]

        def visit(v: str) -> None:  # Tarjan, iterative over the adjacency of small graphs is not needed
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in sorted(graph[v]):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in graph[v]:
                    out.append(sorted(comp))

        for v in sorted(graph):
            if v not in index:
                visit(v)
        return out


def parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def stage(module: str) -> str:
    """``yoso_deploy.runtime.models`` -> ``runtime``; the modules at the top (and the package itself) -> ``core``;
    ``yoso_deploy.hf`` and ``yoso_deploy.workflow`` are stages of their own."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core"
    if len(parts) == 2 and parts[1] not in ("hf", "workflow"):
        return "core" if not (ROOT_DIR / parts[1] / "__init__.py").is_file() else parts[1]
    return parts[1]


ROOT_DIR = Path(__file__).resolve().parents[2] / PACKAGE


def module_files(root: Path = ROOT_DIR) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _lazy_table(tree: ast.Module) -> dict[str, str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets) \
                and isinstance(node.value, ast.Dict):
            return {k.value: v.value for k, v in zip(node.value.keys, node.value.values)
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)}
    return {}


def build(root: Path = ROOT_DIR) -> Graph:
    files = module_files(root)
    graph = Graph(files)
    trees = {m: ast.parse(p.read_text(), str(p)) for m, p in files.items()}
    lazy = {}
    for m, tree in trees.items():
        if files[m].name == "__init__.py":
            table = _lazy_table(tree)
            lazy[m] = {name: _resolve_relative(m, True, len(t) - len(t.lstrip(".")), t.lstrip(".") or None)
                       if t.startswith(".") else t for name, t in table.items()}

    def target(name: str) -> str:
        """A dotted name -> the yoso_deploy module it is, or its third-party top-level name."""
        if name.split(".")[0] != PACKAGE:
            return name.split(".")[0]
        parts = name.split(".")
        while parts and ".".join(parts) not in files:
            parts.pop()
        return ".".join(parts)

    for m, tree in trees.items():
        is_pkg = files[m].name == "__init__.py"
        function_nodes = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                for sub in ast.walk(node):
                    if sub is not node:
                        function_nodes.add(id(sub))

        def add(t: str, node, eager: bool | None = None, table: bool = False) -> None:
            if t and t != m:
                eager = (id(node) not in function_nodes) if eager is None else eager
                graph.edges.append(Edge(m, t, getattr(node, "lineno", 0), eager, table))

        for table_target in lazy.get(m, {}).values():
            add(target(table_target), tree, eager=False, table=True)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    add(target(a.name), node)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve_relative(m, is_pkg, node.level, node.module) if node.level else (node.module or "")
                for a in node.names:
                    full = f"{base}.{a.name}"
                    if full in files:
                        add(full, node)
                    else:
                        add(target(base), node)
                        if base in lazy and a.name in lazy[base]:
                            add(target(lazy[base][a.name]), node)
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                fn = node.func
                fname = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                if fname not in ("import_module", "require", "__import__"):
                    continue
                arg = node.args[0].value
                if arg.startswith("."):
                    level = len(arg) - len(arg.lstrip("."))
                    arg = _resolve_relative(m, is_pkg, level, arg.lstrip(".") or None)
                add(target(arg), node)
    return graph
