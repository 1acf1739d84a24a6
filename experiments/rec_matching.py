"""Can the base LLM's architecture learn to match a description against every proposal, from scratch?

experiments/rec_by_proposals.py and rec_second_phase.py found that base_models' LLM learns a
positional check (is the first / last proposal the described one?), never the match itself. Three
formats of drills, tested here alone, each conversation in a row of its own (padded, so that
attention never reaches another conversation's slots, as it does in base_models' packed blocks
of 512 tokens, where a description can name a slot of an earlier drill):

- template: drills as base_models draws them (`drills.rec_drill`, one question each, among 2..6);
- followups: the same, then every proposal asked for once more in turn ("And the {name}?" ->
  "Region [k]."), so that no position's check pays and each conversation carries n + 1 answers;
- minimal: no template at all, "<s> Region [1] <region> ... Region [n] <region>. the {name}:
  Region [k]. the {name}: Region [j]. ..." with every proposal asked for once, in random order
  (`drills.RecList`, which base_models now trains on first).

Slots hold their names (`slot_embeddings`), the model is `llm_config`'s, AdamW as
base_models trains it at a constant rate after a 400-step warm-up, loss on every token. Every
`--every` steps: the first question's REC by forced choice among the proposals' numbers on 200
fresh rows, by proposal count, split by whether the target is the last proposal or before it.

Measured on 2 CPU cores (be39512's tokenizer and names; first question right, target last / before it):

    steps   trained on   minimal lists, among 2 / 3 / 4 / 5 / 6     paper's templates, among 2 / 3 / 4 / 5 / 6
    1,000   minimal      .53/.84 .00/.55 .75/.06 .00/.25 .00/.20    .08/.96 .00/.40 .00/.35 .00/.27 .00/.19
    1,250   minimal      .98/.94 1.0/.79 1.0/.89 .86/.80 .00/.74    .69/.34 .40/.55 .11/.38 .00/.26 .00/.29
    +250    template     1.0/.85 .09/.80 .83/.72 .00/.72 .00/.61    1.0/1.0 .83/.88 1.0/.91 .71/.65 .00/.81
    +500    template     .91/.89 1.0/.78 1.0/.88 .75/.86 .00/.65    .96/.90 1.0/.89 1.0/.88 1.0/.82 .75/.75

The minimal lists break out to the match itself (right wherever the target stands) by 1,250
steps, and 250-500 steps of drills in the paper's templates carry it there. Drills in the templates
alone (a first version of this script: 1,750 steps) and with follow-ups (1,500 steps) stayed at
one fixed answer per proposal count: unpacking the drills and taking away a positional check's
pay are not enough; the dense, template-free lists are what teaches the match.

    python experiments/rec_matching.py --format minimal --batch 64 --steps 1250 --then template --then-steps 500
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM, get_constant_schedule_with_warmup

from rgpt.config import load_params
from rgpt.data.conversations import read_conversations
from rgpt.data.templates import REGION, load_templates
from rgpt.embedded import drills, optim
from rgpt.embedded.base_llm import CONVERSATION_FILES
from rgpt.embedded.llm import Blocks, conversation_ids, llm_config, lm_loss, rows, slot_embeddings

FORMATS = ("template", "followups", "minimal")
FRESH_ROWS = 200
WARMUP = 400


class Rows:
    """Draws drill rows of one format: token ids, the name row each slot holds, and where the first
    question's answer number stands."""

    def __init__(self, fmt: str, tokenizer, names: list[str], templates, max_proposals: int, seed: int):
        self.fmt, self.tokenizer, self.names, self.templates = fmt, tokenizer, names, templates
        self.max_proposals, self.rng = max_proposals, random.Random(seed)
        self.region_id = tokenizer.convert_tokens_to_ids(REGION)
        self.digits = [self._ids(f" Region [{k}]")[-2] for k in range(1, max_proposals + 1)]
        self.bracket = self._ids(" [")[-1]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _conversation(self) -> tuple[list[int], list[str], int]:
        """A drill conversation's ids, its proposals' names, its first question's 1-based target."""
        drill = drills.rec_drill(0, self.names, 1, self.max_proposals, self.templates, self.rng)
        chosen = [region["name"] for region in drill["regions"]]
        if self.fmt == "followups":
            order = self.rng.sample(range(len(chosen)), len(chosen))
            for k in order:
                drill["conversations"] += [
                    {"from": "human", "value": f"And the {chosen[k]}?"},
                    {"from": "gpt", "value": self.templates.prompts.rec_answer.format(index=k + 1)}]
                drill["tasks"].append("rec")
        return conversation_ids([drill], self.tokenizer)[0], chosen, drills.answer_target(drill["conversations"][1]["value"])

    def _minimal(self) -> tuple[list[int], list[str], int]:
        rec_list = drills.rec_list(self.names, self.max_proposals, self.rng)
        return [self.tokenizer.bos_token_id, *self._ids(rec_list.text())], list(rec_list.names), rec_list.target

    def draw(self, count: int) -> tuple[Blocks, list[tuple[int, int, int]]]:
        """`count` fresh rows (`rows`) and per row (answer position, n, target)."""
        drawn = [self._minimal() if self.fmt == "minimal" else self._conversation() for _ in range(count)]
        firsts = []
        for row, chosen, answer_k in drawn:
            last_slot = max(p for p, t in enumerate(row) if t == self.region_id)
            # the first number after the last slot that follows " [": the first question's answer
            answer = next(p for p in range(last_slot, len(row)) if row[p] in self.digits and row[p - 1] == self.bracket)
            firsts.append((answer, len(chosen), answer_k))
        return rows([(row, chosen) for row, chosen, _ in drawn], self.tokenizer), firsts


