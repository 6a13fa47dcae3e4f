"""The shipped Zabbix template, imported through a real Zabbix 6.0 frontend API.

Debian's zabbix-frontend-php runs on a throwaway PostgreSQL cluster (trust on 127.0.0.1, no
fsync, in a temp dir) under `php -S` on 127.0.0.1. `configuration.import` checks the template
the way the Zabbix UI does when an operator imports it: item keys, SNMP OIDs, trigger
expressions, value maps, discovery prototypes. `template.get` then shows what was created.
An import needs the database and the frontend only, not the zabbix_server daemon.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pmta_snmp.netsnmp import free_tcp_port
from tests.conftest import missing_requirement
from tests.integration.kit_support import CONTRIB, require_program

# Hang detection: PostgreSQL, the Zabbix schema and the frontend take 30-40 s to set up.
pytestmark = pytest.mark.timeout(600)

FRONTEND = Path("/usr/share/zabbix")
SCHEMA = Path("/usr/share/zabbix-server-pgsql")
TEMPLATE = CONTRIB / "zabbix" / "template_pmta_snmp.yaml"

CONF = """<?php
$DB['TYPE'] = 'POSTGRESQL';
$DB['SERVER'] = '127.0.0.1';
$DB['PORT'] = '{port}';
$DB['DATABASE'] = 'zabbix';
$DB['USER'] = 'zabbix';
$DB['PASSWORD'] = '';
$DB['SCHEMA'] = '';
$DB['ENCRYPTION'] = false;
$DB['KEY_FILE'] = '';
$DB['CERT_FILE'] = '';
$DB['CA_FILE'] = '';
$DB['VERIFY_HOST'] = false;
$DB['CIPHER_LIST'] = '';
$DB['VAULT_URL'] = '';
$DB['VAULT_DB_PATH'] = '';
$DB['VAULT_TOKEN'] = '';
$DB['DOUBLE_IEEE754'] = true;
$ZBX_SERVER_NAME = 'pmta-snmp tests';
$IMAGE_FORMAT_DEFAULT = IMAGE_FORMAT_PNG;
"""

#: What an operator ticks in the import dialog: create everything, update what exists.
RULES: dict[str, dict[str, bool]] = {
    **{name: {"createMissing": True, "updateExisting": True}
       for name in ("templates", "items", "discoveryRules", "triggers", "graphs", "valueMaps",
                    "templateDashboards", "httptests")},
    "groups": {"createMissing": True},
    "templateLinkage": {"createMissing": True},
}


def _require_file(path: Path, package: str) -> None:
    if not path.exists():
        missing_requirement(f"{path} is missing (Debian package {package})")


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class Frontend:
    """The frontend's JSON-RPC API, logged in as the default Admin."""

    url: str
    token: str = ""

    def call(self, method: str, params: Any) -> Any:
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
        if self.token:
            body["auth"] = self.token
        answer = httpx.post(self.url, json=body, timeout=120,
                            headers={"Content-Type": "application/json-rpc"}).json()
        if "error" in answer:
            raise ZabbixError(answer["error"].get("data") or answer["error"].get("message"))
        return answer["result"]


class ZabbixError(Exception):
    """An error answer of the Zabbix API."""


