"""The data stages end to end: first as the functions the flows call, then as `make data` +
`dvc repro` run the real Prefect flows in a copy of the repository (slow)."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rgpt import paths
from rgpt.config import load_params, merge
from rgpt.data import corpus, layout, stages
from rgpt.data.conversations import read_conversations
from rgpt.data.formats import SPLITS
from rgpt.data.records import DatasetSplit, read_jsonl
from rgpt.data.validate import DataContractError, check_gate
from rgpt.eval import stages as eval_stages
from rgpt.tracking import show_logs

from conftest import REPO

# Base models and training small enough for a test: a few optimizer steps of each stage.
TINY_TRAINING = {
    "base_models": {"clip": {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                             "text_hidden_size": 32, "text_layers": 1, "projection_dim": 16, "epochs": 1,
                             "batch_size": 64},
                    "llm": {"hidden_size": 64, "num_layers": 1, "num_heads": 1, "intermediate_size": 128,
                            "max_length": 256, "epochs": 1, "batch_size": 16, "rec_list_steps": 4,
                            "rec_template_steps": 2, "rec_first_batch_size": 8,
                            "rec_drills": 20}},
    "model": {"image_tokens": [2, 2], "max_length": 256},
    "train": {"micro_batch_size": 2, "checkpoint_every": 2, "heldout_images": 3, "heldout_every": 1,
              "heldout_curve_images": 2,
              "stage1": {"global_batch_size": 8, "epochs": 0.15}, "stage2": {"global_batch_size": 8, "epochs": 0.15}},
    "evaluate": {"max_questions": 4, "max_new_tokens": 4},
}
SMALL = {"images": {"v3det_train": 60, "v3det_val": 12, "vg": 40, "coco_train2017": 60, "coco_val2017": 40,
                    "llava": 12},
         "refcocog_images": {"train": 20, "val": 8, "test": 8}, "lvis_val_from_train2017": 5,
         "vg_negative_coordinate_regions": 2, "pope": {"images": 12, "sample_num": 3}}


def test_dvc_yaml_matches_the_stage_code():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    expected_outs = {"validate": {str(stages.VALIDATED), str(stages.QUARANTINE)},
                     "balance": {str(stages.BALANCED)},
                     "recap": {str(paths.RECAP)},
                     "base_clip": {str(paths.BASE_CLIP)},
                     "clip_filter": {str(paths.FILTERED)},
                     "conversations": {str(stages.CONVERSATIONS), str(stages.CONVERSATION_QUARANTINE)},
                     "base_models": {str(paths.BASE_MODELS / part) for part in ("tokenizer", "llm",
                                                                                        "base_models.json")},
                     "train_stage1": {str(paths.MODELS / "stage1")},
                     "train_stage2": {str(paths.MODELS / "stage2")},
                     "evaluate": {str(eval_stages.OUTPUTS)}}
    for name, stage in dvc.items():
        assert stage["cmd"] == f"python flows/{name}.py" and (REPO / "flows" / f"{name}.py").exists()
        assert {o if isinstance(o, str) else next(iter(o)) for o in stage["outs"]} >= expected_outs[name]
        metrics = [next(iter(m)) for m in stage["metrics"]]
        assert metrics == [f"reports/{name}/metrics.json"]


def test_a_stage_shows_rgpt_info_lines(caplog):
    logger = logging.getLogger("rgpt")
    try:
        logging.getLogger("rgpt.embedded.llm").info("before")  # a library logger: silent below WARNING
        show_logs()
        logging.getLogger("rgpt.embedded.llm").info("llm: held-out perplexity 1.2")
    finally:
        logger.setLevel(logging.NOTSET)
    assert [r.getMessage() for r in caplog.records] == ["llm: held-out perplexity 1.2"]


@pytest.fixture()
def workdir(tmp_path, monkeypatch, corpus):
    """A working directory with params.yaml (small corpus) and data/ = the session corpus."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["synthetic"].update(SMALL)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    shutil.copytree(corpus, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run_data_stages(params) -> dict:
    reports = [stages.validate_one(params, d, s) for d, splits in SPLITS.items() for s in splits]
    validated = stages.finish_validation(params, reports)
    check_gate(reports, params.validate_.max_bad_fraction, stages.QUARANTINE)
    balanced = stages.run_balance(params)
    conversed, conversation_reports = stages.run_conversations(params)
    return {"validate": validated.metrics, "balance": balanced.metrics, "conversations": conversed.metrics,
            "conversation_reports": conversation_reports}


