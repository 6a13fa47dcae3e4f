"""`python -m bench [--quick] [NAME ...]`: run the benchmarks, print one table.

Exit code 0 even when a target is missed (the table is a report); 1 when a benchmark crashed;
2 on bad arguments.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Sequence

from bench.common import Report, log, render_table

# name -> module; aliases map the module names too.
BENCHMARKS: dict[str, str] = {
    "agentx": "bench.agentx_walk",
    "standalone": "bench.standalone_walk",
    "poll": "bench.poll_build",
    "checks": "bench.checks",
    "acct": "bench.acct",
    "outcomes": "bench.outcomes",
    "catchup": "bench.catchup",
    "micro": "bench.micro",
    "timeouts": "bench.timeouts",
    "fuzz": "bench.fuzz_agentx",
    "fleet": "bench.fleet",
    "fuzz_api": "bench.fuzz_api",
}
ALIASES: dict[str, str] = {
    "agentx_walk": "agentx",
    "walk": "agentx",
    "standalone_walk": "standalone",
    "poll_build": "poll",
    "fuzz_agentx": "fuzz",
    "accounting": "acct",
    "api": "fuzz_api",
}


def build_parser() -> argparse.ArgumentParser:
    """Options of `python -m bench`."""
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="pmta-snmp benchmarks: ratios against references measured in the same run.",
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME",
        help=f"benchmarks to run (default all): {', '.join(BENCHMARKS)}",
    )
    p.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen benchmarks and print the table; 1 if one crashed."""
    args = build_parser().parse_args(argv)
    names: list[str] = []
    for raw in args.names or list(BENCHMARKS):
        name = ALIASES.get(raw, raw)
        if name not in BENCHMARKS:
            print(
                f"python -m bench: unknown benchmark {raw!r} (one of {', '.join(BENCHMARKS)})",
                file=sys.stderr,
            )
            return 2
        if name not in names:
            names.append(name)
    report = Report(quick=args.quick)
    started = time.monotonic()
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        report.section = name
        log(f"=== {name}: {module.TITLE}{' (quick)' if args.quick else ''}")
        t0 = time.monotonic()
        try:
            module.run(report, quick=args.quick)
        except Exception:
            traceback.print_exc()
            report.crashed.append(name)
        log(f"=== {name} took {time.monotonic() - t0:.1f}s")
    print()
    print(
        f"pmta-snmp benchmarks{' (--quick)' if args.quick else ''}: "
        f"{', '.join(names)} in {time.monotonic() - started:.0f} s"
    )
    print(render_table(report))
    return 1 if report.crashed else 0


if __name__ == "__main__":
    sys.exit(main())
