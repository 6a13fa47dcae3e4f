"""Smoke tests of the benchmark harness (`./run bench` runs the benchmarks themselves).

No timing is asserted here: speed goals are judged by `python -m bench` against references
measured in the same run.
"""

from __future__ import annotations

import pytest

import bench.fuzz_agentx as fuzz
from bench import micro
from bench.__main__ import main
from bench.common import Report, Row, percentile, render_table


def test_short_fuzz_run_reaches_every_outcome_without_failure() -> None:
    stats = fuzz.Fuzzer(7).run(3000)
    assert stats.inputs == 3000
    assert stats.failure_count == 0, stats.failures[:1]
    assert {"decoded", "parse_error", "incomplete"} <= set(stats.outcomes)


def test_fuzz_reports_an_exception_other_than_parse_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(buf: bytes) -> object:
        raise IndexError("planted")

    monkeypatch.setattr(fuzz, "decode_packet", broken)
    problem, outcome = fuzz.check_one(b"\x01" * 24)
    assert outcome == "crash"
    assert problem is not None and "IndexError" in problem


def test_table_has_the_six_columns_and_a_verdict_per_row() -> None:
    report = Report(section="demo")
    report.add(Row("walk rate", "9k values/s", "12k values/s", 0.75, ">= 0.70x", True))
    report.add(Row("peak RSS", "60 MiB"))
    report.add(Row("latency max", "9 ms", "", None, "< 5 ms", False))
    text = render_table(report)
    header = text.splitlines()[0]
    for column in ("measure", "ours", "reference", "ratio", "target", "pass/fail"):
        assert column in header
    assert "pass" in text and "info" in text and "FAIL" in text
    assert "targets: 1 passed, 1 missed; 0 crashed" in text


def test_a_quick_run_does_not_call_a_small_size_a_missed_target() -> None:
    """--quick runs the benchmarks at sizes where start-up costs dominate: a new user saw
    FAIL rows for targets that the full sizes meet."""
    report = Report(section="demo", quick=True)
    report.add(Row("walk rate", "9k values/s", "12k values/s", 0.75, ">= 0.70x", True))
    report.add(Row("latency max", "9 ms", "", None, "< 5 ms", False))
    text = render_table(report)
    assert "FAIL" not in text and "small size" in text
    assert "targets: 1 passed, 1 below target at these small sizes" in text


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100


def test_unknown_benchmark_name_is_a_usage_error() -> None:
    assert main(["no-such-benchmark"]) == 2


def test_micro_benchmark_rows_at_small_size() -> None:
    report = Report(section="micro")
    micro.oid_tree(report, 1, sizes=(10, 100))
    micro.reassembly(report, 1)
    measures = [row.measure for _, row in report.rows]
    assert len(measures) == 6 and "walk cost per step, 1,000 vs 100 OIDs" in measures
    assert all(row.ratio is not None for _, row in report.rows)
    assert not report.crashed
