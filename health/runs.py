"""The scheduled run (`python -m health run`): score, store the day's snapshot, evaluate
the alerts, send them, sync the action outbox — one summary line per step, and an exit
code (0 every step ok, 1 some step failed; 2, bad configuration, is the command line's).

Idempotent per as-of day: the snapshot is written once per (account, day), the alert rules
are evaluated once per day (persistence counts the stored runs), every delivery is sent
once; a second run the same day only retries what failed (a channel that was down) and
syncs what waits. A failing step does not stop the next ones: a channel down does not
stop the outbox sync, scoring failing still lets yesterday's failed deliveries go out.

This module is engine code: it takes the ports (notifiers, the sync step) from the
composition root (`health/cli.py`), never imports `sources/`.

    report = scheduled_run(tables, loaded_model, alerts, store, roles=roles,
                           notifiers=notifiers, not_configured=missing, sync=sync_step)
    print(report); sys.exit(report.code)
"""

from __future__ import annotations

import datetime as dt
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import polars as pl

from health.alerts import AlertStore, LoadedAlerts, deliver, evaluate
from health.notify import Notifier


@dataclass
class Step:
    name: str
    ok: bool
    line: str


@dataclass
class RunReport:
    as_of: dt.date | None = None
    steps: list[Step] = field(default_factory=list)
    summary: pl.DataFrame | None = None

    def add(self, name: str, ok: bool, line: str) -> None:
        self.steps.append(Step(name, ok, line))

    @property
    def code(self) -> int:
        return 0 if all(s.ok for s in self.steps) else 1

    def __str__(self) -> str:
        out = []
        for s in self.steps:
            line = s.line if s.line.startswith(f"{s.name}:") else f"{s.name}: {s.line}"
            out.append(line if s.ok else line.replace(f"{s.name}:", f"{s.name}: FAILED —", 1))
        failed = [s.name for s in self.steps if not s.ok]
        out.append(f"run {self.as_of}: " + ("ok" if not failed else f"{len(failed)} step(s) failed: {', '.join(failed)}"))
        return "\n".join(out)


def _error(exc: BaseException) -> str:
    msg = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def score_summary(tables: Mapping[str, Any], model: Any, as_of: dt.date) -> pl.DataFrame:
    """Today's summary row per account (score, tier, trajectory, drivers, ...)."""
    from health.scoring import score_history
    from health.trajectory import summarize

    weeks = max(12, model.trajectory.weeks)
    history = score_history(tables, model, as_of, weeks=weeks)
    return summarize(history, model, as_of)


def scheduled_run(
    tables: Mapping[str, Any],
    loaded_model: Any,
    alerts: LoadedAlerts,
    store: AlertStore,
    *,
    roles: Any | None = None,
    notifiers: Mapping[str, Notifier] | None = None,
    not_configured: Mapping[str, str] | None = None,
    sync: Callable[[], tuple[bool, str]] | None = None,
    as_of: dt.date | None = None,
    source: str | None = None,
    send: bool = True,
    environ: Mapping[str, str] | None = None,
    load_step: tuple[bool, str] | None = None,
    crm_scores: Callable[[AlertStore, pl.DataFrame, dt.date], tuple[bool, str]] | None = None,
) -> RunReport:
    """Run every step; never raises for a step's failure (it is reported). `loaded_model`:
    a `health.model_loader.LoadedModel` (its hash goes with the snapshot). `sync`: the
    outbox step, returning (ok, summary line); None skips it. `send=False` records the
    alerts but sends nothing: the day's new deliveries are marked `skipped` (a backfill
    of past days for the back-test, or a first run that should not flood anyone).
    `load_step`: (ok, line) of the caller's source loading, reported first. `crm_scores`:
    the optional step writing each account's score and tier to the CRM (health.crm_scores),
    given the store, the day's summary and the day; None skips it."""
    from health.scoring import default_as_of

    report = RunReport()
    if load_step is not None:
        report.add("load", *load_step)
    model = loaded_model.model
    summary: pl.DataFrame | None = None
    try:
        day = as_of or default_as_of(tables)
        report.as_of = day
        summary = score_summary(tables, model, day)
        tiers = summary["tier"].value_counts(sort=True) if summary.height else None
        counts = ", ".join(f"{t} {n}" for t, n in tiers.iter_rows()) if tiers is not None else "no active accounts"
        report.add("score", True, f"{summary.height} accounts as of {day} ({counts}; model {loaded_model.hash}"
                   + (f", source {source})" if source else ")"))
        report.summary = summary
    except Exception as exc:  # noqa: BLE001 - reported as a failed step
        report.add("score", False, _error(exc))
        traceback.print_exc()

    if summary is not None and report.as_of is not None:
        day = report.as_of
        try:
            first = store.start_run(day, loaded_model.hash, source)
            written = store.store_snapshot(summary, day, loaded_model.hash)
            if first or written:
                report.add("snapshot", True, f"stored {written} rows for {day} in {store.path}")
            else:
                run = store.run(day) or {}
                note = "" if run.get("model_hash") == loaded_model.hash else f" (kept the one of model {run.get('model_hash')})"
                report.add("snapshot", True, f"{day} already stored (run {run.get('run_count')} today): nothing written{note}")
        except Exception as exc:  # noqa: BLE001
            report.add("snapshot", False, _error(exc))
        try:
            ev = evaluate(summary, model, alerts, store, day, roles, environ=environ)
            line = str(ev)
            if not send and ev.alert_ids:
                n = store.skip_deliveries(ev.alert_ids, "not sent: recorded by a --no-send run")
                line += f"; {n} deliveries recorded as skipped (--no-send)"
            report.add("alerts", True, line)
        except Exception as exc:  # noqa: BLE001
            report.add("alerts", False, _error(exc))
            traceback.print_exc()

    if send:
        try:
            rep = deliver(store, alerts, notifiers or {}, not_configured)
            report.add("send", rep.ok, str(rep))
        except Exception as exc:  # noqa: BLE001
            report.add("send", False, _error(exc))
            traceback.print_exc()
    else:
        report.add("send", True, "send: skipped (--no-send); earlier failed or pending deliveries wait for the next run")

    if crm_scores is not None and summary is not None and report.as_of is not None:
        try:
            ok, line = crm_scores(store, summary, report.as_of)
            report.add("crm scores", ok, line)
        except Exception as exc:  # noqa: BLE001
            report.add("crm scores", False, _error(exc))

    if sync is not None:
        try:
            ok, line = sync()
            report.add("sync", ok, line)
        except Exception as exc:  # noqa: BLE001
            report.add("sync", False, _error(exc))
    if report.as_of is not None:
        try:
            store.record_report(report.as_of, report.code, str(report))
        except Exception:  # noqa: BLE001 - the report is printed anyway
            pass
    return report


__all__ = ["RunReport", "Step", "scheduled_run", "score_summary"]
