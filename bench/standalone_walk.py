"""Standalone agent: walk rates of `pmta-snmp agent` against net-snmp's snmpd walking its own table.

A simulator with 10k domains (scenario `scale`), and in one run:
- the reference: an unprivileged snmpd (SnmpdMaster) serving HOST-RESOURCES-MIB's
  hrSWInstalledTable natively (one row per installed Debian package), walked with `snmpwalk`
  (GetNext) and `snmpbulkwalk -Cr25`;
- `pmta-snmp agent` (the standalone agent, its own process, one poll then no rebuilds) walked
  the same ways over SNMPv2c, and with SNMPv3 authPriv (SHA-256, AES);
- `pmta-snmp agentx` behind that snmpd (our AgentX path), walked the same ways through snmpd.
Values per second, client start-up and one round trip (a walk of an empty subtree, per agent
and SNMP version) subtracted. Everything but the simulator runs pinned to one CPU, as in the
AgentX benchmark.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.agentx_walk import pinned_to_one_cpu
from bench.common import (
    PYTHON,
    REPO,
    Report,
    Row,
    SimProcess,
    log,
    median,
    ms,
    rate,
    ratio,
    scale_args,
    secs,
    stop,
    timed_run,
    workdir,
)
from pmta_snmp.netsnmp import (
    SnmpdMaster,
    find_tool,
    free_udp_port,
    missing_netsnmp_tools,
)

NAME = "standalone"
TITLE = "standalone agent walks (vs snmpd's native hrSWInstalledTable and our AgentX path)"

HR_SW_INSTALLED = ".1.3.6.1.2.1.25.6.3"
EMPTY = ".1.3.6.1.4.1.8072.9999.9999"  # nothing there: one round trip, no values
RATIO_TARGET = 0.25
FULL_BULK_TARGET_S = 6.0
FULL_DOMAINS = 10_000
VMTAS = 20
REPETITIONS = "-Cr25"  # snmp_exporter's default max_repetitions
V3_USER = "bench"
V3_AUTH = "bench-auth-passphrase"
V3_PRIV = "bench-priv-passphrase"


def run(report: Report, *, quick: bool = False) -> None:
    """Walk rates of the standalone agent, our AgentX path and native snmpd; 1k domains with
    `quick`."""
    missing = missing_netsnmp_tools()
    if missing:
        raise RuntimeError(
            f"net-snmp tools missing: {', '.join(missing)} (apt-get install snmpd snmp)"
        )
    domains = 1_000 if quick else FULL_DOMAINS
    with workdir("pmta-bs-") as wd:
        log(f"standalone: simulator with {domains} domains / {VMTAS} VirtualMTAs")
        with SimProcess(wd, *scale_args(domains, VMTAS)) as sim, \
                pinned_to_one_cpu(report, away=[sim.proc.pid]):
            _walks(report, wd, sim.url, domains, quick)


class _Client:
    """net-snmp command-line tools against one agent and SNMP version."""

    def __init__(self, agent: str, security: Sequence[str]) -> None:
        self.agent = agent
        self.security = list(security)
        self.baseline = 0.0

    def walk(self, tool: str, oid: str, *options: str) -> tuple[float, int]:
        """(wall seconds, values printed) of one run of `tool`."""
        exe = find_tool(tool)
        assert exe is not None
        elapsed, out = timed_run(
            [exe, *self.security, "-On", "-m", "", "-t", "10", "-r", "0", *options, self.agent,
             oid],
            timeout=900,
        )
        values = [line for line in out.splitlines() if line.startswith(".")]
        return elapsed, sum(1 for line in values if " = No more variables left" not in line)

    def measure_baseline(self, runs: int = 5) -> float:
        """Client start-up and one round trip: the median walk of an empty subtree."""
        self.baseline = median([self.walk("snmpwalk", EMPTY)[0] for _ in range(runs)])
        return self.baseline

    def rate(self, tool: str, oid: str, runs: int, *options: str) -> tuple[float, int, float]:
        """(values/s, values, seconds) of the median of `runs` walks, baseline subtracted."""
        results = [self.walk(tool, oid, *options) for _ in range(runs)]
        count = results[0][1]
        seconds = max(median([t for t, _ in results]) - self.baseline, 1e-6)
        return count / seconds, count, seconds


def _v2c() -> list[str]:
    return ["-v2c", "-c", "public"]


def _v3() -> list[str]:
    return ["-v3", "-l", "authPriv", "-u", V3_USER, "-a", "SHA-256", "-A", V3_AUTH,
            "-x", "AES", "-X", V3_PRIV]


def _wait(pred: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:  # not ready yet: no such object, client timeout
            pass
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def _spawn(wd: Path, name: str, args: Sequence[str]) -> subprocess.Popen[bytes]:
    with (wd / f"{name}.log").open("wb") as out:
        return subprocess.Popen(
            [PYTHON, "-m", "pmta_snmp", *args],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )


def _standalone_config(wd: Path, sim_url: str, port: int) -> Path:
    (wd / "auth").write_text(V3_AUTH + "\n", encoding="utf-8")
    (wd / "priv").write_text(V3_PRIV + "\n", encoding="utf-8")
    cfg = wd / "agent.toml"
    cfg.write_text(
        f'[pmta]\nurl = "{sim_url}"\ntimeout = 60\n'
        "[poll]\ninterval = 3600\njitter = 0\n"  # one poll: no rebuild during the walks
        f'[snmp]\nlisten = "udp:127.0.0.1:{port}"\n'
        f'[[snmp.users]]\nname = "{V3_USER}"\nauth_protocol = "sha256"\n'
        f'auth_key_file = "{wd / "auth"}"\npriv_protocol = "aes128"\n'
        f'priv_key_file = "{wd / "priv"}"\n',
        encoding="utf-8",
    )
    return cfg


def _walks(report: Report, wd: Path, sim_url: str, domains: int, quick: bool) -> None:
    from pmta_snmp.mib.layout import layout

    lay = layout()
    base = "." + ".".join(map(str, lay.base))
    count_oid = "." + ".".join(map(str, lay.instance("pmtaDomainCount")))
    column = "." + ".".join(map(str, lay.oid("pmtaDomainRcpt")))
    master = SnmpdMaster(wd / "master", agentx_timeout=5, agentx_retries=1)
    master.start()
    port = free_udp_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_spawn(wd, "agentx", [
            "agentx", "--url", sim_url, "--agentx-socket", master.agentx_address,
            "--interval", "3600",
        ]))
        procs.append(_spawn(wd, "standalone", [
            "agent", "--config", str(_standalone_config(wd, sim_url, port)),
        ]))
        native = _Client(master.agent, _v2c())
        agentx = _Client(master.agent, _v2c())
        ours = _Client(f"127.0.0.1:{port}", _v2c())
        ours_v3 = _Client(f"127.0.0.1:{port}", _v3())

        def polled(client: _Client) -> bool:
            exe = find_tool("snmpget")
            assert exe is not None
            out = subprocess.run(
                [exe, *client.security, "-Oqv", "-m", "", "-t", "1", "-r", "0", client.agent,
                 count_oid], capture_output=True, text=True, timeout=30, check=False,
            )
            return out.stdout.strip() == str(domains)

        _wait(lambda: polled(agentx), 120, "the AgentX subagent's first poll")
        _wait(lambda: polled(ours), 120, "the standalone agent's first poll")
        _wait(lambda: polled(ours_v3), 30, "the standalone agent over SNMPv3")

        for client in (native, ours, ours_v3):
            client.measure_baseline()
        agentx.baseline = native.baseline  # the same snmpd answers the empty walk
        report.note(
            "client start-up + one round trip (median of 5 walks of an empty subtree) is "
            f"subtracted: snmpd {ms(native.baseline)}, standalone v2c {ms(ours.baseline)}, "
            f"v3 {ms(ours_v3.baseline)} (with USM discovery)"
        )
        native.walk("snmpbulkwalk", HR_SW_INSTALLED)  # snmpd reads the package list once
        runs = 3 if quick else 1
        results: dict[str, tuple[float, int, float]] = {}
        for tool, opts in (("snmpbulkwalk", (REPETITIONS,)), ("snmpwalk", ())):
            results[f"native {tool}"] = native.rate(tool, HR_SW_INSTALLED, 5, *opts)
            results[f"ours {tool}"] = ours.rate(tool, base, 3 if opts else runs, *opts)
            results[f"agentx {tool}"] = agentx.rate(tool, base, 3 if opts else runs, *opts)
            for key in (f"native {tool}", f"ours {tool}", f"agentx {tool}"):
                r, n, t = results[key]
                log(f"{key}: {n} values in {t:.2f}s, {rate(r, 'values/s')}")
        results["v3 snmpbulkwalk"] = ours_v3.rate("snmpbulkwalk", base, 1, REPETITIONS)
        results["v3 snmpwalk"] = ours_v3.rate("snmpwalk", column, 1)
        for key in ("v3 snmpbulkwalk", "v3 snmpwalk"):
            r, n, t = results[key]
            log(f"{key}: {n} values in {t:.2f}s, {rate(r, 'values/s')}")
    finally:
        for proc in procs:
            stop(proc, timeout=10)
        master.stop()
    _rows(report, results, domains)


def _rows(report: Report, results: dict[str, tuple[float, int, float]], domains: int) -> None:
    for tool, label in (("snmpwalk", "snmpwalk (GetNext)"),
                        ("snmpbulkwalk", f"snmpbulkwalk {REPETITIONS}")):
        our_rate, our_n, _ = results[f"ours {tool}"]
        ref_rate, ref_n, _ = results[f"native {tool}"]
        r = ratio(our_rate, ref_rate)
        report.add(Row(
            f"standalone {label}, v2c ({our_n} values; snmpd's own table: {ref_n})",
            rate(our_rate, "values/s"), f"snmpd native {rate(ref_rate, 'values/s')}", r,
            f">= {RATIO_TARGET:.2f}x", r is not None and r >= RATIO_TARGET,
        ))
    scale = domains / FULL_DOMAINS
    limit = FULL_BULK_TARGET_S * scale
    _, bulk_n, bulk_t = results["ours snmpbulkwalk"]
    report.add(Row(
        f"full standalone snmpbulkwalk {REPETITIONS} of {domains} domains ({bulk_n} values)",
        secs(bulk_t), "", None,
        f"< {limit:.1f} s" + (" (scaled)" if scale != 1 else ""), bulk_t < limit,
    ))
    _, walk_n, walk_t = results["ours snmpwalk"]
    report.add(Row(
        f"full standalone snmpwalk of {domains} domains ({walk_n} values)",
        secs(walk_t), "", None, "report", None,
    ))
    for tool in ("snmpwalk", "snmpbulkwalk"):
        our_rate, _, _ = results[f"ours {tool}"]
        ax_rate, ax_n, _ = results[f"agentx {tool}"]
        report.add(Row(
            f"standalone vs our AgentX path through snmpd, {tool} ({ax_n} values)",
            rate(our_rate, "values/s"), f"AgentX {rate(ax_rate, 'values/s')}",
            ratio(our_rate, ax_rate), "report", None,
        ))
    v3_bulk, v3_bulk_n, v3_bulk_t = results["v3 snmpbulkwalk"]
    report.add(Row(
        f"standalone snmpbulkwalk {REPETITIONS}, v3 authPriv ({v3_bulk_n} values, "
        f"{secs(v3_bulk_t)})",
        rate(v3_bulk, "values/s"), f"v2c {rate(results['ours snmpbulkwalk'][0], 'values/s')}",
        ratio(v3_bulk, results["ours snmpbulkwalk"][0]), "report", None,
    ))
    v3_walk, v3_walk_n, _ = results["v3 snmpwalk"]
    report.add(Row(
        f"standalone snmpwalk, v3 authPriv (pmtaDomainRcpt, {v3_walk_n} values)",
        rate(v3_walk, "values/s"), f"v2c {rate(results['ours snmpwalk'][0], 'values/s')}",
        ratio(v3_walk, results["ours snmpwalk"][0]), "report", None,
    ))
