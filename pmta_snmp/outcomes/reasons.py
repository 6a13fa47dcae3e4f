"""Why a record failed: reason classes from ordered rules, and reply texts fit for grouping.

`ReasonRules.classify(dsnStatus, dsnDiag, bounceCat)` returns one of a bounded set of reason
classes (`REASONS`) and, for `blocklist`, the list's name (`BLOCKLISTS`). The rules are a
shipped, editable TOML file (`reasons.toml`): the first rule whose conditions all hold wins.
They are compiled once; an ordered literal prefilter skips the rules whose words are not in
the reply, so most rules cost a substring test; results are cached per distinct reply.

`normalize_reason(dsnStatus, dsnDiag)` turns a reply into the text that reasons are grouped
and shown by: addresses, IPs, host names in brackets, ids, times and long numbers replaced by
placeholders, multi-line continuations folded. It never returns an address, so grouped
reasons count the same reply together and no recipient reaches a monitoring system. It needs
no rule file (the plugins import it alone).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from pmta_snmp.outcomes import OutcomesFileError

__all__ = [
    "BLOCKLISTS",
    "BLOCKLIST_LOOKUP",
    "REASONS",
    "Reason",
    "ReasonRules",
    "Rule",
    "classify",
    "default_rules",
    "load_reasons",
    "lookup_url",
    "normalize_reason",
]

REASONS: tuple[str, ...] = (
    "blocklist",
    "reputation",
    "authentication",
    "rate_limit",
    "bad_mailbox",
    "inactive_mailbox",
    "mailbox_full",
    "content",
    "policy",
    "connection",
    "tls",
    "expired",
    "other",
)
"""Every reason class, in the order they are reported."""
BLOCKLISTS: tuple[str, ...] = (
    "spamhaus",
    "barracuda",
    "spamcop",
    "sorbs",
    "uceprotect",
    "invaluement",
    "microsoft",
    "proofpoint",
    "other",
)
"""Every blocklist name a `blocklist` reason can carry."""
BLOCKLIST_LOOKUP: dict[str, str] = {
    "spamhaus": "https://check.spamhaus.org/results/?query={ip}",
    # Barracuda's and invaluement's lookups are forms: the page, without the address.
    "barracuda": "https://www.barracudacentral.org/lookups/lookup-reputation",
    "spamcop": "https://www.spamcop.net/w3m?action=checkblock&ip={ip}",
    # SORBS was shut down in 2024; replies may still name it where old configurations remain.
    "sorbs": "http://www.sorbs.net/lookup.shtml?{ip}",
    "uceprotect": "https://www.uceprotect.net/en/rblcheck.php?ipr={ip}",
    "invaluement": "https://www.invaluement.com/lookup/",
    # Outlook.com's block list (S3150): delisting through the sender support form; Microsoft
    # 365's "banned sending IP" (5.7.606-649) through https://sender.office.com/.
    "microsoft": "https://olcsupport.office.com/",
    "proofpoint": "https://ipcheck.proofpoint.com/?ip={ip}",
    "other": "https://mxtoolbox.com/SuperTool.aspx?action=blacklist%3a{ip}&run=toolpage",
}
"""Public lookup page per blocklist; `{ip}` is replaced by the (URL-quoted) source IP."""


def lookup_url(blocklist: str, ip: str) -> str:
    """Where an operator checks (or asks to delist) `ip` on `blocklist`."""
    template = BLOCKLIST_LOOKUP.get(blocklist, BLOCKLIST_LOOKUP["other"])
    return template.replace("{ip}", quote(ip, safe=""))


class Reason(NamedTuple):
    """A reason class and, for `blocklist`, the list's name."""

    reason: str
    blocklist: str | None = None


OTHER_REASON = Reason("other")

# ---------------------------------------------------------------------------------------------
# Reply text clean-up shared by the classifier and the normaliser
# ---------------------------------------------------------------------------------------------

