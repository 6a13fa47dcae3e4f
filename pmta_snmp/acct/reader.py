"""Following accounting files: only the records added since the last run, across rotations.

Reading follows the live file with :mod:`pmta_snmp.logtail` (offset, device and inode, head and
tail fingerprints); a glob of files (PowerMTA's ``acct-YYYY-MM-DD-NNNN.csv``) follows each file
by identity. The state also keeps the header of each file being followed, because a run may
start inside a file (the first run starts at its end) and columns are mapped by header name.

:class:`AcctReader` hands out either records (:meth:`AcctReader.records`, the record path of
:mod:`pmta_snmp.acct.records`) or counts (:meth:`AcctReader.tally`, :mod:`pmta_snmp.acct.tally`:
the same rows counted without building records, with the C scanner when it is built), from the
same files, state and rules. A record still being written when the run ends is given back to
the tail and read whole next time.

Beside a single path, rotated files already read (or present when following began) are
remembered in the state (``seen``), so a rotated name whose order the tail cannot tell (dated
``acct-YYYY-MM-DD-NNNN.csv`` files beside numbered ``acct.csv.N`` ones) is not read again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmta_snmp.acct.columns import (
    COLUMN_PREFIX,
    FIELDS,
    HEADER_NAMES,
    Layout,
    is_json_path,
    parse_header_line,
)
from pmta_snmp.acct.records import AcctRecord, RecordParser
from pmta_snmp.acct.tally import CHUNK_KEYS, FileTally, TallyCounts, TallySpec, count_record
from pmta_snmp.logtail import (
    CHUNK_SIZE,
    Block,
    MultiTailReader,
    TailReader,
    TailState,
    expand_paths,
    read_first_line,
    rotated_siblings,
)

__all__ = [
    "AcctBatch",
    "AcctReader",
    "AcctState",
    "SeenFile",
    "read_new_records",
]


@dataclass
class SeenFile:
    """A rotated file next to the followed one, known from an earlier run: read (or present
    when following began) up to ``offset`` (-1: all of it). ``head`` fingerprints its first
    ``head_len`` bytes (decompressed), so a compressed copy is recognised too. ``key``
    (``"device:inode"``), ``size`` and ``mtime`` (ns, -1: unknown) identify the file: an inode
    number freed by a removed rotation is soon given to a new file."""

    key: str
    head: str
    head_len: int
    offset: int
    size: int = -1
    mtime: int = -1

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``json.dumps``."""
        return {"key": self.key, "head": self.head, "head_len": self.head_len,
                "offset": self.offset, "size": self.size, "mtime": self.mtime}

    def unchanged(self, size: int, mtime: int) -> bool:
        """The file now under ``key`` is the one recorded (an old state has no mtime)."""
        return self.size == size and self.mtime in (mtime, -1)

    @classmethod
    def from_json(cls, data: object) -> SeenFile | None:
        """Rebuild from :meth:`to_json` output (None when malformed)."""
        if not isinstance(data, Mapping):
            return None
        key, head = data.get("key"), data.get("head")
        ints = [data.get(k, -1) for k in ("head_len", "offset", "size", "mtime")]
        if not isinstance(key, str) or not isinstance(head, str) or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in ints):
            return None
        head_len, offset, size, mtime = (int(x) for x in ints)
        return cls(key, head, head_len, offset, size, mtime)


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


#: Bytes fingerprinted at the start of a rotated file (as the tail reader's head check).
_HEAD_LEN = 1024


