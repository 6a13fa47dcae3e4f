"""The packed OidTree form: round trips through bytes and mmap, raw AgentX varbinds."""

from __future__ import annotations

import mmap
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pmta_snmp.agentx.codec import RawVarBind, Response, VarBind, decode_packet, raw_varbind
from pmta_snmp.mib.snapshot import Oid, OidTree, OidTreeError, SnmpType, Value, oid_key

BASE = (1, 3, 6, 1, 4, 1, 32473, 25)

VALUES = [
    Value(SnmpType.INTEGER, -(2**31)),
    Value(SnmpType.INTEGER, 7),
    Value(SnmpType.COUNTER32, 2**32 - 1),
    Value(SnmpType.GAUGE32, 0),
    Value(SnmpType.TIME_TICKS, 12345),
    Value(SnmpType.COUNTER64, 2**64 - 1),
    Value(SnmpType.OCTET_STRING, b""),
    Value(SnmpType.OCTET_STRING, "gmail.com/vmta-é".encode()),
    Value(SnmpType.IP_ADDRESS, b"\x7f\0\0\x01"),
    Value(SnmpType.OBJECT_IDENTIFIER, ()),
    Value(SnmpType.OBJECT_IDENTIFIER, (1, 3, 6, 1, 6, 3, 1)),
    Value(SnmpType.NULL),
    Value(SnmpType.OPAQUE, b"\x9f\x78\x04"),
]


def sample_tree() -> OidTree:
    items = [((*BASE, 1, i, 0), v) for i, v in enumerate(VALUES, 1)]
    items.append(((2, 5, 4294967295), Value(SnmpType.GAUGE32, 9)))  # not under 1.3.6.1
    return OidTree(items, [(*BASE, 1, i) for i in range(1, len(VALUES) + 1)])


def test_bytes_round_trip_keeps_every_value_and_object() -> None:
    tree = sample_tree()
    copy = OidTree.from_buffer(tree.to_bytes())
    assert list(copy) == list(tree)
    assert copy.objects == tree.objects
    assert copy.nbytes == tree.nbytes
    assert copy.has_object((*BASE, 1, 3, 99))


def test_tree_over_an_mmap_answers_without_copying(tmp_path: object) -> None:
    tree = sample_tree()
    data = tree.to_bytes()
    fd = os.memfd_create("test-tree")
    try:
        os.write(fd, data)
        mm = mmap.mmap(fd, len(data), prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    mapped = OidTree.from_buffer(mm)
    assert mapped.get((*BASE, 1, 8, 0)) == VALUES[7]
    assert mapped.next_after((*BASE, 1, 2, 0)) == ((*BASE, 1, 3, 0), VALUES[2])
    assert list(mapped) == list(tree)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:10],
        lambda b: b"XXXX" + b[4:],
        lambda b: b[:4] + struct.pack("=I", 99) + b[8:],
        lambda b: b + b"\0",
    ],
    ids=["short", "magic", "version", "length"],
)
def test_foreign_or_damaged_buffers_are_refused(mangle: object) -> None:
    data = sample_tree().to_bytes()
    with pytest.raises(OidTreeError):
        OidTree.from_buffer(mangle(data))  # type: ignore[operator]


def test_key_order_is_oid_order() -> None:
    oids: list[Oid] = [(1,), (1, 0), (1, 3), (1, 3, 0), (1, 255), (1, 256), (2,), (2**32 - 1,)]
    assert sorted(oids) == oids
    keys = [oid_key(o) for o in oids]
    assert sorted(keys) == keys


@settings(max_examples=150, deadline=None)
@given(
    st.sets(
        st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 4), min_size=1, max_size=9).map(tuple),
        max_size=80,
    ),
    st.lists(st.integers(0, 4), max_size=9).map(tuple),
)
def test_searches_over_the_packed_form_match_sorted_tuples(oids: set[Oid], probe: Oid) -> None:
    tree = OidTree((o, Value(SnmpType.GAUGE32, i)) for i, o in enumerate(sorted(oids)))
    ordered = sorted(oids)
    assert tree.oids == tuple(ordered)
    after = [o for o in ordered if o > probe]
    found = tree.next_after(probe)
    assert (found[0] if found else None) == (after[0] if after else None)
    assert (tree.index(probe) is not None) == (probe in oids)
    # a walk from the start visits everything in order (exercises the successor hint)
    walked, cur = [], tree.next_after((), include=True)
    while cur is not None:
        walked.append(cur[0])
        cur = tree.next_after(cur[0])
    assert walked == ordered


@pytest.mark.parametrize("index", range(len(VALUES) + 1))
def test_raw_varbinds_encode_like_varbinds_in_both_byte_orders(index: int) -> None:
    tree = sample_tree()
    oid, value = tree.item(index)
    raw = raw_varbind(*tree.raw(index))
    assert raw == VarBind(oid, value)
    assert raw.name == oid and raw.value == value
    for big in (True, False):
        with_raw = Response(1, varbinds=(raw,), network_byte_order=big).encode()
        plain = Response(1, varbinds=(VarBind(oid, value),), network_byte_order=big).encode()
        assert with_raw == plain
        decoded, rest = decode_packet(with_raw)
        assert rest == b""
        assert isinstance(decoded, Response)
        assert decoded.varbinds == (VarBind(oid, value),)


def test_raw_varbind_equality_and_hash_follow_the_decoded_varbind() -> None:
    vb = VarBind((*BASE, 1, 0), Value(SnmpType.INTEGER, 5))
    tree = OidTree([vb_pair := (vb.name, vb.value)])
    raw = raw_varbind(*tree.raw(0))
    assert isinstance(raw, RawVarBind)
    assert raw == vb and vb == raw
    assert hash(raw) == hash(vb)
    assert raw != VarBind(vb_pair[0], Value(SnmpType.INTEGER, 6))
    assert "RawVarBind" in repr(raw)


def test_from_sorted_streams_a_generator_and_refuses_disorder() -> None:
    items = [((*BASE, 1, i, 0), Value(SnmpType.GAUGE32, i)) for i in range(1, 50)]
    consumed: list[int] = []

    def gen():  # type: ignore[no-untyped-def]
        for n, item in enumerate(items):
            consumed.append(n)
            yield item

    tree = OidTree.from_sorted(gen(), [(*BASE, 1)])
    assert list(tree) == items and len(consumed) == len(items)
    assert tree.objects == ((*BASE, 1),)
    with pytest.raises(OidTreeError, match="ascending"):
        OidTree.from_sorted([items[1], items[0]])
    with pytest.raises(OidTreeError, match="ascending"):
        OidTree.from_sorted([items[0], items[0]])
