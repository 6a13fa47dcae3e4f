"""The exporter's outcome families and `poll --json` against counts taken directly from the
accounting files the simulator wrote (csv in the test, the simulator's own domain -> provider
table): files the exporter has never seen (the issue's "Done when"), rotation, a restart."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pmta_snmp.config import AcctSection, Config, PmtaSection, PollSection
from pmta_snmp.exporter import Exporter
from pmta_snmp.metrics import by_name
from pmta_snmp.sim import Simulator
from tests.integration.kit_support import wait_until

LISTED_IP = "198.51.100.20"  # the blocklisted scenario's listed source IP (vmta-a)


def file_counts(directory: Path, providers: dict[str, str]) -> dict[str, Counter[object]]:
    """Per provider: delivered; complaints per (provider, sending domain); rejections naming
    Spamhaus or Outlook.com's list (S3150) per source IP; records per type."""
    out: dict[str, Counter[object]] = {k: Counter() for k in (
        "delivered", "complaints", "listed", "records")}
    for path in sorted(directory.glob("acct*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                kind = row["type"]
                out["records"][kind] += 1
                provider = providers.get(row["rcpt"].rpartition("@")[2], "other")
                if kind == "d":
                    out["delivered"][provider] += 1
                elif kind == "f" and row["feedbackType"] == "abuse":
                    out["complaints"][(provider, row["orig"].rpartition("@")[2])] += 1
                elif kind in ("b", "t") and row["dlvSourceIp"] == LISTED_IP:
                    diag = row["dsnDiag"].lower()
                    if "spamhaus" in diag:
                        out["listed"][(LISTED_IP, "spamhaus")] += 1
                    elif "s3150" in diag:
                        out["listed"][(LISTED_IP, "microsoft")] += 1
    return out


def scraped(url: str) -> dict[str, Counter[object]]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, Counter[object]] = {k: Counter() for k in (
        "delivered", "complaints", "listed", "records")}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "pmta_outcomes_total" and s.labels["result"] == "delivered":
                if s.value:
                    out["delivered"][s.labels["provider"]] = int(s.value)
            elif s.name == "pmta_complaints_total":
                out["complaints"][(s.labels["provider"], s.labels["sending_domain"])] = int(
                    s.value)
            elif (s.name == "pmta_blocklist_rejections_total"
                  and s.labels["source_ip"] == LISTED_IP
                  and s.labels["blocklist"] in ("spamhaus", "microsoft")):
                out["listed"][(LISTED_IP, s.labels["blocklist"])] = int(s.value)
            elif s.name == "pmta_acct_records_total":
                out["records"][s.labels["type"]] = int(s.value)
    return out


def catalogued(url: str) -> None:
    """Every outcome family served is in the catalogue with its type, HELP and labels; the
    delay histogram and the lag are there."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        families = list(text_string_to_metric_families(resp.read().decode()))
    catalogue = by_name()
    names = set()
    for family in families:
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert name in catalogue, name
        assert (catalogue[name].kind, catalogue[name].help) == (family.type,
                                                                family.documentation), name
        labels = {k for smp in family.samples for k in smp.labels if k != "le"}
        assert labels <= set(catalogue[name].labels), (name, labels)
        names.add(name)
    assert {"pmta_delivery_delay_seconds", "pmta_acct_lag_seconds",
            "pmta_outcome_reasons_total", "pmta_source_ip_outcomes_total",
            "pmta_sending_domain_outcomes_total"} <= names


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    simulator = Simulator("blocklisted", speed=0, domains=60, acct_dir=tmp_path / "acct",
                          acct_records=("d", "b", "t", "tq", "f")).start()
    yield simulator
    simulator.stop()


def providers_of(sim: Simulator) -> dict[str, str]:
    """The simulator's own table: domain -> provider (not the engine's provider map)."""
    return {q.domain.name: q.domain.provider for q in sim.state.queues}


def exporter(sim: Simulator, tmp_path: Path, save_interval: float = 1.0) -> Exporter:
    cfg = Config(pmta=PmtaSection(url=sim.url, timeout=5.0),
                 poll=PollSection(interval=5.0, jitter=0.0),
                 acct=AcctSection(files=str(tmp_path / "acct" / "acct*.csv"),
                                  state_dir=str(tmp_path / "state"), interval=0.2,
                                  save_interval=save_interval))
    return Exporter(cfg, listen="127.0.0.1:0")


def same_counts(url: str, want: dict[str, Counter[object]]) -> bool:
    got = scraped(url)
    return got == want


@pytest.mark.timeout(300)  # hang guard
def test_exporter_counts_equal_the_files_across_rotation_and_restart(
        sim: Simulator, tmp_path: Path) -> None:
    sim.advance(900)  # files the exporter has never seen; the IP is listed after 5 minutes
    sim.rotate_acct()
    sim.advance(300)
    providers = providers_of(sim)
    with exporter(sim, tmp_path) as exp:
        want = file_counts(tmp_path / "acct", providers)
        assert want["listed"][(LISTED_IP, "spamhaus")] > 0
        assert want["listed"][(LISTED_IP, "microsoft")] > 0
        assert sum(want["complaints"].values()) > 0
        assert wait_until(lambda: same_counts(exp.url, want), 60), (scraped(exp.url), want)
        catalogued(exp.url)
        sim.advance(200)
        sim.rotate_acct()
        sim.advance(200)
        want = file_counts(tmp_path / "acct", providers)
        assert wait_until(lambda: same_counts(exp.url, want), 60), (scraped(exp.url), want)
    # stopped (state saved); the files grow and rotate meanwhile; a new process goes on
    sim.advance(150)
    sim.rotate_acct()
    sim.advance(150)
    with exporter(sim, tmp_path) as exp:
        want = file_counts(tmp_path / "acct", providers)
        assert wait_until(lambda: same_counts(exp.url, want), 60), (scraped(exp.url), want)


@pytest.mark.timeout(300)
def test_poll_json_shows_the_last_hour_and_day(sim: Simulator, tmp_path: Path) -> None:
    sim.advance(600)
    want = file_counts(tmp_path / "acct", providers_of(sim))
    res = subprocess.run(
        [sys.executable, "-m", "pmta_snmp", "poll", "--url", sim.url, "--json",
         "--acct-file", str(tmp_path / "acct" / "acct.csv")],
        capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["status"]  # the API's snapshot is still there
    outcomes = doc["outcomes"]
    day = {p["provider"]: p["last_day"]["delivered"] for p in outcomes["providers"]
           if p["last_day"]["delivered"]}
    hour = {p["provider"]: p["last_hour"]["delivered"] for p in outcomes["providers"]
            if p["last_hour"]["delivered"]}
    assert day == hour == dict(want["delivered"])
    assert outcomes["records"] == dict(want["records"])
    assert outcomes["blocklist_rejections_total"] >= sum(want["listed"].values()) > 0


@pytest.mark.timeout(300)
def test_exporter_serves_the_counters_as_last_saved(sim: Simulator, tmp_path: Path) -> None:
    """Records read after the last save are not served until saved: a crash would lose
    them from the state, and a restarted exporter showing fewer would look like a counter
    reset to Prometheus (a spike in every rate)."""
    sim.advance(300)
    providers = providers_of(sim)
    with exporter(sim, tmp_path, save_interval=3600) as exp:  # saves after its first pass
        first = file_counts(tmp_path / "acct", providers)
        assert wait_until(lambda: same_counts(exp.url, first), 60), (scraped(exp.url), first)
        sim.advance(120)
        more = file_counts(tmp_path / "acct", providers)
        assert more["records"] != first["records"]
        engine = exp.outcomes
        assert engine is not None
        # read, not saved: the engine has them, /metrics does not
        assert wait_until(lambda: dict(engine.view.records) == dict(more["records"]), 60)
        assert scraped(exp.url) == first
        engine.save()
        assert scraped(exp.url) == more
