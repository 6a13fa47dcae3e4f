"""Counting (pmta_snmp.acct.tally) gives exactly what the record path gives.

Every test compares ``AcctReader.tally`` / ``FileTally`` with counts built from the records of
``parse_records`` / ``AcctReader.records`` on the same bytes: quoting, embedded commas and
newlines, CRLF and LF, header changes, Latin-1, malformed rows, block boundaries. Each runs
with the C scanner and without it (csv reads every row).
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmta_snmp import logtail
from pmta_snmp.acct import AcctReader, AcctRecord, AcctState, parse_records, read_new_records
from pmta_snmp.acct import reader as reader_module
from pmta_snmp.acct import tally as tally_module
from pmta_snmp.acct.buckets import epoch_minute
from pmta_snmp.acct.tally import (
    FileTally,
    TallyCounts,
    TallyKey,
    TallySpec,
    count_record,
    record_key,
)
from tests.conftest import require_c_scanner
from tests.unit.test_acct import FIELDS_40, FIELDS_50, FIELDS_55
from tests.unit.test_acct import acct_bytes as csv_bytes

# Columns in another order, some missing (record-fields), an unknown header_ column.
FIELDS_ODD = ["type", "vmta", "rcpt", "header_X-Id", "dlvSourceIp", "timeLogged", "bounceCat",
              "dsnDiag", "orig"]

# The 5.5 layout with the f fields (the union of the types' fields) and an odd extra column.
FIELDS_FBL = [*FIELDS_55, "repSourceIp", "feedbackType", "format", "reportingMta",
              "reportedDomain", "header_X-Id"]

BOUNCE = {"d": ("sender_domain", "rcpt_domain", "dlv_source_ip", "vmta"),
          "b": ("sender_domain", "rcpt_domain", "dlv_source_ip", "vmta", "bounce_cat",
                "dsn_status", "dsn_diag")}
DEFERRAL = {k: ("sender_domain", "rcpt_domain", "dlv_source_ip", "vmta", "queue", "dsn_diag")
            for k in ("d", "b", "t", "tq")}
TLS = {"d": ("rcpt_domain", "dlv_esmtp_available", "dlv_tls_protocol")}
WIDE = {"d": ("orig", "rcpt", "dsn_status", "dlv_destination_ip", "job_id", "dlv_tls_cipher"),
        "tq": ("queue", "vmta_pool")}
# What the outcomes engine counts: MX host, masked replies, the delay bucket (and its sum),
# columns by header name.
_OUT = ("rcpt_domain", "dsn_mta_host", "dlv_source_ip", "vmta", "sender_domain")
OUTCOMES = {"d": (*_OUT, "delay"),
            "b": (*_OUT, "delay", "bounce_cat", "dsn_status", "dsn_diag"),
            "t": (*_OUT, "bounce_cat", "dsn_status", "dsn_diag"),
            "tq": (),
            "f": ("rcpt_domain", "sender_domain", "column:repSourceIp", "column:feedbackType",
                  "column:reportingMta", "column:header_X-Id")}
BOUNDS = (1.0, 5.0, 60.0, 3600.0, 86400.0)
SPECS = [BOUNCE, DEFERRAL, TLS, WIDE, OUTCOMES]


@pytest.fixture(autouse=True, params=["c", "csv"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the C scanner and without it (csv reads every row)."""
    if request.param == "csv":
        monkeypatch.setenv(tally_module.PURE_PYTHON_ENV, "1")
    else:
        monkeypatch.delenv(tally_module.PURE_PYTHON_ENV, raising=False)
        require_c_scanner()
    return str(request.param)




def expected(data: bytes, spec: TallySpec, *, json_format: bool = False
             ) -> tuple[TallyCounts, int, int]:
    """Counts, records read and malformed rows by the record path (csv, one record a row)."""
    parsed = parse_records(data, json_format=json_format, types=set(spec.fields))
    counts = TallyCounts()
    minutes: dict[object, int | None] = {}
    for record in parsed.records:
        count_record(record, spec, minutes, counts)
    return counts, len(parsed.records), parsed.skipped_rows


def tally_bytes(data: bytes, spec: TallySpec, chunk: int = 1 << 20) -> FileTally:
    """FileTally fed in blocks of about ``chunk`` bytes cut at line ends, the last one final."""
    tally = FileTally(spec, None)
    pos = 0
    while pos < len(data):
        end = data.rfind(b"\n", pos, pos + chunk) + 1
        if end <= pos:
            end = data.find(b"\n", pos + chunk) + 1 or len(data)
        tally.feed(data[pos:end], pos, final=end == len(data))
        pos = end
    return tally


def check_same(data: bytes, fields: dict[str, tuple[str, ...]], *, chunk: int = 1 << 20,
               since: int | None = None, step: int = 1) -> FileTally:
    spec = TallySpec.of(fields, since_minute=since, delay_bounds=BOUNDS, minute_step=step)
    want, records, skipped = expected(data, spec)
    tally = tally_bytes(data, spec, chunk)
    got = tally.take()
    assert got == want
    assert got.sums == want.sums
    assert tally.records_read == records
    assert tally.skipped_rows == skipped
    return tally


