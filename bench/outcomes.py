"""The outcomes engine in steady state: 1,000 accounting records a second.

A writer appends the rows of a generated 5.0-layout file (bench/acct.py's mix: d 85 %, t 9 %,
b 5 %, tq 1 %) to acct.csv at 1,000 rows/s, in batches every 100 ms, while the engine follows
it in a child process as the exporter runs it (a thread reading every `interval` seconds,
saving its state every 30 s). The child reports the CPU time it used after its start-up and
first (empty) read, and its peak RSS: the CPU share of one core is that time over the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.acct import make_acct
from bench.common import Report, Row, log, workdir

NAME = "outcomes"
TITLE = "outcomes engine: steady state at 1,000 accounting records/s (CPU share, RSS)"

RATE = 1000
TARGET_SHARE = 0.02

CHILD = r"""
import json, resource, sys, time
from pmta_snmp.outcomes.engine import EngineSettings, OutcomesEngine
files, state, duration = sys.argv[1], sys.argv[2], float(sys.argv[3])
engine = OutcomesEngine(EngineSettings(files=files, state_dir=state, backfill=0.0))
engine.read()
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
start, t0 = cpu(), time.monotonic()
print("ready", flush=True)
engine.start()
time.sleep(duration)
engine.stop()
engine.read()  # what came after the thread's last read
wall = time.monotonic() - t0
print(json.dumps({"cpu": cpu() - start, "wall": wall,
                  "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "records": sum(n for _, n in engine.view.records)}), flush=True)
"""


def run(report: Report, *, quick: bool = False) -> None:
    """Write at RATE rows/s for a while under the engine; report its CPU share and RSS."""
    duration = 20.0 if quick else 60.0
    with workdir("pmta-bo-") as wd:
        source = wd / "source.csv"
        rows = int(duration * RATE) + 2 * RATE
        make_acct(source, rows, seed=9, minutes=max(1, int(duration // 60) + 1))
        lines = source.read_bytes().split(b"\r\n")
        header, body = lines[0], [x for x in lines[1:] if x]
        target = wd / "acct" / "acct.csv"
        target.parent.mkdir()
        target.write_bytes(header + b"\r\n")
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(target), str(wd / "state"), str(duration)],
            stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            written = _write(target, body, duration)
            out = json.loads(child.stdout.readline())
            child.wait(60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    share = out["cpu"] / out["wall"]
    log(f"outcomes: wrote {written} rows, the engine read {out['records']}")
    report.add(Row(
        f"outcomes engine following {RATE} records/s for {duration:.0f} s "
        f"(CPU {out['cpu']:.2f} s; read {out['records']} of {written} rows)",
        f"{share * 100:.2f} % of a core", "", None, f"<= {TARGET_SHARE * 100:.0f} %",
        share <= TARGET_SHARE,
    ))
    report.add(Row("  (info) the engine's process, peak RSS",
                   f"{out['rss_kib'] / 1024:.0f} MiB", "", None, "", None))


def _write(target: Path, body: list[bytes], duration: float) -> int:
    """Append `body` rows to `target` at RATE rows/s for `duration` seconds."""
    batch = RATE // 10
    written = 0
    start = time.monotonic()
    with target.open("ab", buffering=0) as fh:
        while time.monotonic() - start < duration - 1.0 and written + batch <= len(body):
            fh.write(b"\r\n".join(body[written:written + batch]) + b"\r\n")
            written += batch
            due = start + written / RATE
            time.sleep(max(0.0, due - time.monotonic()))
    time.sleep(1.0)  # a last read before the child stops
    return written


if __name__ == "__main__":
    from bench.__main__ import main

    sys.exit(main(["outcomes", *sys.argv[1:]]))
