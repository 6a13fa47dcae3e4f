"""A fleet through `/probe`: 200 simulated PowerMTA hosts probed by a real Prometheus.

One simulator process serves the hosts (`pmta-sim --instances 200`, a port each), one exporter
process serves `/probe` only (no `[pmta] url`), and Debian's Prometheus scrapes every host
through it every 15 s with the README's relabeling, for two minutes after every host was
scraped once. Measured over that window: the probe duration (`pmta_probe_duration_seconds`
as the exporter saw it, and Prometheus' `scrape_duration_seconds`) p50/p99, the exporter's CPU
per probe (/proc, user + system, over the probes it counted), its resident memory, and failed
probes (`pmta_up 0` or a failed scrape). Two host sizes: the `healthy` scenario (16 domains,
26 queues) and `scale` with 200 domains and 650 queues.

Target: no failed probe, and the p99 far inside the 10 s scrape timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bench.common import (
    PYTHON,
    REPO,
    Report,
    Row,
    free_port,
    log,
    mib,
    ms,
    percentile,
    proc_status,
    stop,
    wait_tcp,
    workdir,
)

NAME = "fleet"
TITLE = "200 PowerMTA hosts probed through /probe by a real Prometheus every 15 s"

SCRAPE_TIMEOUT = 10
"""Seconds; shorter when the interval is (the quick run's 5 s)."""
MAX_CONCURRENT = 8
HOST_SIZES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("healthy: 16 domains, 26 queues", ("--scenario", "healthy", "--max-items", "0")),
    ("scale: 200 domains, 650 queues",
     ("--scenario", "scale", "--domains", "200", "--vmtas", "10", "--max-items", "0")),
)
"""Every row on the pages (`--max-items 0`, a PowerMTA with http-default-max-items raised),
so a keyless probe carries the whole host."""


@dataclass
class FleetResult:
    """What one fleet run measured over its window."""

    hosts: int
    window: float
    probes: int
    failed: int
    scrape_failed: int
    samples: float
    """Samples a probe answered (median of Prometheus' scrape_samples_scraped)."""
    probe_p50: float
    probe_p99: float
    scrape_p50: float
    scrape_p99: float
    cpu_per_probe: float
    cpu_share: float
    rss_kib: int
    hwm_kib: int
    context: str
    """The other processes' CPU and the machine's load over the window."""


def run(report: Report, *, quick: bool = False) -> None:
    """Both host sizes (quick: 20 hosts, the small size, a 5 s interval for 30 s)."""
    if shutil.which("prometheus") is None:
        report.note("fleet: skipped, prometheus is not installed (Debian package prometheus)")
        return
    sizes = HOST_SIZES[:1] if quick else HOST_SIZES
    for label, sim_args in sizes:
        hosts, interval, seconds = (20, 5, 30.0) if quick else (200, 15, 120.0)
        res = measure(hosts=hosts, interval=interval, seconds=seconds, sim_args=sim_args)
        add_rows(report, res, label, interval)


def add_rows(report: Report, res: FleetResult, label: str, interval: int) -> None:
    """The benchmark's rows for one run."""
    failed = res.failed + res.scrape_failed
    report.add(Row(
        f"{res.hosts} hosts ({label}) probed every {interval} s for {res.window:.0f} s: "
        "probes, failed (samples a probe)",
        f"{res.probes} probes, {failed} failed ({res.samples:,.0f} samples)",
        target="0 failed", ok=failed == 0,
    ))
    report.add(Row(
        "probe duration p50 / p99 (pmta_probe_duration_seconds; Prometheus' "
        "scrape_duration_seconds)",
        f"{ms(res.probe_p50)} / {ms(res.probe_p99)} ({ms(res.scrape_p50)} / "
        f"{ms(res.scrape_p99)})",
        target=f"p99 < {min(SCRAPE_TIMEOUT, interval)} s (the scrape timeout)",
        ok=res.scrape_p99 < min(SCRAPE_TIMEOUT, interval),
    ))
    report.add(Row(
        "exporter CPU per probe (user + system); share of one core",
        f"{ms(res.cpu_per_probe)}; {res.cpu_share * 100:.1f} %",
    ))
    report.add(Row("exporter RSS at the end / peak", f"{mib(res.rss_kib)} / {mib(res.hwm_kib)}"))
    report.note(f"{res.hosts} hosts ({label}): meanwhile {res.context}")


