"""One reader per real dataset format, each into `DatasetSplit` (the one internal record type).

The readers follow the formats' own conventions, checked against the readers that use them
(shared/reference/dataset-formats.md): COCO-style `[x, y, w, h]` boxes, segmentations kept as
written, LVIS image paths from `coco_url`, V3Det `file_name`s that already start with `images/`,
VG's index-aligned lists and its `name` / `names` variants, RefCOCOg's Python-2 pickle. They read
the synthetic twins and the real files alike. A missing field raises `FormatError` naming the
file, the record and the field.
"""

from __future__ import annotations

import json
import pickle
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from . import layout
from .records import DatasetSplit, ImageRecord, Region, Relation


class FormatError(ValueError):
    """A source file does not have the structure its format promises."""


def _load_json(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `rgpt download` (or `make data`) first")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e


def _get(record: dict, key: str, path: Path, where: str) -> Any:
    try:
        return record[key]
    except (KeyError, TypeError):
        raise FormatError(f"{path}: {where}: missing field {key!r}") from None


def _key_list(data: Any, key: str, path: Path) -> list:
    value = _get(data, key, path, "top level")
    if not isinstance(value, list):
        raise FormatError(f"{path}: top level: {key!r} must be a list, got {type(value).__name__}")
    return value


# ------------------------------------------------------------------------ COCO-style (3 formats)


def _read_coco_style(path: Path, dataset: str, split: str, file_name: Callable[[dict], str],
                     category_name: Callable[[dict], str] = lambda c: c["name"]) -> DatasetSplit:
    """COCO, LVIS and V3Det share this structure; they differ in image paths and category fields."""
    data = _load_json(path)
    categories = {}
    for i, c in enumerate(_key_list(data, "categories", path)):
        categories[int(_get(c, "id", path, f"categories[{i}]"))] = category_name(c)
    by_image: dict[int, list[Region]] = defaultdict(list)
    for i, ann in enumerate(_key_list(data, "annotations", path)):
        where = f"annotations[{i}] (id {ann.get('id')})" if isinstance(ann, dict) else f"annotations[{i}]"
        category_id = int(_get(ann, "category_id", path, where))
        by_image[int(_get(ann, "image_id", path, where))].append(Region(
            box=[float(v) for v in _get(ann, "bbox", path, where)],
            id=int(_get(ann, "id", path, where)),
            category_id=category_id,
            category=categories.get(category_id),
            segmentation=ann.get("segmentation"),
            iscrowd=bool(ann.get("iscrowd", 0)),
        ))
    records = []
    for i, img in enumerate(_key_list(data, "images", path)):
        where = f"images[{i}] (id {img.get('id')})" if isinstance(img, dict) else f"images[{i}]"
        image_id = int(_get(img, "id", path, where))
        records.append(ImageRecord(dataset, split, image_id, file_name(img),
                                   int(_get(img, "width", path, where)), int(_get(img, "height", path, where)),
                                   regions=by_image.pop(image_id, [])))
    if by_image:
        orphan = next(iter(by_image))
        raise FormatError(f"{path}: {len(by_image)} image id(s) in annotations are not in images, e.g. {orphan}")
    return DatasetSplit(dataset, split, records, categories, [str(path)])


def read_coco(root: str | Path, split: str) -> DatasetSplit:
    """COCO 2017 instances (`split`: train | val)."""
    root = Path(root)
    image_dir = layout.COCO_IMAGE_DIRS[split]
    return _read_coco_style(root / layout.COCO_ANNOTATIONS[split], "coco", split,
                            lambda img: f"{image_dir}/{img['file_name']}")


def read_lvis(root: str | Path, split: str) -> DatasetSplit:
    """LVIS v1: no `file_name`; the image is `coco/<train2017|val2017>/<name>` from `coco_url`."""
    root = Path(root)
    path = root / layout.LVIS_ANNOTATIONS[split]

    def file_name(img: dict) -> str:
        url = _get(img, "coco_url", path, f"image {img.get('id')}")
        folder, name = url.rstrip("/").split("/")[-2:]
        return f"{layout.COCO_ROOT}/{folder}/{name}"

    return _read_coco_style(path, "lvis", split, file_name)


def read_v3det(root: str | Path, split: str) -> DatasetSplit:
    """V3Det v1: boxes only; `file_name` starts with `images/`, so the image root is `V3Det/`."""
    root = Path(root)
    return _read_coco_style(root / layout.V3DET_ANNOTATIONS[split], "v3det", split,
                            lambda img: f"{layout.V3DET_ROOT}/{img['file_name']}")


def read_v3det_category_names(path: str | Path) -> list[str]:
    """The official name list: line i is category id i + 1; CRLF line ends; names are case-sensitive."""
    text = Path(path).read_bytes().decode("utf-8")
    return [line.rstrip("\r") for line in text.split("\n") if line.rstrip("\r")]


# -------------------------------------------------------------------------------------- RefCOCOg


def read_refcocog(root: str | Path, split: str) -> DatasetSplit:
    """RefCOCOg umd (`split`: train | val | test), as the refer API reads it.

    Each image of the split becomes one record holding every annotation of instances.json on it;
    the referred ones carry their expressions (`sent`) as phrases.
    """
    root = Path(root)
    refs_path, instances_path = root / layout.REFCOCOG_REFS, root / layout.REFCOCOG_INSTANCES
    if not refs_path.exists():
        raise FileNotFoundError(f"{refs_path} not found: run `rgpt download` (or `make data`) first")
    with open(refs_path, "rb") as f:  # a Python-2 pickle: binary mode, latin1 for its byte strings
        refs = pickle.load(f, encoding="latin1")
    image_dir = layout.COCO2014_IMAGE_DIRS["train"]
    instances = _read_coco_style(instances_path, "refcocog", split, lambda img: f"{image_dir}/{img['file_name']}")
    regions_by_ann = {r.id: r for rec in instances.records for r in rec.regions}

    image_ids = set()
    for i, ref in enumerate(refs):
        where = f"ref {i} (ref_id {ref.get('ref_id')})" if isinstance(ref, dict) else f"ref {i}"
        if _get(ref, "split", refs_path, where) != split:
            continue
        ann_id = int(_get(ref, "ann_id", refs_path, where))
        if ann_id not in regions_by_ann:
            raise FormatError(f"{refs_path}: {where}: ann_id {ann_id} is not in {instances_path}")
        sentences = _get(ref, "sentences", refs_path, where)
        regions_by_ann[ann_id].phrases += [_get(s, "sent", refs_path, f"{where} sentences") for s in sentences]
        image_ids.add(int(_get(ref, "image_id", refs_path, where)))
    records = [r for r in instances.records if r.image_id in image_ids]
    return DatasetSplit("refcocog", split, records, instances.categories, [str(refs_path), str(instances_path)])


# --------------------------------------------------------------------------------- Visual Genome


def _vg_region(obj: dict, path: Path, where: str, *, phrase_key: str | None = None) -> Region:
    """A VG box: regions use width/height, objects and relationship ends use w/h."""
    w = obj["width"] if "width" in obj else _get(obj, "w", path, where)
    h = obj["height"] if "height" in obj else _get(obj, "h", path, where)
    box = [float(_get(obj, "x", path, where)), float(_get(obj, "y", path, where)), float(w), float(h)]
    if phrase_key:
        return Region(box, id=obj.get("region_id", obj.get("id")), phrases=[str(_get(obj, phrase_key, path, where)).strip()])
    # a relationship end carries either "name": str or "names": [str]
    names = obj["names"] if "names" in obj else [_get(obj, "name", path, where)]
    return Region(box, id=obj.get("object_id"), phrases=[str(n).strip() for n in names])


def read_vg(root: str | Path, split: str) -> DatasetSplit:
    """Visual Genome region descriptions and relationships for a DenseCap split (train | val | test)."""
    root = Path(root)
    paths = {name: root / p for name, p in (("image_data", layout.VG_IMAGE_DATA),
                                            ("regions", layout.VG_REGION_DESCRIPTIONS),
                                            ("relationships", layout.VG_RELATIONSHIPS),
                                            ("splits", layout.VG_SPLITS))}
    splits = _load_json(paths["splits"])
    wanted = set(int(i) for i in _get(splits, split, paths["splits"], "top level"))
    image_data = _load_json(paths["image_data"])
    regions = _load_json(paths["regions"])
    relationships = _load_json(paths["relationships"])
    for name, items in (("regions", regions), ("relationships", relationships)):
        if len(items) != len(image_data):  # the files are index-aligned lists
            raise FormatError(f"{paths[name]}: {len(items)} entries but {paths['image_data']} has {len(image_data)}")

    records = []
    for i, (img, reg, rel) in enumerate(zip(image_data, regions, relationships)):
        where = f"entry {i}"
        image_id = int(img["image_id"] if "image_id" in img else _get(img, "id", paths["image_data"], where))
        if image_id not in wanted:
            continue
        for name, item, key in (("regions", reg, "id"), ("relationships", rel, "image_id")):
            other = item.get(key, item.get("image_id"))
            if other is not None and int(other) != image_id:
                raise FormatError(f"{paths[name]}: {where}: image id {other} but image_data has {image_id} there")
        folder = _get(img, "url", paths["image_data"], where).rstrip("/").split("/")[-2]  # VG_100K or VG_100K_2
        record = ImageRecord("vg", split, image_id, f"{layout.VG_ROOT}/{folder}/{image_id}.jpg",
                             int(_get(img, "width", paths["image_data"], where)),
                             int(_get(img, "height", paths["image_data"], where)))
        for j, r in enumerate(_get(reg, "regions", paths["regions"], where)):
            record.regions.append(_vg_region(r, paths["regions"], f"{where} regions[{j}]", phrase_key="phrase"))
        for j, r in enumerate(_get(rel, "relationships", paths["relationships"], where)):
            w = f"{where} relationships[{j}]"
            record.relations.append(Relation(
                _vg_region(_get(r, "subject", paths["relationships"], w), paths["relationships"], f"{w} subject"),
                str(_get(r, "predicate", paths["relationships"], w)).strip(),
                _vg_region(_get(r, "object", paths["relationships"], w), paths["relationships"], f"{w} object")))
        records.append(record)
    return DatasetSplit("vg", split, records, {}, [str(p) for p in paths.values()])


# ----------------------------------------------------------------------------------------- LLaVA


def read_llava(root: str | Path, split: str = "train") -> DatasetSplit:
    """LAION-CC-SBU-558K captions. The json has no image sizes: they are read from the image
    headers; an image that is not there gets size 0 x 0, which validation reports as missing."""
    root = Path(root)
    path = root / layout.LLAVA_JSON
    data = _load_json(path)
    if not isinstance(data, list):
        raise FormatError(f"{path}: top level must be a list of records, got {type(data).__name__}")
    records = []
    for i, item in enumerate(data):
        where = f"record {i} (id {item.get('id')})" if isinstance(item, dict) else f"record {i}"
        turns = _get(item, "conversations", path, where)
        captions = [_get(t, "value", path, f"{where} conversations") for t in turns if t.get("from") == "gpt"]
        prompts = [_get(t, "value", path, f"{where} conversations") for t in turns if t.get("from") == "human"]
        file_name = f"{layout.LLAVA_IMAGES}/{_get(item, 'image', path, where)}"
        try:
            with Image.open(root / file_name) as im:
                width, height = im.size
        except OSError:  # missing or unreadable
            width = height = 0
        records.append(ImageRecord("llava", split, str(_get(item, "id", path, where)), file_name, width, height,
                                   captions=captions, caption_prompts=prompts))
    return DatasetSplit("llava", split, records, {}, [str(path)])



# Every dataset split the pipeline reads, with its reader.
READERS: dict[str, Callable[[str | Path, str], DatasetSplit]] = {
    "v3det": read_v3det, "vg": read_vg, "coco": read_coco, "lvis": read_lvis,
    "refcocog": read_refcocog, "llava": read_llava,
}
SPLITS: dict[str, tuple[str, ...]] = {
    "v3det": ("train", "val"), "vg": ("train", "val", "test"), "coco": ("train", "val"),
    "lvis": ("train", "val"), "refcocog": ("train", "val", "test"), "llava": ("train",),
}


def read_split(root: str | Path, dataset: str, split: str) -> DatasetSplit:
    if dataset not in READERS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(READERS)}")
    if split not in SPLITS[dataset]:
        raise ValueError(f"{dataset} has no split {split!r}; it has {', '.join(SPLITS[dataset])}")
    return READERS[dataset](root, split)
