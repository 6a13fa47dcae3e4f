"""`/probe`: poll one PowerMTA of a fleet once per scrape (the Prometheus multi-target pattern).

The exporter hands each `/probe?target=URL&module=NAME` to `Prober.probe`, which checks the
target against the module's rules, polls it with the API client (its size limits, redirect
rules and TLS verification) under a bound on concurrent probes, and returns the Snapshot or why
there is none. Nothing here knows Prometheus: the exporter turns the result into metrics.

The exporter fetches the URL it is given, so a target is only ever an origin
(`scheme://host[:port]`, no credentials, path or query), and a module that sends an API key
only probes the targets its `targets` globs allow (403 otherwise): the key never goes to a host
an anonymous scraper chose.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import ipaddress
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from pmta_snmp.api import AsyncPmtaClient, PmtaError, load_api_key
from pmta_snmp.config import TARGET_PATTERN, ConfigError, ProbeModule, ProbeSection
from pmta_snmp.model import License, Snapshot
from pmta_snmp.poller import client_config, describe_failure, license_asked_at

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_MODULE",
    "ProbeRefused",
    "ProbeResult",
    "Prober",
    "parse_target",
    "target_matcher",
]

log = logging.getLogger(__name__)

DEFAULT_MODULE: Final = "default"
"""The module a probe without `module=` uses."""
MAX_TARGET_CHARS: Final = 512
REMEMBERED_TARGETS: Final = 4096
"""Targets whose license is kept between probes (the oldest forgotten first)."""
HANG_GRACE: Final = 5.0
"""Seconds past a probe's own timeout after which the server thread stops waiting for it."""
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?")
_IPV6 = re.compile(r"\[[0-9a-f:.]+\]")


