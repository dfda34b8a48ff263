"""The app shell: routing, the sidebar (source, freshness, model, as-of), broken sources."""

from __future__ import annotations

import textwrap

import polars as pl

from sources.files import write_tables_csv
from tests.app_pages.conftest import app, open_page, sample_tables, texts, titles


def _sidebar_text(at) -> str:
    return "\n".join(str(m.value) for m in at.sidebar.markdown) + "\n".join(str(c.value) for c in at.sidebar.caption)


def test_app_renders_the_at_risk_list_by_default():
    at = app()
    at.run()
    assert not at.exception
    assert titles(at) == ["At-risk accounts"]


def test_sidebar_shows_source_model_asof_and_freshness():
    at = app()
    at.run()
    side = _sidebar_text(at)
    assert "`sample`" in side and "Sample book: 600 accounts" in side
    assert "Scores as of **30 Nov 2026**" in side
    assert "Health model `" in side
    assert "Product usage: 30 Nov 2026" in side  # per-table latest record
    assert "Not signed in" in side


def test_sidebar_says_who_you_are(monkeypatch):
    monkeypatch.setenv("CHI_USER", "maya.patel@example.com")
    at = app()
    at.run()
    assert "maya.patel@example.com (local user) → Maya Patel" in _sidebar_text(at)


def _files_source(tmp_path, tables: dict[str, pl.DataFrame]) -> str:
    write_tables_csv(tables, tmp_path / "export")
    cfg = tmp_path / "config" / "sources.yaml"
    cfg.parent.mkdir()
    cfg.write_text(textwrap.dedent("""\
        active: broken_export
        sources:
          broken_export:
            kind: files
            path: export
        """))
    return str(cfg)


def _small_book(n: int = 25) -> dict[str, pl.DataFrame]:
    tables = sample_tables()
    ids = tables["accounts"]["account_id"].head(n)
    return {k: v.filter(pl.col("account_id").is_in(ids.implode())) for k, v in tables.items()}


def test_bad_rows_are_reported_and_the_good_rows_still_score(tmp_path, monkeypatch):
    book = _small_book()
    accounts = book["accounts"].with_columns(pl.col("arr").cast(pl.String))
    accounts = accounts.with_columns(
        pl.when(pl.int_range(pl.len()) < 2).then(pl.lit("lots")).otherwise(pl.col("arr")).alias("arr")
    )
    book["accounts"] = accounts
    monkeypatch.setenv("CHI_SOURCES_FILE", _files_source(tmp_path, book))
    at = app()
    at.run()
    assert not at.exception
    assert any("data problem" in w.value for w in at.warning)
    body = texts(at)
    assert "accounts.arr" in body  # the problem, as text
    assert "Rows rejected: **accounts** 2" in body
    assert len(at.dataframe) >= 1  # the list still shows the good accounts


def test_a_source_without_usable_accounts_shows_the_contract_errors(tmp_path, monkeypatch):
    book = _small_book()
    book["accounts"] = book["accounts"].drop("owner", "arr")
    monkeypatch.setenv("CHI_SOURCES_FILE", _files_source(tmp_path, book))
    at = app()
    at.run()
    assert not at.exception
    assert at.error, "an st.error says what is wrong"
    body = texts(at)
    assert "broken_export" in body
    assert "owner" in body and "arr" in body  # the missing columns are named
    assert not at.dataframe


def test_a_misconfigured_source_is_an_error_not_a_traceback(tmp_path, monkeypatch):
    cfg = tmp_path / "config" / "sources.yaml"
    cfg.parent.mkdir()
    cfg.write_text("active: nope\nsources:\n  nope: {kind: warehouse9000}\n")
    monkeypatch.setenv("CHI_SOURCES_FILE", str(cfg))
    for page in ("app_pages/at_risk.py", "app_pages/account.py", "app_pages/segments.py"):
        at = open_page(page, {"account": "ACC-00001"})
        assert not at.exception
        assert any("misconfigured" in e.value for e in at.error)
        assert "warehouse9000" in texts(at)


def test_a_broken_model_is_an_error_not_a_traceback(tmp_path, monkeypatch):
    bad = tmp_path / "weights.yaml"
    bad.write_text("signals: {}\nsegments: {}\n")
    monkeypatch.setenv("CHI_MODEL", str(bad))
    at = app()
    at.run()
    assert not at.exception
    assert any("health model has errors" in e.value for e in at.error)
