"""Malformed values through a whole poll (issue 13 §3): the client's snapshot carries the
parser's warnings, a required value that goes bad is a failed poll, the SNMP Counter64 totals
never go backwards and their discontinuity time stays put, the exporter logs and counts the
warnings and serves byte counts as whole bytes.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pmta_snmp.api import AsyncPmtaClient, ClientConfig, PmtaClient, PmtaMalformed
from pmta_snmp.exporter import PmtaCollector
from pmta_snmp.mib.layout import OBJECTS as LAY_OBJECTS
from pmta_snmp.mib.layout import Kind, layout
from pmta_snmp.model import snapshot_to_dict
from pmta_snmp.poller import Poller, PollResult
from pmta_snmp.service import SnmpView
from tests.unit.test_api_parse import QUEUE_ROWS, json_env, status_tree

LAY = layout()


def whole_status() -> dict[str, Any]:
    """`/status` of a PowerMTA whose pages list every domain it has (one), so that no list
    lacks rows: the warnings here are the parser's alone."""
    tree = status_tree()
    tree["status"]["queue"]["smtp"]["dom"] = 1
    return tree


TREES: dict[str, Callable[[], Any]] = {
    "/status": whole_status,
    "/queues": lambda: {"queue": copy.deepcopy(QUEUE_ROWS)},
    "/domains": lambda: {"domain": [{"name": "gmail.com", "rcp": 1200, "kb": 3.5, "conn": 1}]},
    "/vmtas": lambda: {"vmta": [{"name": "vmta-a", "rcp": 1200}]},
}


class Pages:
    """The four pages as JSON; `edit(path, tree)` changes a page's tree for the next polls."""

    def __init__(self) -> None:
        self.trees = {path: make() for path, make in TREES.items()}

    def handler(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=json_env(self.trees[request.url.path]))


