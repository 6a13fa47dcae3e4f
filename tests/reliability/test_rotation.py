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

import gzip
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import pytest

from pmta_snmp import logtail
from pmta_snmp.acct import AcctReader
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
#: A run stopped by its -t before it read everything (UNKNOWN): it saved its state after what
#: it read and reports what it read; the rest is read next run. Counted, not a failure.
PARTIAL = "the rest is read next run"
#: The plugins' -t in these runs, and the bound for a hung run (seconds). The default -t (10 s)
#: is far more than a run needs, but a loaded machine may stall one past it, and an alarm that
#: fires after the state was saved ends the run with no counts: the lines it read would then be
#: missing from the sums though none was lost. Only a hang comes near these.
PLUGIN_TIMEOUT = 100
HANG = 150


class PluginRuns:
    """Runs of one plugin against one rotating file; what a run reports goes to `record`."""

    plugin = ""

    def __init__(self, argv: list[str]) -> None:
        self.argv = [*argv, "-t", str(PLUGIN_TIMEOUT)]
        self.runs = 0
        self.missing = 0
        self.partial = 0

    def run(self, *extra: str) -> PluginOutcome:
        out = run_plugin(self.plugin, [*self.argv, *extra], timeout=HANG)
        assert "Traceback" not in out.err, out.err
        self.runs += 1
        if out.code == 3 and MISSING in out.line:
            self.missing += 1
            return out
        if out.code == 3 and PARTIAL in out.line:
            self.partial += 1
        else:
            assert out.code == 0, out.out + out.err
        assert "not found after rotation" not in out.out, out.out  # the reader's `lost` note
        self.record(out)
        return out

    def record(self, out: PluginOutcome) -> None:
        raise NotImplementedError


class LogRuns(PluginRuns):
    """check_pmta_log runs against one log, summing the per-run counts."""

    plugin = "log"

    def __init__(self, log: Path, state: Path) -> None:
        super().__init__(["-l", str(log), "--state-dir", str(state),
                          "-w", "1000000", "-c", "1000000"])
        self.sums = {"lines": 0, "warning": 0, "critical": 0}
        self.notes: list[str] = []

    def record(self, out: PluginOutcome) -> None:
        self.sums["lines"] += int(out.number("lines"))
        self.sums["warning"] += int(out.number("warning_lines"))
        self.sums["critical"] += int(out.number("critical_lines"))
        self.notes += [line for line in out.out.splitlines()[1:]
                       if any(w in line for w in ("rotated", "truncated", "not found"))]


class BounceRuns(PluginRuns):
    """check_pmta_bounce runs against one accounting file; the window after each run."""

    plugin = "bounce"

    def __init__(self, acct: Path, state: Path) -> None:
        super().__init__(["--acct-file", str(acct), "--state-dir", str(state), "--window", "1d",
                          "-w", "100", "-c", "100", "--min-volume", "0"])
        self.last: dict[str, int] = {}

    def record(self, out: PluginOutcome) -> None:
        assert "malformed" not in out.out, out.out
        now = {k: int(out.number(k)) for k in ("attempts", "delivered", "hard", "soft")}
        for key, value in now.items():  # the window only grows here (all records are recent)
            assert value >= self.last.get(key, 0), (key, value, self.last)
        self.last = now

    def assert_matches(self, truth: AcctTruth) -> None:
        c = truth.counts
        want = {"attempts": c["d"] + c["h"] + c["s"], "delivered": c["d"], "hard": c["h"],
                "soft": c["s"]}
        assert self.last == want, (self.last, want)


TruthT = TypeVar("TruthT", LogTruth, AcctTruth)
RunsT = TypeVar("RunsT", LogRuns, BounceRuns)