_MAX_INPUT = 2_000
"""Characters of a reply looked at (bounds the work on hostile input)."""
_MAX_REASON = 200
"""Characters of a normalised reason (cut at a word boundary)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# RFC 3464 diagnostic types as PowerMTA writes them: "smtp;", or an "x-" type (lower case, so
# no placeholder like "x-IP;" can turn into one).
_DIAG_TYPE = re.compile(r"^\s*(smtp;|x-[a-z0-9-]{1,20};)\s*")
_LEAD = re.compile(r"(?P<code>[2-5]\d\d)(?:[- ](?P<enh>[2-5]\.\d{1,3}\.\d{1,3})(?![\d.]*\d))?"
                   r"(?P<sep>[- ]?)")
_STATUS = re.compile(r"(?<![\d.])[2-5]\.\d{1,3}\.\d{1,3}(?![\d.]*\d)")


def _fold(text: str) -> tuple[str, str, str]:
    """(diagnostic-type prefix like "smtp;", the leading reply code with its enhanced status
    code, the rest of the reply) with control characters and spaces collapsed and multi-line
    continuations folded.

    A multi-line reply arrives as "550-5.7.1 first 550-5.7.1 second 550 5.7.1 last": the later
    "550-5.7.1"/"550 5.7.1" are dropped so that phrases split across lines match as one.
    """
    text = _CONTROL.sub(" ", text[:_MAX_INPUT])
    prefix = ""
    m = _DIAG_TYPE.match(text)
    if m:
        prefix, text = m.group(1), text[m.end():]
    text = " ".join(text.split())
    lead = _LEAD.match(text)
    if lead is None or not (lead.group("sep") or lead.end() == len(text)):
        return prefix, "", text
    code, enh = lead.group("code"), lead.group("enh")
    rest = text[lead.end():]
    if enh:
        rest = re.sub(rf"(?<!\S){code}[- ]{re.escape(enh)}(?!\S)\s*", "", rest)
    elif lead.group("sep") == "-":  # "421-a 421-b 421 c": the last line's "421 " goes too
        rest = re.sub(rf"(?<!\S){code}(?:-(?=\S)|\s+)", "", rest)
    return prefix, f"{code} {enh}" if enh else code, rest.strip()


def _reply(head: str, rest: str) -> str:
    return f"{head} {rest}" if head and rest else head or rest


# ---------------------------------------------------------------------------------------------
# normalize_reason
# ---------------------------------------------------------------------------------------------

# Any run of non-separators around an "@" (or its URL-encoded %40) is an address: after this
# no "@" is left in the text at all. Tried only where such a run starts (linear time).
_ADDRESS = re.compile(r"""(?<![^\s<>()\[\]{},;:"'`|])[^\s<>()\[\]{},;:"'`|]*(?:@|%40)"""
                      r"""[^\s<>()\[\]{},;:"'`|]*""", re.I)
_TIME = re.compile(
    r"\b\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?(?:Z|\s?[+-]\d\d:?\d\d)?)?\b"
    r"|\b\d\d:\d\d:\d\d(?:[.,]\d+)?\b")
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)"
                   r"(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:ipv6:)?[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}"
                   r"(?::(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])", re.I)
_BRACKET = re.compile(r"\[([^\[\]]{1,300})\]")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?){2,}")
_TOKEN = re.compile(r"(?<![\w.-])[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*(?![\w-])")
_RFC = re.compile(r"\bRFC ?(\d{3,5})\b", re.I)
_CODE_WORD = re.compile(r"[A-Za-z]{1,4}\d{1,12}")
_SERVER = re.compile(r"([A-Za-z]{5,})\d{3,}")


def _ipv6(m: re.Match[str]) -> str:
    s = m.group(0)
    hexdigits = any(c.isdigit() or c.lower() in "abcdef" for c in s.replace("ipv6:", ""))
    return "IP" if hexdigits and (s.count(":") >= 3 or "::" in s) else s


def _has_ip(text: str) -> bool:
    if _IPV4.search(text):
        return True
    return any(_ipv6(m) == "IP" for m in _IPV6.finditer(text))


