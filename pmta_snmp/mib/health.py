"""The agent's own state that PMTA-SNMP-MIB publishes next to PowerMTA's.

`AgentHealth` is what the poller knows about its polls; `Thresholds` are the notification
thresholds read from the agent's configuration. Both are plain frozen values that
`pmta_snmp.mib.layout` turns into the `pmtaAgent` and `pmtaConfig` objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pmta_snmp import __version__
from pmta_snmp.config import Thresholds
from pmta_snmp.model import Snapshot

__all__ = ["AgentHealth", "Thresholds", "counters_restarted"]


@dataclass(frozen=True, slots=True)
class AgentHealth:
    """What the poller knows about its own work, as of the last poll.

    Times are aware datetimes (UTC is what the MIB shows; others are converted).
    `counter_discontinuity` is when PowerMTA's totals last started afresh as the agent saw it
    (its first good poll, or a PowerMTA restart, see `counters_restarted`): it becomes
    `pmtaTrafficDiscontinuityTime`. `data_age_seconds` is the age of the snapshot when the
    tree was built; the agents serve pmtaAgentDataAge, pmtaAgentApiReachable and
    pmtaAgentLastError computed when they are read instead (`pmta_snmp.mib.live`).
    """

    api_reachable: bool = False
    last_success: datetime | None = None
    data_age_seconds: float | None = None
    poll_successes: int = 0
    poll_failures: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    started_at: datetime | None = None
    counter_discontinuity: datetime | None = None
    agent_version: str = __version__


def counters_restarted(previous: Snapshot | None, current: Snapshot) -> bool:
    """True when PowerMTA's traffic totals in `current` do not continue those of `previous`.

    That is: no previous snapshot (the agent's first good poll), a changed PowerMTA startup
    time, or any total that went down. A startup time that one of the two answers lacked (an
    unusable `startupTime` is left out by the parser) proves nothing: only the totals decide
    then. The poller then sets `AgentHealth.counter_discontinuity` to the time of the current
    poll.
    """
    if previous is None:
        return True
    before, now = previous.status.runtime.startup_time, current.status.runtime.startup_time
    if before is not None and now is not None and before != now:
        return True
    t0, t1 = previous.status.traffic.total, current.status.traffic.total
    pairs = (
        (t0.inbound.rcp, t1.inbound.rcp),
        (t0.inbound.msg, t1.inbound.msg),
        (t0.inbound.kb, t1.inbound.kb),
        (t0.outbound.rcp, t1.outbound.rcp),
        (t0.outbound.msg, t1.outbound.msg),
        (t0.outbound.kb, t1.outbound.kb),
        (t0.bounce_processed, t1.bounce_processed),
        (t0.feedback_loop_processed, t1.feedback_loop_processed),
    )
    return any(new < old for old, new in pairs)
