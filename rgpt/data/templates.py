"""The instruction templates of paper Tables 21-25 and the task-guided prompts of Table 1.

They are data (`rgpt/data/templates/`, one instruction per line, transcribed verbatim), checked
when loaded: a typo in a placeholder would otherwise silently train the model on questions whose
region count does not match their region embeddings.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib.resources import files

import yaml

IMAGE = "<image>"  # replaced by the image's feature tokens
REGION = "<region>"  # replaced by one region embedding
DESCRIPTION = "<description>"  # REC only: replaced by the referring expression
# How a REC answer names the k-th proposal (the task prompt's `rec_answer`: "Region [{index}].").
REGION_ANSWER = re.compile(r"Region \[(\d+)\]")

# file -> (<region> count, <description> count) that every line of it must have
TEMPLATE_FILES = {
    "brief_caption": (1, 0),  # Table 21
    "detailed_description": (1, 0),  # Table 22
    "relationship": (2, 0),  # Table 23: subject, then object
    "classification": (1, 0),  # Table 24
    "rec": (1, 1),  # Table 25: <region> stands for the whole list of proposals
}
PROMPTS_FILE = "task_prompts.yaml"

# RecapD (paper Sec. 3.3): the VLM prompts of its two stages, ten variants each.
GLOBAL_CAPTION = "<GlobalCaption>"  # replaced by the stage-one caption of the whole image
CLASS_NAME = "<ClassName>"  # replaced by the region's human-annotated class name
RECAP_TEMPLATE_FILES = {  # file -> placeholder -> how many times every line must hold it
    "recap_global": {GLOBAL_CAPTION: 0, CLASS_NAME: 0},
    "recap_region": {GLOBAL_CAPTION: 1, CLASS_NAME: 1},
}
RECAP_VARIANTS = 10  # Sec. 3.3: "ten different versions of input prompts for both stages"


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
    return check_lines(text, source, {REGION: regions, DESCRIPTION: descriptions})


def check_lines(text: str, source: str, placeholders: dict[str, int]) -> tuple[str, ...]:
    """The lines of a template file, each checked to hold every placeholder exactly as often as given."""
    lines = text.splitlines()
    seen: dict[str, int] = {}
    for line_no, line in enumerate(lines, 1):
        where = f"{source}:{line_no}"
        if not line.strip():
            raise ValueError(f"{where}: empty line; every line must be one instruction")
        if line != line.strip():
            raise ValueError(f"{where}: leading or trailing whitespace in {line!r}")
        counts = {p: line.count(p) for p in placeholders}
        if counts != placeholders:
            need = " and ".join(f"{n} {p}" for p, n in placeholders.items())
            got = " and ".join(str(n) for n in counts.values())
            raise ValueError(f"{where}: needs {need}, got {got} in {line!r}")
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


def _read_template(name: str, parse) -> tuple[str, ...]:
    """Template file `name`.txt shipped with the package, parsed (and checked) by `parse`."""
    path = _template_dir() / f"{name}.txt"
    return parse(path.read_text(encoding="utf-8"), name, str(path))


@functools.cache
def load_templates() -> Templates:
    """The templates shipped with the package, read and checked once per process."""
    lists = {name: _read_template(name, parse_templates) for name in TEMPLATE_FILES}
    return Templates(**lists, prompts=_read_prompts())


@dataclass(frozen=True)
class RecapPrompts:
    """RecapD's VLM prompts (Sec. 3.3): stage one asks for a global caption, stage two for a region's."""

    global_: tuple[str, ...]  # describe the whole image
    region: tuple[str, ...]  # each holds one <GlobalCaption> and one <ClassName>

    def region_prompt(self, index: int, global_caption: str, class_name: str) -> str:
        """Region variant `index` with the global caption (its final full stop dropped) and class name filled in."""
        return (self.region[index].replace(GLOBAL_CAPTION, global_caption.strip().rstrip("."))
                .replace(CLASS_NAME, class_name))


def parse_recap_templates(text: str, name: str, source: str) -> tuple[str, ...]:
    """The prompts of one RecapD template file: `RECAP_VARIANTS` distinct lines with the right placeholders."""
    lines = check_lines(text, source, RECAP_TEMPLATE_FILES[name])
    if len(lines) != RECAP_VARIANTS:
        raise ValueError(f"{source}: needs {RECAP_VARIANTS} prompt variants (one a line), got {len(lines)}")
    return lines


@functools.cache
def load_recap_prompts() -> RecapPrompts:
    """The RecapD prompts shipped with the package, read and checked once per process."""
    lists = {name: _read_template(name, parse_recap_templates) for name in RECAP_TEMPLATE_FILES}
    return RecapPrompts(global_=lists["recap_global"], region=lists["recap_region"])
