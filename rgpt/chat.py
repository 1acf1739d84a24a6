"""Loading a trained RGPT and turning command-line regions into the model's region format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .data import masks


def load_model(path: str | Path):
    """The model and processor saved together in one folder (a stage's output)."""
    from .model.modeling_rgpt import RGPTForConditionalGeneration
    from .model.processing_rgpt import RGPTProcessor

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a saved RGPT model (no config.json): train one with `make pipeline`")
    return RGPTForConditionalGeneration.from_pretrained(path).eval(), RGPTProcessor.from_pretrained(path)


def parse_box(text: str, width: int, height: int) -> dict[str, Any]:
    """'x1,y1,x2,y2' in image pixels -> a region with a COCO [x, y, w, h] box."""
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"box {text!r}: expected four numbers x1,y1,x2,y2") from None
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise ValueError(f"box {text!r} is empty or outside the {width}x{height} image")
    return {"box": [x1, y1, x2 - x1, y2 - y1], "segmentation": None}


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
