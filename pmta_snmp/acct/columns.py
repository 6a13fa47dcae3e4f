"""Accounting layouts: PowerMTA's column names, what their texts mean, and one header's plan.

Columns are mapped by header name, never by position (pmta-formats.md §3.3-§3.4), so every
layout works: 4.0 with ``timeImprinted`` and Unix-second times, 4.5/5.0 with
``queue``/``vmtaPool`` and the TLS pair, 5.5 with ``timeFirstAttempt``, any ``record-fields``
selection and ``header_*`` columns. This module is the bottom of :mod:`pmta_snmp.acct`: the
record path, the tally and the seek all read layouts through it and import nothing above it.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Final

from pmta_snmp.logtail import decode_line

__all__ = [
    "COLUMNS",
    "DOMAIN_FIELDS",
    "FIELDS",
    "FIELD_ORDER",
    "HEADER_NAMES",
    "TIME_ATTRS",
    "Layout",
    "domain_of",
    "is_json_path",
    "missing_columns",
    "parse_header_line",
    "parse_size",
    "parse_time",
    "starttls_offered",
]

#: Header name (lowercased) → AcctRecord attribute.
COLUMNS: Final[dict[str, str]] = {
    "type": "type",
    "timelogged": "time_logged",
    "timequeued": "time_queued",
    "orig": "orig",
    "rcpt": "rcpt",
    "dsnaction": "dsn_action",
    "dsnstatus": "dsn_status",
    "dsndiag": "dsn_diag",
    "dsnmta": "dsn_mta",
    "bouncecat": "bounce_cat",
    "dlvsourceip": "dlv_source_ip",
    "dlvdestinationip": "dlv_destination_ip",
    "dlvesmtpavailable": "dlv_esmtp_available",
    "dlvsize": "dlv_size",
    "dlvtlsprotocol": "dlv_tls_protocol",
    "dlvtlscipher": "dlv_tls_cipher",
    "vmta": "vmta",
    "vmtapool": "vmta_pool",
    "queue": "queue",
    "jobid": "job_id",
}
#: AcctRecord attribute → PowerMTA's header name (for messages naming a missing column).
HEADER_NAMES: Final[dict[str, str]] = {
    "type": "type", "time_logged": "timeLogged", "time_queued": "timeQueued", "orig": "orig",
    "rcpt": "rcpt", "dsn_action": "dsnAction", "dsn_status": "dsnStatus",
    "dsn_diag": "dsnDiag", "dsn_mta": "dsnMta", "bounce_cat": "bounceCat",
    "dlv_source_ip": "dlvSourceIp", "dlv_destination_ip": "dlvDestinationIp",
    "dlv_esmtp_available": "dlvEsmtpAvailable", "dlv_size": "dlvSize",
    "dlv_tls_protocol": "dlvTlsProtocol", "dlv_tls_cipher": "dlvTlsCipher", "vmta": "vmta",
    "vmta_pool": "vmtaPool", "queue": "queue", "job_id": "jobId",
}
#: AcctRecord's fields in order (without ``extra``): a row's values are taken in this order.
FIELD_ORDER: Final[tuple[str, ...]] = tuple(COLUMNS.values())
TIME_ATTRS: Final = frozenset({"time_logged", "time_queued"})

#: Field names a counting plugin may ask for: text attributes plus two derived domains.
FIELDS: Final[dict[str, str]] = {
    **{attr: attr for attr in FIELD_ORDER if attr not in TIME_ATTRS | {"type", "dlv_size"}},
    "sender_domain": "orig",
    "rcpt_domain": "rcpt",
}
#: The FIELDS that are the domain of an address column.
DOMAIN_FIELDS: Final = frozenset({"sender_domain", "rcpt_domain"})

_UNIX = re.compile(r"\d+(?:\.\d+)?")


@lru_cache(maxsize=8192)
def parse_time(text: str) -> datetime | None:
    """An accounting time as an aware datetime; None when empty or unparsable.

    ``iso-times yes`` gives ``YYYY-MM-DD HH:MM:SS±HHMM`` [D]; ``T`` and ``±HH:MM`` are accepted
    too [I]; otherwise Unix seconds [D]. A time without an offset is not documented [?]: it is
    taken as this host's local time, which is PowerMTA's clock when we run beside it.
    """
    text = text.strip()
    if not text:
        return None
    if _UNIX.fullmatch(text):
        try:
            return datetime.fromtimestamp(float(text), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.astimezone()


def parse_size(text: str) -> int | None:
    """``dlvSize`` in bytes (None when empty or not a number)."""
    text = text.strip()
    return int(text) if text.isdigit() else None


# Normalised domain by the text after "@": few distinct domains, many addresses.
_DOMAINS: dict[str, str] = {}
_DOMAIN_CACHE = 4096


def domain_of(address: str) -> str:
    """Domain of an address (after its last ``@``), lowercased, without ``<>`` or a final
    dot; "" when it has no ``@`` (the null sender)."""
    at = address.rfind("@")
    if at < 0:
        return ""
    raw = address[at + 1:]
    try:
        return _DOMAINS[raw]
    except KeyError:
        pass
    if len(_DOMAINS) >= _DOMAIN_CACHE:
        _DOMAINS.clear()
    domain = _DOMAINS[raw] = raw.strip().strip("<>").rstrip(".").lower()
    return domain


def starttls_offered(esmtp_available: str) -> bool:
    """``dlvEsmtpAvailable`` lists STARTTLS among the receiving MTA's ESMTP extensions."""
    return "STARTTLS" in (x.strip().upper() for x in esmtp_available.split(","))


