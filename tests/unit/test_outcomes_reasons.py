"""Reason classes from the shipped rules, against whole reply lines as receivers send them,
the rules file's error paths, and the reason normaliser's properties."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pmta_snmp.outcomes import reasons
from pmta_snmp.outcomes.files import OutcomesFileError
from pmta_snmp.outcomes.reasons import (
    BLOCKLISTS,
    REASONS,
    Reason,
    classify,
    load_reasons,
    lookup_url,
    normalize_reason,
)

REPO = Path(__file__).resolve().parents[2]
IP = "203.0.113.66"
MS_TRAILER = ("[BN8NAM11FT045.eop-nam11.prod.protection.outlook.com 2025-01-14T08:12:03.123Z "
              "08DD2F1234ABCD56]")
GMAIL_ID = "d75a77b69052e-467b2dbf6d5si12345678a1.345 - gsmtp"


def gmail(code: str, enh: str, *lines: str) -> str:
    """A multi-line Gmail reply as PowerMTA logs it: every line but the last "550-5.1.1"."""
    parts = [f"{code}-{enh} {line}" for line in lines[:-1]] + [f"{code} {enh} {lines[-1]}"]
    return "smtp;" + " ".join(parts)


# (dsnStatus, dsnDiag, bounceCat, expected reason, expected blocklist)
CASES: list[tuple[str, str, str, str, str | None]] = [
    # --- blocklists, one per list
    ("5.7.1 (delivery not authorized, message refused)",
     f"smtp;554 5.7.1 Service unavailable; Client host [{IP}] blocked using zen.spamhaus.org; "
     f"https://www.spamhaus.org/query/ip/{IP}", "spam-related", "blocklist", "spamhaus"),
    ("5.7.1", f"smtp;550 5.7.1 Service unavailable, Client host [{IP}] blocked using Spamhaus. "
     f"To request removal from this list see https://www.spamhaus.org/query/ip/{IP} (AS3130). "
     f"{MS_TRAILER}", "", "blocklist", "spamhaus"),
    ("5.0.0", f"smtp;554 Service unavailable; Client host [{IP}] blocked using "
     f"b.barracudacentral.org; http://www.barracudanetworks.com/reputation/?pr=1&ip={IP}", "",
     "blocklist", "barracuda"),
    ("5.7.1", f"smtp;550 5.7.1 Service unavailable; Client host [{IP}] blocked using "
     f"bl.spamcop.net; Blocked - see https://www.spamcop.net/bl.shtml?{IP}", "", "blocklist",
     "spamcop"),
    ("5.7.1", f"smtp;554 5.7.1 Service unavailable; Client host [{IP}] blocked using "
     f"dnsbl.sorbs.net; Currently Sending Spam See: http://www.sorbs.net/lookup.shtml?{IP}", "",
     "blocklist", "sorbs"),
    ("5.7.1", f"smtp;550 5.7.1 Service unavailable; Client host [{IP}] blocked using "
     f"dnsbl-1.uceprotect.net; IP {IP} is UCEPROTECT-Level 1 listed. See "
     f"http://www.uceprotect.net/rblcheck.php?ipr={IP}", "", "blocklist", "uceprotect"),
    ("5.7.1", f"smtp;554 5.7.1 Service unavailable; Client host [{IP}] blocked using ivmSIP; "
     "see https://www.invaluement.com/lookup/", "", "blocklist", "invaluement"),
    ("5.7.1", f"smtp;550 5.7.1 Unfortunately, messages from [{IP}] weren't sent. Please contact "
     "your Internet service provider since part of their network is on our block list (S3150). "
     "You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors. "
     f"{MS_TRAILER}", "policy-related", "blocklist", "microsoft"),
    ("5.7.606", f"smtp;550 5.7.606 Access denied, banned sending IP [{IP}]. To request removal "
     "from this list please visit https://sender.office.com/ and follow the directions. For more "
     f"information please go to http://go.microsoft.com/fwlink/?LinkID=526655 AS(1430) "
     f"{MS_TRAILER}", "", "blocklist", "microsoft"),
    ("5.0.0", f"smtp;554 Blocked - see https://ipcheck.proofpoint.com/?ip={IP}", "",
     "blocklist", "proofpoint"),
    ("5.7.1", f"smtp;554 5.7.1 mx0b-00123456.pphosted.com: {IP} blocked by Proofpoint Dynamic "
     "Reputation", "", "blocklist", "proofpoint"),
    ("5.3.0", f"smtp;553 5.3.0 flpd575 - DNSBL:RBL 521< {IP} >_is_blocked.For assistance forward "
     "this email to abuse_rbl@abuse-att.net", "", "blocklist", "other"),
    ("5.0.0", f"smtp;554 resimta-po-12v.sys.comcast.net comcast {IP} found on one or more "
     "DNSBLs, see http://postmaster.comcast.net/smtp-error-codes.php#BL000001", "",
     "blocklist", "other"),
    # --- reputation
    ("4.0.0 (undefined status)", gmail(
        "421", "4.7.28", f"[{IP}      15] Our system has detected an unusual rate of",
        "unsolicited mail originating from your IP address. To protect our",
        "users from spam, mail sent from your IP address has been temporarily",
        "rate limited. Please visit",
        "https://support.google.com/mail/?p=UnsolicitedRateLimitError to",
        f"review our Bulk Email Senders Guidelines. {GMAIL_ID}"), "", "reputation", None),
    ("5.7.1", gmail(
        "550", "5.7.1", f"[{IP}      12] Our system has detected that this message is",
        "likely unsolicited mail. To reduce the amount of spam sent to Gmail,",
        "this message has been blocked. Please visit",
        f"https://support.google.com/mail/?p=UnsolicitedMessageError {GMAIL_ID}"),
     "spam-related", "reputation", None),
    ("4.0.0", f"smtp;421 4.7.0 [TSS04] Messages from {IP} temporarily deferred due to unexpected "
     "volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
     "", "reputation", None),
    ("5.7.1", f"smtp;553 5.7.1 [TS03] All messages from {IP} will be permanently deferred; "
     "Retrying will NOT succeed. See https://postmaster.yahooinc.com/error-codes", "",
     "reputation", None),
    ("4.0.0", f"smtp;451 4.7.650 The mail server [{IP}] has been temporarily rate limited due to "
     "IP reputation. For e-mail delivery information, see https://postmaster.live.com (S775) "
     f"[Name=Protocol Filter Agent][AGT=PFA][MxId=11BA85D1A0F3E0BE] {MS_TRAILER}", "",
     "reputation", None),
    ("5.7.1", f"smtp;550 5.7.1 Unfortunately, messages from [{IP}] weren't sent. Please contact "
     "your Internet service provider since part of their network is on our block list (S3140). "
     "You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors.",
     "", "reputation", None),
    # --- authentication
    ("5.7.26", gmail(
        "550", "5.7.26", "This mail has been blocked because the sender is unauthenticated.",
        "Gmail requires all senders to authenticate with either SPF or DKIM.",
        "Authentication results: DKIM = did not pass SPF [news.example.net] with ip:",
        f"[{IP}] = did not pass For instructions on setting up authentication, go to",
        f"https://support.google.com/mail/answer/81126#authentication {GMAIL_ID}"), "",
     "authentication", None),
    ("5.7.26", gmail(
        "550", "5.7.26", "Unauthenticated email from news.example.net is not accepted due to",
        "domain's DMARC policy. Please contact the administrator of news.example.net",
        f"domain if this was a legitimate mail. {GMAIL_ID}"), "policy-related",
     "authentication", None),
    ("5.7.27", gmail(
        "550", "5.7.27", "The sender's domain does not pass SPF authentication for the",
        f"sending IP. {GMAIL_ID}"), "", "authentication", None),
    ("5.7.515", "smtp;550 5.7.515 Access denied, sending domain [NEWS.EXAMPLE.NET] does not meet "
     "the required authentication level. The sender's domain in the 5322.From address doesn't "
     "meet the authentication requirements defined for the sender. To learn more, see "
     f"https://go.microsoft.com/fwlink/?linkid=2301314 {MS_TRAILER}", "", "authentication",
     None),
    ("5.7.9", "smtp;550 5.7.9 This mail has been blocked because the sender is unauthenticated. "
     "Yahoo requires all senders to authenticate with either SPF or DKIM.", "",
     "authentication", None),
    ("5.7.1", "smtp;550 5.7.1 Email rejected per DMARC policy for news.example.net", "",
     "authentication", None),
    # --- rate limits
    ("4.0.0", f"smtp;421 4.7.0 Try again later, closing connection. (EHLO) {GMAIL_ID}", "",
     "rate_limit", None),
    ("4.0.0", "connect rate limit reached", "", "rate_limit", None),
    ("4.0.0", "message rate limit reached (based on queue's max-msg-rate in configuration)", "",
     "rate_limit", None),
    ("4.0.0", f"smtp;451 4.7.500 Server busy. Please try again later from [{IP}]. (S77719) "
     f"{MS_TRAILER}", "", "rate_limit", None),
    ("4.2.1", gmail(
        "450", "4.2.1", "The user you are trying to contact is receiving mail at a rate that",
        "prevents additional messages from being delivered. Please resend your",
        f"message at a later time. {GMAIL_ID}"), "", "rate_limit", None),
    # greylisting: the recipient's address and an IPv6 source in the text
    ("4.0.0", "smtp;450 4.2.0 <jane.doe@example.org>: Recipient address rejected: Greylisted, "
     "see http://postgrey.schweikert.ch/help/example.org.html", "", "rate_limit", None),
    ("4.0.0", "smtp;451 4.7.1 Client host [2001:db8:4006:80a::25] greylisted, try again in 300 "
     "seconds", "", "rate_limit", None),
    # --- mailboxes
    ("5.1.1 (bad destination mailbox address)", gmail(
        "550", "5.1.1", "The email account that you tried to reach does not exist. Please try",
        "double-checking the recipient's email address for typos or",
        "unnecessary spaces. For more information, go to",
        f" https://support.google.com/mail/?p=NoSuchUser {GMAIL_ID}"), "bad-mailbox",
     "bad_mailbox", None),
    ("5.0.0", "smtp;554 delivery error: dd This user doesn't have a yahoo.com account "
     "(jane.doe@yahoo.com) [0] - mta1234.mail.ne1.yahoo.com", "", "bad_mailbox", None),
    ("5.1.10", "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient jane@contoso.example "
     f"not found by SMTP address lookup {MS_TRAILER}", "", "bad_mailbox", None),
    ("5.4.1", "smtp;550 5.4.1 Recipient address rejected: Access denied. For more information "
     f"see https://aka.ms/EXOSmtpErrors {MS_TRAILER}", "no-answer-from-host", "bad_mailbox",
     None),
    # an address that contains a list's name is the recipient's, not the receiver's words
    ("5.1.1", "smtp;550 5.1.1 <spamcop.fan@example.com>: Recipient address rejected: User "
     "unknown in virtual mailbox table", "bad-mailbox", "bad_mailbox", None),
    ("5.2.1", gmail(
        "550", "5.2.1", "The email account that you tried to reach is disabled. Learn more",
        f"at https://support.google.com/mail/?p=DisabledUser {GMAIL_ID}"), "inactive-mailbox",
     "inactive_mailbox", None),
    ("5.0.0", "smtp;554 delivery error: dd Sorry your message to jane.doe@yahoo.com cannot be "
     "delivered. This mailbox is disabled (554.30). - mta1234.mail.bf1.yahoo.com", "",
     "inactive_mailbox", None),
    ("4.2.2", gmail(
        "452", "4.2.2", "The recipient's inbox is out of storage space. Please direct the",
        f"recipient to https://support.google.com/mail/?p=OverQuotaTemp {GMAIL_ID}"), "",
     "mailbox_full", None),
    ("5.2.2 (mailbox full)", "smtp;552 5.2.2 Mailbox full, quota exceeded", "quota-issues",
     "mailbox_full", None),
    # --- content, policy, connection, TLS, expiry, other
    ("5.7.0", gmail(
        "552", "5.7.0", "This message was blocked because its content presents a potential",
        "security issue. Please visit",
        f"https://support.google.com/mail/?p=BlockedMessage to review our message content and "
        f"attachment content guidelines. {GMAIL_ID}"), "content-related", "content", None),
    ("5.7.1", gmail(
        "550", "5.7.1", f"[{IP} 11] Our system has detected that this message is",
        "not RFC 2822 compliant. To reduce the amount of spam sent to Gmail,",
        "this message has been blocked. Please review",
        "RFC 2822 specifications for more information. nr8si8771738lab.216"), "",
     "content", None),
    ("5.7.1", "smtp;554 5.7.1 Message blocked as spam, see https://postmaster.example.com/",
     "spam-related", "content", None),
    ("5.3.4", "smtp;552 5.3.4 Message size exceeds fixed maximum message size", "", "content",
     None),
    ("5.7.1", "smtp;550 5.7.1 Message rejected due to local policy", "policy-related", "policy",
     None),
    ("5.7.1", "smtp;554 5.7.1 <jane@example.org>: Relay access denied", "relaying-issues",
     "policy", None),
    ("5.1.8", "smtp;553 5.1.8 <bounces@news.example.net>: Sender address rejected: Domain not "
     "found", "invalid-sender", "policy", None),
    ("4.0.0", "ETIMEDOUT connecting to mx.example.org (192.0.2.70)", "", "connection", None),
    ("4.0.0", "ECONNREFUSED connecting to example.org (192.0.2.70)", "", "connection", None),
    ("4.4.2 (bad connection)", "smtp;421 4.4.2 mx.example.org Error: timeout exceeded",
     "bad-connection", "connection", None),
    ("4.0.0", "smtp;454 4.7.0 TLS not available due to local problem", "", "tls", None),
    ("5.7.0", "smtp;530 5.7.0 Must issue a STARTTLS command first", "", "tls", None),
    # expiry: the last attempt's reply (here a reputation deferral) does not hide it
    ("4.4.7 (delivery time expired)", gmail(
        "421", "4.7.28", f"[{IP}      15] Our system has detected an unusual rate of",
        f"unsolicited mail originating from your IP address. {GMAIL_ID}"), "message-expired",
     "expired", None),
    ("4.4.7 (delivery time expired)", "smtp;421 4.4.2 connection timed out", "message-expired",
     "expired", None),
    ("5.5.1", "smtp;500 5.5.1 Command unrecognized", "protocol-errors", "other", None),
    ("5.0.0", "smtp;554 Transaction failed", "", "other", None),
    # --- bounceCat when the reply says nothing the rules know
    ("", "smtp;550 Go away", "bad-mailbox", "bad_mailbox", None),
    ("", "smtp;550 Go away", "quota-issues", "mailbox_full", None),
    ("", "smtp;550 Go away", "", "other", None),
]


@pytest.mark.parametrize(("status", "diag", "cat", "reason", "blocklist"), CASES,
                         ids=[f"{c[3]}-{c[4] or ''}-{i}" for i, c in enumerate(CASES)])
def test_whole_reply_lines_classify(status: str, diag: str, cat: str, reason: str,
                                    blocklist: str | None) -> None:
    assert classify(status, diag, cat) == Reason(reason, blocklist)


def test_the_examples_cover_every_class_and_every_blocklist() -> None:
    assert {c[3] for c in CASES} == set(REASONS)
    assert {c[4] for c in CASES if c[4]} == set(BLOCKLISTS)


def test_classify_is_the_same_for_the_same_reply_after_the_cache_fills(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reasons, "_CACHE_MAX", 4)
    rules = load_reasons()
    for i in range(20):
        assert rules.classify("5.1.1", f"smtp;550 5.1.1 <u{i}@example.com> unknown") == \
            Reason("bad_mailbox")
    assert len(rules._cache) <= 4


# --- the rules file ------------------------------------------------------------------------

def _rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reasons.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_an_edited_rules_file_is_tried_in_order(tmp_path: Path) -> None:
    path = _rules(tmp_path, """
