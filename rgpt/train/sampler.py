"""Which samples each rank trains on, micro-batch by micro-batch.

One epoch is a seeded permutation of the dataset cut into *global micro-batches*: one
micro-batch for every rank, taken together (world size x micro batch size samples). Every rank
computes the same permutation and keeps its own slice, so the shares are disjoint and equal
without any communication. With lengths given, samples of similar length share a micro-batch
(less padding), and the ranks of one step get neighbouring lengths (no rank waits on a much
longer one): the same idea as LLaVA's `group_by_modality_length`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

# Samples are sorted by length within windows of this many global micro-batches; the windows
# keep the order random at the scale of an epoch (the Hugging Face Trainer's choice of 50).
MEGA_BATCH_STEPS = 50


class LengthGroupedSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches (lists of dataset indices) for one epoch.

    The samples that do not fill a last global micro-batch are left out of the epoch (a
    different random few each epoch), so every rank runs the same number of micro-batches.
    `set_epoch(epoch, start_batch=k)` picks the epoch's permutation and skips its first k
    micro-batches, which is how a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(
        self,
        num_samples: int,
        micro_batch_size: int,
        *,
        lengths: Sequence[int] | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside a world of {num_replicas} processes")
        if lengths is not None and len(lengths) != num_samples:
            raise ValueError(f"got {len(lengths)} lengths for a dataset of {num_samples} samples")
        samples_per_step = micro_batch_size * num_replicas
        if num_samples < samples_per_step:
            raise ValueError(
                f"a dataset of {num_samples} samples cannot fill one micro-batch of {micro_batch_size} "
                f"on each of {num_replicas} processes: lower train.micro_batch_size or use more data"
            )
        self.num_samples = num_samples
        self.micro_batch_size = micro_batch_size
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0

    def __len__(self) -> int:
        """Micro-batches per rank in a whole epoch."""
        return self.num_samples // (self.micro_batch_size * self.num_replicas)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch < len(self):
            raise ValueError(f"start_batch {start_batch} is outside an epoch of {len(self)} micro-batches")
        self.epoch = epoch
        self.start_batch = start_batch

    def global_batches(self) -> np.ndarray:
        """The epoch's micro-batches for all ranks: (micro-batches, ranks, micro batch size)."""
        rng = np.random.default_rng((self.seed, self.epoch))
        samples_per_step = self.micro_batch_size * self.num_replicas
        order = rng.permutation(self.num_samples)[: len(self) * samples_per_step]
        if self.lengths is None:
            return order.reshape(len(self), self.num_replicas, self.micro_batch_size)
        window = MEGA_BATCH_STEPS * samples_per_step
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            order[start : start + window] = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
        batches = order.reshape(len(self), self.num_replicas, self.micro_batch_size)
        # sorted windows would run from long to short batches: shuffle the batch order again
        return batches[rng.permutation(len(self))]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches()[self.start_batch :, self.rank]:
            yield batch.tolist()