# --- crafted rows ----------------------------------------------------------------------------

_SEQ = iter(range(10**9))


def row(**values: str) -> dict[str, str]:
    n = next(_SEQ)
    base = {"type": "d", "timeLogged": "2025-01-14 09:12:03+0100",
            "timeQueued": "2025-01-14 09:11:57+0100", "orig": "bounces@Mail.Example.NET",
            "rcpt": f"user{n}@Example.COM", "dsnAction": "relayed",
            "dsnStatus": "2.0.0 (success)", "dsnDiag": f"smtp;250 2.0.0 Ok: queued as {n:x}",
            "dsnMta": "mx.example.com (192.0.2.25)", "bounceCat": "success", "srcType": "smtp",
            "dlvType": "smtp", "dlvSourceIp": "198.51.100.20", "dlvDestinationIp": "192.0.2.25",
            "dlvEsmtpAvailable": "PIPELINING,SIZE,STARTTLS", "dlvSize": str(1000 + n),
            "vmta": "vmta-a", "jobId": "j1", "queue": "example.com/vmta-a", "vmtaPool": "pool1",
            "dlvTlsProtocol": "TLSv1.3", "dlvTlsCipher": "TLS_AES_128_GCM_SHA256",
            "header_X-Id": f"id{n}"}
    base.update(values)
    return base


ODD_VALUES: dict[str, list[str]] = {
    "type": ["d", "b", "t", "tq", "r", "f", "D", "rb", " d", ""],
    "timeLogged": ["2025-01-14 09:12:03+0100", "2025-01-14 09:12:59+0100",
                   "2025-01-14T09:13:00+01:00", "2025-01-14 09:13:07-0500",
                   "2025-01-14 09:13:07Z", "2025-01-14 09:13:07", "1736842323", "1736842323.5",
                   "", "garbage", "2025-01-14 09:12:60+0100", "2025-13-14 09:12:03+0100",
                   "2025-01-14 09:12:03.250+0100", " 2025-01-14 09:12:03+0100",
                   "2025-01-14 09:12:03+01", "2025-01-14 09:12:03+0100x"],
    "orig": ["bounces@Mail.Example.NET", "", "<>", "a@b@C.org", "no-at-sign", "x@", "@",
             "<Bo@Example.ORG>", "weird,comma@example.org", 'q"uote@example.org',
             "trailing@example.org.", " sp@Example.org "],
    "rcpt": ["Jane@Example.COM", "", "kim@SUB.example.info", "a,b@c.example", "\"odd\"@x.y",
             "x@y.z\r\nq", "latin@exämple.de"],
    "dsnDiag": ["smtp;250 ok", "smtp;550 5.1.1 user unknown", "a,b", 'say "hi"', "two\nlines",
                "cr\r\nlf", "", "  spaced   out  text  ", "\"quoted\" start", "trailing cr\r",
                "smtp;550 5.1.1 <jane@example.org>: unknown", "550 x@y z@w.org;a@b",
                'say "a@b" please', "\tuser@example.org\x01b@c", "@"],
    "timeQueued": ["2025-01-14 09:11:57+0100", "2025-01-14 09:13:07-0500", "2025-01-13 09:12:03Z",
                   "1736842300", "2025-01-14T09:12:03+01:00", "", "2024-02-30 09:00:00+0000",
                   "2024-02-29 09:00:00+0000", "2025-01-14 09:12:03", "2025-01-15 09:12:03+0100",
                   "0001-01-01 00:00:00+2359", "9999-12-31 23:59:59-2359", "x"],
    "totalSecondsQueued": ["6", "", "0", " 12", "abc", "1234567", "\"7\""],
    "dsnMta": ["mx.example.com (192.0.2.25)", "", "mx.example.com", " lead (1.2.3.4)",
               "\"q,uoted\" host (x)", "MX.Example.COM. (192.0.2.1)"],
    "dsnStatus": ["2.0.0 (success)", "5.7.1 (delivery not authorized, message refused)",
                  "4.0.0 (undefined status)", ""],
    "bounceCat": ["success", "bad-mailbox", "", "Policy-Related", "other"],
    "dlvSourceIp": ["198.51.100.20", "198.51.100.21", "", "2001:db8::1"],
    "dlvEsmtpAvailable": ["PIPELINING,SIZE,STARTTLS", "PIPELINING,SIZE", "", "STARTTLS",
                          "\"x\""],
    "vmta": ["vmta-a", "VMTA-B", "", "v,comma"],
    "queue": ["example.com/vmta-a", "Example.org/v2", "", "q\"x/y"],
    "dlvTlsProtocol": ["TLSv1.3", "TLSv1.2", "", "SSLv3"],
    "jobId": ["j1", "j 2", ""],
    "header_X-Id": ["id1", "", "a,b", "x@y"],
}


