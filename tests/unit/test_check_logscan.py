"""The log scanner: needles, pattern classes, ok clears, pattern files, exact counts."""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pmta_snmp.checks import logscan
from pmta_snmp.checks.logscan import (
    CLASSES,
    DEFAULT_PATTERNS,
    TLS_FAILURE_PATTERNS,
    PatternError,
    PatternSet,
    PythonFinder,
    Scanner,
    make_finder,
    needles,
    parse_pattern_file,
    regex_arg,
    regex_error,
)

ENGINES = ["hyperscan", "python"]


def require_hyperscan() -> None:
    """Skips the test where hyperscan is not installed, and fails it under CI (where ./run
    installs it: a missing one there is a broken install)."""
    if make_finder([b"abc"]).engine != "hyperscan":
        if os.environ.get("CI"):
            pytest.fail("hyperscan is not installed (or does not run on this CPU)")
        pytest.skip("hyperscan is not installed here")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every scanner test runs with Hyperscan and with the pure-Python needle finder."""
    if request.param == "python":
        monkeypatch.setenv(logscan.PURE_PYTHON_ENV, "1")
    else:
        monkeypatch.delenv(logscan.PURE_PYTHON_ENV, raising=False)
        require_hyperscan()
    return str(request.param)


@pytest.mark.parametrize(
    ("pattern", "expect"),
    [
        (r"\bfatal\b", [b"fatal"]),
        (r"Startup error", [b"startup error"]),
        (r"licen[cs]e\b.{0,60}\bexpired|\bexpired\b.{0,60}\blicen[cs]e", [b"expired"]),
        (r"(?:ECONNREFUSED|connection refused)", [b"connection refused", b"econnrefused"]),
        (r"\bssl_(?:connect|accept)\b.*fail", [b"accept", b"connect"]),
        (r"(foo)+bar", [b"foo"]),
        (r"a.b", None),
        (r"x{2}", None),
        (r"[0-9]+ errors?", [b" error"]),
        (r"(unclosed", None),
    ],
)
def test_needles(pattern: str, expect: list[bytes] | None) -> None:
    assert needles(pattern) == expect


def test_default_patterns_all_have_needles() -> None:
    assert PatternSet.build(DEFAULT_PATTERNS).direct == []
    assert PatternSet.build({"warning": TLS_FAILURE_PATTERNS}).direct == []


def test_plain_text_patterns_need_no_regex() -> None:
    ps = PatternSet.build({"critical": ["are now disabled", r"\bfatal\b", "disk full|EIO err"],
                           "warning": ["Cannot assign requested address", "a.b", "abc|de"]})
    assert [(p.text, p.literal) for p in ps.patterns] == [
        ("are now disabled", True), (r"\bfatal\b", False), ("disk full|EIO err", True),
        ("Cannot assign requested address", True), ("a.b", False), ("abc|de", False),
    ]
    assert [p.text for p in ps.direct] == ["a.b", "abc|de"]  # "de": too short a needle


def scan(text: str | bytes, classes: dict[str, list[str]] | None = None) -> Scanner:
    s = Scanner(PatternSet.build(DEFAULT_PATTERNS if classes is None else classes))
    s.feed(text.encode() if isinstance(text, str) else text)
    return s


# Realistic PowerMTA main-log lines (pmta-formats.md §4): local failures, and the remote
# replies and traffic a healthy PowerMTA logs all day. [U] marks a wording PowerMTA does not
# document (our guess, as in the default patterns).
LOCAL = {
    "fatal": "2025-01-14 09:00:00 FATAL: cannot create /var/spool/pmta/lock",
    "startup": "2025-01-14 09:00:01 Startup error: No logging file specified",
    "config": "2025-01-14 09:00:02 Error in configuration file /etc/pmta/config line 14: "
              "unknown directive 'smtp-listner'",  # [U]
    "disabled": "2025-01-14 09:00:03 All SMTP sources for queue yahoo.com/vmta-b are now "
                "disabled.",
    "license": "2025-01-14 09:00:04 License expired on 2025-01-13",  # [U] (the simulator's)
    "disk": "2025-01-14 09:00:05 error writing /var/spool/pmta/00/3f.msg: No space left on "
            "device",
    "spool": "2025-01-14 09:00:06 Spool directory /var/spool/pmta is full",  # [U]
    "memory": "2025-01-14 09:00:07 cannot fork delivery process: Cannot allocate memory",
    "resolver": "2025-01-14 09:00:08 DNS resolver at 127.0.0.1 not responding",  # [U]
    "bind": "2025-01-14 09:00:09 connecting from 198.51.100.21 to mx1.gmail.com "
            "(192.0.2.14): Cannot assign requested address",
}
LOCAL_CLASS = {"resolver": "warning", "bind": "warning"}
REMOTE = [
    "2025-01-14 09:01:00 ETIMEDOUT connecting to mx2.yahoo.com (192.0.2.40)",
    "2025-01-14 09:01:01 ECONNREFUSED connecting to example.org (192.0.2.41)",
    "2025-01-14 09:01:02 EDISCON in connection to example.net (192.0.2.42)",
    "2025-01-14 09:01:03 StatusDnsQueryFailed resolving typo-domain.example",
    '2025-01-14 09:01:04 Error: "421 4.7.0 Try again later, closing connection." while '
    "connected from mta1.example.net (198.51.100.21) to mx1.gmail.com (192.0.2.14)",
    '2025-01-14 09:01:05 skip of MX requested: "421 4.7.0 Try again later" received from '
    "mx1.gmail.com (192.0.2.14) while connected from mta1.example.net (198.51.100.21) to "
    "mx1.gmail.com (192.0.2.14)",
    "2025-01-14 09:01:06 connect rate limit reached",
    "2025-01-14 09:01:07 message rate limit reached (based on queue's max-msg-rate in "
    "configuration)",
    "2025-01-14 09:01:08 tls:TLSv1.2 connected with 128-bit ECDHE-RSA-AES128-GCM-SHA256",
    "2025-01-14 09:01:09 License expires in 20 day(s), on 2025-02-03",  # license plugin's job
    "2025-01-14 09:01:10 terrorist.example.com/vmta-a starting",
]
# Remote replies that contain a local failure's words: the remote host's problem.
REMOTE_WITH_LOCAL_WORDS = [
    '2025-01-14 09:02:00 Error: "451 4.3.5 Server configuration error" while connected from '
    "mta1.example.net (198.51.100.21) to mx.example.org (192.0.2.40)",
    '2025-01-14 09:02:01 skip of MX requested: "452 4.3.1 Out of memory" received from '
    "mx.example.org (192.0.2.40) while connected from mta1.example.net (198.51.100.21) to "
    "mx.example.org (192.0.2.40)",
]


@pytest.mark.parametrize("name", sorted(LOCAL))
def test_each_local_failure_is_caught_by_default(name: str, engine: str) -> None:
    s = scan(LOCAL[name] + "\n")
    klass = LOCAL_CLASS.get(name, "critical")
    assert {k: c.count for k, c in s.classes.items() if c.count} == {klass: 1}
    assert s.classes[klass].last == LOCAL[name]


def test_remote_replies_and_traffic_are_not_counted_by_default(engine: str) -> None:
    s = scan("\n".join(REMOTE + REMOTE_WITH_LOCAL_WORDS) + "\n")
    assert {k: c.count for k, c in s.classes.items()} == {
        "critical": 0, "warning": 0, "ok": 0, "exclude": len(REMOTE_WITH_LOCAL_WORDS)}
    assert s.lines == len(REMOTE) + len(REMOTE_WITH_LOCAL_WORDS)


def test_exclude_wins_and_ok_clears_what_came_before(engine: str) -> None:
    classes = dict(DEFAULT_PATTERNS, exclude=["mx1.gmail.com"], ok=[r"queue \S+ resumed"])
    text = "\n".join([LOCAL["bind"], LOCAL["fatal"], "x queue a/b resumed", LOCAL["resolver"],
                      REMOTE[0]]) + "\n"
    s = scan(text, classes)
    assert s.count("exclude") == 1 and s.count("critical") == 0 and s.count("warning") == 1
    assert s.cleared == 1 and s.count("ok") == 1
    assert s.lines == 5


def test_excluded_lines_are_those_a_class_would_have_counted(engine: str) -> None:
    """An exclude pattern only hides lines of a class: a line that merely holds another
    class's needle ("terror" holds "error") is not an excluded line."""
    classes = {"warning": [r"\berror\b"], "exclude": ["example"]}
    s = scan("terror at example.com\nerror at example.com\nerror at home\n", classes)
    assert (s.count("exclude"), s.count("warning")) == (1, 1)


