"""The outcomes engine: deliverability counters kept from the accounting files as they grow.

It follows the files of ``files`` (a path with its rotations, or a glob) with
:class:`~pmta_snmp.acct.reader.AcctReader`, counts each pass's new records through the tally
(the C scanner where it is built: one key per distinct type, minute, provider inputs, source
IP, VirtualMTA, sending domain, reply template and delay bucket), classifies each distinct key
once (:class:`~pmta_snmp.outcomes.classify.Classifier`) and adds it to cumulative counters and
to recent slots (minutes for the last hour, ten minutes for the last day).

The reading position (the reader's state) and the counters are saved together, atomically, in
one state file (:mod:`pmta_snmp.state`), so a restart continues where the saved counters stop:
no record is counted twice or lost, and the counters do not reset. On a first start (no state
for these files) the engine reads back ``backfill`` seconds of existing records, found by
``timeLogged`` (:func:`~pmta_snmp.acct.seek.state_since`), never by reading a file whole.

Dimensions that grow with the traffic (source IPs, sending domains, source IP x VirtualMTA x
provider, complaints' sending domains) are capped: the first values met are kept (cap - 1 of
them), later ones are counted under ``(other)``, so every counter only grows. Sending domains
are admitted by deliveries, bounces and deferrals only; the sending domains of complaints
have their own cap.

After each pass :attr:`OutcomesEngine.view` is a new :class:`OutcomesView`. The engine knows
nothing of SNMP or Prometheus; it runs in a thread of the exporter (:meth:`start`) or is
driven pass by pass (:meth:`read`, ``poll --json``, the agents' worker).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pmta_snmp.acct.buckets import epoch_minute
from pmta_snmp.acct.reader import AcctReader, AcctState
from pmta_snmp.acct.tally import TallyCounts, TallySpec
from pmta_snmp.addresses import packed_address, source_ip_text
from pmta_snmp.outcomes.classify import Classifier, is_complaint
from pmta_snmp.outcomes.view import (
    DELAY_BOUNDS,
    OTHER,
    RESULTS,
    BlocklistCount,
    ComplaintCount,
    DelayHistogram,
    OutcomesView,
    ProviderRow,
    ReasonCount,
    ResultCounts,
    SendingDomainRow,
    SourceIpOutcome,
    SourceIpRow,
)

__all__ = ["NONE", "TALLY_FIELDS", "EngineSettings", "OutcomesEngine"]

log = logging.getLogger(__name__)

NONE: Final = "(none)"
"""The value of a label whose field is empty (the null sender's domain, no source IP)."""
_STATE_VERSION: Final = 1
_OUT = ("rcpt_domain", "dsn_mta_host", "dlv_source_ip", "vmta", "sender_domain")
#: What the engine counts per record type.
TALLY_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "d": (*_OUT, "delay"),
    "b": (*_OUT, "delay", "bounce_cat", "dsn_status", "dsn_diag"),
    "t": (*_OUT, "bounce_cat", "dsn_status", "dsn_diag"),
    "tq": (),
    "f": ("rcpt_domain", "sender_domain", "vmta", "column:repSourceIp", "column:feedbackType",
          "column:format", "column:reportingMta", "column:reportedDomain"),
    "r": (),
    "rb": (),
    "rs": (),
}
# Recent counters per key: the results, then complaints and blocklist rejections.
_COMPLAINT = len(RESULTS)
_BLOCKLIST = len(RESULTS) + 1
_WIDTH = len(RESULTS) + 2
_RESULT_INDEX: Final = {r: i for i, r in enumerate(RESULTS)}
#: Classifications ("plans") of distinct records kept between chunks: about 1.6 KB each, so
#: a high-cardinality catch-up does not leave hundreds of MB behind (200,000 kept 330 MB).
_PLAN_CACHE: Final = 20_000
#: Slot widths (minutes) and how many of them are kept: the last hour, the last day.
_HOUR_SLOTS, _DAY_SLOT, _DAY_SLOTS = 60, 10, 144


