"""Zabbix: a template for SNMP polling of PMTA-SNMP-MIB, and UserParameters for the plugins.

`pmta-snmp gen zabbix [--enterprise N]` writes:

* `template_pmta_snmp.yaml`: a Zabbix 6.0 export (`zabbix_export`) of the template
  "PowerMTA by SNMP": items for the scalars, SNMP low-level discovery of VirtualMTAs, domains
  and queues (`discovery[{#NAME},<DisplayName column>]`) with item and trigger prototypes,
  triggers with the documented thresholds (queue 50,000 / 100,000 recipients, data age, API
  unreachable, license days left, a table listing fewer rows than PowerMTA has: pages of
  10 rows without an API key), discovery of the deliverability outcomes per mailbox
  provider and per source IP (hard bounce and complaint rates per provider, blocklist
  rejections per source IP) and value maps for TruthValue and PmtaDeliveryMode. Every
  OID comes from `pmta_snmp.mib.layout`, so a re-based MIB (`--enterprise`) gets a matching
  template. UUIDs are version-4 shaped (Zabbix refuses others) and derived from each
  element's path, so regenerating gives the same file and re-imports update in place.
* `userparameter_pmta.conf`: agent keys running the check_pmta_* plugins in `--output zabbix`
  mode (value and `--json` status) and their `--discover` low-level discovery.

The YAML is written by hand (no YAML library at run time); `template()` is the same data as a
structure, which the tests compare with a YAML parser's reading of the file.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pmta_snmp.integrations import PluginSpec, header_lines, load_plugins
from pmta_snmp.mib.layout import ENTERPRISE, OBJECTS, Kind, layout

__all__ = [
    "TEMPLATE_FILE",
    "TEMPLATE_NAME",
    "USERPARAMETER_FILE",
    "render_template",
    "render_userparameters",
    "template",
    "userparameter_keys",
    "write",
]

TEMPLATE_FILE: Final = "template_pmta_snmp.yaml"
USERPARAMETER_FILE: Final = "userparameter_pmta.conf"
TEMPLATE_NAME: Final = "PowerMTA by SNMP"
EXPORT_VERSION: Final = "6.0"
EXPORT_DATE: Final = "2026-11-25T00:00:00Z"
"""Fixed so that regenerating gives the same file (the MIB's LAST-UPDATED day)."""
GROUP_NAME: Final = "Templates/Applications"
GROUP_UUID: Final = "a571c0d144b14fd4a87a9d9b2aa9fcd6"
"""The uuid Zabbix's own templates give "Templates/Applications"."""
PLUGIN_TIMEOUT: Final = "2.5"
"""-t of the plugins under the agent: below zabbix_agentd's default Timeout=3."""

Yaml = Mapping[str, "YamlValue"]
YamlValue = str | Sequence["Yaml | str"] | Yaml

TRUTH_VALUE_MAP: Final = "SNMPv2-TC::TruthValue"
MODE_VALUE_MAP: Final = "PMTA-SNMP-MIB::PmtaDeliveryMode"
VALUE_MAPS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    TRUTH_VALUE_MAP: (("1", "true"), ("2", "false")),
    MODE_VALUE_MAP: (("1", "normal"), ("2", "backoff"), ("3", "unknown")),
}

MACROS: Final[tuple[tuple[str, str, str], ...]] = (
    ("{$PMTA.QUEUE.WARN}", "50000", "Queued recipients (smtp) above which to warn."),
    ("{$PMTA.QUEUE.CRIT}", "100000", "Queued recipients (smtp) above which it is critical."),
    (
        "{$PMTA.DOMAIN.RCPT.WARN}",
        "50000",
        'Recipients queued to one domain above which to warn; per domain with context, '
        'e.g. {$PMTA.DOMAIN.RCPT.WARN:"gmail.com"}.',
    ),
    (
        "{$PMTA.DATA.AGE.MAX}",
        "300",
        "Seconds since pmta-snmp last reached the PowerMTA API above which the data is stale "
        "(a few poll intervals).",
    ),
    ("{$PMTA.NODATA.TIMEOUT}", "10m", "No SNMP answer from the pmta-snmp agent for this long."),
    ("{$PMTA.LICENSE.DAYS.WARN}", "30", "License days left below which to warn."),
    ("{$PMTA.LICENSE.DAYS.CRIT}", "7", "License days left below which it is critical."),
    (
        "{$PMTA.LICENSE.NODATA.TIMEOUT}",
        "3h",
        "No license days left from the agent for this long (the item is polled hourly).",
    ),
    ("{$PMTA.LLD.VMTA.MATCHES}", ".*", "Discover VirtualMTAs whose name matches."),
    ("{$PMTA.LLD.VMTA.NOT_MATCHES}", "CHANGE_IF_NEEDED", "Skip VirtualMTAs whose name matches."),
    ("{$PMTA.LLD.DOMAIN.MATCHES}", ".*", "Discover destination domains whose name matches."),
    ("{$PMTA.LLD.DOMAIN.NOT_MATCHES}", "CHANGE_IF_NEEDED", "Skip domains whose name matches."),
    ("{$PMTA.LLD.QUEUE.MATCHES}", ".*", "Discover queues (domain/vmta) whose name matches."),
    ("{$PMTA.LLD.QUEUE.NOT_MATCHES}", "CHANGE_IF_NEEDED", "Skip queues whose name matches."),
    ("{$PMTA.LLD.PROVIDER.MATCHES}", ".*", "Discover mailbox providers whose id matches."),
    ("{$PMTA.LLD.PROVIDER.NOT_MATCHES}", "CHANGE_IF_NEEDED",
     "Skip mailbox providers whose id matches."),
    ("{$PMTA.LLD.SOURCEIP.MATCHES}", ".*", "Discover source IPs matching (the text form)."),
    ("{$PMTA.LLD.SOURCEIP.NOT_MATCHES}", "CHANGE_IF_NEEDED", "Skip source IPs matching."),
    ("{$PMTA.ACCT.LAG.MAX}", "900",
     "Seconds the accounting records read may be behind the files before it is a problem."),
    ("{$PMTA.ACCT.READ.AGE.MAX}", "600",
     "Seconds without a completed read of the accounting files before it is a problem."),
    (
        "{$PMTA.PROVIDER.MIN_RECIPIENTS}",
        "100",
        "Recipients a provider needs in the window before its rate triggers fire: a rate over "
        "a handful of recipients is noise.",
    ),
    (
        "{$PMTA.PROVIDER.HARD_BOUNCE.WARN}",
        "3",
        'Hard bounce rate (%) over the last hour above which to warn; per provider with '
        'context, e.g. {$PMTA.PROVIDER.HARD_BOUNCE.WARN:"gmail"}.',
    ),
    (
        "{$PMTA.PROVIDER.HARD_BOUNCE.CRIT}",
        "8",
        "Hard bounce rate (%) over the last hour above which it is critical.",
    ),
    (
        "{$PMTA.PROVIDER.COMPLAINT.WARN}",
        "0.1",
        "Complaint rate (%) over the last 24 hours above which to warn (mailbox providers ask "
        "bulk senders to stay below 0.1 %).",
    ),
    (
        "{$PMTA.PROVIDER.COMPLAINT.CRIT}",
        "0.3",
        "Complaint rate (%) over the last 24 hours above which it is critical (Gmail and Yahoo "
        "act at 0.3 %).",
    ),
    (
        "{$PMTA.SOURCEIP.BLOCKLIST.MAX}",
        "0",
        'Blocklist rejections of one source IP in the last hour that are still fine; per '
        'address with context, e.g. {$PMTA.SOURCEIP.BLOCKLIST.MAX:"192.0.2.10"}.',
    ),
)


