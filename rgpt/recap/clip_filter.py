"""RecapD's CLIP filter (paper Sec. 3.3): score every region against its generated caption with
CLIP and drop the captions that score low.

A RecapD caption is ~90 words, far more than CLIP's 77-token window, so it is never truncated to
fit: `chunk_caption` cuts it into its sentences (a sentence too long for the window into the
longest runs of words that fit), every chunk is scored against the region (the cosine of their
CLIP embeddings) and `aggregate` makes the chunk scores one score per caption:

  mean   the average chunk      min    the worst chunk
  max    the best chunk         first  the first sentence (a RecapD caption opens by naming the region)

The region is seen one of two ways (`clip_filter.region_input`):

  mask   the mean of the tower's patch features inside the region's mask (its box: V3Det has boxes
         only) on the whole image, then CLIP's final norm and projection (`clip_features.region_features`):
         how RGPT sees a region, and what the embedded CLIP is trained on (region by region on
         whole images); a crop of a region is not what that CLIP has learnt to read
  crop   the region's crop (`images.crop_region`, `clip_filter.context` of margin) through CLIP's
         image tower: the paper's way, with ViT-L/14-336 (a hub CLIP, trained on whole pictures)

A caption is kept when its score reaches the cutoff `clip_filter.threshold` sets: a percentile of
the run's scores (drop about that share, whatever the CLIP's score scale) or an absolute cosine.
The embedded stand-in VLM corrupts a known share of its captions (`corruption_truth.jsonl`); where
that truth exists the stage measures how well the filter removes them (`removal_precision_recall`,
`removal_curve`, and `separation` for every aggregation, which is how `clip_filter.aggregation`
is chosen: docs/findings.md).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm
from transformers import AutoTokenizer, CLIPModel, PreTrainedTokenizerBase

from ..clip_features import image_features, region_features, text_features
from ..config import ClipFilterParams, Params, ThresholdParams
from ..data.records import numbered_jsonl, write_jsonl
from ..model.processing_rgpt import region_masks
from ..paths import BASE_CLIP, CAPTIONS, KEPT, SCORES, TRUTH, stage_reports
from ..reports import write_json
from ..tracking import StageResult
from .images import crop_region
from .stats import summary, word_counts

FILTER_REPORTS = stage_reports("clip_filter")
METRICS = FILTER_REPORTS / "metrics.json"

AGGREGATIONS = ("mean", "min", "max", "first")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class CaptionFileError(ValueError):
    """A captions or truth file that the filter cannot read: names the file, the line and the field."""


# ------------------------------------------------------------------------------------ chunking


def split_sentences(text: str) -> list[str]:
    """The caption's sentences: cut after '.', '!' or '?' followed by white space."""
    return [s for s in SENTENCE_END.split(text.strip()) if s]


def chunk_caption(text: str, tokenizer: PreTrainedTokenizerBase, max_tokens: int) -> list[str]:
    """The caption cut into pieces CLIP reads whole: its sentences, and a sentence of more than
    `max_tokens` tokens (the tokenizer's special tokens included) cut into the longest runs of
    words that fit. Joined by spaces, the chunks are the caption's words, every one, in order."""
    sentences = split_sentences(text)
    lengths = [len(ids) for ids in tokenizer(sentences, verbose=False).input_ids] if sentences else []
    chunks = []
    for sentence, length in zip(sentences, lengths):
        chunks += [sentence] if length <= max_tokens else _fit(sentence.split(), tokenizer, max_tokens)
    return chunks


def _fit(words: list[str], tokenizer: PreTrainedTokenizerBase, max_tokens: int) -> list[str]:
    """Greedy runs of words of at most `max_tokens` tokens each; a word that alone is longer is cut
    into runs of characters (nothing is ever left for the tokenizer to truncate)."""
    fits = lambda piece: len(tokenizer(piece, verbose=False).input_ids) <= max_tokens  # noqa: E731
    out, start = [], 0
    while start < len(words):
        end = start + 1
        while end < len(words) and fits(" ".join(words[start:end + 1])):
            end += 1
        piece = " ".join(words[start:end])
        out += [piece] if fits(piece) else _fit_characters(piece, fits)
        start = end
    return out


def _fit_characters(word: str, fits) -> list[str]:
    out, start = [], 0
    while start < len(word):
        end = start + 1
        while end < len(word) and fits(word[start:end + 1]):
            end += 1
        out.append(word[start:end])
        start = end
    return out


