"""PMTA-SNMP-MIB on the agent side: every OID, and the mapping from a Snapshot to varbinds.

The single source of truth for OIDs in Python; `tests/integration/test_mib.py` checks it
against `mibs/PMTA-SNMP-MIB.txt` through snmptranslate. OIDs are relative to the module's
arc `enterprises.<enterprise>.25`; every function takes the enterprise number (default
`ENTERPRISE`, the RFC 5612 documentation placeholder) so that an operator can re-base.

`build_varbinds` runs once per poll, off the request path, and returns the varbinds in
ascending OID order; `object_prefixes` gives the served objects for noSuchObject versus
noSuchInstance. Table indices are the names themselves (RFC 2578 §7.7: length, then one
sub-id per UTF-8 octet), so they are stable across polls and restarts; rows whose name is
empty or over the index bound are left out and counted (`pmta*Omitted`), never truncated.

The deliverability objects (`pmtaAcct`, `pmtaProviderTable`, `pmtaSourceIpTable`) come from the
outcomes engine's `OutcomesView`, not from the poll: they have instances whenever a view is
given, also while PowerMTA's API is unreachable, and none without one (no accounting files).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import lru_cache
from operator import attrgetter, itemgetter
from typing import Any, Final, Generic, TypeVar

from pmta_snmp.addresses import packed_address, source_ip_text
from pmta_snmp.mib.health import AgentHealth, Thresholds
from pmta_snmp.mib.snapshot import Oid, SnmpType, Value
from pmta_snmp.model import (
    Domain,
    ListCompleteness,
    Queue,
    QueueMode,
    QueueTypeCounts,
    Snapshot,
    TrafficWindow,
    Vmta,
)
from pmta_snmp.outcomes.view import (
    OTHER,
    OutcomesView,
    ResultCounts,
    SourceIpRow,
    hundredths_of_percent,
)

__all__ = [
    "ENTERPRISE",
    "INET_ADDRESS_TYPES",
    "LICENSE_NEVER_DAYS",
    "MAX_BLOCKLIST_OCTETS",
    "MAX_DOMAIN_OCTETS",
    "MAX_PROVIDER_OCTETS",
    "MAX_QUEUE_TYPE_OCTETS",
    "MAX_TEXT_OCTETS",
    "MAX_VMTA_OCTETS",
    "MIB_MODULE",
    "MODULE_ARC",
    "NOTIFICATIONS",
    "OBJECTS",
    "SNMP_TRAP_OID",
    "SOURCE_IP_DIMENSION",
    "SYNTAX_TYPES",
    "Kind",
    "Layout",
    "MibObject",
    "Notification",
    "NotificationType",
    "base_oid",
    "build_varbinds",
    "counter32",
    "counter64",
    "date_and_time",
    "decode_string_index",
    "encode_string_index",
    "gauge32",
    "inet_address_index",
    "integer32",
    "iter_varbinds",
    "layout",
    "notification_varbinds",
    "object_prefixes",
    "oid",
    "source_ip_varbinds",
    "utf8_text",
]

ENTERPRISE: Final = 32473
"""RFC 5612 documentation enterprise number; operators re-base to their own IANA PEN."""
MODULE_ARC: Final = 25
"""Sub-id of `pmtaSnmpMIB` under the enterprise arc (kept when re-basing)."""
MIB_MODULE: Final = "PMTA-SNMP-MIB"

MAX_DOMAIN_OCTETS: Final = 80
MAX_VMTA_OCTETS: Final = 32
MAX_QUEUE_TYPE_OCTETS: Final = 32
MAX_TEXT_OCTETS: Final = 255
"""Index bounds (UTF-8 octets) from the MIB; a queue instance is 13 + 81 + 33 = 127 sub-ids."""
MAX_PROVIDER_OCTETS: Final = 32
"""Bound of pmtaProviderName (the provider map's ids are short lowercase words)."""
MAX_BLOCKLIST_OCTETS: Final = 32
SOURCE_IP_DIMENSION: Final = "source_ip"
"""The capped dimension of `OutcomesView.other_items` counted by pmtaSourceIpsOther."""
INET_ADDRESS_TYPES: Final[Mapping[int, int]] = {0: 0, 4: 1, 6: 2}
"""IP version (0: none) -> InetAddressType (RFC 4001): unknown(0), ipv4(1), ipv6(2); an IPv6
address with a zone (20 octets) is ipv6z(4)."""
_INET_IPV6Z: Final = 4

LICENSE_NEVER_DAYS: Final = 2**31 - 1
"""`pmtaLicenseDaysLeft` for a license that never expires."""

SNMP_TRAP_OID: Final[Oid] = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)
"""snmpTrapOID.0 (SNMPv2-MIB), the first varbind of a notification after sysUpTime.0."""

_MAX32: Final = 2**32 - 1
_MAX64: Final = 2**64
_I32_MIN: Final = -(2**31)
_I32_MAX: Final = 2**31 - 1

_INTEGER: Final = SnmpType.INTEGER
_OCTETS: Final = SnmpType.OCTET_STRING
_GAUGE: Final = SnmpType.GAUGE32


class Kind(StrEnum):
    """What a MIB object is: a scalar, a readable column, or a not-accessible index column."""

    SCALAR = "scalar"
    COLUMN = "column"
    INDEX = "index"


SYNTAX_TYPES: Final[Mapping[str, SnmpType]] = {
    "Counter32": SnmpType.COUNTER32,
    "Counter64": SnmpType.COUNTER64,
    "Gauge32": SnmpType.GAUGE32,
    "Unsigned32": SnmpType.GAUGE32,
    "Integer32": SnmpType.INTEGER,
    "TruthValue": SnmpType.INTEGER,
    "PmtaDeliveryMode": SnmpType.INTEGER,
    "PmtaUtf8String": SnmpType.OCTET_STRING,
    "DisplayString": SnmpType.OCTET_STRING,
    "DateAndTime": SnmpType.OCTET_STRING,
    "InetAddressType": SnmpType.INTEGER,
    "InetAddress": SnmpType.OCTET_STRING,
}
"""The SYNTAX names PMTA-SNMP-MIB uses (base type or textual convention) → wire type."""


@dataclass(frozen=True, slots=True)
class MibObject:
    """One OBJECT-TYPE of PMTA-SNMP-MIB: name, OID below `pmtaSnmpMIB`, kind and SYNTAX."""

    name: str
    rel: Oid
    kind: Kind
    syntax: str

    @property
    def type(self) -> SnmpType:
        """The SNMP type its instances carry on the wire."""
        return SYNTAX_TYPES[self.syntax]


@dataclass(frozen=True, slots=True)
class NotificationType:
    """One NOTIFICATION-TYPE: name, OID below `pmtaSnmpMIB`, and its OBJECTS (scalars, or
    the columns of one table row and scalars)."""

    name: str
    rel: Oid
    objects: tuple[str, ...]


class Notification(StrEnum):
    """Notification names; each raise has its clear (see the MIB's hysteresis notes)."""

    QUEUE_HIGH = "pmtaQueueHigh"
    QUEUE_NORMAL = "pmtaQueueNormal"
    API_LOST = "pmtaApiLost"
    API_RESTORED = "pmtaApiRestored"
    LICENSE_EXPIRING = "pmtaLicenseExpiring"
    LICENSE_OK = "pmtaLicenseOk"
    SOURCE_IP_BLOCKLISTED = "pmtaSourceIpBlocklisted"
    SOURCE_IP_BLOCKLIST_CLEAR = "pmtaSourceIpBlocklistClear"


