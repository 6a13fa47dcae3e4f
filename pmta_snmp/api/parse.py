"""PowerMTA API payloads (XML or JSON) -> the model.

One code path for both formats and for the sync and async clients: `unwrap` turns a body into a
plain tree of dicts, lists and strings (the JSON shape; XML elements become dict keys, repeated
elements lists), then the `parse_*` functions read that tree (pmta-formats.md §1.9): unknown
elements ignored, numbers possibly strings (`1,000` too), booleans as 0/1/true/false/yes/no,
rows found by element name anywhere under `data`.

Absurd input is refused with a one-line `PmtaMalformed`, never another exception: nesting
deeper than `MAX_DEPTH` (checked before JSON is decoded and while XML is converted, so no
recursion can blow up), `NaN`/`Infinity` (not JSON), an envelope or CSV that does not parse.

Values follow one rule (issue 13): a REQUIRED value that is missing or unusable fails the page
with a `PmtaMalformed` naming the page and the field (a failed poll; plugins exit 3); an
OPTIONAL one is left out -- the model keeps its "not reported" value (None for texts and times,
no entry for a queue type, 0 or False for a field of a fixed block) -- and one line goes to
the caller's `warnings` list. Unusable means: of the wrong type (null, an object, a list, a
boolean where a number belongs), not a number, not finite, negative, a fraction where a count
belongs, or not below 2^64. Missing documented fields are warned about too; blocks that some
versions lack (`mta`, `resolver`, queue types besides `smtp`, undocumented row fields) are not.

Required values (everything else is optional):

* `/status`: the `status` block; `status.queue.smtp.rcp` (the queue depth); in
  `status.traffic.total`, `in` and `out` `rcp`, `msg`, `kb` and `bounceProcessed`,
  `feedbackLoopProcessed` (the Counter64 totals: a missing one would read as a counter reset).
* `/queues`, `/domains`, `/vmtas` and the detail pages: each row's `name` and `rcp` (a row that
  is not an object or has no name is left out and warned about).
* `show queues|domains|vmtas` via `/command`: the same per row; their `--json` shape is
  undocumented, so it is read like the pages and no other row field is warned about.
* `show license`: `expires`.
* seed `/status.json`: `queue_depth`; seed CSV pages: each row's name and recipients columns.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypedDict, TypeVar

from pmta_snmp.api.errors import PmtaMalformed, excerpt
from pmta_snmp.model import (
    ConnCounts,
    Connections,
    Counts,
    Domain,
    License,
    Queue,
    QueueEvent,
    QueueMode,
    QueueTypeCounts,
    Resolver,
    Runtime,
    Spool,
    Status,
    Traffic,
    TrafficWindow,
    Vmta,
    sorted_by_name,
)

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

# Import cost matters (a check plugin starts for every run): the XML parser (defusedxml,
# expat) is imported only for an XML answer and csv only for the seed flavour's pages.

Node = Any
"""A parsed payload: dict[str, Node] | list[Node] | str | int | float | bool | None."""

MAX_DEPTH: Final = 64
"""Deepest nesting accepted under the envelope; PowerMTA's trees are under 10 levels deep."""
MAX_COUNT: Final = 2**64 - 1
"""Largest count accepted (Counter64's range)."""
MAX_KB: Final = MAX_COUNT / 1024
"""Largest kilobyte figure accepted: its bytes still fit in 64 bits."""
MAX_PAGE_WARNINGS: Final = 10
"""Warnings kept per page; the rest are counted in one last line."""

_T = TypeVar("_T")
_MISSING: Final[Any] = object()
_WINDOW_KEYS = {
    "total": "total",
    "last_hr": "lastHr",
    "last_min": "lastMin",
    "top_per_hr": "topPerHr",
    "top_per_min": "topPerMin",
}
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
#: The zero-padded forms of _TIME_FORMATS, read without strptime (whose first call costs a
#: plugin ~4 ms: the _strptime module, locale data and its regexes).
_TIME_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)(?:[ T](\d\d):(\d\d)(?::(\d\d))?)?")
_VERSION_RE = re.compile(r"v?(\d+\.\d+(?:r\d+)?)")
_TRUE = frozenset(("1", "true", "yes", "y", "on", "paused"))
_FALSE = frozenset(("0", "false", "no", "n", "off", ""))
_RCP = ("rcp", "rcpt")
# `kbytes` and `connections`: the CLI's column words, in case its undocumented --json rows
# use them ([?] pmta-formats.md §2).
_KB = ("kb", "kbytes")
_CONN = ("conn", "connections")
_PLAIN_NAME = re.compile(r"[\w.@/{}-]{1,60}", re.ASCII)


# --- the depth of an answer -------------------------------------------------------------------

_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')


