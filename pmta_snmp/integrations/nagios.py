"""Nagios command definitions for the check_pmta_* plugins, from their argparse options.

`pmta-snmp gen nagios` writes:

* `pmta-commands.cfg`: one `check_pmta_<plugin>` command per plugin plus the host template
  `pmta-host`, whose custom variables say where PowerMTA is (`_PMTA_URL`, `_PMTA_OPTIONS`
  for the connection options of the API checks, `_PMTA_ACCT_FILE`, `_PMTA_LOGFILE`). Each
  command passes what it needs of those, then `$ARG1$` (thresholds and any other option).
  Every option of the plugin is listed in a comment above its command.
* `pmta-services.cfg.example`: an example host and one service per plugin.

Nagios leaves an undefined custom-variable macro in the command line as a stray `$`, so the
template defines every variable (`_PMTA_OPTIONS` may stay empty); hosts `use pmta-host`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from pmta_snmp.integrations import (
    OptionSpec,
    PluginSpec,
    header_lines,
    load_plugins,
    write_rendered,
)

__all__ = [
    "COMMANDS_FILE",
    "EXAMPLE_FILE",
    "HOST_TEMPLATE",
    "command_line",
    "render_commands",
    "render_example",
    "write",
]

COMMANDS_FILE: Final = "pmta-commands.cfg"
EXAMPLE_FILE: Final = "pmta-services.cfg.example"
HOST_TEMPLATE: Final = "pmta-host"
_REGENERATE: Final = "pmta-snmp gen nagios --out contrib/nagios"

#: Host custom variables of the template: (name, default, comment).
_HOST_VARS: Final[tuple[tuple[str, str, str], ...]] = (
    ("_PMTA_URL", "http://127.0.0.1:8080", "PowerMTA web monitor (https:// for PowerMTA 5.0)"),
    (
        "_PMTA_OPTIONS",
        "",
        "connection options of the API checks: --ca-file PEM, --api-key-file FILE, ...",
    ),
    ("_PMTA_ACCT_FILE", "/var/log/pmta/acct.csv", "accounting file (bounce, deferral, tls)"),
    ("_PMTA_LOGFILE", "/var/log/pmta/log", "main log (log, tls)"),
)


def command_line(plugin: PluginSpec) -> str:
    """The command_line of a plugin: its host macros, then $ARG1$."""
    parts = [f"$USER1$/{plugin.prog}"]
    if plugin.uses_api:
        parts += ["--url '$_HOSTPMTA_URL$'", "$_HOSTPMTA_OPTIONS$"]
    if plugin.option("acct_file") is not None:
        parts.append("--acct-file '$_HOSTPMTA_ACCT_FILE$'")
    if plugin.option("logfile") is not None:
        parts.append("--logfile '$_HOSTPMTA_LOGFILE$'")
    parts.append("$ARG1$")
    return " ".join(parts)


def _option_comment(option: OptionSpec) -> list[str]:
    head = option.flag
    if option.takes_value:
        head += f" {option.metavar or option.dest.upper()}"
    text = option.help
    if option.choices:
        text += f" [one of: {', '.join(option.choices)}]"
    wrapped = textwrap.wrap(text, width=70) or [""]
    lines = [f"#   {head}"]
    lines += [f"#       {w}" for w in wrapped]
    return lines


def _host_macro_dests(plugin: PluginSpec) -> set[str]:
    dests = {"acct_file", "logfile"}
    if plugin.uses_api:
        dests.add("url")
    return dests


def render_commands(plugins: Sequence[PluginSpec] | None = None) -> str:
    """The command definitions and the `pmta-host` template."""
    plugins = load_plugins() if plugins is None else plugins
    out = [
        *header_lines("#", "the plugins' argparse options", _REGENERATE),
        "#",
        "# Nagios commands for the check_pmta_* plugins (pmta-snmp). Copy this file to",
        "# /etc/nagios4/conf.d/ and make $USER1$ (resource.cfg) hold the plugins, e.g.",
        "#   ln -s /usr/local/bin/check_pmta_* /usr/lib/nagios/plugins/",
        f"# Hosts `use {HOST_TEMPLATE}` (below) and set its custom variables; services pass",
        "# thresholds and any other option in $ARG1$:",
        "#   check_command   check_pmta_queue!-w 50000 -c 100000",
        "",
        "define host {",
        f"    name                    {HOST_TEMPLATE}",
    ]
    for name, default, comment in _HOST_VARS:
        out.append(f"    {name:<24}{default:<24}; {comment}".rstrip())
    out += ["    register                0", "}", ""]
    for plugin in plugins:
        macro_dests = _host_macro_dests(plugin)
        out.append(f"# {plugin.prog}: {plugin.description}")
        out.append("# $ARG1$ takes any of these options (see also --help):")
        for option in plugin.options:
            if option.zabbix_only or option.dest in macro_dests:
                continue
            out.extend(_option_comment(option))
        out += [
            "define command {",
            f"    command_name            {plugin.prog}",
            f"    command_line            {command_line(plugin)}",
            "}",
            "",
        ]
    return "\n".join(out)


def render_example(plugins: Sequence[PluginSpec] | None = None) -> str:
    """An example PowerMTA host with one service per plugin."""
    plugins = load_plugins() if plugins is None else plugins
    out = [
        *header_lines("#", "the plugins' argparse options", _REGENERATE),
        "#",
        "# Example: a PowerMTA host and one service per check_pmta_* plugin, for the stock",
        "# Debian templates (linux-server, generic-service). Copy, rename to .cfg and adapt.",
        "# The file checks (accounting file, main log) must run on the PowerMTA host itself",
        "# (NRPE, or Nagios on that host).",
        "",
        "define host {",
        f"    use                     {HOST_TEMPLATE},linux-server",
        "    host_name               pmta1.example.net",
        "    alias                   PowerMTA 1",
        "    address                 192.0.2.10",
        "    _PMTA_URL               https://192.0.2.10:8080",
        "    _PMTA_OPTIONS           --ca-file /etc/nagios4/pmta/webmon.pem "
        "--api-key-file /etc/nagios4/pmta/api-key",
        "}",
        "",
    ]
    intervals = {"license": 60}  # not above generic-service's notification_interval
    for plugin in plugins:
        out += [
            "define service {",
            "    use                     generic-service",
            "    host_name               pmta1.example.net",
            f"    service_description     PMTA {plugin.module}",
            f"    check_command           {plugin.prog}",
            f"    check_interval          {intervals.get(plugin.module, 1)}",
            "    retry_interval          1",
            "}",
            "",
        ]
    return "\n".join(out)


def write(out_dir: Path, plugins: Sequence[PluginSpec] | None = None) -> list[Path]:
    """Write both files into `out_dir`; returns their paths."""
    return write_rendered(
        out_dir, {COMMANDS_FILE: render_commands, EXAMPLE_FILE: render_example}, plugins
    )
