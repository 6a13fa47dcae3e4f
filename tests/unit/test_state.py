"""Atomic JSON state store: pmta_snmp.state."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from pmta_snmp import state as state_mod
from pmta_snmp.state import (
    StateCorrupt,
    StateError,
    StateFile,
    StateLockTimeout,
    StateUnsafe,
    default_state_dir,
    state_path,
)
from tests._clock import FakeTime


def test_missing_file_loads_empty(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "s.json")
    assert sf.load() == {}
    assert sf.warning is None


def test_save_then_load_round_trip(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "s.json")
    data = {"tail": {"offset": 12, "inode": 7}, "names": ["a", "é"]}
    sf.save(data)
    assert StateFile(tmp_path / "s.json").load() == data


def test_file_is_private_and_directory_created_private(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "s.json"
    StateFile(path).save({"x": 1})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_save_leaves_no_temp_files(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "s.json")
    for i in range(5):
        sf.save({"i": i})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.json.lock"]


def test_unserialisable_data_keeps_previous_state(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "s.json")
    sf.save({"ok": True})
    with pytest.raises(TypeError):
        sf.save({"bad": object()})
    assert sf.load() == {"ok": True}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe garbage", b""])
def test_corrupt_state_is_reported_and_reset(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(content)
    sf = StateFile(path)
    assert sf.load() == {}
    assert isinstance(sf.warning, StateCorrupt)
    assert str(path) in str(sf.warning)
    assert (tmp_path / "s.json.corrupt").read_bytes() == content
    sf.save({"fresh": 1})
    assert sf.load() == {"fresh": 1}
    assert sf.warning is None


def test_unreadable_state_raises_state_error(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.mkdir()  # a directory where the file should be: reading fails even for root
    with pytest.raises(StateError):
        StateFile(path).load()


def test_failure_during_save_keeps_previous_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sf = StateFile(tmp_path / "s.json")
    sf.save({"v": 1})

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_mod.os, "fsync", disk_full)
    with pytest.raises(StateError, match="cannot write"):
        sf.save({"v": 2})
    monkeypatch.undo()
    assert sf.load() == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.json.lock"]


def test_transaction_saves_changes_and_not_on_error(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "s.json")
    with sf.transaction() as data:
        data["n"] = 1
    assert sf.load() == {"n": 1}
    with pytest.raises(RuntimeError), sf.transaction() as data:
        data["n"] = 2
        raise RuntimeError("plugin failed mid-run")
    assert sf.load() == {"n": 1}


def test_lock_is_reentrant_within_one_object(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "s.json", lock_timeout=0.2)
    with sf.lock():
        sf.save({"a": 1})
        assert sf.load() == {"a": 1}


def test_lock_wait_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A held lock is waited for lock_timeout seconds of the (fake) clock, in short polls,
    then refused with StateLockTimeout; the waiter gets the lock once it is free."""
    clock = FakeTime()
    monkeypatch.setattr(state_mod, "time", clock)
    holder = StateFile(tmp_path / "s.json")
    waiter = StateFile(tmp_path / "s.json", lock_timeout=0.3)
    with holder.lock():
        with pytest.raises(StateLockTimeout, match=r"locked by another process \(waited 0.3s"):
            waiter.load()
        assert sum(clock.sleeps) == pytest.approx(0.3)  # it waited the whole timeout ...
        assert len(clock.sleeps) > 1 and max(clock.sleeps) <= state_mod._LOCK_POLL_S  # polling
        clock.sleeps.clear()
        with pytest.raises(StateLockTimeout):
            StateFile(tmp_path / "s.json", lock_timeout=0).load()
        assert clock.sleeps == []  # lock_timeout 0: refused at once, no wait
    assert waiter.load() == {}  # free again
    assert clock.sleeps == []  # a free lock is taken without waiting


def test_lock_is_taken_as_soon_as_the_holder_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeTime()
    monkeypatch.setattr(state_mod, "time", clock)
    holder = StateFile(tmp_path / "s.json")
    held = holder.lock()
    held.__enter__()
    real_sleep = clock.sleep

    def sleep_then_release(seconds: float) -> None:
        real_sleep(seconds)
        if len(clock.sleeps) == 3:  # the holder finishes during the waiter's third poll
            held.__exit__(None, None, None)

    monkeypatch.setattr(clock, "sleep", sleep_then_release)
    StateFile(tmp_path / "s.json", lock_timeout=10).save({"n": 1})
    assert len(clock.sleeps) == 3  # got it on the next poll, not after the timeout
    assert holder.load() == {"n": 1}


def _increment(path: str, times: int) -> None:
    sf = StateFile(path, lock_timeout=30)
    for _ in range(times):
        with sf.transaction() as data:
            data["count"] = data.get("count", 0) + 1
            data.setdefault("seen", []).append(os.getpid())


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    path = str(tmp_path / "s.json")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_increment, args=(path, 40)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    data = json.loads(Path(path).read_text())
    assert data["count"] == 160
    assert len(data["seen"]) == 160


def _save_big(path: str, rounds: int) -> None:
    sf = StateFile(path, lock_timeout=30)
    for i in range(rounds):
        sf.save({"i": i, "blob": "x" * 200_000})


