"""Features in Polars vs the windowed roll-ups pushed down to DuckDB.

    python bench/pushdown_bench.py                        # 100k accounts x 52 weeks
    python bench/pushdown_bench.py --accounts 10000 --weeks 26

The book is the generated sample in data/bench-<n>/ (Parquet; made if missing). Each
variant runs in a fresh Python process (its own peak RSS) and computes every signal of
weights.yaml for every account at each weekly as-of date:

* polars:   `compute_features` over `pl.scan_parquet` tables (roll-ups on the streaming engine);
* pushdown: the same call with `rollup_provider=` and `state_provider=` over DuckDB: DuckDB
            reads usage / tickets / invoices / surveys / touchpoints .parquet itself (views
            over `read_parquet`) and returns only (account, week, aggregates); Polars reads
            only accounts and outcomes.

Both write their features to bench/out/; the last line says how far apart they are (the
largest difference over every signal, relative to max(1, |value|)).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"
TABLES = ("accounts", "usage", "tickets", "invoices", "surveys", "touchpoints", "milestones", "outcomes")


def _measure(folder: str, weeks: int, variant: str) -> dict:
    """Runs inside the child process."""
    import polars as pl

    from health.features import compute_features
    from health.model_loader import load_model

    model = load_model(ROOT / "weights.yaml").model
    folder_p = Path(folder)
    end = dt.date.fromisoformat(json.loads((folder_p / "manifest.json").read_text())["end_date"])
    as_of = [end - dt.timedelta(days=7 * i) for i in range(weeks)]
    tables = {t: pl.scan_parquet(folder_p / f"{t}.parquet") for t in TABLES if (folder_p / f"{t}.parquet").exists()}
    sql_s = 0.0
    t0 = time.perf_counter()
    if variant == "polars":
        out = compute_features(tables, model, as_of, stream_rollups=True).collect()
    else:
        import duckdb

        from health.pushdown import duckdb_runner, provider, state_provider

        con = duckdb.connect()
        for t in ("usage", "tickets", "invoices", "surveys", "touchpoints"):
            path = str(folder_p / f"{t}.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{path}')")
        run = duckdb_runner(con)

        def timed(r):  # noqa: ANN001, ANN202
            nonlocal sql_s
            s = time.perf_counter()
            df = run(r)
            sql_s += time.perf_counter() - s
            return df

        # Polars reads only accounts (and outcomes); every roll-up runs in DuckDB.
        pushed = {t: v for t, v in tables.items() if t in ("accounts", "outcomes")}
        out = compute_features(pushed, model, as_of, rollup_provider=provider(timed),
                               state_provider=state_provider(timed)).collect()
    wall = time.perf_counter() - t0
    OUT.mkdir(parents=True, exist_ok=True)
    out.sort("account_id", "as_of").write_parquet(OUT / f"pushdown-{variant}.parquet")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": round(wall, 2),
        "sql_s": round(sql_s, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 1024 / 1024, 2),
        "rows": out.height,
    }


def _child(folder: Path, weeks: int, variant: str) -> dict:
    code = (
        "import json,sys; sys.path.insert(0, %r); from bench.pushdown_bench import _measure; "
        "print(json.dumps(_measure(%r, %d, %r)))" % (str(ROOT), str(folder), weeks, variant)
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _largest_difference(signals: list[str]) -> float:
    import polars as pl

    a = pl.read_parquet(OUT / "pushdown-polars.parquet")
    b = pl.read_parquet(OUT / "pushdown-duckdb.parquet")
    assert a.select("account_id", "as_of").equals(b.select("account_id", "as_of")), "different rows"
    worst = 0.0
    for s in signals:
        if (a[s].is_null() != b[s].is_null()).any():
            return float("inf")
        d = ((a[s] - b[s]).abs() / a[s].abs().clip(lower_bound=1.0)).max()
        worst = max(worst, d or 0.0)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--weeks", type=int, default=52)
    args = parser.parse_args()

    import polars as pl

    from health.model_loader import load_model
    from sources.sample import ensure_sample

    folder = ROOT / "data" / f"bench-{args.accounts}"
    ensure_sample(folder, n_accounts=args.accounts, seed=7)
    usage_rows = pl.scan_parquet(folder / "usage.parquet").select(pl.len()).collect().item()
    one, five, _ = os.getloadavg()
    print(f"{args.accounts:,} accounts x {args.weeks} weekly as-of dates; {usage_rows:,} usage rows; "
          f"weights.yaml; load average {one:.1f} on {os.cpu_count()} cores")
    for variant, label in (("polars", "Polars (streaming roll-ups)"), ("duckdb", "pushed down to DuckDB")):
        r = _child(folder, args.weeks, variant)
        sql = f", of which SQL {r['sql_s']:.2f} s" if variant != "polars" else ""
        print(f"  {label:>28}: {r['wall_s']:6.2f} s wall{sql} ({r['cpu_s']:.1f} s CPU), "
              f"peak RSS {r['peak_rss_gib']:.2f} GiB, {r['rows']:,} rows")
    signals = list(load_model(ROOT / "weights.yaml").model.signals)
    print(f"  largest difference over {len(signals)} signals: {_largest_difference(signals):.2g}")


if __name__ == "__main__":
    main()
