"""The integration generators: the shipped files are their output, they cover every plugin
option, and the Zabbix template only names OIDs of PMTA-SNMP-MIB. Also the exporter's pure
parts (listen parsing, series cap, collector) and the `gen`/`exporter` command line.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pmta_snmp.integrations import (
    PLUGIN_MODULES,
    PluginSpec,
    icinga2,
    load_plugins,
    nagios,
    option_specs,
    plugin_spec,
    zabbix,
)
from pmta_snmp.integrations.cli import main as gen_main
from pmta_snmp.integrations.cli import register
from pmta_snmp.mib.layout import OBJECTS, Kind, layout

REPO = Path(__file__).resolve().parents[2]
CONTRIB = REPO / "contrib"
UUID4 = re.compile(r"^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}$")


@pytest.fixture(scope="module")
def plugins() -> tuple[PluginSpec, ...]:
    return load_plugins()


# --- the shipped files are the generators' output -----------------------------------------


@pytest.mark.parametrize(
    ("target", "name", "render"),
    [
        ("icinga2", icinga2.COMMANDS_FILE, icinga2.render_commands),
        ("icinga2", icinga2.EXAMPLE_FILE, icinga2.render_example),
        ("nagios", nagios.COMMANDS_FILE, nagios.render_commands),
        ("nagios", nagios.EXAMPLE_FILE, nagios.render_example),
        ("zabbix", zabbix.TEMPLATE_FILE, lambda p: zabbix.render_template()),
        ("zabbix", zabbix.USERPARAMETER_FILE, zabbix.render_userparameters),
    ],
)
def test_shipped_file_is_the_generator_output(
    plugins: tuple[PluginSpec, ...], target: str, name: str, render: Any
) -> None:
    shipped = (CONTRIB / target / name).read_text(encoding="utf-8")
    assert shipped == render(plugins), (
        f"contrib/{target}/{name} differs from the generator: "
        f"run `pmta-snmp gen {target} --out contrib/{target}` and commit the result"
    )


def test_gen_writes_every_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for target in ("icinga2", "nagios", "zabbix"):
        assert gen_main(["gen", target, "--out", str(tmp_path / target)]) == 0
        written = sorted(p.name for p in (tmp_path / target).iterdir())
        shipped = sorted(p.name for p in (CONTRIB / target).iterdir())
        assert written == shipped
    assert gen_main(["gen", "icinga2"]) == 0
    out = capsys.readouterr().out
    assert f"// ==> {icinga2.COMMANDS_FILE} <==" in out
    assert 'object CheckCommand "pmta_queue"' in out


def test_gen_zabbix_rebases_the_oids(tmp_path: Path) -> None:
    assert gen_main(["gen", "zabbix", "--enterprise", "99999", "--out", str(tmp_path)]) == 0
    text = (tmp_path / zabbix.TEMPLATE_FILE).read_text()
    assert "1.3.6.1.4.1.99999.25." in text and "1.3.6.1.4.1.32473." not in text
    assert gen_main(["gen", "nagios", "--enterprise", "99999"]) == 2


# --- plugin introspection -----------------------------------------------------------------


def test_every_plugin_is_read(plugins: tuple[PluginSpec, ...]) -> None:
    assert [p.module for p in plugins] == list(PLUGIN_MODULES)
    for p in plugins:
        assert p.prog == f"check_pmta_{p.module}"
        assert p.option("warning") is not None and p.option("critical") is not None
        assert p.option("help") is None  # --help is not an option to configure


def _fake_plugin() -> Any:
    class Fake:
        name = "FAKE"
        prog = "check_pmta_fake"
        description = "A fake plugin."
        discovery = ("things",)

        @staticmethod
        def build_parser(plugin: Any) -> argparse.ArgumentParser:
            p = argparse.ArgumentParser(prog=plugin.prog)
            p.add_argument("-w", "--warning", default="10", help="warn above (default %(default)s)")
            p.add_argument("--target", required=True, metavar="HOST", help='the "target"')
            p.add_argument("--flag", action="store_true", help="a flag")
            p.add_argument("--item", action="append", help="repeatable")
            p.add_argument("--mode", choices=("a", "b"), help="one mode")
            p.add_argument("--url", help="PowerMTA")
            p.add_argument("--hidden", help=argparse.SUPPRESS)
            return p

    return Fake()


def test_option_specs_follow_argparse() -> None:
    spec = plugin_spec("fake", _fake_plugin())
    by_dest = {o.dest: o for o in spec.options}
    assert "hidden" not in by_dest and "help" not in by_dest
    assert by_dest["warning"].flag == "--warning"
    assert by_dest["warning"].help == "warn above (default 10)"
    assert by_dest["target"].required and by_dest["target"].takes_value
    assert not by_dest["flag"].takes_value
    assert by_dest["item"].repeatable
    assert by_dest["mode"].choices == ("a", "b")
    assert by_dest["url"].shared and not by_dest["warning"].shared
    with pytest.raises(ValueError, match="positional"):
        parser = argparse.ArgumentParser()
        parser.add_argument("pos")
        option_specs(parser)


# --- Icinga 2 -------------------------------------------------------------------------------


def _argument_blocks(text: str, command: str) -> dict[str, str]:
    body = text.split(f'object CheckCommand "{command}" {{', 1)[1].split("\n}\n", 1)[0]
    return dict(re.findall(r'\t\t"(-[^"]+)" = \{\n(.*?)\n\t\t\}', body, re.S))


def test_icinga2_arguments_cover_every_option(plugins: tuple[PluginSpec, ...]) -> None:
    text = icinga2.render_commands(plugins)
    for plugin in plugins:
        args = _argument_blocks(text, f"pmta_{plugin.module}")
        assert f'command = [ PluginDir + "/{plugin.prog}" ]' in text
        expected = {o.flag for o in plugin.options if not o.zabbix_only}
        assert set(args) == expected, plugin.module
        assert not {"--output", "--json", "--discover"} & set(args)
        for option in plugin.options:
            if option.zabbix_only:
                continue
            block = args[option.flag]
            var = icinga2.custom_var(plugin, option)
            if option.takes_value:
                assert f'value = "${var}$"' in block
                assert ("repeat_key = true" in block) == option.repeatable
            else:
                assert f'set_if = "${var}$"' in block
            assert "description = " in block or not option.help
    # host-wide options share one variable, check options are prefixed with the check
    queue = next(p for p in plugins if p.module == "queue")
    url = queue.option("url")
    warning = queue.option("warning")
    assert url is not None and warning is not None
    assert icinga2.custom_var(queue, url) == "pmta_url"
    assert icinga2.custom_var(queue, warning) == "pmta_queue_warning"


def test_icinga2_required_and_escaping() -> None:
    spec = plugin_spec("fake", _fake_plugin())
    args = _argument_blocks(icinga2.render_commands([spec]), "pmta_fake")
    assert "required = true" in args["--target"]
    assert "required" not in args["--warning"]
    assert 'description = "the \\"target\\""' in args["--target"]
    assert "[array: the option is repeated for each element]" in args["--item"]
    assert "[one of: a, b]" in args["--mode"]


# --- Nagios ---------------------------------------------------------------------------------


def test_nagios_commands_use_only_macros_the_template_defines(
    plugins: tuple[PluginSpec, ...]
) -> None:
    text = nagios.render_commands(plugins)
    template = text.split(f"name                    {nagios.HOST_TEMPLATE}", 1)[1].split("}", 1)[0]
    defined = set(re.findall(r"^\s+(_[A-Z_]+)", template, re.M))
    lines = re.findall(r"command_line\s+(.*)", text)
    assert len(lines) == len(plugins)
    for line in lines:
        for macro in re.findall(r"\$_HOST([A-Z_]+)\$", line):
            assert f"_{macro}" in defined, (macro, line)  # undefined -> a stray "$" in argv
        assert line.endswith("$ARG1$")
    for plugin in plugins:
        assert f"command_name            {plugin.prog}\n" in text
        line = nagios.command_line(plugin)
        assert ("--url" in line) == plugin.uses_api
        assert ("--acct-file" in line) == (plugin.option("acct_file") is not None)
        for option in plugin.options:  # every other option is documented above the command
            if not option.zabbix_only and option.dest not in ("url", "acct_file", "logfile"):
                assert f"#   {option.flag}" in text


# --- Zabbix template --------------------------------------------------------------------------


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_zabbix_yaml_parses_to_the_template_structure() -> None:
    import yaml  # a test dependency (pyproject [test]): no skip

    text = (CONTRIB / "zabbix" / zabbix.TEMPLATE_FILE).read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    assert doc == zabbix.template()
    export = doc["zabbix_export"]
    assert export["version"] == "6.0"
    assert [g["name"] for g in export["groups"]] == ["Templates/Applications"]
    (tpl,) = export["templates"]
    assert tpl["template"] == zabbix.TEMPLATE_NAME
    assert {"items", "discovery_rules", "macros", "valuemaps", "groups"} <= set(tpl)


def test_zabbix_uuids_are_v4_and_unique() -> None:
    uuids = [n["uuid"] for n in _walk(zabbix.template()) if "uuid" in n]
    assert len(uuids) > 50
    assert all(UUID4.match(u) for u in uuids), [u for u in uuids if not UUID4.match(u)]
    assert len(set(uuids)) == len(uuids)
    assert zabbix.template() == zabbix.template()  # stable


@pytest.mark.parametrize("enterprise", [32473, 4242])
def test_zabbix_oids_exist_in_the_mib(enterprise: int) -> None:
    lay = layout(enterprise)
    by_oid = {".".join(map(str, lay.oid(o.name))): o for o in OBJECTS}
    (tpl,) = zabbix.template(enterprise)["zabbix_export"]["templates"]  # type: ignore[index]
    scalars = set()
    for item in tpl["items"]:
        oid, _, instance = item["snmp_oid"].rpartition(".")
        assert instance == "0", item["snmp_oid"]
        assert by_oid[oid].kind is Kind.SCALAR, item["key"]
        assert by_oid[oid].name in item["description"]
        scalars.add(by_oid[oid].name)
    assert {"pmtaSmtpQueueRcpt", "pmtaAgentApiReachable", "pmtaAgentDataAge",
            "pmtaLicenseDaysLeft"} <= scalars
    tables = {}
    for rule in tpl["discovery_rules"]:
        m = re.fullmatch(r"discovery\[(\{#[A-Z]+\}),([0-9.]+)\]", rule["snmp_oid"])
        assert m is not None, rule["snmp_oid"]
        name_col = by_oid[m.group(2)]
        assert name_col.kind is Kind.COLUMN
        assert name_col.name.endswith(("DisplayName", "QueueName", "SourceIpName"))
        entry = m.group(2).rsplit(".", 1)[0]
        tables[rule["key"]] = name_col.name
        for proto in rule["item_prototypes"]:
            oid, _, index = proto["snmp_oid"].rpartition(".")
            assert index == "{#SNMPINDEX}"
            assert by_oid[oid].kind is Kind.COLUMN
            assert oid.rsplit(".", 1)[0] == entry, "prototype from another table"
            assert m.group(1) in proto["key"] and m.group(1) in proto["name"]
    assert tables == {
        "pmta.vmta.discovery": "pmtaVmtaDisplayName",
        "pmta.domain.discovery": "pmtaDomainDisplayName",
        "pmta.queue.discovery": "pmtaQueueName",
        "pmta.provider.discovery": "pmtaProviderDisplayName",
        "pmta.sourceip.discovery": "pmtaSourceIpName",
    }


def test_zabbix_triggers_macros_and_value_maps_are_consistent() -> None:
    (tpl,) = zabbix.template()["zabbix_export"]["templates"]  # type: ignore[index]
    keys = {i["key"] for i in tpl["items"]}
    proto_keys = {p["key"] for r in tpl["discovery_rules"] for p in r["item_prototypes"]}
    macros = {m["macro"]: m["value"] for m in tpl["macros"]}
    valuemaps = {v["name"]: {m["value"]: m["newvalue"] for m in v["mappings"]}
                 for v in tpl["valuemaps"]}
    triggers = [t for i in tpl["items"] for t in i.get("triggers", [])]
    protos = [t for r in tpl["discovery_rules"] for t in r.get("trigger_prototypes", [])]
    ref = re.compile(r"/" + re.escape(zabbix.TEMPLATE_NAME) + r"/([^,)]+)")
    for t in triggers:
        assert set(ref.findall(t["expression"])) <= keys, t["expression"]
        for dep in t.get("dependencies", []):
            assert dep["name"] in {x["name"] for x in triggers}
    for t in protos:
        assert set(ref.findall(t["expression"])) <= proto_keys, t["expression"]
    used = set()
    for node in _walk(tpl):
        for value in node.values():
            if isinstance(value, str):
                used |= {m.split(":")[0] + "}" if ":" in m else m
                         for m in re.findall(r"\{\$[A-Z0-9_.]+(?::[^}]*)?\}", value)}
    assert used <= set(macros), used - set(macros)
    # the documented thresholds
    assert macros["{$PMTA.QUEUE.WARN}"] == "50000" and macros["{$PMTA.QUEUE.CRIT}"] == "100000"
    exprs = {t["expression"] for t in triggers}
    item = f"/{zabbix.TEMPLATE_NAME}"
    assert f"last({item}/pmta.queue.rcpt)>{{$PMTA.QUEUE.WARN}}" in exprs
    assert f"last({item}/pmta.queue.rcpt)>{{$PMTA.QUEUE.CRIT}}" in exprs
    assert f"last({item}/pmta.agent.api_reachable)=2" in exprs
    assert f"last({item}/pmta.agent.data_age)>{{$PMTA.DATA.AGE.MAX}}" in exprs
    assert f"last({item}/pmta.license.days)<{{$PMTA.LICENSE.DAYS.WARN}}" in exprs
    assert valuemaps[zabbix.TRUTH_VALUE_MAP] == {"1": "true", "2": "false"}
    assert valuemaps[zabbix.MODE_VALUE_MAP] == {"1": "normal", "2": "backoff", "3": "unknown"}
    for node in _walk(tpl):
        if "valuemap" in node:
            assert node["valuemap"]["name"] in valuemaps


def test_zabbix_triggers_on_missing_license_data() -> None:
    """pmtaLicenseDaysLeft is noSuchInstance when the agent could not read the license (the
    Zabbix item turns unsupported and gets no values): a trigger says so, unless the agent
    answers nothing at all (its own trigger covers that)."""
    (tpl,) = zabbix.template()["zabbix_export"]["templates"]  # type: ignore[index]
    items = {i["key"]: i for i in tpl["items"]}
    by_name = {t["name"]: t for i in tpl["items"] for t in i.get("triggers", [])}
    item = f"/{zabbix.TEMPLATE_NAME}"
    (nodata,) = [t for t in items["pmta.license.days"]["triggers"]
                 if t["expression"].startswith("nodata(")]
    assert nodata["expression"] == (
        f"nodata({item}/pmta.license.days,{{$PMTA.LICENSE.NODATA.TIMEOUT}})=1")
    assert nodata["name"] == "PowerMTA: no license data for {$PMTA.LICENSE.NODATA.TIMEOUT}"
    assert nodata["priority"] == "WARNING"
    assert "noSuchInstance" in nodata["description"] and "API key" in nodata["description"]
    (dep,) = nodata["dependencies"]
    agent_down = by_name[dep["name"]]
    assert dep["expression"] == agent_down["expression"] == (
        f"nodata({item}/pmta.agent.api_reachable,{{$PMTA.NODATA.TIMEOUT}})=1")
    macros = {m["macro"]: m["value"] for m in tpl["macros"]}
    assert macros["{$PMTA.LICENSE.NODATA.TIMEOUT}"] == "3h"  # three hourly polls


def test_zabbix_discovers_providers_and_source_ips_with_their_triggers() -> None:
    """Hard bounce and complaint rate triggers per provider, each gated on enough volume, and
    a blocklist trigger per source IP; the MIB's hundredths of a percent shown as %."""
    (tpl,) = zabbix.template()["zabbix_export"]["templates"]  # type: ignore[index]
    rules = {r["key"]: r for r in tpl["discovery_rules"]}
    item = f"/{zabbix.TEMPLATE_NAME}"
    provider = rules["pmta.provider.discovery"]
    exprs = {t["name"]: t["expression"] for t in provider["trigger_prototypes"]}
    hard_warn = ('Provider {#PROVIDER}: hard bounce rate above '
                 '{$PMTA.PROVIDER.HARD_BOUNCE.WARN:"{#PROVIDER}"}%')
    assert exprs[hard_warn] == (
        f'last({item}/pmta.provider.last_hour.hard_bounce_rate["{{#PROVIDER}}"])>'
        '{$PMTA.PROVIDER.HARD_BOUNCE.WARN:"{#PROVIDER}"} and '
        f'last({item}/pmta.provider.last_hour.recipients["{{#PROVIDER}}"])>='
        '{$PMTA.PROVIDER.MIN_RECIPIENTS:"{#PROVIDER}"}')
    complaint = [e for n, e in exprs.items() if "complaint rate" in n]
    assert len(complaint) == 2 and all(
        "pmta.provider.last_day.complaint_rate" in e and "pmta.provider.last_day.delivered" in e
        for e in complaint)
    (listed,) = rules["pmta.sourceip.discovery"]["trigger_prototypes"]
    assert listed["expression"] == (
        f'last({item}/pmta.sourceip.last_hour.blocklist_rejections["{{#SOURCEIP}}"])>'
        '{$PMTA.SOURCEIP.BLOCKLIST.MAX:"{#SOURCEIP}"}')
    assert listed["priority"] == "HIGH"
    for rule in (provider, rules["pmta.sourceip.discovery"]):
        for proto in rule["item_prototypes"]:
            if "Rate" in proto["description"].split(".")[0]:
                assert proto["units"] == "%"
                assert proto["preprocessing"] == [{"type": "MULTIPLIER", "parameters": ["0.01"]}]
    macros = {m["macro"]: m["value"] for m in tpl["macros"]}
    assert (macros["{$PMTA.PROVIDER.COMPLAINT.WARN}"], macros["{$PMTA.PROVIDER.COMPLAINT.CRIT}"]) \
        == ("0.1", "0.3")


