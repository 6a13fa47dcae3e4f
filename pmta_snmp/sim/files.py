"""Accounting CSV and main-log writers fed by the simulated ticks (formats §3, §4).

Each tick's outcomes are expanded into one accounting record per recipient with their own
`random.Random(f"{seed}:{tick}:files")`, so the files never change the HTTP-visible state and the
counts match `SimState.counts`. Files are opened per write, so readers that follow by inode see
renames (rotation) the way they would on a real host.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from pmta_snmp.sim.replies import BOUNCES, DEFERRALS, FEEDBACK, LISTED, Bounce, fill
from pmta_snmp.sim.state import (
    HOUR_TICKS,
    STORM_VMTA,
    TICK_SECONDS,
    TLS_CLEAR_DOMAIN,
    TLS_OLD_DOMAIN,
    Outcome,
    SimState,
    TickResult,
)

_FIELDS_40 = [
    "type",
    "timeLogged",
    "timeQueued",
    "timeImprinted",
    "orig",
    "rcpt",
    "orcpt",
    "dsnAction",
    "dsnStatus",
    "dsnDiag",
    "dsnMta",
    "bounceCat",
    "srcType",
    "srcMta",
    "dlvType",
    "dlvSourceIp",
    "dlvDestinationIp",
    "dlvEsmtpAvailable",
    "dlvSize",
    "vmta",
    "jobId",
    "envId",
]
_FIELDS_50 = [
    *(f for f in _FIELDS_40 if f != "timeImprinted"),
    "queue",
    "vmtaPool",
    "dlvTlsProtocol",
    "dlvTlsCipher",
]
_FIELDS_55 = [*_FIELDS_50[:3], "timeFirstAttempt", "totalSecondsQueued", *_FIELDS_50[3:]]
ACCT_LAYOUTS: dict[str, list[str]] = {
    "4.0": _FIELDS_40,
    "4.5": _FIELDS_50,
    "5.0": _FIELDS_50,
    "5.5": _FIELDS_55,
}
"""Accounting columns for `records d,b` with `record-fields *` per PowerMTA version (§3.4)."""
RECORD_TYPES = ("d", "b", "t", "tq", "r", "f")
DEFAULT_RECORDS = ("d", "b", "t", "tq")
DEFAULT_ACCT_MAX_SIZE = 250 * 1024 * 1024
"""PowerMTA's default `max-size 250M`."""
FBL_FIELDS = ("repSourceIp", "feedbackType", "format", "userAgent", "reportingMta",
              "reportedDomain")
"""The `f` (feedback-loop report) fields (§3.4), added to the header when `f` is recorded."""
HARD_CATEGORIES = frozenset({"bad-mailbox", "bad-domain", "inactive-mailbox", "invalid-sender",
                             "routing-errors"})
"""bounce-storm: a stale list bounces hard only (§3.7 hard class)."""
_NAMES = ("jane", "john", "sam", "kim", "alex", "maria", "li", "omar", "eva", "noah")


def _quote(name: str, value: str) -> str:
    """RFC 4180 field; `dlvEsmtpAvailable` is always quoted when not empty (§3.3)."""
    if any(c in value for c in ',"\r\n') or (name == "dlvEsmtpAvailable" and value):
        return '"' + value.replace('"', '""') + '"'
    return value


_LOCAL_ERROR = re.compile(r"E[A-Z]{4,} connecting to |(?:connect|message) rate limit reached")


def _event_diag(text: str) -> str | None:
    """[?] The dsnDiag of a queue event: the remote reply it quotes ("smtp;..."), or a local
    error as PowerMTA words it (ETIMEDOUT connecting to ..., connect rate limit reached)."""
    if text.count('"') >= 2:
        return "smtp;" + text.split('"')[1]
    return text if _LOCAL_ERROR.match(text) else None


def _bounce_table(replies: str, *, storm: bool) -> tuple[Bounce, ...]:
    table = BOUNCES[replies]
    if storm:
        table = tuple(b for b in table if b.cat in HARD_CATEGORIES)
    return table


