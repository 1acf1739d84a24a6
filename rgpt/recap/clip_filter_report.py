"""What the clip_filter stage draws for people: score histogram, removal curve, words per caption
and a gallery of region crops with their captions and scores (kept and dropped)."""

from __future__ import annotations

import html
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..config import Params
from ..reports import pyplot, save_figure, write_csv
from .images import crop_box, crop_region, png_data_url
from .stats import word_counts

GALLERY_SEED = 0
GALLERY_CONTEXT = 0.5  # the crop shown: the region with half its size around it, as the VLM saw it
GALLERY_SIDE = 96  # pixels: crops are drawn at this width


def write_reports(figures: dict[str, Any], params: Params, out_dir: Path) -> dict[str, Path]:
    """Every plot and the gallery into `out_dir`; returns name -> path (the MLflow artifacts)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scores, kept, cut, truth = figures["scores"], figures["kept"], figures["cutoff"], figures["truth"]
    before = word_counts(figures["captions"])
    after = [n for n, k in zip(before, kept) if k]
    out = {"scores.png": plot_scores(scores, cut, truth, out_dir / "scores.png"),
           "words_per_caption.png": plot_words(before, after, out_dir / "words_per_caption.png"),
           "words_per_caption.csv": write_csv(out_dir / "words_per_caption.csv", words_table(before, after)),
           "gallery.html": write_gallery(figures["captions"], figures["rows"], Path(params.data.root),
                                         params.clip_filter.gallery, out_dir / "gallery.html")}
    if figures["curve"] is not None:  # the truth is known: how well the filter removes the corrupted
        out["removal_curve.csv"] = write_csv(out_dir / "removal_curve.csv", figures["curve"])
        out["removal_curve.png"] = plot_removal_curve(figures["curve"], figures["chosen"], len(scores),
                                                      out_dir / "removal_curve.png")
    return out


def plot_scores(scores: np.ndarray, cut: float, truth: Sequence[str | None] | None, path: Path) -> Path:
    """The CLIP scores' histogram, truthful and corrupted captions apart where the truth is known."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.histogram_bin_edges(scores, bins=40) if len(scores) else 10
    if truth is None:
        ax.hist(scores, bins=bins, color="tab:blue", label="captions")
    else:
        corrupted = np.array([t is not None for t in truth], bool)
        ax.hist([scores[~corrupted], scores[corrupted]], bins=bins, stacked=True, color=["tab:blue", "tab:red"],
                label=[f"truthful ({(~corrupted).sum()})", f"corrupted ({corrupted.sum()})"])
    ax.axvline(cut, color="black", linestyle="--", label=f"cutoff {cut:.3f}: below is dropped")
    ax.set(xlabel="CLIP score (cosine of region and caption)", ylabel="captions", title="clip_filter: scores")
    ax.legend()
    return save_figure(fig, path, dpi=110)


