"""Synthetic scenes: coloured, patterned shapes on a textured background, with exact masks and known facts.

A `Scene` is drawn from a seeded generator: every object has a shape, a colour, a size, a
position and a paint order. Its visible outline (what later objects leave uncovered) is computed
with shapely, and the image is painted from the masks pycocotools decodes from those outlines,
so an annotation decodes to the pixels that show its object (exactly for unoccluded objects, to
the boundary pixel where an occluder's edge crosses it). Everything a dataset says about an
image — categories, phrases, relations, captions — is derived from these facts, so region
classification, referring expressions, captions and object presence have one right answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon
from shapely.ops import unary_union

from ...data import masks

SHAPES = ("circle", "ellipse", "square", "rectangle", "triangle", "diamond",
          "pentagon", "hexagon", "octagon", "star", "cross", "arrow")
COLOURS = {
    "red": (214, 39, 40), "orange": (247, 136, 28), "yellow": (240, 215, 35),
    "green": (44, 160, 60), "cyan": (30, 200, 210), "blue": (35, 75, 215),
    "purple": (135, 60, 190), "pink": (245, 130, 190), "white": (248, 248, 248),
    "black": (20, 20, 20),
}
BACKGROUNDS = {"grey": (128, 128, 128), "beige": (196, 178, 140), "slate": (92, 104, 120),
               "olive": (128, 128, 84), "brown": (120, 86, 64)}
# Every kind of object wears its own surface pattern (drawn in a darker shade of its colour, a
# lighter one for black) as well as its outline, as real categories have textures: fur, bark,
# brick. Why: a small ViT trained from scratch for minutes does not learn outlines only a couple
# of patches wide (a supervised shape probe on mask-pooled patch features stayed at chance for
# 10 epochs), but it learns a pattern that every patch of the object carries (52 % after 4).
# Each maps integer pixel coordinates (x, y) to "pattern here"; the circle is plain.
PATTERNS = {
    "circle": lambda x, y: np.zeros(x.shape, bool),
    "ellipse": lambda x, y: y % 6 < 3,  # horizontal stripes
    "square": lambda x, y: x % 6 < 3,  # vertical stripes
    "rectangle": lambda x, y: (x + y) % 8 < 4,  # diagonal stripes
    "triangle": lambda x, y: (x - y) % 8 < 4,  # the other diagonal
    "diamond": lambda x, y: (x // 4 + y // 4) % 2 == 0,  # checks
    "pentagon": lambda x, y: (x % 6 < 2) & (y % 6 < 2),  # dots
    "hexagon": lambda x, y: y % 12 < 4,  # wide horizontal bands
    "octagon": lambda x, y: (x % 6 == 0) | (y % 6 == 0),  # grid
    "star": lambda x, y: (x // 2 + y // 2) % 2 == 0,  # fine checks
    "cross": lambda x, y: x % 12 < 4,  # wide vertical bands
    "arrow": lambda x, y: ((x % 8 < 4) ^ (y % 8 < 4)) & ((x + y) % 2 == 0),  # checked dots
}
# Each pattern in words, for the captions that describe an object's surface (the RecapD stand-in).
PATTERN_WORDS = {
    "circle": "no pattern at all",
    "ellipse": "thin horizontal stripes",
    "square": "thin vertical stripes",
    "rectangle": "diagonal stripes rising to the right",
    "triangle": "diagonal stripes falling to the right",
    "diamond": "a checkerboard of small squares",
    "pentagon": "a regular grid of small dots",
    "hexagon": "wide horizontal bands",
    "octagon": "a fine grid of thin lines",
    "star": "a very fine checkerboard",
    "cross": "wide vertical bands",
    "arrow": "a checked pattern of tiny dots",
}
# A position word as a phrase.
LOCATION = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
            "middle": "in the middle"}
# Size words by the object's share of the image's short side.
SIZE_WORDS = ((0.24, "small"), (0.34, "medium"), (1.0, "large"))


@dataclass
class SceneObject:
    shape: str
    colour: str
    outline: Polygon  # the full shape, before occlusion
    visible: Polygon | MultiPolygon | None = None  # what later objects leave uncovered
    size: str = "medium"
    crowd_id: int | None = None  # members of one crowd (a COCO iscrowd annotation)

    @property
    def name(self) -> str:
        """The object's category in words, e.g. 'red circle'."""
        return f"{self.colour} {self.shape}"

    @property
    def box(self) -> list[float]:
        """Visible extent as COCO [x, y, w, h]."""
        x1, y1, x2, y2 = self.visible.bounds
        return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]

    @property
    def centre(self) -> tuple[float, float]:
        c = self.visible.centroid
        return c.x, c.y

    def polygons(self) -> list[list[float]]:
        """The visible outline as COCO polygons (one list per part, coordinates to 2 decimals)."""
        parts = self.visible.geoms if isinstance(self.visible, MultiPolygon) else [self.visible]
        out = []
        for part in parts:
            coords = list(part.exterior.coords)[:-1]  # shapely repeats the first point
            out.append([round(v, 2) for xy in coords for v in xy])
        return out


