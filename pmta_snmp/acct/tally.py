"""Counting accounting records without building them: the fast path of the accounting plugins.

The bounce, deferral and TLS plugins only *count* records: per minute, and per sender domain,
recipient domain, source IP, VirtualMTA and so on. Building one :class:`AcctRecord` per row
(``csv.reader``, the constructor, the derived properties) costs several microseconds a row,
seconds for a million-row catch-up. :class:`FileTally` counts the rows of a CSV block instead.

When the optional C scanner ``pmta_snmp._csvtally`` is built (it is at install time when a C
compiler and the Python headers are there), it splits the lines and counts one key per row
(the type, the time to the minute, the wanted values) in a dict, at about a million rows in
0.3 s; it stops at the first line that is not simple (see ``_csvtally.c``: a quoted field
over a line end, a wrong column count, a carriage return inside, non-ASCII bytes, a possible
header) and ``csv`` reads that record, exactly as on the record path. Setting
``PMTA_SNMP_PURE_PYTHON`` turns it off. Without it, a regular expression does the same, about
three times slower:

* Per header (column plan) and per set of wanted fields a regular expression matches one whole
  CSV line, starting at its leading newline: the type column first, then every column in turn,
  exactly as many as the header names. A column is either ``"text"`` with no quote and no
  newline inside, or unquoted text that does not start with a quote (columns PowerMTA never
  quotes, such as IPs and names, only the latter). The columns a plugin needs are captured: an
  ISO time only to the minute, with a one-byte marker for this host's usual UTC offset;
  addresses only from their first ``@`` (the local part, unique per row, is left out); the
  other columns are only skipped. A line that does not fit (a header line, an empty line, a
  quoted field with ``""`` or a newline in it, a wrong number of columns, a quoted type ...) is
  captured whole by a catch-all branch instead.
* One ``findall`` over the block gives one tuple per line, built in C, and ``Counter.update``
  counts equal tuples, also in C. Only the distinct tuples (thousands per million rows, as times
  are captured to the minute and addresses to their domain) are decoded afterwards: quotes
  removed, domains lowercased, the minute computed once per distinct minute text.
* The catch-all lines go through ``csv`` in file order, exactly like the record path. A quoted
  field may continue over the next lines: those are then taken from the csv reader, whatever the
  pattern made of them; the fast path resumes only where the csv reader stands between records.
  A header line changes the column plan for the rest of the block.

Why a matched line is counted exactly as ``csv`` would read it: the line is a whole record
(the csv reader stands between records at every line the fast path takes: see above); an
unquoted column ends at the next comma and its text is taken literally by ``csv`` too (a quote
inside an unquoted field is literal); a quoted column ends at its closing quote, which must be
followed by a comma or the line end, and without ``""`` inside its content is the value.
Two things the pattern cannot see are checked per block, which then goes to ``csv`` whole when
they fail: an unquoted column other than the last one may run over a newline in a malformed
line, so the number of tuples must equal the number of lines; and a carriage return may sit
inside an unquoted column (``csv`` takes it for a line end), so the carriage returns of the
block must all be the ones before a line end or in catch-all lines. A slice with a line
longer than ``csv.field_size_limit()`` (128 KiB), where a field may be over it, goes to
``csv`` whole too.

Blocks whose bytes are ASCII (almost all) are matched as bytes, without decoding; other blocks
are decoded like the record path does (UTF-8, Latin-1 per line) and matched as text.

:func:`tally_range` counts a byte range of a file in a forked worker so that a large catch-up
uses two cores (see :meth:`pmta_snmp.acct.reader.AcctReader.tally`).
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import itemgetter
from typing import Any

from pmta_snmp.acct.buckets import epoch_minute
from pmta_snmp.acct.reader import _FIELD_ORDER, AcctRecord, _domain, _Layout, parse_time
from pmta_snmp.logtail import decode_block, decode_line

__all__ = [
    "FIELDS",
    "FileTally",
    "TallyKey",
    "TallySpec",
    "Worker",
    "WorkerResult",
    "fork_worker",
    "record_key",
    "tally_range",
]

#: (record type, epoch minute of timeLogged or None when empty or unparsable, wanted values).
TallyKey = tuple[str, int | None, tuple[str, ...]]

#: Field names a plugin may ask for: AcctRecord's text attributes plus two derived domains.
FIELDS: dict[str, str] = {
    "orig": "orig",
    "rcpt": "rcpt",
    "sender_domain": "orig",
    "rcpt_domain": "rcpt",
    "dsn_action": "dsn_action",
    "dsn_status": "dsn_status",
    "dsn_diag": "dsn_diag",
    "dsn_mta": "dsn_mta",
    "bounce_cat": "bounce_cat",
    "dlv_source_ip": "dlv_source_ip",
    "dlv_destination_ip": "dlv_destination_ip",
    "dlv_esmtp_available": "dlv_esmtp_available",
    "dlv_tls_protocol": "dlv_tls_protocol",
    "dlv_tls_cipher": "dlv_tls_cipher",
    "vmta": "vmta",
    "vmta_pool": "vmta_pool",
    "queue": "queue",
    "job_id": "job_id",
}
_DOMAIN_FIELDS = frozenset({"sender_domain", "rcpt_domain"})

#: Distinct raw tuples held before they are decoded into TallyKeys (bounds memory).
_RAW_LIMIT = 200_000
#: Distinct minute / domain texts remembered while decoding.
_CACHE_LIMIT = 65_536
#: Key column modes of the C scanner (pmta_snmp/_csvtally.c).
_C_TEXT, _C_ADDRESS, _C_MINUTE = 0, 1, 2
#: Set to turn the C scanner off (the pure-Python path then counts; for tests and comparisons).
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


#: Bytes matched at a time within a block (cut at a line end): the tuples of one slice are
#: still in the CPU cache when they are counted, about a fifth faster than whole 8 MB reads.
_SLICE = 64 << 10


@dataclass(frozen=True)
class TallySpec:
    """What to count: per record type, the fields of each key (see :data:`FIELDS`).

    ``since_minute`` drops records logged before that epoch minute (older than the plugin's
    window) when the keys are decoded; records without a usable time are kept.
    """

    fields: Mapping[str, tuple[str, ...]]
    since_minute: int | None = None

    def __post_init__(self) -> None:
        for kind, names in self.fields.items():
            if (not kind or not kind.isascii() or "," in kind or '"' in kind or "\n" in kind
                    or "\r" in kind or "type" in kind.lower()):
                raise ValueError(f"record type {kind!r} cannot be counted")
            for name in names:
                if name not in FIELDS:
                    raise ValueError(f"unknown accounting field {name!r}")

    @classmethod
    def of(cls, fields: Mapping[str, Sequence[str]], since_minute: int | None = None
           ) -> TallySpec:
        """Build from any sequences of field names."""
        return cls({k: tuple(v) for k, v in fields.items()}, since_minute)


# ---------------------------------------------------------------------------------------------
# Decoding captured values (shared by the fast path and the csv path)
# ---------------------------------------------------------------------------------------------


def domain_of(address: str) -> str:
    """Domain of an address (after its last ``@``), lowercased; "" when it has no ``@``."""
    return _domain(address)


class _Decoder:
    """Caches shared by every key decoded in one tally (minute texts, domains)."""

    def __init__(self) -> None:
        self.minutes: dict[Any, int | None] = {}
        self.domains: dict[Any, str] = {}

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
        domain = _domain(text)
        if len(self.domains) >= _CACHE_LIMIT:
            self.domains.clear()
        self.domains[text] = domain
        return domain


# ---------------------------------------------------------------------------------------------
# The row pattern of one header
# ---------------------------------------------------------------------------------------------

# Column pieces; `last` is the last column, whose unquoted text stops before the line end. Every
# piece accepts exactly what _skip accepts: a quoted field without quotes or newlines inside, or
# unquoted text that does not start with a quote. Captures keep the quotes of a quoted field.
def _plain(last: bool) -> str:
    return r"[^,\r\n]*+" if last else r"[^,]*+"


def _skip(last: bool) -> str:
    return rf'(?:"[^"\n]*+"|(?!"){_plain(last)})'


def _skip_unquoted(last: bool) -> str:
    """A column PowerMTA never quotes: a quoted value sends the line to csv (still exact)."""
    return f'(?!"){_plain(last)}'


#: Columns PowerMTA writes without commas or quotes (codes, IPs, names, sizes, times), by
#: lowercased header name. A skipped column of these is matched without the quoted form (a bit
#: faster); should a value there be quoted after all, the line simply goes to csv. Other columns
#: (addresses, DSN texts, dlvEsmtpAvailable, unknown and header_* columns) may be quoted.
_UNQUOTED = frozenset({"type", "timelogged", "timequeued", "timeimprinted", "timefirstattempt",
                       "totalsecondsqueued", "dsnaction", "bouncecat", "srctype", "dlvtype",
                       "dlvsourceip", "dlvdestinationip", "dlvsize", "vmta", "vmtapool", "queue",
                       "jobid", "dlvtlsprotocol", "dlvtlscipher", "repsourceip", "rcvsourceip"})


def _text(last: bool) -> str:
    """One group: the field as written."""
    return rf'("[^"\n]*+"|(?!"){_plain(last)})'


def _address(last: bool) -> str:
    """One group: the field from its first ``@`` (the local part is unique per row: left out),
    or the whole field when it has no ``@`` or is quoted."""
    part = r'[^,@"\r\n]*+' if last else r'[^,@"]*+'
    return rf"(?:{part}(?=@))?+{_text(last)}"


def _time(last: bool, first_group: int, offset: str) -> str:
    """Four groups: ``YYYY-MM-DD HH:MM`` of an ISO time (its seconds are left out), a marker
    when the text after the seconds is ``offset`` (the usual UTC offset: nothing to allocate),
    any other text after the seconds, or else the whole field as written."""
    iso = r"(?:([0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}):[0-5][0-9])?+"
    if offset:
        head, tail = re.escape(offset[0]), re.escape(offset[1:])
        known = rf"({head}){tail}(?=[,\r\n])|"
    else:
        known = "()"  # never a marker: the group stays empty
    return rf"{iso}(?({first_group})(?:{known}({_plain(last)}))|{_text(last)})"


def _local_offset() -> str:
    """This host's UTC offset as PowerMTA writes it (``+0100``); "" when unknown."""
    try:
        return time.strftime("%z")
    except ValueError:
        return ""


