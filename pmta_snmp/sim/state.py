"""Simulated PowerMTA state: scenarios, queues and traffic evolving in fixed simulated ticks.

Everything here is a pure function of (scenario, seed, start time, ticks elapsed, commands run):
each tick draws from its own `random.Random(f"{seed}:{tick}")`, so the same seed gives the same
answers however `advance()` is chunked. No threads, no I/O; the simulator serialises access.
"""

from __future__ import annotations

import fnmatch
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

from pmta_snmp import model
from pmta_snmp.sim.replies import EVENT_REPLIES, LISTED, PROVIDER, fill

TICK_SECONDS = 10
"""Simulated seconds per evolution step; state changes only at tick boundaries."""
MIN_TICKS = 60 // TICK_SECONDS
HOUR_TICKS = 3600 // TICK_SECONDS
WARMUP_TICKS = HOUR_TICKS
"""Ticks run before the start time so that `lastHr` is full from the first answer."""
EVENTS_KEPT = 5
"""Events per queue, newest first, as in a real 4.0 `--dom show topqueues` capture."""
ACTIVE_MAX = 400
"""Queues evolved per tick in large scenarios (a random subset), to keep 100k domains cheap."""

SCENARIOS: tuple[str, ...] = (
    "healthy",
    "backlog",
    "stuck",
    "bounce-storm",
    "blocklisted",
    "tls-failures",
    "license-expiring",
    "license-expired",
    "license-never",
    "api-down",
    "api-slow",
    "api-malformed",
    "api-500",
    "scale",
)
SCENARIO_FAULTS: dict[str, str] = {
    "api-down": "down",
    "api-slow": "slow",
    "api-malformed": "malformed",
    "api-500": "500",
}
PROFILES: tuple[str, ...] = ("5.0", "4.x")

# Traffic sample layout: one list of ints per tick (kB kept in tenths so sums stay exact).
IN_RCP, IN_MSG, IN_KB10, OUT_RCP, OUT_MSG, OUT_KB10, BOUNCE_PROC, FBL_PROC = range(8)
SAMPLE_LEN = 8

BACKLOG_QUEUE = "yahoo.com/vmta-b"
BACKLOG_START_TICK = -60
"""The backlog began 10 simulated minutes before the start time..."""
BACKLOG_END_TICK = 3 * HOUR_TICKS - 60
"""...and lasts three simulated hours, growing at every tick, then drains."""
BACKLOG_RETRY = 300
STUCK_QUEUE = "example.org/vmta-c"
STUCK_RCP = 1234
STUCK_RETRY = 600
STORM_VMTA = "vmta-d"
LISTED_VMTA = "vmta-a"
"""blocklisted: this VirtualMTA's source IP gets listed (Spamhaus ZEN, Outlook.com's list)..."""
LISTED_TICK = 30
"""...five simulated minutes after the start time."""
TLS_CLEAR_DOMAIN = "example.net"
"""tls-failures: offers STARTTLS, handshake fails, delivered in clear."""
TLS_OLD_DOMAIN = "example.org"
"""tls-failures: delivered with TLSv1/TLSv1.1."""


@dataclass(frozen=True, slots=True)
class VmtaInfo:
    """A VirtualMTA: its source IP, HELO name, the sending domain of its mail, its pool."""

    name: str
    source_ip: str
    helo: str
    sending_domain: str
    pool: str


@dataclass(frozen=True, slots=True)
class DomainInfo:
    """A destination domain: its MX, the ESMTP extensions it offers and the TLS it negotiates."""

    name: str
    mx: str
    mx_ip: str
    esmtp: str
    tls: tuple[str, str] | None
    replies: str = "other"
    """Reply family (pmta_snmp.sim.replies): how the receiver words its answers."""

    @property
    def provider(self) -> str:
        """The mailbox provider id (the outcomes provider map's name for it)."""
        return PROVIDER[self.replies]


@dataclass(slots=True)
class SimEvent:
    """One queue event; `time` is preformatted PowerMTA-local text."""

    epoch: float
    time: str
    text: str
    type: str = "error"


