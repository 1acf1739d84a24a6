"""Each reader on the synthetic twin of its format, checked against the format's own tools."""

from __future__ import annotations

import contextlib
import io
import json
import pickle

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rgpt.data import layout, masks
from rgpt.data.formats import (
    FormatError,
    read_coco,
    read_llava,
    read_lvis,
    read_refcocog,
    read_split,
    read_v3det,
    read_v3det_category_names,
    read_vg,
)
from rgpt.data.pope import read_pope


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def test_coco_is_valid_for_pycocotools_and_cocoeval(corpus):
    path = corpus / layout.COCO_ANNOTATIONS["val"]
    gt = _quiet(COCO, str(path))
    assert len(gt.getCatIds()) == 80
    assert 12 not in gt.getCatIds() and 90 in gt.getCatIds()  # the real id gaps
    # ground truth submitted as detections scores AP 1.0 on boxes and masks
    for iou_type in ("bbox", "segm"):
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
                 "segmentation": gt.annToRLE(a)} for a in gt.dataset["annotations"] if not a["iscrowd"]]
        evaluator = COCOeval(gt, _quiet(gt.loadRes, dets), iou_type)
        _quiet(evaluator.evaluate)
        _quiet(evaluator.accumulate)
        _quiet(evaluator.summarize)
        assert evaluator.stats[0] == pytest.approx(1.0)


def test_read_coco(corpus):
    split = read_coco(corpus, "train")
    assert split.dataset == "coco" and len(split.records) == 60
    assert sorted(split.categories)[:12] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]
    crowd = [r for rec in split.records for r in rec.regions if r.iscrowd]
    polygons = [r for rec in split.records for r in rec.regions if not r.iscrowd]
    assert crowd and all(isinstance(r.segmentation["counts"], list) for r in crowd)  # uncompressed RLE
    assert all(r.id > 2**31 for r in crowd)  # crowd ids exceed int32, as in the real files
    assert all(isinstance(r.segmentation, list) for r in polygons)
    for rec in split.records:
        assert (corpus / rec.file_name).exists()
        assert rec.file_name.startswith("coco/train2017/")
        for region in rec.regions:
            mask = masks.decode(region.segmentation, rec.height, rec.width)
            assert mask.shape == (rec.height, rec.width) and mask.sum() > 0
            assert region.category == split.categories[region.category_id]


def test_read_lvis_paths_from_coco_url_and_val_mixes_train2017(corpus):
    data = json.loads((corpus / layout.LVIS_ANNOTATIONS["val"]).read_text())
    assert all("file_name" not in img for img in data["images"])
    assert all("iscrowd" not in a for a in data["annotations"])
    assert all(isinstance(a["segmentation"], list) for a in data["annotations"])  # polygons only
    assert {c["frequency"] for c in data["categories"]} <= {"r", "c", "f"}
    val = read_lvis(corpus, "val")
    folders = {rec.file_name.split("/")[1] for rec in val.records}
    assert folders == {"train2017", "val2017"}
    assert all((corpus / rec.file_name).exists() for rec in val.records)
    train_ids = {rec.image_id for rec in read_lvis(corpus, "train").records}
    assert not train_ids & {rec.image_id for rec in val.records}
    assert any("_(" in name for name in val.categories.values())  # LVIS-style disambiguators


def test_read_v3det_and_category_name_list(corpus):
    split = read_v3det(corpus, "train")
    assert len(split.categories) == 120
    data = json.loads((corpus / layout.V3DET_ANNOTATIONS["train"]).read_text())
    assert all(img["file_name"].startswith("images/") for img in data["images"])
    assert all("segmentation" not in a for a in data["annotations"])
    assert all(rec.file_name.startswith("v3det/V3Det/images/") and (corpus / rec.file_name).exists()
               for rec in split.records)
    raw = (corpus / layout.V3DET_CATEGORY_NAMES).read_bytes()
    assert raw.count(b"\r\n") == 120
    names = read_v3det_category_names(corpus / layout.V3DET_CATEGORY_NAMES)
    assert {i + 1: n for i, n in enumerate(names)} == split.categories  # line i is id i + 1


