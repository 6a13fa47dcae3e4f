"""Health objects computed when read: LiveTree over a packed tree, LiveHealth, PollWatch.

A tree is built after a poll; what it stores for the age of the data is only true then. These
tests move fake clocks and read the same tree object again, as a manager does between polls.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pmta_snmp.agentx.codec import Get, GetNext, SearchRange, decode_packet
from pmta_snmp.agentx.handlers import RequestHandler
from pmta_snmp.mib.health import AgentHealth
from pmta_snmp.mib.layout import iter_varbinds, layout, object_prefixes
from pmta_snmp.mib.live import LiveHealth
from pmta_snmp.mib.snapshot import LiveTree, Oid, OidTree, SnmpType, Value, encode_value
from pmta_snmp.model import Snapshot, Status
from pmta_snmp.service import PollWatch

LAY = layout()
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
TRUE, FALSE = Value(SnmpType.INTEGER, 1), Value(SnmpType.INTEGER, 2)


class Clocks:
    """A monotonic clock and a UTC wall clock that move together."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = T0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


def built_tree(*, reachable: bool = True, age: float = 0.0, error: str = "") -> OidTree:
    """The tree the poller builds after a poll (good data, health as of the build)."""
    health = AgentHealth(api_reachable=reachable, last_success=T0, data_age_seconds=age,
                         poll_successes=1, last_error=error, started_at=T0)
    items = iter_varbinds(Snapshot(Status(), taken_at=T0), health)
    return OidTree.from_sorted(items, object_prefixes())


def live_health(clocks: Clocks, stale_after: float = 5.0) -> LiveHealth:
    return LiveHealth(stale_after=stale_after, clock=lambda: clocks.mono,
                      wall=lambda: clocks.wall)


def get(tree: OidTree, name: str) -> Value | None:
    return tree.get(LAY.instance(name))


def test_data_age_is_the_age_when_read_not_when_built() -> None:
    clocks = Clocks()
    live = live_health(clocks, stale_after=100)
    tree = live.install(built_tree(), api_reachable=True, last_success=T0)
    assert get(tree, "pmtaAgentDataAge") == Value(SnmpType.GAUGE32, 0)
    clocks.advance(42.7)
    assert get(tree, "pmtaAgentDataAge") == Value(SnmpType.GAUGE32, 42)
    assert get(tree, "pmtaAgentApiReachable") == TRUE
    # Everything else is the tree's own, and the OIDs are the same.
    base = tree.base if isinstance(tree, LiveTree) else tree
    assert tree.oids == base.oids
    assert get(tree, "pmtaAgentPollSuccesses") == get(base, "pmtaAgentPollSuccesses")


def test_no_tree_for_longer_than_stale_after_reads_unreachable_and_says_why() -> None:
    clocks = Clocks()
    live = live_health(clocks, stale_after=5)
    tree = live.install(built_tree(), api_reachable=True, last_success=T0)
    clocks.advance(4)
    assert get(tree, "pmtaAgentApiReachable") == TRUE
    assert get(tree, "pmtaAgentLastError") == Value(SnmpType.OCTET_STRING, b"")
    clocks.advance(7)
    assert get(tree, "pmtaAgentApiReachable") == FALSE
    error = get(tree, "pmtaAgentLastError")
    assert error is not None and isinstance(error.value, bytes)
    assert error.value.startswith(b"no poll result for 11 s")
    assert get(tree, "pmtaAgentDataAge") == Value(SnmpType.GAUGE32, 11)
    # The next tree ends the stall; the data age follows its last good poll.
    tree = live.install(built_tree(reachable=False, error="down"), api_reachable=False,
                        last_success=T0)
    assert get(tree, "pmtaAgentApiReachable") == FALSE
    assert get(tree, "pmtaAgentLastError") == Value(SnmpType.OCTET_STRING, b"down")
    assert get(tree, "pmtaAgentDataAge") == Value(SnmpType.GAUGE32, 11)


