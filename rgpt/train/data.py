"""The training data: conversation samples (outputs/conversations/*.jsonl) as model inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..data.conversations import read_conversations
from ..model.processing_rgpt import RGPTProcessor


def sample_turns(sample: dict[str, Any]) -> list[tuple[str, str]]:
    """[(question, answer), ...] from a sample's alternating human/gpt turns."""
    turns = sample["conversations"]
    if len(turns) % 2 or any(t["from"] != role for t, role in zip(turns, ["human", "gpt"] * len(turns))):
        raise ValueError(f"sample {sample.get('id')}: turns must alternate human, gpt")
    return [(q["value"], a["value"]) for q, a in zip(turns[0::2], turns[1::2])]


class ConversationDataset(Dataset):
    """Samples of one conversations file; `lengths` (tokens) lets the sampler group similar ones."""

    def __init__(self, path: str | Path, data_root: str | Path, processor: RGPTProcessor):
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
        return self.processor.collate(examples)