def json_too_deep(body: bytes, limit: int) -> bool:
    """True when the arrays and objects of a JSON text nest deeper than `limit`.

    Checked before decoding, without recursion and at C speed: escaped backslashes and quotes
    are dropped, then everything but quotes and brackets, then the strings (a bracket is in a
    string when an odd number of quotes precede it); each pass then removes the innermost `[]`
    and `{}` pairs (one level or more), so brackets left after `limit` passes nest deeper than
    `limit`. Unbalanced brackets stop the passes (the decoder then says what is wrong).
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Dropping adjacent quotes keeps every bracket's parity: most strings go at C speed.
    brackets = body.translate(None, _STRUCTURE).replace(b'""', b"")
    if b'"' in brackets:
        brackets = b"".join(brackets.split(b'"')[::2])
    for _ in range(limit):
        if not brackets:
            return False
        inner = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if len(inner) == len(brackets):
            return False
        brackets = inner
    return bool(brackets)


def _not_json(token: str) -> NoReturn:
    raise PmtaMalformed(f"answer is not JSON: {token} is no JSON number")


def load_json(body: bytes, what: str = "JSON") -> Node:
    """`json.loads` that only raises PmtaMalformed: too deep, NaN/Infinity, syntax, encoding."""
    if json_too_deep(body, MAX_DEPTH + 1):  # + 1: the envelope
        raise PmtaMalformed(f"{what} nested deeper than {MAX_DEPTH} levels: {excerpt(body)}")
    try:
        return json.loads(body, parse_constant=_not_json)
    except RecursionError:  # unbalanced and deep: the decoder's own guard
        raise PmtaMalformed(f"{what} nested too deep: {excerpt(body)}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, over-long integers
        reason = " ".join(str(exc).split())[:100]
        raise PmtaMalformed(f"unparsable {what} ({reason}): {excerpt(body)}") from None


# --- envelopes ------------------------------------------------------------------------------


def _element_to_node(elem: Element, depth: int = 0) -> Node:
    """An element as the JSON shape: leaves become strings, repeated children lists."""
    children = list(elem)
    text = (elem.text or "").strip()
    if not children and not elem.attrib:
        return text
    if depth >= MAX_DEPTH:
        raise PmtaMalformed(f"XML nested deeper than {MAX_DEPTH} levels under <data>")
    out: dict[str, Node] = dict(elem.attrib)
    if not children:
        if text:
            out["text"] = text
        return out
    repeated: set[str] = set()
    for child in children:
        value = _element_to_node(child, depth + 1)
        tag = child.tag
        if tag in repeated:
            out[tag].append(value)
        elif tag in out:
            out[tag] = [out[tag], value]
            repeated.add(tag)
        else:
            out[tag] = value
    return out


def _unwrap_xml(body: bytes) -> Node:
    from defusedxml import ElementTree as SafeET

    # expat builds the tree without recursion, however deep; the depth is checked while the
    # tree is converted (`_element_to_node`).
    try:
        root = SafeET.fromstring(body)
    except SafeET.ParseError:
        try:  # no declaration and not UTF-8: PowerMTA's own files are Latin-1
            root = SafeET.fromstring(body.decode("latin-1"))
        except Exception as exc:
            reason = " ".join(str(exc).split())[:100]
            raise PmtaMalformed(f"unparsable XML ({reason}): {excerpt(body)}") from None
    except Exception as exc:  # defusedxml refuses entities, DTDs and the like
        raise PmtaMalformed(f"refused XML ({type(exc).__name__}): {excerpt(body)}") from None
    if root.tag.lower() == "html":
        raise PmtaMalformed(
            f"got an HTML page instead of data (format not supported?): {excerpt(body)}"
        )
    if root.tag != "rsp":
        raise PmtaMalformed(f"XML root is <{root.tag[:40]}>, expected <rsp>: {excerpt(body)}")
    if root.find("succ") is None:
        # The error form is undocumented ([?] pmta-formats.md §1.3): report whatever text it has.
        detail = excerpt("".join(root.itertext())[:1000], 120)
        raise PmtaMalformed(f"PowerMTA reported no success (<succ/> missing): {detail}")
    data = root.find("data")
    if data is None:
        return {}
    return _element_to_node(data)


def _unwrap_json(body: bytes) -> Node:
    doc = load_json(body)
    if not isinstance(doc, dict) or "data" not in doc or "status" not in doc:
        raise PmtaMalformed(f"JSON without the data/status envelope: {excerpt(body)}")
    status = doc.get("status")
    if not isinstance(status, str) or status.lower() != "success":
        message = doc.get("message") or status
        text = message if isinstance(message, str) else _show(message)
        raise PmtaMalformed(f"PowerMTA reported failure: {excerpt(text, 160)}")
    return doc["data"]


def unwrap(body: bytes) -> Node:
    """Check the envelope of an XML or JSON answer and return its `data` as a plain tree.

    The format is sniffed from the first byte: `Content-Type` is unreliable (PowerMTA serves
    XML as text/html on some versions).
    """
    head = body.lstrip()[:1]
    if head == b"<":
        return _unwrap_xml(body)
    if head in (b"{", b"["):
        return _unwrap_json(body)
    raise PmtaMalformed(f"neither XML nor JSON: {excerpt(body)}")


def unwrap_message(body: bytes) -> str:
    """The `message` text of a JSON envelope ('' for XML, when absent or unreadable)."""
    if body.lstrip()[:1] != b"{":
        return ""
    try:
        doc = load_json(body)
    except PmtaMalformed:
        return ""
    msg = doc.get("message") if isinstance(doc, dict) else None
    return _clean(msg) if isinstance(msg, str) else ""


# --- values -----------------------------------------------------------------------------------


class _Unusable(Exception):
    """A value that cannot stand for what its field means; the text says why."""


def _show(value: Node) -> str:
    """A value as a message quotes it: short, on one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int) and value.bit_length() > 128:
        return f"a {value.bit_length()}-bit integer"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:36]}...{text[-1]}"


def _label(name: str) -> str:
    """A name from the answer as a message shows it."""
    return name if _PLAIN_NAME.fullmatch(name) else _show(name)


