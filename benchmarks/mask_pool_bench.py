"""Mask pooling: the batched implementation against a per-region Python loop and a plain
feature-map average, for 1 to 256 regions, on the paper profile's refined map (C = 1024,
96 x 96: ViT-L/14 at 336 px refined 4x).

    python benchmarks/mask_pool_bench.py [--channels 1024 --side 96 --images 4 --repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from rgpt.model.regions import mask_pool


def per_region_loop(features: torch.Tensor, weights: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The straightforward version: one weighted average per region, in Python."""
    return torch.stack([(features[b] * w).sum(dim=(1, 2)) / w.sum() for w, b in zip(weights, index.tolist())])


def map_average(features: torch.Tensor, weights: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """What a model without regions computes: one average of the whole map per image (the floor)."""
    return features.mean(dim=(2, 3))[index]


def best_time(fn, *args, repeats: int) -> float:
    fn(*args)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--side", type=int, default=96)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    features = torch.randn(args.images, args.channels, args.side, args.side)
    print(f"features (B, C, h, w) = {tuple(features.shape)}, {torch.get_num_threads()} threads, best of {args.repeats}")
    print(f"{'regions':>8} {'batched ms':>11} {'loop ms':>9} {'map avg ms':>11} {'loop / batched':>15} {'batched / map avg':>18}")
    for n in (1, 4, 16, 64, 256):
        weights = (torch.rand(n, args.side, args.side) > 0.7).float()
        index = torch.sort(torch.randint(0, args.images, (n,))).values
        torch.testing.assert_close(mask_pool(features, weights, index), per_region_loop(features, weights, index),
                                   rtol=1e-4, atol=1e-4)
        batched = best_time(mask_pool, features, weights, index, repeats=args.repeats)
        loop = best_time(per_region_loop, features, weights, index, repeats=args.repeats)
        floor = best_time(map_average, features, weights, index, repeats=args.repeats)
        print(f"{n:>8} {batched * 1e3:>11.2f} {loop * 1e3:>9.2f} {floor * 1e3:>11.2f} {loop / batched:>15.1f} "
              f"{batched / floor:>18.1f}")


if __name__ == "__main__":
    main()
