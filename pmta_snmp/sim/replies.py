"""What the simulated receivers answer, per provider: bounce and deferral replies, the replies
a listed source IP gets, and feedback-loop (complaint) reports.

The texts follow the shapes of real replies (deliverability-notes.md: Gmail's multi-line
replies with their trailing id, Yahoo's TSS codes, Microsoft's S-codes and host trailers);
addresses, IPs, ids and host names are made up (RFC 2606 names, RFC 5737 addresses).
Templates use {rcpt} {domain} {ip} {mx} {sender} {gid} (a Gmail reply id) {ms} (a Microsoft
host trailer) and {n} (a server number).
"""

from __future__ import annotations

import random
from typing import NamedTuple

__all__ = [
    "BOUNCES",
    "DEFERRALS",
    "EVENT_REPLIES",
    "FEEDBACK",
    "LISTED",
    "PROVIDER",
    "Bounce",
    "Feedback",
    "Listed",
    "fill",
]


class Bounce(NamedTuple):
    """A `b` record's bounceCat, dsnStatus and dsnDiag template, and its relative weight."""

    cat: str
    status: str
    diag: str
    weight: float


class Listed(NamedTuple):
    """How a provider answers a listed source IP: record type (b or t) and the reply."""

    kind: str
    cat: str
    status: str
    diag: str


class Feedback(NamedTuple):
    """A provider's feedback loop: complaints per delivered message, and the report's fields."""

    rate: float
    format: str
    user_agent: str
    reporting_mta: str


PROVIDER: dict[str, str] = {
    "gmail": "gmail",
    "microsoft": "microsoft",
    "microsoft365": "microsoft",
    "yahoo": "yahoo",
    "apple": "apple",
    "gmx": "gmx",
    "other": "other",
}
"""Reply family -> provider id (pmta_snmp.outcomes provider map names)."""


def _gmail(code: str, enh: str, *lines: str) -> str:
    """A multi-line Gmail reply as PowerMTA logs it: "550-5.1.1 a 550-5.1.1 b 550 5.1.1 c"."""
    return " ".join([f"{code}-{enh} {line}" for line in lines[:-1]]
                    + [f"{code} {enh} {lines[-1]}"])


_GMAIL_NO_USER = _gmail(
    "550", "5.1.1", "The email account that you tried to reach does not exist. Please try",
    "double-checking the recipient's email address for typos or",
    "unnecessary spaces. For more information, go to",
    " https://support.google.com/mail/?p=NoSuchUser {gid} - gsmtp")
_GMAIL_UNSOLICITED_RATE = _gmail(
    "421", "4.7.28", "[{ip}      15] Our system has detected an unusual rate of",
    "unsolicited mail originating from your IP address. To protect our",
    "users from spam, mail sent from your IP address has been temporarily",
    "rate limited. Please visit",
    " https://support.google.com/mail/?p=UnsolicitedRateLimitError to",
    "review our Bulk Email Senders Guidelines. {gid} - gsmtp")
_GMAIL_UNSOLICITED = _gmail(
    "550", "5.7.1", "[{ip}      12] Our system has detected that this message is",
    "likely unsolicited mail. To reduce the amount of spam sent to Gmail,",
    "this message has been blocked. Please visit",
    " https://support.google.com/mail/?p=UnsolicitedMessageError",
    "for more information. {gid} - gsmtp")
_MS_BLOCK_LIST = (
    "550 5.7.1 Unfortunately, messages from [{ip}] weren't sent. Please contact your Internet "
    "service provider since part of their network is on our block list ({code}). You can also "
    "refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors. {ms}")
_SPAMHAUS = ("554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org; "
             "https://www.spamhaus.org/query/ip/{ip}")
_TSS04 = ("421 4.7.0 [TSS04] Messages from {ip} temporarily deferred due to unexpected volume "
          "or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes")

