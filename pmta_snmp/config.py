"""Agent configuration: a TOML file, overridden by PMTA_SNMP_<SECTION>_<KEY> environment variables.

Secrets (API key, SNMP community, SNMPv3 passphrases) are only ever read from files (or, for the
API key, PMTA_API_KEY), never from the command line or the TOML text itself.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pmta_snmp.argtypes import MAX_LIST_ITEMS

ENV_PREFIX = "PMTA_SNMP_"


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class ApiAccess:
    """How to talk to a PowerMTA's HTTP API once its URL is known: what `[pmta]` and each
    `[probe.modules.NAME]` share."""

    api_key_file: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    api_format: str = "auto"
    api_flavor: str = "real"
    timeout: float = 10.0
    max_page_mib: int = 64
    """Largest answer of one page, counted decoded (a compressed answer is expanded a step at a
    time): a larger one fails the poll."""
    max_poll_mib: int = 128
    """Largest total of one poll's answers (its pages are fetched at once), counted decoded."""
    max_list_items: int = 10_000
    """With an API key: `--maxitems` of `show queues|domains|vmtas` via POST /command, which
    list every queue, domain and VirtualMTA up to this many (the top ones by recipients
    beyond); 0 reads the web pages (PowerMTA's top `http-default-max-items`) even with a key."""


@dataclass(frozen=True)
class PmtaSection(ApiAccess):
    """How to reach PowerMTA."""

    url: str = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class PollSection:
    """When to poll."""

    interval: float = 60.0
    jitter: float = 0.1
    license_interval: float = 3600.0
    isolation: str = "process"
    """`process`: poll and build in a child process (requests never wait for a rebuild);
    `thread`: in a thread of the agent process (fewer processes, slower worst-case answers)."""
    worker_max_rss_mib: int = 1024
    """With `process` isolation: a poll worker whose resident memory is above this after a poll
    is replaced by a fresh one (carrying the last good data), so the memory goes back."""


@dataclass(frozen=True)
class AgentXSection:
    """The AgentX connection to the master snmpd."""

    socket: str = "/var/agentx/master"
    priority: int = 127
    timeout: int = 5
    ping_interval: float = 15.0


@dataclass(frozen=True)
class SnmpUser:
    """One SNMPv3 USM user (authPriv); keys come from files."""

    name: str
    auth_protocol: str = "sha256"
    auth_key_file: str = ""
    priv_protocol: str = "aes128"
    priv_key_file: str = ""


@dataclass(frozen=True)
class TrapTarget:
    """Where the standalone agent sends notifications (SNMPv2c traps)."""

    address: str = "udp:127.0.0.1:162"
    community_file: str | None = None


@dataclass(frozen=True)
class SnmpSection:
    """The standalone agent (no snmpd)."""

    listen: str = "udp:127.0.0.1:1161"
    community_file: str | None = None
    allow_public_community: bool = False
    users: tuple[SnmpUser, ...] = ()
    trap_targets: tuple[TrapTarget, ...] = ()
    engine_id: str | None = None
    """The SNMPv3 snmpEngineID in hex (RFC 3411, 5..32 octets); default: one generated once
    and kept in the agent's state directory (`pmta_snmp.engineid`)."""


