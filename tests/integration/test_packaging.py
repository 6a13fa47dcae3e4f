"""The installed distribution: plugins under pmta_snmp.checks, no bare `checks`, the MIB."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_wheel_maps_checks_under_package_and_ships_mib(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("pmta_snmp-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "pmta_snmp/checks/queue.py" in names
    assert "pmta_snmp/checks/base.py" in names
    assert not any(n.startswith("checks/") for n in names)
    assert any(n.endswith("data/share/snmp/mibs/PMTA-SNMP-MIB.txt") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    for plugin in ("queue", "bounce", "deferral", "log", "license", "tls"):
        assert f"check_pmta_{plugin} = pmta_snmp.checks.{plugin}:main" in text
    assert "pmta-snmp = pmta_snmp.cli:main" in text


def test_python_m_pmta_snmp_and_console_scripts() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pmta_snmp", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0
    for sub in ("poll", "agentx", "agent", "mib"):
        assert sub in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "pmta_snmp", "poll", "--url", "ftp://x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
