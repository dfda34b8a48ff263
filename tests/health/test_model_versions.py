"""Changing the health model safely: structured edits keep the file as written; publish
and rollback are permission-checked, need a reason, validate, refuse stale drafts, write
atomically and keep every version; what-if shows who moves tier."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from health.model import INSUFFICIENT
from health.model_loader import ModelError, load_model, model_hash, parse_model
from health.model_versions import (
    EditError,
    NoChange,
    ReasonRequired,
    SetScore,
    SetTiers,
    SetWeight,
    StaleDraft,
    UnknownVersion,
    VersionStore,
    diff,
    edit_weights,
    ensure_recorded,
    form_changes,
    history,
    publish,
    read_model_text,
    rollback,
    version_at,
    version_periods,
    what_if,
    with_model_version,
)
from health.roles import PermissionDenied, load_roles

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "weights.yaml"


class Clock:
    """A store clock that moves one hour per version."""

    def __init__(self, start: dt.datetime = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)):
        self.t = start

    def __call__(self) -> dt.datetime:
        self.t += dt.timedelta(hours=1)
        return self.t


@pytest.fixture(scope="module")
def roles():
    return load_roles(ROOT / "config" / "roles.yaml")


@pytest.fixture
def ops(roles):
    return roles.user("olivia.novak@example.com")


@pytest.fixture
def other_ops(roles):
    """A second ops user (roles.yaml lists one; this one is made for the test)."""
    from dataclasses import replace

    return replace(roles.user("olivia.novak@example.com"), email="sam.ops@example.com", name="Sam Ops")


@pytest.fixture
def model_file(tmp_path) -> Path:
    p = tmp_path / "weights.yaml"
    shutil.copyfile(WEIGHTS, p)
    return p


@pytest.fixture
def store(tmp_path) -> VersionStore:
    return VersionStore(tmp_path / "state.db", clock=Clock())


def comments(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("#") or " # " in ln]


def key_paths(text: str) -> list[str]:
    """Every key of the document as a dotted path, in file order."""
    from ruamel.yaml import YAML

    out: list[str] = []

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                out.append(f"{prefix}{k}")
                walk(v, f"{prefix}{k}.")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{prefix}{i}.")

    walk(YAML(typ="rt").load(text), "")
    return out


# ---------------------------------------------------------------------------------------
# edit_weights
# ---------------------------------------------------------------------------------------


def test_edits_change_only_their_lines():
    text = WEIGHTS.read_text()
    new = edit_weights(
        text,
        [
            SetWeight("enterprise", "active_users_trend", 4),
            SetTiers(None, at_risk=60),
            SetTiers("enterprise", watch=80),
            SetScore("latest_nps", ((0, 0), (7, 50), (10, 100))),
        ],
    )
    changed = [ln for ln in diff(text, new).splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert changed == [
        "-    score: [[0, 0], [6, 35], [8, 75], [10, 100]]",
        "+    score: [[0, 0], [7, 50], [10, 100]]",
        "-      active_users_trend: 3",
        "+      active_users_trend: 4",
        "-    tiers: { at_risk: 65, watch: 78 }",
        "+    tiers: { at_risk: 65, watch: 80 }",
        "-  at_risk: 62",
        "+  at_risk: 60",
    ]
    m = parse_model(new).model
    assert m.segments["enterprise"].weights["active_users_trend"] == 4
    assert m.tiers.at_risk == 60 and m.segments["enterprise"].tiers.watch == 80
    assert m.signals["latest_nps"].score == [(0, 0), (7, 50), (10, 100)]


def test_edits_keep_comments_and_key_order():
    text = WEIGHTS.read_text()
    new = edit_weights(
        text,
        [
            SetWeight("default", "tenure_days", 2.25),  # the last weight before `tiers:` and its comment
            SetWeight("default", "days_since_exec_meeting", 0.5),  # a new key
            SetWeight("mid", "tenure_days", None),  # removed
            SetTiers("mid", at_risk=70),  # a segment gains its own tiers
            SetTiers("enterprise", clear=True),  # and one loses them
            SetScore("tenure_days", ((30, 30), (365, 80), (1000, 100))),  # the last signal
            SetScore("events_per_user", ((0, 0), (10, 100))),  # percentile -> points
        ],
    )
    assert comments(new) == comments(text)
    added = {"segments.default.weights.days_since_exec_meeting", "segments.mid.tiers",
             "segments.mid.tiers.at_risk", "segments.mid.tiers.watch"}  # fmt: skip
    removed = {"segments.mid.weights.tenure_days", "segments.enterprise.tiers",
               "segments.enterprise.tiers.at_risk", "segments.enterprise.tiers.watch"}  # fmt: skip
    old_keys, new_keys = key_paths(text), key_paths(new)
    assert set(new_keys) - set(old_keys) == added and set(old_keys) - set(new_keys) == removed
    assert [k for k in new_keys if k not in added] == [k for k in old_keys if k not in removed]
    m = parse_model(new).model
    assert m.segments["default"].weights["tenure_days"] == 2.25
    assert list(m.segments["default"].weights)[-1] == "days_since_exec_meeting"
    assert "tenure_days" not in m.segments["mid"].weights
    assert m.segments["mid"].tiers.at_risk == 70 and m.segments["mid"].tiers.watch == 75
    assert m.segments["enterprise"].tiers is None
    assert m.signals["events_per_user"].score == [(0, 0), (10, 100)]


def test_no_change_gives_the_same_text():
    text = WEIGHTS.read_text()
    assert edit_weights(text, []) == text
    assert edit_weights(text, [SetWeight("enterprise", "active_users_trend", 3)]) == text
    assert edit_weights(text, [SetWeight("default", "days_since_exec_meeting", None)]) == text  # not there
    assert edit_weights(text, [SetTiers("mid", clear=True)]) == text  # has no own tiers


def test_edit_errors_name_the_unknown():
    text = WEIGHTS.read_text()
    with pytest.raises(EditError, match="unknown segment 'smbb'"):
        edit_weights(text, [SetWeight("smbb", "active_users_trend", 1)])
    with pytest.raises(EditError, match="unknown signal 'usage'"):
        edit_weights(text, [SetScore("usage", ((0, 0), (1, 100)))])
    with pytest.raises(EditError, match="finite"):
        edit_weights(text, [SetWeight("mid", "active_users_trend", float("inf"))])


def test_flow_style_and_block_points_fall_back_without_losing_comments():
    text = (
        "# the model\n"
        "signals:\n"
        "  a: {label: A, table: usage, metric: x, measure: sum, window: 28d, score: [[0, 0], [1, 100]]}  # eol\n"
        "  b:\n"
        "    label: B\n"
        "    table: usage\n"
        "    metric: y\n"
        "    measure: sum\n"
        "    window: 28d\n"
        "    score:\n"
        "      - [0, 0]   # first point\n"
        "      - [1, 100]\n"
        "segments:\n"
        "  default: { weights: { a: 1 } }   # flow\n"
        "tiers: {at_risk: 40, watch: 70}\n"
    )
    new = edit_weights(text, [SetWeight("default", "b", 2), SetScore("b", ((0, 10), (2, 90), (3, 100)))])
    assert [c.split("#")[1].strip() for c in comments(new)] == [c.split("#")[1].strip() for c in comments(text)]
    m = parse_model(new).model
    assert m.segments["default"].weights == {"a": 1, "b": 2}
    assert m.signals["b"].score == [(0, 10), (2, 90), (3, 100)]
    assert "# first point" in new and "# eol" in new and "# flow" in new


def test_form_changes_only_what_differs():
    m = load_model(WEIGHTS).model
    weights = {seg: dict(s.weights) for seg, s in m.segments.items()}
    assert form_changes(m, weights=weights, tiers={None: (62, 75), "enterprise": (65, 78), "mid": None}) == []
    weights["mid"]["latest_nps"] = 3.0
    weights["mid"]["tenure_days"] = None
    got = form_changes(
        m, weights=weights, tiers={None: (60, 75), "mid": (70, 75), "enterprise": None},
        scores={"latest_nps": [(0, 0), (10, 100)], "tenure_days": [(60, 40), (365, 75), (1095, 100)]},
    )  # fmt: skip
    assert got == [
        SetWeight("mid", "latest_nps", 3.0),
        SetWeight("mid", "tenure_days", None),
        SetTiers(None, 60, None),
        SetTiers("mid", 70.0, 75.0),
        SetTiers("enterprise", clear=True),
        SetScore("latest_nps", ((0.0, 0.0), (10.0, 100.0))),
    ]


# ---------------------------------------------------------------------------------------
# publish / history / rollback
# ---------------------------------------------------------------------------------------


def test_publish_preserves_comments_and_order_and_records_versions(model_file, store, ops):
    original = read_model_text(model_file)
    draft = edit_weights(original, [SetWeight("enterprise", "latest_nps", 3)])
    v = publish(model_file, draft, user=ops, reason="NPS predicts enterprise churn", base_hash=model_hash(original),
                store=store, backtest_figures={"overall": {"auc": 0.8}})  # fmt: skip
    on_disk = model_file.read_text()
    assert on_disk == draft
    assert comments(on_disk) == comments(original)
    assert key_paths(on_disk) == key_paths(original)
    vs = history(store, model_file)
    assert [(x.number, x.kind) for x in vs] == [(1, "initial"), (2, "publish")]
    assert vs[0].text == original and vs[0].reason == "initial"
    assert v == vs[1]
    assert v.author == "olivia.novak@example.com" and v.author_name == "Olivia Novak"
    assert v.reason == "NPS predicts enterprise churn" and v.hash == model_hash(draft)
    assert v.backtest == {"overall": {"auc": 0.8}}
    assert "-      latest_nps: 2\n+      latest_nps: 3\n" in v.diff
    assert v.diff.startswith("--- version 1\n+++ version 2\n")
    # the app's cache (keyed on the file's mtime) sees the new model
    assert load_model(model_file).hash == v.hash
    # no temp file is left behind
    assert sorted(p.name for p in model_file.parent.iterdir() if p.name.startswith(".")) == []


def test_rollback_restores_exact_bytes(model_file, store, ops):
    raw = model_file.read_bytes().replace(b"\n", b"\r\n")  # CRLF: exact bytes must come back
    model_file.write_bytes(raw)
    first = read_model_text(model_file)
    t2 = edit_weights(first.replace("\r\n", "\n"), [SetTiers(None, at_risk=60)])
    publish(model_file, t2, user=ops, reason="lower the bar", base_hash=load_model(model_file).hash, store=store)
    t3 = edit_weights(t2, [SetWeight("mid", "days_overdue", 2)])
    publish(model_file, t3, user=ops, reason="billing matters", base_hash=model_hash(t2), store=store)
    v4 = rollback(model_file, 1, user=ops, reason="back to the original", store=store)
    assert model_file.read_bytes() == raw
    assert (v4.number, v4.kind, v4.restored_from) == (4, "rollback", 1)
    assert v4.text == first
    v5 = rollback(model_file, 2, user=ops, reason="the lower bar was right", store=store, base_hash=v4.hash)
    assert model_file.read_bytes() == t2.encode()
    assert [v.number for v in history(store, model_file)] == [1, 2, 3, 4, 5]
    assert v5.diff and "+  at_risk: 60" in v5.diff
    with pytest.raises(NoChange):
        rollback(model_file, 2, user=ops, reason="again", store=store)
    with pytest.raises(UnknownVersion, match="no version 9"):
        rollback(model_file, 9, user=ops, reason="nope", store=store)


def test_stale_draft_is_refused(model_file, store, ops, other_ops):
    base = read_model_text(model_file)
    mine = edit_weights(base, [SetWeight("mid", "latest_nps", 3)])
    theirs = edit_weights(base, [SetTiers(None, watch=80)])
    publish(model_file, theirs, user=other_ops, reason="watch more accounts", base_hash=model_hash(base), store=store)
    with pytest.raises(StaleDraft) as err:
        publish(model_file, mine, user=ops, reason="mine", base_hash=model_hash(base), store=store)
    msg = str(err.value)
    assert f"started from version 1 ({model_hash(base)})" in msg
    assert f"now at version 2 ({model_hash(theirs)})" in msg
    assert "Sam Ops <sam.ops@example.com>" in msg and "watch more accounts" in msg
    assert model_file.read_text() == theirs
    assert len(history(store, model_file)) == 2
    # a rollback from a stale view is refused the same way
    with pytest.raises(StaleDraft):
        rollback(model_file, 1, user=ops, reason="undo", store=store, base_hash=model_hash(base))


def test_edit_outside_the_app_is_recorded_and_protects_against_overwrite(model_file, store, ops):
    base = read_model_text(model_file)
    ensure_recorded(model_file, store)
    by_hand = base.replace("min_coverage: 0.5", "min_coverage: 0.4")
    model_file.write_text(by_hand)
    draft = edit_weights(base, [SetWeight("mid", "latest_nps", 3)])
    with pytest.raises(StaleDraft, match="outside the app"):
        publish(model_file, draft, user=ops, reason="x", base_hash=model_hash(base), store=store)
    with pytest.raises(StaleDraft):  # a rollback started before the hand edit
        rollback(model_file, 1, user=ops, reason="undo", store=store)
    v = ensure_recorded(model_file, store)
    assert (v.number, v.kind, v.author) == (2, "external", None) and v.text == by_hand
    assert "+min_coverage: 0.4" in v.diff


def test_non_ops_cannot_publish_or_roll_back(model_file, store, roles, ops):
    base = read_model_text(model_file)
    draft = edit_weights(base, [SetWeight("mid", "latest_nps", 3)])
    for who in (roles.user("carlos.mendes@example.com"), roles.user("rachel.stone@example.com"),
                roles.local_user(), roles.user("stranger@example.com"), None):  # fmt: skip
        with pytest.raises(PermissionDenied):
            publish(model_file, draft, user=who, reason="r", base_hash=model_hash(base), store=store)
        with pytest.raises(PermissionDenied):
            rollback(model_file, 1, user=who, reason="r", store=store)
    assert model_file.read_text() == base
    with pytest.raises(PermissionDenied, match="Carlos Mendes .*needs the ops role"):
        publish(model_file, draft, user=roles.user("carlos.mendes@example.com"), reason="r",
                base_hash=model_hash(base), store=store)  # fmt: skip
    publish(model_file, draft, user=ops, reason="ops may", base_hash=model_hash(base), store=store)


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_blank_reason_is_refused(model_file, store, ops, reason):
    base = read_model_text(model_file)
    draft = edit_weights(base, [SetWeight("mid", "latest_nps", 3)])
    with pytest.raises(ReasonRequired):
        publish(model_file, draft, user=ops, reason=reason, base_hash=model_hash(base), store=store)
    with pytest.raises(ReasonRequired):
        rollback(model_file, 1, user=ops, reason=reason, store=store)
    assert model_file.read_text() == base


def test_invalid_draft_is_refused_with_every_issue(model_file, store, ops):
    base = read_model_text(model_file)
    bad = edit_weights(base, [SetTiers(None, at_risk=80), SetWeight("mid", "latest_nps", -1)])
    bad = bad.replace("measure: trend", "measure: trnd")
    mtime = model_file.stat().st_mtime_ns
    with pytest.raises(ModelError) as err:
        publish(model_file, bad, user=ops, reason="broken", base_hash=model_hash(base), store=store)
    text = "\n".join(str(i) for i in err.value.issues)
    assert re.search(r"weights\.yaml:\d+: tiers: .*tiers must be ordered", text)
    assert re.search(r"weights\.yaml:\d+: segments\.mid\.weights: .*must not be negative: latest_nps", text)
    assert re.search(r"weights\.yaml:\d+: signals\.active_users_trend\.measure: 'trnd' is not allowed — did you mean 'trend'", text)
    assert model_file.read_text() == base and model_file.stat().st_mtime_ns == mtime
    assert history(store, model_file) == []


def test_publishing_the_same_text_is_refused(model_file, store, ops):
    base = read_model_text(model_file)
    with pytest.raises(NoChange):
        publish(model_file, base, user=ops, reason="nothing", base_hash=model_hash(base), store=store)


def test_versions_over_time_and_labels(model_file, store, ops):
    base = read_model_text(model_file)
    v1 = ensure_recorded(model_file, store)
    t2 = edit_weights(base, [SetTiers(None, at_risk=60)])
    v2 = publish(model_file, t2, user=ops, reason="r2", base_hash=v1.hash, store=store)
    periods = version_periods(store, model_file)
    assert periods.columns == ["from", "to", "version", "hash", "kind", "author", "reason"]
    assert periods["version"].to_list() == [1, 2]
    assert periods["to"][0] == periods["from"][1] and periods["to"][1] is None
    assert version_at(store, v1.at - dt.timedelta(seconds=1), model_file) is None
    assert version_at(store, v1.at, model_file).number == 1
    assert version_at(store, v2.at + dt.timedelta(minutes=5), model_file).number == 2
    assert version_at(store, v2.at.date(), model_file).number == 2  # a date: the end of that day
    scores = pl.DataFrame({"account_id": ["A", "B"], "score": [50.0, 80.0]})
    labelled = with_model_version(scores, load_model(model_file).hash, store, model_file)
    assert labelled["model_version"].to_list() == [2, 2]
    assert labelled["model_hash"].to_list() == [v2.hash] * 2
    assert with_model_version(scores, "nope", store, model_file)["model_version"].to_list() == [None, None]


def test_store_table_and_default_location(model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("CHI_STATE_DB", str(tmp_path / "other.db"))
    ensure_recorded(model_file, None)
    con = sqlite3.connect(tmp_path / "other.db")
    cols = [r[1] for r in con.execute("PRAGMA table_info(model_versions)")]
    assert {"number", "hash", "author", "at", "reason", "diff", "text", "backtest"} <= set(cols)
    assert con.execute("SELECT number, kind FROM model_versions").fetchall() == [(1, "initial")]


def test_atomic_write_keeps_the_file_mode(model_file, store, ops):
    os.chmod(model_file, 0o640)
    base = read_model_text(model_file)
    publish(model_file, edit_weights(base, [SetTiers(None, at_risk=60)]), user=ops, reason="r",
            base_hash=model_hash(base), store=store)  # fmt: skip
    assert model_file.stat().st_mode & 0o777 == 0o640


# ---------------------------------------------------------------------------------------
# what-if on the sample book
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    from sources.sample import generate

    return generate(600, 7)


@pytest.fixture(scope="module")
def raised(sample):
    """The mid segment's at_risk threshold raised from 62 (global) to 72."""
    text = WEIGHTS.read_text()
    published = parse_model(text)
    draft = parse_model(edit_weights(text, [SetTiers("mid", at_risk=72)]))
    return what_if(sample, published, draft)


