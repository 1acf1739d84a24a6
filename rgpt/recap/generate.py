"""The two-stage RecapD protocol (paper Sec. 3.3) over one shard of images, resumable.

Stage one asks the VLM for a global caption of each image with a drawn global prompt; stage two
sends, per region, the crop of its box enlarged by `context` on each side (clipped to the image)
with a drawn region prompt that holds the global caption and the human class name.

Prompt variants are drawn from a hash of (seed, stage, dataset, image id[, region id]): a
region's prompt never depends on which other images are in its shard or in what order they
are processed. The drawn indices are recorded in every output record.

One shard writes one file, `<work_dir>/shard-<index>.jsonl`. While it runs, each record is
appended to `shard-<index>.jsonl.partial` as soon as it is known (flushed per line); at the end
the partial file is compacted (last record per region) and atomically renamed to the final name.
A killed run leaves the partial file, possibly with a truncated last line, which the next run
repairs and resumes from: regions already captioned are kept and not asked again; the others
(failed or never reached) are asked, and answers the cache already holds cost no call. Output
record per region::

    {"dataset", "split", "image_id", "region_id", "file_name", "box", "crop_box", "class_name",
     "status": "ok" | "failed", "caption" (null when failed), "reason" (failed only),
     "global_caption", "global_prompt": <index>, "region_prompt": <index>, "model", "context"}
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from PIL import Image
from tqdm import tqdm

from ..data.records import ImageRecord, Region, read_jsonl, resume_jsonl, write_jsonl
from ..data.templates import RecapPrompts, load_recap_prompts
from .cache import ResponseCache, request_key
from .client import ChatClient, ClientConfig, Counters, RequestFailed, user_message
from .images import crop_box, crop_region, pixel_hash, png_data_url

RECORD_KEYS = ("dataset", "split", "image_id", "region_id", "file_name", "box", "crop_box", "class_name", "status",
               "caption", "global_caption", "global_prompt", "region_prompt", "model", "context")


@dataclass(frozen=True)
class ShardJob:
    """What every shard of one run shares (picklable, so dask/ray workers can receive it)."""

    data_root: Path
    work_dir: Path  # shard files live here
    cache_path: Path  # the sqlite response cache
    client: ClientConfig
    seed: int
    context: float
    progress: bool = True


@dataclass(frozen=True)
class Shard:
    index: int
    records: list[ImageRecord]

    @property
    def regions(self) -> int:
        return sum(len(r.regions) for r in self.records)


@dataclass
class ShardResult:
    index: int
    path: Path  # the finalised shard file
    regions: int
    ok: int
    failed: int
    counters: dict[str, Any] = field(default_factory=dict)  # this run's client counters (Counters.to_dict)


def draw_variant(seed: int, stage: str, dataset: str, image_id: Any, region_id: int | None, n: int) -> int:
    """The prompt variant for one image (stage 'global') or region (stage 'region'): a pure function of its identity."""
    digest = hashlib.sha256(json.dumps([seed, stage, dataset, image_id, region_id]).encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def request_seed(seed: int, dataset: str, image_id: Any, region_id: int | None) -> int:
    """The `seed` sent with a request (vLLM and OpenAI honour it): same region, same answer."""
    digest = hashlib.sha256(json.dumps([seed, "request", dataset, image_id, region_id]).encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def shard_paths(work_dir: Path, index: int) -> tuple[Path, Path]:
    final = Path(work_dir) / f"shard-{index:05d}.jsonl"
    return final, final.with_name(final.name + ".partial")


# ------------------------------------------------------------------------------ resumable output


def _append(out: TextIO, row: dict[str, Any]) -> None:
    out.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    out.flush()  # a kill loses at most the line being written


def _region_key(row: dict[str, Any]) -> tuple[str, str, int]:
    return str(row["dataset"]), str(row["image_id"]), int(row["region_id"])


# ------------------------------------------------------------------------------- the two stages


@dataclass
class _Prepared:
    """An image and its region crops, as the VLM gets them."""

    url: str
    pixels: str  # pixel hash of the whole image
    crops: dict[int, tuple[str, str, tuple[int, int, int, int]]]  # region id -> (data URL, pixel hash, crop box)


def prepare_image(record: ImageRecord, regions: list[Region], data_root: Path, context: float) -> _Prepared:
    path = Path(data_root) / record.file_name
    try:
        with Image.open(path) as raw:
            image = raw.convert("RGB")
    except OSError as e:
        raise RequestFailed("image_unreadable", f"{record.key}: cannot read {path} ({e})") from None
    crops = {}
    for region in regions:
        crop = crop_region(image, region.box, context)
        crops[region.id] = (png_data_url(crop), pixel_hash(crop), crop_box(region.box, image.width, image.height,
                                                                           context))
    return _Prepared(png_data_url(image), pixel_hash(image), crops)


class _ShardRunner:
    def __init__(self, job: ShardJob, client: ChatClient, prompts: RecapPrompts, out: TextIO, bar: tqdm):
        self.job, self.client, self.prompts, self.out, self.bar = job, client, prompts, out, bar
        self.ok = self.failed = 0
        self.images_in_flight = asyncio.Semaphore(2 * job.client.concurrency)  # bounds decoded images in memory

    def _write(self, row: dict[str, Any]) -> None:
        _append(self.out, row)  # the event loop is single-threaded: lines never interleave
        self.ok += row["status"] == "ok"
        self.failed += row["status"] != "ok"
        self.bar.update(1)

    def _base(self, record: ImageRecord, region: Region) -> dict[str, Any]:
        return {"dataset": record.dataset, "split": record.split, "image_id": record.image_id, "region_id": region.id,
                "file_name": record.file_name, "box": region.box, "class_name": region.category,
                "model": self.job.client.model, "context": self.job.context}

    def _fail(self, record: ImageRecord, regions: list[Region], reason: str, detail: str, **extra: Any) -> None:
        for region in regions:
            self._write({**self._base(record, region), "crop_box": None, "global_caption": None,
                         "global_prompt": None, "region_prompt": None, **extra, "status": "failed",
                         "caption": None, "reason": reason, "detail": detail})

    async def image(self, record: ImageRecord, regions: list[Region]) -> None:
        async with self.images_in_flight:
            try:
                prepared = await asyncio.to_thread(prepare_image, record, regions, self.job.data_root,
                                                   self.job.context)
            except RequestFailed as e:
                self._fail(record, regions, e.reason, e.detail)
                return
            cfg, n_global = self.job.client, len(self.prompts.global_)
            g_index = draw_variant(self.job.seed, "global", record.dataset, record.image_id, None, n_global)
            prompt = self.prompts.global_[g_index]
            key = request_key(pixels=prepared.pixels, region=None, prompt=prompt, model=cfg.model,
                              max_tokens=cfg.max_tokens, temperature=cfg.temperature)
            try:
                answer = await self.client.complete(user_message(prompt, prepared.url), key,
                                                    request_seed(self.job.seed, record.dataset, record.image_id, None))
            except RequestFailed as e:
                self._fail(record, regions, f"global_{e.reason}", e.detail, global_prompt=g_index)
                return
            await asyncio.gather(*(self.region(record, r, prepared, answer.text, g_index) for r in regions))

    async def region(self, record: ImageRecord, region: Region, prepared: _Prepared, global_caption: str,
                     g_index: int) -> None:
        cfg = self.job.client
        r_index = draw_variant(self.job.seed, "region", record.dataset, record.image_id, region.id,
                               len(self.prompts.region))
        prompt = self.prompts.region_prompt(r_index, global_caption, region.category)
        url, pixels, window = prepared.crops[region.id]
        key = request_key(pixels=pixels, region=[region.id, region.box], prompt=prompt, model=cfg.model,
                          max_tokens=cfg.max_tokens, temperature=cfg.temperature)
        row = {**self._base(record, region), "crop_box": list(window), "global_caption": global_caption,
               "global_prompt": g_index, "region_prompt": r_index}
        try:
            answer = await self.client.complete(user_message(prompt, url), key,
                                                request_seed(self.job.seed, record.dataset, record.image_id, region.id))
        except RequestFailed as e:
            self._write({**row, "status": "failed", "caption": None, "reason": e.reason, "detail": e.detail})
            return
        self._write({**row, "status": "ok", "caption": answer.text.strip()})


def caption_shard(shard: Shard, job: ShardJob) -> ShardResult:
    """Caption every region of the shard's images (resuming from an earlier partial run); returns
    where the finalised shard file is and what this run did."""
    final, partial = shard_paths(job.work_dir, shard.index)
    if final.exists():  # finished by an earlier run: done, unless some regions failed there
        rows = list(read_jsonl(final))
        if all(r["status"] == "ok" for r in rows):
            return ShardResult(shard.index, final, len(rows), len(rows), 0, Counters().to_dict())
        os.replace(final, partial)  # ask again for the failed ones only
    final.parent.mkdir(parents=True, exist_ok=True)
    done = {_region_key(r) for r in resume_jsonl(partial) if r["status"] == "ok"}
    todo = [(record, [g for g in record.regions if (record.dataset, str(record.image_id), g.id) not in done])
            for record in shard.records]
    todo = [(record, regions) for record, regions in todo if regions]
    counters = asyncio.run(_run(shard, job, todo, partial, initial=len(done)))
    rows = _compact(resume_jsonl(partial), shard)
    write_jsonl(final, rows)  # a temporary file renamed: the final file is whole or absent
    partial.unlink()
    ok = sum(r["status"] == "ok" for r in rows)
    return ShardResult(shard.index, final, len(rows), ok, len(rows) - ok, counters.to_dict())


async def _run(shard: Shard, job: ShardJob, todo: list[tuple[ImageRecord, list[Region]]], partial: Path,
               initial: int) -> Counters:
    prompts = load_recap_prompts()
    with ResponseCache(job.cache_path) as cache, open(partial, "a", encoding="utf-8") as out, \
            tqdm(total=shard.regions, initial=initial, desc=f"recap shard {shard.index}", unit="region",
                 position=shard.index, leave=True,
                 disable=not job.progress) as bar:
        async with ChatClient(job.client, cache) as client:
            runner = _ShardRunner(job, client, prompts, out, bar)
            await asyncio.gather(*(runner.image(record, regions) for record, regions in todo))
            return client.counters


def _compact(rows: list[dict[str, Any]], shard: Shard) -> list[dict[str, Any]]:
    """One record per region of the shard, in the shard's order: the last one written for it."""
    last = {_region_key(r): r for r in rows}
    out = []
    for record in shard.records:
        for region in record.regions:
            key = (record.dataset, str(record.image_id), region.id)
            if key not in last:
                raise RuntimeError(f"shard {shard.index}: region {region.id} of {record.key} got no record; "
                                   "this is a bug in the generator")
            out.append(last[key])
    return out
