"""The embedded stand-in for a VLM endpoint: a real OpenAI-compatible HTTP server on loopback.

`StandinVLM(splits, data_root, context=...)` serves `POST /v1/chat/completions` and
`GET /v1/models` on 127.0.0.1 at a port the OS picks, from a background thread:

    with StandinVLM(split, "data", context=0.5, params=params.recap.standin) as vlm:
        ChatClient(ClientConfig(base_url=vlm.url, model="rgpt-standin-vlm"))

It cannot see. It knows the synthetic scenes from the annotation records it is given (each
region's box and "<colour> <shape>" category) and recognises what it is sent by pixel hash:
at start-up it decodes every image under the data root, hashes its RGB pixels, and hashes the
crop of every region exactly as the generator makes it (`images.crop_region` with the same
`context`; a different `context` makes every crop unknown: HTTP 400). A request whose image is
a whole image gets a global caption (stage one); one whose text follows a region prompt
template (`recap_region.txt`) gets a caption of that crop's region built from the class name and
the global caption *in the prompt* (stage two), as the paper's protocol has the VLM do.

Captions are true of the scene (colour, shape, size, position, neighbours and how they relate),
long (~80-100 words) and varied (sentence templates drawn by a generator seeded from the
request), so the same request always gets the same answer. On purpose, it also misbehaves:
- it corrupts `corrupt_share` of the regions: their caption names the wrong colour, a wrong
  object, or is the caption of another region of the same image. Which regions and how is a
  function of (seed, image id, region id), so the truth is known: `corruption(image_id,
  region_id)`, and `write_truth(path)` for the clip_filter's precision/recall;
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
import random
import re
import socket
import threading
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from aiohttp import web
from PIL import Image
from tqdm import tqdm

from ..config import StandinParams
from ..data.records import DatasetSplit, ImageRecord, write_jsonl
from ..data.synthetic.scene import BACKGROUNDS, COLOURS, PATTERN_WORDS, SHAPES, SIZE_WORDS
from ..data.templates import CLASS_NAME, GLOBAL_CAPTION, load_recap_prompts
from .client import IMAGE_TOKENS
from .images import crop_region, decode_data_url, pixel_hash

MODEL_ID = "rgpt-standin-vlm"
CORRUPTIONS = ("wrong_colour", "wrong_object", "other_region")

SHAPE_FACTS = {
    "circle": "Its outline is one smooth, unbroken curve without a single corner",
    "ellipse": "Its outline is a smooth oval, clearly longer in one direction than the other",
    "square": "It has four straight sides of equal length meeting at four right angles",
    "rectangle": "It has four straight sides, two long and two short, meeting at right angles",
    "triangle": "It has three straight edges that meet at three sharp corners",
    "diamond": "It is a rhombus standing on one of its points, taller than it is wide",
    "pentagon": "It has five straight edges and five evenly spaced corners",
    "hexagon": "It has six straight edges of equal length, like a honeycomb cell",
    "octagon": "It has eight short straight edges, much like a stop sign",
    "star": "It has five pointed arms radiating from a compact centre",
    "cross": "It is made of two equally thick bars crossing at right angles, like a plus sign",
    "arrow": "It is a thick shaft ending in a triangular head that points one way",
}


@dataclass(frozen=True)
class _Object:
    region_id: int
    colour: str | None  # None: the category names no known colour (a real dataset's class)
    shape: str
    size: str
    position: str  # left | right | top | bottom | middle
    box: tuple[float, float, float, float]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}" if self.colour else self.shape


@dataclass(frozen=True)
class _Image:
    record: ImageRecord
    background: str
    objects: tuple[_Object, ...]

    def object(self, region_id: int) -> _Object:
        return next(o for o in self.objects if o.region_id == region_id)


def _unit(*parts: Any) -> float:
    """A number in [0, 1) that is a pure function of the parts: deterministic 'randomness'."""
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def _rng(*parts: Any) -> random.Random:
    return random.Random(int(_unit(*parts) * 2 ** 53))


def split_category(name: str) -> tuple[str | None, str]:
    """'red circle' -> ('red', 'circle'); a name that starts with no known colour -> (None, name)."""
    first, _, rest = name.partition(" ")
    return (first, rest) if first in COLOURS and rest else (None, name)


def _position(box: tuple[float, ...], width: int, height: int) -> str:
    x, y, w, h = box
    dx, dy = (x + w / 2) / width - 0.5, (y + h / 2) / height - 0.5
    if max(abs(dx), abs(dy)) < 0.12:
        return "middle"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


LOCATION = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
            "middle": "in the middle"}


def _size(box: tuple[float, ...], width: int, height: int) -> str:
    share = max(box[2], box[3]) / min(width, height)  # the scene's size words measure 2r / short side
    return next(word for limit, word in SIZE_WORDS if share < limit)


def relation(a: _Object, b: _Object, width: int, height: int) -> str:
    """'a <predicate> b' from the boxes: overlapping, next to, left of, right of, above, below."""
    ax, ay, aw, ah = a.box
    bx, by, bw, bh = b.box
    if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
        return "overlapping"
    dx, dy = (bx + bw / 2) - (ax + aw / 2), (by + bh / 2) - (ay + ah / 2)
    if (dx * dx + dy * dy) ** 0.5 < 0.3 * min(width, height):
        return "next to"
    if abs(dx) >= abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


def _background(image: Image.Image) -> str:
    """The scene's background colour, read from the image's four corners (objects rarely reach them)."""
    w, h = image.size
    corners = [image.getpixel((x, y)) for x in (0, w - 1) for y in (0, h - 1)]
    mean = [sum(c[i] for c in corners) / 4 for i in range(3)]
    return min(BACKGROUNDS, key=lambda n: sum((m - v) ** 2 for m, v in zip(mean, BACKGROUNDS[n])))


# ------------------------------------------------------------------------------------- captions


def global_caption(scene: _Image, rng: random.Random) -> str:
    """Stage one: every object with its size, colour, shape, position, and its nearest neighbour."""
    w, h = scene.record.width, scene.record.height
    objects = scene.objects
    count = {1: "a single object", 2: "two objects", 3: "three objects", 4: "four objects", 5: "five objects",
             6: "six objects"}.get(len(objects), f"{len(objects)} objects")
    opening = rng.choice([f"The image shows {count} painted on a {scene.background} background with a soft texture.",
                          f"This picture contains {count} set against a plain {scene.background} backdrop.",
                          f"In this image, {count} lie on a {scene.background}, slightly noisy background."])
    sentences = [opening]
    for i, obj in enumerate(objects):
        verb = rng.choice(["sits", "is placed", "appears", "can be seen", "is located"])
        sentence = f"A {obj.size} {obj.name} {verb} {LOCATION[obj.position]}"
        others = [o for o in objects if o is not obj]
        if others:
            near = min(others, key=lambda o: _distance(obj, o))
            sentence += f", {relation(obj, near, w, h)} the {near.name}"
        sentences.append(sentence + ".")
    sentences.append(rng.choice(["Each shape is painted in one colour and wears the surface pattern of its kind.",
                                 "All objects are simple shapes with clean outlines, most of them patterned.",
                                 "Every shape has a colour of its own and, drawn in a darker shade, a pattern."]))
    return " ".join(sentences)


def _surface(colour: str, shape: str, rng: random.Random) -> str:
    """The object's surface: its colour and the pattern its kind wears (the scene's PATTERN_WORDS)."""
    pattern = PATTERN_WORDS.get(shape)
    if pattern is None:  # a category the synthetic scenes do not draw
        return f"Its surface is painted {colour}."
    if shape == "circle":  # the one plain kind
        return rng.choice([f"Its surface is a flat, evenly painted {colour}, with {pattern} on it.",
                           f"The {shape} is filled with a solid {colour} tone and shows {pattern}."])
    accent = "grey" if colour == "black" else f"a darker {colour}"  # scene.accent: lighter for black
    return rng.choice([f"Its {colour} surface is covered with {pattern} in {accent}.",
                       f"The {shape} is painted {colour} and patterned with {pattern} in {accent}."])


def _distance(a: _Object, b: _Object) -> float:
    ax, ay, aw, ah = a.box
    bx, by, bw, bh = b.box
    return ((ax + aw / 2 - bx - bw / 2) ** 2 + (ay + ah / 2 - by - bh / 2) ** 2) ** 0.5


def region_caption(scene: _Image, obj: _Object, class_name: str, context_caption: str, rng: random.Random,
                   min_words: int = 75, max_words: int = 100) -> str:
    """Stage two: a detailed caption of `obj` that names `class_name` and draws on `context_caption`."""
    w, h = scene.record.width, scene.record.height
    colour, shape = split_category(class_name)
    colour = colour or "uniform"
    where = LOCATION[obj.position]
    opening = rng.choice([
        f"The close-up region shows a {obj.size} {class_name} {where} of the image.",
        f"This region contains a {obj.size} {class_name}, located {where} of the picture.",
        f"In the close-up we see a {obj.size} {class_name} that sits {where} of the scene.",
    ])
    shape_fact = SHAPE_FACTS.get(shape, f"It has the typical outline of a {shape}") + "."
    surface = _surface(colour, shape, rng)
    contrast = rng.choice([
        f"The {colour} colour stands out clearly against the {scene.background} background around it.",
        f"Against the {scene.background} background, the {colour} {shape} is easy to tell apart.",
    ])
    share = round(100 * obj.box[2] / w)
    size = rng.choice([
        f"It spans roughly {share} percent of the image's width, which makes it look {obj.size} in this scene.",
        f"In terms of scale it is {obj.size}, covering about {share} percent of the width of the whole image.",
    ])
    others = sorted((o for o in scene.objects if o is not obj), key=lambda o: _distance(obj, o))
    relations = [rng.choice([f"It is {relation(obj, o, w, h)} the {o.name}, which lies {LOCATION[o.position]}.",
                             f"Relative to the {o.name} {LOCATION[o.position]}, the {shape} is "
                             f"{relation(obj, o, w, h)} it."]) for o in others[:2]]
    if not others:
        relations = [f"No other object shares the image with the {shape}, so it is the only focus of the scene."]
    crop = rng.choice([
        f"Because the close-up includes some of its surroundings, a margin of the {scene.background} background "
        f"is visible around the {shape}.",
        f"The crop leaves a little room around the {shape}, showing part of the {scene.background} backdrop.",
    ])
    # stage two's point: the answer draws on the global caption the prompt carried (its first sentence)
    first = context_caption.split(". ")[0].strip().rstrip(".")
    first = first[:1].lower() + first[1:]
    context = rng.choice([f"This fits the overall scene, where {first}.",
                          f"As the description of the whole image puts it, {first}."]) if first else ""
    closing = rng.choice([f"Overall, the {class_name} is clearly defined and easy to recognise.",
                          f"In short, it is a clean, well-defined {class_name}."])
    middle = [shape_fact, surface, size, *relations, contrast, crop]
    rng.shuffle(middle)
    sentences = [opening, context] if context else [opening]
    words = sum(len(x.split()) for x in sentences) + len(closing.split())
    for sentence in middle:
        n = len(sentence.split())
        if sentence and (words < min_words or words + n <= max_words):
            sentences.append(sentence)
            words += n
    return " ".join(sentences + [closing])


# ---------------------------------------------------------------------------------- the server


class StandinVLM:
    """The stand-in VLM over the given records' images; a context manager that runs its HTTP server."""

    def __init__(self, splits: DatasetSplit | Iterable[DatasetSplit], data_root: str | Path, *, context: float,
                 params: StandinParams = StandinParams(), seed: int = 0, progress: bool = False):
        self.params, self.seed, self.context = params, seed, context
        self.data_root = Path(data_root)
        self.scenes: dict[Any, _Image] = {}  # image id -> what it knows about the image
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
        objects = []
        for region in record.regions:
            if region.id is None or not region.category:
                raise ValueError(f"{record.key} ({record.file_name}): a region without id or category; the stand-in "
                                 "needs both to answer about it")
            colour, shape = split_category(region.category)
            box = tuple(region.box)
            objects.append(_Object(region.id, colour, shape, _size(box, record.width, record.height),
                                   _position(box, record.width, record.height), box))
            self.crops.setdefault(pixel_hash(crop_region(image, region.box, self.context)), []).append(
                (record.image_id, region.id))
        self.scenes[record.image_id] = _Image(record, _background(image), tuple(objects))
        self.images[pixel_hash(image)] = record.image_id

    # ---------------------------------------------------------------- the truth about corruption

    def corruption(self, image_id: Any, region_id: int) -> str | None:
        """How this region's answer is corrupted (one of CORRUPTIONS), or None when it is truthful."""
        scene = self.scenes.get(image_id)
        if scene is None or all(o.region_id != region_id for o in scene.objects):
            raise KeyError(f"the stand-in knows no region {region_id} of image {image_id!r}")
        if _unit(self.seed, "corrupt", image_id, region_id) >= self.params.corrupt_share:
            return None
        kind = CORRUPTIONS[int(_unit(self.seed, "corruption kind", image_id, region_id) * len(CORRUPTIONS))]
        return "wrong_object" if kind == "other_region" and len(scene.objects) < 2 else kind

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
        return global_caption(self.scenes[image_id], _rng(self.seed, "global", image_id, text, body.get("seed")))

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
        scene = self.scenes[image_id]
        rng = _rng(self.seed, "region", image_id, region_id, context_caption, class_name, body.get("seed"))
        kind = self.corruption(image_id, region_id)
        obj = scene.object(region_id)
        if kind == "wrong_colour":
            colour, shape = split_category(class_name)
            wrong = rng.choice([c for c in COLOURS if c != colour])
            return region_caption(scene, obj, f"{wrong} {shape}", context_caption, rng)
        if kind == "wrong_object":
            present = {o.name for o in scene.objects}
            name = rng.choice([f"{c} {s}" for s in SHAPES for c in COLOURS if f"{c} {s}" not in present])
            return region_caption(scene, obj, name, context_caption, rng)
        if kind == "other_region":
            other = rng.choice([o for o in scene.objects if o.region_id != region_id])
            return region_caption(scene, other, other.name, context_caption, rng)
        return region_caption(scene, obj, class_name, context_caption, rng)

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
        if _unit(self.seed, "error", request, attempt) < self.params.error_share:
            self.requests["error_429"] += 1
            return web.json_response({"error": {"message": "rate limit reached (stand-in)", "type": "rate_limit"}},
                                     status=429, headers=retry_after)
        if _unit(self.seed, "slow", request, attempt) < self.params.slow_share:
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