def messy(seed: int, rows: int = 600) -> bytes:
    """A file with every oddity the readers must agree on."""
    rng = random.Random(seed)
    layout = FIELDS_50
    parts = [csv_bytes(layout, [])]
    for _ in range(rows):
        x = rng.random()
        if x < 0.015:
            layout = rng.choice([FIELDS_40, FIELDS_50, FIELDS_55, FIELDS_ODD, FIELDS_FBL])
            parts.append(csv_bytes(layout, [], newline=rng.choice(["\r\n", "\n"])))
            continue
        if x < 0.025:
            parts.append(rng.choice([b"\r\n", b"\n", b" \r\n", b'd,"broken"x,1\r\n',
                                     b"d,too,few\r\n", b"b,2025-01-14 09:12:03+0100\n",
                                     b'"d",' + b",".join([b"x"] * (len(layout) - 1)) + b"\r\n",
                                     b"d," + b"x\rx," * (len(layout) - 2) + b"y\r\n",
                                     b'd,"unterminated' + b",x" * 5 + b"\r\n",
                                     b"Type," + b",".join(b"c%d" % i for i in range(5)) + b"\n",
                                     b"d," + b"a," * len(layout) + b"z\r\n"]))
            continue
        values = {k: rng.choice(v) for k, v in ODD_VALUES.items() if rng.random() < 0.3}
        data = csv_bytes(layout, [row(**values)], header=False,
                         newline=rng.choice(["\r\n", "\r\n", "\n"]))
        if rng.random() < 0.05:
            data = data.replace(b"Example", b"Ex\xe9mple")  # Latin-1 line, not UTF-8
        if rng.random() < 0.03:
            data = data.replace(b",", b",,", 1)  # one column too many
        parts.append(data)
    return b"".join(parts)


# --- the fast path against the record path ---------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("fields", SPECS, ids=["bounce", "deferral", "tls", "wide", "outcomes"])
def test_messy_file_counts_like_the_record_path(seed: int, fields: dict[str, tuple[str, ...]]
                                                ) -> None:
    check_same(messy(seed), fields)


@pytest.mark.parametrize("seed", range(4))
def test_ten_minute_slots_count_like_the_record_path(seed: int) -> None:
    """The engine's read-back counts in ten-minute slots, by each time's own clock."""
    tally = check_same(messy(seed), OUTCOMES, step=10)
    minutes = {key[1] for key in tally_bytes(messy(seed), TallySpec.of(
        OUTCOMES, minute_step=10)).take() if key[1] is not None}
    # the messy times' offsets are whole hours: every slot starts at a multiple of ten
    assert tally.records_read > 0 and minutes and all(m % 10 == 0 for m in minutes)


def test_ten_minute_slot_keeps_the_offset() -> None:
    data = csv_bytes(FIELDS_50, [row(timeLogged="2025-01-14 09:17:59+0545"),
                                 row(timeLogged="2025-01-14 09:10:00+0545"),
                                 row(timeLogged="2025-01-14 09:20:00+0545")])
    counts = tally_bytes(data, TallySpec.of({"d": ("vmta",)}, minute_step=10)).take()
    want = 1736825100 // 60  # 2025-01-14 09:10+0545 = 03:25Z
    assert sorted(counts.values()) == [1, 2]
    assert counts[("d", want, ("vmta-a",))] == 2
    check_same(data, {"d": ("vmta",)}, step=10)


@pytest.mark.parametrize("chunk", [1, 97, 500, 4096])
def test_block_boundaries_anywhere(chunk: int) -> None:
    """Blocks cut at every few lines: multi-line records and headers cross block ends."""
    for seed in (11, 12):
        check_same(messy(seed, 300), DEFERRAL, chunk=chunk)


def test_plain_rows_take_the_fast_path(engine: str) -> None:
    data = csv_bytes(FIELDS_50, [row(type=t) for t in "dddbdtdd" * 50])
    tally = check_same(data, BOUNCE)
    if engine == "c":
        assert tally.fast_lines == 400 and tally.slow_lines == 1  # only the header went to csv
    else:
        assert tally.fast_lines == 0 and tally.slow_lines == 401


def test_quoted_multiline_records_are_read_by_csv_in_order(engine: str) -> None:
    rows = [row(dsnDiag="line one\nd,2025-01-14 09:12:03+0100,x,y\nend" if i % 7 == 0 else "ok",
                type="b" if i % 3 == 0 else "d") for i in range(200)]
    data = csv_bytes(FIELDS_50, rows)
    tally = check_same(data, BOUNCE)
    assert tally.slow_lines > 0
    assert (tally.fast_lines > 150) == (engine == "c")


def test_lf_and_crlf_and_uppercase_domains() -> None:
    rows = [row(orig="A@MAIL.Example.NET", rcpt="B@Example.COM."), row(orig="<>"), row(orig="")]
    for newline in ("\r\n", "\n"):
        spec = TallySpec.of(BOUNCE)
        tally = tally_bytes(csv_bytes(FIELDS_50, rows, newline=newline), spec)
        got = Counter({k[2][:2]: n for k, n in tally.take().items()})
        assert got == {("", "example.com"): 2, ("mail.example.net", "example.com"): 1}


