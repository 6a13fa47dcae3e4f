"""Get, GetNext, GetBulk and Set answered from the OidTree as BER, for the standalone agent.

`TreeResponder` answers one PDU's varbinds from the tree current at call time: lookups are the
tree's binary searches, values go from the packed tree to BER varbinds (`ber.encode_varbind`)
without a Python object per value, and the answer is cut to the byte budget it is given.
`CommunityResponder` answers whole SNMPv1/v2c messages with it: the request is decoded only as
far as the answer needs (request-id and community are copied, not decoded) and the response
is encoded directly. SNMPv3 messages go through pysnmp (USM) and use `TreeResponder` for the
PDU (see `standalone.py`).

Rules: RFC 3416 (v2c, v3), RFC 1157 and RFC 3584 (v1: Counter64 objects are skipped by GetNext
and are noSuchName to Get, §4.2.2.1; v2 error-status values are mapped to v1 ones, §4.4).
Only OIDs under 1.3.6.1 are served (the read view of every principal). Knows nothing of pysnmp.
"""

from __future__ import annotations

import hmac
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from pmta_snmp.ber import (
    BerError,
    Tag,
    encode_integer,
    encode_tlv,
    encode_varbind,
    key_of_oid,
    oid_of_key,
    read_integer,
    read_tlv,
)
from pmta_snmp.mib.snapshot import Oid, oid_key

__all__ = [
    "DEFAULT_MAX_BULK_VARBINDS",
    "SNMP_V1",
    "SNMP_V2C",
    "SNMP_V3",
    "UDP_MAX_MESSAGE_SIZE",
    "VIEW_END",
    "VIEW_ROOT",
    "Answer",
    "CommunityResponder",
    "ErrorStatus",
    "JoinedTree",
    "RequestVarBind",
    "ServedTree",
    "SnmpCounters",
    "TreeResponder",
    "message_version",
    "name_tlv",
    "to_v1",
]

log = logging.getLogger(__name__)

VIEW_ROOT: Final[Oid] = (1, 3, 6, 1)
"""The read view: every served OID lies under it."""
VIEW_END: Final[Oid] = (1, 3, 6, 2)
_VIEW_KEY: Final = oid_key(VIEW_ROOT)
_VIEW_END_KEY: Final = oid_key(VIEW_END)

UDP_MAX_MESSAGE_SIZE: Final = 65507
"""The largest UDP payload over IPv4: the only size limit a v1/v2c request implies (its
message has no msgMaxSize); net-snmp's agent uses the same for UDP."""
DEFAULT_MAX_BULK_VARBINDS: Final = 100
"""Varbinds in one GetBulk response at most, like net-snmp's `maxGetbulkResponses`."""

SNMP_V1: Final = 0
SNMP_V2C: Final = 1
SNMP_V3: Final = 3


class ErrorStatus:
    """RFC 3416 error-status values used here (v1 has the first six)."""

    NO_ERROR: Final = 0
    TOO_BIG: Final = 1
    NO_SUCH_NAME: Final = 2
    GEN_ERR: Final = 5
    NO_ACCESS: Final = 6
    AUTHORIZATION_ERROR: Final = 16


# RFC 3584 §4.4: what a v1 manager is told instead of a v2 error.
_V1_ERRORS: Final = {
    ErrorStatus.NO_ACCESS: ErrorStatus.NO_SUCH_NAME,
    ErrorStatus.AUTHORIZATION_ERROR: ErrorStatus.NO_SUCH_NAME,
}


class ServedTree(Protocol):
    """What `TreeResponder` reads: an `OidTree`, or several joined (`JoinedTree`)."""

    def __len__(self) -> int: ...
    def key(self, i: int) -> bytes: ...
    def raw(self, i: int) -> tuple[int, bytes, bytes]: ...
    def lower_bound(self, key: bytes) -> int: ...
    def index_of_key(self, key: bytes) -> int | None: ...
    def next_index_of_key(
        self, key: bytes, include: bool = False, end: bytes | None = None
    ) -> int | None: ...
    def has_object(self, oid: Oid) -> bool: ...


