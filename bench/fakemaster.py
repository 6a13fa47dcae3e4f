"""A minimal AgentX master for timing a subagent directly, without snmpd and a client process.

It listens on a unix socket, accepts one subagent, answers what the subagent sends (Open,
Register, Ping, Notify, AddAgentCaps ... all get a Response without error) and sends Get /
GetNext requests, timing each round trip. The same master times our subagent and net-snmp's
C subagent (`snmpd -X`), so the two latencies are comparable.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from pmta_snmp.agentx.codec import (
    Close,
    GetNext,
    Open,
    Pdu,
    Register,
    Response,
    SearchRange,
    decode_packet,
)
from pmta_snmp.mib.snapshot import Oid, SnmpType


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
            pdu, rest = decode_packet(self._buf)
            if pdu is not None:
                self._buf = rest
                return pdu
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

    def _send(self, pdu: Pdu) -> None:
        assert self._conn is not None
        self._conn.sendall(pdu.encode())

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
        self._send(
            Response(
                0,
                0,
                0,
                session_id=session,
                transaction_id=pdu.transaction_id,
                packet_id=pdu.packet_id,
                network_byte_order=pdu.network_byte_order,
            )
        )

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
        """GetNext through `subtree` again and again for `seconds`, timing every request."""
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
