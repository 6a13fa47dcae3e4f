"""The Grafana dashboard `contrib/grafana/pmta-overview.json`, generated from panel specs.

Every panel names the exporter's metrics in PromQL; the generator takes each panel's
description from the metric's HELP text in the exporter's catalogue (`pmta_snmp.metrics`)
and refuses a query that names a metric the exporter does not publish, so the dashboard
cannot drift from `/metrics` (a test compares the shipped file with a fresh generation and
runs every query against a real Prometheus scraping the real exporter).

The JSON follows Grafana's dashboard model (schemaVersion 39, Grafana 10.4 and later) with a
Prometheus data-source variable, so it imports on any Grafana without editing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = [
    "DASHBOARD_FILE",
    "ROWS",
    "Panel",
    "Query",
    "Row",
    "dashboard",
    "metric_names",
    "queries",
    "render",
    "write",
]

DASHBOARD_FILE: Final = "pmta-overview.json"
UID: Final = "pmta-snmp-overview"
SCHEMA_VERSION: Final = 39
DS: Final[dict[str, str]] = {"type": "prometheus", "uid": "${datasource}"}

_I: Final = 'instance=~"$instance"'
_P: Final = 'provider=~"$provider"'
_S: Final = 'source_ip=~"$source_ip"'
_FINAL: Final = "delivered|hard_bounce|soft_bounce|block_bounce"
_RI: Final = "$__rate_interval"


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL target and its legend."""

    expr: str
    legend: str = ""


@dataclass(frozen=True, slots=True)
class Panel:
    """A panel: `metric` is the exporter metric whose HELP text describes it."""

    title: str
    metric: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 12
    thresholds: tuple[tuple[float, str], ...] = ()
    """(value, colour) steps drawn as lines on a time series, colours on a stat."""
    stack: bool = False
    instant: bool = False


@dataclass(frozen=True, slots=True)
class Row:
    """A collapsible row of panels."""

    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def _increase(selector: str, window: str) -> str:
    """increase() over `window` that also counts a series born inside it with its whole value.

    A complaint, blocklist or reason series is born at 1 with its first event, which
    increase() alone never sees (as the alert rules' recording rules do). Young: absent for
    the whole window before, not just at its start (a failed scrape then is no birth).
    """
    return (f"({selector} unless present_over_time({selector}[{window}] offset {window})) "
            f"or increase({selector}[{window}])")


def _ratio(num: str, den: str, by: str) -> str:
    return f"sum by ({by}) ({num})\n/\n(sum by ({by}) ({den}) > 0)"


