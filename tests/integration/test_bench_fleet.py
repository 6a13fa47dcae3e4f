"""The fleet benchmark's machinery at a tiny size (3 hosts, 1 s interval): it starts the
simulated fleet, the probe-only exporter and Prometheus, measures and stops them all. No
number is judged here; `./run bench fleet` reports them."""

from __future__ import annotations

import math

from bench.fleet import measure
from tests.integration.kit_support import require_program


def test_the_fleet_benchmark_measures_a_tiny_fleet_without_failures() -> None:
    require_program("prometheus", "prometheus")
    res = measure(hosts=3, interval=1, seconds=3.0, sim_args=("--scenario", "healthy"),
                  max_concurrent=2)
    assert res.hosts == 3 and res.probes > 0
    assert res.failed == 0 and res.scrape_failed == 0
    assert not math.isnan(res.probe_p99) and res.rss_kib > 0
    assert "simulator" in res.context
