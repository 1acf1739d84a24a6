"""The evaluation report: our figures beside the paper's (Tables 3, 4, 5, 8), per-category AP and
POPE bars. Metrics are fractions everywhere in files; the report prints them x100, as the paper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..reports import pyplot, save_figure

# RegionGPT's own rows of the paper's tables (x100). Table 3's accuracy is 80.61 (the text says 80.86).
PAPER = {
    "classification": {"map": 70.0, "accuracy": 80.61},
    "captioning": {"refcocog_val": {"meteor": 16.9, "cider": 109.9}, "vg_test": {"meteor": 17.0, "cider": 145.6}},
    "rec": {"refcocog_val": {"accuracy": 86.44}, "refcocog_test": {"accuracy": 86.96}},
    "pope": {
        "random": {"accuracy": 87.80, "precision": 97.75, "recall": 78.13, "f1": 86.85, "yes_ratio": 41.20},
        "popular": {"accuracy": 87.20, "precision": 95.44, "recall": 78.13, "f1": 85.92, "yes_ratio": 40.93},
        "adversarial": {"accuracy": 85.67, "precision": 91.99, "recall": 78.13, "f1": 84.50, "yes_ratio": 42.47},
    },
}
POPE_FIGURES = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def markdown(metrics: dict[str, Any], profile: str, model: str) -> str:
    """The report: one table per benchmark that ran, ours next to the paper's."""
    lines = [f"# RGPT evaluation ({profile} profile)", "", f"Model: `{model}`.", ""]
    if profile == "embedded":
        lines += ["The embedded profile scores a small model trained on the synthetic twin of each dataset, "
                  "so its figures say whether the pipeline learns, not how RGPT compares with the paper; "
                  "the paper's column is there for the paper profile.", ""]
    if "classification" in metrics:
        m, p = metrics["classification"], PAPER["classification"]
        lines += ["## Region classification, COCO val2017 (Table 3)", "",
                  f"Mode: {m['mode']}; {m['regions']} regions; {m['off_vocabulary']} answers named no COCO category.", "",
                  "| | mAP | AP50 | AP small | AP medium | AP large | accuracy |", "|---|---|---|---|---|---|---|",
                  f"| ours | {_pct(m['map'])} | {_pct(m['map_50'])} | {_pct(m['map_small'])} | "
                  f"{_pct(m['map_medium'])} | {_pct(m['map_large'])} | {_pct(m['accuracy'])} |",
                  f"| paper | {p['map']:.1f} | | | | | {p['accuracy']:.2f} |"]
        if "synonym_accuracy" in m:
            lines += [f"| ours, synonym-aware (Tab. 14; not the main figure) | {_pct(m['synonym_map'])} | | | | | "
                      f"{_pct(m['synonym_accuracy'])} |"]
        lines += [""]
    if "captioning" in metrics:
        lines += ["## Region captioning (Table 4)", "", "| | captions | METEOR | CIDEr | paper METEOR | paper CIDEr |",
                  "|---|---|---|---|---|---|"]
        for part, m in metrics["captioning"].items():
            p = PAPER["captioning"].get(part, {})
            lines += [f"| {part} | {m['captions']} | {_pct(m['meteor'])} | {_pct(m['cider'])} | "
                      f"{p.get('meteor', '–')} | {p.get('cider', '–')} |"]
        lines += [""]
    if "rec" in metrics:
        lines += ["## Referring expression comprehension, RefCOCOg (Table 5)", "",
                  "| | expressions | accuracy | unparseable | ground truth inserted | paper accuracy |",
                  "|---|---|---|---|---|---|"]
        for part, m in metrics["rec"].items():
            lines += [f"| {part} | {m['expressions']} | {_pct(m['accuracy'])} | {m['unparseable']} | "
                      f"{m['ground_truth_inserted']} | {PAPER['rec'].get(part, {}).get('accuracy', '–')} |"]
        lines += [""]
    if "pope" in metrics:
        m = metrics["pope"]
        lines += ["## POPE (Table 8)", "", f"Question files: {m['question_files']}.", "",
                  "| split | | " + " | ".join(POPE_FIGURES) + " |", "|---|---|" + "---|" * len(POPE_FIGURES)]
        for split in PAPER["pope"]:
            if split in m:
                lines += [f"| {split} | ours | " + " | ".join(_pct(m[split][f]) for f in POPE_FIGURES) + " |",
                          "| | paper | " + " | ".join(f"{PAPER['pope'][split][f]:.2f}" for f in POPE_FIGURES) + " |"]
        lines += [""]
    return "\n".join(lines)


def plot_ap_per_category(ap: dict[str, float], path: Path) -> Path:
    plt = pyplot()
    names = sorted(ap, key=ap.get)
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.16 * len(names))))
    ax.barh(names, [100 * ap[n] for n in names])
    ax.set(xlabel="AP (x100)", title="COCO val: AP per category", xlim=(0, 100))
    ax.tick_params(axis="y", labelsize=6)
    return save_figure(fig, path)


def plot_pope(pope: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    splits = [s for s in PAPER["pope"] if s in pope]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / len(splits)
    for k, split in enumerate(splits):
        ax.bar([i + k * width for i in range(len(POPE_FIGURES))], [100 * pope[split][f] for f in POPE_FIGURES],
               width, label=split)
    ax.set_xticks([i + width * (len(splits) - 1) / 2 for i in range(len(POPE_FIGURES))], POPE_FIGURES)
    ax.set(ylim=(0, 100), ylabel="x100", title="POPE")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