ROWS: Final[tuple[Row, ...]] = (
    Row("Health", (
        Panel("PowerMTA API reachable", "pmta_up",
              (Query(f"pmta_up{{{_I}}}", "{{instance}}"),), kind="stat", width=6,
              thresholds=((0, "red"), (1, "green"))),
        Panel("Data age", "pmta_data_age_seconds",
              (Query(f"pmta_data_age_seconds{{{_I}}}", "{{instance}}"),), unit="s", width=6,
              thresholds=((0, "green"), (300, "red"))),
        Panel("Poll errors", "pmta_poll_errors_total",
              (Query(f"rate(pmta_poll_errors_total{{{_I}}}[{_RI}])", "{{instance}} errors/s"),
               Query(f"pmta_poll_consecutive_errors{{{_I}}}", "{{instance}} in a row")),
              width=6),
        # The lag keeps its last value when reads stop: the time since the last read shows it.
        Panel("Accounting reader lag", "pmta_acct_lag_seconds",
              (Query(f"pmta_acct_lag_seconds{{{_I}}}", "{{instance}} lag"),
               Query(f"time() - pmta_acct_last_read_timestamp_seconds{{{_I}}}",
                     "{{instance}} since the last read")), unit="s", width=6,
              thresholds=((0, "green"), (300, "red"))),
    )),
    Row("Queue", (
        Panel("Queued recipients by queue type", "pmta_queued_recipients",
              (Query(f"pmta_queued_recipients{{{_I}}}", "{{instance}} {{type}}"),),
              thresholds=((0, "green"), (50000, "orange"), (100000, "red"))),
        Panel("Top domains by queued recipients", "pmta_domain_queued_recipients",
              (Query(f'topk(10, pmta_domain_queued_recipients{{{_I}, domain!="(other)"}})',
                     "{{domain}}"),)),
        Panel("Top queues by queued recipients", "pmta_queue_recipients",
              (Query(f'topk(10, pmta_queue_recipients{{{_I}, queue!="(other)"}})',
                     "{{queue}}"),)),
        Panel("Queues in backoff and paused", "pmta_queue_backoff",
              (Query(f"sum by (instance) (pmta_queue_backoff{{{_I}}})", "{{instance}} backoff"),
               Query(f"sum by (instance) (pmta_queue_paused{{{_I}}})", "{{instance}} paused"))),
    )),
    Row("Throughput", (
        Panel("Messages per second", "pmta_traffic_messages_total",
              (Query(f"rate(pmta_traffic_messages_total{{{_I}}}[{_RI}])",
                     "{{instance}} {{direction}}"),), unit="ops"),
        Panel("Recipients per second", "pmta_traffic_recipients_total",
              (Query(f"rate(pmta_traffic_recipients_total{{{_I}}}[{_RI}])",
                     "{{instance}} {{direction}}"),), unit="ops"),
        Panel("SMTP connections", "pmta_smtp_connections",
              (Query(f"pmta_smtp_connections{{{_I}}}", "{{instance}} {{direction}}"),
               Query(f"pmta_smtp_connections_max{{{_I}}}", "{{instance}} {{direction}} max"))),
        Panel("Bytes per second", "pmta_traffic_bytes_total",
              (Query(f"rate(pmta_traffic_bytes_total{{{_I}}}[{_RI}])",
                     "{{instance}} {{direction}}"),), unit="Bps"),
    )),
    Row("Providers", (
        Panel("Delivered per second by provider", "pmta_outcomes_total",
              (Query(f'sum by (provider) (rate(pmta_outcomes_total{{{_I}, {_P}, '
                     f'result="delivered"}}[{_RI}]))', "{{provider}}"),), unit="ops",
              stack=True),
        Panel("Bounce rate by provider and class", "pmta_outcomes_total",
              tuple(Query(_ratio(
                  f'rate(pmta_outcomes_total{{{_I}, {_P}, result="{cls}"}}[{_RI}])',
                  f'rate(pmta_outcomes_total{{{_I}, {_P}, result=~"{_FINAL}"}}[{_RI}])',
                  "provider"), f"{{{{provider}}}} {cls.replace('_bounce', '')}")
                  for cls in ("hard_bounce", "soft_bounce", "block_bounce")),
              unit="percentunit", thresholds=((0, "green"), (0.05, "orange"), (0.07, "red"))),
        Panel("Deferral rate by provider", "pmta_outcomes_total",
              (Query(_ratio(
                  f'rate(pmta_outcomes_total{{{_I}, {_P}, result="deferred"}}[{_RI}])',
                  f'rate(pmta_outcomes_total{{{_I}, {_P}, result=~"{_FINAL}|deferred"}}[{_RI}])',
                  "provider"), "{{provider}}"),),
              unit="percentunit", thresholds=((0, "green"), (0.05, "orange"), (0.15, "red"))),
        Panel("Complaint rate by provider (24 h)", "pmta_complaints_total",
              (Query(_ratio(_increase(f"pmta_complaints_total{{{_I}, {_P}}}", "24h"),
                            f'increase(pmta_outcomes_total{{{_I}, {_P}, '
                            f'result="delivered"}}[24h])', "provider"), "{{provider}}"),),
              unit="percentunit", thresholds=((0, "green"), (0.001, "orange"), (0.003, "red"))),
        Panel("Top reasons for failed deliveries (1 h)", "pmta_outcome_reasons_total",
              (Query(f"topk(10, sum by (provider, reason) "
                     f"({_increase(f'pmta_outcome_reasons_total{{{_I}, {_P}}}', '1h')}))",
                     "{{provider}} {{reason}}"),), kind="bargauge", width=24, instant=True),
    )),
    Row("Source IPs", (
        Panel("Delivered per second by source IP", "pmta_source_ip_outcomes_total",
              (Query(f'sum by (source_ip) (rate(pmta_source_ip_outcomes_total{{{_I}, {_S}, '
                     f'result="delivered"}}[{_RI}]))', "{{source_ip}}"),), unit="ops",
              width=8),
        Panel("Deferral rate by source IP", "pmta_source_ip_outcomes_total",
              (Query(_ratio(
                  f'rate(pmta_source_ip_outcomes_total{{{_I}, {_S}, result="deferred"}}[{_RI}])',
                  f'rate(pmta_source_ip_outcomes_total{{{_I}, {_S}, '
                  f'result=~"{_FINAL}|deferred"}}[{_RI}])', "source_ip"), "{{source_ip}}"),),
              unit="percentunit", width=8,
              thresholds=((0, "green"), (0.05, "orange"), (0.15, "red"))),
        Panel("Blocklist rejections by source IP (1 h)", "pmta_blocklist_rejections_total",
              (Query(f"sum by (source_ip, blocklist) "
                     f"({_increase(f'pmta_blocklist_rejections_total{{{_I}, {_S}}}', '1h')})",
                     "{{source_ip}} {{blocklist}}"),), width=8,
              thresholds=((0, "green"), (1, "orange"), (3, "red"))),
    )),
    Row("Delivery delay", (
        Panel("Delivery delay (final outcomes)", "pmta_delivery_delay_seconds",
              (Query(f"sum by (le) (increase(pmta_delivery_delay_seconds_bucket"
                     f"{{{_I}, {_P}}}[{_RI}]))", "{{le}}"),), kind="heatmap", unit="s"),
        Panel("Delivery delay percentiles", "pmta_delivery_delay_seconds",
              tuple(Query(f"histogram_quantile({q}, sum by (le) "
                          f"(rate(pmta_delivery_delay_seconds_bucket{{{_I}, {_P}}}[{_RI}])))",
                          f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)), unit="s"),
    )),
    Row("License", (
        Panel("License days left", "pmta_license_days_left",
              (Query(f"pmta_license_days_left{{{_I}}}", "{{instance}}"),), kind="stat",
              width=6, unit="d", thresholds=((0, "red"), (7, "orange"), (30, "green"))),
        Panel("PowerMTA uptime", "pmta_uptime_seconds",
              (Query(f"pmta_uptime_seconds{{{_I}}}", "{{instance}}"),), kind="stat",
              width=6, unit="s"),
    )),
)