BOUNCES: dict[str, tuple[Bounce, ...]] = {
    "gmail": (
        Bounce("bad-mailbox", "5.1.1 (bad destination mailbox address)", _GMAIL_NO_USER, 0.55),
        Bounce("inactive-mailbox", "5.2.1 (mailbox disabled, not accepting messages)", _gmail(
            "550", "5.2.1", "The email account that you tried to reach is disabled. Learn more",
            "at https://support.google.com/mail/?p=DisabledUser {gid} - gsmtp"), 0.12),
        Bounce("quota-issues", "5.2.2 (mailbox full)", _gmail(
            "552", "5.2.2", "The recipient's inbox is out of storage space and inactive. Please",
            "direct the recipient to",
            " https://support.google.com/mail/?p=OverQuotaPerm {gid} - gsmtp"), 0.08),
        Bounce("spam-related", "5.7.1 (delivery not authorized, message refused)",
               _GMAIL_UNSOLICITED, 0.10),
        Bounce("policy-related", "5.7.26 (unauthenticated)", _gmail(
            "550", "5.7.26", "Unauthenticated email from {sender} is not accepted due to",
            "domain's DMARC policy. Please contact the administrator of {sender}",
            "domain if this was a legitimate mail. To learn about the DMARC",
            "initiative, go to",
            " https://support.google.com/mail/?p=DmarcRejection {gid} - gsmtp"), 0.06),
        Bounce("content-related", "5.7.0 (other or undefined security status)", _gmail(
            "552", "5.7.0", "This message was blocked because its content presents a potential",
            "security issue. Please visit",
            " https://support.google.com/mail/?p=BlockedMessage to review our",
            "message content and attachment content guidelines. {gid} - gsmtp"), 0.05),
        Bounce("message-expired", "4.4.7 (delivery time expired)", _GMAIL_UNSOLICITED_RATE,
               0.04),
    ),
    "yahoo": (
        Bounce("bad-mailbox", "5.0.0 (undefined status)",
               "554 delivery error: dd This user doesn't have a {domain} account ({rcpt}) [0] - "
               "mta{n}.mail.ne1.yahoo.com", 0.60),
        Bounce("inactive-mailbox", "5.0.0 (undefined status)",
               "554 delivery error: dd Sorry your message to {rcpt} cannot be delivered. This "
               "mailbox is disabled (554.30). - mta{n}.mail.bf1.yahoo.com", 0.20),
        Bounce("spam-related", "5.7.1 (delivery not authorized, message refused)",
               "553 5.7.1 [TS03] All messages from {ip} will be permanently deferred; Retrying "
               "will NOT succeed. See https://postmaster.yahooinc.com/error-codes", 0.10),
        Bounce("policy-related", "5.7.9 (message not accepted for policy reasons)",
               "550 5.7.9 This mail has been blocked because the sender is unauthenticated. "
               "Yahoo requires all senders to authenticate with either SPF or DKIM.", 0.06),
        Bounce("message-expired", "4.4.7 (delivery time expired)", _TSS04, 0.04),
    ),
    "microsoft": (
        Bounce("bad-mailbox", "5.5.0 (other or undefined protocol status)",
               "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302). {ms}",
               0.60),
        Bounce("quota-issues", "5.2.2 (mailbox full)",
               "552 5.2.2 Requested mail action aborted: exceeded storage allocation {ms}", 0.08),
        Bounce("spam-related", "5.7.1 (delivery not authorized, message refused)",
               _MS_BLOCK_LIST.replace("{code}", "S3140"), 0.12),
        Bounce("policy-related", "5.7.515 (authentication required)",
               "550 5.7.515 Access denied, sending domain [{sender_upper}] does not meet the "
               "required authentication level. The sender's domain in the 5322.From address "
               "doesn't meet the authentication requirements defined for the sender. To learn "
               "more, see https://go.microsoft.com/fwlink/?linkid=2301314 {ms}", 0.10),
        Bounce("content-related", "5.6.211 (invalid MIME content)",
               "554 5.6.211 Invalid MIME Content: Single text value size (32768) exceeded "
               "allowed maximum (32768) for the 'X-Campaign' header. {ms}", 0.05),
        Bounce("message-expired", "4.4.7 (delivery time expired)",
               "451 4.7.500 Server busy. Please try again later from [{ip}]. (S77719) {ms}",
               0.05),
    ),
    "microsoft365": (
        Bounce("bad-mailbox", "5.1.10 (recipient not found)",
               "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient {rcpt} not found by SMTP "
               "address lookup {ms}", 0.45),
        Bounce("bad-mailbox", "5.4.1 (recipient address rejected)",
               "550 5.4.1 Recipient address rejected: Access denied. For more information see "
               "https://aka.ms/EXOSmtpErrors {ms}", 0.25),
        Bounce("quota-issues", "5.2.2 (mailbox full)",
               "552 5.2.2 Requested mail action aborted: exceeded storage allocation {ms}", 0.10),
        Bounce("policy-related", "5.7.509 (DMARC rejection)",
               "550 5.7.509 Access denied, sending domain {sender} does not pass DMARC "
               "verification and has a DMARC policy of reject. {ms}", 0.10),
        Bounce("policy-related", "5.7.1 (delivery not authorized, message refused)",
               "550 5.7.1 Delivery not authorized, message refused: the sender is not allowed "
               "to send to this group {ms}", 0.10),
    ),
    "apple": (
        Bounce("bad-mailbox", "5.1.1 (bad destination mailbox address)",
               "550 5.1.1 <{rcpt}>: user does not exist", 0.60),
        Bounce("quota-issues", "5.2.2 (mailbox full)", "552 5.2.2 <{rcpt}>: user is over quota",
               0.15),
        Bounce("policy-related", "5.7.1 (delivery not authorized, message refused)",
               "554 5.7.1 [CS01] Message rejected due to local policy. Please visit "
               "https://support.apple.com/en-us/HT204137", 0.15),
        Bounce("spam-related", "5.7.0 (other or undefined security status)",
               "550 5.7.0 Blocked - see https://ipcheck.proofpoint.com/?ip={ip}", 0.10),
    ),
    "gmx": (
        Bounce("bad-mailbox", "5.0.0 (undefined status)",
               "550 Requested action not taken: mailbox unavailable", 0.60),
        Bounce("quota-issues", "5.2.2 (mailbox full)",
               "552 Requested mail action aborted: exceeded storage allocation", 0.15),
        Bounce("policy-related", "5.0.0 (undefined status)",
               "554-{mx} (mxgmx{n}) Nemesis ESMTP Service not available 554-No SMTP service "
               "554-Bad DNS PTR resource record. 554 For explanation visit "
               "https://postmaster.gmx.net/en/case?c=r0601&i=ip&v={ip}", 0.15),
        Bounce("spam-related", "5.0.0 (undefined status)",
               "554-{mx} (mxgmx{n}) Nemesis ESMTP Service not available 554-No SMTP service "
               "554-IP address is black listed. 554 For explanation visit "
               "https://postmaster.gmx.net/en/case?c=r0102&i=ip&v={ip}", 0.10),
    ),
    "other": (
        Bounce("bad-mailbox", "5.1.1 (bad destination mailbox address)",
               "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox "
               "table", 0.45),
        Bounce("inactive-mailbox", "5.2.1 (mailbox disabled, not accepting messages)",
               "550 5.2.1 <{rcpt}>: Mailbox disabled, not accepting messages", 0.10),
        Bounce("bad-domain", "5.1.2 (bad destination system address)",
               "550 5.1.2 Host unknown, domain not found", 0.05),
        Bounce("quota-issues", "5.2.2 (mailbox full)", "552 5.2.2 Mailbox full, quota exceeded",
               0.10),
        Bounce("policy-related", "5.7.1 (delivery not authorized, message refused)",
               "550 5.7.1 Message rejected due to local policy", 0.06),
        Bounce("relaying-issues", "5.7.1 (delivery not authorized, message refused)",
               "554 5.7.1 <{rcpt}>: Relay access denied", 0.02),
        Bounce("spam-related", "5.7.1 (delivery not authorized, message refused)",
               "554 5.7.1 Message blocked as spam, see https://postmaster.{domain}/", 0.06),
        Bounce("spam-related", "5.7.1 (delivery not authorized, message refused)",
               "554 Service unavailable; Client host [{ip}] blocked using "
               "b.barracudacentral.org; http://www.barracudanetworks.com/reputation/?pr=1&ip={ip}",
               0.02),
        Bounce("spam-related", "5.7.1 (delivery not authorized, message refused)",
               "550 5.7.1 Service unavailable; Client host [{ip}] blocked using bl.spamcop.net; "
               "Blocked - see https://www.spamcop.net/bl.shtml?{ip}", 0.02),
        Bounce("spam-related", "5.7.1 (delivery not authorized, message refused)",
               "550 5.7.1 Service unavailable; Client host [{ip}] blocked using "
               "dnsbl-1.uceprotect.net; IP {ip} is UCEPROTECT-Level 1 listed. See "
               "http://www.uceprotect.net/rblcheck.php?ipr={ip}", 0.01),
        Bounce("other", "5.7.0 (other or undefined security status)",
               "530 5.7.0 Must issue a STARTTLS command first", 0.02),
        Bounce("protocol-errors", "5.5.1 (invalid command)", "500 5.5.1 Command unrecognized",
               0.02),
        Bounce("other", "5.0.0 (undefined status)", "554 5.0.0 Service unavailable", 0.03),
        Bounce("message-expired", "4.4.7 (delivery time expired)",
               "421 4.4.2 {mx} Error: timeout exceeded", 0.03),
    ),
}
"""`b` records per reply family (dsnStatus as PowerMTA writes it, with its description)."""

