"""pmta-sim scenarios over simulated time, and injected API faults."""

from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import date, datetime, timedelta
from typing import Any

import defusedxml.ElementTree as SafeET
import httpx
import pytest

from pmta_snmp.sim import Simulator
from pmta_snmp.sim import simulator as simulator_module
from tests._clock import FakeTime
from tests.unit._sim_helpers import API_KEY, client, command, get_json, get_xml, running


def _queue(sim: Simulator, name: str) -> dict[str, Any]:
    q: dict[str, Any] = get_json(sim, f"/queueDetail?queue={name}")["queue"]
    return q


def test_backlog_queue_grows_in_backoff_for_more_than_30_minutes() -> None:
    with running(scenario="backlog") as sim:
        depths, totals = [], []
        for _ in range(10):  # 45 simulated minutes, polled every 5
            q = _queue(sim, "yahoo.com/vmta-b")
            assert q["mode"] == "backoff"
            depths.append(q["rcp"])
            totals.append(get_json(sim, "/status")["status"]["queue"]["smtp"]["rcp"])
            sim.advance(300)
        assert all(b > a for a, b in itertools.pairwise(depths))
        assert depths[-1] - depths[0] > 10000
        assert totals[-1] > totals[0]
        assert str(q["event"][0]["text"]).startswith('Error: "421 4.7.0')


def test_backlog_drains_after_three_hours() -> None:
    with running(scenario="backlog") as sim:
        sim.advance(3 * 3600)
        peak = _queue(sim, "yahoo.com/vmta-b")["rcp"]
        sim.advance(1800)
        q = _queue(sim, "yahoo.com/vmta-b")
        assert q["mode"] == "normal" and q["rcp"] < peak


def test_stuck_queue_keeps_the_same_size_across_polls() -> None:
    with running(scenario="stuck") as sim:
        seen = set()
        for _ in range(7):
            q = get_xml(sim, "/queues?queue=example.org/vmta-c")["queue"][0]
            assert q["mode"] == "backoff" and q["paused"] == "no"
            seen.add(int(q["rcp"]))
            sim.advance(600)
        assert seen == {1234}
        texts = [e["text"] for e in q["event"]]
        assert "All SMTP sources for queue example.org/vmta-c are now disabled." in texts
        assert any(t.startswith("ECONNREFUSED connecting to example.org") for t in texts)


def test_healthy_has_no_backoff_and_a_distant_license() -> None:
    with running(api_key=API_KEY) as sim:
        sim.advance(1800)
        assert {q["mode"] for q in get_json(sim, "/queues")["queue"]} == {"normal"}
        lic = sim.snapshot().license
        assert lic is not None
        assert lic.days_left(date(2025, 1, 14)) == 300


@pytest.mark.parametrize(
    ("scenario", "days"),
    [("license-expiring", 5), ("license-expired", -3), ("license-never", None)],
)
def test_license_scenarios(scenario: str, days: int | None) -> None:
    with running(scenario=scenario, api_key=API_KEY) as sim:
        fields = command(sim, "show license").json()["data"]
        now = datetime.fromisoformat(get_json(sim, "/status")["status"]["timeNow"]).date()
        if days is None:
            assert fields["expires"] == "never"
            return
        assert (date.fromisoformat(fields["expires"]) - now).days == days
        sim.advance(86400)
        now = datetime.fromisoformat(get_json(sim, "/status")["status"]["timeNow"]).date()
        assert (date.fromisoformat(fields["expires"]) - now).days == days - 1


# ---------------------------------------------------------------------------------- faults


def test_api_down_refuses_connections_until_cleared() -> None:
    with running(scenario="api-down") as sim:
        with client(sim) as c, pytest.raises(httpx.ConnectError):
            c.get("/status?format=xml")
        sim.set_fault("none")
        assert get_xml(sim, "/status")["status"]["status"] == "running"
        port = sim.port
        sim.set_fault("down")
        with client(sim) as c, pytest.raises(httpx.ConnectError):
            c.get("/status?format=xml")
        sim.set_fault("none")
        assert sim.port == port and get_xml(sim, "/status")


def test_reset_fault_drops_the_connection_without_an_answer() -> None:
    with running() as sim:
        sim.set_fault("reset")
        with client(sim) as c, pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            c.get("/status?format=json")


def test_api_slow_answers_after_the_delay() -> None:
    with running(scenario="api-slow", slow_delay=0.4) as sim, client(sim) as c:
        t0 = time.monotonic()
        assert c.get("/status?format=json").status_code == 200
        # A lower bound only: the answer cannot come before the delay, however fast the
        # machine (a slow one just makes this larger).
        assert time.monotonic() - t0 >= 0.4
        sim.set_fault("slow", delay=3600)  # far beyond the client's timeout
        with pytest.raises(httpx.ReadTimeout):
            c.get("/status?format=json", timeout=0.1)


