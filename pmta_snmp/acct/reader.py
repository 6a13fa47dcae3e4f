"""PowerMTA accounting files → :class:`AcctRecord`, incrementally.

CSV accounting is RFC 4180 with a header line (pmta-formats.md §3.3): columns are mapped by
header name, never by position, so every layout (4.0 with ``timeImprinted`` and Unix-second
times, 4.5/5.0 with ``queue``/``vmtaPool``/TLS, 5.5 with ``timeFirstAttempt``) and any
``record-fields`` selection or ``header_*`` column works. A header line may appear again
mid-stream (PowerMTA restarted with other fields) and replaces the column plan. JSON accounting
(5.x) is one flat object per line with string values, chosen by the ``.json`` extension.

Reading follows the live file with :mod:`pmta_snmp.logtail`; the state also keeps the header
of the file being followed, because the first run starts at the end. A CSV record may span
lines (quoted newlines), so a record still being written when the run ends is given back to
the tail and read whole next time. A malformed row is counted in ``skipped_rows``, never fatal.
(A stray unterminated quote at the end of the live file holds reading back only until the field
passes ``csv.field_size_limit()``, 128 KiB, when it is counted as malformed.)

Plugins that only count records use :meth:`AcctReader.tally` instead of :meth:`AcctReader.records`:
the same files, state and rules, but counts per (type, minute, wanted fields) made without
building records (:mod:`pmta_snmp.acct.tally`), and for a large catch-up with a second process.

Beside a single path, rotated files already read (or present when following began) are
remembered in the state (``seen``), so a rotated name whose order the tail cannot tell (dated
``acct-YYYY-MM-DD-NNNN.csv`` files beside numbered ``acct.csv.N`` ones) is not read again.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from pmta_snmp.acct.bounce import BounceClass, classify, dsn_code
from pmta_snmp.logtail import (
    CHUNK_SIZE,
    Block,
    MultiTailReader,
    TailReader,
    TailState,
    decode_block,
    decode_line,
    expand_paths,
    read_first_line,
    rotated_siblings,
)

if TYPE_CHECKING:
    from pmta_snmp.acct.tally import FileTally, TallyKey, TallySpec, Worker, WorkerResult

__all__ = [
    "PARALLEL_BYTES",
    "AcctBatch",
    "AcctReader",
    "AcctRecord",
    "AcctState",
    "ParseResult",
    "SeenFile",
    "is_json_path",
    "parse_records",
    "parse_time",
    "read_new_records",
    "starttls_offered",
]


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
        return _domain(self.orig)

    @property
    def rcpt_domain(self) -> str:
        """Domain of ``rcpt``, lowercased."""
        return _domain(self.rcpt)

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


def starttls_offered(esmtp_available: str) -> bool:
    """``dlvEsmtpAvailable`` lists STARTTLS among the receiving MTA's ESMTP extensions."""
    return "STARTTLS" in (x.strip().upper() for x in esmtp_available.split(","))


def _domain(address: str) -> str:
    at = address.rfind("@")
    if at < 0:
        return ""
    raw = address[at + 1:]
    try:
        return _DOMAINS[raw]
    except KeyError:
        pass
    if len(_DOMAINS) >= _DOMAIN_CACHE:
        _DOMAINS.clear()
    domain = _DOMAINS[raw] = raw.strip().strip("<>").rstrip(".").lower()
    return domain


# Normalised domain by the text after "@": few distinct domains, many addresses.
_DOMAINS: dict[str, str] = {}
_DOMAIN_CACHE = 4096


# Header name (lowercased) → AcctRecord attribute.
_COLUMNS: dict[str, str] = {
    "type": "type",
    "timelogged": "time_logged",
    "timequeued": "time_queued",
    "orig": "orig",
    "rcpt": "rcpt",
    "dsnaction": "dsn_action",
    "dsnstatus": "dsn_status",
    "dsndiag": "dsn_diag",
    "dsnmta": "dsn_mta",
    "bouncecat": "bounce_cat",
    "dlvsourceip": "dlv_source_ip",
    "dlvdestinationip": "dlv_destination_ip",
    "dlvesmtpavailable": "dlv_esmtp_available",
    "dlvsize": "dlv_size",
    "dlvtlsprotocol": "dlv_tls_protocol",
    "dlvtlscipher": "dlv_tls_cipher",
    "vmta": "vmta",
    "vmtapool": "vmta_pool",
    "queue": "queue",
    "jobid": "job_id",
}
_TIME_ATTRS = frozenset({"time_logged", "time_queued"})
_UNIX = re.compile(r"\d+(?:\.\d+)?")


