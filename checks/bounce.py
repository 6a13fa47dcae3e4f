"""check_pmta_bounce: hard-bounce rate from PowerMTA's accounting files.

`b` records are classified hard / soft / block from `bounceCat` (pmta_snmp.acct.bounce: the
documented category table, with PowerMTA's stock `dsnStatus`/`dsnDiag` rules when `bounceCat`
is empty). Rate = hard bounces / (delivered + bounced) over the window (default one hour), per
sending domain (the domain of `orig`), recipient domain, source IP (`dlvSourceIp`) and
VirtualMTA; a key needs `--min-volume` attempts (default 100) before it is judged, so a handful
of bounces on a tiny domain does not page. Defaults follow the operating rules: warning above
5 %, critical above 7 %. The status line names the worst key, the top three `dsnDiag`
reasons (grouped by their first 60 characters) and the commonest reason classes of the outcomes
engine's classifier (`bad_mailbox`, `reputation`, `blocklist` ...). `--by provider` judges each
mailbox provider of the provider map too, naming its own top reason classes
("gmail: 7.2% hard (72 of 1,000), top reason bad_mailbox 55, reputation 12").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar

import nagiosplugin

from .acctbase import (
    Event,
    Fields,
    ProviderRateResource,
    RateItems,
    add_acct_args,
    add_outcome_args,
    diag_key,
    parse_dimensions,
    percent,
    reason_classes_text,
    reasons_text,
)
from .base import Plugin, PluginParser, Run, human, make_parser, metric, parse_range, pct

BOUNCE_CLASSES = ("hard", "soft", "block")
ATTEMPTS = ("d", *BOUNCE_CLASSES)
_KEYS = ("sender_domain", "rcpt_domain", "dlv_source_ip", "vmta")


class BounceResource(ProviderRateResource):
    """New accounting records into the window; overall and per-key bounce rates."""

    reason_counters: ClassVar[tuple[str, ...]] = BOUNCE_CLASSES
    fields: ClassVar[Fields] = {"d": _KEYS, "b": (*_KEYS, "bounce_cat", "dsn_status", "dsn_diag")}

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        from pmta_snmp.acct import classify, pair_key

        super().__init__(args, run)
        self.classify = classify
        self.pair_key = pair_key
        self.items = RateItems("hard_rate", "hard-bounce rate", ("hard",), ATTEMPTS, "hard_item",
                               short="hard", suffix=self.provider_reasons)
        self.attempts = 0
        self.counts: dict[str, int] = {}

    def events(self, kind: str, record: Mapping[str, str]) -> tuple[Event, ...]:
        """Counters of one `d`/`b` record: per dimension, and its reason (text and class) for
        `b`."""
        if kind not in ("d", "b"):
            return ()
        provider = None
        if kind == "d":
            counters: tuple[str, ...] = ("d",)
            if self.by_provider:
                provider = self.outcome(kind, record).provider
        else:
            cls = self.classify(record["bounce_cat"], record["dsn_status"], record["dsn_diag"])
            counters = (cls if cls in BOUNCE_CLASSES else "soft",)
            outcome = self.outcome(kind, record)
            provider = outcome.provider if self.by_provider else None
        keys = (("total", "all"), ("sender", record["sender_domain"]),
                ("domain", record["rcpt_domain"]), ("ip", record["dlv_source_ip"]),
                ("vmta", record["vmta"]), ("provider", provider))
        if kind == "b":
            reason = outcome.reason or "other"
            return ((keys, counters), ((("diag", diag_key(record["dsn_diag"])),), counters),
                    ((("reason", reason),
                      ("preason", self.pair_key(provider, reason) if provider else None)),
                     counters))
        return ((keys, counters),)

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        a = self.args
        win = self.read()
        self.run.enter("computing bounce rates")
        self.counts = {c: win.total((c,)) for c in ATTEMPTS}
        attempts = self.attempts = sum(self.counts.values())
        judged = attempts >= a.min_volume and attempts > 0
        hard_pct = percent(self.counts["hard"], attempts)
        block_pct = percent(self.counts["block"], attempts)
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
            "reason_classes": win.reason_counts(BOUNCE_CLASSES),
        }
        yield from self.judge_dimensions(win, self.items, details)
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
        text = reasons_text(found, label)
        classes = reason_classes_text(win.reason_counts(BOUNCE_CLASSES), 3)
        return "; ".join(t for t in (text, classes and f"reason classes: {classes}") if t)

    def ok_text(self, results: nagiosplugin.Results) -> str:
        assert self.window is not None
        span = self.window.span
        if not self.attempts:
            return f"no deliveries or bounces {span}"
        c = self.counts
        return (
            f"hard bounces {pct(percent(c['hard'], self.attempts))} of "
            f"{human(self.attempts)} attempts {span} (soft {human(c['soft'])}, "
            f"block {human(c['block'])}){self.not_judged(self.attempts)}"
            f"{self.items.worst_text(self.args.by)}"
        )

    def total_text(self, m: nagiosplugin.Metric, ctx: object) -> str:
        what = "hard-bounce" if m.name == "hard_rate" else "block"
        return f"overall {what} rate {pct(m.value)} of {human(self.attempts)} attempts"

    def contexts(self) -> list[nagiosplugin.Context]:
        a = self.args
        return [
            *self.rate_contexts(self.total_text, hard_total=(a.warning, a.critical),
                                block_total=(a.block_warning, a.block_critical)),
            *self.items.contexts(a.warning, a.critical),
        ]


def build_parser(plugin: Plugin) -> PluginParser:
    """Options of check_pmta_bounce."""
    p = make_parser(
        plugin, warning="5", critical="7",
        threshold_help="hard-bounce rate in percent, overall and per key",
        connection=False, state=True,
    )
    add_outcome_args(add_acct_args(p))
    p.add_argument(
        "--by", type=parse_dimensions, default=("sender", "domain", "ip", "vmta"),
        metavar="LIST",
        help="keys judged, comma-separated: sender (domain of orig), domain (recipient "
        "domain), ip (dlvSourceIp), vmta, provider (mailbox provider of the provider map, "
        "with its top reason classes) (default sender,domain,ip,vmta)",
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
    build_check=BounceResource.check,
    discover=BounceResource.discover,
    discovery=("sources", "domains", "vmtas"),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of check_pmta_bounce."""
    return PLUGIN.main(argv)


if __name__ == "__main__":
    sys.exit(main())
