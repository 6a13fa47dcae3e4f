"""check_pmta_tls: cleartext and weak-protocol deliveries, TLS handshake failures in the log."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from pmta_snmp.checks.tls import main, protocol_rank

from tests.integration.test_checks_support import (
    Outcome,
    acct_lines,
    mix,
    run_main,
    run_subprocess,
)

FAIL = ("2025-01-14 09:13:31 TLS handshake failed with mx.example.org (192.0.2.40): "
        "sslv3 alert handshake failure\n")
OK_TLS = "2025-01-14 09:13:31 tls:TLSv1.2 connected with 128-bit ECDHE-RSA-AES128-GCM-SHA256\n"


class Setup:
    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp = tmp_path
        self.capsys = capsys
        self.acct = tmp_path / "acct.csv"
        self.log = tmp_path / "log"
        self.log.write_text(OK_TLS)

    def records(self, records: list[dict[str, object]], layout: str = "5.0") -> None:
        self.acct.write_text(acct_lines(records, layout), newline="")

    def check(self, *argv: str) -> Outcome:
        return run_main(main, ["--acct-file", str(self.acct), "-l", str(self.log),
                               "--state-dir", str(self.tmp / "state"), "--from-start", *argv],
                        self.capsys)


@pytest.fixture
def tls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Setup:
    return Setup(tmp_path, capsys)


def test_protocol_ranks() -> None:
    assert protocol_rank("SSLv3") < protocol_rank("TLSv1") < protocol_rank("TLSv1.1") \
        < protocol_rank("TLSv1.2") < protocol_rank("TLSv1.3")  # type: ignore[operator]
    assert protocol_rank("") is None and protocol_rank("none") is None


def test_all_good_is_ok(tls: Setup) -> None:
    tls.records(mix({"d": 200}, domain="gmail.com"))
    out = tls.check()
    assert out.code == 0
    assert out.line.startswith(
        "PMTA TLS OK - 0 of 200 STARTTLS-capable deliveries in clear (0.0%), 0 below TLSv1.2 "
        "in the last 60 min; 0 TLS handshake failures in the log since the last run"
    )
    assert out.value("clear_rate") == "0%" and out.value("tls") == "200"


@pytest.mark.parametrize(("clear", "code"), [(2, 0), (4, 1), (12, 2)])
def test_cleartext_despite_starttls(tls: Setup, clear: int, code: int) -> None:
    tls.records(mix({"d": 200 - clear}, domain="gmail.com")
                + mix({"d": clear}, domain="yahoo.com", tls="")
                + mix({"d": 300}, domain="nostarttls.example", esmtp="PIPELINING,SIZE", tls=""))
    out = tls.check()
    assert out.code == code
    assert out.value("cleartext") == str(clear) and out.value("starttls_offered") == "200"
    if code:
        assert out.line.startswith(
            f"PMTA TLS {'WARNING' if code == 1 else 'CRITICAL'} - {clear / 2:.1f}% of "
            f"STARTTLS-capable deliveries went in clear ({clear} of 200)"
        )


def test_cleartext_per_domain(tls: Setup) -> None:
    tls.records(mix({"d": 500}, domain="gmail.com")
                + mix({"d": 100}, domain="yahoo.com", tls="")
                + mix({"d": 10}, domain="tiny.example", tls=""))
    out = tls.check()
    assert out.code == 2
    assert "domain yahoo.com cleartext rate (STARTTLS offered) 100.0% (100 of 100)" in out.line
    assert "tiny.example" not in out.line  # below --min-volume


def test_weak_protocol(tls: Setup) -> None:
    tls.records(mix({"d": 180}, domain="gmail.com")
                + mix({"d": 20}, domain="old.example", tls="TLSv1"))
    out = tls.check("--min-volume", "10")
    assert out.code == 1
    assert "10.0% of TLS deliveries below TLSv1.2 (20 of 200)" in out.line
    assert out.perf["domain_old_example_weak_rate"] == "100%;1;;0;100"
    # The protocol is judged as records are read: a new instance re-reads with TLSv1.
    out = tls.check("--min-protocol", "TLSv1", "--min-volume", "10", "--instance", "v1")
    assert out.code == 0 and out.value("weak") == "0"


def test_handshake_failures_from_the_log(tls: Setup) -> None:
    tls.records(mix({"d": 200}))
    tls.check()  # first run: log read from its end... with --from-start from the start
    with tls.log.open("a") as fh:
        fh.write(FAIL * 12 + OK_TLS * 3)
    out = tls.check()
    assert out.code == 1
    assert "12 TLS handshake failures in the log since the last run (warning above 10)" \
        in out.line
    assert f"last TLS failure: {FAIL.strip()}" in out.line
    out = tls.check("--handshake-critical", "5")
    assert out.code == 0 and out.value("handshake_failures") == "0"  # nothing new


def test_sources_selection(tls: Setup, tmp_path: Path) -> None:
    tls.records(mix({"d": 200}))
    tls.log.unlink()
    out = tls.check()
    assert out.code == 3 and "log file" in out.line and "does not exist" in out.line
    out = tls.check("--sources", "acct")
    assert out.code == 0 and "handshake_failures" not in out.perf
    out = run_main(main, ["--sources", "log", "--acct-file", str(tmp_path / "none"),
                          "-l", str(tmp_path / "log2"), "--state-dir", str(tmp_path / "s")],
                   tls.capsys)
    assert out.code == 3 and "log2 does not exist" in out.line
    out = tls.check("--sources", "smtp")
    assert out.code == 3 and "usage:" in out.line


def test_zabbix(tls: Setup) -> None:
    tls.records(mix({"d": 180}, domain="gmail.com") + mix({"d": 20}, domain="y.example", tls=""))
    out = tls.check("--output", "zabbix")
    assert (out.code, out.out, out.err) == (0, "10\n", "")
    doc = json.loads(tls.check("--json").out)
    assert doc["status"] == 2 and doc["details"]["cleartext"] == 20
    out = tls.check("--discover", "domains")
    assert json.loads(out.out) == [{"{#DOMAIN}": "gmail.com"}, {"{#DOMAIN}": "y.example"}]


def test_subprocess(tls: Setup) -> None:
    tls.records(mix({"d": 100}, domain="gmail.com") + mix({"d": 100}, domain="y.example",
                                                          tls=""))
    env = dict(os.environ, PMTA_SNMP_STATE_DIR=str(tls.tmp / "st"))
    out = run_subprocess("tls", ["--acct-file", str(tls.acct), "-l", str(tls.log),
                                 "--from-start"], env=env)
    assert out.code == 2, out
    assert out.line.startswith("PMTA TLS CRITICAL - 50.0% of STARTTLS-capable deliveries went "
                               "in clear (100 of 200)")
    assert out.err == ""


def test_layout_40_has_no_tls_columns_unknown_not_critical(tls: Setup) -> None:
    """PowerMTA 4.0 writes no dlvTlsProtocol: STARTTLS was offered but whether TLS was used is
    unknown, not "100 % in clear"."""
    tls.records(mix({"d": 200}, domain="gmail.com"), layout="4.0")
    out = tls.check("--sources", "acct")
    assert out.code == 3, out.out
    assert out.line == (
        f"PMTA TLS UNKNOWN - accounting file {tls.acct} has no dlvTlsProtocol column (a 4.0 "
        "layout, or record-fields without it): cannot tell deliveries in clear from TLS ones")
    # Nothing new: still UNKNOWN (the layout in force has not changed).
    assert tls.check("--sources", "acct").code == 3


def test_record_fields_without_the_tls_columns(tls: Setup, tmp_path: Path) -> None:
    header = "type,timeLogged,orig,rcpt,dsnStatus,dlvSourceIp,vmta"
    now = time.strftime("%Y-%m-%d %H:%M:%S%z")
    rows = [f"d,{now},a@s.example,r{i}@gmail.com,2.0.0,192.0.2.1,v" for i in range(150)]
    tls.acct.write_text("\r\n".join([header, *rows]) + "\r\n", newline="")
    out = tls.check("--sources", "acct")
    assert out.code == 3
    assert ("has no dlvEsmtpAvailable and dlvTlsProtocol columns (a 4.0 layout, or "
            "record-fields without them)") in out.line


def test_tls_columns_back_after_an_upgrade(tls: Setup, tmp_path: Path) -> None:
    """A rotation to a layout with the TLS columns: judged again, and the deliveries of the
    old layout were never counted as in clear."""
    tls.records(mix({"d": 200}, domain="gmail.com"), layout="4.0")
    assert tls.check("--sources", "acct").code == 3
    tls.acct.rename(tmp_path / "acct-2025-01-14-0001.csv")
    tls.records(mix({"d": 150}, domain="gmail.com"))
    out = tls.check("--sources", "acct")
    assert out.code == 0, out.out
    assert out.value("starttls_offered") == "150" and out.value("cleartext") == "0"


def test_sources_follow_the_files_given(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Only --acct-file given: the default log file is not required (and the reverse)."""
    acct = tmp_path / "acct.csv"
    acct.write_text(acct_lines(mix({"d": 200}, domain="gmail.com")), newline="")
    state = ["--state-dir", str(tmp_path / "state")]
    out = run_main(main, ["--acct-file", str(acct), *state], capsys)
    assert out.code == 0, out.out
    assert out.value("starttls_offered") == "200" and "handshake_failures" not in out.perf
    log = tmp_path / "log"
    log.write_text(FAIL * 11)
    out = run_main(main, ["-l", str(log), "--from-start", *state], capsys)
    assert out.code == 1, out.out
    assert out.value("handshake_failures") == "11" and "starttls_offered" not in out.perf
