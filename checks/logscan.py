"""Pattern classes, the block scanner and log tailing shared by check_pmta_log and check_pmta_tls.

Patterns are case-insensitive regexes in four classes, as in check_logfiles: a line matching
an `exclude` pattern is ignored, else the first class that matches counts it (`critical`, then
`warning`, then `ok`); an `ok` line clears the critical and warning lines seen before it in the
same run (the problem was followed by its recovery). `excluded_lines` counts the lines an
exclude pattern kept from being counted.

Speed: Python's `re` tries every pattern at every position (10-30 MB/s), so each pattern
contributes the literals one of which every match holds, its *needles*
(pmta_snmp.logtail's literal analysis). One engine pass per slice finds all needles
(Hyperscan's literal matcher when installed, else `bytes.find` per needle); only the lines
holding a needle are matched with the real regexes, and a pattern that is plain text needs no
regex at all. Classes are sets of lines combined with integer bit operations in C. Where most
lines hold a needle (an incident), the slice is not searched hit by hit: each needle becomes a
flag byte per line through bytes operations over the whole slice. A pattern without a usable
literal (3+ ASCII characters) is searched line by line, which is exact but slow.

The defaults for PowerMTA's main log are below, in one place, with their sources.
"""

from __future__ import annotations

import argparse
import contextlib
import operator
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, islice, repeat
from typing import Any, Protocol

from .base import PluginError, PluginParser, Run, human, input_key, usage_error

DEFAULT_LOG = "/var/log/pmta/log"

CLASSES = ("critical", "warning", "exclude", "ok")

# Default patterns for PowerMTA's main log: LOCAL failures only. Remote servers' replies
# (`Error: "421 ..."`, ETIMEDOUT/ECONNREFUSED/EDISCON to a remote host, StatusDnsQueryFailed for
# one domain, TLS handshakes) are normal traffic and the deferral and TLS plugins' job.
# [D] documented PowerMTA text (pmta-formats.md §4); [R] the operating rules' keywords (§5);
# [E] the operating system's error text (strerror), which PowerMTA quotes; [U] UNDOCUMENTED
# wording: PowerMTA's documentation shows no example line, so the pattern is our guess (tune
# it in a --pattern-file when your PowerMTA writes something else).
DEFAULT_PATTERNS: dict[str, list[str]] = {
    "critical": [
        r"\bfatal\b",  # [R] any FATAL
        r"startup error",  # [D] UG §4.2.1 "Startup error: No logging file specified"
        # [U] configuration errors (a start or `pmta reload` refused)
        # (spelled out, so each alternative is its own needle: "configuration" alone is in
        # every "rate limit reached (based on ... in configuration)" line)
        r"config error|configuration error|config file error|configuration file error"
        r"|error in config|error in the config|error reading config|error loading config"
        r"|error parsing config|unknown directive|invalid directive",
        r"are now disabled",  # [D] real 4.0 "All SMTP sources for queue d/v are now disabled."
        # [U] license expired, invalid or missing ("License expired on 2025-01-14")
        r"\blicen[cs]e\b.{0,60}\b(?:expired|invalid|not valid|not found|missing)\b"
        r"|\b(?:expired|invalid|no valid)\b.{0,60}\blicen[cs]e\b",
        # [E] disk and spool: ENOSPC, EDQUOT, EROFS, EIO
        r"no space left on device|disk quota exceeded|read-only file system"
        r"|input/output error",
        # [U] the spool itself ("error writing spool file", "spool directory ... is full")
        r"\bspool\b.{0,80}\b(?:error|fail(?:ed|ure)?|full|corrupt(?:ed)?)\b"
        r"|\b(?:error|fail(?:ed|ure)?|cannot|unable to)\b.{0,80}\bspool\b",
        # [E] resources: EMFILE/ENFILE, ENOMEM; a port taken at start (EADDRINUSE)
        r"too many open files|cannot allocate memory|out of memory|address already in use",
    ],
    "warning": [
        # [U] the local DNS resolver failing for every domain (not one domain's name servers)
        r"\bresolver\b.{0,80}\b(?:fail(?:ed|ure|s)?|error|timed? ?out|not responding"
        r"|unreachable|refused)\b|\bno dns servers?\b|\bno name ?servers?\b|\bresolv\.conf\b",
        r"cannot assign requested address",  # [E] EADDRNOTAVAIL: a source IP not on this host
    ],
    # [D] a remote server's reply quoted by PowerMTA (`Error: "<reply>" while connected from
    # … to …`, `skip of MX requested: "<reply>" received from <mx> …`): "451 4.3.5 Server
    # configuration error" or "out of memory" there is the remote host's problem.
    "exclude": [r'"\s+(?:while connected|received) from\b'],
    "ok": [],
}

