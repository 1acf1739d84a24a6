"""What each data stage of dvc.yaml does, as plain functions the Prefect flows and the tests call.

Every stage reads its inputs, writes its outputs and reports under fixed paths (dvc.yaml names
the same ones; a test checks they agree) and returns a `StageResult`: the metrics it wrote and
the files worth attaching to its MLflow run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Params
from ..paths import BALANCED, CONVERSATION_QUARANTINE, CONVERSATIONS, QUARANTINE, VALIDATED, stage_reports
from ..reports import pyplot, save_figure, write_csv, write_json
from ..tracking import StageResult
from . import balance, conversations, formats, validate
from .records import DatasetSplit, write_jsonl
from .templates import load_templates

# ------------------------------------------------------------------------------------ validate

VALIDATE_REPORTS = stage_reports("validate")
GX_DIR = VALIDATE_REPORTS / "gx"


def validate_one(params: Params, dataset: str, split: str) -> validate.ValidationReport:
    """Read one dataset split, check it against the contract, save what passes."""
    report = validate.validate_split(formats.read_split(params.data.root, dataset, split), Path(params.data.root),
                                     params.validate_, GX_DIR)
    report.clean.save(VALIDATED)
    return report


def finish_validation(params: Params, reports: list[validate.ValidationReport]) -> StageResult:
    """Write the quarantine file and the metrics of every split (the gate is checked apart)."""
    write_jsonl(QUARANTINE, (entry for report in reports for entry in report.quarantine))
    metrics = {report.name: report.counts for report in reports}
    reasons = [{"split": r.name, "reason": reason, "count": n} for r in reports for reason, n in r.reasons.items()]
    return StageResult(metrics, {
        "metrics.json": write_json(VALIDATE_REPORTS / "metrics.json", metrics),
        "quarantine_by_reason.csv": write_csv(VALIDATE_REPORTS / "quarantine_by_reason.csv", reasons,
                                              ["split", "reason", "count"]),
        "quarantine.jsonl": QUARANTINE,
        "data_docs": reports[0].docs_index.parent,
    })


# ------------------------------------------------------------------------------------- balance

BALANCE_REPORTS = stage_reports("balance")


def run_balance(params: Params) -> StageResult:
    """Cap V3Det/COCO/LVIS per class and VG per image (paper Sec. 3.2); record counts before/after."""
    splits = {name: DatasetSplit.load(VALIDATED, name) for name in sorted(set(balance.OUTPUTS.values()))}
    balanced = balance.balance_all(splits, params.balance)
    for name, split in balanced.items():
        split.save(BALANCED, name)
    metrics = balance.summary_metrics(splits, balanced)
    rows = balance.class_count_rows(splits, balanced)
    ranked = {}
    for output in sorted({r["dataset"] for r in rows}):  # one plot file per output: classes by frequency
        ordered = sorted((r for r in rows if r["dataset"] == output), key=lambda r: (-r["before"], r["category_id"]))
        ranked[output] = [{"rank": i + 1, **r} for i, r in enumerate(ordered)]
        write_csv(BALANCE_REPORTS / "class_counts" / f"{output}.csv", ranked[output])
    return StageResult(metrics, {
        "metrics.json": write_json(BALANCE_REPORTS / "metrics.json", metrics),
        "class_counts": BALANCE_REPORTS / "class_counts",
        "class_counts.png": plot_class_counts(ranked, BALANCE_REPORTS / "class_counts.png"),
    })


def plot_class_counts(ranked: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Boxes per class before and after the caps, classes by frequency, one panel per output."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(ranked), figsize=(4 * len(ranked), 3.2), squeeze=False)
    for ax, (output, rows) in zip(axes[0], ranked.items()):
        ax.plot([r["rank"] for r in rows], [r["before"] for r in rows], label="before")
        ax.plot([r["rank"] for r in rows], [r["after"] for r in rows], label="after")
        ax.set(title=output, xlabel="class (by frequency)", ylabel="boxes", yscale="log")
        ax.legend()
    return save_figure(fig, path)


# ------------------------------------------------------------------------------- conversations

CONVERSATION_REPORTS = stage_reports("conversations")
CONVERSATION_SPLITS = {  # the inputs: balanced outputs, and validated splits used whole
    **{name: BALANCED for name in balance.OUTPUTS},
    "refcocog_train": VALIDATED, "llava_train": VALIDATED,
}


def run_conversations(params: Params) -> tuple[StageResult, list[validate.ValidationReport]]:
    """Pre-training and fine-tuning conversations, checked by the conversation contract."""
    splits = {name: DatasetSplit.load(directory, name) for name, directory in CONVERSATION_SPLITS.items()}
    templates = load_templates()
    recapd = conversations.load_recapd(params.conversations.recapd)
    built = {"pretrain": conversations.build_pretrain(splits, params.conversations, templates),
             "finetune": conversations.build_finetune(splits, params.conversations, templates, recapd)}
    reports, metrics = [], {}
    for stage, samples in built.items():
        report = validate.validate_conversations(samples, GX_DIR, stage, params.validate_.box_tolerance_px)
        conversations.write_conversations(CONVERSATIONS / f"{stage}.jsonl", report.clean)
        metrics[stage] = {**conversations.conversation_stats(report.clean), "quarantined": report.bad["samples"]}
        reports.append(report)
    write_jsonl(CONVERSATION_QUARANTINE, (e for r in reports for e in r.quarantine))
    task_rows = [{"stage": stage, "task": task, **counts}
                 for stage, m in metrics.items() for task, counts in m["tasks"].items()]
    return StageResult(metrics, {
        "metrics.json": write_json(CONVERSATION_REPORTS / "metrics.json", metrics),
        "tasks.csv": write_csv(CONVERSATION_REPORTS / "tasks.csv", task_rows),
        "quarantine.jsonl": CONVERSATION_QUARANTINE,
        "data_docs": reports[0].docs_index.parent,
        "samples.jsonl": _write_examples(built, CONVERSATION_REPORTS / "samples.jsonl"),
    }), reports


def _write_examples(built: dict[str, list[dict[str, Any]]], path: Path, per_task: int = 2) -> Path:
    """A few conversations of each task, to read in the MLflow UI without opening the outputs."""
    examples, seen = [], {}
    for stage, samples in built.items():
        for sample in samples:
            key = (stage, sample["tasks"][0])
            if seen.get(key, 0) < per_task:
                seen[key] = seen.get(key, 0) + 1
                examples.append({"stage": stage, **sample})
    write_jsonl(path, examples)
    return path
