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
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from pmta_snmp.api import AsyncPmtaClient, ClientConfig, PmtaError, load_api_key
from pmta_snmp.api.client import MIB
from pmta_snmp.api.errors import redact_url
from pmta_snmp.config import ApiAccess, Config
from pmta_snmp.model import License, Snapshot

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

POLL_STAGES = 3
"""A poll asks `/status`, then the other pages at once, then the license: at most this many
client timeouts in a row, which bounds one poll (`Poller.poll_deadline`)."""
MAX_ERROR_CHARS = 300
"""An unexpected exception's text is cut to this in LastError and the log line."""


def stale_after(interval: float, timeout: float, jitter: float = 0.0) -> float:
    """Seconds without any poll result (good or bad) after which polling counts as stalled:
    two poll intervals (with their jitter) plus the longest one poll may take."""
    return 2 * interval * (1 + jitter) + POLL_STAGES * timeout


def describe_failure(exc: BaseException) -> str:
    """The LastError text of a poll that failed: a PmtaError's own message, otherwise the
    exception's type and text (an unexpected failure is still only a failed poll)."""
    if isinstance(exc, PmtaError):
        return str(exc)
    text = " ".join(str(exc).split())
    what = f"unexpected {type(exc).__name__} while polling"
    message = f"{what}: {text}" if text else what
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 3] + "..."
    return message


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


LICENSE_RETRY_S: Final = 300.0
"""After a `show license` that gave no license (refused key, an error), ask again this much
later (or after the license interval, if shorter), not a whole interval later."""


def license_asked_at(now: float, interval: float, got: bool, retry: float = LICENSE_RETRY_S
                     ) -> float:
    """The time to count the next `show license` from: `now` when it answered; when it gave
    nothing, a time such that the next one is due `retry` seconds from now."""
    return now if got else now - interval + min(interval, retry)


