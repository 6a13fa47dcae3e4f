"""Parser tests: every endpoint in both formats and the odd cases of pmta-formats.md §1."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from bench import fuzz_api
from pmta_snmp.api import parse
from pmta_snmp.api.errors import PmtaMalformed
from pmta_snmp.model import QueueMode


def to_xml(node: Any, tag: str) -> str:
    """Render the JSON shape as PowerMTA-style one-line XML (lists become repeated elements)."""
    if isinstance(node, dict):
        inner = "".join(
            "".join(to_xml(v, k) for v in val) if isinstance(val, list) else to_xml(val, k)
            for k, val in node.items()
        )
        return f"<{tag}>{inner}</{tag}>"
    if isinstance(node, bool):
        node = int(node)
    return f"<{tag}>{node}</{tag}>"


def xml_env(data: Any) -> bytes:
    return f"<rsp>{to_xml(data, 'data')}<succ/></rsp>".encode()


def json_env(data: Any) -> bytes:
    return json.dumps({"data": data, "status": "success", "message": ""}).encode()


def window(n: int) -> dict[str, Any]:
    return {
        "out": {"rcp": 10 * n, "msg": 8 * n, "kb": 1.5 * n},
        "in": {"rcp": 5 * n, "msg": 4 * n, "kb": 0.5 * n},
        "bounceProcessed": n,
        "feedbackLoopProcessed": 2 * n,
    }


def status_tree(*, with_mta: bool = True, shutting: Any = False) -> dict[str, Any]:
    tree: dict[str, Any] = {
        "status": {
            "timeNow": "2025-01-14 09:13:30",
            "startupTime": "2025-01-13 09:13:30",
            "shuttingDown": shutting,
            "traffic": {
                "total": window(1000),
                "lastHr": window(60),
                "lastMin": window(1),
                "topPerHr": window(90),
                "topPerMin": window(3),
            },
            "conn": {
                "smtpIn": {"cur": 3, "max": 300, "top": 40},
                "smtpOut": {"cur": 148, "max": 2000, "top": 220},
            },
            "resolver": {"namesCached": 1234, "queriesPending": 2, "queriesActive": 1},
            "queue": {
                "smtp": {"rcp": 51234, "dom": 310, "kb": 99182.4},
                "pipe": {"rcp": 0, "dom": 0, "kb": 0},
                "bounceProcessor": {"rcp": 2, "dom": 1, "kb": 0.3},
            },
            "spool": {
                "initPct": 100,
                "dirs": 4,
                "files": {"inUse": 900, "recycled": 100, "total": 1000},
                "totalRcp": 51236,
                "maxRcp": 1000000,
            },
            "status": "running",
        }
    }
    if with_mta:
        tree["mta"] = {
            "product": {"name": "PowerMTA", "version": "5.0r1", "buildDate": "2019-09-13"},
            "lak": {"serial": "910233", "instances": 1},
            "os": {"name": "Linux", "version": "5.10 "},
            "fullHostName": "mta1.example.com",
        }
    return tree


@pytest.mark.parametrize("envelope", [xml_env, json_env], ids=["xml", "json"])
def test_status_both_formats_give_same_model(envelope: Any) -> None:
    st_ = parse.parse_status(parse.unwrap(envelope(status_tree())))
    assert st_.traffic.total.outbound.rcp == 10000
    assert st_.traffic.last_min.outbound.msg == 8
    assert st_.traffic.top_per_hr.inbound.kb == pytest.approx(45.0)
    assert st_.traffic.last_hr.bounce_processed == 60
    assert st_.traffic.total.feedback_loop_processed == 2000
    assert st_.conn.smtp_out.cur == 148 and st_.conn.smtp_in.max == 300
    assert st_.queued_recipients == 51234
    assert st_.queue_type("bounceProcessor").kb == pytest.approx(0.3)
    assert st_.queue_type("file").rcp == 0  # not reported -> zeros
    assert st_.spool.files_in_use == 900 and st_.spool.max_rcp == 1000000
    assert st_.resolver is not None and st_.resolver.names_cached == 1234
    assert st_.runtime.version == "5.0r1" and st_.runtime.serial == "910233"
    assert st_.runtime.host_name == "mta1.example.com"
    assert st_.runtime.startup_time == datetime(2025, 1, 13, 9, 13, 30)
    assert st_.runtime.uptime_seconds == 86400
    assert st_.runtime.status == "running" and st_.runtime.shutting_down is False
    assert st_.traffic.messages_per_second == pytest.approx(8 / 60)


def test_xml_is_one_line_without_declaration_and_text_html_irrelevant() -> None:
    body = xml_env(status_tree())
    assert b"\n" not in body
    assert parse.parse_status(parse.unwrap(b"  " + body)).queued_recipients == 51234


def test_status_4x_without_mta_resolver_and_with_gmimprinter() -> None:
    tree = status_tree(with_mta=False, shutting=1)
    del tree["status"]["resolver"]
    tree["status"]["queue"]["gmImprinter"] = {"rcp": "7", "dom": "1", "kb": "0.1"}
    st_ = parse.parse_status(parse.unwrap(xml_env(tree)))
    assert st_.runtime.version is None
    assert st_.resolver is None
    assert st_.runtime.shutting_down is True
    assert st_.queue_type("gmImprinter").rcp == 7


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0", False), ("1", True), ("true", True), ("false", False), (True, True), ("yes", True)],
)
def test_shutting_down_variants(raw: Any, expected: bool) -> None:
    tree = status_tree(shutting=raw)
    assert parse.parse_status(parse.unwrap(json_env(tree))).runtime.shutting_down is expected


def test_numbers_as_strings_read_and_garbage_left_out_with_a_warning() -> None:
    tree = status_tree()
    tree["status"]["conn"]["smtpOut"] = {"cur": "12", "max": "1,000", "top": "n/a"}
    tree["status"]["queue"]["smtp"] = {"rcp": "42.0", "dom": "", "kb": "3.5"}
    tree["status"]["unknownBlock"] = {"x": 1}
    warnings: list[str] = []
    st_ = parse.parse_status(parse.unwrap(json_env(tree)), warnings=warnings)
    assert st_.conn.smtp_out.cur == 12 and st_.conn.smtp_out.max == 1000
    assert st_.conn.smtp_out.top == 0
    assert st_.queued_recipients == 42 and st_.queue_type("smtp").dom == 0
    assert warnings == [  # the garbage is left out and said so, not silently 0
        "/status: status.conn.smtpOut.top is 'n/a', not a count (left out)",
        "/status: status.queue.smtp.dom is '', not a count (left out)",
    ]


QUEUE_ROWS = [
    {
        "name": "gmail.com/vmta-a",
        "rcp": 1200,
        "kb": 3400.5,
        "conn": 12,
        "paused": "no",
        "mode": "normal",
        "retryTime": "",
    },
    {
        "name": "bücher.example/vmta-b",
        "rcp": "77",
        "kb": "0",
        "conn": "0",
        "paused": "yes",
        "mode": "backoff",
        "retryTime": "09:35:42",
        "event": [
            # newest first, as in a real PowerMTA 4.0 capture
            {"type": "error", "time": "2025-01-14 09:14:30", "text": "ETIMEDOUT connecting"},
            {"type": "error", "time": "2025-01-14 09:13:30", "text": "421 4.7.0 try later"},
        ],
    },
]


@pytest.mark.parametrize("envelope", [xml_env, json_env], ids=["xml", "json"])
def test_queues_rows_by_element_name(envelope: Any) -> None:
    data = {"title": "Top queues", "queue": QUEUE_ROWS}
    queues = parse.parse_queues(parse.unwrap(envelope(data)))
    assert [q.name for q in queues] == ["bücher.example/vmta-b", "gmail.com/vmta-a"]
    b, g = queues
    assert (g.rcp, g.kb, g.conn, g.paused, g.mode) == (1200, 3400.5, 12, False, QueueMode.NORMAL)
    assert (b.rcp, b.paused, b.mode, b.retry_time) == (77, True, QueueMode.BACKOFF, "09:35:42")
    assert b.domain == "bücher.example" and b.vmta == "vmta-b"
    assert [e.text for e in b.events] == ["ETIMEDOUT connecting", "421 4.7.0 try later"]
    assert b.last_error == "ETIMEDOUT connecting"


def test_single_row_and_single_event_xml() -> None:
    row = dict(QUEUE_ROWS[1])
    row["event"] = {"type": "error", "time": "t", "text": "only"}
    queues = parse.parse_queues(parse.unwrap(xml_env({"queue": row})))
    assert len(queues) == 1 and queues[0].events[0].text == "only"


def test_json_list_under_any_key_or_bare() -> None:
    for data in ({"rows": QUEUE_ROWS}, {"whatever": QUEUE_ROWS}, QUEUE_ROWS):
        assert len(parse.parse_queues(parse.unwrap(json_env(data)))) == 2


def test_domains_and_vmtas() -> None:
    doms = [
        {"name": "xn--bcher-kva.example", "rcp": 5, "kb": 1.0, "conn": 1, "lastError": "x"},
        {"name": "example.com", "rcp": "3", "kb": "0.2", "conn": "0"},
    ]
    got = parse.parse_domains(parse.unwrap(xml_env({"domain": doms})))
    assert [(d.name, d.rcp, d.last_error) for d in got] == [
        ("example.com", 3, None),
        ("xn--bcher-kva.example", 5, "x"),
    ]
    vm = parse.parse_vmtas(
        parse.unwrap(json_env({"vmta": [{"name": "v1", "rcp": 9, "domains": 2, "pct": 50}]}))
    )
    assert vm[0].name == "v1" and vm[0].rcp == 9 and vm[0].domains == 2


def test_duplicate_names_merged() -> None:
    rows = [{"name": "a/b", "rcp": 1}, {"name": "a/b", "rcp": 2}]
    assert [q.rcp for q in parse.parse_queues(parse.unwrap(json_env({"queue": rows})))] == [2]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<rsp><data><status></status></data></rsp>",  # no <succ/>
        b"<rsp><data><status>",  # truncated
        b"<html><body>PowerMTA</body></html>",
        b"<foo/>",
        b'{"data": {}}',  # no status
        b'{"data": {}, "status": "error", "message": "bad"}',
        b'{"data": {"status": {}}, "status": "success"',  # truncated
        b"PowerMTA is down",
        b'<!DOCTYPE rsp [<!ENTITY x "y">]><rsp><data>&x;</data><succ/></rsp>',
    ],
)
def test_malformed_envelopes_raise_malformed(body: bytes) -> None:
    with pytest.raises(PmtaMalformed):
        parse.unwrap(body)


def test_latin1_xml_is_accepted() -> None:
    body = "<rsp><data><domain><name>bücher.example</name><rcp>1</rcp></domain></data><succ/></rsp>"
    got = parse.parse_domains(parse.unwrap(body.encode("latin-1")))
    assert got[0].name == "bücher.example"


def test_status_without_status_block_is_malformed() -> None:
    with pytest.raises(PmtaMalformed):
        parse.parse_status(parse.unwrap(json_env({"something": 1})))
    with pytest.raises(PmtaMalformed):
        parse.parse_status(parse.unwrap(json_env([1, 2])))


LICENSE_TEXT = """  product: PowerMTA
  version: 5.0
 platform: linux-intel
 licensee: Example Mail Ltd
   serial: 910233
   issued: 2024-06-01
  expires: {expires}
