"""`pmta-sim --instances N` / `SimFleet`: N simulated PowerMTA hosts in one process, each with
its own port and data, served by one thread (what the fleet benchmark probes)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

from pmta_snmp.api import PmtaClient
from pmta_snmp.api.client import ClientConfig
from pmta_snmp.sim.fleet import SimFleet
from tests.integration.kit_support import stop_group


def refused(url: str) -> bool:
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_fleet_serves_each_host_its_own_data_on_its_own_port() -> None:
    with SimFleet(3, seed=5, speed=0, domains=15, max_items=None) as fleet:
        urls = fleet.urls
        assert len(set(urls)) == 3
        polled = []
        for url, sim in zip(urls, fleet.simulators, strict=True):
            with PmtaClient(ClientConfig(url=url, timeout=10)) as client:
                snap = client.snapshot()
                again = client.status()  # a second request on the kept-alive connection
            truth = sim.snapshot()
            assert snap.status.queued_recipients == truth.status.queued_recipients
            assert again.queued_recipients == truth.status.queued_recipients
            assert [d.name for d in snap.domains] == [d.name for d in truth.domains]
            polled.append(snap.status.queued_recipients)
        assert len(set(polled)) > 1  # different seeds, different hosts
    assert all(refused(url) for url in urls)


def test_pmta_sim_instances_prints_every_url_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmta_snmp.sim", "--instances", "4", "--speed", "0",
         "--scenario", "scale", "--domains", "30", "--vmtas", "3", "--max-items", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        urls = [proc.stdout.readline().split()[-1] for _ in range(4)]
        for url in urls:
            with PmtaClient(ClientConfig(url=url, timeout=10)) as client:
                assert client.status().runtime.product
                # --max-items 0: every row on the pages, as a lone simulator serves them
                assert len(client.snapshot().domains) == 30
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
    finally:
        stop_group(proc)
    assert proc.returncode == 0, err
    assert len(set(urls)) == 4 and all(u.startswith("http://127.0.0.1:") for u in urls)
