"""check_pmta_blocklist on accounting files with known rejections: a listed IP (Spamhaus in
bounces and deferrals), an IP on Outlook.com's own list, a clean IP, reputation deferrals that
name no list; every state and every error path."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pmta_snmp.checks.blocklist import main

from tests.integration.test_checks_support import (
    Outcome,
    acct_lines,
    mix,
    rec,
    run_main,
    run_subprocess,
)

LISTED, OUTLOOK, CLEAN = "198.51.100.22", "198.51.100.21", "198.51.100.20"
SPAMHAUS = ("smtp;554 5.7.1 Service unavailable; Client host [{ip}] blocked using "
            "zen.spamhaus.org; https://www.spamhaus.org/query/ip/{ip}")
BARRACUDA = "smtp;451 4.7.1 Client host [{ip}] blocked using b.barracudacentral.org"
S3150 = ("smtp;550 5.7.1 Unfortunately, messages from [{ip}] weren't sent. Please contact "
         "your Internet service provider since part of their network is on our block list "
         "(S3150).")
GMAIL_RATE = ("smtp;421-4.7.28 [{ip}] Our system has detected an unusual rate of unsolicited "
              "mail originating from your IP address.")


def check(capsys: pytest.CaptureFixture[str], tmp_path: Path, acct: Path, *argv: str) -> Outcome:
    return run_main(main, ["--acct-file", str(acct), "--state-dir", str(tmp_path / "state"),
                           *argv], capsys)


def write(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    path = tmp_path / "acct.csv"
    path.write_text(acct_lines(records), newline="")
    return path


def rejected(kind: str, n: int, ip: str, diag: str, domain: str = "example.org",
             **kw: Any) -> list[dict[str, Any]]:
    cat = {"b": "spam-related", "t": ""}[kind]
    status = {"b": "5.7.1 (delivery not authorized, message refused)",
              "t": "4.7.1 (delivery not authorized, message refused)"}[kind]
    return [rec(kind, f"r{i}@{domain}", ip=ip, cat=cat or "-", status=status,
                diag=diag.format(ip=ip), **kw) for i in range(n)]


def traffic() -> list[dict[str, Any]]:
    """LISTED: 10 Spamhaus bounces, 2 Spamhaus deferrals, 1 Barracuda deferral; OUTLOOK: one
    S3150 bounce; CLEAN: deliveries and 40 Gmail rate-limit deferrals (reputation, no list)."""
    return [
        *mix({"d": 500}, ip=CLEAN), *mix({"d": 300}, ip=LISTED), *mix({"d": 300}, ip=OUTLOOK),
        *rejected("b", 10, LISTED, SPAMHAUS), *rejected("t", 2, LISTED, SPAMHAUS),
        *rejected("t", 1, LISTED, BARRACUDA),
        *rejected("b", 1, OUTLOOK, S3150, domain="hotmail.com"),
        *rejected("t", 40, CLEAN, GMAIL_RATE, domain="gmail.com"),
    ]


def test_listed_ips_name_the_list_and_count(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    acct = write(tmp_path, traffic())
    out = check(capsys, tmp_path, acct)
    assert out.code == 2, out.out
    assert out.line == (
        f"PMTA BLOCKLIST CRITICAL - source IP {LISTED}: 12 rejections naming spamhaus in the "
        f"last 24 h (critical at 3 or more); source IP {OUTLOOK}: 1 rejection naming "
        f"microsoft in the last 24 h (warning at 1 or more); source IP {LISTED}: 1 rejection "
        "naming barracuda in the last 24 h (warning at 1 or more)")
    # the long output: each list's public lookup address for the IP
    assert (f"{LISTED} on spamhaus: look it up and ask for delisting at "
            f"https://check.spamhaus.org/results/?query={LISTED}") in out.out
    assert f"{OUTLOOK} on microsoft: look it up and ask for delisting at " \
           "https://olcsupport.office.com/" in out.out
    assert out.perf["ip_198_51_100_22_spamhaus"] == "12;0;2;0"
    assert (out.value("max_rejections"), out.value("blocklist_rejections"),
            out.value("listed_ips")) == ("12", "14", "2")
    assert CLEAN not in out.out  # reputation deferrals name no list


def test_thresholds_are_at_least_counts(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    acct = write(tmp_path, traffic())
    out = check(capsys, tmp_path, acct, "-w", "2", "-c", "13")
    assert out.code == 1
    assert out.line == (f"PMTA BLOCKLIST WARNING - source IP {LISTED}: 12 rejections naming "
                        "spamhaus in the last 24 h (warning at 2 or more)")
    out = check(capsys, tmp_path, acct, "-w", "13", "-c", "14")
    assert out.code == 0
    assert out.line.startswith(
        "PMTA BLOCKLIST OK - 14 rejections naming a blocklist in the last 24 h, below the "
        f"thresholds; most: source IP {LISTED} on spamhaus 12 |")
    out = check(capsys, tmp_path, acct, "-c", "12")
    assert out.code == 2 and "(critical at 12 or more)" in out.line
    out = check(capsys, tmp_path, acct, "-w", "@1:1", "-c", "100")  # a Nagios range
    assert out.code == 1
    assert out.line == (
        f"PMTA BLOCKLIST WARNING - source IP {OUTLOOK}: 1 rejection naming microsoft in the "
        f"last 24 h (warning inside 1..1); source IP {LISTED}: 1 rejection naming barracuda in "
        "the last 24 h (warning inside 1..1)")


def test_clean_file_and_one_ip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    acct = write(tmp_path, [r for r in traffic() if r["dlvSourceIp"] == CLEAN])
    out = check(capsys, tmp_path, acct)
    assert out.code == 0
    assert out.line.startswith("PMTA BLOCKLIST OK - no rejections naming a blocklist in the "
                               "last 24 h")
    acct = write(tmp_path, traffic())
    out = check(capsys, tmp_path, acct, "--source-ip", CLEAN)
    assert out.code == 0
    assert out.line.startswith(f"PMTA BLOCKLIST OK - source IP {CLEAN}: no rejections naming "
                               "a blocklist in the last 24 h")
    out = check(capsys, tmp_path, acct, "--source-ip", OUTLOOK)
    assert out.code == 1 and out.line.endswith("(warning at 1 or more)")
    assert out.value("max_rejections") == "1"


def test_window_leaves_old_rejections_out(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    old = [dict(r, _minutes_ago=25 * 60) for r in rejected("b", 20, LISTED, SPAMHAUS)]
    recent = [dict(r, _minutes_ago=23 * 60) for r in rejected("b", 2, LISTED, SPAMHAUS)]
    acct = write(tmp_path, old + recent)
    out = check(capsys, tmp_path, acct)
    assert out.code == 1, out.out
    assert f"source IP {LISTED}: 2 rejections naming spamhaus in the last 24 h" in out.line
    out = check(capsys, tmp_path, acct, "--window", "1h", "-w", "1", "-c", "1")
    assert out.code == 0 and "first run" in out.out  # another window: another counting


def test_zabbix_and_discovery(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    acct = write(tmp_path, traffic())
    out = check(capsys, tmp_path, acct, "--output", "zabbix")
    assert (out.code, out.out, out.err) == (0, "12\n", "")
    doc = json.loads(check(capsys, tmp_path, acct, "--json").out)
    assert doc["status"] == 2
    assert doc["details"]["listings"][0] == {
        "ip": LISTED, "blocklist": "spamhaus", "count": 12,
        "lookup": f"https://check.spamhaus.org/results/?query={LISTED}"}
    out = check(capsys, tmp_path, acct, "--discover", "source-ips")
    assert json.loads(out.out) == [{"{#SOURCEIP}": ip} for ip in (CLEAN, OUTLOOK, LISTED)]
    out = check(capsys, tmp_path, acct, "--discover", "domains")
    assert (out.code, out.err) == (0, "")
    assert out.out.startswith("ZBX_NOTSUPPORTED: usage: argument --discover: invalid choice: "
                              "'domains' (choose from 'source-ips')")


def test_subprocess(tmp_path: Path) -> None:
    acct = write(tmp_path, traffic())
    env = dict(os.environ, PMTA_SNMP_STATE_DIR=str(tmp_path / "st"))
    out = run_subprocess("blocklist", ["--acct-file", str(acct)], env=env)
    assert out.code == 2, out
    assert out.line.startswith(f"PMTA BLOCKLIST CRITICAL - source IP {LISTED}: 12 rejections")
    assert out.err == ""


@pytest.mark.parametrize(("argv", "line"), [
    (["--source-ip", "mta1"], "usage: argument --source-ip: not an IP address: 'mta1'"),
    (["-c", "x"], "usage: argument -c/--critical: invalid range 'x'"),
    (["--min-volume", "3"], "usage: unrecognized arguments: --min-volume 3"),
    (["--reason-rules", "{dir}/bad.toml"], "{dir}/bad.toml: not valid TOML"),
    (["--acct-file", "{dir}/none*.csv"], "no accounting file matches {dir}/none*.csv"),
])
def test_errors_are_one_unknown_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     argv: list[str], line: str) -> None:
    acct = write(tmp_path, traffic())
    (tmp_path / "bad.toml").write_text("rule = [\n", encoding="utf-8")
    argv = [a.replace("{dir}", str(tmp_path)) for a in argv]
    out = check(capsys, tmp_path, acct, *argv)
    assert out.code == 3, out.out
    assert out.line.startswith("PMTA BLOCKLIST UNKNOWN - " + line.replace("{dir}", str(tmp_path)))
    assert len(out.out.splitlines()) == 1 and out.err == ""


@pytest.mark.parametrize("written", ["2001:DB8::22", "2001:0db8:0:0::22", "[2001:db8::22]"])
def test_an_ipv6_source_ip_written_otherwise_is_the_same_address(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], written: str) -> None:
    """PowerMTA may write an IPv6 dlvSourceIp as configured (upper case, zeros, brackets):
    --source-ip and the discovered IP (what a Zabbix item passes back) still find its
    rejections, under the address's one canonical text."""
    acct = write(tmp_path, [*mix({"d": 20}, ip=written),
                            *rejected("b", 5, written, SPAMHAUS)])
    for given in (written, "2001:db8::22"):
        out = check(capsys, tmp_path, acct, "--source-ip", given)
        assert out.code == 2, out.out
        assert out.line.startswith("PMTA BLOCKLIST CRITICAL - source IP 2001:db8::22: 5 "
                                   "rejections naming spamhaus"), out.line
    out = check(capsys, tmp_path, acct, "--discover", "source-ips")
    assert json.loads(out.out) == [{"{#SOURCEIP}": "2001:db8::22"}]


