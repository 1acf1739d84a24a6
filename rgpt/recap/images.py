"""What the generator sends and the stand-in recognises: region crops, pixel hashes, PNG data URLs.

Both sides must compute exactly the same crop of the same decoded pixels, so the one function
that does it lives here.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math

from PIL import Image


def crop_box(box: list[float], width: int, height: int, context: float) -> tuple[int, int, int, int]:
    """The pixel window (left, top, right, bottom) of a COCO box enlarged by `context` of its size
    on each side (0.5: half its width left and right, half its height above and below), clipped to
    the image and never empty."""
    x, y, w, h = box
    left = max(0, math.floor(x - context * w))
    top = max(0, math.floor(y - context * h))
    right = min(width, math.ceil(x + w + context * w))
    bottom = min(height, math.ceil(y + h + context * h))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def crop_region(image: Image.Image, box: list[float], context: float) -> Image.Image:
    """The close-up of a region that stage two shows the VLM (RGB)."""
    return image.convert("RGB").crop(crop_box(box, image.width, image.height, context))


def pixel_hash(image: Image.Image) -> str:
    """sha256 of the decoded RGB pixels and the size: the same picture hashes the same whatever its file format."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def png_data_url(image: Image.Image) -> str:
    """The image as a base64 PNG data URL (lossless, so the receiver decodes the very same pixels)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_data_url(url: str) -> Image.Image:
    """The RGB image of a base64 data URL; ValueError when it is not one."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:image/") or not head.endswith(";base64"):
        raise ValueError(f"expected a base64 image data URL (data:image/png;base64,...), got {url[:40]!r}")
    try:
        return Image.open(io.BytesIO(base64.b64decode(payload, validate=True))).convert("RGB")
    except Exception as e:  # binascii.Error, PIL.UnidentifiedImageError
        raise ValueError(f"the image data URL does not decode to an image ({e})") from e
