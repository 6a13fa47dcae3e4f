"""Immutable, sorted OID tree: the snapshot every SNMP front end answers from.

Built once per poll (off the request path), then only read: lookups and
successor searches are binary searches over a sorted tuple of OIDs, so a
request never walks or rebuilds the tree. Knows nothing about PowerMTA.
"""

from __future__ import annotations

import mmap
import struct
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from itertools import accumulate, pairwise
from operator import itemgetter
from typing import Final

__all__ = [
    "MAX_OCTET_STRING_LEN",
    "MAX_OID_LEN",
    "LiveTree",
    "LiveValue",
    "Oid",
    "OidTree",
    "OidTreeError",
    "SnmpType",
    "Value",
    "check_oid",
    "check_value",
    "encode_value",
    "oid_key",
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

    Storage is packed into one buffer (see `to_bytes`) instead of a Python object per OID:
    every OID is kept as its sub-ids in 4-byte big-endian form, so comparing two keys as
    bytes is comparing the OIDs in SNMP order, and every value as its RFC 2741 §5.4 data
    encoding in network byte order. That makes a tree of 100k+ values a few megabytes, lets
    another process build it and hand it over as one block of bytes (`from_buffer`, which
    copies nothing: `mmap` works), and lets the AgentX path copy encoded values verbatim
    (`raw`). Lookups bisect a list of every `_FENCE`-th key in C, then the block in Python.
    """

    __slots__ = ("_buf", "_data", "_doff", "_fences", "_hint", "_keys", "_koff", "_n",
                 "_objects", "_types")

    def __init__(
        self,
        items: Iterable[tuple[Oid, Value]] = (),
        objects: Iterable[Oid] = (),
        *,
        validate: bool = True,
    ) -> None:
        pairs = sorted(items, key=itemgetter(0))
        if validate:
            for oid, value in pairs:
                check_oid(oid)
                if type(value) is not Value or value.type not in _DATA_TYPES:
                    raise OidTreeError(f"{oid}: not a data Value: {value!r}")
                check_value(value)
        for prev, cur in pairwise(pairs):
            if prev[0] == cur[0]:
                raise OidTreeError(f"duplicate OID {cur[0]}")
        objs = tuple(sorted(set(objects)))
        for obj in objs:
            check_oid(obj, "object OID")
        for prev_obj, cur_obj in pairwise(objs):
            if cur_obj[: len(prev_obj)] == prev_obj:
                raise OidTreeError(f"object {cur_obj} is nested inside object {prev_obj}")
        self._load(_pack(pairs, objs))

    @classmethod
    def from_sorted(cls, items: Iterable[tuple[Oid, Value]], objects: Iterable[Oid] = ()
                    ) -> OidTree:
        """A tree from items already in strictly ascending OID order (checked), consumed one
        at a time: a generator's values never exist all at once. Values are not validated."""
        tree = cls.__new__(cls)
        objs = tuple(sorted(set(objects)))
        for obj in objs:
            check_oid(obj, "object OID")
        tree._load(_pack(items, objs))
        return tree

    @classmethod
    def from_buffer(cls, buf: bytes | mmap.mmap) -> OidTree:
        """A tree over a buffer written by `to_bytes` (kept, not copied; an mmap works).

        Raises OidTreeError when the buffer is not a packed tree of this version.
        """
        tree = cls.__new__(cls)
        tree._load(buf)
        return tree

    def to_bytes(self) -> bytes:
        """The packed form: header, offsets, types, keys, values, object prefixes."""
        return bytes(self._buf[:])

    def _load(self, buf: bytes | mmap.mmap) -> None:
        if len(buf) < _HEADER.size:
            raise OidTreeError("packed tree: buffer too short")
        (magic, version, n, nobj, types_at, keys_at, data_at, objs_at, fences_at,
         end) = _HEADER.unpack_from(buf, 0)
        if magic != _MAGIC or version != _VERSION:
            raise OidTreeError("packed tree: not a packed OID tree of this version")
        offsets_end = _HEADER.size + 8 * (n + 1)
        if not (offsets_end <= types_at <= keys_at <= data_at <= objs_at <= fences_at <= end
                == len(buf)):
            raise OidTreeError("packed tree: inconsistent section offsets")
        view = memoryview(buf)
        self._buf: bytes | mmap.mmap = buf
        self._n: int = n
        self._koff = view[_HEADER.size:_HEADER.size + 4 * (n + 1)].cast(_U32)
        self._doff = view[_HEADER.size + 4 * (n + 1):offsets_end].cast(_U32)
        self._types = bytes(view[types_at:types_at + n])
        self._keys = buf
        self._data = buf
        objs: list[Oid] = []
        pos = objs_at
        for _ in range(nobj):
            (length,) = struct.unpack_from(">I", buf, pos)
            objs.append(struct.unpack_from(f">{length}I", buf, pos + 4))
            pos += 4 + 4 * length
        self._objects = tuple(objs)
        # The fence keys have a section of their own: reading them touches a few pages, not
        # one page per fence all over the keys (page faults made a handover take 15 ms).
        nf = (n + _FENCE - 1) // _FENCE
        foff = view[fences_at:fences_at + 4 * (nf + 1)].cast(_U32)
        base = fences_at + 4 * (nf + 1)
        self._fences = [buf[base + foff[j]:base + foff[j + 1]] for j in range(nf)]
        self._hint = 0

    # -- sizes and iteration -----------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[tuple[Oid, Value]]:
        for i in range(self._n):
            yield self.item(i)

    def __contains__(self, oid: object) -> bool:
        return isinstance(oid, tuple) and self.get(oid) is not None

    def __repr__(self) -> str:
        return f"OidTree({self._n} OIDs, {len(self._objects)} objects, {len(self._buf)} bytes)"

    @property
    def nbytes(self) -> int:
        """Size of the packed buffer."""
        return len(self._buf)

    @property
    def oids(self) -> tuple[Oid, ...]:
        """All OIDs in ascending order (decoded on every call: for tests and tools)."""
        return tuple(self.oid(i) for i in range(self._n))

    @property
    def objects(self) -> tuple[Oid, ...]:
        """The object prefixes given at construction, sorted."""
        return self._objects

    # -- by index ------------------------------------------------------------------------------

    def key(self, i: int) -> bytes:
        """The OID at index `i` as 4-byte big-endian sub-ids."""
        koff = self._koff
        return self._keys[koff[i]:koff[i + 1]]

    def oid(self, i: int) -> Oid:
        """The OID at index `i`."""
        koff = self._koff
        a = koff[i]
        return _unpack_subids(self._keys, a, (koff[i + 1] - a) >> 2)

    def value(self, i: int) -> Value:
        """The value at index `i`."""
        doff = self._doff
        return _decode_value(self._types[i], self._data[doff[i]:doff[i + 1]])

    def item(self, i: int) -> tuple[Oid, Value]:
        """(OID, Value) at index `i`."""
        return self.oid(i), self.value(i)

    def raw(self, i: int) -> tuple[int, bytes, bytes]:
        """(type, key, data) at index `i`: the key as in `key`, the value's data encoding."""
        doff = self._doff
        return self._types[i], self.key(i), self._data[doff[i]:doff[i + 1]]

    # -- searches ------------------------------------------------------------------------------

    def _block(self, key: bytes) -> tuple[int, int]:
        j = bisect_right(self._fences, key)
        if j == 0:
            return 0, 0
        return (j - 1) * _FENCE, min(j * _FENCE, self._n)

    def lower_bound(self, key: bytes) -> int:
        """Index of the first key >= `key` (len(self) when none)."""
        lo, hi = self._block(key)
        k = self.key
        while lo < hi:
            mid = (lo + hi) >> 1
            if k(mid) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def upper_bound(self, key: bytes) -> int:
        """Index of the first key > `key` (len(self) when none)."""
        h = self._hint
        if h < self._n and self.key(h) == key:  # a walk asks for the successor of the last
            return h + 1
        lo, hi = self._block(key)
        k = self.key
        while lo < hi:
            mid = (lo + hi) >> 1
            if key < k(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def index(self, oid: Oid) -> int | None:
        """Index of exactly `oid`, or None."""
        return self.index_of_key(oid_key(oid))

    def index_of_key(self, key: bytes) -> int | None:
        """Index of exactly the OID whose key (see `oid_key`) is `key`, or None."""
        i = self.lower_bound(key)
        if i < self._n and self.key(i) == key:
            return i
        return None

    def next_index(self, oid: Oid, include: bool = False, end: Oid | None = None) -> int | None:
        """Index of the first entry > `oid` (≥ with `include`) and < `end`, or None."""
        return self.next_index_of_key(oid_key(oid), include, oid_key(end) if end else None)

    def next_index_of_key(
        self, key: bytes, include: bool = False, end: bytes | None = None
    ) -> int | None:
        """`next_index` with the OIDs given as keys (`end` None or empty: no bound)."""
        i = self.lower_bound(key) if include else self.upper_bound(key)
        if i >= self._n:
            return None
        if end and self.key(i) >= end:
            return None
        self._hint = i
        return i

    def get(self, oid: Oid) -> Value | None:
        """The value at exactly `oid`, or None."""
        i = self.index(oid)
        return None if i is None else self.value(i)

    def next_after(
        self, oid: Oid, include: bool = False, end: Oid | None = None
    ) -> tuple[Oid, Value] | None:
        """First entry > `oid` (≥ when `include`) and < `end` (exclusive; None or () = no bound)."""
        i = self.next_index(oid, include, end)
        return None if i is None else self.item(i)

    def has_object(self, oid: Oid) -> bool:
        """True when `oid` is one of the known objects or an instance under one."""
        objs = self._objects
        i = bisect_right(objs, oid) - 1
        if i < 0:
            return False
        obj = objs[i]
        return oid[: len(obj)] == obj


LiveValue = Callable[[], "Value | None"]
"""Computes a value when it is read; None means the value stored in the tree."""


class LiveTree(OidTree):
    """An OidTree whose values at a few OIDs are computed each time they are read.

    For values that must be true when a manager asks, not when the tree was built (the age of
    the data). It shares the packed buffer of `base` (nothing is copied) and answers every
    lookup like it; only `value`, `item` and `raw` at the live indices call their function.
    The OIDs never change, only those values. `to_bytes` gives the base tree's stored values.
    A front end that caches work per tree caches it per `base` and reads `live_indices`
    through `raw` or `value` on each request.
    """

    __slots__ = ("_live", "base")

    _live: dict[int, LiveValue]
    base: OidTree

    @classmethod
    def over(cls, base: OidTree, values: Mapping[Oid, LiveValue]) -> LiveTree:
        """`base` with the values at `values`' OIDs computed when read (OIDs that `base` does
        not hold are left out: a live value never adds an instance)."""
        if isinstance(base, LiveTree):
            base = base.base
        tree = cls.__new__(cls)
        for name in OidTree.__slots__:
            setattr(tree, name, getattr(base, name))
        tree._hint = 0
        tree.base = base
        live: dict[int, LiveValue] = {}
        for oid, get in values.items():
            i = base.index(oid)
            if i is not None:
                live[i] = get
        tree._live = live
        return tree

    @property
    def live_indices(self) -> frozenset[int]:
        """Indices whose value is computed when read."""
        return frozenset(self._live)

    def value(self, i: int) -> Value:
        """The value at index `i`, computed now where it is live."""
        get = self._live.get(i)
        if get is not None:
            value = get()
            if value is not None:
                return value
        return OidTree.value(self, i)

    def raw(self, i: int) -> tuple[int, bytes, bytes]:
        """(type, key, data) at index `i`, computed now where it is live."""
        get = self._live.get(i)
        if get is not None:
            value = get()
            if value is not None:
                return value.type, self.key(i), encode_value(value)
        doff = self._doff  # OidTree.raw inlined: this is every AgentX answer's path
        return self._types[i], self.key(i), self._data[doff[i]:doff[i + 1]]


# -- the packed form ---------------------------------------------------------------------------
#
# header  magic "PMTX", version, n, object count, then the byte offsets of the sections
#         (types, keys, values, objects, fences, end), all u32 in native order (the buffer
#         never leaves the machine that wrote it)
# offsets n+1 key offsets, then n+1 value offsets (u32, absolute)
# types   n bytes: SnmpType of each value
# keys    the OIDs as big-endian u32 sub-ids, concatenated
# values  RFC 2741 §5.4 data encodings in network byte order, concatenated
# objects per object prefix: its length then its sub-ids (big-endian u32)
# fences  every _FENCE-th key again, together: their offsets (u32, relative), then the keys

_MAGIC: Final = b"PMTX"
_VERSION: Final = 2
_HEADER: Final = struct.Struct("=4s9I")
_FENCE: Final = 32
_KEY_STRUCTS: dict[int, struct.Struct] = {}


def _key_struct(n: int) -> struct.Struct:
    s = _KEY_STRUCTS.get(n)
    if s is None:
        s = _KEY_STRUCTS[n] = struct.Struct(f">{n}I")
    return s


def oid_key(oid: Oid) -> bytes:
    """`oid` as 4-byte big-endian sub-ids: bytes order of keys is SNMP order of OIDs."""
    try:
        return _key_struct(len(oid)).pack(*oid)
    except struct.error:
        raise OidTreeError(f"sub-ids must be ints in 0..2^32-1: {oid!r}") from None


def _unpack_subids(buf: bytes | mmap.mmap, pos: int, n: int) -> Oid:
    return _key_struct(n).unpack_from(buf, pos)


_U32_BE: Final = struct.Struct(">I")
_I32_BE: Final = struct.Struct(">i")
_U64_BE: Final = struct.Struct(">Q")
_ENCODE_INT: Final = {
    SnmpType.INTEGER: _I32_BE.pack,
    SnmpType.COUNTER32: _U32_BE.pack,
    SnmpType.GAUGE32: _U32_BE.pack,
    SnmpType.TIME_TICKS: _U32_BE.pack,
    SnmpType.COUNTER64: _U64_BE.pack,
}
_OCTETS: Final = frozenset({SnmpType.OCTET_STRING, SnmpType.OPAQUE, SnmpType.IP_ADDRESS})


def encode_value(value: Value) -> bytes:
    """The value's RFC 2741 §5.4 data encoding in network byte order, as an AgentX encoder
    writes it (OID values in the 1.3.6.1.x prefix form whenever allowed)."""
    t = value.type
    v = value.value
    pack = _ENCODE_INT.get(t)
    if pack is not None:
        return pack(v)
    if t in _OCTETS:
        assert isinstance(v, bytes)
        return _U32_BE.pack(len(v)) + v + b"\0" * (-len(v) % 4)
    if t is SnmpType.OBJECT_IDENTIFIER:
        assert isinstance(v, tuple)
        if len(v) >= 5 and v[:4] == (1, 3, 6, 1) and 0 < v[4] < 256:  # RFC 2741 prefix form
            return bytes((len(v) - 5, v[4], 0, 0)) + oid_key(v[5:])
        return bytes((len(v), 0, 0, 0)) + oid_key(v)
    return b""


_TYPE_OF: Final[list[SnmpType | None]] = [None] * 256
for _t in SnmpType:
    _TYPE_OF[_t] = _t
_EMPTY_VALUES: Final = {t: Value(t) for t in SnmpType if t in _NO_VALUE_TYPES}


def _decode_value(code: int, data: bytes) -> Value:
    t = _TYPE_OF[code]
    if t is None:
        raise OidTreeError(f"packed tree: unknown type {code}")
    if t is SnmpType.INTEGER:
        return Value(t, int.from_bytes(data, "big", signed=True))
    if t in _INT_RANGES:
        return Value(t, int.from_bytes(data, "big"))
    if t in _OCTETS:
        return Value(t, data[4:4 + int.from_bytes(data[:4], "big")])
    if t is SnmpType.OBJECT_IDENTIFIER:
        subids = _key_struct(data[0]).unpack_from(data, 4)
        return Value(t, (1, 3, 6, 1, data[1], *subids) if data[1] else subids)
    return _EMPTY_VALUES[t]


def _pack(items: Iterable[tuple[Oid, Value]], objects: tuple[Oid, ...]) -> bytes:
    """The packed form of `items`, which must be in strictly ascending OID order.

    Streams: keys and values go straight into growing buffers, so packing a million values
    holds the packed bytes (about 150 bytes a value) rather than a Python object per value.
    """
    keys = bytearray()
    data = bytearray()
    types = bytearray()
    koff = array(_U32, [0])
    doff = array(_U32, [0])
    prev = b""
    for oid, value in items:
        key = oid_key(oid)
        if key <= prev:
            raise OidTreeError(f"OIDs not in ascending order (or duplicate) at {oid}")
        prev = key
        keys += key
        koff.append(len(keys))
        data += encode_value(value)
        doff.append(len(data))
        types.append(value.type)
    n = len(types)
    objs = b"".join([_U32_BE.pack(len(o)) + oid_key(o) for o in objects])
    fence_keys = [bytes(keys[koff[i]:koff[i + 1]]) for i in range(0, n, _FENCE)]
    foff = array(_U32, accumulate(map(len, fence_keys), initial=0))
    fences = foff.tobytes() + b"".join(fence_keys)
    offsets_at = _HEADER.size
    types_at = offsets_at + 8 * (n + 1)
    keys_at = types_at + n + (-n % 4)
    data_at = keys_at + len(keys)
    objs_at = data_at + len(data)
    fences_at = objs_at + len(objs) + (-len(objs) % 4)
    end = fences_at + len(fences)
    if end > 0xFFFFFFFF:
        raise OidTreeError("packed tree larger than 4 GiB")
    header = _HEADER.pack(_MAGIC, _VERSION, n, len(objects), types_at, keys_at, data_at,
                          objs_at, fences_at, end)
    koff = array(_U32, map(keys_at.__add__, koff))
    doff = array(_U32, map(data_at.__add__, doff))
    return b"".join((header, koff, doff, types, b"\0" * (-n % 4), keys, data, objs,
                     b"\0" * (-len(objs) % 4), fences))
