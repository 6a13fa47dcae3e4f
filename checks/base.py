"""The shared contract of the check_pmta_* plugins.

Every plugin is a few nagiosplugin classes (Resource -> Metric -> Context -> Summary): a
:class:`PluginResource` whose `probe()` yields the metrics, whose `contexts()` judge them and
whose `summary()` writes the status line, and a :class:`Plugin` (name, options, the resource's
`check`) whose `main()` is the entry point (:func:`run_plugin`). This module covers
nagiosplugin's sharp edges once for all of them:

* usage errors exit 3 (UNKNOWN) with one status line, never argparse's exit 2 (CRITICAL);
* ``-t`` accepts fractions (``signal.setitimer`` plus a deadline that resources pass down) and
  a timeout names the stage that was running (``run.enter("querying PowerMTA /queues")``);
* any exception becomes one ``PMTA <CHECK> UNKNOWN - ...`` line; the traceback goes to stderr
  only with ``-vvv``;
* perfdata never uses scientific notation, labels are sanitised (no spaces, dots or quotes),
  all perfdata follows one ``|`` at the end and the whole output stays under Nagios' 8 KB;
* text that may come from input (log lines, API answers) never carries a newline, a ``|``
  or a control character (NUL would end the output for Nagios, perfdata included);
* ``--output zabbix`` prints only a value (or a JSON object with ``--json``) and always exits 0
  with nothing on stderr; ``--discover`` prints low-level-discovery JSON, and its notes (a
  list that lacks rows) on stderr only when stderr is not stdout's file: Zabbix agents read
  both through one pipe, so a note there would break the JSON.

Zabbix error convention: a plugin that cannot produce a value prints
``ZBX_NOTSUPPORTED: <reason>`` on stdout and exits 0. Zabbix agents make the item unsupported
and show the reason (a numeric item would reject the text anyway, with the same effect).
With ``--json`` the error is a JSON object instead, ``{"status": 3, "state": "UNKNOWN",
"error": "<reason>", ...}``, so a dependent item on ``$.status`` can still alert.

Import cost matters (a plugin runs every minute per host): nothing heavy is imported here;
httpx and the API client are imported only by :meth:`Run.client`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import math
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, TypeVar

import nagiosplugin

from pmta_snmp import __version__
from pmta_snmp.argtypes import nonneg_float, nonneg_int

if TYPE_CHECKING:
    from pmta_snmp.api import ClientConfig, PmtaClient
    from pmta_snmp.state import StateFile

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
_SERVICE_STATES = {
    OK: nagiosplugin.Ok,
    WARNING: nagiosplugin.Warn,
    CRITICAL: nagiosplugin.Critical,
    UNKNOWN: nagiosplugin.Unknown,
}
STATE_CHOICES = {"ok": OK, "warning": WARNING, "critical": CRITICAL}

#: Nagios core keeps 8 KB of plugin output (MAX_PLUGIN_OUTPUT_LENGTH); stay clearly below.
MAX_OUTPUT_BYTES = 7900
#: Longest status-line summary before it is cut (the long output carries the rest).
MAX_SUMMARY_CHARS = 600
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_ITEMS = 20
ZBX_NOTSUPPORTED = "ZBX_NOTSUPPORTED"
#: Shown by the queue/bounce/... plugins; `sources` are accounting source IPs (dlvSourceIp).
DISCOVERY_MACROS = {
    "vmtas": "{#VMTA}",
    "domains": "{#DOMAIN}",
    "queues": "{#QUEUE}",
    "sources": "{#SOURCEIP}",
    "source-ips": "{#SOURCEIP}",
    "providers": "{#PROVIDER}",
}


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class PluginError(Exception):
    """Ends the run UNKNOWN; the message is the status line (a person must be able to act)."""


class UsageError(PluginError):
    """Bad command line: UNKNOWN, never argparse's exit 2 (which Nagios reads as CRITICAL)."""


def usage_error(message: str) -> UsageError:
    """The usage error for `message` (`argument --x: why`), worded as argparse's are."""
    return UsageError(f"usage: {message} (see --help)")


class CheckTimeout(BaseException):
    """The -t budget ran out. A BaseException so no library's `except Exception` eats it."""

    def __init__(self, stage: str, seconds: float) -> None:
        super().__init__(stage, seconds)
        self.stage = stage
        self.seconds = seconds

    def __str__(self) -> str:
        return f"timed out after {fmt_num(self.seconds)} s while {self.stage}"


# ---------------------------------------------------------------------------------------------
# Numbers, ranges, labels, perfdata
# ---------------------------------------------------------------------------------------------


def fmt_num(value: float | int | None, decimals: int = 6) -> str:
    """A number for perfdata and JSON-free text: never scientific notation, no trailing zeros;
    ``U`` (Nagios' "unknown value") for None, NaN and infinities."""
    if value is None:
        return "U"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return "U"
    if value.is_integer() and abs(value) < 1e18:
        return str(int(value))
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def human(value: float | int, decimals: int = 1) -> str:
    """A number for people: thousands separators, at most `decimals` decimals."""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.{decimals}f}".rstrip("0").rstrip(".")
    return f"{int(value):,}"


