"""The long fuzz run of the PowerMTA API parsers: a model or a one-line PmtaError, nothing else.

    python -m bench.fuzz_api [--count N] [--seed S]     (default 100,000 examples)
    ./run fuzz api [--count N] [--seed S]
    python -m bench fuzz_api [--quick]                  (as a benchmark row; quick = 2,000)

Hypothesis strategies build VALID envelopes -- `<rsp><data>…</data><succ/></rsp>` and
`{"data": …, "status": "success", "message": …}` (pmta-formats.md §1.3), the seed flavour's
flat JSON and CSV -- for every endpoint (`/status`, `/queues`, `/domains`, `/vmtas`,
`/queueDetail`, `/domainDetail`, `show license`, `show version`, the seed pages), shaped like
PowerMTA's trees, with hostile values put in at a rate drawn per example: wrong types (null,
lists, objects, booleans), huge, negative, fractional and non-finite numbers (also as raw JSON
tokens `1e400`, `NaN`, 5000-digit integers), numeric-looking texts, odd unicode (lone
surrogates, control characters, other scripts' digits), keys dropped, blocks replaced, and
nesting up to 200,000 deep. Since the envelopes are valid, most examples reach the per-endpoint
parser (the suite asserts the share).

The property (`check`): `unwrap` and the endpoint's parser return a model or raise a one-line
`PmtaError`; any other exception is a failure. A model must be sane (counts 0 <= n < 2^64,
finite non-negative kB, texts that encode as UTF-8, one-line warnings) and must go through
`snapshot_to_dict`, the OID tree build and the Prometheus exposition without an exception.

tests/unit/test_api_parse.py runs the same strategy and check for a few thousand examples.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from bench.common import Report, Row, rate
from pmta_snmp.api import parse
from pmta_snmp.api.errors import PmtaError
from pmta_snmp.model import Domain, License, Queue, Snapshot, Status, Vmta, snapshot_to_dict

NAME = "fuzz_api"
TITLE = "API parser fuzz (a model or a one-line PmtaError, nothing else)"
DEFAULT_COUNT = 100_000
QUICK_COUNT = 2_000
BENCH_COUNT = 20_000
DEFAULT_SEED = 1337
MAX_REPORTED = 10
MAX_COUNT = 2**64 - 1

# ---------------------------------------------------------------------------------------------
# Values that render verbatim
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A token written as is: a JSON number no Python value renders (`1e400`, `NaN`, 5000
    digits); in XML, the same text."""

    text: str


@dataclass(frozen=True)
class Deep:
    """Nesting `depth` levels deep (arrays or objects in JSON, elements in XML), rendered
    without recursion."""

    depth: int
    objects: bool = False


RAW_TOKENS = (
    "1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity", "9" * 25, "-" + "9" * 25,
    "9" * 400, "9" * 5000, "1.5e308", "-0", "0.0", "4.9e-324",
)
NUMERIC_TEXTS = (
    "1e400", "inf", "-inf", "Infinity", "nan", "NaN", "-5", "1,000", " 42 ", "4.5", "42.0",
    "0x10", "1_000", "\u0661\u0662", "\uff11", "²", "", "   ", "12 kB", "+7", "1e3", "-0",
    "9" * 30, "9" * 5000, "lots", "n/a", "true", "null", "None",
)
ODD_TEXTS = (
    "\ud800", "a\udfffb", "\x00", "bad\x1b[31mred", "\u202egnp.exe", "\ufeffbom", "é" * 50,
    "x" * 10_000, "line\nbreak", "tab\there", "<b>&amp;</b>", '"quoted"', "\U0001f4e7",
)
DEEP_DEPTHS = (2, 10, 63, 64, 65, 66, 100, 1_000, 5_000)
"""Nesting put in place of a value (tests/unit/test_api_values.py has the 200,000-deep ones)."""

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=0, max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NUMERIC_TEXTS),
    st.sampled_from(ODD_TEXTS),
    st.text(max_size=12),
    st.builds(Raw, st.sampled_from(RAW_TOKENS)),
)
hostile = st.one_of(
    scalars,
    scalars,
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.sampled_from(("rcp", "kb", "x", "name", "")), scalars, max_size=3),
    st.builds(Deep, st.sampled_from(DEEP_DEPTHS), st.booleans()),
)
"""A value where PowerMTA would put a count, a kB figure, a time, a flag or a name."""

