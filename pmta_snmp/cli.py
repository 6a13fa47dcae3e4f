"""`pmta-snmp`: one command with subcommands (poll, agentx, agent, mib, ...).

Heavy modules (pysnmp, asyncio agent code) are imported inside the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pmta_snmp import __version__
from pmta_snmp.cliopts import (  # add_connection_args, client_config: also used from here
    add_agent_args,
    add_connection_args,
    agent_config,
    client_config,
    setup_logging,
)

if TYPE_CHECKING:
    from pmta_snmp.model import ListCompleteness, Snapshot


def _print_summary(snap: Snapshot) -> None:
    st = snap.status
    rt = st.runtime
    t = st.traffic
    print(
        f"PowerMTA {rt.version or '(version unknown)'} on {rt.host_name or '?'}: {rt.status}"
        f"{' (shutting down)' if rt.shutting_down else ''}, up {rt.uptime_seconds or 0}s"
    )
    print(
        f"  queued recipients (smtp): {st.queued_recipients}  "
        f"domains: {st.queue_type('smtp').dom}  kb: {st.queue_type('smtp').kb:.1f}"
    )
    print(
        f"  out last min: {t.last_min.outbound.msg} msg / {t.last_min.outbound.rcp} rcpt "
        f"({t.messages_per_second:.2f} msg/s)   last hour: {t.last_hr.outbound.msg} msg"
    )
    print(
        f"  total out: {t.total.outbound.msg} msg / {t.total.outbound.rcp} rcpt   "
        f"in: {t.total.inbound.msg} msg"
    )
    print(
        f"  smtp connections in/out: {st.conn.smtp_in.cur}/{st.conn.smtp_out.cur} "
        f"(max {st.conn.smtp_in.max}/{st.conn.smtp_out.max})"
    )
    lists = snap.lists
    print(
        f"  queues: {_count(len(snap.queues), lists.queues)}  "
        f"domains: {_count(len(snap.domains), lists.domains)}  "
        f"vmtas: {_count(len(snap.vmtas), lists.vmtas)}"
    )
    top = sorted(snap.queues, key=lambda q: q.rcp, reverse=True)[:5]
    for q in top:
        flags = ",".join(f for f, on in (("paused", q.paused), (q.mode.value, True)) if on)
        print(
            f"    {q.name:<40} {q.rcp:>8} rcpt {q.conn:>4} conn  {flags}"
            f"{'  last error: ' + q.last_error[:60] if q.last_error else ''}"
        )
    if snap.license is not None:
        lic = snap.license
        left = lic.days_left(datetime.now(UTC).date())
        print(
            f"  license expires: {'never' if lic.never else lic.expires} "
            f"({'no expiry' if left is None else f'{left} days left'})"
        )
    for w in snap.warnings:
        print(f"  warning: {w}")


def _count(listed: int, found: ListCompleteness | None) -> str:
    """`10 of 1967 (page)`: rows listed, PowerMTA's count, and where the rows came from."""
    if found is None:
        return str(listed)
    known = "" if found.known is None else (
        f" of {'at least ' if not found.exact else ''}{found.known}"
    )
    return f"{listed}{known} ({found.source.value})"


def cmd_poll(args: argparse.Namespace) -> int:
    """Poll PowerMTA once and print the normalised snapshot."""
    from pmta_snmp.api import PmtaClient, PmtaError
    from pmta_snmp.model import snapshot_to_dict

    try:
        with PmtaClient(client_config(args)) as client:
            snap = client.snapshot(with_license=args.license)
    except PmtaError as exc:
        print(f"pmta-snmp poll: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(snapshot_to_dict(snap), sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        _print_summary(snap)
    return 0


def cmd_agentx(args: argparse.Namespace) -> int:
    """Run the AgentX subagent."""
    import asyncio

    from pmta_snmp.agent import run_agentx

    cfg = agent_config(args)
    setup_logging(args.verbose)
    asyncio.run(run_agentx(cfg))
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    """Run the standalone SNMP agent."""
    import asyncio

    from pmta_snmp.agent import run_standalone

    cfg = agent_config(args)
    setup_logging(args.verbose)
    asyncio.run(run_standalone(cfg))
    return 0


def cmd_mib(args: argparse.Namespace) -> int:
    """Print or write PMTA-SNMP-MIB re-based to an enterprise number."""
    from pathlib import Path

    from pmta_snmp.mib.rebase import render_mib, write_mib

    if args.out:
        path = write_mib(args.enterprise, Path(args.out))
        print(f"wrote {path}; set `enterprise = {args.enterprise}` in the agent config")
    else:
        sys.stdout.write(render_mib(args.enterprise))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `pmta-snmp` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="pmta-snmp", description="PowerMTA monitoring over SNMP (AgentX) and plugins."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("poll", help="poll the PowerMTA API once and print what it reports")
    add_connection_args(p)
    p.add_argument("--json", action="store_true", help="print the model as JSON")
    p.add_argument(
        "--license",
        action="store_true",
        help="also ask `show license` (POST /command, needs an API key)",
    )
    p.set_defaults(func=cmd_poll)

    p = sub.add_parser("agentx", help="run the AgentX subagent behind the system snmpd")
    add_agent_args(p)
    p.add_argument(
        "--agentx-socket",
        metavar="PATH",
        help="master socket: unix path (default /var/agentx/master) or tcp:HOST:PORT",
    )
    p.set_defaults(func=cmd_agentx)

    p = sub.add_parser("agent", help="run the standalone SNMP agent (no snmpd needed)")
    add_agent_args(p)
    p.add_argument("--listen", metavar="udp:HOST:PORT", help="default udp:127.0.0.1:1161")
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("mib", help="print or write the MIB re-based to your enterprise number")
    p.add_argument(
        "--enterprise",
        type=int,
        default=32473,
        help="your IANA Private Enterprise Number (default 32473, a placeholder)",
    )
    p.add_argument("--out", metavar="DIR", help="write PMTA-SNMP-MIB.txt into DIR")
    p.set_defaults(func=cmd_mib)

    from pmta_snmp.integrations.cli import register as register_integrations

    register_integrations(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pmta-snmp` and `python -m pmta_snmp`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, never a traceback, for any unexpected failure
        from pmta_snmp.api import PmtaError
        from pmta_snmp.config import ConfigError

        if isinstance(exc, PmtaError | ConfigError | OSError | ValueError):
            print(f"pmta-snmp {args.command}: {exc}", file=sys.stderr)
            return 2
        raise
    return rc


if __name__ == "__main__":
    sys.exit(main())