def _unquote(value: str) -> str:
    return value[1:-1] if value[:1] == '"' else value


def _str(value: str | bytes) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value


class _RowPattern:
    """The pattern of one header for one TallySpec, and how to decode its tuples.

    A tuple holds: one group per wanted type (its name when the line is of that type), the
    captured columns (a column some wanted types do not need is captured only for the others,
    by a conditional group), the carriage return before the line end, the whole line of a
    catch-all (then every other group is empty).
    """

    def __init__(self, header: Sequence[str], columns: Mapping[str, int], spec: TallySpec,
                 decoder: _Decoder, offset: str) -> None:
        width = len(header)
        self.width = width
        self.offset = offset
        self.decoder = decoder
        # "d" (the commonest) first; a longer name before its prefix ("tq" before "t").
        kinds = sorted(spec.fields, key=lambda k: (k != "d", -len(k), k))
        type_group = {kind: i + 1 for i, kind in enumerate(kinds)}
        group = len(kinds) + 1  # the next group number
        time_col = columns.get("time_logged", -1)
        # column -> (capture kind, the wanted types that need it)
        needs: dict[int, tuple[str, set[str]]] = {}
        if time_col > 0:
            needs[time_col] = ("time", set(kinds))
        for kind in kinds:
            for name in spec.fields[kind]:
                col = columns.get(FIELDS[name], -1)
                if col <= 0:
                    continue
                want = "address" if name in _DOMAIN_FIELDS else "text"
                have, who = needs.get(col, (want, set()))
                needs[col] = ("text" if "text" in (have, want) else want, who | {kind})
        parts = ["(?:" + "|".join(f"({re.escape(k)})" for k in kinds) + ")"]
        where: dict[int, int] = {}  # column -> index of its first group in a tuple
        skips = [_skip_unquoted if name.strip().lower() in _UNQUOTED else _skip
                 for name in header]
        for col in range(1, width):
            last = col == width - 1
            if col not in needs:
                parts.append(skips[col](last))
                continue
            need, who = needs[col]
            where[col] = group - 1
            if need == "time":
                piece = _time(last, group, offset)
                group += 4
            elif need == "address":
                piece = _address(last)
                group += 1
            else:
                piece = _text(last)
                group += 1
            # Types that do not need the column skip it: one capture group either way.
            for other in kinds:
                if other not in who:
                    piece = f"(?({type_group[other]}){skips[col](last)}|{piece})"
            parts.append(piece)
        wanted = ",".join(parts)
        # Any other type: checked the same way (a malformed row counts as skipped), not captured.
        other = ",".join([r'(?![^,\n]*?(?i:type))(?!")[^,\n]*+'] + [
            skips[col](col == width - 1) for col in range(1, width)])
        self.cr = group - 1  # index of the carriage-return group in a tuple
        self.catch = group  # index of the catch-all group
        text = rf"\n(?:(?:{wanted}|{other})(\r?)(?=\n)|([^\n]*+))"
        self.text = text
        self.bytes_pattern = re.compile(text.encode("ascii"))
        self._text_pattern: re.Pattern[str] | None = None
        self.type_slots = len(kinds)
        # kind (as text and as bytes) -> how to decode its tuples
        self.kinds: dict[str | bytes, _KindDecoder] = {}
        for kind in kinds:
            slots, domains = [], []
            for name in spec.fields[kind]:
                col = columns.get(FIELDS[name], -1)
                # A missing column reads the catch-all group, always empty in a fast row.
                slots.append(where[col] if col > 0 else self.catch)
                domains.append(name in _DOMAIN_FIELDS)
            time_slot = where.get(time_col, -1)
            found = _KindDecoder(kind, time_slot, slots, domains, decoder, offset)
            self.kinds[kind] = self.kinds[kind.encode("ascii")] = found

    @property
    def text_pattern(self) -> re.Pattern[str]:
        """The pattern for decoded (non-ASCII) blocks, compiled when one is met (compiling
        a pattern this size takes a few milliseconds of every run)."""
        if self._text_pattern is None:
            self._text_pattern = re.compile(self.text)
        return self._text_pattern

    def kind_of(self, t: tuple[Any, ...]) -> _KindDecoder | None:
        """How to decode a raw tuple (None for other types and catch-all lines): the one
        non-empty type group names its type."""
        kind = t[0] if self.type_slots == 1 else t[0][:0].join(t[:self.type_slots])
        return self.kinds.get(kind) if kind else None


