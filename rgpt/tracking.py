"""MLflow runs with lineage tags, and Prefect flow versions derived from code and params.

Every stage opens its MLflow run through `stage_run`, which tags it with what is needed to
reproduce it: the git commit (and whether the tree was dirty), the md5 of the raw data recorded
in data.dvc, a hash of the stage's effective params, the profile and the Prefect flow-run id.
The tracking server is the embedded default (`sqlite:///mlflow.db` + `mlartifacts/`) unless
`MLFLOW_TRACKING_URI` names another (an MLflow server on Postgres + object store, see infra/).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from .config import Params, params_hash

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACTS = Path("mlartifacts")
EXPERIMENT = "rgpt"
PACKAGE_ROOT = Path(__file__).resolve().parent


@dataclass
class StageResult:
    """What a stage reports: its metrics (also in reports/<stage>/metrics.json) and files to attach."""

    metrics: dict[str, Any]
    artifacts: dict[str, Path] = field(default_factory=dict)  # name in the MLflow run -> local path


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def git_commit() -> str:
    """HEAD's commit, suffixed with '-dirty' when tracked files have uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def data_hash(dvc_file: str | Path = "data.dvc") -> str:
    """The md5 DVC recorded for data/ (the directory hash in data.dvc), or 'untracked'."""
    path = Path(dvc_file)
    if not path.exists():
        return "untracked"
    outs = (yaml.safe_load(path.read_text()) or {}).get("outs") or [{}]
    return str(outs[0].get("md5", "untracked"))


def flow_version(stage: str, params: Params) -> str:
    """A short hash of the code a stage runs (the rgpt package and its flow) and its params.

    Prefect shows it as the flow's version, so two runs with the same version ran the same thing.
    """
    digest = hashlib.sha256()
    sources = sorted(PACKAGE_ROOT.rglob("*.py")) + sorted((PACKAGE_ROOT / "data" / "templates").glob("*"))
    flow_file = PACKAGE_ROOT.parent / "flows" / f"{stage}.py"
    for path in sources + ([flow_file] if flow_file.exists() else []):
        digest.update(path.relative_to(PACKAGE_ROOT.parent).as_posix().encode())
        digest.update(path.read_bytes())
    digest.update(params_hash(params.stage_params(stage)).encode())
    return digest.hexdigest()[:12]


def _prefect_flow_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run
    except ImportError:
        return None
    run_id = flow_run.id
    return str(run_id) if run_id else None


def flatten_numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a nested metrics dict, keys joined by '.' (MLflow's metric names)."""
    return {k.replace(" ", "_"): float(v) for k, v in _flatten("", metrics, {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value
    return out


def _experiment_id(mlflow) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = DEFAULT_ARTIFACTS.resolve().as_uri() if tracking_uri() == DEFAULT_TRACKING_URI else None
    return mlflow.create_experiment(name, artifact_location=location)


def show_logs() -> None:
    """rgpt's info lines (what a stage measured, what it skipped) in the stage's output: Python
    passes a library's records on only from WARNING up until someone lowers its level. A flow's
    root logger prints them (Prefect's handler); without one, a handler of rgpt's own does."""
    logger = logging.getLogger("rgpt")
    logger.setLevel(logging.INFO)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)


@contextmanager
def stage_run(stage: str, params: Params, **extra_tags: str) -> Iterator[Any]:
    """An MLflow run for one stage, with its params logged and the lineage tags set."""
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)  # schema migrations on a fresh DB are noise
    show_logs()
    mlflow.set_tracking_uri(tracking_uri())
    section = params.stage_params(stage)
    tags = {"rgpt.stage": stage, "rgpt.profile": params.profile, "rgpt.git_commit": git_commit(),
            "rgpt.data_md5": data_hash(), "rgpt.params_hash": params_hash(section),
            "rgpt.flow_version": flow_version(stage, params)}
    flow_run_id = _prefect_flow_run_id()
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    tags.update(extra_tags)
    with mlflow.start_run(experiment_id=_experiment_id(mlflow), run_name=stage, tags=tags) as run:
        mlflow.log_params(_flatten("", section, {}))
        if tags["rgpt.data_md5"] != "untracked":  # the raw corpus this run read, by its DVC hash
            _log_input("data", Path(params.data.root), tags["rgpt.data_md5"], "raw")
        yield run


def file_md5(path: str | Path) -> str:
    """The md5 of a file's bytes (what DVC records for a file output)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def log_inputs(files: dict[str, Path], context: str) -> None:
    """Record input files of the active run as MLflow datasets, named, with their md5 as digest."""
    for name, path in files.items():
        _log_input(name, Path(path), file_md5(path), context)


def _log_input(name: str, path: Path, digest: str, context: str) -> None:
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    source = LocalArtifactDatasetSource(str(path.resolve()))
    mlflow.log_input(MetaDataset(source, name=name, digest=digest), context=context)


def log_outputs(result: StageResult) -> None:
    """Log a stage's numeric metrics (nested keys joined by '.') and its report files and folders."""
    import mlflow

    numeric = flatten_numeric(result.metrics)
    if numeric:
        mlflow.log_metrics(numeric)
    for name, path in result.artifacts.items():
        if path.is_dir():
            mlflow.log_artifacts(str(path), name)
        elif path.exists():
            parent = str(Path(name).parent)
            mlflow.log_artifact(str(path), None if parent == "." else parent)