DEFERRALS: dict[str, tuple[tuple[str, float], ...]] = {
    "gmail": (
        ("421 4.7.0 Try again later, closing connection. (EHLO) {gid} - gsmtp", 0.45),
        (_GMAIL_UNSOLICITED_RATE, 0.25),
        (_gmail("450", "4.2.1", "The user you are trying to contact is receiving mail at a rate",
                "that prevents additional messages from being delivered. Please resend",
                "your message at a later time. If the user is able to receive mail at",
                "that time, your message will be delivered. For more information,",
                "go to https://support.google.com/mail/?p=ReceivingRate {gid} - gsmtp"), 0.15),
        (_gmail("452", "4.2.2", "The recipient's inbox is out of storage space. Please direct the",
                "recipient to",
                " https://support.google.com/mail/?p=OverQuotaTemp {gid} - gsmtp"), 0.15),
    ),
    "yahoo": (
        (_TSS04, 0.50),
        ("421 4.7.0 [GL01] Message from ({ip}) temporarily deferred - 4.16.50. Please refer to "
         "https://postmaster.yahooinc.com/error-codes", 0.30),
        ("421 Max message per connection reached, closing transmission channel", 0.20),
    ),
    "microsoft": (
        ("451 4.7.650 The mail server [{ip}] has been temporarily rate limited due to IP "
         "reputation. For e-mail delivery information, see https://postmaster.live.com (S775) "
         "{ms}", 0.40),
        ("451 4.7.500 Server busy. Please try again later from [{ip}]. (S77719) {ms}", 0.45),
        ("452 4.5.3 Too many recipients {ms}", 0.15),
    ),
    "microsoft365": (
        ("451 4.7.500 Server busy. Please try again later from [{ip}]. (S77719) {ms}", 0.70),
        ("421 4.3.2 Service not available, closing transmission channel {ms}", 0.30),
    ),
    "apple": (
        ("421 4.7.0 Too many connections from {ip}, try again later", 0.70),
        ("450 4.2.2 <{rcpt}>: user is over quota", 0.30),
    ),
    "gmx": (
        ("421-{mx} (mxgmx{n}) Nemesis ESMTP Service not available 421-Service unavailable "
         "421 Too many connections, try again later", 1.0),
    ),
    "other": (
        ("451 4.7.1 <{rcpt}>: Recipient address rejected: Greylisted, see "
         "http://postgrey.schweikert.ch/help/{domain}.html", 0.35),
        ("451 4.3.2 Please try again later", 0.25),
        ("421 4.4.2 {mx} Error: timeout exceeded", 0.25),
        ("454 4.7.0 TLS not available due to local problem", 0.15),
    ),
}
"""`t` record replies per reply family, with relative weights."""

