"""The long AgentX decoder fuzz run: only `AgentXParseError` may escape `decode_packet`.

    python -m bench.fuzz_agentx [--count N] [--seed S]      (default 1,000,000 inputs)
    python -m bench fuzz [--quick]                          (as a benchmark row; quick = 20k)

Plain `random` with a seed, so a failure is reproducible from the printed seed. Inputs, in
turn: random bytes, plausible headers over random payloads, valid PDUs of every type in both
byte orders (checked to decode to what was encoded), several valid PDUs split into random
chunks and fed through the same stream loop the session uses, and valid packets (random ones
and a fixed corpus of every PDU type) mutated: bit flips, byte overwrites, truncation, junk,
spans inserted or deleted, words inserted or removed with the length fixed, header fields
changed. Besides "no other exception", the contract of `decode_packet` is checked: an
incomplete packet gives (None, the same bytes); a decoded one leaves exactly the bytes after
it and re-encodes to a packet that decodes to the same PDU; a parse error's `skip` lies within
the input. Each failing input is printed in hex.

The generators and checks here are the only ones: tests/unit/test_agentx_codec.py (driven by
Hypothesis through `st.randoms()`) and tests/reliability/test_codec_fuzz.py import them.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.common import Report, Row, rate
from pmta_snmp.agentx.codec import (
    CONTEXT_PDU_TYPES,
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
from pmta_snmp.mib.snapshot import Oid, SnmpType, Value

NAME = "fuzz"
TITLE = "AgentX decoder fuzz (only AgentXParseError may escape decode_packet)"
DEFAULT_COUNT = 1_000_000
QUICK_COUNT = 20_000
BENCH_COUNT = DEFAULT_COUNT
DEFAULT_SEED = 2741
MAX_REPORTED = 10

U32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Valid PDUs
# ---------------------------------------------------------------------------------------------


class Gen:
    """Random valid AgentX values and PDUs (every one encodes).

    `rng` may be any `random.Random`, such as the one Hypothesis' `st.randoms()` draws.
    """

    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def u32(self) -> int:
        r = self.r.random()
        if r < 0.2:
            return self.r.choice((0, 1, 0x7FFFFFFF, 0x80000000, U32))
        return self.r.getrandbits(32 if r < 0.6 else 8)

    def oid(self, *, allow_empty: bool = True) -> Oid:
        r = self.r.random()
        if allow_empty and r < 0.1:
            return ()
        if r < 0.5:  # compressible: 1.3.6.1.x...
            tail = tuple(self.u32() for _ in range(self.r.randrange(0, 12)))
            return (1, 3, 6, 1, self.r.randrange(1, 256), *tail)
        if r < 0.6:  # the edges of compression: x = 0 or > 255, 1.3.6.1 itself or shorter
            tail = tuple(self.u32() for _ in range(self.r.randrange(0, 4)))
            oid = (1, 3, 6, 1, self.r.choice((0, 256, 300, U32)), *tail)
            return oid[: self.r.randrange(1, len(oid) + 1)]
        if r < 0.65:  # the longest allowed
            return tuple(self.r.getrandbits(32) for _ in range(128))
        n = self.r.randrange(1 if not allow_empty else 0, 20)
        return tuple(self.u32() for _ in range(n))

    def octets(self) -> bytes:
        n = self.r.choice((0, 1, 3, 4, 5, self.r.randrange(0, 64)))
        return self.r.randbytes(n)

    def value(self) -> Value:
        t = self.r.choice(list(SnmpType))
        if t is SnmpType.INTEGER:
            return Value(t, self.r.randrange(-(2**31), 2**31))
        if t in (SnmpType.COUNTER32, SnmpType.GAUGE32, SnmpType.TIME_TICKS):
            return Value(t, self.u32())
        if t is SnmpType.COUNTER64:
            return Value(t, self.r.getrandbits(64))
        if t in (SnmpType.OCTET_STRING, SnmpType.OPAQUE):
            return Value(t, self.octets())
        if t is SnmpType.IP_ADDRESS:
            return Value(t, self.r.randbytes(4))
        if t is SnmpType.OBJECT_IDENTIFIER:
            return Value(t, self.oid())
        return Value(t, None)

    def varbinds(self) -> tuple[VarBind, ...]:
        return tuple(
            VarBind(self.oid(allow_empty=False), self.value())
            for _ in range(self.r.choice((0, 1, 1, 2, 3, self.r.randrange(0, 12))))
        )

    def ranges(self) -> tuple[SearchRange, ...]:
        return tuple(
            SearchRange(self.oid(), self.oid(), self.r.random() < 0.5)
            for _ in range(self.r.choice((0, 1, 1, 2, self.r.randrange(0, 8))))
        )

    def pdu(self) -> Pdu:
        r = self.r
        kind = r.randrange(18)
        body: Pdu
        if kind == 0:
            body = Open(r.randrange(256), self.oid(), self.octets())
        elif kind == 1:
            body = Close(r.randrange(256))
        elif kind in (2, 3):
            range_subid = r.choice((0, 0, r.randrange(256)))
            upper = self.u32() if range_subid else None
            body = (
                Register(self.oid(), r.randrange(256), r.randrange(256), range_subid, upper,
                         r.random() < 0.3)
                if kind == 2
                else Unregister(self.oid(), r.randrange(256), range_subid, upper)
            )
        elif kind == 4:
            body = Get(self.ranges())
        elif kind == 5:
            body = GetNext(self.ranges())
        elif kind == 6:
            body = GetBulk(r.randrange(65536), r.randrange(65536), self.ranges())
        elif kind == 7:
            body = TestSet(self.varbinds())
        elif kind == 8:
            body = CommitSet()
        elif kind == 9:
            body = UndoSet()
        elif kind == 10:
            body = CleanupSet()
        elif kind == 11:
            body = Notify(self.varbinds())
        elif kind == 12:
            body = Ping()
        elif kind == 13:
            body = IndexAllocate(self.varbinds(), r.random() < 0.5, r.random() < 0.5)
        elif kind == 14:
            body = IndexDeallocate(self.varbinds(), r.random() < 0.5, r.random() < 0.5)
        elif kind == 15:
            body = AddAgentCaps(self.oid(), self.octets())
        elif kind == 16:
            body = RemoveAgentCaps(self.oid())
        else:
            body = Response(self.u32(), r.randrange(65536), r.randrange(65536), self.varbinds())
        context = self.octets() if body.TYPE in CONTEXT_PDU_TYPES and r.random() < 0.3 else None
        return dataclasses.replace(
            body,
            session_id=self.u32(),
            transaction_id=self.u32(),
            packet_id=self.u32(),
            network_byte_order=r.random() < 0.5,
            context=context,
        )


SEED_OID: Oid = (1, 3, 6, 1, 4, 1, 32473, 1, 2, 3)
SEED_VARBINDS = (
    VarBind((*SEED_OID, 1), Value(SnmpType.INTEGER, -5)),
    VarBind((*SEED_OID, 2), Value(SnmpType.OCTET_STRING, b"hello world")),
    VarBind((*SEED_OID, 3), Value(SnmpType.COUNTER64, 2**64 - 1)),
    VarBind((*SEED_OID, 4), Value(SnmpType.IP_ADDRESS, b"\xc0\x00\x02\x01")),
    VarBind((*SEED_OID, 5), Value(SnmpType.OBJECT_IDENTIFIER, SEED_OID)),
    VarBind((*SEED_OID, 6), Value(SnmpType.NULL)),
    VarBind((*SEED_OID, 7), Value(SnmpType.TIME_TICKS, 12345)),
    VarBind((*SEED_OID, 8), Value(SnmpType.OPAQUE, b"\x01\x02\x03")),
    VarBind((*SEED_OID, 9), Value(SnmpType.NO_SUCH_INSTANCE)),
)


def seed_packets() -> list[bytes]:
    """A fixed corpus to mutate: one valid packet of every PDU type (and a few variants), in
    both byte orders, some with a context."""
    oid, vbs = SEED_OID, SEED_VARBINDS
    bodies: list[tuple[Pdu, bool]] = [  # (PDU, with a context)
        (Open(5, oid, b"pmta-snmp subagent"), False),
        (Close(CloseReason.SHUTDOWN), False),
        (Register(oid, 0, 127), False),
        (Register(oid, 0, 127, 10, 20), True),
        (Unregister(oid, 127), False),
        (Get((SearchRange(oid), SearchRange((*oid, 1), (*oid, 9)))), True),
        (GetNext((SearchRange(oid, (*oid, 99), True),)), False),
        (GetBulk(1, 10, (SearchRange(oid), SearchRange((*oid, 5)))), False),
        (TestSet(vbs[:3]), False),
        (CommitSet(), False),
        (UndoSet(), False),
        (CleanupSet(), False),
        (Notify(vbs), True),
        (Ping(), False),
        (IndexAllocate(vbs[:2], True, False), False),
        (IndexDeallocate(vbs[:1]), False),
        (AddAgentCaps(oid, b"caps"), False),
        (RemoveAgentCaps(oid), False),
        (Response(100, ErrorCode.NO_ERROR, 0, vbs), False),
        (Response(100, ErrorCode.PARSE_ERROR, 3, ()), False),
    ]
    return [
        dataclasses.replace(
            body, session_id=7, transaction_id=9, packet_id=11, network_byte_order=big,
            context=b"ctx1" if with_context else None,
        ).encode()
        for big in (True, False)
        for body, with_context in bodies
    ]


# ---------------------------------------------------------------------------------------------
# Garbage, mutations and streams
# ---------------------------------------------------------------------------------------------


def random_bytes(rng: random.Random) -> bytes:
    """Random bytes of a random length: mostly too short or of a bad version."""
    return rng.randbytes(rng.choice((0, 1, 19, 20, 21, 24, rng.randrange(0, 64),
                                     rng.randrange(0, 256))))


def random_header(rng: random.Random) -> bytes:
    """A plausible header (version 1, any type, flags and ids) over a random payload.

    The length field mostly is the payload's; else small, huge or just over the limit. The
    byte-order flag mostly tells the truth.
    """
    big = rng.random() < 0.5
    payload = rng.randbytes(rng.choice((0, 4, 8, 12, 16, 24, 40, rng.randrange(0, 200, 4),
                                        rng.randrange(0, 64))))
    r = rng.random()
    if r < 0.75:
        length = len(payload)
    elif r < 0.9:
        length = rng.randrange(0, 400)
    else:
        length = rng.choice((MAX_PAYLOAD_LEN, MAX_PAYLOAD_LEN + 4, 0xFFFFFFFC, rng.getrandbits(32)))
    flags = rng.getrandbits(8)
    if rng.random() < 0.9:
        flags = flags | 0x10 if big else flags & ~0x10
    head = struct.pack(
        ">BBBxIIII" if big else "<BBBxIIII", 1, rng.randrange(0, 21), flags,
        rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(32), length,
    )
    return head + payload


def _fix_length(data: bytearray) -> None:
    big = bool(data[2] & 0x10)
    struct.pack_into(">I" if big else "<I", data, 16, len(data) - HEADER_LEN)


def mutate(rng: random.Random, packet: bytes) -> bytes:
    """One to four random mutations of a packet."""
    data = bytearray(packet)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 4))):
        op = rng.randrange(14)
        if op == 0 and data:  # flip a bit
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # overwrite a byte
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        elif op == 2:  # truncate
            del data[rng.randrange(len(data) + 1):]
        elif op == 3:  # junk after
            data += rng.randbytes(rng.randrange(1, 40))
        elif op == 4:  # insert random bytes anywhere
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.randbytes(rng.randint(1, 12))
        elif op == 5 and len(data) > 1:  # delete a span
            i = rng.randrange(len(data))
            del data[i:i + rng.randint(1, 8)]
        elif op in (6, 7) and len(data) > HEADER_LEN:  # a word in or out, the length fixed
            i = HEADER_LEN + 4 * rng.randrange((len(data) - HEADER_LEN) // 4 + 1)
            if op == 6:
                data[i:i] = rng.choice(
                    (b"\xff\xff\xff\xff", b"\0\0\0\0", b"\x80\0\0\0", rng.randbytes(4))
                )
            else:
                del data[i:i + 4]
            _fix_length(data)
        elif op == 8 and len(data) >= HEADER_LEN:  # rewrite payload_length
            length = rng.choice(
                (0, 4, 8, len(data) - HEADER_LEN + 4, len(data) - HEADER_LEN - 4,
                 MAX_PAYLOAD_LEN, MAX_PAYLOAD_LEN + 4, 0xFFFFFFFC, rng.getrandbits(32))
            )
            big = bool(data[2] & 0x10)
            struct.pack_into(">I" if big else "<I", data, 16, max(0, length) & U32)
        elif op == 9 and len(data) >= 3:  # flip the byte-order flag (the wrong byte order)
            data[2] ^= 0x10
        elif op == 10 and len(data) >= 2:  # any PDU type, including unknown ones
            data[1] = rng.choice((0, 19, 77, 255, rng.randrange(1, 19)))
        elif op == 11 and len(data) >= 3:  # random flags (context, instance, index bits)
            data[2] = rng.getrandbits(8)
        elif op == 12 and len(data) >= HEADER_LEN:  # version, reserved byte, a length byte
            data[rng.choice((0, 3, 16, 17, 18, 19))] = rng.getrandbits(8)
        elif op == 13 and len(data) > HEADER_LEN + 4:  # big count in an OID/length word
            i = HEADER_LEN + 4 * rng.randrange((len(data) - HEADER_LEN) // 4)
            data[i] = rng.choice((0x7F, 0x80, 0xFF, 129))
    return bytes(data)


def chunked(rng: random.Random, data: bytes, largest: int = 200) -> Iterator[bytes]:
    """`data` in random pieces: often 1, 3, 4 or about a header's bytes, else up to `largest`."""
    pos = 0
    while pos < len(data):
        step = rng.choice((1, 3, 4, 20, 21, rng.randint(1, largest)))
        yield data[pos:pos + step]
        pos += step