@dataclass(frozen=True)
class EngineSettings:
    """What the engine reads and how much it keeps (config ``[acct]``; README caps)."""

    files: str
    state_dir: str | None = None
    """Where the state file lives (default: pmta_snmp.state.default_state_dir())."""
    backfill: float = 86400.0
    """Seconds of existing records read back on a first start (0: start at the end)."""
    max_source_ips: int = 500
    max_sending_domains: int = 500
    max_source_ip_series: int = 2000
    """(source IP, VirtualMTA, provider) triples of pmta_source_ip_outcomes_total."""
    max_complaint_domains: int = 200
    interval: float = 5.0
    """Seconds between reads of the files."""
    pass_seconds: float = 2.0
    """Reading time of one pass (a long catch-up is read over several passes)."""
    save_interval: float = 30.0
    """Seconds between saves of the state file (and at stop)."""
    providers_file: str | None = None
    reasons_file: str | None = None
    persist: bool = True
    """False: keep nothing on disk (``poll --json`` without a state directory)."""

    @classmethod
    def from_config(cls, section: Any, **changes: Any) -> EngineSettings:
        """From the config's ``[acct]`` section (pmta_snmp.config.AcctSection)."""
        keys = ("files", "state_dir", "backfill", "interval", "save_interval", "max_source_ips",
                "max_sending_domains", "max_source_ip_series", "max_complaint_domains",
                "providers_file", "reasons_file")
        values = {k: getattr(section, k) for k in keys}
        values.update(changes)
        return cls(**values)

    def __post_init__(self) -> None:
        if not self.files:
            raise ValueError("acct files: a path or glob is needed")
        for name in ("max_source_ips", "max_sending_domains", "max_source_ip_series",
                     "max_complaint_domains"):
            if getattr(self, name) < 0:
                raise ValueError(f"acct {name} must be 0 (no cap) or more")
        if self.backfill < 0 or self.interval <= 0 or self.pass_seconds <= 0:
            raise ValueError("acct backfill must be >= 0, interval and pass time > 0")


class _Capped:
    """A dimension's admitted values: the first ``cap - 1`` met, the rest are ``(other)``."""

    def __init__(self, cap: int, admitted: Iterable[str] = ()) -> None:
        self.cap = cap
        self.admitted: set[str] = set(admitted)
        self.folded: set[str] = set()  # values counted as (other) since this process started
        self.folded_total = 0

    def __call__(self, value: str) -> str:
        if value in self.admitted:
            return value
        if self.cap <= 0 or len(self.admitted) < self.cap - 1:
            self.admitted.add(value)
            return value
        if value not in self.folded:
            self.folded.add(value)
            if len(self.folded) > 100_000:  # only for the statistic: keep it bounded
                self.folded.clear()
            self.folded_total += 1
        return OTHER


def _label(value: str) -> str:
    value = value.strip()
    return value if value else NONE


@functools.lru_cache(maxsize=4096)
def _ip_label(text: str) -> str:
    """A source IP's label (its one text), cached: few addresses, met in every record."""
    return _label(source_ip_text(text))


