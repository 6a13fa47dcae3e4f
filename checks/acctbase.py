"""What the accounting-file plugins share (bounce, deferral, TLS).

Each run reads only the records added since the last run (pmta_snmp.acct.AcctReader: offset
and inode in the state file, rotation handled, every CSV layout and JSON accounting) and adds
them to per-minute counters (pmta_snmp.acct.MinuteBuckets) kept in the same state file, so
rates are judged over a rolling window (default one hour) without re-reading the files.

The plugins never see single records: a plugin names the fields it needs per record type
(`AcctResource.fields`), the reader counts the records per (type, minute, those fields) without
building them (pmta_snmp.acct.tally: csv, or the C scanner where it is built), and the plugin's
`events()` turns each distinct combination into counters once, weighted by how many records
had it.

A first run (no state yet, or a lost one) reads back one window of existing records, found by
their timeLogged (pmta_snmp.acct.seek: a binary search, not a read of the whole file), so the
plugin judges at once instead of being blind for a window; `--from-start` reads everything
there is. A read stopped by the deadline saves where it got and the rest is read next run.

Counters are kept per minute for windows up to two hours, per 5 minutes up to eight hours and
per quarter hour beyond (a day's window stays a hundred buckets, not 1,440), so a long window's
edge moves in those steps. The reputation plugins classify what they count with the one
classifier of the outcomes engine (:mod:`pmta_snmp.outcomes.classify`), built only when a run
has records to classify (loading its rule files is most of such a run's start-up) or is given
--provider-map or --reason-rules (checked at every run).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import nagiosplugin

from pmta_snmp.argtypes import nonneg_int
from pmta_snmp.outcomes.reasons import normalize_reason

from .base import (
    Info,
    Labelled,
    PluginError,
    PluginParser,
    PluginResource,
    Run,
    Summary,
    Threshold,
    duration,
    human,
    input_key,
    lld,
    pct,
    positive_duration,
    top_items,
)

if TYPE_CHECKING:
    from pmta_snmp.acct import MinuteBuckets, Rate
    from pmta_snmp.outcomes.classify import Classifier, Outcome

DEFAULT_ACCT = "/var/log/pmta/acct.csv"
#: Keys kept per dimension in the state (the rest fold into "(other)"): bounds the state file.
MAX_KEYS = 500
#: dsnDiag reasons are grouped by their first 60 characters (operating rules §5).
DIAG_CHARS = 60

#: What one record counts: ((dimension, key), ...) and the counters it adds one to.
Event = tuple[tuple[tuple[str, str | None], ...], tuple[str, ...]]
#: The fields a plugin reads, per record type (names of pmta_snmp.acct.tally.FIELDS).
Fields = Mapping[str, tuple[str, ...]]
#: A record's wanted fields by name -> its events (see AcctResource.events).
EventFunction = Callable[[str, Mapping[str, str]], Iterable[Event]]
#: Distinct (type, fields) whose events are remembered during one read.
_KNOWN = 50_000
#: A first run reads back from this many seconds before the window: records are logged about
#: in time order (threads differ by a second); the older ones are left out while counting.
SEEK_SLACK = 120


def add_acct_args(p: PluginParser, *, window: str | None = "1h", min_volume: int | None = 100,
                  volume: str = "attempts") -> argparse._ArgumentGroup:
    """Options every accounting plugin has (no --window when `window` is None: the plugin
    sets `args.window` itself; no --min-volume when `min_volume` is None: it judges no rate);
    returns the group for the plugin's own file options."""
    g = p.add_argument_group("accounting files")
    g.add_argument(
        "--acct-file", default=DEFAULT_ACCT, metavar="PATH|GLOB",
        help="accounting file or glob (rotated acct-YYYY-MM-DD-NNNN.csv, .json for JSON "
        f"accounting, .gz read too); default {DEFAULT_ACCT}",
    )
    if window is not None:
        g.add_argument(
            "--window", type=positive_duration, default=duration(window), metavar="DURATION",
            help=f"rolling window for rates (default {window})",
        )
    if min_volume is not None:
        g.add_argument(
            "--min-volume", type=nonneg_int, default=min_volume, metavar="N",
            help=f"judge a rate only with at least N {volume} in the window "
            "(default %(default)s)",
        )
    g.add_argument(
        "--from-start", action="store_true",
        help="first run: read all existing records (by default a first run reads back one "
        "--window of them, found by timeLogged)" if window is not None else
        "first run: read all existing records (by default a first run reads back the "
        "records it needs, found by timeLogged)",
    )
    return g