def test_after_a_stall_the_last_error_is_the_stall_until_a_newer_error() -> None:
    """pmtaAgentLastError is kept after recovery so that the cause of the last outage stays
    visible (MIB): after a stall that is the stall, not the poller's error of an earlier
    outage, which the trees it delivers still carry; a newer poller error replaces it."""
    clocks = Clocks()
    live = live_health(clocks, stale_after=5)
    older = "cannot connect to PowerMTA (an hour ago)"

    def arrive(*, reachable: bool, error: str) -> OidTree:
        return live.install(built_tree(reachable=reachable, error=error),
                            api_reachable=reachable, last_success=T0, last_error=error)

    arrive(reachable=True, error=older)
    clocks.advance(16)
    tree = arrive(reachable=True, error=older)  # the stall ends, the API answers
    assert get(tree, "pmtaAgentApiReachable") == TRUE
    error = get(tree, "pmtaAgentLastError")
    assert error is not None and isinstance(error.value, bytes)
    assert error.value == b"no poll result for 16 s (more than 5 s): polling stalled"
    clocks.advance(3)
    assert get(arrive(reachable=True, error=older), "pmtaAgentLastError") == error
    tree = arrive(reachable=False, error="HTTP 503")  # a newer outage: its own error
    assert get(tree, "pmtaAgentLastError") == Value(SnmpType.OCTET_STRING, b"HTTP 503")
    tree = arrive(reachable=True, error="HTTP 503")
    assert get(tree, "pmtaAgentLastError") == Value(SnmpType.OCTET_STRING, b"HTTP 503")


def test_no_age_instance_is_added_before_the_first_good_poll() -> None:
    clocks = Clocks()
    live = live_health(clocks)
    empty = OidTree.from_sorted(iter_varbinds(None, AgentHealth()), object_prefixes())
    tree = live.install(empty, api_reachable=False, last_success=None)
    assert get(tree, "pmtaAgentDataAge") is None
    assert len(tree) == len(empty)


def test_every_read_path_sees_the_live_value() -> None:
    clocks = Clocks()
    live = live_health(clocks, stale_after=100)
    tree = live.install(built_tree(), api_reachable=True, last_success=T0)
    clocks.advance(9)
    age_oid = LAY.instance("pmtaAgentDataAge")
    nine = Value(SnmpType.GAUGE32, 9)
    i = tree.index(age_oid)
    assert i is not None and i in tree.live_indices
    assert tree.value(i) == nine and tree.item(i) == (age_oid, nine)
    assert tree.raw(i)[2] == encode_value(nine)
    assert dict(iter(tree))[age_oid] == nine
    before: Oid = age_oid[:-1]
    assert tree.next_after(before) == (age_oid, nine)
    # The AgentX fast path (bytes from the tree) and the general path.
    handler = RequestHandler(lambda: tree, lambda: 1)
    for pdu in (Get((SearchRange(age_oid),)), GetNext((SearchRange(before),))):
        packet = handler.answer_packet(pdu.encode())
        assert packet is not None
        resp, _ = decode_packet(packet)
        assert resp is not None and resp.varbinds[0].value == nine  # type: ignore[attr-defined]
        general = handler.handle(pdu)
        assert general is not None and general.varbinds[0].value == nine


def test_a_live_tree_of_a_live_tree_stays_one_layer_deep() -> None:
    clocks = Clocks()
    live = live_health(clocks)
    first = live.install(built_tree(), api_reachable=True, last_success=T0)
    second = live.install(first, api_reachable=True, last_success=T0)
    assert isinstance(first, LiveTree) and isinstance(second, LiveTree)
    assert second.base is first.base


# --- PollWatch: notifications for a stalled poller ----------------------------------------------

LOST, RESTORED = LAY.oid("pmtaApiLost"), LAY.oid("pmtaApiRestored")


