"""check_pmta_* plugins: cold start, the log plugin on three big logs (accounting: bench/acct.py).

Cold start: every plugin run ~15 times as a fresh process (as Nagios runs it) against the
simulator (API plugins) or its accounting file and log (file plugins; after the first run they
find nothing new, the usual case every few minutes), p50 wall time, beside `python -c pass`
of the same interpreter in the same run. Byte code is cached as in an installed package (pip
compiles .pyc files on install) even where PYTHONDONTWRITEBYTECODE is set; the p50s without
that cache are then given in a note.

Log: three logs, each `check_pmta_log --from-start` beside `grep -c -i -E` of the same
alternatives (LC_ALL=C, the faster grep) in the same run, MB/s and the counts compared: a quiet
1 GB main log (pmta-formats.md §4 lines, default patterns: almost nothing matches); an incident,
100 MB of one repeated matching line (`ETIMEDOUT connecting to <mx> (<ip>)`); and a mixed
real-format log of 300 MB (traces, rate limits, TLS and license lines, remote replies; about 3 %
of lines match). The last two use BENCH_PATTERNS: the default classes plus the remote errors
an operator may also count, no exclude. An informational row scans the mixed log without
Hyperscan. Then the plugin again on the unchanged quiet log, wall time minus its cold start.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from bench.common import (
    PYTHON,
    REPO,
    Report,
    Row,
    log,
    median,
    ms,
    rate,
    ratio,
    secs,
    workdir,
)

NAME = "checks"
TITLE = "check_pmta_* cold start, quiet, incident and mixed logs (vs python -c pass, grep)"

COLD_TARGET_S = 0.150
LOG_TARGET_RATIO = 0.50
INCIDENT_TARGET_RATIO = 0.10
MIXED_TARGET_RATIO = 0.50
SECOND_RUN_TARGET_S = 0.050
PLUGINS = ("queue", "license", "bounce", "deferral", "tls", "log")


def run(report: Report, *, quick: bool = False) -> None:
    """Cold starts, then the log throughput runs."""
    runs = 5 if quick else 15
    log_bytes = (50 if quick else 1000) * 1_000_000
    with workdir("pmta-bc-") as wd:
        cold = cold_starts(report, wd, runs)
        log_scan(report, wd, log_bytes, cold.get("log"), quick=quick)


# ---------------------------------------------------------------------------------------------
# Plugins as commands
# ---------------------------------------------------------------------------------------------


def plugin_cmd(name: str) -> list[str]:
    """The installed console script when there is one, else `python -m pmta_snmp.checks.X`."""
    script = Path(PYTHON).with_name(f"check_pmta_{name}")
    if script.exists():
        return [str(script)]
    return [PYTHON, "-m", f"pmta_snmp.checks.{name}"]


def available_plugins() -> list[str]:
    """Plugins present in the checks package (another engineer may still be adding some)."""
    import pmta_snmp.checks as pkg

    here = Path(pkg.__file__).parent
    return [name for name in PLUGINS if (here / f"{name}.py").exists()]


def run_plugin(
    name: str, args: Sequence[str], *, timeout: float = 600, env: Mapping[str, str] | None = None
) -> tuple[float, int, str]:
    """One run: (wall seconds, exit code, stdout). Exit 0-2 are answers; 3 is UNKNOWN."""
    cmd = [*plugin_cmd(name), *args]
    t0 = time.perf_counter()
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO,
        stdin=subprocess.DEVNULL, env=env,
    )
    elapsed = time.perf_counter() - t0
    if res.returncode not in (0, 1, 2, 3):
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr[-800:]}")
    return elapsed, res.returncode, res.stdout


def perfdata(stdout: str, label: str) -> int | None:
    """An integer perfdata value (`label=123...`) from the plugin output."""
    m = re.search(rf"(?:^|[\s|']){re.escape(label)}=(\d+)", stdout)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# Cold start
# ---------------------------------------------------------------------------------------------


def cold_starts(report: Report, wd: Path, runs: int) -> dict[str, float]:
    """p50 wall time of each plugin beside `python -c pass`; returns name -> p50 in this
    shell's environment (the one the log and accounting runs use: without a byte-code cache
    when PYTHONDONTWRITEBYTECODE is set)."""
    from pmta_snmp.sim import Simulator

    plugins = available_plugins()
    missing = [p for p in PLUGINS if p not in plugins]
    if missing:
        report.note(f"plugins not present yet, not measured: {', '.join(missing)}")
    acct_dir, log_path = wd / "sim-acct", wd / "sim-log" / "log"
    sim = Simulator(scenario="healthy", seed=1, speed=0, acct_dir=acct_dir, log_path=log_path)
    out: dict[str, float] = {}
    uncached: dict[str, float] = {}
    env = installed_env(wd)
    sim.start()
    try:
        sim.advance(1800)  # half an hour of accounting records and log lines
        acct = str(acct_dir / "acct.csv")
        args: dict[str, list[str]] = {
            "queue": ["--url", sim.url],
            "license": ["--url", sim.url],
            "bounce": ["--acct-file", acct],
            "deferral": ["--acct-file", acct],
            "tls": ["--acct-file", acct, "-l", str(log_path)],
            "log": ["-l", str(log_path)],
        }
        timed_pass(env)  # writes the interpreter's own byte code to the cache
        base_p50 = median([timed_pass(env) for _ in range(runs)])
        report.add(Row(
            f"python -c pass (reference), p50 of {runs}", ms(base_p50), "", None, "", None,
        ))
        for name in plugins:
            state = wd / f"state-{name}"
            cmd_args = args[name] + (["--state-dir", str(state)] if _has_state(name) else [])
            p50, codes, stdout = _cold_p50(name, cmd_args, runs, env)
            out[name] = p50
            report.add(Row(
                f"check_pmta_{name} cold start p50 of {runs} (+{ms(p50 - base_p50)} over python)",
                ms(p50), f"{ms(base_p50)} (python -c pass)", ratio(p50, base_p50),
                f"< {COLD_TARGET_S * 1000:.0f} ms", p50 < COLD_TARGET_S,
            ))
            if 3 in codes:
                report.note(f"check_pmta_{name} answered UNKNOWN (exit 3): {stdout.strip()[:200]}")
            if os.environ.get("PYTHONDONTWRITEBYTECODE"):
                uncached[name] = _cold_p50(name, cmd_args, runs, None)[0]
        if uncached:
            report.note(
                "cold starts without a byte-code cache (PYTHONDONTWRITEBYTECODE is set here, so "
                "every run recompiles the project's modules; an installed package has .pyc "
                "files): " + ", ".join(f"{k} {ms(v)}" for k, v in uncached.items())
            )
    finally:
        sim.stop()
    return {**out, **uncached}


def _cold_p50(
    name: str, cmd_args: Sequence[str], runs: int, env: Mapping[str, str] | None
) -> tuple[float, set[int], str]:
    """p50 of `runs` runs after a first one (it creates the state file, sets the file tails
    and writes the byte-code cache): (p50, exit codes seen, last stdout)."""
    first = run_plugin(name, cmd_args, env=env)
    times: list[float] = []
    codes = {first[1]}
    stdout = first[2]
    for _ in range(runs):
        elapsed, code, stdout = run_plugin(name, cmd_args, env=env)
        times.append(elapsed)
        codes.add(code)
    return median(times), codes, stdout


def installed_env(wd: Path) -> dict[str, str]:
    """The environment of an installed plugin: byte code cached (under `wd`, not in the
    source tree), whatever PYTHONDONTWRITEBYTECODE this shell has."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(wd / "pycache")
    return env


