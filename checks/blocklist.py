"""check_pmta_blocklist: source IPs rejected by receivers that name a public blocklist.

Counts the rejections (`b`, `t` and `tq` records) whose reply names a blocklist, the outcomes
engine's `blocklist` reason class (Spamhaus, Barracuda, SpamCop, Outlook.com's S3150 list,
Proofpoint ...), per source IP (`dlvSourceIp`) and list over `--window` (default 24 h).
CRITICAL when a source IP has at least `-c` rejections naming one list (default 3), WARNING at
`-w` (default 1). The status line names the IP, the list and the count; the long output gives
the list's public lookup address for that IP, where the operator checks it and asks for
delisting.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import nagiosplugin

from pmta_snmp.addresses import source_ip_text

from .acctbase import AcctResource, Event, Fields, add_acct_args, add_outcome_args
from .base import (
    Info,
    Labelled,
    Plugin,
    PluginParser,
    Run,
    Summary,
    Threshold,
    human,
    lld,
    make_parser,
    metric,
)

#: Record types whose reply may be a rejection.
REJECTIONS = ("b", "t", "tq")


class AtLeast(nagiosplugin.Range):  # type: ignore[misc]
    """A count range that alerts at `n` or more (`-c 3`), kept as the Nagios range `0:n-1`
    (perfdata and nagiosplugin read that)."""

    n: int

    def __new__(cls, n: int) -> AtLeast:
        rng: AtLeast = super().__new__(cls, f"{n - 1}" if n > 0 else "~:-1")
        rng.n = n
        return rng


def parse_count(text: str) -> nagiosplugin.Range:
    """`3` -> alert at 3 or more; any other text is a Nagios range (`@1:5`, `10:`)."""
    from .base import parse_range

    spec = text.strip()
    if spec.isdigit():
        return AtLeast(int(spec))
    return parse_range(spec)


class CountThreshold(Threshold):
    """A Threshold whose hint for an AtLeast range reads `critical at 3 or more`."""

    def __init__(self, name: str, warning: nagiosplugin.Range | None,
                 critical: nagiosplugin.Range | None, *args: Any, **kw: Any) -> None:
        super().__init__(name, warning, critical, *args, **kw)
        self.given = {1: warning, 2: critical}  # nagiosplugin keeps plain Range copies

    def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
        result = super().evaluate(metric, resource)
        state = int(result.state)
        rng = self.given.get(state)
        if isinstance(rng, AtLeast):
            word = "critical" if state == 2 else "warning"
            return self.result_cls(result.state, f"{word} at {rng.n} or more", metric)
        return result


@dataclass(frozen=True)
class Listing:
    """Rejections of one source IP naming one blocklist in the window."""

    ip: str
    blocklist: str
    count: int

    @property
    def lookup(self) -> str:
        """The list's public lookup page for the IP."""
        from pmta_snmp.outcomes.reasons import lookup_url

        return lookup_url(self.blocklist, self.ip)


def parse_ip(text: str) -> str:
    """--source-ip: an IPv4 or IPv6 address, as PowerMTA writes it."""
    try:
        ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None
    return source_ip_text(text)