@dataclass
class Scene:
    width: int
    height: int
    background: str
    objects: list[SceneObject] = field(default_factory=list)  # in paint order

    def position(self, obj: SceneObject) -> str:
        """Where an object sits, in words (`position_word`)."""
        return position_word(*obj.centre, self.width, self.height)

    def location(self, obj: SceneObject) -> str:
        """`position` as a phrase: 'on the left', 'at the top', 'in the middle', ..."""
        return LOCATION[self.position(obj)]


def position_word(cx: float, cy: float, width: int, height: int) -> str:
    """Where a point (an object's centre) sits in the image: 'left', 'right', 'top', 'bottom' or 'middle'."""
    dx, dy = cx / width - 0.5, cy / height - 0.5
    if max(abs(dx), abs(dy)) < 0.12:
        return "middle"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def relation(scene: Scene, a: SceneObject, b: SceneObject) -> str:
    """The spatial predicate 'a <predicate> b' that best describes two objects."""
    ia, ib = scene.objects.index(a), scene.objects.index(b)
    if a.outline.intersects(b.outline):
        return "in front of" if ia > ib else "behind"
    (ax, ay), (bx, by) = a.centre, b.centre
    dx, dy = bx - ax, by - ay
    if math.hypot(dx, dy) < 0.3 * min(scene.width, scene.height):
        return "next to"
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def _outline(shape: str, r: float, rng: np.random.Generator) -> Polygon:
    """A shape of radius ~r centred at the origin."""
    def regular(n: int, radius: float = r, phase: float = 0.0) -> list[tuple[float, float]]:
        return [(radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n))
                for k in range(n)]

    if shape == "circle":
        return Polygon(regular(40))
    if shape == "ellipse":
        return affinity.scale(Polygon(regular(40)), 1.0, 0.6)
    if shape == "square":
        return Polygon(regular(4, phase=math.pi / 4))
    if shape == "rectangle":
        return affinity.scale(Polygon(regular(4, phase=math.pi / 4)), 1.25, 0.65)
    if shape == "triangle":
        return Polygon(regular(3, phase=-math.pi / 2))
    if shape == "diamond":
        return affinity.scale(Polygon(regular(4)), 0.65, 1.0)
    if shape in ("pentagon", "hexagon", "octagon"):
        return Polygon(regular({"pentagon": 5, "hexagon": 6, "octagon": 8}[shape], phase=-math.pi / 2))
    if shape == "star":
        outer, inner = regular(5, phase=-math.pi / 2), regular(5, 0.45 * r, phase=-math.pi / 2 + math.pi / 5)
        return Polygon([p for pair in zip(outer, inner) for p in pair])
    if shape == "cross":
        a = 0.33 * r
        return Polygon([(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r), (-a, a),
                        (-r, a), (-r, -a), (-a, -a)])
    if shape == "arrow":
        return Polygon([(-r, -0.25 * r), (0.2 * r, -0.25 * r), (0.2 * r, -0.7 * r), (r, 0),
                        (0.2 * r, 0.7 * r), (0.2 * r, 0.25 * r), (-r, 0.25 * r)])
    raise ValueError(f"unknown shape {shape!r}")


def _size_word(r: float, short_side: int) -> str:
    share = 2 * r / short_side
    return next(word for limit, word in SIZE_WORDS if share < limit)


def draw_scene(rng: np.random.Generator, *, image_size: tuple[int, int], n_objects: int,
               categories: list[tuple[str, str]], weights: np.ndarray | None = None,
               crowd: bool = False) -> Scene:
    """Place `n_objects` objects whose (shape, colour) is drawn from `categories`.

    Objects may overlap, but each keeps at least half of its area visible and in one piece
    without holes, so its outline is a valid COCO polygon. With `crowd`, one extra cluster of
    five or more small same-category objects is added (COCO annotates it as one iscrowd RLE).
    """
    width, height = (int(v) for v in rng.integers(image_size[0], image_size[1] + 1, size=2))
    scene = Scene(width, height, str(rng.choice(list(BACKGROUNDS))))
    short = min(width, height)
    probs = None if weights is None else weights / weights.sum()
    for _ in range(n_objects):
        shape, colour = categories[int(rng.choice(len(categories), p=probs))]
        r = float(rng.uniform(0.09, 0.21)) * short
        _place(scene, SceneObject(shape, colour, _outline(shape, r, rng), size=_size_word(r, short)), r, rng)
    if crowd:
        shape, colour = categories[int(rng.choice(len(categories), p=probs))]
        cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
        for _ in range(int(rng.integers(5, 9))):
            r = float(rng.uniform(0.025, 0.045)) * short
            obj = SceneObject(shape, colour, _outline(shape, r, rng), size="small", crowd_id=0)
            _place(scene, obj, r, rng, near=(cx, cy, 0.12 * short))
    _compute_visibility(scene)
    return scene