# ---------------------------------------------------------------------------------------------
# PowerMTA-shaped trees (the JSON shape; XML renders the same tree)
# ---------------------------------------------------------------------------------------------


def _window(n: int) -> dict[str, Any]:
    return {
        "out": {"rcp": 10 * n, "msg": 8 * n, "kb": 1.5 * n},
        "in": {"rcp": 5 * n, "msg": 4 * n, "kb": 0.5 * n},
        "bounceProcessed": n,
        "feedbackLoopProcessed": 2 * n,
    }


STATUS: dict[str, Any] = {
    "mta": {
        "product": {"name": "PowerMTA", "version": "5.0r1", "buildDate": "2019-09-13",
                    "revision": "v5_0r1@190914.919ffeb"},
        "lak": {"serial": "910233", "instances": 1},
        "os": {"name": "Linux", "version": "5.10 "},
        "fullHostName": "mta1.example.com",
    },
    "status": {
        "timeNow": "2025-01-14 09:13:30",
        "startupTime": "2025-01-13 09:13:30",
        "shuttingDown": False,
        "traffic": {"total": _window(1000), "lastHr": _window(60), "lastMin": _window(1),
                    "topPerHr": _window(90), "topPerMin": _window(3)},
        "conn": {"smtpIn": {"cur": 3, "max": 300, "top": 40},
                 "smtpOut": {"cur": 148, "max": 2000, "top": 220}},
        "resolver": {"namesCached": 1234, "queriesPending": 2, "queriesActive": 1},
        "queue": {"smtp": {"rcp": 51234, "dom": 310, "kb": 99182.4},
                  "pipe": {"rcp": 0, "dom": 0, "kb": 0},
                  "bounceProcessor": {"rcp": 2, "dom": 1, "kb": 0.3}},
        "spool": {"initPct": 100, "dirs": 4, "files": {"inUse": 900, "recycled": 100,
                                                      "total": 1000},
                  "totalRcp": 51236, "maxRcp": 1000000},
        "status": "running",
    },
}
QUEUE_ROW: dict[str, Any] = {
    "name": "gmail.com/vmta-a", "rcp": 1200, "kb": 3400.5, "conn": 12, "paused": "no",
    "mode": "backoff", "retryTime": "2025-01-14 09:35:42",
    "event": [{"type": "error", "time": "2025-01-14 09:14:30", "text": "ETIMEDOUT connecting"},
              {"type": "error", "time": "2025-01-14 09:13:30", "text": "421 4.7.0 try later"}],
}
DOMAIN_ROW: dict[str, Any] = {"name": "gmail.com", "rcp": 1200, "kb": 3400.5, "conn": 12,
                              "lastError": "ETIMEDOUT connecting"}
VMTA_ROW: dict[str, Any] = {"name": "vmta-a", "rcp": 1200, "domains": 3, "kb": 3400.5,
                            "conn": 12, "pct": 50.0}
LICENSE: dict[str, Any] = {"license": {"product": "PowerMTA", "serial": "910233",
                                       "issued": "2024-06-01", "expires": "2026-12-01"}}
LICENSE_TEXT = ("  product: PowerMTA\n   serial: 910233\n   issued: 2024-06-01\n"
                "  expires: {expires}\ncopyright: Port25 Solutions, Inc.\n")
SEED_STATUS: dict[str, Any] = {"queue_depth": 1234, "msgs_per_sec": 2.5,
                               "active_connections": 7, "domains": 12, "uptime": 3600,
                               "version": "5.0r1", "status": "running"}
SEED_COLUMNS = {
    "/queue.csv": ("queue", "domain", "vmta", "rcp", "kb", "conn", "paused", "mode",
                   "retry_time", "last_error"),
    "/domain.csv": ("domain", "rcp", "kb", "conn", "last_error"),
    "/vmta.csv": ("vmta", "rcp", "domains", "kb", "conn"),
}

# ---------------------------------------------------------------------------------------------
# Rendering (iterative for the deep parts, so the fuzzer itself never recurses deeply)
# ---------------------------------------------------------------------------------------------

_XML_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _xml_name(key: str) -> str:
    if key and key[0].isalpha() and key.isascii() and set(key) <= _XML_NAME_CHARS:
        return key
    return "x"


