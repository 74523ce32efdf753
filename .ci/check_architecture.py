"""The package's shape, checked: layers, cycles, module sizes, library internals, type escapes.

Run as ``python .ci/check_architecture.py`` (tests/test_architecture.py runs it too, so the
README's test command covers it). Each rule below has a list of known exceptions that the
architecture issue is still removing; a listed module that no longer breaks its rule fails
the check as well, so the lists can only shrink.

Rules:

1. **Layers.** Data flows down the folders; a module imports only modules of its own folder
   or of a folder below it (``LAYERS``, top first). ``http2`` and ``http1`` are peers and
   do not import each other. Imports under ``TYPE_CHECKING`` and inside functions count.
2. **No import cycle** between modules, under the same counting.
3. **Module size**: at most ``MAX_LINES`` lines.
4. **Library internals are fenced**: a private name (one leading underscore) of h2, hpack
   or hyperframe is used only in ``FENCE``, which checks them at import (and may probe
   for them with ``getattr``).
5. **No ``type: ignore``** in the package.
6. **Capabilities, not classes**: outside ``transport/``, no ``isinstance`` on a concrete
   stream class; where streams meet (``PROBED``), no ``getattr`` probing for a member.
7. **Stream errors caught by one name**: outside ``transport/``, a handler lists no tuple of
   trio's stream errors; it catches ``transport.errors.STREAM_GONE``.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "h2ws_proxy"
ROOT = Path(__file__).resolve().parent.parent / "proxy" / PACKAGE

#: Top first. A module's layer is its folder, or its own name at the package's top.
LAYERS: list[set[str]] = [
    {"__main__"},
    {"cli"},
    {"client"},
    {"server"},
    {"http2", "http1"},
    {"relay"},
    {"backend"},
    {"http", "websocket", "h2session"},
    {"config"},
    {"transport"},
    {"errors", "log", "counters", "__init__"},
    {"log_lines"},
    {"log_texts"},
]
MAX_LINES = 400
#: The one module that may touch h2's, hpack's and hyperframe's private names.
FENCE = f"{PACKAGE}.h2session.library_internals"
LIBRARIES = ("h2", "hpack", "hyperframe")
#: Folders where a ``getattr`` would be duck typing of a stream or an event.
PROBED = {"http2", "http1", "relay", "backend", "server"}
CONCRETE_STREAMS = {
    "LeanSocketStream",
    "LeanTLSStream",
    "LeanTLSClientStream",
    "SSLStream",
    "SocketStream",
}

#: Known exceptions, each still to be removed (issue 13). Keys are module names.
PENDING: dict[str, set[str]] = {
    "size": set(),
    "internals": set(),
    "type_ignore": set(),
    "concrete_class": set(),
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join((PACKAGE, *parts))] = path
    return found


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise SystemExit(f"{module}: its folder {top!r} is in no layer of LAYERS")


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The package's modules that ``module`` imports, anywhere in it, with line numbers."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    yield _known(alias.name, known), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith(PACKAGE):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield (candidate if candidate in known else _known(base, known)), node.lineno


def _known(name: str, known: dict[str, Path]) -> str:
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def library_private_names() -> set[str]:
    """Every private name h2, hpack and hyperframe define (attributes, functions, globals)."""
    names: set[str] = set()
    for library in LIBRARIES:
        spec = importlib.util.find_spec(library)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"{library} is not installed: pip install -e '.[test]'")
        for path in Path(next(iter(spec.submodule_search_locations))).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                name = None
                if isinstance(node, ast.FunctionDef | ast.ClassDef):
                    name = node.name
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    name = node.attr
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    name = node.id
                if name and name.startswith("_") and not name.startswith("__"):
                    names.add(name)
    return names


def own_names(paths: list[Path]) -> set[str]:
    """Names the package defines itself (a use of one is not a library's)."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return names


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def uses_library(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
            alias.name.split(".")[0] in LIBRARIES for alias in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            return True
    return False


def private_uses(tree: ast.Module, private: set[str]) -> Iterator[tuple[str, int]]:
    """Library-private names a module reads, overrides or imports."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in private:
            yield node.attr, node.lineno
        elif isinstance(node, ast.FunctionDef) and node.name in private:
            yield node.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            for alias in node.names:
                if alias.name.startswith("_"):
                    yield alias.name, node.lineno


def concrete_class_uses(tree: ast.Module, probed: bool) -> Iterator[tuple[str, int]]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        if node.func.id == "getattr" and probed:
            yield "getattr", node.lineno
        elif node.func.id == "isinstance" and len(node.args) == 2:
            for name in ast.walk(node.args[1]):
                label = name.attr if isinstance(name, ast.Attribute) else getattr(name, "id", "")
                if label in CONCRETE_STREAMS:
                    yield f"isinstance {label}", node.lineno


def _lists_stream_errors(handler: ast.ExceptHandler) -> bool:
    """A handler whose exception tuple names both of trio's stream errors itself."""
    if not isinstance(handler.type, ast.Tuple):
        return False
    names = {element.attr for element in handler.type.elts if isinstance(element, ast.Attribute)}
    return {"BrokenResourceError", "ClosedResourceError"} <= names


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def check() -> list[str]:
    """Every breach of the rules, one line each (empty: the shape holds)."""
    known = modules()
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    # A name the package defines itself is ours wherever it is used, except where it is
    # defined in a module that imports the libraries (an override, or a copy of theirs).
    ours = own_names([path for path in known.values() if not uses_library(_parse(path))])
    private = library_private_names() - ours
    breaking: dict[str, set[str]] = {rule: set() for rule in PENDING}
    for module, path in known.items():
        text = path.read_text()
        tree = ast.parse(text)
        graph[module] = set()
        rank = layer_of(module)
        folder = module.split(".")[1] if "." in module else ""
        for target, line in imports(module, path, known):
            if target in (module, PACKAGE):
                continue
            graph[module].add(target)
            target_folder = target.split(".")[1]
            target_rank = layer_of(target)
            if target_folder != folder and target_rank <= rank:
                problems.append(f"{path}:{line}: layers: {module} imports {target}, not below it")
        lines = text.count("\n")
        if lines > MAX_LINES:
            breaking["size"].add(module)
            if module not in PENDING["size"]:
                problems.append(f"{path}: size: {lines} lines, over {MAX_LINES}")
        if module != FENCE:
            for name, line in private_uses(tree, private):
                breaking["internals"].add(module)
                if module not in PENDING["internals"]:
                    problems.append(f"{path}:{line}: internals: {name} outside {FENCE}")
        for number, line_text in enumerate(text.splitlines(), 1):
            if "type: ignore" in line_text:
                breaking["type_ignore"].add(module)
                if module not in PENDING["type_ignore"]:
                    problems.append(f"{path}:{number}: type: ignore")
        if folder != "transport":
            for node in ast.walk(tree):
                if isinstance(node, ast.ExceptHandler) and _lists_stream_errors(node):
                    problems.append(f"{path}:{node.lineno}: errors: catch STREAM_GONE instead")
        if folder != "transport" and module != FENCE:
            for what, line in concrete_class_uses(tree, folder in PROBED):
                breaking["concrete_class"].add(module)
                if module not in PENDING["concrete_class"]:
                    problems.append(f"{path}:{line}: capability: {what} outside transport/")
    for cycle in find_cycles(graph):
        problems.append("cycle: " + " -> ".join(cycle))
    for rule, pending in PENDING.items():
        for module in sorted(pending - breaking[rule]):
            problems.append(f"{module}: no longer breaks {rule!r}: take it off PENDING")
    return problems


def main() -> int:
    problems = check()
    for problem in problems:
        print(problem)
    print(f"architecture: {len(problems)} problem(s) in {len(modules())} modules")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
