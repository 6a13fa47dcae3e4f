"""AgentX subagent end to end: a real snmpd master with net-snmp clients and snmptrapd,
and a scripted fake master (asyncio unix server) for misbehaviour snmpd never shows.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest

from bench.fakemaster import AsyncFakeMaster
from pmta_snmp.agentx.codec import (
    Close,
    CloseReason,
    ErrorCode,
    Get,
    GetBulk,
    GetNext,
    Notify,
    Open,
    Pdu,
    Ping,
    Register,
    Response,
    SearchRange,
    VarBind,
    decode_packet,
)
from pmta_snmp.agentx.session import (
    SNMP_TRAP_OID_0,
    AgentXNotConnected,
    AgentXResponseError,
    AgentXSession,
    AgentXTimeout,
)
from pmta_snmp.mib.snapshot import Oid, OidTree, SnmpType, Value
from pmta_snmp.netsnmp import (
    LoopThread,
    SnmpdMaster,
    SnmpVarBind,
    TrapReceiver,
    free_tcp_port,
    parse_varbinds,
    short_tempdir,
)

T = TypeVar("T")

B = (1, 3, 6, 1, 4, 1, 32473, 99)
BS = ".".join(map(str, B))
SCALARS = (*B, 1)
TABLE_ENTRY = (*B, 2, 1)


def dotted(oid: Oid) -> str:
    return ".".join(map(str, oid))


def static_tree(generation: int = 1) -> OidTree:
    """A small tree: scalars of several types and a table whose row 2 is missing."""
    items: list[tuple[Oid, Value]] = [
        ((*SCALARS, 1, 0), Value(SnmpType.INTEGER, -7 * generation)),
        ((*SCALARS, 2, 0), Value(SnmpType.OCTET_STRING, f"gen {generation}".encode())),
        ((*SCALARS, 3, 0), Value(SnmpType.COUNTER64, 2**63 + generation)),
        ((*SCALARS, 4, 0), Value(SnmpType.GAUGE32, 4_000_000_000)),
        ((*SCALARS, 5, 0), Value(SnmpType.TIME_TICKS, 12345)),
        ((*SCALARS, 6, 0), Value(SnmpType.IP_ADDRESS, bytes([192, 0, 2, 1]))),
        ((*SCALARS, 7, 0), Value(SnmpType.OBJECT_IDENTIFIER, (*B, 0, 1))),
        ((*SCALARS, 8, 0), Value(SnmpType.COUNTER32, 99)),
    ]
    for row in (1, 3):
        items.append(((*TABLE_ENTRY, 2, row), Value(SnmpType.OCTET_STRING, f"row{row}".encode())))
        items.append(((*TABLE_ENTRY, 3, row), Value(SnmpType.COUNTER64, row * 1000)))
    objects = [(*SCALARS, i) for i in range(1, 9)] + [(*TABLE_ENTRY, 2), (*TABLE_ENTRY, 3)]
    return OidTree(items, objects)


EXPECTED_WALK = [
    SnmpVarBind(f"{BS}.1.1.0", "INTEGER", "-7"),
    SnmpVarBind(f"{BS}.1.2.0", "STRING", "gen 1"),
    SnmpVarBind(f"{BS}.1.3.0", "Counter64", str(2**63 + 1)),
    SnmpVarBind(f"{BS}.1.4.0", "Gauge32", "4000000000"),
    SnmpVarBind(f"{BS}.1.5.0", "Timeticks", "(12345) 0:02:03.45"),
    SnmpVarBind(f"{BS}.1.6.0", "IpAddress", "192.0.2.1"),
    SnmpVarBind(f"{BS}.1.7.0", "OID", f".{BS}.0.1"),
    SnmpVarBind(f"{BS}.1.8.0", "Counter32", "99"),
    SnmpVarBind(f"{BS}.2.1.2.1", "STRING", "row1"),
    SnmpVarBind(f"{BS}.2.1.2.3", "STRING", "row3"),
    SnmpVarBind(f"{BS}.2.1.3.1", "Counter64", "1000"),
    SnmpVarBind(f"{BS}.2.1.3.3", "Counter64", "3000"),
]


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# --- real snmpd ------------------------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["network-order", "little-endian"])
def byte_order(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def start_session(
    loop_thread: LoopThread, master: SnmpdMaster, tree: OidTree, **kwargs: object
) -> AgentXSession:
    options: dict[str, object] = {
        "backoff_initial": 0.1,
        "backoff_max": 0.5,
        "request_timeout": 2.0,
    }
    options.update(kwargs)

    async def start() -> AgentXSession:
        session = AgentXSession([B], tree, address=master.agentx_address, **options)  # type: ignore[arg-type]
        session.start()
        assert await session.wait_connected(5), session.status
        return session

    return loop_thread.call(start())


@pytest.fixture
def agent(
    snmpd_master: SnmpdMaster, loop_thread: LoopThread, byte_order: bool
) -> Iterator[AgentXSession]:
    session = start_session(loop_thread, snmpd_master, static_tree(), network_byte_order=byte_order)
    try:
        yield session
    finally:
        loop_thread.call(session.stop())


@pytest.mark.snmpd
def test_snmpwalk_returns_exact_values_and_types(
    snmpd_master: SnmpdMaster, agent: AgentXSession
) -> None:
    assert snmpd_master.walk(BS) == EXPECTED_WALK


@pytest.mark.snmpd
def test_snmpbulkwalk_returns_exact_values_and_types(
    snmpd_master: SnmpdMaster, agent: AgentXSession
) -> None:
    assert snmpd_master.bulkwalk(BS, "-Cr7") == EXPECTED_WALK


@pytest.mark.snmpd
def test_snmpget_values_and_missing_rows(snmpd_master: SnmpdMaster, agent: AgentXSession) -> None:
    got = snmpd_master.get(
        f"{BS}.1.3.0",
        f"{BS}.2.1.2.2",  # missing row of a known column
        f"{BS}.2.1.2.3",
        f"{BS}.9.0",  # not an object of ours
    )
    assert got == [
        SnmpVarBind(f"{BS}.1.3.0", "Counter64", str(2**63 + 1)),
        SnmpVarBind(f"{BS}.2.1.2.2", "noSuchInstance", ""),
        SnmpVarBind(f"{BS}.2.1.2.3", "STRING", "row3"),
        SnmpVarBind(f"{BS}.9.0", "noSuchObject", ""),
    ]


@pytest.mark.snmpd
def test_walk_from_before_our_region_continues_into_it(
    snmpd_master: SnmpdMaster, agent: AgentXSession
) -> None:
    # Starting at the enterprise arc makes net-snmp send GetNext with include=1.
    walked = snmpd_master.walk("1.3.6.1.4.1.32473")
    assert walked == EXPECTED_WALK


@pytest.mark.snmpd
def test_tree_swap_is_seen_by_the_next_walk(
    snmpd_master: SnmpdMaster, agent: AgentXSession, loop_thread: LoopThread
) -> None:
    assert snmpd_master.get(f"{BS}.1.2.0")[0].value == "gen 1"
    agent.set_tree(static_tree(2))  # from this (test) thread, as a poller thread would
    walked = snmpd_master.walk(BS)
    assert walked[0] == SnmpVarBind(f"{BS}.1.1.0", "INTEGER", "-14")
    assert walked[1] == SnmpVarBind(f"{BS}.1.2.0", "STRING", "gen 2")


@pytest.mark.snmpd
@pytest.mark.parametrize("hard", [False, True], ids=["graceful", "killed"])
def test_snmpd_restart_leads_to_reregistration(
    snmpd_master: SnmpdMaster, loop_thread: LoopThread, hard: bool
) -> None:
    """How soon the subagent is back is its backoff (0.1-0.5 s here, see the backoff tests
    below; `./run bench timeouts` measures it against snmpd's own restart)."""
    session = start_session(loop_thread, snmpd_master, static_tree())
    try:
        snmpd_master.restart(hard=hard)

        def answers() -> bool:
            got = snmpd_master.get(f"{BS}.1.1.0", timeout=0.5, retries=0)
            return got == [SnmpVarBind(f"{BS}.1.1.0", "INTEGER", "-7")]

        # Hang detection only: back within a second or two on an idle machine.
        assert wait_until(answers, 60.0, step=0.1), snmpd_master.log_text()
        assert session.status.connected
        assert session.status.reconnects >= 1
        assert snmpd_master.walk(BS) == EXPECTED_WALK
    finally:
        loop_thread.call(session.stop())


@pytest.mark.snmpd
def test_session_over_tcp(
    snmpd_factory: Callable[..., SnmpdMaster], loop_thread: LoopThread
) -> None:
    master = snmpd_factory(agentx_tcp_port=free_tcp_port())
    assert master.agentx_address.startswith("tcp:127.0.0.1:")
    session = start_session(loop_thread, master, static_tree())
    try:
        assert master.walk(BS) == EXPECTED_WALK
    finally:
        loop_thread.call(session.stop())


@pytest.mark.snmpd
def test_stop_closes_session_and_master_forgets_our_subtree(
    snmpd_master: SnmpdMaster, loop_thread: LoopThread
) -> None:
    session = start_session(loop_thread, snmpd_master, static_tree())
    assert snmpd_master.get(f"{BS}.1.1.0")[0].type == "INTEGER"
    loop_thread.call(session.stop())
    assert not session.status.connected
    assert snmpd_master.get(f"{BS}.1.1.0")[0].type == "noSuchObject"


@pytest.mark.snmpd
def test_notify_reaches_snmptrapd(
    snmpd_factory: Callable[..., SnmpdMaster],
    trap_receiver: TrapReceiver,
    loop_thread: LoopThread,
) -> None:
    master = snmpd_factory(trap_port=trap_receiver.port)
    session = start_session(loop_thread, master, static_tree())
    try:
        trap_oid = (*B, 0, 1)
        resp = loop_thread.call(
            session.notify(
                trap_oid,
                [
                    VarBind((*SCALARS, 2, 0), Value(SnmpType.OCTET_STRING, b"queue over limit")),
                    VarBind((*SCALARS, 3, 0), Value(SnmpType.COUNTER64, 2**40)),
                ],
            )
        )
        assert resp.error == ErrorCode.NO_ERROR
        trap = trap_receiver.wait_for(
            lambda t: any(vb.value == f".{dotted(trap_oid)}" for vb in t), timeout=5
        )
        # The master adds sysUpTime.0 first; then snmpTrapOID.0 and our objects, in order.
        assert [vb.oid for vb in trap] == [
            "1.3.6.1.2.1.1.3.0",
            dotted(SNMP_TRAP_OID_0),
            f"{BS}.1.2.0",
            f"{BS}.1.3.0",
        ]
        assert trap[2] == SnmpVarBind(f"{BS}.1.2.0", "STRING", "queue over limit")
        assert trap[3] == SnmpVarBind(f"{BS}.1.3.0", "Counter64", str(2**40))
    finally:
        loop_thread.call(session.stop())


def test_a_v1_walk_through_snmpd_steps_over_counter64(
    snmpd_master: SnmpdMaster, loop_thread: LoopThread
) -> None:
    """SNMPv1 cannot carry Counter64: snmpd (as master) steps over those objects in a v1
    walk, as the standalone agent does (RFC 3584 §4.2.2.1), and the walk goes on to the
    end of our subtree (what README says of v1 managers)."""
    session = start_session(loop_thread, snmpd_master, static_tree())
    try:
        walked = parse_varbinds(snmpd_master.run_client("snmpwalk", "-v1", BS))
    finally:
        loop_thread.call(session.stop())
    assert walked == [vb for vb in EXPECTED_WALK if vb.type != "Counter64"]


def _ticks(text: str) -> int:
    """The hundredths of a second of a Timeticks value as the tools print it: `(123) 0:00:01.23`."""
    return int(text.split(")", maxsplit=1)[0].lstrip("("))


def test_the_sysuptime_of_a_notification_is_the_masters(
    snmpd_factory: Callable[..., SnmpdMaster],
    trap_receiver: TrapReceiver,
    loop_thread: LoopThread,
) -> None:
    """A trap's sysUpTime.0 is the agent's (RFC 3416 §4.2.6), which managers read as snmpd's
    sysUpTime.0 and compare with: the subagent sends the master's, learned from its
    Responses (RFC 2741 §6.2.16), not its own. Here the subagent has run for 11 days, snmpd
    for seconds: the trap cannot say 11 days, for one sent now as for one kept while snmpd
    was away."""
    eleven_days = 11 * 24 * 3600 * 100
    ours = [eleven_days]
    master = snmpd_factory(trap_port=trap_receiver.port)
    session = start_session(loop_thread, master, static_tree(), sys_uptime=lambda: ours[0])
    def sent_ticks(trap_oid: Oid) -> int:
        trap = trap_receiver.wait_for(
            lambda t: any(vb.value == f".{dotted(trap_oid)}" for vb in t), timeout=5
        )
        assert trap[0].oid == "1.3.6.1.2.1.1.3.0"
        return _ticks(trap[0].value)

    try:
        loop_thread.call(session.notify((*B, 0, 1), sys_uptime=True))
        first = sent_ticks((*B, 0, 1))
        (now,) = master.get("1.3.6.1.2.1.1.3.0")
        assert first <= _ticks(now.value) < eleven_days
        loop_thread.call_soon(lambda: session.notify_later((*B, 0, 2), sys_uptime=True))
        second = sent_ticks((*B, 0, 2))
        (now,) = master.get("1.3.6.1.2.1.1.3.0")
        assert first <= second <= _ticks(now.value)
    finally:
        loop_thread.call(session.stop())


@pytest.mark.snmpd
def test_bulkwalk_of_a_large_table_is_complete_and_ordered(
    snmpd_master: SnmpdMaster, loop_thread: LoopThread
) -> None:
    # String-like indices of varying length, with every fifth cell of column 3 missing.
    items: list[tuple[Oid, Value]] = []
    for row in range(1500):
        name = f"d{row}.example".encode()
        index = (len(name), *name)
        items.append(((*TABLE_ENTRY, 2, *index), Value(SnmpType.OCTET_STRING, name)))
        if row % 5:
            items.append(((*TABLE_ENTRY, 3, *index), Value(SnmpType.GAUGE32, row)))
    tree = OidTree(items, [(*TABLE_ENTRY, 2), (*TABLE_ENTRY, 3)])
    session = start_session(loop_thread, snmpd_master, tree)
    try:
        walked = snmpd_master.bulkwalk(BS, "-Cr50")
        assert [vb.oid for vb in walked] == [dotted(oid) for oid, _ in tree]
    finally:
        loop_thread.call(session.stop())


# --- fake master -------------------------------------------------------------------------
# bench/fakemaster.py's AsyncFakeMaster: one scripted connection at a time.


@asynccontextmanager
async def fake_setup(**kwargs: object) -> AsyncIterator[tuple[AsyncFakeMaster, AgentXSession]]:
    with short_tempdir("fakemaster-") as d:
        # limit: asyncio's default stream buffer, so a master that stops reading pushes back
        # soon (test_master_not_reading_is_dropped_instead_of_buffering_forever).
        master = AsyncFakeMaster(d / "master.sock", subtree=B, limit=1 << 16)
        await master.start()
        options: dict[str, object] = {
            "ping_interval": 30.0,
            "request_timeout": 0.5,
            "backoff_initial": 0.05,
            "backoff_max": 0.2,
        }
        options.update(kwargs)
        session = AgentXSession([B], static_tree(), address=str(master.path), **options)  # type: ignore[arg-type]
        session.start()
        try:
            yield master, session
        finally:
            await master.close()  # hang up first: stop() need not wait for a Close answer
            await session.stop()


def run(coro_fn: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro_fn(), timeout)

    return asyncio.run(main())


def test_split_and_coalesced_packets_are_reassembled() -> None:
    async def scenario() -> None:
        async with fake_setup() as (master, session):
            conn = await master.next_conn()
            await conn.handshake()
            assert await session.wait_connected(2)
            a = GetNext((SearchRange(B),), session_id=42, packet_id=100).encode()
            b = Get((SearchRange((*SCALARS, 4, 0)),), session_id=42, packet_id=101).encode()
            c = GetNext((SearchRange((*TABLE_ENTRY, 2, 1)),), session_id=42, packet_id=102)
            conn.send(a + b)  # two PDUs in one write
            for i in range(len(c.encode())):  # one PDU a byte at a time
                conn.send(c.encode()[i : i + 1])
                await conn.writer.drain()
                await asyncio.sleep(0)
            answers = {}
            for _ in range(3):
                resp = await conn.recv()
                assert isinstance(resp, Response)
                answers[resp.packet_id] = resp.varbinds[0]
            assert answers[100].name == (*SCALARS, 1, 0)
            assert answers[101].value == Value(SnmpType.GAUGE32, 4_000_000_000)
            assert answers[102].name == (*TABLE_ENTRY, 2, 3)
            assert master.count == 1

    run(scenario)


def test_request_in_little_endian_is_answered_in_little_endian() -> None:
    async def scenario() -> None:
        async with fake_setup() as (master, _session):
            conn = await master.next_conn()
            await conn.handshake()
            req = GetNext((SearchRange(B),), session_id=42, packet_id=7, network_byte_order=False)
            conn.send(req.encode())
            raw = await conn.recv_raw()
            assert raw[2] & 0x10 == 0
            resp, _ = decode_packet(raw)
            assert isinstance(resp, Response)
            assert resp.packet_id == 7
            assert resp.varbinds[0].name == (*SCALARS, 1, 0)

    run(scenario)


def test_malformed_framed_packet_gets_parse_error_and_session_goes_on() -> None:
    async def scenario() -> None:
        async with fake_setup() as (master, session):
            conn = await master.next_conn()
            await conn.handshake()
            # A GetNext whose OID claims 9 sub-ids but carries 1.
            payload = struct.pack(">BBBx", 9, 0, 0) + struct.pack(">I", 1)
            conn.send(struct.pack(">BBBxIIII", 1, 6, 0x10, 42, 1, 55, len(payload)) + payload)
            resp = await conn.recv()
            assert isinstance(resp, Response)
            assert (resp.packet_id, resp.error) == (55, ErrorCode.PARSE_ERROR)
            # An unknown PDU type coalesced with a valid Get: both answered, in order.
            unknown = struct.pack(">BBBxIIII", 1, 77, 0x10, 42, 1, 56, 4) + b"\0\0\0\0"
            get = Get((SearchRange((*SCALARS, 8, 0)),), session_id=42, packet_id=57)
            conn.send(unknown + get.encode())
            resp = await conn.recv()
            assert isinstance(resp, Response)
            assert (resp.packet_id, resp.error) == (56, ErrorCode.PARSE_ERROR)
            resp = await conn.recv()
            assert isinstance(resp, Response)
            assert (resp.packet_id, resp.error) == (57, ErrorCode.NO_ERROR)
            assert resp.varbinds[0].value == Value(SnmpType.COUNTER32, 99)
            # Still the same connection, still answering.
            ok = await conn.request(Get((SearchRange((*SCALARS, 1, 0)),), session_id=42))
            assert ok.varbinds[0].value == Value(SnmpType.INTEGER, -7)
            assert master.count == 1
            assert session.status.connected
            assert session.status.parse_errors == 2

    run(scenario)


GARBAGE = {
    "random-bytes": bytes(range(7, 250, 3)),
    "bad-version": struct.pack(">BBBxIIII", 9, 5, 0x10, 42, 0, 1, 0),
    "huge-length": struct.pack(">BBBxIIII", 1, 5, 0x10, 42, 0, 1, 0x7FFFFFF0),
    "odd-length": struct.pack(">BBBxIIII", 1, 5, 0x10, 42, 0, 1, 6),
}


@pytest.mark.parametrize("garbage", list(GARBAGE.values()), ids=list(GARBAGE))
def test_unparseable_stream_drops_connection_and_reconnects(garbage: bytes) -> None:
    async def scenario() -> None:
        # No pings: nothing but the garbage itself can end this connection.
        async with fake_setup(ping_interval=None) as (master, session):
            conn = await master.next_conn()
            await conn.handshake()
            assert await session.wait_connected(2)
            conn.send(garbage)
            # At once, from these bytes alone, not after waiting for more (a huge length
            # would otherwise be buffered for): Close(parseError), then the hang-up.
            close = await conn.recv(timeout=30)
            assert isinstance(close, Close) and close.reason == CloseReason.PARSE_ERROR
            assert await conn.closed_by_subagent(30)
            assert session.status.parse_errors == 1
            conn2 = await master.next_conn()
            await conn2.handshake(session_id=43)
            assert await session.wait_connected(2)
            resp = await conn2.request(Get((SearchRange((*SCALARS, 1, 0)),), session_id=43))
            assert resp.varbinds[0].value == Value(SnmpType.INTEGER, -7)
            assert session.status.reconnects == 1
            assert session.status.session_id == 43

    run(scenario)


def test_truncated_header_then_hangup_leads_to_reconnect() -> None:
    async def scenario() -> None:
        async with fake_setup() as (master, session):
            conn = await master.next_conn()
            await conn.handshake()
            conn.send(b"\x01\x05\x10")
            await conn.writer.drain()
            conn.writer.close()
            conn2 = await master.next_conn()
            await conn2.handshake()
            assert await session.wait_connected(2)

    run(scenario)


def test_unanswered_open_times_out_and_is_retried() -> None:
    async def scenario() -> None:
        async with fake_setup() as (master, session):
            conn = await master.next_conn()
            assert isinstance(await conn.recv(), Open)  # never answered
            assert await conn.closed_by_subagent(30)  # the timed-out connection was dropped
            conn2 = await master.next_conn(timeout=30)
            # Why it reconnected, before the new session's registration clears it:
            assert session.status.last_error == "no answer to OPEN from master"
            assert not session.status.connected
            await conn2.handshake()
            assert await session.wait_connected(2)
            assert session.status.last_error is None and session.status.reconnects == 1

    run(scenario)


def backoff_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The delays the session chose before each reconnect, in order (from its log)."""
    return [
        float(rec.args[1])  # type: ignore[index,arg-type]
        for rec in caplog.records
        if rec.name == "pmta_snmp.agentx.session"
        and rec.msg == "reconnecting to AgentX master %s in %.2fs"
    ]


# The backoff tests read the delays the session chose from its log and check them against
# the schedule; the real gaps are only checked from below (the clock starts before the
# failure is even sent, so only a session that does not wait can fail that), never from above.


def test_duplicate_registration_closes_and_retries_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pmta_snmp.agentx.session")

    async def scenario() -> None:
        async with fake_setup(backoff_initial=0.4, backoff_max=0.4) as (master, session):
            conn = await master.next_conn()
            opened = await conn.recv()
            conn.reply(opened, session_id=42)
            conn.session_id = 42
            reg = await conn.recv()
            assert isinstance(reg, Register)
            t0 = time.monotonic()
            conn.reply(reg, ErrorCode.DUPLICATE_REGISTRATION)
            close = await conn.recv()
            assert isinstance(close, Close)
            assert close.reason == CloseReason.OTHER
            conn2 = await master.next_conn(timeout=30)
            gap = time.monotonic() - t0
            [delay] = backoff_delays(caplog)
            assert 0.2 <= delay <= 0.4  # jittered within [cap/2, cap], not a hot loop
            assert gap >= delay - 0.01  # and really waited
            assert master.count == 2
            assert not session.status.connected
            assert "DUPLICATE_REGISTRATION" in (session.status.last_error or "")
            await conn2.handshake()
            assert await session.wait_connected(2)
            assert session.status.last_error is None

    run(scenario)


def test_backoff_grows_on_failures_and_resets_after_registration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pmta_snmp.agentx.session")

    async def scenario() -> None:
        async with fake_setup(backoff_initial=0.05, backoff_max=0.4) as (master, session):
            gaps: list[float] = []
            conn = await master.next_conn()
            for _ in range(5):  # five refused Opens: caps 0.05, 0.1, 0.2, 0.4, 0.4 (the max)
                opened = await conn.recv()
                t0 = time.monotonic()
                conn.reply(opened, ErrorCode.OPEN_FAILED)
                conn = await master.next_conn(timeout=30)
                gaps.append(time.monotonic() - t0)
            assert "OPEN_FAILED" in (session.status.last_error or "")
            caps = [0.05, 0.1, 0.2, 0.4, 0.4]
            delays = backoff_delays(caplog)
            assert len(delays) == 5
            for delay, cap, gap in zip(delays, caps, gaps, strict=True):
                assert cap / 2 <= delay <= cap  # doubling, capped, jittered
                assert gap >= delay - 0.01
            await conn.handshake()
            assert await session.wait_connected(2)
            conn.send(Close(CloseReason.SHUTDOWN, session_id=42).encode())
            conn2 = await master.next_conn(timeout=30)
            assert 0.025 <= backoff_delays(caplog)[5] <= 0.05  # back to the initial delay
            await conn2.handshake()
            assert await session.wait_connected(2)
            assert session.status.reconnects == 6

    run(scenario)


def test_close_from_master_leads_to_reconnect() -> None:
    async def scenario() -> None:
        async with fake_setup() as (master, session):
            conn = await master.next_conn()
            await conn.handshake()
            conn.send(Close(CloseReason.SHUTDOWN, session_id=42).encode())
            conn2 = await master.next_conn()
            await conn2.handshake()
            assert await session.wait_connected(2)
            assert session.status.reconnects == 1

    run(scenario)


def test_unresponsive_master_detected_by_ping() -> None:
    async def scenario() -> None:
        async with fake_setup(ping_interval=0.2, request_timeout=0.3) as (master, session):
            conn = await master.next_conn()
            await conn.handshake()
            ping = await conn.recv(skip_pings=False)
            assert isinstance(ping, Ping)
            assert ping.session_id == 42
            conn.reply(ping)  # the first Ping is answered ...
            ping = await conn.recv(skip_pings=False)
            assert isinstance(ping, Ping)  # ... the second is not
            # Hang detection only: dropped 0.3 s after the unanswered Ping.
            assert await conn.closed_by_subagent(30)
            conn2 = await master.next_conn(timeout=30)
            await conn2.handshake()
            assert await session.wait_connected(2)

    run(scenario)


def test_stop_sends_close_shutdown() -> None:
    async def scenario() -> None:
        async with fake_setup() as (master, session):
            conn = await master.next_conn()
            await conn.handshake()
            assert await session.wait_connected(2)
            stopping = asyncio.create_task(session.stop())
            close = await conn.recv()
            assert isinstance(close, Close)
            assert (close.reason, close.session_id) == (CloseReason.SHUTDOWN, 42)
            conn.reply(close)
            await asyncio.wait_for(stopping, 30)  # hang detection
            assert await conn.closed_by_subagent(30)
            assert not session.status.connected
            assert master.count == 1  # no reconnect after stop

    run(scenario)


def test_notify_waits_for_response_and_reports_errors() -> None:
    async def scenario() -> None:
        async with fake_setup() as (master, session):
            conn = await master.next_conn()
            await conn.handshake()
            assert await session.wait_connected(2)
            extra = VarBind((*SCALARS, 4, 0), Value(SnmpType.GAUGE32, 5))

            sending = asyncio.create_task(session.notify((*B, 0, 1), [extra]))
            note = await conn.recv()
            assert isinstance(note, Notify)
            assert note.session_id == 42
            assert note.varbinds == (
                VarBind(SNMP_TRAP_OID_0, Value(SnmpType.OBJECT_IDENTIFIER, (*B, 0, 1))),
                extra,
            )
            conn.reply(note)
            assert (await sending).error == ErrorCode.NO_ERROR

            sending = asyncio.create_task(session.notify((*B, 0, 2), sys_uptime=True))
            note = await conn.recv()
            assert isinstance(note, Notify)
            assert note.varbinds[0].name == (1, 3, 6, 1, 2, 1, 1, 3, 0)
            assert note.varbinds[0].value.type is SnmpType.TIME_TICKS
            conn.reply(note, ErrorCode.PROCESSING_ERROR)
            with pytest.raises(AgentXResponseError) as info:
                await sending
            assert info.value.error == ErrorCode.PROCESSING_ERROR

            with pytest.raises(AgentXTimeout):
                await session.notify((*B, 0, 3), timeout=0.2)  # never answered

    run(scenario)


def test_notify_without_session_raises_not_connected() -> None:
    async def scenario() -> None:
        async with fake_setup() as (_master, session):
            with pytest.raises(AgentXNotConnected):
                await session.notify((*B, 0, 1))

    run(scenario)


def _trap_of(note: Pdu) -> Oid:
    assert isinstance(note, Notify), note
    (oid,) = [vb.value.value for vb in note.varbinds if vb.name == SNMP_TRAP_OID_0]
    assert isinstance(oid, tuple)
    return oid


async def _until(pred: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_notifications_given_while_not_registered_are_sent_in_order_once_registered() -> None:
    ticks = [100]

    async def scenario() -> None:
        async with fake_setup(sys_uptime=lambda: ticks[0]) as (master, session):
            conn = await master.next_conn()  # connected, not yet open nor registered
            extra = VarBind((*SCALARS, 4, 0), Value(SnmpType.GAUGE32, 5))
            session.notify_later((*B, 0, 1), [extra], sys_uptime=True)
            session.notify_later((*B, 0, 2))
            assert session.status.pending_notifications == 2
            ticks[0] = 900  # registered later: the kept one still says when it was raised,
            await conn.handshake()  # in the master's time: before it started (its uptime 0)
            first = await conn.recv()
            assert _trap_of(first) == (*B, 0, 1)
            assert isinstance(first, Notify) and first.session_id == 42
            assert first.varbinds[0] == VarBind(
                (1, 3, 6, 1, 2, 1, 1, 3, 0), Value(SnmpType.TIME_TICKS, 0))
            assert first.varbinds[-1] == extra
            conn.reply(first)
            second = await conn.recv()
            assert _trap_of(second) == (*B, 0, 2)
            conn.reply(second)
            await _until(lambda: session.status.pending_notifications == 0)
            # Registered: sent at once.
            session.notify_later((*B, 0, 3))
            third = await conn.recv()
            assert _trap_of(third) == (*B, 0, 3)
            conn.reply(third)
            await _until(lambda: session.status.pending_notifications == 0)
            assert session.status.dropped_notifications == 0

    run(scenario)


def test_a_notification_cut_off_by_a_lost_connection_is_sent_again() -> None:
    async def scenario() -> None:
        async with fake_setup() as (master, session):
            conn = await master.next_conn()
            await conn.handshake()
            assert await session.wait_connected(2)
            session.notify_later((*B, 0, 1))
            assert _trap_of(await conn.recv()) == (*B, 0, 1)  # never answered: the master
            conn.writer.close()  # goes away
            session.notify_later((*B, 0, 2))
            conn = await master.next_conn()
            await conn.handshake()
            for trap in ((*B, 0, 1), (*B, 0, 2)):
                note = await conn.recv()
                assert _trap_of(note) == trap
                conn.reply(note)
            await _until(lambda: session.status.pending_notifications == 0)

    run(scenario)


def test_kept_notifications_are_bounded_and_a_refused_one_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        async with fake_setup(max_pending=2) as (master, session):
            conn = await master.next_conn()
            for i in (1, 2, 3):
                session.notify_later((*B, 0, i))
            status = session.status
            assert (status.pending_notifications, status.dropped_notifications) == (2, 1)
            await conn.handshake()
            note = await conn.recv()
            assert _trap_of(note) == (*B, 0, 2)  # the oldest went first
            conn.reply(note, ErrorCode.PROCESSING_ERROR)  # refused: not retried
            note = await conn.recv()
            assert _trap_of(note) == (*B, 0, 3)
            conn.reply(note)
            await _until(lambda: session.status.pending_notifications == 0)
            assert session.status.dropped_notifications == 2

    with caplog.at_level(logging.INFO, logger="pmta_snmp.agentx.session"):
        run(scenario)
    text = caplog.text
    assert "notification 1.3.6.1.4.1.32473.99.0.1 kept until it is (1 waiting)" in text
    assert "2 notifications waiting for the master; the oldest is dropped" in text
    assert "refused notification 1.3.6.1.4.1.32473.99.0.2: PROCESSING_ERROR; dropped" in text


def test_master_not_reading_is_dropped_instead_of_buffering_forever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    big = OidTree(
        [((*TABLE_ENTRY, 2, i), Value(SnmpType.OCTET_STRING, b"x" * 200)) for i in range(2000)],
        [(*TABLE_ENTRY, 2)],
    )

    async def scenario() -> None:
        async with fake_setup(send_timeout=0.5) as (master, session):
            session.set_tree(big)
            conn = await master.next_conn()
            await conn.handshake()
            req = GetBulk(0, 1000, (SearchRange(B),), session_id=42).encode()
            for _ in range(200):  # ~50 MB of answers that nobody reads
                conn.send(req)
                await asyncio.sleep(0)
                if master.count > 1:
                    break
            conn2 = await master.next_conn(timeout=30)  # hang detection (send_timeout 0.5 s)
            await conn2.handshake()
            assert await session.wait_connected(2)

    with caplog.at_level(logging.WARNING, logger="pmta_snmp.agentx"):
        run(scenario)
    assert any("not reading" in r.getMessage() for r in caplog.records)


def test_requests_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with fake_setup() as (master, session):
            conn = await master.next_conn()
            await conn.handshake()
            assert await session.wait_connected(2)
            caplog.clear()
            for i in range(50):
                await conn.request(GetNext((SearchRange(B),), session_id=42, packet_id=i))
            assert caplog.records == []

    with caplog.at_level(logging.DEBUG, logger="pmta_snmp.agentx"):
        run(scenario)
    messages = [r.getMessage() for r in caplog.records]
    assert any("closed" in m for m in messages)  # the stop is logged once
