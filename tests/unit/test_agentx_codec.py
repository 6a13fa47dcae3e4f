"""AgentX codec: byte-exact vectors in both byte orders, round trips, and fuzzing.

Expected bytes are assembled field by field with struct here, never by encode().
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import TypedDict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz_agentx import Gen, decode_stream, mutate, random_header
from pmta_snmp.agentx.codec import (
    HEADER_LEN,
    MAX_PAYLOAD_LEN,
    AddAgentCaps,
    AgentXEncodeError,
    AgentXParseError,
    CleanupSet,
    Close,
    CloseReason,
    CommitSet,
    ErrorCode,
    Get,
    GetBulk,
    GetNext,
    IndexAllocate,
    IndexDeallocate,
    Notify,
    Open,
    Pdu,
    Ping,
    Register,
    RemoveAgentCaps,
    Response,
    SearchRange,
    UndoSet,
    Unregister,
    VarBind,
    decode_header,
    decode_oid,
    decode_packet,
    encode_oid,
)
from pmta_snmp.agentx.codec import TestSet as AxTestSet
from pmta_snmp.mib.snapshot import SnmpType, Value

ORDERS = pytest.mark.parametrize("order", [">", "<"], ids=["network", "little"])
ENT = (1, 3, 6, 1, 4, 1, 32473, 99)


# --- hand-made wire pieces -------------------------------------------------------------


def header(
    order: str, pdu_type: int, flags: int, payload: bytes, sid: int = 7, tid: int = 8, pid: int = 9
) -> bytes:
    if order == ">":
        flags |= 0x10
    return struct.pack(order + "BBBxIIII", 1, pdu_type, flags, sid, tid, pid, len(payload))


def packet(order: str, pdu_type: int, payload: bytes, flags: int = 0) -> bytes:
    return header(order, pdu_type, flags, payload) + payload


def oid_raw(order: str, prefix: int, subids: tuple[int, ...], include: int = 0) -> bytes:
    return struct.pack(order + "BBBx", len(subids), prefix, include) + struct.pack(
        order + f"{len(subids)}I", *subids
    )


def ent_oid(order: str, *tail: int, include: int = 0) -> bytes:
    """1.3.6.1.4.1.32473.99.<tail> in compressed form (prefix 4)."""
    return oid_raw(order, 4, (1, 32473, 99, *tail), include)


def octets(order: str, data: bytes) -> bytes:
    return struct.pack(order + "I", len(data)) + data + b"\0" * (-len(data) % 4)


def vb_raw(order: str, vtype: int, name: bytes, data: bytes = b"") -> bytes:
    return struct.pack(order + "Hxx", vtype) + name + data


class Ids(TypedDict):
    session_id: int
    transaction_id: int
    packet_id: int
    network_byte_order: bool


def ids(big: bool) -> Ids:
    return {"session_id": 7, "transaction_id": 8, "packet_id": 9, "network_byte_order": big}


# --- vectors: (pdu, expected bytes) per byte order --------------------------------------

Vector = Callable[[str], tuple[Pdu, bytes]]


def v_open(o: str) -> tuple[Pdu, bytes]:
    pdu = Open(5, ENT, b"pmta-snmp", **ids(o == ">"))
    payload = struct.pack(o + "B3x", 5) + ent_oid(o) + octets(o, b"pmta-snmp")
    return pdu, packet(o, 1, payload)


def v_close(o: str) -> tuple[Pdu, bytes]:
    pdu = Close(CloseReason.SHUTDOWN, **ids(o == ">"))
    return pdu, packet(o, 2, struct.pack(o + "B3x", 5))


def v_register(o: str) -> tuple[Pdu, bytes]:
    pdu = Register(ENT, 3, 100, **ids(o == ">"))
    payload = struct.pack(o + "BBBx", 3, 100, 0) + ent_oid(o)
    return pdu, packet(o, 3, payload)


def v_register_range_context(o: str) -> tuple[Pdu, bytes]:
    pdu = Register(
        (*ENT, 2, 1),
        0,
        127,
        10,
        20,
        True,
        context=b"ctx",
        **ids(o == ">"),
    )
    payload = (
        octets(o, b"ctx")
        + struct.pack(o + "BBBx", 0, 127, 10)
        + ent_oid(o, 2, 1)
        + struct.pack(o + "I", 20)
    )
    return pdu, packet(o, 3, payload, flags=0x01 | 0x08)


def v_unregister(o: str) -> tuple[Pdu, bytes]:
    pdu = Unregister(ENT, 90, **ids(o == ">"))
    payload = struct.pack(o + "BBBx", 0, 90, 0) + ent_oid(o)
    return pdu, packet(o, 4, payload)


def v_get(o: str) -> tuple[Pdu, bytes]:
    pdu = Get((SearchRange((*ENT, 1, 0)), SearchRange((1, 3, 6, 2, 7))), **ids(o == ">"))
    payload = ent_oid(o, 1, 0) + oid_raw(o, 0, ()) + oid_raw(o, 0, (1, 3, 6, 2, 7))
    payload += oid_raw(o, 0, ())
    return pdu, packet(o, 5, payload)


def v_getnext(o: str) -> tuple[Pdu, bytes]:
    pdu = GetNext(
        (SearchRange(ENT, (*ENT[:-1], 100), include=True), SearchRange((*ENT, 3), ())),
        **ids(o == ">"),
    )
    payload = (
        ent_oid(o, include=1) + oid_raw(o, 4, (1, 32473, 100)) + ent_oid(o, 3) + oid_raw(o, 0, ())
    )
    return pdu, packet(o, 6, payload)


def v_getbulk(o: str) -> tuple[Pdu, bytes]:
    pdu = GetBulk(1, 10, (SearchRange(ENT), SearchRange((*ENT, 3))), **ids(o == ">"))
    payload = (
        struct.pack(o + "HH", 1, 10)
        + ent_oid(o)
        + oid_raw(o, 0, ())
        + ent_oid(o, 3)
        + oid_raw(o, 0, ())
    )
    return pdu, packet(o, 7, payload)


def v_testset(o: str) -> tuple[Pdu, bytes]:
    pdu = AxTestSet(
        (VarBind((*ENT, 1, 0), Value(SnmpType.INTEGER, -2)),),
        **ids(o == ">"),
    )
    payload = vb_raw(o, 2, ent_oid(o, 1, 0), struct.pack(o + "i", -2))
    return pdu, packet(o, 8, payload)


def v_commit(o: str) -> tuple[Pdu, bytes]:
    return CommitSet(**ids(o == ">")), packet(o, 9, b"")


def v_undo(o: str) -> tuple[Pdu, bytes]:
    return UndoSet(**ids(o == ">")), packet(o, 10, b"")


def v_cleanup(o: str) -> tuple[Pdu, bytes]:
    return CleanupSet(**ids(o == ">")), packet(o, 11, b"")


ALL_TYPES_VARBINDS = (
    VarBind((1, 3, 6, 1, 2, 1, 1, 3, 0), Value(SnmpType.TIME_TICKS, 12345)),
    VarBind((1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0), Value(SnmpType.OBJECT_IDENTIFIER, (*ENT, 0, 1))),
    VarBind((*ENT, 1), Value(SnmpType.INTEGER, -(2**31))),
    VarBind((*ENT, 2), Value(SnmpType.OCTET_STRING, b"abcde")),
    VarBind((*ENT, 3), Value(SnmpType.NULL)),
    VarBind((*ENT, 4), Value(SnmpType.IP_ADDRESS, bytes([127, 0, 0, 1]))),
    VarBind((*ENT, 5), Value(SnmpType.COUNTER32, 2**32 - 1)),
    VarBind((*ENT, 6), Value(SnmpType.GAUGE32, 42)),
    VarBind((*ENT, 7), Value(SnmpType.OPAQUE, b"\x01\x02")),
    VarBind((*ENT, 8), Value(SnmpType.COUNTER64, 2**64 - 1)),
    VarBind((*ENT, 9), Value(SnmpType.NO_SUCH_OBJECT)),
    VarBind((*ENT, 10), Value(SnmpType.NO_SUCH_INSTANCE)),
    VarBind((*ENT, 11), Value(SnmpType.END_OF_MIB_VIEW)),
    VarBind((*ENT, 12), Value(SnmpType.OBJECT_IDENTIFIER, ())),
)


def all_types_raw(o: str) -> bytes:
    return b"".join(
        [
            vb_raw(o, 67, oid_raw(o, 2, (1, 1, 3, 0)), struct.pack(o + "I", 12345)),
            vb_raw(o, 6, oid_raw(o, 6, (3, 1, 1, 4, 1, 0)), ent_oid(o, 0, 1)),
            vb_raw(o, 2, ent_oid(o, 1), struct.pack(o + "i", -(2**31))),
            vb_raw(o, 4, ent_oid(o, 2), struct.pack(o + "I", 5) + b"abcde\0\0\0"),
            vb_raw(o, 5, ent_oid(o, 3)),
            vb_raw(o, 64, ent_oid(o, 4), struct.pack(o + "I", 4) + b"\x7f\0\0\x01"),
            vb_raw(o, 65, ent_oid(o, 5), struct.pack(o + "I", 2**32 - 1)),
            vb_raw(o, 66, ent_oid(o, 6), struct.pack(o + "I", 42)),
            vb_raw(o, 68, ent_oid(o, 7), struct.pack(o + "I", 2) + b"\x01\x02\0\0"),
            vb_raw(o, 70, ent_oid(o, 8), struct.pack(o + "Q", 2**64 - 1)),
            vb_raw(o, 128, ent_oid(o, 9)),
            vb_raw(o, 129, ent_oid(o, 10)),
            vb_raw(o, 130, ent_oid(o, 11)),
            vb_raw(o, 6, ent_oid(o, 12), b"\0\0\0\0"),
        ]
    )


def v_notify(o: str) -> tuple[Pdu, bytes]:
    pdu = Notify(ALL_TYPES_VARBINDS, **ids(o == ">"))
    return pdu, packet(o, 12, all_types_raw(o))


def v_ping(o: str) -> tuple[Pdu, bytes]:
    pdu = Ping(context=b"public1", **ids(o == ">"))
    return pdu, packet(o, 13, octets(o, b"public1"), flags=0x08)


def v_index_allocate(o: str) -> tuple[Pdu, bytes]:
    vb = VarBind((*ENT, 5, 1), Value(SnmpType.INTEGER, 3))
    pdu = IndexAllocate((vb,), new_index=True, **ids(o == ">"))
    payload = vb_raw(o, 2, ent_oid(o, 5, 1), struct.pack(o + "i", 3))
    return pdu, packet(o, 14, payload, flags=0x02)


def v_index_deallocate(o: str) -> tuple[Pdu, bytes]:
    vb = VarBind((*ENT, 5, 1), Value(SnmpType.OCTET_STRING, b"abcd"))
    pdu = IndexDeallocate((vb,), any_index=True, **ids(o == ">"))
    payload = vb_raw(o, 4, ent_oid(o, 5, 1), octets(o, b"abcd"))
    return pdu, packet(o, 15, payload, flags=0x04)


def v_add_caps(o: str) -> tuple[Pdu, bytes]:
    pdu = AddAgentCaps((*ENT, 10), b"caps", **ids(o == ">"))
    return pdu, packet(o, 16, ent_oid(o, 10) + octets(o, b"caps"))


def v_remove_caps(o: str) -> tuple[Pdu, bytes]:
    pdu = RemoveAgentCaps((*ENT, 10), **ids(o == ">"))
    return pdu, packet(o, 17, ent_oid(o, 10))


def v_response(o: str) -> tuple[Pdu, bytes]:
    pdu = Response(
        1000,
        ErrorCode.NOT_WRITABLE,
        2,
        ALL_TYPES_VARBINDS[:4],
        **ids(o == ">"),
    )
    raw = b"".join(
        [
            vb_raw(o, 67, oid_raw(o, 2, (1, 1, 3, 0)), struct.pack(o + "I", 12345)),
            vb_raw(o, 6, oid_raw(o, 6, (3, 1, 1, 4, 1, 0)), ent_oid(o, 0, 1)),
            vb_raw(o, 2, ent_oid(o, 1), struct.pack(o + "i", -(2**31))),
            vb_raw(o, 4, ent_oid(o, 2), struct.pack(o + "I", 5) + b"abcde\0\0\0"),
        ]
    )
    payload = struct.pack(o + "IHH", 1000, 17, 2) + raw
    return pdu, packet(o, 18, payload)


VECTORS: list[Vector] = [
    v_open,
    v_close,
    v_register,
    v_register_range_context,
    v_unregister,
    v_get,
    v_getnext,
    v_getbulk,
    v_testset,
    v_commit,
    v_undo,
    v_cleanup,
    v_notify,
    v_ping,
    v_index_allocate,
    v_index_deallocate,
    v_add_caps,
    v_remove_caps,
    v_response,
]


@ORDERS
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.__name__[2:])
def test_encode_matches_hand_built_bytes(order: str, vector: Vector) -> None:
    pdu, expected = vector(order)
    assert pdu.encode() == expected


@ORDERS
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.__name__[2:])
def test_decode_hand_built_bytes_returns_pdu_and_leftover(order: str, vector: Vector) -> None:
    pdu, wire = vector(order)
    decoded, rest = decode_packet(wire + b"\x01\x02")
    assert decoded == pdu
    assert type(decoded) is type(pdu)
    assert rest == b"\x01\x02"


def test_every_pdu_type_has_a_vector() -> None:
    covered = {vector(">")[0].TYPE for vector in VECTORS}
    assert len(covered) == 18


# --- OIDs --------------------------------------------------------------------------------


@ORDERS
@pytest.mark.parametrize(
    ("oid", "prefix", "subids"),
    [
        ((1, 3, 6, 1, 4, 1, 2021), 4, (1, 2021)),
        ((1, 3, 6, 1, 255), 255, ()),
        ((1, 3, 6, 1, 256, 1), 0, (1, 3, 6, 1, 256, 1)),  # sub-id 5 > 255
        ((1, 3, 6, 1, 0, 1), 0, (1, 3, 6, 1, 0, 1)),  # sub-id 5 = 0
        ((1, 3, 6, 1), 0, (1, 3, 6, 1)),  # too short
        ((1, 3, 6, 2, 4), 0, (1, 3, 6, 2, 4)),  # not under internet
        ((), 0, ()),  # null OID
    ],
)
def test_oid_prefix_compression_only_when_legal(
    order: str, oid: tuple[int, ...], prefix: int, subids: tuple[int, ...]
) -> None:
    big = order == ">"
    wire = oid_raw(order, prefix, subids)
    assert encode_oid(oid, big=big) == wire
    assert decode_oid(wire, 0, big) == (oid, False, len(wire))


@ORDERS
def test_oid_decoder_accepts_uncompressed_internet_form(order: str) -> None:
    wire = oid_raw(order, 0, (1, 3, 6, 1, 4, 1, 2021), include=1)
    assert decode_oid(wire, 0, order == ">") == ((1, 3, 6, 1, 4, 1, 2021), True, len(wire))


def test_oid_include_flag_encoded() -> None:
    assert encode_oid((1, 2), include=True) == oid_raw(">", 0, (1, 2), include=1)


def test_oid_over_128_subids_rejected_both_ways() -> None:
    with pytest.raises(AgentXEncodeError):
        encode_oid(tuple(range(129)))
    assert len(encode_oid((1,) * 128)) == 4 + 4 * 128
    wire = oid_raw(">", 0, (1,) * 129)
    with pytest.raises(AgentXParseError):
        decode_oid(wire)
    # 124 sub-ids plus the implied 1.3.6.1.x prefix is 129 as well
    with pytest.raises(AgentXParseError):
        decode_oid(oid_raw(">", 4, (1,) * 124))


# --- framing and parse errors -------------------------------------------------------------


def test_incomplete_header_and_payload_wait_for_more() -> None:
    _, wire = v_open(">")
    for cut in (0, 1, 19, 20, len(wire) - 1):
        assert decode_packet(wire[:cut]) == (None, wire[:cut])


def test_coalesced_packets_decode_one_at_a_time() -> None:
    a, wa = v_ping(">")
    b, wb = v_close("<")
    first, rest = decode_packet(wa + wb)
    assert first == a
    second, rest = decode_packet(rest)
    assert second == b
    assert rest == b""


def test_flags_byte_decides_byte_order_of_header() -> None:
    wire = packet("<", 13, b"")
    h = decode_header(wire)
    assert (h.session_id, h.transaction_id, h.packet_id, h.network_byte_order) == (7, 8, 9, False)


def test_huge_payload_length_fails_at_once_without_buffering() -> None:
    wire = struct.pack(">BBBxIIII", 1, 5, 0x10, 1, 2, 3, MAX_PAYLOAD_LEN + 4)
    with pytest.raises(AgentXParseError) as info:
        decode_packet(wire)
    assert info.value.header is not None
    assert info.value.header.packet_id == 3
    assert info.value.skip is None


def test_payload_length_not_multiple_of_four_is_parse_error() -> None:
    wire = struct.pack(">BBBxIIII", 1, 13, 0x10, 1, 2, 3, 6) + b"\0" * 6
    with pytest.raises(AgentXParseError) as info:
        decode_packet(wire)
    assert info.value.skip is None


def test_bad_version_is_parse_error_without_resync() -> None:
    wire = struct.pack(">BBBxIIII", 2, 13, 0x10, 1, 2, 3, 0)
    with pytest.raises(AgentXParseError) as info:
        decode_packet(wire)
    assert info.value.header is not None and info.value.skip is None


def test_unknown_pdu_type_is_skippable_parse_error() -> None:
    wire = struct.pack(">BBBxIIII", 1, 99, 0x10, 1, 2, 3, 8) + b"\0" * 8
    assert decode_packet(wire[:-1]) == (None, wire[:-1])  # waits for the whole packet
    with pytest.raises(AgentXParseError) as info:
        decode_packet(wire + b"more")
    assert info.value.header is not None
    assert info.value.header.pdu_type == 99
    assert info.value.skip == len(wire)


@pytest.mark.parametrize(
    ("pdu_type", "payload"),
    [
        pytest.param(6, struct.pack(">BBBx", 3, 4, 0) + b"\0\0\0\1", id="truncated-oid"),
        pytest.param(2, struct.pack(">B3x", 5) + b"\0\0\0\0", id="close-trailing-octets"),
        pytest.param(
            12, struct.pack(">Hxx", 77) + oid_raw(">", 0, (1, 2)), id="unknown-varbind-type"
        ),
        pytest.param(
            12,
            struct.pack(">Hxx", 4) + oid_raw(">", 0, (1, 2)) + struct.pack(">I", 100),
            id="octet-string-overrun",
        ),
        pytest.param(
            12,
            struct.pack(">Hxx", 64) + oid_raw(">", 0, (1, 2)) + octets(">", b"12345"),
            id="ipaddress-not-4-octets",
        ),
        pytest.param(
            12, struct.pack(">Hxx", 70) + oid_raw(">", 0, (1, 2)) + b"\0" * 4, id="short-c64"
        ),
        pytest.param(18, struct.pack(">I", 0), id="short-response"),
        pytest.param(5, octets(">", b"x" * 9)[:8], id="context-overrun"),
    ],
)
def test_malformed_payload_raises_parse_error_with_header(pdu_type: int, payload: bytes) -> None:
    flags = 0x08 if pdu_type == 5 else 0
    wire = packet(">", pdu_type, payload + b"\0" * (-len(payload) % 4), flags=flags)
    with pytest.raises(AgentXParseError) as info:
        decode_packet(wire)
    assert info.value.header is not None
    assert info.value.header.pdu_type == pdu_type
    assert info.value.skip == len(wire)


def test_context_only_read_for_pdu_types_that_carry_one() -> None:
    # Close with NON_DEFAULT_CONTEXT set: the flag is ignored, the payload is a Close.
    wire = packet(">", 2, struct.pack(">B3x", 1), flags=0x08)
    pdu, _ = decode_packet(wire)
    assert pdu == Close(CloseReason.OTHER, **ids(True))


def test_unknown_error_code_and_close_reason_kept_as_ints() -> None:
    pdu, _ = decode_packet(packet(">", 18, struct.pack(">IHH", 0, 999, 0)))
    assert isinstance(pdu, Response)
    assert pdu.error == 999
    pdu, _ = decode_packet(packet(">", 2, struct.pack(">B3x", 42)))
    assert isinstance(pdu, Close)
    assert pdu.reason == 42


def test_encode_rejects_out_of_range_values() -> None:
    bad = [
        Response(varbinds=(VarBind((1, 2), Value(SnmpType.INTEGER, 2**31)),)),
        Response(varbinds=(VarBind((1, 2), Value(SnmpType.COUNTER64, -1)),)),
        Response(varbinds=(VarBind((1, 2), Value(SnmpType.OCTET_STRING, 5)),)),
        Response(varbinds=(VarBind((1, 2**32), Value(SnmpType.NULL)),)),
        Response(packet_id=2**32),
        Register((1, 2), range_subid=3),  # range without upper bound
        Close(context=b"x"),  # Close carries no context
    ]
    for pdu in bad:
        with pytest.raises(AgentXEncodeError):
            pdu.encode()


# --- properties: the fuzz generators of bench/fuzz_agentx.py, driven by Hypothesis -----------
# `st.randoms()` hands them a Random whose every call is a Hypothesis draw: examples are
# replayed from the database and shrunk like any other.

randoms = st.randoms(use_true_random=False)
pdus = randoms.map(lambda rng: Gen(rng).pdu())
framed_garbage = randoms.map(random_header)  # a plausible header over a random payload


@settings(max_examples=500, deadline=None)
@given(pdus, st.binary(max_size=8))
def test_round_trip_any_pdu(pdu: Pdu, tail: bytes) -> None:
    wire = pdu.encode()
    assert len(wire) % 4 == 0
    assert struct.unpack_from(">I" if pdu.network_byte_order else "<I", wire, 16)[0] == (
        len(wire) - HEADER_LEN
    )
    decoded, rest = decode_packet(wire + tail)
    assert decoded == pdu
    assert rest == tail


@pytest.mark.timeout(300)  # hang detection: 5-15 s
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | framed_garbage | st.lists(framed_garbage).map(b"".join))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    _decode_all(data)


@settings(max_examples=1000, deadline=None)
@given(pdus, randoms)
def test_corrupted_packets_raise_only_parse_error(pdu: Pdu, rng: random.Random) -> None:
    _decode_all(mutate(rng, pdu.encode()))


def _decode_all(data: bytes) -> None:
    """Decode a stream the way the session does; only AgentXParseError may escape."""
    got = decode_stream([data])
    assert all(isinstance(pdu, Pdu) for pdu in got.pdus)
