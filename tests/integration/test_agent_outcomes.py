"""pmtaProviderTable and pmtaSourceIpTable from `pmta-snmp agentx` behind a real snmpd and from
`pmta-snmp agent`, against counts the test takes straight from the accounting files it writes
(its own csv reading and its own domain and blocklist tables, not the engine's code): IPv4 and
IPv6 source IPs, the source IP cap, and a poll worker killed while the files grow (no record
counted twice or lost, no counter going back)."""

from __future__ import annotations

import csv
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import pytest

from pmta_snmp.mib.layout import OBJECTS, Kind, layout
from pmta_snmp.netsnmp import (
    SnmpdMaster,
    SnmpVarBind,
    TrapReceiver,
    child_pids,
    free_udp_port,
    parse_varbinds,
    stop_process,
)
from pmta_snmp.sim import Simulator

pytestmark = pytest.mark.snmpd

LAY = layout()
BASE = LAY.base
PROVIDERS_ARC = ".".join(map(str, (*BASE, 1, 14)))
SOURCE_IPS_ARC = ".".join(map(str, (*BASE, 1, 15)))
ACCT_ARC = ".".join(map(str, (*BASE, 1, 13)))

# --- the accounting files the test writes, and what it counts in them --------------------

HEADER = ["type", "timeLogged", "timeQueued", "orig", "rcpt", "orcpt", "dsnAction",
          "dsnStatus", "dsnDiag", "dsnMta", "bounceCat", "srcType", "srcMta", "dlvType",
          "dlvSourceIp", "dlvDestinationIp", "dlvEsmtpAvailable", "dlvSize", "vmta", "jobId",
          "envId", "queue", "vmtaPool", "dlvTlsProtocol", "dlvTlsCipher", "repSourceIp",
          "feedbackType", "format", "userAgent", "reportingMta", "reportedDomain"]
# The test's own provider table (recipient domain -> provider id of the issue).
DOMAINS = {"gmail.com": "gmail", "outlook.com": "microsoft", "hotmail.com": "microsoft",
           "yahoo.com": "yahoo", "example.net": "other"}
MX = {"gmail.com": "gmail-smtp-in.l.google.com", "outlook.com":
      "outlook-com.olc.protection.outlook.com", "hotmail.com":
      "hotmail-com.olc.protection.outlook.com", "yahoo.com": "mta5.am0.yahoodns.net",
      "example.net": "mx.example.net"}
# (result, bounceCat, dsnStatus, dsnDiag) of the b and t rows the test writes.
HARD = ("b", "bad-mailbox", "5.1.1", "smtp;550 5.1.1 <{rcpt}>: Recipient address rejected: "
        "User unknown")
SOFT = ("b", "quota-issues", "5.2.2", "smtp;552 5.2.2 <{rcpt}> Mailbox full")
BLOCK = ("b", "spam-related", "5.7.1", "smtp;554 5.7.1 Service unavailable; Client host "
         "[{ip}] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/{ip}")
EXPIRED = ("b", "message-expired", "4.4.7", "smtp;421 4.4.7 Message expired")
DEFER = ("t", "other", "4.7.0", "smtp;421 4.7.0 [TSS04] Messages from {ip} temporarily "
         "deferred due to unexpected volume or user complaints")
DEFER_LISTED = ("t", "spam-related", "4.7.1", "smtp;451 4.7.1 Client host [{ip}] blocked "
                "using b.barracudacentral.org")
BLOCKLIST_NAMED = re.compile(r"zen\.spamhaus\.org|barracudacentral\.org")


@dataclass
class Truth:
    """What the files hold, counted here: per provider and per source IP."""

    providers: dict[str, Counter[str]] = field(default_factory=dict)
    ips: dict[str, Counter[str]] = field(default_factory=dict)
    records: int = 0

    def add(self, provider: str, ip: str, what: str) -> None:
        self.providers.setdefault(provider, Counter())[what] += 1
        self.ips.setdefault(ip, Counter())[what] += 1


