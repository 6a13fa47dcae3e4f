"""Absurd and malformed values in PowerMTA's answers (issue 13 §1, §3).

Absurd input (numbers out of range, NaN, nesting deeper than any PowerMTA tree) is refused with
a one-line PmtaMalformed, never another exception. A required value that is missing or unusable
fails the page with a message naming the page and the field; an optional one is left out and
listed in the warnings. Nothing malformed silently becomes a number.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from pmta_snmp.api import parse
from pmta_snmp.api.errors import PmtaError, PmtaMalformed
from pmta_snmp.mib.health import counters_restarted
from pmta_snmp.model import (
    Counts,
    Domain,
    Queue,
    QueueTypeCounts,
    Snapshot,
    Status,
    Vmta,
    snapshot_to_dict,
)
from tests.unit.test_api_parse import json_env, status_tree, xml_env

HOSTILE_JSON_NUMBERS = [b"1e400", b"-1e400", b"Infinity", b"-Infinity", b"NaN", b"1" + b"0" * 30]
UNUSABLE = [None, "lots", [], {}, -5, "-5", 12.5, True, "", "1e400", "inf", "nan"]


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text and len(text) < 400, text
    return text


def with_value(tree: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `tree` with the dotted `path` set to `value` (`...` deletes the key)."""
    out = copy.deepcopy(tree)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


def parse_json_status(body: bytes, warnings: list[str] | None = None) -> Status:
    return parse.parse_status(parse.unwrap(body), warnings=warnings)


# --- §1: absurd input is a PmtaMalformed -------------------------------------------------------


@pytest.mark.parametrize("raw", HOSTILE_JSON_NUMBERS, ids=lambda r: r.decode()[:12])
@pytest.mark.parametrize("path", ["status.queue.smtp.rcp", "status.traffic.total.out.kb"])
def test_absurd_json_numbers_in_required_fields_are_malformed(raw: bytes, path: str) -> None:
    body = json_env(with_value(status_tree(), path, "PLACEHOLDER")).replace(b'"PLACEHOLDER"', raw)
    with pytest.raises(PmtaMalformed) as info:
        parse_json_status(body)
    text = one_line(info.value)
    if raw[-1:].isdigit():  # valid JSON, unusable value: the field is named
        assert text.startswith("/status: ") and path in text, text


@pytest.mark.parametrize("raw", HOSTILE_JSON_NUMBERS, ids=lambda r: r.decode()[:12])
def test_absurd_json_numbers_in_optional_fields_never_crash(raw: bytes) -> None:
    body = json_env(with_value(status_tree(), "status.conn.smtpOut.cur", "X")).replace(b'"X"', raw)
    warnings: list[str] = []
    try:
        st = parse_json_status(body, warnings)
    except PmtaMalformed as exc:  # NaN/Infinity are not JSON at all
        one_line(exc)
        return
    assert st.conn.smtp_out.cur == 0
    assert any("status.conn.smtpOut.cur" in w for w in warnings), warnings


@pytest.mark.parametrize("text", ["inf", "-inf", "1e400", "nan", "9" * 5000, "-5", "lots"])
def test_absurd_xml_numbers_in_the_queue_depth_are_malformed(text: str) -> None:
    body = xml_env(with_value(status_tree(), "status.queue.smtp.rcp", text))
    with pytest.raises(PmtaMalformed) as info:
        parse.parse_status(parse.unwrap(body))
    assert "/status" in one_line(info.value) and "status.queue.smtp.rcp" in str(info.value)


def test_json_nested_200000_deep_is_malformed() -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    for body in (
        b'{"data": ' + deep + b', "status": "success"}',
        b'{"data": {"status": {"queue": ' + deep + b'}}, "status": "success"}',
        b"[" * 200_000,
    ):
        with pytest.raises(PmtaMalformed) as info:
            parse.unwrap(body)
        assert "deep" in one_line(info.value)
    with pytest.raises(PmtaMalformed):
        parse.parse_seed_status(b'{"queue_depth": ' + deep + b"}")
    assert parse.unwrap_message(b'{"message": ' + deep + b"}") == ""


def test_xml_nested_100000_deep_is_malformed() -> None:
    deep = b"<a>" * 100_000 + b"x" + b"</a>" * 100_000
    for body in (
        b"<rsp><data>" + deep + b"</data><succ/></rsp>",
        b"<rsp><data><status><queue>" + deep + b"</queue></status></data><succ/></rsp>",
    ):
        with pytest.raises(PmtaMalformed) as info:
            parse.unwrap(body)
        assert "deep" in one_line(info.value)


def test_nesting_as_deep_as_powermta_is_accepted() -> None:
    tree = status_tree()
    tree["status"]["extra"] = json.loads("[" * 30 + "]" * 30)
    assert parse_json_status(json_env(tree)).queued_recipients == 51234


def test_json_nan_and_infinity_are_not_json() -> None:
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        with pytest.raises(PmtaMalformed) as info:
            parse.unwrap(b'{"data": {"x": ' + token + b'}, "status": "success"}')
        assert token.decode().lstrip("-") in one_line(info.value)