def _xml_text(text: str) -> str:
    """Text XML 1.0 can carry (no control characters but tab/newline, no surrogates)."""
    kept = "".join(
        c for c in text
        if c in "\t\n\r" or ("\x20" <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd")
        or c >= "\U00010000"
    )
    return escape(kept)


def to_json(node: Any) -> str:
    """The tree as JSON text; Raw and Deep verbatim, floats as Python writes them (NaN too)."""
    if isinstance(node, Raw):
        return node.text
    if isinstance(node, Deep):
        if node.objects:
            return '{"a":' * node.depth + "1" + "}" * node.depth
        return "[" * node.depth + "]" * node.depth
    if isinstance(node, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in node.items()) + "}"
    if isinstance(node, list):
        return "[" + ",".join(to_json(v) for v in node) + "]"
    if isinstance(node, int) and not isinstance(node, bool):
        return str(node)  # within the 4300-digit limit by construction
    return json.dumps(node)


def to_xml(node: Any, tag: str) -> str:
    """The tree as PowerMTA-style XML: lists repeat the element, leaves are text."""
    name = _xml_name(tag)
    if isinstance(node, dict):
        inner = "".join(
            "".join(to_xml(v, k) for v in val) if isinstance(val, list) else to_xml(val, k)
            for k, val in node.items()
        )
        return f"<{name}>{inner}</{name}>"
    if isinstance(node, Deep):
        return f"<{name}>" + "<a>" * node.depth + "x" + "</a>" * node.depth + f"</{name}>"
    if isinstance(node, list):  # a list inside a list: PowerMTA has none; flatten to text
        return f"<{name}>{_xml_text(json.dumps(str(node)))}</{name}>"
    if isinstance(node, Raw):
        text = node.text
    elif node is None:
        text = ""
    elif isinstance(node, bool):
        text = "1" if node else "0"
    else:
        text = str(node) if not isinstance(node, str) else node
    return f"<{name}>{_xml_text(text)}</{name}>"


def json_envelope(data: Any, message: Any = "") -> bytes:
    """`{"data": …, "status": "success", "message": …}` (surrogates escaped, as JSON allows)."""
    return ('{"data":' + to_json(data) + ',"status":"success","message":' + to_json(message)
            + "}").encode("utf-8", "surrogatepass")


def xml_envelope(data: Any) -> bytes:
    """`<rsp><data>…</data><succ/></rsp>` on one line."""
    return ("<rsp>" + to_xml(data, "data") + "<succ/></rsp>").encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

MUTATIONS = (0, 0, 1, 1, 1, 2, 2, 3, 4, 6, 10, 25)
"""How many places of one example are made hostile (drawn from this list)."""
OPS = ("value", "value", "value", "drop", "add")

Path = tuple[Any, ...]
_MUTATION_COUNTS = st.sampled_from(MUTATIONS)
_PLACES = st.integers(0, 2**16)
_OPS = st.sampled_from(OPS)
_ROW_COUNTS = st.integers(0, 6)
_SHAPES = st.sampled_from(("tagged", "bare", "rows", "nested", "single"))
_FORMATS = st.sampled_from(("json", "xml"))


def _paths(node: Any, prefix: Path = ()) -> list[Path]:
    """Every place in a tree: each key of each object, each item of each list."""
    out: list[Path] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.append((*prefix, i))
            out.extend(_paths(value, (*prefix, i)))
    return out


def _has(node: Any, key: Any) -> bool:
    if isinstance(node, dict):
        return key in node
    return isinstance(node, list) and isinstance(key, int) and key < len(node)


def _apply(tree: Any, path: Path, op: str, value: Any) -> Any:
    """`tree` with the place at `path` replaced (`value`), removed (`drop`) or given an extra
    sibling key (`add`); unchanged when an earlier mutation removed the place."""
    if not path:
        return value if op == "value" else tree
    parent = tree
    for key in path[:-1]:
        if not _has(parent, key):
            return tree
        parent = parent[key]
    last = path[-1]
    if isinstance(parent, dict) and last in parent:
        if op == "drop":
            del parent[last]
        elif op == "add":
            parent[f"{last}X"] = value
        else:
            parent[last] = value
    elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        if op == "drop":
            del parent[last]
        elif op == "add":
            parent.insert(last, value)
        else:
            parent[last] = value
    return tree


def _mutated(draw: Callable[[Any], Any], template: Any) -> Any:
    """A copy of `template` with a drawn number of hostile values, dropped keys and extras."""
    tree = copy.deepcopy(template)
    paths = _paths(template)
    for _ in range(draw(_MUTATION_COUNTS) if paths else 0):
        path = paths[draw(_PLACES) % len(paths)]
        op = draw(_OPS)
        tree = _apply(tree, path, op, draw(hostile) if op != "drop" else None)
    return tree


def _rows(draw: Callable[[Any], Any], template: dict[str, Any]) -> list[Any]:
    n = draw(_ROW_COUNTS)
    return [dict(template, name=f"{template['name']}{i}") for i in range(n)]


def _listing(draw: Callable[[Any], Any], tag: str, rows: list[Any], fmt: str) -> Any:
    """The rows in one of the shapes the parser accepts (the JSON list shape is [?])."""
    if fmt == "xml":
        return {"title": "Top queues", tag: rows}
    shape = draw(_SHAPES)
    if shape == "bare":
        return rows
    if shape == "rows":
        return {"rows": rows}
    if shape == "nested":
        return {"list": {tag: rows}}
    if shape == "single" and rows:
        return {tag: rows[0]}
    return {"title": f"Top {len(rows)}", tag: rows}


@dataclass(frozen=True)
class Case:
    """One generated answer: which parser reads it and the body as it came over the wire."""

    endpoint: str
    fmt: str
    body: bytes

    def __repr__(self) -> str:  # hypothesis prints failing examples with this
        head = self.body[:300]
        return f"Case({self.endpoint!r}, {self.fmt!r}, {len(self.body)} bytes: {head!r})"


ENDPOINTS = ("/status", "/queues", "/domains", "/vmtas", "/queueDetail", "/domainDetail",
             "license", "version", "/status.json", "/queue.csv", "/domain.csv", "/vmta.csv")
_ENDPOINTS = st.sampled_from(ENDPOINTS)


@st.composite
def cases(draw: Callable[[Any], Any]) -> Case:
    """A valid envelope for one endpoint with a drawn number of hostile places."""
    endpoint = draw(_ENDPOINTS)
    if endpoint == "/status.json":
        doc = _mutated(draw, SEED_STATUS)
        return Case(endpoint, "json", to_json(doc).encode("utf-8", "surrogatepass"))
    if endpoint.endswith(".csv"):
        return Case(endpoint, "csv", _seed_csv(draw, endpoint))
    fmt = draw(_FORMATS)
    message: Any = ""
    if endpoint == "/status":
        data = _mutated(draw, STATUS)
    elif endpoint in ("/queues", "/queueDetail"):
        data = _mutated(draw, _listing(draw, "queue", _rows(draw, QUEUE_ROW), fmt))
    elif endpoint in ("/domains", "/domainDetail"):
        data = _mutated(draw, _listing(draw, "domain", _rows(draw, DOMAIN_ROW), fmt))
    elif endpoint == "/vmtas":
        data = _mutated(draw, _listing(draw, "vmta", _rows(draw, VMTA_ROW), fmt))
    elif endpoint == "license":
        expires = draw(st.one_of(st.sampled_from(("never", "2026-12-01", "soon", "")), hostile))
        if draw(st.booleans()):
            data = _mutated(draw, {"license": dict(LICENSE["license"], expires=expires)})
        else:
            data, message = {}, LICENSE_TEXT.format(expires=expires)
    else:
        text = draw(st.one_of(
            st.just("PowerMTA v5.0r1 (2019-09-13 16:27:31, 64-bit; v5_0r1@190913.ba26ec5)."),
            st.sampled_from(ODD_TEXTS), hostile,
        ))
        data = text if draw(st.booleans()) else {"version": text}
    if fmt == "xml":
        return Case(endpoint, fmt, xml_envelope(data))
    return Case(endpoint, fmt, json_envelope(data, message))


def _seed_csv(draw: Callable[[Any], Any], endpoint: str) -> bytes:
    import csv
    import io

    columns = list(SEED_COLUMNS[endpoint])
    good = {"queue": "gmail.com/v1", "domain": "gmail.com", "vmta": "v1", "rcp": "10",
            "kb": "1.5", "conn": "2", "paused": "no", "mode": "normal", "domains": "3",
            "retry_time": "", "last_error": ""}
    rows: list[list[Any]] = [[good[c] for c in columns] for _ in range(draw(_ROW_COUNTS))]
    table = _mutated(draw, [columns, *rows])  # a header cell dropped, odd cells, extra cells
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in table:
        writer.writerow([_cell(v) for v in (row if isinstance(row, list) else [row])])
    return buf.getvalue().encode("utf-8", "surrogatepass")


def _cell(value: Any) -> str:
    """A hostile value as CSV text."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Deep):
        return "[" * value.depth + "]" * value.depth
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value if isinstance(value, str) else json.dumps(value, default=str)


# ---------------------------------------------------------------------------------------------
# The property
# ---------------------------------------------------------------------------------------------


def _parse(case: Case, warnings: list[str]) -> Any:
    """Read `case` the way the client does."""
    ep = case.endpoint
    if ep == "/status.json":
        return parse.parse_seed_status(case.body, warnings=warnings)
    if ep == "/queue.csv":
        return parse.parse_seed_queues(case.body, warnings=warnings)
    if ep == "/domain.csv":
        return parse.parse_seed_domains(case.body, warnings=warnings)
    if ep == "/vmta.csv":
        return parse.parse_seed_vmtas(case.body, warnings=warnings)
    data = parse.unwrap(case.body)
    _reached[0] = True
    if ep == "license":
        return parse.parse_license(data, parse.unwrap_message(case.body))
    if ep == "version":
        return parse.parse_version(data, parse.unwrap_message(case.body))
    fn: Callable[..., Any] = {
        "/status": parse.parse_status,
        "/queues": parse.parse_queues,
        "/domains": parse.parse_domains,
        "/vmtas": parse.parse_vmtas,
        "/queueDetail": parse.parse_queue_detail,
        "/domainDetail": parse.parse_domain_detail,
    }[ep]
    return fn(data, warnings=warnings)


_reached = [False]


def _one_line(text: str, what: str) -> str | None:
    if not text or "\n" in text or "\r" in text or len(text) > 400:
        return f"{what} is not one short line: {text[:200]!r}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} cannot be written as UTF-8: {text[:200]!r}"
    return None


def _sane(value: Any, where: str = "model") -> str | None:
    """None when every count, kB figure and text of a model value is in range."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            problem = _sane(getattr(value, f.name), f"{where}.{f.name}")
            if problem:
                return problem
        return None
    if isinstance(value, tuple):
        for i, item in enumerate(value):
            problem = _sane(item, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if 0 <= value <= MAX_COUNT else f"{where} = {value} out of range"
    if isinstance(value, float):
        ok = math.isfinite(value) and 0 <= value <= MAX_COUNT / 1024
        return None if ok else f"{where} = {value} out of range"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{where} = {value[:60]!r} cannot be written as UTF-8"
    return None


def _outputs(result: Any) -> None:
    """Push a model through everything that serves it: JSON, the OID tree, Prometheus."""
    if isinstance(result, Status):
        snap = Snapshot(status=result)
    elif isinstance(result, License):
        snap = Snapshot(license=result)
    elif isinstance(result, tuple) and result and isinstance(result[0], Queue):
        snap = Snapshot(queues=result)
    elif isinstance(result, tuple) and result and isinstance(result[0], Domain):
        snap = Snapshot(domains=result)
    elif isinstance(result, tuple) and result and isinstance(result[0], Vmta):
        snap = Snapshot(vmtas=result)
    elif isinstance(result, Queue | Domain):
        snap = Snapshot(queues=(result,)) if isinstance(result, Queue) else Snapshot(
            domains=(result,))
    else:
        return
    json.dumps(snapshot_to_dict(snap), ensure_ascii=False).encode("utf-8")
    from pmta_snmp.mib.health import AgentHealth
    from pmta_snmp.mib.layout import build_varbinds

    build_varbinds(snap, AgentHealth())
    from prometheus_client import CollectorRegistry, generate_latest

    from pmta_snmp.exporter import PmtaCollector
    from pmta_snmp.poller import PollResult

    collector = PmtaCollector()
    collector.update(PollResult(snap, True, _EPOCH, _EPOCH, 1, 0, 0, None))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    generate_latest(registry)


def _epoch() -> Any:
    from datetime import UTC, datetime

    return datetime(2025, 1, 14, tzinfo=UTC)


_EPOCH = _epoch()


def check(case: Case) -> tuple[str, str | None]:
    """(outcome, problem): outcome is `model`, `refused envelope` or `refused page`; problem
    is None when the contract held."""
    _reached[0] = False
    warnings: list[str] = []
    try:
        result = _parse(case, warnings)
    except PmtaError as exc:
        outcome = "refused page" if _reached[0] or case.fmt == "csv" else "refused envelope"
        if case.endpoint == "/status.json" and not str(exc).startswith("/status.json: "):
            outcome = "refused envelope"
        return outcome, _one_line(str(exc), "PmtaError message")
    except Exception as exc:
        return "crash", f"{type(exc).__name__}: {exc} ({_where(exc)})"
    for w in warnings:
        problem = _one_line(w, "warning")
        if problem:
            return "model", problem
    problem = _sane(result)
    if problem:
        return "model", problem
    try:
        _outputs(result)
    except Exception as exc:
        return "model", f"serving the model raised {type(exc).__name__}: {exc} ({_where(exc)})"
    return "model", None


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}" if last else "?"


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


@dataclass
class Stats:
    """What a run saw."""

    examples: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    by_endpoint: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[Case, str]] = field(default_factory=list)
    failure_count: int = 0

    @property
    def reached(self) -> int:
        """Examples that got past the envelope into the endpoint's parser."""
        return self.outcomes["model"] + self.outcomes["refused page"]