def _head_print(path: str, length: int = _HEAD_LEN,
                identity: tuple[str, int, int] | None = None) -> tuple[str, int] | None:
    """Fingerprint of the first ``length`` bytes of a (possibly compressed) file; with
    ``identity`` (key, size, mtime) None unless the file opened is that one."""
    import hashlib

    lowered = path.lower()
    try:
        with open(path, "rb") as raw:
            if identity is not None:
                st = os.fstat(raw.fileno())
                if (f"{st.st_dev}:{st.st_ino}", st.st_size, st.st_mtime_ns) != identity:
                    return None
            if lowered.endswith(".gz"):
                import gzip

                with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
                    data = fh.read(length)
            elif lowered.endswith(".bz2"):
                import bz2

                with bz2.BZ2File(raw, mode="rb") as bfh:
                    data = bfh.read(length)
            elif lowered.endswith(".xz"):
                import lzma

                with lzma.LZMAFile(raw, mode="rb") as xfh:
                    data = xfh.read(length)
            else:
                data = raw.read(length)
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
        #: (file, header) of every header in force while this run read (JSON: the keys met).
        self.headers_read: list[tuple[str, list[str]]] = []
        self._headers: dict[str, list[str] | None] = {}
        self._is_glob = any(ch in self.spec for ch in "*?[")
        self._tail: TailReader | MultiTailReader
        self._saved_headers: dict[str, list[str] | None]
        self._seen_in: list[SeenFile] = []
        self._seen_out: list[SeenFile] | None = None
        self._read_to_end: dict[str, int] = {}  # rotated files read to their end: key -> end
        self._siblings: dict[str, tuple[str, int, int]] = {}  # rotated files before reading
        if self._is_glob:
            states = None
            if state is not None and state.files is not None:
                states = {k: t for k, (t, _) in state.files.items()}
                self._saved_headers = {k: h for k, (_, h) in state.files.items()}
            else:
                self._saved_headers = {}
            self._tail = MultiTailReader(expand_paths(self.spec), states,
                                         from_start=from_start, deadline=deadline,
                                         chunk_size=chunk_size,
                                         relist=lambda: expand_paths(self.spec),
                                         copies=self._compressed_copies)
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

    def _compressed_copies(self) -> list[Path]:
        """Compressed files whose names without the suffix the glob matches (``acct*.csv``:
        ``acct-2026-11-25-0001.csv.gz``): where a file of the glob goes when gzipped."""
        return [p for ext in (".gz", ".bz2", ".xz") for p in expand_paths(self.spec + ext)]

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

    def tally(self, spec: TallySpec) -> Iterator[TallyCounts]:
        """Counts of the new records of the types in ``spec``, without building records:
        per (type, minute of timeLogged, wanted fields), in chunks (one or more per file).

        CSV is counted by :class:`pmta_snmp.acct.tally.FileTally`, JSON through the record
        path. Consume the iterator to the end, then store :attr:`state`; ``records_read``
        counts the records of the wanted types (also those older than ``spec.since_minute``,
        which are left out of the counts).
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
                parser = self._parser_for(first, types=wanted)
                counts = TallyCounts()
                minutes: dict[Any, int | None] = {}
                for record in parser.records(file_blocks):
                    self.records_read += 1
                    count_record(record, spec, minutes, counts)
                self._close_file(parser, True)
                # The CSV rule per header (TallySpec.required), per file: no record of a type
                # whose required keys no record had is counted.
                lacking = {kind for header in parser.headers()
                           for kind in spec.missing(Layout(header))}
                kept = TallyCounts({k: n for k, n in counts.items() if k[0] not in lacking})
                kept.sums = {k: v for k, v in counts.sums.items() if k[0] not in lacking}
                yield kept
                continue
            yield from self._tally_csv(first, file_blocks, spec)
        self._finish()

    def _tally_csv(self, first: Block, blocks: Iterator[Block], spec: TallySpec
                   ) -> Iterator[TallyCounts]:
        """Count one CSV file's blocks."""
        tally = FileTally(spec, self._header_for_block(first))
        last: Block | None = None
        for block in blocks:
            last = block
            tally.feed(block.data, block.start, final=block.final)
            if tally.size >= CHUNK_KEYS:
                yield tally.take()
        counts = tally.take()
        self.skipped_rows += tally.skipped_rows
        self.records_read += tally.records_read
        self.headers_read += [(first.source, header) for header in tally.headers()]
        if last is not None:
            if tally.pending and not last.final:
                self._tail.rewind(last, tally.record_start)  # a record still being written
            self._headers[last.key] = tally.header
        yield counts

    def lacking(self, spec: TallySpec) -> dict[str, list[str]]:
        """Per file read this run: the columns (PowerMTA's names) that ``spec.required`` needs
        and a header in force there lacked; the records of those types were not counted."""
        out: dict[str, list[str]] = {}
        for source, header in self.headers_read:
            for names in spec.missing(Layout(header)).values():
                columns = out.setdefault(source, [])
                columns += [c for c in (_column_name(n) for n in names) if c not in columns]
        return out

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
        followed). Files rotated while this run read are left to the next run, and so is a
        file whose inode is another file's now (removed during the run, its inode reused):
        each is remembered only if size and mtime still are those of the file read or listed.
        """
        if self._is_glob or not isinstance(self._tail, TailReader):
            return
        if self._tail.lost:
            self.warnings.append(_lost_note(self.spec, self._tail.initial_state))
        followed = self._tail.state
        followed_key = f"{followed.device}:{followed.inode}" if followed.identified else ""
        # Stopped before the live file (deadline, or rotations shifting the names faster than
        # the run read them): a rotation not reached may be newer than the file followed.
        stopped = self._tail.timed_out or self._tail.shifting
        previous = {f.key: f for f in self._seen_in}
        now = _listing(self._tail.path)
        seen: list[SeenFile] = []
        for key, (path, size, mtime) in now.items():
            before = previous.get(key)
            listed = self._siblings.get(key)
            if key in self._read_to_end:
                opened = self._tail.opened(key)
                if opened is None or opened[:2] != (size, mtime):
                    continue  # not the file read: removed meanwhile, its inode reused
                head, head_len = opened[2:]
                seen.append(SeenFile(key, head, head_len, self._read_to_end[key], size, mtime))
            elif key == followed_key or listed is None:
                continue  # followed by the tail state, or rotated during this run
            elif stopped or (before is not None and before.unchanged(size, mtime)):
                if before is not None:
                    seen.append(before)  # its head is checked before it is trusted
                continue  # unchanged, or not reached this run (read next run if newer)
            elif listed[1:] == (size, mtime):
                found = _head_print(path, identity=(key, size, mtime))
                if found is not None:
                    offset = -1 if _compressed(path) else size
                    seen.append(SeenFile(key, found[0], found[1], offset, size, mtime))
            # Otherwise changed or replaced while this run read: the next run decides.
        self._seen_out = seen

    def _parser_for(self, block: Block, types: Collection[str] | None = None) -> RecordParser:
        json_format = is_json_path(block.source)
        header = None if json_format else self._header_for_block(block)
        return RecordParser(json_format=json_format, header=header,
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
        return saved or self._header_of(block.source, block.key)

    def _header_of(self, path: str, key: str) -> list[str] | None:
        """The header of the file ``key``, opened at ``path``: from the file the tail opened
        (a read by path could meet a file rotated under that name since, or none)."""
        header = self._opened_header(key)
        if header is None:
            try:
                header = parse_header_line(read_first_line(path))
            except OSError:
                header = None
        if header is None:
            self.warnings.append(f"{path}: no header line; rows cannot be mapped")
        return header

    def _opened_header(self, key: str) -> list[str] | None:
        line = self._tail.first_line(key)
        return parse_header_line(line) if line is not None else None

    def _close_file(self, parser: RecordParser, finished: bool) -> None:
        """Account for one file's parse and hand unparsed bytes back to the tail."""
        self.skipped_rows += parser.skipped_rows
        block = parser.block
        if block is None:
            return
        self.headers_read += [(block.source, header) for header in parser.headers()]
        if finished and parser.pending and not block.final:
            # The record at the end is still being written: read it whole next run.
            self._tail.rewind(block, parser.record_start)
        elif not finished:
            # The caller stopped early (at a yield, so the parser's last line ends the record
            # it received): the state must not pass that record.
            self._tail.rewind(block, parser.end)
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
        # Positioned inside a file we have not parsed (first run at the end, or a deadline
        # before the first block of the file we were reading, found again compressed):
        # remember its header now, the file may be rotated away before the next run. From the
        # file opened: by path, a rotation since this run opened it loses it (the next run
        # then read the rest of the file without a header, its rows skipped).
        header = self._opened_header(key)
        if header is None:
            try:
                header = parse_header_line(
                    read_first_line(tail_state.source or tail_state.path))
            except OSError:
                header = None
        self._headers[key] = header
        return header


def _column_name(field_name: str) -> str:
    """PowerMTA's name of the column a tally field reads."""
    if field_name.startswith(COLUMN_PREFIX):
        return field_name[len(COLUMN_PREFIX):]
    return HEADER_NAMES[FIELDS[field_name]]


def _lost_note(spec: str, state: TailState | None) -> str:
    """What a run says when the file the last run was reading, or a rotation after it, was
    removed before this run could read it: those records could not be read (never silently)."""
    left = state.size - state.offset if state is not None else 0
    known = f"at least {left:,} bytes, and " if left > 0 else ""
    return (f"{spec}: the file read last run, or a rotation after it, was not found after "
            f"rotation (removed before it was read); {known}the records written to it after "
            "the last run could not be read")


def _listing(path: str) -> dict[str, tuple[str, int, int]]:
    """The rotated siblings of ``path`` now: ``"device:inode"`` -> (path, size, mtime in ns)."""
    out: dict[str, tuple[str, int, int]] = {}
    for sibling in rotated_siblings(path):
        try:
            st = os.stat(sibling)
        except OSError:
            continue
        out[f"{st.st_dev}:{st.st_ino}"] = (os.fspath(sibling), st.st_size, st.st_mtime_ns)
    return out


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