def test_api_500() -> None:
    with running(scenario="api-500") as sim, client(sim) as c:
        assert c.get("/status?format=json").status_code == 500


def test_api_malformed_variants() -> None:
    with running(scenario="api-malformed") as sim, client(sim) as c:
        with pytest.raises(json.JSONDecodeError):
            json.loads(c.get("/status?format=json").content)
        with pytest.raises(SafeET.ParseError):
            SafeET.fromstring(c.get("/status?format=xml").content)
        sim.set_fault("malformed", variant="nosucc")
        body = c.get("/queues?format=xml").content
        assert SafeET.fromstring(body).tag == "rsp" and b"<succ/>" not in body
        assert "status" not in c.get("/queues?format=json").json()
        sim.set_fault("malformed", variant="envelope")
        assert SafeET.fromstring(c.get("/vmtas?format=xml").content).tag != "rsp"
        assert "data" not in c.get("/vmtas?format=json").json()
        sim.set_fault("malformed", variant="garbage")
        assert c.get("/status?format=json").content.startswith(b"\x00")
        sim.set_fault("malformed", variant="cycle")
        bodies = [c.get("/vmtas?format=xml").content for _ in range(5)]
        assert not bodies[0].endswith(b"</rsp>")  # truncated
        assert bodies[1].startswith(b"<response>")  # foreign envelope
        assert bodies[2].startswith(b"<rsp>") and b"<succ/>" not in bodies[2]
        assert bodies[3].startswith(b"\x00") and bodies[4] == bodies[0]
        assert c.get("/", follow_redirects=True).text.startswith("<!DOCTYPE html>")  # HTML intact


def test_control_endpoint_switches_faults() -> None:
    with running() as sim, client(sim) as c:
        assert c.post("/_sim/fault", data={"fault": "500"}).status_code == 200
        assert c.get("/status?format=json").status_code == 500
        assert c.post("/_sim/fault", data={"fault": "bogus"}).status_code == 400
        assert c.post("/_sim/fault", data={"fault": "down"}).status_code == 400  # no duration
        assert c.post("/_sim/fault", data={"fault": "none"}).status_code == 200
        assert c.get("/status?format=json").status_code == 200
        r = c.post("/_sim/fault", data={"fault": "down", "duration": "1.5"})
        assert r.status_code == 200
        outcomes: list[str] = []
        deadline = time.monotonic() + 30  # hang detection: the fault lasts 1.5 s
        while time.monotonic() < deadline and outcomes[-2:] != ["refused", "ok"]:
            try:
                with client(sim) as fresh:
                    fresh.get("/status?format=json")
                outcomes.append("ok")
            except httpx.ConnectError:
                outcomes.append("refused")
            except (httpx.ReadError, httpx.RemoteProtocolError):
                outcomes.append("reset")  # accepted just as the listener closed
            time.sleep(0.05)
        assert "refused" in outcomes and outcomes[-1] == "ok"


def test_control_endpoint_advances_time_and_serves_the_truth() -> None:
    with running() as sim, client(sim) as c:
        r = c.post("/_sim/advance", data={"seconds": "3600"})
        assert r.json()["now"] == "2025-01-14 10:00:00"
        truth = c.get("/_sim/snapshot").json()
        assert truth["status"]["runtime"]["time_now"] == "2025-01-14T10:00:00"
        assert truth["status"]["queued_recipients"] == sim.snapshot().status.queued_recipients


def test_speed_runs_the_clock_faster_than_real_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeTime()
    monkeypatch.setattr(simulator_module, "time", clock)  # the simulator's real-time clock
    start = datetime(2025, 1, 14, 9, 0)
    with running(speed=600, start_time=start.astimezone()) as sim:
        assert sim.now() == start
        clock.advance(0.5)
        assert sim.now() == start + timedelta(seconds=300)  # 600 simulated s per real s
        clock.advance(1.5)
        assert sim.now() == start + timedelta(seconds=1200)


def test_stop_interrupts_slow_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer delayed by an hour: the request ends when the simulator stops (a stop that
    waited for the answer would leave the request running past the generous join below)."""
    errors: list[Exception] = []
    answered: list[int] = []
    with running(scenario="api-slow", slow_delay=3600) as sim:
        arrived = threading.Event()
        handle = sim.app.handle

        def handle_and_tell(req: Any) -> Any:
            resp = handle(req)
            arrived.set()
            return resp

        monkeypatch.setattr(sim.app, "handle", handle_and_tell)

        def call() -> None:
            try:
                with client(sim) as c:
                    answered.append(c.get("/status?format=json", timeout=600).status_code)
            except httpx.HTTPError as exc:
                errors.append(exc)

        worker = threading.Thread(target=call)
        worker.start()
        assert arrived.wait(60)  # the request is in the delay now
        sim.stop()
        worker.join(60)  # hang detection: the delay is an hour
    assert not worker.is_alive() and errors and not answered
