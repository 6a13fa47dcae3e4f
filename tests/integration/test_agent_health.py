"""The agents' health objects are true when they are read, also when polling stops.

A poll worker stopped with SIGSTOP stands for one that hangs: it delivers no tree, so nothing
in the last tree can say so. The subagent (through a real snmpd) and the standalone agent, run
as the real `pmta-snmp` processes, must answer a data age that grows with the wait,
`pmtaAgentApiReachable` false once more than two intervals (plus a poll's time) passed, and
send `pmtaApiLost` (received by a real snmptrapd), then `pmtaApiRestored` once trees come back.
The same with `isolation = "thread"`, whose poll thread hangs in the parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pmta_snmp.agent import run_agentx
from pmta_snmp.config import AgentXSection, Config, PmtaSection, PollSection, Thresholds
from pmta_snmp.mib.layout import layout
from pmta_snmp.netsnmp import (
    LoopThread,
    SnmpClientError,
    SnmpdMaster,
    SnmpVarBind,
    TrapReceiver,
    child_pids,
    free_udp_port,
    parse_varbinds,
    stop_process,
)
from pmta_snmp.sim import Simulator

pytestmark = pytest.mark.snmpd

LAY = layout()
STOPPED_FOR = 6.0  # seconds the worker is stopped at least: past STALE_AFTER, so seen stalled
STALE_AFTER = 5.0  # interval 1 s, API timeout 1 s: 2 x 1 + 3 x 1


def dotted(oid: tuple[int, ...]) -> str:
    return ".".join(map(str, oid))


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def trap_count(receiver: TrapReceiver, name: str) -> int:
    oid = dotted(LAY.oid(name))
    return sum(1 for t in receiver.traps() if any(vb.value.endswith(oid) for vb in t))


def settled_losses(receiver: TrapReceiver) -> int:
    """pmtaApiLost notifications so far, once each has its pmtaApiRestored: counts are taken
    from here, as a loaded machine may start the first poll late (a stall, then restored)."""
    wait_until(lambda: trap_count(receiver, "pmtaApiLost") == trap_count(
        receiver, "pmtaApiRestored"), 30, "every pmtaApiLost so far to be restored")
    return trap_count(receiver, "pmtaApiLost")


class Reader:
    """snmpget of our scalars through some agent address."""

    def __init__(self, get: Callable[[str], list[SnmpVarBind]]) -> None:
        self._get = get

    def value(self, name: str) -> str:
        try:
            got = self._get(dotted(LAY.instance(name)))
        except SnmpClientError:
            return "?"
        return got[0].value if got else "?"

    def number(self, name: str) -> int:
        text = self.value(name).split()[0]
        return int(text) if text.isdigit() else -1


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(scenario="healthy", seed=5, speed=0, domains=20, vmtas=2) as s:
        yield s


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMTA_SNMP_", "PMTA_API")) or k == "PMTA_SNMP_STATE_DIR"}
    env.update(PMTA_SNMP_PMTA_TIMEOUT="1", PMTA_SNMP_POLL_JITTER="0",
               PMTA_SNMP_THRESHOLDS_API_FAILURES_RAISE="3")
    return env


def _snmpget(agent: str, community: str) -> Callable[[str], list[SnmpVarBind]]:
    def get(oid: str) -> list[SnmpVarBind]:
        out = subprocess.run(
            ["snmpget", "-v2c", "-c", community, "-On", "-m", "", "-t", "1", "-r", "1", agent,
             oid],
            capture_output=True, text=True, timeout=30, check=False,
        )
        if out.returncode != 0:
            raise SnmpClientError(out.stderr)
        return parse_varbinds(out.stdout)

    return get


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("front_end", ["agentx", "agent"])
def test_a_stopped_poll_worker_is_seen_in_the_health_objects_and_notified(
    front_end: str,
    sim: Simulator,
    snmpd_factory: Callable[..., SnmpdMaster],
    trap_receiver: TrapReceiver,
    tmp_path: Path,
) -> None:
    args = ["--url", sim.url, "--interval", "1"]
    if front_end == "agentx":
        master = snmpd_factory(trap_port=trap_receiver.port, agentx_timeout=2)
        args += ["--agentx-socket", master.agentx_address]
        reader = Reader(lambda oid: master.get(oid, timeout=1, retries=1))
    else:
        port = free_udp_port()
        (tmp_path / "community").write_text("health-community\n")
        config = tmp_path / "agent.toml"
        config.write_text(
            f'[snmp]\nlisten = "udp:127.0.0.1:{port}"\n'
            f'community_file = "{tmp_path}/community"\n'
            f'[[snmp.trap_targets]]\naddress = "udp:127.0.0.1:{trap_receiver.port}"\n'
        )
        args += ["--config", str(config)]
        reader = Reader(_snmpget(f"udp:127.0.0.1:{port}", "health-community"))
    log = (tmp_path / "agent.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "pmta_snmp", front_end, *args],
                            stdout=log, stderr=subprocess.STDOUT, env=_env())
    worker: int | None = None
    try:
        wait_until(lambda: reader.value("pmtaAgentApiReachable") == "1", 30, "the first poll")
        workers = child_pids(proc.pid)
        assert len(workers) == 1, workers
        worker = workers[0]
        lost = settled_losses(trap_receiver)
        os.kill(worker, signal.SIGSTOP)
        stopped_at = time.monotonic()
        wait_until(lambda: reader.value("pmtaAgentApiReachable") == "2", 20,
                   "pmtaAgentApiReachable false while the worker is stopped")
        assert "no poll result for" in reader.value("pmtaAgentLastError")
        wait_until(lambda: trap_count(trap_receiver, "pmtaApiLost") == lost + 1, 30,
                   "pmtaApiLost")
        time.sleep(max(0.0, STOPPED_FOR - (time.monotonic() - stopped_at)))
        age = reader.number("pmtaAgentDataAge")
        assert age >= STOPPED_FOR, age  # the last good poll was before the stop
        assert reader.value("pmtaAgentApiReachable") == "2"
        os.kill(worker, signal.SIGCONT)
        wait_until(lambda: reader.value("pmtaAgentApiReachable") == "1", 30, "trees again")
        wait_until(lambda: trap_count(trap_receiver, "pmtaApiRestored") == lost + 1, 30,
                   "pmtaApiRestored")
        wait_until(lambda: 0 <= reader.number("pmtaAgentDataAge") < STOPPED_FOR, 30,
                   "a fresh data age")
        assert trap_count(trap_receiver, "pmtaApiLost") == lost + 1  # once for the stop
        assert child_pids(proc.pid) == [worker]  # stopped for less than the restart time
    finally:
        if worker is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        finally:
            stop_process(proc)
            log.close()
    text = (tmp_path / "agent.log").read_text()
    assert "no poll result for" in text and "Traceback" not in text, text


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_hung_poll_thread_is_seen_in_the_health_objects_and_notified(
    sim: Simulator,
    snmpd_factory: Callable[..., SnmpdMaster],
    trap_receiver: TrapReceiver,
    loop_thread: LoopThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`isolation = "thread"`: a poll stuck in the parser (as a quadratic parse of a hostile
    answer would be) holds the poll thread; the agent says so and notifies."""
    from pmta_snmp.api import parse

    real = parse.parse_status
    hang = threading.Event()
    release = threading.Event()

    def parse_status(data: object, **kw: object) -> object:
        if hang.is_set():
            release.wait(60)
        return real(data, **kw)

    monkeypatch.setattr(parse, "parse_status", parse_status)
    master = snmpd_factory(trap_port=trap_receiver.port, agentx_timeout=2)
    cfg = Config(
        pmta=PmtaSection(url=sim.url, timeout=1),
        poll=PollSection(interval=1, jitter=0, isolation="thread"),
        agentx=AgentXSection(socket=master.agentx_address, ping_interval=5),
        thresholds=Thresholds(api_failures_raise=3),
    )
    reader = Reader(lambda oid: master.get(oid, timeout=1, retries=1))
    stop = asyncio.Event()
    fut = asyncio.run_coroutine_threadsafe(run_agentx(cfg, stop=stop), loop_thread.loop)
    try:
        wait_until(lambda: reader.value("pmtaAgentApiReachable") == "1", 20, "the first poll")
        lost = settled_losses(trap_receiver)
        hang.set()
        wait_until(lambda: reader.value("pmtaAgentApiReachable") == "2", 20,
                   "pmtaAgentApiReachable false while the poll hangs")
        assert reader.number("pmtaAgentDataAge") >= STALE_AFTER - 1
        wait_until(lambda: trap_count(trap_receiver, "pmtaApiLost") == lost + 1, 30,
                   "pmtaApiLost")
        hang.clear()
        release.set()
        wait_until(lambda: reader.value("pmtaAgentApiReachable") == "1", 30, "polls again")
        wait_until(lambda: trap_count(trap_receiver, "pmtaApiRestored") == lost + 1, 30,
                   "pmtaApiRestored")
    finally:
        release.set()
        loop_thread.call_soon(stop.set)
        fut.result(20)
