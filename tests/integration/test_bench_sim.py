"""The simulator the walk, poll and timeout benchmarks start lists every row on its pages.

Since the simulator behaves like a default PowerMTA (10 rows per page), a benchmark that
started it without `--max-items 0` polled 10 of its 10,000 domains and waited in vain for the
rest (`./run bench agentx` timed out; `bench poll` measured 10 rows)."""

from __future__ import annotations

from bench.common import SimProcess, scale_args, workdir
from pmta_snmp.api.client import ClientConfig, PmtaClient


def test_the_benchmarks_simulator_lists_every_domain_and_queue() -> None:
    with workdir() as wd, SimProcess(wd, *scale_args(40, 3)) as sim, \
            PmtaClient(ClientConfig(url=sim.url, timeout=30)) as client:
        snap = client.snapshot()
    assert len(snap.domains) == 40
    assert len(snap.queues) >= 40  # a queue or more per domain
    assert not [w for w in snap.warnings if "missing" in w], snap.warnings