HEALTH = list(HealthCheck)


def run_examples(count: int, seed: int, *, progress: Callable[[int, float], None] | None = None,
                 derandomize: bool = False) -> Stats:
    """Check `count` examples drawn by Hypothesis from `cases()` (seeded, no database)."""
    stats = Stats()
    step = max(1, count // 10)
    t0 = time.perf_counter()

    @hypothesis_seed(seed)
    @settings(max_examples=count, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=HEALTH, phases=(Phase.generate,))
    @given(cases())
    def examples(case: Case) -> None:
        outcome, problem = check(case)
        stats.examples += 1
        stats.outcomes[outcome] += 1
        stats.by_endpoint[case.endpoint] += 1
        if problem is not None:
            stats.failure_count += 1
            if len(stats.failures) < MAX_REPORTED:
                stats.failures.append((case, problem))
        if progress is not None and stats.examples % step == 0:
            progress(stats.examples, time.perf_counter() - t0)

    examples()
    stats.seconds = time.perf_counter() - t0
    return stats


def describe(stats: Stats, seed: int) -> str:
    """The summary printed by the command."""
    share = stats.reached / max(1, stats.examples)
    lines = [
        f"{stats.examples} examples (seed {seed}) in {stats.seconds:.1f} s: "
        f"{stats.examples / max(stats.seconds, 1e-9):,.0f}/s; {stats.failure_count} failures; "
        f"{share:.0%} reached the endpoint's parser",
        "  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.outcomes.items())),
        "  by endpoint: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.by_endpoint.items())),
    ]
    for case, problem in stats.failures:
        lines.append(f"FAILED: {problem}")
        lines.append(f"  input: {case!r}")
    return "\n".join(lines)


def run(report: Report, *, quick: bool = False) -> None:
    """As a benchmark row: examples/s, target no failure."""
    count = QUICK_COUNT if quick else BENCH_COUNT
    stats = run_examples(count, DEFAULT_SEED)
    report.add(Row(
        f"API parser fuzz, {stats.examples} examples (seed {DEFAULT_SEED}), "
        f"{stats.reached / max(1, stats.examples):.0%} past the envelope",
        rate(stats.examples / stats.seconds, "examples/s"), "", None, "0 failures",
        stats.failure_count == 0,
    ))
    for case, problem in stats.failures:
        report.note(f"API fuzz failure: {problem}; input {case!r}")
    if not quick:
        report.note(
            f"`python -m bench fuzz_api` checks {BENCH_COUNT} examples; `./run fuzz api` "
            f"(python -m bench.fuzz_api) checks {DEFAULT_COUNT} by default"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.fuzz_api`: exit 1 when any example broke the contract."""
    p = argparse.ArgumentParser(prog="python -m bench.fuzz_api", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=DEFAULT_COUNT,
                   help="examples (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help="Hypothesis seed (default %(default)s)")
    args = p.parse_args(argv)
    if args.count < 1:
        p.error("--count must be at least 1")

    def progress(done: int, seconds: float) -> None:
        print(f"  {done}/{args.count} examples, {done / seconds:,.0f}/s", file=sys.stderr,
              flush=True)

    stats = run_examples(args.count, args.seed, progress=progress)
    print(describe(stats, args.seed))
    return 1 if stats.failure_count or stats.examples < args.count else 0


if __name__ == "__main__":
    sys.exit(main())