class Watch:
    def __init__(self) -> None:
        self.clocks = Clocks()
        self.sent: list[tuple[Oid, list[tuple[Oid, Value]]]] = []
        self.watch = PollWatch(
            built_tree(), lambda oid, vbs: self.sent.append((oid, vbs)), stale_after=5,
            live=live_health(self.clocks, 5),
        )

    def tree(self, *, reachable: bool, raised: bool = False, failures: int = 0,
             error: str | None = None) -> None:
        if error is None:
            error = "" if reachable else "down"
        self.watch.arrived(built_tree(reachable=reachable), api_reachable=reachable,
                           last_success=T0, consecutive_failures=failures,
                           last_error=error, api_raised=raised)

    def error_sent(self, n: int) -> bytes:
        """pmtaAgentLastError in the `n`th notification sent."""
        error = dict(self.sent[n][1])[LAY.instance("pmtaAgentLastError")].value
        assert isinstance(error, bytes)
        return error

    def names(self) -> list[Oid]:
        return [oid for oid, _ in self.sent]


def test_a_stall_raises_api_lost_once_and_the_next_good_tree_clears_it() -> None:
    w = Watch()
    w.tree(reachable=True)
    w.clocks.advance(3)
    assert w.watch.check() is False and w.sent == []
    w.clocks.advance(3)
    assert w.watch.check() is True
    w.clocks.advance(10)
    assert w.watch.check() is True
    assert w.names() == [LOST]  # once per stall, not per check
    error = dict(w.sent[0][1])[LAY.instance("pmtaAgentLastError")].value
    assert isinstance(error, bytes) and b"no poll result" in error
    w.tree(reachable=True)
    assert w.names() == [LOST, RESTORED]
    assert w.watch.check() is False


def test_the_clear_of_a_stall_carries_the_stall_not_an_older_error() -> None:
    """pmtaApiRestored carries the error of the outage just ended (MIB): after a stall, that
    the poll results stopped and for how long; not the poller's last error, which is from an
    earlier outage (the poller saw nothing fail during the stall)."""
    w = Watch()
    old = "cannot connect to PowerMTA (an outage an hour ago)"
    w.tree(reachable=True, error=old)
    w.clocks.advance(6)
    w.watch.check()
    w.clocks.advance(10)
    w.tree(reachable=True, error=old)
    assert w.names() == [LOST, RESTORED]
    assert w.error_sent(1).startswith(b"no poll result for 16 s")


def test_a_stall_then_a_failing_api_clears_with_the_apis_error() -> None:
    w = Watch()
    w.tree(reachable=True)
    w.clocks.advance(6)
    w.watch.check()
    w.tree(reachable=False, failures=1, error="HTTP 503")
    w.tree(reachable=True, error="HTTP 503")
    assert w.names() == [LOST, RESTORED]
    assert w.error_sent(1) == b"HTTP 503"


def test_a_stall_then_the_pollers_own_lost_is_one_fault() -> None:
    """Trees come back, the API is down: the poller's rules raise pmtaApiLost too; the manager
    hears it once, and the poller's pmtaApiRestored clears it."""
    w = Watch()
    w.tree(reachable=True)
    w.clocks.advance(6)
    w.watch.check()
    w.tree(reachable=False, failures=1)  # still below the poller's threshold: nothing yet
    assert w.names() == [LOST]
    w.tree(reachable=False, raised=True, failures=3)
    w.watch.notification(LOST, [])  # the poller's raise, right after its tree
    assert w.names() == [LOST]
    w.tree(reachable=True)
    w.watch.notification(RESTORED, [])
    assert w.names() == [LOST, RESTORED]


def test_a_stall_while_the_poller_already_holds_api_lost_sends_nothing_more() -> None:
    w = Watch()
    w.tree(reachable=False, raised=True, failures=3)
    w.clocks.advance(6)
    assert w.watch.check() is True
    assert w.names() == []
    w.tree(reachable=True)  # the poller clears its own raise
    w.watch.notification(RESTORED, [])
    assert w.names() == [RESTORED]


