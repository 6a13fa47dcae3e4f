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
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import nagiosplugin

from .acctbase import (
    AcctSummary,
    Event,
    RateItems,
    Window,
    add_acct_args,
    discover_from_window,
    rate_details,
    read_window,
)
from .base import (
    Info,
    Plugin,
    PluginParser,
    PmtaCheck,
    Run,
    Threshold,
    human,
    make_parser,
    metric,
    parse_range,
    pct,
)
from .log import DEFAULT_LOG, add_pattern_args, load_patterns, scan_logs
from .logscan import TLS_FAILURE_PATTERNS, Scanner

if TYPE_CHECKING:
    from pmta_snmp.acct import AcctRecord

_PROTOCOL = re.compile(r"(?i)^\s*(ssl|tls)\s*v?\s*(\d+)(?:\.(\d+))?")


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


def tls_events(minimum: tuple[int, int]) -> Callable[[AcctRecord], Iterator[Event]]:
    """Counters of one `d` record: offered STARTTLS, went in clear, protocol below minimum."""

    def events(record: AcctRecord) -> Iterator[Event]:
        if record.type != "d":
            return
        counters = {"d": 1}
        protocol = record.dlv_tls_protocol.strip()
        if record.starttls_offered:
            counters["offered"] = 1
            if not protocol:
                counters["clear"] = 1
        if protocol:
            counters["tls"] = 1
            rank = protocol_rank(protocol)
            if rank is not None and rank < minimum:
                counters["weak"] = 1
        yield {"total": "all", "domain": record.rcpt_domain}, counters

    return events


class TlsResource(nagiosplugin.Resource):  # type: ignore[misc]
    """Cleartext and weak-protocol deliveries from accounting; handshake failures from the log."""

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        self.args = args
        self.run = run
        self.window: Window | None = None
        self.scanner: Scanner | None = None
        self.clear_items = RateItems(self, "clear_rate", "cleartext rate (STARTTLS offered)")
        self.weak_items = RateItems(self, "weak_rate",
                                    f"rate below {args.min_protocol.text}")
        self.counts: dict[str, int] = {}
        self.interval_s: float | None = None

    @property
    def name(self) -> str:
        return "TLS"

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        a = self.args
        if "acct" in a.sources:
            yield from self._acct()
        if "log" in a.sources:
            yield from self._log()

    def _acct(self) -> Iterator[nagiosplugin.Metric]:
        a, run = self.args, self.run
        win = self.window = read_window(run, a, types=("d",),
                                        event=tls_events(a.min_protocol.rank))
        run.enter("computing TLS rates")
        c = self.counts = {k: win.total((k,)) for k in ("d", "offered", "clear", "tls", "weak")}
        judged = c["offered"] >= a.min_volume and c["offered"] > 0
        clear = 100.0 * c["clear"] / c["offered"] if c["offered"] else 0.0
        weak = 100.0 * c["weak"] / c["tls"] if c["tls"] else 0.0
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
        clear_rates = win.rates("domain", ("clear",), ("offered",), a.min_volume)
        weak_rates = win.rates("domain", ("weak",), ("tls",), a.min_volume)
        yield from self.clear_items.metrics("domain", clear_rates, a.max_items, "clear_item")
        yield from self.weak_items.metrics("domain", weak_rates, a.max_items, "weak_item")
        run.details.update({
            "window_minutes": win.window_minutes,
            "delivered": c["d"], "starttls_offered": c["offered"], "cleartext": c["clear"],
            "tls": c["tls"], "weak": c["weak"],
            "clear_rate": round(clear, 4), "weak_rate": round(weak, 4),
            "domains_clear": rate_details(clear_rates, a.max_items),
            "domains_weak": rate_details(weak_rates, a.max_items),
        })
        run.primary = run.primary or "clear_rate"

    def _log(self) -> Iterator[nagiosplugin.Metric]:
        a, run = self.args, self.run
        patterns = load_patterns(a, {"critical": [], "warning": TLS_FAILURE_PATTERNS,
                                     "exclude": [], "ok": []})
        scanner, _ = scan_logs(run, a, a.logfile or [DEFAULT_LOG], patterns,
                                   state_key="tls_logs")
        self.scanner = scanner
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
        state = self.run.state_file("tls-interval", *(self.args.logfile or [DEFAULT_LOG]))
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
            span = f"in the last {human(self.window.window_minutes)} min"
            if not c.get("d"):
                parts.append(f"no deliveries {span}")
            else:
                parts.append(
                    f"{human(c['clear'])} of {human(c['offered'])} STARTTLS-capable deliveries "
                    f"in clear ({pct(100.0 * c['clear'] / c['offered'] if c['offered'] else 0)})"
                    f", {human(c['weak'])} below {self.args.min_protocol.text} {span}"
                )
                if c["offered"] < self.args.min_volume:
                    parts[-1] += f" (below --min-volume {self.args.min_volume}: not judged)"
        if self.scanner is not None:
            n = self.scanner.count("warning") + self.scanner.count("critical")
            parts.append(f"{human(n)} TLS handshake failures in the log since the last run")
        text = "; ".join(parts)
        extra = self.reasons()
        return f"{text}; {extra}" if extra else text


def build_check(args: argparse.Namespace, run: Run) -> nagiosplugin.Check:
    """One resource with both sources; rate and count contexts."""
    res = TlsResource(args, run)

    def total_text(m: nagiosplugin.Metric, ctx: object) -> str:
        c = res.counts
        if m.name == "clear_rate":
            return (f"{pct(m.value)} of STARTTLS-capable deliveries went in clear "
                    f"({human(c.get('clear', 0))} of {human(c.get('offered', 0))})")
        return (f"{pct(m.value)} of TLS deliveries below {args.min_protocol.text} "
                f"({human(c.get('weak', 0))} of {human(c.get('tls', 0))})")

    def handshake_text(m: nagiosplugin.Metric, ctx: object) -> str:
        return f"{human(m.value)} TLS handshake failures in the log since the last run"

    return PmtaCheck(
        res,
        Threshold("clear_total", args.warning, args.critical, total_text, unit="%"),
        Threshold("weak_total", args.weak_warning, args.weak_critical, total_text, unit="%"),
        Threshold("rate_info", None, None, total_text),
        Threshold("handshake", args.handshake_warning, args.handshake_critical,
                  handshake_text),
        Info("info"),
        *res.clear_items.contexts("clear_item", args.warning, args.critical),
        *res.weak_items.contexts("weak_item", args.weak_warning, args.weak_critical),
        AcctSummary(res.ok_text, res.reasons),
    )


def discover(args: argparse.Namespace, run: Run, kind: str) -> list[dict[str, str]]:
    """LLD of the recipient domains seen in the window."""
    win = read_window(run, args, types=("d",), event=tls_events(args.min_protocol.rank))
    return discover_from_window(win, kind)


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
    p.add_argument("--sources", type=_sources, default=("acct", "log"), metavar="LIST",
                   help="acct, log or both (default acct,log)")
    add_acct_args(p)
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
    build_check=build_check,
    discover=discover,
    discovery=("domains",),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of check_pmta_tls."""
    from .base import run_plugin

    return run_plugin(PLUGIN, argv)


if __name__ == "__main__":
    sys.exit(main())
