"""Where every stage reads and writes, relative to the repository root: each path once.

dvc.yaml names the same paths as each stage's deps and outs (tests/test_pipeline.py checks that
they agree). The raw corpus is `params.data.root` (data/ by default), not a constant.
"""

from pathlib import Path

OUTPUTS = Path("outputs")  # the data stages' outputs and the evaluation's predictions
REPORTS = Path("reports")  # reports/<stage>/: metrics.json (a DVC metric), plots, examples

VALIDATED = OUTPUTS / "validate"
QUARANTINE = REPORTS / "validate" / "quarantine.jsonl"
BALANCED = OUTPUTS / "balance"

RECAP = OUTPUTS / "recap"
CAPTIONS = RECAP / "captions.jsonl"  # RecapD's region captions
FAILURES = RECAP / "failures.jsonl"  # regions that got no caption, with why
TRUTH = RECAP / "corruption_truth.jsonl"  # the stand-in VLM's corrupted answers (embedded)

FILTERED = OUTPUTS / "clip_filter"
KEPT = FILTERED / "captions.jsonl"  # the captions clip_filter kept: recap's records + clip_score
SCORES = FILTERED / "scores.jsonl"  # every caption: its key, chunk scores, score, kept (+ corruption)

CONVERSATIONS = OUTPUTS / "conversations"  # pretrain.jsonl, finetune.jsonl
CONVERSATION_QUARANTINE = REPORTS / "conversations" / "quarantine.jsonl"

# The base models, in one layout whichever way they were made (rgpt/base_models.py).
BASE_MODELS = Path("base_models")
TOKENIZER_DIR, CLIP_DIR, LLM_DIR = "tokenizer", "clip", "llm"
BASE_CLIP = BASE_MODELS / CLIP_DIR  # base_clip's: clip_filter and the synonym score read it too

MODELS = Path("models")  # models/stage1, models/stage2: saved RGPT folders
CHECKPOINTS = Path("checkpoints")  # the training stages' resumable state (not a DVC output)
MODEL_RECORD = REPORTS / "train_stage2" / "model.json"  # the MLflow run and registered version of models/stage2

EVALUATION = OUTPUTS / "evaluate"  # <benchmark>/<part>.jsonl: every prediction beside its ground truth


def stage_reports(stage: str) -> Path:
    """reports/<stage>/."""
    return REPORTS / stage
