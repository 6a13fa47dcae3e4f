"""The record path: accounting bytes → rows (Python's ``csv``) → :class:`AcctRecord`.

CSV accounting is RFC 4180 with a header line (pmta-formats.md §3.3). :class:`CsvRows` is the one
place that reads CSV rows by PowerMTA's rules: a header line (first column ``type``) sets the
layout for the rows after it, also mid-file (PowerMTA restarted with other fields); blank lines
are skipped; a row of another width, one before any header, or one ``csv`` rejects is counted in
``skipped_rows``, never fatal. A record may span lines (quoted newlines): when the data ends
inside one, its bytes are carried to the next block of the same file, or, at the end of what was
read, reported ``pending`` so the tail gives them back and the next run reads the record whole.
(A stray unterminated quote at the end of the live file holds reading back only until the field
passes ``csv.field_size_limit()``, 128 KiB, when it is counted as malformed.)

Both the records below and the tally (:mod:`pmta_snmp.acct.tally`, which counts rows without
building records) read their CSV rows through :class:`CsvRows`. JSON accounting (5.x) is one
flat object per line with string values, chosen by the ``.json`` extension.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any

from pmta_snmp.acct.bounce import BounceClass, classify, dsn_code
from pmta_snmp.acct.columns import (
    COLUMNS,
    FIELD_ORDER,
    TIME_ATTRS,
    Layout,
    domain_of,
    is_header,
    parse_size,
    parse_time,
    starttls_offered,
)
from pmta_snmp.logtail import Block, decode_block, decode_line

__all__ = ["AcctRecord", "CsvRows", "ParseResult", "RecordParser", "parse_records"]


@dataclass(slots=True)
class AcctRecord:
    """One accounting record with the fields the plugins use; empty string when absent.

    Columns without a field here (``orcpt``, ``srcMta``, ``envId``, ``header_*``,
    ``timeFirstAttempt`` …) are kept, when not empty, in ``extra`` under their header name.
    Treat records as read-only; the class is not frozen because a frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` per field) cost more than parsing the CSV row.
    """

    type: str
    time_logged: datetime | None = None
    time_queued: datetime | None = None
    orig: str = ""
    rcpt: str = ""
    dsn_action: str = ""
    dsn_status: str = ""
    dsn_diag: str = ""
    dsn_mta: str = ""
    bounce_cat: str = ""
    dlv_source_ip: str = ""
    dlv_destination_ip: str = ""
    dlv_esmtp_available: str = ""
    dlv_size: int | None = None
    dlv_tls_protocol: str = ""
    dlv_tls_cipher: str = ""
    vmta: str = ""
    vmta_pool: str = ""
    queue: str = ""
    job_id: str = ""
    extra: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def sender_domain(self) -> str:
        """Domain of ``orig`` (MAIL FROM), lowercased; "" for the null sender."""
        return domain_of(self.orig)

    @property
    def rcpt_domain(self) -> str:
        """Domain of ``rcpt``, lowercased."""
        return domain_of(self.rcpt)

    @property
    def dsn_code(self) -> str:
        """The enhanced status code of ``dsnStatus`` (``5.1.1``), or ""."""
        return dsn_code(self.dsn_status)

    @property
    def starttls_offered(self) -> bool:
        """The receiving MTA listed STARTTLS among its ESMTP extensions."""
        return starttls_offered(self.dlv_esmtp_available)

    def bounce_class(self) -> BounceClass:
        """hard / soft / block / success via :func:`pmta_snmp.acct.bounce.classify`."""
        return classify(self.bounce_cat, self.dsn_status, self.dsn_diag)


# The record path builds an AcctRecord positionally from a Layout's getter (FIELD_ORDER).
assert tuple(f for f in AcctRecord.__dataclass_fields__ if f != "extra") == FIELD_ORDER, \
    "AcctRecord fields and columns.FIELD_ORDER differ"


# ---------------------------------------------------------------------------------------------
# CSV rows
# ---------------------------------------------------------------------------------------------


class CsvRows:
    """The rows of one CSV accounting file, fed in file order as byte ranges of whole lines.

    :meth:`rows` reads a range with one ``csv.reader``; :meth:`one` reads the single record at a
    position (the tally's C scanner hands over the lines it does not take, one at a time).
    Both hand out data rows only: rows with a layout and of its width; ``layout`` is the layout
    of the row just handed out. Call :meth:`resume` first with each new range of the file.
    """

    def __init__(self, header: Sequence[str] | None) -> None:
        self.layout: Layout | None = Layout(header) if header else None
        #: Every layout set by a header line met in the data (in order).
        self.headers_met: list[list[str]] = []
        self.skipped_rows = 0
        self.rows_without_header = 0
        #: Lines read by csv (statistics).
        self.lines = 0
        #: The data so far ended inside a record, which starts at file offset ``record_start``.
        self.pending = False
        self.record_start = 0
        self._end: tuple[bytes, int, int, int, int, int] | None = None
        self._carry = b""
        self._carry_start = 0

    def resume(self, data: bytes, start: int) -> tuple[bytes, int]:
        """``data`` (at file offset ``start``) behind the bytes of a record the previous range
        ended inside, and the offset of the whole."""
        self.pending = False
        if not self._carry:
            return data, start
        data, start = self._carry + data, self._carry_start
        self._carry = b""
        return data, start

    def _width(self) -> int:
        """The width of the usual data row (-1 when there is no usual row: no layout, a
        one-column layout, or no type column; _accept decides those)."""
        layout = self.layout
        if layout is None or layout.width <= 1 or layout.type_index < 0:
            return -1
        return layout.width

    def _accept(self, row: list[str]) -> bool:
        """Apply the rules to one row csv read: True for a data row (else the row was a header,
        blank or malformed, and is accounted for here)."""
        layout = self.layout
        if layout is not None and len(row) == layout.width > 1 and layout.type_index >= 0:
            if not is_header(row):
                return True
        elif not row or (len(row) == 1 and not row[0].strip()):
            return False  # a blank line
        if is_header(row):
            self.layout = Layout(row)
            self.headers_met.append(self.layout.header)
            return False
        if layout is None:
            self.rows_without_header += 1
            self.skipped_rows += 1
            return False
        if len(row) != layout.width or layout.type_index < 0:
            self.skipped_rows += 1
            return False
        return True  # a one-column layout ("type" alone)

    def rows(self, buf: bytes, lo: int, hi: int, start: int, *, final: bool = False
             ) -> Iterator[list[str]]:
        """The data rows of ``buf[lo:hi]`` (whole lines; ``buf[lo]`` at file offset ``start``).
        ``final``: the end of a rotated file, which will not grow: a record it ends inside is
        malformed, not carried. Afterwards (or when the caller stops early) ``end`` is the
        offset after the last row handed out."""
        parts = decode_block(buf[lo:hi]).split("\n")
        last = parts.pop()
        lines = [part + "\n" for part in parts]
        if last:
            lines.append(last + "\n")  # an unterminated last line is a whole line
        exhausted = False

        def the_end() -> Iterator[str]:
            nonlocal exhausted
            exhausted = True
            yield from ()

        # strict: an unterminated quoted field at the end of the data raises instead of being
        # returned as a short row, which is how a record still being written is recognised.
        reader = csv.reader(chain(lines, the_end()), strict=True)
        accept = self._accept
        done = 0  # lines of the rows read completely (or rejected): the open record's start
        width = self._width()
        try:
            while True:
                try:
                    for row in reader:
                        done = reader.line_num
                        # The usual row, checked inline: the layout's width, and a first
                        # column too short to be "type" (so not a header line).
                        if (len(row) == width and len(row[0]) < 4) or accept(row):
                            yield row
                        else:
                            width = self._width()  # a header line may have set a layout
                    return
                except csv.Error:
                    if exhausted:
                        at = _line_offset(buf, lo, hi, done)
                        self._open_record(buf, at, hi, start + at - lo, final)
                        return
                    self.skipped_rows += 1
                    done = reader.line_num
        finally:
            self.lines += reader.line_num
            self._end = (buf, lo, hi, start, reader.line_num, len(lines))

    @property
    def end(self) -> int:
        """File offset just after the lines csv consumed in the last :meth:`rows` (after the
        last row handed out when the caller stopped early)."""
        if self._end is None:
            return 0
        buf, lo, hi, start, consumed, total = self._end
        if consumed >= total:
            return start + hi - lo
        return start + _line_offset(buf, lo, hi, consumed) - lo

    def one(self, buf: bytes, pos: int, hi: int, start: int, *, final: bool = False
            ) -> tuple[list[str] | None, int]:
        """csv reads the one record at ``buf[pos]`` (a line start at file offset ``start``; more
        lines when a quoted field goes on): (the row if it is a data row, else None; where the
        next line starts). A record that ``buf[:hi]`` ends inside is carried (or malformed)."""
        ends: list[int] = []
        exhausted = False

        def source() -> Iterator[str]:
            nonlocal exhausted
            at = pos
            while at < hi:
                nl = buf.find(b"\n", at, hi)
                stop = hi if nl < 0 else nl + 1
                ends.append(stop)
                yield decode_line(buf[at:stop - 1 if nl >= 0 else stop]) + "\n"
                at = stop
            exhausted = True

        reader = csv.reader(source(), strict=True)
        try:
            row = next(reader)
        except StopIteration:
            return None, hi
        except csv.Error:
            if exhausted:
                self.lines += len(ends)
                self._open_record(buf, pos, hi, start, final)
                return None, hi
            self.skipped_rows += 1
            self.lines += reader.line_num
            return None, ends[reader.line_num - 1]
        self.lines += reader.line_num
        return (row if self._accept(row) else None), ends[reader.line_num - 1]

    def _open_record(self, buf: bytes, lo: int, hi: int, offset: int, final: bool) -> None:
        """The data ended inside the record at ``buf[lo:hi]`` (file offset ``offset``)."""
        if final:
            self.skipped_rows += 1  # a rotated file ended inside a record: nothing more comes
            return
        self.pending = True
        self.record_start = offset
        self._carry = bytes(buf[lo:hi])
        self._carry_start = offset


def _line_offset(buf: bytes, lo: int, hi: int, lines: int) -> int:
    """Index in ``buf`` just after the first ``lines`` lines of ``buf[lo:hi]``."""
    pos = lo
    for _ in range(lines):
        nl = buf.find(b"\n", pos, hi)
        if nl < 0:
            return hi
        pos = nl + 1
    return pos


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


#: Distinct time strings remembered per file parse (rows of the same second share one).
_TIME_CACHE = 4096


def _build(values: Mapping[str, str], extra: dict[str, str]) -> AcctRecord:
    kwargs: dict[str, Any] = {}
    for attr, value in values.items():
        if attr in TIME_ATTRS:
            kwargs[attr] = parse_time(value)
        elif attr == "dlv_size":
            kwargs[attr] = parse_size(value)
        else:
            kwargs[attr] = value
    if extra:
        kwargs["extra"] = extra
    return AcctRecord(**kwargs)


class RecordParser:
    """Turns the blocks of one file into records; knows where the last record handed out
    ended (``end``) and whether the data ended inside one (``pending`` at ``record_start``)."""

    def __init__(self, *, json_format: bool, header: Sequence[str] | None,
                 types: Collection[str] | None, keep_extra: bool) -> None:
        self.json_format = json_format
        self._initial = None if json_format or not header else list(header)
        self.csv = CsvRows(self._initial)
        self.types = types
        self.keep_extra = keep_extra
        #: JSON: every key met in a record (the nearest thing to a header).
        self.json_keys: set[str] = set()
        self._json_skipped = 0
        #: The last block handed to the parser, and the offset after the last record read.
        self.block: Block | None = None
        self._json_end = 0

    @property
    def header(self) -> list[str] | None:
        """The header in force after the data read so far."""
        layout = self.csv.layout
        return layout.header if layout is not None else None

    def headers(self) -> list[list[str]]:
        """The headers in force while reading: the one given, those met in the data (JSON:
        the keys met in records, as one header)."""
        if self.json_format:
            return [sorted(self.json_keys)] if self.json_keys else []
        return ([self._initial] if self._initial else []) + self.csv.headers_met

    @property
    def skipped_rows(self) -> int:
        """Malformed rows met."""
        return self.csv.skipped_rows + self._json_skipped

    @property
    def pending(self) -> bool:
        """The data ended inside a record (starting at ``record_start``)."""
        return self.csv.pending

    @property
    def record_start(self) -> int:
        """Where the record the data ended inside starts."""
        return self.csv.record_start

    @property
    def end(self) -> int:
        """The offset just after the last record read."""
        return self._json_end if self.json_format else self.csv.end

    def records(self, blocks: Iterable[Block]) -> Iterator[AcctRecord]:
        """Records of ``blocks`` (all from one file, in order)."""
        if self.json_format:
            yield from self._json_records(blocks)
            return
        for block in blocks:
            self.block = block
            data, start = self.csv.resume(block.data, block.start)
            yield from self._csv_records(data, start, block.final)

    def _csv_records(self, data: bytes, start: int, final: bool) -> Iterator[AcctRecord]:
        rows = self.csv
        types = self.types
        keep_extra = self.keep_extra
        times: dict[str, datetime | None] = {}
        new_record = AcctRecord
        layout: Layout | None = None
        type_index = 0
        getter = None
        pad = False
        extra_columns: list[tuple[int, str]] = []
        for row in rows.rows(data, 0, len(data), start, final=final):
            if rows.layout is not layout:
                layout = rows.layout
                assert layout is not None
                type_index, getter, pad = layout.type_index, layout.getter, layout.pad
                extra_columns = layout.extra if keep_extra else []
            if types is not None and row[type_index] not in types:
                continue
            if pad:
                row.append("")  # what the getter's -1 columns read
            assert getter is not None
            (kind, logged, queued, orig, rcpt, dsn_action, dsn_status, dsn_diag,
             dsn_mta, bounce_cat, source_ip, destination_ip, esmtp, size,
             tls_protocol, tls_cipher, vmta, vmta_pool, queue, job_id) = getter(row)
            try:
                time_logged = times[logged]
            except KeyError:
                if len(times) >= _TIME_CACHE:
                    times.clear()
                time_logged = times[logged] = parse_time(logged)
            try:
                time_queued = times[queued]
            except KeyError:
                if len(times) >= _TIME_CACHE:
                    times.clear()
                time_queued = times[queued] = parse_time(queued)
            yield new_record(
                kind, time_logged, time_queued, orig, rcpt, dsn_action, dsn_status,
                dsn_diag, dsn_mta, bounce_cat, source_ip, destination_ip, esmtp,
                int(size) if size.isdigit() else parse_size(size), tls_protocol,
                tls_cipher, vmta, vmta_pool, queue, job_id,
                {name: row[i] for i, name in extra_columns if row[i]} if extra_columns else {},
            )

    def _json_records(self, blocks: Iterable[Block]) -> Iterator[AcctRecord]:
        for block in blocks:
            self.block = block
            pos = block.start
            lines = block.data.split(b"\n")
            if not lines[-1]:
                lines.pop()
            for raw in lines:
                pos = min(pos + len(raw) + 1, block.end)
                self._json_end = pos
                record = self._json_record(decode_line(raw))
                if record is not None:
                    yield record

    def _json_record(self, line: str) -> AcctRecord | None:
        """One JSON line's record (None: blank, malformed or of a type not wanted)."""
        if not line.strip():
            return None
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deep (hostile)
            self._json_skipped += 1
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            self._json_skipped += 1
            return None
        self.json_keys.update(obj)
        if self.types is not None and obj["type"] not in self.types:
            return None
        values: dict[str, str] = {}
        extra: dict[str, str] = {}
        for key, value in obj.items():
            text = value if isinstance(value, str) else ("" if value is None else str(value))
            attr = COLUMNS.get(str(key).lower())
            if attr is not None:
                values[attr] = text
            elif self.keep_extra and text:
                extra[str(key)] = text
        return _build(values, extra)


@dataclass
class ParseResult:
    """Records parsed from bytes held in memory, with the count of malformed rows."""

    records: list[AcctRecord]
    skipped_rows: int
    header: list[str] | None


def parse_records(data: bytes, *, json_format: bool = False, header: Sequence[str] | None = None,
                  types: Collection[str] | None = None, keep_extra: bool = True) -> ParseResult:
    """Parse a whole accounting file's bytes (tests, one-shot reports); a header line in the
    data wins over ``header``."""
    parser = RecordParser(json_format=json_format, header=header, types=types,
                          keep_extra=keep_extra)
    records = list(parser.records([Block(data, "<memory>", 0, final=True)]))
    return ParseResult(records, parser.skipped_rows, parser.header)
