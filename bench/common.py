"""What every benchmark shares: result rows, the final table, timing and process helpers.

A benchmark module has `NAME`, `TITLE` and `run(report, quick=...)`; it appends `Row`s to the
report as it goes, so what was measured before a crash is still printed. Every ratio is against
a reference measured in the same run, never against a number written down somewhere.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def log(message: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Rows and the table
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the final table.

    `ok` is True/False for a target, None for a figure that is only reported. `ratio` is
    ours / reference, whatever the unit (the target column says which way is better).
    """

    measure: str
    ours: str
    reference: str = ""
    ratio: float | None = None
    target: str = ""
    ok: bool | None = None

    @property
    def verdict(self) -> str:
        """pass, FAIL or info."""
        if self.ok is None:
            return "info"
        return "pass" if self.ok else "FAIL"

    def verdict_at(self, quick: bool) -> str:
        """The verdict; in a quick run a missed target reads `small size`: the targets are
        set for the full sizes, where start-up and fixed costs weigh less."""
        if quick and self.ok is False:
            return "small size"
        return self.verdict


@dataclass
class Report:
    """Rows and footnotes of every benchmark run, in order."""

    rows: list[tuple[str, Row]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    section: str = ""
    quick: bool = False
    """A smoke run at small sizes (`--quick`): missed targets are not judged."""

    def add(self, row: Row) -> Row:
        """Append a row under the current benchmark (also echoed on stderr)."""
        self.rows.append((self.section, row))
        log(
            f"{row.measure}: {row.ours}"
            + (f" (reference {row.reference})" if row.reference else "")
            + (f" -> {row.verdict_at(self.quick)}" if row.ok is not None else "")
        )
        return row

    def note(self, text: str) -> None:
        """A footnote printed under the table (why a target was missed, what was skipped)."""
        self.notes.append((self.section, text))
        log(f"note: {text}")


def fmt_ratio(ratio: float | None) -> str:
    """`1.23x`, or empty."""
    if ratio is None or math.isnan(ratio):
        return ""
    if ratio >= 100:
        return f"{ratio:.0f}x"
    return f"{ratio:.2f}x"


def render_table(report: Report) -> str:
    """The one table: measure | ours | reference | ratio | target | pass/fail."""
    header = ("bench", "measure", "ours", "reference", "ratio", "target", "pass/fail")
    lines: list[tuple[str, ...]] = [header]
    for section, row in report.rows:
        lines.append(
            (
                section,
                row.measure,
                row.ours,
                row.reference,
                fmt_ratio(row.ratio),
                row.target,
                row.verdict_at(report.quick),
            )
        )
    for name in report.crashed:
        lines.append((name, "benchmark crashed (see stderr)", "", "", "", "", "CRASH"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(line: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"

    out = [fmt(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(fmt(line) for line in lines[1:])
    passed = sum(1 for _, r in report.rows if r.ok is True)
    failed = sum(1 for _, r in report.rows if r.ok is False)
    out.append("")
    if report.quick:
        out.append(f"targets: {passed} passed, {failed} below target at these small sizes "
                   f"(judged only at full size: ./run bench NAME); {len(report.crashed)} crashed")
    else:
        out.append(f"targets: {passed} passed, {failed} missed; {len(report.crashed)} crashed")
    if report.notes:
        out.append("")
        out.extend(f"- [{section}] {text}" for section, text in report.notes)
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty sequence."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    """The 50th percentile (nearest rank)."""
    return percentile(values, 50)


def ms(seconds: float) -> str:
    """`12.3 ms` from seconds."""
    value = seconds * 1000
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def secs(seconds: float) -> str:
    """`1.23 s` (`123 ms` below one second)."""
    if seconds < 1:
        return ms(seconds)
    return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s"


def rate(value: float, unit: str) -> str:
    """`12.3k values/s` style."""
    if value >= 1e6:
        return f"{value / 1e6:.2f}M {unit}"
    if value >= 1e4:
        return f"{value / 1e3:.1f}k {unit}"
    if value >= 1e3:
        return f"{value / 1e3:.2f}k {unit}"
    return f"{value:.1f} {unit}"


def mib(kib: float) -> str:
    """`123.4 MiB` from KiB (as /proc reports)."""
    return f"{kib / 1024:.1f} MiB"


def ratio(ours: float, reference: float) -> float | None:
    """ours / reference, None when the reference is zero or missing."""
    if not reference or math.isnan(reference) or math.isnan(ours):
        return None
    return ours / reference


# ---------------------------------------------------------------------------------------------
# Processes (each started here is stopped here, by its pid)
# ---------------------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS, ... of /proc/PID/status in KiB (empty when the process is gone)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if key.startswith("Vm") and parts and parts[0].isdigit():
            out[key] = int(parts[0])
    return out


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 5.0) -> None:
    """SIGTERM one process we started, SIGKILL after `timeout` (by pid, never by name)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_tcp(port: int, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    """Wait until 127.0.0.1:port accepts connections (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def scale_args(domains: int, vmtas: int) -> tuple[str, ...]:
    """pmta-sim arguments for a PowerMTA of `domains` domains whose pages list every row.

    The simulator lists 10 rows per page by default, as a PowerMTA with its default
    `http-default-max-items` does; the benchmarks measure whole lists (`--max-items 0`: a
    PowerMTA with that setting raised), as they did before the simulator had the limit."""
    return ("--scenario", "scale", "--domains", str(domains), "--vmtas", str(vmtas),
            "--speed", "0", "--max-items", "0")


class SimProcess:
    """The PowerMTA simulator in its own process (`python -m pmta_snmp.sim`, i.e. pmta-sim
    with TCP_NODELAY), so that serving big answers never takes the measuring process's GIL.
    Stopped by pid."""

    def __init__(self, workdir: Path, *args: str, timeout: float = 120.0) -> None:
        self.port = free_port()
        self.log_path = workdir / f"sim-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            [PYTHON, "-m", "pmta_snmp.sim", "--port", str(self.port), *args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        try:
            wait_tcp(self.port, timeout, self.proc)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """Base URL of the simulated web monitor."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop the simulator process."""
        stop(self.proc)
        self._log.close()

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def workdir(prefix: str = "pmta-bench-") -> Iterator[Path]:
    """A short private temp dir under /tmp (unix socket paths), removed at the end."""
    base = "/tmp" if os.path.isdir("/tmp") else None
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def timed_run(cmd: Sequence[str], *, timeout: float = 120.0, **kwargs: Any) -> tuple[float, str]:
    """Run a command to completion; (wall seconds, stdout). Raises on a non-zero exit."""
    t0 = time.perf_counter()
    res = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.strip()[-500:]}"
        )
    return elapsed, res.stdout
