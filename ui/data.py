"""Cached loading and scoring: the one place pages get their data from.

Caching is at the edges, keyed by the source's identity and the model's hash:

* the source object (`st.cache_resource`): built once from config/sources.yaml;
* the load, the 52-week score history, the current summary and the worklist rows
  (`st.cache_resource(ttl=600)`): computed ONCE per source x model, then shared. Changing
  a filter or opening an account reads these and never re-scores.

Why `cache_resource` and not `cache_data` for the big frames: `cache_data` pickles the
value on every hit. Measured on the 10k-account sample (bench/app_bench.py), unpickling the
load costs ~1.5 s and the history ~0.45 s on every rerun, which alone breaks the 1 s
budget for a filter change; `cache_resource` hands back the same immutable Polars frames
at no cost. Nothing mutates them (Polars operations return new frames). Small per-account
results use `cache_data`.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import streamlit as st

from health.explain import breakdown
from health.features import AS_OF
from health.freshness import account_freshness, freshness
from health.loading import LoadResult, Problem
from health.model_loader import LoadedModel, ModelError, load_model
from health.scoring import default_as_of, score_history
from health.timeline import account_timeline, usage_series
from health.trajectory import summarize
from health.worklist import owners_for, worklist
from sources.base import Source, SourceConfigError
from sources.config import build_active_source

ROOT = Path(__file__).resolve().parent.parent
CONFIG_ENV = "CHI_SOURCES_FILE"
"""Environment variable: another sources.yaml (default config/sources.yaml)."""
MODEL_ENV = "CHI_MODEL"
"""Environment variable: another health model file (default weights.yaml)."""
UPLOADS_ENV = "CHI_UPLOADS_DIR"
"""Environment variable: another folder for accepted uploads (default data/uploads)."""
USER_ENV = "CHI_USER"
"""Environment variable: who "my accounts" means when nobody is signed in (email or name)."""
HISTORY_WEEKS = 52
TTL = 600


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or ROOT / "config" / "sources.yaml")


def model_path() -> Path:
    return Path(os.environ.get(MODEL_ENV) or ROOT / "weights.yaml")


def uploads_dir() -> Path:
    return Path(os.environ.get(UPLOADS_ENV) or ROOT / "data" / "uploads")


# ---------------------------------------------------------------------------------------
# Cached steps
# ---------------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def _source(config_file: str, mtime_ns: int, env_source: str | None) -> Source:
    return build_active_source(Path(config_file))


def _pushes_down(source: Source) -> bool:
    """A SQL source that rolls usage up in the database (`pushdown:` in sources.yaml)."""
    return bool(getattr(source, "pushes_down", None) and source.pushes_down())  # type: ignore[attr-defined]


@st.cache_resource(ttl=TTL, show_spinner="Loading the data…")
def _load(_source: Source, source_key: str) -> LoadResult:
    # Pushing down: usage stays in the database; its roll-ups come back when scoring.
    return _source.load(skip=("usage",)) if _pushes_down(_source) else _source.load()  # type: ignore[call-arg]


@st.cache_resource(show_spinner=False)
def _model(path: str, mtime_ns: int) -> LoadedModel:
    return load_model(path)


@st.cache_resource(ttl=TTL, show_spinner="Scoring 52 weeks of history…")
def _history(_tables: dict[str, pl.DataFrame], _model: Any, source_key: str, model_hash: str, as_of: dt.date, weeks: int) -> pl.DataFrame:
    source = get_source()
    if not _pushes_down(source):
        return score_history(_tables, _model, as_of, weeks=weeks)
    with source.engine().connect() as conn:  # type: ignore[attr-defined]
        provider = source.rollup_provider(conn, tables=("usage",))  # type: ignore[attr-defined]
        return score_history(_tables, _model, as_of, weeks=weeks, rollup_provider=provider)


@st.cache_resource(ttl=TTL, show_spinner=False)
def _summary(_history: pl.DataFrame, _model: Any, source_key: str, model_hash: str, as_of: dt.date) -> pl.DataFrame:
    return summarize(_history, _model, as_of)


@st.cache_resource(ttl=TTL, show_spinner=False)
def _rows(_summary: pl.DataFrame, source_key: str, model_hash: str, as_of: dt.date) -> pl.DataFrame:
    return worklist(_summary, as_of)


@st.cache_data(ttl=TTL, show_spinner=False)
def _as_of(_tables: dict[str, pl.DataFrame], key: str) -> dt.date:
    return default_as_of(_tables)


@st.cache_resource(ttl=TTL, show_spinner=False)
def _with_uploads(_result: LoadResult, key: str, uploads_fingerprint: str) -> LoadResult:
    from health.uploads import list_uploads, merge

    return merge(_result, list_uploads(uploads_dir()))


@st.cache_data(ttl=TTL, show_spinner=False)
def _freshness(_tables: dict[str, pl.DataFrame], source_key: str, today: dt.date, stale_after: tuple = ()) -> pl.DataFrame:
    return freshness(_tables, today, dict(stale_after) or None)


@st.cache_data(show_spinner=False)
def _latency(config_file: str, mtime_ns: int) -> dict[str, int | None]:
    from sources.config import expected_latency as read_latency

    try:
        return read_latency(Path(config_file))
    except SourceConfigError:  # the source itself reports a broken file
        from health.freshness import expected_latencies

        return expected_latencies()


def expected_latency() -> dict[str, int | None]:
    """Days after which each table counts as stale (`expected_latency:` in sources.yaml)."""
    cfg = config_path()
    return _latency(str(cfg), _mtime(cfg))


# ---------------------------------------------------------------------------------------
# The book: everything a page needs, or why it cannot be had
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Book:
    source_name: str
    source_text: str
    result: LoadResult
    loaded: LoadedModel
    as_of: dt.date
    history: pl.DataFrame
    summary: pl.DataFrame
    rows: pl.DataFrame
    freshness: pl.DataFrame
    key: str

    @property
    def model(self):  # noqa: ANN201 - HealthModel
        return self.loaded.model

    @property
    def tables(self) -> dict[str, pl.DataFrame]:
        return self.result.tables

    @property
    def model_hash(self) -> str:
        return self.loaded.hash


@dataclass(frozen=True)
class Broken:
    """Why there is no book: a title, the message, and (for a bad load) the problems."""

    title: str
    message: str
    source_name: str | None = None
    source_text: str | None = None
    result: LoadResult | None = None
    details: list[str] = field(default_factory=list)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def get_source() -> Source:
    cfg = config_path()
    return _source(str(cfg), _mtime(cfg), os.environ.get("CHI_SOURCE"))


def load_book() -> Book | Broken:
    """The scored book of the active source, or a `Broken` that says what went wrong."""
    try:
        source = get_source()
    except SourceConfigError as exc:
        return Broken("The data source is misconfigured", str(exc))
    name, text = source.name, source.describe()
    cfg = config_path()
    # Two configs may name a source alike ("sample"): the config file and its version are
    # part of the key, so editing sources.yaml reloads.
    load_key = f"{cfg.resolve()}@{_mtime(cfg)}|{name}|{text}"
    try:
        result = _load(source, load_key)
    except Exception as exc:  # an adapter failing outright: say so, no traceback
        return Broken(f"Could not load the source '{name}'", f"{type(exc).__name__}: {exc}", name, text)
    try:
        from health.uploads import fingerprint

        up_key = fingerprint(uploads_dir())
        result = _with_uploads(result, f"{load_key}@{result.loaded_at.isoformat()}", up_key)  # accepted uploads join in
        load_key = f"{load_key}|uploads {up_key}"
    except Exception as exc:  # noqa: BLE001 - an unreadable uploads folder must not hide the source
        note = Problem("(uploads)", None, "uploads_unreadable", f"The accepted uploads in {uploads_dir()} could not "
                       f"be read ({exc}); the source was loaded without them.", severity="warning")
        result = LoadResult(result.source, result.tables, result.rejected, [*result.problems, note], result.loaded_at)
    accounts = result.tables.get("accounts")
    if accounts is None or accounts.is_empty():
        return Broken(
            f"The source '{name}' has no usable accounts",
            "The accounts table is missing or every row was rejected, so there is nothing to score.",
            name,
            text,
            result,
        )
    mpath = model_path()
    try:
        loaded = _model(str(mpath), _mtime(mpath))
    except ModelError as exc:
        return Broken(
            "The health model has errors",
            f"{mpath.name} could not be loaded; fix it and reload.",
            name,
            text,
            details=[str(i) for i in exc.issues],
        )
    key = f"{load_key}|loaded {result.loaded_at.isoformat()}"  # a new load means new scores
    as_of = _as_of(result.tables, key)
    history = _history(result.tables, loaded.model, key, loaded.hash, as_of, HISTORY_WEEKS)
    summary = _summary(history, loaded.model, key, loaded.hash, as_of)
    rows = _rows(summary, key, loaded.hash, as_of)
    fresh = _freshness(result.tables, key, dt.date.today(), tuple(sorted(expected_latency().items())))
    return Book(name, text, result, loaded, as_of, history, summary, rows, fresh, key)


def reload() -> None:
    """Forget every cached load, score and view: the next run reads the source again."""
    for fn in (_source, _load, _with_uploads, _model, _as_of, _history, _summary, _rows, _freshness, _account_view):
        fn.clear()


def problems_text(result: LoadResult) -> str:
    """The load's problems as plain text: one line each, with a few example rows."""
    lines = []
    for p in result.problems:
        lines.append(str(p) + (f" ({p.count} rows)" if p.count else ""))
        for ex in p.examples[:3]:
            where = f"line {ex.get('_line')}: " if ex.get("_line") is not None else ""
            rest = ", ".join(f"{k}={v!r}" for k, v in ex.items() if not str(k).startswith("_"))
            lines.append(f"    {where}{rest}")
    return "\n".join(lines)