class _Recent:
    """Counters per (dimension, key) in time slots: one per minute for the last hour, one
    per ten minutes for the last day."""

    def __init__(self) -> None:
        self.hour: dict[int, dict[tuple[str, str], list[int]]] = {}
        self.day: dict[int, dict[tuple[str, str], list[int]]] = {}

    def add(self, minute: int, keys: Iterable[tuple[str, str]], index: int, n: int) -> None:
        hour = self.hour.setdefault(minute, {})
        day = self.day.setdefault(minute // _DAY_SLOT, {})
        for key in keys:
            for slots in (hour, day):
                found = slots.get(key)
                if found is None:
                    found = slots[key] = [0] * _WIDTH
                found[index] += n

    def prune(self, now_minute: int) -> None:
        for m in [m for m in self.hour if m <= now_minute - _HOUR_SLOTS]:
            del self.hour[m]
        oldest = (now_minute - _DAY_SLOT * _DAY_SLOTS) // _DAY_SLOT
        for s in [s for s in self.day if s <= oldest]:
            del self.day[s]

    def sums(self, now_minute: int) -> tuple[dict[tuple[str, str], list[int]],
                                             dict[tuple[str, str], list[int]]]:
        """(last hour, last day) per key."""
        hour: dict[tuple[str, str], list[int]] = {}
        day: dict[tuple[str, str], list[int]] = {}
        oldest = (now_minute - _DAY_SLOT * _DAY_SLOTS) // _DAY_SLOT
        for out, slots, after in ((hour, self.hour, now_minute - _HOUR_SLOTS),
                                  (day, self.day, oldest)):
            for slot, keys in slots.items():
                if slot <= after:
                    continue
                for key, counts in keys.items():
                    acc = out.get(key)
                    if acc is None:
                        out[key] = list(counts)
                    else:
                        for i, n in enumerate(counts):
                            acc[i] += n
        return hour, day

    def to_json(self) -> dict[str, Any]:
        return {name: {str(slot): [[d, k, *c] for (d, k), c in keys.items()]
                       for slot, keys in slots.items()}
                for name, slots in (("hour", self.hour), ("day", self.day))}

    @classmethod
    def from_json(cls, data: object) -> _Recent:
        out = cls()
        if not isinstance(data, Mapping):
            return out
        for name, slots in (("hour", out.hour), ("day", out.day)):
            raw = data.get(name)
            if not isinstance(raw, Mapping):
                continue
            for slot_text, rows in raw.items():
                try:
                    slot = int(slot_text)
                except (TypeError, ValueError):
                    continue
                if not isinstance(rows, list):
                    continue
                keys = slots.setdefault(slot, {})
                for row in rows:
                    if (isinstance(row, list) and len(row) == 2 + _WIDTH
                            and isinstance(row[0], str) and isinstance(row[1], str)
                            and all(_count(x) for x in row[2:])):
                        keys[(row[0], row[1])] = [int(x) for x in row[2:]]
        return out


def _count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


class _Counters:
    """The cumulative counters (what the state file keeps beside the reading position)."""

    TABLES: Final = ("outcomes", "reasons", "ips", "ip_outcomes", "sending", "complaints",
                     "ip_complaints", "blocklists", "records", "delay_sums", "delay_counts")

    def __init__(self) -> None:
        self.outcomes: dict[tuple[str, ...], int] = {}      # (provider, result)
        self.reasons: dict[tuple[str, ...], int] = {}       # (provider, reason)
        self.ips: dict[tuple[str, ...], int] = {}           # (source ip, result)
        self.ip_outcomes: dict[tuple[str, ...], int] = {}   # (ip, vmta, provider, result)
        self.sending: dict[tuple[str, ...], int] = {}       # (sending domain, result)
        self.complaints: dict[tuple[str, ...], int] = {}    # (provider, sending domain)
        self.ip_complaints: dict[tuple[str, ...], int] = {}  # (source ip,)
        self.blocklists: dict[tuple[str, ...], int] = {}    # (source ip, blocklist, provider)
        self.records: dict[tuple[str, ...], int] = {}       # (type,)
        self.delay_counts: dict[tuple[str, ...], int] = {}  # (provider, bucket)
        self.delay_sums: dict[tuple[str, ...], int] = {}    # (provider,) -> seconds
        self.read_errors = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: [[*k, v] for k, v in getattr(self, name).items()]
                               for name in self.TABLES}
        out["read_errors"] = self.read_errors
        return out

    #: Key values per row of each table.
    ARITY: Final = {"outcomes": 2, "reasons": 2, "ips": 2, "ip_outcomes": 4, "sending": 2,
                    "complaints": 2, "ip_complaints": 1, "blocklists": 3, "records": 1,
                    "delay_sums": 1, "delay_counts": 2}

    @classmethod
    def from_json(cls, data: object) -> _Counters:
        """The counters saved by :meth:`to_json`; ValueError naming the first malformed part
        (a count that is no whole number >= 0, a key of the wrong length): counters taken
        in part would have lost records, or gone back."""
        if not isinstance(data, Mapping):
            raise ValueError("counters: not an object")
        out = cls()
        for name in cls.TABLES:
            table: dict[tuple[str, ...], int] = getattr(out, name)
            rows = data.get(name, [])
            if not isinstance(rows, list):
                raise ValueError(f"counters {name}: not a list")
            for row in rows:
                if not (isinstance(row, list) and len(row) == cls.ARITY[name] + 1
                        and all(isinstance(x, str) for x in row[:-1]) and _count(row[-1])):
                    raise ValueError(f"counters {name}: malformed row {str(row)[:80]}")
                table[tuple(row[:-1])] = table.get(tuple(row[:-1]), 0) + row[-1]
        errors = data.get("read_errors", 0)
        if not _count(errors):
            raise ValueError("counters read_errors: not a count")
        out.read_errors = errors
        return out


def _add(table: dict[tuple[str, ...], int], key: tuple[str, ...], n: int) -> None:
    table[key] = table.get(key, 0) + n


#: Where the records of one (type, values) are counted: the cumulative (table, key)
#: increments, the recent slots' (keys, counter) marks, the delay sum's key.
_Plan = tuple[list[tuple[dict[tuple[str, ...], int], tuple[str, ...]]],
              tuple[tuple[tuple[tuple[str, str], ...], int], ...],
              tuple[str, ...] | None]


