"""Helpers of the reliability suite: subprocesses by pid, /proc readings, plugin runs.

No test lives here. Every process started here is stopped by its pid (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.integration.test_checks_support import Outcome

REPO = Path(__file__).resolve().parents[2]
_VENV_PY = REPO / ".venv" / "bin" / "python"
PYTHON = str(_VENV_PY) if _VENV_PY.exists() else sys.executable


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll `pred` until true or `timeout` seconds passed; the last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict (VmRSS, VmHWM, Threads, ...)."""
    out: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def rss_kb(pid: int) -> int:
    """Resident set size of `pid` in KiB."""
    return int(proc_status(pid)["VmRSS"].split()[0])


def hwm_kb(pid: int) -> int:
    """Peak resident set size of `pid` in KiB."""
    return int(proc_status(pid)["VmHWM"].split()[0])


def fds(pid: int) -> dict[int, str]:
    """Open file descriptors of `pid`: fd -> what it points to."""
    out: dict[int, str] = {}
    base = Path(f"/proc/{pid}/fd")
    for entry in base.iterdir():
        with contextlib.suppress(OSError):
            out[int(entry.name)] = os.readlink(entry)
    return out


def cmdline(pid: int) -> list[str]:
    """argv of a running process, as the kernel shows it to `ps`."""
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def stop_pid(proc: subprocess.Popen[Any], timeout: float = 5.0) -> int | None:
    """SIGTERM the process by pid, SIGKILL after `timeout`; its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    return proc.returncode


class Background:
    """A long-running child (the agent) with its stderr in a file; stopped by pid."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=env, cwd=cwd,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        try:
            return stop_pid(self.proc, timeout)
        finally:
            self._log.close()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def engine_env(engine: str) -> dict[str, str]:
    """agent_env() for a plugin counting accounting rows with the C scanner ("c"; the test
    is skipped where it is not built, failed under CI) or in pure Python ("python")."""
    from pmta_snmp.acct.tally import PURE_PYTHON_ENV
    from tests.conftest import require_c_scanner

    if engine == "python":
        return agent_env(**{PURE_PYTHON_ENV: "1"})
    require_c_scanner()
    return agent_env()


