"""An AST check of plw's declared layer order (docs/architecture.md).

Every `import` in every module of the package counts, including imports inside functions and
relative imports. Reported: an import of a higher layer, an import between two packages of the
same layer, an import cycle among modules, a private name (`_x`) taken from another module, and an
`except ImportError` around an import of the package's own modules.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

# Lowest first. Names on one level may not import each other (within one package they may).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "io", "ui"),
    ("loss",),
    ("data",),
    ("train",),
    ("integrations",),
    ("eval",),
    ("results",),
    ("experiment", "analysis"),
    ("serve",),
    ("commands",),  # each package's commands.py: the CLI's parts, registered by cli.py
    ("cli",),
)


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, e.g. "plw.data.encode"
    target: str  # imported module
    line: int
    names: tuple[str, ...] = ()  # names taken with `from target import ...`
    guarded: bool = False  # inside `try: ... except ImportError`


@dataclass
class Graph:
    package: str
    modules: set[str] = field(default_factory=set)
    edges: list[Edge] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


def module_name(root: Path, path: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def load_graph(root: Path, package: str | None = None) -> Graph:
    """Parse every module under the package directory `root` into an import graph."""
    package = package or root.name
    graph = Graph(package)
    trees = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(root, path, package)
        graph.modules.add(name)
        graph.files[name] = path
        trees[name] = (path, ast.parse(path.read_text(), filename=str(path)))
    for name, (path, tree) in trees.items():
        is_package = path.name == "__init__.py"
        graph.edges.extend(_edges(tree, name, is_package, graph))
    return graph


def _guarded_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            for stmt in node.body:
                for sub in ast.walk(stmt):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        lines.add(sub.lineno)
    return lines


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(k, ast.Name) and k.id in ("ImportError", "ModuleNotFoundError") for k in kinds)


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _edges(tree: ast.AST, name: str, is_package: bool, graph: Graph) -> list[Edge]:
    guarded = _guarded_lines(tree)
    edges = []
    pkg = graph.package
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == pkg or alias.name.startswith(pkg + "."):
                    edges.append(Edge(name, alias.name, node.lineno, (), node.lineno in guarded))
        elif isinstance(node, ast.ImportFrom):
            target = (_resolve_relative(name, is_package, node.level, node.module) if node.level
                      else node.module)
            if not target or not (target == pkg or target.startswith(pkg + ".")):
                continue
            plain = []
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in graph.modules:
                    edges.append(Edge(name, sub, node.lineno, (), node.lineno in guarded))
                else:
                    plain.append(alias.name)
            if plain:
                edges.append(Edge(name, target, node.lineno, tuple(plain), node.lineno in guarded))
    edges.extend(_private_attributes(tree, name, graph))
    return edges


def _private_attributes(tree: ast.AST, name: str, graph: Graph) -> list[Edge]:
    """`mod._x` where `mod` is a module of the package bound by `import ... as mod` or
    `from pkg import mod`."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and a.name in graph.modules:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if f"{node.module}.{a.name}" in graph.modules:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return [Edge(name, aliases[n.value.id], n.lineno, (n.attr,))
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases
            and n.attr.startswith("_") and not n.attr.startswith("__")]


def component(module: str, package: str) -> str:
    """The layer name of a module: its top-level package or module, or `commands` for a
    package's `commands.py`."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    if len(parts) >= 3 and parts[-1] == "commands":
        return "commands"
    return parts[1]


def level_of(comp: str) -> int | None:
    for i, names in enumerate(LAYERS):
        if comp in names:
            return i
    return None


def layer_violations(graph: Graph) -> list[str]:
    out = []
    for e in graph.edges:
        if e.target not in graph.modules:
            out.append(f"{e.source}:{e.line}: imports {e.target}, which does not exist")
            continue
        src, dst = component(e.source, graph.package), component(e.target, graph.package)
        ls, ld = level_of(src), level_of(dst)
        if ls is None or ld is None:
            out.append(f"{e.source}:{e.line}: {src if ls is None else dst} has no declared layer")
        elif ld > ls:
            out.append(f"{e.source}:{e.line}: upward import of {e.target} ({src} < {dst})")
        elif ld == ls and src != dst and not _same_package(e.source, e.target):
            out.append(f"{e.source}:{e.line}: imports {e.target} on its own layer ({src}, {dst})")
    return out


def _same_package(a: str, b: str) -> bool:
    return a.split(".")[:2] == b.split(".")[:2] and len(a.split(".")) > 2 and len(b.split(".")) > 2


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself)."""
    adj: dict[str, set[str]] = {m: set() for m in graph.modules}
    for e in graph.edges:
        if e.target in adj:
            adj[e.source].add(e.target)
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(adj[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in adj[v]:
                found.append(sorted(comp))

    for v in sorted(adj):
        if v not in index:
            visit(v)
    return found


def private_imports(graph: Graph) -> list[str]:
    out = []
    for e in graph.edges:
        leaf = e.target.rsplit(".", 1)[-1]
        if leaf.startswith("_") and not leaf.startswith("__") and e.target != e.source:
            out.append(f"{e.source}:{e.line}: imports the private module {e.target}")
        for n in e.names:
            if n.startswith("_") and not n.startswith("__") and e.target != e.source:
                out.append(f"{e.source}:{e.line}: imports private {n} from {e.target}")
    return out


def guarded_imports(graph: Graph) -> list[str]:
    return [f"{e.source}:{e.line}: `except ImportError` around an import of {e.target}"
            for e in graph.edges if e.guarded]


def all_problems(graph: Graph) -> list[str]:
    problems = layer_violations(graph) + private_imports(graph) + guarded_imports(graph)
    problems += ["import cycle: " + " <-> ".join(c) for c in cycles(graph)]
    return problems