def aggregate(scores: torch.Tensor, index: torch.Tensor, n: int, how: str) -> torch.Tensor:
    """(n,) one score per caption from its chunks' scores.

    scores: (C,) every chunk's score; index: (C,) its caption, non-decreasing (a caption's chunks
    are consecutive, in caption order), every caption 0..n-1 present.
    """
    counts = torch.bincount(index, minlength=n)  # (n,) chunks per caption
    if len(counts) != n or bool((counts == 0).any()):
        raise ValueError(f"every one of the {n} captions needs at least one chunk")
    if how == "mean":
        return scores.new_zeros(n).index_add_(0, index, scores) / counts
    if how in ("min", "max"):
        return scores.new_zeros(n).scatter_reduce(0, index, scores, f"a{how}", include_self=False)
    if how == "first":
        return scores[torch.cumsum(counts, 0) - counts]  # (n,) each caption's first chunk
    raise ValueError(f"unknown aggregation {how!r}; one of {', '.join(AGGREGATIONS)}")


# ------------------------------------------------------------------------------------- scoring


class ClipScorer:
    """CLIP similarities between regions and the chunks of their captions."""

    def __init__(self, model: CLIPModel, tokenizer: PreTrainedTokenizerBase, *, region_input: str = "mask",
                 layer: int = -1, context: float = 0.0, device: str = "cpu"):
        if region_input not in ("mask", "crop"):
            raise ValueError(f"region_input must be 'mask' or 'crop', got {region_input!r}")
        self.model = model.eval().to(device)  # placed once, here: nothing is cast or moved per batch
        self.tokenizer, self.region_input, self.layer, self.context = tokenizer, region_input, layer, context
        # the text tower's window: its position embeddings, and what its tokenizer was saved with
        self.max_tokens = min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> ClipScorer:
        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} holds no CLIP (no config.json): run the base_clip stage first "
                                    "(dvc repro base_clip)")
        return cls(CLIPModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), **kwargs)

    def chunks(self, text: str) -> list[str]:
        return chunk_caption(text, self.tokenizer, self.max_tokens)

    @torch.no_grad()
    def region_embeddings(self, images: Sequence[Image.Image], boxes: Sequence[Sequence[float]]) -> torch.Tensor:
        """(N, P) unit-length embeddings of N regions; images[i] is the image of boxes[i] (pass the
        same object for the regions of one image: in mask mode its tower runs once)."""
        if self.region_input == "crop":
            crops = [crop_region(image, list(box), self.context) for image, box in zip(images, boxes)]
            return F.normalize(image_features(self.model, crops), dim=-1)
        groups: dict[int, list[int]] = {}  # id(image) -> the regions on it, in first-seen order
        for i, image in enumerate(images):
            groups.setdefault(id(image), []).append(i)
        size = self.model.config.vision_config.image_size
        masks = [region_masks([{"box": list(boxes[i])} for i in rows], *images[rows[0]].size, size)
                 for rows in groups.values()]
        pooled = region_features(self.model, [images[rows[0]] for rows in groups.values()], masks,
                                 self.layer)  # (N, P) in group order
        order = torch.tensor([i for rows in groups.values() for i in rows], device=pooled.device)
        return F.normalize(torch.empty_like(pooled).index_copy_(0, order, pooled), dim=-1)  # (N, P) input order

    @torch.no_grad()
    def score(self, images: Sequence[Image.Image], boxes: Sequence[Sequence[float]],
              texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every chunk's cosine with its region: (C,) scores and (C,) the caption each belongs to."""
        chunks = [self.chunks(text) for text in texts]
        index = torch.repeat_interleave(torch.arange(len(texts)), torch.tensor([len(c) for c in chunks]))  # (C,)
        text = F.normalize(text_features(self.model, self.tokenizer, [c for cs in chunks for c in cs]), dim=-1)
        region = self.region_embeddings(images, boxes)  # (N, P)
        return (text * region[index.to(region.device)]).sum(dim=-1).cpu(), index  # (C,), (C,)


@dataclass
class Scored:
    """Every chunk's score and its caption, for the whole run."""

    chunk_scores: torch.Tensor  # (C,)
    index: torch.Tensor  # (C,) non-decreasing caption index

    def per_caption(self) -> list[list[float]]:
        counts = torch.bincount(self.index).tolist()
        return [s.tolist() for s in torch.split(self.chunk_scores, counts)]


def score_captions(scorer: ClipScorer, captions: Sequence[dict[str, Any]], data_root: Path, *, batch_size: int,
                   progress: bool = True) -> Scored:
    """Score every caption (recap's records, as `read_captions` checked them), `batch_size` at a
    time; each image of a batch is read once."""
    scores, index = [], []
    with tqdm(total=len(captions), desc="clip_filter", unit="caption", disable=not progress) as bar:
        for start in range(0, len(captions), batch_size):
            batch = captions[start:start + batch_size]
            images = {name: _load_image(Path(data_root) / name) for name in {r["file_name"] for r in batch}}
            s, i = scorer.score([images[r["file_name"]] for r in batch], [r["box"] for r in batch],
                                [r["caption"] for r in batch])
            scores.append(s)
            index.append(i + start)
            bar.update(len(batch))
    if not scores:
        return Scored(torch.zeros(0), torch.zeros(0, dtype=torch.long))
    return Scored(torch.cat(scores), torch.cat(index))


def _load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as raw:
            return raw.convert("RGB")
    except OSError as e:  # read_captions saw its header; the pixels themselves can still be broken
        raise CaptionFileError(f"cannot decode the image {path} ({e})") from None


# ------------------------------------------------------------------------------- input files


CAPTION_FIELDS = {"dataset": (str,), "split": (str,), "image_id": (int, str), "region_id": (int,),
                  "file_name": (str,), "box": (list,), "caption": (str,)}
TRUTH_FIELDS = {"dataset": (str,), "image_id": (int, str), "region_id": (int,), "corruption": (str, type(None))}


def read_captions(path: Path, data_root: Path) -> list[dict[str, Any]]:
    """The recap stage's captions, checked before any scoring starts: every field the filter reads
    present and well-typed, a box [x, y, w, h] of positive size inside its image, the image file
    readable, a caption with words, at most one caption per region. Errors name the file and line."""
    path, data_root = Path(path), Path(data_root)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the recap stage first (dvc repro recap)")
    records, seen, sizes = [], {}, {}
    for line, record in numbered_jsonl(path):
        _check_fields(path, line, record, CAPTION_FIELDS)
        where = f"{path}:{line}: {_region(record)}"
        box = record["box"]
        if len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                    for v in box) or box[2] <= 0 or box[3] <= 0:
            raise CaptionFileError(f"{where}: field 'box' must be [x, y, w, h] with w, h > 0, got {box!r}")
        if not record["caption"].strip():
            raise CaptionFileError(f"{where}: field 'caption' is empty")
        key = (record["dataset"], record["image_id"], record["region_id"])
        if key in seen:
            raise CaptionFileError(f"{where}: the region already has a caption on line {seen[key]}")
        seen[key] = line
        name = record["file_name"]
        if name not in sizes:
            sizes[name] = _image_size(data_root / name, where)
        width, height = sizes[name]
        x, y, w, h = box
        if x >= width or y >= height or x + w <= 0 or y + h <= 0:
            raise CaptionFileError(f"{where}: its box {box} lies outside its {width}x{height} image {name}")
        records.append(record)
    return records


