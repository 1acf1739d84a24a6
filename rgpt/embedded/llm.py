"""The embedded profile's small Llama, trained from scratch: its text, its region slots, its training.

The LLM learns next-token prediction on the conversations rendered in RGPT's chat template, each
`<image>` as RGPT's image tokens and each `<region>` slot holding the mean input embedding of
its region's name (`slot_embeddings`), so that it learns to read what a slot holds, as RGPT will
need it to. `pack` cuts the conversations into blocks, `rows` lays drills out a row each, and
`train_llm` trains on drill phases alone first, then on the blocks.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
)

from ..config import LlmParams
from ..data.templates import IMAGE, REGION
from .optim import WARMUP_RATIO, adamw, seed_everything, step
from .tokenizer import render_conversation

log = logging.getLogger(__name__)


def llm_config(params: LlmParams, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    heads = params.num_heads  # head size hidden_size / heads: 64 is what vLLM's CPU kernels accept
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=params.hidden_size,
                       intermediate_size=params.intermediate_size, num_hidden_layers=params.num_layers,
                       num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=params.max_length, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       tie_word_embeddings=False)


SLOT_NAME_TOKENS = 8  # a region slot holds the mean embedding of at most this many of its name's tokens


@dataclass
class Blocks:
    """Training text, packed (`pack`) or a sequence a row (`rows`), and what its region slots hold.

    ids: (N, length) token ids. slots: (N, length), for each `<region>` token the row of `names`
    holding its region's name, -1 elsewhere (and for a region without a name). names: (M,
    SLOT_NAME_TOKENS) token ids of each distinct name, -1 padded. mask: (N, length), 0 on padding;
    None for packed blocks, which have none.
    """

    ids: torch.Tensor
    slots: torch.Tensor
    names: torch.Tensor
    mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index) -> Blocks:
        return Blocks(self.ids[index], self.slots[index], self.names, None if self.mask is None else self.mask[index])

    def split(self, size: int) -> list[Blocks]:
        return [self[i:i + size] for i in range(0, len(self), size)]


def pack(samples: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, length: int,
         num_image_tokens: int = 1) -> Blocks:
    """The conversations' tokens (each starting with <s>) end to end, cut into blocks of `length`;
    the last, incomplete block is dropped (nanoGPT's packing: no padding, no wasted compute). The
    k-th `<region>` token of a conversation is slot `regions[k]["name"]` (`Blocks`).

    num_image_tokens: how many `<image>` ids each `<image>` becomes, as RGPTProcessor expands it for
    RGPT's image tokens. Why: an LLM that has only seen one `<image>` token loses its REC behind
    64 of them (docs/findings.md, "REC after the image tokens"); trained with as many
    as RGPT puts there, it learns to read the question past them.
    """
    table: dict[str, int] = {}
    stream: list[int] = []
    slots: list[int] = []
    for sample, ids in zip(samples, conversation_ids(samples, tokenizer, num_image_tokens)):
        names = [region.get("name") for region in sample["regions"]]
        stream += ids
        slots += _slots(ids, names, table, tokenizer, sample.get("id"))
    blocks = len(stream) // length
    if blocks == 0:
        raise ValueError(f"{len(samples)} conversations make {len(stream)} tokens, fewer than one block of {length}")
    cut = blocks * length
    return Blocks(torch.tensor(stream[:cut]).view(blocks, length), torch.tensor(slots[:cut]).view(blocks, length),
                  name_ids(table, tokenizer))


def rows(sequences: Sequence[tuple[list[int], Sequence[str | None]]], tokenizer: PreTrainedTokenizerBase) -> Blocks:
    """Token id sequences (each with its regions' names, one per `<region>` token), a row each,
    right-padded to the longest with a mask: no sequence's attention reaches another's slots."""
    table: dict[str, int] = {}
    length = max(len(ids) for ids, _ in sequences)
    ids = torch.full((len(sequences), length), tokenizer.pad_token_id)
    slots = torch.full((len(sequences), length), -1)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, (sequence, names) in enumerate(sequences):
        ids[row, :len(sequence)] = torch.tensor(sequence)
        slots[row, :len(sequence)] = torch.tensor(_slots(sequence, names, table, tokenizer, f"row {row}"))
        mask[row, :len(sequence)] = 1
    return Blocks(ids, slots, name_ids(table, tokenizer), mask)


def _slots(ids: Sequence[int], names: Sequence[str | None], table: dict[str, int],
           tokenizer: PreTrainedTokenizerBase, where: Any) -> list[int]:
    """For each id, the row in `table` of the name its `<region>` slot holds (added if new), -1
    elsewhere and for a slot without a name."""
    region_id = tokenizer.convert_tokens_to_ids(REGION)
    if list(ids).count(region_id) != len(names):
        raise ValueError(f"conversation {where}: {list(ids).count(region_id)} {REGION} tokens for "
                         f"{len(names)} regions")
    named = iter(table.setdefault(name, len(table)) if name else -1 for name in names)
    return [next(named) if i == region_id else -1 for i in ids]


def name_ids(table: dict[str, int], tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """(rows, SLOT_NAME_TOKENS): the token ids of each name in its `table` row, -1 padded (one row
    of -1 for an empty table)."""
    names = torch.full((max(1, len(table)), SLOT_NAME_TOKENS), -1)
    for name, row in table.items():
        ids = tokenizer(f" {name}", add_special_tokens=False).input_ids[:SLOT_NAME_TOKENS]
        names[row, :len(ids)] = torch.tensor(ids)
    return names


def conversation_ids(samples: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase,
                     num_image_tokens: int = 1) -> list[list[int]]:
    """Each conversation's token ids (starting with <s>), each `<image>` id repeated `num_image_tokens` times."""
    image_id = tokenizer.convert_tokens_to_ids(IMAGE)
    return [[j for i in ids for j in ([i] * num_image_tokens if i == image_id else [i])]
            for ids in tokenizer([render_conversation(s) for s in samples]).input_ids]


def with_image(sample: dict[str, Any]) -> dict[str, Any]:
    """`sample` with `<image>` in front of its first question, where the conversations put it,
    unless it has one: a text-only drill or question as RGPT asks it, after the image's tokens."""
    first, *rest = sample["conversations"]
    if IMAGE in first["value"]:
        return sample
    return {**sample, "conversations": [{**first, "value": f"{IMAGE}\n{first['value']}"}, *rest]}


def slot_embeddings(embed: torch.nn.Embedding, blocks: Blocks, *, fill: bool = True) -> torch.Tensor:
    """The LLM's input embeddings for `blocks`, each named region slot holding the mean input
    embedding of its name's tokens (fill=False: the bare `<region>` token's, as in plain text).

    Why: RGPT puts a projected region feature where `<region>` stands and needs an LLM that reads
    what a slot holds, as Vicuna reads LLaVA's projections for the words they resemble. An LM
    trained on text alone has only ever seen the one `<region>` embedding there, so it learns to
    ignore the slot; one trained to name what a slot holds gives stage 1's frozen LLM something to
    decode. The names appear only here: RGPT never sees them.
    """
    inputs = embed(blocks.ids)
    filled = blocks.slots >= 0
    if not fill or not filled.any():
        return inputs
    rows = blocks.names[blocks.slots[filled]]
    real = (rows >= 0).unsqueeze(-1)
    means = (embed(rows.clamp(min=0)) * real).sum(1) / real.sum(1)
    return inputs.index_put(tuple(filled.nonzero().T), means)


def lm_loss(model: LlamaForCausalLM, blocks: Blocks, *, fill: bool = True) -> torch.Tensor:
    """The mean next-token loss on `blocks` (padding left out), the region slots filled with their
    names (`slot_embeddings`)."""
    labels = blocks.ids if blocks.mask is None else blocks.ids.masked_fill(blocks.mask == 0, -100)
    return model(inputs_embeds=slot_embeddings(model.get_input_embeddings(), blocks, fill=fill),
                 attention_mask=blocks.mask, labels=labels).loss


@torch.no_grad()
def perplexity(model: LlamaForCausalLM, blocks: Blocks, batch_size: int = 16, *, fill: bool = True) -> float:
    """exp of the mean next-token loss over packed blocks of equal length."""
    losses = [lm_loss(model, batch, fill=fill).item() * len(batch) for batch in blocks.split(batch_size)]
    return math.exp(sum(losses) / len(blocks))


@dataclass
class DrillPhase:
    """Drills trained on alone before the conversations (`train_llm`): `draw(count)` gives `count`
    fresh rows (`rows`), for at most `steps` steps, or until `check(model)`, taken every
    `check_every` steps of the phase, reaches `target`."""

    name: str
    draw: Callable[[int], Blocks]
    steps: int
    check: Callable[[LlamaForCausalLM], float] | None = None
    target: float = 1.0


def train_llm(blocks: Blocks, tokenizer: PreTrainedTokenizerBase, params: LlmParams, seed: int, *,
              phases: Sequence[DrillPhase] = (), check: Callable[[LlamaForCausalLM], float] | None = None,
              check_every: int = 250, progress: bool = True) -> tuple[LlamaForCausalLM, dict[str, Any]]:
    """A Llama trained from scratch for next-token prediction: drill phases alone first, then
    epochs over packed blocks (`pack`).

    phases: trained on in turn, `params.rec_first_batch_size` fresh rows a step, at one constant
    learning rate after a warm-up of `params.rec_first_warmup` steps; figures `{name}_steps` and,
    for a checked phase, `{name}_curve` ([step, figure] pairs), `{name}_target`,
    `{name}_reached_target`. Why a constant rate: the skill the drills teach appears after a
    plateau whose length varies from run to run; under a decaying schedule its length moved the
    rates, and with them whether the skill appeared at all (docs/findings.md). The epochs over `blocks`
    then get a warm-up and a cosine schedule of their own. check: a figure of the model taken every
    `check_every` steps and at the end (`check_curve`).
    """
    seed_everything(seed)
    model = LlamaForCausalLM(llm_config(params, tokenizer))
    order = torch.Generator().manual_seed(seed)
    batches = [batch for _ in range(params.epochs)
               for batch in torch.randperm(len(blocks), generator=order).split(params.batch_size)]
    optimizer = adamw(model, params.learning_rate)
    losses, curve = [], []
    figures: dict[str, Any] = {}
    model.train()
    bar = tqdm(total=sum(phase.steps for phase in phases) + len(batches), desc="llm", disable=not progress)

    def checked(name: str, figure: Callable[[LlamaForCausalLM], float], into: list) -> float:
        model.eval()
        into.append([len(losses), figure(model)])
        model.train()
        log.info("llm step %d: %s %.3f", len(losses), name, into[-1][1])
        return into[-1][1]

    def train(batch: Blocks, scheduler) -> None:
        loss = lm_loss(model, batch)
        step(model, loss, optimizer, scheduler)
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if check and len(losses) % check_every == 0:
            checked("REC check", check, curve)

    scheduler = get_constant_schedule_with_warmup(optimizer, params.rec_first_warmup)
    for phase in phases:
        start, phase_curve = len(losses), []
        bar.set_description(f"llm: {phase.name}")
        while len(losses) - start < phase.steps:
            train(phase.draw(params.rec_first_batch_size), scheduler)
            if (phase.check and (len(losses) - start) % check_every == 0
                    and checked(f"{phase.name} check", phase.check, phase_curve) >= phase.target):
                break
        figures[f"{phase.name}_steps"] = len(losses) - start
        if phase.check:
            figures |= {f"{phase.name}_curve": phase_curve, f"{phase.name}_target": phase.target,
                        f"{phase.name}_reached_target": bool(phase_curve) and phase_curve[-1][1] >= phase.target}
    bar.total = len(losses) + len(batches)
    bar.set_description("llm")
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(WARMUP_RATIO * len(batches)), len(batches))
    for batch in batches:
        train(blocks[batch], scheduler)
    bar.close()
    if check and len(losses) % check_every:
        checked("REC check", check, curve)
    model.eval()
    batches_per_epoch = math.ceil(len(blocks) / params.batch_size)
    figures |= {"train_tokens": blocks.ids.numel(), "steps": len(losses), "first_loss": losses[0],
                "last_epoch_loss": float(np.mean(losses[-batches_per_epoch:]))}
    return model, figures | ({"check_curve": curve} if check else {})