def test_data_stages_in_order(workdir):
    params = load_params()
    m = _run_data_stages(params)

    # validate: the twin's VG regions with y < 0 are the only bad records; all else passes untouched
    quarantined = list(read_jsonl(stages.QUARANTINE))
    assert len(quarantined) == SMALL["vg_negative_coordinate_regions"]
    assert {e["reason"] for e in quarantined} == {"box outside the image"}
    assert all(e["dataset"] == "vg" and e["field"].startswith("regions[") for e in quarantined)
    assert sum(m["validate"][f"vg_{s}"]["regions"]["bad"] for s in ("train", "val", "test")) == 2
    coco = DatasetSplit.load(stages.VALIDATED, "coco_train")
    assert len(coco.records) == 60 and len(coco.categories) == 80
    assert (stages.VALIDATE_REPORTS / "metrics.json").exists()

    # balance: the caps hold on every output
    caps = {"coco_finetune": 20, "lvis_finetune": 20, "v3det_pretrain": 100, "v3det_finetune": 10}
    for output, cap in caps.items():
        split = DatasetSplit.load(stages.BALANCED, output)
        counts: dict[int, int] = {}
        for record in split.records:
            assert record.regions  # images with nothing selected are gone
            for region in record.regions:
                counts[region.category_id] = counts.get(region.category_id, 0) + 1
        assert max(counts.values()) <= cap
    vg = DatasetSplit.load(stages.BALANCED, "vg_train")
    assert max(len(r.regions) for r in vg.records) <= params.balance.vg_boxes_per_image
    assert sorted(p.name for p in (stages.BALANCE_REPORTS / "class_counts").iterdir()) == [
        "coco_finetune.csv", "lvis_finetune.csv", "v3det_finetune.csv", "v3det_pretrain.csv"]

    # conversations: every placeholder has its region, nothing quarantined
    for stage in ("pretrain", "finetune"):
        samples = read_conversations(stages.CONVERSATIONS / f"{stage}.jsonl")
        assert samples and m["conversations"][stage]["samples"] == len(samples)
        for s in samples:
            human = " ".join(t["value"] for t in s["conversations"][0::2])
            assert human.count("<region>") == len(s["regions"])
            assert s["conversations"][0]["value"].startswith("<image>\n")
    assert all(r.bad["samples"] == 0 for r in m["conversation_reports"])
    finetune_tasks = m["conversations"]["finetune"]["tasks"]
    assert set(finetune_tasks) == {"classification", "brief_caption", "relationship", "rec", "presence"}
    assert "image_caption" in m["conversations"]["pretrain"]["tasks"]


def test_data_stages_are_deterministic(workdir, tmp_path_factory):
    params = load_params()
    _run_data_stages(params)
    first = {p: p.read_bytes() for p in sorted(Path("outputs").rglob("*")) if p.is_file()}
    shutil.rmtree("outputs")
    _run_data_stages(params)
    second = {p: p.read_bytes() for p in sorted(Path("outputs").rglob("*")) if p.is_file()}
    assert first.keys() == second.keys() and first == second


def test_validation_gate_stops_a_broken_corpus(workdir):
    params = load_params().model_copy()
    path = Path("data/coco/annotations/instances_val2017.json")
    data = json.loads(path.read_text())
    for ann in data["annotations"][:10]:
        ann["category_id"] = 999  # unknown category
    path.write_text(json.dumps(data))
    report = stages.validate_one(params, "coco", "val")
    assert report.bad["regions"] == 10 and len(report.clean.records) == 40  # good regions kept
    with pytest.raises(DataContractError, match=r"coco_val: 10 of \d+ regions bad"):
        check_gate([report], params.validate_.max_bad_fraction, stages.QUARANTINE)


def test_synthetic_root_is_written_once_and_real_data_is_never_overwritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["synthetic"].update(SMALL)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params()
    counts = corpus.write_synthetic_root(Path("data"), params, progress=False)
    assert counts["coco_val"] == 40 and (tmp_path / "data" / layout.SYNTHETIC_MANIFEST).exists()
    marker = tmp_path / "data" / "coco" / "touched"
    marker.write_text("x")
    assert corpus.write_synthetic_root(Path("data"), params, progress=False) == counts
    assert marker.exists()  # same params: nothing rewritten
    real = tmp_path / "real"
    (real / "coco").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="did not write"):
        corpus.write_synthetic_root(real, params, progress=False)