def agent_env(**extra: str) -> dict[str, str]:
    """The environment for an agent child: ours minus PMTA_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMTA_SNMP_", "PMTA_API")) or k == "PMTA_SNMP_STATE_DIR"}
    env.update(extra)
    return env


@dataclass
class PluginOutcome(Outcome):
    """Exit code, output and resource use of one plugin run."""

    seconds: float = 0.0
    max_rss_kb: int = 0

    def number(self, label: str) -> float:
        """The numeric value of a perfdata item (unit stripped)."""
        text = self.perf[label].split(";")[0]
        m = re.match(r"-?[0-9.]+", text)
        assert m is not None, f"{label}={text} is not a number"
        return float(m.group(0))


# A small launcher between us and the measured child: Linux counts the RSS a child had before
# exec (a copy of the big pytest process) in its ru_maxrss, so the child is spawned from this
# small process instead, which reports the child's own peak RSS and wall time.
_LAUNCHER = """
import os, sys, time
t0 = time.monotonic()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(f"{usage.ru_maxrss} {time.monotonic() - t0}")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_child(argv: Sequence[str], *, timeout: float = 60, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> PluginOutcome:
    """Run `argv` to its end: output, exit code, the child's wall time and its own peak RSS
    (including processes it forked and waited for)."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as usage:
        proc = subprocess.Popen([PYTHON, "-I", "-S", "-c", _LAUNCHER, usage.name, *argv],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=env if env is not None else agent_env(), cwd=cwd,
                                start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher's group: it and its child
            proc.wait()
            raise AssertionError(f"{argv!r} still running after {timeout}s: killed") from None
        usage.seek(0)
        rss, _, seconds = usage.read().partition(" ")
        out.seek(0)
        err.seek(0)
        return PluginOutcome(proc.returncode, out.read().decode("utf-8", "replace"),
                             err.read().decode("utf-8", "replace"), float(seconds or "nan"),
                             int(rss or 0))


def run_plugin(module: str, argv: Sequence[str], *, timeout: float = 60,
               env: dict[str, str] | None = None) -> PluginOutcome:
    """`python -m pmta_snmp.checks.<module> ARGV` as a child."""
    return run_child([PYTHON, "-m", f"pmta_snmp.checks.{module}", *argv], timeout=timeout,
                     env=env)


def bytes_read(pid: int) -> int:
    """Bytes read so far by process `pid` and its living descendants (`rchar` of
    /proc/PID/io: start-up included, about 2 MB for a plugin; 0 once gone)."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                total += int(line.split()[1])
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            total += sum(bytes_read(int(child)) for child in children)
    except (OSError, ValueError):
        pass  # gone meanwhile
    return total


def run_plugin_paused(module: str, argv: Sequence[str], *, after_bytes: int, pause: float,
                      env: dict[str, str] | None = None, timeout: float = 60) -> PluginOutcome:
    """`python -m pmta_snmp.checks.<module> ARGV`, stopped (SIGSTOP) for `pause` seconds once
    it has read `after_bytes`: with a pause longer than its -t, the run is cut by its timeout
    in the middle of its input however fast the machine (a run that ends before reading that
    much is not paused). No wall time or RSS is measured."""
    proc = subprocess.Popen([PYTHON, "-m", f"pmta_snmp.checks.{module}", *argv],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env if env is not None else agent_env())
    try:
        while proc.poll() is None and bytes_read(proc.pid) < after_bytes:
            time.sleep(0.001)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(pause)
            os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return PluginOutcome(proc.returncode, out.decode("utf-8", "replace"),
                         err.decode("utf-8", "replace"))


def assert_one_clean_unknown_line(out: PluginOutcome, what: str) -> None:
    """Exit 3, one `PMTA <NAME> UNKNOWN - ...` line, no traceback anywhere."""
    assert out.code == 3, f"{what}: exit {out.code}\n{out.out}\n{out.err}"
    lines = out.out.splitlines()
    assert len(lines) == 1, f"{what}: want one line, got {lines!r}"
    assert re.match(r"PMTA [A-Z]+ UNKNOWN - \S", lines[0]), f"{what}: {lines[0]!r}"
    assert "Traceback" not in out.out + out.err, f"{what}: traceback\n{out.err}"
    assert out.err.strip() == "", f"{what}: stderr {out.err!r}"


class CutProxy:
    """A TCP proxy on 127.0.0.1 in front of `upstream_port`. While `cut` is set it forwards
    only half of the first answer chunk of each response and then resets both connections:
    PowerMTA killed in the middle of an answer (headers and part of the body sent). With
    `stall_after` set, each connection's answers stop after that many bytes until the proxy
    stops: PowerMTA hanging in the middle of a big answer."""

    def __init__(self, upstream_port: int) -> None:
        import socket
        import threading

        self.upstream_port = upstream_port
        self.cut = False
        self.stall_after: int | None = None
        self.cuts = 0
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._socks: set[Any] = set()
        self._lock = threading.Lock()
        self._accept = threading.Thread(target=self._serve, name="cut-proxy", daemon=True)
        self._accept.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        import socket
        import threading

        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), 2)
            except OSError:
                self._reset(client)
                continue
            upstream.settimeout(None)  # a slow answer is the client's to time out, not ours
            client.settimeout(None)
            with self._lock:
                self._socks.update((client, upstream))
            for src, dst, answer in ((client, upstream, False), (upstream, client, True)):
                t = threading.Thread(target=self._pump, args=(src, dst, answer), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: Any, dst: Any, answer: bool) -> None:
        import socket

        forwarded = 0
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                if answer and self.stall_after is not None \
                        and forwarded + len(data) > self.stall_after:
                    dst.sendall(data[: self.stall_after - forwarded])
                    self._stop.wait()
                    return
                forwarded += len(data)
                if answer and self.cut:
                    dst.sendall(data[: max(1, len(data) // 2)])
                    self.cuts += 1
                    self._reset(dst)
                    self._reset(src)
                    return
                dst.sendall(data)
        except OSError:
            self._reset(dst)
            self._reset(src)

    def _reset(self, sock: Any) -> None:
        import socket
        import struct

        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):  # wakes a thread blocked in recv on it
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def stop(self) -> None:
        self._stop.set()
        self._accept.join(5)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._socks:
                self._reset(sock)
        for t in self._threads:
            t.join(5)
