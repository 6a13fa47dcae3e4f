"""Icinga 2 with the shipped CheckCommands: `icinga2 daemon -C` accepts them, and a real
icinga2 daemon runs check_pmta_queue against the simulator and records the expected state.

Icinga runs in the foreground as root (ICINGA2_USER/ICINGA2_GROUP=root) with every directory
in a temp dir (-D DataDir=... etc.), no API, a 1 s check interval; a PerfdataWriter whose
template includes the state and output records each check result it processed, which is what
the test reads. The daemon and its worker are stopped by process group at teardown.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pmta_snmp.integrations import PLUGIN_MODULES
from pmta_snmp.sim import Simulator
from tests.integration.kit_support import (
    CONTRIB,
    install_plugins,
    require_program,
    stop_group,
    wait_until,
)

COMMANDS = CONTRIB / "icinga2" / "pmta-commands.conf"
EXAMPLE = CONTRIB / "icinga2" / "pmta-services.conf.example"


class Icinga:
    """A private icinga2: config and state under `root`, plugins in `root/plugins`."""

    def __init__(self, root: Path) -> None:
        self.exe = require_program("icinga2", "icinga2")
        self.root = root
        self.dirs = {name: root / name for name in ("lib", "log", "cache", "spool", "run")}
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        self.plugins = install_plugins(root / "plugins")
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = root / "icinga2.out"

    def args(self, config: Path) -> list[str]:
        return [
            self.exe, "daemon", "-c", str(config),
            "-D", f"DataDir={self.dirs['lib']}",
            "-D", f"LogDir={self.dirs['log']}",
            "-D", f"CacheDir={self.dirs['cache']}",
            "-D", f"SpoolDir={self.dirs['spool']}",
            "-D", f"InitRunDir={self.dirs['run']}",
        ]

    def env(self) -> dict[str, str]:
        return dict(os.environ, ICINGA2_USER="root", ICINGA2_GROUP="root")

    def write_config(self, *parts: str, name: str = "icinga2.conf") -> Path:
        head = [
            f'const PluginDir = "{self.plugins}"',
            "include <itl>",
            "include <plugins>",
            f'include "{COMMANDS}"',
        ]
        path = self.root / name
        path.write_text("\n".join([*head, *parts]) + "\n", encoding="utf-8")
        return path

    def validate(self, config: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.args(config), "-C"], env=self.env(), capture_output=True, text=True,
            timeout=60, check=False,
        )

    def start(self, config: Path) -> None:
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                [*self.args(config), "-x", "notice"], env=self.env(), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, grace=2.0)
            self.proc = None

    def log(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""


@pytest.fixture
def icinga(tmp_path: Path) -> Iterator[Icinga]:
    ic = Icinga(tmp_path)
    try:
        yield ic
    finally:
        ic.stop()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator(speed=0).start()
    try:
        yield s
    finally:
        s.stop()


def test_validation_accepts_the_shipped_commands_and_example(icinga: Icinga) -> None:
    config = icinga.write_config(
        f'include "{EXAMPLE}"',
        'object Host "pmta-sim" {',
        '  check_command = "dummy"',
        '  vars.pmta_url = "http://127.0.0.1:8080"',
        '  vars.pmta_queue_warning = "1000"',
        '  vars.pmta_queue_domain = [ "gmail.com", "yahoo.com" ]',
        "  vars.pmta_insecure = true",
        "}",
    )
    res = icinga.validate(config)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert "critical/" not in out
    assert "warning/" not in out, out  # every apply rule of the example matches a host
    # The example's host gets one service per plugin; the test host (a URL, no API key, no
    # files) only pmta-queue.
    services = re.search(r"Instantiated (\d+) Services?\.", out)
    assert services is not None, out
    assert int(services.group(1)) == len(PLUGIN_MODULES) + 1


def test_validation_rejects_an_unknown_attribute(icinga: Icinga) -> None:
    """The check above can fail: Icinga does validate what the commands file defines."""
    config = icinga.write_config(
        'object CheckCommand "broken" {',
        '  command = [ "x" ]',
        '  arguments = { "-x" = { nonsense = 1 } }',
        "}",
    )
    res = icinga.validate(config)
    assert res.returncode != 0
    assert "nonsense" in res.stdout + res.stderr


def test_icinga_runs_check_pmta_queue_and_records_the_state(
    icinga: Icinga, sim: Simulator, tmp_path: Path
) -> None:
    truth = sim.snapshot()
    selected = ("gmail.com", "yahoo.com")
    rcpt = sum(q.rcp for q in truth.queues if q.domain in selected)
    assert rcpt > 1
    perf = icinga.dirs["spool"] / "perf"
    perf.mkdir()
    config = icinga.write_config(
        'object CheckerComponent "checker" { }',
        'object PerfdataWriter "states" {',
        f'  service_temp_path = "{perf}/service.tmp"',
        f'  host_temp_path = "{perf}/host.tmp"',
        f'  service_perfdata_path = "{perf}/service"',
        f'  host_perfdata_path = "{perf}/host"',
        '  service_format_template = "SERVICE::$service.name$\\tSTATE::$service.state$'
        '\\tOUTPUT::$service.output$"',
        "  rotation_interval = 1s",
        "}",
        'object Host "pmta-sim" {',
        '  check_command = "dummy"',
        "  enable_active_checks = false",
        f'  vars.pmta_url = "{sim.url}"',
        f'  vars.pmta_state_dir = "{tmp_path / "state"}"',
        "}",
        'object Service "queue" {',
        '  host_name = "pmta-sim"',
        '  check_command = "pmta_queue"',
        "  check_interval = 1s",
        "  retry_interval = 1s",
        # thresholds and a repeated --domain from custom variables: WARNING just above
        f'  vars.pmta_queue_warning = "{rcpt - 1}"',
        f'  vars.pmta_queue_critical = "{rcpt * 10}"',
        f"  vars.pmta_queue_domain = [ {', '.join(f'{d!r}' for d in selected)} ]".replace(
            "'", '"'
        ),
        "  vars.pmta_queue_verbose = true",
        "}",
    )
    icinga.start(config)

    def recorded() -> str | None:
        for path in sorted(perf.glob("service*")):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("SERVICE::queue\t"):
                    return line
        if icinga.proc is not None and icinga.proc.poll() is not None:
            pytest.fail(f"icinga2 exited with {icinga.proc.returncode}:\n{icinga.log()}")
        return None

    line = wait_until(recorded, timeout=30, step=0.2)
    assert line is not None, f"no check result recorded in 30 s:\n{icinga.log()[-4000:]}"
    fields = dict(part.split("::", 1) for part in line.split("\t"))
    assert fields["STATE"] == "WARNING", line
    assert fields["OUTPUT"].startswith(f"PMTA QUEUE WARNING - {rcpt:,} recipients queued"), line
    # The command line Icinga built from the custom variables (its notice log shows it).
    log = icinga.log()
    assert "'--domain' 'gmail.com' '--domain' 'yahoo.com'" in log
    assert "'--verbose'" in log


def _perfdata_writer(perf: Path) -> list[str]:
    """A PerfdataWriter that records each service's state and output."""
    return [
        'object PerfdataWriter "states" {',
        f'  service_temp_path = "{perf}/service.tmp"',
        f'  host_temp_path = "{perf}/host.tmp"',
        f'  service_perfdata_path = "{perf}/service"',
        f'  host_perfdata_path = "{perf}/host"',
        '  service_format_template = "SERVICE::$service.name$\\tSTATE::$service.state$'
        '\\tOUTPUT::$service.output$"',
        "  rotation_interval = 1s",
        "}",
    ]