class JoinedTree:
    """`head` and `tail` answered as one tree, `head`'s entries first (indices 0..len(head)-1,
    then `tail`'s): every OID of `head` must sort before every OID of `tail`, as the agent's
    own objects (SNMPv2-MIB's system group) sort before the enterprise subtree. Nothing is
    copied: a request joins the small head to whatever tree is current."""

    __slots__ = ("_n", "head", "tail")

    def __init__(self, head: ServedTree, tail: ServedTree) -> None:
        self.head = head
        self.tail = tail
        self._n = len(head)

    def __len__(self) -> int:
        return self._n + len(self.tail)

    def key(self, i: int) -> bytes:
        """The key at index `i` (see `OidTree.key`)."""
        n = self._n
        return self.head.key(i) if i < n else self.tail.key(i - n)

    def raw(self, i: int) -> tuple[int, bytes, bytes]:
        """(type, key, data) at index `i` (see `OidTree.raw`)."""
        n = self._n
        return self.head.raw(i) if i < n else self.tail.raw(i - n)

    def lower_bound(self, key: bytes) -> int:
        """Index of the first key >= `key` (len(self) when none)."""
        i = self.head.lower_bound(key)
        return i if i < self._n else self._n + self.tail.lower_bound(key)

    def index_of_key(self, key: bytes) -> int | None:
        """Index of exactly `key`, or None."""
        i = self.head.index_of_key(key)
        if i is not None:
            return i
        j = self.tail.index_of_key(key)
        return None if j is None else self._n + j

    def next_index_of_key(
        self, key: bytes, include: bool = False, end: bytes | None = None
    ) -> int | None:
        """Index of the first key after `key` (at it with `include`) and before `end`."""
        i = self.head.next_index_of_key(key, include, end)
        if i is not None:
            return i
        j = self.tail.next_index_of_key(key, include, end)
        return None if j is None else self._n + j

    def has_object(self, oid: Oid) -> bool:
        """True under an object of either tree."""
        return self.head.has_object(oid) or self.tail.has_object(oid)


class RequestVarBind(NamedTuple):
    """A varbind of the request: the name as a tree key and as its OBJECT IDENTIFIER TLV."""

    key: bytes
    name: bytes


class Answer(NamedTuple):
    """The answer to one PDU: error-status, error-index and the VarBind TLVs (concatenated),
    or `varbinds` None to send the request's varbinds back (as errors do)."""

    error_status: int
    error_index: int
    varbinds: bytes | None


_COUNTER64: Final = Tag.COUNTER64
_NSO: Final = bytes((Tag.NO_SUCH_OBJECT, 0))
_NSI: Final = bytes((Tag.NO_SUCH_INSTANCE, 0))
_EOM: Final = bytes((Tag.END_OF_MIB_VIEW, 0))


def _exception(name: bytes, value: bytes) -> bytes:
    return encode_tlv(Tag.SEQUENCE, name + value)


def _key_oid(key: bytes) -> Oid:
    return struct.unpack(f">{len(key) >> 2}I", key)


