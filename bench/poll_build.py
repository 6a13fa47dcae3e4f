"""Poll + build at scale: fetch and parse the simulator's answers, build the OID tree.

For 10k and 100k domains (scenario `scale`, 20 VirtualMTAs), in JSON and XML, each measured in
a fresh child process so its peak RSS (VmHWM) is its own: our client's `snapshot()` (fetch +
parse), then `SnmpView.update()` (the OID tree the agent answers from). In the same child the
raw answers are fetched again and parsed by our parser and by the reference: `json.loads`
(JSON) or `xml.etree.ElementTree.fromstring` (XML) of the same bodies. The memory reference
is a child that only fetches the same JSON bodies and keeps their `json.loads` trees.

Targets: a 100k-domain poll + build under the default poll interval (60 s); memory bounded,
taken here as under 1 GiB at 100k domains and growing linearly with the domains (per-domain
growth at 100k at most 1.5x that at 10k).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    REPO,
    Report,
    Row,
    SimProcess,
    log,
    mib,
    proc_status,
    ratio,
    scale_args,
    secs,
    workdir,
)

NAME = "poll"
TITLE = "poll + parse + OID tree build at 10k / 100k domains (vs json.loads)"

ENDPOINTS = ("status", "queues", "domains", "vmtas")
POLL_INTERVAL_S = 60.0
MEMORY_LIMIT_KIB = 1 << 20  # 1 GiB
LINEAR_LIMIT = 1.5
VMTAS = 20


def run(report: Report, *, quick: bool = False) -> None:
    """Both sizes, both formats."""
    sizes = (1_000, 10_000) if quick else (10_000, 100_000)
    per_domain: dict[int, float] = {}
    with workdir("pmta-bp-") as wd:
        for n in sizes:
            log(f"poll: simulator with {n} domains")
            with SimProcess(wd, *scale_args(n, VMTAS)) as sim:
                _warm(sim.url)
                ref = _child(wd, "ref", sim.url, "json", n)
                for fmt in ("json", "xml"):
                    res = _child(wd, "poll", sim.url, fmt, n)
                    _rows(report, n, fmt, res, ref, largest=n == sizes[-1])
                    if fmt == "json":
                        per_domain[n] = (res["hwm_kib"] - res["base_kib"]) / n
    small, large = sizes
    r = ratio(per_domain[large], per_domain[small])
    report.add(Row(
        f"RSS growth per domain, {large // 1000}k vs {small // 1000}k (json)",
        f"{per_domain[large]:.2f} KiB", f"{per_domain[small]:.2f} KiB", r,
        f"<= {LINEAR_LIMIT}x (linear)", r is not None and r <= LINEAR_LIMIT,
    ))


def _warm(url: str) -> None:
    """Ask every page once so the simulator's render cache is warm before the timed fetches."""
    import httpx

    with httpx.Client(timeout=300) as client:
        for fmt in ("json", "xml"):
            for ep in ENDPOINTS:
                client.get(f"{url}/{ep}", params={"format": fmt}).raise_for_status()


