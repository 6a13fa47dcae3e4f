"""Prometheus endpoint: `pmta-snmp exporter --listen 127.0.0.1:9099` serves `/metrics`, `/probe`.

The same Poller and model as the SNMP agents feed a custom `prometheus_client` collector.
Each poll result is turned into metric families once, in the poller thread
(`PmtaCollector.update`); a scrape only copies them and adds what must be true at the moment
of the scrape: `pmta_data_age_seconds` (now minus the last good poll) and `pmta_up` (0 as well
once no poll result came for longer than two intervals plus a poll's time: polling stalled).
Scrapes of `/metrics` are cheap and never call PowerMTA.

`/probe?target=URL&module=NAME` (the Prometheus multi-target pattern) polls one PowerMTA of a
fleet per scrape (`pmta_snmp.probe`) and answers the same families of what it reports
(`PmtaCollector.snapshot_families`), `pmta_up` and `pmta_probe_duration_seconds`.

Per-domain, per-VirtualMTA and per-queue series are capped at `exporter_max_series` label sets
per metric (`pmta_snmp.config.Config`): the largest by queued recipients are kept and the rest
are summed into one series labelled `(other)`; `pmta_exporter_other_items{kind}` says how many
went there. Names follow the Prometheus conventions: base units (`_bytes`, `_seconds`),
`_total` for counters, and `_ratio` for fractions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Final, Protocol, TypeVar, cast

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from pmta_snmp.clock import Since, utc_now
from pmta_snmp.metrics import by_name
from pmta_snmp.model import QueueMode, Snapshot, warning_kinds

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from pmta_snmp.config import Config
    from pmta_snmp.outcomes.engine import OutcomesEngine
    from pmta_snmp.poller import Poller, PollResult
    from pmta_snmp.probe import Prober

__all__ = [
    "OTHER",
    "Exporter",
    "PmtaCollector",
    "cap_rows",
    "config_with_listen",
    "parse_listen",
    "run_exporter",
]

log = logging.getLogger(__name__)

_CATALOGUE: Final = by_name()
OTHER: Final = "(other)"
"""Label value of the series that sums the items beyond the cap."""

class _RowLike(Protocol):
    """What the per-item series read from a Domain, Vmta or Queue."""

    @property
    def name(self) -> str: ...
    @property
    def rcp(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def conn(self) -> int: ...


_Row = TypeVar("_Row", bound=_RowLike)


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT` -> (host, port); ValueError otherwise."""
    text = listen.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"listen address {listen!r}: expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"listen address {listen!r}: expected HOST:PORT")
    if not host:
        raise ValueError(f"listen address {listen!r}: the host is missing (e.g. 127.0.0.1)")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"listen address {listen!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"listen address {listen!r}: port out of range")
    return host, port


def cap_rows(rows: Sequence[_Row], max_series: int) -> tuple[list[_Row], list[_Row]]:
    """(kept, folded): at most `max_series` label sets in all, one of them the "other" sum.

    Kept are the rows with most queued recipients (ties by name); with `max_series` 0 or
    more than the rows, everything is kept.
    """
    if max_series <= 0 or len(rows) <= max_series:
        return list(rows), []
    ranked = sorted(rows, key=lambda r: (-r.rcp, r.name))
    keep = max(0, max_series - 1)
    return sorted(ranked[:keep], key=lambda r: r.name), ranked[keep:]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """Metric families built from one poll result (everything but the data age)."""

    result: PollResult
    families: tuple[Metric, ...]


def _gauge(name: str, doc: str, value: float, unit: str = "") -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value, unit=unit)


