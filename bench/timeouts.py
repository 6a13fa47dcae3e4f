"""How soon things end or come back: plugins under -t, the subagent after an snmpd restart.

Plugins: each run as a fresh process (as Nagios runs it) on an input that cannot be read
within its -t, from a fresh state: check_pmta_queue -t 1 against a 100k-domain simulator,
check_pmta_log -t 0.3 on a log whose every line matches a pattern (the incident path),
check_pmta_bounce -t 0.3 on a million accounting rows. The figure is the overshoot, wall time
minus -t (the worst of a few runs), beside `python -c pass` (the start-up no plugin avoids).
Also check_pmta_queue reading all 100k domains within the default -t.

Re-registration: the real `pmta-snmp agentx` (its default backoff) under an unprivileged
snmpd master, which is restarted gracefully (SIGTERM: it closes the session) and hard
(SIGKILL); from the restart until our object answers through snmpd again, beside snmpd's own
restart (until it answers sysUpTime.0 itself).

The tests only check that these paths are taken (the timeout message, the re-registration);
how soon is measured here.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from pmta_snmp.checks.base import DEFAULT_TIMEOUT

from bench.acct import make_acct
from bench.checks import bench_pattern_file, installed_env, run_plugin, timed_pass
from bench.common import (
    PYTHON,
    REPO,
    Report,
    Row,
    SimProcess,
    log,
    median,
    ratio,
    scale_args,
    secs,
    stop,
    workdir,
)

NAME = "timeouts"
TITLE = "plugin -t overshoot, AgentX re-registration after snmpd restarts (vs python, snmpd)"

OVERSHOOT_TARGET_S = 0.8  # wall time past -t, interpreter start-up and exit included
REREGISTER_TARGET_S = 5.0
WARN_LINE = "2025-01-14 09:13:34 ETIMEDOUT connecting to mx.example.com (192.0.2.1) {n}\n"
LOG_TIMEOUT = 0.3
"""check_pmta_log's -t here: it scans an incident log at about 180 MB/s (README), so -t 1
would end a log of a few hundred MiB before the deadline and measure nothing."""


def run(report: Report, *, quick: bool = False) -> None:
    """The three plugins, then the restarts."""
    runs = 2 if quick else 3
    with workdir("pmta-bt-") as wd:
        env = installed_env(wd)
        timed_pass(env)  # the interpreter's own byte code into the cache
        base = median([timed_pass(env) for _ in range(5)])
        report.add(Row("python -c pass (reference)", secs(base), "", None, "", None))
        queue_overshoot(report, wd, env, base, runs)
        log_overshoot(report, wd, env, base, runs, (60 if quick else 150) << 20)
        acct_overshoot(report, wd, env, base, runs, 300_000 if quick else 1_000_000)
        reregistration(report, wd, 4 if quick else 10)


def _overshoot(report: Report, what: str, name: str, args: list[str], timeout: float,
               wd: Path, env: dict[str, str], base: float, runs: int) -> None:
    """Run a plugin `runs` times from a fresh state; one row for its worst overshoot."""
    walls: list[float] = []
    lines: list[str] = []
    for i in range(runs):
        state = wd / f"state-{name}-{i}"
        wall, _, out = run_plugin(
            name, [*args, "-t", f"{timeout:g}", "--state-dir", str(state)], env=env
        )
        walls.append(wall)
        lines.append(out.splitlines()[0] if out else "")
    over = max(walls) - timeout
    if not all("timed out" in line for line in lines):
        report.note(f"{what}: a run finished within -t {timeout:g} (input too small?): "
                    f"{lines}")
    report.add(Row(
        f"{what}, -t {timeout:g}: wall minus -t, worst of {runs}",
        secs(over), f"{secs(base)} (python -c pass)", ratio(over, base) if over > 0 else None,
        f"< {OVERSHOOT_TARGET_S:g} s", over < OVERSHOOT_TARGET_S,
    ))


def queue_overshoot(report: Report, wd: Path, env: dict[str, str], base: float,
                    runs: int) -> None:
    """check_pmta_queue -t 1 against 100k domains."""
    log("timeouts: simulator with 100k domains")
    with SimProcess(wd, *scale_args(100_000, 10)) as sim:
        args = ["--url", sim.url, "-w", "10000000", "-c", "20000000"]
        _overshoot(report, "check_pmta_queue, 100k domains", "queue", args, 1.0, wd, env, base,
                   runs)
        # The whole answer within the default -t (what a default service definition runs).
        wall, code, out = run_plugin("queue", [*args, "--state-dir", str(wd / "state-q")],
                                     env=env)
        report.add(Row(
            f"check_pmta_queue, 100k domains, default -t {DEFAULT_TIMEOUT:g} s "
            f"({'read in full' if code == 0 else out.split(' - ')[0]})",
            secs(wall), f"{secs(base)} (python -c pass)", ratio(wall, base),
            f"< {DEFAULT_TIMEOUT:g} s, OK", code == 0 and wall < DEFAULT_TIMEOUT,
        ))


def log_overshoot(report: Report, wd: Path, env: dict[str, str], base: float, runs: int,
                  size: int) -> None:
    """check_pmta_log -t 0.3 on an all-matching log."""
    path = wd / "all-matching.log"
    block = "".join(WARN_LINE.format(n=i) for i in range(1000)).encode()
    with path.open("wb") as fh:
        for _ in range(max(1, size // len(block))):
            fh.write(block)
    # The lines are remote errors, not in the default classes (local failures): the bench
    # patterns count them as warnings, so every line matches.
    patterns = bench_pattern_file(wd / "patterns")
    _overshoot(report, f"check_pmta_log, {size >> 20} MiB all-matching log", "log",
               ["-l", str(path), "-w", "100000000", "-c", "100000000", "--from-start",
                "--pattern-file", str(patterns)], LOG_TIMEOUT, wd, env, base, runs)
    path.unlink()


def acct_overshoot(report: Report, wd: Path, env: dict[str, str], base: float, runs: int,
                   rows: int) -> None:
    """check_pmta_bounce -t 0.3 on `rows` accounting records."""
    path = wd / "acct.csv"
    make_acct(path, rows)
    _overshoot(report, f"check_pmta_bounce, {rows:,} accounting rows", "bounce",
               ["--acct-file", str(path), "--window", "1d", "-w", "100", "-c", "100",
                "--from-start"], 0.3, wd, env, base, runs)
    path.unlink()


def reregistration(report: Report, wd: Path, restarts: int) -> None:
    """Our subagent back after snmpd restarts, beside snmpd's own restart."""
    from pmta_snmp.mib.layout import layout
    from pmta_snmp.netsnmp import SnmpClientError, SnmpdMaster, missing_netsnmp_tools

    missing = missing_netsnmp_tools()
    if missing:
        report.note(f"re-registration not measured: {', '.join(missing)} not installed")
        return
    reachable = ".".join(map(str, layout().instance("pmtaAgentApiReachable")))

    def served(master: SnmpdMaster) -> bool:
        try:
            got = master.get(reachable, timeout=0.3, retries=0)
        except SnmpClientError:
            return False
        return bool(got) and got[0].value == "1"

    def wait_served(master: SnmpdMaster, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not served(master):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the subagent did not register within {timeout:g} s")
            time.sleep(0.02)

    with SimProcess(wd, "--scenario", "healthy", "--speed", "0") as sim, \
            SnmpdMaster(wd / "snmpd") as master:
        agent_log = (wd / "agent.log").open("wb")
        agent = subprocess.Popen(
            [PYTHON, "-m", "pmta_snmp", "agentx", "--url", sim.url, "--agentx-socket",
             master.agentx_address, "--interval", "5"],
            stdin=subprocess.DEVNULL, stdout=agent_log, stderr=subprocess.STDOUT, cwd=REPO,
        )
        try:
            wait_served(master)
            times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for i in range(restarts):
                hard = bool(i % 2)
                t0 = time.perf_counter()
                master.restart(hard=hard)  # returns once snmpd answers sysUpTime.0 itself
                snmpd_s = time.perf_counter() - t0
                wait_served(master)
                times[hard].append((time.perf_counter() - t0, snmpd_s))
        finally:
            stop(agent)
            agent_log.close()
    for hard, pairs in times.items():
        ours = max(p[0] for p in pairs)
        ref = median([p[1] for p in pairs])
        report.add(Row(
            f"re-registered after snmpd {'SIGKILL' if hard else 'SIGTERM'} + start, worst of "
            f"{len(pairs)}", secs(ours), f"{secs(ref)} (snmpd answering itself, median)",
            ratio(ours, ref), f"< {REREGISTER_TARGET_S:g} s", ours < REREGISTER_TARGET_S,
        ))


if __name__ == "__main__":
    import sys

    from bench.__main__ import main

    sys.exit(main(["timeouts", *sys.argv[1:]]))
