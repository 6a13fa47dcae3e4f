"""The one place that turns an accounting record into a deliverability outcome.

Per record: the provider (provider map: recipient domain, then the MX host of ``dsnMta``), the
result (``d`` delivered; ``b`` hard/soft/block bounce by :mod:`pmta_snmp.acct.bounce`'s
classes, or expired; ``t`` deferred), the reason class and blocklist of every non-delivered
record (:mod:`pmta_snmp.outcomes.reasons`), the sending domain (the domain of ``orig``), source
IP and VirtualMTA, the delivery delay of final records, and for ``f`` (feedback-loop) records
whether they are a complaint and whose.

Decisions (README "Deliverability"):

* **expired** = a ``b`` record whose bounce category (``bounceCat``, or the one PowerMTA's stock
  rules give when it is empty) is ``message-expired``, or whose ``dsnStatus`` is x.4.7 (delivery
  time expired). Its reason class is what the reason rules say (``expired`` for x.4.7).
* **delay** = ``totalSecondsQueued`` when the record has one (5.5), else ``timeLogged -
  timeQueued``, on ``d`` and ``b`` records only (both end a recipient's delivery; ``t`` is one
  attempt of many), below zero (clock steps) counted as 0, unknown when a time is missing.
* **complaint** = an ``f`` record whose ``feedbackType`` is none of ``not-spam``,
  ``auth-failure``, ``dmarc``, ``virus`` (ARF's non-complaint report types); ARF and Microsoft
  JMRP (``format`` jmrp) alike. Its provider is the recipient's (``rcpt`` domain), else the
  one whose domains or MX hosts ``reportingMta`` belongs to, else ``microsoft`` for JMRP; its
  sending domain is the domain of ``orig``, else ``reportedDomain``; its source IP is
  ``repSourceIp``.

Reply texts are classified with addresses masked (:func:`~pmta_snmp.acct.columns.
mask_addresses`), which changes no class, so that results can be cached per reply template.
Used by the outcomes engine and the reputation plugins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from pmta_snmp.acct.bounce import CATEGORY_CLASS, categorize, dsn_code
from pmta_snmp.acct.columns import domain_of, mask_addresses
from pmta_snmp.acct.records import AcctRecord
from pmta_snmp.outcomes.providers import OTHER as OTHER_PROVIDER
from pmta_snmp.outcomes.providers import ProviderMap, default_providers, mx_host
from pmta_snmp.outcomes.reasons import Reason, ReasonRules, default_rules
from pmta_snmp.outcomes.view import source_ip_text

__all__ = [
    "FINAL_TYPES",
    "NOT_COMPLAINTS",
    "Classifier",
    "Failure",
    "Outcome",
    "delay_seconds",
    "is_complaint",
    "sending_domain",
]

#: Record types that end a recipient's delivery (their delay is observed).
FINAL_TYPES: Final = frozenset({"d", "b"})
#: ARF feedback types that are not complaints about the mail.
NOT_COMPLAINTS: Final = frozenset({"not-spam", "auth-failure", "dmarc", "virus"})
_BOUNCE_RESULT: Final[dict[str, str]] = {"hard": "hard_bounce", "soft": "soft_bounce",
                                          "block": "block_bounce"}
_CACHE_MAX: Final = 65_536


@dataclass(frozen=True, slots=True)
class Failure:
    """The result and reason of a ``b`` or ``t`` record (what its reply says)."""

    result: str
    reason: str
    blocklist: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """One record's outcome. ``result`` is None for records that have none (``tq``, ``f``,
    ``r`` ...); ``reason``/``blocklist`` are set for bounced, expired and deferred records."""

    type: str
    when: datetime | None
    provider: str
    result: str | None
    reason: str | None = None
    blocklist: str | None = None
    sending_domain: str = ""
    source_ip: str = ""
    vmta: str = ""
    delay: float | None = None
    complaint: bool = False


def is_complaint(feedback_type: str) -> bool:
    """An ``f`` record's ``feedbackType`` makes it a complaint (see the module docstring)."""
    return feedback_type.strip().lower() not in NOT_COMPLAINTS


def _reporting_host(reporting_mta: str) -> str:
    """The host of an ARF ``Reporting-MTA`` value: ``dns; mail.yahoo.com`` (RFC 5965 and
    RFC 3464's ``type; name``) gives ``mail.yahoo.com``; a bare host name is itself."""
    kind, sep, rest = reporting_mta.partition(";")
    return rest.strip() if sep and kind.strip().replace("-", "").isalnum() else reporting_mta


def sending_domain(orig: str, reported_domain: str = "") -> str:
    """The envelope sender's domain (``orig``), else ``reportedDomain`` (``f`` records)."""
    return domain_of(orig) or reported_domain.strip().rstrip(".").lower()


def delay_seconds(kind: str, time_logged: datetime | None, time_queued: datetime | None,
                  total_seconds_queued: str = "") -> float | None:
    """The delivery delay of a final (``d``/``b``) record in seconds; None for other types or
    when the record does not tell (see the module docstring)."""
    if kind not in FINAL_TYPES:
        return None
    total = total_seconds_queued.strip()
    if total.isdigit():
        return float(int(total))
    if time_logged is None or time_queued is None:
        return None
    return max(0.0, (time_logged - time_queued).total_seconds())


