"""check_pmta_queue on malformed queue counts (issue 13 §3): a negative, missing or unusable
count is UNKNOWN (exit 3) with one line naming the field, never OK with 0 or CRITICAL with -5."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pmta_snmp.checks.queue import main

from tests.integration.test_checks_support import (
    FakePmta,
    fake_pmta,
    run_main,
    run_subprocess,
    set_pages,
)

__all__ = ["fake_pmta"]


def _smtp(fake: FakePmta) -> dict[str, Any]:
    smtp: dict[str, Any] = fake.pages["/status"]["status"]["queue"]["smtp"]
    return smtp


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (-5, "is -5, a negative count"),
        (None, "is null, not a count"),
        ("lots", "is 'lots', not a count"),
        ([], "is a list, not a count"),
        (..., "is missing"),
    ],
    ids=["negative", "null", "text", "list", "missing"],
)
def test_malformed_queue_depth_is_unknown(
    fake_pmta: FakePmta, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: Any, why: str
) -> None:
    set_pages(fake_pmta, 1200, [("gmail.com/vmta1", 1200)])
    if value is ...:
        del _smtp(fake_pmta)["rcp"]
    else:
        _smtp(fake_pmta)["rcp"] = value
    out = run_main(main, ["--url", fake_pmta.url, "--state-dir", str(tmp_path)], capsys)
    assert out.code == 3, out.out
    assert out.out == f"PMTA QUEUE UNKNOWN - /status: status.queue.smtp.rcp {why}\n"


def test_negative_row_count_is_unknown_for_a_selection(
    fake_pmta: FakePmta, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_pages(fake_pmta, 1200, [("gmail.com/vmta1", 1200)])
    fake_pmta.pages["/queues"]["queue"][0]["rcp"] = -5
    argv = ["--url", fake_pmta.url, "--state-dir", str(tmp_path), "--queue", "gmail.com/*"]
    out = run_main(main, argv, capsys)
    assert out.code == 3
    assert out.line == (
        "PMTA QUEUE UNKNOWN - /queues: queue 'gmail.com/vmta1' rcp is -5, a negative count"
    )


def test_absurd_number_as_a_real_process_is_one_line(fake_pmta: FakePmta, tmp_path: Path) -> None:
    set_pages(fake_pmta, 1200, [("gmail.com/vmta1", 1200)])
    _smtp(fake_pmta)["rcp"] = float("inf")  # the fake's json.dumps writes Infinity
    out = run_subprocess("queue", ["--url", fake_pmta.url, "--state-dir", str(tmp_path)])
    assert out.code == 3 and out.err == ""
    assert out.out.startswith("PMTA QUEUE UNKNOWN - answer is not JSON: Infinity")
    assert out.out.count("\n") == 1
