"""check_pmta_queue against a fake PowerMTA web monitor (and the simulator)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from pmta_snmp.checks import queue as queue_mod
from pmta_snmp.checks.queue import main

from tests.integration.test_checks_support import (
    FakePmta,
    Outcome,
    fake_pmta,
    python_executable,
    run_main,
    run_subprocess,
    set_pages,
)

__all__ = ["fake_pmta"]  # the fixture, re-exported for pytest


def run(capsys: pytest.CaptureFixture[str], fake: FakePmta, tmp_path: Path,
        *argv: str) -> Outcome:
    return run_main(main, ["--url", fake.url, "--state-dir", str(tmp_path / "state"), *argv],
                    capsys)


def healthy(fake: FakePmta, total: int = 1200) -> None:
    set_pages(fake, total, [("gmail.com/vmta1", 700), ("yahoo.com/vmta2", 400),
                            ("example.org/vmta1", 100)])


def test_ok_names_total_and_top_queues(fake_pmta: FakePmta, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    healthy(fake_pmta)
    out = run(capsys, fake_pmta, tmp_path, "--item-perfdata", "queue,domain,vmta")
    assert out.code == 0
    assert out.line.startswith(
        "PMTA QUEUE OK - 1,200 recipients queued; top: gmail.com/vmta1 700, yahoo.com/vmta2 400"
    )
    assert out.perf["rcpt"] == "1200;50000;100000;0"
    assert out.value("queue_gmail_com_vmta1_rcpt") == "700"
    assert out.value("domain_yahoo_com_rcpt") == "400"
    assert out.value("vmta_vmta1_rcpt") == "800"
    assert out.out.count("|") == 1
    assert out.err == ""


def test_fetches_only_the_pages_the_options_need(fake_pmta: FakePmta, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """/domains and /vmtas list every destination domain and VirtualMTA (100k rows on a big
    PowerMTA): a run reads them only when an option needs them."""
    healthy(fake_pmta)

    def pages(*argv: str) -> set[str]:
        fake_pmta.requests.clear()
        out = run(capsys, fake_pmta, tmp_path, *argv)
        assert out.code == 0, out.line
        return set(fake_pmta.requests)

    out = run(capsys, fake_pmta, tmp_path)
    assert not [k for k in out.perf if k.startswith(("domain_", "vmta_"))]
    assert pages() == {"/status", "/queues"}
    assert pages("--queue", "gmail.com/*") == {"/status", "/queues"}
    assert pages("--domain", "gmail.com") == {"/status", "/queues", "/domains"}
    assert pages("--vmta", "vmta1") == {"/status", "/queues", "/vmtas"}
    assert pages("--domain", "gmail.com", "--vmta", "vmta1") == {"/status", "/queues"}
    assert pages("--domain-warning", "5000") == {"/status", "/queues", "/domains"}
    assert pages("--vmta-critical", "5000") == {"/status", "/queues", "/vmtas"}
    assert pages("--item-perfdata", "domain") == {"/status", "/queues", "/domains"}
    assert pages("--item-perfdata", "none") == {"/status", "/queues"}
    out = run(capsys, fake_pmta, tmp_path, "--item-perfdata", "jobs")
    assert out.code == 3 and "expected kinds among queue, domain, vmta" in out.line


@pytest.mark.parametrize(
    ("total", "code", "word", "hint"),
    [
        (50_000, 0, "OK", ""),
        (50_001, 1, "WARNING", "(warning above 50,000)"),
        (100_001, 2, "CRITICAL", "(critical above 100,000)"),
    ],
)
def test_default_thresholds_follow_the_operating_rules(
    fake_pmta: FakePmta, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    total: int, code: int, word: str, hint: str,
) -> None:
    set_pages(fake_pmta, total, [("gmail.com/vmta1", total)])
    out = run(capsys, fake_pmta, tmp_path, "--stuck-minutes", "0")
    assert out.code == code
    assert out.line.startswith(f"PMTA QUEUE {word} - {total:,} recipients queued")
    assert hint in out.line


def test_nagios_range_syntax(fake_pmta: FakePmta, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    healthy(fake_pmta, total=1200)
    assert run(capsys, fake_pmta, tmp_path, "-w", "@1000:2000", "-c", "~:5000").code == 1
    assert run(capsys, fake_pmta, tmp_path, "-w", "2000:", "-c", "1500:").code == 2
    out = run(capsys, fake_pmta, tmp_path, "-w", "0.5", "-c", "1e9")
    assert out.code == 3 and "invalid range '1e9'" in out.line


def test_paused_queue_warns_and_is_named(fake_pmta: FakePmta, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    set_pages(fake_pmta, 900, [("gmail.com/vmta1", 500),
                               ("yahoo.com/vmta2", 400, {"paused": "yes"})])
    out = run(capsys, fake_pmta, tmp_path)
    assert out.code == 1
    assert "queue yahoo.com/vmta2 paused (400 rcpt)" in out.line
    assert out.value("paused") == "1"
    out = run(capsys, fake_pmta, tmp_path, "--paused-state", "critical")
    assert out.code == 2
    out = run(capsys, fake_pmta, tmp_path, "--paused-state", "ok")
    assert out.code == 0 and "(1 paused)" in out.line


def test_backoff_reported_and_optionally_judged(fake_pmta: FakePmta, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    set_pages(fake_pmta, 900, [("gmail.com/vmta1", 500, {"mode": "backoff"}),
                               ("yahoo.com/vmta2", 400)])
    out = run(capsys, fake_pmta, tmp_path)
    assert out.code == 0 and "(1 in backoff)" in out.line
    assert out.value("backoff") == "1" and out.value("deferred_rcpt") == "500"
    out = run(capsys, fake_pmta, tmp_path, "--backoff-state", "warning")
    assert out.code == 1 and "queue gmail.com/vmta1 in backoff (500 rcpt)" in out.line


def test_domain_narrows_like_show_queues(fake_pmta: FakePmta, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    set_pages(fake_pmta, 160_000, [("gmail.com/vmta1", 60_000), ("gmail.com/vmta2", 5_000),
                                   ("yahoo.com/vmta2", 95_000)])
    out = run(capsys, fake_pmta, tmp_path, "--domain", "gmail.com")
    assert out.code == 1
    assert out.line.startswith(
        "PMTA QUEUE WARNING - 65,000 recipients queued for gmail.com (warning above 50,000)"
    )
    assert "queue_yahoo_com_vmta2_rcpt" not in out.perf
    assert "vmta_vmta2_rcpt" not in out.perf  # a VirtualMTA's total spans other domains
    out = run(capsys, fake_pmta, tmp_path, "--vmta", "vmta2")
    assert out.value("rcpt") == "100000"
    out = run(capsys, fake_pmta, tmp_path, "--queue", "*/vmta1")
    assert out.value("rcpt") == "60000"


def test_per_item_thresholds_name_the_worst(fake_pmta: FakePmta, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    set_pages(fake_pmta, 30_000, [("gmail.com/vmta1", 25_000), ("yahoo.com/vmta2", 4_000),
                                  ("aol.com/vmta2", 1_000)])
    out = run(capsys, fake_pmta, tmp_path, "--domain-warning", "3000",
              "--domain-critical", "20000", "--max-items", "1")
    assert out.code == 2
    assert out.line.startswith(
        "PMTA QUEUE CRITICAL - 30,000 recipients queued; domain gmail.com 25,000 rcpt "
        "(critical above 20,000); domain yahoo.com 4,000 rcpt (warning above 3,000)"
    )
    # Judged beyond --max-items, but perfdata only for the top one of each kind.
    assert out.perf["domain_gmail_com_rcpt"] == "25000;3000;20000;0"
    assert "domain_yahoo_com_rcpt" not in out.perf
    assert [k for k in out.perf if k.startswith("queue_")] == ["queue_gmail_com_vmta1_rcpt"]


def test_perfdata_labels_encode_each_name_and_never_collide(
        fake_pmta: FakePmta, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    set_pages(fake_pmta, 3_000, [("a.b.example/vmta1", 1_200, {"paused": "yes"}),
                                 ("a_b.example/vmta1", 1_000, {"paused": "yes"}),
                                 ("bücher.example/vmta1", 800)])
    out = run(capsys, fake_pmta, tmp_path)
    # The internationalised domain's own label is encoded, not the whole metric name.
    assert out.value("queue_xn--bcher-kva_example_vmta1_rcpt") == "800"
    # `a.b` and `a_b` both sanitise to a_b: the first by name keeps the label, the other
    # gets a stable suffix, and each value stays with its own queue.
    assert out.value("queue_a_b_example_vmta1_rcpt") == "1200"
    other = [k for k in out.perf if k.startswith("queue_a_b_example_vmta1_rcpt_")]
    assert len(other) == 1 and out.value(other[0]) == "1000"
    assert "queue a.b.example/vmta1 paused (1,200 rcpt)" in out.line
    assert "queue a_b.example/vmta1 paused (1,000 rcpt)" in out.line
    # The same labels on the next run, whatever the order of the rows.
    set_pages(fake_pmta, 3_000, [("a_b.example/vmta1", 1_300), ("a.b.example/vmta1", 1_200),
                                 ("bücher.example/vmta1", 800)])
    again = run(capsys, fake_pmta, tmp_path)
    assert again.value(other[0]) == "1300" and again.value("queue_a_b_example_vmta1_rcpt") == \
        "1200"


IDLE = {"conn": 0, "mode": "backoff"}


def test_stuck_queue_shows_no_progress_for_the_minutes(
        fake_pmta: FakePmta, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_700_000_000.0]
    monkeypatch.setattr(queue_mod, "clock", lambda: now[0])
    set_pages(fake_pmta, 9_000, [("gmail.com/vmta1", 5_000, IDLE),
                                 ("yahoo.com/vmta2", 4_000, IDLE)])
    for minutes in (5, 5):
        assert run(capsys, fake_pmta, tmp_path).code == 0
        now[0] += minutes * 60
    # A manual re-run seconds later does not count as a run.
    now[0] += 5
    assert run(capsys, fake_pmta, tmp_path).code == 0
    now[0] += 6 * 60
    # yahoo drains, gmail does not.
    set_pages(fake_pmta, 8_500, [("gmail.com/vmta1", 5_000, IDLE),
                                 ("yahoo.com/vmta2", 3_500, IDLE)])
    out = run(capsys, fake_pmta, tmp_path)
    assert out.code == 1
    assert out.line.endswith(
        "queue gmail.com/vmta1 stuck at 5,000 rcpt (no delivery progress for 16 min, 4 runs: "
        "no connections, in backoff)"
    )
    assert out.value("stuck") == "1"
    # Once it decreases it is no longer stuck.
    now[0] += 60
    set_pages(fake_pmta, 8_400, [("gmail.com/vmta1", 4_900, IDLE),
                                 ("yahoo.com/vmta2", 3_500, IDLE)])
    assert run(capsys, fake_pmta, tmp_path).code == 0


@pytest.mark.parametrize("interval_min", [1, 4, 8])
def test_stuck_does_not_depend_on_how_often_the_check_runs(
        fake_pmta: FakePmta, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, interval_min: int) -> None:
    start = 1_700_000_000.0
    now = [start]
    monkeypatch.setattr(queue_mod, "clock", lambda: now[0])
    set_pages(fake_pmta, 5_000, [("gmail.com/vmta1", 5_000, {"conn": 0})])
    while True:
        out = run(capsys, fake_pmta, tmp_path)
        elapsed = (now[0] - start) / 60
        if elapsed < 15:
            assert out.code == 0, (elapsed, out.line)
        else:
            assert out.code == 1 and "gmail.com/vmta1 stuck at 5,000 rcpt" in out.line
            assert f"no delivery progress for {elapsed:.0f} min" in out.line
            break
        now[0] += interval_min * 60


def test_a_growing_queue_that_delivers_is_not_stuck(
        fake_pmta: FakePmta, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An injection wave: the queue grows for half an hour while PowerMTA delivers from it
    (connections, normal mode, no retry ahead). Not decreasing is not being stuck."""
    now = [1_700_000_000.0]
    monkeypatch.setattr(queue_mod, "clock", lambda: now[0])
    for minute in range(0, 31):
        rcp = 5_000 + 400 * minute
        set_pages(fake_pmta, rcp, [("gmail.com/vmta1", rcp, {
            "conn": 12, "mode": "normal", "retryTime": "2025-01-14 09:29:10"})])
        out = run(capsys, fake_pmta, tmp_path, "--stuck-minutes", "10")
        assert out.code == 0, (minute, out.line)
        assert out.value("stuck") == "0"
        now[0] += 60


