"""The account page: deep link, header, score history with bands, drivers, one timeline."""

from __future__ import annotations


import polars as pl

from health.timeline import SOURCE_LABELS, account_timeline
from tests.app_pages.conftest import AS_OF, figures, open_page, sample_tables, texts, titles


def _account(account_id: str):
    at = open_page("app_pages/account.py", {"account": account_id})
    assert not at.exception
    return at


def test_deep_link_opens_the_right_account():
    at = _account("ACC-00004")
    accounts = sample_tables()["accounts"]
    name = accounts.filter(pl.col("account_id") == "ACC-00004")["name"].item()
    assert titles(at) == [name]
    labels = [m.label for m in at.metric]
    assert labels[:5] == ["Health score", "Tier", "ARR", "Renewal", "Data coverage"]
    assert "ACC-00004" in texts(at)


def test_unknown_account():
    at = _account("ACC-NOPE")
    assert any("No account with id **ACC-NOPE**" in e.value for e in at.error)
    links = at.get("page_link")
    assert links and "Back to the at-risk list" in links[0].proto.label


def test_no_account_in_the_url_offers_a_picker():
    at = open_page("app_pages/account.py")
    assert not at.exception
    assert at.selectbox[0].label == "Open an account"


def _old_account(segment: str) -> str:
    """An active account of `segment`, customer for more than the 52 weeks shown."""
    acc = sample_tables()["accounts"]
    old = acc.filter(
        (pl.col("status") == "active") & (pl.col("segment") == segment) & (pl.col("start_date") < AS_OF.replace(year=2025))
    )
    return old["account_id"][0]


def test_score_history_with_tier_bands():
    at = _account(_old_account("smb"))
    spec = figures(at)[0]
    trace = spec["data"][0]
    assert len(trace["x"]) == 53  # 52 weekly changes
    bands = spec["layout"]["shapes"]
    assert len(bands) == 3  # at risk, watch, healthy
    assert sorted(b["y1"] for b in bands) == [62, 75, 100]  # smb: the model's default tiers
    ent = figures(_account(_old_account("enterprise")))[0]
    assert sorted(b["y1"] for b in ent["layout"]["shapes"]) == [65, 78, 100]  # enterprise's own tiers


def test_what_drives_the_score():
    at = _account("ACC-00004")
    body = texts(at)
    assert "Biggest drags:" in body and "Since last week:" in body
    table = pl.from_pandas(at.dataframe[0].value)
    assert {"Signal", "Value", "Sub-score", "Weight", "Points earned", "Points lost"} <= set(table.columns)
    assert abs(table["Points earned"].sum() - float(at.metric[0].value)) < 0.6


def _rich_account() -> str:
    """An account with records from every source in the last 52 weeks (incl. tier changes)."""
    tables = sample_tables()
    since = AS_OF.replace(year=AS_OF.year - 1)
    counts = None
    for name in ("tickets", "invoices", "surveys", "touchpoints", "milestones"):
        tcol = {"tickets": "opened_at", "invoices": "issued_at", "surveys": "responded_at"}.get(name, "at")
        ids = tables[name].filter(pl.col(tcol).cast(pl.Date) >= since).select("account_id").unique()
        counts = ids if counts is None else counts.join(ids, on="account_id")
    return sorted(counts["account_id"].to_list())[0]


def test_timeline_holds_every_source_and_the_page_renders_it():
    account_id = _rich_account()
    at = _account(account_id)
    # the frame the page draws, built by health.timeline from the same tables
    from ui.data import account_view, load_book

    book = load_book()
    view = account_view(book, account_id)
    tl = view.timeline
    assert set(tl["source"]) >= {"tickets", "invoices", "surveys", "touchpoints", "milestones"}
    direct = account_timeline(book.tables, account_id, history=view.history, since=view.since, until=book.as_of)
    assert direct.equals(tl)
    # the lane chart has one lane per source present, and the list shows every row
    lanes = next(f for f in figures(at) if any(a.get("text", "").startswith("Events") for a in f["layout"].get("annotations", [])))
    lane_names = {y for t in lanes["data"] if t.get("yaxis", "y") == "y" for y in t.get("y", [])}
    assert {SOURCE_LABELS[s] for s in set(tl["source"])} == lane_names
    usage = [t for t in lanes["data"] if t.get("yaxis") == "y2"]
    assert usage, "the usage lines share the time axis under the lanes"
    shown = pl.from_pandas(at.dataframe[1].value)
    assert shown.height == tl.height
    assert set(shown["Source"]) == {SOURCE_LABELS[s] for s in set(tl["source"])}


def test_timeline_source_filter():
    account_id = _rich_account()
    at = _account(account_id)
    at.get("button_group")[0].set_value(["surveys"]).run()
    shown = pl.from_pandas(at.dataframe[1].value)
    assert set(shown["Source"]) == {"Surveys"}


def test_account_without_tickets_or_surveys_just_lacks_those_lanes():
    tables = sample_tables()
    since = AS_OF.replace(year=AS_OF.year - 1)
    active = tables["accounts"].filter(pl.col("status") == "active").select("account_id")
    busy = pl.concat(
        [
            tables["tickets"].filter(pl.col("opened_at").cast(pl.Date) >= since).select("account_id"),
            tables["surveys"].filter(pl.col("responded_at") >= since).select("account_id"),
        ]
    ).unique()
    quiet = active.join(busy, on="account_id", how="anti")
    assert quiet.height, "the sample has accounts without tickets or surveys in the last year"
    at = _account(quiet["account_id"][0])
    assert not at.error
    shown = pl.from_pandas(at.dataframe[1].value)
    assert not ({"Support tickets", "Surveys"} & set(shown["Source"]))


def test_churned_account_shows_its_story_without_a_score():
    churned = sample_tables()["accounts"].filter(pl.col("status") == "churned")["account_id"][0]
    at = _account(churned)
    assert any("no score as of" in w.value for w in at.warning)


def test_freshness_expander():
    at = _account("ACC-00004")
    assert any("Data freshness for this account" in e.label for e in at.expander)
    fr = pl.from_pandas(at.dataframe[-1].value)
    assert {"Source", "Latest for this account", "Feed"} <= set(fr.columns)
    assert "Product usage" in set(fr["Source"])


def test_override_rule_is_shown():
    """An account whose tier was forced by a rule shows the rule and its reason."""
    from ui.data import load_book

    book = load_book()
    ruled = book.summary.filter(pl.col("rule").is_not_null())
    if ruled.is_empty():
        return
    row = ruled.row(0, named=True)
    at = _account(row["account_id"])
    assert any(f"Override: {row['rule']}" in e.value for e in at.error)
