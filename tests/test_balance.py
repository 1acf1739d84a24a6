from collections import Counter

import numpy as np
import pytest

from rgpt.config import BalanceParams
from rgpt.data.balance import (
    balance_all,
    cap_per_class,
    cap_per_image,
    class_count_rows,
    class_counts,
    per_group_cap,
    summary_metrics,
)
from rgpt.data.records import DatasetSplit, ImageRecord, Region, Relation


def region(region_id: int, category_id: int | None = None, iscrowd: bool = False) -> Region:
    return Region(box=[0.0, 0.0, 4.0, 4.0], id=region_id, category_id=category_id, iscrowd=iscrowd)


def image(dataset: str, image_id: int, regions: list[Region], relations: list[Relation] = ()) -> ImageRecord:
    return ImageRecord(dataset, "train", image_id, f"images/{image_id}.jpg", 32, 32,
                       regions=list(regions), relations=list(relations))


def toy_split() -> DatasetSplit:
    """Seven images: class 1 alone on images 1-3, class 2 on 4 and 7, class 3 crowd on 5, nothing on 6."""
    records = [
        image("coco", 1, [region(10, 1)]),
        image("coco", 2, [region(20, 1)]),
        image("coco", 3, [region(30, 1)]),
        image("coco", 4, [region(40, 2), region(41, 2)]),
        image("coco", 5, [region(50, 3, iscrowd=True)]),
        image("coco", 6, []),
        image("coco", 7, [region(70, 2), region(71, 3)]),
    ]
    return DatasetSplit("coco", "train", records, {1: "cat", 2: "dog", 3: "zebra"}, ["instances.json"])


