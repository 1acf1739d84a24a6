"""A quick held-out check that training taught the model something: region classification and
referring-expression choice on validation images the model never trained on.

Questions are built exactly as the training conversations are (same templates, same task-guided
prompts, `rgpt.data.conversations`), one question per one-turn conversation:
  * classification: COCO val regions (ground-truth masks), "... Answer the question using COCO-80
    category names."; right when the answer is the category name (case and spaces aside);
  * REC: RefCOCOg val expressions with the image's regions as proposals, "... Answer the question
    using the template Region [x]."; right when "Region [k]" names the target.

Beside the accuracy, how much the model reads its regions: the right answers' loss (teacher-forced,
nats per token) with every region's embedding moved to the next region of the batch, minus the loss
with the true regions (`region_reliance`). A model that answers from the question and the class
prior alone loses nothing when its regions are wrong (0); one that reads them loses much.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import fmean
from typing import Any

from PIL import Image

from ..data.conversations import classification_turns, rec_turns, region_name
from ..data.records import DatasetSplit
from ..data.templates import IMAGE, REGION_ANSWER, load_templates
from ..model.inference import Request, answer, answer_losses
from ..model.modeling_rgpt import RGPTForConditionalGeneration
from ..model.processing_rgpt import RGPTProcessor


@dataclass
class Question:
    task: str
    image: str  # file name under the data root
    question: str
    regions: list[dict[str, Any]]
    answer: str  # the right answer
    names: list[str | None] = field(default_factory=list)  # the regions' names, never shown to the model


def heldout_questions(coco_val: DatasetSplit, refcocog_val: DatasetSplit, images: int, seed: int,
                      max_proposals: int) -> list[Question]:
    """Up to `images` images of each split, every region (classification) / expression (REC)."""
    templates, rng = load_templates(), random.Random(seed)
    questions = []
    for task, split in (("classification", coco_val), ("rec", refcocog_val)):
        records = [r for r in split.records if r.regions]
        for record in rng.sample(records, min(images, len(records))):
            if task == "classification":
                turns = classification_turns(record, templates, rng, regions_per_turn=1)
            else:
                turns = rec_turns(record, templates, rng, max_proposals, absent_ratio=0.0)
            for turn in turns:
                regions = [{"box": r.box, "segmentation": r.segmentation} for r in turn.regions]
                questions.append(Question(task, record.file_name, f"{IMAGE}\n{turn.question}", regions, turn.answer,
                                          [region_name(r, record) for r in turn.regions]))
    return questions


def is_right(task: str, prediction: str, expected: str) -> bool:
    if task == "rec":
        found, wanted = REGION_ANSWER.search(prediction), REGION_ANSWER.search(expected)
        return bool(found and wanted and found.group(1) == wanted.group(1))
    normalise = lambda s: " ".join(s.lower().strip(" .").split())  # noqa: E731
    return normalise(prediction) == normalise(expected)


def requests(questions: list[Question], data_root: str | Path) -> list[Request]:
    """One request per question, its image loaded."""
    out = []
    for q in questions:
        with Image.open(Path(data_root) / q.image) as image:
            out.append(Request(image.convert("RGB"), [(q.question, None)], q.regions))
    return out


def answer_questions(model: RGPTForConditionalGeneration, processor: RGPTProcessor, asked: list[Request],
                     batch_size: int = 16) -> list[str]:
    return answer(model, processor, asked, batch_size=batch_size, max_new_tokens=16)


@contextmanager
def regions_rotated(model: RGPTForConditionalGeneration) -> Iterator[None]:
    """Inside the block every region of a batch gets the embedding of the region before it (the
    first, the last's): wrong regions of the same kind, each from another object."""
    encode = model.encode_regions
    model.encode_regions = lambda *args: encode(*args).roll(1, dims=0)
    try:
        yield
    finally:
        del model.encode_regions  # the class's method again


def answer_loss_pairs(model: RGPTForConditionalGeneration, processor: RGPTProcessor, questions: list[Question],
                      asked: list[Request], batch_size: int = 16) -> tuple[list[float], list[float]]:
    """Each question's right-answer loss with its own regions, and with the regions rotated;
    `asked`: the questions' requests (`requests`), whose images are reused."""
    scored = [replace(r, turns=[(q.question, q.answer)]) for q, r in zip(questions, asked)]
    true = answer_losses(model, processor, scored, batch_size)
    with regions_rotated(model):
        rotated = answer_losses(model, processor, scored, batch_size)
    return true, rotated


def rec_forced_choices(model: RGPTForConditionalGeneration, processor: RGPTProcessor, questions: list[Question],
                       asked: list[Request], rows: list[int]) -> list[int]:
    """For each REC question `questions[i]`, i in `rows`, the 1-based proposal whose answer
    "Region [k]." the model finds most likely (lowest loss); `asked`: the questions' requests."""
    scored, owners = [], []
    for i in rows:
        for k in range(1, len(questions[i].regions) + 1):
            scored.append(replace(asked[i], turns=[(questions[i].question, f"Region [{k}].")]))
            owners.append((i, k))
    best: dict[int, tuple[float, int]] = {}
    for (i, k), loss in zip(owners, answer_losses(model, processor, scored)):
        best[i] = min(best.get(i, (loss, k)), (loss, k))
    return [best[i][1] for i in rows]


def task_rows(questions: list[Question]) -> dict[str, list[int]]:
    """Each task's question indices, tasks sorted."""
    rows: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        rows.setdefault(q.task, []).append(i)
    return dict(sorted(rows.items()))


def reliance_metrics(questions: list[Question], losses: list[float], rotated_losses: list[float]) -> dict[str, float]:
    """Per task: the right answers' mean loss and the region reliance (the mean loss with rotated
    regions minus with the true ones); cheap enough to follow during training (no generation)."""
    metrics: dict[str, float] = {}
    for task, rows in task_rows(questions).items():
        metrics[f"{task}_answer_loss"] = fmean(losses[i] for i in rows)
        metrics[f"{task}_region_reliance"] = fmean(rotated_losses[i] - losses[i] for i in rows)
    return metrics


def heldout_metrics(questions: list[Question], answers: list[str], losses: list[float],
                    rotated_losses: list[float]) -> dict[str, float]:
    """Per task: accuracy and how many questions, with `reliance_metrics`."""
    metrics: dict[str, float] = {}
    for task, rows in task_rows(questions).items():
        metrics[f"{task}_accuracy"] = fmean(is_right(task, answers[i], questions[i].answer) for i in rows)
        metrics[f"{task}_questions"] = len(rows)
    return {**metrics, **reliance_metrics(questions, losses, rotated_losses)}
