"""Poll and build in a child process; the serving process only maps finished trees.

Fetching a large PowerMTA answer, parsing it and building a 100k-value OID tree hold the
interpreter for tens of milliseconds at a time (one `json.loads`, one sort, one collection):
in a thread of the serving process that stalls AgentX and SNMP requests. So the agents run
`Poller` and `SnmpView` in a child process (`python -m pmta_snmp.worker`) at a lower CPU
priority.
After every poll the child packs the new tree (`OidTree.to_bytes`) into an anonymous memory
file (`memfd`, Linux) and passes the descriptor over the control socket; the parent maps it
and swaps one reference (`OidTree.from_buffer`: no copy, no per-value objects). Notifications
and a summary of each poll travel over the same socket as small pickled messages.

The parent keeps serving the last tree while the child is gone and starts a new one with
backoff; the child exits when the parent closes the socket (or dies). Without `memfd` (not
Linux) the packed bytes travel over the socket instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle
from typing import Any

from pmta_snmp.config import Config
from pmta_snmp.mib.snapshot import Oid, OidTree, Value

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CHILD_NICE = 10
"""The child's nice increment. Where the child and the request path share a CPU, the kernel
lets a waking request preempt the child at once; the child still gets its small share when
the CPU is saturated, so polls are delayed, never stopped."""


@dataclass(frozen=True, slots=True)
class Published:
    """What the child reports with every tree: values, bytes and its timings (monotonic)."""

    values: int
    nbytes: int
    poll_started: float
    poll_ended: float
    build_ended: float
    api_reachable: bool
    carry: Carry | None = None


@dataclass(frozen=True, slots=True)
class Carry:
    """What a restarted child takes over from the one before, so that a crash is not a reset:
    the last poll result (counters, last success, last error; its snapshot travels apart),
    the raised notification conditions (no second raise) and the agent's start time.

    Small: it rides along with every tree. The last good snapshot, which can be large, is
    pickled into a memfd only when it changes; the parent holds that descriptor without
    reading it and hands it to the next child."""

    result: Any  # PollResult without its snapshot (the serving process never imports poller)
    raised: frozenset[str]
    started_at: datetime
    discontinuity: datetime | None = None  # of the traffic totals: a restart is no reset


NotificationHandler = Callable[[Oid, list[tuple[Oid, Value]]], None]


class TreeWorker:
    """Runs the poller and tree builder in a child process and serves what it publishes.

    Use from one asyncio loop: `start()`, `current()` (any thread), `await stop()`.
    `on_notification` is called on the loop for every raise/clear the child's rules send;
    `on_published` after every swapped tree (used by benchmarks and logs).
    """

    def __init__(
        self,
        cfg: Config,
        initial: OidTree,
        *,
        on_notification: NotificationHandler | None = None,
        on_published: Callable[[Published], None] | None = None,
        restart_initial: float = 1.0,
        restart_max: float = 30.0,
    ) -> None:
        self.cfg = cfg
        self.tree = initial
        self.on_notification = on_notification
        self.on_published = on_published
        self.restarts = 0
        self._restart_initial = restart_initial
        self._restart_max = restart_max
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._restart_handle: asyncio.TimerHandle | None = None
        self._delay = restart_initial
        self._awaiting: tuple[str, Published | None] | None = None
        self._carry: Carry | None = None
        self._snapshot_fd: int | None = None

    def current(self) -> OidTree:
        """The tree to answer from right now."""
        return self.tree

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the child; call on the loop that will receive its messages."""
        self._loop = asyncio.get_running_loop()
        self._spawn()

    async def stop(self, timeout: float = 5.0) -> None:
        """Ask the child to stop, wait for it (kill it after `timeout`), close the socket."""
        self._stopping = True
        if self._restart_handle is not None:
            self._restart_handle.cancel()
        proc, conn = self._proc, self._conn
        self._detach()
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
            conn.close()
        if proc is not None:
            try:
                await asyncio.to_thread(proc.wait, timeout)
            except subprocess.TimeoutExpired:
                log.warning("poll worker did not stop in %gs: killing it", timeout)
                proc.kill()
                await asyncio.to_thread(proc.wait, timeout)
        self._set_snapshot_fd(None)

    def _spawn(self) -> None:
        # A plain child (`python -m pmta_snmp.worker FD`) rather than multiprocessing's spawn,
        # which would also start a resource-tracker process the worker never needs.
        parent_sock, child_sock = socket.socketpair()
        snap_fd = self._snapshot_fd
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pmta_snmp.worker", str(child_sock.fileno())],
                pass_fds=[child_sock.fileno()] + ([] if snap_fd is None else [snap_fd]),
                stdin=subprocess.DEVNULL,
                # No new session: with autogroup scheduling a session is its own CPU group, and
                # the child's lower priority would only count inside that group.
            )
        except OSError:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        conn = Connection(parent_sock.detach())
        root = logging.getLogger()
        levels = {
            name: logging.getLogger(name).level for name in ("", "httpx", "httpcore", "pmta_snmp")
        }
        conn.send((self.cfg, levels, bool(root.handlers), self._carry, snap_fd))
        self._proc, self._conn = proc, conn
        assert self._loop is not None
        self._loop.add_reader(conn.fileno(), self._readable)
        log.debug("poll worker started (pid %s)", proc.pid)

    def _set_snapshot_fd(self, fd: int | None) -> None:
        if self._snapshot_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._snapshot_fd)
        self._snapshot_fd = fd

    def _detach(self) -> None:
        self._awaiting = None
        if self._conn is not None and self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._conn.fileno())
        self._proc = None
        self._conn = None

    # -- messages ----------------------------------------------------------------------------

    def _readable(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            while conn.poll():
                if self._awaiting is not None:
                    # A descriptor follows its message in a message of its own; read it only
                    # once it is there, so the loop never blocks on the child.
                    (what, info), self._awaiting = self._awaiting, None
                    fd = recv_handle(conn)
                    if what == "snapshot":
                        self._set_snapshot_fd(fd)
                    else:
                        assert info is not None
                        self._install_fd(info, fd)
                    continue
                self._handle(conn, conn.recv())
        except (EOFError, OSError) as exc:
            self._lost(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        except Exception:  # a bad message must not stop the serving process
            log.exception("poll worker sent a message that could not be used")
            self._lost("bad message")

    def _handle(self, conn: Connection, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "tree":
            info: Published = msg[1]
            if msg[2] == "fd":
                self._awaiting = ("tree", info)
            else:
                self._install(info, conn.recv_bytes())
        elif kind == "snapshot":
            self._awaiting = ("snapshot", None)
        elif kind == "notify" and self.on_notification is not None:
            self.on_notification(msg[1], msg[2])

    def _install_fd(self, info: Published, fd: int) -> None:
        try:
            # Pages fault in as they are read (no MAP_POPULATE: mmap() would fault them all in
            # while holding the GIL; faults during Python code leave the switch interval work).
            buf = mmap.mmap(fd, info.nbytes, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self._install(info, buf)

    def _install(self, info: Published, buf: bytes | mmap.mmap) -> None:
        self.tree = OidTree.from_buffer(buf)
        if info.carry is not None:
            self._carry = info.carry
        self._delay = self._restart_initial
        if self.on_published is not None:
            self.on_published(info)

    def _lost(self, why: str) -> None:
        proc, conn = self._proc, self._conn
        self._detach()
        if conn is not None:
            conn.close()
        code = None
        if proc is not None:
            # A child that closed its socket is exiting: a moment to learn how (requests are
            # answered by the AgentX reader thread meanwhile, not by this loop).
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(0.2)
            if code is None:  # still running (a bad message): make sure only one child lives
                proc.kill()
                assert self._loop is not None
                self._loop.run_in_executor(None, proc.wait)  # reap without blocking
        if self._stopping:
            return
        self.restarts += 1
        # SIGTERM is how service managers stop the whole group (systemd's KillMode=control-
        # group): the agent itself is most likely stopping too, so that is no error.
        level = logging.INFO if code == -signal.SIGTERM else logging.ERROR
        log.log(
            level,
            "poll worker gone (%s%s): serving the last tree, restarting in %gs",
            why, "" if code is None else f", exit code {code}", self._delay,
        )
        assert self._loop is not None
        self._restart_handle = self._loop.call_later(self._delay, self._restart)
        self._delay = min(self._delay * 2, self._restart_max)

    def _restart(self) -> None:
        self._restart_handle = None
        if not self._stopping:
            self._spawn()


# -- the child -----------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """`python -m pmta_snmp.worker FD`: the child, talking to its parent over socket FD."""
    conn = Connection(int(argv[0]))
    try:
        cfg, levels, log_to_stderr, carry, snapshot_fd = conn.recv()
    except (EOFError, OSError):
        return 1
    if carry is not None:
        carry = replace(carry, result=replace(carry.result, snapshot=_read_snapshot(snapshot_fd)))
    child_main(conn, cfg, levels, log_to_stderr, carry)
    return 0


def child_main(
    conn: Connection,
    cfg: Config,
    levels: dict[str, int],
    log_to_stderr: bool,
    carry: Carry | None = None,
) -> None:
    """Poll, build, publish until the parent says stop or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the parent
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError):
        os.nice(CHILD_NICE)
    if log_to_stderr:
        logging.basicConfig(level=levels.get("", logging.WARNING), format=LOG_FORMAT)
    for name, level in levels.items():
        if name:
            logging.getLogger(name).setLevel(level)

    from pmta_snmp.agent import poller_from
    from pmta_snmp.notify import Condition
    from pmta_snmp.poller import PollResult
    from pmta_snmp.service import SnmpView

    view = SnmpView(thresholds=cfg.thresholds, enterprise=cfg.enterprise)
    if carry is not None:
        view.started_at = carry.started_at
        view.rules.raised = {Condition(c) for c in carry.raised}
        view.resume(carry.result.snapshot, carry.discontinuity)
    publisher = _Publisher(conn)
    view.senders.append(publisher.notify)
    started = [time.monotonic()]
    carried = [carry.result.snapshot if carry is not None else None]

    def on_result(result: PollResult) -> None:
        poll_ended = time.monotonic()
        publisher.hold = True  # notifications go after the tree they describe
        try:
            view.update(result)
        finally:
            publisher.hold = False
        publisher.tree(
            view.tree,
            started[0],
            poll_ended,
            result.api_reachable,
            Carry(
                replace(result, snapshot=None),
                frozenset(c.value for c in view.rules.raised),
                view.started_at,
                view.discontinuity,
            ),
        )
        publisher.flush()
        # After the tree, so the handover never waits for this.
        if publisher.memfd and result.snapshot is not None and result.snapshot is not carried[0]:
            carried[0] = result.snapshot
            publisher.snapshot(result.snapshot)

    poller = poller_from(cfg, on_result)
    if carry is not None:
        poller.result = carry.result
    original = poller.poll_once

    async def timed_poll_once(client: Any) -> PollResult:
        started[0] = time.monotonic()
        return await original(client)

    poller.poll_once = timed_poll_once  # type: ignore[method-assign]
    poller.start()
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            if msg[0] == "stop":
                break
    finally:
        poller.stop()
        conn.close()


class _Publisher:
    """Sends trees and notifications to the parent (called from the poller thread)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.memfd = hasattr(os, "memfd_create")
        self.hold = False
        self._held: list[tuple[Any, ...]] = []

    def notify(self, trap_oid: Oid, varbinds: list[tuple[Oid, Value]]) -> None:
        """Send a notification, or keep it until `flush` while `hold` is set (so that a
        manager polling on a trap already finds the tree that raised it)."""
        msg = ("notify", trap_oid, varbinds)
        if self.hold:
            self._held.append(msg)
            return
        with contextlib.suppress(OSError):
            self.conn.send(msg)

    def flush(self) -> None:
        """Send the notifications kept while `hold` was set."""
        held, self._held = self._held, []
        for msg in held:
            with contextlib.suppress(OSError):
                self.conn.send(msg)

    def snapshot(self, snapshot: object) -> None:
        """Pass the last good snapshot up, for a restarted child (pickled into a memfd)."""
        try:
            data = pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
            self._send_memfd("pmta-snmp-snapshot", data, ("snapshot",))
        except (OSError, pickle.PicklingError) as exc:
            log.debug("passing the last snapshot up failed: %s", exc)

    def tree(
        self,
        tree: OidTree,
        poll_started: float,
        poll_ended: float,
        api_reachable: bool,
        carry: Carry | None = None,
    ) -> None:
        data = tree.to_bytes()
        info = Published(
            values=len(tree),
            nbytes=len(data),
            poll_started=poll_started,
            poll_ended=poll_ended,
            build_ended=time.monotonic(),
            api_reachable=api_reachable,
            carry=carry,
        )
        try:
            if self.memfd:
                self._send_fd(info, data)
            else:
                self.conn.send(("tree", info, "bytes"))
                self.conn.send_bytes(data)
        except OSError as exc:
            log.debug("publishing a tree failed: %s", exc)

    def _send_fd(self, info: Published, data: bytes) -> None:
        self._send_memfd("pmta-snmp-tree", data, ("tree", info, "fd"))

    def _send_memfd(self, name: str, data: bytes, msg: tuple[Any, ...]) -> None:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            self.conn.send(msg)
            send_handle(self.conn, fd, os.getppid())
        finally:
            os.close(fd)


def _read_snapshot(fd: int | None) -> Any:
    """The snapshot pickled in memfd `fd` by the previous worker, or None."""
    if fd is None:
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            fh.seek(0)
            return pickle.load(fh)  # noqa: S301 - written by this agent's previous worker
    except Exception as exc:  # a damaged carry-over only costs the last good data
        log.warning("poll worker: cannot use the previous worker's snapshot: %s", exc)
        return None


if __name__ == "__main__":
    # Run the module's own copy, so what it pickles names pmta_snmp.worker, not __main__.
    from pmta_snmp.worker import main as worker_main

    sys.exit(worker_main(sys.argv[1:]))
