"""A scripted AgentX 'master' (asyncio unix server) for misbehaviour snmpd never shows,
and a subagent child process to measure under it. No test lives here."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from pmta_snmp.agentx.codec import (
    HEADER_LEN,
    ErrorCode,
    Open,
    Pdu,
    Ping,
    Register,
    Response,
    decode_packet,
)
from pmta_snmp.mib.snapshot import Oid, OidTree, SnmpType, Value

B: Oid = (1, 3, 6, 1, 4, 1, 32473, 99)
ENTRY: Oid = (*B, 2, 1)


def small_tree() -> OidTree:
    items: list[tuple[Oid, Value]] = [((*B, 1, 1, 0), Value(SnmpType.INTEGER, 7))]
    items += [((*ENTRY, 2, i), Value(SnmpType.OCTET_STRING, b"row%d" % i)) for i in range(1, 51)]
    return OidTree(items, [(*B, 1, 1), (*ENTRY, 2)])


# The subagent as a child process: its memory and fds are its own. argv[1] is the socket.
CHILD = """
import asyncio, logging, sys
from pmta_snmp.agentx.session import AgentXSession
from tests.reliability._fake_master import B, small_tree
logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(levelname)s %(name)s: %(message)s")
async def main():
    s = AgentXSession([B], small_tree(), address=sys.argv[1], ping_interval=None,
                      request_timeout=1.0, backoff_initial=0.02, backoff_max=0.1)
    s.start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


class FakeConn:
    """The master side of one subagent connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = b""
        self.session_id = 0

    async def recv_raw(self, timeout: float = 3.0) -> bytes:
        while True:
            if len(self.buf) >= HEADER_LEN:
                big = bool(self.buf[2] & 0x10)
                (length,) = struct.unpack_from(">I" if big else "<I", self.buf, 16)
                if len(self.buf) >= HEADER_LEN + length:
                    raw = self.buf[: HEADER_LEN + length]
                    self.buf = self.buf[HEADER_LEN + length :]
                    return raw
            chunk = await asyncio.wait_for(self.reader.read(1 << 20), timeout)
            if not chunk:
                raise EOFError("subagent closed the connection")
            self.buf += chunk

    async def recv(self, timeout: float = 3.0, skip_pings: bool = True) -> Pdu:
        while True:
            pdu, rest = decode_packet(await self.recv_raw(timeout))
            assert pdu is not None and rest == b""
            if skip_pings and isinstance(pdu, Ping):
                self.reply(pdu)
                continue
            return pdu

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def response(self, req: Pdu, error: int = ErrorCode.NO_ERROR, *,
                 packet_id: int | None = None, session_id: int | None = None,
                 big: bool | None = None) -> bytes:
        return Response(
            0, error, 0,
            session_id=self.session_id if session_id is None else session_id,
            transaction_id=req.transaction_id,
            packet_id=req.packet_id if packet_id is None else packet_id,
            network_byte_order=req.network_byte_order if big is None else big,
        ).encode()

    def reply(self, req: Pdu, error: int = ErrorCode.NO_ERROR, **kw: object) -> None:
        self.send(self.response(req, error, **kw))  # type: ignore[arg-type]

    async def handshake(self, session_id: int = 42) -> None:
        self.session_id = session_id
        opened = await self.recv()
        assert isinstance(opened, Open), opened
        self.reply(opened)
        registered = await self.recv()
        assert isinstance(registered, Register), registered
        self.reply(registered)

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


class FakeMaster:
    """A unix-socket AgentX 'master' handing each accepted connection to the test."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.queue: asyncio.Queue[FakeConn] = asyncio.Queue()
        self.count = 0
        self.server: asyncio.AbstractServer | None = None
        self.conns: list[FakeConn] = []

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._accept, str(self.path),
                                                      limit=1 << 22)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.count += 1
        conn = FakeConn(reader, writer)
        self.conns.append(conn)
        await self.queue.put(conn)

    async def next_conn(self, timeout: float = 3.0) -> FakeConn:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def close(self) -> None:
        for conn in self.conns:
            conn.writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