def add_outcome_args(g: argparse._ArgumentGroup) -> None:
    """Options of the plugins that classify records by provider and reason class."""
    g.add_argument(
        "--provider-map", metavar="FILE",
        help="provider map (TOML, like contrib/outcomes/providers.toml); default: the shipped "
        "one",
    )
    g.add_argument(
        "--reason-rules", metavar="FILE",
        help="reason rules (TOML, like contrib/outcomes/reasons.toml); default: the shipped "
        "one",
    )


def bucket_width(window_minutes: int) -> int:
    """Minutes per counter bucket for a window (1 up to 2 h, 5 up to 8 h, else 15): each
    divides a quarter hour, so local midnight is a bucket edge in every time zone."""
    if window_minutes <= 120:
        return 1
    return 5 if window_minutes <= 480 else 15


@dataclass
class Window:
    """The counters after this run's read, and what the read saw. Counters are per bucket of
    `bucket_minutes` minutes; `now_bucket` is the bucket of now (epoch minute // width)."""

    buckets: MinuteBuckets
    now_bucket: int
    window_minutes: int
    bucket_minutes: int = 1
    new_records: int = 0
    first_run: bool = False
    timed_out: bool = False
    skipped_rows: int = 0
    sources: list[str] = field(default_factory=list)
    #: Columns a plugin requires that the layout last read lacked: file -> column names.
    lacking: dict[str, list[str]] = field(default_factory=dict)

    def rates(self, dimension: str, numerator: Collection[str], denominator: Collection[str],
              min_volume: int = 0) -> dict[str, Rate]:
        """Per key over the window (keys with fewer than min_volume attempts are left out)."""
        return self.buckets.rates(dimension, numerator, denominator,
                                  now_minute=self.now_bucket, min_volume=min_volume)

    def totals(self, dimension: str) -> dict[str, dict[str, int]]:
        """key -> counter -> sum over the window."""
        return self.buckets.totals(dimension, now_minute=self.now_bucket)

    def totals_since(self, dimension: str, minute: int) -> dict[str, dict[str, int]]:
        """key -> counter -> sum over the buckets from the one holding epoch `minute` (a
        bucket edge, such as local midnight) to now."""
        span = max(0, self.now_bucket - minute // self.bucket_minutes + 1)
        return self.buckets.totals(dimension, now_minute=self.now_bucket, minutes=span)

    def total(self, counters: Collection[str]) -> int:
        """Sum of `counters` over everything (the `total` dimension)."""
        got = self.totals("total").get("all", {})
        return sum(got.get(c, 0) for c in counters)

    def reason_counts(self, counters: Collection[str], provider: str | None = None
                      ) -> dict[str, int]:
        """Reason class -> records with any of `counters` (of one provider: the `preason`
        dimension, else the `reason` one), over the window."""
        from pmta_snmp.acct.buckets import OTHER_KEY, split_pair

        out: dict[str, int] = {}
        for key, found in self.totals("reason" if provider is None else "preason").items():
            if key == OTHER_KEY:
                continue
            reason = key
            if provider is not None:
                owner, reason = split_pair(key)
                if owner != provider:
                    continue
            n = sum(found.get(c, 0) for c in counters)
            if n:
                out[reason] = out.get(reason, 0) + n
        return out

    def top_reasons(self, counter: str, n: int = 3) -> list[tuple[str, int]]:
        """The n commonest dsnDiag reasons for `counter` (never the folded "(other)")."""
        values = {k: float(c.get(counter, 0)) for k, c in self.totals("diag").items()
                  if k != "(other)"}
        return [(k, int(v)) for k, v in top_items(values, n) if v > 0]

    @property
    def span(self) -> str:
        """`in the last 60 min`; whole hours from two on: `in the last 24 h`."""
        return f"in the last {minutes_text(self.window_minutes)}"


def minutes_text(minutes: int) -> str:
    """`60 min`, `90 min`; whole hours from two on: `24 h`."""
    if minutes >= 120 and minutes % 60 == 0:
        return f"{human(minutes // 60)} h"
    return f"{human(minutes)} min"


def read_window(run: Run, args: argparse.Namespace, *, fields: Fields,
                event: EventFunction, required: Fields | None = None,
                counting: str = "") -> Window:
    """Read new records from --acct-file into the window kept in the state file.

    `fields` names what `event` needs per record type (the types counted); `event` is called
    once per distinct (type, fields) and its events are added as often as records had them.
    `required` names fields without which a type means nothing: under a layout lacking one,
    those records are not counted, and `Window.lacking` names the columns (kept in the state
    until a run reads records in another layout). `counting` names what the events count when
    options change it (`--by provider`, a plan's IPs): each has its own state file, so two
    checks with different options on one file do not reset each other's window.
    """
    from pmta_snmp.acct import AcctReader, AcctState, MinuteBuckets, epoch_minute
    from pmta_snmp.acct.columns import COLUMN_PREFIX
    from pmta_snmp.acct.seek import state_since
    from pmta_snmp.acct.tally import TallySpec, speedups
    from pmta_snmp.logtail import expand_paths

    spec: str = args.acct_file
    if any(ch in spec for ch in "*?["):
        if not expand_paths(spec):
            raise PluginError(f"no accounting file matches {spec}")
    elif not os.path.exists(spec):
        raise PluginError(f"accounting file {spec} does not exist (check --acct-file)")
    minutes = max(1, math.ceil(args.window / 60))
    width = bucket_width(minutes)
    count = math.ceil(minutes / width)  # buckets in the window
    now_bucket = epoch_minute(time.time()) // width
    since_minute = (now_bucket - count + 1) * width
    state = run.state_file(*([input_key(spec, counting)] if counting else [input_key(spec)]))
    run.enter(f"locking state file {state.path}")
    with state.transaction() as doc:
        run.loaded(state)
        buckets = MinuteBuckets.from_json(doc.get("buckets"), window_minutes=count,
                                          max_keys=MAX_KEYS)
        acct_state = AcctState.from_json(doc.get("acct"))
        # A state kept under another bucket width or counting (the same --instance with
        # other options) is no window of this one.
        first_run = (acct_state is None or acct_state.spec != spec
                     or doc.get("bucket_minutes", 1) != width
                     or doc.get("counting", "") != counting)
        found_back = False
        if first_run:
            # Whatever the window held came from another reading: start it afresh.
            buckets = MinuteBuckets(count, max_keys=MAX_KEYS)
            acct_state = None
            if not args.from_start:
                run.enter(f"finding the records of the last {minutes_text(minutes)} in {spec}")
                acct_state = state_since(spec, since_minute * 60 - SEEK_SLACK)
                found_back = acct_state is not None
        # JSON accounting keeps the columns AcctRecord has no field for only when asked.
        named = any(name.startswith(COLUMN_PREFIX) or name == "delay"
                    for names in fields.values() for name in names)
        reader = AcctReader(spec, acct_state, from_start=args.from_start,
                            deadline=run.soft_deadline(), keep_extra=named)
        win = Window(buckets, now_bucket, minutes, width, first_run=first_run)
        run.enter(f"reading {spec}")
        started = time.monotonic()
        # Records older than the window are left out while counting.
        tally = TallySpec.of(fields, since_minute=since_minute, required=required)
        known: dict[tuple[str, tuple[str, ...]], tuple[Event, ...]] = {}
        for counts in reader.tally(tally):
            adds: list[tuple[int, Iterable[tuple[str, str | None]], Iterable[str], int]] = []
            for (kind, minute, values), n in counts.items():
                events = known.get((kind, values))
                if events is None:
                    events = tuple(event(kind, dict(zip(fields[kind], values, strict=True))))
                    if len(known) < _KNOWN:
                        known[(kind, values)] = events
                # A record logged ahead of this host's clock counts as of now: dated a year
                # ahead, it would otherwise stay in the window for that year.
                when = now_bucket if minute is None else min(minute // width, now_bucket)
                adds += [(when, keys, counters, n) for keys, counters in events]
            buckets.add_events(adds, now_minute=now_bucket)
        win.new_records = reader.records_read
        # -v: what this run read, and whether the fast C scanner did the CSV counting.
        run.long.append(
            f"accounting: {reader.records_read:,} new records of the counted types read in "
            f"{time.monotonic() - started:.2f} s"
            + ("" if speedups() is not None else
               " (pure Python: the C scanner pmta_snmp._csvtally is not in use)"))
        if reader.headers_read:  # the layouts this run read in
            lacking = reader.lacking(tally)
            if lacking:
                doc["lacking"] = lacking
            else:
                doc.pop("lacking", None)
        win.lacking = _lacking_from_json(doc.get("lacking"))
        run.enter(f"saving state file {state.path}")
        buckets.prune(now_bucket)
        doc["acct"] = reader.state.to_json()
        doc["buckets"] = buckets.to_json()
        if width == 1:
            doc.pop("bucket_minutes", None)
        else:
            doc["bucket_minutes"] = width
        if counting:
            doc["counting"] = counting
        else:
            doc.pop("counting", None)
    win.timed_out = reader.timed_out
    win.skipped_rows = reader.skipped_rows
    win.sources = list(reader.tail.sources)
    for warning in reader.warnings:
        run.note(warning)
    if found_back:
        run.note(f"first run: read back the records of the last {minutes_text(minutes)} of "
                 f"{spec}, found by timeLogged")
    elif win.first_run and not args.from_start:
        run.note(
            f"first run: {spec} has no timeLogged to find the last {minutes_text(minutes)} by: "
            f"reading starts at its end now and rates build up over {minutes_text(minutes)} "
            "(--from-start reads the existing records)"
        )
    if win.skipped_rows:
        run.note(f"{win.skipped_rows} malformed accounting rows skipped")
    if win.timed_out:
        run.stopped_early(spec, f"{human(win.new_records)} records read")
    return win


def _lacking_from_json(value: object) -> dict[str, list[str]]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): [str(c) for c in v] for k, v in value.items() if isinstance(v, list)}


