"""Property-based fuzzing of the AgentX decoder: 100k+ inputs, only AgentXParseError escapes.

Plain `random` with fixed seeds (reproducible, fast): random bytes, random headers over random
payloads, and valid packets of every PDU type mutated by bit flips, byte overwrites,
truncation, insertion, deletion and length-field edits. Every decoded PDU must re-encode, and
`decode_packet` must never consume more than it was given or hand back bytes it did not get.
"""

from __future__ import annotations

import random
import struct
import time

import pytest

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
    TestSet,
    UndoSet,
    Unregister,
    VarBind,
    decode_packet,
)
from pmta_snmp.mib.snapshot import SnmpType, Value

OID = (1, 3, 6, 1, 4, 1, 32473, 1, 2, 3)
VARBINDS = (
    VarBind((*OID, 1), Value(SnmpType.INTEGER, -5)),
    VarBind((*OID, 2), Value(SnmpType.OCTET_STRING, b"hello world")),
    VarBind((*OID, 3), Value(SnmpType.COUNTER64, 2**64 - 1)),
    VarBind((*OID, 4), Value(SnmpType.IP_ADDRESS, b"\xc0\x00\x02\x01")),
    VarBind((*OID, 5), Value(SnmpType.OBJECT_IDENTIFIER, OID)),
    VarBind((*OID, 6), Value(SnmpType.NULL)),
    VarBind((*OID, 7), Value(SnmpType.TIME_TICKS, 12345)),
    VarBind((*OID, 8), Value(SnmpType.OPAQUE, b"\x01\x02\x03")),
    VarBind((*OID, 9), Value(SnmpType.NO_SUCH_INSTANCE)),
)


def seed_packets() -> list[bytes]:
    """One valid packet of every PDU type, in both byte orders, some with a context."""
    out: list[bytes] = []
    for big in (True, False):
        kw: dict[str, object] = {"session_id": 7, "transaction_id": 9, "packet_id": 11,
                                 "network_byte_order": big}
        ctx: dict[str, object] = {**kw, "context": b"ctx1"}
        pdus: list[Pdu] = [
            Open(5, OID, b"pmta-snmp subagent", **kw),  # type: ignore[arg-type]
            Close(CloseReason.SHUTDOWN, **kw),  # type: ignore[arg-type]
            Register(OID, 0, 127, **kw),  # type: ignore[arg-type]
            Register(OID, 0, 127, 10, 20, **ctx),  # type: ignore[arg-type]
            Unregister(OID, 127, **kw),  # type: ignore[arg-type]
            Get((SearchRange(OID), SearchRange((*OID, 1), (*OID, 9))), **ctx),  # type: ignore[arg-type]
            GetNext((SearchRange(OID, (*OID, 99), True),), **kw),  # type: ignore[arg-type]
            GetBulk(1, 10, (SearchRange(OID), SearchRange((*OID, 5))), **kw),  # type: ignore[arg-type]
            TestSet(VARBINDS[:3], **kw),  # type: ignore[arg-type]
            CommitSet(**kw),  # type: ignore[arg-type]
            UndoSet(**kw),  # type: ignore[arg-type]
            CleanupSet(**kw),  # type: ignore[arg-type]
            Notify(VARBINDS, **ctx),  # type: ignore[arg-type]
            Ping(**kw),  # type: ignore[arg-type]
            IndexAllocate(VARBINDS[:2], True, False, **kw),  # type: ignore[arg-type]
            IndexDeallocate(VARBINDS[:1], **kw),  # type: ignore[arg-type]
            AddAgentCaps(OID, b"caps", **kw),  # type: ignore[arg-type]
            RemoveAgentCaps(OID, **kw),  # type: ignore[arg-type]
            Response(100, ErrorCode.NO_ERROR, 0, VARBINDS, **kw),  # type: ignore[arg-type]
            Response(100, ErrorCode.PARSE_ERROR, 3, (), **kw),  # type: ignore[arg-type]
        ]
        out.extend(p.encode() for p in pdus)
    return out


SEEDS = seed_packets()


def mutate(rng: random.Random, packet: bytes) -> bytes:
    """One to four random mutations of a packet."""
    data = bytearray(packet)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        if op == 0 and data:  # flip a bit
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # overwrite a byte
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 2 and data:  # truncate
            del data[rng.randrange(len(data)) :]
        elif op == 3:  # insert random bytes
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.randbytes(rng.randint(1, 12))
        elif op == 4 and len(data) > 1:  # delete a span
            i = rng.randrange(len(data))
            del data[i : i + rng.randint(1, 8)]
        elif op == 5 and len(data) >= HEADER_LEN:  # rewrite payload_length
            big = bool(data[2] & 0x10)
            length = rng.choice(
                [0, 4, 8, len(data) - HEADER_LEN + 4, len(data) - HEADER_LEN - 4,
                 MAX_PAYLOAD_LEN, MAX_PAYLOAD_LEN + 4, 0xFFFFFFFC, rng.randrange(1 << 32)]
            )
            struct.pack_into(">I" if big else "<I", data, 16, max(0, length) & 0xFFFFFFFF)
        elif op == 6 and len(data) >= 3:  # flip the byte-order flag (the wrong byte order)
            data[2] ^= 0x10
        elif op == 7 and len(data) >= 2:  # any PDU type, including unknown ones
            data[1] = rng.choice([0, 19, 77, 255, rng.randrange(1, 19)])
        elif op == 8 and len(data) >= 3:  # random flags (context, instance, index bits)
            data[2] = rng.randrange(256)
    return bytes(data)


