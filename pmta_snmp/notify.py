"""Threshold rules with hysteresis: each condition is raised once and cleared once.

Pure logic over poll results; the agent turns the events into SNMP notifications
(`pmta_snmp.mib.layout`). Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from pmta_snmp.config import Thresholds
from pmta_snmp.model import Snapshot
from pmta_snmp.outcomes.view import OutcomesView


class Condition(StrEnum):
    """The watched conditions; each has a raise and a clear notification."""

    QUEUE_HIGH = "queue"
    API_DOWN = "api"
    LICENSE_EXPIRING = "license"
    BLOCKLISTED = "blocklist"
    """Per source IP (`Event.key`): rejections naming a blocklist in the last hour."""


@dataclass(frozen=True, slots=True)
class Event:
    """A condition changed: `raised` True for the raise notification, False for the clear."""

    condition: Condition
    raised: bool
    value: int
    threshold: int
    text: str
    key: str = ""
    """What the condition is about when there can be several (a source IP), else empty."""


@dataclass
class Rules:
    """Remembers which conditions are raised; `evaluate` returns only the changes."""

    thresholds: Thresholds
    raised: set[Condition] = field(default_factory=set)
    listed: set[str] = field(default_factory=set)
    """Source IPs whose blocklist condition is raised."""

    def carried(self) -> frozenset[str]:
        """The raised conditions as text, for a restarted poll worker (`restore`)."""
        return frozenset({c.value for c in self.raised}
                         | {f"{Condition.BLOCKLISTED.value}:{ip}" for ip in self.listed})

    def restore(self, carried: frozenset[str]) -> None:
        """Take over the raised conditions of `carried` (unknown texts are ignored)."""
        values = {c.value: c for c in Condition}
        prefix = f"{Condition.BLOCKLISTED.value}:"
        self.raised = {values[t] for t in carried if t in values}
        self.listed = {t.removeprefix(prefix) for t in carried if t.startswith(prefix)}

    def _edge(
        self,
        cond: Condition,
        *,
        above: bool,
        below: bool,
        value: int,
        raise_at: int,
        clear_at: int,
        text: str,
    ) -> list[Event]:
        if cond not in self.raised and above:
            self.raised.add(cond)
            return [Event(cond, True, value, raise_at, text)]
        if cond in self.raised and below:
            self.raised.discard(cond)
            return [Event(cond, False, value, clear_at, text)]
        return []

    def evaluate(
        self,
        snapshot: Snapshot | None,
        *,
        consecutive_failures: int,
        api_error: str | None,
        today: date,
    ) -> list[Event]:
        """Events for this poll: the API state, then (with fresh data) the queue and license."""
        t = self.thresholds
        api_ok = consecutive_failures == 0
        events = self._edge(
            Condition.API_DOWN,
            above=consecutive_failures >= t.api_failures_raise,
            below=api_ok,
            value=consecutive_failures,
            raise_at=t.api_failures_raise,
            clear_at=0,
            text=(api_error or "PowerMTA API unreachable") if not api_ok else "PowerMTA API ok",
        )
        if snapshot is None or not api_ok:
            return events
        depth = snapshot.status.queued_recipients
        events += self._edge(
            Condition.QUEUE_HIGH,
            above=depth > t.queue_rcpt_raise,
            below=depth <= t.queue_rcpt_clear,
            value=depth,
            raise_at=t.queue_rcpt_raise,
            clear_at=t.queue_rcpt_clear,
            text=f"{depth} recipients queued",
        )
        lic = snapshot.license
        if lic is not None:
            left = lic.days_left(today)
            expiring = left is not None and left <= t.license_days_raise
            fine = left is None or left > t.license_days_clear
            events += self._edge(
                Condition.LICENSE_EXPIRING,
                above=expiring,
                below=fine,
                value=left if left is not None else 2**31 - 1,
                raise_at=t.license_days_raise,
                clear_at=t.license_days_clear,
                text="license never expires" if left is None else f"license: {left} days left",
            )
        return events

    def evaluate_outcomes(self, outcomes: OutcomesView | None) -> list[Event]:
        """Per source IP: raised when its rejections naming a blocklist in the last hour reach
        `blocklist_raise`, cleared when the last hour has none. Not cleared while the first
        start's read-back runs (the last hour is read last), nor for an address without a
        row (folded into the cap's `(other)`): no data is no all-clear."""
        if outcomes is None:
            return []
        raise_at = self.thresholds.blocklist_raise
        events: list[Event] = []
        for row in outcomes.source_ips:
            if row.family not in (4, 6):
                continue
            ip, hour = row.source_ip, row.blocklist_rejections_last_hour
            top = row.blocklists[0][0] if row.blocklists else ""
            if ip not in self.listed and hour >= raise_at:
                self.listed.add(ip)
                events.append(Event(Condition.BLOCKLISTED, True, hour, raise_at,
                                    f"{ip}: {hour} rejections naming {top or 'a blocklist'} "
                                    "in the last hour", key=ip))
            elif ip in self.listed and hour == 0 and not outcomes.backfilling:
                self.listed.discard(ip)
                events.append(Event(Condition.BLOCKLISTED, False, 0, 0,
                                    f"{ip}: no rejection naming a blocklist in the last hour",
                                    key=ip))
        return events
