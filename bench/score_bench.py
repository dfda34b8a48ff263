"""Scoring speed and memory at stated sizes.

    python bench/score_bench.py                   # 10k and 100k accounts
    python bench/score_bench.py --sizes 10000     # one size

For each size the sample book is generated once (2 years of daily usage, 4 metrics) into
data/bench-<n>/, then each measurement runs in a fresh Python process so that its peak
resident memory (RSS) is its own: scoring one as-of date, and 104 weekly as-of dates.
Tables are scanned lazily from Parquet (`pl.scan_parquet`) — the contract validation of
a load is not part of the figure (it is measured by `python -m health sources check`).
The history is scored with `lean=True`: every signal's raw value, sub-score, weight,
contribution and points lost, the segment, score, coverage, tier and rule for every
account and week, without copying display-only account columns into every week.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TABLES = ("accounts", "usage", "tickets", "invoices", "surveys", "touchpoints", "milestones", "outcomes")


def _measure(folder: str, weeks: int, streaming: bool) -> dict:
    """Runs inside the child process."""
    import polars as pl

    from health.model_loader import load_model
    from health.scoring import score_history

    model = load_model(ROOT / "weights.yaml").model
    tables = {t: pl.scan_parquet(Path(folder) / f"{t}.parquet") for t in TABLES if (Path(folder) / f"{t}.parquet").exists()}
    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    import datetime as dt

    end = dt.date.fromisoformat(manifest["end_date"])
    t0 = time.perf_counter()
    out = score_history(tables, model, end, weeks=weeks, streaming=streaming, lean=True)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 1024 / 1024, 2),
        "rows": out.height,
    }


def _child(folder: Path, weeks: int, streaming: bool) -> dict:
    code = (
        "import json,sys; sys.path.insert(0, %r); from bench.score_bench import _measure; "
        "print(json.dumps(_measure(%r, %d, %r)))" % (str(ROOT), str(folder), weeks, streaming)
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _load_note() -> str:
    one, five, _ = __import__("os").getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {__import__('os').cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--weeks", type=int, default=104)
    parser.add_argument("--in-memory", action="store_true", help="use the in-memory engine, not streaming")
    args = parser.parse_args()

    from sources.sample import ensure_sample

    streaming = not args.in_memory
    print(f"roll-ups: {'streaming' if streaming else 'in-memory'}; model: weights.yaml; {_load_note()}")
    for n in args.sizes:
        folder = ROOT / "data" / f"bench-{n}"
        t0 = time.perf_counter()
        ensure_sample(folder, n_accounts=n, seed=7)
        gen = time.perf_counter() - t0
        import polars as pl

        usage_rows = pl.scan_parquet(folder / "usage.parquet").select(pl.len()).collect().item()
        print(f"\n{n:,} accounts: {usage_rows:,} usage rows (sample ready in {gen:.1f} s)")
        for weeks in (0, args.weeks):
            r = _child(folder, weeks, streaming)
            label = "one as-of date" if weeks == 0 else f"{weeks + 1} weekly as-of dates"
            print(
                f"  {label:>24}: {r['wall_s']:6.2f} s wall ({r['cpu_s']:.1f} s CPU), "
                f"peak RSS {r['peak_rss_gib']:.2f} GiB, {r['rows']:,} rows"
            )


if __name__ == "__main__":
    main()
