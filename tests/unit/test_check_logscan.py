"""The log scanner: needles, pattern classes, ok clears, pattern files, parallel merge."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pytest
from pmta_snmp.checks import logscan
from pmta_snmp.checks.logscan import (
    DEFAULT_PATTERNS,
    TLS_FAILURE_PATTERNS,
    Fanout,
    PatternError,
    PatternSet,
    Scanner,
    needles,
    parse_pattern_file,
    regex_arg,
    regex_error,
)


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


def test_default_patterns_have_needles_and_redundant_ones_are_dropped() -> None:
    ps = PatternSet.build(DEFAULT_PATTERNS)
    assert ps.direct == []
    assert b"error" in ps.needles and b"startup error" not in ps.needles
    assert PatternSet.build({"warning": TLS_FAILURE_PATTERNS}).direct == []


def scan(text: str, classes: dict[str, list[str]] | None = None) -> Scanner:
    s = Scanner(PatternSet.build(classes or DEFAULT_PATTERNS))
    s.feed(text.encode())
    return s


LINES = {
    "fatal": "2025-01-14 09:00:00 FATAL: out of memory",
    "disabled": "2025-01-14 09:00:01 All SMTP sources for queue a.example/v are now disabled.",
    "license": "2025-01-14 09:00:02 License has expired",
    "startup": "2025-01-14 09:00:03 Startup error: No logging file specified",
    "error": '2025-01-14 09:00:04 Error: "421 4.7.0 try later" while connected',
    "timeout": "2025-01-14 09:00:05 ETIMEDOUT connecting to mx.example.org (192.0.2.40)",
    "refused": "2025-01-14 09:00:06 WSAECONNREFUSED connecting to x (1.2.3.4)",
    "ediscon": "2025-01-14 09:00:07 EDISCON in connection to x (1.2.3.4)",
    "dns": "2025-01-14 09:00:08 StatusDnsQueryFailed resolving example.invalid",
    "route": "2025-01-14 09:00:09 unable to route to example.invalid",
    "tls": "2025-01-14 09:00:10 TLS handshake failed with mx (1.2.3.4)",
    "normal": "2025-01-14 09:00:11 done example.com/vmta-a",
    "terror": "2025-01-14 09:00:12 terrorist.example.com/vmta-a starting",
}


@pytest.mark.parametrize(("name", "klass"), [
    ("fatal", "critical"), ("disabled", "critical"), ("license", "critical"),
    ("startup", "critical"), ("error", "warning"), ("timeout", "warning"),
    ("refused", "warning"), ("ediscon", "warning"), ("dns", "warning"), ("route", "warning"),
    ("tls", "warning"), ("normal", None), ("terror", None),
])
def test_default_classification(name: str, klass: str | None) -> None:
    s = scan(LINES[name] + "\n")
    counts = {k: c.count for k, c in s.classes.items() if c.count}
    assert counts == ({klass: 1} if klass else {})
    if klass:
        assert s.classes[klass].last == LINES[name]


def test_exclude_wins_and_ok_clears_what_came_before() -> None:
    classes = dict(DEFAULT_PATTERNS, exclude=["mx.example.org"], ok=[r"queue \S+ resumed"])
    text = "\n".join([LINES["timeout"], LINES["fatal"], "x queue a/b resumed", LINES["error"],
                      LINES["normal"]]) + "\n"
    s = scan(text, classes)
    assert s.count("exclude") == 1 and s.count("critical") == 0 and s.count("warning") == 1
    assert s.cleared == 1 and s.count("ok") == 1
    assert s.lines == 5


def test_crlf_and_latin1_and_no_trailing_newline() -> None:
    s = scan("")
    s.feed(b"2025-01-14 09:00:00 FATAL caf\xe9\r\n2025-01-14 x ERROR y")
    assert s.classes["critical"].last == "2025-01-14 09:00:00 FATAL caf\u00e9"
    assert s.count("warning") == 1 and s.lines == 2


def test_pattern_without_needle_is_searched_directly() -> None:
    s = scan("a1b\nzzz\naXb\n", {"warning": [r"a.b"]})
    assert s.count("warning") == 2


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


def test_slices_cover_the_whole_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logscan, "_SLICE", 64)
    text = "\n".join(LINES[k] for k in ("normal", "fatal", "normal", "error") * 20) + "\n"
    s = scan(text)
    assert (s.count("critical"), s.count("warning"), s.lines) == (20, 20, 80)


def test_merge_keeps_block_order() -> None:
    ps = PatternSet.build(dict(DEFAULT_PATTERNS, ok=["resumed"]))
    a, b, c = Scanner(ps), Scanner(ps), Scanner(ps)
    a.feed(f"{LINES['fatal']}\n{LINES['error']}\n".encode())
    b.feed(f"{LINES['timeout']}\nresumed\n{LINES['disabled']}\n".encode())
    c.feed(f"{LINES['dns']}\n".encode())
    whole = Scanner(ps)
    whole.feed(f"{LINES['fatal']}\n{LINES['error']}\n{LINES['timeout']}\nresumed\n"
               f"{LINES['disabled']}\n{LINES['dns']}\n".encode())
    a.merge(b)
    a.merge(c)
    for klass in ("critical", "warning", "ok"):
        assert a.classes[klass] == whole.classes[klass]
    assert (a.cleared, a.lines, a.bytes) == (whole.cleared, whole.lines, whole.bytes)


def test_fanout_with_workers_matches_a_single_scan(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from pmta_snmp.logtail import TailReader

    monkeypatch.setattr(logscan, "PARALLEL_AFTER", 0)
    ps, path, single = _fan_lines(tmp_path)
    fanned = Scanner(ps)
    with Fanout(fanned, workers=2) as fan:
        for block in TailReader(str(path), None, from_start=True, chunk_size=4096).blocks():
            fan.feed(block)
    for klass in ("critical", "warning", "ok"):
        assert fanned.classes[klass] == single.classes[klass]
    assert (fanned.cleared, fanned.lines) == (single.cleared, single.lines) == (600, 2000)


def _fan_lines(tmp_path: Path) -> tuple[PatternSet, Path, Scanner]:
    ps = PatternSet.build(dict(DEFAULT_PATTERNS, ok=["resumed"]))
    lines = [LINES[k] for k in ("normal", "fatal", "error", "normal", "timeout")] * 400
    lines[1000] = "queue x resumed"
    path = tmp_path / "log"
    path.write_text("\n".join(lines) + "\n")
    single = Scanner(ps)
    single.feed(path.read_bytes())
    return ps, path, single


def _fan(path: Path, scanner: Scanner, deadline: float) -> None:
    from pmta_snmp.logtail import TailReader

    with Fanout(scanner, workers=1, deadline=deadline) as fan:
        for block in TailReader(str(path), None, from_start=True, chunk_size=4096).blocks():
            fan.feed(block)


def test_fanout_starts_no_workers_it_has_no_time_to_use(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing.context

    def no_pool(*a: object, **kw: object) -> None:
        raise AssertionError("a worker pool was started")

    monkeypatch.setattr(logscan, "PARALLEL_AFTER", 0)
    monkeypatch.setattr(multiprocessing.context.BaseContext, "Pool", no_pool)
    ps, path, single = _fan_lines(tmp_path)
    fanned = Scanner(ps)
    _fan(path, fanned, time.monotonic() + logscan.POOL_MIN_REMAINING_S / 2)
    assert fanned.classes == single.classes and fanned.lines == single.lines


def test_fanout_sends_workers_only_blocks_done_by_the_deadline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing.pool

    sent: list[object] = []
    real = multiprocessing.pool.Pool.apply_async

    def spy(self: multiprocessing.pool.Pool, *a: Any, **kw: Any) -> Any:
        sent.append(a)
        return real(self, *a, **kw)

    monkeypatch.setattr(logscan, "PARALLEL_AFTER", 0)
    monkeypatch.setattr(multiprocessing.pool.Pool, "apply_async", spy)
    ps, path, single = _fan_lines(tmp_path)
    # Blocks scan fast: they go to the worker.
    fanned = Scanner(ps)
    _fan(path, fanned, time.monotonic() + 60)
    assert sent and fanned.classes == single.classes and fanned.cleared == single.cleared
    # A block would take longer than the time left: scanned here, nothing left to wait for.
    sent.clear()
    monkeypatch.setattr(Fanout, "_scan_s", lambda self, size: 120.0)
    fanned = Scanner(ps)
    _fan(path, fanned, time.monotonic() + 60)
    assert not sent and fanned.classes == single.classes and fanned.cleared == single.cleared


def test_feed_stops_between_slices_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logscan, "_SLICE", 64)
    text = "\n".join(LINES[k] for k in ("normal", "fatal", "normal", "error") * 20) + "\n"
    data = text.encode()
    whole = scan(text)
    s = Scanner(PatternSet.build(DEFAULT_PATTERNS))
    done = s.feed(data, deadline=time.monotonic() - 1)  # passed: one slice, whole lines
    assert 0 < done < len(data) and data[done - 1:done] == b"\n"
    assert (s.bytes, s.lines) == (done, data[:done].count(b"\n"))
    rest = Scanner(PatternSet.build(DEFAULT_PATTERNS))
    assert rest.feed(data[done:], deadline=time.monotonic() + 60) == len(data) - done
    s.merge(rest)
    assert s.classes == whole.classes and (s.lines, s.bytes) == (whole.lines, whole.bytes)


def test_fanout_keeps_its_workers_busy_to_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block scanned here while the workers are full must not keep their finished blocks
    counted as in flight: then every later block was scanned here alone (a 30 % slower scan
    of a 1 GB log)."""
    from pmta_snmp.logtail import TailReader

    ps, path, single = _fan_lines(tmp_path)
    monkeypatch.setattr(logscan, "PARALLEL_AFTER", 0)
    sent: list[bool] = []
    real = Fanout._to_worker

    def counting(self: Fanout, block: object) -> bool:
        sent.append(real(self, block))  # type: ignore[arg-type]
        return sent[-1]

    monkeypatch.setattr(Fanout, "_to_worker", counting)
    real_local = Fanout._local

    def slow_local(self: Fanout, data: bytes) -> Scanner:
        # This process is the busy one: by the time it is done, the workers have finished
        # what they held (waited for, so the outcome is not a race with their speed).
        for job, _ in self._pending:
            if job is not None:
                job.wait(60)
        return real_local(self, data)

    monkeypatch.setattr(Fanout, "_local", slow_local)
    fanned = Scanner(ps)
    with Fanout(fanned, workers=1) as fan:
        for block in TailReader(str(path), None, from_start=True, chunk_size=1024).blocks():
            fan.feed(block)
    assert fanned.classes["critical"] == single.classes["critical"]
    assert len(sent) > 50
    assert sum(sent) > len(sent) // 5, f"{sum(sent)} of {len(sent)} blocks went to the worker"