class _KindDecoder:
    """Turns the raw tuples of one wanted type into (minute, values)."""

    def __init__(self, kind: str, time_slot: int, slots: list[int], domains: list[bool],
                 decoder: _Decoder, offset: str) -> None:
        self.kind = kind
        self.time_slot = time_slot
        self.count = len(slots)
        # Padded with the last group (the catch-all, empty in a fast row) twice: an itemgetter
        # of two or more items always returns a tuple.
        self.values_of = itemgetter(*slots, -1, -1)
        self.domains = [i for i, domain in enumerate(domains) if domain]
        self.decoder = decoder
        self.offset = offset
        self.minutes: dict[tuple[Any, ...], int | None] = {}

    def minute(self, t: tuple[Any, ...]) -> int | None:
        """Epoch minute of the tuple's time column (None: empty, unparsable or no column)."""
        i = self.time_slot
        if i < 0:
            return None
        key = t[i:i + 4]
        try:
            return self.minutes[key]
        except KeyError:
            pass
        prefix, marker, rest, raw = (_str(x) for x in key)
        decoder = self.decoder
        if prefix:
            minute = decoder.minute_of_iso(prefix, self.offset if marker else rest)
        else:
            minute = decoder.minute_of_text(_unquote(raw))
        if len(self.minutes) >= _CACHE_LIMIT:
            self.minutes.clear()
        self.minutes[key] = minute
        return minute

    def values(self, t: tuple[Any, ...]) -> tuple[str, ...]:
        """The wanted values: quotes removed, domains derived (one join, decode and split)."""
        raw = self.values_of(t)
        if isinstance(raw[0], bytes):
            # Bytes come from ASCII blocks: 0xFF cannot occur in them.
            text = b"\xff".join(raw).decode("latin-1")
            values = text.split("\xff", self.count)
        else:
            text = "\ud800".join(raw)  # decoded text holds no lone surrogate
            values = text.split("\ud800", self.count)
        del values[self.count:]
        if '"' in text:
            values = [_unquote(v) for v in values]
        domain = self.decoder.domain
        for i in self.domains:
            values[i] = domain(values[i])
        return tuple(values)


