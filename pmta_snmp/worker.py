"""Poll and build in a child process; the serving process only maps finished trees.

Fetching a large PowerMTA answer, parsing it and building a 100k-value OID tree hold the
interpreter for tens of milliseconds at a time (one `json.loads`, one sort, one collection):
in a thread of the serving process that stalls AgentX and SNMP requests. So the agents run
`Poller` and `SnmpView` in a child process (`python -m pmta_snmp.worker`) at a lower CPU
priority.
After every poll the child packs the new tree (`OidTree.to_bytes`) into an anonymous memory
file (`memfd`, Linux) and passes the descriptor over the control socket; the parent maps it
and swaps one reference (`OidTree.from_buffer`: no copy, no per-value objects). Notifications
and a summary of each poll travel over the same socket as small pickled messages. With accounting
files configured (`[acct] files`) the child also runs the outcomes engine (`OutcomesFeed`), whose
reading position and counters live in the state directory: a restarted child continues from them.

The parent keeps serving the last tree while the child is gone and starts a new one with
backoff; the child exits when the parent closes the socket (or dies), when its poll thread has
ended (it must not sit there publishing nothing), and after a poll that left it above its memory
limit (`poll.worker_max_rss_mib`: a fresh process gives the memory back; it says why first and
is replaced at once). The serving side kills a child that sent no tree for a long time
(`TreeWorker.kill_stalled`). Without `memfd` (not Linux) the packed bytes travel over the socket
instead.
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
from typing import Any, Protocol

from pmta_snmp.config import Config
from pmta_snmp.mib.snapshot import Oid, OidTree, Value

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MIB = 1024 * 1024
CHECK_EVERY = 0.25
"""Seconds between the child's checks of its poll thread and of a pending planned exit."""
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
    `on_tree` with every tree the child delivers (the agent serves it with live health);
    `on_published` after every swapped tree (used by benchmarks and logs).
    """

    def __init__(
        self,
        cfg: Config,
        initial: OidTree,
        *,
        on_notification: NotificationHandler | None = None,
        on_tree: Callable[[OidTree, Published], None] | None = None,
        on_published: Callable[[Published], None] | None = None,
        restart_initial: float = 1.0,
        restart_max: float = 30.0,
    ) -> None:
        self.cfg = cfg
        self.tree = initial
        self.on_notification = on_notification
        self.on_tree = on_tree
        self.on_published = on_published
        self.restarts = 0
        self.spawned_at = time.monotonic()
        """When the current child was started (monotonic)."""
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
        self._exit_reason: str | None = None

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
        self.spawned_at = time.monotonic()
        assert self._loop is not None
        self._loop.add_reader(conn.fileno(), self._readable)
        log.debug("poll worker started (pid %s)", proc.pid)

    @property
    def pid(self) -> int | None:
        """The process id of the current child (None while there is none)."""
        return None if self._proc is None else self._proc.pid

    def kill_stalled(self, why: str) -> None:
        """Kill a child that stopped delivering trees (hung, or stopped with SIGSTOP: SIGKILL
        ends both); it is then replaced like a child that died."""
        proc = self._proc
        if proc is None or self._stopping:
            return
        log.error("poll worker (pid %s) %s: killing it", proc.pid, why)
        self.spawned_at = time.monotonic()  # one kill: its replacement gets its own time
        with contextlib.suppress(ProcessLookupError):
            proc.kill()

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
        elif kind == "exit":
            self._exit_reason = str(msg[1])

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
        if self.on_tree is not None:
            self.on_tree(self.tree, info)
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
        assert self._loop is not None
        reason, self._exit_reason = self._exit_reason, None
        if reason is not None and code in (0, None):  # a planned exit: replace it at once
            log.warning("poll worker (pid %s) restarting: %s", proc.pid if proc else "?", reason)
            self._restart_handle = self._loop.call_later(self._restart_initial, self._restart)
            return
        # SIGTERM is how service managers stop the whole group (systemd's KillMode=control-
        # group): the agent itself is most likely stopping too, so that is no error.
        level = logging.INFO if code == -signal.SIGTERM else logging.ERROR
        log.log(
            level,
            "poll worker gone (%s%s): serving the last tree, restarting in %gs",
            why, "" if code is None else f", exit code {code}", self._delay,
        )
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
    return child_main(conn, cfg, levels, log_to_stderr, carry)


def child_main(
    conn: Connection,
    cfg: Config,
    levels: dict[str, int],
    log_to_stderr: bool,
    carry: Carry | None = None,
) -> int:
    """Poll, build, publish until the parent says stop or goes away (0), the poll thread
    ended (1), or a poll left the process above its memory limit (0, after saying so)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the parent
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError):
        os.nice(CHILD_NICE)
    if log_to_stderr:
        logging.basicConfig(level=levels.get("", logging.WARNING), format=LOG_FORMAT)
    for name, level in levels.items():
        if name:
            logging.getLogger(name).setLevel(level)

    from pmta_snmp.poller import PollResult, poller_from
    from pmta_snmp.service import OutcomesFeed, SnmpView

    feed = OutcomesFeed.of(cfg.acct)
    view = SnmpView(thresholds=cfg.thresholds, enterprise=cfg.enterprise,
                    outcomes=None if feed is None else feed.view)
    if carry is not None:
        view.started_at = carry.started_at
        view.rules.restore(carry.raised)
        view.resume(carry.result.snapshot, carry.discontinuity)
    publisher = _Publisher(conn)
    view.senders.append(publisher.notify)
    started = [time.monotonic()]
    carried = [carry.result.snapshot if carry is not None else None]
    leaving = PlannedExit()
    max_rss = cfg.poll.worker_max_rss_mib * MIB

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
                view.rules.carried(),
                view.started_at,
                view.discontinuity,
            ),
        )
        publisher.flush()
        # After the tree, so the handover never waits for this.
        if publisher.memfd and result.snapshot is not None and result.snapshot is not carried[0]:
            carried[0] = result.snapshot
            publisher.snapshot(result.snapshot)
        rss = _rss_bytes()
        if rss is not None and rss > max_rss and leaving.reason is None:
            reason = (
                f"its memory after a poll ({rss // MIB} MiB) is above poll.worker_max_rss_mib "
                f"({max_rss // MIB} MiB); a new worker gives it back"
            )
            publisher.exit(reason)  # from this thread: the only one that sends
            leaving.set(reason)

    def poll_started() -> None:
        started[0] = time.monotonic()

    poller = poller_from(cfg, on_result, on_poll_start=poll_started)
    if carry is not None:
        poller.result = carry.result
    if feed is not None:
        feed.start()
    poller.start()
    try:
        return serve(conn, poller, leaving)
    finally:
        poller.stop(2.0)  # a poll still running ends with the process (a daemon thread)
        if feed is not None:
            feed.stop()  # saved before the socket closes: the next child starts from it
        conn.close()


