"""`pmta-sim`: run the PowerMTA simulator until SIGTERM/SIGINT (SIGHUP clears any fault)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType

from pmta_snmp.argtypes import nonneg_int
from pmta_snmp.sim.app import MALFORMED_VARIANTS, PAGE_MAX_ITEMS
from pmta_snmp.sim.files import ACCT_LAYOUTS, DEFAULT_ACCT_MAX_SIZE
from pmta_snmp.sim.simulator import Simulator
from pmta_snmp.sim.state import PROFILES, SCENARIOS

_EPILOG = """\
Simulator-only control paths (loopback only, not PowerMTA's):
  POST /_sim/fault    fault=none|down|reset|slow|500|malformed [delay=S] [variant=V]
                      [duration=S]  (down needs duration=, the endpoint goes down with it)
  POST /_sim/advance  seconds=S     POST /_sim/rotate  what=log|acct
  GET  /_sim/snapshot (the truth as `pmta-snmp poll --json` prints it)   GET /_sim/counts
The API key comes from --api-key-file or $PMTA_API_KEY, never from the command line.
"""


def build_parser() -> argparse.ArgumentParser:
    """The `pmta-sim` command line."""
    p = argparse.ArgumentParser(
        prog="pmta-sim",
        description="Simulated PowerMTA web monitor on 127.0.0.1 (HTTP API, accounting, log).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    p.add_argument(
        "--instances",
        type=int,
        default=1,
        metavar="N",
        help="simulate N PowerMTA hosts (seeds SEED..SEED+N-1) on ports PORT..PORT+N-1 "
        "(or free ones), served by one thread; for fleet benchmarks (no accounting or log)",
    )
    p.add_argument("--scenario", choices=SCENARIOS, default="healthy")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same answers)")
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default="5.0",
        help="5.0: full tree and JSON; 4.x: no mta block, XML only",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated seconds per real second (0 freezes the clock)",
    )
    p.add_argument(
        "--start-time",
        type=datetime.fromisoformat,
        default=None,
        help="simulated start, ISO 8601 (default: now)",
    )
    p.add_argument("--https", action="store_true", help="serve HTTPS, self-signed certificate")
    p.add_argument("--cert-out", type=Path, help="write the certificate PEM here (--ca-file)")
    p.add_argument("--api-key-file", type=Path, help="file holding the http-api-key value")
    p.add_argument(
        "--allow",
        action="append",
        nargs="+",
        metavar="CIDR",
        help="http-access entries: 'CIDR' (monitor) or 'CIDR LEVEL' (default 127.0.0.1/32)",
    )
    p.add_argument(
        "--seed-flavor",
        action="store_true",
        help="also serve the blog-post endpoints (/status.json, /queue.csv, ...), "
        "which real PowerMTA does not have",
    )
    p.add_argument("--acct-dir", type=Path, help="write acct.csv here")
    p.add_argument(
        "--acct-layout",
        choices=sorted(ACCT_LAYOUTS),
        default="5.0",
        help="accounting columns: 4.0 (Unix times, timeImprinted), 4.5/5.0, 5.5",
    )
    p.add_argument("--acct-records", default="d,b,t,tq",
                   help="record types (d,b,t,tq,r,f; f: feedback-loop complaint reports)")
    p.add_argument(
        "--acct-max-size",
        type=int,
        default=DEFAULT_ACCT_MAX_SIZE,
        help="rotate acct.csv at this many bytes",
    )
    p.add_argument("--log", type=Path, help="write the main log here")
    p.add_argument("--domains", type=int, default=1000, help="scale: destination domains")
    p.add_argument("--vmtas", type=int, default=10, help="scale: VirtualMTAs")
    p.add_argument("--delay", type=float, default=5.0, help="api-slow: seconds per answer")
    p.add_argument(
        "--malformed",
        choices=MALFORMED_VARIANTS,
        default="truncated",
        help="api-malformed: how answers are broken",
    )
    p.add_argument(
        "--xml-content-type",
        default="text/xml",
        help="Content-Type of XML answers (some real installs send text/html)",
    )
    p.add_argument(
        "--max-items",
        type=nonneg_int,
        default=PAGE_MAX_ITEMS,
        help="rows per listing page, like PowerMTA's http-default-max-items (default "
        "%(default)s, as PowerMTA's; 0 = every row); the list commands of POST /command "
        "show 20 unless asked --maxitems=N",
    )
    p.add_argument(
        "--gm-imprinter", action="store_true", help="add the old gmImprinter queue type to /status"
    )
    p.add_argument("--verbose", action="store_true", help="log requests to stderr")
    return p


def _api_key(path: Path | None) -> str | None:
    if path is not None:
        return path.read_text(encoding="utf-8").strip()
    return os.environ.get("PMTA_API_KEY") or None


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT; exit 0 then, 2 on bad options."""
    parser = build_parser()
    args = parser.parse_args(argv)
    allow = [e for group in args.allow for e in group] if args.allow else ["127.0.0.1/32"]
    if args.instances != 1:
        return _run_fleet(args, allow)
    try:
        sim = Simulator(
            scenario=args.scenario,
            seed=args.seed,
            profile=args.profile,
            speed=args.speed,
            https=args.https,
            api_key=_api_key(args.api_key_file),
            allow=allow,
            seed_flavor=args.seed_flavor,
            acct_dir=args.acct_dir,
            log_path=args.log,
            port=args.port,
            start_time=args.start_time,
            domains=args.domains,
            vmtas=args.vmtas,
            acct_layout=args.acct_layout,
            acct_records=[r for r in args.acct_records.split(",") if r],
            acct_max_size=args.acct_max_size,
            slow_delay=args.delay,
            malformed=args.malformed,
            xml_content_type=args.xml_content_type,
            max_items=args.max_items or None,
            gm_imprinter=args.gm_imprinter,
            cert_out=args.cert_out,
            verbose=args.verbose,
        )
        sim.start()
    except (OSError, ValueError) as exc:
        print(f"pmta-sim: error: {exc}", file=sys.stderr)
        return 2

    done = threading.Event()
    clear = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        clear.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    try:
        print(f"pmta-sim listening on {sim.url}", flush=True)
        if sim.fault.name != "none":
            print(
                f"pmta-sim: fault {sim.fault.name} active (SIGHUP clears it)",
                file=sys.stderr,
                flush=True,
            )
        while not done.wait(0.2):
            if clear.is_set():
                clear.clear()
                sim.set_fault("none")
    finally:
        sim.stop()
    return 0


def _run_fleet(args: argparse.Namespace, allow: list[str]) -> int:
    """`--instances N`: N hosts until SIGTERM or SIGINT, one `listening on` line each."""
    from pmta_snmp.sim.fleet import SimFleet

    if args.instances < 1:
        print("pmta-sim: error: --instances must be at least 1", file=sys.stderr)
        return 2
    if args.acct_dir or args.log or args.cert_out:
        print("pmta-sim: error: --instances writes no accounting, log or certificate file",
              file=sys.stderr)
        return 2
    try:
        fleet = SimFleet(
            args.instances, seed=args.seed, port=args.port, scenario=args.scenario,
            profile=args.profile, speed=args.speed, https=args.https,
            api_key=_api_key(args.api_key_file), allow=allow, seed_flavor=args.seed_flavor,
            start_time=args.start_time, domains=args.domains, vmtas=args.vmtas,
            slow_delay=args.delay, malformed=args.malformed,
            xml_content_type=args.xml_content_type, max_items=args.max_items or None,
            gm_imprinter=args.gm_imprinter, verbose=args.verbose,
        ).start()
    except (OSError, ValueError) as exc:
        print(f"pmta-sim: error: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: done.set())
    signal.signal(signal.SIGINT, lambda signum, frame: done.set())
    try:
        for url in fleet.urls:
            print(f"pmta-sim listening on {url}")
        sys.stdout.flush()
        while not done.wait(0.5):
            pass
    finally:
        fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
