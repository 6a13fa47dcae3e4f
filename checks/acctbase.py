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
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping
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
    top_items,
)

if TYPE_CHECKING:
    from pmta_snmp.acct import MinuteBuckets, Rate

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


def add_acct_args(p: PluginParser, *, window: str = "1h") -> None:
    """Options every accounting plugin has."""
    g = p.add_argument_group("accounting files")
    g.add_argument(
        "--acct-file", default=DEFAULT_ACCT, metavar="PATH|GLOB",
        help="accounting file or glob (rotated acct-YYYY-MM-DD-NNNN.csv, .json for JSON "
        f"accounting, .gz read too); default {DEFAULT_ACCT}",
    )
    g.add_argument(
        "--window", type=duration, default=duration(window), metavar="DURATION",
        help=f"rolling window for rates (default {window})",
    )
    g.add_argument(
        "--min-volume", type=nonneg_int, default=100, metavar="N",
        help="judge a rate only with at least N attempts in the window (default %(default)s)",
    )
    g.add_argument(
        "--from-start", action="store_true",
        help="first run: read all existing records (by default a first run reads back one "
        "--window of them, found by timeLogged)",
    )


@dataclass
class Window:
    """The per-minute counters after this run's read, and what the read saw."""

    buckets: MinuteBuckets
    now_minute: int
    window_minutes: int
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
                                  now_minute=self.now_minute, min_volume=min_volume)

    def totals(self, dimension: str) -> dict[str, dict[str, int]]:
        """key -> counter -> sum over the window."""
        return self.buckets.totals(dimension, now_minute=self.now_minute)

    def total(self, counters: Collection[str]) -> int:
        """Sum of `counters` over everything (the `total` dimension)."""
        got = self.totals("total").get("all", {})
        return sum(got.get(c, 0) for c in counters)

    def top_reasons(self, counter: str, n: int = 3) -> list[tuple[str, int]]:
        """The n commonest dsnDiag reasons for `counter` (never the folded "(other)")."""
        values = {k: float(c.get(counter, 0)) for k, c in self.totals("diag").items()
                  if k != "(other)"}
        return [(k, int(v)) for k, v in top_items(values, n) if v > 0]

    @property
    def span(self) -> str:
        """`in the last 60 min`."""
        return f"in the last {human(self.window_minutes)} min"


def read_window(run: Run, args: argparse.Namespace, *, fields: Fields,
                event: EventFunction, required: Fields | None = None) -> Window:
    """Read new records from --acct-file into the window kept in the state file.

    `fields` names what `event` needs per record type (the types counted); `event` is called
    once per distinct (type, fields) and its events are added as often as records had them.
    `required` names fields without which a type means nothing: under a layout lacking one,
    those records are not counted, and `Window.lacking` names the columns (kept in the state
    until a run reads records in another layout).
    """
    from pmta_snmp.acct import AcctReader, AcctState, MinuteBuckets, epoch_minute
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
    now_minute = epoch_minute(time.time())
    state = run.state_file(input_key(spec))
    run.enter(f"locking state file {state.path}")
    with state.transaction() as doc:
        run.loaded(state)
        buckets = MinuteBuckets.from_json(doc.get("buckets"), window_minutes=minutes,
                                          max_keys=MAX_KEYS)
        acct_state = AcctState.from_json(doc.get("acct"))
        first_run = acct_state is None or acct_state.spec != spec
        found_back = False
        if first_run:
            # Whatever the window held came from another reading: start it afresh.
            buckets = MinuteBuckets(minutes, max_keys=MAX_KEYS)
            if not args.from_start:
                run.enter(f"finding the records of the last {human(minutes)} min in {spec}")
                acct_state = state_since(spec, (now_minute - minutes + 1) * 60 - SEEK_SLACK)
                found_back = acct_state is not None
        reader = AcctReader(spec, acct_state, from_start=args.from_start,
                            deadline=run.soft_deadline(), keep_extra=False)
        win = Window(buckets, now_minute, minutes, first_run=first_run)
        run.enter(f"reading {spec}")
        started = time.monotonic()
        # Records older than the window are left out while counting.
        tally = TallySpec.of(fields, since_minute=now_minute - minutes + 1, required=required)
        known: dict[tuple[str, tuple[str, ...]], tuple[Event, ...]] = {}
        for counts in reader.tally(tally):
            adds: list[tuple[int, Iterable[tuple[str, str | None]], Iterable[str], int]] = []
            for (kind, minute, values), n in counts.items():
                events = known.get((kind, values))
                if events is None:
                    events = tuple(event(kind, dict(zip(fields[kind], values, strict=True))))
                    if len(known) < _KNOWN:
                        known[(kind, values)] = events
                when = now_minute if minute is None else minute
                adds += [(when, keys, counters, n) for keys, counters in events]
            buckets.add_events(adds, now_minute=now_minute)
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
        buckets.prune(now_minute)
        doc["acct"] = reader.state.to_json()
        doc["buckets"] = buckets.to_json()
    win.timed_out = reader.timed_out
    win.skipped_rows = reader.skipped_rows
    win.sources = list(reader.tail.sources)
    for warning in reader.warnings:
        run.note(warning)
    if found_back:
        run.note(f"first run: read back the records of the last {human(minutes)} min of "
                 f"{spec}, found by timeLogged")
    elif win.first_run and not args.from_start:
        run.note(
            f"first run: {spec} has no timeLogged to find the last {human(minutes)} min by: "
            f"reading starts at its end now and rates build up over {human(minutes)} min "
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
}


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

    def events(self, kind: str, record: Mapping[str, str]) -> Iterable[Event]:
        """What a record of type `kind` with these `fields` counts: its (dimension, key) pairs
        and counters (see Event). Called once per distinct record, so it may be slow-ish."""
        raise NotImplementedError

    def read(self) -> Window:
        """This run's new records, added to the stored window; UNKNOWN when the layout lacks
        a required column (a 4.0 layout, or record-fields without it)."""
        self.window = win = read_window(self.run, self.args, fields=self.fields,
                                        event=self.events, required=self.required)
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

    def judge(self, win: Window, dimension: str, args: argparse.Namespace
              ) -> tuple[list[nagiosplugin.Metric], dict[str, dict[str, Any]]]:
        """Every key with --min-volume attempts is judged; perfdata for the --max-items worst
        (the context's `_np` twin beyond); Zabbix rows for the same."""
        rates = win.rates(dimension, self.numerator, self.denominator, args.min_volume)
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
        """`source IP 198.51.100.20 hard-bounce rate 8.2% of 1,234 attempts`."""
        dimension, key, rate = self.names[m.name]
        return (
            f"{DIMENSIONS.get(dimension, dimension)} {key} {self.what} {pct(m.value)} "
            f"({human(rate.numerator)} of {human(rate.denominator)})"
        )

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


def parse_dimensions(text: str) -> tuple[str, ...]:
    """`sender,ip` -> ("sender", "ip") (validated)."""
    out = []
    for part in text.split(","):
        key = part.strip().lower()
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
