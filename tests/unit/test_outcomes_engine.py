"""The outcomes engine against counts computed directly from the files the tests write: across
rotation and restarts (also after a crash), backfill by time, caps, malformed lines, complaints,
delays. Every test runs with the C scanner and without it."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pmta_snmp.acct import tally as tally_module
from pmta_snmp.outcomes.engine import NONE, EngineSettings, OutcomesEngine
from pmta_snmp.outcomes.view import OTHER, OutcomesView
from tests.conftest import require_c_scanner
from tests.unit.test_acct import FIELDS_55

HEADER = [*FIELDS_55, "repSourceIp", "feedbackType", "format", "userAgent", "reportingMta",
          "reportedDomain"]
NOW = datetime.now(UTC).replace(microsecond=0)
# What the test itself knows of its domains (not the engine's provider map).
DOMAINS = {"gmail.com": "gmail", "corp.example": "gmail", "hotmail.com": "microsoft",
           "yahoo.com": "yahoo", "example.org": "other"}
MX = {"corp.example": "aspmx.l.google.com (192.0.2.27)"}


@pytest.fixture(autouse=True, params=["c", "csv"])
def engine_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "csv":
        monkeypatch.setenv(tally_module.PURE_PYTHON_ENV, "1")
    else:
        monkeypatch.delenv(tally_module.PURE_PYTHON_ENV, raising=False)
        require_c_scanner()
    return str(request.param)


def stamp(when: datetime) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S%z")


class Writer:
    """Accounting rows of every kind, written to `acct.csv` (rotated on demand)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / "acct.csv"
        self.n = 0
        self.rotations = 0
        directory.mkdir(exist_ok=True)

    def rows(self, count: int, *, start: datetime | None = None, seed: int = 0
             ) -> list[dict[str, str]]:
        out = []
        for i in range(count):
            self.n += 1
            n = self.n + seed
            domain = list(DOMAINS)[n % len(DOMAINS)]
            logged = (start or NOW) - timedelta(seconds=(count - i) % 3000)
            kind = ("d", "b", "d", "t", "d", "f", "d", "tq", "d", "b")[n % 10]
            row = {"type": kind, "timeLogged": stamp(logged),
                   "timeQueued": stamp(logged - timedelta(seconds=n % 400)),
                   "orig": f"bounces@s{n % 3}.example.com", "rcpt": f"user{n}@{domain}",
                   "dsnMta": MX.get(domain, f"mx{n % 4}.{domain} (192.0.2.{n % 250})"),
                   "dlvSourceIp": ["198.51.100.20", "198.51.100.21", "2001:db8::25"][n % 3],
                   "vmta": f"vmta-{n % 2}", "queue": f"{domain}/vmta-{n % 2}"}
            if kind == "d":
                row.update(dsnStatus="2.0.0 (success)", bounceCat="success",
                           dsnDiag=f"smtp;250 2.0.0 Ok: queued as {n:x}")
                if n % 5 == 0:
                    row["totalSecondsQueued"] = "7"
            elif kind == "b":
                row.update(dsnStatus="5.7.1 (delivery not authorized, message refused)",
                           bounceCat="spam-related",
                           dsnDiag=f"smtp;554 5.7.1 Service unavailable; Client host "
                                   f"[{row['dlvSourceIp']}] blocked using zen.spamhaus.org <"
                                   f"user{n}@{domain}>") if n % 2 else row.update(
                    dsnStatus="5.1.1 (bad destination mailbox address)", bounceCat="bad-mailbox",
                    dsnDiag=f"smtp;550 5.1.1 <user{n}@{domain}>: unknown")
            elif kind == "t":
                row.update(dsnStatus="4.0.0 (undefined status)",
                           dsnDiag="smtp;421 4.7.0 Try again later")
            elif kind == "tq":
                row.update(rcpt="", orig="", timeQueued="")
            else:  # f: ARF from Yahoo for some, JMRP from Outlook.com without rcpt for others
                jmrp = n % 20 == 5
                row.update(timeQueued="", dlvSourceIp="", repSourceIp="198.51.100.21",
                           feedbackType="abuse" if n % 40 != 15 else "not-spam",
                           format="jmrp" if jmrp else "arf",
                           reportingMta="jmrp.hotmail.com" if jmrp else "arf.mail.yahoo.com",
                           reportedDomain="s1.example.com",
                           rcpt="" if jmrp else f"user{n}@yahoo.com")
            out.append(row)
        return out

    def write(self, rows: Iterable[dict[str, str]], *, broken: bytes = b"") -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")
        if not self.path.exists() or self.path.stat().st_size == 0:
            w.writerow(HEADER)
        for r in rows:
            w.writerow([r.get(f, "") for f in HEADER])
        with self.path.open("ab") as fh:
            fh.write(buf.getvalue().encode() + broken)

    def rotate(self) -> None:
        self.rotations += 1
        os.replace(self.path, self.dir / f"acct-2026-01-01-{self.rotations:04d}.csv")