def rejected_counts(result: LoadResult) -> dict[str, int]:
    return {t: df.height for t, df in result.rejected.items() if df is not None and df.height}


def show_broken(b: Broken) -> None:
    st.error(f"**{b.title}.** {b.message}")
    if b.source_name:
        st.caption(f"Source: {b.source_name} — {b.source_text}")
    if b.result is not None:
        show_problems(b.result, expanded=True)
    if b.details:
        st.code("\n".join(b.details), language=None)


def show_problems(result: LoadResult, expanded: bool = False) -> None:
    """The data contract problems of a load, as text, with the rejected row counts."""
    rejected = rejected_counts(result)
    n_err, n_warn = len(result.errors), len(result.problems) - len(result.errors)
    label = f"Data problems: {n_err} error(s), {n_warn} warning(s)"
    if rejected:
        label += f"; {sum(rejected.values()):,} row(s) rejected"
    with st.expander(label, expanded=expanded):
        if rejected:
            st.markdown("Rows rejected: " + ", ".join(f"**{t}** {n:,}" for t, n in rejected.items()))
        st.code(problems_text(result) or "(no details)", language=None)
        st.caption("The rows that passed the checks are used; fix the source and reload to bring the others in.")


def book_or_stop() -> Book:
    """For pages: the book, or the error drawn on the page and the script stopped."""
    book = load_book()
    if isinstance(book, Broken):
        show_broken(book)
        st.stop()
    if book.result.errors:
        st.warning(
            f"The source '{book.source_name}' loaded with {len(book.result.errors)} data problem(s); "
            "scores use the rows that passed. Details below."
        )
        show_problems(book.result)
    return book  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------