def test_raising_a_threshold_only_moves_accounts_into_at_risk(raised):
    w = raised
    moved = w.matrix.filter((pl.col("from_tier") != pl.col("to_tier")) & (pl.col("accounts") > 0))
    assert moved.height > 0
    assert set(moved["to_tier"]) == {"at_risk"}
    assert set(moved["from_tier"]) <= {"watch", "healthy"}
    assert w.changes.height == int(moved["accounts"].sum())
    assert set(w.changes["segment"]) == {"mid"}
    assert set(w.changes["direction"]) == {"worse"}
    assert w.changes["arr"].is_sorted(descending=True)
    assert abs(w.arr_changed - float(moved["arr"].sum())) < 1e-6
    assert (w.changes["score_published"] == w.changes["score_draft"]).all()  # tiers moved, not scores


def test_the_matrix_sums_to_the_account_count(raised, sample):
    from health.scoring import default_as_of, score

    n = score(sample, load_model(WEIGHTS).model, default_as_of(sample)).height
    assert raised.n_accounts == n
    grid = raised.table()
    assert int(grid.drop("from_tier").sum_horizontal().sum()) == n
    assert grid["from_tier"].to_list()[:3] == ["at_risk", "watch", "healthy"]
    arr = raised.table("arr")
    assert abs(float(arr.drop("from_tier").sum_horizontal().sum()) - float(raised.scores["arr"].sum())) < 1e-3
    assert INSUFFICIENT in set(raised.matrix["from_tier"])  # every pair is listed, zero or not


