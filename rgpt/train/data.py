"""The training data: conversation samples (outputs/conversations/*.jsonl) as model inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..data.conversations import read_conversations
from ..model.processing_rgpt import IGNORE_INDEX, RGPTProcessor


def sample_turns(sample: dict[str, Any]) -> list[tuple[str, str]]:
    """[(question, answer), ...] from a sample's alternating human/gpt turns."""
    turns = sample["conversations"]
    if len(turns) % 2 or any(t["from"] != role for t, role in zip(turns, ["human", "gpt"] * len(turns))):
        raise ValueError(f"sample {sample.get('id')}: turns must alternate human, gpt")
    return [(q["value"], a["value"]) for q, a in zip(turns[0::2], turns[1::2])]


def turn_weights(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) loss weights that make every answer turn count the same: 1 / (its tokens) on each
    label of a turn (a run of labels that are not IGNORE_INDEX), 0 elsewhere.

    With the token-mean loss, a two-token classification answer weighs 1/60 of a 120-token
    RecapD description; the embedded model then learns the descriptions' wording long before it
    learns to read the region slot that the short answers depend on (docs/findings.md).
    """
    answer = labels != IGNORE_INDEX
    starts = answer & ~torch.cat([torch.zeros_like(answer[:, :1]), answer[:, :-1]], dim=1)
    turn = torch.cumsum(starts.flatten().long(), 0).view_as(labels) * answer  # 1, 2, ...; 0: no label
    tokens = torch.bincount(turn.flatten(), minlength=int(starts.sum()) + 1).float()
    return torch.where(answer, 1.0 / tokens[turn], torch.zeros((), dtype=torch.float))


class ConversationDataset(Dataset):
    """Samples of one conversations file; `lengths` (tokens) lets the sampler group similar ones.

    loss_weighting "turn" adds `label_weights` (`turn_weights`) to every batch; "token" leaves
    the model's own token-mean loss.
    """

    def __init__(self, path: str | Path, data_root: str | Path, processor: RGPTProcessor,
                 loss_weighting: str = "token"):
        if loss_weighting not in ("token", "turn"):
            raise ValueError(f"loss_weighting must be token or turn, got {loss_weighting!r}")
        self.loss_weighting = loss_weighting
        self.samples = read_conversations(path)
        if not self.samples:
            raise ValueError(f"{path} holds no conversations: run the conversations stage first")
        self.data_root = Path(data_root)
        self.processor = processor
        self.lengths = [len(processor.encode(sample_turns(s))[0]) for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[index]
        path = self.data_root / sample["image"]
        try:
            with Image.open(path) as image:
                return self.processor(sample_turns(sample), image.convert("RGB"), sample["regions"])
        except (OSError, ValueError) as e:
            raise ValueError(f"sample {sample['id']} ({path}): {e}") from e

    def collate(self, examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = self.processor.collate(examples)
        if self.loss_weighting == "turn":
            batch["label_weights"] = turn_weights(batch["labels"])
        return batch