def pct(value: float) -> str:
    """A percentage for people (`5.2%`, `0.04%`)."""
    if value != 0 and abs(value) < 0.1:
        return f"{value:.2f}%"
    return f"{value:.1f}%"


def parse_range(spec: str) -> nagiosplugin.Range:
    """A Nagios range (`10`, `10:`, `~:10`, `@10:20`, `5.5`); a trailing `%` is accepted."""
    text = spec.strip().replace("%", "")
    try:
        return nagiosplugin.Range(text)
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(
            f"invalid range {spec!r} (Nagios syntax: 10, 10:, ~:10, @10:20)"
        ) from None


def parse_min_range(spec: str) -> nagiosplugin.Range:
    """Like :func:`parse_range`, but a bare number N means "alert below N" (`N:`): for values
    where less is worse (days until license expiry)."""
    text = spec.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        text += ":"
    return parse_range(text)


def fmt_range(rng: nagiosplugin.Range | str | None) -> str:
    """A range for perfdata without float repr or scientific notation."""
    if rng is None or isinstance(rng, str):
        return rng or ""
    out = "@" if rng.invert else ""
    if rng.start == -math.inf:
        out += "~:"
    elif rng.start != 0:
        out += fmt_num(rng.start) + ":"
    if rng.end != math.inf:
        out += fmt_num(rng.end)
    return out


def describe_range(rng: nagiosplugin.Range, unit: str = "") -> str:
    """Why a value violates `rng`, in words (`above 50,000`, `below 7`, `above 5%`)."""
    lo, hi = rng.start, rng.end

    def h(v: float) -> str:
        return human(v, 2) + unit

    if rng.invert:
        return f"inside {h(lo)}..{h(hi)}"
    if lo in (0, -math.inf) and hi != math.inf:
        return f"above {h(hi)}"
    if hi == math.inf:
        return f"below {h(lo)}"
    return f"outside {h(lo)}..{h(hi)}"


_LABEL_BAD = re.compile(r"[^A-Za-z0-9_-]+")
#: The words of a name: runs of letters, digits, `-` and any non-ASCII character; the ASCII
#: punctuation between them (`.`, `/`, `_`, spaces) separates them, like a domain's dots.
_LABEL_WORD = re.compile(r"(?:[A-Za-z0-9-]|[^\x00-\x7f])+")


def perf_label(*parts: str) -> str:
    """A stable perfdata label: parts joined by `_`; each word of a part that is not ASCII
    (an internationalised domain's label) in its IDNA form (`xn--bcher-kva`), anything but
    `[A-Za-z0-9_-]` -> `_`. Different names may give one label: :class:`Labelled` tells
    them apart."""
    text = "_".join(p if p.isascii() else _LABEL_WORD.sub(_ascii_word, p) for p in parts if p)
    return _LABEL_BAD.sub("_", text).strip("_") or "value"


def _ascii_word(match: re.Match[str]) -> str:
    word = match.group(0)
    if word.isascii():
        return word
    try:
        return word.encode("idna").decode("ascii")
    except UnicodeError:  # not a valid IDNA label (too long, forbidden characters)
        return "xn--" + word.encode("punycode").decode("ascii")


def label_suffix(name: str) -> str:
    """The short, stable suffix that tells apart names giving the same label."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:6]


def distinct_labels(names: Iterable[str]) -> dict[str, str]:
    """A perfdata label for each name, distinct for distinct names (`a.b` and `a_b` both
    give `a_b`): when names share a label, the first of them in sorted order keeps it and
    the others get `_` and :func:`label_suffix`. Whatever the order of `names`, each name
    gets the same label; it changes only when a name sorting before it with the same label
    joins or leaves them."""
    out = {name: perf_label(name) for name in names}
    if len(set(out.values())) == len(out):
        return out  # the usual case: no two names share a label
    by_label: dict[str, list[str]] = {}
    for name, label in out.items():
        by_label.setdefault(label, []).append(name)
    for label, group in by_label.items():
        for name in sorted(group)[1:]:
            out[name] = f"{label}_{label_suffix(name)}"
    return out


class Perf(nagiosplugin.Performance):  # type: ignore[misc]
    """nagiosplugin's Performance with our number and label formatting."""

    def __str__(self) -> str:
        fields = [
            f"{perf_label(str(self.label))}={fmt_value(self.value)}{self.uom}",
            fmt_range(self.warn),
            fmt_range(self.crit),
            "" if self.min in ("", None) else fmt_value(self.min),
            "" if self.max in ("", None) else fmt_value(self.max),
        ]
        while fields and fields[-1] == "":
            fields.pop()
        return ";".join(fields)


