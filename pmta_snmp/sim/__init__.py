"""pmta-sim: a PowerMTA web-monitor simulator for the demo, the tests and the benchmarks.

It serves what a real PowerMTA serves (formats reference §1: `/status`, `/queues`, `/domains`,
`/vmtas`, detail pages, `POST /command`, XML/JSON envelopes, `http-access` 403s, HTTPS) and writes
accounting CSV and a main log consistent with that state. Anything that exists only in the
simulator (`/_sim/...` control paths, the off-by-default blog-post "seed" endpoints) is marked so.
"""

from pmta_snmp.sim.simulator import Simulator
from pmta_snmp.sim.state import SCENARIOS

__all__ = ["SCENARIOS", "Simulator"]