@dataclass(frozen=True)
class Thresholds:
    """Notification thresholds (published read-only in the MIB's pmtaConfig group).

    Queue: raised once when `queue.smtp.rcp` > `queue_rcpt_raise`, cleared once when it is back
    at or below `queue_rcpt_clear`. API: raised after `api_failures_raise` failed polls in a row,
    cleared at the next good one. License: raised when days left <= `license_days_raise`,
    cleared when above `license_days_clear` (or never expiring). Blocklist (with accounting
    files followed): raised per source IP when its rejections naming a blocklist in the last
    hour reach `blocklist_raise`, cleared once it has none in the last hour.
    """

    queue_rcpt_raise: int = 100_000
    queue_rcpt_clear: int = 50_000
    api_failures_raise: int = 3
    license_days_raise: int = 30
    license_days_clear: int = 30
    blocklist_raise: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.queue_rcpt_clear <= self.queue_rcpt_raise <= 2**32 - 1:
            raise ConfigError(
                "thresholds: need 0 <= queue_rcpt_clear <= queue_rcpt_raise <= 4294967295, got "
                f"clear={self.queue_rcpt_clear} raise={self.queue_rcpt_raise}"
            )
        if not 1 <= self.api_failures_raise <= 2**32 - 1:
            raise ConfigError(
                f"thresholds.api_failures_raise must be >= 1, got {self.api_failures_raise}"
            )
        if not -(2**31) <= self.license_days_raise <= self.license_days_clear <= 2**31 - 1:
            raise ConfigError(
                "thresholds: need license_days_raise <= license_days_clear within Integer32"
            )
        if not 1 <= self.blocklist_raise <= 2**32 - 1:
            raise ConfigError(
                f"thresholds.blocklist_raise must be >= 1, got {self.blocklist_raise}"
            )


TARGET_PATTERN = re.compile(r"(?P<scheme>https?)://(?P<host>\[[0-9A-Fa-f:.*?]+\]|[A-Za-z0-9.*?-]+)"
                            r"(?::(?P<port>[0-9*?]+))?/?")
"""What a module's `targets` entry looks like: `scheme://host[:port]`, with `*` and `?` wildcards
in the host and port (see `pmta_snmp.probe.target_matcher`)."""


@dataclass(frozen=True)
class ProbeModule(ApiAccess):
    """How `/probe` reaches a PowerMTA of a fleet (`[probe.modules.NAME]`), as `[pmta]` for the
    local one.

    `targets`: the `scheme://host:port` globs this module may probe (any target when empty);
    a module that sends an API key must list them, so the key only goes to hosts named here.
    `license_interval`: seconds between `show license` calls per target (0: never; needs a key).
    """

    targets: tuple[str, ...] = ()
    license_interval: float = 3600.0


@dataclass(frozen=True)
class ProbeSection:
    """`/probe?target=URL&module=NAME` of the exporter (the Prometheus multi-target pattern).

    Off until at least one module is configured. A probe without `module` uses the module named
    `default`. `max_concurrent` probes poll at once; the others wait, within their own timeout.
    """

    max_concurrent: int = 8
    modules: Mapping[str, ProbeModule] = field(default_factory=dict)


@dataclass(frozen=True)
class AcctSection:
    """Deliverability outcomes from the accounting files (README "Deliverability").

    Without `files` nothing is read. The caps bound the label sets (series) of the capped
    dimensions: the first values met are kept, later ones are counted as `(other)`; 0 = no
    cap."""

    files: str | None = None
    """An accounting file (with its rotated siblings) or a glob of files."""
    state_dir: str | None = None
    """Where the reading position and the counters are kept (default: the plugins' state
    directory)."""
    backfill: float = 86400.0
    """Seconds of existing records read back on the first start (0: from the end)."""
    interval: float = 5.0
    save_interval: float = 30.0
    """Seconds between saves of the reading position with the counters. The agents' MIB
    tables show the counters as last saved (so a restart never makes one go back): they are
    at most this much older than the files."""
    max_source_ips: int = 500
    max_sending_domains: int = 500
    max_source_ip_series: int = 2000
    max_complaint_domains: int = 200
    providers_file: str | None = None
    """An edited provider map (contrib/outcomes/providers.toml); default: the shipped one."""
    reasons_file: str | None = None
    """Edited reason rules (contrib/outcomes/reasons.toml); default: the shipped ones."""


