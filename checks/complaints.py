"""check_pmta_complaints: spam-complaint rate per mailbox provider from the accounting files.

Complaint rate = complaints / deliveries to the same provider over `--window` (default 24 h,
as the providers measure it). Complaints are feedback-loop `f` records whose `feedbackType` is
a complaint (ARF `abuse`, Microsoft JMRP ...), deliveries are `d` records; both are classified
by the outcomes engine's classifier (provider by recipient domain, MX host or reporting MTA;
sending domain; source IP). Judged per provider and, with `--by`, per provider and sending
domain or source IP; a key needs `--min-volume` deliveries. Defaults follow Gmail's and
Yahoo's bulk-sender rules: warning above 0.1 %, critical above 0.3 %.

Gmail sends no per-message feedback (only an aggregate rate in Postmaster Tools), so a Gmail
complaint rate from accounting is not measured: Gmail is left out of the judged rates, and
the output says so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar

import nagiosplugin

from .acctbase import (
    AcctResource,
    Event,
    Fields,
    RateItems,
    Window,
    add_acct_args,
    add_outcome_args,
    percent,
)
from .base import (
    Info,
    Plugin,
    PluginError,
    PluginParser,
    Run,
    Summary,
    human,
    lld,
    make_parser,
    metric,
)

#: Providers that send no per-message feedback: their complaint rate is not in accounting.
NO_FEEDBACK = frozenset({"gmail"})
#: --by name -> the window's dimension (keys: provider, or provider|value).
GROUPINGS = {"provider": "provider", "sending-domain": "sending_domain",
             "source-ip": "source_ip"}
_NAMES = {"sending_domain": "sending domain", "source_ip": "source IP"}
_NOT_MEASURED = ("Gmail sends no per-message feedback (its complaint rate is in Postmaster "
                 "Tools): not measured")


def pct2(value: float | None) -> str:
    """A complaint rate for people, always two decimals (`0.13%`: thresholds are 0.1, 0.3)."""
    return f"{value or 0.0:.2f}%"


def parse_groupings(text: str) -> tuple[str, ...]:
    """`provider,sending-domain` -> ("provider", "sending_domain") (validated)."""
    out = []
    for part in text.split(","):
        key = part.strip().lower().replace("_", "-")
        if not key:
            continue
        if key not in GROUPINGS:
            raise argparse.ArgumentTypeError(
                f"unknown grouping {key!r}; choose from {', '.join(GROUPINGS)}")
        out.append(GROUPINGS[key])
    if not out:
        raise argparse.ArgumentTypeError("no grouping given")
    return tuple(dict.fromkeys(out))


class ComplaintItems(RateItems):
    """Complaint rates per provider or per (provider, sending domain / source IP)."""

    def describe(self, m: nagiosplugin.Metric, ctx: object) -> str:
        """`yahoo complaint rate 0.42% (5 of 1,200 deliveries)`, `yahoo sending domain
        news.example.net complaint rate ...`."""
        from pmta_snmp.acct.buckets import split_pair

        dimension, key, rate = self.names[m.name]
        counts = f"({human(rate.numerator)} of {human(rate.denominator)} deliveries)"
        if dimension == "provider":
            return f"{key} complaint rate {pct2(m.value)} {counts}"
        provider, value = split_pair(key)
        return f"{provider} {_NAMES[dimension]} {value} complaint rate {pct2(m.value)} {counts}"


class ComplaintResource(AcctResource):
    """New `d` and `f` records into the window; complaint rates per provider."""

    fields: ClassVar[Fields] = {
        "d": ("rcpt_domain", "dsn_mta_host"),
        "f": ("rcpt_domain", "sender_domain", "column:feedbackType", "column:format",
              "column:reportingMta", "column:reportedDomain", "column:repSourceIp"),
    }

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        from pmta_snmp.acct import pair_key

        super().__init__(args, run)
        self.pair_key = pair_key
        self.by: tuple[str, ...] = args.by
        self.items = ComplaintItems("complaint_rate", "complaint rate", ("complaint",), ("d",),
                                    "item")
        self.complaints = 0
        self.deliveries = 0
        self.unmeasured = 0  # deliveries to providers without per-message feedback
        #: Complaints to providers with no delivery in the window: no rate to blend them into.
        self.without_deliveries: dict[str, int] = {}
        self.worst: str | None = None  # the worst judged key, in words

    def counted_fields(self) -> Fields:
        extra = tuple(name for dim, name in (("sending_domain", "sender_domain"),
                                             ("source_ip", "dlv_source_ip"))
                      if dim in self.by)
        return {**self.fields, "d": (*self.fields["d"], *extra)}

    def counting(self) -> str:
        return ",".join(d for d in self.by if d != "provider")

    def events(self, kind: str, record: Mapping[str, str]) -> tuple[Event, ...]:
        """A delivery counts `d`, a feedback report `f` (and `complaint` when it is one), under
        its provider and, as --by asks, its provider's sending domain and source IP."""
        if kind not in ("d", "f"):
            return ()
        outcome = self.outcome(kind, record)
        provider = outcome.provider
        keys: list[tuple[str, str | None]] = [("total", "all"), ("provider", provider)]
        for dimension, value in (("sending_domain", outcome.sending_domain),
                                 ("source_ip", outcome.source_ip)):
            if dimension in self.by and value:
                keys.append((dimension, self.pair_key(provider, value)))
        if kind == "d":
            return ((tuple(keys), ("d",)),)
        return ((tuple(keys), ("f", "complaint") if outcome.complaint else ("f",)),)

    def measured(self, key: str) -> bool:
        """A key of a provider whose complaints accounting can count (and --provider's)."""
        provider = key.split("|", 1)[0]
        if self.args.provider and provider != self.args.provider:
            return False
        return provider not in NO_FEEDBACK

    def check_provider(self) -> None:
        """--provider must be in the provider map and have per-message feedback."""
        wanted = self.args.provider
        if not wanted:
            return
        if wanted in NO_FEEDBACK:
            raise PluginError(f"--provider {wanted}: {_NOT_MEASURED}")
        ids = self.classifier.providers.ids
        if wanted not in ids:
            raise PluginError(f"--provider {wanted}: not in the provider map "
                              f"{self.classifier.providers.source} ({', '.join(ids)})")

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        a, run = self.args, self.run
        self.check_provider()
        win = self.read()
        run.enter("computing complaint rates")
        providers = win.totals("provider")
        for provider, counters in providers.items():
            if not self.measured(provider):
                if provider in NO_FEEDBACK and not a.provider:
                    self.unmeasured += counters.get("d", 0)
                continue
            if not counters.get("d", 0):
                if counters.get("complaint", 0):
                    self.without_deliveries[provider] = counters["complaint"]
                continue
            self.deliveries += counters.get("d", 0)
            self.complaints += counters.get("complaint", 0)
        if not win.total(("f",)) and self.deliveries:
            run.note(f"no feedback-loop (f) records {win.span}: complaints are counted only "
                     "when PowerMTA logs them (`records f` on an <acct-file>, with the "
                     "feedback fields)")
        details: dict[str, object] = {
            "window_minutes": win.window_minutes,
            "complaints": self.complaints,
            "deliveries": self.deliveries,
            "not_measured": sorted(p for p in providers if p in NO_FEEDBACK),
            "without_deliveries": dict(sorted(self.without_deliveries.items())),
        }
        metrics: list[nagiosplugin.Metric] = []
        for dimension in self.by:
            found, details[dimension] = self.items.judge(win, dimension, a, keep=self.measured)
            metrics += found
        judged = [self.items.names[m.name] for m in metrics]
        worst = max(judged, key=lambda d: (d[2].percent or 0.0, d[2].denominator),
                    default=None)
        worst_rate = (worst[2].percent or 0.0) if worst else 0.0
        if worst is not None:
            dimension, key, _ = worst
            where = key if dimension == "provider" else \
                " ".join((key.split("|", 1)[0], _NAMES[dimension], key.split("|", 1)[1]))
            self.worst = f"{where} {pct2(worst_rate)}"
        yield metric("worst_complaint_rate", round(worst_rate, 4), uom="%", min=0, max=100,
                     context="info")
        yield metric("complaint_rate", round(percent(self.complaints, self.deliveries), 4),
                     uom="%", min=0, max=100, context="info")
        yield metric("complaints", self.complaints, context="info", min=0)
        yield metric("deliveries", self.deliveries, context="info", min=0)
        yield metric("unrated_complaints", sum(self.without_deliveries.values()),
                     context="info", min=0)
        yield from metrics
        for provider, n in sorted(self.without_deliveries.items()):
            run.long.append(f"{provider}: {self.no_rate_text(provider, n)} (complaints "
                            "can arrive days after the mail they are about)")
        if self.unmeasured:
            run.long.append(f"gmail: {human(self.unmeasured)} deliveries {win.span}; "
                            f"{_NOT_MEASURED}")
        run.details = details
        run.primary = "worst_complaint_rate"

    def no_rate_text(self, provider: str, complaints: int) -> str:
        """`50 complaints and no deliveries in the last 24 h: no rate`."""
        assert self.window is not None
        return (f"{human(complaints)} complaint{'s' if complaints != 1 else ''} and no "
                f"deliveries {self.window.span}: no rate")

    def ok_text(self, results: nagiosplugin.Results) -> str:
        win = self.window
        assert win is not None
        scope = f" to {self.args.provider}" if self.args.provider else ""
        if not self.deliveries:
            text = f"no deliveries{scope} {win.span}"
        else:
            text = (f"complaints {pct2(percent(self.complaints, self.deliveries))} of "
                    f"{human(self.deliveries)} deliveries{scope} {win.span}")
            if self.worst is not None and len(self.items.names) > 1:
                text += f"; worst {self.worst}"
            elif not self.items.names:
                text += f", below --min-volume {self.args.min_volume}: not judged"
        for provider, n in sorted(self.without_deliveries.items(), key=lambda kv: -kv[1])[:2]:
            text += f"; {provider}: {self.no_rate_text(provider, n)}"
        if self.unmeasured:
            text += "; gmail not measured (no per-message feedback)"
        return text

    def summary(self) -> Summary:
        return Summary(self.ok_text, max_problems=3)

    def contexts(self) -> list[nagiosplugin.Context]:
        a = self.args
        return [Info("info"), *self.items.contexts(a.warning, a.critical)]

    @classmethod
    def discover(cls, args: argparse.Namespace, run: Run, kind: str) -> list[dict[str, str]]:
        """LLD of the providers with deliveries or complaints in the window."""
        from pmta_snmp.acct.buckets import OTHER_KEY

        win: Window = cls(args, run).read()
        return lld(kind, [p for p in win.totals("provider") if p != OTHER_KEY])


