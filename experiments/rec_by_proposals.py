"""REC by how many proposals a question offers and where its target stands.

Two models, each scored by forced choice (the lowest answer loss among "Region [1]." ..
"Region [n].", as base_models scores REC):

- the base LLM (base_models/llm) on fresh drills among exactly n proposals, each slot holding its
  name, asked after RGPT's image tokens as base_models asks them (`with_image`);
- a trained RGPT (--model) on the train stages' held-out RefCOCOg questions (`heldout_questions`),
  its slots holding its projected regions.

Measured on 2 CPU cores with be39512's run (docs/findings.md), right (questions):

    proposals  chance   base LLM, fresh drills           RGPT stage 2, held-out RefCOCOg
                        target last   target before      target last   target before
        2      0.500    0.976 (42)    1.000 (38)         0.750 (16)    0.778 (18)
        3      0.333    1.000 (34)    0.391 (46)         0.714 (7)     0.438 (32)
        4      0.250    0.909 (22)    0.328 (58)         0.857 (7)     0.229 (35)
        5      0.200    1.000 (25)    0.236 (55)         0.714 (7)     0.250 (20)
        6      0.167    1.000 (17)    0.254 (63)         0.667 (3)     0.000 (12)

The base LLM has learnt whether the *last* proposal is the described one, not which one is: among
two that is the whole task (the drills-alone phase trains among two), among more it answers the
last one right every time and guesses otherwise (among six, "Region [4]." for 38 of the 63
questions whose target comes earlier). Its one REC check, fresh drills among 2..6 with half of
them among two, hides that (0.76). RGPT inherits it: REC is right when the target comes last,
at chance before it. The slots are not what limits it: with the regions' names in them
(experiments/rec_slots.py) stage 2's REC is the same as with its projected regions (0.509 / 0.516).

Since base_models begins with dense REC lists (drills.RecList), the same script finds the match
wherever the target stands: docs/findings.md has the table of that run.

    python experiments/rec_by_proposals.py [--model models/stage2] [--llm base_models/llm]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from rgpt.base_models.llm import num_image_tokens
from rgpt.config import load_params
from rgpt.data.conversations import read_conversations
from rgpt.data.records import DatasetSplit
from rgpt.data.stages import VALIDATED
from rgpt.data.templates import load_templates
from rgpt.embedded import drills
from rgpt.embedded.base_llm import CONVERSATION_FILES
from rgpt.embedded.llm import with_image
from rgpt.embedded.rec import rec_choices
from rgpt.eval.heldout import heldout_questions, rec_forced_choices, requests
from rgpt.model.modeling_rgpt import RGPTForConditionalGeneration
from rgpt.model.processing_rgpt import RGPTProcessor

DRILLS_PER_COUNT = 80


def base_llm_answers(llm_path: Path, conversations: Path, max_proposals: int, image_tokens: int,
                     seed: int) -> list[tuple[int, int, int]]:
    """(proposals, target, choice) of the base LLM on `DRILLS_PER_COUNT` fresh drills among exactly
    n proposals, for n = 2..max_proposals."""
    tokenizer = AutoTokenizer.from_pretrained(llm_path)
    llm = LlamaForCausalLM.from_pretrained(llm_path).eval()
    templates = load_templates()
    samples = [s for name in CONVERSATION_FILES for s in read_conversations(conversations / name)]
    names = drills.category_names(samples)
    answers = []
    for n in range(2, max_proposals + 1):
        drawn = drills.rec_questions(drills.rec_drills(names, 20 * DRILLS_PER_COUNT, 1, n, templates, seed), templates)
        questions = [with_image(q) for q in drawn if q["proposals"] == n][:DRILLS_PER_COUNT]
        chosen = rec_choices(llm, tokenizer, questions, templates, image_tokens)
        answers += [(n, drills.answer_target(q["conversations"][1]["value"]), k) for q, k in zip(questions, chosen)]
    return answers


def rgpt_answers(model_path: Path, params) -> list[tuple[int, int, int]]:
    """(proposals, target, choice) of a trained RGPT on the held-out RefCOCOg questions among two or
    more proposals whose target is offered."""
    model = RGPTForConditionalGeneration.from_pretrained(model_path).eval()
    processor = RGPTProcessor.from_pretrained(model_path)
    questions = heldout_questions(DatasetSplit.load(VALIDATED, "coco_val"), DatasetSplit.load(VALIDATED, "refcocog_val"),
                                  params.train.heldout_images, params.train.seed,
                                  params.conversations.rec_max_proposals)
    rec = [i for i, q in enumerate(questions)
           if q.task == "rec" and len(q.regions) > 1 and drills.answer_target(q.answer) is not None]
    with torch.no_grad():
        chosen = rec_forced_choices(model, processor, questions, requests(questions, params.data.root), rec)
    return [(len(questions[i].regions), drills.answer_target(questions[i].answer), k) for i, k in zip(rec, chosen)]


def share(rows: list[tuple[int, int, int]]) -> str:
    return f"{sum(t == k for _, t, k in rows) / len(rows):.3f} ({len(rows)})" if rows else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/stage2"))
    parser.add_argument("--llm", type=Path, default=Path("base_models/llm"))
    parser.add_argument("--conversations", type=Path, default=Path("outputs/conversations"))
    args = parser.parse_args()
    params = load_params()
    torch.set_num_threads(2)
    most = params.conversations.rec_max_proposals
    models = {"base LLM, fresh drills": base_llm_answers(args.llm, args.conversations, most,
                                                         num_image_tokens(params), params.base_models.seed + 4),
              "RGPT, held-out RefCOCOg": rgpt_answers(args.model, params)}
    for label, answers in models.items():
        print(f"\n{label}: right (questions), by proposal count")
        print(f"{'proposals':>9} {'chance':>7} {'all':>12} {'target last':>12} {'target before':>14}")
        for n in range(2, most + 1):
            rows = [a for a in answers if a[0] == n]
            print(f"{n:>9} {1 / n:>7.3f} {share(rows):>12} {share([a for a in rows if a[1] == n]):>12} "
                  f"{share([a for a in rows if a[1] < n]):>14}")
        chosen = Counter((t, k) for n, t, k in answers if n == most)
        print(f"among {most}: answers by target position (rows) and answer (columns 1..{most})")
        for t in range(1, most + 1):
            print(f"{t:>3}:", *(f"{chosen[(t, k)]:>4}" for k in range(1, most + 1)))


if __name__ == "__main__":
    main()
