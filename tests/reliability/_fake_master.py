"""The scripted AgentX 'master' for misbehaviour snmpd never shows (bench/fakemaster.py's
asyncio one, under the names these tests use), the small tree served under it, and a
subagent child process to measure under it. No test lives here."""

from __future__ import annotations

from bench.fakemaster import AsyncFakeConn as FakeConn
from bench.fakemaster import AsyncFakeMaster as FakeMaster
from pmta_snmp.mib.snapshot import Oid, OidTree, SnmpType, Value

__all__ = ["CHILD", "ENTRY", "B", "FakeConn", "FakeMaster", "small_tree"]

B: Oid = (1, 3, 6, 1, 4, 1, 32473, 99)
ENTRY: Oid = (*B, 2, 1)


def small_tree() -> OidTree:
    items: list[tuple[Oid, Value]] = [((*B, 1, 1, 0), Value(SnmpType.INTEGER, 7))]
    items += [((*ENTRY, 2, i), Value(SnmpType.OCTET_STRING, b"row%d" % i)) for i in range(1, 51)]
    return OidTree(items, [(*B, 1, 1), (*ENTRY, 2)])


# The subagent as a child process: its memory and fds are its own. argv[1] is the socket.
CHILD = """
import asyncio, logging, sys
from pmta_snmp.agentx.session import AgentXSession
from tests.reliability._fake_master import B, small_tree
logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(levelname)s %(name)s: %(message)s")
async def main():
    s = AgentXSession([B], small_tree(), address=sys.argv[1], ping_interval=None,
                      request_timeout=1.0, backoff_initial=0.02, backoff_max=0.1)
    s.start()
    await asyncio.Event().wait()
asyncio.run(main())
"""