# TLS handshake failures in the main log, for check_pmta_tls. [U] PowerMTA documents only the
# success line ("tls:TLSv1.2 connected with 128-bit ..."); these failure wordings are guesses.
TLS_FAILURE_PATTERNS: list[str] = [
    r"tls handshake failed",  # [U]
    r"\btls:.{0,80}\b(?:fail(?:ed|ure)?|error|alert)\b",  # [U] tls: trace line with a failure
    r"\bssl_(?:connect|accept|do_handshake)\b.{0,80}\b(?:fail|error)",  # [U] OpenSSL wording
    r"\bstarttls\b.{0,60}\b(?:fail(?:ed|ure)?|error|not available|refused)\b",  # [U]
]

#: Bytes scanned at a time: the lowercased copy and the needle searches stay in the L2 cache
#: (4 MB blocks measured ~25 % slower).
_SLICE = 256 << 10
#: Longest line text kept for the output.
LINE_CHARS = 200


class PatternError(ValueError):
    """A pattern does not compile, or a pattern file is malformed; `klass` and `pattern` name
    the pattern when one is at fault."""

    def __init__(self, message: str, *, klass: str | None = None,
                 pattern: str | None = None) -> None:
        super().__init__(message)
        self.klass = klass
        self.pattern = pattern


def regex_error(pattern: str) -> str | None:
    """Why `pattern` cannot be used as the scanner uses it (a case-insensitive regex over the
    log's bytes, alone and inside a class's alternation), e.g. `bad escape \\u at position 3`
    (`\\u` is valid in a Python str pattern, not in a bytes one); None when it can."""
    try:
        raw = pattern.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8"
    try:
        re.compile(raw, re.IGNORECASE)
        re.compile(b"(?:" + raw + b")", re.IGNORECASE)
    except re.error as exc:
        return str(exc) if exc.pattern == raw else f"{exc.msg} once combined with other patterns"
    return None


def shown(pattern: str) -> str:
    """A pattern quoted for a message, as typed (backslashes not doubled)."""
    return f"'{pattern}'" if pattern.isprintable() else repr(pattern)


def regex_arg(text: str) -> str:
    """argparse type of the pattern options: the pattern, checked (a bad one is a usage
    error naming the option)."""
    error = regex_error(text)
    if error is not None:
        raise argparse.ArgumentTypeError(f"bad regular expression {shown(text)}: {error}")
    return text


def parse_pattern_file(text: str, source: str) -> dict[str, list[str]]:
    """A pattern file: `[critical]` / `[warning]` / `[exclude]` / `[ok]` sections, one regex
    per line; `#` starts a comment line; the classes given replace the defaults' classes."""
    out: dict[str, list[str]] = {}
    current: str | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"\[\s*(\w+)\s*\]", line)
        if m:
            current = m.group(1).lower()
            if current not in CLASSES:
                raise PatternError(
                    f"{source}:{n}: unknown section [{current}] (use {', '.join(CLASSES)})"
                )
            out.setdefault(current, [])
            continue
        if current is None:
            raise PatternError(f"{source}:{n}: pattern outside a [critical]/[warning]/... section")
        error = regex_error(line)
        if error is not None:
            raise PatternError(f"{source}:{n}: bad regular expression {shown(line)}: {error}",
                               klass=current, pattern=line)
        out[current].append(line)
    return out


# ---------------------------------------------------------------------------------------------
# Needles: a literal every match of a pattern contains
# ---------------------------------------------------------------------------------------------

#: Characters with a meaning in a regex (but `|`): a pattern without any is plain text.
_REGEX_SYNTAX = frozenset(".^$*+?{}[]\\()")


