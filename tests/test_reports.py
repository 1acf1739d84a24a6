"""The report files stages write (rgpt/reports.py)."""

import pytest

from rgpt.reports import write_csv


def test_a_csv_has_the_first_rows_keys_for_header_and_the_given_fields_when_it_has_no_rows(tmp_path):
    write_csv(tmp_path / "a.csv", [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}], ["ignored"])
    assert (tmp_path / "a.csv").read_text().splitlines() == ["step,loss", "1,0.5", "2,0.25"]
    write_csv(tmp_path / "empty.csv", [], ["step", "loss"])
    assert (tmp_path / "empty.csv").read_text().splitlines() == ["step,loss"]
    with pytest.raises(ValueError, match="none.csv: no rows, and no field names"):
        write_csv(tmp_path / "none.csv", [])