def test_header_change_mid_file_and_missing_columns() -> None:
    data = (csv_bytes(FIELDS_50, [row(vmta="v1")])
            + csv_bytes(["type", "rcpt", "timeLogged"], [row(vmta="v2", rcpt="a@X.org")])
            + csv_bytes(FIELDS_40, [row(vmta="v3", timeLogged="1736842323")]))
    tally = check_same(data, BOUNCE)
    got = tally.take()
    assert got == Counter()  # taken by check_same
    counts = tally_bytes(data, TallySpec.of(BOUNCE)).take()
    assert sorted(k[2][3] for k in counts) == ["", "v1", "v3"]  # no vmta column: ""
    assert (("d", epoch_minute(1736842323), ("mail.example.net", "example.com",
                                            "198.51.100.20", "v3")) in counts)


def test_header_of_the_same_width_changes_the_plan(engine: str) -> None:
    """A header line as wide as the one in force (columns swapped) still changes the plan:
    only its first column tells it from a row of another type."""
    swapped = [{"orig": "rcpt", "rcpt": "orig"}.get(f, f) for f in FIELDS_50]
    rows = [row(orig="s@Sender.example", rcpt="r@Rcpt.example")]
    for name in ("type", "Type", " TYPE "):
        second = csv_bytes(swapped, rows).replace(b"type,", f"{name},".encode(), 1)
        data = csv_bytes(FIELDS_50, rows) + second
        tally = check_same(data, BOUNCE)
        assert (tally.fast_lines >= 1) == (engine == "c")
        counts = tally_bytes(data, TallySpec.of(BOUNCE)).take()
        # The second row is read with the swapped header: the same key as the first.
        assert [(k[2][:2], n) for k, n in counts.items()] == [
            (("sender.example", "rcpt.example"), 2)]


def test_text_after_a_closing_quote_is_a_malformed_row() -> None:
    """``"a,b"x`` is an error for csv (strict) even when the column count works out."""
    good = csv_bytes(FIELDS_50, [row(), row()])
    bad = good.replace(b'"PIPELINING,SIZE,STARTTLS",', b'"PIPELINING,SIZE,STARTTLS"x', 1)
    assert bad != good
    tally = check_same(bad, BOUNCE)
    assert tally.skipped_rows == 1 and tally.records_read == 1
    doubled = good.replace(b'"PIPELINING,SIZE,STARTTLS"', b'"PIPELINING,""SIZE"",STARTTLS"', 1)
    assert check_same(doubled, WIDE).skipped_rows == 0


@pytest.mark.parametrize("chunk", [64 << 10, 1 << 20])
def test_fields_at_and_over_the_csv_size_limit(chunk: int) -> None:
    """A field of csv.field_size_limit() characters is read, one more makes csv reject the row,
    in blocks shorter and longer than the limit."""
    limit = csv.field_size_limit()
    rows = [row(dsnDiag="x" * limit), row(dsnDiag="y" * (limit + 1)),
            row(dsnDiag="z" * (limit + 1) + ","),  # quoted
            row(dsnDiag="w" * (limit - 200), dsnStatus="v" * 300)]  # a long line, fields not
    data = csv_bytes(FIELDS_50, [*rows, *(row() for _ in range(2000))])
    tally = check_same(data, BOUNCE, chunk=chunk)
    assert tally.skipped_rows == 2 and tally.records_read == 2000 + 2


def test_rows_before_any_header_are_malformed() -> None:
    data = csv_bytes(FIELDS_50, [row(), row()], header=False) + csv_bytes(FIELDS_50, [row()])
    tally = check_same(data, BOUNCE)
    assert tally.rows_without_header == 2


def test_window_drops_old_minutes() -> None:
    rows = [row(timeLogged=t) for t in ("2025-01-14 09:12:03+0100", "2025-01-14 09:40:03+0100",
                                        "", "1736842323")]
    since = epoch_minute(1736843000)
    tally = check_same(csv_bytes(FIELDS_50, rows), BOUNCE, since=since)
    assert tally.records_read == 4  # old records are read, not counted


def test_latin1_block_is_decoded_like_the_record_path() -> None:
    data = csv_bytes(FIELDS_50, [row(rcpt="x@Example.COM", vmta="vmta-ä")])
    data = data.replace("vmta-ä".encode(), b"vmta-\xe4")
    tally = check_same(data, BOUNCE)
    assert tally.take() == Counter()
    key = next(iter(tally_bytes(data, TallySpec.of(BOUNCE)).take()))
    assert key[2][3] == "vmta-ä"


def test_record_open_at_the_end_is_carried() -> None:
    whole = csv_bytes(FIELDS_50, [row(rcpt="a@x.org"), row(rcpt="b@x.org", dsnDiag="1\n2"),
                                  row(rcpt="c@x.org")])
    cut = whole.index(b"1\n2") + 2  # inside the quoted field, after its first line
    spec = TallySpec.of(DEFERRAL)
    tally = FileTally(spec, None)
    tally.feed(whole[:cut], 0)
    assert tally.pending and tally.record_start == whole.index(b"\r\nd,", 300) + 2
    counts = tally.take()
    assert [k[2][1] for k in counts] == ["x.org"]
    tally.feed(whole[cut:], cut)
    assert not tally.pending
    assert sum(tally.take().values()) == 2


