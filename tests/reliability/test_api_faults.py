"""PowerMTA API faults seen by the AgentX agent and by the plugins.

Faults: the API down (connection refused), slow (answers after the poll timeout), HTTP 500,
truncated JSON, a wrong envelope, an envelope without `status`, binary garbage, connections
reset without an answer, and PowerMTA killed in the middle of an answer (a proxy that forwards
half a response and resets). For each:

* the agent keeps serving the last good data (the simulator moves on meanwhile, the served
  values do not), says so in its health objects (reachable false, data age, failures, last
  error), sends pmtaApiLost once (not once per failed poll) and pmtaApiRestored once;
* check_pmta_queue and check_pmta_license exit 3 (UNKNOWN) with one clear line, no traceback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import pytest

from pmta_snmp.agent import run_agentx
from pmta_snmp.api import ClientConfig
from pmta_snmp.config import AgentXSection, Config, PmtaSection, PollSection, Thresholds
from pmta_snmp.mib.layout import layout
from pmta_snmp.netsnmp import LoopThread, SnmpClientError, SnmpdMaster, TrapReceiver
from pmta_snmp.poller import Poller, PollResult
from pmta_snmp.sim import Simulator
from tests.reliability._hostile import MODES, HostileApi
from tests.reliability._support import (
    CutProxy,
    assert_one_clean_unknown_line,
    run_plugin,
    wait_until,
)

LAY = layout()

# (fault, variant, the text the error must contain)
FAULTS: list[tuple[str, str | None, str]] = [
    ("down", None, "cannot connect"),
    ("slow", None, "timed out"),
    ("500", None, "HTTP 500"),
    ("malformed", "truncated", "unparsable JSON"),
    ("malformed", "envelope", "envelope"),
    ("malformed", "nosucc", "envelope"),
    ("malformed", "garbage", "neither XML nor JSON"),
    ("reset", None, "closed the connection"),
    ("cut", None, "closed the connection"),
]
FAULT_IDS = [f"{f}-{v}" if v else f for f, v, _ in FAULTS]
SLOW_DELAY = 30.0  # seconds; far beyond the agent's poll timeout (3 s) and the plugins' (1 s)
AGENT_API_TIMEOUT = 3.0  # generous: a loaded machine must not fail a good poll


def dotted(oid: tuple[int, ...]) -> str:
    return ".".join(map(str, oid))


@dataclass
class Env:
    sim: Simulator
    proxy: CutProxy

    def set_fault(self, fault: str, variant: str | None) -> None:
        if fault == "cut":
            self.proxy.cut = True
            return
        self.proxy.cut = False
        self.sim.set_fault(fault, delay=SLOW_DELAY, variant=variant)

    def clear(self) -> None:
        self.proxy.cut = False
        self.sim.set_fault("none")


@pytest.fixture
def env() -> Iterator[Env]:
    sim = Simulator(scenario="healthy", seed=11, speed=0, domains=40, vmtas=3).start()
    proxy = CutProxy(sim.port)
    try:
        yield Env(sim, proxy)
    finally:
        proxy.stop()
        sim.stop()


# --- the agent ---------------------------------------------------------------------------


class Agent:
    def __init__(self, master: SnmpdMaster) -> None:
        self.master = master

    def get(self, name: str) -> str:
        try:
            got = self.master.get(dotted(LAY.instance(name)), timeout=1, retries=1)
        except SnmpClientError:
            return "?"
        if not got:
            return "?"
        if got[0].type == "Hex-STRING":  # net-snmp shows non-ASCII UTF-8 text in hex
            return bytes.fromhex(got[0].value).decode("utf-8", "replace")
        return got[0].value

    def number(self, name: str) -> int:
        return int(self.get(name).split()[0])

    def shows(self, name: str, value: str) -> Callable[[], bool]:
        return lambda: self.get(name) == value

    def reaches(self, name: str, value: int) -> Callable[[], bool]:
        return lambda: self.number(name) >= value


def traps_of(receiver: TrapReceiver, name: str) -> int:
    oid = dotted(LAY.oid(name))
    return sum(1 for t in receiver.traps() if any(vb.value.endswith(oid) for vb in t))


def has_traps(receiver: TrapReceiver, name: str, count: int) -> bool:
    return traps_of(receiver, name) == count


@pytest.mark.snmpd
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_agent_serves_last_good_data_and_notifies_once_per_fault(
    env: Env,
    snmpd_factory: Callable[..., SnmpdMaster],
    trap_receiver: TrapReceiver,
    loop_thread: LoopThread,
) -> None:
    master = snmpd_factory(trap_port=trap_receiver.port, agentx_timeout=2)
    cfg = Config(
        pmta=PmtaSection(url=env.proxy.url, timeout=AGENT_API_TIMEOUT),
        poll=PollSection(interval=0.5, jitter=0),
        agentx=AgentXSection(socket=master.agentx_address, ping_interval=5),
        thresholds=Thresholds(
            queue_rcpt_raise=10**9, queue_rcpt_clear=10**9 - 1, api_failures_raise=1
        ),
    )
    agent = Agent(master)
    stop = asyncio.Event()
    fut = asyncio.run_coroutine_threadsafe(run_agentx(cfg, stop=stop), loop_thread.loop)
    timings: dict[str, tuple[float, float]] = {}
    try:
        assert wait_until(lambda: agent.get("pmtaAgentApiReachable") == "1", 60)
        # Waits are hang guards, generous for a loaded machine; the counts are what is judged.
        for fault, variant, text in FAULTS:
            name = f"{fault}-{variant}" if variant else fault
            truth = env.sim.snapshot().status.traffic.total.outbound.msg
            assert wait_until(agent.shows("pmtaTotalMessagesOut", str(truth)), 30)
            # every earlier loss was followed by its recovery
            assert wait_until(lambda: traps_of(trap_receiver, "pmtaApiLost") == traps_of(
                trap_receiver, "pmtaApiRestored"), 30), name
            lost0 = restored0 = traps_of(trap_receiver, "pmtaApiRestored")
            t0 = time.monotonic()
            env.set_fault(fault, variant)
            assert wait_until(lambda: agent.get("pmtaAgentApiReachable") == "2", 30), name
            lost_after = time.monotonic() - t0
            # PowerMTA moves on while the agent cannot see it.
            env.sim.advance(300)
            moved = env.sim.snapshot().status.traffic.total.outbound.msg
            assert moved != truth
            failures = agent.number("pmtaAgentPollFailures")
            assert wait_until(agent.reaches("pmtaAgentPollFailures", failures + 2), 30), name
            # The last good data is served, and the health objects say how old it is.
            assert agent.get("pmtaTotalMessagesOut") == str(truth), name
            assert agent.number("pmtaAgentDataAge") >= 1, name
            assert agent.number("pmtaAgentConsecutiveFailures") >= 2, name
            error = agent.get("pmtaAgentLastError")
            # Through the proxy a refused upstream is a reset client connection.
            alt = "closed the connection" if fault == "down" else text
            assert text in error or alt in error, (name, error)
            assert trap_receiver.wait_for(lambda vbs: any(
                vb.value.endswith(dotted(LAY.oid("pmtaApiLost"))) for vb in vbs), 30)
            # once for the fault, not once per failed poll
            assert traps_of(trap_receiver, "pmtaApiLost") == lost0 + 1, name
            assert traps_of(trap_receiver, "pmtaApiRestored") == restored0, name
            t1 = time.monotonic()
            env.clear()
            assert wait_until(lambda: agent.get("pmtaAgentApiReachable") == "1", 30), name
            assert wait_until(agent.shows("pmtaTotalMessagesOut", str(moved)), 30)
            assert wait_until(partial(has_traps, trap_receiver, "pmtaApiRestored", lost0 + 1),
                              30), name
            timings[name] = (lost_after, time.monotonic() - t1)
            assert agent.number("pmtaAgentConsecutiveFailures") == 0
        # Good polls after the last fault add no notification.
        polls = agent.number("pmtaAgentPollSuccesses")
        assert wait_until(agent.reaches("pmtaAgentPollSuccesses", polls + 2), 30)
        assert traps_of(trap_receiver, "pmtaApiLost") == traps_of(
            trap_receiver, "pmtaApiRestored") >= len(FAULTS)
        assert env.proxy.cuts > 0
        print("\nfault: (seconds to pmtaAgentApiReachable=false, to restored)")
        for name, (lost, back) in timings.items():
            print(f"  {name:20} {lost:5.2f} {back:5.2f}")
    finally:
        loop_thread.call_soon(stop.set)
        fut.result(20)


# --- the plugins -------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "variant", "text"), FAULTS, ids=FAULT_IDS)
def test_plugins_exit_unknown_with_one_clear_line(
    env: Env, tmp_path: pytest.TempPathFactory, fault: str, variant: str | None, text: str
) -> None:
    url = env.proxy.url if fault == "cut" else env.sim.url
    state = ["--state-dir", str(tmp_path)]
    ok = run_plugin("queue", ["--url", url, *state])
    assert ok.code == 0, ok.out
    env.set_fault(fault, variant)
    try:
        for module, extra in (("queue", state), ("license", [])):
            out = run_plugin(module, ["--url", url, "--api-timeout", "1", *extra])
            assert_one_clean_unknown_line(out, f"{module} {fault}")
            assert text in out.line, out.line
            assert out.seconds < SLOW_DELAY, (module, out.seconds)  # did not wait for it
    finally:
        env.clear()
    assert run_plugin("license", ["--url", url]).code == 0


def test_plugin_timeout_names_the_stage_on_a_slow_api(env: Env) -> None:
    """-t 1 against an API slower than that: UNKNOWN naming the stage, without waiting for
    the answer."""
    env.sim.set_fault("slow", delay=SLOW_DELAY)
    try:
        out = run_plugin("queue", ["--url", env.sim.url, "-t", "1", "--state-dir", "/dev/null/x"])
    finally:
        env.clear()
    assert_one_clean_unknown_line(out, "slow -t 1")
    assert "timed out after 1 s while querying PowerMTA /status" in out.line, out.line
    assert out.seconds < SLOW_DELAY, out.seconds  # cut by -t 1, not by the answer


# --- the poller against answers no PowerMTA should send --------------------------------------

HOSTILE_MODES = [m for m in MODES if m != "good"]


class Polls:
    """A Poller in this process, its results as they come."""

    def __init__(self, url: str, **config: object) -> None:
        self.results: list[PollResult] = []
        self.poller = Poller(ClientConfig(url=url, timeout=2.0, **config),  # type: ignore[arg-type]
                             interval=0.2, jitter=0, on_result=self.results.append)

    def next_result(self, timeout: float = 20) -> PollResult:
        """The result of a poll that started after this call."""
        n = len(self.results)
        assert wait_until(lambda: len(self.results) >= n + 2, timeout), (
            f"no poll result in {timeout}s: the polling ended")
        return self.results[-1]


@pytest.fixture
def hostile(env: Env) -> Iterator[HostileApi]:
    with HostileApi(env.sim.url, huge_bytes=3 << 20, bomb_bytes=32 << 20) as api:
        yield api


@pytest.mark.timeout(180)
def test_the_poller_survives_every_hostile_answer_and_recovers(hostile: HostileApi) -> None:
    """1e400, NaN, deep nesting, oversized and compressed-bomb answers, garbage, redirects
    elsewhere: each is one more failed poll whose reason is in last_error, the last good data
    stays, and the next good answer is a good poll again. None of them ends the polling."""
    polls = Polls(hostile.url, max_page_bytes=1 << 20, max_poll_bytes=2 << 20)
    polls.poller.start()
    try:
        good = polls.next_result()
        assert good.api_reachable and good.snapshot is not None
        for mode in HOSTILE_MODES:
            hostile.mode = mode
            bad = polls.next_result()
            assert not bad.api_reachable, mode
            assert bad.last_error, mode
            assert bad.snapshot is not None, mode  # the last good data stays
            assert bad.consecutive_failures >= 1, mode
            hostile.mode = "good"
            back = polls.next_result()
            assert back.api_reachable, (mode, back.last_error)
            assert back.successes > bad.successes, mode
            assert polls.poller.alive, mode
    finally:
        polls.poller.stop()
    assert hostile.elsewhere.seen == []  # the redirect to another port was not followed


@pytest.mark.parametrize(
    "failure",
    [RuntimeError("a bug"), KeyError("rcp"), RecursionError("too deep"),
     OverflowError("cannot convert float infinity to integer"), MemoryError()],
    ids=lambda e: type(e).__name__,
)
def test_any_exception_in_a_poll_is_a_failed_poll(
    env: Env, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    """Whatever the parser (or anything else in a poll) raises: a failed poll that says what
    happened, and polling goes on."""
    from pmta_snmp.api import parse

    real = parse.parse_status
    broken = [True]

    def parse_status(data: object, **kw: object) -> object:
        if broken[0]:
            raise failure
        return real(data, **kw)

    monkeypatch.setattr(parse, "parse_status", parse_status)
    polls = Polls(env.sim.url)
    polls.poller.start()
    try:
        bad = polls.next_result()
        assert not bad.api_reachable and bad.failures >= 1
        assert bad.last_error is not None and type(failure).__name__ in bad.last_error
        if str(failure):
            assert str(failure).strip("'") in bad.last_error
        broken[0] = False
        good = polls.next_result()
        assert good.api_reachable and good.snapshot is not None
        assert good.failures >= bad.failures and good.consecutive_failures == 0
    finally:
        polls.poller.stop()