def stable_uuid(path: str) -> str:
    """A version-4 shaped UUID (32 hex) derived from `path`: stable across generations."""
    digest = hashlib.sha256(f"pmta-snmp/zabbix/{path}".encode()).digest()[:16]
    return uuid.UUID(bytes=digest, version=4).hex


# --- template model ----------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """A trigger on one item; `{item}` in `expression` is `/<template>/<key>`."""

    name: str
    expression: str
    priority: str
    description: str = ""
    depends_on: str | None = None
    """Name of a trigger this one depends on (warning under critical): of the same item, or
    for a scalar item's trigger, of any scalar item."""


@dataclass(frozen=True)
class Item:
    """An SNMP item on one MIB object (a scalar, or a column in a discovery rule)."""

    obj: str
    key: str
    name: str
    value_type: str
    units: str = ""
    delay: str = "1m"
    history: str = "7d"
    description: str = ""
    valuemap: str | None = None
    preprocessing: tuple[tuple[str, str], ...] = ()
    component: str = "pmta"
    triggers: tuple[Trigger, ...] = ()


@dataclass(frozen=True)
class Discovery:
    """An SNMP low-level discovery rule over one table's name column."""

    name: str
    key: str
    macro: str
    name_column: str
    filter_prefix: str
    description: str
    prototypes: tuple[Item, ...] = field(default=())


_CHANGE: Final = ("CHANGE_PER_SECOND", "")
NODATA_TRIGGER: Final = "pmta-snmp: no SNMP data for {$PMTA.NODATA.TIMEOUT}"
"""The agent does not answer at all: the triggers about missing data depend on it."""
_KB: Final = ("MULTIPLIER", "1024")
_HEARTBEAT: Final = ("DISCARD_UNCHANGED_HEARTBEAT", "1d")

LIST_HELP: Final = (
    "PowerMTA's web pages list only their top http-default-max-items rows (10 by default). "
    "README, \"Complete lists of queues, domains and VirtualMTAs\", gives the two ways to full "
    "lists: an API key for the agent (api_key_file in [pmta]; it then lists every row through "
    "POST /command, up to max_list_items), or a larger http-default-max-items in PowerMTA's "
    "config; README, \"Monitor from Zabbix\", says what this template watches."
)
"""The part of each list-completeness description that says what to do."""

_LIST_TABLES: Final = (
    ("Vmta", "vmta", "VirtualMTA", "VirtualMTAs", "pmtaVmtaTable"),
    ("Domain", "domain", "domain", "domains", "pmtaDomainTable"),
    ("Queue", "queue", "queue", "queues", "pmtaQueueTable"),
)
"""(MIB name part, key part, one row, rows, table) of the tables whose completeness the
agent publishes (pmta<Name>RowsListed, pmta<Name>RowsKnown)."""


def list_trigger_name(one: str) -> str:
    """The name of the trigger on a table that lists fewer rows than PowerMTA has."""
    return (f"PowerMTA: per-{one} table incomplete: {{ITEM.LASTVALUE1}} of "
            f"{{ITEM.LASTVALUE2}} rows listed")


def _list_items(name: str, key_part: str, one: str, rows: str, table: str) -> tuple[Item, Item]:
    """Rows listed and rows known of one table, with the trigger on a table that lacks rows:
    its per-item discovery, items and triggers miss those rows without a word otherwise."""
    listed = f"pmta.{key_part}.rows.listed"
    no_count = (" No instance (the item unsupported) while PowerMTA gives no count, as the "
                "/vmtas page does not." if key_part == "vmta" else
                " From the pages (no API key): a lower bound, the domains with mail queued."
                if key_part == "queue" else "")
    return (
        Item(f"pmta{name}RowsListed", listed, f"PowerMTA: {rows} listed (table rows)", "UNSIGNED",
             component="lists",
             description=f"Rows PowerMTA listed at the last poll ({table} and those omitted "
             f"from it)."),
        Item(f"pmta{name}RowsKnown", f"pmta.{key_part}.rows.known",
             f"PowerMTA: {rows} known (PowerMTA's count)", "UNSIGNED", component="lists",
             description=f"Rows PowerMTA has by its own count.{no_count}",
             triggers=(Trigger(
                 list_trigger_name(one),
                 f"last(/{TEMPLATE_NAME}/{listed})<last({{item}})", "WARNING",
                 f"{table} lists fewer {rows} than PowerMTA has: the missing ones get no "
                 "discovered items or triggers, so mail piling up there, a paused queue or "
                 "its errors go unseen. " + LIST_HELP),),
             ),
    )