def test_crlf_and_latin1_and_no_trailing_newline(engine: str) -> None:
    s = scan(b"2025-01-14 09:00:00 FATAL caf\xe9\r\n2025-01-14 x resolv.conf y")
    assert s.classes["critical"].last == "2025-01-14 09:00:00 FATAL caf\u00e9"
    assert s.count("warning") == 1 and s.lines == 2


def test_pattern_without_needle_is_searched_line_by_line(engine: str) -> None:
    s = scan("a1b\nzzz\naXb\n", {"warning": [r"a.b"]})
    assert s.count("warning") == 2
    # Per line: neither a match across a line end nor `^`/`$` of the block, but of the line.
    s = scan("xa\nby\nab\n", {"warning": [r"a\s*b", r"^y$"]})
    assert (s.count("warning"), s.classes["warning"].recent) == (1, ["ab"])


def test_pattern_needing_a_line_end_matches_no_line(engine: str) -> None:
    s = scan("foo\nbar\n", {"warning": [r"foo\nbar", "foo"]})
    assert s.count("warning") == 1


def test_mark_byte_in_a_dense_slice(engine: str) -> None:
    """The dense path marks needles with \\x01: a log holding that byte is still exact."""
    line = b"2025-01-14 09:00:05 \x01 Cannot assign requested address \x01\n"
    s = scan(line * 500 + b"no match \x01\n" + line, DEFAULT_PATTERNS)
    assert (s.count("warning"), s.lines) == (501, 502)


