"""DVC deps that cannot drift: every stage depends on the code it runs and reads only the params
dvc.yaml lists for it.

The code: each flow's imports are followed through rgpt/ (imports inside functions too, each
package's __init__, and modules started by name as processes), and every file reached, with a
module's data folder (rgpt/data/templates/ beside rgpt/data/templates.py), must be one of the
stage's deps or lie in a folder that is.
The params: stages read them through `Params.for_stage`, which refuses undeclared keys
(the end-to-end test in test_pipeline.py runs every stage that way).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from rgpt.config import StageParams, UndeclaredParamError, load_params, stage_keys

from conftest import REPO

# Imported by every flow and read by none of their outputs: recording runs in MLflow and naming
# flow versions writes nothing a stage's outputs hold. Listing it would rerun every stage (two
# hours) for a change to how runs are logged.
OUTPUT_NEUTRAL = {"rgpt/tracking.py"}


def module_file(name: str) -> Path | None:
    """The file of an rgpt module (a package's __init__.py), or None when `name` is not a module."""
    path = REPO / Path(*name.split("."))
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name an import statement of `path` (module `module`) may load."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("rgpt."):
            names.add(node.value)  # a module run by name: launch("rgpt.train.worker", ...)
    return names


def code_of(flow: Path) -> set[Path]:
    """The flow and every rgpt file it runs (ancestors' __init__.py included), with data folders."""
    seen: set[Path] = set()
    todo = [(flow, flow.stem)]
    while todo:
        path, module = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if (data := path.with_suffix("")).is_dir() and not (data / "__init__.py").exists():
            seen.add(data)
        for name in imported_names(path, module):
            if name != "rgpt" and not name.startswith("rgpt."):
                continue
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__
                prefix = ".".join(parts[:depth])
                if (found := module_file(prefix)) is not None:
                    todo.append((found, prefix))
    return {p.relative_to(REPO) for p in seen}


DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def dep_paths(stage: str) -> list[Path]:
    return [Path(d) for d in DVC[stage]["deps"]]


@pytest.mark.parametrize("stage", sorted(DVC))
def test_a_stage_depends_on_all_the_code_it_runs(stage):
    deps = dep_paths(stage)
    missing = sorted(str(f) for f in code_of(REPO / "flows" / f"{stage}.py")
                     if str(f) not in OUTPUT_NEUTRAL and not any(f == d or d in f.parents for d in deps))
    assert not missing, f"dvc.yaml: stage {stage} runs code it does not depend on; add to its deps: {missing}"


@pytest.mark.parametrize("stage", sorted(DVC))
def test_every_listed_code_dep_exists(stage):
    gone = [str(d) for d in dep_paths(stage) if d.parts[0] in ("rgpt", "flows", "infra") and not (REPO / d).exists()]
    assert not gone, f"dvc.yaml: stage {stage} lists deps that do not exist: {gone}"


def test_the_walk_sees_imports_inside_functions_and_package_inits():
    code = {str(p) for p in code_of(REPO / "flows" / "base_models.py")}
    # rgpt.base_models.llm imports rgpt.embedded.base_llm inside a function; templates.py reads its folder
    assert {"flows/base_models.py", "rgpt/__init__.py", "rgpt/base_models/__init__.py", "rgpt/base_models/llm.py",
            "rgpt/embedded/__init__.py", "rgpt/embedded/base_llm.py", "rgpt/data/templates.py",
            "rgpt/data/templates"} <= code
    assert "rgpt/base_models/clip.py" not in code and "rgpt/embedded/standin/server.py" not in code


def test_the_check_fails_when_a_stage_misses_an_import(monkeypatch):
    """What a drift looks like: drop one file from base_models' deps and the check names it."""
    deps = [d for d in DVC["base_models"]["deps"] if d not in ("rgpt/embedded", "rgpt/embedded/base_llm.py")]
    monkeypatch.setitem(DVC, "base_models", {**DVC["base_models"], "deps": deps})
    with pytest.raises(AssertionError, match=r"rgpt/embedded/base_llm\.py"):
        test_a_stage_depends_on_all_the_code_it_runs("base_models")


# ------------------------------------------------------------------------------------ params


def test_a_stage_reads_only_the_params_dvc_yaml_lists():
    params = load_params(REPO / "params.yaml")
    view = params.for_stage("base_clip")
    assert isinstance(view, StageParams) and stage_keys("base_clip") == tuple(DVC["base_clip"]["params"])
    assert view.base_models.clip == params.base_models.clip  # a listed section reads whole
    assert view.model.vision_feature_layer == params.model.vision_feature_layer  # a listed key of a section
    with pytest.raises(UndeclaredParamError, match=r"stage base_clip reads params key 'base_models.llm'"):
        view.base_models.llm
    with pytest.raises(UndeclaredParamError, match=r"'model.image_tokens'"):
        view.model.image_tokens
    with pytest.raises(UndeclaredParamError, match=r"'model.model_dump'"):  # a method reads the whole section
        view.model.model_dump()
    balance = params.for_stage("balance")
    assert balance.balance.seed == params.balance.seed
    with pytest.raises(UndeclaredParamError, match=r"'validate'"):  # aliased field: its params.yaml name
        balance.validate_


def test_the_params_hash_covers_exactly_the_listed_keys():
    params = load_params(REPO / "params.yaml")
    section = params.stage_params("base_clip")
    assert set(section) == {"profile", "data", "base_models", "model"}
    assert set(section["base_models"]) == {k.split(".")[1] for k in DVC["base_clip"]["params"]
                                           if k.startswith("base_models.")}
    assert section["model"] == {"vision_feature_layer": params.model.vision_feature_layer}
    assert params.for_stage("base_clip").stage_params("base_clip") == section
