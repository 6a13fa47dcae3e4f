"""AgentX masters a subagent connects to instead of snmpd: the only fake masters there are.

- `FakeMaster`: blocking and single-threaded, for timing a subagent directly, without snmpd
  and a client process. It listens on a unix socket, accepts one subagent, answers what the
  subagent sends (Open, Register, Ping, Notify, AddAgentCaps ... all get a Response without
  error) and sends Get / GetNext requests, timing each round trip. The same master times our
  subagent and net-snmp's C subagent (`snmpd -X`), so the two latencies are comparable.
- `AsyncFakeMaster` and its `AsyncFakeConn`s: an asyncio unix server handing each connection
  to a test that scripts the master side packet by packet, for misbehaviour snmpd never shows
  (malformed, stale or missing answers, hang-ups). tests/integration/test_agentx_snmpd.py and
  tests/reliability/ (through tests/reliability/_fake_master.py) use it.

Both cut packets out of the stream with `split_packet` and answer with `response_to`.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from pmta_snmp.agentx.codec import (
    HEADER_LEN,
    Close,
    ErrorCode,
    GetNext,
    Open,
    Pdu,
    Ping,
    Register,
    Response,
    SearchRange,
    decode_packet,
)
from pmta_snmp.mib.snapshot import Oid, SnmpType

# ---------------------------------------------------------------------------------------------
# Shared by both masters
# ---------------------------------------------------------------------------------------------


def split_packet(buf: bytes) -> tuple[bytes | None, bytes]:
    """(the first complete packet's bytes, the rest), or (None, buf) while it is incomplete.

    Framing only, by the header's length field in the byte order its flags name.
    """
    if len(buf) < HEADER_LEN:
        return None, buf
    big = bool(buf[2] & 0x10)
    (length,) = struct.unpack_from(">I" if big else "<I", buf, 16)
    end = HEADER_LEN + length
    if len(buf) < end:
        return None, buf
    return buf[:end], buf[end:]


def decode_one(raw: bytes) -> Pdu:
    """The PDU of one complete packet (from `split_packet`)."""
    pdu, rest = decode_packet(raw)
    assert pdu is not None and rest == b"", raw.hex()
    return pdu


def response_to(
    req: Pdu,
    session_id: int,
    error: int = ErrorCode.NO_ERROR,
    *,
    packet_id: int | None = None,
    big: bool | None = None,
) -> bytes:
    """A Response to `req` (its transaction and packet ids and byte order unless given)."""
    return Response(
        0,
        error,
        0,
        session_id=session_id,
        transaction_id=req.transaction_id,
        packet_id=req.packet_id if packet_id is None else packet_id,
        network_byte_order=req.network_byte_order if big is None else big,
    ).encode()


# ---------------------------------------------------------------------------------------------
# Blocking: timing a subagent
# ---------------------------------------------------------------------------------------------


class MasterError(RuntimeError):
    """The subagent did not behave (closed, timed out, answered an error)."""


@dataclass
class Sample:
    """One timed request: when it was sent (time.monotonic, comparable across processes on
    Linux) and its round trip in seconds."""

    sent: float
    latency: float


@dataclass
class WalkStats:
    """Timed GetNext requests of a looping walk."""

    samples: list[Sample] = field(default_factory=list)
    values: int = 0
    wraps: int = 0


class FakeMaster:
    """One subagent connection on a unix socket; blocking, single-threaded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(1)
        self._conn: socket.socket | None = None
        self._buf = b""
        self.session_id = 0
        self.big = True
        self.registered: list[Oid] = []
        self._packet_id = 0
        self._next_session = 41

    @property
    def address(self) -> str:
        """The address a subagent is given (`unix:PATH`)."""
        return f"unix:{self.path}"

    def close(self) -> None:
        """Close the connection and the listening socket."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._listener.close()

    def __enter__(self) -> FakeMaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connection ------------------------------------------------------------------------

    def accept(self, timeout: float) -> None:
        """Accept the subagent and answer its Open (and whatever follows within 0.2 s)."""
        self._listener.settimeout(timeout)
        try:
            conn, _ = self._listener.accept()
        except TimeoutError:
            raise MasterError(f"no subagent connected within {timeout}s") from None
        self._conn = conn
        self._buf = b""
        deadline = time.monotonic() + timeout
        while not self.session_id:
            self._answer(self._read_pdu(deadline))

    def wait_registered(self, prefix: Oid, timeout: float) -> None:
        """Serve the subagent's PDUs until it registered a subtree under `prefix`."""
        deadline = time.monotonic() + timeout
        while not any(r[: len(prefix)] == prefix or prefix[: len(r)] == r for r in self.registered):
            self._answer(self._read_pdu(deadline))

    def _read_pdu(self, deadline: float) -> Pdu:
        conn = self._conn
        if conn is None:
            raise MasterError("no subagent connection")
        while True:
            raw, self._buf = split_packet(self._buf)
            if raw is not None:
                return decode_one(raw)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MasterError("subagent did not answer in time")
            conn.settimeout(remaining)
            try:
                chunk = conn.recv(1 << 16)
            except TimeoutError:
                raise MasterError("subagent did not answer in time") from None
            if not chunk:
                raise MasterError("subagent closed the connection")
            self._buf += chunk

    def _answer(self, pdu: Pdu) -> None:
        """Answer a PDU the subagent sent on its own (never a Response to us)."""
        if isinstance(pdu, Response):
            return  # a late answer to a request we gave up on
        if isinstance(pdu, Close):
            raise MasterError(f"subagent closed the session (reason {pdu.reason})")
        session = pdu.session_id
        if isinstance(pdu, Open):
            self.big = pdu.network_byte_order
            self._next_session += 1
            session = self.session_id = self._next_session
        elif isinstance(pdu, Register):
            self.registered.append(pdu.subtree)
        assert self._conn is not None
        self._conn.sendall(response_to(pdu, session))

    # -- requests --------------------------------------------------------------------------

    def getnext(
        self, start: Oid, end: Oid = (), include: bool = False, timeout: float = 5.0
    ) -> tuple[Response, float]:
        """One GetNext with one range; (Response, round-trip seconds)."""
        self._packet_id = (self._packet_id + 1) & 0xFFFFFFFF or 1
        pid = self._packet_id
        data = GetNext(
            (SearchRange(start, end, include),),
            session_id=self.session_id,
            transaction_id=pid,
            packet_id=pid,
            network_byte_order=self.big,
        ).encode()
        assert self._conn is not None
        t0 = time.perf_counter()
        self._conn.sendall(data)
        deadline = time.monotonic() + timeout
        while True:
            pdu = self._read_pdu(deadline)
            if isinstance(pdu, Response) and pdu.packet_id == pid:
                return pdu, time.perf_counter() - t0
            self._answer(pdu)

    def walk_loop(self, subtree: Oid, seconds: float, max_requests: int = 5_000_000) -> WalkStats:
        """GetNext through `subtree` again and again for `seconds`, timing every request.

        The collector is off meanwhile: a full collection of this process (tens of thousands
        of samples by then) would be timed as the subagent's latency."""
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            return self._walk_loop(subtree, seconds, max_requests)
        finally:
            if gc_was_on:
                gc.enable()

    def _walk_loop(self, subtree: Oid, seconds: float, max_requests: int) -> WalkStats:
        end = (*subtree[:-1], subtree[-1] + 1)
        stats = WalkStats()
        cursor, include = subtree, True
        stop_at = time.monotonic() + seconds
        for _ in range(max_requests):
            sent = time.monotonic()
            if sent >= stop_at:
                break
            resp, latency = self.getnext(cursor, end, include)
            stats.samples.append(Sample(sent, latency))
            vb = resp.varbinds[0] if resp.varbinds else None
            if (
                resp.error
                or vb is None
                or vb.value.type == SnmpType.END_OF_MIB_VIEW
                or vb.name[: len(subtree)] != subtree  # net-snmp's subagent ignores range ends
            ):
                cursor, include = subtree, True
                stats.wraps += 1
            else:
                cursor, include = vb.name, False
                stats.values += 1
        return stats


# ---------------------------------------------------------------------------------------------
# Asyncio: a master scripted by a test
# ---------------------------------------------------------------------------------------------


class AsyncFakeConn:
    """The master side of one subagent connection."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, subtree: Oid | None = None
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.subtree = subtree  # what `handshake` expects registered (None: anything)
        self.buf = b""
        self.session_id = 0

    async def recv_raw(self, timeout: float = 3.0) -> bytes:
        """The next complete packet's bytes."""
        while True:
            raw, self.buf = split_packet(self.buf)
            if raw is not None:
                return raw
            chunk = await asyncio.wait_for(self.reader.read(1 << 20), timeout)
            if not chunk:
                raise EOFError("subagent closed the connection")
            self.buf += chunk

    async def recv(self, timeout: float = 3.0, skip_pings: bool = True) -> Pdu:
        """The next PDU; Pings are answered and skipped unless `skip_pings` is false."""
        while True:
            pdu = decode_one(await self.recv_raw(timeout))
            if skip_pings and isinstance(pdu, Ping):
                self.reply(pdu)
                continue
            return pdu

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def reply(
        self,
        req: Pdu,
        error: int = ErrorCode.NO_ERROR,
        *,
        packet_id: int | None = None,
        session_id: int | None = None,
        big: bool | None = None,
    ) -> None:
        """Answer `req` (see `response_to`) in this connection's session unless `session_id`
        is given."""
        sid = self.session_id if session_id is None else session_id
        self.send(response_to(req, sid, error, packet_id=packet_id, big=big))

    async def handshake(self, session_id: int = 42) -> None:
        """Answer Open and the Register after it with noError; the Register must be in the
        new session (and of `subtree` when the master was given one)."""
        self.session_id = session_id
        opened = await self.recv()
        assert isinstance(opened, Open), opened
        self.reply(opened)
        registered = await self.recv()
        assert isinstance(registered, Register), registered
        assert registered.session_id == session_id, registered
        if self.subtree is not None:
            assert registered.subtree == self.subtree, registered
        self.reply(registered)

    async def request(self, pdu: Pdu) -> Response:
        """Send `pdu`; the next PDU, which must be a Response."""
        self.send(pdu.encode())
        resp = await self.recv()
        assert isinstance(resp, Response), resp
        return resp

    async def closed_by_subagent(self, timeout: float = 3.0) -> bool:
        """True once the subagent hangs up (data before EOF is discarded)."""
        try:
            while True:
                chunk = await asyncio.wait_for(self.reader.read(1 << 20), timeout)
                if not chunk:
                    return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True


class AsyncFakeMaster:
    """A unix-socket AgentX 'master' handing each accepted connection to the test.

    `subtree`: what every connection's `handshake` expects registered. `limit`: the stream
    buffer; the master stops reading (and the subagent's writes back up) at twice that.
    """

    def __init__(self, path: Path, *, subtree: Oid | None = None, limit: int = 1 << 22) -> None:
        self.path = path
        self.subtree = subtree
        self.limit = limit
        self.queue: asyncio.Queue[AsyncFakeConn] = asyncio.Queue()
        self.count = 0
        self.server: asyncio.AbstractServer | None = None
        self.conns: list[AsyncFakeConn] = []

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(
            self._accept, str(self.path), limit=self.limit
        )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.count += 1
        conn = AsyncFakeConn(reader, writer, self.subtree)
        self.conns.append(conn)
        await self.queue.put(conn)

    async def next_conn(self, timeout: float = 3.0) -> AsyncFakeConn:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def close(self) -> None:
        for conn in self.conns:
            conn.writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
