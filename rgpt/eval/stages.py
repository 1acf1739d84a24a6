"""The `evaluate` stage and `rgpt eval`: run benchmarks on a saved model, write results, metrics and
the report, and attach the figures to the model in MLflow."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from ..config import Params
from ..paths import BASE_CLIP, EVALUATION, MODEL_RECORD, VALIDATED, stage_reports
from ..reports import write_csv, write_json
from ..tracking import StageResult, file_md5, flatten_numeric
from .benchmarks import BENCHMARKS, EVALUATORS, Evaluation
from .report import markdown, plot_ap_per_category, plot_pope

log = logging.getLogger(__name__)

OUTPUTS = EVALUATION
REPORTS = stage_reports("evaluate")
SYNONYM_ENCODER = BASE_CLIP  # its text tower maps off-vocabulary answers to names


def model_id(folder: Path) -> str:
    """Identifies a saved model's weights and config (prediction caches are keyed by it)."""
    digest = hashlib.md5()
    for path in sorted(folder.glob("*.safetensors")) + [folder / "config.json"]:
        digest.update(file_md5(path).encode())
    return digest.hexdigest()


def evaluate(params: Params, model_ref: str | Path, benchmarks: Sequence[str], out_dir: Path = OUTPUTS,
             progress: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the benchmarks; their metrics, and the figures the report draws."""
    from ..model.loading import load_model, resolve_model

    unknown = sorted(set(benchmarks) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}: choose among {', '.join(BENCHMARKS)}")
    folder = resolve_model(model_ref)
    model, processor = load_model(folder)
    ev = Evaluation(model, processor, params.evaluate, params.data.root, VALIDATED, out_dir, model_id(folder),
                    SYNONYM_ENCODER if (SYNONYM_ENCODER / "config.json").exists() else None, progress)
    metrics = {}
    for name in benchmarks:
        metrics[name] = EVALUATORS[name](ev)
        log.info("%s: %s", name, json.dumps(metrics[name], default=str)[:400])
    return metrics, ev.figures


def write_reports(metrics: dict[str, Any], figures: dict[str, Any], params: Params, model: str,
                  reports: Path = REPORTS) -> StageResult:
    """metrics.json (DVC metrics), report.md, and the plots (PNG; per-class AP also as CSV for DVC)."""
    reports.mkdir(parents=True, exist_ok=True)
    artifacts = {"metrics.json": write_json(reports / "metrics.json", metrics)}
    report = reports / "report.md"
    report.write_text(markdown(metrics, params.profile, model))
    artifacts["report.md"] = report
    if "ap_per_category" in figures:
        ap = figures["ap_per_category"]
        artifacts["ap_per_category.csv"] = write_csv(reports / "ap_per_category.csv",
                                                     [{"category": k, "ap": v} for k, v in sorted(ap.items())],
                                                     ["category", "ap"])
        artifacts["ap_per_category.png"] = plot_ap_per_category(ap, reports / "ap_per_category.png")
    if "pope" in metrics:
        artifacts["pope.png"] = plot_pope(metrics["pope"], reports / "pope.png")
    return StageResult(metrics, artifacts)


def run_evaluate(params: Params, progress: bool = True) -> StageResult:
    """The dvc stage: every benchmark of `evaluate.benchmarks` on `evaluate.model`."""
    metrics, figures = evaluate(params, params.evaluate.model, params.evaluate.benchmarks, progress=progress)
    return write_reports(metrics, figures, params, str(params.evaluate.model))


def log_to_registered_model(metrics: dict[str, Any], record: Path = MODEL_RECORD) -> str | None:
    """Put the figures on the evaluated model's MLflow run (metrics `eval.*`) and on its registered
    version (tags). Returns the version's URI, or None when the record or its run is gone."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    if not record.exists():
        log.warning("%s not found: the figures go to the evaluate run only", record)
        return None
    info = json.loads(record.read_text())
    client = mlflow.MlflowClient()
    flat = {f"eval.{k}": v for k, v in flatten_numeric(metrics).items()}
    try:
        client.log_batch(info["run_id"], metrics=[Metric(k, v, 0, 0) for k, v in flat.items()])
    except MlflowException as error:
        log.warning("the model's run %s is not in this tracking store (%s): figures not attached",
                    info["run_id"], error)
        return None
    if info.get("version"):
        for key, value in flat.items():
            client.set_model_version_tag(info["name"], info["version"], key, f"{value:.6g}")
        return f"models:/{info['name']}/{info['version']}"
    return info["model_uri"]