@torch.no_grad()
def first_question_rec(llm, fresh: Rows) -> dict[int, tuple[float, float]]:
    """Per proposal count: the share of fresh first questions right, target last / before it."""
    blocks, firsts = fresh.draw(FRESH_ROWS)
    logits = llm(inputs_embeds=slot_embeddings(llm.get_input_embeddings(), blocks),
                 attention_mask=blocks.mask).logits
    right: dict[int, tuple[list[bool], list[bool]]] = {}
    for i, (answer, n, answer_k) in enumerate(firsts):
        chosen = int(logits[i, answer - 1, fresh.digits[:n]].argmax()) + 1
        right.setdefault(n, ([], []))[0 if answer_k == n else 1].append(chosen == answer_k)
    return {n: tuple(round(sum(v) / max(1, len(v)), 2) for v in right[n]) for n in sorted(right)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", choices=FORMATS, default="template")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32, help="rows per step")
    parser.add_argument("--every", type=int, default=250, help="steps between checks")
    parser.add_argument("--then", choices=FORMATS, default=None, help="a second phase's format")
    parser.add_argument("--then-steps", type=int, default=500)
    args = parser.parse_args()
    params, templates = load_params(), load_templates()
    llm_params, seed = params.base_models.llm, params.base_models.seed
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained("base_models/llm")
    samples = [s for name in CONVERSATION_FILES for s in read_conversations(Path("outputs/conversations") / name)]
    names = drills.category_names(samples)
    most = params.conversations.rec_max_proposals
    optim.seed_everything(seed)
    llm = LlamaForCausalLM(llm_config(llm_params, tokenizer))
    optimizer = optim.adamw(llm, llm_params.learning_rate)
    scheduler = get_constant_schedule_with_warmup(optimizer, WARMUP)
    phases = [(args.format, args.steps)] + ([(args.then, args.then_steps)] if args.then else [])
    checked = {fmt: Rows(fmt, tokenizer, names, templates, most, seed + 2) for fmt, _ in phases}
    started, step = time.time(), 0
    llm.train()
    for fmt, steps in phases:
        train = Rows(fmt, tokenizer, names, templates, most, seed + 1)
        print(f"{fmt}: {steps} steps", flush=True)
        for _ in range(steps):
            step += 1
            loss = lm_loss(llm, train.draw(args.batch)[0])
            optim.step(llm, loss, optimizer, scheduler)
            if step % args.every == 0:
                llm.eval()
                print(step, f"loss {loss.item():.3f}", f"{time.time() - started:.0f} s", "last / before:",
                      *(f"{name} {first_question_rec(llm, rows)}" for name, rows in checked.items()), flush=True)
                llm.train()


if __name__ == "__main__":
    main()
