"""pmta-sim accounting CSV and main log: layouts, counts against the state, rotation."""

from __future__ import annotations

import csv
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pmta_snmp.sim import Simulator
from pmta_snmp.sim.files import ACCT_LAYOUTS
from tests.unit._sim_helpers import API_KEY, command, get_json, running

ISO = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d{4}")
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S.*")
HARD = {"bad-mailbox", "bad-domain", "inactive-mailbox", "invalid-sender", "routing-errors"}
KNOWN_CATS = HARD | {
    "quota-issues",
    "bad-connection",
    "no-answer-from-host",
    "message-expired",
    "bad-configuration",
    "protocol-errors",
    "other",
    "policy-related",
    "spam-related",
    "content-related",
    "virus-related",
    "relaying-issues",
    "success",
    "",
}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _out_rcp(sim: Simulator) -> int:
    return int(get_json(sim, "/status")["status"]["traffic"]["total"]["out"]["rcp"])


@pytest.mark.parametrize("layout", ["4.0", "5.0", "5.5"])
def test_accounting_layout_parses_and_counts_match_deliveries(tmp_path: Path, layout: str) -> None:
    with running(acct_dir=tmp_path, acct_layout=layout) as sim:
        out_before = _out_rcp(sim)
        sim.advance(1800)
        out_after = _out_rcp(sim)
        simulated = sim.counts()["simulated"]
    raw = (tmp_path / "acct.csv").read_bytes()
    header = raw.split(b"\r\n", 1)[0].decode().split(",")
    assert header == ACCT_LAYOUTS[layout] and header[0] == "type"
    rows = _rows(tmp_path / "acct.csv")
    counts = Counter(r["type"] for r in rows)
    assert counts == Counter({k: simulated[k] for k in ("d", "b", "t", "tq") if simulated[k]})
    assert counts["d"] == out_after - out_before > 1000
    assert counts["b"] > 0 and counts["t"] > 0
    # dlvEsmtpAvailable is always quoted (its commas are not what forces it: check a raw line).
    assert re.search(rb',"PIPELINING,SIZE,STARTTLS,8BITMIME",', raw)
    assert re.search(rb',"PIPELINING,SIZE,8BITMIME",', raw)
    for r in rows:
        assert r["bounceCat"] in KNOWN_CATS
        if layout == "4.0":
            assert r["timeLogged"].isdigit()
        else:
            assert ISO.fullmatch(r["timeLogged"])
        if r["type"] == "d":
            assert r["dsnStatus"] == "2.0.0 (success)" and r["bounceCat"] == "success"
            assert int(r["dlvSize"]) > 0
            if layout != "4.0":
                assert r["queue"].split("/")[0] == r["rcpt"].split("@")[1]
        if r["type"] == "b":
            assert r["dsnAction"] == "failed" and r["dlvSize"] == ""
    if layout == "5.5":
        d = next(r for r in rows if r["type"] == "d")
        logged = datetime.strptime(d["timeLogged"], "%Y-%m-%d %H:%M:%S%z")
        queued = datetime.strptime(d["timeQueued"], "%Y-%m-%d %H:%M:%S%z")
        assert int(d["totalSecondsQueued"]) == (logged - queued).total_seconds()
    times = [r["timeLogged"] for r in rows]
    assert times == sorted(times)


def test_r_records_match_inbound_traffic(tmp_path: Path) -> None:
    with running(acct_dir=tmp_path, acct_records=("d", "r")) as sim:
        before = get_json(sim, "/status")["status"]["traffic"]["total"]["in"]["rcp"]
        sim.advance(600)
        after = get_json(sim, "/status")["status"]["traffic"]["total"]["in"]["rcp"]
    rows = _rows(tmp_path / "acct.csv")
    assert "rcvSmtpUser" in rows[0]
    assert Counter(r["type"] for r in rows)["r"] == after - before > 0


