"""The embedded corpus: synthetic twins of every real dataset, in each one's exact on-disk format.

`write_corpus(root, params)` draws scenes from a seeded generator and writes, under `root`, the
files the download step would fetch for the paper profile, at the paths of `rgpt.data.layout`:

  V3Det      boxes-only COCO-style JSON with a vast, long-tailed vocabulary + the CRLF name list
  VG         image_data / region_descriptions / objects / relationships (index-aligned lists,
             `name` vs `names`, mixed-case predicates, a few regions with y < 0) + DenseCap splits
  COCO 2017  instances with polygon and crowd (uncompressed RLE) segmentations, ids with gaps
  LVIS v1    polygons only, no iscrowd, no file_name (coco_url), val mixing train2017 images
  RefCOCOg   refs(umd).p pickle + instances.json on COCO train2014 images (umd train/val/test)
  LLaVA-558K the pre-training caption json (zero-padded string ids, 5-digit image folders)
  POPE       random / popular / adversarial question files built by POPE's rules on val2014

Every dataset draws from its own generator, seeded from (seed, dataset name), so the same seed
writes byte-identical files and data.dvc stays stable.
"""

from __future__ import annotations

import io
import json
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ...config import SyntheticParams
from ...data import layout
from ...data.pope import build_pope, write_pope
from .scene import COLOURS, SHAPES, Scene, SceneObject, draw_scene, object_mask, relation, render
from .text import BRIEF_CAPTION_INSTRUCTIONS, image_caption, referring_expressions, region_phrase, relation_phrase

ALL_CATEGORIES = [(shape, colour) for shape in SHAPES for colour in COLOURS]  # 120: V3Det, LVIS, VG
COCO_CATEGORIES = [(shape, colour) for shape in SHAPES[:10] for colour in list(COLOURS)[:8]]  # 80
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]  # real gaps
COCO_INFO = {"description": "COCO 2017 Dataset (synthetic twin)", "url": "http://cocodataset.org",
             "version": "1.0", "year": 2017, "contributor": "COCO Consortium", "date_created": "2017/09/01"}
COCO_LICENSES = [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": 4, "name": "Attribution License"}]
CROWD_ID_BASE = 900100000000  # real crowd annotation ids exceed int32
JPEG_QUALITY = 90

# The writer's name as a corpus's SYNTHETIC.json records it. It names the corpus's kind, not the
# module (which has moved since): data.dvc hashes that file, so changing it re-runs every stage.
GENERATOR = "rgpt.data.synthetic"


@dataclass
class _Image:
    """A rendered scene waiting to be annotated by one or more datasets."""

    id: int
    scene: Scene
    jpeg: bytes


def write_corpus(root: str | Path, params: SyntheticParams, *, progress: bool = True) -> dict[str, int]:
    """Write the whole synthetic corpus under `root`; returns image counts per dataset and split."""
    root = Path(root)
    counts: dict[str, int] = {}
    counts.update(_write_v3det(root, params, progress))
    coco = _draw_coco_pool(root, params, progress)
    counts.update(_write_coco(root, coco))
    counts.update(_write_lvis(root, params, coco))
    counts.update(_write_refcocog(root, params, coco))
    counts.update(_write_pope(root, params, coco))
    counts.update(_write_vg(root, params, progress))
    counts.update(_write_llava(root, params, progress))
    return counts


# --------------------------------------------------------------------------------------- helpers


def _rng(params: SyntheticParams, name: str) -> np.random.Generator:
    return np.random.default_rng([params.seed, zlib.crc32(name.encode())])


def _draw(rng: np.random.Generator, params: SyntheticParams, categories, weights=None, crowd=False) -> Scene:
    lo, hi = params.objects_per_image
    return draw_scene(rng, image_size=tuple(params.image_size), n_objects=int(rng.integers(lo, hi + 1)),
                      categories=categories, weights=weights, crowd=crowd)


def _jpeg(scene: Scene, rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    render(scene, rng).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))


def _bar(items, desc: str, progress: bool):
    # disable=None: a bar on a terminal, silence in a log file
    return tqdm(items, desc=desc, unit="img", disable=None if progress else True, leave=False)


