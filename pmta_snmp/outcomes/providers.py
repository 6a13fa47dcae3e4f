"""Provider of an accounting record: by recipient domain, then by the remote MX host in dsnMta.

The map is a TOML file (`providers.toml`, shipped next to this module; an edited copy can be
passed to `load_providers`). Each `[providers.<id>]` table lists `domains` (exact names, or
`name.*` for the same name under any top-level domain) and `mx` (host suffixes matched on label
boundaries), so Google Workspace or Microsoft 365 customers' own domains count as their
provider. Lookups are dictionary hits (a suffix walk for MX hosts), cached per (domain, host).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmta_snmp.outcomes.files import OutcomesFileError, line_of, read_toml

__all__ = [
    "OTHER",
    "ProviderMap",
    "default_providers",
    "load_providers",
    "mx_host",
    "rcpt_domain",
]

OTHER = "other"
"""The provider of everything the map does not name."""
_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
_LABEL = r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?|xn--[a-z0-9-]{1,59})"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
_WILDCARD = re.compile(rf"({_LABEL})\.\*")
_SUFFIX = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_CACHE_MAX = 65_536
# A "*" in `name.*` stands for a top-level domain (fr, de) or a two-label public suffix whose
# first label is short (co.uk, com.br, ne.jp); `yahoo.example.com` is not `yahoo.*`.
_TLD_LIKE = re.compile(r"[a-z]{2,24}|xn--[a-z0-9-]{1,59}|[a-z]{2,3}\.[a-z]{2,24}")


def rcpt_domain(rcpt: str) -> str:
    """The domain of a recipient address, lower case, without a trailing dot or brackets."""
    return rcpt.rpartition("@")[2].strip().strip("<>").rstrip(".").lower()


def mx_host(dsn_mta: str) -> str:
    """The host name of a dsnMta value (`host (ip)`), lower case; "" for none or an IP only."""
    host = dsn_mta.strip().split(None, 1)[0] if dsn_mta.strip() else ""
    host = host.strip("[]()").rstrip(".").lower()
    if not host or ":" in host or host.replace(".", "").isdigit():
        return ""
    return host


@dataclass(frozen=True, slots=True)
class Provider:
    """One provider of the map: its id, what it is, and its domains and MX host suffixes."""

    id: str
    description: str
    domains: tuple[str, ...]
    mx: tuple[str, ...]


class ProviderMap:
    """Provider ids by recipient domain and MX host, built from a map file's providers."""

    def __init__(self, providers: Iterable[Provider], *, source: str = "providers.toml") -> None:
        self.source = source
        self._providers = {p.id: p for p in providers}
        self._exact: dict[str, str] = {}
        self._wild: dict[str, str] = {}
        self._mx: dict[str, str] = {}
        for p in self._providers.values():
            for d in p.domains:
                m = _WILDCARD.fullmatch(d)
                table, key = (self._wild, m.group(1)) if m else (self._exact, d)
                _claim(table, key, p.id, d, "domain", source)
            for s in p.mx:
                _claim(self._mx, s, p.id, s, "mx suffix", source)
        self._cache: dict[tuple[str, str], str] = {}

    @property
    def ids(self) -> tuple[str, ...]:
        """Every provider id the map can return, in file order, `other` last."""
        return (*(i for i in self._providers if i != OTHER), OTHER)

    def describe(self, provider_id: str) -> str:
        """The provider's description ("" when unknown)."""
        p = self._providers.get(provider_id)
        return p.description if p else ""

    def provider(self, domain: str, dsn_mta: str = "") -> str:
        """The provider of a recipient domain (lower case), else of the dsnMta host, else
        `other`."""
        key = (domain, dsn_mta)
        found = self._cache.get(key)
        if found is None:
            found = self.by_domain(domain) or self.by_mx(mx_host(dsn_mta)) or OTHER
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = found
        return found

    def by_domain(self, domain: str) -> str | None:
        """The provider of a domain by its exact name or a `name.*` entry; None if unmapped."""
        found = self._exact.get(domain)
        if found is None and self._wild:
            first, _, rest = domain.partition(".")
            if rest and first in self._wild and _TLD_LIKE.fullmatch(rest):
                found = self._wild[first]
        return found

    def by_mx(self, host: str) -> str | None:
        """The provider of an MX host by its longest listed suffix; None if unmapped."""
        while host:
            found = self._mx.get(host)
            if found is not None:
                return found
            host = host.partition(".")[2]
        return None


def _claim(table: dict[str, str], key: str, pid: str, entry: str, what: str,
           source: str) -> None:
    owner = table.setdefault(key, pid)
    if owner != pid:
        raise OutcomesFileError(
            f"{source}: {what} {entry!r} is listed under both [providers.{owner}] and "
            f"[providers.{pid}]")


def load_providers(path: str | Path | None = None) -> ProviderMap:
    """The provider map in `path` (default: the shipped `providers.toml`).

    Raises OutcomesFileError naming the file, the line of the table and the key at fault.
    """
    label, text, doc = read_toml(path, "providers.toml")
    return ProviderMap(_parse(label, text, doc), source=label)


def _parse(label: str, text: str, doc: Mapping[str, Any]) -> list[Provider]:
    unknown = sorted(set(doc) - {"providers"})
    if unknown:
        raise OutcomesFileError(f"{label}: unknown top-level key {unknown[0]!r} "
                                "(the map is a set of [providers.<id>] tables)")
    tables = doc.get("providers")
    if not isinstance(tables, dict) or not tables:
        raise OutcomesFileError(f"{label}: no [providers.<id>] tables")
    out = []
    for pid, body in tables.items():
        where = _where(label, text, f"[providers.{pid}]")
        if not _ID.fullmatch(pid):
            raise OutcomesFileError(f"{where}: provider id {pid!r} must be lower case letters, "
                                    "digits and '-' (like gmail, t-online)")
        if not isinstance(body, dict):
            raise OutcomesFileError(f"{where}: providers.{pid} must be a table")
        extra = sorted(set(body) - {"description", "domains", "mx"})
        if extra:
            raise OutcomesFileError(f"{where}: unknown key {extra[0]!r} (description, domains, "
                                    "mx)")
        description = body.get("description", "")
        if not isinstance(description, str):
            raise OutcomesFileError(f"{where}: description must be a string")
        domains = _names(where, body, "domains", "a domain (gmail.com) or name.* (hotmail.*)",
                         lambda d: bool(_DOMAIN.fullmatch(d) or _WILDCARD.fullmatch(d)))
        mx = _names(where, body, "mx", "a host suffix (google.com)",
                    lambda s: bool(_SUFFIX.fullmatch(s)))
        out.append(Provider(pid, description, domains, mx))
    return out


def _names(where: str, body: Mapping[str, Any], key: str, expected: str,
           valid: Callable[[str], bool]) -> tuple[str, ...]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise OutcomesFileError(f"{where}: {key} must be a list of strings")
    names = []
    for raw in value:
        name = raw.strip().rstrip(".").lower()
        if not valid(name):
            raise OutcomesFileError(f"{where}: {key} entry {raw!r} is not {expected}")
        names.append(name)
    return tuple(names)


def _where(label: str, text: str, header: str) -> str:
    line = line_of(text, header)
    return f"{label} line {line} {header}" if line else f"{label} {header}"


_DEFAULT: ProviderMap | None = None


def default_providers() -> ProviderMap:
    """The shipped provider map, loaded once."""
    global _DEFAULT  # noqa: PLW0603 (a process-wide cache of an immutable map)
    if _DEFAULT is None:
        _DEFAULT = load_providers()
    return _DEFAULT
