"""The SNMP view of PowerMTA: poll results -> immutable OID trees and notifications.

Shared by the AgentX subagent and the standalone agent. `SnmpView.update` runs in the poller's
thread (or the poll worker): it builds the next tree off the request path and swaps it in with
one reference assignment, then hands raise/clear notifications to the registered senders.
`PollWatch` is the serving side: it serves each delivered tree with its health objects computed
when read (`pmta_snmp.mib.live`), notices when trees stop arriving, and then raises pmtaApiLost
itself. `OutcomesFeed` runs the deliverability outcomes engine beside the poller (where the trees
are built: the poll worker, or the agent process with thread isolation); each tree takes the
engine's counters as last saved with its reading position, so a restarted worker continues from
exactly what was served and no Counter64 ever goes back.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pmta_snmp.config import AcctSection, Thresholds
from pmta_snmp.mib.health import AgentHealth, counters_restarted
from pmta_snmp.mib.layout import (
    ENTERPRISE,
    Notification,
    base_oid,
    iter_varbinds,
    layout,
    notification_varbinds,
    object_prefixes,
    source_ip_varbinds,
)
from pmta_snmp.mib.live import LiveHealth
from pmta_snmp.mib.snapshot import Oid, OidTree, Value
from pmta_snmp.model import Snapshot, warning_kinds
from pmta_snmp.notify import Condition, Event, Rules
from pmta_snmp.outcomes.view import OutcomesView
from pmta_snmp.poller import PollResult

if TYPE_CHECKING:
    from pmta_snmp.outcomes.engine import OutcomesEngine

log = logging.getLogger(__name__)

NotificationSender = Callable[[Oid, list[tuple[Oid, Value]]], None]
"""Called with (notification OID, its varbinds without snmpTrapOID.0); must not block."""

_NAMES: dict[tuple[Condition, bool], Notification] = {
    (Condition.QUEUE_HIGH, True): Notification.QUEUE_HIGH,
    (Condition.QUEUE_HIGH, False): Notification.QUEUE_NORMAL,
    (Condition.API_DOWN, True): Notification.API_LOST,
    (Condition.API_DOWN, False): Notification.API_RESTORED,
    (Condition.LICENSE_EXPIRING, True): Notification.LICENSE_EXPIRING,
    (Condition.LICENSE_EXPIRING, False): Notification.LICENSE_OK,
    (Condition.BLOCKLISTED, True): Notification.SOURCE_IP_BLOCKLISTED,
    (Condition.BLOCKLISTED, False): Notification.SOURCE_IP_BLOCKLIST_CLEAR,
}


_SWEEP_EVERY = 100
_builds = 0


def _build_quietly(build: Callable[[], OidTree]) -> OidTree:
    """Build a tree without garbage-collection pauses, then freeze what survives.

    A rebuild allocates hundreds of thousands of acyclic tuples; collecting while it runs
    stalls the request thread for tens of milliseconds. Frozen objects are skipped by later
    collections and are still freed by reference counting when the tree is replaced. Every
    `_SWEEP_EVERY` builds everything is unfrozen and collected once, so cyclic garbage that
    happened to be frozen (tracebacks of failed polls) cannot accumulate.
    """
    global _builds  # noqa: PLW0603 - one interpreter-wide GC policy
    enabled = gc.isenabled()
    gc.disable()
    try:
        tree = build()
    finally:
        if enabled:
            gc.enable()
    _builds += 1
    if _builds % _SWEEP_EVERY == 0:
        gc.unfreeze()
        gc.collect()
    gc.freeze()
    return tree


def _log_warnings(warnings: tuple[str, ...]) -> None:
    """Say what PowerMTA's answer lacked when that changes (not on every poll)."""
    if warnings:
        log.warning("PowerMTA's answer has %d warning(s): %s", len(warnings), "; ".join(warnings))
    else:
        log.info("PowerMTA's answer has no warnings any more")


AGENT_STATE_SUBDIR = "agent"
"""Where in the state directory the agents keep their state (outcomes, the standalone agent's
SNMP engine ID), apart from the exporter's."""


def agent_state_dir(section: AcctSection) -> Path:
    """The agents' state directory: `AGENT_STATE_SUBDIR` of `[acct] state_dir` (`--state-dir`),
    else of the plugins' default state directory."""
    from pmta_snmp.state import default_state_dir

    base = Path(section.state_dir) if section.state_dir else default_state_dir()
    return base / AGENT_STATE_SUBDIR


