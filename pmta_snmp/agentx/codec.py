"""AgentX (RFC 2741) PDU codec: bytes ↔ one frozen dataclass per PDU type.

Pure: no I/O. `Pdu.encode()` builds a packet; `decode_packet()` takes a stream
buffer and returns the first complete PDU plus the leftover bytes. Malformed
input raises only `AgentXParseError`, which carries the header when one was read.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import ClassVar, Final, NamedTuple, TypedDict

from pmta_snmp.mib.snapshot import MAX_OID_LEN, Oid, SnmpType, Value

__all__ = [
    "CONTEXT_PDU_TYPES",
    "HEADER_LEN",
    "MAX_PAYLOAD_LEN",
    "AddAgentCaps",
    "AgentXEncodeError",
    "AgentXParseError",
    "AnyVarBind",
    "CleanupSet",
    "Close",
    "CloseReason",
    "CommitSet",
    "ErrorCode",
    "Flags",
    "Get",
    "GetBulk",
    "GetNext",
    "Header",
    "IndexAllocate",
    "IndexDeallocate",
    "Notify",
    "Open",
    "Pdu",
    "PduType",
    "Ping",
    "RawVarBind",
    "Register",
    "RemoveAgentCaps",
    "Response",
    "SearchRange",
    "TestSet",
    "UndoSet",
    "Unregister",
    "VarBind",
    "decode_header",
    "decode_oid",
    "decode_packet",
    "encode_oid",
    "encode_raw_varbind",
    "encode_response_header",
    "raw_varbind",
    "read_oid_key",
]

HEADER_LEN: Final = 20
MAX_PAYLOAD_LEN: Final = 1 << 20
"""Larger payload_length values are treated as a corrupt stream, never buffered."""

_INTERNET: Final = (1, 3, 6, 1)
_HEADER_BE: Final = struct.Struct(">BBBxIIII")
_HEADER_LE: Final = struct.Struct("<BBBxIIII")


class PduType(IntEnum):
    """AgentX PDU types (RFC 2741 §6.1)."""

    OPEN = 1
    CLOSE = 2
    REGISTER = 3
    UNREGISTER = 4
    GET = 5
    GET_NEXT = 6
    GET_BULK = 7
    TEST_SET = 8
    COMMIT_SET = 9
    UNDO_SET = 10
    CLEANUP_SET = 11
    NOTIFY = 12
    PING = 13
    INDEX_ALLOCATE = 14
    INDEX_DEALLOCATE = 15
    ADD_AGENT_CAPS = 16
    REMOVE_AGENT_CAPS = 17
    RESPONSE = 18


class Flags(IntFlag):
    """Header flag bits (RFC 2741 §6.1)."""

    NONE = 0
    INSTANCE_REGISTRATION = 0x01
    NEW_INDEX = 0x02
    ANY_INDEX = 0x04
    NON_DEFAULT_CONTEXT = 0x08
    NETWORK_BYTE_ORDER = 0x10


class ErrorCode(IntEnum):
    """Response res.error values: SNMP errors 0-18, AgentX errors 256-268."""

    NO_ERROR = 0
    TOO_BIG = 1
    NO_SUCH_NAME = 2
    BAD_VALUE = 3
    READ_ONLY = 4
    GEN_ERR = 5
    NO_ACCESS = 6
    WRONG_TYPE = 7
    WRONG_LENGTH = 8
    WRONG_ENCODING = 9
    WRONG_VALUE = 10
    NO_CREATION = 11
    INCONSISTENT_VALUE = 12
    RESOURCE_UNAVAILABLE = 13
    COMMIT_FAILED = 14
    UNDO_FAILED = 15
    AUTHORIZATION_ERROR = 16
    NOT_WRITABLE = 17
    INCONSISTENT_NAME = 18
    OPEN_FAILED = 256
    NOT_OPEN = 257
    INDEX_WRONG_TYPE = 258
    INDEX_ALREADY_ALLOCATED = 259
    INDEX_NONE_AVAILABLE = 260
    INDEX_NOT_ALLOCATED = 261
    UNSUPPORTED_CONTEXT = 262
    DUPLICATE_REGISTRATION = 263
    UNKNOWN_REGISTRATION = 264
    UNKNOWN_AGENT_CAPS = 265
    PARSE_ERROR = 266
    REQUEST_DENIED = 267
    PROCESSING_ERROR = 268


class CloseReason(IntEnum):
    """Close PDU reasons (RFC 2741 §6.2.2)."""

    OTHER = 1
    PARSE_ERROR = 2
    PROTOCOL_ERROR = 3
    TIMEOUTS = 4
    SHUTDOWN = 5
    BY_MANAGER = 6


# Plain-int copies of the flag bits: IntFlag arithmetic is slow on the request path.
_F_INSTANCE: Final = 0x01
_F_NEW_INDEX: Final = 0x02
_F_ANY_INDEX: Final = 0x04
_F_CONTEXT: Final = 0x08
_F_NBO: Final = 0x10

CONTEXT_PDU_TYPES: Final = frozenset(
    {
        PduType.REGISTER,
        PduType.UNREGISTER,
        PduType.GET,
        PduType.GET_NEXT,
        PduType.GET_BULK,
        PduType.TEST_SET,
        PduType.NOTIFY,
        PduType.PING,
        PduType.INDEX_ALLOCATE,
        PduType.INDEX_DEALLOCATE,
        PduType.ADD_AGENT_CAPS,
        PduType.REMOVE_AGENT_CAPS,
    }
)
"""PDU types that carry a context octet string when NON_DEFAULT_CONTEXT is set."""


class Header(NamedTuple):
    """The fixed 20-octet AgentX header, as decoded (a named tuple: built once per packet)."""

    version: int
    pdu_type: int
    flags: int
    session_id: int
    transaction_id: int
    packet_id: int
    payload_length: int

    @property
    def network_byte_order(self) -> bool:
        """True when the packet's integers are big-endian."""
        return bool(self.flags & _F_NBO)


