"""Accounting plugins: catching up a big accounting file, and the usual run after it.

1 M rows of a 5.0-layout acct.csv (d 85 %, t 9 %, b 5 %, tq 1 %; times over the last 50
minutes). `check_pmta_bounce --from-start` beside `mawk -F, '$1=="b"{n++} END{print n}'`,
rows/s, median of three runs each, taking turns (the machine's load moves both alike); the
plugin's CPU time is given too. With the C scanner when it is built; an informational row gives
the same without it (csv reads every row). An informational row runs an awk doing about what the
plugin does for its recipient domain dimension (d and b rows counted per minute and recipient
domain; the recipient comes before any quoted column in this layout, so awk's plain comma split
is right here). Another times the usual run after the catch-up: a tenth as many new rows (five
of the file's fifty minutes) read on top of the state the catch-up left. The last row is a
first run without state on ten hours of records: it reads back one ten-minute window, found by
time, beside the same plugin reading the whole file (--from-start).
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from bench.checks import available_plugins, perfdata, run_plugin
from bench.common import Report, Row, log, median, ms, rate, ratio, secs, workdir

NAME = "acct"
TITLE = "accounting plugins: 1 M rows caught up (vs mawk), the next five minutes"

ACCT_TARGET_RATIO = 0.50
#: Recipient domains of the generated records.
_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "example.com", "example.org", "example.net",
            "mail.example.info", "aol.com", "web.de", "orange.fr")


def run(report: Report, *, quick: bool = False) -> None:
    """The catch-up beside mawk, without the C scanner, then the usual run; a first run."""
    rows = 100_000 if quick else 1_000_000
    with workdir("pmta-ba-") as wd:
        catch_up(report, wd, rows, runs=1 if quick else 3)
        first_run(report, wd, rows)


def _csv_field(name: str, value: str) -> str:
    """RFC 4180 quoting; `dlvEsmtpAvailable` is always quoted when not empty (formats §3.3)."""
    if any(c in value for c in ',"\r\n') or (name == "dlvEsmtpAvailable" and value):
        return '"' + value.replace('"', '""') + '"'
    return value


def make_acct(path: Path, rows: int, seed: int = 5, minutes: int = 50, *,
              senders: int = 0) -> dict[str, int]:
    """A 5.0-layout acct.csv with `rows` records timed over the last `minutes` (type counts).

    The records come from seven sending domains, or from `senders` distinct ones taken in
    turn (a high-cardinality catch-up: each row's `orig` is then bounces@s<n>.example.com)."""
    from pmta_snmp.sim.files import ACCT_LAYOUTS

    rng = random.Random(seed)
    header = ACCT_LAYOUTS["5.0"]
    now = datetime.now().astimezone().replace(microsecond=0)
    span = minutes * 60
    start = now - timedelta(seconds=span)
    stamps = [(start + timedelta(seconds=s)).strftime("%Y-%m-%d %H:%M:%S%z") for s in range(span)]
    bounces = (
        ("bad-mailbox", "5.1.1 (bad destination mailbox address)",
         "smtp;550 5.1.1 <{r}>: Recipient address rejected: User unknown"),
        ("quota-issues", "5.2.2 (mailbox full)", "smtp;552 5.2.2 Mailbox full, quota exceeded"),
        ("spam-related", "5.7.1 (delivery not authorized, message refused)",
         "smtp;554 5.7.1 Message blocked as spam, see https://postmaster.example.com/"),
        ("policy-related", "5.7.1 (delivery not authorized, message refused)",
         "smtp;550 5.7.1 Message rejected due to local policy"),
    )
    # type -> [(recipient domain, row with {t} {q} {r} placeholders)]
    by_kind: dict[str, list[tuple[str, str]]] = {}
    for _ in range(400):
        d = rng.choice(_DOMAINS)
        v = f"vmta-{rng.choice('abcdefgh')}"
        src, dst = f"198.51.100.{rng.randrange(1, 64)}", f"192.0.2.{rng.randrange(1, 255)}"
        base = {
            "orig": ("bounces@{s}" if senders else
                     f"bounces@s{rng.randrange(7)}.example.com"), "orcpt": "",
            "dsnMta": f"mx.{d} ({dst})", "srcType": "smtp",
            "srcMta": "app1.example.net (192.0.2.10)", "dlvType": "smtp",
            "dlvSourceIp": src, "dlvDestinationIp": dst,
            "dlvEsmtpAvailable": "PIPELINING,SIZE,STARTTLS", "vmta": v,
            "jobId": f"j{rng.randrange(1000)}", "envId": "", "queue": f"{d}/{v}",
            "vmtaPool": "pool1", "timeLogged": "{t}", "timeQueued": "{q}", "rcpt": "{r}",
        }
        kinds = {
            "d": dict(base, type="d", dsnAction="relayed", dsnStatus="2.0.0 (success)",
                      dsnDiag="smtp;250 2.0.0 Ok: queued", bounceCat="success",
                      dlvSize=str(rng.randrange(2000, 90000)), dlvTlsProtocol="TLSv1.3",
                      dlvTlsCipher="TLS_AES_256_GCM_SHA384"),
            "t": dict(base, type="t", dsnAction="delayed", dsnStatus="4.0.0 (undefined status)",
                      dsnDiag="smtp;421 4.7.0 Try again later, closing connection.",
                      bounceCat=""),
            "tq": dict(base, type="tq", timeQueued="", orig="", rcpt="",
                       dsnStatus="4.0.0 (undefined status)",
                       dsnDiag="smtp;421 4.7.0 Try again later, closing connection."),
        }
        cat, status, diag = rng.choice(bounces)
        kinds["b"] = dict(base, type="b", dsnAction="failed", dsnStatus=status,
                          dsnDiag=diag, bounceCat=cat)
        for kind, fields in kinds.items():
            row = ",".join(_csv_field(f, fields.get(f, "")) for f in header)
            by_kind.setdefault(kind, []).append((d, row))
    counts = dict.fromkeys(("d", "b", "t", "tq"), 0)
    names = ("jane", "john", "sam", "kim", "alex", "maria", "li", "omar", "eva", "noah")
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(header) + "\r\n")
        chunk: list[str] = []
        for i in range(rows):
            x = rng.random()
            kind = "d" if x < 0.85 else "t" if x < 0.94 else "b" if x < 0.99 else "tq"
            counts[kind] += 1
            sec = i * span // rows
            domain, tmpl = by_kind[kind][rng.randrange(len(by_kind[kind]))]
            row = tmpl.replace("{t}", stamps[sec]).replace("{q}", stamps[max(0, sec - 30)])
            row = row.replace("{r}", f"{names[i % 10]}{i}@{domain}")
            if senders:
                row = row.replace("{s}", f"s{i % senders}.example.com", 1)
            chunk.append(row)
            if len(chunk) >= 20_000:
                fh.write("\r\n".join(chunk) + "\r\n")
                chunk = []
        if chunk:
            fh.write("\r\n".join(chunk) + "\r\n")
    return counts