# ---------------------------------------------------------------------------------------------
# The column plan of one header (shared with the record path)
# ---------------------------------------------------------------------------------------------


class _Plan:
    """A header as the tally needs it: width, type column, attribute -> column, fast pattern."""

    def __init__(self, header: Sequence[str], spec: TallySpec, decoder: _Decoder,
                 offset: str) -> None:
        layout = _Layout(header)
        self.header = layout.header
        self.width = len(layout.header)
        self.type_index = layout.type_index
        self.columns: dict[str, int] = {}
        for attr, col in zip(_FIELD_ORDER, layout.columns, strict=True):
            if col >= 0:
                self.columns[attr] = col
        # The fast paths need the type first and at least one more column.
        self.fast = self.type_index == 0 and self.width > 1
        self._args = (spec, decoder, offset)
        self._pattern: _RowPattern | None = None
        # The C scanner's key columns: per wanted type, its time column, then its fields.
        self.c_kinds = tuple(
            (kind.encode("ascii"), (
                (self._column("time_logged"), _C_MINUTE),
                *((self._column(FIELDS[name]),
                   _C_ADDRESS if name in _DOMAIN_FIELDS else _C_TEXT) for name in names),
            ))
            for kind, names in spec.fields.items()
        )

    def _column(self, attr: str) -> int:
        col = self.columns.get(attr, -1)
        return col if col > 0 else -1

    @property
    def pattern(self) -> _RowPattern | None:
        """The pure-Python fast path's pattern (built when first needed)."""
        if self._pattern is None and self.fast:
            self._pattern = _RowPattern(self.header, self.columns, *self._args)
        return self._pattern


# ---------------------------------------------------------------------------------------------
# One file's blocks -> counts
# ---------------------------------------------------------------------------------------------


