"""check_pmta_tls: TLS failures from PowerMTA's main log and accounting files.

Two sources, both read incrementally with their state in the plugin's state file:

* the accounting file (`d` records): a delivery whose receiving MTA offered `STARTTLS` in
  `dlvEsmtpAvailable` but whose `dlvTlsProtocol` is empty went out in clear; a delivery below
  `--min-protocol` (default TLSv1.2) used an outdated protocol. Both are rates over the window
  (default one hour), overall and per recipient domain (`--min-volume` attempts to be judged);
  `-w/-c` apply to the cleartext rate (percent of STARTTLS-capable deliveries);
* the main log: TLS handshake failures since the last run (check_pmta_log's tailing). PowerMTA
  documents no failure wording, so the patterns are guesses (logscan.TLS_FAILURE_PATTERNS);
  adjust them with --pattern-file / --warning-pattern.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar, NamedTuple

import nagiosplugin

from .acctbase import DEFAULT_ACCT, AcctResource, Event, Fields, RateItems, add_acct_args, percent
from .base import (
    Plugin,
    PluginParser,
    Run,
    Threshold,
    human,
    make_parser,
    metric,
    parse_range,
    pct,
)
from .logscan import (
    DEFAULT_LOG,
    TLS_FAILURE_PATTERNS,
    Scanner,
    add_pattern_args,
    log_paths,
    scan_logs,
)

_PROTOCOL = re.compile(r"(?i)^\s*(ssl|tls)\s*v?\s*(\d+)(?:\.(\d+))?")
#: The pattern classes of the log source (extended by the pattern options).
LOG_PATTERNS = {"critical": [], "warning": TLS_FAILURE_PATTERNS, "exclude": [], "ok": []}


def protocol_rank(text: str) -> tuple[int, int] | None:
    """An orderable protocol version: SSLv3 (0,3) < TLSv1 (1,0) < TLSv1.2 (1,2) < TLSv1.3."""
    m = _PROTOCOL.match(text)
    if not m:
        return None
    major, minor = int(m.group(2)), int(m.group(3) or 0)
    return (0, major) if m.group(1).lower() == "ssl" else (1, minor if major == 1 else major)


class Protocol(NamedTuple):
    """--min-protocol: its rank for comparisons and its text for people."""

    rank: tuple[int, int]
    text: str


def _min_protocol(text: str) -> Protocol:
    rank = protocol_rank(text)
    if rank is None:
        raise argparse.ArgumentTypeError(f"not a protocol like TLSv1.2: {text!r}")
    return Protocol(rank, text.strip())


class TlsResource(AcctResource):
    """Cleartext and weak-protocol deliveries from accounting; handshake failures from the log."""

    fields: ClassVar[Fields] = {"d": ("rcpt_domain", "dlv_esmtp_available", "dlv_tls_protocol")}
    required: ClassVar[Fields] = {"d": ("dlv_esmtp_available", "dlv_tls_protocol")}
    required_for: ClassVar[str] = "cannot tell deliveries in clear from TLS ones"

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        resolve_sources(args)
        super().__init__(args, run)
        self.minimum: tuple[int, int] = args.min_protocol.rank
        self.scanner: Scanner | None = None
        self.clear_items = RateItems("clear_rate", "cleartext rate (STARTTLS offered)",
                                     ("clear",), ("offered",), "clear_item")
        self.weak_items = RateItems("weak_rate", f"rate below {args.min_protocol.text}",
                                    ("weak",), ("tls",), "weak_item")
        self.counts: dict[str, int] = {}
        self.interval_s: float | None = None

    def events(self, kind: str, record: Mapping[str, str]) -> tuple[Event, ...]:
        """Counters of one `d` record: offered STARTTLS, went in clear, protocol below minimum."""
        from pmta_snmp.acct.columns import starttls_offered  # loaded by the read already

        if kind != "d":
            return ()
        counters = ["d"]
        protocol = record["dlv_tls_protocol"].strip()
        if starttls_offered(record["dlv_esmtp_available"]):
            counters.append("offered")
            if not protocol:
                counters.append("clear")
        if protocol:
            counters.append("tls")
            rank = protocol_rank(protocol)
            if rank is not None and rank < self.minimum:
                counters.append("weak")
        return (((("total", "all"), ("domain", record["rcpt_domain"])), tuple(counters)),)

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        a = self.args
        if "acct" in a.sources:
            yield from self._acct()
        if "log" in a.sources:
            yield from self._log()

    def _acct(self) -> Iterator[nagiosplugin.Metric]:
        a, run = self.args, self.run
        win = self.read()
        run.enter("computing TLS rates")
        c = self.counts = {k: win.total((k,)) for k in ("d", "offered", "clear", "tls", "weak")}
        judged = c["offered"] >= a.min_volume and c["offered"] > 0
        clear = percent(c["clear"], c["offered"])
        weak = percent(c["weak"], c["tls"])
        yield metric("clear_rate", round(clear, 4), uom="%", min=0, max=100,
                     context="clear_total" if judged else "rate_info")
        yield metric("weak_rate", round(weak, 4), uom="%", min=0, max=100,
                     context="weak_total" if c["tls"] >= a.min_volume and c["tls"] else
                     "rate_info")
        yield metric("delivered", c["d"], context="info", min=0)
        yield metric("starttls_offered", c["offered"], context="info", min=0)
        yield metric("cleartext", c["clear"], context="info", min=0)
        yield metric("tls", c["tls"], context="info", min=0)
        yield metric("weak", c["weak"], context="info", min=0)
        clear_metrics, clear_rows = self.clear_items.judge(win, "domain", a)
        weak_metrics, weak_rows = self.weak_items.judge(win, "domain", a)
        yield from clear_metrics
        yield from weak_metrics
        run.details.update({
            "window_minutes": win.window_minutes,
            "delivered": c["d"], "starttls_offered": c["offered"], "cleartext": c["clear"],
            "tls": c["tls"], "weak": c["weak"],
            "clear_rate": round(clear, 4), "weak_rate": round(weak, 4),
            "domains_clear": clear_rows,
            "domains_weak": weak_rows,
        })
        run.primary = run.primary or "clear_rate"

    def _log(self) -> Iterator[nagiosplugin.Metric]:
        a, run = self.args, self.run
        scanner = self.scanner = scan_logs(run, a, LOG_PATTERNS, state_key="tls_logs")
        failures = scanner.count("warning") + scanner.count("critical")
        self.interval_s = self._interval()
        yield metric("handshake_failures", failures, context="handshake", min=0)
        per_min = failures / (self.interval_s / 60) if self.interval_s else 0.0
        yield metric("handshake_failures_per_min", round(per_min, 4), context="info", min=0)
        for line in scanner.classes["warning"].recent:
            run.long.append(f"TLS failure: {line}")
        run.details.update({
            "handshake_failures": failures,
            "handshake_last": scanner.classes["warning"].last,
            "interval_seconds": self.interval_s,
        })
        if "acct" not in a.sources:
            run.primary = "handshake_failures"

    def _interval(self) -> float | None:
        """Seconds since the previous run (kept in the state file), for a per-minute rate."""
        state = self.run.state_file("tls-interval", *log_paths(self.args))
        now = time.time()
        with state.transaction() as doc:
            last = doc.get("last_run")
            doc["last_run"] = now
        if isinstance(last, int | float) and 0 < now - last < 7 * 86400:
            return now - float(last)
        return None

    def reasons(self) -> str:
        s = self.scanner
        if s is None or not s.classes["warning"].last:
            return ""
        return f"last TLS failure: {s.classes['warning'].last}"

    def ok_text(self, results: nagiosplugin.Results) -> str:
        parts = []
        if self.window is not None:
            c = self.counts
            span = self.window.span
            if not c.get("d"):
                parts.append(f"no deliveries {span}")
            else:
                parts.append(
                    f"{human(c['clear'])} of {human(c['offered'])} STARTTLS-capable deliveries "
                    f"in clear ({pct(percent(c['clear'], c['offered']))})"
                    f", {human(c['weak'])} below {self.args.min_protocol.text} {span}"
                    f"{self.not_judged(c['offered'], ' ({}: not judged)')}"
                )
        if self.scanner is not None:
            n = self.scanner.count("warning") + self.scanner.count("critical")
            parts.append(f"{human(n)} TLS handshake failures in the log since the last run")
        return "; ".join(parts)

    def total_text(self, m: nagiosplugin.Metric, ctx: object) -> str:
        c = self.counts
        if m.name == "clear_rate":
            return (f"{pct(m.value)} of STARTTLS-capable deliveries went in clear "
                    f"({human(c.get('clear', 0))} of {human(c.get('offered', 0))})")
        return (f"{pct(m.value)} of TLS deliveries below {self.args.min_protocol.text} "
                f"({human(c.get('weak', 0))} of {human(c.get('tls', 0))})")

    @staticmethod
    def handshake_text(m: nagiosplugin.Metric, ctx: object) -> str:
        return f"{human(m.value)} TLS handshake failures in the log since the last run"

    def contexts(self) -> list[nagiosplugin.Context]:
        a = self.args
        return [
            *self.rate_contexts(self.total_text, clear_total=(a.warning, a.critical),
                                weak_total=(a.weak_warning, a.weak_critical)),
            Threshold("handshake", a.handshake_warning, a.handshake_critical,
                      self.handshake_text),
            *self.clear_items.contexts(a.warning, a.critical),
            *self.weak_items.contexts(a.weak_warning, a.weak_critical),
        ]


def resolve_sources(args: argparse.Namespace) -> None:
    """Without --sources, read the sources whose files were given (--acct-file, -l): only
    one given, only that one is read, so a host without the other file is not UNKNOWN; both
    or neither given, both (each at its default path)."""
    if args.sources is None:
        acct, log = args.acct_file is not None, bool(args.logfile)
        args.sources = ("acct",) if acct and not log else ("log",) if log and not acct else (
            "acct", "log")
    if args.acct_file is None:
        args.acct_file = DEFAULT_ACCT


def _sources(text: str) -> tuple[str, ...]:
    parts = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    if not parts or any(p not in ("acct", "log") for p in parts):
        raise argparse.ArgumentTypeError(f"expected acct, log or acct,log: {text!r}")
    return parts


def build_parser(plugin: Plugin) -> PluginParser:
    """Options of check_pmta_tls."""
    p = make_parser(
        plugin, warning="1", critical="5",
        threshold_help="percent of STARTTLS-capable deliveries sent in clear",
        connection=False, state=True,
    )
    p.add_argument("--sources", type=_sources, default=None, metavar="LIST",
                   help="acct, log or both (default: the sources whose files are given with "
                   "--acct-file and -l; both when both or neither are)")
    add_acct_args(p)
    p.set_defaults(acct_file=None)  # given or not decides --sources (resolve_sources)
    p.add_argument("--min-protocol", type=_min_protocol, default=Protocol((1, 2), "TLSv1.2"),
                   metavar="PROTO",
                   help="deliveries below this protocol count as weak (default TLSv1.2)")
    p.add_argument("--weak-warning", type=parse_range, default=parse_range("1"),
                   metavar="RANGE", help="warning range for the weak-protocol rate (default 1)")
    p.add_argument("--weak-critical", type=parse_range, metavar="RANGE",
                   help="critical range for the weak-protocol rate (default none)")
    g = p.add_argument_group("main log")
    g.add_argument("-l", "--logfile", action="append", metavar="PATH",
                   help=f"log to follow (repeatable; default {DEFAULT_LOG})")
    g.add_argument("--handshake-warning", type=parse_range, default=parse_range("10"),
                   metavar="RANGE",
                   help="warning range for handshake failures per run (default 10)")
    g.add_argument("--handshake-critical", type=parse_range, metavar="RANGE",
                   help="critical range for handshake failures per run (default none)")
    add_pattern_args(p)
    return p


PLUGIN = Plugin(
    name="TLS",
    prog="check_pmta_tls",
    description="PowerMTA deliveries in clear or below a TLS version (accounting) and TLS "
    "handshake failures (main log).",
    build_parser=build_parser,
    build_check=TlsResource.check,
    discover=TlsResource.discover,
    discovery=("domains",),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of check_pmta_tls."""
    return PLUGIN.main(argv)


if __name__ == "__main__":
    sys.exit(main())