def diag_key(text: str) -> str | None:
    """A dsnDiag normalised (no addresses, ids, varying numbers), its first 60 characters."""
    text = normalize_reason("", text)[:DIAG_CHARS].rstrip()
    return text or None


# ---------------------------------------------------------------------------------------------
# The resource and per-key rates as metrics
# ---------------------------------------------------------------------------------------------


#: Dimension -> how it is named in texts and perfdata labels.
DIMENSIONS = {
    "sender": "sender domain",
    "domain": "domain",
    "ip": "source IP",
    "vmta": "VirtualMTA",
    "provider": "provider",
}
#: How many reason classes a provider's text names.
TOP_CLASSES = 2

#: A tally field name -> the AcctRecord attribute its value stands for (see outcome_of).
_RECORD_ATTRS = {"rcpt_domain": "rcpt", "sender_domain": "orig", "dsn_mta_host": "dsn_mta"}


def load_classifier(args: argparse.Namespace) -> Classifier:
    """The outcomes engine's classifier with --provider-map and --reason-rules (the shipped
    files by default); a file that cannot be used ends the run UNKNOWN naming it."""
    from pmta_snmp.outcomes import OutcomesFileError
    from pmta_snmp.outcomes.classify import Classifier
    from pmta_snmp.outcomes.providers import load_providers
    from pmta_snmp.outcomes.reasons import load_reasons

    try:
        providers = load_providers(args.provider_map) if getattr(args, "provider_map", None) \
            else None
        rules = load_reasons(args.reason_rules) if getattr(args, "reason_rules", None) else None
    except OutcomesFileError as exc:
        raise PluginError(str(exc)) from None
    return Classifier(providers, rules)


