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


class Condition(StrEnum):
    """The watched conditions; each has a raise and a clear notification."""

    QUEUE_HIGH = "queue"
    API_DOWN = "api"
    LICENSE_EXPIRING = "license"


@dataclass(frozen=True, slots=True)
class Event:
    """A condition changed: `raised` True for the raise notification, False for the clear."""

    condition: Condition
    raised: bool
    value: int
    threshold: int
    text: str


@dataclass
class Rules:
    """Remembers which conditions are raised; `evaluate` returns only the changes."""

    thresholds: Thresholds
    raised: set[Condition] = field(default_factory=set)

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