@lru_cache(maxsize=8192)
def parse_time(text: str) -> datetime | None:
    """An accounting time as an aware datetime; None when empty or unparsable.

    ``iso-times yes`` gives ``YYYY-MM-DD HH:MM:SS±HHMM`` [D]; ``T`` and ``±HH:MM`` are accepted
    too [I]; otherwise Unix seconds [D]. A time without an offset is not documented [?]: it is
    taken as this host's local time, which is PowerMTA's clock when we run beside it.
    """
    text = text.strip()
    if not text:
        return None
    if _UNIX.fullmatch(text):
        try:
            return datetime.fromtimestamp(float(text), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.astimezone()


#: Distinct time strings remembered per file parse (rows of the same second share one).
_TIME_CACHE = 4096


def _size(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


# AcctRecord's fields in order (without ``extra``), for positional construction.
_FIELD_ORDER = [f for f in AcctRecord.__dataclass_fields__ if f != "extra"]
_TIME_POS = [i for i, f in enumerate(_FIELD_ORDER) if f in _TIME_ATTRS]
_SIZE_POS = _FIELD_ORDER.index("dlv_size")
# _FileParser._csv_records unpacks a row in this order.
assert _FIELD_ORDER == [
    "type", "time_logged", "time_queued", "orig", "rcpt", "dsn_action", "dsn_status",
    "dsn_diag", "dsn_mta", "bounce_cat", "dlv_source_ip", "dlv_destination_ip",
    "dlv_esmtp_available", "dlv_size", "dlv_tls_protocol", "dlv_tls_cipher", "vmta",
    "vmta_pool", "queue", "job_id",
], "AcctRecord fields changed: update _FileParser._csv_records"


_NO_GETTER: Callable[[list[str]], tuple[str, ...]] = itemgetter(*range(len(_FIELD_ORDER)))



class _Layout:
    """The column plan of one header: which column feeds which field, built once per header
    so a row costs one C-level ``itemgetter`` call and one constructor call."""

    def __init__(self, header: Sequence[str]) -> None:
        self.header = [h.strip() for h in header]
        index: dict[str, int] = {}
        self.extra: list[tuple[int, str]] = []
        for i, name in enumerate(self.header):
            attr = _COLUMNS.get(name.lower())
            if attr is not None:
                index.setdefault(attr, i)
            elif name:
                self.extra.append((i, name))
        # -1 reads the empty string appended to every row.
        self.columns = [index.get(f, -1) for f in _FIELD_ORDER]
        self.type_index = index.get("type", -1)
        self.getter: Callable[[list[str]], tuple[str, ...]] = itemgetter(*self.columns)
        self.pad = -1 in self.columns

    def build(self, row: list[str], keep_extra: bool) -> AcctRecord:
        """One row the plain way; _FileParser._csv_records inlines this (the tests check that
        both give the same records)."""
        row.append("")
        args: list[Any] = [row[i] for i in self.columns]
        for pos in _TIME_POS:
            args[pos] = parse_time(args[pos])
        args[_SIZE_POS] = _size(args[_SIZE_POS])
        if keep_extra and self.extra:
            args.append({name: row[i] for i, name in self.extra if row[i]})  # -> extra
        return AcctRecord(*args)


def _build(values: Mapping[str, str], extra: dict[str, str]) -> AcctRecord:
    kwargs: dict[str, Any] = {}
    for attr, value in values.items():
        if attr in _TIME_ATTRS:
            kwargs[attr] = parse_time(value)
        elif attr == "dlv_size":
            kwargs[attr] = _size(value)
        else:
            kwargs[attr] = value
    if extra:
        kwargs["extra"] = extra
    return AcctRecord(**kwargs)


def is_json_path(path: str | os.PathLike[str]) -> bool:
    """JSON accounting is chosen by the ``.json`` extension [I] (also ``.json.gz``)."""
    name = os.path.basename(os.fspath(path)).lower()
    for comp in (".gz", ".bz2", ".xz"):
        name = name.removesuffix(comp)
    return name.endswith(".json")


# ---------------------------------------------------------------------------------------------
# Parsing one file's stream of blocks
# ---------------------------------------------------------------------------------------------


class _FileParser:
    """Turns the blocks of one file into records; knows where the last whole record ended."""

    def __init__(self, *, json_format: bool, header: Sequence[str] | None,
                 types: Collection[str] | None, keep_extra: bool) -> None:
        self.json_format = json_format
        self.layout = _Layout(header) if header else None
        self.types = types
        self.keep_extra = keep_extra
        self.skipped_rows = 0
        self.rows_without_header = 0
        # Position of the last line handed to the parser: (block, offset after the line).
        self.block: Block | None = None
        self.end = 0
        self.exhausted = False
        # Set by records(): the data ended inside a record, which starts at record_start.
        self.pending = False
        self.record_start = 0

    @property
    def header(self) -> list[str] | None:
        return self.layout.header if self.layout is not None else None

    def _lines(self, blocks: Iterable[Block]) -> Iterator[str]:
        for block in blocks:
            self.block = block
            pos = block.start
            parts = block.data.split(b"\n")
            last = len(parts) - 1
            for i, raw in enumerate(parts):
                if i == last:
                    if not raw:
                        break
                    pos += len(raw)  # unterminated last line of a rotated file
                    self.end = pos
                    yield decode_line(raw)
                    break
                pos += len(raw) + 1
                self.end = pos
                yield decode_line(raw) + "\n"
        self.exhausted = True

    def records(self, blocks: Iterable[Block]) -> Iterator[AcctRecord]:
        """Records of ``blocks`` (all from one file). Afterwards ``pending`` tells whether the
        stream ended inside a record, which then starts at ``record_start``."""
        self.pending = False
        self.record_start = 0
        if self.json_format:
            yield from self._json_records(self._lines(blocks))
        else:
            yield from self._csv_records(blocks)

    def _csv_records(self, blocks: Iterable[Block]) -> Iterator[AcctRecord]:
        # One csv.reader runs over the lines of all blocks, fed block by block from C
        # (chain.from_iterable), so no Python code runs per line; positions are kept as line
        # numbers (reader.line_num) and turned into byte offsets only when asked for.
        # (first line number, block) of the blocks that may still hold the record being read.
        spans: list[tuple[int, Block]] = []
        done = 0  # lines consumed by the last row the reader returned (start of the next)

        def feed() -> Iterator[list[str]]:
            total = 0
            for block in blocks:
                self.block = block
                while len(spans) > 1 and spans[1][0] <= done:
                    del spans[0]
                spans.append((total, block))
                parts = decode_block(block.data).split("\n")
                last = parts.pop()
                lines = [part + "\n" for part in parts]
                if last:
                    lines.append(last)  # unterminated last line of a rotated file
                total += len(lines)
                yield lines
            self.exhausted = True

        # strict: an unterminated quoted field at the end of the data raises instead of being
        # returned as a short row, which is how a record still being written is recognised.
        reader = csv.reader(chain.from_iterable(feed()), strict=True)
        types = self.types
        keep_extra = self.keep_extra
        times: dict[str, datetime | None] = {}
        layout = self.layout
        width = len(layout.header) if layout is not None else 0
        type_index = layout.type_index if layout is not None else -1
        # Without a layout width is 0 and every row takes the slow branch: getter is unused.
        getter = layout.getter if layout is not None else _NO_GETTER
        extra_columns = layout.extra if layout is not None and keep_extra else []
        pad = layout.pad if layout is not None else True
        new_record = AcctRecord
        try:
            while True:
                try:
                    for row in reader:
                        done = reader.line_num
                        first = row[0] if row else ""
                        if len(first) >= 4 and first.strip().lower() == "type":
                            layout = self.layout = _Layout(row)
                            width = len(layout.header)
                            type_index = layout.type_index
                            getter = layout.getter
                            extra_columns = layout.extra if keep_extra else []
                            pad = layout.pad
                            continue
                        if len(row) != width or width <= 1 or type_index < 0:
                            # The rare cases, in the order of the checks they skip.
                            if not row or (len(row) == 1 and not first.strip()):
                                continue
                            if layout is None:
                                self.rows_without_header += 1
                                self.skipped_rows += 1
                                continue
                            if len(row) != width or type_index < 0:
                                self.skipped_rows += 1
                                continue
                        if types is not None and row[type_index] not in types:
                            continue
                        if pad:
                            row.append("")  # what the getter's -1 columns read
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
                        record = new_record(
                            kind, time_logged, time_queued, orig, rcpt, dsn_action, dsn_status,
                            dsn_diag, dsn_mta, bounce_cat, source_ip, destination_ip, esmtp,
                            int(size) if size.isdigit() else _size(size), tls_protocol,
                            tls_cipher, vmta, vmta_pool, queue, job_id,
                            {name: row[i] for i, name in extra_columns if row[i]}
                            if extra_columns else {},
                        )
                        yield record
                    return
                except csv.Error:
                    if self.exhausted:
                        self.pending = True
                        return
                    self.skipped_rows += 1
                    done = reader.line_num
        finally:
            self.end = self._offset(spans, reader.line_num)
            self.record_start = self._offset(spans, done)

    @staticmethod
    def _offset(spans: list[tuple[int, Block]], line: int) -> int:
        """Byte offset in the file just after the first ``line`` lines handed to the reader."""
        for first, block in reversed(spans):
            if first <= line:
                data = block.data
                pos = 0
                for _ in range(line - first):
                    nl = data.find(b"\n", pos)
                    pos = len(data) if nl < 0 else nl + 1
                return block.start + pos
        return 0

    def _json_records(self, lines: Iterator[str]) -> Iterator[AcctRecord]:
        for line in lines:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                self.skipped_rows += 1
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
                self.skipped_rows += 1
                continue
            if self.types is not None and obj["type"] not in self.types:
                continue
            values: dict[str, str] = {}
            extra: dict[str, str] = {}
            for key, value in obj.items():
                text = value if isinstance(value, str) else ("" if value is None else str(value))
                attr = _COLUMNS.get(str(key).lower())
                if attr is not None:
                    values[attr] = text
                elif self.keep_extra and text:
                    extra[str(key)] = text
            yield _build(values, extra)


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
    parser = _FileParser(json_format=json_format, header=header, types=types,
                         keep_extra=keep_extra)
    block = Block(data, "<memory>", 0, final=True)
    records = list(parser.records([block]))
    if parser.pending:
        parser.skipped_rows += 1
    return ParseResult(records, parser.skipped_rows, parser.header)


# ---------------------------------------------------------------------------------------------
# Incremental reading
# ---------------------------------------------------------------------------------------------


@dataclass
class SeenFile:
    """A rotated file next to the followed one, known from an earlier run: read (or present
    when following began) up to ``offset`` (-1: all of it). ``head`` fingerprints its first
    ``head_len`` bytes (decompressed), so a compressed copy is recognised too."""

    key: str
    head: str
    head_len: int
    offset: int
    size: int = -1

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``json.dumps``."""
        return {"key": self.key, "head": self.head, "head_len": self.head_len,
                "offset": self.offset, "size": self.size}

    @classmethod
    def from_json(cls, data: object) -> SeenFile | None:
        """Rebuild from :meth:`to_json` output (None when malformed)."""
        if not isinstance(data, Mapping):
            return None
        key, head = data.get("key"), data.get("head")
        ints = [data.get(k, -1) for k in ("head_len", "offset", "size")]
        if not isinstance(key, str) or not isinstance(head, str) or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in ints):
            return None
        head_len, offset, size = (int(x) for x in ints)
        return cls(key, head, head_len, offset, size)


@dataclass
class AcctState:
    """What :class:`AcctReader` keeps between runs; store ``to_json()`` in the plugin state.

    A single path is followed across rotations (``tail``/``header``); a glob follows each
    matching file by identity (``files``: ``"device:inode"`` → tail and header). ``seen``
    lists the rotated files beside a single path that earlier runs read or found, so a file
    the rotation order cannot place (a dated ``acct-2026-11-25-0000.csv`` beside numbered
    ``acct.csv.1`` rotations) is not read again as if it were newer.
    """

    spec: str
    tail: TailState | None = None
    header: list[str] | None = None
    files: dict[str, tuple[TailState, list[str] | None]] | None = None
    seen: list[SeenFile] | None = None

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``json.dumps``."""
        out: dict[str, Any] = {"spec": self.spec}
        if self.tail is not None:
            out["tail"] = self.tail.to_json()
        if self.header is not None:
            out["header"] = list(self.header)
        if self.files is not None:
            out["files"] = {k: {"tail": t.to_json(), "header": h}
                            for k, (t, h) in self.files.items()}
        if self.seen is not None:
            out["seen"] = [f.to_json() for f in self.seen]
        return out

    @classmethod
    def from_json(cls, data: object) -> AcctState | None:
        """Rebuild from :meth:`to_json` output; malformed data gives None (a first run)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("spec"), str):
            return None
        header = _header_from_json(data.get("header"))
        tail = TailState.from_json(data["tail"]) if "tail" in data else None
        files: dict[str, tuple[TailState, list[str] | None]] | None = None
        raw_files = data.get("files")
        if isinstance(raw_files, Mapping):
            files = {}
            for key, entry in raw_files.items():
                if not isinstance(entry, Mapping):
                    continue
                t = TailState.from_json(entry.get("tail"))
                if t is not None:
                    files[str(key)] = (t, _header_from_json(entry.get("header")))
        seen: list[SeenFile] | None = None
        raw_seen = data.get("seen")
        if isinstance(raw_seen, list):
            seen = [f for f in map(SeenFile.from_json, raw_seen) if f is not None]
        return cls(spec=data["spec"], tail=tail, header=header, files=files, seen=seen)


def _header_from_json(value: object) -> list[str] | None:
    if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
        return list(value)
    return None


def _parse_header_line(raw: bytes) -> list[str] | None:
    try:
        row = next(csv.reader([decode_line(raw)]))
    except (csv.Error, StopIteration):
        return None
    return row if row and row[0].strip().lower() == "type" else None


#: Bytes fingerprinted at the start of a rotated file (as the tail reader's head check).
_HEAD_LEN = 1024
#: A catch-up with more new bytes than this in one file is counted by two processes.
PARALLEL_BYTES = 32 << 20
#: The part of a parallel catch-up counted by this process (the worker counts the rest).
_OUR_SHARE = 0.5


def _head_print(path: str, length: int = _HEAD_LEN) -> tuple[str, int] | None:
    """Fingerprint of the first ``length`` bytes of a (possibly compressed) file."""
    import hashlib

    lowered = path.lower()
    try:
        if lowered.endswith(".gz"):
            import gzip

            with gzip.open(path, "rb") as fh:
                data = fh.read(length)
        elif lowered.endswith(".bz2"):
            import bz2

            with bz2.open(path, "rb") as fh:
                data = fh.read(length)
        elif lowered.endswith(".xz"):
            import lzma

            with lzma.open(path, "rb") as fh:
                data = fh.read(length)
        else:
            with open(path, "rb") as fh:
                data = fh.read(length)
    except (OSError, EOFError, ValueError):
        return None
    return hashlib.blake2b(data, digest_size=8).hexdigest(), len(data)


def _compressed(path: str) -> bool:
    return path.lower().endswith((".gz", ".bz2", ".xz"))


class AcctReader:
    """New records of an accounting file (or glob of files) since the stored state.

    Iterate :meth:`records` (or :meth:`tally`) once, then store :attr:`state`. Stopping
    :meth:`records` early (``break``) is safe: the state then points just after the last
    record handed out. ``types`` keeps only those record types (``{"d", "b", "t"}``) and
    skips the others cheaply.
    """

    def __init__(self, spec: str | os.PathLike[str], state: AcctState | None, *,
                 from_start: bool = False, deadline: float | None = None,
                 types: Collection[str] | None = None, keep_extra: bool = True,
                 chunk_size: int = CHUNK_SIZE) -> None:
        self.spec = os.fspath(spec)
        if state is not None and state.spec != self.spec:
            state = None
        self.types = frozenset(types) if types is not None else None
        self.keep_extra = keep_extra
        self.deadline = deadline
        self.skipped_rows = 0
        self.records_read = 0
        self.warnings: list[str] = []
        #: Bytes counted by a worker process during :meth:`tally` (0: single process).
        self.parallel_bytes = 0
        self._headers: dict[str, list[str] | None] = {}
        self._is_glob = any(ch in self.spec for ch in "*?[")
        self._tail: TailReader | MultiTailReader
        self._saved_headers: dict[str, list[str] | None]
        self._seen_in: list[SeenFile] = []
        self._seen_out: list[SeenFile] | None = None
        self._read_to_end: dict[str, int] = {}  # rotated files read to their end: key -> end
        self._siblings: dict[str, tuple[str, int]] = {}  # rotated files before reading
        if self._is_glob:
            states = None
            if state is not None and state.files is not None:
                states = {k: t for k, (t, _) in state.files.items()}
                self._saved_headers = {k: h for k, (_, h) in state.files.items()}
            else:
                self._saved_headers = {}
            self._tail = MultiTailReader(expand_paths(self.spec), states,
                                         from_start=from_start, deadline=deadline,
                                         chunk_size=chunk_size)
        else:
            tail_state = state.tail if state is not None else None
            self._saved_headers = {}
            if state is not None and tail_state is not None and tail_state.identified:
                key = f"{tail_state.device}:{tail_state.inode}"
                self._saved_headers[key] = state.header
            if state is not None and state.seen is not None:
                self._seen_in = list(state.seen)
            self._tail = TailReader(self.spec, tail_state, from_start=from_start,
                                    deadline=deadline, chunk_size=chunk_size)
        self._started = False

    # Flags from the tail, for the plugin's output.
    @property
    def timed_out(self) -> bool:
        """The deadline stopped reading; the rest is read next run."""
        return self._tail.timed_out

    @property
    def first_run(self) -> bool:
        """No usable state: reading started at the end (or at the start with from_start)."""
        return self._tail.first_run

    @property
    def tail(self) -> TailReader | MultiTailReader:
        """The underlying reader (rotation flags, sources, bytes read)."""
        return self._tail

    def _start(self) -> Iterator[Block]:
        if self._started:
            raise RuntimeError("AcctReader can be iterated only once")
        self._started = True
        return self._blocks()

    def records(self) -> Iterator[AcctRecord]:
        """The new records, file after file."""
        blocks = self._start()
        pushback: list[Block] = []

        def next_block() -> Block | None:
            return pushback.pop() if pushback else next(blocks, None)

        while True:
            first = next_block()
            if first is None:
                break
            parser = self._parser_for(first)
            finished = False
            try:
                for record in parser.records(self._same_file(first, blocks, pushback)):
                    self.records_read += 1
                    yield record
                finished = True
            finally:
                self._close_file(parser, finished)
        self._finish()

    def tally(self, spec: TallySpec, *, parallel_bytes: int | None = PARALLEL_BYTES
              ) -> Iterator[Counter[TallyKey]]:
        """Counts of the new records of the types in ``spec``, without building records:
        per (type, minute of timeLogged, wanted fields), in chunks (one or more per file).

        CSV is counted by :class:`pmta_snmp.acct.tally.FileTally` (one regular expression
        per block; csv only for odd lines), JSON through the record path. When one file has
        more than ``parallel_bytes`` new bytes, a forked worker counts its second half
        meanwhile (None: never). Consume the iterator to the end, then store :attr:`state`;
        ``records_read`` counts the records of the wanted types (also those older than
        ``spec.since_minute``, which are left out of the counts).
        """
        blocks = self._start()
        pushback: list[Block] = []
        wanted = frozenset(spec.fields)
        while True:
            first = pushback.pop() if pushback else next(blocks, None)
            if first is None:
                break
            file_blocks = self._same_file(first, blocks, pushback)
            if is_json_path(first.source):
                from pmta_snmp.acct.tally import record_key

                parser = self._parser_for(first, types=wanted)
                counts: Counter[TallyKey] = Counter()
                minutes: dict[Any, int | None] = {}
                for record in parser.records(file_blocks):
                    self.records_read += 1
                    key = record_key(record, spec, minutes)
                    if key is not None:
                        counts[key] += 1
                self._close_file(parser, True)
                yield counts
                continue
            yield from self._tally_csv(first, file_blocks, spec, parallel_bytes)
        self._finish()

    def _tally_csv(self, first: Block, blocks: Iterator[Block], spec: TallySpec,
                   parallel_bytes: int | None) -> Iterator[Counter[TallyKey]]:
        """Count one CSV file's blocks; with a large catch-up, its second half in a worker."""
        from pmta_snmp.acct.tally import FileTally

        tally = FileTally(spec, self._header_for_block(first))
        last: Block | None = None
        split: _Split | None = None
        counted_to = -1  # the worker counted the bytes before this offset
        try:
            for block in blocks:
                last = block
                data, start = block.data, block.start
                if start < counted_to:
                    if block.end <= counted_to:
                        continue  # read ahead before the tail skipped the worker's part
                    data, start = data[counted_to - start:], counted_to
                if split is not None and split.worker is not None and block.end > split.at:
                    # The first part is done: the worker's count applies if our parse stands
                    # between records there, with the header the worker started from. Ours
                    # is handed out first: the caller works on it while the worker ends.
                    cut = split.at - start
                    if cut > 0:
                        tally.feed(data[:cut], start)
                    data, start = data[cut:], split.at
                    yield tally.take()
                    split.join(tally)
                    result = split.result
                    if result is not None and (result.end <= block.end
                                               or self._tail.skip_to(block, result.end)):
                        # Its counts and parse state become ours; the tail goes on where it
                        # stopped, without reading its part again.
                        split.adopt(tally, self)
                        counted_to = result.end
                        if block.end <= counted_to:
                            continue
                        data, start = data[counted_to - start:], counted_to
                    else:
                        split.result = None  # rewritten meanwhile: the tail stops there
                if data or block.final:
                    tally.feed(data, start, final=block.final)
                if split is None and parallel_bytes is not None:
                    split = self._fork(block, tally, spec, parallel_bytes)
                if len(tally.counts) >= 100_000:
                    yield tally.take()
        finally:
            if split is not None:
                split.close()
        counts = tally.take()
        self.skipped_rows += tally.skipped_rows
        self.records_read += tally.records_read
        if last is not None:
            if tally.pending and not last.final:
                self._tail.rewind(last, tally.record_start)  # a record still being written
            self._headers[last.key] = tally.header
        yield counts

    def _fork(self, block: Block, tally: FileTally, spec: TallySpec,
              parallel_bytes: int) -> _Split | None:
        """Start a worker on the second half of the file's new bytes when they are many."""
        from pmta_snmp.acct.tally import fork_worker, tally_range

        if (tally.plan is None or not tally.plan.fast or tally.carry
                or block.final or _compressed(block.source)):
            return None
        states = (self._tail.states if isinstance(self._tail, MultiTailReader)
                  else {block.key: self._tail.state})
        tail_state = states.get(block.key)
        if tail_state is None or f"{tail_state.device}:{tail_state.inode}" != block.key:
            return None
        size = tail_state.size
        if size - block.end <= parallel_bytes:
            return None
        try:
            fd = os.open(block.source, os.O_RDONLY)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if f"{st.st_dev}:{st.st_ino}" != block.key:
                return None
            # About half each (_OUR_SHARE): we also read the tail's blocks of the worker's part
            # (to advance the state), the worker also decodes and sends its counts.
            at = _line_start_after(fd, block.end + int((size - block.end) * _OUR_SHARE), size)
            if at is None:
                return None
            header = tally.header
            deadline = self.deadline

            def work() -> Any:
                return tally_range(fd, at, size, spec, header, deadline=deadline)

            worker = fork_worker(work)
        finally:
            os.close(fd)
        if worker is None:
            return None
        return _Split(at, header, worker)

    def _same_file(self, head: Block, blocks: Iterator[Block], pushback: list[Block]
                   ) -> Iterator[Block]:
        """``head`` and the blocks after it from the same file (the next file's first block
        goes to ``pushback``)."""
        block: Block | None = head
        while block is not None:
            yield block
            nxt = next(blocks, None)
            if nxt is not None and nxt.key != head.key:
                pushback.append(nxt)
                return
            block = nxt

    def _blocks(self) -> Iterator[Block]:
        """The tail's blocks, less what earlier runs read of rotated files met again."""
        live = os.path.abspath(self.spec)
        if not self._is_glob:
            # Listed before reading: a file rotated while this run reads is none of these.
            self._siblings = _listing(live)
        skip_key = ""
        skip_to = 0  # skip the file's bytes before this offset (-1: all of them)
        align = False  # then up to the end of the line under way
        for given in self._tail.blocks():
            block = given
            if block.final:
                self._read_to_end[block.key] = block.end
            if (self._seen_in and block.start == 0 and not block.continues
                    and block.source != live):
                skip_key, skip_to, align = block.key, self._seen_offset(block), False
            if block.key == skip_key and (skip_to != 0 or align):
                if skip_to < 0 or block.end <= skip_to:
                    continue
                cut = max(0, skip_to - block.start)
                if align or (cut > 0 and block.data[cut - 1] != 0x0A):
                    # The offset seen is inside a line (the file grew since): skip the line.
                    nl = block.data.find(b"\n", cut)
                    if nl < 0:
                        skip_to, align = block.end, True
                        continue
                    cut = nl + 1
                skip_to, align = 0, False
                if cut:
                    block = Block(block.data[cut:], block.source, block.start + cut,
                                  block.final, block.continues, block.key)
                if not block.data and not block.final:
                    continue
            yield block

    def _seen_offset(self, block: Block) -> int:
        """How far an earlier run read the rotated file of ``block`` (0: a new file)."""
        prints: dict[int, tuple[str, int] | None] = {}
        for entry in self._seen_in:
            if entry.head_len not in prints:
                prints[entry.head_len] = _head_print(block.source, entry.head_len)
            found = prints[entry.head_len]
            if found is None or found != (entry.head, entry.head_len):
                continue
            if entry.key == block.key or entry.head_len >= 64:
                return entry.offset
        return 0

    def _finish(self) -> None:
        """After the last block: remember the rotated files beside a single path that this
        run read to their end, or found before reading and left alone (older than the file
        followed). Files rotated while this run read are left to the next run."""
        if self._is_glob or not isinstance(self._tail, TailReader):
            return
        followed = self._tail.state
        followed_key = f"{followed.device}:{followed.inode}" if followed.identified else ""
        previous = {f.key: f for f in self._seen_in}
        now = _listing(self._tail.path)
        seen: list[SeenFile] = []
        for key, (path, size) in now.items():
            before = previous.get(key)
            if key in self._read_to_end:
                offset = self._read_to_end[key]
            elif key == followed_key or key not in self._siblings:
                continue  # followed by the tail state, or rotated during this run
            elif self._tail.timed_out or (before is not None and before.size == size):
                if before is not None:
                    seen.append(before)
                continue  # unchanged, or not reached this run (read next run if newer)
            else:
                offset = -1 if _compressed(path) else self._siblings[key][1]
            if before is not None and before.size == size:
                head, head_len = before.head, before.head_len
            else:
                found = _head_print(path)
                if found is None:
                    continue
                head, head_len = found
            seen.append(SeenFile(key, head, head_len, offset, size))
        self._seen_out = seen

    def _parser_for(self, block: Block, types: Collection[str] | None = None) -> _FileParser:
        json_format = is_json_path(block.source)
        header = None if json_format else self._header_for_block(block)
        return _FileParser(json_format=json_format, header=header,
                           types=self.types if types is None else frozenset(types),
                           keep_extra=self.keep_extra)

    def _header_for_block(self, block: Block) -> list[str] | None:
        """The header in force where ``block`` starts (None at the start of a file)."""
        if block.start == 0 or is_json_path(block.source):
            return None
        saved = self._saved_headers.get(block.key) if block.continues else None
        if saved is None and block.continues and not self._is_glob and self._saved_headers:
            # The file we were reading, found again by its content under another identity
            # (compressed or copied by a rotation): the header saved with the state is its
            # header. Reading it again by path could hit a file rotated meanwhile.
            saved = next(iter(self._saved_headers.values()))
        return saved or self._header_of(block.source)

    def _header_of(self, path: str) -> list[str] | None:
        try:
            header = _parse_header_line(read_first_line(path))
        except OSError:
            header = None
        if header is None:
            self.warnings.append(f"{path}: no header line; rows cannot be mapped")
        return header

    def _close_file(self, parser: _FileParser, finished: bool) -> None:
        """Account for one file's parse and hand unparsed bytes back to the tail."""
        self.skipped_rows += parser.skipped_rows
        block = parser.block
        if block is None:
            return
        if finished and parser.pending and not block.final:
            # The record at the end is still being written: read it whole next run.
            self._tail.rewind(block, parser.record_start)
        elif not finished:
            # The caller stopped early (at a yield, so the parser's last line ends the record
            # it received): the state must not pass that record.
            self._tail.rewind(block, parser.end)
        elif parser.pending:
            self.skipped_rows += 1  # a rotated file ended inside a record
        self._headers[block.key] = parser.header

    @property
    def state(self) -> AcctState:
        """The state to store for the next run."""
        if isinstance(self._tail, MultiTailReader):
            files = {key: (t, self._header_for(key, t))
                     for key, t in self._tail.states.items()}
            return AcctState(self.spec, files=files)
        tail_state = self._tail.state
        key = f"{tail_state.device}:{tail_state.inode}"
        seen = self._seen_out if self._seen_out is not None else self._seen_in
        return AcctState(self.spec, tail=tail_state,
                         header=self._header_for(key, tail_state) if tail_state.inode else None,
                         seen=seen)

    def _header_for(self, key: str, tail_state: TailState) -> list[str] | None:
        if key in self._headers:
            return self._headers[key]
        if key in self._saved_headers:
            return self._saved_headers[key]
        if tail_state.offset == 0 or is_json_path(tail_state.source or tail_state.path):
            return None
        # Positioned inside a file we have not parsed (first run at the end): remember its
        # header now, the file may be rotated away before the next run.
        try:
            header = _parse_header_line(read_first_line(tail_state.source or tail_state.path))
        except OSError:
            header = None
        self._headers[key] = header
        return header


def _listing(path: str) -> dict[str, tuple[str, int]]:
    """The rotated siblings of ``path`` now: ``"device:inode"`` -> (path, size)."""
    out: dict[str, tuple[str, int]] = {}
    for sibling in rotated_siblings(path):
        try:
            st = os.stat(sibling)
        except OSError:
            continue
        out[f"{st.st_dev}:{st.st_ino}"] = (os.fspath(sibling), st.st_size)
    return out


def _line_start_after(fd: int, pos: int, end: int) -> int | None:
    """The offset just after the first newline at or after ``pos`` (None if none before end)."""
    while pos < end:
        data = os.pread(fd, min(1 << 16, end - pos), pos)
        if not data:
            return None
        nl = data.find(b"\n")
        if nl >= 0:
            return pos + nl + 1 if pos + nl + 1 < end else None
        pos += len(data)
    return None


class _Split:
    """A worker counting ``[at, ...)`` of the file being read, and what became of it."""

    def __init__(self, at: int, header: list[str] | None, worker: Worker) -> None:
        self.at = at
        self.header = header
        self.worker: Worker | None = worker
        self.result: WorkerResult | None = None

    def join(self, tally: FileTally) -> None:
        """At the split point: take the worker's count when our parse joins it cleanly."""
        worker, self.worker = self.worker, None
        assert worker is not None
        if tally.carry or tally.pending or tally.header != self.header:
            worker.close()  # a record or a header change crosses the split: count it here
            return
        self.result = worker.result()

    def adopt(self, tally: FileTally, reader: AcctReader) -> None:
        """At the split point: its counts join ours, its parse state becomes ours."""
        result, self.result = self.result, None
        assert result is not None
        tally.absorb(result)
        reader.parallel_bytes += result.end - result.start

    def close(self) -> None:
        """Stop a worker not joined (the tail stopped before the split point)."""
        if self.worker is not None:
            self.worker.close()
            self.worker = None


@dataclass
class AcctBatch:
    """Everything one incremental read produced."""

    records: list[AcctRecord]
    state: AcctState
    skipped_rows: int
    timed_out: bool
    first_run: bool
    warnings: list[str]
    reader: AcctReader = field(repr=False)


def read_new_records(spec: str | os.PathLike[str], state: AcctState | None, *,
                     from_start: bool = False, deadline: float | None = None,
                     types: Collection[str] | None = None,
                     on_record: Callable[[AcctRecord], None] | None = None) -> AcctBatch:
    """Read the records added since ``state``. With ``on_record`` each record is passed to it
    and not kept (constant memory for large catch-ups); otherwise they are returned."""
    reader = AcctReader(spec, state, from_start=from_start, deadline=deadline, types=types)
    records: list[AcctRecord] = []
    sink = on_record if on_record is not None else records.append
    for record in reader.records():
        sink(record)
    return AcctBatch(records, reader.state, reader.skipped_rows, reader.timed_out,
                     reader.first_run, reader.warnings, reader)
