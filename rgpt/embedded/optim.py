"""What the embedded base models' two trainings share: seeding, AdamW, the schedule and one step.

nanoGPT's choices for small transformers trained from scratch: weight decay on matrices only,
a short linear warm-up, gradients clipped at norm 1.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from transformers import get_cosine_schedule_with_warmup

WEIGHT_DECAY = 0.1  # on matrices only; biases, norms and embeddings' scales decay to nothing otherwise
WARMUP_RATIO = 0.05
GRAD_CLIP = 1.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def adamw(model: torch.nn.Module, learning_rate: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                              {"params": no_decay, "weight_decay": 0.0}], lr=learning_rate, betas=(0.9, 0.98))


def adamw_cosine(model: torch.nn.Module, learning_rate: float,
                 steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """`adamw` and a cosine schedule after a linear warm-up."""
    optimizer = adamw(model, learning_rate)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, math.ceil(WARMUP_RATIO * steps), steps)


def step(model: torch.nn.Module, loss: torch.Tensor, optimizer, scheduler) -> None:
    """Back-propagate `loss`, clip the gradients, step the optimizer and the schedule."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
