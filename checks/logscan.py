"""Pattern classes, the block scanner and log tailing shared by check_pmta_log and check_pmta_tls.

Patterns are case-insensitive regexes in four classes, as in check_logfiles: a line matching
an `exclude` pattern is ignored, else the first class that matches counts it (`critical`, then
`warning`, then `ok`); an `ok` line clears the critical and warning lines seen before it in the
same run (the problem was followed by its recovery).

Speed: Python's `re` is slow on an alternation of many patterns (it tries every branch at every
position, ~10-30 MB/s), so each pattern contributes a required literal, its *needle*, found with
`bytes.find` on the lowercased block (GB/s); only the lines holding a needle are then matched
with the real regexes. A pattern without a usable literal (3+ ASCII characters) is searched
with its regex over the whole block, which is correct but slow.

The needles come from the literal analysis of pmta_snmp.logtail.LineScanner. LineScanner.scan()
itself is not used: it is as fast on the default patterns, but one pattern without a literal
turns its whole scan into a regex search of every line with every pattern (measured 3x slower
than here, where only that pattern is searched directly); it reports every pattern a line
matches where the classes need the first one; and its `exclude` patterns would need literals
of their own, which would change what `excluded_lines` counts (excluded lines that hold a
needle of another class).

The defaults for PowerMTA's main log are below, in one place, with their sources.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .base import PluginError, PluginParser, Run, human, input_key, usage_error

if TYPE_CHECKING:
    from pmta_snmp.logtail import Block

DEFAULT_LOG = "/var/log/pmta/log"

CLASSES = ("critical", "warning", "exclude", "ok")

# Default patterns for PowerMTA's main log (pmta-formats.md §4 and the operating rules of §5).
# [D] documented PowerMTA text; [R] the operating rules' keywords; [U] UNDOCUMENTED wording:
# PowerMTA's documentation shows no example line, so the pattern is our guess (tune it in a
# --pattern-file when your PowerMTA writes something else).
DEFAULT_PATTERNS: dict[str, list[str]] = {
    "critical": [
        r"\bfatal\b",  # [R] any FATAL
        r"startup error",  # [D] UG §4.2.1 "Startup error: No logging file specified"
        r"are now disabled",  # [D] real 4.0 "All SMTP sources for queue d/v are now disabled."
        r"licen[cs]e\b.{0,60}\bexpired|\bexpired\b.{0,60}\blicen[cs]e",  # [U] license expired
    ],
    "warning": [
        r"\berror\b",  # [R] any ERROR; real lines say "Error: ..." [D]
        r"etimedout",  # [D] "ETIMEDOUT connecting to <host> (<ip>)"
        r"econnrefused",  # [D] "ECONNREFUSED connecting to <domain> (<ip>)" (Windows: WSA...)
        r"ediscon",  # [D] "EDISCON in connection to <domain> (<ip>)"
        r"statusdnsqueryfailed",  # [D] "StatusDnsQueryFailed resolving <domain>"
        r"unable to route",  # [U] [R] wording undocumented
        r"connection refused",  # [R]
        r"tls handshake failed",  # [U] [R] TLS handshake failure wording undocumented
    ],
    "exclude": [],
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


def needles(pattern: str) -> list[bytes] | None:
    """Lowercase literals, one of which every match of `pattern` contains; None when the
    pattern has no usable literal (then it must be searched with its regex)."""
    from pmta_snmp.logtail import _required_literals  # LineScanner's literal analysis

    try:
        compiled = re.compile(pattern, re.IGNORECASE | re.ASCII)
    except (re.error, ValueError):
        return None
    return _required_literals(compiled)


# ---------------------------------------------------------------------------------------------
# Compiled pattern set and the scanner
# ---------------------------------------------------------------------------------------------


def _compile(patterns: Sequence[str], klass: str) -> re.Pattern[bytes] | None:
    """One alternation of the class's patterns; PatternError names the pattern at fault."""
    if not patterns:
        return None
    for p in patterns:
        error = regex_error(p)
        if error is not None:
            raise PatternError(f"bad {klass} pattern {shown(p)}: {error}", klass=klass,
                               pattern=p)
    try:
        return re.compile(_alternation(patterns), re.IGNORECASE)
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


