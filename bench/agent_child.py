"""`pmta-snmp` run as a child process with its poll and rebuild windows written to a file.

    python -m bench.agent_child WINDOWS_FILE agentx --url ... --agentx-socket ...

The product code runs unchanged. By default the agent polls and rebuilds in its poll worker
child process, which reports its timings with every tree (`worker.Published`): they become
`poll T0 T1` (fetch + parse) and `rebuild T0 T1` (tree build + pack) lines, and the parent's
installing each handed-over tree (map it, swap it in) a `swap T0 T1` line. With
`poll.isolation = "thread"`, `Poller.poll_once` and `SnmpView.update` are wrapped instead. A
`gc.callbacks` hook appends `gcN T0 T1` for every generation-2 collection of the serving
process and any other taking over 1 ms (collections stop every thread). Times are
`time.monotonic()` seconds, which on Linux is the same clock in every process, so the benchmark
can tell which of its timed requests overlapped a rebuild or a collection.
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Any


def main(argv: list[str]) -> int:
    """Install the timing wrappers, then run the `pmta-snmp` command line."""
    windows_path, args = argv[0], argv[1:]
    from pmta_snmp import poller
    from pmta_snmp.cli import main as cli_main
    from pmta_snmp.service import SnmpView
    from pmta_snmp.worker import Published, TreeWorker

    out = open(windows_path, "a", buffering=1, encoding="ascii")  # noqa: SIM115 - process-long
    original_update = SnmpView.update
    original_poll = poller.Poller.poll_once

    def update(self: SnmpView, result: Any) -> Any:
        t0 = time.monotonic()
        try:
            return original_update(self, result)
        finally:
            out.write(f"rebuild {t0:.6f} {time.monotonic():.6f}\n")

    async def poll_once(self: poller.Poller, client: Any) -> Any:
        t0 = time.monotonic()
        try:
            return await original_poll(self, client)
        finally:
            out.write(f"poll {t0:.6f} {time.monotonic():.6f}\n")

    original_install = TreeWorker._install

    def install(self: TreeWorker, info: Published, buf: Any) -> None:
        t0 = time.monotonic()
        try:
            original_install(self, info, buf)
        finally:
            out.write(f"poll {info.poll_started:.6f} {info.poll_ended:.6f}\n")
            out.write(f"rebuild {info.poll_ended:.6f} {info.build_ended:.6f}\n")
            out.write(f"swap {t0:.6f} {time.monotonic():.6f}\n")

    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        now = time.monotonic()
        if phase == "start":
            gc_started[0] = now
        elif info["generation"] == 2 or now - gc_started[0] > 0.001:
            out.write(f"gc{info['generation']} {gc_started[0]:.6f} {now:.6f}\n")

    gc.callbacks.append(on_gc)
    TreeWorker._install = install  # type: ignore[method-assign]
    SnmpView.update = update  # type: ignore[method-assign]
    poller.Poller.poll_once = poll_once  # type: ignore[method-assign]
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
