"""The package's layers as a table: an import only ever points down, and no modules import each other.

docs/architecture.md is this table in words. Every import counts: top-level, inside functions and
under TYPE_CHECKING (a type names a dependency as much as a call does).
"""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

# Bottom to top. A module may import its own layer (without cycles) and any layer below it.
LAYERS = (
    ("bench", "bench.errors", "bench.exits", "bench.fileio", "bench.env", "bench.console"),  # foundations
    ("bench.domain", "bench.ladder"),  # the vocabulary: precisions, input formats, families, the batch rule, ladder
    ("bench.comparator",),  # outputs compared by name, per-output tolerances
    ("bench.face",),  # InsightFace reference operations: letterbox, decode + NMS, alignment, images
    ("bench.models",),  # replicas, inspection, validation, layout, batchfix, artifacts
    ("bench.session",),  # the session contract runtimes implement and measure drives
    ("bench.runtimes",),  # one module per runtime family, CUDA helpers, engine caches
    ("bench.measure",),  # every clock: loops, protocol, stage summary, cold start, stats
    ("bench.telemetry",),  # samplers on the window hooks
    ("bench.checks",),  # contamination, parity
    ("bench.results",),  # PointResult: plain data made of the parts below
    ("bench.store",),  # the one owner of the Parquet schema
    ("bench.fleet_store",),  # a fleet run's layout, manifest and gather, without Ray
    ("bench.report",),  # the report model and its views, compare and the gate
    ("bench.suite",),  # Suite / ModelRef, TOML loading
    ("bench.peaks",),  # the peak probes: jobs like points
    ("bench.worker",),  # one job in its process
    ("bench.launchers",),  # inline, worker process
    ("bench.plan",),  # points, previous points, later repeats
    ("bench.sweep",),  # records what workers emit
    ("bench.runs",),  # a run's lifecycle: resume, lock, same machine, upload, exit status
    ("bench.pipeline",),  # the staged detect-align-embed benchmark
    ("bench.commands",),  # one module per command family: argparse and printing
    ("bench.cli", "bench.__main__"),  # assembles the commands
)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in (REPO / "bench").rglob("*.py")}


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of the package's own modules (a name resolves to its deepest module)."""
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def layer_of(module: str) -> int:
    matches = [(len(prefix), index) for index, layer in enumerate(LAYERS) for prefix in layer
               if module == prefix or (prefix != "bench" and module.startswith(prefix + "."))]
    assert matches, f"{module} is in no layer: add it to LAYERS in tests/test_layout.py"
    return max(matches)[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets if layer_of(t) > layer_of(m))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer():
    for name in package_modules():
        layer_of(name)


def test_no_import_points_upwards():
    assert upward_imports(imports(package_modules())) == []


def test_no_modules_import_each_other():
    assert cycles(imports(package_modules())) == []


def test_the_checks_see_what_they_judge():
    # An upward import and a cycle, planted: the two checks must catch them.
    graph = {"bench.models.zoo": {"bench.runtimes.registry"}, "bench.runtimes.registry": {"bench.errors"},
             "bench.worker": {"bench.peaks"}, "bench.peaks": {"bench.worker"}}
    assert upward_imports(graph) == ["bench.models.zoo -> bench.runtimes.registry", "bench.peaks -> bench.worker"]
    assert cycles(graph) == [["bench.peaks", "bench.worker"]]