def outcome_of(classifier: Classifier, kind: str, values: Mapping[str, str]) -> Outcome:
    """The classifier's outcome of a counted record from its tally fields (a domain stands for
    its address, `dsn_mta_host` for dsnMta, `column:<name>` for that column)."""
    from pmta_snmp.acct.columns import COLUMN_PREFIX
    from pmta_snmp.acct.records import AcctRecord

    attrs: dict[str, str] = {}
    extra: dict[str, str] = {}
    for name, value in values.items():
        if name.startswith(COLUMN_PREFIX):
            extra[name[len(COLUMN_PREFIX):]] = value
        elif name in _RECORD_ATTRS:
            attrs[_RECORD_ATTRS[name]] = f"@{value}" if name.endswith("_domain") and value \
                else value
        else:
            attrs[name] = value
    return classifier.outcome(AcctRecord(kind, extra=extra, **attrs))  # type: ignore[arg-type]


def reason_classes_text(counts: Mapping[str, int], n: int = TOP_CLASSES) -> str:
    """`bad_mailbox 55, reputation 12`: the n commonest reason classes ("" for none)."""
    ranked = top_items({k: float(v) for k, v in counts.items() if v > 0}, n)
    return ", ".join(f"{k} {human(int(v))}" for k, v in ranked)


