"""check_pmta_deferral: deferral rate from PowerMTA's accounting files, and listed-IP outliers.

The deferral rate is per recipient: `t` records (one recipient deferred, 4xx) against `d`,
`b` and `t` over the window (default one hour), rate = t / (d + b + t), overall, per recipient
domain and per source IP (`dlvSourceIp`), judged from `--min-volume` attempts. `tq` records (a
queue-wide transient failure: a delivery attempt for a domain/VirtualMTA, no recipient) are
reported apart (`queue_deferrals`), never mixed into a per-recipient rate. Defaults follow the
operating rules: warning above 5 %, critical above 15 %.

A source IP whose deferral rate for a domain is far above its peers' for the same domain
(`--outlier-factor` times and `--outlier-min-diff` points above the pooled rate of the other
IPs) is the classic sign of a listed IP; a uniform rate across the pool points at the
configuration or the receiving side instead.

The status line names the commonest reason classes of the deferrals (the outcomes engine's
classifier: `reputation`, `rate_limit`, `blocklist` ...); `--by provider` judges each mailbox
provider of the provider map too, with its own top reason classes ("yahoo: 8.4% deferred (14 of
167), top reason reputation 10, rate_limit 4").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import nagiosplugin

from pmta_snmp.argtypes import nonneg_float, nonneg_int

from .acctbase import (
    Event,
    Fields,
    ProviderRateResource,
    RateItems,
    Window,
    add_acct_args,
    add_outcome_args,
    diag_key,
    parse_dimensions,
    percent,
    reason_classes_text,
    reasons_text,
)
from .base import (
    WARNING,
    Flag,
    Labelled,
    Plugin,
    PluginParser,
    Run,
    human,
    make_parser,
    metric,
    pct,
    state_choice,
)

DEFERRED = ("t",)
ATTEMPTS = ("d", "b", "t")
#: Queue-level deferrals, counted apart.
QUEUE = "tq"
_KEYS = ("sender_domain", "rcpt_domain", "dlv_source_ip", "vmta", "queue")


@dataclass(frozen=True)
class Outlier:
    """A source IP deferred far more than its peers for one domain."""

    domain: str
    ip: str
    rate: float
    attempts: int
    peers_rate: float
    peers: int


def find_outliers(win: Window, *, min_volume: int, factor: float, min_diff: float
                  ) -> tuple[list[Outlier], list[str]]:
    """Outlier IPs per domain, and domains whose IPs all defer alike (uniform)."""
    from pmta_snmp.acct.buckets import OTHER_KEY, split_pair

    by_domain: dict[str, dict[str, tuple[int, int]]] = {}
    for key, counters in win.totals("pair").items():
        if key == OTHER_KEY:
            continue
        domain, ip = split_pair(key)
        num = sum(counters.get(c, 0) for c in DEFERRED)
        den = sum(counters.get(c, 0) for c in ATTEMPTS)
        if den >= max(1, min_volume):
            by_domain.setdefault(domain, {})[ip] = (num, den)
    outliers: list[Outlier] = []
    uniform: list[str] = []
    for domain, ips in sorted(by_domain.items()):
        if len(ips) < 2:
            continue
        found = False
        for ip, (num, den) in sorted(ips.items()):
            p_num = sum(n for other, (n, _) in ips.items() if other != ip)
            p_den = sum(d for other, (_, d) in ips.items() if other != ip)
            rate = 100.0 * num / den
            peers = 100.0 * p_num / p_den if p_den else 0.0
            if rate >= factor * peers and rate - peers >= min_diff:
                outliers.append(Outlier(domain, ip, rate, den, peers, len(ips) - 1))
                found = True
        rates = [100.0 * n / d for n, d in ips.values()]
        if not found and min(rates) >= min_diff:
            uniform.append(domain)
    outliers.sort(key=lambda o: (-(o.rate - o.peers_rate), o.domain, o.ip))
    return outliers, uniform


class DeferralResource(ProviderRateResource):
    """New accounting records into the window; deferral rates and outlier IPs."""

    reason_counters: ClassVar[tuple[str, ...]] = DEFERRED
    fields: ClassVar[Fields] = {
        "d": _KEYS, "b": _KEYS, "t": (*_KEYS, "dsn_status", "dsn_diag"),
        "tq": (*_KEYS, "dsn_status", "dsn_diag"),
    }

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        from pmta_snmp.acct import pair_key

        super().__init__(args, run)
        self.pair_key = pair_key
        self.items = RateItems("deferral_rate", "deferral rate", DEFERRED, ATTEMPTS, "item",
                               short="deferred", suffix=self.provider_reasons)
        self.attempts = 0
        self.deferred = 0
        self.queue_deferrals = 0
        self.outliers: Labelled[Outlier] = Labelled()

    def events(self, kind: str, record: Mapping[str, str]) -> tuple[Event, ...]:
        """Counters of one d/b/t/tq record; a deferral also counts under its reason (text and
        class)."""
        if kind not in ATTEMPTS and kind != QUEUE:
            return ()
        domain = record["rcpt_domain"]
        queue = record["queue"]
        if not domain and queue:
            domain = queue.rsplit("/", 1)[0].lower()  # tq rows may carry no rcpt [?]
        deferral = kind in DEFERRED or kind == QUEUE
        provider = None
        reason = "other"
        if deferral or self.by_provider:
            outcome = self.outcome(kind, dict(record, rcpt_domain=domain))
            provider = outcome.provider if self.by_provider else None
            reason = outcome.reason or "other"
        ip = record["dlv_source_ip"]
        keys = (("total", "all"), ("sender", record["sender_domain"]), ("domain", domain),
                ("ip", ip), ("vmta", record["vmta"]),
                ("pair", self.pair_key(domain, ip) if domain and ip else None),
                ("provider", provider))
        if deferral:
            return ((keys, (kind,)), ((("diag", diag_key(record["dsn_diag"])),), (kind,)),
                    ((("reason", reason),
                      ("preason", self.pair_key(provider, reason) if provider else None)),
                     (kind,)))
        return ((keys, (kind,)),)

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        a, run = self.args, self.run
        win = self.read()
        run.enter("computing deferral rates")
        self.attempts = win.total(ATTEMPTS)
        self.deferred = win.total(DEFERRED)
        self.queue_deferrals = win.total((QUEUE,))
        judged = self.attempts >= a.min_volume and self.attempts > 0
        rate = percent(self.deferred, self.attempts)
        yield metric("deferral_rate", round(rate, 4), uom="%", min=0, max=100,
                     context="total" if judged else "rate_info")
        yield metric("attempts", self.attempts, context="info", min=0)
        yield metric("deferred", self.deferred, context="info", min=0)
        yield metric("delivered", win.total(("d",)), context="info", min=0)
        yield metric("bounced", win.total(("b",)), context="info", min=0)
        yield metric("queue_deferrals", self.queue_deferrals, context="info", min=0)
        details: dict[str, object] = {
            "window_minutes": win.window_minutes,
            "attempts": self.attempts,
            "deferred": self.deferred,
            "queue_deferrals": self.queue_deferrals,
            "deferral_rate": round(rate, 4),
            "reasons": dict(win.top_reasons("t")),
            "reason_classes": win.reason_counts(DEFERRED),
        }
        yield from self.judge_dimensions(win, self.items, details)
        outliers, uniform = find_outliers(
            win, min_volume=a.outlier_min_volume, factor=a.outlier_factor,
            min_diff=a.outlier_min_diff,
        )
        yield metric("outlier_ips", len(outliers), context="info", min=0)
        for o in outliers:
            yield self.outliers.metric(o, f"outlier {o.domain} {o.ip}", round(o.rate, 4),
                                       context="outlier", uom="%")
        for domain in uniform:
            run.long.append(
                f"domain {domain}: every source IP defers alike (a configuration or "
                "receiving-side problem, not one listed IP)"
            )
        details["outliers"] = [
            {"domain": o.domain, "ip": o.ip, "rate": round(o.rate, 4),
             "peers_rate": round(o.peers_rate, 4), "attempts": o.attempts}
            for o in outliers[: a.max_items]
        ]
        run.details = details
        run.primary = "deferral_rate"

    def outlier_text(self, m: nagiosplugin.Metric, ctx: object) -> str:
        o = self.outliers[m.name]
        return (
            f"source IP {o.ip} defers {pct(o.rate)} of {human(o.attempts)} for {o.domain} vs "
            f"{pct(o.peers_rate)} on its {o.peers} peer{'s' if o.peers > 1 else ''} "
            "(listed IP?)"
        )

    def reasons(self) -> str:
        win = self.window
        if win is None:
            return ""
        classes = reason_classes_text(win.reason_counts(DEFERRED), 3)
        return "; ".join(t for t in (reasons_text(win.top_reasons("t")),
                                     classes and f"reason classes: {classes}") if t)

    def ok_text(self, results: nagiosplugin.Results) -> str:
        assert self.window is not None
        span = self.window.span
        queue = (f"; {human(self.queue_deferrals)} queue-level deferrals (tq)"
                 if self.queue_deferrals else "")
        if not self.attempts:
            return f"no delivery attempts {span}{queue}"
        return (
            f"deferrals {pct(percent(self.deferred, self.attempts))} of "
            f"{human(self.attempts)} attempts {span}{self.not_judged(self.attempts)}"
            f"{self.items.worst_text(self.args.by)}{queue}"
        )

    def total_text(self, m: nagiosplugin.Metric, ctx: object) -> str:
        return f"overall deferral rate {pct(m.value)} of {human(self.attempts)} attempts"

    def contexts(self) -> list[nagiosplugin.Context]:
        a = self.args
        return [
            *self.rate_contexts(self.total_text, total=(a.warning, a.critical)),
            *self.items.contexts(a.warning, a.critical),
            Flag("outlier", a.outlier_state, self.outlier_text, perf=False),
        ]


def build_parser(plugin: Plugin) -> PluginParser:
    """Options of check_pmta_deferral."""
    p = make_parser(
        plugin, warning="5", critical="15",
        threshold_help="deferral rate in percent, overall and per key",
        connection=False, state=True,
    )
    add_outcome_args(add_acct_args(p))
    p.add_argument(
        "--by", type=parse_dimensions, default=("domain", "ip"), metavar="LIST",
        help="keys judged, comma-separated: domain (recipient domain), ip (dlvSourceIp), "
        "sender, vmta, provider (mailbox provider of the provider map, with its top reason "
        "classes) (default domain,ip)",
    )
    g = p.add_argument_group("outlier source IPs (same domain, far above their peers)")
    g.add_argument("--outlier-factor", type=nonneg_float, default=3.0, metavar="X",
                   help="IP rate at least X times the peers' rate (default %(default)s)")
    g.add_argument("--outlier-min-diff", type=nonneg_float, default=10.0, metavar="POINTS",
                   help="and at least this many percentage points above (default %(default)s)")
    g.add_argument("--outlier-min-volume", type=nonneg_int, default=50, metavar="N",
                   help="attempts an IP needs for a domain to be compared (default %(default)s)")
    g.add_argument("--outlier-state", type=state_choice, default=WARNING, metavar="STATE",
                   help="state for an outlier IP: ok|warning|critical (default warning)")
    return p


PLUGIN = Plugin(
    name="DEFERRAL",
    prog="check_pmta_deferral",
    description="PowerMTA deferral rate and outlier source IPs from the accounting files.",
    build_parser=build_parser,
    build_check=DeferralResource.check,
    discover=DeferralResource.discover,
    discovery=("sources", "domains", "vmtas"),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of check_pmta_deferral."""
    return PLUGIN.main(argv)


if __name__ == "__main__":
    sys.exit(main())