_SOURCE_IP_NOTIFY_OBJECTS: Final = (
    "pmtaSourceIpName", "pmtaSourceIpLastHourBlocklistRejections", "pmtaSourceIpTopBlocklist",
    "pmtaCfgBlocklistRaise",
)

NOTIFICATIONS: Final[tuple[NotificationType, ...]] = (
    NotificationType(
        Notification.QUEUE_HIGH, (0, 1), ("pmtaSmtpQueueRcpt", "pmtaCfgQueueRcptRaise")
    ),
    NotificationType(
        Notification.QUEUE_NORMAL, (0, 2), ("pmtaSmtpQueueRcpt", "pmtaCfgQueueRcptClear")
    ),
    NotificationType(
        Notification.API_LOST,
        (0, 3),
        ("pmtaAgentConsecutiveFailures", "pmtaCfgApiFailuresRaise", "pmtaAgentLastError"),
    ),
    NotificationType(
        Notification.API_RESTORED,
        (0, 4),
        ("pmtaAgentConsecutiveFailures", "pmtaCfgApiFailuresRaise", "pmtaAgentLastError"),
    ),
    NotificationType(
        Notification.LICENSE_EXPIRING,
        (0, 5),
        ("pmtaLicenseDaysLeft", "pmtaCfgLicenseDaysRaise", "pmtaLicenseExpires"),
    ),
    NotificationType(
        Notification.LICENSE_OK,
        (0, 6),
        ("pmtaLicenseDaysLeft", "pmtaCfgLicenseDaysRaise", "pmtaLicenseExpires"),
    ),
    # Per source IP: the columns are sent with the row's index (see source_ip_varbinds).
    NotificationType(Notification.SOURCE_IP_BLOCKLISTED, (0, 7), _SOURCE_IP_NOTIFY_OBJECTS),
    NotificationType(Notification.SOURCE_IP_BLOCKLIST_CLEAR, (0, 8), _SOURCE_IP_NOTIFY_OBJECTS),
)


# --- value encoders ---------------------------------------------------------------------


def gauge32(n: int) -> Value:
    """Gauge32 (also Unsigned32): saturates at 0 and 2^32-1."""
    return Value(_GAUGE, n if 0 <= n <= _MAX32 else (0 if n < 0 else _MAX32))


def counter32(n: int) -> Value:
    """Counter32: negative clamps to 0, larger values wrap modulo 2^32 as a counter does."""
    return Value(SnmpType.COUNTER32, n % (_MAX32 + 1) if n > 0 else 0)


def counter64(n: int) -> Value:
    """Counter64: negative clamps to 0, larger values wrap modulo 2^64 as a counter does."""
    return Value(SnmpType.COUNTER64, n % _MAX64 if n > 0 else 0)


def integer32(n: int) -> Value:
    """Integer32: clamps to -2^31 .. 2^31-1."""
    return Value(_INTEGER, min(max(n, _I32_MIN), _I32_MAX))


def utf8_text(text: str | None, max_octets: int = MAX_TEXT_OCTETS) -> Value:
    """OCTET STRING of UTF-8 text, cut at a character boundary to `max_octets`; None → ''."""
    if not text:
        return Value(_OCTETS, b"")
    data = text.encode("utf-8", "replace")
    if len(data) > max_octets:
        data = data[:max_octets].decode("utf-8", "ignore").encode("utf-8")
    return Value(_OCTETS, data)


def _kb(kb: float) -> int:
    """Kilobytes as PowerMTA reports them (one decimal), fraction dropped; junk → 0."""
    return int(kb) if math.isfinite(kb) and kb > 0 else 0


def date_and_time(moment: datetime) -> bytes:
    """DateAndTime (SNMPv2-TC): 8 octets for a naive local time, 11 (UTC, '+0:0') if aware."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    head = bytes(
        (
            moment.year >> 8 & 0xFF,
            moment.year & 0xFF,
            moment.month,
            moment.day,
            moment.hour,
            moment.minute,
            moment.second,
            moment.microsecond // 100_000,
        )
    )
    return head if moment.tzinfo is None else head + b"+\x00\x00"


def utc_from_date_and_time(octets: bytes) -> datetime | None:
    """The moment of an 11-octet UTC DateAndTime (`date_and_time` of an aware time); None for
    any other form or an impossible date."""
    if len(octets) != 11 or octets[8:] != b"+\x00\x00":
        return None
    try:
        return datetime((octets[0] << 8) | octets[1], octets[2], octets[3], octets[4],
                        octets[5], octets[6], octets[7] * 100_000, tzinfo=UTC)
    except ValueError:
        return None


def encode_string_index(text: str, max_octets: int, *, implied: bool = False) -> Oid | None:
    """RFC 2578 §7.7 index of a string: its length then one sub-id per UTF-8 octet.

    IMPLIED drops the length. Returns None when the name is empty or longer than
    `max_octets`: such a row is left out (and counted), never truncated into a collision.
    """
    data = text.encode("utf-8", "replace")
    if not 0 < len(data) <= max_octets:
        return None
    return tuple(data) if implied else (len(data), *data)


def decode_string_index(sub_ids: Oid, *, implied: bool = False) -> tuple[str, Oid]:
    """Inverse of `encode_string_index`: the name at the start of `sub_ids`, and the rest."""
    if implied:
        return bytes(sub_ids).decode("utf-8", "replace"), ()
    if not sub_ids or len(sub_ids) < 1 + sub_ids[0]:
        raise ValueError(f"truncated string index: {sub_ids!r}")
    n = sub_ids[0]
    return bytes(sub_ids[1 : 1 + n]).decode("utf-8", "replace"), sub_ids[1 + n :]


def inet_address_index(family: int, address: bytes) -> Oid | None:
    """The index of an `InetAddressType, InetAddress` pair (RFC 4001, RFC 2578 §7.7): the
    type, the address length, one sub-id per octet. `family` is 4, 6 or 0 (unknown(0), with
    a zero-length address); 6 with 20 octets (the address, then its zone index) is ipv6z(4).
    None when the address does not fit its family."""
    kind = INET_ADDRESS_TYPES.get(family)
    if family == 6 and len(address) == 20:
        kind = _INET_IPV6Z
    elif kind is None or len(address) != {0: 0, 4: 4, 6: 16}[family]:
        return None
    return (kind, len(address), *address)


_TRUE: Final = Value(_INTEGER, 1)
_FALSE: Final = Value(_INTEGER, 2)
_MODES: Final[Mapping[QueueMode, Value]] = {
    QueueMode.NORMAL: Value(_INTEGER, 1),
    QueueMode.BACKOFF: Value(_INTEGER, 2),
    QueueMode.UNKNOWN: Value(_INTEGER, 3),
}
_MODE_UNKNOWN: Final = _MODES[QueueMode.UNKNOWN]


def _truth(flag: bool) -> Value:
    return _TRUE if flag else _FALSE


def _octets(data: bytes) -> Value:
    return Value(_OCTETS, data)


# --- tables -----------------------------------------------------------------------------

_Row = TypeVar("_Row")
_Cells = Callable[[list[Any]], list[Value]]
"""Turns one column's attribute values (all rows) into Values: one call per column, not cell."""