class AcctResource(PluginResource):
    """A resource over the accounting window: `fields` names the fields read per record type
    (the types counted), `events()` turns one record's fields into counters; `read()` adds this
    run's new records to the window.

    The status line is the plugin's `ok_text()` or the problems, both followed by `reasons()`.
    """

    fields: ClassVar[Fields] = {}
    #: Per record type, the fields without which it is not judged (see read_window), and
    #: what cannot be told without them (for the UNKNOWN line).
    required: ClassVar[Fields] = {}
    required_for: ClassVar[str] = ""

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        super().__init__(args, run)
        self.window: Window | None = None
        self._classifier: Classifier | None = None

    @property
    def classifier(self) -> Classifier:
        """The outcomes engine's classifier, built on first use (see load_classifier)."""
        if self._classifier is None:
            stage = self.run.stage
            self.run.enter("loading the provider map and reason rules")
            self._classifier = load_classifier(self.args)
            self.run.stage = stage
        return self._classifier

    def outcome(self, kind: str, record: Mapping[str, str]) -> Outcome:
        """The classifier's outcome of one counted record (see outcome_of)."""
        return outcome_of(self.classifier, kind, record)

    def counted_fields(self) -> Fields:
        """The fields read per record type (`fields`, unless options change them)."""
        return self.fields

    def counting(self) -> str:
        """What the events count when options change it ("" when they never do): names the
        state file (see read_window)."""
        return ""

    def events(self, kind: str, record: Mapping[str, str]) -> Iterable[Event]:
        """What a record of type `kind` with these `fields` counts: its (dimension, key) pairs
        and counters (see Event). Called once per distinct record, so it may be slow-ish."""
        raise NotImplementedError

    def read(self) -> Window:
        """This run's new records, added to the stored window; UNKNOWN when the layout lacks
        a required column (a 4.0 layout, or record-fields without it)."""
        if getattr(self.args, "provider_map", None) or getattr(self.args, "reason_rules", None):
            # Files given are checked now, not first on the day a record needs them (OK
            # while nothing is classified, UNKNOWN when the first rejection comes).
            _ = self.classifier
        self.window = win = read_window(self.run, self.args, fields=self.counted_fields(),
                                        event=self.events, required=self.required,
                                        counting=self.counting())
        if win.lacking:
            path, columns = next(iter(win.lacking.items()))
            names = " and ".join(columns)
            raise PluginError(
                f"accounting file {path} has no {names} column{'s' if len(columns) > 1 else ''}"
                f" (a 4.0 layout, or record-fields without {'them' if len(columns) > 1 else 'it'})"
                f": {self.required_for}"
            )
        return self.window

    @classmethod
    def discover(cls, args: argparse.Namespace, run: Run, kind: str) -> list[dict[str, str]]:
        """LLD of the source IPs, recipient domains or VirtualMTAs seen in the window."""
        return discover_from_window(cls(args, run).read(), kind)

    def not_judged(self, volume: int, fmt: str = ", {}: not judged") -> str:
        """The OK-line remark for a volume below --min-volume (else "")."""
        if volume >= self.args.min_volume:
            return ""
        return fmt.format(f"below --min-volume {self.args.min_volume}")

    def ok_text(self, results: nagiosplugin.Results) -> str:
        """The OK line (without the reasons)."""
        raise NotImplementedError

    def reasons(self) -> str:
        """`top reasons: ...` for the status line ("" for none)."""
        return ""

    def summary(self) -> Summary:
        return Summary(self.ok_text, max_problems=3, suffix=lambda results: self.reasons())

    def rate_contexts(self, describe: Callable[[nagiosplugin.Metric, object], str],
                      **ranges: tuple[nagiosplugin.Range | None, nagiosplugin.Range | None]
                      ) -> list[nagiosplugin.Context]:
        """Overall rates judged in the contexts named by `ranges` (name=(warning, critical));
        `rate_info` for a rate below --min-volume, `info` for the counts."""
        return [
            *(Threshold(name, w, c, describe, unit="%") for name, (w, c) in ranges.items()),
            Threshold("rate_info", None, None, describe),
            Info("info"),
        ]


