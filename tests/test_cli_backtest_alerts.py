"""`python -m health backtest` reports alert precision once `python -m health run` has
stored alerts: which rules fired before churned renewals and which before renewed ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, db: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHI_STATE_DB": str(db)}
    return subprocess.run([sys.executable, "-m", "health", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_backtest_reports_alert_precision_after_backfilled_runs(tmp_path):
    db = tmp_path / "state.db"
    before = _cli("backtest", db=db)
    assert before.returncode == 0, before.stderr
    assert "Alerts stored by" not in before.stdout  # no alerts yet: nothing to say
    for day in ("2026-03-01", "2026-03-08", "2026-03-15"):
        run = _cli("run", "--no-send", "--no-sync", "--as-of", day, db=db)
        assert run.returncode == 0, run.stdout + run.stderr
    after = _cli("backtest", db=db)
    assert after.returncode == 0, after.stderr
    assert "Alerts stored by `python -m health run`" in after.stdout
    pooled = next(line for line in after.stdout.splitlines() if "(any)" in line)
    cells = [c.strip() for c in pooled.strip("│ ").split("┆")]
    renewals_alerted, churned, renewed = (int(c) for c in cells[1:4])
    assert renewals_alerted == churned + renewed > 0
