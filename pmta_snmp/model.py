"""The one picture of PowerMTA state.

Immutable, typed snapshots built by the API parser (`pmta_snmp.api.parse`) and read by the
SNMP layer, the check plugins and the exporter. Nothing here knows about wire formats or SNMP.

Field names follow PowerMTA's own (`rcp`, `kb`, `conn`, `smtpOut` -> `smtp_out`). The JSON form
(`snapshot_to_dict`) is documented in the README and is what `pmta-snmp poll --json` prints.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, TypeVar

TRAFFIC_WINDOWS: tuple[str, ...] = ("total", "last_hr", "last_min", "top_per_hr", "top_per_min")
"""Traffic windows in PowerMTA's order (`total`, `lastHr`, `lastMin`, `topPerHr`, `topPerMin`)."""

QUEUE_TYPES: tuple[str, ...] = (
    "smtp",
    "pipe",
    "discard",
    "file",
    "alias",
    "bounceProcessor",
    "feedbackLoopProcessor",
)
"""Queue types PowerMTA 4.x/5.x report; older versions add others (`gmImprinter`)."""


KIB = 1024
"""PowerMTA's kilobytes are KiB."""


def kb_to_bytes(kb: float) -> int:
    """Whole bytes of a kilobyte figure (PowerMTA reports kB with one decimal)."""
    return round(kb * KIB)


class _KBytes:
    """A row or count with PowerMTA's `kb` figure, also in whole `bytes`."""

    __slots__ = ()
    kb: float

    @property
    def bytes(self) -> int:
        """`kb` in whole bytes."""
        return kb_to_bytes(self.kb)


class QueueMode(StrEnum):
    """Delivery mode of a queue as PowerMTA shows it."""

    NORMAL = "normal"
    BACKOFF = "backoff"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Counts(_KBytes):
    """Recipients, messages and kilobytes for one direction of one traffic window."""

    rcp: int = 0
    msg: int = 0
    kb: float = 0.0


@dataclass(frozen=True, slots=True)
class TrafficWindow:
    """One traffic window: inbound and outbound counts plus processed bounces/FBL reports."""

    inbound: Counts = Counts()
    outbound: Counts = Counts()
    bounce_processed: int = 0
    feedback_loop_processed: int = 0


@dataclass(frozen=True, slots=True)
class Traffic:
    """Traffic in every window PowerMTA reports."""

    total: TrafficWindow = TrafficWindow()
    last_hr: TrafficWindow = TrafficWindow()
    last_min: TrafficWindow = TrafficWindow()
    top_per_hr: TrafficWindow = TrafficWindow()
    top_per_min: TrafficWindow = TrafficWindow()

    def window(self, name: str) -> TrafficWindow:
        """Return a window by its name in `TRAFFIC_WINDOWS`."""
        if name not in TRAFFIC_WINDOWS:
            raise KeyError(name)
        value: TrafficWindow = getattr(self, name)
        return value

    @property
    def messages_per_second(self) -> float:
        """Outbound messages per second, derived from the last minute (PowerMTA has no rate)."""
        return self.last_min.outbound.msg / 60.0

    @property
    def recipients_per_second(self) -> float:
        """Outbound recipients per second, derived from the last minute."""
        return self.last_min.outbound.rcp / 60.0


@dataclass(frozen=True, slots=True)
class ConnCounts:
    """Current, configured maximum and highest-seen SMTP connections."""

    cur: int = 0
    max: int = 0
    top: int = 0


@dataclass(frozen=True, slots=True)
class Connections:
    """SMTP connections, inbound and outbound."""

    smtp_in: ConnCounts = ConnCounts()
    smtp_out: ConnCounts = ConnCounts()


@dataclass(frozen=True, slots=True)
class QueueTypeCounts(_KBytes):
    """Queued recipients, domains and kilobytes of one queue type (`status/queue/<type>`)."""

    name: str
    rcp: int = 0
    dom: int = 0
    kb: float = 0.0


@dataclass(frozen=True, slots=True)
class Spool:
    """Spool state: initialisation progress and file usage."""

    init_pct: int = 100
    dirs: int = 0
    files_in_use: int = 0
    files_recycled: int = 0
    files_total: int = 0
    total_rcp: int = 0
    max_rcp: int = 0


