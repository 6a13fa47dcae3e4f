"""The client against the simulator: the model it builds equals the simulator's truth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pmta_snmp.api import ClientConfig, PmtaClient, PmtaForbidden, PmtaUnreachable
from pmta_snmp.model import Lists, ListSource, Snapshot
from pmta_snmp.sim import Simulator

KEY = "k" * 40


def comparable(snap: Snapshot) -> Snapshot:
    """Drop what only the client knows (poll time, source, warnings, how complete)."""
    return replace(snap, taken_at=None, source="", warnings=(), lists=Lists())


@pytest.fixture(params=["5.0", "4.x"])
def sim(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    s = Simulator(scenario="backlog", seed=3, speed=0, profile=request.param, api_key=KEY)
    s.start()
    s.advance(600)
    try:
        yield s
    finally:
        s.stop()


def test_snapshot_equals_simulator_truth(sim: Simulator) -> None:
    with PmtaClient(ClientConfig(url=sim.url, api_key=KEY)) as client:
        got = client.snapshot(with_license=True)
        fmt = client.negotiated_format
    truth = sim.snapshot()
    assert fmt == ("json" if sim.state.profile == "5.0" else "xml")
    assert got.license is not None and got.license.expires == truth.license.expires  # type: ignore[union-attr]
    ours, theirs = comparable(got), comparable(truth)
    assert ours.status.runtime.version == theirs.status.runtime.version
    if sim.state.profile == "4.x":
        # 4.x has no `mta` block: build date, revision, serial come from nowhere.
        r = ours.status.runtime
        assert (r.build_date, r.revision, r.serial) == (None, None, None)
        theirs = replace(theirs, status=replace(theirs.status, runtime=r))
    assert ours.status == theirs.status
    assert ours.queues == theirs.queues
    assert ours.domains == theirs.domains
    assert ours.vmtas == theirs.vmtas


def test_https_with_ca_file_and_insecure(tmp_path: Path) -> None:
    cert = tmp_path / "webmon.pem"
    with Simulator(speed=0, https=True, cert_out=cert) as s:
        with PmtaClient(ClientConfig(url=s.url, ca_file=str(cert))) as c:
            assert c.status().queued_recipients == s.snapshot().status.queued_recipients
        with (
            PmtaClient(ClientConfig(url=s.url)) as c,
            pytest.raises(PmtaUnreachable, match="--ca-file"),
        ):
            c.status()
        with PmtaClient(ClientConfig(url=s.url, insecure=True)) as c:
            assert c.status().runtime.version


def test_http_access_refusal_is_forbidden_and_key_admits() -> None:
    with Simulator(speed=0, allow=("192.0.2.0/24",), api_key=KEY) as s:
        with PmtaClient(ClientConfig(url=s.url)) as c, pytest.raises(PmtaForbidden):
            c.status()
        with PmtaClient(ClientConfig(url=s.url, api_key=KEY)) as c:
            assert c.status().runtime.status == "running"


def test_seed_flavor_against_simulator() -> None:
    with Simulator(speed=0, seed_flavor=True) as s:
        with PmtaClient(ClientConfig(url=s.url, flavor="seed")) as c:
            snap = c.snapshot()
        truth = s.snapshot()
    assert snap.status.queued_recipients == truth.status.queued_recipients
    assert {q.name: q.rcp for q in snap.queues} == {q.name: q.rcp for q in truth.queues}


def test_poll_cli_json_and_error_line(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    env = {k: v for k, v in os.environ.items() if k != "PMTA_API_KEY"}
    with Simulator(speed=0, api_key=KEY) as s:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pmta_snmp",
                "poll",
                "--url",
                s.url,
                "--json",
                "--license",
                "--api-key-file",
                str(key_file),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        truth = s.snapshot()
        human = subprocess.run(
            [sys.executable, "-m", "pmta_snmp", "poll", "--url", s.url],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        url = s.url
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"]["queued_recipients"] == truth.status.queued_recipients
    assert data["status"]["queue_types"]["smtp"]["rcp"] == truth.status.queued_recipients
    assert len(data["queues"]) == len(truth.queues)
    assert data["license"]["expires"] == truth.license.expires.isoformat()  # type: ignore[union-attr]
    assert KEY not in proc.stdout + proc.stderr
    assert (
        human.returncode == 0
        and f"queued recipients (smtp): {truth.status.queued_recipients}" in human.stdout
    )
    down = subprocess.run(
        [sys.executable, "-m", "pmta_snmp", "poll", "--url", url, "--api-timeout", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert down.returncode == 2
    assert down.stdout == ""
    lines = down.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0]


# --- complete lists on a default PowerMTA (issue 18) ----------------------------------------


@pytest.fixture(scope="module")
def big_sim() -> Iterator[Simulator]:
    """2,000 domains and default page limits: the pages list 10 rows, the commands 20."""
    with Simulator(scenario="scale", domains=2000, vmtas=10, seed=5, speed=0, api_key=KEY) as s:
        yield s


def poll_json(url: str, *args: str, key: str | None = None, tmp: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PMTA_API_KEY"}
    extra: list[str] = []
    if key is not None:
        (tmp / "key").write_text(key)
        extra = ["--api-key-file", str(tmp / "key")]
    proc = subprocess.run(
        [sys.executable, "-m", "pmta_snmp", "poll", "--url", url, "--json", *extra, *args],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_poll_json_with_a_key_lists_all_2000_domains_and_queues(
    big_sim: Simulator, tmp_path: Path
) -> None:
    truth = big_sim.snapshot()
    doc = poll_json(big_sim.url, key=KEY, tmp=tmp_path)
    assert len(truth.domains) == 2000
    assert [d["name"] for d in doc["domains"]] == [d.name for d in truth.domains]
    assert [(q["name"], q["rcp"]) for q in doc["queues"]] == [(q.name, q.rcp) for q in
                                                              truth.queues]
    assert len(doc["vmtas"]) == 10
    lists = doc["lists"]
    assert lists["source"] == "command"
    assert lists["domains"]["listed"] == lists["domains"]["known"] == 2000
    assert lists["queues"]["known"] == len(truth.queues) and lists["queues"]["complete"]
    assert doc["warnings"] == []


def test_poll_json_without_a_key_warns_how_many_rows_are_missing(
    big_sim: Simulator, tmp_path: Path
) -> None:
    truth = big_sim.snapshot()
    dom = truth.status.queue_type("smtp").dom
    doc = poll_json(big_sim.url, tmp=tmp_path)
    assert len(doc["domains"]) == 10 and len(doc["queues"]) == 10
    assert doc["lists"]["source"] == "page"
    assert doc["lists"]["domains"]["missing"] == dom - 10
    assert any(w.startswith(f"/domains: lists 10 of {dom} domains (status.queue.smtp.dom): "
                            f"{dom - 10} missing;") for w in doc["warnings"])
    assert any(w.startswith(f"/queues: lists 10 queues, PowerMTA has at least {dom}")
               and f"at least {dom - 10} missing" in w for w in doc["warnings"])


def test_a_key_powermta_refuses_falls_back_to_the_pages_and_says_why(
    big_sim: Simulator, tmp_path: Path
) -> None:
    doc = poll_json(big_sim.url, key="w" * 40, tmp=tmp_path)
    assert doc["lists"]["source"] == "page" and len(doc["domains"]) == 10
    assert any(w.startswith("/command: lists read from the pages instead of the list commands:"
                            " PowerMTA refused the API key") for w in doc["warnings"])


def test_a_small_max_list_items_cuts_the_list_and_says_so(
    big_sim: Simulator, tmp_path: Path
) -> None:
    doc = poll_json(big_sim.url, "--max-list-items", "500", key=KEY, tmp=tmp_path)
    assert len(doc["domains"]) == 500
    assert doc["lists"]["domains"] == {
        "source": "command", "listed": 500, "known": 2000, "exact": True,
        "known_from": "show domains --maxitems=500 footer", "missing": 1500, "complete": False,
    }
    assert any(w.startswith("show domains --maxitems=500: lists 500 of 2000 domains")
               for w in doc["warnings"])


def test_powermta_4x_lists_all_through_the_xml_command_answer() -> None:
    """4.x answers /command in XML only and without the text: no footer, so fewer rows than
    asked for are the whole list."""
    with Simulator(scenario="scale", domains=300, vmtas=3, speed=0, profile="4.x",
                   api_key=KEY) as s:
        with PmtaClient(ClientConfig(url=s.url, api_key=KEY)) as c:
            snap = c.snapshot()
        truth = s.snapshot()
    assert [d.name for d in snap.domains] == [d.name for d in truth.domains]
    assert snap.lists.domains is not None
    assert snap.lists.domains.source is ListSource.COMMAND and snap.lists.domains.complete
