"""Where the records logged since a time begin, found without reading the files whole.

A plugin (or the agent) that has no state yet reads back one window of existing records
instead of starting blind at the end: :func:`state_since` gives an :class:`AcctState` from
which :class:`~pmta_snmp.acct.reader.AcctReader` reads every record logged at or after a time,
in the accounting file and the rotated files beside it, or in each file of a glob.

Within one file the place is found by ``timeLogged``: a binary search over byte offsets that
reads one line (a few KiB) at each probe, so a file of gigabytes costs a few dozen small reads.
Records are in logging order in an accounting file, give or take a second between PowerMTA's
threads, so callers ask for a little before the time they need and drop older records while
counting. A line without a usable time (a header line, a line of a multi-line record, an empty
``timeLogged``) is passed over by the search and read with the records around it: the position
returned is the end of the last line holding a whole record logged before the time. Compressed
(rotated) files have no random access: they are stepped through once, decompressing only.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from typing import Protocol

from pmta_snmp.acct.columns import Layout, is_header, is_json_path, parse_header_line, parse_time
from pmta_snmp.acct.reader import AcctState
from pmta_snmp.logtail import (
    TailState,
    decode_line,
    expand_paths,
    read_first_line,
    rotated_siblings,
    state_at,
)

__all__ = ["Timeline", "offset_at", "state_since"]

#: Bytes read at a time.
_READ = 64 << 10
#: How far one probe looks for a line with a time before it gives up.
_MAX_SCAN = 1 << 20
#: Below this span the binary search ends and lines are read in order.
_LINEAR = 64 << 10
#: Compressed files: the distance between probes, stepping forward.
_STEP = 1 << 20
#: Compressed files: decompressed bytes kept, so that the last steps can be read again.
_KEEP = 4 << 20


class _Stream(Protocol):
    """What is read of a decompressing file object."""

    def read(self, size: int = ..., /) -> bytes: ...
    def seek(self, offset: int, whence: int = ..., /) -> int: ...
    def close(self) -> None: ...


def _open_stream(path: str) -> _Stream | None:
    """A decompressing reader for a compressed file (None for a plain one)."""
    lowered = path.lower()
    if lowered.endswith(".gz"):
        import gzip

        return gzip.open(path, "rb")
    if lowered.endswith(".bz2"):
        import bz2

        return bz2.open(path, "rb")
    if lowered.endswith(".xz"):
        import lzma

        return lzma.open(path, "rb")
    return None


class _Source:
    """A file's (decompressed) bytes at any offset: ``os.pread`` for a plain file; a
    compressed one is read forward once, keeping the last few MiB."""

    def __init__(self, path: str) -> None:
        self.stream = _open_stream(path)
        self.fd = -1
        self.size: int | None = None
        if self.stream is None:
            self.fd = os.open(path, os.O_RDONLY)
            self.size = os.fstat(self.fd).st_size
        self._kept = b""  # decompressed bytes from _kept_at on
        self._kept_at = 0
        self._eof = False
        #: Bytes read from the file (decompressed), for the tests and the benchmark.
        self.bytes_read = 0

    def read(self, pos: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``pos`` (fewer at the end)."""
        if self.stream is None:
            data = os.pread(self.fd, n, pos)
            self.bytes_read += len(data)
            return data
        if pos < self._kept_at:  # before what is kept: read the stream again from its start
            self.stream.seek(0)
            self._kept, self._kept_at, self._eof = b"", 0, False
        while not self._eof and self._kept_at + len(self._kept) < pos + n:
            chunk = self.stream.read(_READ * 16)
            if not chunk:
                self._eof = True
                break
            self.bytes_read += len(chunk)
            kept = self._kept + chunk
            drop = max(0, min(len(kept) - _KEEP, pos - self._kept_at))
            self._kept, self._kept_at = kept[drop:], self._kept_at + drop
        at = pos - self._kept_at
        return self._kept[at:at + n]

    def close(self) -> None:
        """Close the file."""
        if self.stream is not None:
            self.stream.close()
        elif self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Timeline:
    """The records of one accounting file by ``timeLogged``, read one line at a time.

    ``timed`` is False when the records carry no time to search by (a CSV header without
    ``timeLogged``); ``header`` is the file's first-line header (None for JSON).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.json = is_json_path(self.path)
        self.header: list[str] | None = None
        self._layout: Layout | None = None
        self.data_start = 0
        if not self.json:
            first = read_first_line(self.path)
            self.header = parse_header_line(first)
            if self.header is not None:
                self._layout = Layout(self.header)
                self.data_start = len(first)  # the header line and its line end
        self._source = _Source(self.path)
        if self.header is not None:
            start = self._source.read(len(first), 2)
            self.data_start += 2 if start == b"\r\n" else 1 if start[:1] == b"\n" else 0
        self.timed = self.json or (self._layout is not None and self._layout.time_index >= 0)

    @property
    def bytes_read(self) -> int:
        """Bytes read so far (decompressed for a compressed file)."""
        return self._source.bytes_read

    def close(self) -> None:
        """Close the file."""
        self._source.close()

    def __enter__(self) -> Timeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lines -----------------------------------------------------------------------------

    def lines(self, pos: int, *, limit: int | None = None, scan: int = _MAX_SCAN
              ) -> Iterator[tuple[int, int, bytes]]:
        """(start, end, bytes without the line end) of the whole lines starting at or after
        ``pos`` (the first data line when ``pos`` is before it), and before ``limit``; stops
        after ``scan`` bytes were looked through, and before an unterminated last line."""
        align = pos > self.data_start
        at = pos - 1 if align else self.data_start  # offset of buf[0]
        buf = b""
        i = 0
        scanned = 0
        while True:
            nl = buf.find(b"\n", i)
            if nl < 0:
                if scanned >= scan:
                    return
                chunk = self._source.read(at + len(buf), _READ)
                if not chunk:
                    return
                scanned += len(chunk)
                buf, at, i = buf[i:] + chunk, at + i, 0
                continue
            if align:  # the line under way at pos - 1 ends here
                align = False
                i = nl + 1
                continue
            start = at + i
            if limit is not None and start >= limit:
                return
            line = buf[i:nl]
            yield start, at + nl + 1, line[:-1] if line.endswith(b"\r") else line
            i = nl + 1

    def time_of(self, line: bytes) -> float | None:
        """The ``timeLogged`` of a line that holds one whole record (Unix seconds), else None."""
        text = decode_line(line)
        raw: object
        if self.json:
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError):  # RecursionError: nested too deep (hostile)
                return None
            raw = obj.get("timeLogged") if isinstance(obj, dict) else None
        else:
            layout = self._layout
            if layout is None or layout.time_index < 0:
                return None
            try:
                row = next(csv.reader([text], strict=True))
            except (csv.Error, StopIteration):
                return None
            if len(row) != layout.width or is_header(row):
                return None
            raw = row[layout.time_index]
        when = parse_time(raw) if isinstance(raw, str) else None
        return when.timestamp() if when is not None else None

    def timed_line(self, pos: int, limit: int | None = None) -> tuple[int, int, float] | None:
        """(start, end, time) of the first line at or after ``pos`` holding a timed record."""
        for start, end, line in self.lines(pos, limit=limit):
            when = self.time_of(line)
            if when is not None:
                return start, end, when
        return None

    # -- positions -------------------------------------------------------------------------

    def first_time(self) -> float | None:
        """The time of the first timed record (None: no timed record near the start)."""
        found = self.timed_line(self.data_start)
        return found[2] if found is not None else None

    def end(self) -> int:
        """Just after the last whole line (where a reader that has read everything stands)."""
        size = self._source.size
        if size is None:  # compressed: read through once
            pos, last = 0, 0
            while True:
                chunk = self._source.read(pos, _READ * 16)
                if not chunk:
                    return last
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    last = pos + nl + 1
                pos += len(chunk)
        pos = size
        while pos > self.data_start:
            n = min(_READ, pos - self.data_start)
            nl = self._source.read(pos - n, n).rfind(b"\n")
            if nl >= 0:
                return pos - n + nl + 1
            pos -= n
        return self.data_start

    def offset_at(self, since: float) -> int:
        """Where the records logged at or after ``since`` begin: the end of the last timed
        record before ``since`` (the file's data start when the first one is not before it,
        the end of its last line when all are)."""
        lo = self.data_start
        size = self._source.size
        if size is not None:
            hi = size
            while hi - lo > _LINEAR:
                mid = (lo + hi) // 2
                found = self.timed_line(mid, hi)
                if found is not None and found[2] < since:
                    lo = found[1]
                else:
                    hi = mid
        else:
            while True:  # compressed: forward steps, then back over the last one (kept)
                found = self.timed_line(lo + _STEP)
                if found is None or found[2] >= since:
                    break
                lo = found[1]
        for _, end, line in self.lines(lo, scan=_STEP + _MAX_SCAN):
            when = self.time_of(line)
            if when is not None:
                if when >= since:
                    break
                lo = end
        return lo


def offset_at(path: str | os.PathLike[str], since: float) -> int | None:
    """Where the records of one accounting file logged at or after ``since`` (Unix seconds)
    begin; None when its records carry no time to search by."""
    with Timeline(path) as line:
        return line.offset_at(since) if line.timed else None


def _state(path: str, offset: int, followed: str) -> TailState:
    state = state_at(path, offset, followed=followed)
    if state is None:
        raise FileNotFoundError(path)
    return state


def state_since(spec: str | os.PathLike[str], since: float) -> AcctState | None:
    """An :class:`AcctState` from which :class:`AcctReader` reads the records logged at or
    after ``since`` (Unix seconds) in ``spec`` (a path, with its rotated files, or a glob).

    Files are looked at newest first: one whose first record is at or after ``since`` is read
    whole, the one where ``since`` falls is searched, older ones are skipped. None when the
    newest file's records carry no time (no ``timeLogged`` column): start at its end then.
    """
    text = os.fspath(spec)
    try:
        if any(ch in text for ch in "*?["):
            return _glob_since(text, since)
        return _path_since(text, since)
    except Exception:  # a file gone, unreadable or corrupt (lzma.LZMAError): start at the end
        return None


def _path_since(spec: str, since: float) -> AcctState | None:
    live = os.path.abspath(spec)
    candidates = [live, *map(os.fspath, rotated_siblings(live))]  # newest first
    chosen: tuple[str, int, list[str] | None] | None = None
    for path in candidates:
        if not os.path.isfile(path):
            continue
        with Timeline(path) as line:
            if not line.timed:
                if path == live:
                    return None
                chosen = (path, line.end(), line.header)
                break
            first = line.first_time()
            if (first is not None and first >= since) or (
                    first is None and line.end() <= line.data_start):
                chosen = (path, 0, line.header)  # read whole (or empty): on to older ones
                continue
            chosen = (path, line.offset_at(since), line.header)
            break
    if chosen is None:
        return None
    path, offset, header = chosen
    return AcctState(spec, tail=_state(path, offset, live),
                     header=header if offset else None)


def _glob_since(spec: str, since: float) -> AcctState | None:
    paths = [os.fspath(p) for p in expand_paths(spec)]  # oldest first
    files: dict[str, tuple[TailState, list[str] | None]] = {}
    found = False  # the file where `since` falls is behind us: older ones are skipped
    for i, path in enumerate(reversed(paths)):
        with Timeline(path) as line:
            if not line.timed and i == 0:
                return None
            if found or not line.timed:
                offset = line.end()
            else:
                first = line.first_time()
                if (first is not None and first >= since) or (
                        first is None and line.end() <= line.data_start):
                    offset = 0  # read whole (or empty): on to older ones
                else:
                    offset = line.offset_at(since)
                    found = True
            state = _state(path, offset, path)
            files[f"{state.device}:{state.inode}"] = (state, line.header if offset else None)
    return AcctState(spec, files=files)
