"""pmta-sim for the outcomes engine: feedback-loop records, provider-realistic replies,
custom domains behind Google and Microsoft MX hosts, and a source IP that gets listed.

Counts are taken from the written files themselves (csv, plain string tests); the outcomes
classifier is used only to show that the simulator produces every reason class.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from pmta_snmp.outcomes.providers import default_providers, rcpt_domain
from pmta_snmp.outcomes.reasons import BLOCKLISTS, REASONS, classify, normalize_reason
from pmta_snmp.sim.__main__ import build_parser
from pmta_snmp.sim.files import ACCT_LAYOUTS, FBL_FIELDS
from pmta_snmp.sim.state import LISTED_TICK, LISTED_VMTA, TICK_SECONDS, SimState
from tests.unit._sim_helpers import START, get_json, running

ALL = ("d", "b", "t", "tq", "f")
LISTED_IP = "198.51.100.20"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """Two simulated hours of the healthy scenario with every record type."""
    path = tmp_path_factory.mktemp("healthy")
    with running(acct_dir=path, acct_records=ALL) as sim:
        sim.advance(7200)
    return _rows(path / "acct.csv")


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, str]], str]:
    """Two simulated hours of the blocklisted scenario, and the listed queue's last error."""
    path = tmp_path_factory.mktemp("listed")
    with running(scenario="blocklisted", acct_dir=path, acct_records=ALL) as sim:
        sim.advance(7200)
        detail = get_json(sim, f"/queueDetail?queue=example.com/{LISTED_VMTA}")["queue"]
    return _rows(path / "acct.csv"), str(detail["event"][0]["text"])


def test_f_records_carry_the_feedback_fields(healthy: list[dict[str, str]]) -> None:
    assert list(healthy[0]) == [*ACCT_LAYOUTS["5.0"], *FBL_FIELDS]
    reports = [r for r in healthy if r["type"] == "f"]
    assert reports
    vmta_ips = {"198.51.100.20", "198.51.100.21", "198.51.100.22", "203.0.113.66"}
    for r in reports:
        domain = r["rcpt"].rsplit("@", 1)[1]
        assert r["feedbackType"] == "abuse"
        assert r["repSourceIp"] in vmta_ips
        assert r["reportedDomain"] == r["orig"].rsplit("@", 1)[1]
        if domain in ("yahoo.com", "aol.com"):
            assert (r["format"], r["userAgent"]) == ("arf", "Yahoo!-Mail-Feedback/2.0")
        else:  # Outlook.com's JMRP; Gmail sends no per-message reports
            assert domain in ("outlook.com", "hotmail.com") and r["format"] == "jmrp"
        assert r["dsnStatus"] == r["dsnDiag"] == r["dlvSourceIp"] == ""
    times = [r["timeLogged"] for r in healthy]
    assert times == sorted(times)


def test_complaint_rates_are_those_of_real_feedback_loops(healthy: list[dict[str, str]]) -> None:
    delivered: Counter[str] = Counter()
    complaints: Counter[str] = Counter()
    for r in healthy:
        domain = r["rcpt"].rsplit("@", 1)[-1]
        family = {"aol.com": "yahoo.com", "hotmail.com": "outlook.com"}.get(domain, domain)
        if r["type"] == "d":
            delivered[family] += 1
        elif r["type"] == "f":
            complaints[family] += 1
    assert set(complaints) == {"yahoo.com", "outlook.com"}
    for family in complaints:
        rate = complaints[family] / delivered[family]
        assert 0.0003 < rate < 0.006, (family, rate)  # around 0.1-0.2 %: below the 0.3 % bar


def test_with_f_the_header_adds_the_feedback_fields(tmp_path: Path) -> None:
    with running(acct_dir=tmp_path, acct_layout="4.0", acct_records=("d", "b", "f")) as sim:
        sim.advance(60)
    header = (tmp_path / "acct.csv").read_bytes().split(b"\r\n", 1)[0].decode()
    assert header.split(",") == [*ACCT_LAYOUTS["4.0"], *FBL_FIELDS]
    args = build_parser().parse_args(["--acct-records", "d,b,f", "--scenario", "blocklisted"])
    assert (args.acct_records, args.scenario) == ("d,b,f", "blocklisted")


