"""Accounting files: reader, bounce classes, minute buckets (pmta_snmp.acct)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from pmta_snmp import logtail
from pmta_snmp.acct import (
    AcctReader,
    AcctRecord,
    AcctState,
    MinuteBuckets,
    bounce,
    classify,
    epoch_minute,
    pair_key,
    parse_records,
    parse_time,
    read_new_records,
)
from pmta_snmp.acct.buckets import OTHER_KEY, split_pair

# --- layouts and factories ----------------------------------------------------------------------

FIELDS_40 = ["type", "timeLogged", "timeQueued", "timeImprinted", "orig", "rcpt", "orcpt",
             "dsnAction", "dsnStatus", "dsnDiag", "dsnMta", "bounceCat", "srcType", "srcMta",
             "dlvType", "dlvSourceIp", "dlvDestinationIp", "dlvEsmtpAvailable", "dlvSize", "vmta",
             "jobId", "envId"]
FIELDS_50 = [*(f for f in FIELDS_40 if f != "timeImprinted"),
             "queue", "vmtaPool", "dlvTlsProtocol", "dlvTlsCipher"]
FIELDS_55 = [*FIELDS_50[:3], "timeFirstAttempt", "totalSecondsQueued", *FIELDS_50[3:]]

# pmta-formats.md §3.6, verbatim.
EXAMPLE_36 = """\
type,timeLogged,timeQueued,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,srcType,srcMta,dlvType,dlvSourceIp,dlvDestinationIp,dlvEsmtpAvailable,dlvSize,vmta,jobId,envId,queue,vmtaPool,dlvTlsProtocol,dlvTlsCipher
d,2025-01-14 09:12:03+0100,2025-01-14 09:11:57+0100,bo@m.example.net,jane@example.com,,relayed,2.0.0 (success),smtp;250 2.0.0 Ok: queued as 7QhF2k,mx1.example.com (192.0.2.25),success,smtp,app2 (10.1.2.3),smtp,198.51.100.20,192.0.2.25,"PIPELINING,SIZE,STARTTLS",18342,vmta-a,j114,,example.com/vmta-a,pool1,TLSv1.3,TLS_AES_128_GCM_SHA256
b,2025-01-14 09:12:09+0100,2025-01-14 09:12:06+0100,bo@m.example.net,nobody@example.org,,failed,5.1.1 (bad destination mailbox address),"smtp;550 5.1.1 Rejected, no such user",mx.example.org (192.0.2.40),bad-mailbox,smtp,app2 (10.1.2.3),smtp,198.51.100.21,192.0.2.40,"PIPELINING,SIZE",,vmta-b,j114,,example.org/vmta-b,pool1,,
t,2025-01-14 09:13:30+0100,2025-01-14 09:11:57+0100,bo@m.example.net,sam@example.net,,delayed,4.0.0 (undefined status),"smtp;421 ""too many messages"" from 198.51.100.22",mx2.example.net (192.0.2.61),,smtp,app2 (10.1.2.3),smtp,198.51.100.22,192.0.2.61,"PIPELINING,STARTTLS",,vmta-c,j114,,example.net/vmta-c,pool1,TLSv1.2,ECDHE-RSA-AES256-GCM-SHA384
b,2025-01-18 09:12:00+0100,2025-01-14 09:11:57+0100,bo@m.example.net,kim@example.info,,failed,4.4.7 (delivery time expired),smtp;421 4.4.2 connection timed out,mx.example.info (192.0.2.90),message-expired,smtp,app2 (10.1.2.3),smtp,198.51.100.20,192.0.2.90,,,vmta-a,j114,,example.info/vmta-a,,,
"""  # noqa: E501

_SEQ = iter(range(10**9))


def rec(**values: str) -> dict[str, str]:
    """One record by header name; sensible defaults for a delivery."""
    n = next(_SEQ)
    base = {"type": "d", "timeLogged": "2025-01-14 09:12:03+0100", "orig": "bo@m.example.net",
            "rcpt": f"user{n}@example.com", "dsnStatus": "2.0.0 (success)",
            "dsnDiag": "smtp;250 ok", "bounceCat": "success", "dlvSourceIp": "198.51.100.20",
            "vmta": "vmta-a", "queue": "example.com/vmta-a"}
    base.update(values)
    return base


def acct_bytes(fields: Sequence[str], rows: Iterable[dict[str, str]], *, header: bool = True,
               newline: str = "\r\n") -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=newline)
    if header:
        writer.writerow(fields)
    for row in rows:
        writer.writerow([row.get(f, "") for f in fields])
    return buf.getvalue().encode()


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)


def rcpts(records: list[AcctRecord]) -> list[str]:
    return [r.rcpt for r in records]


class FakeClock:
    def __init__(self, ticks: int) -> None:
        self.calls, self.ticks = 0, ticks

    def __call__(self) -> float:
        self.calls += 1
        return 100.0 if self.calls > self.ticks else 0.0


# --- parsing: layouts --------------------------------------------------------------------------


def test_documented_example_parses_verbatim() -> None:
    result = parse_records(EXAMPLE_36.encode())
    assert result.skipped_rows == 0
    d, b, t, expired = result.records
    plus1 = timezone(timedelta(hours=1))
    assert d.type == "d"
    assert d.time_logged == datetime(2025, 1, 14, 9, 12, 3, tzinfo=plus1)
    assert d.time_queued == datetime(2025, 1, 14, 9, 11, 57, tzinfo=plus1)
    assert d.sender_domain == "m.example.net" and d.rcpt_domain == "example.com"
    assert d.dlv_esmtp_available == "PIPELINING,SIZE,STARTTLS" and d.starttls_offered
    assert (d.dlv_tls_protocol, d.dlv_tls_cipher) == ("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    assert (d.dlv_source_ip, d.vmta, d.queue, d.vmta_pool) == (
        "198.51.100.20", "vmta-a", "example.com/vmta-a", "pool1")
    assert d.dlv_size == 18342 and d.job_id == "j114"
    assert d.bounce_class() == "success"
    assert b.dsn_diag == "smtp;550 5.1.1 Rejected, no such user"
    assert b.dsn_code == "5.1.1" and b.bounce_class() == "hard"
    assert b.dlv_size is None and b.dlv_tls_protocol == "" and not b.starttls_offered
    assert t.dsn_diag == 'smtp;421 "too many messages" from 198.51.100.22'
    assert t.bounce_cat == "" and t.dsn_action == "delayed"
    assert expired.bounce_cat == "message-expired" and expired.bounce_class() == "soft"
    assert expired.rcpt_domain == "example.info"


def test_layout_40_unix_seconds_and_time_imprinted() -> None:
    data = acct_bytes(FIELDS_40, [rec(timeLogged="1736842323", timeQueued="1736842300",
                                      timeImprinted="1736842301", type="b",
                                      dsnStatus="5.1.1 (bad destination mailbox address)",
                                      bounceCat="bad-mailbox")])
    (r,) = parse_records(data).records
    assert r.time_logged == datetime.fromtimestamp(1736842323, UTC)
    assert r.time_queued == datetime.fromtimestamp(1736842300, UTC)
    assert r.extra["timeImprinted"] == "1736842301"
    assert r.queue == "" and r.dlv_tls_protocol == ""  # not in 4.0
    assert r.bounce_class() == "hard"


def test_layout_55_adds_first_attempt_columns_by_name() -> None:
    data = acct_bytes(FIELDS_55, [rec(timeFirstAttempt="2025-01-14 09:12:00+0100",
                                      totalSecondsQueued="6", dlvTlsProtocol="TLSv1.3")])
    (r,) = parse_records(data).records
    assert r.extra["timeFirstAttempt"] == "2025-01-14 09:12:00+0100"
    assert r.extra["totalSecondsQueued"] == "6"
    assert r.dlv_tls_protocol == "TLSv1.3" and r.queue == "example.com/vmta-a"


def test_columns_are_mapped_by_name_not_position() -> None:
    shuffled = ["type", *reversed(FIELDS_50[1:])]
    (r,) = parse_records(acct_bytes(shuffled, [rec(rcpt="x@Example.COM", vmta="v9")])).records
    assert r.rcpt == "x@Example.COM" and r.rcpt_domain == "example.com" and r.vmta == "v9"


def test_header_and_unknown_columns_are_kept_in_extra() -> None:
    fields = ["type", "timeLogged", "rcpt", "header_Message-Id", "futureColumn", "header_X-Job"]
    (r,) = parse_records(acct_bytes(fields, [rec(**{"header_Message-Id": "<abc@x>",
                                                    "futureColumn": "42"})])).records
    assert r.extra == {"header_Message-Id": "<abc@x>", "futureColumn": "42"}
    (bare,) = parse_records(acct_bytes(fields, [rec()]), keep_extra=False).records
    assert bare.extra == {}


def test_lf_line_ends_and_crlf_give_the_same_records() -> None:
    rows = [rec(rcpt="a@x.example"), rec(rcpt="b@y.example")]
    crlf = parse_records(acct_bytes(FIELDS_50, rows, newline="\r\n")).records
    lf = parse_records(acct_bytes(FIELDS_50, rows, newline="\n")).records
    assert crlf == lf and rcpts(lf) == ["a@x.example", "b@y.example"]


def test_quoted_fields_with_commas_quotes_and_newlines() -> None:
    diag = 'smtp;550 5.7.1 "blocked", see\r\nhttps://example.org/why,\nline 3'
    data = acct_bytes(FIELDS_50, [rec(type="b", dsnDiag=diag, rcpt="q@x"), rec(rcpt="after@x")])
    result = parse_records(data)
    assert result.skipped_rows == 0
    assert [r.dsn_diag for r in result.records] == [diag, "smtp;250 ok"]
    assert rcpts(result.records) == ["q@x", "after@x"]


def test_header_change_mid_file_replaces_the_column_plan() -> None:
    first = acct_bytes(["type", "rcpt", "vmta"], [rec(rcpt="a@x", vmta="v1")])
    second = acct_bytes(["type", "vmta", "dlvSourceIp", "rcpt"],
                        [rec(rcpt="b@x", vmta="v2", dlvSourceIp="192.0.2.9")])
    result = parse_records(first + second)
    a, b = result.records
    assert (a.rcpt, a.vmta, a.dlv_source_ip) == ("a@x", "v1", "")
    assert (b.rcpt, b.vmta, b.dlv_source_ip) == ("b@x", "v2", "192.0.2.9")
    assert result.header == ["type", "vmta", "dlvSourceIp", "rcpt"]


def test_latin1_bytes_fall_back_per_line() -> None:
    data = (b"type,rcpt,dsnDiag\r\n"
            b"b,a@x,smtp;550 Bo\xeete pleine\r\n"
            + "b,b@x,smtp;550 Boîte UTF-8\r\n".encode())
    a, b = parse_records(data).records
    assert a.dsn_diag == "smtp;550 Boîte pleine"
    assert b.dsn_diag == "smtp;550 Boîte UTF-8"


def test_malformed_rows_are_counted_not_fatal() -> None:
    good = acct_bytes(FIELDS_50, [rec(rcpt="ok1@x")])
    bad = (b'd,too,few,columns\r\n'
           b'd,"quoted"garbage' + b',' * (len(FIELDS_50) - 2) + b'\r\n')
    tail = acct_bytes(FIELDS_50, [rec(rcpt="ok2@x")], header=False)
    result = parse_records(good + bad + tail)
    assert rcpts(result.records) == ["ok1@x", "ok2@x"]
    assert result.skipped_rows == 2


def test_rows_before_any_header_are_skipped() -> None:
    data = acct_bytes(FIELDS_50, [rec(), rec()], header=False)
    result = parse_records(data)
    assert result.records == [] and result.skipped_rows == 2
    assert len(parse_records(data, header=FIELDS_50).records) == 2


def test_type_filter() -> None:
    data = acct_bytes(FIELDS_50, [rec(type="d"), rec(type="t"), rec(type="r"), rec(type="b")])
    assert [r.type for r in parse_records(data, types={"b", "t"}).records] == ["t", "b"]


def test_derived_fields() -> None:
    r = AcctRecord(type="b", orig="Bounce@Mail.Example.NET", rcpt="<x@Y.example>",
                   dlv_esmtp_available="PIPELINING, starttls ,SIZE")
    assert r.sender_domain == "mail.example.net"
    assert r.rcpt_domain == "y.example"
    assert r.starttls_offered
    assert AcctRecord(type="b", orig="").sender_domain == ""


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-01-14 09:12:03+0100", datetime(2025, 1, 14, 8, 12, 3, tzinfo=UTC)),
    ("2025-01-14T09:12:03+01:00", datetime(2025, 1, 14, 8, 12, 3, tzinfo=UTC)),
    ("2025-01-14 09:12:03-0500", datetime(2025, 1, 14, 14, 12, 3, tzinfo=UTC)),
    ("2025-01-14 09:12:03Z", datetime(2025, 1, 14, 9, 12, 3, tzinfo=UTC)),
    ("1736842323", datetime(2025, 1, 14, 8, 12, 3, tzinfo=UTC)),
    ("", None),
    ("  ", None),
    ("yesterday", None),
])
def test_parse_time(text: str, expected: datetime | None) -> None:
    assert parse_time(text) == expected


def test_time_without_offset_is_taken_as_local_and_aware() -> None:
    value = parse_time("2025-01-14 09:12:03")
    assert value is not None and value.tzinfo is not None
    assert value.replace(tzinfo=None) == datetime(2025, 1, 14, 9, 12, 3)


# --- JSON accounting ---------------------------------------------------------------------------


def json_line(**values: str) -> bytes:
    return (json.dumps(rec(**values)) + "\n").encode()


def test_json_accounting_by_extension(tmp_path: Path) -> None:
    path = tmp_path / "acct.json"
    path.write_bytes(json_line(rcpt="a@x", dlvSize="18342", **{"header_X-Id": "7"})
                     + b"{broken json\n" + b"[1, 2]\n"
                     + json_line(type="b", rcpt="b@x", bounceCat="spam-related"))
    batch = read_new_records(path, None, from_start=True)
    a, b = batch.records
    assert (a.rcpt, a.dlv_size, a.extra["header_X-Id"]) == ("a@x", 18342, "7")
    assert a.time_logged == datetime(2025, 1, 14, 8, 12, 3, tzinfo=UTC)
    assert b.bounce_class() == "block"
    assert batch.skipped_rows == 2
    append(path, json_line(rcpt="c@x"))
    again = read_new_records(path, AcctState.from_json(json.loads(json.dumps(
        batch.state.to_json()))))
    assert rcpts(again.records) == ["c@x"]


# --- incremental reading -----------------------------------------------------------------------


def test_first_run_starts_at_end_and_remembers_header(tmp_path: Path) -> None:
    path = tmp_path / "acct.csv"
    path.write_bytes(acct_bytes(FIELDS_50, [rec(rcpt="old@x")]))
    batch = read_new_records(path, None)
    assert batch.records == [] and batch.first_run
    assert batch.state.header == FIELDS_50
    append(path, acct_bytes(FIELDS_50, [rec(rcpt="new@x")], header=False))
    batch = read_new_records(path, batch.state)
    assert rcpts(batch.records) == ["new@x"]


def test_header_changed_mid_file_is_remembered_across_runs(tmp_path: Path) -> None:
    path = tmp_path / "acct.csv"
    path.write_bytes(acct_bytes(["type", "rcpt"], [rec(rcpt="a@x")]))
    state = read_new_records(path, None).state
    # PowerMTA restarted with other record-fields: a new header line in the same file.
    append(path, acct_bytes(["type", "vmta", "rcpt"], [rec(rcpt="b@x", vmta="v2")]))
    batch = read_new_records(path, state)
    assert rcpts(batch.records) == ["b@x"]
    append(path, acct_bytes(["type", "vmta", "rcpt"], [rec(rcpt="c@x", vmta="v3")],
                            header=False))
    batch = read_new_records(path, batch.state)
    assert [(r.rcpt, r.vmta) for r in batch.records] == [("c@x", "v3")]
    assert batch.skipped_rows == 0


def test_rotation_to_dated_name_with_new_layout(tmp_path: Path) -> None:
    path = tmp_path / "acct.csv"
    path.write_bytes(acct_bytes(FIELDS_40, [rec(rcpt="seen@x", timeLogged="1736842323")]))
    state = read_new_records(path, None).state
    append(path, acct_bytes(FIELDS_40, [rec(rcpt="late@x", timeLogged="1736842324")],
                            header=False))
    path.rename(tmp_path / "acct-2025-01-14-0001.csv")
    path.write_bytes(acct_bytes(FIELDS_55, [rec(rcpt="fresh@x", totalSecondsQueued="3")]))
    batch = read_new_records(path, state)
    late, fresh = batch.records
    assert (late.rcpt, late.extra.get("timeImprinted")) == ("late@x", None)
    assert late.time_logged == datetime.fromtimestamp(1736842324, UTC)
    assert (fresh.rcpt, fresh.extra["totalSecondsQueued"]) == ("fresh@x", "3")
    assert batch.state.header == FIELDS_55
    assert batch.skipped_rows == 0


def test_record_still_being_written_is_read_whole_next_run(tmp_path: Path) -> None:
    path = tmp_path / "acct.csv"
    path.write_bytes(acct_bytes(FIELDS_50, []))
    state = read_new_records(path, None).state
    whole = acct_bytes(FIELDS_50, [rec(rcpt="done@x"),
                                   rec(rcpt="multi@x", dsnDiag="line one\nline two")],
                       header=False)
    cut = whole.index(b"line two")  # the writer stopped inside the quoted field
    append(path, whole[:cut])
    batch = read_new_records(path, state)
    assert rcpts(batch.records) == ["done@x"] and batch.skipped_rows == 0
    append(path, whole[cut:])
    batch = read_new_records(path, batch.state)
    assert rcpts(batch.records) == ["multi@x"]
    assert batch.records[0].dsn_diag == "line one\nline two"


def test_deadline_stop_and_resume_reads_each_record_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "acct.csv"
    path.write_bytes(acct_bytes(FIELDS_50, []))
    state: AcctState | None = read_new_records(path, None).state
    expected = [f"r{i}@x" for i in range(300)]
    append(path, acct_bytes(FIELDS_50, [rec(rcpt=r, dsnDiag="a,\nb" if i % 5 == 0 else "ok")
                                        for i, r in enumerate(expected)], header=False))
    got: list[str] = []
    for _ in range(500):
        monkeypatch.setattr(logtail.time, "monotonic", FakeClock(ticks=2))
        reader = AcctReader(path, state, deadline=50.0, chunk_size=300)
        got += rcpts(list(reader.records()))
        assert reader.skipped_rows == 0
        state = reader.state
        if not reader.timed_out:
            break
    assert got == expected


def test_stopping_early_resumes_after_last_record_received(tmp_path: Path) -> None:
    path = tmp_path / "acct.csv"
    path.write_bytes(acct_bytes(FIELDS_50, []))
    state = read_new_records(path, None).state
    expected = [f"r{i}@x" for i in range(50)]
    append(path, acct_bytes(FIELDS_50, [rec(rcpt=r) for r in expected], header=False))
    reader = AcctReader(path, state)
    records = reader.records()
    first = [next(records) for _ in range(7)]
    records.close()
    rest = read_new_records(path, reader.state).records
    assert rcpts(first) + rcpts(rest) == expected


def test_glob_follows_each_file_once(tmp_path: Path) -> None:
    live = tmp_path / "acct.csv"
    old = tmp_path / "acct-2025-01-13-0001.csv"
    old.write_bytes(acct_bytes(FIELDS_50, [rec(rcpt="old@x")]))
    live.write_bytes(acct_bytes(FIELDS_50, [rec(rcpt="live@x")]))
    spec = str(tmp_path / "acct*.csv")
    batch = read_new_records(spec, None)
    assert batch.records == []
    append(live, acct_bytes(FIELDS_50, [rec(rcpt="a@x")], header=False))
    live.rename(tmp_path / "acct-2025-01-14-0001.csv")
    live.write_bytes(acct_bytes(FIELDS_55, [rec(rcpt="b@x")]))
    state = AcctState.from_json(json.loads(json.dumps(batch.state.to_json())))
    batch = read_new_records(spec, state)
    assert rcpts(batch.records) == ["a@x", "b@x"]
    batch = read_new_records(spec, batch.state)
    assert batch.records == []


def test_gzipped_file_from_start(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "acct-2025-01-14-0001.csv.gz"
    path.write_bytes(gzip.compress(acct_bytes(FIELDS_50, [rec(rcpt="z@x")])))
    assert rcpts(read_new_records(path, None, from_start=True).records) == ["z@x"]


def test_state_json_round_trip_and_garbage() -> None:
    state = AcctState("acct.csv", tail=logtail.TailState(path="/x/acct.csv", offset=5, inode=3),
                      header=["type", "rcpt"])
    assert AcctState.from_json(json.loads(json.dumps(state.to_json()))) == state
    assert AcctState.from_json({"nope": 1}) is None
    assert AcctState.from_json("x") is None


def test_state_of_another_spec_is_a_first_run(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    for p in (a, b):
        p.write_bytes(acct_bytes(FIELDS_50, [rec()]))
    state = read_new_records(a, None).state
    batch = read_new_records(b, state)
    assert batch.first_run and batch.records == []


# --- bounce classes ------------------------------------------------------------------------------

HARD = ["bad-mailbox", "bad-domain", "inactive-mailbox", "invalid-sender", "routing-errors"]
SOFT = ["quota-issues", "bad-connection", "no-answer-from-host", "message-expired",
        "bad-configuration", "protocol-errors", "other"]
BLOCK = ["policy-related", "spam-related", "content-related", "virus-related", "relaying-issues"]


@pytest.mark.parametrize(("category", "expected"), [
    *((c, "hard") for c in HARD), *((c, "soft") for c in SOFT),
    *((c, "block") for c in BLOCK), ("success", "success"),
    ("Bad-Mailbox ", "hard"), ("made-up-category", "soft"),
])
def test_documented_category_table(category: str, expected: str) -> None:
    assert classify(category, "5.0.0 (whatever)", "smtp;550 spam") == expected


@pytest.mark.parametrize(("status", "category", "klass"), [
    ("5.1.1 (bad destination mailbox address)", "bad-mailbox", "hard"),
    ("4.1.1", "bad-mailbox", "hard"),
    ("5.1.2 (bad destination system address)", "bad-domain", "hard"),
    ("5.3.5", "bad-configuration", "soft"),
    ("4.4.1 (no answer from host)", "no-answer-from-host", "soft"),
    ("4.4.2 (bad connection)", "bad-connection", "soft"),
    ("5.4.4", "routing-errors", "hard"),
    ("5.4.6 (routing loop detected)", "routing-errors", "hard"),
    ("4.4.7 (delivery time expired)", "message-expired", "soft"),
    ("5.7.1 (delivery not authorized, message refused)", "policy-related", "block"),
])
def test_status_rules_when_bounce_cat_is_empty(status: str, category: str, klass: str) -> None:
    assert bounce.categorize(status, "smtp;550 spam blocked") == category
    assert classify("", status, "smtp;550 spam blocked") == klass


@pytest.mark.parametrize(("diag", "category"), [
    ("smtp;554 Message looks like SPAM", "spam-related"),
    ("smtp;550 IP listed on a blacklist", "spam-related"),
    ("smtp;552 Mailbox full", "quota-issues"),
    ("smtp;452 user over quota", "quota-issues"),
    ("smtp;550 Access denied", "policy-related"),
    ("smtp;550 message rejected", "policy-related"),
    ("smtp;550 something else entirely", "other"),
])
def test_text_rules_after_status_rules(diag: str, category: str) -> None:
    assert bounce.categorize("5.0.0 (undefined status)", diag) == category


def test_status_code_taken_from_diag_when_status_empty() -> None:
    assert bounce.categorize("", "smtp;550 5.1.1 <x@y>: user unknown") == "bad-mailbox"
    assert bounce.dsn_code("from 198.51.100.22") == ""
    assert bounce.dsn_code("smtp;421 4.4.2 connection timed out") == "4.4.2"


def test_success_status_and_empty_everything() -> None:
    assert classify("", "2.0.0 (success)", "smtp;250 ok") == "success"
    assert classify("", "", "") == "soft"  # unknown → other → soft


def test_class_table_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    assert classify("quota-issues", classes={"quota-issues": "hard"}) == "hard"
    assert classify("unknown-x", classes={"other": "block"}) == "block"
    monkeypatch.setitem(bounce.CATEGORY_CLASS, "policy-related", "hard")
    assert classify("policy-related") == "hard"
    rules = [(re.compile(r"greylist", re.I), "bad-connection")]
    assert classify("", "4.0.0", "smtp;451 Greylisted", text_rules=rules) == "soft"
    assert bounce.categorize("4.0.0", "smtp;451 Greylisted", text_rules=rules) == (
        "bad-connection")


# --- minute buckets ------------------------------------------------------------------------------

T0 = epoch_minute(datetime(2025, 1, 14, 9, 0, tzinfo=UTC))


def test_epoch_minute() -> None:
    assert int(datetime(2025, 1, 14, 9, 0, tzinfo=UTC).timestamp()) // 60 == T0
    paris = timezone(timedelta(hours=1))
    assert epoch_minute(datetime(2025, 1, 14, 10, 0, 59, tzinfo=paris)) == T0
    assert epoch_minute(T0 * 60 + 59.9) == T0


def test_bounce_rate_per_dimension() -> None:
    mb = MinuteBuckets(60)
    for i in range(100):
        hard = i < 7
        mb.add_event(T0 + i % 30, {"sender_domain": "m.example.net",
                                   "source_ip": "198.51.100.20" if i % 2 else "198.51.100.21"},
                     ["b", "hard"] if hard else ["d"])
    rates = mb.rates("sender_domain", {"hard"}, {"d", "b"}, now_minute=T0 + 30)
    assert rates["m.example.net"].numerator == 7
    assert rates["m.example.net"].denominator == 100
    assert rates["m.example.net"].percent == pytest.approx(7.0)
    by_ip = mb.rates("source_ip", {"hard"}, {"d", "b"}, now_minute=T0 + 30)
    assert sum(r.denominator for r in by_ip.values()) == 100


def test_deferral_rate_per_domain_and_ip_pair() -> None:
    mb = MinuteBuckets(15)
    for ip, deferred in (("192.0.2.1", 1), ("192.0.2.2", 9)):
        for i in range(10):
            counter = "t" if i < deferred else "d"
            mb.add_event(T0, {"domain_ip": pair_key("gmail.com", ip)}, [counter])
    rates = mb.rates("domain_ip", {"t"}, {"d", "b", "t"}, now_minute=T0, min_volume=5)
    assert {split_pair(k)[1]: r.value for k, r in rates.items()} == {
        "192.0.2.1": pytest.approx(0.1), "192.0.2.2": pytest.approx(0.9)}
    assert mb.rates("domain_ip", {"t"}, {"d"}, now_minute=T0, min_volume=50) == {}


def test_window_and_pruning() -> None:
    mb = MinuteBuckets(10)
    for m in range(T0, T0 + 20):
        mb.add(m, "domain", "example.com", "d")
    assert mb.totals("domain", now_minute=T0 + 19) == {"example.com": {"d": 10}}
    assert mb.totals("domain", now_minute=T0 + 19, minutes=3) == {"example.com": {"d": 3}}
    mb.prune(T0 + 19)
    assert mb.minutes() == list(range(T0 + 10, T0 + 20))
    assert mb.add_event(T0, {"domain": "late.example"}, ["d"], now_minute=T0 + 19) is False
    assert mb.add_event(T0 + 15, {"domain": "ok.example", "empty": ""}, ["d"],
                        now_minute=T0 + 19)
    assert mb.dimensions() == ["domain"]


def test_key_cap_folds_smallest_into_other_and_keeps_totals() -> None:
    mb = MinuteBuckets(60, max_keys=3)
    for i, n in enumerate([50, 40, 3, 2, 1]):
        for _ in range(n):
            mb.add(T0, "rcpt_domain", f"d{i}.example", "d")
    mb.prune(T0)
    totals = mb.totals("rcpt_domain", now_minute=T0)
    assert set(totals) == {"d0.example", "d1.example", OTHER_KEY}
    assert totals[OTHER_KEY] == {"d": 6}
    assert sum(c["d"] for c in totals.values()) == 96
    assert mb.dropped == {"rcpt_domain": 3}


def test_json_round_trip_merge_and_tolerance() -> None:
    mb = MinuteBuckets(60)
    mb.add_event(T0, {"domain": "a.example"}, {"d": 3, "starttls_no_tls": 1})
    restored = MinuteBuckets.from_json(json.loads(json.dumps(mb.to_json())))
    assert restored.totals("domain", now_minute=T0) == {
        "a.example": {"d": 3, "starttls_no_tls": 1}}
    run = MinuteBuckets(60)
    run.add(T0 + 1, "domain", "a.example", "d", 2)
    restored.merge(run)
    assert restored.totals("domain", now_minute=T0 + 1)["a.example"]["d"] == 5
    junk = {"minutes": {"x": {}, str(T0): {"domain": {"k": {"d": "3", "b": 2, "t": True}}},
                        str(T0 + 1): [1]}, "dropped": {"domain": "x"}}
    tolerant = MinuteBuckets.from_json(junk)
    assert tolerant.totals("domain", now_minute=T0) == {"k": {"b": 2}}
    assert MinuteBuckets.from_json(None).minutes() == []
    with pytest.raises(ValueError):
        MinuteBuckets(0)


# --- the fast CSV path: same records as a plain line-by-line parse ------------------------------


def _reference_parse(data: bytes, types: set[str] | None = None
                     ) -> tuple[list[AcctRecord], int]:
    """The straightforward parse: csv.reader over decoded lines, one AcctRecord(**fields) per
    row, columns mapped by the documented header names."""
    names = {name.lower(): attr for name, attr in (
        ("type", "type"), ("timeLogged", "time_logged"), ("timeQueued", "time_queued"),
        ("orig", "orig"), ("rcpt", "rcpt"), ("dsnAction", "dsn_action"),
        ("dsnStatus", "dsn_status"), ("dsnDiag", "dsn_diag"), ("dsnMta", "dsn_mta"),
        ("bounceCat", "bounce_cat"), ("dlvSourceIp", "dlv_source_ip"),
        ("dlvDestinationIp", "dlv_destination_ip"), ("dlvEsmtpAvailable", "dlv_esmtp_available"),
        ("dlvSize", "dlv_size"), ("dlvTlsProtocol", "dlv_tls_protocol"),
        ("dlvTlsCipher", "dlv_tls_cipher"), ("vmta", "vmta"), ("vmtaPool", "vmta_pool"),
        ("queue", "queue"), ("jobId", "job_id"))}
    lines = [logtail.decode_line(raw) + "\n" for raw in data.split(b"\n")[:-1]]
    reader = csv.reader(lines, strict=True)
    header: list[str] | None = None
    out: list[AcctRecord] = []
    skipped = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:
            skipped += 1
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if row[0].strip().lower() == "type":
            header = [h.strip() for h in row]
        elif header is None or len(row) != len(header):
            skipped += 1
        elif types is None or row[0] in types:
            fields: dict[str, object] = {}
            extra = {}
            for name, value in zip(header, row, strict=True):
                attr = names.get(name.lower())
                if attr is None:
                    if name and value:
                        extra[name] = value
                elif attr in fields:
                    continue
                elif attr in ("time_logged", "time_queued"):
                    fields[attr] = parse_time(value)
                elif attr == "dlv_size":
                    fields[attr] = int(value.strip()) if value.strip().isdigit() else None
                else:
                    fields[attr] = value
            out.append(AcctRecord(**fields, extra=extra))  # type: ignore[arg-type]
    return out, skipped


def _messy_file(seed: int) -> bytes:
    import random

    rng = random.Random(seed)
    layout = FIELDS_50
    parts = [acct_bytes([*FIELDS_50, "header_X-Id"], [])]
    for i in range(400):
        x = rng.random()
        if x < 0.02:
            layout = rng.choice([FIELDS_40, FIELDS_50, FIELDS_55])
            parts.append(acct_bytes([*layout, "header_X-Id"], []))
        elif x < 0.04:
            parts.append(b"\r\n")
        elif x < 0.06:
            parts.append(b'd,"broken"x,1\r\n')
        elif x < 0.08:
            parts.append(b"d,too,few\r\n")
        else:
            diag = rng.choice(["ok", "a,b", 'say "hi"', "line1\nline2", "x\r\ny", ""])
            row = rec(type=rng.choice(["d", "b", "t", "tq"]), rcpt=f"r{i}@Example.COM",
                      dsnDiag=diag, dlvSize=rng.choice(["", "123", " 7 ", "x"]),
                      timeLogged=rng.choice(["2025-01-14 09:12:03+0100", "1736842324", "",
                                             "garbage"]),
                      **{"header_X-Id": f"h{i}"})
            data = acct_bytes([*layout, "header_X-Id"], [row], header=False)
            if rng.random() < 0.1:
                data = data.replace(b"Example", b"Ex\xe9mple")  # Latin-1, not UTF-8
            parts.append(data)
    return b"".join(parts)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("types", [None, {"d", "b"}, {"tq"}])
def test_fast_path_matches_reference_parse(seed: int, types: set[str] | None) -> None:
    data = _messy_file(seed)
    expected, skipped = _reference_parse(data, types)
    got = parse_records(data, types=types)
    assert got.records == expected
    assert [r.extra for r in got.records] == [r.extra for r in expected]
    assert got.skipped_rows == skipped


@pytest.mark.parametrize("chunk_size", [64, 301, 4096, 1 << 20])
def test_fast_path_across_block_sizes(tmp_path: Path, chunk_size: int) -> None:
    data = _messy_file(7)
    path = tmp_path / "acct.csv"
    path.write_bytes(data)
    expected, skipped = _reference_parse(data)
    reader = AcctReader(path, None, from_start=True, chunk_size=chunk_size)
    assert list(reader.records()) == expected
    assert reader.skipped_rows == skipped
    assert reader.state.tail is not None and reader.state.tail.offset == len(data)


def test_records_are_plain_acct_records() -> None:
    import dataclasses

    record = parse_records(EXAMPLE_36.encode()).records[0]
    assert type(record) is AcctRecord
    twin = dataclasses.replace(record)
    assert twin == record and twin is not record
    assert record.sender_domain == "m.example.net" and record.dlv_size == 18342


def test_one_column_header_ignores_blank_rows() -> None:
    got = parse_records(b"type\r\nd\r\n \r\n\r\nb\r\n")
    assert [r.type for r in got.records] == ["d", "b"] and got.skipped_rows == 0


@pytest.mark.parametrize("chunk_size", [40, 1 << 20])
def test_first_record_of_a_run_still_being_written(tmp_path: Path, chunk_size: int) -> None:
    """The only new bytes are a record cut inside a quoted field spanning several blocks."""
    path = tmp_path / "acct.csv"
    path.write_bytes(acct_bytes(FIELDS_50, [rec(rcpt="old@x")]))
    state = read_new_records(path, None).state
    whole = acct_bytes(FIELDS_50, [rec(rcpt="multi@x", dsnDiag="one\n" * 30 + "end"),
                                   rec(rcpt="next@x")], header=False)
    cut = whole.index(b"end")
    append(path, whole[:cut])
    reader = AcctReader(path, state, chunk_size=chunk_size)
    assert list(reader.records()) == [] and reader.skipped_rows == 0
    state = reader.state
    assert state.tail is not None and state.tail.offset == path.stat().st_size - cut
    append(path, whole[cut:])
    batch = read_new_records(path, state)
    assert rcpts(batch.records) == ["multi@x", "next@x"]
    assert batch.records[0].dsn_diag == "one\n" * 30 + "end"


def test_json_line_nested_too_deep_is_a_malformed_row() -> None:
    """A hostile line (200,000 nested arrays) is one skipped row; reading goes on after it
    (json.loads raises RecursionError there, not ValueError)."""
    data = b"[" * 200_000 + b"\n" + json.dumps({"type": "d", "rcpt": "a@x.org"}).encode() + b"\n"
    got = parse_records(data, json_format=True)
    assert [r.rcpt for r in got.records] == ["a@x.org"] and got.skipped_rows == 1
