"""The shipped Grafana dashboard's queries against a real Prometheus scraping the real exporter.

No Grafana server runs here, so what can be tested for real is tested: Prometheus (Debian's
package, foreground, temp dir, 127.0.0.1) scrapes `pmta-snmp exporter` polling the simulator's
API and following its accounting files (deliveries, bounces, deferrals, feedback-loop
complaints, a blocklisted source IP); every panel's PromQL, with the dashboard variables
substituted as Grafana does for "All", must parse and return at least one series, and every
variable's `label_values` query must find values. The same Prometheus loads the shipped alert
rules: every rule evaluates on the real series without error, and every series a rule selects
is one the exporter serves.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pmta_snmp.config import AcctSection, Config, PmtaSection, PollSection
from pmta_snmp.exporter import Exporter
from pmta_snmp.integrations import grafana
from pmta_snmp.sim import Simulator
from tests.integration.kit_support import CONTRIB, require_program, wait_until
from tests.integration.prom_support import Prometheus

API_KEY = "g" * 40
ALERTS = CONTRIB / "prometheus" / "pmta-alerts.yml"
SUBSTITUTE = {"$instance": ".*", "$provider": ".*", "$source_ip": ".*",
              "$__rate_interval": "1m"}


def substituted(expr: str) -> str:
    """`expr` as Grafana sends it with every variable at "All" (regex .*)."""
    for var, value in SUBSTITUTE.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, expr
    return expr


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    tmp = tmp_path_factory.mktemp("grafana")
    # 60 simulated seconds per second: the IP is listed after 5 simulated minutes, the
    # feedback loops report complaints as the mail is delivered.
    sim = Simulator("blocklisted", speed=60, api_key=API_KEY, domains=200,
                    acct_dir=tmp / "acct", acct_records=("d", "b", "t", "tq", "f")).start()
    key_file = tmp / "api-key"
    key_file.write_text(API_KEY + "\n")
    cfg = Config(pmta=PmtaSection(url=sim.url, api_key_file=str(key_file), timeout=5.0),
                 poll=PollSection(interval=1.0, jitter=0.0),
                 acct=AcctSection(files=str(tmp / "acct" / "acct*.csv"),
                                  state_dir=str(tmp / "state"), interval=0.5,
                                  save_interval=1.0))
    try:
        with Exporter(cfg, listen="127.0.0.1:0") as exporter:
            prom = Prometheus(tmp / "prom", [f"127.0.0.1:{exporter.port}"])
            prom.config["rule_files"] = [str(ALERTS)]
            with prom:
                # Rates need two scrapes of a moving counter; hang guards, not speed claims.
                assert wait_until(lambda: prom.query("rate(pmta_polls_total[1m]) > 0"), 120), \
                    prom.log_text()
                assert wait_until(lambda: prom.query(
                    'rate(pmta_outcomes_total{result="delivered"}[1m]) > 0'), 120), \
                    prom.log_text()
                yield prom
    finally:
        sim.stop()


QUERIES = list(grafana.queries())


def test_the_dashboard_has_a_query_for_every_row() -> None:
    """The extraction below sees the panels (a dashboard whose queries it missed would pass
    the next test vacuously)."""
    names = " ".join(expr for _, expr in QUERIES)
    for family in ("pmta_up", "pmta_queued_recipients", "pmta_traffic_messages_total",
                   "pmta_outcomes_total", "pmta_complaints_total",
                   "pmta_source_ip_outcomes_total", "pmta_blocklist_rejections_total",
                   "pmta_delivery_delay_seconds_bucket", "pmta_license_days_left"):
        assert family in names, family


@pytest.mark.parametrize(("title", "expr"), QUERIES,
                         ids=[f"{i}-{t}" for i, (t, _) in enumerate(QUERIES)])
def test_every_panel_query_returns_data(prometheus: Prometheus, title: str, expr: str) -> None:
    query = substituted(expr)
    prometheus.api("query", query=query)  # parses (an AssertionError names Prometheus' error)
    got = wait_until(lambda: prometheus.query(query), 90)
    assert got, f"panel {title!r}: no series for {query}"


def test_variables_find_values(prometheus: Prometheus) -> None:
    board = json.loads((CONTRIB / "grafana" / grafana.DASHBOARD_FILE).read_text())
    variables = [v for v in board["templating"]["list"] if v["type"] == "query"]
    assert {v["name"] for v in variables} >= {"instance", "provider", "source_ip"}
    for var in variables:
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
        assert m, var
        selector, label = substituted(m.group(1)), m.group(2)
        values = wait_until(lambda sel=selector, lab=label: prometheus.api(
            f"label/{lab}/values", **{"match[]": sel}), 60)
        assert values, f"variable {var['name']}: no values for {selector}"


def alert_rules() -> list[dict[str, str]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def rule_name(rule: dict[str, str]) -> str:
    return rule.get("alert") or rule["record"]


def test_every_alert_rule_selects_only_series_the_exporter_serves() -> None:
    from pmta_snmp.metrics import by_name

    catalogue = set(by_name())
    recorded = {rule["record"] for rule in alert_rules() if "record" in rule}
    rules = alert_rules()
    assert len(rules) > 10
    for rule in rules:
        bare = re.sub(r'"[^"]*"', '""', rule["expr"])  # label values are not series
        used = {re.sub(r"_(bucket|count|sum)$", "", name) if name not in catalogue else name
                for name in re.findall(r"(?<![\w:])(pmta[_:][A-Za-z0-9_:]*)", bare)}
        assert used, rule
        assert used <= catalogue | recorded, (rule_name(rule), used - catalogue - recorded)


def test_every_alert_rule_evaluates_on_the_real_series(prometheus: Prometheus) -> None:
    """Loaded by the real Prometheus next to the real exporter: each rule is evaluated without
    error (no many-to-many match, no bad label join on the served label sets)."""
    names = {rule_name(rule) for rule in alert_rules()}

    def evaluated() -> dict[str, dict[str, str]]:
        groups = prometheus.api("rules")["groups"]
        got = {r["name"]: r for g in groups for r in g["rules"]}
        ready = set(got) == names and all(r.get("lastEvaluation", "").startswith("2")
                                          and not r["lastEvaluation"].startswith("0001")
                                          for r in got.values())
        return got if ready else {}

    rules = wait_until(evaluated, 60)
    assert rules, prometheus.api("rules")
    bad = {name: r.get("lastError") for name, r in rules.items() if r["health"] != "ok"}
    assert not bad, bad


def panel_query(title: str) -> str:
    (expr,) = [expr for t, expr in QUERIES if t == title]
    return substituted(expr)


YOUNG_SERIES_TESTS = (
    # A blocklist series born 30 min ago at 1 (its first rejection) and still 1: one rejection
    # in the last hour, as PmtaBlocklistRejection says.
    ("Blocklist rejections by source IP (1 h)", "1m",
     [('pmta_blocklist_rejections_total{instance="mta1:9099", job="pmta", '
       'source_ip="192.0.2.7", blocklist="spamhaus"}', "_x30 1x30")],
     "round({q})", 45, {"source_ip": "192.0.2.7", "blocklist": "spamhaus"}, 1),
    # One complaint (a series born 4 h ago at 1) in 24 h of 14,400 deliveries at yahoo.
    ("Complaint rate by provider (24 h)", "10m",
     [('pmta_complaints_total{instance="mta1:9099", job="pmta", provider="yahoo", '
       'sending_domain="news.example"}', "_x120 1x30"),
      ('pmta_outcomes_total{instance="mta1:9099", job="pmta", provider="yahoo", '
       'result="delivered"}', "0+100x150")],
     "round(({q}) * 14400)", 144, {"provider": "yahoo"}, 1),
    # An old series (5 rejections long ago, none since) whose scrapes failed an hour ago:
    # nothing in the last hour, not its whole total.
    ("Blocklist rejections by source IP (1 h)", "1m",
     [('pmta_blocklist_rejections_total{instance="mta1:9099", job="pmta", '
       'source_ip="192.0.2.7", blocklist="spamhaus"}', "5x30 _x10 5x100")],
     "round({q})", 100, {"source_ip": "192.0.2.7", "blocklist": "spamhaus"}, 0),
)


@pytest.mark.parametrize(("title", "interval", "series", "wrap", "step", "labels", "value"),
                         YOUNG_SERIES_TESTS,
                         ids=[f"{i}-{t[0]}" for i, t in enumerate(YOUNG_SERIES_TESTS)])
def test_panels_count_the_first_event_of_a_young_series(
    tmp_path: Path, title: str, interval: str, series: list[tuple[str, str]], wrap: str,
    step: int, labels: dict[str, str], value: float,
) -> None:
    """A complaint or blocklist series is born at 1 with its first event, which increase()
    alone cannot see: the panel counts it, as the alert rules do, and an old series missing
    a window ago is no birth (promtool evaluates)."""
    minutes = step * (10 if interval == "10m" else 1)
    doc = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": interval,
        "input_series": [{"series": s, "values": v} for s, v in series],
        "promql_expr_test": [{"expr": wrap.format(q=panel_query(title)),
                              "eval_time": f"{minutes}m",
                              "exp_samples": [{"labels": "{" + ", ".join(
                                  f'{k}="{v}"' for k, v in labels.items()) + "}",
                                  "value": value}]}],
    }]}
    (tmp_path / "panel.test.yml").write_text(yaml.safe_dump(doc))
    out = subprocess.run([require_program("promtool", "prometheus"), "test", "rules",
                          "panel.test.yml"], capture_output=True, text=True, check=False,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