def needles(pattern: str) -> list[bytes] | None:
    """Lowercase literals, one of which every match of `pattern` contains; None when the
    pattern has no usable literal (then it must be searched with its regex)."""
    from pmta_snmp.logtail import _required_literals  # LineScanner's literal analysis

    try:
        compiled = re.compile(pattern, re.IGNORECASE | re.ASCII)
    except (re.error, ValueError):
        return None
    return _required_literals(compiled)


def plain_literal(pattern: str, found: Sequence[bytes] | None) -> bool:
    """Whether `pattern` is plain text or `|` between plain texts, and `found` are exactly
    those texts: a line matches it when it holds one of its needles."""
    if found is None or _REGEX_SYNTAX.intersection(pattern):
        return False
    return {alt.encode("utf-8").lower() for alt in pattern.split("|")} == set(found)


# ---------------------------------------------------------------------------------------------
# Compiled pattern set
# ---------------------------------------------------------------------------------------------


def _compile(patterns: Sequence[str], klass: str) -> None:
    """Check the class's patterns alone and in one alternation (the pattern-file format has
    always accepted only patterns that combine); PatternError names the pattern at fault."""
    if not patterns:
        return
    for p in patterns:
        error = regex_error(p)
        if error is not None:
            raise PatternError(f"bad {klass} pattern {shown(p)}: {error}", klass=klass,
                               pattern=p)
    try:
        re.compile(_alternation(patterns), re.IGNORECASE)
        return
    except re.error:
        pass
    # Each pattern is fine alone, not beside the others (a group name used twice, ...).
    for n, p in enumerate(patterns[1:], 2):
        try:
            re.compile(_alternation(patterns[:n]), re.IGNORECASE)
        except re.error as exc:
            raise PatternError(
                f"bad {klass} pattern {shown(p)}: {exc.msg} (beside the other {klass} patterns)",
                klass=klass, pattern=p,
            ) from None
    raise AssertionError("unreachable: the alternation compiled pattern by pattern")


def _alternation(patterns: Sequence[str]) -> bytes:
    return b"|".join(b"(?:" + p.encode("utf-8") + b")" for p in patterns)


@dataclass(frozen=True)
class Pattern:
    """One pattern of a class: its regex over a line's bytes and the needles found for it.

    `needle_ids` index PatternSet.needles (one of them is in every matching line); None when
    the pattern has no needle and is searched line by line. `literal`: holding a needle is
    matching (the pattern is plain text, or `|` between plain texts), so no regex runs.
    """

    klass: str
    text: str
    regex: re.Pattern[bytes]
    needle_ids: tuple[int, ...] | None
    literal: bool


@dataclass
class PatternSet:
    """The classes' patterns, their needles and the engine that finds the needles."""

    patterns: list[Pattern]
    needles: list[bytes]
    #: needles[:hit_needles] are the counted classes' (the hit search's); the rest exclude's.
    hit_needles: int

    def __post_init__(self) -> None:
        self._finder: NeedleFinder | None = None
        #: Patterns of the counted classes without a needle: every line is searched.
        self.direct = [p for p in self.patterns if p.needle_ids is None and p.klass != "exclude"]

    @classmethod
    def build(cls, classes: Mapping[str, Sequence[str]]) -> PatternSet:
        """Compile `classes` (class -> regex texts); raises PatternError on a bad regex."""
        found: dict[bytes, int] = {}
        out: list[Pattern] = []
        hit_needles = 0
        # The counted classes' needles first: the hit search looks for those only (an exclude
        # pattern matters on the lines a class counted, which its regex checks).
        for klass in ("critical", "warning", "ok", "exclude"):
            if klass == "exclude":
                hit_needles = len(found)
            texts = list(classes.get(klass, ()))
            _compile(texts, klass)
            for text in texts:
                got = needles(text)
                ids: tuple[int, ...] | None = None
                if got is not None:
                    # A needle across a line end is never inside a line: such a pattern
                    # matches no line, and keeps no needle that could be found.
                    ids = tuple(found.setdefault(n, len(found)) for n in got if b"\n" not in n)
                    if not ids:
                        continue
                regex = re.compile(text.encode("utf-8"), re.IGNORECASE)
                literal = ids is not None and plain_literal(text, got)
                out.append(Pattern(klass, text, regex, ids, literal))
        return cls(out, list(found), hit_needles)

    def finder(self) -> NeedleFinder:
        """The needle engine, made when the first bytes are scanned (a run that reads
        nothing new never loads it)."""
        if self._finder is None:
            self._finder = make_finder(self.needles, self.hit_needles)
        return self._finder

    @property
    def engine(self) -> str:
        """Which engine finds the needles: `hyperscan` or `python`."""
        return self.finder().engine

    @property
    def engine_used(self) -> str | None:
        """The engine, if this run scanned anything (else None: it was never loaded)."""
        return None if self._finder is None else self._finder.engine

    def of(self, klass: str) -> list[Pattern]:
        """The patterns of one class, in the order given."""
        return [p for p in self.patterns if p.klass == klass]