def _gauges(values: list[Any]) -> list[Value]:
    return [Value(_GAUGE, v) if 0 <= v <= _MAX32 else gauge32(v) for v in values]


def _kbytes(values: list[Any]) -> list[Value]:
    # NaN fails the range test and takes the slow, safe path.
    return [Value(_GAUGE, int(v)) if 0 <= v < _MAX32 else gauge32(_kb(v)) for v in values]


def _truths(values: list[Any]) -> list[Value]:
    return [_TRUE if v else _FALSE for v in values]


def _modes(values: list[Any]) -> list[Value]:
    get = _MODES.get
    return [get(v, _MODE_UNKNOWN) for v in values]


def _names(values: list[Any]) -> list[Value]:
    return [Value(_OCTETS, v.encode("utf-8", "replace")) for v in values]


def _texts(max_octets: int) -> _Cells:
    def cells(values: list[Any]) -> list[Value]:
        memo: dict[str | None, Value] = {}  # error texts repeat across many rows
        out: list[Value] = []
        for v in values:
            cell = memo.get(v)
            if cell is None:
                cell = memo[v] = utf8_text(v, max_octets)
            out.append(cell)
        return out

    return cells


@dataclass(frozen=True, slots=True)
class _Column:
    obj: MibObject
    attr: str
    cells: _Cells


def _of_snapshot(ctx: _Ctx) -> Any:
    return ctx.snap


@dataclass(frozen=True, slots=True)
class _Table(Generic[_Row]):
    name: str
    entry: Oid
    indices: tuple[MibObject, ...]
    columns: tuple[_Column, ...]
    rows: Callable[[Any], Iterable[_Row]]
    """The rows, from what `source` gives (the snapshot, or the outcomes view)."""
    index: Callable[[_Row], Oid | None]
    source: Callable[[_Ctx], Any] = _of_snapshot
    """None: the table has no rows, and its count scalars no instance."""


def _index_of_name(max_octets: int) -> Callable[[Any], Oid | None]:
    def index(row: Any) -> Oid | None:
        return encode_string_index(row.name, max_octets)

    return index


def _queue_index(q: Queue) -> Oid | None:
    dom = encode_string_index(q.domain, MAX_DOMAIN_OCTETS)
    vmta = encode_string_index(q.vmta, MAX_VMTA_OCTETS)
    if dom is None or vmta is None:
        return None
    return dom + vmta


def _columns(entry: Oid, *specs: tuple[int, str, str, str, _Cells]) -> tuple[_Column, ...]:
    return tuple(
        _Column(MibObject(name, (*entry, sub), Kind.COLUMN, syntax), attr, cells)
        for sub, name, syntax, attr, cells in specs
    )


def _idx(entry: Oid, sub: int, name: str) -> MibObject:
    return MibObject(name, (*entry, sub), Kind.INDEX, "PmtaUtf8String")


_U = "PmtaUtf8String"
_G = "Gauge32"

_QT_ENTRY: Final[Oid] = (1, 4, 4, 1)
_QUEUE_TYPE_TABLE: Final[_Table[QueueTypeCounts]] = _Table(
    "pmtaQueueTypeTable",
    _QT_ENTRY,
    (_idx(_QT_ENTRY, 1, "pmtaQueueTypeName"),),
    _columns(
        _QT_ENTRY,
        (2, "pmtaQueueTypeDisplayName", _U, "name", _names),
        (3, "pmtaQueueTypeRcpt", _G, "rcp", _gauges),
        (4, "pmtaQueueTypeDomains", _G, "dom", _gauges),
        (5, "pmtaQueueTypeKBytes", _G, "kb", _kbytes),
    ),
    lambda s: s.status.queue_types,
    _index_of_name(MAX_QUEUE_TYPE_OCTETS),
)

_VMTA_ENTRY: Final[Oid] = (1, 8, 3, 1)
_VMTA_TABLE: Final[_Table[Vmta]] = _Table(
    "pmtaVmtaTable",
    _VMTA_ENTRY,
    (_idx(_VMTA_ENTRY, 1, "pmtaVmtaName"),),
    _columns(
        _VMTA_ENTRY,
        (2, "pmtaVmtaDisplayName", _U, "name", _names),
        (3, "pmtaVmtaRcpt", _G, "rcp", _gauges),
        (4, "pmtaVmtaKBytes", _G, "kb", _kbytes),
        (5, "pmtaVmtaConnections", _G, "conn", _gauges),
        (6, "pmtaVmtaDomains", _G, "domains", _gauges),
    ),
    lambda s: s.vmtas,
    _index_of_name(MAX_VMTA_OCTETS),
)

_DOMAIN_ENTRY: Final[Oid] = (1, 9, 3, 1)
_DOMAIN_TABLE: Final[_Table[Domain]] = _Table(
    "pmtaDomainTable",
    _DOMAIN_ENTRY,
    (_idx(_DOMAIN_ENTRY, 1, "pmtaDomainName"),),
    _columns(
        _DOMAIN_ENTRY,
        (2, "pmtaDomainDisplayName", _U, "name", _names),
        (3, "pmtaDomainRcpt", _G, "rcp", _gauges),
        (4, "pmtaDomainKBytes", _G, "kb", _kbytes),
        (5, "pmtaDomainConnections", _G, "conn", _gauges),
        (6, "pmtaDomainLastError", _U, "last_error", _texts(MAX_TEXT_OCTETS)),
    ),
    lambda s: s.domains,
    _index_of_name(MAX_DOMAIN_OCTETS),
)

_QUEUE_ENTRY: Final[Oid] = (1, 10, 3, 1)
_QUEUE_TABLE: Final[_Table[Queue]] = _Table(
    "pmtaQueueTable",
    _QUEUE_ENTRY,
    (_idx(_QUEUE_ENTRY, 1, "pmtaQueueDomain"), _idx(_QUEUE_ENTRY, 2, "pmtaQueueVmta")),
    _columns(
        _QUEUE_ENTRY,
        (3, "pmtaQueueName", _U, "name", _names),
        (4, "pmtaQueueRcpt", _G, "rcp", _gauges),
        (5, "pmtaQueueKBytes", _G, "kb", _kbytes),
        (6, "pmtaQueueConnections", _G, "conn", _gauges),
        (7, "pmtaQueuePaused", "TruthValue", "paused", _truths),
        (8, "pmtaQueueMode", "PmtaDeliveryMode", "mode", _modes),
        (9, "pmtaQueueRetryTime", _U, "retry_time", _texts(64)),
        (10, "pmtaQueueLastError", _U, "last_error", _texts(MAX_TEXT_OCTETS)),
    ),
    lambda s: s.queues,
    _queue_index,
)


# --- deliverability outcomes (from the outcomes engine's view) --------------------------


def _counters64(values: list[Any]) -> list[Value]:
    return [Value(SnmpType.COUNTER64, v) if 0 <= v < _MAX64 else counter64(v) for v in values]


