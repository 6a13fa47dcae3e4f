"""pmta-sim as a program (CLI, signals) and at scale (100k domains)."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pmta_snmp.sim import Simulator, render

API_KEY = "cli_test_key_0123456789_abcdefghijk"


def _first_line(proc: subprocess.Popen[str], timeout: float = 20) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise AssertionError("pmta-sim printed nothing")
        return proc.stdout.readline()
    finally:
        sel.close()


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[str]]]:
    """Start pmta-sim processes; whatever is still running is killed by pid in teardown."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _start(
    procs: list[subprocess.Popen[str]], *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmta_snmp.sim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    procs.append(proc)
    return proc


def test_cli_serves_https_and_exits_cleanly_on_sigterm(
    tmp_path: Path, spawn: list[subprocess.Popen[str]]
) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY + "\n")
    cert = tmp_path / "webmon.pem"
    proc = _start(
        spawn,
        "--port",
        "0",
        "--speed",
        "0",
        "--https",
        "--cert-out",
        str(cert),
        "--api-key-file",
        str(key_file),
        "--log",
        str(tmp_path / "log"),
    )
    line = _first_line(proc)
    m = re.fullmatch(r"pmta-sim listening on (https://127\.0\.0\.1:(\d+))\n", line)
    assert m, line
    with httpx.Client(
        base_url=m.group(1), verify=ssl.create_default_context(cafile=str(cert)), timeout=10
    ) as c:
        assert c.get("/status?format=json").json()["status"] == "success"
        r = c.post(
            "/command",
            data={"command": "show version", "format": "json-text"},
            headers={"X-API-Key": API_KEY},
        )
        assert r.json()["data"].startswith("PowerMTA v5.0r1")
        c.post("/_sim/advance", data={"seconds": "600"})
        assert c.get("/_sim/counts").json()["simulated"]["d"] > 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert (tmp_path / "log").read_text(encoding="utf-8")


def test_cli_api_key_from_environment_and_sigint(spawn: list[subprocess.Popen[str]]) -> None:
    proc = _start(
        spawn, "--speed", "0", "--scenario", "license-never", env={"PMTA_API_KEY": API_KEY}
    )
    url = _first_line(proc).split()[-1]
    with httpx.Client(base_url=url, timeout=10) as c:
        assert c.post("/command", data={"command": "show license"}).status_code == 401
        r = c.post(
            "/command",
            data={"command": "show license", "format": "json"},
            headers={"X-API-Key": API_KEY},
        )
        assert r.json()["data"]["expires"] == "never"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0


def test_cli_bad_options_exit_2_with_one_line(
    tmp_path: Path, spawn: list[subprocess.Popen[str]]
) -> None:
    bad_key = tmp_path / "key"
    bad_key.write_text("too-short")
    proc = _start(spawn, "--api-key-file", str(bad_key))
    assert proc.wait(timeout=20) == 2
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert err.startswith("pmta-sim: error:") and err.count("\n") == 1
    assert "Traceback" not in err


def test_scale_100k_domains_answers_domains_json_once_per_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100k domains in one JSON answer, consistent with /status; the page is rendered once
    per simulated tick and served from the cache after that (how fast: `./run bench poll`)."""
    rendered: list[str] = []
    json_body = render.json_body

    def counting_json_body(*args: Any) -> bytes:
        rendered.append("x")
        return json_body(*args)

    monkeypatch.setattr(render, "json_body", counting_json_body)
    with (
        # http-default-max-items raised: the page lists all 100k domains
        Simulator(scenario="scale", domains=100_000, vmtas=10, speed=0, max_items=None) as sim,
        httpx.Client(base_url=sim.url, timeout=600) as c,  # hang detection only
    ):
        r = c.get("/domains?format=json")
        rows = json.loads(r.content)["data"]["domain"]
        assert len(rows) == 100_000
        status = c.get("/status?format=json").json()["data"]["status"]
        assert status["queue"]["smtp"]["rcp"] == sum(d["rcp"] for d in rows)
        assert status["queue"]["smtp"]["dom"] == sum(1 for d in rows if d["rcp"] > 0)
        rendered.clear()
        assert c.get("/domains?format=json").content == r.content  # cached within a tick
        assert rendered == []
        sim.advance(60)
        vmtas = c.get("/vmtas?format=json").json()["data"]["vmta"]
        assert len(vmtas) == 10
        assert len(rendered) == 1
        assert c.get("/domains?format=json").content != r.content  # a new tick: rendered anew
        assert len(rendered) == 2