# Who is looking
# ---------------------------------------------------------------------------------------


def current_user() -> tuple[str | None, str]:
    """(identity, how we know): the signed-in email, else CHI_USER / secrets app.local_user."""
    try:
        if st.user.get("is_logged_in") and st.user.get("email"):
            return str(st.user.get("email")), "signed in"
    except Exception:  # no auth configured
        pass
    local = os.environ.get(USER_ENV)
    if not local:
        try:
            local = st.secrets.get("app", {}).get("local_user")
        except Exception:  # no secrets file at all
            local = None
    if local:
        return str(local), "local user"
    return None, "not signed in"


def my_owners(book: Book) -> tuple[list[str], str | None, str]:
    who, how = current_user()
    return owners_for(book.tables["accounts"], who), who, how


# ---------------------------------------------------------------------------------------
# One account
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountView:
    account_id: str
    account: dict[str, Any]
    """The accounts-table row."""
    current: dict[str, Any] | None
    """The summary row (score, tier, changes, drivers...), None when not active at as_of."""
    history: pl.DataFrame
    breakdown: pl.DataFrame | None
    timeline: pl.DataFrame
    usage: pl.DataFrame
    freshness: pl.DataFrame
    since: dt.date


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=200)
def _account_view(_book: Book, key: str, model_hash: str, as_of: dt.date, account_id: str) -> AccountView | None:
    return build_account_view(_book, account_id)


def build_account_view(book: Book, account_id: str) -> AccountView | None:
    """Everything the account page shows, from the cached book (no re-scoring)."""
    acc = book.tables["accounts"].filter(pl.col("account_id") == account_id)
    if acc.is_empty():
        return None
    since = book.as_of - dt.timedelta(weeks=HISTORY_WEEKS)
    hist = book.history.filter(pl.col("account_id") == account_id).sort(AS_OF)
    cur = book.summary.filter(pl.col("account_id") == account_id)
    current = cur.row(0, named=True) if cur.height else None
    return AccountView(
        account_id=account_id,
        account=acc.row(0, named=True),
        current=current,
        history=hist,
        breakdown=breakdown(current, book.model) if current else None,
        timeline=account_timeline(book.tables, account_id, history=hist, since=since, until=book.as_of),
        usage=usage_series(book.tables, account_id, since=since, until=book.as_of, smooth_days=7),
        freshness=account_freshness(book.tables, account_id, book.as_of, book.freshness),
        since=since,
    )


def account_view(book: Book, account_id: str) -> AccountView | None:
    return _account_view(book, book.key, book.model_hash, book.as_of, account_id)


# ---------------------------------------------------------------------------------------
# The health model's versions, roles and what-if (the Model page)
# ---------------------------------------------------------------------------------------