@dataclass
class Rig(Generic[TruthT, RunsT]):
    """A rotating file, its writer's ground truth and the plugin runs reading it."""

    file: RotatingFile
    truth: TruthT
    runs: RunsT

    def start(self) -> None:
        """Ten lines, then the first run, from the start of the file."""
        self.truth.write_batch(10)
        self.runs.run("--from-start")

    def rotate(self, kinds: list[str]) -> None:
        """A batch, then each rotation with a batch as the new file's first lines."""
        self.truth.write_batch()
        for kind in kinds:
            self.truth.write_batch(rotate=kind)

    def run_during_churn(self, kinds: list[str], seed: int, rotations: int,
                         runs: int = 5) -> None:
        """Runs back to back while a writer rotates by `kinds` every ~0.1 s, until it has
        rotated `rotations` times and at least `runs` runs were made (counts, not seconds: a
        slow machine takes longer, not less); then `finish`."""
        churn = Churn(self.truth, kinds, seed=seed, rotate_every=0.1)
        churn.start()
        try:
            while churn.is_alive() and (
                sum(self.file.rotations.values()) < rotations or self.runs.runs < runs
            ):
                self.runs.run()
        finally:
            churn.stop()  # raises what ended the writer early
        self.finish()
        print(f"\n{self.file.path.name}: {self.runs.runs} runs ({self.runs.missing} saw the "
              f"instant of a rename, {self.runs.partial} stopped by -t), rotations "
              f"{self.file.rotations}, written {self.truth.counts}")

    def finish(self) -> None:
        """The writer stops; a last run reads what is left (until one reads it all)."""
        self.file.close()
        for _ in range(5):
            out = self.runs.run()
            if out.code == 0:
                break
        assert out.code == 0, out.out + out.err


def log_rig(tmp_path: Path, seed: int) -> Rig[LogTruth, LogRuns]:
    log = RotatingFile(tmp_path / "log")
    rig = Rig(log, LogTruth(log, seed=seed), LogRuns(log.path, tmp_path / "state"))
    rig.start()
    return rig


def acct_rig(tmp_path: Path, seed: int) -> Rig[AcctTruth, BounceRuns]:
    acct = RotatingFile(tmp_path / "acct.csv", header=ACCT_HEADER)
    rig = Rig(acct, AcctTruth(acct, seed=seed), BounceRuns(acct.path, tmp_path / "state"))
    rig.start()
    return rig


def test_log_rotations_between_runs(tmp_path: Path) -> None:
    rig = log_rig(tmp_path, seed=1)
    # Every kind, alone and several between two runs, with writes before and after each.
    plan = [["rename"], ["copytruncate"], ["compress"], ["delaycompress"],
            ["rename", "rename"], ["compress", "copytruncate"], ["rename", "compress", "rename"],
            ["copytruncate", "delaycompress", "delaycompress"]]
    for kinds in plan:
        rig.rotate(kinds)
        rig.runs.run()
        rig.truth.write_batch()
        rig.runs.run()
    rig.finish()
    runs = rig.runs
    assert runs.sums == rig.truth.counts, (runs.sums, rig.truth.counts, runs.notes)
    assert any("rotated" in n for n in runs.notes) and any("truncated" in n for n in runs.notes)


@pytest.mark.slow
def test_log_rotations_during_runs(tmp_path: Path) -> None:
    rig = log_rig(tmp_path, seed=2)
    rig.run_during_churn(NUMBERED, seed=3, rotations=40)
    assert rig.runs.sums == rig.truth.counts, (rig.runs.sums, rig.truth.counts)


@pytest.mark.parametrize("kinds", [NUMBERED, DATED], ids=["numbered", "dated"])
def test_accounting_rotations_between_runs(tmp_path: Path, kinds: list[str]) -> None:
    rig = acct_rig(tmp_path, seed=4)
    plan = [[k] for k in kinds] + [[k, k] for k in kinds] + [kinds]
    for step in plan:
        rig.rotate(step)
        rig.runs.run()
    rig.finish()
    rig.runs.assert_matches(rig.truth)


@pytest.mark.slow
@pytest.mark.parametrize("kinds", [NUMBERED, DATED], ids=["numbered", "dated"])
def test_accounting_rotations_during_runs(tmp_path: Path, kinds: list[str]) -> None:
    rig = acct_rig(tmp_path, seed=5)
    rig.run_during_churn(kinds, seed=6, rotations=30)
    rig.runs.assert_matches(rig.truth)


# --- the two races, deterministically ----------------------------------------------------


def numbered_lines(a: int, b: int) -> str:
    return "".join(f"2025-01-14 09:00:00 line number {n}\n" for n in range(a, b + 1))


def append_lines(path: Path, a: int, b: int) -> None:
    with path.open("a") as fh:
        fh.write(numbered_lines(a, b))


