"""`python -m health ...`: the command line for ops and scheduled jobs.

This module is a composition root (like `app.py`): it may wire `sources/` into the
engine. Each command prints a short report and returns an exit code; bad configuration
is reported in one paragraph, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

from health.model_loader import ModelError
from sources.base import SourceConfigError


def _cmd_sample(args: argparse.Namespace) -> int:
    from sources import sample

    out = sample.ensure_sample(Path(args.out), n_accounts=args.accounts, seed=args.seed, force=args.force)
    print(f"sample book ready in {out}")
    return 0


def _cmd_sources_check(args: argparse.Namespace) -> int:
    from sources.check import run_check

    report, code = run_check(Path(args.config), source_name=args.source)
    print(report)
    return code


def _cmd_validate(args: argparse.Namespace) -> int:
    from health.model_loader import ModelError, load_model

    try:
        loaded = load_model(args.file)
    except ModelError as exc:
        for issue in exc.issues:
            print(issue)
        errors = [i for i in exc.issues if i.severity == "error"]
        print(f"{len(errors)} error(s) in {args.file}")
        return 1
    for warning in loaded.warnings:
        print(warning)
    model = loaded.model
    print(
        f"{args.file}: OK — {len(model.signals)} signals, {len(model.segments)} segments, "
        f"{len(model.rules)} rules (model {loaded.hash})"
    )
    return 0


def _load_for_scoring(args: argparse.Namespace):  # noqa: ANN202 - a tuple of engine objects
    from health.model_loader import load_model
    from sources.config import build_active_source

    loaded = load_model(args.model)
    result = build_active_source(Path(args.config), args.source).load()
    for problem in result.errors:
        print(problem, file=sys.stderr)
    if "accounts" not in result.tables:
        raise SourceConfigError(
            f"source {result.source!r} has no usable accounts table; run `python -m health sources check`."
        )
    return loaded, result


def _pushed_down(args: argparse.Namespace, stack: ExitStack):  # noqa: ANN202 - (loaded, result, provider)
    """For a SQL source that pushes down (`pushdown: auto|on` in sources.yaml): load every
    table but usage, and roll usage up in the database instead; else a plain load."""
    from health.model_loader import load_model
    from sources.config import build_active_source

    source = build_active_source(Path(args.config), args.source)
    if not (hasattr(source, "pushes_down") and source.pushes_down()):
        return (*_load_for_scoring(args), None)
    loaded = load_model(args.model)
    result = source.load(skip=("usage",))
    for problem in result.errors:
        print(problem, file=sys.stderr)
    if "accounts" not in result.tables:
        raise SourceConfigError(
            f"source {result.source!r} has no usable accounts table; run `python -m health sources check`."
        )
    conn = stack.enter_context(source.engine().connect())
    print(f"usage is rolled up in the database ({source.dialect()}); the rest is scored here", file=sys.stderr)
    return loaded, result, source.rollup_provider(conn, tables=("usage",))


def _cmd_score(args: argparse.Namespace) -> int:
    import datetime as dt

    import polars as pl

    from health.scoring import default_as_of, score_history
    from health.trajectory import summarize

    if args.out and Path(args.out).suffix not in (".csv", ".parquet"):
        raise SourceConfigError(f"--out must end in .csv or .parquet, got {Path(args.out).name!r}")
    with ExitStack() as stack:
        loaded, result, provider = _pushed_down(args, stack)
        as_of = dt.date.fromisoformat(args.as_of) if args.as_of else default_as_of(result.tables)
        weeks = args.history or 12
        history = score_history(result.tables, loaded.model, as_of, weeks=weeks, rollup_provider=provider)
    frame = history if args.history else summarize(history, loaded.model, as_of).drop("spark")
    frame = frame.with_columns(pl.lit(loaded.hash).alias("model_version"))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".parquet":
            frame.write_parquet(out)
        else:
            frame.write_csv(out)
        print(f"wrote {frame.height} rows to {out}")
    else:
        cols = ["account_id", "as_of", "score", "tier", "health_segment", "coverage", "rule"]
        if "drivers" in frame.columns:
            cols.append("drivers")
        with pl.Config(tbl_rows=20, tbl_width_chars=160, fmt_str_lengths=60):
            print(frame.sort("score", nulls_last=True).select(cols).head(20))
    tiers = frame.filter(pl.col("as_of") == as_of)["tier"].value_counts(sort=True)
    print(
        f"as of {as_of}: "
        + ", ".join(f"{t} {n}" for t, n in tiers.iter_rows())
        + f" (model {loaded.hash}, source {result.source})"
    )
    return 0


def _cmd_backtest(args: argparse.Namespace) -> int:
    """Score every past renewal `--lead-days` before it and compare with its outcome."""
    import json

    import polars as pl

    from health.backtest import BacktestError, format_report, run_backtest

    try:
        loaded, result = _load_for_scoring(args)
        history = None
        if args.account_history:
            path = Path(args.account_history)
            try:
                history = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, try_parse_dates=True)
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise BacktestError(f"cannot read the account history {path}: {str(exc).splitlines()[0]}") from None
        backtest = run_backtest(
            result.tables,
            loaded.model,
            lead_days=args.lead_days,
            downgrade=args.downgrade,
            account_history=history,
            snap=args.snap,
            model_version=loaded.hash,
        )
    except (ModelError, SourceConfigError, BacktestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_report(backtest))
    _print_alert_precision(result.tables.get("outcomes"))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(backtest.to_dict(), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    return 0


def _print_alert_precision(outcomes) -> None:  # noqa: ANN001 - a Polars frame or None
    """Alerts stored by `python -m health run`: did they come before churned renewals
    or renewed ones? Silent when no alerts have been stored yet."""
    from health.alerts import AlertStore, alert_precision, alerts_frame
    from health.yaml_config import ConfigError
    from sources.writeback import load_crm_config, store_path

    try:
        path = store_path(load_crm_config())
    except (ConfigError, OSError):
        return
    if outcomes is None or not path.exists():
        return
    alerts = alerts_frame(AlertStore(path))
    if alerts.is_empty():
        return
    import polars as pl

    table = alert_precision(alerts, outcomes)
    if table.is_empty():
        print(
            "\nAlert precision: no past renewal falls within the days alerts have run. Backfill past "
            "days with `python -m health run --no-send --as-of YYYY-MM-DD` to judge the alert rules."
        )
        return
    print("\nAlerts stored by `python -m health run` — before bad renewals vs the others (180 days before):")
    with pl.Config(tbl_width_chars=140, float_precision=2, tbl_hide_dataframe_shape=True):
        print(table)


def _cmd_sync(args: argparse.Namespace) -> int:
    """Push waiting / failed actions to the CRM (config/crm.yaml; secrets from
    .streamlit/secrets.toml or the environment). Exit 1 when some failed (they are kept
    and retried later), 2 on bad configuration."""
    from health.actions import sync
    from health.yaml_config import ConfigError
    from sources.writeback import build_mailer, build_sink, file_secrets, load_crm_config, open_store

    try:
        cfg = load_crm_config(args.crm)
        if args.check_config:
            from health.model_loader import load_model
            from health.playbooks import load_playbooks
            from health.roles import load_roles

            roles = load_roles(args.roles)
            pb = load_playbooks(args.playbooks, load_model(args.model).model, roles=list(roles.spec.roles))
            print(f"{args.crm}, {args.roles}, {args.playbooks}: OK — {len(pb.plays)} plays, "
                  f"{len(roles.spec.users)} users, crm: {cfg.crm}")
            return 0
        secrets = file_secrets(args.secrets)
        store = open_store(cfg)
        sink = build_sink(cfg, secrets)
        mailer = build_mailer(cfg, secrets)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        print(f"error: {str(exc).splitlines()[0].rstrip(':')}", file=sys.stderr)
        return 2
    report = sync(store, sink, mailer, force=args.force, limit=args.limit)
    print(report)
    counts = store.status_counts()
    print(", ".join(f"{k} {v}" for k, v in counts.items()) + f" (store {store.path}, crm {sink!r})")
    return 1 if report.failed else 0


def _cmd_run(args: argparse.Namespace) -> int:
    """The scheduled run (cron it daily): score, store the day's snapshot, evaluate and send
    the alerts (config/alerts.yaml), sync the action outbox. Exit 0 ok, 1 some step failed
    (kept and retried by the next run), 2 bad configuration. See docs/alerts.md."""
    import datetime as dt

    from health.actions import sync
    from health.alerts import AlertStore, load_alerts
    from health.model_loader import load_model
    from health.roles import load_roles
    from health.runs import scheduled_run
    from health.yaml_config import ConfigError
    from sources.webhooks import build_notifiers
    from sources.writeback import build_mailer, build_sink, file_secrets, load_crm_config, open_store, store_path

    try:
        as_of = dt.date.fromisoformat(args.as_of) if args.as_of else None
    except ValueError:
        print(f"error: --as-of must be a date YYYY-MM-DD, got {args.as_of!r}", file=sys.stderr)
        return 2
    try:
        loaded = load_model(args.model)
        cfg = load_crm_config(args.crm)
        roles = load_roles(args.roles) if Path(args.roles).exists() else None
        alerts = load_alerts(args.alerts, loaded.model)
        secrets = file_secrets(args.secrets)
        notifiers, missing = build_notifiers(alerts, secrets, cfg)
        if args.check_config:
            print(f"{args.alerts}: OK — {len(alerts.rules)} rules, channels: "
                  + ", ".join(f"{n} ({'ready' if n in notifiers else missing.get(n)})" for n in alerts.spec.channels))
            return 0
        actions = open_store(cfg)
        sink = build_sink(cfg, secrets)
        mailer = build_mailer(cfg, secrets)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        print(f"error: {str(exc).splitlines()[0].rstrip(':')}", file=sys.stderr)
        return 2
    _, result = _load_for_scoring(args)
    sizes = ", ".join(f"{t} {df.height}" if hasattr(df, "height") else t for t, df in result.tables.items())
    rejected = sum(df.height for df in result.rejected.values())
    load_line = f"load: source {result.source}: {sizes}" + (
        f"; {rejected} rows rejected, {len(result.errors)} problems (listed on stderr; good rows kept)" if rejected or result.errors else ""
    )

    def sync_step() -> tuple[bool, str]:
        rep = sync(actions, sink, mailer, limit=args.limit)
        return not rep.failed, f"sync: {rep}"

    report = scheduled_run(
        result.tables, loaded, alerts, AlertStore(store_path(cfg)), roles=roles, notifiers=notifiers,
        not_configured=missing, sync=None if args.no_sync else sync_step, as_of=as_of, source=result.source,
        send=not args.no_send, load_step=(True, load_line),
        crm_scores=_crm_scores_step(cfg, sink) if not args.no_sync else None,
    )
    print(report)
    return report.code


def _crm_scores_step(cfg, sink):  # noqa: ANN001, ANN202 - the optional score write-back (health/crm_scores.py)
    from health.crm_scores import push_scores
    from sources.writeback import score_writer

    writer = score_writer(cfg, sink)
    if writer is None:
        return None

    def step(store, summary, day):  # noqa: ANN001, ANN202
        rep = push_scores(store, summary, day, writer)
        return rep.ok, str(rep)

    return step


def _cmd_suggest(args: argparse.Namespace) -> int:
    from health.backtest import run_backtest
    from health.suggest import suggest_weights

    loaded, result = _load_for_scoring(args)
    bt = run_backtest(result.tables, loaded.model, lead_days=args.lead_days, snap="week", resamples=100)
    suggestion = suggest_weights(loaded.text, loaded.model, bt)
    import polars as pl

    with pl.Config(tbl_width_chars=140, fmt_str_lengths=70, float_precision=3):
        print(suggestion.table())
    for fit in suggestion.fits:
        used = {s: w for s, w in fit.weights.items() if w}
        print(f"{fit.segment}: " + ", ".join(f"{s} {w:g}" for s, w in used.items()))
    if args.out:
        Path(args.out).write_text(suggestion.text, encoding="utf-8")
        print(f"wrote the draft to {args.out}; compare: python -m health backtest --model {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m health", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="generate the sample book if it is missing")
    p.add_argument("--accounts", type=int, default=600)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default="data/sample")
    p.add_argument("--force", action="store_true", help="regenerate even if present")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("sources", help="inspect the configured data sources")
    ssub = p.add_subparsers(dest="sources_command", required=True)
    c = ssub.add_parser("check", help="load the active source, validate it, print a per-table report")
    c.add_argument("--config", default="config/sources.yaml")
    c.add_argument("--source", default=None, help="check this source instead of the active one")
    c.set_defaults(func=_cmd_sources_check)

    p = sub.add_parser("validate", help="check a health model file; every problem at once")
    p.add_argument("file", nargs="?", default="weights.yaml")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("score", help="score the active source (today, a past date, or weekly history)")
    p.add_argument("--as-of", default=None, help="YYYY-MM-DD (default: the data's latest day)")
    p.add_argument("--out", default=None, help="write to FILE.csv or FILE.parquet")
    p.add_argument("--history", type=int, default=None, metavar="WEEKS", help="write weekly scores over WEEKS weeks")
    p.add_argument("--model", default="weights.yaml")
    p.add_argument("--config", default="config/sources.yaml")
    p.add_argument("--source", default=None)
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("backtest", help="check the model against past renewals: AUC, lift, recall, calibration")
    p.add_argument("--model", default="weights.yaml")
    p.add_argument("--lead-days", type=int, default=90, help="score each renewal this many days before it")
    p.add_argument("--downgrade", action="store_true", help="count a downgrade as a bad outcome, like a churn")
    p.add_argument("--snap", choices=("auto", "day", "week"), default="auto",
                   help="as-of dates exact (day) or on the weekly grid (week); auto: weekly only for big books")
    p.add_argument("--account-history", default=None, metavar="FILE",
                   help="dated account attributes (account_id, valid_from, valid_to, ...) as CSV or Parquet")
    p.add_argument("--source", default=None)
    p.add_argument("--config", default="config/sources.yaml")
    p.add_argument("--out", default=None, metavar="FILE.json", help="also write the figures and per-renewal rows as JSON")
    p.set_defaults(func=_cmd_backtest)

    p = sub.add_parser("sync", help="push waiting and failed actions to the CRM (retries with back-off)")
    p.add_argument("--force", action="store_true", help="ignore the back-off: retry every failed action now")
    p.add_argument("--limit", type=int, default=200, help="at most this many actions per run")
    p.add_argument("--crm", default="config/crm.yaml")
    p.add_argument("--secrets", default=".streamlit/secrets.toml", help="[salesforce] / [smtp] credentials")
    p.add_argument("--check-config", action="store_true", help="only validate crm.yaml, roles.yaml and playbooks.yaml")
    p.add_argument("--roles", default="config/roles.yaml")
    p.add_argument("--playbooks", default="config/playbooks.yaml")
    p.add_argument("--model", default="weights.yaml")
    p.set_defaults(func=_cmd_sync)

    p = sub.add_parser("run", help="the scheduled run: score, snapshot, alerts, send, sync (idempotent per day)")
    p.add_argument("--as-of", default=None, help="YYYY-MM-DD (default: the data's latest day)")
    p.add_argument("--alerts", default="config/alerts.yaml")
    p.add_argument("--check-config", action="store_true", help="only validate alerts.yaml (and say which channels are ready)")
    p.add_argument("--no-send", action="store_true", help="record the alerts, send none of them (a backfill, a quiet first run)")
    p.add_argument("--no-sync", action="store_true", help="leave the action outbox alone")
    p.add_argument("--limit", type=int, default=200, help="at most this many actions synced")
    p.add_argument("--model", default="weights.yaml")
    p.add_argument("--config", default="config/sources.yaml")
    p.add_argument("--source", default=None)
    p.add_argument("--crm", default="config/crm.yaml")
    p.add_argument("--roles", default="config/roles.yaml")
    p.add_argument("--secrets", default=".streamlit/secrets.toml", help="[alert_webhooks], [smtp], [salesforce]")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser(
        "suggest-weights", help="fit per-segment weights from past renewals (a draft; never published automatically)"
    )
    p.add_argument("--lead-days", type=int, default=90)
    p.add_argument("--out", default=None, help="write the draft model to this file")
    p.add_argument("--model", default="weights.yaml")
    p.add_argument("--config", default="config/sources.yaml")
    p.add_argument("--source", default=None)
    p.set_defaults(func=_cmd_suggest)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SourceConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
