"""check_pmta_warmup: source IPs (or VirtualMTAs) warming up, against their daily plan.

`--plan FILE` (TOML, README "check_pmta_warmup's plan") gives per source IP or VirtualMTA a
start date and a list of daily caps, day 1 first, optionally per provider. Each run compares
today's deliveries (`d` records logged since midnight in the plan's time zone) with today's
cap: WARNING above it (`-w 100`, percent of the cap), CRITICAL above 150 % of it (`-c 150`).
A warming IP whose deferral, block-bounce or complaint rate today is above
`--deferral-warning`, `--block-warning` or `--complaint-warning` is WARNING too: hold the
ramp. Otherwise OK with "day N of M, X of Y sent". A missing or invalid plan is exit 3 naming
the file and the problem.

Only the records of the planned IPs and VirtualMTAs are counted (quarter-hour buckets over the
last 26 hours, so that the day since midnight is always inside); a first run reads them back
by timestamp. Block bounces and complaints are the outcomes engine's classes.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any, ClassVar

import nagiosplugin

from .acctbase import AcctResource, Event, Fields, add_acct_args, add_outcome_args, percent
from .base import (
    WARNING,
    Flag,
    Info,
    Labelled,
    Plugin,
    PluginError,
    PluginParser,
    Run,
    Summary,
    Threshold,
    human,
    lld,
    make_parser,
    metric,
    parse_range,
    pct,
)

DEFAULT_PLAN = "/etc/pmta-snmp/warmup.toml"
#: Counted hours: a whole day since local midnight (25 h on the day clocks go back) is inside.
WINDOW_SECONDS = 26 * 3600
_TOP_KEYS = frozenset({"timezone", "warmup"})
_RAMP_KEYS = frozenset({"source_ip", "vmta", "start", "caps", "providers"})


class PlanError(PluginError):
    """A plan file that cannot be used: the message names the file and the problem."""


@dataclass(frozen=True)
class Ramp:
    """One warming source IP or VirtualMTA: day 1 is `start`, `caps[n - 1]` the deliveries
    allowed on day n, and per provider its own caps."""

    source_ip: str
    vmta: str
    start: date
    caps: tuple[int, ...]
    providers: tuple[tuple[str, tuple[int, ...]], ...] = ()
    #: Where the ramp is in its plan file, for messages (`plan.toml line 12 [[warmup]] #2`).
    where: str = ""

    @property
    def key(self) -> str:
        """The window's key of this ramp."""
        return f"ip {self.source_ip}" if self.source_ip else f"vmta {self.vmta}"

    @property
    def name(self) -> str:
        """`198.51.100.20` or `VirtualMTA warm-1`."""
        return self.source_ip or f"VirtualMTA {self.vmta}"

    def day(self, today: date) -> int:
        """Day number of `today` (1 on the start date; below 1 before it)."""
        return (today - self.start).days + 1

    def cap(self, day: int, caps: tuple[int, ...] | None = None) -> int | None:
        """The cap of `day` (of `caps`, default the ramp's own); None outside the list."""
        caps = self.caps if caps is None else caps
        return caps[day - 1] if 1 <= day <= len(caps) else None


