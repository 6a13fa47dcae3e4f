"""Rotation-safe incremental reading of log and accounting files.

The model is check_logfiles': a small state per followed file (offset, device, inode) lets each
run read only what was appended since the last one. The first run starts at the end. A rename
rotation (inode changed) finishes the old file, wherever it moved to, before the new one is read
from its start; a copytruncate (same inode, shrunk or rewritten) finishes the copy first. Two
fingerprints make "the same file" a content check, not just an inode check: a hash of the first
bytes and a hash of the bytes just before the offset. That catches copytruncate followed by
regrowth past the old offset, inode reuse, and finds a rotated file after it was compressed.

Reading is binary, in large chunks, and hands out *blocks* of complete lines so callers can run
one compiled regex over a block instead of paying Python overhead per line; a line API is built
on top. The last line is consumed only once it is terminated, except in a rotated file, which
will not grow any more. A deadline stops the read between blocks and the state then points just
after the last block handed out: the next run continues there, nothing lost, nothing twice.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import hashlib
import importlib
import os
import re
import stat
import time
from collections.abc import (
    Callable,
    Collection,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

__all__ = [
    "CHUNK_SIZE",
    "HEAD_LEN",
    "TAIL_LEN",
    "Block",
    "LineScanner",
    "MultiTailReader",
    "TailReader",
    "TailState",
    "decode_block",
    "decode_line",
    "expand_paths",
    "iter_lines",
    "read_first_line",
    "read_new",
    "rotated_siblings",
    "sort_rotated",
    "state_at",
]

#: Bytes per read: big enough that per-read overhead vanishes, small enough to stay in cache
#: (measured fastest of 256 KiB–16 MiB).
CHUNK_SIZE = 1 << 20
#: Bytes hashed for the "first bytes" fingerprint (covers an accounting header plus a record).
HEAD_LEN = 1024
#: Bytes before the offset hashed for the "still the content we read" fingerprint.
TAIL_LEN = 64
#: A "line" longer than this is handed out unterminated rather than buffered without bound.
MAX_LINE = 16 << 20
#: New listings of the rotated files one run makes when rotations shift them while it looks
#: for the file it was reading or reads the ones after it.
_RELISTS = 5
#: How far back the first run looks for the last line end before giving up.
_FIRST_RUN_SCAN = 1 << 20



class _Stream(Protocol):
    """What the reader needs from a plain or decompressing file object."""

    def read(self, size: int = ..., /) -> bytes: ...
    def seek(self, offset: int, whence: int = ..., /) -> int: ...
    def close(self) -> None: ...


# The decompressors wrap a raw file we own and close ourselves (see _File.close). Their modules
# are imported only when a compressed file is opened: a plugin run usually reads none.


def _open_gz(raw: IO[bytes]) -> _Stream:
    import gzip

    return gzip.GzipFile(fileobj=raw, mode="rb")


def _open_bz2(raw: IO[bytes]) -> _Stream:
    import bz2

    return bz2.BZ2File(raw, mode="rb")


def _open_xz(raw: IO[bytes]) -> _Stream:
    import lzma

    return lzma.LZMAFile(raw, mode="rb")


_OPENERS: dict[str, Callable[[IO[bytes]], _Stream]] = {
    ".gz": _open_gz,
    ".bz2": _open_bz2,
    ".xz": _open_xz,
}

#: What reading a (possibly truncated or corrupt) stream may raise; an .xz stream adds
#: lzma.LZMAError (see _File.read_errors).
_READ_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError)


def _fp(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _compression(path: str | os.PathLike[str]) -> str | None:
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    return suffix if suffix in _OPENERS else None


# ---------------------------------------------------------------------------------------------
# State and blocks
# ---------------------------------------------------------------------------------------------


@dataclass
class TailState:
    """Where reading of one followed file stopped; store ``to_json()`` in the plugin state.

    ``device``/``inode`` identify the file last read (the live file, or a rotated one not yet
    finished); ``offset`` counts bytes consumed (decompressed bytes when ``compressed``);
    ``head`` hashes the first ``head_len`` bytes and ``tail`` the bytes just before ``offset``.
    ``inode == 0`` means "watched, but the file did not exist": when it appears it is new and
    read from its start.
    """

    path: str
    offset: int = 0
    device: int = 0
    inode: int = 0
    size: int = 0
    head: str = ""
    head_len: int = 0
    tail: str = ""
    compressed: bool = False
    source: str = ""
    ended: bool = False
    """A compressed file read to its end: it never grows, so the same file again (inode,
    size, first bytes) is not decompressed to check it (a glob taking in compressed files
    would otherwise decompress every one of them on every run)."""

    @property
    def identified(self) -> bool:
        """True once a file has been seen (an inode is recorded)."""
        return self.inode != 0

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``json.dumps``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: object) -> TailState | None:
        """Rebuild from :meth:`to_json` output; anything malformed gives ``None`` (first run)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("path"), str):
            return None
        kwargs: dict[str, Any] = {"path": data["path"]}
        for f in dataclasses.fields(cls):
            if f.name == "path" or f.name not in data:
                continue
            value = data[f.name]
            expected = {"offset": int, "device": int, "inode": int, "size": int,
                        "head_len": int, "compressed": bool, "ended": bool}.get(f.name, str)
            if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
                return None
            if not isinstance(value, expected):
                return None
            kwargs[f.name] = value
        state = cls(**kwargs)
        if state.offset < 0 or state.head_len < 0 or state.head_len > HEAD_LEN:
            return None
        return state


@dataclass(frozen=True, slots=True)
class Block:
    """Complete lines read from one file, as raw bytes.

    ``start`` is the offset of ``data[0]`` in ``source`` (decompressed offset for .gz);
    ``final`` marks the last block of a rotated file, which may end without a newline;
    ``continues`` is true when ``source`` is the file the incoming state pointed into;
    ``key`` identifies the file (``"device:inode"``) for :meth:`TailReader.rewind`.
    """

    data: bytes
    source: str
    start: int
    final: bool = False
    continues: bool = False
    key: str = ""

    @property
    def end(self) -> int:
        """Offset just after this block in ``source``."""
        return self.start + len(self.data)

    def text(self) -> str:
        """The block decoded (UTF-8, Latin-1 per line where UTF-8 fails)."""
        return decode_block(self.data)

    def lines(self) -> list[str]:
        """The decoded lines without their line ends."""
        return _split_text(self.text())


