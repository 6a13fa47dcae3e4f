"""pmta-sim over HTTP: envelopes, page shapes, consistency with the truth, /command, access."""

from __future__ import annotations

import re
import ssl
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from pmta_snmp import model
from pmta_snmp.sim import Simulator
from tests.unit._sim_helpers import (
    API_KEY,
    client,
    command,
    get_json,
    get_xml,
    json_data,
    running,
    xml_data,
)

WINDOWS = {
    "total": "total",
    "lastHr": "last_hr",
    "lastMin": "last_min",
    "topPerHr": "top_per_hr",
    "topPerMin": "top_per_min",
}


@pytest.fixture
def sim() -> Any:
    """Every row on the pages (http-default-max-items raised): the consistency tests compare
    the listings with the truth row for row."""
    with running(api_key=API_KEY, max_items=None) as s:
        yield s


# ------------------------------------------------------------------------------- envelopes


def test_xml_status_is_one_line_rsp_envelope_with_succ(sim: Simulator) -> None:
    with client(sim) as c:
        r = c.get("/status?format=xml")
    assert r.headers["content-type"].startswith("text/xml")
    data = xml_data(r.content)
    assert data["status"]["shuttingDown"] == "0"
    assert data["mta"]["lak"]["serial"] == "910233"
    assert re.fullmatch(r"\d+\.\d", data["status"]["queue"]["smtp"]["kb"])