def _image_size(path: Path, where: str) -> tuple[int, int]:
    try:
        with Image.open(path) as image:  # the header only: no pixels decoded here
            return image.size
    except FileNotFoundError:
        raise CaptionFileError(f"{where}: its image {path} does not exist (is data.root right?)") from None
    except OSError as e:
        raise CaptionFileError(f"{where}: its image {path} is not readable ({e})") from None


def read_truth(path: Path, captions: Sequence[dict[str, Any]]) -> list[str | None]:
    """The stand-in's corruption of each caption (None: truthful), in caption order; every caption
    must have its region in the file."""
    truth = {}
    for line, record in numbered_jsonl(path):
        _check_fields(Path(path), line, record, TRUTH_FIELDS)
        truth[(record["dataset"], record["image_id"], record["region_id"])] = record["corruption"]
    missing = [c for c in captions if (c["dataset"], c["image_id"], c["region_id"]) not in truth]
    if missing:
        raise CaptionFileError(f"{path}: no truth for {_region(missing[0])} and {len(missing) - 1} other captions: "
                               "it is not the truth of these captions; rerun the recap stage")
    return [truth[(c["dataset"], c["image_id"], c["region_id"])] for c in captions]


def _region(record: dict[str, Any]) -> str:
    return f"region {record.get('region_id')} of {record.get('dataset')} image {record.get('image_id')!r}"


