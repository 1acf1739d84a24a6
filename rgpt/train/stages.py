"""The two training stages of the paper (Sec. 3.2, 4.1), as the dvc stages train_stage1/2 run them.

The flow (parent process) calls `run_stage`, which launches `rgpt.train.worker` on every rank
(torchrun on one node, the deepspeed launcher on several) and then turns what rank 0 wrote into
reports. Stage 1 starts from the base models, trains the refinement and the connector with the
vision tower and the LLM frozen, on the pre-training conversations. Stage 2 starts from stage 1
and trains the LLM too, on the fine-tuning conversations.
"""

from __future__ import annotations

import json
import os
import shutil
from itertools import accumulate
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Params, StageTrainParams, params_hash
from ..data.records import read_jsonl
from ..reports import pyplot, write_csv, write_json
from ..tracking import StageResult, file_md5

BASE_MODELS = Path("base_models")
MODELS = Path("models")
CHECKPOINTS = Path("checkpoints")
REPORTS = Path("reports")
CONVERSATIONS = Path("outputs/conversations")

# Modules trained in each stage; everything else is frozen (the vision tower always is).
TRAINABLE = {
    1: ("refinement", "connector"),  # pre-training: align features with the frozen LLM
    2: ("refinement", "connector", "language_model"),  # fine-tuning: the LLM too
}
DATA = {1: "pretrain", 2: "finetune"}  # the conversations file each stage trains on
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
    folder, reports = CHECKPOINTS / f"stage{stage}", REPORTS / f"train_stage{stage}"
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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def use_every_core() -> None:
    """The base models train in the stage's one process, so it takes every core (make sets
    OMP_NUM_THREADS=1 for the training stages' ranks, which would leave all but one idle here)."""
    torch.set_num_threads(os.cpu_count() or 1)


def run_base_clip(params: Params) -> StageResult:
    """base_models/clip/: the CLIP and its tokenizer, trained on the validated regions (its
    tokenizer also on the RecapD captions' words) here (embedded), or fetched (paper)."""
    from ..data.stages import VALIDATED
    from ..model.base import CLIP_DIR, build_base_clip
    from ..recap.stages import CAPTIONS

    use_every_core()
    manifest = build_base_clip(params, BASE_MODELS / CLIP_DIR, validated=VALIDATED, captions=CAPTIONS)
    metrics = manifest.get("clip", {})
    return StageResult(metrics, {"metrics.json": write_json(REPORTS / "base_clip" / "metrics.json", metrics)})


def run_base_models(params: Params) -> StageResult:
    """base_models/{tokenizer,llm}: trained on the conversations here (embedded) or fetched (paper)."""
    from ..model.base import build_base_models

    use_every_core()
    manifest = build_base_models(params, BASE_MODELS, conversations=CONVERSATIONS)
    metrics = {k: v for k, v in manifest.items() if k in ("tokenizer", "llm")}
    reports = REPORTS / "base_models"
    llm = metrics.get("llm", {})
    curve = [{"step": step, "drill_rec_accuracy": accuracy} for step, accuracy in llm.get("check_curve", [])]
    return StageResult(metrics, {"metrics.json": write_json(reports / "metrics.json", metrics),
                                 "check_curve.csv": write_csv(reports / "check_curve.csv", curve,
                                                                ["step", "drill_rec_accuracy"]),
                                 "check_curve.png": plot_check_curve(llm, reports / "check_curve.png")})


def plot_check_curve(llm: dict[str, Any], path: Path) -> Path:
    """The base LLM's REC on fresh drills during its training, against chance, and the check that
    ends the lists' phase; empty for an LLM from the hub (no drills, no curve)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if llm.get("check_curve"):
        steps, accuracy = zip(*llm["check_curve"])
        ax.plot(steps, accuracy, marker=".", label="fresh drills among 2..n proposals")
        ax.axhline(llm["drill_rec_chance"], color="grey", linestyle="--", linewidth=0.8, label="chance")
        if llm.get("list_curve"):
            steps, accuracy = zip(*llm["list_curve"])
            ax.plot(steps, accuracy, marker=".", label="fresh REC lists (the lists' phase check)")
            ax.axhline(llm["list_target"], color="C1", linestyle=":", linewidth=0.8, label="its target")
        # where each drills-alone phase ends
        ends = list(accumulate(llm.get(f"{phase}_steps", 0) for phase in ("list", "template")))
        for end, phase in zip(ends, ("lists", "template drills")):
            if end:
                ax.axvline(end, color="grey", linewidth=0.5)
                ax.annotate(f"end of {phase}", (end, 0.02), rotation=90, fontsize=6, color="grey")
        ax.legend(fontsize=7, loc="upper left")
    ax.set(title="base_models: LLM REC accuracy during training", xlabel="optimizer step", ylabel="accuracy",
           ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
