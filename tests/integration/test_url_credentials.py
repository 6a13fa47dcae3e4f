"""Credentials in `--url` (`http://user:password@host:port`) are used, and shown nowhere.

They become HTTP Basic authentication of every request. They must not appear in
`pmtaAgentLastError` (readable by anyone with the community), in the agents' and the
exporter's logs, in a plugin's status line or in `/metrics`: each shows the URL as
`http://***@host:port`, or the server without them.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pmta_snmp.mib.layout import layout
from pmta_snmp.netsnmp import SnmpClientError, SnmpdMaster, free_tcp_port, stop_process
from pmta_snmp.sim import Simulator
from tests.reliability._hostile import HostileApi
from tests.reliability._support import assert_one_clean_unknown_line, run_plugin

LAY = layout()
SECRET = "s3cret-pw"
USERINFO = f"monitor:{SECRET}"


def dotted(oid: tuple[int, ...]) -> str:
    return ".".join(map(str, oid))


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except (SnmpClientError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def closed_port() -> int:
    return free_tcp_port()  # nothing listens there once the probe socket is closed


@pytest.fixture
def hostile() -> Iterator[HostileApi]:
    with Simulator(scenario="healthy", seed=9, speed=0, domains=10, vmtas=2) as sim, \
            HostileApi(sim.url) as api:
        yield api


def spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMTA_SNMP_", "PMTA_API")) or k == "PMTA_SNMP_STATE_DIR"}
    env["PMTA_SNMP_PMTA_TIMEOUT"] = "5"  # generous: a refused connection fails at once anyway
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", *args], stdout=log,
                                stderr=subprocess.STDOUT, env=env)


@pytest.mark.snmpd
def test_the_subagent_uses_url_credentials_and_never_shows_them(
    hostile: HostileApi, snmpd_factory: Callable[..., SnmpdMaster], tmp_path: Path
) -> None:
    master = snmpd_factory(agentx_timeout=2)
    port = closed_port()

    def get(name: str) -> str:
        return master.get(dotted(LAY.instance(name)), timeout=1, retries=1)[0].value

    for url, reachable in ((hostile.url_with(USERINFO), "1"),
                           (f"http://{USERINFO}@127.0.0.1:{port}", "2")):
        log = tmp_path / f"agent-{reachable}.log"
        proc = spawn(["pmta_snmp", "agentx", "--url", url, "--agentx-socket",
                      master.agentx_address, "--interval", "1"], log)
        try:
            wait_until(lambda r=reachable: get("pmtaAgentApiReachable") == r, 30, "a poll")
            if reachable == "1":  # the credentials went along, as Basic authentication
                expected = base64.b64encode(USERINFO.encode()).decode()
                assert hostile.auth == f"Basic {expected}"
            else:
                wait_until(lambda: get("pmtaAgentLastError") != "", 10, "pmtaAgentLastError")
                error = get("pmtaAgentLastError")
                assert f"cannot connect to PowerMTA at http://127.0.0.1:{port}" in error, error
                assert SECRET not in error and "monitor" not in error, error
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            finally:
                stop_process(proc)
        text = log.read_text()
        assert SECRET not in text, text
        assert "http://***@127.0.0.1:" in text, text  # the startup line says where it polls


def test_a_plugin_never_shows_url_credentials(tmp_path: Path) -> None:
    port = closed_port()
    out = run_plugin("queue", ["--url", f"http://{USERINFO}@127.0.0.1:{port}",
                               "--state-dir", str(tmp_path)])
    assert_one_clean_unknown_line(out, "credentials in --url")
    assert f"127.0.0.1:{port}" in out.line and SECRET not in out.out + out.err


def test_a_plugin_timeout_names_the_stage_without_url_credentials(tmp_path: Path) -> None:
    with Simulator(scenario="healthy", seed=9, speed=0) as sim:
        sim.set_fault("slow", delay=5)
        url = sim.url.replace("http://", f"http://{USERINFO}@")
        out = run_plugin("queue", ["--url", url, "-t", "1", "--state-dir", str(tmp_path)])
    assert_one_clean_unknown_line(out, "timeout with credentials in --url")
    assert "while querying PowerMTA /status at http://***@127.0.0.1:" in out.line, out.line
    assert SECRET not in out.out + out.err


def test_the_exporter_never_shows_url_credentials(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    port, listen = closed_port(), free_tcp_port()
    log = tmp_path / "exporter.log"
    proc = spawn(["pmta_snmp.integrations.cli", "exporter", "--url",
                  f"http://{USERINFO}@127.0.0.1:{port}", "--interval", "1",
                  "--listen", f"127.0.0.1:{listen}"], log)
    try:
        metrics = ""

        def scraped() -> bool:
            nonlocal metrics
            with urllib.request.urlopen(f"http://127.0.0.1:{listen}/metrics", timeout=5) as r:
                metrics = r.read().decode()
            errors = re.search(r"^pmta_poll_errors_total ([0-9.e+]+)$", metrics, re.M)
            return errors is not None and float(errors.group(1)) >= 1

        wait_until(scraped, 30, "a failed poll in /metrics")
        assert SECRET not in metrics
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        finally:
            stop_process(proc)
    text = log.read_text()
    assert SECRET not in text, text
    assert "http://***@127.0.0.1:" in text and "cannot connect" in text, text