def _check_fields(path: Path, line: int, record: Any, fields: dict[str, tuple[type, ...]]) -> None:
    if not isinstance(record, dict):
        raise CaptionFileError(f"{path}:{line}: expected a JSON object, got {type(record).__name__}")
    for name, types in fields.items():
        if name not in record:
            raise CaptionFileError(f"{path}:{line}: {_region(record)}: field '{name}' is missing")
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, types):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise CaptionFileError(f"{path}:{line}: {_region(record)}: field '{name}' must be {expected}, "
                                   f"got {value!r}")


# --------------------------------------------------------------------------------- the cutoff


def cutoff(scores: np.ndarray, threshold: ThresholdParams) -> float:
    """The score a caption needs to be kept: `threshold.value` itself (absolute), or that
    percentile of `scores` (numpy's linear interpolation between the two nearest scores)."""
    if threshold.kind == "absolute":
        return float(threshold.value)
    if len(scores) == 0:
        return -math.inf
    return float(np.percentile(scores, threshold.value))


# ----------------------------------------------------------------- measured against the truth


def removal_precision_recall(dropped: np.ndarray, corrupted: np.ndarray) -> dict[str, Any]:
    """How well dropping removes the corrupted captions: precision (of the dropped, the share that
    was corrupted; 0 when none was dropped), recall (of the corrupted, the share dropped), F1."""
    dropped, corrupted = np.asarray(dropped, bool), np.asarray(corrupted, bool)
    hits = int((dropped & corrupted).sum())
    precision = hits / dropped.sum() if dropped.any() else 0.0
    recall = hits / corrupted.sum() if corrupted.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(float(precision), 4), "recall": round(float(recall), 4), "f1": round(float(f1), 4),
            "dropped": int(dropped.sum()), "corrupted": int(corrupted.sum()), "dropped_corrupted": hits}


def removal_curve(scores: np.ndarray, corrupted: np.ndarray) -> list[dict[str, float]]:
    """Precision and recall of removal at every cutoff: one row per distinct score s, dropping
    every caption scoring at most s (ties go together)."""
    scores, corrupted = np.asarray(scores, float), np.asarray(corrupted, bool)
    order = np.argsort(scores, kind="stable")
    s, c = scores[order], corrupted[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last caption of each run of equal scores
    dropped = np.arange(1, len(s) + 1)[last]
    hits = np.cumsum(c)[last]
    precision = hits / dropped
    recall = hits / max(int(c.sum()), 1)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)
    return [{"max_dropped_score": round(float(a), 6), "dropped": int(k), "dropped_share": round(k / len(s), 6),
             "precision": round(float(p), 6), "recall": round(float(r), 6), "f1": round(float(f), 6)}
            for a, k, p, r, f in zip(s[last], dropped, precision, recall, f1)]


def average_precision(curve: Sequence[dict[str, float]]) -> float:
    """The area under the removal curve: sum over cutoffs of (recall gained) x precision."""
    recall = np.array([0.0] + [row["recall"] for row in curve])
    precision = np.array([row["precision"] for row in curve])
    return float(np.sum(np.diff(recall) * precision))


def auc(scores: np.ndarray, corrupted: np.ndarray) -> float:
    """The chance that a truthful caption scores above a corrupted one (ties count half): ROC AUC,
    by the Mann-Whitney rank sum. 0.5 is a filter that cannot tell them apart."""
    scores, corrupted = np.asarray(scores, float), np.asarray(corrupted, bool)
    n_bad, n_good = int(corrupted.sum()), int((~corrupted).sum())
    if not n_bad or not n_good:
        return float("nan")
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores, kind="stable")] = np.arange(1, len(scores) + 1)
    _, tie, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.bincount(tie, weights=ranks) / counts)[tie]  # ties share their mean rank
    return float((ranks[~corrupted].sum() - n_good * (n_good + 1) / 2) / (n_good * n_bad))


def separation(scored: Scored, n: int, corrupted: np.ndarray) -> dict[str, dict[str, float]]:
    """For every aggregation, how well its scores tell the corrupted captions from the truthful ones."""
    out = {}
    for how in AGGREGATIONS:
        scores = aggregate(scored.chunk_scores, scored.index, n, how).numpy()
        out[how] = {"auc": round(auc(scores, corrupted), 4),
                    "average_precision": round(average_precision(removal_curve(scores, corrupted)), 4)}
    return out


# ------------------------------------------------------------------------------------ the stage


