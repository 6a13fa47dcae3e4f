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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from pmta_snmp.acct.buckets import epoch_minute
from pmta_snmp.acct.columns import (
    COLUMN_PREFIX,
    DOMAIN_FIELDS,
    FIELDS,
    TOTAL_SECONDS_QUEUED,
    Layout,
    bucket_of,
    delay_of,
    domain_of,
    is_field,
    mask_addresses,
    mta_host,
    parse_time,
)
from pmta_snmp.acct.records import AcctRecord, CsvRows

__all__ = [
    "CHUNK_KEYS",
    "FIELDS",
    "PURE_PYTHON_ENV",
    "FileTally",
    "TallyCounts",
    "TallyKey",
    "TallySpec",
    "count_record",
    "record_key",
    "speedups",
]

#: (record type, epoch minute of timeLogged or None when empty or unparsable, wanted values).
TallyKey = tuple[str, int | None, tuple[str, ...]]

#: Distinct keys a tally holds (the C scanner's and the decoded ones) before the reader hands
#: them on as a chunk: bounds a high-cardinality catch-up's memory (about 1 KB a key here, and
#: as much again where the consumer classifies them).
CHUNK_KEYS = 20_000
#: Distinct minute / domain texts remembered while decoding.
_CACHE_LIMIT = 65_536
#: Key column modes of the C scanner (pmta_snmp/_csvtally.c).
_C_TEXT, _C_ADDRESS, _C_MINUTE, _C_MASK, _C_HOST = 0, 1, 2, 3, 4
_C_DELAY, _C_DELAY_END, _C_DELAY_START, _C_MINUTE10 = 5, 6, 7, 8
#: How a field's text becomes its value in a key (both paths; see FIELDS).
_TEXT, _DOMAIN, _MASK, _HOST, _DELAY = range(5)


def _field_mode(name: str) -> int:
    if name in DOMAIN_FIELDS:
        return _DOMAIN
    if name == "dsn_diag":
        return _MASK  # addresses masked: the key is the reply's template (same classes)
    if name == "dsn_mta_host":
        return _HOST
    if name == "delay":
        return _DELAY
    return _TEXT


def _field_column(layout: Layout, name: str) -> int:
    """The column a field reads in a layout (-1: none; the type column is no value)."""
    if name.startswith(COLUMN_PREFIX):
        col = layout.column_named(name[len(COLUMN_PREFIX):])
    else:
        col = layout.column(FIELDS[name])
    return col if col > 0 else -1