# ---------------------------------------------------------------------------------------------
# Needle engines
# ---------------------------------------------------------------------------------------------

#: Set (to anything) to scan without Hyperscan, as on a machine without it (also turns off the
#: accounting's C scanner: pmta_snmp.acct.tally.PURE_PYTHON_ENV).
PURE_PYTHON_ENV = "PMTA_SNMP_PURE_PYTHON"


class NeedleFinder(Protocol):
    """Finds the needles (lowercase literals, matched in any ASCII case) in a slice."""

    engine: str

    def hits(self, data: bytes, limit: int) -> list[tuple[int, int]] | None:
        """(end offset, needle id) of needle occurrences; None after more than `limit`."""

    def present(self, data: bytes) -> list[int]:
        """Ids of the needles that occur in `data`."""


def make_finder(needles: Sequence[bytes], hit_needles: int | None = None) -> NeedleFinder:
    """Hyperscan when it is installed and runs on this CPU, else the pure-Python finder.
    `hits` looks for needles[:hit_needles] (default all), `present` for all of them."""
    hit = len(needles) if hit_needles is None else hit_needles
    if needles and not os.environ.get(PURE_PYTHON_ENV):
        with contextlib.suppress(Exception):  # not installed, or a CPU it does not support
            return HyperscanFinder(needles, hit)
    return PythonFinder(needles, hit)


class HyperscanFinder:
    """Hyperscan's literal matcher: all needles in one pass at several GB/s."""

    engine = "hyperscan"

    def __init__(self, needles: Sequence[bytes], hit_needles: int) -> None:
        import hyperscan

        ids = list(range(len(needles)))
        self._all: hyperscan.Database | None = None
        if hit_needles:
            self._all = hyperscan.Database()
            self._all.compile(expressions=list(needles[:hit_needles]), ids=ids[:hit_needles],
                              flags=hyperscan.HS_FLAG_CASELESS, literal=True)
        self._first = hyperscan.Database()
        self._first.compile(expressions=list(needles), ids=ids,
                            flags=hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH,
                            literal=True)
        self._stopped = hyperscan.ScanTerminated

    def hits(self, data: bytes, limit: int) -> list[tuple[int, int]] | None:
        out: list[tuple[int, int]] = []
        add = out.append

        def on(nid: int, _start: int, end: int, _flags: int, _ctx: object) -> bool:
            add((end, nid))
            return len(out) > limit

        if self._all is None:
            return out
        try:
            self._all.scan(data, match_event_handler=on)
        except self._stopped:
            return None
        return out

    def present(self, data: bytes) -> list[int]:
        out: list[int] = []
        add = out.append

        def on(nid: int, _start: int, _end: int, _flags: int, _ctx: object) -> None:
            add(nid)

        self._first.scan(data, match_event_handler=on)
        return out


class PythonFinder:
    """`bytes.find` on the lowercased slice, one pass per needle (fast for a few needles)."""

    engine = "python"

    def __init__(self, needles: Sequence[bytes], hit_needles: int) -> None:
        self.needles = list(needles)
        self.hit_needles = hit_needles

    def hits(self, data: bytes, limit: int) -> list[tuple[int, int]] | None:
        out: list[tuple[int, int]] = []
        low = data.lower()
        find = low.find
        for nid, needle in enumerate(self.needles[:self.hit_needles]):
            pos = find(needle)
            while pos >= 0:
                out.append((pos + len(needle), nid))
                if len(out) > limit:
                    return None
                end = find(b"\n", pos)  # the next occurrence that is on another line
                pos = find(needle, end + 1) if end >= 0 else -1
        return out

    def present(self, data: bytes) -> list[int]:
        low = data.lower()
        return [nid for nid, needle in enumerate(self.needles) if needle in low]