def gzip_away(path: Path) -> Path:
    """`path` -> `path.gz` (as logrotate's compress does), the original removed."""
    import gzip

    dest = path.with_name(path.name + ".gz")
    with path.open("rb") as src, gzip.open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    return dest


def rename_rotation(live: Path, new_text: str, *, compress: bool = False) -> None:
    """logrotate's rename: name.N -> name.N+1, the live file -> name.1 (then gzipped with
    `compress`), and a new live file holding `new_text`."""
    for n in range(5, 0, -1):
        older = live.with_name(f"{live.name}.{n}")
        if older.exists():
            os.rename(older, live.with_name(f"{live.name}.{n + 1}"))
    one = live.with_name(live.name + ".1")
    os.rename(live, one)
    if compress:
        gzip_away(one)
    live.write_text(new_text, newline="")


class OpenHook:
    """Whether the hook of `on_open` ran."""

    fired = False


@contextmanager
def on_open(matches: Callable[[str, bool], bool], action: Callable[[], None], *,
            before: bool = False) -> Iterator[OpenHook]:
    """Run `action` once, the first time a reader opens a file for which `matches(path,
    sibling)` holds: right after it opened the file or, with `before`, right before."""
    original = logtail._open
    hook = OpenHook()

    def hooked(p: str, *, sibling: bool = False) -> logtail._File | None:
        due = not hook.fired and matches(p, sibling)
        if due and before:
            hook.fired = True
            action()
        f = original(p, sibling=sibling)
        if due and not before and f is not None:
            hook.fired = True
            action()
        return f

    logtail._open = hooked  # type: ignore[assignment]
    try:
        yield hook
    finally:
        logtail._open = original


def tail_once(path: Path, state: TailState | None,
              after_live_open: Callable[[], None] | None = None) -> tuple[list[int], TailState]:
    """One TailReader run (as the plugins do); `after_live_open` runs right after the reader
    opened the live file, i.e. a rotation lands in the middle of the run."""

    def read() -> tuple[list[int], TailState]:
        reader = TailReader(str(path), state)
        got = [int(m.group(1)) for line in reader.lines()
               if (m := re.search(r"number (\d+)$", line))]
        return got, reader.state

    if after_live_open is None:
        return read()
    with on_open(lambda p, sibling: not sibling and p == str(path), after_live_open) as hook:
        result = read()
    assert hook.fired
    return result


def two_runs(path: Path, state: TailState,
             during_first: Callable[[], None]) -> tuple[list[int], list[int]]:
    """The lines of two runs from `state`; `during_first` runs right after the first one
    opened the live file."""
    first, state = tail_once(path, state, during_first)
    second, _ = tail_once(path, state)
    return first, second


def assert_each_read_once(first: list[int], second: list[int], a: int, b: int) -> None:
    """The two runs together read lines a..b, each exactly once."""
    got = first + second
    assert sorted(got) == list(range(a, b + 1)), (first, second)
    assert len(got) == len(set(got))


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "log"
    path.write_text(numbered_lines(1, 100))
    yield path


@pytest.fixture
def tail_state(log_file: Path) -> TailState:
    """The state of a first run over `log_file` (it starts at the end, after line 100); then
    lines 101..150 appended."""
    _, state = tail_once(log_file, None)
    append_lines(log_file, 101, 150)
    return state


def test_copytruncate_while_a_run_reads_loses_and_repeats_nothing(
    log_file: Path, tail_state: TailState
) -> None:
    append_lines(log_file, 151, 200)

    def copytruncate_and_regrow() -> None:
        shutil.copyfile(log_file, log_file.with_name("log.1"))
        os.truncate(log_file, 0)
        append_lines(log_file, 201, 400)  # regrown past the old offset

    first, second = two_runs(log_file, tail_state, copytruncate_and_regrow)
    assert_each_read_once(first, second, 101, 400)