def test_zabbix_yaml_quotes_safely() -> None:
    text = zabbix.to_yaml({"a": "it's {#X} [1]: yes", "b": [{"c": "no"}, "x"]})
    assert text == "a: 'it''s {#X} [1]: yes'\nb:\n  - c: 'no'\n  - 'x'\n"
    with pytest.raises(ValueError, match="multi-line"):
        zabbix.to_yaml({"a": "x\ny"})


# --- Zabbix UserParameters --------------------------------------------------------------------


def test_userparameters_cover_every_plugin(plugins: tuple[PluginSpec, ...]) -> None:
    keys = {k.key: k for k in zabbix.userparameter_keys(plugins)}
    for plugin in plugins:
        js = keys[f"pmta.{plugin.module}.json"]
        assert f"exec {plugin.prog} --output zabbix" in js.command and "--json" in js.command
        if plugin.uses_api:
            assert f"pmta.{plugin.module}" in keys
            assert js.params == ("u", "c", "k")
        if plugin.discovery:
            disc = keys[f"pmta.{plugin.module}.discovery"]
            assert '--discover "$kind"' in disc.command
            assert "|".join(plugin.discovery) in disc.comment
    for key in keys.values():
        # parameters are substituted by the agent into single quotes, never bare
        assert re.findall(r"\$[1-9]", key.command) == [f"${i}" for i in
                                                       range(1, len(key.params) + 1)]
        assert all(f"='${i}';" in key.command for i in range(1, len(key.params) + 1))


