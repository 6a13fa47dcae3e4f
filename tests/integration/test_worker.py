"""TreeWorker: polling and building in a child process, trees handed over by memfd.

Runs the real child (spawn) against the simulator; the parent side runs on a LoopThread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import pytest

from pmta_snmp.agent import Backend
from pmta_snmp.config import Config, PmtaSection, PollSection, Thresholds
from pmta_snmp.mib.layout import layout
from pmta_snmp.mib.snapshot import Oid, OidTree, SnmpType, Value
from pmta_snmp.netsnmp import LoopThread
from pmta_snmp.sim import Simulator
from pmta_snmp.worker import PlannedExit, Published, TreeWorker, serve
from tests.reliability._hostile import HostileApi

LAY = layout()
trees_at_notes: list[OidTree] = []  # the tree served when each notification was forwarded


def wait_until(pred: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def value_of(tree: OidTree, name: str) -> Value | None:
    return tree.get(LAY.instance(name))


@pytest.fixture
def sim() -> Iterator[Simulator]:
    # Every row on the pages (http-default-max-items raised): the tree is compared with the
    # truth's row counts.
    s = Simulator(scenario="healthy", seed=3, speed=0, domains=30, vmtas=3,
                  max_items=None).start()
    try:
        yield s
    finally:
        s.stop()


def make_worker(
    loop_thread: LoopThread, cfg: Config
) -> tuple[TreeWorker, list[Published], list[tuple[Oid, list[tuple[Oid, Value]]]]]:
    published: list[Published] = []
    notes: list[tuple[Oid, list[tuple[Oid, Value]]]] = []

    def noted(oid: Oid, vbs: list[tuple[Oid, Value]]) -> None:
        notes.append((oid, vbs))
        trees_at_notes.append(worker.current())

    worker = TreeWorker(
        cfg,
        OidTree(),
        on_notification=noted,
        on_published=published.append,
        restart_initial=0.2,
    )

    async def start() -> None:
        worker.start()

    asyncio.run_coroutine_threadsafe(start(), loop_thread.loop).result(10)
    return worker, published, notes


def stop_worker(loop_thread: LoopThread, worker: TreeWorker) -> None:
    asyncio.run_coroutine_threadsafe(worker.stop(), loop_thread.loop).result(20)


def child_pid(worker: TreeWorker) -> int:
    proc = worker._proc
    assert proc is not None
    return int(proc.pid)


def test_child_publishes_the_simulators_state_and_notifications(
    sim: Simulator, loop_thread: LoopThread
) -> None:
    cfg = Config(
        pmta=PmtaSection(url=sim.url, timeout=3),
        poll=PollSection(interval=1, jitter=0),
        thresholds=Thresholds(queue_rcpt_raise=1, queue_rcpt_clear=0),
    )
    worker, published, notes = make_worker(loop_thread, cfg)
    try:
        assert wait_until(lambda: len(published) >= 1), "no tree published"
        tree = worker.current()
        truth = sim.snapshot()
        got = value_of(tree, "pmtaTotalMessagesOut")
        assert got == Value(SnmpType.COUNTER64, truth.status.traffic.total.outbound.msg)
        assert value_of(tree, "pmtaAgentApiReachable") == Value(SnmpType.INTEGER, 1)
        assert value_of(tree, "pmtaDomainCount") == Value(SnmpType.GAUGE32, len(truth.domains))
        info = published[0]
        assert info.values == len(tree) and info.nbytes == tree.nbytes
        assert info.poll_started <= info.poll_ended <= info.build_ended
        # queue above a threshold of 1 recipient: raised once, from the child's rules
        assert wait_until(lambda: bool(notes)), "no notification forwarded"
        assert notes[0][0] == LAY.oid("pmtaQueueHigh")
        # forwarded after the tree that raised it: a manager polling on the trap sees the queue
        depth = value_of(trees_at_notes[-1], "pmtaSmtpQueueRcpt")
        assert depth is not None and isinstance(depth.value, int) and depth.value > 1
        # the next poll sees the simulator move on
        sim.advance(120)
        assert wait_until(
            lambda: value_of(worker.current(), "pmtaTotalMessagesOut")
            == Value(SnmpType.COUNTER64, sim.snapshot().status.traffic.total.outbound.msg)
        )
        assert sum(1 for oid, _ in notes if oid == LAY.oid("pmtaQueueHigh")) == 1
    finally:
        stop_worker(loop_thread, worker)
    assert worker._proc is None


def test_killed_child_is_restarted_and_the_last_tree_served_meanwhile(
    sim: Simulator, loop_thread: LoopThread
) -> None:
    cfg = Config(pmta=PmtaSection(url=sim.url, timeout=3), poll=PollSection(interval=1, jitter=0))
    worker, published, _ = make_worker(loop_thread, cfg)
    try:
        assert wait_until(lambda: len(published) >= 1)
        before = worker.current()
        pid = child_pid(worker)
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: worker.restarts == 1), "the loss was not noticed"
        assert worker.current() is before  # last good tree still served
        n = len(published)
        assert wait_until(lambda: len(published) > n), "the new child published nothing"
        assert child_pid(worker) != pid
        assert value_of(worker.current(), "pmtaAgentApiReachable") == Value(SnmpType.INTEGER, 1)
    finally:
        stop_worker(loop_thread, worker)


def test_a_restarted_child_continues_counters_data_and_raised_notifications(
    loop_thread: LoopThread,
) -> None:
    """Killed while PowerMTA is unreachable: the next child still serves the last good data,
    counts on from the last counters and does not raise pmtaQueueHigh a second time."""
    sim = Simulator(scenario="healthy", seed=4, speed=0, domains=20, vmtas=2).start()
    # A generous API timeout: a poll slowed by a loaded machine must not count as a fault of
    # its own (an outage is a refused connection, which fails at once whatever the timeout).
    cfg = Config(
        pmta=PmtaSection(url=sim.url, timeout=10),
        poll=PollSection(interval=1, jitter=0),
        thresholds=Thresholds(queue_rcpt_raise=1, queue_rcpt_clear=0, api_failures_raise=1),
    )
    worker, published, notes = make_worker(loop_thread, cfg)
    try:
        assert wait_until(lambda: any(o == LAY.oid("pmtaQueueHigh") for o, _ in notes))
        truth = sim.snapshot().status.traffic.total.outbound.msg
        assert wait_until(lambda: len(published) >= 2)
        outage = len(notes)  # the notifications of this outage start here
        sim.set_fault("down")
        assert wait_until(
            lambda: value_of(worker.current(), "pmtaAgentApiReachable")
            == Value(SnmpType.INTEGER, 2)
        )
        def number(name: str) -> int:
            v = value_of(worker.current(), name)
            assert v is not None and isinstance(v.value, int)
            return v.value

        successes, failures = number("pmtaAgentPollSuccesses"), number("pmtaAgentPollFailures")
        os.kill(child_pid(worker), signal.SIGKILL)
        assert wait_until(lambda: worker.restarts == 1)
        n = len(published)
        assert wait_until(lambda: len(published) > n + 1), "the new child published nothing"
        tree = worker.current()
        assert value_of(tree, "pmtaTotalMessagesOut") == Value(SnmpType.COUNTER64, truth)
        assert value_of(tree, "pmtaAgentApiReachable") == Value(SnmpType.INTEGER, 2)
        assert number("pmtaAgentPollSuccesses") == successes
        assert number("pmtaAgentPollFailures") > failures
        sim.set_fault("none")
        assert wait_until(
            lambda: value_of(worker.current(), "pmtaAgentApiReachable")
            == Value(SnmpType.INTEGER, 1)
        )
        assert number("pmtaAgentPollSuccesses") > successes
        assert sum(1 for o, _ in notes if o == LAY.oid("pmtaQueueHigh")) == 1
        # One raise for the outage, by the first child; the second one carried it on.
        assert [o for o, _ in notes[outage:] if o == LAY.oid("pmtaApiLost")] == [
            LAY.oid("pmtaApiLost")]
    finally:
        stop_worker(loop_thread, worker)
        sim.stop()


def test_child_exits_when_the_parent_goes_away(sim: Simulator, loop_thread: LoopThread) -> None:
    cfg = Config(pmta=PmtaSection(url=sim.url, timeout=3), poll=PollSection(interval=1, jitter=0))
    worker, published, _ = make_worker(loop_thread, cfg)
    try:
        assert wait_until(lambda: len(published) >= 1)
        proc = worker._proc
        assert proc is not None
        # what the child sees when its parent dies: the control socket closes
        conn = worker._conn
        assert conn is not None
        async def detach() -> None:
            worker._detach()

        loop_thread.call(detach())  # detached before the socket closes, not a sleep later
        conn.close()
        assert proc.wait(10) is not None, "child kept running without its parent"
    finally:
        stop_worker(loop_thread, worker)


# --- a worker never sits there publishing nothing -------------------------------------------


def test_answers_that_broke_the_poll_thread_are_failed_polls_and_trees_keep_coming(
    sim: Simulator, loop_thread: LoopThread
) -> None:
    """A number 1e400 in /status used to end the child's poll thread for good: no tree after
    it, the last one saying "reachable" for ever. Now each such answer is a failed poll the
    child publishes, and the next good answer is served again."""
    with HostileApi(sim.url) as api:
        cfg = Config(pmta=PmtaSection(url=api.url, timeout=3),
                     poll=PollSection(interval=0.5, jitter=0))
        worker, published, _ = make_worker(loop_thread, cfg)
        try:
            # Waits are hang guards: a deep answer's poll takes a while on a loaded machine.
            assert wait_until(lambda: len(published) >= 1, 60), "no tree published"
            for mode in ("inf", "nan", "deep"):
                api.mode = mode
                n = len(published)
                assert wait_until(lambda n=n: len(published) >= n + 2, 60), f"{mode}: no tree after"
                assert value_of(worker.current(), "pmtaAgentApiReachable") == Value(
                    SnmpType.INTEGER, 2), mode
                error = value_of(worker.current(), "pmtaAgentLastError")
                assert error is not None and error.value, mode
                api.mode = "good"
                assert wait_until(lambda: value_of(worker.current(), "pmtaAgentApiReachable")
                                  == Value(SnmpType.INTEGER, 1), 60), f"{mode}: not back"
            assert worker.restarts == 0
        finally:
            stop_worker(loop_thread, worker)


class _Thread:
    """What `serve` watches of the poller: whether its thread runs, and what ended it."""

    def __init__(self, alive: bool, died: BaseException | None = None) -> None:
        self.alive = alive
        self.died = died


def test_a_child_whose_poll_thread_ended_exits_so_that_a_new_one_is_started() -> None:
    ours, theirs = socket.socketpair()
    parent, child = Connection(ours.detach()), Connection(theirs.detach())
    try:
        assert serve(child, _Thread(alive=False, died=SystemExit(3))) == 1
        # A planned exit (the poll thread told the parent why): a clean exit.
        leaving = PlannedExit()
        leaving.set("over its memory limit")
        assert serve(child, _Thread(alive=True), leaving) == 0
        assert not parent.poll(0)  # the main thread sends nothing: one sender only
        # The parent says stop: a clean exit.
        parent.send(("stop",))
        assert serve(child, _Thread(alive=True)) == 0
    finally:
        parent.close()
        child.close()


def gone_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "zombie" in fh.read()
    except FileNotFoundError:
        return True


def test_a_child_that_stopped_sending_trees_is_killed_and_replaced(
    sim: Simulator, loop_thread: LoopThread
) -> None:
    """SIGSTOP stands for a worker that hangs: the agent reads the stall (unreachable, the data
    age growing, pmtaApiLost), kills the worker after `stalled_restart` and the new one serves
    on (pmtaApiRestored)."""
    cfg = Config(pmta=PmtaSection(url=sim.url, timeout=1), poll=PollSection(interval=1, jitter=0))
    sent: list[Oid] = []

    async def send(trap_oid: Oid, _varbinds: list[tuple[Oid, Value]]) -> None:
        sent.append(trap_oid)

    backend = Backend(cfg, send, stalled_restart=10)
    assert backend.stale_after == 5  # two intervals and three API timeouts

    async def start() -> None:
        backend.start()

    loop_thread.call(start())
    stopped: int | None = None
    try:
        def reads(name: str) -> Value | None:
            return value_of(backend.current(), name)

        assert wait_until(lambda: reads("pmtaAgentApiReachable") == Value(SnmpType.INTEGER, 1))
        worker = backend.worker
        assert worker is not None and worker.pid is not None
        # Counted from here: a loaded machine may start the first poll late (lost, restored).
        lost, restored = LAY.oid("pmtaApiLost"), LAY.oid("pmtaApiRestored")
        assert wait_until(lambda: sent.count(lost) == sent.count(restored), 30)
        before = sent.count(lost)
        stopped = worker.pid
        os.kill(stopped, signal.SIGSTOP)
        assert wait_until(lambda: reads("pmtaAgentApiReachable") == Value(SnmpType.INTEGER, 2))
        age = reads("pmtaAgentDataAge")
        assert age is not None and isinstance(age.value, int) and age.value >= 5
        assert wait_until(lambda: sent.count(lost) == before + 1, 30)
        assert wait_until(lambda: worker.restarts == 1, 30), "the stalled worker was not replaced"
        assert worker.pid != stopped
        assert gone_or_zombie(stopped)
        assert wait_until(lambda: reads("pmtaAgentApiReachable") == Value(SnmpType.INTEGER, 1))
        assert wait_until(lambda: sent.count(restored) == before + 1, 30)
        assert sent.count(lost) == before + 1
    finally:
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        loop_thread.call(backend.stop())


def test_a_worker_over_its_memory_limit_is_replaced_and_carries_on(
    sim: Simulator, loop_thread: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    """Every worker is above a 1 MiB limit after a poll: each one leaves after its poll, says
    why, and the next one goes on from its counters and data (no error, no backoff)."""
    cfg = Config(pmta=PmtaSection(url=sim.url, timeout=3),
                 poll=PollSection(interval=0.5, jitter=0, worker_max_rss_mib=1))
    caplog.set_level(logging.WARNING, "pmta_snmp.worker")
    worker, published, _ = make_worker(loop_thread, cfg)
    try:
        assert wait_until(lambda: worker.restarts >= 3, 30), "no planned restarts"
        assert wait_until(lambda: len(published) >= 4)
        successes = value_of(worker.current(), "pmtaAgentPollSuccesses")
        assert successes is not None and isinstance(successes.value, int)
        assert successes.value >= 3  # counted on across the workers
        assert value_of(worker.current(), "pmtaAgentApiReachable") == Value(SnmpType.INTEGER, 1)
    finally:
        stop_worker(loop_thread, worker)
    text = caplog.text
    assert "restarting: its memory after a poll" in text and "worker_max_rss_mib" in text
    assert "poll worker gone" not in text  # not an error, and not backed off


def test_a_poll_thread_that_ended_is_replaced_and_counts_on(
    sim: Simulator, loop_thread: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`isolation = "thread"`: nothing a poll raises ends the poll thread, but should it end
    anyway (here: SystemExit from inside a poll), the agent starts a new one, which goes on
    from the old one's counters."""
    from pmta_snmp.api import parse

    real = parse.parse_status
    polls = [0]

    def parse_status(data: object, **kw: object) -> object:
        polls[0] += 1
        if polls[0] == 3:
            raise SystemExit("the poll thread ends here")
        return real(data, **kw)

    monkeypatch.setattr(parse, "parse_status", parse_status)
    cfg = Config(pmta=PmtaSection(url=sim.url, timeout=2),
                 poll=PollSection(interval=0.3, jitter=0, isolation="thread"))

    async def send(_trap_oid: Oid, _varbinds: list[tuple[Oid, Value]]) -> None:
        pass

    backend = Backend(cfg, send)

    async def start() -> None:
        backend.start()

    loop_thread.call(start())
    try:
        first = backend.poller
        assert wait_until(lambda: backend.poller is not first), "the dead thread was not replaced"
        assert first is not None and not first.alive and isinstance(first.died, SystemExit)

        def successes() -> int:
            got = value_of(backend.current(), "pmtaAgentPollSuccesses")
            return got.value if got is not None and isinstance(got.value, int) else 0

        assert wait_until(lambda: successes() >= 4), "no polls after the replacement"
        assert value_of(backend.current(), "pmtaAgentApiReachable") == Value(SnmpType.INTEGER, 1)
    finally:
        loop_thread.call(backend.stop())
