"""The deliverability outcome families of `/metrics`, built from an `OutcomesView`.

Names, types, labels and HELP texts come from the catalogue (`pmta_snmp.metrics`), which the
dashboard and the alert rules are checked against. Families are built at scrape time from the
engine's latest view (a few thousand series at most: the engine caps its dimensions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pmta_snmp.metrics import by_name
from pmta_snmp.outcomes.view import RESULTS, OutcomesView

__all__ = ["OutcomesCollector", "outcome_families"]

_CATALOGUE = by_name()


def _counter(name: str, samples: Iterable[tuple[list[str], float]]) -> CounterMetricFamily:
    """The catalogue's counter family `name` with one sample per (label values, value)."""
    m = _CATALOGUE[name]
    family = CounterMetricFamily(m.family, m.help, labels=list(m.labels))
    for labels, value in samples:
        family.add_metric(labels, value)
    return family


def outcome_families(view: OutcomesView) -> Iterator[Metric]:
    """Every outcome family of the catalogue for one view."""
    yield _counter("pmta_outcomes_total", (
        ([p.provider, result], p.total.get(result)) for p in view.providers for result in RESULTS
    ))
    yield _counter("pmta_outcome_reasons_total", (
        ([r.provider, r.reason], r.count) for r in view.reasons
    ))
    yield _counter("pmta_source_ip_outcomes_total", (
        ([s.source_ip, s.vmta, s.provider, s.result], s.count) for s in view.source_ip_outcomes
    ))
    yield _counter("pmta_sending_domain_outcomes_total", (
        ([d.sending_domain, result], d.total.get(result))
        for d in view.sending_domains for result in RESULTS
    ))
    yield _counter("pmta_complaints_total", (
        ([c.provider, c.sending_domain], c.count) for c in view.complaints_by
    ))
    yield _counter("pmta_blocklist_rejections_total", (
        ([b.source_ip, b.blocklist], b.count) for b in view.blocklist_rejections
    ))

    m = _CATALOGUE["pmta_delivery_delay_seconds"]
    delay = HistogramMetricFamily(m.name, m.help, labels=list(m.labels))
    for p in view.providers:
        if p.delay.count:
            buckets = [("+Inf" if bound == float("inf") else _bound(bound), n)
                       for bound, n in p.delay.cumulative()]
            delay.add_metric([p.provider], buckets, p.delay.sum)
    yield delay

    yield _counter("pmta_acct_records_total", (([kind], n) for kind, n in view.records))

    m = _CATALOGUE["pmta_acct_lag_seconds"]
    lag = GaugeMetricFamily(m.name, m.help)
    if view.lag_seconds is not None:  # absent (unknown) until the first read completed
        lag.add_metric([], view.lag_seconds)
    yield lag
    m = _CATALOGUE["pmta_acct_read_errors_total"]
    yield CounterMetricFamily(m.family, m.help, value=view.read_errors)
    m = _CATALOGUE["pmta_acct_last_read_timestamp_seconds"]
    last_read = GaugeMetricFamily(m.name, m.help)
    if view.updated is not None:
        last_read.add_metric([], view.updated.timestamp())
    yield last_read


def _bound(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


class OutcomesCollector(Collector):
    """A prometheus_client collector over the latest view of an outcomes engine."""

    def __init__(self, source: Callable[[], OutcomesView]) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        """The outcome families as of the engine's last pass (empty ones left out)."""
        for family in outcome_families(self.source()):
            if family.samples:
                yield family

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the families vary with the data."""
        return []