class AgentXParseError(Exception):
    """Malformed AgentX input.

    `header` is the decoded header when there was one (the session can then
    answer parseError); `skip` is how many bytes to drop to resynchronise the
    stream, or None when the stream cannot be trusted any more.
    """

    def __init__(self, message: str, header: Header | None = None, skip: int | None = None):
        super().__init__(message)
        self.header = header
        self.skip = skip


class AgentXEncodeError(ValueError):
    """A PDU holds values that cannot be encoded (out of range, too long, bad type)."""


class SearchRange(NamedTuple):
    """A GetNext/GetBulk range: from `start` (inclusive when `include`) to `end` (exclusive).

    An empty `end` is the null OID: no upper bound. Get uses ranges with a null end.
    (A named tuple rather than a frozen dataclass: decoding builds one per varbind.)
    """

    start: Oid
    end: Oid = ()
    include: bool = False


@dataclass(frozen=True, slots=True)
class VarBind:
    """A name and its typed value."""

    name: Oid
    value: Value


class RawVarBind:
    """A varbind already encoded in network byte order, e.g. copied from a packed OidTree.

    Encoding a Response in network byte order copies `data` verbatim; the other byte order,
    `name`, `value` and comparisons decode it first. Equal to the VarBind it encodes.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def decoded(self) -> VarBind:
        """The VarBind these bytes encode."""
        try:
            return _Reader(self.data, 0, len(self.data), True).varbind()
        except _Short as exc:
            raise AgentXEncodeError(f"malformed raw varbind: {exc}") from None

    @property
    def name(self) -> Oid:
        """The varbind's name."""
        return self.decoded().name

    @property
    def value(self) -> Value:
        """The varbind's value."""
        return self.decoded().value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RawVarBind):
            return self.data == other.data or self.decoded() == other.decoded()
        if isinstance(other, VarBind):
            return self.decoded() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.decoded())

    def __repr__(self) -> str:
        vb = self.decoded()
        return f"RawVarBind({vb.name!r}, {vb.value!r})"


AnyVarBind = VarBind | RawVarBind

_INTERNET_KEY: Final = b"\0\0\0\x01\0\0\0\x03\0\0\0\x06\0\0\0\x01\0\0\0"
_RAW_HEAD: Final = struct.Struct(">HxxBBxx")