_METRIC_RE: Final = re.compile(r"\b(pmta_[a-z0-9_]+?)(?:_bucket|_count|_sum)?\b(?=\s*[{\[(])")


def metric_names(expr: str) -> set[str]:
    """The exporter metrics `expr` selects (histogram series by their family name)."""
    return set(_METRIC_RE.findall(expr))


def queries(board: Mapping[str, Any] | None = None) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target of the dashboard, variables left in place."""
    board = board if board is not None else dashboard()
    for row in board["panels"]:
        for panel in [row, *row.get("panels", [])]:
            for target in panel.get("targets", []):
                yield panel["title"], target["expr"]


def _variables() -> list[dict[str, Any]]:
    def query_var(name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "name": name, "label": label, "type": "query", "datasource": DS,
            "definition": query, "query": {"query": query, "refId": f"{name}-var"},
            "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        }

    return [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "current": {}, "hide": 0},
        query_var("instance", "PowerMTA", "label_values(pmta_up, instance)"),
        query_var("provider", "Provider",
                  'label_values(pmta_outcomes_total{instance=~"$instance"}, provider)'),
        query_var("source_ip", "Source IP",
                  'label_values(pmta_source_ip_outcomes_total{instance=~"$instance"}, '
                  "source_ip)"),
    ]


def _field_config(panel: Panel) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": [
            {"value": None if i == 0 else value, "color": colour}
            for i, (value, colour) in enumerate(panel.thresholds)]}
    if panel.kind == "timeseries":
        custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                                  "showPoints": "never", "spanNulls": False}
        if panel.stack:
            custom["stacking"] = {"mode": "normal", "group": "A"}
        if panel.thresholds:
            custom["thresholdsStyle"] = {"mode": "line"}
        defaults["custom"] = custom
    return {"defaults": defaults, "overrides": []}


def _panel(panel: Panel, pid: int, x: int, y: int, helps: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": pid, "type": panel.kind, "title": panel.title,
        "description": helps.get(panel.metric, ""), "datasource": DS,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": _field_config(panel),
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": q.expr,
             "legendFormat": q.legend or "__auto", "range": not panel.instant,
             "instant": panel.instant, **({"format": "heatmap"} if panel.kind == "heatmap"
                                          else {})}
            for i, q in enumerate(panel.queries)],
    }
    if panel.kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                            "values": False},
                          "colorMode": "background", "graphMode": "none"}
    elif panel.kind == "heatmap":
        out["options"] = {"calculate": False, "yAxis": {"unit": panel.unit},
                          "cellGap": 1, "color": {"mode": "scheme", "scheme": "Oranges"}}
    elif panel.kind == "bargauge":
        out["options"] = {"displayMode": "basic", "orientation": "horizontal",
                          "reduceOptions": {"calcs": ["lastNotNull"], "values": False}}
    elif panel.kind == "timeseries":
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                          "tooltip": {"mode": "multi", "sort": "desc"}}
    return out


def dashboard(helps: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model. `helps`: metric name -> HELP text (default:
    the exporter's catalogue); a query naming a metric not in it is a ValueError."""
    if helps is None:
        from pmta_snmp.metrics import help_texts

        helps = help_texts()
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row in ROWS:
        panels.append({"id": pid, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y, x, height = pid + 1, y + 1, 0, 0
        for panel in row.panels:
            unknown = {n for q in panel.queries for n in metric_names(q.expr)} - set(helps)
            unknown |= {panel.metric} - set(helps)
            if unknown:
                raise ValueError(f"panel {panel.title!r} names metrics the exporter does not "
                                 f"publish: {', '.join(sorted(unknown))}")
            if x + panel.width > 24:
                x, y = 0, y + height
            panels.append(_panel(panel, pid, x, y, helps))
            pid, x, height = pid + 1, x + panel.width, 8
        y += height
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "description": "PowerMTA state and deliverability outcomes from pmta-snmp's exporter",
        "editable": True,
        "graphTooltip": 1,
        "links": [],
        "panels": panels,
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["pmta-snmp", "powermta", "email"],
        "templating": {"list": _variables()},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": "PowerMTA overview (pmta-snmp)",
        "uid": UID,
        "version": 1,
    }


def render(helps: Mapping[str, str] | None = None) -> str:
    """The dashboard file's text (stable: sorted keys, two-space indent, final newline)."""
    return json.dumps(dashboard(helps), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(out: Path) -> list[Path]:
    """Write the dashboard into directory `out`; the path written."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / DASHBOARD_FILE
    path.write_text(render())
    return [path]