def fmt_value(value: object) -> str:
    """fmt_num for anything numeric, U otherwise."""
    if isinstance(value, int | float):
        return fmt_num(value)
    return "U"


# ---------------------------------------------------------------------------------------------
# Contexts, results, summary
# ---------------------------------------------------------------------------------------------


def metric(
    name: str,
    value: float | int | None,
    *,
    context: str,
    uom: str = "",
    min: float | int | None = None,
    max: float | int | None = None,
) -> nagiosplugin.Metric:
    """A Metric with a sanitised name (the perfdata label)."""
    return nagiosplugin.Metric(perf_label(name), value, uom, min, max, context)


class Threshold(nagiosplugin.ScalarContext):  # type: ignore[misc]
    """A ScalarContext whose hints read like `warning above 50,000` and whose perfdata follows
    our formatting. `describe(metric)` gives the text; `perf=False` keeps it out of perfdata
    (items beyond --max-items are still judged)."""

    def __init__(
        self,
        name: str,
        warning: nagiosplugin.Range | None = None,
        critical: nagiosplugin.Range | None = None,
        fmt_metric: str | Callable[[nagiosplugin.Metric, Any], str] = "{name} is {valueunit}",
        *,
        perf: bool = True,
        unit: str = "",
    ) -> None:
        super().__init__(name, warning, critical, fmt_metric)
        self.perf = perf
        self.unit = unit

    def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
        value = metric.value
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return self.result_cls(nagiosplugin.Ok, None, metric)
        if not self.critical.match(value):
            hint = f"critical {describe_range(self.critical, self.unit)}"
            return self.result_cls(nagiosplugin.Critical, hint, metric)
        if not self.warning.match(value):
            hint = f"warning {describe_range(self.warning, self.unit)}"
            return self.result_cls(nagiosplugin.Warn, hint, metric)
        return self.result_cls(nagiosplugin.Ok, None, metric)

    def performance(self, metric: nagiosplugin.Metric, resource: object) -> Perf | None:
        if not self.perf:
            return None
        return Perf(
            metric.name, metric.value, metric.uom or "", self.warning, self.critical,
            metric.min, metric.max,
        )


class Flag(nagiosplugin.Context):  # type: ignore[misc]
    """A count of bad things (paused queues, stuck queues): OK at 0, else `state`."""

    def __init__(
        self,
        name: str,
        state: int,
        fmt_metric: str | Callable[[nagiosplugin.Metric, Any], str],
        *,
        perf: bool = True,
    ) -> None:
        super().__init__(name, fmt_metric)
        self.state = state
        self.perf = perf

    def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
        if metric.value:
            return self.result_cls(_SERVICE_STATES[self.state], None, metric)
        return self.result_cls(nagiosplugin.Ok, None, metric)

    def performance(self, metric: nagiosplugin.Metric, resource: object) -> Perf | None:
        if not self.perf:
            return None
        return Perf(metric.name, metric.value, metric.uom or "", "", "", metric.min, metric.max)


class Info(nagiosplugin.Context):  # type: ignore[misc]
    """Perfdata only: always OK."""

    def __init__(self, name: str, fmt_metric: str = "{name} is {valueunit}") -> None:
        super().__init__(name, fmt_metric)

    def performance(self, metric: nagiosplugin.Metric, resource: object) -> Perf:
        return Perf(metric.name, metric.value, metric.uom or "", "", "", metric.min, metric.max)


class Summary(nagiosplugin.Summary):  # type: ignore[misc]
    """Status line: the OK text the plugin gives, or the problems, worst first.

    `ok_text(results)` writes the OK line. Problems list every non-OK result with a text,
    worst first, at most `max_problems` of them, then `+N more`.
    """

    def __init__(
        self,
        ok_text: Callable[[nagiosplugin.Results], str] | None = None,
        *,
        max_problems: int = 3,
        suffix: Callable[[nagiosplugin.Results], str] | None = None,
    ) -> None:
        self.ok_text = ok_text
        self.max_problems = max_problems
        self.suffix = suffix

    def ok(self, results: nagiosplugin.Results) -> str:
        text = self.ok_text(results) if self.ok_text else str(results[0])
        return self._with_suffix(text, results)

    def problem(self, results: nagiosplugin.Results) -> str:
        texts = problem_texts(results)
        shown = texts[: self.max_problems]
        line = "; ".join(shown)
        if len(texts) > len(shown):
            line += f"; +{len(texts) - len(shown)} more"
        return self._with_suffix(line, results)

    def _with_suffix(self, text: str, results: nagiosplugin.Results) -> str:
        extra = self.suffix(results) if self.suffix else ""
        return f"{text}; {extra}" if extra and text else (text or extra)

    def verbose(self, results: nagiosplugin.Results) -> list[str]:
        return [
            f"{STATE_NAMES[int(r.state)]}: {r}" for r in results if int(r.state) != OK and str(r)
        ]

    def empty(self) -> str:
        return "no data"


