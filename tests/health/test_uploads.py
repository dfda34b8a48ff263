"""Uploads: stage (read + map + validate, nothing stored), accept / replace / remove, merge."""

from __future__ import annotations

import datetime as dt
import io
import json

import polars as pl
import pytest

from health import uploads as U
from health.contract import validate
from sources.readers import read_any

D = dt.date

ACCOUNTS = pl.DataFrame(
    {
        "account_id": ["A1", "A2"],
        "name": ["Acme", "Beta"],
        "segment": ["smb", "mid"],
        "owner": ["Maya", "Li"],
        "arr": [1000.0, 2000.0],
        "renewal_date": [D(2027, 1, 1), D(2027, 2, 1)],
    }
)
TOUCH = pl.DataFrame(
    {"touchpoint_id": ["T1"], "account_id": ["A1"], "at": [D(2026, 11, 1)], "kind": ["call"]}
)
MAPPING = {"Touch ID": "touchpoint_id", "Customer": "account_id", "When": "at", "Type": "kind"}
EXEC_CSV = (
    b"Touch ID,Customer,When,Type,Notes\n"
    b"EX-1,A1,03/11/2026,exec_call,hello\n"
    b"EX-2,NOPE,04/11/2026,exec_call,x\n"
    b"EX-3,A2,31/13/2026,exec_call,bad date\n"
)


def _stage(data: bytes = EXEC_CSV, filename: str = "exec.csv", mapping=MAPPING, **kw) -> U.Staged:
    kw.setdefault("date_formats", {"at": "%d/%m/%Y"})
    return U.stage(data, filename, "touchpoints", mapping, accounts=ACCOUNTS, reader=read_any, **kw)


def _book():
    return validate({"accounts": ACCOUNTS, "touchpoints": TOUCH}, "test")


def test_stage_reports_every_problem_with_file_column_and_line():
    st = _stage()
    assert (st.rows_read, st.rows_valid, st.rows_rejected) == (3, 1, 2)
    assert st.valid["touchpoint_id"].to_list() == ["EX-1"]
    assert st.valid.schema["at"] == pl.Date and st.valid["at"][0] == D(2026, 11, 3)
    msgs = {p.kind: p.message for p in st.errors}
    assert "exec.csv" in msgs["unknown_account"] and "'NOPE'" in msgs["unknown_account"] and "line 3" in msgs["unknown_account"]
    assert any("column 'at'" in m and "line 4: '31/13/2026'" in m for m in msgs.values())
    assert all("config/sources.yaml" not in p.message for p in st.problems)
    assert sorted(st.rejected["_line"].to_list()) == [3, 4]
    assert st.can_accept


def test_stage_keeps_the_mapping_and_names_the_missing_column():
    mapping = {**MAPPING, "Touch": "touchpoint_id"}
    del mapping["Touch ID"]
    st = _stage(mapping=mapping)
    assert st.mapping == mapping  # what the user typed is kept, even when it is wrong
    missing = [p for p in st.errors if p.kind == "missing_column"]
    assert missing and "'Touch'" in missing[0].message and "Did you mean 'Touch ID'?" in missing[0].message
    assert not st.can_accept and st.valid is None
    assert st.file_columns == ["Touch ID", "Customer", "When", "Type", "Notes"]


def test_stage_an_unreadable_or_unknown_file_is_a_problem_not_a_crash():
    st = _stage(b"whatever", filename="notes.docx")
    assert [p.kind for p in st.errors] == ["unreadable_file"]
    assert "notes.docx" in st.errors[0].message and ".csv" in st.errors[0].message
    empty = _stage(b"", filename="empty.csv")
    assert empty.errors[0].kind == "unreadable_file" and "empty.csv is empty" in empty.errors[0].message
    assert "/tmp" not in empty.errors[0].message


