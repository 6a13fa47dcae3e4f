"""Writers of PowerMTA-like logs and accounting files that rotate themselves, with the
ground truth of what they wrote. No test lives here."""

from __future__ import annotations

import bz2
import gzip
import os
import random
import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

# Main-log lines: default check_pmta_log classes (warning: a source address missing on this
# host, EADDRNOTAVAIL; critical: "are now disabled"), plus a plain line.
NORMAL = "{ts} delivered to mx.example.com for example.com/vmta-a {n}\n"
WARN = "{ts} bind 198.51.100.21: Cannot assign requested address {n}\n"
CRIT = "{ts} All SMTP sources for queue example.net/vmta-c are now disabled. {n}\n"

ACCT_FIELDS = [
    "type", "timeLogged", "timeQueued", "orig", "rcpt", "orcpt", "dsnAction", "dsnStatus",
    "dsnDiag", "dsnMta", "bounceCat", "srcType", "srcMta", "dlvType", "dlvSourceIp",
    "dlvDestinationIp", "dlvEsmtpAvailable", "dlvSize", "vmta", "jobId", "envId", "queue",
    "vmtaPool", "dlvTlsProtocol", "dlvTlsCipher",
]
ACCT_HEADER = ",".join(ACCT_FIELDS) + "\r\n"


def acct_row(kind: str, n: int, when: float) -> str:
    """One CSV accounting record: `d` delivered, `h` hard bounce, `s` soft bounce."""
    stamp = datetime.fromtimestamp(when).astimezone().strftime("%Y-%m-%d %H:%M:%S%z")
    dom = f"d{n % 7}.example.com"
    if kind == "d":
        t, action, status, diag, cat = ("d", "relayed", "2.0.0 (success)", "smtp;250 2.0.0 Ok",
                                        "success")
    elif kind == "h":
        t, action, status, diag, cat = ("b", "failed", "5.1.1 (bad destination mailbox address)",
                                        "smtp;550 5.1.1 user unknown", "bad-mailbox")
    else:
        t, action, status, diag, cat = ("b", "failed", "4.4.1 (no answer from host)",
                                        "smtp;421 4.4.1 try later", "no-answer-from-host")
    values = [t, stamp, stamp, "bounces@news.example.net", f"u{n}@{dom}", "", action, status,
              diag, f"mx.{dom} (192.0.2.25)", cat, "smtp", "app (10.1.2.3)", "smtp",
              f"198.51.100.{n % 3 + 20}", "192.0.2.25", '"PIPELINING,SIZE,STARTTLS"',
              "1834" if t == "d" else "", f"vmta-{n % 2}", "j1", "", f"{dom}/vmta-{n % 2}",
              "pool1", "TLSv1.3" if t == "d" else "", ""]
    return ",".join(values) + "\r\n"


