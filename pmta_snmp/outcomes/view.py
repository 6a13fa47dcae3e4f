"""What the outcomes engine publishes: one immutable picture of the deliverability counters.

:class:`OutcomesView` is built by the engine after each read of the accounting files and handed
to whoever publishes it (the exporter's ``/metrics``, ``poll --json``, the agents' MIB tables).
It holds plain values only (tuples of frozen rows, no dicts, no locks), so it can be passed
between threads, pickled to another process and compared in tests. Counters are cumulative since
``counting_since`` (the counters' discontinuity time: they restart from zero only when the
engine's state is lost); ``last_hour``/``last_day`` are sums over the minutes of the records'
``timeLogged``. Every row of a capped dimension beyond its cap is summed into a row named
``(other)`` (:data:`OTHER`).

Results: ``delivered`` (``d``), ``hard_bounce``/``soft_bounce``/``block_bounce`` (``b`` by the
bounce classes of :mod:`pmta_snmp.acct.bounce`), ``expired`` (``b`` whose bounce category is
``message-expired`` or whose status is x.4.7), ``deferred`` (``t``, one per recipient and
attempt). ``tq`` records are only counted in ``records``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Final

from pmta_snmp.addresses import packed_address, source_ip_text

__all__ = [
    "DELAY_BOUNDS",
    "FINAL_RESULTS",
    "OTHER",
    "RESULTS",
    "BlocklistCount",
    "ComplaintCount",
    "DelayHistogram",
    "OutcomesView",
    "ProviderRow",
    "ReasonCount",
    "ResultCounts",
    "SendingDomainRow",
    "SourceIpOutcome",
    "SourceIpRow",
    "bucket_index",
    "hundredths_of_percent",
    "source_ip_text",
]

RESULTS: Final[tuple[str, ...]] = (
    "delivered", "hard_bounce", "soft_bounce", "block_bounce", "deferred", "expired")
"""Every result, in the order they are reported."""
FINAL_RESULTS: Final[tuple[str, ...]] = (
    "delivered", "hard_bounce", "soft_bounce", "block_bounce", "expired")
"""The results that end a recipient's delivery (the denominator of bounce rates)."""
OTHER: Final = "(other)"
"""Name of the row that sums the rows beyond a dimension's cap."""
DELAY_BOUNDS: Final[tuple[float, ...]] = (
    1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, 172800, 345600)
"""Upper bounds (seconds) of the delivery delay histogram's buckets; +Inf follows."""


