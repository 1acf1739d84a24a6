"""When does the base LLM's REC skill appear? base_models' LLM training, many seeds and recipes.

The base LLM learns REC (pick the numbered proposal a description names) from drills among two
proposals, after a plateau at chance (rgpt/embedded/drills.py; docs/findings.md). This replays
base_models' LLM training on the stage's own data for one seed and recipe, scoring fresh drills
every 250 steps, so that many runs can be compared. It has two halves:

    pack   here, with rgpt installed: the stage's own tokenizer, drills and conversations, packed
           as `pack` packs them (each `<image>` as one token, or as RGPT's image tokens), into
           one compressed file (~4 MB)
    train  anywhere with torch and transformers alone (a lent GPU runs 14 at once in ~8 minutes;
           2 CPU cores, ~1 s a step): the recipe of `train_llm` — AdamW with weight decay on
           matrices, gradient clipping, each `<region>` slot holding its name's mean embedding —
           written out again so that it needs no rgpt, with the knobs below

Measured on a lent H200 (TF32 matrix products) with this recipe in an earlier copy of this
script, 14 runs at a time, batches of 8 blocks; the
check is 50 fresh drills among 2..6 (chance 0.38; a model at chance gives the same answer to
all, 0.26 or 0.46); "the skill" = the check at >= 0.55 and staying there:

    recipe (drills-alone phase)                          runs   skill by 3,250 steps, at step
    one cosine over both phases, warm-up 229 (the old)      4   1: 750 (seed 1)
    constant rate, warm-up 139-257                          8   2: 1,250 (first drills after the
                                                                image tokens); 2,750 (half-way)
    constant rate, warm-up 300-400                          5   4: 1,250, 1,500, 1,750, 3,250;
                                                                a fifth half-way (0.54-0.58)
    the same, batches of 4 / 2 blocks (warm-up 400)       3 / 5  2 / 1 (2,500-2,750; 3,500)
    lr 2e-3; weight decay 0 (warm-up 139)                 1 / 1  0 / 0

Two runs whose first phase had not broken out did in the second phase with the image tokens
(after ~700-1,000 of its steps), none without them. After the second phase, a run with the
skill but trained with one `<image>` token answered 0.76 of fresh drills on text and 0.38 after
RGPT's 64 image tokens (held-out RefCOCOg 0.37 / 0.23); one trained with the image tokens 0.76 /
0.74. So base_models trains with the image tokens, its first phase at a constant rate after a
warm-up of 400 steps (`base_models.llm.rec_first_warmup`) until fresh drills among two are
answered right (`rec_first_target`, a parameter of that recipe).

    python experiments/llm_breakout.py pack --out breakout.pkl.xz
    python experiments/llm_breakout.py train --data breakout.pkl.xz --seed 3 --warmup 400 --second image
    python experiments/llm_breakout.py train --help
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import pickle
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

FIRST_DRILLS = 64_000  # the drills-alone phase's cap before the REC lists (be39512's rec_drills_first)
NAME_TOKENS = 8  # SLOT_NAME_TOKENS, repeated: `train` runs without rgpt
WEIGHT_DECAY, GRAD_CLIP, WARMUP_RATIO = 0.1, 1.0, 0.05  # base.py's, likewise


# ------------------------------------------------------------------------------------- pack (rgpt)


def pack(out: Path) -> None:
    from rgpt.base_models.llm import num_image_tokens
    from rgpt.config import load_params
    from rgpt.data.conversations import read_conversations
    from rgpt.data.templates import load_templates
    from rgpt.embedded import drills
    from rgpt.embedded.base_llm import CONVERSATION_FILES, HELDOUT_FRACTION, REC_HELDOUT_DRILLS, heldout_images
    from rgpt.embedded.llm import conversation_ids, llm_config, pack, with_image
    from rgpt.embedded.tokenizer import corpus_texts, train_tokenizer

    params, templates = load_params(), load_templates()
    bm, llm = params.base_models, params.base_models.llm
    samples = [s for name in CONVERSATION_FILES for s in read_conversations(Path("outputs/conversations") / name)]
    tokenizer = train_tokenizer(corpus_texts(samples, templates), bm.tokenizer.vocab_size, llm.max_length)
    held = heldout_images(samples, HELDOUT_FRACTION, bm.seed)
    train, heldout = [s for s in samples if s["image"] not in held], [s for s in samples if s["image"] in held]
    names, k = drills.category_names(train), num_image_tokens(params)
    proposals = params.conversations.rec_max_proposals
    # the same drills as base_models (`rgpt.embedded.base_llm`), the first ones up to the cap
    first = drills.rec_drills(names, FIRST_DRILLS, llm.rec_drill_turns, 2, templates, bm.seed + 1)
    mixed = drills.rec_drills(names, llm.rec_drills, llm.rec_drill_turns, proposals, templates, bm.seed)
    fresh = drills.rec_questions(drills.rec_drills(names, REC_HELDOUT_DRILLS, 1, proposals, templates,
                                                   bm.seed + 2), templates)

    def blocks(samples, image_tokens=1):
        b = pack(samples, tokenizer, llm.max_length, image_tokens)
        return {"ids": b.ids.numpy().astype(np.int16), "slots": b.slots.numpy().astype(np.int16),
                "names": b.names.numpy().astype(np.int16)}

    def candidates(questions, image_tokens):
        """Per question: every answer's whole conversation (ids, each slot's name ids), the right one."""
        rows = []
        for q in questions:
            q = with_image(q) if image_tokens > 1 else q
            answers = [templates.prompts.rec_answer.format(index=i) for i in range(1, q["proposals"] + 1)]
            seqs = []
            for answer in answers:
                sample = {**q, "conversations": [q["conversations"][0], {"from": "gpt", "value": answer}]}
                length = len(conversation_ids([sample], tokenizer, image_tokens)[0])
                b = pack([sample], tokenizer, length, image_tokens)
                slot_names = np.full((length, NAME_TOKENS), -1, np.int16)
                slots = b.slots[0].numpy()
                slot_names[slots >= 0] = b.names.numpy()[slots[slots >= 0]]
                seqs.append((b.ids[0].numpy().astype(np.int16), slot_names))
            rows.append((seqs, answers.index(q["conversations"][1]["value"])))
        return rows

    data = {"config": llm_config(llm, tokenizer).to_dict(), "image_tokens": k,
            "first": blocks(first), "second_text": blocks(train + mixed),
            "second_image": blocks(train + [with_image(d) for d in mixed], k),
            "heldout_text": blocks(heldout), "heldout_image": blocks(heldout, k),
            "fresh_text": candidates(fresh, 1), "fresh_image": candidates(fresh, k),
            "refcocog_text": candidates(drills.rec_questions(heldout, templates), 1),
            "refcocog_image": candidates(drills.rec_questions(heldout, templates), k)}
    with lzma.open(out, "wb") as f:
        pickle.dump(data, f)
    print(f"{out}: {len(data['first']['ids'])} first blocks, {len(data['second_image']['ids'])} second")


# ---------------------------------------------------------------------------- train (torch alone)


class Run:
    def __init__(self, data: dict, args: argparse.Namespace, device: str):
        self.data, self.args, self.device = data, args, device
        torch.manual_seed(args.seed)
        known = LlamaConfig().to_dict()
        config = LlamaConfig(**{k: v for k, v in data["config"].items() if k in known or k == "vocab_size"})
        self.model = LlamaForCausalLM(config).to(device)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        rest = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                            {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
        self.step, self.curve, self.started = 0, [], time.time()

    def tensors(self, blocks: dict) -> dict:
        return {k: torch.from_numpy(v.astype(np.int64)).to(self.device) for k, v in blocks.items()}

    def embeds(self, ids: torch.Tensor, slot_names: torch.Tensor) -> torch.Tensor:
        """`slot_embeddings`: each slot the mean input embedding of its name's tokens."""
        embed = self.model.get_input_embeddings()
        x, filled = embed(ids), slot_names[..., 0] >= 0
        if filled.any():
            rows = slot_names[filled]
            real = (rows >= 0).unsqueeze(-1)
            x = x.index_put(tuple(filled.nonzero().T), (embed(rows.clamp(min=0)) * real).sum(1) / real.sum(1))
        return x

    def loss(self, blocks: dict, batch: torch.Tensor) -> torch.Tensor:
        ids, slots = blocks["ids"][batch], blocks["slots"][batch]
        slot_names = torch.where((slots >= 0).unsqueeze(-1), blocks["names"][slots.clamp(min=0)], -1)
        return self.model(inputs_embeds=self.embeds(ids, slot_names), labels=ids).loss

    @torch.no_grad()
    def rec(self, rows: list, limit: int | None = None) -> float:
        """`rec_accuracy`: the right answer's whole conversation has the lowest summed loss."""
        self.model.eval()
        right = 0
        for seqs, target in rows[:limit]:
            length = max(len(ids) for ids, _ in seqs)
            ids = torch.zeros(len(seqs), length, dtype=torch.long)
            names = torch.full((len(seqs), length, NAME_TOKENS), -1, dtype=torch.long)
            for i, (s, n) in enumerate(seqs):
                ids[i, :len(s)], names[i, :len(s)] = torch.from_numpy(s.astype(np.int64)), torch.from_numpy(
                    n.astype(np.int64))
            ids, names = ids.to(self.device), names.to(self.device)
            logits = self.model(inputs_embeds=self.embeds(ids, names)).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            real = torch.tensor([[t < len(s) for t in range(1, length)] for s, _ in seqs], device=self.device)
            right += int((nll * real).sum(1).argmin().item() == target)
        self.model.train()
        return right / len(rows[:limit])

    def check(self, phase: str) -> float:
        row = {"step": self.step, "phase": phase, "fresh_text": self.rec(self.data["fresh_text"], 50)}
        if phase == "second":
            row["fresh_image"] = self.rec(self.data["fresh_image"], 50)
        self.curve.append(row)
        print(self.args.name, json.dumps(row), f"{time.time() - self.started:.0f}s", flush=True)
        return row["fresh_text"]

    def train(self, blocks: dict, batches: list, rate, phase: str, target: float = 0.0) -> None:
        for batch in batches:
            for group in self.optimizer.param_groups:
                group["lr"] = rate(self.step)
            self.loss(blocks, batch.to(self.device)).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            if self.step % self.args.every == 0 and self.check(phase) >= target > 0:
                return


