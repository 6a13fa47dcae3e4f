"""A hostile AgentX master: out-of-order, stale, duplicate and premature Responses to our
Open, Register and Notify; the wrong byte order; unknown PDU types; truncated headers; huge
payload lengths; garbage; and floods. The subagent answers, drops or reconnects, and never
crashes or grows without bound.

(tests/integration/test_agentx_snmpd.py covers the single-shot garbage cases; this adds the
ordering cases and measured floods against a subagent child process.)
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest

from pmta_snmp.agentx.codec import (
    MAX_PAYLOAD_LEN,
    Close,
    CloseReason,
    ErrorCode,
    Get,
    GetNext,
    Notify,
    Open,
    Register,
    Response,
    SearchRange,
)
from pmta_snmp.agentx.session import AgentXResponseError, AgentXSession, AgentXTimeout
from pmta_snmp.mib.snapshot import SnmpType, Value
from pmta_snmp.netsnmp import short_tempdir
from tests.reliability._fake_master import CHILD, ENTRY, B, FakeConn, FakeMaster, small_tree
from tests.reliability._support import PYTHON, REPO, Background, agent_env, fds, rss_kb

T = TypeVar("T")
INT0 = (*B, 1, 1, 0)


def run(coro_fn: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro_fn(), timeout)

    return asyncio.run(main())


@asynccontextmanager
async def setup(**kwargs: object) -> AsyncIterator[tuple[FakeMaster, AgentXSession]]:
    with short_tempdir("hostile-") as d:
        master = FakeMaster(d / "m.sock")
        await master.start()
        options: dict[str, object] = {
            "ping_interval": 30.0, "request_timeout": 0.5,
            "backoff_initial": 0.05, "backoff_max": 0.2,
        }
        options.update(kwargs)
        session = AgentXSession([B], small_tree(), address=str(master.path), **options)  # type: ignore[arg-type]
        session.start()
        try:
            yield master, session
        finally:
            await master.close()
            await session.stop()


async def answered_get(conn: FakeConn, packet_id: int = 900) -> Response:
    conn.send(Get((SearchRange(INT0),), session_id=conn.session_id, packet_id=packet_id).encode())
    while True:
        resp = await conn.recv()
        if isinstance(resp, Response) and resp.packet_id == packet_id:
            return resp


# --- out-of-order Responses ----------------------------------------------------------------


def test_stale_unknown_and_duplicate_responses_to_open_and_register_are_ignored() -> None:
    async def scenario() -> None:
        async with setup() as (master, session):
            conn = await master.next_conn()
            conn.session_id = 42
            opened = await conn.recv()
            assert isinstance(opened, Open)
            # Answers to packets we never sent, before the real one: ignored.
            for pid in (opened.packet_id + 1, opened.packet_id + 1000, 0, 0xFFFFFFFF):
                conn.reply(opened, ErrorCode.OPEN_FAILED, packet_id=pid, session_id=99)
            conn.reply(opened)  # the real answer
            conn.reply(opened, ErrorCode.OPEN_FAILED)  # and a late duplicate with an error
            reg = await conn.recv()
            assert isinstance(reg, Register)
            assert reg.session_id == 42  # from the real answer, not the stale ones
            conn.reply(opened)  # the Open answer again, in place of the Register's
            conn.reply(reg, ErrorCode.NO_ERROR)
            conn.reply(reg, ErrorCode.DUPLICATE_REGISTRATION)  # duplicate: ignored
            assert await session.wait_connected(2)
            resp = await answered_get(conn)
            assert resp.varbinds[0].value == Value(SnmpType.INTEGER, 7)
            assert session.status.connected and session.status.session_id == 42
            assert master.count == 1  # nothing above cost a reconnect

    run(scenario)


def test_premature_response_is_not_taken_for_the_register_answer() -> None:
    async def scenario() -> None:
        async with setup() as (master, session):
            conn = await master.next_conn()
            conn.session_id = 42
            opened = await conn.recv()
            assert isinstance(opened, Open)
            # An answer for the packet id the Register will use, sent before the Open answer.
            conn.reply(opened, packet_id=opened.packet_id + 1)
            conn.reply(opened)
            reg = await conn.recv()
            assert isinstance(reg, Register) and reg.packet_id == opened.packet_id + 1
            # Not answered: the premature Response must not count, so the Register times out
            # (request_timeout 0.5 s) and the connection is dropped; taken for the answer, the
            # session would be registered and keep the connection.
            assert await conn.closed_by_subagent(30)
            conn2 = await master.next_conn(30)
            assert session.status.last_error == "no answer to REGISTER from master"
            assert not session.status.connected
            await conn2.handshake(43)
            assert await session.wait_connected(2)
            assert session.status.last_error is None

    run(scenario)


def test_notify_answers_out_of_order_reach_the_right_callers() -> None:
    async def scenario() -> None:
        async with setup(request_timeout=1.0) as (master, session):
            conn = await master.next_conn()
            await conn.handshake()
            assert await session.wait_connected(2)
            sends = [asyncio.create_task(session.notify((*B, 0, i))) for i in (1, 2, 3, 4)]
            notes = [await conn.recv() for _ in sends]
            assert all(isinstance(n, Notify) for n in notes)
            by_trap: dict[int, Notify] = {}
            for note in notes:
                assert isinstance(note, Notify)
                trap = note.varbinds[0].value.value
                assert isinstance(trap, tuple)
                by_trap[trap[-1]] = note
            # Reverse order; a stray answer between; #3 answered with the wrong packet id.
            conn.reply(by_trap[4], ErrorCode.PROCESSING_ERROR)
            conn.reply(by_trap[1], packet_id=by_trap[1].packet_id + 77)
            conn.reply(by_trap[3], packet_id=by_trap[2].packet_id + 1000)
            conn.reply(by_trap[2])
            conn.reply(by_trap[1])
            conn.reply(by_trap[2], ErrorCode.GEN_ERR)  # duplicate for a finished request
            results = await asyncio.gather(*sends, return_exceptions=True)
            assert isinstance(results[0], Response) and results[0].error == 0
            assert isinstance(results[1], Response) and results[1].error == 0
            assert isinstance(results[2], AgentXTimeout)  # its answer never came
            assert isinstance(results[3], AgentXResponseError)
            assert results[3].error == ErrorCode.PROCESSING_ERROR
            # The session survived all of it.
            assert session.status.connected and master.count == 1
            assert (await answered_get(conn)).varbinds[0].value == Value(SnmpType.INTEGER, 7)

    run(scenario)


def test_responses_in_the_other_byte_order_are_accepted() -> None:
    async def scenario() -> None:
        async with setup() as (master, session):
            conn = await master.next_conn()
            conn.session_id = 42
            opened = await conn.recv()
            assert opened.network_byte_order  # we speak big-endian
            conn.reply(opened, big=False)  # the master answers little-endian
            reg = await conn.recv()
            conn.reply(reg, big=False)
            assert await session.wait_connected(2)
            req = GetNext((SearchRange(B),), session_id=42, packet_id=5, network_byte_order=False)
            conn.send(req.encode())
            raw = await conn.recv_raw()
            assert raw[2] & 0x10 == 0  # answered in the request's order

    run(scenario)


# --- malformed streams ---------------------------------------------------------------------


def _flag_flipped(data: bytes) -> bytes:
    """The same bytes with the byte-order flag inverted: every integer is misread."""
    return data[:2] + bytes([data[2] ^ 0x10]) + data[3:]


BAD_STREAMS: dict[str, Callable[[int], bytes]] = {
    # A big-endian packet claiming to be little-endian: its length reads as ~0x28000000.
    "wrong-byte-order": lambda sid: _flag_flipped(
        GetNext((SearchRange(B),), session_id=sid, packet_id=3).encode()),
    "huge-length": lambda sid: struct.pack(">BBBxIIII", 1, 5, 0x10, sid, 0, 1, 0xFFFFFFFC),
    "just-over-max": lambda sid: struct.pack(">BBBxIIII", 1, 5, 0x10, sid, 0, 1,
                                            MAX_PAYLOAD_LEN + 4),
    "version-0": lambda sid: struct.pack(">BBBxIIII", 0, 5, 0x10, sid, 0, 1, 0),
    "all-ff": lambda sid: b"\xff" * 64,
}


@pytest.mark.parametrize("kind", list(BAD_STREAMS))
def test_unframeable_stream_gets_close_parse_error_then_reconnect(kind: str) -> None:
    async def scenario() -> None:
        async with setup() as (master, session):
            conn = await master.next_conn()
            await conn.handshake()
            assert await session.wait_connected(2)
            conn.send(BAD_STREAMS[kind](42))
            close = await conn.recv()
            assert isinstance(close, Close) and close.reason == CloseReason.PARSE_ERROR
            assert await conn.closed_by_subagent(2)
            conn2 = await master.next_conn()
            await conn2.handshake(43)
            assert await session.wait_connected(2)
            assert (await answered_get(conn2)).varbinds[0].value == Value(SnmpType.INTEGER, 7)

    run(scenario)


def test_truncated_header_is_completed_later_without_loss() -> None:
    """A header split across writes with a pause (no hang-up) is a slow master, not garbage."""

    async def scenario() -> None:
        async with setup() as (master, session):
            conn = await master.next_conn()
            await conn.handshake()
            data = Get((SearchRange(INT0),), session_id=42, packet_id=77).encode()
            conn.send(data[:7])
            await conn.writer.drain()
            await asyncio.sleep(0.3)
            assert session.status.connected
            conn.send(data[7:])
            resp = await conn.recv()
            assert isinstance(resp, Response) and resp.packet_id == 77
            assert resp.varbinds[0].value == Value(SnmpType.INTEGER, 7)

    run(scenario)


def test_largest_legal_payload_trickled_in_small_writes_is_answered() -> None:
    """A 1 MiB packet (the limit) arriving 4 KiB at a time is reassembled and answered on the
    same connection (what it costs: `./run bench micro`)."""

    async def scenario() -> None:
        async with setup(request_timeout=5.0) as (master, session):
            conn = await master.next_conn()
            await conn.handshake()
            assert await session.wait_connected(2)
            # An unknown PDU type with a maximal payload: framed, so answered parseError.
            head = struct.pack(">BBBxIIII", 1, 77, 0x10, 42, 0, 31, MAX_PAYLOAD_LEN)
            payload = bytes(MAX_PAYLOAD_LEN)
            conn.send(head)
            for i in range(0, MAX_PAYLOAD_LEN, 4096):
                conn.send(payload[i : i + 4096])
                await conn.writer.drain()
                await asyncio.sleep(0)
            resp = await conn.recv(timeout=30)  # hang detection
            assert isinstance(resp, Response) and resp.packet_id == 31
            assert resp.error == ErrorCode.PARSE_ERROR
            assert master.count == 1

    run(scenario)


# --- floods against a subagent child: bounded memory, fds and logs ---------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)  # hang detection: 10-15 s
def test_floods_leave_memory_fds_and_logs_bounded(tmp_path: pytest.TempPathFactory) -> None:
    results: dict[str, object] = {}

    async def scenario(sock: str, child: Background) -> None:
        master = FakeMaster(__import__("pathlib").Path(sock))
        await master.start()
        try:
            conn = await master.next_conn(10)
            await conn.handshake()
            await answered_get(conn)

            async def flood(make: Callable[[int], bytes], n: int, batch: int = 2000,
                            window: int = 20_000) -> int:
                """Send n PDUs in batches while reading the answers; how many came back."""
                got = 0

                async def reader() -> None:
                    nonlocal got
                    while got < n:
                        resp = await conn.recv(timeout=10)
                        assert isinstance(resp, Response)
                        got += 1

                task = asyncio.create_task(reader())
                for start in range(0, n, batch):
                    # A master reads its answers: at most `window` requests outstanding (a
                    # master that stops reading is dropped, see the write-buffer test).
                    while start - got > window and not task.done():
                        await asyncio.sleep(0.001)
                    conn.send(b"".join(make(i) for i in range(start, min(n, start + batch))))
                    await conn.writer.drain()
                await asyncio.wait_for(task, 60)
                return got

            nxt = GetNext((SearchRange(ENTRY),), session_id=42, packet_id=1).encode()
            bad = struct.pack(">BBBxIIII", 1, 77, 0x10, 42, 0, 1, 8) + bytes(8)
            # warm-up, then the baseline
            await flood(lambda i: nxt, 20_000)
            base_rss, base_fds = rss_kb(child.pid), len(fds(child.pid))
            t0 = time.monotonic()
            results["getnext"] = await flood(lambda i: nxt, 200_000)
            results["getnext_s"] = time.monotonic() - t0
            t0 = time.monotonic()
            results["unknown_pdu"] = await flood(lambda i: bad, 100_000)
            results["unknown_s"] = time.monotonic() - t0
            mid_rss = rss_kb(child.pid)
            # 100 connections each ended by garbage: reconnect every time, nothing kept.
            for i in range(100):
                conn.send(b"\x01\x05\x10\x00" + b"\xff" * 60)
                assert await conn.closed_by_subagent(30)
                conn = await master.next_conn(5)
                await conn.handshake(100 + i)
            resp = await answered_get(conn)
            assert resp.varbinds[0].value == Value(SnmpType.INTEGER, 7)
            results.update(base_rss=base_rss, mid_rss=mid_rss, end_rss=rss_kb(child.pid),
                           base_fds=base_fds, end_fds=len(fds(child.pid)),
                           connections=master.count)
        finally:
            await master.close()

    with short_tempdir("flood-") as d:
        sock = str(d / "m.sock")
        child = Background([PYTHON, "-c", CHILD, sock], d / "child.log",
                           env=agent_env(PYTHONPATH=str(REPO)), cwd=REPO)
        try:
            run(lambda: scenario(sock, child), timeout=250)
            assert child.alive(), child.log_text()[-2000:]
            log = child.log_text()
        finally:
            child.stop()
    print(f"\nflood: {results}")
    assert results["getnext"] == 200_000 and results["unknown_pdu"] == 100_000
    assert results["connections"] == 101
    base, mid, end = (int(results[k]) for k in ("base_rss", "mid_rss", "end_rss"))  # type: ignore[call-overload]
    assert mid - base < 10 * 1024, results  # KiB
    assert end - base < 10 * 1024, results
    assert int(results["end_fds"]) <= int(results["base_fds"]) + 1, results  # type: ignore[call-overload]
    assert "Traceback" not in log, log[-3000:]
    # Logged once per connection, never once per bad PDU.
    assert log.count("sent a malformed PDU (unknown PDU type 77)") == 1, log[-3000:]
    assert log.count("lost: unparseable data from master") == 100
    assert len(log.splitlines()) < 600, len(log.splitlines())