def hundredths_of_percent(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` in hundredths of a percent (10000 = 100 %), rounded half up;
    0 when the denominator is 0. The unit of the MIB's rate gauges."""
    if denominator <= 0:
        return 0
    return (numerator * 10000 * 2 + denominator) // (denominator * 2)


@dataclass(frozen=True, slots=True)
class ResultCounts:
    """A count per result."""

    delivered: int = 0
    hard_bounce: int = 0
    soft_bounce: int = 0
    block_bounce: int = 0
    deferred: int = 0
    expired: int = 0

    @classmethod
    def of(cls, counts: Mapping[str, int]) -> ResultCounts:
        """From a result -> count mapping (unknown results are ignored)."""
        return cls(**{r: int(counts.get(r, 0)) for r in RESULTS})

    def get(self, result: str) -> int:
        """The count of one result (0 for an unknown name)."""
        return int(getattr(self, result, 0)) if result in RESULTS else 0

    def items(self) -> tuple[tuple[str, int], ...]:
        """(result, count) in :data:`RESULTS` order."""
        return tuple((r, self.get(r)) for r in RESULTS)

    def as_dict(self) -> dict[str, int]:
        """result -> count (every result)."""
        return dict(self.items())

    @property
    def final(self) -> int:
        """Recipients whose delivery ended: delivered, bounced or expired."""
        return sum(self.get(r) for r in FINAL_RESULTS)

    @property
    def bounced(self) -> int:
        """Bounces of any class, expiries included."""
        return self.hard_bounce + self.soft_bounce + self.block_bounce + self.expired

    @property
    def attempts(self) -> int:
        """Final results plus deferrals (the denominator of the deferral rate)."""
        return self.final + self.deferred

    def rate(self, result: str) -> int:
        """Share of ``result`` in hundredths of a percent: of the attempts for ``deferred``,
        of the final results for the others."""
        den = self.attempts if result == "deferred" else self.final
        return hundredths_of_percent(self.get(result), den)

    def __add__(self, other: ResultCounts) -> ResultCounts:
        return ResultCounts(*(a + b for a, b in zip(self._values(), other._values(), strict=True)))

    def _values(self) -> tuple[int, ...]:
        return tuple(self.get(r) for r in RESULTS)


@dataclass(frozen=True, slots=True)
class DelayHistogram:
    """Delivery delays (timeLogged - timeQueued, or totalSecondsQueued) of final records.

    ``counts[i]`` is the number of delays <= ``bounds[i]`` and > ``bounds[i-1]`` (not
    cumulative); the last count is the +Inf bucket (``len(counts) == len(bounds) + 1``)."""

    bounds: tuple[float, ...] = DELAY_BOUNDS
    counts: tuple[int, ...] = (0,) * (len(DELAY_BOUNDS) + 1)
    sum: float = 0.0

    @property
    def count(self) -> int:
        """Observations in all."""
        return sum(self.counts)

    def cumulative(self) -> tuple[tuple[float, int], ...]:
        """(upper bound, observations <= it) per bucket, +Inf (``float("inf")``) last: the
        Prometheus ``_bucket`` series."""
        out: list[tuple[float, int]] = []
        acc = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            acc += n
            out.append((bound, acc))
        return tuple(out)

    @classmethod
    def of(cls, delays: Iterable[float], bounds: tuple[float, ...] = DELAY_BOUNDS
           ) -> DelayHistogram:
        """A histogram of some delays (tests, examples)."""
        counts = [0] * (len(bounds) + 1)
        total = 0.0
        for d in delays:
            counts[bucket_index(d, bounds)] += 1
            total += d
        return cls(bounds, tuple(counts), total)


def bucket_index(delay: float, bounds: tuple[float, ...] = DELAY_BOUNDS) -> int:
    """The bucket of a delay: the first bound it does not exceed (len(bounds): +Inf)."""
    for i, bound in enumerate(bounds):
        if delay <= bound:
            return i
    return len(bounds)


@dataclass(frozen=True, slots=True)
class ReasonCount:
    """Non-delivered records (bounced, expired, deferred) of a provider with a reason class."""

    provider: str
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class ProviderRow:
    """One mailbox provider (id from the provider map, ``other`` for the rest)."""

    provider: str
    description: str = ""
    total: ResultCounts = ResultCounts()
    last_hour: ResultCounts = ResultCounts()
    last_day: ResultCounts = ResultCounts()
    complaints: int = 0
    complaints_last_hour: int = 0
    complaints_last_day: int = 0
    blocklist_rejections: int = 0
    blocklist_rejections_last_hour: int = 0
    blocklist_rejections_last_day: int = 0
    delay: DelayHistogram = DelayHistogram()

    def complaint_rate_last_hour(self) -> int:
        """Complaints per delivery over the last hour, in hundredths of a percent."""
        return hundredths_of_percent(self.complaints_last_hour, self.last_hour.delivered)

    def complaint_rate_last_day(self) -> int:
        """Complaints per delivery over the last day, in hundredths of a percent."""
        return hundredths_of_percent(self.complaints_last_day, self.last_day.delivered)


@dataclass(frozen=True, slots=True)
class SourceIpRow:
    """One source IP (``dlvSourceIp``; ``repSourceIp`` for complaints), all VirtualMTAs.

    ``family`` is 4 or 6 with ``address`` the packed bytes (20 for a zoned IPv6 address: the
    address, then the zone index), or 0 with b"" for the ``(other)`` row and texts that are
    no IP."""

    source_ip: str
    family: int = 0
    address: bytes = b""
    total: ResultCounts = ResultCounts()
    last_hour: ResultCounts = ResultCounts()
    last_day: ResultCounts = ResultCounts()
    complaints: int = 0
    complaints_last_hour: int = 0
    blocklist_rejections: int = 0
    blocklist_rejections_last_hour: int = 0
    blocklists: tuple[tuple[str, int], ...] = ()
    """(blocklist name, rejections naming it), most first."""


@dataclass(frozen=True, slots=True)
class SourceIpOutcome:
    """Records per (source IP, VirtualMTA, provider, result): the finest published series."""

    source_ip: str
    vmta: str
    provider: str
    result: str
    count: int


@dataclass(frozen=True, slots=True)
class SendingDomainRow:
    """One sending domain (the envelope sender's domain, ``orig``)."""

    sending_domain: str
    total: ResultCounts = ResultCounts()
    last_hour: ResultCounts = ResultCounts()
    last_day: ResultCounts = ResultCounts()
    complaints: int = 0


@dataclass(frozen=True, slots=True)
class ComplaintCount:
    """Spam complaints (``f`` records) per provider and sending domain."""

    provider: str
    sending_domain: str
    count: int


@dataclass(frozen=True, slots=True)
class BlocklistCount:
    """Rejections (bounces and deferrals) naming a blocklist, per source IP."""

    source_ip: str
    blocklist: str
    count: int


@dataclass(frozen=True, slots=True)
class OutcomesView:
    """The deliverability counters at one moment (see the module docstring)."""

    counting_since: datetime
    """When the counters started from zero (the discontinuity time)."""
    updated: datetime | None = None
    """When the files were last read (None: not yet)."""
    files: str = ""
    """The accounting files followed (a path or glob)."""
    totals: ResultCounts = ResultCounts()
    last_hour: ResultCounts = ResultCounts()
    last_day: ResultCounts = ResultCounts()
    complaints: int = 0
    complaints_last_hour: int = 0
    complaints_last_day: int = 0
    blocklist_rejections_total: int = 0
    providers: tuple[ProviderRow, ...] = ()
    source_ips: tuple[SourceIpRow, ...] = ()
    source_ip_outcomes: tuple[SourceIpOutcome, ...] = ()
    sending_domains: tuple[SendingDomainRow, ...] = ()
    complaints_by: tuple[ComplaintCount, ...] = ()
    blocklist_rejections: tuple[BlocklistCount, ...] = ()
    reasons: tuple[ReasonCount, ...] = ()
    delay: DelayHistogram = DelayHistogram()
    """All providers together."""
    records: tuple[tuple[str, int], ...] = ()
    """(record type, records read), every type met (``d b t tq f r`` ...)."""
    read_errors: int = 0
    """Accounting lines that could not be read (malformed rows)."""
    lag_seconds: float | None = None
    """How far the newest record read is behind the files' end (0 when caught up); None
    (unknown) until a read of the files has completed."""
    newest_record: datetime | None = None
    """timeLogged of the newest record read."""
    backfilling: bool = False
    """The first start's read-back of existing records is still under way."""
    other_items: tuple[tuple[str, int], ...] = ()
    """(dimension, distinct values summed into ``(other)``) for the capped dimensions."""
    warnings: tuple[str, ...] = ()
    extra: Mapping[str, int] = field(default_factory=dict, compare=False)
    """Reserved for additions that are not worth a field (kept empty today)."""

    # -- lookups ---------------------------------------------------------------------------

    def provider(self, provider_id: str) -> ProviderRow | None:
        """The row of one provider (None when it has no records)."""
        return next((p for p in self.providers if p.provider == provider_id), None)

    def source_ip(self, ip: str) -> SourceIpRow | None:
        """The row of one source IP (None when it has no records)."""
        return next((s for s in self.source_ips if s.source_ip == ip), None)

    def records_of(self, kind: str) -> int:
        """Records read of one type."""
        return dict(self.records).get(kind, 0)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (``poll --json``): times as ISO text, rows as dicts."""
        return _jsonable(self)  # type: ignore[return-value]

    # -- examples --------------------------------------------------------------------------

    @classmethod
    def empty(cls, since: datetime | None = None) -> OutcomesView:
        """A view with no records (what the engine shows before its first read)."""
        return cls(counting_since=since or datetime.now(UTC))

    @classmethod
    def example(cls) -> OutcomesView:
        """A small, fixed view for tests of the publishers (SNMP tables, /metrics, JSON):
        two providers, an IPv4 and an IPv6 source IP, an (other) row, complaints and
        blocklist rejections, consistent across its tables."""
        since = datetime(2025, 1, 14, 0, 0, tzinfo=UTC)
        now = datetime(2025, 1, 14, 9, 12, tzinfo=UTC)
        gmail = ResultCounts(delivered=900, hard_bounce=20, soft_bounce=5, block_bounce=10,
                             deferred=40, expired=1)
        ms = ResultCounts(delivered=450, hard_bounce=10, soft_bounce=2, block_bounce=30,
                          deferred=12, expired=0)
        gmail_h = ResultCounts(delivered=90, hard_bounce=2, block_bounce=1, deferred=4)
        ms_h = ResultCounts(delivered=45, hard_bounce=1, block_bounce=3, deferred=1)
        delay_g = DelayHistogram.of([2] * 500 + [40] * 400 + [90000] * 36)
        delay_m = DelayHistogram.of([3] * 400 + [700] * 92)
        providers = (
            ProviderRow("gmail", "Google (Gmail, Google Workspace)", gmail, gmail_h, gmail,
                        complaints=0, blocklist_rejections=0, delay=delay_g),
            ProviderRow("microsoft", "Microsoft (Outlook.com, Hotmail, Microsoft 365)", ms,
                        ms_h, ms, complaints=3, complaints_last_hour=1, complaints_last_day=3,
                        blocklist_rejections=25, blocklist_rejections_last_hour=3,
                        blocklist_rejections_last_day=25, delay=delay_m),
        )
        v4 = "198.51.100.20"
        v6 = "2001:db8::25"
        ip4 = ResultCounts(delivered=700, hard_bounce=15, soft_bounce=3, block_bounce=35,
                           deferred=30, expired=1)
        ip6 = ResultCounts(delivered=600, hard_bounce=14, soft_bounce=4, block_bounce=5,
                           deferred=20)
        ipo = ResultCounts(delivered=50, hard_bounce=1, deferred=2)  # the rest of the totals
        source_ips = (
            SourceIpRow(v4, *packed_address(v4), total=ip4,
                        last_hour=ResultCounts(delivered=70, hard_bounce=2, block_bounce=4,
                                               deferred=3),
                        last_day=ip4, complaints=3, complaints_last_hour=1,
                        blocklist_rejections=25, blocklist_rejections_last_hour=3,
                        blocklists=(("microsoft", 20), ("spamhaus", 5))),
            SourceIpRow(v6, *packed_address(v6), total=ip6,
                        last_hour=ResultCounts(delivered=60, hard_bounce=1, deferred=2),
                        last_day=ip6),
            SourceIpRow(OTHER, total=ipo, last_hour=ResultCounts(delivered=5), last_day=ipo),
        )
        sio = (
            SourceIpOutcome(v4, "vmta-a", "microsoft", "delivered", 400),
            SourceIpOutcome(v4, "vmta-a", "microsoft", "block_bounce", 30),
            SourceIpOutcome(v4, "vmta-a", "gmail", "delivered", 300),
            SourceIpOutcome(v6, "vmta-b", "gmail", "delivered", 600),
        )
        return cls(
            counting_since=since,
            updated=now,
            files="/var/log/pmta/acct-*.csv",
            totals=gmail + ms,
            last_hour=gmail_h + ms_h,
            last_day=gmail + ms,
            complaints=3,
            complaints_last_hour=1,
            complaints_last_day=3,
            blocklist_rejections_total=25,
            providers=providers,
            source_ips=source_ips,
            source_ip_outcomes=sio,
            sending_domains=(
                SendingDomainRow("news.example.com", gmail + ms, gmail_h + ms_h, gmail + ms,
                                 complaints=3),
            ),
            complaints_by=(ComplaintCount("microsoft", "news.example.com", 3),),
            blocklist_rejections=(BlocklistCount(v4, "microsoft", 20),
                                  BlocklistCount(v4, "spamhaus", 5)),
            reasons=(ReasonCount("gmail", "bad_mailbox", 20),
                     ReasonCount("gmail", "rate_limit", 40),
                     ReasonCount("gmail", "reputation", 16),
                     ReasonCount("microsoft", "blocklist", 25),
                     ReasonCount("microsoft", "bad_mailbox", 10),
                     ReasonCount("microsoft", "rate_limit", 12),
                     ReasonCount("microsoft", "policy", 7)),
            delay=DelayHistogram(delay_g.bounds,
                                 tuple(a + b for a, b in zip(delay_g.counts, delay_m.counts,
                                                             strict=True)),
                                 delay_g.sum + delay_m.sum),
            records=(("d", 1350), ("b", 78), ("t", 52), ("tq", 4), ("f", 3)),
            read_errors=1,
            lag_seconds=0.0,
            newest_record=now,
        )

    def with_changes(self, **changes: object) -> OutcomesView:
        """A copy with some fields replaced (tests)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, ResultCounts):
        return value.as_dict()
    if isinstance(value, DelayHistogram):
        return {"bounds": list(value.bounds), "counts": list(value.counts), "sum": value.sum,
                "count": value.count}
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)  # type: ignore[arg-type]
                if f.name != "extra"}
    if isinstance(value, tuple | list):
        if value and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str)
                         for x in value):
            return {k: _jsonable(v) for k, v in value}
        return [_jsonable(x) for x in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
