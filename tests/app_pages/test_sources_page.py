"""The Sources & uploads page: freshness per table, staging a file (seeded in session state:
st.file_uploader cannot be driven in AppTest), the mapping editor, the preview of every
problem, accept / replace / remove, and the accepted rows reaching the book."""

from __future__ import annotations

import textwrap

import pytest

from health import uploads as U
from health.freshness import parse_latency
from sources.base import SourceConfigError
from sources.config import expected_latency
from tests.app_pages.conftest import open_page, texts

PAGE = "app_pages/sources.py"
EXEC_CSV = (
    b"Touch ID,Customer,When,Type\n"
    b"EX-1,ACC-00001,03/11/2026,exec_call\n"
    b"EX-2,NOPE-9,04/11/2026,exec_call\n"
    b"EX-3,ACC-00002,31/13/2026,exec_call\n"
)


@pytest.fixture(autouse=True)
def _uploads(monkeypatch, tmp_path):
    folder = tmp_path / "uploads"
    monkeypatch.setenv("CHI_UPLOADS_DIR", str(folder))
    return folder


def _staged_page(data: bytes = EXEC_CSV, name: str = "exec.csv", table: str = "touchpoints"):
    at = open_page(PAGE)
    at.selectbox(key="up_table").select(table).run()
    at.session_state["up_file"] = {"name": name, "data": data, "size": len(data)}
    at.run()
    return at


def _map(at, table: str, mapping: dict[str, str]):
    for col, target in mapping.items():
        at.selectbox(key=f"up_map::{table}::{col}").select(target)
    return at.run()


def test_page_shows_each_table_with_rows_latest_and_expected_latency():
    at = open_page(PAGE)
    assert not at.exception
    grid = at.dataframe[0].value
    assert "Product usage (usage)" in list(grid["Table"])
    usage = grid[grid["Table"] == "Product usage (usage)"].iloc[0]
    assert usage["Rows"] > 0 and usage["Expected latency"] == "3 d"
    assert "loaded" in texts(at) and "expected_latency" in texts(at)


def test_a_staged_file_shows_the_mapping_and_every_problem_before_accepting(_uploads):
    at = _staged_page()
    assert not at.exception
    # only the guessed mapping (Touch ID): the other required columns are missing
    assert at.selectbox(key="up_map::touchpoints::Touch ID").value == "touchpoint_id"
    assert any("no required column 'account_id'" in e.value and "exec.csv" in e.value for e in at.error)
    assert at.button(key="up_accept").disabled
    # the guess already maps close names; the rest is picked by the user
    at = _map(at, "touchpoints", {"Touch ID": "touchpoint_id", "Customer": "account_id", "When": "at", "Type": "kind"})
    at.text_input(key="up_fmt::touchpoints::at").input("%d/%m/%Y").run()
    assert not at.exception
    errors = "\n".join(e.value for e in at.error)
    assert "'NOPE-9'" in errors and "line 3" in errors  # unknown account, with its line
    assert "'31/13/2026'" in errors and "line 4" in errors  # bad date, with its line
    assert "config/sources.yaml" not in errors
    assert {m.label: m.value for m in at.metric} == {"Rows read": "3", "Rows that pass": "1", "Rows rejected": "2"}
    assert not at.button(key="up_accept").disabled
    assert U.list_uploads(_uploads) == []  # nothing stored before Accept


def test_the_mapping_survives_a_failed_validation():
    at = _staged_page()
    at = _map(at, "touchpoints", {"Touch ID": "touchpoint_id", "Customer": "account_id", "When": "at", "Type": "kind"})
    at.text_input(key="up_fmt::touchpoints::at").input("%Y-%m-%d").run()  # wrong format: every row fails
    assert at.button(key="up_accept").disabled
    assert at.selectbox(key="up_map::touchpoints::Touch ID").value == "touchpoint_id"
    assert at.text_input(key="up_fmt::touchpoints::at").value == "%Y-%m-%d"
    at.text_input(key="up_fmt::touchpoints::at").input("%d/%m/%Y").run()
    assert not at.button(key="up_accept").disabled