def is_json_path(path: str | os.PathLike[str]) -> bool:
    """JSON accounting is chosen by the ``.json`` extension [I] (also ``.json.gz``)."""
    name = os.path.basename(os.fspath(path)).lower()
    for comp in (".gz", ".bz2", ".xz"):
        name = name.removesuffix(comp)
    return name.endswith(".json")


def is_header(row: Sequence[str]) -> bool:
    """A CSV row is a header line when its first column is ``type`` (any case or spacing):
    PowerMTA writes one first, and again when it restarts with other fields."""
    first = row[0] if row else ""
    return len(first) >= 4 and first.strip().lower() == "type"


def parse_header_line(raw: bytes) -> list[str] | None:
    """The columns of a header line (bytes without the line end); None when it is not one."""
    try:
        row = next(csv.reader([decode_line(raw)]))
    except (csv.Error, StopIteration):
        return None
    return row if is_header(row) else None


class Layout:
    """The column plan of one header, built once per header so that a row costs one C-level
    ``itemgetter`` call: which column feeds which field, where the type and time are."""

    def __init__(self, header: Sequence[str]) -> None:
        self.header = [h.strip() for h in header]
        self.width = len(self.header)
        index: dict[str, int] = {}
        #: (column, header name) of the columns without a field (kept in AcctRecord.extra).
        self.extra: list[tuple[int, str]] = []
        for i, name in enumerate(self.header):
            attr = COLUMNS.get(name.lower())
            if attr is not None:
                index.setdefault(attr, i)
            elif name:
                self.extra.append((i, name))
        #: attribute → column, for the attributes this header has.
        self.index = index
        #: Per FIELD_ORDER attribute its column; -1 reads the "" appended to a padded row.
        self.columns = [index.get(f, -1) for f in FIELD_ORDER]
        self.type_index = index.get("type", -1)
        self.time_index = index.get("time_logged", -1)
        self.getter: Callable[[list[str]], tuple[str, ...]] = itemgetter(*self.columns)
        #: Some attribute has no column: rows get a "" appended before ``getter`` reads them.
        self.pad = -1 in self.columns

    def column(self, attr: str) -> int:
        """The column of an attribute (-1: not in this header)."""
        return self.index.get(attr, -1)

    def missing(self, attrs: Collection[str]) -> list[str]:
        """The attributes of ``attrs`` this header has no column for."""
        return [a for a in attrs if a not in self.index]


def missing_columns(header: Sequence[str], attrs: Collection[str]) -> list[str]:
    """PowerMTA's names of the columns for ``attrs`` (AcctRecord attributes, or FIELDS names)
    that ``header`` lacks: a 4.0 layout has no ``dlvTlsProtocol``, ``record-fields`` may drop
    any column."""
    layout = Layout(header)
    wanted = [FIELDS.get(a, a) for a in attrs]
    return [HEADER_NAMES.get(a, a) for a in dict.fromkeys(layout.missing(wanted))]