def test_backtest_side_by_side(raised):
    from health.model_versions import backtest_table

    assert raised.backtest is not None, raised.backtest_note
    pub, dra = raised.backtest["published"], raised.backtest["draft"]
    assert pub["overall"]["auc"] == pytest.approx(dra["overall"]["auc"])  # same scores, other tiers
    table = backtest_table(pub, dra)
    assert table.columns == ["figure", "published", "draft"]
    assert table.filter(pl.col("figure") == "AUC (score vs churn)")["published"].item().startswith("0.")


def test_what_if_without_outcomes_says_why(sample):
    tables = {k: v for k, v in sample.items() if k != "outcomes"}
    m = load_model(WEIGHTS)
    w = what_if(tables, m, m)
    assert w.backtest is None and "outcomes" in (w.backtest_note or "")
    assert w.changes.height == 0


def test_two_publishers_at_once_one_wins(model_file, tmp_path, ops, other_ops):
    """Publishes are serialised by SQLite's write lock: from the same base, exactly one
    lands and the other is refused as stale (never a silent overwrite)."""
    import threading

    base = read_model_text(model_file)
    drafts = {
        "a": (ops, edit_weights(base, [SetWeight("mid", "latest_nps", 3)])),
        "b": (other_ops, edit_weights(base, [SetTiers(None, watch=80)])),
    }
    results: dict[str, object] = {}
    start = threading.Barrier(2)

    def go(name: str) -> None:
        who, text = drafts[name]
        start.wait()
        try:
            results[name] = publish(model_file, text, user=who, reason=name, base_hash=model_hash(base),
                                    store=VersionStore(tmp_path / "race.db"))  # fmt: skip
        except StaleDraft as exc:
            results[name] = exc

    threads = [threading.Thread(target=go, args=(n,)) for n in drafts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [n for n, r in results.items() if not isinstance(r, StaleDraft)]
    assert len(won) == 1
    assert model_file.read_text() == drafts[won[0]][1]
    assert [v.kind for v in history(tmp_path / "race.db", model_file)] == ["initial", "publish"]