def test_stage_reads_parquet_and_needs_accounts_for_references():
    buf = io.BytesIO()
    pl.DataFrame({"id": ["P1"], "account_id": ["A2"], "at": [D(2026, 11, 5)], "kind": ["qbr"]}).write_parquet(buf)
    st = _stage(buf.getvalue(), filename="t.parquet", mapping={"id": "touchpoint_id"}, date_formats={})
    assert st.rows_valid == 1 and not st.errors
    no_acc = U.stage(buf.getvalue(), "t.parquet", "touchpoints", {"id": "touchpoint_id"}, accounts=None, reader=read_any)
    assert not no_acc.can_accept and no_acc.errors[0].kind == "references_unchecked"


def test_guess_mapping_suggests_close_names():
    assert U.guess_mapping(["Account ID", "Date", "Metric", "Value"], "usage") == {
        "Account ID": "account_id", "Date": "date", "Metric": "metric", "Value": "value",
    }


def test_accept_stores_parquet_and_manifest_and_survives_a_new_listing(tmp_path):
    up = U.accept(_stage(), "maya@example.com", tmp_path, now=dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC))
    manifest = json.loads((tmp_path / "touchpoints" / f"{up.id}.json").read_text())
    assert manifest["uploaded_by"] == "maya@example.com"
    assert manifest["original_file"] == "exec.csv" and manifest["mapping"] == MAPPING
    assert manifest["date_formats"] == {"at": "%d/%m/%Y"}
    assert (manifest["rows_read"], manifest["rows_accepted"], manifest["rows_rejected"]) == (3, 1, 2)
    listed = U.list_uploads(tmp_path)
    assert [u.id for u in listed] == [up.id] and pl.read_parquet(listed[0].parquet).height == 1


def test_accept_refuses_a_file_without_good_rows(tmp_path):
    with pytest.raises(U.UploadError, match="nothing was stored"):
        U.accept(_stage(b"x", filename="x.docx"), "me", tmp_path)
    assert U.list_uploads(tmp_path) == []


def test_replace_and_remove_change_the_fingerprint(tmp_path):
    f0 = U.fingerprint(tmp_path)
    first = U.accept(_stage(), "me", tmp_path)
    f1 = U.fingerprint(tmp_path)
    second = U.accept(_stage(), "me", tmp_path, replaces=first.id)
    assert [u.id for u in U.list_uploads(tmp_path)] == [second.id]
    assert second.manifest["replaces"] == first.id
    f2 = U.fingerprint(tmp_path)
    U.remove(tmp_path, "touchpoints", second.id)
    assert U.list_uploads(tmp_path) == []
    assert len({f0, f1, f2}) == 3
    with pytest.raises(U.UploadError, match="no touchpoints upload"):
        U.remove(tmp_path, "touchpoints", second.id)


def test_merge_appends_uploads_with_the_canonical_types(tmp_path):
    U.accept(_stage(), "me", tmp_path)
    base = _book()
    merged = U.merge(base, U.list_uploads(tmp_path))
    tp = merged.tables["touchpoints"]
    assert tp["touchpoint_id"].to_list() == ["T1", "EX-1"]
    assert tp.schema["at"] == pl.Date and "Notes" in tp.columns
    assert base.tables["touchpoints"].height == 1  # the source's result is not changed
    assert merged.loaded_at == base.loaded_at and not merged.errors
    assert U.merge(base, []) is base


def test_merge_reports_duplicates_and_unknown_accounts(tmp_path):
    dup = _stage(b"id,account_id,at,kind\nT1,A1,2026-11-02,call\nN1,A2,2026-11-02,call\n", mapping={"id": "touchpoint_id"},
                 date_formats={})
    U.accept(dup, "me", tmp_path)
    # an upload accepted when A2 existed; the source has dropped A2 since
    base = validate({"accounts": ACCOUNTS.filter(pl.col("account_id") == "A1"), "touchpoints": TOUCH}, "test")
    merged = U.merge(base, U.list_uploads(tmp_path))
    kinds = {p.kind: p for p in merged.errors}
    assert "duplicate_id" in kinds and "'exec.csv'" in kinds["duplicate_id"].message
    assert "T1" in kinds["duplicate_id"].message and "existing rows were kept" in kinds["duplicate_id"].message
    assert "unknown_account" in kinds and "'A2'" in kinds["unknown_account"].message
    assert merged.tables["touchpoints"]["touchpoint_id"].to_list() == ["T1"]
    rej = merged.rejected["touchpoints"]
    assert set(rej["_reason"].to_list()) == {"account_id: 'A2' is not in accounts", "touchpoint_id already in touchpoints"}


