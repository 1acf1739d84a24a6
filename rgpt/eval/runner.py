"""The one evaluation runner: batched generation over a benchmark's questions, with every
prediction appended to a JSON Lines cache as soon as its batch is done, so an interrupted
evaluation resumes where it stopped and a finished one is not generated twice.

A cache belongs to one model and one set of evaluation params (`cache_key`); when either changes,
the old predictions are set aside (`<file>.stale`) and generation starts over.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import Image
from tqdm import tqdm

from ..data.records import resume_jsonl
from ..model.inference import Request, generate_answers
from ..model.modeling_rgpt import RGPTForConditionalGeneration
from ..model.processing_rgpt import RGPTProcessor


@dataclass
class Item:
    """One question to the model and what scoring it needs."""

    id: str  # unique within its benchmark part
    image: str  # file name under the data root
    turns: list[tuple[str, str | None]]  # earlier (question, answer) pairs, then (question, None)
    regions: list[dict[str, Any]] = field(default_factory=list)
    truth: dict[str, Any] = field(default_factory=dict)  # the ground truth, written beside the prediction


def read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """The predictions already made, by id; a last line cut short by a crash is cut off."""
    return {row["id"]: row for row in resume_jsonl(path)}


def open_cache(path: Path, key: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The cache's rows when it was written for `key`; otherwise it is set aside and empty."""
    key_path = path.with_suffix(".key.json")
    if path.exists() and (not key_path.exists() or json.loads(key_path.read_text()) != key):
        path.replace(path.with_suffix(path.suffix + ".stale"))
    path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_text(json.dumps(key, indent=1, sort_keys=True))
    return read_cache(path)


def run(items: Sequence[Item], model: RGPTForConditionalGeneration, processor: RGPTProcessor,
        data_root: str | Path, cache: str | Path, key: dict[str, Any], *, batch_size: int = 16,
        max_new_tokens: int = 32, desc: str = "eval", progress: bool = True) -> list[dict[str, Any]]:
    """Each item's prediction row: {"id", "image", "question", "prediction", "log_prob", "latency_s",
    **truth} (and "history", the earlier turns, in multi-turn conversations), in the items' order;
    generated for the items the cache does not hold yet."""
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{desc}: item ids must be unique; the cache is keyed by them")
    cache = Path(cache)
    done = open_cache(cache, key)
    todo = [item for item in items if item.id not in done]
    with cache.open("a") as out, tqdm(total=len(items), initial=len(items) - len(todo), desc=desc,
                                      disable=not progress, unit="q") as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            requests = [Request(load_image(data_root, item.image), item.turns, item.regions) for item in chunk]
            started = time.perf_counter()
            answers = generate_answers(model, processor, requests, batch_size=len(chunk),
                                       max_new_tokens=max_new_tokens)
            latency = (time.perf_counter() - started) / len(chunk)  # the batch's time, shared out
            for item, answer in zip(chunk, answers):
                row = {"id": item.id, "image": item.image, "question": item.turns[-1][0],
                       "prediction": answer.text, "log_prob": answer.log_prob, "latency_s": latency, **item.truth}
                if len(item.turns) > 1:
                    row["history"] = item.turns[:-1]
                done[item.id] = row
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            bar.update(len(chunk))
    return [done[i] for i in ids]


def load_image(data_root: str | Path, name: str) -> Image.Image:
    path = Path(data_root) / name
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as error:
        raise OSError(f"{path}: cannot read the benchmark image ({error}); check data.root and the data stage") from error


def latency_figures(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean and 95th-percentile seconds per question (each batch's time shared among its questions)."""
    values = sorted(r["latency_s"] for r in rows)
    return {"latency_mean_s": sum(values) / len(values), "latency_p95_s": values[int(0.95 * (len(values) - 1))]}
