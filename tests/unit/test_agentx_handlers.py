"""Request processing against an OidTree: Get, GetNext, GetBulk, Set phases, contexts."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pmta_snmp.agentx.codec import (
    CleanupSet,
    CommitSet,
    ErrorCode,
    Get,
    GetBulk,
    GetNext,
    Notify,
    Response,
    SearchRange,
    UndoSet,
    VarBind,
    decode_packet,
)
from pmta_snmp.agentx.codec import TestSet as AxTestSet
from pmta_snmp.agentx.handlers import RequestHandler, getbulk, getnext
from pmta_snmp.mib.snapshot import Oid, OidTree, SnmpType, Value

B = (1, 3, 6, 1, 4, 1, 32473, 99)
SCALAR = (*B, 1)  # scalar object; instance .0
COL_A = (*B, 2, 1, 2)  # table columns, rows indexed 1 and 3 (col B lacks row 1)
COL_B = (*B, 2, 1, 3)
END = (*B[:-1], 100)  # our region's end, as net-snmp passes it

EOM = SnmpType.END_OF_MIB_VIEW


def c64(v: int) -> Value:
    return Value(SnmpType.COUNTER64, v)


def make_tree() -> OidTree:
    return OidTree(
        [
            ((*SCALAR, 0), Value(SnmpType.OCTET_STRING, b"up")),
            ((*COL_A, 1), c64(10)),
            ((*COL_A, 3), c64(30)),
            ((*COL_B, 3), Value(SnmpType.GAUGE32, 3)),  # row 1 has no COL_B cell
        ],
        objects=[SCALAR, COL_A, COL_B],
    )


def handler(tree: OidTree | None = None) -> RequestHandler:
    t = tree or make_tree()
    return RequestHandler(lambda: t, lambda: 4242)


def names(vbs: tuple[VarBind, ...]) -> list[Oid]:
    return [vb.name for vb in vbs]


def test_get_values_and_no_such_object_vs_instance() -> None:
    req = Get(
        (
            SearchRange((*SCALAR, 0)),
            SearchRange((*COL_A, 2)),  # known column, missing row
            SearchRange((*COL_B, 1)),  # known column, missing cell
            SearchRange((*B, 7, 0)),  # not our object
            SearchRange(SCALAR),  # the object itself, no instance
        ),
        packet_id=5,
    )
    resp = handler().handle(req)
    assert resp is not None
    assert resp.error == ErrorCode.NO_ERROR
    assert [vb.value.type for vb in resp.varbinds] == [
        SnmpType.OCTET_STRING,
        SnmpType.NO_SUCH_INSTANCE,
        SnmpType.NO_SUCH_INSTANCE,
        SnmpType.NO_SUCH_OBJECT,
        SnmpType.NO_SUCH_INSTANCE,
    ]
    assert names(resp.varbinds) == [r.start for r in req.ranges]


def test_get_without_object_prefixes_reports_no_such_object() -> None:
    tree = OidTree([((*SCALAR, 0), c64(1))])
    resp = handler(tree).handle(Get((SearchRange((*SCALAR, 1)),)))
    assert resp is not None
    assert resp.varbinds[0].value.type is SnmpType.NO_SUCH_OBJECT


def test_walk_with_getnext_skips_missing_cell_and_ends_with_end_of_mib_view() -> None:
    h = handler()
    walked: list[Oid] = []
    start: Oid = B
    include = True
    while True:
        resp = h.handle(GetNext((SearchRange(start, END, include),)))
        assert resp is not None
        (vb,) = resp.varbinds
        if vb.value.type is EOM:
            assert vb.name == start  # endOfMibView echoes the start OID
            break
        walked.append(vb.name)
        start, include = vb.name, False
    assert walked == [(*SCALAR, 0), (*COL_A, 1), (*COL_A, 3), (*COL_B, 3)]


def test_getnext_include_flag() -> None:
    tree = make_tree()
    inc = getnext(tree, (SearchRange((*COL_A, 1), END, include=True),))
    exc = getnext(tree, (SearchRange((*COL_A, 1), END, include=False),))
    assert names(inc) == [(*COL_A, 1)]
    assert names(exc) == [(*COL_A, 3)]


def test_getnext_end_bound_is_exclusive() -> None:
    tree = make_tree()
    (vb,) = getnext(tree, (SearchRange((*COL_A, 1), (*COL_A, 3)),))
    assert vb == VarBind((*COL_A, 1), Value(EOM))
    (vb,) = getnext(tree, (SearchRange((*COL_A, 1), (*COL_A, 3, 0)),))
    assert vb.name == (*COL_A, 3)


def test_getnext_multiple_ranges_answered_in_order() -> None:
    tree = make_tree()
    vbs = getnext(
        tree,
        (SearchRange((*COL_B,)), SearchRange((*SCALAR,)), SearchRange((*COL_B, 3), END)),
    )
    assert names(vbs) == [(*COL_B, 3), (*SCALAR, 0), (*COL_B, 3)]
    assert vbs[2].value.type is EOM


def test_getbulk_non_repeaters_then_interleaved_repetitions() -> None:
    tree = make_tree()
    vbs = getbulk(
        tree,
        1,
        3,
        (SearchRange(B), SearchRange(COL_A, END), SearchRange(COL_B, END)),
    )
    assert [(vb.name, vb.value.type) for vb in vbs] == [
        ((*SCALAR, 0), SnmpType.OCTET_STRING),  # non-repeater
        ((*COL_A, 1), SnmpType.COUNTER64),  # round 1
        ((*COL_B, 3), SnmpType.GAUGE32),
        ((*COL_A, 3), SnmpType.COUNTER64),  # round 2
        ((*COL_B, 3), EOM),  # COL_B exhausted: endOfMibView at its last name
        ((*COL_B, 3), SnmpType.GAUGE32),  # round 3: COL_A runs on into COL_B
        ((*COL_B, 3), EOM),  # and COL_B stays at endOfMibView
    ]


def test_getbulk_stops_when_every_repeater_is_exhausted() -> None:
    vbs = getbulk(make_tree(), 0, 50, (SearchRange((*COL_B, 3), END),))
    assert [vb.value.type for vb in vbs] == [EOM]


def test_getbulk_response_size_is_bounded_by_whole_rounds() -> None:
    rows = OidTree([((*COL_A, i), c64(i)) for i in range(1, 1001)], [COL_A])
    vbs = getbulk(rows, 1, 1000, (SearchRange(B), SearchRange(COL_A), SearchRange(COL_A)), 11)
    assert len(vbs) == 1 + 2 * 5
    assert names(vbs)[1:5] == [(*COL_A, 1), (*COL_A, 1), (*COL_A, 2), (*COL_A, 2)]


def test_getbulk_zero_repetitions_and_excess_non_repeaters() -> None:
    tree = make_tree()
    assert names(getbulk(tree, 0, 0, (SearchRange(B),))) == []
    assert names(getbulk(tree, 5, 10, (SearchRange(B), SearchRange(COL_A)))) == [
        (*SCALAR, 0),
        (*COL_A, 1),
    ]


def test_getbulk_pdu_goes_through_handler() -> None:
    resp = handler().handle(GetBulk(0, 2, (SearchRange(COL_A, END),)))
    assert resp is not None
    assert names(resp.varbinds) == [(*COL_A, 1), (*COL_A, 3)]


def test_response_copies_ids_and_byte_order_of_request() -> None:
    req = GetNext(
        (SearchRange(B),),
        session_id=11,
        transaction_id=22,
        packet_id=33,
        network_byte_order=False,
    )
    resp = handler().handle(req)
    assert resp is not None
    assert (resp.session_id, resp.transaction_id, resp.packet_id) == (11, 22, 33)
    assert resp.network_byte_order is False
    assert resp.sys_uptime == 4242


def test_testset_is_refused_not_writable_with_index() -> None:
    vb = VarBind((*SCALAR, 0), Value(SnmpType.OCTET_STRING, b"new"))
    resp = handler().handle(AxTestSet((vb, vb), packet_id=3))
    assert resp is not None
    assert (resp.error, resp.index, resp.packet_id) == (ErrorCode.NOT_WRITABLE, 1, 3)


@pytest.mark.parametrize("pdu", [CommitSet(packet_id=4), UndoSet(packet_id=4)], ids=repr)
def test_commit_and_undo_answered_no_error(pdu: CommitSet | UndoSet) -> None:
    resp = handler().handle(pdu)
    assert isinstance(resp, Response)
    assert (resp.error, resp.packet_id) == (ErrorCode.NO_ERROR, 4)


def test_cleanup_gets_no_response() -> None:
    assert handler().handle(CleanupSet()) is None


@pytest.mark.parametrize(
    "pdu",
    [
        Get((SearchRange((*SCALAR, 0)),), context=b"other"),
        GetNext((SearchRange(B),), context=b"other"),
        GetBulk(0, 5, (SearchRange(B),), context=b""),
        AxTestSet((), context=b"other"),
    ],
    ids=lambda p: type(p).__name__,
)
def test_non_default_context_is_unsupported(pdu: Get | GetNext | GetBulk | AxTestSet) -> None:
    resp = handler().handle(pdu)
    assert resp is not None
    assert resp.error == ErrorCode.UNSUPPORTED_CONTEXT
    assert resp.varbinds == ()


def test_non_request_pdus_get_no_answer_from_handler() -> None:
    assert handler().handle(Notify()) is None


def test_tree_getter_is_read_per_request() -> None:
    trees = [make_tree(), OidTree([((*SCALAR, 0), c64(99))], [SCALAR])]
    h = RequestHandler(lambda: trees[0], lambda: 0)
    first = h.handle(Get((SearchRange((*SCALAR, 0)),)))
    trees[0] = trees[1]
    second = h.handle(Get((SearchRange((*SCALAR, 0)),)))
    assert first is not None and second is not None
    assert first.varbinds[0].value.type is SnmpType.OCTET_STRING
    assert second.varbinds[0].value == c64(99)


def test_every_response_encodes() -> None:
    h = handler()
    resp = h.handle(GetBulk(1, 10, (SearchRange(B), SearchRange(COL_A, END))))
    assert resp is not None
    assert len(resp.encode()) > 20


# --- the byte-level fast path (RequestHandler.answer_packet) --------------------------------

_FAST_TREE = OidTree(
    [((*SCALAR, 0), Value(SnmpType.OCTET_STRING, b"up"))]
    + [((*COL_A, i), c64(i * 10)) for i in range(1, 40, 3)]
    + [((*COL_B, i), Value(SnmpType.GAUGE32, i)) for i in range(2, 40, 5)]
    + [((2, 7, i), Value(SnmpType.INTEGER, -i)) for i in range(3)],  # outside 1.3.6.1
    objects=[SCALAR, COL_A, COL_B],
)
_NAMES = [oid for oid, _ in _FAST_TREE] + [(*COL_A, 2), (*COL_B, 99), (*B, 7, 0), SCALAR, (2, 7),
                                            (1, 3, 6, 1), (0,), (1, 3, 6, 1, 300, 1), ()]


def _slow_bytes(h: RequestHandler, packet: bytes) -> bytes:
    pdu, rest = decode_packet(packet)
    assert pdu is not None and rest == b""
    resp = h.handle(pdu)
    assert resp is not None
    return resp.encode()


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["get", "getnext"]),
    st.lists(
        st.tuples(st.sampled_from(_NAMES), st.sampled_from(_NAMES), st.booleans()),
        min_size=1, max_size=5,
    ),
    st.integers(0, 2**32 - 1),
)
def test_fast_path_answers_byte_for_byte_like_the_general_path(
    kind: str, ranges: list[tuple[Oid, Oid, bool]], packet_id: int
) -> None:
    h = RequestHandler(lambda: _FAST_TREE, lambda: 777)
    if kind == "get":
        pdu: Get | GetNext = Get(
            tuple(SearchRange(s) for s, _, _ in ranges if s), packet_id=packet_id, session_id=9
        )
    else:
        pdu = GetNext(
            tuple(SearchRange(s, e, inc) for s, e, inc in ranges if s),
            packet_id=packet_id, session_id=9, transaction_id=3,
        )
    packet = pdu.encode()
    fast = h.answer_packet(packet)
    assert fast is not None
    assert fast == _slow_bytes(h, packet)


def test_fast_path_accepts_uncompressed_internet_oids_and_answers_like_the_general_path() -> None:
    h = RequestHandler(lambda: _FAST_TREE, lambda: 5)
    good = GetNext((SearchRange((*COL_A, 4)),), session_id=1).encode()
    # Re-encode the start OID without the 1.3.6.1.x prefix form (legal, just longer).
    start = (*COL_A, 4)
    spelled = struct.pack(f">BBBx{len(start)}I", len(start), 0, 0, *start) + bytes(4)
    packet = good[:16] + struct.pack(">I", len(spelled)) + spelled
    assert h.answer_packet(packet) == _slow_bytes(h, packet)


@pytest.mark.parametrize(
    "packet",
    [
        GetNext((SearchRange((*COL_A, 1)),), network_byte_order=False).encode(),  # little endian
        GetNext((SearchRange((*COL_A, 1)),), context=b"ctx").encode(),  # non-default context
        GetBulk(0, 5, (SearchRange((*COL_A, 1)),)).encode(),  # not Get/GetNext
        GetNext((SearchRange((*COL_A, 1)),)).encode()[:-4],  # length field wrong for the bytes
        GetNext((SearchRange((*COL_A, 1)),)).encode()[:19],  # not even a header
    ],
    ids=["little-endian", "context", "getbulk", "truncated", "short"],
)
def test_fast_path_leaves_everything_else_to_the_general_path(packet: bytes) -> None:
    assert RequestHandler(lambda: _FAST_TREE).answer_packet(packet) is None


def test_fast_path_gives_up_on_a_malformed_range_instead_of_guessing() -> None:
    packet = bytearray(GetNext((SearchRange((*COL_A, 1)),)).encode())
    packet[20] = 200  # 200 sub-ids announced, far fewer present
    assert RequestHandler(lambda: _FAST_TREE).answer_packet(bytes(packet)) is None
