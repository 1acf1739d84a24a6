"""One rank of a training stage: `python -m rgpt.train.worker --stage N` under torchrun / deepspeed.

Every rank builds the same model (seeded) and trains its share of the batches; rank 0 then saves
the model with its processor to models/stageN, and runs the quick held-out check.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoTokenizer

from ..config import Params, load_params
from ..data.records import DatasetSplit
from ..eval.heldout import (
    Question,
    answer_loss_pairs,
    answer_questions,
    heldout_metrics,
    heldout_questions,
    reliance_metrics,
    requests,
)
from ..model.modeling_rgpt import RGPTForConditionalGeneration
from ..model.processing_rgpt import ProcessorConfig, RGPTProcessor
from ..paths import BASE_MODELS, CHECKPOINTS, CLIP_DIR, CONVERSATIONS, LLM_DIR, MODELS, TOKENIZER_DIR, VALIDATED
from .data import ConversationDataset
from .stages import DATA, freeze_for_stage, stage_params
from .trainer import TrainConfig, train


def build(params: Params, stage: int) -> tuple[RGPTForConditionalGeneration, RGPTProcessor]:
    """Stage 1: RGPT around the base models; stage 2: stage 1's model."""
    if stage == 2:
        return RGPTForConditionalGeneration.from_pretrained(MODELS / "stage1"), RGPTProcessor.from_pretrained(MODELS / "stage1")
    m = params.model
    tokenizer = AutoTokenizer.from_pretrained(BASE_MODELS / TOKENIZER_DIR)
    model = RGPTForConditionalGeneration.from_base_models(
        BASE_MODELS / CLIP_DIR, BASE_MODELS / LLM_DIR, tokenizer, vision_feature_layer=m.vision_feature_layer,
        refinement=m.refinement, region_input=m.region_input, mask_morphology=m.mask_morphology,
        image_tokens=m.image_tokens)
    processor = RGPTProcessor(tokenizer, ProcessorConfig(image_size=model.config.vision_config.image_size,
                                                         num_image_tokens=model.config.num_image_tokens,
                                                         max_length=m.max_length))
    return model, processor


def mlflow_logger():
    """Per-step metrics into the stage's MLflow run (the flow passes its id), or None."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return None
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient()

    def log(record: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, int(record["step"]))
                                          for k, v in record.items() if k != "step"])
    return log


def validation_questions(params: Params, images: int) -> list[Question]:
    return heldout_questions(DatasetSplit.load(VALIDATED, "coco_val"), DatasetSplit.load(VALIDATED, "refcocog_val"),
                             images=images, seed=params.train.seed, max_proposals=params.conversations.rec_max_proposals)


def heldout_check(model: RGPTForConditionalGeneration, processor: RGPTProcessor, params: Params) -> dict:
    """Classification and REC accuracy and region reliance on validation images (see rgpt.eval.heldout)."""
    questions = validation_questions(params, params.train.heldout_images)
    asked = requests(questions, params.data.root)
    answers = answer_questions(model, processor, asked)
    losses, rotated = answer_loss_pairs(model, processor, questions, asked)
    return {"metrics": heldout_metrics(questions, answers, losses, rotated),
            "examples": [{"task": q.task, "question": q.question, "expected": q.answer, "answer": a}
                         for q, a in list(zip(questions, answers))[:40]]}


def heldout_curve(processor: RGPTProcessor, params: Params) -> Callable[[RGPTForConditionalGeneration], dict]:
    """The check the trainer runs every train.heldout_every steps: answer loss and region reliance
    on a few validation images (no generation), so that the curve shows when the model starts
    reading its regions."""
    questions = validation_questions(params, params.train.heldout_curve_images)
    asked = requests(questions, params.data.root)

    def check(model: RGPTForConditionalGeneration) -> dict[str, float]:
        losses, rotated = answer_loss_pairs(model, processor, questions, asked)
        return {f"heldout_{key}": value for key, value in reliance_metrics(questions, losses, rotated).items()}
    return check


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", type=int, choices=sorted(DATA), required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    params = load_params(args.params).for_stage(f"train_stage{args.stage}")
    torch.manual_seed(params.train.seed)  # the same fresh refinement and connector on every rank

    model, processor = build(params, args.stage)
    freeze_for_stage(model, args.stage)
    if params.train.gradient_checkpointing:
        model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    stage = stage_params(params, args.stage)
    dataset = ConversationDataset(CONVERSATIONS / f"{DATA[args.stage]}.jsonl", params.data.root, processor,
                                  loss_weighting=stage.loss_weighting)
    folder = CHECKPOINTS / f"stage{args.stage}"
    config = TrainConfig.from_params(params.train, stage)
    is_rank0 = int(os.environ.get("RANK", "0")) == 0
    result = train(model, dataset, dataset.collate, config, folder, on_log=mlflow_logger() if is_rank0 else None,
                   heldout=heldout_curve(processor, params) if config.heldout_every else None)
    if result.state_dict is None:  # not rank 0
        return

    torch.set_num_threads(os.cpu_count() or 1)  # the other ranks are gone: use every core
    model.load_state_dict(result.state_dict)
    out = MODELS / f"stage{args.stage}"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    summary = {"steps": result.steps, "resumed_from": result.resumed_from, **result.parameter_counts,
               "heldout": heldout_check(model, processor, params)}
    (folder / "result.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
