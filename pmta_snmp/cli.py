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

if TYPE_CHECKING:
    from pmta_snmp.api import ClientConfig
    from pmta_snmp.config import Config
    from pmta_snmp.model import Snapshot


class _RefuseSecretArg(argparse.Action):
    """`--api-key VALUE`: refused without repeating VALUE. Without this option argparse would
    take `--api-key` as an abbreviation of `--api-key-file` and print the key as a file name in
    its error, i.e. into the monitoring system's output and history."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            f"{option_string} is not accepted: a key on the command line is visible to every "
            "user in `ps`; put it in a file (--api-key-file, mode 0600) or in PMTA_API_KEY"
        )


def _refuse_api_key_arg(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--api-key", nargs="?", action=_RefuseSecretArg, help=argparse.SUPPRESS)


def add_connection_args(p: argparse.ArgumentParser) -> None:
    """The PowerMTA connection options shared by every command and plugin."""
    g = p.add_argument_group("PowerMTA connection")
    g.add_argument(
        "--url",
        default="http://127.0.0.1:8080",
        help="PowerMTA web monitor URL (default %(default)s; 5.0 serves https)",
    )
    g.add_argument(
        "--api-key-file",
        metavar="FILE",
        help="file holding the X-API-Key (else $PMTA_API_KEY); never on the command line",
    )
    _refuse_api_key_arg(g)
    g.add_argument("--ca-file", metavar="PEM", help="CA or self-signed certificate to trust")
    g.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the TLS certificate (not recommended)",
    )
    g.add_argument(
        "--api-format",
        choices=("auto", "json", "xml"),
        default="auto",
        help="auto tries JSON, then XML for PowerMTA 4.x (default %(default)s)",
    )
    g.add_argument(
        "--api-flavor",
        choices=("real", "seed"),
        default="real",
        help="seed = the blog API (/status.json, *.csv), which real PowerMTA "
        "does not have; for compatibility only",
    )
    g.add_argument(
        "--api-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="total seconds per API call (default %(default)s)",
    )


def client_config(args: argparse.Namespace) -> ClientConfig:
    """A ClientConfig from parsed connection options."""
    from pmta_snmp.api import ClientConfig, load_api_key

    return ClientConfig(
        url=args.url,
        api_key=load_api_key(args.api_key_file),
        ca_file=args.ca_file,
        insecure=args.insecure,
        api_format=args.api_format,
        flavor=args.api_flavor,
        timeout=args.api_timeout,
        connect_timeout=min(5.0, args.api_timeout),
    )


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
    print(f"  queues: {len(snap.queues)}  domains: {len(snap.domains)}  vmtas: {len(snap.vmtas)}")
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


def _setup_logging(verbose: int) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO: the agent logs state changes, not polls.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 2 else logging.WARNING)


def _agent_config(args: argparse.Namespace) -> Config:
    from pmta_snmp.config import load_config, with_overrides

    cfg = load_config(args.config)
    pmta = {
        "url": args.url,
        "api_key_file": args.api_key_file,
        "ca_file": args.ca_file,
        "insecure": True if args.insecure else None,
        "api_format": args.api_format,
        "api_flavor": args.api_flavor,
    }
    poll = {"interval": args.interval}
    extra: dict[str, dict[str, object]] = {}
    if getattr(args, "agentx_socket", None):
        extra["agentx"] = {"socket": args.agentx_socket}
    if getattr(args, "listen", None):
        extra["snmp"] = {"listen": args.listen}
    return with_overrides(cfg, pmta=pmta, poll=poll, **extra)


def cmd_agentx(args: argparse.Namespace) -> int:
    """Run the AgentX subagent."""
    import asyncio

    from pmta_snmp.agent import run_agentx

    cfg = _agent_config(args)
    _setup_logging(args.verbose)
    asyncio.run(run_agentx(cfg))
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    """Run the standalone SNMP agent."""
    import asyncio

    from pmta_snmp.agent import run_standalone

    cfg = _agent_config(args)
    _setup_logging(args.verbose)
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


def _add_agent_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration (see contrib/)")
    p.add_argument("--interval", type=float, metavar="S", help="poll interval in seconds")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    g = p.add_argument_group("PowerMTA connection (override the config file)")
    g.add_argument("--url")
    g.add_argument("--api-key-file", metavar="FILE")
    _refuse_api_key_arg(g)
    g.add_argument("--ca-file", metavar="PEM")
    g.add_argument("--insecure", action="store_true")
    g.add_argument("--api-format", choices=("auto", "json", "xml"))
    g.add_argument("--api-flavor", choices=("real", "seed"))


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
    _add_agent_args(p)
    p.add_argument(
        "--agentx-socket",
        metavar="PATH",
        help="master socket: unix path (default /var/agentx/master) or tcp:HOST:PORT",
    )
    p.set_defaults(func=cmd_agentx)

    p = sub.add_parser("agent", help="run the standalone SNMP agent (no snmpd needed)")
    _add_agent_args(p)
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
