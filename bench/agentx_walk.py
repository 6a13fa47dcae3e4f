"""AgentX: our subagent against net-snmp's own C subagent, both behind one real snmpd master.

Walk speed: a simulator with 10k domains (scenario `scale`), an unprivileged snmpd master
(SnmpdMaster, started with `-I -hrSWInstalledTable` so that table is not served natively), our
subagent (`run_agentx` in a LoopThread) and a second snmpd started as a subagent (`-X -I
hrSWInstalledTable`) serving HOST-RESOURCES-MIB::hrSWInstalledTable (one row per installed Debian
package). `snmpwalk` and `snmpbulkwalk` of both subtrees through the master, values per second,
client start-up subtracted from both.

Latency while rebuilding and memory: `pmta-snmp agentx` in its own process (bench.agent_child
notes its poll and rebuild windows) polling every second, so it rebuilds its 10k-row tree again
and again, connected to a minimal AgentX master in this process (bench.fakemaster) that walks it
with back-to-back GetNext requests and times each one; the same master times the C subagent.
Peak RSS is the subagent process's own VmHWM.

Everything but the simulator runs pinned to one CPU (see `pinned_to_one_cpu`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    PYTHON,
    REPO,
    Report,
    Row,
    SimProcess,
    log,
    median,
    mib,
    ms,
    percentile,
    proc_status,
    rate,
    ratio,
    scale_args,
    secs,
    stop,
    timed_run,
    workdir,
)
from bench.fakemaster import FakeMaster, Sample, WalkStats
from pmta_snmp.netsnmp import SnmpdMaster, child_pids, find_tool, missing_netsnmp_tools

NAME = "agentx"
TITLE = "AgentX walk, latency during rebuild, memory (vs net-snmp's C subagent)"

HR_MODULE = "hrSWInstalledTable"
HR_SW_INSTALLED = (1, 3, 6, 1, 2, 1, 25, 6, 3)
HR_OID = ".".join(map(str, HR_SW_INSTALLED))
WALK_TARGET_RATIO = 0.7
FULL_WALK_TARGET_S = 12.0
FULL_WALK_DOMAINS = 10_000
LATENCY_TARGET_S = 0.005
VMTAS = 20


def run(report: Report, *, quick: bool = False) -> None:
    """All AgentX measurements; 1k domains and shorter loops with `quick`."""
    missing = missing_netsnmp_tools()
    if missing:
        raise RuntimeError(
            f"net-snmp tools missing: {', '.join(missing)} (apt-get install snmpd snmp)"
        )
    domains = 1_000 if quick else FULL_WALK_DOMAINS
    with workdir("pmta-bx-") as wd:
        log(f"agentx: simulator with {domains} domains / {VMTAS} VirtualMTAs")
        with SimProcess(wd, *scale_args(domains, VMTAS)) as sim, \
                pinned_to_one_cpu(report, away=[sim.proc.pid]):
            walk_rates(report, wd, sim.url, domains, quick)
            latency_and_memory(report, wd, sim.url, domains, quick)


@contextlib.contextmanager
def pinned_to_one_cpu(report: Report, away: Sequence[int] = ()) -> Iterator[None]:
    """Run this thread, the threads it starts and its children on one CPU, and the processes
    `away` (the simulator: PowerMTA's own load) on the others, so that the latency measured
    is the subagent's and not the simulator's time slices on the same CPU.

    Measured here: the same C-subagent bulk walk took 0.13 s or 0.30 s depending on whether
    snmpd and the subagent happened to share a CPU (cross-CPU wake-ups are slow on this VM).
    One request chain never runs two steps at once, so one CPU costs it nothing and makes ours
    and the reference comparable. The simulator is started before and keeps every CPU.
    """
    getaff = getattr(os, "sched_getaffinity", None)
    setaff = getattr(os, "sched_setaffinity", None)
    if getaff is None or setaff is None:
        yield
        return
    cpus = getaff(0)
    _ALL_CPUS.update(cpus)
    cpu = max(cpus)
    setaff(0, {cpu})
    others = set(cpus) - {cpu}
    for pid in away if others else ():
        _move_process(pid, others)
    report.note(
        f"walks and latency runs pinned to CPU {cpu} (client, snmpd, both subagents, this "
        "process): cross-CPU wake-ups made the same walk vary 2x between runs"
    )
    try:
        yield
    finally:
        setaff(0, cpus)


# ---------------------------------------------------------------------------------------------
# net-snmp processes
# ---------------------------------------------------------------------------------------------


def _master(wd: Path) -> SnmpdMaster:
    """SnmpdMaster that leaves hrSWInstalledTable to a subagent (`-I -hrSWInstalledTable`)."""
    master = SnmpdMaster(wd / "master", agentx_timeout=5, agentx_retries=1)
    # SnmpdMaster has no option for extra command-line flags; a wrapper script adds one
    # (exec keeps the pid, so stopping by pid still stops snmpd itself).
    wrapper = wd / "snmpd-no-hrswinst"
    wrapper.write_text(
        f'#!/bin/sh\nexec {shlex.quote(master.snmpd)} -I -{HR_MODULE} "$@"\n', encoding="utf-8"
    )
    wrapper.chmod(0o755)
    master.snmpd = str(wrapper)
    return master


class CSubagent:
    """net-snmp's snmpd as an AgentX subagent (`-X`) serving only hrSWInstalledTable."""

    def __init__(self, wd: Path, address: str) -> None:
        snmpd = find_tool("snmpd")
        assert snmpd is not None
        wd.mkdir(parents=True, exist_ok=True)
        conf = wd / "subagent.conf"
        conf.write_text(f"agentXSocket {address}\n", encoding="utf-8")
        self.log_path = wd / "subagent.log"
        env = dict(os.environ, SNMP_PERSISTENT_DIR=str(wd / "persist"), MIBS="")
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [snmpd, "-f", "-Lo", "-X", "-C", "-c", str(conf), "-p", str(wd / "sub.pid"),
                 "-m", "", "-I", HR_MODULE],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            )

    def stop(self) -> None:
        """Stop it by pid."""
        stop(self.proc)