# our own list first
[[rule]]
reason = "blocklist"
blocklist = "other"
diag = 'bl\\.example\\.net'

[[rule]]
reason = "bad_mailbox"
status = '5\\.1\\.1'
""")
    rules = load_reasons(path)
    assert rules.classify("5.1.1", "smtp;550 5.1.1 listed at bl.example.net") == \
        Reason("blocklist", "other")
    assert rules.classify("5.1.1", "smtp;550 5.1.1 unknown") == Reason("bad_mailbox")
    assert rules.classify("5.7.1", "smtp;550 5.7.1 no") == Reason("other")
    # a status condition matches the reply's code when dsnStatus has a generic one
    assert rules.classify("4.0.0 (undefined status)", "smtp;550-5.1.1 a 550 5.1.1 b") == \
        Reason("bad_mailbox")
    assert rules.classify("5.1.10", "") == Reason("other")  # the whole code, not a prefix


@pytest.mark.parametrize(("text", "message"), [
    ("[[rule]]\nreason = 'blocklist'\ndiag = 'x'\n",
     r"line 1 \(rule 1\): blocklist None is not one of spamhaus, "),
    ("[[rule]]\nreason = 'nope'\ndiag = 'x'\n", r"line 1 \(rule 1\): reason 'nope' is not one of"),
    ("[[rule]]\nreason = 'other'\ndiag = 'x'\n\n[[rule]]\nreason = 'policy'\nblocklist = 'x'\n"
     "diag = 'x'\n", r"line 5 \(rule 2\): blocklist is only for reason = \"blocklist\""),
    ("[[rule]]\nreason = 'policy'\ndiag = '(unclosed'\n",
     r"line 1 \(rule 1\): diag is not a valid regular expression"),
    ("[[rule]]\nreason = 'policy'\nstatus = '(5)\\.7\\.1'\n",
     r"status must not capture: write \(\?:\.\.\.\)"),
    ("[[rule]]\nreason = 'policy'\ndiag = 'a(?i)b'\n", r"diag is not a valid regular expression"),
    ("[[rule]]\nreason = 'policy'\n", r"a rule needs at least one of status, diag, bounce_cat"),
    ("[[rule]]\nreason = 'policy'\ndiag = 'x'\nwhen = 'always'\n", r"unknown key 'when'"),
    ("[[rule]]\nreason = 'policy'\nbounce_cat = 'policy-related'\n",
     r"bounce_cat must be a list"),
    ("[[rule]]\nreason = 'policy'\ndiag = 3\n", r"diag must be a string"),
    ("rules = []\n", r"unknown top-level key 'rules'"),
    ("", r"no \[\[rule\]\] tables"),
    ("[[rule]]\nreason = policy\n", r"not valid TOML: .*\(at line 2, column 10\)"),
])
def test_a_broken_rules_file_names_file_line_and_key(tmp_path: Path, text: str,
                                                     message: str) -> None:
    path = _rules(tmp_path, text)
    with pytest.raises(OutcomesFileError) as err:
        load_reasons(path)
    assert str(err.value).startswith(str(path)), err.value
    assert re.search(message, str(err.value)), err.value


def test_a_missing_rules_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OutcomesFileError, match=r"reasons\.toml: cannot read: No such file"):
        load_reasons(tmp_path / "reasons.toml")


def test_contrib_copy_is_the_shipped_file() -> None:
    shipped = Path(reasons.__file__).with_name("reasons.toml")
    assert (REPO / "contrib" / "outcomes" / "reasons.toml").read_bytes() == shipped.read_bytes()


@pytest.mark.parametrize(("blocklist", "ip", "url"), [
    ("spamhaus", "203.0.113.66", "https://check.spamhaus.org/results/?query=203.0.113.66"),
    ("spamcop", "2001:db8::1", "https://www.spamcop.net/w3m?action=checkblock&ip=2001%3Adb8%3A%3A1"),
    ("uceprotect", IP, f"https://www.uceprotect.net/en/rblcheck.php?ipr={IP}"),
    ("proofpoint", IP, f"https://ipcheck.proofpoint.com/?ip={IP}"),
    ("barracuda", IP, "https://www.barracudacentral.org/lookups/lookup-reputation"),
    ("nonsense", IP, f"https://mxtoolbox.com/SuperTool.aspx?action=blacklist%3a{IP}"
                     "&run=toolpage"),
])
def test_lookup_urls(blocklist: str, ip: str, url: str) -> None:
    assert lookup_url(blocklist, ip) == url


def test_every_blocklist_has_a_lookup_page() -> None:
    assert set(reasons.BLOCKLIST_LOOKUP) == set(BLOCKLISTS)


# --- normalize_reason ----------------------------------------------------------------------

@pytest.mark.parametrize(("status", "diag", "expected"), [
    ("", "smtp;550 5.1.1 <jane.doe+x@example.com>: Recipient address rejected: User unknown",
     "smtp;550 5.1.1 <ADDRESS>: Recipient address rejected: User unknown"),
    ("", gmail("550", "5.1.1", "The email account that you tried to reach does not exist.",
               f"Please try again. {GMAIL_ID}"),
     "smtp;550 5.1.1 The email account that you tried to reach does not exist. Please try "
     "again. ID - gsmtp"),
    ("", f"smtp;421 4.7.0 [TSS04] Messages from {IP} temporarily deferred",
     "smtp;421 4.7.0 [TSS04] Messages from IP temporarily deferred"),
    ("", "smtp;451 4.7.1 Client host [2001:db8:4006:80a::25] greylisted, try again in 300 "
     "seconds", "smtp;451 4.7.1 Client host [IP] greylisted, try again in N seconds"),
    ("", f"smtp;550 5.7.1 on our block list (S3150). {MS_TRAILER}",
     "smtp;550 5.7.1 on our block list (S3150). [HOST]"),
    ("", "smtp;554 delivery error: dd This user doesn't have a yahoo.com account "
     "(jane.doe@yahoo.com) [0] - mta1234.mail.ne1.yahoo.com",
     "smtp;554 delivery error: dd This user doesn't have a yahoo.com account (ADDRESS) [0] - "
     "HOST"),
    ("", "smtp;250 2.0.0 Ok: queued as 4Xz1Lq2Jw9z9sVj at 2025-01-14 09:12:03",
     "smtp;250 2.0.0 Ok: queued as ID at TIME"),
    ("", "smtp;550 5.7.1 see RFC 5321 and mailto:postmaster%40example.com",
     "smtp;550 5.7.1 see RFC5321 and mailto:ADDRESS"),
    ("5.1.1 (bad destination mailbox address)", "",
     "5.1.1 (bad destination mailbox address)"),
    ("", "  ", ""),
    ("", "(other)", "other"),
    ("", "smtp;421 oops\x00\x1b[31m red\x07", "smtp;421 oops [31m red"),
])
def test_normalize_reason_examples(status: str, diag: str, expected: str) -> None:
    assert normalize_reason(status, diag) == expected


def test_the_same_reply_to_different_recipients_is_one_reason() -> None:
    texts = {
        normalize_reason("", f"smtp;550 5.1.1 <user{i}@example.com>: Recipient address "
                             f"rejected (queue id 4Xz1Lq2J{i:06d}w) from [192.0.2.{i % 250}]")
        for i in range(500)
    }
    assert texts == {"smtp;550 5.1.1 <ADDRESS>: Recipient address rejected (queue id ID) "
                     "from [IP]"}


def test_a_long_reply_is_cut_at_a_word() -> None:
    text = normalize_reason("", "smtp;550 5.7.1 " + "word " * 100)
    assert len(text) <= 200 and text.endswith("word")


_FRAGMENTS = st.sampled_from([
    "jane@example.com", "<jane.doe+tag@sub.example.co.uk>", "@", "a@", "@b", "%40", "x%40y.z",
    '"john smith"@example.org', "192.0.2.1", "[198.51.100.7   15]", "2001:db8::25",
    "[IPv6:2001:db8::1]", "fe80::1%eth0", "550-5.1.1", "550 5.1.1", "421-4.7.28", "smtp;",
    "S3150", "[TSS04]", "4Xz1Lq2Jw9z9sVj", "d75a77b69052e-467b2dbf6d5si12345678a1.345",
    "mta1234.mail.ne1.yahoo.com", "2025-01-14T08:12:03.123Z", "08:12:03", "300", "12345",
    "RFC 5321", "(other)", "[", "]", "(", ")", "<", ">", ";", ":", "-", ".", ",", " ", "\n",
    "\t", "\x00", "N", "IP", "ID", "HOST", "ADDRESS", "TIME", "a", "Z", "0", "9",
])
_TEXTS = st.one_of(st.text(max_size=300),
                   st.lists(_FRAGMENTS, max_size=40).map("".join),
                   st.lists(st.one_of(_FRAGMENTS, st.text(max_size=5)), max_size=30)
                   .map(" ".join))


@settings(max_examples=1500, deadline=None)
@given(status=_TEXTS, diag=_TEXTS)
def test_normalized_reasons_hold_no_address_and_are_stable(status: str, diag: str) -> None:
    out = normalize_reason(status, diag)
    assert "@" not in out and "%40" not in out.lower()
    assert out != "(other)"
    assert len(out) <= 205
    assert normalize_reason("", out) == out
    assert normalize_reason(out, "") == out


# --- the literal prefilter only skips work, never changes a result ---------------------------

@pytest.mark.parametrize(("pattern", "literals"), [
    (r"spamhaus|\bcbl\.abuseat\.org", ("cbl.abuseat.org", "spamhaus")),
    (r"\[TSS?\d\d\]", ("[ts",)),
    (r"timed? ?out|timeout", ("time",)),  # the parser factors out the common prefix
    (r"(?:a|bc)x", None),  # "a" is shorter than a useful literal
    (r"\d+", None),
    (r"(?:pphosted|ppe-hosted).*\bblock", ("e-hosted", "hosted")),  # the longer ones
    (r"S3150|(?:banned|blocked) ip", ("anned", "locked", "s3150")),  # sound, not maximal
    (r"Stra\u00dfe", None),  # not ASCII: the rule always runs
])
def test_required_literals(pattern: str, literals: tuple[str, ...] | None) -> None:
    assert reasons.required_literals(pattern) == literals


_FILTERED = load_reasons()
_UNFILTERED = load_reasons()
_UNFILTERED._compiled = tuple(c._replace(literals=None) for c in _UNFILTERED._compiled)
_WORDS = sorted({lit for rule in _FILTERED._compiled for lit in rule.literals or ()})
_REPLIES = st.lists(st.one_of(st.sampled_from(_WORDS), st.sampled_from([c[1] for c in CASES]),
                              _FRAGMENTS, st.text(max_size=8)), max_size=12).map(" ".join)


@settings(max_examples=800, deadline=None)
@given(status=st.sampled_from([c[0] for c in CASES] + ["", "4.0.0", "5.7.26"]),
       diag=_REPLIES, cat=st.sampled_from(["", "bad-mailbox", "spam-related", "other"]))
def test_the_prefilter_never_changes_a_class(status: str, diag: str, cat: str) -> None:
    assert _FILTERED._classify(status, diag, cat) == _UNFILTERED._classify(status, diag, cat)