class Classifier:
    """Provider, result and reason of accounting records by one provider map and one set of
    reason rules (default: the shipped ones). Results are cached per reply template."""

    def __init__(self, providers: ProviderMap | None = None, rules: ReasonRules | None = None,
                 *, bounce_classes: Mapping[str, str] | None = None) -> None:
        self.providers = providers if providers is not None else default_providers()
        self.rules = rules if rules is not None else default_rules()
        self.bounce_classes = dict(CATEGORY_CLASS if bounce_classes is None else bounce_classes)
        self._failures: dict[tuple[str, str, str, str], Failure] = {}
        self._complaint_providers: dict[tuple[str, str, str], str] = {}

    # -- pieces (also used by the engine's counting path) ----------------------------------

    def provider(self, rcpt_domain: str, dsn_mta: str = "") -> str:
        """Provider of a recipient domain (lower case), else of the ``dsnMta`` MX host."""
        return self.providers.provider(rcpt_domain, dsn_mta)

    def failure(self, kind: str, bounce_cat: str, dsn_status: str, dsn_diag: str) -> Failure:
        """Result and reason of a ``b`` (bounce or expiry) or ``t`` (deferral) record; the
        reply may be given masked or not (same answer)."""
        key = (kind, bounce_cat, dsn_status, dsn_diag)
        found = self._failures.get(key)
        if found is None:
            masked = mask_addresses(dsn_diag)
            mkey = (kind, bounce_cat, dsn_status, masked)
            found = self._failures.get(mkey)
            if found is None:
                found = self._failure(kind, bounce_cat, dsn_status, masked)
            if len(self._failures) >= _CACHE_MAX:
                self._failures.clear()
            self._failures[mkey] = self._failures[key] = found
        return found

    def _failure(self, kind: str, bounce_cat: str, dsn_status: str, diag: str) -> Failure:
        reason: Reason = self.rules.classify(dsn_status, diag, bounce_cat)
        if kind == "t":
            result = "deferred"
        else:
            category = bounce_cat.strip().lower() or categorize(dsn_status, diag)
            if category == "message-expired" or _expired_status(dsn_status):
                result = "expired"
            else:
                cls = self.bounce_classes.get(category) or self.bounce_classes.get("other",
                                                                                    "soft")
                result = _BOUNCE_RESULT.get(cls, "soft_bounce")
        return Failure(result, reason.reason, reason.blocklist)

    def complaint_provider(self, rcpt_domain: str, reporting_mta: str, fmt: str = "") -> str:
        """Provider of a feedback-loop report (see the module docstring)."""
        key = (rcpt_domain, reporting_mta, fmt)
        found = self._complaint_providers.get(key)
        if found is None:
            found = self.providers.by_domain(rcpt_domain) if rcpt_domain else None
            host = mx_host(_reporting_host(reporting_mta))
            while found is None and host:
                found = self.providers.by_domain(host) or self.providers.by_mx(host)
                host = host.partition(".")[2]
            if found is None:
                found = "microsoft" if fmt.strip().lower() == "jmrp" else OTHER_PROVIDER
            if len(self._complaint_providers) >= _CACHE_MAX:
                self._complaint_providers.clear()
            self._complaint_providers[key] = found
        return found

    # -- whole records ---------------------------------------------------------------------

    def outcome(self, record: AcctRecord) -> Outcome:
        """The outcome of one record (the record path; the engine's counting path classifies
        the same way per distinct key)."""
        kind = record.type
        extra = record.extra
        if kind == "f":
            return Outcome(
                kind, record.time_logged,
                self.complaint_provider(record.rcpt_domain, extra.get("reportingMta", ""),
                                        extra.get("format", "")),
                None,
                sending_domain=sending_domain(record.orig, extra.get("reportedDomain", "")),
                source_ip=source_ip_text(extra.get("repSourceIp", "")),
                vmta=record.vmta,
                complaint=is_complaint(extra.get("feedbackType", "")),
            )
        provider = self.provider(record.rcpt_domain, record.dsn_mta)
        common = {
            "sending_domain": sending_domain(record.orig),
            "source_ip": source_ip_text(record.dlv_source_ip),
            "vmta": record.vmta,
        }
        if kind == "d":
            return Outcome(kind, record.time_logged, provider, "delivered",
                           delay=delay_seconds(kind, record.time_logged, record.time_queued,
                                               extra.get("totalSecondsQueued", "")),
                           **common)  # type: ignore[arg-type]
        if kind in ("b", "t"):
            failure = self.failure(kind, record.bounce_cat, record.dsn_status, record.dsn_diag)
            return Outcome(kind, record.time_logged, provider, failure.result, failure.reason,
                           failure.blocklist,
                           delay=delay_seconds(kind, record.time_logged, record.time_queued,
                                               extra.get("totalSecondsQueued", "")),
                           **common)  # type: ignore[arg-type]
        return Outcome(kind, record.time_logged, provider, None, **common)  # type: ignore[arg-type]


def _expired_status(dsn_status: str) -> bool:
    code = dsn_code(dsn_status)
    return code.endswith(".4.7") and code[:1] in "45"