@dataclass
class PatternSet:
    """Compiled classes plus the pre-filter: needles and the patterns that lack one."""

    sources: dict[str, list[str]]
    regex: dict[str, re.Pattern[bytes] | None]
    needles: list[bytes]
    direct: list[re.Pattern[bytes]]

    @classmethod
    def build(cls, classes: Mapping[str, Sequence[str]]) -> PatternSet:
        """Compile `classes` (class -> regex texts); raises PatternError on a bad regex."""
        sources = {k: list(classes.get(k, ())) for k in CLASSES}
        regex = {k: _compile(v, k) for k, v in sources.items()}
        found: set[bytes] = set()
        direct: list[re.Pattern[bytes]] = []
        for klass in ("critical", "warning", "ok"):
            for p in sources[klass]:
                got = needles(p)
                if got is None:
                    direct.append(re.compile(p.encode("utf-8"), re.IGNORECASE))
                else:
                    found.update(got)
        # A needle that contains another is redundant: its lines hold the shorter one.
        kept = [n for n in found if not any(o != n and o in n for o in found)]
        return cls(sources, regex, sorted(kept, key=len, reverse=True), direct)


@dataclass
class ClassCount:
    """Lines counted for one class in this run, with the last (and first) of them."""

    count: int = 0
    first: str | None = None
    last: str | None = None
    recent: list[str] = field(default_factory=list)


class Scanner:
    """Feed blocks of complete lines; counts and last lines per class accumulate."""

    def __init__(self, patterns: PatternSet, *, keep_recent: int = 5) -> None:
        self.patterns = patterns
        self.keep_recent = keep_recent
        self.classes = {k: ClassCount() for k in CLASSES}
        self.lines = 0
        self.bytes = 0
        self.cleared = 0  # critical/warning lines cleared by a later ok line
        self.ok_seen = False  # an ok line cleared what came before (for merge())

    def feed(self, data: bytes, deadline: float | None = None) -> int:
        """Scan one block of complete lines (in slices that stay in the CPU cache); returns
        the bytes scanned: all, or when `deadline` (time.monotonic()) passes, the whole lines
        of the slices scanned by then (at least one)."""
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
        self.lines += data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
        self._scan(data)

    def _scan(self, data: bytes) -> None:
        spans = self._candidates(data)
        if not spans:
            return
        rx = self.patterns.regex
        exclude, crit, warn, ok = rx["exclude"], rx["critical"], rx["warning"], rx["ok"]
        for start in sorted(spans):
            line = data[start:spans[start]]
            if exclude is not None and exclude.search(line):
                self._count("exclude", line)
            elif crit is not None and crit.search(line):
                self._count("critical", line)
            elif warn is not None and warn.search(line):
                self._count("warning", line)
            elif ok is not None and ok.search(line):
                self._count("ok", line)
                self._clear()

    def _candidates(self, data: bytes) -> dict[int, int]:
        """Line start -> line end for every line holding a needle or a direct match."""
        spans: dict[int, int] = {}
        size = len(data)
        if self.patterns.needles:
            low = data.lower()
            find, rfind = low.find, low.rfind
            for needle in self.patterns.needles:
                pos = find(needle)
                while pos >= 0:
                    start = rfind(b"\n", 0, pos) + 1
                    end = find(b"\n", pos)
                    if end < 0:
                        end = size
                    spans[start] = end
                    pos = find(needle, end + 1)
        for pattern in self.patterns.direct:
            for m in pattern.finditer(data):
                start = data.rfind(b"\n", 0, m.start()) + 1
                end = data.find(b"\n", m.end())
                spans[start] = size if end < 0 else end
        return spans

    def _count(self, klass: str, raw: bytes) -> None:
        entry = self.classes[klass]
        entry.count += 1
        if klass == "exclude":
            return
        text = _text(raw)
        if entry.first is None:
            entry.first = text
        entry.last = text
        if self.keep_recent:
            entry.recent.append(text)
            if len(entry.recent) > self.keep_recent:
                del entry.recent[0]

    def _clear(self) -> None:
        self.ok_seen = True
        for klass in ("critical", "warning"):
            entry = self.classes[klass]
            self.cleared += entry.count
            self.classes[klass] = ClassCount()

    def merge(self, later: Scanner) -> None:
        """Add the results of a scanner that read the data right after this one's."""
        if later.ok_seen:
            self._clear()
        for klass in CLASSES:
            mine, theirs = self.classes[klass], later.classes[klass]
            mine.count += theirs.count
            mine.first = mine.first if mine.first is not None else theirs.first
            mine.last = theirs.last if theirs.last is not None else mine.last
            if self.keep_recent:
                mine.recent = (mine.recent + theirs.recent)[-self.keep_recent:]
        self.lines += later.lines
        self.bytes += later.bytes
        self.cleared += later.cleared

    def __getstate__(self) -> dict[str, Any]:
        # Sent back from worker processes without the compiled patterns.
        state = dict(self.__dict__)
        state["patterns"] = None
        return state

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
    with Fanout(scan, deadline=deadline) as fanout:
        for block in reader.blocks():
            done = fanout.feed(block)
            if done < len(block.data):
                # The deadline passed inside this block (1 MiB of matching lines can take a
                # quarter of a second): the state points after what was scanned.
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


