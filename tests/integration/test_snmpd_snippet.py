"""The shipped snmpd.conf snippet (contrib/snmpd/pmta-snmp.conf) in a real snmpd.

A private snmpd (pmta_snmp.netsnmp.SnmpdMaster) reads the snippet with `includeFile`, then
overrides only what cannot be used unprivileged in a test: the AgentX socket path (the last
`agentXSocket` wins), its permissions (the snippet names the Debian-snmp user and the
pmta-snmp group) and the trap sink. Access is set up like Debian's stock snmpd.conf, a
community restricted to the `systemonly` view, so the snippet's `view` line is what makes
our subtree visible. Our AgentX subagent must register through it and answer.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pmta_snmp.agent import run_agentx
from pmta_snmp.config import AgentXSection, Config, PmtaSection, PollSection
from pmta_snmp.mib.layout import layout
from pmta_snmp.netsnmp import LoopThread, SnmpdMaster, find_tool, free_udp_port, parse_varbinds
from pmta_snmp.sim import Simulator
from tests.integration.kit_support import CONTRIB

SNIPPET = CONTRIB / "snmpd" / "pmta-snmp.conf"
DEBIAN_STOCK_VIEWS = (".1.3.6.1.2.1.1", ".1.3.6.1.2.1.25.1")


def directives(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def overrides(master_socket: str, trap_port: int) -> str:
    """Stock-like access, then the three overrides; everything else comes from the snippet."""
    lines = [f"view systemonly included {oid}" for oid in DEBIAN_STOCK_VIEWS]
    lines += [
        "rocommunity stockro 127.0.0.1 -V systemonly",
        "view bareview included .1.3.6.1.2.1.1",
        "rocommunity bare 127.0.0.1 -V bareview",
        f"includeFile {SNIPPET}",
        f"agentXSocket {master_socket}",
        "agentXPerms 0660 0770",
        f"trap2sink udp:127.0.0.1:{trap_port} public",
    ]
    return "\n".join(lines)


def snmpget(master: SnmpdMaster, community: str, *oids: str) -> list[tuple[str, str, str]]:
    exe = find_tool("snmpget")
    assert exe is not None
    res = subprocess.run(
        [exe, "-v2c", "-c", community, "-On", "-m", "", "-t", "2", "-r", "1", master.agent, *oids],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert res.returncode == 0, res.stderr
    return [(vb.oid, vb.type, vb.value) for vb in parse_varbinds(res.stdout)]


@dataclass
class Running:
    master: SnmpdMaster
    sim: Simulator
    var_agentx_existed: bool


@pytest.fixture
def running(snmpd_factory: Callable[..., SnmpdMaster], tmp_path: Path) -> Iterator[Running]:
    if not SNIPPET.is_file():
        pytest.fail(f"{SNIPPET} is missing")
    var_agentx_existed = Path("/var/agentx").exists()
    # SnmpdMaster's config names its own socket first; the snippet's comes after it, and our
    # override after the snippet must win. The master's socket path (in its own temp dir) is
    # known once the master exists, so it is restarted with the overrides appended.
    master = snmpd_factory()
    master.stop()
    master.config_path.write_text(
        master.config_path.read_text() + overrides(master.agentx_address, free_udp_port()) + "\n",
        encoding="utf-8",
    )
    master.start()
    sim = Simulator(speed=0).start()
    cfg = Config(
        pmta=PmtaSection(url=sim.url, timeout=3),
        poll=PollSection(interval=1, jitter=0),
        agentx=AgentXSection(socket=master.agentx_address, ping_interval=5),
    )
    loop_thread = LoopThread()
    stop = asyncio.Event()
    fut = asyncio.run_coroutine_threadsafe(run_agentx(cfg, stop=stop), loop_thread.loop)
    try:
        yield Running(master, sim, var_agentx_existed)
    finally:
        loop_thread.call_soon(stop.set)
        fut.result(15)
        loop_thread.close()
        sim.stop()


def test_snippet_makes_snmpd_the_agentx_master_with_our_view() -> None:
    parsed = {d[0]: d[1:] for d in directives(SNIPPET)}
    assert parsed["master"] == ["agentx"]
    assert parsed["agentXSocket"] == ["unix:/var/agentx/master"]
    base = ".".join(map(str, layout().base))
    assert ["systemonly", "included", f".{base}"] in [
        d[1:] for d in directives(SNIPPET) if d[0] == "view"
    ]


def test_subagent_registers_through_the_shipped_snippet(running: Running) -> None:
    master, truth = running.master, running.sim.snapshot()
    reachable = ".".join(map(str, layout().instance("pmtaAgentApiReachable")))
    queue = ".".join(map(str, layout().instance("pmtaSmtpQueueRcpt")))
    deadline = time.monotonic() + 15
    got: list[tuple[str, str, str]] = []
    while time.monotonic() < deadline:
        got = snmpget(master, "stockro", reachable, queue)
        if got[0][2] == "1":
            break
        time.sleep(0.2)
    assert got == [
        (reachable, "INTEGER", "1"),
        (queue, "Gauge32", str(truth.status.queued_recipients)),
    ], master.log_text()
    # Without the snippet's view line the same subtree is hidden (control community).
    assert snmpget(master, "bare", queue)[0][1] == "noSuchObject"
    # The socket override won: snmpd listens where we said, not on /var/agentx/master.
    assert master.socket_path.exists()
    assert str(master.socket_path) in master.agentx_address
    log = master.log_text()
    assert "/var/agentx/master" not in log, log
    if not running.var_agentx_existed:
        assert not Path("/var/agentx").exists()
    assert "Error" not in log and "error" not in log, log
