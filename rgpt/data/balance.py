"""Balance the training sources per class and per image (paper Sec. 3.2, supplement A.2).

The paper draws a fixed number of annotations per category at random across the whole dataset
and discards the images left with none (Tables 9-10): V3Det keeps 100 boxes per class for
pre-training and 10 for fine-tuning, COCO and LVIS 20 per class; Visual Genome keeps at most 10
boxes per image. We cap VG's relations per image the same way, independently of its boxes.

The draw is one vectorised pass over a flat array of group labels (`per_group_cap`): for full
V3Det (13,204 classes, ~1.75M boxes) it takes ~0.3 s, and the Python pass over the records around
it a few seconds. benchmarks/balance_bench.py measures it against the pandas groupby-sample idiom.

Determinism: a selection depends only on the seed and on the order of the records and of the
regions inside them, which the readers keep as in the source files. With the same seed a smaller
cap selects the first k of the same random order per class, so it is a subset of a larger cap's
selection: V3Det's fine-tuning boxes are a subset of its pre-training boxes.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import compress

import numpy as np

from rgpt.config import BalanceParams
from rgpt.data.records import DatasetSplit

# Each balanced output and the split it is drawn from.
OUTPUTS: dict[str, str] = {
    "v3det_pretrain": "v3det_train",
    "v3det_finetune": "v3det_train",
    "coco_finetune": "coco_train",
    "lvis_finetune": "lvis_train",
    "vg_train": "vg_train",
}


def per_group_cap(groups: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Keep mask selecting `min(n, cap)` elements uniformly at random from each group.

    `groups` holds one integer label per element (a category id, an image index, ...). One
    shuffle of all elements followed by a stable sort by label lays each group out contiguously
    and in random order; an element is kept when its offset inside its group's run is below
    `cap`. No Python loop over groups. For a given generator state the random order does not
    depend on `cap`, so a smaller cap keeps a subset of what a larger cap keeps.
    """
    groups = np.asarray(groups)
    n = len(groups)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    # Labels in the smallest unsigned type that holds them: numpy sorts 8- and 16-bit integers
    # stably by radix, in linear time, which halves the time for V3Det's 13K classes.
    labels = groups - groups.min()  # (n,)
    labels = labels.astype(np.min_scalar_type(labels.max()))
    order = rng.permutation(n)  # (n,) a random order of all elements
    order = order[np.argsort(labels[order], kind="stable")]  # (n,) grouped, still random inside a group
    sorted_labels = labels[order]  # (n,)
    run_starts = np.empty(n, dtype=bool)  # (n,) True where a new group begins
    run_starts[0] = True
    np.not_equal(sorted_labels[1:], sorted_labels[:-1], out=run_starts[1:])
    position = np.arange(n)  # (n,)
    start_of_run = np.maximum.accumulate(np.where(run_starts, position, 0))  # (n,)
    keep[order[position - start_of_run < cap]] = True
    return keep


def cap_per_class(split: DatasetSplit, cap: int, seed: int) -> DatasetSplit:
    """Keep at most `cap` regions per category, drawn at random across the whole split.

    Crowd regions (iscrowd) are never drawn and are dropped, as are relations (the class-labelled
    sources have none). Images with no region drawn are discarded; the rest keep their order and
    their regions' order.
    """
    classes, crowd = _region_classes(split)
    keep_regions = np.zeros(len(classes), dtype=bool)
    keep_regions[~crowd] = per_group_cap(classes[~crowd], cap, np.random.default_rng(seed))
    keep_relations = np.zeros(sum(len(r.relations) for r in split.records), dtype=bool)
    return _select(split, keep_regions, keep_relations)


def cap_per_image(split: DatasetSplit, boxes_cap: int, relations_cap: int, seed: int) -> DatasetSplit:
    """Keep at most `boxes_cap` regions and, independently, `relations_cap` relations per image.

    Images keeping neither a region nor a relation are discarded; the rest keep their order.
    """
    rng = np.random.default_rng(seed)
    image_of_region = np.repeat(np.arange(len(split.records)), [len(r.regions) for r in split.records])
    image_of_relation = np.repeat(np.arange(len(split.records)), [len(r.relations) for r in split.records])
    return _select(split, per_group_cap(image_of_region, boxes_cap, rng),
                   per_group_cap(image_of_relation, relations_cap, rng))


