"""The BER of SNMP messages (X.690 definite lengths, RFC 3416 PDUs): just what an agent needs.

Pure bytes in, bytes out. OIDs travel as `OidTree` keys (4-byte big-endian sub-ids, see
`pmta_snmp.mib.snapshot.oid_key`) and values as their RFC 2741 §5.4 data encoding, which is
how the packed tree stores them: a varbind goes from the tree to the wire without a Python
object per OID or value. The SNMP value tags are the AgentX type numbers (Counter32 is 0x41 in
both), so a type needs no mapping. Knows nothing of pysnmp.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "BerError",
    "Tag",
    "Tlv",
    "encode_integer",
    "encode_length",
    "encode_tlv",
    "encode_varbind",
    "key_of_oid",
    "oid_of_key",
    "read_integer",
    "read_tlv",
]


class BerError(ValueError):
    """Input that is not the BER this module reads (malformed, indefinite length, too long)."""


class Tag:
    """The tags an SNMP agent reads and writes."""

    INTEGER: Final = 0x02
    OCTET_STRING: Final = 0x04
    NULL: Final = 0x05
    OBJECT_IDENTIFIER: Final = 0x06
    SEQUENCE: Final = 0x30
    COUNTER64: Final = 0x46
    NO_SUCH_OBJECT: Final = 0x80
    NO_SUCH_INSTANCE: Final = 0x81
    END_OF_MIB_VIEW: Final = 0x82
    GET: Final = 0xA0
    GET_NEXT: Final = 0xA1
    RESPONSE: Final = 0xA2
    SET: Final = 0xA3
    GET_BULK: Final = 0xA5


Tlv = tuple[int, int, int]
"""(tag, start of the content, end of the content) inside a buffer."""

_RESERVED_LENGTH: Final = 0x7F  # X.690 §8.1.3.5 c): 0xFF never starts a length


def encode_length(n: int) -> bytes:
    """The definite length octets of `n` (short form below 128)."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return bytes((0x81, n))
    if n < 0x10000:
        return bytes((0x82, n >> 8, n & 0xFF))
    return bytes((0x83, n >> 16, (n >> 8) & 0xFF, n & 0xFF))


def encode_tlv(tag: int, content: bytes) -> bytes:
    """Tag, length and content."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    return bytes((tag,)) + encode_length(n) + content


def encode_integer(n: int) -> bytes:
    """An INTEGER TLV, minimal two's complement."""
    size = ((n if n >= 0 else ~n).bit_length() >> 3) + 1
    return bytes((Tag.INTEGER, size)) + n.to_bytes(size, "big", signed=True)


def read_tlv(buf: bytes, pos: int, end: int) -> Tlv:
    """The TLV at `pos` (single-octet tags only, as SNMP uses); it must end by `end`.

    Long-form lengths may use more octets than needed (leading zeros), which RFC 3417 §8
    allows senders; only the indefinite form is refused."""
    if pos + 2 > end:
        raise BerError("truncated")
    tag = buf[pos]
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        count = n & 0x7F
        if count in (0, _RESERVED_LENGTH):
            raise BerError("indefinite or reserved length form")
        if pos + count > end:
            raise BerError("truncated length")
        n = int.from_bytes(buf[pos:pos + count], "big")
        pos += count
    stop = pos + n
    if stop > end:
        raise BerError("content runs past its container")
    return tag, pos, stop


def read_integer(buf: bytes, tlv: Tlv, max_octets: int = 4) -> int:
    """The value of an INTEGER TLV of at most `max_octets` content octets."""
    tag, start, stop = tlv
    if tag != Tag.INTEGER or not 0 < stop - start <= max_octets:
        raise BerError("not an INTEGER of the expected size")
    return int.from_bytes(buf[start:stop], "big", signed=True)


# --- OBJECT IDENTIFIER <-> tree key ------------------------------------------------------------

_SUBIDS: dict[int, struct.Struct] = {}
_HIGH_BITS: Final = bytes(0x80 if b & 0x80 else 0 for b in range(256))
# Sub-ids below 128 are one octet each, on the wire and as the last octet of a key's group.
_SMALL_MASKS: dict[int, int] = {}
_KEY_HEAD: Final = 32  # 8 sub-ids: 1.3.6.1.4.1.<enterprise>.<n>, where the long ones are
_CACHE_MAX: Final = 4096
_head_to_ber: dict[bytes, bytes] = {}
_ber_to_head: dict[bytes, bytes] = {}


def _subids(n: int) -> struct.Struct:
    s = _SUBIDS.get(n)
    if s is None:
        s = _SUBIDS[n] = struct.Struct(f">{n}I")
    return s


def _small_mask(nbytes: int) -> int:
    mask = _SMALL_MASKS.get(nbytes)
    if mask is None:
        mask = _SMALL_MASKS[nbytes] = int.from_bytes(b"\xff\xff\xff\x80" * (nbytes >> 2), "big")
    return mask


def _base128(subids: tuple[int, ...] | list[int]) -> bytes:
    out = bytearray()
    for subid in subids:
        if subid < 0x80:
            out.append(subid)
            continue
        groups = [subid & 0x7F]
        rest = subid >> 7
        while rest:
            groups.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out += bytes(reversed(groups))
    return bytes(out)