class OutcomesFeed:
    """The outcomes engine of an agent (`[acct] files` / `--acct-file`), read in its own thread.

    `view()` gives the counters as of the engine's last save, i.e. together with the reading
    position a restart continues from: what one worker served, the next one never undercuts.
    An engine that cannot start (unusable state directory, bad provider map) does not stop the
    agent: the view then says why in its warnings (pmtaAcctWarnings) and counts nothing.

    The agents keep their state in the subdirectory `agent` of the state directory
    (`AGENT_STATE_SUBDIR`): an exporter given the same configuration follows the same files
    with an engine and a state file of its own.
    """

    def __init__(self, section: AcctSection) -> None:
        from pmta_snmp.outcomes.engine import EngineSettings, OutcomesEngine

        self.files = section.files or ""
        self.engine: OutcomesEngine | None = None
        self._failed: OutcomesView | None = None
        try:
            self.engine = OutcomesEngine(EngineSettings.from_config(
                section, state_dir=str(agent_state_dir(section))))
        except (ValueError, OSError) as exc:
            log.error("deliverability outcomes from %s cannot be read: %s", self.files, exc)
            self._failed = OutcomesView.empty().with_changes(
                files=self.files, warnings=(f"cannot follow the accounting files: {exc}",))

    @classmethod
    def of(cls, section: AcctSection) -> OutcomesFeed | None:
        """A feed when the configuration names accounting files, else None."""
        return cls(section) if section.files else None

    def start(self) -> None:
        """Start reading (a thread of the engine's own)."""
        if self.engine is not None:
            self.engine.start()
            log.info("deliverability outcomes from %s (state %s)", self.files,
                     self.engine.state_path)

    def stop(self) -> None:
        """Stop reading and save the reading position with the counters."""
        if self.engine is not None:
            self.engine.stop()

    def view(self) -> OutcomesView:
        """The counters as last saved (any thread)."""
        if self.engine is None:
            assert self._failed is not None
            return self._failed
        return self.engine.saved_view


class SnmpView:
    """The current OID tree (read from any thread) and the notification rules."""

    def __init__(
        self,
        *,
        thresholds: Thresholds | None = None,
        enterprise: int = ENTERPRISE,
        outcomes: Callable[[], OutcomesView | None] | None = None,
    ) -> None:
        self.thresholds = thresholds or Thresholds()
        self.enterprise = enterprise
        self.outcomes = outcomes
        """Where each build takes the deliverability outcomes from (None: no such tables)."""
        self.base: Oid = base_oid(enterprise)
        self._objects = object_prefixes(enterprise)
        self.rules = Rules(self.thresholds)
        self.senders: list[NotificationSender] = []
        self.started_at = datetime.now(UTC)
        self._discontinuity: datetime | None = None
        self._previous: Snapshot | None = None
        self.health = AgentHealth(started_at=self.started_at)
        self.tree: OidTree = self._build(None, self.health, self._outcomes())

    def _build(self, snapshot: Snapshot | None, health: AgentHealth,
               outcomes: OutcomesView | None = None) -> OidTree:
        items = iter_varbinds(
            snapshot, health, thresholds=self.thresholds, enterprise=self.enterprise,
            outcomes=outcomes,
        )
        # Sorted, unique and range-checked by construction; packed as they come.
        return OidTree.from_sorted(items, self._objects)

    def _outcomes(self) -> OutcomesView | None:
        return None if self.outcomes is None else self.outcomes()

    @property
    def discontinuity(self) -> datetime | None:
        """When PowerMTA's traffic totals last started afresh as this view saw them."""
        return self._discontinuity

    def resume(self, previous: Snapshot | None, discontinuity: datetime | None) -> None:
        """Continue the counters of an earlier view (a restarted poll worker): with its last
        good snapshot and discontinuity time, a restart is not a counter reset."""
        if previous is not None and discontinuity is not None:
            self._previous = previous
            self._discontinuity = discontinuity

    def current(self) -> OidTree:
        """The tree to answer from right now (a getter for the AgentX/SNMP handlers)."""
        return self.tree

    def update(self, result: PollResult) -> list[Event]:
        """Rebuild the tree for a poll result, swap it in, send notifications."""
        now = datetime.now(UTC)
        snap = result.snapshot
        if result.api_reachable and snap is not None and snap is not self._previous:
            if counters_restarted(self._previous, snap):
                self._discontinuity = now
            if warning_kinds(snap.warnings) != warning_kinds(
                self._previous.warnings if self._previous else ()
            ):
                _log_warnings(snap.warnings)
            self._previous = snap
        age = result.data_age(now)
        self.health = AgentHealth(
            api_reachable=result.api_reachable,
            last_success=result.last_success,
            data_age_seconds=age,
            poll_successes=result.successes,
            poll_failures=result.failures,
            consecutive_failures=result.consecutive_failures,
            last_error=result.last_error or "",
            started_at=self.started_at,
            counter_discontinuity=self._discontinuity,
        )
        outcomes = self._outcomes()
        self.tree = _build_quietly(lambda: self._build(snap, self.health, outcomes))
        events = self.rules.evaluate(
            snap,
            consecutive_failures=result.consecutive_failures,
            api_error=result.last_error,
            today=now.date(),
        )
        events += self.rules.evaluate_outcomes(outcomes)
        for event in events:
            self._send(event, snap, outcomes)
        return events

    def _send(self, event: Event, snap: Snapshot | None, outcomes: OutcomesView | None) -> None:
        name = _NAMES[(event.condition, event.raised)]
        if event.condition is Condition.BLOCKLISTED:
            if outcomes is None:
                return
            found = source_ip_varbinds(name, outcomes, event.key, thresholds=self.thresholds,
                                       enterprise=self.enterprise)
            if found is None:  # evaluated on this very view: the row is there
                return
            varbinds = found
        else:
            varbinds = notification_varbinds(
                name, snap, self.health, thresholds=self.thresholds, enterprise=self.enterprise
            )
        trap_oid = varbinds[0][1].value
        assert isinstance(trap_oid, tuple)
        log.warning("notification %s: %s", name.value, event.text)
        for sender in self.senders:
            try:
                sender(trap_oid, varbinds[1:])
            except Exception:  # one broken sink must not stop the others
                log.exception("sending %s failed", name.value)