def filter_metrics(captions: Sequence[dict[str, Any]], scored: Scored, scores: np.ndarray, kept: np.ndarray,
                   cut: float, p: ClipFilterParams, truth: list[str | None] | None,
                   wall_s: float) -> dict[str, Any]:
    chunks = torch.bincount(scored.index, minlength=len(captions)).tolist()
    after = [c for c, k in zip(captions, kept) if k]
    metrics: dict[str, Any] = {
        "captions": len(captions), "kept": int(kept.sum()), "dropped": int((~kept).sum()),
        "kept_share": round(float(kept.mean()), 4) if len(kept) else 0.0,
        "region_input": p.region_input, "aggregation": p.aggregation,
        "threshold": {"kind": p.threshold.kind, "value": p.threshold.value, "cutoff": round(cut, 6)},
        "clip_score": summary(scores.tolist(), 4),
        "chunks_per_caption": summary(chunks),
        "words_per_caption": {"before": summary(word_counts(captions)), "after": summary(word_counts(after))},
        "wall_s": round(wall_s, 2), "captions_per_s": round(len(captions) / wall_s, 1) if wall_s else 0.0,
    }
    if truth is not None:
        corrupted = np.array([t is not None for t in truth], bool)
        kinds = Counter(t for t in truth if t is not None)
        dropped_kinds = Counter(t for t, k in zip(truth, kept) if t is not None and not k)
        metrics["removal"] = removal_precision_recall(~kept, corrupted)
        metrics["recall_by_corruption"] = {kind: round(dropped_kinds[kind] / n, 4) for kind, n in sorted(kinds.items())}
        metrics["corrupted_share"] = {"before": round(float(corrupted.mean()), 4) if len(corrupted) else 0.0,
                                      "after": round(float(corrupted[kept].mean()), 4) if kept.any() else 0.0}
        metrics["separation"] = separation(scored, len(captions), corrupted)
    return metrics


def filter_captions(params: Params, *, progress: bool = True, captions_path: Path = CAPTIONS,
                    truth_path: Path = TRUTH, clip: Path = BASE_CLIP) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score, cut, write outputs/clip_filter/{captions,scores}.jsonl; return the metrics and what
    the reports are drawn from."""
    p = params.clip_filter
    captions = read_captions(captions_path, Path(params.data.root))
    truth = read_truth(truth_path, captions) if Path(truth_path).exists() else None
    device = ("cuda" if torch.cuda.is_available() else "cpu") if p.device == "auto" else p.device
    scorer = ClipScorer.from_pretrained(clip, region_input=p.region_input, layer=params.model.vision_feature_layer,
                                        context=p.context, device=device)
    started = time.perf_counter()
    scored = score_captions(scorer, captions, Path(params.data.root), batch_size=p.batch_size, progress=progress)
    wall_s = time.perf_counter() - started
    scores = aggregate(scored.chunk_scores, scored.index, len(captions), p.aggregation).numpy()
    cut = cutoff(scores, p.threshold)
    kept = scores >= cut
    per_caption = scored.per_caption()
    rows = []
    for i, caption in enumerate(captions):
        row = {k: caption[k] for k in ("dataset", "split", "image_id", "region_id")}
        row |= {"clip_score": round(float(scores[i]), 6), "kept": bool(kept[i]),
                "chunk_scores": [round(s, 6) for s in per_caption[i]]}
        if truth is not None:
            row["corruption"] = truth[i]
        rows.append(row)
    write_jsonl(SCORES, rows)
    write_jsonl(KEPT, ({**c, "clip_score": r["clip_score"]} for c, r in zip(captions, rows) if r["kept"]))
    metrics = filter_metrics(captions, scored, scores, kept, cut, p, truth, wall_s)
    corrupted = None if truth is None else np.array([t is not None for t in truth], bool)
    return metrics, {"captions": captions, "rows": rows, "scores": scores, "kept": kept, "cutoff": cut,
                     "truth": truth, "curve": None if truth is None else removal_curve(scores, corrupted),
                     "chosen": metrics.get("removal")}


def run_clip_filter(params: Params, *, progress: bool = True) -> StageResult:
    """The dvc stage: outputs/clip_filter/, reports/clip_filter/ (metrics, plots, gallery)."""
    from .clip_filter_report import write_reports

    metrics, figures = filter_captions(params, progress=progress)
    write_json(METRICS, metrics)
    return StageResult(metrics, {"metrics.json": METRICS, **write_reports(figures, params, FILTER_REPORTS)})