def _client(tool: str, agent: str, oid: str) -> tuple[float, int]:
    """Run an snmp client once: (wall seconds, values printed)."""
    exe = find_tool(tool)
    assert exe is not None
    elapsed, out = timed_run(
        [exe, "-v2c", "-c", "public", "-On", "-m", "", "-t", "5", "-r", "0", agent, oid],
        timeout=300,
    )
    return elapsed, sum(1 for line in out.splitlines() if line.startswith("."))


def _wait(pred: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:  # not ready yet (no such object, client timeout)
            pass
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------------------------
# Walk rates
# ---------------------------------------------------------------------------------------------


def walk_rates(report: Report, wd: Path, sim_url: str, domains: int, quick: bool) -> None:
    """snmpwalk / snmpbulkwalk values per second: ours vs the C subagent, one master."""
    from pmta_snmp.agent import run_agentx
    from pmta_snmp.config import AgentXSection, Config, PmtaSection, PollSection
    from pmta_snmp.mib.layout import layout
    from pmta_snmp.netsnmp import LoopThread

    lay = layout()
    base = ".".join(map(str, lay.base))
    count_oid = ".".join(map(str, lay.instance("pmtaDomainCount")))
    master = _master(wd)
    master.start()
    csub: CSubagent | None = None
    loop: LoopThread | None = None
    stop_event: asyncio.Event | None = None
    fut = None
    try:
        csub = CSubagent(wd / "csub", master.agentx_address)
        _wait(
            lambda: master.get(HR_OID + ".1.2.1")[0].type not in ("noSuchObject", "noSuchInstance"),
            20, "the C subagent to register hrSWInstalledTable",
        )
        loop = LoopThread()
        cfg = Config(
            pmta=PmtaSection(url=sim_url, timeout=60),
            poll=PollSection(interval=3600, jitter=0),  # one poll: no rebuild during the walks
            agentx=AgentXSection(socket=master.agentx_address, timeout=10, ping_interval=60),
        )
        stop_event = asyncio.Event()
        fut = asyncio.run_coroutine_threadsafe(run_agentx(cfg, stop=stop_event), loop.loop)
        _wait(lambda: master.get(count_oid)[0].value == str(domains), 60,
              "our subagent to register and poll")

        # Client start-up and one round trip, subtracted from every walk below.
        empty = ".1.3.6.1.4.1.8072.9999.9999"
        baseline = median([_client("snmpwalk", master.agent, empty)[0] for _ in range(5)])
        report.note(
            f"client start-up + one round trip ({ms(baseline)}, median of 5 walks of an empty "
            "subtree) is subtracted from every walk time"
        )
        ref_runs = 5
        our_runs = 3 if quick else 1
        results: dict[str, tuple[float, float, int, int, float]] = {}
        for tool in ("snmpbulkwalk", "snmpwalk"):
            ref = [_client(tool, master.agent, HR_OID) for _ in range(ref_runs)]
            ref_n = ref[0][1]
            ref_t = median([t for t, _ in ref]) - baseline
            ours = [_client(tool, master.agent, base) for _ in range(our_runs)]
            our_n = ours[0][1]
            our_t = median([t for t, _ in ours]) - baseline
            if our_n < domains:
                raise RuntimeError(f"{tool} of our subtree gave only {our_n} values")
            results[tool] = (our_n / our_t, ref_n / ref_t, our_n, ref_n, our_t)
            log(f"{tool}: ours {our_n} values in {our_t:.2f}s, C {ref_n} values in {ref_t:.3f}s")
        for tool in ("snmpwalk", "snmpbulkwalk"):
            our_rate, ref_rate, our_n, ref_n, _ = results[tool]
            r = ratio(our_rate, ref_rate)
            report.add(Row(
                f"{tool} rate ({our_n} values vs C {ref_n})",
                rate(our_rate, "values/s"), rate(ref_rate, "values/s"), r,
                f">= {WALK_TARGET_RATIO:.2f}x", r is not None and r >= WALK_TARGET_RATIO,
            ))
        scale = domains / FULL_WALK_DOMAINS
        limit = FULL_WALK_TARGET_S * scale
        for tool in ("snmpbulkwalk", "snmpwalk"):
            our_rate, ref_rate, our_n, _, our_t = results[tool]
            ref_time = our_n / ref_rate  # the C subagent at its measured rate, same values
            report.add(Row(
                f"full {tool} of {domains} domains ({our_n} values)",
                secs(our_t), f"{secs(ref_time)} (C rate)", ratio(our_t, ref_time),
                f"< {limit:.1f} s" + (" (scaled)" if scale != 1 else ""), our_t < limit,
            ))
        _, walk_ref_rate, walk_n, _, walk_t = results["snmpwalk"]
        if walk_t >= limit:
            needed = walk_n / limit / walk_ref_rate
            report.note(
                "full snmpwalk: one GetNext per value, each a UDP round trip to snmpd plus an "
                "AgentX round trip; net-snmp's C subagent at its measured rate would need "
                f"{secs(walk_n / walk_ref_rate)} for the same {walk_n} values, so the plain walk "
                f"meets {limit:.1f} s only at >= {needed:.2f}x the C subagent's rate"
            )
    finally:
        if stop_event is not None and loop is not None:
            loop.call_soon(stop_event.set)
            if fut is not None:
                try:
                    fut.result(15)
                except Exception as exc:
                    log(f"our subagent stopped with {exc!r}")
        if loop is not None:
            loop.close()
        if csub is not None:
            csub.stop()
        master.stop()


# ---------------------------------------------------------------------------------------------
# Latency during rebuilds, peak RSS
# ---------------------------------------------------------------------------------------------


@dataclass
class Windows:
    """Poll and rebuild windows reported by bench.agent_child."""

    polls: list[tuple[float, float]]
    rebuilds: list[tuple[float, float]]  # in the poll worker child (or the poller thread)
    collections: list[tuple[float, float]]  # gen-2 and any other over 1 ms
    swaps: list[tuple[float, float]]  # the serving process maps and swaps a new tree

    @classmethod
    def read(cls, path: Path) -> Windows:
        found: dict[str, list[tuple[float, float]]] = {
            "poll": [], "rebuild": [], "gc": [], "swap": []
        }
        if path.exists():
            for line in path.read_text(encoding="ascii").splitlines():
                parts = line.split()
                if len(parts) == 3:  # a line being written has fewer
                    kind = "gc" if parts[0].startswith("gc") else parts[0]
                    found.setdefault(kind, []).append((float(parts[1]), float(parts[2])))
        return cls(found["poll"], found["rebuild"], found["gc"], found["swap"])


def _overlaps(sample: Sample, windows: list[tuple[float, float]]) -> bool:
    end = sample.sent + sample.latency
    return any(a < end and sample.sent < b for a, b in windows)


def latency_and_memory(report: Report, wd: Path, sim_url: str, domains: int, quick: bool) -> None:
    """Direct AgentX GetNext latency while our subagent rebuilds; peak RSS of both subagents."""
    from pmta_snmp.mib.layout import layout

    base = layout().base
    seconds = 3.0 if quick else 10.0
    # net-snmp's C subagent: the reference latency and memory.
    ref_path = wd / "fm-c.sock"
    with FakeMaster(ref_path) as fm:
        csub = CSubagent(wd / "csub-fm", fm.address)
        try:
            fm.accept(20)
            fm.wait_registered(HR_SW_INSTALLED, 20)
            fm.walk_loop(HR_SW_INSTALLED, 0.3)  # warm its cache
            ref_stats = fm.walk_loop(HR_SW_INSTALLED, seconds)  # as long as ours: fair max
            ref_mem = proc_status(csub.proc.pid)
        finally:
            csub.stop()
    ref_lat = [s.latency for s in ref_stats.samples]

    # Ours: `pmta-snmp agentx` polling every second (the minimum), so it keeps rebuilding.
    windows_path = wd / "windows.txt"
    with FakeMaster(wd / "fm-ours.sock") as fm:
        log_path = wd / "agent-child.log"
        with log_path.open("wb") as out:
            child = subprocess.Popen(
                [PYTHON, "-m", "bench.agent_child", str(windows_path), "agentx",
                 "--url", sim_url, "--agentx-socket", fm.address, "--interval", "1"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            )
        try:
            fm.accept(30)
            fm.wait_registered(base, 30)
            _wait(lambda: Windows.read(windows_path).rebuilds, 60, "the first poll of our subagent")
            # Two runs. First the poll worker shares the one CPU with everything else (a
            # single-core host: only the worker's lower priority protects the requests), then
            # it may use the other CPUs, as on any multi-core host (the target row).
            workers = child_pids(child.pid)
            shared = fm.walk_loop(base, seconds)
            others = _original_cpus() - os.sched_getaffinity(os.getpid())
            for pid in workers:
                _move_process(pid, others)
            free = fm.walk_loop(base, seconds) if others else None
            windows = Windows.read(windows_path)
            our_mem = proc_status(child.pid)
            worker_mems = [proc_status(pid) for pid in workers]
        finally:
            stop(child, timeout=10)
    ref = (percentile(ref_lat, 50), percentile(ref_lat, 99), max(ref_lat))
    _latency_rows(report, windows, shared, ref, domains, "worker on the same CPU",
                  target=free is None)
    if free is not None:
        _latency_rows(report, windows, free, ref, domains, "worker on another CPU", target=True)
    else:
        report.note("one CPU only: the latency target is judged with the worker on that CPU")
    rebuilds = windows.rebuilds[1:]
    rebuild_s = median([b - a for a, b in rebuilds]) if rebuilds else float("nan")
    report.add(Row(
        f"rebuild of the {domains}-domain tree in the worker (median of {len(rebuilds)})",
        secs(rebuild_s), "", None, "report", None,
    ))
    swaps = [b - a for a, b in windows.swaps]
    if swaps:
        report.add(Row(
            f"tree handover in the serving process, max of {len(swaps)} (map + swap)",
            ms(max(swaps)), "", None, "report", None,
        ))
    pauses = [b - a for a, b in windows.collections]
    if pauses:
        report.add(Row(
            f"longest garbage-collection pause in the subagent ({len(pauses)} collections)",
            ms(max(pauses)), "", None, "report", None,
        ))
    hwm, ref_hwm = our_mem.get("VmHWM", 0), ref_mem.get("VmHWM", 0)
    report.add(Row(
        f"subagent peak RSS (VmHWM), {domains} domains, {len(windows.rebuilds)} rebuilds",
        mib(hwm), f"{mib(ref_hwm)} (C, hrSWInstalledTable)",
        ratio(hwm, ref_hwm), "report", None,
    ))
    for mem in worker_mems:
        report.add(Row(
            f"poll worker child peak RSS (VmHWM), {domains} domains",
            mib(mem.get("VmHWM", 0)), "", None, "report", None,
        ))


def _latency_rows(
    report: Report,
    windows: Windows,
    stats: WalkStats,
    ref: tuple[float, float, float],
    domains: int,
    label: str,
    *,
    target: bool,
) -> None:
    """Rows for one latency run: requests during a rebuild (p50, p99, max), fetch, idle."""
    ref_p50, ref_p99, ref_max = ref
    # "During a rebuild": while the tree is built (worker or thread) or mapped and swapped in.
    busy = windows.rebuilds + windows.swaps
    during = [s.latency for s in stats.samples if _overlaps(s, busy)]
    polling = [
        s.latency for s in stats.samples if not _overlaps(s, busy) and _overlaps(s, windows.polls)
    ]
    idle = [
        s.latency for s in stats.samples
        if not _overlaps(s, busy) and not _overlaps(s, windows.polls)
    ]
    log(
        f"latency ({label}): {len(stats.samples)} requests, {len(during)} during a rebuild, "
        f"{len(polling)} during fetch+parse, {len(idle)} idle"
    )
    if not during:
        report.note(f"latency ({label}): no request overlapped a rebuild")
        return
    for name, value, ref_value in (
        ("p50", percentile(during, 50), ref_p50),
        ("p99", percentile(during, 99), ref_p99),
    ):
        report.add(Row(
            f"GetNext latency during {domains}-row rebuild, {label}, {name} (n={len(during)})",
            ms(value), f"{ms(ref_value)} (C, idle)", ratio(value, ref_value), "report", None,
        ))
    worst = max(during)
    report.add(Row(
        f"GetNext latency during {domains}-row rebuild, {label}, max",
        ms(worst), f"{ms(ref_max)} (C, idle)", ratio(worst, ref_max),
        f"< {LATENCY_TARGET_S * 1000:.0f} ms" if target else "report",
        worst < LATENCY_TARGET_S if target else None,
    ))
    if polling:
        report.add(Row(
            f"GetNext latency during fetch+parse, {label}, max (n={len(polling)})",
            ms(max(polling)), f"{ms(ref_max)} (C, idle)", ratio(max(polling), ref_max),
            "report", None,
        ))
    if idle:
        report.add(Row(
            f"GetNext latency, agent idle, {label}, p99 (n={len(idle)})",
            ms(percentile(idle, 99)), f"{ms(ref_p99)} (C)",
            ratio(percentile(idle, 99), ref_p99), "report", None,
        ))
        report.add(Row(
            f"GetNext latency, agent idle, {label}, max",
            ms(max(idle)), f"{ms(ref_max)} (C)", ratio(max(idle), ref_max), "report", None,
        ))
    slow = [s for s in stats.samples if s.latency >= LATENCY_TARGET_S and _overlaps(s, busy)]
    if slow:
        in_gc = sum(1 for s in slow if _overlaps(s, windows.collections))
        in_swap = sum(1 for s in slow if _overlaps(s, windows.swaps))
        report.note(
            f"{label}: {len(slow)} of {len(during)} requests during a rebuild took >= 5 ms, "
            f"{in_gc} of them overlapping a garbage collection of the serving process, "
            f"{in_swap} a tree handover; the C subagent's own worst case here: {ms(ref_max)}"
        )


def _move_process(pid: int, cpus: set[int]) -> None:
    """Set the CPU affinity of every thread of `pid` (sched_setaffinity(pid) moves only the
    thread whose id is pid; the others keep where they were created)."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            os.sched_setaffinity(int(task.name), cpus)


_ALL_CPUS: set[int] = set()


def _original_cpus() -> set[int]:
    """The CPUs this process could use before `pinned_to_one_cpu`."""
    return _ALL_CPUS
