"""Running the agents: AgentX subagent (`pmta-snmp agentx`) and standalone (`pmta-snmp agent`).

Both share one Poller and one SnmpView; only the SNMP front end differs. SIGTERM and SIGINT
close the AgentX session cleanly (Close reason shutdown) and stop the poller.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from pmta_snmp.api import ClientConfig, load_api_key
from pmta_snmp.config import Config
from pmta_snmp.mib.snapshot import Oid, OidTree, Value
from pmta_snmp.poller import Poller, PollResult
from pmta_snmp.service import SnmpView
from pmta_snmp.worker import TreeWorker

log = logging.getLogger(__name__)


def client_config_from(cfg: Config) -> ClientConfig:
    """The API client settings of the agent configuration."""
    p = cfg.pmta
    return ClientConfig(
        url=p.url,
        api_key=load_api_key(p.api_key_file),
        ca_file=p.ca_file,
        insecure=p.insecure,
        api_format=p.api_format,  # type: ignore[arg-type]
        flavor=p.api_flavor,  # type: ignore[arg-type]
        timeout=p.timeout,
        connect_timeout=min(5.0, p.timeout),
    )


def poller_from(cfg: Config, on_result: Callable[[PollResult], object]) -> Poller:
    """A Poller with the agent configuration's API and timing settings."""
    return Poller(
        client_config_from(cfg),
        interval=cfg.poll.interval,
        jitter=cfg.poll.jitter,
        license_interval=cfg.poll.license_interval,
        on_result=on_result,
    )


def _install_signals(stop: asyncio.Event) -> None:
    # The poller thread parses and rebuilds while requests are served: switch threads often
    # so a request waits at most about a millisecond for the interpreter.
    sys.setswitchinterval(0.001)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def _threadsafe_sender(
    loop: asyncio.AbstractEventLoop,
    send: Callable[[Oid, list[tuple[Oid, Value]]], Awaitable[object]],
) -> Callable[[Oid, list[tuple[Oid, Value]]], None]:
    """Schedule an async send on the agent's loop from any thread (never blocks)."""

    def sender(trap_oid: Oid, varbinds: list[tuple[Oid, Value]]) -> None:
        async def run() -> None:
            try:
                await send(trap_oid, varbinds)
            except Exception as exc:  # a lost trap is logged, never fatal
                log.warning("notification %s not sent: %s", ".".join(map(str, trap_oid)), exc)

        loop.call_soon_threadsafe(lambda: loop.create_task(run()))

    return sender


class Backend:
    """Polling and tree building for an agent: in a child process or in a thread.

    `current` is the tree getter for the SNMP front end; `start` and `stop` run on the
    agent's loop. With `poll.isolation = "process"` (the default) a `TreeWorker` child polls
    and builds; with `"thread"` a Poller thread updates an in-process SnmpView.
    """

    def __init__(
        self, cfg: Config, send: Callable[[Oid, list[tuple[Oid, Value]]], Awaitable[object]]
    ) -> None:
        self.cfg = cfg
        self.view = SnmpView(thresholds=cfg.thresholds, enterprise=cfg.enterprise)
        self.base = self.view.base
        self._send = send
        self.worker: TreeWorker | None = None
        self.poller: Poller | None = None

    def current(self) -> OidTree:
        """The tree to answer from right now."""
        if self.worker is not None:
            return self.worker.tree
        return self.view.tree

    def start(self) -> None:
        """Start polling (call on the agent's loop)."""
        sender = _threadsafe_sender(asyncio.get_running_loop(), self._send)
        if self.cfg.poll.isolation == "process":
            self.worker = TreeWorker(self.cfg, self.view.tree, on_notification=sender)
            self.worker.start()
            # Everything allocated so far lives as long as the agent: keep it out of the
            # collector's way so the serving process's rare full collections stay short.
            gc.freeze()
        else:
            self.view.senders.append(sender)
            self.poller = poller_from(self.cfg, self.view.update)
            self.poller.start()

    async def stop(self) -> None:
        """Stop polling and wait for the child or thread."""
        if self.worker is not None:
            await self.worker.stop()
        if self.poller is not None:
            await asyncio.to_thread(self.poller.stop)


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
        cfg.pmta.url,
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
    agent = StandaloneAgent(backend.current, cfg.snmp)
    await agent.start()
    backend.start()
    log.info(
        "pmta-snmp agent: answering SNMP on %s, polling %s every %gs",
        cfg.snmp.listen,
        cfg.pmta.url,
        cfg.poll.interval,
    )
    if ready is not None:
        ready(cfg.snmp.listen)
    try:
        await stop.wait()
    finally:
        await backend.stop()
        await agent.stop()
