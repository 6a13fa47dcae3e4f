"""The rate plugins' first run: one window of existing records read back, found by time.

Without it a plugin installed (or whose state was lost) judged nothing for a whole window: the
first run started at the end of the accounting file. Expected counts come from the records
the test writes, by their age.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from pmta_snmp.checks import bounce, deferral, tls

from tests.integration.test_checks_support import Outcome, acct_lines, mix, rec, run_main

Main = Callable[[Sequence[str] | None], int]

# plugin -> (main, records older than the window, records within it, {perfdata: expected})
CASES: dict[str, tuple[Main, list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]] = {
    "bounce": (bounce.main,
               mix({"d": 500, "b": 500}, domain="old.example", minutes_ago=90),
               mix({"d": 190, "b": 10}, domain="new.example", minutes_ago=30),
               {"attempts": "200", "hard": "10", "delivered": "190"}),
    "deferral": (deferral.main,
                 mix({"d": 100, "t": 400}, domain="old.example", minutes_ago=75),
                 mix({"d": 180, "t": 20}, domain="new.example", minutes_ago=20),
                 {"attempts": "200", "deferred": "20"}),
    "tls": (tls.main,
            mix({"d": 500}, domain="old.example", tls="", minutes_ago=61.5),
            mix({"d": 200}, domain="new.example", minutes_ago=58),
            {"starttls_offered": "200", "cleartext": "0"}),
}


def run(main: Main, tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> Outcome:
    extra = ["--sources", "acct"] if main is tls.main else []
    return run_main(main, ["--acct-file", str(tmp_path / "acct.csv"), "--state-dir",
                           str(tmp_path / "state"), *extra, *argv], capsys)


@pytest.mark.parametrize("plugin", list(CASES))
def test_first_run_reads_back_one_window(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         plugin: str) -> None:
    main, old, recent, want = CASES[plugin]
    (tmp_path / "acct.csv").write_text(acct_lines(old + recent), newline="")
    out = run(main, tmp_path, capsys, "-v")
    assert {k: out.value(k) for k in want} == want, out.out
    assert "first run: read back the records of the last 60 min of" in out.out
    # The next run reads only what is new: nothing counted twice.
    out = run(main, tmp_path, capsys)
    assert {k: out.value(k) for k in want} == want, out.out


@pytest.mark.parametrize("plugin", list(CASES))
def test_a_lost_state_reads_back_one_window_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], plugin: str) -> None:
    main, old, recent, want = CASES[plugin]
    (tmp_path / "acct.csv").write_text(acct_lines(old + recent), newline="")
    run(main, tmp_path, capsys)
    shutil.rmtree(tmp_path / "state")
    out = run(main, tmp_path, capsys)
    assert {k: out.value(k) for k in want} == want, out.out


def test_from_start_still_reads_everything(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    main, old, recent, _ = CASES["bounce"]
    (tmp_path / "acct.csv").write_text(acct_lines(old + recent), newline="")
    out = run(main, tmp_path, capsys, "--from-start", "--window", "2h")
    assert out.value("attempts") == "1200"


def test_first_run_reads_a_small_part_of_a_big_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Ten hours of records and a ten-minute window: the run reads the last minutes, not the
    file (the -v line says how many records it read)."""
    now = time.time()
    records = [rec("d", f"u{i}@example.com", minutes_ago=600 - i * 0.02) for i in range(30_000)]
    (tmp_path / "acct.csv").write_text(acct_lines(records, now=now), newline="")
    out = run(bounce.main, tmp_path, capsys, "-v", "--window", "10m")
    within = sum(1 for i in range(30_000) if 600 - i * 0.02 < 10)
    assert int(out.value("attempts")) == pytest.approx(within, abs=60)  # minute edges
    read = int(out.out.split("accounting: ")[1].split(" new records")[0].replace(",", ""))
    assert read < within + 500  # the window, a little slack before it; not 30,000


def test_no_time_column_starts_at_the_end_as_before(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """record-fields without timeLogged: nothing to find a window by; the first run starts
    at the end and says why."""
    header = "type,orig,rcpt,bounceCat,dsnStatus,dlvSourceIp,vmta"
    rows = [f"d,a@s.example,r{i}@d.example,success,2.0.0,192.0.2.1,v" for i in range(300)]
    (tmp_path / "acct.csv").write_text("\r\n".join([header, *rows]) + "\r\n", newline="")
    out = run(bounce.main, tmp_path, capsys, "-v")
    assert out.value("attempts") == "0"
    assert "has no timeLogged to find the last 60 min by" in out.out
    with (tmp_path / "acct.csv").open("a", newline="") as fh:
        fh.write("d,a@s.example,x@d.example,success,2.0.0,192.0.2.1,v\r\n")
    assert run(bounce.main, tmp_path, capsys).value("attempts") == "1"


def test_glob_of_files_reads_back_across_files(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    (tmp_path / "acct-2025-01-13-0000.csv").write_text(
        acct_lines(mix({"d": 300, "b": 300}, minutes_ago=200), now=now), newline="")
    (tmp_path / "acct-2025-01-14-0000.csv").write_text(
        acct_lines(mix({"d": 100, "b": 100}, minutes_ago=80)
                   + mix({"d": 150, "b": 5}, minutes_ago=45), now=now), newline="")
    (tmp_path / "acct-2025-01-14-0001.csv").write_text(
        acct_lines(mix({"d": 45}, minutes_ago=10), now=now), newline="")
    out = run_main(bounce.main, ["--acct-file", str(tmp_path / "acct-*.csv"),
                                 "--state-dir", str(tmp_path / "state")], capsys)
    assert (out.value("attempts"), out.value("hard")) == ("200", "5"), out.out
    assert os.listdir(tmp_path / "state")
