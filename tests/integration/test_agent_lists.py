"""Complete tables on a default PowerMTA (issue 18): 2,000 domains, pages of 10 rows. With an
API key the AgentX subagent fills its tables from the list commands and a real snmpd walks
every row; without one the tables hold the pages' 10 rows and say how many PowerMTA has."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pmta_snmp.agent import run_agentx
from pmta_snmp.config import AgentXSection, Config, PmtaSection, PollSection
from pmta_snmp.mib.layout import encode_string_index, layout
from pmta_snmp.netsnmp import LoopThread, SnmpdMaster
from pmta_snmp.sim import Simulator

pytestmark = pytest.mark.snmpd

LAY = layout()
KEY = "lists_test_key_" + "q" * 30
DOMAINS = 2000


def dotted(oid: tuple[int, ...]) -> str:
    return ".".join(map(str, oid))


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(scenario="scale", domains=DOMAINS, vmtas=10, seed=3, speed=0,
                   api_key=KEY) as s:
        yield s


def run_agent(
    sim: Simulator, master: SnmpdMaster, loop_thread: LoopThread, key_file: Path | None
) -> Callable[[], None]:
    """Start the subagent (process isolation, as deployed); returns its stop function once
    the first poll is served."""
    cfg = Config(
        pmta=PmtaSection(url=sim.url, timeout=20,
                         api_key_file=str(key_file) if key_file else None),
        poll=PollSection(interval=3600, jitter=0),
        agentx=AgentXSection(socket=master.agentx_address, ping_interval=5),
    )
    stop = asyncio.Event()
    fut = asyncio.run_coroutine_threadsafe(run_agentx(cfg, stop=stop), loop_thread.loop)
    instance = dotted(LAY.instance("pmtaDomainRowsListed"))
    deadline = time.monotonic() + 120  # an upper bound for a hang, not a speed claim
    while time.monotonic() < deadline:
        if master.get(instance, timeout=2)[0].type == "Gauge32":
            break
        time.sleep(0.2)
    else:
        loop_thread.call_soon(stop.set)
        fut.result(30)
        raise AssertionError("the subagent never served a poll")

    def stopper() -> None:
        loop_thread.call_soon(stop.set)
        fut.result(30)

    return stopper


def scalar(master: SnmpdMaster, name: str) -> str:
    vb = master.get(dotted(LAY.instance(name)), timeout=5)[0]
    return vb.value if vb.type == "Gauge32" else vb.type


def test_with_a_key_snmpd_walks_all_2000_domains_and_every_queue(
    sim: Simulator, snmpd_factory: Callable[..., SnmpdMaster], loop_thread: LoopThread,
    tmp_path: Path,
) -> None:
    (tmp_path / "key").write_text(KEY)
    master = snmpd_factory(agentx_timeout=5)
    stop = run_agent(sim, master, loop_thread, tmp_path / "key")
    try:
        truth = sim.snapshot()
        domains = master.bulkwalk(dotted(LAY.oid("pmtaDomainRcpt")))
        queues = master.bulkwalk(dotted(LAY.oid("pmtaQueueRcpt")))
        counts = {n: scalar(master, n) for n in (
            "pmtaDomainRowsListed", "pmtaDomainRowsKnown", "pmtaQueueRowsListed",
            "pmtaQueueRowsKnown", "pmtaVmtaRowsListed", "pmtaVmtaRowsKnown")}
    finally:
        stop()
    assert len(truth.domains) == DOMAINS
    column = LAY.oid("pmtaDomainRcpt")
    want = {}
    for d in truth.domains:
        idx = encode_string_index(d.name, 80)
        assert idx is not None
        want[dotted(column + idx)] = str(d.rcp)
    assert {vb.oid: vb.value for vb in domains} == want
    assert len(queues) == len(truth.queues)
    assert counts == {
        "pmtaDomainRowsListed": str(DOMAINS), "pmtaDomainRowsKnown": str(DOMAINS),
        "pmtaQueueRowsListed": str(len(truth.queues)),
        "pmtaQueueRowsKnown": str(len(truth.queues)),
        "pmtaVmtaRowsListed": "10", "pmtaVmtaRowsKnown": "10",
    }


def test_without_a_key_the_tables_hold_the_top_10_and_say_how_many_exist(
    sim: Simulator, snmpd_factory: Callable[..., SnmpdMaster], loop_thread: LoopThread,
) -> None:
    master = snmpd_factory(agentx_timeout=5)
    stop = run_agent(sim, master, loop_thread, None)
    try:
        dom = sim.snapshot().status.queue_type("smtp").dom
        domains = master.bulkwalk(dotted(LAY.oid("pmtaDomainRcpt")))
        counts = {n: scalar(master, n) for n in (
            "pmtaDomainRowsListed", "pmtaDomainRowsKnown", "pmtaQueueRowsListed",
            "pmtaQueueRowsKnown", "pmtaVmtaRowsKnown")}
    finally:
        stop()
    assert len(domains) == 10
    assert counts == {
        "pmtaDomainRowsListed": "10", "pmtaDomainRowsKnown": str(dom),
        "pmtaQueueRowsListed": "10", "pmtaQueueRowsKnown": str(dom),  # at least one per domain
        "pmtaVmtaRowsKnown": "noSuchInstance",  # the /vmtas page gives no count
    }
