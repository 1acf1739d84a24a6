"""Which region answers the stand-in VLM makes wrong on purpose, how, and the truth about it.

A share of the regions (`recap.standin.corrupt_share`) gets a caption that names the wrong colour,
a wrong object, or is the caption of another region of the same image. Which regions and how is a
pure function of (seed, image id, region id), so the truth is known: clip_filter's precision and
recall are measured against it.
"""

from __future__ import annotations

import random
from typing import Any

from ..synthetic.scene import COLOURS, SHAPES
from .captions import region_caption
from .scenes import KnownImage, seeded_unit, split_category

CORRUPTIONS = ("wrong_colour", "wrong_object", "other_region")


def corruption(scene: KnownImage, image_id: Any, region_id: int, *, seed: int, share: float) -> str | None:
    """How this region's answer is corrupted (one of CORRUPTIONS), or None when it is truthful."""
    if all(o.region_id != region_id for o in scene.objects):
        raise KeyError(f"the stand-in knows no region {region_id} of image {image_id!r}")
    if seeded_unit(seed, "corrupt", image_id, region_id) >= share:
        return None
    kind = CORRUPTIONS[int(seeded_unit(seed, "corruption kind", image_id, region_id) * len(CORRUPTIONS))]
    return "wrong_object" if kind == "other_region" and len(scene.objects) < 2 else kind


def region_answer(scene: KnownImage, region_id: int, class_name: str, context_caption: str, kind: str | None,
                  rng: random.Random) -> str:
    """The caption of a region, made wrong in the way `kind` says (None: the true caption)."""
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