def test_icinga_runs_the_reputation_checks_on_an_accounting_file(
    icinga: Icinga, tmp_path: Path
) -> None:
    """check_pmta_complaints, _blocklist and _warmup through the shipped CheckCommands, with
    the host's accounting file and per-service custom variables (a -c, the plan)."""
    from datetime import timedelta

    from tests.integration.test_checks_support import (
        acct_lines,
        feedback,
        mix,
        noon_zone,
        rec,
        write_plan,
    )

    spamhaus = ("smtp;554 5.7.1 Service unavailable; Client host [198.51.100.22] blocked "
                "using zen.spamhaus.org")
    records = [
        *mix({"d": 2000}, domain="yahoo.com"),
        *(feedback(f"c{i}@yahoo.com") for i in range(8)),  # 0.40 %: CRITICAL
        *mix({"d": 300}, domain="example.org", ip="198.51.100.22"),  # 2300 from .20, 300 .22
        *(rec("b", f"s{i}@example.org", ip="198.51.100.22", cat="spam-related",
              status="5.7.1 (delivery not authorized)", diag=spamhaus) for i in range(12)),
    ]
    acct = tmp_path / "acct.csv"
    acct.write_text(acct_lines(records, "5.0+f"), newline="")
    zone, today = noon_zone()
    plan = write_plan(tmp_path / "warmup.toml", f"""
        timezone = "{zone}"
        [[warmup]]
        source_ip = "198.51.100.22"
        start = {today - timedelta(days=1)}
        caps = [100, 250, 500]
        """)
    perf = icinga.dirs["spool"] / "perf"
    perf.mkdir()
    services = {"complaints": [], "blocklist": ['  vars.pmta_blocklist_critical = "20"'],
                "warmup": [f'  vars.pmta_warmup_plan = "{plan}"']}
    parts = [
        'object CheckerComponent "checker" { }',
        *_perfdata_writer(perf),
        'object Host "pmta-acct" {',
        '  check_command = "dummy"',
        "  enable_active_checks = false",
        f'  vars.pmta_acct_file = "{acct}"',
        f'  vars.pmta_state_dir = "{tmp_path / "state"}"',
        "}",
    ]
    for name, extra in services.items():
        parts += [f'object Service "{name}" {{', '  host_name = "pmta-acct"',
                  f'  check_command = "pmta_{name}"', "  check_interval = 1s",
                  "  retry_interval = 1s", *extra, "}"]
    icinga.start(icinga.write_config(*parts))

    def recorded() -> dict[str, dict[str, str]] | None:
        found: dict[str, dict[str, str]] = {}
        for path in sorted(perf.glob("service*")):
            for line in path.read_text(errors="replace").splitlines():
                fields = dict(part.split("::", 1) for part in line.split("\t") if "::" in part)
                if fields.get("SERVICE") in services:
                    found.setdefault(fields["SERVICE"], fields)
        if icinga.proc is not None and icinga.proc.poll() is not None:
            pytest.fail(f"icinga2 exited with {icinga.proc.returncode}:\n{icinga.log()}")
        return found if len(found) == len(services) else None

    results = wait_until(recorded, timeout=60, step=0.2)
    assert results is not None, f"not every check recorded in 60 s:\n{icinga.log()[-4000:]}"
    assert results["complaints"]["STATE"] == "CRITICAL", results
    assert results["complaints"]["OUTPUT"].startswith(
        "PMTA COMPLAINTS CRITICAL - yahoo complaint rate 0.40% (8 of 2,000 deliveries)")
    assert results["blocklist"]["STATE"] == "WARNING", results  # -c 20 from the variable
    assert results["blocklist"]["OUTPUT"].startswith(
        "PMTA BLOCKLIST WARNING - source IP 198.51.100.22: 12 rejections naming spamhaus in "
        "the last 24 h (warning at 1 or more)")
    assert results["warmup"]["STATE"] == "WARNING", results
    assert results["warmup"]["OUTPUT"].startswith(
        "PMTA WARMUP WARNING - 198.51.100.22 sent 300 today, 120.0% of its day-2 cap 250")
    log = icinga.log()
    assert f"'--plan' '{plan}'" in log and "'--critical' '20'" in log
