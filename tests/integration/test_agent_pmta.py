"""The whole AgentX path: simulator -> poller -> OID tree -> our subagent -> real snmpd -> snmpwalk.

Values are compared with the simulator's own truth (`Simulator.snapshot()`), value for value.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from pmta_snmp.agent import run_agentx
from pmta_snmp.config import AgentXSection, Config, PmtaSection, PollSection, Thresholds
from pmta_snmp.mib.layout import encode_string_index, layout
from pmta_snmp.netsnmp import LoopThread, SnmpdMaster, SnmpVarBind, TrapReceiver
from pmta_snmp.sim import Simulator

pytestmark = pytest.mark.snmpd

LAY = layout()
BASE = ".".join(map(str, LAY.base))


def dotted(oid: tuple[int, ...]) -> str:
    return ".".join(map(str, oid))


def inst(name: str) -> str:
    return dotted(LAY.instance(name))


@dataclass
class Running:
    sim: Simulator
    master: SnmpdMaster
    stop: asyncio.Event


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def get_value(master: SnmpdMaster, name: str) -> SnmpVarBind:
    return master.get(inst(name), timeout=2)[0]


@pytest.fixture(params=["process", "thread"])
def agent_run(
    request: pytest.FixtureRequest,
    snmpd_factory: Callable[..., SnmpdMaster],
    trap_receiver: TrapReceiver,
    loop_thread: LoopThread,
) -> Iterator[Running]:
    # http-default-max-items raised (every row on the pages, no API key): the walk is compared
    # with the truth row for row. The default 10 rows: test_agent_lists.py.
    sim = Simulator(scenario="healthy", seed=7, speed=0, domains=40, vmtas=3,
                    max_items=None).start()
    master = snmpd_factory(trap_port=trap_receiver.port, agentx_timeout=2)
    cfg = Config(
        pmta=PmtaSection(url=sim.url, timeout=3),
        poll=PollSection(interval=1, jitter=0, isolation=request.param),
        agentx=AgentXSection(socket=master.agentx_address, ping_interval=5),
        thresholds=Thresholds(
            queue_rcpt_raise=10**9, queue_rcpt_clear=10**9 - 1, api_failures_raise=1
        ),
    )
    stop = asyncio.Event()
    fut = asyncio.run_coroutine_threadsafe(run_agentx(cfg, stop=stop), loop_thread.loop)
    try:
        wait_until(
            lambda: get_value(master, "pmtaAgentApiReachable").value == "1",
            15,
            "the subagent to register and poll",
        )
        yield Running(sim, master, stop)
    finally:
        loop_thread.call_soon(stop.set)
        fut.result(15)
        sim.stop()


def test_walk_matches_simulator_value_for_value(agent_run: Running) -> None:
    truth = agent_run.sim.snapshot()
    walked = {vb.oid: vb for vb in agent_run.master.walk(BASE)}
    assert walked[inst("pmtaSmtpQueueRcpt")].value == str(truth.status.queued_recipients)
    assert walked[inst("pmtaActiveConnOut")].value == str(truth.status.conn.smtp_out.cur)
    assert walked[inst("pmtaProductVersion")].value == truth.status.runtime.version
    assert walked[inst("pmtaTotalMessagesOut")].type == "Counter64"
    assert walked[inst("pmtaTotalMessagesOut")].value == str(
        truth.status.traffic.total.outbound.msg
    )
    assert walked[inst("pmtaDomainCount")].value == str(len(truth.domains))
    assert walked[inst("pmtaQueueCount")].value == str(len(truth.queues))
    # every domain row, by its string index
    rcpt_col = LAY.oid("pmtaDomainRcpt")
    for d in truth.domains:
        idx = encode_string_index(d.name, 80)
        assert idx is not None
        assert walked[dotted(rcpt_col + idx)].value == str(d.rcp), d.name
    # every queue row: rcpt, paused, mode
    for q in truth.queues:
        di, vi = encode_string_index(q.domain, 80), encode_string_index(q.vmta, 32)
        assert di is not None and vi is not None
        key = di + vi
        assert walked[dotted(LAY.oid("pmtaQueueRcpt") + key)].value == str(q.rcp)
        assert walked[dotted(LAY.oid("pmtaQueuePaused") + key)].value == ("1" if q.paused else "2")
        mode = {"normal": "1", "backoff": "2"}.get(q.mode.value, "3")
        assert walked[dotted(LAY.oid("pmtaQueueMode") + key)].value == mode
    # bulkwalk gives the same
    bulk = {vb.oid: vb.value for vb in agent_run.master.bulkwalk(BASE)}
    assert bulk == {oid: vb.value for oid, vb in walked.items()}


def test_missing_row_is_no_such_instance(agent_run: Running) -> None:
    idx = encode_string_index("no-such-domain.example", 80)
    assert idx is not None
    vb = agent_run.master.get(dotted(LAY.oid("pmtaDomainRcpt") + idx))[0]
    assert vb.type == "noSuchInstance"


def test_license_days_left_is_no_such_instance_without_license_data(agent_run: Running) -> None:
    """No API key, no `show license`: no instance, as the MIB's DESCRIPTION says (and the
    Zabbix template's "no license data" trigger watches for)."""
    assert get_value(agent_run.master, "pmtaLicenseDaysLeft").type == "noSuchInstance"


