"""asyncio AgentX subagent session: connect, Open, Register, serve, Ping, reconnect.

Master requests are answered by the connection's reader thread from the tree current at
arrival (see handlers.py): a request never waits on a poll or on the event loop. The session
keeps itself alive across master restarts with exponential backoff and jitter, and logs one
line per state change, never per request. Notifications given to `notify_later` while the
master is away are kept (a bounded queue, in order) and sent once the session is registered
again, so a condition raised during a master restart is not lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pmta_snmp.agentx.codec import (
    HEADER_LEN,
    AgentXEncodeError,
    AgentXParseError,
    CleanupSet,
    Close,
    CloseReason,
    CommitSet,
    ErrorCode,
    Flags,
    Get,
    GetBulk,
    GetNext,
    Header,
    Notify,
    Open,
    Pdu,
    PduType,
    Ping,
    Register,
    Response,
    TestSet,
    UndoSet,
    VarBind,
    decode_packet,
)
from pmta_snmp.agentx.handlers import (
    DEFAULT_MAX_BULK_VARBINDS,
    RequestHandler,
    TreeGetter,
    UptimeGetter,
    uptime_since,
)
from pmta_snmp.mib.snapshot import Oid, OidTree, SnmpType, Value

__all__ = [
    "DEFAULT_ADDRESS",
    "SNMP_TRAP_OID_0",
    "SYS_UPTIME_0",
    "AgentXConnectionLost",
    "AgentXError",
    "AgentXNotConnected",
    "AgentXResponseError",
    "AgentXSession",
    "AgentXTimeout",
    "Registration",
    "SessionStatus",
    "parse_address",
]

log = logging.getLogger(__name__)

DEFAULT_ADDRESS: Final = "/var/agentx/master"
SYS_UPTIME_0: Final[Oid] = (1, 3, 6, 1, 2, 1, 1, 3, 0)
SNMP_TRAP_OID_0: Final[Oid] = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)


class AgentXError(Exception):
    """Base class of the session's errors."""


class AgentXNotConnected(AgentXError):
    """No open, registered session with the master right now."""


class AgentXTimeout(AgentXError):
    """The master did not answer in time."""


class AgentXConnectionLost(AgentXError):
    """The connection ended while waiting for an answer."""


class AgentXResponseError(AgentXError):
    """The master answered with an error code."""

    def __init__(self, what: str, response: Response) -> None:
        name = _error_name(response.error)
        super().__init__(f"{what}: {name}")
        self.response = response
        self.error = response.error


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error {code}"


@dataclass(frozen=True, slots=True)
class Registration:
    """A subtree to register; lower priority wins, timeout 0 = session default (s)."""

    subtree: Oid
    priority: int = 127
    timeout: int = 0
    range_subid: int = 0
    upper_bound: int | None = None


@dataclass(frozen=True, slots=True)
class SessionStatus:
    """Snapshot of the session's health, for the agent's own status objects."""

    connected: bool
    """Open and every subtree registered."""
    session_id: int | None
    registrations: tuple[Oid, ...]
    reconnects: int
    """Connection attempts after the first one."""
    last_error: str | None
    since: float
    """time.time() of the last change of `connected`."""
    parse_errors: int
    pending_notifications: int = 0
    """Notifications kept until the session is registered again (see `notify_later`)."""
    dropped_notifications: int = 0
    """Kept notifications given up: the oldest when more than the queue holds, or refused."""


#: Notifications kept while the master is away, at most (the oldest are dropped first).
DEFAULT_MAX_PENDING: Final = 100


def parse_address(address: str) -> tuple[str, str, int]:
    """Split an agentXSocket-style address: ("unix", path, 0) or ("tcp", host, port)."""
    if address.startswith("tcp:"):
        rest = address[4:]
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"bad AgentX address {address!r}: want tcp:HOST:PORT")
        host = host.strip("[]") or "localhost"
        return "tcp", host, int(port)
    if address.startswith("unix:"):
        address = address[5:]
    if not address:
        raise ValueError("empty AgentX address")
    return "unix", address, 0


