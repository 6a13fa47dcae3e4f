"""Wire renderers: the simulated state as PowerMTA's XML, JSON, HTML and CLI text.

Pages are built once as a plain tree (`Node`: dicts, lists of row dicts, scalars) and rendered
by one XML and one JSON writer, so both formats always carry the same values. The layout
follows /work/shared/pmta-formats.md §1; choices on its [?] points are commented where made.
"""

from __future__ import annotations

import csv
import io
import json
from html import escape as html_escape
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from pmta_snmp.sim.state import (
    BOUNCE_PROC,
    FBL_PROC,
    IN_KB10,
    IN_MSG,
    IN_RCP,
    OUT_KB10,
    OUT_MSG,
    OUT_RCP,
    QueueState,
    Row,
    SimState,
)

Node = dict[str, Any]
"""A page tree: values are Node, list[Node] (repeated rows), str, int, float (kB), bool."""

# ----------------------------------------------------------------------------------- envelopes

_ONE_LINE = {"\n": "&#10;", "\r": "&#13;"}
"""Line breaks in text become character references so the envelope stays on one line."""


def _xml_text(value: Any) -> str:
    if isinstance(value, bool):  # shuttingDown: 0/1 in XML
        return "1" if value else "0"
    if isinstance(value, float):  # kB and pct: one decimal
        return f"{value:.1f}"
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return xml_escape(str(value), _ONE_LINE)


def _xml(node: Node, out: list[str]) -> None:
    for key, value in node.items():
        for item in value if isinstance(value, list) else (value,):
            if isinstance(item, dict):
                out.append(f"<{key}>")
                _xml(item, out)
                out.append(f"</{key}>")
            else:
                out.append(f"<{key}>{_xml_text(item)}</{key}>")


def xml_body(data: Node | str) -> bytes:
    """`<rsp><data>…</data><succ/></rsp>` on one line, without an XML declaration (UG §5.3)."""
    out = ["<rsp><data>"]
    if isinstance(data, str):
        out.append(xml_escape(data, _ONE_LINE))
    else:
        _xml(data, out)
    out.append("</data><succ/></rsp>")
    return "".join(out).encode("utf-8")


def json_body(data: Node | str, message: str = "") -> bytes:
    """`{"data": …, "status": "success", "message": ""}`; numbers stay JSON numbers."""
    env = {"data": data, "status": "success", "message": message}
    return json.dumps(env, ensure_ascii=False).encode("utf-8")


# [?] PowerMTA's error envelope is unknown (formats §1.3). The simulator answers errors with an
# envelope that has no <succ/> (XML) and "status": "error" (JSON), which the client's rule
# ("success means <succ/> or status == success") treats as a failure.
def xml_error(message: str) -> bytes:
    """The simulator's guess at an XML error envelope: no `<succ/>`."""
    return f"<rsp><error>{xml_escape(message)}</error></rsp>".encode()


def json_error(message: str) -> bytes:
    """The simulator's guess at a JSON error envelope."""
    env = {"data": None, "status": "error", "message": message}
    return json.dumps(env, ensure_ascii=False).encode("utf-8")