def _encode_head(head: bytes) -> bytes:
    subids = _subids(len(head) >> 2).unpack(head)
    if len(subids) < 2:  # a lone arc: X.690 needs two; encode as X.0 (never served)
        subids = (*subids, 0)
    first, second = subids[0], subids[1]
    if first > 2 or (first < 2 and second > 39):
        raise BerError("OID out of X.690 range")
    return _base128([first * 40 + second, *subids[2:]])


def oid_of_key(key: bytes) -> bytes:
    """The BER content octets of the OID whose tree key is `key` (non-empty).

    The first eight sub-ids (the enterprise prefix, where the multi-octet sub-ids are) are
    encoded once and remembered; the rest is copied octet by octet when every sub-id is
    below 128, as table indices of names usually are."""
    head = key[:_KEY_HEAD]
    enc = _head_to_ber.get(head)
    if enc is None:
        enc = _encode_head(head)
        if len(_head_to_ber) >= _CACHE_MAX:
            _head_to_ber.clear()
        _head_to_ber[head] = enc
    tail = key[_KEY_HEAD:]
    if not tail:
        return enc
    if not int.from_bytes(tail, "big") & _small_mask(len(tail)):
        return enc + tail[3::4]
    return enc + _base128(_subids(len(tail) >> 2).unpack(tail))


def _decode_head(content: bytes) -> bytes:
    subids: list[int] = []
    value = 0
    for b in content:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            subids.append(value)
            value = 0
        elif value == 0:  # a leading 0x80 octet: not minimal, X.690 §8.19.2
            raise BerError("OID sub-identifier with a leading 0x80")
    first = subids[0]
    head = [first // 40, first % 40] if first < 80 else [2, first - 80]
    head += subids[1:]
    if any(s > 0xFFFFFFFF for s in head) or len(head) > 128:
        raise BerError("OID sub-identifier over 2^32-1, or over 128 of them")
    return _subids(len(head)).pack(*head)


def key_of_oid(content: bytes) -> bytes:
    """The tree key of the OID whose BER content octets are `content`; BerError if malformed
    (empty, unterminated, a sub-id over 2^32-1, over 128 sub-ids)."""
    if not content or content[-1] & 0x80:
        raise BerError("empty or unterminated OID")
    # Everything up to the last multi-octet sub-id is decoded once and remembered; after it,
    # every octet is a sub-id of its own.
    split = content.translate(_HIGH_BITS).rfind(0x80) + 2  # 1 when there is none
    head = content[:split]
    key = _ber_to_head.get(head)
    if key is None:
        key = _decode_head(head)
        if len(_ber_to_head) >= _CACHE_MAX:
            _ber_to_head.clear()
        _ber_to_head[head] = key
    tail = content[split:]
    if not tail:
        return key
    if len(key) + 4 * len(tail) > 4 * 128:
        raise BerError("OID of over 128 sub-identifiers")
    return key + _subids(len(tail)).pack(*tail)


# --- values --------------------------------------------------------------------------------

# AgentX type numbers (RFC 2741 §5.4) are the SNMP tags: Integer 2, OctetString 4, Null 5,
# OID 6, IpAddress 0x40, Counter32 0x41, Gauge32 0x42, TimeTicks 0x43, Opaque 0x44,
# Counter64 0x46, noSuchObject 0x80, noSuchInstance 0x81, endOfMibView 0x82.
_UNSIGNED: Final = frozenset({0x41, 0x42, 0x43, 0x46})
_OCTETS: Final = frozenset({0x04, 0x40, 0x44})
_ZERO_DOT_ZERO: Final = b"\x00"  # 0.0, the usual "no OID": an empty OID has no BER


def _value_content(code: int, data: bytes) -> bytes:
    if code in _UNSIGNED:
        digits = data.lstrip(b"\0")
        if not digits:
            return b"\0"
        return b"\0" + digits if digits[0] & 0x80 else digits
    if code in _OCTETS:
        return data[4:4 + int.from_bytes(data[:4], "big")]
    if code == Tag.INTEGER:
        if data[0] & 0x80:
            digits = data.lstrip(b"\xff")
            return digits if digits and digits[0] & 0x80 else b"\xff" + digits
        digits = data.lstrip(b"\0")
        if not digits:
            return b"\0"
        return b"\0" + digits if digits[0] & 0x80 else digits
    if code == Tag.OBJECT_IDENTIFIER:
        n, prefix = data[0], data[1]
        key = data[4:4 + 4 * n]
        if prefix:
            key = _subids(5).pack(1, 3, 6, 1, prefix) + key
        return oid_of_key(key) if key else _ZERO_DOT_ZERO
    return b""  # Null and the exceptions carry no content


def encode_varbind(code: int, key: bytes, data: bytes) -> bytes:
    """The VarBind TLV for the OID with tree key `key` and the value of AgentX type `code` with
    data encoding `data` (as `OidTree.raw` returns them)."""
    name = oid_of_key(key)
    value = _value_content(code, data)
    nn = len(name)
    nv = len(value)
    if nn < 0x80 and nv < 0x80:
        inner = bytes((Tag.OBJECT_IDENTIFIER, nn)) + name + bytes((code, nv)) + value
    else:
        inner = encode_tlv(Tag.OBJECT_IDENTIFIER, name) + encode_tlv(code, value)
    return encode_tlv(Tag.SEQUENCE, inner)
