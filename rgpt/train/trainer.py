"""The DeepSpeed training loop both RGPT stages run (paper Sec. 4.1).

The caller builds the model and decides what trains by setting `requires_grad`; `train` trains
exactly those parameters: AdamW, linear warmup then cosine (or linear, or constant) decay, ZeRO-2
or ZeRO-3 from a JSON config, a metrics line per optimizer step, and checkpoints that a killed
run resumes from to the very same losses. Every `heldout_every` steps an optional held-out
check (a callable on the model, e.g. the region reliance of rgpt.eval.heldout) adds its figures
to the step's metrics line: how a stage learns, not only where it ends.

Batch geometry: global batch = micro batch x gradient accumulation x world size. The global and
micro batch sizes come from params.yaml; accumulation is derived and must come out whole.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.utils import safe_get_full_fp32_param
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset

from rgpt.config import StageTrainParams, TrainParams
from rgpt.train.launch import init_distributed
from rgpt.train.sampler import LengthGroupedSampler

# Keys of the DeepSpeed config that `train` sets itself (from params.yaml, or because the code
# depends on them); a config file that sets them too would be a second source of truth.
RUNTIME_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "bf16", "fp16", "optimizer", "scheduler", "zero_allow_untested_optimizer")
TRAINER_STATE = "trainer_state.json"  # next to DeepSpeed's files in every checkpoint folder
LrScheduler = Literal["cosine", "linear", "constant"]


@dataclass(frozen=True)
class TrainConfig:
    """One training stage's knobs: params.yaml's `train` section with one of its `stageN` blocks."""

    learning_rate: float
    global_batch_size: int
    micro_batch_size: int
    epochs: float = 1.0
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lr_scheduler: LrScheduler = "cosine"
    checkpoint_every: int = 20  # optimizer steps
    seed: int = 0
    deepspeed_config: Path = Path("infra/deepspeed/zero2.json")
    length_grouped: bool = True
    num_workers: int = 1  # DataLoader worker processes per rank; 0 loads in the training process
    heldout_every: int = 0  # optimizer steps between held-out checks (`train(heldout=...)`); 0: none

    @classmethod
    def from_params(cls, train: TrainParams, stage: StageTrainParams) -> TrainConfig:
        """One stage's config from params.yaml's `train` section, e.g. `(p.train, p.train.stage1)`."""
        # loss_weighting is the data's business (ConversationDataset), not the loop's
        return cls(**stage.model_dump(exclude={"loss_weighting"}), micro_batch_size=train.micro_batch_size,
                   checkpoint_every=train.checkpoint_every, heldout_every=train.heldout_every, seed=train.seed,
                   deepspeed_config=train.deepspeed_config, length_grouped=train.length_grouped)

    def gradient_accumulation_steps(self, world_size: int) -> int:
        per_pass = self.micro_batch_size * world_size
        if self.global_batch_size % per_pass:
            raise ValueError(
                f"global batch size {self.global_batch_size} is not a multiple of micro batch size "
                f"{self.micro_batch_size} x world size {world_size} = {per_pass}: in params.yaml set the "
                f"stage's global_batch_size to a multiple of {per_pass}, or change train.micro_batch_size "
                f"or the number of processes (train.nproc_per_node x train.nnodes)"
            )
        return self.global_batch_size // per_pass


@dataclass
class TrainResult:
    steps: int  # optimizer steps the run has done, those before a resume included
    resumed_from: int  # the checkpoint step this process started from; 0 for a fresh start
    parameter_counts: dict[str, int]  # {"trainable": n, "frozen": n}
    state_dict: dict[str, torch.Tensor] | None  # the full fp32 weights on rank 0, None on the others


def lr_multiplier(step: int, *, total_steps: int, warmup_steps: int,
                  kind: LrScheduler) -> float:
    """The learning rate of optimizer step `step` (0-based) as a fraction of the peak rate."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)  # linear ramp that never trains a step at rate 0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "linear":
        return 1.0 - progress
    if kind == "constant":
        return 1.0
    raise ValueError(f"unknown lr_scheduler {kind!r}: use cosine, linear or constant")


