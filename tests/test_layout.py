"""The package's import rules that keep its rooms apart (docs/architecture.md)."""
from __future__ import annotations

import ast

from tests.conftest import REPO


def imported_modules(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_nothing_imports_the_cli():
    # The CLI parses and prints; a feature needing the run lifecycle or a console imports bench.runs / bench.console.
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "bench").rglob("*.py")
                 if p.name != "__main__.py" and p != REPO / "bench" / "cli.py"
                 and "bench.cli" in imported_modules(p)]
    assert offenders == []


def test_models_never_import_the_pipeline():
    # Calibration pictures and the pipeline share bench.images; the pipeline sits above the models.
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "bench" / "models").rglob("*.py")
                 if any(name.startswith("bench.pipeline") for name in imported_modules(p))]
    assert offenders == []
