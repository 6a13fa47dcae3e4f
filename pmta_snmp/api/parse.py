"""PowerMTA API payloads (XML or JSON) -> the model.

One code path for both formats and for the sync and async clients: `unwrap` turns a body into a
plain tree of dicts, lists and strings (the JSON shape; XML elements become dict keys, repeated
elements lists), then the `parse_*` functions read that tree leniently (pmta-formats.md §1.9):
every element optional, unknown ones ignored, numbers possibly strings, booleans as
0/1/true/false/yes/no, rows found by element name anywhere under `data`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

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


# --- envelopes ------------------------------------------------------------------------------


def _element_to_node(elem: Element) -> Node:
    """An element as the JSON shape: leaves become strings, repeated children lists."""
    children = list(elem)
    text = (elem.text or "").strip()
    if not children and not elem.attrib:
        return text
    out: dict[str, Node] = dict(elem.attrib)
    if not children:
        if text:
            out["text"] = text
        return out
    repeated: set[str] = set()
    for child in children:
        value = _element_to_node(child)
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

    try:
        root = SafeET.fromstring(body)
    except SafeET.ParseError:
        try:  # no declaration and not UTF-8: PowerMTA's own files are Latin-1
            root = SafeET.fromstring(body.decode("latin-1"))
        except Exception as exc:
            raise PmtaMalformed(f"unparsable XML ({exc}): {excerpt(body)}") from None
    except Exception as exc:  # defusedxml refuses entities, DTDs and the like
        raise PmtaMalformed(f"refused XML ({type(exc).__name__}): {excerpt(body)}") from None
    if root.tag.lower() == "html":
        raise PmtaMalformed(
            f"got an HTML page instead of data (format not supported?): {excerpt(body)}"
        )
    if root.tag != "rsp":
        raise PmtaMalformed(f"XML root is <{root.tag}>, expected <rsp>: {excerpt(body)}")
    if root.find("succ") is None:
        # The error form is undocumented ([?] pmta-formats.md §1.3): report whatever text it has.
        detail = " ".join("".join(root.itertext()).split())[:120]
        raise PmtaMalformed(f"PowerMTA reported no success (<succ/> missing): {detail!r}")
    data = root.find("data")
    if data is None:
        return {}
    return _element_to_node(data)


def _unwrap_json(body: bytes) -> Node:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PmtaMalformed(f"unparsable JSON ({exc}): {excerpt(body)}") from None
    if not isinstance(doc, dict) or "data" not in doc or "status" not in doc:
        raise PmtaMalformed(f"JSON without the data/status envelope: {excerpt(body)}")
    if str(doc.get("status")).lower() != "success":
        message = str(doc.get("message") or doc.get("status"))[:160]
        raise PmtaMalformed(f"PowerMTA reported failure: {message}")
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
    """The `message` text of a JSON envelope ('' for XML or when absent)."""
    if body.lstrip()[:1] != b"{":
        return ""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    msg = doc.get("message") if isinstance(doc, dict) else None
    return msg if isinstance(msg, str) else ""


# --- lenient conversions --------------------------------------------------------------------


def to_int(value: Node, default: int = 0) -> int:
    """An integer from an int, float or numeric string; `default` otherwise."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        if not text:
            return default
        try:
            return int(text)
        except ValueError:
            try:
                return int(float(text))
            except ValueError:
                return default
    return default


def to_float(value: Node, default: float = 0.0) -> float:
    """A float from a number or numeric string; `default` otherwise."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().replace(",", ""))
        except ValueError:
            return default
    return default


def to_bool(value: Node, default: bool = False) -> bool:
    """A boolean from true/false, 1/0, yes/no (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "y", "on", "paused"):
            return True
        if text in ("0", "false", "no", "n", "off", ""):
            return False
    return default