_FAST_FLAGS: Final = Flags.NETWORK_BYTE_ORDER
_FAST_KINDS: Final = frozenset({PduType.GET_NEXT, PduType.GET})
_THREAD_REQUESTS: Final = (Get, GetNext, GetBulk, TestSet, CommitSet, UndoSet, CleanupSet)
"""Master requests answered by the reader thread itself (pure: handler + write)."""


class _Connection:
    """One socket connection to the master, read by its own thread; discarded on disconnect.

    The reader thread blocks in `recv` and answers Get, GetNext, GetBulk and the Set phases
    right there: a request costs no event-loop iteration (asyncio's per-message overhead was
    as large as all of our decoding, lookup and encoding together) and never waits behind
    anything on the loop. Everything that involves futures or session state (Responses to our
    Open, Register, Ping and Notify, the master's Close, malformed PDUs) is handed to the loop.
    Writes from both threads are serialised by a lock; a write that cannot complete within
    `send_timeout` (the master is not reading) drops the connection.
    """

    def __init__(
        self,
        session: AgentXSession,
        sock: socket.socket,
        big: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.session = session
        self.sock = sock
        self.big = big
        self.loop = loop
        self.session_id = 0
        self._packet_id = 0
        self.pending: dict[int, asyncio.Future[Response]] = {}
        self.closed = False
        self.error_logged = False
        self.parse_error_logged = False
        self.lost: asyncio.Future[str] = loop.create_future()
        self._wlock = threading.Lock()
        self._loop_thread = threading.get_ident()
        self._thread = threading.Thread(target=self._read_loop, name="agentx-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # reading (reader thread)

    def _read_loop(self) -> None:
        buf = b""
        # recv(n) allocates n bytes per call (and a large n costs an mmap): read into one
        # buffer and copy out only what arrived.
        space = bytearray(65536)
        view = memoryview(space)
        try:
            while not self.closed:
                try:
                    got = self.sock.recv_into(space)
                    data = view[:got].tobytes()
                except TimeoutError:
                    continue  # the timeout is for writes; keep waiting for requests
                except OSError as exc:
                    self.finish(f"connection error: {exc}")
                    return
                if not data:
                    self.finish("connection closed by master")
                    return
                rest = self.data_received(buf + data if buf else data)
                if rest is None:
                    return
                buf = rest
        except Exception:  # a bug here must end this connection, never the process
            log.exception("AgentX reader failed")
            self.finish("internal error in the AgentX reader")
        finally:
            with contextlib.suppress(OSError):
                self.sock.close()

    def data_received(self, buf: bytes) -> bytes | None:
        """Decode and handle every complete PDU; the incomplete rest, or None when over."""
        session = self.session
        answer_packet = session._handler.answer_packet
        while buf:
            # The fast path: a whole Get/GetNext in network byte order, answered as bytes.
            if len(buf) >= HEADER_LEN and buf[2] == _FAST_FLAGS and buf[1] in _FAST_KINDS:
                total = HEADER_LEN + int.from_bytes(buf[16:20], "big")
                if total <= len(buf):
                    try:
                        answer = answer_packet(buf[:total])
                    except Exception:  # the general path below answers, and logs, properly
                        answer = None
                    if answer is not None:
                        self.write(answer)
                        buf = buf[total:]
                        continue
            try:
                pdu, buf = decode_packet(buf)
            except AgentXParseError as exc:
                if exc.header is not None and exc.skip is not None:
                    session._on_parse_error(self, exc.header, str(exc))
                    buf = buf[exc.skip :]
                    continue
                session._on_parse_error(self, None)
                self.finish(f"unparseable data from master ({exc})")
                return None
            if pdu is None:
                break
            if isinstance(pdu, _THREAD_REQUESTS):
                session._dispatch(self, pdu)
            else:
                self.call(self._dispatch_on_loop, pdu)
            if self.closed:
                return None
        return buf

    def _dispatch_on_loop(self, pdu: Pdu) -> None:
        # Even when the connection ended right after this PDU arrived: a Response still
        # completes its request first, in the order the master sent them.
        ended = self.session._dispatch(self, pdu)
        if ended is not None:
            self.finish(ended)

    def call(self, fn: Callable[..., object], *args: object) -> None:
        """Run `fn(*args)` on the event loop (now, when already there)."""
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closing: nothing to tell
                self.loop.call_soon_threadsafe(fn, *args)

    # helpers

    def next_packet_id(self) -> int:
        self._packet_id = (self._packet_id + 1) & 0xFFFFFFFF or 1
        return self._packet_id

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            with self._wlock:
                self.sock.sendall(data)
        except TimeoutError:
            # The master is not reading: drop the connection rather than wait forever.
            log.warning("AgentX master is not reading its socket; dropping the connection")
            self.finish("master is not reading its socket")
            self._shutdown()
        except OSError as exc:
            self.finish(f"connection error: {exc}")

    def finish(self, reason: str) -> None:
        """Mark the connection over (first reason wins) and fail waiting requests."""
        self.closed = True
        self.call(self._finish_on_loop, reason)

    def _finish_on_loop(self, reason: str) -> None:
        if not self.lost.done():
            self.lost.set_result(reason)
        exc = AgentXConnectionLost(reason)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self.pending.clear()

    def _shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader, which closes the socket

    def close(self) -> None:
        self.closed = True
        self._shutdown()
        if not self._thread.is_alive():
            with contextlib.suppress(OSError):
                self.sock.close()


class AgentXSession:
    """An AgentX subagent serving an OidTree under one or more registered subtrees.

    Use from one asyncio loop: `start()` (or `await run()`), `set_tree()`,
    `await notify(...)`, `await stop()`. `set_tree()` may also be called from
    other threads; a reference swap is atomic.
    """

    def __init__(
        self,
        subtrees: Iterable[Oid | Registration],
        tree: OidTree | TreeGetter | None = None,
        *,
        address: str = DEFAULT_ADDRESS,
        agent_id: Oid = (),
        description: str = "pmta-snmp AgentX subagent",
        session_timeout: int = 0,
        request_timeout: float = 5.0,
        ping_interval: float | None = 15.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        sys_uptime: UptimeGetter | None = None,
        network_byte_order: bool = True,
        max_bulk_varbinds: int = DEFAULT_MAX_BULK_VARBINDS,
        send_timeout: float = 5.0,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self._registrations = tuple(
            s if isinstance(s, Registration) else Registration(tuple(s)) for s in subtrees
        )
        if not self._registrations:
            raise ValueError("AgentXSession needs at least one subtree to register")
        self._address = address
        parse_address(address)  # fail early on a bad address
        self._agent_id = agent_id
        self._description = description.encode()
        self._session_timeout = session_timeout
        self._request_timeout = request_timeout
        self._ping_interval = ping_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._big = network_byte_order
        self._send_timeout = send_timeout
        self._uptime = sys_uptime or uptime_since()
        self._tree: OidTree = OidTree()
        self._tree_getter: TreeGetter
        if tree is None or isinstance(tree, OidTree):
            self._tree = tree if tree is not None else OidTree()
            self._tree_getter = self._current_tree
        else:
            self._tree_getter = tree
        self._handler = RequestHandler(self._get_tree, self._uptime, max_bulk_varbinds)
        self._conn: _Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop_event = asyncio.Event()
        self._registered_event = asyncio.Event()
        self._stopping = False
        self._serving = False
        # status fields
        self._connected = False
        self._session_id: int | None = None
        self._reconnects = 0
        self._last_error: str | None = None
        self._since = time.time()
        self._parse_errors = 0
        # notifications kept until they are sent (notify_later), oldest first: our uptime
        # when raised (None: no sysUpTime.0) and snmpTrapOID.0 with the objects
        self._pending: collections.deque[tuple[int | None, tuple[VarBind, ...]]] = (
            collections.deque()
        )
        # (master's sysUpTime, ours) when its last Response came (RFC 2741 §6.2.16)
        self._master_clock: tuple[int, int] | None = None
        self._max_pending = max(1, max_pending)
        self._pending_event = asyncio.Event()
        self._dropped = 0
        self._kept_away = 0  # of the pending ones, given while not registered

    # --- tree -------------------------------------------------------------

    def _current_tree(self) -> OidTree:
        return self._tree

    def _get_tree(self) -> OidTree:
        return self._tree_getter()

    def set_tree(self, tree: OidTree) -> None:
        """Serve `tree` from the next request on (replaces any tree getter)."""
        self._tree = tree
        self._tree_getter = self._current_tree

    @property
    def tree(self) -> OidTree:
        """The tree requests are answered from right now."""
        return self._tree_getter()

    # --- status -----------------------------------------------------------

    @property
    def status(self) -> SessionStatus:
        """A consistent snapshot of connection health."""
        return SessionStatus(
            connected=self._connected,
            session_id=self._session_id,
            registrations=tuple(r.subtree for r in self._registrations) if self._connected else (),
            reconnects=self._reconnects,
            last_error=self._last_error,
            since=self._since,
            parse_errors=self._parse_errors,
            pending_notifications=len(self._pending),
            dropped_notifications=self._dropped,
        )

    @property
    def connected(self) -> bool:
        """True while open and registered."""
        return self._connected

    def _set_connected(self, value: bool) -> None:
        if value != self._connected:
            self._connected = value
            self._since = time.time()
        if value:
            self._registered_event.set()
        else:
            self._registered_event.clear()
            self._session_id = None

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until open and registered; False on timeout."""
        try:
            await asyncio.wait_for(self._registered_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # --- lifecycle --------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Start the connect/serve/reconnect loop as a task of the running loop."""
        if self._task is None or self._task.done():
            self._stopping = False
            self._stop_event.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="agentx-session")
        return self._task

    async def run(self) -> None:
        """Run until `stop()` is called (starts the session if needed)."""
        task = self.start()
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                raise exc

    async def stop(self, timeout: float = 3.0) -> None:
        """Close the session (Close reason shutdown) and stop reconnecting."""
        self._stopping = True
        self._stop_event.set()
        task = self._task
        if task is None or task.done():
            return
        if not self._serving:
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    async def _run(self) -> None:
        attempt = 0
        first = True
        try:
            while not self._stop_requested():
                if not first:
                    self._reconnects += 1
                first = False
                try:
                    if await self._connect_once():
                        attempt = 0
                except (OSError, AgentXError, AgentXEncodeError) as exc:
                    self._note_failure(str(exc) or type(exc).__name__)
                except Exception as exc:  # a bug must not end the subagent: log, back off
                    if repr(exc) != self._last_error:
                        log.exception("AgentX session failed unexpectedly")
                    self._last_error = repr(exc)
                if self._stop_requested():
                    break
                delay = self._backoff(attempt)
                attempt += 1
                log.log(
                    logging.INFO if attempt == 1 else logging.DEBUG,
                    "reconnecting to AgentX master %s in %.2fs",
                    self._address,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), delay)
        finally:
            self._set_connected(False)
            self._serving = False

    def _stop_requested(self) -> bool:
        return self._stopping

    def _backoff(self, attempt: int) -> float:
        cap = min(self._backoff_max, self._backoff_initial * (2 ** min(attempt, 30)))
        return random.uniform(cap / 2, cap)  # noqa: S311 - jitter, not crypto

    def _note_failure(self, message: str) -> None:
        if message != self._last_error:
            log.warning("AgentX master %s: %s; retrying with backoff", self._address, message)
        else:
            log.debug("AgentX master %s: %s", self._address, message)
        self._last_error = message

    async def _open_connection(self) -> _Connection:
        kind, host_or_path, port = parse_address(self._address)
        loop = asyncio.get_running_loop()
        address: Any
        if kind == "tcp":
            infos = await loop.getaddrinfo(host_or_path, port, type=socket.SOCK_STREAM)
            family, type_, proto, _, address = infos[0]
            sock = socket.socket(family, type_, proto)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address = host_or_path
        try:
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, address), self._request_timeout)
            sock.settimeout(self._send_timeout)  # blocking from here on, for the reader thread
        except BaseException:
            sock.close()
            raise
        conn = _Connection(self, sock, self._big, loop)
        conn.start()
        return conn

    async def _connect_once(self) -> bool:
        """One connection's life; True when it got as far as being registered."""
        conn = await self._open_connection()
        self._conn = conn
        registered = False
        try:
            resp = await self._request(
                conn, Open(self._session_timeout, self._agent_id, self._description)
            )
            if resp.error:
                raise AgentXResponseError("Open refused", resp)
            conn.session_id = resp.session_id
            self._session_id = resp.session_id
            log.info("AgentX session %d open with master %s", conn.session_id, self._address)
            for reg in self._registrations:
                resp = await self._request(
                    conn,
                    Register(
                        reg.subtree, reg.timeout, reg.priority, reg.range_subid, reg.upper_bound
                    ),
                )
                if resp.error:
                    conn.write(self._stamp(conn, Close(CloseReason.OTHER)).encode())
                    raise AgentXResponseError(f"Register {_dotted(reg.subtree)} refused", resp)
            registered = True
            self._last_error = None
            self._set_connected(True)
            if self._pending:
                self._pending_event.set()  # kept while the master was away: send them now
            log.info(
                "AgentX registered %s",
                ", ".join(_dotted(r.subtree) for r in self._registrations),
            )
            self._serving = True
            reason = await self._serve(conn)
            if reason is not None:
                self._last_error = reason
                log.warning("AgentX connection to %s lost: %s", self._address, reason)
        finally:
            self._serving = False
            was = self._connected
            self._set_connected(False)
            conn.finish("connection closed by subagent")
            conn.close()
            if self._conn is conn:
                self._conn = None
            if was and self._stopping:
                log.info("AgentX session closed")
        return registered

    async def _serve(self, conn: _Connection) -> str | None:
        """Ping and send kept notifications while connected; returns why the connection
        ended, None on stop."""
        stop_wait = asyncio.create_task(self._stop_event.wait())
        pending_wait = asyncio.create_task(self._pending_event.wait())
        try:
            while True:
                waiters: set[asyncio.Future[Any]] = {conn.lost, stop_wait, pending_wait}
                done, _ = await asyncio.wait(
                    waiters,
                    timeout=self._ping_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if conn.lost in done:
                    return conn.lost.result()
                if stop_wait in done:
                    await self._close(conn, CloseReason.SHUTDOWN)
                    return None
                if pending_wait in done:
                    self._pending_event.clear()
                    pending_wait = asyncio.create_task(self._pending_event.wait())
                    ended = await self._send_pending(conn)
                    if ended is not None:
                        return ended
                    continue
                try:
                    resp = await self._request(conn, Ping())
                except AgentXTimeout:
                    return "master did not answer Ping"
                except AgentXConnectionLost:
                    continue  # conn.lost has the reason
                if resp.error:
                    return f"Ping answered {_error_name(resp.error)}"
        finally:
            stop_wait.cancel()
            pending_wait.cancel()

    async def _close(self, conn: _Connection, reason: CloseReason) -> None:
        pid = conn.next_packet_id()
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        conn.pending[pid] = fut
        try:
            conn.write(self._stamp(conn, Close(reason), pid).encode())
            # Wait briefly for the master's Response (or for it to hang up).
            waiters: set[asyncio.Future[Any]] = {fut, conn.lost}
            await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            conn.pending.pop(pid, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: a lost connection here is expected
            else:
                fut.cancel()

    def _stamp(self, conn: _Connection, pdu: Pdu, packet_id: int | None = None) -> Pdu:
        return dataclasses.replace(
            pdu,
            session_id=conn.session_id,
            packet_id=conn.next_packet_id() if packet_id is None else packet_id,
            network_byte_order=conn.big,
        )

    async def _request(self, conn: _Connection, pdu: Pdu, timeout: float | None = None) -> Response:
        if conn.closed:
            raise AgentXConnectionLost("AgentX connection closed")
        pid = conn.next_packet_id()
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        conn.pending[pid] = fut
        try:
            conn.write(self._stamp(conn, pdu, pid).encode())
            resp = await asyncio.wait_for(
                fut, self._request_timeout if timeout is None else timeout
            )
        except TimeoutError:
            raise AgentXTimeout(f"no answer to {pdu.TYPE.name} from master") from None
        finally:
            conn.pending.pop(pid, None)
        self._master_clock = (resp.sys_uptime, self._uptime())
        return resp

    # --- receiving --------------------------------------------------------

    @staticmethod
    def _fail_pending(conn: _Connection, packet_id: int) -> None:
        fut = conn.pending.get(packet_id)
        if fut is not None and not fut.done():
            fut.set_exception(AgentXError("malformed Response from master"))

    def _on_parse_error(self, conn: _Connection, header: Header | None, reason: str = "") -> None:
        """Answer parseError for a framed bad PDU; say Close(parseError) when unframed.

        Runs in the reader thread (answers keep the order of the requests)."""
        self._parse_errors += 1
        if header is None:
            with contextlib.suppress(AgentXEncodeError):
                conn.write(self._stamp(conn, Close(CloseReason.PARSE_ERROR)).encode())
            return
        if not conn.parse_error_logged:  # once per connection: a flood must not flood the log
            conn.parse_error_logged = True
            log.warning(
                "AgentX master %s sent a malformed PDU (%s); answering parseError "
                "(further ones on this connection are counted, not logged)",
                self._address,
                reason,
            )
        if header.pdu_type == PduType.RESPONSE:
            conn.call(self._fail_pending, conn, header.packet_id)
            return
        conn.write(
            Response(
                self._uptime(),
                ErrorCode.PARSE_ERROR,
                0,
                session_id=header.session_id,
                transaction_id=header.transaction_id,
                packet_id=header.packet_id,
                network_byte_order=header.network_byte_order,
            ).encode()
        )

    def _dispatch(self, conn: _Connection, pdu: Pdu) -> str | None:
        """Handle one PDU from the master; returns a reason when the session is over."""
        if isinstance(pdu, Response):
            fut = conn.pending.get(pdu.packet_id)
            if fut is not None and not fut.done():
                fut.set_result(pdu)
            return None
        if isinstance(pdu, Close):
            try:
                reason = CloseReason(pdu.reason).name
            except ValueError:
                reason = str(pdu.reason)
            return f"master closed the session ({reason})"
        response: Response | None
        try:
            response = self._handler.handle(pdu)
            if response is None and not isinstance(pdu, CleanupSet):
                error = ErrorCode.NO_ERROR if isinstance(pdu, Ping) else ErrorCode.PROCESSING_ERROR
                response = self._handler.error_response(pdu, error)
            if response is not None:
                conn.write(response.encode())
        except Exception:  # a bug or a bad tree value must not end the session
            if not conn.error_logged:  # once per connection, not per request
                conn.error_logged = True
                log.exception("AgentX: failed to answer %s (answering genErr)", pdu.TYPE.name)
            conn.write(self._handler.error_response(pdu, ErrorCode.GEN_ERR).encode())
        return None

    # --- notifications ----------------------------------------------------

    def notify_later(
        self, trap_oid: Oid, varbinds: Sequence[VarBind] = (), *, sys_uptime: bool = False
    ) -> None:
        """Send a notification as soon as the session is registered: now when it is, else
        after the next registration. Never raises and never blocks; call it on the
        session's loop.

        Kept notifications go out in order, each at least once (one sent just as the
        connection broke may arrive twice); sysUpTime.0 (with `sys_uptime`) is the master's
        at the time of this call, not of the sending (see `_master_uptime_at`). At most
        `max_pending` are kept, the oldest dropped first; one the master refuses is dropped
        (logged)."""
        raised = self._uptime() if sys_uptime else None
        vbs = self._notification_varbinds(trap_oid, varbinds)
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self._dropped += 1
            log.warning(
                "AgentX: %d notifications waiting for the master; the oldest is dropped",
                self._max_pending,
            )
        self._pending.append((raised, vbs))
        if not self._connected:
            self._kept_away += 1
            log.info(
                "AgentX master %s not registered: notification %s kept until it is "
                "(%d waiting)", self._address, _dotted(trap_oid), len(self._pending),
            )
        self._pending_event.set()

    async def _send_pending(self, conn: _Connection) -> str | None:
        """Send the kept notifications in order; why the connection ended, if it did."""
        sent = 0
        while self._pending:
            raised, vbs = self._pending[0]
            if raised is not None:
                vbs = (self._sys_uptime_varbind(raised), *vbs)
            try:
                resp = await self._request(conn, Notify(vbs))
            except AgentXTimeout:
                return "master did not answer Notify"  # kept: sent again after reconnecting
            except AgentXConnectionLost:
                return await conn.lost  # kept
            self._pending.popleft()
            if resp.error:
                self._dropped += 1
                log.warning("AgentX master refused notification %s: %s; dropped",
                            _dotted(_trap_oid_of(vbs)), _error_name(resp.error))
            else:
                sent += 1
        if self._kept_away:
            log.info("AgentX: sent %d notification(s) kept while the master was away", sent)
            self._kept_away = 0
        return None

    @staticmethod
    def _notification_varbinds(trap_oid: Oid, varbinds: Sequence[VarBind]) -> tuple[VarBind, ...]:
        """snmpTrapOID.0, then `varbinds`: the body of a Notify after its sysUpTime.0."""
        trap = VarBind(SNMP_TRAP_OID_0, Value(SnmpType.OBJECT_IDENTIFIER, tuple(trap_oid)))
        return (trap, *varbinds)

    def _master_uptime_at(self, ours: int) -> int:
        """The master's sysUpTime at the moment ours read `ours`: a notification's sysUpTime.0
        is the agent's, snmpd's, whose sysUpTime.0 managers read and compare it with, not
        ours. Every Response carries the master's (RFC 2741 §6.2.16); 0 for a moment before
        the master started (a notification kept while it was away)."""
        if self._master_clock is None:
            return 0
        master, ours_then = self._master_clock
        now = self._uptime()
        master_now = master + ((now - ours_then) & 0xFFFFFFFF)
        return max(0, master_now - ((now - ours) & 0xFFFFFFFF)) & 0xFFFFFFFF

    def _sys_uptime_varbind(self, ours: int) -> VarBind:
        return VarBind(SYS_UPTIME_0, Value(SnmpType.TIME_TICKS, self._master_uptime_at(ours)))

    async def notify(
        self,
        trap_oid: Oid,
        varbinds: Sequence[VarBind] = (),
        *,
        sys_uptime: bool = False,
        timeout: float | None = None,
    ) -> Response:
        """Send a notification and wait for the master's Response.

        The Notify carries [sysUpTime.0 when `sys_uptime`: the master's, now,]
        snmpTrapOID.0 = `trap_oid`, then `varbinds`; without sysUpTime.0 the master adds
        its own.
        Raises AgentXNotConnected, AgentXTimeout, AgentXConnectionLost or
        AgentXResponseError.
        """
        conn = self._conn
        if conn is None or conn.closed or not self._connected:
            raise AgentXNotConnected("no registered AgentX session (notify_later keeps it)")
        vbs = self._notification_varbinds(trap_oid, varbinds)
        if sys_uptime:
            vbs = (self._sys_uptime_varbind(self._uptime()), *vbs)
        resp = await self._request(conn, Notify(vbs), timeout)
        if resp.error:
            raise AgentXResponseError("Notify refused", resp)
        return resp


def _dotted(oid: Oid) -> str:
    return ".".join(map(str, oid))


def _trap_oid_of(vbs: Sequence[VarBind]) -> Oid:
    """The snmpTrapOID.0 value of a notification's varbinds."""
    for vb in vbs:
        if vb.name == SNMP_TRAP_OID_0 and isinstance(vb.value.value, tuple):
            return vb.value.value
    return ()