@dataclass
class StreamResult:
    """What `decode_stream` got out of a stream."""

    pdus: list[Pdu] = field(default_factory=list)
    errors: int = 0
    leftover: bytes = b""
    most_buffered: int = 0  # the largest buffer kept between two chunks


def decode_stream(chunks: Iterable[bytes]) -> StreamResult:
    """Feed chunks through `decode_packet` the way the session's `data_received` does.

    A parse error with a header and `skip` drops that packet; any other one drops the buffer
    (the session hangs up there) and decoding resumes on the next chunk. Only
    `AgentXParseError` is caught.
    """
    out = StreamResult()
    buf = b""
    for chunk in chunks:
        buf += chunk
        while buf:
            try:
                pdu, buf = decode_packet(buf)
            except AgentXParseError as exc:
                out.errors += 1
                if exc.header is not None and exc.skip is not None:
                    buf = buf[exc.skip:]
                    continue
                buf = b""
                break
            if pdu is None:
                break
            out.pdus.append(pdu)
        out.most_buffered = max(out.most_buffered, len(buf))
    out.leftover = buf
    return out


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


@dataclass
class Failure:
    """One input that broke the contract."""

    kind: str
    data: bytes
    problem: str


@dataclass
class Stats:
    """What a fuzz run did."""

    inputs: int = 0
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    failure_count: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


