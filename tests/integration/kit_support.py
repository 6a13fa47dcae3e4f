"""Helpers for the integration-kit tests (Icinga 2, Nagios, Zabbix, systemd, exporter, snmpd).

No test lives here. Every program these tests drive is a real Debian package; a test skips
with the package name when the program is absent and fails otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pmta_snmp.integrations import PLUGIN_MODULES
from tests.conftest import missing_requirement

REPO = Path(__file__).resolve().parents[2]
CONTRIB = REPO / "contrib"
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def find_program(name: str) -> str | None:
    """PATH first, then the sbin directories non-root PATHs lack."""
    found = shutil.which(name)
    if found:
        return found
    for d in SBIN_DIRS:
        candidate = os.path.join(d, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_program(name: str, package: str) -> str:
    """The program's path, or skip the test naming the Debian package (fail it under CI)."""
    path = find_program(name)
    if path is None:
        missing_requirement(f"{name} is not installed (Debian package {package})")
    return path


def install_plugins(directory: Path) -> Path:
    """Put check_pmta_<module> executables into `directory` (a plugin dir / PATH entry).

    The installed console scripts next to this Python are linked when they exist; otherwise
    a two-line wrapper runs `python -m pmta_snmp.checks.<module>` with this interpreter.
    """
    directory.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    for module in PLUGIN_MODULES:
        prog = f"check_pmta_{module}"
        target = directory / prog
        script = bindir / prog
        if script.is_file() and os.access(script, os.X_OK):
            target.symlink_to(script)
            continue
        target.write_text(
            f'#!/bin/sh\nexec {sys.executable} -m pmta_snmp.checks.{module} "$@"\n',
            encoding="utf-8",
        )
        target.chmod(0o755)
    return directory


def wait_until(predicate: Callable[[], Any], timeout: float, step: float = 0.1) -> Any:
    """The first truthy value of `predicate()` within `timeout` seconds, else None."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(step)


def stop_group(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    """Stop a process we started in its own session (start_new_session=True), and its
    children: SIGTERM to it, then SIGKILL to its process group (by its pid) if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