def _clean(text: str) -> str:
    """`text` without lone surrogates (JSON `\\ud800`), which no UTF-8 output can carry."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _whole(number: float, raw: Node) -> int:
    if not math.isfinite(number):
        raise _Unusable(f"is {_show(raw)}, not a finite number")
    if not number.is_integer():
        raise _Unusable(f"is {_show(raw)}, not a whole number")
    return int(number)


def _count(value: Node) -> int:
    """A count: a whole number 0 <= n < 2^64 (an int, a float without fraction or a text)."""
    if type(value) is int:
        n = value
    elif type(value) is str:
        text = value.strip().replace(",", "")
        if not text.isascii():
            raise _Unusable(f"is {_show(value)}, not a count")
        try:
            n = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise _Unusable(f"is {_show(value)}, not a count") from None
            n = _whole(number, value)
    elif type(value) is float:
        n = _whole(value, value)
    else:
        raise _Unusable(f"is {_show(value)}, not a count")
    if n < 0:
        raise _Unusable(f"is {_show(value)}, a negative count")
    if n > MAX_COUNT:
        raise _Unusable(f"is {_show(value)}, beyond 2^64")
    return n


def _amount(value: Node, limit: float) -> float:
    """A finite number 0 <= x <= `limit` (an int, a float or a text)."""
    if type(value) is float:
        number = value
    elif type(value) is int:
        number = float(value) if value.bit_length() <= 1024 else math.inf
    elif type(value) is str:
        text = value.strip().replace(",", "")
        try:
            if not text.isascii():
                raise ValueError(text)
            number = float(text)
        except ValueError:
            raise _Unusable(f"is {_show(value)}, not a number") from None
    else:
        raise _Unusable(f"is {_show(value)}, not a number")
    if not math.isfinite(number):
        raise _Unusable(f"is {_show(value)}, not a finite number")
    if number < 0:
        raise _Unusable(f"is {_show(value)}, a negative number")
    if number > limit:
        raise _Unusable(f"is {_show(value)}, too large")
    return number


def _kbytes(value: Node) -> float:
    """Kilobytes (a fraction allowed), at most `MAX_KB`."""
    return _amount(value, MAX_KB)


def _percent(value: Node) -> int:
    """A whole percentage 0..100."""
    n = _count(value)
    if n > 100:
        raise _Unusable(f"is {_show(value)}, not a percentage")
    return n


def _flag(value: Node) -> bool:
    """A boolean from true/false, 1/0, yes/no (any case)."""
    if type(value) is bool:
        return value
    if type(value) is int and value in (0, 1):
        return value == 1
    if type(value) is str:
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise _Unusable(f"is {_show(value)}, not a yes/no value")


def _text(value: Node) -> str | None:
    """A stripped text (a number as text too); None when null or empty."""
    if value is None:
        return None
    if type(value) is str:
        text = value.strip()
    elif type(value) is float or (type(value) is int and value.bit_length() <= 128):
        text = str(value)
    else:
        raise _Unusable(f"is {_show(value)}, not a text")
    return _clean(text) or None


def _time(value: Node) -> datetime | None:
    """A PowerMTA time (`YYYY-MM-DD HH:MM:SS`, local, no zone); None when empty."""
    text = _text(value)
    if text is None:
        return None
    moment = to_time(text)
    if moment is None:
        raise _Unusable(f"is {_show(value)}, not a time")
    return moment


def to_time(value: Node) -> datetime | None:
    """A PowerMTA time (`YYYY-MM-DD HH:MM:SS`, local, no zone) or None (checks/queue.py reads
    a queue's retry time with it)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    m = _TIME_RE.fullmatch(text)
    if m is not None and (m.group(6) is not None or text[10:11] != "T"):
        y, mo, d, h, mi, sec = m.groups()
        try:
            return datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(sec or 0))
        except ValueError:
            return None  # out of range: no format reads it either
    if len(text) > 40:
        return None
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _lenient_text(value: Node) -> str | None:
    """`_text` for fields whose element is a guess: anything unreadable is absent."""
    try:
        return _text(value)
    except _Unusable:
        return None


# --- reading one page -------------------------------------------------------------------------


class _Page:
    """Reads one page's tree by the rule of this module; warnings go to `sink`."""

    def __init__(self, endpoint: str, sink: list[str] | None) -> None:
        self.endpoint = endpoint
        self.sink = sink
        self.warned = 0

    def fail(self, path: str, why: str) -> NoReturn:
        """The page is unusable: `path` is a required value."""
        raise PmtaMalformed(f"{self.endpoint}: {path} {why}")

    def warn(self, text: str) -> None:
        """Note an optional value that was left out."""
        self.warned += 1
        if self.sink is not None and self.warned <= MAX_PAGE_WARNINGS:
            self.sink.append(f"{self.endpoint}: {text}")

    def done(self) -> None:
        """Count the warnings beyond `MAX_PAGE_WARNINGS` in one line."""
        extra = self.warned - MAX_PAGE_WARNINGS
        if self.sink is not None and extra > 0:
            self.sink.append(f"{self.endpoint}: {extra} more warnings not shown")

    def block(
        self,
        parent: dict[str, Node] | None,
        key: str,
        path: str,
        *,
        required: bool = False,
        documented: bool = True,
    ) -> dict[str, Node] | None:
        """The object under `key`; None (reported) when missing or not an object."""
        if parent is None:
            return None
        value = parent.get(key, _MISSING)
        if type(value) is dict:
            return value
        if value is _MISSING:
            if required:
                self.fail(path, "is missing")
            if documented:
                self.warn(f"{path} is missing")
            return None
        why = f"is {_show(value)}, not an object"
        if required:
            self.fail(path, why)
        self.warn(f"{path} {why} (left out)")
        return None

    def need(
        self, parent: dict[str, Node], keys: str | tuple[str, ...], path: str,
        conv: Callable[[Node], _T],
    ) -> _T:
        """A required value: missing or unusable fails the page."""
        value = _lookup(parent, keys)
        if value is _MISSING:
            self.fail(path, "is missing")
        try:
            return conv(value)
        except _Unusable as why:
            self.fail(path, str(why))

    def get(
        self,
        parent: dict[str, Node] | None,
        keys: str | tuple[str, ...],
        path: str,
        conv: Callable[[Node], _T],
        default: _T,
        *,
        documented: bool = True,
    ) -> _T:
        """An optional value: `default` (warned about) when missing or unusable."""
        if parent is None:
            return default
        value = _lookup(parent, keys)
        if value is _MISSING:
            if documented:
                self.warn(f"{path} is missing")
            return default
        try:
            return conv(value)
        except _Unusable as why:
            self.warn(f"{path} {why} (left out)")
            return default


def _lookup(parent: Mapping[str, Node], keys: str | tuple[str, ...]) -> Node:
    if isinstance(keys, str):
        return parent.get(keys, _MISSING)
    for key in keys:
        if key in parent:
            return parent[key]
    return _MISSING


# --- /status -----------------------------------------------------------------------------------