@pytest.mark.parametrize("compress", [False, True], ids=["rename", "rename-compress"])
def test_rotation_after_the_live_file_was_opened_reads_each_line_once(
    log_file: Path, tail_state: TailState, compress: bool
) -> None:
    """A rename between opening the live file and listing its rotated siblings (and, with
    compress, the file being read gzipped away as well) reads that file once."""
    rename_rotation(log_file, numbered_lines(151, 200))  # rotation 1: a new live file

    def rotate_again() -> None:  # rotation 2, after the reader opened the live file
        rename_rotation(log_file, numbered_lines(201, 250), compress=compress)

    first, second = two_runs(log_file, tail_state, rotate_again)
    assert_each_read_once(first, second, 101, 250)


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
    rename_rotation(acct, ACCT_HEADER + rows(81, 90), compress=True)

    one_gz = acct.with_name("acct.csv.1.gz")

    def shift_away() -> None:  # the next rotation shifts it away
        os.rename(one_gz, acct.with_name("acct.csv.2.gz"))

    with on_open(lambda p, sibling: sibling and p.endswith("acct.csv.1.gz"), shift_away) as hook:
        reader = AcctReader(str(acct), state)
        got = [int(r.rcpt[1:].split("@")[0]) for r in reader.records()]
    assert hook.fired
    assert reader.warnings == [] and reader.skipped_rows == 0, reader.warnings
    assert got == list(range(51, 91))


def test_rotations_shifted_between_listing_and_opening_skip_nothing(
    log_file: Path, tail_state: TailState
) -> None:
    """logrotate shifts log.1 -> log.2 while a run has listed the directory but not yet opened
    log.1: the name then holds the next file, and the one it held must still be read."""
    rename_rotation(log_file, numbered_lines(151, 200))  # log.1 = what we were reading
    # log.2 = that, log.1 = 151..200, live = 201..250
    rename_rotation(log_file, numbered_lines(201, 250))

    def next_rotation() -> None:  # right before the run opens log.1
        rename_rotation(log_file, numbered_lines(251, 300))

    with on_open(lambda p, sibling: sibling and p.endswith("/log.1"), next_rotation,
                 before=True) as hook:
        first, state = tail_once(log_file, tail_state)
    assert hook.fired
    second, _ = tail_once(log_file, state)
    assert_each_read_once(first, second, 101, 300)


def test_rotation_right_after_the_rest_was_found_skips_no_newer_file(
    log_file: Path, tail_state: TailState
) -> None:
    """A rename rotation right after the run opened its rest (log.2): the names then hold
    the next files (log.2 what log.1 held), so the rotations newer than the rest must come
    from a look made after it, not from the names listed before. The file that moved from
    log.1 to log.2 (lines 151..200) was skipped silently before (CI lost 120 lines this way
    in test_log_rotations_during_runs)."""
    rename_rotation(log_file, numbered_lines(151, 200))
    rename_rotation(log_file, numbered_lines(201, 250))  # rest log.2, then log.1, live

    def next_rotation() -> None:  # rest log.3, then log.2, log.1 (the live file opened), live
        rename_rotation(log_file, numbered_lines(251, 300))

    with on_open(lambda p, sibling: sibling and p.endswith("/log.2"), next_rotation) as hook:
        first, state = tail_once(log_file, tail_state)
    assert hook.fired
    second, _ = tail_once(log_file, state)
    assert_each_read_once(first, second, 101, 300)


def test_rotations_shifted_twice_while_a_run_reads_the_newer_files(
    log_file: Path, tail_state: TailState
) -> None:
    """Two rename rotations while a run reads the rotations newer than its rest, each right
    before it opens a name it listed (that name then holds a newer file): no line lost, none
    read twice, and none newer than the live file the run opened is read by it."""
    rename_rotation(log_file, numbered_lines(151, 200))  # the rest (..150) is log.1
    rename_rotation(log_file, numbered_lines(201, 250))
    rename_rotation(log_file, numbered_lines(251, 300))  # rest log.3, then log.2, log.1, live
    rotations = [numbered_lines(351, 400), numbered_lines(301, 350)]
    opened: list[str] = []
    original = logtail._open

    def hooked(p: str, *, sibling: bool = False) -> logtail._File | None:
        name = os.path.basename(p)
        opened.append(name)
        # Before the first look at log.2 (a newer file), then before log.3 is opened again
        # (after the rest was found there): one rotation each.
        if sibling and ((name == "log.2" and opened.count(name) == 1)
                        or (name == "log.3" and opened.count(name) == 2)):
            rename_rotation(log_file, rotations.pop())
        return original(p, sibling=sibling)

    logtail._open = hooked  # type: ignore[assignment]
    try:
        first, state = tail_once(log_file, tail_state)
    finally:
        logtail._open = original
    assert rotations == []
    second, _ = tail_once(log_file, state)
    assert_each_read_once(first, second, 101, 400)
    assert max(first) <= 300  # 301.. came after the live file this run had opened


