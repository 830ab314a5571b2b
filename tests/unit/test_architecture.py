"""docs/architecture.md: its import graph is the one the code has now."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys
import types

ROOT = pathlib.Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "hack" / "gen-import-graph.py"
DOCUMENT = ROOT / "docs" / "architecture.md"


def _generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gen_import_graph", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_import_graph_in_the_document_is_current() -> None:
    current = DOCUMENT.read_text()
    assert current == _generator().render(current), (
        "docs/architecture.md's import graph is stale; run: make graph")


def test_the_graph_draws_every_controller_and_its_imports() -> None:
    edges = _generator().edges()
    drawn = {node for edge in edges for node in edge}
    controllers = {f"controllers.{path.stem}"
                   for path in (ROOT / "operator" / "fluxsupport" / "controllers").glob("*.py")
                   if path.stem != "__init__"}
    assert controllers <= drawn
    assert ("app.runner", "controllers.supportcase") in edges
    assert ("controllers.bulletin", "domain") in edges
    assert not [edge for edge in edges if edge[0] == "domain"], "domain imports no other layer"


def test_generator_check_mode_agrees() -> None:
    result = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True,
                            text=True, timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr
