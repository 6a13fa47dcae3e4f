"""Finding the records logged since a time (pmta_snmp.acct.seek) without reading files whole.

Every expectation is computed from the rows the test writes (their times and byte offsets),
not from the search's own code: the position found never skips a record logged at or after
the time, is a record boundary, and is found with a few small reads.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmta_snmp.acct import AcctReader
from pmta_snmp.acct.seek import Timeline, offset_at, state_since
from tests.unit.test_acct import FIELDS_40, FIELDS_50, acct_bytes, rec

T0 = 1_736_842_323  # 2025-01-14 08:12:03 UTC


def stamp(t: float, *, unix: bool = False) -> str:
    """An accounting time: ISO with an offset (5.x), or Unix seconds (4.0)."""
    if unix:
        return str(int(t))
    return datetime.fromtimestamp(t, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S%z")


def timed_rows(n: int, *, start: float = T0, step: float = 1.0, seed: int = 1,
               odd: float = 0.0, unix: bool = False) -> list[dict[str, str]]:
    """n records one `step` apart; with `odd`, that share has a multi-line dsnDiag or an empty
    timeLogged (lines without a usable time)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = rec(type=rng.choice("ddddbt"), timeLogged=stamp(start + i * step, unix=unix),
                  dsnDiag="ok")
        x = rng.random()
        if x < odd / 2:
            row["dsnDiag"] = "first\nd,2025-01-14 09:12:03+0100,second\nthird"
        elif x < odd:
            row["timeLogged"] = ""
        rows.append(row)
    return rows


def offsets(data: bytes) -> list[int]:
    """Byte offset of each record after the header: a record goes on over a line end while
    its quotes are unbalanced (csv quotes a field with a newline, doubles inner quotes)."""
    out = []
    pos = data.index(b"\n") + 1
    while pos < len(data):
        out.append(pos)
        quotes = 0
        while True:
            nl = data.index(b"\n", pos)
            quotes += data.count(b'"', pos, nl)
            pos = nl + 1
            if quotes % 2 == 0:
                break
    return out


def first_since(rows: list[dict[str, str]], since: float) -> int:
    """Index of the first row whose time is at or after `since` (empty times: unknown)."""
    for i, row in enumerate(rows):
        text = row["timeLogged"]
        if not text:
            continue
        when = float(text) if text.isdigit() else datetime.strptime(
            text, "%Y-%m-%d %H:%M:%S%z").timestamp()
        if when >= since:
            return i
    return len(rows)


def write(path: Path, rows: list[dict[str, str]], fields: list[str] = FIELDS_50) -> bytes:
    data = acct_bytes(fields, rows)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("where", [0, 1, 500, 2999, 3000, 5000])
def test_offset_is_the_first_record_at_or_after_the_time(tmp_path: Path, where: int) -> None:
    rows = timed_rows(3000)
    data = write(tmp_path / "acct.csv", rows)
    starts = offsets(data)
    found = offset_at(tmp_path / "acct.csv", T0 + where - 0.5)
    want = starts[where] if where < len(starts) else len(data)
    assert found == want


def test_a_big_file_is_probed_not_read(tmp_path: Path) -> None:
    """Ten hours of records, 9 MB: the search reads one 64 KiB piece per probe, under 1 MiB."""
    path = tmp_path / "acct.csv"
    rows = timed_rows(60_000, step=0.6)
    data = write(path, rows)
    assert len(data) > 8_000_000
    since = T0 + 9.5 * 3600
    with Timeline(path) as line:
        found = line.offset_at(since)
        assert line.bytes_read < 1 << 20
    assert found == offsets(data)[first_since(rows, since)]


@pytest.mark.parametrize("unix", [False, True])
def test_layout_40_and_unix_times(tmp_path: Path, unix: bool) -> None:
    rows = timed_rows(2000, unix=unix)
    data = write(tmp_path / "acct.csv", rows, FIELDS_40)
    assert offset_at(tmp_path / "acct.csv", T0 + 1234) == offsets(data)[1234]


def test_untimed_lines_are_read_not_skipped(tmp_path: Path) -> None:
    """Multi-line records and empty times around the place: the position is the end of the
    last timed record before the time, so the untimed ones after it are read."""
    rows = timed_rows(4000, odd=0.2, seed=3)
    data = write(tmp_path / "acct.csv", rows)
    starts = offsets(data)
    for target in (5, 777, 2500, 3999):
        since = T0 + target - 0.5
        found = offset_at(tmp_path / "acct.csv", since)
        assert found in starts
        k = starts.index(found)
        first = first_since(rows, since)
        assert k <= first
        assert all(row["timeLogged"] == "" or "\n" in row["dsnDiag"] for row in rows[k:first])
        assert k == 0 or (rows[k - 1]["timeLogged"] and "\n" not in rows[k - 1]["dsnDiag"])


def test_reading_from_the_position_gives_every_record_since(tmp_path: Path) -> None:
    path = tmp_path / "acct.csv"
    rows = timed_rows(3000, odd=0.1, seed=4)
    write(path, rows)
    since = T0 + 2000
    state = state_since(path, since)
    assert state is not None
    reader = AcctReader(path, state)
    got = [r.rcpt for r in reader.records()]
    want = [r["rcpt"] for r in rows[first_since(rows, since):]]
    assert got[-len(want):] == want  # everything since, and the untimed just before
    assert all(r["timeLogged"] == "" or "\n" in r["dsnDiag"]
               for r in rows[len(rows) - len(got):len(rows) - len(want)])
    assert reader.skipped_rows == 0


def test_json_accounting(tmp_path: Path) -> None:
    path = tmp_path / "acct.json"
    lines = [json.dumps({"type": "d", "timeLogged": stamp(T0 + i), "rcpt": f"r{i}@x.org"})
             for i in range(3000)]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(data)
    found = offset_at(path, T0 + 1500)
    assert found == sum(len(line) + 1 for line in lines[:1500])


@pytest.mark.parametrize("opener", [gzip.open, bz2.open])
def test_compressed_file_is_stepped_through(tmp_path: Path, opener: object) -> None:
    rows = timed_rows(30_000, step=1)
    data = acct_bytes(FIELDS_50, rows)
    name = "acct.csv.gz" if opener is gzip.open else "acct.csv.bz2"
    with opener(tmp_path / name, "wb") as fh:  # type: ignore[operator]
        fh.write(data)
    for target in (0, 12_345, 29_999, 30_000):
        found = offset_at(tmp_path / name, T0 + target - 0.5)
        assert found == (offsets(data)[target] if target < 30_000 else len(data))


def test_no_time_column_means_no_position(tmp_path: Path) -> None:
    fields = [f for f in FIELDS_50 if f != "timeLogged"]
    write(tmp_path / "acct.csv", timed_rows(100), fields)
    assert offset_at(tmp_path / "acct.csv", T0) is None
    assert state_since(tmp_path / "acct.csv", T0) is None


def test_rotated_file_holds_the_start(tmp_path: Path) -> None:
    """The window began in the rotated file: its rest, then the live file, are read."""
    live = tmp_path / "acct.csv"
    rows = timed_rows(3000)
    write(tmp_path / "acct.csv.2", rows[:1000])
    write(tmp_path / "acct.csv.1", rows[1000:2000])
    write(live, rows[2000:])
    since = T0 + 1500
    state = state_since(live, since)
    assert state is not None and state.tail is not None
    assert state.tail.source == str(tmp_path / "acct.csv.1")
    batch = AcctReader(live, state)
    assert [r.rcpt for r in batch.records()] == [r["rcpt"] for r in rows[1500:]]
    # The next run reads only what is new, the rotated files are not read again.
    after = AcctReader(live, batch.state)
    assert list(after.records()) == []


def test_just_rotated_live_file_with_only_a_header(tmp_path: Path) -> None:
    live = tmp_path / "acct.csv"
    rows = timed_rows(1000)
    write(tmp_path / "acct.csv.1", rows)
    write(live, [])
    state = state_since(live, T0 + 900)
    assert state is not None
    assert [r.rcpt for r in AcctReader(live, state).records()] == [
        r["rcpt"] for r in rows[900:]]


