"""`/probe?target=&module=` of the exporter against simulators: a live and a dead target, the
requests it refuses (400/403/404), where an API key goes (a recording proxy in front of the
simulator sees every header), the bound on concurrent probes (counted at the targets), the
command without a local PowerMTA, and a real Prometheus scraping /probe with the relabeling
the README shows.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pmta_snmp.config import (
    Config,
    PmtaSection,
    PollSection,
    ProbeModule,
    ProbeSection,
    load_config,
)
from pmta_snmp.exporter import Exporter
from pmta_snmp.metrics import by_name
from pmta_snmp.netsnmp import free_tcp_port
from pmta_snmp.sim import Simulator
from tests.integration.kit_support import REPO, stop_group, wait_until
from tests.integration.prom_support import Prometheus

API_KEY = "k" * 40
LOCAL_KEY = "L" * 40
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
POLLER_ONLY = {"pmta_data_age_seconds", "pmta_polls_total", "pmta_poll_errors_total",
               "pmta_poll_consecutive_errors", "pmta_last_success_timestamp_seconds"}
"""What only the exporter's own poller publishes: a probe polls once, fresh each time."""


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(url: str) -> tuple[int, str]:
    """(status, body) of a GET, 4xx/5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def probe(exporter: Exporter, target: str | None, module: str | None = None) -> tuple[int, str]:
    params = {k: v for k, v in (("target", target), ("module", module)) if v is not None}
    return get(f"{exporter.base_url}/probe?{urllib.parse.urlencode(params)}")


def probe_ok(exporter: Exporter, target: str, module: str | None = None) -> Samples:
    status, body = probe(exporter, target, module)
    assert status == 200, body
    return parse(body)


class InFlight:
    """How many targets have a request open now, and the most there ever were at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[int, int] = {}
        self.most = 0

    def enter(self, port: int) -> None:
        with self.lock:
            self.open[port] = self.open.get(port, 0) + 1
            self.most = max(self.most, self._targets())

    def leave(self, port: int) -> None:
        with self.lock:
            self.open[port] -= 1

    def targets(self) -> int:
        with self.lock:
            return self._targets()

    def _targets(self) -> int:
        return sum(1 for n in self.open.values() if n)