def test_a_record_dated_in_the_future_leaves_the_window_like_one_of_now(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Rejections logged by a clock a year ahead count as of now, and leave the 24 h window a
    day later: they do not keep the source IP CRITICAL for the year until their timestamp."""
    import time

    ahead = [dict(r, _minutes_ago=-365 * 24 * 60) for r in rejected("b", 4, LISTED, SPAMHAUS)]
    acct = write(tmp_path, [*mix({"d": 20}, ip=LISTED), *ahead])
    out = check(capsys, tmp_path, acct)
    assert out.code == 2 and "4 rejections naming spamhaus in the last 24 h" in out.line, out.out
    later = time.time() + 25 * 3600
    monkeypatch.setattr(time, "time", lambda: later)
    out = check(capsys, tmp_path, acct)
    assert out.code == 0, out.out
    assert out.line.startswith("PMTA BLOCKLIST OK - no rejections naming a blocklist"), out.line


@pytest.mark.parametrize("plugin", ["blocklist", "bounce", "deferral"])
@pytest.mark.parametrize(("option", "name"), [("--reason-rules", "bad.toml"),
                                              ("--provider-map", "bad.toml"),
                                              ("--reason-rules", "missing.toml")])
def test_a_rules_file_given_is_checked_before_any_rejection_needs_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], plugin: str, option: str,
        name: str) -> None:
    """A --reason-rules or --provider-map that cannot be used is UNKNOWN from the first run,
    not OK while there is nothing to classify and UNKNOWN the day rejections come."""
    import importlib

    plugin_main = importlib.import_module(f"pmta_snmp.checks.{plugin}").main
    acct = write(tmp_path, mix({"d": 200}, ip=CLEAN))
    (tmp_path / "bad.toml").write_text("rule = [\n", encoding="utf-8")
    path = str(tmp_path / name)
    out = run_main(plugin_main, ["--acct-file", str(acct), "--state-dir",
                                 str(tmp_path / "state"), option, path], capsys)
    assert out.code == 3, out.out
    assert out.line.startswith(f"PMTA {plugin.upper()} UNKNOWN - {path}: "), out.line
    assert len(out.out.splitlines()) == 1 and out.err == ""


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs a read-only directory")
def test_a_read_only_state_directory_is_named_on_the_unknown_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A state directory where the lock file cannot be created (read-only, even for root) is
    one UNKNOWN line naming the directory, not `cannot read <bare file name>`."""
    acct = write(tmp_path, traffic())
    out = run_main(main, ["--acct-file", str(acct), "--state-dir", "/sys/kernel"], capsys)
    assert out.code == 3, out.out
    assert out.line.startswith("PMTA BLOCKLIST UNKNOWN - cannot create the lock file "
                               "/sys/kernel/check_pmta_blocklist-"), out.line
    assert "is the state directory /sys/kernel writable?" in out.line
    assert len(out.out.splitlines()) == 1 and out.err == ""