def plot_removal_curve(curve: list[dict[str, float]], chosen: dict[str, Any], n: int, path: Path) -> Path:
    """Precision against recall of removing the corrupted captions, and both against the share
    dropped (what a percentile threshold sets), the chosen threshold marked on each."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    recall = [r["recall"] for r in curve]
    precision = [r["precision"] for r in curve]
    share = [100 * r["dropped_share"] for r in curve]
    left.plot(recall, precision, color="tab:blue")
    left.scatter([chosen["recall"]], [chosen["precision"]], color="black", zorder=3,
                 label=f"chosen: P {chosen['precision']:.2f}, R {chosen['recall']:.2f}")
    left.set(xlabel="recall (corrupted captions dropped)", ylabel="precision (dropped that were corrupted)",
             xlim=(0, 1.02), ylim=(0, 1.02), title="removal of the corrupted captions")
    left.legend(loc="lower left")
    right.plot(share, precision, label="precision")
    right.plot(share, recall, label="recall")
    right.plot(share, [r["f1"] for r in curve], label="F1")
    right.axvline(100 * chosen["dropped"] / max(n, 1), color="black", linestyle="--", label="chosen threshold")
    right.set(xlabel="captions dropped (%)", ylim=(0, 1.02), title="against the share dropped")
    right.legend()
    return save_figure(fig, path, dpi=110)


def word_bin_width(words: Sequence[int], bins: int = 25) -> int:
    """Whole words per bin: 1, or as many as keep the histogram to about `bins` bins."""
    return max(1, -(-(max(words) - min(words) + 1) // bins)) if words else 1


def words_table(before: Sequence[int], after: Sequence[int]) -> list[dict[str, int]]:
    """Captions per words-per-caption bin (`words`: its first word count), before and after filtering."""
    if not before:
        return []
    width = word_bin_width(before)
    edges = range(min(before), max(before) + 1, width)
    return [{"words": edge, "before": sum(edge <= n < edge + width for n in before),
             "after": sum(edge <= n < edge + width for n in after)} for edge in edges]


def plot_words(before: Sequence[int], after: Sequence[int], path: Path) -> Path:
    """Words per caption before and after filtering (the paper's Table 2 column), side by side per
    bin of whole word counts, the means in the legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    if before:
        width = word_bin_width(before)
        edges = np.arange(min(before), max(before) + width + 1, width) - 0.5  # bins centred on whole counts
        labels = [f"{name}: {len(v)} captions, mean {np.mean(v):.1f}" if v else f"{name}: none"
                  for name, v in (("before", before), ("after (kept)", after))]
        ax.hist([before, after], bins=edges, color=["tab:grey", "tab:green"], label=labels)
        ax.legend()
    ax.set(xlabel="words per caption", ylabel="captions", title="clip_filter: words per caption")
    return save_figure(fig, path, dpi=110)


def gallery_sample(rows: Sequence[dict[str, Any]], per_side: int) -> list[int]:
    """Indices of `per_side` kept and `per_side` dropped captions (a seeded draw), each side by score."""
    draw = random.Random(GALLERY_SEED)
    picked = []
    for kept in (False, True):
        side = [i for i, r in enumerate(rows) if r["kept"] is kept]
        chosen = draw.sample(side, min(per_side, len(side)))
        picked += sorted(chosen, key=lambda i: rows[i]["clip_score"])
    return picked


def write_gallery(captions: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], data_root: Path,
                  per_side: int, path: Path) -> Path:
    """One self-contained HTML page: each drawn caption beside its region's crop (with the margin the
    VLM saw, the box outlined in magenta), its score, chunk scores, kept or dropped, and the truth
    where it is known."""
    cards = []
    for i in gallery_sample(rows, per_side):
        caption, row = captions[i], rows[i]
        with Image.open(data_root / caption["file_name"]) as raw:
            image = raw.convert("RGB")
        crop = crop_region(image, caption["box"], GALLERY_CONTEXT)
        left, top, _, _ = crop_box(caption["box"], image.width, image.height, GALLERY_CONTEXT)
        x, y, w, h = caption["box"]
        ImageDraw.Draw(crop).rectangle([x - left, y - top, x - left + w - 1, y - top + h - 1], outline=(255, 0, 255))
        truth = ""
        if "corruption" in row:
            truth = f"<br>truth: <b>{html.escape(row['corruption'] or 'truthful')}</b>"
        verdict = "kept" if row["kept"] else "dropped"
        chunks = ", ".join(f"{s:.3f}" for s in row["chunk_scores"])
        cards.append(
            f'<div class="card {verdict}"><img src="{png_data_url(crop)}" width="{GALLERY_SIDE}">'
            f'<div><b>{verdict}</b>, score {row["clip_score"]:.3f} (chunks: {chunks}){truth}<br>'
            f'{html.escape(caption["dataset"])} image {html.escape(str(caption["image_id"]))}, region '
            f'{caption["region_id"]}: <i>{html.escape(str(caption.get("class_name", "")))}</i>'
            f'<p>{html.escape(caption["caption"])}</p></div></div>')
    page = ("<!doctype html><meta charset='utf-8'><title>clip_filter gallery</title><style>"
            "body{font:13px sans-serif;max-width:1100px}.card{display:flex;gap:12px;padding:8px;margin:6px 0;"
            "border-left:6px solid}.kept{border-color:#2a2}.dropped{border-color:#c22}"
            "img{image-rendering:pixelated;align-self:flex-start}p{margin:4px 0}</style>"
            f"<h1>clip_filter: {per_side} dropped and {per_side} kept captions (seeded draw, by score)</h1>"
            + "".join(cards))
    path.write_text(page, encoding="utf-8")
    return path