def _bracket(m: re.Match[str]) -> str:
    inner = m.group(1)
    if _has_ip(inner):
        return "[IP]"  # "[192.0.2.1]", Gmail's "[192.0.2.1      15]"
    first = inner.split(None, 1)[0] if inner.strip() else ""
    if _HOSTNAME.fullmatch(first) and any(c.isdigit() for c in first):
        return "[HOST]"  # Microsoft's "[BN1NAM02FT012.eop-nam02.prod.outlook.com 2025-...]"
    return m.group(0)


def _token(m: re.Match[str]) -> str:
    """Host names with many digits, ids and long numbers: the parts that vary per message."""
    tok = m.group(0)
    digits = sum(c.isdigit() for c in tok)
    if not digits:
        return tok
    if tok.isdigit():
        return tok if len(tok) < 3 else "N"
    if _STATUS.fullmatch(tok) or _CODE_WORD.fullmatch(tok):
        return tok  # 5.7.1, S3150, TSS04, AS3130: stable codes
    server = _SERVER.fullmatch(tok)
    if server:
        return server.group(1) + "N"  # mxgmx117, resimta1234: one of many servers
    last = tok.rsplit(".", 1)[-1]
    if "." in tok and last.isalpha() and len(last) >= 2:
        # mta1234.mail.ne1.yahoo.com varies per server; dnsbl-1.uceprotect.net does not.
        return "HOST" if digits >= 3 and tok.count(".") >= 2 else tok
    letters = sum(c.isalpha() for c in tok)
    if len(tok) >= 10 and digits >= 2 and letters:
        return "ID"
    return tok


def normalize_reason(dsn_status: str, dsn_diag: str) -> str:
    """The stable text of a reply, for grouping and display ("" when both are empty).

    Addresses become ADDRESS, IPv4/IPv6 addresses IP, bracketed host trailers [HOST], message
    and queue ids ID, times TIME, numbers of three or more digits N; the leading reply code,
    enhanced status codes, provider codes like S3150 and RFC numbers (as RFC5321) stay. The
    result holds no "@", and normalising it again changes nothing.
    """
    text = dsn_diag if dsn_diag.strip() else dsn_status
    prefix, head, text = _fold(text)
    text = _ADDRESS.sub("ADDRESS", text)
    text = _BRACKET.sub(_bracket, text)
    text = _TIME.sub("TIME", text)
    text = _IPV4.sub("IP", text)
    text = _IPV6.sub(_ipv6, text)
    text = _RFC.sub(r"RFC\1", text)
    text = _TOKEN.sub(_token, text)
    text = prefix + _reply(head, " ".join(text.split()))
    if len(text) > _MAX_REASON:
        cut = text.rfind(" ", 0, _MAX_REASON + 1)
        text = text[: cut if cut > 0 else _MAX_REASON].rstrip()
    if text == "(other)":  # the name of the folded bucket is never a reason
        text = "other"
    return text


# ---------------------------------------------------------------------------------------------
# The classifier
# ---------------------------------------------------------------------------------------------

_CACHE_MAX = 65_536


class Rule(NamedTuple):
    """One rule: its class (and list), and the conditions that must all hold.

    `status` is a regular expression that must match the whole enhanced status code of
    dsnStatus or of the reply; `diag` is searched in the reply (case-insensitive, continuations
    folded, without the "smtp;" prefix); `bounce_cat` lists PowerMTA categories.
    """

    reason: str
    blocklist: str | None = None
    status: str | None = None
    diag: str | None = None
    bounce_cat: tuple[str, ...] = ()
    name: str = ""


class _Compiled(NamedTuple):
    result: Reason
    status: re.Pattern[str] | None
    cats: frozenset[str]
    diag: re.Pattern[str] | None
    literals: tuple[str, ...] | None


