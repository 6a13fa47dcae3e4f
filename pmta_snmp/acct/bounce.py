"""Bounce classes: PowerMTA ``bounceCat`` → hard / soft / block / success.

PowerMTA has no hard/soft flag, only the category (pmta-formats.md §3.7). The class table
follows the usual convention and is a module-level mapping so a deployment can change it
(or pass its own to :func:`classify`). When ``bounceCat`` is empty (a real ``t`` row had it
empty) the category is derived from ``dsnStatus`` with PowerMTA's stock status rules, then from
the ``dsnDiag`` text with the stock text rules, as PowerMTA itself does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final, Literal

from pmta_snmp.acct.columns import mask_addresses

__all__ = [
    "BLOCK",
    "CATEGORY_CLASS",
    "HARD",
    "OTHER",
    "SOFT",
    "STATUS_RULES",
    "SUCCESS",
    "TEXT_RULES",
    "BounceClass",
    "categorize",
    "classify",
    "dsn_code",
]

BounceClass = Literal["hard", "soft", "block", "success"]
HARD: Final = "hard"
SOFT: Final = "soft"
BLOCK: Final = "block"
SUCCESS: Final = "success"
#: PowerMTA's catch-all category; also where unknown categories land.
OTHER: Final = "other"

#: bounceCat → class (pmta-formats.md §3.7). Mutate or pass ``classes=`` to override.
CATEGORY_CLASS: dict[str, BounceClass] = {
    "bad-mailbox": HARD,
    "bad-domain": HARD,
    "inactive-mailbox": HARD,
    "invalid-sender": HARD,
    "routing-errors": HARD,
    "quota-issues": SOFT,
    "bad-connection": SOFT,
    "no-answer-from-host": SOFT,
    "message-expired": SOFT,
    "bad-configuration": SOFT,
    "protocol-errors": SOFT,
    "other": SOFT,
    "policy-related": BLOCK,
    "spam-related": BLOCK,
    "content-related": BLOCK,
    "virus-related": BLOCK,
    "relaying-issues": BLOCK,
    "success": SUCCESS,
}

#: Stock status rules, tried in order on the enhanced status code (x.y.z).
STATUS_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^2\."), "success"),
    (re.compile(r"^[45]\.1\.1$"), "bad-mailbox"),
    (re.compile(r"^[45]\.1\.2$"), "bad-domain"),
    (re.compile(r"^[45]\.3\.5$"), "bad-configuration"),
    (re.compile(r"^[45]\.4\.1$"), "no-answer-from-host"),
    (re.compile(r"^[45]\.4\.2$"), "bad-connection"),
    (re.compile(r"^[45]\.4\.[46]$"), "routing-errors"),
    (re.compile(r"^[45]\.4\.7$"), "message-expired"),
    (re.compile(r"^[45]\.7\.1$"), "policy-related"),
]

#: Stock text rules on dsnDiag, tried in order after the status rules (case-insensitive).
TEXT_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"spam|blacklist|blocked", re.IGNORECASE), "spam-related"),
    (re.compile(r"quota|mailbox full", re.IGNORECASE), "quota-issues"),
    (re.compile(r"denied|rejected|refused|policy", re.IGNORECASE), "policy-related"),
]

_CODE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")


def dsn_code(text: str) -> str:
    """The first enhanced status code (``5.1.1``) in ``text``; "" if none.

    ``dsnStatus`` is "5.1.1 (bad destination mailbox address)"; ``dsnDiag`` may carry one too
    ("smtp;550 5.1.1 user unknown").
    """
    m = _CODE.search(text)
    return f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else ""


def categorize(dsn_status: str, dsn_diag: str = "", *,
               status_rules: Sequence[tuple[re.Pattern[str], str]] | None = None,
               text_rules: Sequence[tuple[re.Pattern[str], str]] | None = None) -> str:
    """A bounceCat for a record that has none: status rules on the dsnStatus code (or, when
    dsnStatus has no code, the code in dsnDiag), then text rules on dsnDiag, else ``other``.

    Both read dsnDiag without addresses (:func:`~pmta_snmp.acct.columns.
    mask_addresses`): a recipient named ``spam@...`` is not a spam rejection, and the counts
    stay the same whether a reply's address was masked before (the tally) or not."""
    text = mask_addresses(dsn_diag)
    code = dsn_code(dsn_status) or dsn_code(text)
    if code:
        for pattern, category in status_rules if status_rules is not None else STATUS_RULES:
            if pattern.search(code):
                return category
    if text:
        for pattern, category in text_rules if text_rules is not None else TEXT_RULES:
            if pattern.search(text):
                return category
    return OTHER


def classify(bounce_cat: str, dsn_status: str = "", dsn_diag: str = "", *,
             classes: Mapping[str, BounceClass] | None = None,
             status_rules: Sequence[tuple[re.Pattern[str], str]] | None = None,
             text_rules: Sequence[tuple[re.Pattern[str], str]] | None = None) -> BounceClass:
    """hard / soft / block / success for one record; an unknown category counts as soft."""
    table = CATEGORY_CLASS if classes is None else classes
    category = bounce_cat.strip().lower()
    if not category:
        category = categorize(dsn_status, dsn_diag, status_rules=status_rules,
                              text_rules=text_rules)
    found = table.get(category)
    if found is None:
        found = table.get(OTHER, SOFT)
    return found
