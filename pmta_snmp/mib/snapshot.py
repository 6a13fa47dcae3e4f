"""Immutable, sorted OID tree: the snapshot every SNMP front end answers from.

Built once per poll (off the request path), then only read: lookups and
successor searches are binary searches over a sorted tuple of OIDs, so a
request never walks or rebuilds the tree. Knows nothing about PowerMTA.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from itertools import pairwise
from operator import itemgetter
from typing import Final

__all__ = [
    "MAX_OCTET_STRING_LEN",
    "MAX_OID_LEN",
    "Oid",
    "OidTree",
    "OidTreeError",
    "SnmpType",
    "Value",
    "check_oid",
    "check_value",
]

Oid = tuple[int, ...]
"""An OBJECT IDENTIFIER as a tuple of sub-ids; tuple order is SNMP's lexicographic order."""

MAX_OID_LEN: Final = 128
MAX_OCTET_STRING_LEN: Final = 65535
_U32: Final = "I" if array("I").itemsize == 4 else "L"


class SnmpType(IntEnum):
    """SNMP value types, numbered as in AgentX varbinds (RFC 2741 §5.4)."""

    INTEGER = 2
    OCTET_STRING = 4
    NULL = 5
    OBJECT_IDENTIFIER = 6
    IP_ADDRESS = 64
    COUNTER32 = 65
    GAUGE32 = 66
    TIME_TICKS = 67
    OPAQUE = 68
    COUNTER64 = 70
    NO_SUCH_OBJECT = 128
    NO_SUCH_INSTANCE = 129
    END_OF_MIB_VIEW = 130


@dataclass(frozen=True, slots=True)
class Value:
    """A typed SNMP value; `value` is int, bytes, an Oid or None depending on `type`."""

    type: SnmpType
    value: int | bytes | Oid | None = None


class OidTreeError(ValueError):
    """Invalid input when building an OidTree (bad OID, bad value, duplicate)."""


def check_oid(oid: object, what: str = "OID") -> Oid:
    """Return `oid` if it is a valid, non-empty OID tuple, else raise OidTreeError."""
    if type(oid) is not tuple or not oid:
        raise OidTreeError(f"{what} must be a non-empty tuple of ints: {oid!r}")
    if len(oid) > MAX_OID_LEN:
        raise OidTreeError(f"{what} has {len(oid)} sub-ids (max {MAX_OID_LEN})")
    try:
        array(_U32, oid)  # C-speed check: every sub-id an int in 0..2^32-1
    except (TypeError, OverflowError):
        raise OidTreeError(f"{what} sub-ids must be ints in 0..2^32-1: {oid!r}") from None
    return oid


_INT_RANGES: Final[dict[SnmpType, tuple[int, int]]] = {
    SnmpType.INTEGER: (-(2**31), 2**31 - 1),
    SnmpType.COUNTER32: (0, 2**32 - 1),
    SnmpType.GAUGE32: (0, 2**32 - 1),
    SnmpType.TIME_TICKS: (0, 2**32 - 1),
    SnmpType.COUNTER64: (0, 2**64 - 1),
}
_NO_VALUE_TYPES: Final = frozenset(
    {SnmpType.NULL, SnmpType.NO_SUCH_OBJECT, SnmpType.NO_SUCH_INSTANCE, SnmpType.END_OF_MIB_VIEW}
)


def check_value(value: Value) -> None:
    """Raise OidTreeError unless `value.value` fits `value.type` (range, length, shape)."""
    t = value.type
    v = value.value
    bounds = _INT_RANGES.get(t)
    if bounds is not None:
        if not isinstance(v, int) or isinstance(v, bool) or not bounds[0] <= v <= bounds[1]:
            raise OidTreeError(f"{t.name} value out of range {bounds}: {v!r}")
    elif t is SnmpType.OCTET_STRING or t is SnmpType.OPAQUE:
        if type(v) is not bytes or len(v) > MAX_OCTET_STRING_LEN:
            raise OidTreeError(f"{t.name} needs bytes of at most {MAX_OCTET_STRING_LEN}: {v!r}")
    elif t is SnmpType.IP_ADDRESS:
        if type(v) is not bytes or len(v) != 4:
            raise OidTreeError(f"IP_ADDRESS needs 4 bytes: {v!r}")
    elif t is SnmpType.OBJECT_IDENTIFIER:
        if v != ():
            check_oid(v, "OBJECT_IDENTIFIER value")
    elif t in _NO_VALUE_TYPES:
        if v is not None:
            raise OidTreeError(f"{t.name} carries no value: {v!r}")
    else:  # pragma: no cover - SnmpType is closed
        raise OidTreeError(f"unknown type {t!r}")