def build_optimizer(model: torch.nn.Module, config: TrainConfig, total_steps: int) -> tuple[torch.optim.AdamW, LambdaLR]:
    """AdamW over the trainable parameters and its warmup + decay schedule over `total_steps`.

    Weight decay applies to matrices and embeddings only, not to biases and norm gains (nanoGPT).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no parameter with requires_grad=True: nothing to train")
    # ds_shape: the real shape of a parameter that ZeRO-3 has already partitioned
    decay = [p for p in trainable if len(getattr(p, "ds_shape", p.shape)) >= 2]
    no_decay = [p for p in trainable if len(getattr(p, "ds_shape", p.shape)) < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate)
    schedule = partial(lr_multiplier, total_steps=total_steps, kind=config.lr_scheduler,
                       warmup_steps=math.ceil(config.warmup_ratio * total_steps))
    return optimizer, LambdaLR(optimizer, schedule)


def load_deepspeed_config(path: Path, *, micro_batch_size: int, gradient_accumulation_steps: int,
                          world_size: int) -> dict[str, Any]:
    """The JSON config at `path` with the batch geometry and precision filled in."""
    config = json.loads(Path(path).read_text())
    if set_twice := sorted(set(config) & set(RUNTIME_KEYS)):
        raise ValueError(f"{path}: {', '.join(set_twice)} are set by the trainer (batch sizes from params.yaml's "
                         "train section): remove them from the file")
    return {
        **config,
        "train_batch_size": micro_batch_size * gradient_accumulation_steps * world_size,
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "bf16": {"enabled": torch.cuda.is_available()},  # fp32 on CPU
        "zero_allow_untested_optimizer": True,  # ours is torch's AdamW, which ZeRO handles fine
    }


def train(
    model: torch.nn.Module,
    dataset: Dataset,
    collate_fn: Callable[[list[Any]], dict[str, torch.Tensor]],
    config: TrainConfig,
    output_dir: Path,
    *,
    on_log: Callable[[dict[str, float]], None] | None = None,
    heldout: Callable[[torch.nn.Module], dict[str, float]] | None = None,
) -> TrainResult:
    """Train `model`'s trainable parameters on `dataset`; every rank calls it the same way.

    The model's forward takes a collated batch as keyword arguments and returns an object with a
    `.loss`. `dataset.lengths` (one int per sample) drives length grouping. Writes
    `<output_dir>/metrics.jsonl` (one line per optimizer step: step, epoch, loss, lr, grad_norm,
    samples_per_s, and tokens_per_s when batches carry an `attention_mask`), which rank 0 also
    passes to `on_log`, with `heldout(model)`'s figures every `config.heldout_every` steps (every
    rank calls it, in eval mode without gradients: under ZeRO-3 a forward pass is collective), and
    `<output_dir>/checkpoints/step-<n>`, which a second call with the same
    output_dir resumes from. Ends by exporting the weights (`TrainResult.state_dict`, on rank 0)
    and tearing the process group down.
    """
    init_distributed()
    rank, world_size = dist.get_rank(), dist.get_world_size()
    accumulation = config.gradient_accumulation_steps(world_size)
    sampler = LengthGroupedSampler(len(dataset), config.micro_batch_size, num_replicas=world_size, rank=rank,
                                   lengths=dataset.lengths if config.length_grouped else None, seed=config.seed)
    micro_batches = int(config.epochs * len(sampler))
    total_steps = micro_batches // accumulation
    if total_steps == 0:
        raise ValueError(f"{len(dataset)} samples x {config.epochs} epochs make {micro_batches} micro-batches per "
                         f"process, fewer than one optimizer step ({accumulation}): lower the global batch size")

    checkpoint_dir = output_dir / "checkpoints"
    start = _checkpoint_step(checkpoint_dir, config, world_size)  # fails before the slow engine build
    parameter_counts = _parameter_counts(model)
    optimizer, scheduler = build_optimizer(model, config, total_steps)
    ds_config = load_deepspeed_config(config.deepspeed_config, micro_batch_size=config.micro_batch_size,
                                      gradient_accumulation_steps=accumulation, world_size=world_size)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    float_dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float32

    if start:
        _load_checkpoint(engine, _checkpoint_folder(checkpoint_dir, start))
    else:
        torch.manual_seed(config.seed + rank)  # for dropout; a resumed run restores the saved RNG instead
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = output_dir / "metrics.jsonl"
    if rank == 0:
        _keep_metrics_until(metrics_path, start)

    engine.train()
    batches = _micro_batches(dataset, collate_fn, sampler, config, start=start * accumulation)
    step_started = time.perf_counter()
    for step in range(start + 1, total_steps + 1):
        loss_sum = torch.zeros((), dtype=torch.float64, device=engine.device)
        tokens = torch.zeros((), dtype=torch.float64, device=engine.device)
        for _ in range(accumulation):
            batch = _to_device(next(batches), engine.device, float_dtype)
            counts_tokens = "attention_mask" in batch
            if counts_tokens:
                tokens += batch["attention_mask"].sum()
            loss = engine(**batch).loss
            engine.backward(loss)
            lr = engine.get_lr()[0]  # the rate this step applies: step() advances the schedule
            engine.step()
            loss_sum += loss.detach()
        totals = torch.stack([loss_sum, tokens])
        dist.all_reduce(totals)  # sums over ranks
        if rank == 0:
            seconds = time.perf_counter() - step_started
            record = {"step": step, "epoch": step * accumulation / len(sampler),
                      "loss": totals[0].item() / (world_size * accumulation), "lr": lr,
                      "grad_norm": float(engine.get_global_grad_norm()),
                      "samples_per_s": config.global_batch_size / seconds}
            if counts_tokens:
                record["tokens_per_s"] = totals[1].item() / seconds
        if heldout is not None and config.heldout_every and step % config.heldout_every == 0:
            checked = _heldout_check(engine.module, heldout)  # outside the step's timing
            if rank == 0:
                record.update(checked)
        if rank == 0:
            with metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            if on_log is not None:
                on_log(record)
        step_started = time.perf_counter()
        if step % config.checkpoint_every == 0 or step == total_steps:
            _save_checkpoint(engine, checkpoint_dir, step, config, world_size)

    state_dict = export_state_dict(engine)
    # every rank finishes here before the group goes: a rank that exits while another still
    # talks to it aborts (seen as launcher exit code 250)
    dist.barrier()
    dist.destroy_process_group()
    return TrainResult(steps=total_steps, resumed_from=start, parameter_counts=parameter_counts,
                       state_dict=state_dict)


def _heldout_check(model: torch.nn.Module, heldout: Callable[[torch.nn.Module], dict[str, float]]) -> dict[str, float]:
    """`heldout(model)` in eval mode without gradients; no RNG is drawn, so training goes on as without it."""
    model.eval()
    try:
        with torch.no_grad():
            return {key: float(value) for key, value in heldout(model).items()}
    finally:
        model.train()


def export_state_dict(engine: deepspeed.DeepSpeedEngine) -> dict[str, torch.Tensor] | None:
    """The model's full state dict, floats in fp32, on rank 0 (None on the others).

    Every rank must call it: gathering ZeRO partitions is collective. Trained parameters come
    from the optimizer's fp32 master copy (under bf16 the module holds rounded weights); frozen
    ones and buffers from the module, gathered first under ZeRO-3.
    """
    keep = dist.get_rank() == 0
    state_dict = {}
    for name, tensor in engine.module.state_dict(keep_vars=True).items():
        value = safe_get_full_fp32_param(tensor) if tensor.requires_grad else None
        if value is None:
            with deepspeed.zero.GatheredParameters([tensor]):  # a no-op for unpartitioned tensors
                value = tensor.detach().to("cpu", copy=True)
        if keep:
            state_dict[name] = value.to("cpu", torch.float32 if value.is_floating_point() else None)
    return state_dict if keep else None


def _parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    counts = {"trainable": 0, "frozen": 0}
    for p in model.parameters():
        counts["trainable" if p.requires_grad else "frozen"] += getattr(p, "ds_numel", p.numel())
    return counts


def _micro_batches(dataset: Dataset, collate_fn: Callable, sampler: LengthGroupedSampler, config: TrainConfig,
                   *, start: int) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's micro-batches from number `start` (counted from the first epoch's first) on."""
    epoch, skip = divmod(start, len(sampler))
    while True:
        sampler.set_epoch(epoch, start_batch=skip)
        # Its own generator: the loader draws worker seeds from it, not from the global RNG that
        # dropout uses and checkpoints restore.
        yield from DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=config.num_workers,
                              pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(config.seed))
        epoch, skip = epoch + 1, 0


