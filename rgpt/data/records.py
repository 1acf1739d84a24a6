"""The one internal record type every reader produces and every later stage consumes.

An `ImageRecord` is one image with its regions (boxes, optional masks, categories, phrases),
relations between regions and image-level captions. Boxes follow the COCO convention used by
most of the sources: `[x, y, w, h]` in absolute, 0-based, continuous pixels. Masks keep the
source's own COCO-style `segmentation` (polygons, or RLE with list or string counts) so no
precision is lost; `rgpt.data.masks` decodes any of them.

Records travel between stages as JSON Lines, one image per line (`write_records` /
`read_records`); the file is written to a temporary name and renamed, so a crash never leaves a
half-written file behind.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

log = logging.getLogger(__name__)

Box = list[float]  # [x, y, w, h], absolute pixels
Segmentation = list[list[float]] | dict[str, Any]  # COCO polygon list, or RLE {"counts", "size"}


@dataclass
class Region:
    box: Box
    id: int | None = None  # the source's annotation / region / object id (int64)
    category_id: int | None = None  # id in the source's category table, when it has one
    category: str | None = None  # the category's name, case preserved (V3Det names are case-sensitive)
    phrases: list[str] = field(default_factory=list)  # referring expressions / region descriptions
    segmentation: Segmentation | None = None  # None: box only
    iscrowd: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Region:
        return cls(**d)


@dataclass
class Relation:
    """A directed relation `subject predicate object`, e.g. VG's 'shade ON sidewalk'."""

    subject: Region
    predicate: str
    object: Region

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Relation:
        return cls(Region.from_dict(d["subject"]), d["predicate"], Region.from_dict(d["object"]))


@dataclass
class ImageRecord:
    dataset: str  # v3det | vg | coco | lvis | refcocog | llava
    split: str  # train | val | test
    image_id: int | str  # str for LLaVA-558K, whose ids are zero-padded strings
    file_name: str  # path of the image file relative to the data root
    width: int
    height: int
    regions: list[Region] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)  # image-level captions
    caption_prompts: list[str] = field(default_factory=list)  # the instruction each caption answers (LLaVA)

    @property
    def key(self) -> str:
        """A name for this image that is unique across datasets and splits."""
        return f"{self.dataset}/{self.split}/{self.image_id}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageRecord:
        d = dict(d)
        d["regions"] = [Region.from_dict(r) for r in d.get("regions", [])]
        d["relations"] = [Relation.from_dict(r) for r in d.get("relations", [])]
        return cls(**d)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Write dicts as JSON Lines, atomically (a temporary file renamed). Returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
            f.write("\n")
            n += 1
    os.replace(tmp, path)
    return n


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The rows of a JSON Lines file; a broken line raises ValueError naming the file and line."""
    return (row for _, row in numbered_jsonl(path))


def numbered_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, row) for every non-empty line, so a reader can name the line of a bad row."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield line_no, json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg})") from e


def resume_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of an append-only JSON Lines file that a killed run may have left, made ready for
    appending. A kill can only truncate the last line (each row is one write ending in its
    newline): a tail that is a whole row gets its newline back, an unreadable tail is cut off, so
    appending resumes on a clean line end; a broken complete line is not a kill's doing and raises."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # the bytes up to the last complete line
    rows = []
    for line_no, line in enumerate(data[:end].splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise ValueError(f"{path}:{line_no}: broken line before the end of the file; only a truncated "
                                 "last line can come from a kill. Delete the file to redo its work") from None
    tail = data[end:]
    if tail.strip():
        try:
            rows.append(json.loads(tail))  # whole, only its newline missing
            with open(path, "ab") as f:
                f.write(b"\n")
            return rows
        except ValueError:
            log.warning("%s: dropping a truncated last line (%d bytes) left by an interrupted run", path, len(tail))
    if tail:
        with open(path, "r+b") as f:
            f.truncate(end)
    return rows


def write_records(path: str | os.PathLike, records: Iterable[ImageRecord]) -> int:
    return write_jsonl(path, (record.to_dict() for record in records))


def read_records(path: str | os.PathLike) -> Iterator[ImageRecord]:
    for line_no, row in enumerate(read_jsonl(path), 1):
        try:
            yield ImageRecord.from_dict(row)
        except (TypeError, KeyError) as e:
            raise ValueError(f"{path}: record {line_no}: not a valid image record ({e})") from e


@dataclass
class DatasetSplit:
    """One split of one dataset: its image records and its category table.

    Stored as `<dir>/<name>.jsonl` (the records) beside `<name>.meta.json` (categories and the
    annotation files they came from); the name is `<dataset>_<split>` unless a stage picks another
    (balance writes `v3det_pretrain` and `v3det_finetune`, both drawn from V3Det's train split).
    """

    dataset: str
    split: str
    records: list[ImageRecord]
    categories: dict[int, str] = field(default_factory=dict)  # id -> name; empty for VG, LLaVA
    sources: list[str] = field(default_factory=list)  # annotation files read, for error messages

    @property
    def name(self) -> str:
        return f"{self.dataset}_{self.split}"

    def save(self, directory: str | os.PathLike, name: str | None = None) -> Path:
        """Write `<name>.jsonl` and `<name>.meta.json` (name: `self.name` unless given)."""
        directory, name = Path(directory), name or self.name
        path = directory / f"{name}.jsonl"
        write_records(path, self.records)
        meta = {"dataset": self.dataset, "split": self.split, "sources": self.sources,
                "categories": {str(k): v for k, v in sorted(self.categories.items())}}
        (directory / f"{name}.meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike, name: str) -> DatasetSplit:
        directory = Path(directory)
        meta_path = directory / f"{name}.meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path} not found: run the stage that writes it first (dvc repro)")
        meta = json.loads(meta_path.read_text())
        return cls(meta["dataset"], meta["split"], list(read_records(directory / f"{name}.jsonl")),
                   {int(k): v for k, v in meta["categories"].items()}, meta["sources"])
