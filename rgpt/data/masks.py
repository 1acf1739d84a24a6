"""Decode any COCO-style segmentation (or a box) to a binary mask, with pycocotools.

Three encodings exist in the sources (see shared/reference/dataset-formats.md §0): a polygon
list `[[x1, y1, ...], ...]` whose parts are merged, an uncompressed RLE whose `counts` is a list
of ints (COCO crowd annotations) and a compressed RLE whose `counts` is a string. RLE `size` is
`[height, width]`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .records import Box, Segmentation


def to_rle(segmentation: Segmentation, height: int, width: int) -> dict[str, Any]:
    """The compressed RLE of a segmentation, in an image of `height` x `width`."""
    if isinstance(segmentation, list):  # polygons: one RLE per part, merged
        polygons = [p for p in segmentation if len(p) >= 6 and len(p) % 2 == 0]
        if not polygons:
            raise ValueError("polygon segmentation has no part with at least 3 points")
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if isinstance(segmentation["counts"], list):  # uncompressed RLE
            h, w = segmentation["size"]
            return mask_utils.frPyObjects(segmentation, h, w)
        counts = segmentation["counts"]
        return {"size": list(segmentation["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
    raise ValueError(f"unknown segmentation encoding: {type(segmentation).__name__}")


def decode(segmentation: Segmentation, height: int, width: int) -> np.ndarray:
    """The (H, W) uint8 mask of a segmentation. An RLE keeps its own size, whatever is passed."""
    return mask_utils.decode(to_rle(segmentation, height, width))


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of a binary (H, W) mask, with a JSON-ready string `counts`."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def box_to_mask(box: Box, height: int, width: int) -> np.ndarray:
    """A box as a filled mask: pixel (i, j) is inside when its centre is (COCO's convention)."""
    x, y, w, h = box
    cols = np.arange(width) + 0.5
    rows = np.arange(height) + 0.5
    inside_x = (cols >= x) & (cols <= x + w)
    inside_y = (rows >= y) & (rows <= y + h)
    mask = np.outer(inside_y, inside_x).astype(np.uint8)
    if not mask.any() and w > 0 and h > 0:  # a sub-pixel box still covers the pixel it sits in
        i = min(max(int(y + h / 2), 0), height - 1)
        j = min(max(int(x + w / 2), 0), width - 1)
        mask[i, j] = 1
    return mask


def area(segmentation: Segmentation, height: int, width: int) -> float:
    return float(mask_utils.area(to_rle(segmentation, height, width)))