def random_header(rng: random.Random) -> bytes:
    """A plausible header (version 1, any type and flags) over a random payload."""
    big = rng.random() < 0.5
    payload = rng.randbytes(rng.choice([0, 4, 8, 12, 16, 24, 40, rng.randrange(0, 200, 4)]))
    length = len(payload) if rng.random() < 0.8 else rng.randrange(0, 400)
    flags = rng.randrange(256)
    flags = flags | 0x10 if big else flags & ~0x10  # the flag says the real byte order
    header = struct.pack(
        ">BBBxIIII" if big else "<BBBxIIII",
        1, rng.randrange(0, 21), flags,
        rng.randrange(1 << 32), rng.randrange(1 << 32), rng.randrange(1 << 32), length,
    )
    return header + payload


def check_one(data: bytes, stats: dict[str, int]) -> None:
    """decode_packet on `data`: only AgentXParseError; a decoded PDU re-encodes sanely."""
    try:
        pdu, rest = decode_packet(data)
    except AgentXParseError as exc:
        stats["parse_error"] += 1
        if exc.skip is not None:
            assert exc.header is not None
            assert HEADER_LEN <= exc.skip <= len(data)
        return
    if pdu is None:
        stats["incomplete"] += 1
        assert rest == data
        return
    stats["decoded"] += 1
    assert len(rest) < len(data)
    assert data.endswith(rest)
    try:
        again = pdu.encode()
    except AgentXEncodeError:  # e.g. a decoded value the encoder range-checks differently
        stats["reencode_refused"] += 1
        return
    consumed = len(data) - len(rest)
    assert len(again) == consumed, (pdu, data[:consumed].hex())
    pdu2, rest2 = decode_packet(again)
    assert pdu2 == pdu and rest2 == b""


TOTAL = 120_000


def test_decoder_survives_100k_random_and_mutated_inputs() -> None:
    rng = random.Random(20250114)  # fixed seed: a failure is reproducible
    stats = {"parse_error": 0, "incomplete": 0, "decoded": 0, "reencode_refused": 0}
    t0 = time.monotonic()
    n = 0
    # 1) pure random bytes of random length (mostly too short or bad version)
    for _ in range(20_000):
        check_one(rng.randbytes(rng.randrange(0, 64)), stats)
        n += 1
    # 2) valid headers over random payloads
    for _ in range(40_000):
        check_one(random_header(rng), stats)
        n += 1
    # 3) mutated valid packets of every PDU type
    while n < TOTAL:
        check_one(mutate(rng, rng.choice(SEEDS)), stats)
        n += 1
    elapsed = time.monotonic() - t0
    assert n >= 100_000
    # The corpus must exercise all outcomes, or it tests nothing.
    assert stats["parse_error"] > 10_000, stats
    assert stats["decoded"] > 5_000, stats
    assert stats["incomplete"] > 1_000, stats
    assert elapsed < 30, f"{n} inputs took {elapsed:.1f}s"
    print(f"fuzz: {n} inputs in {elapsed:.1f}s: {stats}")


@pytest.mark.parametrize("seed", range(3))
def test_stream_of_concatenated_packets_decodes_or_fails_cleanly(seed: int) -> None:
    """A stream of valid and mutated packets, fed in random chunks like data_received does."""
    rng = random.Random(seed)
    stream = b"".join(
        rng.choice(SEEDS) if rng.random() < 0.7 else mutate(rng, rng.choice(SEEDS))
        for _ in range(2_000)
    )
    buf = b""
    pos = 0
    decoded = errors = 0
    while pos < len(stream):
        step = rng.randint(1, 700)
        buf += stream[pos : pos + step]
        pos += step
        while buf:
            try:
                pdu, buf = decode_packet(buf)
            except AgentXParseError as exc:
                errors += 1
                if exc.header is not None and exc.skip is not None:
                    buf = buf[exc.skip :]
                    continue
                buf = b""  # the session drops the connection here; resume on fresh data
                break
            if pdu is None:
                break
            decoded += 1
        assert len(buf) <= HEADER_LEN + MAX_PAYLOAD_LEN  # never buffers beyond one packet
    assert decoded > 0 and errors > 0
