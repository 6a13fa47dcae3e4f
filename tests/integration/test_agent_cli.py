"""`pmta-snmp agentx` and `pmta-snmp agent` as real processes against the simulator.

The subagent behind a real snmpd and the standalone agent must publish the same PowerMTA state;
SIGTERM closes the AgentX session cleanly (snmpd forgets the subtree) and exits 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pmta_snmp.engineid import ENGINE_STATE_FILE
from pmta_snmp.mib.layout import layout
from pmta_snmp.netsnmp import (
    SnmpdMaster,
    child_pids,
    free_udp_port,
    parse_varbinds,
    stop_process,
)
from pmta_snmp.sim import Simulator
from tests.integration.test_standalone import discover

pytestmark = pytest.mark.snmpd

LAY = layout()
BASE = ".".join(map(str, LAY.base))
KEY = "cli_test_api_key_" + "z" * 20


def inst(name: str) -> str:
    return ".".join(map(str, LAY.instance(name)))


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(scenario="healthy", seed=11, speed=0, api_key=KEY) as s:
        yield s


def spawn(args: list[str], tmp_path: Path, *, own_group: bool = False) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "PMTA_API_KEY"}
    log = (tmp_path / "agent.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "pmta_snmp", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=own_group,
    )


def test_sigterm_to_the_whole_group_stops_agent_and_worker_quietly(
    sim: Simulator, snmpd_factory: Callable[..., SnmpdMaster], tmp_path: Path
) -> None:
    """systemd stops a service by sending SIGTERM to every process of its cgroup: the agent
    and its poll worker get it at once. Both end, exit 0, and nothing is logged as an error."""
    master = snmpd_factory()
    proc = spawn(["agentx", "--url", sim.url, "--agentx-socket", master.agentx_address,
                  "--interval", "1"], tmp_path, own_group=True)
    try:
        wait_for(
            lambda: master.get(inst("pmtaAgentApiReachable"))[0].value == "1", 20, "registration"
        )
        workers = child_pids(proc.pid)
        assert len(workers) == 1, workers  # the poll worker, and no other helper process
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not Path(f"/proc/{workers[0]}").exists() or "zombie" in Path(
            f"/proc/{workers[0]}/status").read_text()
    finally:
        stop_process(proc)
    log = (tmp_path / "agent.log").read_text()
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def snmp(tool: str, *args: str) -> list:  # type: ignore[type-arg]
    out = subprocess.run(
        [tool, "-On", "-m", "", "-t", "2", "-r", "1", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return parse_varbinds(out.stdout)


def test_agentx_process_serves_sim_and_closes_on_sigterm(
    sim: Simulator, snmpd_factory: Callable[..., SnmpdMaster], tmp_path: Path
) -> None:
    master = snmpd_factory()
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    proc = spawn(
        [
            "agentx",
            "--url",
            sim.url,
            "--agentx-socket",
            master.agentx_address,
            "--interval",
            "1",
            "--api-key-file",
            str(key_file),
        ],
        tmp_path,
    )
    try:
        wait_for(
            lambda: master.get(inst("pmtaAgentApiReachable"))[0].value == "1", 20, "registration"
        )
        truth = sim.snapshot()
        depth = master.get(inst("pmtaSmtpQueueRcpt"))[0]
        assert depth.value == str(truth.status.queued_recipients)
        days = master.get(inst("pmtaLicenseDaysLeft"))[0]
        assert days.type == "INTEGER" and int(days.value) > 0  # license read with the key
        # Several polls (counted, not slept for): none of them may log.
        wait_for(lambda: int(master.get(inst("pmtaAgentPollSuccesses"))[0].value) >= 5, 60,
                 "five polls")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        after = master.get(inst("pmtaSmtpQueueRcpt"))[0]
        assert after.type == "noSuchObject"  # Close: snmpd dropped our registration
    finally:
        stop_process(proc)
    log = (tmp_path / "agent.log").read_text()
    assert KEY not in log
    assert "Traceback" not in log
    # one line per state change, not per poll (4+ polls happened)
    assert len(log.strip().splitlines()) <= 7, log


def test_standalone_process_v2c_and_v3_match_agentx_view(sim: Simulator, tmp_path: Path) -> None:
    port = free_udp_port()
    (tmp_path / "auth").write_text("auth-secret-1\n")
    (tmp_path / "priv").write_text("priv-secret-2\n")
    (tmp_path / "community").write_text("s3cret-community\n")
    (tmp_path / "key").write_text(KEY)
    cfg = tmp_path / "agent.toml"
    # With the API key the tables hold every row (the pages list only PowerMTA's top 10).
    cfg.write_text(
        f'[pmta]\nurl = "{sim.url}"\napi_key_file = "{tmp_path}/key"\n[poll]\ninterval = 1\n'
        f'[snmp]\nlisten = "udp:127.0.0.1:{port}"\ncommunity_file = "{tmp_path}/community"\n'
        f'[[snmp.users]]\nname = "mon"\nauth_protocol = "sha256"\n'
        f'auth_key_file = "{tmp_path}/auth"\npriv_protocol = "aes128"\n'
        f'priv_key_file = "{tmp_path}/priv"\n'
    )
    proc = spawn(["agent", "--config", str(cfg)], tmp_path)
    agent = f"udp:127.0.0.1:{port}"
    try:
        wait_for(
            lambda: (
                snmp(
                    "snmpget",
                    "-v2c",
                    "-c",
                    "s3cret-community",
                    agent,
                    inst("pmtaAgentApiReachable"),
                )[0].value
                == "1"
            ),
            20,
            "first poll",
        )
        truth = sim.snapshot()
        v2 = {
            vb.oid: vb for vb in snmp("snmpbulkwalk", "-v2c", "-c", "s3cret-community", agent, BASE)
        }
        v3 = {
            vb.oid: vb
            for vb in snmp(
                "snmpwalk",
                "-v3",
                "-l",
                "authPriv",
                "-u",
                "mon",
                "-a",
                "SHA-256",
                "-A",
                "auth-secret-1",
                "-x",
                "AES",
                "-X",
                "priv-secret-2",
                agent,
                BASE,
            )
        }
        assert v2[inst("pmtaSmtpQueueRcpt")].value == str(truth.status.queued_recipients)
        assert v2[inst("pmtaDomainCount")].value == str(len(truth.domains))
        volatile = {
            inst(n)
            for n in (
                "pmtaAgentDataAge",
                "pmtaAgentPollSuccesses",
                "pmtaAgentLastSuccess",
                "pmtaAgentConsecutiveFailures",
            )
        }
        assert {o: vb.value for o, vb in v2.items() if o not in volatile} == {
            o: vb.value for o, vb in v3.items() if o not in volatile
        }
        assert snmp("snmpget", "-v2c", "-c", "public", agent, inst("pmtaSmtpQueueRcpt")) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(10) == 0
        finally:
            stop_process(proc)


def v3_agent_config(tmp_path: Path, sim: Simulator, port: int, extra: str = "") -> Path:
    """An agent configuration with one SNMPv3 user (authPriv, SHA-256, AES)."""
    (tmp_path / "auth").write_text("auth-secret-1\n")
    (tmp_path / "priv").write_text("priv-secret-2\n")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[pmta]\nurl = "{sim.url}"\n[poll]\ninterval = 1\n'
        f'[snmp]\nlisten = "udp:127.0.0.1:{port}"\n{extra}'
        f'[[snmp.users]]\nname = "mon"\nauth_protocol = "sha256"\n'
        f'auth_key_file = "{tmp_path}/auth"\npriv_protocol = "aes128"\n'
        f'priv_key_file = "{tmp_path}/priv"\n'
    )
    return cfg


def test_standalone_process_keeps_its_engine_id_across_restarts(
    sim: Simulator, tmp_path: Path
) -> None:
    """RFC 3411 §3.1.1.1: the engine ID survives a restart (kept in the --state-dir) and
    snmpEngineBoots grows by one; SNMPv3 requests work after the restart."""
    port = free_udp_port()
    cfg = v3_agent_config(tmp_path, sim, port)
    agent = f"udp:127.0.0.1:{port}"
    v3 = ("-v3", "-l", "authPriv", "-u", "mon", "-a", "SHA-256", "-A", "auth-secret-1",
          "-x", "AES", "-X", "priv-secret-2", agent, inst("pmtaAgentApiReachable"))
    seen: list[tuple[bytes, int]] = []
    for _ in range(2):
        proc = spawn(["agent", "--config", str(cfg), "--state-dir", str(tmp_path / "state")],
                     tmp_path)
        try:
            wait_for(lambda: snmp("snmpget", *v3)[0].value == "1", 20, "a v3 answer")
            seen.append(discover(port))
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            stop_process(proc)
    (engine_id, boots), again = seen
    assert again == (engine_id, boots + 1)
    assert (tmp_path / "state" / "agent" / ENGINE_STATE_FILE).is_file()


def test_bad_engine_id_is_a_one_line_config_error(sim: Simulator, tmp_path: Path) -> None:
    cfg = v3_agent_config(tmp_path, sim, free_udp_port(), 'engine_id = "0x1234"\n')
    out = subprocess.run([sys.executable, "-m", "pmta_snmp", "agent", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        "pmta-snmp agent: snmp.engine_id: '0x1234' has 2 octets; an engine ID has 5..32"
    ]
