"""Where a trained RGPT loses REC: the region slots' contents, or the image tokens around them?

The base LLM learns REC with each `<region>` slot holding the mean input embedding of its region's
name (`rgpt.model.slot_embeddings`; base_models measures it on text alone: the REC figures in
reports/base_models/metrics.json). Inside RGPT two things differ: the slots hold projected region
features, and `<image>` is `model.image_tokens` projected image tokens the base LLM never saw.
This scores a trained RGPT's held-out REC (RefCOCOg val expressions among the image's regions, as
the train stages' check asks them) and classification (COCO val) with

    --slots projected   the model's own region embeddings (what it really answers from)
    --slots names       every slot holding its region's name embedding, as in base_models
    --image-tokens N    the refined map pooled to N x N image tokens instead of the model's own

REC is scored two ways: the generated answer, and the forced choice (the lowest answer loss among
"Region [1]." .. "Region [n].", what base_models reports).

Measured on 2 CPU cores with the stage-1 model of 05ee2c2's run (before category_rec;
frozen base LLM; 208 classification and 159 REC questions, REC chance 0.317):

    slots       image tokens   classification   REC generated   REC forced
    projected   8 x 8 (own)        0.332            0.258          0.321
    names       8 x 8 (own)        1.000            0.233          0.308
    names       4 x 4              1.000            0.390          0.409
    names       2 x 2              1.000            0.409          0.421
    names       1 x 1              1.000            0.377          0.390
    projected   2 x 2              0.322            0.358          0.371

With names in the slots the frozen base LLM names every region, yet picks the described one no
better than chance among 64 image tokens: the image tokens, not the projected regions, are what
breaks its REC (fewer image tokens: 0.41; the image tokens left out of attention altogether:
0.415). Even then its REC on RefCOCOg's expressions is ~0.4 against 0.66 on its own drills, with
152 of the 159 targets the only proposal of their name: a name matcher would get them right.
Stage 2's model with names in its slots: classification 0.827, REC 0.333 (forced) — fine-tuning
does not learn REC either (docs/findings.md).

    python experiments/rec_slots.py --model models/stage1 --slots names --image-tokens 2
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from transformers import AutoTokenizer

from rgpt.config import load_params
from rgpt.data.records import DatasetSplit
from rgpt.data.stages import VALIDATED
from rgpt.eval.heldout import answer_questions, heldout_questions, is_right, rec_forced_choices, requests
from rgpt.model.modeling_rgpt import RGPTForConditionalGeneration
from rgpt.model.processing_rgpt import RGPTProcessor


class NamedSlots:
    """Replaces the model's region embeddings, batch by batch, with the mean input embedding of
    each region's name (`slot_embeddings`); `queue`: the names in the order the regions are
    encoded."""

    def __init__(self, model: RGPTForConditionalGeneration, tokenizer):
        self.embed, self.tokenizer = model.get_input_embeddings(), tokenizer
        self.rows: dict[str, torch.Tensor] = {}
        self.queue: list[str] = []

    def row(self, name: str) -> torch.Tensor:
        if name not in self.rows:
            ids = torch.tensor(self.tokenizer(f" {name}", add_special_tokens=False).input_ids)
            self.rows[name] = self.embed(ids).mean(0)
        return self.rows[name]

    def __call__(self, refined, masks, image_index) -> torch.Tensor:
        names, self.queue = self.queue[:len(masks)], self.queue[len(masks):]
        return torch.stack([self.row(n) for n in names])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/stage1"))
    parser.add_argument("--slots", choices=("projected", "names"), default="projected")
    parser.add_argument("--image-tokens", type=int, default=None, help="N: pool to N x N image tokens")
    parser.add_argument("--images", type=int, default=60, help="validation images per task")
    args = parser.parse_args()
    params = load_params()
    torch.set_num_threads(2)
    model = RGPTForConditionalGeneration.from_pretrained(args.model).eval()
    processor = RGPTProcessor.from_pretrained(args.model)
    if args.image_tokens:
        model.config.image_tokens = [args.image_tokens, args.image_tokens]
        processor.config = dataclasses.replace(processor.config, num_image_tokens=args.image_tokens ** 2)
    questions = heldout_questions(DatasetSplit.load(VALIDATED, "coco_val"), DatasetSplit.load(VALIDATED, "refcocog_val"),
                                  args.images, params.train.seed, params.conversations.rec_max_proposals)
    asked = requests(questions, params.data.root)
    rec = [i for i, q in enumerate(questions) if q.task == "rec"]
    reset = lambda: None  # noqa: E731
    if args.slots == "names":
        slots = NamedSlots(model, AutoTokenizer.from_pretrained(args.model))
        slots.queue = [n for q in questions for n in q.names]
        model.encode_regions = slots

        def reset() -> None:  # the forced choice asks each REC question once per proposal
            slots.queue = [n for i in rec for _ in questions[i].regions for n in questions[i].names]
    with torch.no_grad():
        answers = answer_questions(model, processor, asked)
        reset()
        chosen = rec_forced_choices(model, processor, questions, asked, rec)
    for task in ("classification", "rec"):
        rows = [i for i, q in enumerate(questions) if q.task == task]
        right = sum(is_right(task, answers[i], questions[i].answer) for i in rows) / len(rows)
        print(f"{task}: {right:.3f} generated ({len(rows)} questions)")
    forced = [f"Region [{k}]." == questions[i].answer for i, k in zip(rec, chosen)]
    unique = [questions[i].names.count(questions[i].names[int(questions[i].answer[8:-2]) - 1]) == 1 for i in rec]
    chance = sum(1 / len(questions[i].regions) for i in rec) / len(rec)
    print(f"rec: {sum(forced) / len(rec):.3f} forced choice (chance {chance:.3f}); "
          f"{sum(unique)} of {len(rec)} targets the only proposal of their name")


if __name__ == "__main__":
    main()