class FileTally:
    """Counts the wanted records of one CSV file, fed block by block in file order.

    ``feed`` takes complete lines (the last one may be unterminated only at the end of a
    rotated file, ``final``); a record still open at the end of a block is carried to the next.
    After the last block, ``pending`` tells whether the data ended inside a record, which then
    starts at byte ``record_start`` (a record still being written: the tail gives it back).
    """

    def __init__(self, spec: TallySpec, header: Sequence[str] | None) -> None:
        self.spec = spec
        self._scanner = speedups()
        # Raw keys of the C scanner -> count (decoded by _flush_raw, like the tuples).
        self._keys: dict[bytes, int] = {}
        # Per type, which of its values are domains.
        self._domain_slots = {kind: [i for i, name in enumerate(names)
                                     if name in _DOMAIN_FIELDS]
                              for kind, names in spec.fields.items()}
        self.decoder = _Decoder()
        self.offset = _local_offset()
        self.wanted = frozenset(spec.fields)
        self.counts: Counter[TallyKey] = Counter()
        self.records_read = 0
        self.skipped_rows = 0
        self.rows_without_header = 0
        self.plan: _Plan | None = None
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self._raw: Counter[tuple[Any, ...]] = Counter()
        self._raw_plan: _Plan | None = None
        if header:
            self._set_header(header)
        self.carry = b""  # bytes of a record not complete yet
        self.carry_start = 0  # its offset in the file
        self.pending = False
        self.record_start = 0
        self.fast_lines = 0  # statistics for tests and profiling
        self.slow_lines = 0

    @property
    def header(self) -> list[str] | None:
        """The header in force after the data fed so far."""
        return list(self.plan.header) if self.plan is not None else None

    def _set_header(self, header: Sequence[str]) -> None:
        self._flush_raw()
        key = tuple(h.strip() for h in header)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _Plan(header, self.spec, self.decoder, self.offset)
        self.plan = plan

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, data: bytes, start: int, *, final: bool = False) -> None:
        """Count the lines of ``data``, which starts at byte ``start`` of the file."""
        self._feed_bytes(data, start, final, sliced=True)

    def _feed_bytes(self, data: bytes, start: int, final: bool, *, sliced: bool) -> None:
        if self.carry:
            data = self.carry + data
            start = self.carry_start
            self.carry = b""
        self.pending = False
        if not data:
            return
        if not data.endswith(b"\n"):
            if not final:
                raise ValueError("feed() needs complete lines")
            data += b"\n"  # a rotated file's unterminated last line is complete
        if self._scanner is not None:
            # The C scanner (and csv) need no newline before the first line: no copy.
            self._feed(data, 0, len(data), start, final, False, sliced=sliced)
            return
        buf = b"\n" + data  # every line, the first too, starts after a newline (the pattern)
        self._feed(buf, 1, len(buf), start, final, data.isascii(), sliced=sliced)

    def feed_region(self, buf: bytes, lo: int, hi: int, start: int, *, ascii_only: bool
                    ) -> None:
        """Count ``buf[lo:hi]`` (complete lines, ``buf[lo - 1]`` a newline) without copying
        it; ``start`` is its offset in the file, ``ascii_only`` tells that it is ASCII."""
        if self.carry or buf[lo - 1] != 0x0A:
            self.feed(buf[lo:hi], start)
            return
        self.pending = False
        self._feed(buf, lo, hi, start, False, ascii_only)

    def _feed(self, buf: bytes, lo: int, hi: int, start: int, final: bool,
              ascii_only: bool, *, sliced: bool = True) -> None:
        # Slice by slice (unless not `sliced`); a header line met on the way changes the plan:
        # the rest is counted again with it.
        while lo < hi:
            end = hi
            if sliced and hi - lo > _SLICE:
                end = buf.find(b"\n", lo + _SLICE - 1, hi) + 1 or hi
            rest = self._feed_plan(buf, lo, end, start, final and end == hi, ascii_only)
            if rest is not None:
                lo, start = lo + rest, start + rest
                continue
            start += end - lo
            lo = end
            if self.carry and lo < hi:
                # A record runs on past the slice: the rest of the block goes with it, in one
                # piece (copied once, as the record is).
                self._feed_bytes(buf[lo:hi], start, final, sliced=False)
                return
        if len(self._raw) >= _RAW_LIMIT:
            self._flush_raw()

    def _feed_plan(self, buf: bytes, lo: int, hi: int, start: int, final: bool,
                   ascii_only: bool) -> int | None:
        """Count ``buf[lo:hi]`` with the current plan; returns the offset (from ``lo``) of what
        follows a header line, to be counted with the new plan, else None."""
        plan = self.plan
        if plan is not None and plan.fast and self._scanner is not None:
            return self._scan(plan, buf, lo, hi, start, final)
        pattern = plan.pattern if plan is not None else None
        if pattern is None or _has_long_line(buf, lo, hi, csv.field_size_limit()):
            return self._slow(buf[lo:hi], start, final)
        empty: str | bytes
        cr: str | bytes
        if ascii_only:
            found = pattern.bytes_pattern.findall(buf, lo - 1, hi)
            empty, cr = b"", b"\r"
        else:
            found = pattern.text_pattern.findall("\n" + decode_block(buf[lo:hi]))
            empty, cr = "", "\r"
        lines = buf.count(b"\n", lo, hi)
        # One tuple per line, plus the empty catch-all after the last newline.
        if len(found) != lines + 1 or any(found[-1]):
            return self._slow(buf[lo:hi], start, final)
        found.pop()
        catch = pattern.catch
        catches = list(map(itemgetter(catch), found))  # the lines csv has to read
        catch_all = (list(compress(range(lines), catches))
                     if catches.count(empty) != lines else [])
        if buf.find(b"\r", lo, hi) >= 0:
            crs = list(map(itemgetter(pattern.cr), found)).count(cr)
            crs += sum(catches[i].count(cr) for i in catch_all)
            if crs != buf.count(b"\r", lo, hi):
                # A carriage return inside an unquoted column: csv reads the block.
                return self._slow(buf[lo:hi], start, final)
        if self._raw_plan is not plan:
            self._flush_raw()
            self._raw_plan = plan
        raw = self._raw
        if not catch_all:
            raw.update(found)
            self.fast_lines += lines
            return None
        # Fast runs between the catch-all lines, which csv reads in order.
        data = buf[lo:hi]
        split_lines = data.split(b"\n")
        i = 0
        for j in catch_all:
            if j < i:
                continue  # read by csv as part of a record
            if j > i:
                raw.update(found[i:j])
                self.fast_lines += j - i
            i, rest = self._csv_run(split_lines, j, lines, catches, data, start, final)
            if rest is not None or i >= lines:
                return rest
        if i < lines:
            raw.update(found[i:])
            self.fast_lines += lines - i
        return None

    def _scan(self, plan: _Plan, buf: bytes, lo: int, hi: int, start: int, final: bool
              ) -> int | None:
        """The C scanner counts the simple lines; csv reads each record it stops at."""
        scan = self._scanner.scan
        keys = self._keys
        limit = csv.field_size_limit()
        pos = lo
        while True:
            pos, lines = scan(buf, pos, hi, plan.width, plan.c_kinds, b"type", limit, keys)
            self.fast_lines += lines
            if pos >= hi:
                break
            pos, header = self._csv_record(buf, pos, hi, start + pos - lo, final)
            if header:
                return pos - lo if pos < hi else None
            if pos >= hi:
                break
        if len(keys) >= _RAW_LIMIT:
            self._flush_raw()
        return None

    def _csv_record(self, buf: bytes, pos: int, hi: int, offset: int, final: bool
                    ) -> tuple[int, bool]:
        """csv reads the record at ``buf[pos]`` (file offset ``offset``): its lines, more when
        a quoted field goes on. Returns where the next line starts, and whether the record was
        a header line (the plan changed). A record that the block ends inside is carried."""
        ends: list[int] = []
        exhausted = False

        def source() -> Iterator[str]:
            nonlocal exhausted
            at = pos
            while at < hi:
                nl = buf.find(b"\n", at, hi)
                if nl < 0:
                    nl = hi
                ends.append(min(nl + 1, hi))
                yield decode_line(buf[at:nl]) + "\n"
                at = nl + 1
            exhausted = True

        reader = csv.reader(source(), strict=True)
        try:
            row = next(reader)
        except StopIteration:
            return hi, False
        except csv.Error:
            if exhausted:
                # The block ends inside a record: it goes on in the next block.
                self.slow_lines += len(ends)
                self._carry_from(buf, pos, hi, offset, final)
                return hi, False
            self.skipped_rows += 1
            header = False
        else:
            header = self._take_row(row)
        self.slow_lines += reader.line_num
        return ends[reader.line_num - 1], header

    def _take_row(self, row: list[str]) -> bool:
        """Count one row csv read; True when it was a header line (the plan changed)."""
        first_col = row[0] if row else ""
        if len(first_col) >= 4 and first_col.strip().lower() == "type":
            self._set_header(row)
            return True
        key = self._key(row, self.plan)
        if key is not None:
            self.counts[key] += 1
        return False

    def _slow(self, data: bytes, start: int, final: bool) -> int | None:
        """csv for a whole block (no fast pattern, or the block failed a check)."""
        split_lines = data.split(b"\n")
        return self._csv_run(split_lines, 0, len(split_lines) - 1, None, data, start, final)[1]

    def _csv_run(self, split_lines: list[bytes], first: int, end: int,
                 catches: list[Any] | None, data: bytes, start: int, final: bool
                 ) -> tuple[int, int | None]:
        """Read lines ``first``.. with csv until the reader stands between records before a
        line the fast path took (``catches[i]`` empty; never when ``catches`` is None).

        Returns (index of the line where the fast path resumes, None), or (end, offset of the
        line after a header line: the block goes on from there with the new plan)."""
        exhausted = False

        def source() -> Iterator[str]:
            nonlocal exhausted
            for k in range(first, end):
                yield decode_line(split_lines[k]) + "\n"
            exhausted = True

        reader = csv.reader(source(), strict=True)
        while True:
            record_line = reader.line_num
            try:
                row = next(reader)
            except StopIteration:
                self.slow_lines += end - first
                return end, None
            except csv.Error:
                if exhausted:
                    # The block ends inside a record: carry it to the next block.
                    self.slow_lines += record_line
                    self._carry(split_lines, first + record_line, data, start, final)
                    return end, None
                self.skipped_rows += 1
            else:
                if self._take_row(row):  # a header: the rest goes with the new plan
                    self.slow_lines += reader.line_num
                    after = first + reader.line_num
                    return end, (_line_offset(split_lines, after) if after < end else None)
            here = first + reader.line_num
            if catches is not None and (here >= end or not catches[here]):
                self.slow_lines += reader.line_num
                return here, None

    def _carry(self, split_lines: list[bytes], line: int, data: bytes, start: int,
               final: bool) -> None:
        offset = _line_offset(split_lines, line)
        self._carry_from(data, offset, len(data), start + offset, final)

    def _carry_from(self, buf: bytes, lo: int, hi: int, offset: int, final: bool) -> None:
        """The block ends inside the record at ``buf[lo:hi]`` (file offset ``offset``): it is
        carried to the next block."""
        self.pending = True
        self.record_start = offset
        if final:
            # A rotated file ended inside a record: nothing more will come.
            self.skipped_rows += 1
            return
        self.carry = buf[lo:hi]
        self.carry_start = offset

    def _key(self, row: list[str], plan: _Plan | None) -> TallyKey | None:
        """The key of one csv row, with the record path's rules for odd rows."""
        width = plan.width if plan is not None else 0
        type_index = plan.type_index if plan is not None else -1
        if len(row) != width or width <= 1 or type_index < 0:
            if not row or (len(row) == 1 and not row[0].strip()):
                return None
            if plan is None:
                self.rows_without_header += 1
                self.skipped_rows += 1
                return None
            if len(row) != width or type_index < 0:
                self.skipped_rows += 1
                return None
        assert plan is not None
        kind = row[type_index]
        if kind not in self.wanted:
            return None
        self.records_read += 1
        columns = plan.columns
        col = columns.get("time_logged", -1)
        minute = self.decoder.minute_of_text(row[col]) if col >= 0 else None
        since = self.spec.since_minute
        if since is not None and minute is not None and minute < since:
            return None
        values = []
        for name in self.spec.fields[kind]:
            col = columns.get(FIELDS[name], -1)
            value = row[col] if col >= 0 else ""
            values.append(domain_of(value) if name in _DOMAIN_FIELDS else value)
        return (kind, minute, tuple(values))

    # -- results ---------------------------------------------------------------------------

    def _flush_raw(self) -> None:
        """Decode the distinct raw tuples (or keys) of the fast paths into counts."""
        if self._keys:
            self._flush_keys()
        plan, raw = self._raw_plan, self._raw
        if not raw or plan is None or plan.pattern is None:
            raw.clear()
            return
        kind_of = plan.pattern.kind_of
        counts = self.counts
        since = self.spec.since_minute
        records = 0
        for t, n in raw.items():
            found = kind_of(t)
            if found is None:
                continue  # a type not counted, or an empty line
            records += n
            minute = found.minute(t)
            if since is not None and minute is not None and minute < since:
                continue
            counts[(found.kind, minute, found.values(t))] += n
        self.records_read += records
        raw.clear()

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

    def absorb(self, result: WorkerResult) -> None:
        """Take over a worker's count of the bytes that follow ours, and its parse state."""
        self._flush_raw()
        self.counts.update(result.counts)
        self.records_read += result.records_read
        self.skipped_rows += result.skipped_rows
        self.rows_without_header += result.rows_without_header
        self.fast_lines += result.lines.get("fast", 0)
        self.slow_lines += result.lines.get("slow", 0)
        if result.header is not None and result.header != self.header:
            self._set_header(result.header)
        self.carry, self.carry_start = result.carry, result.carry_start
        # A record still open where the worker stopped: pending unless more data completes it.
        self.pending, self.record_start = bool(result.carry), result.carry_start

    def take(self) -> Counter[TallyKey]:
        """The counts so far (decoded); the tally starts over from empty counts."""
        self._flush_raw()
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


