"""The standalone agent without the network: the BER codec, the responder that answers v1/v2c
messages from the OidTree (Get, GetNext, GetBulk, Set, SNMPv1 rules, size limits), value mapping,
address parsing, the configuration checks done before anything is bound, and no pysnmp private
names in the package.

Requests are built and responses decoded with pysnmp's own message API and pyasn1's codec: an
encoder and decoder independent of ours check every octet we send.
"""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path
from typing import Any

import pytest
from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api, rfc1902, rfc1905
from pysnmp.proto.api import v1 as pv1
from pysnmp.proto.api import v2c as pv2c

import pmta_snmp
from pmta_snmp.ber import BerError, encode_varbind, key_of_oid, oid_of_key
from pmta_snmp.config import ConfigError, SnmpSection, SnmpUser, TrapTarget
from pmta_snmp.mib.snapshot import (
    Oid,
    OidTree,
    OidTreeError,
    SnmpType,
    Value,
    encode_value,
    oid_key,
)
from pmta_snmp.snmpfast import (
    CommunityResponder,
    JoinedTree,
    RequestVarBind,
    TreeResponder,
    message_version,
    name_tlv,
)
from pmta_snmp.standalone import (
    StandaloneAgent,
    UdpEndpoint,
    parse_udp_endpoint,
    to_pysnmp_value,
)

BASE: Oid = (1, 3, 6, 1, 4, 1, 32473, 99)
A: Oid = (*BASE, 1, 1, 0)
B: Oid = (*BASE, 1, 2, 0)
C: Oid = (*BASE, 1, 3, 0)
D: Oid = (*BASE, 1, 4, 0)
OUTSIDE: Oid = (1, 3, 6, 2, 1, 0)  # an OidTree may hold it; the agent never serves it

TREE = OidTree(
    [
        (A, Value(SnmpType.INTEGER, -1)),
        (B, Value(SnmpType.OCTET_STRING, b"x" * 40)),
        (C, Value(SnmpType.COUNTER64, 2**64 - 1)),
        (D, Value(SnmpType.GAUGE32, 7)),
        (OUTSIDE, Value(SnmpType.INTEGER, 5)),
    ],
    [A[:-1], B[:-1], C[:-1], D[:-1], OUTSIDE[:-1]],
)
COMMUNITY = "s3cret"

Shown = list[tuple[Oid, str, object]]


def show(var_binds: Any) -> Shown:
    """(OID, pysnmp type name, Python value) for comparison."""
    out: Shown = []
    for n, v in var_binds:
        kind = type(v).__name__
        kind = "Integer" if kind == "Integer32" else kind  # decoded INTEGERs are Integer
        if kind in ("NoSuchObject", "NoSuchInstance", "EndOfMibView", "Null"):
            out.append((tuple(n), kind, None))
        elif kind in ("OctetString", "Opaque", "IpAddress"):
            out.append((tuple(n), kind, bytes(v)))
        elif kind == "ObjectIdentifier":
            out.append((tuple(n), kind, tuple(v)))
        else:
            out.append((tuple(n), kind, int(v)))
    return out


