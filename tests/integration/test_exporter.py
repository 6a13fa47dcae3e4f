"""The Prometheus endpoint against the simulator: scrape /metrics, parse it with
prometheus_client's own parser, compare with the simulator's truth; API down -> pmta_up 0
and a growing data age; the cardinality cap; `pmta-snmp exporter` as a process.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families  # a dependency: no skip

from pmta_snmp.config import Config, PmtaSection, PollSection
from pmta_snmp.exporter import OTHER, Exporter, run_exporter
from pmta_snmp.netsnmp import free_tcp_port
from pmta_snmp.sim import Simulator
from tests.integration.kit_support import wait_until

API_KEY = "e" * 40
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> tuple[Samples, dict[str, str]]:
    """{(sample name, sorted labels): value} and {family: type} of one scrape."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode("utf-8")
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def config(sim: Simulator, tmp_path: Path, *, max_series: int = 500) -> Config:
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY + "\n", encoding="utf-8")
    return Config(
        pmta=PmtaSection(url=sim.url, api_key_file=str(key_file), timeout=2.0),
        poll=PollSection(interval=1.0, jitter=0.0),
        exporter_max_series=max_series,
    )


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator(speed=0, api_key=API_KEY).start()
    try:
        yield s
    finally:
        s.stop()


def scrape_when_up(url: str, timeout: float = 10) -> tuple[Samples, dict[str, str]]:
    def ready() -> tuple[Samples, dict[str, str]] | None:
        samples, types = scrape(url)
        up = samples.get(("pmta_up", ()))
        return (samples, types) if up == 1 else None

    got = wait_until(ready, timeout)
    assert got is not None, "pmta_up never became 1"
    result: tuple[Samples, dict[str, str]] = got
    return result


def test_metrics_match_the_simulator(sim: Simulator, tmp_path: Path) -> None:
    truth = sim.snapshot()
    st = truth.status
    with Exporter(config(sim, tmp_path), listen="127.0.0.1:0") as exporter:
        assert exporter.url.startswith("http://127.0.0.1:")
        samples, types = scrape_when_up(exporter.url)

    assert value(samples, "pmta_queued_recipients", type="smtp") == st.queued_recipients
    assert value(samples, "pmta_queued_bytes", type="smtp") == pytest.approx(
        st.queue_type("smtp").kb * 1024
    )
    t = st.traffic.total
    assert types["pmta_traffic_messages"] == "counter"
    assert value(samples, "pmta_traffic_messages_total", direction="out") == t.outbound.msg
    assert value(samples, "pmta_traffic_recipients_total", direction="in") == t.inbound.rcp
    assert value(samples, "pmta_traffic_bytes_total", direction="out") == pytest.approx(
        t.outbound.kb * 1024
    )
    assert value(samples, "pmta_bounces_processed_total") == t.bounce_processed
    assert value(samples, "pmta_outbound_messages_per_second") == pytest.approx(
        st.traffic.messages_per_second
    )
    assert value(samples, "pmta_smtp_connections", direction="out") == st.conn.smtp_out.cur
    assert value(samples, "pmta_smtp_connections", direction="in") == st.conn.smtp_in.cur
    for d in truth.domains:
        assert value(samples, "pmta_domain_queued_recipients", domain=d.name) == d.rcp
    for v in truth.vmtas:
        assert value(samples, "pmta_vmta_queued_recipients", vmta=v.name) == v.rcp
        assert value(samples, "pmta_vmta_connections", vmta=v.name) == v.conn
    for q in truth.queues:
        labels = {"queue": q.name, "domain": q.domain, "vmta": q.vmta}
        assert value(samples, "pmta_queue_recipients", **labels) == q.rcp
        assert value(samples, "pmta_queue_paused", **labels) == (1 if q.paused else 0)
    assert value(samples, "pmta_queues") == len(truth.queues)
    assert truth.license is not None and st.runtime.time_now is not None
    assert value(samples, "pmta_license_days_left") == truth.license.days_left(
        st.runtime.time_now.date()
    )
    assert value(samples, "pmta_info", product=st.runtime.product,
                 version=st.runtime.version or "", host=st.runtime.host_name or "") == 1
    assert 0 <= value(samples, "pmta_data_age_seconds") < 5
    assert value(samples, "pmta_poll_errors_total") == 0
    # Prometheus naming: counters end in _total, no family ends in a unit it does not have.
    for (name, _labels), _ in samples.items():
        assert re.fullmatch(r"pmta_[a-z0-9_]+", name), name
        family = next(f for f in types if name == f or name.startswith(f + "_"))
        assert name.endswith("_total") == (types[family] == "counter"), name
        assert not name.endswith(("_kb", "_kbytes", "_ms")), name


