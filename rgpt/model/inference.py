"""Answers from a trained RGPT: batched, greedy, from images, questions and regions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from .modeling_rgpt import RGPTForConditionalGeneration
from .processing_rgpt import RGPTProcessor


@dataclass
class Request:
    image: Image.Image
    turns: list[tuple[str, str | None]]  # earlier (question, answer) pairs, then (question, None)
    regions: list[dict[str, Any]] = field(default_factory=list)  # {"box": [x, y, w, h], "segmentation": ...}


@torch.no_grad()
def answer(model: RGPTForConditionalGeneration, processor: RGPTProcessor, requests: list[Request],
           batch_size: int = 16, max_new_tokens: int = 64) -> list[str]:
    """The model's answer to the last question of each request (left-padded batches, greedy)."""
    model.eval()
    answers = []
    for start in range(0, len(requests), batch_size):
        chunk = requests[start:start + batch_size]
        batch = processor.collate([processor(r.turns, r.image, r.regions) for r in chunk], padding_side="left")
        batch.pop("labels")
        new = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id,
                             eos_token_id=processor.tokenizer.eos_token_id)
        answers += [processor.decode(row) for row in new]
    return answers
