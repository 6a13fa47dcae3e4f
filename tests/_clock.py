"""A fake `time` module for tests of deadlines and waits: time moves only when the code sleeps
or the test says so, so a timeout path is taken (or not) whatever the machine's speed.

Install it in place of one module's `time` (`monkeypatch.setattr(state, "time", clock)`);
every other module keeps the real clock.
"""

from __future__ import annotations

import time as _real_time


class FakeTime:
    """`monotonic()` and `sleep()` on a clock that only `sleep()` and `advance()` move; any
    other attribute (`time()`, `strftime`, ...) is the real `time` module's."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        """The fake monotonic clock."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Record the sleep and move the clock by it (returns at once)."""
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        """Move the clock as if `seconds` passed outside any sleep."""
        self.now += seconds

    def __getattr__(self, name: str) -> object:
        return getattr(_real_time, name)