@dataclass(frozen=True)
class Config:
    """The whole agent configuration."""

    pmta: PmtaSection = PmtaSection()
    poll: PollSection = PollSection()
    agentx: AgentXSection = AgentXSection()
    snmp: SnmpSection = SnmpSection()
    thresholds: Thresholds = Thresholds()
    acct: AcctSection = AcctSection()
    probe: ProbeSection = ProbeSection()
    enterprise: int = 32473
    exporter_listen: str = "127.0.0.1:9099"
    exporter_max_series: int = 500
    extra: Mapping[str, Any] = field(default_factory=dict)
    pmta_url_set: bool = False
    """Whether `[pmta] url` was given (file, environment or `--url`): the exporter with probe
    modules polls a local PowerMTA for `/metrics` only then."""


_SECTIONS = {
    "pmta": PmtaSection,
    "poll": PollSection,
    "agentx": AgentXSection,
    "snmp": SnmpSection,
    "thresholds": Thresholds,
    "acct": AcctSection,
    "probe": ProbeSection,
}


def _coerce(kind: Any, value: Any, where: str) -> Any:
    name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if "bool" in name:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if name.startswith("int"):
            return int(value)
        if name.startswith("float"):
            return float(value)
        if name.startswith("str"):
            return None if value is None else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a valid {name}") from None
    return value


