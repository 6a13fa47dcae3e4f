"""check_pmta_license: the license file and `show license` over POST /command."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from pmta_snmp.checks.license import main

from tests.integration.test_checks_support import (
    FakePmta,
    Outcome,
    fake_pmta,
    run_main,
    run_subprocess,
)

__all__ = ["fake_pmta"]

TODAY = date(2025, 1, 14)

LICENSE = """\
  product: PowerMTA
  version: 5.0
 platform: linux-intel
    units: 0
instances: 1
 licensee: Example Mail Ltd
   serial: 910233
   issued: 2024-06-01
  expires: {expires}
copyright: Port25 Solutions, Inc.  All Rights Reserved
"""


def license_file(tmp_path: Path, expires: str) -> Path:
    path = tmp_path / "license"
    path.write_text(LICENSE.format(expires=expires))
    return path


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> Outcome:
    return run_main(main, ["--today", TODAY.isoformat(), *argv], capsys)


@pytest.mark.parametrize(
    ("days", "code", "text"),
    [
        (200, 0, "PMTA LICENSE OK - license expires in 200 days on 2025-08-02 (Example Mail Ltd)"),
        (30, 0, "PMTA LICENSE OK - license expires in 30 days"),
        (29, 1, "PMTA LICENSE WARNING - license expires in 29 days on 2025-02-12 (Example Mail "
                "Ltd) (warning below 30 days)"),
        (6, 2, "PMTA LICENSE CRITICAL - license expires in 6 days"),
        (0, 2, "PMTA LICENSE CRITICAL - license expires today (2025-01-14)"),
        (-3, 2, "PMTA LICENSE CRITICAL - license EXPIRED on 2025-01-11, 3 days ago"),
    ],
)
def test_license_file_days_left(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                days: int, code: int, text: str) -> None:
    path = license_file(tmp_path, (TODAY + timedelta(days=days)).isoformat())
    out = check(capsys, "--license-file", str(path))
    assert out.code == code
    assert out.line.startswith(text)
    assert out.perf["days_left"] == f"{days};30:;7:"


def test_never_is_ok_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = license_file(tmp_path, "never")
    out = check(capsys, "--license-file", str(path))
    assert out.code == 0
    assert out.line.startswith("PMTA LICENSE OK - license never expires (Example Mail Ltd) |")
    assert out.perf["days_left"] == "U;30:;7:"
    out = check(capsys, "--license-file", str(path), "--output", "zabbix")
    assert out.out == "36500\n"
    doc = json.loads(check(capsys, "--license-file", str(path), "--json").out)
    assert doc["details"]["never"] is True and doc["details"]["days_left"] is None


def test_expired_is_critical_whatever_the_thresholds(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = license_file(tmp_path, "2025-01-01")
    out = check(capsys, "--license-file", str(path), "-w", "~:", "-c", "~:")
    assert out.code == 2 and "EXPIRED" in out.line


def test_full_range_syntax_still_works(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = license_file(tmp_path, (TODAY + timedelta(days=50)).isoformat())
    assert check(capsys, "--license-file", str(path), "-w", "60:").code == 1
    assert check(capsys, "--license-file", str(path), "-w", "@40:55").code == 1
    assert check(capsys, "--license-file", str(path), "-w", "10", "-c", "5").code == 0


def test_bad_license_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = check(capsys, "--license-file", str(tmp_path / "missing"))
    assert out.code == 3
    assert out.line == (f"PMTA LICENSE UNKNOWN - cannot read license file "
                        f"{tmp_path / 'missing'}: No such file or directory")
    (tmp_path / "empty").write_text("product: PowerMTA\n")
    out = check(capsys, "--license-file", str(tmp_path / "empty"))
    assert out.code == 3 and "has no `expires:` line" in out.line
    (tmp_path / "weird").write_text("expires: someday\n")
    out = check(capsys, "--license-file", str(tmp_path / "weird"))
    assert out.code == 3 and "'someday' is neither YYYY-MM-DD nor never" in out.line
    out = check(capsys, "--license-file", str(tmp_path))
    assert out.code == 3 and "cannot read license file" in out.line


def test_show_license_over_the_api(fake_pmta: FakePmta, capsys: pytest.CaptureFixture[str],
                                   tmp_path: Path) -> None:
    fake_pmta.license_text = LICENSE.format(expires="2025-01-20")
    key = tmp_path / "key"
    key.write_text("k" * 40 + "\n")
    out = check(capsys, "--url", fake_pmta.url, "--api-key-file", str(key))
    assert out.code == 2
    assert out.line.startswith("PMTA LICENSE CRITICAL - license expires in 6 days on 2025-01-20")
    assert fake_pmta.requests == ["/command"]


def test_api_without_command_endpoint(fake_pmta: FakePmta,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = check(capsys, "--url", fake_pmta.url)
    assert out.code == 3
    assert "needs PowerMTA 5.0 (use --license-file on 4.x)" in out.line


def test_subprocess(tmp_path: Path) -> None:
    path = license_file(tmp_path, "never")
    out = run_subprocess("license", ["--license-file", str(path)])
    assert out.code == 0
    assert out.line == (
        "PMTA LICENSE OK - license never expires (Example Mail Ltd) | days_left=U;30:;7:"
    )
    assert out.err == ""
