"""check_pmta_log: tailing PowerMTA's main log across rotations, pattern classes, thresholds."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pmta_snmp.checks.log import main

from tests.integration.test_checks_support import Outcome, run_main, run_subprocess

NORMAL = "2025-01-14 09:13:30 starting example.com/vmta-a\n"
# Remote: normal traffic for check_pmta_log (the deferral plugin's job).
TIMEOUT = "2025-01-14 09:13:34 ETIMEDOUT connecting to mx.example.org (192.0.2.40)\n"
ERROR = '2025-01-14 09:13:36 Error: "421 4.7.0 try later" while connected from a to b\n'
# Local failures: critical, and warning.
DISABLED = ("2025-01-14 09:13:35 All SMTP sources for queue example.net/vmta-c are now "
            "disabled.\n")
STARTUP = "2025-01-14 09:14:00 Startup error: No logging file specified\n"
BIND = ("2025-01-14 09:13:37 connecting from 198.51.100.21 to mx.example.org (192.0.2.40): "
        "Cannot assign requested address\n")


class Log:
    """A log file the test writes to and rotates, and the plugin run against it."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.dir = tmp_path
        self.path = tmp_path / "log"
        self.capsys = capsys
        self.path.write_text(NORMAL * 3)

    def write(self, *lines: str) -> None:
        with self.path.open("a") as fh:
            fh.write("".join(lines))

    def check(self, *argv: str) -> Outcome:
        return run_main(main, ["-l", str(self.path), "--state-dir", str(self.dir / "state"),
                               *argv], self.capsys)

    def counts(self, out: Outcome) -> tuple[str, str]:
        return out.value("critical_lines"), out.value("warning_lines")


@pytest.fixture
def log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Log:
    return Log(tmp_path, capsys)


def test_first_run_starts_at_the_end(log: Log) -> None:
    log.write(DISABLED)
    out = log.check()
    assert out.code == 0
    assert out.line.startswith("PMTA LOG OK - 0 critical, 0 warning lines in")
    assert f"first run: {log.path} is read from its end from now on" in out.out
    log.write(TIMEOUT, BIND, NORMAL)
    out = log.check()
    assert out.code == 1
    assert out.line == (
        f"PMTA LOG WARNING - 0 critical, 1 warning lines in {log.path} since the last run; "
        f"last warning: {BIND.strip()}"
    )
    assert out.perf["warning_lines"] == "1;0;;0"
    assert log.check().code == 0  # nothing new


def test_from_start_and_classes(log: Log) -> None:
    log.write(TIMEOUT, DISABLED, BIND, ERROR, STARTUP, BIND)
    out = log.check("--from-start")
    assert out.code == 2
    assert out.line == (
        f"PMTA LOG CRITICAL - 2 critical, 2 warning lines in {log.path} since the last run; "
        f"last critical: {STARTUP.strip()}"
    )
    assert out.value("lines") == "9"
    assert "first run" not in out.out  # --from-start read it all


def test_count_thresholds_per_class(log: Log) -> None:
    log.check()
    log.write(BIND * 3, DISABLED)
    out = log.check("-w", "5", "-c", "1")
    assert out.code == 0 and log.counts(out) == ("1", "3")
    log.write(BIND * 6)
    out = log.check("-w", "5", "-c", "1")
    assert out.code == 1 and log.counts(out) == ("0", "6")


def test_ok_line_clears_earlier_problems(log: Log) -> None:
    log.check()
    log.write(DISABLED, BIND, "2025-01-14 09:20:00 queue example.net/vmta-c resumed\n",
              NORMAL)
    out = log.check("--ok-pattern", r"queue \S+ resumed")
    assert out.code == 0
    assert "(2 cleared by a later ok line)" in out.line
    log.write("2025-01-14 09:20:00 queue example.net/vmta-c resumed\n", DISABLED)
    out = log.check("--ok-pattern", r"queue \S+ resumed")
    assert out.code == 2  # the ok line came first


def test_exclude_and_pattern_file(log: Log, tmp_path: Path) -> None:
    log.check()
    log.write(BIND, ERROR, DISABLED)
    out = log.check("--exclude-pattern", "mx.example.org", "--exclude-pattern", "example.net")
    assert out.code == 0 and log.counts(out) == ("0", "0")
    assert out.value("excluded_lines") == "2"  # ERROR matches no class: not an excluded line
    patterns = tmp_path / "patterns"
    patterns.write_text("# PowerMTA patterns\n[critical]\nconnect rate limit\n[warning]\n"
                        "are now disabled\n\\berror\\b\n[exclude]\n")
    log.write(DISABLED, "2025-01-14 09:21:00 connect rate limit reached\n", BIND, ERROR)
    out = log.check("--pattern-file", str(patterns))
    # critical, warning and exclude were replaced: BIND is no longer a pattern, and the
    # remote reply ERROR (excluded by default) counts.
    assert log.counts(out) == ("1", "2") and out.code == 2
    patterns.write_text("[bogus]\nx\n")
    out = log.check("--pattern-file", str(patterns))
    assert out.code == 3 and out.line == (
        f"PMTA LOG UNKNOWN - usage: argument --pattern-file: {patterns}:1: unknown section "
        "[bogus] (use critical, warning, exclude, ok) (see --help)"
    )


