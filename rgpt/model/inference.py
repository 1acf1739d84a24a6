"""Answers from a trained RGPT: batched, greedy, from images, questions and regions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from .modeling_rgpt import IGNORE_INDEX, RGPTForConditionalGeneration
from .processing_rgpt import RGPTProcessor


@dataclass
class Request:
    image: Image.Image
    turns: list[tuple[str, str | None]]  # earlier (question, answer) pairs, then (question, None)
    regions: list[dict[str, Any]] = field(default_factory=list)  # {"box": [x, y, w, h], "segmentation": ...}


@dataclass
class Answer:
    text: str
    log_prob: float  # of the generated tokens (up to and including end-of-sequence) under the model


@torch.no_grad()
def generate_answers(model: RGPTForConditionalGeneration, processor: RGPTProcessor, requests: list[Request],
                     batch_size: int = 16, max_new_tokens: int = 64) -> list[Answer]:
    """The model's answer to the last question of each request, with its log-probability
    (left-padded batches, greedy decoding)."""
    model.eval()
    answers = []
    pad, eos = processor.tokenizer.pad_token_id, processor.tokenizer.eos_token_id
    for start in range(0, len(requests), batch_size):
        chunk = requests[start:start + batch_size]
        batch = processor.collate([processor(r.turns, r.image, r.regions) for r in chunk], padding_side="left")
        batch.pop("labels")
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                             eos_token_id=eos, return_dict_in_generate=True, output_scores=True)
        token_log_probs = model.language_model.compute_transition_scores(out.sequences, out.scores,
                                                                         normalize_logits=True)
        for row, log_probs in zip(out.sequences, token_log_probs):
            # Tokens after the first end-of-sequence are padding that generate adds to finished rows.
            ends = (row == eos).nonzero()
            length = int(ends[0]) + 1 if len(ends) else len(row)
            answers.append(Answer(processor.decode(row), float(log_probs[:length].sum())))
    return answers


def answer(model: RGPTForConditionalGeneration, processor: RGPTProcessor, requests: list[Request],
           batch_size: int = 16, max_new_tokens: int = 64) -> list[str]:
    """The model's answer text to the last question of each request."""
    return [a.text for a in generate_answers(model, processor, requests, batch_size, max_new_tokens)]


@torch.no_grad()
def answer_losses(model: RGPTForConditionalGeneration, processor: RGPTProcessor, requests: list[Request],
                  batch_size: int = 16) -> list[float]:
    """Each request's answers scored teacher-forced (every turn's answer given, none None): the mean
    cross-entropy of the answer tokens, in nats per token."""
    model.eval()
    losses = []
    for start in range(0, len(requests), batch_size):
        batch = processor.collate([processor(r.turns, r.image, r.regions) for r in requests[start:start + batch_size]])
        targets = batch.pop("labels")[:, 1:]  # token t + 1 is predicted from token t
        logits = model(**batch).logits[:, :-1].float()
        ce = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
        losses += (ce.sum(dim=1) / (targets != IGNORE_INDEX).sum(dim=1).clamp(min=1)).tolist()
    return losses