def total_out(tree: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = tree["status"]["traffic"]["total"]["out"]
    return out


def test_snapshot_carries_the_parsers_warnings_and_poll_json_shows_them() -> None:
    pages = Pages()
    pages.trees["/status"]["status"]["conn"]["smtpOut"]["cur"] = "lots"
    pages.trees["/domains"]["domain"][0]["kb"] = []
    cfg = ClientConfig(url="http://pmta.test:8080", api_format="json")
    with PmtaClient(cfg, transport=httpx.MockTransport(pages.handler)) as c:
        snap = c.snapshot()
    assert snap.warnings == (
        "/domains: kb is unusable in 1 of 1 domain rows (first 'gmail.com': is a list, "
        "not a number; left out)",
        "/status: status.conn.smtpOut.cur is 'lots', not a count (left out)",
    )
    assert snapshot_to_dict(snap)["warnings"] == list(snap.warnings)


def test_a_bad_required_value_fails_the_whole_snapshot() -> None:
    pages = Pages()
    total_out(pages.trees["/status"])["rcp"] = None
    cfg = ClientConfig(url="http://pmta.test:8080", api_format="json")
    with (
        PmtaClient(cfg, transport=httpx.MockTransport(pages.handler)) as c,
        pytest.raises(PmtaMalformed, match=r"^/status: status\.traffic\.total\.out\.rcp is null"),
    ):
        c.snapshot()


def _poll(poller: Poller, client: AsyncPmtaClient) -> PollResult:
    return asyncio.run(poller.poll_once(client))


@pytest.mark.parametrize(
    "spoil",
    [
        lambda t: total_out(t).update(rcp=None),
        lambda t: total_out(t).update(rcp="lots"),
        lambda t: total_out(t).pop("msg"),
        lambda t: total_out(t).update(kb=-1),
        lambda t: t["status"]["traffic"].update(total=[]),
        lambda t: t["status"].update(startupTime="garbage"),
    ],
    ids=["null", "text", "missing", "negative", "list", "startup-garbage"],
)
def test_a_bad_poll_is_never_a_counter_reset(spoil: Callable[[dict[str, Any]], Any]) -> None:
    """Good, bad, good: the Counter64 total and pmtaTrafficDiscontinuityTime stay put."""
    pages = Pages()
    view = SnmpView()
    cfg = ClientConfig(url="http://pmta.test:8080", api_format="json")
    poller = Poller(cfg, interval=60, on_result=view.update)
    totals = [obj.name for obj in LAY_OBJECTS
              if obj.syntax == "Counter64" and obj.kind is Kind.SCALAR
              and obj.name.startswith("pmtaTotal")]
    assert len(totals) == 8

    async def three_polls() -> list[tuple[list[Any], Any]]:
        seen = []
        async with AsyncPmtaClient(cfg, transport=httpx.MockTransport(pages.handler)) as client:
            for step in ("good", "bad", "good"):
                pages.trees["/status"] = status_tree()
                if step == "bad":
                    spoil(pages.trees["/status"])
                await poller.poll_once(client)
                tree = view.current()
                values = [tree.get(LAY.instance(name)) for name in totals]
                seen.append(([v.value if v else None for v in values],
                             view.health.counter_discontinuity))
        return seen

    seen = asyncio.run(three_polls())
    assert seen[0][0] == seen[1][0] == seen[2][0]
    assert None not in seen[0][0] and 10_000 in seen[0][0]
    # When the totals last started afresh, to the microsecond: only the first poll.
    assert seen[0][1] is not None and seen[0][1] == seen[1][1] == seen[2][1]


def _collector_text(collector: PmtaCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _result(pages: Pages) -> PollResult:
    cfg = ClientConfig(url="http://pmta.test:8080", api_format="json")
    with PmtaClient(cfg, transport=httpx.MockTransport(pages.handler)) as c:
        snap = c.snapshot()
    return PollResult(snap, True, snap.taken_at, snap.taken_at, 1, 0, 0, None)  # type: ignore[arg-type]


def test_exporter_counts_and_logs_warnings_once(caplog: pytest.LogCaptureFixture) -> None:
    pages = Pages()
    collector = PmtaCollector()
    collector.update(_result(pages))
    assert _samples(_collector_text(collector))[("pmta_poll_warnings", ())] == 0
    pages.trees["/status"]["status"]["spool"]["dirs"] = "many"
    with caplog.at_level(logging.WARNING, logger="pmta_snmp.exporter"):
        collector.update(_result(pages))
        collector.update(_result(pages))
    assert _samples(_collector_text(collector))[("pmta_poll_warnings", ())] == 1
    logged = [r.getMessage() for r in caplog.records]
    assert logged == [
        "PowerMTA's answer has 1 warning(s): /status: status.spool.dirs is 'many', "
        "not a count (left out)"
    ]


def test_exporter_serves_whole_bytes() -> None:
    pages = Pages()
    total_out(pages.trees["/status"])["kb"] = 216528.6
    pages.trees["/status"]["status"]["queue"]["smtp"]["kb"] = 99182.4
    collector = PmtaCollector()
    collector.update(_result(pages))
    samples = _samples(_collector_text(collector))
    out = samples[("pmta_traffic_bytes_total", (("direction", "out"),))]
    assert out == 221_725_286  # 216528.6 KiB, not 221725286.4
    assert samples[("pmta_queued_bytes", (("type", "smtp"),))] == round(99182.4 * 1024)
    byte_values = [v for (name, _), v in samples.items() if "bytes" in name]
    assert byte_values and all(v == int(v) for v in byte_values)


def test_a_refused_show_license_is_a_counted_and_logged_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: pmta_license_days_left just disappeared; now the refusal is counted and said."""
    pages = Pages()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/command":
            return httpx.Response(403, text="Forbidden")
        return pages.handler(request)

    cfg = ClientConfig(url="http://pmta.test:8080", api_format="json", api_key="k" * 32)
    with PmtaClient(cfg, transport=httpx.MockTransport(handler)) as c:
        snap = c.snapshot(with_license=True)
    # The key is refused for the list commands too: they are a warning of their own.
    assert snap.license is None and len(snap.warnings) == 2
    assert snap.warnings[0].startswith("/command: lists read from the pages instead")
    assert snap.warnings[1].startswith("license: PowerMTA refused /command (HTTP 403)")
    collector = PmtaCollector()
    with caplog.at_level(logging.WARNING, logger="pmta_snmp.exporter"):
        collector.update(PollResult(snap, True, snap.taken_at, snap.taken_at, 1, 0, 0, None))  # type: ignore[arg-type]
    samples = _samples(_collector_text(collector))
    assert samples[("pmta_poll_warnings", ())] == 2
    assert ("pmta_license_days_left", ()) not in samples
    assert "license: PowerMTA refused /command" in caplog.text


def test_the_agents_log_warnings_when_they_change(caplog: pytest.LogCaptureFixture) -> None:
    pages = Pages()
    view = SnmpView()
    with caplog.at_level(logging.INFO, logger="pmta_snmp.service"):
        view.update(_result(pages))
        pages.trees["/status"]["status"]["conn"]["smtpIn"]["max"] = "lots"
        view.update(_result(pages))
        view.update(_result(pages))
        pages.trees["/status"] = whole_status()
        view.update(_result(pages))
    said = [r.getMessage() for r in caplog.records if "warning" in r.getMessage()]
    assert said == [
        "PowerMTA's answer has 1 warning(s): /status: status.conn.smtpIn.max is 'lots', "
        "not a count (left out)",
        "PowerMTA's answer has no warnings any more",
    ]


def test_a_license_that_was_refused_is_asked_again_soon_not_an_hour_later() -> None:
    """`show license` refused (a key PowerMTA did not take yet): pmtaLicense* had no instance
    for a whole license interval (an hour) after the key was fixed. A fetch that gave nothing
    is tried again after `license_retry`; one that answered waits the interval."""
    from pmta_snmp.poller import license_asked_at

    pages = Pages()
    commands: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/command":
            commands.append(request.content.decode())
            if len(commands) == 1:
                return httpx.Response(403, content=b"forbidden")
            body = {"data": {"license": {"expires": "2030-01-02", "serial": "1"}},
                    "status": "success", "message": ""}
            return httpx.Response(200, json=body)
        return pages.handler(request)

    cfg = ClientConfig(url="http://pmta.test:8080", api_format="json", api_key="k",
                       max_list_items=0)
    poller = Poller(cfg, interval=60, license_interval=3600)
    poller.license_retry = 0.0  # due at the next poll (the default is 300 s)

    async def polls() -> list[object]:
        async with AsyncPmtaClient(cfg, transport=httpx.MockTransport(handler)) as client:
            return [(await poller.poll_once(client)).snapshot.license  # type: ignore[union-attr]
                    for _ in range(3)]

    licenses = asyncio.run(polls())
    assert licenses[0] is None and licenses[1] is not None and licenses[2] == licenses[1]
    assert len(commands) == 2  # refused, answered; the third poll waits the interval
    assert license_asked_at(1000.0, 3600.0, got=True) == 1000.0
    assert license_asked_at(1000.0, 3600.0, got=False) == 1000.0 - 3600 + 300  # due in 300 s
    assert license_asked_at(1000.0, 60.0, got=False) == 1000.0  # a shorter interval wins