def _window(page: _Page, traffic: dict[str, Node] | None, key: str) -> TrafficWindow:
    """One traffic window; `total` holds the Counter64 totals and is required."""
    path = f"status.traffic.{key}"
    required = key == "total"
    node = page.block(traffic, key, path, required=required)
    if node is None:
        return TrafficWindow()

    def value(parent: dict[str, Node] | None, keys: str | tuple[str, ...], where: str,
              conv: Callable[[Node], _T], default: _T) -> _T:
        if required:
            assert parent is not None
            return page.need(parent, keys, where, conv)
        return page.get(parent, keys, where, conv, default)

    def counts(direction: str) -> Counts:
        where = f"{path}.{direction}"
        blk = page.block(node, direction, where, required=required)
        if blk is None:
            return Counts()
        return Counts(
            rcp=value(blk, _RCP, f"{where}.rcp", _count, 0),
            msg=value(blk, ("msg", "msgs"), f"{where}.msg", _count, 0),
            kb=value(blk, "kb", f"{where}.kb", _kbytes, 0.0),
        )

    return TrafficWindow(
        inbound=counts("in"),
        outbound=counts("out"),
        bounce_processed=value(node, "bounceProcessed", f"{path}.bounceProcessed", _count, 0),
        feedback_loop_processed=value(
            node, "feedbackLoopProcessed", f"{path}.feedbackLoopProcessed", _count, 0
        ),
    )


def _conn(page: _Page, conn: dict[str, Node] | None, key: str) -> ConnCounts:
    path = f"status.conn.{key}"
    node = page.block(conn, key, path)
    return ConnCounts(
        cur=page.get(node, "cur", f"{path}.cur", _count, 0),
        max=page.get(node, "max", f"{path}.max", _count, 0),
        top=page.get(node, "top", f"{path}.top", _count, 0),
    )


def _queue_types(page: _Page, st: dict[str, Node]) -> tuple[QueueTypeCounts, ...]:
    """`status/queue/*`, found dynamically (older versions add e.g. gmImprinter); `smtp`'s
    recipients are the queue depth and required, a type with unusable recipients is left out."""
    queue = page.block(st, "queue", "status.queue", required=True)
    assert queue is not None
    page.block(queue, "smtp", "status.queue.smtp", required=True)
    out: list[QueueTypeCounts] = []
    for name, node in queue.items():
        path = f"status.queue.{_label(name)}"
        if name == "smtp":
            rcp = page.need(node, _RCP, f"{path}.rcp", _count)
        elif type(node) is not dict:
            page.warn(f"{path} is {_show(node)}, not an object (left out)")
            continue
        else:
            got = page.get(node, _RCP, f"{path}.rcp", _count, None)
            if got is None:
                continue
            rcp = got
        out.append(
            QueueTypeCounts(
                name=_clean(name),
                rcp=rcp,
                dom=page.get(node, "dom", f"{path}.dom", _count, 0),
                kb=page.get(node, "kb", f"{path}.kb", _kbytes, 0.0),
            )
        )
    return tuple(out)


def _runtime(page: _Page, data: dict[str, Node], st: dict[str, Node]) -> Runtime:
    # `mta` and everything in it are 5.x only ([I] absent in 4.x): never warned as missing.
    mta = page.block(data, "mta", "mta", documented=False)
    product = page.block(mta, "product", "mta.product", documented=False)
    lak = page.block(mta, "lak", "mta.lak", documented=False)
    os_ = page.block(mta, "os", "mta.os", documented=False)

    def text(parent: dict[str, Node] | None, key: str, path: str) -> str | None:
        return page.get(parent, key, path, _text, None, documented=False)

    return Runtime(
        product=text(product, "name", "mta.product.name") or "PowerMTA",
        version=text(product, "version", "mta.product.version"),
        build_date=text(product, "buildDate", "mta.product.buildDate"),
        revision=text(product, "revision", "mta.product.revision"),
        host_name=text(mta, "fullHostName", "mta.fullHostName"),
        serial=text(lak, "serial", "mta.lak.serial"),
        os_name=text(os_, "name", "mta.os.name"),
        time_now=page.get(st, "timeNow", "status.timeNow", _time, None),
        startup_time=page.get(st, "startupTime", "status.startupTime", _time, None),
        shutting_down=page.get(st, "shuttingDown", "status.shuttingDown", _flag, False),
        status=page.get(st, "status", "status.status", _text, None) or "unknown",
    )


def parse_status(data: Node, *, warnings: list[str] | None = None) -> Status:
    """`/status` (`pmta show status`): `data/status` plus the optional `data/mta` (5.x).

    Raises PmtaMalformed when a required value is missing or unusable; optional values that
    are get a line in `warnings`.
    """
    page = _Page("/status", warnings)
    if type(data) is not dict:
        page.fail("data", f"is {_show(data)}, not an object")
    st = data.get("status")
    if type(st) is not dict:
        if "traffic" in data or "queue" in data:
            st = data  # tolerate a tree without the status wrapper
        else:
            st = page.block(data, "status", "status", required=True)
            assert st is not None
    traffic_node = page.block(st, "traffic", "status.traffic", required=True)
    traffic = Traffic(
        **{field: _window(page, traffic_node, key) for field, key in _WINDOW_KEYS.items()}
    )
    conn_node = page.block(st, "conn", "status.conn")
    conn = Connections(
        smtp_in=_conn(page, conn_node, "smtpIn"), smtp_out=_conn(page, conn_node, "smtpOut")
    )
    queue_types = _queue_types(page, st)
    spool_node = page.block(st, "spool", "status.spool")
    files = page.block(spool_node, "files", "status.spool.files")

    def spool_count(parent: dict[str, Node] | None, key: str, path: str) -> int:
        return page.get(parent, key, path, _count, 0)

    spool = Spool(
        init_pct=page.get(spool_node, "initPct", "status.spool.initPct", _percent, 100),
        dirs=spool_count(spool_node, "dirs", "status.spool.dirs"),
        files_in_use=spool_count(files, "inUse", "status.spool.files.inUse"),
        files_recycled=spool_count(files, "recycled", "status.spool.files.recycled"),
        files_total=spool_count(files, "total", "status.spool.files.total"),
        total_rcp=spool_count(spool_node, "totalRcp", "status.spool.totalRcp"),
        max_rcp=spool_count(spool_node, "maxRcp", "status.spool.maxRcp"),
    )
    resolver_node = page.block(st, "resolver", "status.resolver", documented=False)
    resolver = None
    if resolver_node is not None:
        resolver = Resolver(
            names_cached=spool_count(resolver_node, "namesCached", "status.resolver.namesCached"),
            queries_pending=spool_count(
                resolver_node, "queriesPending", "status.resolver.queriesPending"
            ),
            queries_active=spool_count(
                resolver_node, "queriesActive", "status.resolver.queriesActive"
            ),
        )
    status = Status(
        traffic=traffic,
        conn=conn,
        queue_types=queue_types,
        spool=spool,
        resolver=resolver,
        runtime=_runtime(page, data, st),
    )
    page.done()
    return status