SCALAR_ITEMS: Final[tuple[Item, ...]] = (
    Item("pmtaProductVersion", "pmta.version", "PowerMTA: version", "CHAR", delay="1h",
         preprocessing=(_HEARTBEAT,), component="system",
         description="Version PowerMTA reports in /status."),
    Item("pmtaFullHostName", "pmta.hostname", "PowerMTA: host name", "CHAR", delay="1h",
         preprocessing=(_HEARTBEAT,), component="system"),
    Item("pmtaRunStatus", "pmta.status", "PowerMTA: run status", "CHAR", delay="5m",
         preprocessing=(_HEARTBEAT,), component="system",
         description="PowerMTA's own status word (running, ...)."),
    Item("pmtaShuttingDown", "pmta.shutting_down", "PowerMTA: shutting down", "UNSIGNED",
         valuemap=TRUTH_VALUE_MAP, component="system",
         triggers=(Trigger("PowerMTA: shutting down", "last({item})=1", "WARNING",
                           "PowerMTA accepts no new mail while it shuts down. Expected during "
                           "a planned restart, an incident otherwise."),)),
    Item("pmtaUptime", "pmta.uptime", "PowerMTA: uptime", "UNSIGNED", units="uptime",
         component="system",
         triggers=(Trigger("PowerMTA: restarted (uptime below 10 minutes)", "last({item})<600",
                           "INFO", "PowerMTA started less than 10 minutes ago."),)),
    Item("pmtaTotalMessagesOut", "pmta.out.messages.rate", "PowerMTA: messages delivered per "
         "second", "FLOAT", units="!msg/s", preprocessing=(_CHANGE,), component="traffic",
         description="Rate of pmtaTotalMessagesOut (Counter64 since PowerMTA started)."),
    Item("pmtaTotalRecipientsOut", "pmta.out.recipients.rate", "PowerMTA: recipients delivered "
         "per second", "FLOAT", units="!rcpt/s", preprocessing=(_CHANGE,), component="traffic"),
    Item("pmtaTotalKBytesOut", "pmta.out.bytes.rate", "PowerMTA: bytes delivered per second",
         "FLOAT", units="Bps", preprocessing=(_CHANGE, _KB), component="traffic"),
    Item("pmtaTotalMessagesIn", "pmta.in.messages.rate", "PowerMTA: messages received per "
         "second", "FLOAT", units="!msg/s", preprocessing=(_CHANGE,), component="traffic"),
    Item("pmtaTotalRecipientsIn", "pmta.in.recipients.rate", "PowerMTA: recipients received "
         "per second", "FLOAT", units="!rcpt/s", preprocessing=(_CHANGE,), component="traffic"),
    Item("pmtaTotalBouncesProcessed", "pmta.bounces.processed.rate", "PowerMTA: bounces "
         "processed per second", "FLOAT", units="!/s", preprocessing=(_CHANGE,),
         component="traffic"),
    Item("pmtaLastHourMessagesOut", "pmta.out.messages.last_hour", "PowerMTA: messages "
         "delivered in the last hour", "UNSIGNED", units="!msg", component="traffic"),
    Item("pmtaOutMessageRate", "pmta.out.messages.last_minute_rate", "PowerMTA: messages "
         "delivered per second (last minute)", "FLOAT", units="!msg/s",
         preprocessing=(("MULTIPLIER", "0.001"),), component="traffic",
         description="pmtaOutMessageRate is messages per 1000 seconds over the last minute."),
    Item("pmtaActiveConnIn", "pmta.conn.in", "PowerMTA: inbound SMTP connections", "UNSIGNED",
         component="connections"),
    Item("pmtaActiveConnOut", "pmta.conn.out", "PowerMTA: outbound SMTP connections",
         "UNSIGNED", component="connections"),
    Item("pmtaMaxConnOut", "pmta.conn.out.max", "PowerMTA: outbound SMTP connections allowed",
         "UNSIGNED", delay="1h", component="connections"),
    Item("pmtaSmtpQueueRcpt", "pmta.queue.rcpt", "PowerMTA: queued recipients (smtp)",
         "UNSIGNED", units="!rcpt", component="queue",
         description="Queue depth: recipients in the smtp queue (status/queue/smtp/rcp).",
         triggers=(
             Trigger("PowerMTA: more than {$PMTA.QUEUE.CRIT} recipients queued",
                     "last({item})>{$PMTA.QUEUE.CRIT}", "HIGH",
                     "The smtp queue is very deep: deliveries are failing or too slow."),
             Trigger("PowerMTA: more than {$PMTA.QUEUE.WARN} recipients queued",
                     "last({item})>{$PMTA.QUEUE.WARN}", "WARNING",
                     "The smtp queue is growing.",
                     depends_on="PowerMTA: more than {$PMTA.QUEUE.CRIT} recipients queued"),
         )),
    Item("pmtaSmtpQueueDomains", "pmta.queue.domains", "PowerMTA: domains with queued mail",
         "UNSIGNED", component="queue"),
    Item("pmtaSmtpQueueKBytes", "pmta.queue.bytes", "PowerMTA: queued bytes (smtp)",
         "UNSIGNED", units="B", preprocessing=(_KB,), component="queue"),
    Item("pmtaSpoolInitialization", "pmta.spool.init", "PowerMTA: spool initialisation",
         "UNSIGNED", units="%", component="spool"),
    Item("pmtaSpoolFilesInUse", "pmta.spool.files", "PowerMTA: spool files in use",
         "UNSIGNED", component="spool"),
    Item("pmtaLicenseDaysLeft", "pmta.license.days", "PowerMTA: license days left", "FLOAT",
         units="!days", delay="1h", component="license",
         description="Days until the license expires; 2147483647 when it never expires. No "
         "value (noSuchInstance, the item unsupported) when the agent could not read the "
         "license.",
         triggers=(
             Trigger("PowerMTA: license expires in less than {$PMTA.LICENSE.DAYS.CRIT} days",
                     "last({item})<{$PMTA.LICENSE.DAYS.CRIT}", "HIGH",
                     "PowerMTA stops delivering when its license expires: renew now."),
             Trigger("PowerMTA: license expires in less than {$PMTA.LICENSE.DAYS.WARN} days",
                     "last({item})<{$PMTA.LICENSE.DAYS.WARN}", "WARNING",
                     "Renew the PowerMTA license.",
                     depends_on="PowerMTA: license expires in less than "
                     "{$PMTA.LICENSE.DAYS.CRIT} days"),
             Trigger("PowerMTA: no license data for {$PMTA.LICENSE.NODATA.TIMEOUT}",
                     "nodata({item},{$PMTA.LICENSE.NODATA.TIMEOUT})=1", "WARNING",
                     "pmtaLicenseDaysLeft has no instance (noSuchInstance): the agent could "
                     "not read the license, so an expiring license would go unnoticed (and "
                     "check_snmp would say OK). Give the agent an API key allowed to run "
                     "`show license` (api_key_file in the [pmta] section of its configuration); "
                     "the agent's log says why the license could not be read.",
                     depends_on=NODATA_TRIGGER),
         )),
    Item("pmtaLicenseExpires", "pmta.license.expires", "PowerMTA: license expiry date", "CHAR",
         delay="1h", preprocessing=(_HEARTBEAT,), component="license"),
    Item("pmtaVmtaCount", "pmta.vmtas", "PowerMTA: VirtualMTAs with mail", "UNSIGNED",
         component="queue"),
    Item("pmtaDomainCount", "pmta.domains", "PowerMTA: destination domains", "UNSIGNED",
         component="queue"),
    Item("pmtaQueueCount", "pmta.queues", "PowerMTA: queues", "UNSIGNED", component="queue"),
    *(item for table in _LIST_TABLES for item in _list_items(*table)),
    Item("pmtaAgentVersion", "pmta.agent.version", "pmta-snmp: agent version", "CHAR",
         delay="1h", preprocessing=(_HEARTBEAT,), component="agent"),
    Item("pmtaAgentApiReachable", "pmta.agent.api_reachable", "pmta-snmp: PowerMTA API "
         "reachable", "UNSIGNED", valuemap=TRUTH_VALUE_MAP, component="agent",
         triggers=(
             Trigger("pmta-snmp: PowerMTA API unreachable", "last({item})=2", "HIGH",
                     "The agent's last poll of the PowerMTA HTTP API failed; see "
                     "pmta.agent.last_error. The SNMP data is the last good poll."),
             Trigger(NODATA_TRIGGER,
                     "nodata({item},{$PMTA.NODATA.TIMEOUT})=1", "AVERAGE",
                     "The pmta-snmp agent (AgentX subagent or standalone) does not answer."),
         )),
    Item("pmtaAgentDataAge", "pmta.agent.data_age", "pmta-snmp: age of the PowerMTA data",
         "UNSIGNED", units="s", component="agent",
         triggers=(Trigger("pmta-snmp: PowerMTA data older than {$PMTA.DATA.AGE.MAX}s",
                           "last({item})>{$PMTA.DATA.AGE.MAX}", "AVERAGE",
                           "The agent has not reached the PowerMTA API for a while."),)),
    Item("pmtaAgentPollFailures", "pmta.agent.poll_failures", "pmta-snmp: failed polls",
         "UNSIGNED", component="agent", description="Failed polls since the agent started."),
    Item("pmtaAgentConsecutiveFailures", "pmta.agent.consecutive_failures", "pmta-snmp: "
         "failed polls in a row", "UNSIGNED", component="agent"),
    Item("pmtaAgentLastError", "pmta.agent.last_error", "pmta-snmp: last poll error", "CHAR",
         preprocessing=(("DISCARD_UNCHANGED_HEARTBEAT", "1h"),), component="agent"),
    Item("pmtaAcctRecordsRead", "pmta.acct.records.rate", "pmta-snmp: accounting records read "
         "per second", "FLOAT", units="!records/s", preprocessing=(_CHANGE,),
         component="deliverability",
         description="Unsupported (no instance) when the agent follows no accounting files "
         "(--acct-file, [acct] files)."),
    Item("pmtaAcctLag", "pmta.acct.lag", "pmta-snmp: accounting read lag", "UNSIGNED",
         units="s", component="deliverability",
         triggers=(Trigger("pmta-snmp: accounting records read more than {$PMTA.ACCT.LAG.MAX}s "
                           "behind", "min({item},15m)>{$PMTA.ACCT.LAG.MAX}", "WARNING",
                           "The agent reads the accounting files more slowly than PowerMTA "
                           "writes them (or is still reading back its first day): the "
                           "deliverability figures are behind."),)),
    Item("pmtaAcctReadAge", "pmta.acct.read_age", "pmta-snmp: age of the last accounting "
         "read", "UNSIGNED", units="s", component="deliverability",
         triggers=(Trigger("pmta-snmp: no accounting read completed for {$PMTA.ACCT.READ.AGE.MAX}s",
                           "min({item},5m)>{$PMTA.ACCT.READ.AGE.MAX}", "WARNING",
                           "The agent's accounting reader stopped (files made unreadable, a lost "
                           "mount, a stuck worker): the deliverability figures are frozen while "
                           "the lag keeps the value of the last read. pmtaAcctWarnings and the "
                           "agent's log say why."),)),
    Item("pmtaAcctReadErrors", "pmta.acct.read_errors", "pmta-snmp: accounting lines not "
         "readable", "UNSIGNED", preprocessing=(("SIMPLE_CHANGE", ""),),
         component="deliverability",
         description="Malformed accounting lines since the last check (skipped, never counted)."),
    Item("pmtaAcctWarnings", "pmta.acct.warnings", "pmta-snmp: accounting warnings", "CHAR",
         preprocessing=(("DISCARD_UNCHANGED_HEARTBEAT", "1h"),), component="deliverability"),
)