def test_api_down_keeps_last_data_marks_age_and_traps_once(
    agent_run: Running, trap_receiver: TrapReceiver
) -> None:
    master = agent_run.master
    depth = get_value(master, "pmtaSmtpQueueRcpt").value
    agent_run.sim.set_fault("down")
    wait_until(lambda: get_value(master, "pmtaAgentApiReachable").value == "2", 10, "API lost")
    lost_oid = dotted(LAY.oid("pmtaApiLost"))
    trap = trap_receiver.wait_for(
        lambda vbs: any(vb.value.endswith(lost_oid) for vb in vbs), timeout=10
    )
    assert trap is not None
    # Two more failed polls (counted, not slept for), so the data is at least 2 s old.
    wait_until(lambda: int(get_value(master, "pmtaAgentPollFailures").value) >= 3, 30,
               "more failed polls")
    assert get_value(master, "pmtaSmtpQueueRcpt").value == depth  # last good data served
    assert int(get_value(master, "pmtaAgentDataAge").value.split()[0]) >= 2
    assert get_value(master, "pmtaAgentLastError").value != ""
    lost = [t for t in trap_receiver.traps() if any(vb.value.endswith(lost_oid) for vb in t)]
    assert len(lost) == 1  # raised once, not per failed poll
    agent_run.sim.set_fault("none")
    wait_until(lambda: get_value(master, "pmtaAgentApiReachable").value == "1", 10, "restored")
    restored_oid = dotted(LAY.oid("pmtaApiRestored"))
    assert trap_receiver.wait_for(
        lambda vbs: any(vb.value.endswith(restored_oid) for vb in vbs), timeout=10
    )


def test_a_trap_raised_while_snmpd_is_down_arrives_once_it_is_back(
    agent_run: Running, trap_receiver: TrapReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """pmtaApiLost is raised once per outage: raised while snmpd restarts, it used to be
    dropped (and never raised again). The AgentX session keeps it and sends it, and the
    pmtaApiRestored after it, in order, once registered again."""
    caplog.set_level(logging.INFO)
    lost_oid, restored_oid = dotted(LAY.oid("pmtaApiLost")), dotted(LAY.oid("pmtaApiRestored"))

    def handed_to_snmp(oid: str) -> bool:
        # The agent gave the notification to the AgentX side (which keeps it, or said it
        # could not send it): the condition was raised while snmpd was down.
        return any(oid in r.getMessage() for r in caplog.records)

    def traps_of(oid: str) -> int:
        return sum(any(vb.value.endswith(oid) for vb in t) for t in trap_receiver.traps())

    agent_run.master.stop()
    agent_run.sim.set_fault("down")
    wait_until(lambda: handed_to_snmp(lost_oid), 20, "pmtaApiLost raised")
    agent_run.sim.set_fault("none")
    wait_until(lambda: handed_to_snmp(restored_oid), 20, "pmtaApiRestored raised")
    assert traps_of(lost_oid) == traps_of(restored_oid) == 0  # nothing could be sent
    agent_run.master.start()
    trap_receiver.wait_for(lambda vbs: any(vb.value.endswith(restored_oid) for vb in vbs),
                           timeout=60)
    order = [oid for t in trap_receiver.traps() for oid in (lost_oid, restored_oid)
             if any(vb.value.endswith(oid) for vb in t)]
    assert order == [lost_oid, restored_oid]  # each once, in the order they were raised
