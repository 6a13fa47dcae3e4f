"""check_pmta_license: days until the PowerMTA license expires.

Two sources: `show license` through `POST /command` (PowerMTA 5.0, needs the API key), or the
license file itself (`--license-file /etc/pmta/license`), whose `expires:` line is
`YYYY-MM-DD` or `never` (pmta-formats.md §1.8). `never` is OK and says so; an expired license
is CRITICAL whatever the thresholds. A bare number as threshold means "fewer days left than":
`-w 30 -c 7` (the defaults) warn under 30 days and go critical under 7.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from datetime import date
from typing import NamedTuple

import nagiosplugin

from .base import (
    Perf,
    Plugin,
    PluginError,
    PluginParser,
    PluginResource,
    Run,
    Threshold,
    make_parser,
    metric,
)

#: Zabbix value for a license that never expires (a numeric item cannot hold "never").
NEVER_DAYS = 36500


class LicenseInfo(NamedTuple):  # not a dataclass: making one costs ~0.5 ms of each start
    """Expiry (None = never) and the raw `key: value` fields."""

    never: bool
    expires: date | None
    fields: dict[str, str]
    source: str


def parse_license_text(text: str, source: str) -> LicenseInfo:
    """`key: value` lines split at the first `:` (right-aligned keys, unknown keys ignored).

    The same rules as pmta_snmp.api.parse; kept here so the file mode never imports httpx.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key and " " not in key and key not in fields:
            fields[key] = value.strip()
    raw = fields.get("expires", "").strip()
    if not raw:
        raise PluginError(f"{source} has no `expires:` line (is it a PowerMTA license?)")
    if raw.lower() == "never":
        return LicenseInfo(True, None, fields, source)
    try:
        expires = date.fromisoformat(raw[:10])
    except ValueError:
        raise PluginError(
            f"{source}: expiry {raw!r} is neither YYYY-MM-DD nor never"
        ) from None
    return LicenseInfo(False, expires, fields, source)


class LicenseResource(PluginResource):
    """The license from the file or the API, as days left."""

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        super().__init__(args, run)
        self.info: LicenseInfo | None = None
        self.days: int | None = None

    def read(self) -> LicenseInfo:
        """From --license-file, else `show license` over the API."""
        path = self.args.license_file
        if path:
            self.run.enter(f"reading {path}")
            try:
                with open(path, "rb") as fh:
                    raw = fh.read(1 << 20)
            except OSError as exc:
                raise PluginError(f"cannot read license file {path}: {exc.strerror}") from None
            return parse_license_text(raw.decode("utf-8", "replace"), path)
        lic = self.run.api("`show license` (POST /command)", lambda c: c.license())
        return LicenseInfo(lic.never, lic.expires, dict(lic.fields), "show license")

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        info = self.info = self.read()
        today = self.args.today or date.today()
        self.days = None if info.never or info.expires is None else (info.expires - today).days
        self.run.primary = "days_left"
        self.run.details = {
            "never": info.never,
            "expires": info.expires.isoformat() if info.expires else None,
            "days_left": self.days,
            "source": info.source,
            **{k: v for k, v in info.fields.items() if k in _SHOWN},
        }
        for key in _SHOWN:
            if info.fields.get(key):
                self.run.long.append(f"{key}: {info.fields[key]}")
        value = NEVER_DAYS if info.never else self.days
        yield metric("days_left", value, context="days_left", uom="")

    def contexts(self) -> list[nagiosplugin.Context]:
        return [DaysContext(self)]


_SHOWN = ("product", "version", "licensee", "serial", "issued", "expires", "instances")


class DaysContext(Threshold):
    """Days left: an expired license is CRITICAL regardless of the ranges; `never` is OK."""

    def __init__(self, resource: LicenseResource) -> None:
        args = resource.args
        super().__init__("days_left", args.warning, args.critical, self._describe, unit=" days")
        self.resource = resource

    def _describe(self, m: nagiosplugin.Metric, ctx: object) -> str:
        info = self.resource.info
        assert info is not None
        who = f" ({info.fields['licensee']})" if info.fields.get("licensee") else ""
        if info.never or info.expires is None:
            return f"license never expires{who}"
        days = self.resource.days
        assert days is not None
        when = info.expires.isoformat()
        if days < 0:
            return f"license EXPIRED on {when}, {-days} days ago{who}"
        if days == 0:
            return f"license expires today ({when}){who}"
        return f"license expires in {days} day{'s' if days != 1 else ''} on {when}{who}"

    def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
        info = self.resource.info
        if info is not None and info.never:
            return self.result_cls(nagiosplugin.Ok, None, metric)
        days = self.resource.days
        if days is not None and days < 0:
            return self.result_cls(nagiosplugin.Critical, None, metric)
        return super().evaluate(metric, resource)

    def performance(self, metric: nagiosplugin.Metric, resource: object) -> Perf | None:
        info = self.resource.info
        value = None if info is not None and info.never else metric.value
        return Perf(metric.name, value, "", self.warning, self.critical, "", "")


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from None


def build_parser(plugin: Plugin) -> PluginParser:
    """Options of check_pmta_license."""
    p = make_parser(
        plugin, warning="30", critical="7",
        threshold_help="days left; a bare N means fewer than N days",
        connection=True, state=True, min_range=True,  # state options: accepted, unused
    )
    p.add_argument(
        "--license-file", metavar="FILE",
        help="read the license file instead of asking the API (e.g. /etc/pmta/license)",
    )
    p.add_argument("--today", type=_iso_date, help=argparse.SUPPRESS)  # tests: a fixed date
    return p


PLUGIN = Plugin(
    name="LICENSE",
    prog="check_pmta_license",
    description="Days until the PowerMTA license expires (show license, or the license file).",
    build_parser=build_parser,
    build_check=LicenseResource.check,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of check_pmta_license."""
    return PLUGIN.main(argv)


if __name__ == "__main__":
    sys.exit(main())
