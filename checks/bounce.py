"""check_pmta_bounce: hard-bounce rate from PowerMTA's accounting files.

`b` records are classified hard / soft / block from `bounceCat` (pmta_snmp.acct.bounce: the
documented category table, with PowerMTA's stock `dsnStatus`/`dsnDiag` rules when `bounceCat`
is empty). Rate = hard bounces / (delivered + bounced) over the window (default one hour), per
sending domain (the domain of `orig`), recipient domain, source IP (`dlvSourceIp`) and
VirtualMTA; a key needs `--min-volume` attempts (default 100) before it is judged, so a handful
of bounces on a tiny domain does not page. Defaults follow the operating rules: warning above
5 %, critical above 7 %. The status line names the worst key and the top three `dsnDiag`
reasons (grouped by their first 60 characters).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import nagiosplugin

from .acctbase import (
    DIMENSIONS,
    AcctSummary,
    Event,
    RateItems,
    Window,
    add_acct_args,
    diag_key,
    discover_from_window,
    parse_dimensions,
    rate_details,
    read_window,
    reasons_text,
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

if TYPE_CHECKING:
    from pmta_snmp.acct import AcctRecord

BOUNCE_CLASSES = ("hard", "soft", "block")
ATTEMPTS = ("d", *BOUNCE_CLASSES)


def bounce_events(record: AcctRecord) -> Iterator[Event]:
    """Counters of one `d`/`b` record: per dimension, and its reason for `b`."""
    if record.type == "d":
        counters = {"d": 1}
    elif record.type == "b":
        cls = record.bounce_class()
        counters = {cls if cls in BOUNCE_CLASSES else "soft": 1}
    else:
        return
    yield (
        {
            "total": "all",
            "sender": record.sender_domain,
            "domain": record.rcpt_domain,
            "ip": record.dlv_source_ip,
            "vmta": record.vmta,
        },
        counters,
    )
    if record.type == "b":
        yield {"diag": diag_key(record.dsn_diag)}, counters


class BounceResource(nagiosplugin.Resource):  # type: ignore[misc]
    """New accounting records into the window; overall and per-key bounce rates."""

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        self.args = args
        self.run = run
        self.window: Window | None = None
        self.items = RateItems(self, "hard_rate", "hard-bounce rate")
        self.attempts = 0
        self.counts: dict[str, int] = {}

    @property
    def name(self) -> str:
        return "BOUNCE"

    def read(self) -> Window:
        """This run's new records, added to the stored window."""
        return read_window(self.run, self.args, types=("d", "b"), event=bounce_events)

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        a = self.args
        win = self.window = self.read()
        self.run.enter("computing bounce rates")
        self.counts = {c: win.total((c,)) for c in ATTEMPTS}
        attempts = self.attempts = sum(self.counts.values())
        judged = attempts >= a.min_volume and attempts > 0
        hard_pct = 100.0 * self.counts["hard"] / attempts if attempts else 0.0
        block_pct = 100.0 * self.counts["block"] / attempts if attempts else 0.0
        yield metric("hard_rate", round(hard_pct, 4), uom="%", min=0, max=100,
                     context="hard_total" if judged else "rate_info")
        yield metric("block_rate", round(block_pct, 4), uom="%", min=0, max=100,
                     context="block_total" if judged else "rate_info")
        yield metric("attempts", attempts, context="info", min=0)
        yield metric("delivered", self.counts["d"], context="info", min=0)
        for cls in BOUNCE_CLASSES:
            yield metric(cls, self.counts[cls], context="info", min=0)
        details: dict[str, object] = {
            "window_minutes": win.window_minutes,
            "attempts": attempts,
            "delivered": self.counts["d"],
            **{cls: self.counts[cls] for cls in BOUNCE_CLASSES},
            "hard_rate": round(hard_pct, 4),
            "reasons": dict(win.top_reasons("hard")),
        }
        for dimension in a.by:
            rates = win.rates(dimension, ("hard",), ATTEMPTS, a.min_volume)
            yield from self.items.metrics(dimension, rates, a.max_items, "hard_item")
            details[dimension] = rate_details(rates, a.max_items)
        self.run.details = details
        self.run.primary = "hard_rate"

    def reasons(self) -> str:
        """Top dsnDiag reasons of hard bounces (else of any bounce)."""
        win = self.window
        if win is None:
            return ""
        found = win.top_reasons("hard")
        label = "top hard-bounce reasons"
        if not found:
            found, label = win.top_reasons("soft") + win.top_reasons("block"), "top reasons"
            found = sorted(found, key=lambda kv: -kv[1])[:3]
        return reasons_text(found, label)

    def ok_text(self, results: nagiosplugin.Results) -> str:
        win = self.window
        assert win is not None
        span = f"in the last {human(win.window_minutes)} min"
        if not self.attempts:
            return f"no deliveries or bounces {span}"
        c = self.counts
        text = (
            f"hard bounces {pct(100.0 * c['hard'] / self.attempts)} of "
            f"{human(self.attempts)} attempts {span} (soft {human(c['soft'])}, "
            f"block {human(c['block'])})"
        )
        if self.attempts < self.args.min_volume:
            text += f", below --min-volume {self.args.min_volume}: not judged"
        worst = []
        for dimension in self.args.by:
            found = self.items.worst(dimension)
            if found is not None and (found[1].percent or 0) > 0:
                worst.append(f"{DIMENSIONS[dimension]} {found[0]} {pct(found[1].percent or 0)}")
        if worst:
            text += "; worst " + ", ".join(worst[:2])
        extra = self.reasons()
        return f"{text}; {extra}" if extra else text


