"""In-process speeds the tests only check for correctness: the OID tree and AgentX reassembly.

OID tree: 100k OIDs of a 10-column, 10k-row table with 13-arc string indexes (what the
domain table looks like), shuffled; building an `OidTree` beside `sorted()` of the same items
(the sort it cannot avoid), and a GetNext walk over all of them (`next_after` from each OID to
the next) beside `bisect.bisect_right` on the sorted OID list, per step. The walk's per-step
cost at 100k OIDs against 10k shows it is logarithmic (a linear scan would be 10x).

AgentX reassembly: the largest legal packet (1 MiB payload, an unknown PDU type the subagent
answers parseError) sent to an `AgentXSession` by bench.fakemaster 4 KiB at a time, until the
answer is back, beside the same packet sent in one write (the copying a quadratic reassembly
would add shows as a large ratio).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import struct
import time
from collections.abc import Callable

from bench.common import Report, Row, median, ms, ratio, secs, workdir
from pmta_snmp.mib.snapshot import Oid, OidTree, SnmpType, Value

NAME = "micro"
TITLE = "OID tree build and walk, AgentX 1 MiB reassembly (vs sorted, bisect, one write)"

BASE: Oid = (1, 3, 6, 1, 4, 1, 32473, 99)
WALK_LOG_TARGET = 2.0  # per-step walk cost at 100k vs 10k OIDs (linear would be 10x)
REASSEMBLY_TARGET = 10.0  # 1 MiB in 4 KiB writes vs one write (quadratic copying: ~50x)


def run(report: Report, *, quick: bool = False) -> None:
    """The tree at 10k and 100k OIDs, then the reassembly."""
    repeat = 1 if quick else 3
    oid_tree(report, repeat)
    reassembly(report, 2 if quick else 5)


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def table_items(rows: int, seed: int = 1) -> list[tuple[Oid, Value]]:
    """`rows` rows of 10 Counter64 columns under string indexes, shuffled."""
    rnd = random.Random(seed)
    items: list[tuple[Oid, Value]] = []
    for row in range(rows):
        index = (12, *(rnd.randrange(97, 123) for _ in range(12)))
        for col in range(1, 11):
            items.append(((*BASE, 2, 1, col, *index), Value(SnmpType.COUNTER64, row)))
    rnd.shuffle(items)
    return items


def _walk(tree: OidTree) -> int:
    n = 0
    found = tree.next_after(BASE)
    while found is not None:
        n += 1
        found = tree.next_after(found[0])
    return n


def _bisect_walk(oids: list[Oid]) -> int:
    n = 0
    i = bisect.bisect_right(oids, BASE)
    while i < len(oids):
        n += 1
        i = bisect.bisect_right(oids, oids[i])
    return n


def oid_tree(report: Report, repeat: int, sizes: tuple[int, int] = (1_000, 10_000)) -> None:
    """Build and walk at 10k and 100k OIDs (`sizes` in table rows of 10 columns)."""
    per_step: dict[int, float] = {}
    for rows in sizes:
        items = table_items(rows)
        columns = [(*BASE, 2, 1, c) for c in range(1, 11)]
        n = len(items)
        build = _best(lambda: OidTree(items, columns), repeat)  # noqa: B023 - used at once
        sort = _best(lambda: sorted(items), repeat)  # noqa: B023
        tree = OidTree(items, columns)
        oids = sorted(oid for oid, _ in items)
        if _walk(tree) != n or _bisect_walk(oids) != n:
            raise RuntimeError(f"a walk of {n} OIDs did not visit each once")
        walk = _best(lambda: _walk(tree), repeat)  # noqa: B023
        ref = _best(lambda: _bisect_walk(oids), repeat)  # noqa: B023
        per_step[n] = walk / n
        size = f"{n // 1000}k" if n >= 1000 else str(n)
        report.add(Row(
            f"OidTree build, {size} shuffled OIDs", secs(build), f"{secs(sort)} (sorted())",
            ratio(build, sort), "report", None,
        ))
        report.add(Row(
            f"GetNext walk, {size} OIDs ({walk / n * 1e6:.2f} us/step)", secs(walk),
            f"{secs(ref)} (bisect_right)", ratio(walk, ref), "report", None,
        ))
    small, large = sorted(per_step)
    r = ratio(per_step[large], per_step[small])
    report.add(Row(
        f"walk cost per step, {large:,} vs {small:,} OIDs",
        f"{per_step[large] * 1e6:.2f} us", f"{per_step[small] * 1e6:.2f} us", r,
        f"<= {WALK_LOG_TARGET:g}x (logarithmic)", r is not None and r <= WALK_LOG_TARGET,
    ))


def reassembly(report: Report, repeat: int) -> None:
    """1 MiB trickled in 4 KiB writes vs in one write, to the answer."""
    # The session logs the malformed PDU once per connection: not part of the table.
    session_log = logging.getLogger("pmta_snmp.agentx.session")
    level = session_log.level
    session_log.setLevel(logging.ERROR)
    try:
        trickled = [asyncio.run(_reassemble(4096)) for _ in range(repeat)]
        whole = [asyncio.run(_reassemble(0)) for _ in range(repeat)]
    finally:
        session_log.setLevel(level)
    r = ratio(median(trickled), median(whole))
    report.add(Row(
        f"AgentX 1 MiB packet in 4 KiB writes, to its answer (median of {repeat})",
        ms(median(trickled)), f"{ms(median(whole))} (one write)", r,
        f"<= {REASSEMBLY_TARGET:g}x", r is not None and r <= REASSEMBLY_TARGET,
    ))


async def _reassemble(chunk: int) -> float:
    """Seconds from the first byte of a maximal packet to its parseError answer."""
    from bench.fakemaster import AsyncFakeMaster
    from pmta_snmp.agentx.codec import MAX_PAYLOAD_LEN, ErrorCode, Response
    from pmta_snmp.agentx.session import AgentXSession

    with workdir("pmta-bm-") as wd:
        master = AsyncFakeMaster(wd / "m.sock", subtree=BASE)
        await master.start()
        session = AgentXSession([BASE], OidTree(), address=str(master.path), ping_interval=None,
                                request_timeout=30.0)
        session.start()
        try:
            conn = await master.next_conn(30)
            await conn.handshake()
            if not await session.wait_connected(30):
                raise RuntimeError("the subagent did not register")
            packet = struct.pack(">BBBxIIII", 1, 77, 0x10, 42, 0, 31, MAX_PAYLOAD_LEN)
            packet += bytes(MAX_PAYLOAD_LEN)
            t0 = time.perf_counter()
            if chunk:
                for i in range(0, len(packet), chunk):
                    conn.send(packet[i : i + chunk])
                    await conn.writer.drain()
                    await asyncio.sleep(0)
            else:
                conn.send(packet)
            resp = await conn.recv(timeout=60)
            took = time.perf_counter() - t0
            if not (isinstance(resp, Response) and resp.error == ErrorCode.PARSE_ERROR):
                raise RuntimeError(f"unexpected answer {resp!r}")
            return took
        finally:
            await master.close()
            await session.stop()


if __name__ == "__main__":
    import sys

    from bench.__main__ import main

    sys.exit(main(["micro", *sys.argv[1:]]))