# ---------------------------------------------------------------------------------------------
# The scanner
# ---------------------------------------------------------------------------------------------


@dataclass
class ClassCount:
    """Lines counted for one class in this run, with the last of them."""

    count: int = 0
    last: str | None = None
    recent: list[str] = field(default_factory=list)


class _Lines(Protocol):
    """The candidate lines of one slice, in order. A set of them is an int with bit 8*i set
    for line i (so `int.from_bytes` of one flag byte per line is a set, and `|`, `&`,
    `bit_count()` are set operations done in C)."""

    slots: int
    #: Whether with_needle() knows every needle (else only the counted classes').
    all_needles: bool

    def with_needle(self, nid: int) -> int: ...
    def line(self, slot: int) -> bytes: ...
    def lines_at(self, slots: list[int]) -> Iterable[bytes]: ...
    def searched(self, pattern: Pattern) -> int: ...


def _mask(flags: Iterable[int]) -> int:
    """The set of the slots whose flag is true."""
    return int.from_bytes(bytes(flags), "little")


def _slots(mask: int, size: int) -> list[int]:
    """The slots in `mask`, in order."""
    return list(compress(range(size), mask.to_bytes(size, "little")))


def _last(mask: int, k: int) -> list[int]:
    """The last `k` slots of `mask`, in order."""
    out: list[int] = []
    while mask and len(out) < k:
        slot = (mask.bit_length() - 1) >> 3
        out.append(slot)
        mask ^= 1 << (slot << 3)
    return out[::-1]


class _Sparse:
    """The lines that hold a needle hit, found from the hits (few lines of the slice)."""

    all_needles = False  # the hits are the counted classes' needles only

    def __init__(self, data: bytes, hits: list[tuple[int, int]]) -> None:
        self.data = data
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.masks: dict[int, int] = {}
        hits.sort()
        rfind, find, size = data.rfind, data.find, len(data)
        start = end = -1
        bit = 0
        for at, nid in hits:  # `at` is just after the needle
            if not start < at <= end:  # not on the line of the previous hit
                start = rfind(b"\n", 0, at) + 1
                end = find(b"\n", at)
                if end < 0:
                    end = size
                bit = 1 << (len(self.starts) << 3)
                self.starts.append(start)
                self.ends.append(end)
            self.masks[nid] = self.masks.get(nid, 0) | bit
        self.slots = len(self.starts)

    def with_needle(self, nid: int) -> int:
        return self.masks.get(nid, 0)

    def line(self, slot: int) -> bytes:
        return self.data[self.starts[slot]:self.ends[slot]]

    def lines_at(self, slots: list[int]) -> Iterable[bytes]:
        return map(self.line, slots)

    def searched(self, pattern: Pattern) -> int:  # pragma: no cover - dense mode does
        raise AssertionError("patterns without a needle are searched in dense mode")


class _Dense:
    """Every line of the slice (needles are dense there: an incident). A needle's lines come
    from bytes operations over the whole slice (each occurrence replaced by a mark, all but
    marks and line ends deleted: one flag byte per line), not from locating each hit."""

    all_needles = True

    def __init__(self, data: bytes, finder: NeedleFinder, needles: list[bytes],
                 lines: int | None = None) -> None:
        self.data = data
        self._needles = needles
        self._present = set(finder.present(data)) if needles else set()
        self._masks: dict[int, int] = {}
        self._low: bytes | None = None
        self._lines: list[bytes] | None = None
        if lines is None:  # counted from a needle's flags (one byte per line) when there is one
            if self._present:
                nid = min(self._present)
                flags = self._flags(needles[nid])
                self._masks[nid] = int.from_bytes(flags, "little")
                lines = len(flags)
            else:
                lines = _count_lines(data)
        self.slots = lines

    def with_needle(self, nid: int) -> int:
        if nid not in self._present:
            return 0
        mask = self._masks.get(nid)
        if mask is None:
            mask = self._masks[nid] = int.from_bytes(self._flags(self._needles[nid]), "little")
        return mask

    def _flags(self, needle: bytes) -> bytes:
        """One byte per line: 1 where the line holds `needle`."""
        if self._low is None:
            self._low = self.data.lower()
            if not self._low.endswith(b"\n"):
                self._low += b"\n"
        low = self._low
        if _MARK in low:  # the mark is taken: test line by line
            return bytes(map(operator.contains, low.split(b"\n")[:-1], repeat(needle)))
        marked = low.replace(needle, _MARK).translate(None, _NOT_MARK_OR_EOL)
        while _MARK * 2 in marked:  # a line holding the needle twice
            marked = marked.replace(_MARK * 2, _MARK)
        return marked.replace(_MARK + b"\n", b"\x01").replace(b"\n", b"\x00")

    def _all(self) -> list[bytes]:
        if self._lines is None:
            self._lines = self.data.split(b"\n")
        return self._lines

    def line(self, slot: int) -> bytes:
        if self._lines is None and self.slots - slot <= 32:
            # One of the last lines (the usual ask): found back from the end.
            data = self.data
            end = len(data) - 1 if data.endswith(b"\n") else len(data)
            for _ in range(self.slots - 1 - slot):
                end = data.rfind(b"\n", 0, end)
            return data[data.rfind(b"\n", 0, end) + 1:end]
        return self._all()[slot]

    def lines_at(self, slots: list[int]) -> Iterable[bytes]:
        return map(self._all().__getitem__, slots)

    def searched(self, pattern: Pattern) -> int:
        return _mask(map(bool, map(pattern.regex.search, islice(self._all(), self.slots))))