class Poller:
    """Polls every `interval` seconds (± jitter) until stopped.

    Nothing that happens in a poll ends the polling: any exception is a failed poll, with its
    text in `last_error`. `on_poll_start` is called in the poller thread as each poll begins
    (the worker times its polls with it); `transport` replaces the HTTP transport (tests).
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        interval: float,
        jitter: float = 0.1,
        license_interval: float = 3600.0,
        on_result: Callable[[PollResult], object] | None = None,
        on_poll_start: Callable[[], object] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.interval = interval
        self.jitter = jitter
        self.license_interval = license_interval
        self.license_retry = LICENSE_RETRY_S
        self.on_result = on_result
        self.on_poll_start = on_poll_start
        self.result: PollResult | None = None
        self.died: BaseException | None = None
        """What ended the polling thread, if anything did (it should not: see `alive`)."""
        self._transport = transport
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._license: License | None = None
        self._license_at: float | None = None
        self._rng = random.Random()  # noqa: S311 - poll jitter, not cryptography
        self._secret = urlsplit(config.url).password or ""
        self._list_sources: tuple[str, ...] = ()

    @property
    def poll_deadline(self) -> float:
        """The longest one poll may take before it counts as timed out."""
        return POLL_STAGES * self.config.timeout

    @property
    def stale_after(self) -> float:
        """Seconds without a poll result after which this poller counts as stalled."""
        return stale_after(self.interval, self.config.timeout, self.jitter)

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

    @property
    def alive(self) -> bool:
        """True while the polling thread runs (False before `start` and once it ended)."""
        return self._thread is not None and self._thread.is_alive()

    def poll_now(self) -> None:
        """Ask for a poll without waiting for the interval."""
        self._wake.set()

    def _thread_main(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    asyncio.run(self._run())
                except Exception:  # the loop itself failed (never a poll): start it again
                    log.exception("the poll loop failed; starting it again")
                    self._stop.wait(max(0.05, self.interval))
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: the thread ends
            self.died = exc
            log.error("the poll thread ends: %r", exc)

    async def _run(self) -> None:
        async with AsyncPmtaClient(self.config, transport=self._transport) as client:
            while not self._stop.is_set():
                await self.poll_once(client)
                delay = self.interval * (1 + self._rng.uniform(-self.jitter, self.jitter))
                self._wake.clear()
                if self._stop.is_set():  # stop() came during the poll: its wake-up is gone
                    break
                await asyncio.to_thread(self._wake.wait, max(0.05, delay))

    # -- one poll ------------------------------------------------------------------------------

    async def _snapshot(self, client: AsyncPmtaClient, with_license: bool) -> Snapshot:
        try:
            async with asyncio.timeout(self.poll_deadline):
                return await client.snapshot(with_license=with_license)
        except TimeoutError:
            raise PmtaError(
                f"the poll took longer than {self.poll_deadline:g} s "
                f"({POLL_STAGES} x the API timeout)"
            ) from None

    def _scrub(self, text: str) -> str:
        """`text` without the password of the configured URL (never shown anywhere)."""
        return text.replace(self._secret, "***") if self._secret else text

    def _log_list_sources(self, snap: Snapshot) -> None:
        """Say where the queue, domain and VirtualMTA lists come from, once and whenever
        that changes (a refused API key, a key added)."""
        lists = snap.lists
        kinds = (("queues", lists.queues), ("domains", lists.domains), ("VirtualMTAs",
                                                                       lists.vmtas))
        sources = tuple(f"{what} from {found.source.value}" for what, found in kinds if found)
        if sources == self._list_sources or not sources:
            return
        self._list_sources = sources
        if lists.source == "command":
            log.info("queues, domains and VirtualMTAs are listed through POST /command "
                     "(show queues|domains|vmtas --maxitems=%d)", self.config.max_list_items)
        elif lists.source == "page":
            log.info("queues, domains and VirtualMTAs are listed from the pages /queues, "
                     "/domains, /vmtas: PowerMTA shows there only its top "
                     "http-default-max-items rows (10 by default); an API key "
                     "(pmta.api_key_file) lists them all through POST /command")
        else:
            log.info("lists: %s (command: POST /command, page: the web pages' top rows)",
                     ", ".join(sources))

    async def poll_once(self, client: AsyncPmtaClient) -> PollResult:
        """Poll once, update counters, log state changes, hand the result on.

        Any exception of the poll (the API, the parser, a bug) makes a failed poll whose
        `last_error` says what happened: the previous good data stays and polling goes on.
        """
        if self.on_poll_start is not None:
            self.on_poll_start()
        now = datetime.now(UTC)
        prev = self.result
        loop_time = asyncio.get_running_loop().time()
        want_license = self.config.api_key is not None and (
            self._license_at is None or loop_time - self._license_at >= self.license_interval
        )
        try:
            snap = await self._snapshot(client, want_license)
        except Exception as exc:
            error = self._scrub(describe_failure(exc))
            result = PollResult(
                snapshot=prev.snapshot if prev else None,
                api_reachable=False,
                last_attempt=now,
                last_success=prev.last_success if prev else None,
                successes=prev.successes if prev else 0,
                failures=(prev.failures if prev else 0) + 1,
                consecutive_failures=(prev.consecutive_failures if prev else 0) + 1,
                last_error=error,
            )
            if prev is None or prev.api_reachable or prev.last_error != error:
                if isinstance(exc, PmtaError):
                    log.warning("PowerMTA API unreachable, serving last good data: %s", error)
                else:  # not an API failure: keep the traceback for a bug report
                    log.error("poll failed, serving last good data: %s", error,
                              exc_info=exc)
        else:
            if want_license:
                self._license_at = license_asked_at(loop_time, self.license_interval,
                                                    snap.license is not None, self.license_retry)
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
                    redact_url(self.config.url),
                    len(snap.queues),
                    snap.status.queued_recipients,
                )
            self._log_list_sources(snap)
        self.result = result
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:  # a consumer bug must not stop polling
                log.exception("processing a poll result failed")
        return result


def client_config_from(cfg: Config) -> ClientConfig:
    """The API client settings of the agent configuration."""
    p = cfg.pmta
    return client_config(p, p.url, load_api_key(p.api_key_file))


def client_config(access: ApiAccess, url: str, api_key: str | None) -> ClientConfig:
    """The API client settings for `url` with `[pmta]`'s or a probe module's options."""
    return ClientConfig(
        url=url,
        api_key=api_key,
        ca_file=access.ca_file,
        insecure=access.insecure,
        api_format=access.api_format,  # type: ignore[arg-type]
        flavor=access.api_flavor,  # type: ignore[arg-type]
        timeout=access.timeout,
        connect_timeout=min(5.0, access.timeout),
        max_page_bytes=access.max_page_mib * MIB,
        max_poll_bytes=access.max_poll_mib * MIB,
        max_list_items=access.max_list_items,
    )


def poller_from(
    cfg: Config,
    on_result: Callable[[PollResult], object],
    *,
    on_poll_start: Callable[[], object] | None = None,
) -> Poller:
    """A Poller with the agent configuration's API and timing settings."""
    return Poller(
        client_config_from(cfg),
        interval=cfg.poll.interval,
        jitter=cfg.poll.jitter,
        license_interval=cfg.poll.license_interval,
        on_result=on_result,
        on_poll_start=on_poll_start,
    )