class PlannedExit:
    """A planned exit asked for by the poll thread (which has told the parent why), read by
    the main thread."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        self.reason = reason


class _PollThread(Protocol):
    @property
    def alive(self) -> bool: ...
    @property
    def died(self) -> BaseException | None: ...


def serve(conn: Connection, poller: _PollThread, leaving: PlannedExit | None = None) -> int:
    """The child's main thread while the poller runs: wait for the parent's `stop` while
    watching the poll thread (this thread only receives). The exit code: 0 when told to stop,
    when the parent is gone or for a planned exit (`leaving`), 1 when the poll thread ended: a
    worker that cannot poll must not stay and publish nothing, the agent starts a new one."""
    while True:
        if leaving is not None and leaving.reason is not None:
            return 0
        if not poller.alive:
            log.error("poll worker: the poll thread ended (%r); exiting for a new worker",
                      poller.died)
            return 1
        try:
            if not conn.poll(CHECK_EVERY):
                continue
            msg = conn.recv()
        except (EOFError, OSError):
            return 0  # the parent is gone
        if msg[0] == "stop":
            return 0


def _rss_bytes() -> int | None:
    """This process's resident memory now (Linux), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


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

    def exit(self, reason: str) -> None:
        """Tell the parent that this worker leaves, and why (it then replaces it at once)."""
        with contextlib.suppress(OSError):
            self.conn.send(("exit", reason))

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