_VMTA_KEY = '["{#VMTA}"]'
_DOMAIN_KEY = '["{#DOMAIN}"]'
_QUEUE_KEY = '["{#QUEUE}"]'
_PROVIDER_KEY = '["{#PROVIDER}"]'
_SOURCEIP_KEY = '["{#SOURCEIP}"]'
_PERCENT = ("MULTIPLIER", "0.01")
"""The MIB's rates are in hundredths of a percent."""


def _outcome_items(what: str, key: str, macro: str, label: str, component: str,
                   hard_bounce_triggers: tuple[Trigger, ...] = ()) -> tuple[Item, ...]:
    """The item prototypes both outcome tables share: volumes per second and last-hour
    rates (`what` is Provider or SourceIp in the column names)."""
    k = key.split(".")[1]
    rate = (_CHANGE,)
    return (
        Item(f"pmta{what}Delivered", f"pmta.{k}.delivered.rate[\"{macro}\"]",
             f"{label} {macro}: delivered per second", "FLOAT", units="!rcpt/s",
             preprocessing=rate, component=component),
        Item(f"pmta{what}HardBounces", f"pmta.{k}.hard_bounces.rate[\"{macro}\"]",
             f"{label} {macro}: hard bounces per second", "FLOAT", units="!rcpt/s",
             preprocessing=rate, component=component),
        Item(f"pmta{what}BlockBounces", f"pmta.{k}.block_bounces.rate[\"{macro}\"]",
             f"{label} {macro}: block bounces per second", "FLOAT", units="!rcpt/s",
             preprocessing=rate, component=component),
        Item(f"pmta{what}Deferrals", f"pmta.{k}.deferrals.rate[\"{macro}\"]",
             f"{label} {macro}: deferrals per second", "FLOAT", units="!/s",
             preprocessing=rate, component=component),
        Item(f"pmta{what}LastHourRecipients", f"pmta.{k}.last_hour.recipients[\"{macro}\"]",
             f"{label} {macro}: recipients ended in the last hour", "UNSIGNED",
             units="!rcpt", component=component,
             description="Delivered, bounced or expired in the last hour: the denominator of "
             "the bounce rates."),
        Item(f"pmta{what}LastHourHardBounceRate",
             f"pmta.{k}.last_hour.hard_bounce_rate[\"{macro}\"]",
             f"{label} {macro}: hard bounce rate (last hour)", "FLOAT", units="%",
             preprocessing=(_PERCENT,), component=component, triggers=hard_bounce_triggers),
        Item(f"pmta{what}LastHourBlockRate", f"pmta.{k}.last_hour.block_rate[\"{macro}\"]",
             f"{label} {macro}: block rate (last hour)", "FLOAT", units="%",
             preprocessing=(_PERCENT,), component=component),
        Item(f"pmta{what}LastHourDeferralRate",
             f"pmta.{k}.last_hour.deferral_rate[\"{macro}\"]",
             f"{label} {macro}: deferral rate (last hour)", "FLOAT", units="%",
             preprocessing=(_PERCENT,), component=component),
    )


