"""The catalogue of what `/metrics` publishes: name, type, labels and HELP text of each family.

One list that the exporter builds its families from and that the Grafana dashboard and the
alert rules are checked against, so none of them can name a metric the exporter does not
serve (a test scrapes the real exporter and compares its families with this list).
Names follow the Prometheus conventions: base units, `_total` on counters (listed here with
the suffix, as they are scraped), `_ratio` for fractions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["CATALOGUE", "MetricDef", "by_name", "help_texts"]

Kind = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric family as scraped."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        """The name prometheus_client takes (a counter without its `_total`)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


def _g(name: str, help_: str, *labels: str) -> MetricDef:
    return MetricDef(name, "gauge", help_, labels)


def _c(name: str, help_: str, *labels: str) -> MetricDef:
    return MetricDef(name, "counter", help_, labels)


CATALOGUE: Final[tuple[MetricDef, ...]] = (
    # health of the exporter's polls
    _g("pmta_up", "1 when the last poll of the PowerMTA API succeeded (0 too when polling has "
       "stalled)."),
    _g("pmta_data_age_seconds", "Seconds since the exporter last reached the PowerMTA API."),
    _c("pmta_polls_total", "Polls of the PowerMTA API by the exporter."),
    _c("pmta_poll_errors_total", "Failed polls of the PowerMTA API."),
    _g("pmta_poll_consecutive_errors", "Failed polls in a row (0 after a good one)."),
    _g("pmta_poll_warnings", "Warnings of the last good poll: values PowerMTA sent unusable or "
       "not at all (left out), a refused `show license`; the exporter logs them."),
    _g("pmta_last_success_timestamp_seconds",
       "When the exporter last reached the PowerMTA API (Unix time)."),
    # /probe (a fleet's PowerMTA per scrape; pmta_up there: that probe's poll) and the prober
    _g("pmta_probe_duration_seconds", "Seconds the probe took (waiting for a slot included)."),
    _c("pmta_exporter_probes_total", "Probes (/probe requests polled) per module.", "module"),
    _c("pmta_exporter_probe_failures_total",
       "Probes that could not poll their target (pmta_up 0), per module.", "module"),
    _g("pmta_exporter_probes_in_flight", "Probes polling their target now."),
    _g("pmta_exporter_probes_waiting",
       "Probes waiting for a slot (probe.max_concurrent are polling)."),
    _g("pmta_exporter_probe_max_concurrent",
       "Probes that may poll at once (probe.max_concurrent)."),
    # PowerMTA's status
    _g("pmta_info", "PowerMTA product, version and host (value 1).", "product", "version", "host"),
    _g("pmta_uptime_seconds", "Seconds since PowerMTA started."),
    _g("pmta_shutting_down", "1 while PowerMTA is shutting down."),
    _g("pmta_queued_recipients", "Recipients queued, per queue type (smtp = the queue depth).",
       "type"),
    _g("pmta_queued_domains", "Domains with mail queued, per queue type.", "type"),
    _g("pmta_queued_bytes", "Bytes queued, per queue type.", "type"),
    _c("pmta_traffic_recipients_total", "Recipients since PowerMTA started.", "direction"),
    _c("pmta_traffic_messages_total", "Messages since PowerMTA started.", "direction"),
    _c("pmta_traffic_bytes_total", "Bytes since PowerMTA started.", "direction"),
    _c("pmta_bounces_processed_total", "Bounces processed since PowerMTA started."),
    _c("pmta_feedback_loop_processed_total",
       "Feedback-loop reports processed since PowerMTA started."),
    _g("pmta_outbound_messages_per_second",
       "Messages delivered per second over the last minute."),
    _g("pmta_outbound_recipients_per_second",
       "Recipients delivered per second over the last minute."),
    _g("pmta_smtp_connections", "Open SMTP connections.", "direction"),
    _g("pmta_smtp_connections_max", "Configured maximum of SMTP connections.", "direction"),
    _g("pmta_spool_initialization_ratio", "Spool initialisation progress (1 = done)."),
    _g("pmta_spool_files_in_use", "Spool files in use."),
    _g("pmta_license_days_left", "Days until the PowerMTA license expires (+Inf: never)."),
    _g("pmta_domains", "Destination domains PowerMTA reports."),
    _g("pmta_vmtas", "VirtualMTAs PowerMTA reports."),
    _g("pmta_queues", "Queues (domain/vmta) PowerMTA reports."),
    _g("pmta_list_rows", "Rows PowerMTA listed per list; source: command (POST /command list "
       "commands, every row up to pmta.max_list_items) or page (the web pages' top "
       "http-default-max-items rows).", "list", "source"),
    _g("pmta_list_rows_known", "Rows PowerMTA has per list by its own count (queues without "
       "one: at least one per domain with mail queued); absent when it gave none. Above "
       "pmta_list_rows: rows are missing.", "list"),
    # per item, capped
    _g("pmta_domain_queued_recipients", "Recipients queued per domain.", "domain"),
    _g("pmta_domain_queued_bytes", "Bytes queued per domain.", "domain"),
    _g("pmta_domain_connections", "Open SMTP connections per domain.", "domain"),
    _g("pmta_vmta_queued_recipients", "Recipients queued per vmta.", "vmta"),
    _g("pmta_vmta_queued_bytes", "Bytes queued per vmta.", "vmta"),
    _g("pmta_vmta_connections", "Open SMTP connections per vmta.", "vmta"),
    _g("pmta_queue_recipients", "Recipients per queue.", "queue", "domain", "vmta"),
    _g("pmta_queue_bytes", "Bytes per queue.", "queue", "domain", "vmta"),
    _g("pmta_queue_connections", "Open connections per queue.", "queue", "domain", "vmta"),
    _g("pmta_queue_paused", "1 when the queue is paused ((other): how many are).",
       "queue", "domain", "vmta"),
    _g("pmta_queue_backoff", "1 when the queue is in backoff ((other): how many are).",
       "queue", "domain", "vmta"),
    _g("pmta_exporter_other_items", "Items beyond the series cap summed into the (other) series.",
       "kind"),
    # deliverability outcomes from the accounting files (with --acct-file)
    _c("pmta_outcomes_total", "Accounting records per provider and result (delivered, "
       "hard_bounce, soft_bounce, block_bounce, deferred, expired).", "provider", "result"),
    _c("pmta_outcome_reasons_total", "Failed deliveries and deferrals per provider and reason "
       "class.", "provider", "reason"),
    _c("pmta_source_ip_outcomes_total", "Accounting records per source IP, VirtualMTA, "
       "provider and result.", "source_ip", "vmta", "provider", "result"),
    _c("pmta_sending_domain_outcomes_total", "Accounting records per sending domain and "
       "result.", "sending_domain", "result"),
    _c("pmta_complaints_total", "Spam complaints (feedback-loop abuse reports) per provider "
       "and sending domain.", "provider", "sending_domain"),
    _c("pmta_blocklist_rejections_total", "Rejections naming a blocklist, per source IP and "
       "list.", "source_ip", "blocklist"),
    MetricDef("pmta_delivery_delay_seconds", "histogram", "Time from queueing to the final "
              "outcome (delivered or bounced) per provider.", ("provider",)),
    _c("pmta_acct_records_total", "Accounting records read, per record type.", "type"),
    _g("pmta_acct_lag_seconds", "How far the newest accounting record read is behind the "
       "files' end (seconds); absent until a read of the files has completed (unknown)."),
    _c("pmta_acct_read_errors_total", "Accounting lines that could not be read."),
    _g("pmta_acct_last_read_timestamp_seconds", "When the last read of the accounting files "
       "completed (Unix time); absent until the first. A reader that stops (files gone "
       "unreadable, a hung mount) leaves it behind while the lag keeps its last value."),
)


def by_name() -> dict[str, MetricDef]:
    """The catalogue keyed by scraped name."""
    return {m.name: m for m in CATALOGUE}


def help_texts() -> dict[str, str]:
    """Scraped name -> HELP text."""
    return {m.name: m.help for m in CATALOGUE}