def class_counts(split: DatasetSplit) -> dict[int, int]:
    """Number of regions per category id, crowd regions excluded (they are never drawn)."""
    classes, crowd = _region_classes(split)
    ids, counts = np.unique(classes[~crowd], return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))


def balance_all(splits: dict[str, DatasetSplit], params: BalanceParams) -> dict[str, DatasetSplit]:
    """Every balanced output (the keys of `OUTPUTS`) from the splits named by `DatasetSplit.name`."""
    missing = sorted(set(OUTPUTS.values()) - set(splits))
    if missing:
        raise ValueError(f"balance needs the splits {missing} but got only {sorted(splits)}: "
                         "run the stages that write them first")
    source = {output: splits[split_name] for output, split_name in OUTPUTS.items()}
    seed = params.seed
    return {
        "v3det_pretrain": cap_per_class(source["v3det_pretrain"], params.v3det_pretrain_per_class, seed),
        "v3det_finetune": cap_per_class(source["v3det_finetune"], params.v3det_finetune_per_class, seed),
        "coco_finetune": cap_per_class(source["coco_finetune"], params.coco_per_class, seed),
        "lvis_finetune": cap_per_class(source["lvis_finetune"], params.lvis_per_class, seed),
        "vg_train": cap_per_image(source["vg_train"], params.vg_boxes_per_image,
                                  params.vg_relations_per_image, seed),
    }


def class_count_rows(splits: dict[str, DatasetSplit], balanced: dict[str, DatasetSplit]) -> list[dict]:
    """Regions per category before and after balancing, one row per (output, category).

    Rows are `{dataset, category_id, category, before, after}` with `dataset` the output's name,
    ready for a CSV and a DVC plot. Outputs drawn per image (VG, no categories) have no rows.
    """
    rows = []
    for output, after in balanced.items():
        before = splits[OUTPUTS[output]]
        if not before.categories:
            continue
        counts_after = class_counts(after)
        for category_id, count in sorted(class_counts(before).items()):
            rows.append({"dataset": output, "category_id": category_id,
                         "category": before.categories.get(category_id),
                         "before": count, "after": counts_after.get(category_id, 0)})
    return rows


def summary_metrics(splits: dict[str, DatasetSplit],
                    balanced: dict[str, DatasetSplit]) -> dict[str, dict[str, int]]:
    """Images, regions and relations before and after balancing, per output (DVC metrics)."""
    metrics = {}
    for output, after in balanced.items():
        before = splits[OUTPUTS[output]]
        metrics[output] = {f"{what}_{when}": count
                           for when, split in (("before", before), ("after", after))
                           for what, count in _sizes(split).items()}
    return metrics


def _sizes(split: DatasetSplit) -> dict[str, int]:
    return {"images": len(split.records),
            "regions": sum(len(r.regions) for r in split.records),
            "relations": sum(len(r.relations) for r in split.records)}


def _region_classes(split: DatasetSplit) -> tuple[np.ndarray, np.ndarray]:
    """Category id and crowd flag of every region, flat in record order."""
    classes, crowd = [], []
    for record in split.records:
        for index, region in enumerate(record.regions):
            if region.category_id is None and not region.iscrowd:
                raise ValueError(
                    f"{split.name} ({', '.join(split.sources) or 'no source files'}): image "
                    f"{record.image_id} ({record.file_name}) region {index} (id {region.id}) has no "
                    "category_id, but per-class balancing needs one on every region; fix the reader, "
                    "or let the validate stage quarantine the image")
            classes.append(-1 if region.category_id is None else region.category_id)  # -1: crowd, never drawn
            crowd.append(region.iscrowd)
    return np.array(classes, dtype=np.int64), np.array(crowd, dtype=bool)


def _select(split: DatasetSplit, keep_regions: np.ndarray, keep_relations: np.ndarray) -> DatasetSplit:
    """`split` holding only the kept regions and relations (flat masks in record order).

    Images left with neither are discarded; the others keep their order and their captions.
    """
    keep_regions, keep_relations = keep_regions.tolist(), keep_relations.tolist()  # fast slicing
    records = []
    first_region = first_relation = 0
    for record in split.records:
        end_region, end_relation = first_region + len(record.regions), first_relation + len(record.relations)
        regions = list(compress(record.regions, keep_regions[first_region:end_region]))
        relations = list(compress(record.relations, keep_relations[first_relation:end_relation]))
        first_region, first_relation = end_region, end_relation
        if regions or relations:
            records.append(replace(record, regions=regions, relations=relations))
    return replace(split, records=records)
