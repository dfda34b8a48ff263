"""The scheduled run on the sample book: snapshot once per day, alerts once per day, a
failing step does not stop the others — and the real `python -m health run` command
(subprocess) against loopback Slack / Teams webhooks and a local SMTP server: a channel
down fails the run (exit 1) and is retried by the next one; a second run the same day
sends nothing twice."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from health.alerts import AlertStore, alert_history, load_alerts
from health.cli import main
from health.model_loader import load_model
from health.notify import MemoryNotifier
from health.roles import load_roles
from health.runs import scheduled_run
from tests.sources.webhook_stub import WebhookStub, free_port

ROOT = Path(__file__).resolve().parents[2]
AS_OF = dt.date(2026, 11, 23)


@pytest.fixture(scope="module")
def book():
    from sources.config import build_active_source

    return build_active_source(ROOT / "config" / "sources.yaml", "sample").load().tables


@pytest.fixture(scope="module")
def loaded():
    return load_model(ROOT / "weights.yaml")


def test_run_snapshots_once_a_day_and_sends_nothing_twice(tmp_path, book, loaded):
    alerts = load_alerts(ROOT / "config" / "alerts.yaml", loaded.model)
    roles = load_roles(ROOT / "config" / "roles.yaml")
    store = AlertStore(tmp_path / "state.db")
    notifiers = {"email": MemoryNotifier("email"), "cs_slack": MemoryNotifier("cs_slack"), "lead": MemoryNotifier("lead")}
    calls = []

    def sync_step():
        calls.append(1)
        return True, "sync: nothing to sync"

    r1 = scheduled_run(book, loaded, alerts, store, roles=roles, notifiers=notifiers,
                       not_configured={"leadership_teams": "no URL"}, sync=sync_step, as_of=AS_OF, source="sample")
    assert r1.code == 0, str(r1)
    names = [s.name for s in r1.steps]
    assert names == ["score", "snapshot", "alerts", "send", "sync"]  # (the command line adds "load" first)
    snaps = store.snapshots()
    assert snaps.height == r1.summary.height > 400
    assert set(snaps["model_hash"]) == {loaded.hash} and set(snaps["as_of"]) == {AS_OF}
    sent = sum(len(n.sent) for n in notifiers.values())
    assert sent > 0
    assert "waiting for channel leadership_teams (no URL)" in str(r1)

    r2 = scheduled_run(book, loaded, alerts, store, roles=roles, notifiers=notifiers,
                       not_configured={"leadership_teams": "no URL"}, sync=sync_step, as_of=AS_OF, source="sample")
    assert r2.code == 0
    text = str(r2)
    assert "snapshot: 2026-11-23 already stored (run 2 today): nothing written" in text
    assert "alerts: already evaluated for 2026-11-23" in text
    assert "send: 0 messages sent" in text
    assert sum(len(n.sent) for n in notifiers.values()) == sent
    assert store.snapshots().height == snaps.height and len(calls) == 2
    run = store.runs().row(0, named=True)
    assert run["run_count"] == 2 and run["last_code"] == 0 and "alerts: already evaluated" in run["last_report"]


def test_a_failing_step_is_reported_and_the_others_still_run(tmp_path, book, loaded):
    alerts = load_alerts(ROOT / "config" / "alerts.yaml", loaded.model)
    store = AlertStore(tmp_path / "state.db")

    def broken_sync():
        raise ConnectionError("CRM down")

    rep = scheduled_run(book, loaded, alerts, store, notifiers={}, sync=broken_sync, as_of=AS_OF)
    assert rep.code == 1
    assert [s.ok for s in rep.steps] == [True, True, True, True, False]
    assert "sync: FAILED — ConnectionError: CRM down" in str(rep) and "1 step(s) failed: sync" in str(rep)


def test_check_config_says_which_channels_are_ready(capsys, monkeypatch):
    monkeypatch.setenv("CHI_SLACK_WEBHOOK_URL", "https://hooks.example.com/services/T/B/secretvalue")
    monkeypatch.delenv("CHI_TEAMS_WEBHOOK_URL", raising=False)
    cfg = ROOT / "config"
    assert main(["run", "--check-config", "--secrets", "/nonexistent/secrets.toml", "--alerts", str(cfg / "alerts.yaml"),
                 "--model", str(ROOT / "weights.yaml"), "--crm", str(cfg / "crm.yaml"), "--roles", str(cfg / "roles.yaml")]) == 0
    out = capsys.readouterr().out
    assert "alerts.yaml: OK — 5 rules" in out and "cs_slack (ready)" in out
    assert "leadership_teams (no webhook URL: set [alert_webhooks] leadership_teams in secrets.toml or $CHI_TEAMS_WEBHOOK_URL)" in out
    assert "secretvalue" not in out


def test_bad_alert_config_exits_2_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "alerts.yaml"
    bad.write_text("channels:\n  email: { kind: email }\nrules:\n  r:\n    condition: \"scor < 40\"\n", encoding="utf-8")
    assert main(["run", "--alerts", str(bad), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5: rules.r.condition: unknown column 'scor'" in err and "did you mean 'score'" in err


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802, ANN001, ANN201 - aiosmtpd's hook
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def test_the_real_command_twice_a_day_sends_once_and_retries_a_channel_that_was_down(tmp_path):
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    hook = WebhookStub().start()
    try:
        crm = tmp_path / "crm.yaml"
        crm.write_text(
            f"crm: none\nsmtp:\n  enabled: true\n  host: 127.0.0.1\n  port: {smtp.port}\n  starttls: false\n"
            "  sender: CHI <chi@example.com>\n",
            encoding="utf-8",
        )
        slack, teams = "/slack/T1/B1/secretslack", "/teams/secretteams"
        hook.status[teams] = 500
        env = {
            **os.environ,
            "CHI_STATE_DB": str(tmp_path / "state.db"),
            "CHI_SLACK_WEBHOOK_URL": hook.url(slack),
            "CHI_TEAMS_WEBHOOK_URL": hook.url(teams),
            "CHI_BASE_URL": "https://chi.example.com",
            "PYTHONPATH": str(ROOT),
        }
        cmd = [sys.executable, "-m", "health", "run", "--as-of", AS_OF.isoformat(), "--crm", str(crm),
               "--secrets", str(tmp_path / "none.toml"), "--source", "sample"]

        def run() -> subprocess.CompletedProcess:
            return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

        first = run()
        assert first.returncode == 1, first.stdout + first.stderr
        assert first.stdout.startswith("load: source sample: accounts 600")
        assert "failed (kept, retried next run)" in first.stdout and "HTTP 500" in first.stdout
        assert "secretteams" not in first.stdout + first.stderr and "secretslack" not in first.stdout + first.stderr
        mails, slack_posts, teams_posts = len(inbox.messages), len(hook.received(slack)), len(hook.received(teams))
        assert mails > 0 and slack_posts > 0 and teams_posts > 0
        post = hook.received(slack)[0]["json"]
        assert "https://chi.example.com/account?account=ACC-" in post["blocks"][1]["text"]["text"]
        rcpts = {r for to, _ in inbox.messages for r in to}
        assert "maria.garcia@example.com" in rcpts  # a manager, by digest
        maria = [raw for to, raw in inbox.messages if to == ["maria.garcia@example.com"]]
        assert len(maria) == 1 and b"digest" in maria[0]

        hook.status[teams] = 200  # the channel is back
        second = run()
        assert second.returncode == 0, second.stdout + second.stderr
        assert "alerts: already evaluated for 2026-11-23" in second.stdout
        assert len(inbox.messages) == mails and len(hook.received(slack)) == slack_posts
        assert len(hook.received(teams)) == 2 * teams_posts  # only the failed ones, once more

        third = run()
        assert third.returncode == 0
        assert "send: 0 messages sent" in third.stdout
        assert (len(inbox.messages), len(hook.received(slack)), len(hook.received(teams))) == (mails, slack_posts, 2 * teams_posts)

        db = (tmp_path / "state.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("state.db-*"))
        assert b"secretslack" not in db and b"secretteams" not in db  # webhook URLs are never stored
        store = AlertStore(tmp_path / "state.db")
        hist = alert_history(store)
        assert set(hist["status"].drop_nulls()) == {"delivered"}
        assert store.snapshots()["as_of"].unique().to_list() == [AS_OF]
    finally:
        hook.stop()
        smtp.stop()


def test_a_no_send_backfill_records_alerts_for_persistence_and_precision_but_never_sends_them(tmp_path, book, loaded):
    alerts = load_alerts(ROOT / "config" / "alerts.yaml", loaded.model)
    roles = load_roles(ROOT / "config" / "roles.yaml")
    store = AlertStore(tmp_path / "state.db")
    email = MemoryNotifier("email")
    back = scheduled_run(book, loaded, alerts, store, roles=roles, notifiers={"email": email}, as_of=AS_OF, send=False)
    assert back.code == 0 and "recorded as skipped (--no-send)" in str(back)
    assert not email.sent
    skipped = alert_history(store)
    assert skipped.height > 0 and set(skipped["status"]) == {"skipped"}
    nxt = scheduled_run(book, loaded, alerts, store, roles=roles, notifiers={"email": email}, as_of=AS_OF + dt.timedelta(days=7))
    assert nxt.code == 0
    # tier_entered needs 2 consecutive runs: the backfilled day counts towards it
    assert "entered_at_risk" in str(nxt)
    sent_ids = {i.alert_id for n in email.sent for i in n.items}
    assert sent_ids and not sent_ids & set(skipped["alert_id"])
