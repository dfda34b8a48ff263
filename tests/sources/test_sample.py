"""The generated sample book: contract shape, determinism, the causal story, and caching."""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from health.schema import TABLE_NAMES, TABLES
from sources import registry, sample
from sources.base import SourceConfigError

END = sample.END_DATE
FIRST_DAY = END - dt.timedelta(days=sample.HISTORY_DAYS - 1)


@pytest.fixture(scope="module")
def book() -> dict[str, pl.DataFrame]:
    return sample.generate(600, seed=7)


@pytest.fixture(scope="module")
def outcomes(book: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Past renewals with the account's segment and its tenure at the renewal."""
    return (
        book["outcomes"]
        .join(book["accounts"].select("account_id", "segment", "start_date"), on="account_id")
        .with_columns(
            churned=pl.col("outcome") == "churned",
            tenure_days=(pl.col("renewal_date") - pl.col("start_date")).dt.total_days(),
        )
    )


# --- determinism -----------------------------------------------------------------------


def test_same_seed_gives_identical_tables(book: dict[str, pl.DataFrame]) -> None:
    again = sample.generate(600, seed=7)
    for name in TABLE_NAMES:
        assert_frame_equal(book[name], again[name])


def test_different_seed_gives_a_different_book(book: dict[str, pl.DataFrame]) -> None:
    other = sample.generate(600, seed=8)
    for name in ("accounts", "usage", "tickets", "outcomes"):
        assert not book[name].equals(other[name]), name


# --- the data contract -----------------------------------------------------------------


def test_every_table_has_the_canonical_columns_and_dtypes(book: dict[str, pl.DataFrame]) -> None:
    assert set(book) == set(TABLE_NAMES)
    for name, spec in TABLES.items():
        schema = book[name].schema
        for column in spec.columns:
            assert column.name in schema, f"{name}.{column.name} missing"
            assert schema[column.name] == column.dtype, (
                f"{name}.{column.name}: {schema[column.name]}"
            )
        required = book[name].select(spec.required_columns)
        assert required.null_count().sum_horizontal().item() == 0, f"nulls in {name}"


def test_accounts_carry_status_and_every_optional_column(book: dict[str, pl.DataFrame]) -> None:
    accounts = book["accounts"]
    assert accounts.height == 600
    assert set(accounts["status"].unique()) == {"active", "churned"}
    assert accounts.null_count().sum_horizontal().item() == 0
    assert accounts["account_id"].str.contains(r"^ACC-\d{5}$").all()
    assert accounts["crm_id"].str.contains(r"^001[0-9A-Za-z]{15}$").all()
    assert accounts["name"].n_unique() == accounts.height
    assert accounts["owner"].n_unique() == 10
    emails = accounts.select(
        pl.col("owner").str.to_lowercase().str.replace_all(" ", ".") + "@example.com"
    ).to_series()
    assert (accounts["owner_email"] == emails).all()
    assert set(accounts["region"].unique()) == {"NA", "EMEA", "APAC", "LATAM"}


def test_segments_have_their_size_and_commercial_shape(book: dict[str, pl.DataFrame]) -> None:
    accounts = book["accounts"]
    share = dict(accounts.group_by("segment").agg(pl.len() / accounts.height).iter_rows())
    assert (
        0.45 < share["smb"] < 0.65
        and 0.2 < share["mid"] < 0.4
        and 0.08 < share["enterprise"] < 0.22
    )
    smb = accounts.filter(pl.col("segment") == "smb")
    assert (smb["contract_months"] == 12).all() and set(smb["plan"].unique()) <= {
        "starter",
        "growth",
    }
    ent = accounts.filter(pl.col("segment") == "enterprise")
    assert (ent["plan"] == "enterprise").all()
    # Enterprise sits with the three senior CSMs.
    assert ent["owner"].n_unique() == 3
    # Invoice cadence follows the segment: smb monthly, enterprise annual.
    gaps = (
        book["invoices"]
        .join(accounts.select("account_id", "segment"), on="account_id")
        .sort("account_id", "issued_at")
        .with_columns(gap=pl.col("issued_at").diff().dt.total_days().over("account_id"))
        .group_by("segment")
        .agg(pl.col("gap").median())
    )
    median_gap = dict(gaps.iter_rows())
    assert 28 <= median_gap["smb"] <= 31 and 360 <= median_gap["enterprise"] <= 370


def test_ids_are_unique_and_every_account_reference_resolves(book: dict[str, pl.DataFrame]) -> None:
    known = book["accounts"]["account_id"].implode()
    for name, spec in TABLES.items():
        frame = book[name]
        if spec.key:
            assert not frame.select(spec.key).is_duplicated().any(), f"duplicate key in {name}"
        if spec.references_accounts:
            assert frame["account_id"].is_in(known).all(), f"unknown account in {name}"
    assert book["tickets"]["ticket_id"].str.contains(r"^T-\d{6}$").all()
    assert book["invoices"]["invoice_id"].str.contains(r"^INV-\d{6}$").all()
    assert book["surveys"]["response_id"].str.contains(r"^S-\d{6}$").all()
    assert book["touchpoints"]["touchpoint_id"].str.contains(r"^TP-\d{6}$").all()


def test_nothing_is_dated_after_the_end_of_history(book: dict[str, pl.DataFrame]) -> None:
    last_moment = dt.datetime.combine(END, dt.time.max)
    for name, spec in TABLES.items():
        if spec.time_column:
            latest = book[name][spec.time_column].max()
            limit = last_moment if isinstance(latest, dt.datetime) else END
            assert latest <= limit, f"{name}.{spec.time_column} = {latest}"
    assert book["tickets"]["closed_at"].max() <= last_moment
    assert book["invoices"]["paid_at"].max() <= END
    assert book["usage"]["date"].min() >= FIRST_DAY


def test_usage_is_daily_from_start_to_end_or_churn(book: dict[str, pl.DataFrame]) -> None:
    accounts = book["accounts"]
    span = (
        book["usage"]
        .group_by("account_id", "metric")
        .agg(first=pl.col("date").min(), last=pl.col("date").max(), rows=pl.len())
        .join(
            accounts.select("account_id", "start_date", "renewal_date", "status"), on="account_id"
        )
    )
    assert set(book["usage"]["metric"].unique()) == set(sample.METRICS)
    # A day without activity is a 0, not a missing row.
    assert (span["rows"] == (span["last"] - span["first"]).dt.total_days() + 1).all()
    assert (span["first"] >= span["start_date"]).all()
    assert span.select(
        (pl.col("first") == pl.max_horizontal("start_date", pl.lit(FIRST_DAY))).all()
    ).item()
    active = span.filter(pl.col("status") == "active")
    assert (active["last"] == END).all()
    churned = span.filter(pl.col("status") == "churned")
    assert (churned["last"] < churned["renewal_date"]).all()
    assert (book["usage"]["value"] == 0).any()
    assert (book["usage"]["value"] >= 0).all()


def test_feature_users_never_exceed_active_users(book: dict[str, pl.DataFrame]) -> None:
    wide = book["usage"].pivot(on="metric", index=["account_id", "date"], values="value")
    assert (wide["feature_automations"] <= wide["active_users"]).all()
    assert (wide["feature_dashboards"] <= wide["active_users"]).all()
    assert (wide["events"] >= wide["active_users"]).mean() > 0.95
    # Seats only change at a renewal: accounts without one never exceed today's seats.
    steady = wide.join(book["accounts"].select("account_id", "seats"), on="account_id").join(
        book["outcomes"].select("account_id"), on="account_id", how="anti"
    )
    assert steady.height > 0 and (steady["active_users"] <= steady["seats"]).all()


def test_weekends_and_year_end_are_quieter(book: dict[str, pl.DataFrame]) -> None:
    daily = (
        book["usage"]
        .filter(pl.col("metric") == "active_users")
        .group_by("date")
        .agg(pl.col("value").sum())
    )
    weekday = daily.with_columns(weekend=pl.col("date").dt.weekday() >= 6)
    means = dict(weekday.group_by("weekend").agg(pl.col("value").mean()).iter_rows())
    assert means[True] < 0.3 * means[False]
    holidays = daily.filter(
        (pl.col("date").dt.month() == 12)
        & (pl.col("date").dt.day().is_between(22, 31))
        & (pl.col("date").dt.weekday() <= 5)
    )["value"].mean()
    november = daily.filter((pl.col("date").dt.month() == 11) & (pl.col("date").dt.weekday() <= 5))[
        "value"
    ].mean()
    assert holidays < 0.7 * november


def test_churned_accounts_stop_at_their_churn_date(book: dict[str, pl.DataFrame]) -> None:
    accounts = book["accounts"]
    churned = accounts.filter(pl.col("status") == "churned")
    assert (churned["arr"] == 0.0).all()
    churn_outcomes = book["outcomes"].filter(pl.col("outcome") == "churned")
    assert_frame_equal(
        churned.select("account_id", "renewal_date").sort("account_id"),
        churn_outcomes.select("account_id", "renewal_date").sort("account_id"),
    )
    assert (accounts.filter(pl.col("status") == "active")["renewal_date"] > END).all()
    dates = churned.select("account_id", churn=pl.col("renewal_date"))
    for name, spec in TABLES.items():
        if name in ("accounts", "outcomes") or not spec.time_column:
            continue
        late = (
            book[name]
            .join(dates, on="account_id")
            .filter(pl.col(spec.time_column).cast(pl.Date) > pl.col("churn"))
        )
        assert late.height == 0, f"{name} has rows after churn"


def test_outcomes_have_consistent_arr(book: dict[str, pl.DataFrame]) -> None:
    out = book["outcomes"]
    assert set(out["outcome"].unique()) == {"renewed", "expanded", "downgraded", "churned"}
    by = {
        k: out.filter(pl.col("outcome") == k)
        for k in ("renewed", "expanded", "downgraded", "churned")
    }
    assert (by["churned"]["arr_after"] == 0).all()
    assert (by["expanded"]["arr_after"] > by["expanded"]["arr_before"]).all()
    assert (by["downgraded"]["arr_after"] < by["downgraded"]["arr_before"]).all()
    renewed = by["renewed"]
    assert (renewed["arr_after"] >= renewed["arr_before"]).all()
    assert (renewed["arr_after"] <= renewed["arr_before"] * 1.07).all()
    # One account's renewals chain: each starts from the ARR the previous one ended at, and
    # the last one ends at today's ARR.
    chain = (
        out.sort("account_id", "renewal_date")
        .with_columns(prev_after=pl.col("arr_after").shift().over("account_id"))
        .drop_nulls("prev_after")
    )
    assert (chain["prev_after"] == chain["arr_before"]).all()
    last = (
        out.sort("renewal_date")
        .group_by("account_id")
        .last()
        .join(book["accounts"].select("account_id", "arr"), on="account_id")
    )
    assert (last["arr_after"] == last["arr"]).all()


def test_tickets_invoices_surveys_are_internally_consistent(book: dict[str, pl.DataFrame]) -> None:
    t = book["tickets"]
    assert set(t["priority"].unique()) == {"P1", "P2", "P3", "P4"}
    assert (t["priority"] == "P1").mean() < 0.1
    assert ((t["status"] == "open") == t["closed_at"].is_null()).all()
    assert (
        t["closed_at"].drop_nulls() >= t.filter(pl.col("closed_at").is_not_null())["opened_at"]
    ).all()
    assert t["sentiment"].is_between(-1, 1).all()
    business = t.filter(pl.col("priority") != "P1")
    assert business["opened_at"].dt.hour().is_between(8, 17).all()
    assert (business["opened_at"].dt.weekday() <= 5).mean() > 0.97

    inv = book["invoices"]
    assert ((inv["due_date"] - inv["issued_at"]).dt.total_days() == 30).all()
    assert ((inv["status"] == "paid") == inv["paid_at"].is_not_null()).all()
    unpaid = inv.filter(pl.col("paid_at").is_null())
    assert set(unpaid["status"].unique()) <= {"open", "overdue"}
    assert (unpaid.filter(pl.col("status") == "open")["due_date"] >= END).all()
    paid = inv.filter(pl.col("paid_at").is_not_null())
    on_time = (paid["paid_at"] <= paid["due_date"]).mean()
    assert 0.75 < on_time < 0.98

    s = book["surveys"]
    nps, csat = s.filter(pl.col("kind") == "nps"), s.filter(pl.col("kind") == "csat")
    assert set(s["kind"].unique()) == {"nps", "csat"}
    assert nps["score"].is_between(0, 10).all() and csat["score"].is_between(1, 5).all()
    assert (s["score"] == s["score"].round()).all()

    kinds = set(book["touchpoints"]["kind"].unique())
    assert kinds == {"exec_meeting", "qbr", "call", "onboarding"}
    milestone_kinds = set(book["milestones"]["kind"].unique())
    assert {
        "kickoff",
        "go_live",
        "feature_adopted",
        "champion_left",
        "renewal_signed",
    } <= milestone_kinds


def test_segment_shapes_the_touchpoint_mix(book: dict[str, pl.DataFrame]) -> None:
    """Enterprise and mid get quarterly QBRs and exec meetings; smb is mostly calls."""
    accounts = book["accounts"].select("account_id", "segment")
    per_account = (
        accounts.join(
            book["touchpoints"]
            .group_by("account_id")
            .agg(
                qbr=(pl.col("kind") == "qbr").sum(), execs=(pl.col("kind") == "exec_meeting").sum()
            ),
            on="account_id",
            how="left",
        )
        .fill_null(0)
        .group_by("segment")
        .agg(pl.col("qbr", "execs").mean())
    )
    rows = {r["segment"]: r for r in per_account.iter_rows(named=True)}
    assert rows["enterprise"]["qbr"] > 3 * rows["smb"]["qbr"]
    assert rows["enterprise"]["execs"] > 3 * rows["smb"]["execs"]
    smb_kinds = (
        book["touchpoints"].join(accounts, on="account_id").filter(pl.col("segment") == "smb")
    )
    assert (smb_kinds["kind"] == "call").mean() > 0.6


# --- the causal story ------------------------------------------------------------------


def test_churn_rate_is_in_a_plausible_band(outcomes: pl.DataFrame) -> None:
    assert outcomes.height > 400
    assert 0.08 <= outcomes["churned"].mean() <= 0.22


def test_young_accounts_and_small_accounts_churn_more(outcomes: pl.DataFrame) -> None:
    by_age = dict(
        outcomes.group_by(pl.col("tenure_days") < 400).agg(pl.col("churned").mean()).iter_rows()
    )
    assert by_age[True] > 1.3 * by_age[False]
    by_segment = dict(outcomes.group_by("segment").agg(pl.col("churned").mean()).iter_rows())
    assert by_segment["enterprise"] < by_segment["smb"]


def test_usage_falls_before_churn(book: dict[str, pl.DataFrame], outcomes: pl.DataFrame) -> None:
    """Active users per seat in the 90 days before the renewal, relative to the account's own
    level 180-365 days before it. Both windows sit in the same contract period, so the seat
    count cancels and the ratio of mean active users *is* the per-seat ratio.

    Margin: the generator removes up to 85% of activity at full decline, and a churning
    period declines over its last 3-9 months; renewals without a story keep a ratio near
    1.05 (usage grows as features are adopted). Surprise churns (no decline) and young
    accounts still ramping in their baseline window dilute the churned median to about
    0.6-0.7 across seeds, so a 0.2 gap is a conservative floor. Without the decline story
    the two medians would be within a few hundredths of each other.
    """
    daily = book["usage"].filter(pl.col("metric") == "active_users")
    windows = (
        outcomes.join(daily, on="account_id")
        .with_columns(before=(pl.col("renewal_date") - pl.col("date")).dt.total_days())
        .group_by("account_id", "renewal_date", "churned")
        .agg(
            recent=pl.col("value").filter(pl.col("before").is_between(1, 90)).mean(),
            recent_days=pl.col("value").filter(pl.col("before").is_between(1, 90)).len(),
            baseline=pl.col("value").filter(pl.col("before").is_between(180, 365)).mean(),
            baseline_days=pl.col("value").filter(pl.col("before").is_between(180, 365)).len(),
        )
        .filter(pl.col("recent_days") >= 30, pl.col("baseline_days") >= 60)
    )
    ratio = dict(
        windows.group_by("churned")
        .agg((pl.col("recent") / pl.col("baseline")).median())
        .iter_rows()
    )
    assert windows.filter("churned").height >= 40
    assert ratio[True] <= ratio[False] - 0.2, ratio


def test_high_priority_tickets_rise_before_churn(
    book: dict[str, pl.DataFrame], outcomes: pl.DataFrame
) -> None:
    """P1/P2 tickets opened in the 180 days before the renewal, per renewal. Churned periods
    are mostly small accounts (fewer tickets), so a raw 1.5x is a conservative margin; the
    generator gives about 2.5-3x across seeds."""
    urgent = book["tickets"].filter(pl.col("priority").is_in(["P1", "P2"]))
    counts = (
        outcomes.join(urgent, on="account_id", how="left")
        .with_columns(
            before=(
                pl.col("renewal_date").cast(pl.Datetime("us")) - pl.col("opened_at")
            ).dt.total_days()
        )
        .group_by("account_id", "renewal_date", "churned")
        .agg(urgent=pl.col("before").is_between(0, 179).sum())
    )
    mean = dict(counts.group_by("churned").agg(pl.col("urgent").mean()).iter_rows())
    assert mean[True] > 1.5 * mean[False], mean


def test_detractors_and_lapsed_exec_meetings_precede_churn(
    book: dict[str, pl.DataFrame], outcomes: pl.DataFrame
) -> None:
    nps = book["surveys"].filter(pl.col("kind") == "nps")
    scores = (
        outcomes.join(nps, on="account_id")
        .filter(
            (pl.col("renewal_date") - pl.col("responded_at")).dt.total_days().is_between(0, 180)
        )
        .group_by("churned")
        .agg(pl.col("score").mean())
    )
    mean = dict(scores.iter_rows())
    assert mean[True] < mean[False] - 1.0, mean
    champion = book["milestones"].filter(pl.col("kind") == "champion_left")
    lost = (
        outcomes.join(champion, on="account_id", how="left")
        .with_columns(
            hit=(pl.col("renewal_date") - pl.col("at")).dt.total_days().is_between(0, 300)
        )
        .group_by("account_id", "renewal_date", "churned")
        .agg(pl.col("hit").any())
    )
    share = dict(lost.group_by("churned").agg(pl.col("hit").mean()).iter_rows())
    assert share[True] > 2 * share[False], share


def test_some_of_todays_customers_are_declining_now(book: dict[str, pl.DataFrame]) -> None:
    """The app needs accounts in trouble today: last 60 days at least 20% below the level
    150-330 days ago. Only accounts with the same seats over that whole year count (past
    onboarding, no expansion or downgrade since), so a seat change or a ramp-up cannot fake
    a decline.
    Without the decline story this share is about 0; the generator puts ~10-20% of active
    accounts in a decline story, about half of them far enough along to show this drop."""
    year_ago = END - dt.timedelta(days=365)
    reseated = book["outcomes"].filter(
        pl.col("renewal_date") > year_ago, pl.col("outcome") != "renewed"
    )
    steady = (
        book["accounts"]
        .filter(pl.col("status") == "active", pl.col("start_date") < year_ago - dt.timedelta(90))
        .join(reseated, on="account_id", how="anti")
        .select("account_id")
    )
    daily = book["usage"].filter(pl.col("metric") == "active_users").join(steady, on="account_id")
    trend = (
        daily.with_columns(ago=(pl.lit(END) - pl.col("date")).dt.total_days())
        .group_by("account_id")
        .agg(
            recent=pl.col("value").filter(pl.col("ago") < 60).mean(),
            baseline=pl.col("value").filter(pl.col("ago").is_between(150, 330)).mean(),
        )
    )
    assert trend.height > 100
    share = (trend["recent"] < 0.8 * trend["baseline"]).mean()
    assert 0.04 <= share <= 0.3, share


# --- writing and caching ---------------------------------------------------------------


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_write_in_chunks_matches_generate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sample, "_USAGE_CHUNK", 25)
    out = sample.write(tmp_path / "book", n_accounts=60, seed=3)
    expected = sample.generate(60, seed=3)
    for name in TABLE_NAMES:
        assert_frame_equal(pl.read_parquet(out / f"{name}.parquet"), expected[name])
    assert pq.ParquetFile(out / "usage.parquet").num_row_groups >= 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == {
        "accounts": 60,
        "seed": 3,
        "end_date": "2026-11-30",
        "version": sample.SAMPLE_VERSION,
    }
    assert [p.name for p in tmp_path.iterdir()] == ["book"]