def test_notifications_of_the_poller_pass_through() -> None:
    w = Watch()
    high = LAY.oid("pmtaQueueHigh")
    w.watch.notification(high, [])
    w.watch.notification(LOST, [])
    assert w.names() == [high, LOST]


def test_a_step_of_the_wall_clock_does_not_move_the_age_of_the_data() -> None:
    """The age grows on the monotonic clock once the poll is seen: a wall clock stepped back
    an hour (NTP, a resumed VM) no longer reads stale data as 0 s old, nor one stepped forward
    fresh data as an hour old."""
    clocks = Clocks()
    live = live_health(clocks, stale_after=100)
    tree = live.install(built_tree(), api_reachable=True, last_success=T0)
    clocks.advance(20)
    clocks.wall -= timedelta(hours=1)
    assert get(tree, "pmtaAgentDataAge") == Value(SnmpType.GAUGE32, 20)
    clocks.wall += timedelta(hours=3)
    assert get(tree, "pmtaAgentDataAge") == Value(SnmpType.GAUGE32, 20)
    # A failed poll delivers a tree with the same last success: the age goes on growing.
    clocks.advance(5)
    tree = live.install(built_tree(), api_reachable=False, last_success=T0)
    assert get(tree, "pmtaAgentDataAge") == Value(SnmpType.GAUGE32, 25)


def acct_tree(last_read: datetime | None) -> OidTree:
    """A built tree with the accounting reader's objects, its last read at `last_read`."""
    from pmta_snmp.outcomes.view import OutcomesView

    health = AgentHealth(api_reachable=True, last_success=T0, data_age_seconds=0.0,
                         poll_successes=1, started_at=T0)
    view = OutcomesView.example().with_changes(updated=last_read)
    items = iter_varbinds(Snapshot(Status(), taken_at=T0), health, outcomes=view)
    return OidTree.from_sorted(items, object_prefixes())


def test_the_accounting_read_age_grows_when_reads_stop_and_ignores_wall_clock_steps() -> None:
    """pmtaAcctReadAge is now minus pmtaAcctLastRead when a manager asks: trees that keep
    arriving with the same last read (the reader stopped, the poller did not) or no tree at
    all (the worker stopped) both let it grow; a newer read brings it back; a step of the
    wall clock after the read does not move it."""
    clocks = Clocks()
    live = live_health(clocks, stale_after=1000)
    tree = live.install(acct_tree(T0), api_reachable=True, last_success=T0)
    assert get(tree, "pmtaAcctReadAge") == Value(SnmpType.GAUGE32, 0)
    clocks.advance(30)
    tree = live.install(acct_tree(T0), api_reachable=True, last_success=clocks.wall)
    clocks.advance(30)
    assert get(tree, "pmtaAcctReadAge") == Value(SnmpType.GAUGE32, 60)
    assert get(tree, "pmtaAgentDataAge") == Value(SnmpType.GAUGE32, 30)
    clocks.wall -= timedelta(hours=1)  # the wall clock steps back: the age does not
    assert get(tree, "pmtaAcctReadAge") == Value(SnmpType.GAUGE32, 60)
    tree = live.install(acct_tree(clocks.wall - timedelta(seconds=5)), api_reachable=True,
                        last_success=clocks.wall)
    assert get(tree, "pmtaAcctReadAge") == Value(SnmpType.GAUGE32, 5)


def test_no_accounting_read_age_without_a_read() -> None:
    clocks = Clocks()
    live = live_health(clocks)
    for tree in (built_tree(), acct_tree(None)):
        served = live.install(tree, api_reachable=True, last_success=T0)
        assert get(served, "pmtaAcctReadAge") is None
        assert LAY.instance("pmtaAcctReadAge") not in served
    served = live.install(acct_tree(T0), api_reachable=True, last_success=T0)
    assert get(served, "pmtaAcctReadAge") == Value(SnmpType.GAUGE32, 0)