# --- exporter pure parts ----------------------------------------------------------------------


def test_parse_listen() -> None:
    from pmta_snmp.exporter import parse_listen

    assert parse_listen("127.0.0.1:9099") == ("127.0.0.1", 9099)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("9099", ":9099", "host:port", "127.0.0.1:70000", "::1:9099", "[::1]9099"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_cap_rows_keeps_the_largest() -> None:
    from pmta_snmp.exporter import cap_rows
    from pmta_snmp.model import Domain

    rows = [Domain("a", rcp=5), Domain("b", rcp=50), Domain("c", rcp=1), Domain("d", rcp=50)]
    assert cap_rows(rows, 10) == (rows, [])
    assert cap_rows(rows, 0) == (rows, [])
    kept, folded = cap_rows(rows, 3)
    assert [r.name for r in kept] == ["b", "d"]
    assert [r.name for r in folded] == ["a", "c"]
    kept, folded = cap_rows(rows, 1)
    assert kept == [] and len(folded) == 4


def test_collector_before_and_after_polls() -> None:
    from pmta_snmp.exporter import PmtaCollector
    from pmta_snmp.model import Snapshot, Status
    from pmta_snmp.poller import PollResult

    now = datetime(2026, 1, 1, tzinfo=UTC)
    clock = [now]  # the wall clock; the monotonic one moves with it

    def elapsed(wall: datetime) -> float:
        return (wall - now).total_seconds()

    col = PmtaCollector(max_series=10, wall=lambda: clock[0],
                        clock=lambda: elapsed(clock[0]))

    def sample(name: str) -> float | None:
        for fam in col.collect():
            for s in fam.samples:
                if s.name == name and not s.labels:
                    return float(s.value)
        return None

    assert sample("pmta_up") == 0 and sample("pmta_data_age_seconds") is None
    good = PollResult(Snapshot(Status()), True, now, now, 1, 0, 0, None)
    col.update(good)
    assert sample("pmta_up") == 1 and sample("pmta_data_age_seconds") == 0
    later = now + timedelta(seconds=90)
    clock[0] = later
    col.update(PollResult(good.snapshot, False, later, now, 1, 1, 1, "down"))
    assert sample("pmta_up") == 0
    assert sample("pmta_data_age_seconds") == 90
    assert sample("pmta_poll_errors_total") == 1
    assert sample("pmta_polls_total") == 2


def test_cli_register_adds_gen_and_exporter() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["exporter", "--listen", "[::1]:9100", "--url", "http://x:1"])
    assert args.exporter_listen == "[::1]:9100" and args.url == "http://x:1"
    assert args.max_series is None
    args = parser.parse_args(["gen", "zabbix", "--out", "d"])
    assert (args.target, args.out) == ("zabbix", "d")
    with pytest.raises(SystemExit):
        parser.parse_args(["gen", "cacti"])