def test_ensure_sample_generates_once_and_regenerates_on_change(tmp_path: Path) -> None:
    folder = tmp_path / "sample"
    assert sample.ensure_sample(folder, n_accounts=60, seed=7) == folder
    names = {p.name for p in folder.iterdir()}
    assert names == {f"{t}.parquet" for t in TABLE_NAMES} | {"manifest.json"}
    before = _mtimes(folder)

    sample.ensure_sample(folder, n_accounts=60, seed=7)
    assert _mtimes(folder) == before

    sample.ensure_sample(folder, n_accounts=80, seed=7)
    assert json.loads((folder / "manifest.json").read_text())["accounts"] == 80
    assert pl.read_parquet(folder / "accounts.parquet").height == 80

    after_change = _mtimes(folder)
    sample.ensure_sample(folder, n_accounts=80, seed=7, force=True)
    assert _mtimes(folder) != after_change
    assert [p.name for p in tmp_path.iterdir()] == ["sample"]


def test_ensure_sample_repairs_a_damaged_folder(tmp_path: Path) -> None:
    folder = tmp_path / "sample"
    sample.ensure_sample(folder, n_accounts=60)
    (folder / "usage.parquet").unlink()
    sample.ensure_sample(folder, n_accounts=60)
    assert (folder / "usage.parquet").is_file()


