"""`python -m health ...`: the command line for ops and scheduled jobs.

This module is a composition root (like `app.py`): it may wire `sources/` into the
engine. Each command prints a short report and returns an exit code; bad configuration
is reported in one paragraph, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SourceConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
