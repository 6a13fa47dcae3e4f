"""The shipped Zabbix template's list-completeness items through a real snmpd: the OIDs the
template polls (read from the YAML, as Zabbix would) answer from the AgentX subagent over a
default PowerMTA (pages of 10 rows), and the triggers' condition, rows listed below rows
known, holds without an API key and not with one (issue 18)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pmta_snmp.netsnmp import LoopThread, SnmpdMaster
from pmta_snmp.sim import Simulator
from tests.integration.kit_support import CONTRIB
from tests.integration.test_agent_lists import run_agent

pytestmark = pytest.mark.snmpd

TEMPLATE = CONTRIB / "zabbix" / "template_pmta_snmp.yaml"
KEY = "zabbix_lists_key_" + "z" * 30
DOMAINS = 200
KINDS = ("vmta", "domain", "queue")


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(scenario="scale", domains=DOMAINS, vmtas=12, seed=5, speed=0,
                   api_key=KEY) as s:
        yield s


def list_items() -> dict[str, dict[str, Any]]:
    """The template's rows listed/known items by key, with their triggers."""
    (tpl,) = yaml.safe_load(TEMPLATE.read_text())["zabbix_export"]["templates"]
    items = {i["key"]: i for i in tpl["items"] if ".rows." in i["key"]}
    assert set(items) == {f"pmta.{k}.rows.{w}" for k in KINDS for w in ("listed", "known")}
    return items


def polled(master: SnmpdMaster) -> dict[str, str]:
    """What Zabbix would store for each list item: the value, or the SNMP exception that
    makes the item unsupported."""
    out = {}
    for key, item in list_items().items():
        vb = master.get(str(item["snmp_oid"]), timeout=5)[0]
        out[key] = vb.value if vb.type == "Gauge32" else vb.type
    return out


def firing(values: dict[str, str]) -> set[str]:
    """The tables whose trigger fires: `last(listed)<last(known)` over the polled values (a
    trigger on an unsupported item stays unknown, never fires)."""
    items = list_items()
    out = set()
    for kind in KINDS:
        (trigger,) = items[f"pmta.{kind}.rows.known"]["triggers"]
        refs = re.findall(r"last\(/PowerMTA by SNMP/([^)]+)\)", trigger["expression"])
        assert refs == [f"pmta.{kind}.rows.listed", f"pmta.{kind}.rows.known"]
        listed, known = (values[r] for r in refs)
        if listed.isdigit() and known.isdigit() and int(listed) < int(known):
            out.add(kind)
    return out


def test_without_a_key_the_domain_and_queue_triggers_fire(
    sim: Simulator, snmpd_factory: Callable[..., SnmpdMaster], loop_thread: LoopThread,
) -> None:
    master = snmpd_factory(agentx_timeout=5)
    stop = run_agent(sim, master, loop_thread, None)
    try:
        values = polled(master)
    finally:
        stop()
    dom = sim.snapshot().status.queue_type("smtp").dom
    assert values == {
        "pmta.vmta.rows.listed": "10", "pmta.vmta.rows.known": "noSuchInstance",
        "pmta.domain.rows.listed": "10", "pmta.domain.rows.known": str(dom),
        "pmta.queue.rows.listed": "10", "pmta.queue.rows.known": str(dom),
    }
    assert firing(values) == {"domain", "queue"}


def test_with_a_key_every_table_is_complete_and_no_trigger_fires(
    sim: Simulator, snmpd_factory: Callable[..., SnmpdMaster], loop_thread: LoopThread,
    tmp_path: Path,
) -> None:
    (tmp_path / "key").write_text(KEY)
    master = snmpd_factory(agentx_timeout=5)
    stop = run_agent(sim, master, loop_thread, tmp_path / "key")
    try:
        values = polled(master)
    finally:
        stop()
    truth = sim.snapshot()
    assert values == {
        "pmta.vmta.rows.listed": "12", "pmta.vmta.rows.known": "12",
        "pmta.domain.rows.listed": str(DOMAINS), "pmta.domain.rows.known": str(DOMAINS),
        "pmta.queue.rows.listed": str(len(truth.queues)),
        "pmta.queue.rows.known": str(len(truth.queues)),
    }
    assert firing(values) == set()