def decode_line(raw: bytes) -> str:
    """UTF-8, or Latin-1 when the line is not valid UTF-8 (PowerMTA's own reader uses 8859-1)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def decode_block(raw: bytes) -> str:
    """Decode a block in one call when it is valid UTF-8, else line by line with fallback."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "\n".join(decode_line(part) for part in raw.split(b"\n"))


def _split_text(text: str) -> list[str]:
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def iter_lines(blocks: Iterable[Block]) -> Iterator[str]:
    """Decoded lines (no line ends) from a stream of blocks."""
    for block in blocks:
        yield from block.lines()


# ---------------------------------------------------------------------------------------------
# Fast pattern scanning over blocks
# ---------------------------------------------------------------------------------------------


class LineScanner:
    """The lines of a block that match any of several named regexes, at close to block speed.

    Python's ``re`` is slow on case-insensitive alternations (about 25 s/GB); a literal search is
    fast (about 0.3 s/GB). So each pattern is parsed for a literal that every match must contain
    (``ETIMEDOUT`` in ``ETIMEDOUT (connecting|in connection) to``); the block is searched for
    those literals and only the lines holding one are decoded and checked with the full regex.
    A pattern without such a literal makes the scan fall back to checking every line, which is
    slower but gives the same answer. Results are exactly those of ``pattern.search(line)``.

    With ``ignore_case`` (the default), string patterns are compiled with ``IGNORECASE`` and
    ``ASCII``: case folding, ``\\w`` and ``\\b`` are ASCII-only, which keeps the byte-level
    literal search exact.
    """

    _MIN_LITERAL = 3

    def __init__(self, patterns: Mapping[str, str | re.Pattern[str]], *,
                 ignore_case: bool = True) -> None:
        self.patterns: list[tuple[str, re.Pattern[str]]] = []
        flags = re.IGNORECASE | re.ASCII if ignore_case else 0
        for name, given in patterns.items():
            compiled = re.compile(given, flags) if isinstance(given, str) else given
            self.patterns.append((name, compiled))
        # Per pattern: the literals (at least one is in every match), or None.
        self._literals: list[list[bytes] | None] = [
            _required_literals(p) for _, p in self.patterns]
        self._folds = [bool(p.flags & re.IGNORECASE) for _, p in self.patterns]
        self.prefiltered = all(lits is not None for lits in self._literals)

    def scan(self, data: bytes) -> list[tuple[str, str]]:
        """(pattern name, line) for every line of ``data`` and every pattern it matches, in
        line order; lines are decoded like :func:`decode_line`, without the line end."""
        if not self.patterns or not data:
            return []
        if not self.prefiltered:
            return [(name, line) for line in _split_text(decode_block(data))
                    for name, pattern in self.patterns if pattern.search(line)]
        lowered = data.lower() if any(self._folds) else data
        hits: dict[int, tuple[int, set[int]]] = {}
        for index, literals in enumerate(self._literals):
            assert literals is not None
            haystack = lowered if self._folds[index] else data
            for literal in literals:
                pos = haystack.find(literal)
                while pos >= 0:
                    start = haystack.rfind(b"\n", 0, pos) + 1
                    end = haystack.find(b"\n", pos)
                    if end < 0:
                        end = len(haystack)
                    entry = hits.get(start)
                    if entry is None:
                        hits[start] = (end, {index})
                    else:
                        entry[1].add(index)
                    pos = haystack.find(literal, end + 1)
        out: list[tuple[str, str]] = []
        for start in sorted(hits):
            end, indexes = hits[start]
            raw = data[start:end]
            line = decode_line(raw[:-1] if raw.endswith(b"\r") else raw)
            for index in sorted(indexes):
                name, pattern = self.patterns[index]
                if pattern.search(line):
                    out.append((name, line))
        return out


def _required_literals(pattern: re.Pattern[str]) -> list[bytes] | None:
    """Byte strings of which every match contains at least one (lowercased when the pattern
    ignores case); None when no useful set is found. Conservative: unknown constructs only
    end a literal run, they never add one."""
    fold = bool(pattern.flags & re.IGNORECASE)
    if fold and not pattern.flags & re.ASCII:
        return None  # Unicode case folding (e.g. U+212A KELVIN SIGN ~ k) defeats a byte search
    try:
        # re._parser is CPython's own regex parser (sre_parse before 3.11): private, so any
        # surprise just disables the prefilter.
        parser: Any = importlib.import_module("re._parser")
        tree = parser.parse(pattern.pattern, pattern.flags)
        found = _walk_literals(list(tree), fold)
    except Exception:  # an optimisation must never break a scan
        return None
    if not found or min(len(x) for x in found) < LineScanner._MIN_LITERAL:
        return None
    return sorted(found)


def _walk_literals(items: list[Any], fold: bool) -> set[bytes] | None:
    best: set[bytes] | None = None

    def consider(candidate: set[bytes] | None) -> None:
        nonlocal best
        if not candidate:
            return
        if best is None or _literal_score(candidate) > _literal_score(best):
            best = candidate

    def literal(codes: list[int]) -> set[bytes] | None:
        text = "".join(map(chr, codes))
        if fold and not text.isascii():
            return None
        raw = text.encode("utf-8")
        if fold:
            return {raw.lower()}
        # Lines are UTF-8 or, failing that, Latin-1: a non-ASCII literal may be either.
        try:
            return {raw, text.encode("latin-1")}
        except UnicodeEncodeError:
            return {raw}

    run: list[int] = []
    for op, av in items:
        name = getattr(op, "name", str(op))
        if name == "LITERAL":
            run.append(av)
            continue
        if run:
            consider(literal(run))
            run = []
        if name == "SUBPATTERN":
            _group, add_flags, del_flags, sub = av
            if not add_flags and not del_flags:  # inline flags change matching: skip
                consider(_walk_literals(list(sub), fold))
        elif name == "BRANCH":
            parts = [_walk_literals(list(branch), fold) for branch in av[1]]
            if parts and all(parts):
                consider(set().union(*(p for p in parts if p)))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            if av[0] >= 1:
                consider(_walk_literals(list(av[2]), fold))
        elif name == "ATOMIC_GROUP":
            consider(_walk_literals(list(av), fold))
        # Anything else (classes, anchors, lookarounds, backrefs) only ends the literal run.
    if run:
        consider(literal(run))
    return best