def test_v3det_names_are_case_sensitive(tmp_path):
    path = tmp_path / layout.V3DET_ANNOTATIONS["val"]
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "images": [{"file_name": "images/a1/x.jpg", "height": 10, "width": 10, "id": 1}],
        "categories": [{"name": "Timer", "id": 1}, {"name": "timer", "id": 2}],
        "annotations": [{"image_id": 1, "category_id": 2, "bbox": [1, 1, 2, 2], "iscrowd": 0, "area": 4, "id": 7}]}))
    split = read_v3det(tmp_path, "val")
    assert split.categories == {1: "Timer", 2: "timer"}
    assert split.records[0].regions[0].category == "timer"


def test_read_vg_handles_name_variants_and_negative_coordinates(corpus):
    raw = json.loads((corpus / layout.VG_RELATIONSHIPS).read_text())
    ends = [r[k] for item in raw for r in item["relationships"] for k in ("subject", "object")]
    assert any("name" in e for e in ends) and any("names" in e for e in ends)
    regions = json.loads((corpus / layout.VG_REGION_DESCRIPTIONS).read_text())
    assert sum(r["y"] < 0 for item in regions for r in item["regions"]) == 2
    splits = json.loads((corpus / layout.VG_SPLITS).read_text())
    read = {s: read_vg(corpus, s) for s in ("train", "val", "test")}
    ids = {s: {rec.image_id for rec in read[s].records} for s in read}
    assert sum(len(v) for v in ids.values()) == 40
    assert all(ids[s] == set(splits[s]) for s in ids)
    for rec in read["train"].records:
        assert (corpus / rec.file_name).exists()
        assert rec.file_name.split("/")[1] in ("VG_100K", "VG_100K_2")
        assert all(p == p.strip() and p for r in rec.regions for p in r.phrases)
        for rel in rec.relations:
            assert rel.subject.phrases and rel.object.phrases and rel.predicate


def test_read_vg_rejects_misaligned_files(corpus, tmp_path):
    for rel in (layout.VG_IMAGE_DATA, layout.VG_REGION_DESCRIPTIONS, layout.VG_RELATIONSHIPS, layout.VG_SPLITS):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((corpus / rel).read_bytes())
    regions = json.loads((tmp_path / layout.VG_REGION_DESCRIPTIONS).read_text())
    (tmp_path / layout.VG_REGION_DESCRIPTIONS).write_text(json.dumps(regions[:-1]))
    with pytest.raises(FormatError, match="region_descriptions.json: 39 entries but .*image_data.json has 40"):
        read_vg(tmp_path, "train")


def test_read_refcocog_matches_refer_conventions(corpus):
    with open(corpus / layout.REFCOCOG_REFS, "rb") as f:
        refs = pickle.load(f)
    instances = json.loads((corpus / layout.REFCOCOG_INSTANCES).read_text())
    assert set(instances) == {"info", "images", "licenses", "annotations", "categories"}
    anns = {a["id"]: a for a in instances["annotations"]}
    for ref in refs:  # the key accesses REFER.createIndex makes
        assert ref["ann_id"] in anns and anns[ref["ann_id"]]["image_id"] == ref["image_id"]
        assert ref["file_name"] == f"COCO_train2014_{ref['image_id']:012d}_{ref['ann_id']}.jpg"
        assert all({"tokens", "raw", "sent_id", "sent"} <= set(s) for s in ref["sentences"])
    images = {}
    for split in ("train", "val", "test"):
        read = read_refcocog(corpus, split)
        images[split] = {rec.image_id for rec in read.records}
        for rec in read.records:
            assert rec.file_name.startswith("coco/train2014/COCO_train2014_") and (corpus / rec.file_name).exists()
            referred = [r for r in rec.regions if r.phrases]
            assert referred
            for region in referred:
                ref = next(x for x in refs if x["ann_id"] == region.id)
                assert region.phrases == [s["sent"] for s in ref["sentences"]]
    assert not images["train"] & images["val"] and not images["val"] & images["test"]  # umd: no overlap