@pytest.fixture(scope="module")
def zabbix() -> Iterator[Frontend]:
    initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdbs:
        missing_requirement("PostgreSQL is not installed (Debian package postgresql)")
    pg_bin = Path(initdbs[-1]).parent
    _require_file(FRONTEND / "api_jsonrpc.php", "zabbix-frontend-php")
    _require_file(SCHEMA / "schema.sql.gz", "zabbix-server-pgsql")
    php = require_program("php", "php-cli")
    psql = require_program("psql", "postgresql-client")
    # Not under pytest's per-user temp dir (mode 0700): the postgres user works in here.
    top = Path(tempfile.mkdtemp(prefix="pmta-zbx-"))
    os.chmod(top, 0o755)
    data, sock = top / "pg", top / "sock"
    for d in (data, sock):
        d.mkdir()
        if os.geteuid() == 0:
            shutil.chown(d, "postgres")
    port, web_port = free_tcp_port(), free_tcp_port()
    pg_ctl = [str(pg_bin / "pg_ctl"), "-D", str(data)]
    php_proc: subprocess.Popen[bytes] | None = None
    started = False
    try:
        subprocess.run(_as_postgres([str(pg_bin / "initdb"), "-D", str(data), "-A", "trust",
                                     "-U", "zabbix", "--no-sync"]),
                       check=True, capture_output=True, timeout=120)
        options = (f"-h 127.0.0.1 -p {port} -k {sock} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        subprocess.run(_as_postgres([*pg_ctl, "-l", str(sock / "pg.log"), "-o", options, "-w",
                                     "start"]), check=True, capture_output=True, timeout=120)
        started = True
        db = [psql, "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port),
              "-U", "zabbix"]
        subprocess.run([*db, "-d", "postgres", "-c", "create database zabbix"], check=True,
                       capture_output=True, timeout=60)
        for part in ("schema", "images", "data"):
            subprocess.run([*db, "-d", "zabbix"], input=gzip.decompress(
                (SCHEMA / f"{part}.sql.gz").read_bytes()), check=True, capture_output=True,
                timeout=300)
        # A copy of the frontend reading our configuration file (Debian's build looks for it
        # at an absolute path under /etc, which a test must not write).
        web = top / "web"
        shutil.copytree(FRONTEND, web, symlinks=True)
        conf = web / "conf" / "zabbix.conf.php"
        conf.write_text(CONF.format(port=port))
        holder = web / "include" / "classes" / "core" / "CConfigFile.php"
        text = holder.read_text()
        holder.write_text(re.sub(r"(const CONFIG_FILE_PATH = )'[^']*';", rf"\1'{conf}';", text))
        php_proc = subprocess.Popen([php, "-S", f"127.0.0.1:{web_port}", "-t", str(web)],
                                    cwd=web, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        frontend = Frontend(f"http://127.0.0.1:{web_port}/api_jsonrpc.php")
        deadline = time.monotonic() + 30
        while True:
            try:
                version = frontend.call("apiinfo.version", {})
                break
            except (httpx.HTTPError, ValueError):
                if time.monotonic() > deadline or php_proc.poll() is not None:
                    raise
                time.sleep(0.2)
        assert str(version).startswith("6.")
        frontend.token = frontend.call("user.login", {"username": "Admin", "password": "zabbix"})
        yield frontend
    finally:
        if php_proc is not None:
            php_proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                php_proc.wait(timeout=10)
            if php_proc.poll() is None:
                php_proc.kill()
                php_proc.wait()
        if started:
            subprocess.run(_as_postgres([*pg_ctl, "-m", "immediate", "-w", "stop"]),
                           check=False, capture_output=True, timeout=60)
        shutil.rmtree(top, ignore_errors=True)


def shipped() -> tuple[str, dict[str, Any]]:
    text = TEMPLATE.read_text()
    return text, yaml.safe_load(text)["zabbix_export"]


def test_the_shipped_template_imports(zabbix: Frontend) -> None:
    text, export = shipped()
    assert zabbix.call("configuration.import",
                       {"format": "yaml", "source": text, "rules": RULES}) is True
    for template in export["templates"]:
        found = zabbix.call("template.get", {
            "filter": {"host": [template["template"]]}, "output": ["host"],
            "selectItems": "count", "selectDiscoveries": "count", "selectTriggers": "count",
            "selectMacros": ["macro", "value"], "selectValueMaps": ["name"],
        })
        assert len(found) == 1, template["template"]
        got = found[0]
        assert int(got["items"]) == len(template.get("items", []))
        assert int(got["discoveries"]) == len(template.get("discovery_rules", []))
        assert {m["macro"]: m["value"] for m in got["macros"]} == {
            m["macro"]: str(m.get("value", "")) for m in template.get("macros", [])}
        assert {v["name"] for v in got["valuemaps"]} == {
            v["name"] for v in template.get("valuemaps", [])}
        # Triggers live on items and at the top level of the export.
        expected_triggers = sum(len(i.get("triggers", [])) for i in template.get("items", []))
        expected_triggers += sum(
            1 for t in export.get("triggers", []) if f"/{template['template']}/" in
            t["expression"])
        assert int(got["triggers"]) == expected_triggers
        rules = zabbix.call("discoveryrule.get", {
            "templateids": [got["templateid"]], "output": ["key_"], "selectItems": "count"})
        by_key = {r["key_"]: r for r in rules}
        for rule in template.get("discovery_rules", []):
            assert int(by_key[rule["key"]]["items"]) == len(rule.get("item_prototypes", []))
    # An operator importing it again (an upgrade) changes nothing and fails nothing.
    assert zabbix.call("configuration.import",
                       {"format": "yaml", "source": text, "rules": RULES}) is True


def test_no_license_data_trigger_imports_with_its_dependency(zabbix: Frontend) -> None:
    """The frontend accepts the nodata trigger on pmta.license.days and its dependency on the
    agent's own nodata trigger (another item's), and keeps both as written."""
    text, _ = shipped()
    assert zabbix.call("configuration.import",
                       {"format": "yaml", "source": text, "rules": RULES}) is True
    triggers = zabbix.call("trigger.get", {
        "filter": {"description": "PowerMTA: no license data for "
                                  "{$PMTA.LICENSE.NODATA.TIMEOUT}"},
        "templated": True, "expandExpression": True,
        "output": ["description", "expression", "priority"],
        "selectDependencies": ["description"], "selectItems": ["key_"],
    })
    assert len(triggers) == 1
    (trigger,) = triggers
    assert [i["key_"] for i in trigger["items"]] == ["pmta.license.days"]
    # expandExpression also resolves the template's macro: three hours without a value.
    assert trigger["expression"] == "nodata(/PowerMTA by SNMP/pmta.license.days,3h)=1"
    assert trigger["priority"] == "2"  # WARNING
    assert [d["description"] for d in trigger["dependencies"]] == [
        "pmta-snmp: no SNMP data for {$PMTA.NODATA.TIMEOUT}"]


def test_outcome_trigger_prototypes_import_as_written(zabbix: Frontend) -> None:
    """The deliverability discoveries' trigger prototypes (hard bounce and complaint rate per
    provider, gated on volume; blocklist rejections per source IP) are accepted by the
    frontend with their two-item expressions, context macros and dependencies."""
    text, export = shipped()
    assert zabbix.call("configuration.import",
                       {"format": "yaml", "source": text, "rules": RULES}) is True
    (template,) = export["templates"]
    want = {t["name"]: t for r in template["discovery_rules"]
            if r["key"] in ("pmta.provider.discovery", "pmta.sourceip.discovery")
            for t in r.get("trigger_prototypes", [])}
    assert len(want) == 5
    got = zabbix.call("triggerprototype.get", {
        "filter": {"description": list(want)}, "templated": True,
        "output": ["description", "expression", "priority"],
        "selectDependencies": ["description"], "selectItems": ["key_"],
        "selectDiscoveryRule": ["key_"],
    })
    assert {g["description"] for g in got} == set(want)
    priorities = {"WARNING": "2", "HIGH": "4"}
    for g in got:
        w = want[g["description"]]
        assert g["priority"] == priorities[w["priority"]]
        keys = sorted(i["key_"] for i in g["items"])
        assert keys == sorted(set(re.findall(r"/PowerMTA by SNMP/([^)]+)\)", w["expression"])))
        if "rate above" in g["description"]:
            assert len(keys) == 2  # the rate and the volume it needs
        if "{$PMTA.PROVIDER.HARD_BOUNCE.WARN" in g["description"]:
            assert [d["description"] for d in g["dependencies"]] == [
                d["name"] for d in w["dependencies"]]


def test_a_broken_template_is_refused(zabbix: Frontend) -> None:
    """The import really validates: a copy with one bad item key is refused."""
    _, export = shipped()
    broken = {"zabbix_export": dict(export)}
    template = dict(export["templates"][0], template="PMTA broken copy",
                    name="PMTA broken copy", discovery_rules=[], dashboards=[])
    items = [dict(i) for i in template["items"]]
    items[0]["key"] = "not a valid key["
    for item in items:
        item.pop("triggers", None)
    template["items"] = items
    broken["zabbix_export"]["templates"] = [template]
    broken["zabbix_export"].pop("triggers", None)
    broken["zabbix_export"].pop("graphs", None)
    with pytest.raises(ZabbixError, match="key"):
        zabbix.call("configuration.import", {
            "format": "yaml", "source": yaml.safe_dump(broken), "rules": RULES})


def test_list_completeness_items_and_triggers_import_as_written(zabbix: Frontend) -> None:
    """Rows listed and rows known of each table (issue 18) are items of the template, and the
    frontend accepts each table's two-item WARNING trigger, names and all."""
    text, export = shipped()
    assert zabbix.call("configuration.import",
                       {"format": "yaml", "source": text, "rules": RULES}) is True
    kinds = ("vmta", "domain", "queue")
    keys = [f"pmta.{k}.rows.{w}" for k in kinds for w in ("listed", "known")]
    items = zabbix.call("item.get", {
        "templated": True, "filter": {"key_": keys}, "output": ["key_", "snmp_oid", "type"],
    })
    (template,) = export["templates"]
    want_oids = {i["key"]: i["snmp_oid"] for i in template["items"]}
    assert {i["key_"]: i["snmp_oid"] for i in items} == {k: want_oids[k] for k in keys}
    assert {i["type"] for i in items} == {"20"}  # SNMP agent
    names = {k: f"PowerMTA: per-{one} table incomplete: {{ITEM.LASTVALUE1}} of "
                f"{{ITEM.LASTVALUE2}} rows listed"
             for k, one in zip(kinds, ("VirtualMTA", "domain", "queue"), strict=True)}
    triggers = zabbix.call("trigger.get", {
        "filter": {"description": list(names.values())}, "templated": True,
        "output": ["description", "expression", "priority", "comments"],
        "selectItems": ["key_"], "expandExpression": True,
    })
    assert {t["description"] for t in triggers} == set(names.values())
    for kind, name in names.items():
        (t,) = [t for t in triggers if t["description"] == name]
        assert t["expression"] == (f"last(/PowerMTA by SNMP/pmta.{kind}.rows.listed)"
                                   f"<last(/PowerMTA by SNMP/pmta.{kind}.rows.known)")
        assert t["priority"] == "2"  # WARNING
        assert sorted(i["key_"] for i in t["items"]) == [
            f"pmta.{kind}.rows.known", f"pmta.{kind}.rows.listed"]
        assert '"Complete lists of queues, domains and VirtualMTAs"' in t["comments"]
        assert '"Monitor from Zabbix"' in t["comments"]