def test_seed_flavour_absurd_values() -> None:
    for body in (
        b'{"queue_depth": NaN}',
        b'{"queue_depth": 1e400}',
        b'{"queue_depth": -5}',
        b'{"queue_depth": "lots"}',
        b'{"queue_depth": null}',
        b"[1, 2]",
    ):
        with pytest.raises(PmtaError) as info:
            parse.parse_seed_status(body)
        one_line(info.value)
    warnings: list[str] = []
    body = b'{"queue_depth": 7, "uptime": "soon", "msgs_per_sec": 1e400}'
    st = parse.parse_seed_status(body, warnings=warnings)
    assert st.queued_recipients == 7 and st.runtime.startup_time is None
    assert st.traffic.last_min.outbound.msg == 0
    assert any("uptime" in w for w in warnings) and any("msgs_per_sec" in w for w in warnings)


@pytest.mark.parametrize(
    "body",
    [
        b"queue,rcp\n" + b"q" * 200_000 + b",1\n",  # larger than csv's field limit
        b"queue,rcp\ngmail.com/v1,lots\n",
        b"queue,rcp\ngmail.com/v1,-5\n",
        b"queue,rcp\ngmail.com/v1,inf\n",
        b"queue,kb\ngmail.com/v1,1\n",  # no recipients column at all
    ],
)
def test_seed_csv_absurd_rows_are_malformed(body: bytes) -> None:
    with pytest.raises(PmtaMalformed) as info:
        parse.parse_seed_queues(body)
    one_line(info.value)


# --- §3: required fields fail the page, naming it ----------------------------------------------

REQUIRED_STATUS = [
    "status.queue.smtp.rcp",
    "status.traffic.total.out.rcp",
    "status.traffic.total.out.msg",
    "status.traffic.total.out.kb",
    "status.traffic.total.in.rcp",
    "status.traffic.total.in.kb",
    "status.traffic.total.bounceProcessed",
    "status.traffic.total.feedbackLoopProcessed",
]


@pytest.mark.parametrize("value", [..., *UNUSABLE], ids=repr)
@pytest.mark.parametrize("path", REQUIRED_STATUS)
def test_required_status_value_missing_or_unusable_fails_naming_it(path: str, value: Any) -> None:
    if path.endswith(".kb") and value == 12.5:
        value = "12 kB"  # a fraction is fine for kB
    tree = with_value(status_tree(), path, value)
    for envelope in (json_env, xml_env):
        if envelope is xml_env and (isinstance(value, bool | list | dict) or value is None):
            continue  # XML has only text (True would be 1)
        with pytest.raises(PmtaMalformed) as info:
            parse.parse_status(parse.unwrap(envelope(tree)))
        text = one_line(info.value)
        assert text.startswith("/status: ") and path in text, text


@pytest.mark.parametrize("block", ["status.queue", "status.queue.smtp", "status.traffic",
                                   "status.traffic.total", "status.traffic.total.out"])
@pytest.mark.parametrize("value", [[], "x", None, 5], ids=repr)
def test_a_list_or_scalar_where_a_required_block_belongs_fails(block: str, value: Any) -> None:
    with pytest.raises(PmtaMalformed) as info:
        parse_json_status(json_env(with_value(status_tree(), block, value)))
    assert block in one_line(info.value)


@pytest.mark.parametrize("page", ["queues", "domains", "vmtas"])
@pytest.mark.parametrize("value", [..., *UNUSABLE], ids=repr)
def test_row_recipients_missing_or_unusable_fails_naming_the_row(page: str, value: Any) -> None:
    row = {"name": "gmail.com/vmta-a", "rcp": 5, "kb": 1.0, "conn": 1}
    row = with_value(row, "rcp", value)
    tag = page[:-1]
    fn = {"queues": parse.parse_queues, "domains": parse.parse_domains,
          "vmtas": parse.parse_vmtas}[page]
    with pytest.raises(PmtaMalformed) as info:
        fn(parse.unwrap(json_env({tag: [row, {"name": "ok", "rcp": 1}]})))
    text = one_line(info.value)
    assert text.startswith(f"/{page}: ") and "gmail.com/vmta-a" in text and "rcp" in text


@pytest.mark.parametrize("data", [5, "text", True, 1.5])
def test_listing_page_that_is_not_rows_fails(data: Any) -> None:
    with pytest.raises(PmtaMalformed, match=r"^/domains: data is "):
        parse.parse_domains(parse.unwrap(json_env(data)))


def test_null_listing_is_no_rows_with_a_warning() -> None:
    warnings: list[str] = []
    assert parse.parse_vmtas(parse.unwrap(json_env(None)), warnings=warnings) == ()
    assert warnings == ["/vmtas: data is null (read as no rows)"]


def test_empty_listing_pages_are_fine_in_both_formats() -> None:
    assert parse.parse_queues(parse.unwrap(b"<rsp><data></data><succ/></rsp>")) == ()
    assert parse.parse_queues(parse.unwrap(json_env({"title": "Top 0 queues"}))) == ()
    assert parse.parse_vmtas(parse.unwrap(json_env([]))) == ()