@dataclass(frozen=True, slots=True)
class Resolver:
    """DNS resolver cache and queries (optional block in `/status`)."""

    names_cached: int = 0
    queries_pending: int = 0
    queries_active: int = 0


@dataclass(frozen=True, slots=True)
class Runtime:
    """Product, host and run state. Times are PowerMTA-local, naive (PowerMTA sends no zone)."""

    product: str = "PowerMTA"
    version: str | None = None
    build_date: str | None = None
    revision: str | None = None
    host_name: str | None = None
    serial: str | None = None
    os_name: str | None = None
    time_now: datetime | None = None
    startup_time: datetime | None = None
    shutting_down: bool = False
    status: str = "unknown"

    @property
    def uptime_seconds(self) -> int | None:
        """Seconds since startup, measured against PowerMTA's own clock (`timeNow`)."""
        if self.time_now is None or self.startup_time is None:
            return None
        return max(0, int((self.time_now - self.startup_time).total_seconds()))


@dataclass(frozen=True, slots=True)
class Status:
    """Everything `/status` reports."""

    traffic: Traffic = Traffic()
    conn: Connections = Connections()
    queue_types: tuple[QueueTypeCounts, ...] = ()
    spool: Spool = Spool()
    resolver: Resolver | None = None
    runtime: Runtime = Runtime()

    def queue_type(self, name: str) -> QueueTypeCounts:
        """Counts of one queue type; zero counts when PowerMTA did not report it."""
        for q in self.queue_types:
            if q.name == name:
                return q
        return QueueTypeCounts(name)

    @property
    def queued_recipients(self) -> int:
        """Queue depth as the operating rules define it: `status/queue/smtp/rcp`."""
        return self.queue_type("smtp").rcp


@dataclass(frozen=True, slots=True)
class QueueEvent:
    """A recent error or mode event of a queue (`event{type,time,text}`)."""

    type: str = ""
    time: str = ""
    text: str = ""


@dataclass(frozen=True, slots=True)
class Queue(_KBytes):
    """One queue, named `domain/vmta` (or `domain/{default}`)."""

    name: str
    rcp: int = 0
    kb: float = 0.0
    conn: int = 0
    paused: bool = False
    mode: QueueMode = QueueMode.NORMAL
    retry_time: str | None = None
    last_error: str | None = None
    events: tuple[QueueEvent, ...] = ()

    @property
    def domain(self) -> str:
        """The destination domain part of the queue name."""
        return self.name.rsplit("/", 1)[0] if "/" in self.name else self.name

    @property
    def vmta(self) -> str:
        """The VirtualMTA part of the queue name (`{default}` when none)."""
        return self.name.rsplit("/", 1)[1] if "/" in self.name else "{default}"


@dataclass(frozen=True, slots=True)
class Domain(_KBytes):
    """One destination domain across all VirtualMTAs."""

    name: str
    rcp: int = 0
    kb: float = 0.0
    conn: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Vmta(_KBytes):
    """One VirtualMTA with mail queued."""

    name: str
    rcp: int = 0
    kb: float = 0.0
    conn: int = 0
    domains: int = 0


@dataclass(frozen=True, slots=True)
class License:
    """What `show license` reports. `expires is None` with `never` means no expiry."""

    never: bool = False
    expires: date | None = None
    fields: tuple[tuple[str, str], ...] = ()

    def days_left(self, today: date) -> int | None:
        """Whole days until expiry (negative once expired); None when it never expires."""
        if self.never or self.expires is None:
            return None
        return (self.expires - today).days

    def get(self, key: str) -> str | None:
        """A raw `key: value` field of the license text."""
        for k, v in self.fields:
            if k == key:
                return v
        return None


class ListSource(StrEnum):
    """Where a per-item list came from."""

    PAGE = "page"
    """A web page (`/domains`): PowerMTA lists its top `http-default-max-items` rows (10)."""
    COMMAND = "command"
    """`POST /command` with `show domains --maxitems=N`: up to N rows (needs an API key)."""