def test_custom_domains_are_hosted_by_google_and_microsoft(
        healthy: list[dict[str, str]]) -> None:
    mx = {r["rcpt"].rsplit("@", 1)[-1]: r["dsnMta"] for r in healthy if r["type"] == "d"}
    assert mx["shop.example.com"].startswith("aspmx.l.google.com (")
    assert mx["corp.example.org"].startswith("corp-example-org.mail.protection.outlook.com (")
    # The simulator's own idea of each domain's provider is what the shipped map finds.
    providers = default_providers()
    for d in {q.domain for q in SimState(start=START).queues}:
        assert providers.provider(d.name, f"{d.mx} ({d.mx_ip})") == d.provider, d.name


def test_replies_are_each_providers_own(healthy: list[dict[str, str]]) -> None:
    failed = [r for r in healthy if r["type"] in ("b", "t")]
    by_domain: dict[str, list[str]] = {}
    for r in failed:
        by_domain.setdefault(r["rcpt"].rsplit("@", 1)[-1], []).append(r["dsnDiag"])
    assert all(d.endswith(" - gsmtp") for d in by_domain["gmail.com"])
    assert all("protection.outlook.com]" in d or "Too many recipients" in d
               for d in by_domain["outlook.com"] if "4.7.650" not in d)
    assert any("[TSS04]" in d for d in by_domain["yahoo.com"])
    assert any("RecipientNotFound" in d or "Access denied" in d or "Server busy" in d
               for d in by_domain["corp.example.org"])
    # Every reply names its recipient or carries an id: thousands of texts, few reasons.
    raw = {r["dsnDiag"] for r in failed}
    reasons = {normalize_reason(r["dsnStatus"], r["dsnDiag"]) for r in failed}
    assert len(raw) > 5 * len(reasons) and not any("@" in x for x in reasons)


def test_the_simulator_produces_every_reason_class(
        healthy: list[dict[str, str]], listed: tuple[list[dict[str, str]], str]) -> None:
    seen: Counter[str] = Counter()
    lists: Counter[str | None] = Counter()
    for r in healthy + listed[0]:
        if r["type"] in ("b", "t", "tq"):
            reason = classify(r["dsnStatus"], r["dsnDiag"], r["bounceCat"])
            seen[reason.reason] += 1
            lists[reason.blocklist] += 1
    assert set(seen) == set(REASONS), seen
    assert {"spamhaus", "microsoft", "proofpoint"} <= set(lists) - {None} <= set(BLOCKLISTS)


def test_a_listed_source_ip(listed: tuple[list[dict[str, str]], str]) -> None:
    rows, last_error = listed
    since = START.timestamp() + LISTED_TICK * TICK_SECONDS
    t_listed = START.fromtimestamp(since, START.tzinfo).strftime("%Y-%m-%d %H:%M:%S%z")
    spamhaus = [r for r in rows if "blocked using zen.spamhaus.org" in r["dsnDiag"]]
    s3150 = [r for r in rows if "on our block list (S3150)" in r["dsnDiag"]]
    assert len(spamhaus) > 100 and len(s3150) > 100
    for r in spamhaus + s3150:
        assert r["type"] == "b" and r["dlvSourceIp"] == LISTED_IP
        assert r["timeLogged"] >= t_listed
        assert f"[{LISTED_IP}]" in r["dsnDiag"]
    assert {rcpt_domain(r["rcpt"]) for r in spamhaus} >= {"example.com"}
    assert {rcpt_domain(r["rcpt"]) for r in s3150} == {"outlook.com", "hotmail.com"}
    # Gmail and Yahoo defer the listed IP for its reputation instead.
    deferred = Counter(rcpt_domain(r["rcpt"]) for r in rows
                       if r["type"] == "t" and r["dlvSourceIp"] == LISTED_IP
                       and r["timeLogged"] >= t_listed
                       and ("4.7.28" in r["dsnDiag"] or "[TSS04]" in r["dsnDiag"]))
    assert deferred["gmail.com"] > 100 and deferred["yahoo.com"] > 100
    # The other source IPs keep delivering; the listed one hardly does after the listing.
    per_ip: dict[str, Counter[str]] = {}
    for r in rows:
        if r["type"] in ("d", "b") and r["timeLogged"] >= t_listed:
            per_ip.setdefault(r["dlvSourceIp"], Counter())[r["type"]] += 1
    for ip, c in per_ip.items():
        rate = c["b"] / (c["b"] + c["d"])
        assert (rate > 0.2) if ip == LISTED_IP else (rate < 0.05), (ip, rate)
    # Before the listing its rejections were ordinary ones.
    assert not any(r["timeLogged"] < t_listed and r["dlvSourceIp"] == LISTED_IP
                   and "spamhaus" in r["dsnDiag"] for r in rows)
    # The API's last error of a listed queue says so too.
    assert "blocked using zen.spamhaus.org" in last_error and LISTED_IP in last_error