class Manager:
    """Builds requests with pysnmp's message API, sends them to a CommunityResponder, decodes
    the answer with pyasn1: (error-status, error-index, varbinds), or None for no answer."""

    def __init__(self, tree: Any = TREE, version: int = 1, community: str = COMMUNITY,
                 **kwargs: Any) -> None:
        getter = tree if callable(tree) else (lambda: tree)
        self.responder = TreeResponder(getter, **kwargs)
        self.agent = CommunityResponder(self.responder, COMMUNITY.encode())
        self.version = version
        self.community = community
        self.request_id = 0

    @property
    def mod(self) -> Any:
        return api.PROTOCOL_MODULES[self.version]

    def request(self, pdu: Any, oids: list[Oid], values: list[Any] | None = None) -> bytes:
        mod = self.mod
        if pdu.tagSet != pv2c.GetBulkRequestPDU.tagSet:  # a GetBulk comes with its fields set
            mod.apiPDU.set_defaults(pdu)
        self.request_id += 7919
        mod.apiPDU.set_request_id(pdu, self.request_id)
        nulls = values or [mod.Null("")] * len(oids)
        mod.apiPDU.set_varbinds(pdu, list(zip(oids, nulls, strict=True)))
        msg = mod.Message()
        mod.apiMessage.set_defaults(msg)
        mod.apiMessage.set_community(msg, self.community)
        mod.apiMessage.set_pdu(msg, pdu)
        data: bytes = encoder.encode(msg)
        return data

    def send(self, data: bytes) -> tuple[int, int, Shown] | None:
        answer = self.agent.answer(data)
        if answer is None:
            return None
        mod = self.mod
        msg, rest = decoder.decode(answer, asn1Spec=mod.Message())
        assert rest == b""
        assert int(mod.apiMessage.get_version(msg)) == self.version
        assert bytes(mod.apiMessage.get_community(msg)) == COMMUNITY.encode()
        pdu = mod.apiMessage.get_pdu(msg)
        assert pdu.tagSet == mod.GetResponsePDU.tagSet
        assert int(mod.apiPDU.get_request_id(pdu)) == self.request_id
        return (
            int(mod.apiPDU.get_error_status(pdu)),
            int(mod.apiPDU.get_error_index(pdu, muteErrors=True)),
            show(mod.apiPDU.get_varbinds(pdu)),
        )

    def get(self, *oids: Oid) -> tuple[int, int, Shown] | None:
        return self.send(self.request(self.mod.GetRequestPDU(), list(oids)))

    def next(self, *oids: Oid) -> tuple[int, int, Shown] | None:
        return self.send(self.request(self.mod.GetNextRequestPDU(), list(oids)))

    def bulk(self, non_repeaters: int, reps: int, *oids: Oid) -> tuple[int, int, Shown] | None:
        pdu = pv2c.GetBulkRequestPDU()
        pv2c.apiBulkPDU.set_defaults(pdu)
        pv2c.apiBulkPDU.set_non_repeaters(pdu, non_repeaters)
        pv2c.apiBulkPDU.set_max_repetitions(pdu, reps)
        return self.send(self.request(pdu, list(oids)))

    def set(self, oid: Oid, value: Any) -> tuple[int, int, Shown] | None:
        return self.send(self.request(self.mod.SetRequestPDU(), [oid], [value]))


OK = 0
TOO_BIG = 1
NO_SUCH_NAME = 2
GEN_ERR = 5
NO_ACCESS = 6


@pytest.fixture
def v2() -> Manager:
    return Manager()


@pytest.fixture
def v1() -> Manager:
    return Manager(version=0)


# --- BER --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "oid",
    [
        (1, 3, 6, 1, 4, 1, 32473, 25, 1, 9, 1, 2, 11, *b"example.com"),
        (1, 3, 6, 1, 4, 1, 2**32 - 1, 128, 127, 0, 16384, 2**21, 2**28, 255),
        (0, 0),
        (0, 39),
        (1, 0, 5),
        (2, 999, 3),  # X.690: the second arc of 2 may exceed 39
        (2, 47),
        tuple(range(128)),
        (1, 3, 6, 1, *[200] * 124),
    ],
)
def test_oid_codec_matches_pyasn1(oid: Oid) -> None:
    theirs = encoder.encode(rfc1902.ObjectName(oid))
    start = 2 if theirs[1] < 0x80 else 2 + (theirs[1] & 0x7F)  # after tag and length
    assert oid_of_key(oid_key(oid)) == theirs[start:]
    assert key_of_oid(theirs[start:]) == oid_key(oid)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x2b\x86",  # unterminated sub-id
        b"\x2b\x80\x01",  # a leading 0x80 octet
        b"\x2b\x90\x80\x80\x80\x00",  # 2^32
        bytes([0x2B] + [1] * 128),  # 129 sub-ids
    ],
)
def test_malformed_oids_are_refused(content: bytes) -> None:
    with pytest.raises(BerError):
        key_of_oid(content)


