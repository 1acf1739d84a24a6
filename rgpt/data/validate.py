"""Data contracts, checked with Great Expectations: the raw annotations and the conversations.

Each check is one GX expectation over one pandas frame with a row per thing checked: a region,
a relation's subject or object box, an image file, a record's captions (raw suite) or a
conversation sample and its region boxes (conversation suite). Rows a check does not apply to
hold nulls there, which GX skips. One checkpoint per call validates the frame and updates the
Data Docs site; with result format COMPLETE, `unexpected_index_list` names the failing rows.

Failing rows are quarantined, never dropped silently: the report holds the clean data, one
quarantine entry per (row, reason) and the counts. A bad region leaves its image; an unreadable
image (or a record with a blank caption) takes its whole record; a relation goes with a bad box.
An image left without regions stays: its captions or relations still have value. `check_gate`
then stops the pipeline when a dataset split has more bad rows than `max_bad_fraction` allows.

Calls that share a `gx_dir` must run one after another: the GX file stores and the Data Docs
site are not written safely by concurrent processes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Iterable, NamedTuple, TypeVar
from urllib.parse import urlparse
from urllib.request import url2pathname

import pandas as pd
from PIL import Image

from ..config import ValidateParams
from . import masks
from .records import DatasetSplit, ImageRecord, Region
from .templates import IMAGE, REGION

# Read by great_expectations when it is imported (lazily, in `_failing_rows`: the import takes ~3 s).
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

# What the raw suite counts: a relation is bad when its subject or object box is.
RAW_UNITS = ("regions", "relations", "images", "captions")
CAPTION_DATASETS = {"llava"}  # records are captions only: each needs at least one
PHRASE_DATASETS = {"vg"}  # every region is a region description: each needs at least one phrase

# Turns alternate human, gpt, ... and end with the answer (roles joined by commas).
TURN_PATTERN = r"^human(?:,gpt,human)*,gpt$"

# Frame columns that need a dtype pandas would not infer from Python values with None in them:
# nullable int64 keeps ids exact (COCO crowd ids exceed int32) and counts integral.
DTYPES = {
    **dict.fromkeys(["record", "sample", "item", "region_id", "category_id", "width", "height",
                     "mask_height", "mask_width", "actual_width", "actual_height", "phrase_count", "blank_phrases",
                     "caption_count", "blank_captions", "first_turn_images", "later_turn_images", "human_regions",
                     "regions", "gpt_regions", "blank_turns"], "Int64"),
    **dict.fromkeys(["w", "h", "gap_left", "gap_top", "gap_right", "gap_bottom"], "float64"),
    **dict.fromkeys(["box_valid", "category_known", "exists"], "boolean"),
}

T = TypeVar("T")


class DataContractError(RuntimeError):
    """More of a dataset split broke the data contract than `validate.max_bad_fraction` allows."""


class Rule(NamedTuple):
    """One expectation, and how a row that fails it is reported."""

    expectation: str  # a class name in great_expectations.expectations
    kwargs: dict[str, Any]
    field: str  # the record field it checks, as the quarantine entry names it
    reason: str  # rules that check two sides of one thing (width, height) share a reason
    value: tuple[str, ...]  # frame columns the quarantine entry shows


@dataclass
class ValidationReport(Generic[T]):
    name: str  # the dataset split (`vg_train`) or the conversation file's name
    clean: T  # what passed: a DatasetSplit, or the list of good conversation samples
    quarantine: list[dict[str, Any]]  # one entry per failing (row, reason)
    checked: dict[str, int]  # rows checked per unit: regions, relations, images, captions / samples
    bad: dict[str, int]  # of those, how many failed at least one check
    docs_index: Path  # the Data Docs site's index.html

    @property
    def reasons(self) -> Counter[str]:
        return Counter(entry["reason"] for entry in self.quarantine)

    def bad_fraction(self, unit: str) -> float:
        return self.bad[unit] / self.checked[unit] if self.checked[unit] else 0.0

    @property
    def counts(self) -> dict[str, Any]:
        """JSON-ready counts, for metrics files and MLflow."""
        units = {unit: {"checked": n, "bad": self.bad[unit]} for unit, n in self.checked.items()}
        return {**units, "reasons": dict(self.reasons.most_common())}


# --- the raw annotation suite -------------------------------------------------------------------

def validate_split(split: DatasetSplit, data_root: Path, params: ValidateParams,
                   gx_dir: Path) -> ValidationReport[DatasetSplit]:
    """Check one dataset split against the raw annotation contract; quarantine what fails."""
    frame = _split_frame(split, Path(data_root), params)
    rules = _split_rules(split, params.box_tolerance_px)
    failures, docs_index = _failing_rows(frame, rules, gx_dir, f"raw.{split.name}")

    entries = []
    bad_items: dict[str, dict[int, set]] = {unit: defaultdict(set) for unit in RAW_UNITS}  # record -> items
    for i, rule in failures:
        row = frame.iloc[i]
        unit, r, item = row["unit"], int(row["record"]), _plain(row["item"])
        bad_items[unit][r].add(item)
        entries.append({
            "dataset": split.dataset, "split": split.split, "file": ", ".join(split.sources),
            "image_id": split.records[r].image_id, "region_id": _plain(row["region_id"]),
            "field": _field_path(unit, item, _plain(row["part"]), rule.field),
            "reason": rule.reason, "value": _row_value(row, rule.value),
        })

    dropped = bad_items["images"].keys() | bad_items["captions"].keys()
    clean_records = [
        _without(record, bad_items["regions"].get(i, set()), bad_items["relations"].get(i, set()))
        for i, record in enumerate(split.records) if i not in dropped
    ]
    checked = frame.drop_duplicates(["unit", "record", "item"])["unit"].value_counts()
    return ValidationReport(
        name=split.name,
        clean=dataclasses.replace(split, records=clean_records),
        quarantine=entries,
        checked={unit: int(checked.get(unit, 0)) for unit in RAW_UNITS},
        bad={unit: sum(map(len, bad_items[unit].values())) for unit in RAW_UNITS},
        docs_index=docs_index,
    )


def _split_rules(split: DatasetSplit, tolerance_px: float) -> list[Rule]:
    rules = _box_rules(tolerance_px)
    if split.categories:  # VG and LLaVA have no category table
        rules.append(Rule("ExpectColumnValuesToBeInSet", {"column": "category_known", "value_set": [True]},
                          "category_id", "unknown category id", ("category_id",)))
    rules += [
        Rule("ExpectColumnValuesToBeNull", {"column": "mask_error"},
             "segmentation", "segmentation does not decode", ("mask_error",)),
        *[Rule("ExpectColumnPairValuesToBeEqual",
               {"column_A": f"mask_{side}", "column_B": side, "ignore_row_if": "either_value_is_missing"},
               "segmentation", "mask size differs from the image", ("mask_height", "mask_width", "height", "width"))
          for side in ("height", "width")],
        Rule("ExpectColumnValuesToBeBetween", {"column": "blank_phrases", "max_value": 0},
             "phrases", "blank phrase", ("phrases",)),
    ]
    if split.dataset in PHRASE_DATASETS:
        rules.append(Rule("ExpectColumnValuesToBeBetween", {"column": "phrase_count", "min_value": 1},
                          "phrases", "region has no phrase", ("phrases",)))
    rules += [
        Rule("ExpectColumnValuesToBeInSet", {"column": "exists", "value_set": [True]},
             "file_name", "image file missing", ("file_name",)),
        Rule("ExpectColumnValuesToBeNull", {"column": "open_error"},
             "file_name", "image unreadable", ("file_name", "open_error")),
        *[Rule("ExpectColumnPairValuesToBeEqual",
               {"column_A": f"actual_{side}", "column_B": side, "ignore_row_if": "either_value_is_missing"},
               "width/height", "image size differs from the record",
               ("width", "height", "actual_width", "actual_height"))
          for side in ("width", "height")],
        Rule("ExpectColumnValuesToBeBetween", {"column": "blank_captions", "max_value": 0},
             "captions", "blank caption", ("captions",)),
    ]
    if split.dataset in CAPTION_DATASETS:
        rules.append(Rule("ExpectColumnValuesToBeBetween", {"column": "caption_count", "min_value": 1},
                          "captions", "record has no caption", ("captions",)))
    return rules


def _box_rules(tolerance_px: float) -> list[Rule]:
    """Boxes are 4 finite numbers, inside the image up to `tolerance_px`, with positive area."""
    return [
        Rule("ExpectColumnValuesToBeInSet", {"column": "box_valid", "value_set": [True]},
             "box", "box is not 4 finite numbers", ("box",)),
        *[Rule("ExpectColumnValuesToBeBetween", {"column": f"gap_{side}", "min_value": -tolerance_px},
               "box", "box outside the image", ("box", "width", "height"))
          for side in ("left", "top", "right", "bottom")],
        *[Rule("ExpectColumnValuesToBeBetween", {"column": side, "min_value": 0, "strict_min": True},
               "box", "box has no area", ("box",))
          for side in ("w", "h")],
    ]


def _split_frame(split: DatasetSplit, data_root: Path, params: ValidateParams) -> pd.DataFrame:
    """One row per region, relation box, checked image file and captioned record."""
    columns: dict[str, list[Any]] = {key: [] for key in ("unit", "record", "item", "part", "region_id")}
    checked_images = set(_images_to_check(len(split.records), params.image_check, params.seed))
    for i, record in enumerate(split.records):
        for j, region in enumerate(record.regions):
            _add_row(columns, unit="regions", record=i, item=j, **_region_columns(region, record, split.categories))
        for k, relation in enumerate(record.relations):
            for part in ("subject", "object"):
                region = getattr(relation, part)
                _add_row(columns, unit="relations", record=i, item=k, part=part, region_id=region.id,
                         **_box_columns(region.box, record.width, record.height))
        if i in checked_images:
            _add_row(columns, unit="images", record=i, **_image_columns(data_root / record.file_name, record))
        if record.captions or split.dataset in CAPTION_DATASETS:
            _add_row(columns, unit="captions", record=i, captions=record.captions, caption_count=len(record.captions),
                     blank_captions=sum(not c.strip() for c in record.captions))
    return _frame(columns)


def _images_to_check(n_records: int, image_check: str | int, seed: int) -> list[int]:
    """Indices of the records whose image file is opened: all, none or a seeded sample."""
    if image_check == "all":
        return list(range(n_records))
    if image_check == "none":
        return []
    return sorted(random.Random(seed).sample(range(n_records), min(image_check, n_records)))


def _region_columns(region: Region, record: ImageRecord, categories: dict[int, str]) -> dict[str, Any]:
    mask_height = mask_width = mask_error = None
    if region.segmentation is not None:
        try:
            mask_height, mask_width = masks.decode(region.segmentation, record.height, record.width).shape
        except Exception as e:  # noqa: BLE001 - whatever pycocotools raises, the segmentation is bad
            mask_error = f"{type(e).__name__}: {e}"
    return {
        "region_id": region.id,
        **_box_columns(region.box, record.width, record.height),
        "category_id": region.category_id,
        "category_known": region.category_id in categories if categories else None,
        "mask_height": mask_height, "mask_width": mask_width, "mask_error": mask_error,
        "phrases": region.phrases, "phrase_count": len(region.phrases),
        "blank_phrases": sum(not p.strip() for p in region.phrases),
    }


def _box_columns(box: list[float], width: int, height: int) -> dict[str, Any]:
    """A box's distances to the image edges (negative: outside) and its size."""
    valid = len(box) == 4 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)
    columns = {"box": box, "width": width, "height": height, "box_valid": valid}
    if valid:
        x, y, w, h = box
        columns |= {"w": w, "h": h, "gap_left": x, "gap_top": y,
                    "gap_right": width - (x + w), "gap_bottom": height - (y + h)}
    return columns