def _crash(exc: Exception) -> str:
    where = traceback.format_exc(limit=-1).strip().splitlines()
    return f"{type(exc).__name__}: {exc} ({' '.join(where[1:2]).strip()})"


def check_one(data: bytes) -> tuple[str | None, str]:
    """Decode one buffer: (what broke the contract or None, outcome).

    The outcome is `decoded`, `parse_error`, `incomplete` or `crash`.
    """
    try:
        got: Any = decode_packet(data)  # Any: the contract itself is what is checked
    except AgentXParseError as exc:
        if exc.skip is not None:
            if exc.header is None:
                return "AgentXParseError with a skip but no header", "parse_error"
            if not HEADER_LEN <= exc.skip <= len(data):
                return f"AgentXParseError.skip={exc.skip} outside 20..{len(data)}", "parse_error"
        return None, "parse_error"
    except Exception as exc:
        return _crash(exc), "crash"
    pdu, rest = got
    if not isinstance(rest, bytes):
        return f"leftover is {type(rest).__name__}, not bytes", "decoded"
    if pdu is None:
        return (None if rest == data else "incomplete packet but the leftover differs"), (
            "incomplete"
        )
    if not isinstance(pdu, Pdu):
        return f"decoded a {type(pdu).__name__}", "decoded"
    length = struct.unpack_from(">I" if data[2] & 0x10 else "<I", data, 16)[0]
    if rest != data[HEADER_LEN + length:]:
        return "leftover is not the bytes after the packet", "decoded"
    return _check_reencode(pdu, len(data) - len(rest)), "decoded"