# ---------------------------------------------------------------------------------------------
# Large backlogs: blocks scanned in worker processes too
# ---------------------------------------------------------------------------------------------

#: A run that has scanned this much starts worker processes for the rest (a catch-up after
#: downtime, --from-start on a big log): `re` and `bytes.find` hold the GIL, threads would not
#: help. Below it (every normal run) no process is started.
PARALLEL_AFTER = 12 << 20
#: Upper bound of worker processes.
MAX_WORKERS = 4
#: Worker processes start only while at least this much time is left before the deadline:
#: starting them (a fork each, the pool's threads, the patterns compiled again in each) and
#: collecting their last blocks costs 0.1-0.5 s on a busy host, which a short -t cannot
#: amortise. Such a run scans in this process alone and leaves the rest to the next run.
POOL_MIN_REMAINING_S = 1.0

_worker_patterns: PatternSet | None = None
_worker_files: dict[str, int] = {}
_COMPRESSED = (".gz", ".bz2", ".xz")


def _worker_init(sources: dict[str, list[str]]) -> None:
    global _worker_patterns  # noqa: PLW0603 - one compiled set per worker process
    _worker_patterns = PatternSet.build(sources)


def _worker_scan(path: str, key: str, start: int, length: int, edges: bytes
                 ) -> Scanner | None:
    """Read a block from the file itself (no copy through a pipe) and scan it; None when the
    file is not the one the parent read (rotated meanwhile) or the bytes differ."""
    import os

    assert _worker_patterns is not None
    fd = _worker_files.get(key)
    if fd is None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        st = os.fstat(fd)
        if f"{st.st_dev}:{st.st_ino}" != key:
            os.close(fd)
            return None
        _worker_files[key] = fd
    data = os.pread(fd, length, start)
    if len(data) != length or data[:64] + data[-64:] != edges:
        return None
    scanner = Scanner(_worker_patterns)
    scanner.feed(data)
    return scanner


