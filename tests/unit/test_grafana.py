"""The Grafana dashboard generator: layout, variables, and the link to the metric catalogue."""

from __future__ import annotations

import json

import pytest

from pmta_snmp.integrations import grafana
from pmta_snmp.metrics import CATALOGUE, by_name, help_texts


def test_every_query_names_only_catalogued_metrics() -> None:
    names = by_name()
    for title, expr in grafana.queries():
        used = grafana.metric_names(expr)
        assert used, f"{title}: no metric found in {expr}"
        assert used <= set(names), f"{title}: {used - set(names)}"


def test_a_metric_missing_from_the_catalogue_is_refused() -> None:
    helps = help_texts()
    del helps["pmta_queue_backoff"]
    with pytest.raises(ValueError, match="pmta_queue_backoff"):
        grafana.dashboard(helps)


def test_metric_names_sees_histogram_series_and_ignores_labels() -> None:
    expr = ('histogram_quantile(0.9, sum by (le) (rate(pmta_delivery_delay_seconds_bucket'
            '{provider=~"pmta_x"}[5m])))')
    assert grafana.metric_names(expr) == {"pmta_delivery_delay_seconds"}


def test_panels_tile_the_grid_without_overlap_and_ids_are_unique() -> None:
    board = grafana.dashboard()
    cells: set[tuple[int, int]] = set()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))


def test_descriptions_come_from_help_texts() -> None:
    helps = help_texts()
    for row in grafana.ROWS:
        for panel in row.panels:
            assert panel.metric in helps
    board = grafana.dashboard()
    backoff = next(p for p in board["panels"] if p["title"] == "Queues in backoff and paused")
    assert backoff["description"] == helps["pmta_queue_backoff"]


def test_variables_and_datasource() -> None:
    board = grafana.dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert {"instance", "provider", "source_ip"} <= set(variables)
    for p in board["panels"]:
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert all('instance=~"$instance"' in t["expr"] for t in p["targets"]), p["title"]


def test_rendering_is_stable() -> None:
    assert grafana.render() == grafana.render()
    assert json.loads(grafana.render())["uid"] == grafana.UID


def test_catalogue_names_follow_the_conventions() -> None:
    for m in CATALOGUE:
        assert m.name.startswith("pmta_")
        assert (m.kind == "counter") == m.name.endswith("_total"), m.name
        assert m.help.endswith("."), m.name


def test_shipped_dashboard_is_the_generated_one() -> None:
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / grafana.DASHBOARD_FILE
    assert shipped.read_text() == grafana.render(), \
        "run: pmta-snmp gen grafana --out contrib/grafana"
