"""The instruction lists are the paper's, character for character, and well-formed."""

import re
from pathlib import Path

import pytest

from rgpt.data.templates import DESCRIPTION, REGION, TEMPLATE_FILES, load_templates, parse_templates

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "regiongpt-arxiv.txt"  # ../shared beside the repo
TEMPLATE_DIR = Path(__file__).parents[1] / "rgpt" / "data" / "templates"


@pytest.fixture(scope="module")
def templates():
    return load_templates()


def test_counts(templates):
    assert {name: len(getattr(templates, name)) for name in TEMPLATE_FILES} == {
        "brief_caption": 43, "detailed_description": 10, "relationship": 10, "classification": 15, "rec": 15}


@pytest.mark.parametrize("name", list(TEMPLATE_FILES))
def test_placeholders_and_uniqueness(templates, name):
    lines = getattr(templates, name)
    regions, descriptions = TEMPLATE_FILES[name]
    assert {(line.count(REGION), line.count(DESCRIPTION)) for line in lines} == {(regions, descriptions)}
    assert len(set(lines)) == len(lines)
    assert not any("⟨" in line or "⟩" in line or re.match(r"\d+\. ", line) for line in lines)


def test_exact_lines(templates):
    assert templates.brief_caption[0] == "Provide a brief caption for the area indicated by <region>."
    assert templates.brief_caption[15] == "A short caption of region <region>:"
    assert templates.brief_caption[18] == "A region <region> that shows"
    assert templates.brief_caption[42] == "Describe the scene or setting depicted in this region <region>."
    assert templates.detailed_description[0] == ("Describe in detail the object located at <region> in the image, "
                                                 "including its appearance, style, and any visible details.")
    assert templates.relationship[4] == ("Detail the way in which the area labeled <region> interacts with or "
                                         "relates to the region designated by <region> within the image's context.")
    assert templates.classification[13] == ("What stands out to you in the region demarcated by <region>? "
                                            "Please classify it.")
    assert templates.rec[0] == ("Given the mask proposals <region> in the image, can you pinpoint the one that "
                                "matches <description>.")


@pytest.mark.skipif(not PAPER.exists(), reason="the paper's text is not on this machine")
@pytest.mark.parametrize("name, table", [("brief_caption", 21), ("detailed_description", 22),
                                         ("relationship", 23), ("classification", 24), ("rec", 25)])
def test_every_line_is_the_papers(templates, name, table):
    """Each table's numbered lines (just above its caption), ⟨region⟩ normalised to <region>."""
    lines = PAPER.read_text(encoding="utf-8").splitlines()
    caption = next(i for i, line in enumerate(lines) if line.startswith(f"Table {table}. The list of instructions"))
    n = len(getattr(templates, name))
    numbered = [line for line in lines[:caption] if line.strip()][-n:]
    expected = [re.sub(r"^\d+\. ", "", line).replace("⟨region⟩", REGION) for line in numbered]
    assert [line.split(". ")[0] for line in numbered] == [str(i) for i in range(1, n + 1)]
    assert list(getattr(templates, name)) == expected


def test_task_prompts(templates):
    prompts = templates.prompts
    assert prompts.coco == "Answer the question using COCO-80 category names."
    assert prompts.rec == "Answer the question using the template Region [x]."
    assert prompts.rec_answer.format(index=2) == "Region [2]."
    assert prompts.rec_absent == "No corresponding options found."


def test_template_files_have_no_stray_characters():
    for name in TEMPLATE_FILES:
        text = (TEMPLATE_DIR / f"{name}.txt").read_text(encoding="utf-8")
        assert text.endswith("\n") and "\n\n" not in text and "\r" not in text
        assert text.isascii(), name


@pytest.mark.parametrize("text, error", [
    ("Describe <region>.\n\nName <region>.\n", "x.txt:2: empty line"),
    ("Describe <region>.\nCompare <region> with <region>.\n",
     "x.txt:2: needs 1 <region> and 0 <description>, got 2 and 0"),
    ("Describe ⟨region⟩.\n", "x.txt:1: needs 1 <region>"),
    ("Describe <region>.\nDescribe <region>.\n", "x.txt:2: duplicate of line 1"),
    ("Describe <region>. \n", "x.txt:1: leading or trailing whitespace"),
])
def test_parse_rejects_malformed_files(text, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        parse_templates(text, "classification", "x.txt")


def test_parse_keeps_order():
    assert parse_templates("Name <region>.\nLabel <region>.\n", "classification", "x.txt") == (
        "Name <region>.", "Label <region>.")