def _provider_items() -> tuple[Item, ...]:
    ref = f"/{TEMPLATE_NAME}/pmta.provider"
    enough_hour = (f"last({ref}.last_hour.recipients{_PROVIDER_KEY})>="
                   '{$PMTA.PROVIDER.MIN_RECIPIENTS:"{#PROVIDER}"}')
    enough_day = (f"last({ref}.last_day.delivered{_PROVIDER_KEY})>="
                  '{$PMTA.PROVIDER.MIN_RECIPIENTS:"{#PROVIDER}"}')
    hard = '{$PMTA.PROVIDER.HARD_BOUNCE.%s:"{#PROVIDER}"}'
    complaint = '{$PMTA.PROVIDER.COMPLAINT.%s:"{#PROVIDER}"}'
    hard_triggers = (
        Trigger(f"Provider {{#PROVIDER}}: hard bounce rate above {hard % 'CRIT'}%",
                f"last({{item}})>{hard % 'CRIT'} and {enough_hour}", "HIGH",
                "Many recipients at this provider do not exist: a list is old or "
                "bought. Stop the campaign, clean the list; providers block senders "
                "whose hard bounces stay high."),
        Trigger(f"Provider {{#PROVIDER}}: hard bounce rate above {hard % 'WARN'}%",
                f"last({{item}})>{hard % 'WARN'} and {enough_hour}", "WARNING",
                "Hard bounces are rising at this provider: check which list or campaign "
                "sends to addresses that do not exist.",
                depends_on=f"Provider {{#PROVIDER}}: hard bounce rate above "
                f"{hard % 'CRIT'}%"),
    )
    return (
        *_outcome_items("Provider", "pmta.provider", "{#PROVIDER}", "Provider", "provider",
                        hard_triggers),
        Item("pmtaProviderLastDayDelivered", f"pmta.provider.last_day.delivered{_PROVIDER_KEY}",
             "Provider {#PROVIDER}: delivered in the last 24 hours", "UNSIGNED", units="!rcpt",
             component="provider",
             description="The denominator of the 24-hour complaint rate."),
        Item("pmtaProviderComplaints", f"pmta.provider.complaints{_PROVIDER_KEY}",
             "Provider {#PROVIDER}: complaints", "UNSIGNED", preprocessing=(("SIMPLE_CHANGE",
                                                                            ""),),
             component="provider",
             description="Spam complaints (feedback-loop reports) since the last check."),
        Item("pmtaProviderLastDayComplaintRate",
             f"pmta.provider.last_day.complaint_rate{_PROVIDER_KEY}",
             "Provider {#PROVIDER}: complaint rate (last 24 hours)", "FLOAT", units="%",
             preprocessing=(_PERCENT,), component="provider",
             triggers=(
                 Trigger(f"Provider {{#PROVIDER}}: complaint rate above {complaint % 'CRIT'}%",
                         f"last({{item}})>{complaint % 'CRIT'} and {enough_day}", "HIGH",
                         "Recipients at this provider report the mail as spam at a rate the "
                         "provider acts on (blocking, spam folder). Stop the campaigns that "
                         "cause it; check consent and unsubscribe handling."),
                 Trigger(f"Provider {{#PROVIDER}}: complaint rate above {complaint % 'WARN'}%",
                         f"last({{item}})>{complaint % 'WARN'} and {enough_day}", "WARNING",
                         "Complaints at this provider are above what bulk senders are asked "
                         "to stay under.",
                         depends_on=f"Provider {{#PROVIDER}}: complaint rate above "
                         f"{complaint % 'CRIT'}%"),
             )),
        Item("pmtaProviderBlocklistRejections",
             f"pmta.provider.blocklist_rejections{_PROVIDER_KEY}",
             "Provider {#PROVIDER}: blocklist rejections", "UNSIGNED",
             preprocessing=(("SIMPLE_CHANGE", ""),), component="provider",
             description="Rejections naming a blocklist since the last check; the source IP "
             "discovery says which address is listed."),
    )


def _source_ip_items() -> tuple[Item, ...]:
    return (
        *_outcome_items("SourceIp", "pmta.sourceip", "{#SOURCEIP}", "Source IP", "source_ip"),
        Item("pmtaSourceIpLastHourComplaintRate",
             f"pmta.sourceip.last_hour.complaint_rate{_SOURCEIP_KEY}",
             "Source IP {#SOURCEIP}: complaint rate (last hour)", "FLOAT", units="%",
             preprocessing=(_PERCENT,), component="source_ip"),
        Item("pmtaSourceIpLastHourBlocklistRejections",
             f"pmta.sourceip.last_hour.blocklist_rejections{_SOURCEIP_KEY}",
             "Source IP {#SOURCEIP}: blocklist rejections in the last hour", "UNSIGNED",
             component="source_ip",
             triggers=(Trigger(
                 "Source IP {#SOURCEIP}: listed on a blocklist",
                 'last({item})>{$PMTA.SOURCEIP.BLOCKLIST.MAX:"{#SOURCEIP}"}', "HIGH",
                 "Receivers refuse mail from this address because a blocklist lists it "
                 "(pmta.sourceip.top_blocklist says which). Take the address out of its "
                 "VirtualMTA pools, find the cause (complaints, spam traps, a compromised "
                 "sender) and ask the list for delisting."),)),
        Item("pmtaSourceIpTopBlocklist", f"pmta.sourceip.top_blocklist{_SOURCEIP_KEY}",
             "Source IP {#SOURCEIP}: blocklist named most", "CHAR",
             preprocessing=(("DISCARD_UNCHANGED_HEARTBEAT", "1h"),), component="source_ip"),
    )