class ProviderRateResource(AcctResource):
    """An AcctResource judging rates per dimension where `--by provider` also reads the
    receiving MX (`dsn_mta_host`) and names each provider's top reason classes among
    `reason_counters` (the bounce and deferral checks)."""

    reason_counters: ClassVar[tuple[str, ...]] = ()

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        super().__init__(args, run)
        self.by_provider = "provider" in args.by

    def counted_fields(self) -> Fields:
        if not self.by_provider:
            return self.fields
        return {kind: (*names, "dsn_mta_host") for kind, names in self.fields.items()}

    def counting(self) -> str:
        return "provider" if self.by_provider else ""

    def provider_reasons(self, dimension: str, key: str) -> str:
        """`, top reason bad_mailbox 55, reputation 12` for a provider (else "")."""
        if dimension != "provider" or self.window is None:
            return ""
        text = reason_classes_text(self.window.reason_counts(self.reason_counters, key))
        return f", top reason {text}" if text else ""

    def judge_dimensions(self, win: Window, items: RateItems, details: dict[str, object]
                         ) -> Iterator[nagiosplugin.Metric]:
        """The rates of every `--by` dimension, their rows put in `details`; a provider's row
        carries its reason classes, and -v lists every judged provider, also when OK."""
        for dimension in self.args.by:
            metrics, rows = items.judge(win, dimension, self.args)
            if dimension == "provider":
                for key, row in rows.items():
                    row["reasons"] = win.reason_counts(self.reason_counters, key)
                self.run.long += [items.describe(m, None) for m in metrics]
            details[dimension] = rows
            yield from metrics


def percent(part: int, whole: int) -> float:
    """100 * part / whole (0 for no whole)."""
    return 100.0 * part / whole if whole else 0.0