def test_a_retry_time_ahead_is_no_progress(
        fake_pmta: FakePmta, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_700_000_000.0]
    monkeypatch.setattr(queue_mod, "clock", lambda: now[0])
    # PowerMTA's clock says 09:30:00 (timeNow of /status); its next retry is at 09:45:00.
    ahead = {"conn": 2, "mode": "normal", "retryTime": "2025-01-14 09:45:00"}
    past = {"conn": 2, "mode": "normal", "retryTime": "2025-01-14 09:29:00"}
    set_pages(fake_pmta, 4_000, [("gmail.com/vmta1", 2_000, ahead),
                                 ("yahoo.com/vmta2", 2_000, past)])
    assert run(capsys, fake_pmta, tmp_path, "--stuck-minutes", "10").code == 0
    now[0] += 11 * 60
    out = run(capsys, fake_pmta, tmp_path, "--stuck-minutes", "10")
    assert out.code == 1
    assert out.line.endswith(
        "queue gmail.com/vmta1 stuck at 2,000 rcpt (no delivery progress for 11 min, 2 runs: "
        "next retry at 09:45:00)")
    assert "yahoo.com" not in out.line


def test_stuck_runs_still_works_but_is_deprecated(
        fake_pmta: FakePmta, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_700_000_000.0]
    monkeypatch.setattr(queue_mod, "clock", lambda: now[0])
    set_pages(fake_pmta, 5_000, [("gmail.com/vmta1", 5_000, IDLE)])
    args = ("--stuck-runs", "3", "--stuck-minutes", "0")
    for _ in range(2):
        out = run(capsys, fake_pmta, tmp_path, *args)
        assert out.code == 0 and "--stuck-runs is deprecated" in out.out
        now[0] += 60
    out = run(capsys, fake_pmta, tmp_path, *args)
    assert out.code == 1 and out.line.endswith("(no delivery progress for 2 min, 3 runs: "
                                               "no connections, in backoff)")
    assert "--stuck-runs is deprecated: how many runs make a queue stuck depends on how often " \
        "the check runs; use --stuck-minutes" in out.out
    with pytest.raises(SystemExit):
        run(capsys, fake_pmta, tmp_path, "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "--stuck-runs N DEPRECATED (depends on how often the check runs; use " \
        "--stuck-minutes)" in text


def test_stuck_by_minutes_and_floor(fake_pmta: FakePmta, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_700_000_000.0]
    monkeypatch.setattr(queue_mod, "clock", lambda: now[0])
    set_pages(fake_pmta, 5_500, [("gmail.com/vmta1", 5_000, IDLE),
                                 ("tiny.example/vmta1", 500, IDLE)])
    args = ("--stuck-minutes", "10")
    assert run(capsys, fake_pmta, tmp_path, *args).code == 0
    now[0] += 11 * 60
    out = run(capsys, fake_pmta, tmp_path, *args, "--stuck-state", "critical")
    assert out.code == 2
    assert "queue gmail.com/vmta1 stuck at 5,000 rcpt (no delivery progress for 11 min" \
        in out.line
    assert "tiny.example" not in out.line  # below --stuck-floor 1000


def test_growing_deferred_backlog(fake_pmta: FakePmta, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_700_000_000.0]
    monkeypatch.setattr(queue_mod, "clock", lambda: now[0])
    off = ("--stuck-minutes", "0",)
    for minute, rcp in ((0, 1_000), (10, 1_500), (20, 2_000), (31, 2_600)):
        now[0] = 1_700_000_000.0 + minute * 60
        set_pages(fake_pmta, rcp + 100, [("gmail.com/vmta1", rcp, {"mode": "backoff"}),
                                         ("yahoo.com/vmta2", 100)])
        out = run(capsys, fake_pmta, tmp_path, *off)
    assert out.code == 1
    assert "deferred (backoff) recipients growing for 31 min (from 1,000)" in out.line
    assert out.value("deferred_growing_minutes") == "31"
    # A decrease restarts the clock.
    now[0] += 60
    set_pages(fake_pmta, 2_000, [("gmail.com/vmta1", 1_900, {"mode": "backoff"})])
    assert run(capsys, fake_pmta, tmp_path, *off).code == 0


def test_zabbix_value_json_and_discovery(fake_pmta: FakePmta, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    set_pages(fake_pmta, 62_000, [("gmail.com/vmta1", 60_000),
                                  ("yahoo.com/vmta2", 2_000, {"paused": True})])
    out = run(capsys, fake_pmta, tmp_path, "--output", "zabbix")
    assert (out.code, out.out, out.err) == (0, "62000\n", "")
    out = run(capsys, fake_pmta, tmp_path, "--output", "zabbix", "--json",
              "--item-perfdata", "queue,domain")
    doc = json.loads(out.out)
    assert out.code == 0 and out.err == ""
    assert doc["status"] == 1 and doc["state"] == "WARNING"
    assert doc["metrics"]["rcpt"] == 62_000
    assert doc["details"]["paused"] == ["yahoo.com/vmta2"]
    assert doc["details"]["domains"]["gmail.com"]["rcpt"] == 60_000
    for kind, macro, names in (
        ("vmtas", "{#VMTA}", ["vmta1", "vmta2"]),
        ("domains", "{#DOMAIN}", ["gmail.com", "yahoo.com"]),
    ):
        out = run(capsys, fake_pmta, tmp_path, "--discover", kind)
        assert out.code == 0 and out.err == ""
        assert json.loads(out.out) == [{macro: n} for n in names]
    out = run(capsys, fake_pmta, tmp_path, "--discover", "queues")
    assert json.loads(out.out)[0] == {
        "{#QUEUE}": "gmail.com/vmta1", "{#DOMAIN}": "gmail.com", "{#VMTA}": "vmta1"}


def test_api_down_is_unknown_or_zbx_notsupported(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakePmta().start()
    url = fake.url
    fake.stop()  # nothing listens there any more
    argv = ["--url", url, "--state-dir", str(tmp_path)]
    out = run_main(main, argv, capsys)
    assert out.code == 3
    assert out.line.startswith(f"PMTA QUEUE UNKNOWN - cannot connect to PowerMTA at {url}")
    assert len(out.out.splitlines()) == 1 and out.err == ""
    out = run_main(main, [*argv, "--output", "zabbix"], capsys)
    assert out.code == 0 and out.err == ""
    assert out.out.startswith("ZBX_NOTSUPPORTED: cannot connect to PowerMTA")
    out = run_main(main, [*argv, "--json"], capsys)
    doc = json.loads(out.out)
    assert out.code == 0 and doc["status"] == 3 and "cannot connect" in doc["error"]


def test_forbidden_gives_the_access_hint(fake_pmta: FakePmta, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    healthy(fake_pmta)
    fake_pmta.status_code = 403
    out = run(capsys, fake_pmta, tmp_path)
    assert out.code == 3
    assert "HTTP 403" in out.line and "http-access" in out.line


def test_fractional_timeout_names_the_stage(fake_pmta: FakePmta, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    healthy(fake_pmta)
    fake_pmta.delay = 2.0
    out = run(capsys, fake_pmta, tmp_path, "-t", "0.4")
    assert out.code == 3
    assert out.line == (
        f"PMTA QUEUE UNKNOWN - timed out after 0.4 s while querying PowerMTA /status at "
        f"{fake_pmta.url}"
    )
    out = run(capsys, fake_pmta, tmp_path, "-t", "0.4", "--output", "zabbix")
    assert out.code == 0 and out.out.startswith("ZBX_NOTSUPPORTED: timed out after 0.4 s")


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["-t", "soon"], "argument -t/--timeout: not a number: 'soon'"),
        (["-w", "10:5"], "invalid range '10:5'"),
        (["--paused-state", "maybe"], "expected ok, warning or critical"),
    ],
)
def test_bad_arguments_exit_unknown(argv: list[str], expect: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = run_main(main, argv, capsys)
    assert out.code == 3
    assert out.line.startswith("PMTA QUEUE UNKNOWN - usage: ")
    assert expect in out.line
    assert out.err == ""
    out = run_main(main, [*argv, "--output", "zabbix"], capsys)
    assert out.code == 0 and out.out.startswith("ZBX_NOTSUPPORTED: usage: ")


def test_bad_discovery_kind_is_a_zabbix_error(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_main(main, ["--discover", "jobs"], capsys)
    assert (out.code, out.err) == (0, "")
    assert out.out.startswith(
        "ZBX_NOTSUPPORTED: usage: argument --discover: invalid choice: 'jobs'")


def test_corrupt_state_is_reset_with_a_note(fake_pmta: FakePmta, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    healthy(fake_pmta)
    run(capsys, fake_pmta, tmp_path, "--instance", "main")
    state = tmp_path / "state" / "check_pmta_queue-main.json"
    assert state.exists() and (state.stat().st_mode & 0o777) == 0o600
    state.write_text("{not json")
    out = run(capsys, fake_pmta, tmp_path, "--instance", "main")
    assert out.code == 0
    assert "(1 note below)" in out.line
    assert "state file" in out.out and "state reset" in out.out
    assert "deferred" in json.loads(state.read_text())  # rewritten


def test_unreadable_state_is_unknown(fake_pmta: FakePmta, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    healthy(fake_pmta)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "check_pmta_queue-x.json").mkdir()  # not a file
    out = run(capsys, fake_pmta, tmp_path, "--instance", "x")
    assert out.code == 3
    assert out.line.startswith("PMTA QUEUE UNKNOWN - cannot read state file")


def test_state_directory_writable_by_others_is_refused_in_one_line(
        fake_pmta: FakePmta, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    healthy(fake_pmta)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    os.chmod(state_dir, 0o777)
    out = run(capsys, fake_pmta, tmp_path, "--instance", "main")
    assert out.code == 3
    assert out.out == (
        f"PMTA QUEUE UNKNOWN - state directory {state_dir} is writable by others (mode 0777, "
        f"owner uid {os.geteuid()}): another user could plant links there; refused "
        f"(chmod go-w {state_dir}, or use a private --state-dir)\n"
    )
    assert list(state_dir.iterdir()) == []


def test_planted_lock_symlink_is_refused_not_followed(
        fake_pmta: FakePmta, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    healthy(fake_pmta)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    os.chmod(state_dir, 0o1777)  # shared like /tmp: accepted, but no link is followed
    victim = tmp_path / "etc" / "cron.d" / "evil"
    victim.parent.mkdir(parents=True)
    (state_dir / "check_pmta_queue-main.json.lock").symlink_to(victim)
    out = run(capsys, fake_pmta, tmp_path, "--instance", "main")
    assert out.code == 3
    assert out.line.startswith(
        f"PMTA QUEUE UNKNOWN - lock file {state_dir}/check_pmta_queue-main.json.lock is a "
        "symbolic link; refused")
    assert len(out.out.splitlines()) == 1 and out.err == ""
    assert not victim.exists()


def test_output_stays_under_8kb(fake_pmta: FakePmta, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    queues = [(f"d{i:04d}.example.com/vmta-with-a-long-name-{i % 7}", 1_000 + i,
               {"paused": True}) for i in range(400)]
    set_pages(fake_pmta, 500_000, queues)
    out = run(capsys, fake_pmta, tmp_path, "--max-items", "400", "-v")
    assert out.code == 2
    assert len(out.out.encode()) < 8000
    assert out.out.count("|") == 1
    assert "more lines not shown" in out.out
    assert out.perf["rcpt"].startswith("500000;")


def test_subprocess(fake_pmta: FakePmta, tmp_path: Path) -> None:
    set_pages(fake_pmta, 120_000, [("gmail.com/vmta1", 120_000)])
    env = dict(os.environ, PMTA_SNMP_STATE_DIR=str(tmp_path))
    out = run_subprocess("queue", ["--url", fake_pmta.url], env=env)
    assert out.code == 2, out
    assert out.line.startswith("PMTA QUEUE CRITICAL - 120,000 recipients queued")
    assert out.err == ""
    out = run_subprocess("queue", ["--url", fake_pmta.url, "--output", "zabbix"], env=env)
    assert (out.code, out.out) == (0, "120000\n")


def test_plain_http_run_loads_only_what_it_uses(fake_pmta: FakePmta, tmp_path: Path) -> None:
    """Cold start: a JSON answer over http needs no XML or CSV parser, no strptime and no
    CA store (a plugin starts for every run)."""
    set_pages(fake_pmta, 1200, [("gmail.com/vmta1", 700)])
    code = (
        "import ssl, sys\n"
        "cas = []\n"
        "real = ssl.create_default_context\n"
        "ssl.create_default_context = lambda *a, **kw: cas.append(a) or real(*a, **kw)\n"
        "from pmta_snmp.checks.queue import main\n"
        f"code = main(['--url', {fake_pmta.url!r}, '--state-dir', {str(tmp_path)!r}])\n"
        "loaded = [m for m in ('defusedxml', 'xml.etree', 'pyexpat', 'csv', '_strptime')\n"
        "          if m in sys.modules]\n"
        "print(code, loaded, len(cas), file=sys.stderr)\n"
    )
    out = subprocess.run([python_executable(), "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stderr == "0 [] 0\n", out.stderr
