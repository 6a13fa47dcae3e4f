"""The shipped UserParameter file through the real Zabbix agent: `zabbix_agentd -t KEY` runs
every key against the simulator (API, accounting file, main log) and prints what Zabbix
would store.

`zabbix_agentd -t` exits 0 even for an unsupported key, so the printed value is checked. The
agent runs the commands with its own environment: the plugins are found on PATH, the state
directory comes from PMTA_SNMP_STATE_DIR and the API key from PMTA_API_KEY, all passed through.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from pmta_snmp.integrations import PLUGIN_MODULES
from pmta_snmp.sim import Simulator
from tests.integration.kit_support import CONTRIB, install_plugins, require_program
from tests.integration.test_checks_support import noon_zone, write_plan

USERPARAMETERS = CONTRIB / "zabbix" / "userparameter_pmta.conf"
API_KEY = "k" * 40
_RESULT = re.compile(r"^(?P<key>\S.*?)\s+\[(?P<type>[a-z])\|(?P<value>.*)\]\s*$", re.DOTALL)


@dataclass
class Agent:
    exe: str
    config: Path
    env: dict[str, str]

    def get(self, key: str) -> tuple[str, str]:
        """(type letter, value) of `zabbix_agentd -t key`; `m` is an agent-side error."""
        res = subprocess.run(
            [self.exe, "-c", str(self.config), "-t", key], env=self.env,
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert res.returncode == 0, res.stderr
        m = _RESULT.match(res.stdout.strip())
        assert m is not None, f"unexpected output for {key}: {res.stdout!r} {res.stderr!r}"
        assert m.group("key") == key
        return m.group("type"), m.group("value")

    def value(self, key: str) -> str:
        kind, value = self.get(key)
        assert kind == "t", (key, kind, value)
        assert not value.startswith("ZBX_NOTSUPPORTED"), (key, value)
        return value

    def json(self, key: str) -> object:
        return json.loads(self.value(key))


@dataclass
class Pmta:
    sim: Simulator
    acct: Path
    log: Path
    key_file: Path
    plan: Path


@pytest.fixture
def pmta(tmp_path: Path) -> Iterator[Pmta]:
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY + "\n", encoding="utf-8")
    zone, today = noon_zone()
    plan = write_plan(tmp_path / "warmup.toml", f"""
        timezone = "{zone}"
        [[warmup]]
        vmta = "vmta-a"
        start = {today - timedelta(days=1)}
        caps = [1000, 2000, 4000]
        """)
    # http-default-max-items raised: discovery (which reads the pages) finds every item.
    sim = Simulator(speed=0, api_key=API_KEY, acct_dir=tmp_path / "acct",
                    log_path=tmp_path / "log" / "pmta.log", max_items=None,
                    acct_records=("d", "b", "t", "tq", "f"))
    sim.start()
    try:
        sim.advance(300)  # some accounting records and log lines to start with
        yield Pmta(sim, tmp_path / "acct" / "acct.csv", tmp_path / "log" / "pmta.log", key_file,
                   plan)
    finally:
        sim.stop()


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    exe = require_program("zabbix_agentd", "zabbix-agent")
    plugins = install_plugins(tmp_path / "plugins")
    config = tmp_path / "zabbix_agentd.conf"
    config.write_text(
        "LogType=console\n"
        f"PidFile={tmp_path / 'zabbix_agentd.pid'}\n"
        "AllowRoot=1\n"
        "Timeout=3\n"  # the agent's default: the plugins' -t must fit inside it
        f"Include={USERPARAMETERS}\n",
        encoding="utf-8",
    )
    env = dict(os.environ)
    env.pop("PMTA_API_KEY", None)
    env.update(PATH=f"{plugins}:{env.get('PATH', '/usr/bin:/bin')}",
               PMTA_SNMP_STATE_DIR=str(tmp_path / "state"))
    return Agent(exe, config, env)


def shipped_keys() -> set[str]:
    return set(re.findall(r"^UserParameter=([^\[,]+)\[\*\],", USERPARAMETERS.read_text(), re.M))


def test_every_plugin_has_a_json_key() -> None:
    assert {f"pmta.{m}.json" for m in PLUGIN_MODULES} <= shipped_keys()


def test_every_key_answers_through_the_agent(agent: Agent, pmta: Pmta) -> None:
    sim, url = pmta.sim, pmta.sim.url
    truth = sim.snapshot()
    tested: set[str] = set()

    def key(name: str, *params: object) -> str:
        tested.add(name)
        return f"{name}[{','.join(str(p) for p in params)}]"

    # API plugins: the value, the JSON status and discovery against the model's truth.
    assert agent.value(key("pmta.queue", url)) == str(truth.status.queued_recipients)
    doc = agent.json(key("pmta.queue.json", url))
    assert isinstance(doc, dict)
    assert doc["status"] == 0 and doc["metrics"]["rcpt"] == truth.status.queued_recipients
    for kind, macro, names in (
        ("vmtas", "{#VMTA}", {v.name for v in truth.vmtas}),
        ("domains", "{#DOMAIN}", {d.name for d in truth.domains}),
        ("queues", "{#QUEUE}", {q.name for q in truth.queues}),
    ):
        rows = agent.json(key("pmta.queue.discovery", kind, url))
        assert isinstance(rows, list)
        assert {row[macro] for row in rows} == names, kind

    assert truth.license is not None and truth.status.runtime.time_now is not None
    days = truth.license.days_left(truth.status.runtime.time_now.date())
    # An empty parameter (the CA file) is left out; the key file is the third parameter.
    assert agent.value(key("pmta.license", url, "", pmta.key_file)) == str(days)
    lic = agent.json(key("pmta.license.json", url, "", pmta.key_file))
    assert isinstance(lic, dict) and lic["status"] == 0, lic

    # File plugins: a first run positions itself, the next one judges the new records.
    for module, params in (
        ("bounce", (pmta.acct,)),
        ("deferral", (pmta.acct,)),
        ("tls", (pmta.acct, pmta.log)),
        ("log", (pmta.log,)),
        ("complaints", (pmta.acct,)),
        ("blocklist", (pmta.acct,)),
        ("warmup", (pmta.acct, pmta.plan)),
    ):
        agent.json(key(f"pmta.{module}.json", *params))
        sim.advance(120)
        doc = agent.json(key(f"pmta.{module}.json", *params))
        assert isinstance(doc, dict)
        assert doc["status"] in (0, 1, 2), (module, doc)
        assert doc["summary"], (module, doc)
        if module == "blocklist":  # a healthy simulator: no IP is listed
            assert doc["summary"] == "no rejections naming a blocklist in the last 24 h", doc
            continue
        # the second run read the records/lines written in between
        assert any(v for v in doc["metrics"].values()), (module, doc)
    for module, kind, params in (
        ("bounce", "domains", (pmta.acct,)),
        ("deferral", "domains", (pmta.acct,)),
        ("tls", "domains", (pmta.acct, pmta.log)),
    ):
        rows = agent.json(key(f"pmta.{module}.discovery", kind, *params))
        assert isinstance(rows, list), (module, rows)
        assert all(set(row) == {"{#DOMAIN}"} for row in rows), (module, rows)
    source_ips = {v.source_ip for v in sim.state.vmta_infos.values()}
    rows = agent.json(key("pmta.blocklist.discovery", "source-ips", pmta.acct))
    assert isinstance(rows, list) and {r["{#SOURCEIP}"] for r in rows} <= source_ips, rows
    assert rows, "no source IP discovered"
    rows = agent.json(key("pmta.complaints.discovery", "providers", pmta.acct))
    assert isinstance(rows, list) and {"gmail", "yahoo"} <= {r["{#PROVIDER}"] for r in rows}
    rows = agent.json(key("pmta.warmup.discovery", "vmtas", pmta.acct, pmta.plan))
    assert rows == [{"{#VMTA}": "vmta-a"}]

    assert tested == shipped_keys(), "a shipped key is not exercised by this test"


def test_api_key_from_the_agent_environment(agent: Agent, pmta: Pmta) -> None:
    assert agent.get(f"pmta.license[{pmta.sim.url}]")[1].startswith("ZBX_NOTSUPPORTED")
    agent.env["PMTA_API_KEY"] = API_KEY
    assert int(agent.value(f"pmta.license[{pmta.sim.url}]")) > 0


def test_errors_are_values_the_agent_reports(agent: Agent, pmta: Pmta) -> None:
    # PowerMTA down: the plugin's own message, as the text Zabbix stores (item unsupported).
    pmta.sim.set_fault("down")
    kind, value = agent.get(f"pmta.queue[{pmta.sim.url}]")
    assert kind == "t" and value.startswith("ZBX_NOTSUPPORTED: "), value
    doc = json.loads(agent.get(f"pmta.queue.json[{pmta.sim.url}]")[1])
    assert doc["status"] == 3 and doc["error"]
    # Shell metacharacters never reach the shell: the agent refuses the key itself.
    kind, value = agent.get("pmta.queue[x;touch /tmp/pwned]")
    assert kind == "m" and "not allowed" in value


@pytest.fixture
def default_pmta() -> Iterator[Simulator]:
    """A PowerMTA with its default config: the pages list the top 10 of 200 domains."""
    with Simulator(scenario="scale", domains=200, vmtas=4, seed=3, speed=0,
                   api_key=API_KEY) as sim:
        yield sim


def test_discovery_through_the_agent_is_complete_with_a_key(
    agent: Agent, default_pmta: Simulator
) -> None:
    truth = default_pmta.snapshot()
    url = default_pmta.url
    # No key: the pages' top 10. The note about the missing rows goes to stderr only when
    # stderr is not the agent's one pipe, so the value stays valid JSON.
    rows = agent.json(f"pmta.queue.discovery[domains,{url}]")
    assert isinstance(rows, list) and len(rows) == 10, rows
    agent.env["PMTA_API_KEY"] = API_KEY
    for kind, macro, names in (
        ("domains", "{#DOMAIN}", {d.name for d in truth.domains}),
        ("queues", "{#QUEUE}", {q.name for q in truth.queues}),
    ):
        rows = agent.json(f"pmta.queue.discovery[{kind},{url}]")
        assert isinstance(rows, list)
        assert {row[macro] for row in rows} == names, kind
    assert len(truth.domains) == 200
