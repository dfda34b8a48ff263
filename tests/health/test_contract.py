"""The data contract: every problem class is reported with its table, column and lines,
the good rows are kept, and the bad ones come back in `rejected` with their reason."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from health.contract import TableFormat, did_you_mean, validate
from health.loading import LoadResult, Problem
from health.schema import TABLES

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "contract"
D = dt.date


def strings(rows: list[dict[str, str | None]]) -> pl.DataFrame:
    """An all-strings frame, as a CSV reader gives it."""
    cols = list(rows[0])
    return pl.DataFrame({c: [r.get(c) for r in rows] for c in cols}, schema={c: pl.String for c in cols})


def accounts(*rows: tuple[str | None, ...], extra: dict[str, list] | None = None) -> pl.DataFrame:
    cols = ("account_id", "name", "segment", "owner", "arr", "renewal_date")
    df = strings([dict(zip(cols, r)) for r in rows])
    return df.with_columns(**{k: pl.Series(v) for k, v in (extra or {}).items()})


GOOD = ("A1", "Acme", "enterprise", "Ann", "1000", "2026-03-01")


def only(result: LoadResult, kind: str, table: str | None = None) -> Problem:
    found = [p for p in result.problems if p.kind == kind and (table is None or p.table == table)]
    assert len(found) == 1, f"expected one {kind} problem, got {result.problems}"
    return found[0]


def read_fixture(folder: str) -> dict[str, pl.DataFrame]:
    out = {}
    for path in sorted((FIXTURES / folder).glob("*.csv")):
        df = pl.read_csv(path, infer_schema=False)
        out[path.stem] = df.with_columns(pl.int_range(2, pl.len() + 2, dtype=pl.Int64).alias("_line"))
    return out


# ------------------------------------------------------------------ missing columns


def test_missing_required_column_says_what_was_found_and_did_you_mean():
    raw = {
        "accounts": accounts(GOOD).rename({"account_id": "acount_id"}),
        "usage": strings([{"account_id": "A1", "date": "2026-01-01", "metric": "logins", "value": "3"}]),
    }
    result = validate(raw, "test")

    p = only(result, "missing_column")
    assert (p.table, p.column, p.severity) == ("accounts", "account_id", "error")
    assert "acount_id" in p.message and "Did you mean 'acount_id'" in p.message
    assert "columns found: acount_id, name, segment, owner, arr, renewal_date" in p.message
    assert "accounts" not in result.tables
    # without accounts, the other tables cannot be checked for account references: said so
    unchecked = only(result, "references_unchecked")
    assert "usage" in unchecked.message
    assert result.tables["usage"].height == 1
    assert not result.ok


def test_missing_optional_column_is_fine_and_not_added():
    result = validate({"accounts": accounts(GOOD)}, "test")
    assert result.problems == []
    assert "region" not in result.tables["accounts"].columns


def test_missing_accounts_table_is_an_error_other_tables_still_load():
    usage = strings([{"account_id": "A1", "date": "2026-01-01", "metric": "logins", "value": "3"}])
    result = validate({"usage": usage}, "test")
    p = only(result, "missing_table")
    assert p.table == "accounts" and p.severity == "error"
    assert result.tables["usage"].height == 1


def test_unknown_table_name_is_a_warning_with_did_you_mean():
    result = validate({"accounts": accounts(GOOD), "tickts": accounts(GOOD)}, "test")
    p = only(result, "unknown_table")
    assert p.severity == "warning" and "Did you mean 'tickets'" in p.message
    assert result.ok


# ------------------------------------------------------------------------- numbers


def test_uncastable_number_rejects_the_row_and_keeps_the_rest():
    raw = {"accounts": accounts(GOOD, ("A2", "Beta", "smb", "Bob", "abc", "2026-04-01"),
                                ("A3", "Gamma", "mid", "Cy", "$1,200.50", "2026-05-01"))}
    result = validate(raw, "test", {"accounts": TableFormat(label="customers.csv")})

    p = only(result, "bad_type")
    assert (p.table, p.column, p.count) == ("accounts", "arr", 1)
    assert "customers.csv" in p.message and "'arr'" in p.message and "line 2: 'abc'" in p.message
    assert p.examples == [{"_line": 2, "account_id": "A2", "arr": "abc"}]
    assert_frame_equal(
        result.tables["accounts"],
        pl.DataFrame(
            {"account_id": ["A1", "A3"], "name": ["Acme", "Gamma"], "segment": ["enterprise", "mid"],
             "owner": ["Ann", "Cy"], "arr": [1000.0, 1200.5], "renewal_date": [D(2026, 3, 1), D(2026, 5, 1)]}
        ),
    )
    rej = result.rejected["accounts"]
    assert rej["arr"].to_list() == ["abc"]  # as read
    assert rej["_line"].to_list() == [2]
    assert rej["_reason"].to_list() == ["arr: 'abc' is not a number"]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1,234.50", "980", "12.5"], [1234.5, 980.0, 12.5]),  # US
        (["1.234,50", "980", "12,5"], [1234.5, 980.0, 12.5]),  # EU, decided by the values
        (["1 234,50", "1\u00a0000", "7"], [1234.5, 1000.0, 7.0]),  # space-grouped thousands
        (["$1,200", "€ 3.5", "-0"], [1200.0, 3.5, 0.0]),  # currency symbols
    ],
)
def test_number_conventions_are_decided_per_column(values, expected):
    rows = [(f"A{i}", "n", "smb", "o", v, "2026-01-01") for i, v in enumerate(values)]
    result = validate({"accounts": accounts(*rows)}, "test")
    assert result.problems == []
    assert result.tables["accounts"]["arr"].to_list() == expected


def test_ambiguous_thousands_separator_is_reported_not_guessed():
    rows = [("A1", "n", "smb", "o", "1,234", "2026-01-01"), ("A2", "n", "smb", "o", "1.500", "2026-01-01"),
            ("A3", "n", "smb", "o", "700", "2026-01-01")]
    result = validate({"accounts": accounts(*rows)}, "test")
    p = only(result, "ambiguous_format")
    assert p.column == "arr" and p.count == 2 and "decimal:" in p.message
    assert result.tables["accounts"]["account_id"].to_list() == ["A3"]
    assert result.rejected["accounts"]["_line"].to_list() == [1, 2]

    fixed = validate({"accounts": accounts(*rows)}, "test", {"accounts": TableFormat(decimal=",")})
    assert fixed.problems == []
    assert fixed.tables["accounts"]["arr"].to_list() == [1.234, 1500.0, 700.0]


def test_percent_and_fractional_seats_are_rejected():
    raw = accounts(GOOD, ("A2", "n", "smb", "o", "12%", "2026-01-01"),
                   extra={"seats": ["10", "2.5"]})
    result = validate({"accounts": raw}, "test")
    reasons = result.rejected["accounts"]["_reason"].to_list()
    assert reasons == ["arr: '12%' is not a number; seats: '2.5' is not a whole number"]
    assert result.tables["accounts"]["seats"].to_list() == [10]
    assert result.tables["accounts"].schema["seats"] == pl.Int64


# --------------------------------------------------------------------------- dates


def test_unparseable_date_is_rejected_with_its_line():
    raw = {"accounts": accounts(GOOD, ("A2", "B", "smb", "o", "5", "2026-13-01"),
                                ("A3", "C", "smb", "o", "5", "soon"))}
    result = validate(raw, "test")
    p = only(result, "bad_date")
    assert (p.column, p.count) == ("renewal_date", 2)
    assert "line 2: '2026-13-01'" in p.message and "line 3: 'soon'" in p.message
    assert result.tables["accounts"]["account_id"].to_list() == ["A1"]
    assert result.rejected["accounts"]["_reason"].to_list() == [
        "renewal_date: '2026-13-01' is not a valid date",
        "renewal_date: 'soon' is not a valid date",
    ]


def test_iso_dates_and_datetimes_are_accepted():
    tickets = strings([
        {"ticket_id": f"T{i}", "account_id": "A1", "opened_at": v, "priority": "P1"}
        for i, v in enumerate(["2025-03-04", "2025-03-04 10:22:00", "2025-03-04T10:22:00Z",
                               "2025-03-04T12:22:00+02:00", "2025-03-04T10:22:00.250000"])
    ])
    result = validate({"accounts": accounts(GOOD), "tickets": tickets}, "test")
    assert result.problems == []
    t = dt.datetime(2025, 3, 4, 10, 22)
    assert result.tables["tickets"]["opened_at"].to_list() == [
        dt.datetime(2025, 3, 4), t, t, t, t + dt.timedelta(milliseconds=250)
    ]
    assert result.tables["tickets"].schema["opened_at"] == pl.Datetime("us")


def test_day_first_dates_are_used_when_only_that_reading_fits():
    rows = [("A1", "n", "smb", "o", "1", "25/12/2026"), ("A2", "n", "smb", "o", "1", "03/04/2027")]
    result = validate({"accounts": accounts(*rows)}, "test")
    assert result.problems == []
    assert result.tables["accounts"]["renewal_date"].to_list() == [D(2026, 12, 25), D(2027, 4, 3)]


def test_ambiguous_date_format_is_an_error_naming_the_setting():
    rows = [("A1", "n", "smb", "o", "1", "03/04/2027"), ("A2", "n", "smb", "o", "1", "05/06/2027"),
            ("A3", "n", "smb", "o", "1", "07/07/2027")]
    result = validate({"accounts": accounts(*rows)}, "test")
    p = only(result, "ambiguous_format")
    assert (p.table, p.column, p.count, p.severity) == ("accounts", "renewal_date", 2, "error")
    assert 'date_formats: {renewal_date: "%d/%m/%Y"}' in p.message
    assert "line 1: '03/04/2027'" in p.message
    # 07/07 reads the same either way: kept; the others are not guessed
    assert result.tables["accounts"]["account_id"].to_list() == ["A3"]

    fixed = validate({"accounts": accounts(*rows)}, "test",
                     {"accounts": TableFormat(date_formats={"renewal_date": "%m/%d/%Y"})})
    assert fixed.problems == []
    assert fixed.tables["accounts"]["renewal_date"].to_list() == [D(2027, 3, 4), D(2027, 5, 6), D(2027, 7, 7)]


def test_two_digit_year_under_a_four_digit_format_is_rejected():
    raw = accounts(("A1", "n", "smb", "o", "1", "03/04/27"))
    result = validate({"accounts": raw}, "test", {"accounts": TableFormat(date_formats={"renewal_date": "%d/%m/%Y"})})
    assert only(result, "bad_date").count == 1


# ----------------------------------------------------------- ids, keys, references


def test_null_id_is_rejected():
    raw = accounts(GOOD, (None, "Ghost", "smb", "o", "1", "2026-01-01"), ("  ", "Blank", "smb", "o", "1", "2026-01-01"),
                   ("N/A", "Token", "smb", "o", "1", "2026-01-01"))
    result = validate({"accounts": raw}, "test")
    p = only(result, "null_id")
    assert (p.column, p.count) == ("account_id", 3)
    assert "line 2: (empty)" in p.message and "line 4: 'N/A'" in p.message
    assert [e["_line"] for e in p.examples] == [2, 3, 4]
    assert result.tables["accounts"]["account_id"].to_list() == ["A1"]
    assert result.rejected["accounts"]["_reason"].to_list()[0] == "account_id: missing"


def test_null_in_required_value_column_is_rejected_too():
    raw = accounts(GOOD, ("A2", "Beta", "smb", "", "1", "2026-01-01"))
    result = validate({"accounts": raw}, "test")
    p = only(result, "null_value")
    assert (p.column, p.count) == ("owner", 1) and "line 2" in p.message


def test_duplicate_id_keeps_the_first_and_names_both_lines():
    raw = accounts(GOOD, ("A2", "Beta", "smb", "o", "5", "2026-01-01"), ("A1", "Acme 2", "smb", "o", "7", "2026-01-01"))
    result = validate({"accounts": raw}, "test")
    p = only(result, "duplicate_id")
    assert (p.column, p.count) == ("account_id", 1)
    assert "account_id 'A1' on line 3 (first on line 1)" in p.message
    assert result.tables["accounts"]["name"].to_list() == ["Acme", "Beta"]
    assert result.rejected["accounts"]["_reason"].to_list() == ["duplicate account_id: 'A1'"]


def test_duplicate_composite_key_in_typed_usage():
    usage = pl.DataFrame({
        "account_id": ["A1", "A1", "A1"], "date": [D(2026, 1, 1)] * 3,
        "metric": ["logins", "logins", "seats"], "value": [1.0, 2.0, 3.0],
    })
    result = validate({"accounts": accounts(GOOD), "usage": usage}, "test")
    p = only(result, "duplicate_id")
    assert p.table == "usage" and p.count == 1 and p.examples[0]["_line"] == 2
    assert result.tables["usage"]["value"].to_list() == [1.0, 3.0]


def test_unknown_account_is_rejected_with_the_ids():
    tickets = strings([
        {"ticket_id": "T1", "account_id": "A1", "opened_at": "2026-01-01", "priority": "P1"},
        {"ticket_id": "T2", "account_id": "A404", "opened_at": "2026-01-02", "priority": "P1"},
        {"ticket_id": "T3", "account_id": "a1", "opened_at": "2026-01-03", "priority": "P1"},
    ])
    result = validate({"accounts": accounts(GOOD), "tickets": tickets}, "test")
    p = only(result, "unknown_account")
    assert (p.table, p.column, p.count) == ("tickets", "account_id", 2)
    assert "'A404'" in p.message and "'a1'" in p.message and "lines 2, 3" in p.message
    assert result.tables["tickets"]["ticket_id"].to_list() == ["T1"]
    assert result.rejected["tickets"]["_reason"].to_list() == [
        "account_id: 'A404' is not in accounts", "account_id: 'a1' is not in accounts"
    ]


def test_rows_of_a_rejected_account_are_rejected_with_a_pointer_to_it():
    raw = {
        "accounts": accounts(GOOD, ("A2", "Beta", "smb", "o", "lots", "2026-01-01")),
        "usage": strings([{"account_id": "A2", "date": "2026-01-01", "metric": "m", "value": "1"}]),
    }
    result = validate(raw, "test")
    p = only(result, "rejected_account")
    assert p.table == "usage" and "'A2'" in p.message


# ---------------------------------------------------------------- allowed values


def test_bad_outcome_value_is_rejected_case_is_normalised():
    outcomes = strings([
        {"account_id": "A1", "renewal_date": "2025-01-01", "outcome": " Churned "},
        {"account_id": "A1", "renewal_date": "2024-01-01", "outcome": "renewd"},
        {"account_id": "A1", "renewal_date": "2023-01-01", "outcome": "lost"},
    ])
    result = validate({"accounts": accounts(GOOD), "outcomes": outcomes}, "test")
    p = only(result, "bad_value")
    assert (p.table, p.column, p.count) == ("outcomes", "outcome", 2)
    assert "'renewd' -> 'renewed'?" in p.message and "line 2" in p.message and "line 3" in p.message
    assert result.tables["outcomes"]["outcome"].to_list() == ["churned"]


# ------------------------------------------------------------- other value checks


def test_light_value_checks():
    tickets = strings([
        {"ticket_id": "T1", "account_id": "A1", "opened_at": "2026-01-05", "priority": "P1",
         "closed_at": "2026-01-01", "sentiment": "0.5", "escalated": "Yes"},
        {"ticket_id": "T2", "account_id": "A1", "opened_at": "2026-01-05", "priority": "P1",
         "closed_at": None, "sentiment": "-1.5", "escalated": "n"},
        {"ticket_id": "T3", "account_id": "A1", "opened_at": "2026-01-05", "priority": "P1",
         "closed_at": "NULL", "sentiment": "", "escalated": "maybe"},
    ])
    raw = {"accounts": accounts(GOOD, ("A2", "B", "smb", "o", "-3", "2026-01-01")), "tickets": tickets}
    result = validate(raw, "test")
    kinds = sorted((p.table, p.column, p.kind, p.severity) for p in result.problems)
    assert kinds == [
        ("accounts", "arr", "bad_value", "error"),
        ("tickets", "closed_at", "bad_order", "warning"),
        ("tickets", "escalated", "bad_type", "error"),
        ("tickets", "sentiment", "bad_value", "error"),
    ]
    t = result.tables["tickets"]
    assert t["ticket_id"].to_list() == ["T1"]  # the warning keeps the row
    assert t["escalated"].to_list() == [True]


def test_typed_input_passes_through_unchanged():
    acc = pl.DataFrame({
        "account_id": ["A1", "A2"], "name": ["a", "b"], "segment": ["smb", "mid"], "owner": ["x", "y"],
        "arr": [1.0, 2.0], "renewal_date": [D(2026, 1, 1), D(2026, 2, 1)], "seats": [3, 4], "custom": [True, False],
    })
    tickets = pl.DataFrame({
        "ticket_id": ["T1"], "account_id": ["A2"], "opened_at": [dt.datetime(2026, 1, 1, 9)],
        "priority": ["P1"], "closed_at": [None], "escalated": [False],
    }, schema_overrides={"closed_at": pl.Datetime("us")})
    result = validate({"accounts": acc, "tickets": tickets}, "typed")
    assert result.problems == []
    assert_frame_equal(result.tables["accounts"], acc)
    assert_frame_equal(result.tables["tickets"], tickets)
    assert result.rejected == {}


def test_typed_columns_of_another_type_are_cast():
    acc = pl.DataFrame({
        "account_id": [1, 2], "name": ["a", "b"], "segment": ["smb", "mid"], "owner": ["x", "y"],
        "arr": [1, 2], "renewal_date": [dt.datetime(2026, 1, 1, 12), dt.datetime(2026, 2, 1)],
        "seats": [3.0, 4.5],
    })
    result = validate({"accounts": acc}, "typed")
    out = result.tables["accounts"]
    assert out.schema["account_id"] == pl.String and out.schema["arr"] == pl.Float64
    assert out["renewal_date"].to_list() == [D(2026, 1, 1)]
    assert only(result, "bad_type").column == "seats"


def test_whitespace_null_tokens_and_extras():
    raw = accounts((" A1 ", " Acme ", "smb", "Ann", " 1000 ", " 2026-01-01 "),
                   extra={"region": ["N/A"], "Their Col": ["  keep me  "]})
    result = validate({"accounts": raw}, "test")
    out = result.tables["accounts"]
    assert out.row(0, named=True) == {
        "account_id": "A1", "name": "Acme", "segment": "smb", "owner": "Ann", "arr": 1000.0,
        "renewal_date": D(2026, 1, 1), "region": None, "Their Col": "  keep me  ",
    }
    assert "_line" not in out.columns


# ------------------------------------------------------------- everything at once


def test_many_problems_are_all_reported_in_one_pass():
    result = validate(read_fixture("many_problems"), "fixture",
                      {t: TableFormat(label=f"{t}.csv") for t in ("accounts", "tickets", "outcomes")})
    got = sorted((p.table, p.column or "", p.kind, p.count) for p in result.problems)
    assert got == [
        ("accounts", "account_id", "duplicate_id", 1),
        ("accounts", "account_id", "null_id", 1),
        ("accounts", "arr", "bad_type", 1),
        ("accounts", "arr", "bad_value", 1),
        ("accounts", "renewal_date", "bad_date", 2),
        ("outcomes", "outcome", "bad_value", 2),
        ("tickets", "account_id", "rejected_account", 1),
        ("tickets", "account_id", "unknown_account", 1),
        ("tickets", "closed_at", "bad_order", 1),
        ("tickets", "sentiment", "bad_value", 1),
        ("tickets", "ticket_id", "duplicate_id", 1),
    ]
    for p in result.problems:  # every message names the file, the column and the lines
        assert ".csv" in p.message and "line" in p.message, p.message
        if p.column:
            assert p.column in p.message
        assert all("_line" in e for e in p.examples)

    acc_rej = result.rejected["accounts"]
    assert acc_rej["_line"].to_list() == [3, 4, 5, 6, 7]
    # a row with two problems appears once, with both reasons
    assert acc_rej.filter(pl.col("_line") == 7)["_reason"].item() == (
        "renewal_date: 'not a date' is not a valid date; arr: '-10' is negative"
    )
    assert result.tables["accounts"]["account_id"].to_list() == ["A1", "A6"]
    assert result.tables["accounts"]["arr"].to_list() == [120000.0, 2500.75]
    assert result.tables["tickets"]["ticket_id"].to_list() == ["T1", "T3"]
    assert result.tables["outcomes"]["outcome"].to_list() == ["renewed"]
    kept_plus_rejected = {
        t: result.tables[t].height + (result.rejected[t].height if t in result.rejected else 0)
        for t in result.tables
    }
    assert kept_plus_rejected == {"accounts": 7, "tickets": 6, "outcomes": 3}


def test_problem_examples_are_capped_at_three():
    rows = [(f"A{i}", "n", "smb", "o", "bad", "2026-01-01") for i in range(10)]
    result = validate({"accounts": accounts(*rows)}, "test")
    p = only(result, "bad_type")
    assert p.count == 10 and len(p.examples) == 3


# ------------------------------------------------------------------------ property

_cell = st.one_of(
    st.none(),
    st.sampled_from(["", "NA", "1,234.5", "1.234,5", "12%", "-4", "$7", "1e3", "abc", " 12 ", "inf"]),
    st.text(max_size=6),
    st.floats(allow_nan=False, allow_infinity=False).map(str),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_cell, min_size=1, max_size=12))
def test_every_row_is_either_kept_or_rejected_and_kept_values_are_clean(arrs):
    rows = [(f"A{i}", "n", "smb", "o", v, "2026-01-01") for i, v in enumerate(arrs)]
    result = validate({"accounts": accounts(*rows)}, "prop")
    kept = result.tables["accounts"]
    rejected = result.rejected.get("accounts")
    n_rej = rejected.height if rejected is not None else 0
    assert kept.height + n_rej == len(arrs)
    assert kept.schema["arr"] == pl.Float64
    assert kept["arr"].null_count() == 0
    assert (kept["arr"] >= 0).all() and kept["arr"].is_finite().all()
    if rejected is not None:
        assert rejected["_reason"].null_count() == 0
        assert rejected["_line"].n_unique() == rejected.height  # one row per rejected row


def test_did_you_mean():
    assert did_you_mean("Account_ID", ["account_id", "name"]) == "account_id"
    assert did_you_mean("xyz", ["account_id"]) is None
    assert set(TABLES) >= {"accounts", "usage"}


def test_na_is_a_value_in_string_columns_but_missing_in_number_columns():
    raw = accounts(("A1", "n", "NA", "o", "1", "2026-01-01"), ("A2", "n", "smb", "o", "NA", "2026-01-01"),
                   extra={"region": ["NA", "-"]})
    result = validate({"accounts": raw}, "test")
    assert result.tables["accounts"].select("segment", "region").row(0) == ("NA", "NA")  # North America
    p = only(result, "null_value")
    assert p.column == "arr" and "line 2: 'NA'" in p.message
    assert result.rejected["accounts"]["_reason"].to_list() == ["arr: 'NA' means no value, but it is required"]