def test_api_down_gives_pmta_up_0_and_a_growing_data_age(sim: Simulator, tmp_path: Path) -> None:
    with Exporter(config(sim, tmp_path), listen="127.0.0.1:0") as exporter:
        before, _ = scrape_when_up(exporter.url)
        rcpt = value(before, "pmta_queued_recipients", type="smtp")
        sim.set_fault("down")

        def down() -> Samples | None:
            samples, _ = scrape(exporter.url)
            return samples if samples[("pmta_up", ())] == 0 else None

        first = wait_until(down, timeout=10)
        assert first is not None, "pmta_up stayed 1 with the API down"
        time.sleep(1.2)
        second, _ = scrape(exporter.url)
    assert value(second, "pmta_up") == 0
    assert value(second, "pmta_data_age_seconds") > value(first, "pmta_data_age_seconds") + 1
    assert value(second, "pmta_poll_errors_total") >= 1
    assert value(second, "pmta_poll_consecutive_errors") >= 1
    # the last good data is still served
    assert value(second, "pmta_queued_recipients", type="smtp") == rcpt


def test_series_cap_folds_the_smallest_into_other(sim: Simulator, tmp_path: Path) -> None:
    truth = sim.snapshot()
    cap = 4
    assert len(truth.domains) > cap and len(truth.queues) > cap
    with Exporter(config(sim, tmp_path, max_series=cap), listen="127.0.0.1:0") as exporter:
        samples, _ = scrape_when_up(exporter.url)
    domains = {dict(labels)["domain"]: v for (name, labels), v in samples.items()
               if name == "pmta_domain_queued_recipients"}
    assert len(domains) == cap
    ranked = sorted(truth.domains, key=lambda d: (-d.rcp, d.name))
    assert set(domains) == {d.name for d in ranked[: cap - 1]} | {OTHER}
    assert domains[OTHER] == sum(d.rcp for d in ranked[cap - 1:])
    assert sum(domains.values()) == sum(d.rcp for d in truth.domains)
    assert value(samples, "pmta_exporter_other_items", kind="domain") == len(ranked) - cap + 1
    queues = [v for (name, _), v in samples.items() if name == "pmta_queue_recipients"]
    assert len(queues) == cap and sum(queues) == sum(q.rcp for q in truth.queues)


def test_run_exporter_binds_only_the_given_address(sim: Simulator, tmp_path: Path) -> None:
    port = free_tcp_port()
    stop = asyncio.Event()
    urls: list[str] = []
    loop = asyncio.new_event_loop()

    def main() -> None:
        loop.run_until_complete(
            run_exporter(config(sim, tmp_path), stop=stop, listen=f"127.0.0.1:{port}",
                         ready=urls.append)
        )

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: urls, timeout=10)
        assert urls == [f"http://127.0.0.1:{port}/metrics"]
        scrape_when_up(urls[0])
        # 127.0.0.2 is loopback too, but not the address we bound
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=2)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
    assert not thread.is_alive()


def test_the_exporter_command_serves_and_stops_on_sigterm(sim: Simulator, tmp_path: Path) -> None:
    port = free_tcp_port()
    env = dict(os.environ, PMTA_API_KEY=API_KEY)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmta_snmp.integrations.cli", "exporter", "--url", sim.url,
         "--interval", "1", "--listen", f"127.0.0.1:{port}", "--max-series", "3"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def answers() -> bool:
            try:
                return bool(scrape(url)[0].get(("pmta_up", ())) == 1)
            except OSError:
                return False

        assert wait_until(answers, timeout=15), proc.stderr.read() if proc.poll() else ""
        samples, _ = scrape(url)
        assert len([1 for (n, _), _v in samples.items() if n == "pmta_domain_queued_bytes"]) == 3
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    assert f"serving http://127.0.0.1:{port}/metrics" in err


def unlabelled(collector: Any, name: str) -> float | None:
    """The value of a sample without labels of a collector's families (None: not there)."""
    for family in collector.collect():
        for s in family.samples:
            if s.name == name and not s.labels:
                return float(s.value)
    return None


