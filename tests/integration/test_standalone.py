"""The standalone SNMP agent against the real net-snmp tools (snmpwalk, snmpget, snmpbulkwalk,
snmpbulkget, snmpset, snmptrapd).

A hand-built OidTree (scalars of every SnmpType and a string-indexed table under
1.3.6.1.4.1.32473.99) is served on 127.0.0.1, port 0, from an asyncio loop in a background
thread; every value the tools print is compared exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pmta_snmp.ber import Tag, encode_integer, encode_tlv
from pmta_snmp.config import ConfigError, SnmpSection, SnmpUser, TrapTarget
from pmta_snmp.engineid import ENGINE_STATE_FILE
from pmta_snmp.mib.snapshot import Oid, OidTree, SnmpType, Value
from pmta_snmp.netsnmp import LoopThread, SnmpdMaster, free_udp_port
from pmta_snmp.standalone import StandaloneAgent
from tests.conftest import missing_requirement

pytestmark = pytest.mark.snmpd


@pytest.fixture(autouse=True)
def _net_snmp_tools() -> None:
    """Every test here drives snmpwalk/snmpget (skipped without them, failed under CI)."""
    if shutil.which("snmpwalk") is None:
        missing_requirement("net-snmp tools are not installed (package snmp)")


T = TypeVar("T")
BASE: Oid = (1, 3, 6, 1, 4, 1, 32473, 99)
SCALARS = (*BASE, 1)
TABLE_ENTRY = (*BASE, 2, 1)
TRAP_OID: Oid = (*BASE, 0, 1)
AUTH_PASS = "auth-pass-123"
PRIV_PASS = "priv-pass-456"
END_OF_VIEW = "No more variables left in this MIB View (It is past the end of the MIB tree)"
NO_SUCH_INSTANCE = "No Such Instance currently exists at this OID"
NO_SUCH_OBJECT = "No Such Object available on this agent at this OID"


def dotted(oid: Oid) -> str:
    return "." + ".".join(map(str, oid))


def str_index(text: str) -> Oid:
    """A non-IMPLIED string index: the length, then the octets."""
    data = text.encode("utf-8")
    return (len(data), *data)


# (OID, value, what `snmpwalk -On -m ''` prints after "OID = ")
SCALAR_ROWS: list[tuple[Oid, Value, str]] = [
    ((*SCALARS, 1, 0), Value(SnmpType.INTEGER, -2147483648), "INTEGER: -2147483648"),
    ((*SCALARS, 2, 0), Value(SnmpType.OCTET_STRING, b"PowerMTA 6.0r1"), 'STRING: "PowerMTA 6.0r1"'),
    (
        (*SCALARS, 3, 0),
        Value(SnmpType.OBJECT_IDENTIFIER, (*BASE, 9, 8)),
        "OID: " + dotted((*BASE, 9, 8)),
    ),
    ((*SCALARS, 4, 0), Value(SnmpType.IP_ADDRESS, bytes([192, 0, 2, 33])), "IpAddress: 192.0.2.33"),
    ((*SCALARS, 5, 0), Value(SnmpType.COUNTER32, 4294967295), "Counter32: 4294967295"),
    ((*SCALARS, 6, 0), Value(SnmpType.GAUGE32, 123456), "Gauge32: 123456"),
    (
        (*SCALARS, 7, 0),
        Value(SnmpType.TIME_TICKS, 8640000),
        "Timeticks: (8640000) 1 day, 0:00:00.00",
    ),
    ((*SCALARS, 8, 0), Value(SnmpType.OPAQUE, b"\x01\x02\xfe"), "OPAQUE: 01 02 FE"),
    (
        (*SCALARS, 9, 0),
        Value(SnmpType.COUNTER64, 18446744073709551615),
        "Counter64: 18446744073709551615",
    ),
    ((*SCALARS, 10, 0), Value(SnmpType.NULL), "NULL"),
    ((*SCALARS, 11, 0), Value(SnmpType.OCTET_STRING, b"\x00\x01\xff"), "Hex-STRING: 00 01 FF"),
    ((*SCALARS, 12, 0), Value(SnmpType.INTEGER, 2147483647), "INTEGER: 2147483647"),
]

# Table rows: domain name (also column 1) → (messages Counter64, queue Gauge32 or None = no cell).
# Rows sort by the encoded index (length first), not by the Python string.
TABLE_ROWS: dict[str, tuple[int, int | None]] = {
    "example.com": (2**40 + 7, 12),
    "b": (0, None),
    "alpha": (2**63, 0),
}
COLUMNS = (1, 2, 3)


def table_items(rows: Mapping[str, tuple[int, int | None]]) -> list[tuple[Oid, Value, str]]:
    out: list[tuple[Oid, Value, str]] = []
    for name, (messages, queue) in rows.items():
        idx = str_index(name)
        out.append(
            (
                (*TABLE_ENTRY, 1, *idx),
                Value(SnmpType.OCTET_STRING, name.encode()),
                f'STRING: "{name}"',
            )
        )
        out.append(
            (
                (*TABLE_ENTRY, 2, *idx),
                Value(SnmpType.COUNTER64, messages),
                f"Counter64: {messages}",
            )
        )
        if queue is not None:
            out.append(
                ((*TABLE_ENTRY, 3, *idx), Value(SnmpType.GAUGE32, queue), f"Gauge32: {queue}")
            )
    return out


def build(rows: Mapping[str, tuple[int, int | None]] = TABLE_ROWS) -> tuple[OidTree, list[str]]:
    """The tree and the lines snmpwalk must print for it, in order."""
    items = SCALAR_ROWS + table_items(rows)
    objects = [oid[:-1] for oid, _, _ in SCALAR_ROWS] + [(*TABLE_ENTRY, c) for c in COLUMNS]
    tree = OidTree([(oid, value) for oid, value, _ in items], objects)
    lines = [f"{dotted(oid)} = {text}" for oid, _, text in sorted(items, key=lambda i: i[0])]
    return tree, lines


TREE, WALK_LINES = build()


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tool_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """No user or system snmp.conf, no MIB loading, scratch persistent state."""
    scratch = tmp_path_factory.mktemp("snmp-tools")
    env = dict(os.environ)
    env.update(
        HOME=str(scratch),
        SNMPCONFPATH=str(scratch),
        SNMP_PERSISTENT_DIR=str(scratch / "persist"),
        MIBS="",
    )
    env.pop("MIBDIRS", None)
    (scratch / "persist" / "cert_indexes").mkdir(parents=True)  # else the tools say "Created…"
    return env


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a background thread, as the agent runs in production."""
    ev_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=ev_loop.run_forever, name="standalone-test-loop", daemon=True)
    thread.start()
    yield ev_loop
    ev_loop.call_soon_threadsafe(ev_loop.stop)
    thread.join(10)
    assert not thread.is_alive()
    ev_loop.close()