class PollWatch:
    """The serving side of polling, the same for a poll worker and a poll thread.

    `arrived` takes every tree the poller delivers and serves it with live health
    (`LiveHealth`); `notification` forwards the poller's notifications; `check`, called
    periodically, notices that no tree came for `stale_after` seconds: pmtaAgentApiReachable
    then reads false and pmtaApiLost is sent, by this side, since the poller cannot. Raise and
    clear stay one pair per fault: a stall raised here is cleared here by the next tree that
    reached the API, unless the poller's own rules raise the API condition meanwhile (their
    pmtaApiLost is then not sent a second time, and their pmtaApiRestored clears it). All
    methods run on the agent's event loop; `current` may be called from any thread.
    """

    def __init__(
        self,
        initial: OidTree,
        send: NotificationSender,
        *,
        stale_after: float,
        thresholds: Thresholds | None = None,
        enterprise: int = ENTERPRISE,
        live: LiveHealth | None = None,
    ) -> None:
        self.live = live or LiveHealth(stale_after=stale_after, enterprise=enterprise)
        self.tree: OidTree = self.live.install(initial, api_reachable=False, last_success=None)
        self._send = send
        self._thresholds = thresholds or Thresholds()
        self._enterprise = enterprise
        self._lost_oid = layout(enterprise).oid(Notification.API_LOST)
        self._owns_lost = False  # pmtaApiLost sent here for a stall, not yet cleared
        self._poller_raised = False  # the poller's rules hold the API condition raised
        self._consecutive = 0
        self._last_error = ""
        self._outage_error = ""  # why the fault raised here lasted: its pmtaApiRestored says so
        self._stall_logged = False

    def current(self) -> OidTree:
        """The tree to answer from right now (any thread)."""
        return self.tree

    def arrived(
        self,
        tree: OidTree,
        *,
        api_reachable: bool,
        last_success: datetime | None,
        consecutive_failures: int,
        last_error: str,
        api_raised: bool,
    ) -> None:
        """A tree from the poller (before the notifications of the same poll)."""
        silence = self.live.silence()
        if self._owns_lost and self.live.stalled():  # the whole stall, now that it ends
            self._outage_error = self.live.stall_text(ended=True)
        self.tree = self.live.install(
            tree, api_reachable=api_reachable, last_success=last_success, last_error=last_error
        )
        if self._stall_logged:
            self._stall_logged = False
            log.warning("poll results arrive again after %.0f s without", silence)
        self._poller_raised = api_raised
        self._consecutive = consecutive_failures
        self._last_error = last_error
        if self._owns_lost and not api_reachable and last_error:
            self._outage_error = last_error  # the stall ended, the API is still out of reach
        if self._owns_lost and api_reachable and not api_raised:
            self._owns_lost = False
            self._notify(Notification.API_RESTORED, consecutive_failures, self._outage_error)

    def notification(self, trap_oid: Oid, varbinds: list[tuple[Oid, Value]]) -> None:
        """A notification from the poller's rules: sent on, unless it is the pmtaApiLost of a
        fault already raised here (the poller's rules now hold it; their clear will come)."""
        if trap_oid == self._lost_oid and self._owns_lost:
            self._owns_lost = False
            return
        self._send(trap_oid, varbinds)

    def check(self) -> bool:
        """Whether polling has stalled; raise pmtaApiLost the first time (unless raised)."""
        if not self.live.stalled():
            return False
        if not self._stall_logged:
            self._stall_logged = True
            log.error("%s", self.live.stall_text())
        if not self._owns_lost and not self._poller_raised:
            self._owns_lost = True
            self._outage_error = self.live.stall_text()
            self._notify(Notification.API_LOST, self._consecutive, self._outage_error)
        return True

    def _notify(self, name: Notification, consecutive: int, error: str) -> None:
        health = AgentHealth(
            api_reachable=self.live.reachable(),
            consecutive_failures=consecutive,
            last_error=error,
        )
        varbinds = notification_varbinds(
            name, None, health, thresholds=self._thresholds, enterprise=self._enterprise
        )
        trap_oid = varbinds[0][1].value
        assert isinstance(trap_oid, tuple)
        log.warning("notification %s: %s", name.value, error or "PowerMTA API ok")
        try:
            self._send(trap_oid, varbinds[1:])
        except Exception:  # a broken sink must not stop the watch
            log.exception("sending %s failed", name.value)
