"""RecapD: the real client against the real stand-in VLM on loopback, the two-stage generator,
the cache, resume after a kill, retries, the failure gate and the stand-in's corruption truth."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from rgpt.config import load_params
from rgpt.data.formats import read_split
from rgpt.data.records import DatasetSplit, read_jsonl, resume_jsonl
from rgpt.data.templates import load_recap_prompts, parse_recap_templates
from rgpt.embedded.standin import CORRUPTIONS, StandinVLM
from rgpt.recap.cache import ResponseCache
from rgpt.recap.client import ChatClient, ClientConfig, RequestFailed, TokenBucket, user_message
from rgpt.recap.generate import Shard, ShardJob, caption_shard, draw_variant, shard_paths
from rgpt.recap.images import png_data_url

from conftest import REPO, embedded

QUIET = embedded("recap.standin", corrupt_share=0.2, error_share=0.0, slow_share=0.0)  # no injected faults


@pytest.fixture(scope="module")
def v3det(corpus) -> DatasetSplit:
    """V3Det train of the session corpus: 60 images, ~230 regions."""
    return read_split(corpus, "v3det", "train")


def _job(corpus, tmp_path, url, **client) -> ShardJob:
    cfg = ClientConfig(base_url=url, model="standin", **{"concurrency": 8, "max_retries": 3, "timeout_s": 10,
                                                        "backoff_base_s": 0.01, **client})
    return ShardJob(corpus, tmp_path / "work", tmp_path / "cache.sqlite", cfg, seed=0, context=0.5, progress=False)


def _rows(path) -> list[dict]:
    return list(read_jsonl(path))


# ------------------------------------------------------------------------------------- prompts


def test_recap_prompts_are_ten_per_stage_and_bad_lines_are_named():
    prompts = load_recap_prompts()
    assert len(prompts.global_) == len(prompts.region) == 10
    assert prompts.global_[0] == "Describe the image in detail."
    filled = prompts.region_prompt(0, "A red circle sits on the left.", "red circle")
    assert filled == ("In the context of the entire image, A red circle sits on the left, describe the red circle "
                      "in the close-up region in detail.")
    good = "\n".join(f"Caption {i}: <GlobalCaption>, now the <ClassName>." for i in range(10))
    assert len(parse_recap_templates(good, "recap_region", "r.txt")) == 10
    bad = good.replace("Caption 3: <GlobalCaption>", "Caption 3: <GlobalCaptoin>")
    with pytest.raises(ValueError, match=r"r\.txt:4: needs 1 <GlobalCaption> and 1 <ClassName>"):
        parse_recap_templates(bad, "recap_region", "r.txt")
    with pytest.raises(ValueError, match="needs 10 prompt variants"):
        parse_recap_templates("\n".join(good.splitlines()[:9]), "recap_region", "r.txt")


def test_prompt_variants_are_drawn_per_identity_and_recorded(corpus, v3det, tmp_path):
    records = v3det.records[:12]
    with StandinVLM(v3det, corpus, context=0.5, params=QUIET) as vlm:
        first = caption_shard(Shard(0, records), _job(corpus, tmp_path / "a", vlm.url))
        # other order, other sharding, no shared cache: the same draws
        second = caption_shard(Shard(5, records[::-1]), _job(corpus, tmp_path / "b", vlm.url))
    by_region = {(r["image_id"], r["region_id"]): r for r in _rows(second.path)}
    region_indices = set()
    for row in _rows(first.path):
        assert row["global_prompt"] == draw_variant(0, "global", "v3det", row["image_id"], None, 10)
        assert row["region_prompt"] == draw_variant(0, "region", "v3det", row["image_id"], row["region_id"], 10)
        other = by_region[(row["image_id"], row["region_id"])]
        assert (other["global_prompt"], other["region_prompt"]) == (row["global_prompt"], row["region_prompt"])
        assert other["caption"] == row["caption"]  # seeded per request: the stand-in answers the same
        region_indices.add(row["region_prompt"])
    assert len(region_indices) >= 6  # the draws do vary
    assert draw_variant(1, "region", "v3det", 1, 1, 10) != draw_variant(2, "region", "v3det", 1, 1, 10) or \
        draw_variant(1, "region", "v3det", 1, 2, 10) != draw_variant(2, "region", "v3det", 1, 2, 10)


# ---------------------------------------------------------------------- captions and the truth


def test_captions_are_long_two_stage_and_name_the_class(corpus, v3det, tmp_path):
    with StandinVLM(v3det, corpus, context=0.5, params=QUIET) as vlm:
        result = caption_shard(Shard(0, v3det.records), _job(corpus, tmp_path, vlm.url))
        truth = {(t["image_id"], t["region_id"]): t["corruption"] for t in vlm.truth()}
        assert vlm.requests["global"] == len(v3det.records)  # stage one: one global caption per image
        assert vlm.requests["region"] == result.regions == sum(len(r.regions) for r in v3det.records)
    rows = _rows(result.path)
    assert result.ok == len(rows) and all(r["status"] == "ok" for r in rows)
    words = [len(r["caption"].split()) for r in rows]
    assert sum(words) / len(words) >= 60 and min(words) >= 50
    truthful = [r for r in rows if truth[(r["image_id"], r["region_id"])] is None]
    assert all(r["class_name"] in r["caption"] for r in truthful)
    # the region prompt carried the global caption: the stand-in quotes its first sentence
    assert all(r["global_caption"].split(". ")[0][1:] in r["caption"] for r in truthful)
    for r in rows:
        kind = truth[(r["image_id"], r["region_id"])]
        opening = r["caption"].split(". ")[0]  # names the region's object (later ones may name its neighbours)
        if kind is None:
            assert r["class_name"] in opening, r
        elif kind in ("wrong_colour", "wrong_object"):
            assert r["class_name"] not in opening, r
        assert set(r) >= {"dataset", "split", "image_id", "region_id", "caption", "class_name", "global_caption",
                          "global_prompt", "region_prompt", "model"}


def test_corruption_truth_is_deterministic_and_near_its_share(corpus, v3det, tmp_path):
    params = embedded("recap.standin", corrupt_share=0.3)
    a = StandinVLM(v3det, corpus, context=0.5, params=params, seed=7)
    b = StandinVLM(v3det, corpus, context=0.5, params=params, seed=7)
    c = StandinVLM(v3det, corpus, context=0.5, params=params, seed=8)
    assert a.truth() == b.truth() and a.truth() != c.truth()
    kinds = [t["corruption"] for t in a.truth()]
    share = sum(k is not None for k in kinds) / len(kinds)
    assert abs(share - 0.3) < 0.08, share  # ~230 regions: 2.7 standard deviations
    assert {k for k in kinds if k} == set(CORRUPTIONS)
    path = a.write_truth(tmp_path / "truth.jsonl")
    assert _rows(path) == a.truth()
    record = v3det.records[0]
    assert a.corruption(record.image_id, record.regions[0].id) == kinds[0]
    with pytest.raises(KeyError, match="no region 999999"):
        a.corruption(record.image_id, 999999)


# ------------------------------------------------------------------------- cache and resume


def test_rerun_is_served_from_the_cache(corpus, v3det, tmp_path):
    records = v3det.records[:10]
    with StandinVLM(v3det, corpus, context=0.5, params=QUIET) as vlm:
        job = _job(corpus, tmp_path, vlm.url)
        first = caption_shard(Shard(0, records), job)
        calls = sum(vlm.requests[k] for k in ("global", "region"))
        before = _rows(first.path)
        first.path.unlink()  # the shard's output gone, the cache kept
        second = caption_shard(Shard(0, records), job)
        assert sum(vlm.requests[k] for k in ("global", "region")) == calls  # the stand-in was not asked again
    assert second.counters["api_calls"] == 0
    assert second.counters["cache_hits"] == len(records) + first.regions
    assert _rows(second.path) == before
    assert len(ResponseCache(tmp_path / "cache.sqlite")) == len(records) + first.regions


KILL_WORKER = """
import json, sys
from pathlib import Path
from rgpt.data.records import DatasetSplit
from rgpt.recap.client import ClientConfig
from rgpt.recap.generate import Shard, ShardJob, caption_shard
url, root, work, splits = sys.argv[1:5]
split = DatasetSplit.load(splits, "v3det_train")
cfg = ClientConfig(base_url=url, model="standin", concurrency=2, max_retries=3, timeout_s=10)
caption_shard(Shard(0, split.records), ShardJob(Path(root), Path(work), Path(work) / "cache.sqlite", cfg, 0, 0.5, False))
"""


def test_a_killed_run_resumes_without_asking_twice_or_losing_a_region(corpus, v3det, tmp_path):
    v3det.save(tmp_path / "splits")
    slow = embedded("recap.standin", corrupt_share=0.2, error_share=0.0, slow_share=0.0, latency_s=0.02)
    work = tmp_path / "work"
    final, partial = shard_paths(work, 0)
    with StandinVLM(v3det, corpus, context=0.5, params=slow) as vlm:
        worker = subprocess.Popen([sys.executable, "-c", KILL_WORKER, vlm.url, str(corpus), str(work),
                                   str(tmp_path / "splits")], env={**os.environ, "PYTHONPATH": str(REPO)})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and worker.poll() is None:
            if partial.exists() and partial.read_bytes().count(b"\n") >= 40:
                break
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        time.sleep(0.3)  # let the server finish the killed worker's requests in flight before counting
        assert not final.exists(), "the worker finished before it was killed; slow the stand-in down"
        with open(partial, "ab") as f:
            f.write(b'{"dataset": "v3det", "split": "tra')  # what a kill mid-write leaves
        done = {(r["image_id"], r["region_id"]) for r in resume_jsonl(partial)}
        assert 40 <= len(done) < sum(len(r.regions) for r in v3det.records)
        asked_before = dict(vlm.region_requests)
        job = ShardJob(corpus, work, work / "cache.sqlite",
                       ClientConfig(base_url=vlm.url, model="standin", concurrency=8), 0, 0.5, False)
        result = caption_shard(Shard(0, v3det.records), job)
        asked_after = dict(vlm.region_requests)
    rows = _rows(result.path)
    keys = [(r["image_id"], r["region_id"]) for r in rows]
    expected = [(rec.image_id, g.id) for rec in v3det.records for g in rec.regions]
    assert keys == expected  # every region exactly once, in order, none lost
    assert all(r["status"] == "ok" for r in rows)
    assert all(asked_after[k] == asked_before[k] for k in done)  # nothing written before the kill was asked again
    assert all(n == 1 for k, n in asked_after.items() if k not in asked_before)  # the rest asked once
    # only a request in flight at the kill (answered, but never received) can have been asked twice
    assert sum(n > 1 for n in asked_after.values()) <= 2  # the killed worker's concurrency
    assert not partial.exists()


def test_a_truncated_last_line_is_repaired(tmp_path):
    path = tmp_path / "shard.jsonl.partial"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": ')
    assert resume_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    path.write_bytes(b'{"a": 1}\n{"a"\n{"a": 3}\n')
    with pytest.raises(ValueError, match=r"shard\.jsonl\.partial:2: broken line"):
        resume_jsonl(path)


# ------------------------------------------------------------------------ retries and limits


def _ask(url: str, image: Image.Image, **client) -> tuple[object, ChatClient]:
    async def go():
        cfg = ClientConfig(base_url=url, model="standin", **{"concurrency": 1, "backoff_base_s": 0.01, **client})
        async with ChatClient(cfg) as c:
            try:
                return await c.complete(user_message("Describe the image in detail.", png_data_url(image))), c
            except RequestFailed as e:
                return e, c
    return asyncio.run(go())


def test_retries_on_429_500_and_timeouts_then_succeeds(corpus, v3det):
    image = Image.open(corpus / v3det.records[0].file_name)
    params = embedded("recap.standin", error_share=0.0, slow_share=0.0, retry_after_s=0.2)
    with StandinVLM(v3det, corpus, context=0.5, params=params) as vlm:
        vlm.fail_next(2, 429)
        vlm.fail_next(1, 500)
        vlm.fail_next(1, 503)
        vlm.stall_next(1, 1.5)
        started = time.monotonic()
        answer, client = _ask(vlm.url, image, max_retries=5, timeout_s=0.5)
        elapsed = time.monotonic() - started
    assert not isinstance(answer, RequestFailed), answer
    assert "objects" in answer.text and answer.usage["completion_tokens"] == len(answer.text.split())
    assert client.counters.api_calls == 6 and client.counters.retries == 5
    assert not client.counters.failures
    assert elapsed >= 2 * 0.2 + 0.5  # two Retry-After waits and one timeout


def test_gives_up_after_max_retries_with_the_reason(corpus, v3det, tmp_path):
    record = v3det.records[0]
    with StandinVLM(v3det, corpus, context=0.5, params=QUIET) as vlm:
        vlm.fail_next(3, 500)  # the global caption's request and its two retries
        result = caption_shard(Shard(0, [record]), _job(corpus, tmp_path, vlm.url, max_retries=2, concurrency=1))
        answer, _ = _ask(vlm.url, Image.new("RGB", (32, 32), "red"))
    rows = _rows(result.path)
    assert result.failed == len(record.regions) and all(r["status"] == "failed" for r in rows)
    assert {r["reason"] for r in rows} == {"global_http_500"} and "after 3 attempts" in rows[0]["detail"]
    assert result.counters["failures"] == {"http_500": 1} and result.counters["api_calls"] == 3
    # a bad request is not retried, and says why
    assert isinstance(answer, RequestFailed) and answer.reason == "http_400" and "unknown image" in answer.detail


def test_api_key_comes_from_the_named_variable_only(corpus, v3det, monkeypatch):
    image = Image.open(corpus / v3det.records[0].file_name)
    with StandinVLM(v3det, corpus, context=0.5, params=QUIET) as vlm:
        _ask(vlm.url, image, api_key_env="RGPT_TEST_KEY")
        assert vlm.requests["authorized"] == 0  # unset: no Authorization header
        monkeypatch.setenv("RGPT_TEST_KEY", "sk-secret-for-test")
        _, client = _ask(vlm.url, image, api_key_env="RGPT_TEST_KEY")
        assert vlm.requests["authorized"] == 1
    assert "sk-secret" not in json.dumps(client.counters.to_dict()) + repr(client.config)


def test_token_bucket_holds_the_rate():
    async def go():
        bucket = TokenBucket(rate=50.0, capacity=5.0)
        started = time.monotonic()
        for _ in range(30):
            await bucket.acquire(1)
        return time.monotonic() - started
    assert asyncio.run(go()) >= (30 - 5) / 50 * 0.95


# ------------------------------------------------------------------------------- the stage


@pytest.fixture()
def stage_dir(tmp_path, monkeypatch, v3det):
    """A working directory holding the balanced fine-tuning split (here: 20 V3Det images)."""
    DatasetSplit(v3det.dataset, v3det.split, v3det.records[:20], v3det.categories).save(
        tmp_path / "outputs/balance", "v3det_finetune")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _params(corpus, **recap):
    params = load_params(REPO / "params.yaml")
    update = {"shards": 3, "standin": QUIET.model_copy(update={"error_share": 0.1}), **recap}
    return params.model_copy(update={"data": params.data.model_copy(update={"root": corpus}),
                                     "recap": params.recap.model_copy(update=update)})


def test_run_recap_writes_captions_failures_truth_and_metrics(stage_dir, corpus):
    from rgpt.recap import stages

    result = stages.run_recap(_params(corpus), progress=False)
    m = result.metrics
    captions = _rows(stages.CAPTIONS)
    assert m["captioned"] == len(captions) == m["regions"] > 0 and m["failed"] == 0 and m["shards"] == 3
    assert m["client"]["retries"] > 0 and m["client"]["api_calls"] == m["images"] + m["regions"] + m["client"]["retries"]
    assert m["words_per_caption"]["mean"] >= 60
    assert _rows(stages.FAILURES) == []
    assert json.loads(stages.METRICS.read_text()) == m
    truth = {(t["image_id"], t["region_id"]) for t in _rows(stages.TRUTH)}
    assert {(c["image_id"], c["region_id"]) for c in captions} <= truth
    from rgpt.data.conversations import load_recapd  # the consumer reads them as they are
    assert len(load_recapd(stages.CAPTIONS)) == len(captions)
    again = stages.run_recap(_params(corpus), progress=False).metrics  # finished shards: nothing to do
    assert again["client"]["api_calls"] == 0 and again["captioned"] == m["captioned"]

    from typer.testing import CliRunner

    from rgpt.cli import app
    out = CliRunner().invoke(app, ["recap", "stats"], terminal_width=120)
    assert out.exit_code == 0, out.output
    assert f"{m['captioned']} of {m['regions']}" in out.output and "words per caption" in out.output


def test_task_runner_choice(monkeypatch):
    from prefect.task_runners import ThreadPoolTaskRunner

    from rgpt.recap import stages

    p = load_params(REPO / "params.yaml").recap
    assert isinstance(stages.task_runner(p), ThreadPoolTaskRunner)
    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # as if prefect-dask were not installed
    with pytest.raises(ImportError, match="pip install prefect-dask"):
        stages.task_runner(p.model_copy(update={"task_runner": "dask"}))


def test_failure_gate_raises_and_names_the_failures(stage_dir, corpus):
    from rgpt.recap import stages

    failing = QUIET.model_copy(update={"error_share": 1.0, "retry_after_s": 0.0})
    with pytest.raises(stages.RecapFailureGate, match=r"> recap.max_failure_ratio 2\.00%.*global_http_429"):
        stages.run_recap(_params(corpus, standin=failing, max_retries=1), progress=False)
    failures = _rows(stages.FAILURES)
    assert failures and {f["reason"] for f in failures} == {"global_http_429"}
    tolerant = stages.run_recap(_params(corpus, standin=failing, max_retries=1, max_failure_ratio=1.0, seed=1),
                                progress=False)
    assert tolerant.metrics["failure_ratio"] == 1.0