def build_parser(plugin: Plugin) -> PluginParser:
    """Options of check_pmta_complaints."""
    p = make_parser(
        plugin, warning="0.1", critical="0.3",
        threshold_help="complaint rate in percent (complaints / deliveries to the same "
        "provider), per provider and per --by key",
        connection=False, state=True,
    )
    add_outcome_args(add_acct_args(p, window="24h", min_volume=1000, volume="deliveries"))
    p.add_argument(
        "--by", type=parse_groupings, default=("provider",), metavar="LIST",
        help="keys judged, comma-separated: provider, sending-domain (the provider's rate per "
        "domain of orig), source-ip (per dlvSourceIp; repSourceIp for complaints) "
        "(default provider)",
    )
    p.add_argument("--provider", metavar="ID", type=str.lower,
                   help="check one provider of the provider map (yahoo, microsoft, ...)")
    return p


PLUGIN = Plugin(
    name="COMPLAINTS",
    prog="check_pmta_complaints",
    description="PowerMTA spam-complaint rate per mailbox provider from the accounting files "
    "(feedback-loop f records against deliveries; Gmail sends no per-message feedback: its "
    "rate is in Postmaster Tools, not measured here).",
    build_parser=build_parser,
    build_check=ComplaintResource.check,
    discover=ComplaintResource.discover,
    discovery=("providers",),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of check_pmta_complaints."""
    return PLUGIN.main(argv)


if __name__ == "__main__":
    sys.exit(main())
