"""How fast the app answers, server side: `python bench/app_bench.py [--accounts 10000]`.

Measures, on the 600-account sample and on a 10k-account sample
(`sources.sample.ensure_sample(Path("data/sample-10k"), n_accounts=10_000)`):

* cold start of the at-risk page (load + validate + 52 weeks of scores + render), i.e.
  what the first visitor waits for after `streamlit run`;
* a filter change on the at-risk page (a full script rerun, scores cached);
* opening an account (first time: builds its view; again: cached);
* the segments page;
* and the pure steps underneath (filtering the worklist, building one account's view).

Page timings are whole script runs through Streamlit's AppTest, in this process: the
server-side time of a rerun (running the page script and serialising its elements),
without the browser's rendering or the network.
Targets: filter change or account page < 1 s at 10k; first at-risk table at 600 < 3 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from health.worklist import Filters, apply_filters, headline, to_csv  # noqa: E402
from sources.sample import ensure_sample  # noqa: E402

APP = str(ROOT / "app.py")
REPEATS = 5


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _run(at: AppTest) -> AppTest:
    at.run(timeout=600)
    if at.exception:
        raise SystemExit(f"the app raised: {at.exception[0].message}")
    return at


def bench_book(label: str, n_accounts: int, config: Path | None) -> list[tuple[str, str, float]]:
    import ui.data as data

    if config is None:
        os.environ.pop(data.CONFIG_ENV, None)
    else:
        os.environ[data.CONFIG_ENV] = str(config)
    data.reload()
    out: list[tuple[str, str, float]] = []

    def record(step: str, seconds: float) -> None:
        out.append((label, step, seconds))
        print(f"  {label:>6}  {step:<58} {seconds * 1000:8.0f} ms", flush=True)

    # Cold start: first visitor after the server started (caches empty)
    at = AppTest.from_file(APP, default_timeout=600)
    record("at-risk page, cold (load + score 52 weeks + render)", _timed(lambda: _run(at)))
    record("at-risk page, warm rerun (nothing changed)", _timed(lambda: _run(at)))

    # Filter changes: full reruns with cached scores
    changes = [
        lambda: at.selectbox(key="segment").select("mid"),
        lambda: at.multiselect(key="tier").select("At risk"),
        lambda: at.text_input(key="q").input("a"),
        lambda: at.toggle(key="falling").set_value(True),
        lambda: at.selectbox(key="renewal").select("90 days"),
        lambda: at.button(key="reset").click(),
    ]
    times = []
    for change in changes:
        change()
        times.append(_timed(lambda: _run(at)))
    record(f"at-risk filter change (median of {len(times)})", statistics.median(times))
    record("at-risk filter change (slowest)", max(times))

    book = data.load_book()
    rows = book.rows
    ids = rows["account_id"].to_list()

    # Opening accounts: a row click switches page with ?account=ID
    firsts, agains = [], []
    for account_id in (ids[0], ids[len(ids) // 2], ids[-1]):
        acc = AppTest.from_file(APP, default_timeout=600)
        acc.query_params["account"] = account_id
        _run(acc)
        acc.switch_page("app_pages/account.py")
        firsts.append(_timed(lambda: _run(acc)))
        agains.append(_timed(lambda: _run(acc)))
    record("account page, first open (median of 3)", statistics.median(firsts))
    record("account page, again (cached view)", statistics.median(agains))

    seg = AppTest.from_file(APP, default_timeout=600)
    _run(seg)
    seg.switch_page("app_pages/segments.py")
    record("segments page (first)", _timed(lambda: _run(seg)))
    record("segments page (again)", _timed(lambda: _run(seg)))

    # The pure steps underneath
    f = Filters(segment="mid", tiers=("at_risk", "watch"), renewal_within=180, search="a")
    record(
        "  pure: filter + headline of the worklist",
        statistics.median(_timed(lambda: headline(apply_filters(rows, f, []))) for _ in range(REPEATS)),
    )
    record("  pure: CSV export of the whole worklist", _timed(lambda: to_csv(rows)))
    record(
        "  pure: one account's view (history, breakdown, timeline, usage)",
        statistics.median(_timed(lambda i=i: data.build_account_view(book, i)) for i in ids[:REPEATS]),
    )
    print(f"  {label:>6}  ({rows.height:,} active accounts, history {book.history.height:,} rows)")
    return out


def main() -> None:
    from streamlit.logger import set_log_level

    set_log_level("error")  # "no runtime" notes from clearing caches outside a server
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000, help="size of the big book (default 10000)")
    parser.add_argument("--skip-small", action="store_true", help="only the big book")
    args = parser.parse_args()
    os.environ.pop("CHI_SOURCE", None)

    print("Server-side timings (AppTest script runs; no browser)")
    if not args.skip_small:
        ensure_sample(ROOT / "data" / "sample")
        bench_book("600", 600, None)

    folder = ROOT / "data" / f"sample-{args.accounts // 1000}k"
    t = time.perf_counter()
    ensure_sample(folder, n_accounts=args.accounts)
    print(f"  (sample {folder.name} ready in {time.perf_counter() - t:.1f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config" / "sources.yaml"
        config.parent.mkdir()
        config.write_text(
            f"active: bench\nsources:\n  bench:\n    kind: sample\n    accounts: {args.accounts}\n"
            f"    seed: 7\n    path: {folder}\n"
        )
        bench_book(f"{args.accounts // 1000}k", args.accounts, config)


if __name__ == "__main__":
    pl.Config.set_tbl_rows(50)
    main()
