"""Large inputs: 100k domains in one API answer, a big main log, a big accounting file.

Memory stays bounded (peak RSS of each child is printed: os.wait4 / VmHWM), and a plugin whose
-t runs out in the middle of a huge input ends with one UNKNOWN line naming the stage it was in,
or with what it read so far; the next runs continue where it stopped, so the sum over runs
still equals the ground truth. The cut is made certain, not hoped for from the machine's
speed: the plugin is paused mid-read past its -t (SIGSTOP), or the API stalls mid-answer.
How soon after -t a plugin ends is measured by `./run bench timeouts`, not here.

For CI time the normal suite uses 100k domains, a 100 MiB log and 1 M accounting rows;
`PMTA_SNMP_BIG=1` switches to a 1 GiB log and 10 M rows.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pmta_snmp.mib.layout import encode_string_index, layout
from pmta_snmp.netsnmp import SnmpClientError, SnmpdMaster
from pmta_snmp.sim import Simulator
from tests.reliability._files import ACCT_HEADER, CRIT, NORMAL, WARN, acct_row
from tests.reliability._support import (
    PYTHON,
    Background,
    CutProxy,
    PluginOutcome,
    agent_env,
    engine_env,
    hwm_kb,
    rss_kb,
    run_plugin,
    run_plugin_paused,
    wait_until,
)

BIG = os.environ.get("PMTA_SNMP_BIG") == "1"
LOG_BYTES = (1 << 30) if BIG else (100 << 20)
ACCT_ROWS = 10_000_000 if BIG else 1_000_000
DOMAINS = 100_000
LAY = layout()
#: A plugin is paused once it has read its start-up (about 2 MB) and then some of its input.
STARTUP_READ = 4 << 20


def dotted(oid: tuple[int, ...]) -> str:
    return ".".join(map(str, oid))


# --- 100k domains --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_sim() -> Iterator[Simulator]:
    # http-default-max-items raised above 100k: the pages list every row.
    sim = Simulator(scenario="scale", seed=1, speed=0, domains=DOMAINS, vmtas=10,
                    max_items=None).start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.mark.snmpd
@pytest.mark.slow
@pytest.mark.timeout(600)  # hang detection: 10-30 s
def test_agent_builds_and_serves_a_100k_domain_tree(
    big_sim: Simulator, snmpd_factory: Callable[..., SnmpdMaster], tmp_path: Path
) -> None:
    truth = big_sim.snapshot()
    assert len(truth.domains) == DOMAINS
    # Generous AgentX and client timeouts: a request that is not answered at all during a
    # rebuild fails, a slow answer on a loaded machine does not (latency: bench agentx).
    master = snmpd_factory(agentx_timeout=10, agentx_retries=1)
    agent = Background(
        [PYTHON, "-m", "pmta_snmp", "agentx", "--url", big_sim.url,
         "--agentx-socket", master.agentx_address, "--interval", "4"],
        tmp_path / "agent.log", env=agent_env(PMTA_SNMP_PMTA_TIMEOUT="30"),
    )
    try:
        count_oid = dotted(LAY.instance("pmtaDomainCount"))

        def count() -> str:
            try:
                got = master.get(count_oid, timeout=30, retries=0)
            except SnmpClientError:
                return "?"
            return got[0].value if got else "?"

        t0 = time.monotonic()
        assert wait_until(lambda: count() == str(DOMAINS), 300, 0.5), agent.log_text()[-2000:]
        first_tree = time.monotonic() - t0  # reported, not judged
        pick = truth.domains[DOMAINS // 2]
        idx = encode_string_index(pick.name, 80)
        assert idx is not None
        row_oid = dotted(LAY.oid("pmtaDomainRcpt") + idx)
        # Requests keep being answered while the poller rebuilds the big tree every 4 s.
        latencies: list[float] = []
        failures = 0
        t_end = time.monotonic() + 10
        while time.monotonic() < t_end:
            t1 = time.monotonic()
            try:
                got = master.get(row_oid, timeout=30, retries=0)
                assert got[0].value == str(pick.rcp), got
            except SnmpClientError:
                failures += 1
            latencies.append(time.monotonic() - t1)
        rss, hwm = rss_kb(agent.pid), hwm_kb(agent.pid)
        latencies.sort()
        print(f"\n100k domains: first tree served after {first_tree:.1f}s; agent RSS "
              f"{rss / 1024:.0f} MiB, peak {hwm / 1024:.0f} MiB; {len(latencies)} gets during "
              f"rebuilds: p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, max "
              f"{latencies[-1] * 1000:.0f} ms, {failures} timed out")
        assert agent.alive(), agent.log_text()[-2000:]
        assert failures == 0
        assert hwm < 3 * 1024 * 1024  # KiB: bounded (two trees alive during a swap)
        assert "Traceback" not in agent.log_text()
    finally:
        agent.stop()


@pytest.mark.slow
def test_queue_check_on_100k_domains_and_cut_by_its_timeout(big_sim: Simulator,
                                                            tmp_path: Path) -> None:
    state = ["--state-dir", str(tmp_path)]
    # -t 0 and the child's timeout as hang detection (whether the default -t suffices at
    # this size: bench timeouts).
    out = run_plugin("queue", ["--url", big_sim.url, "-w", "10000000", "-c", "20000000",
                               "-t", "0", *state], timeout=600)
    print(f"\ncheck_pmta_queue on {DOMAINS} domains: {out.seconds:.2f}s, peak RSS "
          f"{out.max_rss_kb / 1024:.0f} MiB")
    assert out.code == 0, out.out + out.err
    truth = big_sim.snapshot()
    assert out.number("rcpt") == truth.status.queued_recipients
    assert out.number("queues") == len(truth.queues)
    assert len(out.out.encode()) < 8192  # Nagios' output limit, whatever the item count
    # -t 1 while the API stalls in the middle of a big answer: one line naming the stage.
    proxy = CutProxy(big_sim.port)
    proxy.stall_after = 1 << 20
    try:
        short = run_plugin("queue", ["--url", proxy.url, "-t", "1", *state], timeout=600)
    finally:
        proxy.stop()
    assert short.code == 3 and "timed out after 1 s while querying PowerMTA" in short.line, \
        short.out
    assert len(short.out.splitlines()) == 1 and "Traceback" not in short.err


# --- a big main log ------------------------------------------------------------------------


def write_log(path: Path, size: int, lines_per_block: int = 1000,
              pattern: Callable[[int], str] | None = None) -> dict[str, int]:
    """A log of about `size` bytes made of one repeated block; the counts per class."""
    def default(i: int) -> str:
        if i % 97 == 0:
            return WARN.format(ts="2025-01-14 09:13:34", n=i)
        if i % 331 == 1:
            return CRIT.format(ts="2025-01-14 09:13:35", n=i)
        return NORMAL.format(ts="2025-01-14 09:13:30", n=i)

    make = pattern or default
    lines = [make(i) for i in range(lines_per_block)]
    block = "".join(lines).encode()
    repeats = max(1, size // len(block))
    with path.open("wb") as fh:
        for _ in range(repeats):
            fh.write(block)
    return {
        "lines": repeats * len(lines),
        "warning": repeats * sum("Cannot assign" in x for x in lines),
        "critical": repeats * sum("now disabled" in x for x in lines),
    }


def log_counts(out: PluginOutcome) -> dict[str, int]:
    return {"lines": int(out.number("lines")), "warning": int(out.number("warning_lines")),
            "critical": int(out.number("critical_lines"))}


@pytest.mark.slow
@pytest.mark.timeout(300 if BIG else 120)
def test_big_log_read_whole_with_bounded_memory(tmp_path: Path) -> None:
    log = tmp_path / "log"
    truth = write_log(log, LOG_BYTES)
    out = run_plugin("log", ["-l", str(log), "--state-dir", str(tmp_path / "st"),
                             "--from-start", "-w", "100000000", "-c", "100000000", "-t", "0"],
                     timeout=600)
    print(f"\ncheck_pmta_log on {log.stat().st_size / 2**20:.0f} MiB: {out.seconds:.2f}s, "
          f"peak RSS {out.max_rss_kb / 1024:.0f} MiB")
    assert out.code == 0, out.out + out.err
    assert log_counts(out) == truth
    assert out.max_rss_kb < 300 * 1024  # reading is streamed: independent of the file size


def catch_up(module: str, argv: list[str], env: dict[str, str] | None = None,
             check: Callable[[PluginOutcome], None] | None = None
             ) -> list[tuple[str, PluginOutcome]]:
    """Run until a run reads to the end; how each run ended ("partial", "hard" or "whole",
    see classify_cut) and its outcome, `check`ed. How many runs that takes is the machine's
    speed (a loaded one reads little within a short -t): the test's timeout is the hang
    detection, not a count of runs."""
    runs: list[tuple[str, PluginOutcome]] = []
    while True:
        out = run_plugin(module, argv, env=env, timeout=600)
        assert "Traceback" not in out.err, out.err
        runs.append((classify_cut(out), out))
        if check is not None:
            check(out)
        if runs[-1][0] == "whole":
            return runs


def classify_cut(out: PluginOutcome) -> str:
    """How a run with -t ended: "hard" (one line naming the stage, nothing reported),
    "partial" (what was read, the rest next run) or "whole" (read to the end)."""
    if re.search(r"timed out after [0-9.]+ s while ", out.line):
        assert out.code == 3 and not out.perf and len(out.out.splitlines()) == 1, out.out
        return "hard"
    if re.search(r"timed out after [0-9.]+ s reading ", out.line):
        assert out.code == 3 and "the rest is read next run" in out.line, out.line
        return "partial"
    assert out.code == 0, out.out + out.err
    return "whole"


@pytest.mark.slow
@pytest.mark.timeout(300)  # hang detection: a few runs of about a second
def test_log_cut_by_its_timeout_is_caught_up_by_later_runs(tmp_path: Path) -> None:
    # Every line matches a pattern (the slow path: a regex per line).
    log = tmp_path / "log"
    truth = write_log(log, 16 << 20, pattern=lambda i: WARN.format(ts="2025-01-14 09:13:34",
                                                                   n=i))
    # --from-start applies only while no state was saved (a first run stopped by the hard
    # limit saves none), so it is given every time.
    argv = ["-l", str(log), "--state-dir", str(tmp_path / "st"), "-w", "100000000", "-c",
            "100000000", "-t", "1", "--from-start"]
    first = run_plugin_paused("log", argv, after_bytes=STARTUP_READ + (4 << 20), pause=1.5)
    end = classify_cut(first)
    assert end in ("hard", "partial"), first.out  # paused past -t: cut, however fast
    runs = [(end, first), *catch_up("log", argv)]
    print(f"\n-t 1 on a 16 MiB all-matching log: {[e for e, _ in runs]}")
    # A run stopped by the hard limit reports nothing and its state is not advanced; one
    # stopped at the soft deadline reports what it read, and the next goes on from there.
    sums = dict.fromkeys(truth, 0)
    for end, out in runs:
        if end != "hard":
            for key, value in log_counts(out).items():
                sums[key] += value
    assert sums == truth


# --- a big accounting file -----------------------------------------------------------------


def write_acct(path: Path, rows: int) -> dict[str, int]:
    """`rows` records (one repeated block of 1000); counts of d / hard / soft."""
    when = time.time() - 600
    kinds = ["h" if i % 30 == 0 else "s" if i % 30 == 1 else "d" for i in range(1000)]
    block = "".join(acct_row(k, i, when) for i, k in enumerate(kinds))
    repeats = rows // 1000
    with path.open("w", newline="") as fh:
        fh.write(ACCT_HEADER)
        for _ in range(repeats):
            fh.write(block)
    return {"attempts": repeats * 1000, "hard": repeats * kinds.count("h"),
            "soft": repeats * kinds.count("s"), "delivered": repeats * kinds.count("d")}


def bounce_counts(out: PluginOutcome) -> dict[str, int]:
    return {k: int(out.number(k)) for k in ("attempts", "hard", "soft", "delivered")}


@pytest.mark.slow
@pytest.mark.timeout(600 if BIG else 120)
def test_big_accounting_file_with_bounded_memory(tmp_path: Path) -> None:
    acct = tmp_path / "acct.csv"
    truth = write_acct(acct, ACCT_ROWS)
    argv = ["--acct-file", str(acct), "--window", "1d", "-w", "100", "-c", "100"]
    out = run_plugin("bounce", [*argv, "--state-dir", str(tmp_path / "a"), "--from-start",
                                "-t", "0"], timeout=1200)
    print(f"\ncheck_pmta_bounce on {ACCT_ROWS:,} rows ({acct.stat().st_size / 2**20:.0f} MiB): "
          f"{out.seconds:.1f}s, peak RSS {out.max_rss_kb / 1024:.0f} MiB")
    assert out.code == 0, out.out + out.err
    assert bounce_counts(out) == truth
    assert out.max_rss_kb < 300 * 1024
    # -t 0.3, paused mid-read past it: the hard limit (one line naming the stage) or the soft
    # deadline (what was read so far, and that the rest comes next run).
    short = run_plugin_paused(
        "bounce", [*argv, "--state-dir", str(tmp_path / "b"), "--from-start", "-t", "0.3"],
        after_bytes=STARTUP_READ + acct.stat().st_size // 8, pause=1.0)
    assert "Traceback" not in short.err
    assert classify_cut(short) in ("hard", "partial"), short.out


@pytest.mark.slow
@pytest.mark.timeout(300)  # hang detection: a few runs on an idle machine, dozens on a loaded one
@pytest.mark.parametrize(("engine", "rows", "timeout"), [
    # -t 1, not shorter: on a loaded machine a shorter one is mostly start-up, and a catch-up
    # of a few hundred thousand rows then takes a hundred runs.
    ("c", 300_000, "1"),  # the C scanner
    ("python", 200_000, "1"),  # without it (PMTA_SNMP_PURE_PYTHON: csv reads every row)
])
def test_accounting_timeouts_resume_without_loss_or_double_count(
        tmp_path: Path, engine: str, rows: int, timeout: str) -> None:

    env = engine_env(engine)
    acct = tmp_path / "acct.csv"
    truth = write_acct(acct, rows)
    argv = ["--acct-file", str(acct), "--window", "1d", "-w", "100", "-c", "100",
            "--state-dir", str(tmp_path / "st"), "-t", timeout, "--from-start"]
    # The first run is paused mid-read past its -t, so at least one run is cut.
    first = run_plugin_paused("bounce", argv, env=env, pause=1.0,
                              after_bytes=STARTUP_READ + acct.stat().st_size // 8)
    assert "Traceback" not in first.err
    end = classify_cut(first)
    assert end in ("hard", "partial"), first.out
    if first.perf:  # partial: the window never holds more than was written
        assert int(first.number("attempts")) <= truth["attempts"]

    def never_more_than_written(out: PluginOutcome) -> None:
        if out.perf:
            assert int(out.number("attempts")) <= truth["attempts"], out.out

    runs = catch_up("bounce", argv, env=env, check=never_more_than_written)
    print(f"\n{rows:,} rows with -t {timeout} ({engine}): first run {end}, then "
          f"{[e for e, _ in runs]}")
    # The window is kept in the state: the run that reads to the end has every record once.
    assert bounce_counts(runs[-1][1]) == truth
