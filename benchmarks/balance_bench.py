"""Balancing full V3Det: `per_group_cap` against the pandas groupby-apply-sample idiom.

Builds a seeded synthetic annotation table the size of V3Det train (13,204 classes with a
Zipf-like long tail, 1.75M boxes, 180K images), then runs every method in a fresh subprocess,
so one method's memory peak cannot hide another's, and prints wall time (best of --repeat) and
peak memory above the input table (tracemalloc, which sees numpy and pandas buffers) relative
to the baseline at the same cap. Each method must keep exactly sum over classes of
min(n, cap) boxes and also finds the images left with a kept box; the script fails otherwise.

    python benchmarks/balance_bench.py              # full scale: ~3.5 min on 2 cores, mostly
                                                    # tracing the pandas baseline's allocations
    python benchmarks/balance_bench.py --scale 0.1  # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from rgpt.data.balance import per_group_cap

V3DET_CLASSES, V3DET_BOXES, V3DET_IMAGES = 13_204, 1_750_000, 180_000
ZIPF_EXPONENT = 0.8  # largest class ~60K boxes, median ~54, smallest 16: both caps bite
CAPS = (100, 10)
BASELINE = "pandas apply+sample"


def make_table(scale: float, seed: int) -> dict[str, np.ndarray]:
    """Category id and image id of every box, boxes grouped by image as the readers emit them."""
    rng = np.random.default_rng(seed)
    classes, boxes, images = (round(n * scale) for n in (V3DET_CLASSES, V3DET_BOXES, V3DET_IMAGES))
    weights = 1.0 / np.arange(1, classes + 1) ** ZIPF_EXPONENT
    # Every class has at least one box, as in V3Det; the others follow the long tail.
    tail = rng.choice(classes, boxes - classes, p=weights / weights.sum())
    category_id = np.concatenate([np.arange(classes), tail])
    rng.shuffle(category_id)
    image_id = np.sort(rng.integers(0, images, size=boxes))
    return {"category_id": category_id, "image_id": image_id}


# --- the methods: each returns (boxes kept, images kept) --------------------------------------


def ours(table: dict[str, np.ndarray], cap: int, seed: int) -> tuple[int, int]:
    keep = per_group_cap(table["category_id"], cap, np.random.default_rng(seed))
    kept_images = np.flatnonzero(np.bincount(table["image_id"][keep]))
    return int(keep.sum()), len(kept_images)


def pandas_apply_sample(df, cap: int, seed: int) -> tuple[int, int]:
    # groupby(...).sample(n=cap) raises when a group is smaller than cap, hence apply.
    kept = df.groupby("category_id", group_keys=False).apply(
        lambda g: g.sample(min(len(g), cap), random_state=seed))
    return len(kept), kept["image_id"].nunique()


def pandas_shuffle_head(df, cap: int, seed: int) -> tuple[int, int]:
    kept = df.sample(frac=1, random_state=seed).groupby("category_id").head(cap)
    return len(kept), kept["image_id"].nunique()


METHODS = {
    "per_group_cap (ours)": ours,
    BASELINE: pandas_apply_sample,
    "pandas shuffle+head": pandas_shuffle_head,
}


def measure(method: str, table_path: str, cap: int, seed: int, repeat: int) -> dict:
    """Run one method on the saved table: best wall time, then one traced run for the memory peak."""
    loaded = np.load(table_path)
    table = {name: loaded[name] for name in loaded.files}
    counts = np.bincount(table["category_id"])
    expected = int(np.minimum(counts, cap).sum())
    if method == "per_group_cap (ours)":
        data = table
    else:
        import pandas as pd

        data = pd.DataFrame(table)
    run = METHODS[method]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        boxes, images = run(data, cap, seed)
        times.append(time.perf_counter() - start)
    if boxes != expected:
        raise SystemExit(f"{method} at cap {cap} kept {boxes} boxes, expected {expected}")
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    run(data, cap, seed)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return {"method": method, "cap": cap, "time_s": min(times), "peak_mb": peak / 2**20, "boxes": boxes,
            "images": images, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of V3Det's size (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per method; the best counts")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "TABLE", "CAP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, table_path, cap = args.child
        print(json.dumps(measure(method, table_path, int(cap), args.seed, args.repeat)))
        return

    table = make_table(args.scale, args.seed)
    n_classes = len(np.unique(table["category_id"]))
    n_images = len(np.unique(table["image_id"]))
    print(f"table: {len(table['category_id']):,} boxes, {n_classes:,} classes, {n_images:,} images "
          f"(scale {args.scale}, seed {args.seed})")
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        table_path = str(Path(tmp) / "table.npz")
        np.savez(table_path, **table)
        for cap in CAPS:
            for method in METHODS:
                cmd = [sys.executable, __file__, "--child", method, table_path, str(cap),
                       "--seed", str(args.seed), "--repeat", str(args.repeat)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                results.append(json.loads(out.splitlines()[-1]))

    baseline = {r["cap"]: r for r in results if r["method"] == BASELINE}
    header = (f"{'method':<22} {'cap':>4} {'time s':>8} {'x base':>7} {'peak MB':>8} {'x base':>7} "
              f"{'max RSS MB':>10} {'boxes':>9} {'images':>8}")
    print(header)
    print("-" * len(header))
    for r in results:
        base = baseline[r["cap"]]
        print(f"{r['method']:<22} {r['cap']:>4} {r['time_s']:>8.3f} {r['time_s'] / base['time_s']:>7.3f} "
              f"{r['peak_mb']:>8.1f} {r['peak_mb'] / base['peak_mb']:>7.3f} {r['max_rss_mb']:>10.0f} "
              f"{r['boxes']:>9,} {r['images']:>8,}")


if __name__ == "__main__":
    main()