DISCOVERIES: Final[tuple[Discovery, ...]] = (
    Discovery(
        "VirtualMTA discovery", "pmta.vmta.discovery", "{#VMTA}", "pmtaVmtaDisplayName",
        "VMTA", "VirtualMTAs with mail queued (pmtaVmtaTable).",
        (
            Item("pmtaVmtaRcpt", f"pmta.vmta.rcpt{_VMTA_KEY}", "VMTA {#VMTA}: queued recipients",
                 "UNSIGNED", units="!rcpt", component="vmta"),
            Item("pmtaVmtaKBytes", f"pmta.vmta.bytes{_VMTA_KEY}", "VMTA {#VMTA}: queued bytes",
                 "UNSIGNED", units="B", preprocessing=(_KB,), component="vmta"),
            Item("pmtaVmtaConnections", f"pmta.vmta.conn{_VMTA_KEY}", "VMTA {#VMTA}: "
                 "connections", "UNSIGNED", component="vmta"),
            Item("pmtaVmtaDomains", f"pmta.vmta.domains{_VMTA_KEY}", "VMTA {#VMTA}: domains",
                 "UNSIGNED", component="vmta"),
        ),
    ),
    Discovery(
        "Domain discovery", "pmta.domain.discovery", "{#DOMAIN}", "pmtaDomainDisplayName",
        "DOMAIN", "Destination domains with mail queued (pmtaDomainTable). Large "
        "installations: narrow it with {$PMTA.LLD.DOMAIN.MATCHES}.",
        (
            Item("pmtaDomainRcpt", f"pmta.domain.rcpt{_DOMAIN_KEY}", "Domain {#DOMAIN}: queued "
                 "recipients", "UNSIGNED", units="!rcpt", component="domain",
                 triggers=(Trigger(
                     'Domain {#DOMAIN}: more than {$PMTA.DOMAIN.RCPT.WARN:"{#DOMAIN}"} '
                     "recipients queued",
                     'last({item})>{$PMTA.DOMAIN.RCPT.WARN:"{#DOMAIN}"}', "WARNING",
                     "Mail to this domain is piling up; see its last error."),)),
            Item("pmtaDomainKBytes", f"pmta.domain.bytes{_DOMAIN_KEY}", "Domain {#DOMAIN}: "
                 "queued bytes", "UNSIGNED", units="B", preprocessing=(_KB,),
                 component="domain"),
            Item("pmtaDomainConnections", f"pmta.domain.conn{_DOMAIN_KEY}", "Domain "
                 "{#DOMAIN}: connections", "UNSIGNED", component="domain"),
            Item("pmtaDomainLastError", f"pmta.domain.last_error{_DOMAIN_KEY}", "Domain "
                 "{#DOMAIN}: last error", "CHAR", preprocessing=(("DISCARD_UNCHANGED_HEARTBEAT",
                                                                   "1h"),),
                 component="domain"),
        ),
    ),
    Discovery(
        "Queue discovery", "pmta.queue.discovery", "{#QUEUE}", "pmtaQueueName", "QUEUE",
        "Queues (domain/vmta) with mail (pmtaQueueTable).",
        (
            Item("pmtaQueueRcpt", f"pmta.queue.rcpt{_QUEUE_KEY}", "Queue {#QUEUE}: recipients",
                 "UNSIGNED", units="!rcpt", component="queue"),
            Item("pmtaQueueKBytes", f"pmta.queue.bytes{_QUEUE_KEY}", "Queue {#QUEUE}: bytes",
                 "UNSIGNED", units="B", preprocessing=(_KB,), component="queue"),
            Item("pmtaQueueConnections", f"pmta.queue.conn{_QUEUE_KEY}", "Queue {#QUEUE}: "
                 "connections", "UNSIGNED", component="queue"),
            Item("pmtaQueuePaused", f"pmta.queue.paused{_QUEUE_KEY}", "Queue {#QUEUE}: paused",
                 "UNSIGNED", valuemap=TRUTH_VALUE_MAP, component="queue",
                 triggers=(Trigger("Queue {#QUEUE}: paused", "last({item})=1", "WARNING",
                                   "An operator paused this queue (pmta pause queue); nothing "
                                   "is delivered from it until it is resumed."),)),
            Item("pmtaQueueMode", f"pmta.queue.mode{_QUEUE_KEY}", "Queue {#QUEUE}: delivery "
                 "mode", "UNSIGNED", valuemap=MODE_VALUE_MAP, component="queue",
                 triggers=(Trigger("Queue {#QUEUE}: in backoff", "last({item})=2", "INFO",
                                   "PowerMTA slowed delivery after deferrals; see the queue's "
                                   "last error."),)),
            Item("pmtaQueueLastError", f"pmta.queue.last_error{_QUEUE_KEY}", "Queue {#QUEUE}: "
                 "last error", "CHAR", preprocessing=(("DISCARD_UNCHANGED_HEARTBEAT", "1h"),),
                 component="queue"),
        ),
    ),
    Discovery(
        "Mailbox provider discovery", "pmta.provider.discovery", "{#PROVIDER}",
        "pmtaProviderDisplayName", "PROVIDER", "Deliverability outcomes per mailbox provider "
        "(pmtaProviderTable; needs the agent to follow the accounting files).",
        _provider_items(),
    ),
    Discovery(
        "Source IP discovery", "pmta.sourceip.discovery", "{#SOURCEIP}", "pmtaSourceIpName",
        "SOURCEIP", "Deliverability outcomes per source IP, IPv4 and IPv6 (pmtaSourceIpTable; "
        "needs the agent to follow the accounting files). '(other)' sums the addresses "
        "beyond the agent's cap.",
        _source_ip_items(),
    ),
)