def test_accept_stores_the_upload_and_the_book_includes_it(_uploads):
    at = _staged_page()
    at = _map(at, "touchpoints", {"Touch ID": "touchpoint_id", "Customer": "account_id", "When": "at", "Type": "kind"})
    at.text_input(key="up_fmt::touchpoints::at").input("%d/%m/%Y").run()
    at.button(key="up_accept").click().run()
    assert not at.exception
    stored = U.list_uploads(_uploads)
    assert len(stored) == 1 and stored[0].manifest["original_file"] == "exec.csv"
    assert stored[0].manifest["uploaded_by"] == "unknown" and stored[0].manifest["rows_accepted"] == 1
    assert any("Stored 1 touchpoints row(s) from exec.csv" in s.value for s in at.success)
    assert "up_file" not in at.session_state
    grid = at.dataframe[0].value
    touch = grid[grid["Table"] == "Meetings & calls (touchpoints)"].iloc[0]
    assert touch["Of which uploaded"] == 1 and touch["Last upload (UTC)"].startswith("20")
    assert touch["Loaded (UTC)"].startswith("20")
    assert "exec.csv" in texts(at)

    from ui.data import Book, load_book

    book = load_book()
    assert isinstance(book, Book)
    assert "EX-1" in book.tables["touchpoints"]["touchpoint_id"].to_list()


def test_remove_and_replace_from_the_list(_uploads, monkeypatch):
    monkeypatch.setenv("CHI_USER", "maya.patel@example.com")
    at = _staged_page(b"touchpoint_id,account_id,at,kind\nEX-9,ACC-00003,2026-11-20,exec_call\n", "first.csv")
    at.button(key="up_accept").click().run()
    first = U.list_uploads(_uploads)[0]
    assert first.manifest["uploaded_by"] == "maya.patel@example.com"
    at.button(key=f"up_replace::touchpoints::{first.id}").click().run()
    assert at.session_state["up_replaces"] == first.id
    at.session_state["up_file"] = {"name": "second.csv", "data": b"touchpoint_id,account_id,at,kind\nEX-10,ACC-00003,2026-11-21,qbr\n", "size": 1}
    at.run()
    assert at.selectbox(key="up_replaces").value == first.id
    at.button(key="up_accept").click().run()
    stored = U.list_uploads(_uploads)
    assert [u.filename for u in stored] == ["second.csv"] and stored[0].manifest["replaces"] == first.id
    at.button(key=f"up_remove::touchpoints::{stored[0].id}").click().run()
    assert U.list_uploads(_uploads) == []
    assert any("Removed second.csv" in s.value for s in at.success)


def test_an_unreadable_file_is_a_clear_error():
    at = _staged_page(b"", "empty.csv")
    assert not at.exception
    assert any("empty.csv is empty" in e.value for e in at.error)
    assert at.button(key="up_accept").disabled


def test_expected_latency_from_the_sources_file(tmp_path, monkeypatch):
    assert [parse_latency(v) for v in (3, "2d", "2w", "36h", "none")] == [3, 2, 14, 2, None]
    with pytest.raises(ValueError, match="like 2d"):
        parse_latency("soon")
    cfg = tmp_path / "config" / "sources.yaml"
    cfg.parent.mkdir()
    cfg.write_text(textwrap.dedent("""\
        active: sample
        expected_latency: {usage: 1d, invoices: 35d}
        sources:
          sample: {kind: sample}
    """))
    got = expected_latency(cfg)
    assert got["usage"] == 1 and got["invoices"] == 35 and got["tickets"] == 7
    cfg.write_text("active: sample\nexpected_latency:\n  usage: soon\nsources:\n  sample: {kind: sample}\n")
    with pytest.raises(SourceConfigError, match=r"line 3: `expected_latency` for 'usage'"):
        expected_latency(cfg)
    # the page and the sidebar use it
    cfg.write_text("active: sample\nexpected_latency: {usage: 1d}\nsources:\n  sample: {kind: sample}\n")
    monkeypatch.setenv("CHI_SOURCES_FILE", str(cfg))
    at = open_page(PAGE)
    assert not at.exception
    grid = at.dataframe[0].value
    assert grid[grid["Table"] == "Product usage (usage)"].iloc[0]["Expected latency"] == "1 d"
    assert "Product usage 1 d" in "\n".join(c.value for c in at.sidebar.caption)


def test_the_preview_flags_rows_already_in_the_book_unless_they_are_being_replaced(_uploads):
    csv = b"touchpoint_id,account_id,at,kind\nEX-9,ACC-00003,2026-11-20,exec_call\n"
    at = _staged_page(csv, "first.csv")
    at.button(key="up_accept").click().run()
    at.session_state["up_file"] = {"name": "again.csv", "data": csv, "size": len(csv)}
    at.run()
    assert any("again.csv: 1 row(s) have a touchpoint_id already in touchpoints (line 2): 'EX-9'" in e.value for e in at.error)
    assert at.button(key="up_accept").disabled
    first = U.list_uploads(_uploads)[0]
    at.selectbox(key="up_replaces").select(first.id).run()
    assert not any("already in" in e.value for e in at.error)
    assert not at.button(key="up_accept").disabled