class KeepFirst:
    """A cap as a consumer folds with: the first ``keep`` values met, the rest (other); it
    notes every value it is given."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.kept: list[str] = []
        self.given: list[str] = []

    def __call__(self, value: str) -> str:
        self.given.append(value)
        if value in self.kept:
            return value
        if len(self.kept) < self.keep:
            self.kept.append(value)
            return value
        return "(other)"


def test_fold_maps_counted_values_before_they_make_keys() -> None:
    """A spec's fold sees each counted value (the domain, not the address) before it makes a
    key: values folded together are one key, with all their counts and delay sums, as the
    record path with the same fold counts them; old records never reach it."""
    rows = [row(orig=f"bounces@S{i % 40}.Example.org", dlvSourceIp=f"198.51.100.{i % 7}",
                totalSecondsQueued=str(i % 3)) for i in range(400)]
    rows.append(row(orig="old@early.example.org", timeLogged="2025-01-14 08:00:00+0100"))
    data = csv_bytes(FIELDS_55, rows)
    since = epoch_minute(datetime.fromisoformat("2025-01-14T09:00:00+01:00"))
    senders, ips = KeepFirst(3), KeepFirst(2)
    spec = TallySpec.of(OUTCOMES, since_minute=since, delay_bounds=BOUNDS,
                        fold={"d": {"sender_domain": senders, "dlv_source_ip": ips}})
    got = tally_bytes(data, spec).take()
    assert {k[2][4] for k in got} == {"s0.example.org", "s1.example.org", "s2.example.org",
                                      "(other)"}
    assert {k[2][2] for k in got} == {"198.51.100.0", "198.51.100.1", "(other)"}
    assert len(got) <= 3 * 4 * 3 * 3  # senders x IPs x delay buckets x minutes at most
    assert "early.example.org" not in senders.given
    assert sum(got.values()) == 400
    want, _, _ = expected(data, TallySpec.of(OUTCOMES, since_minute=since, delay_bounds=BOUNDS,
                                             fold={"d": {"sender_domain": KeepFirst(3),
                                                         "dlv_source_ip": KeepFirst(2)}}))
    assert got == want and got.sums == want.sums


def test_reader_hands_on_a_bounded_number_of_keys_at_a_time(tmp_path: Path) -> None:
    """A file of many distinct keys (a sending domain each) comes out of the reader in chunks
    of at most about CHUNK_KEYS keys, not all at once, and counts the same."""
    path = tmp_path / "acct.csv"
    rows = tally_module.CHUNK_KEYS * 3 // 2
    path.write_bytes(csv_bytes(FIELDS_50, [row(orig=f"b@s{i}.example.org")
                                           for i in range(rows)]))
    spec = TallySpec.of(BOUNCE)
    reader = AcctReader(path, None, from_start=True, chunk_size=64 << 10)
    sizes = [len(chunk) for chunk in reader.tally(spec)]
    assert sum(sizes) == rows and len(sizes) >= 2
    assert max(sizes) <= tally_module.CHUNK_KEYS + 1000  # one block's rows over the bound


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="unknown"):
        TallySpec.of({"d": ("nope",)})
    with pytest.raises(ValueError, match="cannot be counted"):
        TallySpec.of({"type": ("vmta",)})
    with pytest.raises(ValueError, match="cannot fold"):
        TallySpec.of({"d": ("vmta",)}, fold={"d": {"rcpt_domain": str.lower}})


# Pieces of fields: every character that matters to csv, times, addresses, non-ASCII. Most
# pieces are plain, so that most lines are whole records the fast paths take, and the odd
# ones sit among them.
_PLAIN = [b"", b"x", b"Ex", b"@", b"a@B.org", b" ", b"\x00", b"2025-01-14 09:12:03+0100",
          b"2025-01-14T09:12:59", b"1736842323", b":60", b"d", b"b", b"tq"]
_ODD = [b'"', b'""', b",", b"\r", b"\n", b"\r\n", b"\xe9", b"\xc3\xa9", b"type", b"TyPe"]
_HEADER = b"type,timeLogged,orig,rcpt,dlvSourceIp,vmta,bounceCat,dsnStatus,dsnDiag\n"


@st.composite
def _csv_soup(draw: st.DrawFn) -> bytes:
    """A header, then lines of about its width: fields of random pieces, quoted or not."""
    field = st.lists(st.sampled_from(_PLAIN * 20 + _ODD), max_size=3).map(b"".join)
    quoted = st.lists(st.sampled_from(_PLAIN * 4 + _ODD), max_size=3).map(
        lambda f: b'"' + b"".join(f).replace(b'"', b'""') + b'"')
    cell = st.one_of(field, field, quoted)
    line = st.tuples(
        st.sampled_from([b"d"] * 4 + [b"b"] * 3 + [b"t", b'"d"', b"", b"Type", b"d\xe9"]),
        st.sampled_from([8] * 8 + [7, 9]).flatmap(
            lambda n: st.lists(cell, min_size=n, max_size=n)),
        st.sampled_from([b"\n", b"\r\n"] * 4 + [b"\r", b""]))
    lines = draw(st.lists(line, max_size=25))
    parts = [_HEADER] + [b",".join([kind, *fields]) + end for kind, fields, end in lines]
    return b"".join(parts)


@pytest.mark.timeout(300)  # hang detection: 5-10 s
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_csv_soup(), chunk=st.sampled_from([1, 64, 1 << 20]))
def test_random_csv_counts_like_the_record_path(data: bytes, chunk: int) -> None:
    check_same(data, BOUNCE, chunk=chunk)
    check_same(data, DEFERRAL, chunk=chunk)
    check_same(data.replace(b"rcpt,", b"timeQueued,", 1), OUTCOMES, chunk=chunk)
    check_same(data, OUTCOMES, chunk=chunk, step=10)


# --- through AcctReader: files, chunk sizes, JSON, state ------------------------------------


def reader_counts(path: Path | str, state: AcctState | None, spec: TallySpec, **kwargs: object
                  ) -> tuple[Counter[TallyKey], AcctReader]:
    reader = AcctReader(path, state, **kwargs)  # type: ignore[arg-type]
    counts: Counter[TallyKey] = Counter()
    for chunk in reader.tally(spec):
        counts.update(chunk)
    return counts, reader


def records_counts(path: Path | str, state: AcctState | None, spec: TallySpec,
                   **kwargs: object) -> tuple[Counter[TallyKey], AcctReader]:
    reader = AcctReader(path, state, types=set(spec.fields), **kwargs)  # type: ignore[arg-type]
    counts: Counter[TallyKey] = Counter()
    minutes: dict[object, int | None] = {}
    for record in reader.records():
        key = record_key(record, spec, minutes)
        if key is not None:
            counts[key] += 1
    return counts, reader


@pytest.mark.parametrize("chunk_size", [64, 301, 4096, 1 << 20])
def test_reader_tally_equals_reader_records(tmp_path: Path, chunk_size: int) -> None:
    path = tmp_path / "acct.csv"
    path.write_bytes(messy(21))
    spec = TallySpec.of(DEFERRAL)
    want, by_records = records_counts(path, None, spec, from_start=True, chunk_size=chunk_size)
    got, by_tally = reader_counts(path, None, spec, from_start=True, chunk_size=chunk_size)
    assert got == want
    assert (by_tally.records_read, by_tally.skipped_rows) == (
        by_records.records_read, by_records.skipped_rows)
    assert by_tally.state == by_records.state


def test_reader_tally_incremental_with_a_record_being_written(tmp_path: Path) -> None:
    path = tmp_path / "acct.csv"
    path.write_bytes(csv_bytes(FIELDS_50, [row()]))
    spec = TallySpec.of(BOUNCE)
    _, reader = reader_counts(path, None, spec)
    whole = csv_bytes(FIELDS_50, [row(rcpt="a@one.org"), row(rcpt="b@two.org", type="b",
                                                             dsnDiag="x\ny")], header=False)
    cut = whole.index(b"x\ny") + 2
    with path.open("ab") as fh:
        fh.write(whole[:cut])
    got, reader = reader_counts(path, reader.state, spec)
    assert [k[2][1] for k in got] == ["one.org"] and reader.skipped_rows == 0
    with path.open("ab") as fh:
        fh.write(whole[cut:])
    got, reader = reader_counts(path, reader.state, spec)
    assert [(k[0], k[2][1]) for k in got] == [("b", "two.org")]


def test_reader_tally_json_accounting(tmp_path: Path) -> None:
    path = tmp_path / "acct.json"
    lines = [json.dumps({"type": t, "timeLogged": "2025-01-14 09:12:03+0100",
                         "rcpt": f"r@{d}", "orig": "o@S.org", "vmta": "v"}).encode()
             for t, d in [("d", "A.org"), ("b", "b.org"), ("t", "c.org"), ("d", "a.org")]]
    path.write_bytes(b"\n".join(lines) + b"\nnot json\n")
    spec = TallySpec.of(BOUNCE)
    got, reader = reader_counts(path, None, spec, from_start=True)
    want, _ = records_counts(path, None, spec, from_start=True)
    assert got == want and sum(got.values()) == 3 and reader.skipped_rows == 1


def test_gzipped_rotation_is_counted(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "acct-2025-01-14-0001.csv.gz"
    data = messy(5, 100)
    path.write_bytes(gzip.compress(data))
    spec = TallySpec.of(BOUNCE)
    got, _ = reader_counts(path, None, spec, from_start=True)
    assert got == expected(data, spec)[0]


# --- big files through AcctReader ------------------------------------------------------------


def big_file(path: Path, rows: int, seed: int, *, multiline: float = 0.02,
             header_at: int | None = None) -> bytes:
    rng = random.Random(seed)
    parts = [csv_bytes(FIELDS_50, [])]
    for i in range(rows):
        if header_at is not None and i == header_at:
            parts.append(csv_bytes(FIELDS_55, []))
        diag = "first line\nsecond, line\nthird" if rng.random() < multiline else "ok"
        kind = rng.choice("ddddddbtq")
        parts.append(csv_bytes(FIELDS_55 if header_at is not None and i >= header_at
                               else FIELDS_50,
                               [row(type="tq" if kind == "q" else kind, dsnDiag=diag,
                                    vmta=f"vmta-{rng.randrange(5)}",
                                    timeLogged=f"2025-01-14 09:{rng.randrange(60):02d}:07+0100")],
                               header=False))
    data = b"".join(parts)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("chunk_size", [4096, 65536])
def test_big_file_with_a_header_change(tmp_path: Path, chunk_size: int) -> None:
    path = tmp_path / "acct.csv"
    data = big_file(path, 3000, seed=4, header_at=1600, multiline=0.3)
    spec = TallySpec.of(DEFERRAL)
    got, reader = reader_counts(path, None, spec, from_start=True, chunk_size=chunk_size)
    want, by_records = records_counts(path, None, spec, from_start=True, chunk_size=chunk_size)
    assert got == want == expected(data, spec)[0]
    assert reader.state.header == FIELDS_55
    assert reader.state.to_json() == by_records.state.to_json()


def test_record_being_written_at_the_end_of_a_big_file(tmp_path: Path) -> None:
    path = tmp_path / "acct.csv"
    data = big_file(path, 3000, seed=5)
    tail = csv_bytes(FIELDS_50, [row(dsnDiag="open\nrecord")], header=False)
    with path.open("ab") as fh:
        fh.write(tail[: tail.index(b"open\n") + 5])
    spec = TallySpec.of(BOUNCE)
    got, reader = reader_counts(path, None, spec, from_start=True, chunk_size=8192)
    assert got == expected(data, spec)[0]
    assert reader.state.tail is not None and reader.state.tail.offset == len(data)


@pytest.mark.parametrize("budget", [20, 25, 32, 40])
def test_deadline_runs_lose_and_repeat_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    """Runs of `budget` clock ticks each (a tick per clock reading), each resuming from the
    last one's state, until one finishes: every row counted once."""
    path = tmp_path / "acct.csv"
    data = big_file(path, 3000, seed=6)
    spec = TallySpec.of(BOUNCE)
    clock = iter(range(10**6))
    monkeypatch.setattr(logtail.time, "monotonic", lambda: next(clock) * 0.001)
    total: Counter[TallyKey] = Counter()
    state = None
    runs = 0
    while runs < 200:
        runs += 1
        reader = AcctReader(path, state, from_start=True, chunk_size=8192,
                            deadline=logtail.time.monotonic() + budget / 1000)
        for chunk in reader.tally(spec):
            total.update(chunk)
        state = reader.state
        if not reader.timed_out:
            break
    assert 1 < runs < 200  # the deadline did stop runs, and the last one finished
    assert total == expected(data, spec)[0]


