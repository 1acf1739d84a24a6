"""The stand-in VLM's answers: captions true of the scene, long (~80-100 words) and varied.

Stage one (`global_caption`): every object with its size, colour, shape, position and nearest
neighbour. Stage two (`region_caption`): a detailed caption of one region that names the class
name and draws on the global caption the prompt carried, as the paper's protocol has the VLM do.
Sentence templates are drawn by the generator the caller seeds, so a request always gets the
same answer.
"""

from __future__ import annotations

import random

from ..synthetic.scene import LOCATION, PATTERN_WORDS
from .scenes import KnownImage, KnownObject, split_category

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


def relation(a: KnownObject, b: KnownObject, width: int, height: int) -> str:
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


def global_caption(scene: KnownImage, rng: random.Random) -> str:
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


def _distance(a: KnownObject, b: KnownObject) -> float:
    ax, ay, aw, ah = a.box
    bx, by, bw, bh = b.box
    return ((ax + aw / 2 - bx - bw / 2) ** 2 + (ay + ah / 2 - by - bh / 2) ** 2) ** 0.5


def region_caption(scene: KnownImage, obj: KnownObject, class_name: str, context_caption: str, rng: random.Random,
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
