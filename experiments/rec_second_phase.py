"""Does a second drills-alone phase, among 2..6 proposals, teach the base LLM to match every proposal?

experiments/rec_by_proposals.py found that base_models' LLM learns, from its drills among two,
whether one fixed proposal is the described one, not which one is. This replays base_models'
drills-alone phase exactly (its seed, drills, batch order, warm-up and check, stopping where the
stage stops) and then trains on drills among 2..`conversations.rec_max_proposals` alone (half
among two, as `drills.rec_drill` draws them), continuing the optimizer at the same constant rate.
Every 250 steps it prints the phase's check (100 fresh drills among two) and, among 3..6
proposals, the share right when the target comes last / before it (40 fresh drills each, text
only, slots holding their names).

Measured on 2 CPU cores with be39512's tokenizer and conversations (right, target last / before):

    step        among two   among 3      among 4      among 5      among 6
    first phase (the stage's own: at chance, one fixed answer, until 3,000 steps)
    3,250       0.65        0.00 / 0.52  0.00 / 0.34  0.00 / 0.29  0.00 / 0.27
    3,500       0.88        0.00 / 0.41  0.00 / 0.22  0.00 / 0.19  0.00 / 0.33   (the stage stops)
    then drills among 2..6 alone, lr 1e-3
    +250        0.94        0.77 / 0.44  1.00 / 0.22  0.56 / 0.16  0.80 / 0.23
    +750        0.93        0.85 / 0.59  0.75 / 0.50  0.89 / 0.26  0.90 / 0.13
    +1,250      0.94        1.00 / 0.30  1.00 / 0.25  1.00 / 0.23  0.90 / 0.30

At its break-out the LLM never answers the last proposal among three or more: among two it checks
the first one. Drills among more then teach it within 250 steps to check the last one instead,
and in 1,250 steps not to match the others (before the last: chance is 1/(n-1) for a guess among
them). A second phase of the same drills is not the fix (nor, measured before, more drills among 3..6 for
the finished base LLM).

    python experiments/rec_second_phase.py --steps 1250 [--state phase_a.pt] [--lr 1e-3]

--state keeps the model and optimizer at the end of the first phase (~55 minutes on 2 CPU cores:
this stage's run breaks out at 3,500 steps), so that second phases can be compared from it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM, get_constant_schedule_with_warmup

from rgpt.config import load_params
from rgpt.data.conversations import read_conversations
from rgpt.data.templates import load_templates
from rgpt.embedded import drills, optim
from rgpt.embedded.base_llm import CONVERSATION_FILES, HELDOUT_FRACTION, heldout_images
from rgpt.embedded.llm import llm_config, lm_loss, pack
from rgpt.embedded.rec import rec_accuracy, rec_choices

CHECK_EVERY = 250
QUESTIONS_PER_COUNT = 40
# the drills-alone phase as base_models ran it before the REC lists (be39512's params)
FIRST_DRILLS, FIRST_TARGET, FIRST_CHECK_QUESTIONS = 64_000, 0.75, 100
SECOND_DRILLS = 48_000  # drill conversations among 2..6 for the second phase: ~3,000 steps' worth


def by_target_position(llm, tokenizer, questions: dict[int, list], templates) -> dict[int, tuple[float, float]]:
    """For each proposal count n: the share right when the target is the last proposal, and before it."""
    shares = {}
    for n, drawn in questions.items():
        chosen = rec_choices(llm, tokenizer, drawn, templates)
        targets = [drills.answer_target(q["conversations"][1]["value"]) for q in drawn]
        last = [k == t for k, t in zip(chosen, targets) if t == n]
        before = [k == t for k, t in zip(chosen, targets) if t < n]
        shares[n] = (round(sum(last) / max(1, len(last)), 2), round(sum(before) / max(1, len(before)), 2))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1250, help="second-phase steps (at most ~3,000)")
    parser.add_argument("--lr", type=float, default=None, help="second-phase rate (default: the first's)")
    parser.add_argument("--state", type=Path, default=None, help="the first phase's end: loaded if it exists, "
                                                                  "else written")
    args = parser.parse_args()
    params, templates = load_params(), load_templates()
    llm_params, seed, most = params.base_models.llm, params.base_models.seed, params.conversations.rec_max_proposals
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained("base_models/llm")
    samples = [s for name in CONVERSATION_FILES for s in read_conversations(Path("outputs/conversations") / name)]
    held = heldout_images(samples, HELDOUT_FRACTION, seed)
    names = drills.category_names([s for s in samples if s["image"] not in held])
    # the first drills-alone phase's drills and check, as rgpt.embedded.base_llm draws them
    first = pack(drills.rec_drills(names, FIRST_DRILLS, llm_params.rec_drill_turns, 2,
                                        templates, seed + 1), tokenizer, llm_params.max_length)
    among_two = drills.rec_questions(drills.rec_drills(names, FIRST_CHECK_QUESTIONS, 1, 2, templates,
                                                       seed + 3), templates)
    second = pack(drills.rec_drills(names, SECOND_DRILLS, llm_params.rec_drill_turns, most, templates,
                                         seed + 6), tokenizer, llm_params.max_length)
    questions = {}
    for n in range(3, most + 1):
        drawn = drills.rec_questions(drills.rec_drills(names, 600, 1, n, templates, seed + 5), templates)
        questions[n] = [q for q in drawn if q["proposals"] == n][:QUESTIONS_PER_COUNT]

    optim.seed_everything(seed)
    llm = LlamaForCausalLM(llm_config(llm_params, tokenizer))
    optimizer = optim.adamw(llm, llm_params.learning_rate)
    scheduler = get_constant_schedule_with_warmup(optimizer, llm_params.rec_first_warmup)
    started = time.time()

    def report(step: int, loss: float) -> float:
        llm.eval()
        two = rec_accuracy(llm, tokenizer, among_two, templates)
        print(step, f"loss {loss:.3f}", f"{time.time() - started:.0f} s", f"among two {two:.2f}",
              "last/before:", by_target_position(llm, tokenizer, questions, templates), flush=True)
        llm.train()
        return two

    if args.state and args.state.exists():
        state = torch.load(args.state)
        llm.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        print("first phase loaded: ended at step", state["step"], flush=True)
    else:
        llm.train()
        batches = torch.randperm(len(first), generator=torch.Generator().manual_seed(seed))
        for step, batch in enumerate(batches.split(llm_params.batch_size), 1):
            loss = lm_loss(llm, first[batch])
            optim.step(llm, loss, optimizer, scheduler)
            if step % CHECK_EVERY == 0 and report(step, loss.item()) >= FIRST_TARGET:
                break
        if args.state:
            torch.save({"model": llm.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "step": step}, args.state)
    if args.lr:
        for group in optimizer.param_groups:  # a new scheduler's base rate is the group's initial_lr
            group["lr"] = group["initial_lr"] = args.lr
        scheduler = get_constant_schedule_with_warmup(optimizer, 0)
    print("second phase", flush=True)
    llm.train()
    started = time.time()
    batches = torch.randperm(len(second), generator=torch.Generator().manual_seed(seed + 6))
    for step, batch in enumerate(batches.split(llm_params.batch_size)[:args.steps], 1):
        loss = lm_loss(llm, second[batch])
        optim.step(llm, loss, optimizer, scheduler)
        if step % CHECK_EVERY == 0:
            report(step, loss.item())


if __name__ == "__main__":
    main()
