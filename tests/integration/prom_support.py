"""A real Prometheus server for the tests: foreground, temp dir, 127.0.0.1 only.

`Prometheus(tmp, targets).start()` writes a config that scrapes `targets` every second
(`/metrics`, or `/probe?...` with a `metrics_path` and params), waits until the server is
ready, and `.query(expr)` asks its HTTP API. `.stop()` (or the context manager) ends it.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from pmta_snmp.netsnmp import free_tcp_port
from tests.integration.kit_support import require_program


class Prometheus:
    """One Prometheus process scraping `targets` (HOST:PORT) every `interval`."""

    def __init__(self, workdir: Path, targets: list[str], *, interval: str = "1s",
                 job: str = "pmta", extra_scrape: dict[str, Any] | None = None) -> None:
        self.binary = require_program("prometheus", "prometheus")
        self.workdir = workdir
        self.port = free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        scrape: dict[str, Any] = {"job_name": job, "scrape_interval": interval,
                                  "scrape_timeout": interval,
                                  "static_configs": [{"targets": targets}]}
        scrape.update(extra_scrape or {})
        self.config = {"global": {"scrape_interval": interval, "evaluation_interval": interval},
                       "scrape_configs": [scrape]}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Prometheus:
        """Start the server and wait for /-/ready (a hang guard, not a speed claim)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(json.dumps(self.config))  # JSON is YAML
        log = (self.workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={cfg}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout}s: {self.log_text()}")

    def log_text(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the decoded `data`, or AssertionError with Prometheus' error."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                doc = json.load(resp)
        except urllib.error.HTTPError as exc:
            doc = json.load(exc)
        assert doc.get("status") == "success", f"{path} {params}: {doc}"
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one item) `expr` gives now."""
        data = self.api("query", query=expr)
        result = data["result"]
        return result if data["resultType"] in ("vector", "matrix") else [result]

    def targets_up(self) -> bool:
        data = self.api("targets")
        active = data["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
