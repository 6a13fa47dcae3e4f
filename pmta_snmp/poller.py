"""Polls PowerMTA on a timer, keeps the last good snapshot and the health of the API.

The poller runs in its own thread with its own event loop, so fetching, parsing and building the
next OID tree never delay the AgentX (or SNMP, or HTTP) request path. Every poll, good or bad,
ends in `on_result(PollResult)`; consumers swap their published state atomically there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pmta_snmp.api import AsyncPmtaClient, ClientConfig, PmtaError
from pmta_snmp.model import License, Snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PollResult:
    """The last good data and the health of the API after one poll attempt."""

    snapshot: Snapshot | None
    api_reachable: bool
    last_attempt: datetime
    last_success: datetime | None
    successes: int
    failures: int
    consecutive_failures: int
    last_error: str | None

    def data_age(self, now: datetime | None = None) -> float | None:
        """Seconds since the last successful poll (None before the first one)."""
        if self.last_success is None:
            return None
        now = now or datetime.now(UTC)
        return max(0.0, (now - self.last_success).total_seconds())


class Poller:
    """Polls every `interval` seconds (± jitter) until stopped."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        interval: float,
        jitter: float = 0.1,
        license_interval: float = 3600.0,
        on_result: Callable[[PollResult], object] | None = None,
    ) -> None:
        self.config = config
        self.interval = interval
        self.jitter = jitter
        self.license_interval = license_interval
        self.on_result = on_result
        self.result: PollResult | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._license: License | None = None
        self._license_at: float | None = None
        self._rng = random.Random()  # noqa: S311 - poll jitter, not cryptography

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start polling in a background thread (first poll immediately)."""
        self._thread = threading.Thread(target=self._thread_main, name="pmta-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and wait for the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def poll_now(self) -> None:
        """Ask for a poll without waiting for the interval."""
        self._wake.set()

    def _thread_main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        async with AsyncPmtaClient(self.config) as client:
            while not self._stop.is_set():
                await self.poll_once(client)
                delay = self.interval * (1 + self._rng.uniform(-self.jitter, self.jitter))
                self._wake.clear()
                await asyncio.to_thread(self._wake.wait, max(0.05, delay))

    # -- one poll ------------------------------------------------------------------------------

    async def poll_once(self, client: AsyncPmtaClient) -> PollResult:
        """Poll once, update counters, log state changes, hand the result on."""
        now = datetime.now(UTC)
        prev = self.result
        loop_time = asyncio.get_running_loop().time()
        want_license = self.config.api_key is not None and (
            self._license_at is None or loop_time - self._license_at >= self.license_interval
        )
        try:
            snap = await client.snapshot(with_license=want_license)
        except PmtaError as exc:
            result = PollResult(
                snapshot=prev.snapshot if prev else None,
                api_reachable=False,
                last_attempt=now,
                last_success=prev.last_success if prev else None,
                successes=prev.successes if prev else 0,
                failures=(prev.failures if prev else 0) + 1,
                consecutive_failures=(prev.consecutive_failures if prev else 0) + 1,
                last_error=str(exc),
            )
            if prev is None or prev.api_reachable or prev.last_error != str(exc):
                log.warning("PowerMTA API unreachable, serving last good data: %s", exc)
        else:
            if want_license:
                self._license_at = loop_time
                if snap.license is not None:
                    self._license = snap.license
            if snap.license is None and self._license is not None:
                snap = dataclasses.replace(snap, license=self._license)
            result = PollResult(
                snapshot=snap,
                api_reachable=True,
                last_attempt=now,
                last_success=snap.taken_at or now,
                successes=(prev.successes if prev else 0) + 1,
                failures=prev.failures if prev else 0,
                consecutive_failures=0,
                last_error=prev.last_error if prev else None,
            )
            if prev is None or not prev.api_reachable:
                log.info(
                    "PowerMTA API reachable at %s: %d queues, %d recipients queued",
                    self.config.url,
                    len(snap.queues),
                    snap.status.queued_recipients,
                )
        self.result = result
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:  # a consumer bug must not stop polling
                log.exception("processing a poll result failed")
        return result
