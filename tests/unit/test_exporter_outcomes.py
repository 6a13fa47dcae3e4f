"""The outcome families of `/metrics` (exporter_outcomes.py) over a real engine reading real
files: what is published before the engine's first read, and after it."""

from __future__ import annotations

import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pmta_snmp.exporter_outcomes import OutcomesCollector
from pmta_snmp.mib.health import AgentHealth
from pmta_snmp.mib.layout import build_varbinds, oid
from pmta_snmp.mib.snapshot import SnmpType, Value
from pmta_snmp.outcomes.engine import OutcomesEngine
from pmta_snmp.outcomes.view import OutcomesView
from tests.unit.test_outcomes_engine import NOW, Writer, settings


def scrape(engine: OutcomesEngine) -> dict[str, list[float]]:
    """family name -> sample values, from the text a scrape gets (as the exporter registers
    the collector: over the engine's saved view)."""
    registry = CollectorRegistry()
    registry.register(OutcomesCollector(lambda: engine.saved_view))
    text = generate_latest(registry).decode()
    return {f.name: [s.value for s in f.samples]
            for f in text_string_to_metric_families(text)}


def lag_instance(view: OutcomesView) -> Value | None:
    out = dict(build_varbinds(None, AgentHealth(started_at=NOW), outcomes=view))
    assert (*oid("pmtaAcctFiles"), 0) in out  # the reader's objects are there ...
    return out.get((*oid("pmtaAcctLag"), 0))  # ... and the lag only once it is known


def test_the_lag_is_absent_until_the_first_read_completed(tmp_path: Path) -> None:
    """Before the first read the lag is unknown: 0 would say "caught up" while nothing was
    read yet (files unreadable, a first read still under way). /metrics leaves
    pmta_acct_lag_seconds out and pmtaAcctLag has no instance until a read completed; a
    restarted engine (state kept) does not know its lag either until it has read."""
    w = Writer(tmp_path / "acct")
    w.write(w.rows(40))
    engine = OutcomesEngine(settings(tmp_path, str(w.path)))
    families = scrape(engine)
    assert "pmta_acct_lag_seconds" not in families
    assert families["pmta_acct_read_errors"] == [0.0]  # the engine is configured
    assert lag_instance(engine.view) is None
    assert engine.view.to_dict()["lag_seconds"] is None

    engine.read_all()
    engine.save()
    assert scrape(engine)["pmta_acct_lag_seconds"] == [0.0]  # caught up
    assert lag_instance(engine.view) == Value(SnmpType.GAUGE32, 0)

    restarted = OutcomesEngine(settings(tmp_path, str(w.path)))
    assert restarted.view.records == engine.view.records  # the counters came back ...
    assert "pmta_acct_lag_seconds" not in scrape(restarted)  # ... the lag did not
    assert lag_instance(restarted.view) is None
    restarted.read_all()
    restarted.save()
    assert scrape(restarted)["pmta_acct_lag_seconds"] == [0.0]


def test_a_first_read_that_fails_leaves_the_lag_unknown(tmp_path: Path) -> None:
    """A read that cannot complete (here: the files' path is a file, so the glob's directory
    is no directory) gives no lag, and the view says why."""
    (tmp_path / "acct").write_text("not a directory")
    engine = OutcomesEngine(settings(tmp_path, str(tmp_path / "acct" / "acct.csv")))
    engine.read_all()
    engine.save()
    assert [x for x in engine.view.warnings if x.startswith(f"reading {tmp_path}")]
    assert "pmta_acct_lag_seconds" not in scrape(engine)
    assert lag_instance(engine.view) is None


def test_the_last_read_time_shows_a_reader_that_stopped(tmp_path: Path) -> None:
    """The lag keeps its last value when reads stop completing (it is measured by reads), so
    the time of the last completed read is published beside it: absent before the first read,
    then the read's time, and left behind by reads that fail."""
    w = Writer(tmp_path / "acct")
    w.write(w.rows(10))
    clock = [NOW.timestamp()]
    engine = OutcomesEngine(settings(tmp_path, str(w.path)), clock=lambda: clock[0])
    assert "pmta_acct_last_read_timestamp_seconds" not in scrape(engine)
    engine.read_all()
    engine.save()
    first = scrape(engine)
    assert first["pmta_acct_last_read_timestamp_seconds"] == [NOW.timestamp()]
    assert first["pmta_acct_lag_seconds"] == [0.0]

    shutil.rmtree(w.dir)  # the files' directory is gone (a lost mount): reads fail from now on
    w.dir.write_text("not a directory")
    clock[0] += 600
    engine.read_all()
    engine.save()
    later = scrape(engine)
    assert later["pmta_acct_last_read_timestamp_seconds"] == [NOW.timestamp()]  # left behind
    assert later["pmta_acct_lag_seconds"] == [0.0]  # what the lag alone would have said
