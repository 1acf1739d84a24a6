"""The base LLM's REC with k `<image>` tokens in front of the question, on text alone.

Inside RGPT every question comes after the image's tokens (64 with the embedded default). This
asks the base LLM (base_models/llm) the questions base_models scores it on — the held-out
conversations' RefCOCOg questions and fresh drills among 2..rec_max_proposals, each slot holding
its region's name — after k copies of the bare `<image>` token, for k = 0, 1 and RGPT's count
(`rgpt.model.num_image_tokens`).

Measured on 2 CPU cores (docs/findings.md), the base LLM of 6ec8731's run, trained with one `<image>`
token: held-out 0.633 / 0.633 / 0.300 (chance 0.343), drills 0.770 / 0.820 / 0.530 (chance 0.383)
for k = 0 / 1 / 64 — 64 tokens it never saw break its REC. base_models now trains with each
`<image>` as RGPT's count of them (`pack`); the base LLM of the run after: held-out 0.700 /
0.700 / 0.733, drills 0.750 / 0.745 / 0.760.

    python experiments/rec_after_image.py [--llm base_models/llm]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from rgpt.base_models.llm import num_image_tokens
from rgpt.config import load_params
from rgpt.data.conversations import read_conversations
from rgpt.data.templates import IMAGE, load_templates
from rgpt.embedded import drills
from rgpt.embedded.base_llm import CONVERSATION_FILES, HELDOUT_FRACTION, REC_HELDOUT_DRILLS, heldout_images
from rgpt.embedded.rec import rec_accuracy


def after_image(question: dict, k: int) -> dict:
    """The one-turn question with its `<image>` (if any) replaced by k `<image>` tokens in front."""
    first, answer = question["conversations"]
    text = first["value"].replace(f"{IMAGE}\n", "").replace(IMAGE, "")
    return {**question, "conversations": [{**first, "value": f"{IMAGE * k}\n{text}" if k else text}, answer]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", type=Path, default=Path("base_models/llm"))
    parser.add_argument("--conversations", type=Path, default=Path("outputs/conversations"))
    args = parser.parse_args()
    params = load_params()
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(args.llm)
    llm = LlamaForCausalLM.from_pretrained(args.llm).eval()
    templates, seed = load_templates(), params.base_models.seed
    # the same held-out images and fresh drills as base_models (`rgpt.embedded.base_llm`)
    samples = [s for name in CONVERSATION_FILES for s in read_conversations(args.conversations / name)]
    held = heldout_images(samples, HELDOUT_FRACTION, seed)
    names = drills.category_names([s for s in samples if s["image"] not in held])
    sets = {"held-out RefCOCOg": drills.rec_questions([s for s in samples if s["image"] in held], templates),
            "fresh drills": drills.rec_questions(drills.rec_drills(
                names, REC_HELDOUT_DRILLS, 1, params.conversations.rec_max_proposals, templates, seed + 2),
                templates)}
    counts = (0, 1, num_image_tokens(params))
    print(f"{'questions':<18} {'n':>4} {'chance':>7}", *(f"{f'k={k}':>7}" for k in counts))
    for label, questions in sets.items():
        scores = [rec_accuracy(llm, tokenizer, [after_image(q, k) for q in questions], templates)
                  for k in counts]
        chance = np.mean([1 / q["proposals"] for q in questions])
        print(f"{label:<18} {len(questions):>4} {chance:>7.3f}", *(f"{s:>7.3f}" for s in scores), flush=True)


if __name__ == "__main__":
    main()
