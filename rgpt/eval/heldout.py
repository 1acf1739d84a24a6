"""A quick held-out check that training taught the model something: region classification and
referring-expression choice on validation images the model never trained on.

Questions are built exactly as the training conversations are (same templates, same task-guided
prompts, `rgpt.data.conversations`), one question per one-turn conversation:
  * classification: COCO val regions (ground-truth masks), "... Answer the question using COCO-80
    category names."; right when the answer is the category name (case and spaces aside);
  * REC: RefCOCOg val expressions with the image's regions as proposals, "... Answer the question
    using the template Region [x]."; right when "Region [k]" names the target.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..data.conversations import classification_turns, rec_turns
from ..data.records import DatasetSplit
from ..data.templates import IMAGE, load_templates
from ..model.inference import Request, answer
from ..model.modeling_rgpt import RGPTForConditionalGeneration
from ..model.processing_rgpt import RGPTProcessor

REGION_ANSWER = re.compile(r"Region \[(\d+)\]")


@dataclass
class Question:
    task: str
    image: str  # file name under the data root
    question: str
    regions: list[dict[str, Any]]
    answer: str  # the right answer


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
                questions.append(Question(task, record.file_name, f"{IMAGE}\n{turn.question}", regions, turn.answer))
    return questions


def is_right(task: str, prediction: str, expected: str) -> bool:
    if task == "rec":
        found, wanted = REGION_ANSWER.search(prediction), REGION_ANSWER.search(expected)
        return bool(found and wanted and found.group(1) == wanted.group(1))
    normalise = lambda s: " ".join(s.lower().strip(" .").split())  # noqa: E731
    return normalise(prediction) == normalise(expected)


def answer_questions(model: RGPTForConditionalGeneration, processor: RGPTProcessor, questions: list[Question],
                     data_root: str | Path, batch_size: int = 16) -> list[str]:
    requests = []
    for q in questions:
        with Image.open(Path(data_root) / q.image) as image:
            requests.append(Request(image.convert("RGB"), [(q.question, None)], q.regions))
    return answer(model, processor, requests, batch_size=batch_size, max_new_tokens=16)


def heldout_metrics(questions: list[Question], answers: list[str]) -> dict[str, float]:
    """Accuracy per task, and how many questions each had."""
    metrics: dict[str, float] = {}
    for task in sorted({q.task for q in questions}):
        pairs = [(q, a) for q, a in zip(questions, answers) if q.task == task]
        metrics[f"{task}_accuracy"] = sum(is_right(task, a, q.answer) for q, a in pairs) / len(pairs)
        metrics[f"{task}_questions"] = len(pairs)
    return metrics