def test_pmta_up_and_the_data_age_are_true_at_the_scrape_when_polling_stalls() -> None:
    """The families are built after each poll; what a scrape adds is true at the scrape: the
    age of the data, and `pmta_up` 0 once no poll result came for longer than `stale_after`
    (a poll thread that hangs delivers none, so nothing built after a poll could say so)."""
    from datetime import UTC, datetime, timedelta

    from pmta_snmp.exporter import PmtaCollector
    from pmta_snmp.model import Snapshot, Status
    from pmta_snmp.poller import PollResult, stale_after

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    clock = [t0]  # the wall clock; the monotonic one moves with it

    def elapsed(wall: datetime) -> float:
        return (wall - t0).total_seconds()

    collector = PmtaCollector(wall=lambda: clock[0], clock=lambda: elapsed(clock[0]),
                              stale_after=stale_after(1.0, 2.0))
    assert collector.stale_after == 8.0  # two intervals and three API timeouts

    def sample(name: str) -> float | None:
        return unlabelled(collector, name)

    collector.update(PollResult(Snapshot(Status()), True, t0, t0, 1, 0, 0, None))
    clock[0] = t0 + timedelta(seconds=7.5)
    assert sample("pmta_up") == 1 and sample("pmta_data_age_seconds") == 7.5
    clock[0] = t0 + timedelta(seconds=30)
    assert sample("pmta_up") == 0 and sample("pmta_data_age_seconds") == 30
    assert sample("pmta_poll_consecutive_errors") == 0  # what the last result said
    later = t0 + timedelta(seconds=31)
    clock[0] = later
    collector.update(PollResult(Snapshot(Status()), True, later, later, 2, 0, 0, None))
    assert sample("pmta_up") == 1 and sample("pmta_data_age_seconds") == 0


def test_a_hung_poll_gives_pmta_up_0_and_a_growing_age(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exporter's poll stuck in the parser (as a pathological answer could hold it):
    `/metrics` says the data is stale and how old, instead of `pmta_up 1` for ever."""
    from pmta_snmp.api import parse

    real = parse.parse_status
    hang, release = threading.Event(), threading.Event()

    def parse_status(data: object, **kw: object) -> object:
        if hang.is_set():
            release.wait(60)
        return real(data, **kw)

    monkeypatch.setattr(parse, "parse_status", parse_status)
    cfg = replace(config(sim, tmp_path), pmta=replace(config(sim, tmp_path).pmta, timeout=1.0))
    try:
        with Exporter(cfg, listen="127.0.0.1:0") as exporter:
            scrape_when_up(exporter.url)
            hang.set()

            def stale() -> Samples | None:
                samples, _ = scrape(exporter.url)
                return samples if samples[("pmta_up", ())] == 0 else None

            got = wait_until(stale, timeout=30)
            assert got is not None, "pmta_up stayed 1 while no poll ended"
            assert value(got, "pmta_data_age_seconds") >= 4  # more than the 5 s stall time
            hang.clear()
            release.set()
            scrape_when_up(exporter.url, timeout=30)
    finally:
        release.set()


def test_the_exporter_stops_at_once_when_stopped_during_its_first_poll(
    sim: Simulator, tmp_path: Path
) -> None:
    """SIGTERM right after start: the stop must not be lost while the first poll is under way
    (the poller used to clear the wake-up after the poll and then sleep a whole interval)."""
    sim.set_fault("slow", delay=1.0)
    cfg = replace(config(sim, tmp_path), poll=PollSection(interval=3600, jitter=0.0))
    exporter = Exporter(cfg, listen="127.0.0.1:0")
    exporter.start()
    poller = exporter._poller
    assert poller is not None and poller.alive
    exporter.stop()  # joins the poll thread for at most 10 s: a hang bound, not a speed claim
    assert not poller.alive, "the poll thread sleeps on after stop()"


def test_a_step_of_the_wall_clock_neither_fakes_nor_hides_a_stall() -> None:
    """NTP steps the clock, a VM resumes after a pause: the age of the data and the silence
    since the last poll grow on the monotonic clock. Computed from the wall clock, a step
    back an hour made stale data read fresh (and `pmta_up` 1) and a step forward made fresh
    data an hour old (and `pmta_up` 0)."""
    from datetime import UTC, datetime, timedelta

    from pmta_snmp.exporter import PmtaCollector
    from pmta_snmp.model import Snapshot, Status
    from pmta_snmp.poller import PollResult

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    mono, wall = [0.0], [t0]
    collector = PmtaCollector(clock=lambda: mono[0], wall=lambda: wall[0], stale_after=8.0)

    def sample(name: str) -> float | None:
        return unlabelled(collector, name)

    collector.update(PollResult(Snapshot(Status()), True, t0, t0, 1, 0, 0, None))
    mono[0], wall[0] = 30.0, t0 - timedelta(hours=1) + timedelta(seconds=30)  # stepped back
    assert sample("pmta_up") == 0 and sample("pmta_data_age_seconds") == 30
    later = t0 + timedelta(hours=1)  # stepped forward: a good poll right now
    mono[0], wall[0] = 31.0, later
    collector.update(PollResult(Snapshot(Status()), True, later, later, 2, 0, 0, None))
    mono[0], wall[0] = 33.0, later + timedelta(hours=2, seconds=2)  # and forward again
    assert sample("pmta_up") == 1 and sample("pmta_data_age_seconds") == 2
