"""Helpers for the check_pmta_* plugin tests: a tiny fake PowerMTA web monitor and a runner.

The fake serves the real envelopes (`{"data":…,"status":"success"}`) on 127.0.0.1 from a dict
the test changes between runs; it is started and stopped by the `fake_pmta` fixture. No test
lives here (the module name only keeps it inside the check-plugin test files).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"


@dataclass
class FakePmta:
    """Pages by path (`/status` → the `data` object); `delay` seconds before answering;
    `status_code` overrides; `requests` records the paths asked."""

    pages: dict[str, Any] = field(default_factory=dict)
    delay: float = 0.0
    status_code: int = 200
    license_text: str | None = None
    requests: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakePmta:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, data: Any) -> None:
                fake.requests.append(urlsplit(self.path).path)
                if fake.delay:
                    time.sleep(fake.delay)
                if fake.status_code != 200:
                    body = b"<html>forbidden</html>"
                    self.send_response(fake.status_code)
                else:
                    body = json.dumps({"data": data, "status": "success", "message": ""}).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                params = parse_qs(urlsplit(self.path).query)
                if params.get("format", ["json"])[0] != "json" or path not in fake.pages:
                    fake.requests.append(path)
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._answer(fake.pages[path])

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                if fake.license_text is None:
                    fake.requests.append("/command")
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                # `show license` in json: data carries no structure we rely on; the text is in
                # message (pmta-formats.md §1.7).
                fake.requests.append("/command")
                body = json.dumps(
                    {"data": {}, "status": "success", "message": fake.license_text}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.thread is not None:
            self.thread.join(5)


@pytest.fixture
def fake_pmta() -> Iterator[FakePmta]:
    """A running FakePmta; stopped at teardown."""
    fake = FakePmta().start()
    try:
        yield fake
    finally:
        fake.stop()


def status_page(smtp_rcp: int, domains: int = 3) -> dict[str, Any]:
    """A `/status` data object with the smtp queue depth."""
    return {
        "status": {
            "timeNow": "2025-01-14 09:30:00",
            "startupTime": "2025-01-14 08:00:00",
            "shuttingDown": False,
            "traffic": {"total": {  # required: the Counter64 totals
                "out": {"rcp": 900, "msg": 800, "kb": 4096.5},
                "in": {"rcp": 1000, "msg": 900, "kb": 5000.0},
                "bounceProcessed": 3, "feedbackLoopProcessed": 1,
            }},
            "queue": {"smtp": {"rcp": smtp_rcp, "dom": domains, "kb": 12.5}},
            "conn": {"smtpOut": {"cur": 4, "max": 100, "top": 9}},
            "status": "running",
        }
    }


def queue_rows(*rows: tuple[str, int] | tuple[str, int, dict[str, Any]]) -> dict[str, Any]:
    """`/queues` rows from (name, rcp[, extra fields])."""
    out = []
    for row in rows:
        name, rcp = row[0], row[1]
        extra = row[2] if len(row) > 2 else {}  # type: ignore[misc]
        out.append({"name": name, "rcp": rcp, "kb": rcp * 0.5, "conn": 1, **extra})
    return {"queue": out}


def named_rows(tag: str, rows: dict[str, int]) -> dict[str, Any]:
    """`/domains` or `/vmtas` rows."""
    return {tag: [{"name": n, "rcp": r, "kb": 1.0, "conn": 1} for n, r in rows.items()]}


def set_pages(
    fake: FakePmta,
    total: int,
    queues: Sequence[tuple[str, int] | tuple[str, int, dict[str, Any]]],
    domains: dict[str, int] | None = None,
    vmtas: dict[str, int] | None = None,
) -> None:
    """All four pages at once; domains/vmtas default to sums over the queues."""
    if domains is None:
        domains = {}
        for q in queues:
            d = q[0].rsplit("/", 1)[0]
            domains[d] = domains.get(d, 0) + q[1]
    if vmtas is None:
        vmtas = {}
        for q in queues:
            v = q[0].rsplit("/", 1)[1]
            vmtas[v] = vmtas.get(v, 0) + q[1]
    fake.pages.update(
        {
            "/status": status_page(total, len(domains)),
            "/queues": queue_rows(*queues),
            "/domains": named_rows("domain", domains),
            "/vmtas": named_rows("vmta", vmtas),
        }
    )


@dataclass
class Outcome:
    """Exit code and output of one plugin run."""

    code: int
    out: str
    err: str

    @property
    def line(self) -> str:
        return self.out.splitlines()[0] if self.out else ""

    @property
    def perf(self) -> dict[str, str]:
        """perfdata label -> the whole `value;warn;crit;min;max` text."""
        if "|" not in self.out:
            return {}
        text = self.out.split("|", 1)[1]
        out = {}
        for item in text.split():
            label, _, rest = item.partition("=")
            out[label] = rest
        return out

    def value(self, label: str) -> str:
        """The value (with unit) of one perfdata item."""
        return self.perf[label].split(";")[0]


def run_main(
    main: Callable[[Sequence[str] | None], int],
    argv: Sequence[str],
    capsys: pytest.CaptureFixture[str],
) -> Outcome:
    """Run a plugin's main() in-process and capture its output."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def run_subprocess(module: str, argv: Sequence[str], timeout: float = 30,
                   env: dict[str, str] | None = None) -> Outcome:
    """Run `python -m pmta_snmp.checks.<module>` as a real process."""
    proc = subprocess.run(
        [python_executable(), "-m", f"pmta_snmp.checks.{module}", *argv],
        capture_output=True, text=True, timeout=timeout, check=False, env=env,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def python_executable() -> str:
    """The venv's python if present, else this interpreter."""
    return str(PYTHON) if PYTHON.exists() else sys.executable


# --- accounting files and logs ----------------------------------------------------------------

LAYOUT_40 = [
    "type", "timeLogged", "timeQueued", "timeImprinted", "orig", "rcpt", "orcpt", "dsnAction",
    "dsnStatus", "dsnDiag", "dsnMta", "bounceCat", "srcType", "srcMta", "dlvType",
    "dlvSourceIp", "dlvDestinationIp", "dlvEsmtpAvailable", "dlvSize", "vmta", "jobId", "envId",
]
LAYOUT_50 = [f for f in LAYOUT_40 if f != "timeImprinted"] + [
    "queue", "vmtaPool", "dlvTlsProtocol", "dlvTlsCipher"]
LAYOUT_55 = [*LAYOUT_50[:3], "timeFirstAttempt", "totalSecondsQueued", *LAYOUT_50[3:]]
LAYOUTS = {"4.0": LAYOUT_40, "5.0": LAYOUT_50, "5.5": LAYOUT_55}


def rec(kind: str, rcpt: str, *, ip: str = "198.51.100.20", vmta: str = "vmta-a",
        orig: str = "bounces@news.example.net", cat: str = "", status: str = "",
        diag: str = "", esmtp: str = "PIPELINING,SIZE,STARTTLS", tls: str = "TLSv1.3",
        minutes_ago: float = 5.0, **extra: str) -> dict[str, Any]:
    """One accounting record as a dict of header name -> value (times filled in later)."""
    defaults = {
        "d": ("relayed", "2.0.0 (success)", "smtp;250 2.0.0 Ok", "success"),
        "b": ("failed", "5.1.1 (bad destination mailbox address)",
              "smtp;550 5.1.1 user unknown", "bad-mailbox"),
        "t": ("delayed", "4.0.0 (undefined status)", "smtp;421 4.7.0 try again later", ""),
        "tq": ("delayed", "4.0.0 (undefined status)", "smtp;421 too many connections", ""),
    }[kind]
    domain = rcpt.rsplit("@", 1)[-1]
    row = {
        "type": kind, "orig": orig, "rcpt": rcpt, "dsnAction": defaults[0],
        "dsnStatus": status or defaults[1], "dsnDiag": diag or defaults[2],
        "dsnMta": f"mx.{domain} (192.0.2.25)",
        "bounceCat": defaults[3] if cat == "" else ("" if cat == "-" else cat),
        "srcType": "smtp", "srcMta": "app2 (10.1.2.3)", "dlvType": "smtp",
        "dlvSourceIp": ip, "dlvDestinationIp": "192.0.2.25", "dlvEsmtpAvailable": esmtp,
        "dlvSize": "18342" if kind == "d" else "", "vmta": vmta, "jobId": "j1",
        "queue": f"{domain}/{vmta}", "vmtaPool": "pool1",
        "dlvTlsProtocol": tls if kind == "d" else "",
        "dlvTlsCipher": "TLS_AES_128_GCM_SHA256" if kind == "d" and tls else "",
        "_minutes_ago": minutes_ago,
    }
    row.update(extra)
    return row


def _csv_field(name: str, value: str) -> str:
    if any(c in value for c in ',"\r\n') or (name == "dlvEsmtpAvailable" and value):
        return '"' + value.replace('"', '""') + '"'
    return value


def acct_lines(records: Sequence[dict[str, Any]], layout: str = "5.0", *,
               header: bool = True, unix_times: bool | None = None,
               now: float | None = None) -> str:
    """CSV text (CRLF) of `records` in a PowerMTA layout; 4.0 uses Unix-second times."""
    from datetime import datetime

    fields = LAYOUTS[layout]
    unix = layout == "4.0" if unix_times is None else unix_times
    base = time.time() if now is None else now
    out = [",".join(fields)] if header else []
    for r in records:
        when = base - float(r.get("_minutes_ago", 5.0)) * 60
        stamp = (str(int(when)) if unix else
                 datetime.fromtimestamp(when).astimezone().strftime("%Y-%m-%d %H:%M:%S%z"))
        values = dict(r, timeLogged=stamp, timeQueued=stamp, timeImprinted=stamp,
                      timeFirstAttempt=stamp, totalSecondsQueued="3")
        out.append(",".join(_csv_field(f, str(values.get(f, ""))) for f in fields))
    return "".join(line + "\r\n" for line in out)


def acct_json_lines(records: Sequence[dict[str, Any]], *, now: float | None = None) -> str:
    """JSON accounting (5.x): one flat object per line, every value a string."""
    from datetime import datetime

    base = time.time() if now is None else now
    out = []
    for r in records:
        when = base - float(r.get("_minutes_ago", 5.0)) * 60
        stamp = datetime.fromtimestamp(when).astimezone().strftime("%Y-%m-%d %H:%M:%S%z")
        obj = {k: str(v) for k, v in r.items() if not k.startswith("_")}
        obj.update(timeLogged=stamp, timeQueued=stamp)
        out.append(json.dumps(obj))
    return "".join(line + "\n" for line in out)


def mix(kind_counts: dict[str, int], *, domain: str = "example.com",
        **kw: Any) -> list[dict[str, Any]]:
    """`{"d": 90, "b": 10}` -> that many records to `domain`."""
    out = []
    for kind, n in kind_counts.items():
        for i in range(n):
            out.append(rec(kind, f"u{kind}{i}@{domain}", **kw))
    return out