def problem_texts(results: nagiosplugin.Results) -> list[str]:
    """Texts of the non-OK results, worst first (iteration order of Results)."""
    return [str(r) for r in results if int(r.state) != OK and str(r)]


class PmtaCheck(nagiosplugin.Check):  # type: ignore[misc]
    """nagiosplugin.Check that keeps perfdata in the order resources emit it (totals first,
    then items) instead of sorting it alphabetically."""

    def __call__(self) -> None:
        for resource in self.resources:
            self._evaluate_resource(resource)
        self.perfdata: list[str] = [p for p in self.perfdata if p]


class PluginResource(nagiosplugin.Resource):  # type: ignore[misc]
    """A plugin's resource: its arguments and Run, the contexts that judge its metrics and the
    summary that writes the status line. ``Plugin(build_check=MyResource.check)``."""

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        self.args = args
        self.run = run

    @property
    def name(self) -> str:
        return self.run.plugin.name

    def contexts(self) -> list[nagiosplugin.Context]:
        """The contexts of the metrics that probe() yields."""
        return []

    def summary(self) -> Summary:
        """The status line."""
        return Summary()

    @classmethod
    def check(cls, args: argparse.Namespace, run: Run) -> nagiosplugin.Check:
        """The Check of one resource of this class, with its contexts and summary."""
        resource = cls(args, run)
        return PmtaCheck(resource, *resource.contexts(), resource.summary())


_T = TypeVar("_T")


class Labelled(dict[str, _T]):
    """What each per-item metric stands for, by perfdata label: labels are sanitised (no dots
    or slashes), so a text that names the item looks it up here.

    Two names that sanitise alike (`a.b`, `a_b`) get distinct labels: :meth:`reserve` the
    names of a set of items first so each gets the same label whatever their order (see
    :func:`distinct_labels`); a clash with a name not reserved gets a suffix on arrival."""

    def __init__(self) -> None:
        super().__init__()
        self._labels: dict[str, str] = {}  # name -> its label
        self._names: dict[str, str] = {}  # label -> the name it was given to

    def reserve(self, names: Iterable[str]) -> None:
        """Fix the labels of `names`, told apart from each other (call before `metric`)."""
        fresh = [n for n in dict.fromkeys(names) if n not in self._labels]
        for name, label in distinct_labels(fresh).items():
            self._claim(name, label)

    def _claim(self, name: str, label: str) -> str:
        owner = self._names.get(label)
        if owner is not None and owner != name:
            label = f"{label}_{label_suffix(name)}"
        self._labels[name] = label
        self._names.setdefault(label, name)
        return label

    def label(self, name: str) -> str:
        """The perfdata label of `name` in this set."""
        known = self._labels.get(name)
        return known if known is not None else self._claim(name, perf_label(name))

    def metric(self, what: _T, name: str, value: float | int | None, *, context: str,
               **kw: Any) -> nagiosplugin.Metric:
        """A metric (see :func:`metric`) remembered as standing for `what`."""
        m = metric(self.label(name), value, context=context, **kw)
        self[m.name] = what
        return m


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------


class PluginParser(argparse.ArgumentParser):
    """argparse whose errors end the run UNKNOWN (exit 3) with one line."""

    def error(self, message: str) -> NoReturn:
        raise usage_error(message)