@dataclass(frozen=True, slots=True)
class _OutcomeRow:
    """A provider or source IP row as its MIB columns read it (rates worked out once)."""

    name: str
    description: str
    family: int
    address: bytes
    total: ResultCounts
    complaints: int
    blocklist_rejections: int
    hour_recipients: int
    hour_delivered: int
    hour_hard_rate: int
    hour_block_rate: int
    hour_deferral_rate: int
    hour_complaint_rate: int
    hour_blocklist_rejections: int
    day_complaint_rate: int = 0
    day_delivered: int = 0
    top_blocklist: str = ""

    @classmethod
    def of(cls, name: str, total: ResultCounts, hour: ResultCounts, *, complaints: int,
           complaints_hour: int, blocklist: int, blocklist_hour: int, description: str = "",
           family: int = 0, address: bytes = b"", day_complaint_rate: int = 0,
           day_delivered: int = 0, top_blocklist: str = "") -> _OutcomeRow:
        """A row from counts; the last-hour rates as the view defines them."""
        return cls(
            name, description, family, address, total, complaints, blocklist,
            hour.final, hour.delivered, hour.rate("hard_bounce"), hour.rate("block_bounce"),
            hour.rate("deferred"), hundredths_of_percent(complaints_hour, hour.delivered),
            blocklist_hour, day_complaint_rate, day_delivered, top_blocklist,
        )


def _provider_rows(view: OutcomesView) -> list[_OutcomeRow]:
    return [
        _OutcomeRow.of(
            p.provider, p.total, p.last_hour, complaints=p.complaints,
            complaints_hour=p.complaints_last_hour, blocklist=p.blocklist_rejections,
            blocklist_hour=p.blocklist_rejections_last_hour, description=p.description,
            day_complaint_rate=p.complaint_rate_last_day(), day_delivered=p.last_day.delivered,
        )
        for p in view.providers
    ]


def _source_ip_rows(view: OutcomesView) -> list[_OutcomeRow]:
    """One row per address, named in its canonical text: the texts of one address (spelled
    `2001:db8::1`, `2001:0DB8::1`, ...) share its index and are summed into its row. Every
    row that is no address (the cap's `(other)`, texts that are no IP) is summed into the
    one unknown(0) row, whose index they would share."""
    by_address: dict[tuple[int, bytes], list[SourceIpRow]] = {}
    unknown: list[SourceIpRow] = []
    for s in view.source_ips:
        if s.family not in (4, 6):
            unknown.append(s)
            continue
        by_address.setdefault((s.family, s.address), []).append(s)
    rows = [
        _source_ip_row(_address_text(address, parts), parts, family, address)
        for (family, address), parts in by_address.items()
    ]
    if unknown:
        rows.append(_source_ip_row(OTHER, unknown, 0, b""))
    return rows


def _address_text(packed: bytes, parts: list[SourceIpRow]) -> str:
    """The canonical text of a packed IPv4 or IPv6 address (RFC 5952, also §5: an
    IPv4-mapped address ends in dotted decimal, `::ffff:192.0.2.9`), as the engine names it.
    A zoned address keeps its zone as the view's rows write it (`fe80::1%eth0`; of two
    spellings of one zone, `%eth0` and `%2`, the first in order)."""
    if len(packed) == 20:
        return min(source_ip_text(s.source_ip) for s in parts)
    return source_ip_text(str(ipaddress.ip_address(packed)))


def _source_ip_row(name: str, parts: list[SourceIpRow], family: int, address: bytes
                   ) -> _OutcomeRow:
    total = hour = ResultCounts()
    lists: dict[str, int] = {}
    for s in parts:
        total, hour = total + s.total, hour + s.last_hour
        for blocklist, n in s.blocklists:
            lists[blocklist] = lists.get(blocklist, 0) + n
    top = min(lists.items(), key=lambda kv: (-kv[1], kv[0]))[0] if lists else ""
    return _OutcomeRow.of(
        name, total, hour, complaints=sum(s.complaints for s in parts),
        complaints_hour=sum(s.complaints_last_hour for s in parts),
        blocklist=sum(s.blocklist_rejections for s in parts),
        blocklist_hour=sum(s.blocklist_rejections_last_hour for s in parts),
        family=family, address=address, top_blocklist=top,
    )


def _of_outcomes(ctx: _Ctx) -> Any:
    return ctx.outcomes


def _outcome_columns(what: str) -> tuple[tuple[int, str, str, str, _Cells], ...]:
    """Columns 4-18, the same in both tables: `what` is Provider or SourceIp."""
    c64 = "Counter64"
    return tuple((sub, f"pmta{what}{name}", syntax, attr, cells)
                 for sub, name, syntax, attr, cells in (
        (4, "Delivered", c64, "total.delivered", _counters64),
        (5, "HardBounces", c64, "total.hard_bounce", _counters64),
        (6, "SoftBounces", c64, "total.soft_bounce", _counters64),
        (7, "BlockBounces", c64, "total.block_bounce", _counters64),
        (8, "Deferrals", c64, "total.deferred", _counters64),
        (9, "Expired", c64, "total.expired", _counters64),
        (10, "Complaints", c64, "complaints", _counters64),
        (11, "BlocklistRejections", c64, "blocklist_rejections", _counters64),
        (12, "LastHourRecipients", _G, "hour_recipients", _gauges),
        (13, "LastHourDelivered", _G, "hour_delivered", _gauges),
        (14, "LastHourHardBounceRate", _G, "hour_hard_rate", _gauges),
        (15, "LastHourBlockRate", _G, "hour_block_rate", _gauges),
        (16, "LastHourDeferralRate", _G, "hour_deferral_rate", _gauges),
        (17, "LastHourComplaintRate", _G, "hour_complaint_rate", _gauges),
        (18, "LastHourBlocklistRejections", _G, "hour_blocklist_rejections", _gauges),
    ))


def _source_ip_index(row: _OutcomeRow) -> Oid | None:
    return inet_address_index(row.family, row.address)


_PROVIDER_ENTRY: Final[Oid] = (1, 14, 3, 1)
_PROVIDER_TABLE: Final[_Table[_OutcomeRow]] = _Table(
    "pmtaProviderTable",
    _PROVIDER_ENTRY,
    (_idx(_PROVIDER_ENTRY, 1, "pmtaProviderName"),),
    _columns(
        _PROVIDER_ENTRY,
        (2, "pmtaProviderDisplayName", _U, "name", _names),
        (3, "pmtaProviderDescription", _U, "description", _texts(MAX_TEXT_OCTETS)),
        *_outcome_columns("Provider"),
        (19, "pmtaProviderLastDayComplaintRate", _G, "day_complaint_rate", _gauges),
        (20, "pmtaProviderLastDayDelivered", _G, "day_delivered", _gauges),
    ),
    _provider_rows,
    lambda row: encode_string_index(row.name, MAX_PROVIDER_OCTETS),
    _of_outcomes,
)

