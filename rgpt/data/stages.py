"""What each data stage of dvc.yaml does, as plain functions the Prefect flows and the tests call.

Every stage reads its inputs, writes its outputs and reports under fixed paths (dvc.yaml names
the same ones; a test checks they agree) and returns a `StageResult`: the metrics it wrote and
the files worth attaching to its MLflow run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..config import Params
from ..reports import pyplot, write_csv, write_json
from ..tracking import StageResult
from . import balance, conversations, formats, validate
from .download import fetch_all
from .layout import SYNTHETIC_MANIFEST
from .records import DatasetSplit, write_jsonl
from .templates import load_templates

OUTPUTS = Path("outputs")
REPORTS = Path("reports")


# ------------------------------------------------------------------------------------ download


def produce_corpus(params: Params, *, progress: bool = True) -> StageResult:
    """The raw corpus under `data.root`: the synthetic twin (embedded) or the real datasets (paper)."""
    root = Path(params.data.root)
    if params.data.source == "download":
        d = params.download
        fetched = fetch_all(d.sources, root, images=d.images, retries=d.retries, timeout_s=d.timeout_s,
                            progress=progress)
        return StageResult({"sources": len(fetched), "paths": sum(len(p) for p in fetched.values())})
    return StageResult(write_synthetic_root(root, params, progress=progress))


def write_synthetic_root(root: Path, params: Params, *, progress: bool = True) -> dict[str, int]:
    """Write the synthetic corpus to `root`, replacing an older synthetic corpus there atomically.

    A root whose manifest already records these params is left as it is (a second run is free).
    A root that holds anything else (real downloads) is never touched.
    """
    from .synthetic import write_corpus

    manifest = {"generator": "rgpt.data.synthetic", "params": json.loads(params.synthetic.model_dump_json())}
    manifest_path = root / SYNTHETIC_MANIFEST
    if manifest_path.exists():
        existing = json.loads(manifest_path.read_text())
        if existing["params"] == manifest["params"]:
            return existing["counts"]
    elif root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} holds files the synthetic generator did not write (no {SYNTHETIC_MANIFEST}); "
                              f"move them away, or point data.root in params.yaml elsewhere")
    staging = root.with_name(root.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    counts = write_corpus(staging, params.synthetic, progress=progress)
    write_json(staging / SYNTHETIC_MANIFEST, {**manifest, "counts": counts})
    if root.exists():
        shutil.rmtree(root)
    staging.rename(root)
    return counts


# ------------------------------------------------------------------------------------ validate

VALIDATED = OUTPUTS / "validate"
VALIDATE_REPORTS = REPORTS / "validate"
QUARANTINE = VALIDATE_REPORTS / "quarantine.jsonl"
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

BALANCED = OUTPUTS / "balance"
BALANCE_REPORTS = REPORTS / "balance"


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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------- conversations

CONVERSATIONS = OUTPUTS / "conversations"
CONVERSATION_REPORTS = REPORTS / "conversations"
CONVERSATION_QUARANTINE = CONVERSATION_REPORTS / "quarantine.jsonl"
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
