"""One record -> one outcome: provider, result, reason, delay, complaints; masked replies
classify and normalise like the raw ones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pmta_snmp.acct.bounce import categorize
from pmta_snmp.acct.columns import MASK_MAX, mask_addresses
from pmta_snmp.acct.records import AcctRecord, parse_records
from pmta_snmp.outcomes.classify import Classifier, delay_seconds, is_complaint, sending_domain
from pmta_snmp.outcomes.reasons import classify as classify_reason
from pmta_snmp.outcomes.reasons import normalize_reason
from tests.unit.test_acct import FIELDS_50, FIELDS_55, acct_bytes

FBL = ["repSourceIp", "feedbackType", "format", "userAgent", "reportingMta", "reportedDomain"]
T0 = "2025-01-14 09:12:03+0100"
Q0 = "2025-01-14 09:11:57+0100"


def one(fields: list[str], **values: str) -> AcctRecord:
    base = {"type": "d", "timeLogged": T0, "timeQueued": Q0, "orig": "bounces@News.Example.COM",
            "dlvSourceIp": "198.51.100.20", "vmta": "vmta-a"}
    base.update(values)
    records = parse_records(acct_bytes(fields, [base])).records
    assert len(records) == 1
    return records[0]


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier()


def test_delivery_to_a_workspace_domain_counts_for_gmail(clf: Classifier) -> None:
    out = clf.outcome(one(FIELDS_50, rcpt="jane@corp.example",
                          dsnMta="aspmx.l.google.com (192.0.2.27)"))
    assert (out.provider, out.result, out.reason) == ("gmail", "delivered", None)
    assert (out.sending_domain, out.source_ip, out.vmta) == ("news.example.com",
                                                             "198.51.100.20", "vmta-a")
    assert out.delay == 6.0


@pytest.mark.parametrize(("cat", "status", "diag", "result", "reason", "blocklist"), [
    ("bad-mailbox", "5.1.1 (bad destination mailbox address)",
     "smtp;550 5.1.1 <jane@example.org>: Recipient address rejected: User unknown",
     "hard_bounce", "bad_mailbox", None),
    ("quota-issues", "5.2.2 (mailbox full)", "smtp;552 5.2.2 Mailbox full, quota exceeded",
     "soft_bounce", "mailbox_full", None),
    ("spam-related", "5.7.1 (delivery not authorized, message refused)",
     "smtp;554 5.7.1 Service unavailable; Client host [198.51.100.20] blocked using "
     "zen.spamhaus.org", "block_bounce", "blocklist", "spamhaus"),
    ("message-expired", "4.4.7 (delivery time expired)",
     "smtp;421 4.7.28 unusual rate of unsolicited mail", "expired", "expired", None),
    # no bounceCat: the status says expired
    ("", "4.4.7 (delivery time expired)", "smtp;421 4.4.2 timeout", "expired", "expired", None),
    # no bounceCat, an address that reads like a rule's word: not a block
    ("", "5.0.0 (undefined status)", "smtp;550 no such user spam.blocked@example.org",
     "soft_bounce", "bad_mailbox", None),
])
def test_bounces(clf: Classifier, cat: str, status: str, diag: str, result: str, reason: str,
                 blocklist: str | None) -> None:
    out = clf.outcome(one(FIELDS_50, type="b", rcpt="jane@example.org", bounceCat=cat,
                          dsnStatus=status, dsnDiag=diag))
    assert (out.result, out.reason, out.blocklist) == (result, reason, blocklist)
    assert out.delay == 6.0  # a final record


def test_deferral_has_a_reason_and_no_delay(clf: Classifier) -> None:
    out = clf.outcome(one(FIELDS_50, type="t", rcpt="sam@yahoo.com", dsnStatus="4.0.0",
                          dsnDiag="smtp;421 4.7.0 [TSS04] Messages from 198.51.100.20 "
                                  "temporarily deferred due to user complaints"))
    assert (out.provider, out.result, out.reason, out.delay) == ("yahoo", "deferred",
                                                                 "reputation", None)


def test_tq_has_no_result(clf: Classifier) -> None:
    out = clf.outcome(one(FIELDS_50, type="tq", rcpt="", orig=""))
    assert out.result is None and out.reason is None


def test_delay_prefers_total_seconds_queued_and_never_goes_negative() -> None:
    t = datetime(2025, 1, 14, 9, 0, tzinfo=UTC)
    q = datetime(2025, 1, 14, 9, 1, tzinfo=UTC)
    assert delay_seconds("d", t, q) == 0.0  # queued after logged: a clock step
    assert delay_seconds("d", q, t, "17") == 17.0
    assert delay_seconds("d", q, t, "") == 60.0
    assert delay_seconds("t", q, t) is None
    assert delay_seconds("b", None, t) is None
    out = Classifier().outcome(one(FIELDS_55, rcpt="a@gmail.com", totalSecondsQueued="42"))
    assert out.delay == 42.0


@pytest.mark.parametrize(("values", "provider", "domain"), [
    # ARF from Yahoo: the recipient's domain
    ({"rcpt": "kim@yahoo.com", "reportingMta": "arf.mail.yahoo.com", "format": "arf"},
     "yahoo", "news.example.com"),
    # JMRP without a recipient: the reporting host's domain
    ({"rcpt": "", "reportingMta": "jmrp.hotmail.com", "format": "jmrp"}, "microsoft",
     "news.example.com"),
    # JMRP from an unknown host: Microsoft's program
    ({"rcpt": "", "reportingMta": "fbl.example.net", "format": "jmrp"}, "microsoft",
     "news.example.com"),
    # no envelope sender: the reported domain
    ({"rcpt": "", "orig": "", "reportingMta": "feedback.example.net", "format": "arf",
      "reportedDomain": "Promo.Example.ORG"}, "other", "promo.example.org"),
    # the ARF Reporting-MTA field as the report writes it (RFC 5965: "dns; host")
    ({"rcpt": "", "reportingMta": "dns; mail.yahoo.com", "format": "arf"}, "yahoo",
     "news.example.com"),
    ({"rcpt": "", "reportingMta": "DNS; FEEDBACK.AOL.COM", "format": "ARF"}, "yahoo",
     "news.example.com"),
    ({"rcpt": "", "reportingMta": "dns;fbl.comcast.net", "format": "arf"}, "comcast",
     "news.example.com"),
])
def test_complaints(clf: Classifier, values: dict[str, str], provider: str, domain: str) -> None:
    rec = one([*FIELDS_50, *FBL], type="f", timeQueued="", dlvSourceIp="",
              repSourceIp="198.51.100.21", feedbackType="abuse", **values)
    out = clf.outcome(rec)
    assert (out.complaint, out.provider, out.sending_domain, out.source_ip, out.result) == (
        True, provider, domain, "198.51.100.21", None)


def test_complaint_types() -> None:
    assert is_complaint("abuse") and is_complaint("") and is_complaint("fraud")
    assert not is_complaint("not-spam") and not is_complaint("Auth-Failure")
    assert sending_domain("", "x.example.") == "x.example"


# --- masking ---------------------------------------------------------------------------------

def test_mask_examples() -> None:
    assert mask_addresses("smtp;550 5.1.1 <jane@example.org>: unknown") == \
        "smtp;550 5.1.1 <@>: unknown"
    assert mask_addresses("550 user jane%40example.org unknown") == \
        "550 user jane%40example.org unknown"
    assert mask_addresses("no address") == "no address"
    long = "x" * MASK_MAX + " a@b"
    assert mask_addresses(long) == long


_ALPHABET = st.sampled_from([*"ab@%40.-_ <>()[]{},;:\"'`|\t\x01\x7fSpamBlock5.1.1 quota xn",
                             "é", "\u2028", "%40", "spam", "blocked", "550 ", "550-5.7.1 ",
                             "smtp;"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_ALPHABET, max_size=40).map("".join))
def test_masking_changes_no_class_and_no_normalised_reason(text: str) -> None:
    masked = mask_addresses(text)
    assert mask_addresses(masked) == masked
    assert normalize_reason("", masked) == normalize_reason("", text)
    assert classify_reason("5.0.0", masked) == classify_reason("5.0.0", text)
    assert categorize("", masked) == categorize("", text)
