"""`./run demo`: the whole product against the simulator, no real PowerMTA needed.

Starts the PowerMTA simulator (with accounting files, feedback-loop complaints and a log), a
private unprivileged snmpd master, our AgentX subagent behind it (polling the API and
following the accounting files), then every few seconds prints what the API, SNMP
(`snmpget`/`snmpwalk` through snmpd: the scalars and the per-provider deliverability table)
and the check_pmta_* plugins see. Ctrl-C (or `--rounds N`) stops everything it started;
nothing is left running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path

from pmta_snmp.agent import run_agentx
from pmta_snmp.api import ClientConfig, PmtaClient, PmtaError
from pmta_snmp.config import (
    AcctSection,
    AgentXSection,
    Config,
    PmtaSection,
    PollSection,
    Thresholds,
)
from pmta_snmp.mib.layout import NOTIFICATIONS, OBJECTS, SNMP_TRAP_OID, layout
from pmta_snmp.netsnmp import LoopThread, SnmpdMaster, TrapReceiver, short_tempdir
from pmta_snmp.sim import Simulator

LAY = layout()

# (label, module, extra args) — {url}, {acct}, {log}, {state}, {key}, {plan} are filled in.
CHECKS: tuple[tuple[str, str, str], ...] = (
    ("queue", "queue", "--url {url} --state-dir {state}"),
    ("license", "license", "--url {url} --api-key-file {key}"),
    ("bounce", "bounce", "--acct-file '{acct}/acct*.csv' --state-dir {state} --min-volume 20"),
    ("deferral", "deferral",
     "--acct-file '{acct}/acct*.csv' --state-dir {state} --min-volume 20"),
    ("log", "log", "--logfile {log} --state-dir {state}"),
    ("tls", "tls", "--logfile {log} --acct-file '{acct}/acct*.csv' --state-dir {state}"),
    ("complaints", "complaints",
     "--acct-file '{acct}/acct*.csv' --state-dir {state} --window 1h --min-volume 100"),
    ("blocklist", "blocklist", "--acct-file '{acct}/acct*.csv' --state-dir {state} --window 1h"),
    ("warmup", "warmup", "--acct-file '{acct}/acct*.csv' --state-dir {state} --plan {plan}"),
)

PROVIDER_COLUMNS = (
    "pmtaProviderDisplayName",
    "pmtaProviderDelivered",
    "pmtaProviderLastHourHardBounceRate",
    "pmtaProviderLastHourDeferralRate",
    "pmtaProviderComplaints",
    "pmtaProviderBlocklistRejections",
)

SNMP_SHOWN = (
    "pmtaProductVersion",
    "pmtaSmtpQueueRcpt",
    "pmtaSmtpQueueDomains",
    "pmtaActiveConnOut",
    "pmtaOutMessageRate",
    "pmtaQueueCount",
    "pmtaLicenseDaysLeft",
    "pmtaAgentApiReachable",
    "pmtaAgentDataAge",
    "pmtaAgentPollSuccesses",
)


def say(text: str = "") -> None:
    """Print and flush (the demo is often piped)."""
    print(text, flush=True)


def show_api(url: str, key_file: str) -> None:
    """What `pmta-snmp poll` sees, with the API key the agent uses (complete lists)."""
    try:
        key = Path(key_file).read_text().strip()
        with PmtaClient(ClientConfig(url=url, timeout=5, api_key=key)) as client:
            snap = client.snapshot()
    except (PmtaError, OSError) as exc:
        say(f"  API: {exc}")
        return
    st = snap.status
    worst = sorted(snap.queues, key=lambda q: q.rcp, reverse=True)[:3]
    said = snap.lists.queues
    listed = f"{len(snap.queues)} queues"
    if said is not None and not said.complete:
        # Never print a top-N page as if it were every queue.
        known = "unknown" if said.known is None else f"{'' if said.exact else 'at least '}" \
            f"{said.known}"
        listed = f"{len(snap.queues)} listed queues (of {known})"
    say(
        f"  API  PowerMTA {st.runtime.version}: {st.queued_recipients} recipients queued in "
        f"{listed}, {st.traffic.messages_per_second:.1f} msg/s out, "
        f"{st.conn.smtp_out.cur} SMTP connections out"
    )
    for q in worst:
        state = "paused" if q.paused else q.mode.value
        say(f"       {q.name:<36} {q.rcp:>7} rcpt  {state}")


def show_snmp(master: SnmpdMaster) -> None:
    """Our objects as snmpget through the real snmpd shows them."""
    oids = [".".join(map(str, LAY.instance(name))) for name in SNMP_SHOWN]
    try:
        values = master.get(*oids, timeout=2)
    except Exception as exc:  # the demo keeps going whatever snmpd says
        say(f"  SNMP: {exc}")
        return
    for name, vb in zip(SNMP_SHOWN, values, strict=False):
        say(f"  SNMP {name:<24} = {vb.type + ': ' if vb.type else ''}{vb.value}")


def show_providers(master: SnmpdMaster, top: int = 5) -> None:
    """The busiest rows of pmtaProviderTable, walked through snmpd (the outcomes engine)."""
    rows: dict[str, list[str]] = {}
    for col, name in enumerate(PROVIDER_COLUMNS):
        column = ".".join(map(str, LAY.oid(name)))
        prefix = column + "."
        try:
            binds = master.walk(column)
        except Exception as exc:  # the demo keeps going whatever snmpd says
            say(f"  SNMP pmtaProviderTable: {exc}")
            return
        for vb in binds:
            oid = vb.oid.lstrip(".")
            if oid.startswith(prefix):
                row = rows.setdefault(oid[len(prefix):], [""] * len(PROVIDER_COLUMNS))
                row[col] = vb.value.strip('"')
    if not rows:
        say("  SNMP pmtaProviderTable: no rows yet (the accounting reader saves every 2 s)")
        return
    say("  SNMP pmtaProviderTable   provider     delivered  hard%/1h  defer%/1h  complaints"
        "  blocklist")
    busiest = sorted(rows.values(), key=lambda r: int(r[1] or 0), reverse=True)[:top]
    for name, delivered, hard, defer, complaints, listed in busiest:
        # the rates are Gauge32 in hundredths of a percent (the MIB's UNITS)
        say(f"{'':27}{name:<12} {delivered:>9}  {int(hard or 0) / 100:>7.2f}  "
            f"{int(defer or 0) / 100:>8.2f}  {complaints:>10}  {listed:>9}")


def _names_by_oid() -> dict[str, str]:
    names = [o.name for o in OBJECTS] + [n.name for n in NOTIFICATIONS]
    return {".".join(map(str, LAY.oid(name))): name for name in names}


def show_notifications(traps: TrapReceiver, shown: int) -> int:
    """The notifications snmptrapd received since the last round, named by the MIB; returns
    how many have been shown in all."""
    seen = traps.traps()
    names = _names_by_oid()

    def name_of(oid: str) -> str | None:
        oid = oid.lstrip(".")
        return next((n for o, n in names.items() if oid == o or oid.startswith(o + ".")), None)

    generic = {"1.3.6.1.6.3.1.1.5.1": "coldStart (snmpd started)",
               "1.3.6.1.6.3.1.1.5.2": "warmStart (snmpd reloaded)"}
    trap_oid = ".".join(map(str, SNMP_TRAP_OID))
    for trap in seen[shown:]:
        sent = next((vb.value.lstrip(".") for vb in trap if vb.oid.lstrip(".") == trap_oid), "")
        kind = name_of(sent) or generic.get(sent, sent or "?")
        values = [f"{n}={vb.value.strip(chr(34))}" for vb in trap
                  if (n := name_of(vb.oid)) is not None]
        say(f"  TRAP {kind}" + (f": {', '.join(values)}" if values else ""))
    return len(seen)


def run_checks(fill: dict[str, str]) -> None:
    """Each plugin as Nagios would run it: first line and exit code."""
    names = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}
    for label, module, args in CHECKS:
        cmd = [
            sys.executable,
            "-m",
            f"pmta_snmp.checks.{module}",
            *shlex.split(args.format(**fill)),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
        except subprocess.TimeoutExpired:
            say(f"  check_pmta_{label}: timed out")
            continue
        first = (proc.stdout.strip().splitlines() or [proc.stderr.strip()[:120]])[0]
        say(
            f"  check_pmta_{label:<9} exit {proc.returncode} "
            f"({names.get(proc.returncode, '?')}): {first[:150]}"
        )


@contextlib.contextmanager
def running(
    args: argparse.Namespace,
) -> Iterator[tuple[Simulator, SnmpdMaster, TrapReceiver, dict[str, str]]]:
    """Start simulator, snmptrapd, snmpd and the subagent; stop all of them on exit."""
    with short_tempdir("pmta-demo-") as work, contextlib.ExitStack() as stack:
        (work / "acct").mkdir()
        (work / "state").mkdir()
        key = "demo_api_key_" + "x" * 24
        key_file = work / "api-key"
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        sim = Simulator(
            scenario=args.scenario,
            seed=args.seed,
            speed=args.speed,
            acct_dir=work / "acct",
            log_path=work / "log",
            api_key=key,
            domains=args.domains,
            vmtas=args.vmtas,
            acct_records=("d", "b", "t", "tq", "f"),
        )
        sim.start()
        stack.callback(sim.stop)
        say(f"simulator: {sim.url} (scenario {args.scenario}, {args.speed:g}x time)")
        traps = TrapReceiver(work / "trapd")
        traps.start()
        stack.callback(traps.stop)
        master = SnmpdMaster(work / "snmpd", trap_port=traps.port, agentx_timeout=3)
        master.start()
        stack.callback(master.stop)
        say(f"snmpd master: {master.agent} (AgentX socket {master.agentx_address})")
        loop = LoopThread()
        stack.callback(loop.close)
        stop = asyncio.Event()
        cfg = Config(
            pmta=PmtaSection(url=sim.url, api_key_file=str(key_file), timeout=5),
            poll=PollSection(interval=args.interval, jitter=0.1, license_interval=60),
            agentx=AgentXSection(socket=master.agentx_address),
            acct=AcctSection(files=str(work / "acct" / "acct*.csv"),
                             state_dir=str(work / "state" / "agent"), interval=1.0,
                             save_interval=2.0),
            thresholds=Thresholds(
                queue_rcpt_raise=args.queue_raise, queue_rcpt_clear=args.queue_raise * 9 // 10
            ),
        )
        fut: Future[None] = asyncio.run_coroutine_threadsafe(run_agentx(cfg, stop=stop), loop.loop)

        def stop_agent() -> None:
            loop.call_soon(stop.set)
            with contextlib.suppress(Exception):
                fut.result(10)

        stack.callback(stop_agent)
        say(
            f"subagent: registered {'.'.join(map(str, LAY.base))} with snmpd; "
            f"notifications go to snmptrapd on udp:127.0.0.1:{traps.port}"
        )
        plan = work / "warmup.toml"
        warming = next(iter(sim.state.vmta_infos.values()))
        plan.write_text(
            "# the demo's first VirtualMTA, warming up since yesterday\n"
            f"[[warmup]]\nsource_ip = \"{warming.source_ip}\"\n"
            f"start = \"{time.strftime('%Y-%m-%d', time.gmtime(time.time() - 86400))}\"\n"
            "caps = [20000, 40000, 80000, 160000]\n")
        fill = {
            "plan": str(plan),
            "url": sim.url,
            "acct": str(work / "acct"),
            "log": str(work / "log"),
            "state": str(work / "state"),
            "key": str(key_file),
        }
        try:
            yield sim, master, traps, fill
        finally:
            seen = traps.traps()
            say(f"\nnotifications received by snmptrapd: {len(seen)}")
            say("stopping subagent, snmpd, snmptrapd and simulator")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo until Ctrl-C or for `--rounds`."""
    parser = argparse.ArgumentParser(prog="./run demo", description=__doc__)
    parser.add_argument(
        "--scenario",
        default="backlog",
        help="simulator scenario (default %(default)s; see pmta-sim --help)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="simulated seconds per real second (default %(default)s)",
    )
    parser.add_argument("--domains", type=int, default=200)
    parser.add_argument("--vmtas", type=int, default=4)
    parser.add_argument("--interval", type=float, default=3.0, help="agent poll interval (s)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between rounds")
    parser.add_argument(
        "--queue-raise", type=int, default=50_000, help="queue notification threshold (recipients)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="stop after N rounds (default: until Ctrl-C; 2 when not a tty)",
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (0 if sys.stdout.isatty() and not os.environ.get("CI") else 2)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with running(args) as (_sim, master, traps, fill):
            time.sleep(min(args.interval + 1, 5))
            n = shown = 0
            while True:
                n += 1
                say(f"\n=== round {n} ({time.strftime('%H:%M:%S')}) ===")
                show_api(fill["url"], fill["key"])
                show_snmp(master)
                show_providers(master)
                shown = show_notifications(traps, shown)
                run_checks(fill)
                if rounds and n >= rounds:
                    break
                time.sleep(args.every)
    except KeyboardInterrupt:
        say("\ninterrupted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