def _html(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        out.append("<table>")
        for key, item in value.items():
            for one in item if isinstance(item, list) else (item,):
                out.append(f"<tr><th>{html_escape(key)}</th><td>")
                _html(one, out)
                out.append("</td></tr>")
        out.append("</table>")
    else:
        out.append(html_escape(_xml_text(value) if not isinstance(value, str) else value))


def html_page(title: str, data: Node | str) -> bytes:
    """The HTML page a path returns without `format=` (layout invented; PowerMTA's differs)."""
    out = [
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">',
        f"<title>PowerMTA - {html_escape(title)}</title></head><body>",
        f"<h1>{html_escape(title)}</h1>",
    ]
    if isinstance(data, str):
        out.append(f"<pre>{html_escape(data)}</pre>")
    else:
        _html(data, out)
    out.append("</body></html>\n")
    return "".join(out).encode("utf-8")


# --------------------------------------------------------------------------------------- pages


def _kb(kb10: int) -> float:
    return kb10 / 10


def _window(s: list[int]) -> Node:
    return {
        "out": {"rcp": s[OUT_RCP], "msg": s[OUT_MSG], "kb": _kb(s[OUT_KB10])},
        "in": {"rcp": s[IN_RCP], "msg": s[IN_MSG], "kb": _kb(s[IN_KB10])},
        "bounceProcessed": s[BOUNCE_PROC],
        "feedbackLoopProcessed": s[FBL_PROC],
    }


def status_data(st: SimState, *, web_protocol: str | None = None) -> Node:
    """The `/status` tree (formats §1.4). `web_protocol` adds `mta/webUI` (web endpoint only)."""
    data: Node = {}
    if st.profile == "5.0":  # [I] 4.x has no `mta` block
        p = st.product
        mta: Node = {
            "product": {
                "name": "PowerMTA",
                "version": p.version,
                "buildDate": p.build_date,
                "revision": p.revision,
                "bits": p.bits,
            },
            "lak": {"serial": p.serial, "instances": 1},
            "os": {"name": p.os_name, "version": p.os_version, "build": p.os_build},
            "cpu": {"type": p.cpu_type, "count": p.cpu_count},
            "ram": {"real": p.ram_kib},
            "fullHostName": p.host,
            "userString": "",
            "hostId": p.host_id,
        }
        if web_protocol:
            mta["webUI"] = {"protocol": web_protocol}
        data["mta"] = mta
    win = st.windows()
    traffic: Node = {name: _window(s) for name, s in win.items()}
    count = win["lastMin"][IN_MSG]
    # [I] perf values: milliseconds, made up but stable.
    traffic["perf"] = {
        "lastMin": {"in": {"count": count, "mailFromTime": 2, "dataTime": 9, "totalTime": 14}}
    }
    cur, mx, top = st.conn_out()
    sp = st.spool()
    data["status"] = {
        "timeNow": st.fmt(st.now),
        "startupTime": st.fmt(st.startup_epoch),
        "shuttingDown": False,
        "traffic": traffic,
        "conn": {
            "smtpIn": {"cur": st.conn_in, "max": 500, "top": st.top_conn_in},
            "smtpOut": {"cur": cur, "max": mx, "top": top},
        },
        "resolver": {
            "namesCached": st.names_cached,
            "queriesPending": st.queries_pending,
            "queriesActive": st.queries_active,
        },
        "queue": {
            name: {"rcp": rcp, "dom": dom, "kb": _kb(kb10)}
            for name, rcp, dom, kb10 in st.queue_types()
        },
        "spool": {
            "initPct": sp["initPct"],
            "dirs": sp["dirs"],
            "files": {"inUse": sp["inUse"], "recycled": sp["recycled"], "total": sp["total"]},
            "totalRcp": sp["totalRcp"],
            "maxRcp": sp["maxRcp"],
        },
        "status": "running",
    }
    return data


def queue_row(q: QueueState) -> Node:
    """A `<queue>` row in the order of a real 4.0 `--dom show topqueues` capture."""
    return {
        "name": q.name,
        "rcp": q.rcp,
        "kb": _kb(q.kb10),
        "conn": q.conn,
        "event": [{"type": e.type, "time": e.time, "text": e.text} for e in q.events],
        "paused": "yes" if q.paused else "no",  # [I]
        "mode": "backoff" if q.backoff else "normal",  # [I]
        "retryTime": q.retry_str,  # [D] full timestamp, present in normal mode too
    }


def _limit(rows: tuple[Any, ...] | list[Any], max_items: int | None) -> list[Any]:
    return list(rows if max_items is None else rows[:max_items])


# [?] The JSON list shape of the listing pages is unknown: the simulator puts the rows in a list
# under the row's XML name, e.g. {"data": {"title": "...", "queue": [{...}, ...]}}.
def queues_data(st: SimState, pattern: str | None = None, max_items: int | None = None) -> Node:
    """`/queues`: a `title` then `queue` rows, most recipients first."""
    if pattern:
        names = {q.name for q in st.match(pattern)}
        rows = [q for q in st.aggregates().queues_by_rcp if q.name in names]
    else:
        rows = list(st.aggregates().queues_by_rcp)
    shown = _limit(rows, max_items)
    return {
        "title": f"Top {len(shown)} queues by number of recipients",
        "queue": [queue_row(q) for q in shown],
    }


def domain_row(r: Row) -> Node:
    """A `<domain>` row. The last-error element name `lastError` is a guess ([?])."""
    return {
        "name": r.name,
        "rcp": r.rcp,
        "kb": _kb(r.kb10),
        "conn": r.conn,
        "lastError": r.last_error,
    }


def domains_data(st: SimState, max_items: int | None = None) -> Node:
    """`/domains`: per-domain sums over the queues, most recipients first."""
    return {"domain": [domain_row(r) for r in _limit(st.aggregates().domains, max_items)]}


def vmtas_data(st: SimState, max_items: int | None = None) -> Node:
    """`/vmtas`: per-VirtualMTA sums; `domains`, `pct` (share of recipients) are [I]."""
    agg = st.aggregates()
    total = agg.rcp or 1
    return {
        "vmta": [
            {
                "name": r.name,
                "rcp": r.rcp,
                "domains": r.domains,
                "kb": _kb(r.kb10),
                "conn": r.conn,
                "pct": round(100 * r.rcp / total, 1),
            }
            for r in _limit(agg.vmtas, max_items)
        ]
    }


def queue_detail_data(st: SimState, name: str) -> Node | None:
    """`/queueDetail`: [I] one `queue` element shaped like a topqueues row."""
    found = st.match(name) if "*" not in name else []
    return {"queue": queue_row(found[0])} if found else None


def domain_detail_data(st: SimState, name: str) -> Node | None:
    """`/domainDetail`: [I] one `domain` row with that domain's queues nested."""
    row = next((r for r in st.aggregates().domains if r.name.lower() == name.lower()), None)
    if row is None:
        return None
    node = domain_row(row)
    node["queue"] = [queue_row(q) for q in st.match(f"{row.name}/*")]
    return {"domain": node}


# ------------------------------------------------------------------------------------ CLI text


def show_status_text(st: SimState) -> str:
    """`show status` in a fixed-width layout ([I] close to, not byte-equal with, PowerMTA's)."""
    win = st.windows()
    p = st.product
    lines = [
        f"PowerMTA v{p.version} status on {p.host} on {st.fmt(st.now)}",
        "",
        "Traffic      ------------inbound------------   ------------outbound-----------",
        "                 rcpts       msgs      kbytes       rcpts       msgs      kbytes",
    ]
    for label, key in (
        ("Total", "total"),
        ("Last Hour", "lastHr"),
        ("Top/Hour", "topPerHr"),
        ("Last Min.", "lastMin"),
        ("Top/Min.", "topPerMin"),
    ):
        s = win[key]
        lines.append(
            f"{label:<10}{s[IN_RCP]:>10} {s[IN_MSG]:>10} {s[IN_KB10] / 10:>11.1f}"
            f"  {s[OUT_RCP]:>10} {s[OUT_MSG]:>10} {s[OUT_KB10] / 10:>11.1f}"
        )
    cur, mx, top = st.conn_out()
    qt = st.queue_types()
    other = sum(x[1] for x in qt[1:])
    sp = st.spool()
    up = int(st.now - st.startup_epoch)
    days, rest = divmod(up, 86400)
    uptime = f"{days} {rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    lines += [
        "",
        "Connections   active      top  maximum      Domain Names",
        f"Inbound     {st.conn_in:>8} {st.top_conn_in:>8} {500:>8}      "
        f"cached  {st.names_cached:>8}",
        f"Outbound    {cur:>8} {top:>8} {mx:>8}      pending {st.queries_pending:>8}",
        "",
        "Queues          rcpts  domains      kbytes      Spool      rcpts      files",
        f"SMTP       {qt[0][1]:>10} {qt[0][2]:>8} {qt[0][3] / 10:>11.1f}      "
        f"in use {sp['totalRcp']:>10} {sp['inUse']:>10}",
        f"Other      {other:>10}                           Init. complete",
        "",
        f"Status running      Started {st.fmt(st.startup_epoch)}      Uptime {uptime}",
    ]
    return "\n".join(lines) + "\n"


