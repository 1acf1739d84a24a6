"""Draw a record's regions on its image: masks tinted, boxes outlined, labels written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import masks
from .records import ImageRecord

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def draw_record(record: ImageRecord, root: str | Path, zoom: int = 4) -> Image.Image:
    """The record's image, `zoom` times larger, with every region drawn on it in its own colour."""
    image = Image.open(Path(root) / record.file_name).convert("RGB")
    pixels = np.asarray(image).astype(np.float32)
    for i, region in enumerate(record.regions):
        if region.segmentation is not None:
            mask = masks.decode(region.segmentation, record.height, record.width).astype(bool)
            pixels[mask] = 0.55 * pixels[mask] + 0.45 * np.array(PALETTE[i % len(PALETTE)])
    big = Image.fromarray(pixels.astype(np.uint8)).resize((record.width * zoom, record.height * zoom), Image.NEAREST)
    draw = ImageDraw.Draw(big)
    for i, region in enumerate(record.regions):
        x, y, w, h = (v * zoom for v in region.box)
        colour = PALETTE[i % len(PALETTE)]
        draw.rectangle([x, y, x + w, y + h], outline=colour, width=2)
        label = region.category or (region.phrases[0] if region.phrases else f"region {i}")
        draw.text((x + 3, y + 2), label, fill=colour)
    return big