def _labelled_gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _counter(name: str, doc: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


class PmtaCollector(Collector):
    """A prometheus_client collector over the latest PollResult (`update` is `on_result`).

    `stale_after`: seconds after a poll attempt without a newer result for which `pmta_up`
    reads 0 (None: never).
    """

    def __init__(
        self,
        *,
        max_series: int = 500,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
        stale_after: float | None = None,
    ) -> None:
        self.max_series = max_series
        self.stale_after = stale_after
        self._wall = wall
        # The age of the data and the silence since the last attempt grow on the monotonic
        # clock (pmta_snmp.clock): a step of the wall clock must not fake or hide a stall.
        self._success = Since(clock=clock, wall=wall)
        self._attempt = Since(clock=clock, wall=wall)
        self._lock = threading.Lock()
        self._prepared: _Prepared | None = None
        self._logged_warnings: tuple[str, ...] = ()
        self._stalled_result: PollResult | None = None

    # -- poller side ---------------------------------------------------------------------

    def update(self, result: PollResult) -> None:
        """Build the families for `result` (poller thread) and publish them atomically."""
        if result.api_reachable and result.snapshot is not None:
            self._log_warnings(result.snapshot.warnings)
        families = tuple(self._build(result))
        prepared = _Prepared(result, families)
        with self._lock:
            self._prepared = prepared
            self._success.see(result.last_success)
            self._attempt.see(result.last_attempt)

    def _log_warnings(self, warnings: tuple[str, ...]) -> None:
        """Log the warnings of a good poll when they change, numbers aside (not on every
        poll)."""
        kinds = warning_kinds(warnings)
        if kinds == self._logged_warnings:
            return
        self._logged_warnings = kinds
        if warnings:
            log.warning("PowerMTA's answer has %d warning(s): %s", len(warnings),
                        "; ".join(warnings))
        else:
            log.info("PowerMTA's answer has no warnings any more")

    def _build(self, result: PollResult) -> Iterator[Metric]:
        polls = result.successes + result.failures
        yield _single_counter("pmta_polls", "Polls of the PowerMTA API by the exporter.", polls)
        yield _single_counter(
            "pmta_poll_errors", "Failed polls of the PowerMTA API.", result.failures
        )
        yield _gauge(
            "pmta_poll_consecutive_errors",
            "Failed polls in a row (0 after a good one).",
            result.consecutive_failures,
        )
        if result.last_success is not None:
            yield _gauge(
                "pmta_last_success_timestamp_seconds",
                "When the exporter last reached the PowerMTA API (Unix time).",
                result.last_success.timestamp(),
            )
        snap = result.snapshot
        if snap is not None:
            yield from self.snapshot_families(snap)

    def snapshot_families(self, snap: Snapshot) -> Iterator[Metric]:
        """The families of what one snapshot reports: `/metrics` builds them after each poll
        of the local PowerMTA, `/probe` for each probed one."""
        yield _gauge(
            "pmta_poll_warnings",
            "Warnings of the last good poll: values PowerMTA sent unusable or not at all "
            "(left out), a refused `show license`; the exporter logs them.",
            len(snap.warnings),
        )
        st = snap.status
        rt = st.runtime
        info = _labelled_gauge(
            "pmta_info", "PowerMTA product, version and host (value 1).",
            ("product", "version", "host"),
        )
        info.add_metric([rt.product, rt.version or "", rt.host_name or ""], 1)
        yield info
        if rt.uptime_seconds is not None:
            yield _gauge("pmta_uptime_seconds", "Seconds since PowerMTA started.",
                         rt.uptime_seconds)
        yield _gauge("pmta_shutting_down", "1 while PowerMTA is shutting down.",
                     1 if rt.shutting_down else 0)

        rcpt = _labelled_gauge("pmta_queued_recipients",
                               "Recipients queued, per queue type (smtp = the queue depth).",
                               ("type",))
        doms = _labelled_gauge("pmta_queued_domains", "Domains with mail queued, per queue type.",
                               ("type",))
        size = _labelled_gauge("pmta_queued_bytes", "Bytes queued, per queue type.", ("type",))
        types = list(st.queue_types)
        if not any(q.name == "smtp" for q in types):
            types.append(st.queue_type("smtp"))
        for q in types:
            rcpt.add_metric([q.name], q.rcp)
            doms.add_metric([q.name], q.dom)
            size.add_metric([q.name], q.bytes)
        yield from (rcpt, doms, size)

        t = st.traffic.total
        for name, doc, inbound, outbound in (
            ("pmta_traffic_recipients", "Recipients since PowerMTA started.",
             t.inbound.rcp, t.outbound.rcp),
            ("pmta_traffic_messages", "Messages since PowerMTA started.",
             t.inbound.msg, t.outbound.msg),
            ("pmta_traffic_bytes", "Bytes since PowerMTA started.",
             t.inbound.bytes, t.outbound.bytes),
        ):
            fam = _counter(name, doc, ("direction",))
            fam.add_metric(["in"], inbound)
            fam.add_metric(["out"], outbound)
            yield fam
        yield _single_counter("pmta_bounces_processed", "Bounces processed since PowerMTA "
                              "started.", t.bounce_processed)
        yield _single_counter("pmta_feedback_loop_processed", "Feedback-loop reports processed "
                              "since PowerMTA started.", t.feedback_loop_processed)
        yield _gauge("pmta_outbound_messages_per_second",
                     "Messages delivered per second over the last minute.",
                     st.traffic.messages_per_second)
        yield _gauge("pmta_outbound_recipients_per_second",
                     "Recipients delivered per second over the last minute.",
                     st.traffic.recipients_per_second)

        conn = _labelled_gauge("pmta_smtp_connections", "Open SMTP connections.", ("direction",))
        conn_max = _labelled_gauge("pmta_smtp_connections_max",
                                   "Configured maximum of SMTP connections.", ("direction",))
        for direction, counts in (("in", st.conn.smtp_in), ("out", st.conn.smtp_out)):
            conn.add_metric([direction], counts.cur)
            conn_max.add_metric([direction], counts.max)
        yield from (conn, conn_max)

        yield _gauge("pmta_spool_initialization_ratio",
                     "Spool initialisation progress (1 = done).", min(st.spool.init_pct, 100) / 100)
        yield _gauge("pmta_spool_files_in_use", "Spool files in use.", st.spool.files_in_use)

        if snap.license is not None:
            today = rt.time_now.date() if rt.time_now else self._wall().date()
            days = snap.license.days_left(today)
            yield _gauge("pmta_license_days_left",
                         "Days until the PowerMTA license expires (+Inf: never).",
                         math.inf if days is None else days)

        yield _gauge("pmta_domains", "Destination domains PowerMTA reports.", len(snap.domains))
        yield _gauge("pmta_vmtas", "VirtualMTAs PowerMTA reports.", len(snap.vmtas))
        yield _gauge("pmta_queues", "Queues (domain/vmta) PowerMTA reports.", len(snap.queues))
        yield from _list_families(snap)
        yield from self._per_item(snap)

    def _per_item(self, snap: Snapshot) -> Iterator[Metric]:
        other = _labelled_gauge(
            "pmta_exporter_other_items",
            f"Items beyond the series cap summed into the {OTHER} series.", ("kind",),
        )
        dims: tuple[tuple[str, Sequence[_RowLike]], ...] = (
            ("domain", snap.domains),
            ("vmta", snap.vmtas),
        )
        for kind, rows in dims:
            kept, folded = cap_rows(rows, self.max_series)
            other.add_metric([kind], len(folded))
            rcpt = _labelled_gauge(f"pmta_{kind}_queued_recipients",
                                   f"Recipients queued per {kind}.", (kind,))
            size = _labelled_gauge(f"pmta_{kind}_queued_bytes", f"Bytes queued per {kind}.",
                                   (kind,))
            conn = _labelled_gauge(f"pmta_{kind}_connections",
                                   f"Open SMTP connections per {kind}.", (kind,))
            for row in kept:
                rcpt.add_metric([row.name], row.rcp)
                size.add_metric([row.name], row.bytes)
                conn.add_metric([row.name], row.conn)
            if folded:
                rcpt.add_metric([OTHER], sum(r.rcp for r in folded))
                size.add_metric([OTHER], sum(r.bytes for r in folded))
                conn.add_metric([OTHER], sum(r.conn for r in folded))
            yield from (rcpt, size, conn)

        kept_q, folded_q = cap_rows(snap.queues, self.max_series)
        other.add_metric(["queue"], len(folded_q))
        labels = ("queue", "domain", "vmta")
        rcpt = _labelled_gauge("pmta_queue_recipients", "Recipients per queue.", labels)
        size = _labelled_gauge("pmta_queue_bytes", "Bytes per queue.", labels)
        conn = _labelled_gauge("pmta_queue_connections", "Open connections per queue.", labels)
        paused = _labelled_gauge("pmta_queue_paused",
                                 f"1 when the queue is paused ({OTHER}: how many are).", labels)
        backoff = _labelled_gauge("pmta_queue_backoff",
                                  f"1 when the queue is in backoff ({OTHER}: how many are).",
                                  labels)
        for q in kept_q:
            values = [q.name, q.domain, q.vmta]
            rcpt.add_metric(values, q.rcp)
            size.add_metric(values, q.bytes)
            conn.add_metric(values, q.conn)
            paused.add_metric(values, 1 if q.paused else 0)
            backoff.add_metric(values, 1 if q.mode is QueueMode.BACKOFF else 0)
        if folded_q:
            values = [OTHER, OTHER, OTHER]
            rcpt.add_metric(values, sum(q.rcp for q in folded_q))
            size.add_metric(values, sum(q.bytes for q in folded_q))
            conn.add_metric(values, sum(q.conn for q in folded_q))
            paused.add_metric(values, sum(1 for q in folded_q if q.paused))
            backoff.add_metric(values, sum(1 for q in folded_q if q.mode is QueueMode.BACKOFF))
        yield from (rcpt, size, conn, paused, backoff, other)

    # -- scrape side -----------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        """The families of the last poll plus `pmta_up` and the data age as of now."""
        with self._lock:
            prepared = self._prepared
            silence = self._attempt.age() or 0.0
            age = self._success.age()
        if prepared is None:
            yield _gauge("pmta_up", "1 when the last poll of the PowerMTA API succeeded (0 too "
                         "when polling has stalled).", 0)
            return
        result = prepared.result
        stalled = self.stale_after is not None and silence > self.stale_after
        if stalled and self._stalled_result is not result:  # one line per stall
            self._stalled_result = result
            log.error("no poll result for %.0f s: polling has stalled, pmta_up is 0", silence)
        yield _gauge("pmta_up", "1 when the last poll of the PowerMTA API succeeded (0 too when "
                     "polling has stalled).", 1 if result.api_reachable and not stalled else 0)
        if age is not None:
            yield _gauge("pmta_data_age_seconds",
                         "Seconds since the exporter last reached the PowerMTA API.", age)
        for family in prepared.families:
            if family.samples:
                yield family

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the registry must call `collect` (families vary with the data)."""
        return []


def _list_families(snap: Snapshot) -> Iterator[Metric]:
    """How complete the per-item lists are: rows listed (and where from), rows known."""
    listed, known = (_labelled_gauge(m.name, m.help, m.labels) for m in (
        _CATALOGUE["pmta_list_rows"], _CATALOGUE["pmta_list_rows_known"]))
    lists = snap.lists
    for kind, found in (("queue", lists.queues), ("domain", lists.domains),
                        ("vmta", lists.vmtas)):
        if found is None:
            continue
        listed.add_metric([kind, found.source.value], found.listed)
        if found.known is not None:
            known.add_metric([kind], found.known)
    yield from (listed, known)


def _single_counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class ProbeStatsCollector(Collector):
    """The prober's own counters on `/metrics`: probes and failed probes per module, probes
    polling and waiting for a slot now, and the bound."""

    def __init__(self, prober: Prober) -> None:
        self.prober = prober

    def collect(self) -> Iterable[Metric]:
        """Read the counters as of now (no lock: each value is one int)."""
        stats = self.prober.stats
        probes = _counter("pmta_exporter_probes", "Probes (/probe requests polled) per module.",
                          ("module",))
        failures = _counter("pmta_exporter_probe_failures",
                            "Probes that could not poll their target (pmta_up 0), per module.",
                            ("module",))
        for name in self.prober.modules:
            probes.add_metric([name], stats.probes[name])
            failures.add_metric([name], stats.failures[name])
        yield from (probes, failures)
        yield _gauge("pmta_exporter_probes_in_flight", "Probes polling their target now.",
                     stats.in_flight)
        yield _gauge("pmta_exporter_probes_waiting",
                     "Probes waiting for a slot (probe.max_concurrent are polling).",
                     stats.waiting)
        yield _gauge("pmta_exporter_probe_max_concurrent",
                     "Probes that may poll at once (probe.max_concurrent).",
                     self.prober.max_concurrent)

    def describe(self) -> Iterable[Metric]:
        """Nothing up front (see PmtaCollector.describe)."""
        return []


_WsgiResponse = tuple[str, list[tuple[str, str]], bytes]

PROBE_TIMEOUT_MARGIN: Final = 0.5
"""Seconds a probe leaves of Prometheus' scrape timeout for the answer to travel (at most half
of it), as blackbox_exporter does."""
_REASONS: Final = {400: "Bad Request", 403: "Forbidden", 404: "Not Found",
                   405: "Method Not Allowed"}


class Exporter:
    """The HTTP server, the poller of the local PowerMTA and the prober of `/probe`.

    `start()` binds, then polls; `stop()` ends all. The local PowerMTA is polled unless probe
    modules are configured and no `[pmta] url` is (a fleet exporter that serves `/probe` only;
    its `/metrics` then has the prober's own counters). `/probe` answers 404 without modules.
    """

    def __init__(self, cfg: Config, *, listen: str | None = None) -> None:
        self.cfg = cfg
        self.host, self.requested_port = parse_listen(listen or cfg.exporter_listen)
        self.collector = PmtaCollector(max_series=cfg.exporter_max_series)
        self.polls_local = cfg.pmta_url_set or not cfg.probe.modules
        self.registry = CollectorRegistry(auto_describe=False)
        if self.polls_local:
            self.registry.register(self.collector)
        self.prober: Prober | None = None
        if cfg.probe.modules:
            from pmta_snmp.probe import Prober

            self.prober = Prober(cfg.probe)  # reads the modules' key files: fails early
            self.registry.register(ProbeStatsCollector(self.prober))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._poller: Poller | None = None
        #: The deliverability outcomes engine (with `[acct] files` / `--acct-file`).
        self.outcomes: OutcomesEngine | None = None
        if cfg.acct.files:
            from pmta_snmp.exporter_outcomes import OutcomesCollector
            from pmta_snmp.outcomes.engine import EngineSettings, OutcomesEngine

            engine = self.outcomes = OutcomesEngine(EngineSettings.from_config(cfg.acct))
            self.registry.register(OutcomesCollector(lambda: engine.saved_view))

    @property
    def port(self) -> int:
        """The bound port (after `start`; useful with port 0)."""
        if self._server is None:
            return self.requested_port
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """`http://HOST:PORT`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """`http://HOST:PORT/metrics`."""
        return f"{self.base_url}/metrics"

    def start(self) -> None:
        """Bind the listen address (OSError if taken), then start polling and probing."""
        from prometheus_client import make_wsgi_app

        from pmta_snmp.api.errors import redact_url
        from pmta_snmp.poller import poller_from

        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, object], start_response: Callable[..., object]
                ) -> list[bytes]:
            if environ.get("PATH_INFO") == "/probe":
                status, headers, body = self._probe(environ)
                start_response(status, headers)
                return [body]
            result: list[bytes] = metrics_app(environ, start_response)
            return result

        self._server, self._thread = _serve(self.host, self.requested_port, app)
        if self.prober is not None:
            self.prober.start()
            modules = ", ".join(f"{name}{' (API key)' if key else ''}"
                                for name, key in self.prober.module_names().items())
            log.info("pmta-snmp exporter: serving %s/probe, modules %s, at most %d at once",
                     self.base_url, modules, self.prober.max_concurrent)
        if self.polls_local:
            poller = poller_from(self.cfg, self.collector.update)
            self.collector.stale_after = poller.stale_after
            poller.start()
            self._poller = poller
            log.info("pmta-snmp exporter: serving %s, polling %s every %gs",
                     self.url, redact_url(self.cfg.pmta.url), self.cfg.poll.interval)
        else:
            log.info("pmta-snmp exporter: no [pmta] url: %s has the prober's own metrics only",
                     self.url)
        if self.outcomes is not None:
            self.outcomes.start()
            log.info("pmta-snmp exporter: deliverability outcomes from %s",
                     self.cfg.acct.files)

    def stop(self) -> None:
        """Stop polling, probing, reading accounting files and serving (idempotent)."""
        if self.outcomes is not None:
            self.outcomes.stop()
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self.prober is not None:
            self.prober.stop()

    def __enter__(self) -> Exporter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- /probe --------------------------------------------------------------------------------

    def _probe(self, environ: Mapping[str, object]) -> _WsgiResponse:
        """Answer `/probe?target=URL&module=NAME`: the target's families, `pmta_up` and
        `pmta_probe_duration_seconds`; 4xx with a one-line reason when refused."""
        from urllib.parse import parse_qs

        from pmta_snmp.probe import ProbeRefused

        if self.prober is None:
            return _refusal(404, "probing is off: no [probe.modules.NAME] in the configuration")
        if environ.get("REQUEST_METHOD") != "GET":
            return _refusal(405, "use GET")
        params = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
        targets, modules = params.get("target", []), params.get("module", [])
        if len(targets) > 1 or len(modules) > 1:
            return _refusal(400, "give one target and at most one module per probe")
        try:
            result = self.prober.probe(targets[0] if targets else None,
                                       modules[0] if modules else None,
                                       _scrape_timeout(environ))
        except ProbeRefused as exc:
            return _refusal(exc.status, exc.reason)
        families: list[Metric] = [
            _gauge("pmta_up", "1 when the probe polled the PowerMTA API of the target.",
                   0 if result.snapshot is None else 1),
            _gauge("pmta_probe_duration_seconds",
                   "Seconds the probe took (waiting for a slot included).", result.duration),
        ]
        if result.snapshot is not None:
            families.extend(f for f in self.collector.snapshot_families(result.snapshot)
                            if f.samples)
        return _encode(families, environ)