def test_uploaded_accounts_are_merged_first_so_their_rows_count(tmp_path):
    acc_csv = b"account_id,name,segment,owner,arr,renewal_date\nA3,Gamma,smb,Maya,10,2027-03-01\n"
    U.accept(U.stage(acc_csv, "new.csv", "accounts", {}, reader=read_any), "me", tmp_path)
    tp = U.stage(b"touchpoint_id,account_id,at,kind\nX1,A3,2026-11-02,call\n", "t.csv", "touchpoints", {},
                 accounts=pl.concat([ACCOUNTS, pl.read_parquet(U.list_uploads(tmp_path)[0].parquet)], how="diagonal_relaxed"),
                 reader=read_any)
    U.accept(tp, "me", tmp_path)
    merged = U.merge(_book(), U.list_uploads(tmp_path))
    assert not merged.errors
    assert "A3" in merged.tables["accounts"]["account_id"].to_list()
    assert "X1" in merged.tables["touchpoints"]["touchpoint_id"].to_list()


def test_an_excel_sheet_is_read_like_the_csv():
    """The exec-touchpoint spreadsheet as .xlsx: the same rows pass and fail as from CSV."""
    sheet = pl.read_csv(io.BytesIO(EXEC_CSV), infer_schema=False)
    buf = io.BytesIO()
    sheet.write_excel(buf)
    st = _stage(buf.getvalue(), filename="exec touchpoints.xlsx")
    assert (st.rows_read, st.rows_valid, st.rows_rejected) == (3, 1, 2)
    assert st.valid["touchpoint_id"].to_list() == ["EX-1"] and st.valid["at"][0] == D(2026, 11, 3)
    assert sorted(st.rejected["_line"].to_list()) == [3, 4]


def test_an_excel_file_without_fastexcel_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastexcel" else real(name, *a))
    st = _stage(b"PK\x03\x04", filename="exec touchpoints.xlsx")
    assert st.errors[0].kind == "unreadable_file"
    assert "exec touchpoints.xlsx" in st.errors[0].message and "save the sheet as CSV" in st.errors[0].message


def test_stage_rejects_keys_already_loaded_in_the_preview():
    st = U.stage(b"touchpoint_id,account_id,at,kind\nT1,A1,2026-11-02,call\nN1,NOPE,2026-11-02,call\nN2,A2,2026-11-03,qbr\n",
                 "t.csv", "touchpoints", {}, accounts=ACCOUNTS, existing=TOUCH, reader=read_any)
    assert st.valid["touchpoint_id"].to_list() == ["N2"]
    dup = next(p for p in st.errors if p.kind == "duplicate_id")
    assert "t.csv" in dup.message and "(line 2): 'T1'" in dup.message
    assert dict(zip(st.rejected["_line"], st.rejected["_reason"])) == {
        2: "touchpoint_id already in touchpoints", 3: "account_id: 'NOPE' is not in accounts",
    }
    usage = pl.DataFrame({"account_id": ["A1"], "date": [D(2026, 11, 1)], "metric": ["logins"], "value": [3.0]})
    st = U.stage(b"account_id,date,metric,value\nA1,01/11/2026,logins,4\n", "u.csv", "usage", {},
                 date_formats={"date": "%d/%m/%Y"}, accounts=ACCOUNTS, existing=usage, reader=read_any)
    assert st.rows_valid == 0 and st.rows_rejected == 1 and st.errors[0].kind == "duplicate_id"