def _literal_score(candidate: set[bytes]) -> tuple[int, int]:
    return (min(len(x) for x in candidate), -len(candidate))


# ---------------------------------------------------------------------------------------------
# Rotated files: naming and ordering
# ---------------------------------------------------------------------------------------------

_ROT_REST = re.compile(r"[0-9][0-9._T:-]*")
_DIGITS = re.compile(r"\d+")


def _strip_compression(name: str) -> str:
    comp = _compression(name)
    return name[: -len(comp)] if comp else name


def _rotation_rank(live_name: str, name: str) -> tuple[int, tuple[int, ...]] | None:
    """Order key (larger = newer) if ``name`` looks like a rotation of ``live_name``.

    Covers ``log.N`` (higher N older), ``log-YYYYMMDD`` (logrotate dateext) and PowerMTA's
    ``acct-YYYY-MM-DD-NNNN.csv`` / ``acct-YYYYMMDD*`` names, each optionally compressed.
    """
    if name == live_name:
        return None
    base = _strip_compression(name)
    stem, ext = os.path.splitext(live_name)
    candidates = [(live_name, "")]
    if ext:
        candidates.append((stem, ext))
    for prefix, suffix in candidates:
        for sep in (".", "-", "_"):
            head = prefix + sep
            if not base.startswith(head):
                continue
            rest = base[len(head):]
            if suffix:
                if not rest.endswith(suffix):
                    continue
                rest = rest[: -len(suffix)]
            if not _ROT_REST.fullmatch(rest):
                continue
            if sep == "." and rest.isdigit():
                return (0, (-int(rest),))
            return (1, _date_key(rest))
    return None


def _date_key(rest: str) -> tuple[int, ...]:
    parts: list[int] = []
    for run in _DIGITS.findall(rest):
        if len(run) in (8, 14) and not parts:
            # Compact YYYYMMDD[hhmmss]: split so it orders with the dashed form.
            parts += [int(run[0:4]), int(run[4:6]), int(run[6:8])]
            if len(run) == 14:
                parts += [int(run[8:10]), int(run[10:12]), int(run[12:14])]
        else:
            parts.append(int(run))
    return tuple(parts)


def rotated_siblings(path: str | os.PathLike[str]) -> list[Path]:
    """Rotated versions of ``path`` in its directory, newest first (plain before compressed)."""
    p = Path(path)
    try:
        names = os.listdir(p.parent)
    except OSError:
        return []
    ranked: list[tuple[tuple[int, tuple[int, ...]], int, str]] = []
    for name in names:
        rank = _rotation_rank(p.name, name)
        if rank is not None:
            ranked.append((rank, 1 if _compression(name) else 0, name))
    ranked.sort(key=lambda item: (_neg(item[0]), item[1], item[2]))
    return [p.parent / name for _, _, name in ranked]


def _neg(rank: tuple[int, tuple[int, ...]]) -> tuple[int, tuple[int, ...]]:
    return (-rank[0], tuple(-x for x in rank[1]))


