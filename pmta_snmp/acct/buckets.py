"""Per-minute counters over a sliding window, kept in the plugin state between runs.

The bounce, deferral and TLS plugins read only new accounting records each run, but judge rates
over a window (an hour of hard bounces, 15 minutes of deferrals). They add each record to the
minute it was logged in, under one key per dimension they watch::

    buckets.add_event(minute, {"sender_domain": rec.sender_domain,
                               "source_ip": rec.dlv_source_ip,
                               "domain_ip": pair_key(rec.rcpt_domain, rec.dlv_source_ip)},
                      ["t"] if rec.type == "t" else [rec.type])
    buckets.rates("domain_ip", numerator={"t"}, denominator={"d", "b", "t"})

The state stays bounded: minutes older than the window are pruned, and each dimension keeps its
``max_keys`` busiest keys; the rest are folded into the key ``(other)`` (so dimension totals
stay exact) and counted in ``dropped``.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["OTHER_KEY", "MinuteBuckets", "Rate", "epoch_minute", "pair_key", "split_pair"]

#: Key that absorbs the keys dropped by the per-dimension cap.
OTHER_KEY = "(other)"
_PAIR_SEP = "|"

# minute → dimension → key → counter → count
_Tree = dict[int, dict[str, dict[str, dict[str, int]]]]


def epoch_minute(when: datetime | float | None = None) -> int:
    """Minutes since the Unix epoch of an aware datetime or Unix time (default: now)."""
    if when is None:
        when = time.time()
    seconds = when.timestamp() if isinstance(when, datetime) else float(when)
    return int(seconds // 60)


def pair_key(first: str, second: str) -> str:
    """One key for a pair of values, e.g. (recipient domain, dlvSourceIp)."""
    return f"{first}{_PAIR_SEP}{second}"


def split_pair(key: str) -> tuple[str, str]:
    """Inverse of :func:`pair_key` (the first value is split at the last separator)."""
    first, _, second = key.rpartition(_PAIR_SEP)
    return first, second


@dataclass(frozen=True, slots=True)
class Rate:
    """numerator / denominator for one key over the window; ``value`` is None when the
    denominator is 0."""

    key: str
    numerator: int
    denominator: int

    @property
    def value(self) -> float | None:
        """The ratio in 0..1 (or None)."""
        return self.numerator / self.denominator if self.denominator else None

    @property
    def percent(self) -> float | None:
        """The ratio in percent (or None)."""
        v = self.value
        return None if v is None else 100.0 * v


class MinuteBuckets:
    """Counters per (minute, dimension, key, counter) over the last ``window_minutes``."""

    def __init__(self, window_minutes: int = 60, *, max_keys: int = 1000) -> None:
        if window_minutes < 1 or max_keys < 2:
            raise ValueError("window_minutes must be >= 1 and max_keys >= 2")
        self.window_minutes = window_minutes
        self.max_keys = max_keys
        self._minutes: _Tree = {}
        #: Keys folded into OTHER_KEY by the cap, per dimension, since the state was created.
        self.dropped: dict[str, int] = {}

    # -- adding ----------------------------------------------------------------------------

    def in_window(self, minute: int, now_minute: int | None = None) -> bool:
        """True if ``minute`` is inside the window ending at ``now_minute`` (default: now)."""
        now = epoch_minute() if now_minute is None else now_minute
        return minute > now - self.window_minutes

    def add(self, minute: int, dimension: str, key: str, counter: str, n: int = 1) -> None:
        """Add ``n`` to one counter."""
        keys = self._minutes.setdefault(minute, {}).setdefault(dimension, {})
        counters = keys.setdefault(key, {})
        counters[counter] = counters.get(counter, 0) + n

    def add_event(self, minute: int, keys: Mapping[str, str | None],
                  counters: Iterable[str] | Mapping[str, int], *,
                  now_minute: int | None = None) -> bool:
        """Count one event (a record) under each dimension's key; an empty or None key skips
        that dimension. With ``now_minute``, an event older than the window is ignored (False).
        """
        if now_minute is not None and not self.in_window(minute, now_minute):
            return False
        items = list(counters.items()) if isinstance(counters, Mapping) else [
            (c, 1) for c in counters]
        # add() inlined: a catch-up adds tens of thousands of events per run.
        dims: dict[str, dict[str, dict[str, int]]] | None = None
        for dimension, key in keys.items():
            if key:
                if dims is None:
                    dims = self._minutes.setdefault(minute, {})
                found = dims.setdefault(dimension, {}).setdefault(key, {})
                for counter, n in items:
                    found[counter] = found.get(counter, 0) + n
        return True

    def add_events(self, events: Iterable[tuple[int, Iterable[tuple[str, str | None]],
                                                Iterable[str], int]], *,
                   now_minute: int | None = None) -> None:
        """Many :meth:`add_event` at once: (minute, ((dimension, key), ...), counters, n) adds
        ``n`` to each counter under each non-empty key; with ``now_minute``, events older
        than the window are ignored."""
        minutes = self._minutes
        oldest = None if now_minute is None else now_minute - self.window_minutes
        for minute, keys, counters, n in events:
            if oldest is not None and minute <= oldest:
                continue
            dims = minutes.get(minute)
            if dims is None:
                dims = minutes[minute] = {}
            for dimension, key in keys:
                if not key:
                    continue
                by_key = dims.get(dimension)
                if by_key is None:
                    by_key = dims[dimension] = {}
                found = by_key.get(key)
                if found is None:
                    found = by_key[key] = {}
                for counter in counters:
                    found[counter] = found.get(counter, 0) + n

    def merge(self, other: MinuteBuckets) -> None:
        """Add all of ``other``'s counts (e.g. this run's records into the stored state)."""
        for minute, dims in other._minutes.items():
            for dimension, keys in dims.items():
                for key, counters in keys.items():
                    for counter, n in counters.items():
                        self.add(minute, dimension, key, counter, n)
        for dimension, n in other.dropped.items():
            self.dropped[dimension] = self.dropped.get(dimension, 0) + n

    # -- bounding --------------------------------------------------------------------------

    def prune(self, now_minute: int | None = None) -> None:
        """Drop minutes outside the window and cap the keys per dimension; call before saving."""
        now = epoch_minute() if now_minute is None else now_minute
        for minute in [m for m in self._minutes if not self.in_window(m, now)]:
            del self._minutes[minute]
        for dimension in self.dimensions():
            self._cap(dimension)

    def _cap(self, dimension: str) -> None:
        volume: dict[str, int] = {}
        for dims in self._minutes.values():
            for key, counters in dims.get(dimension, {}).items():
                volume[key] = volume.get(key, 0) + sum(counters.values())
        if len(volume) <= self.max_keys:
            return
        ranked = sorted((k for k in volume if k != OTHER_KEY),
                        key=lambda k: (-volume[k], k))
        doomed = set(ranked[self.max_keys - 1:])
        self.dropped[dimension] = self.dropped.get(dimension, 0) + len(doomed)
        for dims in self._minutes.values():
            keys = dims.get(dimension)
            if not keys:
                continue
            for key in doomed & keys.keys():
                other = keys.setdefault(OTHER_KEY, {})
                for counter, n in keys.pop(key).items():
                    other[counter] = other.get(counter, 0) + n

    # -- reading ---------------------------------------------------------------------------

    def minutes(self) -> list[int]:
        """Minutes holding counts, oldest first."""
        return sorted(self._minutes)

    def dimensions(self) -> list[str]:
        """Dimensions with counts."""
        return sorted({d for dims in self._minutes.values() for d in dims})

    def totals(self, dimension: str, *, now_minute: int | None = None,
               minutes: int | None = None) -> dict[str, dict[str, int]]:
        """key → counter → sum over the last ``minutes`` (default: the whole window)."""
        now = epoch_minute() if now_minute is None else now_minute
        span = self.window_minutes if minutes is None else minutes
        out: dict[str, dict[str, int]] = {}
        for minute, dims in self._minutes.items():
            if minute <= now - span:
                continue
            for key, counters in dims.get(dimension, {}).items():
                acc = out.setdefault(key, {})
                for counter, n in counters.items():
                    acc[counter] = acc.get(counter, 0) + n
        return out

    def rates(self, dimension: str, numerator: Collection[str], denominator: Collection[str],
              *, now_minute: int | None = None, minutes: int | None = None,
              min_volume: int = 0) -> dict[str, Rate]:
        """Per key: sum(numerator counters) / sum(denominator counters) over the window, for
        keys whose denominator reaches ``min_volume`` (small samples make noisy rates)."""
        out: dict[str, Rate] = {}
        totals = self.totals(dimension, now_minute=now_minute, minutes=minutes)
        for key, counters in totals.items():
            den = sum(counters.get(c, 0) for c in denominator)
            if den < min_volume or den == 0:
                continue
            num = sum(counters.get(c, 0) for c in numerator)
            out[key] = Rate(key, num, den)
        return out

    # -- persistence -----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A plain dict for the state file (minute keys become strings)."""
        return {
            "v": 1,
            "window": self.window_minutes,
            "max_keys": self.max_keys,
            "minutes": {str(m): dims for m, dims in sorted(self._minutes.items())},
            "dropped": dict(self.dropped),
        }

    @classmethod
    def from_json(cls, data: object, *, window_minutes: int = 60,
                  max_keys: int = 1000) -> MinuteBuckets:
        """Rebuild from :meth:`to_json` output. The window and cap given here win (the plugin's
        options may have changed); malformed parts are dropped rather than raising."""
        buckets = cls(window_minutes, max_keys=max_keys)
        if not isinstance(data, Mapping):
            return buckets
        raw = data.get("minutes")
        if isinstance(raw, Mapping):
            for minute_text, dims in raw.items():
                try:
                    minute = int(minute_text)
                except (TypeError, ValueError):
                    continue
                if not isinstance(dims, Mapping):
                    continue
                for dimension, keys in dims.items():
                    if not isinstance(keys, Mapping):
                        continue
                    for key, counters in keys.items():
                        if not isinstance(counters, Mapping):
                            continue
                        for counter, n in counters.items():
                            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                                buckets.add(minute, str(dimension), str(key), str(counter), n)
        dropped = data.get("dropped")
        if isinstance(dropped, Mapping):
            buckets.dropped = {str(k): v for k, v in dropped.items()
                               if isinstance(v, int) and not isinstance(v, bool)}
        return buckets
