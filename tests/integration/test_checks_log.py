"""check_pmta_log: tailing PowerMTA's main log across rotations, pattern classes, thresholds."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pmta_snmp.checks.log import main

from tests.integration.test_checks_support import Outcome, run_main, run_subprocess

NORMAL = "2025-01-14 09:13:30 starting example.com/vmta-a\n"
TIMEOUT = "2025-01-14 09:13:34 ETIMEDOUT connecting to mx.example.org (192.0.2.40)\n"
DISABLED = ("2025-01-14 09:13:35 All SMTP sources for queue example.net/vmta-c are now "
            "disabled.\n")
ERROR = '2025-01-14 09:13:36 Error: "421 4.7.0 try later" while connected from a to b\n'
STARTUP = "2025-01-14 09:14:00 Startup error: No logging file specified\n"


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
    log.write(TIMEOUT, NORMAL)
    out = log.check()
    assert out.code == 1
    assert out.line == (
        f"PMTA LOG WARNING - 0 critical, 1 warning lines in {log.path} since the last run; "
        f"last warning: {TIMEOUT.strip()}"
    )
    assert out.perf["warning_lines"] == "1;0;;0"
    assert log.check().code == 0  # nothing new


def test_from_start_and_classes(log: Log) -> None:
    log.write(TIMEOUT, DISABLED, ERROR, STARTUP)
    out = log.check("--from-start")
    assert out.code == 2
    assert out.line == (
        f"PMTA LOG CRITICAL - 2 critical, 2 warning lines in {log.path} since the last run; "
        f"last critical: {STARTUP.strip()}"
    )
    assert out.value("lines") == "7"
    assert "first run" not in out.out  # --from-start read it all


def test_count_thresholds_per_class(log: Log) -> None:
    log.check()
    log.write(TIMEOUT * 3, DISABLED)
    out = log.check("-w", "5", "-c", "1")
    assert out.code == 0 and log.counts(out) == ("1", "3")
    log.write(TIMEOUT * 6)
    out = log.check("-w", "5", "-c", "1")
    assert out.code == 1 and log.counts(out) == ("0", "6")


def test_ok_line_clears_earlier_problems(log: Log) -> None:
    log.check()
    log.write(DISABLED, TIMEOUT, "2025-01-14 09:20:00 queue example.net/vmta-c resumed\n",
              NORMAL)
    out = log.check("--ok-pattern", r"queue \S+ resumed")
    assert out.code == 0
    assert "(2 cleared by a later ok line)" in out.line
    log.write("2025-01-14 09:20:00 queue example.net/vmta-c resumed\n", DISABLED)
    out = log.check("--ok-pattern", r"queue \S+ resumed")
    assert out.code == 2  # the ok line came first


def test_exclude_and_pattern_file(log: Log, tmp_path: Path) -> None:
    log.check()
    log.write(TIMEOUT, ERROR, DISABLED)
    out = log.check("--exclude-pattern", "mx.example.org", "--exclude-pattern", "try later")
    assert out.code == 2 and log.counts(out) == ("1", "0")
    assert out.value("excluded_lines") == "2"
    patterns = tmp_path / "patterns"
    patterns.write_text("# PowerMTA patterns\n[critical]\nconnect rate limit\n[warning]\n"
                        "are now disabled\n")
    log.write(DISABLED, "2025-01-14 09:21:00 connect rate limit reached\n", TIMEOUT)
    out = log.check("--pattern-file", str(patterns))
    # critical and warning were replaced; ETIMEDOUT is no longer a pattern.
    assert log.counts(out) == ("1", "1") and out.code == 2
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
    log.write(TIMEOUT)
    log.path.rename(log.dir / "log.1")
    log.path.write_text(DISABLED)
    out = log.check()
    assert log.counts(out) == ("1", "1")
    assert f"{log.path} was rotated; read the rest of {log.dir}/log.1 first" in out.out
    assert log.counts(log.check()) == ("0", "0")  # nothing twice


def test_rotation_by_copytruncate_between_runs(log: Log) -> None:
    log.check()
    log.write(TIMEOUT, TIMEOUT)
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
    log.write(TIMEOUT, ERROR)
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
    log.write(TIMEOUT)
    log.path.rename(log.dir / "log.1")
    log.path.write_text(ERROR)
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
    log.write(DISABLED, TIMEOUT)
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
    log.write(DISABLED * 10, TIMEOUT * 10)
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
    log.write(*[DISABLED, TIMEOUT, NORMAL] * 40)  # one block, many slices
    real_scan = logscan.Scanner._scan

    def slow_scan(self: logscan.Scanner, data: bytes) -> None:
        time.sleep(0.02)
        real_scan(self, data)

    monkeypatch.setattr(logscan, "_SLICE", 200)
    monkeypatch.setattr(logscan.Scanner, "_scan", slow_scan)
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
    log.write(DISABLED, TIMEOUT)
    out = log.check("--output", "zabbix")
    assert (out.code, out.out, out.err) == (0, "1\n", "")
    log.write(DISABLED)
    doc = json.loads(log.check("--json").out)
    assert doc["status"] == 2 and doc["details"]["critical"]["count"] == 1
    assert doc["details"]["critical"]["last"] == DISABLED.strip()


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


def test_second_run_on_unchanged_big_file_is_fast(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "log"
    path.write_bytes((NORMAL * 200_000).encode())  # ~9 MB
    argv = ["-l", str(path), "--state-dir", str(tmp_path / "s"), "--from-start"]
    run_main(main, argv, capsys)
    start = time.perf_counter()
    out = run_main(main, argv, capsys)
    elapsed = time.perf_counter() - start
    assert out.code == 0 and out.value("bytes") == "0B"
    assert elapsed < 0.05, elapsed


def test_scan_speed_against_grep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A large backlog scans at a useful fraction of `grep -c -i -E` (same patterns)."""
    grep = shutil.which("grep")
    if grep is None:
        pytest.skip("grep not installed")
    from pmta_snmp.checks.logscan import DEFAULT_PATTERNS

    block = (NORMAL * 40 + "2025-01-14 09:13:31 tls:TLSv1.2 connected with 128-bit "
             "ECDHE-RSA-AES128-GCM-SHA256\n" * 40 + TIMEOUT + ERROR + DISABLED)
    path = tmp_path / "log"
    with path.open("wb") as fh:
        data = block.encode()
        for _ in range((48 << 20) // len(data)):
            fh.write(data)
    pattern = "|".join(DEFAULT_PATTERNS["critical"] + DEFAULT_PATTERNS["warning"])
    best_grep = min(_timed([grep, "-c", "-i", "-E", pattern, str(path)]) for _ in range(2))
    argv = ["-l", str(path), "--state-dir", str(tmp_path / "s"), "--from-start", "-w", "~:",
            "-c", "~:"]
    timings = []
    for i in range(2):
        start = time.perf_counter()
        out = run_main(main, [*argv, "--instance", f"speed{i}"], capsys)
        timings.append(time.perf_counter() - start)
    ratio = best_grep / min(timings)
    print(f"grep {best_grep:.3f}s, check_pmta_log {min(timings):.3f}s, ratio {ratio:.2f}")
    assert out.code == 0 and out.value("critical_lines") != "0"
    assert ratio >= 0.2, f"scan speed {ratio:.2f} of grep's"


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0 and int(proc.stdout) > 0, proc
    return elapsed


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


def test_short_timeout_scans_instead_of_starting_workers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run with less time left than starting workers costs (POOL_MIN_REMAINING_S) does not
    start them on a backlog where every line matches: it scans in this process alone. No
    clock is compared: the threshold is raised above -t, so the rule decides, not the speed
    of the machine, and the run has ample time to finish with an exact count."""
    import multiprocessing.context

    from pmta_snmp.checks import logscan

    path = tmp_path / "log"
    lines = (4 << 20) // len(TIMEOUT)
    path.write_bytes(TIMEOUT.encode() * lines)  # 4 MiB, 4 blocks
    pools: list[object] = []
    real_pool = multiprocessing.context.BaseContext.Pool

    def recorded_pool(self: multiprocessing.context.BaseContext, *a: Any, **kw: Any) -> Any:
        pools.append(self)
        return real_pool(self, *a, **kw)

    monkeypatch.setattr(logscan, "PARALLEL_AFTER", 0)  # workers right after the first block
    monkeypatch.setattr(logscan, "POOL_MIN_REMAINING_S", 10_000.0)  # more than -t leaves
    monkeypatch.setattr("os.cpu_count", lambda: 2)  # one worker would be started otherwise
    monkeypatch.setattr(multiprocessing.context.BaseContext, "Pool", recorded_pool)
    argv = ["-l", str(path), "--state-dir", str(tmp_path / "s"), "--from-start", "-w", "~:",
            "-t", "600"]
    out = run_main(main, argv, capsys)
    assert pools == [], "worker processes were started with too little time left"
    assert out.code == 0, out.line
    assert int(out.value("warning_lines")) == lines, out.line


def test_workers_start_when_time_allows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The counterpart: with the threshold below what -t leaves, the same backlog is shared
    with worker processes, and the count is still exact."""
    import multiprocessing.context

    from pmta_snmp.checks import logscan

    path = tmp_path / "log"
    lines = (4 << 20) // len(TIMEOUT)
    path.write_bytes(TIMEOUT.encode() * lines)
    pools: list[object] = []
    real_pool = multiprocessing.context.BaseContext.Pool

    def recorded_pool(self: multiprocessing.context.BaseContext, *a: Any, **kw: Any) -> Any:
        pools.append(self)
        return real_pool(self, *a, **kw)

    monkeypatch.setattr(logscan, "PARALLEL_AFTER", 0)
    monkeypatch.setattr(logscan, "POOL_MIN_REMAINING_S", 0.0)
    monkeypatch.setattr(logscan, "MAX_WORKERS", 2)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr(multiprocessing.context.BaseContext, "Pool", recorded_pool)
    argv = ["-l", str(path), "--state-dir", str(tmp_path / "s"), "--from-start", "-w", "~:",
            "-t", "600"]
    out = run_main(main, argv, capsys)
    assert len(pools) == 1, "no worker processes for a backlog with time to spare"
    assert out.code == 0, out.line
    assert int(out.value("warning_lines")) == lines, out.line


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