_SOURCE_IP_ENTRY: Final[Oid] = (1, 15, 3, 1)
_SOURCE_IP_TABLE: Final[_Table[_OutcomeRow]] = _Table(
    "pmtaSourceIpTable",
    _SOURCE_IP_ENTRY,
    (
        MibObject("pmtaSourceIpAddressType", (*_SOURCE_IP_ENTRY, 1), Kind.INDEX,
                  "InetAddressType"),
        MibObject("pmtaSourceIpAddress", (*_SOURCE_IP_ENTRY, 2), Kind.INDEX, "InetAddress"),
    ),
    _columns(
        _SOURCE_IP_ENTRY,
        (3, "pmtaSourceIpName", _U, "name", _texts(64)),
        *_outcome_columns("SourceIp"),
        (19, "pmtaSourceIpTopBlocklist", _U, "top_blocklist", _texts(MAX_BLOCKLIST_OCTETS)),
    ),
    _source_ip_rows,
    _source_ip_index,
    _of_outcomes,
)

_TABLES: Final[tuple[_Table[Any], ...]] = (
    _QUEUE_TYPE_TABLE,
    _VMTA_TABLE,
    _DOMAIN_TABLE,
    _QUEUE_TABLE,
    _PROVIDER_TABLE,
    _SOURCE_IP_TABLE,
)


# --- scalars ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Ctx:
    """Inputs of one build; table rows are indexed once, on first use."""

    snap: Snapshot | None
    health: AgentHealth
    thresholds: Thresholds
    today: date
    outcomes: OutcomesView | None = None
    rows: dict[str, tuple[list[tuple[Oid, Any]], int]] = field(default_factory=dict)

    def table_rows(self, table: _Table[Any]) -> tuple[list[tuple[Oid, Any]], int]:
        """Rows of `table` as (index, row) in index order, and how many were omitted."""
        got = self.rows.get(table.name)
        if got is None:
            source = table.source(self)
            got = _index_rows(table, source) if source is not None else ([], 0)
            self.rows[table.name] = got
        return got


def _index_rows(table: _Table[Any], source: Any) -> tuple[list[tuple[Oid, Any]], int]:
    index = table.index
    keyed: list[tuple[Oid, Any]] = []
    omitted = 0
    for row in table.rows(source):
        idx = index(row)
        if idx is None:
            omitted += 1
        else:
            keyed.append((idx, row))
    keyed.sort(key=itemgetter(0))
    unique: list[tuple[Oid, Any]] = []
    prev: Oid | None = None
    for item in keyed:  # names are unique; equal indices only come from unencodable text
        if item[0] == prev:
            omitted += 1
            continue
        unique.append(item)
        prev = item[0]
    return unique, omitted


_Getter = Callable[[_Ctx], Value | None]


def _pmta(get: Callable[[Snapshot], Value | None]) -> _Getter:
    """A scalar from PowerMTA's data: no instance before the first good poll."""

    def getter(ctx: _Ctx) -> Value | None:
        return None if ctx.snap is None else get(ctx.snap)

    return getter


def _opt_text(text: str | None, max_octets: int = MAX_TEXT_OCTETS) -> Value | None:
    return None if text is None else utf8_text(text, max_octets)


def _opt_gauge(n: int | None) -> Value | None:
    return None if n is None else gauge32(n)


def _opt_time(moment: datetime | None) -> Value | None:
    return None if moment is None else _octets(date_and_time(moment))


def _license_expires(snap: Snapshot) -> Value | None:
    lic = snap.license
    if lic is None:
        return None
    if lic.never:
        return _octets(b"never")
    return None if lic.expires is None else _octets(lic.expires.isoformat().encode("ascii"))


def _license_days(ctx: _Ctx) -> Value | None:
    lic = None if ctx.snap is None else ctx.snap.license
    if lic is None:
        return None
    if lic.never:
        return integer32(LICENSE_NEVER_DAYS)
    days = lic.days_left(ctx.today)
    return None if days is None else integer32(days)


def _license_field(key: str, max_octets: int) -> _Getter:
    def get(snap: Snapshot) -> Value | None:
        return None if snap.license is None else _opt_text(snap.license.get(key), max_octets)

    return _pmta(get)


def _table_count(table: _Table[Any], omitted: bool) -> _Getter:
    def getter(ctx: _Ctx) -> Value | None:
        if table.source(ctx) is None:
            return None
        rows, n_omitted = ctx.table_rows(table)
        return gauge32(n_omitted if omitted else len(rows))

    return getter


def _known(found: ListCompleteness | None) -> Value | None:
    """Rows PowerMTA has by its own count (a lower bound for queues from /status); no
    instance when it gave none."""
    return None if found is None or found.known is None else gauge32(found.known)


def _discontinuity(ctx: _Ctx) -> Value | None:
    if ctx.snap is None:
        return None
    return _opt_time(ctx.health.counter_discontinuity)


def _data_age(ctx: _Ctx) -> Value | None:
    age = ctx.health.data_age_seconds
    if age is None or ctx.snap is None or not math.isfinite(age):
        return None
    return gauge32(int(age))


def _rate(get: Callable[[TrafficWindow], int]) -> _Getter:
    return _pmta(lambda s: gauge32(round(get(s.status.traffic.last_min) * 1000 / 60)))


_WINDOWS: Final = (
    ("Total", "total", 1),
    ("LastHour", "last_hr", 2),
    ("LastMinute", "last_min", 3),
    ("TopPerHour", "top_per_hr", 4),
    ("TopPerMinute", "top_per_min", 5),
)
_TRAFFIC_ITEMS: Final[tuple[tuple[str, int, Callable[[TrafficWindow], int]], ...]] = (
    ("RecipientsIn", 1, lambda w: w.inbound.rcp),
    ("RecipientsOut", 2, lambda w: w.outbound.rcp),
    ("MessagesIn", 3, lambda w: w.inbound.msg),
    ("MessagesOut", 4, lambda w: w.outbound.msg),
    ("KBytesIn", 5, lambda w: _kb(w.inbound.kb)),
    ("KBytesOut", 6, lambda w: _kb(w.outbound.kb)),
    ("BouncesProcessed", 7, lambda w: w.bounce_processed),
    ("FeedbackLoopProcessed", 8, lambda w: w.feedback_loop_processed),
)


def _traffic_scalars() -> list[tuple[MibObject, _Getter]]:
    out: list[tuple[MibObject, _Getter]] = []
    for label, attr, arc in _WINDOWS:
        total = attr == "total"
        for item, sub, get in _TRAFFIC_ITEMS:

            def getter(snap: Snapshot, attr: str = attr, get: Callable[..., int] = get) -> Value:
                n = get(getattr(snap.status.traffic, attr))
                return counter64(n) if attr == "total" else gauge32(n)

            obj = MibObject(
                f"pmta{label}{item}",
                (1, 2, arc, sub),
                Kind.SCALAR,
                "Counter64" if total else "Gauge32",
            )
            out.append((obj, _pmta(getter)))
    return out


def _value(encode: Callable[[Any], Value | None], path: str) -> Callable[[Any], Value | None]:
    """`encode` of the attribute at the dotted `path` of what it is given (a snapshot, or
    the build's context for `health.*` and `thresholds.*`)."""
    get = attrgetter(path)
    return lambda obj: encode(get(obj))


def _gauge(path: str) -> _Getter:
    """A Gauge32 from the snapshot's attribute at the dotted `path`."""
    get = attrgetter(path)
    return _pmta(lambda s: gauge32(get(s)))


def _resolver(attr: str) -> _Getter:
    """A Gauge32 of the optional resolver block: no instance when `/status` has none."""
    get = attrgetter(attr)
    return _pmta(lambda s: None if s.status.resolver is None else gauge32(get(s.status.resolver)))


