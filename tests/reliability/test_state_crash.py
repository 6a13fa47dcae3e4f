"""Plugin state under kill -9 and concurrency.

* A child saves versions of a big dict with StateFile.save (the plugins' StateFile), one
  save each time the test says go, and is SIGKILLed at a random moment of its k-th save, for
  k from 1 to 5 in turn, 25 times: every load afterwards succeeds and equals the version
  before or version k (the old or the new one, never a mix, never a parse error), and the
  lock is free again at once. The temporary files of the killed saves are removed by a later save.
* Two plugin instances run at the same time, over and over, on one state directory and one log:
  the state stays valid JSON and no line is counted by both or by neither.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pmta_snmp.state import STALE_TEMP_S, StateFile
from tests.reliability._files import LogTruth, RotatingFile
from tests.reliability._support import (
    PYTHON,
    REPO,
    agent_env,
    bytes_read,
    engine_env,
    run_plugin,
)

WRITER = """
import sys
from pmta_snmp.state import StateFile
sys.path.insert(0, sys.argv[2])
from tests.reliability.test_state_crash import version
state = StateFile(sys.argv[1])
i = 0
while sys.stdin.readline():  # one save per go from the test
    i += 1
    state.save(version(i))
    print(i, flush=True)
"""


def version(i: int) -> dict[str, object]:
    """Written version i: ~2 MB, every part derived from i (a torn mix is detectable)."""
    return {
        "version": i,
        "logs": {f"/var/log/pmta/log{k}": {"offset": i * 1000 + k, "inode": i, "tail": f"{i:x}"}
                 for k in range(2000)},
        "buckets": [[i, k, "x" * 800] for k in range(2000)],
        "check": i * 7919,
    }


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_kill_9_during_save_leaves_old_or_new_state(tmp_path: Path) -> None:
    path = tmp_path / "state" / "check_pmta_log.json"
    rng = random.Random(7)
    seen_versions: list[int] = []
    for n in range(25):
        k = n % 5 + 1  # killed during its k-th save (or just after it)
        child = subprocess.Popen([PYTHON, "-c", WRITER, str(path), str(REPO)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True,
                                 env=agent_env(PYTHONPATH=str(REPO)), cwd=REPO)
        try:
            assert child.stdin is not None and child.stdout is not None
            # k-1 whole saves (it reloads nothing; each save replaces the file), then go for
            # the k-th and kill it at a random moment, most likely in the middle of it.
            for i in range(1, k):
                child.stdin.write("\n")
                child.stdin.flush()
                line = child.stdout.readline()
                assert line.strip() == str(i), child.stderr.read() if child.stderr else ""
            child.stdin.write("\n")
            child.stdin.flush()
            time.sleep(rng.uniform(0.0, 0.05))
            os.kill(child.pid, signal.SIGKILL)
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        assert child.returncode == -signal.SIGKILL
        # lock_timeout 0: the lock must be free the moment its holder is dead (a held lock
        # would raise StateLockTimeout here instead of being waited for).
        state = StateFile(path, lock_timeout=0)
        data = state.load()
        assert state.warning is None, state.warning  # never a corrupt file
        # The old version: this child's last save, or before its first one what the previous
        # child left (nothing at all the very first time).
        old = k - 1 if k > 1 else (seen_versions[-1] if seen_versions else 0)
        v = data.get("version", 0)
        assert v in (old, k), (k, old, v)  # the old or the new version ...
        if v:
            assert data == json.loads(json.dumps(version(v))), f"version {v} torn"  # ... whole
        else:
            assert data == {}
        seen_versions.append(v)
    leftovers = temp_files(path)
    print(f"\nversions after each kill: {seen_versions}; temp files left: {len(leftovers)}")
    assert not (path.parent / (path.name + ".corrupt")).exists()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # The next save removes what the killed ones left once it is older than a save can take
    # (it would be a run later); a recent temporary file is left alone.
    old = time.time() - STALE_TEMP_S - 1
    for p in leftovers:
        os.utime(p, (old, old))
    recent = path.parent / f".{path.name}.recent.tmp"
    recent.write_bytes(b"{")
    StateFile(path).save(version(99))
    assert temp_files(path) == [recent]
    assert StateFile(path).load()["version"] == 99


def temp_files(path: Path) -> list[Path]:
    """Temporary files of `path`'s writers."""
    return sorted(p for p in path.parent.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_plugin_instances_at_once_share_state_safely(tmp_path: Path) -> None:
    log = RotatingFile(tmp_path / "log")
    truth = LogTruth(log, seed=9)
    truth.write_batch(5)
    state_dir = tmp_path / "state"
    argv = ["-l", str(log.path), "--state-dir", str(state_dir), "-w", "1000000", "-c",
            "1000000"]
    first = run_plugin("log", [*argv, "--from-start"])
    assert first.code == 0, first.out
    sums = {"lines": int(first.number("lines")), "warning": int(first.number("warning_lines")),
            "critical": int(first.number("critical_lines"))}
    lock = threading.Lock()
    errors: list[str] = []
    stop = threading.Event()

    def instance() -> None:
        while not stop.is_set():
            out = run_plugin("log", argv)
            if out.code != 0 or "Traceback" in out.err:
                errors.append(out.out + out.err)
                return
            with lock:
                sums["lines"] += int(out.number("lines"))
                sums["warning"] += int(out.number("warning_lines"))
                sums["critical"] += int(out.number("critical_lines"))

    def writer() -> None:
        while not stop.is_set():
            truth.write_batch()
            time.sleep(0.003)

    threads = [threading.Thread(target=instance) for _ in range(2)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    time.sleep(5)
    stop.set()
    for t in threads:
        t.join(30)
    log.close()
    last = run_plugin("log", argv)
    assert last.code == 0
    sums["lines"] += int(last.number("lines"))
    sums["warning"] += int(last.number("warning_lines"))
    sums["critical"] += int(last.number("critical_lines"))
    assert not errors, errors[:3]
    assert sums == truth.counts, (sums, truth.counts)
    files = list(state_dir.glob("*.json"))
    assert files and all(isinstance(json.loads(f.read_text()), dict) for f in files)
    assert not list(state_dir.glob("*.corrupt"))


def kill_when(child: subprocess.Popen[bytes], ready: Callable[[], bool]) -> bool:
    """SIGKILL `child` as soon as `ready()` holds (polled every millisecond); False when the
    child ended on its own first."""
    while child.poll() is None:
        if ready():
            os.kill(child.pid, signal.SIGKILL)
            break
        time.sleep(0.001)
    child.wait(60)
    return child.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.timeout(300)  # hang detection: 3-15 s
@pytest.mark.parametrize("engine", ["c", "python"])
def test_plugin_killed_anywhere_in_a_run_counts_each_record_once(tmp_path: Path,
                                                                 engine: str) -> None:
    """check_pmta_bounce SIGKILLed at chosen points of a long read (mid-read, then while its
    state is saved): the state is the old or the new one, so the finished run's window holds
    every record exactly once. The kill points are the child's own progress (the bytes it has
    read, a temporary state file appearing), not times, so they land whatever the machine's
    speed."""
    from tests.reliability.test_large_inputs import bounce_counts, write_acct

    env = engine_env(engine)
    acct = tmp_path / "acct.csv"
    # A read long enough to kill it in every stage: the kill points are fractions of the
    # file, so the slower Python engine gets there with a fifth of the C engine's file.
    truth = write_acct(acct, 1_000_000 if engine == "c" else 200_000)
    size = acct.stat().st_size
    argv = [PYTHON, "-m", "pmta_snmp.checks.bounce", "--acct-file", str(acct), "--window",
            "1d", "-w", "100", "-c", "100", "-t", "0", "--from-start",  # (while no state)
            "--state-dir"]
    whole = run_plugin("bounce", [*argv[3:], str(tmp_path / "whole")], env=env)
    assert whole.code == 0 and bounce_counts(whole) == truth, whole.out
    state_dir = tmp_path / "st"

    def read_past(fraction: float) -> Callable[[], bool]:
        return lambda: bytes_read(child.pid) >= fraction * size

    def saving() -> bool:
        return state_dir.is_dir() and any(p.name.endswith(".tmp") for p in state_dir.iterdir())

    # Mid-read three times (the plugin process reads at least the first half of the file
    # itself; a forked worker may count the rest), then as soon as a state save has begun
    # (the save may also be over before the kill: then that run finished).
    points = [read_past(0.05), read_past(0.15), read_past(0.3), saving, saving]
    killed: list[bool] = []
    for ready in points:
        child = subprocess.Popen([*argv, str(state_dir)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env)
        killed.append(kill_when(child, ready))
        assert killed[-1] or child.returncode == 0, child.returncode
    assert killed[:3] == [True, True, True], killed  # every mid-read kill landed mid-read
    out = run_plugin("bounce", [*argv[3:], str(state_dir)], env=env)
    assert out.code == 0, out.out + out.err
    assert bounce_counts(out) == truth
    assert not list(state_dir.glob("*.corrupt"))
