"""The accounting plugins' top reasons are normalised replies (issue 13 §6): the same reply to
different recipients counts once, no address and no "(other)" reach the status line."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import pytest
from pmta_snmp.checks import bounce, deferral

from tests.integration.test_checks_support import Outcome, acct_lines, mix, rec, run_main

ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def _run(capsys: pytest.CaptureFixture[str], tmp_path: Path, main: object, acct: Path,
         *argv: str) -> Outcome:
    return run_main(main, ["--acct-file", str(acct), "--state-dir", str(tmp_path / "state"),
                           "--from-start", *argv], capsys)  # type: ignore[arg-type]


def _write(tmp_path: Path, records: list[dict[str, object]]) -> Path:
    path = tmp_path / "acct.csv"
    path.write_text(acct_lines(records), encoding="utf-8", newline="")
    return path


def test_bounce_reasons_group_replies_that_name_the_recipient(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 600 recipients, one Postfix reply shape: more distinct raw texts than the plugin keeps
    # keys (500), so before normalising they folded into "(other)", which topped the list.
    records = mix({"d": 400}) + [
        rec("b", f"user{i}@example.com",
            diag=f"smtp;550 5.1.1 <user{i}@example.com>: Recipient address rejected: "
                 f"User unknown in virtual mailbox table (queue id 4Xz1Lq2Jw{i:04d}z)")
        for i in range(600)
    ] + [rec("b", f"gone{i}@example.com", diag="smtp;550 5.2.1 mailbox disabled")
         for i in range(30)]
    out = _run(capsys, tmp_path, bounce.main, _write(tmp_path, records))
    assert out.code == 2, out.out
    assert not ADDRESS.search(out.out) and "(other)" not in out.out
    assert ('top hard-bounce reasons: "smtp;550 5.1.1 <ADDRESS>: Recipient address rejected: '
            'User u" x600, "smtp;550 5.2.1 mailbox disabled" x30') in out.line
    out = _run(capsys, tmp_path / "json", bounce.main, tmp_path / "acct.csv", "--json")
    doc = json.loads(out.out)
    assert not ADDRESS.search(out.out) and "(other)" not in doc["details"]["reasons"]


def test_deferral_reasons_group_replies_that_name_the_recipient(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = mix({"d": 800}, domain="example.org") + [
        rec("t", f"jane{i}@example.org",
            diag=f"smtp;450 4.2.0 <jane{i}@example.org>: Recipient address rejected: "
                 "Greylisted, see http://postgrey.schweikert.ch/help/example.org.html")
        for i in range(200)
    ]
    out = _run(capsys, tmp_path, deferral.main, _write(tmp_path, records))
    assert out.code == 2, out.out
    assert not ADDRESS.search(out.out) and "(other)" not in out.out
    assert 'top reasons: "smtp;450 4.2.0 <ADDRESS>: Recipient address rejected: Greyli" x200' \
        in out.line


def _letters(i: int) -> str:
    """A distinct word of letters only (normalising leaves it alone)."""
    word = ""
    for _ in range(3):
        i, r = divmod(i, 26)
        word += string.ascii_lowercase[r]
    return word


def test_the_folded_bucket_is_never_a_reason(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # 700 genuinely different replies: 200 fold into "(other)", which has the most.
    records = mix({"d": 300}) + [
        rec("b", f"u{i}@example.com", diag=f"smtp;550 5.1.1 no such user here {_letters(i)}")
        for i in range(700)
    ]
    out = _run(capsys, tmp_path, bounce.main, _write(tmp_path, records), "--json")
    reasons = json.loads(out.out)["details"]["reasons"]
    assert reasons and "(other)" not in reasons
    assert all(n == 1 for n in reasons.values())
    out = _run(capsys, tmp_path / "text", bounce.main, tmp_path / "acct.csv")
    assert "top hard-bounce reasons: " in out.line and "(other)" not in out.line