# --- accounting: rotations shifting faster than a run reads --------------------------------


def acct_rows(a: int, b: int) -> str:
    when = time.time() - 60
    return "".join(acct_row("d", n, when) for n in range(a, b + 1))


def acct_numbers(reader: object) -> list[int]:
    from pmta_snmp.acct import AcctReader

    assert isinstance(reader, AcctReader)
    return [int(r.rcpt[1:].split("@")[0]) for r in reader.records()]


def read_fifty_then_append_ten(tmp_path: Path, pattern: str = "acct.csv"
                               ) -> tuple[Path, AcctReader]:
    """acct.csv with rows 1-50 read by a first run (its reader returned) of `pattern` (the file
    itself, or a glob), then rows 51-60 appended that no run has read yet: the opening of the
    rotation-race tests below."""
    acct = tmp_path / "acct.csv"
    acct.write_text(ACCT_HEADER + acct_rows(1, 50), newline="")
    first = AcctReader(str(tmp_path / pattern), None, from_start=True)
    assert acct_numbers(first) == list(range(1, 51))
    with acct.open("a", newline="") as fh:
        fh.write(acct_rows(51, 60))
    return acct, first


def rotate_keeping_all(live: Path, new_text: str) -> None:
    """A rename rotation that keeps every older file (name.N -> name.N+1 for all N)."""
    top = 1
    while live.with_name(f"{live.name}.{top}").exists():
        top += 1
    for n in range(top - 1, 0, -1):
        os.rename(live.with_name(f"{live.name}.{n}"), live.with_name(f"{live.name}.{n + 1}"))
    os.rename(live, live.with_name(live.name + ".1"))
    live.write_text(new_text, newline="")


def test_rotations_shifting_past_every_relisting_lose_no_record(tmp_path: Path) -> None:
    """A run that gives up before the live file because rotations keep shifting the names it
    listed (log.1 -> log.2 at every look) leaves the rotations it did not reach to the next
    run: they must not be remembered as read (they were, silently, skipped for good)."""
    acct, first = read_fifty_then_append_ten(tmp_path)
    state = first.state
    rotate_keeping_all(acct, ACCT_HEADER + acct_rows(61, 70))  # the rest (..60) is acct.csv.1
    rest = os.stat(acct.with_name("acct.csv.1")).st_ino
    rotate_keeping_all(acct, ACCT_HEADER + acct_rows(71, 80))  # rest .2, then .1 (61..70), live
    # A rotation right before the run opens any rotation newer than the rest, each time: the
    # name never holds what the listing saw, so after its new listings the run stops before
    # the live file, having read only the rest.
    later = iter(range(81, 10_000, 10))
    fired = 0
    original = logtail._open

    def hooked(p: str, *, sibling: bool = False) -> logtail._File | None:
        nonlocal fired
        if sibling and os.stat(p).st_ino != rest and fired < logtail._RELISTS + 3:
            fired += 1
            a = next(later)
            rotate_keeping_all(acct, ACCT_HEADER + acct_rows(a, a + 9))
        return original(p, sibling=sibling)

    logtail._open = hooked  # type: ignore[assignment]
    try:
        reader = AcctReader(str(acct), state)
        got = acct_numbers(reader)
    finally:
        logtail._open = original
    assert fired == logtail._RELISTS + 1 and not reader.tail.lost  # it gave up, none lost
    last = next(later) - 1
    again = AcctReader(str(acct), reader.state)
    got += acct_numbers(again)
    assert again.warnings == [] and not again.tail.lost
    assert sorted(got) == list(range(51, last + 1)) and len(got) == len(set(got)), got


