"""Can the embedded base LLM's architecture learn REC's "find the named slot, say its number"?

REC asks RGPT to pick, among numbered proposals, the one a description names:

    USER: Region [1] <region> and Region [2] <region>. Which one is the red star?
          Answer the question using the template Region [x]. ASSISTANT: Region [2].

The LLM has to match the description against what each `<region>` slot holds and copy the number
written in front of that slot: an associative recall, which Vicuna brings from its pre-training
and our small base LLM (params base_models.llm) must learn from scratch. This drill isolates that
skill from vision: text only, each slot holding its name's mean input embedding, as the base LLM
is trained (`rgpt.model.slot_embeddings`), names drawn from V3Det's categories, every
proposal asked about in turn (multi-turn), the loss on the answers' numbers only (`--loss all`:
on every token, as base_models trains its LLM); scored on 200 fresh drills by the lowest
teacher-forced loss over the candidate numbers. It trains its own byte-level BPE on
the drills (`train_tokenizer`), so it needs only the raw corpus (`python flows/download.py`).

Measured on 2 CPU cores (docs/findings.md), the defaults (the base LLM's 4 layers,
2 proposals, lr 1e-3, batch 32, 4,000 steps, ~20 min): chance (0.43-0.45) for 1,000 steps, then
0.70 at 1,500, 0.81 at 2,500 and 0.965 at 4,000. The skill appears after a plateau of ~1,000
steps. `--loss all`: 0.43 up to 1,000 steps, 0.885 at 1,500, 0.945 at 4,000. What it needs is
optimizer steps, not drills: `--loss all --batch 128 --steps 400` (51,200 drills, more than the
48,000 of the break-out above) stays at chance (0.425 at 400 steps). So base_models trains its LLM
in small batches (params base_models.llm.batch_size) on drills first (rgpt/embedded/drills.py).

    python experiments/rec_drill.py                 # the run above
    python experiments/rec_drill.py --help          # depth, proposals, queries, loss, steps, lr
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from rgpt.config import load_params
from rgpt.data.conversations import region_list
from rgpt.data.templates import REGION, load_templates
from rgpt.embedded import optim
from rgpt.embedded.llm import SLOT_NAME_TOKENS, Blocks, llm_config, slot_embeddings
from rgpt.embedded.tokenizer import EOS, train_tokenizer

ANNOTATIONS = Path("data/v3det/V3Det/annotations/v3det_2023_v1_train.json")


class Drills:
    """Drill conversations as token ids, region slots and labels on the answers' numbers."""

    def __init__(self, names: list[str], max_proposals: int, queries: int, seed: int):
        self.names, self.max_proposals, self.queries = names, max_proposals, queries
        self.prompts = load_templates().prompts
        self.rng = random.Random(seed)
        texts = [self.render(self.draw(self.rng)[1])[0] for _ in range(3000)]
        self.tokenizer = train_tokenizer(texts + [f" {n}" for n in names], 2048, 512)
        self.name_ids = torch.full((len(names), SLOT_NAME_TOKENS), -1)
        for row, name in enumerate(names):
            ids = self.tokenizer(f" {name}", add_special_tokens=False).input_ids[:SLOT_NAME_TOKENS]
            self.name_ids[row, :len(ids)] = torch.tensor(ids)
        self.row = {name: i for i, name in enumerate(names)}

    def draw(self, rng: random.Random) -> tuple[list[str], list[tuple[str, int]]]:
        """The proposals' names and the turns: (question, the asked proposal's 1-based number)."""
        n = rng.randint(2, self.max_proposals)
        chosen = rng.sample(self.names, n)
        asked = rng.sample(range(n), min(self.queries, n))
        turns = [(f"{region_list(n) + '. ' if t == 0 else ''}Which one is the {chosen[k]}? {self.prompts.rec}", k + 1)
                 for t, k in enumerate(asked)]
        return chosen, turns

    def render(self, turns: list[tuple[str, int]]) -> tuple[str, list[int]]:
        """The text and, per turn, where its answer's number stands in it."""
        text, numbers = "", []
        for question, number in turns:
            answer = self.prompts.rec_answer.format(index=number)
            text += f"USER: {question} ASSISTANT: "
            numbers.append(len(text) + answer.index(str(number)))
            text += answer + EOS
        return text, numbers

    def encode(self, chosen: list[str], turns: list[tuple[str, int]]) -> tuple[list[int], list[int], list[int]]:
        text, numbers = self.render(turns)
        encoded = self.tokenizer(text, return_offsets_mapping=True)
        ids = encoded.input_ids
        labels = [i if start in numbers else -100 for i, (start, _) in zip(ids, encoded.offset_mapping)]
        if sum(label >= 0 for label in labels) != len(numbers):
            raise ValueError(f"the answers' numbers are not tokens of their own in {text!r}")
        rows = iter(self.row[name] for name in chosen)
        region_id = self.tokenizer.convert_tokens_to_ids(REGION)
        return ids, [next(rows) if i == region_id else -1 for i in ids], labels

    def batch(self, items: list[tuple[list[int], list[int], list[int]]]) -> tuple[Blocks, torch.Tensor]:
        length = max(len(ids) for ids, _, _ in items)
        ids = torch.full((len(items), length), self.tokenizer.pad_token_id)
        slots, labels = torch.full_like(ids, -1), torch.full_like(ids, -100)
        for b, (i, s, l) in enumerate(items):
            ids[b, :len(i)], slots[b, :len(s)], labels[b, :len(l)] = torch.tensor(i), torch.tensor(s), torch.tensor(l)
        return Blocks(ids, slots, self.name_ids), labels