def test_pattern_file() -> None:
    text = "# comment\n[critical]\nfoo bar\n\n[ok]\nrecovered\n"
    assert parse_pattern_file(text, "f") == {"critical": ["foo bar"], "ok": ["recovered"]}
    with pytest.raises(PatternError, match="f:1: pattern outside"):
        parse_pattern_file("foo\n", "f")
    with pytest.raises(PatternError, match=r"unknown section \[nope\]"):
        parse_pattern_file("[nope]\n", "f")
    with pytest.raises(PatternError, match="bad warning pattern"):
        PatternSet.build({"warning": ["(x"]})
    with pytest.raises(PatternError, match=r"f:3: bad regular expression 'caf\\u00e9': bad "):
        parse_pattern_file("[ok]\nfine\ncaf\\u00e9\n", "f")


@pytest.mark.parametrize(("pattern", "error"), [
    (r"\bfatal\b", None),
    ("caf\u00e9", None),  # the character itself is fine
    (r"caf\u00e9", r"bad escape \u at position 3"),  # valid for str, not over the log's bytes
    (r"\N{DASH}", r"bad escape \N at position 0"),
    ("(x", "missing ), unterminated subpattern at position 0"),
    ("x)", "unbalanced parenthesis at position 1"),
    ("(?i)x", "global flags not at the start of the expression once combined with other "
              "patterns"),
    ("(?u)x", "bad inline flags: cannot use 'u' flag with a bytes pattern at position 3"),
    ("\udcff", "not valid UTF-8"),
])
def test_regex_error_as_the_scanner_compiles(pattern: str, error: str | None) -> None:
    assert regex_error(pattern) == error
    if error is None:
        assert regex_arg(pattern) == pattern
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=r"^bad regular expression "):
            regex_arg(pattern)


