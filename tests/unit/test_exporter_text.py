"""`/probe` writes its families with `exporter.text_format`: byte for byte what
prometheus_client's `generate_latest` writes for the same families (it is only faster)."""

from __future__ import annotations

import math

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pmta_snmp.exporter import PmtaCollector, text_format
from pmta_snmp.sim import Simulator


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def library(families: list[Metric]) -> bytes:
    return generate_latest(_Families(families))  # type: ignore[arg-type]


def test_a_snapshot_s_families_are_written_as_prometheus_client_writes_them() -> None:
    for scenario in ("healthy", "scale"):
        snap = Simulator(scenario=scenario, speed=0, domains=300, vmtas=7).snapshot()
        families = list(PmtaCollector(max_series=50).snapshot_families(snap))
        assert sum(len(f.samples) for f in families) > 100
        assert text_format(families) == library(families)


def test_escapes_values_and_help_and_writes_special_floats_as_prometheus_client() -> None:
    gauge = GaugeMetricFamily("pmta_test", 'Help with a \\ backslash,\na newline and "quotes".',
                              labels=["domain", "vmta"])
    for i, value in enumerate(('plain', 'quo"te', "back\\slash", "new\nline", "ünï©ødé", "")):
        gauge.add_metric([value, f"v{i}"], [0, 1.5, -2, math.inf, -math.inf, 1e21][i])
    gauge.add_metric(["nan", "x"], math.nan)
    counter = CounterMetricFamily("pmta_things", "Things.", labels=["direction"])
    counter.add_metric(["in"], 12345678901)
    plain = GaugeMetricFamily("pmta_single", "One value.", value=0.1)
    families: list[Metric] = [gauge, counter, plain]
    ours = text_format(families)
    assert ours == library(families)
    parsed = {s.labels.get("domain"): s.value
              for f in text_string_to_metric_families(ours.decode()) for s in f.samples
              if f.name == "pmta_test"}
    assert parsed['quo"te'] == 1.5 and parsed["new\nline"] == math.inf