def test_json_status_types_follow_powermta(sim: Simulator) -> None:
    data = get_json(sim, "/status")
    st = data["status"]
    assert st["shuttingDown"] is False
    assert isinstance(data["mta"]["lak"]["serial"], str)
    assert isinstance(st["queue"]["smtp"]["rcp"], int)
    assert isinstance(st["queue"]["smtp"]["kb"], float)
    assert isinstance(st["traffic"]["total"]["out"]["kb"], float)
    assert st["status"] == "running"
    assert data["mta"]["os"]["build"].endswith(" ")
    for key in ("timeNow", "startupTime"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", st[key])


def test_xml_and_json_carry_the_same_values(sim: Simulator) -> None:
    js, xm = get_json(sim, "/queues"), get_xml(sim, "/queues")
    assert [q["name"] for q in js["queue"]] == [q["name"] for q in xm["queue"]]
    for a, b in zip(js["queue"], xm["queue"], strict=True):
        assert str(a["rcp"]) == b["rcp"] and f"{a['kb']:.1f}" == b["kb"]
        assert a["retryTime"] == b["retryTime"] and a["paused"] == b["paused"]
        assert [e["text"] for e in a["event"]] == [e["text"] for e in b.get("event", [])]


def test_html_without_format_and_xml_as_text_html_option() -> None:
    with running(xml_content_type="text/html") as sim, client(sim) as c:
        page = c.get("/queues")
        assert page.headers["content-type"].startswith("text/html")
        assert page.text.startswith("<!DOCTYPE html>")
        xml = c.get("/queues?format=xml")
        assert xml.headers["content-type"].startswith("text/html")
        assert xml_data(xml.content)["queue"]


def test_root_redirects_to_ui_in_5_0(sim: Simulator) -> None:
    with client(sim) as c:
        r = c.get("/")
    assert r.status_code == 302 and r.headers["location"] == "/ui"


# ------------------------------------------------------------------------- consistency


def test_queue_depth_and_listings_are_sums_over_queues(sim: Simulator) -> None:
    sim.advance(900)
    st = get_json(sim, "/status")["status"]
    queues = get_json(sim, "/queues")["queue"]
    domains = get_json(sim, "/domains")["domain"]
    vmtas = get_json(sim, "/vmtas")["vmta"]
    assert st["queue"]["smtp"]["rcp"] == sum(q["rcp"] for q in queues)
    assert st["queue"]["smtp"]["dom"] == sum(1 for d in domains if d["rcp"] > 0)
    assert st["conn"]["smtpOut"]["cur"] == sum(q["conn"] for q in queues)
    per_domain: dict[str, list[float]] = {}
    per_vmta: dict[str, list[float]] = {}
    for q in queues:
        dom, vmta = q["name"].rsplit("/", 1)
        for acc, key in ((per_domain, dom), (per_vmta, vmta)):
            row = acc.setdefault(key, [0, 0.0, 0])
            row[0] += q["rcp"]
            row[1] += q["kb"]
            row[2] += q["conn"]
    for d in domains:
        rcp, kb, conn = per_domain[d["name"]]
        assert (d["rcp"], d["conn"]) == (rcp, conn) and d["kb"] == pytest.approx(kb)
    for v in vmtas:
        rcp, kb, conn = per_vmta[v["name"]]
        assert (v["rcp"], v["conn"]) == (rcp, conn) and v["kb"] == pytest.approx(kb)
    assert sum(v["pct"] for v in vmtas) == pytest.approx(100, abs=0.3)
    assert [q["rcp"] for q in queues] == sorted((q["rcp"] for q in queues), reverse=True)


def test_wire_equals_snapshot_value_for_value(sim: Simulator) -> None:
    sim.advance(1234)
    snap = sim.snapshot()
    data = get_json(sim, "/status")
    st = data["status"]
    for wire, name in WINDOWS.items():
        tw = snap.status.traffic.window(name)
        node = st["traffic"][wire]
        assert (node["out"]["rcp"], node["out"]["msg"], node["out"]["kb"]) == (
            tw.outbound.rcp,
            tw.outbound.msg,
            tw.outbound.kb,
        )
        assert (node["in"]["rcp"], node["in"]["msg"], node["in"]["kb"]) == (
            tw.inbound.rcp,
            tw.inbound.msg,
            tw.inbound.kb,
        )
        assert node["bounceProcessed"] == tw.bounce_processed
    for qt in snap.status.queue_types:
        assert st["queue"][qt.name] == {"rcp": qt.rcp, "dom": qt.dom, "kb": qt.kb}
    assert st["conn"]["smtpOut"] == {
        "cur": snap.status.conn.smtp_out.cur,
        "max": snap.status.conn.smtp_out.max,
        "top": snap.status.conn.smtp_out.top,
    }
    rt = snap.status.runtime
    assert datetime.fromisoformat(st["timeNow"]) == rt.time_now
    assert datetime.fromisoformat(st["startupTime"]) == rt.startup_time
    assert data["mta"]["product"]["version"] == rt.version
    assert data["mta"]["fullHostName"] == rt.host_name
    wire_queues = {q["name"]: q for q in get_json(sim, "/queues")["queue"]}
    assert set(wire_queues) == {q.name for q in snap.queues}
    for q in snap.queues:
        w = wire_queues[q.name]
        assert (w["rcp"], w["kb"], w["conn"]) == (q.rcp, q.kb, q.conn)
        assert (w["paused"] == "yes", w["mode"], w["retryTime"]) == (
            q.paused,
            q.mode.value,
            q.retry_time,
        )
        assert [(e["type"], e["time"], e["text"]) for e in w["event"]] == [
            (e.type, e.time, e.text) for e in q.events
        ]
        assert q.last_error == (w["event"][0]["text"] if w["event"] else None)
    wire_domains = {d["name"]: d for d in get_json(sim, "/domains")["domain"]}
    for d in snap.domains:
        w = wire_domains[d.name]
        assert (w["rcp"], w["kb"], w["conn"], w["lastError"] or None) == (
            d.rcp,
            d.kb,
            d.conn,
            d.last_error,
        )
    wire_vmtas = {v["name"]: v for v in get_json(sim, "/vmtas")["vmta"]}
    for v in snap.vmtas:
        w = wire_vmtas[v.name]
        assert (w["rcp"], w["kb"], w["conn"], w["domains"]) == (v.rcp, v.kb, v.conn, v.domains)


def test_traffic_windows_are_consistent_and_totals_monotonic(sim: Simulator) -> None:
    before = get_json(sim, "/status")["status"]["traffic"]
    sim.advance(1800)
    after = get_json(sim, "/status")["status"]["traffic"]
    for d in ("in", "out"):
        for k in ("rcp", "msg", "kb"):
            assert after["total"][d][k] >= before["total"][d][k]
            assert after["total"][d][k] >= after["lastHr"][d][k] >= after["lastMin"][d][k]
            assert after["topPerHr"][d][k] >= after["lastHr"][d][k]
            assert after["topPerMin"][d][k] >= after["lastMin"][d][k]
        for w in WINDOWS:
            assert after[w][d]["msg"] <= after[w][d]["rcp"]
    assert after["total"]["out"]["rcp"] > before["total"]["out"]["rcp"]
    assert after["lastMin"]["out"]["rcp"] > 0


def test_idn_domains_are_served_in_utf8_and_punycode(sim: Simulator) -> None:
    names = {d["name"] for d in get_xml(sim, "/domains")["domain"]}
    assert "bücher.example" in names
    assert any(n.startswith("xn--") for n in names)
    detail = get_xml(sim, "/domainDetail?domain=bücher.example")
    assert detail["domain"][0]["name"] == "bücher.example"


def test_same_seed_same_answers_other_seed_differs() -> None:
    bodies = []
    for seed in (7, 7, 8):
        with running(seed=seed) as sim:
            sim.advance(600)
            with client(sim) as c:
                bodies.append(
                    c.get("/queues?format=xml").content + c.get("/status?format=json").content
                )
    assert bodies[0] == bodies[1]
    assert bodies[0] != bodies[2]


def test_state_is_the_same_however_time_is_advanced() -> None:
    with running(seed=3) as a, running(seed=3) as b:
        a.advance(600)
        for _ in range(40):
            b.advance(15)
        assert replace(a.snapshot(), source="") == replace(b.snapshot(), source="")


def test_queue_detail_and_unknown_queue(sim: Simulator) -> None:
    q = get_json(sim, "/queueDetail?queue=gmail.com/vmta-a")["queue"]
    assert q["name"] == "gmail.com/vmta-a" and q["mode"] in ("normal", "backoff")
    with client(sim) as c:
        r = c.get("/queueDetail?queue=nowhere.example/vmta-z&format=json")
    assert r.status_code == 404 and r.json()["status"] == "error"
    with client(sim) as c:
        r = c.get("/queueDetail?queue=nowhere.example/vmta-z&format=xml")
    assert r.status_code == 404 and b"<succ/>" not in r.content


def test_queues_filter_and_max_items() -> None:
    with running(max_items=3) as sim:
        rows = get_json(sim, "/queues")["queue"]
        assert len(rows) == 3
        assert get_json(sim, "/queues")["title"] == "Top 3 queues by number of recipients"
    with running() as sim:
        rows = get_json(sim, "/queues?queue=*/vmta-c")["queue"]
        assert rows and all(r["name"].endswith("/vmta-c") for r in rows)


def test_pages_list_10_rows_like_a_default_powermta() -> None:
    """http-default-max-items is 10 by default (formats §1.1): the top rows by recipients."""
    with running() as sim:
        truth = sim.snapshot()
        assert len(truth.queues) > 10 and len(truth.domains) > 10
        queues = get_json(sim, "/queues")["queue"]
        domains = get_xml(sim, "/domains")["domain"]
        assert len(queues) == len(domains) == 10
        top = sorted(truth.queues, key=lambda q: (-q.rcp, q.name))[:10]
        assert [q["name"] for q in queues] == [q.name for q in top]


def test_list_commands_show_20_rows_unless_asked_with_real_totals_in_the_footer() -> None:
    with running(api_key=API_KEY, scenario="scale", domains=30, vmtas=25) as sim:
        truth = sim.snapshot()
        for cmd, kind, footer in (
            ("show domains", "domain", "domains shown"),
            ("show queues", "queue", "matching queues"),
            ("show vmtas", "vmta", "virtual MTAs"),
        ):
            env = command(sim, cmd).json()
            total = len(getattr(truth, f"{kind}s"))
            assert len(env["data"][kind]) == 20, cmd
            assert env["message"].splitlines()[-1] == f"20 of {total} {footer}.", cmd
            env = command(sim, f"{cmd} --maxitems=1000").json()
            assert len(env["data"][kind]) == total, cmd
            assert env["message"].splitlines()[-1] == f"{total} of {total} {footer}.", cmd


# -------------------------------------------------------------------------------- command


def test_command_needs_the_api_key(sim: Simulator) -> None:
    assert command(sim, "show license", key=None).status_code == 401
    assert command(sim, "show license", key="wrong_key_" + "z" * 30).status_code == 403
    assert command(sim, "show license").status_code == 200


def test_show_license_text_and_fields(sim: Simulator) -> None:
    env = command(sim, "show license").json()
    lines = env["message"].splitlines()
    assert all(line.index(":") == lines[0].index(":") for line in lines)  # right-aligned keys
    assert "copyright: Port25 Solutions, Inc.  All Rights Reserved" in lines
    fields = env["data"]
    assert fields["expires"] == "2025-11-10" and fields["serial"] == "910233"
    assert sim.snapshot().license == model.License(
        never=False, expires=datetime(2025, 11, 10).date(), fields=tuple(fields.items())
    )


def test_show_version_multipart_json_text(sim: Simulator) -> None:
    r = command(sim, "show ver", fmt="json-text", multipart=True)
    assert r.json() == {
        "data": "PowerMTA v5.0r1 (2019-09-13 16:27:31, 64-bit; v5_0r1@190913.ba26ec5).\n",
        "status": "success",
        "message": "",
    }


def test_pause_and_resume_are_visible_in_later_listings(sim: Simulator) -> None:
    r = command(sim, "pause queue gmail.com/*")
    assert r.json()["message"] == "Queue(s) paused.\n"
    sim.advance(120)
    rows = {q["name"]: q for q in get_json(sim, "/queues")["queue"]}
    paused = [n for n, q in rows.items() if q["paused"] == "yes"]
    assert sorted(paused) == [f"gmail.com/vmta-{v}" for v in "abcd"]
    assert all(rows[n]["conn"] == 0 for n in paused)
    assert all(q.paused for q in sim.snapshot().queues if q.domain == "gmail.com")
    r = command(sim, "resume queue gmail.com/vmta-a", fmt="xml-text")
    assert xml_data(r.content) == "Queue(s) resumed.\n"
    rows = {q["name"]: q for q in get_xml(sim, "/queues")["queue"]}
    assert rows["gmail.com/vmta-a"]["paused"] == "no"
    assert rows["gmail.com/vmta-b"]["paused"] == "yes"


def test_show_queues_text_and_status_xml(sim: Simulator) -> None:
    text = command(sim, "show queues */vmta-c", fmt="json-text").json()["data"]
    assert text.splitlines()[0].startswith("queue")
    assert re.search(r"^\d+ of \d+ matching queues\.$", text, re.M)
    data = xml_data(command(sim, "show status", fmt="xml").content)
    assert data["status"]["status"] == "running"


def test_unknown_and_ambiguous_commands_give_error_envelopes(sim: Simulator) -> None:
    r = command(sim, "frobnicate now")
    assert r.status_code == 400
    assert r.json()["status"] == "error" and "unknown" in r.json()["message"]
    assert command(sim, "show v").json()["status"] == "error"  # version or vmtas
    assert b"<succ/>" not in command(sim, "frobnicate", fmt="xml").content
    assert command(sim, "pause queue nothing.example/*").status_code == 400


def test_schedule_retries_a_backoff_queue_now() -> None:
    with running(scenario="stuck", api_key=API_KEY) as sim:
        sim.advance(100)
        before = get_json(sim, "/queueDetail?queue=example.org/vmta-c")["queue"]
        assert before["retryTime"] == "2025-01-14 09:10:00"
        assert command(sim, "schedule example.org/vmta-c").status_code == 200
        after = get_json(sim, "/queueDetail?queue=example.org/vmta-c")["queue"]
        assert after["retryTime"] == "2025-01-14 09:01:40"
        sim.advance(10)  # the next tick retries (and fails again: the queue is stuck)
        retried = get_json(sim, "/queueDetail?queue=example.org/vmta-c")["queue"]
        assert retried["retryTime"] == "2025-01-14 09:11:40"
        assert retried["event"][0]["time"] > before["event"][0]["time"]


# --------------------------------------------------------------------------------- access


def test_get_outside_the_allow_list_is_403_unless_api_key() -> None:
    with running(allow=("192.0.2.0/24",), api_key=API_KEY) as sim, client(sim) as c:
        assert c.get("/status?format=json").status_code == 403
        assert c.get("/queues?format=xml").status_code == 403
        r = c.get("/status?format=json", headers={"X-API-Key": API_KEY})
        assert r.status_code == 200 and json_data(r.content)["status"]


def test_first_matching_access_rule_wins() -> None:
    with running(allow=("127.0.0.1/32 none", "127.0.0.0/8 monitor")) as sim, client(sim) as c:
        assert c.get("/status?format=json").status_code == 403
    with running(allow=("127.0.0.0/8 operator",), api_key=API_KEY) as sim:
        assert command(sim, "show version", key=None).status_code == 200


def test_bad_api_key_and_access_entry_are_refused() -> None:
    with pytest.raises(ValueError, match="32-128"):
        Simulator(api_key="short")
    with pytest.raises(ValueError, match="access"):
        Simulator(allow=("127.0.0.1/32 superuser",))


# ----------------------------------------------------------------------------- profiles


def test_profile_4x_has_no_mta_block_and_no_json() -> None:
    with running(profile="4.x", gm_imprinter=True, api_key=API_KEY) as sim:
        data = get_xml(sim, "/status")
        assert "mta" not in data and "gmImprinter" in data["status"]["queue"]
        with client(sim) as c:
            r = c.get("/status?format=json")
        assert r.status_code == 200 and r.text.startswith("<!DOCTYPE html>")
        assert command(sim, "show version", fmt="json").status_code == 400
        text = xml_data(command(sim, "show version", fmt="xml-text").content)
        assert text.startswith("PowerMTA v4.5r11 (")
        snap = sim.snapshot()
        assert snap.status.runtime.host_name is None and snap.status.runtime.version == "4.5r11"


def test_seed_flavour_only_when_enabled() -> None:
    with running() as sim, client(sim) as c:
        assert c.get("/status.json").status_code == 404
    with running(seed_flavor=True) as sim, client(sim) as c:
        flat = c.get("/status.json").json()
        st = get_json(sim, "/status")["status"]
        assert flat["queue_depth"] == st["queue"]["smtp"]["rcp"]
        assert flat["msgs_per_sec"] == pytest.approx(
            st["traffic"]["lastMin"]["out"]["msg"] / 60, abs=0.01
        )
        assert flat["active_connections"] == st["conn"]["smtpOut"]["cur"]
        lines = c.get("/queue.csv", params={"domain": "gmail.com"}).text.splitlines()
        assert lines[0].startswith("queue,domain,vmta,rcp")
        assert len(lines) == 5 and all(",gmail.com," in line for line in lines[1:])
        assert c.get("/domain.csv").text.startswith("domain,rcp,kb,conn,last_error\n")
        assert c.get("/vmta.csv").text.count("\n") == 5


# -------------------------------------------------------------------------------- https


def test_https_with_the_written_certificate_verifies(tmp_path: Path) -> None:
    cert = tmp_path / "webmon.pem"
    with running(https=True, cert_out=cert) as sim:
        assert sim.url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(cert))
        with client(sim, verify=trusted) as c:
            data = json_data(c.get("/status?format=json").content)
        assert data["mta"]["webUI"]["protocol"] == "https"
        with httpx.Client(verify=trusted, timeout=10) as c:
            r = c.get(f"https://localhost:{sim.port}/vmtas?format=xml")
        assert xml_data(r.content)["vmta"]
        with client(sim) as c, pytest.raises(httpx.ConnectError):
            c.get("/status?format=json")  # system trust store: self-signed is refused
        with httpx.Client(timeout=5) as c, pytest.raises(httpx.HTTPError):
            c.get(f"http://127.0.0.1:{sim.port}/status?format=json")  # plain HTTP to TLS port
        # the server survives both failed handshakes
        with client(sim, verify=trusted) as c:
            assert c.get("/status?format=xml").status_code == 200