@dataclass(slots=True)
class QueueState:
    """One `domain/vmta` queue and the parameters that drive it."""

    name: str
    domain: DomainInfo
    vmta: VmtaInfo
    rcp: int
    unit_kb10: int
    arrival: float
    drain: float
    bounce_p: float = 0.01
    defer_p: float = 0.02
    role: str = "normal"
    max_conn: int = 20
    conn: int = 0
    paused: bool = False
    backoff: bool = False
    retry_at: float = 0.0
    retry_str: str = ""
    job: str = "j100"
    events: list[SimEvent] = field(default_factory=list)

    @property
    def kb10(self) -> int:
        """Queued kilobytes in tenths (every recipient of a queue has the same size)."""
        return self.rcp * self.unit_kb10


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one queue did during one tick; the file writers expand it into records."""

    queue: QueueState
    start: float
    arrived: int
    delivered: int
    bounced: int
    deferred: int
    tq: int


@dataclass(slots=True)
class TickResult:
    """One evolved tick: per-queue outcomes and the events that go to the main log."""

    index: int
    start: float
    outcomes: list[Outcome] = field(default_factory=list)
    log: list[tuple[float, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Row:
    """An aggregated `/domains` or `/vmtas` row (kB in tenths)."""

    name: str
    rcp: int
    kb10: int
    conn: int
    domains: int = 0
    last_error: str = ""
    last_epoch: float = 0.0


@dataclass(frozen=True, slots=True)
class Aggregates:
    """Sums over the queues for one state version; cached because scale has 100k queues."""

    queues_by_rcp: tuple[QueueState, ...]
    domains: tuple[Row, ...]
    vmtas: tuple[Row, ...]
    rcp: int
    kb10: int
    dom: int
    conn: int


@dataclass(frozen=True, slots=True)
class LicenseInfo:
    """The license `show license` prints."""

    fields: tuple[tuple[str, str], ...]
    expires: date | None

    @property
    def never(self) -> bool:
        """True when `expires: never`."""
        return self.expires is None

    def text(self) -> str:
        """`show license` output: right-aligned `key: value` lines (UG §6.3.30)."""
        width = max(len(k) for k, _ in self.fields)
        return "".join(f"{k:>{width}}: {v}\n" for k, v in self.fields)


@dataclass(frozen=True, slots=True)
class ProductInfo:
    """Product and host facts of the `mta` block and `show version`."""

    version: str
    build_date: str
    revision: str
    bits: int = 64
    host: str = "mta1.example.net"
    host_id: str = "a8c0f1e2"
    os_name: str = "Linux"
    os_version: str = "4.18.0-513.el8.x86_64"
    os_build: str = "#1 SMP Thu Nov 16 10:29:54 UTC 2023 "  # real ones may end with a space
    cpu_type: str = "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz"
    cpu_count: int = 8
    ram_kib: int = 16318412
    serial: str = "910233"

    def version_text(self) -> str:
        """`show version` output (UG §6)."""
        return f"PowerMTA v{self.version} ({self.build_date}, {self.bits}-bit; {self.revision})."


PRODUCTS: dict[str, ProductInfo] = {
    "5.0": ProductInfo("5.0r1", "2019-09-13 16:27:31", "v5_0r1@190913.ba26ec5"),
    # 4.x values are made up in the same shape (versions seen in the wild: 4.0r6, 4.5r11).
    "4.x": ProductInfo("4.5r11", "2017-05-24 10:41:08", "v4_5r11@170524.4e1a7d2"),
}

# ---------------------------------------------------------------------------------------------
# Scenario data. Example domains, documentation IPs (RFC 5737) only.

_VMTAS: tuple[VmtaInfo, ...] = (
    VmtaInfo("vmta-a", "198.51.100.20", "mta-a.mail.example.net", "news.example.net", "pool1"),
    VmtaInfo("vmta-b", "198.51.100.21", "mta-b.mail.example.net", "news.example.net", "pool1"),
    VmtaInfo("vmta-c", "198.51.100.22", "mta-c.mail.example.com", "billing.example.com", "pool2"),
    VmtaInfo("vmta-d", "203.0.113.66", "mta-d.promo.example.org", "promo.example.org", ""),
)
_TLS13 = ("TLSv1.3", "TLS_AES_128_GCM_SHA256")
_TLS12 = ("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384")
_STARTTLS = "PIPELINING,SIZE,STARTTLS,8BITMIME"
_PLAIN = "PIPELINING,SIZE,8BITMIME"

# name, mx host, last octet of the MX IP in 192.0.2.0/24, tls, {vmta: arrivals per tick}
_DOMAINS: tuple[tuple[str, str, int, tuple[str, str] | None, dict[str, float]], ...] = (
    (
        "gmail.com",
        "gmail-smtp-in.l.google.com",
        25,
        _TLS13,
        {"vmta-a": 4, "vmta-b": 4, "vmta-c": 3, "vmta-d": 3},
    ),
    ("yahoo.com", "mta5.am0.yahoodns.net", 26, _TLS12, {"vmta-a": 2, "vmta-b": 2, "vmta-d": 2}),
    (
        "outlook.com",
        "outlook-com.olc.protection.outlook.com",
        27,
        _TLS12,
        {"vmta-a": 2, "vmta-b": 2, "vmta-d": 2},
    ),
    (
        "hotmail.com",
        "hotmail-com.olc.protection.outlook.com",
        28,
        _TLS12,
        {"vmta-a": 1, "vmta-d": 1},
    ),
    ("aol.com", "mx-aol.mail.gm0.yahoodns.net", 29, _TLS12, {"vmta-a": 1}),
    ("icloud.com", "mx01.mail.icloud.com", 30, _TLS13, {"vmta-b": 1}),
    ("gmx.net", "mx00.gmx.net", 31, _TLS12, {"vmta-c": 0.5}),
    ("web.de", "mx-ha03.web.de", 32, _TLS12, {"vmta-c": 0.5}),
    ("example.com", "mx1.example.com", 40, _TLS13, {"vmta-a": 1, "vmta-c": 1}),
    ("example.net", "mx2.example.net", 61, _TLS12, {"vmta-b": 1, "vmta-c": 1}),
    ("example.org", "mx.example.org", 70, _TLS12, {"vmta-c": 0.5}),
    # A company's own domains hosted by Google Workspace and by Microsoft 365 (their MX).
    ("shop.example.com", "aspmx.l.google.com", 80, _TLS13, {"vmta-a": 0.5}),
    ("corp.example.org", "corp-example-org.mail.protection.outlook.com", 81, _TLS12,
     {"vmta-c": 0.3}),
    ("lists.example.net", "mx.lists.example.net", 82, None, {"vmta-b": 0.3}),
    # IDN: one UTF-8 name and one punycode name (münchen.example).
    ("bücher.example", "mx.xn--bcher-kva.example", 90, _TLS12, {"vmta-a": 0.3}),
    ("xn--mnchen-3ya.example", "mx.xn--mnchen-3ya.example", 91, _TLS12, {"vmta-b": 0.3}),
)

_REPLIES: dict[str, str] = {
    "gmail.com": "gmail",
    "shop.example.com": "gmail",
    "yahoo.com": "yahoo",
    "aol.com": "yahoo",
    "outlook.com": "microsoft",
    "hotmail.com": "microsoft",
    "corp.example.org": "microsoft365",
    "icloud.com": "apple",
    "gmx.net": "gmx",
    "web.de": "gmx",
}
"""Reply family of a domain (pmta_snmp.sim.replies); the rest answer like self-hosted MTAs."""


def _reply_event(rng: random.Random, q: QueueState) -> str:
    """One documented deferral text (UG "Common Last Errors", real 4.0 captures) with the
    receiver's reply in its provider's words."""
    d, v = q.domain, q.vmta
    pick = rng.randrange(5)
    if pick == 0:
        return "connect rate limit reached"
    if pick == 1:
        return "message rate limit reached (based on queue's max-msg-rate in configuration)"
    if pick == 2:
        return f"ETIMEDOUT connecting to {d.mx} ({d.mx_ip})"
    replies = EVENT_REPLIES[d.replies]
    reply = replies[rng.randrange(len(replies))].format(ip=v.source_ip)
    if pick == 3:
        return (
            f'skip of MX requested: "{reply}" received from {d.mx} ({d.mx_ip}) '
            f"while connected from {v.helo} ({v.source_ip}) to {d.mx} ({d.mx_ip})"
        )
    return f'Error: "{reply}" while connected from {v.helo} ({v.source_ip}) to {d.mx} ({d.mx_ip})'


def _arrivals(rng: random.Random, rate: float) -> int:
    """Recipients injected into a queue during one tick, around `rate` on average."""
    if rate <= 0:
        return 0
    if rate < 1:
        return 1 if rng.random() < rate else 0
    return rng.randint(0, round(2 * rate))


def _scale_ip(i: int) -> str:
    """The i-th documentation address (192.0.2.1 …, then 198.51.100.1 …, then 203.0.113.1 …)."""
    nets = ("192.0.2", "198.51.100", "203.0.113")
    i %= 3 * 254
    return f"{nets[i // 254]}.{i % 254 + 1}"


def local_tz(start: datetime) -> tzinfo:
    """PowerMTA-local time zone as a fixed offset (DST changes are not simulated)."""
    aware = start if start.tzinfo is not None else start.astimezone()
    offset = aware.utcoffset() or timedelta(0)
    return timezone(offset)


class SimState:
    """The simulated PowerMTA: queues, traffic windows, license, evolving tick by tick."""

    def __init__(
        self,
        scenario: str = "healthy",
        seed: int = 1,
        *,
        start: datetime | None = None,
        profile: str = "5.0",
        domains: int = 1000,
        vmtas: int = 10,
        gm_imprinter: bool = False,
    ) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
        if scenario == "scale" and (domains < 1 or vmtas < 1):
            raise ValueError("scale needs domains >= 1 and vmtas >= 1")
        self.scenario = scenario
        self.seed = seed
        self.profile = profile
        self.product = PRODUCTS[profile]
        self.gm_imprinter = gm_imprinter
        begin = (start or datetime.now().astimezone()).replace(microsecond=0)
        self.tz = local_tz(begin)
        if begin.tzinfo is None:
            begin = begin.replace(tzinfo=self.tz)
        self.t0 = begin.timestamp()
        self.now = self.t0
        self.version = 0
        self.cache: dict[Any, Any] = {}
        init = random.Random(f"{seed}:init")  # noqa: S311 (simulation, not crypto)
        self.uptime0 = init.randint(2 * 86400, 9 * 86400)
        self.startup_epoch = self.t0 - self.uptime0
        self.queues: list[QueueState] = []
        self.by_name: dict[str, QueueState] = {}
        self.vmta_infos: dict[str, VmtaInfo] = {}
        if scenario == "scale":
            self._build_scale(init, domains, vmtas)
        else:
            self._build_standard(init)
        self.license = self._build_license()
        # Traffic windows.
        self.hist: deque[list[int]] = deque(maxlen=HOUR_TICKS)
        self.hr_sum = [0] * SAMPLE_LEN
        self.total = [0] * SAMPLE_LEN
        self.top_hr = [0] * SAMPLE_LEN
        self.top_min = [0] * SAMPLE_LEN
        self.conn_in = 0
        self.top_conn_out = 0
        self.top_conn_in = 0
        self.bounce_rcp = 0
        self.fbl_rcp = 0
        self.names_base = 3 * len({q.domain.name for q in self.queues})
        self.names_cached = self.names_base
        self.queries_pending = 0
        self.queries_active = 0
        self.counts: dict[str, int] = {"d": 0, "b": 0, "t": 0, "tq": 0, "r": 0}
        self.tick = -WARMUP_TICKS
        for _ in range(WARMUP_TICKS):
            self._step()
        self._settle_history(init)
        self.counts = dict.fromkeys(self.counts, 0)

    # ----------------------------------------------------------------------------- building
    def _add_queue(self, q: QueueState) -> None:
        self.queues.append(q)
        self.by_name[q.name] = q

    def _build_standard(self, rng: random.Random) -> None:
        for v in _VMTAS:
            self.vmta_infos[v.name] = v
        for name, mx, octet, tls, per_vmta in _DOMAINS:
            esmtp = _STARTTLS if tls else _PLAIN
            info = DomainInfo(name, mx, f"192.0.2.{octet}", esmtp, tls, _REPLIES.get(name, "other"))
            for vname, rate in per_vmta.items():
                v = self.vmta_infos[vname]
                drain = 0.03
                q = QueueState(
                    name=f"{name}/{vname}",
                    domain=info,
                    vmta=v,
                    rcp=int(rate / drain * rng.uniform(0.5, 1.5)),
                    unit_kb10=rng.randint(40, 600),
                    arrival=rate,
                    drain=drain,
                    job=f"j{rng.randint(100, 999)}",
                )
                if self.scenario == "bounce-storm" and vname == STORM_VMTA:
                    q.bounce_p = 0.30
                    q.arrival = rate * 2
                self._add_queue(q)
        if self.scenario == "backlog":
            q = self.by_name[BACKLOG_QUEUE]
            q.role = "backlog"
            q.rcp = 2000 + rng.randint(0, 500)
        if self.scenario == "stuck":
            q = self.by_name[STUCK_QUEUE]
            q.role, q.rcp, q.arrival, q.backoff = "stuck", STUCK_RCP, 0.0, True
            self._set_retry(q, self.t0 - WARMUP_TICKS * TICK_SECONDS)
        for q in self.queues:
            if not q.retry_str:
                self._set_retry(q, self.t0 - WARMUP_TICKS * TICK_SECONDS + rng.randint(0, 60))

    def _build_scale(self, rng: random.Random, n_domains: int, n_vmtas: int) -> None:
        # Domain i is queued on VirtualMTA i % M; the first 50 domains on every VirtualMTA.
        vmtas = [
            VmtaInfo(
                f"vmta{j:03d}",
                _scale_ip(j),
                f"mta{j:03d}.mail.example.net",
                f"s{j % 7}.example.com",
                f"pool{j % 4}",
            )
            for j in range(n_vmtas)
        ]
        for v in vmtas:
            self.vmta_infos[v.name] = v
        start_str = self.fmt(self.t0 - WARMUP_TICKS * TICK_SECONDS)
        for i in range(n_domains):
            name = f"d{i:06d}.example"
            info = DomainInfo(name, f"mx.{name}", _scale_ip(i + 100), _STARTTLS, _TLS12)
            targets = vmtas if i < 50 else (vmtas[i % n_vmtas],)
            for v in targets:
                q = QueueState(
                    name=f"{name}/{v.name}",
                    domain=info,
                    vmta=v,
                    rcp=rng.randint(0, 60),
                    unit_kb10=40 + i % 400,
                    arrival=0.5,
                    drain=0.03,
                    retry_at=self.t0,
                    retry_str=start_str,
                )
                self._add_queue(q)

    def _build_license(self) -> LicenseInfo:
        today = self.local(self.t0).date()
        expires: date | None = today + timedelta(days=300)
        if self.scenario == "license-expiring":
            expires = today + timedelta(days=5)
        elif self.scenario == "license-expired":
            expires = today - timedelta(days=3)
        elif self.scenario == "license-never":
            expires = None
        fields = (
            ("product", "PowerMTA"),
            ("version", self.product.version.split("r")[0]),
            ("platform", "linux-intel"),
            ("units", "0"),
            ("instances", "1"),
            ("licensee", "Example Mail Ltd"),
            ("serial", self.product.serial),
            ("issued", (today - timedelta(days=200)).isoformat()),
            ("expires", expires.isoformat() if expires else "never"),
            ("copyright", "Port25 Solutions, Inc.  All Rights Reserved"),
        )
        return LicenseInfo(fields, expires)

    def _settle_history(self, rng: random.Random) -> None:
        """After warm-up: totals since startup and historic peaks above the current windows."""
        # One factor per window keeps msg <= rcp in every window.
        f_total = self.uptime0 / 3600 * rng.uniform(0.8, 1.1)
        f_hr, f_min = rng.uniform(1.2, 1.6), rng.uniform(1.1, 1.4)
        for i in range(SAMPLE_LEN):
            self.total[i] = int(self.hr_sum[i] * f_total) + self.hr_sum[i]
            self.top_hr[i] = max(self.top_hr[i], int(self.hr_sum[i] * f_hr))
            self.top_min[i] = int(self.top_min[i] * f_min)
        agg = self.aggregates()
        self.top_conn_out = max(self.top_conn_out, int(agg.conn * 1.5) + 10)
        self.top_conn_in = max(self.top_conn_in, self.conn_in + 25)

    # ------------------------------------------------------------------------------- time
    def local(self, epoch: float) -> datetime:
        """PowerMTA-local aware time for an epoch."""
        return datetime.fromtimestamp(int(epoch), self.tz)

    def fmt(self, epoch: float) -> str:
        """PowerMTA time text: `YYYY-MM-DD HH:MM:SS`, local, no zone."""
        return self.local(epoch).strftime("%Y-%m-%d %H:%M:%S")

    def _set_retry(self, q: QueueState, epoch: float) -> None:
        q.retry_at = epoch
        q.retry_str = self.fmt(epoch)

    def advance_to(self, epoch: float) -> list[TickResult]:
        """Move the clock to `epoch`, evolving every tick that ends on or before it."""
        results: list[TickResult] = []
        if epoch < self.now:
            return results
        while self.t0 + (self.tick + 1) * TICK_SECONDS <= epoch:
            results.append(self._step())
        self.now = epoch
        return results

    # ------------------------------------------------------------------------------ evolve
    def _event(self, res: TickResult, q: QueueState, epoch: float, text: str) -> None:
        q.events.insert(0, SimEvent(epoch, self.fmt(epoch), text))
        del q.events[EVENTS_KEPT:]
        res.log.append((epoch, text))

    def _step(self) -> TickResult:
        k = self.tick
        rng = random.Random(f"{self.seed}:{k}")  # noqa: S311 (simulation, not crypto)
        start = self.t0 + k * TICK_SECONDS
        res = TickResult(k, start)
        if len(self.queues) > ACTIVE_MAX:
            active = [self.queues[i] for i in rng.sample(range(len(self.queues)), ACTIVE_MAX)]
        else:
            active = self.queues
        sample = [0] * SAMPLE_LEN
        for q in active:
            a = d = b = t = tq = 0
            if q.role == "backlog":
                a, d, t, tq = self._step_backlog(rng, res, q, k, start)
            elif q.role == "stuck":
                t, tq = self._step_stuck(rng, res, q, start)
            else:
                a = _arrivals(rng, q.arrival)
                if q.paused:
                    q.conn = 0
                else:
                    b, t, d = self._step_normal(rng, res, q, a, start)
            q.rcp += a - d - b
            sample[IN_RCP] += a
            sample[IN_KB10] += a * q.unit_kb10
            sample[OUT_RCP] += d
            sample[OUT_KB10] += d * q.unit_kb10
            if a or d or b or t or tq:
                res.outcomes.append(Outcome(q, start, a, d, b, t, tq))
                self.counts["r"] += a
                self.counts["d"] += d
                self.counts["b"] += b
                self.counts["t"] += t
                self.counts["tq"] += tq
        sample[IN_MSG] = sample[IN_RCP] - sample[IN_RCP] // 5
        sample[OUT_MSG] = sample[OUT_RCP] - sample[OUT_RCP] // 5
        sample[BOUNCE_PROC] = rng.randint(0, 3)
        sample[FBL_PROC] = 1 if rng.random() < 0.2 else 0
        self.bounce_rcp = min(40, max(0, self.bounce_rcp + rng.randint(-3, 3)))
        self.fbl_rcp = 1 if rng.random() < 0.2 else 0
        self.conn_in = rng.randint(0, 2) + sample[IN_MSG] // 8
        self.queries_pending = rng.randint(0, 3)
        self.queries_active = rng.randint(0, 2)
        self.names_cached = self.names_base + rng.randint(0, 40)
        self._record(sample)
        self.tick += 1
        self.version += 1
        self.cache.clear()
        res.log.sort(key=lambda e: e[0])
        return res

    def _step_normal(
        self, rng: random.Random, res: TickResult, q: QueueState, a: int, start: float
    ) -> tuple[int, int, int]:
        """Attempt a share of the queue: returns (bounced, deferred, delivered)."""
        attempted = min(q.rcp + a, int((q.rcp + a) * q.drain + rng.random()))
        bounce_p, defer_p = q.bounce_p, q.defer_p
        listed = self.listed(q, start)
        if listed:  # most attempts refused: 5xx where the list is used, else deferred
            bounce_p, defer_p = (0.85, 0.02) if LISTED[q.domain.replies].kind == "b" else (
                0.02, 0.60)
        b = t = 0
        for _ in range(attempted):
            r = rng.random()
            if r < bounce_p:
                b += 1
            elif r < bounce_p + defer_p:
                t += 1
        q.conn = 0 if attempted == 0 else min(q.max_conn, 1 + attempted // 4)
        if t:
            self._set_retry(q, start + TICK_SECONDS + rng.randint(30, 90))
        if listed and (b or t):
            epoch = start + rng.randint(0, TICK_SECONDS - 1)
            self._event(res, q, epoch, _backoff_text(q, listed_reply(q, rng)))
        elif t and rng.random() < 0.5:
            epoch = start + rng.randint(0, TICK_SECONDS - 1)
            self._event(res, q, epoch, _reply_event(rng, q))
        return b, t, attempted - b - t

    def listed(self, q: QueueState, start: float) -> bool:
        """blocklisted: whether the queue's source IP is listed in the tick starting at
        `start`."""
        return (self.scenario == "blocklisted" and q.vmta.name == LISTED_VMTA
                and start >= self.t0 + LISTED_TICK * TICK_SECONDS)

    def _step_backlog(
        self, rng: random.Random, res: TickResult, q: QueueState, k: int, start: float
    ) -> tuple[int, int, int, int]:
        """Backoff queue growing at every tick for three hours: (arrived, d, t, tq).

        Afterwards it turns into a normal queue that drains faster than mail arrives.
        """
        if k >= BACKLOG_END_TICK:
            q.role, q.backoff, q.drain, q.arrival = "normal", False, 0.05, 2.0
            return 0, 0, 0, 0
        a = rng.randint(50, 90)
        if k < BACKLOG_START_TICK:
            return a, a, 0, 0
        q.conn = 0
        if not q.backoff:
            q.backoff = True
            self._set_retry(q, start + BACKLOG_RETRY)
            reply = (
                f"421 4.7.0 [TSS04] Messages from {q.vmta.source_ip} temporarily deferred "
                "due to unexpected volume or user complaints"
            )
            self._event(res, q, start, _backoff_text(q, reply))
        if q.paused or start < q.retry_at:
            return a, 0, 0, 0
        self._set_retry(q, start + BACKLOG_RETRY + rng.randint(0, 30))
        reply = f"421 4.7.0 [TS01] Messages from {q.vmta.source_ip} temporarily deferred"
        self._event(res, q, start + rng.randint(0, TICK_SECONDS - 1), _backoff_text(q, reply))
        return a, rng.randint(0, 5), min(3, q.rcp), 1

    def _step_stuck(
        self, rng: random.Random, res: TickResult, q: QueueState, start: float
    ) -> tuple[int, int]:
        """A queue that never drains: no arrivals, every retry refused, rcp constant."""
        q.conn = 0
        if q.paused or start < q.retry_at:
            return 0, 0
        self._set_retry(q, start + STUCK_RETRY)
        epoch = start + rng.randint(0, TICK_SECONDS - 1)
        self._event(res, q, epoch, f"ECONNREFUSED connecting to {q.domain.name} ({q.domain.mx_ip})")
        self._event(res, q, epoch, f"All SMTP sources for queue {q.name} are now disabled.")
        return min(3, q.rcp), 1

    def _record(self, sample: list[int]) -> None:
        if len(self.hist) == HOUR_TICKS:
            old = self.hist[0]
            for i in range(SAMPLE_LEN):
                self.hr_sum[i] -= old[i]
        self.hist.append(sample)
        last_min = self.window_last_min()
        for i in range(SAMPLE_LEN):
            self.hr_sum[i] += sample[i]
            self.total[i] += sample[i]
            self.top_hr[i] = max(self.top_hr[i], self.hr_sum[i])
            self.top_min[i] = max(self.top_min[i], last_min[i])
        conn = sum(q.conn for q in self.queues) if len(self.queues) <= ACTIVE_MAX else 0
        self.top_conn_out = max(self.top_conn_out, conn)
        self.top_conn_in = max(self.top_conn_in, self.conn_in)

    # ------------------------------------------------------------------------------ queries
    def window_last_min(self) -> list[int]:
        """The last simulated minute (the last six ticks)."""
        out = [0] * SAMPLE_LEN
        for s in list(self.hist)[-MIN_TICKS:]:
            for i in range(SAMPLE_LEN):
                out[i] += s[i]
        return out

    def windows(self) -> dict[str, list[int]]:
        """Traffic windows keyed by PowerMTA's names."""
        return {
            "total": list(self.total),
            "lastHr": list(self.hr_sum),
            "lastMin": self.window_last_min(),
            "topPerHr": list(self.top_hr),
            "topPerMin": list(self.top_min),
        }

    def aggregates(self) -> Aggregates:
        """Per-domain and per-VirtualMTA sums, queue order by recipients (cached per version)."""
        cached = self.cache.get("agg")
        if isinstance(cached, Aggregates):
            return cached
        dom: dict[str, list[Any]] = {}
        vm: dict[str, list[Any]] = {}
        rcp = kb10 = conn = 0
        for q in self.queues:
            kb = q.rcp * q.unit_kb10
            rcp += q.rcp
            kb10 += kb
            conn += q.conn
            d = dom.get(q.domain.name)
            if d is None:
                d = dom[q.domain.name] = [0, 0, 0, "", 0.0]
            d[0] += q.rcp
            d[1] += kb
            d[2] += q.conn
            if q.events and q.events[0].epoch > d[4]:
                d[3], d[4] = q.events[0].text, q.events[0].epoch
            v = vm.get(q.vmta.name)
            if v is None:
                v = vm[q.vmta.name] = [0, 0, 0, 0]
            v[0] += q.rcp
            v[1] += kb
            v[2] += q.conn
            v[3] += 1 if q.rcp > 0 else 0
        agg = Aggregates(
            queues_by_rcp=tuple(sorted(self.queues, key=lambda q: (-q.rcp, q.name))),
            domains=tuple(
                sorted(
                    (
                        Row(n, x[0], x[1], x[2], last_error=x[3], last_epoch=x[4])
                        for n, x in dom.items()
                    ),
                    key=lambda r: (-r.rcp, r.name),
                )
            ),
            vmtas=tuple(
                sorted(
                    (Row(n, x[0], x[1], x[2], domains=x[3]) for n, x in vm.items()),
                    key=lambda r: (-r.rcp, r.name),
                )
            ),
            rcp=rcp,
            kb10=kb10,
            dom=sum(1 for x in dom.values() if x[0] > 0),
            conn=conn,
        )
        self.cache["agg"] = agg
        return agg

    def match(self, pattern: str) -> list[QueueState]:
        """Queues matching a queue pattern: `domain/vmta`, `*/vmta`, `domain` (= `domain/*`)."""
        pat = pattern.strip().lower()
        if "/" not in pat:
            pat += "/*"
        if "*" not in pat and "?" not in pat:
            q = self.by_name.get(pattern.strip()) or next(
                (x for x in self.queues if x.name.lower() == pat), None
            )
            return [q] if q else []
        return [q for q in self.queues if fnmatch.fnmatchcase(q.name.lower(), pat)]

    def set_paused(self, queues: list[QueueState], paused: bool) -> None:
        """`pause queue` / `resume queue`."""
        for q in queues:
            q.paused = paused
            if paused:
                q.conn = 0
        self.touch()

    def schedule(self, queues: list[QueueState]) -> None:
        """`schedule`: retry the queues now (a backoff queue attempts at its next tick)."""
        for q in queues:
            self._set_retry(q, self.now)
        self.touch()

    def touch(self) -> None:
        """Mark the state changed outside a tick (commands)."""
        self.version += 1
        self.cache.clear()

    # ----------------------------------------------------------------------------- snapshot
    def queue_types(self) -> list[tuple[str, int, int, int]]:
        """`status/queue/*` as (type, rcp, dom, kb10), in PowerMTA's order."""
        agg = self.aggregates()
        out = [("smtp", agg.rcp, agg.dom, agg.kb10)]
        for name in model.QUEUE_TYPES[1:]:
            rcp = {"bounceProcessor": self.bounce_rcp, "feedbackLoopProcessor": self.fbl_rcp}.get(
                name, 0
            )
            out.append((name, rcp, 1 if rcp else 0, rcp * 30))
        if self.gm_imprinter:
            out.append(("gmImprinter", 0, 0, 0))
        return out

    def spool(self) -> dict[str, int]:
        """Spool counters derived from the queued recipients."""
        total_rcp = sum(x[1] for x in self.queue_types())
        in_use = total_rcp - total_rcp // 5
        return {
            "initPct": 100,
            "dirs": 1,
            "inUse": in_use,
            "recycled": 2000,
            "total": in_use + 2000,
            "totalRcp": total_rcp,
            "maxRcp": 10_000_000,
        }

    def conn_out(self) -> tuple[int, int, int]:
        """smtpOut cur, max, top."""
        cur = self.aggregates().conn
        self.top_conn_out = max(self.top_conn_out, cur)
        return cur, 2000, self.top_conn_out

    def snapshot(self, *, source: str = "pmta-sim") -> model.Snapshot:
        """The current truth as the project's model, as a full 5.0 PowerMTA would report it.

        With profile 4.x the `mta` block is absent on the wire, so host and OS are None;
        version, build date, revision and serial stay (`show version`, `show license`).
        """
        win = self.windows()

        def tw(s: list[int]) -> model.TrafficWindow:
            return model.TrafficWindow(
                inbound=model.Counts(s[IN_RCP], s[IN_MSG], s[IN_KB10] / 10),
                outbound=model.Counts(s[OUT_RCP], s[OUT_MSG], s[OUT_KB10] / 10),
                bounce_processed=s[BOUNCE_PROC],
                feedback_loop_processed=s[FBL_PROC],
            )

        cur, mx, top = self.conn_out()
        sp = self.spool()
        p = self.product
        full = self.profile == "5.0"
        status = model.Status(
            traffic=model.Traffic(
                total=tw(win["total"]),
                last_hr=tw(win["lastHr"]),
                last_min=tw(win["lastMin"]),
                top_per_hr=tw(win["topPerHr"]),
                top_per_min=tw(win["topPerMin"]),
            ),
            conn=model.Connections(
                smtp_in=model.ConnCounts(self.conn_in, 500, self.top_conn_in),
                smtp_out=model.ConnCounts(cur, mx, top),
            ),
            queue_types=tuple(
                model.QueueTypeCounts(n, r, d, k / 10) for n, r, d, k in self.queue_types()
            ),
            spool=model.Spool(
                init_pct=sp["initPct"],
                dirs=sp["dirs"],
                files_in_use=sp["inUse"],
                files_recycled=sp["recycled"],
                files_total=sp["total"],
                total_rcp=sp["totalRcp"],
                max_rcp=sp["maxRcp"],
            ),
            resolver=model.Resolver(self.names_cached, self.queries_pending, self.queries_active),
            runtime=model.Runtime(
                product="PowerMTA",
                version=p.version,
                build_date=p.build_date,
                revision=p.revision,
                host_name=p.host if full else None,
                serial=p.serial,
                os_name=p.os_name if full else None,
                time_now=self.local(self.now).replace(tzinfo=None),
                startup_time=self.local(self.startup_epoch).replace(tzinfo=None),
                shutting_down=False,
                status="running",
            ),
        )
        agg = self.aggregates()
        queues = [
            model.Queue(
                name=q.name,
                rcp=q.rcp,
                kb=q.kb10 / 10,
                conn=q.conn,
                paused=q.paused,
                mode=model.QueueMode.BACKOFF if q.backoff else model.QueueMode.NORMAL,
                retry_time=q.retry_str or None,
                last_error=q.events[0].text if q.events else None,
                events=tuple(model.QueueEvent(e.type, e.time, e.text) for e in q.events),
            )
            for q in self.queues
        ]
        lic = self.license
        return model.Snapshot(
            status=status,
            queues=model.sorted_by_name(queues),
            domains=model.sorted_by_name(
                model.Domain(r.name, r.rcp, r.kb10 / 10, r.conn, r.last_error or None)
                for r in agg.domains
            ),
            vmtas=model.sorted_by_name(
                model.Vmta(r.name, r.rcp, r.kb10 / 10, r.conn, r.domains) for r in agg.vmtas
            ),
            license=model.License(never=lic.never, expires=lic.expires, fields=lic.fields),
            taken_at=datetime.fromtimestamp(int(self.now), UTC),
            source=source,
        )


def listed_reply(q: QueueState, rng: random.Random) -> str:
    """The reply a listed source IP gets from the queue's receiver (one line)."""
    d, v = q.domain, q.vmta
    return fill(LISTED[d.replies].diag, rng, ip=v.source_ip, mx=d.mx, domain=d.name,
                sender=v.sending_domain, rcpt=f"postmaster@{d.name}")


def _backoff_text(q: QueueState, reply: str) -> str:
    """The documented `Error: "<reply>" while connected from … to …` form."""
    d, v = q.domain, q.vmta
    return f'Error: "{reply}" while connected from {v.helo} ({v.source_ip}) to {d.mx} ({d.mx_ip})'
