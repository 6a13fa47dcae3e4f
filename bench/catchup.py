"""The outcomes engine catching up a high-cardinality accounting file: peak RSS and rate.

1 M rows of bench/acct.py's 5.0-layout mix (d 85 %, t 9 %, b 5 %, tq 1 %, fifty minutes), each
row sent for one of 100,000 sending domains taken in turn. The engine reads the whole file in
its own process (a first start whose read-back covers it, state saved at the end) and reports
its peak RSS (ru_maxrss); rows/s beside `mawk -F, '$1=="b"{n++} END{print n}'` on the same
file, median of three runs each, taking turns. An informational row runs the same catch-up
once without the C scanner (csv reads every row).
"""

from __future__ import annotations

import os
import sys
import time

from bench.acct import (
    ACCT_TARGET_RATIO,
    EngineRun,
    awk_run,
    engine_run,
    make_acct,
    reference_awk,
)
from bench.common import Report, Row, log, median, rate, ratio, secs, workdir

NAME = "catchup"
TITLE = "outcomes engine: 1 M rows from 100k sending domains caught up (peak RSS, vs mawk)"

SENDERS = 100_000
#: Peak RSS of the engine's process during the catch-up, with the default caps.
TARGET_MIB = 200


def run(report: Report, *, quick: bool = False) -> None:
    """The catch-up beside mawk, then once without the C scanner."""
    from pmta_snmp.acct.tally import PURE_PYTHON_ENV, speedups

    rows = 200_000 if quick else 1_000_000
    senders = SENDERS // 5 if quick else SENDERS
    runs = 1 if quick else 3
    with workdir("pmta-bc-") as wd:
        path = wd / "acct" / "acct.csv"
        path.parent.mkdir()
        t0 = time.perf_counter()
        make_acct(path, rows, senders=senders)
        log(f"catchup: wrote {rows} rows from {senders} sending domains "
            f"({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s")
        awk, awk_name = reference_awk(report)
        program = '$1=="b"{n++} END{print n+0}'
        awk_run(awk, program, path)  # warms the page cache
        if speedups() is None:
            report.note("the C scanner pmta_snmp._csvtally is not built: the catch-up rows "
                        "measure csv alone")
        awk_times: list[float] = []
        done: list[EngineRun] = []
        for i in range(runs):
            awk_times.append(awk_run(awk, program, path)[0])
            done.append(_checked(report, engine_run(path, wd / f"state-{i}"), rows))
        ref = rows / median(awk_times)
        wall, cpu = median([d.wall for d in done]), median([d.cpu for d in done])
        peak = max(d.peak_rss_kib for d in done) / 1024
        r = ratio(rows / wall, ref)
        report.add(Row(
            f"outcomes engine catch-up, {rows} acct rows from {senders} sending domains, "
            f"default caps (its own process; {secs(wall)}, CPU {secs(cpu)})",
            rate(rows / wall, "rows/s"), f"{rate(ref, 'rows/s')} ({awk_name} filter+count)", r,
            f"reported (the {ACCT_TARGET_RATIO:.2f}x target: `bench acct`, few domains)", None,
        ))
        report.add(Row(
            "  the same, peak RSS of the engine's process",
            f"{peak:.0f} MiB", "", None, f"< {TARGET_MIB} MiB", peak < TARGET_MIB,
        ))
        pure = _checked(report, engine_run(path, wd / "state-csv",
                                           env={**os.environ, PURE_PYTHON_ENV: "1"}), rows)
        report.add(Row(
            f"  (info) the same without the C scanner ({PURE_PYTHON_ENV}=1; {secs(pure.wall)}, "
            f"CPU {secs(pure.cpu)})",
            f"{rate(rows / pure.wall, 'rows/s')}, peak RSS {pure.peak_rss_kib / 1024:.0f} MiB",
            f"{rate(ref, 'rows/s')} ({awk_name})", ratio(rows / pure.wall, ref), "", None,
        ))


def _checked(report: Report, done: EngineRun, rows: int) -> EngineRun:
    """The run, with a note when it did not count every row."""
    if done.records != rows:
        report.note(f"the outcomes engine counted {done.records} records of {rows}")
    return done


if __name__ == "__main__":
    from bench.__main__ import main

    sys.exit(main([NAME, *sys.argv[1:]]))