def to_str(value: Node) -> str | None:
    """A stripped string, or None when absent or empty."""
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def to_time(value: Node) -> datetime | None:
    """A PowerMTA time (`YYYY-MM-DD HH:MM:SS`, local, no zone) or None."""
    text = to_str(value)
    if text is None:
        return None
    m = _TIME_RE.fullmatch(text)
    if m is not None and (m.group(6) is not None or text[10:11] != "T"):
        y, mo, d, h, mi, sec = m.groups()
        try:
            return datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(sec or 0))
        except ValueError:
            return None  # out of range: no format reads it either
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _get(node: Node, *path: str) -> Node:
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _first(node: Node, *keys: str) -> Node:
    if not isinstance(node, dict):
        return None
    for key in keys:
        if key in node:
            return node[key]
    return None


# --- /status -----------------------------------------------------------------------------------


def _counts(node: Node) -> Counts:
    return Counts(
        rcp=to_int(_first(node, "rcp", "rcpt")),
        msg=to_int(_first(node, "msg", "msgs")),
        kb=to_float(node.get("kb") if isinstance(node, dict) else None),
    )


def _window(node: Node) -> TrafficWindow:
    return TrafficWindow(
        inbound=_counts(_get(node, "in")),
        outbound=_counts(_get(node, "out")),
        bounce_processed=to_int(_get(node, "bounceProcessed")),
        feedback_loop_processed=to_int(_get(node, "feedbackLoopProcessed")),
    )


def _conn(node: Node) -> ConnCounts:
    return ConnCounts(
        cur=to_int(_get(node, "cur")), max=to_int(_get(node, "max")), top=to_int(_get(node, "top"))
    )


def parse_status(data: Node) -> Status:
    """`/status` (`pmta show status`): `data/status` plus the optional `data/mta` (5.x)."""
    if not isinstance(data, dict):
        raise PmtaMalformed(f"/status data is a {type(data).__name__}, expected an object")
    st = data.get("status") if isinstance(data.get("status"), dict) else None
    if st is None:
        if "traffic" in data or "queue" in data:
            st = data  # tolerate a tree without the status wrapper
        else:
            raise PmtaMalformed("/status answer has no status block")
    mta = data.get("mta") if isinstance(data.get("mta"), dict) else {}

    traffic_node = st.get("traffic") or {}
    traffic = Traffic(
        **{field: _window(_get(traffic_node, key)) for field, key in _WINDOW_KEYS.items()}
    )
    conn_node = st.get("conn") or {}
    conn = Connections(
        smtp_in=_conn(_get(conn_node, "smtpIn")), smtp_out=_conn(_get(conn_node, "smtpOut"))
    )
    # Queue types are found dynamically: older versions add e.g. gmImprinter.
    queue_types: list[QueueTypeCounts] = []
    queue_node = st.get("queue")
    if isinstance(queue_node, dict):
        for name, q in queue_node.items():
            if isinstance(q, dict):
                queue_types.append(
                    QueueTypeCounts(
                        name=name,
                        rcp=to_int(_first(q, "rcp", "rcpt")),
                        dom=to_int(q.get("dom")),
                        kb=to_float(q.get("kb")),
                    )
                )
    spool_node = st.get("spool") or {}
    files = _get(spool_node, "files") or {}
    spool = Spool(
        init_pct=to_int(_get(spool_node, "initPct"), 100),
        dirs=to_int(_get(spool_node, "dirs")),
        files_in_use=to_int(_get(files, "inUse")),
        files_recycled=to_int(_get(files, "recycled")),
        files_total=to_int(_get(files, "total")),
        total_rcp=to_int(_get(spool_node, "totalRcp")),
        max_rcp=to_int(_get(spool_node, "maxRcp")),
    )
    resolver_node = st.get("resolver")
    resolver = (
        Resolver(
            names_cached=to_int(_get(resolver_node, "namesCached")),
            queries_pending=to_int(_get(resolver_node, "queriesPending")),
            queries_active=to_int(_get(resolver_node, "queriesActive")),
        )
        if isinstance(resolver_node, dict)
        else None
    )
    product = _get(mta, "product") or {}
    runtime = Runtime(
        product=to_str(_get(product, "name")) or "PowerMTA",
        version=to_str(_get(product, "version")),
        build_date=to_str(_get(product, "buildDate")),
        revision=to_str(_get(product, "revision")),
        host_name=to_str(_get(mta, "fullHostName")),
        serial=to_str(_get(mta, "lak", "serial")),
        os_name=to_str(_get(mta, "os", "name")),
        time_now=to_time(st.get("timeNow")),
        startup_time=to_time(st.get("startupTime")),
        shutting_down=to_bool(st.get("shuttingDown")),
        status=to_str(st.get("status")) or "unknown",
    )
    return Status(
        traffic=traffic,
        conn=conn,
        queue_types=tuple(queue_types),
        spool=spool,
        resolver=resolver,
        runtime=runtime,
    )


