"""Security properties, tested on the real commands as child processes.

* The API key never appears in logs, error messages, plugin output or `ps` (argv): given in a
  file and in PMTA_API_KEY, with the simulator requiring it, healthy and under faults, at the
  highest verbosity. (/proc/PID/environ legitimately holds PMTA_API_KEY when given that way.)
* A wrong key is refused with a hint, and the refusal does not echo the key sent.
* Plugin state files are 0600 in a 0700 directory.
* The standalone agent refuses the default community on a non-loopback address unless told.
* TLS verification is on by default: an HTTPS PowerMTA with an unknown certificate fails with a
  clear message; --ca-file or --insecure make it work.
* Read-only: an SNMP SET through snmpd to our subtree is refused; the API client sends no
  command but `show …`.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pmta_snmp.api import ClientConfig, PmtaClient, PmtaError
from pmta_snmp.mib.layout import layout
from pmta_snmp.netsnmp import SnmpdMaster, free_udp_port, missing_netsnmp_tools, udp_port_bound
from pmta_snmp.sim import Simulator
from tests.conftest import missing_requirement
from tests.reliability._support import (
    PYTHON,
    REPO,
    Background,
    agent_env,
    assert_one_clean_unknown_line,
    cmdline,
    run_child,
    run_plugin,
    wait_until,
)

LAY = layout()
FAULTS: list[tuple[str, str | None]] = [
    ("500", None), ("malformed", "truncated"), ("malformed", "garbage"), ("reset", None),
    ("slow", None),
]
AGENT_FAULTS = [("500", None), ("malformed", "garbage"), ("reset", None)]
UNREACHABLE = "PowerMTA API unreachable"  # the poller's log line on a failed poll
REACHABLE = "PowerMTA API reachable at"  # ... and when the API answers again


def new_key() -> str:
    return "PmtaKey_" + secrets.token_hex(20)  # 48 characters of [A-Za-z0-9_]


@pytest.fixture
def key() -> str:
    return new_key()


@pytest.fixture
def keyed_sim(key: str) -> Iterator[Simulator]:
    sim = Simulator(scenario="healthy", seed=5, speed=0, domains=20, vmtas=2, api_key=key,
                    slow_delay=3.0).start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def key_file(tmp_path: Path, key: str) -> Path:
    path = tmp_path / "api-key"
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


def assert_no_key(key: str, *texts: str) -> None:
    for text in texts:
        assert key not in text, f"API key leaked: ...{text[max(0, text.find(key) - 200):][:400]}"
        # Not even a large part of it (a truncated excerpt, a header dump).
        assert key[8:32] not in text


@pytest.mark.parametrize("via", ["file", "env"])
@pytest.mark.timeout(90)
def test_agent_never_shows_the_api_key(
    keyed_sim: Simulator, key: str, key_file: Path, tmp_path: Path, via: str
) -> None:
    args = ["--api-key-file", str(key_file)] if via == "file" else []
    env = agent_env(**({"PMTA_API_KEY": key} if via == "env" else {}),
                    PMTA_SNMP_PMTA_TIMEOUT="5", PMTA_SNMP_POLL_LICENSE_INTERVAL="1")
    agent = Background(
        [PYTHON, "-m", "pmta_snmp", "agentx", "-vv", "--url", keyed_sim.url, "--interval", "1",
         "--agentx-socket", str(tmp_path / "no-master"), *args],
        tmp_path / "agent.log", env=env,
    )
    try:
        assert wait_until(lambda: "PowerMTA API reachable" in agent.log_text(), 15), \
            agent.log_text()
        argv = cmdline(agent.pid)
        ps = (subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(agent.pid)],
                             capture_output=True, text=True, check=False).stdout
              if shutil.which("ps") else "")  # /proc/PID/cmdline above is what ps shows
        # Each fault until its failed poll is logged with the error text, then back until the
        # recovery is logged (counted, not slept for: a slow machine polls later, not less).
        # Counts relative to each fault's start: a poll timed out by load is one more pair.
        for fault, variant in AGENT_FAULTS:
            lost, back = agent.log_text().count(UNREACHABLE), agent.log_text().count(REACHABLE)
            keyed_sim.set_fault(fault, variant=variant)
            assert wait_until(lambda n=lost: agent.log_text().count(UNREACHABLE) > n, 60), \
                agent.log_text()
            keyed_sim.set_fault("none")
            assert wait_until(lambda n=back: agent.log_text().count(REACHABLE) > n, 60), \
                agent.log_text()
        environ = Path(f"/proc/{agent.pid}/environ").read_bytes()
    finally:
        agent.stop()
    log = agent.log_text()
    assert_no_key(key, log, " ".join(argv), ps)
    assert (key.encode() in environ) == (via == "env")  # the only place it may be


@pytest.mark.parametrize("via", ["file", "env"])
def test_poll_and_plugins_never_show_the_api_key(
    keyed_sim: Simulator, key: str, key_file: Path, tmp_path: Path, via: str
) -> None:
    args = ["--api-key-file", str(key_file)] if via == "file" else []
    env = agent_env(**({"PMTA_API_KEY": key} if via == "env" else {}))
    runs = []

    def everything() -> None:
        runs.append(run_child([PYTHON, "-m", "pmta_snmp", "poll", "--license", "--json",
                               "--url", keyed_sim.url, "--api-timeout", "1", *args], env=env))
        runs.append(run_plugin("license", ["--url", keyed_sim.url, "-vvv", "--api-timeout",
                                           "1", *args], env=env))
        runs.append(run_plugin("queue", ["--url", keyed_sim.url, "-vvv", "--api-timeout", "1",
                                         "--state-dir", str(tmp_path / "st"), *args], env=env))

    everything()
    assert [r.code for r in runs] == [0, 0, 0], [r.out + r.err for r in runs]
    assert '"expires"' in runs[0].out  # `show license` went through, with the key
    for fault, variant in FAULTS:
        keyed_sim.set_fault(fault, variant=variant)
        try:
            everything()
        finally:
            keyed_sim.set_fault("none")
    failed = runs[3:]
    assert all(r.code != 0 for r in failed), [r.out for r in failed]
    assert any("Traceback" in r.err for r in failed)  # -vvv: tracebacks, checked too
    for r in runs:
        assert_no_key(key, r.out, r.err)


def test_wrong_api_key_is_refused_without_echoing_it(keyed_sim: Simulator,
                                                     tmp_path: Path) -> None:
    wrong = new_key()
    path = tmp_path / "wrong-key"
    path.write_text(wrong)
    out = run_plugin("license", ["--url", keyed_sim.url, "--api-key-file", str(path), "-vvv"])
    assert out.code == 3 and "refused" in out.line and "api-key" in out.line.lower(), out.out
    poll = run_child([PYTHON, "-m", "pmta_snmp", "poll", "--license", "--url", keyed_sim.url,
                      "--api-key-file", str(path)])
    assert_no_key(wrong, out.out, out.err, poll.out, poll.err)


@pytest.mark.parametrize("form", ["separate", "equals"])
def test_key_on_the_command_line_is_refused_without_echoing_it(
    keyed_sim: Simulator, key: str, form: str
) -> None:
    """No option takes the key itself. `--api-key KEY` is refused with a usage error that does
    not repeat KEY (argparse would otherwise read it as an abbreviation of --api-key-file and
    print the key as a file name, into the monitoring history)."""
    arg = ["--api-key", key] if form == "separate" else [f"--api-key={key}"]
    out = run_plugin("license", ["--url", keyed_sim.url, *arg])
    assert out.code == 3 and "usage: --api-key is not accepted" in out.line, out.out
    assert "PMTA_API_KEY" in out.line and len(out.out.splitlines()) == 1
    for command in ("poll", "agentx", "agent"):
        cli = run_child([PYTHON, "-m", "pmta_snmp", command, "--url", keyed_sim.url, *arg])
        assert cli.code == 2 and "--api-key is not accepted" in cli.err, cli.err
        assert_no_key(key, cli.out, cli.err)
    assert_no_key(key, out.out, out.err)


# --- state files ---------------------------------------------------------------------------


def test_state_files_are_private(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("2025-01-14 09:13:30 starting\n")
    state_dir = tmp_path / "var" / "lib" / "pmta-snmp"  # does not exist yet
    old = os.umask(0o022)  # a typical permissive umask: the plugin must not rely on it
    try:
        out = run_plugin("log", ["-l", str(log), "--state-dir", str(state_dir)])
        env_dir = tmp_path / "from-env"
        out2 = run_plugin("log", ["-l", str(log)],
                          env=agent_env(PMTA_SNMP_STATE_DIR=str(env_dir)))
    finally:
        os.umask(old)
    assert out.code == 0 and out2.code == 0, out.out + out2.out
    for directory in (state_dir, env_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        files = list(directory.iterdir())
        assert files, directory
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, (f, oct(f.stat().st_mode))


# --- standalone agent: default community -----------------------------------------------------


@pytest.mark.parametrize("listen", ["udp:0.0.0.0:{port}", "udp6:[::]:{port}",
                                    "udp:192.0.2.10:{port}"])
def test_standalone_refuses_public_community_off_loopback(listen: str) -> None:
    port = free_udp_port()
    out = run_child([PYTHON, "-m", "pmta_snmp", "agent", "--listen", listen.format(port=port),
                     "--url", "http://127.0.0.1:9"], timeout=20)
    assert out.code == 2, out.out + out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "refusing to serve the default community" in lines[0], out.err
    assert "allow_public_community" in lines[0] and "community_file" in lines[0]
    assert not udp_port_bound(port)


def test_standalone_accepts_off_loopback_only_when_told(tmp_path: Path) -> None:
    from pmta_snmp.config import ConfigError, SnmpSection
    from pmta_snmp.standalone import StandaloneAgent

    def tree() -> object:
        raise AssertionError("not served in this test")

    with pytest.raises(ConfigError, match="allow_public_community"):
        StandaloneAgent(tree, SnmpSection(listen="udp:0.0.0.0:0"))  # type: ignore[arg-type]
    # Told so: accepted (constructed only; nothing is bound off loopback by this test).
    StandaloneAgent(tree, SnmpSection(listen="udp:0.0.0.0:0",  # type: ignore[arg-type]
                                      allow_public_community=True))
    secret = tmp_path / "community"
    secret.write_text("n0t-public-" + secrets.token_hex(8))
    StandaloneAgent(tree, SnmpSection(listen="udp:0.0.0.0:0",  # type: ignore[arg-type]
                                      community_file=str(secret)))
    # On loopback the default stays usable for a local test setup.
    StandaloneAgent(tree, SnmpSection(listen="udp:127.0.0.1:0"))  # type: ignore[arg-type]


# --- TLS -------------------------------------------------------------------------------------


@pytest.fixture
def https_sim(tmp_path: Path) -> Iterator[tuple[Simulator, Path]]:
    cert = tmp_path / "webmon.pem"
    sim = Simulator(scenario="healthy", seed=2, speed=0, domains=10, vmtas=2, https=True,
                    cert_out=cert).start()
    try:
        yield sim, cert
    finally:
        sim.stop()


def test_tls_is_verified_by_default(https_sim: tuple[Simulator, Path], tmp_path: Path) -> None:
    sim, cert = https_sim
    st = ["--state-dir", str(tmp_path / "st")]
    out = run_plugin("queue", ["--url", sim.url, *st])
    assert_one_clean_unknown_line(out, "https without --ca-file")
    assert re.search(r"TLS certificate of https://127\.0\.0\.1:\d+ not trusted", out.line)
    assert "--ca-file" in out.line and "--insecure" in out.line
    poll = run_child([PYTHON, "-m", "pmta_snmp", "poll", "--url", sim.url])
    assert poll.code == 2 and "not trusted" in poll.err and "Traceback" not in poll.err
    assert len(poll.err.strip().splitlines()) == 1
    assert run_plugin("queue", ["--url", sim.url, "--ca-file", str(cert), *st]).code == 0
    assert run_plugin("queue", ["--url", sim.url, "--insecure", *st]).code == 0
    assert run_child([PYTHON, "-m", "pmta_snmp", "poll", "--url", sim.url, "--ca-file",
                      str(cert)]).code == 0
    # The library default, too.
    with pytest.raises(PmtaError, match="not trusted"), PmtaClient(ClientConfig(url=sim.url)) as c:
        c.status()


# --- read-only -------------------------------------------------------------------------------


def test_client_sends_no_command_but_show() -> None:
    from pmta_snmp.api.client import _Core

    core = _Core(ClientConfig(url="http://127.0.0.1:9"))
    for command in ("pause queue */*", "resume queue x", "rotate acct", "schedule x",
                    "set queue --mode=normal x", "reload", "shutdown", " show license"):
        plan = core.command(command)
        with pytest.raises(PmtaError, match="only sends `show` commands"):
            next(plan)
    # Every command the package sends is a `show`.
    sent = set()
    for path in (REPO / "pmta_snmp").rglob("*.py"):
        if "sim" in path.parts:
            continue  # the simulator answers commands, it does not send them
        sent.update(re.findall(r"\.command\(\s*\"([^\"]+)\"", path.read_text()))
    assert sent and all(c.startswith("show ") for c in sent), sent


@pytest.mark.snmpd
def test_snmp_set_through_snmpd_is_refused(
    snmpd_factory: Callable[..., SnmpdMaster], tmp_path: Path
) -> None:
    if missing_netsnmp_tools("snmpset"):
        missing_requirement("snmpset is not installed (Debian: snmp)")
    sim = Simulator(scenario="healthy", seed=1, speed=0, domains=10, vmtas=2).start()
    master = snmpd_factory(extra_config="rwcommunity private 127.0.0.1")
    agent = Background(
        [PYTHON, "-m", "pmta_snmp", "agentx", "--url", sim.url, "--interval", "1",
         "--agentx-socket", master.agentx_address], tmp_path / "agent.log", env=agent_env())
    try:
        oid = ".".join(map(str, LAY.instance("pmtaCfgQueueRcptRaise")))
        assert wait_until(lambda: master.get(oid)[0].type == "Gauge32", 15), agent.log_text()
        before = master.get(oid)[0].value
        res = subprocess.run(["snmpset", "-v2c", "-c", "private", "-On", "-m", "", "-t", "2",
                              "-r", "0", master.agent, oid, "u", "5"],
                             capture_output=True, text=True, timeout=30, check=False)
        assert res.returncode != 0, res.stdout
        assert re.search(r"notWritable|noAccess|noCreation", res.stdout + res.stderr), \
            res.stdout + res.stderr
        assert master.get(oid)[0].value == before
        assert agent.alive()
    finally:
        agent.stop()
        sim.stop()