# --- rotated files beside a single path: dated and numbered names ---------------------------


def test_dated_files_beside_numbered_rotations_are_read_once(tmp_path: Path) -> None:
    """PowerMTA's dated files and logrotate's numbered ones in one directory: the dated file
    sorts as newer than any numbered one, but was already read (or predates the state)."""
    live = tmp_path / "acct.csv"
    dated = tmp_path / "acct-2026-11-25-0000.csv"
    dated.write_bytes(csv_bytes(FIELDS_50, [row(rcpt="dated@x.org")]))
    live.write_bytes(csv_bytes(FIELDS_50, [row(rcpt="a@x.org")]))
    batch = read_new_records(live, None)
    seen: list[str] = []
    for step in range(4):
        with live.open("ab") as fh:
            fh.write(csv_bytes(FIELDS_50, [row(rcpt=f"late{step}@x.org")], header=False))
        for n in range(3, 0, -1):  # logrotate: acct.csv.2 -> .3, .1 -> .2, live -> .1
            older = tmp_path / f"acct.csv.{n}"
            if older.exists():
                older.rename(tmp_path / f"acct.csv.{n + 1}")
        live.rename(tmp_path / "acct.csv.1")
        live.write_bytes(csv_bytes(FIELDS_50, [row(rcpt=f"new{step}@x.org")]))
        state = AcctState.from_json(json.loads(json.dumps(batch.state.to_json())))
        batch = read_new_records(live, state)
        seen += [r.rcpt for r in batch.records]
    assert seen == [f"{kind}{step}@x.org" for step in range(4) for kind in ("late", "new")]