def _child(wd: Path, mode: str, url: str, fmt: str, domains: int) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its JSON result."""
    res = subprocess.run(
        [PYTHON, "-m", "bench.poll_build", "--child", mode, url, fmt, str(domains)],
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO,
    )
    if res.returncode != 0:
        raise RuntimeError(f"poll child {mode} {fmt} failed: {res.stderr.strip()[-2000:]}")
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def _rows(
    report: Report, n: int, fmt: str, res: dict[str, Any], ref: dict[str, Any], *, largest: bool
) -> None:
    size = f"{n // 1000}k"
    total = res["poll_s"] + res["build_s"]
    report.add(Row(
        f"poll+build {size} domains {fmt} (fetch+parse {secs(res['poll_s'])}, "
        f"build {secs(res['build_s'])}, {res['varbinds']} values)",
        secs(total), "", None, f"< {POLL_INTERVAL_S:.0f} s", total < POLL_INTERVAL_S,
    ))
    ref_name = "json.loads" if fmt == "json" else "ET.fromstring"
    report.add(Row(
        f"parse {size} domains {fmt} ({res['body_bytes'] / 1e6:.1f} MB; fetch "
        f"{secs(res['fetch_s'])})",
        secs(res["parse_s"]), f"{secs(res['ref_s'])} ({ref_name})",
        ratio(res["parse_s"], res["ref_s"]), "report", None,
    ))
    if fmt == "json":
        report.add(Row(
            f"packed OID tree, {size} domains ({res['varbinds']} values, what the agent maps)",
            f"{res['tree_bytes'] / res['varbinds']:.0f} B/value",
            f"{res['tree_bytes'] / 2**20:.1f} MiB", None, "report", None,
        ))
    mem_ok: bool | None = None
    target = "report"
    if largest:
        mem_ok = res["hwm_kib"] < MEMORY_LIMIT_KIB
        target = f"< {mib(MEMORY_LIMIT_KIB)}"
    report.add(Row(
        f"peak RSS poll+build {size} domains {fmt}",
        mib(res["hwm_kib"]), f"{mib(ref['hwm_kib'])} (json.loads bodies)",
        ratio(res["hwm_kib"], ref["hwm_kib"]), target, mem_ok,
    ))


# ---------------------------------------------------------------------------------------------
# Child process
# ---------------------------------------------------------------------------------------------


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _fetch(url: str, fmt: str) -> tuple[float, dict[str, bytes]]:
    import httpx

    bodies: dict[str, bytes] = {}
    t0 = time.perf_counter()
    with httpx.Client(timeout=300) as client:
        for ep in ENDPOINTS:
            resp = client.get(f"{url}/{ep}", params={"format": fmt})
            resp.raise_for_status()
            bodies[ep] = resp.content
    return time.perf_counter() - t0, bodies


def child(mode: str, url: str, fmt: str, domains: int) -> dict[str, Any]:
    """One measurement; runs in its own process (VmHWM is this process's peak)."""
    import httpx  # noqa: F401 - imported before the base RSS is read

    from pmta_snmp.api import ClientConfig, PmtaClient, parse
    from pmta_snmp.poller import PollResult
    from pmta_snmp.service import SnmpView

    base = proc_status(os.getpid())["VmRSS"]
    if mode == "ref":
        _, bodies = _fetch(url, fmt)
        docs = [json.loads(b) for b in bodies.values()]
        hwm = proc_status(os.getpid())["VmHWM"]
        del docs
        return {"hwm_kib": hwm, "base_kib": base}

    # What the agent does each poll: fetch + parse with our client, then rebuild the tree.
    t0 = time.perf_counter()
    with PmtaClient(ClientConfig(url=url, api_format=fmt, timeout=300)) as client:  # type: ignore[arg-type]
        snap = client.snapshot()
    poll_s = time.perf_counter() - t0
    if len(snap.domains) != domains:
        raise RuntimeError(f"polled {len(snap.domains)} domains, expected {domains}")
    view = SnmpView()
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    view.update(PollResult(snap, True, now, now, 1, 0, 0, None))
    build_s = time.perf_counter() - t0
    varbinds = len(view.tree)
    tree_bytes = view.tree.nbytes
    hwm = proc_status(os.getpid())["VmHWM"]
    del view, snap

    # Parse alone against the C parser of the same bodies.
    fetch_s, bodies = _fetch(url, fmt)
    repeat = 3 if domains <= 10_000 else 1
    parsers = {
        "status": parse.parse_status,
        "queues": parse.parse_queues,
        "domains": parse.parse_domains,
        "vmtas": parse.parse_vmtas,
    }

    def ours() -> None:
        for ep, body in bodies.items():
            parsers[ep](parse.unwrap(body))

    if fmt == "json":

        def reference() -> None:
            for body in bodies.values():
                json.loads(body)
    else:
        import xml.etree.ElementTree as ET

        def reference() -> None:
            for body in bodies.values():
                ET.fromstring(body)

    return {
        "poll_s": poll_s,
        "build_s": build_s,
        "varbinds": varbinds,
        "tree_bytes": tree_bytes,
        "hwm_kib": hwm,
        "base_kib": base,
        "fetch_s": fetch_s,
        "parse_s": _best(ours, repeat),
        "ref_s": _best(reference, repeat),
        "body_bytes": sum(len(b) for b in bodies.values()),
    }


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))))
        sys.exit(0)
    from bench.__main__ import main

    sys.exit(main(["poll", *sys.argv[1:]]))