def raw_varbind(type_code: int, key: bytes, data: bytes) -> RawVarBind:
    """A varbind from its type, name as big-endian 4-byte sub-ids and RFC 2741 data encoding.

    The name gets the 1.3.6.1.x prefix form whenever RFC 2741 allows it, as `encode_oid` does.
    """
    return RawVarBind(encode_raw_varbind(type_code, key, data))


def encode_raw_varbind(type_code: int, key: bytes, data: bytes) -> bytes:
    """The bytes of `raw_varbind` (network byte order)."""
    n = len(key) >> 2
    if n >= 5 and key.startswith(_INTERNET_KEY) and key[19]:
        return _RAW_HEAD.pack(type_code, n - 5, key[19]) + key[20:] + data
    return _RAW_HEAD.pack(type_code, n, 0) + key + data


def read_oid_key(buf: bytes, pos: int, end: int) -> tuple[bytes, bool, int] | None:
    """An OID in network byte order at `pos` as a key (big-endian sub-ids, the 1.3.6.1.x
    prefix expanded): (key, include, position after it), or None when it does not fit."""
    if pos + 4 > end:
        return None
    n, prefix, include = buf[pos], buf[pos + 1], buf[pos + 2]
    after = pos + 4 + 4 * n
    if after > end or (n + 5 if prefix else n) > MAX_OID_LEN:
        return None
    if prefix:
        return _INTERNET_KEY + bytes((prefix,)) + buf[pos + 4 : after], bool(include), after
    return buf[pos + 4 : after], bool(include), after


def encode_response_header(
    session_id: int, transaction_id: int, packet_id: int, payload_length: int
) -> bytes:
    """The 20-octet header of a Response in network byte order."""
    return _HEADER_BE.pack(
        1, PduType.RESPONSE, _F_NBO, session_id, transaction_id, packet_id, payload_length
    )


# --- primitive encoders ------------------------------------------------------

_STRUCTS: dict[tuple[bool, int], struct.Struct] = {}


def _oid_struct(big: bool, n: int) -> struct.Struct:
    s = _STRUCTS.get((big, n))
    if s is None:
        s = struct.Struct(f"{'>' if big else '<'}BBBx{n}I")
        _STRUCTS[(big, n)] = s
    return s


def encode_oid(oid: Oid, include: bool = False, big: bool = True) -> bytes:
    """Encode an OID, using the 1.3.6.1.x prefix form whenever RFC 2741 allows it."""
    n = len(oid)
    if n > MAX_OID_LEN:
        raise AgentXEncodeError(f"OID has {n} sub-ids (max {MAX_OID_LEN})")
    prefix = 0
    if n >= 5 and oid[:4] == _INTERNET and 0 < oid[4] < 256:
        prefix = oid[4]
        oid = oid[5:]
        n -= 5
    try:
        return _oid_struct(big, n).pack(n, prefix, 1 if include else 0, *oid)
    except struct.error as exc:
        raise AgentXEncodeError(f"bad OID {oid!r}: {exc}") from None


def _encode_octets(data: bytes, big: bool) -> bytes:
    n = len(data)
    if n > 0xFFFFFFFF:
        raise AgentXEncodeError("octet string too long")
    pad = -n % 4
    return (n.to_bytes(4, "big" if big else "little")) + bytes(data) + b"\0" * pad


_VALUE_FORMATS: Final[dict[SnmpType, str]] = {
    SnmpType.INTEGER: "i",
    SnmpType.COUNTER32: "I",
    SnmpType.GAUGE32: "I",
    SnmpType.TIME_TICKS: "I",
    SnmpType.COUNTER64: "Q",
}
_OCTET_TYPES: Final = frozenset({SnmpType.OCTET_STRING, SnmpType.OPAQUE, SnmpType.IP_ADDRESS})
_EMPTY_TYPES: Final = frozenset(
    {SnmpType.NULL, SnmpType.NO_SUCH_OBJECT, SnmpType.NO_SUCH_INSTANCE, SnmpType.END_OF_MIB_VIEW}
)


_VB_HEAD_BE: Final = struct.Struct(">Hxx")
_VB_HEAD_LE: Final = struct.Struct("<Hxx")


