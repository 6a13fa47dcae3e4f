"""Every check_pmta_* plugin against the simulator's scenarios (API, accounting, main log)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pmta_snmp.checks import bounce, deferral, license, log, queue, tls

from pmta_snmp.sim import Simulator
from tests.integration.test_checks_support import Outcome, run_main, run_subprocess

KEY = "k" * 32
Factory = Callable[..., Simulator]


@pytest.fixture
def sim_factory(tmp_path: Path) -> Iterator[Factory]:
    """Start simulators (frozen clock, files under tmp_path); all stopped at teardown."""
    sims: list[Simulator] = []

    def make(scenario: str, *, hours_back: float = 1.0, **kw: object) -> Simulator:
        base = tmp_path / f"sim{len(sims)}"
        sim = Simulator(
            scenario, speed=0, api_key=KEY, acct_dir=base, log_path=base / "log",
            start_time=datetime.now().astimezone() - timedelta(hours=hours_back),
            **kw,  # type: ignore[arg-type]
        )
        sims.append(sim)
        return sim.start()

    try:
        yield make
    finally:
        for sim in sims:
            sim.stop()


def plugin(capsys: pytest.CaptureFixture[str], main: Callable[[Sequence[str] | None], int],
           tmp_path: Path, *argv: str) -> Outcome:
    return run_main(main, [*argv, "--state-dir", str(tmp_path / "state")], capsys)


def acct_of(sim: Simulator) -> str:
    acct = sim._acct  # the writer knows where it writes
    assert acct is not None
    return str(acct.path)


def log_of(sim: Simulator) -> str:
    writer = sim._log
    assert writer is not None
    return str(writer.path)


def every_log_of(sim: Simulator) -> list[str]:
    """`-l` options for the simulated log and its rotations, oldest first: like PowerMTA, the
    simulator rotates its log at midnight, and a test whose simulated hours cross it (the
    simulated start is an hour back) finds the earlier lines in log.1 (a run between 00:20 and
    01:00 failed reading the live log alone)."""
    live = Path(log_of(sim))
    rotated = sorted(live.parent.glob(live.name + ".[0-9]*"), key=lambda p: -int(p.suffix[1:]))
    files = [*rotated, live]
    return [arg for f in files for arg in ("-l", str(f))]


def test_healthy_everything_ok(sim_factory: Factory, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    sim = sim_factory("healthy", hours_back=0.5)
    sim.advance(1800)  # all records inside the one-hour window
    out = plugin(capsys, queue.main, tmp_path, "--url", sim.url)
    assert out.code == 0 and out.line.startswith("PMTA QUEUE OK - ")
    truth = sim.snapshot().status.queued_recipients
    assert out.value("rcpt") == str(truth)
    for main, name in ((bounce.main, "BOUNCE"), (deferral.main, "DEFERRAL")):
        out = plugin(capsys, main, tmp_path, "--acct-file", acct_of(sim), "--from-start")
        assert out.code == 0, out.line
        assert out.line.startswith(f"PMTA {name} OK - ")
    counts = sim.counts()["written"]
    out = plugin(capsys, bounce.main, tmp_path, "--acct-file", acct_of(sim))
    assert out.value("attempts") == str(counts["d"] + counts["b"])  # the window, from state
    out = plugin(capsys, tls.main, tmp_path, "--acct-file", acct_of(sim), "-l", log_of(sim),
                 "--from-start")
    assert out.code == 0 and out.value("cleartext") == "0"
    out = plugin(capsys, license.main, tmp_path, "--url", sim.url, "--api-key-file",
                 str(_key(tmp_path)))
    assert out.code == 0 and out.line.startswith("PMTA LICENSE OK - license expires in ")


def _key(tmp_path: Path) -> Path:
    path = tmp_path / "api.key"
    path.write_text(KEY + "\n")
    return path


def test_bounce_storm_is_critical_and_names_the_sender(
        sim_factory: Factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sim = sim_factory("bounce-storm")
    sim.advance(3600)
    out = plugin(capsys, bounce.main, tmp_path, "--acct-file", acct_of(sim), "--from-start")
    assert out.code == 2
    storm = sim.state.vmta_infos["vmta-d"]
    assert f"sender domain {storm.sending_domain} hard-bounce rate" in out.line
    assert "top hard-bounce reasons:" in out.line
    out = plugin(capsys, bounce.main, tmp_path, "--acct-file", acct_of(sim), "--by", "vmta")
    assert out.code == 2 and "VirtualMTA vmta-d hard-bounce rate" in out.line
    disc = json.loads(plugin(capsys, bounce.main, tmp_path, "--acct-file", acct_of(sim),
                             "--discover", "sources").out)
    assert {"{#SOURCEIP}": storm.source_ip} in disc


def test_tls_failures(sim_factory: Factory, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    sim = sim_factory("tls-failures")
    sim.advance(10)  # PowerMTA has created its files
    out = plugin(capsys, tls.main, tmp_path, "--acct-file", acct_of(sim), "-l", log_of(sim))
    assert out.code == 0  # first run: both sources start at their end
    sim.advance(3600)
    out = plugin(capsys, tls.main, tmp_path, "--acct-file", acct_of(sim), "-l", log_of(sim))
    assert out.code == 2
    assert "domain example.net cleartext rate (STARTTLS offered) 100.0%" in out.line
    assert int(out.value("handshake_failures")) > 10
    assert "below TLSv1.2" in out.out
    out = plugin(capsys, log.main, tmp_path, "-l", log_of(sim), "--from-start",
                 "--no-default-patterns", "--warning-pattern", "TLS handshake failed")
    assert out.code == 1


def test_stuck_and_backlog_queues(sim_factory: Factory, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_800_000_000.0]
    monkeypatch.setattr(queue, "clock", lambda: now[0])
    stuck = sim_factory("stuck")
    backlog = sim_factory("backlog")
    outs = {}
    for _ in range(4):
        for name, sim in (("stuck", stuck), ("backlog", backlog)):
            outs[name] = plugin(capsys, queue.main, tmp_path / name, "--url", sim.url,
                                "--stuck-minutes", "30")
            sim.advance(600)
        now[0] += 600
    assert outs["stuck"].code == 1
    assert ("queue example.org/vmta-c stuck at 1,234 rcpt (no delivery progress for 30 min, "
            "4 runs: no connections, in backoff") in outs["stuck"].line
    # The growing backlog queue has no connections either (PowerMTA backed off): it counts as
    # stuck, but its growth is not yet above 30 minutes (30 exactly).
    assert outs["backlog"].code == 1
    assert "queue yahoo.com/vmta-b stuck at" in outs["backlog"].line
    assert "growing for" not in outs["backlog"].line
    now[0] -= 540  # the next run 31 minutes after the first
    out = plugin(capsys, queue.main, tmp_path / "backlog", "--url", backlog.url,
                 "--stuck-minutes", "0")
    assert out.code == 1
    assert "deferred (backoff) recipients growing for 31 min (from " in out.line
    # The stuck queue's log says so too.
    out = plugin(capsys, log.main, tmp_path, *every_log_of(stuck), "--from-start")
    assert out.code == 2 and "are now disabled" in out.line


def test_paused_queue_in_the_simulator(sim_factory: Factory, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    sim = sim_factory("healthy")
    assert sim.pause("gmail.com/vmta-a") == 1
    out = plugin(capsys, queue.main, tmp_path, "--url", sim.url, "--domain", "gmail.com")
    assert out.code == 1 and "queue gmail.com/vmta-a paused" in out.line


@pytest.mark.parametrize(("scenario", "code", "text"), [
    ("license-expiring", 2, "license expires in 5 days"),
    ("license-expired", 2, "license EXPIRED on"),
    ("license-never", 0, "license never expires"),
])
def test_license_scenarios(sim_factory: Factory, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str], scenario: str, code: int,
                           text: str) -> None:
    # The simulated license expires 5 days after the simulated start's date: a start an hour
    # back is yesterday during the first hour after midnight (4 days left then).
    sim = sim_factory(scenario, hours_back=0)
    out = plugin(capsys, license.main, tmp_path, "--url", sim.url, "--api-key-file",
                 str(_key(tmp_path)))
    assert out.code == code and text in out.line


def test_license_needs_the_api_key(sim_factory: Factory, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    sim = sim_factory("license-never", allow=())
    out = plugin(capsys, license.main, tmp_path, "--url", sim.url)
    assert out.code == 3 and "http-access" in out.line


@pytest.mark.parametrize(("scenario", "text"), [
    ("api-down", "cannot connect to PowerMTA"),
    ("api-500", "/status answered HTTP 500"),
    ("api-malformed", "unparsable"),
])
def test_api_faults_are_unknown(sim_factory: Factory, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str], scenario: str,
                                text: str) -> None:
    sim = sim_factory(scenario)
    out = plugin(capsys, queue.main, tmp_path, "--url", sim.url)
    assert out.code == 3 and text in out.line
    assert len(out.out.splitlines()) == 1
    out = plugin(capsys, queue.main, tmp_path, "--url", sim.url, "--output", "zabbix")
    assert out.code == 0 and out.out.startswith("ZBX_NOTSUPPORTED: ") and out.err == ""


def test_slow_api_times_out_naming_the_stage(sim_factory: Factory, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    sim = sim_factory("api-slow", slow_delay=3.0)
    out = plugin(capsys, queue.main, tmp_path, "--url", sim.url, "-t", "0.5")
    assert out.code == 3
    assert out.line == (f"PMTA QUEUE UNKNOWN - timed out after 0.5 s while querying PowerMTA "
                        f"/status at {sim.url}")


def test_log_rotation_while_the_plugin_runs(sim_factory: Factory, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Rotations between runs: every line written is counted exactly once."""
    sim = sim_factory("stuck")
    path = log_of(sim)
    sim.advance(60)
    argv = ("-l", path, "-w", "~:", "-c", "~:", "--no-default-patterns",
            "--warning-pattern", ".")  # every line is a match: counts = lines
    plugin(capsys, log.main, tmp_path, *argv)
    counted = 0
    for step in range(6):
        before = sim._log.lines_written if sim._log else 0
        sim.advance(300)
        if step % 2 == 0:
            sim.rotate_log()
        sim.advance(120)
        written = (sim._log.lines_written if sim._log else 0) - before
        out = plugin(capsys, log.main, tmp_path, *argv)
        assert out.code == 0
        got = int(out.value("warning_lines"))
        assert got == written, (step, got, written)
        counted += got
    assert counted > 0