@dataclass(frozen=True)
class Plan:
    """A warm-up plan: its time zone and ramps."""

    path: str
    timezone: str
    zone: tzinfo
    ramps: tuple[Ramp, ...]

    def today(self, now: float | None = None) -> date:
        """Today in the plan's time zone."""
        return datetime.fromtimestamp(time.time() if now is None else now, self.zone).date()

    def midnight_minute(self, day: date) -> int:
        """The epoch minute at which `day` starts in the plan's time zone."""
        start = datetime(day.year, day.month, day.day, tzinfo=self.zone)
        return int(start.timestamp() // 60)

    @property
    def per_provider(self) -> bool:
        """Some ramp has caps per provider."""
        return any(r.providers for r in self.ramps)

    def check_providers(self, provider_ids: Sequence[str]) -> None:
        """PlanError naming the ramp when a provider is not in `provider_ids` (the map's)."""
        for ramp in self.ramps:
            for pid, _ in ramp.providers:
                if pid not in provider_ids:
                    raise PlanError(f"{ramp.where}: unknown provider {pid!r} (the provider map "
                                    f"has {', '.join(provider_ids)})")

    @property
    def signature(self) -> str:
        """What the plan makes the plugin count (names its state file)."""
        text = "\0".join(sorted(r.key for r in self.ramps)) + ("\0p" if self.per_provider else "")
        return "warmup " + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def load_plan(path: str) -> Plan:
    """The plan in `path`; PlanError naming the file (and the line of the `[[warmup]]` table)
    and the problem. Provider ids are checked by `Plan.check_providers`."""
    import tomllib

    from pmta_snmp.outcomes.files import line_of

    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise PlanError(f"warmup plan {path} does not exist (check --plan)") from None
    except OSError as exc:
        raise PlanError(f"warmup plan {path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
        doc = tomllib.loads(text)
    except UnicodeDecodeError:
        raise PlanError(f"warmup plan {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"warmup plan {path}: not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise PlanError(f"warmup plan {path}: unknown key {unknown[0]!r} (timezone and "
                        "[[warmup]] tables)")
    name, zone = _zone(path, doc.get("timezone", "UTC"))
    tables = doc.get("warmup")
    if not isinstance(tables, list) or not tables or \
            not all(isinstance(t, dict) for t in tables):
        raise PlanError(f"warmup plan {path}: no [[warmup]] tables (one per source IP or "
                        "VirtualMTA)")
    ramps: list[Ramp] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(tables, start=1):
        line = line_of(text, "[[warmup]]", i)
        where = f"warmup plan {path}" + (f" line {line}" if line else "") + \
            f" [[warmup]] #{i}"
        ramp = _ramp(where, table)
        if ramp.key in seen:
            raise PlanError(f"{where}: {ramp.name} is planned twice (also [[warmup]] "
                            f"#{seen[ramp.key]})")
        seen[ramp.key] = i
        ramps.append(ramp)
    return Plan(path, name, zone, tuple(ramps))


def _zone(path: str, value: object) -> tuple[str, tzinfo]:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(value, str) or not value.strip():
        raise PlanError(f"warmup plan {path}: timezone must be a time zone name "
                        "(Europe/Berlin, America/New_York, UTC)")
    name = value.strip()
    try:
        return name, ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PlanError(f"warmup plan {path}: unknown timezone {name!r} (an IANA name like "
                        "Europe/Berlin, or UTC)") from None


def _caps(where: str, what: str, value: object) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise PlanError(f"{where}: {what} must be a list of whole numbers above 0 (deliveries "
                        "per day, day 1 first)")
    return tuple(value)


def _ramp(where: str, table: Mapping[str, Any]) -> Ramp:
    extra = sorted(set(table) - _RAMP_KEYS)
    if extra:
        raise PlanError(f"{where}: unknown key {extra[0]!r} (source_ip or vmta, start, caps, "
                        "providers)")
    ip, vmta = table.get("source_ip"), table.get("vmta")
    if (ip is None) == (vmta is None):
        raise PlanError(f"{where}: give either source_ip or vmta")
    source_ip = ""
    if ip is not None:
        try:
            source_ip = str(ipaddress.ip_address(str(ip).strip()))
        except ValueError:
            raise PlanError(f"{where}: source_ip {ip!r} is not an IP address") from None
    if vmta is not None and (not isinstance(vmta, str) or not vmta.strip()):
        raise PlanError(f"{where}: vmta must be a VirtualMTA name")
    start = table.get("start")
    if isinstance(start, str):
        try:
            start = date.fromisoformat(start.strip())
        except ValueError:
            start = None
    if not isinstance(start, date) or isinstance(start, datetime):
        raise PlanError(f"{where}: start must be a date (start = 2025-03-03)")
    caps = _caps(where, "caps", table.get("caps"))
    providers = table.get("providers", {})
    if not isinstance(providers, dict):
        raise PlanError(f"{where}: providers must be a table (gmail = [50, 100, ...])")
    per_provider = []
    for pid, value in providers.items():
        per_provider.append((pid, _caps(where, f"providers.{pid}", value)))
    return Ramp(source_ip, (vmta or "").strip(), start, caps, tuple(per_provider), where)


@dataclass
class Today:
    """One ramp's day: its number, today's cap and counts."""

    ramp: Ramp
    day: int
    cap: int | None
    counts: Mapping[str, int]
    #: Deliveries today per provider (ramps with caps per provider).
    sent_to: Mapping[str, int]

    @property
    def sent(self) -> int:
        """Deliveries today."""
        return self.counts.get("d", 0)

    @property
    def attempts(self) -> int:
        """Deliveries, bounces and deferrals today."""
        return sum(self.counts.get(c, 0) for c in ("d", "b", "t"))


#: Hold-the-ramp rates: (name, numerator, denominator, words).
RATES = (
    ("deferral", ("t",), ("d", "b", "t"), "deferral rate"),
    ("block", ("block",), ("d", "b"), "block-bounce rate"),
    ("complaint", ("complaint",), ("d",), "complaint rate"),
)


def parse_ip_text(text: str) -> str:
    """A record's source IP as the plan writes it ("" when it is none)."""
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        return ""


def provider_ids(args: argparse.Namespace) -> tuple[str, ...]:
    """The ids of --provider-map (the shipped map by default), for the plan's providers."""
    from pmta_snmp.outcomes import OutcomesFileError
    from pmta_snmp.outcomes.providers import default_providers, load_providers

    try:
        return (load_providers(args.provider_map) if args.provider_map
                else default_providers()).ids
    except OutcomesFileError as exc:
        raise PluginError(str(exc)) from None


class WarmupResource(AcctResource):
    """The planned IPs' and VirtualMTAs' records into the window; today against the plan."""

    fields: ClassVar[Fields] = {
        "d": ("dlv_source_ip", "vmta"),
        "b": ("dlv_source_ip", "vmta", "bounce_cat", "dsn_status", "dsn_diag"),
        "t": ("dlv_source_ip", "vmta"),
        "f": ("column:repSourceIp", "vmta", "column:feedbackType"),
    }

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        from pmta_snmp.acct import pair_key

        super().__init__(args, run)
        self.pair_key = pair_key
        self.plan: Plan | None = None
        self.by_ip: dict[str, Ramp] = {}
        self.by_vmta: dict[str, Ramp] = {}
        self.days: list[Today] = []
        self.items: Labelled[tuple[Today, str, str]] = Labelled()

    def load(self) -> Plan:
        """Read --plan (provider ids checked against the provider map when it names some)."""
        self.run.enter(f"reading the warmup plan {self.args.plan}")
        plan = load_plan(self.args.plan)
        if plan.per_provider:
            plan.check_providers(provider_ids(self.args))
        self.plan = plan
        self.by_ip = {r.source_ip: r for r in plan.ramps if r.source_ip}
        self.by_vmta = {r.vmta: r for r in plan.ramps if r.vmta}
        return plan

    def counted_fields(self) -> Fields:
        assert self.plan is not None
        if not self.plan.per_provider:
            return self.fields
        return {**self.fields, "d": (*self.fields["d"], "rcpt_domain", "dsn_mta_host")}

    def counting(self) -> str:
        assert self.plan is not None
        return self.plan.signature

    def events(self, kind: str, record: Mapping[str, str]) -> tuple[Event, ...]:
        """A planned IP's or VirtualMTA's delivery (per provider too), bounce (and block
        bounce), deferral or complaint; nothing for the others."""
        ip = parse_ip_text(record["column:repSourceIp" if kind == "f" else "dlv_source_ip"])
        ramps = [r for r in (self.by_ip.get(ip), self.by_vmta.get(record["vmta"].strip()))
                 if r is not None]
        if not ramps:
            return ()
        provider = None
        if kind == "d":
            counters: tuple[str, ...] = ("d",)
            if any(r.providers for r in ramps):
                provider = self.outcome(kind, record).provider
        elif kind == "b":
            block = self.outcome(kind, record).result == "block_bounce"
            counters = ("b", "block") if block else ("b",)
        elif kind == "t":
            counters = ("t",)
        elif kind == "f" and self.outcome(kind, record).complaint:
            counters = ("complaint",)
        else:
            return ()
        keys: list[tuple[str, str | None]] = [("ramp", r.key) for r in ramps]
        if provider is not None:
            keys += [("rprov", self.pair_key(r.key, provider)) for r in ramps if r.providers]
        return ((tuple(keys), counters),)

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        from pmta_snmp.acct.buckets import split_pair

        a, run = self.args, self.run
        plan = self.load()
        win = self.read()
        run.enter("comparing today with the plan")
        today = plan.today()
        midnight = plan.midnight_minute(today)
        totals = win.totals_since("ramp", midnight)
        per_provider: dict[str, dict[str, int]] = {}
        for key, counters in win.totals_since("rprov", midnight).items():
            ramp_key, provider = split_pair(key)
            per_provider.setdefault(ramp_key, {})[provider] = counters.get("d", 0)
        run.long.append(f"today is {today.isoformat()} in {plan.timezone} (the plan's time "
                        "zone)")
        worst = 0.0
        details = []
        self.items.reserve(f"{r.key}_{what}" for r in plan.ramps
                           for what in ("sent", "cap_used", *(n for n, *_ in RATES)))
        for ramp in plan.ramps:
            day = ramp.day(today)
            t = Today(ramp, day, ramp.cap(day), totals.get(ramp.key, {}),
                      per_provider.get(ramp.key, {}))
            self.days.append(t)
            row: dict[str, object] = {"name": ramp.name, "day": day, "days": len(ramp.caps),
                                      "sent": t.sent, "cap": t.cap}
            details.append(row)
            yield self.items.metric((t, "sent", ""), f"{ramp.key}_sent", t.sent,
                                    context="early" if day < 1 else "info", min=0)
            if t.cap is None:
                continue
            used = 100.0 * t.sent / t.cap
            worst = max(worst, used)
            row["cap_used"] = round(used, 2)
            yield self.items.metric((t, "cap", ""), f"{ramp.key}_cap_used", round(used, 2),
                                    context="cap", uom="%", min=0)
            for pid, caps in ramp.providers:
                cap = ramp.cap(day, caps)
                if cap is None:
                    continue
                p_used = 100.0 * t.sent_to.get(pid, 0) / cap
                worst = max(worst, p_used)
                yield self.items.metric((t, "provider", pid), f"{ramp.key}_{pid}_cap_used",
                                        round(p_used, 2), context="cap", uom="%", min=0)
            judged = t.attempts >= a.min_volume and t.attempts > 0
            for name, num, den, _ in RATES:
                whole = sum(t.counts.get(c, 0) for c in den)
                value = percent(sum(t.counts.get(c, 0) for c in num), whole)
                row[f"{name}_rate"] = round(value, 4)
                yield self.items.metric((t, name, ""), f"{ramp.key}_{name}", round(value, 4),
                                        context=name if judged else "rate_info", uom="%",
                                        min=0, max=100)
        yield metric("max_cap_used", round(worst, 2), context="info", uom="%", min=0)
        run.details = {"timezone": plan.timezone, "today": today.isoformat(),
                       "ramps": details}
        run.primary = "max_cap_used"

    # -- texts -----------------------------------------------------------------------------

    def describe(self, m: nagiosplugin.Metric, ctx: object) -> str:
        t, what, pid = self.items[m.name]
        ramp = t.ramp
        if what == "sent":
            if t.day < 1:
                return (f"{ramp.name} sent {human(t.sent)} today, before its plan starts on "
                        f"{ramp.start.isoformat()}")
            return f"{ramp.name} sent {human(t.sent)} today"
        if what == "cap":
            return (f"{ramp.name} sent {human(t.sent)} today, {pct(m.value)} of its day-{t.day} "
                    f"cap {human(t.cap or 0)}")
        if what == "provider":
            caps = dict(ramp.providers)[pid]
            cap = ramp.cap(t.day, caps) or 0
            return (f"{ramp.name} sent {human(t.sent_to.get(pid, 0))} to {pid} today, "
                    f"{pct(m.value)} of its day-{t.day} {pid} cap {human(cap)}")
        num, den, words = next((n, d, w) for name, n, d, w in RATES if name == what)
        counts = (f"{human(sum(t.counts.get(c, 0) for c in num))} of "
                  f"{human(sum(t.counts.get(c, 0) for c in den))}")
        return f"{ramp.name} {words} today {pct(m.value)} ({counts}): hold the ramp"

    def ok_text(self, results: nagiosplugin.Results) -> str:
        parts = []
        for t in self.days:
            ramp = t.ramp
            if t.day < 1:
                parts.append(f"{ramp.name} starts {ramp.start.isoformat()}")
            elif t.cap is None:
                parts.append(f"{ramp.name} warmed up (plan ended after day {len(ramp.caps)}), "
                             f"{human(t.sent)} sent today")
            else:
                parts.append(f"{ramp.name} day {t.day} of {len(ramp.caps)}, {human(t.sent)} of "
                             f"{human(t.cap)} sent")
        return "; ".join(parts)

    def summary(self) -> Summary:
        return Summary(self.ok_text, max_problems=3)

    def contexts(self) -> list[nagiosplugin.Context]:
        a = self.args
        return [
            Info("info"),
            Threshold("cap", a.warning, a.critical, self.describe, unit="%"),
            Threshold("deferral", a.deferral_warning, None, self.describe, unit="%"),
            Threshold("block", a.block_warning, None, self.describe, unit="%"),
            Threshold("complaint", a.complaint_warning, None, self.describe, unit="%"),
            Threshold("rate_info", None, None, self.describe),
            Flag("early", WARNING, self.describe),
        ]

    @classmethod
    def discover(cls, args: argparse.Namespace, run: Run, kind: str) -> list[dict[str, str]]:
        """LLD of the plan's source IPs or VirtualMTAs."""
        plan = cls(args, run).load()
        if kind == "vmtas":
            return lld(kind, [r.vmta for r in plan.ramps if r.vmta])
        return lld(kind, [r.source_ip for r in plan.ramps if r.source_ip])


def build_parser(plugin: Plugin) -> PluginParser:
    """Options of check_pmta_warmup."""
    p = make_parser(
        plugin, warning="100", critical="150",
        threshold_help="today's deliveries in percent of today's cap, per source IP or "
        "VirtualMTA and per provider",
        connection=False, state=True,
    )
    g = add_acct_args(p, window=None, min_volume=50, volume="attempts today")
    p.set_defaults(window=WINDOW_SECONDS)
    add_outcome_args(g)
    p.add_argument("--plan", default=DEFAULT_PLAN, metavar="FILE",
                   help="the warm-up plan (TOML; README \"check_pmta_warmup's plan\", example "
                   f"contrib/warmup/plan.toml.example); default {DEFAULT_PLAN}")
    h = p.add_argument_group("hold the ramp: a warming IP's rates today (WARNING)")
    h.add_argument("--deferral-warning", type=parse_range, default=parse_range("10"),
                   metavar="RANGE", help="deferrals of attempts in percent (default 10)")
    h.add_argument("--block-warning", type=parse_range, default=parse_range("2"),
                   metavar="RANGE", help="block bounces of deliveries and bounces in percent "
                   "(default 2)")
    h.add_argument("--complaint-warning", type=parse_range, default=parse_range("0.1"),
                   metavar="RANGE", help="complaints of deliveries in percent (default 0.1)")
    return p


PLUGIN = Plugin(
    name="WARMUP",
    prog="check_pmta_warmup",
    description="PowerMTA source IPs and VirtualMTAs warming up: today's deliveries against "
    "the plan's daily cap, and their deferral, block and complaint rates (hold the ramp), "
    "from the accounting files.",
    build_parser=build_parser,
    build_check=WarmupResource.check,
    discover=WarmupResource.discover,
    discovery=("source-ips", "vmtas"),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of check_pmta_warmup."""
    return PLUGIN.main(argv)


if __name__ == "__main__":
    sys.exit(main())
