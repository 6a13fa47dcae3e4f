"""`systemd-analyze verify` on every unit in contrib/systemd/, in a throwaway root.

verify insists that ExecStart's program exists and that the units the defaults pull in
(sysinit.target, ...) can be loaded. The test builds a root with a copy of the system's unit
directory, the shipped units in /etc/systemd/system and an executable stand-in for
/usr/local/bin/pmta-snmp, and runs `systemd-analyze verify --root=ROOT`: the units
themselves stay exactly as shipped. Any message about our units (unknown keys, bad values)
fails the test, not only a non-zero exit. Each ExecStart command line must also parse with
the real `pmta-snmp` argument parser.
"""

from __future__ import annotations

import argparse
import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from pmta_snmp import cli
from pmta_snmp.integrations.cli import register
from tests.conftest import missing_requirement
from tests.integration.kit_support import CONTRIB, require_program

UNIT_DIR = CONTRIB / "systemd"
UNITS = sorted(UNIT_DIR.glob("*.service"))
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def make_root(tmp_path: Path, units: list[Path]) -> Path:
    root = tmp_path / "root"
    if not SYSTEM_UNITS.is_dir():
        missing_requirement(f"{SYSTEM_UNITS} missing (Debian package systemd)")
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for unit in units:
        shutil.copy(unit, etc / unit.name)
    stub = root / "usr/local/bin/pmta-snmp"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(0o755)
    return root


def verify(root: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    exe = require_program("systemd-analyze", "systemd")
    return subprocess.run(
        [exe, "verify", "--man=no", f"--root={root}", *(f"/etc/systemd/system/{n}" for n in names)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_the_exporter_unit_ships() -> None:
    assert {u.name for u in UNITS} >= {
        "pmta-snmp-agentx.service", "pmta-snmp-agent.service", "pmta-snmp-exporter.service",
    }


def test_systemd_analyze_verify_passes_for_every_unit(tmp_path: Path) -> None:
    root = make_root(tmp_path, UNITS)
    res = verify(root, [u.name for u in UNITS])
    output = (res.stdout + res.stderr).strip()
    assert res.returncode == 0, output
    ours = [line for line in output.splitlines() if "pmta-snmp" in line]
    assert not ours, output


def test_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a typo and a missing program are both reported."""
    broken = tmp_path / "pmta-snmp-broken.service"
    broken.write_text(
        "[Unit]\nDescription=broken\n[Service]\nExecStart=/usr/local/bin/pmta-snmp-nothere\n"
        "Restartt=always\n",
        encoding="utf-8",
    )
    res = verify(make_root(tmp_path, [broken]), [broken.name])
    output = res.stdout + res.stderr
    assert res.returncode != 0
    assert "Restartt" in output and "pmta-snmp-nothere" in output


def _parser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "exporter" not in sub.choices:  # until the main CLI registers the integration commands
        register(sub)
    return parser


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_exec_start_is_a_valid_pmta_snmp_command(unit: Path) -> None:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(unit, encoding="utf-8")
    argv = shlex.split(parser["Service"]["ExecStart"])
    assert argv[0] == "/usr/local/bin/pmta-snmp"
    args = _parser().parse_args(argv[1:])
    assert args.config == "/etc/pmta-snmp/agent.toml"
    assert parser["Service"]["User"] == "pmta-snmp"


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_the_state_directory_is_writable_under_the_units_sandbox(unit: Path) -> None:
    """ProtectSystem=strict makes /var/lib read-only and ProtectHome hides the home fallback, so
    the outcomes engine ([acct] files) could save no reading position: every restart would
    read its backfill again. The unit must give the service the default state directory."""
    from pmta_snmp.state import SYSTEM_STATE_DIR

    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(unit, encoding="utf-8")
    service = parser["Service"]
    assert service.get("ProtectSystem") == "strict"
    assert SYSTEM_STATE_DIR.parent == Path("/var/lib")
    assert SYSTEM_STATE_DIR.name in service.get("StateDirectory", "").split()
    assert service.get("StateDirectoryMode") == "0700"