def build_check(args: argparse.Namespace, run: Run) -> nagiosplugin.Check:
    """One resource; overall and per-key threshold contexts; the summary with reasons."""
    res = BounceResource(args, run)

    def total_text(m: nagiosplugin.Metric, ctx: object) -> str:
        what = "hard-bounce" if m.name == "hard_rate" else "block"
        return f"overall {what} rate {pct(m.value)} of {human(res.attempts)} attempts"

    return PmtaCheck(
        res,
        Threshold("hard_total", args.warning, args.critical, total_text, unit="%"),
        Threshold("block_total", args.block_warning, args.block_critical, total_text, unit="%"),
        Threshold("rate_info", None, None, total_text),
        Info("info"),
        *res.items.contexts("hard_item", args.warning, args.critical),
        AcctSummary(res.ok_text, res.reasons),
    )


def discover(args: argparse.Namespace, run: Run, kind: str) -> list[dict[str, str]]:
    """LLD of the source IPs, recipient domains or VirtualMTAs seen in the window."""
    win = read_window(run, args, types=("d", "b"), event=bounce_events)
    return discover_from_window(win, kind)


def build_parser(plugin: Plugin) -> PluginParser:
    """Options of check_pmta_bounce."""
    p = make_parser(
        plugin, warning="5", critical="7",
        threshold_help="hard-bounce rate in percent, overall and per key",
        connection=False, state=True,
    )
    add_acct_args(p)
    p.add_argument(
        "--by", type=parse_dimensions, default=("sender", "domain", "ip", "vmta"),
        metavar="LIST",
        help="keys judged, comma-separated: sender (domain of orig), domain (recipient "
        "domain), ip (dlvSourceIp), vmta (default all four)",
    )
    p.add_argument("--block-warning", type=parse_range, metavar="RANGE",
                   help="warning range for the overall block (policy/spam) rate in percent")
    p.add_argument("--block-critical", type=parse_range, metavar="RANGE",
                   help="critical range for the overall block rate in percent")
    return p


PLUGIN = Plugin(
    name="BOUNCE",
    prog="check_pmta_bounce",
    description="PowerMTA hard-bounce rate from the accounting files (rolling window).",
    build_parser=build_parser,
    build_check=build_check,
    discover=discover,
    discovery=("sources", "domains", "vmtas"),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of check_pmta_bounce."""
    from .base import run_plugin

    return run_plugin(PLUGIN, argv)


if __name__ == "__main__":
    sys.exit(main())
