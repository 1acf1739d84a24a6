"""One rank of a tiny real training run, for tests/test_trainer.py (`launch("tests.trainer_worker", ...)`).

A tiny next-token model with a frozen token embedding learns sequences that count up in steps of
1-3. It has dropout, so a resumed run matches an uninterrupted one only if the RNG is restored.
(A plain module rather than a transformers one: each rank imports it, and transformers' import
alone takes ~4-8 s per rank on this 2-core box.)
Rank 0 writes export.pt (the exported state dict) and result.json into the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from rgpt.train.trainer import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
VOCAB = 32
NUM_SAMPLES = 96
CONFIG = TrainConfig(learning_rate=1e-2, global_batch_size=8, micro_batch_size=2, epochs=1, warmup_ratio=0.1,
                     weight_decay=0.1, checkpoint_every=4, heldout_every=4, seed=0)


@dataclass
class Output:
    loss: torch.Tensor


class TinyLM(nn.Module):
    """Predicts each next token from the current and the previous one."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, hidden)
        self.mix = nn.Linear(2 * hidden, 2 * hidden)
        self.norm = nn.LayerNorm(2 * hidden)
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(2 * hidden, VOCAB)
        self.register_buffer("logit_bias", torch.linspace(-0.1, 0.1, VOCAB))  # a buffer the export must carry

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> Output:
        x = self.embed(input_ids)  # (B, T, C)
        previous = F.pad(x, (0, 0, 1, 0))[:, :-1]  # (B, T, C), zeros before the first token
        h = self.dropout(F.gelu(self.norm(self.mix(torch.cat([x, previous], dim=-1)))))  # (B, T, 2C)
        logits = self.head(h) + self.logit_bias  # (B, T, V)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        return Output(loss=loss)


def build_model() -> TinyLM:
    """The same initial weights in every process (seeded); the embedding is frozen."""
    torch.manual_seed(0)
    model = TinyLM()
    model.embed.requires_grad_(False)
    return model


class CountingDataset(Dataset):
    """Sequences of 4-24 tokens counting up from a random start in a random stride of 1-3."""

    def __init__(self, num_samples: int = NUM_SAMPLES, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.lengths = torch.randint(4, 25, (num_samples,), generator=g).tolist()
        starts = torch.randint(0, VOCAB, (num_samples,), generator=g).tolist()
        strides = torch.randint(1, 4, (num_samples,), generator=g).tolist()
        self.samples = [(s + d * torch.arange(n)) % VOCAB for s, d, n in zip(starts, strides, self.lengths)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.samples[i]


def collate(samples: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels (-100 on padding)."""
    width = max(len(s) for s in samples)
    input_ids = torch.zeros(len(samples), width, dtype=torch.long)
    attention_mask = torch.zeros(len(samples), width, dtype=torch.long)
    for row, s in enumerate(samples):
        input_ids[row, : len(s)] = s
        attention_mask[row, : len(s)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "labels": input_ids.masked_fill(attention_mask == 0, -100)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--zero", choices=["2", "3"], default="2")
    parser.add_argument("--kill-after-step", type=int, help="SIGKILL rank 0 once this step is logged")
    args = parser.parse_args()

    def on_log(record: dict) -> None:
        if record["step"] == args.kill_after_step:
            os.kill(os.getpid(), signal.SIGKILL)

    heldout_batch = collate(list(CountingDataset(num_samples=16, seed=1)))  # sequences the run never trains on

    def heldout(model: TinyLM) -> dict[str, float]:
        return {"heldout_loss": model(**heldout_batch).loss.item()}

    config = replace(CONFIG, deepspeed_config=REPO / f"infra/deepspeed/zero{args.zero}.json")
    result = train(build_model(), CountingDataset(), collate, config, args.output_dir, on_log=on_log, heldout=heldout)
    if result.state_dict is not None:
        torch.save(result.state_dict, args.output_dir / "export.pt")
        summary = {"steps": result.steps, "resumed_from": result.resumed_from,
                   "parameter_counts": result.parameter_counts}
        (args.output_dir / "result.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