@pytest.mark.parametrize(("pattern", "error"), [
    ("(unclosed", "missing ), unterminated subpattern at position 0"),
    (r"caf\u00e9", r"bad escape \u at position 3"),  # fine in a Python str, not over bytes
    ("(?i)error", "global flags not at the start of the expression once combined with other "
                  "patterns"),
])
def test_bad_regex_is_a_usage_error(log: Log, tmp_path: Path, pattern: str, error: str) -> None:
    for option in ("--critical-pattern", "--warning-pattern", "--exclude-pattern", "--ok-pattern"):
        out = log.check(option, pattern)
        assert (out.code, out.err) == (3, ""), out
        assert out.out == (f"PMTA LOG UNKNOWN - usage: argument {option}: bad regular "
                           f"expression '{pattern}': {error} (see --help)\n")
    patterns = tmp_path / "patterns"
    patterns.write_text(f"[warning]\nconnect rate limit\n\n[ok]\n{pattern}\n")
    out = log.check("--pattern-file", str(patterns))
    assert (out.code, out.err) == (3, ""), out
    assert out.out == (f"PMTA LOG UNKNOWN - usage: argument --pattern-file: {patterns}:5: bad "
                       f"regular expression '{pattern}': {error} (see --help)\n")


def test_patterns_that_clash_name_the_option(log: Log, tmp_path: Path) -> None:
    """Each pattern is fine alone, not in one alternation with the other (one group name)."""
    patterns = tmp_path / "patterns"
    patterns.write_text("[warning]\n(?P<host>mx\\S+) refused\n")
    out = log.check("--pattern-file", str(patterns), "--warning-pattern", r"(?P<host>\S+) down")
    assert out.code == 3 and out.line.startswith(
        r"PMTA LOG UNKNOWN - usage: argument --warning-pattern: bad warning pattern "
        r"'(?P<host>\S+) down': redefinition of group name 'host'"
    ), out.line
    out = log.check("--pattern-file", str(patterns), "--warning-pattern", r"(?P<host>\S+) down",
                    "--output", "zabbix")
    assert out.code == 0 and out.out.startswith("ZBX_NOTSUPPORTED: usage: argument "), out.out


def test_rotation_by_rename_between_runs(log: Log) -> None:
    log.check()
    log.write(BIND)
    log.path.rename(log.dir / "log.1")
    log.path.write_text(DISABLED)
    out = log.check()
    assert log.counts(out) == ("1", "1")
    assert f"{log.path} was rotated; read the rest of {log.dir}/log.1 first" in out.out
    assert log.counts(log.check()) == ("0", "0")  # nothing twice


def test_rotation_by_copytruncate_between_runs(log: Log) -> None:
    log.check()
    log.write(BIND, BIND)
    shutil.copyfile(log.path, log.dir / "log.1")
    with log.path.open("r+") as fh:
        fh.truncate(0)
    log.write(DISABLED)
    out = log.check()
    assert log.counts(out) == ("1", "2")
    assert "was truncated (copytruncate)" in out.out
    assert log.counts(log.check()) == ("0", "0")


def test_rotation_then_compression_between_runs(log: Log) -> None:
    log.check()
    log.write(BIND, ERROR, BIND)
    log.path.rename(log.dir / "log.1")
    with (log.dir / "log.1").open("rb") as src, gzip.open(log.dir / "log.1.gz", "wb") as dst:
        dst.write(src.read())
    (log.dir / "log.1").unlink()
    log.path.write_text(STARTUP)
    out = log.check()
    assert log.counts(out) == ("1", "2")
    assert log.counts(log.check()) == ("0", "0")


def test_two_rotations_between_runs(log: Log) -> None:
    log.check()
    log.write(BIND)
    log.path.rename(log.dir / "log.1")
    log.path.write_text(BIND)
    log.path.rename(log.dir / "log.2")  # log.1 -> log.2 happens first in real rotation
    (log.dir / "log.1").rename(log.dir / "log.tmp")
    (log.dir / "log.2").rename(log.dir / "log.1")
    (log.dir / "log.tmp").rename(log.dir / "log.2")
    log.path.write_text(DISABLED)
    out = log.check()
    assert log.counts(out) == ("1", "2")


