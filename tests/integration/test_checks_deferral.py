"""check_pmta_deferral on crafted accounting files: rates and listed-IP outliers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pmta_snmp.checks.deferral import main

from tests.integration.test_checks_support import (
    Outcome,
    acct_lines,
    mix,
    rec,
    run_main,
    run_subprocess,
)


def check(capsys: pytest.CaptureFixture[str], tmp_path: Path, acct: Path,
          *argv: str) -> Outcome:
    return run_main(main, ["--acct-file", str(acct), "--state-dir", str(tmp_path / "state"),
                           "--from-start", *argv], capsys)


def write(tmp_path: Path, records: list[dict[str, object]], layout: str = "5.0") -> Path:
    path = tmp_path / "acct.csv"
    path.write_text(acct_lines(records, layout), newline="")
    return path


@pytest.mark.parametrize(("deferred", "code", "word"),
                         [(40, 0, "OK"), (100, 1, "WARNING"), (200, 2, "CRITICAL")])
def test_rate_thresholds(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         deferred: int, code: int, word: str) -> None:
    acct = write(tmp_path, mix({"d": 1000 - deferred, "t": deferred}, domain="gmail.com"))
    out = check(capsys, tmp_path, acct)
    assert out.code == code
    assert out.line.startswith(f"PMTA DEFERRAL {word} - ")
    assert out.value("deferral_rate") == f"{deferred / 10:g}%"
    if code:
        assert f"domain gmail.com deferral rate {deferred / 10:.1f}% ({deferred} of 1,000)" \
            in out.line
        assert 'top reasons: "smtp;421 4.7.0 try again later" x' in out.line


def test_rate_is_per_recipient_and_tq_is_reported_apart(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """t / (d + b + t) as documented: queue-level tq records (no recipient) are counted
    apart, not as deferred recipients nor as attempts."""
    tq = [dict(rec("tq", "", queue="yahoo.com/vmta-a"), rcpt="") for _ in range(50)]
    acct = write(tmp_path, mix({"d": 90, "t": 10}, domain="yahoo.com") + tq)
    out = check(capsys, tmp_path, acct, "--min-volume", "10")
    assert out.value("deferral_rate") == "10%"
    assert (out.value("deferred"), out.value("attempts")) == ("10", "100")
    assert out.value("queue_deferrals") == "50"
    assert out.code == 1 and "domain yahoo.com deferral rate 10.0% (10 of 100)" in out.line
    doc = json.loads(check(capsys, tmp_path, acct, "--json").out)
    assert doc["details"]["queue_deferrals"] == 50 and doc["details"]["deferral_rate"] == 10


def test_tq_alone_is_no_recipient_rate(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    tq = [dict(rec("tq", "", queue="yahoo.com/vmta-a"), rcpt="") for _ in range(60)]
    acct = write(tmp_path, mix({"d": 440}, domain="yahoo.com") + tq)
    out = check(capsys, tmp_path, acct)
    assert out.code == 0 and out.value("deferral_rate") == "0%"
    assert out.line.startswith(
        "PMTA DEFERRAL OK - deferrals 0.0% of 440 attempts in the last 60 min; "
        "60 queue-level deferrals (tq)")


def test_listed_ip_outlier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = (
        mix({"d": 195, "t": 5}, domain="gmail.com", ip="198.51.100.20")
        + mix({"d": 196, "t": 4}, domain="gmail.com", ip="198.51.100.21")
        + mix({"d": 120, "t": 80}, domain="gmail.com", ip="198.51.100.22")
        + mix({"d": 2000}, domain="yahoo.com", ip="198.51.100.22")
    )
    acct = write(tmp_path, records)
    out = check(capsys, tmp_path, acct)
    assert out.code == 1
    assert ("source IP 198.51.100.22 defers 40.0% of 200 for gmail.com vs 2.2% on its "
            "2 peers (listed IP?)") in out.line
    assert out.value("outlier_ips") == "1"
    doc = json.loads(check(capsys, tmp_path, acct, "--json").out)
    assert doc["details"]["outliers"][0]["ip"] == "198.51.100.22"
    out = check(capsys, tmp_path, acct, "--outlier-state", "critical")
    assert out.code == 2


def test_uniform_rate_is_not_an_outlier(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    records = [r for ip in ("198.51.100.20", "198.51.100.21", "198.51.100.22")
               for r in mix({"d": 160, "t": 40}, domain="gmail.com", ip=ip)]
    acct = write(tmp_path, records)
    out = check(capsys, tmp_path, acct, "-v")
    assert out.code == 2  # 20 % for the domain and every IP
    assert out.value("outlier_ips") == "0"
    assert ("domain gmail.com: every source IP defers alike (a configuration or "
            "receiving-side problem, not one listed IP)") in out.out


def test_min_volume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    acct = write(tmp_path, mix({"d": 10, "t": 10}, domain="tiny.example"))
    out = check(capsys, tmp_path, acct)
    assert out.code == 0
    assert out.line.startswith(
        "PMTA DEFERRAL OK - deferrals 50.0% of 20 attempts in the last 60 min, below "
        "--min-volume 100: not judged"
    )


def test_zabbix_and_discovery(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    acct = write(tmp_path, mix({"d": 900, "t": 100}, domain="gmail.com"), layout="5.5")
    out = check(capsys, tmp_path, acct, "--output", "zabbix")
    assert (out.code, out.out, out.err) == (0, "10\n", "")
    out = check(capsys, tmp_path, acct, "--discover", "domains")
    assert json.loads(out.out) == [{"{#DOMAIN}": "gmail.com"}]


def test_subprocess(tmp_path: Path) -> None:
    acct = write(tmp_path, mix({"d": 800, "t": 200}, domain="gmail.com"), layout="4.0")
    env = dict(os.environ, PMTA_SNMP_STATE_DIR=str(tmp_path / "st"))
    out = run_subprocess("deferral", ["--acct-file", str(acct), "--from-start"], env=env)
    assert out.code == 2, out
    assert out.line.startswith("PMTA DEFERRAL CRITICAL - overall deferral rate 20.0% of 1,000")
    assert out.err == ""


def test_unknown_states(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = check(capsys, tmp_path, tmp_path / "missing.csv")
    assert out.code == 3
    assert out.line == (f"PMTA DEFERRAL UNKNOWN - accounting file {tmp_path}/missing.csv does "
                        "not exist (check --acct-file)")
    acct = write(tmp_path, mix({"d": 10}))
    out = check(capsys, tmp_path, acct, "--by", "planet")
    assert out.code == 3 and "unknown dimension 'planet'" in out.line
    out = check(capsys, tmp_path, acct, "--window", "soon")
    assert out.code == 3 and "not a duration" in out.line
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "check_pmta_deferral-x.json").mkdir()
    out = check(capsys, tmp_path, acct, "--instance", "x")
    assert out.code == 3 and "cannot read state file" in out.line