@dataclass
class TreeSource:
    """The agent's tree getter; assign `tree` to swap trees as the poller does."""

    tree: OidTree
    calls: int = 0

    def __call__(self) -> OidTree:
        self.calls += 1
        return self.tree


@dataclass
class Served:
    """A running agent and the loop it runs in."""

    agent: StandaloneAgent
    source: TreeSource
    loop: asyncio.AbstractEventLoop

    @property
    def port(self) -> int:
        return self.agent.address[1]

    @property
    def target(self) -> str:
        return f"udp:127.0.0.1:{self.port}"

    def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a coroutine of the agent in its loop and wait for the result."""
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(10)


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, str]:
    files = {
        "auth": AUTH_PASS,
        "priv": PRIV_PASS,
        "community": "s3cret-community",
        "trap": "trap-community",
    }
    paths: dict[str, str] = {}
    for name, text in files.items():
        path = tmp_path / f"{name}.secret"
        path.write_text(text + "\n", encoding="utf-8")
        path.chmod(0o600)
        paths[name] = str(path)
    return paths


@pytest.fixture
def serve(loop: asyncio.AbstractEventLoop) -> Iterator[Callable[..., Served]]:
    """Start agents on 127.0.0.1:0; every one started is stopped at teardown."""
    started: list[StandaloneAgent] = []

    def start(snmp: SnmpSection | None = None, tree: OidTree = TREE, **kwargs: Any) -> Served:
        source = TreeSource(tree)
        agent = StandaloneAgent(source, snmp or SnmpSection(listen="udp:127.0.0.1:0"), **kwargs)
        asyncio.run_coroutine_threadsafe(agent.start(), loop).result(10)
        started.append(agent)
        return Served(agent, source, loop)

    yield start
    for agent in started:
        asyncio.run_coroutine_threadsafe(agent.stop(), loop).result(10)
        assert not agent.running


@dataclass
class Tools:
    """Runs the net-snmp command-line tools in a clean environment."""

    env: dict[str, str]

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )

    def v2c(
        self,
        cmd: str,
        served: Served,
        *args: str,
        community: str = "public",
        wait: str = "2",
        version: str = "2c",
    ) -> subprocess.CompletedProcess[str]:
        """`cmd -v2c -c COMMUNITY -On -m '' ARGS…`; the last of ARGS are the OIDs (and, for
        snmpset, their types and values)."""
        opts = [a for a in args if a.startswith("-")]
        oids = [a for a in args if not a.startswith("-")]
        return self.run(
            cmd,
            f"-v{version}",
            "-c",
            community,
            "-On",
            "-m",
            "",
            "-t",
            wait,
            "-r",
            "1",
            *opts,
            served.target,
            *oids,
        )

    def v1(
        self, cmd: str, served: Served, *args: str, community: str = "public", wait: str = "2"
    ) -> subprocess.CompletedProcess[str]:
        """`cmd -v1 ...`, as `v2c`."""
        return self.v2c(cmd, served, *args, community=community, wait=wait, version="1")

    def v3(
        self,
        cmd: str,
        served: Served,
        user: str,
        *args: str,
        auth: str = "SHA",
        auth_pass: str = AUTH_PASS,
        priv: str = "AES",
        priv_pass: str = PRIV_PASS,
        level: str = "authPriv",
    ) -> subprocess.CompletedProcess[str]:
        security = ["-l", level, "-u", user, "-a", auth, "-A", auth_pass]
        if level == "authPriv":
            security += ["-x", priv, "-X", priv_pass]
        opts = [a for a in args if a.startswith("-")]
        oids = [a for a in args if not a.startswith("-")]
        return self.run(
            cmd,
            "-v3",
            *security,
            "-On",
            "-m",
            "",
            "-t",
            "2",
            "-r",
            "1",
            *opts,
            served.target,
            *oids,
        )


@pytest.fixture
def tools(tool_env: dict[str, str]) -> Tools:
    return Tools(tool_env)


def lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert proc.returncode == 0, f"{proc.args} failed ({proc.returncode}): {proc.stderr}"
    assert proc.stderr == "", proc.stderr
    return [line.rstrip() for line in proc.stdout.splitlines()]


def free_udp_ports(count: int) -> list[int]:
    """`count` different free UDP ports (see netsnmp.free_udp_port)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_udp_port()
        if port not in ports:
            ports.append(port)
    return ports


# --- reading ------------------------------------------------------------------------------


def test_walk_v2c_prints_every_type_in_order(serve: Callable[..., Served], tools: Tools) -> None:
    served = serve()
    out = lines(tools.v2c("snmpwalk", served, dotted(BASE)))
    assert out == [*WALK_LINES, f"{WALK_LINES[-1].split(' = ')[0]} = {END_OF_VIEW}"]
    # the string-indexed rows come in encoded-index order: b, alpha, example.com
    names = [line.split('"')[1] for line in out if line.startswith(dotted((*TABLE_ENTRY, 1)))]
    assert names == ["b", "alpha", "example.com"]


def test_walk_of_a_subtree_stops_at_its_end(serve: Callable[..., Served], tools: Tools) -> None:
    served = serve()
    out = lines(tools.v2c("snmpwalk", served, dotted(SCALARS)))
    assert out == [f"{dotted(oid)} = {text}" for oid, _, text in SCALAR_ROWS]
    column = lines(tools.v2c("snmpwalk", served, dotted((*TABLE_ENTRY, 2))))
    assert column == [  # the next column follows, so the walk ends without endOfMibView
        f"{dotted((*TABLE_ENTRY, 2, *str_index('b')))} = Counter64: 0",
        f"{dotted((*TABLE_ENTRY, 2, *str_index('alpha')))} = Counter64: {2**63}",
        f"{dotted((*TABLE_ENTRY, 2, *str_index('example.com')))} = Counter64: {2**40 + 7}",
    ]


@pytest.mark.parametrize("repetitions", ["1", "4", "50"])
def test_bulkwalk_matches_walk(
    serve: Callable[..., Served], tools: Tools, repetitions: str
) -> None:
    served = serve()
    out = lines(tools.v2c("snmpbulkwalk", served, f"-Cr{repetitions}", dotted(BASE)))
    assert out == [*WALK_LINES, f"{WALK_LINES[-1].split(' = ')[0]} = {END_OF_VIEW}"]
    whole = lines(tools.v2c("snmpbulkwalk", served, f"-Cr{repetitions}", ".1"))
    assert whole[len(SYSTEM_LINES):] == out  # the system group first
    assert [line.split(" = ")[0] for line in whole[:len(SYSTEM_LINES)]] == SYSTEM_LINES