_DATA_TYPES: Final = frozenset(SnmpType) - {
    SnmpType.NO_SUCH_OBJECT,
    SnmpType.NO_SUCH_INSTANCE,
    SnmpType.END_OF_MIB_VIEW,
}


class OidTree:
    """Sorted, immutable mapping OID → Value with O(log n) get and successor search.

    `objects` lists the OIDs of the MIB objects served (a scalar's OID without
    its `.0`, a column's OID without the index); it lets Get tell
    noSuchObject (unknown object) from noSuchInstance (known object, no such row).
    Object prefixes must not be nested inside one another.
    """

    __slots__ = ("_objects", "_oids", "_values")

    def __init__(
        self,
        items: Iterable[tuple[Oid, Value]] = (),
        objects: Iterable[Oid] = (),
        *,
        validate: bool = True,
    ) -> None:
        pairs = sorted(items, key=itemgetter(0))
        oids = tuple(p[0] for p in pairs)
        values = tuple(p[1] for p in pairs)
        if validate:
            for oid, value in pairs:
                check_oid(oid)
                if type(value) is not Value or value.type not in _DATA_TYPES:
                    raise OidTreeError(f"{oid}: not a data Value: {value!r}")
                check_value(value)
        for prev, cur in pairwise(oids):
            if prev == cur:
                raise OidTreeError(f"duplicate OID {cur}")
        objs = tuple(sorted(set(objects)))
        for obj in objs:
            check_oid(obj, "object OID")
        for prev, cur in pairwise(objs):
            if cur[: len(prev)] == prev:
                raise OidTreeError(f"object {cur} is nested inside object {prev}")
        self._oids: tuple[Oid, ...] = oids
        self._values: tuple[Value, ...] = values
        self._objects: tuple[Oid, ...] = objs

    def __len__(self) -> int:
        return len(self._oids)

    def __iter__(self) -> Iterator[tuple[Oid, Value]]:
        return zip(self._oids, self._values, strict=True)

    def __contains__(self, oid: object) -> bool:
        return isinstance(oid, tuple) and self.get(oid) is not None

    def __repr__(self) -> str:
        return f"OidTree({len(self._oids)} OIDs, {len(self._objects)} objects)"

    @property
    def oids(self) -> tuple[Oid, ...]:
        """All OIDs in ascending order."""
        return self._oids

    @property
    def objects(self) -> tuple[Oid, ...]:
        """The object prefixes given at construction, sorted."""
        return self._objects

    def get(self, oid: Oid) -> Value | None:
        """The value at exactly `oid`, or None."""
        oids = self._oids
        i = bisect_left(oids, oid)
        if i < len(oids) and oids[i] == oid:
            return self._values[i]
        return None

    def next_after(
        self, oid: Oid, include: bool = False, end: Oid | None = None
    ) -> tuple[Oid, Value] | None:
        """First entry > `oid` (≥ when `include`) and < `end` (exclusive; None or () = no bound)."""
        oids = self._oids
        i = bisect_left(oids, oid) if include else bisect_right(oids, oid)
        if i >= len(oids):
            return None
        found = oids[i]
        if end and found >= end:
            return None
        return found, self._values[i]

    def has_object(self, oid: Oid) -> bool:
        """True when `oid` is one of the known objects or an instance under one."""
        objs = self._objects
        i = bisect_right(objs, oid) - 1
        if i < 0:
            return False
        obj = objs[i]
        return oid[: len(obj)] == obj