# --- listing pages ----------------------------------------------------------------------------


def _find_rows(data: Node, row: str) -> tuple[list[dict[str, Node]], int]:
    """(rows named `row` anywhere under `data`, how many such items were not objects)."""
    found: list[dict[str, Node]] = []
    skipped = 0

    def take(items: list[Node]) -> None:
        nonlocal skipped
        for x in items:
            if type(x) is dict:
                found.append(x)
            else:
                skipped += 1

    def visit(node: Node, depth: int) -> bool:
        if depth > 4:
            return False
        if type(node) is dict:
            if row in node:
                value = node[row]
                take(value if type(value) is list else [value])
                return True
            for key in (f"{row}s", "rows", "items"):
                if type(node.get(key)) is list:
                    take(node[key])
                    return True
            return any(visit(v, depth + 1) for v in node.values() if type(v) in (dict, list))
        if type(node) is list:
            if node and all(type(x) is dict and ("name" in x or row in x) for x in node):
                for x in node:
                    inner = x.get(row)
                    found.append(inner if type(inner) is dict else x)
                return True
            return any(visit(v, depth + 1) for v in node)
        return False

    visit(data, 0)
    return found, skipped


def find_rows(data: Node, row: str) -> list[dict[str, Node]]:
    """Rows named `row` anywhere under `data` (XML repeated elements or a JSON list).

    The JSON list shape is undocumented ([?] pmta-formats.md §1.5): a list directly as `data`
    or a list under any key is accepted, as long as its items are objects.
    """
    return _find_rows(data, row)[0]


class _Rows:
    """Reads the rows of one listing page: a required value that is missing or unusable fails
    the page naming the row; optional ones are counted per field, one warning each."""

    def __init__(self, page: _Page, row: str) -> None:
        self.page = page
        self.row = row
        self.count = 0
        self.left_out: dict[tuple[str, str], tuple[int, str]] = {}

    def named(self, rows: list[dict[str, Node]], skipped: int = 0) -> Iterator[
        tuple[str, dict[str, Node]]
    ]:
        """(name, row) of the rows that have a usable name; the others are counted."""
        nameless = 0
        for r in rows:
            # `name` on the pages; a row of a list command's --json may carry it under its
            # own kind (`"domain": "gmail.com"`) instead ([?] undocumented).
            raw = r.get("name")
            if raw is None and type(r.get(self.row)) is str:
                raw = r[self.row]
            name = _lenient_text(raw)
            if name is None:
                nameless += 1
                continue
            self.count += 1
            yield name, r
        if skipped:
            self.page.warn(f"{skipped} {self.row} rows are not objects (left out)")
        if nameless:
            self.page.warn(f"{nameless} {self.row} rows have no name (left out)")

    def need(self, name: str, row: Mapping[str, Node], keys: str | tuple[str, ...],
             conv: Callable[[Node], _T]) -> _T:
        """A required value of the row called `name`."""
        value = _lookup(row, keys)
        try:
            if value is not _MISSING:
                return conv(value)
        except _Unusable as why:
            field = keys if isinstance(keys, str) else keys[0]
            self.page.fail(f"{self.row} {_show(name)} {field}", str(why))
        field = keys if isinstance(keys, str) else keys[0]
        self.page.fail(f"{self.row} {_show(name)}", f"has no {field}")

    def get(self, name: str, row: Mapping[str, Node], keys: str | tuple[str, ...],
            conv: Callable[[Node], _T], default: _T, *, documented: bool = True) -> _T:
        """An optional value of the row called `name`: `default` when missing or unusable."""
        value = _lookup(row, keys)
        if value is _MISSING:
            if documented:
                self._note(keys, "missing", name)
            return default
        try:
            return conv(value)
        except _Unusable as why:
            self._note(keys, "unusable", f"{_show(name)}: {why}")
            return default

    def _note(self, keys: str | tuple[str, ...], kind: str, example: str) -> None:
        key = (keys if isinstance(keys, str) else keys[0], kind)
        n, first = self.left_out.get(key, (0, example))
        self.left_out[key] = (n + 1, first)

    def done(self) -> None:
        """One warning per field and kind."""
        for (field, kind), (n, first) in self.left_out.items():
            if kind == "missing":
                self.page.warn(f"{field} is missing in {n} of {self.count} {self.row} rows")
            else:
                self.page.warn(
                    f"{field} is unusable in {n} of {self.count} {self.row} rows "
                    f"(first {first}; left out)"
                )
        self.page.done()


def _mode(value: Node) -> QueueMode:
    text = (_text(value) or "").lower()
    if text.startswith("backoff"):
        return QueueMode.BACKOFF
    if text.startswith("normal") or not text:
        return QueueMode.NORMAL
    return QueueMode.UNKNOWN


def _events(value: Node) -> tuple[QueueEvent, ...]:
    items = value if type(value) is list else [value] if value is not None else []
    events = []
    for item in items:
        if type(item) is dict:
            events.append(
                QueueEvent(
                    type=_lenient_text(item.get("type")) or "",
                    time=_lenient_text(item.get("time")) or "",
                    text=_lenient_text(item.get("text")) or "",
                )
            )
        elif type(item) is str and item.strip():
            events.append(QueueEvent(text=_clean(item.strip())))
    return tuple(events)


def _last_error(row: Mapping[str, Node]) -> str | None:
    # The element name of a domain's last error is undocumented ([?] pmta-formats.md §1.5).
    for key in ("lastError", "lastErr", "last_error", "error", "err"):
        text = _lenient_text(row.get(key))
        if text:
            return text
    return None


class _Sizes(TypedDict):
    """The fields every listing row has besides its name."""

    rcp: int
    kb: float
    conn: int