def _has_state(name: str) -> bool:
    res = subprocess.run(
        [*plugin_cmd(name), "--help"], capture_output=True, text=True, timeout=60, check=False,
        cwd=REPO,
    )
    return "--state-dir" in res.stdout


def timed_pass(env: Mapping[str, str] | None = None) -> float:
    """Wall time of `python -c pass` with the same interpreter (the floor of any plugin)."""
    t0 = time.perf_counter()
    subprocess.run([PYTHON, "-c", "pass"], check=True, stdin=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# Main log
# ---------------------------------------------------------------------------------------------

_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "example.com", "example.org", "example.net",
            "mail.example.info", "aol.com", "web.de", "orange.fr")


def _log_texts(rng: random.Random) -> list[str]:
    """One day of PowerMTA main-log texts (without the timestamp): §4's documented lines,
    mostly the trace kind, about 0.5 % warning-class and 0.002 % critical-class."""
    texts: list[str] = []
    for _ in range(20_000):
        d = rng.choice(_DOMAINS)
        vmta = f"vmta-{rng.choice('abcdefgh')}"
        ip = f"192.0.2.{rng.randrange(1, 255)}"
        src = f"198.51.100.{rng.randrange(1, 255)}"
        mx = f"mx{rng.randrange(1, 4)}.{d}"
        r = rng.random()
        if r < 0.004:
            texts.append(rng.choice((
                f"ETIMEDOUT connecting to {mx} ({ip})",
                f"ECONNREFUSED connecting to {d} ({ip})",
                f"EDISCON in connection to {d} ({ip})",
                f"StatusDnsQueryFailed resolving {d}",
                f'Error: "451 4.7.1 Try again later" while connected from mta1.example.net '
                f"({src}) to {mx} ({ip})",
            )))
        elif r < 0.00402:
            texts.append(f"All SMTP sources for queue {d}/{vmta} are now disabled.")
        else:
            texts.append(rng.choice((
                f"starting {d}/{vmta}",
                f"connecting from mta1.example.net ({src}) to {mx} ({ip})",
                f">>> 220 {mx} ESMTP ready",
                "<<< EHLO mta1.example.net",
                f">>> 250-{mx} Hello mta1.example.net [{src}]",
                "tls:TLSv1.2 connected with 128-bit ECDHE-RSA-AES128-GCM-SHA256",
                f"tls:Cert: /CN={mx}; issuer=/CN=R3; verified=yes",
                f"closed {mx} ({ip}) in={rng.randrange(300, 3000)} "
                f"out={rng.randrange(1000, 90000)}",
                f"done {d}/{vmta}",
                "connect rate limit reached",
                "message rate limit reached (based on queue's max-msg-rate in configuration)",
                f'skip of MX requested: "421 4.7.0 Try again later" received from {mx} ({ip}) '
                f"while connected from mta1.example.net ({src}) to {mx} ({ip})",
            )))
    return texts


