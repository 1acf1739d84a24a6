"""The data contracts catch each kind of bad record, quarantine exactly it and keep the rest."""

import numpy as np
import pytest
from PIL import Image

from rgpt.data import masks
from rgpt.data.formats import read_split
from rgpt.data.records import DatasetSplit, ImageRecord, Region, Relation, read_jsonl, write_jsonl
from rgpt.data.validate import DataContractError, check_gate, validate_conversations, validate_split

from conftest import embedded, small_synthetic_params

W, H = 40, 30  # recorded size of every image (PIL: width, height)
COCO_FILE = "coco/annotations/instances_val2017.json"
SQUARE = [[1, 1, 9, 1, 9, 9, 1, 9]]  # a polygon inside every image


def image(data_root, name, size=(W, H)):
    path = data_root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(path)
    return name


def record(dataset, split, image_id, file_name, regions=(), relations=(), captions=()):
    return ImageRecord(dataset, split, image_id, file_name, W, H, list(regions), list(relations), list(captions))


def good(region_id, **kw):
    return Region(box=[1, 1, 5, 5], id=region_id, category_id=1, **kw)


@pytest.fixture(scope="module")
def gx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gx")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def coco_split(data_root):
    """A COCO-style split with one of each bad record kind beside good ones."""
    def rec(image_id, regions=(), **kw):
        return record("coco", "val", image_id, image(data_root, f"coco/val2017/{image_id}.png"), regions, **kw)

    crowd_rle = {"counts": [100, 50, 1050], "size": [H, W]}  # uncompressed, list counts, as COCO crowds
    records = [
        rec(1, [Region([0, 0, 10, 10], 101, 1, segmentation=SQUARE),
                Region([5, 5, 20, 20], 900100284445, 2, segmentation=crowd_rle, iscrowd=True),
                Region([30.5, 20, 10, 10.5], 103, 1)]),  # 0.5 px over the right/bottom edge: within tolerance
        rec(2, [Region([35, 0, 10, 10], 201, 1),  # right edge at 45 > 40
                Region([-3, 0, 5, 5], 202, 1),  # left of the image
                Region([0, 0, 0, 5], 203, 1),  # zero width
                Region([0, 0, 5, -2], 204, 1),  # negative height
                good(205),
                Region([1, 1, 5], 206, 1)]),  # three numbers
        rec(3, [Region([1, 1, 5, 5], 900100284446, 99, iscrowd=True),  # unknown id, beyond int32
                Region([1, 1, 5, 5], 302, None),  # no category at all
                good(303)]),
        rec(4, [good(401, segmentation=masks.encode(np.ones((10, 10), np.uint8))),  # RLE of a 10x10 image
                good(402, segmentation=[[1, 2, 3]]),  # not a polygon: does not decode
                good(403, segmentation=SQUARE)]),
        rec(5, [good(501, phrases=["a dog", "  "]), good(502, phrases=["a dog"])]),
        record("coco", "val", 6, "coco/val2017/6.png", [good(601)]),  # no such file
        record("coco", "val", 7, "coco/val2017/7.png", [good(701)]),
        record("coco", "val", 8, image(data_root, "coco/val2017/8.png", size=(20, 10)), [good(801)]),
        rec(9, captions=["a room with a dog"]),  # no regions: kept for its caption
    ]
    (data_root / "coco/val2017/7.png").write_bytes(b"these bytes are not an image")
    return DatasetSplit("coco", "val", records, {1: "person", 2: "dog"}, [COCO_FILE])


@pytest.fixture(scope="module")
def coco_report(coco_split, data_root, gx_dir):
    return validate_split(coco_split, data_root, embedded("validate_"), gx_dir)


def test_raw_suite_counts_each_bad_kind_exactly(coco_report):
    assert coco_report.counts == {
        "regions": {"checked": 20, "bad": 10},
        "relations": {"checked": 0, "bad": 0},
        "images": {"checked": 9, "bad": 3},
        "captions": {"checked": 1, "bad": 0},
        "reasons": {
            "box outside the image": 2, "box has no area": 2, "box is not 4 finite numbers": 1,
            "unknown category id": 2,
            "mask size differs from the image": 1, "segmentation does not decode": 1, "blank phrase": 1,
            "image file missing": 1, "image unreadable": 1, "image size differs from the record": 1,
        },
    }


def test_raw_suite_keeps_every_good_region_and_image(coco_report, coco_split):
    clean = coco_report.clean
    assert [r.image_id for r in clean.records] == [1, 2, 3, 4, 5, 9]
    assert {r.image_id: [g.id for g in r.regions] for r in clean.records} == {
        1: [101, 900100284445, 103], 2: [205], 3: [303], 4: [403], 5: [502], 9: []}
    assert clean.records[0] is coco_split.records[0]  # untouched records are not copied
    assert clean.records[-1].captions == ["a room with a dog"]
    assert (clean.categories, clean.sources) == (coco_split.categories, coco_split.sources)
    assert len(coco_split.records[1].regions) == 6  # the input is not modified