def _sizes(rows: _Rows, name: str, row: Mapping[str, Node], *, documented: bool = True) -> _Sizes:
    """Recipients (required), kilobytes and connections of a listing row."""
    return {
        "rcp": rows.need(name, row, _RCP, _count),
        "kb": rows.get(name, row, _KB, _kbytes, 0.0, documented=documented),
        "conn": rows.get(name, row, _CONN, _count, 0, documented=documented),
    }


def _queue(rows: _Rows, name: str, row: Mapping[str, Node], documented: bool = True) -> Queue:
    events = _events(row.get("event") if "event" in row else row.get("events"))
    retry_node = _lookup(row, ("retryTime", "retry", "nextRetry"))
    retry = None if retry_node is _MISSING else _lenient_text(retry_node)
    # A real 4.0 capture lists events newest first, so the first text is the latest error.
    last_error = _last_error(row) or next((e.text for e in events if e.text), None)
    return Queue(
        name=name,
        **_sizes(rows, name, row, documented=documented),
        paused=rows.get(name, row, "paused", _flag, False, documented=False),
        mode=rows.get(name, row, "mode", _mode, QueueMode.UNKNOWN, documented=False)
        if "mode" in row
        else QueueMode.NORMAL,
        retry_time=retry,
        last_error=last_error,
        events=events,
    )


def _listing(
    data: Node, endpoint: str, row: str, warnings: list[str] | None
) -> tuple[_Rows, list[dict[str, Node]], int]:
    """The rows of a listing page. No rows is `{}`, `[]` or an empty `<data/>` (""); `null`
    is read as no rows too (the JSON shape of an empty page is [?]), with a warning."""
    page = _Page(endpoint, warnings)
    if data is None:
        page.warn("data is null (read as no rows)")
    elif type(data) not in (dict, list, str) or (type(data) is str and data):
        page.fail("data", f"is {_show(data)}, not rows")
    found, skipped = _find_rows(data, row)
    return _Rows(page, row), found, skipped


def parse_queues(data: Node, *, warnings: list[str] | None = None) -> tuple[Queue, ...]:
    """`/queues` (top queues): rows named `queue`."""
    return _parse_queue_rows(data, "/queues", warnings)


_Listed = TypeVar("_Listed", Queue, Domain, Vmta)


def _parse_rows(
    data: Node, endpoint: str, row: str, warnings: list[str] | None,
    build: Callable[[_Rows, str, Mapping[str, Node]], _Listed],
) -> tuple[_Listed, ...]:
    """The rows named `row` of a listing page, each built by `build`, sorted by name."""
    rows, found, skipped = _listing(data, endpoint, row, warnings)
    out = sorted_by_name(build(rows, name, r) for name, r in rows.named(found, skipped))
    rows.done()
    return out


def _parse_queue_rows(
    data: Node, endpoint: str, warnings: list[str] | None, documented: bool = True
) -> tuple[Queue, ...]:
    return _parse_rows(data, endpoint, "queue", warnings,
                       lambda rows, name, r: _queue(rows, name, r, documented))


def parse_domains(data: Node, *, warnings: list[str] | None = None) -> tuple[Domain, ...]:
    """`/domains`: rows named `domain`."""
    return _parse_domain_rows(data, "/domains", warnings)


def _parse_domain_rows(
    data: Node, endpoint: str, warnings: list[str] | None, documented: bool = True
) -> tuple[Domain, ...]:
    return _parse_rows(
        data, endpoint, "domain", warnings,
        lambda rows, name, r: Domain(
            name=name, **_sizes(rows, name, r, documented=documented), last_error=_last_error(r)
        ),
    )


def parse_vmtas(data: Node, *, warnings: list[str] | None = None) -> tuple[Vmta, ...]:
    """`/vmtas`: rows named `vmta` (`kb`, `conn` and `domains` are [I]: not warned missing)."""
    return _parse_vmta_rows(data, "/vmtas", warnings)


def _parse_vmta_rows(data: Node, endpoint: str, warnings: list[str] | None) -> tuple[Vmta, ...]:
    return _parse_rows(
        data, endpoint, "vmta", warnings,
        lambda rows, name, r: Vmta(
            name=name,
            **_sizes(rows, name, r, documented=False),
            domains=rows.get(name, r, ("domains", "dom"), _count, 0, documented=False),
        ),
    )


def parse_queue_detail(data: Node, *, warnings: list[str] | None = None) -> Queue | None:
    """`/queueDetail`: element names are undocumented ([?] §1.6); read it like a queue row."""
    if type(data) is dict and not find_rows(data, "queue") and "name" in data:
        data = {"queue": data}
    queues = _parse_queue_rows(data, "/queueDetail", warnings)
    return queues[0] if queues else None


def parse_domain_detail(data: Node, *, warnings: list[str] | None = None) -> Domain | None:
    """`/domainDetail`: read like a `/domains` row."""
    if type(data) is dict and not find_rows(data, "domain") and "name" in data:
        data = {"domain": data}
    domains = _parse_domain_rows(data, "/domainDetail", warnings)
    return domains[0] if domains else None


# --- /command: show queues, show domains, show vmtas --------------------------------------------

# The footers of the CLI's list commands (pmta-formats.md §2), in the text output that a
# `format=json` answer carries in `message`: `20 of 2000 domains shown.`,
# `20 of 31 matching queues.`, `5 of 5 virtual MTAs.`
_FOOTERS: Final = {
    "queue": re.compile(r"^\s*([\d,]+) of ([\d,]+) matching queues?\b", re.M | re.I),
    "domain": re.compile(r"^\s*([\d,]+) of ([\d,]+) domains? shown\b", re.M | re.I),
    "vmta": re.compile(r"^\s*([\d,]+) of ([\d,]+) virtual MTAs?\b", re.M | re.I),
}
LIST_COMMANDS: Final = {"queue": "show queues", "domain": "show domains", "vmta": "show vmtas"}
"""The CLI list command of each row kind."""