def _image_columns(path: Path, record: ImageRecord) -> dict[str, Any]:
    """Whether the image file exists, why PIL cannot read it, and its real size."""
    columns = {"file_name": record.file_name, "width": record.width, "height": record.height, "exists": path.is_file()}
    if columns["exists"]:
        try:
            with Image.open(path) as image:
                columns["actual_width"], columns["actual_height"] = image.size
                image.verify()
        except Exception as e:  # noqa: BLE001 - whatever PIL raises, the file is not a readable image
            columns |= {"actual_width": None, "actual_height": None, "open_error": f"{type(e).__name__}: {e}"}
    return columns


def _without(record: ImageRecord, regions: set[int], relations: set[int]) -> ImageRecord:
    """The record without the regions and relations at these indices (itself when there are none)."""
    if not regions and not relations:
        return record
    return dataclasses.replace(
        record,
        regions=[r for j, r in enumerate(record.regions) if j not in regions],
        relations=[r for k, r in enumerate(record.relations) if k not in relations],
    )


def _field_path(unit: str, item: int | None, part: str | None, field: str) -> str:
    """Where in the record the bad value is, e.g. `regions[3].box` or `relations[0].subject.box`."""
    if unit == "regions":
        return f"regions[{item}].{field}"
    if unit == "relations":
        return f"relations[{item}].{part}.{field}"
    return field


