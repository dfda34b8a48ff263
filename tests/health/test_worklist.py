"""health.worklist: ordering, filters, headline and URL round trip."""

from __future__ import annotations

import datetime as dt

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from health.worklist import ME, Filters, apply_filters, headline, owners_for, to_csv, worklist

D = dt.date
AS_OF = D(2025, 3, 31)


def _summary() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "account_id": ["ACC-1", "ACC-2", "ACC-3", "ACC-4"],
            "name": ["Acme", "Bolt", "Crane", "Delta"],
            "segment": ["smb", "smb", "enterprise", "mid"],
            "owner": ["Ann", "Bob", "Ann", "Cy"],
            "owner_email": ["ann@x.com", "bob@x.com", "ann@x.com", "cy@x.com"],
            "arr": [10.0, 20.0, 300.0, 40.0],
            "renewal_date": [D(2025, 4, 10), D(2025, 8, 1), D(2025, 5, 1), D(2026, 3, 1)],
            "score": [30.0, 80.0, 50.0, None],
            "tier": ["at_risk", "healthy", "at_risk", "insufficient_data"],
            "change_4w": [-10.0, 1.0, -2.0, None],
            "spark": [[40.0, 30.0], [80.0, 80.0], [52.0, 50.0], []],
            "coverage": [1.0, 1.0, 0.9, 0.2],
            "drivers": ["a; b", "", "c", ""],
            "falling": [True, False, False, False],
            "falling_reason": ["Score fell", "", "", ""],
            "moved_into_at_risk": [True, False, False, False],
            "rule": [None, None, None, None],
        }
    )


def test_worklist_order_and_renewal_days():
    rows = worklist(_summary(), AS_OF)
    assert rows["account_id"].to_list() == ["ACC-1", "ACC-3", "ACC-2", "ACC-4"]
    assert rows["renewal_in_days"].to_list()[0] == 10


def test_filters():
    rows = worklist(_summary(), AS_OF)
    ids = lambda f, me=(): apply_filters(rows, f, me)["account_id"].to_list()  # noqa: E731
    assert ids(Filters(owner="Ann")) == ["ACC-1", "ACC-3"]
    assert ids(Filters(owner=ME), me=["Bob"]) == ["ACC-2"]
    assert ids(Filters(owner=ME)) == []
    assert ids(Filters(segment="enterprise")) == ["ACC-3"]
    assert ids(Filters(tiers=("at_risk",))) == ["ACC-1", "ACC-3"]
    assert ids(Filters(renewal_within=30)) == ["ACC-1"]
    assert ids(Filters(falling=True)) == ["ACC-1"]
    assert ids(Filters(search="bol")) == ["ACC-2"]
    assert ids(Filters(search="acc-4")) == ["ACC-4"]
    assert ids(Filters(owner="Ann", tiers=("healthy",))) == []


def test_owners_for_email_or_name():
    acc = _summary()
    assert owners_for(acc, "ANN@x.com") == ["Ann"]
    assert owners_for(acc, "bob") == ["Bob"]
    assert owners_for(acc, "nobody@x.com") == []
    assert owners_for(acc, None) == []


def test_headline():
    h = headline(worklist(_summary(), AS_OF))
    assert h["at_risk"] == {"accounts": 2, "arr": 310.0}
    assert h["moved_into_at_risk"]["accounts"] == 1
    assert h["all"]["accounts"] == 4


def test_csv_flattens_the_sparkline():
    text = to_csv(worklist(_summary(), AS_OF))
    header = text.splitlines()[0]
    assert "score_last_12_weeks" in header
    assert "40.0;30.0" in text


@given(
    owner=st.one_of(st.none(), st.sampled_from(["me", "Ann Lee"])),
    segment=st.one_of(st.none(), st.sampled_from(["smb", "enterprise"])),
    tiers=st.lists(st.sampled_from(["at_risk", "watch", "healthy"]), unique=True).map(tuple),
    renewal=st.one_of(st.none(), st.sampled_from([30, 90, 180])),
    falling=st.booleans(),
    search=st.text(alphabet="abc -", max_size=5).map(str.strip),
)
def test_query_params_round_trip(owner, segment, tiers, renewal, falling, search):
    f = Filters(owner, segment, tiers, renewal, falling, search)
    assert Filters.from_params(f.to_params()) == f


def test_bad_params_are_dropped():
    f = Filters.from_params({"tier": "at_risk,bogus", "renewal": "soon", "falling": "maybe"})
    assert f == Filters(tiers=("at_risk",))
    assert Filters.from_params({"tier": ["watch", "at_risk", "watch"]}).tiers == ("watch", "at_risk")


def test_params_are_the_words_users_see():
    f = Filters(owner=ME, tiers=("at_risk", "watch"), renewal_within=90, falling=True)
    assert f.to_params() == {"owner": "My accounts", "tier": ["At risk", "Watch"], "renewal": "90 days", "falling": "true"}
    assert Filters.from_params({"owner": "Everyone", "segment": "All segments", "renewal": "Any time"}) == Filters()
    assert Filters.from_params({"owner": "me", "renewal": "30"}) == Filters(owner=ME, renewal_within=30)