class Recorder:
    """An HTTP proxy in front of a simulator on a port of its own, recording what reaches it:
    every request's path and headers, and (in `in_flight`) the targets with a request open;
    requests wait at `gate`, when given, until it is set."""

    def __init__(self, sim: Simulator, gate: threading.Event | None = None,
                 in_flight: InFlight | None = None) -> None:
        self.sim = sim
        self.gate = gate
        self.in_flight = in_flight or InFlight()
        self.requests: list[tuple[str, dict[str, str]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                recorder.forward(self, "GET")

            def do_POST(self) -> None:
                recorder.forward(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def forward(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        self.requests.append((handler.path, headers))
        self.in_flight.enter(self.port)
        try:
            if self.gate is not None:
                self.gate.wait(60)
            length = int(headers.get("content-length") or 0)
            body = handler.rfile.read(length) if length else None
            conn = http.client.HTTPConnection("127.0.0.1", self.sim.port, timeout=30)
            passed = {k: v for k, v in headers.items()
                      if k in ("x-api-key", "content-type", "accept")}
            conn.request(method, handler.path, body=body, headers=passed)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
        finally:
            self.in_flight.leave(self.port)
        handler.send_response(resp.status)
        handler.send_header("Content-Type", resp.getheader("Content-Type") or "text/plain")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def keys_seen(self) -> set[str | None]:
        return {headers.get("x-api-key") for _path, headers in self.requests}

    def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A PowerMTA whose pages list every row (a real one lists 10 unless
    http-default-max-items is raised), so keyless probes see complete lists too."""
    s = Simulator(speed=0, api_key=API_KEY, domains=40, max_items=None).start()
    try:
        yield s
    finally:
        s.stop()


def probe_config(modules: dict[str, ProbeModule], *,
                 max_concurrent: int = 8) -> Config:
    return Config(probe=ProbeSection(max_concurrent=max_concurrent, modules=modules))


def key_file(tmp_path: Path, key: str = API_KEY) -> str:
    path = tmp_path / "fleet-api-key"
    path.write_text(key + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_tcp_port()}"


def test_probe_of_a_live_target_has_its_metrics_and_pmta_up_1(
    sim: Simulator, tmp_path: Path
) -> None:
    truth = sim.snapshot()
    cfg = probe_config({"default": ProbeModule(timeout=10)})
    with Exporter(cfg, listen="127.0.0.1:0") as exporter:
        samples = probe_ok(exporter, sim.url)
    assert samples[("pmta_up", ())] == 1
    assert samples[("pmta_probe_duration_seconds", ())] > 0
    assert samples[("pmta_queued_recipients", (("type", "smtp"),))] == (
        truth.status.queued_recipients
    )
    for d in truth.domains:
        assert samples[("pmta_domain_queued_recipients", (("domain", d.name),))] == d.rcp
    assert samples[("pmta_queues", ())] == len(truth.queues)
    # a probe is not a poller: no poll counters, no data age
    assert not {name for name, _ in samples} & POLLER_ONLY
    assert samples[("pmta_poll_warnings", ())] == 0


def test_probe_of_a_dead_target_is_pmta_up_0_with_http_200(tmp_path: Path) -> None:
    cfg = probe_config({"default": ProbeModule(timeout=5)})
    with Exporter(cfg, listen="127.0.0.1:0") as exporter:
        status, body = probe(exporter, dead_url())
        own = parse(get(exporter.url)[1])
    assert status == 200
    samples = parse(body)
    assert samples[("pmta_up", ())] == 0
    assert ("pmta_probe_duration_seconds", ()) in samples
    assert {name for name, _ in samples} == {"pmta_up", "pmta_probe_duration_seconds"}
    assert own[("pmta_exporter_probes_total", (("module", "default"),))] == 1
    assert own[("pmta_exporter_probe_failures_total", (("module", "default"),))] == 1


def test_probe_and_metrics_publish_the_same_families_of_one_snapshot(
    sim: Simulator, tmp_path: Path
) -> None:
    """One function builds a snapshot's families for both paths: a frozen simulator polled by
    the exporter (/metrics) and probed (/probe) gives the same samples."""
    cfg = Config(
        pmta=PmtaSection(url=sim.url, api_key_file=key_file(tmp_path), timeout=5),
        poll=PollSection(interval=60, jitter=0),
        probe=ProbeSection(modules={"fleet": ProbeModule(
            api_key_file=key_file(tmp_path), targets=(sim.url,), timeout=10)}),
        pmta_url_set=True,
    )
    with Exporter(cfg, listen="127.0.0.1:0") as exporter:
        local = wait_until(lambda: (s := parse(get(exporter.url)[1])).get(("pmta_up", ())) == 1
                           and s, timeout=30)
        assert local, "the local poll never succeeded"
        probed = probe_ok(exporter, sim.url, "fleet")
    from_snapshot = {k: v for k, v in local.items()
                     if k[0] not in POLLER_ONLY | {"pmta_up"}
                     and not k[0].startswith("pmta_exporter_probe")}  # the prober's own
    assert from_snapshot
    probe_only = ("pmta_up", "pmta_probe_duration_seconds")
    assert {k: v for k, v in probed.items() if k[0] not in probe_only} == from_snapshot


@pytest.mark.parametrize(
    ("query", "status", "reason"),
    [
        ("", 400, "missing target"),
        ("target=", 400, "missing target"),
        ("target=http://u:secret@127.0.0.1:1", 400, "credentials"),
        ("target=http://:secret@127.0.0.1:1", 400, "credentials"),
        ("target=http://127.0.0.1:1/status", 400, "without path"),
        ("target=http://127.0.0.1:1/?x=1", 400, "without path"),
        ("target=ftp://127.0.0.1:1", 400, "http:// or https://"),
        ("target=127.0.0.1:8080", 400, "http:// or https://"),
        ("target=http://bad_host:1", 400, "malformed host"),
        ("target=http://127.0.0.1:99999", 400, "malformed port"),
        ("target=http://[::1", 400, "malformed host"),
        ("target=http://[]:1", 400, "malformed host"),
        ("target=http://[::1]x:1", 400, "malformed host"),
        ("target=http://127.0.0.1:1&target=http://127.0.0.1:2", 400, "one target"),
        ("target=http://127.0.0.1:1&module=nope", 400, "unknown module"),
    ],
)
def test_bad_probe_requests_get_400_with_a_reason(
    tmp_path: Path, query: str, status: int, reason: str
) -> None:
    cfg = probe_config({"default": ProbeModule(timeout=5)})
    with Exporter(cfg, listen="127.0.0.1:0") as exporter:
        got, body = get(f"{exporter.base_url}/probe?{query}")
        own = parse(get(exporter.url)[1])
    assert got == status, body
    assert reason in body and body.count("\n") == 1
    assert "secret" not in body
    assert own[("pmta_exporter_probes_total", (("module", "default"),))] == 0


def test_without_a_default_module_the_module_is_required(tmp_path: Path) -> None:
    cfg = probe_config({"other": ProbeModule(timeout=5)})
    with Exporter(cfg, listen="127.0.0.1:0") as exporter:
        status, body = probe(exporter, dead_url())
        assert probe(exporter, dead_url(), "other")[0] == 200
    assert status == 400 and "no module given" in body


def test_probe_is_404_without_modules_not_the_local_metrics(sim: Simulator,
                                                            tmp_path: Path) -> None:
    cfg = Config(pmta=PmtaSection(url=sim.url, timeout=5), poll=PollSection(interval=60))
    with Exporter(cfg, listen="127.0.0.1:0") as exporter:
        status, body = probe(exporter, sim.url)
    assert status == 404 and "probing is off" in body and "pmta_" not in body


def test_the_api_key_goes_only_to_the_targets_its_module_allows(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key module sends its key to an allowed target (and `show license` works there); a
    target outside its `targets` is refused with 403 before anything is sent; a module
    without a key sends none, not even the local PowerMTA's PMTA_API_KEY."""
    monkeypatch.setenv("PMTA_API_KEY", LOCAL_KEY)
    allowed, other = Recorder(sim), Recorder(sim)
    try:
        cfg = probe_config({
            "fleet": ProbeModule(api_key_file=key_file(tmp_path), timeout=10,
                                 targets=(f"http://127.0.0.?:{allowed.port}",)),
            "default": ProbeModule(timeout=10),
        })
        with Exporter(cfg, listen="127.0.0.1:0") as exporter:
            samples = probe_ok(exporter, allowed.url, "fleet")
            status, body = probe(exporter, other.url, "fleet")
            refused_requests = len(other.requests)
            anonymous = probe_ok(exporter, other.url)
    finally:
        allowed.stop()
        other.stop()
    assert samples[("pmta_up", ())] == 1
    assert ("pmta_license_days_left", ()) in samples  # show license needed the key
    # the key also reads the lists through the list commands, a keyless probe the pages
    assert ("pmta_list_rows", (("list", "domain"), ("source", "command"))) in samples
    assert any(path.startswith("/command") for path, _ in allowed.requests)
    assert allowed.keys_seen() == {API_KEY}
    assert status == 403 and "may not probe" in body and body.count("\n") == 1
    assert refused_requests == 0
    assert anonymous[("pmta_up", ())] == 1
    assert other.requests and other.keys_seen() == {None}
    assert ("pmta_license_days_left", ()) not in anonymous
    assert ("pmta_list_rows", (("list", "domain"), ("source", "page"))) in anonymous


def test_probes_beyond_max_concurrent_wait_for_a_slot(sim: Simulator, tmp_path: Path) -> None:
    """Six probes at once with room for two: two reach their targets, four wait (the
    exporter's own gauges say so), and when the targets answer all six succeed, never more
    than two targets having been polled at once."""
    gate, in_flight = threading.Event(), InFlight()
    recorders = [Recorder(sim, gate, in_flight) for _ in range(6)]
    results: list[Samples] = []
    try:
        cfg = probe_config({"default": ProbeModule(timeout=60, api_format="json")},
                           max_concurrent=2)
        with Exporter(cfg, listen="127.0.0.1:0") as exporter:
            threads = [threading.Thread(target=lambda r=r: results.append(
                probe_ok(exporter, r.url))) for r in recorders]
            for t in threads:
                t.start()

            def saturated() -> Samples | None:
                own = parse(get(exporter.url)[1])
                full = (own[("pmta_exporter_probes_waiting", ())] == 4
                        and in_flight.targets() == 2)
                return own if full else None

            own = wait_until(saturated, timeout=60)
            in_flight_at_targets = in_flight.targets()
            gate.set()
            for t in threads:
                t.join(60)
    finally:
        for r in recorders:
            r.stop()
    assert own is not None, "never two probes polling and four waiting"
    assert own[("pmta_exporter_probes_in_flight", ())] == 2
    assert own[("pmta_exporter_probe_max_concurrent", ())] == 2
    assert in_flight_at_targets == 2
    assert len(results) == 6 and all(r[("pmta_up", ())] == 1 for r in results)
    assert in_flight.most == 2


def test_a_probe_waiting_longer_than_its_timeout_is_pmta_up_0(sim: Simulator,
                                                               tmp_path: Path) -> None:
    """Excess probes wait within their own timeout: with the only slot held by a probe whose
    target does not answer, a second probe ends with pmta_up 0 and never reaches its target."""
    gate = threading.Event()
    stuck, waiting = Recorder(sim, gate), Recorder(sim)
    try:
        cfg = probe_config({"slow": ProbeModule(timeout=60),
                                      "short": ProbeModule(timeout=1)}, max_concurrent=1)
        with Exporter(cfg, listen="127.0.0.1:0") as exporter:
            holder = threading.Thread(target=probe, args=(exporter, stuck.url, "slow"))
            holder.start()
            assert wait_until(lambda: stuck.in_flight.targets() == 1, timeout=30)
            status, body = probe(exporter, waiting.url, "short")
            gate.set()
            holder.join(60)
    finally:
        stuck.stop()
        waiting.stop()
    assert status == 200 and parse(body)[("pmta_up", ())] == 0
    assert waiting.requests == []


def test_probe_only_exporter_command_without_a_pmta_url(sim: Simulator, tmp_path: Path) -> None:
    """`pmta-snmp exporter --config` with probe modules and no [pmta] url polls no local
    PowerMTA: /probe works, /metrics has the prober's counters and no pmta_up."""
    config = tmp_path / "exporter.toml"
    config.write_text('[probe]\nmax_concurrent = 4\n[probe.modules.default]\ntimeout = 5\n',
                      encoding="utf-8")
    port = free_tcp_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PMTA_SNMP_") or k == "PMTA_SNMP_STATE_DIR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmta_snmp", "exporter", "--config", str(config),
         "--listen", f"127.0.0.1:{port}"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        def answering() -> bool:
            try:
                return get(f"{base}/metrics")[0] == 200
            except OSError:
                return False

        assert wait_until(answering, timeout=30)
        status, body = get(f"{base}/probe?target={urllib.parse.quote(sim.url)}")
        own = parse(get(f"{base}/metrics")[1])
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
    finally:
        stop_group(proc)
    assert status == 200 and parse(body)[("pmta_up", ())] == 1
    assert ("pmta_up", ()) not in own
    assert own[("pmta_exporter_probes_total", (("module", "default"),))] == 1
    assert own[("pmta_exporter_probe_max_concurrent", ())] == 4
    assert proc.returncode == 0, err
    assert "/probe" in err and "127.0.0.1:8080" not in err


def readme_block(section: str, lang: str) -> str:
    """The first ```lang block after the README heading `section`."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    after = text[text.index(f"\n{section}\n"):]
    return after.split(f"```{lang}\n", 1)[1].split("```", 1)[0]


def test_the_readme_fleet_configuration_loads(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(readme_block("## Fleets", "toml"), encoding="utf-8")
    cfg = load_config(path, environ={})
    assert set(cfg.probe.modules) == {"default", "licensed"}
    assert not cfg.pmta_url_set
    assert cfg.probe.modules["licensed"].targets == ("https://pmta-*.example.net:8080",)


def test_prometheus_scrapes_a_fleet_through_probe_with_the_readme_relabeling(
    tmp_path: Path,
) -> None:
    """A real Prometheus with the README's scrape job (its targets and the exporter's address
    put in): every target becomes an `instance` of its own with `pmta_up` (1 for the live
    simulators, 0 for the dead one), scraped through the one exporter."""
    job = yaml.safe_load(readme_block("## Fleets", "yaml"))["scrape_configs"][0]
    relabel = job["relabel_configs"]
    assert relabel[-1]["target_label"] == "__address__"
    sims = [Simulator(speed=0, seed=seed, domains=20).start() for seed in (1, 2)]
    dead = dead_url()
    try:
        cfg = probe_config({"default": ProbeModule(timeout=5)})
        with Exporter(cfg, listen="127.0.0.1:0") as exporter:
            targets = [s.url for s in sims] + [dead]
            relabel[-1]["replacement"] = f"127.0.0.1:{exporter.port}"
            extra = {k: job[k] for k in ("metrics_path", "params", "relabel_configs")}
            # a probe gets the scrape timeout less half a second: 4.5 s, ample on a busy machine
            with Prometheus(tmp_path / "prom", targets, interval="5s",
                            extra_scrape=extra) as prom:
                expected = {sims[0].url: 1, sims[1].url: 1, dead: 0}

                def all_seen() -> dict[str, float] | None:
                    seen = {r["metric"]["instance"]: float(r["value"][1])
                            for r in prom.query("pmta_up")}
                    return seen if seen == expected else None

                seen = wait_until(all_seen, timeout=120, step=0.5)
                assert seen is not None, prom.log_text()
                queued = {r["metric"]["instance"]: float(r["value"][1]) for r in
                          prom.query('pmta_queued_recipients{type="smtp"}')}
                scraped = {r["metric"]["instance"]: float(r["value"][1])
                           for r in prom.query('up{job="pmta"}')}
    finally:
        for s in sims:
            s.stop()
    assert set(queued) == {s.url for s in sims}
    assert queued[sims[0].url] == sims[0].snapshot().status.queued_recipients
    assert scraped == dict.fromkeys(targets, 1.0)  # a dead target is a good scrape


def test_every_family_of_probe_and_of_the_prober_is_catalogued(sim: Simulator) -> None:
    """The families /probe and the probe-only /metrics serve are in pmta_snmp.metrics with
    their type, labels and HELP text (pmta_up's HELP says what it means for a probe)."""
    catalogue = by_name()
    cfg = probe_config({"default": ProbeModule(timeout=10)})
    with Exporter(cfg, listen="127.0.0.1:0") as exporter:
        texts = [probe(exporter, sim.url)[1], get(exporter.url)[1]]
    served = [f for text in texts for f in text_string_to_metric_families(text)]
    assert {f.name for f in served} >= {"pmta_probe_duration_seconds", "pmta_exporter_probes"}
    for family in served:
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert name in catalogue, f"{name} is served but not in pmta_snmp.metrics"
        assert catalogue[name].kind == family.type, name
        assert family.name == "pmta_up" or catalogue[name].help == family.documentation, name
        labels = {k for s in family.samples for k in s.labels}
        assert labels <= set(catalogue[name].labels), (name, labels)