def test_rest_found_while_rotations_shift_the_names_during_every_search(
    log_file: Path, tail_state: TailState
) -> None:
    """The file we were reading was compressed (found only by content) and is the oldest
    rotation; rotations keep shifting the names while a run opens the rotated files one by
    one (one every third open: a slow disk). Each new look skips the files it checked
    already, so it catches up and finds it; before, every look was outrun and the lines left
    in it were lost."""
    rename_rotation(log_file, numbered_lines(151, 160), compress=True)  # the rest: log.1.gz
    for a in range(161, 221, 10):  # six newer rotations (rest log.7.gz)
        shift_all(log_file, numbered_lines(a, a + 9))
    later = iter(range(221, 100_000, 10))
    opens = 0
    original = logtail._open

    def hooked(p: str, *, sibling: bool = False) -> logtail._File | None:
        nonlocal opens
        if sibling:
            opens += 1
            if opens % 3 == 0:
                a = next(later)
                shift_all(log_file, numbered_lines(a, a + 9))
        return original(p, sibling=sibling)

    logtail._open = hooked  # type: ignore[assignment]
    try:
        reader = TailReader(str(log_file), tail_state)
        first = [int(line.rsplit(" ", 1)[1]) for line in reader.lines()]
    finally:
        logtail._open = original
    assert not reader.lost
    second, _ = tail_once(log_file, reader.state)
    assert_each_read_once(first, second, 101, next(later) - 1)


def shift_all(live: Path, new_text: str) -> None:
    """A rename rotation keeping every older file, compressed ones too (name.N[.gz] ->
    name.N+1[.gz]), and a new live file holding `new_text`."""
    def numbered(n: int) -> list[Path]:
        return [live.with_name(f"{live.name}.{n}{ext}") for ext in ("", ".gz")]

    top = 1
    while any(p.exists() for p in numbered(top)):
        top += 1
    for n in range(top - 1, 0, -1):
        for src, dst in zip(numbered(n), numbered(n + 1), strict=True):
            if src.exists():
                os.rename(src, dst)
    os.rename(live, live.with_name(live.name + ".1"))
    live.write_text(new_text, newline="")


# --- accounting: a rotated file's inode reused during a run --------------------------------


def test_inode_of_a_file_removed_during_a_run_reused_by_a_new_file_loses_no_record(
    tmp_path: Path,
) -> None:
    """A run reads the rest (acct.csv.1); while it reads on, that file is compressed away
    (removed) and the next live file gets its inode (ext4 reuses a freed inode at once), then
    is rotated to acct.csv.1 itself. The run's record of rotated files read must not take the
    new file for the one it read: the next run read the new file only past the old one's
    size, and its records were skipped silently."""
    acct, first = read_fifty_then_append_ten(tmp_path)
    shift_all(acct, ACCT_HEADER + acct_rows(61, 70))  # the rest (..60) is acct.csv.1
    one = acct.with_name("acct.csv.1")
    rest = os.stat(one).st_ino
    aside = tmp_path / "freed"
    aside.mkdir()

    def compress_then_reuse_the_inode() -> None:
        gzip_away_keeping(one, aside / "inode")  # acct.csv.1 -> .1.gz; its inode "freed"
        # The next rotation's new live file gets that inode: the same inode, new content.
        reused = aside / "inode"
        os.truncate(reused, 0)
        shift_all(acct, "")
        reused.write_text(ACCT_HEADER + acct_rows(71, 80), newline="")
        os.replace(reused, acct)  # acct.csv.2.gz, acct.csv.1 (61..70), acct.csv (reused)
        shift_all(acct, ACCT_HEADER + acct_rows(81, 90))  # the reused inode is acct.csv.1

    reader = AcctReader(str(acct), first.state)
    got = []
    for record in reader.records():
        got.append(int(record.rcpt[1:].split("@")[0]))
        if got[-1] == 70:  # every line of this run read; rotations before it ends
            compress_then_reuse_the_inode()
    assert got == list(range(51, 71))
    assert os.stat(one).st_ino == rest  # the new file holds the inode of the one read
    again = AcctReader(str(acct), reader.state)
    got += acct_numbers(again)
    assert again.warnings == [] and not again.tail.lost
    assert got == list(range(51, 91)), got