copyright: Port25 Solutions, Inc.  All Rights Reserved
"""


def test_license_from_text_message_date_and_never() -> None:
    lic = parse.parse_license({}, LICENSE_TEXT.format(expires="2026-12-01"))
    assert lic.expires == date(2026, 12, 1) and not lic.never
    assert lic.days_left(date(2026, 11, 25)) == 6
    assert lic.get("licensee") == "Example Mail Ltd"
    never = parse.parse_license(LICENSE_TEXT.format(expires="never"))
    assert never.never and never.days_left(date.today()) is None


def test_license_from_structured_object_and_errors() -> None:
    lic = parse.parse_license({"license": {"expires": "2020-01-02", "serial": "1"}})
    assert lic.expires == date(2020, 1, 2)
    assert lic.days_left(date(2020, 1, 3)) == -1
    with pytest.raises(PmtaMalformed):
        parse.parse_license({"license": {"expires": "soon"}})
    with pytest.raises(PmtaMalformed):
        parse.parse_license({}, "no such field")


def test_version_text() -> None:
    text = "PowerMTA v5.0r1 (2019-09-13 16:27:31, 64-bit; v5_0r1@190913.ba26ec5)."
    assert parse.parse_version(text) == "5.0r1"
    assert parse.parse_version({}, "PowerMTA v4.5r11 (…)") == "4.5r11"


def test_seed_flavour_mapping() -> None:
    st_ = parse.parse_seed_status(b'{"queue_depth": 1234, "msgs_per_sec": 2.5, "uptime": 60}')
    assert st_.queued_recipients == 1234
    assert st_.traffic.last_min.outbound.msg == 150
    assert st_.runtime.uptime_seconds == 60
    qs = parse.parse_seed_queues(b"domain,vmta,rcpt,kb,conn\r\ngmail.com,v1,10,1.5,2\r\n")
    assert qs[0].name == "gmail.com/v1" and qs[0].rcp == 10 and qs[0].conn == 2
    ds = parse.parse_seed_domains(b"domain,queued,kb\ngmail.com,7,1\n")
    assert ds[0].rcp == 7
    with pytest.raises(PmtaMalformed):
        parse.parse_seed_status(b'{"status": "ok"}')


def test_parsers_fuzzed_with_valid_envelopes_give_a_model_or_one_line_error() -> None:
    """Hypothesis draws valid envelopes for every endpoint with hostile values (bench/fuzz_api.py;
    `./run fuzz api` runs 100,000): the parser returns a sane model that every output can serve
    or raises a one-line PmtaError, nothing else; most examples reach the endpoint's parser."""
    seen: Counter[str] = Counter()

    @settings(max_examples=3000, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(fuzz_api.cases())
    def one(case: fuzz_api.Case) -> None:
        outcome, problem = fuzz_api.check(case)
        seen[outcome] += 1
        seen[case.endpoint] += 1
        assert problem is None, problem

    one()
    total = seen["model"] + seen["refused envelope"] + seen["refused page"]
    assert total >= 3000 and seen["crash"] == 0
    assert seen["model"] + seen["refused page"] >= 0.75 * total, seen  # past the envelope
    assert seen["model"] >= 0.3 * total and seen["refused page"] >= 0.1 * total, seen
    assert all(seen[ep] >= 50 for ep in fuzz_api.ENDPOINTS), seen