def _s(name: str, rel: Oid, syntax: str, get: _Getter) -> tuple[MibObject, _Getter]:
    return MibObject(name, rel, Kind.SCALAR, syntax), get


def _acct(get: Callable[[OutcomesView], Value | None]) -> _Getter:
    """A scalar from the outcomes view: no instance without one (no accounting files)."""

    def getter(ctx: _Ctx) -> Value | None:
        return None if ctx.outcomes is None else get(ctx.outcomes)

    return getter


def _seconds(value: float) -> Value:
    return gauge32(int(value)) if math.isfinite(value) else gauge32(0)


def _age(moment: datetime) -> float:
    return max(0.0, (datetime.now(UTC) - moment).total_seconds())


def _others(dimension: str) -> Callable[[OutcomesView], Value]:
    return lambda v: gauge32(dict(v.other_items).get(dimension, 0))


_ACCT_SCALARS: Final[tuple[tuple[MibObject, _Getter], ...]] = (
    _s("pmtaAcctFiles", (1, 13, 1), _U, _acct(lambda v: utf8_text(v.files))),
    _s("pmtaAcctDiscontinuityTime", (1, 13, 2), "DateAndTime",
       _acct(lambda v: _opt_time(v.counting_since))),
    _s("pmtaAcctLastRead", (1, 13, 3), "DateAndTime", _acct(lambda v: _opt_time(v.updated))),
    _s("pmtaAcctNewestRecord", (1, 13, 4), "DateAndTime",
       _acct(lambda v: _opt_time(v.newest_record))),
    _s("pmtaAcctLag", (1, 13, 5), "Gauge32",
       _acct(lambda v: None if v.lag_seconds is None else _seconds(v.lag_seconds))),
    _s("pmtaAcctRecordsRead", (1, 13, 6), "Counter64",
       _acct(lambda v: counter64(sum(n for _kind, n in v.records)))),
    _s("pmtaAcctReadErrors", (1, 13, 7), "Counter64", _acct(lambda v: counter64(v.read_errors))),
    _s("pmtaAcctBackfilling", (1, 13, 8), "TruthValue", _acct(lambda v: _truth(v.backfilling))),
    _s("pmtaAcctWarnings", (1, 13, 9), _U, _acct(lambda v: utf8_text("; ".join(v.warnings)))),
    # Computed when read (mib/live.py, from pmtaAcctLastRead); the tree holds the age at build.
    _s("pmtaAcctReadAge", (1, 13, 10), "Gauge32", _acct(lambda v: None if v.updated is None
                                                        else _seconds(_age(v.updated)))),
    _s("pmtaProviderCount", (1, 14, 1), "Gauge32", _table_count(_PROVIDER_TABLE, omitted=False)),
    _s("pmtaProvidersOmitted", (1, 14, 2), "Gauge32",
       _table_count(_PROVIDER_TABLE, omitted=True)),
    _s("pmtaSourceIpCount", (1, 15, 1), "Gauge32",
       _table_count(_SOURCE_IP_TABLE, omitted=False)),
    _s("pmtaSourceIpsOther", (1, 15, 2), "Gauge32", _acct(_others(SOURCE_IP_DIMENSION))),
)
"""pmtaAcct, and the counts beside pmtaProviderTable and pmtaSourceIpTable."""


