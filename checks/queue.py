"""check_pmta_queue: queued recipients, per domain / VirtualMTA / queue, paused and backoff
queues, stuck queues and a growing deferred (backoff) backlog.

Data comes from PowerMTA's real API: `/status` (`status/queue/smtp/rcp`, the queue depth of
the operating rules) and the queues (`domain/vmta` with `paused`, `mode`, `conn` and
`retryTime`) on every run; the domains and VirtualMTAs, which can be many, only when an option
needs them (`--domain`, `--vmta`, their per-item rules, or `--item-perfdata domain,vmta`).
With an API key each list comes whole from the CLI's list commands through POST /command
(`show queues --maxitems=N`); without one from the pages, which show only PowerMTA's top
`http-default-max-items` rows (10 by default): the long output then says which per-item rules
may miss rows. `--discover` (Zabbix LLD) reads the same lists; when one lacks rows it says
how many on stderr, unless stderr is stdout's pipe (a Zabbix agent), where it would break the
JSON. Stuck and growing queues need history, kept in the state file:

* stuck: a queue above `--stuck-floor` recipients that shows no delivery progress (no
  connections, in backoff, or its next retry still ahead) and has not decreased, seen so for
  `--stuck-minutes` minutes of wall-clock time, however often the check runs. A queue that
  is growing while it delivers (an injection wave) is not stuck; paused queues are reported
  as paused. `--stuck-runs` (deprecated: it depends on the check interval) counts runs instead;
* growing deferred backlog: real PowerMTA has no "deferred queue", so the recipients of queues
  in `backoff` mode stand for it; it alerts when it has grown without a decrease for longer
  than `--deferred-growth` (default 30 minutes).
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import nagiosplugin

from pmta_snmp.argtypes import nonneg_float, nonneg_int

from .base import (
    WARNING,
    Flag,
    Info,
    Labelled,
    Plugin,
    PluginParser,
    PluginResource,
    Run,
    Summary,
    Threshold,
    duration,
    human,
    input_key,
    lld,
    make_parser,
    metric,
    parse_range,
    state_choice,
    top_items,
)

if TYPE_CHECKING:
    from datetime import datetime

    from pmta_snmp.api import PmtaClient
    from pmta_snmp.model import Domain, ListCompleteness, Queue, Status, Vmta

DEFAULT_WARNING = "50000"
DEFAULT_CRITICAL = "100000"
#: History older than this is forgotten (a queue not seen for a day starts over).
_FORGET_S = 86400
#: Wall clock of the stuck/growth history (tests replace it).
clock: Callable[[], float] = time.time
#: Runs closer together than this count as one for --stuck-runs.
_MIN_RUN_GAP_S = 20.0


# No dataclasses here: making one costs ~0.5 ms of every run's start.


class QueueData(NamedTuple):
    """What the API returned, narrowed to the selection."""

    status: Status | None
    queues: list[Queue]
    domains: list[Domain]
    vmtas: list[Vmta]
    total: int
    total_source: str
    lists: dict[str, ListCompleteness]
    """How complete PowerMTA's lists were, by kind (`queue`, `domain`, `vmta`), as read."""
    coverage: list[str]
    """A line per list whose per-item rules may miss rows."""


class Stuck(NamedTuple):
    """A queue without delivery progress: for how long, over how many runs, and why."""

    name: str
    rcp: int
    runs: int
    seconds: float
    why: str  # "no connections, in backoff"


class History:
    """Findings from the state file: stuck queues and the deferred backlog's growth."""

    def __init__(self) -> None:
        self.stuck: list[Stuck] = []
        self.deferred_growing_s = 0.0
        self.deferred_base = 0


ITEM_KINDS = ("queue", "domain", "vmta")


