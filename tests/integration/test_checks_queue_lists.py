"""check_pmta_queue on a default PowerMTA (issue 18): the pages list the top 10 queues, so a
per-queue rule misses the rest unless an API key lets the plugin read complete lists."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pmta_snmp.checks.queue import main

from pmta_snmp.sim import Simulator
from tests.integration.test_checks_support import Outcome, run_main
from tests.unit._sim_helpers import command

KEY = "queue_lists_key_" + "p" * 30
SMALL = "d000777.example/vmta007"
"""A queue far below the top 10."""


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(scenario="scale", domains=2000, vmtas=10, seed=7, speed=0,
                   api_key=KEY) as s:
        assert command(s, f"pause queue {SMALL}", key=KEY).status_code == 200
        yield s


def run(capsys: pytest.CaptureFixture[str], sim: Simulator, tmp_path: Path, *argv: str,
        key: bool) -> Outcome:
    args = ["--url", sim.url, "--state-dir", str(tmp_path / "state"), "--stuck-minutes", "0",
            "--deferred-growth", "0", *argv]
    if key:
        (tmp_path / "key").write_text(KEY)
        args += ["--api-key-file", str(tmp_path / "key")]
    saved = os.environ.pop("PMTA_API_KEY", None)
    try:
        return run_main(main, args, capsys)
    finally:
        if saved is not None:
            os.environ["PMTA_API_KEY"] = saved


def test_with_a_key_a_paused_queue_beyond_the_top_10_is_found(
    sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run(capsys, sim, tmp_path, key=True)
    assert out.code == 1, out.out
    assert f"queue {SMALL} paused" in out.line
    assert "listed by" not in out.out  # complete: no line about missing rows


def test_without_a_key_the_long_output_says_which_rules_miss_rows(
    sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dom = sim.snapshot().status.queue_type("smtp").dom
    out = run(capsys, sim, tmp_path, "--domain-warning", "100000", key=False)
    assert out.code == 0, out.out  # the paused queue is not on the page
    long = out.out.splitlines()
    assert (f"only 10 of at least {dom} queues listed by /queues: the paused, backoff, stuck "
            f"and --queue-* rules miss at least {dom - 10}; give the plugin an API key "
            "(--api-key-file or PMTA_API_KEY) to list them all through POST /command, or "
            "raise http-default-max-items in PowerMTA's config") in long
    assert any(line.startswith(f"only 10 of {dom} domains listed by /domains: the --domain "
                               f"and --domain-* rules miss {dom - 10};") for line in long)
