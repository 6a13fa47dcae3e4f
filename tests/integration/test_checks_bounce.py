"""check_pmta_bounce on crafted accounting files of every layout."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from pmta_snmp.checks.bounce import main

from tests.integration.test_checks_support import (
    Outcome,
    acct_json_lines,
    acct_lines,
    mix,
    rec,
    run_main,
    run_subprocess,
)


def check(capsys: pytest.CaptureFixture[str], tmp_path: Path, acct: Path | str,
          *argv: str) -> Outcome:
    return run_main(
        main, ["--acct-file", str(acct), "--state-dir", str(tmp_path / "state"), *argv], capsys
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8", newline="") as fh:
        fh.write(text)


def storm(hard: int, total: int = 1000, domain: str = "example.org") -> list[dict[str, object]]:
    return mix({"d": total - hard, "b": hard}, domain=domain)


@pytest.mark.parametrize("layout", ["4.0", "5.0", "5.5", "json"])
@pytest.mark.parametrize(
    ("hard", "code", "word"), [(30, 0, "OK"), (60, 1, "WARNING"), (80, 2, "CRITICAL")]
)
def test_every_layout_and_state(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                layout: str, hard: int, code: int, word: str) -> None:
    records = storm(hard)
    if layout == "json":
        acct = write(tmp_path / "acct.json", acct_json_lines(records))
    else:
        acct = write(tmp_path / "acct.csv", acct_lines(records, layout))
    out = check(capsys, tmp_path, acct, "--from-start")
    assert out.code == code, out.out
    assert out.line.startswith(f"PMTA BOUNCE {word} - ")
    assert out.value("hard_rate") == f"{hard / 10:g}%"
    assert out.value("attempts") == "1000" and out.value("hard") == str(hard)
    if code:
        assert f"sender domain news.example.net hard-bounce rate {hard / 10:.1f}% " \
               f"({hard} of 1,000)" in out.line
        assert 'top hard-bounce reasons: "smtp;550 5.1.1 user unknown" x' in out.line


def test_ok_line_names_worst_and_reasons(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    records = storm(20) + mix({"d": 480, "b": 20}, domain="example.com", ip="198.51.100.21")
    acct = write(tmp_path / "acct.csv", acct_lines(records))
    out = check(capsys, tmp_path, acct, "--from-start")
    assert out.code == 0
    assert out.line.startswith(
        "PMTA BOUNCE OK - hard bounces 2.7% of 1,500 attempts in the last 60 min "
        "(soft 0, block 0); worst sender domain news.example.net 2.7%, domain example.com 4.0%;"
        ' top hard-bounce reasons: "smtp;550 5.1.1 user unknown" x40'
    )
    assert out.perf["domain_example_com_hard_rate"] == "4%;5;7;0;100"
    assert out.perf["ip_198_51_100_21_hard_rate"] == "4%;5;7;0;100"


def test_min_volume_keeps_tiny_domains_quiet(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    records = mix({"d": 500}) + mix({"d": 5, "b": 5}, domain="tiny.example", ip="198.51.100.9")
    acct = write(tmp_path / "acct.csv", acct_lines(records))
    out = check(capsys, tmp_path, acct, "--from-start", "--by", "domain,ip")
    assert out.code == 0
    assert "domain_tiny_example_hard_rate" not in out.perf
    out = check(capsys, tmp_path, acct, "--min-volume", "10", "--by", "domain,ip")
    assert out.code == 2
    assert "domain tiny.example hard-bounce rate 50.0% (5 of 10)" in out.line
    assert "source IP 198.51.100.9 hard-bounce rate 50.0% (5 of 10)" in out.line


def test_classification_with_dsn_status_fallback(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    records = [
        *mix({"d": 100}),
        rec("b", "a@example.com", cat="-", status="5.1.1 (bad destination mailbox address)"),
        rec("b", "b@example.com", cat="-", status="4.4.7 (delivery time expired)",
            diag="smtp;421 4.4.2 connection timed out"),
        rec("b", "c@example.com", cat="-", status="5.7.1 (delivery not authorized)",
            diag="smtp;550 5.7.1 Message rejected due to local policy"),
        rec("b", "d@example.com", cat="spam-related", diag="smtp;554 blocked as spam"),
        rec("b", "e@example.com", cat="quota-issues", diag="smtp;552 5.2.2 Mailbox full"),
    ]
    acct = write(tmp_path / "acct.csv", acct_lines(records))
    out = check(capsys, tmp_path, acct, "--from-start")
    assert (out.value("hard"), out.value("soft"), out.value("block")) == ("1", "2", "2")
    assert out.value("block_rate") == f"{200 / 105:.4f}%"
    out = check(capsys, tmp_path, acct, "--block-warning", "1")
    assert out.code == 1 and "overall block rate 1.9% of 105 attempts" in out.line


def test_reasons_grouped_by_first_60_characters(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    prefix = "smtp;550 5.1.1 The email account that you tried to reach does"
    records = mix({"d": 100}) + [
        rec("b", f"x{i}@example.com", diag=f"{prefix} not exist {i}") for i in range(12)
    ] + [rec("b", f"y{i}@example.com", diag="smtp;550 5.1.1 no such user") for i in range(3)]
    acct = write(tmp_path / "acct.csv", acct_lines(records))
    out = check(capsys, tmp_path, acct, "--from-start")
    assert out.code == 2
    assert f'top hard-bounce reasons: "{prefix[:60]}" x12, "smtp;550 5.1.1 no such user" x3' \
        in out.line


def test_reads_only_new_bytes_and_keeps_the_window(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    old = [dict(r, _minutes_ago=90) for r in storm(80)]
    acct = write(tmp_path / "acct.csv", acct_lines(old))
    out = check(capsys, tmp_path, acct)  # first run: reads back the window (nothing in it)
    assert out.code == 0 and out.value("attempts") == "0"
    assert "first run: read back" in out.out
    append(acct, acct_lines(mix({"d": 90, "b": 10}), header=False))
    out = check(capsys, tmp_path, acct)
    assert out.code == 2 and out.value("attempts") == "100" and out.value("hard") == "10"
    out = check(capsys, tmp_path, acct)  # nothing new: same window from the state
    assert out.value("attempts") == "100"
    append(acct, acct_lines(mix({"d": 900}), header=False))
    out = check(capsys, tmp_path, acct)
    assert out.code == 0 and out.value("attempts") == "1000" and out.value("hard_rate") == "1%"


def test_verbose_says_what_was_read_and_how(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from pmta_snmp.acct.tally import PURE_PYTHON_ENV, speedups

    acct = write(tmp_path / "acct.csv", acct_lines(storm(30)))
    out = check(capsys, tmp_path, acct, "--from-start")
    assert "accounting:" not in out.out  # OK and not -v: the status line only
    append(acct, acct_lines(mix({"d": 90, "b": 10}), header=False))
    out = check(capsys, tmp_path, acct, "-v")
    line = next(x for x in out.out.splitlines() if x.startswith("accounting: "))
    assert line.startswith("accounting: 100 new records of the counted types read in ")
    assert ("pure Python" in line) == (speedups() is None)
    monkeypatch.setenv(PURE_PYTHON_ENV, "1")
    append(acct, acct_lines(mix({"d": 5}), header=False))
    out = check(capsys, tmp_path, acct, "-v")
    assert "accounting: 5 new records of the counted types read in " in out.out
    assert "(pure Python: the C scanner pmta_snmp._csvtally is not in use)" in out.out


def test_records_outside_the_window_are_ignored(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    old = [dict(r, _minutes_ago=90) for r in storm(500)]
    acct = write(tmp_path / "acct.csv", acct_lines(old + mix({"d": 200})))
    out = check(capsys, tmp_path, acct, "--from-start")
    assert out.code == 0 and out.value("attempts") == "200"
    out = check(capsys, tmp_path, acct, "--from-start", "--window", "2h",
                "--instance", "two-hours")
    assert out.code == 2 and out.value("attempts") == "1200"


def test_rotation_by_rename_reads_the_rest_then_the_new_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    acct = write(tmp_path / "acct.csv", acct_lines(mix({"d": 10}, minutes_ago=90)))
    check(capsys, tmp_path, acct)
    append(acct, acct_lines(mix({"d": 50, "b": 10}), header=False))
    acct.rename(tmp_path / "acct-2025-01-14-0001.csv")
    write(acct, acct_lines(mix({"d": 40}, domain="example.net")))
    out = check(capsys, tmp_path, acct)
    assert out.value("attempts") == "100" and out.value("hard") == "10"
    # Compressed afterwards: nothing is read twice.
    rotated = tmp_path / "acct-2025-01-14-0001.csv"
    with gzip.open(str(rotated) + ".gz", "wb") as fh:
        fh.write(rotated.read_bytes())
    rotated.unlink()
    out = check(capsys, tmp_path, acct)
    assert out.value("attempts") == "100"


def test_glob_of_rotated_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "acct-2025-01-14-0001.csv", acct_lines(mix({"d": 100, "b": 10})))
    with gzip.open(tmp_path / "acct-2025-01-14-0000.csv.gz", "wt", newline="") as fh:
        fh.write(acct_lines(mix({"d": 100}, domain="example.net")))
    write(tmp_path / "acct.csv", acct_lines(mix({"d": 90, "b": 0})))
    out = check(capsys, tmp_path, tmp_path / "acct*.csv*", "--from-start")
    assert out.value("attempts") == "300" and out.value("hard") == "10"
    out = check(capsys, tmp_path, tmp_path / "nothing-*.csv")
    assert out.code == 3
    assert out.line.endswith(f"no accounting file matches {tmp_path}/nothing-*.csv")


def test_zabbix_value_json_and_sources_discovery(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    records = storm(60) + mix({"d": 100}, domain="example.com", ip="198.51.100.21",
                              vmta="vmta-b")
    acct = write(tmp_path / "acct.csv", acct_lines(records))
    out = check(capsys, tmp_path, acct, "--from-start", "--output", "zabbix")
    assert (out.code, out.out, out.err) == (0, f"{60 / 11:.4f}\n", "")
    doc = json.loads(check(capsys, tmp_path, acct, "--json").out)
    assert doc["status"] == 1
    assert doc["details"]["domain"]["example.org"] == {"rate": 6.0, "count": 60,
                                                       "attempts": 1000}
    out = check(capsys, tmp_path, acct, "--discover", "sources")
    assert json.loads(out.out) == [{"{#SOURCEIP}": "198.51.100.20"},
                                   {"{#SOURCEIP}": "198.51.100.21"}]
    out = check(capsys, tmp_path, acct, "--discover", "vmtas")
    assert json.loads(out.out) == [{"{#VMTA}": "vmta-a"}, {"{#VMTA}": "vmta-b"}]


def test_missing_and_unreadable_files(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = check(capsys, tmp_path, tmp_path / "nope.csv")
    assert out.code == 3
    assert out.line == (f"PMTA BOUNCE UNKNOWN - accounting file {tmp_path}/nope.csv does not "
                        "exist (check --acct-file)")
    (tmp_path / "dir.csv").mkdir()
    out = check(capsys, tmp_path, tmp_path / "dir.csv")
    assert out.code == 3 and out.line.startswith("PMTA BOUNCE UNKNOWN - cannot read")
    out = check(capsys, tmp_path, tmp_path / "nope.csv", "--output", "zabbix")
    assert out.code == 0 and out.out.startswith("ZBX_NOTSUPPORTED: accounting file")


def test_corrupt_state_is_reported_and_reset(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    acct = write(tmp_path / "acct.csv", acct_lines([dict(r, _minutes_ago=90) for r in storm(80)]))
    check(capsys, tmp_path, acct, "--instance", "a")
    state = tmp_path / "state" / "check_pmta_bounce-a.json"
    state.write_bytes(b"\x00\xff garbage")
    out = check(capsys, tmp_path, acct, "--instance", "a")
    assert out.code == 0
    assert "state reset" in out.out and "first run" in out.out
    assert (state.stat().st_mode & 0o777) == 0o600


def test_timeout_keeps_what_was_read(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pmta_snmp.checks import base

    acct = write(tmp_path / "acct.csv", acct_lines(mix({"d": 200})))
    monkeypatch.setattr(base.Run, "soft_deadline", lambda self, margin=0.15: 0.0)
    out = check(capsys, tmp_path, acct, "--from-start", "-t", "3")
    assert out.code == 3
    assert out.line.startswith(
        f"PMTA BOUNCE UNKNOWN - timed out after 3 s reading {acct} (0 records read; the rest "
        "is read next run); so far: no deliveries or bounces"
    )
    monkeypatch.undo()
    out = check(capsys, tmp_path, acct, "-t", "3")
    assert out.code == 0 and out.value("attempts") == "200"


def test_subprocess(tmp_path: Path) -> None:
    acct = write(tmp_path / "acct.csv", acct_lines(storm(80)))
    env = dict(os.environ, PMTA_SNMP_STATE_DIR=str(tmp_path / "st"))
    out = run_subprocess("bounce", ["--acct-file", str(acct), "--from-start"], env=env)
    assert out.code == 2, out
    assert out.line.startswith("PMTA BOUNCE CRITICAL - ")
    assert "hard_rate=8%;5;7;0;100" in out.out
    assert out.err == ""
