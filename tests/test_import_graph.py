"""The package's import graph points one way (issue 19), checked on the sources with ``ast``
(nothing is imported or executed):

- no import circle between jrsv_stream modules, counting module-level imports and imports
  inside functions alike (a function-level import is still a dependency);
- the core (``stream/``, ``nn/``, ``decode/``, ``audio/``) imports nothing from ``serve/``,
  ``train/``, ``eval/`` or the command modules, nor ``websockets``;
- ``stream/`` (the network-free contract, sessions and the batching worker) imports nothing
  from ``nn/``: the contract does not know its implementations;
- nothing imports the CLI (``jrsv_stream.cli`` is on top).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "jrsv_stream"

CORE = ("stream", "nn", "decode", "audio")
# what the core must not import: the command layers (and the CLI) and the network
COMMANDS = ("serve", "train", "eval", "cli", "transcribe", "separate")
NETWORK = ("websockets",)


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package)."""
    mods = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (path, is_pkg)
    return mods


def _imports(module: str, path: Path, is_pkg: bool) -> list[tuple[str, int, bool]]:
    """Every import of ``module``: (imported dotted name, line, at module level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if is_pkg else module.rpartition(".")[0]
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, not in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[:len(package.split(".")) - (child.level - 1)]
                    name = ".".join(base + ([child.module] if child.module else []))
                else:
                    name = child.module or ""
                out.extend((f"{name}.{a.name}", child.lineno, not in_function) for a in child.names)
                out.append((name, child.lineno, not in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return out


def _resolve(name: str, mods: dict) -> str | None:
    """The jrsv_stream module an imported name lives in (``a.b.c`` may be module ``a.b``'s
    attribute ``c``), or None for a name outside the package."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


@functools.cache
def _graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, int]]]]:
    """(module -> jrsv_stream modules it imports, module -> [(external top-level name, line)])."""
    mods = _modules()
    internal: dict[str, set[str]] = {m: set() for m in mods}
    external: dict[str, list[tuple[str, int]]] = {m: [] for m in mods}
    for m, (path, is_pkg) in mods.items():
        for name, line, _ in _imports(m, path, is_pkg):
            if name == "jrsv_stream" or name.startswith("jrsv_stream."):
                target = _resolve(name, mods)
                if target and target != m and target != "jrsv_stream":
                    internal[m].add(target)
            else:
                external[m].append((name.split(".")[0], line))
    return internal, external


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_scanner_sees_the_package():
    internal, external = _graph()
    assert len(internal) > 50
    assert "jrsv_stream.stream.pipeline_api" in internal["jrsv_stream.stream.worker"]
    assert "jrsv_stream.cli" in internal and "jrsv_stream.serve.server" in internal
    assert any(name == "websockets" for name, _ in external["jrsv_stream.serve.server"])
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    internal, _ = _graph()
    assert _cycles(internal) == []


def test_core_imports_no_commands_network_or_cli():
    internal, external = _graph()
    bad = []
    for m in sorted(internal):
        layer = _layer(m)
        for t in sorted(internal[m]):
            if _layer(t) == "cli":
                bad.append(f"{m} -> {t} (nothing imports the CLI)")
            elif layer in CORE and _layer(t) in COMMANDS:
                bad.append(f"{m} -> {t}")
            elif layer == "stream" and _layer(t) == "nn":
                bad.append(f"{m} -> {t} (the contract must not know its implementations)")
        if layer in CORE:
            bad.extend(f"{m}:{line} imports {name}" for name, line in external[m] if name in NETWORK)
    assert bad == []