def file_counts(directory: Path) -> dict[str, Counter[object]]:
    """Counts read straight from the files with csv (not the engine's code)."""
    out: dict[str, Counter[object]] = {k: Counter() for k in (
        "records", "delivered", "complaints", "listed", "results", "delay")}
    for path in sorted(directory.glob("acct*.csv")):
        with path.open(newline="", encoding="latin-1") as fh:
            for row in csv.DictReader(fh):
                if None in row or None in row.values():
                    continue  # a malformed line (another width)
                kind = row["type"]
                if kind not in ("d", "b", "t", "tq", "f"):
                    continue
                out["records"][kind] += 1
                domain = row["rcpt"].rpartition("@")[2]
                provider = DOMAINS.get(domain, "other")
                if kind == "d":
                    out["delivered"][provider] += 1
                    out["results"][(provider, "delivered")] += 1
                elif kind == "b":
                    listed = "spamhaus" in row["dsnDiag"]
                    out["results"][(provider, "block_bounce" if listed else "hard_bounce")] += 1
                    if listed:
                        out["listed"][(row["dlvSourceIp"], "spamhaus")] += 1
                elif kind == "t":
                    out["results"][(provider, "deferred")] += 1
                elif kind == "f" and row["feedbackType"] == "abuse":
                    who = "microsoft" if row["format"] == "jmrp" else provider
                    out["complaints"][(who, row["orig"].rpartition("@")[2])] += 1
                if kind in ("d", "b"):
                    if row["totalSecondsQueued"]:
                        delay = float(row["totalSecondsQueued"])
                    else:
                        delay = (datetime.strptime(row["timeLogged"], "%Y-%m-%d %H:%M:%S%z")
                                 - datetime.strptime(row["timeQueued"], "%Y-%m-%d %H:%M:%S%z")
                                 ).total_seconds()
                    out["delay"][provider] += delay
                    out["delay"][(provider, "n")] += 1
    return out


def view_counts(view: OutcomesView) -> dict[str, Counter[object]]:
    out: dict[str, Counter[object]] = {k: Counter() for k in (
        "records", "delivered", "complaints", "listed", "results", "delay")}
    out["records"].update(dict(view.records))
    for p in view.providers:
        if p.total.delivered:
            out["delivered"][p.provider] = p.total.delivered
        for result, n in p.total.items():
            if n:
                out["results"][(p.provider, result)] = n
        if p.delay.count:
            out["delay"][p.provider] = p.delay.sum
            out["delay"][(p.provider, "n")] = p.delay.count
    for c in view.complaints_by:
        out["complaints"][(c.provider, c.sending_domain)] = c.count
    for b in view.blocklist_rejections:
        out["listed"][(b.source_ip, b.blocklist)] = b.count
    return out