def _encode_varbind(vb: AnyVarBind, big: bool) -> bytes:
    if type(vb) is RawVarBind:
        if big:
            return vb.data
        vb = vb.decoded()
    assert isinstance(vb, VarBind)
    value = vb.value
    t = value.type
    v = value.value
    o = ">" if big else "<"
    head = (_VB_HEAD_BE if big else _VB_HEAD_LE).pack(t) + encode_oid(vb.name, False, big)
    fmt = _VALUE_FORMATS.get(t)
    if fmt is not None:
        if not isinstance(v, int):
            raise AgentXEncodeError(f"{t.name} needs an int, got {v!r}")
        try:
            return head + struct.pack(o + fmt, v)
        except struct.error:
            raise AgentXEncodeError(f"{t.name} value out of range: {v!r}") from None
    if t in _OCTET_TYPES:
        if not isinstance(v, bytes):
            raise AgentXEncodeError(f"{t.name} needs bytes, got {v!r}")
        return head + _encode_octets(v, big)
    if t is SnmpType.OBJECT_IDENTIFIER:
        if not isinstance(v, tuple):
            raise AgentXEncodeError(f"OBJECT_IDENTIFIER needs a tuple, got {v!r}")
        return head + encode_oid(v, False, big)
    if t in _EMPTY_TYPES:
        return head
    raise AgentXEncodeError(f"unknown varbind type {t!r}")


def _encode_varbinds(varbinds: tuple[AnyVarBind, ...], big: bool) -> bytes:
    return b"".join([_encode_varbind(vb, big) for vb in varbinds])


def _encode_ranges(ranges: tuple[SearchRange, ...], big: bool) -> bytes:
    return b"".join(
        [encode_oid(r.start, r.include, big) + encode_oid(r.end, False, big) for r in ranges]
    )


# --- PDU classes -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Pdu:
    """Fields common to every PDU: the header ids, byte order and optional context."""

    TYPE: ClassVar[PduType]

    session_id: int = 0
    transaction_id: int = 0
    packet_id: int = 0
    network_byte_order: bool = True
    context: bytes | None = None

    def _payload(self, big: bool) -> bytes:
        return b""

    def _flags(self) -> int:
        return 0

    def encode(self) -> bytes:
        """The packet as bytes: header, optional context, payload."""
        big = self.network_byte_order
        flags = self._flags()
        if big:
            flags |= _F_NBO
        body = self._payload(big)
        if self.context is not None:
            if self.TYPE not in CONTEXT_PDU_TYPES:
                raise AgentXEncodeError(f"{self.TYPE.name} carries no context")
            flags |= _F_CONTEXT
            body = _encode_octets(self.context, big) + body
        try:
            header = (_HEADER_BE if big else _HEADER_LE).pack(
                1,
                self.TYPE,
                flags,
                self.session_id,
                self.transaction_id,
                self.packet_id,
                len(body),
            )
        except struct.error as exc:
            raise AgentXEncodeError(f"bad header field: {exc}") from None
        return header + body


@dataclass(frozen=True, slots=True)
class Open(Pdu):
    """Subagent → master: open a session. `timeout` in seconds, 0 = master default."""

    TYPE: ClassVar[PduType] = PduType.OPEN
    timeout: int = 0
    oid: Oid = ()
    description: bytes = b""

    def _payload(self, big: bool) -> bytes:
        return (
            _pack(big, "B3x", self.timeout)
            + encode_oid(self.oid, False, big)
            + _encode_octets(self.description, big)
        )


@dataclass(frozen=True, slots=True)
class Close(Pdu):
    """Either side: close the session with a reason."""

    TYPE: ClassVar[PduType] = PduType.CLOSE
    reason: int = CloseReason.SHUTDOWN

    def _payload(self, big: bool) -> bytes:
        return _pack(big, "B3x", self.reason)


@dataclass(frozen=True, slots=True)
class Register(Pdu):
    """Register a subtree (or a range of subtrees when `range_subid` ≠ 0)."""

    TYPE: ClassVar[PduType] = PduType.REGISTER
    subtree: Oid = ()
    timeout: int = 0
    priority: int = 127
    range_subid: int = 0
    upper_bound: int | None = None
    instance_registration: bool = False

    def _flags(self) -> int:
        return _F_INSTANCE if self.instance_registration else 0

    def _payload(self, big: bool) -> bytes:
        return _encode_registration(
            big, self.timeout, self.priority, self.range_subid, self.subtree, self.upper_bound
        )