class TreeResponder:
    """Answers Get, GetNext, GetBulk and Set varbinds from `tree_getter()` (called once per
    PDU, so a tree swapped in after a poll is seen by the next request).

    Every value is read by `read` (one place for anything that must change values as they are
    read)."""

    def __init__(
        self,
        tree_getter: Callable[[], ServedTree],
        *,
        max_bulk_varbinds: int = DEFAULT_MAX_BULK_VARBINDS,
    ) -> None:
        self._tree_getter = tree_getter
        self.max_bulk_varbinds = max_bulk_varbinds

    @staticmethod
    def read(tree: ServedTree, i: int) -> tuple[int, bytes]:
        """(type, VarBind TLV) of the entry at index `i` of `tree`."""
        code, key, data = tree.raw(i)
        return code, encode_varbind(code, key, data)

    def _tree(self) -> ServedTree | None:
        try:
            return self._tree_getter()
        except Exception:
            log.exception("standalone agent: the OID tree getter failed")
            return None

    @staticmethod
    def _first_after(tree: ServedTree, key: bytes) -> int | None:
        """Index of the first entry after `key` inside the view."""
        if key < _VIEW_KEY:
            return tree.next_index_of_key(_VIEW_KEY, True, _VIEW_END_KEY)
        if key < _VIEW_END_KEY:
            return tree.next_index_of_key(key, False, _VIEW_END_KEY)
        return None

    def get(self, varbinds: Sequence[RequestVarBind], *, v1: bool, budget: int) -> Answer:
        """Get: each value; else noSuchInstance under a known object, noSuchObject elsewhere
        (v1: noSuchName for the first missing one or a Counter64)."""
        tree = self._tree()
        if tree is None:
            return _gen_err(varbinds)
        out: list[bytes] = []
        size = 0
        for n, (key, name) in enumerate(varbinds, 1):
            in_view = _VIEW_KEY <= key < _VIEW_END_KEY
            i = tree.index_of_key(key) if in_view else None
            vb: bytes | None = None
            if i is not None:
                code, vb = self.read(tree, i)
                if v1 and code == _COUNTER64:
                    vb = None
            if vb is None:
                if v1:
                    return Answer(ErrorStatus.NO_SUCH_NAME, n, None)
                known = in_view and tree.has_object(_key_oid(key))
                vb = _exception(name, _NSI if known else _NSO)
            out.append(vb)
            size += len(vb)
        return _fitted(out, size, budget, v1)

    def get_next(self, varbinds: Sequence[RequestVarBind], *, v1: bool, budget: int) -> Answer:
        """GetNext: the first entry after each name, else the name with endOfMibView (v1:
        Counter64 entries are skipped; noSuchName for the first name with nothing after it)."""
        tree = self._tree()
        if tree is None:
            return _gen_err(varbinds)
        stop = tree.lower_bound(_VIEW_END_KEY) if v1 else 0
        out: list[bytes] = []
        size = 0
        for n, (key, name) in enumerate(varbinds, 1):
            i = self._first_after(tree, key)
            vb = b""
            while i is not None:
                code, vb = self.read(tree, i)
                if not v1 or code != _COUNTER64:
                    break
                i = i + 1 if i + 1 < stop else None  # RFC 3584 §4.2.2.1: skip Counter64
            if i is None:
                if v1:
                    return Answer(ErrorStatus.NO_SUCH_NAME, n, None)
                vb = _exception(name, _EOM)
            out.append(vb)
            size += len(vb)
        return _fitted(out, size, budget, v1)

    def get_bulk(
        self,
        varbinds: Sequence[RequestVarBind],
        non_repeaters: int,
        max_repetitions: int,
        *,
        budget: int,
    ) -> Answer:
        """GetBulk (RFC 3416 §4.2.3): GetNext of the first `non_repeaters` names, then up to
        `max_repetitions` rounds over the others, interleaved; a repeater at the end keeps
        answering endOfMibView, and the first round where all are at the end is the last.
        At most `max_bulk_varbinds` varbinds (whole rounds) and `budget` octets of them: the
        answer is cut before the first varbind that does not fit (tooBig if none fits)."""
        tree = self._tree()
        if tree is None:
            return _gen_err(varbinds)
        n = min(max(non_repeaters, 0), len(varbinds))
        repeaters = varbinds[n:]
        out: list[bytes] = []
        size = 0
        for key, name in varbinds[:n]:
            i = self._first_after(tree, key)
            vb = _exception(name, _EOM) if i is None else self.read(tree, i)[1]
            size += len(vb)
            if size > budget:
                return _cut(out, varbinds)
            out.append(vb)
        if not repeaters or max_repetitions <= 0:
            return Answer(ErrorStatus.NO_ERROR, 0, b"".join(out))
        width = len(repeaters)
        rounds = min(max_repetitions, max(1, (self.max_bulk_varbinds - n) // width))
        stop = tree.lower_bound(_VIEW_END_KEY)
        # Per repeater: the index to answer (None once at the end), the index answered last
        # (its name goes with endOfMibView), and that endOfMibView varbind once made.
        cursors: list[int | None] = [self._first_after(tree, r.key) for r in repeaters]
        last: list[int | None] = [None] * width
        ended: list[bytes | None] = [None] * width
        for round_no in range(rounds):
            exhausted = 0
            for j in range(width):
                i = cursors[j]
                if round_no and i is not None:
                    i = cursors[j] = i + 1 if i + 1 < stop else None
                if i is None:
                    exhausted += 1
                    eom = ended[j]
                    if eom is None:
                        prev = last[j]
                        name = repeaters[j].name if prev is None else name_tlv(tree.key(prev))
                        eom = ended[j] = _exception(name, _EOM)
                    vb = eom
                else:
                    vb = self.read(tree, i)[1]
                    last[j] = i
                size += len(vb)
                if size > budget:
                    return _cut(out, varbinds)
                out.append(vb)
            if exhausted == width:
                break
        return Answer(ErrorStatus.NO_ERROR, 0, b"".join(out))

    def answer(
        self,
        pdu_type: int,
        varbinds: Sequence[RequestVarBind],
        non_repeaters: int = 0,
        max_repetitions: int = 0,
        *,
        v1: bool,
        budget: int,
    ) -> Answer:
        """The answer to a Get, GetNext, GetBulk or Set PDU (`pdu_type` its BER tag), in the
        terms of the manager's SNMP version; genErr if answering fails (never an exception)."""
        try:
            if pdu_type == Tag.GET_NEXT:
                answer = self.get_next(varbinds, v1=v1, budget=budget)
            elif pdu_type == Tag.GET:
                answer = self.get(varbinds, v1=v1, budget=budget)
            elif pdu_type == Tag.GET_BULK:
                answer = self.get_bulk(varbinds, non_repeaters, max_repetitions, budget=budget)
            else:
                answer = self.set(varbinds, v1=v1)
        except Exception:
            log.exception("standalone agent: answering a request failed")
            answer = _gen_err(varbinds)
        return to_v1(answer) if v1 else answer

    @staticmethod
    def set(varbinds: Sequence[RequestVarBind], *, v1: bool) -> Answer:
        """Set: never. No principal has a write view: noAccess (RFC 3416 §4.2.5), for v1
        noSuchName (RFC 3584 §4.4), at the first varbind."""
        status = ErrorStatus.NO_SUCH_NAME if v1 else ErrorStatus.NO_ACCESS
        return Answer(status, 1 if varbinds else 0, None)


def _gen_err(varbinds: Sequence[RequestVarBind]) -> Answer:
    return Answer(ErrorStatus.GEN_ERR, 1 if varbinds else 0, None)


def _fitted(out: list[bytes], size: int, budget: int, v1: bool) -> Answer:
    """Get/GetNext: the varbinds, or tooBig when they do not fit (RFC 3416 §4.2.1: no
    varbinds; RFC 1157 §4.1.2: v1 sends the request's back)."""
    if size > budget:
        return Answer(ErrorStatus.TOO_BIG, 0, None if v1 else b"")
    return Answer(ErrorStatus.NO_ERROR, 0, b"".join(out))


def _cut(out: list[bytes], varbinds: Sequence[RequestVarBind]) -> Answer:
    """GetBulk over its budget: what fitted, or tooBig when nothing did."""
    if not out and varbinds:
        return Answer(ErrorStatus.TOO_BIG, 0, b"")
    return Answer(ErrorStatus.NO_ERROR, 0, b"".join(out))


def to_v1(answer: Answer) -> Answer:
    """The answer with its error-status in SNMPv1 terms (RFC 3584 §4.4)."""
    status = _V1_ERRORS.get(answer.error_status)
    return answer if status is None else answer._replace(error_status=status)


# --- whole v1/v2c messages ---------------------------------------------------------------------


def message_version(data: bytes) -> int | None:
    """msgVersion of an SNMP message (0 v1, 1 v2c, 3 v3), None when it is not one."""
    try:
        tag, start, stop = read_tlv(data, 0, len(data))
        if tag != Tag.SEQUENCE:
            return None
        return read_integer(data, read_tlv(data, start, stop), 1)
    except BerError:
        return None


# Length octets of the message, PDU and varbind list headers at most (tag + 4), error-status
# and error-index INTEGERs at most (tag, length, 4 octets): the response's size beside its
# varbinds and the copied version, community and request-id.
_RESPONSE_OVERHEAD: Final = 3 * 5 + 2 * 6


@dataclass(slots=True)
class SnmpCounters:
    """SNMPv2-MIB's snmp group counters (RFC 3418) of the messages the agent itself decodes
    (pysnmp keeps its own of SNMPv3's): a manager polling with the wrong community shows in
    `in_bad_community_names`. `CommunityResponder` counts the v1/v2c ones, the socket's
    protocol every message and the versions it cannot read."""

    in_pkts: int = 0
    in_bad_versions: int = 0
    in_bad_community_names: int = 0
    in_bad_community_uses: int = 0  # a Set: no community may write
    in_asn_parse_errs: int = 0


class CommunityResponder:
    """Answers SNMPv1 and SNMPv2c messages carrying the community `community`; anything else
    (another community, a malformed message, a PDU type an agent does not answer) gets no
    answer, as RFC 3584 §5.2.1 says for unknown communities."""

    def __init__(
        self,
        responder: TreeResponder,
        community: bytes,
        *,
        max_message_size: int = UDP_MAX_MESSAGE_SIZE,
        counters: SnmpCounters | None = None,
    ) -> None:
        self.responder = responder
        self._community = community
        self.max_message_size = max_message_size
        self.counters = counters if counters is not None else SnmpCounters()

    def answer(self, data: bytes) -> bytes | None:
        """The encoded Response to one v1/v2c request message, or None (no answer)."""
        try:
            return self._answer(data)
        except BerError as exc:
            self.counters.in_asn_parse_errs += 1
            log.debug("standalone agent: dropped a malformed v1/v2c message: %s", exc)
            return None

    def _answer(self, data: bytes) -> bytes | None:
        tag, start, end = read_tlv(data, 0, len(data))
        if tag != Tag.SEQUENCE or end != len(data):
            raise BerError("not one SEQUENCE")
        version_tlv = read_tlv(data, start, end)
        version = read_integer(data, version_tlv, 1)
        if version not in (SNMP_V1, SNMP_V2C):
            return None
        community = read_tlv(data, version_tlv[2], end)
        if community[0] != Tag.OCTET_STRING:
            raise BerError("no community")
        if not hmac.compare_digest(data[community[1]:community[2]], self._community):
            self.counters.in_bad_community_names += 1
            return None
        pdu_type, pdu_start, pdu_end = read_tlv(data, community[2], end)
        if pdu_end != end:
            raise BerError("trailing octets after the PDU")
        v1 = version == SNMP_V1
        if pdu_type not in _REQUESTS or (v1 and pdu_type == Tag.GET_BULK):
            return None  # a v1 GetBulk is malformed (RFC 3584 §4.1.2.1)
        self.counters.in_bad_community_uses += pdu_type == Tag.SET
        request_id = read_tlv(data, pdu_start, pdu_end)
        read_integer(data, request_id)
        first = read_tlv(data, request_id[2], pdu_end)
        second = read_tlv(data, first[2], pdu_end)
        non_repeaters = read_integer(data, first)  # error-status outside GetBulk
        max_repetitions = read_integer(data, second)  # error-index outside GetBulk
        list_tag, pos, list_end = read_tlv(data, second[2], pdu_end)
        if list_tag != Tag.SEQUENCE or list_end != pdu_end:
            raise BerError("no variable-bindings")
        varbinds = _read_varbinds(data, pos, list_end)
        head = data[start:community[2]]  # version and community, copied
        request_id_tlv = data[pdu_start:request_id[2]]
        budget = self.max_message_size - _RESPONSE_OVERHEAD - len(head) - len(request_id_tlv)
        answer = self.responder.answer(
            pdu_type, varbinds, non_repeaters, max_repetitions, v1=v1, budget=budget
        )
        vbs = data[pos:list_end] if answer.varbinds is None else answer.varbinds
        pdu = (
            request_id_tlv
            + encode_integer(answer.error_status)
            + encode_integer(answer.error_index)
            + encode_tlv(Tag.SEQUENCE, vbs)
        )
        return encode_tlv(Tag.SEQUENCE, head + encode_tlv(Tag.RESPONSE, pdu))


_REQUESTS: Final = frozenset({Tag.GET, Tag.GET_NEXT, Tag.GET_BULK, Tag.SET})


def _read_varbinds(data: bytes, pos: int, end: int) -> list[RequestVarBind]:
    out: list[RequestVarBind] = []
    while pos < end:
        tag, start, stop = read_tlv(data, pos, end)
        if tag != Tag.SEQUENCE:
            raise BerError("a varbind is not a SEQUENCE")
        name_tag, name_start, name_stop = read_tlv(data, start, stop)
        if name_tag != Tag.OBJECT_IDENTIFIER:
            raise BerError("a varbind name is not an OBJECT IDENTIFIER")
        _, _, value_stop = read_tlv(data, name_stop, stop)
        if value_stop != stop:
            raise BerError("a varbind holds more than a name and a value")
        out.append(RequestVarBind(key_of_oid(data[name_start:name_stop]), data[start:name_stop]))
        pos = stop
    return out


def name_tlv(key: bytes) -> bytes:
    """The OBJECT IDENTIFIER TLV of the OID with tree key `key`."""
    return encode_tlv(Tag.OBJECT_IDENTIFIER, oid_of_key(key))
