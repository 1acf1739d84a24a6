"""The dvc stage `recap`: RecapD captions for the balanced V3Det fine-tuning split (paper Sec. 3.3).

Reads outputs/balance/v3det_finetune.jsonl, cuts its images into `recap.shards` shards, captions
each shard (`generate.caption_shard`, one Prefect task per shard in flows/recap.py) and writes:

  outputs/recap/captions.jsonl          one record per captioned region (generate.py's schema;
                                        conversations reads dataset, split, image_id, region_id, caption)
  outputs/recap/failures.jsonl          one record per region given up on, with its reason
  outputs/recap/corruption_truth.jsonl  (stand-in only) which answers were corrupted on purpose
  reports/recap/metrics.json            counts, API calls, tokens, retries, failures, cache hits, words

`recap.endpoint: standin` starts the embedded stand-in VLM for the duration of the run. Every
shard gets an equal share of the request budget (concurrency, requests and tokens per minute),
so the shards together keep to `recap.*` wherever the task runner puts them. Shard progress and
the response cache live under `recap.cache` (outside dvc's outputs, which dvc deletes before a
rerun), so a killed or repeated run resumes and pays for nothing twice.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from ..config import Params, RecapParams
from ..data.records import DatasetSplit, ImageRecord, read_jsonl, write_jsonl
from ..paths import BALANCED, CAPTIONS, FAILURES, TRUTH, VALIDATED, stage_reports
from ..reports import write_json
from ..tracking import StageResult
from .cache import request_key
from .client import ClientConfig, Counters
from .generate import Shard, ShardJob, ShardResult, caption_shard
from .stats import summary, word_counts

RECAP_REPORTS = stage_reports("recap")
METRICS = RECAP_REPORTS / "metrics.json"
INPUT_SPLIT = "v3det_finetune"

MapShards = Callable[[ShardJob, list[Shard]], list[ShardResult]]


class RecapFailureGate(RuntimeError):
    """More regions failed than recap.max_failure_ratio allows."""


def make_shards(records: list[ImageRecord], n: int) -> list[Shard]:
    """`n` contiguous, near-equal shards of the images (fewer when there are fewer images)."""
    n = max(1, min(n, len(records)))
    size = math.ceil(len(records) / n) if records else 0
    return [Shard(i, records[i * size:(i + 1) * size]) for i in range(n) if records[i * size:(i + 1) * size]]


def client_config(p: RecapParams, base_url: str, shards: int) -> ClientConfig:
    """One shard's client: its equal share of the run's concurrency and per-minute budgets."""
    share = lambda v: None if v is None else v / shards  # noqa: E731
    return ClientConfig(base_url=base_url, model=p.model, api_key_env=p.api_key_env,
                        concurrency=max(1, math.ceil(p.concurrency / shards)),
                        requests_per_minute=share(p.requests_per_minute), tokens_per_minute=share(p.tokens_per_minute),
                        max_retries=p.max_retries, timeout_s=p.timeout_s, max_tokens=p.max_tokens,
                        temperature=p.temperature)


def thread_map(job: ShardJob, shards: list[Shard]) -> list[ShardResult]:
    """Run the shards in threads (each runs its own event loop): the default outside Prefect."""
    with ThreadPoolExecutor(max_workers=len(shards) or 1, thread_name_prefix="recap-shard") as pool:
        return list(pool.map(lambda shard: caption_shard(shard, job), shards))


def task_runner(p: RecapParams):
    """The Prefect task runner recap.task_runner names; dask and ray are optional installs."""
    if p.task_runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=p.shards)
    package, cls = {"dask": ("prefect_dask", "DaskTaskRunner"), "ray": ("prefect_ray", "RayTaskRunner")}[p.task_runner]
    try:
        module = __import__(package)
    except ImportError:
        raise ImportError(f"params.yaml recap.task_runner: {p.task_runner} needs the {package.replace('_', '-')} "
                          f"package: pip install {package.replace('_', '-')} (or set task_runner: threads)") from None
    return getattr(module, cls)()


def fingerprint(p: RecapParams, records: list[ImageRecord]) -> str:
    """What the shard files depend on: a change discards them (the response cache still saves the calls)."""
    generation = p.model_dump(mode="json", include={"seed", "endpoint", "model", "max_tokens", "temperature",
                                                    "context", "shards"})
    if p.endpoint == "standin":
        generation["standin"] = p.standin.model_dump(mode="json", include={"corrupt_share"})
    return request_key(generation=generation, images=[r.key for r in records],
                       regions=[[g.id for g in r.regions] for r in records])


def _prepare_work_dir(work_dir: Path, stamp: str) -> None:
    manifest = work_dir / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("fingerprint") != stamp:
        shutil.rmtree(work_dir)  # other params or other images: the old shard files do not apply
    work_dir.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"fingerprint": stamp}))


def run_recap(params: Params, *, map_shards: MapShards = thread_map, gate: bool = True,
              progress: bool = True) -> StageResult:
    """Caption the balanced V3Det fine-tuning regions; writes the outputs and the metrics, then checks
    the failure gate (gate=False: the caller checks it with `check_gate` after logging)."""
    p = params.recap
    split = DatasetSplit.load(BALANCED, INPUT_SPLIT)
    shards = make_shards(split.records, p.shards)
    work_dir = Path(p.cache) / "shards"
    _prepare_work_dir(work_dir, fingerprint(p, split.records))
    started = time.perf_counter()
    with _endpoint(params, split, progress) as (base_url, standin):
        job = ShardJob(Path(params.data.root), work_dir, Path(p.cache) / "responses.sqlite",
                       client_config(p, base_url, len(shards)), p.seed, p.context, progress)
        results = map_shards(job, shards)
        standin_stats = None
        if standin is not None:
            standin.write_truth(TRUTH)
            standin_stats = {"requests": dict(standin.requests),
                             "corrupted": Counter(standin.corruption(r.image_id, g.id)
                                                  for r in split.records for g in r.regions)}
    rows = [row for result in sorted(results, key=lambda r: r.index) for row in read_jsonl(result.path)]
    write_jsonl(CAPTIONS, (r for r in rows if r["status"] == "ok"))
    write_jsonl(FAILURES, (r for r in rows if r["status"] != "ok"))
    metrics = recap_metrics(rows, results, time.perf_counter() - started, standin_stats)
    write_json(METRICS, metrics)
    result = StageResult(metrics, {"metrics.json": METRICS, "failures.jsonl": FAILURES})
    if gate:
        check_gate(metrics, p.max_failure_ratio)
    return result


class _endpoint:
    """The base URL to talk to: the configured one, or a stand-in started for the run."""

    def __init__(self, params: Params, split: DatasetSplit, progress: bool):
        self.params, self.split, self.progress = params, split, progress
        self.standin = None

    def __enter__(self) -> tuple[str, Any]:
        p = self.params.recap
        if p.endpoint != "standin":
            return p.endpoint, None
        from ..embedded.standin import StandinVLM

        # all of V3Det train's regions when validate wrote them, so global captions describe every object
        known = (DatasetSplit.load(VALIDATED, "v3det_train")
                 if (VALIDATED / "v3det_train.meta.json").exists() else self.split)
        self.standin = StandinVLM(known, self.params.data.root, context=p.context, params=p.standin, seed=p.seed,
                                  progress=self.progress).start()
        return self.standin.url, self.standin

    def __exit__(self, *exc) -> None:
        if self.standin is not None:
            self.standin.stop()


def recap_metrics(rows: list[dict[str, Any]], results: list[ShardResult], wall_s: float,
                  standin: dict[str, Any] | None) -> dict[str, Any]:
    ok = [r for r in rows if r["status"] == "ok"]
    counters = sum((Counters.from_dict(r.counters) for r in results), Counters())
    metrics = {
        "images": len({(r["dataset"], str(r["image_id"])) for r in rows}),
        "regions": len(rows), "captioned": len(ok), "failed": len(rows) - len(ok),
        "failure_ratio": round((len(rows) - len(ok)) / len(rows), 6) if rows else 0.0,
        "failures_by_reason": dict(sorted(Counter(r["reason"] for r in rows if r["status"] != "ok").items())),
        "client": counters.to_dict(),  # this run's calls: a resumed or repeated run shows only what it paid
        "words_per_caption": summary(word_counts(ok)),
        "prompt_variants": {"global": _histogram(r["global_prompt"] for r in ok),
                            "region": _histogram(r["region_prompt"] for r in ok)},
        "shards": len(results), "wall_s": round(wall_s, 2),
    }
    if standin is not None:
        corrupted = standin["corrupted"]
        total = sum(corrupted.values())
        metrics["standin"] = {"requests": standin["requests"],
                              "corrupted": {str(k): v for k, v in corrupted.items() if k is not None},
                              "corrupted_share": round(1 - corrupted.get(None, 0) / total, 4) if total else 0.0}
    return metrics


def _histogram(values) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(values).items())}


def check_gate(metrics: dict[str, Any], max_failure_ratio: float, failures: Path = FAILURES) -> None:
    if metrics["failure_ratio"] > max_failure_ratio:
        raise RecapFailureGate(
            f"recap: {metrics['failed']} of {metrics['regions']} regions got no caption "
            f"({metrics['failure_ratio']:.2%} > recap.max_failure_ratio {max_failure_ratio:.2%}); reasons "
            f"{metrics['failures_by_reason']}; each one is in {failures}. Check the endpoint, or raise "
            "recap.max_retries / recap.timeout_s; a rerun resumes and pays only for the failed regions")
