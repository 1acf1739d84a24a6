"""What the DeepSpeed engine costs per optimizer step: a ZeRO-2 (and ZeRO-3) engine step against a
plain PyTorch forward / backward / clip / AdamW step, same model, same batch, same optimizer and
schedule (rgpt.train.trainer.build_optimizer), one process.

    OMP_NUM_THREADS=1 python benchmarks/train_step_bench.py [--hidden 256 --layers 4 --batch 8 --seq 128]

The three runs take turns, `--rounds` rounds of `--steps` steps each, so load from other work on
the machine falls on all of them alike; the table gives the median step of each. Before any step
is timed, the first `CHECK_STEPS` steps of the three (same weights, same batch, same optimizer)
must give the same losses, the optimizer's updates included, or the script fails. Swap the model
by editing `build_model` (the only place it is made).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import deepspeed
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rgpt.train.launch import init_distributed
from rgpt.train.trainer import TrainConfig, build_optimizer, load_deepspeed_config

VOCAB = 2048
CLIP = 1.0  # what infra/deepspeed/*.json clip gradients to; the plain step clips the same
CHECK_STEPS = 3  # untimed steps whose losses must agree: the first forward, then two updates' results
# fp32 on CPU: the three agree to ~1e-6 (measured); on GPU the baseline is bf16 autocast over fp32
# weights, the engine bf16 weights with fp32 masters: bf16 keeps 8 bits of mantissa (0.4 %)
LOSS_TOLERANCE = {"cpu": {"rtol": 1e-5, "atol": 1e-5}, "cuda": {"rtol": 2e-2, "atol": 2e-2}}


def build_model(hidden: int, layers: int) -> torch.nn.Module:
    """The benchmarked model (seeded: every run starts from the same weights)."""
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=hidden * 8 // 3,
                                        num_hidden_layers=layers, num_attention_heads=hidden // 64,
                                        num_key_value_heads=hidden // 64, max_position_embeddings=2048))


def plain_step(model: torch.nn.Module, config: TrainConfig, batch: dict) -> Callable[[], float]:
    optimizer, scheduler = build_optimizer(model, config, total_steps=10_000)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)

    def step() -> float:
        # on GPU the baseline is the usual bf16 autocast over fp32 weights, as the engine runs bf16
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def engine_step(model: torch.nn.Module, config: TrainConfig, batch: dict) -> Callable[[], float]:
    optimizer, scheduler = build_optimizer(model, config, total_steps=10_000)
    ds_config = load_deepspeed_config(config.deepspeed_config, micro_batch_size=config.micro_batch_size,
                                      gradient_accumulation_steps=1, world_size=1)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)

    def step() -> float:
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        return loss.item()

    return step


def time_steps(step: Callable[[], float], steps: int, times: list[float]) -> None:
    for _ in range(steps):
        start = time.perf_counter()
        step()  # .item() waits for the device
        times.append(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    init_distributed()  # a group of one
    device = "cuda" if torch.cuda.is_available() else "cpu"
    input_ids = torch.randint(0, VOCAB, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": input_ids.to(device), "labels": input_ids.to(device)}
    config = TrainConfig(learning_rate=1e-4, global_batch_size=args.batch, micro_batch_size=args.batch, warmup_ratio=0)
    runs = {
        "plain PyTorch": plain_step(build_model(args.hidden, args.layers), config, batch),
        "DeepSpeed ZeRO-2": engine_step(build_model(args.hidden, args.layers), config, batch),
        "DeepSpeed ZeRO-3": engine_step(build_model(args.hidden, args.layers),
                                        replace(config, deepspeed_config=Path("infra/deepspeed/zero3.json")), batch),
    }
    # warm-up steps, and the check that the three take the same steps: same losses, step by step
    losses = {name: torch.tensor([step() for _ in range(CHECK_STEPS)], dtype=torch.float64)
              for name, step in runs.items()}
    for name in runs:
        torch.testing.assert_close(
            losses[name], losses["plain PyTorch"], **LOSS_TOLERANCE[device],
            msg=lambda m, name=name: (f"{name} and plain PyTorch disagree on the losses of their first {CHECK_STEPS} "
                                      f"steps ({name}: {losses[name].tolist()}, plain PyTorch: "
                                      f"{losses['plain PyTorch'].tolist()}):\n{m}"))
    first_loss = {name: float(values[0]) for name, values in losses.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, step in runs.items():
            time_steps(step, args.steps, times[name])

    params = sum(p.numel() for p in build_model(args.hidden, args.layers).parameters())
    print(f"Llama hidden {args.hidden} x {args.layers} layers ({params / 1e6:.1f}M params), batch {args.batch} x "
          f"{args.seq} tokens, {device}, {torch.get_num_threads()} threads, median of {args.rounds} x {args.steps} steps")
    print(f"{'step':<18} {'ms / step':>10} {'x plain':>8} {'first loss':>11}")
    base = statistics.median(times["plain PyTorch"])
    for name in runs:
        median = statistics.median(times[name])
        print(f"{name:<18} {median * 1e3:>10.1f} {median / base:>8.3f} {first_loss[name]:>11.5f}")


if __name__ == "__main__":
    main()
