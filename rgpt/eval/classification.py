"""COCO region classification (Table 3): the category of each ground-truth region, as accuracy
and as COCO mAP through pycocotools' COCOeval.

Every non-crowd ground-truth region becomes a detection with its own box, the category the model
named and, as score, the probability of the model's answer. Answers are normalised (case,
punctuation, articles, plurals) before they are matched to the category names; an answer that
still names no category is a misclassification (and no detection), counted as off-vocabulary.
The paper's future-work variant (Tab. 14, Sec. D), mapping an off-vocabulary answer to the
nearest category name with a text encoder, is scored separately (`synonym_*`), never mixed in.
"""

from __future__ import annotations

import contextlib
import io
import re
from typing import Any, Callable, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data import masks
from ..data.conversations import region_list
from ..data.records import DatasetSplit, Region
from ..data.templates import REGION, Templates

ARTICLES = ("a ", "an ", "the ")


def normalise(text: str) -> str:
    """Lower case, no surrounding punctuation, no leading article, single spaces."""
    text = " ".join(text.lower().replace("_", " ").split()).strip(" .,;:!?\"'")
    for article in ARTICLES:
        if text.startswith(article):
            text = text[len(article):]
    return text


def singulars(word: str) -> list[str]:
    """The singular forms a plural noun phrase may have: its last word without -s, -es, -ies."""
    forms = []
    if word.endswith("ies"):
        forms.append(word[:-3] + "y")
    if word.endswith("es"):
        forms.append(word[:-2])
    if word.endswith("s"):
        forms.append(word[:-1])
    return forms


class Vocabulary:
    """Matches free-text answers to a fixed list of category names."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self._by_form = {normalise(n): n for n in self.names}

    def match(self, answer: str) -> str | None:
        """The category an answer names, or None when it names none of them."""
        text = normalise(answer)
        if text in self._by_form:
            return self._by_form[text]
        return next((self._by_form[f] for f in singulars(text) if f in self._by_form), None)


def split_answer(answer: str, count: int) -> list[str]:
    """The per-region parts of a one-turn-for-all-RoIs answer ("Car, person and kite.")."""
    parts = [p for p in re.split(r",\s*|\s+and\s+", answer.strip().rstrip(".")) if p.strip()]
    return (parts + [""] * count)[:count]


# -------------------------------------------------------------------------------- questions


def regions_to_classify(split: DatasetSplit) -> list[tuple[int, list[Region]]]:
    """(record index, its non-crowd regions) of every image that has any: crowd boxes hold
    several objects and COCOeval ignores detections on them."""
    out = []
    for index, record in enumerate(split.records):
        regions = [r for r in record.regions if not r.iscrowd]
        if regions:
            out.append((index, regions))
    return out


def question(templates: Templates, rng, count: int) -> str:
    """A classification instruction (Table 24) for `count` regions, with COCO's task-guided prompt."""
    return f"{rng.choice(templates.classification).replace(REGION, region_list(count))} {templates.prompts.coco}"


# ---------------------------------------------------------------------------------- metrics


def accuracy_figures(expected: Sequence[str], predicted: Sequence[str | None]) -> dict[str, float]:
    """Accuracy (off-vocabulary answers are wrong) and how many answers named no category."""
    if not expected:
        raise ValueError("no classification predictions to score")
    right = sum(p is not None and p == e for e, p in zip(expected, predicted))
    off = sum(p is None for p in predicted)
    return {"accuracy": right / len(expected), "off_vocabulary": off,
            "off_vocabulary_ratio": off / len(expected), "regions": len(expected)}


def coco_ground_truth(split: DatasetSplit) -> COCO:
    """The split as a pycocotools COCO object (areas from the masks, as COCO's own files have)."""
    images, annotations = [], []
    for record in split.records:
        images.append({"id": record.image_id, "width": record.width, "height": record.height})
        for region in record.regions:
            x, y, w, h = region.box
            area = (masks.area(region.segmentation, record.height, record.width)
                    if region.segmentation is not None else w * h)
            annotations.append({"id": region.id, "image_id": record.image_id, "category_id": region.category_id,
                                "bbox": [x, y, w, h], "area": area, "iscrowd": int(region.iscrowd)})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": k, "name": v} for k, v in sorted(split.categories.items())]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_map(split: DatasetSplit, detections: list[dict[str, Any]]) -> dict[str, Any]:
    """AP, AP50, AP75, AP small/medium/large and AP per category, through COCOeval (bbox).

    `detections` are COCO results: {"image_id", "category_id", "bbox", "score"}. With no
    detection at all every AP is 0 (COCO's loadRes refuses an empty list).
    """
    gt, names = coco_ground_truth(split), split.categories
    if not detections:
        return {"map": 0.0, "map_50": 0.0, "map_75": 0.0, "map_small": 0.0, "map_medium": 0.0, "map_large": 0.0,
                "ap_per_category": {name: 0.0 for name in names.values()}}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = [max(float(s), 0.0) for s in evaluation.stats]  # -1: no ground truth in that size range
    # precision: [IoU thresholds, recall points, categories, area ranges, max dets]; area "all",
    # 100 detections per image; -1 marks recall points never reached.
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    per_category = {}
    for k, category_id in enumerate(evaluation.params.catIds):
        values = precision[:, :, k]
        values = values[values > -1]
        per_category[names[category_id]] = float(values.mean()) if values.size else 0.0
    return {"map": stats[0], "map_50": stats[1], "map_75": stats[2], "map_small": stats[3],
            "map_medium": stats[4], "map_large": stats[5], "ap_per_category": per_category}


def detections(split: DatasetSplit, predictions: Sequence[dict[str, Any]],
               category: Callable[[dict[str, Any]], str | None]) -> list[dict[str, Any]]:
    """COCO results from predictions ({"image_id", "region_id", "log_prob", ...}); `category`
    gives a prediction's category name or None (no detection)."""
    ids = {v: k for k, v in split.categories.items()}
    boxes = {(r.image_id, region.id): region.box for r in split.records for region in r.regions}
    out = []
    for p in predictions:
        name = category(p)
        if name is not None:
            out.append({"image_id": p["image_id"], "category_id": ids[name],
                        "bbox": boxes[p["image_id"], p["region_id"]], "score": float(np.exp(p["log_prob"]))})
    return out
