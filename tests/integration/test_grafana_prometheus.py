"""The shipped Grafana dashboard's queries against a real Prometheus scraping the real exporter.

No Grafana server runs here, so what can be tested for real is tested: Prometheus (Debian's
package, foreground, temp dir, 127.0.0.1) scrapes `pmta-snmp exporter` following the
simulator's API and accounting files; every panel's PromQL, with the dashboard variables
substituted as Grafana would for "All", must parse and return at least one series, and every
variable's `label_values` query must find values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from pmta_snmp.config import Config, PmtaSection, PollSection
from pmta_snmp.exporter import Exporter
from pmta_snmp.integrations import grafana
from pmta_snmp.sim import Simulator
from tests.integration.kit_support import CONTRIB, wait_until
from tests.integration.prom_support import Prometheus

API_KEY = "g" * 40
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
    acct = tmp / "acct"
    sim = Simulator(speed=60, api_key=API_KEY, acct_dir=acct, domains=200).start()
    key_file = tmp / "api-key"
    key_file.write_text(API_KEY + "\n")
    cfg = Config(pmta=PmtaSection(url=sim.url, api_key_file=str(key_file), timeout=5.0),
                 poll=PollSection(interval=1.0, jitter=0.0))
    try:
        with Exporter(cfg, listen="127.0.0.1:0") as exporter, \
                Prometheus(tmp / "prom", [f"127.0.0.1:{exporter.port}"]) as prom:
            # Rates need two scrapes of a moving counter; a hang guard, not a speed claim.
            assert wait_until(lambda: prom.query("rate(pmta_polls_total[1m]) > 0"), 120), \
                prom.log_text()
            yield prom
    finally:
        sim.stop()


def test_shipped_dashboard_is_the_generated_one() -> None:
    shipped = (CONTRIB / "grafana" / grafana.DASHBOARD_FILE).read_text()
    assert shipped == grafana.render(), "run: pmta-snmp gen grafana --out contrib/grafana"


@pytest.mark.parametrize(("title", "expr"), list(grafana.queries()),
                         ids=[f"{t}-{i}" for i, (t, _) in enumerate(grafana.queries())])
def test_every_panel_query_returns_data(prometheus: Prometheus, title: str, expr: str) -> None:
    query = substituted(expr)
    got = wait_until(lambda: prometheus.query(query), 60)
    assert got, f"panel {title!r}: no series for {query}"


def test_variables_find_values(prometheus: Prometheus) -> None:
    board = json.loads((CONTRIB / "grafana" / grafana.DASHBOARD_FILE).read_text())
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
        assert m, var
        selector, label = substituted(m.group(1)), m.group(2)
        values = wait_until(lambda sel=selector, lab=label: prometheus.api(
            f"label/{lab}/values", **{"match[]": sel}), 60)
        assert values, f"variable {var['name']}: no values for {selector}"


def test_catalogue_matches_what_the_exporter_serves(prometheus: Prometheus) -> None:
    """Every family Prometheus scraped is in the catalogue with its type and HELP text."""
    from pmta_snmp.metrics import by_name

    catalogue = by_name()
    meta = prometheus.api("metadata")
    ours = {name: entries[0] for name, entries in meta.items() if name.startswith("pmta_")}
    assert ours, "no pmta_ metadata scraped"
    for family, entry in ours.items():
        name = f"{family}_total" if entry["type"] == "counter" else family
        assert name in catalogue, f"{name} is served but not in pmta_snmp.metrics"
        assert catalogue[name].kind == entry["type"], name
        assert catalogue[name].help == entry["help"], name