def settings(tmp_path: Path, files: str, **changes: object) -> EngineSettings:
    values: dict[str, object] = {"files": files, "state_dir": str(tmp_path / "state"),
                                 "backfill": 86400.0}
    values.update(changes)
    return EngineSettings(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("glob", [False, True], ids=["path", "glob"])
def test_counts_equal_the_files_across_rotation_and_restarts(tmp_path: Path, glob: bool
                                                             ) -> None:
    w = Writer(tmp_path / "acct")
    spec = str(w.dir / ("acct*.csv" if glob else "acct.csv"))
    w.write(w.rows(500))
    engine = OutcomesEngine(settings(tmp_path, spec))
    engine.read_all()
    assert view_counts(engine.view) == file_counts(w.dir)
    w.write(w.rows(300))
    w.rotate()
    w.write(w.rows(200))
    engine.read_all()
    engine.save()
    assert view_counts(engine.view) == file_counts(w.dir)
    # A restart: the counters go on from the saved ones, nothing counted twice.
    w.write(w.rows(100))
    engine = OutcomesEngine(settings(tmp_path, spec))
    assert engine.view.counting_since == engine.counting_since
    engine.read_all()
    assert view_counts(engine.view) == file_counts(w.dir)
    # A crash after reading without saving: the next start reads those records again, once.
    since = engine.counting_since
    engine.save()
    w.write(w.rows(150))
    w.rotate()
    w.write(w.rows(50))
    engine.read_all()  # never saved
    engine = OutcomesEngine(settings(tmp_path, spec))
    engine.read_all()
    assert view_counts(engine.view) == file_counts(w.dir)
    assert engine.view.counting_since == since  # no discontinuity


def test_first_start_reads_back_the_backfill_window_only(tmp_path: Path) -> None:
    w = Writer(tmp_path / "acct")
    old = w.rows(400, start=NOW - timedelta(days=3))
    w.write(old)
    w.rotate()
    w.write(w.rows(300, start=NOW - timedelta(hours=30)))
    recent = w.rows(200)
    w.write(recent)
    engine = OutcomesEngine(settings(tmp_path, str(w.dir / "acct.csv"), backfill=3600.0))
    view = engine.read_all()
    assert sum(n for _, n in view.records) == len(recent)
    assert view.last_hour.delivered == view.totals.delivered > 0
    # no backfill: from the end
    engine = OutcomesEngine(settings(tmp_path / "b", str(w.dir / "acct.csv"), backfill=0.0))
    assert sum(n for _, n in engine.read_all().records) == 0
    w.write(w.rows(10))
    assert sum(n for _, n in engine.read_all().records) == 10


def test_caps_fold_into_other_and_counters_only_grow(tmp_path: Path) -> None:
    w = Writer(tmp_path / "acct")
    w.write(w.rows(400))
    s = settings(tmp_path, str(w.dir / "acct.csv"), max_source_ips=2, max_sending_domains=2,
                 max_source_ip_series=3, max_complaint_domains=1)
    engine = OutcomesEngine(s)
    view = engine.read_all()
    ips = {r.source_ip for r in view.source_ips}
    assert len(ips) == 2 and OTHER in ips
    assert {r.sending_domain for r in view.sending_domains} >= {OTHER}
    assert len(view.sending_domains) == 2
    assert {c.sending_domain for c in view.complaints_by} == {OTHER}
    triples = {(s.source_ip, s.vmta, s.provider) for s in view.source_ip_outcomes}
    assert len(triples) <= 3 and (OTHER, OTHER, OTHER) in triples
    # the capped tables still sum to the totals
    assert sum((r.total for r in view.source_ips), type(view.totals)()) == view.totals
    assert sum(s.count for s in view.source_ip_outcomes) == view.totals.attempts
    before = {r.source_ip: r.total.attempts for r in view.source_ips}
    w.write(w.rows(200, seed=7))
    engine.save()
    view = OutcomesEngine(s).read_all()
    after = {r.source_ip: r.total.attempts for r in view.source_ips}
    assert set(after) == set(before) and all(after[k] >= before[k] for k in before)


def test_malformed_lines_are_counted_never_fatal(tmp_path: Path) -> None:
    w = Writer(tmp_path / "acct")
    w.write(w.rows(50), broken=b'b,too,few\r\n\xff\xfe,garbage\r\nd,"x"y,1\r\n')
    w.write(w.rows(50))
    engine = OutcomesEngine(settings(tmp_path, str(w.dir / "acct.csv")))
    view = engine.read_all()
    assert view.read_errors == 3
    assert view.records_of("d") == file_counts(w.dir)["records"]["d"]


def test_corrupt_state_starts_afresh_with_a_warning(tmp_path: Path) -> None:
    w, s = saved_state(tmp_path, lambda doc: "{not json")
    view = OutcomesEngine(s).read_all()
    assert any("not valid JSON" in x for x in view.warnings)
    assert view_counts(view) == file_counts(w.dir)


def saved_state(tmp_path: Path, edit: Callable[[dict[str, Any]], dict[str, Any] | str]
                ) -> tuple[Writer, EngineSettings]:
    """Accounting files an engine has read and saved its state for, that state then
    rewritten by `edit` (the JSON document in; the one to write out, or a text as it is)."""
    w = Writer(tmp_path / "acct")
    w.write(w.rows(40))
    s = settings(tmp_path, str(w.dir / "acct.csv"))
    engine = OutcomesEngine(s)
    engine.read_all()
    engine.save()
    doc = json.loads(engine.state_path.read_text())
    out = edit(doc)
    engine.state_path.write_text(out if isinstance(out, str) else json.dumps(out))
    return w, s


@pytest.mark.parametrize(("change", "said"), [
    ({"v": 99}, "version 99"),
    ({"acct": {"tail": 5}}, "reading position"),
    ({"since": "yesterday"}, "counting_since"),
    ({"counters": {"outcomes": [["gmail", "delivered", -50]]}}, "counters"),
    ({"counters": {"records": [["d", 1e300]]}}, "counters"),
    ({"counters": {"outcomes": "nope"}}, "counters"),
])
def test_a_state_of_another_version_or_malformed_is_said_and_counted_afresh(
        tmp_path: Path, change: dict[str, object], said: str) -> None:
    """A state file this version cannot use in full (another version, a part malformed)
    starts the counting afresh, once, from the files, and says so: not silently, and never
    with counters from it that went back, are negative or are not whole numbers."""
    w, s = saved_state(tmp_path, lambda doc: {**doc, **change})
    engine = OutcomesEngine(s)
    view = engine.read_all()
    assert any(said in x and "counting starts afresh" in x for x in view.warnings), \
        view.warnings
    assert view_counts(view) == file_counts(w.dir)


@pytest.mark.parametrize("newest", [float("nan"), float("inf"), 1e300, -1e300])
def test_a_newest_time_out_of_range_in_the_state_is_left_out(tmp_path: Path,
                                                             newest: float) -> None:
    """A state whose newest-record time is no time (NaN, out of range) starts and counts on:
    the view's datetime of it made every start fail."""
    w, s = saved_state(tmp_path, lambda doc: {**doc, "newest": newest})
    w.write(w.rows(10))
    view = OutcomesEngine(s).read_all()
    assert view_counts(view) == file_counts(w.dir)


def test_a_missing_file_is_no_error(tmp_path: Path) -> None:
    engine = OutcomesEngine(settings(tmp_path, str(tmp_path / "nowhere" / "acct*.csv")))
    view = engine.read_all()
    assert view.records == () and view.providers == ()


def test_complaints_arf_and_jmrp_and_mx_only_providers(tmp_path: Path) -> None:
    w = Writer(tmp_path / "acct")
    w.write(w.rows(400))
    view = OutcomesEngine(settings(tmp_path, str(w.dir / "acct.csv"))).read_all()
    by = {(c.provider, c.sending_domain): c.count for c in view.complaints_by}
    assert {p for p, _ in by} == {"yahoo", "microsoft"}  # ARF by rcpt, JMRP by reporter
    assert by == file_counts(w.dir)["complaints"]
    gmail = view.provider("gmail")
    assert gmail is not None
    # corp.example is only known by its Google MX: it counts for gmail
    assert gmail.total.delivered == file_counts(w.dir)["delivered"]["gmail"]
    ip = view.source_ip("198.51.100.21")
    assert ip is not None and ip.complaints == sum(by.values())
    assert view.source_ip("2001:db8::25") is not None
    assert view.source_ip("2001:db8::25").family == 6  # type: ignore[union-attr]
    assert all(r.source_ip != "" for r in view.source_ips)
    assert NONE not in {r.source_ip for r in view.source_ips}  # every record had an IP


def test_one_address_written_two_ways_is_one_source_ip(tmp_path: Path) -> None:
    """`2001:DB8::25` and `2001:db8::25` (or a bracketed or zero-padded form) are one source
    IP: one row, one series, one SNMP index, with the sum of the records of both texts (two
    rows under one SNMP index lost one row's counts)."""
    from pmta_snmp.mib.health import AgentHealth
    from pmta_snmp.mib.layout import build_varbinds, oid

    w = Writer(tmp_path / "acct")
    rows = []
    for text, n in (("2001:DB8::25", 3), ("2001:db8::25", 4), ("[2001:0db8::25]", 5),
                    ("198.51.100.20", 2), (" 198.51.100.20", 1)):
        for row in w.rows(n, seed=0):
            row.update(type="d", dlvSourceIp=text, dsnStatus="2.0.0 (success)",
                       bounceCat="success", dsnDiag="smtp;250 ok")
            rows.append(row)
    w.write(rows)
    engine = OutcomesEngine(settings(tmp_path, str(w.path)))
    view = engine.read_all()
    assert {s.source_ip: s.total.delivered for s in view.source_ips} == {
        "2001:db8::25": 12, "198.51.100.20": 3}
    assert sum(s.count for s in view.source_ip_outcomes if s.source_ip == "2001:db8::25") == 12
    out = dict(build_varbinds(None, AgentHealth(started_at=NOW), outcomes=view))
    column = oid("pmtaSourceIpDelivered")
    cells = {o[len(column):]: v.value for o, v in out.items() if o[:len(column)] == column}
    v6 = (2, 16, 0x20, 0x01, 0x0d, 0xb8, *([0] * 11), 0x25)
    assert cells == {v6: 12, (1, 4, 198, 51, 100, 20): 3}


def test_records_dated_ahead_count_as_of_now_in_the_last_hour_and_day(tmp_path: Path) -> None:
    """Records logged by a clock a year ahead are in the cumulative counters and in the last
    hour as of now; two hours (and a day) later they have left the last hour (and day) instead
    of staying there for the year until their timestamp."""
    w = Writer(tmp_path / "acct")
    rows = w.rows(30, start=NOW + timedelta(days=365))
    w.write(rows)
    expected = Counter(r["type"] for r in rows)
    now = [NOW.timestamp()]
    engine = OutcomesEngine(settings(tmp_path, str(w.path)), clock=lambda: now[0])
    view = engine.read_all()
    assert dict(view.records) == dict(expected)
    assert view.last_hour.delivered == expected["d"] > 0
    now[0] += 2 * 3600
    view = engine.read_all()
    assert view.last_hour.delivered == 0
    assert view.last_day.delivered == expected["d"]
    now[0] += 25 * 3600
    view = engine.read_all()
    assert (view.last_day.delivered, view.complaints_last_day) == (0, 0)
    assert view.totals.delivered == expected["d"]


@pytest.mark.parametrize("spec", ["acct.csv", "acct*.csv"])
def test_files_that_do_not_exist_are_said_while_they_do_not(tmp_path: Path, spec: str) -> None:
    """`poll --acct-file` with a mistyped path printed empty tables and nothing else: the view
    says that no file matches (no error: the exporter waits for PowerMTA to write it), and
    stops saying it once the file is there."""
    w = Writer(tmp_path / "acct")
    engine = OutcomesEngine(settings(tmp_path, str(w.dir / spec)))
    view = engine.read_all()
    assert view.records == ()
    assert [x for x in view.warnings if str(w.dir / spec) in x and "no accounting file" in x]
    w.write(w.rows(20))
    view = engine.read_all()
    assert view_counts(view) == file_counts(w.dir)
    assert not [x for x in view.warnings if "no accounting file" in x]


def test_memory_kept_after_reading_many_distinct_records_stays_small(tmp_path: Path) -> None:
    """Forty thousand records that all differ (a sending domain each) leave the engine
    holding a bounded cache of their classifications, not one per record: the exporter kept
    200,000 of them (about 1.6 KB each, 330 MB) for good after a high-cardinality catch-up.
    Measured with tracemalloc (Python's own allocations; no timing)."""
    import gc
    import tracemalloc

    w = Writer(tmp_path / "acct")
    rows = w.rows(40_000)
    for i, row in enumerate(rows):
        row["orig"] = f"bounces@s{i}.example.com"
    w.write(rows)
    engine = OutcomesEngine(settings(tmp_path, str(w.path), persist=False))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # One pass without a deadline: the same chunks however fast the machine is.
        assert engine.read(budget=0)
        view = engine.view
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    counted, expected = view_counts(view), file_counts(w.dir)
    del counted["complaints"], expected["complaints"]  # their sending domains are capped
    assert counted == expected
    assert kept < 30 << 20, f"{kept / 2**20:.0f} MiB kept"


def test_full_caps_fold_values_before_the_keys_of_a_chunk_pile_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a cap is full, the tally counts a new sending domain or source IP as (other)
    before it makes a key, so a catch-up of many distinct domains hands the engine few
    keys: before, every domain was a key of its own until the engine classified it (a
    100k-domain catch-up peaked at 550 MiB), and the counts are the same."""
    w = Writer(tmp_path / "acct")
    rows = w.rows(3000)
    for i, row in enumerate(rows):
        row["orig"] = f"bounces@s{i}.example.com"
        if row["dlvSourceIp"]:
            row["dlvSourceIp"] = f"198.51.{i // 250}.{i % 250}"
    w.write(rows)
    engine = OutcomesEngine(settings(tmp_path, str(w.path), persist=False,
                                     max_sending_domains=4, max_source_ips=3))
    handed: set[tuple[str, tuple[str, ...]]] = set()
    add = engine._add

    def spy(counts: Any, *args: Any) -> None:
        handed.update((kind, values) for kind, _, values in counts)
        add(counts, *args)

    monkeypatch.setattr(engine, "_add", spy)
    view = engine.read_all()
    senders = {values[4] for kind, values in handed if kind in ("d", "b", "t")}
    ips = {values[2] for kind, values in handed if kind in ("d", "b", "t")}
    assert len(senders) == 4 and OTHER in senders  # three admitted, the rest folded
    assert len(ips) == 3 and OTHER in ips
    counted, expected = view_counts(view), file_counts(w.dir)
    del counted["complaints"], expected["complaints"]  # their sending domains are capped
    del counted["listed"], expected["listed"]  # per source IP: capped
    assert counted == expected
    assert {r.sending_domain for r in view.sending_domains} == senders
    sent = [r for r in rows if r["type"] in ("d", "b", "t")]
    assert sum(r.total.attempts for r in view.sending_domains) == len(sent)
    assert dict(view.other_items)["sending_domain"] == len({r["orig"] for r in sent}) - 3
    listed = sum(n for k, n in file_counts(w.dir)["listed"].items())
    assert sum(b.count for b in view.blocklist_rejections) == listed


def complaint_rows(w: Writer, domains: Iterable[str]) -> list[dict[str, str]]:
    """One ARF abuse report from Yahoo per domain (orig in that domain)."""
    out = []
    for domain in domains:
        (row,) = w.rows(1)
        row.update(type="f", timeQueued="", dlvSourceIp="", repSourceIp="198.51.100.21",
                   feedbackType="abuse", format="arf", reportingMta="arf.mail.yahoo.com",
                   reportedDomain=domain, orig=f"bounces@{domain}", rcpt="u@yahoo.com",
                   dsnStatus="", dsnDiag="", bounceCat="")
        out.append(row)
    return out


def delivery_rows(w: Writer, domains: Iterable[str]) -> list[dict[str, str]]:
    out = []
    for domain in domains:
        (row,) = w.rows(1)
        row.update(type="d", orig=f"bounces@{domain}", dsnStatus="2.0.0 (success)",
                   bounceCat="success", dsnDiag="smtp;250 ok")
        out.append(row)
    return out


def test_complaints_alone_take_no_sending_domain_slot(tmp_path: Path) -> None:
    """Domains with complaints only (reports for mail sent before the counting began, or any
    domain a report names) are counted in the complaints, under their own cap, and leave the
    slots of max_sending_domains to the domains mail is sent for: before, ten reports filled
    the cap with domains that had no row, and every real sending domain was (other)."""
    w = Writer(tmp_path / "acct")
    reported = [f"old{i}.example.net" for i in range(10)]
    w.write(complaint_rows(w, reported))
    w.write(delivery_rows(w, ["news.example.com", "shop.example.com", "news.example.com"]))
    s = settings(tmp_path, str(w.path), max_sending_domains=3, max_complaint_domains=0)
    engine = OutcomesEngine(s)
    view = engine.read_all()
    assert {r.sending_domain: r.total.delivered for r in view.sending_domains} == {
        "news.example.com": 2, "shop.example.com": 1}
    assert {c.sending_domain: c.count for c in view.complaints_by} == dict.fromkeys(reported, 1)
    assert view.complaints == 10
    # the cap still holds: a third sending domain is (other)
    w.write(delivery_rows(w, ["third.example.com"]))
    view = engine.read_all()
    assert {r.sending_domain for r in view.sending_domains} == {
        "news.example.com", "shop.example.com", OTHER}
    assert dict(view.other_items)["sending_domain"] == 1


def test_a_state_with_complaint_domains_admitted_frees_their_slots(tmp_path: Path) -> None:
    """A state file of the version that admitted complaints' domains as sending domains: on
    restart those slots are free again, the counters are kept as they are."""
    w = Writer(tmp_path / "acct")
    w.write(delivery_rows(w, ["news.example.com"]))
    s = settings(tmp_path, str(w.path), max_sending_domains=3)
    engine = OutcomesEngine(s)
    engine.read_all()
    engine.save()
    doc = json.loads(engine.state_path.read_text())
    doc["admitted"]["domain"] = ["news.example.com", "old1.example.net", "old2.example.net"]
    engine.state_path.write_text(json.dumps(doc))
    since = engine.counting_since
    engine = OutcomesEngine(s)
    assert engine.counting_since == since and not engine.view.warnings  # the state was taken
    w.write(delivery_rows(w, ["shop.example.com"]))
    view = engine.read_all()
    assert {r.sending_domain: r.total.delivered for r in view.sending_domains} == {
        "news.example.com": 1, "shop.example.com": 1}


def test_a_zoned_source_ip_keeps_its_zone_in_the_label_and_the_index(tmp_path: Path) -> None:
    """A link-local source address with its zone (`fe80::1%lo`) is named with the zone in
    the view (the source_ip label of /metrics) and indexed ipv6z(4) with the zone's index in
    pmtaSourceIpTable; the same address without a zone is another source IP."""
    from pmta_snmp.exporter_outcomes import outcome_families
    from pmta_snmp.mib.health import AgentHealth
    from pmta_snmp.mib.layout import build_varbinds, oid

    w = Writer(tmp_path / "acct")
    rows = []
    for text, n in (("fe80::1%lo", 3), ("FE80::1%lo", 2), ("fe80::1", 4)):
        for row in w.rows(n, seed=0):
            row.update(type="d", dlvSourceIp=text, dsnStatus="2.0.0 (success)",
                       bounceCat="success", dsnDiag="smtp;250 ok")
            rows.append(row)
    w.write(rows)
    view = OutcomesEngine(settings(tmp_path, str(w.path))).read_all()
    assert {s.source_ip: s.total.delivered for s in view.source_ips} == {
        "fe80::1%lo": 5, "fe80::1": 4}
    labels = {s.labels["source_ip"] for f in outcome_families(view) for s in f.samples
              if "source_ip" in s.labels}
    assert labels == {"fe80::1%lo", "fe80::1"}
    out = dict(build_varbinds(None, AgentHealth(started_at=NOW), outcomes=view))
    column = oid("pmtaSourceIpDelivered")
    cells = {o[len(column):]: v.value for o, v in out.items() if o[:len(column)] == column}
    link = (0xfe, 0x80, *([0] * 13), 1)
    zone = tuple(socket.if_nametoindex("lo").to_bytes(4, "big"))
    assert cells == {(4, 20, *link, *zone): 5, (2, 16, *link): 4}


def test_a_pass_that_fails_partway_counts_nothing_twice(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that fails after chunks were added (an I/O error on the files) left them counted
    while the position stayed before them: the next pass counted them again. The engine goes
    back to its last save (position and counters together) and reads them once."""
    from pmta_snmp.acct.reader import AcctReader

    w = Writer(tmp_path / "acct")
    w.write(w.rows(300))
    engine = OutcomesEngine(settings(tmp_path, str(w.path)))
    engine.read_all()
    engine.save()
    w.write(w.rows(200))
    real = AcctReader.tally

    def fails_after_one_chunk(self: AcctReader, spec: Any) -> Iterator[Any]:
        chunks = real(self, spec)
        yield next(chunks)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(AcctReader, "tally", fails_after_one_chunk)
    engine.read()
    assert any("Input/output error" in x for x in engine.view.warnings)
    monkeypatch.undo()
    engine.read_all()
    assert view_counts(engine.view) == file_counts(w.dir)


class _CountedScans(dict[tuple[str, ...], int]):
    """A counters table that counts the full scans made of it."""

    scans = 0

    def items(self) -> Any:
        type(self).scans += 1
        return super().items()


def test_the_view_scans_each_table_a_fixed_number_of_times(tmp_path: Path) -> None:
    """Building the view scanned the sending-domain and complaint tables once per sending
    domain: quadratic, 23 s for 20k domains and no end for 100k without a cap
    (max_sending_domains = 0). The scans must not grow with the rows."""
    engine = OutcomesEngine(settings(tmp_path, str(tmp_path / "acct.csv"),
                                     max_sending_domains=0, persist=False))
    c = engine.counters
    c.sending = _CountedScans({(f"d{i}.example.com", r): i + 1
                               for i in range(300) for r in ("delivered", "deferred")})
    c.complaints = _CountedScans({("gmail", f"d{i}.example.com"): 1 for i in range(300)})
    c.ips = _CountedScans({(f"198.51.100.{i}", "delivered"): 1 for i in range(200)})
    _CountedScans.scans = 0
    view = engine._build_view()
    assert len(view.sending_domains) == 300 and len(view.source_ips) == 200
    assert view.sending_domains[0].complaints == 1
    assert _CountedScans.scans <= 12, _CountedScans.scans
