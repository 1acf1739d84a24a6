"""docs/results.md and the README's results table are what rgpt.results makes of reports/ (so the
figures in the docs cannot drift from the committed run), and they follow the metrics files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rgpt import results

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "reports"


def readme_block(text: str) -> str:
    return text.split(results.START, 1)[1].split(results.END, 1)[0].strip("\n")


def test_results_page_is_the_committed_reports():
    assert (REPO / results.PAGE).read_text() == results.render(REPORTS), \
        "docs/results.md is out of date with reports/*/metrics.json: run `python -m rgpt.results`"


def test_readme_table_is_the_committed_reports():
    assert readme_block((REPO / results.README).read_text()) == results.readme_table(REPORTS), \
        "README.md's results table is out of date with reports/*/metrics.json: run `python -m rgpt.results`"


def test_page_starts_by_saying_it_is_generated():
    first = results.render(REPORTS).splitlines()[0]
    assert "python -m rgpt.results" in first and "reports/*/metrics.json" in first


def test_render_shows_the_coco_accuracy():
    accuracy = json.loads((REPORTS / "evaluate" / "metrics.json").read_text())["classification"]["accuracy"]
    shown = f"{100 * accuracy:.1f}"
    assert results.pct(accuracy) == shown
    assert f"| accuracy | {shown} | " in results.render(REPORTS)
    assert f"| COCO val region classification: accuracy / mAP | {shown} / " in results.readme_table(REPORTS)


@pytest.fixture()
def reports(tmp_path) -> Path:
    copy = tmp_path / "reports"
    shutil.copytree(REPORTS, copy, ignore=shutil.ignore_patterns("*.png", "*.html", "*.jsonl"))
    return copy


def test_a_changed_metrics_file_changes_the_output(reports):
    before_page, before_table = results.render(reports), results.readme_table(reports)
    path = reports / "evaluate" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["classification"]["accuracy"] = 0.5
    path.write_text(json.dumps(metrics))
    assert results.render(reports) != before_page and "| accuracy | 50.0 | " in results.render(reports)
    assert results.readme_table(reports) != before_table and "| 50.0 / " in results.readme_table(reports)


def test_a_missing_metrics_file_changes_the_output(reports):
    before = results.render(reports)
    (reports / "clip_filter" / "metrics.json").unlink()
    page = results.render(reports)
    assert page != before and "No `reports/clip_filter/metrics.json`" in page
    (reports / "evaluate" / "metrics.json").unlink()
    assert "No `reports/evaluate/metrics.json`" in results.render(reports)
    assert "No `reports/evaluate/metrics.json`" in results.readme_table(reports)


def test_check_names_the_stale_file_and_writing_mends_it(reports, capsys):
    root = reports.parent
    (root / "README.md").write_text(f"# x\n\n{results.START}\nold\n{results.END}\n\nrest\n")
    assert results.main(["--check", "--root", str(root)]) == 1
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "docs/results.md" in message and "README.md" in message

    assert results.main(["--root", str(root)]) == 0
    assert results.main(["--check", "--root", str(root)]) == 0
    readme = (root / "README.md").read_text()
    assert readme.startswith("# x\n\n") and readme.endswith(f"{results.END}\n\nrest\n")
    assert readme_block(readme) == results.readme_table(reports)

    page = root / results.PAGE
    page.write_text(page.read_text() + "edited by hand\n")
    assert results.main(["--check", "--root", str(root)]) == 1
    message = capsys.readouterr().err.strip()
    assert "docs/results.md" in message and "README.md" not in message.split(" out of date")[0]