def _has_long_line(buf: bytes, lo: int, hi: int, limit: int) -> bool:
    """Whether a line of ``buf[lo:hi]`` (``lo`` a line start) is longer than ``limit`` bytes,
    so that one of its fields may be over csv's field size limit. One search per ``limit``
    bytes: after the last newline of a window of ``limit`` + 1 bytes, or none in it."""
    pos = lo
    while hi - pos > limit:
        nl = buf.rfind(b"\n", pos, pos + limit + 1)
        if nl < 0:
            return True
        pos = nl + 1
    return False


def _line_offset(split_lines: list[bytes], line: int) -> int:
    """Byte offset of line number ``line`` of the block ``split_lines`` came from."""
    return sum(map(len, split_lines[:line])) + line


# ---------------------------------------------------------------------------------------------
# A byte range counted in a forked worker
# ---------------------------------------------------------------------------------------------


@dataclass
class WorkerResult:
    """What a worker counted in ``[start, end)`` of a file, and where its parse stands."""

    start: int
    end: int
    counts: Counter[TallyKey]
    records_read: int
    skipped_rows: int
    rows_without_header: int
    header: list[str] | None
    carry: bytes = b""
    carry_start: int = 0
    error: str = ""
    lines: dict[str, int] = field(default_factory=dict)