def show_queues_text(st: SimState, pattern: str | None, max_items: int = 20) -> str:
    """`show queues`: header, ruler, rows, `N of M matching queues.` (formats §2)."""
    data = queues_data(st, pattern)
    rows: list[Node] = data["queue"]
    out = [
        f"{'queue':<40} {'#rcpt':>7} {'kbytes':>9} {'conn':>4} st {'retry':<8} last error",
        f"{'-' * 40} {'-' * 7} {'-' * 9} {'-' * 4} -- {'-' * 8} {'-' * 30}",
    ]
    for r in rows[:max_items]:
        state = "P" if r["paused"] == "yes" else ("B" if r["mode"] == "backoff" else "")
        last = r["event"][0]["text"] if r["event"] else ""
        retry = r["retryTime"][11:]
        out.append(
            f"{r['name']:<40} {r['rcp']:>7} {r['kb']:>9.1f} {r['conn']:>4} {state:<2} "
            f"{retry:<8} {last}"
        )
    out.append(f"{min(len(rows), max_items)} of {len(rows)} matching queues.")
    return "\n".join(out) + "\n"


def show_domains_text(st: SimState, max_items: int = 20) -> str:
    """`show domains`: header, rows with a truncated last error, `N of M domains shown.`"""
    rows = st.aggregates().domains
    out = [f"{'domain':<40} --#rcpt ---kbytes conn last error"]
    for r in rows[:max_items]:
        err = r.last_error if len(r.last_error) <= 20 else r.last_error[:17] + "..."
        out.append(f"{r.name:<40} {r.rcp:>7} {r.kb10 / 10:>9.1f} {r.conn:>4} {err}")
    out.append(f"{min(len(rows), max_items)} of {len(rows)} domains shown.")
    return "\n".join(out) + "\n"


