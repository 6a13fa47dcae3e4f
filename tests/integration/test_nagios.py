"""Nagios 4 with the shipped commands: `nagios4 -v` accepts them with the example (on the stock
Debian object templates), and a real nagios4 runs check_pmta_queue against the simulator and
writes the expected state into status.dat.

Everything lives in a temp dir (status, lock, check results, query socket); interval_length=1
makes check_interval 1 a second. nagios4 runs in the foreground as root and is stopped by
process group at teardown.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pmta_snmp.integrations import PLUGIN_MODULES
from pmta_snmp.sim import Simulator
from tests.conftest import missing_requirement
from tests.integration.kit_support import (
    CONTRIB,
    install_plugins,
    require_program,
    stop_group,
    wait_until,
)

COMMANDS = CONTRIB / "nagios" / "pmta-commands.cfg"
EXAMPLE = CONTRIB / "nagios" / "pmta-services.cfg.example"
STOCK = Path("/etc/nagios4/objects")
STOCK_FILES = ("commands.cfg", "contacts.cfg", "timeperiods.cfg", "templates.cfg")


class Nagios:
    """A private nagios4 under `root` with the plugins as $USER1$."""

    def __init__(self, root: Path) -> None:
        self.exe = require_program("nagios4", "nagios4-core")
        missing = [f for f in STOCK_FILES if not (STOCK / f).is_file()]
        if missing:
            missing_requirement(
                f"stock Nagios objects missing in {STOCK}: {missing} (nagios4-common)"
            )
        self.root = root
        self.plugins = install_plugins(root / "plugins")
        (root / "checkresults").mkdir()
        self.status = root / "status.dat"
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = root / "nagios.out"

    def write_config(self, *object_files: Path) -> Path:
        (self.root / "resource.cfg").write_text(f"$USER1$={self.plugins}\n", encoding="utf-8")
        # linux-server's check-host-alive comes from monitoring-plugins; define a stand-in.
        extra = self.root / "host-check.cfg"
        extra.write_text(
            "define command {\n    command_name    check-host-alive\n"
            "    command_line    /bin/true\n}\n",
            encoding="utf-8",
        )
        r = self.root
        lines = [
            f"log_file={r / 'nagios.log'}",
            *(f"cfg_file={STOCK / f}" for f in STOCK_FILES),
            f"cfg_file={extra}",
            *(f"cfg_file={f}" for f in object_files),
            f"resource_file={r / 'resource.cfg'}",
            f"status_file={self.status}",
            "status_update_interval=1",
            f"object_cache_file={r / 'objects.cache'}",
            f"precached_object_file={r / 'objects.precache'}",
            f"temp_file={r / 'nagios.tmp'}",
            f"temp_path={r}",
            f"lock_file={r / 'nagios.lock'}",
            "retain_state_information=0",
            f"state_retention_file={r / 'retention.dat'}",
            f"check_result_path={r / 'checkresults'}",
            f"command_file={r / 'nagios.cmd'}",
            "check_external_commands=0",
            f"query_socket={r / 'nagios.qh'}",
            "nagios_user=root",
            "nagios_group=root",
            "interval_length=1",
            "service_inter_check_delay_method=n",
            "host_inter_check_delay_method=n",
            "max_service_check_spread=1",
            "max_host_check_spread=1",
            "execute_host_checks=0",
            "enable_notifications=0",
            "enable_event_handlers=0",
            "enable_flap_detection=0",
            "use_syslog=0",
            "check_for_updates=0",
            "illegal_macro_output_chars=`~$&|\"<>",
        ]
        path = r / "nagios.cfg"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def verify(self, config: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.exe, "-v", str(config)], capture_output=True, text=True,
                              timeout=60, check=False)

    def start(self, config: Path) -> None:
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                [self.exe, str(config)], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None

    def log(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""


def status_blocks(text: str, kind: str) -> list[dict[str, str]]:
    """The `kind { key=value ... }` blocks of status.dat."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line == f"{kind} {{":
            current = {}
        elif line == "}" and current is not None:
            blocks.append(current)
            current = None
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key] = value
    return blocks


@pytest.fixture
def nagios(tmp_path: Path) -> Iterator[Nagios]:
    n = Nagios(tmp_path)
    try:
        yield n
    finally:
        n.stop()


def test_verify_accepts_the_shipped_commands_and_example(nagios: Nagios) -> None:
    example = nagios.root / "example.cfg"  # the shipped example, named so Nagios reads it
    example.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    res = nagios.verify(nagios.write_config(COMMANDS, example))
    assert res.returncode == 0, res.stdout
    assert "Total Errors:   0" in res.stdout
    assert "Total Warnings: 0" in res.stdout, res.stdout
    assert f"Checked {len(PLUGIN_MODULES)} services." in res.stdout


def test_verify_rejects_a_service_with_an_undefined_command(nagios: Nagios) -> None:
    """The check above can fail: a reference to a command we do not ship is an error."""
    bad = nagios.root / "bad.cfg"
    bad.write_text(
        "define host {\n use pmta-host,linux-server\n host_name h\n address 127.0.0.1\n}\n"
        "define service {\n use generic-service\n host_name h\n service_description s\n"
        " check_command check_pmta_nosuch\n}\n",
        encoding="utf-8",
    )
    res = nagios.verify(nagios.write_config(COMMANDS, bad))
    assert res.returncode != 0
    assert "check_pmta_nosuch" in res.stdout


def test_nagios_runs_check_pmta_queue_and_records_the_state(
    nagios: Nagios, tmp_path: Path
) -> None:
    with Simulator(speed=0) as sim:
        rcpt = sim.snapshot().status.queued_recipients
        objects = nagios.root / "sim.cfg"
        objects.write_text(
            "define host {\n"
            "    use                     pmta-host,linux-server\n"
            "    host_name               pmta-sim\n"
            "    address                 127.0.0.1\n"
            f"    _PMTA_URL               {sim.url}\n"
            f"    _PMTA_OPTIONS           --api-timeout 5 --state-dir {tmp_path / 'state'}\n"
            "}\n"
            "define service {\n"
            "    use                     generic-service\n"
            "    host_name               pmta-sim\n"
            "    service_description     PMTA queue\n"
            f"    check_command           check_pmta_queue!-w {rcpt * 10} -c {rcpt - 1}\n"
            "    check_interval          1\n"
            "    retry_interval          1\n"
            "}\n",
            encoding="utf-8",
        )
        config = nagios.write_config(COMMANDS, objects)
        res = nagios.verify(config)
        assert res.returncode == 0, res.stdout
        nagios.start(config)

        def checked() -> dict[str, str] | None:
            if nagios.proc is not None and nagios.proc.poll() is not None:
                pytest.fail(f"nagios4 exited with {nagios.proc.returncode}:\n{nagios.log()}")
            if not nagios.status.exists():
                return None
            for block in status_blocks(nagios.status.read_text(errors="replace"),
                                       "servicestatus"):
                if block.get("service_description") == "PMTA queue" and block.get(
                    "has_been_checked"
                ) == "1":
                    return block
            return None

        block = wait_until(checked, timeout=30, step=0.2)
        assert block is not None, f"no check in status.dat after 30 s:\n{nagios.log()[-3000:]}"
    assert block["current_state"] == "2", block
    assert block["plugin_output"].startswith(
        f"PMTA QUEUE CRITICAL - {rcpt:,} recipients queued"
    ), block
    assert block["performance_data"].startswith(f"rcpt={rcpt};{rcpt * 10};{rcpt - 1}"), block
