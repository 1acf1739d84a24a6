"""The instruction templates of paper Tables 21-25 and the task-guided prompts of Table 1.

They are data (`rgpt/data/templates/`, one instruction per line, transcribed verbatim), checked
when loaded: a typo in a placeholder would otherwise silently train the model on questions whose
region count does not match their region embeddings.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.resources import files

import yaml

IMAGE = "<image>"  # replaced by the image's feature tokens
REGION = "<region>"  # replaced by one region embedding
DESCRIPTION = "<description>"  # REC only: replaced by the referring expression

# file -> (<region> count, <description> count) that every line of it must have
TEMPLATE_FILES = {
    "brief_caption": (1, 0),  # Table 21
    "detailed_description": (1, 0),  # Table 22
    "relationship": (2, 0),  # Table 23: subject, then object
    "classification": (1, 0),  # Table 24
    "rec": (1, 1),  # Table 25: <region> stands for the whole list of proposals
}
PROMPTS_FILE = "task_prompts.yaml"


@dataclass(frozen=True)
class TaskPrompts:
    """Table 1: appended to a question to fix the format of its answer."""

    coco: str  # appended to COCO classification questions
    rec: str  # appended to REC questions
    rec_answer: str  # the REC answer; format with index=<1-based proposal index>
    rec_absent: str  # the REC answer when the described object is not among the proposals
    short_answer: str  # appended to image-level yes/no questions (presence, POPE)


@dataclass(frozen=True)
class Templates:
    brief_caption: tuple[str, ...]
    detailed_description: tuple[str, ...]
    relationship: tuple[str, ...]
    classification: tuple[str, ...]
    rec: tuple[str, ...]
    prompts: TaskPrompts


def _template_dir():
    return files("rgpt.data") / "templates"


def parse_templates(text: str, name: str, source: str) -> tuple[str, ...]:
    """The instructions of one template file, checked against `TEMPLATE_FILES[name]`.

    `source` names the file in error messages.
    """
    regions, descriptions = TEMPLATE_FILES[name]
    lines = text.splitlines()
    seen: dict[str, int] = {}
    for line_no, line in enumerate(lines, 1):
        where = f"{source}:{line_no}"
        if not line.strip():
            raise ValueError(f"{where}: empty line; every line must be one instruction")
        if line != line.strip():
            raise ValueError(f"{where}: leading or trailing whitespace in {line!r}")
        if line.count(REGION) != regions or line.count(DESCRIPTION) != descriptions:
            raise ValueError(
                f"{where}: needs {regions} {REGION} and {descriptions} {DESCRIPTION}, got "
                f"{line.count(REGION)} and {line.count(DESCRIPTION)} in {line!r}"
            )
        if line in seen:
            raise ValueError(f"{where}: duplicate of line {seen[line]}: {line!r}")
        seen[line] = line_no
    return tuple(lines)


def _read_prompts() -> TaskPrompts:
    path = _template_dir() / PROMPTS_FILE
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    expected = set(TaskPrompts.__dataclass_fields__)
    if set(raw) != expected:
        raise ValueError(f"{path}: needs exactly the keys {sorted(expected)}, got {sorted(raw)}")
    if "{index}" not in raw["rec_answer"]:
        raise ValueError(f"{path}: rec_answer must contain '{{index}}', got {raw['rec_answer']!r}")
    return TaskPrompts(**raw)


@functools.cache
def load_templates() -> Templates:
    """The templates shipped with the package, read and checked once per process."""
    lists = {}
    for name in TEMPLATE_FILES:
        path = _template_dir() / f"{name}.txt"
        lists[name] = parse_templates(path.read_text(encoding="utf-8"), name, str(path))
    return Templates(**lists, prompts=_read_prompts())