class Fanout:
    """Feeds blocks to a Scanner; past PARALLEL_AFTER bytes, also to worker processes.

    A worker reads its block from the file by offset (cheaper than sending it through a pipe)
    and checks it got the same bytes; otherwise, and for compressed files, the block is
    scanned here. Results are merged in block order (an ok line clears only what came before
    it). At most two blocks per worker are in flight, so the reader never runs far ahead;
    the workers are terminated on exit, also when a timeout interrupts the run.

    With a `deadline` (time.monotonic(), the reader's): the workers are started only while
    POOL_MIN_REMAINING_S are left, and a block goes to a worker only if, at the scan rate
    measured here, it is done before the deadline; so stopping there never waits long for them.
    """

    def __init__(self, scanner: Scanner, *, workers: int | None = None,
                 deadline: float | None = None) -> None:
        import os

        self.scanner = scanner
        cpus = os.cpu_count() or 1
        self.workers = min(MAX_WORKERS, cpus) - 1 if workers is None else workers
        self.deadline = deadline
        self.fed = 0
        self._pool: Any = None
        # In block order: (AsyncResult, data) for a worker's block, (None, Scanner) for ours.
        self._pending: list[tuple[Any, Any]] = []
        # Blocks scanned here, for the scan rate: bytes and seconds.
        self._local_bytes = 0
        self._local_s = 0.0

    def __enter__(self) -> Fanout:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self._drain(all_of_them=True)
        finally:
            if self._pool is not None:
                self._pool.terminate()
                self._pool.join()
                self._pool = None

    def feed(self, block: Block) -> int:
        """Scan one block here or in a worker; the bytes of it taken: all, or when the
        deadline passes while it is scanned here (and no worker holds a later block), the
        lines scanned by then."""
        data = block.data
        self.fed += len(data)
        if not self._to_worker(block):
            if self._pending:
                self._pending.append((None, self._local(data)))
                # Collect finished worker blocks, or the workers would stay "in flight" and
                # every later block would be scanned here alone.
                self._drain(all_of_them=False)
                return len(data)
            return self._timed(self.scanner, data, self.deadline)
        job = self._pool.apply_async(
            _worker_scan,
            (block.source, block.key, block.start, len(data), data[:64] + data[-64:]),
        )
        self._pending.append((job, data))
        self._drain(all_of_them=False)
        return len(data)

    def _to_worker(self, block: Block) -> bool:
        """Whether `block` goes to a worker (starting the workers first if need be)."""
        if (self.workers < 1 or self.fed <= PARALLEL_AFTER
                or block.source.lower().endswith(_COMPRESSED)):
            return False
        if self._pool is None:
            if not self._time_left(POOL_MIN_REMAINING_S):
                return False
            import multiprocessing

            ctx = multiprocessing.get_context("fork")
            self._pool = ctx.Pool(self.workers, _worker_init, (self.scanner.patterns.sources,))
        in_flight = sum(1 for job, _ in self._pending if job is not None)
        if in_flight >= 2 * self.workers:
            return False
        # Each worker scans its blocks in turn: this one is done after those queued before it.
        ahead = in_flight // self.workers + 1
        return self._time_left(ahead * self._scan_s(len(block.data)))

    def _time_left(self, seconds: float) -> bool:
        return self.deadline is None or self.deadline - time.monotonic() >= seconds

    def _scan_s(self, size: int) -> float:
        """Seconds a scan of `size` bytes takes at the rate measured here (0 before any)."""
        if not self._local_bytes:
            return 0.0
        return size * self._local_s / self._local_bytes

    def _timed(self, scanner: Scanner, data: bytes, deadline: float | None = None) -> int:
        t0 = time.monotonic()
        done = scanner.feed(data, deadline)
        self._local_s += time.monotonic() - t0
        self._local_bytes += done
        return done

    def _local(self, data: bytes) -> Scanner:
        local = Scanner(self.scanner.patterns, keep_recent=self.scanner.keep_recent)
        self._timed(local, data)
        return local

    def _drain(self, *, all_of_them: bool) -> None:
        while self._pending:
            job, payload = self._pending[0]
            if job is not None:
                if not all_of_them and not job.ready():
                    return
                result = job.get()
                payload = result if result is not None else self._local(payload)
            self._pending.pop(0)
            self.scanner.merge(payload)