def tally_range(fd: int, start: int, stop: int, spec: TallySpec, header: Sequence[str] | None,
                *, chunk_size: int = 8 << 20, deadline: float | None = None,
                max_line: int = 16 << 20) -> WorkerResult:
    """Count the complete lines of ``fd`` from ``start`` (a line start) up to ``stop``, reading
    with ``os.pread``; stops early at ``deadline`` (``time.monotonic()``).

    Each read also takes the byte before the range it counts, a newline, so the pattern runs
    over the buffer as read: no copying."""
    tally = FileTally(spec, header)
    parent = os.getppid()
    pos = start
    while pos < stop:
        if deadline is not None and time.monotonic() >= deadline:
            break
        if os.getppid() != parent:
            break  # the process that wanted the count is gone (killed): stop early
        want = min(chunk_size, stop - pos)
        buf = os.pread(fd, want + 1, pos - 1)
        if len(buf) < 2 or buf[0] != 0x0A:
            break  # the file changed under us: count no further
        cut = buf.rfind(b"\n") + 1
        if cut <= 1:
            if pos + want >= stop or want >= max_line or len(buf) < want + 1:
                break  # the range ends in a partial line, or one too long for the tail
            chunk_size = min(2 * chunk_size, max_line)
            continue
        tally.feed_region(buf, 1, cut, pos, ascii_only=buf.isascii())
        pos += cut - 1
    counts = tally.take()
    return WorkerResult(start, pos, counts, tally.records_read, tally.skipped_rows,
                        tally.rows_without_header, tally.header, tally.carry, tally.carry_start,
                        lines={"fast": tally.fast_lines, "slow": tally.slow_lines})