VALUES = [
    Value(SnmpType.INTEGER, v) for v in (0, 1, -1, 127, 128, -128, -129, 2**31 - 1, -(2**31))
] + [
    Value(t, v)
    for t in (SnmpType.COUNTER32, SnmpType.GAUGE32, SnmpType.TIME_TICKS)
    for v in (0, 127, 128, 255, 256, 2**31, 2**32 - 1)
] + [
    Value(SnmpType.COUNTER64, v) for v in (0, 1, 2**63, 2**64 - 1)
] + [
    Value(SnmpType.OCTET_STRING, b""),
    Value(SnmpType.OCTET_STRING, b"\x00\xff" * 100),
    Value(SnmpType.OPAQUE, b"\x9f\x78"),
    Value(SnmpType.IP_ADDRESS, b"\xc0\x00\x02\x01"),
    Value(SnmpType.NULL),
    Value(SnmpType.OBJECT_IDENTIFIER, (1, 3, 6, 1, 4, 1, 32473)),  # AgentX prefix form
    Value(SnmpType.OBJECT_IDENTIFIER, (1, 3, 6, 1, 300, 2)),  # too big for the prefix form
    Value(SnmpType.OBJECT_IDENTIFIER, (0, 0)),
    Value(SnmpType.OBJECT_IDENTIFIER, ()),  # sent as 0.0
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: f"{v.type.name}-{v.value!r:.20}")
def test_varbind_encoding_matches_pysnmp(value: Value) -> None:
    name = (*BASE, 7, 0)
    ours = encode_varbind(int(value.type), oid_key(name), encode_value(value))
    decoded, rest = decoder.decode(ours, asn1Spec=pv2c.VarBind())
    assert rest == b""
    assert show([pv2c.apiVarBind.get_oid_value(decoded)]) == show(
        [(rfc1902.ObjectName(name), to_pysnmp_value(value))]
    )
    vb = pv2c.VarBind()
    pv2c.apiVarBind.set_oid_value(vb, (name, to_pysnmp_value(value)))
    if value.type is not SnmpType.INTEGER:  # pyasn1 writes -128 as ff 80; X.690 says 80
        assert ours == encoder.encode(vb)


