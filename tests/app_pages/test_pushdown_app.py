"""The app on a SQL source: usage is rolled up in the database (`pushdown: auto`), and
the at-risk list is the same as when everything is computed in Polars (`pushdown: off`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sources.sample import generate
from tests.app_pages.conftest import app

duckdb = pytest.importorskip("duckdb")


@pytest.fixture(scope="module")
def duck_book(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wh") / "book.duckdb"
    con = duckdb.connect(str(path))
    for name, df in generate(120, 5).items():
        con.register("frame", df.to_arrow())
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM frame')
        con.unregister("frame")
    con.close()
    return path


def _at_risk_rows(tmp_path, monkeypatch, duck_book, mode: str):
    cfg = tmp_path / f"sources-{mode}.yaml"
    cfg.write_text(f"active: wh\nsources:\n  wh:\n    kind: sql\n    url_env: CHI_WH_URL\n    pushdown: {mode}\n")
    monkeypatch.setenv("CHI_WH_URL", f"duckdb:///{duck_book}")
    monkeypatch.setenv("CHI_SOURCES_FILE", str(cfg))
    at = app()
    at.run(timeout=120)
    assert not at.exception, at.exception
    grid = next(df.value for df in at.dataframe if "Score" in df.value.columns or "score" in df.value.columns)
    return grid


def test_pushed_down_app_shows_the_same_at_risk_list(tmp_path, monkeypatch, duck_book):
    from sources.config import build_active_source
    from ui import data

    pushed = _at_risk_rows(tmp_path, monkeypatch, duck_book, "auto")
    source = build_active_source(tmp_path / "sources-auto.yaml")
    assert source.pushes_down()
    # what the app loaded for this source: everything but usage (rolled up in DuckDB)
    assert "usage" not in data._load(source, "probe-auto").tables
    local = _at_risk_rows(tmp_path, monkeypatch, duck_book, "off")
    assert len(pushed) == len(local) > 50
    assert pushed.equals(local)
