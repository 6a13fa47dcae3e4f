"""The fleet benchmark's machinery at a tiny size (3 hosts, 1 s interval): it starts the
simulated fleet, the probe-only exporter and Prometheus, measures and stops them all. No
number is judged here (not even failed probes, which depend on the machine's speed at this
interval); `./run bench fleet` reports them."""

from __future__ import annotations

import math

from bench.fleet import measure
from tests.integration.kit_support import require_program


def test_the_fleet_benchmark_measures_a_tiny_fleet_without_failures() -> None:
    require_program("prometheus", "prometheus")
    res = measure(hosts=3, interval=1, seconds=3.0, max_concurrent=2,
                  sim_args=("--scenario", "scale", "--domains", "30", "--vmtas", "3",
                            "--max-items", "0"))
    assert res.hosts == 3 and res.probes > 0
    # every row of the hosts' pages was probed: 30 domains and their queues, a sample per
    # domain and per queue at least (a fleet serving empty pages once made probes cheap)
    assert res.samples > 30 + 30 * 3, res.samples
    # With a 1 s interval a probe has half a second: on a loaded machine one may time out,
    # which the benchmark reports (failures are judged there, at 15 s), not this test.
    assert 0 <= res.failed + res.scrape_failed <= res.probes
    assert not math.isnan(res.probe_p99) and res.rss_kib > 0
    assert "simulator" in res.context
