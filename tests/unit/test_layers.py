"""The package layout is the architecture: these rules fail when an import crosses a layer.

streams.core      the domain, pure: nothing of the product but schemas and itself
streams.delivery  lanes, retry policy, the commit gate's ledger: core and connectors below it
streams.flow      the per-partition flow and its two sources: core and delivery below it
streams.runtime   the Faust worker: the only package that imports Faust (or mode)
streams.collector the click collector process (aiohttp, aiokafka): never the worker's runtime
streams.tools     demo, replay, configdoc: never the worker's runtime
connectors        transports: never streams
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PACKAGES = ("streams", "connectors", "schemas")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (function-level imports too)."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            # ``from . import x`` imports the module x
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


MODULES = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
GRAPH = {m: {i for i in imports(p) if i in MODULES} for m, p in MODULES.items()}
EXTERNAL = {m: {i.split(".")[0] for i in imports(p)} for m, p in MODULES.items()}

# layer -> the product packages it may import (its own included)
ALLOWED = {
    "streams.core": ("schemas", "streams.core"),
    "streams.delivery": ("schemas", "connectors", "streams.core", "streams.delivery"),
    "streams.flow": ("schemas", "connectors", "streams.config", "streams.core", "streams.delivery", "streams.flow"),
    "streams.collector": ("schemas", "streams.config", "streams.kafka", "streams.logs", "streams.collector"),
    "streams.tools": ("schemas", "connectors", "streams.config", "streams.kafka", "streams.core", "streams.delivery",
                      "streams.tools"),
    "connectors": ("connectors",),
    "schemas": ("schemas",),
}


def layer_of(module: str) -> str | None:
    return next((layer for layer in ALLOWED if module == layer or module.startswith(layer + ".")), None)


def test_the_layers_exist():
    for layer in ("streams.core", "streams.delivery", "streams.flow", "streams.runtime", "streams.tools"):
        assert layer in MODULES, layer


def test_only_the_runtime_imports_faust():
    offenders = {m for m, ext in EXTERNAL.items() if ext & {"faust", "mode"} and not m.startswith("streams.runtime")}
    assert not offenders


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer_of(m)))
def test_a_module_imports_only_the_layers_below_it(module):
    allowed = ALLOWED[layer_of(module)]
    crossing = {i for i in GRAPH[module] if not any(i == a or i.startswith(a + ".") for a in allowed)}
    assert not crossing, f"{module} imports {sorted(crossing)}"


def test_no_import_cycle():
    seen, on_path, cycles = set(), [], []

    def visit(m):
        if m in on_path:
            cycles.append(on_path[on_path.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        on_path.append(m)
        for n in sorted(GRAPH[m]):
            if n != m and not m.startswith(n + "."):  # a module's own package __init__ is not a cycle
                visit(n)
        on_path.pop()

    for m in sorted(GRAPH):
        visit(m)
    assert not cycles, cycles


def test_the_rules_see_imports():
    """The rules above are only as good as the import finder: it must see a relative, a nested and
    a from-package import of the runtime, or every other test here passes by accident."""
    assert "streams.runtime.tables" in GRAPH["streams.runtime.sweep"]
    assert "streams.tools.replay" in GRAPH["streams.cli"]  # imported inside a function
    assert "streams.runtime.sweep" in GRAPH["streams.runtime.app"]  # from . import sweep
    assert "faust" in EXTERNAL["streams.runtime.app"]