# --- the conversation suite ---------------------------------------------------------------------

def validate_conversations(samples: list[dict[str, Any]], gx_dir: Path, name: str,
                           box_tolerance_px: float = 1.0) -> ValidationReport[list[dict[str, Any]]]:
    """Check LLaVA-style conversation samples against their contract; quarantine what fails.

    A sample's `<region>` placeholders are filled with its regions in order, so their counts must
    agree; `<image>` opens the first human turn and appears nowhere else.
    """
    frame = _conversation_frame(samples)
    failures, docs_index = _failing_rows(frame, _conversation_rules(box_tolerance_px), gx_dir, f"conversations.{name}")

    entries, bad_samples = [], set()
    for i, rule in failures:
        row = frame.iloc[i]
        index, item = int(row["sample"]), _plain(row["item"])
        sample = samples[index]
        bad_samples.add(index)
        entries.append({
            "file": name, "id": sample["id"], "dataset": sample["dataset"], "image": sample["image"],
            "field": f"regions[{item}].{rule.field}" if row["unit"] == "regions" else rule.field,
            "reason": rule.reason, "value": _row_value(row, rule.value),
        })
    return ValidationReport(
        name=name,
        clean=[s for i, s in enumerate(samples) if i not in bad_samples],
        quarantine=entries,
        checked={"samples": len(samples)},
        bad={"samples": len(bad_samples)},
        docs_index=docs_index,
    )