@dataclass(frozen=True, slots=True)
class Unregister(Pdu):
    """Withdraw a registration made with Register."""

    TYPE: ClassVar[PduType] = PduType.UNREGISTER
    subtree: Oid = ()
    priority: int = 127
    range_subid: int = 0
    upper_bound: int | None = None

    def _payload(self, big: bool) -> bytes:
        return _encode_registration(
            big, 0, self.priority, self.range_subid, self.subtree, self.upper_bound
        )


def _encode_registration(
    big: bool, timeout: int, priority: int, range_subid: int, subtree: Oid, upper: int | None
) -> bytes:
    out = _pack(big, "BBBx", timeout, priority, range_subid) + encode_oid(subtree, False, big)
    if range_subid:
        if upper is None:
            raise AgentXEncodeError("range_subid needs an upper_bound")
        out += _pack(big, "I", upper)
    elif upper is not None:
        raise AgentXEncodeError("upper_bound without range_subid")
    return out


@dataclass(frozen=True, slots=True)
class _RangesPdu(Pdu):
    """A PDU whose payload is its search ranges (Get, GetNext)."""

    ranges: tuple[SearchRange, ...] = ()

    def _payload(self, big: bool) -> bytes:
        return _encode_ranges(self.ranges, big)


@dataclass(frozen=True, slots=True)
class Get(_RangesPdu):
    """Master → subagent: get exact instances (ranges with a null end)."""

    TYPE: ClassVar[PduType] = PduType.GET


@dataclass(frozen=True, slots=True)
class GetNext(_RangesPdu):
    """Master → subagent: the next instance in each range."""

    TYPE: ClassVar[PduType] = PduType.GET_NEXT


@dataclass(frozen=True, slots=True)
class GetBulk(Pdu):
    """Master → subagent: GetNext for non-repeaters, then repeated GetNext for the rest."""

    TYPE: ClassVar[PduType] = PduType.GET_BULK
    non_repeaters: int = 0
    max_repetitions: int = 0
    ranges: tuple[SearchRange, ...] = ()

    def _payload(self, big: bool) -> bytes:
        return _pack(big, "HH", self.non_repeaters, self.max_repetitions) + _encode_ranges(
            self.ranges, big
        )


@dataclass(frozen=True, slots=True)
class _VarBindsPdu(Pdu):
    """A PDU whose payload is its varbinds (TestSet, Notify, the index PDUs)."""

    varbinds: tuple[VarBind, ...] = ()

    def _payload(self, big: bool) -> bytes:
        return _encode_varbinds(self.varbinds, big)


@dataclass(frozen=True, slots=True)
class TestSet(_VarBindsPdu):
    """Master → subagent: phase one of a Set."""

    __test__: ClassVar[bool] = False  # not a pytest test class
    TYPE: ClassVar[PduType] = PduType.TEST_SET


@dataclass(frozen=True, slots=True)
class CommitSet(Pdu):
    """Master → subagent: commit a tested Set."""

    TYPE: ClassVar[PduType] = PduType.COMMIT_SET


@dataclass(frozen=True, slots=True)
class UndoSet(Pdu):
    """Master → subagent: undo a committed Set."""

    TYPE: ClassVar[PduType] = PduType.UNDO_SET


@dataclass(frozen=True, slots=True)
class CleanupSet(Pdu):
    """Master → subagent: end of a Set transaction; gets no Response."""

    TYPE: ClassVar[PduType] = PduType.CLEANUP_SET


@dataclass(frozen=True, slots=True)
class Notify(_VarBindsPdu):
    """Subagent → master: send a notification ([sysUpTime.0,] snmpTrapOID.0, objects…)."""

    TYPE: ClassVar[PduType] = PduType.NOTIFY


@dataclass(frozen=True, slots=True)
class Ping(Pdu):
    """Subagent → master: is the session alive?"""

    TYPE: ClassVar[PduType] = PduType.PING


@dataclass(frozen=True, slots=True)
class _IndexPdu(_VarBindsPdu):
    """IndexAllocate or IndexDeallocate: varbinds, and the NEW_INDEX / ANY_INDEX flags."""

    new_index: bool = False
    any_index: bool = False

    def _flags(self) -> int:
        return (_F_NEW_INDEX if self.new_index else 0) | (_F_ANY_INDEX if self.any_index else 0)


