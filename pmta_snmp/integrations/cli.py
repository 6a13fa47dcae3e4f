"""`pmta-snmp gen` and `pmta-snmp exporter`, added to the main parser by `register(sub)`.

Nothing heavy is imported here: the generators (which import every plugin) and
prometheus_client are imported inside the command functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

from pmta_snmp.argtypes import nonneg_int
from pmta_snmp.cliopts import add_acct_args, add_agent_args, agent_config, setup_logging

__all__ = ["GENERATORS", "cmd_exporter", "cmd_gen", "register"]

GENERATORS: Final = ("icinga2", "nagios", "zabbix", "grafana")


def cmd_gen(args: argparse.Namespace) -> int:
    """Write the configuration of one monitoring system (or print it without --out)."""
    from pmta_snmp.integrations import load_plugins

    target: str = args.target
    enterprise: int = args.enterprise
    if target != "zabbix" and enterprise != _default_enterprise():
        print("pmta-snmp gen: --enterprise only applies to zabbix", file=sys.stderr)
        return 2
    if target == "grafana":
        from pmta_snmp.integrations import grafana

        if args.out is None:
            sys.stdout.write(grafana.render())
            return 0
        for path in grafana.write(Path(args.out)):
            print(f"wrote {path}")
        return 0
    plugins = load_plugins()
    if args.out is None:
        sys.stdout.write(_render(target, plugins, enterprise))
        return 0
    out = Path(args.out)
    if target == "icinga2":
        from pmta_snmp.integrations import icinga2

        paths = icinga2.write(out, plugins)
    elif target == "nagios":
        from pmta_snmp.integrations import nagios

        paths = nagios.write(out, plugins)
    else:
        from pmta_snmp.integrations import zabbix

        paths = zabbix.write(out, plugins, enterprise=enterprise)
    for path in paths:
        print(f"wrote {path}")
    return 0


def _render(target: str, plugins: Any, enterprise: int) -> str:
    """Every file of `target` on stdout, each after a `# ==> NAME <==` line."""
    parts: list[tuple[str, str]]
    if target == "icinga2":
        from pmta_snmp.integrations import icinga2

        parts = [
            (icinga2.COMMANDS_FILE, icinga2.render_commands(plugins)),
            (icinga2.EXAMPLE_FILE, icinga2.render_example(plugins)),
        ]
        marker = "//"
    elif target == "nagios":
        from pmta_snmp.integrations import nagios

        parts = [
            (nagios.COMMANDS_FILE, nagios.render_commands(plugins)),
            (nagios.EXAMPLE_FILE, nagios.render_example(plugins)),
        ]
        marker = "#"
    else:
        from pmta_snmp.integrations import zabbix

        parts = [
            (zabbix.TEMPLATE_FILE, zabbix.render_template(enterprise)),
            (zabbix.USERPARAMETER_FILE, zabbix.render_userparameters(plugins)),
        ]
        marker = "#"
    return "".join(f"{marker} ==> {name} <==\n{text}\n" for name, text in parts)


def _default_enterprise() -> int:
    from pmta_snmp.mib.layout import ENTERPRISE

    return int(ENTERPRISE)


def cmd_exporter(args: argparse.Namespace) -> int:
    """Run the Prometheus endpoint until SIGTERM/SIGINT."""
    import asyncio

    from pmta_snmp.exporter import config_with_listen, run_exporter

    cfg = config_with_listen(agent_config(args), args.exporter_listen)
    if args.max_series is not None:
        from dataclasses import replace

        cfg = replace(cfg, exporter_max_series=args.max_series)
    setup_logging(args.verbose)

    def ready(url: str) -> None:
        print(f"pmta-snmp exporter: serving {url}", file=sys.stderr, flush=True)

    asyncio.run(run_exporter(cfg, ready=ready))
    return 0


def register(sub: Any) -> None:
    """Add `gen` and `exporter` to the subparsers action of `pmta-snmp`."""
    p = sub.add_parser(
        "gen",
        help="write Icinga 2, Nagios or Zabbix configuration for the plugins and the MIB, "
        "or the Grafana dashboard",
        description="Generate monitoring configuration from the plugins' own options "
        "(icinga2, nagios: commands and an example; zabbix: SNMP template and "
        "UserParameters) or the Grafana dashboard from the exporter's metrics (grafana). "
        "Without --out the files are printed.",
    )
    p.add_argument("target", choices=GENERATORS, help="monitoring system")
    p.add_argument("--out", metavar="DIR", help="write the files into DIR (created if needed)")
    p.add_argument(
        "--enterprise",
        type=int,
        default=_default_enterprise(),
        help="zabbix: the enterprise number the MIB is based on (default %(default)s)",
    )
    p.set_defaults(func=cmd_gen)

    p = sub.add_parser(
        "exporter",
        help="serve PowerMTA metrics for Prometheus on /metrics (and /probe for fleets)",
        description="Poll PowerMTA like the agents do and serve the metrics in the "
        "Prometheus text format. With [probe.modules] in the config, /probe?target=URL"
        "&module=NAME polls one PowerMTA of a fleet per scrape; without a [pmta] url "
        "(or --url) the exporter then only probes.",
    )
    add_agent_args(p)
    add_acct_args(p)
    p.add_argument(
        "--listen",
        dest="exporter_listen",
        metavar="HOST:PORT",
        help="address to serve /metrics and /probe on (default: exporter_listen of the config, "
        "127.0.0.1:9099)",
    )
    p.add_argument(
        "--max-series",
        type=nonneg_int,
        metavar="N",
        help="per-domain/VMTA/queue series kept per metric, the rest summed as (other) "
        "(default: exporter_max_series of the config, 500; 0 = no cap)",
    )
    p.set_defaults(func=cmd_exporter)


def main(argv: list[str] | None = None) -> int:
    """`python -m pmta_snmp.integrations.cli gen|exporter ...` (same as `pmta-snmp ...`)."""
    parser = argparse.ArgumentParser(prog="pmta-snmp")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub)
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError) as exc:
        print(f"pmta-snmp {args.command}: {exc}", file=sys.stderr)
        return 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