STATE_DB_ENV = "CHI_STATE_DB"
"""Environment variable: another SQLite state file (default data/state.db)."""
ROLES_ENV = "CHI_ROLES_FILE"
"""Environment variable: another roles file (default config/roles.yaml)."""


def state_db_path() -> Path:
    return Path(os.environ.get(STATE_DB_ENV) or ROOT / "data" / "state.db")


def roles_path() -> Path:
    return Path(os.environ.get(ROLES_ENV) or ROOT / "config" / "roles.yaml")


def model_store():  # noqa: ANN201 - health.model_versions.VersionStore
    from health.model_versions import VersionStore

    return VersionStore(state_db_path())


@st.cache_resource(show_spinner=False)
def _roles(path: str, mtime_ns: int):  # noqa: ANN202 - health.roles.Roles
    from health.roles import load_roles

    return load_roles(path)


def get_roles():  # noqa: ANN201 - health.roles.Roles; raises health.yaml_config.ConfigError
    p = roles_path()
    return _roles(str(p), _mtime(p))


def auth_enabled() -> bool:
    """Someone is signed in (st.login), or secrets configure [auth]."""
    try:
        if st.user.get("is_logged_in"):
            return True
    except Exception:  # no auth configured
        pass
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def role_user(act_as: str | None = None):  # noqa: ANN201 - health.roles.User
    """Who is looking, with their roles from config/roles.yaml: the signed-in e-mail when
    auth is on; else the local user — or, in roles.yaml's demo mode (impersonate), the
    user picked in `act_as` (None: CHI_USER / app.local_user; "": the local user)."""
    roles = get_roles()
    who, how = current_user()
    if auth_enabled():
        return roles.current_user(who if how == "signed in" else None, auth_enabled=True)
    return roles.current_user(None, auth_enabled=False, act_as=who if act_as is None else act_as)


@st.cache_resource(ttl=TTL, show_spinner="Scoring the book with the draft model…", max_entries=16)
def _what_if(_tables: dict[str, pl.DataFrame], _published: Any, _draft: Any, key: str, published_hash: str,
             draft_hash: str, as_of: dt.date):  # noqa: ANN202 - health.model_versions.WhatIf
    from health.model_versions import what_if

    return what_if(_tables, _published, _draft, as_of)


def what_if_view(book: Book, draft: LoadedModel):  # noqa: ANN201 - health.model_versions.WhatIf
    """The draft against the book's (published) model, cached per source x both hashes."""
    return _what_if(book.tables, book.loaded, draft, book.key, book.model_hash, draft.hash, book.as_of)


@st.cache_resource(ttl=TTL, show_spinner="Checking the model against past renewals…", max_entries=8)
def _calibration(_tables: dict[str, pl.DataFrame], _model: Any, key: str, model_hash: str, lead_days: int):  # noqa: ANN202
    from health.backtest import run_backtest

    return run_backtest(_tables, _model, lead_days=lead_days, snap="week", resamples=200)


def calibration_view(book: Book, lead_days: int = 90):  # noqa: ANN201 - health.backtest.BacktestResult | None
    """The published model's back-test on the book (None without past renewals), cached
    per source x model."""
    if "outcomes" not in book.tables:
        return None
    from health.backtest import BacktestError

    try:
        return _calibration(book.tables, book.model, book.key, book.model_hash, lead_days)
    except BacktestError:
        return None


@st.cache_data(ttl=60, show_spinner=False)
def _model_changes(db: str, model_file: str, mtime_ns: int) -> list[tuple[dt.date, str]]:
    from health.model_versions import VersionStore, version_periods

    if not Path(db).exists():
        return []
    periods = version_periods(VersionStore(Path(db)), model_file)
    return [
        (row["from"].date(), f"model v{row['version']}")
        for row in periods.iter_rows(named=True)
        if row["kind"] != "initial"
    ]


def model_changes() -> list[tuple[dt.date, str]]:
    """When the published model changed (version label per date), for chart markers."""
    path = model_path()
    try:
        return _model_changes(str(state_db_path()), str(path), _mtime(path))
    except Exception:  # a missing or older state db must not break a chart
        return []


@st.cache_resource(ttl=TTL, show_spinner="Fitting weights to past renewals…", max_entries=4)
def _suggestion(_book: Book, key: str, model_hash: str):  # noqa: ANN202 - health.suggest.Suggestion
    from health.suggest import suggest_weights

    backtest = calibration_view(_book)
    return None if backtest is None else suggest_weights(_book.loaded.text, _book.model, backtest)


def suggestion_view(book: Book):  # noqa: ANN201 - health.suggest.Suggestion | None
    """Weights fitted to the book's past renewals, as a draft text (None without outcomes)."""
    return _suggestion(book, book.key, book.model_hash)