class ProbeRefused(Exception):
    """The probe request itself is wrong (400) or not allowed (403): nothing was fetched."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_target(target: str | None) -> str:
    """The origin `scheme://host:port` (lower-case host, explicit port) of a probe's target.

    ProbeRefused(400) for anything else: no target, another scheme, credentials (a secret in
    the URL would land in Prometheus' configuration and target labels), a path, query or
    fragment (probes only ever ask PowerMTA's own pages at that origin), a malformed host.
    """
    if not target:
        raise ProbeRefused(400, "missing target (/probe?target=https://HOST:PORT)")
    if len(target) > MAX_TARGET_CHARS or not target.isascii() or not target.isprintable():
        raise ProbeRefused(400, "target is not a URL (too long or not printable ASCII)")
    try:
        parts = urlsplit(target)
        host = (parts.hostname or "").lower()
    except ValueError:  # an unbalanced or empty `[...]`: urlsplit refuses it
        raise ProbeRefused(400, "target has a malformed host name") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc:
        raise ProbeRefused(400, "target must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ProbeRefused(400, "credentials in the target URL are refused: use a module "
                                "with an api_key_file")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in target:
        raise ProbeRefused(400, "target must be scheme://host[:port], without path or query")
    shown = f"[{host}]" if ":" in host else host
    # urlsplit drops what follows `]` up to the port (`[::1]x:80` reads as [::1]:80): the
    # netloc must be the host itself, then at most a port.
    rest = parts.netloc.lower().removeprefix(shown)
    if (not (_HOSTNAME.fullmatch(host) or _IPV6.fullmatch(shown))
            or len(rest) == len(parts.netloc) or rest[:1] not in ("", ":")):
        raise ProbeRefused(400, "target has a malformed host name")
    shown = _canonical_host(shown)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise ProbeRefused(400, "target has a malformed port")
    return f"{scheme}://{shown}:{port}"


def target_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """Whether an origin (from `parse_target`) matches one of the `scheme://host[:port]` globs.

    `*` stands for any characters within one DNS label (never a `.` or `:`), `?` for one; a
    pattern without a port means the scheme's default port. `https://pmta-*.example.net:8080`
    matches `https://pmta-07.example.net:8080` and not `https://pmta-07.example.net.evil:8080`.
    """
    regexes = []
    for pattern in patterns:
        m = TARGET_PATTERN.fullmatch(pattern)
        if m is None:
            raise ConfigError(f"target pattern {pattern!r} is not scheme://host[:port]")
        scheme = m["scheme"].lower()
        port = m["port"] or str(_DEFAULT_PORTS[scheme])
        regexes.append(
            re.escape(scheme) + "://" + _glob(_canonical_host(m["host"]), "[^.:\\[\\]]")
            + ":" + _glob(port, "[0-9]")
        )
    if not regexes:
        return lambda origin: False
    joined = re.compile("|".join(f"(?:{r})" for r in regexes))
    return lambda origin: joined.fullmatch(origin) is not None


def _canonical_host(host: str) -> str:
    """`host` lower-cased, a bracketed IPv6 address in its compressed form (`[fd00::7]` for
    `[FD00:0::0007]`), so a target and a pattern match however either writes it."""
    host = host.lower()
    if host.startswith("[") and "*" not in host and "?" not in host:
        with contextlib.suppress(ValueError):
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
    return host


def _glob(text: str, char: str) -> str:
    return "".join(
        f"{char}*" if c == "*" else char if c == "?" else re.escape(c) for c in text
    )


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe: the snapshot (None when the target could not be polled), how long the probe
    took (waiting for a slot included) and why it failed."""

    target: str
    module: str
    snapshot: Snapshot | None
    duration: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Module:
    name: str
    settings: ProbeModule
    api_key: str | None
    allowed: Callable[[str], bool] | None
    """None: any target (a module without a key and without `targets`)."""


@dataclass(slots=True)
class _Remembered:
    """What is kept of a target between probes: its last license and when it was asked."""

    license: License | None = None
    license_at: float | None = None


@dataclass(slots=True)
class ProbeStats:
    """Counters of the prober for the exporter's own `/metrics` (read without a lock)."""

    probes: dict[str, int] = dataclasses.field(default_factory=dict)
    failures: dict[str, int] = dataclasses.field(default_factory=dict)
    in_flight: int = 0
    waiting: int = 0


class Prober:
    """Probes targets on an event loop thread of its own, at most `max_concurrent` at once.

    `probe()` is called from the HTTP server's threads and blocks until its probe is done.
    `transport` replaces the HTTP transport (tests).
    """

    def __init__(
        self, section: ProbeSection, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.max_concurrent = section.max_concurrent
        self.modules: dict[str, _Module] = {}
        for name, settings in section.modules.items():
            key = None
            if settings.api_key_file:  # never PMTA_API_KEY: that key is the local PowerMTA's
                try:
                    key = load_api_key(settings.api_key_file)
                except PmtaError as exc:
                    raise ConfigError(f"probe.modules.{name}: {exc}") from None
            allowed = target_matcher(settings.targets) if settings.targets else None
            if key is not None and allowed is None:  # config.validate says so too
                raise ConfigError(f"probe.modules.{name}: a module with a key needs targets")
            self.modules[name] = _Module(name, settings, key, allowed)
        self.stats = ProbeStats(probes=dict.fromkeys(self.modules, 0),
                                failures=dict.fromkeys(self.modules, 0))
        self._transport = transport
        self._remembered: OrderedDict[tuple[str, str], _Remembered] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._slots: asyncio.Semaphore | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the event loop thread the probes run on."""
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            self._slots = asyncio.Semaphore(self.max_concurrent)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=main, name="pmta-probe", daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        """Cancel the probes under way and end the loop thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            asyncio.get_running_loop().stop()

        asyncio.run_coroutine_threadsafe(cancel_all(), loop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()

    def __enter__(self) -> Prober:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one probe -------------------------------------------------------------------------------

    def check(self, target: str | None, module: str | None) -> tuple[_Module, str]:
        """(module, origin) of a probe request, or ProbeRefused (400 bad request, 403 a target
        the module may not be used for)."""
        name = module if module else DEFAULT_MODULE
        mod = self.modules.get(name)
        if mod is None:
            if module:
                raise ProbeRefused(400, f"unknown module {name[:64]!r}")
            raise ProbeRefused(400, "no module given and no module named 'default'")
        origin = parse_target(target)
        if mod.allowed is not None and not mod.allowed(origin):
            raise ProbeRefused(403, f"module {name!r} may not probe {origin}: not in its targets")
        return mod, origin

    def probe(self, target: str | None, module: str | None = None,
              timeout: float | None = None) -> ProbeResult:
        """Poll `target` once with `module`'s settings (blocking; from a server thread).

        `timeout` (e.g. Prometheus' scrape timeout less a margin) shortens the module's own:
        waiting for a free slot and the poll both count against it. ProbeRefused when the
        request is refused; any failure to poll is a ProbeResult with `error`.
        """
        mod, origin = self.check(target, module)
        limit = mod.settings.timeout if timeout is None else min(timeout, mod.settings.timeout)
        loop = self._loop
        if loop is None:
            raise RuntimeError("the prober is not started")
        started = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(self._probe(mod, origin, limit, started), loop)
        try:
            return future.result(limit + HANG_GRACE)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            future.cancel()
            return ProbeResult(origin, mod.name, None, time.monotonic() - started,
                               "the probe did not end (the probe loop is stuck or stopping)")

    async def _probe(self, mod: _Module, origin: str, limit: float,
                     started: float) -> ProbeResult:
        stats = self.stats
        stats.probes[mod.name] += 1
        memory = self._memory(mod.name, origin)
        snap: Snapshot | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(max(0.0, limit - (time.monotonic() - started))):
                snap = await self._poll(mod, origin, memory)
        except TimeoutError:
            error = f"timed out after {limit:g} s (waiting for a slot and polling)"
        except Exception as exc:  # any failure is a failed probe (pmta_up 0), never a 500
            error = describe_failure(exc)
            if not isinstance(exc, PmtaError):  # not the target's fault: keep the traceback
                log.error("probe of %s failed unexpectedly: %s", origin, error, exc_info=exc)
        duration = time.monotonic() - started
        if error is not None:
            stats.failures[mod.name] += 1
            log.info("probe of %s (module %s) failed: %s", origin, mod.name, error)
        return ProbeResult(origin, mod.name, snap, duration, error)

    async def _poll(self, mod: _Module, origin: str, memory: _Remembered) -> Snapshot:
        assert self._slots is not None
        self.stats.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.stats.waiting -= 1
        self.stats.in_flight += 1
        try:
            s = mod.settings
            config = client_config(s, origin, mod.api_key)
            now = time.monotonic()
            want_license = mod.api_key is not None and s.license_interval > 0 and (
                memory.license_at is None or now - memory.license_at >= s.license_interval
            )
            async with AsyncPmtaClient(config, transport=self._transport) as client:
                snap = await client.snapshot(with_license=want_license)
        finally:
            self.stats.in_flight -= 1
            self._slots.release()
        if want_license:
            memory.license_at = license_asked_at(now, s.license_interval,
                                                 snap.license is not None)
            if snap.license is not None:
                memory.license = snap.license
        if snap.license is None and memory.license is not None:
            snap = dataclasses.replace(snap, license=memory.license)
        return snap

    def _memory(self, module: str, origin: str) -> _Remembered:
        key = (module, origin)
        memory = self._remembered.get(key)
        if memory is None:
            memory = self._remembered[key] = _Remembered()
            while len(self._remembered) > REMEMBERED_TARGETS:
                self._remembered.popitem(last=False)
        else:
            self._remembered.move_to_end(key)
        return memory

    def module_names(self) -> Mapping[str, bool]:
        """Each module's name and whether it sends an API key (for the start-up log line)."""
        return {name: m.api_key is not None for name, m in self.modules.items()}
