"""POPE (Table 8): object-presence questions scored exactly as POPE's own evaluation does.

The yes/no rule is POPE's `evaluate.py` (and LLaVA's `eval_pope.py`), quirks included, so our
figures are comparable with published ones (shared/reference/pope.md §3): only the text before
the first "." counts, commas are dropped, it is split on single spaces, and the answer is "no"
when a token is exactly "No", "not" or "no"; anything else, "NO", "Nope" and "" included, is "yes".
"""

from __future__ import annotations

from typing import Sequence

NEGATIONS = ("No", "not", "no")


def is_yes(answer: str) -> bool:
    """POPE's mapping of a free-text answer to yes (True) or no (False)."""
    first_sentence = answer.split(".")[0] if "." in answer else answer
    words = first_sentence.replace(",", "").split(" ")
    return not any(word in NEGATIONS for word in words)


def pope_metrics(answers: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (yes is the positive class) and yes-ratio, with the counts.

    Labels are POPE's "yes" / "no"; anything but "no" is yes, as in POPE's script. Where POPE's
    script divides by zero (a model that never says yes), precision and F1 are 0 here.
    """
    if len(answers) != len(labels):
        raise ValueError(f"{len(answers)} answers for {len(labels)} labels: POPE pairs them by position, "
                         "so every question needs exactly one answer")
    if not answers:
        raise ValueError("no POPE answers to score")
    predicted = [is_yes(a) for a in answers]
    truth = [label != "no" for label in labels]
    tp = sum(p and t for p, t in zip(predicted, truth))
    fp = sum(p and not t for p, t in zip(predicted, truth))
    tn = sum(not p and not t for p, t in zip(predicted, truth))
    fn = sum(not p and t for p, t in zip(predicted, truth))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"accuracy": (tp + tn) / len(answers), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "yes_ratio": sum(predicted) / len(answers), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "questions": len(answers)}
