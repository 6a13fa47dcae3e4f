"""Logs and accounting files rotated by rename, copytruncate and compression, between and
during plugin runs: no line lost, none counted twice.

The real plugins run as child processes while a writer keeps the ground truth and rotates the
file itself (serialised with its writes, as PowerMTA and logrotate's rename do). check_pmta_log
reports per-run counts (perfdata `lines`, `warning_lines`, `critical_lines`): their sums over
all runs must equal what was written. check_pmta_bounce keeps a rolling window in its state:
after the last run the window totals (`attempts`, `delivered`, `hard`, `soft`) must equal every
record written (all inside the window).

Two races between a run and a rotation are pinned down deterministically at the end (a hook
rotates the file right after the reader opened it); both lost or duplicated lines before the
fix in pmta_snmp/logtail.py.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pmta_snmp import logtail
from pmta_snmp.logtail import TailReader, TailState
from tests.reliability._files import (
    ACCT_HEADER,
    AcctTruth,
    Churn,
    LogTruth,
    RotatingFile,
    acct_row,
)
from tests.reliability._support import PluginOutcome, run_plugin

NUMBERED = ["rename", "copytruncate", "compress", "delaycompress"]
DATED = ["dated", "dated-gz"]
#: A rename rotation leaves the live path missing for an instant; a run landing there says so
#: (UNKNOWN) and keeps its state. Counted, not a failure.
MISSING = "does not exist"


class LogRuns:
    """check_pmta_log runs against one log, summing the per-run counts."""

    def __init__(self, log: Path, state: Path) -> None:
        self.argv = ["-l", str(log), "--state-dir", str(state), "-w", "1000000", "-c", "1000000"]
        self.sums = {"lines": 0, "warning": 0, "critical": 0}
        self.runs = 0
        self.missing = 0
        self.notes: list[str] = []

    def run(self, *extra: str) -> PluginOutcome:
        out = run_plugin("log", [*self.argv, *extra])
        assert "Traceback" not in out.err, out.err
        self.runs += 1
        if out.code == 3 and MISSING in out.line:
            self.missing += 1
            return out
        assert out.code == 0, out.out + out.err
        self.sums["lines"] += int(out.number("lines"))
        self.sums["warning"] += int(out.number("warning_lines"))
        self.sums["critical"] += int(out.number("critical_lines"))
        self.notes += [line for line in out.out.splitlines()[1:]
                       if any(w in line for w in ("rotated", "truncated", "not found"))]
        assert "not found after rotation" not in out.out, out.out  # the reader's `lost` note
        return out


def test_log_rotations_between_runs(tmp_path: Path) -> None:
    log = RotatingFile(tmp_path / "log")
    truth = LogTruth(log, seed=1)
    truth.write_batch(10)
    runs = LogRuns(log.path, tmp_path / "state")
    runs.run("--from-start")
    # Every kind, alone and several between two runs, with writes before and after each.
    plan = [["rename"], ["copytruncate"], ["compress"], ["delaycompress"],
            ["rename", "rename"], ["compress", "copytruncate"], ["rename", "compress", "rename"],
            ["copytruncate", "delaycompress", "delaycompress"]]
    for kinds in plan:
        truth.write_batch()
        for kind in kinds:
            truth.write_batch(rotate=kind)
        runs.run()
        truth.write_batch()
        runs.run()
    log.close()
    runs.run()
    assert runs.sums == truth.counts, (runs.sums, truth.counts, runs.notes)
    assert any("rotated" in n for n in runs.notes) and any("truncated" in n for n in runs.notes)


@pytest.mark.slow
def test_log_rotations_during_runs(tmp_path: Path) -> None:
    log = RotatingFile(tmp_path / "log")
    truth = LogTruth(log, seed=2)
    truth.write_batch(10)
    runs = LogRuns(log.path, tmp_path / "state")
    runs.run("--from-start")
    churn = Churn(truth, NUMBERED, seed=3, rotate_every=0.1)
    churn.start()
    t_end = time.monotonic() + 6
    try:
        while time.monotonic() < t_end:
            runs.run()
    finally:
        churn.stop()
    log.close()
    runs.run()
    print(f"\nlog: {runs.runs} runs ({runs.missing} saw the instant of a rename), "
          f"rotations {log.rotations}, written {truth.counts}")
    assert sum(log.rotations.values()) >= 20
    assert runs.sums == truth.counts, (runs.sums, truth.counts)


class BounceRuns:
    """check_pmta_bounce runs against one accounting file; the window after each run."""

    def __init__(self, acct: Path, state: Path) -> None:
        self.argv = ["--acct-file", str(acct), "--state-dir", str(state), "--window", "1d",
                     "-w", "100", "-c", "100", "--min-volume", "0"]
        self.runs = 0
        self.missing = 0
        self.last: dict[str, int] = {}

    def run(self, *extra: str) -> PluginOutcome:
        out = run_plugin("bounce", [*self.argv, *extra])
        assert "Traceback" not in out.err, out.err
        self.runs += 1
        if out.code == 3 and MISSING in out.line:
            self.missing += 1
            return out
        assert out.code == 0, out.out + out.err
        assert "not found after rotation" not in out.out, out.out
        assert "malformed" not in out.out, out.out
        now = {k: int(out.number(k)) for k in ("attempts", "delivered", "hard", "soft")}
        for key, value in now.items():  # the window only grows here (all records are recent)
            assert value >= self.last.get(key, 0), (key, value, self.last)
        self.last = now
        return out

    def assert_matches(self, truth: AcctTruth) -> None:
        c = truth.counts
        want = {"attempts": c["d"] + c["h"] + c["s"], "delivered": c["d"], "hard": c["h"],
                "soft": c["s"]}
        assert self.last == want, (self.last, want)


@pytest.mark.parametrize("kinds", [NUMBERED, DATED], ids=["numbered", "dated"])
def test_accounting_rotations_between_runs(tmp_path: Path, kinds: list[str]) -> None:
    acct = RotatingFile(tmp_path / "acct.csv", header=ACCT_HEADER)
    truth = AcctTruth(acct, seed=4)
    truth.write_batch(10)
    runs = BounceRuns(acct.path, tmp_path / "state")
    runs.run("--from-start")
    plan = [[k] for k in kinds] + [[k, k] for k in kinds] + [kinds]
    for step in plan:
        truth.write_batch()
        for kind in step:
            truth.write_batch(rotate=kind)
        runs.run()
    acct.close()
    runs.run()
    runs.assert_matches(truth)


@pytest.mark.slow
@pytest.mark.parametrize("kinds", [NUMBERED, DATED], ids=["numbered", "dated"])
def test_accounting_rotations_during_runs(tmp_path: Path, kinds: list[str]) -> None:
    acct = RotatingFile(tmp_path / "acct.csv", header=ACCT_HEADER)
    truth = AcctTruth(acct, seed=5)
    truth.write_batch(10)
    runs = BounceRuns(acct.path, tmp_path / "state")
    runs.run("--from-start")
    churn = Churn(truth, kinds, seed=6, rotate_every=0.1)
    churn.start()
    t_end = time.monotonic() + 5
    try:
        while time.monotonic() < t_end:
            runs.run()
    finally:
        churn.stop()
    acct.close()
    runs.run()
    print(f"\nacct: {runs.runs} runs ({runs.missing} saw the instant of a rename), "
          f"rotations {acct.rotations}, written {truth.counts}")
    assert sum(acct.rotations.values()) >= 15
    runs.assert_matches(truth)


# --- the two races, deterministically ----------------------------------------------------


def numbered_lines(a: int, b: int) -> str:
    return "".join(f"2025-01-14 09:00:00 line number {n}\n" for n in range(a, b + 1))


def tail_once(path: Path, state: TailState | None,
              after_live_open: Callable[[], None] | None = None) -> tuple[list[int], TailState]:
    """One TailReader run (as the plugins do); `after_live_open` runs right after the reader
    opened the live file, i.e. a rotation lands in the middle of the run."""
    original = logtail._open
    fired = False

    def hooked(p: str, *, sibling: bool = False) -> logtail._File | None:
        nonlocal fired
        f = original(p, sibling=sibling)
        if after_live_open is not None and not sibling and p == str(path) and not fired:
            fired = True
            after_live_open()
        return f

    logtail._open = hooked  # type: ignore[assignment]
    try:
        reader = TailReader(str(path), state)
        got = [int(m.group(1)) for line in reader.lines()
               if (m := re.search(r"number (\d+)$", line))]
        return got, reader.state
    finally:
        logtail._open = original


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "log"
    path.write_text(numbered_lines(1, 100))
    yield path


def test_copytruncate_while_a_run_reads_loses_and_repeats_nothing(log_file: Path) -> None:
    _, state = tail_once(log_file, None)  # first run: starts at the end
    with log_file.open("a") as fh:
        fh.write(numbered_lines(101, 200))

    def copytruncate_and_regrow() -> None:
        shutil.copyfile(log_file, log_file.with_name("log.1"))
        os.truncate(log_file, 0)
        with log_file.open("a") as fh:
            fh.write(numbered_lines(201, 400))  # regrown past the old offset

    first, state = tail_once(log_file, state, copytruncate_and_regrow)
    second, _ = tail_once(log_file, state)
    got = first + second
    assert sorted(got) == list(range(101, 401)), (first[-3:], second[:3])
    assert len(got) == len(set(got))


def test_rename_between_opening_and_listing_reads_the_file_once(log_file: Path) -> None:
    _, state = tail_once(log_file, None)
    with log_file.open("a") as fh:
        fh.write(numbered_lines(101, 150))
    os.rename(log_file, log_file.with_name("log.1"))  # rotation 1: a new live file
    log_file.write_text(numbered_lines(151, 200))

    def rotate_again() -> None:  # rotation 2, after the reader opened the live file
        os.rename(log_file.with_name("log.1"), log_file.with_name("log.2"))
        os.rename(log_file, log_file.with_name("log.1"))
        log_file.write_text(numbered_lines(201, 250))

    first, state = tail_once(log_file, state, rotate_again)
    second, _ = tail_once(log_file, state)
    got = first + second
    assert sorted(got) == list(range(101, 251)), (first, second)
    assert len(got) == len(set(got))


def gzip_away(path: Path) -> Path:
    """`path` -> `path.gz` (as logrotate's compress does), the original removed."""
    import gzip

    dest = path.with_name(path.name + ".gz")
    with path.open("rb") as src, gzip.open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    return dest


def test_live_file_compressed_after_opening_is_read_once(log_file: Path) -> None:
    _, state = tail_once(log_file, None)
    with log_file.open("a") as fh:
        fh.write(numbered_lines(101, 150))
    os.rename(log_file, log_file.with_name("log.1"))  # rotation 1: a new live file
    log_file.write_text(numbered_lines(151, 200))

    def rotate_and_compress() -> None:  # rotation 2 (compress), after the live file was opened
        os.rename(log_file.with_name("log.1"), log_file.with_name("log.2"))
        os.rename(log_file, log_file.with_name("log.1"))
        gzip_away(log_file.with_name("log.1"))
        log_file.write_text(numbered_lines(201, 250))

    first, state = tail_once(log_file, state, rotate_and_compress)
    second, _ = tail_once(log_file, state)
    got = first + second
    assert sorted(got) == list(range(101, 251)), (first, second)
    assert len(got) == len(set(got))


def test_compressed_rest_keeps_the_saved_header_when_rotated_again(tmp_path: Path) -> None:
    """The accounting file we were reading is found again compressed (another identity); its
    header is the one saved with the state, not re-read by a path a rotation may move."""
    from pmta_snmp.acct import AcctReader

    acct = tmp_path / "acct.csv"
    when = time.time() - 60

    def rows(a: int, b: int) -> str:
        return "".join(acct_row("d", n, when) for n in range(a, b + 1))

    acct.write_text(ACCT_HEADER + rows(1, 50), newline="")
    first = AcctReader(str(acct), None, from_start=True)
    assert len(list(first.records())) == 50
    state = first.state
    with acct.open("a", newline="") as fh:
        fh.write(rows(51, 80))
    os.rename(acct, acct.with_name("acct.csv.1"))
    gzip_away(acct.with_name("acct.csv.1"))
    acct.write_text(ACCT_HEADER + rows(81, 90), newline="")

    original = logtail._open

    def hooked(p: str, *, sibling: bool = False) -> logtail._File | None:
        f = original(p, sibling=sibling)
        if sibling and p.endswith("acct.csv.1.gz") and f is not None:
            os.rename(p, p.replace(".1.gz", ".2.gz"))  # the next rotation shifts it away
        return f

    logtail._open = hooked  # type: ignore[assignment]
    try:
        reader = AcctReader(str(acct), state)
        got = [int(r.rcpt[1:].split("@")[0]) for r in reader.records()]
    finally:
        logtail._open = original
    assert reader.warnings == [] and reader.skipped_rows == 0, reader.warnings
    assert got == list(range(51, 91))


def test_rotations_shifted_between_listing_and_opening_skip_nothing(log_file: Path) -> None:
    """logrotate shifts log.1 -> log.2 while a run has listed the directory but not yet opened
    log.1: the name then holds the next file, and the one it held must still be read."""
    _, state = tail_once(log_file, None)
    with log_file.open("a") as fh:
        fh.write(numbered_lines(101, 150))

    def shift_in(line_range: tuple[int, int]) -> None:
        for n in range(5, 0, -1):
            older = log_file.with_name(f"log.{n}")
            if older.exists():
                os.rename(older, log_file.with_name(f"log.{n + 1}"))
        os.rename(log_file, log_file.with_name("log.1"))
        log_file.write_text(numbered_lines(*line_range))

    shift_in((151, 200))  # log.1 = what we were reading
    shift_in((201, 250))  # log.2 = that, log.1 = 151..200, live = 201..250

    original = logtail._open
    fired = False

    def hooked(p: str, *, sibling: bool = False) -> logtail._File | None:
        nonlocal fired
        if sibling and p.endswith("/log.1") and not fired:
            fired = True
            shift_in((251, 300))  # the next rotation, right before the run opens log.1
        return original(p, sibling=sibling)

    logtail._open = hooked  # type: ignore[assignment]
    try:
        first, state = tail_once(log_file, state)
    finally:
        logtail._open = original
    assert fired
    second, _ = tail_once(log_file, state)
    got = first + second
    assert sorted(got) == list(range(101, 301)), (first, second)
    assert len(got) == len(set(got))
