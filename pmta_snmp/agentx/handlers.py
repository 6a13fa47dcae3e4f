"""Answer master requests (Get, GetNext, GetBulk, Set phases) from an OidTree.

Pure and synchronous: every call reads the tree returned by the getter once,
so a poller can swap trees at any time and a request never waits on a poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pmta_snmp.agentx.codec import (
    CleanupSet,
    CommitSet,
    ErrorCode,
    Get,
    GetBulk,
    GetNext,
    Pdu,
    Response,
    SearchRange,
    TestSet,
    UndoSet,
    VarBind,
)
from pmta_snmp.mib.snapshot import OidTree, SnmpType, Value

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

NO_SUCH_OBJECT = Value(SnmpType.NO_SUCH_OBJECT)
NO_SUCH_INSTANCE = Value(SnmpType.NO_SUCH_INSTANCE)
END_OF_MIB_VIEW = Value(SnmpType.END_OF_MIB_VIEW)


def uptime_since(start: float | None = None) -> UptimeGetter:
    """A sysUpTime getter counting centiseconds (mod 2^32) from `start` (monotonic)."""
    t0 = time.monotonic() if start is None else start

    def uptime() -> int:
        return int((time.monotonic() - t0) * 100) & 0xFFFFFFFF

    return uptime


def get(tree: OidTree, ranges: tuple[SearchRange, ...]) -> tuple[VarBind, ...]:
    """Exact lookups: noSuchInstance under a known object, noSuchObject elsewhere."""
    out: list[VarBind] = []
    for r in ranges:
        oid = r.start
        value = tree.get(oid)
        if value is None:
            value = NO_SUCH_INSTANCE if tree.has_object(oid) else NO_SUCH_OBJECT
        out.append(VarBind(oid, value))
    return tuple(out)


def _next(tree: OidTree, r: SearchRange) -> VarBind:
    found = tree.next_after(r.start, r.include, r.end)
    if found is None:
        return VarBind(r.start, END_OF_MIB_VIEW)
    return VarBind(found[0], found[1])


def getnext(tree: OidTree, ranges: tuple[SearchRange, ...]) -> tuple[VarBind, ...]:
    """Per range, the first instance after start (or at it with include) and before end."""
    return tuple([_next(tree, r) for r in ranges])


def getbulk(
    tree: OidTree,
    non_repeaters: int,
    max_repetitions: int,
    ranges: tuple[SearchRange, ...],
    max_varbinds: int = DEFAULT_MAX_BULK_VARBINDS,
) -> tuple[VarBind, ...]:
    """GetNext for the first `non_repeaters` ranges, then up to `max_repetitions`
    rounds over the others, interleaved; a repeater at endOfMibView stays there.

    The answer holds at most `max_varbinds` varbinds (whole rounds only, the
    non-repeaters always), and stops early once every repeater is exhausted.
    """
    n = max(0, min(non_repeaters, len(ranges)))
    out = [_next(tree, r) for r in ranges[:n]]
    repeaters = ranges[n:]
    if not repeaters or max_repetitions <= 0:
        return tuple(out)
    rounds = min(max_repetitions, max(1, (max_varbinds - n) // len(repeaters)))
    cursors = list(repeaters)
    for _ in range(rounds):
        exhausted = 0
        for j, r in enumerate(cursors):
            vb = _next(tree, r)
            out.append(vb)
            if vb.value is END_OF_MIB_VIEW:
                exhausted += 1
                # Keep answering endOfMibView at the same name (include stays off).
                cursors[j] = SearchRange(vb.name, vb.name)
            else:
                cursors[j] = SearchRange(vb.name, r.end)
        if exhausted == len(cursors):
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
        varbinds: tuple[VarBind, ...] = (),
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
