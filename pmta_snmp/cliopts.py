"""Command-line pieces shared by `pmta-snmp`'s commands (`pmta_snmp.cli`), the integration
commands and generators (`pmta_snmp.integrations`) and the plugins (`checks/base.py`): the
PowerMTA connection options and the client settings they give, the agent options and the
configuration they override, logging, and the refusal of a secret on the command line.

A module of its own so that neither command module imports the other's private names (they
did, in a cycle). Nothing heavy is imported here.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pmta_snmp.argtypes import DEFAULT_LIST_ITEMS, list_items

if TYPE_CHECKING:
    from pmta_snmp.api import ClientConfig
    from pmta_snmp.config import Config

__all__ = [
    "add_agent_args",
    "add_connection_args",
    "agent_config",
    "client_config",
    "refuse_api_key_arg",
    "setup_logging",
]


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


def refuse_api_key_arg(g: argparse._ArgumentGroup) -> None:
    """Add the hidden `--api-key` that refuses any value (see _RefuseSecretArg)."""
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
    refuse_api_key_arg(g)
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
    g.add_argument(
        "--max-list-items",
        type=list_items,
        default=DEFAULT_LIST_ITEMS,
        metavar="N",
        help="with an API key, list up to N queues, domains, VirtualMTAs through POST "
        "/command (show queues --maxitems=N ...) instead of the pages' top rows; 0 = the "
        "pages only (default %(default)s)",
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
        max_list_items=args.max_list_items,
    )


def add_agent_args(p: argparse.ArgumentParser) -> None:
    """The options of the long-running commands (agentx, agent, exporter)."""
    p.add_argument("--config", metavar="FILE", help="TOML configuration (see contrib/)")
    p.add_argument("--interval", type=float, metavar="S", help="poll interval in seconds")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    g = p.add_argument_group("PowerMTA connection (override the config file)")
    g.add_argument("--url")
    g.add_argument("--api-key-file", metavar="FILE")
    refuse_api_key_arg(g)
    g.add_argument("--ca-file", metavar="PEM")
    g.add_argument("--insecure", action="store_true")
    g.add_argument("--api-format", choices=("auto", "json", "xml"))
    g.add_argument("--api-flavor", choices=("real", "seed"))
    g.add_argument("--max-list-items", type=list_items, metavar="N",
                   help="pmta.max_list_items: list up to N rows through POST /command with an "
                   "API key; 0 = the pages only")


def add_acct_args(p: argparse.ArgumentParser) -> None:
    """The deliverability outcomes options of the exporter and the agents."""
    g = p.add_argument_group("deliverability outcomes from the accounting files "
                             "(override [acct] of the config file)")
    g.add_argument("--acct-file", metavar="GLOB",
                   help="accounting file (with its rotations) or glob of files to follow")
    g.add_argument("--state-dir", metavar="DIR",
                   help="where the reading position and the counters are kept (the "
                   "agents: in DIR/agent, with the standalone agent's SNMPv3 engine ID)")


def setup_logging(verbose: int) -> None:
    """Log to stderr: INFO, DEBUG with -vv; httpx's per-request lines only with -vvv."""
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO: the agent logs state changes, not polls.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 2 else logging.WARNING)


def agent_config(args: argparse.Namespace) -> Config:
    """The configuration file (`--config`) with the command-line overrides applied."""
    from pmta_snmp.config import load_config, with_overrides

    cfg = load_config(args.config)
    pmta = {
        "url": args.url,
        "api_key_file": args.api_key_file,
        "ca_file": args.ca_file,
        "insecure": True if args.insecure else None,
        "api_format": args.api_format,
        "api_flavor": args.api_flavor,
        "max_list_items": args.max_list_items,
    }
    poll = {"interval": args.interval}
    extra: dict[str, dict[str, object]] = {}
    if getattr(args, "agentx_socket", None):
        extra["agentx"] = {"socket": args.agentx_socket}
    if getattr(args, "listen", None):
        extra["snmp"] = {"listen": args.listen}
    if getattr(args, "acct_file", None) or getattr(args, "state_dir", None):
        extra["acct"] = {"files": getattr(args, "acct_file", None),
                         "state_dir": getattr(args, "state_dir", None)}
    return with_overrides(cfg, pmta=pmta, poll=poll, **extra)
