"""RecapD client throughput: the async client against the stand-in VLM with a fixed artificial
latency and no faults, at concurrency 1, 8, 32 and 128.

The ideal is concurrency / latency requests per second (every slot always busy, zero overhead);
the table gives what the client achieved as a share of it, and its speed-up over concurrency 1
measured in the same run (the baseline). The stand-in runs in its own process, so its work does
not share the client's interpreter lock.

    python benchmarks/recap_client_bench.py [--latency 0.1 --rounds 4 --concurrency 1 8 32 128]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import platform
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def serve(root: str, latency: float, queue, stop) -> None:
    """The stand-in over the corpus' V3Det train images, until `stop` is set."""
    from rgpt.config import StandinParams
    from rgpt.data.formats import read_split
    from rgpt.embedded.standin import StandinVLM

    params = StandinParams(corrupt_share=0.0, error_share=0.0, slow_share=0.0, latency_s=latency)
    with StandinVLM(read_split(root, "v3det", "train"), root, context=0.5, params=params) as vlm:
        queue.put(vlm.url)
        stop.wait()


async def measure(url: str, messages: list, concurrency: int, n: int) -> tuple[float, object]:
    from rgpt.recap.client import ChatClient, ClientConfig

    config = ClientConfig(base_url=url, model="standin", concurrency=concurrency, max_retries=0, timeout_s=60)
    async with ChatClient(config) as client:
        await asyncio.gather(*(client.complete(messages[i % len(messages)]) for i in range(min(n, concurrency))))
        client.counters.api_calls = 0  # the warm-up opened the connections; count from here
        started = time.perf_counter()
        await asyncio.gather(*(client.complete(messages[i % len(messages)]) for i in range(n)))
        return time.perf_counter() - started, client.counters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.1, help="the stand-in's fixed latency, seconds")
    parser.add_argument("--rounds", type=int, default=4, help="requests per level = rounds x concurrency (>= 20)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    args = parser.parse_args()

    from rgpt.data.formats import read_split
    from rgpt.embedded.synthetic.corpus import write_corpus
    from rgpt.recap.client import user_message
    from rgpt.recap.images import png_data_url

    from conftest import small_synthetic_params

    with tempfile.TemporaryDirectory() as tmp:
        write_corpus(tmp, small_synthetic_params(), progress=False)
        records = read_split(tmp, "v3det", "train").records
        # encoded once: the benchmark measures the HTTP client, not PNG encoding
        messages = [user_message("Describe the image in detail.", png_data_url(Image.open(Path(tmp) / r.file_name)))
                    for r in records]
        ctx = mp.get_context("spawn")
        queue, stop = ctx.Queue(), ctx.Event()
        server = ctx.Process(target=serve, args=(tmp, args.latency, queue, stop), daemon=True)
        server.start()
        try:
            url = queue.get(timeout=120)
            print(f"stand-in latency {args.latency} s, no faults; machine: {mp.cpu_count()} CPUs, "
                  f"Python {platform.python_version()}")
            print(f"{'concurrency':>11} {'requests':>9} {'time s':>8} {'req/s':>8} {'ideal req/s':>12} "
                  f"{'x ideal':>8} {'x conc 1':>9}")
            base = None
            for concurrency in args.concurrency:
                n = max(20, args.rounds * concurrency)
                elapsed, counters = asyncio.run(measure(url, messages, concurrency, n))
                assert counters.api_calls == n and not counters.failures, counters
                rate, ideal = n / elapsed, concurrency / args.latency
                base = base or rate
                print(f"{concurrency:>11} {n:>9} {elapsed:>8.2f} {rate:>8.1f} {ideal:>12.1f} {rate / ideal:>8.3f} "
                      f"{rate / base:>9.2f}")
        finally:
            stop.set()
            server.join(timeout=10)


if __name__ == "__main__":
    main()