def test_missing_and_unreadable_logs(log: Log, tmp_path: Path) -> None:
    out = run_main(main, ["-l", str(tmp_path / "nope"), "--state-dir", str(tmp_path / "s")],
                   log.capsys)
    assert out.code == 3
    assert out.line == (f"PMTA LOG UNKNOWN - log file {tmp_path}/nope does not exist "
                        "(check --logfile)")
    out = run_main(main, ["-l", str(tmp_path), "--state-dir", str(tmp_path / "s")], log.capsys)
    assert out.code == 3 and out.line.startswith("PMTA LOG UNKNOWN - cannot read")


def test_corrupt_and_unreadable_state(log: Log) -> None:
    log.check("--instance", "main")
    state = log.dir / "state" / "check_pmta_log-main.json"
    state.write_text("[1, 2")
    log.write(DISABLED)
    out = log.check("--instance", "main")
    assert out.code == 0  # reset: a first run again, at the end
    assert "state reset" in out.out
    state.unlink()
    state.mkdir()
    out = log.check("--instance", "main")
    assert out.code == 3 and "cannot read state file" in out.line


def test_timeout_keeps_what_was_read(log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    from pmta_snmp.checks import base

    log.check()
    log.write(DISABLED, BIND)
    monkeypatch.setattr(base.Run, "soft_deadline", lambda self, margin=0.15: 0.0)
    out = log.check("-t", "2")
    assert out.code == 3
    assert out.line.startswith(
        f"PMTA LOG UNKNOWN - timed out after 2 s reading {log.path} (0 MB scanned; the rest is "
        "read next run); so far: 0 critical"
    )
    monkeypatch.undo()
    out = log.check("-t", "2")
    assert log.counts(out) == ("1", "1")


def test_timeout_with_matches_keeps_the_problem_state(
        log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading stops at the deadline: what was found is reported and is not read again."""
    from pmta_snmp.checks import base, logscan

    import pmta_snmp.logtail as lt

    log.check()
    log.write(DISABLED * 10, BIND * 10)
    real_feed, real_init = logscan.Scanner.feed, lt.TailReader.__init__

    def slow_feed(self: logscan.Scanner, data: bytes, deadline: float | None = None) -> int:
        time.sleep(0.1)
        return real_feed(self, data, deadline)

    def small_chunks(self: lt.TailReader, *a: object, **kw: object) -> None:
        kw["chunk_size"] = len(DISABLED) * 5  # four blocks
        real_init(self, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(logscan.Scanner, "feed", slow_feed)
    monkeypatch.setattr(lt.TailReader, "__init__", small_chunks)
    monkeypatch.setattr(base.Run, "soft_deadline",
                        lambda self, margin=0.15: time.monotonic() + 0.05)
    out = log.check("-t", "5")
    monkeypatch.undo()
    assert out.code == 2
    assert out.line.endswith("the rest is read next run)")
    first = log.counts(out)
    assert first[1] != "10"  # it did stop early
    rest = log.counts(log.check())
    assert int(first[0]) + int(rest[0]) == 10 and int(first[1]) + int(rest[1]) == 10


def test_deadline_inside_a_block_keeps_the_lines_scanned(
        log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block whose scan outlasts the deadline is cut between slices: the state points
    after the last line scanned, so the next run counts each line once."""
    from pmta_snmp.checks import base, logscan

    log.check()
    log.write(*[DISABLED, BIND, NORMAL] * 40)  # one block, many slices
    real_scan = logscan.Scanner._count_and_scan

    def slow_scan(self: logscan.Scanner, data: bytes) -> None:
        time.sleep(0.02)
        real_scan(self, data)

    monkeypatch.setattr(logscan, "_SLICE", 200)
    monkeypatch.setattr(logscan.Scanner, "_count_and_scan", slow_scan)
    monkeypatch.setattr(base.Run, "soft_deadline",
                        lambda self, margin=0.15: time.monotonic() + 0.1)
    out = log.check("-t", "5", "-c", "~:", "-w", "~:")
    monkeypatch.undo()
    assert out.code == 3 and "the rest is read next run); so far:" in out.line, out.line
    first = log.counts(out)
    assert 0 < int(first[0]) < 40
    rest = log.counts(log.check("-c", "~:", "-w", "~:"))
    assert int(first[0]) + int(rest[0]) == 40 and int(first[1]) + int(rest[1]) == 40

def test_zabbix_outputs(log: Log) -> None:
    log.check()
    log.write(DISABLED, BIND)
    out = log.check("--output", "zabbix")
    assert (out.code, out.out, out.err) == (0, "1\n", "")
    log.write(DISABLED)
    doc = json.loads(log.check("--json").out)
    assert doc["status"] == 2 and doc["details"]["critical"]["count"] == 1
    assert doc["details"]["critical"]["last"] == DISABLED.strip()


def test_verbose_says_what_was_scanned_and_by_which_engine(
        log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    from pmta_snmp.checks import logscan

    log.check()
    out = log.check("-v")
    assert "log: 0 MB, 0 lines scanned in " in out.out and "needles found by" not in out.out
    monkeypatch.setenv(logscan.PURE_PYTHON_ENV, "1")
    log.write(BIND, NORMAL)
    out = log.check("-v")
    assert ", 2 lines scanned in " in out.out and "(needles found by python)" in out.out, out.out


def test_long_lines_are_truncated(log: Log) -> None:
    log.check()
    log.write("2025-01-14 09:13:35 FATAL " + "x" * 5000 + "\n")
    out = log.check()
    assert out.code == 2
    assert len(out.line) < 400 and out.line.endswith("...")


def test_plain_log_imports_no_decompressor(tmp_path: Path) -> None:
    """gzip/bz2/lzma are imported only for a compressed file (cold start of every run)."""
    path = tmp_path / "log"
    path.write_text(NORMAL * 3)
    code = ("import sys; from pmta_snmp.checks.log import main; "
            f"main(['-l', {str(path)!r}, '--state-dir', {str(tmp_path / 's')!r}, "
            "'--from-start']); print('gzip' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stderr.strip() == "False"


def test_second_run_on_unchanged_big_file_reads_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run on a log that did not change reads none of its content: only the fingerprints
    that prove it is the same file (the first bytes and the bytes before the offset)."""
    import pmta_snmp.logtail as lt

    path = tmp_path / "log"
    path.write_bytes((NORMAL * 200_000).encode())  # ~9 MB
    argv = ["-l", str(path), "--state-dir", str(tmp_path / "s"), "--from-start"]
    assert run_main(main, argv, capsys).value("bytes") == f"{path.stat().st_size}B"
    readers: list[lt.TailReader] = []
    real_init = lt.TailReader.__init__

    def recorded(self: lt.TailReader, *a: Any, **kw: Any) -> None:
        real_init(self, *a, **kw)
        readers.append(self)

    preads: list[int] = []
    real_pread = os.pread

    def counted_pread(fd: int, length: int, offset: int) -> bytes:
        data = real_pread(fd, length, offset)
        preads.append(len(data))
        return data

    monkeypatch.setattr(lt.TailReader, "__init__", recorded)
    monkeypatch.setattr(os, "pread", counted_pread)
    out = run_main(main, argv, capsys)
    assert out.code == 0 and (out.value("bytes"), out.value("lines")) == ("0B", "0")
    assert [r.bytes_read for r in readers] == [0]
    # The fingerprints (each read when the file is opened and when the state is checked).
    assert sum(preads) <= 2 * (lt.HEAD_LEN + lt.TAIL_LEN), preads


def _realistic_log(path: Path, lines: int) -> None:
    """PowerMTA main-log lines (bench.checks' generator): traffic, remote replies, and about
    3 % matching lines of the bench's pattern set."""
    from bench.checks import make_mixed_log

    make_mixed_log(path, lines * 100)


def test_counts_equal_grep_on_a_realistic_log(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Ground truth: the plugin's critical+warning count is grep's count of the lines
    matching the same alternatives (no exclude), on a realistic log with an incident burst."""
    grep = shutil.which("grep")
    if grep is None:
        pytest.skip("grep not installed")
    from bench.checks import BENCH_PATTERNS, bench_pattern_file, grep_pattern, make_incident_log

    path = tmp_path / "log"
    _realistic_log(path, 20_000)
    incident = tmp_path / "incident"
    make_incident_log(incident, 1_000_000)
    with path.open("ab") as fh:  # a burst of one repeated matching line inside
        fh.write(incident.read_bytes())
        fh.write(path.read_bytes()[:500_000].rsplit(b"\n", 1)[0] + b"\n")
    patterns = bench_pattern_file(tmp_path / "patterns")
    grep_out = subprocess.run([grep, "-c", "-i", "-E", grep_pattern(BENCH_PATTERNS), str(path)],
                              capture_output=True, text=True, check=True,
                              env=dict(os.environ, LC_ALL="C"))
    out = run_main(main, ["-l", str(path), "--state-dir", str(tmp_path / "s"), "--from-start",
                          "--pattern-file", str(patterns), "-w", "~:", "-c", "~:"], capsys)
    assert out.code == 0, out.line
    assert int(out.value("critical_lines")) + int(out.value("warning_lines")) == \
        int(grep_out.stdout) > 10_000


def test_subprocess(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text(NORMAL + DISABLED)
    env = dict(os.environ, PMTA_SNMP_STATE_DIR=str(tmp_path / "st"))
    out = run_subprocess("log", ["-l", str(path), "--from-start"], env=env)
    assert out.code == 2, out
    assert out.line.startswith(f"PMTA LOG CRITICAL - 1 critical, 0 warning lines in {path}")
    assert out.err == ""
    out = run_subprocess("log", ["-l", str(path)], env=env)
    assert out.code == 0


def test_healthy_simulator_log_stays_ok(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 13 §6: two hours of a healthy PowerMTA's log (remote ETIMEDOUTs, `Error: "421
    ..."` replies, rate limits, TLS traces) are normal traffic, not WARNING."""
    from pmta_snmp.sim import Simulator

    sim = Simulator("healthy", speed=0, seed=3, log_path=tmp_path / "pmta" / "log",
                    start_time=two_hours_within_one_day())
    sim.start()
    try:
        sim.advance(7200)
    finally:
        sim.stop()
    text = (tmp_path / "pmta" / "log").read_text()
    assert "ETIMEDOUT" in text and 'Error: "' in text  # remote trouble is there
    out = run_main(main, ["-l", str(tmp_path / "pmta" / "log"), "--state-dir",
                          str(tmp_path / "s"), "--from-start"], capsys)
    assert out.code == 0, out.line
    assert log_counts(out) == ("0", "0") and int(out.value("lines")) > 100


@pytest.mark.parametrize("scenario", ["license-expired", "stuck"])
def test_simulator_local_failures_are_critical(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               scenario: str) -> None:
    """The simulator's license-expired log and its stuck queue's "all sources disabled"."""
    from pmta_snmp.sim import Simulator

    sim = Simulator(scenario, speed=0, seed=3, log_path=tmp_path / "pmta" / "log",
                    start_time=two_hours_within_one_day())
    sim.start()
    try:
        sim.advance(7200)
    finally:
        sim.stop()
    out = run_main(main, ["-l", str(tmp_path / "pmta" / "log"), "--state-dir",
                          str(tmp_path / "s"), "--from-start"], capsys)
    assert out.code == 2, out.line
    assert ("License expired" if scenario == "license-expired" else "are now disabled") \
        in out.line


def two_hours_within_one_day() -> datetime:
    """A simulated start two hours before now, or at 21:00 yesterday when that two hours would
    cross midnight: the simulated PowerMTA rotates its log at midnight (as the real one does),
    and the live log then held only the lines after it (a run between 00:00 and 02:00 failed)."""
    now = datetime.now().astimezone()
    start = now - timedelta(hours=2)
    if start.date() != now.date():
        start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(hours=3)
    return start


def log_counts(out: Outcome) -> tuple[str, str]:
    return out.value("critical_lines"), out.value("warning_lines")


def test_control_bytes_in_a_log_line_never_reach_the_output(tmp_path: Path) -> None:
    """NUL, ESC, BEL, DEL and a C1 control in a matched line: Nagios would cut the output at
    the NUL and lose the perfdata; each is shown as `?` and the perfdata stays."""
    from tests.integration.test_checks_support import python_executable

    path = tmp_path / "log"
    path.write_bytes(NORMAL.encode())
    argv = [python_executable(), "-m", "pmta_snmp.checks.log", "-l", str(path), "--state-dir",
            str(tmp_path / "state"), "--critical-pattern", "are now disabled"]
    subprocess.run(argv, capture_output=True, check=False)  # first run: from the end
    with path.open("ab") as fh:
        fh.write(b"2025-01-14 09:13:35 All SMTP sources for queue \x00\x1b[31mexample.net\x07"
                 b"/vmta-c\xc2\x9b are now disabled.\x7f\n")
    proc = subprocess.run(argv, capture_output=True, check=False)
    assert proc.returncode == 2, proc
    out = proc.stdout.decode("utf-8")
    assert not [c for c in out if c != "\n" and (ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f)], out
    assert ("last critical: 2025-01-14 09:13:35 All SMTP sources for queue ??[31mexample.net?"
            "/vmta-c? are now disabled.?") in out.splitlines()[0]
    assert "critical_lines=1;" in out.rsplit("|", 1)[1]