def test_patterns_fine_alone_but_not_together_name_the_later_one() -> None:
    with pytest.raises(PatternError) as info:
        PatternSet.build({"warning": ["(?P<h>a)", "ok", "(?P<h>b)", "(?P<h>c)"]})
    assert (info.value.klass, info.value.pattern) == ("warning", "(?P<h>b)")
    assert "redefinition of group name 'h'" in str(info.value)


def _mixed(n: int) -> str:
    return "\n".join(LOCAL[k] if k in LOCAL else REMOTE[0]
                     for k in ("remote", "fatal", "remote", "resolver") * n) + "\n"


def test_slices_cover_the_whole_block(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logscan, "_SLICE", 64)
    s = scan(_mixed(20))
    assert (s.count("critical"), s.count("warning"), s.lines) == (20, 20, 80)


def test_feed_stops_between_slices_at_the_deadline(engine: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logscan, "_SLICE", 64)
    data = _mixed(20).encode()
    whole = scan(data)
    s = Scanner(PatternSet.build(DEFAULT_PATTERNS))
    done = s.feed(data, deadline=time.monotonic() - 1)  # passed: one slice, whole lines
    assert 0 < done < len(data) and data[done - 1:done] == b"\n"
    assert (s.bytes, s.lines) == (done, data[:done].count(b"\n"))
    assert s.feed(data[done:], deadline=time.monotonic() + 60) == len(data) - done
    assert s.classes == whole.classes and (s.lines, s.bytes) == (whole.lines, whole.bytes)


def test_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(logscan.PURE_PYTHON_ENV, "1")
    assert isinstance(make_finder([b"abc"]), PythonFinder)
    assert PatternSet.build(DEFAULT_PATTERNS).engine == "python"
    monkeypatch.delenv(logscan.PURE_PYTHON_ENV)
    assert make_finder([]).engine == "python"  # nothing to find


def test_hyperscan_is_used_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(logscan.PURE_PYTHON_ENV, raising=False)
    require_hyperscan()
    assert PatternSet.build(DEFAULT_PATTERNS).engine == "hyperscan"


# --- exact counts: the scanner against a line-by-line reading of the same rules --------------