@dataclass(frozen=True, slots=True)
class IndexAllocate(_IndexPdu):
    """Subagent → master: allocate table index values."""

    TYPE: ClassVar[PduType] = PduType.INDEX_ALLOCATE


@dataclass(frozen=True, slots=True)
class IndexDeallocate(_IndexPdu):
    """Subagent → master: release index values."""

    TYPE: ClassVar[PduType] = PduType.INDEX_DEALLOCATE


@dataclass(frozen=True, slots=True)
class AddAgentCaps(Pdu):
    """Subagent → master: add an sysORTable entry."""

    TYPE: ClassVar[PduType] = PduType.ADD_AGENT_CAPS
    oid: Oid = ()
    description: bytes = b""

    def _payload(self, big: bool) -> bytes:
        return encode_oid(self.oid, False, big) + _encode_octets(self.description, big)


@dataclass(frozen=True, slots=True)
class RemoveAgentCaps(Pdu):
    """Subagent → master: remove an sysORTable entry."""

    TYPE: ClassVar[PduType] = PduType.REMOVE_AGENT_CAPS
    oid: Oid = ()

    def _payload(self, big: bool) -> bytes:
        return encode_oid(self.oid, False, big)


@dataclass(frozen=True, slots=True)
class Response(Pdu):
    """Answer to any request; `index` is 1-based into the request's varbinds (0 = none)."""

    TYPE: ClassVar[PduType] = PduType.RESPONSE
    sys_uptime: int = 0
    error: int = ErrorCode.NO_ERROR
    index: int = 0
    varbinds: tuple[AnyVarBind, ...] = ()

    def _payload(self, big: bool) -> bytes:
        return _pack(big, "IHH", self.sys_uptime, self.error, self.index) + _encode_varbinds(
            self.varbinds, big
        )


def _pack(big: bool, fmt: str, *args: int) -> bytes:
    try:
        return struct.pack((">" if big else "<") + fmt, *args)
    except struct.error as exc:
        raise AgentXEncodeError(f"field out of range: {exc}") from None


# --- decoding ----------------------------------------------------------------


class _Short(Exception):
    """Internal: payload ended early or held an invalid field."""


_SUBIDS: dict[tuple[str, int], struct.Struct] = {}


def _subids_struct(order: str, n: int) -> struct.Struct:
    s = _SUBIDS.get((order, n))
    if s is None:
        s = _SUBIDS[(order, n)] = struct.Struct(f"{order}{n}I")
    return s


class _Reader:
    """Cursor over one PDU's payload in one byte order."""

    __slots__ = ("buf", "end", "o", "pos")

    def __init__(self, buf: bytes, pos: int, end: int, big: bool) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end
        self.o = ">" if big else "<"

    def take(self, fmt: str, size: int) -> tuple[int, ...]:
        pos = self.pos
        if pos + size > self.end:
            raise _Short("payload too short")
        self.pos = pos + size
        return struct.unpack_from(self.o + fmt, self.buf, pos)

    def u32(self) -> int:
        return self.take("I", 4)[0]

    def oid(self) -> tuple[Oid, bool]:
        pos = self.pos
        buf = self.buf
        if pos + 4 > self.end:
            raise _Short("payload too short")
        n, prefix, include = buf[pos], buf[pos + 1], buf[pos + 2]  # single octets: any order
        total = n + 5 if prefix else n
        if total > MAX_OID_LEN:
            raise _Short(f"OID of {total} sub-ids")
        after = pos + 4 + 4 * n
        if after > self.end:
            raise _Short("payload too short")
        self.pos = after
        subids: Oid = _subids_struct(self.o, n).unpack_from(buf, pos + 4)
        if prefix:
            return (1, 3, 6, 1, prefix, *subids), bool(include)
        return subids, bool(include)

    def octets(self) -> bytes:
        n = self.u32()
        pos = self.pos
        padded = n + (-n % 4)
        if pos + padded > self.end:
            raise _Short("octet string overruns payload")
        self.pos = pos + padded
        return bytes(self.buf[pos : pos + n])

    def varbinds(self) -> tuple[VarBind, ...]:
        out: list[VarBind] = []
        while self.pos < self.end:
            out.append(self.varbind())
        return tuple(out)

    def varbind(self) -> VarBind:
        (code,) = self.take("Hxx", 4)
        try:
            t = SnmpType(code)
        except ValueError:
            raise _Short(f"unknown varbind type {code}") from None
        name, _ = self.oid()
        fmt = _VALUE_FORMATS.get(t)
        v: int | bytes | Oid | None
        if fmt is not None:
            v = self.take(fmt, 8 if fmt == "Q" else 4)[0]
        elif t in _OCTET_TYPES:
            v = self.octets()
            if t is SnmpType.IP_ADDRESS and len(v) != 4:
                raise _Short("IpAddress must have 4 octets")
        elif t is SnmpType.OBJECT_IDENTIFIER:
            v, _ = self.oid()
        else:
            v = None
        return VarBind(name, Value(t, v))

    def ranges(self) -> tuple[SearchRange, ...]:
        out: list[SearchRange] = []
        while self.pos < self.end:
            start, include = self.oid()
            end, _ = self.oid()
            out.append(SearchRange(start, end, include))
        return tuple(out)


