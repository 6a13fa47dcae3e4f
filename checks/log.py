"""check_pmta_log: problems in PowerMTA's main log since the last run, check_logfiles-style.

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

import argparse
import sys
from collections.abc import Iterator, Sequence

import nagiosplugin

from .base import (
    Info,
    Plugin,
    PluginError,
    PluginParser,
    PmtaCheck,
    Run,
    Summary,
    Threshold,
    fmt_num,
    human,
    input_key,
    make_parser,
    metric,
)
from .logscan import (
    DEFAULT_PATTERNS,
    LogRead,
    PatternError,
    PatternSet,
    Scanner,
    parse_pattern_file,
    tail_log,
)

DEFAULT_LOG = "/var/log/pmta/log"


def load_patterns(args: argparse.Namespace, defaults: dict[str, list[str]]) -> PatternSet:
    """Defaults, replaced class by class by --pattern-file, extended by the -p options."""
    classes = {k: list(v) for k, v in defaults.items()}
    if args.no_default_patterns:
        classes = {k: [] for k in classes}
    if args.pattern_file:
        try:
            with open(args.pattern_file, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise PluginError(
                f"cannot read pattern file {args.pattern_file}: {exc.strerror}"
            ) from None
        try:
            classes.update(parse_pattern_file(text, args.pattern_file))
        except PatternError as exc:
            raise PluginError(str(exc)) from None
    for klass in ("critical", "warning", "exclude", "ok"):
        classes.setdefault(klass, []).extend(getattr(args, f"{klass}_pattern") or ())
    try:
        return PatternSet.build(classes)
    except PatternError as exc:
        raise PluginError(str(exc)) from None


def scan_logs(run: Run, args: argparse.Namespace, paths: Sequence[str], patterns: PatternSet,
              *, state_key: str = "logs") -> tuple[Scanner, list[LogRead]]:
    """Scan every log since its stored position under one state-file transaction."""
    scanner = Scanner(patterns)
    reads: list[LogRead] = []
    state = run.state_file(*(input_key(p) for p in paths))
    run.enter(f"locking state file {state.path}")
    with state.transaction() as doc:
        run.loaded(state)
        stored = doc.get(state_key)
        logs: dict[str, object] = dict(stored) if isinstance(stored, dict) else {}
        for path in paths:
            run.enter(f"reading {path}")
            read, new_state = tail_log(
                path, logs.get(path), patterns, from_start=args.from_start,
                deadline=run.soft_deadline(), scanner=scanner,
            )
            logs[path] = new_state
            reads.append(read)
            if read.missing and not read.sources:
                raise PluginError(f"log file {path} does not exist (check --logfile)")
            if read.timed_out:
                run.partial = (
                    f"timed out after {fmt_num(float(args.timeout))} s reading {path} "
                    f"({human(scanner.bytes / 1e6, 1)} MB scanned; the rest is read next run)"
                )
                # Keep what was read: the state of this log points after the last block.
                break
        run.enter(f"saving state file {state.path}")
        doc[state_key] = logs
    for read in reads:
        for event in read.events():
            run.note(event)
    return scanner, reads


class LogResource(nagiosplugin.Resource):  # type: ignore[misc]
    """Matches per class in the new part of each log."""

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        self.args = args
        self.run = run
        self.scanner: Scanner | None = None
        self.paths: list[str] = list(args.logfile or [DEFAULT_LOG])

    @property
    def name(self) -> str:
        return "LOG"

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        run = self.run
        patterns = load_patterns(self.args, DEFAULT_PATTERNS)
        scanner, _ = scan_logs(run, self.args, self.paths, patterns)
        self.scanner = scanner
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
            "logs": self.paths,
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

    def where(self) -> str:
        return ", ".join(self.paths)


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
            f"lines in {self.resource.where()} since the last run"
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


def build_check(args: argparse.Namespace, run: Run) -> nagiosplugin.Check:
    """One resource; count thresholds for the critical and warning classes."""
    res = LogResource(args, run)
    return PmtaCheck(
        res,
        Threshold("critical_lines", None, args.critical,
                  lambda m, c: f"{human(m.value)} critical lines"),
        Threshold("warning_lines", args.warning, None,
                  lambda m, c: f"{human(m.value)} warning lines"),
        Info("info"),
        LogSummary(res),
    )


def add_pattern_args(p: PluginParser) -> None:
    """Pattern options shared with check_pmta_tls."""
    g = p.add_argument_group("patterns (case-insensitive regexes)")
    g.add_argument(
        "--pattern-file", metavar="FILE",
        help="[critical]/[warning]/[exclude]/[ok] sections, one regex per line; a section "
        "replaces that class's defaults",
    )
    g.add_argument("--no-default-patterns", action="store_true",
                   help="start from no patterns at all")
    for klass in ("critical", "warning", "exclude", "ok"):
        g.add_argument(f"--{klass}-pattern", action="append", metavar="REGEX",
                       help=f"add a {klass} pattern (repeatable)")


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
    build_check=build_check,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of check_pmta_log."""
    from .base import run_plugin

    return run_plugin(PLUGIN, argv)


if __name__ == "__main__":
    sys.exit(main())