def test_quarantine_entries_name_file_record_field_and_value(coco_report):
    by_region = {e["region_id"]: e for e in coco_report.quarantine if e["region_id"] is not None}
    assert by_region[900100284446] == {
        "dataset": "coco", "split": "val", "file": COCO_FILE, "image_id": 3, "region_id": 900100284446,
        "field": "regions[0].category_id", "reason": "unknown category id", "value": 99}
    assert by_region[302]["value"] is None
    assert by_region[201]["field"] == "regions[0].box"
    assert by_region[201]["value"] == {"box": [35, 0, 10, 10], "width": W, "height": H}
    assert by_region[401]["value"] == {"mask_height": 10, "mask_width": 10, "height": H, "width": W}
    assert by_region[402]["value"].startswith("ValueError: polygon segmentation")
    assert by_region[501]["value"] == ["a dog", "  "]

    by_image = {e["image_id"]: e for e in coco_report.quarantine if e["region_id"] is None}
    assert by_image[6]["field"] == "file_name" and by_image[6]["value"] == "coco/val2017/6.png"
    assert by_image[7]["reason"] == "image unreadable"
    assert by_image[7]["value"]["open_error"].startswith("UnidentifiedImageError")
    assert by_image[8]["value"] == {"width": W, "height": H, "actual_width": 20, "actual_height": 10}


def test_vg_negative_y_region_and_bad_relation_box_are_quarantined(data_root, gx_dir):
    sky = Region([1, 1, 5, 5], 3, phrases=["sky"])
    records = [
        record("vg", "train", 1, image(data_root, "vg/VG_100K/1.png"),
               [Region([2, -5, 10, 10], 1, phrases=["a cat"]),  # VG has regions above the image
                Region([1, 1, 5, 5], 2, phrases=[]), sky],  # a VG region without a description
               [Relation(sky, "above", Region([0, 0, 50, 10], 4)), Relation(sky, "near", Region([2, 2, 3, 3], 5))]),
        record("vg", "train", 2, image(data_root, "vg/VG_100K/2.png"), relations=[Relation(sky, "on", sky)]),
        record("vg", "train", 3, image(data_root, "vg/VG_100K/3.png"), [Region([0, -2, 5, 5], 6, phrases=["a dog"])]),
    ]
    report = validate_split(DatasetSplit("vg", "train", records, {}, ["vg/region_descriptions.json"]),
                            data_root, embedded("validate_"), gx_dir)

    assert report.checked == {"regions": 4, "relations": 3, "images": 3, "captions": 0}
    assert report.bad == {"regions": 3, "relations": 1, "images": 0, "captions": 0}
    assert [(e["region_id"], e["field"], e["reason"]) for e in report.quarantine] == [
        (1, "regions[0].box", "box outside the image"),
        (2, "regions[1].phrases", "region has no phrase"),
        (4, "relations[0].object.box", "box outside the image"),
        (6, "regions[0].box", "box outside the image"),
    ]
    first, second, third = report.clean.records
    assert first.regions == [sky] and [r.predicate for r in first.relations] == ["near"]
    assert second is records[1]
    assert third.regions == []  # an image without regions stays


def test_llava_records_need_non_blank_captions(gx_dir, data_root):
    records = [record("llava", "train", f"00000{i}", f"00000/00000{i}.jpg", captions=c)
               for i, c in enumerate([["a cat on a mat"], ["  "], []])]
    report = validate_split(DatasetSplit("llava", "train", records), data_root,
                            embedded("validate_", image_check="none"), gx_dir)

    assert [r.image_id for r in report.clean.records] == ["000000"]
    assert report.counts["captions"] == {"checked": 3, "bad": 2}
    assert report.counts["images"] == {"checked": 0, "bad": 0}
    assert report.reasons == {"blank caption": 1, "record has no caption": 1}


@pytest.fixture(scope="module")
def clean_report(coco_split, data_root, gx_dir):
    good_records = [coco_split.records[0], coco_split.records[-1]]
    return validate_split(DatasetSplit("coco", "train", good_records, {1: "person", 2: "dog"}, [COCO_FILE]),
                          data_root, embedded("validate_"), gx_dir)


def test_clean_split_passes_untouched(clean_report, coco_split):
    assert clean_report.clean == DatasetSplit("coco", "train", [coco_split.records[0], coco_split.records[-1]],
                                              {1: "person", 2: "dog"}, [COCO_FILE])
    assert clean_report.quarantine == []
    assert clean_report.bad == {"regions": 0, "relations": 0, "images": 0, "captions": 0}


def test_gate_raises_above_threshold_naming_split_reasons_and_files(coco_report, clean_report, tmp_path):
    quarantine = tmp_path / "quarantine.jsonl"
    with pytest.raises(DataContractError) as error:
        check_gate([clean_report, coco_report], 0.02, quarantine)
    message = str(error.value)
    assert "coco_val: 10 of 20 regions bad (50.0% > 2.0%); 3 of 9 images bad (33.3% > 2.0%)" in message
    assert "coco_train" not in message
    assert "box outside the image (2)" in message
    assert f"file={COCO_FILE} image_id=2 region_id=201 field=regions[0].box" in message
    assert str(quarantine) in message and str(coco_report.docs_index) in message