def duration(text: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `1h`, `2d`."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration (e.g. 30m, 1h, 3600): {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def positive_duration(text: str) -> float:
    """`duration`, refusing 0 (a window or a growth period of no time measures nothing)."""
    seconds = duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return seconds


def state_choice(text: str) -> int:
    """ok|warning|critical -> 0|1|2."""
    key = text.strip().lower()
    for name, code in STATE_CHOICES.items():
        if name.startswith(key) and key:
            return code
    raise argparse.ArgumentTypeError(f"expected ok, warning or critical, not {text!r}")


def make_parser(
    plugin: Plugin,
    *,
    warning: str | None,
    critical: str | None,
    threshold_help: str,
    connection: bool,
    state: bool,
    min_range: bool = False,
    range_type: Callable[[str], nagiosplugin.Range] | None = None,
) -> PluginParser:
    """The common options of every plugin (add your own after); `range_type` parses -w/-c
    when Nagios ranges do not fit (counts "at N or more")."""
    p = PluginParser(
        prog=plugin.prog,
        description=plugin.description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    rng = range_type or (parse_min_range if min_range else parse_range)
    p.add_argument(
        "-w", "--warning", type=rng, default=rng(warning) if warning else None,
        metavar="RANGE", help=f"warning range: {threshold_help} (default {warning or 'none'})",
    )
    p.add_argument(
        "-c", "--critical", type=rng, default=rng(critical) if critical else None,
        metavar="RANGE", help=f"critical range (default {critical or 'none'})",
    )
    p.add_argument(
        "-t", "--timeout", type=nonneg_float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help="whole-run timeout, fractions allowed; 0 = none (default %(default)s)",
    )
    p.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="-v long output for OK items too, -vvv tracebacks on stderr",
    )
    p.add_argument(
        "-V", "--version", action="version", version=f"%(prog)s (pmta-snmp) {__version__}",
        help="print the version and exit",
    )
    p.add_argument(
        "--max-items", type=nonneg_int, default=DEFAULT_MAX_ITEMS, metavar="N",
        help="per-item perfdata and details for the N worst items (default %(default)s)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--output", choices=("nagios", "zabbix"), default="nagios",
        help="nagios: status line, long output, perfdata, exit code; zabbix: the value only, "
        "exit 0 (default %(default)s)",
    )
    out.add_argument(
        "--json", action="store_true",
        help="zabbix: a JSON object with status, summary, metrics and details",
    )
    if plugin.discovery:
        out.add_argument(
            "--discover", choices=plugin.discovery, metavar="|".join(plugin.discovery),
            help="print Zabbix low-level-discovery JSON and exit",
        )
    if state:
        g = p.add_argument_group("state (rates, seek positions)")
        g.add_argument(
            "--state-dir", metavar="DIR",
            help="default $PMTA_SNMP_STATE_DIR, /var/lib/pmta-snmp if writable, "
            "else ~/.local/state/pmta-snmp",
        )
        g.add_argument(
            "--instance", metavar="NAME",
            help="state file name for this instance (default: a hash of the inputs)",
        )
    if connection:
        from pmta_snmp.cliopts import add_connection_args  # file plugins never import it

        add_connection_args(p)
    return p


_EPILOG = """\
exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (bad arguments, unreachable API, timeout,
unreadable file). Zabbix (--output zabbix): always exit 0; errors print
"ZBX_NOTSUPPORTED: <reason>" (a JSON object with "status": 3 and "error" with --json).
"""


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


# Plugin and Run are no dataclasses: making one costs ~0.5 ms of every run's start.


class Plugin(NamedTuple):
    """What a plugin module hands to :func:`run_plugin`."""

    name: str  # status-line word: PMTA <NAME> OK
    prog: str  # check_pmta_queue
    description: str
    build_parser: Callable[[Plugin], PluginParser]
    build_check: Callable[[argparse.Namespace, Run], nagiosplugin.Check]
    discover: Callable[[argparse.Namespace, Run, str], list[dict[str, str]]] | None = None
    discovery: tuple[str, ...] = ()

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Run the plugin on `argv` (default sys.argv); the exit code (see run_plugin).

        Without `argv` this is the command of a process that exits next (console script,
        `python -m`), run under :func:`_short_lived_process`'s garbage-collection policy.
        """
        if argv is not None:
            return run_plugin(self, argv)
        with _short_lived_process():
            return run_plugin(self, None)


class Run:
    """One invocation: arguments, the current stage (named on timeout), the deadline, notes
    for the long output, details for Zabbix JSON, and factories for state and API client."""

    def __init__(self, plugin: Plugin, args: argparse.Namespace) -> None:
        self.plugin = plugin
        self.args = args
        self.started = time.monotonic()
        self.stage = "starting"
        self.notes: list[str] = []
        self.long: list[str] = []
        self.details: dict[str, Any] = {}
        self.primary: str | None = None
        #: Set when a reader stopped at its deadline (`timed out after 2 s reading X; the
        #: rest is read next run`): an otherwise OK result becomes UNKNOWN, a problem stays.
        self.partial: str | None = None
        self._client: PmtaClient | None = None

    @property
    def deadline(self) -> float | None:
        """time.monotonic() value at which -t runs out (None without a timeout)."""
        t = float(getattr(self.args, "timeout", 0) or 0)
        return self.started + t if t > 0 else None

    def soft_deadline(self, margin: float = 0.15) -> float | None:
        """A deadline a little before -t so a reader can stop cleanly and save its state."""
        d = self.deadline
        if d is None:
            return None
        t = d - self.started
        return self.started + max(t * 0.5, t - max(margin, t * 0.1))

    def remaining(self) -> float | None:
        """Seconds left before -t (None without a timeout)."""
        d = self.deadline
        return None if d is None else max(0.0, d - time.monotonic())

    def enter(self, stage: str) -> None:
        """Name what runs now (`querying PowerMTA /queues`); a timeout names it."""
        self.stage = stage
        d = self.deadline
        if d is not None and time.monotonic() >= d:
            raise CheckTimeout(stage, d - self.started)

    def note(self, text: str) -> None:
        """A remark for the long output (state reset, rotation seen, ...)."""
        self.notes.append(text)

    def stopped_early(self, path: str, progress: str) -> None:
        """A reader stopped at the soft deadline in `path` after `progress`; its state points
        after what it read, so the rest is read next run."""
        self.partial = (
            f"timed out after {fmt_num(float(self.args.timeout))} s reading {path} "
            f"({progress}; the rest is read next run)"
        )

    # -- state -----------------------------------------------------------------------------

    def state_file(self, *keys: str) -> StateFile:
        """The state file of this plugin and instance (named by --instance, else by a hash
        of `keys`, the inputs: URL, paths)."""
        from pathlib import Path

        from pmta_snmp.state import StateFile, default_state_dir, state_path

        directory = Path(self.args.state_dir) if self.args.state_dir else default_state_dir()
        if self.args.instance:
            path = state_path(f"{self.plugin.prog}-{self.args.instance}", directory=directory)
        else:
            path = state_path(self.plugin.prog, *keys, directory=directory)
        remaining = self.remaining()
        wait = 5.0 if remaining is None else max(0.05, min(5.0, remaining * 0.5))
        return StateFile(path, lock_timeout=wait)

    def loaded(self, state: StateFile) -> None:
        """Report a corrupt state file that was reset (call after load/transaction)."""
        if state.warning is not None:
            self.note(str(state.warning))

    # -- PowerMTA API ----------------------------------------------------------------------

    def client_config(self) -> ClientConfig:
        """The connection options, with the API timeout capped by what -t leaves."""
        from pmta_snmp.cliopts import client_config

        args = argparse.Namespace(**vars(self.args))
        remaining = self.remaining()
        if remaining is not None:
            args.api_timeout = max(0.05, min(args.api_timeout, remaining - 0.05))
        return client_config(args)

    def client(self) -> PmtaClient:
        """A PowerMTA API client (httpx is imported only here)."""
        if self._client is None:
            self.enter("loading the API client")
            from pmta_snmp.api import PmtaClient

            config = self.client_config()
            self._client = PmtaClient(config)
        return self._client

    def api(self, what: str, call: Callable[[PmtaClient], Any]) -> Any:
        """Run one API call under a named stage: `run.api("/queues", lambda c: c.queues())`."""
        client = self.client()
        from pmta_snmp.api.errors import redact_url  # loaded with the client already

        self.enter(f"querying PowerMTA {what} at {redact_url(self.args.url)}")
        return call(client)

    def close(self) -> None:
        """Release the API client."""
        if self._client is not None:
            self._client.close()
            self._client = None


class _Alarm:
    """SIGALRM after `seconds` (fractions allowed) raising CheckTimeout with the stage."""

    def __init__(self, run: Run, seconds: float) -> None:
        self.run = run
        self.seconds = seconds
        self.armed = False
        self._previous: Any = None

    def __enter__(self) -> _Alarm:
        if self.seconds > 0 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
            self.armed = True
        return self

    def _fire(self, signum: int, frame: FrameType | None) -> None:
        if self.armed:
            self.armed = False
            raise CheckTimeout(self.run.stage, self.seconds)

    def __exit__(self, *exc: object) -> None:
        self.disarm()

    def disarm(self) -> None:
        if self._previous is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
            self._previous = None
        self.armed = False


#: Allocations between two young-generation collections in a plugin process (Python's
#: default is 700).
_GC_THRESHOLD = 50_000


@contextlib.contextmanager
def _short_lived_process() -> Iterator[None]:
    """The garbage-collection policy of a plugin process, which runs for a fraction of a
    second and exits (about 15 ms of a 130 ms API plugin run, more than any of our modules
    costs to import):

    * young collections are rarer: importing httpx, and httpcore at the first API call,
      makes some 25 000 objects that all live until the exit, and collecting every 700
      allocations walks each of them on its way to the oldest generation (~5 ms). Cycles
      are still collected, so a long file scan cannot grow without bound;
    * everything is frozen once the result is written: the interpreter's shutdown runs full
      collections over every object the imports made (~12 ms) and skips frozen ones. They
      are still released by reference counting and the standard streams are still flushed;
      only objects that a reference cycle keeps alive are left to the OS.

    The agent freezes its long-lived objects for the same reason (`pmta_snmp.agent`). Only
    for the process's own command: a caller running plugins in-process (the tests) keeps its
    collector as it was.
    """
    threshold = gc.get_threshold()
    gc.set_threshold(_GC_THRESHOLD, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.freeze()


def _wants_zabbix(argv: Sequence[str]) -> tuple[bool, bool]:
    """(zabbix output, json) from a raw argv, for errors before or during parsing."""
    zabbix = json_out = False
    for i, arg in enumerate(argv):
        if arg == "--output" and i + 1 < len(argv):
            zabbix = argv[i + 1] == "zabbix"
        elif arg.startswith("--output="):
            zabbix = arg.split("=", 1)[1] == "zabbix"
        elif arg == "--json":
            json_out = True
        elif arg == "--discover" or arg.startswith("--discover="):
            zabbix = True
    return zabbix or json_out, json_out


def run_plugin(plugin: Plugin, argv: Sequence[str] | None = None) -> int:
    """Parse, run and print one plugin; returns the exit code (never raises, never exits,
    except SystemExit from --help)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    zabbix, json_out = _wants_zabbix(argv)
    if zabbix:
        # Zabbix reads stderr into the item value: no Python warning may reach it.
        warnings.simplefilter("ignore")
    out = _Emitter(plugin, zabbix=zabbix, json_out=json_out, verbose=0)
    try:
        args = plugin.build_parser(plugin).parse_args(argv)
    except UsageError as exc:
        return out.error(str(exc))
    out.verbose = args.verbose
    out.zabbix = args.output == "zabbix" or args.json or bool(getattr(args, "discover", None))
    out.json_out = bool(args.json)
    run = Run(plugin, args)
    alarm = _Alarm(run, float(args.timeout or 0))
    try:
        with alarm:
            if getattr(args, "discover", None):
                assert plugin.discover is not None
                items = plugin.discover(args, run, args.discover)
                alarm.disarm()
                return out.discovery(items, run)
            check = plugin.build_check(args, run)
            check()
            alarm.disarm()
        return out.result(check, run)
    except CheckTimeout as exc:
        alarm.disarm()
        return out.error(str(exc), run)
    except Exception as exc:  # one line, never a traceback on stdout
        alarm.disarm()
        text = _error_text(exc)
        if type(exc).__name__ == "PmtaTimeout":
            remaining = run.remaining()
            if remaining is not None and remaining < 0.1:  # -t, not --api-timeout, ran out
                text = str(CheckTimeout(run.stage, float(args.timeout)))
            else:
                text += f" (--api-timeout {fmt_num(float(args.api_timeout))} s)"
        return out.error(text, run, exc=exc)
    finally:
        alarm.disarm()
        with contextlib.suppress(Exception):  # closing a pool must not change the result
            run.close()


def _error_text(exc: BaseException) -> str:
    from pmta_snmp.state import StateError

    if isinstance(exc, PluginError | StateError):
        return str(exc)
    if type(exc).__module__.startswith("pmta_snmp.api"):
        return str(exc)  # PmtaError and subclasses: messages written for people
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot read{where}: {exc.strerror or exc}"
    if isinstance(exc, UnicodeError | ValueError):
        return f"cannot parse input: {exc}"
    return f"internal error: {type(exc).__name__}: {exc} (run with -vvv for the traceback)"


class _Emitter:
    """Renders results or errors in Nagios or Zabbix form; returns the exit code."""

    def __init__(self, plugin: Plugin, *, zabbix: bool, json_out: bool, verbose: int) -> None:
        self.plugin = plugin
        self.zabbix = zabbix
        self.json_out = json_out
        self.verbose = verbose

    def prefix(self, state: int) -> str:
        return f"PMTA {self.plugin.name} {STATE_NAMES[state]}"

    def error(
        self, reason: str, run: Run | None = None, *, exc: BaseException | None = None
    ) -> int:
        reason = _one_line(reason)
        if self.zabbix:
            if self.json_out:
                doc = {"status": UNKNOWN, "state": "UNKNOWN", "summary": reason, "error": reason,
                       "metrics": {}, "details": {}}
                _write(json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n")
            else:
                _write(f"{ZBX_NOTSUPPORTED}: {reason}\n")
            return 0
        lines = [f"{self.prefix(UNKNOWN)} - {reason}"]
        if run is not None:
            lines += [_one_line(n) for n in run.notes]
        _write(_fit(lines, []))
        if exc is not None and self.verbose >= 3:
            import traceback

            sys.stderr.write("".join(traceback.format_exception(exc)))
        return UNKNOWN

    def discovery(self, items: list[dict[str, str]], run: Run) -> int:
        _write(json.dumps(items, separators=(",", ":"), ensure_ascii=False) + "\n")
        if run.notes and not _stderr_is_stdout():
            sys.stderr.write("".join(_one_line(n) + "\n" for n in run.notes))
            sys.stderr.flush()
        return 0

    def result(self, check: nagiosplugin.Check, run: Run) -> int:
        state = int(check.state) if check.results else UNKNOWN
        summary = _one_line(check.summary_str)
        if run.partial:
            if state == OK:
                state = UNKNOWN
                summary = f"{run.partial}; so far: {summary}"
            else:
                summary = f"{summary}; {run.partial}"
        if len(summary) > MAX_SUMMARY_CHARS:
            summary = summary[: MAX_SUMMARY_CHARS - 3] + "..."
        if run.notes and state == OK and self.verbose == 0:
            summary += f" ({len(run.notes)} note{'s' if len(run.notes) > 1 else ''} below)"
        if self.zabbix:
            return self._zabbix(check, run, state, summary)
        lines = [f"{self.prefix(state)} - {summary}" if summary else self.prefix(state)]
        long = [] if state == OK and self.verbose == 0 else check.verbose_str
        long_lines = list(long) if isinstance(long, list | tuple) else [long] if long else []
        if len(long_lines) == 1 and long_lines[0].split(": ", 1)[-1] == summary:
            long_lines = []  # nothing the status line does not already say
        long_lines += run.notes
        if self.verbose:
            long_lines += run.long
        _write(_fit(lines + [_one_line(x) for x in long_lines if x], list(check.perfdata)))
        return state

    def _zabbix(self, check: nagiosplugin.Check, run: Run, state: int, summary: str) -> int:
        metrics: dict[str, float | int | None] = {}
        for result in check.results.results:
            m = result.metric
            if m is not None and isinstance(m.value, int | float):
                metrics.setdefault(m.name, m.value)
        if self.json_out:
            doc = {
                "status": state,
                "state": STATE_NAMES[state],
                "summary": summary,
                "metrics": {k: _json_num(v) for k, v in metrics.items()},
                "details": run.details,
            }
            if run.notes:
                doc["notes"] = run.notes
            _write(json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n")
            return 0
        key = run.primary if run.primary in metrics else next(iter(metrics), None)
        if key is None:
            _write(f"{ZBX_NOTSUPPORTED}: {summary or 'no value'}\n")
        else:
            _write(fmt_num(metrics[key]) + "\n")
        return 0


def _json_num(value: float | int | None) -> float | int | None:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, float):
        return round(value, 6)
    return value


#: Control characters (C0, DEL, C1) that whitespace folding leaves: NUL ends the output for
#: Nagios (the perfdata is lost), ESC and BEL act on a terminal showing the output.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _one_line(text: str) -> str:
    """No newlines, no control characters (shown as `?`) and no `|` (the perfdata
    separator) inside a line of text: it may quote log lines or API answers."""
    return _CONTROL.sub("?", " ".join(str(text).replace("|", "/").split()))


def _fit(lines: list[str], perfdata: list[str]) -> str:
    """Status line, long output and `| perfdata` within MAX_OUTPUT_BYTES: long output lines
    are dropped first (with a marker), then trailing (per-item) perfdata."""

    def render(body: list[str], perf: list[str]) -> str:
        text = "\n".join(body)
        if perf:
            text += ("\n| " if len(body) > 1 else " | ") + " ".join(perf)
        return text + "\n"

    body, perf = list(lines), list(perfdata)
    text = render(body, perf)
    dropped = 0
    while len(text.encode("utf-8", "replace")) > MAX_OUTPUT_BYTES and len(body) > 1:
        body.pop()
        dropped += 1
        marker = [f"... {dropped} more line{'s' if dropped > 1 else ''} not shown"]
        text = render(body + marker, perf)
    if dropped:
        body.append(f"... {dropped} more line{'s' if dropped > 1 else ''} not shown")
    while len(text.encode("utf-8", "replace")) > MAX_OUTPUT_BYTES and perf:
        perf.pop()
        text = render(body, perf)
    if len(text.encode("utf-8", "replace")) > MAX_OUTPUT_BYTES:
        text = text.encode("utf-8", "replace")[: MAX_OUTPUT_BYTES - 4].decode(
            "utf-8", "ignore"
        ) + "...\n"
    return text


def _stderr_is_stdout() -> bool:
    """True when stderr is the same pipe or file as stdout (a Zabbix agent's one pipe,
    `2>&1`), where a note would land inside the JSON; a terminal is never the same."""
    if sys.stderr is sys.stdout:
        return True
    try:
        if os.isatty(sys.stderr.fileno()):
            return False
        out, err = os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):  # io.UnsupportedOperation is both: no file descriptor
        return False
    return (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)


def _write(text: str) -> None:
    """UTF-8 to stdout whatever the locale (log lines may carry any byte)."""
    stream = sys.stdout
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(text)
        stream.flush()
        return
    stream.flush()
    buffer.write(text.encode("utf-8", "replace"))
    buffer.flush()


# ---------------------------------------------------------------------------------------------
# Small helpers for plugins
# ---------------------------------------------------------------------------------------------


def top_items(values: Mapping[str, float], n: int) -> list[tuple[str, float]]:
    """The n largest (name, value) pairs, ties by name."""
    return sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def lld(kind: str, names: Iterable[str], **extra: Callable[[str], str]) -> list[dict[str, str]]:
    """Low-level-discovery rows for `names` with the kind's macro (plus extra macros)."""
    macro = DISCOVERY_MACROS[kind]
    rows = []
    for name in sorted(set(names)):
        row = {macro: name}
        for key, fn in extra.items():
            row["{#" + key.upper() + "}"] = fn(name)
        rows.append(row)
    return rows


def input_key(*parts: object) -> str:
    """A stable text of the inputs that name a state file (paths made absolute)."""
    out = []
    for p in parts:
        if isinstance(p, str | os.PathLike) and os.fspath(p).startswith(("/", ".")):
            out.append(os.path.abspath(os.fspath(p)))
        else:
            out.append(str(p))
    return "\0".join(out)
