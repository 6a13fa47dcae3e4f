"""check_pmta_complaints on accounting files with known deliveries and feedback-loop reports:
ARF (Yahoo, iCloud) and JMRP (Outlook.com), a provider found by its MX host only, Gmail (no
per-message feedback), every state and every error path."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pmta_snmp.checks.complaints import main

from tests.integration.test_checks_support import (
    Outcome,
    acct_json_lines,
    acct_lines,
    feedback,
    mix,
    run_main,
    run_subprocess,
)

#: A company domain hosted by Microsoft 365: in the provider map by its MX host only.
M365 = {"dsnMta": "contoso-example.mail.protection.outlook.com (192.0.2.40)"}


def check(capsys: pytest.CaptureFixture[str], tmp_path: Path, acct: Path, *argv: str) -> Outcome:
    return run_main(main, ["--acct-file", str(acct), "--state-dir", str(tmp_path / "state"),
                           *argv], capsys)


def write(tmp_path: Path, records: list[dict[str, Any]], name: str = "acct.csv") -> Path:
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(acct_json_lines(records), encoding="utf-8")
    else:
        path.write_text(acct_lines(records, "5.0+f"), newline="")
    return path


def jmrp(rcpt: str, **kw: Any) -> dict[str, Any]:
    return feedback(rcpt, fmt="jmrp", reporting_mta="jmrp.hotmail.com", **kw)


def traffic() -> list[dict[str, Any]]:
    """yahoo 2,000 deliveries and 8 ARF complaints (0.40 %); microsoft 1,000 to hotmail.com
    and 1,000 to a Microsoft 365 domain with 3 JMRP complaints (0.15 %); apple 1,500 with one
    complaint and two reports that are none (0.07 %); gmail 5,000 (not measured)."""
    return [
        *mix({"d": 2000}, domain="yahoo.com"),
        *(feedback(f"u{i}@yahoo.com") for i in range(8)),
        *mix({"d": 1000}, domain="hotmail.com"),
        *mix({"d": 1000}, domain="contoso.example", **M365),
        jmrp("ud1@hotmail.com"), jmrp("ud2@contoso.example"), jmrp("ud3@contoso.example"),
        *mix({"d": 1500}, domain="icloud.com"),
        feedback("a@icloud.com", reporting_mta="fbl.icloud.com"),
        feedback("b@icloud.com", reporting_mta="fbl.icloud.com", feedback_type="not-spam"),
        feedback("c@icloud.com", reporting_mta="fbl.icloud.com", feedback_type="virus"),
        *mix({"d": 5000}, domain="gmail.com"),
    ]


def test_rates_per_provider_with_arf_jmrp_and_mx_only_providers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    acct = write(tmp_path, traffic())
    out = check(capsys, tmp_path, acct)
    assert out.code == 2, out.out
    assert out.line == (
        "PMTA COMPLAINTS CRITICAL - yahoo complaint rate 0.40% (8 of 2,000 deliveries) "
        "(critical above 0.3%); microsoft complaint rate 0.15% (3 of 2,000 deliveries) "
        "(warning above 0.1%)")
    assert out.perf["provider_yahoo_complaint_rate"] == "0.4%;0.1;0.3;0;100"
    assert out.value("provider_microsoft_complaint_rate") == "0.15%"
    assert out.value("provider_apple_complaint_rate") == f"{100 / 1500:.4f}%"
    assert (out.value("complaints"), out.value("deliveries")) == ("12", "5500")
    assert not any("gmail" in label for label in out.perf)  # not measured: no rate at all
    out = check(capsys, tmp_path, acct, "-v")
    assert ("gmail: 5,000 deliveries in the last 24 h; Gmail sends no per-message feedback "
            "(its complaint rate is in Postmaster Tools): not measured") in out.out


def test_ok_line_and_gmail_not_measured(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    records = [r for r in traffic() if r["type"] != "f" or "icloud" in r["rcpt"]]
    acct = write(tmp_path, records)
    out = check(capsys, tmp_path, acct)
    assert out.code == 0, out.out
    assert out.line.startswith(
        "PMTA COMPLAINTS OK - complaints 0.02% of 5,500 deliveries in the last 24 h; worst "
        "apple 0.07%; gmail not measured (no per-message feedback) (1 note below)")


def test_min_volume_and_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A provider below --min-volume deliveries is not judged; complaints older than the
    24-hour window (and the deliveries then) are not counted, not even by a first run."""
    old = [dict(r, _minutes_ago=25 * 60) for r in
           mix({"d": 3000}, domain="yahoo.com") + [feedback(f"o{i}@yahoo.com") for i in range(9)]]
    records = old + mix({"d": 900}, domain="yahoo.com") + [feedback("n@yahoo.com")] * 2
    acct = write(tmp_path, records)
    out = check(capsys, tmp_path, acct)
    assert out.code == 0, out.out
    assert out.line.startswith("PMTA COMPLAINTS OK - complaints 0.22% of 900 deliveries in the "
                               "last 24 h, below --min-volume 1000: not judged")
    assert "provider_yahoo_complaint_rate" not in out.perf
    assert "first run: read back the records of the last 24 h of" in out.out
    out = check(capsys, tmp_path, acct, "--min-volume", "500")
    assert out.code == 1 and "yahoo complaint rate 0.22% (2 of 900 deliveries)" in out.line


