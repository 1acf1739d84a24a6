"""Image preprocessing for the vision tower, without torchvision (it cannot load next to this torch).

An image is centred on a square canvas filled with the mean colour (LLaVA's `pad` aspect mode, so
nothing is cropped away and nothing is stretched), resized to the tower's input size with bicubic
resampling and normalised with the tower's mean and std. `square_transform` is the same mapping
as numbers, so boxes and masks follow their image exactly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

# The statistics OpenAI's CLIP was trained with; our own CLIP is trained with them too, so both
# profiles preprocess identically.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def mean_colour(mean: Sequence[float]) -> tuple[int, int, int]:
    """The padding colour for a normalisation mean: pads become zeros once normalised (LLaVA's choice)."""
    return tuple(int(m * 255) for m in mean)


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """`image` centred on a square canvas of its longer side, the rest filled with `fill`."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def square_transform(width: int, height: int, size: int) -> tuple[float, float, float]:
    """(scale, pad_x, pad_y) such that image pixel coordinates map to the size x size input as

        x_input = x * scale + pad_x,    y_input = y * scale + pad_y

    for the pad-to-square-then-resize of `to_pixel_values` (coordinates are continuous, pixel
    edges at integers, as in COCO boxes). A box [x, y, w, h] becomes
    [x * scale + pad_x, y * scale + pad_y, w * scale, h * scale].
    """
    side = max(width, height)
    scale = size / side
    return scale, (side - width) // 2 * scale, (side - height) // 2 * scale


def to_pixel_values(images: list[Image.Image], size: int, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                    std: Sequence[float] = OPENAI_CLIP_STD) -> torch.Tensor:
    """(B, 3, size, size) float32: each image padded to a square, resized (bicubic), normalised."""
    fill = mean_colour(mean)
    arrays = [np.asarray(pad_to_square(image.convert("RGB"), fill).resize((size, size), Image.BICUBIC))
              for image in images]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255  # (B, 3, S, S)
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
