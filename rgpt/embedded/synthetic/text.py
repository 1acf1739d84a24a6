"""Words about a synthetic scene: region phrases, referring expressions, image captions.

Every sentence is true of the scene it describes; referring expressions name their target
uniquely among the image's annotated objects, so choosing the region they refer to has one right
answer.
"""

from __future__ import annotations

import numpy as np

from .scene import Scene, SceneObject, relation

# LLaVA's brief image-caption instructions (LLaVA paper, Table 8), as LAION-CC-SBU-558K uses them.
BRIEF_CAPTION_INSTRUCTIONS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def region_phrase(scene: Scene, obj: SceneObject, rng: np.random.Generator) -> str:
    """A Visual Genome-style region description of one object."""
    return _pick(rng, [
        f"{obj.colour} {obj.shape}",
        f"a {obj.colour} {obj.shape}",
        f"the {obj.shape} is {obj.colour}",
        f"{obj.size} {obj.colour} {obj.shape}",
        f"{obj.colour} {obj.shape} {scene.location(obj)}",
        f"a {obj.size} {obj.shape} colored {obj.colour}",
    ])


def relation_phrase(subject: SceneObject, predicate: str, obj: SceneObject) -> str:
    return f"{subject.name} {predicate} {obj.name}"


def referring_expressions(scene: Scene, target: SceneObject, candidates: list[SceneObject],
                          rng: np.random.Generator, n: int) -> list[str]:
    """Up to `n` distinct expressions that pick out `target` among `candidates` (which include it).

    Returns [] when nothing in the scene tells the target apart from a same-named twin.
    """
    twins = [o for o in candidates if o is not target and o.name == target.name]
    if not twins:
        options = [f"the {target.name}", f"the {target.name} {scene.location(target)}",
                   f"a {target.size} {target.name}", f"the {target.shape} that is {target.colour}"]
        neighbours = [o for o in candidates if o is not target
                      and sum(c.name == o.name for c in candidates) == 1]
        if neighbours:
            other = neighbours[int(rng.integers(len(neighbours)))]
            options.append(f"the {target.name} {relation(scene, target, other)} the {other.name}")
    else:
        options = _contrastive(target, twins)
    if not options:
        return []
    order = rng.permutation(len(options))
    return [options[i] for i in order[:n]]


def _contrastive(target: SceneObject, twins: list[SceneObject]) -> list[str]:
    """Expressions that separate the target from objects of the same name by place or size."""
    group = [target] + twins
    xs = [o.centre[0] for o in group]
    ys = [o.centre[1] for o in group]
    areas = [o.outline.area for o in group]
    name, options = target.name, []

    def only(values: list[float], pick) -> bool:  # the target alone holds the extreme value
        return values[0] == pick(values) and values.count(pick(values)) == 1

    if only(xs, min):
        options += [f"the {name} on the left", f"the leftmost {name}"]
    if only(xs, max):
        options += [f"the {name} on the right", f"the rightmost {name}"]
    if only(ys, min):
        options.append(f"the upper {name}")
    if only(ys, max):
        options.append(f"the lower {name}")
    if len(group) == 2 and abs(areas[0] - areas[1]) > 0.2 * max(areas):
        options.append(f"the {'larger' if areas[0] > areas[1] else 'smaller'} {name}")
    return options


def image_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A short BLIP-style caption, as LAION-CC-SBU-558K's are."""
    names = [f"{o.size} {o.name}" if rng.random() < 0.3 else o.name for o in scene.objects]
    listed = names[0] if len(names) == 1 else ", ".join(f"a {n}" for n in names[:-1]) + f" and a {names[-1]}"
    if len(names) == 1:
        listed = f"a {listed}"
    return _pick(rng, [
        f"{listed} on a {scene.background} background",
        f"{len(names)} shapes on a {scene.background} background",
        f"a {scene.background} background with {listed}",
    ])