def _to_device(batch: dict[str, Any], device: torch.device, float_dtype: torch.dtype) -> dict[str, Any]:
    """The batch on the engine's device, floating tensors in the engine's precision."""
    return {key: value.to(device, float_dtype if value.is_floating_point() else None, non_blocking=True)
            if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def _checkpoint_folder(checkpoint_dir: Path, step: int) -> Path:
    return checkpoint_dir / f"step-{step}"  # DeepSpeed's tag: it writes the latest one to checkpoint_dir/latest


def _save_checkpoint(engine: deepspeed.DeepSpeedEngine, checkpoint_dir: Path, step: int, config: TrainConfig,
                     world_size: int) -> None:
    folder = _checkpoint_folder(checkpoint_dir, step)
    folder.mkdir(parents=True, exist_ok=True)
    rank = dist.get_rank()
    # Ours go first: DeepSpeed writes `latest` last, so the checkpoint `latest` names is whole.
    torch.save({"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None},
               folder / f"rng_state_rank{rank}.pt")
    if rank == 0:
        state = {"step": step, "world_size": world_size, "micro_batch_size": config.micro_batch_size,
                 "global_batch_size": config.global_batch_size}
        (folder / TRAINER_STATE).write_text(json.dumps(state) + "\n")
    engine.save_checkpoint(str(checkpoint_dir), tag=folder.name)


def _checkpoint_step(checkpoint_dir: Path, config: TrainConfig, world_size: int) -> int:
    """The step of the checkpoint `latest` names (0 if none), once it is known this run can resume it."""
    latest = checkpoint_dir / "latest"
    if not latest.exists():
        return 0
    folder = checkpoint_dir / latest.read_text().strip()
    saved = json.loads((folder / TRAINER_STATE).read_text())
    now = {"world_size": world_size, "micro_batch_size": config.micro_batch_size,
           "global_batch_size": config.global_batch_size}
    if changed := [key for key in now if saved[key] != now[key]]:
        raise ValueError(
            f"{folder} was written with " + ", ".join(f"{k} {saved[k]}" for k in changed)
            + "; this run has " + ", ".join(f"{k} {now[k]}" for k in changed)
            + ". A ZeRO checkpoint resumes only with the same number of processes (train.nproc_per_node x "
            f"train.nnodes) and batch sizes: set them back in params.yaml, or move {checkpoint_dir} away to start over"
        )
    return saved["step"]


def _load_checkpoint(engine: deepspeed.DeepSpeedEngine, folder: Path) -> None:
    """Weights, optimizer, schedule and this rank's RNG, as `_save_checkpoint` left them."""
    engine.load_checkpoint(str(folder.parent), tag=folder.name)
    rng = torch.load(folder / f"rng_state_rank{dist.get_rank()}.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"])


def _keep_metrics_until(path: Path, step: int) -> None:
    """Drop the metrics of steps after `step`: a resumed run logs them again."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(line for line in lines if json.loads(line)["step"] <= step))
