"""check_pmta_log: problems in PowerMTA's main log since the last run, check_logfiles-style.

The default classes are PowerMTA's LOCAL failures (startup and configuration errors, disk and
spool, license, resources, the local resolver, all sources of a queue disabled); remote
servers' replies are normal traffic and the deferral plugin's job (logscan.DEFAULT_PATTERNS).

Each log keeps its seek state (offset, device+inode, size and content fingerprints) in the
plugin's state file (pmta_snmp.logtail). The first run starts at the end (`--from-start` reads
the whole file); a rotation by rename, copytruncate or compression is detected and the rest of
the rotated file (`log.1`, `log.1.gz`) is read before the new one, so no line is lost or
counted twice. Lines are sorted into pattern classes (critical / warning / exclude / ok; an ok
line clears what came before it); `-c` is the count of critical lines that is still OK
(default 0: any critical line is CRITICAL) and `-w` the same for warning lines.

On timeout the plugin keeps what it read: the state points after the last scanned block,
matches found so far are reported, and the rest is read next run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence

import nagiosplugin

from .base import (
    Info,
    Plugin,
    PluginParser,
    PluginResource,
    Summary,
    Threshold,
    human,
    make_parser,
    metric,
)
from .logscan import (
    DEFAULT_LOG,
    DEFAULT_PATTERNS,
    Scanner,
    add_pattern_args,
    log_paths,
    scan_logs,
)


class LogResource(PluginResource):
    """Matches per class in the new part of each log."""

    scanner: Scanner | None = None

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        run = self.run
        started = time.monotonic()
        scanner = self.scanner = scan_logs(run, self.args, DEFAULT_PATTERNS)
        engine = scanner.patterns.engine_used
        # -v: what this run read, and which engine found the patterns' needles.
        run.long.append(
            f"log: {human(scanner.bytes / 1e6, 1)} MB, {human(scanner.lines)} lines scanned in "
            f"{time.monotonic() - started:.2f} s"
            + ("" if engine is None else f" (needles found by {engine})"))
        c = scanner.classes
        yield metric("critical_lines", c["critical"].count, context="critical_lines", min=0)
        yield metric("warning_lines", c["warning"].count, context="warning_lines", min=0)
        yield metric("ok_lines", c["ok"].count, context="info", min=0)
        yield metric("excluded_lines", c["exclude"].count, context="info", min=0)
        yield metric("lines", scanner.lines, context="info", min=0)
        yield metric("bytes", scanner.bytes, context="info", uom="B", min=0)
        for klass in ("critical", "warning", "ok"):
            for line in c[klass].recent:
                run.long.append(f"{klass}: {line}")
        run.details = {
            "logs": log_paths(self.args),
            "lines": scanner.lines,
            "bytes": scanner.bytes,
            "cleared_by_ok": scanner.cleared,
            **{
                klass: {"count": c[klass].count, "last": c[klass].last}
                for klass in ("critical", "warning", "ok")
            },
            "excluded": c["exclude"].count,
        }
        run.primary = "critical_lines"

    def contexts(self) -> list[nagiosplugin.Context]:
        """Count thresholds for the critical and warning classes."""
        return [
            Threshold("critical_lines", None, self.args.critical,
                      lambda m, c: f"{human(m.value)} critical lines"),
            Threshold("warning_lines", self.args.warning, None,
                      lambda m, c: f"{human(m.value)} warning lines"),
            Info("info"),
        ]

    def summary(self) -> Summary:
        return LogSummary(self)


class LogSummary(Summary):
    """Counts per class and the last critical (else warning) line."""

    def __init__(self, resource: LogResource) -> None:
        super().__init__(self._ok)
        self.resource = resource

    def _counts(self) -> str:
        s = self.resource.scanner
        assert s is not None
        c = s.classes
        text = (
            f"{human(c['critical'].count)} critical, {human(c['warning'].count)} warning "
            f"lines in {', '.join(log_paths(self.resource.args))} since the last run"
        )
        if s.cleared:
            text += f" ({human(s.cleared)} cleared by a later ok line)"
        return text

    def _ok(self, results: nagiosplugin.Results) -> str:
        s = self.resource.scanner
        assert s is not None
        text = self._counts() + f" ({human(s.lines)} lines read)"
        last = s.classes["critical"].last or s.classes["warning"].last
        return text + (f"; last: {last}" if last else "")

    def problem(self, results: nagiosplugin.Results) -> str:
        s = self.resource.scanner
        if s is None:  # the resource failed before scanning
            return super().problem(results)
        state = int(results.most_significant_state)
        klass = "critical" if state >= 2 and s.classes["critical"].last else "warning"
        last = s.classes[klass].last or s.classes["critical"].last or ""
        return self._counts() + (f"; last {klass}: {last}" if last else "")


def build_parser(plugin: Plugin) -> PluginParser:
    """Options of check_pmta_log."""
    p = make_parser(
        plugin, warning="0", critical="0",
        threshold_help="warning-class lines per run that are still OK ("
        "-c is the same for critical-class lines)",
        connection=False, state=True,
    )
    p.add_argument("-l", "--logfile", action="append", metavar="PATH",
                   help=f"log to follow (repeatable; default {DEFAULT_LOG})")
    p.add_argument("--from-start", action="store_true",
                   help="first run: read the whole log instead of starting at its end")
    add_pattern_args(p)
    return p


PLUGIN = Plugin(
    name="LOG",
    prog="check_pmta_log",
    description="Errors in PowerMTA's main log since the last run (rotation-safe tail).",
    build_parser=build_parser,
    build_check=LogResource.check,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of check_pmta_log."""
    return PLUGIN.main(argv)


if __name__ == "__main__":
    sys.exit(main())