def show_vmtas_text(st: SimState, max_items: int = 20) -> str:
    """`show vmtas`: header, ruler, rows, a blank line, `N of M virtual MTAs.`"""
    rows: list[Node] = vmtas_data(st)["vmta"]
    out = [
        f"{'name':<20} {'domains':>7} {'#rcpt':>9} {'% total':>7} {'kbytes':>11} {'conn':>5}",
        f"{'-' * 20} {'-' * 7} {'-' * 9} {'-' * 7} {'-' * 11} {'-' * 5}",
    ]
    for r in rows[:max_items]:
        out.append(
            f"{r['name']:<20} {r['domains']:>7} {r['rcp']:>9} {r['pct']:>7.1f} "
            f"{r['kb']:>11.1f} {r['conn']:>5}"
        )
    out += ["", f"{min(len(rows), max_items)} of {len(rows)} virtual MTAs."]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------- seed flavour
# NOT POWERMTA: /status.json, /queue.csv, /domain.csv and /vmta.csv were invented by blog posts
# (formats §5). A real PowerMTA has no such endpoints and no CSV over HTTP; the simulator serves
# them only with seed_flavor=True so the project's optional "seed" client mode can be tested.


def seed_status_json(st: SimState) -> bytes:
    """Invented `/status.json`: flat keys (`queue_depth`, `msgs_per_sec`, …)."""
    agg = st.aggregates()
    last_min = st.windows()["lastMin"]
    body = {
        "queue_depth": agg.rcp,
        "msgs_per_sec": round(last_min[OUT_MSG] / 60, 2),
        "active_connections": st.conn_out()[0],
        "domains": agg.dom,
        "vmtas": len(agg.vmtas),
        "uptime": int(st.now - st.startup_epoch),
        "version": st.product.version,
        "status": "running",
        "time": st.fmt(st.now),
    }
    return json.dumps(body).encode()


def _csv(header: list[str], rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def seed_queue_csv(st: SimState, domain: str | None) -> bytes:
    """Invented `/queue.csv?domain=`: one row per queue (all queues without `domain`)."""
    queues = st.match(f"{domain}/*") if domain else list(st.aggregates().queues_by_rcp)
    rows: list[list[Any]] = [
        [
            q.name,
            q.domain.name,
            q.vmta.name,
            q.rcp,
            f"{q.kb10 / 10:.1f}",
            q.conn,
            "yes" if q.paused else "no",
            "backoff" if q.backoff else "normal",
            q.retry_str,
            q.events[0].text if q.events else "",
        ]
        for q in queues
    ]
    return _csv(
        [
            "queue",
            "domain",
            "vmta",
            "rcp",
            "kb",
            "conn",
            "paused",
            "mode",
            "retry_time",
            "last_error",
        ],
        rows,
    )


def seed_domain_csv(st: SimState) -> bytes:
    """Invented `/domain.csv`."""
    rows: list[list[Any]] = [
        [r.name, r.rcp, f"{r.kb10 / 10:.1f}", r.conn, r.last_error] for r in st.aggregates().domains
    ]
    return _csv(["domain", "rcp", "kb", "conn", "last_error"], rows)


def seed_vmta_csv(st: SimState) -> bytes:
    """Invented `/vmta.csv`."""
    rows: list[list[Any]] = [
        [r.name, r.rcp, r.domains, f"{r.kb10 / 10:.1f}", r.conn] for r in st.aggregates().vmtas
    ]
    return _csv(["vmta", "rcp", "domains", "kb", "conn"], rows)
