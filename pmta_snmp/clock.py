"""Ages of wall-clock events, measured on the monotonic clock.

Poll times are UTC datetimes because they are published as such (`pmtaAgentLastSuccess`,
`pmta_last_success_timestamp_seconds`). An age computed as "wall clock now minus the event"
jumps with every step of the wall clock (an NTP correction, a VM resumed after a pause): a step
forward would report fresh data as an hour old, a step back would report stale data as fresh.
`Since` reads the event's age off the wall clock once, when the event is first seen (moments
after it happened), and lets it grow on the monotonic clock from there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Since", "utc_now"]


def utc_now() -> datetime:
    """The UTC wall clock (the default `wall` of `Since`)."""
    return datetime.now(UTC)


class Since:
    """The age of the latest event passed to `see`, immune to wall-clock steps after it."""

    __slots__ = ("_at", "_clock", "_wall", "_when")

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._when: datetime | None = None
        self._at = 0.0  # the monotonic time that corresponds to `_when`

    def see(self, when: datetime | None) -> None:
        """Take note of the event's wall-clock time; an event already seen keeps its anchor."""
        if when == self._when:
            return
        self._when = when
        if when is not None:
            ago = (self._wall() - when).total_seconds()
            self._at = self._clock() - max(0.0, ago)

    def age(self) -> float | None:
        """Seconds since the event (None before the first one)."""
        if self._when is None:
            return None
        return max(0.0, self._clock() - self._at)
