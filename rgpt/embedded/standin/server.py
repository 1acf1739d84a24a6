"""The stand-in VLM's HTTP server: a real OpenAI-compatible endpoint on loopback.

`StandinVLM(splits, data_root, context=...)` serves `POST /v1/chat/completions` and
`GET /v1/models` on 127.0.0.1 at a port the OS picks, from a background thread:

    with StandinVLM(split, "data", context=0.5, params=params.recap.standin) as vlm:
        ChatClient(ClientConfig(base_url=vlm.url, model="rgpt-standin-vlm"))

At start-up it decodes every image under the data root and hashes its RGB pixels and the crop of
every region exactly as the generator makes it (`images.crop_region` with the same `context`; a
different `context` makes every crop unknown: HTTP 400). A request whose image is a whole image
gets a global caption (stage one); one whose text follows a region prompt template
(`recap_region.txt`) gets a caption of that crop's region built from the class name and the
global caption *in the prompt* (stage two). On purpose, it also misbehaves:
- it corrupts `corrupt_share` of the region answers (`corruption.py`, with a known truth:
  `corruption(image_id, region_id)`, `write_truth(path)`);
- it answers `error_share` of requests with 429 + Retry-After, and `slow_share` after
  `slow_latency_s`, decided from (seed, request, attempt number) so a retry draws again;
- every answer waits `latency_s` (the client benchmark's fixed latency);
- tests script faults for the next requests: `fail_next(n, status)`, `stall_next(n, seconds)`.
Usage counts tokens as whitespace-separated words (+576 per image, LLaVA-1.5's image tokens).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import threading
from collections import Counter, deque
from pathlib import Path
from typing import Any, Iterable

from aiohttp import web
from PIL import Image
from tqdm import tqdm

from ...config import StandinParams
from ...data.records import DatasetSplit, ImageRecord, write_jsonl
from ...data.templates import CLASS_NAME, GLOBAL_CAPTION, load_recap_prompts
from ...recap.client import IMAGE_TOKENS
from ...recap.images import crop_region, decode_data_url, pixel_hash
from .captions import global_caption
from .corruption import corruption, region_answer
from .scenes import KnownImage, known_image, seeded_rng, seeded_unit

MODEL_ID = "rgpt-standin-vlm"


class StandinVLM:
    """The stand-in VLM over the given records' images; a context manager that runs its HTTP server."""

    def __init__(self, splits: DatasetSplit | Iterable[DatasetSplit], data_root: str | Path, *, context: float,
                 params: StandinParams, seed: int = 0, progress: bool = False):
        self.params, self.seed, self.context = params, seed, context
        self.data_root = Path(data_root)
        self.scenes: dict[Any, KnownImage] = {}  # image id -> what it knows about the image
        self.images: dict[str, Any] = {}  # pixel hash -> image id
        self.crops: dict[str, list[tuple[Any, int]]] = {}  # crop pixel hash -> [(image id, region id)]
        records = [r for s in ([splits] if isinstance(splits, DatasetSplit) else splits) for r in s.records]
        for record in tqdm(records, desc="stand-in: indexing images", disable=not progress):
            self._index(record)
        self._region_prompts = [_template_regex(t) for t in load_recap_prompts().region]
        self.requests: Counter = Counter()  # kind -> count: global, region, error_429, slow, scripted, rejected
        self.region_requests: Counter = Counter()  # (image id, region id) -> region captions answered
        self._seen: Counter = Counter()  # request digest -> attempts so far
        self._script: deque[tuple[str, float]] = deque()  # scripted faults for the next requests
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port: int | None = None

    def _index(self, record: ImageRecord) -> None:
        if record.image_id in self.scenes:
            raise ValueError(f"{record.key} ({record.file_name}): image id {record.image_id} appears twice in the "
                             "records given to the stand-in; give it one dataset's records")
        path = self.data_root / record.file_name
        with Image.open(path) as raw:
            image = raw.convert("RGB")
        scene = known_image(record, image)
        for region in record.regions:
            self.crops.setdefault(pixel_hash(crop_region(image, region.box, self.context)), []).append(
                (record.image_id, region.id))
        self.scenes[record.image_id] = scene
        self.images[pixel_hash(image)] = record.image_id

    # ---------------------------------------------------------------------- the corruption truth

    def corruption(self, image_id: Any, region_id: int) -> str | None:
        """How this region's answer is corrupted (one of CORRUPTIONS), or None when it is truthful."""
        scene = self.scenes.get(image_id)
        if scene is None:
            raise KeyError(f"the stand-in knows no image {image_id!r}")
        return corruption(scene, image_id, region_id, seed=self.seed, share=self.params.corrupt_share)

    def truth(self) -> list[dict[str, Any]]:
        return [{"dataset": s.record.dataset, "split": s.record.split, "image_id": image_id,
                 "region_id": o.region_id, "corruption": self.corruption(image_id, o.region_id)}
                for image_id, s in self.scenes.items() for o in s.objects]

    def write_truth(self, path: str | Path) -> Path:
        """One JSON line per region: dataset, split, image_id, region_id, corruption (null: truthful)."""
        write_jsonl(path, self.truth())
        return Path(path)

    # --------------------------------------------------------------------- scripted faults (tests)

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next `n` requests with this HTTP status (429s carry Retry-After)."""
        with self._lock:
            self._script.extend([("status", float(status))] * n)

    def stall_next(self, n: int, seconds: float) -> None:
        """Answer the next `n` requests only after `seconds` (longer than the client's timeout: a timeout)."""
        with self._lock:
            self._script.extend([("stall", seconds)] * n)

    # ------------------------------------------------------------------------------ answering

    def answer(self, body: dict[str, Any]) -> tuple[str, str]:
        """The caption for a chat-completions request body, and the prompt's text; ValueError (-> 400)
        when it cannot tell what to do."""
        text, image = _last_user_turn(body)
        return self._caption(text, image, body), text

    def _caption(self, text: str, image: Image.Image, body: dict[str, Any]) -> str:
        digest = pixel_hash(image)
        for regex in self._region_prompts:
            match = regex.fullmatch(text)
            if match:
                return self._region_answer(digest, match["caption"], match["name"], body)
        image_id = self.images.get(digest)
        if image_id is None:
            raise ValueError(f"unknown image (pixel sha256 {digest[:16]}..., {image.width}x{image.height}): the "
                             "stand-in identifies images by the hash of their decoded RGB pixels, and this one is "
                             "none of the images it was built with. Build it with the same records and data root "
                             "as the generator")
        self.requests["global"] += 1
        return global_caption(self.scenes[image_id], seeded_rng(self.seed, "global", image_id, text, body.get("seed")))

    def _region_answer(self, digest: str, context_caption: str, class_name: str, body: dict[str, Any]) -> str:
        candidates = self.crops.get(digest)
        if not candidates:
            raise ValueError(f"unknown region crop (pixel sha256 {digest[:16]}...): no region's crop with context "
                             f"{self.context} has these pixels; the generator must crop with the same `context` "
                             "as the stand-in (recap.context)")
        # identical crops of two regions: the class name in the prompt tells them apart
        image_id, region_id = next(((i, r) for i, r in candidates
                                    if self.scenes[i].object(r).name == class_name), candidates[0])
        with self._lock:
            self.region_requests[(image_id, region_id)] += 1
        self.requests["region"] += 1
        rng = seeded_rng(self.seed, "region", image_id, region_id, context_caption, class_name, body.get("seed"))
        return region_answer(self.scenes[image_id], region_id, class_name, context_caption,
                             self.corruption(image_id, region_id), rng)

    async def _fault(self, body: dict[str, Any], raw: bytes) -> web.Response | None:
        """A scripted or drawn fault for this request, or None; slow answers just wait here."""
        with self._lock:
            scripted = self._script.popleft() if self._script else None
            request = hashlib.sha256(raw).hexdigest()
            attempt = self._seen[request]
            self._seen[request] += 1
        retry_after = {"Retry-After": f"{self.params.retry_after_s:g}"}
        if scripted is not None:
            self.requests["scripted"] += 1
            kind, value = scripted
            if kind == "stall":
                await asyncio.sleep(value)
                return None
            return web.json_response({"error": {"message": f"scripted fault {int(value)}"}}, status=int(value),
                                     headers=retry_after if value == 429 else None)
        if seeded_unit(self.seed, "error", request, attempt) < self.params.error_share:
            self.requests["error_429"] += 1
            return web.json_response({"error": {"message": "rate limit reached (stand-in)", "type": "rate_limit"}},
                                     status=429, headers=retry_after)
        if seeded_unit(self.seed, "slow", request, attempt) < self.params.slow_share:
            self.requests["slow"] += 1
            await asyncio.sleep(self.params.slow_latency_s)
        return None

    async def _chat(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if request.headers.get("Authorization", "").startswith("Bearer "):
            self.requests["authorized"] += 1  # counted, never stored: tests check a key was sent
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "the request body is not JSON")
        if self.params.latency_s:
            await asyncio.sleep(self.params.latency_s)
        fault = await self._fault(body, raw)
        if fault is not None:
            return fault
        try:
            caption, text = self.answer(body)
        except ValueError as e:
            self.requests["rejected"] += 1
            return _error(400, str(e))
        words = caption.split()
        limit = int(body.get("max_tokens") or len(words))
        finish = "length" if len(words) > limit else "stop"
        caption = " ".join(words[:limit])
        prompt_tokens = len(text.split()) + IMAGE_TOKENS
        completion_tokens = len(caption.split())
        return web.json_response({
            "id": "chatcmpl-" + hashlib.sha256(raw).hexdigest()[:24], "object": "chat.completion",
            "model": body.get("model", MODEL_ID),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": caption}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL_ID, "object": "model",
                                                              "owned_by": "rgpt"}]})

    # ------------------------------------------------------------------------- start and stop

    @property
    def url(self) -> str:
        """The base URL clients use (…/v1)."""
        if self.port is None:
            raise RuntimeError("the stand-in is not running: use it as a context manager or call start()")
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> StandinVLM:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # the OS picks a free port
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready, failed = threading.Event(), []

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            runner = web.AppRunner(app, access_log=None)
            try:
                self._loop.run_until_complete(runner.setup())
                self._loop.run_until_complete(web.SockSite(runner, sock, backlog=1024).start())
            except Exception as e:  # noqa: BLE001 - reported to the starting thread
                failed.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="rgpt-standin-vlm", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            raise RuntimeError(f"the stand-in VLM could not start: {failed[0]}") from failed[0]
        return self

    def stop(self) -> None:
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._thread, self.port = None, None

    def __enter__(self) -> StandinVLM:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _template_regex(template: str) -> re.Pattern:
    """A region prompt template as a regex that captures the global caption and the class name."""
    pattern = re.escape(template).replace(re.escape(GLOBAL_CAPTION), "(?P<caption>.+)")
    return re.compile(pattern.replace(re.escape(CLASS_NAME), "(?P<name>.+?)"), re.DOTALL)


def _last_user_turn(body: dict[str, Any]) -> tuple[str, Image.Image]:
    """The text and the image of the request's last user message; ValueError when either is missing."""
    messages = body.get("messages") or []
    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        raise ValueError("the request has no user message")
    content = users[-1].get("content")
    parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
    texts = [p.get("text", "") for p in parts if p.get("type") == "text"]
    urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
    if len(urls) != 1:
        raise ValueError(f"the last user message must hold exactly one image_url part, got {len(urls)}")
    return " ".join(texts).strip(), decode_data_url(urls[0])


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=status)