def test_by_sending_domain_and_source_ip(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Per provider and sending domain (orig, else reportedDomain) and per provider and source
    IP (dlvSourceIp for deliveries, repSourceIp for complaints)."""
    records = [
        *mix({"d": 1000}, domain="yahoo.com", ip="198.51.100.20"),
        *mix({"d": 1000}, domain="yahoo.com", ip="198.51.100.21",
             orig="bounces@promo.example.org"),
        *(feedback(f"p{i}@yahoo.com", ip="198.51.100.21", orig="",
                   reported_domain="promo.example.org") for i in range(4)),
    ]
    acct = write(tmp_path, records)
    out = check(capsys, tmp_path, acct, "--by", "provider,sending-domain,source-ip")
    assert out.code == 2, out.out
    assert out.line.startswith(
        "PMTA COMPLAINTS CRITICAL - yahoo sending domain promo.example.org complaint rate "
        "0.40% (4 of 1,000 deliveries) (critical above 0.3%); yahoo source IP 198.51.100.21 "
        "complaint rate 0.40% (4 of 1,000 deliveries) (critical above 0.3%); yahoo complaint "
        "rate 0.20% (4 of 2,000 deliveries) (warning above 0.1%)")
    assert out.value("sending_domain_yahoo_news_example_net_complaint_rate") == "0%"
    assert out.value("source_ip_yahoo_198_51_100_20_complaint_rate") == "0%"
    # The per-provider check keeps its own window: the other grouping did not reset it.
    out = check(capsys, tmp_path, acct)
    assert out.code == 1 and "first run" in out.out
    out = check(capsys, tmp_path, acct, "--by", "sending-domain,source-ip,provider")
    assert out.code == 2 and "first run" not in out.out


def test_one_provider(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    acct = write(tmp_path, traffic())
    out = check(capsys, tmp_path, acct, "--provider", "Microsoft")
    assert out.code == 1
    assert out.line == ("PMTA COMPLAINTS WARNING - microsoft complaint rate 0.15% (3 of "
                        "2,000 deliveries) (warning above 0.1%)")
    out = check(capsys, tmp_path, acct, "--provider", "apple")
    assert out.code == 0
    assert out.line.startswith("PMTA COMPLAINTS OK - complaints 0.07% of 1,500 deliveries to "
                               "apple in the last 24 h |")


def test_json_accounting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """JSON accounting (5.x): the feedback fields come from each object's own keys."""
    acct = write(tmp_path, traffic(), name="acct.json")
    out = check(capsys, tmp_path, acct)
    assert out.code == 2, out.out
    assert out.value("complaints") == "12" and out.value("deliveries") == "5500"


def test_no_feedback_records_is_said(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    acct = write(tmp_path, mix({"d": 2000}, domain="yahoo.com"))
    out = check(capsys, tmp_path, acct)
    assert out.code == 0
    assert out.line.startswith("PMTA COMPLAINTS OK - complaints 0.00% of 2,000 deliveries in "
                               "the last 24 h (2 notes below)")
    assert ("no feedback-loop (f) records in the last 24 h: complaints are counted only when "
            "PowerMTA logs them") in out.out


def test_zabbix_and_discovery(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    acct = write(tmp_path, traffic())
    out = check(capsys, tmp_path, acct, "--output", "zabbix")
    assert (out.code, out.out, out.err) == (0, "0.4\n", "")
    doc = json.loads(check(capsys, tmp_path, acct, "--json").out)
    assert doc["status"] == 2 and doc["details"]["not_measured"] == ["gmail"]
    assert doc["details"]["provider"]["microsoft"] == {"rate": 0.15, "count": 3,
                                                       "attempts": 2000}
    out = check(capsys, tmp_path, acct, "--discover", "providers")
    assert json.loads(out.out) == [{"{#PROVIDER}": p}
                                   for p in ("apple", "gmail", "microsoft", "yahoo")]


def test_subprocess(tmp_path: Path) -> None:
    acct = write(tmp_path, traffic())
    env = dict(os.environ, PMTA_SNMP_STATE_DIR=str(tmp_path / "st"))
    out = run_subprocess("complaints", ["--acct-file", str(acct)], env=env)
    assert out.code == 2, out
    assert out.line.startswith("PMTA COMPLAINTS CRITICAL - yahoo complaint rate 0.40%")
    assert out.err == ""


@pytest.mark.parametrize(("argv", "line"), [
    (["--provider", "gmail"], "PMTA COMPLAINTS UNKNOWN - --provider gmail: Gmail sends no "
     "per-message feedback (its complaint rate is in Postmaster Tools): not measured"),
    (["--provider", "nosuch"], "PMTA COMPLAINTS UNKNOWN - --provider nosuch: not in the "
     "provider map providers.toml (shipped default) (gmail, microsoft, yahoo,"),
    (["--by", "planet"], "PMTA COMPLAINTS UNKNOWN - usage: argument --by: unknown grouping "
     "'planet'; choose from provider, sending-domain, source-ip (see --help)"),
    (["--window", "soon"], "PMTA COMPLAINTS UNKNOWN - usage: argument --window: not a "
     "duration"),
    (["-w", "lots"], "PMTA COMPLAINTS UNKNOWN - usage: argument -w/--warning: invalid range"),
    (["--provider-map", "{dir}/nope.toml"], "PMTA COMPLAINTS UNKNOWN - {dir}/nope.toml: cannot "
     "read: No such file or directory"),
    (["--reason-rules", "{dir}/bad.toml"], "PMTA COMPLAINTS UNKNOWN - {dir}/bad.toml: not valid "
     "TOML"),
    (["--acct-file", "{dir}/missing.csv"], "PMTA COMPLAINTS UNKNOWN - accounting file "
     "{dir}/missing.csv does not exist (check --acct-file)"),
])
def test_errors_are_one_unknown_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     argv: list[str], line: str) -> None:
    acct = write(tmp_path, traffic())
    (tmp_path / "bad.toml").write_text("[[rule]\n", encoding="utf-8")
    argv = [a.replace("{dir}", str(tmp_path)) for a in argv]
    out = check(capsys, tmp_path, acct, *argv)
    assert out.code == 3, out.out
    assert out.line.startswith(line.replace("{dir}", str(tmp_path))), out.line
    assert len(out.out.splitlines()) == 1 and out.err == ""


def test_ok_line_names_the_worst_key_in_words(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    records = [
        *mix({"d": 2000}, domain="yahoo.com"),
        *mix({"d": 2000}, domain="yahoo.com", orig="bounces@promo.example.org"),
        feedback("a@yahoo.com", orig="bounces@promo.example.org"),
    ]
    acct = write(tmp_path, records)
    out = check(capsys, tmp_path, acct, "--by", "sending-domain")
    assert out.code == 0, out.out
    assert out.line.startswith("PMTA COMPLAINTS OK - complaints 0.03% of 4,000 deliveries in the "
                               "last 24 h; worst yahoo sending domain promo.example.org 0.05%")


def test_timeout_keeps_what_was_read(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A read stopped by -t is UNKNOWN with what was judged so far; the next run reads on."""
    from pmta_snmp.checks import base

    acct = write(tmp_path, traffic())
    monkeypatch.setattr(base.Run, "soft_deadline", lambda self, margin=0.15: 0.0)
    out = check(capsys, tmp_path, acct, "-t", "3")
    assert out.code == 3
    assert out.line.startswith(f"PMTA COMPLAINTS UNKNOWN - timed out after 3 s reading {acct} "
                               "(0 records read; the rest is read next run); so far: no "
                               "deliveries in the last 24 h")
    monkeypatch.undo()
    out = check(capsys, tmp_path, acct, "-t", "3")
    assert out.code == 2 and out.value("deliveries") == "5500"


def test_complaints_to_a_provider_without_deliveries_are_said_not_blended(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """50 Yahoo complaints and no Yahoo delivery in the window (reports about older mail) have
    no rate: the line says so, naming Yahoo and the count, instead of an OK "complaints 2.50%
    of 2,000 deliveries" made of Yahoo's complaints over Microsoft's deliveries."""
    records = [*mix({"d": 2000}, domain="hotmail.com"),
               *(feedback(f"u{i}@yahoo.com") for i in range(50))]
    acct = write(tmp_path, records)
    for i, argv in enumerate(((), ("--min-volume", "0"))):
        out = check(capsys, tmp_path / f"run{i}", acct, *argv)
        assert out.code == 0, out.out
        assert out.line.startswith(
            "PMTA COMPLAINTS OK - complaints 0.00% of 2,000 deliveries in the last 24 h; "
            "yahoo: 50 complaints and no deliveries in the last 24 h: no rate"), out.line
        assert (out.value("complaints"), out.value("deliveries")) == ("0", "2000")
        assert out.value("complaint_rate") == "0%"
        assert out.value("unrated_complaints") == "50"
    doc = json.loads(check(capsys, tmp_path, acct, "--json").out)
    assert doc["details"]["without_deliveries"] == {"yahoo": 50}
    # Only complaints, nowhere a delivery.
    acct = write(tmp_path, [feedback(f"u{i}@yahoo.com") for i in range(5)], name="f.csv")
    out = check(capsys, tmp_path / "f", acct)
    assert out.code == 0, out.out
    assert out.line.startswith("PMTA COMPLAINTS OK - no deliveries in the last 24 h; yahoo: 5 "
                               "complaints and no deliveries in the last 24 h: no rate")