#: awk counting d and b rows per (minute, recipient domain): roughly the plugin's work for one
#: of its dimensions, without the CSV quoting rules (not needed for the columns it reads here).
AWK_AGGREGATE = (
    '$1=="d"||$1=="b"{d=$5; sub(/.*@/, "", d); n[substr($2, 1, 16) " " tolower(d)]++} '
    'END{for (k in n) m++; print m+0}'
)


def cpu_run(name: str, args: Sequence[str], env: Mapping[str, str] | None = None
            ) -> tuple[float, float, str]:
    """One plugin run: (wall seconds, CPU seconds of it and its children, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed, _, stdout = run_plugin(name, args, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu, stdout


#: The outcomes engine's catch-up in its own process, as a plugin runs: start, read the whole
#: file (the window read back covers it), save the state.
#: file, state directory, then `name=value` settings (caps); it prints the records counted
#: and its own peak RSS in KiB.
ENGINE_RUN = (
    "import resource, sys\n"
    "from pmta_snmp.outcomes.engine import EngineSettings, OutcomesEngine\n"
    "caps = {k: int(v) for k, v in (a.split('=') for a in sys.argv[3:])}\n"
    "engine = OutcomesEngine(EngineSettings(files=sys.argv[1], state_dir=sys.argv[2],"
    " backfill=864000.0, pass_seconds=60.0, **caps))\n"
    "engine.read_all()\n"
    "engine.save()\n"
    "print(sum(n for _, n in engine.view.records),"
    " resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
)


@dataclass(frozen=True)
class EngineRun:
    """One catch-up of the outcomes engine in its own process."""

    wall: float
    cpu: float
    records: int
    peak_rss_kib: int


def engine_run(path: Path, state_dir: Path, *, caps: Mapping[str, int] | None = None,
               env: Mapping[str, str] | None = None) -> EngineRun:
    """The outcomes engine reading the whole file once in its own process (`caps`: settings
    such as max_sending_domains)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    args = [f"{k}={v}" for k, v in (caps or {}).items()]
    res = subprocess.run([sys.executable, "-c", ENGINE_RUN, str(path), str(state_dir), *args],
                         check=True, capture_output=True, text=True,
                         env=None if env is None else dict(env))
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    records, rss = res.stdout.split()
    return EngineRun(elapsed, cpu, int(records), int(rss))


