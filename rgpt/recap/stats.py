"""Small text summaries of the recap outputs, for the terminal."""

from __future__ import annotations

import statistics
from typing import Any, Sequence


def word_counts(captions: Sequence[dict[str, Any]]) -> list[int]:
    """Words per caption (the paper's Table 2 column), in the captions' order."""
    return [len(c["caption"].split()) for c in captions]


def summary(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    """mean, median, min and max, rounded; zeros for no values."""
    if not values:
        return {"mean": 0.0, "median": 0.0, "min": 0.0, "max": 0.0}
    return {"mean": round(statistics.fmean(values), digits), "median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}


def text_histogram(values: list[int], bins: int = 10, width: int = 40, title: str = "words per caption") -> str:
    """A histogram as lines of '#' bars: 'lo-hi  count  ####'; empty input gives a one-line note."""
    if not values:
        return "(no captions)"
    lo, hi = min(values), max(values)
    step = max(1, -(-(hi - lo + 1) // bins))  # ceil: every value falls in a bin
    counts = [0] * (-(-(hi - lo + 1) // step))
    for v in values:
        counts[(v - lo) // step] += 1
    top = max(counts)
    lines = [title]
    for i, n in enumerate(counts):
        start = lo + i * step
        bar = "#" * max(1 if n else 0, round(width * n / top))
        lines.append(f"{start:>5}-{start + step - 1:<5} {n:>7}  {bar}")
    return "\n".join(lines)


def filter_rows(m: dict) -> list[tuple[str, str]]:
    """The clip_filter stage's figures (reports/clip_filter/metrics.json) as (name, value) rows."""
    t, words = m["threshold"], m["words_per_caption"]
    rows = [("kept / dropped", f"{m['kept']} / {m['dropped']} of {m['captions']} ({m['kept_share']:.1%} kept)"),
            ("threshold", f"{t['kind']} {t['value']:g}: cutoff {t['cutoff']:.4f} ({m['aggregation']} of the chunk "
                          f"scores, region_input {m['region_input']})"),
            ("words per caption", f"mean {words['before']['mean']:.1f} before, {words['after']['mean']:.1f} after")]
    if "removal" in m:
        r, share = m["removal"], m["corrupted_share"]
        rows += [("corrupted captions removed", f"precision {r['precision']:.3f}, recall {r['recall']:.3f} "
                                                f"({r['dropped_corrupted']} of {r['corrupted']})"),
                 ("corrupted share", f"{share['before']:.1%} before, {share['after']:.1%} after"),
                 ("separation (AUC) by aggregation",
                  ", ".join(f"{k} {v['auc']:.3f}" for k, v in m["separation"].items()))]
    return rows