@dataclass
class Truth:
    """What a line-by-line reading of the classes' rules gives."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    recent: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in CLASSES})
    cleared: int = 0
    lines: int = 0


def truth(data: bytes, classes: dict[str, list[str]], keep: int = 5) -> Truth:
    """Each line searched with each pattern: exclude, else critical, warning, ok."""
    rx = {k: [re.compile(p.encode(), re.IGNORECASE) for p in classes.get(k, [])]
          for k in CLASSES}
    out = Truth()
    lines = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        lines.pop()
    out.lines = len(lines)
    for line in lines:
        hit = [k for k in ("critical", "warning", "ok") if any(r.search(line) for r in rx[k])]
        if not hit:
            continue
        if any(r.search(line) for r in rx["exclude"]):
            out.counts["exclude"] += 1
            continue
        klass = hit[0]
        if klass == "ok":
            for k in ("critical", "warning"):
                out.cleared += out.counts[k]
                out.counts[k], out.recent[k] = 0, []
        out.counts[klass] += 1
        out.recent[klass] = ([*out.recent[klass], logscan._text(line)])[-keep:]
    return out


def check_exact(data: bytes, classes: dict[str, list[str]], blocks: Iterator[int] | None = None
                ) -> None:
    s = Scanner(PatternSet.build(classes))
    if blocks is None:
        s.feed(data)
    else:
        start = 0
        for size in blocks:
            end = data.find(b"\n", start + size) + 1 or len(data)
            s.feed(data[start:end])
            start = end
            if start >= len(data):
                break
        s.feed(data[start:])
    want = truth(data, classes)
    assert {k: c.count for k, c in s.classes.items()} == want.counts
    assert {k: s.classes[k].recent for k in ("critical", "warning", "ok")} == {
        k: want.recent[k] for k in ("critical", "warning", "ok")}
    for k in ("critical", "warning", "ok"):
        assert s.classes[k].last == (want.recent[k][-1] if want.recent[k] else None)
    assert (s.cleared, s.lines, s.bytes) == (want.cleared, want.lines, len(data))


WORDS = ["error", "Error:", "terror", "ETIMEDOUT", "etimedout", "fatal", "FATAL", "spool",
         "full", "ok", "resumed", "mx.example.org", "x", "a1b", "aXb", "caf\u00e9", "\x01",
         "\r", "  ", "license", "expired", "disk", "--"]
PATTERNS = [r"\berror\b", "etimedout", "ETIMEDOUT", r"\bfatal\b", r"spool.{0,10}full",
            "resumed", r"queue \S+ resumed", "mx.example", r"a.b", r"^error", r"full$",
            r"licen[cs]e\b.{0,20}expired", "caf\u00e9", r"(?:ok|x)\s", "fatal|ETIMEDOUT",
            "spool|a1b|Err"]

line_st = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)
classes_st = st.fixed_dictionaries({k: st.lists(st.sampled_from(PATTERNS), max_size=3,
                                                unique=True) for k in CLASSES})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(line_st, max_size=60), classes=classes_st,
       repeat=st.sampled_from([1, 1, 40]), trailing=st.booleans(),
       sizes=st.lists(st.integers(1, 300), min_size=1, max_size=8))
def test_counts_are_exact(lines: list[str], classes: dict[str, list[str]], repeat: int,
                          trailing: bool, sizes: list[int]) -> None:
    """Random lines and pattern classes, read as one block and in random blocks, with both
    needle engines, sparse and (with `repeat`) dense slices: the counts, last lines and
    clears are exactly those of a line-by-line reading."""
    data = ("\n".join(lines * repeat) + ("\n" if trailing and lines else "")).encode()
    for pure in (False, True):
        with pytest.MonkeyPatch.context() as mp:
            if pure:
                mp.setenv(logscan.PURE_PYTHON_ENV, "1")
            else:
                mp.delenv(logscan.PURE_PYTHON_ENV, raising=False)
            mp.setattr(logscan, "_SLICE", 256)
            check_exact(data, classes)
            check_exact(data, classes, iter(sizes))


def test_an_incident_switches_between_sparse_and_dense_slices(
        engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Quiet slices, then a burst where every line matches, then quiet again, with an ok line
    and an exclude inside the burst: dense and sparse slices give the same exact counts."""
    monkeypatch.setattr(logscan, "_SLICE", 4096)
    classes = dict(DEFAULT_PATTERNS, ok=["queue yahoo.com/vmta-b resumed"],
                   exclude=[*DEFAULT_PATTERNS["exclude"], "vmta-c"])
    quiet = [REMOTE[i % len(REMOTE)] for i in range(2000)]
    burst = [LOCAL["disabled"].replace("vmta-b", f"vmta-{'bc'[i % 2]}") for i in range(3000)]
    burst[1500] = "2025-01-14 09:00:03 queue yahoo.com/vmta-b resumed"
    burst[2000] = LOCAL["fatal"]
    data = ("\n".join(quiet + burst + quiet) + "\n").encode()
    check_exact(data, classes)
    s = Scanner(PatternSet.build(classes))
    s.feed(data)
    assert s.count("critical") == 749 and s.count("exclude") == 1500