def measure(*, hosts: int, interval: int, seconds: float, sim_args: tuple[str, ...],
            max_concurrent: int = MAX_CONCURRENT) -> FleetResult:
    """Start the simulated fleet, the exporter and Prometheus; measure a window of `seconds`
    once every host was scraped; stop all three."""
    from tests.integration.prom_support import Prometheus

    with workdir("pmta-fleet-") as wd, _Processes() as procs:
        log(f"fleet: {hosts} simulated hosts ({' '.join(sim_args)})")
        sim = procs.start(wd / "sim.log", "-m", "pmta_snmp.sim", "--instances", str(hosts),
                          "--speed", "0", *sim_args, stdout=subprocess.PIPE)
        assert sim.stdout is not None
        urls = [sim.stdout.readline().decode().split()[-1:] for _ in range(hosts)]
        if not all(u and u[0].startswith("http://") for u in urls):
            raise RuntimeError(f"pmta-sim --instances did not start (see {wd / 'sim.log'})")
        targets = [u[0] for u in urls]

        port = free_port()
        config = wd / "exporter.toml"
        config.write_text(f"[probe]\nmax_concurrent = {max_concurrent}\n"
                          "[probe.modules.default]\ntimeout = 10\n", encoding="utf-8")
        exporter = procs.start(wd / "exporter.log", "-m", "pmta_snmp", "exporter",
                               "--config", str(config), "--listen", f"127.0.0.1:{port}")
        wait_tcp(port, 60, exporter)
        scrape = {
            "metrics_path": "/probe",
            "params": {"module": ["default"]},
            "scrape_timeout": f"{min(SCRAPE_TIMEOUT, interval)}s",
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": f"127.0.0.1:{port}"},
            ],
        }
        with Prometheus(wd / "prom", targets, interval=f"{interval}s", job="fleet",
                        extra_scrape=scrape) as prom:
            _wait_all_scraped(prom, hosts, timeout=3 * interval + 60)
            log(f"fleet: every host scraped once; measuring {seconds:.0f} s")
            others = {"simulator": sim.pid, "prometheus": prom.proc.pid if prom.proc else 0}
            before = {name: _cpu(pid) for name, pid in others.items()}
            cpu0, probes0, t0 = _cpu(exporter.pid), _probes(port), time.time()
            time.sleep(seconds)
            cpu1, probes1, t1 = _cpu(exporter.pid), _probes(port), time.time()
            shares = {name: (_cpu(pid) - before[name]) / (t1 - t0) for name, pid in others.items()}
            load = os.getloadavg()[1]
            status = proc_status(exporter.pid)
            window = f"{round(t1 - t0)}s"
            durations = _values(prom, f"pmta_probe_duration_seconds[{window}]", t1)
            scrapes = _values(prom, f'scrape_duration_seconds{{job="fleet"}}[{window}]', t1)
            ups = _values(prom, f"pmta_up[{window}]", t1)
            scraped = _values(prom, f'up{{job="fleet"}}[{window}]', t1)
            samples = _values(prom, f'scrape_samples_scraped{{job="fleet"}}[{window}]', t1)
    probes = probes1 - probes0
    return FleetResult(
        hosts=hosts,
        window=t1 - t0,
        probes=probes,
        failed=sum(1 for v in ups if v == 0),
        scrape_failed=sum(1 for v in scraped if v == 0),
        samples=percentile(samples, 50),
        probe_p50=percentile(durations, 50),
        probe_p99=percentile(durations, 99),
        scrape_p50=percentile(scrapes, 50),
        scrape_p99=percentile(scrapes, 99),
        cpu_per_probe=(cpu1 - cpu0) / probes if probes else float("nan"),
        cpu_share=(cpu1 - cpu0) / (t1 - t0),
        rss_kib=status.get("VmRSS", 0),
        hwm_kib=status.get("VmHWM", 0),
        context=", ".join(f"{name} {share * 100:.0f} % of a core" for name, share in shares.items())
        + f"; load average {load:.1f} on {os.cpu_count()} CPUs",
    )


class _Processes:
    """The child processes of one run (Python with our package), each stopped by its pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []

    def start(self, log_path: Path, *args: str, stdout: int = subprocess.DEVNULL
              ) -> subprocess.Popen[bytes]:
        log_file = log_path.open("wb")
        self.logs.append(log_file)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PMTA_SNMP_")}
        proc = subprocess.Popen([PYTHON, *args], stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=log_file, cwd=REPO, env=env)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> _Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()
        for log_file in self.logs:
            log_file.close()


def _wait_all_scraped(prom: Any, hosts: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        targets = prom.api("targets")["activeTargets"]
        if len(targets) == hosts and not any(t["lastScrape"].startswith("0001")
                                             for t in targets):
            return
        time.sleep(1)
    raise TimeoutError(f"not every one of {hosts} hosts was scraped within {timeout:.0f} s")


def _values(prom: Any, expr: str, at: float) -> list[float]:
    """Every sample of a range vector, over all its series."""
    data = prom.api("query", query=expr, time=f"{at:.3f}")
    return [float(v) for series in data["result"] for _t, v in series["values"]]


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _probes(port: int) -> int:
    """Probes the exporter counted (its own /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        text = resp.read().decode("utf-8")
    return int(sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "pmta_exporter_probes_total"))
