"""`Simulator`: the in-process PowerMTA stand-in (HTTP server, clock, faults, files)."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType

from pmta_snmp import model
from pmta_snmp.sim import certs
from pmta_snmp.sim.app import (
    FAULTS,
    MALFORMED_VARIANTS,
    PAGE_MAX_ITEMS,
    App,
    AppConfig,
    Fault,
    check_api_key,
    parse_access,
)
from pmta_snmp.sim.files import (
    DEFAULT_ACCT_MAX_SIZE,
    DEFAULT_RECORDS,
    AcctWriter,
    FileSink,
    LogWriter,
)
from pmta_snmp.sim.server import LOOPBACK, HttpServer
from pmta_snmp.sim.state import SCENARIO_FAULTS, TICK_SECONDS, SimState


class Simulator:
    """A simulated PowerMTA web monitor on 127.0.0.1, for the demo, tests and benchmarks.

    `speed` is simulated seconds per real second while running (0 freezes the clock so only
    `advance()` moves it, which tests use for determinism). Same scenario, seed and
    `start_time` give the same answers.
    """

    def __init__(
        self,
        scenario: str = "healthy",
        seed: int = 1,
        profile: str = "5.0",
        speed: float = 1.0,
        https: bool = False,
        api_key: str | None = None,
        allow: Sequence[str] = ("127.0.0.1/32",),
        seed_flavor: bool = False,
        acct_dir: str | Path | None = None,
        log_path: str | Path | None = None,
        *,
        port: int = 0,
        start_time: datetime | None = None,
        domains: int = 1000,
        vmtas: int = 10,
        acct_layout: str = "5.0",
        acct_records: Sequence[str] = DEFAULT_RECORDS,
        acct_max_size: int = DEFAULT_ACCT_MAX_SIZE,
        log_keep: int = 8,
        slow_delay: float = 5.0,
        malformed: str = "truncated",
        xml_content_type: str = "text/xml",
        max_items: int | None = PAGE_MAX_ITEMS,
        gm_imprinter: bool = False,
        cert_out: str | Path | None = None,
        verbose: bool = False,
        own_thread: bool = True,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        if malformed not in MALFORMED_VARIANTS:
            raise ValueError(f"malformed must be one of {', '.join(MALFORMED_VARIANTS)}")
        self.state = SimState(
            scenario,
            seed,
            start=start_time,
            profile=profile,
            domains=domains,
            vmtas=vmtas,
            gm_imprinter=gm_imprinter,
        )
        self.speed = speed
        self.https = https
        self.lock = threading.RLock()
        self.fault = Fault(SCENARIO_FAULTS.get(scenario, "none"), slow_delay, malformed)
        self._acct = (
            AcctWriter(
                Path(acct_dir),
                self.state,
                layout=acct_layout,
                records=acct_records,
                max_size=acct_max_size,
            )
            if acct_dir is not None
            else None
        )
        self._log = LogWriter(Path(log_path), self.state, keep=log_keep) if log_path else None
        self._sink = FileSink(self.state, self._acct, self._log)
        self.cert_pem: bytes | None = None
        self._ssl: ssl.SSLContext | None = None
        if https:
            self.cert_pem, key_pem = certs.self_signed()
            self._ssl = certs.server_context(self.cert_pem, key_pem)
            if cert_out is not None:
                Path(cert_out).write_bytes(self.cert_pem)
        self.app = App(
            self,
            AppConfig(
                api_key=check_api_key(api_key) if api_key is not None else None,
                access=parse_access(allow),
                seed_flavor=seed_flavor,
                xml_content_type=xml_content_type,
                max_items=max_items,
                https=https,
            ),
        )
        self._verbose = verbose
        self._own_thread = own_thread
        """False: no thread of its own serves the port; a `SimFleet` serves it with others."""
        self._port = port
        self._stop = threading.Event()
        self._server: HttpServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._fault_timer: threading.Timer | None = None
        self._srv_lock = threading.Lock()
        self._running = False
        self._last_mono = 0.0

    # ---------------------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        """The bound port (known after `start()`)."""
        return self._port

    @property
    def server(self) -> HttpServer | None:
        """The listening server while the simulator is up (None when stopped or `down`)."""
        return self._server

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:8080`."""
        return f"{'https' if self.https else 'http'}://{LOOPBACK}:{self._port}"

    def start(self) -> Simulator:
        """Bind (port 0 picks a free one), serve in a thread, start the simulated clock."""
        if self._running:
            return self
        self._stop.clear()
        with self.lock:
            self._last_mono = time.monotonic()
        self._running = True
        self._open()
        if self.fault.name == "down":
            self._close()  # the port stays reserved in `self._port`; connecting is refused
        if self.speed > 0:
            self._ticker = threading.Thread(
                target=self._tick_loop, name="pmta-sim-clock", daemon=True
            )
            self._ticker.start()
        return self

    def stop(self) -> None:
        """Stop serving and the clock; open connections are dropped. Idempotent."""
        if not self._running:
            return
        self._running = False
        self._stop.set()
        if self._fault_timer is not None:
            self._fault_timer.cancel()
            self._fault_timer.join()
            self._fault_timer = None
        self._close()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _open(self) -> None:
        with self._srv_lock:
            if self._server is not None or not self._running:
                return
            srv = HttpServer(self._port, self.app, self._stop, self._ssl, self._verbose)
            self._port = srv.server_address[1]
            thread = None
            if self._own_thread:
                thread = threading.Thread(
                    target=srv.serve_forever,
                    kwargs={"poll_interval": 0.05},
                    name="pmta-sim-http",
                    daemon=True,
                )
                thread.start()
            self._server, self._serve_thread = srv, thread

    def _close(self) -> None:
        with self._srv_lock:
            srv, thread = self._server, self._serve_thread
            self._server = self._serve_thread = None
        if srv is not None:
            if thread is not None:  # shutdown() waits for serve_forever: only ours runs it
                srv.shutdown()
            srv.server_close()
            srv.close_connections()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _tick_loop(self) -> None:
        interval = min(0.5, max(0.02, TICK_SECONDS / self.speed / 2))
        while not self._stop.wait(interval):
            with self.lock:
                self.sync()

    # -------------------------------------------------------------------------------- clock
    def sync(self) -> None:
        """Bring simulated time up to the real clock × speed (no-op when stopped or speed 0)."""
        with self.lock:
            if not self._running or self.speed <= 0:
                return
            mono = time.monotonic()
            elapsed, self._last_mono = mono - self._last_mono, mono
            self._advance_locked(elapsed * self.speed)

    def advance(self, seconds: float) -> None:
        """Advance simulated time deterministically, evolving state and writing the files."""
        if seconds < 0:
            raise ValueError("cannot go back in time")
        with self.lock:
            self._advance_locked(seconds)

    def _advance_locked(self, seconds: float) -> None:
        self._sink.consume(self.state.advance_to(self.state.now + seconds))

    def now(self) -> datetime:
        """Simulated PowerMTA-local time, naive (as `timeNow` shows it)."""
        with self.lock:
            self.sync()
            return self.state.local(self.state.now).replace(tzinfo=None)

    # -------------------------------------------------------------------------------- truth
    def snapshot(self) -> model.Snapshot:
        """The current truth as the project's model (`taken_at` is the simulated clock)."""
        with self.lock:
            self.sync()
            return self.state.snapshot(source=self.url)

    def counts(self) -> dict[str, dict[str, int]]:
        """Records simulated since the start time (`simulated`) and written to accounting."""
        with self.lock:
            self.sync()
            written = dict(self._acct.written) if self._acct else {}
            return {"simulated": dict(self.state.counts), "written": written}

    # ---------------------------------------------------------------------------- commands
    def pause(self, pattern: str, paused: bool = True) -> int:
        """Pause (or resume) matching queues, like `pause queue`; returns how many matched."""
        with self.lock:
            queues = self.state.match(pattern)
            self.state.set_paused(queues, paused)
            return len(queues)

    def rotate_log(self) -> Path | None:
        """`pmta rotate log`: `log` → `log.1` → …; returns the log path (None without a log)."""
        with self.lock:
            if self._log is None:
                return None
            self._log.rotate()
            return self._log.path

    def rotate_acct(self) -> Path | None:
        """Move `acct.csv` to `acct-YYYY-MM-DD-NNNN.csv`; returns the new name."""
        with self.lock:
            return self._acct.rotate() if self._acct is not None else None

    # ------------------------------------------------------------------------------- faults
    def set_fault(
        self,
        fault: str,
        *,
        delay: float | None = None,
        variant: str | None = None,
        duration: float | None = None,
    ) -> None:
        """Inject a fault (`none`, `down`, `reset`, `slow`, `500`, `malformed`).

        `delay` is the `slow` answer delay in seconds, `variant` the `malformed` kind, and
        `duration` (real seconds) switches back to `none` afterwards.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        if variant is not None and variant not in MALFORMED_VARIANTS:
            raise ValueError(f"unknown variant {variant!r}")
        if self._fault_timer is not None:
            self._fault_timer.cancel()
            self._fault_timer = None
        self.fault.name = fault
        if delay is not None:
            self.fault.delay = delay
        if variant is not None:
            self.fault.variant = variant
        if self._running:
            if fault == "down":
                self._close()
            else:
                self._open()
        if duration is not None and self._running:
            timer = threading.Timer(duration, self.set_fault, args=("none",))
            timer.daemon = True
            self._fault_timer = timer
            timer.start()
