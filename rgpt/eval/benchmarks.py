"""The four benchmarks of paper Sec. 4.2, each as: questions from the data, the runner's
predictions (one results file per benchmark part, every prediction beside its ground truth), and
the metrics of its table.

  classification  COCO val2017 regions, accuracy and mAP (Table 3; modes of Table 11/13)
  captioning      RefCOCOg val and VG test regions, METEOR and CIDEr (Table 4)
  rec             RefCOCOg val and test expressions among proposals, accuracy (Table 5)
  pope            random / popular / adversarial object-presence questions (Table 8)

Questions are drawn with a generator seeded per image (`image_rng`), so a question does not
change when `max_questions` keeps fewer of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..config import EvaluateParams
from ..data import layout
from ..data.conversations import image_rng, region_list
from ..data.pope import read_pope
from ..data.records import DatasetSplit, Region
from ..data.sources import POPE_COMMIT
from ..data.templates import DESCRIPTION, IMAGE, REGION, load_templates
from ..model.modeling_rgpt import RGPTForConditionalGeneration
from ..model.processing_rgpt import RGPTProcessor
from . import classification as cls
from . import rec
from .captioning import caption_scores
from .pope import pope_metrics
from .runner import Item, latency_figures, run

BENCHMARKS = ("classification", "captioning", "rec", "pope")
CLASSIFICATION_SPLIT = "coco_val"
CAPTIONING_SPLITS = ("refcocog_val", "vg_test")
REC_SPLITS = ("refcocog_val", "refcocog_test")


@dataclass
class Evaluation:
    """What every benchmark needs: the model, where the data is, where results go."""

    model: RGPTForConditionalGeneration
    processor: RGPTProcessor
    params: EvaluateParams
    data_root: Path
    validated: Path  # the validate stage's splits
    out_dir: Path  # <benchmark>/<part>.jsonl results files go here
    model_id: str  # identifies the weights, for the prediction caches
    synonym_encoder: Path | None = None  # a CLIP folder whose text tower maps off-vocabulary answers
    progress: bool = True
    figures: dict[str, Any] = field(default_factory=dict)  # extra outputs for the report (per-class AP)

    def predict(self, benchmark: str, part: str, items: list[Item]) -> list[dict[str, Any]]:
        key = {"model": self.model_id, "max_new_tokens": self.params.max_new_tokens, "seed": self.params.seed,
               "classification_mode": self.params.classification_mode,
               "rec_proposals": str(self.params.rec_proposals), "rec_max_proposals": self.params.rec_max_proposals}
        return run(items, self.model, self.processor, self.data_root, self.out_dir / benchmark / f"{part}.jsonl",
                   key, batch_size=self.params.batch_size, max_new_tokens=self.params.max_new_tokens,
                   desc=f"{benchmark} {part}", progress=self.progress)

    def limit(self, items: list) -> list:
        return items if self.params.max_questions is None else items[:self.params.max_questions]

    def split(self, name: str) -> DatasetSplit:
        return DatasetSplit.load(self.validated, name)


def region_input(region: Region) -> dict[str, Any]:
    return {"box": region.box, "segmentation": region.segmentation}


def first_turn(question: str) -> str:
    """The first question of a conversation carries the image."""
    return f"{IMAGE}\n{question}"


# --------------------------------------------------------------------------- classification


def evaluate_classification(ev: Evaluation) -> dict[str, Any]:
    split = ev.split(CLASSIFICATION_SPLIT)
    vocabulary = cls.Vocabulary([split.categories[k] for k in sorted(split.categories)])
    images = cls.regions_to_classify(split)
    if ev.params.max_questions is not None:  # whole images, until that many regions are asked about
        counts = [len(regions) for _, regions in images]
        images = images[:next((k + 1 for k in range(len(counts)) if sum(counts[:k + 1]) >= ev.params.max_questions),
                              len(images))]
    mode = ev.params.classification_mode
    rows = (_classify_one_turn_all(ev, split, images) if mode == "one_turn_all"
            else _classify_turn_by_turn(ev, split, images, multi_turn=mode == "multi_turn_all"))
    for row in rows:
        row["predicted"] = vocabulary.match(row["answer"])
    metrics = cls.accuracy_figures([r["category"] for r in rows], [r["predicted"] for r in rows])
    found = cls.coco_map(split, cls.detections(split, rows, lambda r: r["predicted"]))
    ev.figures["ap_per_category"] = found.pop("ap_per_category")
    metrics |= found | {"mode": mode}
    if ev.params.synonyms and ev.synonym_encoder is not None:
        off = [r for r in rows if r["predicted"] is None]
        nearest = dict(zip((r["answer"] for r in off),
                           nearest_names([r["answer"] for r in off], vocabulary.names, ev.synonym_encoder)))
        synonym = lambda r: r["predicted"] or nearest[r["answer"]]  # noqa: E731
        metrics["synonym_accuracy"] = sum(synonym(r) == r["category"] for r in rows) / len(rows)
        metrics["synonym_map"] = cls.coco_map(split, cls.detections(split, rows, synonym))["map"]
    return metrics | latency_figures(rows)


def _classify_turn_by_turn(ev: Evaluation, split: DatasetSplit, images, multi_turn: bool) -> list[dict[str, Any]]:
    """One region per question: one-turn conversations (Table 3's mode, all asked at once), or, in
    multi-turn mode, each image's regions asked in turn within one conversation that carries the
    model's own earlier answers (so round k's questions wait for round k-1's answers)."""
    templates, regions_of = load_templates(), dict(images)
    questions = {}
    for index, regions in images:
        rng = image_rng(ev.params.seed, split.records[index])
        questions[index] = [cls.question(templates, rng, 1) for _ in regions]

    def item(index: int, k: int, asked: list[tuple[str, str]]) -> Item:
        record, regions = split.records[index], regions_of[index]
        turns = asked + [(questions[index][k], None)]
        turns[0] = (first_turn(turns[0][0]), turns[0][1])
        given = regions[:k + 1] if multi_turn else [regions[k]]
        return Item(f"{record.image_id}/{regions[k].id}", record.file_name, turns, [region_input(r) for r in given],
                    {"image_id": record.image_id, "region_id": regions[k].id, "category": regions[k].category})

    if not multi_turn:
        items = [item(index, k, []) for index, regions in images for k in range(len(regions))]
        return [row | {"answer": row["prediction"]} for row in ev.predict("classification", CLASSIFICATION_SPLIT, items)]
    index_of = {split.records[index].image_id: index for index, _ in images}
    asked: dict[int, list[tuple[str, str]]] = {index: [] for index, _ in images}
    rows = []
    for k in range(max((len(r) for _, r in images), default=0)):
        items = [item(index, k, asked[index]) for index, regions in images if k < len(regions)]
        for row in ev.predict("classification", CLASSIFICATION_SPLIT, items):
            index = index_of[row["image_id"]]
            asked[index] = asked[index] + [(questions[index][k], row["prediction"])]
            rows.append(row | {"answer": row["prediction"]})
    return rows


def _classify_one_turn_all(ev: Evaluation, split: DatasetSplit, images) -> list[dict[str, Any]]:
    """All of an image's regions in one question; the answer's comma-separated parts, in order."""
    templates, items = load_templates(), []
    for index, regions in images:
        record = split.records[index]
        question = first_turn(cls.question(templates, image_rng(ev.params.seed, record), len(regions)))
        items.append(Item(str(record.image_id), record.file_name, [(question, None)],
                          [region_input(r) for r in regions],
                          {"image_id": record.image_id, "region_ids": [r.id for r in regions],
                           "categories": [r.category for r in regions]}))
    rows = []
    for row in ev.predict("classification", CLASSIFICATION_SPLIT, items):
        parts = cls.split_answer(row["prediction"], len(row["region_ids"]))
        for region_id, category, part in zip(row["region_ids"], row["categories"], parts):
            rows.append({"image_id": row["image_id"], "region_id": region_id, "category": category,
                         "answer": part, "log_prob": row["log_prob"], "latency_s": row["latency_s"]})
    return rows


@torch.no_grad()
def nearest_names(texts: list[str], names: list[str], clip_dir: Path) -> list[str]:
    """For each text, the name whose CLIP text embedding is the most similar (cosine)."""
    if not texts:
        return []
    from transformers import AutoTokenizer, CLIPModel

    from ..clip_features import text_features

    model, tokenizer = CLIPModel.from_pretrained(clip_dir).eval(), AutoTokenizer.from_pretrained(clip_dir)
    answers = F.normalize(text_features(model, tokenizer, [t or " " for t in texts]), dim=-1)
    categories = F.normalize(text_features(model, tokenizer, names), dim=-1)
    return [names[i] for i in (answers @ categories.T).argmax(dim=1).tolist()]


# ------------------------------------------------------------------------------- captioning


def evaluate_captioning(ev: Evaluation) -> dict[str, Any]:
    """Brief-caption questions (Table 21) for every region with reference phrases."""
    templates, metrics = load_templates(), {}
    for name in CAPTIONING_SPLITS:
        split, items = ev.split(name), []
        for record in split.records:
            rng = image_rng(ev.params.seed, record)
            for region in record.regions:
                references = [p.strip() for p in region.phrases if p.strip()]
                if references:
                    question = first_turn(rng.choice(templates.brief_caption))
                    items.append(Item(f"{record.image_id}/{region.id}", record.file_name, [(question, None)],
                                      [region_input(region)], {"references": references}))
        rows = ev.predict("captioning", name, ev.limit(items))
        metrics[name] = caption_scores([r["prediction"] for r in rows], [r["references"] for r in rows])
        metrics[name] |= latency_figures(rows)
    return metrics


# ---------------------------------------------------------------------------------------- REC


def evaluate_rec(ev: Evaluation) -> dict[str, Any]:
    """Each expression asked against the image's proposals (Table 25 + Table 1's prompt)."""
    templates, metrics = load_templates(), {}
    proposals_file = rec.read_proposals(ev.params.rec_proposals) if ev.params.rec_proposals else None
    for name in REC_SPLITS:
        split, items = ev.split(name), []
        for record in split.records:
            rng = image_rng(ev.params.seed, record)
            if proposals_file is not None:
                offered = proposals_file.get(record.file_name, [])[:ev.params.rec_max_proposals]
            else:
                offered = [r.box for r in record.regions][:ev.params.rec_max_proposals]
            for region in record.regions:
                for k, expression in enumerate(p.strip() for p in region.phrases if p.strip()):
                    boxes, inserted = rec.with_ground_truth(offered, region.box, rng)
                    question = (rng.choice(templates.rec).replace(REGION, region_list(len(boxes)))
                                .replace(DESCRIPTION, expression))
                    items.append(Item(f"{record.image_id}/{region.id}/{k}", record.file_name,
                                      [(first_turn(f"{question} {templates.prompts.rec}"), None)],
                                      [{"box": b, "segmentation": None} for b in boxes],
                                      {"expression": expression, "target": region.box, "proposals": boxes,
                                       "inserted": inserted}))
        rows = ev.predict("rec", name, ev.limit(items))
        for row in rows:
            row["choice"] = rec.parse_choice(row["prediction"], len(row["proposals"]))
            row["right"] = rec.is_right(row["choice"], row["proposals"], row["target"])
        metrics[name] = rec.rec_figures(rows) | latency_figures(rows)
    return metrics


# --------------------------------------------------------------------------------------- POPE


def evaluate_pope(ev: Evaluation) -> dict[str, Any]:
    """POPE's question files, in their order; images are COCO val2014's."""
    metrics: dict[str, Any] = {}
    suffix = load_templates().prompts.short_answer  # as LLaVA-1.5's POPE questions
    for split in layout.POPE_SPLITS:
        questions = ev.limit(read_pope(ev.data_root / layout.POPE_QUESTIONS[split]))
        items = [Item(str(q["question_id"]), f"{layout.COCO2014_IMAGE_DIRS['val']}/{q['image']}",
                      [(first_turn(f"{q['text']}\n{suffix}"), None)], [],
                      {"label": q["label"]}) for q in questions]
        rows = ev.predict("pope", split, items)
        metrics[split] = pope_metrics([r["prediction"] for r in rows], [r["label"] for r in rows])
        metrics[split] |= latency_figures(rows)
    metrics["question_files"] = pope_version(ev.data_root)
    return metrics


def pope_version(data_root: Path) -> str:
    """Which POPE question files were scored: POPE's commit, or the synthetic twin's."""
    synthetic = (data_root / layout.SYNTHETIC_MANIFEST).exists()
    return "synthetic (built by POPE's rules)" if synthetic else f"AoiDragon/POPE@{POPE_COMMIT}"


EVALUATORS: dict[str, Callable[[Evaluation], dict[str, Any]]] = {
    "classification": evaluate_classification, "captioning": evaluate_captioning,
    "rec": evaluate_rec, "pope": evaluate_pope}