def list_footer(kind: str, text: str) -> tuple[int, int] | None:
    """(rows shown, rows PowerMTA has) from the footer of a list command's text output, or
    None when there is none (XML answers carry no text)."""
    found = _FOOTERS[kind].findall(text)
    if not found:
        return None
    shown, total = found[-1]  # the footer is the last such line
    try:
        return _count(shown), _count(total)
    except _Unusable:
        return None


def _command_rows(
    kind: str,
    read: Callable[[Node, str, list[str] | None], tuple[_Listed, ...]],
    data: Node,
    message: str,
    warnings: list[str] | None,
) -> tuple[tuple[_Listed, ...], tuple[int, int] | None]:
    """The rows of `show queues|domains|vmtas --maxitems=N` via `/command`, and its footer.

    The `--json` object of these commands is undocumented ([?] pmta-formats.md §1.7, §2): its
    rows are looked for the way the pages' are (`domain` elements, or a list of objects
    under any key), with the CLI's column words (`rcpt`, `kbytes`) accepted too. A footer
    that shows rows where none were found means the shape was not understood: that fails
    (the caller then reads the page instead), rather than reading as an empty list.
    """
    endpoint = LIST_COMMANDS[kind]
    text = data if type(data) is str else message  # json-text/xml-text: the text is `data`
    footer = list_footer(kind, text) if text else None
    rows = read({} if type(data) is str else data, endpoint, warnings)
    if not rows and footer is not None and footer[0] > 0:
        raise PmtaMalformed(
            f"{endpoint}: the answer holds no {kind} rows that could be read, though its "
            f"footer says {footer[0]} are shown (an unknown --json shape?)"
        )
    return rows, footer


def _command_queue_rows(data: Node, endpoint: str, warnings: list[str] | None) -> tuple[
    Queue, ...
]:
    return _parse_queue_rows(data, endpoint, warnings, documented=False)


def _command_domain_rows(data: Node, endpoint: str, warnings: list[str] | None) -> tuple[
    Domain, ...
]:
    return _parse_domain_rows(data, endpoint, warnings, documented=False)


def parse_command_queues(
    data: Node, message: str = "", *, warnings: list[str] | None = None
) -> tuple[tuple[Queue, ...], tuple[int, int] | None]:
    """`show queues --maxitems=N` via `/command`: (rows, footer `(shown, total)` or None)."""
    return _command_rows("queue", _command_queue_rows, data, message, warnings)


def parse_command_domains(
    data: Node, message: str = "", *, warnings: list[str] | None = None
) -> tuple[tuple[Domain, ...], tuple[int, int] | None]:
    """`show domains --maxitems=N` via `/command`: (rows, footer or None)."""
    return _command_rows("domain", _command_domain_rows, data, message, warnings)


def parse_command_vmtas(
    data: Node, message: str = "", *, warnings: list[str] | None = None
) -> tuple[tuple[Vmta, ...], tuple[int, int] | None]:
    """`show vmtas --maxitems=N` via `/command`: (rows, footer or None)."""
    return _command_rows("vmta", _parse_vmta_rows, data, message, warnings)


# --- /command: show license, show version -----------------------------------------------------