@pytest.mark.slow
def test_make_data_and_dvc_repro_run_the_flows(tmp_path):
    """What `make pipeline` does, on a small corpus, in a fresh copy of the tracked files."""
    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, repo / rel)
    for leftover in ("data.dvc", "dvc.lock"):
        (repo / leftover).unlink(missing_ok=True)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["synthetic"].update(SMALL)
    (repo / "params.yaml").write_text(yaml.safe_dump(merge(raw, TINY_TRAINING)))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)

    def run(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout + done.stderr

    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    run(sys.executable, "flows/download.py")
    run("dvc", "add", "data", "--quiet")
    run("dvc", "repro")
    assert "Data and pipelines are up to date" in run("dvc", "repro")
    assert "reports/validate/metrics.json" in run("dvc", "metrics", "show")

    md5 = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"]
    with sqlite3.connect(repo / "mlflow.db") as db:
        tags = {}
        for run_id, key, value in db.execute("SELECT run_uuid, key, value FROM tags"):
            tags.setdefault(run_id, {})[key] = value
        versions = db.execute("SELECT name, version FROM model_versions").fetchall()
        steps = db.execute("SELECT COUNT(*) FROM metrics WHERE key = 'loss'").fetchone()[0]
        checks = db.execute("SELECT COUNT(*) FROM metrics WHERE key = 'heldout_classification_region_reliance'").fetchone()[0]
    by_stage = {t["rgpt.stage"]: t for t in tags.values() if "rgpt.stage" in t}
    assert set(by_stage) == {"download", "validate", "balance", "recap", "base_clip", "clip_filter", "conversations",
                             "base_models", "train_stage1", "train_stage2", "evaluate"}
    for stage in set(by_stage) - {"download"}:
        t = by_stage[stage]
        assert t["rgpt.data_md5"] == md5 and t["prefect.flow_run_id"] and len(t["rgpt.params_hash"]) == 12
    assert versions == [("rgpt", 1)]  # stage 2's model, registered
    # the benchmark figures, on the model's own run and on its registered version
    record = json.loads((repo / "reports/train_stage2/model.json").read_text())
    with sqlite3.connect(repo / "mlflow.db") as db:
        on_run = dict(db.execute("SELECT key, value FROM metrics WHERE run_uuid = ?", (record["run_id"],)).fetchall())
        on_version = dict(db.execute("SELECT key, value FROM model_version_tags WHERE version = 1").fetchall())
    figures = json.loads((repo / "reports/evaluate/metrics.json").read_text())
    assert on_run["eval.pope.random.accuracy"] == pytest.approx(figures["pope"]["random"]["accuracy"])
    assert float(on_version["eval.classification.map"]) == pytest.approx(figures["classification"]["map"], rel=1e-5)
    assert (repo / "reports/evaluate/report.md").read_text().startswith("# RGPT evaluation (embedded profile)")
    assert steps > 2  # per-step losses of both stages
    # the held-out check during training (every step here), in MLflow and in the stage's curve
    with open(repo / "reports/train_stage2/heldout.csv") as f:
        curve = list(csv.DictReader(f))
    assert [int(c["step"]) for c in curve] == list(range(1, len(curve) + 1)) and checks > len(curve)  # and stage 1's
    assert all(float(c["heldout_classification_answer_loss"]) > 0 for c in curve)
    # the base LLM's REC on fresh drills during its training (a DVC plot)
    with open(repo / "reports/base_models/check_curve.csv") as f:
        drills = list(csv.DictReader(f))
    base_llm = json.loads((repo / "reports/base_models/metrics.json").read_text())["llm"]
    assert [[int(c["step"]), float(c["drill_rec_accuracy"])] for c in drills] == base_llm["check_curve"]

    # one benchmark on its own, on the registered model
    out = run("rgpt", "eval", "rec", "--model", "models:/rgpt/1", "--max-questions", "2", "--out", "eval_rec")
    assert '"refcocog_test"' in out and len((repo / "eval_rec/rec/refcocog_val.jsonl").read_text().splitlines()) == 2

    # the trained model answers from the command line
    image = next((repo / "data/coco/val2017").glob("*.jpg"))
    done = subprocess.run(["rgpt", "chat", "--model", "models/stage2", "--image", str(image), "--box", "2,2,30,30",
                           "What is <region>?"], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
