"""Running the agents: AgentX subagent (`pmta-snmp agentx`) and standalone (`pmta-snmp agent`).

Both share one Poller and one SnmpView; only the SNMP front end differs. SIGTERM and SIGINT
close the AgentX session cleanly (Close reason shutdown) and stop the poller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from pmta_snmp.api import ClientConfig, load_api_key
from pmta_snmp.config import Config
from pmta_snmp.mib.snapshot import Oid, Value
from pmta_snmp.poller import Poller, PollResult
from pmta_snmp.service import SnmpView

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
    """Schedule an async send on the agent's loop from the poller thread (never blocks)."""

    def sender(trap_oid: Oid, varbinds: list[tuple[Oid, Value]]) -> None:
        async def run() -> None:
            try:
                await send(trap_oid, varbinds)
            except Exception as exc:  # a lost trap is logged, never fatal
                log.warning("notification %s not sent: %s", ".".join(map(str, trap_oid)), exc)

        loop.call_soon_threadsafe(lambda: loop.create_task(run()))

    return sender


async def run_agentx(cfg: Config, *, stop: asyncio.Event | None = None) -> None:
    """Poll PowerMTA and serve the view through the master snmpd over AgentX until stopped."""
    from pmta_snmp.agentx.codec import VarBind
    from pmta_snmp.agentx.session import AgentXSession, Registration

    stop = stop or asyncio.Event()
    _install_signals(stop)
    view = SnmpView(thresholds=cfg.thresholds, enterprise=cfg.enterprise)
    session = AgentXSession(
        [Registration(view.base, priority=cfg.agentx.priority)],
        view.current,
        address=cfg.agentx.socket,
        agent_id=view.base,
        description="pmta-snmp PowerMTA subagent",
        session_timeout=cfg.agentx.timeout,
        ping_interval=cfg.agentx.ping_interval,
    )

    async def send(trap_oid: Oid, varbinds: list[tuple[Oid, Value]]) -> None:
        await session.notify(trap_oid, [VarBind(o, v) for o, v in varbinds], sys_uptime=True)

    view.senders.append(_threadsafe_sender(asyncio.get_running_loop(), send))
    poller = poller_from(cfg, view.update)
    session.start()
    poller.start()
    log.info(
        "pmta-snmp agentx: serving %s via %s, polling %s every %gs",
        ".".join(map(str, view.base)),
        cfg.agentx.socket,
        cfg.pmta.url,
        cfg.poll.interval,
    )
    try:
        await stop.wait()
    finally:
        log.info("pmta-snmp agentx: stopping")
        await session.stop()
        await asyncio.to_thread(poller.stop)


async def run_standalone(
    cfg: Config, *, stop: asyncio.Event | None = None, ready: Callable[[str], None] | None = None
) -> None:
    """Poll PowerMTA and answer SNMP directly with pysnmp until stopped."""
    from pmta_snmp.standalone import StandaloneAgent

    stop = stop or asyncio.Event()
    _install_signals(stop)
    view = SnmpView(thresholds=cfg.thresholds, enterprise=cfg.enterprise)
    agent = StandaloneAgent(view.current, cfg.snmp)
    await agent.start()
    view.senders.append(_threadsafe_sender(asyncio.get_running_loop(), agent.send_notification))
    poller = poller_from(cfg, view.update)
    poller.start()
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
        await asyncio.to_thread(poller.stop)
        await agent.stop()