@torch.no_grad()
def accuracy(model, drills: Drills, questions: list[tuple[list[str], list[tuple[str, int]]]]) -> tuple[float, float]:
    """Share of first questions whose right number has the lowest loss among 1..n, and chance."""
    model.eval()
    right = chance = 0.0
    for chosen, turns in questions:
        question, number = turns[0]
        blocks, labels = drills.batch([drills.encode(chosen, [(question, k)]) for k in range(1, len(chosen) + 1)])
        logits = model(inputs_embeds=slot_embeddings(model.get_input_embeddings(), blocks)).logits[:, :-1]
        loss = F.cross_entropy(logits.transpose(1, 2), labels[:, 1:], reduction="none").sum(1)
        right += int(loss.argmin()) + 1 == number
        chance += 1 / len(chosen)
    model.train()
    return right / len(questions), chance / len(questions)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proposals", type=int, default=2, help="at most this many proposals (at least 2)")
    parser.add_argument("--queries", type=int, default=2, help="questions per drill, each about another proposal")
    parser.add_argument("--layers", type=int, default=4,
                        help="the base LLM's depth (params.yaml: 4); its width is params.yaml's base_models.llm")
    parser.add_argument("--loss", choices=("number", "all"), default="number",
                        help="train on the answers' numbers only, or on every token as base_models trains its LLM")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if not ANNOTATIONS.exists():
        sys.exit(f"{ANNOTATIONS} not found: run `python flows/download.py` first (from the repository root)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    names = sorted({c["name"] for c in json.loads(ANNOTATIONS.read_text())["categories"]})
    drills = Drills(names, args.proposals, args.queries, args.seed)
    held_rng = random.Random(args.seed + 1234)
    questions = [drills.draw(held_rng) for _ in range(200)]
    params = load_params().base_models.llm.model_copy(update={"num_layers": args.layers})  # the base LLM's width
    model = LlamaForCausalLM(llm_config(params, drills.tokenizer))
    optimizer, scheduler = optim.adamw_cosine(model, args.lr, args.steps)
    print("| step | train loss | accuracy | chance | seconds |\n|---|---|---|---|---|", flush=True)
    started, losses = time.perf_counter(), []
    model.train()
    for step in range(1, args.steps + 1):
        blocks, labels = drills.batch([drills.encode(*drills.draw(drills.rng)) for _ in range(args.batch)])
        if args.loss == "all":
            labels = blocks.ids.masked_fill(blocks.ids == drills.tokenizer.pad_token_id, -100)
        loss = model(inputs_embeds=slot_embeddings(model.get_input_embeddings(), blocks), labels=labels).loss
        optim.step(model, loss, optimizer, scheduler)
        losses.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            right, chance = accuracy(model, drills, questions)
            recent = losses[-50:]
            print(f"| {step} | {sum(recent) / len(recent):.3f} | {right:.3f} | {chance:.3f} | "
                  f"{time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