def decode_oid(buf: bytes, offset: int = 0, big: bool = True) -> tuple[Oid, bool, int]:
    """Decode one OID at `offset`: (oid, include, offset after it)."""
    r = _Reader(buf, offset, len(buf), big)
    try:
        oid, include = r.oid()
    except (_Short, struct.error) as exc:
        raise AgentXParseError(f"bad OID: {exc}") from None
    return oid, include, r.pos


def decode_header(buf: bytes) -> Header:
    """Decode the first 20 octets; the flags byte picks the byte order of the rest."""
    if len(buf) < HEADER_LEN:
        raise AgentXParseError("header too short")
    big = bool(buf[2] & _F_NBO)
    fields = (_HEADER_BE if big else _HEADER_LE).unpack_from(buf, 0)
    return Header(*fields)


class _HeaderFields(TypedDict):
    session_id: int
    transaction_id: int
    packet_id: int
    network_byte_order: bool
    context: bytes | None


def _kw(h: Header, context: bytes | None) -> _HeaderFields:
    return {
        "session_id": h.session_id,
        "transaction_id": h.transaction_id,
        "packet_id": h.packet_id,
        "network_byte_order": h.network_byte_order,
        "context": context,
    }


_Decoder = Callable[[_Reader, Header, _HeaderFields], Pdu]


def _d_open(r: _Reader, h: Header, kw: _HeaderFields) -> Pdu:
    (timeout,) = r.take("B3x", 4)
    oid, _ = r.oid()
    return Open(timeout, oid, r.octets(), **kw)


def _d_close(r: _Reader, h: Header, kw: _HeaderFields) -> Pdu:
    (reason,) = r.take("B3x", 4)
    return Close(_enum_or_int(CloseReason, reason), **kw)


def _d_registration(r: _Reader) -> tuple[int, int, int, Oid, int | None]:
    timeout, priority, range_subid = r.take("BBBx", 4)
    subtree, _ = r.oid()
    upper = r.u32() if range_subid else None
    return timeout, priority, range_subid, subtree, upper


def _d_register(r: _Reader, h: Header, kw: _HeaderFields) -> Pdu:
    timeout, priority, range_subid, subtree, upper = _d_registration(r)
    inst = bool(h.flags & _F_INSTANCE)
    return Register(subtree, timeout, priority, range_subid, upper, inst, **kw)


def _d_unregister(r: _Reader, h: Header, kw: _HeaderFields) -> Pdu:
    _, priority, range_subid, subtree, upper = _d_registration(r)
    return Unregister(subtree, priority, range_subid, upper, **kw)


def _d_ranges(cls: type[_RangesPdu]) -> _Decoder:
    def decode(r: _Reader, h: Header, kw: _HeaderFields) -> Pdu:
        return cls(r.ranges(), **kw)

    return decode


def _d_getbulk(r: _Reader, h: Header, kw: _HeaderFields) -> Pdu:
    non_rep, max_rep = r.take("HH", 4)
    return GetBulk(non_rep, max_rep, r.ranges(), **kw)


