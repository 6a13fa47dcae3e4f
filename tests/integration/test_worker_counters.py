"""A restarted poll worker is not a counter reset (issue 13 §3): the new child serves the same
pmtaTrafficDiscontinuityTime as the one before, so managers keep their Counter64 deltas.

Runs the real child (spawn) against the simulator, as tests/integration/test_worker.py does.
"""

from __future__ import annotations

import os
import signal

from pmta_snmp.config import Config, PmtaSection, PollSection
from pmta_snmp.mib.snapshot import SnmpType, Value
from pmta_snmp.netsnmp import LoopThread
from pmta_snmp.sim import Simulator
from tests.integration.test_worker import (
    child_pid,
    make_worker,
    stop_worker,
    value_of,
    wait_until,
)


def test_a_restarted_child_keeps_the_counter_discontinuity_time(loop_thread: LoopThread) -> None:
    sim = Simulator(scenario="healthy", seed=5, speed=0, domains=10, vmtas=2).start()
    cfg = Config(pmta=PmtaSection(url=sim.url, timeout=2), poll=PollSection(interval=1, jitter=0))
    worker, published, _notes = make_worker(loop_thread, cfg)
    try:
        assert wait_until(lambda: value_of(worker.current(), "pmtaTrafficDiscontinuityTime"))
        assert wait_until(lambda: len(published) >= 2)  # the carry holds the snapshot by now
        before = value_of(worker.current(), "pmtaTrafficDiscontinuityTime")
        total = value_of(worker.current(), "pmtaTotalMessagesOut")
        os.kill(child_pid(worker), signal.SIGKILL)
        assert wait_until(lambda: worker.restarts == 1)
        n = len(published)
        assert wait_until(lambda: len(published) > n + 1), "the new child published nothing"
        assert published[-1].api_reachable
        tree = worker.current()
        assert value_of(tree, "pmtaAgentApiReachable") == Value(SnmpType.INTEGER, 1)
        assert value_of(tree, "pmtaTotalMessagesOut") == total
        assert value_of(tree, "pmtaTrafficDiscontinuityTime") == before
    finally:
        stop_worker(loop_thread, worker)
        sim.stop()