def test_gate_passes_at_or_below_threshold(coco_report, clean_report, tmp_path):
    check_gate([clean_report], 0.0, tmp_path / "q.jsonl")
    check_gate([coco_report], 0.5, tmp_path / "q.jsonl")


def test_image_check_samples_a_seeded_subset(tmp_path, gx_dir):
    for i in range(10):
        (tmp_path / f"{i}.png").write_bytes(b"corrupt")
    split = DatasetSplit("v3det", "val", [record("v3det", "val", i, f"{i}.png") for i in range(10)], {1: "Timer"})

    def unreadable(seed):
        report = validate_split(split, tmp_path, embedded("validate_", image_check=3, seed=seed), gx_dir)
        assert report.checked["images"] == 3 and len(report.clean.records) == 7
        return [e["image_id"] for e in report.quarantine]

    first = unreadable(0)
    assert unreadable(0) == first
    assert unreadable(1) != first


def test_data_docs_index_is_written(coco_report, gx_dir):
    assert coco_report.docs_index.is_file()
    assert coco_report.docs_index.is_relative_to(gx_dir)
    assert "raw.coco_val" in coco_report.docs_index.read_text()


def test_quarantine_entries_are_plain_json(coco_report, tmp_path):
    path = tmp_path / "quarantine.jsonl"
    assert write_jsonl(path, coco_report.quarantine) == 13
    assert list(read_jsonl(path)) == coco_report.quarantine


def test_synthetic_vg_loses_exactly_its_negative_coordinate_regions(corpus, gx_dir):
    reports = [validate_split(read_split(corpus, "vg", split), corpus, embedded("validate_"), gx_dir)
               for split in ("train", "val", "test")]
    entries = [e for report in reports for e in report.quarantine]
    assert len(entries) == small_synthetic_params().vg_negative_coordinate_regions
    assert {(e["reason"], e["value"]["box"][1] < 0) for e in entries} == {("box outside the image", True)}
    assert sum(r.bad["regions"] for r in reports) == len(entries)
    assert sum(len(r.clean.records) for r in reports) == sum(r.checked["images"] for r in reports)


def conversation(sample_id, turns, boxes=([1, 1, 5, 5],)):
    return {"id": sample_id, "dataset": "coco", "image": f"coco/train2017/{sample_id}.jpg", "width": W, "height": H,
            "regions": [{"box": list(b), "segmentation": None} for b in boxes],
            "conversations": [{"from": f, "value": v} for f, v in zip(["human", "gpt"] * 3, turns)],
            "tasks": ["brief"]}


def test_conversation_suite_catches_each_rule(gx_dir):
    samples = [
        conversation("good", ["<image>\nWhat is <region>?", "A cat."]),
        conversation("dup", ["<image>\nWhat is <region>?", "A cat."]),
        conversation("dup", ["<image>\nWhat is <region>?", "A dog."]),
        conversation("ends-human", ["<image>\nWhat is <region>?", "A cat.", "And?"]),
        conversation("no-image", ["What is <region>?", "A cat."]),
        conversation("two-images", ["<image><image>\nWhat is <region>?", "A cat."]),
        conversation("late-image", ["<image>\nWhat is <region>?", "A cat.", "<image> again?", "Yes."]),
        conversation("count", ["<image>\nWhat is <region>?", "A cat."], boxes=([1, 1, 5, 5], [2, 2, 5, 5])),
        conversation("gpt-region", ["<image>\nWhat is <region>?", "It is <region>."]),
        conversation("blank", ["<image>\nWhat is <region>?", "  "]),
        conversation("box-out", ["<image>\nWhat is <region>?", "A cat."], boxes=([0, 0, 100, 10],)),
        conversation("box-empty", ["<image>\nWhat is <region>?", "A cat."], boxes=([0, 0, 0, 0],)),
    ]
    starts_with_gpt = conversation("gpt-first", ["<image>\nDescribe the image.", "A cat."], boxes=())
    starts_with_gpt["conversations"][0]["from"] = "gpt"
    samples.append(starts_with_gpt)

    report = validate_conversations(samples, gx_dir, "stage2_train")

    assert [s["id"] for s in report.clean] == ["good"]
    assert report.counts["samples"] == {"checked": 13, "bad": 12}
    assert [(e["id"], e["reason"]) for e in report.quarantine] == [
        ("dup", "duplicate id"), ("dup", "duplicate id"),
        ("ends-human", "turns do not alternate human/gpt from human to gpt"),
        ("no-image", "first turn does not hold <image> exactly once"),
        ("two-images", "first turn does not hold <image> exactly once"),
        ("late-image", "<image> after the first turn"),
        ("count", "<region> count differs from len(regions)"),
        ("gpt-region", "<region> in a gpt turn"),
        ("blank", "blank turn"),
        ("box-out", "box outside the image"),
        ("box-empty", "box has no area"),
        ("gpt-first", "turns do not alternate human/gpt from human to gpt"),
    ]
    assert report.quarantine[-3]["field"] == "regions[0].box"
    assert report.quarantine[6]["value"] == {"human_regions": 1, "regions": 2}