def item_kinds(text: str) -> tuple[str, ...]:
    """`queue,domain` -> ("queue", "domain"); `none` -> ()."""
    kinds = tuple(dict.fromkeys(k.strip().lower() for k in text.split(",") if k.strip()))
    if kinds == ("none",):
        return ()
    bad = [k for k in kinds if k not in ITEM_KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(
            f"expected kinds among {', '.join(ITEM_KINDS)} (or none), not {text!r}")
    return kinds


def no_progress(q: Queue, now: datetime | None) -> str:
    """Why `q` shows no delivery progress right now (`no connections, in backoff, next retry
    at 09:35:42`), or "" when it is delivering: connected, in normal mode, no retry ahead."""
    why = []
    if q.conn <= 0:
        why.append("no connections")
    if q.mode.value == "backoff":
        why.append("in backoff")
    if now is not None and q.retry_time:
        from pmta_snmp.api.parse import to_time

        retry = to_time(q.retry_time)
        if retry is not None and retry > now:
            why.append(f"next retry at {retry:%H:%M:%S}")
    return ", ".join(why)


def _match(name: str, patterns: Sequence[str]) -> bool:
    low = name.lower()
    return any(fnmatch.fnmatchcase(low, p.lower()) for p in patterns)


class QueueResource(PluginResource):
    """Reads the queue pages, applies the selection, updates the history, yields metrics."""

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        super().__init__(args, run)
        self.data: QueueData | None = None
        self.history = History()
        #: perfdata label -> the item's real name
        self.names: Labelled[str] = Labelled()
        self.stuck_info: dict[str, Stuck] = {}

    def item(self, label: str, name: str, value: float, context: str) -> nagiosplugin.Metric:
        """A per-item metric whose text can name the item as PowerMTA does."""
        return self.names.metric(name, label, value, context=context, min=0)

    def needs(self) -> tuple[bool, bool]:
        """Whether this run needs (/domains, /vmtas): each lists every destination domain or
        VirtualMTA with mail, heavy on a large PowerMTA, so only when an option asks."""
        a = self.args
        narrowed = bool(a.vmta or a.queue)
        domains = not narrowed and bool(
            a.domain or a.domain_warning or a.domain_critical or "domain" in a.item_perfdata)
        vmtas = not (a.domain or a.queue) and bool(
            a.vmta or a.vmta_warning or a.vmta_critical or "vmta" in a.item_perfdata)
        return domains, vmtas

    def fetch(self) -> QueueData:
        """Query PowerMTA (only the pages the options need) and narrow to the selection."""
        a, run = self.args, self.run
        want_domains, want_vmtas = self.needs()
        status = run.api("/status", lambda c: c.status())
        lists: dict[str, ListCompleteness] = {}
        by_command = run.client().lists_by_command

        def what(kind: str) -> str:
            return f"show {kind}s (POST /command)" if by_command else f"/{kind}s"

        rows, lists["queue"] = run.api(what("queue"), lambda c: c.queue_list(status))
        queues = list(rows)
        coverage = _coverage("queue", lists["queue"], queues, status, a.max_list_items)
        domains: list[Domain] = []
        vmtas: list[Vmta] = []
        if want_domains:
            rows, lists["domain"] = run.api(what("domain"), lambda c: c.domain_list(status))
            domains = list(rows)
            coverage += _coverage("domain", lists["domain"], domains, status, a.max_list_items)
        if want_vmtas:
            rows, lists["vmta"] = run.api(what("vmta"), lambda c: c.vmta_list(status))
            vmtas = list(rows)
            coverage += _coverage("vmta", lists["vmta"], vmtas, status, a.max_list_items)
        run.enter("evaluating queues")
        narrowed = bool(a.domain or a.vmta or a.queue)
        if a.domain:
            queues = [q for q in queues if _match(q.domain, a.domain)]
            domains = [d for d in domains if _match(d.name, a.domain)]
        if a.vmta:
            queues = [q for q in queues if _match(q.vmta, a.vmta)]
            vmtas = [v for v in vmtas if _match(v.name, a.vmta)]
        # A domain's row spans all its VirtualMTAs and a VirtualMTA's all its domains: under
        # the other kind of selection they would mislead, so they are left out.
        if a.domain:
            vmtas = []
        if a.vmta or a.queue:
            domains = []
        if a.queue:
            vmtas = []
        if a.queue:
            queues = [q for q in queues if _match(q.name, a.queue)]
        if a.domain and not a.vmta:
            # The selected domains have their own rows (all VirtualMTAs); a domain without
            # a row in /domains falls back to its queues in /queues.
            seen = {d.name.lower() for d in domains}
            extra = sum(q.rcp for q in queues if q.domain.lower() not in seen)
            total, source = sum(d.rcp for d in domains) + extra, "domains"
            if a.queue:
                total, source = sum(q.rcp for q in queues), "queues"
        elif a.vmta and not a.domain and not a.queue:
            total, source = sum(v.rcp for v in vmtas), "vmtas"
        elif narrowed:
            total, source = sum(q.rcp for q in queues), "queues"
        else:
            total, source = status.queued_recipients, "status"
        return QueueData(status, queues, domains, vmtas, total, source, lists, coverage)

    def update_history(self, data: QueueData) -> None:
        """Stuck queues and deferred growth from the state file (read-modify-write)."""
        a, run = self.args, self.run
        if a.stuck_runs == 0 and a.stuck_minutes == 0 and a.deferred_growth == 0:
            return
        if a.stuck_runs:
            run.note("--stuck-runs is deprecated: how many runs make a queue stuck depends on "
                     "how often the check runs; use --stuck-minutes")
        keys = [input_key(a.url), *sorted(a.domain or ()), "|", *sorted(a.vmta or ())]
        keys += ["|", *sorted(a.queue or ())]
        state = run.state_file(*keys)
        run.enter(f"updating state file {state.path}")
        now = clock()
        with state.transaction() as doc:
            run.loaded(state)
            self.history = self._advance(doc, data, now)

    def _advance(self, doc: dict[str, Any], data: QueueData, now: float) -> History:
        a = self.args
        hist = History()
        old = doc.get("queues")
        old_queues: dict[str, Any] = old if isinstance(old, dict) else {}
        new: dict[str, dict[str, float]] = {}
        # PowerMTA's own clock, for its retry times (PowerMTA-local, no zone).
        pmta_now = data.status.runtime.time_now if data.status is not None else None
        for q in data.queues:
            if q.rcp < a.stuck_floor or q.paused:
                continue
            why = no_progress(q, pmta_now)
            if not why:
                continue  # delivering (connected, normal mode, no retry ahead): not stuck
            prev = _streak(old_queues.get(q.name), now)
            if prev is not None and q.rcp >= prev["last"]:
                # Runs closer together than _MIN_RUN_GAP_S (a manual re-run) count once.
                step = now - prev["seen"] >= _MIN_RUN_GAP_S
                entry = {
                    "since": prev["since"],
                    "runs": int(prev["runs"]) + step,
                    "last": q.rcp,
                    "seen": now if step else prev["seen"],
                }
            else:
                entry = {"since": now, "runs": 1, "last": q.rcp, "seen": now}
            new[q.name] = entry
            span = now - entry["since"]
            runs = int(entry["runs"])
            by_runs = a.stuck_runs > 0 and runs >= a.stuck_runs
            by_time = a.stuck_minutes > 0 and span >= a.stuck_minutes * 60
            if by_runs or by_time:
                hist.stuck.append(Stuck(q.name, q.rcp, runs, span, why))
        doc["queues"] = new
        deferred = sum(q.rcp for q in data.queues if q.mode.value == "backoff")
        prev_d = _streak(doc.get("deferred"), now, keys=("since", "base", "last"))
        if prev_d is not None and deferred >= prev_d["last"] and deferred > 0:
            cur = {"since": prev_d["since"], "base": prev_d["base"], "last": deferred}
        else:
            cur = {"since": now, "base": deferred, "last": deferred}
        cur["seen"] = now
        doc["deferred"] = cur
        if deferred > cur["base"]:
            hist.deferred_growing_s = now - cur["since"]
            hist.deferred_base = int(cur["base"])
        hist.stuck.sort(key=lambda s: (-s.rcp, s.name))
        return hist

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        a, run = self.args, self.run
        data = self.data = self.fetch()
        self.update_history(data)
        hist = self.history
        run.enter("evaluating queues")
        n = a.max_items
        yield metric("rcpt", data.total, context="total", min=0)
        yield metric("queues", len(data.queues), context="info", min=0)
        paused = [q for q in data.queues if q.paused]
        backoff = [q for q in data.queues if q.mode.value == "backoff"]
        deferred = sum(q.rcp for q in backoff)
        yield metric("paused", len(paused), context="paused_count", min=0)
        yield metric("backoff", len(backoff), context="backoff_count", min=0)
        yield metric("deferred_rcpt", deferred, context="deferred", min=0)
        yield metric("stuck", len(hist.stuck), context="stuck_count", min=0)
        if a.deferred_growth > 0:
            grow_min = hist.deferred_growing_s / 60
            yield metric(
                "deferred_growing_minutes", round(grow_min, 1), context="deferred_growth",
                uom="", min=0,
            )
        # Labels of names that sanitise alike (`a.b`, `a_b`) are told apart, whatever the order.
        self.names.reserve(f"paused {q.name}" for q in paused)
        self.names.reserve(f"stuck {s.name}" for s in hist.stuck)
        self.names.reserve(f"backoff {q.name}" for q in backoff)
        # One result per paused/stuck queue so the status line can name them.
        for q in paused:
            yield self.item(f"paused {q.name}", q.name, q.rcp, "paused_queue")
        for stuck in hist.stuck:
            m = self.item(f"stuck {stuck.name}", stuck.name, stuck.rcp, "stuck_queue")
            self.stuck_info[m.name] = stuck
            yield m
        if a.backoff_state:
            for q in backoff:
                yield self.item(f"backoff {q.name}", q.name, q.rcp, "backoff_queue")
        # Per-item values: all judged against their thresholds, perfdata for the top N.
        for kind, rows in (("queue", data.queues), ("domain", data.domains),
                           ("vmta", data.vmtas)):
            values = {r.name: r.rcp for r in rows}
            judged = getattr(a, f"{kind}_warning") or getattr(a, f"{kind}_critical")
            shown = kind in a.item_perfdata or judged
            top = {name for name, _ in top_items(values, n)} if shown else set()
            # Labels for the items reported (all of them when judged): 100k rows cost seconds.
            self.names.reserve(f"{kind}_{name}_rcpt" for name in (values if judged else top))
            for name, value in sorted(values.items(), key=lambda kv: (-kv[1], kv[0])):
                if name in top:
                    yield self.item(f"{kind}_{name}_rcpt", name, value, f"{kind}_item")
                elif judged:
                    yield self.item(f"{kind}_{name}_rcpt", name, value, f"{kind}_item_np")
        run.details = {
            "total": data.total,
            "paused": [q.name for q in paused],
            "backoff": [q.name for q in backoff],
            "stuck": [s.name for s in hist.stuck],
            "deferred_rcpt": deferred,
            "queues": _detail_rows(data.queues, n),
            "domains": _detail_rows(data.domains, n),
            "vmtas": _detail_rows(data.vmtas, n),
        }
        run.details["lists"] = {
            kind: {"source": found.source.value, "listed": found.listed, "known": found.known}
            for kind, found in data.lists.items()
        }
        run.primary = "rcpt"
        for line in data.coverage:
            run.note(line)
        run.long.extend(_long_lines(data, n))

    def contexts(self) -> list[nagiosplugin.Context]:
        """Threshold contexts of the totals and the items."""
        args, names = self.args, self.names
        where = ""
        if args.domain or args.vmta or args.queue:
            where = " for " + ", ".join([*(args.domain or ()), *(args.vmta or ()),
                                         *(args.queue or ())])

        def stuck_text(m: nagiosplugin.Metric, ctx: object) -> str:
            stuck = self.stuck_info[m.name]
            return (
                f"queue {names[m.name]} stuck at {human(m.value)} rcpt (no delivery progress "
                f"for {stuck.seconds / 60:.0f} min, {stuck.runs} runs: {stuck.why})"
            )

        contexts = [
            Threshold(
                "total", args.warning, args.critical,
                lambda m, c: f"{human(m.value)} recipients queued{where}",
            ),
            Info("info"),
            Flag("paused_count", 0, "{value} paused queues"),
            Flag("backoff_count", 0, "{value} queues in backoff"),
            Info("deferred"),
            Flag("stuck_count", 0, "{value} stuck queues"),
            Threshold(
                "deferred_growth",
                parse_range(f"{args.deferred_growth / 60:g}") if args.deferred_growth else None,
                None,
                lambda m, c: f"deferred (backoff) recipients growing for {m.value:.0f} min "
                f"(from {human(self.history.deferred_base)})",
            ),
            Flag(
                "paused_queue", args.paused_state,
                lambda m, c: f"queue {names[m.name]} paused ({human(m.value)} rcpt)", perf=False,
            ),
            Flag("stuck_queue", args.stuck_state, stuck_text, perf=False),
            Flag(
                "backoff_queue", args.backoff_state,
                lambda m, c: f"queue {names[m.name]} in backoff ({human(m.value)} rcpt)",
                perf=False,
            ),
        ]
        for kind in ("queue", "domain", "vmta"):
            w, c = getattr(args, f"{kind}_warning"), getattr(args, f"{kind}_critical")

            def fmt(m: nagiosplugin.Metric, ctx: object, kind: str = kind) -> str:
                return f"{kind} {names[m.name]} {human(m.value)} rcpt"

            contexts.append(Threshold(f"{kind}_item", w, c, fmt))
            contexts.append(Threshold(f"{kind}_item_np", w, c, fmt, perf=False))
        return contexts

    def summary(self) -> Summary:
        return QueueSummary(self)


def _streak(
    obj: object, now: float, keys: tuple[str, ...] = ("since", "runs", "last")
) -> dict[str, float] | None:
    """A stored streak if well-formed and recent (a state file may hold anything)."""
    if not isinstance(obj, dict):
        return None
    out: dict[str, float] = {}
    for key in (*keys, "seen"):
        value = obj.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        out[key] = float(value)
    if not 0 <= now - out["seen"] < _FORGET_S:
        return None
    return out


def _detail_rows(rows: Sequence[Queue | Domain | Vmta], n: int) -> dict[str, dict[str, Any]]:
    ranked = sorted(rows, key=lambda r: (-r.rcp, r.name))[:n]
    out: dict[str, dict[str, Any]] = {}
    for r in ranked:
        row: dict[str, Any] = {"rcpt": r.rcp, "kb": r.kb, "conn": r.conn}
        paused = getattr(r, "paused", None)
        if paused is not None:
            row["paused"] = paused
            row["mode"] = str(getattr(r, "mode", "normal"))
        out[r.name] = row
    return out


_RULES = {
    "queue": "paused, backoff, stuck and --queue-* rules",
    "domain": "--domain and --domain-* rules",
    "vmta": "--vmta and --vmta-* rules",
}


def _coverage(
    kind: str,
    found: ListCompleteness,
    rows: Sequence[Queue | Domain | Vmta],
    status: Status,
    max_list_items: int,
) -> list[str]:
    """A line when the per-item rules of `kind` may miss rows: PowerMTA has more than it
    listed, or it gave no count while the list is as long as a page (or --max-list-items)
    allows and its rows lack some of the queued recipients."""
    from pmta_snmp.api.client import PAGE_DEFAULT_ITEMS

    by_page = found.source.value == "page"
    if found.complete:
        return []
    if not found.missing:
        full = PAGE_DEFAULT_ITEMS if by_page else max_list_items
        if found.listed < full or sum(r.rcp for r in rows) >= status.queued_recipients:
            return []
    where = f"/{kind}s" if by_page else f"show {kind}s --maxitems={max_list_items}"
    if found.missing:
        some = "at least " if not found.exact else ""
        seen = (f"only {found.listed} of {some}{found.known} {kind}s listed by {where}: "
                f"the {_RULES[kind]} miss {some}{found.missing}")
    else:
        seen = (f"{found.listed} {kind}s listed by {where}, which may not be all: the "
                f"{_RULES[kind]} may miss others")
    hint = ("give the plugin an API key (--api-key-file or PMTA_API_KEY) to list them all "
            "through POST /command, or raise http-default-max-items in PowerMTA's config"
            if by_page else "raise --max-list-items")
    return [f"{seen}; {hint}"]


def _long_lines(data: QueueData, n: int) -> list[str]:
    lines = []
    for q in sorted(data.queues, key=lambda q: (-q.rcp, q.name))[:n]:
        flags = [f for f, on in (("paused", q.paused), ("backoff", q.mode.value == "backoff"))
                 if on]
        err = f" last error: {q.last_error[:80]}" if q.last_error else ""
        lines.append(
            f"queue {q.name}: {human(q.rcp)} rcpt, {q.conn} conn"
            f"{' (' + ', '.join(flags) + ')' if flags else ''}{err}"
        )
    return lines


class QueueSummary(Summary):
    """OK: total, queue count, worst offenders; problems: worst first."""

    def __init__(self, resource: QueueResource) -> None:
        super().__init__(self._ok, max_problems=4)
        self.resource = resource

    def _ok(self, results: nagiosplugin.Results) -> str:
        data = self.resource.data
        assert data is not None
        text = f"{human(data.total)} recipients queued"
        bits = []
        paused = [q for q in data.queues if q.paused]
        backoff = [q for q in data.queues if q.mode.value == "backoff"]
        if paused:
            bits.append(f"{len(paused)} paused")
        if backoff:
            bits.append(f"{len(backoff)} in backoff")
        if bits:
            text += f" ({', '.join(bits)})"
        return text + self._top(data)

    @staticmethod
    def _top(data: QueueData) -> str:
        top = sorted(data.queues, key=lambda q: (-q.rcp, q.name))[:3]
        top = [q for q in top if q.rcp > 0]
        if not top:
            return ""
        return "; top: " + ", ".join(f"{q.name} {human(q.rcp)}" for q in top)

    def problem(self, results: nagiosplugin.Results) -> str:
        line = super().problem(results)
        data = self.resource.data
        if data is not None and "recipients queued" not in line:
            line = f"{human(data.total)} recipients queued; {line}"
        return line


def discover(args: argparse.Namespace, run: Run, kind: str) -> list[dict[str, str]]:
    """LLD: VirtualMTAs, domains or queues PowerMTA reports now, from the same lists as the
    check and the agents (POST /command with an API key, else the pages' top rows); a list
    that lacks rows is a note, which base writes on stderr when that is safe for the JSON."""
    from pmta_snmp.api.client import Listing, list_warning

    one = kind[:-1]  # vmta, domain, queue: the list's kind
    status = run.api("/status", lambda c: c.status())
    client = run.client()
    where = f"show {kind} (POST /command)" if client.lists_by_command else f"/{kind}"
    calls: dict[str, Callable[[PmtaClient], Any]] = {
        "vmta": lambda c: c.vmta_list(status),
        "domain": lambda c: c.domain_list(status),
        "queue": lambda c: c.queue_list(status),
    }
    rows, found = run.api(where, calls[one])
    text = list_warning(one, Listing(rows, found.source), found, status, args.max_list_items)
    if text is not None:
        run.note(f"--discover {kind} is incomplete: {text}")
        refusal = client.command_refusal
        if refusal is not None and found.source.value == "page":
            run.note(f"--discover {kind}: the pages served instead of the list commands: "
                     f"{refusal}")
    names = (r.name for r in rows)
    if kind != "queues":
        return lld(kind, names)
    return lld(
        kind, names,
        domain=lambda n: n.rsplit("/", 1)[0],
        vmta=lambda n: n.rsplit("/", 1)[1] if "/" in n else "{default}",
    )


def build_parser(plugin: Plugin) -> PluginParser:
    """Options of check_pmta_queue."""
    p = make_parser(
        plugin, warning=DEFAULT_WARNING, critical=DEFAULT_CRITICAL,
        threshold_help="queued recipients (smtp queue, or the selection)",
        connection=True, state=True,
    )
    g = p.add_argument_group("selection (like `show queues DOMAIN/*`; wildcards allowed)")
    g.add_argument("--domain", action="append", metavar="DOMAIN",
                   help="only queues to this destination domain (repeatable)")
    g.add_argument("--vmta", action="append", metavar="VMTA",
                   help="only queues of this VirtualMTA (repeatable)")
    g.add_argument("--queue", action="append", metavar="DOMAIN/VMTA",
                   help="only this queue (repeatable)")
    g = p.add_argument_group("per-item thresholds (recipients; default: none)")
    g.add_argument("--item-perfdata", type=item_kinds, default=("queue",), metavar="KINDS",
                   help="per-item perfdata for these kinds: queue, domain, vmta (comma-separated) "
                   "or none; a kind with a rule below always has it. domain and vmta read "
                   "PowerMTA's /domains and /vmtas pages, large with many domains "
                   "(default queue)")
    for kind in ("queue", "domain", "vmta"):
        g.add_argument(f"--{kind}-warning", type=parse_range, metavar="RANGE",
                       help=f"warning range for each {kind}")
        g.add_argument(f"--{kind}-critical", type=parse_range, metavar="RANGE",
                       help=f"critical range for each {kind}")
    g = p.add_argument_group("paused, backoff, stuck and growing queues")
    g.add_argument("--paused-state", type=state_choice, default=WARNING, metavar="STATE",
                   help="state for a paused queue: ok|warning|critical (default warning)")
    g.add_argument("--backoff-state", type=state_choice, default=0, metavar="STATE",
                   help="state for a queue in backoff (default ok: reported only)")
    g.add_argument("--stuck-floor", type=nonneg_int, default=1000, metavar="RCPT",
                   help="only queues above this many recipients can be stuck "
                   "(default %(default)s)")
    g.add_argument("--stuck-minutes", type=nonneg_float, default=15.0, metavar="MIN",
                   help="stuck after MIN minutes without delivery progress (no connections, "
                   "in backoff, or the next retry ahead) and without a decrease, however often "
                   "the check runs; 0 = off (default %(default)s)")
    g.add_argument("--stuck-runs", type=nonneg_int, default=0, metavar="N",
                   help="DEPRECATED (depends on how often the check runs; use --stuck-minutes): "
                   "also stuck after N runs without progress; 0 = off (default %(default)s)")
    g.add_argument("--stuck-state", type=state_choice, default=WARNING, metavar="STATE",
                   help="state for a stuck queue (default warning)")
    g.add_argument("--deferred-growth", type=duration, default=1800.0, metavar="DURATION",
                   help="warn when backoff recipients grew for longer than this; 0 = off "
                   "(default 30m)")
    return p


PLUGIN = Plugin(
    name="QUEUE",
    prog="check_pmta_queue",
    description="PowerMTA queued recipients, paused/backoff/stuck queues (HTTP API).",
    build_parser=build_parser,
    build_check=QueueResource.check,
    discover=discover,
    discovery=("vmtas", "domains", "queues"),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of check_pmta_queue."""
    return PLUGIN.main(argv)


if __name__ == "__main__":
    sys.exit(main())