@pytest.mark.parametrize(
    ("number", "octets"),
    [(0, "00"), (-1, "ff"), (127, "7f"), (128, "0080"), (-128, "80"), (-129, "ff7f"),
     (2**31 - 1, "7fffffff"), (-(2**31), "80000000")],
)
def test_integers_are_minimal(number: int, octets: str) -> None:
    vb = encode_varbind(2, oid_key(A), encode_value(Value(SnmpType.INTEGER, number)))
    assert vb.endswith(bytes((2, len(octets) // 2)) + bytes.fromhex(octets))


# --- Get / GetNext / GetBulk / Set, v2c -------------------------------------------------------


def test_get(v2: Manager) -> None:
    assert v2.get(A, (*A[:-1], 1), (*BASE, 9, 0), OUTSIDE, (1, 2), C) == (OK, 0, [
        (A, "Integer", -1),
        ((*A[:-1], 1), "NoSuchInstance", None),
        ((*BASE, 9, 0), "NoSuchObject", None),
        (OUTSIDE, "NoSuchObject", None),
        ((1, 2), "NoSuchObject", None),
        (C, "Counter64", 2**64 - 1),
    ])


def test_getnext_stays_inside_the_view(v2: Manager) -> None:
    assert v2.next((0, 0), (1, 3, 6, 1), A, B, D, OUTSIDE) == (OK, 0, [
        (A, "Integer", -1),
        (A, "Integer", -1),
        (B, "OctetString", b"x" * 40),
        (C, "Counter64", 2**64 - 1),
        (D, "EndOfMibView", None),
        (OUTSIDE, "EndOfMibView", None),
    ])


def test_the_tree_is_fetched_per_request() -> None:
    trees = [TREE, OidTree([(A, Value(SnmpType.INTEGER, 2))], [A[:-1]])]
    manager = Manager(lambda: trees[0])
    assert manager.get(A) == (OK, 0, [(A, "Integer", -1)])
    trees.reverse()
    assert manager.get(A) == (OK, 0, [(A, "Integer", 2)])
    assert manager.next(A) == (OK, 0, [(A, "EndOfMibView", None)])


HEAD_A: Oid = (1, 3, 6, 1, 2, 1, 1, 1, 0)
HEAD_B: Oid = (1, 3, 6, 1, 2, 1, 1, 3, 0)
HEAD = OidTree([(HEAD_A, Value(SnmpType.OCTET_STRING, b"d")),
                (HEAD_B, Value(SnmpType.TIME_TICKS, 5))], [HEAD_A[:-1], HEAD_B[:-1]])


def test_a_joined_tree_answers_as_one_tree() -> None:
    """The system group joined before the tree: lookups, successors and GetBulk runs cross
    from one to the other as in one tree."""
    v2 = Manager(lambda: JoinedTree(HEAD, TREE))
    assert v2.get(HEAD_B, A, (*HEAD_B[:-1], 1), (1, 3, 6, 1, 2, 1, 1, 2, 0)) == (OK, 0, [
        (HEAD_B, "TimeTicks", 5),
        (A, "Integer", -1),
        ((*HEAD_B[:-1], 1), "NoSuchInstance", None),
        ((1, 3, 6, 1, 2, 1, 1, 2, 0), "NoSuchObject", None),
    ])
    assert v2.next((0, 0), HEAD_A, HEAD_B, D) == (OK, 0, [
        (HEAD_A, "OctetString", b"d"),
        (HEAD_B, "TimeTicks", 5),
        (A, "Integer", -1),
        (D, "EndOfMibView", None),
    ])
    assert v2.bulk(0, 4, HEAD_A, C) == (OK, 0, [
        (HEAD_B, "TimeTicks", 5), (D, "Gauge32", 7),
        (A, "Integer", -1), (D, "EndOfMibView", None),
        (B, "OctetString", b"x" * 40), (D, "EndOfMibView", None),
        (C, "Counter64", 2**64 - 1), (D, "EndOfMibView", None),
    ])
    v1 = Manager(lambda: JoinedTree(HEAD, TREE), version=0)
    assert v1.next(HEAD_B, B) == (OK, 0, [(A, "Integer", -1), (D, "Gauge", 7)])  # v1 names


def test_getbulk_interleaves_and_stops_after_the_first_all_end_row(v2: Manager) -> None:
    assert v2.bulk(1, 10, (1, 0), B, C) == (OK, 0, [
        (A, "Integer", -1),  # non-repeater
        (C, "Counter64", 2**64 - 1),
        (D, "Gauge32", 7),
        (D, "Gauge32", 7),
        (D, "EndOfMibView", None),  # the second repeater is at the end ...
        (D, "EndOfMibView", None),  # ... the first one too: this row is the last
        (D, "EndOfMibView", None),
    ])
    assert v2.bulk(0, 10) == (OK, 0, [])
    assert v2.bulk(2, 10, D, A) == (OK, 0, [
        (D, "EndOfMibView", None), (B, "OctetString", b"x" * 40),
    ])
    assert v2.bulk(1, 0, A, A) == (OK, 0, [(B, "OctetString", b"x" * 40)])
    # negative values count as zero (pysnmp cannot even encode them: ask the responder)
    vbs = [RequestVarBind(oid_key(A), name_tlv(oid_key(A)))]
    assert v2.responder.get_bulk(vbs, -3, -1, budget=1000) == (OK, 0, b"")
    assert v2.responder.get_bulk(vbs, -3, 1, budget=1000).varbinds == encode_varbind(
        *TREE.raw(1)
    )
    # a repeater that starts at the end answers with its own name
    assert v2.bulk(0, 3, (1, 4)) == (OK, 0, [((1, 4), "EndOfMibView", None)])


def test_getbulk_limits() -> None:
    few = Manager(max_bulk_varbinds=2)
    assert few.bulk(0, 10, (1, 0)) == (OK, 0, [(A, "Integer", -1), (B, "OctetString", b"x" * 40)])
    # whole rounds: 2 repeaters, at most 3 varbinds -> one round
    assert Manager(max_bulk_varbinds=3).bulk(0, 10, A, B) == (OK, 0, [
        (B, "OctetString", b"x" * 40), (C, "Counter64", 2**64 - 1),
    ])


def test_getbulk_is_cut_to_the_message_size() -> None:
    manager = Manager()
    pdu = pv2c.GetBulkRequestPDU()
    pv2c.apiBulkPDU.set_defaults(pdu)
    pv2c.apiBulkPDU.set_max_repetitions(pdu, 10)
    request = manager.request(pdu, [(1, 0)])
    full = manager.send(request)
    assert full is not None and len(full[2]) == 5  # A, B, C, D, endOfMibView
    whole = manager.agent.answer(request)
    assert whole is not None
    # the 40-octet string (a 60-octet varbind) does not fit: the answer ends before it
    manager.agent.max_message_size = len(whole) - 60
    assert manager.send(request) == (OK, 0, [(A, "Integer", -1)])
    manager.agent.max_message_size = 60  # not even the first varbind fits: tooBig
    assert manager.send(request) == (TOO_BIG, 0, [])
    for size in range(60, len(whole) + 1):
        manager.agent.max_message_size = size
        answer = manager.agent.answer(request)
        assert answer is not None and len(answer) <= size


def test_get_too_big_for_the_message_size() -> None:
    big = OidTree([(A, Value(SnmpType.OCTET_STRING, b"y" * 3000))], [A[:-1]])
    manager = Manager(big)
    manager.agent.max_message_size = 2000
    assert manager.get(A) == (TOO_BIG, 0, [])  # RFC 3416 §4.2.1: no varbinds
    v1 = Manager(big, version=0)
    v1.agent.max_message_size = 2000
    assert v1.get(A) == (TOO_BIG, 0, [(A, "Null", None)])  # RFC 1157: the request's varbinds


def test_set_is_always_refused(v2: Manager, v1: Manager) -> None:
    for oid in (A, (*BASE, 9, 0)):
        assert v2.set(oid, rfc1902.Integer32(1)) == (NO_ACCESS, 1, [(oid, "Integer", 1)])
        assert v1.set(oid, pv1.Integer(1)) == (NO_SUCH_NAME, 1, [(oid, "Integer", 1)])


def test_getter_failure_is_a_gen_err() -> None:
    def broken() -> OidTree:
        raise RuntimeError("boom")

    manager = Manager(broken)
    assert manager.get(A) == (GEN_ERR, 1, [(A, "Null", None)])
    assert manager.bulk(0, 5, A) == (GEN_ERR, 1, [(A, "Null", None)])


def test_a_value_that_cannot_be_encoded_is_a_gen_err_not_silence() -> None:
    """An OID value outside X.690 (first arc 3) cannot go out as BER: genErr, and the other
    values are still served."""
    odd = OidTree([(A, Value(SnmpType.OBJECT_IDENTIFIER, (3, 5))),
                   (B, Value(SnmpType.INTEGER, 1))], [A[:-1], B[:-1]])
    manager = Manager(odd)
    assert manager.get(A) == (GEN_ERR, 1, [(A, "Null", None)])
    assert manager.next(A) == (OK, 0, [(B, "Integer", 1)])


# --- SNMPv1 -----------------------------------------------------------------------------------


def test_v1_getnext_skips_counter64(v1: Manager) -> None:
    """RFC 3584 §4.2.2.1: a v1 manager never sees a Counter64; GetNext goes past it."""
    assert v1.next(B) == (OK, 0, [(D, "Gauge", 7)])
    assert v1.next((1, 0), A) == (OK, 0, [(A, "Integer", -1), (B, "OctetString", b"x" * 40)])


def test_v1_get_of_counter64_is_no_such_name(v1: Manager) -> None:
    assert v1.get(A, C) == (NO_SUCH_NAME, 2, [(A, "Null", None), (C, "Null", None)])
    assert v1.get(A, D) == (OK, 0, [(A, "Integer", -1), (D, "Gauge", 7)])


def test_v1_missing_names_and_the_end_of_the_view(v1: Manager) -> None:
    assert v1.get((*A[:-1], 1)) == (NO_SUCH_NAME, 1, [((*A[:-1], 1), "Null", None)])
    assert v1.get(A, (*BASE, 9, 0)) == (NO_SUCH_NAME, 2, [(A, "Null", None),
                                                          ((*BASE, 9, 0), "Null", None)])
    assert v1.next(A, D) == (NO_SUCH_NAME, 2, [(A, "Null", None), (D, "Null", None)])
    assert v1.next(C) == (OK, 0, [(D, "Gauge", 7)])
    only_counter = Manager(OidTree([(C, Value(SnmpType.COUNTER64, 1))], [C[:-1]]), version=0)
    assert only_counter.next((1, 0)) == (NO_SUCH_NAME, 1, [((1, 0), "Null", None)])


def test_v1_getbulk_gets_no_answer(v1: Manager) -> None:
    pdu = pv2c.GetBulkRequestPDU()
    pv2c.apiBulkPDU.set_defaults(pdu)
    pv2c.apiBulkPDU.set_varbinds(pdu, [(A, pv2c.Null(""))])
    msg = pv1.Message()
    pv1.apiMessage.set_defaults(msg)
    pv1.apiMessage.set_community(msg, COMMUNITY)
    msg.setComponentByPosition(2, pdu, verifyConstraints=False, matchTags=False,
                               matchConstraints=False)
    assert v1.agent.answer(encoder.encode(msg)) is None


# --- what gets no answer ----------------------------------------------------------------------


def test_wrong_community_gets_no_answer() -> None:
    for community in ("public", "s3cre", "s3cret!", ""):
        for version in (0, 1):
            assert Manager(version=version, community=community).get(A) is None


def test_responses_and_other_pdus_get_no_answer(v2: Manager) -> None:
    for pdu in (pv2c.GetResponsePDU(), pv2c.SNMPv2TrapPDU(), pv2c.InformRequestPDU(),
                pv2c.ReportPDU()):
        assert v2.send(v2.request(pdu, [A])) is None


def test_malformed_messages_never_raise(v2: Manager) -> None:
    """Truncations and random octet flips of valid requests: an answer or none, never an
    exception (one would make asyncio close the socket)."""
    rng = random.Random(17)
    requests = [
        v2.request(pv2c.GetNextRequestPDU(), [A, (1, 3, 6, 1, 4, 1, 32473, 2**31)]),
        v2.request(pv2c.GetRequestPDU(), [B]),
    ]
    bulk = pv2c.GetBulkRequestPDU()
    pv2c.apiBulkPDU.set_defaults(bulk)
    pv2c.apiBulkPDU.set_max_repetitions(bulk, 5)
    requests.append(v2.request(bulk, [A, B]))
    for data in requests:
        for cut in range(len(data)):
            assert v2.agent.answer(data[:cut]) is None
        assert v2.agent.answer(data + b"\x00") is None
        for _ in range(2000):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            answer = v2.agent.answer(bytes(mutated))
            assert answer is None or isinstance(answer, bytes)


def with_long_lengths(data: bytes, octets: int = 4) -> bytes:
    """`data` (minimal BER) with every length in the long form of `octets` octets, leading
    zeros included, as RFC 3417 §8 allows a sender (e.g. `30 84 00 00 00 2d`)."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        tag, n = data[pos], data[pos + 1]
        pos += 2
        if n & 0x80:
            count = n & 0x7F
            n = int.from_bytes(data[pos:pos + count], "big")
            pos += count
        content = data[pos:pos + n]
        pos += n
        if tag & 0x20:  # constructed: its parts too
            content = with_long_lengths(content, octets)
        out += bytes((tag, 0x80 | octets)) + len(content).to_bytes(octets, "big") + content
    return bytes(out)


def test_lengths_with_more_octets_than_needed_are_read(v2: Manager, v1: Manager) -> None:
    """RFC 3417 §8: a definite long-form length may use more octets than the minimum; such a
    request is answered as the minimal one is (snmpd does), not dropped as malformed."""
    for manager in (v2, v1):
        request = manager.request(manager.mod.GetRequestPDU(), [A, D])
        expected = manager.send(request)
        assert expected is not None
        assert expected[0] == OK
        for octets in (1, 4, 8):
            assert manager.send(with_long_lengths(request, octets)) == expected
    indefinite = bytes((0x30, 0x80)) + v2.request(pv2c.GetRequestPDU(), [A])[2:] + b"\0\0"
    assert v2.agent.answer(indefinite) is None


def test_message_version_reads_long_form_lengths() -> None:
    v3 = bytes.fromhex("3010020103300b02020100020205dc040104")  # header of a v3 message
    assert message_version(with_long_lengths(v3)) == 3


# --- values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (Value(SnmpType.INTEGER, -(2**31)), "Integer", -(2**31)),
        (Value(SnmpType.OCTET_STRING, b"\x00abc"), "OctetString", b"\x00abc"),
        (Value(SnmpType.NULL), "Null", None),
        (Value(SnmpType.OBJECT_IDENTIFIER, (1, 3, 6)), "ObjectIdentifier", (1, 3, 6)),
        (Value(SnmpType.OBJECT_IDENTIFIER, ()), "ObjectIdentifier", (0, 0)),
        (Value(SnmpType.IP_ADDRESS, b"\xc0\x00\x02\x01"), "IpAddress", b"\xc0\x00\x02\x01"),
        (Value(SnmpType.COUNTER32, 2**32 - 1), "Counter32", 2**32 - 1),
        (Value(SnmpType.GAUGE32, 7), "Gauge32", 7),
        (Value(SnmpType.TIME_TICKS, 100), "TimeTicks", 100),
        (Value(SnmpType.OPAQUE, b"\x9f\x78"), "Opaque", b"\x9f\x78"),
        (Value(SnmpType.COUNTER64, 2**64 - 1), "Counter64", 2**64 - 1),
    ],
)
def test_value_mapping(value: Value, kind: str, expected: object) -> None:
    shown = show([(rfc1902.ObjectName((1, 3)), to_pysnmp_value(value))])
    assert shown == [((1, 3), kind, expected)]


def test_exceptions_are_the_rfc1905_values() -> None:
    for value in (rfc1905.noSuchObject, rfc1905.noSuchInstance, rfc1905.endOfMibView):
        assert encoder.encode(value)[1] == 0


# --- no pysnmp private names ----------------------------------------------------------------

_PACKAGE = Path(pmta_snmp.__file__).parent
_MANGLED = re.compile(r"\b_[A-Za-z]\w*__\w+")  # _Class__attr: a name-mangled private
_PRIVATE_STRING = re.compile(r"""["'](_[\w-]+)["']""")  # getattr(x, "_name"), "__SNMPv2-MIB"
_PRIVATE_ATTRIBUTE = re.compile(r"\b(\w+)\.(_\w+)")  # something._name
# The MIB instance module holding snmpEngineID and snmpEngineBoots: the only place to set them
# without pysnmp's shared /tmp boots store (pysnmp's own config and USM read them there).
_ALLOWED_PRIVATE_STRINGS = frozenset({"__SNMP-FRAMEWORK-MIB"})


def pysnmp_private_names(text: str) -> list[str]:
    """Private names a module that uses pysnmp reaches into: name-mangled attributes, private
    names in strings, and `_name` attributes of anything but `self` and `cls`."""
    found = [m.group(0) for m in _MANGLED.finditer(text)]
    found += [m.group(1) for m in _PRIVATE_STRING.finditer(text)
              if m.group(1) not in _ALLOWED_PRIVATE_STRINGS]
    found += [
        m.group(0) for m in _PRIVATE_ATTRIBUTE.finditer(text)
        if m.group(1) not in ("self", "cls") and not m.group(2).startswith("__")
    ]
    return found


def test_the_package_uses_no_pysnmp_private_names() -> None:
    users = [
        path for path in sorted(_PACKAGE.rglob("*.py"))
        if re.search(r"^\s*(from|import) (pysnmp|pyasn1)\b|import_module\(.pyasn1",
                     path.read_text(), re.M)
    ]
    assert _PACKAGE / "standalone.py" in users
    found = {str(p.relative_to(_PACKAGE)): pysnmp_private_names(p.read_text()) for p in users}
    assert {name: names for name, names in found.items() if names} == {}
    # the check itself finds what it is for
    assert pysnmp_private_names('getattr(self, "_CommandResponderBase__pendingReqs", None)')
    assert pysnmp_private_names('getattr(transport, "_lport", None)')
    assert pysnmp_private_names("engine.transport._lport")
    assert pysnmp_private_names('import_symbols("__SNMPv2-MIB", "snmpInPkts")')


# --- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp:127.0.0.1:1161", UdpEndpoint("127.0.0.1", 1161)),
        ("127.0.0.1:0", UdpEndpoint("127.0.0.1", 0)),
        ("udp:161", UdpEndpoint("0.0.0.0", 161)),
        ("udp:localhost:1161", UdpEndpoint("127.0.0.1", 1161)),
        ("10.0.0.1", UdpEndpoint("10.0.0.1", 162)),
        ("UDP:nms.example.com:10162", UdpEndpoint("nms.example.com", 10162)),
        ("udp6:[::1]:1161", UdpEndpoint("::1", 1161, ipv6=True)),
        ("[2001:db8::1]:162", UdpEndpoint("2001:db8::1", 162, ipv6=True)),
        # a bare IPv6 literal is only the address: a port needs the brackets
        ("udp6:::1:1161", UdpEndpoint("::1:1161", 162, ipv6=True)),
        ("udp6:::1", UdpEndpoint("::1", 162, ipv6=True)),
        ("udp6:2001:db8::5", UdpEndpoint("2001:db8::5", 162, ipv6=True)),
        ("udp6:1161", UdpEndpoint("::", 1161, ipv6=True)),
    ],
)
def test_parse_udp_endpoint(text: str, expected: UdpEndpoint) -> None:
    assert parse_udp_endpoint(text, what="x", default_port=162) == expected


@pytest.mark.parametrize(
    "text",
    [
        "tcp:127.0.0.1:161",
        "udp:127.0.0.1:99999",
        "udp:127.0.0.1:port",
        "udp6:127.0.0.1:161",
        "udp:bad host:1",
        "[::1",
        "unix:/var/agentx/master",
    ],
)
def test_parse_udp_endpoint_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match=r"snmp\.listen"):
        parse_udp_endpoint(text, what="snmp.listen", default_port=161)


# --- configuration checks --------------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, text in {"good": "long-enough-1", "short": "short", "empty": ""}.items():
        path = tmp_path / key
        path.write_text(text, encoding="utf-8")
        out[key] = str(path)
    out["missing"] = str(tmp_path / "nope")
    return out


def agent(snmp: SnmpSection, **kwargs: Any) -> StandaloneAgent:
    return StandaloneAgent(lambda: TREE, snmp, **kwargs)


def test_user_checks(keys: dict[str, str]) -> None:
    good, local = keys["good"], "udp:127.0.0.1:0"

    def user(**kw: str) -> SnmpSection:
        fields = {"name": "ops", "auth_key_file": good, "priv_key_file": good, **kw}
        return SnmpSection(listen=local, users=(SnmpUser(**fields),))

    agent(user(auth_protocol="SHA-512", priv_protocol="aes-256-c"))
    for kw, message in [
        ({"auth_protocol": "md5"}, "unsupported protocol 'md5'"),
        ({"priv_protocol": "des"}, "unsupported protocol 'des'"),
        ({"auth_key_file": keys["short"]}, "at least 8 characters"),
        ({"priv_key_file": ""}, "priv_key_file is required"),
        ({"auth_key_file": keys["missing"]}, "cannot read"),
        ({"priv_key_file": keys["empty"]}, "is empty"),
        ({"name": ""}, "1..32 characters"),
    ]:
        with pytest.raises(ConfigError, match=message):
            agent(user(**kw))
    twice = SnmpUser("ops", "sha", good, "aes", good)
    with pytest.raises(ConfigError, match="unique"):
        agent(SnmpSection(listen=local, users=(twice, twice)))


def test_listen_and_community_checks(keys: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="give an IP address"):
        agent(SnmpSection(listen="udp:agent.example.com:161", community_file=keys["good"]))
    with pytest.raises(ConfigError, match="is empty"):
        agent(SnmpSection(listen="udp:127.0.0.1:0", community_file=keys["empty"]))
    with pytest.raises(ConfigError, match="must not be empty"):
        agent(SnmpSection(listen="udp:127.0.0.1:0"), community="")
    with pytest.raises(ConfigError, match=r"snmp\.trap_targets\[0\]\.address"):
        agent(SnmpSection(listen="udp:127.0.0.1:0", trap_targets=(TrapTarget("tcp:x:1"),)))
    # a secret community may listen anywhere; the default one only on loopback
    agent(SnmpSection(listen="udp:0.0.0.0:161", community_file=keys["good"]))
    agent(SnmpSection(listen="udp:0.0.0.0:161"), community="not-public")
    with pytest.raises(ConfigError, match="refusing to serve the default community"):
        agent(SnmpSection(listen="udp:[::]:161"))


def test_lifecycle_and_notification_checks() -> None:
    snmp = SnmpSection(listen="udp:127.0.0.1:0", trap_targets=(TrapTarget("udp:127.0.0.1:9"),))
    sa = agent(snmp)

    def running() -> bool:  # a call, so mypy does not narrow the property across awaits
        return sa.running

    with pytest.raises(RuntimeError, match="not started"):
        _ = sa.address

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="not started"):
            await sa.send_notification((*BASE, 0, 1), [])
        await sa.start()
        try:
            assert running()
            assert sa.address[0] == "127.0.0.1"
            assert sa.address[1] > 0
            with pytest.raises(RuntimeError, match="already started"):
                await sa.start()
            with pytest.raises(OidTreeError):
                await sa.send_notification((), [])
            with pytest.raises(OidTreeError):
                await sa.send_notification((*BASE, 0, 1), [(A, Value(SnmpType.GAUGE32, -1))])
            assert await sa.send_notification((*BASE, 0, 1), [(A, Value(SnmpType.GAUGE32, 1))]) == 1
        finally:
            await sa.stop()
        assert not running()
        await sa.stop()

    asyncio.run(scenario())


def test_a_busy_port_is_a_config_error() -> None:
    async def scenario() -> None:
        first = agent(SnmpSection(listen="udp:127.0.0.1:0"))
        await first.start()
        try:
            port = first.address[1]
            second = agent(SnmpSection(listen=f"udp:127.0.0.1:{port}"))
            with pytest.raises(ConfigError, match="cannot bind"):
                await second.start()
            assert not second.running
        finally:
            await first.stop()

    asyncio.run(scenario())