def sort_rotated(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Oldest first: numbered rotations (``log.3`` before ``log.1``), dated files by date and
    serial (``acct-2025-01-14-0001.csv``, ``acct-20250114…``), then live files (``acct.csv``)."""

    def key(p: Path) -> tuple[int, tuple[int, ...], str]:
        base = _strip_compression(p.name)
        numbered = re.fullmatch(r"(.*)\.(\d+)", base)
        if numbered:
            return (0, (-int(numbered.group(2)),), p.name)
        base = re.sub(r"\.[A-Za-z][A-Za-z0-9]*$", "", base)  # .csv, .json, .log
        dated = re.fullmatch(r"(.*?)[._-](\d[0-9._T:-]*)", base)
        if dated:
            return (1, _date_key(dated.group(2)), p.name)
        return (2, (), p.name)

    return sorted((Path(p) for p in paths), key=key)


def expand_paths(spec: str | os.PathLike[str]) -> list[Path]:
    """``spec`` as a list of files in reading order: a glob (``acct*.csv``) is expanded and
    sorted with :func:`sort_rotated`; a plain path is returned as is, even if missing."""
    text = os.fspath(spec)
    if glob.has_magic(text):
        return sort_rotated(p for p in glob.glob(text) if os.path.isfile(p))
    return [Path(text)]


def read_first_line(path: str | os.PathLike[str], limit: int = 1 << 16) -> bytes:
    """The first line of a (possibly compressed) file, without its line end; b"" if none."""
    f = _File(os.fspath(path))
    try:
        data = f.bytes_at(0, limit)
    finally:
        f.close()
    line = data.split(b"\n", 1)[0]
    return line[:-1] if line.endswith(b"\r") else line


# ---------------------------------------------------------------------------------------------
# Opened files
# ---------------------------------------------------------------------------------------------


class _File:
    """One file opened for reading: identity from fstat (no stat/open race), head bytes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.compressed = _compression(path) is not None
        self._last_at: tuple[int, int, bytes] | None = None
        self.raw: IO[bytes] = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        try:
            st = os.fstat(self.raw.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", path)
            self.device, self.inode, self.size = st.st_dev, st.st_ino, st.st_size
            self.mtime_ns = st.st_mtime_ns
            comp = _compression(path)
            self.stream: _Stream = _OPENERS[comp](self.raw) if comp else self.raw
            self.read_errors = _READ_ERRORS
            if comp == ".xz":
                import lzma

                self.read_errors = (*_READ_ERRORS, lzma.LZMAError)
            self.head = self._head()
        except BaseException:
            self.raw.close()
            raise

    @property
    def key(self) -> str:
        return f"{self.device}:{self.inode}"

    def _head(self) -> bytes:
        if not self.compressed:
            return os.pread(self.raw.fileno(), HEAD_LEN, 0)
        try:
            data = self.stream.read(HEAD_LEN)
            self.stream.seek(0)
        except self.read_errors:
            return b""
        return data

    def bytes_at(self, start: int, length: int) -> bytes:
        """``length`` bytes at ``start`` (fewer at EOF); b"" when unreadable."""
        if length <= 0:
            return b""
        if not self.compressed:
            return os.pread(self.raw.fileno(), length, start)
        # Seeking backwards in a compressed stream decompresses from the start again; the
        # fingerprint check and the cursor ask for the same bytes, so remember the last answer.
        if self._last_at is not None and self._last_at[:2] == (start, length):
            return self._last_at[2]
        try:
            self.stream.seek(start)
            data = self.stream.read(length)
        except self.read_errors:
            data = b""
        self._last_at = (start, length, data)
        return data

    def same_file(self, state: TailState) -> bool:
        return self.inode == state.inode and self.device == state.device

    def rewritten(self) -> bool:
        """True when the first bytes differ from those seen at open: truncated or rewritten in
        place since (copytruncate while we read). Compressed files are never rewritten."""
        if self.compressed or not self.head:
            return False
        return os.pread(self.raw.fileno(), len(self.head), 0) != self.head

    def matches(self, state: TailState) -> bool:
        """The content we read before is still here: both fingerprints agree."""
        if not self.compressed and state.offset > self.size:
            return False
        if state.head_len and _fp(self.bytes_at(0, state.head_len)) != state.head:
            return False
        if state.offset and state.tail:
            n = min(TAIL_LEN, state.offset)
            before = self.bytes_at(state.offset - n, n)
            if len(before) != n or _fp(before) != state.tail:
                return False
        return True

    def close(self) -> None:
        if self.stream is not self.raw:
            self.stream.close()
        self.raw.close()


def _holds_live(f: _File, live: _File) -> bool:
    """``f`` is the live file as opened (renamed, copied or compressed since): the same inode,
    the same first bytes, or, when the live file was shorter than those (it grew before it was
    rotated), first bytes that begin with all it held, if that is more than one line (the
    first line alone, an accounting header, begins every file)."""
    if f.key == live.key:
        return True
    if not live.head:
        return False
    if f.head == live.head:
        return True
    return (len(live.head) < HEAD_LEN and live.head.count(b"\n") >= 2
            and f.head.startswith(live.head))


def _open(path: str, *, sibling: bool = False) -> _File | None:
    """Open ``path``; None if it does not exist. The followed file's other errors (permission)
    propagate for the caller to report; a rotated sibling that cannot be read is just skipped."""
    try:
        return _File(path)
    except FileNotFoundError:
        return None
    except OSError:
        if sibling:
            return None
        raise


@dataclass
class _Cursor:
    """Position reached in one file, turned into a TailState when asked."""

    path: str
    file: _File
    offset: int
    window: bytes  # the TAIL_LEN bytes before offset
    start: int  # where this run started reading the file (rewind floor)
    last: Block | None = None  # last block handed out from this file
    last_before: bytes = b""  # the TAIL_LEN bytes before that block
    ended: bool = False  # a compressed file handed out to its end

    def state(self, followed: str) -> TailState:
        f = self.file
        head = f.head
        return TailState(
            path=followed, offset=self.offset, device=f.device, inode=f.inode, size=f.size,
            head=_fp(head), head_len=len(head), tail=_fp(self.window) if self.offset else "",
            compressed=f.compressed, source=f.path, ended=self.ended and f.compressed,
        )


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------


class _ReaderBase:
    """Shared block reading: chunked reads, complete-line cuts, one-block lookahead, deadline."""

    def __init__(self, *, deadline: float | None, chunk_size: int) -> None:
        self.deadline = deadline
        self.chunk_size = max(1, chunk_size)
        #: True when the deadline stopped reading with data left; the next run continues.
        self.timed_out = False
        #: Bytes read from files (decompressed for compressed files) during this run.
        self.bytes_read = 0
        #: Paths read from this run, in order.
        self.sources: list[str] = []
        #: Keys of files found truncated or rewritten while this run read them.
        self.rewritten: set[str] = set()
        self._cursors: dict[str, _Cursor] = {}
        self._started = False

    def _expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _begin(self, f: _File, start: int) -> None:
        """Point the cursor of ``f`` at ``start`` (used when nothing is read from it yet)."""
        n = min(TAIL_LEN, start)
        self._cursors[f.key] = _Cursor(f.path, f, start, f.bytes_at(start - n, n), start)

    def _read(self, f: _File, start: int, *, final: bool, continues: bool) -> Iterator[Block]:
        """Blocks of complete lines from ``start`` to the end of ``f`` (as sized at open).

        The cursor of ``f`` is set to ``start`` first, so even a run stopped by the deadline
        before reading records where ``f`` is to be continued.
        """
        self._begin(f, start)
        if self._expired():
            self.timed_out = True
            return
        self.sources.append(f.path)
        stream = f.stream
        try:
            stream.seek(start)
        except f.read_errors:
            return
        end = None if f.compressed else f.size
        pos, carry = start, b""
        pending: tuple[bytes, int] | None = None
        eof = False
        while True:
            if self._expired():
                self.timed_out = True
                break
            want = self.chunk_size
            if end is not None:
                want = min(want, end - pos - len(carry))
            try:
                data = stream.read(want) if want > 0 else b""
            except f.read_errors:
                data = b""  # a truncated compressed file: keep what decompressed cleanly
            if not data:
                eof = True
                break
            if f.rewritten():
                # Truncated or rewritten after we opened it: `data` may be new content at an
                # old offset. Stop before it; the next run finds the copy and goes on there.
                self.rewritten.add(f.key)
                break
            self.bytes_read += len(data)
            buf = carry + data if carry else data
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                if len(buf) < MAX_LINE:
                    carry = buf
                    continue
                cut = len(buf)
            if pending is not None:
                yield self._emit(f, pending, final=False, continues=continues)
            pending, carry = (buf[:cut], pos), buf[cut:]
            pos += cut
        if eof and final and carry:
            # A rotated file will not grow: its unterminated last line is complete.
            if pending is not None:
                yield self._emit(f, pending, final=False, continues=continues)
            pending = (carry, pos)
        if pending is not None:
            yield self._emit(f, pending, final=eof and final, continues=continues)
        if eof and f.compressed:
            # Reached only once the last block was taken (a consumer that stops before it
            # leaves the flag off: the file is then checked in full next run, as before).
            self._cursors[f.key].ended = True

    def _emit(self, f: _File, piece: tuple[bytes, int], *, final: bool,
              continues: bool) -> Block:
        data, start = piece
        cur = self._cursors[f.key]
        block = Block(data, f.path, start, final, continues, f.key)
        cur.last, cur.last_before = block, cur.window
        cur.offset = start + len(data)
        cur.window = (cur.window + data[-TAIL_LEN:])[-TAIL_LEN:]
        return block

    def opened(self, key: str) -> tuple[int, int, str, int] | None:
        """The file ``key`` as this run opened it: (size, mtime in ns, fingerprint of its
        first bytes, their length); None when not opened. An inode number is reused once its
        file is removed: size and mtime tell whether a file under that key now is the same."""
        cur = self._cursors.get(key)
        if cur is None:
            return None
        f = cur.file
        return f.size, f.mtime_ns, _fp(f.head), len(f.head)

    def first_line(self, key: str) -> bytes | None:
        """The first line (no line end) of the file ``key`` as this run opened it: from the
        bytes read at open, else from the descriptor while it is held. None when not opened,
        or no whole line is to be had. Unlike a read by path, never another file's (one a
        rotation has put under that name since)."""
        cur = self._cursors.get(key)
        if cur is None:
            return None
        f = cur.file
        data = f.head
        if b"\n" not in data and not f.raw.closed:
            data = f.bytes_at(0, 1 << 16)
        if b"\n" not in data:
            return None
        line = data.split(b"\n", 1)[0]
        return line[:-1] if line.endswith(b"\r") else line

    def rewind(self, block: Block, offset: int) -> None:
        """Give back the bytes of ``block.source`` from ``offset`` on (e.g. an accounting record
        still being written): the next run reads them again. Only within this run's reads."""
        cur = self._cursors.get(block.key)
        if cur is None or not cur.start <= offset <= cur.offset:
            raise ValueError(f"cannot rewind {block.source} to {offset}")
        if offset == cur.offset:
            return
        n = min(TAIL_LEN, offset)
        window: bytes | None = None
        last = cur.last
        if last is not None and last.start <= offset <= last.end:
            window = (cur.last_before + last.data[: offset - last.start])[-n:] if n else b""
        if window is None:
            reopened = _open(cur.file.path)
            if reopened is None or reopened.key != block.key:
                raise ValueError(f"cannot rewind {block.source}: file gone")
            try:
                window = reopened.bytes_at(offset - n, n)
            finally:
                reopened.close()
        cur.offset, cur.window, cur.ended = offset, window, False

    @staticmethod
    def _first_run_start(f: _File) -> int:
        """Just after the last complete line: a line being written is read once it is done."""
        if f.compressed:
            return 0
        size = f.size
        scanned = 0
        pos = size
        while pos > 0 and scanned < _FIRST_RUN_SCAN:
            n = min(64 << 10, pos)
            pos -= n
            chunk = os.pread(f.raw.fileno(), n, pos)
            scanned += n
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                return pos + nl + 1
        return 0 if pos == 0 else size


class TailReader(_ReaderBase):
    """Follow one file across rotations. Iterate :meth:`blocks` (or :meth:`lines`) once, then
    store :attr:`state`. The state always points just after the last block handed out, so a
    caller that stops early (``break``) resumes there next run.

    Flags describe what this run saw: ``first_run``, ``rotated`` (renamed away),
    ``truncated`` (copytruncate or rewritten in place), ``missing`` (the path does not exist),
    ``lost`` (the rest of the previous file was not found, or it and the rotations after it
    not read yet were removed during the run: lines may have been missed),
    ``timed_out``.

    Known limits: a file that was *empty* at the last run has no fingerprint, so if it is
    copytruncated, or renamed and compressed, before the next run, its lines cannot be told
    from nothing (a compressed copy is then reported ``lost``, never guessed at). A rotated
    file's unterminated last line is handed out as complete; a writer still appending to the
    renamed file mid-line would split that line (PowerMTA writes whole lines).
    """

    def __init__(self, path: str | os.PathLike[str], state: TailState | None, *,
                 from_start: bool = False, deadline: float | None = None,
                 chunk_size: int = CHUNK_SIZE) -> None:
        super().__init__(deadline=deadline, chunk_size=chunk_size)
        # Absolute, so the state does not depend on the working directory of the run.
        self.path = os.path.abspath(os.fspath(path))
        if state is not None and state.path != self.path:
            state = None  # state of another file: start over as a first run
        self.initial_state = state
        self.from_start = from_start
        self.first_run = state is None
        self.rotated = False
        self.truncated = False
        self.missing = False
        self.lost = False
        #: True when rotations kept shifting the names listed and the run stopped before the
        #: live file: the rotations it did not reach are read next run.
        self.shifting = False
        self._current: str | None = None

    @property
    def state(self) -> TailState:
        """The state to store for the next run."""
        if self._current is not None:
            return self._cursors[self._current].state(self.path)
        if self.initial_state is not None:
            return dataclasses.replace(self.initial_state)
        return TailState(path=self.path)

    def lines(self) -> Iterator[str]:
        """Decoded lines (no line ends) of :meth:`blocks`."""
        return iter_lines(self.blocks())

    def _read(self, f: _File, start: int, *, final: bool, continues: bool) -> Iterator[Block]:
        # Called only once the previous file was consumed to its end (or for the first file),
        # so moving the state to ``f`` here never skips unread bytes.
        previous, self._current = self._current, f.key
        yield from super()._read(f, start, final=final, continues=continues)
        if previous is not None and start == 0 and self._cursors[f.key].last is None:
            # Nothing read from ``f`` after finishing the file before it (``f`` empty, holding
            # only a partial line, or rewritten before we read it): the state stays at the end
            # of that file, which has a fingerprint. An empty file has none, so a copytruncate
            # or compression of it before the next run could not be told from nothing.
            self._current = previous

    def blocks(self) -> Iterator[Block]:
        """Blocks of complete lines appended since the state, across rotations."""
        if self._started:
            raise RuntimeError("TailReader.blocks() can be iterated only once")
        self._started = True
        opened: list[_File] = []
        try:
            yield from self._blocks(opened)
        finally:
            for f in opened:
                f.close()

    def _blocks(self, opened: list[_File]) -> Iterator[Block]:
        st = self.initial_state
        live = _open(self.path)
        if live is not None:
            opened.append(live)
        else:
            self.missing = True

        if st is None or not st.identified:
            if live is None:
                return
            if st is None and not self.from_start:
                start = self._first_run_start(live)
                self._current = live.key
                self._begin(live, start)
                return
            yield from self._read(live, 0, final=False, continues=False)
            return

        if live is not None and live.same_file(st) and live.matches(st):
            yield from self._read(live, st.offset, final=False, continues=True)
            return
        if live is not None and live.same_file(st):
            self.truncated = True
        elif live is not None:
            # Same inode on another device is the same file after a remount if content agrees.
            if live.inode == st.inode and live.matches(st) and not live.compressed:
                yield from self._read(live, st.offset, final=False, continues=True)
                return
            self.rotated = True

        # Files found not to be the rest, by identity and mtime (a reused inode number comes
        # with a new mtime): a new look opens only files it has not checked.
        checked: set[tuple[int, int, int, int]] = set()
        found = self._find_rest(st, live, opened, checked)
        for _ in range(_RELISTS):
            if found is not None:
                break
            # A rotation under way (a file renamed, compressed or removed between listing the
            # directory and opening it) hides the file for an instant: look again. Rotations
            # shifting the names while a look opens files one by one may move the rest past
            # it; the next look is quick, it skips the files checked already.
            found = self._find_rest(st, live, opened, checked)
        if found is not None:
            rest, newer = found
            yield from self._read(rest, st.offset, final=True, continues=True)
            done = {rest.key: rest.head}
            listed = {inode for _, inode in newer if inode > 0}
            shifted = yield from self._read_newer(newer, live, done, opened)
            for _ in range(_RELISTS):
                if not shifted or self.timed_out:
                    break
                # A name did not hold the file it held when we listed the directory: the
                # rotations were shifted meanwhile (log.1 -> log.2 -> ...). List again from the
                # rest's current place, so a file moved past a name we had already passed is
                # not skipped.
                unread = listed - {int(key.split(":")[1]) for key in done}
                relisted = self._relist_newer(rest, unread)
                if relisted is None:
                    # The rest and every rotation listed after it and not read yet are gone
                    # (removed by the rotations' keep count): lines may be missed.
                    self.lost = True
                    break
                listed.update(inode for _, inode in relisted if inode > 0)
                shifted = yield from self._read_newer(relisted, live, done, opened)
            if shifted:
                # Still shifting after every new listing: the live file waits for the next
                # run, which goes on after the last rotation read here.
                self.shifting = True
                return
        else:
            self.lost = True
        if live is not None and not self.timed_out:
            yield from self._read(live, 0, final=False, continues=False)

    def _read_newer(self, newer: list[tuple[Path, int]], live: _File | None,
                    done: dict[str, bytes], opened: list[_File]
                    ) -> Generator[Block, None, bool]:
        """Read, in order, the rotations in `newer` (oldest first, with the inode each name had
        when listed) up to the live file, skipping those in `done` (key -> head of the files
        read); returns True, having read only those before it, when a name no longer holds
        what the listing saw (a rotation ran meanwhile: list again)."""
        for path, listed in newer:
            if self.timed_out:
                return False
            f = _open(os.fspath(path), sibling=True)
            if f is None:
                return True  # renamed or compressed away since the listing
            if live is not None and _holds_live(f, live):
                # The live file was rotated (renamed, or renamed and compressed) after we
                # opened it: it is read below, once, from the descriptor we hold. (Had it
                # been truncated instead, that read notices and the copy is read next run.)
                # The rotations after it hold later lines: the next run reads them after the
                # rest of this one, so none is read here (they would be read twice).
                f.close()
                return f.inode != listed
            if f.key in done or (f.head and f.head in done.values()):
                f.close()  # read already (a new listing starts with them), or compressed since
                continue
            if f.inode != listed:
                # The name holds another rotation now (log.2 became log.3): what it held must
                # be read first, so the state, after the last file read, passes no line.
                f.close()
                return True
            opened.append(f)
            done[f.key] = f.head
            yield from self._read(f, 0, final=True, continues=False)
        return False

    def _relist_newer(self, rest: _File, unread: Collection[int] = (),
                      found_at: Path | None = None) -> list[tuple[Path, int]] | None:
        """The rotations newer than `rest` in a fresh snapshot, found by its inode (a rename
        keeps it) or, compressed since it was opened, by its first bytes. When the rest is gone
        (removed by the keep count of a rotation), those from the oldest file of `unread`
        (inodes listed as newer than it, not read yet) on; else, with `found_at` (the name
        the rest was found under), those newer than that name's rank; None when none of
        these places it."""
        snap = self._snapshot()
        for i, (_, device, inode) in enumerate(snap):
            if inode == rest.inode and device == rest.device:
                return self._newer(snap, i)
        if rest.head and not rest.compressed:
            for i, (path, _, inode) in enumerate(snap):
                if inode >= 0 and _compression(path.name):
                    f = _open(os.fspath(path), sibling=True)
                    if f is not None:
                        same = f.head == rest.head and f.inode == inode
                        f.close()
                        if same:
                            return self._newer(snap, i)
        for i in range(len(snap) - 1, -1, -1):  # oldest first
            path, device, inode = snap[i]
            if inode in unread and device == rest.device:
                return [(path, inode), *self._newer(snap, i)]
        if unread:
            return None
        if found_at is not None:
            return self._newer(snap, None, _rotation_rank(os.path.basename(self.path),
                                                          found_at.name))
        return []

    def _find_rest(self, st: TailState, live: _File | None, opened: list[_File],
                   checked: set[tuple[int, int, int, int]]
                   ) -> tuple[_File, list[tuple[Path, int]]] | None:
        """Find the file we were reading (renamed, copied or compressed) and the rotations
        made after it, oldest first. ``checked``: files found not to be it (updated)."""
        siblings = rotated_siblings(self.path)
        live_key = live.key if live is not None else None

        def check(path: Path, by_content: bool) -> _File | None:
            try:
                before = os.stat(path)
            except OSError:
                return None
            ident = (before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns)
            if ident in checked:
                return None
            f = _open(os.fspath(path), sibling=True)
            if f is None:
                return None
            if f.key != live_key:
                # The old inode still needs matching content (inode numbers get reused); a file
                # with another identity (a copy, a compressed file) counts only when there is a
                # real fingerprint to compare.
                same = f.same_file(st)
                if (same or (by_content and st.head_len > 0)) and f.matches(st):
                    opened.append(f)
                    return f
            if by_content and f.key == f"{ident[0]}:{ident[1]}":
                checked.add(ident)  # not it, whatever the name holds later
            f.close()
            return None

        # The file with the old inode first (a rename keeps it), then copies by content.
        for path in siblings:
            if not _compression(path.name) and self._inode_of(path) == st.inode:
                f = check(path, by_content=False)
                if f is not None:
                    return f, self._relist_newer(f, found_at=path) or []
        for _ in range(_RELISTS):
            size = len(checked)
            for path in siblings:
                f = check(path, by_content=True)
                if f is not None:
                    return f, self._relist_newer(f, found_at=path) or []
            if len(checked) == size:
                break  # every file listed was checked before: nothing new to look at
            # Opened new files (slowly, or rotations shifted the names meanwhile): those not
            # checked yet in a new listing, e.g. the rest shifted past the end of this one.
            siblings = rotated_siblings(self.path)
        # Any other sibling holding the old inode (renamed to an unexpected name).
        directory = os.path.dirname(self.path) or "."
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return None
        for entry in entries:
            if entry.inode() == st.inode and entry.path != self.path:
                f = check(Path(entry.path), by_content=False)
                if f is not None:
                    # Found outside the first listing (renamed meanwhile, or an unusual name):
                    # the rotations after it come from a fresh listing.
                    return f, self._relist_newer(f, found_at=Path(f.path)) or []
        return None

    @staticmethod
    def _inode_of(path: Path) -> int:
        try:
            return os.stat(path).st_ino
        except OSError:
            return -1

    def _snapshot(self) -> list[tuple[Path, int, int]]:
        """The rotated siblings, newest first, each with the device and inode its name holds
        (-1, -1 when gone), as they stood at one instant.

        Listing the names and stat-ing them one by one is not atomic: a rotation in between
        shifts the files under the names (log.2 holds what log.1 held), so the order of the
        names and the files they hold would come from different moments, and a file moved past
        the rest would be skipped. Two looks in a row that agree, names and inodes, saw no
        rotation between them: at the moment between the two, each name held what both saw.
        """
        last: list[tuple[Path, int, int]] | None = None
        for _ in range(_RELISTS * 4):
            now = []
            for path in rotated_siblings(self.path):
                try:
                    st = os.stat(path)
                except OSError:
                    now.append((path, -1, -1))
                else:
                    now.append((path, st.st_dev, st.st_ino))
            if now == last:
                break
            last = now
        assert last is not None
        return last

    def _newer(self, snap: list[tuple[Path, int, int]], index: int | None,
               rank: tuple[int, tuple[int, ...]] | None = None) -> list[tuple[Path, int]]:
        """Rotations newer than ``snap[index]`` (or than `rank`), oldest first, one per rank
        (plain wins), each with the inode its name held in the snapshot (-1 when gone)."""
        live_name = os.path.basename(self.path)
        if index is not None:
            rank = _rotation_rank(live_name, snap[index][0].name)
            candidates = snap[:index]
        else:
            if rank is None:
                return []
            candidates = [e for e in snap
                          if (r := _rotation_rank(live_name, e[0].name)) is not None
                          and _neg(r) < _neg(rank)]
        seen: set[tuple[int, tuple[int, ...]]] = set()
        newer: list[tuple[Path, int]] = []
        for path, _, inode in candidates:
            r = _rotation_rank(live_name, path.name)
            if r is None or r == rank or r in seen:
                continue
            seen.add(r)
            newer.append((path, inode))
        newer.reverse()
        return newer


class MultiTailReader(_ReaderBase):
    """Follow a set of files (a glob of accounting files) by identity, each from its own
    offset: a file renamed within the set continues, a new file is read from its start
    (at its end on the very first run), a shrunk or rewritten one from its start.

    ``relist`` lists the set again (the glob expanded anew): a rotation between the listing
    and the opening of the files renames one from under its name, and only a new listing
    finds it under its new one. ``copies`` lists compressed files outside the set that may be
    its files compressed (``acct*.csv.gz`` beside ``acct*.csv``). A followed file gone from
    the set is looked for, by its content, among the compressed files of the set and those:
    it goes on from its offset there (a compressed file is otherwise new, read whole).
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]],
                 states: Mapping[str, TailState] | None, *, from_start: bool = False,
                 deadline: float | None = None, chunk_size: int = CHUNK_SIZE,
                 relist: Callable[[], Iterable[str | os.PathLike[str]]] | None = None,
                 copies: Callable[[], Iterable[str | os.PathLike[str]]] | None = None) -> None:
        super().__init__(deadline=deadline, chunk_size=chunk_size)
        self.paths = [os.fspath(p) for p in paths]
        self.initial_states = dict(states) if states is not None else None
        self.from_start = from_start
        self.first_run = states is None
        self.truncated: list[str] = []
        self._relist = relist
        self._copies = copies
        self._carried: dict[str, TailState] = {}
        #: States whose inode now holds other content (rewritten, or the number reused).
        self._unmatched: list[TailState] = []

    @property
    def states(self) -> dict[str, TailState]:
        """Per-file states keyed by ``"device:inode"``; files no longer present are dropped."""
        states = dict(self._carried)
        states.update((key, cur.state(cur.path)) for key, cur in self._cursors.items())
        return states

    def blocks(self) -> Iterator[Block]:
        """Blocks appended to each file since the stored states, files in the given order
        (then any found by a new listing, then compressed copies of files followed)."""
        if self._started:
            raise RuntimeError("MultiTailReader.blocks() can be iterated only once")
        self._started = True
        seen: set[str] = set()
        # Compressed files with no state (a followed file's copy?), and whether in the set.
        held: list[tuple[_File, bool]] = []
        try:
            yield from self._listed(seen, held)
            yield from self._compressed(seen, held)
        finally:
            for f, _ in held:
                f.close()

    def _listed(self, seen: set[str], held: list[tuple[_File, bool]]) -> Iterator[Block]:
        priors = self.initial_states or {}
        paths = self.paths
        present: dict[str, str] = {}
        for _ in range(_RELISTS):
            for path in paths:
                f = _open(path, sibling=True)
                if f is None:
                    continue
                if f.key in seen:
                    f.close()
                    continue
                seen.add(f.key)
                if f.compressed and f.key not in priors and priors:
                    held.append((f, True))  # placed once every file of the set is known
                    continue
                try:
                    yield from self._follow(f, priors.get(f.key))
                finally:
                    f.close()
            if self._relist is None:
                return
            # The race this closes: acct.csv renamed to acct-...-0001.csv (and a new acct.csv
            # made) after the listing, before acct.csv was opened. The renamed file is under
            # no name listed; its state was dropped and the next run read it again from its
            # start. A new listing finds it; one with no file left unopened ends the run.
            present = {key: os.fspath(p) for p in self._relist()
                       if (key := _key_of(p)) is not None}
            paths = [p for key, p in present.items() if key not in seen]
            if not paths:
                return
        # Still new names after every listing: the files not reached keep their states.
        for key in present.keys() - seen:
            if key in priors:
                self._carried[key] = priors[key]

    def _compressed(self, seen: set[str], held: list[tuple[_File, bool]]) -> Iterator[Block]:
        """The compressed files held back, and those of `copies` that hold a followed file
        gone from the set (compressed since the last run, perhaps out of the glob: the lines
        it got after the last run were lost, or with the glob taking in compressed files,
        the whole file read again)."""
        priors = self.initial_states or {}
        gone = [st for key, st in priors.items()
                if key not in seen and key not in self._carried and st.head_len > 0]
        gone += [st for st in self._unmatched if st.head_len > 0]
        # Only when a followed file went missing: opening every compressed file beside the set
        # on every run cost 50 ms a run with 800 of them (the engine reads every 5 s).
        if gone and self._copies is not None:
            for path in self._copies():
                f = _open(os.fspath(path), sibling=True)
                if f is None:
                    continue
                if f.key in seen or not any(f.matches(st) for st in gone):
                    f.close()
                    continue
                seen.add(f.key)
                held.append((f, False))
        if held:
            # And files read this run: caught between the gzip and the removal of the
            # original, the copy is in the glob too (`acct*.csv*`), and was read again whole.
            gone += [cur.state(cur.path) for cur in list(self._cursors.values())
                     if not cur.file.compressed and cur.file.head]
        while held:
            f, in_set = held.pop(0)
            try:
                prior = next((st for st in gone if f.matches(st)), None)
                if prior is not None:
                    gone.remove(prior)
                    yield from self._read(f, prior.offset, final=False, continues=True)
                elif in_set:
                    yield from self._follow(f, None)
            finally:
                f.close()

    def _follow(self, f: _File, prior: TailState | None) -> Iterator[Block]:
        if (prior is not None and prior.ended and f.compressed and f.same_file(prior)
                and f.size == prior.size and prior.head_len == len(f.head)
                and _fp(f.head) == prior.head):
            # The compressed file read to its end last time, unchanged: nothing to read, and
            # checking its tail would decompress it whole. Its state goes on as it was.
            self._carried[f.key] = prior
            return
        if prior is not None:
            if f.matches(prior):
                start, continues = prior.offset, True
            else:
                self.truncated.append(f.path)
                self._unmatched.append(prior)  # its content may be in a compressed copy
                start, continues = 0, False
        elif self.initial_states is None and not self.from_start:
            start, continues = self._first_run_start(f), False
        else:
            start, continues = 0, False
        yield from self._read(f, start, final=False, continues=continues)


def _key_of(path: str | os.PathLike[str]) -> str | None:
    """``"device:inode"`` of the file ``path`` names now (None when gone)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


def state_at(path: str | os.PathLike[str], offset: int, *,
             followed: str | os.PathLike[str] | None = None) -> TailState | None:
    """The state of a reader that has read ``path`` up to ``offset`` (a line start), for
    starting at a place found by other means (the accounting records since a time).
    ``followed``: the path a TailReader follows when ``path`` is one of its rotated files
    (default ``path``). None when ``path`` cannot be opened."""
    f = _open(os.fspath(path), sibling=True)
    if f is None:
        return None
    try:
        n = min(TAIL_LEN, offset)
        cursor = _Cursor(f.path, f, offset, f.bytes_at(offset - n, n), offset)
        return cursor.state(os.fspath(followed) if followed is not None else f.path)
    finally:
        f.close()


def read_new(path: str | os.PathLike[str], state: TailState | None, *, from_start: bool = False,
             deadline: float | None = None) -> tuple[list[str], TailState]:
    """Lines appended to ``path`` since ``state`` (across rotations) and the state to store.

    The first run (``state is None``) returns nothing and starts at the end, unless
    ``from_start``. ``deadline`` is a ``time.monotonic()`` value.
    """
    reader = TailReader(path, state, from_start=from_start, deadline=deadline)
    lines = list(reader.lines())
    return lines, reader.state

