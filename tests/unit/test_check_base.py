"""The shared plugin contract: numbers, ranges, labels, perfdata, output size, Zabbix mode."""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nagiosplugin
import pytest
from pmta_snmp.checks import base
from pmta_snmp.checks.base import (
    MAX_OUTPUT_BYTES,
    Flag,
    Labelled,
    Perf,
    Plugin,
    PmtaCheck,
    Run,
    Summary,
    Threshold,
    describe_range,
    distinct_labels,
    duration,
    fmt_num,
    fmt_range,
    label_suffix,
    make_parser,
    metric,
    parse_min_range,
    parse_range,
    perf_label,
    run_plugin,
    state_choice,
)

from pmta_snmp.state import STALE_TEMP_S


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"), (12, "12"), (1e-7, "0"), (0.000123, "0.000123"), (1e20, "100000000000000000000"),
        (0.1 + 0.2, "0.3"), (2.50, "2.5"), (-3.0, "-3"), (None, "U"), (float("nan"), "U"),
        (float("inf"), "U"), (True, "1"), (123456789.125, "123456789.125"),
    ],
)
def test_fmt_num_never_uses_scientific_notation(value: float | None, text: str) -> None:
    assert fmt_num(value) == text


@pytest.mark.parametrize(
    ("spec", "text", "words"),
    [
        ("10", "10", "above 10"), ("10:", "10:", "below 10"), ("~:10", "~:10", "above 10"),
        ("@10:20", "@10:20", "inside 10..20"), ("5:10", "5:10", "outside 5..10"),
        ("0.00001", "0.00001", "above 0"), ("5%", "5", "above 5"),
    ],
)
def test_ranges(spec: str, text: str, words: str) -> None:
    rng = parse_range(spec)
    assert fmt_range(rng) == text
    assert describe_range(rng) == words