def _conversation_rules(tolerance_px: float) -> list[Rule]:
    return [
        Rule("ExpectColumnValuesToBeUnique", {"column": "id"}, "id", "duplicate id", ("id",)),
        Rule("ExpectColumnValuesToMatchRegex", {"column": "roles", "regex": TURN_PATTERN},
             "conversations", "turns do not alternate human/gpt from human to gpt", ("roles",)),
        Rule("ExpectColumnValuesToBeInSet", {"column": "first_turn_images", "value_set": [1]},
             "conversations", f"first turn does not hold {IMAGE} exactly once", ("first_turn_images",)),
        Rule("ExpectColumnValuesToBeBetween", {"column": "later_turn_images", "max_value": 0},
             "conversations", f"{IMAGE} after the first turn", ("later_turn_images",)),
        Rule("ExpectColumnPairValuesToBeEqual",
             {"column_A": "human_regions", "column_B": "regions", "ignore_row_if": "either_value_is_missing"},
             "conversations", f"{REGION} count differs from len(regions)", ("human_regions", "regions")),
        Rule("ExpectColumnValuesToBeBetween", {"column": "gpt_regions", "max_value": 0},
             "conversations", f"{REGION} in a gpt turn", ("gpt_regions",)),
        Rule("ExpectColumnValuesToBeBetween", {"column": "blank_turns", "max_value": 0},
             "conversations", "blank turn", ("blank_turns",)),
        *_box_rules(tolerance_px),
    ]


