"""Answer master requests (Get, GetNext, GetBulk, Set phases) from an OidTree.

Pure and synchronous: every call reads the tree returned by the getter once,
so a poller can swap trees at any time and a request never waits on a poll.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Final

from pmta_snmp.agentx.codec import (
    HEADER_LEN,
    AnyVarBind,
    CleanupSet,
    CommitSet,
    ErrorCode,
    Flags,
    Get,
    GetBulk,
    GetNext,
    Pdu,
    PduType,
    RawVarBind,
    Response,
    SearchRange,
    TestSet,
    UndoSet,
    VarBind,
    encode_raw_varbind,
    encode_response_header,
    raw_varbind,
    read_oid_key,
)
from pmta_snmp.mib.snapshot import Oid, OidTree, SnmpType, Value, oid_key

__all__ = [
    "DEFAULT_MAX_BULK_VARBINDS",
    "RequestHandler",
    "TreeGetter",
    "UptimeGetter",
    "get",
    "getbulk",
    "getnext",
    "uptime_since",
]

TreeGetter = Callable[[], OidTree]
UptimeGetter = Callable[[], int]
"""Returns sysUpTime in hundredths of a second."""

DEFAULT_MAX_BULK_VARBINDS = 1000

_FAST_FLAGS: Final = Flags.NETWORK_BYTE_ORDER
_FAST_KINDS: Final = frozenset({PduType.GET_NEXT, PduType.GET})
_HEADER: Final = struct.Struct(">BBBxIIII")
_UPTIME_NO_ERROR: Final = struct.Struct(">IHH")  # sysUpTime, error 0, index 0
_EOM: Final = int(SnmpType.END_OF_MIB_VIEW)
_NO_SUCH_OBJECT: Final = int(SnmpType.NO_SUCH_OBJECT)
_NO_SUCH_INSTANCE: Final = int(SnmpType.NO_SUCH_INSTANCE)


def _key_oid(key: bytes) -> Oid:
    return struct.unpack(f">{len(key) >> 2}I", key)

NO_SUCH_OBJECT = Value(SnmpType.NO_SUCH_OBJECT)
NO_SUCH_INSTANCE = Value(SnmpType.NO_SUCH_INSTANCE)
END_OF_MIB_VIEW = Value(SnmpType.END_OF_MIB_VIEW)


def uptime_since(start: float | None = None) -> UptimeGetter:
    """A sysUpTime getter counting centiseconds (mod 2^32) from `start` (monotonic)."""
    t0 = time.monotonic() if start is None else start

    def uptime() -> int:
        return int((time.monotonic() - t0) * 100) & 0xFFFFFFFF

    return uptime


def _found(tree: OidTree, i: int) -> RawVarBind:
    return raw_varbind(*tree.raw(i))


def get(tree: OidTree, ranges: tuple[SearchRange, ...]) -> tuple[AnyVarBind, ...]:
    """Exact lookups: noSuchInstance under a known object, noSuchObject elsewhere."""
    out: list[AnyVarBind] = []
    for r in ranges:
        oid = r.start
        i = tree.index(oid)
        if i is not None:
            out.append(_found(tree, i))
        else:
            value = NO_SUCH_INSTANCE if tree.has_object(oid) else NO_SUCH_OBJECT
            out.append(VarBind(oid, value))
    return tuple(out)


def _next(tree: OidTree, r: SearchRange) -> AnyVarBind:
    i = tree.next_index(r.start, r.include, r.end)
    if i is None:
        return VarBind(r.start, END_OF_MIB_VIEW)
    return _found(tree, i)


def getnext(tree: OidTree, ranges: tuple[SearchRange, ...]) -> tuple[AnyVarBind, ...]:
    """Per range, the first instance after start (or at it with include) and before end."""
    return tuple([_next(tree, r) for r in ranges])


def getbulk(
    tree: OidTree,
    non_repeaters: int,
    max_repetitions: int,
    ranges: tuple[SearchRange, ...],
    max_varbinds: int = DEFAULT_MAX_BULK_VARBINDS,
) -> tuple[AnyVarBind, ...]:
    """GetNext for the first `non_repeaters` ranges, then up to `max_repetitions`
    rounds over the others, interleaved; a repeater at endOfMibView stays there.

    The answer holds at most `max_varbinds` varbinds (whole rounds only, the
    non-repeaters always), and stops early once every repeater is exhausted.
    After the first round a repeater's next entry is simply the following index of the
    tree, checked against its end bound: no search per repetition.
    """
    n = max(0, min(non_repeaters, len(ranges)))
    out = [_next(tree, r) for r in ranges[:n]]
    repeaters = ranges[n:]
    if not repeaters or max_repetitions <= 0:
        return tuple(out)
    rounds = min(max_repetitions, max(1, (max_varbinds - n) // len(repeaters)))
    size = len(tree)
    # Per repeater: the index answered last (None once exhausted), its end key, and the
    # endOfMibView varbind it repeats from then on.
    cursors: list[int | None] = [tree.next_index(r.start, r.include, r.end) for r in repeaters]
    ends = [oid_key(r.end) if r.end else None for r in repeaters]
    done: list[AnyVarBind | None] = [None] * len(repeaters)
    for round_no in range(rounds):
        exhausted = 0
        for j, r in enumerate(repeaters):
            i = cursors[j]
            if round_no and i is not None:
                i += 1
                end = ends[j]
                if i >= size or (end is not None and tree.key(i) >= end):
                    i = None
                cursors[j] = i
            if i is None:
                exhausted += 1
                eom = done[j]
                if eom is None:
                    # The name of the last varbind answered for this range, or its start.
                    last = out[-len(repeaters)] if round_no else None
                    eom = done[j] = VarBind(last.name if last is not None else r.start,
                                            END_OF_MIB_VIEW)
                out.append(eom)
            else:
                out.append(_found(tree, i))
        if exhausted == len(repeaters):
            break
    return tuple(out)


class RequestHandler:
    """Turns master requests into Responses using the tree current at call time."""

    def __init__(
        self,
        tree: TreeGetter,
        sys_uptime: UptimeGetter | None = None,
        max_bulk_varbinds: int = DEFAULT_MAX_BULK_VARBINDS,
    ) -> None:
        self._tree = tree
        self._uptime = sys_uptime or uptime_since()
        self.max_bulk_varbinds = max_bulk_varbinds

    def _reply(
        self,
        req: Pdu,
        varbinds: tuple[AnyVarBind, ...] = (),
        error: int = ErrorCode.NO_ERROR,
        index: int = 0,
    ) -> Response:
        return Response(
            self._uptime(),
            error,
            index,
            varbinds,
            session_id=req.session_id,
            transaction_id=req.transaction_id,
            packet_id=req.packet_id,
            network_byte_order=req.network_byte_order,
        )

    def answer_packet(self, packet: bytes) -> bytes | None:
        """The encoded Response to one whole Get or GetNext packet, or None to take the
        general path (`decode_packet` + `handle`).

        The fast path of the request loop: only network byte order, flags exactly
        NETWORK_BYTE_ORDER (no context, nothing else) and a well-formed payload; names and
        values go from the packet and the packed tree to the answer as bytes, without
        building PDU, SearchRange, Value or VarBind objects. Any doubt returns None, and the
        general path answers (or reports the parse error) exactly as it always does; the
        answer is byte-for-byte the general path's (tests compare them).
        """
        if len(packet) < HEADER_LEN or packet[2] != _FAST_FLAGS or packet[0] != 1:
            return None
        kind = packet[1]
        if kind not in _FAST_KINDS:
            return None
        _, _, _, sid, tid, pid, length = _HEADER.unpack_from(packet, 0)
        end = HEADER_LEN + length
        if end != len(packet):
            return None
        tree = self._tree()
        out: list[bytes] = []
        pos = HEADER_LEN
        while pos < end:
            start = read_oid_key(packet, pos, end)
            if start is None:
                return None
            key, include, pos = start
            stop = read_oid_key(packet, pos, end)
            if stop is None:
                return None
            end_key, _, pos = stop
            if kind == PduType.GET_NEXT:
                i = tree.next_index_of_key(key, include, end_key)
                code = _EOM
            else:
                i = tree.index_of_key(key)
                code = _NO_SUCH_OBJECT
                if i is None and tree.has_object(_key_oid(key)):
                    code = _NO_SUCH_INSTANCE
            if i is None:
                out.append(encode_raw_varbind(code, key, b""))
            else:
                out.append(encode_raw_varbind(*tree.raw(i)))
        body = _UPTIME_NO_ERROR.pack(self._uptime(), 0, 0) + b"".join(out)
        return encode_response_header(sid, tid, pid, len(body)) + body

    def error_response(self, req: Pdu, error: int, index: int = 0) -> Response:
        """A Response to `req` carrying only an error code."""
        return self._reply(req, error=error, index=index)

    def handle(self, pdu: Pdu) -> Response | None:
        """The Response to send for a master request, or None (CleanupSet, non-requests)."""
        if isinstance(pdu, Get | GetNext | GetBulk | TestSet) and pdu.context is not None:
            return self._reply(pdu, error=ErrorCode.UNSUPPORTED_CONTEXT)
        if isinstance(pdu, GetNext):
            return self._reply(pdu, getnext(self._tree(), pdu.ranges))
        if isinstance(pdu, Get):
            return self._reply(pdu, get(self._tree(), pdu.ranges))
        if isinstance(pdu, GetBulk):
            vbs = getbulk(
                self._tree(),
                pdu.non_repeaters,
                pdu.max_repetitions,
                pdu.ranges,
                self.max_bulk_varbinds,
            )
            return self._reply(pdu, vbs)
        if isinstance(pdu, TestSet):
            # Read-only subagent: refuse the first varbind (index is 1-based).
            return self._reply(pdu, error=ErrorCode.NOT_WRITABLE, index=1 if pdu.varbinds else 0)
        if isinstance(pdu, CommitSet | UndoSet):
            return self._reply(pdu)
        if isinstance(pdu, CleanupSet):
            return None
        return None
