"""Monitoring-system integrations generated from the plugins' own option definitions.

Each check_pmta_* plugin defines its options once, in its argparse parser
(`pmta_snmp.checks.<name>.PLUGIN.build_parser`). This module reads those parsers into plain
`PluginSpec`/`OptionSpec` values; `icinga2`, `nagios` and `zabbix` render them into
configuration, so the shipped files in `contrib/` never drift from the plugins (a test compares
them with a fresh generation).

The plugins are imported by name (`importlib`), never at import time of this module.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from pmta_snmp.cliopts import add_connection_args

__all__ = [
    "PLUGIN_MODULES",
    "ZABBIX_ONLY_DESTS",
    "OptionSpec",
    "PluginSpec",
    "load_plugins",
    "option_specs",
    "plugin_spec",
    "shared_dests",
]

PLUGIN_MODULES: Final[tuple[str, ...]] = (
    "queue", "bounce", "deferral", "tls", "log", "license", "complaints", "blocklist", "warmup",
)
"""The plugin modules under `pmta_snmp.checks`, in the order the generated files list them."""

ZABBIX_ONLY_DESTS: Final[frozenset[str]] = frozenset({"output", "json", "discover"})
"""Options that switch a plugin to Zabbix output: never part of a Nagios/Icinga command."""

_HOST_DESTS: Final[frozenset[str]] = frozenset({"state_dir", "acct_file", "logfile"})
"""Besides the connection options: where this PowerMTA keeps its files, and our state."""


@lru_cache(maxsize=1)
def shared_dests() -> frozenset[str]:
    """Options that mean the same in every plugin that has them: the PowerMTA connection
    options (`pmta_snmp.cliopts.add_connection_args`), the accounting file, the main log and
    the state directory (properties of a PowerMTA host, not of one check).

    They get one custom variable for all plugins (`pmta_url`), where plugin-specific ones are
    prefixed with the plugin (`pmta_queue_warning`). Computed on first use.
    """
    parser = argparse.ArgumentParser(add_help=False)
    add_connection_args(parser)
    return frozenset(a.dest for a in parser._actions) | _HOST_DESTS


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One command-line option of a plugin, as argparse defines it."""

    flag: str
    """The long option (`--warning`), else the short one."""
    dest: str
    help: str
    """The help text with `%(default)s` expanded; empty when argparse has none."""
    takes_value: bool
    """False for flags (store_true/store_false/count)."""
    repeatable: bool
    """`append` options: the flag is given once per value."""
    required: bool
    metavar: str | None
    choices: tuple[str, ...] | None
    shared: bool
    """True when every plugin has it with the same meaning (see `shared_dests`)."""
    zabbix_only: bool
    """True for `--output`, `--json`, `--discover`."""


@dataclass(frozen=True, slots=True)
class PluginSpec:
    """A plugin: its program name, description, discovery kinds and options."""

    module: str
    """Module under `pmta_snmp.checks` (`queue`)."""
    prog: str
    """Program name (`check_pmta_queue`)."""
    name: str
    """Status-line word (`QUEUE`)."""
    description: str
    discovery: tuple[str, ...]
    options: tuple[OptionSpec, ...]

    def option(self, dest: str) -> OptionSpec | None:
        """The option stored in `dest`, or None."""
        return next((o for o in self.options if o.dest == dest), None)

    @property
    def uses_api(self) -> bool:
        """True when the plugin talks to the PowerMTA API (has `--url`)."""
        return self.option("url") is not None


def _help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help:
        return ""
    formatter = parser._get_formatter()
    text: str = formatter._expand_help(action)
    return " ".join(text.split())


def _is_flag(action: argparse.Action) -> bool:
    return action.nargs == 0


def option_specs(parser: argparse.ArgumentParser) -> tuple[OptionSpec, ...]:
    """The documented options of `parser` in definition order.

    Left out: `--help`, `--version` and options whose help is `argparse.SUPPRESS` (internal,
    such as test hooks). Positionals are not supported (no plugin has one).
    """
    shared = shared_dests()
    out: list[OptionSpec] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        if not action.option_strings:
            raise ValueError(f"positional argument {action.dest!r} is not supported")
        longs = [s for s in action.option_strings if s.startswith("--")]
        flag = longs[0] if longs else action.option_strings[0]
        choices = tuple(str(c) for c in action.choices) if action.choices is not None else None
        metavar = action.metavar if isinstance(action.metavar, str) else None
        out.append(
            OptionSpec(
                flag=flag,
                dest=action.dest,
                help=_help_text(parser, action),
                takes_value=not _is_flag(action),
                repeatable=isinstance(action, argparse._AppendAction),
                required=bool(action.required),
                metavar=metavar,
                choices=choices,
                shared=action.dest in shared,
                zabbix_only=action.dest in ZABBIX_ONLY_DESTS,
            )
        )
    return tuple(out)


def plugin_spec(module: str, plugin: Any) -> PluginSpec:
    """A PluginSpec from a `checks.base.Plugin` (anything with the same attributes)."""
    parser = plugin.build_parser(plugin)
    return PluginSpec(
        module=module,
        prog=str(plugin.prog),
        name=str(plugin.name),
        description=" ".join(str(plugin.description).split()),
        discovery=tuple(str(d) for d in plugin.discovery),
        options=option_specs(parser),
    )


def load_plugins(modules: Iterable[str] = PLUGIN_MODULES) -> tuple[PluginSpec, ...]:
    """Import `pmta_snmp.checks.<module>` for each module and read its PLUGIN."""
    specs: list[PluginSpec] = []
    for module in modules:
        mod = importlib.import_module(f"pmta_snmp.checks.{module}")
        specs.append(plugin_spec(module, mod.PLUGIN))
    return tuple(specs)


def header_lines(comment: str, source: str, regenerate: str) -> list[str]:
    """The "generated, do not edit" banner every generated file starts with."""
    return [
        f"{comment} Generated by `{regenerate}` from {source}.",
        f"{comment} Do not edit: regenerate instead (a test compares this file with the output).",
    ]



def write_files(out_dir: Path, files: Mapping[str, str]) -> list[Path]:
    """Write generated files (name -> text) into `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def write_rendered(
    out_dir: Path,
    renderers: Mapping[str, Callable[[Sequence[PluginSpec]], str]],
    plugins: Sequence[PluginSpec] | None = None,
) -> list[Path]:
    """Render each file (name -> renderer) from `plugins` (default: every shipped plugin) and
    write them into `out_dir`; returns their paths."""
    plugins = load_plugins() if plugins is None else plugins
    return write_files(out_dir, {name: render(plugins) for name, render in renderers.items()})