class Worker:
    """A forked process counting a range; :meth:`result` waits for it (None if it failed)."""

    def __init__(self, pid: int, read_fd: int) -> None:
        self.pid = pid
        self.read_fd = read_fd
        self.done = False

    def result(self) -> WorkerResult | None:
        """Wait for the worker and return what it counted (None when it failed)."""
        chunks: list[bytes] = []
        try:
            while True:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            self.close()
        import pickle  # only when a worker ran

        try:
            result = pickle.loads(b"".join(chunks))  # noqa: S301 - our own child's output
        except Exception:
            return None
        if not isinstance(result, WorkerResult) or result.error:
            return None
        return result

    def close(self) -> None:
        """Stop the worker (if still running) and reap it."""
        if self.done:
            return
        self.done = True
        with contextlib.suppress(OSError):
            os.close(self.read_fd)
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid == 0:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        except (ChildProcessError, ProcessLookupError):
            pass


def fork_worker(work: Callable[[], WorkerResult]) -> Worker | None:
    """Run ``work`` in a forked child; None when fork is not possible."""
    if not hasattr(os, "fork"):
        return None
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:  # the child: count, send, exit without running the parent's cleanups
        import pickle

        code = 0
        try:
            os.close(read_fd)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            try:
                result = work()
            except Exception as exc:
                result = WorkerResult(0, 0, Counter(), 0, 0, 0, None, error=repr(exc))
            data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
            view = memoryview(data)
            while view:
                written = os.write(write_fd, view)
                view = view[written:]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    return Worker(pid, read_fd)

