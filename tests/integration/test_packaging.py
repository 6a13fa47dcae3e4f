"""The installed distribution: plugins under pmta_snmp.checks, no bare `checks`, the MIB."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _source_copy(dest: Path) -> Path:
    """The files git tracks (and untracked ones it does not ignore), as in the working tree:
    no build/ directory or built extension from earlier builds."""
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True, check=True, timeout=60).stdout
    for name in filter(None, listing.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.mark.timeout(180)
def test_wheel_maps_checks_under_package_and_ships_mib(tmp_path: Path) -> None:
    src = _source_copy(tmp_path / "src")
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
            str(src),
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
    from pmta_snmp.integrations import PLUGIN_MODULES

    for plugin in PLUGIN_MODULES:
        assert f"check_pmta_{plugin} = pmta_snmp.checks.{plugin}:main" in text
    assert "pmta-snmp = pmta_snmp.cli:main" in text
    # The C scanner, built (gcc is there), with its stub; its source stays in the sdist.
    assert any(n.startswith("pmta_snmp/_csvtally.") and n.endswith(".so") for n in names)
    assert "pmta_snmp/_csvtally.pyi" in names
    assert "pmta_snmp/_csvtally.c" not in names


@pytest.mark.timeout(240)
def test_without_a_compiler_the_wheel_builds_and_counts_in_python(tmp_path: Path) -> None:
    """The C scanner is optional: with a compiler that fails, the wheel still builds, without
    it, and the accounting plugins count through the pure-Python path."""
    src = _source_copy(tmp_path / "src")
    env = {**os.environ, "CC": "/bin/false"}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "w"),
         str(src)],
        capture_output=True, text=True, timeout=230, check=False, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next((tmp_path / "w").glob("pmta_snmp-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.endswith(".so") for n in names), names
    assert "pmta_snmp/acct/tally.py" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    acct = tmp_path / "acct.csv"
    header = "type,timeLogged,orig,rcpt,bounceCat,dsnStatus,dsnDiag,dlvSourceIp,vmta\n"
    now = time.strftime("%Y-%m-%d %H:%M:%S%z")
    rows = [f"d,{now},a@s.example,r{i}@d.example,,2.0.0,ok,192.0.2.1,v\n" for i in range(150)]
    rows += [f"b,{now},a@s.example,x@d.example,bad-mailbox,5.1.1,\"550 no, really\","
             f"192.0.2.1,v\n" for _ in range(50)]
    acct.write_text(header + "".join(rows))
    code = (
        "import sys\n"
        "import pmta_snmp\n"
        "print(pmta_snmp.__file__)\n"
        "from pmta_snmp.acct.tally import speedups\n"
        "assert speedups() is None, 'the C scanner was found'\n"
        "from pmta_snmp.checks.bounce import main\n"
        "sys.argv = ['check_pmta_bounce', '--acct-file', sys.argv[1], '--from-start',\n"
        "            '--state-dir', sys.argv[2]]\n"
        "sys.exit(main())\n"
    )
    # -S: no .pth files, so the checkout's editable install cannot supply the module; the
    # dependencies come from site-packages on PYTHONPATH, after the unpacked wheel.
    path = os.pathsep.join([str(site), sysconfig.get_paths()["purelib"],
                            sysconfig.get_paths()["platlib"]])
    run = subprocess.run([sys.executable, "-S", "-c", code, str(acct), str(tmp_path / "state")],
                         capture_output=True, text=True, timeout=60, check=False,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": path})
    assert len(run.stdout.splitlines()) >= 2, run.stdout + run.stderr
    where, line = run.stdout.splitlines()[:2]
    assert where.startswith(str(site)), where  # the unpacked wheel, not the checkout
    assert run.returncode == 2, run.stdout + run.stderr
    assert line.startswith("PMTA BOUNCE CRITICAL - overall hard-bounce rate 25.0% of 200 "
                           "attempts"), line
    assert 'top hard-bounce reasons: "550 no, really" x50' in line


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