EVENT_REPLIES: dict[str, tuple[str, str, str]] = {
    "gmail": ("421 4.7.0 Try again later, closing connection.",
              "421 4.7.28 Our system has detected an unusual rate of unsolicited mail "
              "originating from your IP address.",
              "450 4.2.1 The user you are trying to contact is receiving mail at a rate that "
              "prevents additional messages from being delivered."),
    "yahoo": (_TSS04.split(" - ", maxsplit=1)[0],
              "421 4.7.0 [GL01] Message from ({ip}) temporarily deferred - 4.16.50",
              "421 Max message per connection reached, closing transmission channel"),
    "microsoft": ("451 4.7.650 The mail server [{ip}] has been temporarily rate limited due to "
                  "IP reputation.",
                  "451 4.7.500 Server busy. Please try again later from [{ip}]. (S77719)",
                  "452 4.5.3 Too many recipients"),
    "microsoft365": ("451 4.7.500 Server busy. Please try again later from [{ip}]. (S77719)",
                     "451 4.7.500 Server busy. Please try again later from [{ip}]. (S77720)",
                     "421 4.3.2 Service not available, closing transmission channel"),
    "apple": ("421 4.7.0 Too many connections from {ip}, try again later",
              "421 4.7.0 Too many connections from {ip}, try again later",
              "421 4.3.2 Service not available, closing transmission channel"),
    "gmx": ("421 Too many connections, try again later",
            "421 Service unavailable, try again later",
            "451 4.3.2 Please try again later"),
    "other": ("421 4.7.0 Try again later, closing connection.",
              "451 4.3.2 Please try again later",
              "454 4.7.0 TLS not available due to local problem"),
}
"""Queue-event replies (the API's last error): three per family, so that every family draws
the same random numbers as before and the other scenarios keep their exact course."""