def _build(cls: Any, data: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"[{where}]: unknown key(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        f = known[key]
        if key == "users":
            values[key] = tuple(_build(SnmpUser, u, f"{where}.users") for u in value)
        elif key == "trap_targets":
            values[key] = tuple(_build(TrapTarget, t, f"{where}.trap_targets") for t in value)
        elif key == "modules":
            if not isinstance(value, Mapping):
                raise ConfigError(f"[{where}.modules] must be a table of [{where}.modules.NAME]")
            values[key] = {
                str(name): _build(ProbeModule, _table(body, f"{where}.modules.{name}"),
                                  f"{where}.modules.{name}")
                for name, body in value.items()
            }
        elif key == "targets":
            values[key] = _strings(value, f"{where}.targets")
        else:
            values[key] = _coerce(f.type, value, f"{where}.{key}")
    return cls(**values)


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]  # from the environment
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(value)


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read the TOML file (if any), then apply PMTA_SNMP_<SECTION>_<KEY> overrides."""
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    env = os.environ if environ is None else environ
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        rest = key[len(ENV_PREFIX) :].lower()
        section, _, name = rest.partition("_")
        if section in _SECTIONS and name:
            raw.setdefault(section, {})[name] = value
        elif rest == "enterprise":
            raw["enterprise"] = value
    url_set = "url" in raw.get("pmta", {})
    sections = {name: _build(cls, raw.pop(name, {}), name) for name, cls in _SECTIONS.items()}
    top: dict[str, Any] = {"pmta_url_set": url_set}
    for key in ("enterprise", "exporter_listen", "exporter_max_series"):
        if key in raw:
            top[key] = _coerce("int" if key != "exporter_listen" else "str", raw.pop(key), key)
    cfg = Config(**sections, **top, extra=raw)
    return validate(cfg)


def validate(cfg: Config) -> Config:
    """Reject values that would only fail later, with the key named."""
    if cfg.poll.interval < 1:
        raise ConfigError("poll.interval must be at least 1 second")
    if not 0 <= cfg.poll.jitter < 1:
        raise ConfigError("poll.jitter must be a fraction in [0, 1)")
    if cfg.poll.isolation not in ("process", "thread"):
        raise ConfigError("poll.isolation must be process or thread")
    if cfg.poll.worker_max_rss_mib < 1:
        raise ConfigError("poll.worker_max_rss_mib must be at least 1")
    if not 1 <= cfg.pmta.max_page_mib <= cfg.pmta.max_poll_mib:
        raise ConfigError("need 1 <= pmta.max_page_mib <= pmta.max_poll_mib")
    if not 0 <= cfg.pmta.max_list_items <= MAX_LIST_ITEMS:
        raise ConfigError(
            f"pmta.max_list_items must be 0..{MAX_LIST_ITEMS} (0: the pages only)"
        )
    if cfg.pmta.api_format not in ("auto", "json", "xml"):
        raise ConfigError("pmta.api_format must be auto, json or xml")
    if cfg.pmta.api_flavor not in ("real", "seed"):
        raise ConfigError("pmta.api_flavor must be real or seed")
    if not 0 <= cfg.agentx.priority <= 255:
        raise ConfigError("agentx.priority must be 0..255")
    if not 0 < cfg.enterprise < 2**32:
        raise ConfigError("enterprise must be a positive 32-bit number")
    if cfg.snmp.engine_id is not None:
        from pmta_snmp.engineid import parse_engine_id

        try:
            parse_engine_id(cfg.snmp.engine_id)
        except ValueError as exc:
            raise ConfigError(f"snmp.engine_id: {exc}") from None
    a = cfg.acct
    if a.backfill < 0:
        raise ConfigError("acct.backfill must be 0 or more seconds")
    if a.interval <= 0:
        raise ConfigError("acct.interval must be more than 0 seconds")
    if a.save_interval <= 0:
        raise ConfigError("acct.save_interval must be more than 0 seconds")
    for key in ("max_source_ips", "max_sending_domains", "max_source_ip_series",
                "max_complaint_domains"):
        if getattr(a, key) < 0:
            raise ConfigError(f"acct.{key} must be 0 (no cap) or more")
    _validate_probe(cfg.probe)
    return cfg


def _validate_probe(probe: ProbeSection) -> None:
    if probe.max_concurrent < 1:
        raise ConfigError("probe.max_concurrent must be at least 1")
    for name, m in probe.modules.items():
        where = f"probe.modules.{name}"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(f"{where}: a module name has letters, digits, _ . - only")
        if m.api_key_file and not m.targets:
            raise ConfigError(
                f"{where}: a module with an API key must list the targets it may probe "
                '(targets = ["https://pmta-*.example.net:8080"]): /probe fetches any URL it is '
                "given, and the key must never go to an arbitrary one"
            )
        for pattern in m.targets:
            if not TARGET_PATTERN.fullmatch(pattern):
                raise ConfigError(
                    f"{where}.targets: {pattern!r} is not scheme://host[:port] "
                    "(http or https; * and ? wildcards in host and port)"
                )
        if not m.timeout > 0:
            raise ConfigError(f"{where}.timeout must be positive")
        if m.license_interval < 0:
            raise ConfigError(f"{where}.license_interval must be >= 0")
        if not 1 <= m.max_page_mib <= m.max_poll_mib:
            raise ConfigError(f"need 1 <= {where}.max_page_mib <= {where}.max_poll_mib")
        if not 0 <= m.max_list_items <= MAX_LIST_ITEMS:
            raise ConfigError(f"{where}.max_list_items must be 0..{MAX_LIST_ITEMS}")
        if m.api_format not in ("auto", "json", "xml"):
            raise ConfigError(f"{where}.api_format must be auto, json or xml")
        if m.api_flavor not in ("real", "seed"):
            raise ConfigError(f"{where}.api_flavor must be real or seed")


def with_overrides(cfg: Config, **sections: Mapping[str, Any]) -> Config:
    """A copy with some section values replaced (command-line options win over the file)."""
    changes: dict[str, Any] = {}
    for name, values in sections.items():
        clean = {k: v for k, v in values.items() if v is not None}
        if clean:
            changes[name] = replace(getattr(cfg, name), **clean)
    if sections.get("pmta", {}).get("url") is not None:
        changes["pmta_url_set"] = True
    return validate(replace(cfg, **changes))


def read_secret(path: str, what: str) -> str:
    """The first line of a secret file (API key, community, SNMPv3 passphrase)."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"{what} file {path} is empty")
    return text.splitlines()[0].strip()