def _read_many(path: str, rounds: int, out: multiprocessing.queues.Queue[int]) -> None:
    # Reads the file directly, without the lock: what a crash mid-save would leave behind.
    corrupt = 0
    for _ in range(rounds):
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            continue
        try:
            if len(json.loads(raw)["blob"]) != 200_000:
                corrupt += 1
        except ValueError:
            corrupt += 1
    out.put(corrupt)


def test_readers_never_see_a_partial_write(tmp_path: Path) -> None:
    path = str(tmp_path / "s.json")
    ctx = multiprocessing.get_context("fork")
    results: multiprocessing.queues.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_save_big, args=(path, 30)) for _ in range(2)]
    procs += [ctx.Process(target=_read_many, args=(path, 300, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert [results.get(timeout=5), results.get(timeout=5)] == [0, 0]


def test_default_state_dir_prefers_system_dir_when_writable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PMTA_SNMP_STATE_DIR", raising=False)
    system = tmp_path / "var-lib-pmta-snmp"
    monkeypatch.setattr(state_mod, "SYSTEM_STATE_DIR", system)
    assert default_state_dir() == system  # creatable: its parent is writable


def test_default_state_dir_falls_back_to_per_user_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PMTA_SNMP_STATE_DIR", raising=False)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setattr(state_mod, "SYSTEM_STATE_DIR", blocker)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "pmta-snmp"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "pmta-snmp"


def test_default_state_dir_not_writable_system_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PMTA_SNMP_STATE_DIR", raising=False)
    system = tmp_path / "sys"
    system.mkdir()
    monkeypatch.setattr(state_mod, "SYSTEM_STATE_DIR", system)
    monkeypatch.setattr(state_mod.os, "access", lambda *_a, **_k: False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "pmta-snmp"


def test_state_dir_env_override_and_state_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMTA_SNMP_STATE_DIR", str(tmp_path))
    assert default_state_dir() == tmp_path
    a = state_path("check_pmta_log", "/var/log/pmta/log")
    b = state_path("check_pmta_log", "/var/log/pmta/pmtahttp.log")
    assert a.parent == tmp_path and a != b
    assert a.name.startswith("check_pmta_log-") and a.suffix == ".json"
    assert state_path("../../evil name").parent == tmp_path


# -- a state directory another user could write to (plugins often run as root) -------------
# Tests run as root, which bypasses permission checks: the refusal is tested on the real mode
# bits and owners, the symlink refusal on real symlinks (O_NOFOLLOW stops root too).


def _shared_dir(tmp_path: Path, mode: int, uid: int | None = None) -> Path:
    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, mode)
    if uid is not None:
        os.chown(directory, uid, -1)
    return directory


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_directory_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    directory = _shared_dir(tmp_path, mode)
    sf = StateFile(directory / "s.json")
    with pytest.raises(StateUnsafe, match=r"state directory .* is writable by .*refused") as err:
        sf.save({"x": 1})
    assert "\n" not in str(err.value)
    with pytest.raises(StateUnsafe):
        sf.load()
    assert list(directory.iterdir()) == []  # nothing created there


def test_sticky_directory_owned_by_us_or_root_is_accepted(tmp_path: Path) -> None:
    directory = _shared_dir(tmp_path, 0o1777)  # like /tmp
    sf = StateFile(directory / "s.json")
    sf.save({"x": 1})
    assert sf.load() == {"x": 1}


def test_sticky_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    directory = _shared_dir(tmp_path, 0o1777, uid=65534)
    with pytest.raises(StateUnsafe, match="owner uid 65534"):
        StateFile(directory / "s.json").save({"x": 1})


def test_private_directory_of_another_owner_is_not_refused(tmp_path: Path) -> None:
    """Only write access for others matters: root using nagios' 0700 directory is fine."""
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    directory = _shared_dir(tmp_path, 0o700, uid=65534)
    StateFile(directory / "s.json").save({"x": 1})


@pytest.mark.parametrize("which", ["s.json.lock", "s.json"])
def test_planted_symlink_is_refused_not_followed(tmp_path: Path, which: str) -> None:
    directory = _shared_dir(tmp_path, 0o1777)
    victim = tmp_path / "etc" / "victim"
    victim.parent.mkdir()
    (directory / which).symlink_to(victim)
    sf = StateFile(directory / "s.json")
    with pytest.raises(StateUnsafe, match=r"is a symbolic link; refused"):
        sf.load()
    if which == "s.json.lock":
        with pytest.raises(StateUnsafe, match=r"is a symbolic link; refused"):
            sf.save({"x": 1})
    else:  # a save renames its new file over the link itself, never writes through it
        sf.save({"x": 1})
        assert not (directory / which).is_symlink()
    assert not victim.exists()  # nothing created through the link


def test_symlink_to_an_existing_file_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"password": "x"}')
    (tmp_path / "s.json").symlink_to(secret)
    with pytest.raises(StateUnsafe, match="symbolic link"):
        StateFile(tmp_path / "s.json").load()
    assert secret.read_text() == '{"password": "x"}'


def test_file_of_another_user_in_a_sticky_directory_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    directory = _shared_dir(tmp_path, 0o1777)
    planted = directory / "s.json"
    planted.write_text('{"offset": 123456}')
    os.chown(planted, 65534, -1)
    with pytest.raises(StateUnsafe, match="belongs to uid 65534"):
        StateFile(planted).load()