class OutcomesEngine:
    """Deliverability counters from accounting files (see the module docstring)."""

    def __init__(self, settings: EngineSettings, *, classifier: Classifier | None = None,
                 clock: Any = None) -> None:
        self.settings = settings
        self._clock = clock or time.time
        if classifier is None:
            from pmta_snmp.outcomes.providers import load_providers
            from pmta_snmp.outcomes.reasons import load_reasons

            classifier = Classifier(
                load_providers(settings.providers_file) if settings.providers_file else None,
                load_reasons(settings.reasons_file) if settings.reasons_file else None)
        self.classifier = classifier
        self._lock = threading.Lock()  # one pass at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state_file: Any = None
        self._last_save = 0.0
        self._warnings: list[str] = []
        #: "no accounting file matches ..." while that is so (said in the view, not kept).
        self._missing: str | None = None
        self._view = OutcomesView.empty()
        self._reset(datetime.fromtimestamp(self._clock(), UTC))
        if settings.persist:
            from pmta_snmp.state import StateError

            try:
                self._load()
            except (StateError, OSError) as exc:
                raise ValueError(f"outcomes state: {exc}") from exc
        self._view = self._build_view()
        self._saved_view = self._view

    # -- state -------------------------------------------------------------------------

    def _reset(self, since: datetime) -> None:
        s = self.settings
        self.counting_since = since
        self.acct_state: AcctState | None = None
        self.since_minute: int | None = None
        self.backfilling = True
        self.counters = _Counters()
        self.recent = _Recent()
        self.ip_cap = _Capped(s.max_source_ips)
        self.domain_cap = _Capped(s.max_sending_domains)
        self.series_cap = _Capped(s.max_source_ip_series)
        self.complaint_cap = _Capped(s.max_complaint_domains)
        self.newest: float | None = None
        self._plans: dict[tuple[str, tuple[str, ...]], _Plan] = {}
        #: Unknown (None) until a pass has read the files: not 0, which says "caught up".
        self.lag: float | None = None
        self.updated: datetime | None = None

    @property
    def state_path(self) -> Path:
        """The state file of these accounting files."""
        from pmta_snmp.state import state_path

        directory = Path(self.settings.state_dir) if self.settings.state_dir else None
        return state_path("outcomes", os.path.abspath(self.settings.files), directory=directory)

    def _file(self) -> Any:
        if self._state_file is None:
            from pmta_snmp.state import StateFile

            path = self.state_path
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._state_file = StateFile(path)
        return self._state_file

    def _load(self) -> None:
        """Continue from the state file (a missing or corrupt state: afresh; one this version
        cannot use in full: afresh, said in the view's warnings and the log)."""
        state = self._file()
        doc = state.load()
        if state.warning is not None:
            self._warnings.append(str(state.warning))
            log.warning("%s", state.warning)
        if not doc:
            return
        problem = self._restore(doc)
        if problem is not None:
            self._reset(self.counting_since)
            message = f"state file {state.path}: {problem}; counting starts afresh"
            self._warnings.append(message)
            log.warning("%s", message)

    def _restore(self, doc: Mapping[str, Any]) -> str | None:
        """Take the saved position and counters; the problem, in words, when they cannot be
        taken in full (nothing taken then)."""
        if doc.get("v") != _STATE_VERSION:
            return (f"version {str(doc.get('v'))[:20]} (this version of pmta-snmp keeps "
                    f"version {_STATE_VERSION})")
        if doc.get("files") != self.settings.files:
            return f"kept for other files ({str(doc.get('files'))[:200]})"
        acct = AcctState.from_json(doc.get("acct"))
        if acct is None:
            return "no usable reading position"
        try:
            since = datetime.fromisoformat(str(doc.get("since")))
        except ValueError:
            since = None
        if since is None or since.tzinfo is None:
            return "no usable counting_since time"
        try:
            counters = _Counters.from_json(doc.get("counters", {}))
        except ValueError as exc:
            return str(exc)
        self.counting_since = since
        self.acct_state = acct
        minute = doc.get("since_minute")
        self.since_minute = minute if isinstance(minute, int) else None
        self.backfilling = bool(doc.get("backfilling", False))
        self.counters = counters
        self.recent = _Recent.from_json(doc.get("recent"))
        admitted = doc.get("admitted") or {}
        for name, cap in (("ip", self.ip_cap), ("domain", self.domain_cap),
                          ("series", self.series_cap), ("complaint", self.complaint_cap)):
            values = admitted.get(name) if isinstance(admitted, Mapping) else None
            if isinstance(values, list):
                cap.admitted = {v for v in values if isinstance(v, str)}
        # Earlier versions admitted the sending domains of complaints too: free their slots
        # (a sending domain admitted by a d, b or t record has a count in `sending`).
        self.domain_cap.admitted &= {k[0] for k in counters.sending}
        newest = doc.get("newest")
        # A time (NaN or out of range: the view's datetime would fail at every pass).
        self.newest = float(newest) if isinstance(newest, int | float) and not isinstance(
            newest, bool) and 0 <= newest < 1e11 else None
        return None

    def save(self) -> None:
        """Write the reading position and the counters, together (atomic)."""
        if not self.settings.persist:
            return
        with self._lock:
            doc = self._document()
            view = self._view
        self._file().save(doc)
        self._saved_view = view
        self._last_save = time.monotonic()

    def _document(self) -> dict[str, Any]:
        return {
            "v": _STATE_VERSION,
            "files": self.settings.files,
            "since": self.counting_since.isoformat(),
            "since_minute": self.since_minute,
            "backfilling": self.backfilling,
            "acct": self.acct_state.to_json() if self.acct_state is not None else None,
            "counters": self.counters.to_json(),
            "recent": self.recent.to_json(),
            "admitted": {name: sorted(cap.admitted) for name, cap in (
                ("ip", self.ip_cap), ("domain", self.domain_cap), ("series", self.series_cap),
                ("complaint", self.complaint_cap))},
            "newest": self.newest,
        }

    # -- reading -----------------------------------------------------------------------

    @property
    def view(self) -> OutcomesView:
        """The counters as of the last pass."""
        return self._view

    @property
    def saved_view(self) -> OutcomesView:
        """The counters as of the last save (or the state loaded at start): what a restart
        continues from, so a publisher that must never show a counter go back (SNMP's
        Counter64 across a restarted worker) shows this one. Without persistence: `view`."""
        return self._saved_view if self.settings.persist else self._view

    def read(self, *, budget: float | None = None) -> bool:
        """One pass over the new records (at most ``budget`` seconds of reading, default
        ``pass_seconds``; None-like 0 means no limit). True when it reached the files' end."""
        with self._lock:
            caught_up = self._pass(self.settings.pass_seconds if budget is None else budget)
            self._view = self._build_view()
        return caught_up

    def read_all(self) -> OutcomesView:
        """Passes until the files' end is reached (one-shot use: ``poll --json``)."""
        while not self.read(budget=self.settings.pass_seconds):
            pass
        return self.view

    def _pass(self, budget: float) -> bool:
        from pmta_snmp.acct.seek import state_since

        now = self._clock()
        state = self.acct_state
        if state is None:  # a first start: read back `backfill` seconds, found by time
            since = now - self.settings.backfill
            if self.settings.backfill > 0:
                # The seek lands a little early (records are in logging order give or take a
                # second): older records are left out while the read-back lasts.
                # Ten-minute slots while reading back (see below): a slot may start up to
                # nine minutes before `since`.
                self.since_minute = epoch_minute(since) - 10
                state = state_since(self.settings.files, since - 60)
        # The read-back counts in ten-minute slots (ten times fewer keys to classify and add
        # on a catch-up); from then on, minutes. The last hour's first slots after a first
        # start are therefore ten minutes wide.
        spec = TallySpec.of(TALLY_FIELDS, since_minute=self.since_minute,
                            delay_bounds=DELAY_BOUNDS,
                            minute_step=10 if self.backfilling else 1, fold=self._folds())
        deadline = time.monotonic() + budget if budget > 0 else None
        added = 0
        try:
            reader = AcctReader(self.settings.files, state, deadline=deadline,
                                types=set(TALLY_FIELDS))
            now_minute = epoch_minute(now)
            for counts in reader.tally(spec):
                self._add(counts, now_minute, spec.minute_step)
                added += 1
            new_state = reader.state
        except Exception as exc:  # an unreadable file or directory: keep what we have
            message = f"reading {self.settings.files}: {exc}"
            if message not in self._warnings:
                log.warning("%s", message)
                self._warnings = [*self._warnings[-4:], message]
            if added and self.settings.persist:
                self._back_to_saved()
            return True
        self.acct_state = new_state
        missing = self._missing_files()
        if missing is not None and missing != self._missing:
            log.warning("%s", missing)
        self._missing = missing
        self.counters.read_errors += reader.skipped_rows
        for warning in reader.warnings:
            if warning not in self._warnings:
                self._warnings = [*self._warnings[-4:], warning]
        caught_up = not reader.timed_out
        if caught_up:
            self.backfilling = False
            self.since_minute = None  # from now on every new record counts
        self.lag = 0.0 if caught_up or self.newest is None else max(0.0, now - self.newest)
        self.updated = datetime.fromtimestamp(now, UTC)
        self.recent.prune(epoch_minute(now))
        return caught_up

    def _back_to_saved(self) -> None:
        """The position and counters as last saved (saved together, atomically). A pass that
        failed partway had added chunks without moving the position past them: the next pass
        read them again and counted them twice. The saved view (what SNMP and /metrics show)
        is that save, so no published counter goes back."""
        lag, updated, warnings = self.lag, self.updated, self._warnings
        self._reset(self.counting_since)
        self._load()
        self.lag, self.updated = lag, updated
        self._warnings = [*warnings, *(w for w in self._warnings if w not in warnings)][-5:]

    def _folds(self) -> dict[str, dict[str, Callable[[str], str]]]:
        """The caps the tally applies as it counts (TallySpec.fold): once a cap is full, a
        new sending domain or source IP is (other) before it makes a key, so a catch-up of
        many distinct values hands over few keys (not one per value, each classified)."""
        # Only where every record of the type passes the cap (a feedback report that is no
        # complaint takes no source IP slot: its type's values are not folded).
        folds: dict[str, dict[str, Callable[[str], str]]] = {}
        for kind in ("d", "b", "t"):
            fold = folds[kind] = {}
            if self.ip_cap.cap > 0:
                fold["dlv_source_ip"] = self._fold_ip
            if self.domain_cap.cap > 0:
                fold["sender_domain"] = self._fold_domain
        return folds

    def _fold_ip(self, text: str) -> str:
        return OTHER if self.ip_cap(_ip_label(text)) == OTHER else text

    def _fold_domain(self, domain: str) -> str:
        return OTHER if self.domain_cap(_label(domain)) == OTHER else domain

    def _missing_files(self) -> str | None:
        """The words for files that are not there (None when some file is)."""
        from pmta_snmp.logtail import expand_paths

        spec = self.settings.files
        if any(p.is_file() for p in expand_paths(spec)):
            return None
        if any(ch in spec for ch in "*?["):
            return f"no accounting file matches {spec} (yet)"
        return f"no accounting file {spec} (yet)"

    def _add(self, counts: TallyCounts, now_minute: int, step: int = 1) -> None:
        """Add one chunk of counts: keys differ by minute, so the cumulative counters are
        added per distinct (type, values) -- classified once, through a cache of plans --
        and only the recent slots per minute."""
        c = self.counters
        totals: dict[tuple[str, tuple[str, ...]], int] = {}
        newest = -1
        for (kind, minute, values), n in counts.items():
            kv = (kind, values)
            totals[kv] = totals.get(kv, 0) + n
            if minute is not None and minute > newest:
                newest = minute
        end = newest * 60 + step * 60 - 1  # the end of the newest minute (or slot) read
        if newest >= 0 and (self.newest is None or end > self.newest):
            self.newest = end
        delays: dict[tuple[str, tuple[str, ...]], float] = {}
        for (kind, _, values), seconds in counts.sums.items():
            delays[(kind, values)] = delays.get((kind, values), 0.0) + seconds
        plans = self._plans
        if len(plans) + len(totals) > _PLAN_CACHE:
            plans.clear()
        for kv, n in totals.items():
            plan = plans.get(kv)
            if plan is None:
                plan = plans[kv] = self._plan(*kv)
            _add(c.records, (kv[0],), n)
            for table, key in plan[0]:
                table[key] = table.get(key, 0) + n
            if plan[2] is not None:
                total = delays.get(kv)
                if total:
                    _add(c.delay_sums, plan[2], int(total))
        recent: dict[tuple[int, tuple[tuple[tuple[str, str], ...], int]], int] = {}
        for (kind, minute, values), n in counts.items():
            marks = plans[(kind, values)][1]
            if marks:
                # Logged ahead of our clock: as of now (not in the last hour until then).
                when = now_minute if minute is None else min(minute, now_minute)
                for mark in marks:
                    rk = (when, mark)
                    recent[rk] = recent.get(rk, 0) + n
        add = self.recent.add
        for (when, (keys, index)), n in recent.items():
            add(when, keys, index, n)
        if len(plans) > _PLAN_CACHE:  # a chunk of many distinct records: not kept
            plans.clear()

    def _plan(self, kind: str, values: tuple[str, ...]) -> _Plan:
        """Where the records of one (type, values) are counted."""
        c = self.counters
        clf = self.classifier
        if kind == "f":
            return self._feedback_plan(values)
        if kind not in ("d", "b", "t"):
            return [], (), None
        rcpt_domain, host, ip_raw, vmta_raw, sender = values[:5]
        provider = clf.provider(rcpt_domain, host)
        delay_piece = ""
        if kind == "d":
            result, reason, blocklist = "delivered", None, None
            delay_piece = values[5]
        else:
            cat, status, diag = values[-3:]
            failure = clf.failure(kind, cat, status, diag)
            result, reason, blocklist = failure.result, failure.reason, failure.blocklist
            if kind == "b":
                delay_piece = values[5]
        # (other): folded by the cap as the tally counted it (_folds).
        ip = OTHER if ip_raw == OTHER else self.ip_cap(_ip_label(ip_raw))
        vmta = _label(vmta_raw)
        domain = OTHER if sender == OTHER else self.domain_cap(_label(sender))
        series = self.series_cap("\0".join((ip, vmta, provider)))
        steps: list[tuple[dict[tuple[str, ...], int], tuple[str, ...]]] = [
            (c.outcomes, (provider, result)), (c.ips, (ip, result)),
            (c.sending, (domain, result)),
            (c.ip_outcomes, (OTHER, OTHER, OTHER, result) if series == OTHER
             else (ip, vmta, provider, result))]
        keys = (("provider", provider), ("ip", ip), ("domain", domain))
        # One mark per dimension: per minute there are few distinct (dimension, key) pairs.
        marks: list[tuple[tuple[tuple[str, str], ...], int]] = [
            ((k,), _RESULT_INDEX[result]) for k in keys]
        if reason is not None:
            steps.append((c.reasons, (provider, reason)))
        if blocklist is not None:
            steps.append((c.blocklists, (ip, blocklist, provider)))
            marks += [((k,), _BLOCKLIST) for k in keys[:2]]
        delay_key = None
        if delay_piece:
            steps.append((c.delay_counts, (provider, delay_piece)))
            delay_key = (provider,)
        return steps, tuple(marks), delay_key

    def _feedback_plan(self, values: tuple[str, ...]) -> _Plan:
        rcpt_domain, sender, _vmta, rep_ip, ftype, fmt, reporting, reported = values
        if not is_complaint(ftype):
            return [], (), None
        c = self.counters
        provider = self.classifier.complaint_provider(rcpt_domain, reporting, fmt)
        sender = _label(sender or reported.strip().rstrip(".").lower())
        ip = self.ip_cap(_ip_label(rep_ip))
        steps = [(c.complaints, (provider, self.complaint_cap(sender))),
                 (c.ip_complaints, (ip,))]
        # The complaint's sending domain is counted under its own cap (max_complaint_domains),
        # never admitted to the sending domains': reports arrive days after the mail (for
        # mail sent before the counting began, or naming any domain in reportedDomain), and a
        # domain with complaints only would take a slot of max_sending_domains with no row,
        # folding real sending domains into (other).
        keys = (("provider", provider), ("ip", ip))
        return steps, tuple(((k,), _COMPLAINT) for k in keys), None

    # -- the view ------------------------------------------------------------------------

    def _build_view(self) -> OutcomesView:
        now = self._clock()
        hour, day = self.recent.sums(epoch_minute(now))
        c = self.counters

        def results(table: Mapping[tuple[str, ...], int], first: str) -> ResultCounts:
            return ResultCounts.of({k[1]: v for k, v in table.items() if k[0] == first})

        def by_first(table: Mapping[tuple[str, ...], int]) -> dict[str, dict[str, int]]:
            # One pass over a table for all its rows: a scan per row made the view's build
            # grow with the square of the rows (100k sending domains without a cap: no end).
            out: dict[str, dict[str, int]] = {}
            for k, v in table.items():
                out.setdefault(k[0], {})[k[1]] = v
            return out

        def recent(dim: str, key: str, sums: Mapping[tuple[str, str], list[int]]
                   ) -> tuple[ResultCounts, int, int]:
            row = sums.get((dim, key))
            if row is None:
                return ResultCounts(), 0, 0
            return ResultCounts(*row[:len(RESULTS)]), row[_COMPLAINT], row[_BLOCKLIST]

        providers_seen = {k[0] for k in c.outcomes} | {k[0] for k in c.complaints}
        order = {p: i for i, p in enumerate(self.classifier.providers.ids)}
        provider_rows = []
        bounds = DELAY_BOUNDS
        all_counts = [0] * (len(bounds) + 1)
        all_sum = 0.0
        for p in sorted(providers_seen, key=lambda p: (order.get(p, len(order)), p)):
            h, h_complaints, h_block = recent("provider", p, hour)
            d, d_complaints, d_block = recent("provider", p, day)
            buckets = [0] * (len(bounds) + 1)
            for (prov, piece), n in c.delay_counts.items():
                if prov == p and piece.isdigit() and int(piece) < len(buckets):
                    buckets[int(piece)] += n
            total_delay = float(c.delay_sums.get((p,), 0))
            all_counts = [a + b for a, b in zip(all_counts, buckets, strict=True)]
            all_sum += total_delay
            provider_rows.append(ProviderRow(
                p, self.classifier.providers.describe(p), results(c.outcomes, p), h, d,
                complaints=sum(v for k, v in c.complaints.items() if k[0] == p),
                complaints_last_hour=h_complaints, complaints_last_day=d_complaints,
                blocklist_rejections=sum(v for k, v in c.blocklists.items() if k[2] == p),
                blocklist_rejections_last_hour=h_block, blocklist_rejections_last_day=d_block,
                delay=DelayHistogram(bounds, tuple(buckets), total_delay)))
        ips = sorted({k[0] for k in c.ips} | {k[0] for k in c.ip_complaints},
                     key=lambda ip: (ip == OTHER, ip))
        ip_results = by_first(c.ips)
        lists_by_ip: dict[str, dict[str, int]] = {}
        for (lip, name, _p), n in c.blocklists.items():
            lists = lists_by_ip.setdefault(lip, {})
            lists[name] = lists.get(name, 0) + n
        ip_rows = []
        for ip in ips:
            h, h_complaints, h_block = recent("ip", ip, hour)
            d, _, _ = recent("ip", ip, day)
            lists = lists_by_ip.get(ip, {})
            family, packed = packed_address(ip)
            ip_rows.append(SourceIpRow(
                ip, family, packed, ResultCounts.of(ip_results.get(ip, {})), h, d,
                complaints=c.ip_complaints.get((ip,), 0), complaints_last_hour=h_complaints,
                blocklist_rejections=sum(lists.values()),
                blocklist_rejections_last_hour=h_block,
                blocklists=tuple(sorted(lists.items(), key=lambda kv: (-kv[1], kv[0])))))
        domains = sorted({k[0] for k in c.sending}, key=lambda d: (d == OTHER, d))
        domain_results = by_first(c.sending)
        domain_complaints: dict[str, int] = {}
        for k, v in c.complaints.items():
            domain_complaints[k[1]] = domain_complaints.get(k[1], 0) + v
        domain_rows = []
        for dom in domains:
            h, _, _ = recent("domain", dom, hour)
            d, _, _ = recent("domain", dom, day)
            domain_rows.append(SendingDomainRow(
                dom, ResultCounts.of(domain_results.get(dom, {})), h, d,
                complaints=domain_complaints.get(dom, 0)))
        blocklists: dict[tuple[str, str], int] = {}
        for (ip, name, _p), n in c.blocklists.items():
            blocklists[(ip, name)] = blocklists.get((ip, name), 0) + n
        totals = ResultCounts.of({r: sum(v for k, v in c.outcomes.items() if k[1] == r)
                                  for r in RESULTS})
        last_hour = sum((p.last_hour for p in provider_rows), ResultCounts())
        last_day = sum((p.last_day for p in provider_rows), ResultCounts())
        newest = (datetime.fromtimestamp(self.newest, UTC) if self.newest is not None
                  else None)
        return OutcomesView(
            counting_since=self.counting_since,
            updated=self.updated,
            files=self.settings.files,
            totals=totals,
            last_hour=last_hour,
            last_day=last_day,
            complaints=sum(c.complaints.values()),
            complaints_last_hour=sum(p.complaints_last_hour for p in provider_rows),
            complaints_last_day=sum(p.complaints_last_day for p in provider_rows),
            blocklist_rejections_total=sum(c.blocklists.values()),
            providers=tuple(provider_rows),
            source_ips=tuple(ip_rows),
            source_ip_outcomes=tuple(SourceIpOutcome(k[0], k[1], k[2], k[3], v)
                                     for k, v in sorted(c.ip_outcomes.items())),
            sending_domains=tuple(domain_rows),
            complaints_by=tuple(ComplaintCount(k[0], k[1], v)
                                for k, v in sorted(c.complaints.items())),
            blocklist_rejections=tuple(BlocklistCount(*k, v)
                                       for k, v in sorted(blocklists.items())),
            reasons=tuple(ReasonCount(k[0], k[1], v) for k, v in sorted(c.reasons.items())),
            delay=DelayHistogram(bounds, tuple(all_counts), all_sum),
            records=tuple(sorted((k[0], v) for k, v in c.records.items())),
            read_errors=c.read_errors,
            lag_seconds=self.lag,
            newest_record=newest,
            backfilling=self.backfilling,
            other_items=tuple((name, cap.folded_total) for name, cap in (
                ("source_ip", self.ip_cap), ("sending_domain", self.domain_cap),
                ("source_ip_series", self.series_cap),
                ("complaint_sending_domain", self.complaint_cap))),
            warnings=(*self._warnings, *([self._missing] if self._missing else [])),
        )

    # -- running in a thread -------------------------------------------------------------

    def start(self) -> None:
        """Read in a background thread until :meth:`stop` (idempotent)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pmta-outcomes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            caught_up = True
            try:
                caught_up = self.read()
                if time.monotonic() - self._last_save >= self.settings.save_interval:
                    self.save()
            except Exception:  # never let the thread die: log, keep the last view
                log.exception("outcomes engine: a pass failed")
            self._stop.wait(self.settings.interval if caught_up else 0.05)

    def stop(self) -> None:
        """Stop the thread and save the state."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        try:
            self.save()
        except Exception:
            log.exception("outcomes engine: saving the state failed")