class ReasonRules:
    """Ordered rules, compiled once; `classify` gives the first matching rule's class.

    Each `diag` expression carries the literals one of which every text it matches contains
    (`required_literals`): a rule whose literals are all absent from the (lower-cased) reply
    is skipped without running its expression, so most rules cost a substring test.
    """

    def __init__(self, rules: Sequence[Rule], *, source: str = "reasons.toml") -> None:
        self.rules = tuple(rules)
        self.source = source
        self._compiled = tuple(
            _Compiled(
                result=Reason(r.reason, r.blocklist),
                status=re.compile(f"(?:{r.status})", re.I) if r.status is not None else None,
                cats=frozenset(r.bounce_cat),
                diag=re.compile(r.diag, re.I) if r.diag is not None else None,
                literals=required_literals(r.diag) if r.diag is not None else None,
            )
            for r in self.rules
        )
        self._cache: dict[tuple[str, str, str], Reason] = {}

    def classify(self, dsn_status: str, dsn_diag: str, bounce_cat: str = "") -> Reason:
        """The reason class of a failed record (`other` when no rule matches)."""
        key = (dsn_status, dsn_diag, bounce_cat)
        found = self._cache.get(key)
        if found is None:
            found = self._classify(dsn_status, dsn_diag, bounce_cat)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _classify(self, dsn_status: str, dsn_diag: str, bounce_cat: str) -> Reason:
        _, head, rest = _fold(dsn_diag)
        # An address is the recipient's, not the receiver's words ("spamcop.fan@example.com").
        reply = _reply(head, _ADDRESS.sub("ADDRESS", rest) if "@" in rest else rest)
        m = _STATUS.match(dsn_status.strip())
        status = m.group(0) if m else ""
        m = _STATUS.search(head or reply, 0, 40)
        reply_status = m.group(0) if m else ""
        cat = bounce_cat.strip().lower()
        # The literal test is exact for ASCII text; other text always runs the expressions.
        low = reply.lower() if reply.isascii() else None
        for rule in self._compiled:
            if rule.status is not None and not (rule.status.fullmatch(status)
                                                or rule.status.fullmatch(reply_status)):
                continue
            if rule.cats and cat not in rule.cats:
                continue
            if rule.diag is not None:
                if (rule.literals is not None and low is not None
                        and not any(lit in low for lit in rule.literals)):
                    continue
                if rule.diag.search(reply) is None:
                    continue
            return rule.result
        return OTHER_REASON


_MIN_LITERAL = 3


def required_literals(pattern: str) -> tuple[str, ...] | None:
    """Lower-case ASCII strings one of which is in every text `pattern` matches
    (case-insensitively); None when no such set can be found (the rule always runs).

    Taken from the parsed expression: runs of literal characters, alternatives of a group
    (each must yield some), the body of a repetition of at least one. Conservative: any other
    construct ends a run and contributes nothing.
    """
    try:  # CPython's own (private) parser of expressions: without it, no prefilter
        sre_parse = importlib.import_module("re._parser")
        found = _literals(sre_parse.parse(pattern, re.I), importlib.import_module("re._constants"))
    except Exception:
        return None
    # Only ASCII literals: for ASCII text, re.IGNORECASE then means lower() on both sides.
    if found is None or not all(lit.isascii() for lit in found):
        return None
    return tuple(sorted({lit.lower() for lit in found}))


def _literals(sub: Any, c: Any) -> list[str] | None:
    candidates: list[list[str]] = []
    run: list[str] = []

    def end_run() -> None:
        if len(run) >= _MIN_LITERAL:
            candidates.append(["".join(run)])
        run.clear()

    for op, av in sub:
        if op is c.LITERAL:
            run.append(chr(av))
            continue
        if op is c.AT:  # \b, ^, $: zero-width, the run goes on
            continue
        end_run()
        inner: list[str] | None = None
        if op is c.SUBPATTERN:
            inner = _literals(av[-1], c)
        elif op is c.BRANCH:
            parts = [_literals(b, c) for b in av[1]]
            if all(parts):
                inner = [lit for part in parts if part for lit in part]
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[0] >= 1:
            inner = _literals(av[2], c)
        if inner:
            candidates.append(inner)
    end_run()
    if not candidates:
        return None
    # The most selective: the longest shortest literal, then the fewest literals.
    return max(candidates, key=lambda lits: (min(map(len, lits)), -len(lits)))


