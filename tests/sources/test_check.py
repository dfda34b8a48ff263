"""`python -m health sources check`: the per-table report and its exit code."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from health.schema import TABLES
from sources.base import SourceConfigError
from sources.check import run_check

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "files"
TODAY = dt.date(2026, 12, 4)


def project_with(tmp_path: Path, folder: str, monkeypatch) -> Path:
    monkeypatch.delenv("CHI_SOURCE", raising=False)
    shutil.copytree(FIXTURES / folder, tmp_path / "exports" / folder)
    (tmp_path / "config").mkdir()
    path = tmp_path / "config" / "sources.yaml"
    path.write_text(f"active: {folder}\nsources:\n  {folder}:\n    kind: files\n    path: exports/{folder}\n")
    return path


def test_good_source_reports_every_table_and_exits_0(tmp_path, monkeypatch):
    report, code = run_check(project_with(tmp_path, "good", monkeypatch), today=TODAY)
    assert code == 0
    for table in TABLES:
        assert f"\n{table}: " in report
    assert "source 'good': CSV/Parquet folder exports/good" in report
    assert "accounts: 3 rows kept, 0 rejected" in report
    assert "usage: 4 rows kept, 0 rejected" in report
    assert "date 2026-11-28 .. 2026-11-29; latest 2026-11-29 (5 days before today)" in report
    assert "opened_at 2026-11-20 09:00:00 .. 2026-11-25 14:00:00" in report
    assert "no time column" in report  # accounts is a snapshot
    assert report.rstrip().endswith("\nOK")


def test_bad_source_names_the_problems_and_exits_1(tmp_path, monkeypatch):
    report, code = run_check(project_with(tmp_path, "bad", monkeypatch), today=TODAY)
    assert code == 1
    assert "accounts: 1 row kept, 2 rejected" in report
    assert "[error] bad_type: table 'accounts' (exports/bad/accounts.csv), column 'arr'" in report
    assert "line 3: account_id='A2', arr='lots'" in report  # the example row
    assert "[error] duplicate_id:" in report
    assert "usage: not loaded" in report and "no required column 'metric'" in report
    assert "Did you mean 'metrics'?" in report
    assert "[error] unknown_account:" in report and "'A9'" in report
    assert "invoices: not loaded" in report and "invoices.csv is empty" in report
    assert report.rstrip().endswith("\n5 errors, 0 warnings")


def test_named_source_and_config_errors_propagate(tmp_path, monkeypatch):
    path = project_with(tmp_path, "good", monkeypatch)
    with pytest.raises(SourceConfigError, match="did you mean 'good'"):
        run_check(path, "god")
