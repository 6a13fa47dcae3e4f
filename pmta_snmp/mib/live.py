"""Health objects computed when a manager reads them, over whatever tree is served.

A tree is built after a poll, so an age stored in it is true only at that moment, and a poller
that stopped delivering trees would leave "reachable, 0 seconds old" in place for good. Every
front end (the AgentX subagent, the standalone agent) therefore serves the tree that
`LiveHealth.install` returns: the same packed tree with `pmtaAgentDataAge` (now minus the last
good poll), `pmtaAgentApiReachable` (false as well once no poll result came for `stale_after`
seconds), `pmtaAgentLastError` (then saying so) and `pmtaAcctReadAge` (now minus the tree's
pmtaAcctLastRead: it grows when the accounting reader, or the worker that carries it, stops)
computed on each read. One mechanism, so the front ends cannot disagree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Final

from pmta_snmp.clock import Since, utc_now
from pmta_snmp.mib.layout import (
    ENTERPRISE,
    gauge32,
    layout,
    utc_from_date_and_time,
    utf8_text,
)
from pmta_snmp.mib.snapshot import LiveTree, LiveValue, Oid, OidTree, SnmpType, Value

__all__ = ["LIVE_OBJECTS", "LiveHealth"]

LIVE_OBJECTS: Final = ("pmtaAgentApiReachable", "pmtaAgentDataAge", "pmtaAgentLastError",
                       "pmtaAcctReadAge")
"""The scalars whose value is computed when read."""

_TRUE: Final = Value(SnmpType.INTEGER, 1)  # TruthValue
_FALSE: Final = Value(SnmpType.INTEGER, 2)


class LiveHealth:
    """The serving side's knowledge of the newest tree, and the live values drawn from it.

    `install` is called with every tree the poller delivers (good poll or failed); the
    returned tree is what the front ends answer from until the next one. `clock` is
    monotonic (the silence between trees, and the age of the data once a good poll has been
    seen), `wall` the UTC clock the poll times are in: a step of it does not move the age.
    """

    def __init__(
        self,
        *,
        stale_after: float,
        enterprise: int = ENTERPRISE,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        self.stale_after = stale_after
        self._clock = clock
        self._success = Since(clock=clock, wall=wall)
        self._acct_read = Since(clock=clock, wall=wall)
        self.received = clock()
        """When the last tree arrived (the start counts as one: nothing is due before)."""
        self.api_reachable = False
        self._stall_over: tuple[str, str | None] | None = None
        """After a stall that ended with the API reachable: what pmtaAgentLastError says of
        it, and the poller's last error then (a newer one replaces the stall)."""
        lay = layout(enterprise)
        providers: dict[str, LiveValue] = {
            "pmtaAgentApiReachable": self._reachable_value,
            "pmtaAgentDataAge": self._age_value,
            "pmtaAgentLastError": self._error_value,
            "pmtaAcctReadAge": self._acct_read_value,
        }
        self._acct_last_read = lay.instance("pmtaAcctLastRead")
        self._values: dict[Oid, LiveValue] = {
            lay.instance(name): providers[name] for name in LIVE_OBJECTS
        }

    def install(
        self,
        tree: OidTree,
        *,
        api_reachable: bool,
        last_success: datetime | None,
        last_error: str | None = None,
    ) -> LiveTree:
        """Take note of a new tree from the poller; the tree to serve in its place.

        `last_error` is the poller's (pmtaAgentLastError in `tree`): when a stall ends with
        the API reachable, the stall was the last outage, and pmtaAgentLastError keeps saying
        so (MIB: kept after recovery) until the poller has a newer error."""
        if self.stalled() and api_reachable:
            self._stall_over = (self.stall_text(ended=True), last_error)
        elif self._stall_over is not None and (
            not api_reachable or last_error != self._stall_over[1]
        ):
            self._stall_over = None
        self.api_reachable = api_reachable
        self._success.see(last_success)
        self._acct_read.see(self._when_acct_read(tree))
        self.received = self._clock()
        # No accounting files, or none read yet: no pmtaAcctReadAge in the tree, none served.
        return LiveTree.over(tree, self._values)

    def _when_acct_read(self, tree: OidTree) -> datetime | None:
        value = tree.get(self._acct_last_read)
        if value is None or not isinstance(value.value, bytes):
            return None
        return utc_from_date_and_time(value.value)

    # -- what is true now ---------------------------------------------------------------------

    def silence(self) -> float:
        """Seconds since the last tree arrived."""
        return max(0.0, self._clock() - self.received)

    def stalled(self) -> bool:
        """True when no poll result arrived for more than `stale_after` seconds."""
        return self.silence() > self.stale_after

    def reachable(self) -> bool:
        """The last poll reached the API, and polling has not stalled since."""
        return self.api_reachable and not self.stalled()

    def data_age(self) -> float | None:
        """Seconds since the last good poll (None before the first)."""
        return self._success.age()

    def stall_text(self, *, ended: bool = False) -> str:
        """pmtaAgentLastError while stalled (`ended`: as the stall ends, for after it)."""
        how = "polling stalled" if ended else "polling has stalled, serving the last data"
        silence = int(self.silence())
        return f"no poll result for {silence} s (more than {self.stale_after:g} s): {how}"

    # -- the live values ------------------------------------------------------------------------

    def _reachable_value(self) -> Value:
        return _TRUE if self.reachable() else _FALSE

    def _age_value(self) -> Value | None:
        age = self.data_age()
        return None if age is None else gauge32(int(age))

    def _acct_read_value(self) -> Value | None:
        age = self._acct_read.age()
        return None if age is None else gauge32(int(age))

    def _error_value(self) -> Value | None:
        if self.stalled():
            return utf8_text(self.stall_text())
        return None if self._stall_over is None else utf8_text(self._stall_over[0])
