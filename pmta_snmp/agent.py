"""Running the agents: AgentX subagent (`pmta-snmp agentx`) and standalone (`pmta-snmp agent`).

Both share one `Backend` (poll worker or poll thread, `PollWatch`); only the SNMP front end
differs, and both answer from `Backend.current`, whose health objects are computed when read.
SIGTERM and SIGINT close the AgentX session cleanly (Close reason shutdown) and stop polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable

from pmta_snmp.api.errors import redact_url
from pmta_snmp.config import Config
from pmta_snmp.mib.snapshot import Oid, OidTree, Value
from pmta_snmp.notify import Condition
from pmta_snmp.poller import (
    Poller,
    PollResult,
    client_config_from,
    poller_from,
    stale_after,
)
from pmta_snmp.service import OutcomesFeed, PollWatch, SnmpView, agent_state_dir
from pmta_snmp.worker import Published, TreeWorker

__all__ = [
    "Backend",
    "client_config_from",
    "poller_from",
    "run_agentx",
    "run_standalone",
]

log = logging.getLogger(__name__)

STALLED_RESTART_MIN = 120.0
"""A poll worker that sent no tree for this long (or 3 x the stall time, if longer) is
killed and replaced: it hangs, and only a new process can poll again."""


def _install_signals(stop: asyncio.Event) -> None:
    # The poller thread parses and rebuilds while requests are served: switch threads often
    # so a request waits at most about a millisecond for the interpreter.
    sys.setswitchinterval(0.001)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


class Backend:
    """Polling and tree building for an agent: in a child process or in a thread.

    `current` is the tree getter for the SNMP front end; `start` and `stop` run on the
    agent's loop. With `poll.isolation = "process"` (the default) a `TreeWorker` child polls
    and builds; with `"thread"` a Poller thread updates an in-process SnmpView. Either way each
    tree goes through one `PollWatch` (live health, stall detection, notifications), and a
    periodic check replaces a poll worker that hangs and a poll thread that ended.
    """

    def __init__(
        self,
        cfg: Config,
        send: Callable[[Oid, list[tuple[Oid, Value]]], Awaitable[object]],
        *,
        stalled_restart: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.view = SnmpView(thresholds=cfg.thresholds, enterprise=cfg.enterprise)
        self.base = self.view.base
        self.stale_after = stale_after(cfg.poll.interval, cfg.pmta.timeout, cfg.poll.jitter)
        self.stalled_restart = (
            stalled_restart
            if stalled_restart is not None
            else max(STALLED_RESTART_MIN, 3 * self.stale_after)
        )
        self.watch = PollWatch(
            self.view.tree,
            self._deliver,
            stale_after=self.stale_after,
            thresholds=cfg.thresholds,
            enterprise=cfg.enterprise,
        )
        self._send = send
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: list[tuple[Oid, list[tuple[Oid, Value]]]] = []
        self._watching: asyncio.Task[None] | None = None
        self.worker: TreeWorker | None = None
        self.poller: Poller | None = None
        self.outcomes: OutcomesFeed | None = None
        """The outcomes engine, with thread isolation (a poll worker runs its own)."""

    def current(self) -> OidTree:
        """The tree to answer from right now (health objects computed when read)."""
        return self.watch.tree

    def start(self) -> None:
        """Start polling (call on the agent's loop)."""
        self._loop = asyncio.get_running_loop()
        if self.cfg.poll.isolation == "process":
            self.worker = TreeWorker(
                self.cfg,
                self.view.tree,
                on_notification=self.watch.notification,
                on_tree=self._worker_tree,
            )
            self.worker.start()
            # Everything allocated so far lives as long as the agent: keep it out of the
            # collector's way so the serving process's rare full collections stay short.
            gc.freeze()
        else:
            self.outcomes = OutcomesFeed.of(self.cfg.acct)
            if self.outcomes is not None:
                self.view.outcomes = self.outcomes.view
                self.outcomes.start()
            self.view.senders.append(self._hold)
            self.poller = poller_from(self.cfg, self._thread_result)
            self.poller.start()
        self._watching = self._loop.create_task(self._watch())

    async def stop(self) -> None:
        """Stop polling and wait for the child or thread."""
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
        if self.worker is not None:
            await self.worker.stop()
        if self.poller is not None:
            await asyncio.to_thread(self.poller.stop)
        if self.outcomes is not None:
            await asyncio.to_thread(self.outcomes.stop)

    # -- trees and notifications ----------------------------------------------------------------

    def _worker_tree(self, tree: OidTree, info: Published) -> None:
        carry = info.carry
        result = carry.result if carry is not None else None
        self.watch.arrived(
            tree,
            api_reachable=info.api_reachable,
            last_success=getattr(result, "last_success", None),
            consecutive_failures=getattr(result, "consecutive_failures", 0),
            last_error=getattr(result, "last_error", None) or "",
            api_raised=carry is not None and Condition.API_DOWN.value in carry.raised,
        )

    def _hold(self, trap_oid: Oid, varbinds: list[tuple[Oid, Value]]) -> None:
        # The poll thread's notifications wait for their tree: both go to the loop together.
        self._held.append((trap_oid, varbinds))

    def _thread_result(self, result: PollResult) -> None:
        """`on_result` of the poll thread (that thread): build, then hand over to the loop."""
        self._held = []
        self.view.update(result)
        notes, self._held = self._held, []
        raised = Condition.API_DOWN in self.view.rules.raised
        tree = self.view.tree
        assert self._loop is not None

        def arrived() -> None:
            self.watch.arrived(
                tree,
                api_reachable=result.api_reachable,
                last_success=result.last_success,
                consecutive_failures=result.consecutive_failures,
                last_error=result.last_error or "",
                api_raised=raised,
            )
            for trap_oid, varbinds in notes:
                self.watch.notification(trap_oid, varbinds)

        self._loop.call_soon_threadsafe(arrived)

    def _deliver(self, trap_oid: Oid, varbinds: list[tuple[Oid, Value]]) -> None:
        """Send a notification (on the loop; never blocks, a failure is only logged)."""

        async def run() -> None:
            try:
                await self._send(trap_oid, varbinds)
            except Exception as exc:  # a lost trap is logged, never fatal
                log.warning("notification %s not sent: %s", ".".join(map(str, trap_oid)), exc)

        assert self._loop is not None
        self._loop.create_task(run())

    # -- the watch --------------------------------------------------------------------------------

    async def _watch(self) -> None:
        period = max(0.05, min(1.0, self.stale_after / 4))
        while True:
            await asyncio.sleep(period)
            try:
                self.check()
            except Exception:  # the watch must go on
                log.exception("checking the poller failed")

    def check(self) -> None:
        """Stall detection and repairs (run every second or so on the loop)."""
        self.watch.check()
        worker = self.worker
        if worker is not None and worker.pid is not None:
            since = time.monotonic() - max(self.watch.live.received, worker.spawned_at)
            if since > self.stalled_restart:
                worker.kill_stalled(f"sent no tree for {since:.0f} s")
        poller = self.poller
        if poller is not None and not poller.alive:
            log.error("the poll thread ended (%r): starting a new one", poller.died)
            fresh = poller_from(self.cfg, self._thread_result)
            fresh.result = poller.result
            self.poller = fresh
            fresh.start()


async def run_agentx(cfg: Config, *, stop: asyncio.Event | None = None) -> None:
    """Poll PowerMTA and serve the view through the master snmpd over AgentX until stopped."""
    from pmta_snmp.agentx.codec import VarBind
    from pmta_snmp.agentx.session import AgentXSession, Registration

    stop = stop or asyncio.Event()
    _install_signals(stop)

    async def send(trap_oid: Oid, varbinds: list[tuple[Oid, Value]]) -> None:
        # Kept by the session while snmpd is away and sent once registered again: a raised
        # condition is raised once, so its notification must not be lost.
        session.notify_later(trap_oid, [VarBind(o, v) for o, v in varbinds], sys_uptime=True)

    backend = Backend(cfg, send)
    session = AgentXSession(
        [Registration(backend.base, priority=cfg.agentx.priority)],
        backend.current,
        address=cfg.agentx.socket,
        agent_id=backend.base,
        description="pmta-snmp PowerMTA subagent",
        session_timeout=cfg.agentx.timeout,
        ping_interval=cfg.agentx.ping_interval,
    )
    session.start()
    backend.start()
    log.info(
        "pmta-snmp agentx: serving %s via %s, polling %s every %gs",
        ".".join(map(str, backend.base)),
        cfg.agentx.socket,
        redact_url(cfg.pmta.url),
        cfg.poll.interval,
    )
    try:
        await stop.wait()
    finally:
        log.info("pmta-snmp agentx: stopping")
        # The poller first: its end is then expected, not a loss to recover from, and the
        # last tree is still served until the session closes.
        await backend.stop()
        await session.stop()


async def run_standalone(
    cfg: Config, *, stop: asyncio.Event | None = None, ready: Callable[[str], None] | None = None
) -> None:
    """Poll PowerMTA and answer SNMP directly with pysnmp until stopped."""
    from pmta_snmp.standalone import StandaloneAgent

    stop = stop or asyncio.Event()
    _install_signals(stop)

    async def send(trap_oid: Oid, varbinds: list[tuple[Oid, Value]]) -> None:
        await agent.send_notification(trap_oid, varbinds)

    backend = Backend(cfg, send)
    agent = StandaloneAgent(backend.current, cfg.snmp, enterprise=cfg.enterprise,
                            state_dir=agent_state_dir(cfg.acct))
    await agent.start()
    backend.start()
    log.info(
        "pmta-snmp agent: answering SNMP on %s, polling %s every %gs",
        cfg.snmp.listen,
        redact_url(cfg.pmta.url),
        cfg.poll.interval,
    )
    if ready is not None:
        ready(cfg.snmp.listen)
    try:
        await stop.wait()
    finally:
        await backend.stop()
        await agent.stop()
