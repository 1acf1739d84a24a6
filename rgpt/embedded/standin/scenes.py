"""What the stand-in VLM knows about an image: its objects, read from the annotation records.

It cannot see. For each image it keeps the background (read from the pixels' corners) and each
region's colour, shape, size word and position word (from its box and category), and it
recognises a request's image or crop by the hash of its RGB pixels (`rgpt.recap.images.pixel_hash`).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ...data.records import ImageRecord
from ..synthetic.scene import BACKGROUNDS, COLOURS, SIZE_WORDS, position_word


@dataclass(frozen=True)
class KnownObject:
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
class KnownImage:
    record: ImageRecord
    background: str
    objects: tuple[KnownObject, ...]

    def object(self, region_id: int) -> KnownObject:
        return next(o for o in self.objects if o.region_id == region_id)


def known_image(record: ImageRecord, image: Image.Image) -> KnownImage:
    """What the stand-in knows of `record`'s image; ValueError for a region it cannot answer about."""
    objects = []
    for region in record.regions:
        if region.id is None or not region.category:
            raise ValueError(f"{record.key} ({record.file_name}): a region without id or category; the stand-in "
                             "needs both to answer about it")
        colour, shape = split_category(region.category)
        box = tuple(region.box)
        x, y, w, h = box
        objects.append(KnownObject(region.id, colour, shape, _size(box, record.width, record.height),
                                   position_word(x + w / 2, y + h / 2, record.width, record.height), box))
    return KnownImage(record, _background(image), tuple(objects))


def seeded_unit(*parts: Any) -> float:
    """A number in [0, 1) that is a pure function of the parts: deterministic 'randomness'."""
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def seeded_rng(*parts: Any) -> random.Random:
    return random.Random(int(seeded_unit(*parts) * 2 ** 53))


def split_category(name: str) -> tuple[str | None, str]:
    """'red circle' -> ('red', 'circle'); a name that starts with no known colour -> (None, name)."""
    first, _, rest = name.partition(" ")
    return (first, rest) if first in COLOURS and rest else (None, name)


def _size(box: tuple[float, ...], width: int, height: int) -> str:
    share = max(box[2], box[3]) / min(width, height)  # the scene's size words measure 2r / short side
    return next(word for limit, word in SIZE_WORDS if share < limit)


def _background(image: Image.Image) -> str:
    """The scene's background colour, read from the image's four corners (objects rarely reach them)."""
    w, h = image.size
    corners = [image.getpixel((x, y)) for x in (0, w - 1) for y in (0, h - 1)]
    mean = [sum(c[i] for c in corners) / 4 for i in range(3)]
    return min(BACKGROUNDS, key=lambda n: sum((m - v) ** 2 for m, v in zip(mean, BACKGROUNDS[n])))