_SCALARS: Final[tuple[tuple[MibObject, _Getter], ...]] = (
    # pmtaRuntime
    _s("pmtaProductName", (1, 1, 1), _U, _pmta(lambda s: utf8_text(s.status.runtime.product, 64))),
    _s("pmtaProductVersion", (1, 1, 2), _U,
       _pmta(lambda s: _opt_text(s.status.runtime.version, 64))),
    _s("pmtaProductBuildDate", (1, 1, 3), _U,
       _pmta(lambda s: _opt_text(s.status.runtime.build_date, 64))),
    _s("pmtaFullHostName", (1, 1, 4), _U, _pmta(lambda s: _opt_text(s.status.runtime.host_name))),
    _s("pmtaOsName", (1, 1, 5), _U, _pmta(lambda s: _opt_text(s.status.runtime.os_name))),
    _s("pmtaRunStatus", (1, 1, 6), _U, _pmta(lambda s: utf8_text(s.status.runtime.status, 64))),
    _s("pmtaShuttingDown", (1, 1, 7), "TruthValue",
       _pmta(lambda s: _truth(s.status.runtime.shutting_down))),
    _s("pmtaStartupTime", (1, 1, 8), "DateAndTime",
       _pmta(lambda s: _opt_time(s.status.runtime.startup_time))),
    _s("pmtaTimeNow", (1, 1, 9), "DateAndTime",
       _pmta(lambda s: _opt_time(s.status.runtime.time_now))),
    _s("pmtaUptime", (1, 1, 10), "Unsigned32",
       _pmta(lambda s: _opt_gauge(s.status.runtime.uptime_seconds))),
    # pmtaTraffic
    *_traffic_scalars(),
    _s("pmtaTrafficDiscontinuityTime", (1, 2, 6), "DateAndTime", _discontinuity),
    _s("pmtaOutMessageRate", (1, 2, 7), "Gauge32", _rate(lambda w: w.outbound.msg)),
    _s("pmtaOutRecipientRate", (1, 2, 8), "Gauge32", _rate(lambda w: w.outbound.rcp)),
    # pmtaConnections
    _s("pmtaActiveConnIn", (1, 3, 1), "Gauge32", _gauge("status.conn.smtp_in.cur")),
    _s("pmtaActiveConnOut", (1, 3, 2), "Gauge32", _gauge("status.conn.smtp_out.cur")),
    _s("pmtaMaxConnIn", (1, 3, 3), "Gauge32", _gauge("status.conn.smtp_in.max")),
    _s("pmtaMaxConnOut", (1, 3, 4), "Gauge32", _gauge("status.conn.smtp_out.max")),
    _s("pmtaTopConnIn", (1, 3, 5), "Gauge32", _gauge("status.conn.smtp_in.top")),
    _s("pmtaTopConnOut", (1, 3, 6), "Gauge32", _gauge("status.conn.smtp_out.top")),
    # pmtaQueueTypes (the table follows at .4)
    _s("pmtaSmtpQueueRcpt", (1, 4, 1), "Gauge32",
       _pmta(lambda s: gauge32(s.status.queue_type("smtp").rcp))),
    _s("pmtaSmtpQueueDomains", (1, 4, 2), "Gauge32",
       _pmta(lambda s: gauge32(s.status.queue_type("smtp").dom))),
    _s("pmtaSmtpQueueKBytes", (1, 4, 3), "Gauge32",
       _pmta(lambda s: gauge32(_kb(s.status.queue_type("smtp").kb)))),
    # pmtaSpool
    _s("pmtaSpoolInitialization", (1, 5, 1), "Unsigned32",
       _pmta(lambda s: gauge32(min(s.status.spool.init_pct, 100)))),
    _s("pmtaSpoolDirs", (1, 5, 2), "Gauge32", _gauge("status.spool.dirs")),
    _s("pmtaSpoolFilesInUse", (1, 5, 3), "Gauge32", _gauge("status.spool.files_in_use")),
    _s("pmtaSpoolFilesRecycled", (1, 5, 4), "Gauge32", _gauge("status.spool.files_recycled")),
    _s("pmtaSpoolFilesTotal", (1, 5, 5), "Gauge32", _gauge("status.spool.files_total")),
    _s("pmtaSpoolTotalRcp", (1, 5, 6), "Gauge32", _gauge("status.spool.total_rcp")),
    _s("pmtaSpoolMaxRcp", (1, 5, 7), "Gauge32", _gauge("status.spool.max_rcp")),
    # pmtaResolver (optional in /status)
    _s("pmtaDomainNamesCached", (1, 6, 1), "Gauge32", _resolver("names_cached")),
    _s("pmtaDomainNamesPending", (1, 6, 2), "Gauge32", _resolver("queries_pending")),
    _s("pmtaResolverQueriesActive", (1, 6, 3), "Gauge32", _resolver("queries_active")),
    # pmtaLicense
    _s("pmtaLicenseExpires", (1, 7, 1), "DisplayString", _pmta(_license_expires)),
    _s("pmtaLicenseDaysLeft", (1, 7, 2), "Integer32", _license_days),
    _s("pmtaLicenseSerial", (1, 7, 3), _U, _license_field("serial", 64)),
    _s("pmtaLicenseLicensee", (1, 7, 4), _U, _license_field("licensee", MAX_TEXT_OCTETS)),
    _s("pmtaLicenseIssued", (1, 7, 5), _U, _license_field("issued", 64)),
    # pmtaVmtas, pmtaDomains, pmtaQueues: counts (their tables follow at .3)
    _s("pmtaVmtaCount", (1, 8, 1), "Gauge32", _table_count(_VMTA_TABLE, omitted=False)),
    _s("pmtaVmtasOmitted", (1, 8, 2), "Gauge32", _table_count(_VMTA_TABLE, omitted=True)),
    _s("pmtaDomainCount", (1, 9, 1), "Gauge32", _table_count(_DOMAIN_TABLE, omitted=False)),
    _s("pmtaDomainsOmitted", (1, 9, 2), "Gauge32", _table_count(_DOMAIN_TABLE, omitted=True)),
    _s("pmtaQueueCount", (1, 10, 1), "Gauge32", _table_count(_QUEUE_TABLE, omitted=False)),
    _s("pmtaQueuesOmitted", (1, 10, 2), "Gauge32", _table_count(_QUEUE_TABLE, omitted=True)),
    # ... and how complete PowerMTA's lists are (after each table, at .4 and .5)
    _s("pmtaVmtaRowsListed", (1, 8, 4), "Gauge32", _pmta(lambda s: gauge32(len(s.vmtas)))),
    _s("pmtaVmtaRowsKnown", (1, 8, 5), "Gauge32", _pmta(lambda s: _known(s.lists.vmtas))),
    _s("pmtaDomainRowsListed", (1, 9, 4), "Gauge32", _pmta(lambda s: gauge32(len(s.domains)))),
    _s("pmtaDomainRowsKnown", (1, 9, 5), "Gauge32", _pmta(lambda s: _known(s.lists.domains))),
    _s("pmtaQueueRowsListed", (1, 10, 4), "Gauge32", _pmta(lambda s: gauge32(len(s.queues)))),
    _s("pmtaQueueRowsKnown", (1, 10, 5), "Gauge32", _pmta(lambda s: _known(s.lists.queues))),
    # pmtaAgent: always present
    _s("pmtaAgentVersion", (1, 11, 1), _U, lambda c: utf8_text(c.health.agent_version, 64)),
    _s("pmtaAgentApiReachable", (1, 11, 2), "TruthValue", _value(_truth, "health.api_reachable")),
    _s("pmtaAgentLastSuccess", (1, 11, 3), "DateAndTime", _value(_opt_time, "health.last_success")),
    _s("pmtaAgentDataAge", (1, 11, 4), "Gauge32", _data_age),
    _s("pmtaAgentPollSuccesses", (1, 11, 5), "Counter32",
       _value(counter32, "health.poll_successes")),
    _s("pmtaAgentPollFailures", (1, 11, 6), "Counter32", _value(counter32, "health.poll_failures")),
    _s("pmtaAgentConsecutiveFailures", (1, 11, 7), "Gauge32",
       _value(gauge32, "health.consecutive_failures")),
    _s("pmtaAgentLastError", (1, 11, 8), _U, lambda c: utf8_text(c.health.last_error)),
    _s("pmtaAgentStartTime", (1, 11, 9), "DateAndTime", _value(_opt_time, "health.started_at")),
    # pmtaConfig: always present
    _s("pmtaCfgQueueRcptRaise", (1, 12, 1), "Unsigned32",
       _value(gauge32, "thresholds.queue_rcpt_raise")),
    _s("pmtaCfgQueueRcptClear", (1, 12, 2), "Unsigned32",
       _value(gauge32, "thresholds.queue_rcpt_clear")),
    _s("pmtaCfgApiFailuresRaise", (1, 12, 3), "Unsigned32",
       _value(gauge32, "thresholds.api_failures_raise")),
    _s("pmtaCfgLicenseDaysRaise", (1, 12, 4), "Integer32",
       _value(integer32, "thresholds.license_days_raise")),
    _s("pmtaCfgBlocklistRaise", (1, 12, 5), "Unsigned32",
       _value(gauge32, "thresholds.blocklist_raise")),
    # pmtaAcct, pmtaProviders, pmtaSourceIps: from the outcomes view
    *_ACCT_SCALARS,
)

_SCALAR_GETTERS: Final[Mapping[str, _Getter]] = {obj.name: get for obj, get in _SCALARS}

OBJECTS: Final[tuple[MibObject, ...]] = tuple(
    sorted(
        [obj for obj, _ in _SCALARS]
        + [o for t in _TABLES for o in (*t.indices, *(c.obj for c in t.columns))],
        key=lambda o: o.rel,
    )
)
"""Every OBJECT-TYPE of the module with instances (scalars, columns, index columns)."""

_BY_NAME: Final[Mapping[str, Oid]] = {
    **{o.name: o.rel for o in OBJECTS},
    **{n.name: n.rel for n in NOTIFICATIONS},
}


# --- the layout for one enterprise number ----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Section:
    """A scalar (getter, its `.0` instance) or a table (its column OIDs), in OID order."""

    rel: Oid
    get: _Getter | None
    instance: Oid
    table: _Table[Any] | None
    columns: tuple[Oid, ...]


@dataclass(frozen=True, slots=True)
class Layout:
    """PMTA-SNMP-MIB's OIDs under one enterprise number (get one with `layout()`)."""

    enterprise: int
    base: Oid
    objects: tuple[Oid, ...]
    """Served object OIDs (scalars without `.0`, readable columns without index), sorted."""
    sections: tuple[_Section, ...] = field(repr=False)

    def oid(self, name: str) -> Oid:
        """Absolute OID of an object or notification by its MIB name (KeyError if unknown)."""
        return self.base + _BY_NAME[name]

    def instance(self, name: str) -> Oid:
        """Absolute OID of a scalar's instance (`name.0`)."""
        return self.base + _BY_NAME[name] + (0,)