def long_tail_split(dataset: str, images: int, classes: int, seed: int) -> DatasetSplit:
    """A seeded split whose class sizes fall off like a Zipf law, 1-6 regions per image."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, classes + 1) ** 1.1
    records, next_id = [], 0
    for image_id in range(images):
        n = int(rng.integers(1, 7))
        labels = rng.choice(classes, size=n, p=weights / weights.sum())
        records.append(image(dataset, image_id, [region(next_id + i, int(c)) for i, c in enumerate(labels)]))
        next_id += n
    categories = {c: f"class {c}" for c in range(classes)}
    return DatasetSplit(dataset, "train", records, categories, [f"{dataset}.json"])


def vg_split() -> DatasetSplit:
    def rel(i: int) -> Relation:
        return Relation(region(1000 + 2 * i), "on", region(1001 + 2 * i))

    records = [
        image("vg", 1, [region(i) for i in range(5)], [rel(i) for i in range(3)]),
        image("vg", 2, [region(10)], []),
        image("vg", 3, [], [rel(10), rel(11)]),  # relations only
        image("vg", 4, [], []),
        image("vg", 5, [region(i) for i in range(20, 23)], [rel(20)]),
    ]
    return DatasetSplit("vg", "train", records, {}, ["region_descriptions.json"])


def region_ids(split: DatasetSplit) -> dict[int, list[int]]:
    return {record.image_id: [r.id for r in record.regions] for record in split.records}


# --- per_group_cap ---------------------------------------------------------------------------


@pytest.mark.parametrize("cap", [0, 1, 3, 50])
def test_per_group_cap_keeps_min_of_size_and_cap_in_every_group(cap):
    rng = np.random.default_rng(7)
    groups = rng.integers(0, 40, size=2000) * 1_000_003  # unsorted, sparse labels
    keep = per_group_cap(groups, cap, np.random.default_rng(1))
    expected = {g: min(n, cap) for g, n in Counter(groups.tolist()).items()}
    kept = Counter(groups[keep].tolist())
    assert {g: kept.get(g, 0) for g in expected} == expected


def test_per_group_cap_of_nothing_is_empty():
    assert per_group_cap(np.array([], dtype=np.int64), 5, np.random.default_rng(0)).shape == (0,)


def test_per_group_cap_picks_every_element_sometimes_and_about_equally_often():
    groups = np.array([0] * 10 + [1] * 4)  # cap 3: group 0 picks 3 of 10, group 1 picks 3 of 4
    picks = sum(per_group_cap(groups, 3, np.random.default_rng(seed)).astype(int) for seed in range(400))
    assert picks[:10].sum() == 1200 and picks[10:].sum() == 1200
    assert picks[:10].min() >= 80 and picks[:10].max() <= 160  # expected 120 each
    assert picks[10:].min() >= 240 and picks[10:].max() <= 360  # expected 300 each


def test_smaller_cap_keeps_a_subset_of_larger_cap():
    groups = np.random.default_rng(3).integers(0, 30, size=3000)
    small = per_group_cap(groups, 10, np.random.default_rng(5))
    large = per_group_cap(groups, 100, np.random.default_rng(5))
    assert small.sum() < large.sum()
    assert not (small & ~large).any()


# --- cap_per_class ---------------------------------------------------------------------------


def test_cap_above_every_class_keeps_all_but_crowd_and_discards_empty_images():
    out = cap_per_class(toy_split(), 10, seed=0)
    assert region_ids(out) == {1: [10], 2: [20], 3: [30], 4: [40, 41], 7: [70, 71]}  # 5: crowd only, 6: empty
    assert out.categories == {1: "cat", 2: "dog", 3: "zebra"} and out.sources == ["instances.json"]


@pytest.mark.parametrize("seed", range(5))
def test_cap_of_one_keeps_one_region_per_class_and_only_images_that_keep_one(seed):
    out = cap_per_class(toy_split(), 1, seed)
    assert class_counts(out) == {1: 1, 2: 1, 3: 1}
    kept = region_ids(out)
    assert sum(image_id in kept for image_id in (1, 2, 3)) == 1  # class 1 is alone on these images
    assert 7 in kept and 5 not in kept and 6 not in kept  # 7 holds class 3's only non-crowd region
    assert list(kept) == sorted(kept)  # input order
    assert all(kept.values())


def test_caps_hold_exactly_on_a_long_tail():
    split = long_tail_split("v3det", images=400, classes=60, seed=1)
    before = class_counts(split)
    out = cap_per_class(split, 8, seed=3)
    assert class_counts(out) == {c: min(n, 8) for c, n in before.items()}
    assert (sum(before.values()), sum(class_counts(out).values())) == (1445, 394)
    assert (len(split.records), len(out.records)) == (400, 257)
    # Output images are the input images that kept a region, in input order, regions in input order.
    input_ids = region_ids(split)
    assert list(region_ids(out)) == [i for i in input_ids if i in region_ids(out)]
    for image_id, ids in region_ids(out).items():
        assert ids and ids == [i for i in input_ids[image_id] if i in ids]


def test_same_seed_same_selection_other_seed_another():
    split = long_tail_split("v3det", images=300, classes=40, seed=2)
    assert cap_per_class(split, 5, seed=11) == cap_per_class(split, 5, seed=11)
    assert region_ids(cap_per_class(split, 5, seed=11)) != region_ids(cap_per_class(split, 5, seed=12))


def test_region_without_category_is_an_error_naming_the_image():
    split = toy_split()
    split.records[3].regions[1].category_id = None
    with pytest.raises(ValueError, match=r"coco_train \(instances.json\): image 4 \(images/4.jpg\) "
                                         r"region 1 \(id 41\) has no category_id"):
        cap_per_class(split, 5, seed=0)


def test_crowd_regions_are_not_counted():
    assert class_counts(toy_split()) == {1: 3, 2: 3, 3: 1}


# --- cap_per_image ---------------------------------------------------------------------------


def test_vg_caps_boxes_and_relations_per_image():
    out = cap_per_image(vg_split(), boxes_cap=2, relations_cap=1, seed=0)
    assert [r.image_id for r in out.records] == [1, 2, 3, 5]  # 4 has nothing
    assert [(len(r.regions), len(r.relations)) for r in out.records] == [(2, 1), (1, 0), (0, 1), (2, 1)]
    first = out.records[0]
    assert {r.id for r in first.regions} <= set(range(5))
    assert first.relations[0].predicate == "on"


def test_vg_without_relations_drops_images_that_only_had_relations():
    out = cap_per_image(vg_split(), boxes_cap=10, relations_cap=0, seed=0)
    assert region_ids(out) == {1: [0, 1, 2, 3, 4], 2: [10], 5: [20, 21, 22]}
    assert all(not r.relations for r in out.records)


def test_vg_cap_is_seeded():
    split = vg_split()
    assert cap_per_image(split, 2, 1, seed=4) == cap_per_image(split, 2, 1, seed=4)
    draws = {tuple(region_ids(cap_per_image(split, 2, 1, seed))[1]) for seed in range(10)}
    assert len(draws) > 1


# --- balance_all and stats -------------------------------------------------------------------

PARAMS = BalanceParams(seed=0, v3det_pretrain_per_class=6, v3det_finetune_per_class=2,
                       coco_per_class=1, lvis_per_class=3, vg_boxes_per_image=2, vg_relations_per_image=1)


def all_splits() -> dict[str, DatasetSplit]:
    lvis = long_tail_split("lvis", images=80, classes=12, seed=5)
    return {"v3det_train": long_tail_split("v3det", images=200, classes=30, seed=4),
            "coco_train": toy_split(), "lvis_train": lvis, "vg_train": vg_split()}


def test_balance_all_applies_each_cap():
    splits = all_splits()
    out = balance_all(splits, PARAMS)
    assert list(out) == ["v3det_pretrain", "v3det_finetune", "coco_finetune", "lvis_finetune", "vg_train"]
    v3det = class_counts(splits["v3det_train"])
    assert class_counts(out["v3det_pretrain"]) == {c: min(n, 6) for c, n in v3det.items()}
    assert class_counts(out["v3det_finetune"]) == {c: min(n, 2) for c, n in v3det.items()}
    assert class_counts(out["coco_finetune"]) == {1: 1, 2: 1, 3: 1}
    lvis = class_counts(splits["lvis_train"])
    assert class_counts(out["lvis_finetune"]) == {c: min(n, 3) for c, n in lvis.items()}
    assert max(len(r.regions) for r in out["vg_train"].records) == 2


def test_v3det_finetune_is_a_subset_of_pretrain():
    out = balance_all(all_splits(), PARAMS)
    pretrain = region_ids(out["v3det_pretrain"])
    finetune = region_ids(out["v3det_finetune"])
    assert len(finetune) < len(pretrain)
    assert all(set(ids) <= set(pretrain[image_id]) for image_id, ids in finetune.items())


def test_balance_all_does_not_depend_on_the_order_of_its_input():
    splits = all_splits()
    assert balance_all(splits, PARAMS) == balance_all(dict(reversed(list(splits.items()))), PARAMS)


def test_balance_all_names_missing_splits():
    splits = all_splits()
    del splits["lvis_train"]
    with pytest.raises(ValueError, match=r"needs the splits \['lvis_train'\]"):
        balance_all(splits, PARAMS)


def test_stats_rows_and_summary():
    splits = all_splits()
    out = balance_all(splits, PARAMS)
    rows = class_count_rows(splits, out)
    coco_rows = [r for r in rows if r["dataset"] == "coco_finetune"]
    assert coco_rows == [
        {"dataset": "coco_finetune", "category_id": 1, "category": "cat", "before": 3, "after": 1},
        {"dataset": "coco_finetune", "category_id": 2, "category": "dog", "before": 3, "after": 1},
        {"dataset": "coco_finetune", "category_id": 3, "category": "zebra", "before": 1, "after": 1},
    ]
    assert {r["dataset"] for r in rows} == {"v3det_pretrain", "v3det_finetune", "coco_finetune",
                                            "lvis_finetune"}  # VG is capped per image, not per class
    metrics = summary_metrics(splits, out)
    assert metrics["vg_train"] == {"images_before": 5, "regions_before": 9, "relations_before": 6,
                                   "images_after": 4, "regions_after": 5, "relations_after": 3}
    assert metrics["coco_finetune"]["images_before"] == 7 and metrics["coco_finetune"]["regions_after"] == 3