def test_a_new_dated_rotation_is_still_read(tmp_path: Path) -> None:
    live = tmp_path / "acct.csv"
    (tmp_path / "acct.csv.1").write_bytes(csv_bytes(FIELDS_50, [row(rcpt="old@x.org")]))
    live.write_bytes(csv_bytes(FIELDS_50, [row(rcpt="a@x.org")]))
    state = read_new_records(live, None).state
    with live.open("ab") as fh:
        fh.write(csv_bytes(FIELDS_50, [row(rcpt="b@x.org")], header=False))
    live.rename(tmp_path / "acct-2026-11-25-0001.csv")  # PowerMTA's own rotation
    live.write_bytes(csv_bytes(FIELDS_50, [row(rcpt="c@x.org")]))
    batch = read_new_records(live, state)
    assert [r.rcpt for r in batch.records] == ["b@x.org", "c@x.org"]
    batch = read_new_records(live, batch.state)
    assert batch.records == []


def test_files_rotated_while_a_run_reads_are_read_next_run(tmp_path: Path) -> None:
    """Two rotations after the run read the live file but before it ended: the file rotated
    twice is new to the next run, not one "seen" beside the path."""
    live = tmp_path / "acct.csv"
    live.write_bytes(csv_bytes(FIELDS_50, [row(rcpt="a@x.org")]))
    state = read_new_records(live, None).state
    with live.open("ab") as fh:
        fh.write(csv_bytes(FIELDS_50, [row(rcpt="b@x.org")], header=False))
    reader = AcctReader(live, state)
    records = reader.records()
    assert next(records).rcpt == "b@x.org"
    for name in ("c", "d"):  # live -> .1 (older .1 -> .2), a new live file with one record
        one = tmp_path / "acct.csv.1"
        if one.exists():
            one.rename(tmp_path / "acct.csv.2")
        live.rename(one)
        live.write_bytes(csv_bytes(FIELDS_50, [row(rcpt=f"{name}@x.org")]))
    assert list(records) == []
    batch = read_new_records(live, reader.state)
    assert [r.rcpt for r in batch.records] == ["c@x.org", "d@x.org"]