def _dotted(oid: Sequence[int]) -> str:
    return ".".join(map(str, oid))


_KINDS: Final = {o.name: o.kind for o in OBJECTS}


def _object_oid(name: str, enterprise: int, kind: Kind) -> str:
    if _KINDS.get(name) is not kind:
        raise ValueError(f"{name} is not a {kind.value} of PMTA-SNMP-MIB")
    return _dotted(layout(enterprise).oid(name))


def _trigger(t: Trigger, key: str, path: str) -> dict[str, YamlValue]:
    item_ref = f"/{TEMPLATE_NAME}/{key}"
    doc: dict[str, YamlValue] = {
        "uuid": stable_uuid(f"{path}/trigger/{t.name}"),
        "expression": t.expression.replace("{item}", item_ref),
        "name": t.name,
        "priority": t.priority,
    }
    if t.description:
        doc["description"] = t.description
    return doc


def _triggers(item: Item, path: str, others: Sequence[Item] = ()) -> list[dict[str, YamlValue]]:
    """The triggers of `item`; a dependency names a trigger of `item` or of `others`."""
    by_name = {t.name: (t, i.key) for i in (item, *others) for t in i.triggers}
    out = []
    for t in item.triggers:
        doc = _trigger(t, item.key, path)
        if t.depends_on is not None:
            dep, key = by_name[t.depends_on]
            doc["dependencies"] = [
                {
                    "name": dep.name,
                    "expression": dep.expression.replace("{item}", f"/{TEMPLATE_NAME}/{key}"),
                }
            ]
        out.append(doc)
    return out


def _item(item: Item, oid: str, path: str) -> dict[str, YamlValue]:
    doc: dict[str, YamlValue] = {
        "uuid": stable_uuid(f"{path}/{item.key}"),
        "name": item.name,
        "type": "SNMP_AGENT",
        "snmp_oid": oid,
        "key": item.key,
        "delay": item.delay,
        "history": item.history,
        "value_type": item.value_type,
    }
    if item.value_type in ("CHAR", "TEXT", "LOG"):
        doc["trends"] = "0"
    if item.units:
        doc["units"] = item.units
    description = f"PMTA-SNMP-MIB::{item.obj}." + (f" {item.description}" if item.description
                                                   else "")
    doc["description"] = description
    if item.valuemap:
        doc["valuemap"] = {"name": item.valuemap}
    if item.preprocessing:
        doc["preprocessing"] = [
            {"type": kind, "parameters": [param]} for kind, param in item.preprocessing
        ]
    doc["tags"] = [{"tag": "component", "value": item.component}]
    return doc


def _discovery(d: Discovery, enterprise: int) -> dict[str, YamlValue]:
    path = f"drule/{d.key}"
    name_oid = _object_oid(d.name_column, enterprise, Kind.COLUMN)
    prototypes: list[dict[str, YamlValue]] = []
    trigger_prototypes: list[dict[str, YamlValue]] = []
    for proto in d.prototypes:
        oid = _object_oid(proto.obj, enterprise, Kind.COLUMN) + ".{#SNMPINDEX}"
        prototypes.append(_item(proto, oid, path))
        trigger_prototypes.extend(_triggers(proto, f"{path}/{proto.key}"))
    doc: dict[str, YamlValue] = {
        "uuid": stable_uuid(path),
        "name": d.name,
        "type": "SNMP_AGENT",
        "snmp_oid": f"discovery[{d.macro},{name_oid}]",
        "key": d.key,
        "delay": "1h",
        "filter": {
            "evaltype": "AND",
            "conditions": [
                {
                    "macro": d.macro,
                    "value": f"{{$PMTA.LLD.{d.filter_prefix}.MATCHES}}",
                    "formulaid": "A",
                },
                {
                    "macro": d.macro,
                    "value": f"{{$PMTA.LLD.{d.filter_prefix}.NOT_MATCHES}}",
                    "operator": "NOT_MATCHES_REGEX",
                    "formulaid": "B",
                },
            ],
        },
        "lifetime": "7d",
        "description": d.description,
        "item_prototypes": prototypes,
    }
    if trigger_prototypes:
        doc["trigger_prototypes"] = trigger_prototypes
    return doc


def template(enterprise: int = ENTERPRISE) -> dict[str, YamlValue]:
    """The whole export as plain data (what `render_template` writes as YAML)."""
    items: list[dict[str, YamlValue]] = []
    for item in SCALAR_ITEMS:
        oid = _object_oid(item.obj, enterprise, Kind.SCALAR) + ".0"
        doc = _item(item, oid, "item")
        triggers = _triggers(item, f"item/{item.key}", SCALAR_ITEMS)
        if triggers:
            doc["triggers"] = triggers
        items.append(doc)
    base = _dotted(layout(enterprise).base)
    tpl: dict[str, YamlValue] = {
        "uuid": stable_uuid("template"),
        "template": TEMPLATE_NAME,
        "name": TEMPLATE_NAME,
        "description": (
            "PowerMTA through pmta-snmp (AgentX subagent behind snmpd, or the standalone "
            f"agent) over SNMP v2c/v3: PMTA-SNMP-MIB under {base}. Import mibs/PMTA-SNMP-MIB.txt "
            "on the Zabbix server for names. Generated by `pmta-snmp gen zabbix`."
        ),
        "groups": [{"name": GROUP_NAME}],
        "items": items,
        "discovery_rules": [_discovery(d, enterprise) for d in DISCOVERIES],
        "tags": [{"tag": "class", "value": "application"}, {"tag": "target", "value": "powermta"}],
        "macros": [
            {"macro": macro, "value": value, "description": desc}
            for macro, value, desc in MACROS
        ],
        "valuemaps": [
            {
                "uuid": stable_uuid(f"valuemap/{name}"),
                "name": name,
                "mappings": [{"value": v, "newvalue": n} for v, n in mappings],
            }
            for name, mappings in VALUE_MAPS.items()
        ],
    }
    return {
        "zabbix_export": {
            "version": EXPORT_VERSION,
            "date": EXPORT_DATE,
            "groups": [{"uuid": GROUP_UUID, "name": GROUP_NAME}],
            "templates": [tpl],
        }
    }


# --- YAML --------------------------------------------------------------------------------


def _scalar(text: str) -> str:
    if "\n" in text or "\r" in text:
        raise ValueError(f"multi-line value not supported: {text!r}")
    return "'" + text.replace("'", "''") + "'"