def _count_lines(data: bytes) -> int:
    """Lines in a slice of complete lines (a last one may lack its line end)."""
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


_MARK = b"\x01"
_NOT_MARK_OR_EOL = bytes(b for b in range(256) if b not in _MARK + b"\n")


class Scanner:
    """Feed blocks of complete lines; counts and last lines per class accumulate.

    Per slice, one pass of the needle engine finds the lines holding a needle; a pattern
    matches the lines holding one of its needles (a plain-text pattern) or those of them its
    regex matches; classes are sets of lines combined in C (exclude, then critical, warning,
    ok). Where needles are dense (an incident), the slice is split into lines once and each
    needle is tested over the whole list in C, so no Python code runs per matching line."""

    def __init__(self, patterns: PatternSet, *, keep_recent: int = 5) -> None:
        self.patterns = patterns
        self.keep_recent = keep_recent
        self.classes = {k: ClassCount() for k in CLASSES}
        self.lines = 0
        self.bytes = 0
        self.cleared = 0  # critical/warning lines cleared by a later ok line
        self._counted = [p for p in patterns.patterns if p.klass != "exclude"]
        self._exclude = patterns.of("exclude")
        self._dense = bool(patterns.direct)  # the last slice was dense: so is the next, likely

    def feed(self, data: bytes, deadline: float | None = None) -> int:
        """Scan one block of complete lines in slices; returns the bytes scanned: all, or
        when `deadline` (time.monotonic()) passes, the whole lines of the slices scanned by
        then (at least one)."""
        size = len(data)
        if size <= _SLICE:
            self._count_and_scan(data)
            return size
        view = memoryview(data)
        start = 0
        while start < size:
            if start and deadline is not None and time.monotonic() >= deadline:
                break
            end = data.rfind(b"\n", start, start + _SLICE) + 1 if start + _SLICE < size else size
            if end <= start:  # one line longer than a slice
                end = data.find(b"\n", start + _SLICE) + 1 or size
            self._count_and_scan(bytes(view[start:end]))
            start = end
        return start

    def _count_and_scan(self, data: bytes) -> None:
        self.bytes += len(data)
        if self._dense and self._counted:
            self.lines += self._scan(data, None)
            return
        lines = _count_lines(data)
        self.lines += lines
        if self._counted:
            self._scan(data, lines)

    def _scan(self, data: bytes, lines: int | None) -> int:
        """Count the classes' lines of one slice (`lines` long, counted here when None);
        returns its lines."""
        finder = self.patterns.finder()
        view: _Lines
        if lines is None:
            view = _Dense(data, finder, self.patterns.needles)
            lines = view.slots
        else:
            # Past about one hit in six lines, splitting the slice costs less than locating
            # each hit's line.
            hits = finder.hits(data, lines // 6 + 16)
            if hits == []:
                return lines
            view = _Dense(data, finder, self.patterns.needles, lines) if hits is None else \
                _Sparse(data, hits)
        candidates = self._classify(view)
        if not self.patterns.direct:
            self._dense = isinstance(view, _Dense) and candidates.bit_count() * 8 > lines
        return lines

    def _matching(self, view: _Lines, pattern: Pattern, among: int = -1) -> int:
        """The lines `pattern` matches, of those in `among` (all by default). A pattern without
        needles, or whose needles the view does not know (an exclude pattern on a sparse
        slice), is checked with its regex on each line of `among`."""
        if pattern.needle_ids is None or (among >= 0 and not view.all_needles):
            if among < 0:
                return view.searched(pattern)
            ids = among
        else:
            ids = 0
            for nid in pattern.needle_ids:
                ids |= view.with_needle(nid)
            ids &= among
            if pattern.literal:
                return ids
        if not ids:
            return 0
        slots = _slots(ids, view.slots)
        search = pattern.regex.search
        flags = bytearray(view.slots)
        for slot in compress(slots, map(search, view.lines_at(slots))):
            flags[slot] = 1
        return int.from_bytes(flags, "little")

    def _classify(self, view: _Lines) -> int:
        """Count the classes' lines of a slice; returns the lines any counted class matched."""
        found = {"critical": 0, "warning": 0, "ok": 0}
        for pattern in self._counted:
            found[pattern.klass] |= self._matching(view, pattern)
        crit, warn, ok = found["critical"], found["warning"], found["ok"]
        counted = crit | warn | ok
        if not counted:
            return 0
        excluded = 0
        for pattern in self._exclude:
            excluded |= self._matching(view, pattern, counted & ~excluded)
        if excluded:
            self.classes["exclude"].count += excluded.bit_count()
            crit &= ~excluded
        warn &= ~(crit | excluded)
        ok &= ~(crit | warn | excluded)
        if ok:
            # The last ok line clears every critical and warning line before it.
            last_ok = (ok.bit_length() - 1) >> 3
            below = (1 << (last_ok << 3)) - 1
            self._clear()
            self.cleared += (crit & below).bit_count() + (warn & below).bit_count()
            crit &= ~below
            warn &= ~below
        for klass, ids in (("critical", crit), ("warning", warn), ("ok", ok)):
            if ids:
                self._add(klass, ids, view)
        return counted

    def _add(self, klass: str, ids: int, view: _Lines) -> None:
        entry = self.classes[klass]
        entry.count += ids.bit_count()
        texts = [_text(view.line(slot)) for slot in _last(ids, max(1, self.keep_recent))]
        entry.last = texts[-1]
        if self.keep_recent:
            entry.recent = (entry.recent + texts)[-self.keep_recent:]

    def _clear(self) -> None:
        for klass in ("critical", "warning"):
            self.cleared += self.classes[klass].count
            self.classes[klass] = ClassCount()

    def count(self, klass: str) -> int:
        """Lines of `klass` counted (after ok clears)."""
        return self.classes[klass].count


def _text(raw: bytes) -> str:
    """A log line for output: decoded, stripped, at most LINE_CHARS characters."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = " ".join(text.split())
    return text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Tailing one log with its state
# ---------------------------------------------------------------------------------------------


@dataclass
class LogRead:
    """What one run read from one log."""

    path: str
    scanner: Scanner
    first_run: bool = False
    from_start: bool = False
    rotated: bool = False
    truncated: bool = False
    missing: bool = False
    lost: bool = False
    timed_out: bool = False
    sources: list[str] = field(default_factory=list)

    def events(self) -> list[str]:
        """Rotation and similar remarks for the long output."""
        out = []
        if self.first_run and not self.from_start:
            out.append(f"first run: {self.path} is read from its end from now on")
        if self.rotated:
            rest = [s for s in self.sources if s != self.path]
            out.append(
                f"{self.path} was rotated; read the rest of "
                f"{', '.join(rest) if rest else 'the old file'} first"
            )
        if self.truncated:
            out.append(f"{self.path} was truncated (copytruncate); read the copy's rest first")
        if self.lost:
            out.append(
                f"{self.path}: the previous file was not found after rotation; "
                "lines written just before it may have been missed"
            )
        return out


def tail_log(path: str, state: object, patterns: PatternSet, *, from_start: bool,
             deadline: float | None, scanner: Scanner | None = None
             ) -> tuple[LogRead, dict[str, Any]]:
    """Scan what was appended to `path` since `state` (a TailState JSON); return the read and
    the new state JSON. The state advances only past the blocks scanned."""
    from pmta_snmp.logtail import TailReader, TailState

    reader = TailReader(path, TailState.from_json(state), from_start=from_start,
                        deadline=deadline)
    scan = scanner if scanner is not None else Scanner(patterns)
    cut = False
    for block in reader.blocks():
        done = scan.feed(block.data, deadline)
        if done < len(block.data):
            # The deadline passed inside this block: the state points after what was scanned.
            reader.rewind(block, block.start + done)
            cut = True
            break
    result = LogRead(
        path, scan, first_run=reader.first_run, from_start=from_start, rotated=reader.rotated,
        truncated=reader.truncated, missing=reader.missing, lost=reader.lost,
        timed_out=reader.timed_out or cut, sources=list(dict.fromkeys(reader.sources)),
    )
    return result, reader.state.to_json()


def add_pattern_args(p: PluginParser) -> None:
    """The pattern options of check_pmta_log and check_pmta_tls."""
    g = p.add_argument_group("patterns (case-insensitive regexes)")
    g.add_argument(
        "--pattern-file", metavar="FILE",
        help="[critical]/[warning]/[exclude]/[ok] sections, one regex per line; a section "
        "replaces that class's defaults",
    )
    g.add_argument("--no-default-patterns", action="store_true",
                   help="start from no patterns at all")
    for klass in CLASSES:
        g.add_argument(f"--{klass}-pattern", action="append", type=regex_arg, metavar="REGEX",
                       help=f"add a {klass} pattern (repeatable)")


def load_patterns(args: argparse.Namespace, defaults: Mapping[str, Sequence[str]]) -> PatternSet:
    """Defaults, replaced class by class by --pattern-file, extended by the -p options. A bad
    pattern or pattern file is a usage error naming the option (exit 3, one line)."""
    classes = {k: list(v) for k, v in defaults.items()}
    if args.no_default_patterns:
        classes = {k: [] for k in classes}
    if args.pattern_file:
        try:
            with open(args.pattern_file, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise PluginError(f"cannot read pattern file {args.pattern_file}: {why}") from None
        try:
            classes.update(parse_pattern_file(text, args.pattern_file))
        except PatternError as exc:
            raise usage_error(f"argument --pattern-file: {exc}") from None
    for klass in CLASSES:
        classes.setdefault(klass, []).extend(getattr(args, f"{klass}_pattern") or ())
    try:
        return PatternSet.build(classes)
    except PatternError as exc:
        given = getattr(args, f"{exc.klass}_pattern", None) or ()
        option = f"--{exc.klass}-pattern" if exc.pattern in given else "--pattern-file"
        raise usage_error(f"argument {option}: {exc}") from None


def log_paths(args: argparse.Namespace) -> list[str]:
    """The -l logs (default DEFAULT_LOG)."""
    return list(args.logfile or [DEFAULT_LOG])


def scan_logs(run: Run, args: argparse.Namespace, defaults: Mapping[str, Sequence[str]], *,
              state_key: str = "logs") -> Scanner:
    """Scan every -l log since its stored position (one state-file transaction) with the
    patterns of `defaults` and the pattern options."""
    patterns = load_patterns(args, defaults)
    paths = log_paths(args)
    scanner = Scanner(patterns)
    reads: list[LogRead] = []
    state = run.state_file(*(input_key(p) for p in paths))
    run.enter(f"locking state file {state.path}")
    with state.transaction() as doc:
        run.loaded(state)
        stored = doc.get(state_key)
        logs: dict[str, object] = dict(stored) if isinstance(stored, dict) else {}
        for path in paths:
            run.enter(f"reading {path}")
            read, new_state = tail_log(
                path, logs.get(path), patterns, from_start=args.from_start,
                deadline=run.soft_deadline(), scanner=scanner,
            )
            logs[path] = new_state
            reads.append(read)
            if read.missing and not read.sources:
                raise PluginError(f"log file {path} does not exist (check --logfile)")
            if read.timed_out:
                run.stopped_early(path, f"{human(scanner.bytes / 1e6, 1)} MB scanned")
                # Keep what was read: the state of this log points after the last block.
                break
        run.enter(f"saving state file {state.path}")
        doc[state_key] = logs
    for read in reads:
        for event in read.events():
            run.note(event)
    return scanner