@dataclass(frozen=True, slots=True)
class ListCompleteness:
    """How complete one per-item list (queues, domains or VirtualMTAs) of a poll is.

    `listed` rows came in the answer; `known` is how many PowerMTA has as far as it said
    (`known_from` names where: a list command's footer, `/status`), None when it said
    nothing. `exact` False makes `known` a lower bound (queues from `/queues`: at least
    one per domain with mail queued).
    """

    source: ListSource = ListSource.PAGE
    listed: int = 0
    known: int | None = None
    exact: bool = True
    known_from: str = ""

    @property
    def missing(self) -> int | None:
        """Rows PowerMTA has that the list lacks (at least this many when not `exact`);
        None when PowerMTA gave no count."""
        return None if self.known is None else max(0, self.known - self.listed)

    @property
    def complete(self) -> bool:
        """True only when PowerMTA's own count shows every row listed."""
        return self.known is not None and self.exact and self.listed >= self.known


@dataclass(frozen=True, slots=True)
class Lists:
    """The completeness of the snapshot's queues, domains and VirtualMTAs (None: not known,
    e.g. a snapshot not built by the API client)."""

    queues: ListCompleteness | None = None
    domains: ListCompleteness | None = None
    vmtas: ListCompleteness | None = None

    @property
    def source(self) -> str:
        """`command`, `page`, `mixed` (some lists each way) or "" (nothing known)."""
        found = {x.source.value for x in (self.queues, self.domains, self.vmtas) if x}
        if len(found) > 1:
            return "mixed"
        return found.pop() if found else ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One poll of PowerMTA: status, queues, domains, VirtualMTAs and the license.

    `taken_at` is our own (aware, UTC) clock at the end of the poll; ages of the data are
    computed against it. `queues`, `domains` and `vmtas` are sorted by name.
    """

    status: Status = Status()
    queues: tuple[Queue, ...] = ()
    domains: tuple[Domain, ...] = ()
    vmtas: tuple[Vmta, ...] = ()
    license: License | None = None
    taken_at: datetime | None = None
    source: str = ""
    warnings: tuple[str, ...] = field(default=())
    lists: Lists = Lists()

    def queue(self, name: str) -> Queue | None:
        """Look a queue up by `domain/vmta` name."""
        for q in self.queues:
            if q.name == name:
                return q
        return None


_Row = TypeVar("_Row", Queue, Domain, Vmta)


def sorted_by_name(rows: Iterable[_Row]) -> tuple[_Row, ...]:
    """Rows sorted by name, merging duplicates (last one wins) so names stay unique."""
    unique: dict[str, _Row] = {}
    for row in rows:
        unique[row.name] = row
    return tuple(unique[k] for k in sorted(unique))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, QueueMode | ListSource):
        return value.value
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def snapshot_to_dict(snap: Snapshot) -> dict[str, Any]:
    """The snapshot as plain JSON-ready data (the documented `poll --json` format)."""

    def conv(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            out = {f.name: conv(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
            if isinstance(obj, Counts | Queue | Domain | Vmta):
                out["bytes"] = obj.bytes
            if isinstance(obj, Queue):
                out["domain"] = obj.domain
                out["vmta"] = obj.vmta
            if isinstance(obj, ListCompleteness):
                out["missing"] = obj.missing
                out["complete"] = obj.complete
            if isinstance(obj, Lists):
                out["source"] = obj.source
            if isinstance(obj, Status):
                out["queue_types"] = {
                    q.name: {"rcp": q.rcp, "dom": q.dom, "kb": q.kb, "bytes": q.bytes}
                    for q in obj.queue_types
                }
            return out
        if isinstance(obj, tuple):
            if obj and all(isinstance(x, tuple) and len(x) == 2 for x in obj):
                return {str(k): conv(v) for k, v in obj}
            return [conv(x) for x in obj]
        return _jsonable(obj)

    data: dict[str, Any] = conv(snap)
    traffic = snap.status.traffic
    data["status"]["messages_per_second"] = round(traffic.messages_per_second, 3)
    data["status"]["recipients_per_second"] = round(traffic.recipients_per_second, 3)
    data["status"]["queued_recipients"] = snap.status.queued_recipients
    data["status"]["runtime"]["uptime_seconds"] = snap.status.runtime.uptime_seconds
    return data


def license_fields(mapping: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Freeze a parsed `key: value` mapping for `License.fields`."""
    return tuple(mapping.items())


_DIGITS = re.compile(r"\d+")


def warning_kinds(warnings: Iterable[str]) -> tuple[str, ...]:
    """The warnings with their numbers blanked: what a log line compares, so a count that
    moves from poll to poll (`lists 10 of 1967 domains`) is not logged again every poll."""
    return tuple(_DIGITS.sub("#", w) for w in warnings)
