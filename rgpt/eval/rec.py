"""Referring expression comprehension (Table 5) as a choice among region proposals.

The proposals come from a file (the paper used a detector's boxes, ref. [61]) or, without one,
from the image's annotated regions. When no proposal overlaps the ground truth with IoU >= 0.5 the
ground-truth box is inserted (at a seeded position), as the paper describes. The model answers
"Region [k]"; the answer is right when proposal k overlaps the ground truth with IoU >= 0.5, the
usual REC criterion. Answers with no "Region [k]" in range are counted as unparseable.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Sequence

from ..data.records import Box
from ..data.templates import REGION_ANSWER

IOU_THRESHOLD = 0.5


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two [x, y, w, h] boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def with_ground_truth(proposals: Sequence[Box], target: Box, rng: random.Random) -> tuple[list[Box], bool]:
    """The proposals, plus the ground-truth box at a random position when none has IoU >= 0.5
    with it; and whether it was inserted."""
    proposals = [list(p) for p in proposals]
    if any(iou(p, target) >= IOU_THRESHOLD for p in proposals):
        return proposals, False
    proposals.insert(rng.randint(0, len(proposals)), list(target))
    return proposals, True


def parse_choice(answer: str, count: int) -> int | None:
    """The 0-based proposal an answer names ("Region [3]." -> 2), or None when it names none."""
    found = REGION_ANSWER.search(answer)
    if not found or not 1 <= int(found.group(1)) <= count:
        return None
    return int(found.group(1)) - 1


def is_right(choice: int | None, proposals: Sequence[Box], target: Box) -> bool:
    return choice is not None and iou(proposals[choice], target) >= IOU_THRESHOLD


def rec_figures(rows: Sequence[dict]) -> dict[str, float]:
    """Accuracy, unparseable answers, and how often the ground truth had to be inserted.

    Each row: {"right": bool, "choice": int | None, "inserted": bool}.
    """
    if not rows:
        raise ValueError("no REC predictions to score")
    unparseable = sum(r["choice"] is None for r in rows)
    return {"accuracy": sum(r["right"] for r in rows) / len(rows), "unparseable": unparseable,
            "unparseable_ratio": unparseable / len(rows),
            "ground_truth_inserted": sum(r["inserted"] for r in rows), "expressions": len(rows)}


def read_proposals(path: str | Path) -> dict[str, list[Box]]:
    """A proposals file: JSON {"<image file name>": [[x, y, w, h], ...], ...}, best first.

    File names are as the data root holds them (e.g. "coco/train2014/COCO_train2014_...jpg").
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the REC proposals file ({error}); it must be JSON "
                         '{"<image file name>": [[x, y, w, h], ...]}') from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: REC proposals must be a JSON object keyed by image file name")
    for name, boxes in data.items():
        for k, box in enumerate(boxes):
            if not (isinstance(box, list) and len(box) == 4 and box[2] > 0 and box[3] > 0):
                raise ValueError(f"{path}: proposal {k} of {name!r} is {box!r}, not [x, y, w, h] with w, h > 0")
    return data