class RotatingFile:
    """A file a daemon appends to (O_APPEND, kept open) and a rotator rotates, serialised
    with the writes, as PowerMTA does with its own log and accounting files.

    Rotations: `rename` (live -> name.1, older ones shifted, new live file), `copytruncate`
    (copied to name.1, the live file truncated in place), `compress` (rename, then name.1
    gzipped at once), `delaycompress` (rename, and name.2 bzip2-compressed); PowerMTA's own
    naming: `dated` (renamed to acct-YYYY-MM-DD-NNNN.csv), `dated-gz` (that, then gzipped).
    One directory uses one naming scheme (numbered or dated), as a real installation does.
    """

    def __init__(self, path: Path, header: str = "") -> None:
        self.path = path
        self.header = header
        self.lock = threading.Lock()
        self.rotations: dict[str, int] = {}
        self.serial = 0
        self._fd = self._open_new()

    def _open_new(self, first: str = "") -> int:
        """Open (create) the live file; a new one gets the header and `first` in one write."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if os.fstat(fd).st_size == 0 and (self.header or first):
            os.write(fd, (self.header + first).encode())
        return fd

    def append(self, text: str) -> None:
        with self.lock:
            os.write(self._fd, text.encode())

    def close(self) -> None:
        with self.lock:
            os.close(self._fd)

    def _numbered(self, n: int) -> list[Path]:
        base = self.path.name
        return [self.path.with_name(f"{base}.{n}{ext}") for ext in ("", ".gz", ".bz2")]

    def _shift(self) -> None:
        top = 1
        while any(p.exists() for p in self._numbered(top)):
            top += 1
        for n in range(top - 1, 0, -1):
            for src, dst in zip(self._numbered(n), self._numbered(n + 1), strict=True):
                if src.exists():
                    os.rename(src, dst)

    def rotate(self, kind: str, first: str = "") -> None:
        """Rotate; the new live file starts with the header and `first` in one write.

        So a reader never sees the new file empty or holding only its header, except for an
        instant: such a file has no fingerprint that tells it from its own copy (the reader's
        documented limit), and two rotations before the next run would then lose lines. Real
        files are rotated at most daily; this writer rotates every ~0.1 s.
        """
        with self.lock:
            self.rotations[kind] = self.rotations.get(kind, 0) + 1
            compress = self._rotate(kind, first)
            if compress is not None:
                compress()

    def _rotate(self, kind: str, first: str) -> Callable[[], None] | None:
        if kind in ("dated", "dated-gz"):
            self.serial += 1
            stem, ext = os.path.splitext(self.path.name)
            day = time.strftime("%Y-%m-%d")
            dest = self.path.with_name(f"{stem}-{day}-{self.serial:04d}{ext}")
            os.close(self._fd)
            os.rename(self.path, dest)
            self._fd = self._open_new(first)
            return (lambda: _compress(dest, gzip.open, ".gz")) if kind == "dated-gz" else None
        self._shift()
        one = self.path.with_name(self.path.name + ".1")
        if kind == "copytruncate":
            shutil.copyfile(self.path, one)
            os.truncate(self.path, 0)
            os.write(self._fd, (self.header + first).encode())
            return None
        os.close(self._fd)
        os.rename(self.path, one)
        self._fd = self._open_new(first)
        if kind == "compress":
            return lambda: _compress(one, gzip.open, ".gz")
        if kind == "delaycompress":
            two = self.path.with_name(self.path.name + ".2")
            return (lambda: _compress(two, bz2.open, ".bz2")) if two.exists() else None
        if kind != "rename":
            raise ValueError(kind)
        return None


def _compress(path: Path, opener: object, ext: str) -> None:
    """path -> path+ext, written to a temp name first (as logrotate/gzip do), then unlinked."""
    tmp = path.with_name(path.name + ext + ".tmp")
    with path.open("rb") as src, opener(tmp, "wb") as dst:  # type: ignore[operator]
        shutil.copyfileobj(src, dst)
    os.rename(tmp, path.with_name(path.name + ext))
    os.unlink(path)


class LogTruth:
    """Writes log lines in random batches; counts what it wrote per class."""

    def __init__(self, file: RotatingFile, seed: int) -> None:
        self.file = file
        self.rng = random.Random(seed)
        self.n = 0
        self.counts = {"lines": 0, "warning": 0, "critical": 0}

    def write_batch(self, size: int | None = None, rotate: str | None = None) -> None:
        """Append a batch; with `rotate`, rotate first and write the batch as the new file's
        first lines in the same step."""
        size = size or self.rng.randint(1, 40)
        out = []
        ts = time.strftime("%Y-%m-%d %H:%M:%S")
        for _ in range(size):
            self.n += 1
            r = self.rng.random()
            if r < 0.1:
                out.append(CRIT.format(ts=ts, n=self.n))
                self.counts["critical"] += 1
            elif r < 0.3:
                out.append(WARN.format(ts=ts, n=self.n))
                self.counts["warning"] += 1
            else:
                out.append(NORMAL.format(ts=ts, n=self.n))
        self.counts["lines"] += size
        if rotate:
            self.file.rotate(rotate, "".join(out))
        else:
            self.file.append("".join(out))


class AcctTruth:
    """Writes accounting records in random batches; counts delivered/hard/soft."""

    def __init__(self, file: RotatingFile, seed: int) -> None:
        self.file = file
        self.rng = random.Random(seed)
        self.n = 0
        self.counts = {"d": 0, "h": 0, "s": 0}

    def write_batch(self, size: int | None = None, rotate: str | None = None) -> None:
        size = size or self.rng.randint(1, 40)
        when = time.time() - 120
        out = []
        for _ in range(size):
            self.n += 1
            kind = self.rng.choices("dhs", weights=(85, 10, 5))[0]
            self.counts[kind] += 1
            out.append(acct_row(kind, self.n, when))
        if rotate:
            self.file.rotate(rotate, "".join(out))
        else:
            self.file.append("".join(out))


class Churn(threading.Thread):
    """Writes batches every few ms and rotates at random moments, until stopped."""

    def __init__(self, truth: LogTruth | AcctTruth, kinds: list[str], seed: int,
                 rotate_every: float = 0.12) -> None:
        super().__init__(name="churn", daemon=True)
        self.truth = truth
        self.kinds = kinds
        self.rng = random.Random(seed)
        self.rotate_every = rotate_every
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            next_rotation = time.monotonic() + self.rng.uniform(0, 2 * self.rotate_every)
            while not self.stop_event.is_set():
                self.truth.write_batch()
                if time.monotonic() >= next_rotation:
                    self.truth.write_batch(rotate=self.rng.choice(self.kinds))
                    next_rotation = time.monotonic() + self.rng.uniform(
                        0, 2 * self.rotate_every)
                time.sleep(self.rng.uniform(0.001, 0.01))
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        """Stop writing; raises what ended the writer early. A writer still running after a
        generous bound (a stalled machine) is an error: closing the file under it would make
        its next writes fail (or land in another file given the descriptor) while the truth
        counts them."""
        self.stop_event.set()
        self.join(120)
        if self.is_alive():
            raise RuntimeError("the writer did not stop within 120 s")
        if self.error is not None:
            raise self.error
