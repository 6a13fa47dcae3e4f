"""check_pmta_warmup on accounting files with known deliveries against plans the tests write:
an IP ahead of its plan, one on plan, per-provider caps (a provider known by its MX host only),
hold-the-ramp rates, a VirtualMTA, days before and after the plan, and every plan error.

Plans use a fixed-offset time zone where it is about noon now (`noon_zone`), so records logged
minutes ago are "today" whenever the tests run, and 13 hours ago is yesterday."""

from __future__ import annotations

import json
import os
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from pmta_snmp.checks.warmup import main

from tests.integration.test_checks_support import (
    Outcome,
    acct_lines,
    feedback,
    mix,
    noon_zone,
    rec,
    run_main,
    run_subprocess,
    write_plan,
)

AHEAD, ON_PLAN, VMTA_IP = "198.51.100.20", "198.51.100.21", "198.51.100.30"


def check(capsys: pytest.CaptureFixture[str], tmp_path: Path, acct: Path, plan: Path,
          *argv: str) -> Outcome:
    return run_main(main, ["--acct-file", str(acct), "--state-dir", str(tmp_path / "state"),
                           "--plan", str(plan), *argv], capsys)


def write(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    path = tmp_path / "acct.csv"
    path.write_text(acct_lines(records, "5.0+f"), newline="")
    return path


def plan_file(tmp_path: Path, *, day: int = 3, extra: str = "") -> tuple[Path, date]:
    """AHEAD and ON_PLAN both on `day` of caps 50, 100, 200, 400; ON_PLAN's gmail caps 20,
    40, 80, 160."""
    zone, today = noon_zone()
    start = today - timedelta(days=day - 1)
    return write_plan(tmp_path / "plan.toml", f"""
        timezone = "{zone}"

        [[warmup]]
        source_ip = "{AHEAD}"
        start = {start}
        caps = [50, 100, 200, 400]

        [[warmup]]
        source_ip = "{ON_PLAN}"
        start = {start}
        caps = [50, 100, 200, 400]
        [warmup.providers]
        gmail = [20, 40, 80, 160]
        """ + extra), start


def sent(n: int, ip: str, domain: str = "example.org", **kw: Any) -> list[dict[str, Any]]:
    return mix({"d": n}, domain=domain, ip=ip, **kw)


@pytest.mark.parametrize(("ahead", "code", "word"),
                         [(180, 0, "OK"), (260, 1, "WARNING"), (301, 2, "CRITICAL")])
def test_deliveries_against_todays_cap(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       ahead: int, code: int, word: str) -> None:
    plan, _ = plan_file(tmp_path)
    acct = write(tmp_path, sent(ahead, AHEAD) + sent(150, ON_PLAN))
    out = check(capsys, tmp_path, acct, plan)
    assert out.code == code, out.out
    if code == 0:
        assert out.line.startswith(
            f"PMTA WARMUP OK - {AHEAD} day 3 of 4, 180 of 200 sent; {ON_PLAN} day 3 of 4, "
            "150 of 200 sent")
    else:
        limit = "warning above 100%" if code == 1 else "critical above 150%"
        assert out.line == (
            f"PMTA WARMUP {word} - {AHEAD} sent {ahead} today, {ahead / 2:.1f}% of its day-3 "
            f"cap 200 ({limit})")
    assert out.perf["ip_198_51_100_20_cap_used"] == f"{ahead / 2:g}%;100;150;0"
    assert out.value("ip_198_51_100_20_sent") == str(ahead)
    assert out.value("max_cap_used") == f"{ahead / 2:g}%"


def test_yesterday_does_not_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Deliveries before midnight in the plan's time zone belong to yesterday's cap."""
    plan, _ = plan_file(tmp_path)
    yesterday = [dict(r, _minutes_ago=13 * 60) for r in sent(500, AHEAD)]
    acct = write(tmp_path, yesterday + sent(120, AHEAD))
    out = check(capsys, tmp_path, acct, plan)
    assert out.code == 0, out.out
    assert out.line.startswith(f"PMTA WARMUP OK - {AHEAD} day 3 of 4, 120 of 200 sent")
    assert "first run: read back the records of the last 26 h of" in out.out


def test_provider_caps_with_a_provider_known_by_its_mx(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ON_PLAN's gmail cap is 80 on day 3: 50 to gmail.com and 40 to a Google Workspace
    domain (gmail by its MX host only) are 90, above it; the IP's own cap is not."""
    plan, _ = plan_file(tmp_path)
    records = (sent(50, ON_PLAN, "gmail.com")
               + sent(40, ON_PLAN, "corp.example", dsnMta="aspmx.l.google.com (192.0.2.27)")
               + sent(60, ON_PLAN))
    acct = write(tmp_path, records)
    out = check(capsys, tmp_path, acct, plan)
    assert out.code == 1, out.out
    assert out.line == (f"PMTA WARMUP WARNING - {ON_PLAN} sent 90 to gmail today, 112.5% of "
                        "its day-3 gmail cap 80 (warning above 100%)")
    assert out.value("ip_198_51_100_21_cap_used") == "75%"
    assert out.value("ip_198_51_100_21_gmail_cap_used") == "112.5%"


def test_hold_the_ramp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Within its cap, an IP whose deferral, block-bounce or complaint rate today is above the
    thresholds is WARNING: hold the ramp."""
    plan, _ = plan_file(tmp_path)
    block = {"cat": "spam-related", "status": "5.7.1 (delivery not authorized)",
             "diag": "smtp;550 5.7.1 Message rejected as spam"}
    records = (
        mix({"d": 100, "t": 20}, ip=AHEAD)  # deferral 20 of 120
        + sent(150, ON_PLAN) + [rec("b", f"x{i}@example.org", ip=ON_PLAN, **block)
                                for i in range(5)]  # block 5 of 155
        + [feedback(f"c{i}@yahoo.com", ip=ON_PLAN) for i in range(2)]  # complaints 2 of 150
    )
    acct = write(tmp_path, records)
    out = check(capsys, tmp_path, acct, plan)
    assert out.code == 1, out.out
    assert out.line == (
        f"PMTA WARMUP WARNING - {AHEAD} deferral rate today 16.7% (20 of 120): hold the ramp "
        f"(warning above 10%); {ON_PLAN} block-bounce rate today 3.2% (5 of 155): hold the "
        f"ramp (warning above 2%); {ON_PLAN} complaint rate today 1.3% (2 of 150): hold the "
        "ramp (warning above 0.1%)")
    out = check(capsys, tmp_path, acct, plan, "--deferral-warning", "20", "--block-warning",
                "5", "--complaint-warning", "2")
    assert out.code == 0
    out = check(capsys, tmp_path, acct, plan, "--min-volume", "200")  # too few to judge
    assert out.code == 0
    assert out.value("ip_198_51_100_20_deferral") == f"{100 * 20 / 120:.4f}%"


def test_before_and_after_the_plan_and_a_vmta(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    zone, today = noon_zone()
    plan = write_plan(tmp_path / "plan.toml", f"""
        timezone = "{zone}"
        [[warmup]]
        source_ip = "{AHEAD}"
        start = {today + timedelta(days=2)}
        caps = [50, 100]
        [[warmup]]
        source_ip = "{ON_PLAN}"
        start = "{today - timedelta(days=10)}"
        caps = [50, 100]
        [[warmup]]
        vmta = "warm-1"
        start = {today}
        caps = [100, 200]
        """)
    quiet = write(tmp_path, sent(3000, ON_PLAN) + sent(60, VMTA_IP, vmta="warm-1"))
    out = check(capsys, tmp_path, quiet, plan)
    assert out.code == 0, out.out
    assert out.line.startswith(
        f"PMTA WARMUP OK - {AHEAD} starts {today + timedelta(days=2)}; {ON_PLAN} warmed up "
        "(plan ended after day 2), 3,000 sent today; VirtualMTA warm-1 day 1 of 2, 60 of 100 "
        "sent")
    early = write(tmp_path, sent(5, AHEAD) + sent(160, VMTA_IP, vmta="warm-1"))
    out = check(capsys, tmp_path, early, plan, "--instance", "early")
    assert out.code == 2, out.out
    assert out.line == (
        "PMTA WARMUP CRITICAL - VirtualMTA warm-1 sent 160 today, 160.0% of its day-1 cap 100 "
        f"(critical above 150%); {AHEAD} sent 5 today, before its plan starts on "
        f"{today + timedelta(days=2)}")


def test_zabbix_and_discovery(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan, start = plan_file(tmp_path, extra='[[warmup]]\nvmta = "warm-1"\nstart = 2025-01-06\n'
                                             "caps = [10]\n")
    acct = write(tmp_path, sent(260, AHEAD) + sent(100, ON_PLAN))
    out = check(capsys, tmp_path, acct, plan, "--output", "zabbix")
    assert (out.code, out.out, out.err) == (0, "130\n", "")
    doc = json.loads(check(capsys, tmp_path, acct, plan, "--json").out)
    assert doc["status"] == 1
    assert doc["details"]["ramps"][0] == {
        "name": AHEAD, "day": 3, "days": 4, "sent": 260, "cap": 200, "cap_used": 130.0,
        "deferral_rate": 0.0, "block_rate": 0.0, "complaint_rate": 0.0}
    assert doc["details"]["today"] == (start + timedelta(days=2)).isoformat()
    out = check(capsys, tmp_path, acct, plan, "--discover", "source-ips")
    assert json.loads(out.out) == [{"{#SOURCEIP}": AHEAD}, {"{#SOURCEIP}": ON_PLAN}]
    out = check(capsys, tmp_path, acct, plan, "--discover", "vmtas")
    assert json.loads(out.out) == [{"{#VMTA}": "warm-1"}]


def test_contrib_example_plan_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parents[2] / "contrib" / "warmup" / "plan.toml.example"
    acct = write(tmp_path, sent(10, AHEAD))
    out = check(capsys, tmp_path, acct, example)
    assert out.code in (0, 1, 2), out.out  # a valid plan: judged, never UNKNOWN


def test_subprocess(tmp_path: Path) -> None:
    plan, _ = plan_file(tmp_path)
    acct = write(tmp_path, sent(301, AHEAD))
    env = dict(os.environ, PMTA_SNMP_STATE_DIR=str(tmp_path / "st"))
    out = run_subprocess("warmup", ["--acct-file", str(acct), "--plan", str(plan)], env=env)
    assert out.code == 2, out
    assert out.line.startswith(f"PMTA WARMUP CRITICAL - {AHEAD} sent 301 today")
    assert out.err == ""


GOOD = 'source_ip = "198.51.100.20"\nstart = 2025-03-03\ncaps = [50, 100]\n'


@pytest.mark.parametrize(("text", "problem"), [
    (None, " does not exist (check --plan)"),
    ("[[warmup]\n", ": not valid TOML: "),
    ("timezone = 5\n[[warmup]]\n" + GOOD, ": timezone must be a time zone name"),
    ('timezone = "Mars/Olympus"\n[[warmup]]\n' + GOOD, ": unknown timezone 'Mars/Olympus'"),
    ('ramps = 1\n[[warmup]]\n' + GOOD, ": unknown key 'ramps' (timezone and [[warmup]] tables)"),
    ('timezone = "UTC"\n', ": no [[warmup]] tables"),
    ("[[warmup]]\nstart = 2025-03-03\ncaps = [1]\n",
     " line 1 [[warmup]] #1: give either source_ip or vmta"),
    ('[[warmup]]\n' + GOOD + 'vmta = "x"\n', " line 1 [[warmup]] #1: give either source_ip or "
     "vmta"),
    ('[[warmup]]\nsource_ip = "mta1"\nstart = 2025-03-03\ncaps = [1]\n',
     " line 1 [[warmup]] #1: source_ip 'mta1' is not an IP address"),
    ('[[warmup]]\nsource_ip = "198.51.100.20"\nstart = "March"\ncaps = [1]\n',
     " line 1 [[warmup]] #1: start must be a date (start = 2025-03-03)"),
    ('[[warmup]]\nsource_ip = "198.51.100.20"\nstart = 2025-03-03T10:00:00\ncaps = [1]\n',
     " line 1 [[warmup]] #1: start must be a date"),
    ('[[warmup]]\nsource_ip = "198.51.100.20"\nstart = 2025-03-03\ncaps = []\n',
     " line 1 [[warmup]] #1: caps must be a list of whole numbers above 0"),
    ('[[warmup]]\nsource_ip = "198.51.100.20"\nstart = 2025-03-03\ncaps = [50, 0]\n',
     " line 1 [[warmup]] #1: caps must be a list of whole numbers above 0"),
    ('[[warmup]]\nsource_ip = "198.51.100.20"\nstart = 2025-03-03\ncaps = [50, 1.5]\n',
     " line 1 [[warmup]] #1: caps must be a list of whole numbers above 0"),
    ('[[warmup]]\n' + GOOD + 'rate = 3\n', " line 1 [[warmup]] #1: unknown key 'rate'"),
    ('[[warmup]]\n' + GOOD + '[warmup.providers]\ngmial = [1]\n',
     " line 1 [[warmup]] #1: unknown provider 'gmial' (the provider map has gmail, "),
    ('[[warmup]]\n' + GOOD + 'providers = 3\n', " line 1 [[warmup]] #1: providers must be a "
     "table"),
    ('[[warmup]]\n' + GOOD + '[warmup.providers]\ngmail = "many"\n',
     " line 1 [[warmup]] #1: providers.gmail must be a list of whole numbers above 0"),
    ('# two\n\n[[warmup]]\n' + GOOD + '\n[[warmup]]\n' + GOOD,
     " line 8 [[warmup]] #2: 198.51.100.20 is planned twice (also [[warmup]] #1)"),
])
def test_plan_errors_name_the_file_and_the_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None,
        problem: str) -> None:
    plan = tmp_path / "plan.toml"
    if text is not None:
        plan.write_text(text, encoding="utf-8")
    acct = write(tmp_path, sent(10, AHEAD))
    out = check(capsys, tmp_path, acct, plan)
    assert out.code == 3, out.out
    assert out.line.startswith(f"PMTA WARMUP UNKNOWN - warmup plan {plan}{problem}"), out.line
    assert len(out.out.splitlines()) == 1 and out.err == ""
    out = check(capsys, tmp_path, acct, plan, "--output", "zabbix")
    assert out.code == 0 and out.out.startswith(f"ZBX_NOTSUPPORTED: warmup plan {plan}")


def test_unreadable_plan_and_other_errors(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    acct = write(tmp_path, sent(10, AHEAD))
    plan = tmp_path / "plan.toml"
    plan.write_bytes(b"timezone = \"UTC\"\n# \xff\xfe\n")
    out = check(capsys, tmp_path, acct, plan)
    assert out.line == f"PMTA WARMUP UNKNOWN - warmup plan {plan}: not UTF-8 text"
    out = check(capsys, tmp_path, acct, tmp_path)  # a directory
    assert out.code == 3
    assert out.line.startswith(f"PMTA WARMUP UNKNOWN - warmup plan {tmp_path}: cannot read: ")
    good, _ = plan_file(tmp_path)
    out = check(capsys, tmp_path, acct, good, "--window", "1h")
    assert out.code == 3 and "unrecognized arguments: --window 1h" in out.line
    out = check(capsys, tmp_path, acct, good, "--deferral-warning", "x")
    assert out.code == 3 and "argument --deferral-warning: invalid range" in out.line
    missing = tmp_path / "missing.csv"
    out = check(capsys, tmp_path, missing, good)
    assert out.line == (f"PMTA WARMUP UNKNOWN - accounting file {missing} does not exist "
                        "(check --acct-file)")
