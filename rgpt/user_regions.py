"""Regions as users give them, in the model's region format (a COCO [x, y, w, h] box and, for a
mask, its RLE segmentation).

One convention for every user-facing surface (`rgpt chat`, the MLflow pyfunc): a box is pixel
[x1, y1, x2, y2], its top-left and bottom-right corners; a mask is a PNG of the image's size whose
non-zero pixels are inside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .data import masks
from .data.templates import IMAGE


def box_region(box: Sequence[float], width: int, height: int) -> dict[str, Any]:
    """Pixel [x1, y1, x2, y2] -> a region; ValueError when it is empty or outside the image."""
    if len(box) != 4:
        raise ValueError(f"box {list(box)}: expected four numbers x1, y1, x2, y2")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise ValueError(f"box {[x1, y1, x2, y2]} (x1, y1, x2, y2) is empty or outside the {width}x{height} image")
    return {"box": [x1, y1, x2 - x1, y2 - y1], "segmentation": None}


def parse_box(text: str, width: int, height: int) -> dict[str, Any]:
    """'x1,y1,x2,y2' in image pixels -> a region."""
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"box {text!r}: expected four numbers x1,y1,x2,y2") from None
    if len(box) != 4:
        raise ValueError(f"box {text!r}: expected four numbers x1,y1,x2,y2")
    return box_region(box, width, height)


def read_mask(path: str | Path, width: int, height: int) -> dict[str, Any]:
    """A PNG mask (non-zero pixels inside) -> a region with its box and RLE segmentation."""
    mask = np.asarray(Image.open(path).convert("L")) > 0
    if mask.shape != (height, width):
        raise ValueError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]}, the image is {width}x{height}")
    if not mask.any():
        raise ValueError(f"mask {path} is empty")
    ys, xs = np.nonzero(mask)
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]
    return {"box": box, "segmentation": masks.encode(mask)}


def image_question(question: str) -> str:
    """A user's question as RGPT is asked: the image's placeholder in front unless it has one."""
    return question if IMAGE in question else f"{IMAGE}\n{question}"
