"""OidTree: validation, exact lookups, successor search with bounds, object prefixes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pmta_snmp.mib.snapshot import Oid, OidTree, OidTreeError, SnmpType, Value

BASE = (1, 3, 6, 1, 4, 1, 32473, 99)


def g(v: int) -> Value:
    return Value(SnmpType.GAUGE32, v)


def tree_of(*oids: Oid, objects: tuple[Oid, ...] = ()) -> OidTree:
    return OidTree(((o, g(i)) for i, o in enumerate(oids)), objects)


def test_iteration_is_sorted_in_oid_order_not_insertion_order() -> None:
    t = tree_of((1, 3, 10), (1, 3, 2), (1, 3), (1, 3, 2, 1))
    assert [o for o, _ in t] == [(1, 3), (1, 3, 2), (1, 3, 2, 1), (1, 3, 10)]
    assert len(t) == 4
    assert t.oids == ((1, 3), (1, 3, 2), (1, 3, 2, 1), (1, 3, 10))


def test_get_exact_only() -> None:
    t = tree_of((1, 3, 1), (1, 3, 2))
    assert t.get((1, 3, 2)) == g(1)
    assert t.get((1, 3)) is None
    assert t.get((1, 3, 2, 0)) is None
    assert t.get((1, 3, 3)) is None
    assert (1, 3, 1) in t
    assert (1, 3, 9) not in t


def test_next_after_is_strict_without_include() -> None:
    t = tree_of((1, 3, 1), (1, 3, 2), (1, 3, 2, 5))
    assert t.next_after((1, 3, 1)) == ((1, 3, 2), g(1))
    assert t.next_after((1, 3, 2)) == ((1, 3, 2, 5), g(2))
    assert t.next_after((1, 3, 1, 99)) == ((1, 3, 2), g(1))
    assert t.next_after((1, 3, 2, 5)) is None
    assert t.next_after((0,)) == ((1, 3, 1), g(0))


def test_next_after_include_returns_start_itself() -> None:
    t = tree_of((1, 3, 1), (1, 3, 2))
    assert t.next_after((1, 3, 1), include=True) == ((1, 3, 1), g(0))
    assert t.next_after((1, 3, 1, 0), include=True) == ((1, 3, 2), g(1))


def test_next_after_end_is_exclusive() -> None:
    t = tree_of((1, 3, 1), (1, 3, 2), (1, 3, 3))
    assert t.next_after((1, 3, 1), end=(1, 3, 2)) is None
    assert t.next_after((1, 3, 1), end=(1, 3, 2, 0)) == ((1, 3, 2), g(1))
    assert t.next_after((1, 3, 1), end=()) == ((1, 3, 2), g(1))
    assert t.next_after((1, 3, 1), end=None) == ((1, 3, 2), g(1))


def test_empty_tree() -> None:
    t = OidTree()
    assert len(t) == 0
    assert t.get((1,)) is None
    assert t.next_after((1,), include=True) is None
    assert not t.has_object((1,))


def test_duplicates_rejected() -> None:
    with pytest.raises(OidTreeError, match="duplicate"):
        tree_of((1, 3, 1), (1, 3, 2), (1, 3, 1))


@pytest.mark.parametrize(
    "oid",
    [(), (1, -1), (1, 2**32), tuple(range(129)), [1, 3], (1, "3"), (1, 2.0)],
    ids=["empty", "negative", "too-big", "129-subids", "list", "str", "float"],
)
def test_bad_oids_rejected(oid: object) -> None:
    with pytest.raises(OidTreeError):
        OidTree([(oid, g(1))])  # type: ignore[list-item]


def test_128_subids_accepted() -> None:
    assert len(OidTree([(tuple([1] * 128), g(1))])) == 1


@pytest.mark.parametrize(
    "value",
    [
        Value(SnmpType.INTEGER, 2**31),
        Value(SnmpType.INTEGER, -(2**31) - 1),
        Value(SnmpType.INTEGER, "1"),  # type: ignore[arg-type]
        Value(SnmpType.COUNTER32, -1),
        Value(SnmpType.GAUGE32, 2**32),
        Value(SnmpType.TIME_TICKS, 2**32),
        Value(SnmpType.COUNTER64, 2**64),
        Value(SnmpType.COUNTER64, -1),
        Value(SnmpType.OCTET_STRING, "text"),  # type: ignore[arg-type]
        Value(SnmpType.OCTET_STRING, b"x" * 65536),
        Value(SnmpType.IP_ADDRESS, b"\x7f\0\0"),
        Value(SnmpType.OBJECT_IDENTIFIER, (1, -2)),
        Value(SnmpType.NULL, 0),
        Value(SnmpType.NO_SUCH_INSTANCE),  # an exception is not data
        Value(SnmpType.END_OF_MIB_VIEW),
    ],
    ids=repr,
)
def test_out_of_range_values_rejected(value: Value) -> None:
    with pytest.raises(OidTreeError):
        OidTree([((1, 3), value)])


def test_boundary_values_accepted() -> None:
    values = [
        Value(SnmpType.INTEGER, -(2**31)),
        Value(SnmpType.INTEGER, 2**31 - 1),
        Value(SnmpType.COUNTER32, 2**32 - 1),
        Value(SnmpType.COUNTER64, 2**64 - 1),
        Value(SnmpType.OCTET_STRING, b""),
        Value(SnmpType.OCTET_STRING, b"x" * 65535),
        Value(SnmpType.IP_ADDRESS, b"\x7f\0\0\x01"),
        Value(SnmpType.OBJECT_IDENTIFIER, ()),
        Value(SnmpType.OBJECT_IDENTIFIER, (1, 3, 6)),
        Value(SnmpType.NULL),
        Value(SnmpType.OPAQUE, b"\x9f"),
    ]
    t = OidTree(((1, i), v) for i, v in enumerate(values))
    assert [v for _, v in t] == values


def test_has_object_scalar_and_column_prefixes() -> None:
    scalar = (*BASE, 1, 2)
    column = (*BASE, 3, 1, 2)
    t = tree_of((*scalar, 0), (*column, 5), objects=(scalar, column))
    assert t.has_object((*scalar, 0))
    assert t.has_object((*scalar, 1))  # instance that does not exist: still our object
    assert t.has_object(scalar)
    assert t.has_object((*column, 7, 7))
    assert not t.has_object((*BASE, 3, 1))  # the entry, not a column
    assert not t.has_object((*BASE, 3, 1, 3, 1))  # another column
    assert not t.has_object((*BASE, 1, 3, 0))
    assert not t.has_object((1, 3))
    assert t.objects == (scalar, column)


def test_nested_object_prefixes_rejected() -> None:
    with pytest.raises(OidTreeError, match="nested"):
        OidTree([], [(1, 3, 1), (1, 3, 1, 2)])


@settings(max_examples=200, deadline=None)
@given(
    st.sets(st.lists(st.integers(0, 6), min_size=1, max_size=5).map(tuple), max_size=40),
    st.lists(st.integers(0, 6), min_size=0, max_size=6).map(tuple),
    st.booleans(),
    st.lists(st.integers(0, 6), min_size=0, max_size=6).map(tuple),
)
def test_next_after_matches_linear_scan(
    oids: set[Oid], start: Oid, include: bool, end: Oid
) -> None:
    t = tree_of(*oids)
    expected = next(
        (
            o
            for o in sorted(oids)
            if (o >= start if include else o > start) and (not end or o < end)
        ),
        None,
    )
    found = t.next_after(start, include, end)
    assert (found[0] if found else None) == expected


def test_100k_shuffled_oids_build_and_walk_in_order() -> None:
    """A domain-table-sized tree (how fast it builds and walks: `./run bench micro`)."""
    rnd = random.Random(1)
    items = []
    for row in range(10_000):
        index = (12, *(rnd.randrange(97, 123) for _ in range(12)))
        for col in range(1, 11):
            items.append(((*BASE, 2, 1, col, *index), Value(SnmpType.COUNTER64, row)))
    rnd.shuffle(items)
    tree = OidTree(items, [(*BASE, 2, 1, c) for c in range(1, 11)])
    assert len(tree) == 100_000
    walked = []
    found = tree.next_after(BASE)
    while found is not None:
        walked.append(found)
        found = tree.next_after(found[0])
    assert walked == sorted(items)