def _place(scene: Scene, obj: SceneObject, r: float, rng: np.random.Generator,
           near: tuple[float, float, float] | None = None, tries: int = 20) -> None:
    """Move and rotate `obj` to a spot where every object keeps enough of itself visible."""
    base = affinity.rotate(obj.outline, float(rng.uniform(0, 360)), origin=(0, 0))
    for _ in range(tries):
        if near is None:
            x = rng.uniform(r, scene.width - r)
            y = rng.uniform(r, scene.height - r)
        else:
            cx, cy, spread = near
            x, y = cx + rng.uniform(-spread, spread), cy + rng.uniform(-spread, spread)
        candidate = affinity.translate(base, x, y)
        if not _fits(scene, candidate):
            continue
        obj.outline = candidate
        scene.objects.append(obj)
        return
    # no spot found: the scene simply has one object fewer


def _fits(scene: Scene, candidate: Polygon) -> bool:
    frame = Polygon([(0, 0), (scene.width, 0), (scene.width, scene.height), (0, scene.height)])
    if not frame.contains(candidate):
        return False
    for i, other in enumerate(scene.objects):
        rest = _visible_part(other.outline, [o.outline for o in scene.objects[i + 1:]] + [candidate])
        if rest.area < 0.5 * other.outline.area or not _simple(rest):
            return False
    return True


def _simple(geometry) -> bool:
    """One or more polygons, none with holes: what a COCO polygon list can describe."""
    parts = geometry.geoms if isinstance(geometry, MultiPolygon) else [geometry]
    return all(isinstance(p, Polygon) and not p.is_empty and len(p.interiors) == 0 for p in parts)


def _visible_part(outline: Polygon, covering: list[Polygon]) -> Polygon | MultiPolygon:
    """What `covering` leaves of `outline`, without the slivers an occluder's edge can leave."""
    visible = outline.difference(unary_union(covering)) if covering else outline
    if isinstance(visible, MultiPolygon):
        parts = [p for p in visible.geoms if p.area >= 2.0]
        visible = parts[0] if len(parts) == 1 else MultiPolygon(parts)
    return visible


def _compute_visibility(scene: Scene) -> None:
    for i, obj in enumerate(scene.objects):
        obj.visible = _visible_part(obj.outline, [o.outline for o in scene.objects[i + 1:]])


def object_mask(scene: Scene, obj: SceneObject) -> np.ndarray:
    """The (H, W) mask its annotation decodes to: pycocotools' rasterisation of the visible outline."""
    return masks.decode(obj.polygons(), scene.height, scene.width)


def accent(shade: np.ndarray) -> np.ndarray:
    """The shade an object's pattern is drawn in: darker, or lighter for a dark colour."""
    return shade + 80 if shade.mean() < 70 else shade * 0.6


def render(scene: Scene, rng: np.random.Generator) -> Image.Image:
    """Paint the background texture, then each object's visible mask in paint order, in its
    colour with its kind's pattern (`PATTERNS`, at a random offset) in the accent shade."""
    h, w = scene.height, scene.width
    base = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    ramp = np.linspace(-12, 12, w, dtype=np.float32)[None, :, None]  # a soft left-right gradient
    noise = rng.normal(0, 6, size=(h, w, 1)).astype(np.float32)
    pixels = np.clip(base + ramp + noise, 0, 255).astype(np.uint8)
    for obj in scene.objects:
        shade = np.array(COLOURS[obj.colour], dtype=np.int16) + rng.integers(-10, 11, size=3)
        mask = object_mask(scene, obj).astype(bool)
        x, y = np.mgrid[0:h, 0:w][::-1] + rng.integers(0, 12, size=(2, 1, 1))
        pixels[mask] = np.clip(shade, 0, 255).astype(np.uint8)
        pixels[mask & PATTERNS[obj.shape](x, y)] = np.clip(accent(shade), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")
