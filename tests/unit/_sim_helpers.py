"""Helpers for the simulator tests: start a simulator, fetch pages, read the wire formats.

They parse the wire output directly (defusedxml, json), never through pmta_snmp.api.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import defusedxml.ElementTree as SafeET
import httpx

from pmta_snmp.sim import Simulator

START = datetime(2025, 1, 14, 9, 0, tzinfo=timezone(timedelta(hours=1)))
API_KEY = "sim_test_key_0123456789_abcdefghij"
_DEFAULT_TLS = ssl.create_default_context()
ROW_TAGS = frozenset({"queue", "domain", "vmta", "event"})


@contextmanager
def running(**kwargs: Any) -> Iterator[Simulator]:
    """A started simulator with a frozen clock at START unless told otherwise."""
    kwargs.setdefault("speed", 0)
    kwargs.setdefault("start_time", START)
    sim = Simulator(**kwargs)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def client(sim: Simulator, **kwargs: Any) -> httpx.Client:
    """An httpx client on the simulator's URL."""
    kwargs.setdefault("timeout", 10)
    kwargs.setdefault("verify", _DEFAULT_TLS)  # one context for all: building one costs ~20 ms
    return httpx.Client(base_url=sim.url, **kwargs)


def _xml_node(elem: Any) -> Any:
    children = list(elem)
    if not children:
        return elem.text or ""
    out: dict[str, Any] = {}
    for child in children:
        value = _xml_node(child)
        # status/queue holds queue types, not rows: rows are the elements with a <name>.
        is_row = child.tag in ROW_TAGS and (child.tag == "event" or child.find("name") is not None)
        if is_row:
            out.setdefault(child.tag, []).append(value)
        else:
            out[child.tag] = value
    return out


def xml_data(body: bytes) -> Any:
    """Check the one-line `<rsp><data>…</data><succ/></rsp>` envelope; return `data`."""
    assert b"\n" not in body and not body.startswith(b"<?xml")
    assert body.startswith(b"<rsp><data>") and body.endswith(b"</data><succ/></rsp>")
    root = SafeET.fromstring(body)
    assert root.tag == "rsp" and root.find("succ") is not None
    data = root.find("data")
    return _xml_node(data) if list(data) else (data.text or "")


def json_data(body: bytes) -> Any:
    """Check the `{"data", "status": "success", "message"}` envelope; return `data`."""
    env = json.loads(body)
    assert env["status"] == "success"
    assert set(env) == {"data", "status", "message"}
    return env["data"]


def get_json(sim: Simulator, path: str) -> Any:
    """GET `path` with format=json and return the envelope's data."""
    sep = "&" if "?" in path else "?"
    with client(sim) as c:
        r = c.get(f"{path}{sep}format=json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return json_data(r.content)


def get_xml(sim: Simulator, path: str) -> Any:
    """GET `path` with format=xml and return the envelope's data as dicts/lists/text."""
    sep = "&" if "?" in path else "?"
    with client(sim) as c:
        r = c.get(f"{path}{sep}format=xml")
    assert r.status_code == 200, r.text
    return xml_data(r.content)


def command(
    sim: Simulator,
    text: str,
    fmt: str = "json",
    key: str | None = API_KEY,
    multipart: bool = False,
) -> httpx.Response:
    """POST /command with the given format, as a form (urlencoded or multipart)."""
    headers = {"X-API-Key": key} if key else {}
    with client(sim) as c:
        if multipart:
            files = {"command": (None, text), "format": (None, fmt)}
            return c.post("/command", files=files, headers=headers)
        return c.post("/command", data={"command": text, "format": fmt}, headers=headers)
