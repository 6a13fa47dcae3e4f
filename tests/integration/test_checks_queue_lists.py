"""check_pmta_queue on a default PowerMTA (issue 18): the pages list the top 10 queues, so a
per-queue rule misses the rest unless an API key lets the plugin read complete lists."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pmta_snmp.checks.queue import main

from pmta_snmp.sim import Simulator
from tests.integration.test_checks_support import Outcome, python_executable, run_main
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


DISCOVERY = (("domains", "{#DOMAIN}"), ("queues", "{#QUEUE}"), ("vmtas", "{#VMTA}"))


def truth(sim: Simulator, kind: str) -> set[str]:
    snap = sim.snapshot()
    rows = {"domains": snap.domains, "queues": snap.queues, "vmtas": snap.vmtas}[kind]
    return {r.name for r in rows}


def discovered(out: Outcome, macro: str) -> set[str]:
    rows = json.loads(out.out)
    assert isinstance(rows, list), out.out
    return {row[macro] for row in rows}


def test_with_a_key_discovery_finds_every_row(
    sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for kind, macro in DISCOVERY:
        out = run(capsys, sim, tmp_path, "--discover", kind, key=True)
        assert out.code == 0, out.out
        names = discovered(out, macro)
        assert names == truth(sim, kind), kind
        assert out.err == "", out.err  # complete: nothing to say
    assert len(truth(sim, "domains")) == 2000 and len(truth(sim, "queues")) > 2000


def test_without_a_key_discovery_says_how_many_rows_are_missing(
    sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dom = sim.snapshot().status.queue_type("smtp").dom
    out = run(capsys, sim, tmp_path, "--discover", "domains", key=False)
    assert out.code == 0
    assert len(discovered(out, "{#DOMAIN}")) == 10
    assert out.err.splitlines() == [
        f"--discover domains is incomplete: /domains: lists 10 of {dom} domains "
        f"(status.queue.smtp.dom): {dom - 10} missing; complete lists need an API key "
        "(POST /command) or a larger http-default-max-items in PowerMTA's config"
    ]
    out = run(capsys, sim, tmp_path, "--discover", "queues", key=False)
    assert len(discovered(out, "{#QUEUE}")) == 10
    assert f"lists 10 queues, PowerMTA has at least {dom} " in out.err
    assert f"at least {dom - 10} missing" in out.err
    out = run(capsys, sim, tmp_path, "--discover", "vmtas", key=False)
    assert len(discovered(out, "{#VMTA}")) == 10  # the simulator's 10 VirtualMTAs: all of them
    assert out.err == "", out.err


def test_a_refused_key_discovers_from_the_pages_and_says_why(
    sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "wrong").write_text("w" * 40)
    out = run(capsys, sim, tmp_path, "--discover", "domains", "--api-key-file",
              str(tmp_path / "wrong"), key=False)
    assert out.code == 0 and len(discovered(out, "{#DOMAIN}")) == 10
    lines = out.err.splitlines()
    assert len(lines) == 2 and "1990 missing" in lines[0], lines
    assert lines[1].startswith("--discover domains: the pages served instead of the list "
                               "commands: PowerMTA refused the API key"), lines


def test_discovery_keeps_the_json_clean_when_stderr_is_stdout(sim: Simulator) -> None:
    """A Zabbix agent reads stdout and stderr through one pipe: the note stays out of it."""
    env = {k: v for k, v in os.environ.items() if k != "PMTA_API_KEY"}
    proc = subprocess.run(
        [python_executable(), "-m", "pmta_snmp.checks.queue", "--url", sim.url,
         "--discover", "domains"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60, check=False,
        env=env,
    )
    assert proc.returncode == 0
    assert len(json.loads(proc.stdout)) == 10, proc.stdout
