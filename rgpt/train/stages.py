"""The two training stages of the paper (Sec. 3.2, 4.1), as the dvc stages train_stage1/2 run them.

The flow (parent process) calls `run_stage`, which launches `rgpt.train.worker` on every rank
(torchrun on one node, the deepspeed launcher on several) and then turns what rank 0 wrote into
reports. Stage 1 starts from the base models, trains the refinement and the connector with the
vision tower and the LLM frozen, on the pre-training conversations. Stage 2 starts from stage 1
and trains the LLM too, on the fine-tuning conversations.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from ..config import Params, StageTrainParams, params_hash
from ..data.records import read_jsonl
from ..paths import BASE_MODELS, CHECKPOINTS, CONVERSATIONS, MODEL_RECORD, MODELS, stage_reports
from ..reports import pyplot, save_figure, write_csv, write_json
from ..tracking import StageResult, file_md5

# Modules trained in each stage; everything else is frozen (the vision tower always is).
TRAINABLE = {
    1: ("refinement", "connector"),  # pre-training: align features with the frozen LLM
    2: ("refinement", "connector", "language_model"),  # fine-tuning: the LLM too
}
DATA = {1: "pretrain", 2: "finetune"}  # the conversations file each stage trains on
REGISTERED_MODEL = "rgpt"  # stage 2's model in the MLflow registry
FINGERPRINT = "fingerprint.json"


def freeze_for_stage(model: nn.Module, stage: int) -> None:
    """Train the stage's modules (requires_grad) and freeze every other parameter."""
    if stage not in TRAINABLE:
        raise ValueError(f"stage must be one of {sorted(TRAINABLE)}, got {stage}")
    for name, param in model.named_parameters():
        param.requires_grad = name.split(".")[0] in TRAINABLE[stage]


def stage_params(params: Params, stage: int) -> StageTrainParams:
    return getattr(params.train, f"stage{stage}")


def initial_weights(stage: int) -> Path:
    """Where a stage starts from: the base models (stage 1) or stage 1's model (stage 2)."""
    return BASE_MODELS if stage == 1 else MODELS / "stage1"


def fingerprint(params: Params, stage: int) -> dict[str, Any]:
    """What a stage's checkpoints depend on: its params, its data, the weights it starts from and
    the modules it trains (a checkpoint's optimizer state holds exactly those).

    A run resumes from checkpoints only when this is unchanged; otherwise they are stale and go.
    """
    start = initial_weights(stage)
    weights = sorted(p for p in start.rglob("*.safetensors")) if start.exists() else []
    return {"stage": stage, "params": params_hash(params.stage_params(f"train_stage{stage}")),
            "trainable": list(TRAINABLE[stage]),
            "data": file_md5(CONVERSATIONS / f"{DATA[stage]}.jsonl"),
            "weights": {str(p): file_md5(p) for p in weights}}


def prepare_checkpoints(params: Params, stage: int) -> Path:
    """The stage's checkpoint folder, emptied unless its checkpoints belong to this very run."""
    folder = CHECKPOINTS / f"stage{stage}"
    expected = fingerprint(params, stage)
    marker = folder / FINGERPRINT
    if folder.exists() and (not marker.exists() or json.loads(marker.read_text()) != expected):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(expected, indent=1) + "\n")
    return folder


def train_and_log(params: Params, stage: int, run) -> StageResult:
    """What the train_stageN flow does inside its MLflow `run`: the stage's data logged as its
    input, the stage trained (its ranks log every step into `run`), its reports and the model
    logged; stage 2's model registered as `rgpt`, with a record of the version (MODEL_RECORD)."""
    from ..serve.pyfunc import log_model, write_model_record
    from ..tracking import log_inputs, log_outputs, tracking_uri

    log_inputs({"conversations": CONVERSATIONS / f"{DATA[stage]}.jsonl"}, context="training")
    result = run_stage(params, stage, {"MLFLOW_RUN_ID": run.info.run_id, "MLFLOW_TRACKING_URI": tracking_uri()})
    log_outputs(result)
    registered = REGISTERED_MODEL if stage == 2 else None
    info = log_model(MODELS / f"stage{stage}", registered_name=registered)
    if registered:
        write_model_record(info, MODEL_RECORD, registered)
    return result


def run_stage(params: Params, stage: int, env: dict[str, str] | None = None) -> StageResult:
    """Train one stage on every rank (resuming its own checkpoints), then write its reports."""
    from .launch import launch

    prepare_checkpoints(params, stage)
    t = params.train
    launch("rgpt.train.worker", ["--stage", str(stage)], nproc_per_node=t.nproc_per_node, nnodes=t.nnodes,
           hostfile=t.hostfile, env=env)
    return report_stage(stage)


def report_stage(stage: int) -> StageResult:
    """reports/train_stageN/: metrics.json (final loss, throughput, parameter counts, held-out
    accuracy), the loss curve and the held-out region-reliance curve as CSV (DVC plots) and PNG,
    and held-out examples."""
    folder, reports = CHECKPOINTS / f"stage{stage}", stage_reports(f"train_stage{stage}")
    steps = list(read_jsonl(folder / "metrics.jsonl"))
    result = json.loads((folder / "result.json").read_text())
    heldout = result.pop("heldout")
    tail = steps[-max(1, len(steps) // 10):]  # the last tenth: a steadier figure than the last step
    metrics = {**result, "heldout": heldout["metrics"],
               "final_loss": sum(s["loss"] for s in tail) / len(tail),
               "samples_per_s": sum(s["samples_per_s"] for s in steps) / len(steps),
               "tokens_per_s": sum(s.get("tokens_per_s", 0.0) for s in steps) / len(steps)}
    checks = [(s["step"], {k: v for k, v in s.items() if k.startswith("heldout_")}) for s in steps]
    curve = [{"step": step, **checked} for step, checked in checks if checked]
    return StageResult(metrics, {
        "metrics.json": write_json(reports / "metrics.json", metrics),
        "loss.csv": write_csv(reports / "loss.csv", [{k: s[k] for k in ("step", "loss", "lr")} for s in steps]),
        "heldout.csv": write_csv(reports / "heldout.csv", curve, ["step"]),
        "loss.png": plot_loss(steps, curve, reports / "loss.png", f"train_stage{stage}"),
        "heldout_examples.json": write_json(reports / "heldout_examples.json", heldout["examples"]),
    })


def plot_loss(steps: list[dict[str, Any]], curve: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Loss, learning rate and (when checked during training) the held-out region reliance."""
    plt = pyplot()
    fig, (ax_loss, ax_lr, ax_reliance) = plt.subplots(1, 3, figsize=(13, 3.2))
    ax_loss.plot([s["step"] for s in steps], [s["loss"] for s in steps])
    ax_loss.set(title=f"{title}: loss", xlabel="optimizer step", ylabel="loss")
    ax_lr.plot([s["step"] for s in steps], [s["lr"] for s in steps])
    ax_lr.set(title="learning rate", xlabel="optimizer step")
    for key in sorted({k for c in curve for k in c if k.endswith("_region_reliance")}):
        ax_reliance.plot([c["step"] for c in curve if key in c], [c[key] for c in curve if key in c], marker=".",
                         label=key.removeprefix("heldout_").removesuffix("_region_reliance"))
    ax_reliance.axhline(0.0, color="grey", linewidth=0.5)
    ax_reliance.set(title="held-out region reliance", xlabel="optimizer step",
                    ylabel="loss(wrong regions) - loss(true)")
    if curve:
        ax_reliance.legend()
    return save_figure(fig, path)
