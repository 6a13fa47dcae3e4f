"""Where the completeness of the lists shows (issue 18): the exporter's gauges, the poller's
one log line about the lists' source, `poll`'s summary."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pmta_snmp.api import AsyncPmtaClient, ClientConfig
from pmta_snmp.cli import _print_summary
from pmta_snmp.exporter import PmtaCollector
from pmta_snmp.model import ListCompleteness, Lists, ListSource, Snapshot
from pmta_snmp.poller import Poller, PollResult
from tests.unit.test_api_lists import KEY, FakePmta

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
LISTS = Lists(
    queues=ListCompleteness(ListSource.PAGE, 10, 1967, exact=False),
    domains=ListCompleteness(ListSource.PAGE, 10, 1967),
    vmtas=ListCompleteness(ListSource.PAGE, 10),
)


def samples(snap: Snapshot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    collector = PmtaCollector()
    collector.update(PollResult(snap, True, NOW, NOW, 1, 0, 0, None))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_exporter_gauges_give_rows_listed_by_source_and_rows_known() -> None:
    got = samples(Snapshot(taken_at=NOW, lists=LISTS))
    assert got[("pmta_list_rows", (("list", "domain"), ("source", "page")))] == 10
    assert got[("pmta_list_rows", (("list", "queue"), ("source", "page")))] == 10
    assert got[("pmta_list_rows_known", (("list", "domain"),))] == 1967
    assert got[("pmta_list_rows_known", (("list", "queue"),))] == 1967
    assert ("pmta_list_rows_known", (("list", "vmta"),)) not in got  # no count: no sample
    assert not any(name.startswith("pmta_list_rows") for name, _ in samples(Snapshot(
        taken_at=NOW)))  # a snapshot that knows nothing of its lists claims nothing


def test_the_poller_logs_the_lists_source_once_and_again_when_it_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pmta = FakePmta()
    refuse = {"now": False}

    def handler(request: httpx.Request) -> httpx.Response:
        if refuse["now"] and request.method == "POST":
            return httpx.Response(403)
        return pmta(request)

    cfg = ClientConfig(url="http://pmta.test:8080", api_key=KEY, max_list_items=100)
    poller = Poller(cfg, interval=60)

    async def polls() -> None:
        async with AsyncPmtaClient(cfg, transport=httpx.MockTransport(handler)) as client:
            for _ in range(3):
                await poller.poll_once(client)
            refuse["now"] = True
            client._core.commands_refused = None  # as if the retry period had passed
            for _ in range(2):
                await poller.poll_once(client)

    with caplog.at_level(logging.INFO, logger="pmta_snmp.poller"):
        asyncio.run(polls())
    said = [r.getMessage() for r in caplog.records if "listed" in r.getMessage()]
    assert said == [
        "queues, domains and VirtualMTAs are listed through POST /command "
        "(show queues|domains|vmtas --maxitems=100)",
        "queues, domains and VirtualMTAs are listed from the pages /queues, /domains, /vmtas: "
        "PowerMTA shows there only its top http-default-max-items rows (10 by default); an API "
        "key (pmta.api_key_file) lists them all through POST /command",
    ]


def test_poll_summary_shows_listed_known_and_source(capsys: pytest.CaptureFixture[str]) -> None:
    _print_summary(Snapshot(taken_at=NOW, lists=LISTS))
    out = capsys.readouterr().out
    assert "queues: 0 of at least 1967 (page)  domains: 0 of 1967 (page)  vmtas: 0 (page)" in out
