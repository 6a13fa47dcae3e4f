"""Icinga 2 `CheckCommand` objects for the check_pmta_* plugins, from their argparse options.

`pmta-snmp gen icinga2` writes:

* `pmta-commands.conf`: one `CheckCommand "pmta_<plugin>"` per plugin. Every option becomes
  an argument with its help as `description`; flags use `set_if`, repeatable options take an
  array (`repeat_key`), and values come from custom variables: `$pmta_<dest>$` for what
  describes the PowerMTA host (URL, TLS, API key file, accounting file, log, state directory),
  `$pmta_<plugin>_<dest>$` for everything else (`$pmta_queue_warning$`). The Zabbix output
  options (`--output`, `--json`, `--discover`) are left out.
* `pmta-services.conf.example`: an example Host and `apply Service` rules.

The commands run `PluginDir + "/check_pmta_<plugin>"`; link the installed plugins there
(`ln -s /usr/local/bin/check_pmta_* /usr/lib/nagios/plugins/`).
"""

from __future__ import annotations

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
    "command_name",
    "custom_var",
    "render_commands",
    "render_example",
    "write",
]

COMMANDS_FILE: Final = "pmta-commands.conf"
EXAMPLE_FILE: Final = "pmta-services.conf.example"
_REGENERATE: Final = "pmta-snmp gen icinga2 --out contrib/icinga2"


def command_name(plugin: PluginSpec) -> str:
    """`pmta_queue` for check_pmta_queue."""
    return f"pmta_{plugin.module}"


def custom_var(plugin: PluginSpec, option: OptionSpec) -> str:
    """The custom variable an option is bound to: `pmta_url`, `pmta_queue_warning`."""
    if option.shared:
        return f"pmta_{option.dest}"
    return f"pmta_{plugin.module}_{option.dest}"


def quote(text: str) -> str:
    """An Icinga 2 DSL string literal."""
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
    )
    return f'"{escaped}"'


def _argument(plugin: PluginSpec, option: OptionSpec) -> list[str]:
    var = f"${custom_var(plugin, option)}$"
    lines = [f"\t\t{quote(option.flag)} = {{"]
    if option.takes_value:
        lines.append(f"\t\t\tvalue = {quote(var)}")
        if option.repeatable:
            lines.append("\t\t\trepeat_key = true")
    else:
        lines.append(f"\t\t\tset_if = {quote(var)}")
    if option.required:
        lines.append("\t\t\trequired = true")
    description = option.help
    if option.repeatable:
        description += " [array: the option is repeated for each element]"
    if option.choices:
        description += f" [one of: {', '.join(option.choices)}]"
    if description:
        lines.append(f"\t\t\tdescription = {quote(description)}")
    lines.append("\t\t}")
    return lines


def render_commands(plugins: Sequence[PluginSpec] | None = None) -> str:
    """The CheckCommand definitions for `plugins` (default: every shipped plugin)."""
    plugins = load_plugins() if plugins is None else plugins
    out = [
        *header_lines("//", "the plugins' argparse options", _REGENERATE),
        "//",
        "// Icinga 2 CheckCommand objects for the check_pmta_* plugins (pmta-snmp).",
        "// Include this file (e.g. copy it to /etc/icinga2/conf.d/) and link the plugins into",
        "// PluginDir:  ln -s /usr/local/bin/check_pmta_* /usr/lib/nagios/plugins/",
        "// Custom variables: $pmta_<option>$ for the PowerMTA host (pmta_url, pmta_ca_file,",
        "// pmta_api_key_file, pmta_acct_file, pmta_logfile, ...), $pmta_<plugin>_<option>$ for",
        "// one check (pmta_queue_warning, pmta_queue_critical, ...). Unset variables leave the",
        "// option out, so the plugin's own default applies.",
        "",
    ]
    for plugin in plugins:
        out.append(f"object CheckCommand {quote(command_name(plugin))} {{")
        out.append(f"\t// {plugin.prog}: {plugin.description}")
        out.append(f"\tcommand = [ PluginDir + {quote('/' + plugin.prog)} ]")
        out.append("\targuments = {")
        for option in plugin.options:
            if option.zabbix_only:
                continue
            out.extend(_argument(plugin, option))
        out.append("\t}")
        out.append("}")
        out.append("")
    return "\n".join(out)


def render_example(plugins: Sequence[PluginSpec] | None = None) -> str:
    """An example Host and apply rules using the commands of `render_commands`."""
    plugins = load_plugins() if plugins is None else plugins
    out = [
        *header_lines("//", "the plugins' argparse options", _REGENERATE),
        "//",
        "// Example: a PowerMTA host and one service per check_pmta_* plugin. Copy, rename to",
        "// .conf and adapt. The API checks run on the Icinga 2 node that schedules them; the",
        "// file checks (accounting file, main log) must run on the PowerMTA host itself:",
        "// install pmta-snmp there and set command_endpoint (Icinga 2 agent).",
        "",
        'object Host "pmta1.example.net" {',
        '\tcheck_command = "hostalive"',
        '\taddress = "192.0.2.10"',
        "",
        '\tvars.pmta_url = "https://192.0.2.10:8080"',
        '\tvars.pmta_ca_file = "/etc/icinga2/pmta/webmon.pem"',
        '\tvars.pmta_api_key_file = "/etc/icinga2/pmta/api-key"  // for pmta_license',
        '\tvars.pmta_acct_file = "/var/log/pmta/acct.csv"',
        '\tvars.pmta_logfile = [ "/var/log/pmta/log" ]',
        '\tvars.pmta_state_dir = "/var/lib/icinga2/pmta-snmp"',
        "\t// vars.pmta_agent_endpoint = name  // the Icinga 2 agent on this host, for file checks",
        "}",
        "",
    ]
    intervals = {"license": "6h"}
    for plugin in plugins:
        name = command_name(plugin)
        service = name.replace("_", "-")
        out.append(f"apply Service {quote(service)} {{")
        out.append(f"\tcheck_command = {quote(name)}")
        out.append(f"\tcheck_interval = {intervals.get(plugin.module, '1m')}")
        out.append("\tretry_interval = 30s")
        if plugin.module == "license":  # show license needs the API key
            out.append("\tassign where host.vars.pmta_url && host.vars.pmta_api_key_file")
        elif plugin.uses_api:
            out.append("\tassign where host.vars.pmta_url")
        else:
            out.append("\tif (host.vars.pmta_agent_endpoint) {")
            out.append("\t\tcommand_endpoint = host.vars.pmta_agent_endpoint")
            out.append("\t}")
            wanted = "pmta_acct_file" if plugin.option("acct_file") else "pmta_logfile"
            out.append(f"\tassign where host.vars.{wanted}")
        out.append("}")
        out.append("")
    return "\n".join(out)


def write(out_dir: Path, plugins: Sequence[PluginSpec] | None = None) -> list[Path]:
    """Write both files into `out_dir`; returns their paths."""
    return write_rendered(
        out_dir, {COMMANDS_FILE: render_commands, EXAMPLE_FILE: render_example}, plugins
    )