# --- listing pages ----------------------------------------------------------------------------


def find_rows(data: Node, row: str) -> list[dict[str, Node]]:
    """Rows named `row` anywhere under `data` (XML repeated elements or a JSON list).

    The JSON list shape is undocumented ([?] pmta-formats.md §1.5): a list directly as `data`
    or a list under any key is accepted, as long as its items are objects.
    """
    found: list[dict[str, Node]] = []

    def visit(node: Node, depth: int) -> bool:
        if depth > 4:
            return False
        if isinstance(node, dict):
            if row in node:
                value = node[row]
                items = value if isinstance(value, list) else [value]
                found.extend(x for x in items if isinstance(x, dict))
                return True
            for key in (f"{row}s", "rows", "items"):
                if isinstance(node.get(key), list):
                    found.extend(x for x in node[key] if isinstance(x, dict))
                    return True
            return any(visit(v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        if isinstance(node, list):
            if node and all(isinstance(x, dict) and ("name" in x or row in x) for x in node):
                for x in node:
                    inner = x.get(row)
                    found.append(inner if isinstance(inner, dict) else x)
                return True
            return any(visit(v, depth + 1) for v in node)
        return False

    visit(data, 0)
    return found


def _mode(value: Node) -> QueueMode:
    text = (to_str(value) or "").lower()
    if text.startswith("backoff"):
        return QueueMode.BACKOFF
    if text.startswith("normal"):
        return QueueMode.NORMAL
    if not text:
        return QueueMode.NORMAL
    return QueueMode.UNKNOWN


def _events(value: Node) -> tuple[QueueEvent, ...]:
    items = value if isinstance(value, list) else [value] if value is not None else []
    events = []
    for item in items:
        if isinstance(item, dict):
            events.append(
                QueueEvent(
                    type=to_str(item.get("type")) or "",
                    time=to_str(item.get("time")) or "",
                    text=to_str(item.get("text")) or "",
                )
            )
        elif isinstance(item, str) and item.strip():
            events.append(QueueEvent(text=item.strip()))
    return tuple(events)


def _last_error(row: Mapping[str, Node]) -> str | None:
    # The element name of a domain's last error is undocumented ([?] pmta-formats.md §1.5).
    for key in ("lastError", "lastErr", "last_error", "error", "err"):
        text = to_str(row.get(key))
        if text:
            return text
    return None


class _Sizes(TypedDict):
    """The fields every listing row has besides its name."""

    rcp: int
    kb: float
    conn: int


def _sizes(row: Mapping[str, Node]) -> _Sizes:
    """Recipients, kilobytes and connections of a listing row."""
    return {
        "rcp": to_int(_first(row, "rcp", "rcpt")),
        "kb": to_float(row.get("kb")),
        "conn": to_int(row.get("conn")),
    }


def _named(data: Node, row: str) -> Iterator[tuple[str, dict[str, Node]]]:
    """(name, row) of the rows named `row` that have a name."""
    for r in find_rows(data, row):
        name = to_str(r.get("name"))
        if name:
            yield name, r


def parse_queue_row(row: Mapping[str, Node]) -> Queue | None:
    """One `<queue>` row, or None without a name."""
    name = to_str(row.get("name"))
    if not name:
        return None
    events = _events(row.get("event") if "event" in row else row.get("events"))
    retry = to_str(_first(row, "retryTime", "retry", "nextRetry"))
    # A real 4.0 capture lists events newest first, so the first text is the latest error.
    last_error = _last_error(row) or next((e.text for e in events if e.text), None)
    return Queue(
        name=name,
        **_sizes(row),
        paused=to_bool(row.get("paused")),
        mode=_mode(row.get("mode")),
        retry_time=retry,
        last_error=last_error,
        events=events,
    )


def parse_queues(data: Node) -> tuple[Queue, ...]:
    """`/queues` (top queues): rows named `queue`."""
    rows = (parse_queue_row(r) for r in find_rows(data, "queue"))
    return sorted_by_name(q for q in rows if q is not None)


def parse_domains(data: Node) -> tuple[Domain, ...]:
    """`/domains`: rows named `domain`."""
    return sorted_by_name(
        Domain(name=name, **_sizes(row), last_error=_last_error(row))
        for name, row in _named(data, "domain")
    )


def parse_vmtas(data: Node) -> tuple[Vmta, ...]:
    """`/vmtas`: rows named `vmta`."""
    return sorted_by_name(
        Vmta(name=name, **_sizes(row), domains=to_int(_first(row, "domains", "dom")))
        for name, row in _named(data, "vmta")
    )


def parse_queue_detail(data: Node) -> Queue | None:
    """`/queueDetail`: element names are undocumented ([?] §1.6); read it like a queue row."""
    rows = find_rows(data, "queue")
    if rows:
        return parse_queue_row(rows[0])
    return parse_queue_row(data) if isinstance(data, dict) else None


def parse_domain_detail(data: Node) -> Domain | None:
    """`/domainDetail`: read like a `/domains` row."""
    domains = parse_domains(data)
    if domains:
        return domains[0]
    if isinstance(data, dict) and to_str(data.get("name")):
        return parse_domains({"domain": data})[0]
    return None


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
        raise PmtaMalformed(f"license expiry {raw!r} is neither YYYY-MM-DD nor never") from None
    return License(expires=expires, fields=tuple(fields.items()))


def _find_key(node: Node, key: str, depth: int = 0) -> Node:
    if depth > 4:
        return None
    if isinstance(node, dict):
        if key in node:
            return node
        for v in node.values():
            hit = _find_key(v, key, depth + 1)
            if hit is not None:
                return hit
    if isinstance(node, list):
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
    if isinstance(holder, dict):
        fields = {str(k): str(v) for k, v in holder.items() if not isinstance(v, dict | list)}
        return license_from_fields(fields)
    for text in (data if isinstance(data, str) else "", message):
        if text and "expires" in text:
            return license_from_fields(parse_key_values(text))
    raise PmtaMalformed("`show license` answer has no expires field")


def parse_version(data: Node, message: str = "") -> str | None:
    """`show version` (`PowerMTA v5.0r1 (…)`) -> `5.0r1`."""
    texts = [data if isinstance(data, str) else "", message]
    holder = _find_key(data, "version")
    if isinstance(holder, dict):
        texts.insert(0, str(holder.get("version")))
    for text in texts:
        m = _VERSION_RE.search(text or "")
        if m:
            return m.group(1)
    return None


# --- the seed flavour (blog API; does NOT exist on real PowerMTA) ------------------------------


def parse_seed_status(body: bytes) -> Status:
    """`GET /status.json` of the blog API: flat `queue_depth`, `msgs_per_sec`.

    Invented by blog posts, served only by our simulator's seed flavour. Mapped onto the
    model: queue_depth -> smtp queue recipients, msgs_per_sec -> last-minute outbound messages.
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PmtaMalformed(f"unparsable JSON ({exc}): {excerpt(body)}") from None
    if not isinstance(doc, dict) or "queue_depth" not in doc:
        raise PmtaMalformed(f"/status.json without queue_depth: {excerpt(body)}")
    rate = to_float(doc.get("msgs_per_sec"))
    per_min = round(rate * 60)
    conn = to_int(_first(doc, "active_connections", "connections"))
    uptime = to_int(doc.get("uptime"), -1)
    now = datetime.now().replace(microsecond=0)
    start = None
    if uptime >= 0:
        start = now - timedelta(seconds=uptime)
    return Status(
        traffic=Traffic(last_min=TrafficWindow(outbound=Counts(msg=per_min, rcp=per_min))),
        conn=Connections(smtp_out=ConnCounts(cur=conn)),
        queue_types=(
            QueueTypeCounts(
                "smtp", rcp=to_int(doc.get("queue_depth")), dom=to_int(doc.get("domains"))
            ),
        ),
        runtime=Runtime(
            version=to_str(doc.get("version")), time_now=now, startup_time=start, status="running"
        ),
    )


def _csv_rows(body: bytes) -> Iterator[dict[str, str]]:
    import csv
    import io

    text = body.decode("utf-8", "replace")
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise PmtaMalformed(f"CSV without a header line: {excerpt(body)}")
    for row in reader:
        yield {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}


def _pick(row: Mapping[str, str], *names: str) -> str:
    for n in names:
        if row.get(n):
            return row[n]
    return ""


_SEED_NAME = ("name", "queue", "domain", "vmta")
_SEED_RCP = ("rcp", "rcpt", "recipients", "queued", "count")
_SEED_ERROR = ("last_error", "lasterror", "error")


def _seed_sizes(row: Mapping[str, str]) -> _Sizes:
    """Recipients, kilobytes and connections of a seed CSV row (columns by alias)."""
    return {
        "rcp": to_int(_pick(row, *_SEED_RCP)),
        "kb": to_float(_pick(row, "kb", "kbytes", "size_kb")),
        "conn": to_int(_pick(row, "conn", "connections")),
    }


def parse_seed_queues(body: bytes) -> tuple[Queue, ...]:
    """`/queue.csv` of the blog API (invented; columns guessed and matched by alias)."""
    out = []
    for row in _csv_rows(body):
        name = _pick(row, "queue", "name")
        if not name:
            dom, vm = _pick(row, "domain"), _pick(row, "vmta")
            name = f"{dom}/{vm or '{default}'}" if dom else ""
        if name:
            out.append(
                Queue(
                    name=name,
                    **_seed_sizes(row),
                    paused=to_bool(_pick(row, "paused")),
                    mode=_mode(_pick(row, "mode", "status")),
                    retry_time=_pick(row, "retry", "retrytime", "next_retry") or None,
                    last_error=_pick(row, *_SEED_ERROR) or None,
                )
            )
    return sorted_by_name(out)


def parse_seed_domains(body: bytes) -> tuple[Domain, ...]:
    """`/domain.csv` of the blog API (invented)."""
    return sorted_by_name(
        Domain(name=name, **_seed_sizes(row), last_error=_pick(row, *_SEED_ERROR) or None)
        for row in _csv_rows(body)
        if (name := _pick(row, *_SEED_NAME))
    )


def parse_seed_vmtas(body: bytes) -> tuple[Vmta, ...]:
    """`/vmta.csv` of the blog API (invented)."""
    return sorted_by_name(
        Vmta(name=name, **_seed_sizes(row), domains=to_int(_pick(row, "domains")))
        for row in _csv_rows(body)
        if (name := _pick(row, "vmta", "name"))
    )


def parse_version_text(text: str) -> str | None:
    """The version in a `show version` line or a product string."""
    m = _VERSION_RE.search(text)
    return m.group(1) if m else None