def read_truth(directory: Path) -> Truth:
    """Counts from the files themselves (csv, the tables above)."""
    truth = Truth()
    for path in sorted(directory.glob("acct*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                truth.records += 1
                provider = DOMAINS[row["rcpt"].rpartition("@")[2]]
                kind = row["type"]
                if kind == "d":
                    truth.add(provider, row["dlvSourceIp"], "delivered")
                elif kind == "f":
                    truth.add(provider, row["repSourceIp"], "complaints")
                else:
                    what = "deferred" if kind == "t" else {
                        "bad-mailbox": "hard", "quota-issues": "soft", "spam-related": "block",
                        "message-expired": "expired"}[row["bounceCat"]]
                    truth.add(provider, row["dlvSourceIp"], what)
                    if BLOCKLIST_NAMED.search(row["dsnDiag"]):
                        truth.add(provider, row["dlvSourceIp"], "listed")
    return truth


class AcctFiles:
    """Writes accounting records into `acct-N.csv` files, all timed in the last few minutes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.files = 0
        self.n = 0

    def write(self, rows: list[dict[str, str]]) -> Path:
        self.files += 1
        path = self.directory / f"acct-{self.files}.csv"
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            out = csv.DictWriter(fh, HEADER)
            out.writeheader()
            for row in rows:
                out.writerow(row)
        tmp.replace(path)  # a file appears whole: the agent never sees half a row
        return path

    def rows(self, ips: list[str], per_ip: int) -> list[dict[str, str]]:
        """`per_ip` deliveries from each IP, and bounces, deferrals and complaints in a fixed
        pattern over the providers, so that every count differs between rows."""
        now = time.time()
        out: list[dict[str, str]] = []
        domains = list(DOMAINS)
        for k, ip in enumerate(ips):
            for j in range(per_ip + 3 * k):
                self.n += 1
                domain = domains[(j + k) % len(domains)]
                rcpt = f"user{self.n}@{domain}"
                when = now - 300 + (self.n % 200)
                row = {"type": "d", "rcpt": rcpt, "orig": "news@mail.example.com",
                       "timeLogged": stamp(when), "timeQueued": stamp(when - 30),
                       "dlvSourceIp": ip, "vmta": f"vmta-{k}", "dsnAction": "relayed",
                       "dsnStatus": "2.0.0", "dsnDiag": "smtp;250 2.0.0 OK",
                       "dsnMta": f"{MX[domain]} (192.0.2.200)", "bounceCat": ""}
                spec = None
                if j % 5 == 1:
                    spec = (HARD, SOFT, BLOCK, EXPIRED)[(j // 5 + k) % 4]
                elif j % 7 == 2:
                    spec = DEFER_LISTED if k % 2 == 0 else DEFER
                if spec is not None:
                    kind, cat, status, diag = spec
                    row.update(type=kind, bounceCat=cat, dsnStatus=status,
                               dsnAction="failed" if kind == "b" else "delayed",
                               dsnDiag=diag.format(rcpt=rcpt, ip=ip))
                out.append(row)
                if j % 11 == 3:  # a complaint about an earlier delivery
                    self.n += 1
                    out.append({"type": "f", "timeLogged": stamp(when), "rcpt": rcpt,
                                "orig": "news@mail.example.com", "repSourceIp": ip,
                                "feedbackType": "abuse", "format": "arf",
                                "reportingMta": f"feedback.{domain}",
                                "reportedDomain": "mail.example.com"})
        return out


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S%z")


# --- the tables as an SNMP manager sees them ----------------------------------------------

COLUMNS = {LAY.oid(o.name): o.name for o in OBJECTS if o.kind is Kind.COLUMN}


def rows_of(varbinds: list[SnmpVarBind]) -> dict[str, dict[str, dict[str, str]]]:
    """{table: {row name: {column: value}}}: provider rows by id, source IP rows by the
    address decoded from the InetAddressType/InetAddress index ('(other)' for unknown(0))."""
    out: dict[str, dict[str, dict[str, str]]] = {"provider": {}, "ip": {}}
    for vb in varbinds:
        oid = tuple(int(x) for x in vb.oid.split("."))
        column = next(((c, n) for c, n in COLUMNS.items() if oid[: len(c)] == c), None)
        if column is None:
            continue
        index = oid[len(column[0]):]
        if column[1].startswith("pmtaProvider"):
            assert index[0] == len(index) - 1
            name = bytes(index[1:]).decode()
            out["provider"].setdefault(name, {})[column[1]] = vb.value
        else:
            kind, length, *octets = index
            assert length == len(octets) == {0: 0, 1: 4, 2: 16}[kind], index
            name = str(ipaddress.ip_address(bytes(octets))) if octets else "(other)"
            out["ip"].setdefault(name, {})[column[1]] = vb.value
    return out


def hundredths(numerator: int, denominator: int) -> int:
    if denominator == 0:
        return 0
    return int(Fraction(numerator * 10000, denominator) + Fraction(1, 2))


def expected_cells(what: str, c: Counter[str]) -> dict[str, str]:
    """The cells of one row as the files say they must read (all records are in the hour)."""
    final = c["delivered"] + c["hard"] + c["soft"] + c["block"] + c["expired"]
    cells = {
        "Delivered": c["delivered"], "HardBounces": c["hard"], "SoftBounces": c["soft"],
        "BlockBounces": c["block"], "Deferrals": c["deferred"], "Expired": c["expired"],
        "Complaints": c["complaints"], "BlocklistRejections": c["listed"],
        "LastHourRecipients": final, "LastHourDelivered": c["delivered"],
        "LastHourHardBounceRate": hundredths(c["hard"], final),
        "LastHourBlockRate": hundredths(c["block"], final),
        "LastHourDeferralRate": hundredths(c["deferred"], final + c["deferred"]),
        "LastHourComplaintRate": hundredths(c["complaints"], c["delivered"]),
        "LastHourBlocklistRejections": c["listed"],
    }
    return {f"pmta{what}{k}": str(v) for k, v in cells.items()}


def mismatches(tables: dict[str, dict[str, dict[str, str]]], truth: Truth,
               admitted_ips: int | None = None) -> list[str]:
    """What differs between the walked tables and the files ([] when all agree). With a cap,
    each address row must equal the files' count for that address and the unknown(0) row the
    rest (which addresses the cap admits is the engine's choice: the first met)."""
    bad: list[str] = []
    if set(tables["provider"]) != set(truth.providers):
        bad.append(f"providers {sorted(tables['provider'])} != {sorted(truth.providers)}")
    for name, counts in truth.providers.items():
        want = expected_cells("Provider", counts)
        got = {k: v for k, v in tables["provider"].get(name, {}).items() if k in want}
        if got != want:
            bad.append(f"provider {name}: {got} != {want}")
    ips = dict(truth.ips)
    if admitted_ips is not None:
        rows = tables["ip"]
        listed = [ip for ip in rows if ip != "(other)"]
        if len(listed) != admitted_ips:
            bad.append(f"{len(listed)} address rows, want {admitted_ips}")
        other: Counter[str] = Counter()
        for ip in list(ips):
            if ip not in listed:
                other.update(ips.pop(ip))
        ips["(other)"] = other
    if set(tables["ip"]) != set(ips):
        bad.append(f"source IPs {sorted(tables['ip'])} != {sorted(ips)}")
    for ip, counts in ips.items():
        want = expected_cells("SourceIp", counts)
        got = {k: v for k, v in tables["ip"].get(ip, {}).items() if k in want}
        if got != want:
            bad.append(f"source IP {ip}: {got} != {want}")
        if ip != "(other)" and tables["ip"].get(ip, {}).get("pmtaSourceIpName") != ip:
            bad.append(f"source IP {ip}: name {tables['ip'].get(ip)}")
    return bad


def counters(tables: dict[str, dict[str, dict[str, str]]]) -> dict[tuple[str, str, str], int]:
    """Every Counter64 cell, to compare two walks (a counter never goes back)."""
    c64 = {o.name for o in OBJECTS if o.syntax == "Counter64"}
    return {(t, row, col): int(v) for t, rows in tables.items() for row, cells in rows.items()
            for col, v in cells.items() if col in c64}


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def spawn(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items()
           if k != "PMTA_API_KEY"}  # the state dir: the test's own (conftest)
    log = (tmp_path / "agent.log").open("a")
    return subprocess.Popen([sys.executable, "-m", "pmta_snmp", *args], stdout=log,
                            stderr=subprocess.STDOUT, text=True, env=env)


def config(tmp_path: Path, body: str = "", save_interval: float = 0.5) -> Path:
    """The agent's config: accounting read every 0.2 s and saved every `save_interval` s (not
    the 30 s default, which a test would wait for)."""
    path = tmp_path / "agent.toml"
    path.write_text(f"[poll]\ninterval = 1\n[acct]\ninterval = 0.2\n"
                    f"save_interval = {save_interval}\n{body}")
    return path


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(scenario="healthy", seed=5, speed=0) as s:
        yield s


IPS = ["192.0.2.10", "198.51.100.20", "2001:db8::25", "2001:db8:0:1::7"]


@pytest.mark.timeout(300)  # hang guard
def test_agentx_tables_equal_the_files_across_a_worker_restart(
    sim: Simulator, snmpd_factory: Callable[..., SnmpdMaster], tmp_path: Path
) -> None:
    files = AcctFiles(tmp_path / "acct")
    files.write(files.rows(IPS, 40))  # files the agent has never seen
    master = snmpd_factory()
    # Saves 2 s apart, reads every 0.2 s: between two saves the engine has read more than it
    # saved, which a tree must not show (a killed worker's successor continues from the save).
    proc = spawn(["agentx", "--url", sim.url, "--agentx-socket", master.agentx_address,
                  "--config", str(config(tmp_path, save_interval=2)),
                  "--acct-file", str(tmp_path / "acct" / "acct-*.csv"),
                  "--state-dir", str(tmp_path / "state")], tmp_path)

    def walk() -> dict[str, dict[str, dict[str, str]]]:
        return rows_of(master.bulkwalk(PROVIDERS_ARC) + master.bulkwalk(SOURCE_IPS_ARC))

    try:
        truth = read_truth(tmp_path / "acct")
        assert {"gmail", "microsoft", "yahoo", "other"} <= set(truth.providers)
        assert all(truth.ips[ip]["listed"] for ip in IPS[::2])
        assert sum(c["complaints"] for c in truth.ips.values()) > 0
        wait_for(lambda: not mismatches(walk(), truth), 60, "the tables to equal the files")
        acct = {vb.oid.rsplit(".", 2)[-2]: vb for vb in master.bulkwalk(ACCT_ARC)}
        assert acct["6"].type == "Counter64" and int(acct["6"].value) == truth.records
        assert acct["8"].value == "2"  # backfilling: false, caught up
        assert acct["10"].type == "Gauge32"  # pmtaAcctReadAge, computed when read (unit-tested)

        before = counters(walk())
        went_back: list[dict[tuple[str, str, str], tuple[int, int | None]]] = []

        def caught_up() -> bool:
            tables = walk()
            now = counters(tables)
            gone_back = {k: (v, now.get(k)) for k, v in before.items() if now.get(k, 0) < v}
            if gone_back:
                went_back.append(gone_back)
            before.update(now)
            return not mismatches(tables, truth)

        for ips, per_ip in ((IPS[1:], 25), (IPS[2:], 5)):  # the second soon after a save
            files.write(files.rows(ips, per_ip))
            truth = read_truth(tmp_path / "acct")
            wait_for(caught_up, 60, "the new file to be counted")
        [worker] = child_pids(proc.pid)  # killed as soon as it showed the second file
        files.write(files.rows(IPS[:3], 15))  # the files grow ...
        os.kill(worker, signal.SIGKILL)  # ... and the worker dies at any point of reading them
        files.write(files.rows(IPS[:2], 10))
        truth = read_truth(tmp_path / "acct")
        wait_for(caught_up, 90, "the new worker to count on")
        assert went_back == []  # no counter went back, not even for one walk
        assert child_pids(proc.pid) != [worker]
        assert mismatches(walk(), truth) == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        stop_process(proc)
    log = (tmp_path / "agent.log").read_text()
    assert "Traceback" not in log, log


@pytest.mark.parametrize("isolation", ["process", "thread"])
@pytest.mark.timeout(300)
def test_standalone_agent_serves_the_tables_with_the_cap_and_no_powermta(
    isolation: str, tmp_path: Path
) -> None:
    """The config file's [acct] keys (files, state_dir, max_source_ips) as the exporter takes
    them; PowerMTA's API unreachable: the outcome tables are there all the same."""
    files = AcctFiles(tmp_path / "acct")
    ips = [*IPS, "203.0.113.5", "2001:db8::99"]
    files.write(files.rows(ips, 20))
    port = free_udp_port()
    (tmp_path / "community").write_text("outcomes-community\n")
    cfg = config(tmp_path, (
        f'files = "{tmp_path}/acct/acct-*.csv"\nstate_dir = "{tmp_path}/state"\n'
        "max_source_ips = 4\n"
        f'[pmta]\nurl = "http://127.0.0.1:{free_udp_port()}"\ntimeout = 1\n'
        f'[snmp]\nlisten = "udp:127.0.0.1:{port}"\ncommunity_file = "{tmp_path}/community"\n'
    ).replace("[poll]\ninterval = 1\n", f'[poll]\ninterval = 1\nisolation = "{isolation}"\n'))
    proc = spawn(["agent", "--config", str(cfg)], tmp_path)

    def snmp(tool: str, oid: str) -> list[SnmpVarBind]:
        res = subprocess.run([tool, "-v2c", "-c", "outcomes-community", "-On", "-m", "", "-t",
                              "2", "-r", "1", f"udp:127.0.0.1:{port}", oid],
                             capture_output=True, text=True, timeout=60, check=False)
        return parse_varbinds(res.stdout)

    def walk() -> dict[str, dict[str, dict[str, str]]]:
        return rows_of(snmp("snmpbulkwalk", PROVIDERS_ARC) + snmp("snmpbulkwalk",
                                                                    SOURCE_IPS_ARC))

    try:
        truth = read_truth(tmp_path / "acct")
        # max_source_ips = 4: three addresses of their own, the rest in the unknown(0) row
        wait_for(lambda: not mismatches(walk(), truth, admitted_ips=3), 60,
                 "the tables to equal the files")
        other = {vb.oid.rsplit(".", 2)[-2]: vb.value for vb in snmp("snmpwalk",
                                                                    SOURCE_IPS_ARC + ".2")}
        assert other == {"2": str(len(ips) - 3)}  # pmtaSourceIpsOther
        reachable = snmp("snmpget", ".".join(map(str, LAY.instance("pmtaAgentApiReachable"))))
        assert reachable[0].value == "2"  # no PowerMTA: the outcomes are served regardless
        read_age = snmp("snmpget", ".".join(map(str, LAY.instance("pmtaAcctReadAge"))))
        assert read_age[0].type == "Gauge32", read_age
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(15) == 0
        finally:
            stop_process(proc)
    assert (tmp_path / "state" / "agent").is_dir()  # the agents' state, not the exporter's


@pytest.mark.timeout(300)
def test_ipv6_source_ips_walk_in_index_order(tmp_path: Path) -> None:
    """snmpwalk (GetNext, strict OID order) through the standalone agent: IPv4 rows before
    IPv6 rows (by InetAddressType), each address 4 or 16 octets after its type and length, an
    IPv4-mapped IPv6 address an IPv6 row, a link-local address with a zone an ipv6z(4) row
    (20 octets: the zone index last) after them."""
    files = AcctFiles(tmp_path / "acct")
    files.write(files.rows(["2001:db8::1", "192.0.2.1", "::ffff:192.0.2.9", "fe80::1%lo"], 5))
    lo = ".".join(map(str, socket.if_nametoindex("lo").to_bytes(4, "big")))
    port = free_udp_port()
    (tmp_path / "community").write_text("c6\n")
    cfg = config(tmp_path, (
        f'files = "{tmp_path}/acct/acct-*.csv"\nstate_dir = "{tmp_path}/state"\n'
        f'[pmta]\nurl = "http://127.0.0.1:{free_udp_port()}"\ntimeout = 1\n'
        f'[snmp]\nlisten = "udp:127.0.0.1:{port}"\ncommunity_file = "{tmp_path}/community"\n'))
    proc = spawn(["agent", "--config", str(cfg)], tmp_path)
    name_column = ".".join(map(str, LAY.oid("pmtaSourceIpName")))

    def names() -> list[SnmpVarBind]:
        res = subprocess.run(["snmpwalk", "-v2c", "-c", "c6", "-On", "-m", "", "-t", "2",
                              f"udp:127.0.0.1:{port}", name_column],
                             capture_output=True, text=True, timeout=60, check=False)
        return parse_varbinds(res.stdout)

    try:
        wait_for(lambda: len(names()) == 4, 60, "four source IP rows")
        got = [(vb.oid[len(name_column) + 1:], vb.value) for vb in names()]
        assert got == [
            ("1.4.192.0.2.1", "192.0.2.1"),
            ("2.16.0.0.0.0.0.0.0.0.0.0.255.255.192.0.2.9", "::ffff:192.0.2.9"),
            ("2.16.32.1.13.184.0.0.0.0.0.0.0.0.0.0.0.1", "2001:db8::1"),
            (f"4.20.254.128.0.0.0.0.0.0.0.0.0.0.0.0.0.1.{lo}", "fe80::1%lo"),
        ]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(15) == 0
        finally:
            stop_process(proc)


@pytest.mark.timeout(300)
def test_agentx_and_exporter_on_the_same_state_dir_both_equal_the_simulators_files(
    snmpd_factory: Callable[..., SnmpdMaster], tmp_path: Path
) -> None:
    """The issue's "Done when" for SNMP: files neither process has seen (the simulator's
    blocklisted scenario, with feedback loops, rotated), followed by the exporter and the
    subagent at once with one configuration (same files, same --state-dir: each keeps its own
    state), per-provider deliveries and complaints equal to the files' own counts, in /metrics
    and through snmpd alike, before and after more records and another rotation."""
    from tests.integration.test_outcomes_exporter import file_counts, providers_of, scraped

    with Simulator("blocklisted", speed=0, domains=60, acct_dir=tmp_path / "acct",
                   acct_records=("d", "b", "t", "tq", "f")) as sim:
        sim.advance(900)
        sim.rotate_acct()
        sim.advance(300)
        providers = providers_of(sim)
        master = snmpd_factory()
        port = free_udp_port()
        common = ["--url", sim.url, "--config", str(config(tmp_path)), "--acct-file",
                  str(tmp_path / "acct" / "acct.csv"), "--state-dir", str(tmp_path / "state")]
        agentx = spawn(["agentx", "--agentx-socket", master.agentx_address, *common], tmp_path)
        exporter = spawn(["exporter", "--listen", f"127.0.0.1:{port}", *common], tmp_path)
        url = f"http://127.0.0.1:{port}/metrics"

        def both_equal_the_files() -> bool:
            want = file_counts(tmp_path / "acct", providers)
            if scraped(url) != want:
                return False
            rows = rows_of(master.bulkwalk(PROVIDERS_ARC))["provider"]
            delivered = {p: int(c["pmtaProviderDelivered"]) for p, c in rows.items()
                         if int(c["pmtaProviderDelivered"])}
            complaints: Counter[str] = Counter()
            for (provider, _domain), n in want["complaints"].items():
                complaints[provider] += n
            acct = {vb.oid.rsplit(".", 2)[-2]: vb.value for vb in master.bulkwalk(ACCT_ARC)}
            return (delivered == dict(want["delivered"])
                    and {p: int(c["pmtaProviderComplaints"]) for p, c in rows.items()
                         if int(c["pmtaProviderComplaints"])} == dict(complaints)
                    and int(acct["6"]) == sum(want["records"].values()))

        try:
            want = file_counts(tmp_path / "acct", providers)
            assert sum(want["complaints"].values()) > 0 and len(want["delivered"]) > 3
            wait_for(both_equal_the_files, 90, "/metrics and the MIB to equal the files")
            sim.advance(200)
            sim.rotate_acct()
            sim.advance(200)
            wait_for(both_equal_the_files, 90, "both to count the new records")
        finally:
            for proc in (agentx, exporter):
                proc.send_signal(signal.SIGTERM)
            for proc in (agentx, exporter):
                try:
                    assert proc.wait(15) == 0
                finally:
                    stop_process(proc)
    states = {p.parent.name for p in (tmp_path / "state").rglob("outcomes-*.json")}
    assert states == {"state", "agent"}  # the exporter's and the subagent's, apart


LIST_NAMES = {"zen.spamhaus.org": "spamhaus", "barracudacentral.org": "barracuda"}


def blocklists_named(directory: Path) -> dict[str, Counter[str]]:
    """{source IP: {list: rejections naming it}} straight from the files (all in the hour)."""
    out: dict[str, Counter[str]] = {}
    for path in sorted(directory.glob("acct*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                found = BLOCKLIST_NAMED.search(row.get("dsnDiag") or "")
                if found and row["type"] in ("b", "t"):
                    name = LIST_NAMES[found.group(0)]
                    out.setdefault(row["dlvSourceIp"], Counter())[name] += 1
    return out


def blocklisted_traps(receiver: TrapReceiver) -> list[list[SnmpVarBind]]:
    trap_oid = ".".join(map(str, LAY.oid("pmtaSourceIpBlocklisted")))
    return [t for t in receiver.traps() if any(vb.value.endswith(trap_oid) for vb in t)]


@pytest.mark.timeout(300)  # hang guard
def test_a_source_ip_over_the_blocklist_threshold_is_notified_once_across_a_worker_kill(
    sim: Simulator, snmpd_factory: Callable[..., SnmpdMaster], trap_receiver: TrapReceiver,
    tmp_path: Path,
) -> None:
    """pmtaSourceIpBlocklisted reaches a real snmptrapd through snmpd for every source IP
    whose rejections naming a blocklist (counted here from the files) reach the threshold,
    none for the others, with the row's columns under the address's index; a killed poll
    worker's successor does not send them again."""
    files = AcctFiles(tmp_path / "acct")
    files.write(files.rows(IPS, 40))
    named = blocklists_named(tmp_path / "acct")
    counts = sorted({sum(c.values()) for c in named.values()})
    assert len(counts) >= 2, named  # some addresses above the threshold, some below
    threshold = counts[len(counts) // 2]
    want = {ip for ip, c in named.items() if sum(c.values()) >= threshold}
    assert want and want != set(IPS)
    master = snmpd_factory(trap_port=trap_receiver.port)
    body = f"[thresholds]\nblocklist_raise = {threshold}\n"
    proc = spawn(["agentx", "--url", sim.url, "--agentx-socket", master.agentx_address,
                  "--config", str(config(tmp_path, body)),
                  "--acct-file", str(tmp_path / "acct" / "acct-*.csv"),
                  "--state-dir", str(tmp_path / "state")], tmp_path)
    try:
        wait_for(lambda: len(blocklisted_traps(trap_receiver)) >= len(want), 90,
                 f"{len(want)} pmtaSourceIpBlocklisted notifications")
        got: dict[str, dict[str, str]] = {}
        for trap in blocklisted_traps(trap_receiver):
            cells = rows_of(trap)["ip"]
            assert len(cells) == 1, trap
            [(ip, row)] = cells.items()
            assert ip not in got, f"{ip} notified twice"
            got[ip] = row
            threshold_vb = trap[-1]
            assert threshold_vb.oid == ".".join(map(str, LAY.instance("pmtaCfgBlocklistRaise")))
            assert threshold_vb.value == str(threshold)
        assert set(got) == want
        for ip in want:
            top = min(named[ip].items(), key=lambda kv: (-kv[1], kv[0]))[0]
            assert got[ip] == {"pmtaSourceIpName": ip,
                               "pmtaSourceIpLastHourBlocklistRejections":
                                   str(sum(named[ip].values())),
                               "pmtaSourceIpTopBlocklist": top}, ip
        successes = ".".join(map(str, LAY.instance("pmtaAgentPollSuccesses")))
        [worker] = child_pids(proc.pid)
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: child_pids(proc.pid) not in ([], [worker]), 60, "a new worker")
        first = int(master.get(successes)[0].value)
        wait_for(lambda: int(master.get(successes)[0].value) >= first + 3, 60,
                 "three polls by the new worker")
        assert len(blocklisted_traps(trap_receiver)) == len(want)  # none sent again
    finally:
        stop_process(proc)
    log = (tmp_path / "agent.log").read_text()
    assert "Traceback" not in log, log
