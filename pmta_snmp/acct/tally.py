"""Counting accounting records without building them: what the accounting plugins need.

The bounce, deferral and TLS plugins only *count* records: per type, minute of ``timeLogged``
and the values of a few fields (sender domain, recipient domain, source IP ...). A
:class:`FileTally` counts the rows of one CSV file's blocks into :data:`TallyKey` counts.

Every row is read by the record path's :class:`~pmta_snmp.acct.records.CsvRows` (Python's
``csv``, PowerMTA's rules), except where the optional C scanner ``pmta_snmp._csvtally`` is
built (by ``pip install`` when a C compiler and the Python headers are there): it splits the
lines and counts one key per row in a dict, and stops at the first line that is not simple
(see ``_csvtally.c``: a quoted field over a line end, a wrong column count, a carriage return
inside, non-ASCII bytes, a possible header), which ``CsvRows`` then reads as one record. So the
counts are the same with or without it; the README's benchmark table says how much faster it is.
Setting ``PMTA_SNMP_PURE_PYTHON`` turns it off (tests and comparisons).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from pmta_snmp.acct.buckets import epoch_minute
from pmta_snmp.acct.columns import (
    DOMAIN_FIELDS,
    FIELDS,
    Layout,
    domain_of,
    parse_time,
)
from pmta_snmp.acct.records import AcctRecord, CsvRows

__all__ = [
    "FIELDS",
    "PURE_PYTHON_ENV",
    "FileTally",
    "TallyKey",
    "TallySpec",
    "record_key",
    "speedups",
]

#: (record type, epoch minute of timeLogged or None when empty or unparsable, wanted values).
TallyKey = tuple[str, int | None, tuple[str, ...]]

#: Distinct C-scanner keys held before they are decoded into TallyKeys (bounds memory).
_RAW_LIMIT = 200_000
#: Distinct minute / domain texts remembered while decoding.
_CACHE_LIMIT = 65_536
#: Key column modes of the C scanner (pmta_snmp/_csvtally.c).
_C_TEXT, _C_ADDRESS, _C_MINUTE = 0, 1, 2
#: Set to turn the C scanner off (csv then reads every row; for tests and comparisons).
PURE_PYTHON_ENV = "PMTA_SNMP_PURE_PYTHON"


def speedups() -> Any:
    """The C scanner module, or None when it is not built or turned off by the environment."""
    if os.environ.get(PURE_PYTHON_ENV):
        return None
    try:
        from pmta_snmp import _csvtally
    except ImportError:
        return None
    return _csvtally


@dataclass(frozen=True)
class TallySpec:
    """What to count: per record type, the fields of each key (see :data:`FIELDS`).

    ``since_minute`` drops records logged before that epoch minute (older than the plugin's
    window) when the keys are decoded; records without a usable time are kept. ``required``
    names, per type, fields without which a record of that type means nothing (a delivery in a
    layout without ``dlvTlsProtocol`` is not "in clear"): under a header that lacks one of
    them, records of that type are read but not counted.
    """

    fields: Mapping[str, tuple[str, ...]]
    since_minute: int | None = None
    required: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind, names in self.fields.items():
            if (not kind or not kind.isascii() or "," in kind or '"' in kind or "\n" in kind
                    or "\r" in kind or "type" in kind.lower()):
                raise ValueError(f"record type {kind!r} cannot be counted")
            for name in (*names, *self.required.get(kind, ())):
                if name not in FIELDS:
                    raise ValueError(f"unknown accounting field {name!r}")

    @classmethod
    def of(cls, fields: Mapping[str, Sequence[str]], since_minute: int | None = None, *,
           required: Mapping[str, Sequence[str]] | None = None) -> TallySpec:
        """Build from any sequences of field names."""
        return cls({k: tuple(v) for k, v in fields.items()}, since_minute,
                   {k: tuple(v) for k, v in (required or {}).items()})

    def missing(self, layout: Layout) -> dict[str, list[str]]:
        """Per type, the required fields ``layout`` has no column for (types lacking none are
        left out)."""
        out: dict[str, list[str]] = {}
        for kind, names in self.required.items():
            lacking = [n for n in names if layout.column(FIELDS[n]) < 0]
            if lacking:
                out[kind] = lacking
        return out


class _Decoder:
    """Caches shared by every key decoded in one tally (minute texts, domains)."""

    def __init__(self) -> None:
        self.minutes: dict[str, int | None] = {}
        self.domains: dict[str, str] = {}

    def minute_of_text(self, text: str) -> int | None:
        """Epoch minute of a whole time field (any accepted format)."""
        try:
            return self.minutes[text]
        except KeyError:
            pass
        when = parse_time(text)
        minute = epoch_minute(when) if when is not None else None
        if len(self.minutes) >= _CACHE_LIMIT:
            self.minutes.clear()
        self.minutes[text] = minute
        return minute

    def minute_of_iso(self, prefix: str, offset: str) -> int | None:
        """Epoch minute of ``YYYY-MM-DD HH:MM`` + seconds (any of 00-59) + ``offset``.

        The seconds never change the minute (offsets are whole minutes), and they cannot make a
        valid time invalid or the reverse, so the minute is that of second 00."""
        return self.minute_of_text(f"{prefix}:00{offset}")

    def domain(self, text: str) -> str:
        """Domain of an address field (see AcctRecord.sender_domain), cached by text."""
        try:
            return self.domains[text]
        except KeyError:
            pass
        domain = domain_of(text)
        if len(self.domains) >= _CACHE_LIMIT:
            self.domains.clear()
        self.domains[text] = domain
        return domain


class _Plan:
    """A header as the tally needs it: per counted type, which columns make its key."""

    def __init__(self, layout: Layout, spec: TallySpec) -> None:
        self.layout = layout
        self.width = layout.width
        #: The C scanner needs the type first and at least one more column.
        self.fast = layout.type_index == 0 and self.width > 1
        #: Types whose required columns this header lacks: read, not counted.
        self.lacking = spec.missing(layout)
        kinds = {k: names for k, names in spec.fields.items() if k not in self.lacking}

        def column(attr: str) -> int:
            col = layout.column(attr)
            return col if col > 0 else -1  # -1: not in this header (the type is no value)

        # Per type: time column, a -1 (so that the getter always returns a tuple), the fields'
        # columns; a -1 column reads the "" appended to a padded row.
        self.getters = {kind: itemgetter(column("time_logged"), -1,
                                         *(column(FIELDS[n]) for n in names))
                        for kind, names in kinds.items()}
        self.pad = column("time_logged") < 0 or any(
            column(FIELDS[n]) < 0 for names in kinds.values() for n in names)
        # The C scanner's key columns: per wanted type, its time column, then its fields.
        self.c_kinds = tuple(
            (kind.encode("ascii"), (
                (column("time_logged"), _C_MINUTE),
                *((column(FIELDS[name]), _C_ADDRESS if name in DOMAIN_FIELDS else _C_TEXT)
                  for name in names),
            ))
            for kind, names in kinds.items()
        )


class FileTally:
    """Counts the wanted records of one CSV file, fed block by block in file order.

    ``feed`` takes whole lines (the last one may be unterminated only at the end of a rotated
    file, ``final``); a record still open at the end of a block is carried to the next. After
    the last block, ``pending`` tells whether the data ended inside a record, which then starts
    at byte ``record_start`` (a record still being written: the tail gives it back).
    """

    def __init__(self, spec: TallySpec, header: Sequence[str] | None) -> None:
        self.spec = spec
        self._initial = list(header) if header else None
        self.csv = CsvRows(header)
        self._scanner = speedups()
        # Raw keys of the C scanner -> count (decoded by _flush_keys).
        self._keys: dict[bytes, int] = {}
        # Per type, which of its values are domains.
        self._domain_slots = {kind: [i for i, name in enumerate(names) if name in DOMAIN_FIELDS]
                              for kind, names in spec.fields.items()}
        self.decoder = _Decoder()
        self.counts: Counter[TallyKey] = Counter()
        self.records_read = 0
        #: Lines counted by the C scanner (statistics; ``slow_lines`` are csv's).
        self.fast_lines = 0
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self._plan: _Plan | None = None

    # What the csv path knows.
    @property
    def header(self) -> list[str] | None:
        """The header in force after the data fed so far."""
        layout = self.csv.layout
        return list(layout.header) if layout is not None else None

    def headers(self) -> list[list[str]]:
        """The headers in force while counting: the one given and those met in the data."""
        return ([self._initial] if self._initial else []) + self.csv.headers_met

    @property
    def skipped_rows(self) -> int:
        """Malformed rows met."""
        return self.csv.skipped_rows

    @property
    def rows_without_header(self) -> int:
        """Rows met before any header line (also in ``skipped_rows``)."""
        return self.csv.rows_without_header

    @property
    def pending(self) -> bool:
        """The data ended inside a record (at ``record_start``)."""
        return self.csv.pending

    @property
    def record_start(self) -> int:
        """Where the record the data ended inside starts."""
        return self.csv.record_start

    @property
    def slow_lines(self) -> int:
        """Lines read by csv (statistics)."""
        return self.csv.lines

    def _plan_for(self, layout: Layout) -> _Plan:
        plan = self._plan
        if plan is not None and plan.layout is layout:
            return plan
        key = tuple(layout.header)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _Plan(layout, self.spec)
        plan.layout = layout
        self._plan = plan
        return plan

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, data: bytes, start: int, *, final: bool = False) -> None:
        """Count the records of ``data`` (whole lines at byte ``start`` of the file)."""
        data, start = self.csv.resume(data, start)
        if not data:
            return
        scanner = self._scanner
        if scanner is None:
            self._count_rows(data, start, final)
            return
        # The C scanner counts the simple lines; csv reads each record it stops at (the first
        # lines of the file are the header: csv reads it, then the scanner has a plan).
        scan = scanner.scan
        keys = self._keys
        limit = csv.field_size_limit()
        hi = len(data)
        pos = 0
        while pos < hi:
            layout = self.csv.layout
            plan = self._plan_for(layout) if layout is not None else None
            if plan is not None and plan.fast:
                pos, lines = scan(data, pos, hi, plan.width, plan.c_kinds, b"type", limit, keys)
                self.fast_lines += lines
                if pos >= hi:
                    break
            row, pos = self.csv.one(data, pos, hi, start + pos, final=final)
            if row is not None:
                self._count_row(row)
        if len(keys) >= _RAW_LIMIT:
            self._flush_keys()

    def _count_row(self, row: list[str]) -> None:
        """Count one row csv read (a data row of the layout in force)."""
        layout = self.csv.layout
        assert layout is not None
        plan = self._plan_for(layout)
        kind = row[layout.type_index]
        getter = plan.getters.get(kind)
        if getter is None:
            return
        self.records_read += 1
        if plan.pad:
            row.append("")
        logged, _, *values = getter(row)
        minute = self.decoder.minute_of_text(logged)
        since = self.spec.since_minute
        if since is not None and minute is not None and minute < since:
            return
        for i in self._domain_slots[kind]:
            values[i] = domain_of(values[i])
        self.counts[(kind, minute, tuple(values))] += 1

    def _count_rows(self, data: bytes, start: int, final: bool) -> None:
        """csv reads every row of ``data`` (no C scanner): :meth:`_count_row` in one loop."""
        rows = self.csv
        counts = self.counts
        minutes = self.decoder.minutes
        minute_of = self.decoder.minute_of_text
        since = self.spec.since_minute
        domain_slots = self._domain_slots
        layout: Layout | None = None
        getters: dict[str, Any] = {}
        type_index, pad = 0, False
        records = 0
        for row in rows.rows(data, 0, len(data), start, final=final):
            if rows.layout is not layout:
                layout = rows.layout
                assert layout is not None
                plan = self._plan_for(layout)
                getters, type_index, pad = plan.getters, layout.type_index, plan.pad
            kind = row[type_index]
            getter = getters.get(kind)
            if getter is None:
                continue
            records += 1
            if pad:
                row.append("")
            logged, _, *values = getter(row)
            minute = minutes.get(logged, -1)
            if minute == -1:
                minute = minute_of(logged)
            if since is not None and minute is not None and minute < since:
                continue
            for i in domain_slots[kind]:
                values[i] = domain_of(values[i])  # cached by the text after "@"
            counts[(kind, minute, tuple(values))] += 1
        self.records_read += records

    # -- results ---------------------------------------------------------------------------

    def _flush_keys(self) -> None:
        """Decode the C scanner's keys: type, time piece, values, split at 0xFF."""
        counts = self.counts
        since = self.spec.since_minute
        decoder = self.decoder
        domain = decoder.domain
        minutes: dict[str, int | None] = {}
        records = 0
        for key, n in self._keys.items():
            kind, when, *values = key.decode("latin-1").split("\xff")
            records += n
            try:
                minute = minutes[when]
            except KeyError:
                tag = when[:1]
                if tag == "I":
                    minute = decoder.minute_of_iso(when[1:17], when[17:])
                elif tag == "R":
                    minute = decoder.minute_of_text(when[1:])
                else:
                    minute = None
                minutes[when] = minute
            if since is not None and minute is not None and minute < since:
                continue
            for i in self._domain_slots[kind]:
                values[i] = domain(values[i])
            counts[(kind, minute, tuple(values))] += n
        self.records_read += records
        self._keys.clear()

    def take(self) -> Counter[TallyKey]:
        """The counts so far (decoded); the tally starts over from empty counts."""
        self._flush_keys()
        counts, self.counts = self.counts, Counter()
        return counts


def record_key(record: AcctRecord, spec: TallySpec, minutes: dict[Any, int | None]
               ) -> TallyKey | None:
    """The key of a record (the JSON path): None when of another type or too old."""
    names = spec.fields.get(record.type)
    if names is None:
        return None
    when = record.time_logged
    try:
        minute = minutes[when]
    except KeyError:
        minute = minutes[when] = epoch_minute(when) if when is not None else None
    since = spec.since_minute
    if since is not None and minute is not None and minute < since:
        return None
    return (record.type, minute, tuple(getattr(record, name) for name in names))