def _conversation_frame(samples: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per sample and one per region box."""
    columns: dict[str, list[Any]] = {key: [] for key in ("unit", "sample", "item")}
    for i, sample in enumerate(samples):
        turns = sample["conversations"]
        human = [t["value"] for t in turns if t["from"] == "human"]
        gpt = [t["value"] for t in turns if t["from"] == "gpt"]
        _add_row(
            columns, unit="samples", sample=i, id=sample["id"],
            roles=",".join(t["from"] for t in turns),
            first_turn_images=turns[0]["value"].count(IMAGE) if turns else 0,
            later_turn_images=sum(t["value"].count(IMAGE) for t in turns[1:]),
            human_regions=sum(v.count(REGION) for v in human), regions=len(sample["regions"]),
            gpt_regions=sum(v.count(REGION) for v in gpt),
            blank_turns=sum(not t["value"].strip() for t in turns),
        )
        for j, region in enumerate(sample["regions"]):
            _add_row(columns, unit="regions", sample=i, item=j,
                     **_box_columns(region["box"], sample["width"], sample["height"]))
    return _frame(columns)


# --- shared machinery -----------------------------------------------------------------------------

def _add_row(columns: dict[str, list[Any]], **values: Any) -> None:
    """Append one row to a table held column by column (a paper-scale split has millions of
    rows: a dict per row would take gigabytes). Columns the row does not set get None."""
    n_rows = len(columns["unit"])
    for key, value in values.items():
        if key not in columns:
            columns[key] = [None] * n_rows
        columns[key].append(value)
    for column in columns.values():
        if len(column) == n_rows:
            column.append(None)


def _frame(columns: dict[str, list[Any]]) -> pd.DataFrame:
    """The table as a DataFrame; a column without a declared dtype keeps Python objects."""
    return pd.DataFrame({key: pd.Series(values, dtype=DTYPES.get(key, object)) for key, values in columns.items()})


def _failing_rows(frame: pd.DataFrame, rules: list[Rule], gx_dir: Path,
                  name: str) -> tuple[list[tuple[int, Rule]], Path]:
    """Validate `frame` with one GX checkpoint (which also updates Data Docs).

    Returns the failing (row position, rule) pairs, one per row and reason, in row order, and the
    path of the Data Docs index.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    frame = frame.assign(**{c: None for c in _rule_columns(rules) if c not in frame.columns})  # no row has it
    context = gx.get_context(mode="file", project_root_dir=str(gx_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_or_update_pandas("rgpt")  # replaces the assets of earlier calls
    batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all rows")
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=[
        getattr(gx.expectations, rule.expectation)(**rule.kwargs, meta={"rule": n, "reason": rule.reason})
        for n, rule in enumerate(rules)
    ]))
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=suite))
    checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
        name=name, validation_definitions=[definition], result_format="COMPLETE",
        actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
    ))
    run = checkpoint.run(batch_parameters={"dataframe": frame})

    failing: dict[tuple[int, str], Rule] = {}
    for validation in run.run_results.values():
        for result in validation.results:
            rule = rules[result.expectation_config.meta["rule"]]
            if errors := _exception_messages(result.exception_info):
                raise RuntimeError(f"GX could not evaluate '{rule.reason}' ({rule.expectation}) on {name}: {errors[0]}")
            for i in result.result.get("unexpected_index_list") or []:
                failing.setdefault((int(i), rule.reason), rule)
    ordered = sorted(((i, rule) for (i, _), rule in failing.items()), key=lambda f: (f[0], rules.index(f[1])))
    site_url = context.get_docs_sites_urls()[0]["site_url"]
    return ordered, Path(url2pathname(urlparse(site_url).path))


def _rule_columns(rules: list[Rule]) -> list[str]:
    return [rule.kwargs[key] for rule in rules for key in ("column", "column_A", "column_B") if key in rule.kwargs]


def _exception_messages(info: dict[str, Any]) -> list[str]:
    """GX reports an error either flat or keyed by the metric that raised it."""
    infos = [info] if "raised_exception" in info else list(info.values())
    return [i["exception_message"] for i in infos if i.get("raised_exception")]


def _row_value(row: pd.Series, columns: tuple[str, ...]) -> Any:
    if len(columns) == 1:
        return _plain(row[columns[0]])
    return {column: _plain(row[column]) for column in columns}


def _plain(value: Any) -> Any:
    """A frame cell as a JSON-ready Python value (pandas NA and NaN become None)."""
    if isinstance(value, (list, dict, str)):
        return value
    if value is None or pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


# --- the gate and the quarantine file -------------------------------------------------------------

def check_gate(reports: Iterable[ValidationReport[Any]], max_bad_fraction: float, quarantine_file: Path) -> None:
    """Raise DataContractError naming every report whose bad share exceeds `max_bad_fraction`."""
    reports = list(reports)
    broken = []
    for report in reports:
        over = [unit for unit in report.checked if report.bad_fraction(unit) > max_bad_fraction]
        if not over:
            continue
        lines = [f"{report.name}: " + "; ".join(
            f"{report.bad[u]} of {report.checked[u]} {u} bad ({report.bad_fraction(u):.1%} > {max_bad_fraction:.1%})"
            for u in over)]
        lines.append("  top reasons: " + ", ".join(f"{reason} ({n})" for reason, n in report.reasons.most_common(3)))
        for entry in report.quarantine[:3]:
            lines.append("  e.g. " + " ".join(f"{k}={v}" for k, v in entry.items() if k not in ("reason", "value")))
        broken.append("\n".join(lines))
    if broken:
        docs = sorted({str(r.docs_index) for r in reports})
        raise DataContractError(
            "data contract broken (validate.max_bad_fraction in params.yaml):\n" + "\n".join(broken)
            + f"\nquarantined records: {quarantine_file}\nData Docs: {', '.join(docs)}\n"
            "Fix or re-download the named files, or raise validate.max_bad_fraction if this share is expected."
        )
