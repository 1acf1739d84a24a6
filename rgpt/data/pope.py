"""POPE question files: built by POPE's own rules, read as the JSON Lines they are.

The rules follow AoiDragon/POPE `utils.pope` (see shared/reference/pope.md §2): images with at
least `sample_num` ground-truth objects, `img_num` of them drawn at random; the negative
vocabulary, the image frequency of each object and the co-occurrence lists are computed over the
chosen images only; per image and round `i`, the positive is the image's i-th listed object and
the negative is drawn by the split's strategy, rejecting anything in the image or already asked.
Unlike POPE's code we draw from a seeded generator, and we write the corrected question text of
the released HEAD files ("an" only before a vowel, no "imange").
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from .layout import POPE_SPLITS

TEMPLATE = "Is there a {} in the image?"


def question_text(name: str) -> str:
    article = "an" if name[:1] in "aeiou" else "a"
    return f"Is there {article} {name} in the image?"


def build_pope(objects: dict[str, list[str]], *, img_num: int, sample_num: int,
               rng: np.random.Generator) -> dict[str, list[dict]]:
    """The three splits' questions for `objects` (image file name -> its object names, in order)."""
    eligible = [image for image, names in objects.items() if len(names) >= sample_num]
    if len(eligible) < img_num:
        raise ValueError(f"POPE needs {img_num} images with >= {sample_num} objects, only {len(eligible)} have them")
    chosen = [eligible[i] for i in sorted(rng.choice(len(eligible), size=img_num, replace=False))]

    frequency = Counter(name for image in chosen for name in set(objects[image]))
    vocabulary = sorted(frequency)
    popular = sorted(vocabulary, key=lambda n: (-frequency[n], n))
    co_counts: dict[str, Counter] = defaultdict(Counter)
    for image in chosen:
        names = set(objects[image])
        for a in names:
            for b in names - {a}:
                co_counts[a][b] += 1
    co_occurring = {a: sorted(c, key=lambda b: (-c[b], b)) for a, c in co_counts.items()}

    splits: dict[str, list[dict]] = {}
    for strategy in POPE_SPLITS:
        questions = []
        for image in chosen:
            present = set(objects[image])
            asked: list[str] = []
            for i in range(sample_num):
                positive = objects[image][i]
                asked.append(positive)
                candidates = {"random": None, "popular": popular,
                              "adversarial": co_occurring.get(positive, [])}[strategy]
                negative = _first_acceptable(candidates, present, asked)
                if negative is None:  # POPE falls back to a random draw
                    negative = _random_acceptable(vocabulary, present, asked, rng)
                asked.append(negative)
                for name, label in ((positive, "yes"), (negative, "no")):
                    questions.append({"question_id": len(questions) + 1, "image": image,
                                      "text": question_text(name), "label": label})
        splits[strategy] = questions
    return splits


def _first_acceptable(candidates: list[str] | None, present: set[str], asked: list[str]) -> str | None:
    for name in candidates or []:
        if name not in present and name not in asked:
            return name
    return None


def _random_acceptable(vocabulary: list[str], present: set[str], asked: list[str],
                       rng: np.random.Generator) -> str:
    pool = [n for n in vocabulary if n not in present and n not in asked]
    if not pool:
        raise ValueError("POPE: no object left to ask about as a negative; the vocabulary is too small")
    return pool[int(rng.integers(len(pool)))]


def write_pope(path: str | os.PathLike, questions: list[dict]) -> None:
    """JSON Lines, keys in POPE's order, as the released files are."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))


def read_pope(path: str | os.PathLike) -> list[dict]:
    """Parse a POPE question file line by line (`json.load` on the whole file fails: it is JSONL)."""
    path = Path(path)
    questions = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                q = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not JSON ({e.msg}); POPE files are JSON Lines") from e
            missing = [k for k in ("question_id", "image", "text", "label") if k not in q]
            if missing:
                raise ValueError(f"{path}:{line_no}: question lacks field(s) {missing}")
            questions.append(q)
    return questions