def test_seen_state_round_trip_and_garbage() -> None:
    state = AcctState("acct.csv", seen=[reader_module.SeenFile("1:2", "ab", 10, 5, 7)])
    assert AcctState.from_json(json.loads(json.dumps(state.to_json()))) == state
    loaded = AcctState.from_json({"spec": "acct.csv", "seen": [{"key": 1}, "x"]})
    assert loaded is not None and loaded.seen == []


def test_records_are_unchanged_by_the_tally_module() -> None:
    """record_key reads AcctRecord's own properties (the plugins' former per-record path)."""
    record = AcctRecord(type="b", orig="X@Mail.Example.ORG", rcpt="y@Z.net", dsn_diag="d")
    spec = TallySpec.of(BOUNCE)
    assert record_key(record, spec, {}) == (
        "b", None, ("mail.example.org", "z.net", "", "", "", "", "d"))


def test_required_fields_leave_out_records_of_a_layout_without_them(tmp_path: Path) -> None:
    """A type's records are not counted under a header lacking a required column (4.0 has no
    dlvTlsProtocol); other types are; the reader names the columns per file."""
    data = (csv_bytes(FIELDS_40, [row(type="d", rcpt="a@old.org"), row(type="b")])
            + csv_bytes(FIELDS_50, [row(type="d", rcpt="b@new.org"), row(type="b")]))
    path = tmp_path / "acct.csv"
    path.write_bytes(data)
    spec = TallySpec.of(TLS | {"b": ("rcpt_domain",)},
                        required={"d": ("dlv_esmtp_available", "dlv_tls_protocol")})
    got, reader = reader_counts(path, None, spec, from_start=True)
    assert Counter({(k[0], k[2][0]): n for k, n in got.items()}) == {
        ("b", "example.com"): 2, ("d", "new.org"): 1}
    assert reader.lacking(spec) == {str(path): ["dlvTlsProtocol"]}
    tally = tally_bytes(data, spec)
    assert sum(tally.take().values()) == 3


def test_required_fields_in_json_accounting(tmp_path: Path) -> None:
    path = tmp_path / "acct.json"
    path.write_text("".join(json.dumps({"type": "d", "rcpt": f"r@{d}.org",
                                        "dlvEsmtpAvailable": "STARTTLS"}) + "\n"
                            for d in ("a", "b")))
    spec = TallySpec.of(TLS, required={"d": ("dlv_tls_protocol",)})
    got, reader = reader_counts(path, None, spec, from_start=True)
    assert got == Counter() and reader.records_read == 2
    assert reader.lacking(spec) == {str(path): ["dlvTlsProtocol"]}


def test_outcome_fields_take_the_fast_path(engine: str) -> None:
    """Delays, MX hosts, masked replies and named columns are counted by the C scanner too:
    addresses in replies collapse into one key, delays land in their buckets with their sum."""
    rows = [row(type="b", rcpt=f"u{i}@gmail.com", bounceCat="bad-mailbox",
                dsnDiag=f"smtp;550 5.1.1 <u{i}@gmail.com>: unknown",
                dsnMta=f"gmail-smtp-in.l.google.com (192.0.2.{i % 7})",
                timeQueued="2025-01-14 09:11:03+0100" if i % 2 else "1736842320",
                totalSecondsQueued="" if i % 3 else "4000")
            for i in range(60)]
    data = csv_bytes(FIELDS_FBL, rows)
    tally = check_same(data, OUTCOMES)
    spec = TallySpec.of(OUTCOMES, delay_bounds=BOUNDS)
    counts = tally_bytes(data, spec).take()
    assert len(counts) == 3  # 4000 s, 60 s and 3 s: three buckets, one reply template
    by_bucket = {key[2][5]: n for key, n in counts.items()}
    assert by_bucket == {"4": 20, "2": 20, "1": 20}
    assert sorted(counts.sums.values()) == [20 * 3.0, 20 * 60.0, 20 * 4000.0]
    assert {key[2][1] for key in counts} == {"gmail-smtp-in.l.google.com"}
    assert {key[2][-1] for key in counts} == {"smtp;550 5.1.1 <@>: unknown"}
    if engine == "c":
        assert tally.fast_lines == 60
