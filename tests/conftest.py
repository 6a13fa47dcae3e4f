"""Shared pytest fixtures. Each owner keeps to a marked section; append, don't overwrite."""

from __future__ import annotations

# --- MIB fixtures -----------------------------------------------------------------------
# The IETF base modules (SNMPv2-SMI, -TC, -CONF, SNMPv2-MIB) are not in Debian main; the npm
# package `net-snmp` ships them in package/lib/mibs/. INET-ADDRESS-MIB (RFC 4001, for the
# source IP table's index) is in neither: Debian main's `erlang-snmp` ships it in its mibs/
# directory, so its .deb is downloaded (`apt-get download`, nothing installed) and the one
# module extracted. All are fetched once into a cache ($PMTA_TEST_CACHE/mibs, else
# <repo>/.cache/mibs, git-ignored) and never committed.
import fcntl
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PMTA_MIB_FILE = REPO_ROOT / "mibs" / "PMTA-SNMP-MIB.txt"
IETF_BASE_MIBS = ("SNMPv2-SMI", "SNMPv2-TC", "SNMPv2-CONF", "SNMPv2-MIB")
DEBIAN_MIBS = {"INET-ADDRESS-MIB": "erlang-snmp"}
"""Modules from a Debian package's MIB directory: module -> package."""
_NET_SNMP_NPM_SPEC = "net-snmp@3"


def _mib_cache_dir() -> Path:
    root = os.environ.get("PMTA_TEST_CACHE")
    return (Path(root) if root else REPO_ROOT / ".cache") / "mibs"


