"""Optional step of the scheduled run: write each account's health score and tier onto
its CRM account record (e.g. Salesforce Account.Health_Score__c / Health_Tier__c), so
the CRM's own reports and list views see them.

Idempotent per day: every write is recorded in the state database (`crm_score_writes`,
next to the runs and snapshots); a second run the same day writes only what failed. An
account whose score (rounded) and tier are the same as the last value written is not
written again (`unchanged`): the CRM already holds it, and API calls are spared. A day
older than one already written (a backfill with --as-of) writes nothing: it would
overwrite a newer score.

A CRM that is down, rate-limited or refusing the credentials stops the step at the first
such error (the remaining accounts are tried by the next run) instead of timing out 600
times. A refusal for one account (unknown id, a field the org lacks) is recorded with
its error and the step goes on.

This module is engine code: the writer is the port `health.crm.AccountHealthWriter`,
given by the composition root.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from health.alerts import AlertStore
from health.crm import AccountHealthWriter, CrmAuthError, CrmError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS crm_score_writes (
    as_of TEXT NOT NULL,
    account_id TEXT NOT NULL,
    crm_id TEXT,
    score REAL,
    tier TEXT,
    status TEXT NOT NULL,            -- written / unchanged / failed
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    written_at TEXT,
    PRIMARY KEY (as_of, account_id)
);
"""


@dataclass
class ScoreWriteReport:
    as_of: dt.date
    written: int = 0
    unchanged: int = 0
    already: int = 0
    no_crm_id: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    stopped: str | None = None
    left: int = 0
    stale: dt.date | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and self.stopped is None

    def __str__(self) -> str:
        if self.stale is not None:
            return f"crm scores: {self.as_of} is older than {self.stale}, already written: nothing written"
        parts = [f"{self.written} accounts written", f"{self.unchanged} unchanged", f"{self.already} already written today"]
        if self.no_crm_id:
            parts.append(f"{self.no_crm_id} without crm_id")
        if self.failed:
            parts.append(f"{len(self.failed)} failed (retried next run)")
        out = "crm scores: " + ", ".join(parts)
        if self.stopped:
            out += f"; stopped with {self.left} left (retried next run): {self.stopped}"
        for acc, err in self.failed[:5]:
            out += f"\n  failed: {acc}: {err}"
        return out


def _ensure(store: AlertStore) -> None:
    with store.tx() as con:
        con.execute(_SCHEMA.strip().rstrip(";"))


def push_scores(store: AlertStore, summary: pl.DataFrame, as_of: dt.date, writer: AccountHealthWriter) -> ScoreWriteReport:
    """Write today's score and tier of every account with a crm_id (see the module doc)."""
    _ensure(store)
    rep = ScoreWriteReport(as_of=as_of)
    day = as_of.isoformat()
    later = store.query("SELECT max(as_of) AS d FROM crm_score_writes WHERE status IN ('written', 'unchanged') AND as_of > ?", (day,))
    if later and later[0]["d"]:
        rep.stale = dt.date.fromisoformat(later[0]["d"])
        return rep
    done = {r["account_id"] for r in store.query(
        "SELECT account_id FROM crm_score_writes WHERE as_of = ? AND status IN ('written', 'unchanged')", (day,))}
    last = {
        r["account_id"]: (r["score"], r["tier"], r["crm_id"])
        for r in store.query(
            "SELECT w.account_id, w.score, w.tier, w.crm_id FROM crm_score_writes w JOIN ("
            " SELECT account_id, max(as_of) AS d FROM crm_score_writes WHERE status = 'written' GROUP BY account_id"
            ") m ON m.account_id = w.account_id AND m.d = w.as_of WHERE w.status = 'written'"
        )
    }
    cols = [c for c in ("account_id", "crm_id", "score", "tier") if c in summary.columns]
    if "crm_id" not in cols:
        rep.no_crm_id = summary.height
        return rep
    rows = summary.select(cols).iter_rows(named=True)
    todo = []
    for r in rows:
        if not r["crm_id"]:
            rep.no_crm_id += 1
        elif r["account_id"] in done:
            rep.already += 1
        else:
            todo.append(r)
    now = store.now().isoformat(timespec="seconds")
    for i, r in enumerate(todo):
        score = None if r["score"] is None else round(float(r["score"]))
        tier = r["tier"]
        acc, crm_id = r["account_id"], str(r["crm_id"])
        if last.get(acc) == (score, tier, crm_id):
            _record(store, day, acc, crm_id, score, tier, "unchanged", None, now)
            rep.unchanged += 1
            continue
        try:
            writer.update_account_health(crm_id, score, tier, as_of)
        except CrmError as exc:
            _record(store, day, acc, crm_id, score, tier, "failed", str(exc)[:1000], None)
            if exc.retryable or isinstance(exc, CrmAuthError):
                rep.stopped = str(exc)
                rep.left = len(todo) - i - 1
                break
            rep.failed.append((acc, str(exc)))
            continue
        _record(store, day, acc, crm_id, score, tier, "written", None, now)
        rep.written += 1
    return rep


def _record(store: AlertStore, day: str, acc: str, crm_id: str, score: float | None, tier: str | None, status: str,
            error: str | None, at: str | None) -> None:
    with store.tx() as con:
        con.execute(
            "INSERT INTO crm_score_writes (as_of, account_id, crm_id, score, tier, status, error, attempts, written_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?) ON CONFLICT (as_of, account_id) DO UPDATE SET crm_id = excluded.crm_id, "
            "score = excluded.score, tier = excluded.tier, status = excluded.status, error = excluded.error, "
            "attempts = crm_score_writes.attempts + 1, written_at = coalesce(excluded.written_at, crm_score_writes.written_at)",
            (day, acc, crm_id, score, tier, status, error, at),
        )


def score_writes(store: AlertStore, as_of: dt.date | None = None) -> pl.DataFrame:
    """The recorded writes (one row per account and day)."""
    _ensure(store)
    sql = "SELECT * FROM crm_score_writes" + (" WHERE as_of = ?" if as_of else "") + " ORDER BY as_of, account_id"
    rows = store.query(sql, (as_of.isoformat(),) if as_of else ())
    schema = {"as_of": pl.String, "account_id": pl.String, "crm_id": pl.String, "score": pl.Float64, "tier": pl.String,
              "status": pl.String, "error": pl.String, "attempts": pl.Int64, "written_at": pl.String}
    return pl.DataFrame([dict(r) for r in rows], schema=schema, orient="row")


__all__ = ["ScoreWriteReport", "push_scores", "score_writes"]