def test_read_refcocog_names_a_missing_annotation(corpus, tmp_path):
    for rel in (layout.REFCOCOG_INSTANCES, layout.REFCOCOG_REFS):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((corpus / rel).read_bytes())
    with open(tmp_path / layout.REFCOCOG_REFS, "rb") as f:
        refs = pickle.load(f)
    refs[0]["ann_id"] = 10**12
    (tmp_path / layout.REFCOCOG_REFS).write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(FormatError, match=r"refs\(umd\).p: ref 0 .* ann_id 1000000000000 is not in"):
        read_refcocog(tmp_path, refs[0]["split"])


def test_read_llava(corpus):
    raw = json.loads((corpus / layout.LLAVA_JSON).read_text())
    assert all(isinstance(r["id"], str) and len(r["id"]) == 9 for r in raw)
    assert all(r["image"] == f"{r['id'][:5]}/{r['id']}.jpg" for r in raw)
    assert all(len(r["conversations"]) == 2 and "<image>" in r["conversations"][0]["value"] for r in raw)
    split = read_llava(corpus)
    for rec, item in zip(split.records, raw):
        assert rec.image_id == item["id"]
        assert rec.captions == [item["conversations"][1]["value"]]
        assert rec.caption_prompts == [item["conversations"][0]["value"]]
        with Image.open(corpus / rec.file_name) as im:
            assert (rec.width, rec.height) == im.size


def test_pope_files_follow_popes_structure(corpus):
    files = {s: read_pope(corpus / layout.POPE_QUESTIONS[s]) for s in layout.POPE_SPLITS}
    with pytest.raises(json.JSONDecodeError):  # JSON Lines, not one JSON document
        json.loads((corpus / layout.POPE_QUESTIONS["random"]).read_text())
    for questions in files.values():
        assert len(questions) == 12 * 3 * 2
        assert [q["label"] for q in questions[:6]] == ["yes", "no"] * 3
        assert [q["question_id"] for q in questions] == list(range(1, len(questions) + 1))
        assert list(questions[0]) == ["question_id", "image", "text", "label"]
        assert all((corpus / layout.COCO2014_IMAGE_DIRS["val"] / q["image"]).exists() for q in questions)
    positives = [[q for q in qs if q["label"] == "yes"] for qs in files.values()]
    assert positives[0] == positives[1] == positives[2]  # the splits share images and positives
    assert all(" an " in q["text"] for q in files["random"] if q["text"].split()[3][0] in "aeiou")


def test_format_error_names_file_record_and_field(corpus, tmp_path):
    data = json.loads((corpus / layout.COCO_ANNOTATIONS["val"]).read_text())
    bad_id = data["annotations"][3]["id"]
    del data["annotations"][3]["bbox"]
    path = tmp_path / layout.COCO_ANNOTATIONS["val"]
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    with pytest.raises(FormatError, match=rf"instances_val2017.json: annotations\[3\] \(id {bad_id}\): missing field 'bbox'"):
        read_coco(tmp_path, "val")


def test_read_split_rejects_unknown_names(corpus):
    with pytest.raises(ValueError, match="unknown dataset 'objects365'"):
        read_split(corpus, "objects365", "train")
    with pytest.raises(ValueError, match="coco has no split 'test'"):
        read_split(corpus, "coco", "test")


def test_missing_annotation_file_says_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `rgpt download`"):
        read_coco(tmp_path, "val")


def test_region_masks_round_trip(corpus):
    rec = read_coco(corpus, "val").records[0]
    region = next(r for r in rec.regions if not r.iscrowd)
    mask = masks.decode(region.segmentation, rec.height, rec.width)
    assert np.array_equal(masks.decode(masks.encode(mask), rec.height, rec.width), mask)
