"""The Model page (ops): edit a weight, see the migration preview, publish with a reason,
see the version in the history, roll back; validation as you type; stale drafts;
read-only for everyone else. Every test works on a temp copy of weights.yaml and a temp
state db (CHI_MODEL / CHI_STATE_DB), never on the repo's files."""

from __future__ import annotations

import shutil

import pytest

from health import model_versions as mv
from health.model_loader import load_model, model_hash
from health.roles import load_roles
from tests.app_pages.conftest import ROOT, app, texts

OPS = {"is_logged_in": True, "email": "olivia.novak@example.com", "name": "Olivia Novak"}
CSM = {"is_logged_in": True, "email": "carlos.mendes@example.com", "name": "Carlos Mendes"}


@pytest.fixture
def model_env(tmp_path, monkeypatch):
    model = tmp_path / "weights.yaml"
    shutil.copyfile(ROOT / "weights.yaml", model)
    db = tmp_path / "state.db"
    monkeypatch.setenv("CHI_MODEL", str(model))
    monkeypatch.setenv("CHI_STATE_DB", str(db))
    repo_bytes = (ROOT / "weights.yaml").read_bytes()
    yield model, db
    assert (ROOT / "weights.yaml").read_bytes() == repo_bytes, "the repo's weights.yaml must never change"


def model_page(user: dict | None = OPS):
    at = app()
    if user is not None:
        at.user = user
    at.run()
    at.switch_page("app_pages/model.py")
    at.run()
    assert not at.exception, at.exception
    return at


def edit(at, key: str, rows: dict) -> None:
    """Edit cells of a st.data_editor the way STACK-NOTES describe (no set_value)."""
    at.session_state[key] = {"edited_rows": rows, "added_rows": [], "deleted_rows": []}
    at.run()
    assert not at.exception, at.exception


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def table(at, *columns: str):
    """The first dataframe on the page with these columns (pandas)."""
    for df in at.dataframe:
        value = df.value
        if all(c in value.columns for c in columns):
            return value
    raise AssertionError(f"no table with columns {columns}")


def test_edit_preview_publish_history_rollback(model_env):
    model, db = model_env
    original = model.read_bytes()
    at = model_page()
    assert [t.value for t in at.title] == ["Health model"]
    assert "published **version 1**" in texts(at)
    # raise the mid segment's at_risk threshold: accounts move into at risk
    tiers_row = {"All segments (default)": 0, "enterprise": 1, "mid": 2, "default": 3}["mid"]
    edit(at, "tiers_editor", {tiers_row: {"at_risk": 72.0, "watch": 75.0}})
    assert any("The draft is valid" in s.value for s in at.success)
    got = metrics(at)
    assert int(got["Accounts changing tier"]) > 0
    assert int(got["Into at risk"]) == int(got["Accounts changing tier"]) and got["Out of at risk"] == "0"
    body = texts(at)
    assert "+    tiers: { at_risk: 72, watch: 75 }" in body  # the diff of the draft
    assert "Tier migration — accounts" in body and "Back-test" in body
    compare = table(at, "figure", "published", "draft")
    assert list(compare.columns) == ["figure", "published", "draft"] and len(compare) > 5
    changes = table(at, "tier_published", "tier_draft")
    assert len(changes) == int(got["Accounts changing tier"]) and set(changes["segment"]) == {"mid"}

    # and a weight, through the weights editor
    edit(at, "weights_editor", {0: {"enterprise": 4.0}})  # row 0: active_users_trend
    assert "+      active_users_trend: 4" in texts(at)

    # publish needs a reason
    at.button(key="publish_submit").click().run()
    assert any("reason is required" in e.value for e in at.error)
    assert model.read_bytes() == original
    at.text_input(key="publish_reason").input("Mid-market churn shows up earlier than we flagged it")
    at.button(key="publish_submit").click().run()
    assert not at.exception
    assert any("Published version 2" in s.value for s in at.success)
    loaded = load_model(model)
    assert loaded.model.segments["mid"].tiers.at_risk == 72
    assert loaded.model.segments["enterprise"].weights["active_users_trend"] == 4
    # the app's book now scores with the new model (the cache follows the file's mtime)
    from ui.data import load_book

    assert load_book().model_hash == loaded.hash

    # the history shows it, with who and why
    hist = table(at, "version", "why")
    assert list(hist["version"]) == [2, 1]
    assert hist["why"][0] == "Mid-market churn shows up earlier than we flagged it"
    assert "olivia.novak@example.com" in hist["who"][0]
    assert hist["auc"][0] > 0.5  # back-test figures recorded at publish time
    assert "+      active_users_trend: 4" in "\n".join(c.value for c in at.code)

    # roll back to version 1: the exact bytes come back, as version 3
    at.selectbox(key="history_pick").select(1).run()
    at.text_input(key="rollback_reason").input("Too many false alarms in mid")
    at.button(key="rollback_submit").click().run()
    assert not at.exception
    assert any("version 3 restores the text of version 1" in s.value for s in at.success)
    assert model.read_bytes() == original
    assert [v.kind for v in mv.history(db, model)] == ["initial", "publish", "rollback"]
    assert list(table(at, "version", "why")["version"]) == [3, 2, 1]