class TallyCounts(Counter[TallyKey]):
    """Counts per key; ``sums`` holds, per key with a ``delay`` field, the delays' sum."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sums: dict[TallyKey, float] = {}

    def add_delay(self, key: TallyKey, delay: float) -> None:
        """Add one delay (seconds) to a key's sum."""
        self.sums[key] = self.sums.get(key, 0.0) + delay
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
    #: Bucket bounds (seconds) of the ``delay`` field: its value is the bucket's index.
    delay_bounds: tuple[float, ...] = ()
    #: 10: times are counted in ten-minute slots (the minute of a key is the slot's first
    #: minute, by the record's own clock: 09:17+0545 counts as 09:10+0545); 1: minutes.
    minute_step: int = 1
    #: Per type, per field: a function of each counted value (domains already extracted)
    #: giving the value the key holds: a consumer's cap folding the values it will not keep
    #: into one before they make a key each. Called in the order the keys are counted.
    fold: Mapping[str, Mapping[str, Callable[[str], str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.minute_step not in (1, 10):
            raise ValueError("minute_step must be 1 or 10")
        for kind, names in self.fields.items():
            if (not kind or not kind.isascii() or "," in kind or '"' in kind or "\n" in kind
                    or "\r" in kind or "type" in kind.lower()):
                raise ValueError(f"record type {kind!r} cannot be counted")
            for name in (*names, *self.required.get(kind, ())):
                if not is_field(name):
                    raise ValueError(f"unknown accounting field {name!r}")
        for kind, folds in self.fold.items():
            for name in folds:
                if name not in self.fields.get(kind, ()) or name == "delay":
                    raise ValueError(f"cannot fold {name!r}: not a value of {kind!r} keys")

    @classmethod
    def of(cls, fields: Mapping[str, Sequence[str]], since_minute: int | None = None, *,
           required: Mapping[str, Sequence[str]] | None = None,
           delay_bounds: Sequence[float] = (), minute_step: int = 1,
           fold: Mapping[str, Mapping[str, Callable[[str], str]]] | None = None) -> TallySpec:
        """Build from any sequences of field names."""
        return cls({k: tuple(v) for k, v in fields.items()}, since_minute,
                   {k: tuple(v) for k, v in (required or {}).items()},
                   tuple(float(b) for b in delay_bounds), minute_step,
                   {k: dict(v) for k, v in (fold or {}).items()})

    def fold_slots(self) -> dict[str, tuple[tuple[int, Callable[[str], str]], ...]]:
        """Per type: (index in the key's values, fold) of each folded field."""
        return {kind: tuple((names.index(name), fn)
                            for name, fn in self.fold.get(kind, {}).items())
                for kind, names in self.fields.items()}

    def missing(self, layout: Layout) -> dict[str, list[str]]:
        """Per type, the required fields ``layout`` has no column for (types lacking none are
        left out)."""
        out: dict[str, list[str]] = {}
        for kind, names in self.required.items():
            lacking = [n for n in names if _field_column(layout, n) < 0]
            if lacking:
                out[kind] = lacking
        return out


class _Decoder:
    """Caches shared by every key decoded in one tally (minute texts, domains)."""

    def __init__(self, minute_step: int = 1) -> None:
        self.minutes: dict[str, int | None] = {}
        self.domains: dict[str, str] = {}
        self.step = minute_step

    def minute_of_text(self, text: str) -> int | None:
        """Epoch minute of a whole time field (any accepted format); with ten-minute slots,
        the slot's first minute by the time's own clock (as the C scanner writes it)."""
        try:
            return self.minutes[text]
        except KeyError:
            pass
        when = parse_time(text)
        if when is not None and self.step == 10:
            when = when.replace(minute=when.minute - when.minute % 10, second=0, microsecond=0)
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

        logged = column("time_logged")
        queued = column("time_queued")
        total = layout.column_named(TOTAL_SECONDS_QUEUED)
        total = total if total > 0 else -1
        # Per type: time column, a -1 (so that the getter always returns a tuple), the fields'
        # columns (three for a delay); a -1 column reads the "" appended to a padded row.
        self.getters: dict[str, Any] = {}
        #: Per type: (mode, first value index) of each field (csv path).
        self.modes: dict[str, tuple[tuple[int, int], ...]] = {}
        c_kinds = []
        for kind, names in kinds.items():
            cols: list[int] = []
            modes: list[tuple[int, int]] = []
            c_cols: list[tuple[int, int]] = [
                (logged, _C_MINUTE10 if spec.minute_step == 10 else _C_MINUTE)]
            for name in names:
                mode = _field_mode(name)
                modes.append((mode, len(cols)))
                if mode == _DELAY:
                    cols += [total, logged, queued]
                    c_cols += [(total, _C_DELAY), (logged, _C_DELAY_END),
                               (queued, _C_DELAY_START)]
                    continue
                col = _field_column(layout, name)
                cols.append(col)
                c_cols.append((col, {_DOMAIN: _C_ADDRESS, _MASK: _C_MASK,
                                     _HOST: _C_HOST}.get(mode, _C_TEXT)))
            self.getters[kind] = itemgetter(logged, -1, *cols)
            self.modes[kind] = tuple(modes)
            c_kinds.append((kind.encode("ascii"), tuple(c_cols)))
        self.pad = logged < 0 or queued < 0 or total < 0 or any(
            _field_column(layout, n) < 0 for names in kinds.values() for n in names
            if _field_mode(n) != _DELAY)
        #: The C scanner's key columns: per wanted type, its time column, then its fields.
        self.c_kinds = tuple(c_kinds)
        #: Per type, the simple case: no field but plain text and domains (the fast loop).
        self.simple = {kind: all(m in (_TEXT, _DOMAIN) for m, _ in modes)
                       for kind, modes in self.modes.items()}


def _values(modes: tuple[tuple[int, int], ...], raw: Sequence[str], bounds: Sequence[float]
            ) -> tuple[tuple[str, ...], float | None]:
    """A row's key values from its field columns' texts (csv path), and its delay."""
    out: list[str] = []
    delay: float | None = None
    for mode, i in modes:
        text = raw[i]
        if mode == _TEXT:
            out.append(text)
        elif mode == _DOMAIN:
            out.append(domain_of(text))
        elif mode == _MASK:
            out.append(mask_addresses(text))
        elif mode == _HOST:
            out.append(mta_host(text))
        else:
            delay = delay_of(parse_time(raw[i + 1]), parse_time(raw[i + 2]), text)
            out.append("" if delay is None else str(bucket_of(delay, bounds)))
    return tuple(out), delay


def _folded(values: tuple[str, ...], folds: Sequence[tuple[int, Callable[[str], str]]]
            ) -> tuple[str, ...]:
    """``values`` with the folded fields folded."""
    out = list(values)
    for i, fold in folds:
        out[i] = fold(out[i])
    return tuple(out)


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
        self._sums: dict[bytes, int] = {}  # the C scanner's delay sums per raw key
        # Per type, which of its values are domains, and where its delay is.
        self._domain_slots = {kind: [i for i, name in enumerate(names) if name in DOMAIN_FIELDS]
                              for kind, names in spec.fields.items()}
        self._delay_slot = {kind: names.index("delay") for kind, names in spec.fields.items()
                            if "delay" in names}
        self._fold_slots = spec.fold_slots()
        self.decoder = _Decoder(spec.minute_step)
        self.counts = TallyCounts()
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
                pos, lines = scan(data, pos, hi, plan.width, plan.c_kinds, b"type", limit, keys,
                                  self._sums, self.spec.delay_bounds)
                self.fast_lines += lines
                if pos >= hi:
                    break
            row, pos = self.csv.one(data, pos, hi, start + pos, final=final)
            if row is not None:
                self._count_row(row)

    @property
    def size(self) -> int:
        """Distinct keys held (not yet decoded ones too): the reader hands them on as a chunk
        (:meth:`take`) when they reach :data:`CHUNK_KEYS`."""
        return len(self._keys) + len(self.counts)

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
        logged, _, *raw = getter(row)
        minute = self.decoder.minute_of_text(logged)
        since = self.spec.since_minute
        if since is not None and minute is not None and minute < since:
            return
        values, delay = _values(plan.modes[kind], raw, self.spec.delay_bounds)
        folds = self._fold_slots[kind]
        if folds:
            values = _folded(values, folds)
        key = (kind, minute, values)
        self.counts[key] += 1
        if delay:
            self.counts.add_delay(key, delay)

    def _count_rows(self, data: bytes, start: int, final: bool) -> None:
        """csv reads every row of ``data`` (no C scanner): :meth:`_count_row` in one loop."""
        rows = self.csv
        counts = self.counts
        minutes = self.decoder.minutes
        minute_of = self.decoder.minute_of_text
        since = self.spec.since_minute
        bounds = self.spec.delay_bounds
        domain_slots = self._domain_slots
        fold_slots = self._fold_slots
        layout: Layout | None = None
        getters: dict[str, Any] = {}
        modes: dict[str, tuple[tuple[int, int], ...]] = {}
        simple: dict[str, bool] = {}
        type_index, pad = 0, False
        records = 0
        for row in rows.rows(data, 0, len(data), start, final=final):
            if rows.layout is not layout:
                layout = rows.layout
                assert layout is not None
                plan = self._plan_for(layout)
                getters, type_index, pad = plan.getters, layout.type_index, plan.pad
                modes, simple = plan.modes, plan.simple
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
            if simple[kind]:
                for i in domain_slots[kind]:
                    values[i] = domain_of(values[i])  # cached by the text after "@"
                for i, fold in fold_slots[kind]:
                    values[i] = fold(values[i])
                counts[(kind, minute, tuple(values))] += 1
                continue
            key_values, delay = _values(modes[kind], values, bounds)
            if fold_slots[kind]:
                key_values = _folded(key_values, fold_slots[kind])
            key = (kind, minute, key_values)
            counts[key] += 1
            if delay:
                counts.add_delay(key, delay)
        self.records_read += records

    # -- results ---------------------------------------------------------------------------

    def _flush_keys(self) -> None:
        """Decode the C scanner's keys: type, time piece, values, split at 0xFF."""
        counts = self.counts
        since = self.spec.since_minute
        bounds = self.spec.delay_bounds
        decoder = self.decoder
        domain = decoder.domain
        sums = self._sums
        get = counts.get
        delay_slots = self._delay_slot
        domain_slots = self._domain_slots
        fold_slots = self._fold_slots
        minutes: dict[str, int | None] = {}
        records = 0
        for raw, n in self._keys.items():
            kind, when, *values = raw.decode("latin-1").split("\xff")
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
            for i in domain_slots[kind]:
                values[i] = domain(values[i])
            for i, fold in fold_slots[kind]:
                values[i] = fold(values[i])
            slot = delay_slots.get(kind)
            delay: float | None = None
            if slot is not None:
                piece = values[slot]
                if piece[:1] == "R":  # a time form the scanner leaves to Python
                    total, logged, queued = piece[1:].split("\xfe")
                    one = delay_of(parse_time(logged), parse_time(queued), total)
                    values[slot] = "" if one is None else str(bucket_of(one, bounds))
                    delay = None if one is None else one * n
                elif piece:
                    delay = float(sums.get(raw, 0))
            key = (kind, minute, tuple(values))
            counts[key] = get(key, 0) + n  # dict.get: no Counter.__missing__ call per key
            if delay:
                counts.add_delay(key, delay)
        self.records_read += records
        self._keys.clear()
        sums.clear()

    def take(self) -> TallyCounts:
        """The counts so far (decoded); the tally starts over from empty counts."""
        self._flush_keys()
        counts, self.counts = self.counts, TallyCounts()
        return counts


def record_key(record: AcctRecord, spec: TallySpec, minutes: dict[Any, int | None]
               ) -> TallyKey | None:
    """The key of a record (the JSON path): None when of another type or too old."""
    found = _record_key(record, spec, minutes)
    return None if found is None else found[0]


def count_record(record: AcctRecord, spec: TallySpec, minutes: dict[Any, int | None],
                 counts: TallyCounts) -> bool:
    """Count one record (the JSON path) into ``counts``; False when it is not counted."""
    found = _record_key(record, spec, minutes)
    if found is None:
        return False
    key, delay = found
    counts[key] += 1
    if delay:
        counts.add_delay(key, delay)
    return True


def _record_key(record: AcctRecord, spec: TallySpec, minutes: dict[Any, int | None]
                ) -> tuple[TallyKey, float | None] | None:
    names = spec.fields.get(record.type)
    if names is None:
        return None
    when = record.time_logged
    try:
        minute = minutes[when]
    except KeyError:
        slot = when
        if slot is not None and spec.minute_step == 10:
            slot = slot.replace(minute=slot.minute - slot.minute % 10, second=0, microsecond=0)
        minute = minutes[when] = epoch_minute(slot) if slot is not None else None
    since = spec.since_minute
    if since is not None and minute is not None and minute < since:
        return None
    values: list[str] = []
    delay: float | None = None
    for name in names:
        mode = _field_mode(name)
        if mode == _DELAY:
            delay = delay_of(record.time_logged, record.time_queued,
                             _extra(record, TOTAL_SECONDS_QUEUED))
            values.append("" if delay is None else str(bucket_of(delay, spec.delay_bounds)))
        elif name.startswith(COLUMN_PREFIX):
            values.append(_extra(record, name[len(COLUMN_PREFIX):]))
        elif mode == _MASK:
            values.append(mask_addresses(record.dsn_diag))
        elif mode == _HOST:
            values.append(mta_host(record.dsn_mta))
        else:
            values.append(getattr(record, name))
    folds = spec.fold.get(record.type)
    if folds:
        values = [folds[name](v) if name in folds else v for name, v in zip(names, values,
                                                                            strict=True)]
    return (record.type, minute, tuple(values)), delay


def _extra(record: AcctRecord, name: str) -> str:
    """A column without a field of its own, by header name (any case)."""
    found = record.extra.get(name)
    if found is None:
        low = name.lower()
        found = next((v for k, v in record.extra.items() if k.lower() == low), "")
    return found