# --- §3: optional values are left out and listed ----------------------------------------------


@pytest.mark.parametrize("value", UNUSABLE, ids=repr)
def test_unusable_optional_status_values_are_warned_not_zeroed_silently(value: Any) -> None:
    tree = with_value(status_tree(), "status.conn.smtpOut.cur", value)
    tree = with_value(tree, "status.spool.files.inUse", value)
    warnings: list[str] = []
    st = parse_json_status(json_env(tree), warnings)
    assert st.queued_recipients == 51234
    assert st.conn.smtp_out.cur == 0 and st.spool.files_in_use == 0
    assert any(w.startswith("/status: status.conn.smtpOut.cur") for w in warnings), warnings
    assert any(w.startswith("/status: status.spool.files.inUse") for w in warnings), warnings
    assert all("\n" not in w for w in warnings)


def test_wrong_type_for_an_optional_block_is_one_warning() -> None:
    warnings: list[str] = []
    st = parse_json_status(json_env(with_value(status_tree(), "status.conn", [])), warnings)
    assert st.conn.smtp_out.cur == 0
    assert [w for w in warnings if "status.conn" in w] == [
        "/status: status.conn is a list, not an object (left out)"
    ]


def test_unusable_optional_queue_type_is_left_out() -> None:
    tree = with_value(status_tree(), "status.queue.pipe.rcp", "lots")
    warnings: list[str] = []
    st = parse_json_status(json_env(tree), warnings)
    assert [q.name for q in st.queue_types] == ["smtp", "bounceProcessor"]
    assert any("status.queue.pipe.rcp" in w for w in warnings)


def test_unusable_optional_times_and_flags_are_warned() -> None:
    tree = with_value(status_tree(), "status.startupTime", "yesterday")
    tree = with_value(tree, "status.shuttingDown", "perhaps")
    warnings: list[str] = []
    st = parse_json_status(json_env(tree), warnings)
    assert st.runtime.startup_time is None and st.runtime.uptime_seconds is None
    assert any("status.startupTime" in w for w in warnings)
    assert any("status.shuttingDown" in w for w in warnings)


def test_a_good_answer_has_no_warnings() -> None:
    for envelope in (json_env, xml_env):
        warnings: list[str] = []
        parse.parse_status(parse.unwrap(envelope(status_tree())), warnings=warnings)
        assert warnings == []


def test_row_warnings_are_counted_per_field_not_per_row() -> None:
    rows = [{"name": f"d{i}.example", "rcp": i, "kb": "x", "conn": -1} for i in range(500)]
    warnings: list[str] = []
    got = parse.parse_domains(parse.unwrap(json_env({"domain": rows})), warnings=warnings)
    assert len(got) == 500 and all(d.kb == 0 and d.conn == 0 for d in got)
    assert len(warnings) == 2, warnings
    assert all(w.startswith("/domains: ") and "500 of 500" in w for w in warnings)


def test_rows_that_are_not_objects_or_have_no_name_are_warned() -> None:
    data = {"queue": [{"name": "a/b", "rcp": 1, "kb": 0, "conn": 0}, "junk", {"rcp": 4}]}
    warnings: list[str] = []
    got = parse.parse_queues(parse.unwrap(json_env(data)), warnings=warnings)
    assert [q.name for q in got] == ["a/b"]
    assert len(warnings) == 2 and all(w.startswith("/queues: ") for w in warnings), warnings


def test_lone_surrogates_in_names_do_not_survive_into_the_model() -> None:
    body = json_env({"domain": [{"name": "\ud800x.example", "rcp": 1}]})
    (dom,) = parse.parse_domains(parse.unwrap(body))
    dom.name.encode("utf-8")  # would raise on a lone surrogate


# --- byte counts are whole bytes -----------------------------------------------------------


def test_byte_counts_are_integers() -> None:
    assert Counts(kb=216528.6).bytes == 221725286
    assert isinstance(Counts(kb=216528.6).bytes, int)
    assert QueueTypeCounts("smtp", kb=0.1).bytes == 102
    assert Queue("a/b", kb=1.5).bytes == Domain("a", kb=1.5).bytes == 1536
    assert Vmta("v", kb=1.5).bytes == 1536

    doc = snapshot_to_dict(Snapshot(status=parse_json_status(json_env(status_tree()))))
    assert doc["status"]["traffic"]["total"]["outbound"]["bytes"] == 1_536_000
    assert doc["status"]["queue_types"]["smtp"]["bytes"] == round(99182.4 * 1024)


# --- counters never go backwards because of bad input ---------------------------------------


def test_an_unknown_startup_time_alone_is_not_a_counter_restart() -> None:
    good = Snapshot(status=parse_json_status(json_env(status_tree())))
    tree = with_value(status_tree(), "status.startupTime", "garbage")
    odd = Snapshot(status=parse_json_status(json_env(tree), []))
    assert not counters_restarted(good, odd)
    assert not counters_restarted(odd, good)
    restarted = with_value(status_tree(), "status.startupTime", "2025-01-14 09:00:00")
    assert counters_restarted(good, Snapshot(status=parse_json_status(json_env(restarted))))