def test_yaml_editor_validates_as_you_type(model_env):
    model, _ = model_env
    at = model_page()
    text = model.read_text()
    bad = text.replace("measure: trend", "measure: trnd").replace("  at_risk: 62", "  at_risk: 80")
    at.text_area(key="yaml_editor").input(bad).run()
    assert not at.exception
    errors = "\n".join(e.value for e in at.error)
    assert "The draft has 2 problem(s)" in errors
    shown = "\n".join(c.value for c in at.code)
    assert "weights.yaml:32: signals.active_users_trend.measure: 'trnd' is not allowed — did you mean 'trend'?" in shown
    assert "tiers must be ordered" in shown
    assert not at.get("metric")  # no preview of an invalid draft
    assert not [b for b in at.button if b.key == "publish_submit"]  # and nothing to publish
    assert model.read_text() == text
    # the form is locked while the YAML differs
    assert any("form is locked" in i.value for i in at.info)
    # a valid YAML edit previews like a form edit
    at.text_area(key="yaml_editor").input(text.replace("  at_risk: 62", "  at_risk: 40")).run()
    assert any("The draft is valid" in s.value for s in at.success)
    assert int(metrics(at)["Out of at risk"]) > 0


def test_stale_draft_is_refused_on_the_page(model_env):
    model, db = model_env
    at = model_page()
    edit(at, "weights_editor", {0: {"mid": 5.0}})
    # meanwhile another ops user publishes
    base = model.read_text()
    ops = load_roles(ROOT / "config" / "roles.yaml").user("olivia.novak@example.com")
    mv.publish(model, mv.edit_weights(base, [mv.SetTiers(None, watch=80)]), user=ops, reason="someone else",
               base_hash=model_hash(base), store=db)  # fmt: skip
    at.run()
    assert any("Your draft is stale" in w.value for w in at.warning)
    at.text_input(key="publish_reason").input("mine")
    at.button(key="publish_submit").click().run()
    assert any("This draft was started from version 1" in e.value and "someone else" in e.value for e in at.error)
    assert "watch: 80" in model.read_text() and "active_users_trend: 5" not in model.read_text()
    # start over from the published model
    at.button(key="rebase").click().run()
    assert not at.warning or not any("stale" in w.value for w in at.warning)
    assert at.session_state["model_base"]["number"] == 2


def test_non_ops_see_the_model_read_only(model_env):
    model, _ = model_env
    at = model_page(CSM)
    assert any("Read-only" in i.value and "Carlos Mendes (csm)" in i.value for i in at.info)
    assert not [d for d in at.dataframe if d.key == "weights_editor"]
    assert not [b for b in at.button if b.key in ("publish_submit", "rollback_submit")]
    assert at.text_area(key="yaml_editor").disabled
    hist = table(at, "version", "why")
    assert list(hist["version"]) == [1]


def test_local_user_is_read_only_unless_acting_as_ops(model_env):
    at = model_page(None)  # no sign-in: roles.yaml's local user (role `local`)
    assert any("Read-only" in i.value for i in at.info)
    assert not [d for d in at.dataframe if d.key == "weights_editor"]
    at.selectbox(key="act_as").select("olivia.novak@example.com").run()
    assert not any("Read-only" in i.value for i in at.info)
    assert [d for d in at.dataframe if d.key == "weights_editor"]


def test_suggested_weights_load_as_a_draft_and_nothing_is_published(model_env):
    model, db = model_env
    before = model.read_bytes()
    at = model_page()
    at.button(key="suggest_fit").click().run()
    assert not at.exception, at.exception
    fitted = table(at, "segment", "suggested AUC (cross-validated)")
    assert fitted is not None and set(fitted["segment"]) == {"enterprise", "mid", "default"}
    at.button(key="suggest_load").click().run()
    assert not at.exception, at.exception
    draft = at.text_area(key="yaml_editor").value
    assert draft != before.decode() and "# The health model" in draft  # comments kept
    assert "The draft is valid" in texts(at)
    assert model.read_bytes() == before  # a suggestion is only ever a draft