# The tags Zabbix 6.0's importer accepts at each level we use (C60XmlValidator); an unknown
# tag fails the whole import, so a typo here must fail this test first.
_ITEM_TAGS = {
    "uuid", "name", "type", "snmp_oid", "key", "delay", "history", "trends", "status",
    "value_type", "units", "description", "inventory_link", "valuemap", "preprocessing", "tags",
}
_TRIGGER_TAGS = {
    "uuid", "expression", "recovery_mode", "recovery_expression", "name", "event_name",
    "opdata", "url", "status", "priority", "description", "type", "manual_close",
    "dependencies", "tags",
}
_ZABBIX_ENUMS = {
    "type": {"SNMP_AGENT"},
    "value_type": {"FLOAT", "CHAR", "LOG", "UNSIGNED", "TEXT"},
    "priority": {"NOT_CLASSIFIED", "INFO", "WARNING", "AVERAGE", "HIGH", "DISASTER"},
}


def test_zabbix_template_uses_only_tags_the_6_0_importer_knows() -> None:
    (tpl,) = zabbix.template()["zabbix_export"]["templates"]  # type: ignore[index]
    assert set(tpl) <= {"uuid", "template", "name", "description", "templates", "groups",
                        "items", "discovery_rules", "httptests", "tags", "macros",
                        "dashboards", "valuemaps"}

    def check_item(item: dict[str, Any], extra: set[str]) -> None:
        assert set(item) <= _ITEM_TAGS | extra, set(item) - _ITEM_TAGS - extra
        assert item["type"] in _ZABBIX_ENUMS["type"]
        assert item["value_type"] in _ZABBIX_ENUMS["value_type"]
        for step in item.get("preprocessing", []):
            assert set(step) == {"type", "parameters"}
            assert step["type"] in {"CHANGE_PER_SECOND", "SIMPLE_CHANGE", "MULTIPLIER",
                                    "DISCARD_UNCHANGED_HEARTBEAT"}
        for trigger in item.get("triggers", []):
            check_trigger(trigger)

    def check_trigger(trigger: dict[str, Any]) -> None:
        assert set(trigger) <= _TRIGGER_TAGS, set(trigger) - _TRIGGER_TAGS
        assert trigger["priority"] in _ZABBIX_ENUMS["priority"]
        for dep in trigger.get("dependencies", []):
            assert set(dep) <= {"name", "expression", "recovery_expression"}

    for item in tpl["items"]:
        check_item(item, {"triggers"})
    for rule in tpl["discovery_rules"]:
        assert set(rule) <= {"uuid", "name", "type", "snmp_oid", "key", "delay", "status",
                             "filter", "lifetime", "description", "item_prototypes",
                             "trigger_prototypes", "graph_prototypes", "host_prototypes",
                             "lld_macro_paths", "preprocessing", "overrides"}
        assert set(rule["filter"]) <= {"evaltype", "formula", "conditions"}
        for cond in rule["filter"]["conditions"]:
            assert set(cond) <= {"macro", "value", "operator", "formulaid"}
        for proto in rule["item_prototypes"]:
            check_item(proto, {"discover"})
        for trigger in rule.get("trigger_prototypes", []):
            check_trigger(trigger)
    for vm in tpl["valuemaps"]:
        assert set(vm) == {"uuid", "name", "mappings"}
    for macro in tpl["macros"]:
        assert set(macro) <= {"macro", "type", "value", "description"}