@dataclass
class RateItems:
    """Per-key rates `numerator` / `denominator` of a dimension, as metrics and texts."""

    label: str  # "hard_rate"
    what: str  # "hard-bounce rate"
    numerator: tuple[str, ...]
    denominator: tuple[str, ...]
    context: str  # "hard_item"
    names: Labelled[tuple[str, str, Rate]] = field(default_factory=Labelled)
    #: The short word of a provider's text ("gmail: 7.2% hard (...)").
    short: str = ""
    #: Per (dimension, key), what follows its text (a provider's top reason classes).
    suffix: Callable[[str, str], str] | None = None

    def judge(self, win: Window, dimension: str, args: argparse.Namespace,
              keep: Callable[[str], bool] | None = None
              ) -> tuple[list[nagiosplugin.Metric], dict[str, dict[str, Any]]]:
        """Every key with --min-volume attempts (and that `keep` keeps) is judged; perfdata for
        the --max-items worst (the context's `_np` twin beyond); Zabbix rows for the same."""
        rates = win.rates(dimension, self.numerator, self.denominator, args.min_volume)
        if keep is not None:
            rates = {k: r for k, r in rates.items() if keep(k)}
        ranked = sorted(rates.values(), key=lambda r: (-(r.percent or 0.0), -r.denominator,
                                                       r.key))
        self.names.reserve(f"{dimension}_{r.key}_{self.label}" for r in ranked)
        metrics = [
            self.names.metric(
                (dimension, r.key, r), f"{dimension}_{r.key}_{self.label}",
                round(r.percent or 0.0, 4), uom="%", min=0, max=100,
                context=self.context if i < args.max_items else f"{self.context}_np",
            )
            for i, r in enumerate(ranked)
        ]
        return metrics, rate_details(rates, args.max_items)

    def describe(self, m: nagiosplugin.Metric, ctx: object) -> str:
        """`source IP 198.51.100.20 hard-bounce rate 8.2% (101 of 1,234)`; a provider reads
        `gmail: 7.2% hard (72 of 1,000), top reason bad_mailbox 55, reputation 12`."""
        dimension, key, rate = self.names[m.name]
        counts = f"({human(rate.numerator)} of {human(rate.denominator)})"
        after = self.suffix(dimension, key) if self.suffix is not None else ""
        if dimension == "provider" and self.short:
            return f"{key}: {pct(m.value)} {self.short} {counts}{after}"
        return f"{DIMENSIONS.get(dimension, dimension)} {key} {self.what} {pct(m.value)} " \
               f"{counts}{after}"

    def contexts(self, warning: nagiosplugin.Range | None,
                 critical: nagiosplugin.Range | None) -> list[nagiosplugin.Context]:
        """The judged context and its no-perfdata twin."""
        return [
            Threshold(self.context, warning, critical, self.describe, unit="%"),
            Threshold(f"{self.context}_np", warning, critical, self.describe, perf=False,
                      unit="%"),
        ]

    def worst(self, dimension: str) -> tuple[str, Rate] | None:
        """The worst key of a dimension (highest rate, then volume)."""
        found = [(k, r) for d, k, r in self.names.values() if d == dimension]
        if not found:
            return None
        return max(found, key=lambda kr: (kr[1].percent or 0.0, kr[1].denominator))

    def worst_text(self, dimensions: Iterable[str]) -> str:
        """`; worst sender domain a.example 4.1%, source IP 198.51.100.7 3.9%` (or "")."""
        worst = []
        for dimension in dimensions:
            found = self.worst(dimension)
            if found is not None and (found[1].percent or 0) > 0:
                worst.append(f"{DIMENSIONS[dimension]} {found[0]} {pct(found[1].percent or 0)}")
        return "; worst " + ", ".join(worst[:2]) if worst else ""


#: Other names of dimensions (the reputation plugins' words for them).
DIMENSION_ALIASES = {"sending-domain": "sender", "source-ip": "ip"}


def parse_dimensions(text: str) -> tuple[str, ...]:
    """`sender,ip` -> ("sender", "ip") (validated; `sending-domain`, `source-ip` too)."""
    out = []
    for part in text.split(","):
        key = part.strip().lower()
        key = DIMENSION_ALIASES.get(key, key)
        if not key:
            continue
        if key not in DIMENSIONS:
            raise argparse.ArgumentTypeError(
                f"unknown dimension {key!r}; choose from {', '.join(DIMENSIONS)}"
            )
        out.append(key)
    if not out:
        raise argparse.ArgumentTypeError("no dimension given")
    return tuple(dict.fromkeys(out))


def reasons_text(reasons: list[tuple[str, int]], label: str = "top reasons") -> str:
    """`top reasons: "smtp;550 5.1.1 user unknown" x120, ...`."""
    if not reasons:
        return ""
    return f"{label}: " + ", ".join(f'"{k}" x{human(n)}' for k, n in reasons)


def discover_from_window(win: Window, kind: str) -> list[dict[str, str]]:
    """LLD rows from the window's keys: sources (dlvSourceIp), domains, vmtas."""
    from pmta_snmp.acct.buckets import OTHER_KEY

    dimension = {"sources": "ip", "domains": "domain", "vmtas": "vmta"}[kind]
    keys = [k for k in win.totals(dimension) if k != OTHER_KEY]
    return lld(kind, keys)


def rate_details(rates: Mapping[str, Rate], n: int) -> dict[str, dict[str, Any]]:
    """Zabbix JSON rows for the n worst keys."""
    ranked = sorted(rates.values(), key=lambda r: (-(r.percent or 0.0), r.key))[:n]
    return {
        r.key: {"rate": round(r.percent or 0.0, 4), "count": r.numerator,
                "attempts": r.denominator}
        for r in ranked
    }