def test_every_file_in_the_window_is_read_whole(tmp_path: Path) -> None:
    live = tmp_path / "acct.csv"
    rows = timed_rows(900)
    write(tmp_path / "acct.csv.2", rows[:300])
    write(tmp_path / "acct.csv.1", rows[300:600])
    write(live, rows[600:])
    state = state_since(live, T0 - 100)
    assert state is not None
    assert [r.rcpt for r in AcctReader(live, state).records()] == [r["rcpt"] for r in rows]


def test_glob_of_dated_files(tmp_path: Path) -> None:
    rows = timed_rows(4000)
    for i in range(4):
        write(tmp_path / f"acct-2025-01-14-{i:04d}.csv", rows[i * 1000:(i + 1) * 1000])
    spec = str(tmp_path / "acct-*.csv")
    state = state_since(spec, T0 + 1700)
    assert state is not None and state.files is not None and len(state.files) == 4
    reader = AcctReader(spec, state)
    assert [r.rcpt for r in reader.records()] == [r["rcpt"] for r in rows[1700:]]
    assert list(AcctReader(spec, reader.state).records()) == []


def test_glob_with_a_compressed_old_file(tmp_path: Path) -> None:
    rows = timed_rows(2000)
    with gzip.open(tmp_path / "acct-2025-01-13-0000.csv.gz", "wb") as fh:
        fh.write(acct_bytes(FIELDS_50, rows[:1000]))
    write(tmp_path / "acct-2025-01-14-0000.csv", rows[1000:])
    spec = str(tmp_path / "acct-*")
    for since, first in ((T0 + 1500, 1500), (T0 + 500, 500)):
        state = state_since(spec, since)
        assert state is not None
        got = [r.rcpt for r in AcctReader(spec, state).records()]
        assert got == [r["rcpt"] for r in rows[first:]]


def test_times_slightly_out_of_order(tmp_path: Path) -> None:
    """Threads log a second apart out of order: every record at or after the time is read."""
    rng = random.Random(9)
    rows = timed_rows(3000)
    for row in rows:
        t = datetime.strptime(row["timeLogged"], "%Y-%m-%d %H:%M:%S%z").timestamp()
        row["timeLogged"] = stamp(t + rng.choice([-1, 0, 0, 1]))
    path = tmp_path / "acct.csv"
    write(path, rows)
    since = T0 + 1800
    state = state_since(path, since - 2)  # the caller's slack
    assert state is not None
    got = {r.rcpt for r in AcctReader(path, state).records()}
    assert {r["rcpt"] for r in rows if datetime.strptime(
        r["timeLogged"], "%Y-%m-%d %H:%M:%S%z").timestamp() >= since} <= got


@st.composite
def _files(draw: st.DrawFn) -> tuple[list[dict[str, str]], float]:
    n = draw(st.integers(0, 400))
    odd = draw(st.sampled_from([0.0, 0.05, 0.5]))
    seed = draw(st.integers(0, 1000))
    rows = timed_rows(n, odd=odd, seed=seed, step=draw(st.sampled_from([0.3, 1.0, 60.0])))
    since = T0 + draw(st.floats(-10, 500 * 60))
    return rows, since


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_files())
def test_never_skips_a_record_since_the_time(tmp_path: Path, case: tuple[
        list[dict[str, str]], float]) -> None:
    rows, since = case
    path = tmp_path / "acct.csv"
    data = write(path, rows)
    found = offset_at(path, since)
    assert found is not None
    starts = [*offsets(data), len(data)]
    assert found in starts
    k = starts.index(found)
    assert k <= first_since(rows, since)
    os.unlink(path)


def test_hostile_json_line_is_a_line_without_a_time(tmp_path: Path) -> None:
    path = tmp_path / "acct.json"
    lines = [json.dumps({"type": "d", "timeLogged": stamp(T0 + i)}) for i in range(100)]
    lines.insert(50, "[" * 200_000)
    path.write_text("\n".join(lines) + "\n")
    assert offset_at(path, T0 + 50) == sum(len(line) + 1 for line in lines[:50])
