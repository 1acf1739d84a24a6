"""The synthetic corpus: deterministic bytes, exact masks, true text, POPE's rules."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import Polygon

from rgpt.data.pope import build_pope, question_text
from rgpt.embedded.synthetic.corpus import ALL_CATEGORIES, write_corpus
from rgpt.embedded.synthetic.scene import (
    COLOURS,
    PATTERN_WORDS,
    PATTERNS,
    SHAPES,
    Scene,
    SceneObject,
    _compute_visibility,
    accent,
    draw_scene,
    object_mask,
    render,
)
from rgpt.embedded.synthetic.text import referring_expressions

from conftest import small_synthetic_params


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_writes_byte_identical_files(corpus, tmp_path):
    write_corpus(tmp_path, small_synthetic_params(), progress=False)
    assert _tree_digest(tmp_path) == _tree_digest(corpus)


def test_another_seed_writes_another_corpus(corpus, tmp_path):
    write_corpus(tmp_path, small_synthetic_params(seed=7), progress=False)
    a, b = _tree_digest(tmp_path), _tree_digest(corpus)
    assert a.keys() != b.keys() or a != b


def test_annotation_masks_are_the_painted_pixels():
    rng = np.random.default_rng(0)
    checked_occluded = 0
    for _ in range(30):
        scene = draw_scene(rng, image_size=(96, 160), n_objects=6, categories=ALL_CATEGORIES, crowd=True)
        pixels = np.asarray(render(scene, rng)).astype(int)
        for i, obj in enumerate(scene.objects):
            mask = object_mask(scene, obj).astype(bool)
            assert mask.shape == (scene.height, scene.width) and mask.any()
            # painted in the object's colour or its pattern's accent shade of it (renders jitter
            # each channel of the colour by at most 10, which the accent scales by at most 0.6)
            colour = np.array(COLOURS[obj.colour])
            close = ((np.abs(pixels[mask] - colour) <= 10).all(axis=1)
                     | (np.abs(pixels[mask] - np.clip(accent(colour), 0, 255)) <= 10).all(axis=1))
            if obj.shape != "circle" and mask.sum() >= 200:  # patterned, and large enough to show it
                assert (np.abs(pixels[mask] - colour) > 10).any(axis=1).mean() > 0.1
            later = scene.objects[i + 1:]
            if not any(obj.outline.intersects(o.outline) for o in later):
                assert close.all()  # unoccluded: exact
            else:
                checked_occluded += 1
                assert close.mean() > 0.9  # occluded: exact up to the occluder's boundary pixels
            assert obj.visible.area >= 0.5 * obj.outline.area - 1e-6
    assert checked_occluded > 0


def test_every_shape_has_its_own_pattern():
    y, x = np.mgrid[0:48, 0:48]
    drawn = {shape: PATTERNS[shape](x, y).tobytes() for shape in SHAPES}
    assert set(PATTERNS) == set(SHAPES) and len(set(drawn.values())) == len(SHAPES)
    # and its own words for the captions that describe it
    assert set(PATTERN_WORDS) == set(SHAPES) and len(set(PATTERN_WORDS.values())) == len(SHAPES)


def test_visible_outline_excludes_later_objects():
    square = Polygon([(10, 10), (50, 10), (50, 50), (10, 50)])
    cover = Polygon([(30, 0), (70, 0), (70, 60), (30, 60)])
    scene = Scene(80, 80, "grey", [SceneObject("square", "red", square), SceneObject("square", "blue", cover)])
    _compute_visibility(scene)
    assert scene.objects[0].box == [10.0, 10.0, 20.0, 40.0]
    assert scene.objects[1].box == [30.0, 0.0, 40.0, 60.0]


def test_referring_expressions_tell_twins_apart():
    def square(x0: float, size: float = 10) -> Polygon:  # all centred at y = 45
        y0 = 45 - size / 2
        return Polygon([(x0, y0), (x0 + size, y0), (x0 + size, y0 + size), (x0, y0 + size)])

    left, right = SceneObject("square", "red", square(5)), SceneObject("square", "red", square(70, 20))
    other = SceneObject("circle", "blue", square(40))
    scene = Scene(100, 100, "grey", [left, right, other])
    _compute_visibility(scene)
    rng = np.random.default_rng(0)
    assert set(referring_expressions(scene, left, scene.objects, rng, n=10)) == {
        "the red square on the left", "the leftmost red square", "the smaller red square"}
    assert set(referring_expressions(scene, right, scene.objects, rng, n=10)) == {
        "the red square on the right", "the rightmost red square", "the larger red square"}
    unique = referring_expressions(scene, other, scene.objects, rng, n=10)
    assert "the blue circle" in unique and all("blue" in e and "circle" in e for e in unique)


def test_pope_rules_on_a_known_object_table():
    objects = {
        "a.jpg": ["dog", "cat", "car", "apple"],
        "b.jpg": ["dog", "car", "bus", "fork"],
        "c.jpg": ["cat", "bus", "dog", "egg"],
        "d.jpg": ["tree"],  # too few objects: never chosen
    }
    splits = build_pope(objects, img_num=3, sample_num=3, rng=np.random.default_rng(0))
    for strategy, questions in splits.items():
        assert len(questions) == 3 * 3 * 2
        for q in questions:
            name = q["text"][len("Is there a "):-len(" in the image?")].removeprefix("n ")
            in_image = name in objects[q["image"]]
            assert (q["label"] == "yes") == in_image
        asked = [(q["image"], q["text"]) for q in questions]
        assert len(asked) == len(set(asked))  # never the same question twice for an image
    # popular: the most frequent acceptable object first (over the chosen images: dog 3; bus, car, cat 2; ...)
    a_popular = [q["text"] for q in splits["popular"] if q["image"] == "a.jpg" and q["label"] == "no"]
    assert a_popular == [question_text(n) for n in ("bus", "egg", "fork")]
    # adversarial: the positive's most frequent co-occurring object that is not in the image
    c_adv = [q["text"] for q in splits["adversarial"] if q["image"] == "c.jpg" and q["label"] == "no"]
    assert c_adv[0] == question_text("apple")  # cat co-occurs with dog 2, then apple, bus, car, egg 1
    assert question_text("apple") == "Is there an apple in the image?"


def test_pope_needs_enough_images():
    with pytest.raises(ValueError, match="POPE needs 5 images with >= 3 objects, only 1 have them"):
        build_pope({"a.jpg": ["x", "y", "z"]}, img_num=5, sample_num=3, rng=np.random.default_rng(0))