def _check_reencode(pdu: Pdu, consumed: int) -> str | None:
    """A decoded PDU encodes again (unless the encoder range-checks a value the decoder took)
    to as many bytes, and those decode to the same PDU.

    Fewer bytes only by 20 an OID: a sender may spell 1.3.6.1.x.... without the prefix
    compression (RFC 2741 5.1), the encoder always compresses, and saves 5 sub-ids.
    """
    try:
        again = pdu.encode()
    except AgentXEncodeError:
        return None
    except Exception as exc:
        return f"re-encoding raised {_crash(exc)}"
    saved = consumed - len(again)
    if saved < 0 or saved % 20:
        return f"re-encoded to {len(again)} bytes, not the {consumed} decoded: {pdu!r}"
    try:
        back = decode_packet(again)
    except Exception as exc:
        return f"re-encoded PDU does not decode: {_crash(exc)}"
    if back != (pdu, b""):
        return f"re-encoded PDU decodes differently: {pdu!r} -> {back[0]!r}"
    return None


class Fuzzer:
    """Input kinds in turn; every input goes through `check_one`."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.gen = Gen(self.rng)
        self.seeds = seed_packets()
        self.kinds: list[tuple[str, Callable[[], list[tuple[bytes, str | None]]]]] = [
            ("random", self.random_bytes),
            ("header", self.random_header),
            ("valid", self.valid),
            ("stream", self.stream),
            ("mutated", self.mutated),
            ("mutated", self.mutated),
            ("mutated", self.mutated),
        ]

    # Each returns [(input, problem found while building it)].

    def random_bytes(self) -> list[tuple[bytes, str | None]]:
        return [(random_bytes(self.rng), None)]

    def random_header(self) -> list[tuple[bytes, str | None]]:
        return [(random_header(self.rng), None)]

    def _encode(self) -> tuple[Pdu, bytes] | None:
        pdu = self.gen.pdu()
        try:
            return pdu, pdu.encode()
        except AgentXEncodeError:
            return None

    def valid(self) -> list[tuple[bytes, str | None]]:
        got = self._encode()
        if got is None:
            return []
        pdu, data = got
        problem = None
        try:
            back, rest = decode_packet(data)
            if back != pdu or rest:
                problem = f"round trip changed the PDU: {pdu!r} -> {back!r}"
        except Exception as exc:
            problem = f"valid {type(pdu).__name__} did not decode: {type(exc).__name__}: {exc}"
        return [(data, problem)]

    def stream(self) -> list[tuple[bytes, str | None]]:
        pairs = [p for p in (self._encode() for _ in range(self.rng.randrange(1, 5))) if p]
        data = b"".join(d for _, d in pairs)
        problem = None
        try:
            got = decode_stream(chunked(self.rng, data))
            if got.errors or got.pdus != [p for p, _ in pairs] or got.leftover:
                problem = "stream decode lost, reordered or changed PDUs"
        except Exception as exc:
            problem = f"stream of valid PDUs raised {type(exc).__name__}: {exc}"
        return [(data, problem)]

    def mutated(self) -> list[tuple[bytes, str | None]]:
        if self.rng.random() < 0.25:
            return [(mutate(self.rng, self.rng.choice(self.seeds)), None)]
        got = self._encode()
        if got is None:
            return []
        return [(mutate(self.rng, got[1]), None)]

    def run(self, count: int, progress: Callable[[int, float], None] | None = None) -> Stats:
        """Check `count` inputs."""
        stats = Stats()
        kinds = self.kinds
        t0 = time.perf_counter()
        step = max(1, count // 10)
        i = 0
        k = 0
        while i < count:
            name, make = kinds[k % len(kinds)]
            k += 1
            for data, built in make():
                if i >= count:
                    break
                i += 1
                stats.by_kind[name] = stats.by_kind.get(name, 0) + 1
                found, outcome = check_one(data)
                stats.outcomes[outcome] = stats.outcomes.get(outcome, 0) + 1
                problem = built or found
                if problem is not None:
                    stats.failure_count += 1
                    if len(stats.failures) < MAX_REPORTED:
                        stats.failures.append(Failure(name, data, problem))
                if progress is not None and i % step == 0:
                    progress(i, time.perf_counter() - t0)
        stats.inputs = i
        stats.seconds = time.perf_counter() - t0
        return stats


def describe(stats: Stats, seed: int) -> str:
    """The summary printed by the command."""
    lines = [
        f"{stats.inputs} inputs (seed {seed}) in {stats.seconds:.1f} s: "
        f"{stats.inputs / stats.seconds:,.0f} inputs/s; {stats.failure_count} failures",
        "  by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.by_kind.items())),
        "  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.outcomes.items())),
    ]
    for f in stats.failures:
        lines.append(f"FAILED ({f.kind}): {f.problem}")
        lines.append(f"  input ({len(f.data)} bytes): {f.data.hex()}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def run(report: Report, *, quick: bool = False) -> None:
    """As a benchmark row: inputs/s, target no failure."""
    count = QUICK_COUNT if quick else BENCH_COUNT
    stats = Fuzzer(DEFAULT_SEED).run(count)
    report.add(Row(
        f"decoder fuzz, {stats.inputs} inputs (seed {DEFAULT_SEED})",
        rate(stats.inputs / stats.seconds, "inputs/s"), "", None, "0 failures",
        stats.failure_count == 0,
    ))
    for f in stats.failures:
        report.note(f"fuzz failure ({f.kind}): {f.problem}; input hex {f.data.hex()}")
    if not quick and BENCH_COUNT != DEFAULT_COUNT:
        report.note(
            f"`python -m bench fuzz` checks {BENCH_COUNT} inputs to stay within 2 minutes; "
            f"`./run fuzz` (python -m bench.fuzz_agentx) checks {DEFAULT_COUNT} by default"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.fuzz_agentx`: exit 1 when any input broke the contract."""
    p = argparse.ArgumentParser(prog="python -m bench.fuzz_agentx", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=DEFAULT_COUNT,
                   help="inputs (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help="random seed (default %(default)s)")
    args = p.parse_args(argv)
    if args.count < 1:
        p.error("--count must be at least 1")

    def progress(done: int, seconds: float) -> None:
        print(f"  {done}/{args.count} inputs, {done / seconds:,.0f}/s", file=sys.stderr, flush=True)

    stats = Fuzzer(args.seed).run(args.count, progress)
    print(describe(stats, args.seed))
    return 1 if stats.failure_count else 0


if __name__ == "__main__":
    sys.exit(main())
