"""Small text summaries of the recap outputs, for the terminal."""

from __future__ import annotations


def text_histogram(values: list[int], bins: int = 10, width: int = 40) -> str:
    """A histogram as lines of '#' bars: 'lo-hi  count  ####'; empty input gives a one-line note."""
    if not values:
        return "(no captions)"
    lo, hi = min(values), max(values)
    step = max(1, -(-(hi - lo + 1) // bins))  # ceil: every value falls in a bin
    counts = [0] * (-(-(hi - lo + 1) // step))
    for v in values:
        counts[(v - lo) // step] += 1
    top = max(counts)
    lines = ["words per caption"]
    for i, n in enumerate(counts):
        start = lo + i * step
        bar = "#" * max(1 if n else 0, round(width * n / top))
        lines.append(f"{start:>5}-{start + step - 1:<5} {n:>7}  {bar}")
    return "\n".join(lines)
