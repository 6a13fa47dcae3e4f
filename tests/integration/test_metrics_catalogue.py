"""The metric catalogue (pmta_snmp/metrics.py) against what the real exporter serves."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pmta_snmp.config import Config, PmtaSection, PollSection
from pmta_snmp.exporter import Exporter
from pmta_snmp.metrics import by_name
from pmta_snmp.sim import Simulator
from tests.integration.kit_support import wait_until

API_KEY = "m" * 40


@pytest.fixture
def exporter_url(tmp_path: Path) -> Iterator[str]:
    sim = Simulator(speed=0, api_key=API_KEY, domains=30).start()
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY + "\n")
    cfg = Config(pmta=PmtaSection(url=sim.url, api_key_file=str(key_file), timeout=5.0),
                 poll=PollSection(interval=1.0, jitter=0.0), exporter_max_series=5)
    try:
        with Exporter(cfg, listen="127.0.0.1:0") as exporter:
            yield exporter.url
    finally:
        sim.stop()


def test_every_served_family_is_catalogued_with_its_type_and_help(exporter_url: str) -> None:
    def families() -> list[object] | None:
        with urllib.request.urlopen(exporter_url, timeout=10) as resp:
            text = resp.read().decode()
        found = list(text_string_to_metric_families(text))
        return found if any(f.name == "pmta_license_days_left" for f in found) else None

    served = wait_until(families, 60)  # hang guard: the first poll with the license
    assert served, "the exporter never served a full poll"
    catalogue = by_name()
    for family in served:
        assert family.name.startswith("pmta_"), family.name
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert name in catalogue, f"{name} is served but not in pmta_snmp.metrics"
        assert catalogue[name].kind == family.type, name
        assert catalogue[name].help == family.documentation, name
        labels = {k for s in family.samples for k in s.labels if k not in ("le", "quantile")}
        assert labels <= set(catalogue[name].labels), (name, labels)