def test_ensure_sample_is_safe_when_called_concurrently(tmp_path: Path) -> None:
    folder = tmp_path / "sample"
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: sample.ensure_sample(folder, n_accounts=60), range(3)))
    assert results == [folder] * 3
    assert [p.name for p in tmp_path.iterdir()] == ["sample"]
    assert pl.read_parquet(folder / "accounts.parquet").height == 60


# --- the source adapter ----------------------------------------------------------------


def test_factory_is_registered_and_reads_its_settings(tmp_path: Path) -> None:
    source = registry.build(
        "demo",
        {"kind": "sample", "accounts": 60, "seed": 3, "path": "book"},
        base_dir=str(tmp_path),
    )
    assert isinstance(source, sample.SampleSource)
    assert source.name == "demo"
    assert source.path == tmp_path / "book"
    assert source.describe() == "Sample book: 60 accounts (seed 3), generated"
    default = registry.build("s", {"kind": "sample"}, base_dir=str(tmp_path))
    assert default.describe() == "Sample book: 600 accounts (seed 7), generated"
    assert default.path == tmp_path / "data" / "sample"


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"acounts": 60}, "'acounts'"),
        ({"accounts": "many"}, "accounts"),
        ({"accounts": 0}, "accounts"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_factory_rejects_bad_settings(tmp_path: Path, settings: dict, fragment: str) -> None:
    with pytest.raises(SourceConfigError, match=fragment) as err:
        sample.make_sample_source("demo", settings, base_dir=str(tmp_path))
    if "acounts" in settings:
        assert "accounts, seed, path" in str(err.value)


def test_load_returns_the_validated_book(tmp_path: Path) -> None:
    source = sample.make_sample_source(
        "demo", {"accounts": 60, "path": "book"}, base_dir=str(tmp_path)
    )
    result = source.load()
    assert result.source == "demo"
    assert result.ok, [str(p) for p in result.errors]
    assert set(result.tables) >= set(TABLE_NAMES)
    assert result.tables["accounts"].height == 60
    assert all(frame.height == 0 for frame in result.rejected.values())
