"""The DeepSpeed trainer: real 2-process runs over gloo (tests/trainer_worker.py), the sampler,
the optimizer and schedule, and the batch-size arithmetic.

Each launched run takes ~15-30 s on 2 cores (DeepSpeed and torch's optimizer imports dominate);
the first run on a machine also compiles DeepSpeed's shared-memory op once (~1-2 min).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from trainer_worker import build_model

from rgpt.config import Params, resolve
from rgpt.train.launch import launch
from rgpt.train.sampler import LengthGroupedSampler
from rgpt.train.trainer import TrainConfig, build_optimizer, load_deepspeed_config, lr_multiplier

from conftest import REPO

METRIC_KEYS = {"step", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s"}
STEPS = 12  # 96 samples / global batch 8


def run_worker(output_dir: Path, *args: str, nproc: int = 2) -> None:
    launch("tests.trainer_worker", [str(output_dir), *args], nproc_per_node=nproc, env={"PYTHONPATH": str(REPO)})


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def zero2_run(tmp_path_factory) -> Path:
    """One uninterrupted ZeRO-2 run on 2 processes (12 optimizer steps)."""
    output_dir = tmp_path_factory.mktemp("zero2")
    run_worker(output_dir)
    return output_dir


def test_run_trains_only_the_trainable_parameters_and_logs_every_step(zero2_run):
    metrics = read_metrics(zero2_run)
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    # the held-out check every 4 steps (CONFIG.heldout_every), on sequences it never trained on
    assert [set(m) - METRIC_KEYS for m in metrics] == [set(), set(), set(), {"heldout_loss"}] * 3
    assert all(METRIC_KEYS <= set(m) for m in metrics)
    heldout = [m["heldout_loss"] for m in metrics if "heldout_loss" in m]
    assert heldout[-1] < 0.8 * heldout[0]
    assert metrics[-1]["epoch"] == 1.0
    assert np.mean([m["loss"] for m in metrics[-3:]]) < 0.8 * metrics[0]["loss"]
    # warmup over ceil(0.1 x 12) = 2 steps, then cosine to step 12
    assert [m["lr"] for m in metrics[:3]] == pytest.approx([1e-2 / 3, 2e-2 / 3, 1e-2])
    assert metrics[-1]["lr"] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 9 / 10)))

    result = json.loads((zero2_run / "result.json").read_text())
    assert result == {"steps": STEPS, "resumed_from": 0, "parameter_counts": {"trainable": 6368, "frozen": 1024}}
    initial = build_model().state_dict()
    exported = torch.load(zero2_run / "export.pt")
    assert {k: v.shape for k, v in exported.items()} == {k: v.shape for k, v in initial.items()}
    assert all(v.dtype == torch.float32 for v in exported.values())
    assert torch.equal(exported["embed.weight"], initial["embed.weight"])  # frozen
    assert torch.equal(exported["logit_bias"], initial["logit_bias"])  # a buffer
    trained = [k for k in initial if k not in ("embed.weight", "logit_bias")]
    assert all(not torch.equal(exported[k], initial[k]) for k in trained)
    assert sorted(p.name for p in (zero2_run / "checkpoints").glob("step-*")) == ["step-12", "step-4", "step-8"]
    assert (zero2_run / "checkpoints" / "latest").read_text() == "step-12"


def test_killed_run_resumes_to_the_same_losses_and_weights(zero2_run, tmp_path):
    with pytest.raises(RuntimeError, match="exit code"):
        run_worker(tmp_path, "--kill-after-step", "6")  # rank 0 dies between checkpoints 4 and 8
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step-4"

    run_worker(tmp_path)
    resumed, uninterrupted = read_metrics(tmp_path), read_metrics(zero2_run)
    assert [m["step"] for m in resumed] == list(range(1, STEPS + 1))  # steps 5 and 6 logged once
    # bit for bit: same batches, same optimizer state, same dropout masks (the RNG is restored)
    assert [m["loss"] for m in resumed] == [m["loss"] for m in uninterrupted]
    # the held-out check runs in eval mode and draws no RNG: it does not change what is trained
    assert [m.get("heldout_loss") for m in resumed] == [m.get("heldout_loss") for m in uninterrupted]
    assert json.loads((tmp_path / "result.json").read_text())["resumed_from"] == 4
    resumed_weights, weights = torch.load(tmp_path / "export.pt"), torch.load(zero2_run / "export.pt")
    assert all(torch.equal(resumed_weights[k], weights[k]) for k in weights)


def test_resume_with_another_world_size_fails_clearly(zero2_run):
    with pytest.raises(RuntimeError, match="written with world_size 2; this run has world_size 1"):
        run_worker(zero2_run, nproc=1)


def test_zero3_trains_like_zero2_and_exports_the_full_state_dict(zero2_run, tmp_path):
    run_worker(tmp_path, "--zero", "3")
    # the same computation partitioned differently: equal up to float summation order (~2e-7)
    assert [m["loss"] for m in read_metrics(tmp_path)] == pytest.approx(
        [m["loss"] for m in read_metrics(zero2_run)], abs=1e-6)
    initial = build_model().state_dict()
    exported = torch.load(tmp_path / "export.pt")
    assert {k: v.shape for k, v in exported.items()} == {k: v.shape for k, v in initial.items()}
    assert torch.equal(exported["embed.weight"], initial["embed.weight"])
    weights = torch.load(zero2_run / "export.pt")
    assert all(torch.allclose(exported[k], weights[k], atol=1e-6) for k in weights)


def test_gradient_accumulation_is_derived_and_must_divide():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for profile in ("embedded", "paper"):  # embedded: 32 and 16 over 8 x 2; paper: 256 and 128 over 16 x 8
        train = Params.model_validate(resolve({**raw, "profile": profile})).train
        world_size = train.nproc_per_node * train.nnodes
        assert [TrainConfig.from_params(train, stage).gradient_accumulation_steps(world_size)
                for stage in (train.stage1, train.stage2)] == [2, 1]
    config = TrainConfig(learning_rate=1e-3, global_batch_size=250, micro_batch_size=16)
    with pytest.raises(ValueError, match=r"global batch size 250 is not a multiple of micro batch size 16 "
                                         r"x world size 8 = 128: in params.yaml"):
        config.gradient_accumulation_steps(8)


def test_deepspeed_config_fills_the_batch_geometry_and_refuses_to_duplicate_it(tmp_path):
    for name, stage in (("zero2.json", 2), ("zero3.json", 3)):
        config = load_deepspeed_config(REPO / "infra/deepspeed" / name, micro_batch_size=16,
                                  gradient_accumulation_steps=2, world_size=8)
        assert config["zero_optimization"]["stage"] == stage
        assert (config["train_batch_size"], config["train_micro_batch_size_per_gpu"],
                config["gradient_accumulation_steps"]) == (256, 16, 2)
        assert config["bf16"] == {"enabled": torch.cuda.is_available()}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"train_batch_size": 64, "zero_optimization": {"stage": 2}}))
    with pytest.raises(ValueError, match=f"{path}: train_batch_size are set by the trainer"):
        load_deepspeed_config(path, micro_batch_size=2, gradient_accumulation_steps=1, world_size=1)


def test_weight_decay_only_on_trainable_matrices_and_the_schedule():
    model = build_model()
    config = TrainConfig(learning_rate=1e-3, global_batch_size=8, micro_batch_size=2, warmup_ratio=0.03,
                         weight_decay=0.1)
    optimizer, scheduler = build_optimizer(model, config, total_steps=100)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model.mix.weight), id(model.head.weight)}
    assert {id(p) for p in plain["params"]} == {id(model.mix.bias), id(model.norm.weight), id(model.norm.bias),
                                                id(model.head.bias)}  # the frozen embedding is in neither
    lrs = []
    for _ in range(100):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    # warmup ceil(0.03 x 100) = 3 steps: 1/4, 2/4, 3/4 of the peak, then cosine from the peak
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[99] == pytest.approx(2.6221547724253336e-07)  # 0.5 (1 + cos(pi 96/97)) x 1e-3
    assert lrs == sorted(lrs[:4]) + sorted(lrs[4:], reverse=True)

    assert lr_multiplier(99, total_steps=100, warmup_steps=3, kind="linear") == pytest.approx(1 / 97)
    assert lr_multiplier(99, total_steps=100, warmup_steps=3, kind="constant") == 1.0


def epoch_batches(sampler: LengthGroupedSampler, epoch: int, start_batch: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch, start_batch)
    return list(sampler)


@pytest.mark.parametrize("grouped", [False, True])
def test_sampler_gives_ranks_disjoint_equal_shares(grouped):
    lengths = np.random.default_rng(0).integers(1, 100, 103).tolist()
    ranks = [LengthGroupedSampler(103, 4, lengths=lengths if grouped else None, num_replicas=3, rank=r, seed=5)
             for r in range(3)]
    shares = [epoch_batches(s, epoch=2) for s in ranks]
    assert [len(share) for share in shares] == [8, 8, 8]  # 103 // (3 x 4); the other 7 sit this epoch out
    assert all(len(batch) == 4 for share in shares for batch in share)
    indices = [i for share in shares for batch in share for i in batch]
    assert len(indices) == len(set(indices)) == 96


def test_sampler_groups_similar_lengths():
    lengths = np.random.default_rng(0).integers(10, 1000, 2000)

    def mean_spread(sampler: LengthGroupedSampler) -> float:
        return float(np.mean([lengths[b].max() / lengths[b].min() for b in epoch_batches(sampler, epoch=0)]))

    grouped = mean_spread(LengthGroupedSampler(2000, 8, lengths=lengths.tolist(), num_replicas=2))
    shuffled = mean_spread(LengthGroupedSampler(2000, 8, num_replicas=2))
    assert grouped < 1.1 and shuffled > 10  # measured: 1.05 and 17
    # the ranks of one step get neighbouring lengths too
    steps = LengthGroupedSampler(2000, 8, lengths=lengths.tolist(), num_replicas=2).global_batches()
    assert np.mean(lengths[steps].max(axis=(1, 2)) / lengths[steps].min(axis=(1, 2))) < 1.2  # 1.15


def test_sampler_is_seeded_per_epoch_and_skips_ahead_exactly():
    lengths = list(range(1, 201))
    sampler = LengthGroupedSampler(200, 4, lengths=lengths, num_replicas=2, rank=1, seed=7)
    again = LengthGroupedSampler(200, 4, lengths=lengths, num_replicas=2, rank=1, seed=7)
    assert epoch_batches(sampler, 3) == epoch_batches(again, 3)
    assert epoch_batches(sampler, 3) != epoch_batches(sampler, 4)
    other_seed = LengthGroupedSampler(200, 4, lengths=lengths, num_replicas=2, rank=1, seed=8)
    assert epoch_batches(sampler, 3) != epoch_batches(other_seed, 3)
    assert epoch_batches(sampler, 3, start_batch=10) == epoch_batches(again, 3)[10:]
    with pytest.raises(ValueError, match="start_batch 25 is outside an epoch of 25 micro-batches"):
        sampler.set_epoch(0, start_batch=25)


def test_sampler_refuses_a_dataset_smaller_than_one_step():
    with pytest.raises(ValueError, match="a dataset of 7 samples cannot fill one micro-batch of 4 on each of 2"):
        LengthGroupedSampler(7, 4, num_replicas=2)