def _emit(value: YamlValue, indent: int, out: list[str], first_prefix: str = "") -> None:
    pad = " " * indent
    if isinstance(value, Mapping):
        prefix = first_prefix
        for key, sub in value.items():
            lead = prefix or pad
            prefix = ""
            if isinstance(sub, str):
                out.append(f"{lead}{key}: {_scalar(sub)}")
            else:
                out.append(f"{lead}{key}:")
                _emit(sub, indent + 2, out)
        return
    if isinstance(value, str):
        raise TypeError("a bare scalar needs a key")
    for element in value:
        if isinstance(element, str):
            out.append(f"{pad}- {_scalar(element)}")
        else:
            _emit(element, indent + 2, out, first_prefix=pad + "- ")


def to_yaml(doc: Yaml) -> str:
    """Block-style YAML of nested mappings/lists of strings, every scalar single-quoted."""
    out: list[str] = []
    _emit(doc, 0, out)
    return "\n".join(out) + "\n"


def render_template(enterprise: int = ENTERPRISE) -> str:
    """The template file's text."""
    head = header_lines("#", "pmta_snmp.mib.layout", "pmta-snmp gen zabbix --out contrib/zabbix")
    return "\n".join(head) + "\n" + to_yaml(template(enterprise))


# --- UserParameters ----------------------------------------------------------------------


@dataclass(frozen=True)
class UserParameter:
    """One agent key: `key[*]` and the shell command the agent runs."""

    key: str
    params: tuple[str, ...]
    command: str
    comment: str


def _param_assignments(names: Sequence[str], first: int = 1) -> str:
    return " ".join(f"{var}='${i}';" for i, var in enumerate(names, start=first))


def _plugin_params(plugin: PluginSpec) -> list[tuple[str, str, str]]:
    """(shell variable, option, description) of the key parameters of `plugin`."""
    params = []
    if plugin.uses_api:
        params += [
            ("u", "--url", "PowerMTA URL"),
            ("c", "--ca-file", "CA file"),
            ("k", "--api-key-file", "API key file"),
        ]
    if plugin.option("acct_file") is not None:
        params.append(("a", "--acct-file", "accounting file"))
    if plugin.option("logfile") is not None:
        params.append(("l", "--logfile", "main log"))
    if plugin.option("plan") is not None:
        params.append(("p", "--plan", "warmup plan"))
    return params


def userparameter_keys(plugins: Sequence[PluginSpec] | None = None) -> list[UserParameter]:
    """Every key of the UserParameter file, in order."""
    plugins = load_plugins() if plugins is None else plugins
    keys: list[UserParameter] = []
    for plugin in plugins:
        params = _plugin_params(plugin)
        names = [p[0] for p in params]
        opts = " ".join(f'${{{var}:+{opt} "${var}"}}' for var, opt, _ in params)
        base = f"{plugin.prog} --output zabbix -t {PLUGIN_TIMEOUT}"
        described = ",".join(f"<{d}>" for _, _, d in params)
        if plugin.uses_api:
            keys.append(UserParameter(
                f"pmta.{plugin.module}", tuple(names),
                f"{_param_assignments(names)} exec {base} {opts}",
                f"pmta.{plugin.module}[{described}]: {plugin.description} The main value.",
            ))
        keys.append(UserParameter(
            f"pmta.{plugin.module}.json", tuple(names),
            f"{_param_assignments(names)} exec {base} --json {opts}",
            f"pmta.{plugin.module}.json[{described}]: status, summary and metrics as JSON "
            "(dependent items: $.status, $.metrics.<name>).",
        ))
        if plugin.discovery:
            all_names = ["kind", *names]
            keys.append(UserParameter(
                f"pmta.{plugin.module}.discovery", tuple(all_names),
                f"{_param_assignments(all_names)} exec {plugin.prog} -t {PLUGIN_TIMEOUT} "
                f'--discover "$kind" {opts}',
                f"pmta.{plugin.module}.discovery[<{'|'.join(plugin.discovery)}>"
                f"{',' if described else ''}{described}]: low-level discovery JSON"
                + (" (complete lists with an API key; without one the pages' top rows)."
                   if plugin.uses_api else "."),
            ))
    return keys


def render_userparameters(plugins: Sequence[PluginSpec] | None = None) -> str:
    """The UserParameter file's text."""
    head = header_lines("#", "the plugins' argparse options",
                        "pmta-snmp gen zabbix --out contrib/zabbix")
    out = [
        *head,
        "#",
        "# Zabbix agent keys for the check_pmta_* plugins (pmta-snmp), in --output zabbix mode:",
        "# a value, or ZBX_NOTSUPPORTED: <reason> (the item becomes unsupported with the reason).",
        "# Install: copy to /etc/zabbix/zabbix_agentd.d/ (Debian: zabbix_agentd.conf.d/), make",
        "# the plugins reachable on the agent's PATH (pip installs them in /usr/local/bin), give",
        "# the zabbix user a state directory (install -d -o zabbix /var/lib/pmta-snmp), restart",
        "# zabbix-agent. Test: zabbix_agentd -t 'pmta.queue[https://127.0.0.1:8080]'",
        "#",
        "# Every parameter may be empty (the plugin's default applies). The API key comes from a",
        "# file parameter or PMTA_API_KEY in the agent's environment, never from the key itself.",
        "# Parameters cannot hold \\ ' \" ` * ? [ ] { } ~ $ ! & ; ( ) < > | # @ (agent default",
        "# UnsafeUserParameters=0), which also keeps them out of the shell.",
        f"# The plugins stop after {PLUGIN_TIMEOUT} s (-t), inside the agent's default Timeout=3;",
        "# raise both together for slow APIs. The accounting and log plugins keep read positions",
        "# per file: poll each file with one item (the .json key) and use dependent items.",
        "",
    ]
    for up in userparameter_keys(plugins):
        out.append(f"# {up.comment}")
        out.append(f"UserParameter={up.key}[*],{up.command}")
        out.append("")
    return "\n".join(out)


def write(
    out_dir: Path,
    plugins: Sequence[PluginSpec] | None = None,
    enterprise: int = ENTERPRISE,
) -> list[Path]:
    """Write the template and the UserParameter file into `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        (TEMPLATE_FILE, render_template(enterprise)),
        (USERPARAMETER_FILE, render_userparameters(plugins)),
    ):
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