LISTED: dict[str, Listed] = {
    "gmail": Listed("t", "", "4.0.0 (undefined status)", _GMAIL_UNSOLICITED_RATE),
    "yahoo": Listed("t", "", "4.0.0 (undefined status)", _TSS04),
    "microsoft": Listed("b", "spam-related", "5.7.1 (delivery not authorized, message refused)",
                        _MS_BLOCK_LIST.replace("{code}", "S3150")),
    "microsoft365": Listed("b", "spam-related",
                           "5.7.1 (delivery not authorized, message refused)",
                           "550 5.7.1 Service unavailable, Client host [{ip}] blocked using "
                           "Spamhaus. To request removal from this list see "
                           "https://www.spamhaus.org/query/ip/{ip} (AS3130). {ms}"),
    "apple": Listed("b", "spam-related", "5.7.0 (other or undefined security status)",
                    "550 5.7.0 Blocked - see https://ipcheck.proofpoint.com/?ip={ip}"),
    "gmx": Listed("b", "spam-related", "5.0.0 (undefined status)", _SPAMHAUS),
    "other": Listed("b", "spam-related", "5.7.1 (delivery not authorized, message refused)",
                    _SPAMHAUS),
}
"""blocklisted scenario: the listed IP's rejections by family (Spamhaus ZEN where receivers
use it, Outlook.com's own block list, Gmail's and Yahoo's reputation deferrals)."""

FEEDBACK: dict[str, Feedback] = {
    # [?] reportingMta and userAgent are made-up values in the documented fields.
    "yahoo": Feedback(0.002, "arf", "Yahoo!-Mail-Feedback/2.0", "arf.mail.yahoo.com"),
    "microsoft": Feedback(0.001, "jmrp", "", "jmrp.hotmail.com"),
}
"""Feedback loops by reply family: Yahoo/AOL send ARF reports, Outlook.com JMRP (not for
Microsoft 365 tenants); Gmail sends none per message (only aggregates in Postmaster Tools),
nor do the others simulated here."""


def fill(template: str, rng: random.Random, **fields: str) -> str:
    """A reply from its template: the given fields plus fresh ids for this record."""
    values = dict(fields)
    if "{gid}" in template:
        values["gid"] = (f"{rng.getrandbits(52):013x}-{rng.getrandbits(40):010x}"
                         f"si{rng.randint(1_000_000, 9_999_999)}b{rng.randint(1, 9)}."
                         f"{rng.randint(100, 999)}")
    if "{ms}" in template:
        values["ms"] = (f"[{rng.choice(('BN8', 'DM6', 'CH1', 'SN1'))}NAM"
                        f"{rng.randint(10, 12)}FT{rng.randint(10, 99):03d}.eop-nam"
                        f"{rng.randint(10, 12)}.prod.protection.outlook.com]")
    if "{n}" in template:  # one of a provider's few dozen servers
        values["n"] = f"{rng.randint(1, 40):03d}"
    if "{sender_upper}" in template:
        values["sender_upper"] = fields.get("sender", "").upper()
    return template.format_map(values)