def parse_key_values(text: str) -> dict[str, str]:
    """Right-aligned `key: value` lines (`show license`, license files), split at the first `:`."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key and " " not in key:
            out[key] = value.strip()
    return out


def license_from_fields(fields: Mapping[str, str]) -> License:
    """A License from parsed fields; `expires` is `YYYY-MM-DD` or `never`."""
    raw = (fields.get("expires") or "").strip()
    if not raw:
        raise PmtaMalformed("license information without an `expires` field")
    if raw.lower() == "never":
        return License(never=True, fields=tuple(fields.items()))
    try:
        expires = date.fromisoformat(raw[:10])
    except ValueError:
        raise PmtaMalformed(
            f"license expiry {_show(raw)} is neither YYYY-MM-DD nor never"
        ) from None
    return License(expires=expires, fields=tuple(fields.items()))


def _find_key(node: Node, key: str, depth: int = 0) -> Node:
    if depth > 4:
        return None
    if type(node) is dict:
        if key in node:
            return node
        for v in node.values():
            hit = _find_key(v, key, depth + 1)
            if hit is not None:
                return hit
    if type(node) is list:
        for v in node:
            hit = _find_key(v, key, depth + 1)
            if hit is not None:
                return hit
    return None


def parse_license(data: Node, message: str = "") -> License:
    """`show license` via `/command`: a structured object if one carries `expires`, else text.

    The `--json` object of `show license` is undocumented, so the text form (in `message`, or
    `data` itself for json-text) is the fallback.
    """
    holder = _find_key(data, "expires")
    if type(holder) is dict:
        fields: dict[str, str] = {}
        for k, v in holder.items():
            text = _lenient_text(v)
            if text is not None or v == "":
                fields[_clean(str(k))] = text or ""
        return license_from_fields(fields)
    for text in (data if type(data) is str else "", message):
        if text and "expires" in text:
            return license_from_fields(parse_key_values(_clean(text)))
    raise PmtaMalformed("`show license` answer has no expires field")


def parse_version(data: Node, message: str = "") -> str | None:
    """`show version` (`PowerMTA v5.0r1 (…)`) -> `5.0r1`."""
    texts = [data if type(data) is str else "", message]
    holder = _find_key(data, "version")
    if type(holder) is dict:
        texts.insert(0, _lenient_text(holder.get("version")) or "")
    for text in texts:
        m = _VERSION_RE.search(text[:10_000])
        if m:
            return m.group(1)
    return None


def parse_version_text(text: str) -> str | None:
    """The version in a `show version` line or a product string."""
    m = _VERSION_RE.search(text)
    return m.group(1) if m else None


# --- the seed flavour (blog API; does NOT exist on real PowerMTA) ------------------------------


def parse_seed_status(body: bytes, *, warnings: list[str] | None = None) -> Status:
    """`GET /status.json` of the blog API: flat `queue_depth`, `msgs_per_sec`.

    Invented by blog posts, served only by our simulator's seed flavour. Mapped onto the
    model: queue_depth -> smtp queue recipients, msgs_per_sec -> last-minute outbound messages.
    """
    page = _Page("/status.json", warnings)
    doc = load_json(body)
    if type(doc) is not dict or "queue_depth" not in doc:
        raise PmtaMalformed(f"/status.json without queue_depth: {excerpt(body)}")
    depth = page.need(doc, "queue_depth", "queue_depth", _count)
    rate = page.get(doc, "msgs_per_sec", "msgs_per_sec", _per_second, 0.0)
    per_min = round(rate * 60)
    conn = page.get(doc, ("active_connections", "connections"), "active_connections",
                    _count, 0, documented=False)
    uptime = page.get(doc, "uptime", "uptime", _count, None, documented=False)
    now = datetime.now().replace(microsecond=0)
    start = None
    if uptime is not None and uptime < 100 * 365 * 86400:
        start = now - timedelta(seconds=uptime)
    status = Status(
        traffic=Traffic(last_min=TrafficWindow(outbound=Counts(msg=per_min, rcp=per_min))),
        conn=Connections(smtp_out=ConnCounts(cur=conn)),
        queue_types=(
            QueueTypeCounts(
                "smtp",
                rcp=depth,
                dom=page.get(doc, "domains", "domains", _count, 0, documented=False),
            ),
        ),
        runtime=Runtime(
            version=page.get(doc, "version", "version", _text, None, documented=False),
            time_now=now,
            startup_time=start,
            status="running",
        ),
    )
    page.done()
    return status


def _per_second(value: Node) -> float:
    """A rate per second whose per-minute figure is still a count."""
    return _amount(value, MAX_COUNT / 60)


def _csv_rows(body: bytes, endpoint: str) -> list[dict[str, str]]:
    import csv
    import io

    text = body.decode("utf-8", "replace")
    try:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise PmtaMalformed(f"{endpoint}: CSV without a header line: {excerpt(body)}")
        return [
            {k.strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(k, str)}
            for row in reader
        ]
    except csv.Error as exc:
        raise PmtaMalformed(f"{endpoint}: unreadable CSV ({exc})") from None


def _pick(row: Mapping[str, str], *names: str) -> str:
    for n in names:
        if row.get(n):
            return row[n]
    return ""


_SEED_NAME = ("name", "queue", "domain", "vmta")
_SEED_RCP = ("rcp", "rcpt", "recipients", "queued", "count")
_SEED_ERROR = ("last_error", "lasterror", "error")


def _seed_rows(
    body: bytes, endpoint: str, row: str, names: tuple[str, ...], warnings: list[str] | None
) -> tuple[_Rows, list[dict[str, str]]]:
    """The CSV rows of a seed page; the header must have a name and a recipients column."""
    found = _csv_rows(body, endpoint)
    page = _Page(endpoint, warnings)
    header = set().union(*(r.keys() for r in found[:1])) if found else set()
    if found and not header & set(_SEED_RCP):
        page.fail("header", f"has no recipients column ({', '.join(_SEED_RCP)})")
    if found and not header & set(names):
        page.fail("header", f"has no name column ({', '.join(names)})")
    return _Rows(page, row), found


def _seed_sizes(rows: _Rows, name: str, row: Mapping[str, str]) -> _Sizes:
    """Recipients (required), kilobytes and connections of a seed CSV row (columns by alias)."""
    return {
        "rcp": rows.need(name, {"rcp": _pick(row, *_SEED_RCP)}, "rcp", _count),
        "kb": rows.get(name, {"kb": _pick(row, "kb", "kbytes", "size_kb")}, "kb", _kbytes, 0.0,
                       documented=False),
        "conn": rows.get(name, {"conn": _pick(row, "conn", "connections")}, "conn", _count, 0,
                         documented=False),
    }


def _seed_named(
    rows: _Rows, found: list[dict[str, str]], name_of: Callable[[dict[str, str]], str]
) -> Iterator[tuple[str, dict[str, str]]]:
    return rows.named([{**r, "name": name_of(r)} for r in found])


def _seed_queue_name(row: Mapping[str, str]) -> str:
    name = _pick(row, "queue", "name")
    if not name:
        dom, vm = _pick(row, "domain"), _pick(row, "vmta")
        name = f"{dom}/{vm or '{default}'}" if dom else ""
    return name


def parse_seed_queues(body: bytes, *, warnings: list[str] | None = None) -> tuple[Queue, ...]:
    """`/queue.csv` of the blog API (invented; columns guessed and matched by alias)."""
    rows, found = _seed_rows(body, "/queue.csv", "queue", ("queue", "name", "domain"), warnings)
    out = sorted_by_name(
        Queue(
            name=name,
            **_seed_sizes(rows, name, row),
            paused=rows.get(name, {"paused": _pick(row, "paused")}, "paused", _flag, False,
                            documented=False),
            mode=_mode(_pick(row, "mode", "status")),
            retry_time=_pick(row, "retry", "retry_time", "retrytime", "next_retry") or None,
            last_error=_pick(row, *_SEED_ERROR) or None,
        )
        for name, row in _seed_named(rows, found, _seed_queue_name)
    )
    rows.done()
    return out


def parse_seed_domains(body: bytes, *, warnings: list[str] | None = None) -> tuple[Domain, ...]:
    """`/domain.csv` of the blog API (invented)."""
    rows, found = _seed_rows(body, "/domain.csv", "domain", _SEED_NAME, warnings)
    out = sorted_by_name(
        Domain(name=name, **_seed_sizes(rows, name, row),
               last_error=_pick(row, *_SEED_ERROR) or None)
        for name, row in _seed_named(rows, found, lambda r: _pick(r, *_SEED_NAME))
    )
    rows.done()
    return out


def parse_seed_vmtas(body: bytes, *, warnings: list[str] | None = None) -> tuple[Vmta, ...]:
    """`/vmta.csv` of the blog API (invented)."""
    rows, found = _seed_rows(body, "/vmta.csv", "vmta", ("vmta", "name"), warnings)
    out = sorted_by_name(
        Vmta(name=name, **_seed_sizes(rows, name, row),
             domains=rows.get(name, {"domains": _pick(row, "domains")}, "domains", _count, 0,
                              documented=False))
        for name, row in _seed_named(rows, found, lambda r: _pick(r, "vmta", "name"))
    )
    rows.done()
    return out