@lru_cache(maxsize=8)
def layout(enterprise: int = ENTERPRISE) -> Layout:
    """The (cached) layout under `enterprises.<enterprise>.25`."""
    base = base_oid(enterprise)
    sections = [_Section(obj.rel, get, (*base, *obj.rel, 0), None, ()) for obj, get in _SCALARS]
    for table in _TABLES:
        cols = tuple(base + c.obj.rel for c in table.columns)
        sections.append(_Section(table.entry, None, (), table, cols))
    sections.sort(key=lambda sec: sec.rel)
    served = sorted(base + o.rel for o in OBJECTS if o.kind is not Kind.INDEX)
    return Layout(enterprise, base, tuple(served), tuple(sections))


def base_oid(enterprise: int = ENTERPRISE) -> Oid:
    """OID of `pmtaSnmpMIB`: 1.3.6.1.4.1.<enterprise>.25."""
    if isinstance(enterprise, bool) or not isinstance(enterprise, int):
        raise TypeError(f"enterprise must be an int, got {enterprise!r}")
    if not 1 <= enterprise <= _MAX32:
        raise ValueError(f"enterprise number must be 1..4294967295, got {enterprise}")
    return (1, 3, 6, 1, 4, 1, enterprise, MODULE_ARC)


def oid(name: str, enterprise: int = ENTERPRISE) -> Oid:
    """Absolute OID of an object or notification by its MIB name."""
    return layout(enterprise).oid(name)


def object_prefixes(enterprise: int = ENTERPRISE) -> tuple[Oid, ...]:
    """Served objects (scalars without `.0`, readable columns), sorted, for `OidTree`."""
    return layout(enterprise).objects


def _default_today(snapshot: Snapshot | None) -> date:
    """PowerMTA's own date when known (licenses expire on its calendar), else ours."""
    if snapshot is not None:
        if snapshot.status.runtime.time_now is not None:
            return snapshot.status.runtime.time_now.date()
        if snapshot.taken_at is not None:
            return snapshot.taken_at.date()
    return datetime.now(UTC).date()


def _context(snapshot: Snapshot | None, health: AgentHealth, thresholds: Thresholds | None,
             today: date | None, outcomes: OutcomesView | None = None) -> _Ctx:
    """The inputs of one build, with the defaults of `build_varbinds` filled in."""
    return _Ctx(
        snapshot,
        health,
        thresholds if thresholds is not None else Thresholds(),
        today if today is not None else _default_today(snapshot),
        outcomes,
    )


def build_varbinds(
    snapshot: Snapshot | None,
    health: AgentHealth,
    *,
    thresholds: Thresholds | None = None,
    today: date | None = None,
    enterprise: int = ENTERPRISE,
    outcomes: OutcomesView | None = None,
) -> list[tuple[Oid, Value]]:
    """Every instance of PMTA-SNMP-MIB for one poll, in ascending OID order, OIDs unique.

    `snapshot` None (never reached PowerMTA) leaves only the pmtaAgent and pmtaConfig
    objects. `today` (for license days left) defaults to PowerMTA's date in the snapshot.
    `outcomes` (the outcomes engine's view) fills pmtaAcct and the provider and source IP
    tables; without it they have no instances.
    """
    return list(iter_varbinds(
        snapshot, health, thresholds=thresholds, today=today, enterprise=enterprise,
        outcomes=outcomes,
    ))


def iter_varbinds(
    snapshot: Snapshot | None,
    health: AgentHealth,
    *,
    thresholds: Thresholds | None = None,
    today: date | None = None,
    enterprise: int = ENTERPRISE,
    outcomes: OutcomesView | None = None,
) -> Iterator[tuple[Oid, Value]]:
    """`build_varbinds` one column at a time: a consumer that packs as it goes (the OID tree)
    never holds more than one column's objects."""
    lay = layout(enterprise)
    ctx = _context(snapshot, health, thresholds, today, outcomes)
    for sec in lay.sections:
        if sec.get is not None:
            value = sec.get(ctx)
            if value is not None:
                yield sec.instance, value
            continue
        table = sec.table
        assert table is not None
        rows, _omitted = ctx.table_rows(table)
        if not rows:
            continue
        indices = [idx for idx, _row in rows]
        records = [row for _idx, row in rows]
        for prefix, column in zip(sec.columns, table.columns, strict=True):
            cells = column.cells(list(map(attrgetter(column.attr), records)))
            yield from zip([prefix + idx for idx in indices], cells, strict=True)


def notification_varbinds(
    notification: str,
    snapshot: Snapshot | None,
    health: AgentHealth,
    *,
    thresholds: Thresholds | None = None,
    today: date | None = None,
    enterprise: int = ENTERPRISE,
) -> list[tuple[Oid, Value]]:
    """Varbinds of a notification: snmpTrapOID.0 first, then its OBJECTS (`name.0`).

    Values are what a Get would return for the same inputs (the value, then the threshold).
    An object with no instance (e.g. no license read yet) is left out. The sender prepends
    sysUpTime.0 if it wants to (AgentX Notify makes it optional).
    """
    spec = _notification(notification)
    lay = layout(enterprise)
    ctx = _context(snapshot, health, thresholds, today)
    out: list[tuple[Oid, Value]] = [
        (SNMP_TRAP_OID, Value(SnmpType.OBJECT_IDENTIFIER, lay.oid(spec.name)))
    ]
    for name in spec.objects:
        value = _SCALAR_GETTERS[name](ctx)
        if value is not None:
            out.append((lay.instance(name), value))
    return out


def source_ip_varbinds(
    notification: str,
    outcomes: OutcomesView,
    source_ip: str,
    *,
    thresholds: Thresholds | None = None,
    enterprise: int = ENTERPRISE,
) -> list[tuple[Oid, Value]] | None:
    """Varbinds of a per-source-IP notification: snmpTrapOID.0, then its OBJECTS, the
    pmtaSourceIpTable columns with that address's row index (what a Get of the row returns)
    and the scalars with `.0`. None when the address has no row of its own in `outcomes`."""
    spec = _notification(notification)
    family, address = packed_address(source_ip)  # however the address was written
    row = next((r for r in _source_ip_rows(outcomes)
                if family in (4, 6) and (r.family, r.address) == (family, address)), None)
    index = None if row is None else _source_ip_index(row)
    if row is None or index is None:
        return None
    lay = layout(enterprise)
    ctx = _context(None, AgentHealth(), thresholds, None, outcomes)
    columns = {c.obj.name: c for c in _SOURCE_IP_TABLE.columns}
    out: list[tuple[Oid, Value]] = [
        (SNMP_TRAP_OID, Value(SnmpType.OBJECT_IDENTIFIER, lay.oid(spec.name)))
    ]
    for name in spec.objects:
        column = columns.get(name)
        if column is None:
            value = _SCALAR_GETTERS[name](ctx)
            if value is not None:
                out.append((lay.instance(name), value))
        else:
            cell = column.cells([attrgetter(column.attr)(row)])[0]
            out.append((lay.oid(name) + index, cell))
    return out


def _notification(name: str) -> NotificationType:
    spec = next((n for n in NOTIFICATIONS if n.name == name), None)
    if spec is None:
        raise KeyError(f"unknown notification {name!r}")
    return spec