def _unique_ids(rng: np.random.Generator, n: int, high: int) -> list[int]:
    return sorted(int(i) + 1 for i in rng.choice(high - 1, size=n, replace=False))


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO crowd encoding: run lengths over the column-major mask, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return {"counts": [int(r) for r in runs], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _visible_objects(scene: Scene) -> list[SceneObject]:
    """Objects in paint order, without the members of a crowd."""
    return [o for o in scene.objects if o.crowd_id is None]


def _crowd(scene: Scene) -> list[SceneObject]:
    return [o for o in scene.objects if o.crowd_id is not None]


# ----------------------------------------------------------------------------------------- V3Det


def _write_v3det(root: Path, params: SyntheticParams, progress: bool) -> dict[str, int]:
    rng = _rng(params, "v3det")
    # A long tail, as V3Det's: class k (in a seeded order) is drawn with weight 1 / k^skew.
    order = rng.permutation(len(ALL_CATEGORIES))
    weights = np.empty(len(ALL_CATEGORIES))
    weights[order] = 1.0 / np.arange(1, len(ALL_CATEGORIES) + 1) ** params.v3det_class_skew
    cat_id = {c: i + 1 for i, c in enumerate(ALL_CATEGORIES)}
    categories = [{"name": f"{colour} {shape}", "name_zh": "", "cat_info": f"A {shape} painted {colour}.",
                   "novel": bool(i % 2), "id": i + 1} for i, (shape, colour) in enumerate(ALL_CATEGORIES)]
    names = "".join(c["name"] + "\r\n" for c in categories)  # the official txt has CRLF line ends
    _write_bytes(root / layout.V3DET_CATEGORY_NAMES, names.encode())

    counts, image_id, ann_id = {}, 0, 0
    for split in ("train", "val"):
        images, annotations = [], []
        for _ in _bar(range(params.images[f"v3det_{split}"]), f"v3det {split}", progress):
            image_id += 1
            scene = _draw(rng, params, ALL_CATEGORIES, weights)
            objects = scene.objects
            node = f"a{cat_id[(objects[0].shape, objects[0].colour)]:08d}"
            file_name = f"images/{node}/{image_id:07d}.jpg"  # the prefix images/ is part of file_name
            _write_bytes(root / layout.V3DET_ROOT / file_name, _jpeg(scene, rng))
            images.append({"file_name": file_name, "height": scene.height, "width": scene.width, "id": image_id})
            for obj in objects:
                ann_id += 1
                x, y, w, h = obj.box
                annotations.append({"image_id": image_id, "category_id": cat_id[(obj.shape, obj.colour)],
                                    "bbox": [x, y, w, h], "iscrowd": 0, "area": round(w * h, 2), "id": ann_id})
        _write_json(root / layout.V3DET_ANNOTATIONS[split],
                    {"images": images, "categories": categories, "annotations": annotations})
        counts[f"v3det_{split}"] = len(images)
    return counts


# ------------------------------------------------------------------------------------------ COCO


def _draw_coco_pool(root: Path, params: SyntheticParams, progress: bool) -> dict[str, list[_Image]]:
    """COCO 2017 train/val images: most objects are COCO classes, a few are not (COCO omits them)."""
    rng = _rng(params, "coco")
    weights = np.array([3.0 if c in COCO_CATEGORIES else 1.0 for c in ALL_CATEGORIES])
    n_train, n_val = params.images["coco_train2017"], params.images["coco_val2017"]
    ids = [int(i) for i in rng.permutation(_unique_ids(rng, n_train + n_val, 600_000))]
    pool: dict[str, list[_Image]] = {}
    for split, split_ids in (("train", sorted(ids[:n_train])), ("val", sorted(ids[n_train:]))):
        images = []
        for image_id in _bar(split_ids, f"coco {split}2017", progress):
            scene = _draw(rng, params, ALL_CATEGORIES, weights, crowd=rng.random() < 0.12)
            image = _Image(image_id, scene, _jpeg(scene, rng))
            _write_bytes(root / layout.COCO_IMAGE_DIRS[split] / f"{image_id:012d}.jpg", image.jpeg)
            images.append(image)
        pool[split] = images
    return pool


def _coco_categories() -> list[dict]:
    return [{"supercategory": shape, "id": COCO_IDS[i], "name": f"{colour} {shape}"}
            for i, (shape, colour) in enumerate(COCO_CATEGORIES)]


def _coco_annotations(image: _Image, next_id: int) -> list[dict]:
    """Polygon annotations of the COCO-class objects, and one crowd RLE when the scene has a crowd."""
    cat_id = dict(zip(COCO_CATEGORIES, COCO_IDS))
    out = []
    for obj in _visible_objects(image.scene):
        if (obj.shape, obj.colour) not in cat_id:
            continue
        out.append({"segmentation": obj.polygons(), "area": round(obj.visible.area, 2), "iscrowd": 0,
                    "image_id": image.id, "bbox": obj.box, "category_id": cat_id[(obj.shape, obj.colour)],
                    "id": next_id + len(out)})
    crowd = _crowd(image.scene)
    if crowd and (crowd[0].shape, crowd[0].colour) in cat_id:
        mask = np.zeros((image.scene.height, image.scene.width), dtype=np.uint8)
        for member in crowd:
            mask |= object_mask(image.scene, member)
        ys, xs = np.nonzero(mask)
        x1, y1 = float(xs.min()), float(ys.min())
        out.append({"segmentation": _uncompressed_rle(mask), "area": float(mask.sum()), "iscrowd": 1,
                    "image_id": image.id, "bbox": [x1, y1, float(xs.max() + 1) - x1, float(ys.max() + 1) - y1],
                    "category_id": cat_id[(crowd[0].shape, crowd[0].colour)], "id": CROWD_ID_BASE + image.id})
    return out


def _coco_image(image: _Image, file_name: str, url: str) -> dict:
    return {"license": 4, "file_name": file_name, "coco_url": url, "height": image.scene.height,
            "width": image.scene.width, "date_captured": "2013-11-14 17:02:52",
            "flickr_url": f"http://farm4.staticflickr.com/synthetic/{image.id}.jpg", "id": image.id}


def _write_coco(root: Path, pool: dict[str, list[_Image]]) -> dict[str, int]:
    next_id = 1
    for split, images in pool.items():
        annotations = []
        for image in images:
            anns = _coco_annotations(image, next_id)
            next_id += len(anns)
            annotations += anns
        entries = [_coco_image(im, f"{im.id:012d}.jpg", f"http://images.cocodataset.org/{split}2017/{im.id:012d}.jpg")
                   for im in images]
        _write_json(root / layout.COCO_ANNOTATIONS[split],
                    {"info": COCO_INFO, "licenses": COCO_LICENSES, "images": entries,
                     "annotations": annotations, "categories": _coco_categories()})
    return {f"coco_{split}": len(images) for split, images in pool.items()}


# ------------------------------------------------------------------------------------------ LVIS


def _lvis_name(shape: str, colour: str) -> str:
    # LVIS names use underscores and parenthesised disambiguators, e.g. bat_(animal)
    return f"{colour}_cross_(shape)" if shape == "cross" else f"{colour}_{shape}"


def _write_lvis(root: Path, params: SyntheticParams, pool: dict[str, list[_Image]]) -> dict[str, int]:
    rng = _rng(params, "lvis")
    train = pool["train"]
    moved = set(int(i) for i in rng.choice(len(train), size=params.lvis_val_from_train2017, replace=False))
    splits = {"train": [im for i, im in enumerate(train) if i not in moved],
              "val": pool["val"] + [im for i, im in enumerate(train) if i in moved]}
    split_of_2017 = {im.id: s for s, images in pool.items() for im in images}
    cat_id = {c: i + 1 for i, c in enumerate(ALL_CATEGORIES)}

    # Frequency groups by training image count, as LVIS defines them: r 1-10, c 11-100, f > 100.
    image_count = {c: 0 for c in ALL_CATEGORIES}
    instance_count = {c: 0 for c in ALL_CATEGORIES}
    for image in splits["train"]:
        present = {(o.shape, o.colour) for o in image.scene.objects}
        for c in present:
            image_count[c] += 1
        for o in image.scene.objects:
            instance_count[(o.shape, o.colour)] += 1
    categories = []
    for (shape, colour), i in cat_id.items():
        n = image_count[(shape, colour)]
        categories.append({"frequency": "r" if n <= 10 else "c" if n <= 100 else "f",
                           "synset": f"{shape}.n.01", "synonyms": [_lvis_name(shape, colour), f"{shape}_({colour})"],
                           "id": i, "def": f"a {shape} painted {colour}", "name": _lvis_name(shape, colour),
                           "image_count": n, "instance_count": instance_count[(shape, colour)]})

    next_id = 1
    for split, images in splits.items():
        entries, annotations = [], []
        for image in images:
            present = {cat_id[(o.shape, o.colour)] for o in image.scene.objects}
            absent = sorted(set(cat_id.values()) - present)
            negatives = sorted(int(c) for c in rng.choice(absent, size=min(4, len(absent)), replace=False))
            folder = f"{split_of_2017[image.id]}2017"
            entries.append({"date_captured": "2013-11-14 17:02:52", "neg_category_ids": negatives, "id": image.id,
                            "license": 4, "height": image.scene.height, "width": image.scene.width,
                            "flickr_url": f"http://farm4.staticflickr.com/synthetic/{image.id}.jpg",
                            "coco_url": f"http://images.cocodataset.org/{folder}/{image.id:012d}.jpg",
                            "not_exhaustive_category_ids": []})
            for obj in image.scene.objects:  # crowd members too: LVIS annotates each instance
                annotations.append({"area": round(obj.visible.area, 2), "id": next_id, "segmentation": obj.polygons(),
                                    "image_id": image.id, "bbox": obj.box, "category_id": cat_id[(obj.shape, obj.colour)]})
                next_id += 1
        _write_json(root / layout.LVIS_ANNOTATIONS[split],
                    {"info": COCO_INFO, "licenses": COCO_LICENSES, "images": entries,
                     "annotations": annotations, "categories": categories})
    return {f"lvis_{split}": len(images) for split, images in splits.items()}


# -------------------------------------------------------------------------------------- RefCOCOg


def _write_refcocog(root: Path, params: SyntheticParams, pool: dict[str, list[_Image]]) -> dict[str, int]:
    """RefCOCOg umd on COCO train2014 images (which are COCO train2017 images, renamed)."""
    rng = _rng(params, "refcocog")
    sizes = params.refcocog_images
    candidates = [int(i) for i in rng.permutation(len(pool["train"]))]
    cat_id = dict(zip(COCO_CATEGORIES, COCO_IDS))
    images, annotations, refs = [], [], []
    ann_id = ref_id = sent_id = 0
    start, counts = 0, {}
    for split in ("train", "val", "test"):
        chosen = [pool["train"][i] for i in candidates[start:start + sizes[split]]]
        start += sizes[split]
        counts[f"refcocog_{split}"] = 0
        for image in sorted(chosen, key=lambda im: im.id):
            file_name = f"COCO_train2014_{image.id:012d}.jpg"
            annotated = [o for o in _visible_objects(image.scene) if (o.shape, o.colour) in cat_id]
            if not annotated:
                continue
            _write_bytes(root / layout.COCO2014_IMAGE_DIRS["train"] / file_name, image.jpeg)
            entry = _coco_image(image, file_name, f"http://mscoco.org/images/{image.id}")
            images.append(entry)
            ann_ids = {}
            for obj in annotated:
                ann_id += 1
                ann_ids[id(obj)] = ann_id
                annotations.append({"segmentation": obj.polygons(), "area": round(obj.visible.area, 2), "iscrowd": 0,
                                    "image_id": image.id, "bbox": obj.box, "category_id": cat_id[(obj.shape, obj.colour)],
                                    "id": ann_id})
            referred = 0
            for k in rng.permutation(len(annotated))[:3]:
                target = annotated[int(k)]
                sentences = referring_expressions(image.scene, target, annotated, rng, n=int(rng.integers(1, 3)))
                if not sentences:
                    continue
                ref_id += 1
                sents = []
                for text in sentences:
                    sent_id += 1
                    sents.append({"tokens": text.split(), "raw": text[0].upper() + text[1:] + ".",
                                  "sent_id": sent_id, "sent": text})
                refs.append({"image_id": image.id, "split": split, "sentences": sents,
                             "file_name": f"COCO_train2014_{image.id:012d}_{ann_ids[id(target)]}.jpg",
                             "category_id": cat_id[(target.shape, target.colour)], "ann_id": ann_ids[id(target)],
                             "sent_ids": [s["sent_id"] for s in sents], "ref_id": ref_id})
                referred += 1
            counts[f"refcocog_{split}"] += bool(referred)
    _write_json(root / layout.REFCOCOG_INSTANCES,
                {"info": COCO_INFO, "images": images, "licenses": COCO_LICENSES,
                 "annotations": annotations, "categories": _coco_categories()})
    path = root / layout.REFCOCOG_REFS
    path.write_bytes(pickle.dumps(refs, protocol=2))  # refer.py's files are Python-2 pickles
    return counts


# ------------------------------------------------------------------------------------------ POPE


def _write_pope(root: Path, params: SyntheticParams, pool: dict[str, list[_Image]]) -> dict[str, int]:
    """POPE on COCO val2014 images (our val2017 images, renamed), asking about COCO objects."""
    names = {(shape, colour): f"{colour} {shape}" for shape, colour in COCO_CATEGORIES}
    objects, by_name = {}, {}
    for image in pool["val"]:
        file_name = f"COCO_val2014_{image.id:012d}.jpg"
        listed = []  # POPE's ground truth lists each object name once, in annotation order
        for obj in image.scene.objects:
            name = names.get((obj.shape, obj.colour))
            if name and name not in listed:
                listed.append(name)
        objects[file_name] = listed
        by_name[file_name] = image
    questions = build_pope(objects, img_num=params.pope.images, sample_num=params.pope.sample_num,
                           rng=_rng(params, "pope"))
    for split, qs in questions.items():
        write_pope(root / layout.POPE_QUESTIONS[split], qs)
    for file_name in sorted({q["image"] for q in questions["random"]}):
        _write_bytes(root / layout.COCO2014_IMAGE_DIRS["val"] / file_name, by_name[file_name].jpeg)
    return {f"pope_{split}": len(qs) for split, qs in questions.items()}


# -------------------------------------------------------------------------------- Visual Genome


def _vg_object(obj: SceneObject, object_id: int, name_key: str) -> dict:
    x, y, w, h = (int(round(v)) for v in obj.box)
    entry = {"object_id": object_id, "x": x, "y": y, "w": w, "h": h, "synsets": [f"{obj.shape}.n.01"]}
    if name_key == "names":  # in relationships.json, entries with `names` also carry merged ids
        entry.update(names=[obj.name], merged_object_ids=[])
    else:
        entry["name"] = obj.name
    return entry


def _write_vg(root: Path, params: SyntheticParams, progress: bool) -> dict[str, int]:
    rng = _rng(params, "vg")
    n = params.images["vg"]
    image_data, regions_out, objects_out, relationships_out = [], [], [], []
    negative_y = set(int(i) for i in rng.choice(n, size=params.vg_negative_coordinate_regions, replace=False))
    region_id = object_id = relationship_id = 0
    for index in _bar(range(n), "vg", progress):
        image_id = index + 1
        scene = _draw(rng, params, ALL_CATEGORIES)
        folder = "VG_100K_2" if image_id % 3 == 0 else "VG_100K"
        _write_bytes(root / layout.VG_ROOT / folder / f"{image_id}.jpg", _jpeg(scene, rng))
        url = f"https://cs.stanford.edu/people/rak248/{folder}/{image_id}.jpg"
        image_data.append({"width": scene.width, "url": url, "height": scene.height, "image_id": image_id,
                           "coco_id": None, "flickr_id": None})

        ids = {}
        objects = []
        for obj in scene.objects:
            object_id += 1
            ids[id(obj)] = object_id
            objects.append(_vg_object(obj, object_id, "names"))
        objects_out.append({"image_id": image_id, "objects": objects, "image_url": url})

        pairs = [(a, b) for a in scene.objects for b in scene.objects if a is not b]
        chosen_pairs = [pairs[int(i)] for i in rng.permutation(len(pairs))[:len(scene.objects)]]
        relationships = []
        for a, b in chosen_pairs:
            relationship_id += 1
            predicate = relation(scene, a, b)
            relationships.append({"predicate": predicate.upper() if rng.random() < 0.3 else predicate,
                                  "object": _vg_object(b, ids[id(b)], "names" if ids[id(b)] % 2 else "name"),
                                  "relationship_id": relationship_id, "synsets": [],
                                  "subject": _vg_object(a, ids[id(a)], "names" if ids[id(a)] % 2 else "name")})
        relationships_out.append({"relationships": relationships, "image_id": image_id})

        regions = []
        for obj in scene.objects:
            region_id += 1
            x, y, w, h = (int(round(v)) for v in obj.box)
            phrase = region_phrase(scene, obj, rng)
            if rng.random() < 0.05:
                phrase += " "  # VG phrases sometimes keep a trailing space
            regions.append({"region_id": region_id, "width": w, "height": h, "image_id": image_id,
                            "phrase": phrase, "y": y, "x": x})
        for a, b in chosen_pairs[:2]:
            region_id += 1
            (ax, ay, aw, ah), (bx, by, bw, bh) = a.box, b.box
            x1, y1 = int(min(ax, bx)), int(min(ay, by))
            x2, y2 = int(round(max(ax + aw, bx + bw))), int(round(max(ay + ah, by + bh)))
            regions.append({"region_id": region_id, "width": x2 - x1, "height": y2 - y1, "image_id": image_id,
                            "phrase": relation_phrase(a, relation(scene, a, b), b), "y": y1, "x": x1})
        if index in negative_y:  # the real file has regions starting above the image (y < 0)
            regions[0]["y"] = -int(rng.integers(3, 30))
        regions_out.append({"regions": regions, "id": image_id})

    ids = np.arange(1, n + 1)
    order = rng.permutation(ids)
    n_val = int(round(params.vg_split_fractions["val"] * n))
    n_test = int(round(params.vg_split_fractions["test"] * n))
    splits = {"train": sorted(int(i) for i in order[n_val + n_test:]),
              "val": sorted(int(i) for i in order[:n_val]),
              "test": sorted(int(i) for i in order[n_val:n_val + n_test])}
    _write_json(root / layout.VG_IMAGE_DATA, image_data)
    _write_json(root / layout.VG_REGION_DESCRIPTIONS, regions_out)
    _write_json(root / layout.VG_OBJECTS, objects_out)
    _write_json(root / layout.VG_RELATIONSHIPS, relationships_out)
    _write_json(root / layout.VG_SPLITS, splits)
    return {f"vg_{split}": len(ids) for split, ids in splits.items()}


# ----------------------------------------------------------------------------------------- LLaVA


def _write_llava(root: Path, params: SyntheticParams, progress: bool) -> dict[str, int]:
    rng = _rng(params, "llava")
    records = []
    for number in _bar(_unique_ids(rng, params.images["llava"], 10**9), "llava", progress):
        scene = _draw(rng, params, ALL_CATEGORIES)
        image_id = f"{number:09d}"  # ids are zero-padded strings
        image = f"{image_id[:5]}/{image_id}.jpg"
        _write_bytes(root / layout.LLAVA_IMAGES / image, _jpeg(scene, rng))
        instruction = BRIEF_CAPTION_INSTRUCTIONS[int(rng.integers(len(BRIEF_CAPTION_INSTRUCTIONS)))]
        records.append({"id": image_id, "image": image,
                        "conversations": [{"from": "human", "value": f"{instruction}\n<image>"},
                                          {"from": "gpt", "value": image_caption(scene, rng)}]})
    _write_json(root / layout.LLAVA_JSON, records)
    return {"llava_train": len(records)}