class BlocklistResource(AcctResource):
    """New rejections into the window; per source IP and list, the count naming the list."""

    fields: ClassVar[Fields] = {
        "d": ("dlv_source_ip",),  # only to know the IPs in use (discovery, "of N sent")
        **{kind: ("dlv_source_ip", "bounce_cat", "dsn_status", "dsn_diag")
           for kind in REJECTIONS},
    }

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        from pmta_snmp.acct import pair_key

        super().__init__(args, run)
        self.pair_key = pair_key
        self.listings: Labelled[Listing] = Labelled()
        self.found: list[Listing] = []

    def events(self, kind: str, record: Mapping[str, str]) -> tuple[Event, ...]:
        """A delivery counts under its IP; a rejection naming a list under (IP, list)."""
        ip = source_ip_text(record["dlv_source_ip"])
        if kind == "d":
            return (((("ip", ip),), ("d",)),)
        if kind not in REJECTIONS:
            return ()
        outcome = self.outcome(kind, record)
        if outcome.reason != "blocklist":
            return (((("ip", ip),), ("rejected",)),)
        listed = self.pair_key(ip or "(none)", outcome.blocklist or "other")
        return (((("ip", ip), ("total", "all"), ("listed", listed)), ("rejected", "blocklist")),)

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        from pmta_snmp.acct.buckets import OTHER_KEY, split_pair

        a, run = self.args, self.run
        win = self.read()
        run.enter("counting blocklist rejections")
        found = []
        for key, counters in win.totals("listed").items():
            if key == OTHER_KEY:
                continue
            ip, blocklist = split_pair(key)
            if a.source_ip and ip != a.source_ip:
                continue
            found.append(Listing(ip, blocklist, counters.get("blocklist", 0)))
        found.sort(key=lambda x: (-x.count, x.ip, x.blocklist))
        self.found = found
        total = sum(x.count for x in found)
        worst = found[0].count if found else 0
        yield metric("max_rejections", worst, context="info", min=0)
        yield metric("blocklist_rejections", total, context="info", min=0)
        yield metric("listed_ips", len({x.ip for x in found}), context="info", min=0)
        self.listings.reserve(f"ip_{x.ip}_{x.blocklist}" for x in found)
        sent = win.totals("ip")
        for i, x in enumerate(found):
            yield self.listings.metric(x, f"ip_{x.ip}_{x.blocklist}", x.count, min=0,
                                       context="listing" if i < a.max_items else "listing_np")
            if (a.warning is not None and not a.warning.match(x.count)) or (
                    a.critical is not None and not a.critical.match(x.count)):
                run.note(f"{x.ip} on {x.blocklist}: look it up and ask for delisting at "
                         f"{x.lookup}")
            else:
                run.long.append(f"{x.ip} on {x.blocklist}: {human(x.count)} rejections, "
                                f"{human(sent.get(x.ip, {}).get('d', 0))} delivered; "
                                f"lookup {x.lookup}")
        run.details = {
            "window_minutes": win.window_minutes,
            "blocklist_rejections": total,
            "listings": [{"ip": x.ip, "blocklist": x.blocklist, "count": x.count,
                          "lookup": x.lookup} for x in found[: a.max_items]],
        }
        run.primary = "max_rejections"

    def listing_text(self, m: nagiosplugin.Metric, ctx: object) -> str:
        x = self.listings[m.name]
        assert self.window is not None
        return (f"source IP {x.ip}: {human(x.count)} rejection{'s' if x.count != 1 else ''} "
                f"naming {x.blocklist} {self.window.span}")

    def ok_text(self, results: nagiosplugin.Results) -> str:
        win = self.window
        assert win is not None
        who = f"source IP {self.args.source_ip}: no" if self.args.source_ip else "no"
        if not self.found:
            return f"{who} rejections naming a blocklist {win.span}"
        x = self.found[0]
        return (f"{human(sum(y.count for y in self.found))} rejections naming a blocklist "
                f"{win.span}, below the thresholds; most: source IP {x.ip} on {x.blocklist} "
                f"{human(x.count)}")

    def summary(self) -> Summary:
        return Summary(self.ok_text, max_problems=3)

    def contexts(self) -> list[nagiosplugin.Context]:
        a = self.args
        return [
            Info("info"),
            CountThreshold("listing", a.warning, a.critical, self.listing_text),
            CountThreshold("listing_np", a.warning, a.critical, self.listing_text, perf=False),
        ]

    @classmethod
    def discover(cls, args: argparse.Namespace, run: Run, kind: str) -> list[dict[str, str]]:
        """LLD of the source IPs with deliveries or rejections in the window."""
        from pmta_snmp.acct.buckets import OTHER_KEY

        win = cls(args, run).read()
        return lld(kind, [ip for ip in win.totals("ip") if ip and ip != OTHER_KEY])


def build_parser(plugin: Plugin) -> PluginParser:
    """Options of check_pmta_blocklist."""
    p = make_parser(
        plugin, warning="1", critical="3", range_type=parse_count,
        threshold_help="rejections naming one blocklist per source IP: a number N alerts at N "
        "or more, anything else is a Nagios range",
        connection=False, state=True,
    )
    add_outcome_args(add_acct_args(p, window="24h", min_volume=None))
    p.add_argument("--source-ip", type=parse_ip, metavar="IP",
                   help="check one source IP (dlvSourceIp)")
    return p


PLUGIN = Plugin(
    name="BLOCKLIST",
    prog="check_pmta_blocklist",
    description="PowerMTA source IPs rejected with a reply naming a public blocklist "
    "(Spamhaus, Barracuda, SpamCop, Outlook.com ...), per IP and list, from the accounting "
    "files.",
    build_parser=build_parser,
    build_check=BlocklistResource.check,
    discover=BlocklistResource.discover,
    discovery=("source-ips",),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of check_pmta_blocklist."""
    return PLUGIN.main(argv)


if __name__ == "__main__":
    sys.exit(main())
