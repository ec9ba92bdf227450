"""The package's module graph: no import cycle, and nobody reaches into the NPU layer's privates.

Read from the source with `ast`, so it checks what the code says, not what happens to
be imported by the time the test runs. Imports inside functions count, and so does
`importlib.import_module("literal")`: that is how an earlier cycle between the
attention seam and the NPU runtime hid. The registry's "module:attribute" strings are
data (a plugin table), not imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "amanuensis_npu"
# Modules whose private names nobody else may use: the attention seam and the NPU layer.
GUARDED = ("amanuensis_npu.attention", "amanuensis_npu.npu")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if MODULES[module].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> tuple[set[str], list[tuple[str, str]]]:
    """The package modules `module` imports, and the private names it takes from them."""
    tree = ast.parse(MODULES[module].read_text())
    deps: set[str] = set()
    private: list[tuple[str, str]] = []
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _absolute(module, node)
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if full in MODULES:
                    deps.add(full)
                    aliases[alias.asname or alias.name] = full
                elif target in MODULES:
                    deps.add(target)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append((target, alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    deps.add(alias.name)
                    aliases[alias.asname or alias.name] = alias.name
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value in MODULES
        ):
            deps.add(node.args[0].value)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            private.append((aliases[node.value.id], node.attr))
    deps.discard(module)
    return deps, private


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_module_graph_is_read_from_the_package():
    graph = {name: _imports(name)[0] for name in MODULES}
    assert "amanuensis_npu.npu.backend" in graph["amanuensis_npu.npu.runtime"]
    assert "amanuensis_npu.attention" in graph["amanuensis_npu.npu.backend"]


def test_no_import_cycle_between_package_modules():
    graph = {name: _imports(name)[0] for name in MODULES}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_cycle_finder_finds_the_old_attention_runtime_cycle():
    """The shape main had: the seam imported the runtime by name, the runtime the seam."""
    graph = {
        "amanuensis_npu.attention": {"amanuensis_npu.npu.runtime"},
        "amanuensis_npu.npu.runtime": {"amanuensis_npu.attention", "amanuensis_npu.npu.x"},
        "amanuensis_npu.npu.x": set(),
    }
    assert _cycle(graph) == [
        "amanuensis_npu.attention",
        "amanuensis_npu.npu.runtime",
        "amanuensis_npu.attention",
    ]


def test_nobody_uses_private_names_of_the_attention_seam_or_the_npu_layer():
    reached = [
        (name, target, attr)
        for name in MODULES
        for target, attr in _imports(name)[1]
        if target != name and target.startswith(GUARDED)
    ]
    assert reached == []