def cosine(peak: float, start: int, steps: int, warmup: int):
    """transformers' get_cosine_schedule_with_warmup over steps start..start+steps."""
    def rate(step: int) -> float:
        t = step - start
        if t < warmup:
            return peak * t / warmup
        return peak * 0.5 * (1 + math.cos(math.pi * (t - warmup) / max(1, steps - warmup)))
    return rate


def train(args: argparse.Namespace) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    data = pickle.load(lzma.open(args.data))
    run = Run(data, args, device)
    first, second = run.tensors(data["first"]), run.tensors(data[f"second_{args.second}"])
    order = torch.Generator().manual_seed(args.seed)
    first_batches = torch.randperm(len(first["ids"]), generator=order).split(args.batch)[:args.first_steps or None]
    second_batches = [b for _ in range(args.epochs)
                      for b in torch.randperm(len(second["ids"]), generator=order).split(args.batch)]
    second_batches = second_batches[:args.second_steps or None]
    if args.schedule == "one-cosine":  # the old recipe: one warm-up and cosine over both phases
        total = len(first_batches) + len(second_batches)
        rate = cosine(args.lr, 0, total, math.ceil(WARMUP_RATIO * total))
        run.train(first, first_batches, rate, "first")
        run.train(second, second_batches, rate, "second")
    else:  # base_models': a constant rate after a warm-up until the target, then a cosine of its own
        warmup = args.warmup or math.ceil(WARMUP_RATIO * len(first_batches))
        run.train(first, first_batches, lambda step: args.lr * min(1.0, step / warmup), "first", args.target)
        run.train(second, second_batches,
                  cosine(args.lr, run.step, len(second_batches), math.ceil(WARMUP_RATIO * len(second_batches))),
                  "second")
    final = {"name": args.name, "steps": run.step, "seconds": round(time.time() - run.started)}
    final |= {key: run.rec(data[key]) for key in ("fresh_text", "fresh_image", "refcocog_text", "refcocog_image")}
    print("FINAL", json.dumps(final), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.name}.json").write_text(json.dumps({"args": vars(args), "curve": run.curve,
                                                                  "final": final}, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack", help="pack the stage's data (needs rgpt and outputs/conversations)")
    p.add_argument("--out", type=Path, default=Path("breakout.pkl.xz"))
    t = commands.add_parser("train", help="one run (needs torch and transformers)")
    t.add_argument("--data", type=Path, default=Path("breakout.pkl.xz"))
    t.add_argument("--name", default="run")
    t.add_argument("--out", default="breakout")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--schedule", choices=("split", "one-cosine"), default="split")
    t.add_argument("--warmup", type=int, default=400, help="warm-up steps of the first phase (split; 0: 5 %%)")
    t.add_argument("--target", type=float, default=0.0,
                   help="end the first phase once the check (fresh drills among 2..6) reaches it (0: never)")
    t.add_argument("--first-steps", type=int, default=0, help="at most this many first-phase steps (0: all)")
    t.add_argument("--second-steps", type=int, default=0, help="at most this many second-phase steps (0: all)")
    t.add_argument("--second", choices=("text", "image"), default="image",
                   help="the second phase's `<image>`: one token, or RGPT's image tokens")
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY)
    t.add_argument("--every", type=int, default=250)
    args = parser.parse_args()
    pack(args.out) if args.command == "pack" else train(args)


if __name__ == "__main__":
    main()