def test_getbulk_non_repeaters_repeaters_and_end_of_view(
    serve: Callable[..., Served], tools: Tools
) -> None:
    served = serve()
    last_oid = WALK_LINES[-1].split(" = ")[0]
    before_last = WALK_LINES[-2].split(" = ")[0]
    first_scalar = dotted((*SCALARS, 1, 0))
    out = lines(
        tools.v2c(
            "snmpbulkget",
            served,
            "-Cn1",
            "-Cr3",
            dotted(SCALARS),
            before_last,
            dotted((*SCALARS, 11, 0)),
        )
    )
    assert out == [
        # non-repeater: GetNext of SCALARS
        f"{first_scalar} = INTEGER: -2147483648",
        # three repetitions of two repeaters, interleaved; the first repeater runs off the end
        WALK_LINES[-1],
        f"{dotted((*SCALARS, 12, 0))} = INTEGER: 2147483647",
        f"{last_oid} = {END_OF_VIEW}",
        WALK_LINES[len(SCALAR_ROWS)],
        f"{last_oid} = {END_OF_VIEW}",
        WALK_LINES[len(SCALAR_ROWS) + 1],
    ]
    # once every repeater is at the end, the response stops (no 50 rows of endOfMibView)
    out = lines(tools.v2c("snmpbulkget", served, "-Cn0", "-Cr50", before_last))
    assert out == [WALK_LINES[-1], f"{last_oid} = {END_OF_VIEW}"]


def test_bulk_responses_fit_the_message_size(
    serve: Callable[..., Served], tools: Tools, secrets: dict[str, str]
) -> None:
    """60 values of 3000 octets cannot go in one 64 KiB response to -Cr100: the agent must cut
    the response short (pysnmp silently drops a response that is too big)."""
    column = (*TABLE_ENTRY, 1)
    texts = [chr(65 + i % 26) * 3000 for i in range(60)]
    items = [((*column, i), Value(SnmpType.OCTET_STRING, t.encode())) for i, t in enumerate(texts)]
    users = (SnmpUser("ops", "sha", secrets["auth"], "aes", secrets["priv"]),)
    served = serve(
        SnmpSection(listen="udp:127.0.0.1:0", users=users), tree=OidTree(items, [column])
    )
    expected = [f'{dotted((*column, i))} = STRING: "{t}"' for i, t in enumerate(texts)]
    expected.append(f"{dotted(items[-1][0])} = {END_OF_VIEW}")
    assert lines(tools.v2c("snmpbulkwalk", served, "-Cr100", dotted(BASE))) == expected
    assert lines(tools.v3("snmpbulkwalk", served, "ops", "-Cr100", dotted(BASE))) == expected