def test_same_seed_writes_the_same_accounting(tmp_path: Path) -> None:
    for name in ("a", "b"):
        with running(seed=5, acct_dir=tmp_path / name, log_path=tmp_path / name / "log") as sim:
            sim.advance(900)
    for f in ("acct.csv", "log"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_bounce_storm_is_hard_bounces_from_one_source_ip(tmp_path: Path) -> None:
    with running(scenario="bounce-storm", acct_dir=tmp_path) as sim:
        sim.advance(3600)
    per_ip: dict[str, Counter[str]] = {}
    for r in _rows(tmp_path / "acct.csv"):
        if r["type"] in ("d", "b"):
            per_ip.setdefault(r["dlvSourceIp"], Counter())[r["type"]] += 1
            if r["type"] == "b" and r["dlvSourceIp"] == "203.0.113.66":
                assert r["bounceCat"] in HARD and r["orig"].endswith("@promo.example.org")
    assert "203.0.113.66" in per_ip and len(per_ip) > 1, per_ip  # else the loop checks nothing
    for ip, c in per_ip.items():
        rate = c["b"] / (c["b"] + c["d"])
        assert (rate > 0.2) if ip == "203.0.113.66" else (rate < 0.05), (ip, rate)


def test_tls_failures_show_in_accounting_and_log(tmp_path: Path) -> None:
    with running(scenario="tls-failures", acct_dir=tmp_path, log_path=tmp_path / "log") as sim:
        sim.advance(1800)
    rows = [r for r in _rows(tmp_path / "acct.csv") if r["type"] == "d"]
    clear = [r for r in rows if r["rcpt"].endswith("@example.net")]
    assert clear and all(
        "STARTTLS" in r["dlvEsmtpAvailable"] and r["dlvTlsProtocol"] == "" for r in clear
    )
    old = {r["dlvTlsProtocol"] for r in rows if r["rcpt"].endswith("@example.org")}
    assert old and old <= {"TLSv1", "TLSv1.1"}
    modern = {r["dlvTlsProtocol"] for r in rows if r["rcpt"].endswith("@gmail.com")}
    assert modern == {"TLSv1.3"}
    log = (tmp_path / "log").read_text(encoding="utf-8")
    assert "TLS handshake failed with mx2.example.net (192.0.2.61)" in log
    assert "tls:TLSv1 connected with 128-bit ECDHE-RSA-AES128-SHA" in log


def test_accounting_rotates_by_size_and_on_demand(tmp_path: Path) -> None:
    with running(acct_dir=tmp_path, acct_max_size=100_000, api_key=API_KEY) as sim:
        sim.advance(1200)
        assert command(sim, "rotate acct").status_code == 200
        sim.advance(60)
        simulated = sim.counts()["simulated"]
    rotated = sorted(p.name for p in tmp_path.glob("acct-*.csv"))
    assert len(rotated) >= 3
    assert rotated == [f"acct-2025-01-14-{i:04d}.csv" for i in range(len(rotated))]
    total: Counter[str] = Counter()
    for p in [*sorted(tmp_path.glob("acct-*.csv")), tmp_path / "acct.csv"]:
        assert p.read_text(encoding="utf-8").startswith("type,timeLogged,")
        total.update(r["type"] for r in _rows(p))
    assert total == Counter({k: v for k, v in simulated.items() if v and k != "r"})


def test_main_log_lines_match_queue_events_and_rotate(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with running(log_path=log, api_key=API_KEY) as sim:
        sim.advance(1800)
        first = log.read_text(encoding="utf-8").splitlines()
        assert first and all(LOG_LINE.fullmatch(line) for line in first)
        assert [line[:19] for line in first] == sorted(line[:19] for line in first)
        recent = [
            (e["time"], e["text"])
            for q in get_json(sim, "/queues")["queue"]
            for e in q["event"]
            if e["time"] >= "2025-01-14 09:00:00"
        ]
        assert recent and all(f"{t} {text}" in first for t, text in recent)
        assert command(sim, "rotate log").status_code == 200
        assert log.read_text() == ""
        sim.advance(600)
        sim.rotate_log()
        sim.advance(600)
    assert (tmp_path / "log.2").read_text(encoding="utf-8").splitlines() == first
    assert (tmp_path / "log.1").read_text(encoding="utf-8") and log.read_text(encoding="utf-8")


def test_log_rotates_at_midnight(tmp_path: Path) -> None:
    start = datetime(2025, 1, 14, 23, 40, tzinfo=timezone(timedelta(hours=-5)))
    with running(log_path=tmp_path / "log", start_time=start) as sim:
        sim.advance(40 * 60)
    before = (tmp_path / "log.1").read_text(encoding="utf-8").splitlines()
    after = (tmp_path / "log").read_text(encoding="utf-8").splitlines()
    assert before and after
    assert all(line.startswith("2025-01-14 23:") for line in before)
    assert all(line.startswith("2025-01-15 00:") for line in after)


def test_stuck_and_license_scenarios_write_their_log_lines(tmp_path: Path) -> None:
    with running(scenario="stuck", log_path=tmp_path / "stuck.log") as sim:
        sim.advance(1800)
    text = (tmp_path / "stuck.log").read_text(encoding="utf-8")
    assert "All SMTP sources for queue example.org/vmta-c are now disabled." in text
    assert "ECONNREFUSED connecting to example.org (192.0.2.70)" in text
    assert "unable to route queue example.org/vmta-c" in text
    with running(scenario="license-expiring", log_path=tmp_path / "lic.log") as sim:
        sim.advance(60)
    assert "License expires in 5 day(s), on 2025-01-19" in (tmp_path / "lic.log").read_text()
    with running(scenario="license-expired", log_path=tmp_path / "exp.log") as sim:
        sim.advance(60)
    assert "License expired on 2025-01-11" in (tmp_path / "exp.log").read_text()