class AcctWriter:
    """`acct.csv` in one of the layouts; rotates to `acct-YYYY-MM-DD-NNNN.csv`."""

    def __init__(
        self,
        directory: Path,
        state: SimState,
        *,
        layout: str = "5.0",
        records: Sequence[str] = DEFAULT_RECORDS,
        max_size: int = DEFAULT_ACCT_MAX_SIZE,
    ) -> None:
        if layout not in ACCT_LAYOUTS:
            raise ValueError(f"unknown accounting layout {layout!r}; one of 4.0, 4.5, 5.0, 5.5")
        unknown = [r for r in records if r not in RECORD_TYPES]
        if unknown or not records:
            raise ValueError(f"accounting records must be among {','.join(RECORD_TYPES)}")
        self.directory = directory
        self.path = directory / "acct.csv"
        self.state = state
        self.layout = layout
        self.records = tuple(records)
        self.max_size = max_size
        self.header = list(ACCT_LAYOUTS[layout])
        if "r" in self.records and layout != "4.0":
            self.header.append("rcvSmtpUser")  # `r` field, 4.5+ (§3.4); the union of fields
        if "f" in self.records:
            self.header.extend(FBL_FIELDS)
        self.written: dict[str, int] = dict.fromkeys(RECORD_TYPES, 0)
        self._time_cache: dict[int, str] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def time(self, epoch: int) -> str:
        """`YYYY-MM-DD HH:MM:SS±HHMM` (iso-times yes) or Unix seconds for the 4.0 layout."""
        if self.layout == "4.0":
            return str(epoch)
        text = self._time_cache.get(epoch)
        if text is None:
            if len(self._time_cache) > 4096:
                self._time_cache.clear()
            text = self.state.local(epoch).strftime("%Y-%m-%d %H:%M:%S%z")
            self._time_cache[epoch] = text
        return text

    def write(self, rows: list[dict[str, str]]) -> None:
        """Append records (already in time order), starting the file with its header."""
        rows = [r for r in rows if r["type"] in self.records]
        if not rows:
            return
        lines = []
        for row in rows:
            lines.append(",".join(_quote(f, row.get(f, "")) for f in self.header))
            self.written[row["type"]] += 1
        with self.path.open("a", encoding="utf-8", newline="") as fh:
            if fh.tell() == 0:
                fh.write(",".join(self.header) + "\r\n")
            fh.write("\r\n".join(lines) + "\r\n")
        if self.path.stat().st_size >= self.max_size:
            self.rotate()

    def rotate(self) -> Path | None:
        """Move `acct.csv` to the next free `acct-YYYY-MM-DD-NNNN.csv`; None when empty."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        day = self.state.local(self.state.now).date().isoformat()
        pattern = re.compile(rf"acct-{day}-(\d{{4}})\.csv$")
        used = [int(m.group(1)) for p in self.directory.iterdir() if (m := pattern.match(p.name))]
        target = self.directory / f"acct-{day}-{max(used, default=-1) + 1:04d}.csv"
        os.replace(self.path, target)
        with self.path.open("w", encoding="utf-8", newline="") as fh:
            fh.write(",".join(self.header) + "\r\n")
        return target


class LogWriter:
    """The main log: `YYYY-MM-DD HH:MM:SS text`; rotation `log` → `log.1` → … at midnight or on
    demand, keeping `keep` old files (`log-rotate`, default 8)."""

    def __init__(self, path: Path, state: SimState, *, keep: int = 8) -> None:
        self.path = path
        self.state = state
        self.keep = keep
        self.day: date | None = None
        self.lines_written = 0
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, lines: list[tuple[float, str]]) -> None:
        """Append lines (in time order), rotating when the local day changes."""
        batch: list[str] = []
        for epoch, text in lines:
            when = self.state.local(epoch)
            if self.day is None:
                self.day = when.date()
            elif when.date() != self.day:
                self._append(batch)
                batch = []
                self.rotate()
                self.day = when.date()
            batch.append(f"{when:%Y-%m-%d %H:%M:%S} {text}\n")
        self._append(batch)

    def _append(self, batch: list[str]) -> None:
        if batch:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write("".join(batch))
            self.lines_written += len(batch)

    def rotate(self) -> None:
        """`pmta rotate log`: shift `log.N-1` → `log.N` …, `log` → `log.1`, start an empty log."""
        oldest = self.path.with_name(f"{self.path.name}.{self.keep}")
        oldest.unlink(missing_ok=True)
        for i in range(self.keep - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.path.exists():
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self.path.touch()


class FileSink:
    """Turns tick results into accounting records and log lines and hands them to the writers."""

    def __init__(self, state: SimState, acct: AcctWriter | None, log: LogWriter | None) -> None:
        self.state = state
        self.acct = acct
        self.log = log

    def consume(self, results: list[TickResult]) -> None:
        """Write the records and lines of evolved ticks."""
        for res in results:
            rng = random.Random(f"{self.state.seed}:{res.index}:files")  # noqa: S311 (not crypto)
            rows: list[tuple[float, int, dict[str, str]]] = []
            lines = list(res.log)
            for out in res.outcomes:
                if self.acct is not None:
                    self._records(rng, out, rows)
                lines.extend(self._synthetic_lines(rng, out))
            lines.extend(self._license_lines(res))
            if self.acct is not None:
                rows.sort(key=lambda r: (r[0], r[1]))
                self.acct.write([r[2] for r in rows])
            if self.log is not None:
                lines.sort(key=lambda e: e[0])
                self.log.write(lines)

    # ------------------------------------------------------------------------------- records
    def _records(
        self, rng: random.Random, out: Outcome, rows: list[tuple[float, int, dict[str, str]]]
    ) -> None:
        assert self.acct is not None
        acct = self.acct
        q, d, v = out.queue, out.queue.domain, out.queue.vmta
        tls_clear = self.state.scenario == "tls-failures" and d.name == TLS_CLEAR_DOMAIN
        tls_old = self.state.scenario == "tls-failures" and d.name == TLS_OLD_DOMAIN
        base = {
            "orig": f"bounces@{v.sending_domain}",
            "orcpt": "",
            "dsnMta": f"{d.mx} ({d.mx_ip})",
            "srcType": "smtp",
            "srcMta": "app1.example.net (192.0.2.10)",
            "dlvType": "smtp",
            "dlvSourceIp": v.source_ip,
            "dlvDestinationIp": d.mx_ip,
            "dlvEsmtpAvailable": d.esmtp,
            "vmta": v.name,
            "jobId": q.job,
            "envId": "",
            "queue": q.name,
            "vmtaPool": v.pool,
        }

        def add(kind: str, epoch: int, queued: int, extra: dict[str, str]) -> None:
            row = dict(base)
            row.update(type=kind, timeLogged=acct.time(epoch), timeQueued=acct.time(queued))
            row["timeImprinted"] = row["timeQueued"]
            row.update(extra)
            rows.append((epoch, len(rows), row))

        def rcpt() -> str:
            return f"{_NAMES[rng.randrange(len(_NAMES))]}{rng.randint(1, 99999)}@{d.name}"

        start = int(out.start)
        for _ in range(out.delivered):
            epoch = start + rng.randrange(TICK_SECONDS)
            queued = epoch - rng.randint(1, 900)
            proto, cipher = d.tls or ("", "")
            if tls_clear:
                proto = cipher = ""
            elif tls_old:
                proto, cipher = rng.choice(
                    (("TLSv1", "ECDHE-RSA-AES128-SHA"), ("TLSv1.1", "ECDHE-RSA-AES256-SHA"))
                )
            first = queued + rng.randint(0, 5)
            add(
                "d",
                epoch,
                queued,
                {
                    "rcpt": rcpt(),
                    "dsnAction": "relayed",
                    "dsnStatus": "2.0.0 (success)",
                    "dsnDiag": f"smtp;250 2.0.0 Ok: queued as {rng.getrandbits(40):010X}",
                    "bounceCat": "success",
                    "dlvSize": str(q.unit_kb10 * 1024 // 10),
                    "dlvTlsProtocol": proto,
                    "dlvTlsCipher": cipher,
                    "timeFirstAttempt": acct.time(first),
                    "totalSecondsQueued": str(epoch - queued),
                },
            )
        listed = self.state.listed(q, out.start)
        storm = v.name == STORM_VMTA and q.bounce_p > 0.1
        table = _bounce_table(d.replies, storm=storm)
        weights = [b.weight for b in table]
        fields = {"domain": d.name, "mx": d.mx, "ip": v.source_ip, "sender": v.sending_domain}
        for _ in range(out.bounced):
            epoch = start + rng.randrange(TICK_SECONDS)
            who = rcpt()
            if listed and LISTED[d.replies].kind == "b":
                cat, status, diag = LISTED[d.replies][1:]
            else:
                cat, status, diag, _w = rng.choices(table, weights)[0]
            queued = epoch - (
                rng.randint(86400, 4 * 86400) if cat == "message-expired" else rng.randint(1, 600)
            )
            add(
                "b",
                epoch,
                queued,
                {
                    "rcpt": who,
                    "dsnAction": "failed",
                    "dsnStatus": status,
                    "dsnDiag": "smtp;" + fill(diag, rng, rcpt=who, **fields),
                    "bounceCat": cat,
                },
            )
        # A queue that cannot deliver (stuck, backlog) repeats its latest error; other queues
        # get their receiver's replies.
        latest = next((x for x in map(_event_diag, (e.text for e in q.events)) if x),
                      "smtp;421 4.7.0 Try again later, closing connection.")
        special = q.role != "normal"
        deferrals = DEFERRALS[d.replies]
        defer_weights = [w for _, w in deferrals]
        for _ in range(out.deferred):
            epoch = start + rng.randrange(TICK_SECONDS)
            who = rcpt()
            if special:
                diag = latest
            elif listed and LISTED[d.replies].kind == "t":
                diag = "smtp;" + fill(LISTED[d.replies].diag, rng, rcpt=who, **fields)
            else:
                diag = "smtp;" + fill(rng.choices(deferrals, defer_weights)[0][0], rng,
                                      rcpt=who, **fields)
            add(
                "t",
                epoch,
                epoch - rng.randint(60, 3600),
                {
                    "rcpt": who,
                    "dsnAction": "delayed",
                    "dsnStatus": "4.0.0 (undefined status)",
                    "dsnDiag": diag,
                    "bounceCat": "",  # a real `t` row had it empty (§3.5)
                },
            )
        for _ in range(out.tq):
            # [?] the `tq` field list is unknown (§3.4): the queue-level fields are filled.
            epoch = start + rng.randrange(TICK_SECONDS)
            add(
                "tq",
                epoch,
                epoch,
                {
                    "timeQueued": "",
                    "timeImprinted": "",
                    "orig": "",
                    "dsnStatus": "4.0.0 (undefined status)",
                    "dsnDiag": latest,
                    "jobId": "",
                },
            )
        if "f" in acct.records:
            self._feedback(rng, out, rows, rcpt, listed=listed)
        for _ in range(out.arrived if "r" in acct.records else 0):
            epoch = start + rng.randrange(TICK_SECONDS)
            add(
                "r",
                epoch,
                epoch,
                {
                    "rcpt": rcpt(),
                    "rcvSmtpUser": "",
                    "dsnMta": "",
                    "dlvSourceIp": "",
                    "dlvDestinationIp": "",
                    "dlvEsmtpAvailable": "",
                    "dlvType": "",
                },
            )

    def _feedback(self, rng: random.Random, out: Outcome,
                  rows: list[tuple[float, int, dict[str, str]]], rcpt: Callable[[], str], *,
                  listed: bool) -> None:
        """`f` records: complaints about this tick's deliveries, at the provider's rate (three
        times it from a listed IP, whose complaints got it listed)."""
        assert self.acct is not None
        q, d, v = out.queue, out.queue.domain, out.queue.vmta
        loop = FEEDBACK.get(d.replies)
        if loop is None or not out.delivered:
            return
        rate = loop.rate * (3 if listed else 1)
        for _ in range(out.delivered):
            if rng.random() >= rate:
                continue
            epoch = int(out.start) + rng.randrange(TICK_SECONDS)
            row = {
                "type": "f",
                "timeLogged": self.acct.time(epoch),
                "orig": f"bounces@{v.sending_domain}",
                "rcpt": rcpt(),
                "repSourceIp": v.source_ip,
                "feedbackType": "abuse",
                "format": loop.format,
                "userAgent": loop.user_agent,
                "reportingMta": loop.reporting_mta,
                "reportedDomain": v.sending_domain,
                "jobId": q.job,
            }
            rows.append((epoch, len(rows), row))

    # --------------------------------------------------------------------------------- lines
    def _synthetic_lines(self, rng: random.Random, out: Outcome) -> list[tuple[float, str]]:
        q, d, v = out.queue, out.queue.domain, out.queue.vmta
        lines: list[tuple[float, str]] = []
        when = out.start + rng.randrange(TICK_SECONDS)
        if self.state.scenario == "tls-failures" and out.delivered:
            if d.name == TLS_CLEAR_DOMAIN:
                # SYNTHETIC: PowerMTA's wording for a TLS handshake failure is not documented.
                lines.append(
                    (
                        when,
                        f"TLS handshake failed with {d.mx} ({d.mx_ip}) from "
                        f"{v.source_ip}: sslv3 alert handshake failure; "
                        "continuing without TLS",
                    )
                )
            elif d.name == TLS_OLD_DOMAIN:
                # Documented trace form (UG): `tls:<protocol> connected with <bits>-bit <cipher>`.
                lines.append((when, "tls:TLSv1 connected with 128-bit ECDHE-RSA-AES128-SHA"))
        if q.role == "stuck" and out.tq:
            # SYNTHETIC: "unable to route" is not a documented PowerMTA line.
            lines.append(
                (
                    when,
                    f"unable to route queue {q.name}: "
                    f"all MX hosts of {d.name} refused the connection",
                )
            )
        return lines

    def _license_lines(self, res: TickResult) -> list[tuple[float, str]]:
        lic = self.state.license
        if lic.expires is None or res.index < 0 or res.index % HOUR_TICKS:
            return []
        today = self.state.local(res.start).date()
        days = (lic.expires - today).days
        if days > 30:
            return []
        # SYNTHETIC: PowerMTA's license-expiry wording is not documented.
        if days < 0:
            return [(res.start, f"License expired on {lic.expires.isoformat()}")]
        return [(res.start, f"License expires in {days} day(s), on {lic.expires.isoformat()}")]