class Relay:
    """A UDP relay between the tools and an agent that notes the size of every answer: what
    the manager receives, measured outside the agent."""

    def __init__(self, agent_port: int) -> None:
        self.agent = ("127.0.0.1", agent_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.sizes: list[int] = []
        self._client: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udp-relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if addr == self.agent:
                self.sizes.append(len(data))
                if self._client is not None:
                    self.sock.sendto(data, self._client)
            else:
                self._client = addr
                self.sock.sendto(data, self.agent)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def relay() -> Iterator[Callable[[int], Relay]]:
    relays: list[Relay] = []

    def make(port: int) -> Relay:
        relays.append(Relay(port))
        return relays[-1]

    yield make
    for r in relays:
        r.close()


def test_bulk_replies_fit_the_managers_max_message_size(
    serve: Callable[..., Served],
    tools: Tools,
    secrets: dict[str, str],
    relay: Callable[[int], Relay],
) -> None:
    """SNMPv3 carries the manager's msgMaxSize (net-snmp: sendMessageMaxSize); every GetBulk
    answer stays within it, cut short wherever the next varbind would not fit."""
    column = (*TABLE_ENTRY, 1)
    texts = [f"{i:03d}-" + chr(65 + i % 26) * (20 + 3 * i) for i in range(60)]
    items = [((*column, i), Value(SnmpType.OCTET_STRING, t.encode())) for i, t in enumerate(texts)]
    users = (SnmpUser("ops", "sha", secrets["auth"], "aes", secrets["priv"]),)
    served = serve(
        SnmpSection(listen="udp:127.0.0.1:0", users=users), tree=OidTree(items, [column])
    )
    expected = [f'{dotted((*column, i))} = STRING: "{t}"' for i, t in enumerate(texts)]
    expected.append(f"{dotted(items[-1][0])} = {END_OF_VIEW}")
    through = Served(served.agent, served.source, served.loop)
    for max_size in (484, 1000, 4000):
        r = relay(served.port)
        through_relay = _RelayedTarget(through, r.port)
        out = lines(tools.v3("snmpbulkwalk", through_relay, "ops", "-Cr100",
                             f"--sendMessageMaxSize={max_size}", dotted(BASE)))
        assert out == expected
        assert r.sizes and max(r.sizes) <= max_size
        assert max(r.sizes) > max_size - 500  # full answers, not a varbind at a time
    # v1/v2c messages say nothing of a size: an answer must fit one UDP datagram
    r = relay(served.port)
    assert lines(tools.v2c("snmpbulkwalk", _RelayedTarget(through, r.port), "-Cr100",
                           dotted(BASE))) == expected
    assert len(r.sizes) == 1  # all 60 in one answer
    assert r.sizes[0] <= 65507


class _RelayedTarget(Served):
    """A Served whose target is a relay in front of the agent."""

    def __init__(self, served: Served, port: int) -> None:
        super().__init__(served.agent, served.source, served.loop)
        self._port = port

    @property
    def port(self) -> int:
        return self._port


def test_get_values_and_exceptions(serve: Callable[..., Served], tools: Tools) -> None:
    served = serve()
    missing_row = (*TABLE_ENTRY, 2, *str_index("nope.example"))
    missing_cell = (*TABLE_ENTRY, 3, *str_index("b"))
    out = lines(
        tools.v2c(
            "snmpget",
            served,
            dotted((*SCALARS, 9, 0)),
            dotted((*SCALARS, 9, 1)),  # known scalar, wrong instance
            dotted(missing_row),  # known column, no such row
            dotted(missing_cell),  # known column, row without this cell
            dotted((*SCALARS, 99, 0)),  # unknown object
            dotted((*SCALARS, 9)),  # the object itself, not an instance
            ".1.3.6.1.2.1.2.1.0",  # outside our tree (ifNumber)
            ".1.2.3",  # outside the view
            dotted((*TABLE_ENTRY, 1, *str_index("example.com"))),
        )
    )
    assert out == [
        f"{dotted((*SCALARS, 9, 0))} = Counter64: 18446744073709551615",
        f"{dotted((*SCALARS, 9, 1))} = {NO_SUCH_INSTANCE}",
        f"{dotted(missing_row)} = {NO_SUCH_INSTANCE}",
        f"{dotted(missing_cell)} = {NO_SUCH_INSTANCE}",
        f"{dotted((*SCALARS, 99, 0))} = {NO_SUCH_OBJECT}",
        f"{dotted((*SCALARS, 9))} = {NO_SUCH_INSTANCE}",
        f".1.3.6.1.2.1.2.1.0 = {NO_SUCH_OBJECT}",
        f".1.2.3 = {NO_SUCH_OBJECT}",
        f'{dotted((*TABLE_ENTRY, 1, *str_index("example.com")))} = STRING: "example.com"',
    ]


def test_getnext_before_and_after_the_tree(serve: Callable[..., Served], tools: Tools) -> None:
    served = serve()
    out = lines(tools.v2c("snmpgetnext", served, ".1.3.6.1.2.1.11.32.0",
                          ".1.3.6.1.4.1.32473.99.1.12.0", ".1.4"))
    assert out == [
        WALK_LINES[0],
        WALK_LINES[len(SCALAR_ROWS)],
        f".1.4 = {END_OF_VIEW}",
    ]


SYSTEM_LINES = [f".1.3.6.1.2.1.1.{n}.0" for n in range(1, 9)] + [
    f".1.3.6.1.2.1.11.{n}.0" for n in (1, 3, 4, 5, 6, 30, 31, 32)
]
"""sysDescr .. sysORLastChange and the snmp group: what a walk finds before our tree."""


def test_the_system_group_is_served_before_the_tree(
    serve: Callable[..., Served], tools: Tools
) -> None:
    """SNMPv2-MIB's system group (RFC 3418), which NMSs read to discover an agent and to
    check that it is up (sysUpTime), over v1 and v2c: sysObjectID is our MIB module, sysUpTime
    counts from the agent's start as the traps' sysUpTime.0 does."""
    served = serve()
    out = lines(tools.v2c("snmpwalk", served, ".1.3.6.1.2.1.1"))
    assert [line.split(" = ")[0] for line in out] == SYSTEM_LINES[:8]
    values = dict(line.split(" = ", 1) for line in out)
    assert values[".1.3.6.1.2.1.1.1.0"].startswith('STRING: "pmta-snmp ')
    assert values[".1.3.6.1.2.1.1.2.0"] == "OID: .1.3.6.1.4.1.32473.25"
    assert values[".1.3.6.1.2.1.1.5.0"] == f'STRING: "{socket.gethostname()}"'
    assert values[".1.3.6.1.2.1.1.7.0"] == "INTEGER: 72"
    first = int(re.findall(r"Timeticks: \((\d+)\)", values[".1.3.6.1.2.1.1.3.0"])[0])
    assert first <= served.agent.uptime_ticks
    again = lines(tools.v1("snmpget", served, ".1.3.6.1.2.1.1.3.0", ".1.3.6.1.2.1.1.2.0"))
    later = int(re.findall(r"Timeticks: \((\d+)\)", again[0])[0])
    assert first <= later <= served.agent.uptime_ticks
    assert again[1] == ".1.3.6.1.2.1.1.2.0 = OID: .1.3.6.1.4.1.32473.25"
    # GetNext from the start of the MIB finds sysDescr; after the group, our tree follows
    start = lines(tools.v2c("snmpgetnext", served, ".0", ".1.3.6.1.2.1.11.32.0"))
    assert start[0].startswith(".1.3.6.1.2.1.1.1.0 = ")
    assert start[1] == WALK_LINES[0]


def test_the_snmp_group_counts_wrong_communities_and_bad_messages(
    serve: Callable[..., Served], tools: Tools
) -> None:
    """SNMPv2-MIB's snmp group (RFC 3418): a poller with the wrong community gets no answer
    (RFC 3584 §5.2.1), and shows in snmpInBadCommunityNames; a Set counts as a bad use of
    the community, garbage as an ASN.1 parse error, a version we do not speak as such."""
    served = serve()
    for community in ("wrong", "public2"):
        res = tools.v2c("snmpget", served, ".1.3.6.1.2.1.1.3.0", community=community, wait="0.2")
        assert res.returncode != 0 and "Timeout" in res.stderr
    tools.v2c("snmpset", served, dotted((*SCALARS, 6, 0)), "u", "1")
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as sock:
        sock.sendto(b"\x30\x03\x02\x01", ("127.0.0.1", served.port))  # truncated
        bad_pdu = b"\x30\x0e\x02\x01\x01\x04\x06public\xa0\x01\x00"  # a one-octet Get
        sock.sendto(bad_pdu, ("127.0.0.1", served.port))
        sock.sendto(bytes.fromhex("30080201020403616263"), ("127.0.0.1", served.port))  # v2
    counters = [f".1.3.6.1.2.1.11.{n}.0" for n in (3, 4, 5, 6)]
    # each wrong community twice: the tools try once more (-r 1)
    expected = [f"{oid} = Counter32: {n}" for oid, n in zip(counters, (1, 4, 1, 2), strict=True)]
    deadline = time.monotonic() + 10  # the datagrams above are not answered: wait for them
    while (got := lines(tools.v2c("snmpget", served, *counters))) != expected:
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    (pkts,) = lines(tools.v1("snmpget", served, ".1.3.6.1.2.1.11.1.0"))
    assert pkts.startswith(".1.3.6.1.2.1.11.1.0 = Counter32: ")
    assert int(pkts.rsplit(" ", 1)[1]) >= 4 + 1 + 3 + 1  # these, and the gets


def test_tree_swap_is_seen_by_the_next_request(serve: Callable[..., Served], tools: Tools) -> None:
    served = serve()
    counter = dotted((*TABLE_ENTRY, 2, *str_index("alpha")))
    assert lines(tools.v2c("snmpget", served, counter)) == [f"{counter} = Counter64: {2**63}"]
    new_rows = {"alpha": (2**63 + 1, 3), "zeta.example": (99, 1)}
    served.source.tree, new_lines = build(new_rows)
    assert lines(tools.v2c("snmpget", served, counter)) == [f"{counter} = Counter64: {2**63 + 1}"]
    walk = lines(tools.v2c("snmpbulkwalk", served, dotted(TABLE_ENTRY)))
    assert walk == [
        *new_lines[len(SCALAR_ROWS) :],
        f"{new_lines[-1].split(' = ')[0]} = {END_OF_VIEW}",
    ]
    gone = dotted((*TABLE_ENTRY, 2, *str_index("b")))
    assert lines(tools.v2c("snmpget", served, gone)) == [f"{gone} = {NO_SUCH_INSTANCE}"]
    assert served.source.calls >= 4  # the getter is asked per request, never cached by the agent


def test_v3_authpriv_users(
    serve: Callable[..., Served], tools: Tools, secrets: dict[str, str]
) -> None:
    users = (
        SnmpUser("ops", "sha", secrets["auth"], "aes128", secrets["priv"]),
        SnmpUser("ops256", "SHA-256", secrets["auth"], "AES-256", secrets["priv"]),
    )
    served = serve(SnmpSection(listen="udp:127.0.0.1:0", users=users))
    out = lines(tools.v3("snmpwalk", served, "ops", dotted(BASE)))
    assert out[:-1] == WALK_LINES
    out = lines(
        tools.v3("snmpbulkwalk", served, "ops256", dotted(BASE), auth="SHA-256", priv="AES-256")
    )
    assert out[:-1] == WALK_LINES
    # wrong passphrase, unknown user, and a lower security level are all refused
    bad = tools.v3("snmpget", served, "ops", dotted((*SCALARS, 1, 0)), auth_pass="wrong-pass-1")
    assert bad.returncode != 0
    assert "Authentication failure" in bad.stderr
    assert bad.stdout == ""
    unknown = tools.v3("snmpget", served, "nobody", dotted((*SCALARS, 1, 0)))
    assert unknown.returncode != 0
    assert "Unknown user name" in unknown.stderr
    weak = tools.v3("snmpget", served, "ops", dotted((*SCALARS, 1, 0)), level="authNoPriv")
    assert weak.returncode != 0
    assert "INTEGER" not in weak.stdout
    # the community still works next to the users
    assert lines(tools.v2c("snmpget", served, dotted((*SCALARS, 1, 0)))) == [WALK_LINES[0]]


def test_wrong_community_gets_no_answer(
    serve: Callable[..., Served], tools: Tools, secrets: dict[str, str]
) -> None:
    served = serve(SnmpSection(listen="udp:127.0.0.1:0", community_file=secrets["community"]))
    oid = dotted((*SCALARS, 1, 0))
    assert lines(tools.v2c("snmpget", served, oid, community="s3cret-community")) == [WALK_LINES[0]]
    assert lines(tools.v1("snmpget", served, oid, community="s3cret-community")) == [WALK_LINES[0]]
    for community in ("public", "wrong", "s3cret-communit"):
        for proc in (
            tools.v2c("snmpget", served, oid, community=community, wait="0.5"),
            tools.v1("snmpget", served, oid, community=community, wait="0.5"),
        ):
            assert proc.returncode != 0
            assert proc.stdout == ""
            assert "Timeout: No Response" in proc.stderr


# --- SNMPv3 engine ID and boots --------------------------------------------------------------


def discovery_probe() -> bytes:
    """An RFC 3414 §4 discovery request: noAuthNoPriv, reportable, empty engine ID and user."""

    def octets(data: bytes) -> bytes:
        return encode_tlv(Tag.OCTET_STRING, data)

    zero = encode_integer(0)
    usm = encode_tlv(Tag.SEQUENCE, octets(b"") + zero + zero + octets(b"") * 3)
    header = encode_tlv(Tag.SEQUENCE, encode_integer(4242) + encode_integer(65507)
                        + octets(b"\x04") + encode_integer(3))
    pdu = encode_tlv(Tag.GET, encode_integer(1) + zero + zero + encode_tlv(Tag.SEQUENCE, b""))
    scoped = encode_tlv(Tag.SEQUENCE, octets(b"") + octets(b"") + pdu)
    return encode_tlv(Tag.SEQUENCE, encode_integer(3) + header + octets(usm) + scoped)


def discover(port: int) -> tuple[bytes, int]:
    """The msgAuthoritativeEngineID and msgAuthoritativeEngineBoots of the Report that
    answers a discovery request (decoded by pysnmp's ASN.1 decoder)."""
    from pysnmp.proto.mpmod.rfc3412 import SNMPv3Message
    from pysnmp.proto.secmod.rfc3414.service import UsmSecurityParameters

    decoder: Any = importlib.import_module("pyasn1.codec.ber.decoder")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(discovery_probe(), ("127.0.0.1", port))
        data = sock.recv(65535)
    msg, _ = decoder.decode(data, asn1Spec=SNMPv3Message())
    assert msg["msgData"]["plaintext"]["data"].getName() == "report"
    usm, _ = decoder.decode(bytes(msg["msgSecurityParameters"]),
                            asn1Spec=UsmSecurityParameters())
    return bytes(usm["msgAuthoritativeEngineId"]), int(usm["msgAuthoritativeEngineBoots"])


def v3_users(secrets: dict[str, str]) -> tuple[SnmpUser, ...]:
    return (SnmpUser("ops", "sha", secrets["auth"], "aes128", secrets["priv"]),)


def test_engine_id_stays_and_boots_grow_across_restarts(
    serve: Callable[..., Served], tools: Tools, secrets: dict[str, str], tmp_path: Path
) -> None:
    """RFC 3411 §3.1.1.1: managers cache the engine ID (USM keys are localized to it), so a
    restart keeps it; snmpEngineBoots is one higher after each start."""
    state = tmp_path / "state" / "agent"
    snmp = SnmpSection(listen="udp:127.0.0.1:0", users=v3_users(secrets))
    get = dotted((*SCALARS, 1, 0))
    first = serve(snmp, state_dir=state)
    assert lines(tools.v3("snmpget", first, "ops", get)) == [WALK_LINES[0]]
    engine_id, boots = discover(first.port)
    assert engine_id[:5] == bytes.fromhex("80007ed905")  # RFC 3411: enterprise 32473, octets
    first.run(first.agent.stop)
    assert (state / ENGINE_STATE_FILE).stat().st_mode & 0o777 == 0o600

    second = serve(snmp, state_dir=state)
    assert discover(second.port) == (engine_id, boots + 1)
    # a manager that kept the engine ID (-e skips discovery) still gets answers
    assert lines(tools.v3("snmpget", second, "ops", "-e0x" + engine_id.hex(), get)) == [
        WALK_LINES[0]
    ]
    other = bytearray(engine_id)
    other[-1] ^= 0xFF
    wrong = tools.v3("snmpget", second, "ops", "-e0x" + other.hex(), get)
    assert wrong.returncode != 0
    assert "INTEGER" not in wrong.stdout
    second.run(second.agent.stop)
    assert discover(serve(snmp, state_dir=state).port) == (engine_id, boots + 2)


def test_configured_engine_id_is_used(
    serve: Callable[..., Served], tools: Tools, secrets: dict[str, str], tmp_path: Path
) -> None:
    configured = "0x80007ed9057069746d74612d736e6d70"
    snmp = SnmpSection(listen="udp:127.0.0.1:0", users=v3_users(secrets), engine_id=configured)
    served = serve(snmp, state_dir=tmp_path / "agent")
    assert discover(served.port) == (bytes.fromhex(configured[2:]), 1)
    get = dotted((*SCALARS, 1, 0))
    assert lines(tools.v3("snmpget", served, "ops", "-e" + configured, get)) == [WALK_LINES[0]]
    served.run(served.agent.stop)
    assert discover(serve(snmp, state_dir=tmp_path / "agent").port)[1] == 2


@pytest.mark.parametrize("engine_id", ["80007ed9", "0x80007ed900aabb", "zz0102030405",
                                       "0000000000", "ffffffffff", "0x" + "80007ed905" * 7])
def test_bad_engine_id_is_a_config_error(engine_id: str) -> None:
    with pytest.raises(ConfigError, match=r"^snmp\.engine_id: ") as err:
        StandaloneAgent(TreeSource(TREE), SnmpSection(engine_id=engine_id))
    assert "\n" not in str(err.value)


def test_unwritable_state_dir_still_starts_with_one_warning(
    serve: Callable[..., Served], tools: Tools, secrets: dict[str, str], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory\n")
    snmp = SnmpSection(listen="udp:127.0.0.1:0", users=v3_users(secrets))
    with caplog.at_level(logging.WARNING, logger="pmta_snmp"):
        served = serve(snmp, state_dir=blocked / "agent")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "engine ID" in warnings[0].getMessage()
    engine_id, boots = discover(served.port)
    assert engine_id[:5] == bytes.fromhex("80007ed905") and boots == 1
    assert lines(tools.v3("snmpget", served, "ops", dotted((*SCALARS, 1, 0)))) == [WALK_LINES[0]]


# --- SNMPv1 ---------------------------------------------------------------------------------

COUNTER64_OIDS = {oid for oid, value, _ in SCALAR_ROWS + table_items(TABLE_ROWS)
                  if value.type is SnmpType.COUNTER64}
V1_WALK_LINES = [line for line in WALK_LINES
                 if "Counter64" not in line]  # RFC 3584 §4.2.2.1: v1 never sees Counter64


def test_snmpget_v1(serve: Callable[..., Served], tools: Tools) -> None:
    served = serve()
    oids = [dotted(oid) for oid, _, _ in SCALAR_ROWS if oid not in COUNTER64_OIDS]
    expected = [f"{dotted(oid)} = {text}" for oid, _, text in SCALAR_ROWS
                if oid not in COUNTER64_OIDS]
    assert lines(tools.v1("snmpget", served, *oids)) == expected


def test_v1_walk_skips_counter64(serve: Callable[..., Served], tools: Tools) -> None:
    served = serve()
    assert len(V1_WALK_LINES) == len(WALK_LINES) - 4  # a scalar and three table cells
    assert lines(tools.v1("snmpwalk", served, dotted(BASE))) == [*V1_WALK_LINES, "End of MIB"]
    # GetNext of the OID before a Counter64 answers the one after it
    before = dotted((*SCALARS, 8, 0))
    assert lines(tools.v1("snmpgetnext", served, before)) == [
        f"{dotted((*SCALARS, 10, 0))} = NULL"
    ]
    # a whole Counter64 column is stepped over
    assert lines(tools.v1("snmpgetnext", served, dotted((*TABLE_ENTRY, 2)))) == [
        f"{dotted((*TABLE_ENTRY, 3, *str_index('alpha')))} = Gauge32: 0"
    ]


def test_v1_get_of_counter64_is_no_such_name(serve: Callable[..., Served], tools: Tools) -> None:
    served = serve()
    counter = dotted((*SCALARS, 9, 0))
    proc = tools.v1("snmpget", served, counter)
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert "Reason: (noSuchName)" in proc.stderr
    assert f"Failed object: {counter}" in proc.stderr
    # the error index names the Counter64 among others (net-snmp then asks for the rest)
    proc = tools.v1("snmpget", served, dotted((*SCALARS, 1, 0)), counter)
    assert f"Failed object: {counter}" in proc.stderr
    assert proc.stdout.splitlines() == [WALK_LINES[0]]
    # v2c still gets it
    assert lines(tools.v2c("snmpget", served, counter)) == [
        f"{counter} = Counter64: 18446744073709551615"
    ]


def test_v1_errors_are_v1_error_statuses(serve: Callable[..., Served], tools: Tools) -> None:
    """RFC 3584 §4.4: a v1 manager gets noSuchName where v2c has noAccess, noSuchObject,
    noSuchInstance or endOfMibView."""
    served = serve()
    for args in (
        ("snmpset", dotted((*SCALARS, 1, 0)), "i", "5"),  # v2c: noAccess
        ("snmpget", dotted((*SCALARS, 99, 0))),  # v2c: noSuchObject
        ("snmpget", dotted((*TABLE_ENTRY, 2, *str_index("nope")))),  # v2c: noSuchInstance
        ("snmpgetnext", ".1.4"),  # v2c: endOfMibView
    ):
        proc = tools.v1(*args[:1], served, *args[1:])
        assert proc.returncode != 0, args
        assert "Reason: (noSuchName) There is no such variable name in this MIB." in proc.stderr
        assert f"Failed object: {args[1]}" in proc.stderr


CHECK_SNMP = "/usr/lib/nagios/plugins/check_snmp"


@pytest.mark.skipif(
    not os.access(CHECK_SNMP, os.X_OK),
    reason="check_snmp not installed (Debian: monitoring-plugins-standard)",
)
def test_check_snmp_with_its_defaults(serve: Callable[..., Served], tools: Tools) -> None:
    """monitoring-plugins' check_snmp asks with SNMPv1 and the community public by default."""
    served = serve()
    gauge = dotted((*SCALARS, 6, 0))

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        return tools.run(CHECK_SNMP, "-H", "127.0.0.1", "-p", str(served.port), *args)

    ok = check("-o", gauge)
    assert (ok.returncode, ok.stdout.split("|")[0].strip()) == (0, "SNMP OK - 123456")
    warn = check("-o", gauge, "-w", "100000", "-c", "200000")
    assert (warn.returncode, warn.stdout.split("|")[0].strip()) == (1, "SNMP WARNING - *123456*")
    crit = check("-o", gauge, "-w", "10", "-c", "100")
    assert crit.returncode == 2
    text = check("-o", dotted((*SCALARS, 2, 0)), "-r", r"PowerMTA 6\.0r1")
    assert (text.returncode, text.stdout.strip()) == (0, 'SNMP OK - "PowerMTA 6.0r1" |')


def test_set_is_refused(
    serve: Callable[..., Served], tools: Tools, secrets: dict[str, str]
) -> None:
    users = (SnmpUser("ops", "sha256", secrets["auth"], "aes", secrets["priv"]),)
    served = serve(SnmpSection(listen="udp:127.0.0.1:0", users=users))
    oid = dotted((*SCALARS, 1, 0))
    proc = tools.v2c("snmpset", served, oid, "i", "5")
    assert proc.returncode != 0
    assert "Reason: noAccess" in proc.stderr
    assert f"Failed object: {oid}" in proc.stderr
    proc = tools.v2c("snmpset", served, dotted((*SCALARS, 77, 0)), "s", "new")
    assert "Reason: noAccess" in proc.stderr
    proc = tools.v3("snmpset", served, "ops", oid, "i", "5", auth="SHA-256")
    assert proc.returncode != 0
    assert "Reason: noAccess" in proc.stderr
    assert lines(tools.v2c("snmpget", served, oid)) == [WALK_LINES[0]]


# --- notifications -------------------------------------------------------------------------


@dataclass
class TrapReceiver:
    ports: list[int]
    output: Path
    process: subprocess.Popen[bytes]
    traps: list[dict[str, object]] = field(default_factory=list)

    def wait_for(self, count: int, timeout: float = 10) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            traps = [
                parse_trap(line) for line in self.output.read_text().splitlines() if "|" in line
            ]
            if len(traps) >= count:
                return traps
            assert self.process.poll() is None, self.output.read_text()
            time.sleep(0.05)
        raise AssertionError(f"snmptrapd got fewer than {count} traps: {self.output.read_text()}")


_TRAP_LINE = re.compile(r"^(?P<pdu>[^|]*)\|(?P<addr>[^|]*)\|(?P<vbs>.*)$")


def parse_trap(line: str) -> dict[str, object]:
    match = _TRAP_LINE.match(line)
    assert match, line
    community = re.search(r"community (\S+)", match["pdu"])
    port = re.search(r"->\[127\.0\.0\.1\]:(\d+)", match["addr"])
    assert community and port, line
    varbinds = [tuple(vb.split(" = ", 1)) for vb in match["vbs"].split("\t")]
    return {
        "pdu": match["pdu"],
        "community": community[1],
        "port": int(port[1]),
        "varbinds": varbinds,
    }


@pytest.fixture
def trap_receiver(tmp_path: Path, tool_env: dict[str, str]) -> Iterator[TrapReceiver]:
    """A real snmptrapd on two UDP ports, logging one line per trap to its stdout (a file)."""
    conf = tmp_path / "snmptrapd.conf"
    conf.write_text("disableAuthorization yes\n", encoding="utf-8")
    output = tmp_path / "snmptrapd.out"
    ports = free_udp_ports(2)
    listen = ",".join(f"udp:127.0.0.1:{port}" for port in ports)
    with output.open("wb") as out:
        process = subprocess.Popen(
            [
                "snmptrapd",
                "-f",
                "-Lo",
                "-C",
                "-c",
                str(conf),
                "-m",
                "",
                "-On",
                "-F",
                "%P|%b|%v\n",
                listen,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=tool_env,
        )
    receiver = TrapReceiver(ports, output, process)
    try:
        deadline = time.monotonic() + 10
        while "NET-SNMP version" not in output.read_text():
            assert process.poll() is None, f"snmptrapd exited: {output.read_text()}"
            assert time.monotonic() < deadline, "snmptrapd did not start"
            time.sleep(0.05)
        yield receiver
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def test_traps_reach_snmptrapd(
    serve: Callable[..., Served], trap_receiver: TrapReceiver, secrets: dict[str, str]
) -> None:
    p1, p2 = trap_receiver.ports
    snmp = SnmpSection(
        listen="udp:127.0.0.1:0",
        trap_targets=(
            TrapTarget(f"udp:127.0.0.1:{p1}"),
            TrapTarget(f"127.0.0.1:{p2}", community_file=secrets["trap"]),
        ),
    )
    served = serve(snmp)
    varbinds = [
        ((*SCALARS, 9, 0), Value(SnmpType.COUNTER64, 2**64 - 2)),
        ((*SCALARS, 6, 0), Value(SnmpType.GAUGE32, 100001)),
        ((*SCALARS, 2, 0), Value(SnmpType.OCTET_STRING, b"queue above 100000")),
        ((*SCALARS, 1, 0), Value(SnmpType.INTEGER, -7)),
        ((*SCALARS, 4, 0), Value(SnmpType.IP_ADDRESS, bytes([10, 1, 2, 3]))),
        ((*SCALARS, 3, 0), Value(SnmpType.OBJECT_IDENTIFIER, (1, 3, 6, 1, 4, 1, 32473))),
    ]
    sent = served.run(lambda: served.agent.send_notification(TRAP_OID, varbinds))
    assert sent == 2
    traps = trap_receiver.wait_for(2)
    assert len(traps) == 2
    by_port = {trap["port"]: trap for trap in traps}
    assert by_port[p1]["community"] == "public"
    assert by_port[p2]["community"] == "trap-community"
    for trap in traps:
        assert "TRAP2, SNMP v2c" in str(trap["pdu"])
        vbs = trap["varbinds"]
        assert isinstance(vbs, list)
        assert vbs[0][0] == ".1.3.6.1.2.1.1.3.0"
        assert re.fullmatch(r"Timeticks: \(\d+\) .*", vbs[0][1])
        assert vbs[1:] == [
            (".1.3.6.1.6.3.1.1.4.1.0", "OID: " + dotted(TRAP_OID)),
            (dotted((*SCALARS, 9, 0)), "Counter64: 18446744073709551614"),
            (dotted((*SCALARS, 6, 0)), "Gauge32: 100001"),
            (dotted((*SCALARS, 2, 0)), 'STRING: "queue above 100000"'),
            (dotted((*SCALARS, 1, 0)), "INTEGER: -7"),
            (dotted((*SCALARS, 4, 0)), "IpAddress: 10.1.2.3"),
            (dotted((*SCALARS, 3, 0)), "OID: .1.3.6.1.4.1.32473"),
        ]
    # a second notification: sysUpTime.0 does not go backwards
    served.run(lambda: served.agent.send_notification(TRAP_OID, []))
    later = trap_receiver.wait_for(4)
    ticks = [int(re.findall(r"\((\d+)\)", t["varbinds"][0][1])[0]) for t in later]  # type: ignore[index]
    assert ticks[2] >= ticks[0]
    assert later[2]["varbinds"][1:] == [(".1.3.6.1.6.3.1.1.4.1.0", "OID: " + dotted(TRAP_OID))]  # type: ignore[index]


# --- safe defaults ---------------------------------------------------------------------------


def test_public_community_on_a_non_loopback_address_is_refused(
    serve: Callable[..., Served], tools: Tools, secrets: dict[str, str]
) -> None:
    for listen in ("udp:0.0.0.0:0", "udp:192.0.2.10:161", "udp:161", "udp6:[::]:0"):
        with pytest.raises(ConfigError, match="allow_public_community"):
            StandaloneAgent(lambda: TREE, SnmpSection(listen=listen))
        with pytest.raises(ConfigError, match="allow_public_community"):
            StandaloneAgent(lambda: TREE, SnmpSection(listen=listen), community="public")
    # loopback is fine, and so is an explicit opt-in or a secret community
    StandaloneAgent(lambda: TREE, SnmpSection(listen="udp:127.0.0.1:0"))
    StandaloneAgent(lambda: TREE, SnmpSection(listen="udp:localhost:1161"))
    StandaloneAgent(lambda: TREE, SnmpSection(listen="udp:0.0.0.0:0", allow_public_community=True))
    served = serve(SnmpSection(listen="udp:0.0.0.0:0", community_file=secrets["community"]))
    assert served.agent.address[0] == "0.0.0.0"
    out = lines(
        tools.v2c("snmpget", served, dotted((*SCALARS, 1, 0)), community="s3cret-community")
    )
    assert out == [WALK_LINES[0]]


def test_ipv6_listen_serves_v1_v2c_and_v3(
    serve: Callable[..., Served], tools: Tools, secrets: dict[str, str]
) -> None:
    users = (SnmpUser("ops", "sha", secrets["auth"], "aes", secrets["priv"]),)
    served = serve(SnmpSection(listen="udp6:[::1]:0", users=users))
    assert served.agent.address[0] == "::1"
    target = f"udp6:[::1]:{served.port}"
    oid = dotted((*SCALARS, 1, 0))
    common = ["-On", "-m", "", "-t", "2", "-r", "1"]
    for version in ("-v1", "-v2c"):
        out = tools.run("snmpget", version, "-c", "public", *common, target, oid)
        assert lines(out) == [WALK_LINES[0]]
    out = tools.run("snmpget", "-v3", "-l", "authPriv", "-u", "ops", "-a", "SHA", "-A", AUTH_PASS,
                    "-x", "AES", "-X", PRIV_PASS, *common, target, oid)
    assert lines(out) == [WALK_LINES[0]]


def test_stop_releases_the_port(serve: Callable[..., Served], tools: Tools) -> None:
    served = serve()
    port = served.port
    target = served.target
    served.run(served.agent.stop)
    assert not served.agent.running
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as sock:
        sock.bind(("127.0.0.1", port))  # free again
    proc = tools.run(
        "snmpget", "-v2c", "-c", "public", "-m", "", "-t", "0.5", "-r", "0", target, ".1.3.6.1"
    )
    assert "Timeout: No Response" in proc.stderr
    served.run(served.agent.stop)  # a second stop is harmless


# --- the same walk as the AgentX subagent behind snmpd ----------------------------------------


@pytest.fixture(scope="module")
def sim_tree() -> OidTree:
    """The tree the agents build for the simulator at 2,000 domains (about 34k values)."""
    from datetime import UTC, datetime

    from pmta_snmp.poller import PollResult
    from pmta_snmp.service import SnmpView
    from pmta_snmp.sim import Simulator

    snapshot = Simulator("scale", domains=2000, vmtas=20, speed=0).snapshot()
    view = SnmpView()
    now = datetime.now(UTC)
    view.update(PollResult(snapshot, True, now, now, 1, 0, 0, None))
    return view.tree


def test_walks_of_2000_domains_equal_the_agentx_walk(
    serve: Callable[..., Served],
    tools: Tools,
    secrets: dict[str, str],
    sim_tree: OidTree,
    snmpd_factory: Callable[..., SnmpdMaster],
    loop_thread: LoopThread,
) -> None:
    """snmpbulkwalk and snmpwalk (v2c), snmpbulkwalk (v3 authPriv) and snmpwalk (v1, without
    the Counter64 objects) of the standalone agent print what snmpbulkwalk through snmpd and
    our AgentX subagent prints for the same tree: the same OIDs, types and values."""
    from pmta_snmp.agentx.session import AgentXSession
    from pmta_snmp.mib.layout import layout

    base = layout().base
    master = snmpd_factory()

    async def start() -> AgentXSession:
        session = AgentXSession([base], lambda: sim_tree, address=master.agentx_address)
        session.start()
        assert await session.wait_connected(10), session.status
        return session

    session = loop_thread.call(start())
    try:
        reference = master.run_client("snmpbulkwalk", "-Cr25", dotted(base), timeout=5)
    finally:
        loop_thread.call(session.stop())
    expected = [line.rstrip() for line in reference.splitlines()]
    assert len(expected) == len(sim_tree) > 30_000

    users = (SnmpUser("ops", "sha256", secrets["auth"], "aes", secrets["priv"]),)
    served = serve(SnmpSection(listen="udp:127.0.0.1:0", users=users), tree=sim_tree)
    end = f"{expected[-1].split(' = ')[0]} = {END_OF_VIEW}"  # nothing after us in this view
    assert lines(tools.v2c("snmpbulkwalk", served, "-Cr25", dotted(base))) == [*expected, end]
    assert lines(tools.v2c("snmpwalk", served, dotted(base))) == [*expected, end]
    assert lines(
        tools.v3("snmpbulkwalk", served, "ops", "-Cr25", dotted(base), auth="SHA-256")
    ) == [*expected, end]
    v1 = [line for line in expected if " = Counter64: " not in line]
    assert len(v1) < len(expected)
    assert lines(tools.v1("snmpwalk", served, dotted(base))) == [*v1, "End of MIB"]