def make_log(path: Path, size: int, seed: int = 4) -> None:
    """Write about `size` bytes of main log: a 64 MB day of lines, repeated day after day."""
    rng = random.Random(seed)
    texts = _log_texts(rng)
    day = datetime(2026, 1, 1)
    unit = min(size, 64_000_000)
    parts: list[str] = []
    written = 0
    n = 0
    while written < unit:
        line = f"{day + timedelta(seconds=n * 86400 * 100 // unit):%Y-%m-%d %H:%M:%S} " \
               f"{texts[rng.randrange(len(texts))]}\n"
        parts.append(line)
        written += len(line)
        n += 1
    block = "".join(parts).encode()
    with path.open("wb") as fh:
        for k in range(max(1, -(-size // len(block)))):
            stamp = (day + timedelta(days=k)).strftime("%Y-%m-%d").encode()
            fh.write(block.replace(b"2026-01-01 ", stamp + b" "))


def grep_pattern(patterns: Mapping[str, Sequence[str]] | None = None) -> str:
    """The critical and warning patterns (default: check_pmta_log's) as one ERE: `(?:` is
    Python's non-capturing group, a plain group in an ERE."""
    from pmta_snmp.checks.logscan import DEFAULT_PATTERNS

    classes = DEFAULT_PATTERNS if patterns is None else patterns
    return "|".join([*classes["critical"], *classes["warning"]]).replace("(?:", "(")


def _bench_patterns() -> dict[str, list[str]]:
    from pmta_snmp.checks.logscan import DEFAULT_PATTERNS

    return {
        "critical": list(DEFAULT_PATTERNS["critical"]),
        "warning": [*DEFAULT_PATTERNS["warning"], *REMOTE_ERRORS],
        "exclude": [],
        "ok": [],
    }


#: Remote trouble an operator may want counted too (the issue's six alternatives): with the
#: default classes and no exclude, the pattern set of the incident and mixed-log rows.
REMOTE_ERRORS = [r"\berror\b", "etimedout", "econnrefused", "ediscon", "statusdnsqueryfailed",
                 "connection refused"]
BENCH_PATTERNS = _bench_patterns()


def bench_pattern_file(path: Path) -> Path:
    """BENCH_PATTERNS written as a --pattern-file (every class given, so none of the
    defaults' is left)."""
    path.write_text("".join(
        f"[{klass}]\n" + "".join(f"{p}\n" for p in patterns)
        for klass, patterns in BENCH_PATTERNS.items()))
    return path


def _write_lines(path: Path, size: int, line: Callable[[int], str]) -> int:
    """Lines `line(0)`, `line(1)`, ... up to about `size` bytes; returns the line count."""
    n = written = 0
    with path.open("wb") as fh:
        while written < size:
            chunk = "".join(line(i) for i in range(n, n + 20_000)).encode()
            fh.write(chunk)
            written += len(chunk)
            n += 20_000
    return n


def make_incident_log(path: Path, size: int, seed: int = 7) -> int:
    """A remote outage: about `size` bytes of `ETIMEDOUT connecting to <mx> (<ip>)`, 5,000 a
    second (one repeated matching line, its host and address varying); returns the lines."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 14, 9, 0, 0)
    hosts = [f"mx{rng.randrange(1, 4)}.{rng.choice(_DOMAINS)} (192.0.2.{rng.randrange(1, 255)})"
             for _ in range(64)]
    return _write_lines(path, size, lambda i: (
        f"{start + timedelta(seconds=i // 5000):%Y-%m-%d %H:%M:%S} ETIMEDOUT connecting to "
        f"{hosts[i * 7 % 61]}\n"))


def _mixed_texts(rng: random.Random) -> list[str]:
    """PowerMTA main-log texts (pmta-formats.md §4, the simulator's wording): delivery traces,
    rate limits, TLS and license lines; about 3 % match BENCH_PATTERNS (remote errors, a
    few local failures)."""
    texts: list[str] = []
    for _ in range(20_000):
        d = rng.choice(_DOMAINS)
        vmta = f"vmta-{rng.choice('abcdefgh')}"
        ip = f"192.0.2.{rng.randrange(1, 255)}"
        src = f"198.51.100.{rng.randrange(1, 255)}"
        mx = f"mx{rng.randrange(1, 4)}.{d}"
        reply = rng.choice(("421 4.7.0 Try again later, closing connection.",
                            "451 4.3.2 Please try again later",
                            "421 4.7.28 Our system has detected an unusual rate of mail"))
        r = rng.random()
        if r < 0.029:
            texts.append(rng.choice((
                f"ETIMEDOUT connecting to {mx} ({ip})",
                f"ECONNREFUSED connecting to {d} ({ip})",
                f"EDISCON in connection to {d} ({ip})",
                f"StatusDnsQueryFailed resolving {d}",
                f'Error: "{reply}" while connected from mta1.example.net ({src}) to {mx} ({ip})',
            )))
        elif r < 0.03:
            texts.append(rng.choice((
                f"All SMTP sources for queue {d}/{vmta} are now disabled.",
                "License expired on 2026-01-13",
                f"error writing /var/spool/pmta/{rng.randrange(99):02d}/x.msg: No space left "
                "on device",
            )))
        else:
            texts.append(rng.choice((
                f"starting {d}/{vmta}",
                f"connecting from mta1.example.net ({src}) to {mx} ({ip})",
                f">>> 220 {mx} ESMTP ready",
                "<<< EHLO mta1.example.net",
                f">>> 250-{mx} Hello mta1.example.net [{src}]",
                "tls:TLSv1.2 connected with 128-bit ECDHE-RSA-AES128-GCM-SHA256",
                f"tls:Cert: /CN={mx}; issuer=/CN=R3; verified=yes",
                f"closed {mx} ({ip}) in={rng.randrange(300, 3000)} "
                f"out={rng.randrange(1000, 90000)}",
                f"done {d}/{vmta}",
                "connect rate limit reached",
                "message rate limit reached (based on queue's max-msg-rate in configuration)",
                f'skip of MX requested: "{reply}" received from {mx} ({ip}) while connected '
                f"from mta1.example.net ({src}) to {mx} ({ip})",
                "License expires in 20 day(s), on 2026-02-03",
            )))
    return texts


def make_mixed_log(path: Path, size: int, seed: int = 8) -> int:
    """About `size` bytes of a busy PowerMTA's main log (_mixed_texts, 40 lines a second);
    returns the lines."""
    rng = random.Random(seed)
    texts = _mixed_texts(rng)
    picks = [rng.randrange(len(texts)) for _ in range(1 << 16)]
    start = datetime(2026, 1, 14, 0, 0, 0)
    return _write_lines(path, size, lambda i: (
        f"{start + timedelta(seconds=i // 40):%Y-%m-%d %H:%M:%S} "
        f"{texts[(picks[i & 0xFFFF] + (i >> 16)) % len(texts)]}\n"))


def _grep_count(path: Path, pattern: str) -> tuple[float, int]:
    """Best of two `grep -c -i -E` runs (LC_ALL=C, the faster grep): seconds, count. The
    first run also warms the page cache for the plugin."""
    grep = shutil.which("grep")
    assert grep is not None
    env = dict(os.environ, LC_ALL="C")
    times: list[float] = []
    count = 0
    for _ in range(2):
        t0 = time.perf_counter()
        res = subprocess.run([grep, "-c", "-i", "-E", pattern, str(path)], capture_output=True,
                             text=True, env=env, check=False)
        times.append(time.perf_counter() - t0)
        if res.returncode not in (0, 1):
            raise RuntimeError(f"grep failed: {res.stderr}")
        count = int(res.stdout.strip() or 0)
    return min(times), count


def _scan_row(report: Report, wd: Path, path: Path, what: str, target: float,
              extra: Sequence[str] = (), env: Mapping[str, str] | None = None,
              patterns: Mapping[str, Sequence[str]] | None = None) -> float:
    """One `check_pmta_log --from-start` row beside grep in the same run; the plugin's
    seconds."""
    size = path.stat().st_size
    grep_s, grep_count = _grep_count(path, grep_pattern(patterns))
    runs = []
    for i in range(2):  # best of two, as for grep (each a first run: its own state)
        state = wd / f"state-{path.name}-{len(report.rows)}-{i}"
        args = ["-l", str(path), "--state-dir", str(state), "-t", "0", "-w", "~:", "-c", "~:"]
        runs.append(run_plugin("log", [*args, "--from-start", *extra], env=env))
    ours_s, _, stdout = min(runs)
    found = (perfdata(stdout, "critical_lines") or 0) + (perfdata(stdout, "warning_lines") or 0)
    ours_mbs, grep_mbs = size / 1e6 / ours_s, size / 1e6 / grep_s
    r = ratio(ours_mbs, grep_mbs)
    report.add(Row(
        f"check_pmta_log --from-start, {what}, {size / 1e6:.0f} MB, {found:,} matching lines "
        f"({secs(ours_s)})",
        rate(ours_mbs, "MB/s"), f"{rate(grep_mbs, 'MB/s')} (grep -c -i -E)", r,
        f">= {target:.2f}x" if target else "", (r is not None and r >= target) if target
        else None,
    ))
    if found != grep_count:
        report.note(f"{what}: check_pmta_log counted {found} critical+warning lines, "
                    f"grep {grep_count} lines")
    return ours_s


def log_scan(report: Report, wd: Path, size: int, cold_p50: float | None, *,
             quick: bool = False) -> None:
    """The three logs beside grep (quiet, incident, mixed), then a second run on the
    unchanged quiet log."""
    if "log" not in available_plugins():
        report.note("check_pmta_log not present: log scan not measured")
        return
    (wd / "big").mkdir()
    path = wd / "big" / "log"
    t0 = time.perf_counter()
    make_log(path, size)
    log(f"log: wrote {path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f}s")
    _scan_row(report, wd, path, "quiet log (default patterns)", LOG_TARGET_RATIO)
    patterns = bench_pattern_file(wd / "big" / "patterns")
    with_file = ["--pattern-file", str(patterns)]
    incident = wd / "big" / "incident"
    lines = make_incident_log(incident, (10 if quick else 100) * 1_000_000)
    _scan_row(report, wd, incident, f"incident log ({lines:,} ETIMEDOUT lines)",
              INCIDENT_TARGET_RATIO, with_file, patterns=BENCH_PATTERNS)
    incident.unlink()
    mixed = wd / "big" / "mixed"
    make_mixed_log(mixed, (30 if quick else 300) * 1_000_000)
    _scan_row(report, wd, mixed, "mixed real-format log, 3 % matching",
              MIXED_TARGET_RATIO, with_file, patterns=BENCH_PATTERNS)
    from pmta_snmp.checks.logscan import PURE_PYTHON_ENV, make_finder

    if make_finder([b"abc"]).engine == "hyperscan":
        _scan_row(report, wd, mixed, f"  (info) the same without Hyperscan ({PURE_PYTHON_ENV}=1)",
                  0.0, with_file, env={**os.environ, PURE_PYTHON_ENV: "1"},
                  patterns=BENCH_PATTERNS)
    else:
        report.note("hyperscan is not installed: the log rows measure the pure-Python finder")
    mixed.unlink()
    args = ["-l", str(path), "--state-dir", str(wd / "state-quiet-second"), "-t", "0"]
    run_plugin("log", [*args, "--from-start"])
    seconds = [run_plugin("log", args)[0] for _ in range(5)]
    second = median(seconds)
    work = max(0.0, second - (cold_p50 or 0.0))  # below the cold-start p50: within noise
    report.add(Row(
        f"check_pmta_log second run, unchanged {path.stat().st_size / 1e9:.2f} GB log: plugin "
        f"work (wall {ms(second)} - cold start {ms(cold_p50 or 0.0)})",
        ms(work), "", None, f"< {SECOND_RUN_TARGET_S * 1000:.0f} ms",
        work < SECOND_RUN_TARGET_S,
    ))


if __name__ == "__main__":
    from bench.__main__ import main

    sys.exit(main(["checks", *sys.argv[1:]]))