def _fetch_ietf_mibs(dest: Path) -> None:
    """`npm pack net-snmp` into a temporary dir and extract the base modules into `dest`."""
    npm = shutil.which("npm")
    if npm is None:
        missing_requirement(
            "npm is not installed: cannot fetch the IETF base MIBs (npm package net-snmp)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        proc = subprocess.run(
            [npm, "pack", _NET_SNMP_NPM_SPEC, "--pack-destination", tmp, "--silent"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp,
            check=False,
        )
        tarballs = list(Path(tmp).glob("net-snmp-*.tgz"))
        if proc.returncode != 0 or len(tarballs) != 1:
            pytest.fail(f"npm pack {_NET_SNMP_NPM_SPEC} failed ({proc.returncode}): {proc.stderr}")
        staged = Path(tmp) / "mibs"
        staged.mkdir()
        with tarfile.open(tarballs[0], "r:gz") as tar:
            for module in IETF_BASE_MIBS:
                member = tar.extractfile(f"package/lib/mibs/{module}.mib")
                if member is None:
                    pytest.fail(f"{module}.mib missing from the net-snmp npm package")
                (staged / f"{module}.mib").write_bytes(member.read())
        if dest.exists():  # another run filled it meanwhile
            return
        staged.rename(dest)


def _fetch_debian_mib(module: str, package: str, dest: Path) -> None:
    """`apt-get download PACKAGE` into a temporary dir and extract `module`'s text (the file
    named `<module>.mib`, `.txt` or bare, anywhere in the package) as `dest/<module>.mib`."""
    apt, dpkg_deb = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if apt is None or dpkg_deb is None:
        missing_requirement(f"apt-get/dpkg-deb missing: cannot fetch {module} ({package})")
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        proc = subprocess.run(
            [apt, "download", "-q", package], capture_output=True, text=True, timeout=300,
            cwd=tmp, check=False,
        )
        debs = list(Path(tmp).glob(f"{package}_*.deb"))
        if proc.returncode != 0 or len(debs) != 1:
            missing_requirement(
                f"apt-get download {package} failed ({proc.returncode}; run apt-get update): "
                f"{proc.stderr.strip()[-300:]}"
            )
        fs = subprocess.run([dpkg_deb, "--fsys-tarfile", str(debs[0])], capture_output=True,
                            timeout=300, check=True)
        names = {f"{module}{ext}" for ext in (".mib", ".txt", "")}
        with tarfile.open(fileobj=io.BytesIO(fs.stdout)) as tar:
            member = next((m for m in tar.getmembers()
                           if m.isfile() and "/mibs/" in m.name
                           and m.name.rsplit("/", 1)[-1] in names), None)
            data = None if member is None else tar.extractfile(member)
            if data is None:
                pytest.fail(f"{module} missing from the Debian package {package}")
            staged = Path(tmp) / f"{module}.mib"
            staged.write_bytes(data.read())
        staged.replace(dest / f"{module}.mib")


@pytest.fixture(scope="session")
def ietf_mib_dir() -> Path:
    """Directory holding SNMPv2-SMI/-TC/-CONF/SNMPv2-MIB and INET-ADDRESS-MIB as
    `<module>.mib` (fetched once)."""
    dest = _mib_cache_dir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    # One fetch at a time: parallel workers (pytest-xdist) wait for the first one's result.
    with (dest.parent / "mibs.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all((dest / f"{m}.mib").is_file() for m in IETF_BASE_MIBS):
            if dest.exists():
                shutil.rmtree(dest)
            _fetch_ietf_mibs(dest)
        for module, package in DEBIAN_MIBS.items():
            if not (dest / f"{module}.mib").is_file():
                _fetch_debian_mib(module, package, dest)
    return dest


@pytest.fixture(scope="session")
def pmta_mib_file() -> Path:
    """Our MIB module as shipped (`mibs/PMTA-SNMP-MIB.txt`)."""
    return PMTA_MIB_FILE


@pytest.fixture(scope="session")
def snmp_tool_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment for smilint/snmptranslate: no user or system snmp.conf, scratch state dir."""
    for tool in ("smilint", "snmptranslate"):
        if shutil.which(tool) is None:
            missing_requirement(f"{tool} is not installed (Debian packages smitools and snmp)")
    scratch = tmp_path_factory.mktemp("snmp-tools")
    env = dict(os.environ)
    env.update(
        HOME=str(scratch),
        SNMPCONFPATH=str(scratch),
        SNMP_PERSISTENT_DIR=str(scratch / "persist"),
        MIBS="",
    )
    env.pop("MIBDIRS", None)
    env.pop("SMIPATH", None)
    yield env


# --- end of MIB fixtures ----------------------------------------------------------------


# --- snmpd fixtures (agentx) ---
# A real, unprivileged net-snmp snmpd as AgentX master (unix socket in a short temp dir,
# udp:127.0.0.1:<free port>), an snmptrapd receiver, and an asyncio loop in a thread.
# Every process is stopped by pid in teardown. See pmta_snmp/netsnmp.py.
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from pmta_snmp.netsnmp import (  # noqa: E402
    LoopThread,
    SnmpdMaster,
    TrapReceiver,
    missing_netsnmp_tools,
    short_tempdir,
)


def _require_netsnmp(*extra: str) -> None:
    missing = missing_netsnmp_tools(*extra)
    if missing:
        missing_requirement(
            f"net-snmp tools not installed: {', '.join(missing)} (Debian: snmpd, snmp)"
        )


@pytest.fixture
def snmpd_factory() -> Iterator[Callable[..., SnmpdMaster]]:
    """Make started SnmpdMaster instances (kwargs as SnmpdMaster); all stopped at teardown."""
    _require_netsnmp()
    masters: list[SnmpdMaster] = []
    with short_tempdir("snmpd-") as base:

        def make(**kwargs: Any) -> SnmpdMaster:
            master = SnmpdMaster(base / f"m{len(masters)}", **kwargs)
            masters.append(master)
            master.start()
            return master

        try:
            yield make
        finally:
            for master in masters:
                master.stop()


@pytest.fixture
def snmpd_master(snmpd_factory: Callable[..., SnmpdMaster]) -> SnmpdMaster:
    """A running snmpd master: `.agentx_address` for the subagent, `.get/.walk/.bulkwalk`."""
    return snmpd_factory()


@pytest.fixture
def trap_receiver() -> Iterator[TrapReceiver]:
    """A running snmptrapd on udp:127.0.0.1:<port>; `.wait_for(pred)` returns a trap."""
    _require_netsnmp("snmptrapd")
    with short_tempdir("trapd-") as base:
        receiver = TrapReceiver(base)
        receiver.start()
        try:
            yield receiver
        finally:
            receiver.stop()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    """An asyncio loop running in a background thread (`.call(coro)`), closed at teardown."""
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.close()


# --- end of snmpd fixtures (agentx) ---


# --- Ports: each parallel worker (pytest-xdist) its own slice -----------------------------
# free_tcp_port/free_udp_port hand out ports from PMTA_SNMP_PORT_RANGE in turn. The slices lie
# below the kernel's ephemeral range, where no bind(0) and no client socket lands, and do not
# overlap: a port one worker was given cannot be taken by another before its server binds it.
from pmta_snmp.netsnmp import PORT_RANGE_ENV  # noqa: E402


def _worker_port_range() -> str:
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low, high = 10000, max(ephemeral_low, 12000) - 1
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # "gw<N>"; one slice when serial
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1), index + 1)
    size = (high - low + 1) // count
    return f"{low + index * size}-{low + (index + 1) * size - 1}"


os.environ[PORT_RANGE_ENV] = _worker_port_range()  # not inherited: per worker
# --- end of Ports ---


# --- What ./run provides: skipped on a developer's machine, failed under CI --------------


def require_c_scanner() -> object:
    """The built pmta_snmp._csvtally module; skips the test where it is not built, and fails
    it under CI (where ./run always builds it: a missing module there is a broken build)."""
    from pmta_snmp.acct.tally import speedups

    module = speedups()
    if module is None:
        missing_requirement("the C scanner pmta_snmp._csvtally is not built")
    return module


def missing_requirement(reason: str) -> NoReturn:
    """A program, package or build that `./run test` provides is missing: skip the test on a
    developer's machine, fail it under CI (CI set, as .ci/run does), where a skip would hide a
    broken setup behind a green run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; ./run installs it, so under CI this is a broken setup",
                    pytrace=False)
    pytest.skip(reason)


# --- Hypothesis: no timing in property tests ---------------------------------------------
# A property holds or fails whatever the machine's speed: no per-example deadline and no
# "generation too slow" health check, for every test, also those without their own settings.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "pmta-snmp", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("pmta-snmp")
# --- end of Hypothesis ---


# --- pytest-xdist: a module-scoped fixture is built once -----------------------------------
# With --dist loadgroup (./run), the tests of a file that defines a module- or class-scoped
# fixture (PostgreSQL with the Zabbix frontend, Prometheus, a 100k-domain simulator, a
# sanitizer build) run on one worker, so the fixture is built once rather than by every worker
# that draws one of them; every other test is scheduled alone. Done in the scheduler, from the
# file: xdist's own xdist_group suffix on node ids is lost with pytest 9.
import re  # noqa: E402
from functools import cache  # noqa: E402

_SHARED_FIXTURE = re.compile(r"@pytest\.fixture\(\s*scope=[\"'](module|class|package)[\"']")


@cache
def _shares_fixture(path: str) -> bool:
    try:
        return bool(_SHARED_FIXTURE.search((REPO_ROOT / path).read_text(encoding="utf-8")))
    except OSError:
        return False


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getoption("dist", None) != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class FileFixtureScheduling(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if _shares_fixture(path) else str(super()._split_scope(nodeid))

    return FileFixtureScheduling(config, log)
# --- end of pytest-xdist ---


# --- No test writes to the machine's default state directory -------------------------------


@pytest.fixture(autouse=True)
def _private_default_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the default state directory (`$PMTA_SNMP_STATE_DIR`) of this test and the
    processes it starts at its own temporary directory: a plugin or agent run without
    `--state-dir` would otherwise write to /var/lib/pmta-snmp (root) or ~/.local/state (the
    standalone agent's SNMPv3 engine ID, for one). Tests of the default itself unset it."""
    monkeypatch.setenv("PMTA_SNMP_STATE_DIR", str(tmp_path / "default-state"))