def gzip_away_keeping(path: Path, keep: Path) -> None:
    """`path` -> `path.gz` (logrotate's compress), the original moved to `keep` instead of
    removed: its inode stays ours, to be given to a new file as the filesystem may."""
    import gzip

    with path.open("rb") as src, gzip.open(path.with_name(path.name + ".gz"), "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.rename(path, keep)


def test_rest_removed_by_the_keep_count_while_a_run_reads_loses_no_newer_rotation(
    tmp_path: Path,
) -> None:
    """A run found and read the rest (the oldest rotation, acct.csv.3); right before it opens
    the next one, a rotation keeping three files removes the rest and shifts the names. The
    run's new listing cannot start after the rest any more: it goes on from the oldest file it
    had listed and not read (before, it read the live file next and the two rotations between
    were skipped for good, with no warning)."""
    acct, first = read_fifty_then_append_ten(tmp_path)
    for a in (61, 71, 81):  # the rest (..60) is acct.csv.3, then .2, .1 and the live file
        rotate_keeping_all(acct, ACCT_HEADER + acct_rows(a, a + 9))
    three = acct.with_name("acct.csv.3")

    def rotate_keeping_three() -> None:
        three.unlink()
        rotate_keeping_all(acct, ACCT_HEADER + acct_rows(91, 100))

    with on_open(lambda p, sibling: sibling and p.endswith("/acct.csv.2"),
                 rotate_keeping_three, before=True) as hook:
        reader = AcctReader(str(acct), first.state)
        got = acct_numbers(reader)
    assert hook.fired
    again = AcctReader(str(acct), reader.state)
    got += acct_numbers(again)
    assert reader.warnings == [] and again.warnings == [], (reader.warnings, again.warnings)
    assert sorted(got) == list(range(51, 101)) and len(got) == len(set(got)), got


# --- a short live file rotated while a run reads -------------------------------------------


@pytest.mark.parametrize("kind", ["copytruncate", "compress"])
def test_short_live_file_rotated_after_it_was_opened_is_read_once(
    tmp_path: Path, kind: str
) -> None:
    """The live file is shorter than the head fingerprint (its header and one record) when a
    run opens it; it grows and is rotated (copied and truncated, or renamed and gzipped) before
    the run lists the rotations. Its copy's first bytes then hold more than the live file's
    did: it must still be taken for the live file, read from the descriptor held (before, the
    copy was read as a newer rotation, the live file's record again, and the next run read the
    copy once more from where the live file's read stopped; the copytruncate case was already
    caught by the live read noticing the truncation, and is kept as a guard)."""
    acct, first = read_fifty_then_append_ten(tmp_path)
    rotate_keeping_all(acct, ACCT_HEADER + acct_rows(61, 61))  # the rest (..60) is acct.csv.1
    assert acct.stat().st_size < logtail.HEAD_LEN

    def grow_and_rotate() -> None:  # right after the run opened the live file
        with acct.open("a", newline="") as fh:
            fh.write(acct_rows(62, 70))
        one = acct.with_name("acct.csv.1")
        os.rename(one, acct.with_name("acct.csv.2"))
        if kind == "copytruncate":
            shutil.copyfile(acct, one)
            with acct.open("r+", newline="") as fh:
                fh.truncate(0)
                fh.write(ACCT_HEADER + acct_rows(71, 80))
        else:
            os.rename(acct, one)
            gzip_away(one)
            acct.write_text(ACCT_HEADER + acct_rows(71, 80), newline="")

    with on_open(lambda p, sibling: not sibling and p == str(acct), grow_and_rotate) as hook:
        reader = AcctReader(str(acct), first.state)
        got = acct_numbers(reader)
    assert hook.fired
    again = AcctReader(str(acct), reader.state)
    got += acct_numbers(again)
    assert reader.warnings == [] and again.warnings == [], (reader.warnings, again.warnings)
    assert sorted(got) == list(range(51, 81)) and len(got) == len(set(got)), got


# --- a glob of accounting files: a rotation between the listing and the opens -------------


def test_glob_file_renamed_between_listing_and_open_is_followed_not_read_again(
    tmp_path: Path,
) -> None:
    """`acct*.csv`: PowerMTA renames acct.csv to acct-YYYY-MM-DD-NNNN.csv (and starts a new
    acct.csv) after a run listed the glob, before it opened acct.csv. The renamed file is
    under no name listed: its state was dropped, and the next run read it again from its
    start (rows 1-50 counted twice)."""
    spec = str(tmp_path / "acct*.csv")
    acct, first = read_fifty_then_append_ten(tmp_path, "acct*.csv")

    def dated_rotation() -> None:  # right before the run opens the acct.csv it listed
        os.rename(acct, tmp_path / "acct-2025-01-14-0001.csv")
        acct.write_text(ACCT_HEADER + acct_rows(61, 70), newline="")

    with on_open(lambda p, sibling: p == str(acct), dated_rotation, before=True) as hook:
        reader = AcctReader(spec, first.state)
        got = acct_numbers(reader)
    assert hook.fired
    again = AcctReader(spec, reader.state)
    got += acct_numbers(again)
    assert sorted(got) == list(range(51, 71)) and len(got) == len(set(got)), got


# --- accounting: the header of a file rotated away from under its name ---------------------


def test_header_of_the_rest_comes_from_the_file_opened_not_its_name(tmp_path: Path) -> None:
    """The file we were reading was compressed (found again under another identity); a run
    stops at its deadline before reading any of it, and a rotation shifts it to the next name
    before the run saves its state: the header saved was read by the old name (gone), so none
    was saved. The next run, with the file shifted again right after it opened it, read its
    rows without a header: skipped as malformed, lost."""
    acct, first = read_fifty_then_append_ten(tmp_path)
    rename_rotation(acct, ACCT_HEADER + acct_rows(61, 70), compress=True)  # rest: .1.gz
    stopped = AcctReader(str(acct), first.state, deadline=time.monotonic() - 1)
    assert acct_numbers(stopped) == [] and stopped.timed_out
    shift_all(acct, ACCT_HEADER + acct_rows(71, 80))  # .1.gz -> .2.gz, before the state
    state = stopped.state
    assert state.header is not None

    two_gz = acct.with_name("acct.csv.2.gz")

    def shift_away() -> None:  # right after the next run opened it
        os.rename(two_gz, acct.with_name("acct.csv.3.gz"))

    with on_open(lambda p, sibling: p == str(two_gz), shift_away) as hook:
        reader = AcctReader(str(acct), state)
        got = acct_numbers(reader)
    assert hook.fired
    assert reader.warnings == [] and reader.skipped_rows == 0, reader.warnings
    assert sorted(got) == list(range(51, 81)) and len(got) == len(set(got)), got


@pytest.mark.parametrize("pattern", ["acct*.csv", "acct*.csv*"])
def test_glob_file_compressed_between_runs_goes_on_from_its_offset(
    tmp_path: Path, pattern: str
) -> None:
    """PowerMTA's dated rotation and then gzip before the next run: acct.csv (read up to row
    50, rows 51-60 since) is acct-2025-01-14-0001.csv.gz. Out of `acct*.csv`, rows 51-60
    were lost silently; in `acct*.csv*` it was a new file, read again whole (rows 1-50
    twice). It is the followed file compressed: the run goes on from its offset."""
    spec = str(tmp_path / pattern)
    acct, first = read_fifty_then_append_ten(tmp_path, pattern)
    dated = tmp_path / "acct-2025-01-14-0001.csv"
    os.rename(acct, dated)
    gzip_away(dated)
    acct.write_text(ACCT_HEADER + acct_rows(61, 70), newline="")
    reader = AcctReader(spec, first.state)
    got = acct_numbers(reader)
    again = AcctReader(spec, reader.state)
    got += acct_numbers(again)
    assert reader.warnings == [] and reader.skipped_rows == 0, reader.warnings
    assert sorted(got) == list(range(51, 71)) and len(got) == len(set(got)), got


def test_glob_taking_in_compressed_files_reads_a_file_and_its_copy_once(tmp_path: Path) -> None:
    """`acct*.csv*` listed while a rotated file is being gzipped: the file and its copy are
    both there (gzip removes the original last). The copy was a new file, read whole again."""
    spec = str(tmp_path / "acct*.csv*")
    acct, first = read_fifty_then_append_ten(tmp_path, "acct*.csv*")
    dated = tmp_path / "acct-2025-01-14-0001.csv"
    os.rename(acct, dated)
    acct.write_text(ACCT_HEADER + acct_rows(61, 70), newline="")
    with dated.open("rb") as src, gzip.open(str(dated) + ".gz", "wb") as dst:
        shutil.copyfileobj(src, dst)  # the original not removed yet
    reader = AcctReader(spec, first.state)
    got = acct_numbers(reader)
    dated.unlink()
    again = AcctReader(spec, reader.state)
    got += acct_numbers(again)
    assert sorted(got) == list(range(51, 71)) and len(got) == len(set(got)), got
