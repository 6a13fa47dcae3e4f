"""snmpd restarted 20 times under a walker: the subagent re-registers every time, no session
hangs, and neither file descriptors nor memory grow. (How soon it is back is its backoff,
tested in test_agentx_snmpd.py, and measured by `./run bench timeouts`; the waits here are
hang detection only.)

The subagent is the real `pmta-snmp agentx` as a child process (its fds and VmRSS read from
/proc), polling the simulator; snmpd restarts alternate graceful (SIGTERM: the master closes
the session) and hard (SIGKILL: the socket just dies), while a thread walks our subtree.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pmta_snmp.mib.layout import layout
from pmta_snmp.netsnmp import SnmpClientError, SnmpdMaster
from pmta_snmp.sim import Simulator
from tests.reliability._support import PYTHON, Background, agent_env, fds, rss_kb, wait_until

pytestmark = [pytest.mark.snmpd, pytest.mark.slow]

LAY = layout()
BASE = ".".join(map(str, LAY.base))
REACHABLE = ".".join(map(str, LAY.instance("pmtaAgentApiReachable")))
RESTARTS = 20


def served(master: SnmpdMaster) -> bool:
    """The master answers our object from the subagent (not noSuchObject)."""
    try:
        got = master.get(REACHABLE, timeout=0.3, retries=0)
    except SnmpClientError:
        return False
    return bool(got) and got[0].type == "INTEGER" and got[0].value == "1"


class Walker(threading.Thread):
    """snmpwalk over our subtree in a loop until stopped; counts complete walks."""

    def __init__(self, master: SnmpdMaster) -> None:
        super().__init__(name="walker", daemon=True)
        self.master = master
        self.stop_event = threading.Event()
        self.complete = 0
        self.failed = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                rows = self.master.run_client("snmpbulkwalk", "-Cr20", BASE, timeout=5,
                                              retries=0)
            except Exception:  # master down mid-walk: expected during a restart
                self.failed += 1
                time.sleep(0.05)
                continue
            if rows.count("\n") > 50:
                self.complete += 1
            else:
                self.failed += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)


@pytest.mark.timeout(300)  # hang detection: about 10 s on an idle machine
def test_twenty_snmpd_restarts_reregister_without_leaks(
    snmpd_factory: Callable[..., SnmpdMaster], tmp_path: Path
) -> None:
    t_start = time.monotonic()
    sim = Simulator(scenario="healthy", seed=3, speed=0, domains=30, vmtas=3).start()
    master = snmpd_factory(agentx_timeout=1, agentx_retries=0)
    agent = Background(
        [PYTHON, "-m", "pmta_snmp", "agentx", "--url", sim.url,
         "--agentx-socket", master.agentx_address, "--interval", "1"],
        tmp_path / "agent.log",
        env=agent_env(PMTA_SNMP_AGENTX_TIMEOUT="1", PMTA_SNMP_AGENTX_PING_INTERVAL="2"),
    )
    walker = Walker(master)
    try:
        assert wait_until(lambda: served(master), 60), agent.log_text()
        walker.start()
        times: list[float] = []
        readings: list[tuple[int, int]] = []
        for i in range(RESTARTS):
            if i == 2:  # baseline once the first reconnects warmed every code path up
                base = fds(agent.pid)
                baseline_fds, baseline_rss = len(base), rss_kb(agent.pid)
                baseline_sockets = sum(t.startswith("socket:") for t in base.values())
            master.restart(hard=bool(i % 2))
            t0 = time.monotonic()
            ok = wait_until(lambda: served(master), 30.0, step=0.05)
            took = time.monotonic() - t0  # reported, not judged
            assert ok, f"restart {i + 1} ({'hard' if i % 2 else 'graceful'}): not re-registered " \
                       f"within 30 s\n{agent.log_text()[-3000:]}"
            assert agent.alive(), agent.log_text()
            times.append(took)
            # The whole subtree answers again, not just one object.
            assert len(master.walk(BASE)) > 50
            readings.append((len(fds(agent.pid)), rss_kb(agent.pid)))
        # A whole walk against the final master (and so at least one during the test).
        walks = walker.complete
        assert wait_until(lambda: walker.complete > walks, 60), (walker.complete, walker.failed)
        walker.stop()
        final_fds = fds(agent.pid)
        final_rss = rss_kb(agent.pid)
        sockets = [t for t in final_fds.values() if t.startswith("socket:")]
        print(
            f"\nrestarts: {RESTARTS}, re-registration max {max(times):.2f}s "
            f"mean {sum(times) / len(times):.2f}s; fds {baseline_fds} -> {len(final_fds)} "
            f"(sockets {baseline_sockets} -> {len(sockets)}); "
            f"RSS {baseline_rss} -> {final_rss} KiB; walks ok {walker.complete} "
            f"failed {walker.failed}; total {time.monotonic() - t_start:.1f}s"
        )
        # One AgentX connection at a time (plus the poller's keep-alive): none left behind.
        assert len(final_fds) <= baseline_fds + 1, (baseline_fds, final_fds, readings)
        assert len(sockets) <= baseline_sockets + 1, final_fds
        assert max(n for n, _ in readings) <= baseline_fds + 2, readings
        assert final_rss - baseline_rss < 8 * 1024, readings
        assert master.walk(BASE)[0].oid.startswith(BASE)
        log = agent.log_text()
        assert "Traceback" not in log, log[-3000:]
        assert log.count("AgentX registered") >= RESTARTS + 1
    finally:
        walker.stop()
        rc = agent.stop()
        sim.stop()
    assert rc == 0, agent.log_text()[-2000:]  # SIGTERM: a clean shutdown