def test_zabbix_watches_list_completeness() -> None:
    """Each table's rows listed and rows known are scalar items on the MIB's objects, with a
    WARNING trigger when the table lists fewer rows than PowerMTA has; its description names
    README sections that exist (issue 18)."""
    (tpl,) = zabbix.template()["zabbix_export"]["templates"]  # type: ignore[index]
    items = {i["key"]: i for i in tpl["items"]}
    lay = layout()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#+ (.+)$", readme, re.M))
    for mib, kind, one in (("Vmta", "vmta", "VirtualMTA"), ("Domain", "domain", "domain"),
                           ("Queue", "queue", "queue")):
        listed, known = items[f"pmta.{kind}.rows.listed"], items[f"pmta.{kind}.rows.known"]
        for item, obj in ((listed, f"pmta{mib}RowsListed"), (known, f"pmta{mib}RowsKnown")):
            assert item["snmp_oid"] == ".".join(map(str, lay.instance(obj)))
            assert item["value_type"] == "UNSIGNED"
        assert "triggers" not in listed
        (trigger,) = known["triggers"]
        assert trigger["name"] == zabbix.list_trigger_name(one)
        assert trigger["expression"] == (f"last(/{zabbix.TEMPLATE_NAME}/pmta.{kind}.rows.listed)"
                                         f"<last(/{zabbix.TEMPLATE_NAME}/pmta.{kind}.rows.known)")
        assert trigger["priority"] == "WARNING"
        cited = set(re.findall(r'README, "([^"]+)"', trigger["description"]))
        assert cited == {"Complete lists of queues, domains and VirtualMTAs",
                         "Monitor from Zabbix"}
        assert cited <= headings
