"""The research scripts (experiments/) stay runnable and use only the product's public API."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

from conftest import REPO

SCRIPTS = sorted((REPO / "experiments").glob("*.py"))


def rgpt_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from rgpt... import name` in the script, inside functions too."""
    return [(node.module, alias.name) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rgpt") for alias in node.names]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_script_imports_only_public_names_of_the_product(script):
    private = [f"{module}.{name}" for module, name in rgpt_imports(script) if name.startswith("_")]
    assert not private, f"{script.name} imports private names {private}: make them public API or leave them"
    siblings = {p.stem for p in SCRIPTS}
    imported = {node.module for node in ast.walk(ast.parse(script.read_text())) if isinstance(node, ast.ImportFrom)}
    assert not imported & siblings, f"{script.name} imports a sibling script: {imported & siblings}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_script_loads_and_every_name_it_imports_exists(script):
    spec = importlib.util.spec_from_file_location(f"experiment_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # top-level imports run; main() does not
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
    for name, imported in rgpt_imports(script):  # imports inside functions too: a name, or a submodule
        found = hasattr(importlib.import_module(name), imported) or importlib.util.find_spec(f"{name}.{imported}")
        assert found, f"{script.name}: {name} has no {imported}"


def test_the_index_lists_every_script():
    index = (REPO / "experiments" / "README.md").read_text()
    assert not [p.name for p in SCRIPTS if p.name not in index]