def _scrape_timeout(environ: Mapping[str, object]) -> float | None:
    """Prometheus' scrape timeout (header) less the margin, or None without the header."""
    try:
        seconds = float(str(environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS", "")))
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return max(seconds - PROBE_TIMEOUT_MARGIN, seconds / 2)


def _refusal(status: int, reason: str) -> _WsgiResponse:
    body = (" ".join(reason.split()) + "\n").encode("utf-8", "replace")
    return (f"{status} {_REASONS.get(status, 'Error')}",
            [("Content-Type", "text/plain; charset=utf-8")], body)


def _encode(families: list[Metric], environ: Mapping[str, object]) -> _WsgiResponse:
    """The families in the text format, gzipped when the scraper takes gzip.

    Always the text format, whatever the scraper prefers: for gauges and counters it says what
    OpenMetrics says, and prometheus_client's OpenMetrics writer costs twice its text writer.
    """
    import gzip

    body = text_format(families)
    headers = [("Content-Type", TEXT_CONTENT_TYPE)]
    if "gzip" in str(environ.get("HTTP_ACCEPT_ENCODING", "")).lower():
        body = gzip.compress(body, compresslevel=1)
        headers.append(("Content-Encoding", "gzip"))
    return "200 OK", headers, body


TEXT_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def text_format(families: Iterable[Metric]) -> bytes:
    """Gauge and counter families in the Prometheus text format 0.0.4, byte for byte what
    prometheus_client's `generate_latest` writes for them (a test compares), at a fraction of
    its cost: it validates and escapes each label name of each sample, ours are identifiers
    fixed in this module. Measured on a 200-domain, 650-queue host (3,900 samples):
    generate_latest 24 ms, this 5 ms, of a probe's 50 ms of CPU (README "Fleets")."""
    from prometheus_client.utils import floatToGoString

    go_float = cast(Callable[[float], str], floatToGoString)  # untyped in prometheus_client
    out: list[str] = []
    for family in families:
        if family.type not in ("gauge", "counter"):
            raise ValueError(f"text_format writes gauges and counters, not {family.type}")
        name = f"{family.name}_total" if family.type == "counter" else family.name
        doc = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {family.type}\n")
        for sample in family.samples:
            value = go_float(sample.value)
            if sample.labels:
                labels = ",".join([f'{k}="{_escape_label_value(v)}"'
                                   for k, v in sorted(sample.labels.items())])
                out.append(f"{sample.name}{{{labels}}} {value}\n")
            else:
                out.append(f"{sample.name} {value}\n")
    return "".join(out).encode("utf-8")


def _escape_label_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _serve(host: str, port: int, app: Callable[..., list[bytes]]
           ) -> tuple[WSGIServer, threading.Thread]:
    """A thread-per-request WSGI server on (host, port), serving in a daemon thread (as
    prometheus_client's `start_http_server`, with our own app)."""
    import socket
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer

    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            """Requests are not logged."""

    httpd = make_server(str(sockaddr[0]), port, app, Server, handler_class=QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="pmta-exporter-http",
                              daemon=True)
    thread.start()
    return httpd, thread


async def run_exporter(
    cfg: Config,
    *,
    stop: asyncio.Event | None = None,
    listen: str | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve `/metrics` on `listen` (default `cfg.exporter_listen`) until `stop` is set or
    SIGTERM/SIGINT arrives; `ready(url)` is called once the port is bound."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    exporter = Exporter(cfg, listen=listen)
    await asyncio.to_thread(exporter.start)
    try:
        if ready is not None:
            ready(exporter.url)
        await stop.wait()
    finally:
        await asyncio.to_thread(exporter.stop)


def config_with_listen(cfg: Config, listen: str | None) -> Config:
    """`cfg` with `exporter_listen` replaced (validated) when `listen` is given."""
    if listen is None:
        return cfg
    parse_listen(listen)
    return replace(cfg, exporter_listen=listen)
