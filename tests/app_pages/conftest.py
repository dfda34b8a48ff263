"""AppTest helpers: the app on the shared sample book (data/sample/, generated once)."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from sources.sample import DEFAULT_ACCOUNTS, DEFAULT_SEED, ensure_sample

ROOT = Path(__file__).resolve().parents[2]
APP = "../../app.py"  # AppTest resolves relative paths against this folder
TIMEOUT = 90


@pytest.fixture(scope="session", autouse=True)
def sample_book() -> Path:
    """The sample book config/sources.yaml points at, generated once for every test."""
    return ensure_sample(ROOT / "data" / "sample", DEFAULT_ACCOUNTS, DEFAULT_SEED)


@pytest.fixture(autouse=True)
def _default_env(monkeypatch, tmp_path):
    """Every test starts from the repo's own config, with nobody signed in, and its own
    empty state db (actions, approvals, model versions) and uploads folder — never the
    repo's data/."""
    for var in ("CHI_SOURCES_FILE", "CHI_SOURCE", "CHI_MODEL", "CHI_USER"):
        monkeypatch.delenv(var, raising=False)
    for var in ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN", "SALESFORCE_SESSION_ID",
                "SALESFORCE_INSTANCE_URL", "SALESFORCE_DOMAIN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CHI_STATE_DB", str(tmp_path / "state.db"))
    monkeypatch.setenv("CHI_UPLOADS_DIR", str(tmp_path / "uploads"))  # never the repo's data/uploads


@pytest.fixture
def book():
    """The scored book the app shows (the same cached objects), for expected values."""
    from ui.data import Book, load_book

    got = load_book()
    assert isinstance(got, Book), got
    return got


def app(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    return at


def open_page(page: str, query: dict | None = None) -> AppTest:
    """Run the app, then switch to `page` (e.g. "app_pages/account.py") with `query`."""
    at = app(query)
    at.run()
    if page != "app_pages/at_risk.py":
        at.switch_page(page)
        at.run()
    return at


def grid(at: AppTest, index: int = 0) -> pl.DataFrame:
    """The at-risk table as shown (the first dataframe on the page)."""
    return pl.from_pandas(at.dataframe[index].value)


def titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


def texts(at: AppTest) -> str:
    """Every piece of text on the page, joined: markdown, captions, alerts, metrics."""
    parts: list[str] = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "code"):
        parts += [str(e.value) for e in at.get(kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    return "\n".join(parts)


def figures(at: AppTest) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def follow(at: AppTest, link) -> AppTest:
    """Follow a page_link the way a click would: its query string, then its page."""
    query = urllib.parse.parse_qs(link.proto.query_string)
    at.query_params.clear()
    for k, v in query.items():
        at.query_params[k] = v if len(v) > 1 else v[0]
    at.switch_page("app_pages/at_risk.py")
    at.run()
    return at


def sample_tables() -> dict[str, pl.DataFrame]:
    folder = ROOT / "data" / "sample"
    return {p.stem: pl.read_parquet(p) for p in folder.glob("*.parquet")}


AS_OF = dt.date(2026, 11, 30)