def reference_awk(report: Report) -> tuple[str, str]:
    """(path, name) of the awk the accounting rows are measured against: mawk, else awk."""
    awk = shutil.which("mawk")
    if awk is not None:
        return awk, "mawk"
    report.note("mawk not installed: the reference is awk")
    awk = shutil.which("awk")
    assert awk is not None
    return awk, "awk"


def awk_run(awk: str, program: str, path: Path) -> tuple[float, str, float]:
    """(wall seconds, stdout, CPU seconds) of one awk run over the file."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run([awk, "-F,", program, str(path)], capture_output=True, text=True,
                         check=True)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, res.stdout, cpu


def catch_up(report: Report, wd: Path, rows: int, *, runs: int) -> None:
    """check_pmta_bounce --from-start beside mawk, with and without the C scanner."""
    if "bounce" not in available_plugins():
        report.note("check_pmta_bounce not present: accounting scan not measured")
        return
    from pmta_snmp.acct.tally import PURE_PYTHON_ENV, speedups

    path = wd / "acct" / "acct.csv"
    path.parent.mkdir()
    t0 = time.perf_counter()
    counts = make_acct(path, rows)
    log(f"acct: wrote {rows} rows ({path.stat().st_size / 1e6:.0f} MB) in "
        f"{time.perf_counter() - t0:.1f}s")
    awk, awk_name = reference_awk(report)
    _, out, _ = awk_run(awk, '$1=="b"{n++} END{print n+0}', path)  # also warms the cache
    if int(out.strip()) != counts["b"]:
        report.note(f"{awk_name} counted {out.strip()} b rows, written {counts['b']}")
    c_built = speedups() is not None
    if not c_built:
        report.note("the C scanner pmta_snmp._csvtally is not built: the accounting rows "
                    "measure csv alone")
    pure_env = {**os.environ, PURE_PYTHON_ENV: "1"}
    times: dict[str, list[float]] = {}
    attempts: dict[str, int | None] = {}
    state = wd / "state-bigacct"
    for i in range(runs):
        for what in ("awk", "agg", "c", "csv", "engine"):
            if what == "awk":
                wall, _, cpu = awk_run(awk, '$1=="b"{n++} END{print n+0}', path)
                times.setdefault(what, []).append(wall)
                times.setdefault("awk-cpu", []).append(cpu)
                continue
            if what == "agg":
                times.setdefault(what, []).append(awk_run(awk, AWK_AGGREGATE, path)[0])
                continue
            if what == "c" and not c_built:
                continue
            if what == "engine":  # the outcomes engine's catch-up: poll --no-api --acct-file
                done = engine_run(path, wd / f"state-engine-{i}")
                if done.records != rows:
                    report.note(f"the outcomes engine counted {done.records} records of {rows}")
                times.setdefault(what, []).append(done.wall)
                times.setdefault(f"{what}-cpu", []).append(done.cpu)
                times.setdefault(f"{what}-rss", []).append(done.peak_rss_kib / 1024)
                continue
            where = wd / f"state-{what}-{i}"
            if what == "c" and i == runs - 1:
                where = state  # the usual run below goes on from this one
            wall, cpu, stdout = cpu_run(
                "bounce", ["--acct-file", str(path), "--from-start", "--state-dir", str(where),
                           "-t", "0"], env=pure_env if what == "csv" else None)
            times.setdefault(what, []).append(wall)
            times.setdefault(f"{what}-cpu", []).append(cpu)
            attempts[what] = perfdata(stdout, "attempts")
    awk_s, agg_s, awk_cpu = median(times["awk"]), median(times["agg"]), median(times["awk-cpu"])
    ref = rows / awk_s
    if "engine" in times:
        wall, cpu = median(times["engine"]), median(times["engine-cpu"])
        r = ratio(rows / wall, ref)
        report.add(Row(
            f"outcomes engine catch-up (its own process, state saved), {rows} acct rows "
            f"({secs(wall)}, CPU {secs(cpu)}, peak RSS {max(times['engine-rss']):.0f} MiB)",
            rate(rows / wall, "rows/s"), f"{rate(ref, 'rows/s')} ({awk_name} filter+count)", r,
            f">= {ACCT_TARGET_RATIO:.2f}x", r is not None and r >= ACCT_TARGET_RATIO,
        ))
    for what in ("c", "csv"):
        if what not in times:
            continue
        wall, cpu = median(times[what]), median(times[f"{what}-cpu"])
        ours = rows / wall
        r = ratio(ours, ref)
        if what == "c" or not c_built:
            label = "C scanner" if what == "c" else "csv alone"
            report.add(Row(
                f"check_pmta_bounce --from-start, {rows} acct rows, {label} "
                f"({secs(wall)}, CPU {secs(cpu)})",
                rate(ours, "rows/s"), f"{rate(ref, 'rows/s')} ({awk_name} filter+count)", r,
                f">= {ACCT_TARGET_RATIO:.2f}x", r is not None and r >= ACCT_TARGET_RATIO,
            ))
            report.add(Row(
                "  (info) the same in CPU time (a loaded host stretches wall times unevenly)",
                rate(rows / cpu, "rows/CPU s"),
                f"{rate(rows / awk_cpu, 'rows/CPU s')} ({awk_name} filter+count)",
                ratio(awk_cpu, cpu), "", None,
            ))
            report.add(Row(
                f"  (info) {awk_name} counting d/b rows per minute and recipient domain "
                f"({secs(agg_s)})",
                rate(ours, "rows/s"), f"{rate(rows / agg_s, 'rows/s')} ({awk_name} aggregate)",
                ratio(ours, rows / agg_s), "", None,
            ))
        else:
            report.add(Row(
                f"  (info) the same without the C scanner ({PURE_PYTHON_ENV}=1: csv reads "
                f"every row; {secs(wall)}, CPU {secs(cpu)})",
                rate(ours, "rows/s"), f"{rate(ref, 'rows/s')} ({awk_name} filter+count)", r,
                "", None,
            ))
        found = attempts.get(what)
        if found is not None and found != counts["d"] + counts["b"]:
            report.note(f"check_pmta_bounce ({what}) counted {found} attempts, written "
                        f"{counts['d'] + counts['b']} d+b rows")
    # The usual run: the records of the last few minutes on top of the state just written.
    new_rows = rows // 10  # five of the file's fifty minutes
    more = wd / "acct" / "more.csv"
    make_acct(more, new_rows, seed=6)
    with more.open("rb") as src, path.open("ab") as dst:
        src.readline()  # its header: the rows continue acct.csv
        shutil.copyfileobj(src, dst)
    more.unlink()
    step, step_cpu, _ = cpu_run(
        "bounce", ["--acct-file", str(path), "--state-dir", str(state), "-t", "0"]
    )
    report.add(Row(
        f"  (info) check_pmta_bounce, the next {new_rows} rows (five minutes at this rate; "
        f"CPU {ms(step_cpu)})",
        ms(step), "", None, "", None,
    ))


def first_run(report: Report, wd: Path, rows: int) -> None:
    """A first run (no state) on ten hours of records with a ten-minute window: it reads back
    the window, found by time, beside the same plugin reading the whole file."""
    path = wd / "ten-hours" / "acct.csv"
    path.parent.mkdir()
    make_acct(path, rows, seed=7, minutes=600)
    args = ["--acct-file", str(path), "--window", "10m", "-t", "0", "-v"]
    whole, whole_cpu, _ = cpu_run("bounce", [*args, "--from-start",
                                             "--state-dir", str(wd / "st-ten-whole")])
    wall, cpu, stdout = cpu_run("bounce", [*args, "--state-dir", str(wd / "st-ten-first")])
    read = stdout.split("accounting: ", 1)[-1].split(" new records", 1)[0].replace(",", "")
    report.add(Row(
        f"  (info) first run, no state, 10-minute window of a 10-hour file of {rows} rows: "
        f"{read} records read back (CPU {ms(cpu)})",
        secs(wall), f"{secs(whole)} (--from-start, CPU {secs(whole_cpu)})",
        ratio(wall, whole), "", None,
    ))


if __name__ == "__main__":
    from bench.__main__ import main

    sys.exit(main(["acct", *sys.argv[1:]]))