def test_bad_ranges_and_min_ranges() -> None:
    for bad in ("abc", "10:5", "1:2:3", "1e5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_range(bad)
    assert fmt_range(parse_min_range("30")) == "30:"
    assert fmt_range(parse_min_range("@0:7")) == "@7"  # same range, start 0 omitted
    assert parse_range("10").match(10) and not parse_range("10").match(10.5)


def test_labels_are_sanitised() -> None:
    assert perf_label("queue", "gmail.com/vmta-1") == "queue_gmail.com/vmta-1".replace(
        ".", "_").replace("/", "_")
    assert perf_label("domain", "bücher.example") == "domain_xn--bcher-kva_example"
    assert perf_label("domain", "b\u00fccher..bad") == "domain_xn--bcher-kva_bad"
    assert perf_label("a b", "c'd=e") == "a_b_c_d_e"
    assert perf_label("...") == "value"


def test_label_encodes_each_word_of_a_name_not_the_whole() -> None:
    """A plugin builds labels as one text (`domain_<name>_rcpt`): the internationalised
    domain's own labels are encoded, the prefix and suffix stay readable."""
    assert perf_label("domain_bücher.example_rcpt") == "domain_xn--bcher-kva_example_rcpt"
    assert perf_label("queue_bücher.example/vmta-ü_rcpt") == (
        "queue_xn--bcher-kva_example_xn--vmta--ova_rcpt")
    long = "é" + "a" * 70  # too long for an IDNA label: punycode all the same
    assert perf_label(f"domain_{long}.com_rcpt") == (
        f"domain_xn--{long.encode('punycode').decode()}_com_rcpt")


def test_names_that_sanitise_alike_get_distinct_stable_labels() -> None:
    names = ["domain_a.b_rcpt", "domain_a_b_rcpt", "domain_a/b_rcpt", "domain_c.d_rcpt"]
    labels = distinct_labels(names)
    assert labels["domain_a.b_rcpt"] == "domain_a_b_rcpt"  # the first in sorted order
    assert labels["domain_a/b_rcpt"] == f"domain_a_b_rcpt_{label_suffix('domain_a/b_rcpt')}"
    assert labels["domain_a_b_rcpt"] == f"domain_a_b_rcpt_{label_suffix('domain_a_b_rcpt')}"
    assert labels["domain_c.d_rcpt"] == "domain_c_d_rcpt"  # no clash: no suffix
    assert len(set(labels.values())) == len(names)
    assert distinct_labels(reversed(names)) == labels  # the order does not matter
    items: Labelled[str] = Labelled()
    items.reserve(reversed(names))
    metrics = [items.metric(n, n, 1, context="x") for n in names]
    assert [m.name for m in metrics] == [labels[n] for n in names]
    assert {items[m.name] for m in metrics} == set(names)  # each label names its own item
    # A clash with a name not reserved still gets its own label.
    late = items.metric("domain_a-b_rcpt?", "domain_a b_rcpt", 2, context="x")
    assert late.name not in labels.values() and items[late.name] == "domain_a-b_rcpt?"


def test_perf_formatting() -> None:
    p = Perf("rate gmail.com", 1e-7, "%", parse_range("5"), parse_range("7"), 0, 100)
    assert str(p) == "rate_gmail_com=0%;5;7;0;100"
    assert str(Perf("x", 1234567.5, "", "", "", "", "")) == "x=1234567.5"
    assert str(Perf("x", None, "", parse_range("30:"), "", "", "")) == "x=U;30:"


def test_small_parsers() -> None:
    assert duration("90") == 90 and duration("15m") == 900 and duration("1h") == 3600
    assert duration("2d") == 172800
    with pytest.raises(argparse.ArgumentTypeError):
        duration("soon")
    assert state_choice("crit") == 2 and state_choice("OK") == 0
    with pytest.raises(argparse.ArgumentTypeError):
        state_choice("")


# -- a tiny plugin to drive run_plugin ---------------------------------------------------------


class _Res(nagiosplugin.Resource):  # type: ignore[misc]
    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        self.args, self.run = args, run

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        self.run.enter("measuring the thing")
        if self.args.sleep:
            time.sleep(self.args.sleep)
        if self.args.boom:
            raise RuntimeError("kaboom")
        self.run.primary = "value"
        yield metric("value", self.args.value, context="value", min=0)
        for i in range(self.args.items):
            yield metric(f"item {i:04d}.example.com", i, context="item")
        self.run.long.extend(f"detail line {i} " + "x" * 60 for i in range(self.args.items))
        yield metric("flag", self.args.flag, context="flag")


def _parser(plugin: Plugin) -> base.PluginParser:
    p = make_parser(plugin, warning="10", critical="20", threshold_help="value",
                    connection=False, state=False)
    p.add_argument("--value", type=float, default=1.0)
    p.add_argument("--items", type=int, default=0)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--boom", action="store_true")
    p.add_argument("--flag", type=int, default=0)
    return p


def _check(args: argparse.Namespace, run: Run) -> nagiosplugin.Check:
    return PmtaCheck(
        _Res(args, run),
        Threshold("value", args.warning, args.critical, "value is {valueunit}"),
        Threshold("item", None, None, "{name}"),
        Flag("flag", 2, "flag is up"),
        Summary(),
    )


PLUGIN = Plugin("TEST", "check_pmta_test", "a test plugin", _parser, _check)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run_plugin(PLUGIN, list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(("value", "code", "line"), [
    ("5", 0, "PMTA TEST OK - value is 5 | value=5;10;20;0 flag=0"),
    ("15", 1, "PMTA TEST WARNING - value is 15 (warning above 10) | value=15;10;20;0 flag=0"),
    ("25.5", 2, "PMTA TEST CRITICAL - value is 25.5 (critical above 20) | value=25.5;10;20;0 "
                "flag=0"),
])
def test_exit_codes_and_status_line(capsys: pytest.CaptureFixture[str], value: str, code: int,
                                    line: str) -> None:
    assert run(capsys, "--value", value) == (code, line + "\n", "")


def test_problems_worst_first_with_long_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--value", "15", "--flag", "1")
    assert code == 2
    lines = out.splitlines()
    assert lines[0] == "PMTA TEST CRITICAL - flag is up; value is 15 (warning above 10)"
    assert lines[1:3] == ["CRITICAL: flag is up", "WARNING: value is 15 (warning above 10)"]
    assert lines[3] == "| value=15;10;20;0 flag=1"


def test_unexpected_error_is_one_unknown_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--boom")
    assert code == 3
    assert out == ("PMTA TEST UNKNOWN - internal error: RuntimeError: kaboom (run with -vvv for "
                   "the traceback)\n")
    assert err == ""
    code, out, err = run(capsys, "--boom", "-vvv")
    assert code == 3 and len(out.splitlines()) == 1
    assert "Traceback (most recent call last)" in err and "kaboom" in err
    code, out, err = run(capsys, "--boom", "-vvv", "--output", "zabbix")
    assert (code, err) == (0, "") and out.startswith("ZBX_NOTSUPPORTED: internal error")


def test_fractional_timeout_names_the_stage(capsys: pytest.CaptureFixture[str]) -> None:
    # The resource sleeps an hour: the run returning at all is the -t alarm cutting it
    # (a plugin without it would hang until pytest's own timeout).
    code, out, _ = run(capsys, "--sleep", "3600", "-t", "0.25")
    assert code == 3
    assert out == "PMTA TEST UNKNOWN - timed out after 0.25 s while measuring the thing\n"


def test_usage_errors_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--value")
    assert code == 3 and err == ""
    assert out == ("PMTA TEST UNKNOWN - usage: argument --value: expected one argument "
                   "(see --help)\n")
    code, out, _ = run(capsys, "-t", "-1")
    assert code == 3 and "must be a number >= 0: '-1'" in out
    code, out, _ = run(capsys, "--output=zabbix", "--nope")
    assert code == 0 and out.startswith("ZBX_NOTSUPPORTED: usage: unrecognized arguments")
    code, out, _ = run(capsys, "--json", "--nope")
    assert code == 0 and json.loads(out)["status"] == 3


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_exits_0(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    from pmta_snmp import __version__

    with pytest.raises(SystemExit) as exc:
        run_plugin(PLUGIN, [flag])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"{PLUGIN.prog} (pmta-snmp) {__version__}\n"


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run_plugin(PLUGIN, ["--help"])
    assert exc.value.code == 0
    assert "exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN" in capsys.readouterr().out


def test_gc_policy_only_for_the_process_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    assert PLUGIN.main(["--value", "5"]) == 0  # in-process: the collector is left alone
    # gc.freeze() would move every tracked object to the permanent generation; objects frozen
    # by an earlier test in this process may be freed meanwhile, so the count may only drop.
    assert gc.get_threshold() == threshold and gc.get_freeze_count() <= frozen
    during: list[int] = []

    def recording(plugin: Plugin, argv: list[str] | None) -> int:
        during.append(gc.get_threshold()[0])
        return run_plugin(plugin, argv)

    monkeypatch.setattr(base, "run_plugin", recording)
    monkeypatch.setattr(sys, "argv", ["check_pmta_test", "--value", "5"])
    try:
        assert PLUGIN.main() == 0  # the command: rare young collections, frozen at the end
        assert during == [base._GC_THRESHOLD]
        assert gc.get_threshold() == threshold
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()
    assert capsys.readouterr().out.startswith("PMTA TEST OK - value is 5")


def test_output_capped_below_8kb(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--items", "600", "--value", "30", "-v")
    assert code == 2
    assert len(out.encode()) <= MAX_OUTPUT_BYTES
    assert out.count("|") == 1
    head, perf = out.split("|")
    assert "more lines not shown" in head
    assert perf.split()[0] == "value=30;10;20;0"  # totals come first and survive


def test_zabbix_value_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--value", "0.1", "--output", "zabbix") == (0, "0.1\n", "")
    code, out, err = run(capsys, "--value", "25", "--json")
    doc = json.loads(out)
    assert (code, err) == (0, "")
    assert doc == {"status": 2, "state": "CRITICAL",
                   "summary": "value is 25 (critical above 20)",
                   "metrics": {"value": 25.0, "flag": 0}, "details": {}}


# -- text from input (log lines, API answers) in the output -----------------------------------

#: A log line as hostile input: NUL, BEL, ESC colour codes, DEL, a C1 CSI, a `|`, a newline.
HOSTILE = "ETIMEDOUT\x00 to mx\x07 \x1b[31mred\x1b[0m \x7f\x9b2J a|b\nnext"
SHOWN = "ETIMEDOUT? to mx? ?[31mred?[0m ??2J a/b next"


class _Echo(nagiosplugin.Resource):  # type: ignore[misc]
    """Says the text of --text in every place a plugin prints input text."""

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        self.args, self.run = args, run

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        if self.args.fail:
            raise base.PluginError(f"cannot parse {self.args.text}")
        self.run.note(f"note {self.args.text}")
        self.run.long.append(f"line {self.args.text}")
        yield metric("seen", 1, context="seen")


def _echo_parser(plugin: Plugin) -> base.PluginParser:
    p = make_parser(plugin, warning="0", critical=None, threshold_help="lines",
                    connection=False, state=False)
    p.add_argument("--text", default="")
    p.add_argument("--fail", action="store_true")
    return p


def _echo_check(args: argparse.Namespace, run: Run) -> nagiosplugin.Check:
    return PmtaCheck(_Echo(args, run),
                     Threshold("seen", args.warning, None, lambda m, c: f"seen {args.text}"),
                     Summary())


ECHO = Plugin("ECHO", "check_pmta_echo", "echoes input text", _echo_parser, _echo_check)


def _assert_no_controls(out: str) -> None:
    assert not [c for c in out if c != "\n" and (ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f)], out


def test_control_bytes_of_input_never_reach_the_output(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = run_plugin(ECHO, ["--text", HOSTILE, "-v"])
    out = capsys.readouterr().out
    _assert_no_controls(out)
    assert code == 1
    assert out == (f"PMTA ECHO WARNING - seen {SHOWN} (warning above 0)\n"
                   f"WARNING: seen {SHOWN} (warning above 0)\n"
                   f"note {SHOWN}\n"
                   f"line {SHOWN}\n"
                   "| seen=1;0\n")  # the perfdata survives: no NUL cut the output before it
    code = run_plugin(ECHO, ["--text", HOSTILE, "--fail"])
    out = capsys.readouterr().out
    assert (code, out) == (3, f"PMTA ECHO UNKNOWN - cannot parse {SHOWN}\n")
    for zabbix in (["--output", "zabbix"], ["--json"]):
        assert run_plugin(ECHO, ["--text", HOSTILE, "--fail", *zabbix]) == 0
        out = capsys.readouterr().out
        _assert_no_controls(out)
        assert SHOWN in (json.loads(out)["error"] if "--json" in zabbix else out)


def test_cold_start_imports_nothing_heavy() -> None:
    code = ("import sys, pmta_snmp.checks.queue, pmta_snmp.checks.bounce, "
            "pmta_snmp.checks.log, pmta_snmp.checks.license, pmta_snmp.checks.tls, "
            "pmta_snmp.checks.deferral; "
            "bad = [m for m in sys.modules if m.startswith(('pysnmp', 'httpx', "
            "'pmta_snmp.agentx', 'pmta_snmp.mib', 'asyncio', 'pmta_snmp.api', "
            "'pmta_snmp.acct', 'pmta_snmp.logtail', 'pmta_snmp.cli', 'gzip'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_state_save_removes_temp_files_of_killed_saves(tmp_path: Path) -> None:
    args = argparse.Namespace(timeout=10, state_dir=str(tmp_path), instance="main")
    state = Run(PLUGIN, args).state_file("key")
    name = state.path.name
    old = time.time() - STALE_TEMP_S - 1
    stale = [tmp_path / f".{name}.k1ll3d.tmp", tmp_path / f".{name}.0ther.tmp"]
    recent = tmp_path / f".{name}.wr1t1ng.tmp"  # not old enough to be sure
    others = [tmp_path / ".other.json.x.tmp", tmp_path / f"{name}.tmp",
              tmp_path / f".{name}.x.tmp.keep"]
    for p in [*stale, recent, *others]:
        p.write_bytes(b'{"half')
    for p in [*stale, *others]:
        os.utime(p, (old, old))
    with state.transaction() as doc:
        doc["n"] = 1
    assert state.load() == {"n": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [name, f"{name}.lock", recent.name, *(p.name for p in others)])


def test_a_window_of_no_time_is_a_usage_error() -> None:
    """`--window 0` measured nothing yet read as the last minute, with an OK."""
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "pmta_snmp.checks.bounce", "--acct-file", "/nonexistent.csv",
         "--window", "0"], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 3, res.stdout
    assert res.stdout.startswith("PMTA BOUNCE UNKNOWN - usage: argument --window: must be more "
                                 "than 0 seconds: '0'"), res.stdout
    assert "Traceback" not in res.stdout + res.stderr
