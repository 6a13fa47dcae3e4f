"""Memory stays bounded whatever the API sends, and a worker that grew gives its memory back.

* The exporter (an in-process poll thread, like the agents' poll worker) fetches its four
  pages at once: four 100 MiB answers are stopped at the per-poll budget (128 MiB by default,
  `pmta.max_poll_mib`), not read whole, and its peak memory shows it.
* check_pmta_queue against a gzip bomb (512 MiB of spaces in 500 KiB): stopped at the page
  limit counted on decoded bytes, one UNKNOWN line, a peak far below the bomb's size.
* A poll worker that a large PowerMTA answer left above `poll.worker_max_rss_mib` is replaced
  by a fresh process: the agent serves on (same data, counters go on) and the memory is back.

Peak memory is read from the kernel (VmHWM, ru_maxrss): sizes, not speed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pmta_snmp.config import Config, PmtaSection, PollSection
from pmta_snmp.mib.layout import layout
from pmta_snmp.mib.snapshot import OidTree, SnmpType, Value
from pmta_snmp.netsnmp import LoopThread, free_tcp_port
from pmta_snmp.sim import Simulator
from pmta_snmp.worker import Published, TreeWorker
from tests.reliability._hostile import HostileApi
from tests.reliability._support import (
    PYTHON,
    Background,
    agent_env,
    assert_one_clean_unknown_line,
    hwm_kb,
    rss_kb,
    run_plugin,
    wait_until,
)

LAY = layout()
MIB = 1 << 20


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(scenario="healthy", seed=21, speed=0, domains=30, vmtas=3) as s:
        yield s


def _up(url: str) -> float | None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        if family.name == "pmta_up":
            return float(family.samples[0].value)
    return None


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_four_huge_pages_at_once_stop_at_the_poll_budget(sim: Simulator, tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    with HostileApi(sim.url, huge_bytes=100 * MIB) as api:
        port = free_tcp_port()
        url = f"http://127.0.0.1:{port}/metrics"
        exporter = Background(
            [PYTHON, "-m", "pmta_snmp.integrations.cli", "exporter", "--url", api.url,
             "--interval", "1", "--listen", f"127.0.0.1:{port}"],
            tmp_path / "exporter.log", env=agent_env(PMTA_SNMP_PMTA_TIMEOUT="30"),
        )
        try:
            assert wait_until(lambda: _up(url) == 1, 30), exporter.log_text()
            api.mode = "huge"  # 4 x 100 MiB of valid JSON, no Content-Length
            assert wait_until(lambda: _up(url) == 0, 60), exporter.log_text()
            assert wait_until(lambda: "pmta.max_poll_mib" in exporter.log_text(), 30)
            peak = hwm_kb(exporter.pid) * 1024
            log = exporter.log_text()
            print(f"\nexporter peak RSS with 4 x 100 MiB answers: {peak / MIB:.0f} MiB")
            assert "answers of one poll exceed 128 MiB in all" in log, log
            assert peak < 400 * MIB, peak  # the 128 MiB budget, not the 400 MiB sent
            api.mode = "good"
            assert wait_until(lambda: _up(url) == 1, 30), exporter.log_text()
            assert exporter.alive()
        finally:
            exporter.stop()


@pytest.mark.slow
def test_a_gzip_bomb_stops_check_pmta_queue_at_the_decoded_page_limit(
    sim: Simulator, tmp_path: Path
) -> None:
    with HostileApi(sim.url, bomb_bytes=512 * MIB) as api:
        api.mode = "bomb"
        out = run_plugin("queue", ["--url", api.url, "--state-dir", str(tmp_path)])
    print(f"\ncheck_pmta_queue against a 512 MiB gzip bomb: peak RSS {out.max_rss_kb // 1024} MiB")
    assert out.max_rss_kb * 1024 < 200 * MIB, out.max_rss_kb  # 64 MiB limit + the interpreter
    assert_one_clean_unknown_line(out, "gzip bomb")
    assert "exceeds 64 MiB" in out.line, out.line


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_worker_left_above_its_memory_limit_is_replaced_and_the_memory_returns(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A poll of a 20k-domain PowerMTA leaves the worker well above 80 MiB (memory Python
    keeps after the answer is gone); the next worker starts small and the data is the same."""
    limit = 80
    # http-default-max-items raised: the pages list all 20k domains.
    big = Simulator(scenario="scale", seed=1, speed=0, domains=20_000, vmtas=5,
                    max_items=None).start()
    loop_thread = LoopThread()
    published: list[Published] = []
    caplog.set_level(logging.WARNING, "pmta_snmp.worker")
    with HostileApi(sim.url) as api:
        cfg = Config(pmta=PmtaSection(url=api.url, timeout=30),
                     poll=PollSection(interval=1, jitter=0, worker_max_rss_mib=limit))
        worker = TreeWorker(cfg, OidTree(), on_published=published.append, restart_initial=0.2)

        async def start() -> None:
            worker.start()

        def domains() -> int:
            got = worker.current().get(LAY.instance("pmtaDomainCount"))
            return got.value if got is not None and isinstance(got.value, int) else -1

        loop_thread.call(start())
        try:
            assert wait_until(lambda: len(published) >= 2, 30)
            assert worker.restarts == 0
            small_rss = rss_kb(_pid(worker)) * 1024
            assert small_rss < limit * MIB, small_rss
            api.upstream = big.url
            assert wait_until(lambda: domains() == 20_000, 120), "the big poll was not served"
            api.upstream = sim.url
            assert wait_until(lambda: worker.restarts >= 1, 60), "not replaced"
            # Settled: a worker that polled twice without being replaced, below the limit.
            assert wait_until(lambda: _settled(worker, published), 120)
            after = rss_kb(_pid(worker)) * 1024
            print(f"\nworker RSS: {small_rss / MIB:.0f} MiB small, replaced above {limit} MiB"
                  f" after the 20k-domain poll, {after / MIB:.0f} MiB after")
            assert after < limit * MIB
            assert worker.current().get(LAY.instance("pmtaAgentApiReachable")) == Value(
                SnmpType.INTEGER, 1)
        finally:
            loop_thread.call(worker.stop())
            loop_thread.close()
            big.stop()
    assert "worker_max_rss_mib" in caplog.text and "poll worker gone" not in caplog.text


def _pid(worker: TreeWorker) -> int:
    pid = worker.pid
    assert pid is not None
    return pid


def _settled(worker: TreeWorker, published: list[Published]) -> bool:
    restarts, n = worker.restarts, len(published)
    time.sleep(2.5)  # two polls at 1 s
    return worker.restarts == restarts and len(published) >= n + 2 and worker.pid is not None \
        and os.path.exists(f"/proc/{worker.pid}")

