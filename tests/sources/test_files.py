"""The `files` source: messy CSV exports and Parquet folders, column mappings, round trips."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from health.schema import TABLES
from sources.base import SourceConfigError
from sources.files import FileSource, build_files_source, write_tables_csv
from sources.readers import read_csv_strings, sniff_delimiter

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "files"
D, T = dt.date, dt.datetime


def typed(table: str, rows: list[dict], extra: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    schema = {c.name: c.dtype for c in TABLES[table].columns if c.name in rows[0]}
    schema.update(extra or {})
    return pl.DataFrame(rows, schema=schema, orient="row")


def tiny_book() -> dict[str, pl.DataFrame]:
    """A small deterministic book over all eight tables, canonical dtypes, with extras."""
    return {
        "accounts": typed("accounts", [
            {"account_id": "A-001", "name": "Acme, Inc.", "segment": "enterprise", "owner": "Ann Lee",
             "arr": 120000.0, "renewal_date": D(2027, 3, 1), "start_date": D(2022, 3, 1), "region": "EMEA",
             "seats": 500, "champion": "Zoë \"Z\" Adams"},
            {"account_id": "A-002", "name": "Beta GmbH", "segment": "smb", "owner": "Bob Ray",
             "arr": 9000.5, "renewal_date": D(2027, 1, 15), "start_date": None, "region": "APAC",
             "seats": 12, "champion": None},
            {"account_id": "A-003", "name": "Gamma; Ltd", "segment": "mid", "owner": "Ann Lee",
             "arr": 45000.25, "renewal_date": D(2026, 12, 31), "start_date": D(2023, 6, 1), "region": None,
             "seats": None, "champion": "Cy"},
        ], {"champion": pl.String}),
        "usage": typed("usage", [
            {"account_id": a, "date": D(2026, 11, d), "metric": m, "value": float(v)}
            for a, base in (("A-001", 400), ("A-002", 9), ("A-003", 60))
            for d in (27, 28, 29)
            for m, v in (("active_users", base + d), ("api_calls", base * 10.5 + d))
        ]),
        "tickets": typed("tickets", [
            {"ticket_id": "T1", "account_id": "A-001", "opened_at": T(2026, 11, 20, 9, 0), "priority": "P1",
             "closed_at": T(2026, 11, 21, 17, 30, 15), "status": "closed", "sentiment": -0.4, "escalated": True,
             "subject": "Login fails,\nSSO broken"},
            {"ticket_id": "T2", "account_id": "A-002", "opened_at": T(2026, 11, 25, 14, 0, 0, 250000),
             "priority": "P3", "closed_at": None, "status": "open", "sentiment": None, "escalated": False,
             "subject": "Question"},
        ]),
        "invoices": typed("invoices", [
            {"invoice_id": "I1", "account_id": "A-001", "issued_at": D(2026, 10, 1), "due_date": D(2026, 10, 31),
             "amount": 30000.0, "paid_at": D(2026, 10, 20), "status": "paid"},
            {"invoice_id": "I2", "account_id": "A-002", "issued_at": D(2026, 11, 1), "due_date": D(2026, 12, 1),
             "amount": 750.75, "paid_at": None, "status": "open"},
        ]),
        "surveys": typed("surveys", [
            {"response_id": "S1", "account_id": "A-001", "responded_at": D(2026, 11, 10), "kind": "nps",
             "score": 9.0, "comment": "Great, thanks"},
            {"response_id": "S2", "account_id": "A-003", "responded_at": D(2026, 11, 12), "kind": "csat",
             "score": 4.0, "comment": None},
        ]),
        "touchpoints": typed("touchpoints", [
            {"touchpoint_id": "P1", "account_id": "A-001", "at": D(2026, 11, 15), "kind": "qbr",
             "notes": "Expansion talk"},
        ]),
        "milestones": typed("milestones", [
            {"account_id": "A-001", "at": D(2022, 4, 1), "kind": "go_live", "description": "Live in EU"},
            {"account_id": "A-002", "at": D(2024, 2, 1), "kind": "kickoff", "description": None},
        ]),
        "outcomes": typed("outcomes", [
            {"account_id": "A-001", "renewal_date": D(2026, 3, 1), "outcome": "expanded",
             "arr_before": 100000.0, "arr_after": 120000.0},
            {"account_id": "A-003", "renewal_date": D(2025, 12, 31), "outcome": "renewed",
             "arr_before": 45000.25, "arr_after": 45000.25},
        ]),
    }


RENAME = {  # canonical -> the export's own names
    "accounts": {"account_id": "Customer ID", "name": "Account Name", "owner": "CSM", "arr": "ARR",
                 "renewal_date": "Renewal Date"},
    "usage": {"account_id": "customer", "date": "day", "value": "metric value"},
    "tickets": {"ticket_id": "Case Number", "opened_at": "Created"},
}


def mapping_settings(folder: Path, rename: dict[str, dict[str, str]]) -> dict:
    return {"path": str(folder), "tables": {t: {"columns": {v: k for k, v in m.items()}} for t, m in rename.items()}}


def sort_key(table: str) -> list[str]:
    spec = TABLES[table]
    return list(spec.key) or [c.name for c in spec.columns if c.required]


def assert_same_book(got: dict[str, pl.DataFrame], want: dict[str, pl.DataFrame]) -> None:
    assert set(got) == set(want)
    for table, df in want.items():
        by = sort_key(table)
        assert_frame_equal(got[table].sort(by), df.sort(by), check_column_order=False, check_exact=True)


# --------------------------------------------------------------------- messy CSV


MESSY = {
    "path": str(FIXTURES / "messy"),
    "tables": {
        "accounts": {
            "file": "customers.csv",
            "columns": {"Customer ID": "account_id", "Account Name": "name", "Tier": "segment",
                        "CSM": "owner", "ARR (EUR)": "arr", "Renewal": "renewal_date", "Seats": "seats"},
            "date_formats": {"renewal_date": "%d/%m/%Y"},
            "decimal": ",",
        },
        "usage": {"columns": {"Customer ID": "account_id", "Day": "date", "Metric": "metric", "Value": "value"}},
    },
}


def test_messy_csv_bom_crlf_semicolon_eu_numbers_day_first_dates():
    result = build_files_source("messy", MESSY, base_dir=".").load()

    assert result.errors == []
    assert_frame_equal(
        result.tables["accounts"],
        pl.DataFrame({
            "account_id": ["C-001", "C-002", "C-003", "C-004"],
            "name": ["Acme GmbH", "Beta SARL", "Gamma BV", "Delta SpA"],
            "segment": ["enterprise", "smb", "mid", "mid"],
            "owner": ["Anna Schmidt", "Bruno Petit", "Cora Jansen", "Dario Rossi"],
            "arr": [1234.5, 980.0, 1250000.75, 12500.0],
            "renewal_date": [D(2026, 12, 25), D(2027, 2, 1), D(2027, 4, 3), D(2027, 6, 30)],
            "seats": [1200, 15, 250, 40],
            "Notes": ['Key account; "strategic"', None, "two\r\nlines", None],
        }),
    )
    # tab-delimited, no settings but the mapping: EU numbers and day-first dates decided from the values
    assert_frame_equal(
        result.tables["usage"],
        pl.DataFrame({
            "account_id": ["C-001", "C-001", "C-002", "C-003"],
            "date": [D(2026, 11, 1), D(2026, 11, 2), D(2026, 11, 1), D(2026, 11, 13)],
            "metric": ["active_users"] * 4,
            "value": [1234.0, 1240.5, 7.0, 80.0],
        }),
    )
    # a Windows-1252 file: read, with a warning
    assert result.tables["tickets"]["subject"].to_list() == ["Café menu broken", "Façade export"]
    assert result.tables["tickets"]["opened_at"].to_list() == [T(2026, 11, 2, 9, 15), T(2026, 11, 3, 10, 0)]
    assert result.tables["tickets"]["escalated"].to_list() == [True, False]
    (enc,) = [p for p in result.problems if p.kind == "encoding"]
    assert enc.table == "tickets" and enc.severity == "warning" and "cp1252" in enc.message


def test_csv_reader_line_numbers_follow_the_file():
    out = read_csv_strings(FIXTURES / "messy" / "customers.csv")
    assert out.delimiter == ";"
    assert out.frame.columns[0] == "Customer ID"  # BOM stripped
    # a blank line (4) is skipped; the quoted cell spanning lines 5-6 pushes the next row to 7
    assert out.frame["_line"].to_list() == [2, 3, 5, 7]
    assert out.frame["Seats"].to_list() == ["1.200", "15", "250", "40"]  # strings: validation types them


@pytest.mark.parametrize(
    ("header", "sep"),
    [("a,b,c", ","), ("a;b;c", ";"), ("a\tb\tc", "\t"), ("a|b", "|"), ('"x;y",b,c', ","), ("single", ",")],
)
def test_sniff_delimiter(header, sep):
    assert sniff_delimiter(header) == sep


def test_bad_values_in_csv_are_reported_with_file_and_line(tmp_path):
    (tmp_path / "accounts.csv").write_text(
        "account_id,name,segment,owner,arr,renewal_date\n"
        "A1,Acme,smb,Ann,100,2026-01-01\n"
        "\n"
        "A2,Beta,smb,Bob,n/a?,2026-01-01\n"
    )
    result = build_files_source("t", {"path": str(tmp_path)}, base_dir=".").load()
    (p,) = result.errors
    assert p.kind == "bad_type" and p.column == "arr"
    assert "accounts.csv" in p.message and "line 4: 'n/a?'" in p.message
    assert result.rejected["accounts"]["_line"].to_list() == [4]
    assert result.tables["accounts"]["account_id"].to_list() == ["A1"]


# --------------------------------------------------------------------- round trips


def test_round_trip_csv_with_renamed_columns(tmp_path):
    book = tiny_book()
    write_tables_csv(book, tmp_path, RENAME)
    header = (tmp_path / "accounts.csv").read_text().splitlines()[0]
    assert header.startswith("Customer ID,Account Name,segment,CSM,ARR,Renewal Date")

    source = build_files_source("export", mapping_settings(tmp_path, RENAME), base_dir=".")
    result = source.load()

    assert result.problems == []
    assert result.rejected == {}
    assert_same_book(result.tables, book)


def test_round_trip_parquet_keeps_types(tmp_path):
    book = tiny_book()
    for table, df in book.items():
        df.rename(RENAME.get(table, {})).write_parquet(tmp_path / f"{table}.parquet")
    result = build_files_source("pq", mapping_settings(tmp_path, RENAME), base_dir=".").load()
    assert result.problems == []
    assert_same_book(result.tables, book)


def test_round_trip_on_the_generated_sample(tmp_path):
    sample = pytest.importorskip("sources.sample")
    book = sample.generate(n_accounts=60)
    write_tables_csv(book, tmp_path, RENAME)
    result = build_files_source("s", mapping_settings(tmp_path, RENAME), base_dir=".").load()
    assert result.errors == [], [str(p) for p in result.errors]
    assert_same_book(result.tables, book)


# ----------------------------------------------------------------- what goes wrong


def test_mapping_a_column_that_is_not_in_the_file(tmp_path):
    book = tiny_book()
    write_tables_csv({t: book[t] for t in ("accounts", "usage")}, tmp_path, RENAME)
    settings = mapping_settings(tmp_path, RENAME)
    settings["tables"]["accounts"]["columns"] = {"Customer Id": "account_id", "Account Name": "name",
                                                 "CSM": "owner", "ARR": "arr", "Renewal Date": "renewal_date"}
    result = build_files_source("t", settings, base_dir=".").load()

    mapping = [p for p in result.problems if p.kind == "missing_column" and "maps 'Customer Id'" in p.message]
    assert len(mapping) == 1
    p = mapping[0]
    assert p.table == "accounts" and p.column == "account_id" and p.severity == "error"
    assert "'Customer Id'" in p.message and "Did you mean 'Customer ID'?" in p.message
    assert "columns found: Customer ID, Account Name" in p.message
    assert "accounts" not in result.tables  # account_id is required
    assert result.tables["usage"].height == book["usage"].height  # other tables still load


def test_unreadable_and_ragged_files_do_not_stop_the_other_tables(tmp_path):
    shutil.copytree(FIXTURES / "good", tmp_path / "x")
    (tmp_path / "x" / "invoices.csv").write_bytes(b"")
    (tmp_path / "x" / "surveys.csv").write_text(
        "response_id,account_id,responded_at,kind,score\nS1,A1,2026-11-10,nps,9\nS2,A1,2026-11-11,nps,1,200\n"
    )
    result = build_files_source("t", {"path": str(tmp_path / "x")}, base_dir=".").load()
    unreadable = {p.table: p for p in result.problems if p.kind == "unreadable_file"}
    assert set(unreadable) == {"invoices", "surveys"}
    assert "invoices.csv is empty" in unreadable["invoices"].message
    assert "line 3" in unreadable["surveys"].message and "delimiter" in unreadable["surveys"].message
    assert {"accounts", "usage", "tickets", "touchpoints", "milestones", "outcomes"} <= set(result.tables)


def test_mapping_onto_the_same_canonical_column_twice_is_a_config_error(tmp_path):
    settings = {"path": str(tmp_path), "tables": {"accounts": {"columns": {"ID": "account_id", "Cust": "account_id"}}}}
    with pytest.raises(SourceConfigError, match=r"'ID', 'Cust' all onto 'account_id'"):
        build_files_source("t", settings, base_dir=".")


@pytest.mark.parametrize(
    ("settings", "pattern"),
    [
        ({"tables": {"acounts": {}}}, r"table 'acounts'.*did you mean 'accounts'"),
        ({"tables": {"accounts": {"fle": "x.csv"}}}, r"unknown setting 'fle'.*did you mean 'file'"),
        ({"tables": {"accounts": {"decimal": ";"}}}, r"tables\.accounts\.decimal"),
        ({"tables": {"accounts": {"date_formats": {"renewal": "%d/%m/%Y"}}}}, r"Did you mean 'renewal_date'"),
        ({"tables": {"accounts": {"date_formats": {"renewal_date": "dd/mm/yyyy"}}}}, r"strftime"),
        ({"tables": {"accounts": {"encoding": "klingon"}}}, r"not a known text encoding"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path, settings, pattern):
    with pytest.raises(SourceConfigError, match=pattern):
        build_files_source("t", {"path": str(tmp_path), **settings}, base_dir=".")


def test_missing_folder_is_a_config_error_naming_the_resolved_path(tmp_path):
    with pytest.raises(SourceConfigError) as exc:
        build_files_source("exp", {"path": "exports/2026-11"}, base_dir=str(tmp_path))
    msg = str(exc.value)
    assert str(tmp_path / "exports" / "2026-11") in msg and "does not exist" in msg and "`path:`" in msg


def test_describe_and_file_discovery(tmp_path):
    book = tiny_book()
    write_tables_csv({"accounts": book["accounts"]}, tmp_path)
    book["accounts"].write_parquet(tmp_path / "accounts.parquet")
    (tmp_path / "customer_list.csv").write_text("a,b\n1,2\n")
    source = build_files_source("exp", {"path": str(tmp_path)}, base_dir=".")
    assert isinstance(source, FileSource)
    assert source.describe() == f"CSV/Parquet folder {tmp_path}"
    located, problems = source.locate()
    assert located == {"accounts": tmp_path / "accounts.parquet"}
    kinds = sorted(p.kind for p in problems)
    assert kinds == ["several_files", "unused_file"]
    assert all(p.severity == "warning" for p in problems)


def test_configured_file_that_does_not_exist(tmp_path):
    write_tables_csv({"accounts": tiny_book()["accounts"]}, tmp_path, {"accounts": {}})
    (tmp_path / "accounts.csv").rename(tmp_path / "customers.csv")
    result = build_files_source("t", {"path": str(tmp_path), "tables": {"accounts": {"file": "customer.csv"}}},
                                base_dir=".").load()
    p = next(p for p in result.problems if p.kind == "missing_file")
    assert "Did you mean 'customers.csv'?" in p.message


def test_a_file_column_clashing_with_a_mapping_target_is_kept_aside(tmp_path):
    (tmp_path / "accounts.csv").write_text(
        "account_id,Customer ID,name,segment,owner,arr,renewal_date\nold-1,A1,Acme,smb,Ann,1,2026-01-01\n"
    )
    result = build_files_source("t", {"path": str(tmp_path), "tables": {"accounts": {"columns": {"Customer ID": "account_id"}}}},
                                base_dir=".").load()
    assert result.tables["accounts"]["account_id"].to_list() == ["A1"]
    assert result.tables["accounts"]["account_id_original"].to_list() == ["old-1"]
    assert [p.kind for p in result.problems] == ["column_clash"]
