"""Real net-snmp processes for the tests, the demo and the benchmarks: an unprivileged snmpd master,
an snmptrapd receiver, client wrappers that parse `-On` output, and a thread
running an asyncio loop (so blocking client calls can talk to an async agent).

Every process is started by us, tracked by pid, and stopped by pid
(terminate, wait, kill on timeout). Servers bind 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

T = TypeVar("T")

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def find_tool(name: str) -> str | None:
    """Path of a net-snmp program: PATH first, then the sbin dirs non-root PATHs lack."""
    found = shutil.which(name)
    if found:
        return found
    for d in _SBIN_DIRS:
        candidate = os.path.join(d, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def missing_netsnmp_tools(*extra: str) -> list[str]:
    """Names of the needed net-snmp programs that are not installed."""
    needed = ("snmpd", "snmpget", "snmpwalk", "snmpbulkwalk", *extra)
    return [t for t in needed if find_tool(t) is None]


PORT_RANGE_ENV = "PMTA_SNMP_PORT_RANGE"
"""`LOW-HIGH`: hand out ports from this range only (the tests give each parallel worker its own
slice below the kernel's ephemeral range, so no other worker and no client socket gets them)."""
_port_lock = threading.Lock()
_port_cursor: dict[tuple[int, int], int] = {}


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port(kind: socket.SocketKind) -> int:
    """A port free for both TCP and UDP on 127.0.0.1: from `PMTA_SNMP_PORT_RANGE` in turn
    (a port comes back only after the whole range), else one the kernel picks."""
    spec = os.environ.get(PORT_RANGE_ENV, "")
    low, _, high = spec.partition("-")
    if not (low.isdigit() and high.isdigit() and 0 < int(low) < int(high) < 65536):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            return port
    span = (int(low), int(high))
    size = span[1] - span[0] + 1
    with _port_lock:
        start = _port_cursor.get(span, os.getpid() % size)  # apart from other processes
        for step in range(size):
            port = span[0] + (start + step) % size
            if _bindable(port, socket.SOCK_STREAM) and _bindable(port, socket.SOCK_DGRAM):
                _port_cursor[span] = (start + step + 1) % size
                return port
    raise OSError(f"no free port in {PORT_RANGE_ENV}={spec}")


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    return _free_port(socket.SOCK_DGRAM)


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return _free_port(socket.SOCK_STREAM)


def udp_port_bound(port: int) -> bool:
    """True when something already listens on 127.0.0.1:port (UDP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


class SnmpVarBind(NamedTuple):
    """One line of `-On` client output: numeric OID, type label, value text."""

    oid: str
    type: str
    value: str


_LINE = re.compile(r"^(\.?[0-9][0-9.]*) = (?:([A-Za-z0-9 -]+): )?(.*)$")
_EXCEPTIONS = {
    "No Such Object available on this agent at this OID": "noSuchObject",
    "No Such Instance currently exists at this OID": "noSuchInstance",
    "No more variables left in this MIB View (It is past the end of the MIB tree)": "endOfMibView",
}


def parse_varbinds(text: str) -> list[SnmpVarBind]:
    """Parse `snmpget/snmpwalk -On` output; exceptions get types noSuchObject etc.

    STRING values keep their quotes stripped; an empty string prints as `""`.
    """
    out: list[SnmpVarBind] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            if out and line and not line.startswith("."):
                # continuation of a multi-line value (hex strings wrap)
                prev = out[-1]
                out[-1] = prev._replace(value=prev.value + "\n" + line)
            continue
        oid, typ, value = m.group(1), m.group(2), m.group(3)
        oid = oid.lstrip(".")
        if typ is None:
            exc = _EXCEPTIONS.get(value)
            if exc is not None:
                out.append(SnmpVarBind(oid, exc, ""))
            elif value == '""':
                out.append(SnmpVarBind(oid, "STRING", ""))
            else:
                out.append(SnmpVarBind(oid, "", value))
            continue
        if typ == "STRING" and len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out.append(SnmpVarBind(oid, typ, value))
    return out


def child_pids(pid: int) -> list[int]:
    """The pids of `pid`'s children (Linux: /proc/PID/task/*/children); [] when unknown."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(x) for x in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Terminate one process we started (by its pid); kill it if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


class SnmpClientError(RuntimeError):
    """An snmp client program failed."""


class _Daemon:
    """A net-snmp daemon run in the foreground by a subclass, its output appended to
    `log_path`: the start-and-wait, stop and log of snmpd and snmptrapd."""

    name: ClassVar[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None

    def _spawn(self, argv: list[str], persist_dir: Path) -> None:
        env = dict(os.environ, SNMP_PERSISTENT_DIR=str(persist_dir), MIBS="")
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        finally:
            log.close()

    def _wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        """Return once `ready()`; RuntimeError if the daemon exits first, TimeoutError (after
        stopping it) if `timeout` passes."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()}"
                )
            if ready():
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.log_text()}")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the daemon gracefully (SIGTERM, by pid), killing it after `timeout`."""
        if self.proc is not None:
            stop_process(self.proc, timeout)
            self.proc = None

    def log_text(self) -> str:
        """What the daemon printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class SnmpdMaster(_Daemon):
    """An unprivileged snmpd acting as AgentX master, confined to `workdir`.

    Listens on udp:127.0.0.1:<port> (community `public`) and on a unix AgentX
    socket in `workdir`; `restart()` keeps both. Use as a context manager or
    call `stop()`.
    """

    name: ClassVar[str] = "snmpd"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        trap_port: int | None = None,
        agentx_timeout: int = 1,
        agentx_retries: int = 1,
        agentx_tcp_port: int | None = None,
        extra_config: str = "",
    ) -> None:
        snmpd = find_tool("snmpd")
        if snmpd is None:
            raise FileNotFoundError("snmpd not found")
        self.snmpd = snmpd
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_path = self.workdir / "agentx.sock"
        if len(str(self.socket_path)) > 100:
            raise ValueError(f"unix socket path too long: {self.socket_path}")
        self.port = port or free_udp_port()
        self.trap_port = trap_port
        self.agentx_tcp_port = agentx_tcp_port
        self.config_path = self.workdir / "snmpd.conf"
        self.pid_path = self.workdir / "snmpd.pid"
        self.log_path = self.workdir / "snmpd.log"
        self.persist_dir = self.workdir / "persist"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        lines = [
            "master agentx",
            f"agentXSocket {self.agentx_address}",
            "agentXPerms 0660 0770",
            f"agentXTimeout {agentx_timeout}",
            f"agentXRetries {agentx_retries}",
            "rocommunity public 127.0.0.1",
            "dontLogTCPWrappersConnects yes",
        ]
        if trap_port is not None:
            lines.append(f"trap2sink udp:127.0.0.1:{trap_port} public")
        if extra_config:
            lines.append(extra_config)
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def agent(self) -> str:
        """The UDP address clients use: 127.0.0.1:<port>."""
        return f"127.0.0.1:{self.port}"

    @property
    def agentx_address(self) -> str:
        """The AgentX address a subagent connects to (`unix:PATH` or `tcp:127.0.0.1:PORT`)."""
        if self.agentx_tcp_port is not None:
            return f"tcp:127.0.0.1:{self.agentx_tcp_port}"
        return f"unix:{self.socket_path}"

    def _agentx_listening(self) -> bool:
        if self.agentx_tcp_port is None:
            return self.socket_path.exists()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.agentx_tcp_port)) == 0

    @property
    def pid(self) -> int | None:
        """pid of the running snmpd, or None."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, timeout: float = 10.0) -> None:
        """Start snmpd and wait until the AgentX socket exists and an snmpget answers."""
        if self.pid is not None:
            raise RuntimeError("snmpd already running")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # stale after a hard kill
        self._spawn(
            [
                self.snmpd,
                "-f",
                "-Lo",
                "-C",
                "-c",
                str(self.config_path),
                "-p",
                str(self.pid_path),
                "-m",
                "",
                "-I",
                "-smux",
                f"udp:127.0.0.1:{self.port}",
            ],
            self.persist_dir,
        )
        self.starts += 1
        self._wait_ready(lambda: self._agentx_listening() and self._answers(), timeout)

    def _answers(self) -> bool:
        try:
            self.get("1.3.6.1.2.1.1.3.0", timeout=0.3, retries=0)
        except SnmpClientError:
            return False
        return True

    def kill(self) -> None:
        """Hard-kill snmpd (SIGKILL): no Close reaches the subagents."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def restart(self, hard: bool = False, timeout: float = 10.0) -> None:
        """Stop (or kill) and start again on the same socket and port."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start(timeout)

    def __enter__(self) -> SnmpdMaster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- clients ------------------------------------------------------------

    def run_client(self, tool: str, *args: str, timeout: float = 1.0, retries: int = 1) -> str:
        """Run a net-snmp client against this agent (v2c, -On); stdout, or SnmpClientError.

        `args` are the tool's options followed by one operand (the OID), as on a command line.
        """
        return self._client(tool, args[:-1], args[-1:], timeout, retries)

    def _client(
        self,
        tool: str,
        options: Sequence[str],
        operands: Sequence[str],
        timeout: float,
        retries: int,
    ) -> str:
        exe = find_tool(tool)
        if exe is None:
            raise FileNotFoundError(tool)
        cmd = [
            exe,
            "-v2c",
            "-c",
            "public",
            "-On",
            "-m",
            "",
            "-t",
            str(timeout),
            "-r",
            str(retries),
            *options,
            self.agent,
            *operands,
        ]
        budget = (timeout * (retries + 1)) + 30
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=budget, check=False)
        if res.returncode != 0:
            raise SnmpClientError(f"{' '.join(cmd)} -> {res.returncode}: {res.stderr.strip()}")
        return res.stdout

    def get(self, *oids: str, timeout: float = 1.0, retries: int = 1) -> list[SnmpVarBind]:
        """snmpget one or more OIDs."""
        return parse_varbinds(self._client("snmpget", (), oids, timeout, retries))

    def walk(self, oid: str, *options: str) -> list[SnmpVarBind]:
        """snmpwalk (GetNext) a subtree; `-Cc` etc. may be passed as options."""
        return parse_varbinds(self.run_client("snmpwalk", *options, oid))

    def bulkwalk(self, oid: str, *options: str) -> list[SnmpVarBind]:
        """snmpbulkwalk (GetBulk to snmpd) a subtree."""
        return parse_varbinds(self.run_client("snmpbulkwalk", *options, oid))


class TrapReceiver(_Daemon):
    """snmptrapd on udp:127.0.0.1:<port> logging every notification as one line."""

    name: ClassVar[str] = "snmptrapd"

    _PREFIX = "TRAP "
    _SEP = "|~|"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        exe = find_tool("snmptrapd")
        if exe is None:
            raise FileNotFoundError("snmptrapd not found")
        self.exe = exe
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_udp_port()
        self.config_path = self.workdir / "snmptrapd.conf"
        self.config_path.write_text("disableAuthorization yes\ndoNotLogTraps no\n")
        self.log_path = self.workdir / "snmptrapd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start snmptrapd and wait until its UDP port is bound."""
        self._spawn(
            [
                self.exe,
                "-f",
                "-Lo",
                "-C",
                "-c",
                str(self.config_path),
                "-m",
                "",
                "-On",
                "-p",
                str(self.workdir / "snmptrapd.pid"),
                "-F",
                f"{self._PREFIX}%B{self._SEP}%V{self._SEP}%v\n",
                f"udp:127.0.0.1:{self.port}",
            ],
            self.workdir / "persist",
        )
        self._wait_ready(lambda: udp_port_bound(self.port), timeout)

    def traps(self) -> list[list[SnmpVarBind]]:
        """Every notification received so far, as its list of varbinds."""
        out: list[list[SnmpVarBind]] = []
        for line in self.log_text().splitlines():
            if not line.startswith(self._PREFIX):
                continue
            parts = line[len(self._PREFIX) :].split(self._SEP)
            out.append([vb for p in parts[1:] for vb in parse_varbinds(p)])
        return out

    def wait_for(
        self, predicate: Callable[[list[SnmpVarBind]], bool], timeout: float = 5.0
    ) -> list[SnmpVarBind]:
        """The first received notification matching `predicate`; TimeoutError if none."""
        deadline = time.monotonic() + timeout
        while True:
            for trap in self.traps():
                if predicate(trap):
                    return trap
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching trap; received: {self.traps()}")
            time.sleep(0.05)

    def __enter__(self) -> TrapReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LoopThread:
    """An asyncio loop in a daemon thread; `call()` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="test-asyncio", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run `coro` on the loop; its result (or exception) after at most `timeout` s."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run a plain callable on the loop thread."""
        self.loop.call_soon_threadsafe(fn)

    def close(self) -> None:
        """Cancel leftover tasks, stop the loop and join the thread."""

        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            with contextlib.suppress(Exception):
                self.call(_cancel_all(), timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self.loop.is_running():
            self.loop.close()


@contextlib.contextmanager
def short_tempdir(prefix: str = "snmpd-") -> Iterator[Path]:
    """A temp dir under /tmp with a short path (unix socket paths max ~107 bytes)."""
    base = "/tmp" if os.path.isdir("/tmp") else None  # noqa: S108 - mkdtemp makes it private
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
