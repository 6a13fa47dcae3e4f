"""`./run demo`, the README's first command: the simulator, snmpd with our subagent and every
plugin, printed round by round, and nothing left running when it ends."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from pmta_snmp.demo import CHECKS
from tests.integration.kit_support import require_program


@pytest.mark.timeout(300)  # hang guard
def test_the_demo_shows_snmp_outcomes_and_every_plugin_and_stops_all_it_started() -> None:
    require_program("snmpd", "snmpd")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmta_snmp.demo", "--rounds", "2", "--every", "4"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out
    last = out.rpartition("=== round 2")[2]
    assert last, out
    # SNMP through the real snmpd: values, not errors
    queued = re.search(r"SNMP pmtaSmtpQueueRcpt += Gauge32: (\d+)", last)
    assert queued and int(queued.group(1)) > 0, out
    assert re.search(r"SNMP pmtaAgentApiReachable += INTEGER: 1\b", last), out
    # the API line counts every queue (the key gives complete lists), not PowerMTA's top-10
    # page presented as all queues
    api = re.search(r"API  PowerMTA \S+: \d+ recipients queued in (\d+) queues", last)
    assert api and int(api.group(1)) > 10, out
    # the deliverability table from the accounting files, through snmpd
    rows = re.findall(r"^ {27}(\w[\w-]*) +(\d+) ", last, re.M)
    assert rows and sum(int(n) for _, n in rows) > 0, out
    assert "gmail" in {name for name, _ in rows}, out
    # every plugin ran and judged (no UNKNOWN, no traceback)
    for label, _, _ in CHECKS:
        line = re.search(rf"check_pmta_{label} +exit (\d) \((\w+)\): PMTA ", last)
        assert line and line.group(1) in "012", (label, out)
    # the notifications snmptrapd received, named (snmpd's own coldStart at least)
    assert "  TRAP coldStart (snmpd started)\n" in out, out
    assert "TRAP ?" not in out, out
    assert "Traceback" not in out
    assert "stopping subagent, snmpd, snmptrapd and simulator" in out
    # nothing it started is left in its session (snmpd, snmptrapd, the poll worker, plugins)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