def _d_varbinds(cls: type[_VarBindsPdu]) -> _Decoder:
    def decode(r: _Reader, h: Header, kw: _HeaderFields) -> Pdu:
        return cls(r.varbinds(), **kw)

    return decode


def _d_index(cls: type[_IndexPdu]) -> _Decoder:
    def decode(r: _Reader, h: Header, kw: _HeaderFields) -> Pdu:
        new = bool(h.flags & _F_NEW_INDEX)
        any_ = bool(h.flags & _F_ANY_INDEX)
        return cls(r.varbinds(), new, any_, **kw)

    return decode


def _d_empty(cls: type[Pdu]) -> _Decoder:
    def decode(r: _Reader, h: Header, kw: _HeaderFields) -> Pdu:
        return cls(**kw)

    return decode


def _d_addcaps(r: _Reader, h: Header, kw: _HeaderFields) -> Pdu:
    oid, _ = r.oid()
    return AddAgentCaps(oid, r.octets(), **kw)


def _d_removecaps(r: _Reader, h: Header, kw: _HeaderFields) -> Pdu:
    oid, _ = r.oid()
    return RemoveAgentCaps(oid, **kw)


def _d_response(r: _Reader, h: Header, kw: _HeaderFields) -> Pdu:
    uptime, error, index = r.take("IHH", 8)
    err = _enum_or_int(ErrorCode, error)
    return Response(uptime, err, index, r.varbinds(), **kw)


def _enum_or_int(enum: type[IntEnum], value: int) -> int:
    try:
        return enum(value)
    except ValueError:
        return value


_DECODERS: Final[dict[int, _Decoder]] = {
    PduType.OPEN: _d_open,
    PduType.CLOSE: _d_close,
    PduType.REGISTER: _d_register,
    PduType.UNREGISTER: _d_unregister,
    PduType.GET: _d_ranges(Get),
    PduType.GET_NEXT: _d_ranges(GetNext),
    PduType.GET_BULK: _d_getbulk,
    PduType.TEST_SET: _d_varbinds(TestSet),
    PduType.COMMIT_SET: _d_empty(CommitSet),
    PduType.UNDO_SET: _d_empty(UndoSet),
    PduType.CLEANUP_SET: _d_empty(CleanupSet),
    PduType.NOTIFY: _d_varbinds(Notify),
    PduType.PING: _d_empty(Ping),
    PduType.INDEX_ALLOCATE: _d_index(IndexAllocate),
    PduType.INDEX_DEALLOCATE: _d_index(IndexDeallocate),
    PduType.ADD_AGENT_CAPS: _d_addcaps,
    PduType.REMOVE_AGENT_CAPS: _d_removecaps,
    PduType.RESPONSE: _d_response,
}


def decode_packet(buf: bytes | bytearray | memoryview) -> tuple[Pdu | None, bytes]:
    """Decode the first PDU in a stream buffer.

    Returns (pdu, leftover bytes), or (None, buf) when the packet is still
    incomplete. A header is validated as soon as it is complete, so a corrupt
    length is reported at once instead of waiting for bytes that never come.
    """
    data = bytes(buf)
    if len(data) < HEADER_LEN:
        return None, data
    header = decode_header(data)
    length = header.payload_length
    if header.version != 1:
        raise AgentXParseError(f"unsupported AgentX version {header.version}", header)
    if length > MAX_PAYLOAD_LEN or length % 4:
        raise AgentXParseError(f"bad payload_length {length}", header)
    total = HEADER_LEN + length
    if len(data) < total:
        return None, data
    decoder = _DECODERS.get(header.pdu_type)
    if decoder is None:
        raise AgentXParseError(f"unknown PDU type {header.pdu_type}", header, total)
    r = _Reader(data, HEADER_LEN, total, header.network_byte_order)
    try:
        context = None
        if header.flags & _F_CONTEXT and header.pdu_type in CONTEXT_PDU_TYPES:
            context = r.octets()
        pdu = decoder(r, header, _kw(header, context))
        if r.pos != total:
            raise _Short(f"{total - r.pos} unexpected trailing octets")
    except (_Short, struct.error) as exc:
        name = PduType(header.pdu_type).name
        raise AgentXParseError(f"malformed {name} PDU: {exc}", header, total) from None
    return pdu, data[total:]