def load_reasons(path: str | Path | None = None) -> ReasonRules:
    """The reason rules in `path` (default: the shipped `reasons.toml`).

    Raises OutcomesFileError naming the file, the rule's line and number, and the key.
    """
    # The file machinery (tomllib, importlib.resources) loads only here: the plugins import
    # this module for normalize_reason alone and should start fast.
    from pmta_snmp.outcomes.files import read_toml

    label, text, doc = read_toml(path, "reasons.toml")
    return ReasonRules(_parse(label, text, doc), source=label)


_RULE_KEYS = ("name", "reason", "blocklist", "status", "diag", "bounce_cat")


def _parse(label: str, text: str, doc: Mapping[str, Any]) -> list[Rule]:
    unknown = sorted(set(doc) - {"rule"})
    if unknown:
        raise OutcomesFileError(f"{label}: unknown top-level key {unknown[0]!r} "
                                "(the rules are [[rule]] tables)")
    tables = doc.get("rule")
    if not isinstance(tables, list) or not tables:
        raise OutcomesFileError(f"{label}: no [[rule]] tables")
    from pmta_snmp.outcomes.files import line_of

    rules = []
    for n, body in enumerate(tables, start=1):
        line = line_of(text, "[[rule]]", n)
        where = f"{label} line {line} (rule {n})" if line else f"{label} (rule {n})"
        rules.append(_rule(where, body))
    return rules


def _rule(where: str, body: Mapping[str, Any]) -> Rule:
    extra = sorted(set(body) - set(_RULE_KEYS))
    if extra:
        raise OutcomesFileError(f"{where}: unknown key {extra[0]!r} ({', '.join(_RULE_KEYS)})")
    for key in ("name", "reason", "blocklist", "status", "diag"):
        if key in body and not isinstance(body[key], str):
            raise OutcomesFileError(f"{where}: {key} must be a string")
    reason = body.get("reason")
    if reason not in REASONS:
        raise OutcomesFileError(f"{where}: reason {reason!r} is not one of {', '.join(REASONS)}")
    blocklist = body.get("blocklist")
    if reason == "blocklist" and blocklist not in BLOCKLISTS:
        raise OutcomesFileError(f"{where}: blocklist {blocklist!r} is not one of "
                                f"{', '.join(BLOCKLISTS)}")
    if reason != "blocklist" and blocklist is not None:
        raise OutcomesFileError(f"{where}: blocklist is only for reason = \"blocklist\"")
    cats = body.get("bounce_cat", [])
    if not isinstance(cats, list) or not all(isinstance(c, str) and c for c in cats):
        raise OutcomesFileError(f"{where}: bounce_cat must be a list of PowerMTA categories")
    status, diag = body.get("status"), body.get("diag")
    if status is None and diag is None and not cats:
        raise OutcomesFileError(f"{where}: a rule needs at least one of status, diag, "
                                "bounce_cat")
    for key, value in (("status", status), ("diag", diag)):
        if value is None:
            continue
        try:  # wrapped as it will be in the combined expression (no global flags inside)
            compiled = re.compile(f"(?:{value})", re.IGNORECASE)
        except re.error as exc:
            raise OutcomesFileError(f"{where}: {key} is not a valid regular expression: "
                                    f"{exc}") from None
        if compiled.groups or compiled.groupindex:
            raise OutcomesFileError(f"{where}: {key} must not capture: write (?:...) instead "
                                    "of (...)")
    return Rule(reason=reason, blocklist=blocklist, status=status, diag=diag,
                bounce_cat=tuple(c.strip().lower() for c in cats),
                name=body.get("name", ""))


_DEFAULT: ReasonRules | None = None


def default_rules() -> ReasonRules:
    """The shipped rules, loaded and compiled once."""
    global _DEFAULT  # noqa: PLW0603 (a process-wide cache of immutable rules)
    if _DEFAULT is None:
        _DEFAULT = load_reasons()
    return _DEFAULT


def classify(dsn_status: str, dsn_diag: str, bounce_cat: str = "") -> Reason:
    """The reason class of a failed record by the shipped rules."""
    return default_rules().classify(dsn_status, dsn_diag, bounce_cat)