def test_accounting_rotation_while_the_plugin_runs(sim_factory: Factory, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    sim = sim_factory("healthy", hours_back=0.5)
    acct = acct_of(sim)
    sim.advance(10)
    before = sim.counts()["written"]
    # First run: reads back the window (the half hour written so far).
    out = plugin(capsys, bounce.main, tmp_path, "--acct-file", acct)
    assert out.value("attempts") == str(before["d"] + before["b"])
    sim.advance(600)
    sim.rotate_acct()
    sim.advance(600)
    out = plugin(capsys, bounce.main, tmp_path, "--acct-file", acct)
    written = sim.counts()["written"]
    new = written["d"] + written["b"] - before["d"] - before["b"]
    assert new > 1000 and out.value("attempts") == str(written["d"] + written["b"])


@pytest.mark.parametrize("layout", ["4.0", "4.5", "5.5"])
def test_simulated_layouts(sim_factory: Factory, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str], layout: str) -> None:
    sim = sim_factory("bounce-storm", acct_layout=layout, hours_back=0.5)
    sim.advance(1800)
    out = plugin(capsys, bounce.main, tmp_path, "--acct-file", acct_of(sim), "--from-start")
    written = sim.counts()["written"]
    assert out.code == 2
    assert out.value("attempts") == str(written["d"] + written["b"])


def test_subprocess_against_the_simulator(sim_factory: Factory, tmp_path: Path) -> None:
    sim = sim_factory("backlog")
    env = dict(os.environ, PMTA_SNMP_STATE_DIR=str(tmp_path / "st"))
    out = run_subprocess("queue", ["--url", sim.url, "-w", "1000", "-c", "100000"], env=env)
    assert out.code == 1, out
    assert out.line.startswith("PMTA QUEUE WARNING - ")
    assert "(warning above 1,000)" in out.line and out.err == ""


@pytest.mark.parametrize("name", ["queue", "license", "bounce", "deferral", "log", "tls"])
def test_version_as_a_process(name: str) -> None:
    """-V as the plugin guidelines ask: the name and version on stdout, exit 0."""
    from pmta_snmp import __version__

    out = run_subprocess(name, ["-V"])
    assert (out.code, out.out, out.err) == (0, f"check_pmta_{name} (pmta-snmp) {__version__}\n", "")
