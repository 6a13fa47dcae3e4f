"""PMTA-SNMP-MIB against real tools: smilint is silent, and snmptranslate agrees with layout.py.

Runs for the shipped module and for one re-based to another enterprise number, so the
re-base command and the agent's `enterprise` setting are known to land on the same OIDs.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pmta_snmp.mib.layout import (
    ENTERPRISE,
    MIB_MODULE,
    NOTIFICATIONS,
    OBJECTS,
    Kind,
    MibObject,
    NotificationType,
    base_oid,
    layout,
)
from pmta_snmp.mib.rebase import MIB_FILE_NAME, render_mib
from pmta_snmp.mib.snapshot import SnmpType

REBASED_ENTERPRISE = 99999

# snmptranslate -Tp type words → the SYNTAX names layout.py may use for them.
_TP_TYPES: dict[str, set[str]] = {
    "Counter64": {"Counter64"},
    "Counter": {"Counter32"},
    "Gauge": {"Gauge32"},
    "Unsigned": {"Unsigned32"},
    "Integer32": {"Integer32"},
    "EnumVal": {"TruthValue", "PmtaDeliveryMode", "InetAddressType"},
    "String": {"PmtaUtf8String", "DisplayString", "DateAndTime", "InetAddress"},
}
# ... and the wire type each SYNTAX must carry (Unsigned32 shares Gauge32's tag).
_TYPE_OF_SYNTAX: dict[str, SnmpType] = {
    "Counter64": SnmpType.COUNTER64,
    "Counter32": SnmpType.COUNTER32,
    "Gauge32": SnmpType.GAUGE32,
    "Unsigned32": SnmpType.GAUGE32,
    "Integer32": SnmpType.INTEGER,
    "TruthValue": SnmpType.INTEGER,
    "PmtaDeliveryMode": SnmpType.INTEGER,
    "PmtaUtf8String": SnmpType.OCTET_STRING,
    "DisplayString": SnmpType.OCTET_STRING,
    "DateAndTime": SnmpType.OCTET_STRING,
    "InetAddressType": SnmpType.INTEGER,
    "InetAddress": SnmpType.OCTET_STRING,
}


@dataclass
class TpObject:
    """One leaf object as `snmptranslate -Tp` shows it."""

    name: str
    access: str
    type_word: str
    tc: str | None = None


@dataclass
class MibView:
    """What snmptranslate resolves from one MIB directory."""

    oids: dict[str, tuple[int, ...]]
    leaves: dict[str, TpObject]
    indices: dict[str, list[str]] = field(default_factory=dict)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=False)


def _smilint(mib: Path, base_dir: Path, env: dict[str, str]) -> str:
    lint_env = dict(env, SMIPATH=f"{base_dir}:{mib.parent}")
    proc = _run(["smilint", "-l", "6", str(mib)], lint_env)
    return proc.stdout + proc.stderr


def _translate(mib_dir: Path, base_dir: Path, env: dict[str, str], *args: str) -> str:
    proc = _run(["snmptranslate", "-M", f"{base_dir}:{mib_dir}", "-m", MIB_MODULE, *args], env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


_TZ_LINE = re.compile(r'^"(\w+)"\s+"([\d.]+)"$')
_TP_LEAF = re.compile(r"\+-- ([-RWCN]{4}) (\S+)\s+(\w+)\((\d+)\)")
_TP_NODE = re.compile(r"\+--(\w+)\((\d+)\)")
_TP_TC = re.compile(r"Textual Convention: (\S+)")
_TP_INDEX = re.compile(r"Index: (.+)$")


def _mib_view(mib_dir: Path, base_dir: Path, env: dict[str, str]) -> MibView:
    oids: dict[str, tuple[int, ...]] = {}
    for line in _translate(mib_dir, base_dir, env, "-Tz").splitlines():
        m = _TZ_LINE.match(line.strip())
        if m:
            oids[m[1]] = tuple(int(x) for x in m[2].split("."))
    view = MibView(oids, {})
    tree = _translate(mib_dir, base_dir, env, "-Tp", "-OS", f"{MIB_MODULE}::pmtaSnmpMIB")
    last_leaf: TpObject | None = None
    last_node: str | None = None
    for line in tree.splitlines():
        if m := _TP_LEAF.search(line):
            last_leaf = TpObject(m[3], m[1], m[2])
            view.leaves[last_leaf.name] = last_leaf
        elif m := _TP_NODE.search(line):
            last_node, last_leaf = m[1], None
        elif (m := _TP_TC.search(line)) and last_leaf is not None:
            last_leaf.tc = m[1]
        elif (m := _TP_INDEX.search(line)) and last_node is not None:
            view.indices[last_node] = [s.strip() for s in m[1].split(",")]
    return view


@pytest.fixture(scope="module")
def mib_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """One directory per enterprise number, each holding the rendered module only."""
    dirs: dict[int, Path] = {}
    for enterprise in (ENTERPRISE, REBASED_ENTERPRISE):
        d = tmp_path_factory.mktemp(f"mib-{enterprise}")
        (d / MIB_FILE_NAME).write_text(render_mib(enterprise), encoding="utf-8")
        dirs[enterprise] = d
    return dirs


@pytest.fixture(scope="module")
def views(
    mib_dirs: dict[int, Path], ietf_mib_dir: Path, snmp_tool_env: dict[str, str]
) -> dict[int, MibView]:
    return {e: _mib_view(d, ietf_mib_dir, snmp_tool_env) for e, d in mib_dirs.items()}


def test_shipped_mib_lints_clean_at_level_6(
    pmta_mib_file: Path, ietf_mib_dir: Path, snmp_tool_env: dict[str, str]
) -> None:
    # smilint exits 0 even on errors: the output is the verdict.
    assert _smilint(pmta_mib_file, ietf_mib_dir, snmp_tool_env) == ""


def test_rebased_mib_lints_clean_at_level_6(
    mib_dirs: dict[int, Path], ietf_mib_dir: Path, snmp_tool_env: dict[str, str]
) -> None:
    mib = mib_dirs[REBASED_ENTERPRISE] / MIB_FILE_NAME
    assert _smilint(mib, ietf_mib_dir, snmp_tool_env) == ""


def test_smilint_is_not_silent_on_a_broken_module(
    tmp_path: Path, pmta_mib_file: Path, ietf_mib_dir: Path, snmp_tool_env: dict[str, str]
) -> None:
    # Guards the check above: a module with an object outside every group must be reported.
    text = pmta_mib_file.read_text(encoding="utf-8").replace(
        "\nEND",
        "\npmtaStray OBJECT-TYPE\n    SYNTAX Gauge32\n    MAX-ACCESS read-only\n"
        '    STATUS current\n    DESCRIPTION "x"\n    ::= { pmtaConfig 99 }\n\nEND',
    )
    broken = tmp_path / MIB_FILE_NAME
    broken.write_text(text, encoding="utf-8")
    assert "pmtaStray" in _smilint(broken, ietf_mib_dir, snmp_tool_env)


def test_shipped_file_is_the_default_rendering(pmta_mib_file: Path) -> None:
    text = pmta_mib_file.read_text(encoding="utf-8")
    assert render_mib(ENTERPRISE) == text
    assert text.count(str(ENTERPRISE)) == 1


def test_license_days_left_documents_its_missing_instance(
    mib_dirs: dict[int, Path], ietf_mib_dir: Path, snmp_tool_env: dict[str, str]
) -> None:
    """With no license data the agent serves no instance, and check_snmp calls that OK: the
    DESCRIPTION an NMS shows (snmptranslate -Td) must say so and what to do."""
    out = _translate(mib_dirs[ENTERPRISE], ietf_mib_dir, snmp_tool_env, "-Td",
                     f"{MIB_MODULE}::pmtaLicenseDaysLeft")
    text = " ".join(out.split())
    assert "No instance (a Get answers noSuchInstance) while the agent has no license data" \
        in text
    assert "no API key is configured" in text and "check_snmp" in text
    assert "'no license data' trigger" in text


@pytest.mark.parametrize("enterprise", [ENTERPRISE, REBASED_ENTERPRISE])
def test_snmptranslate_resolves_a_column_to_the_layout_oid(
    enterprise: int, mib_dirs: dict[int, Path], ietf_mib_dir: Path, snmp_tool_env: dict[str, str]
) -> None:
    out = _translate(
        mib_dirs[enterprise], ietf_mib_dir, snmp_tool_env, "-On", f"{MIB_MODULE}::pmtaQueueRcpt"
    )
    expected = layout(enterprise).oid("pmtaQueueRcpt")
    assert out.strip() == "." + ".".join(map(str, expected))
    assert expected[:8] == (1, 3, 6, 1, 4, 1, enterprise, 25)


@pytest.mark.parametrize("enterprise", [ENTERPRISE, REBASED_ENTERPRISE])
def test_every_layout_oid_matches_the_mib(enterprise: int, views: dict[int, MibView]) -> None:
    view = views[enterprise]
    lay = layout(enterprise)
    assert view.oids["pmtaSnmpMIB"] == base_oid(enterprise)
    for obj in OBJECTS:
        assert view.oids.get(obj.name) == lay.oid(obj.name), obj.name
    for notification in NOTIFICATIONS:
        assert view.oids.get(notification.name) == lay.oid(notification.name)
        assert lay.oid(notification.name)[-2] == 0  # notifications under an arc ending in 0


@pytest.mark.parametrize("enterprise", [ENTERPRISE, REBASED_ENTERPRISE])
def test_every_mib_object_is_in_the_layout_with_its_type(
    enterprise: int, views: dict[int, MibView]
) -> None:
    leaves = views[enterprise].leaves
    by_name: dict[str, MibObject] = {o.name: o for o in OBJECTS}
    assert set(leaves) == set(by_name)
    for name, leaf in leaves.items():
        obj = by_name[name]
        expected_access = "----" if obj.kind is Kind.INDEX else "-R--"
        assert leaf.access == expected_access, name
        if leaf.tc is not None:
            assert obj.syntax == leaf.tc, name
        assert obj.syntax in _TP_TYPES[leaf.type_word], name
        assert obj.type is _TYPE_OF_SYNTAX[obj.syntax], name


def test_table_indices_match_the_layout(views: dict[int, MibView]) -> None:
    view = views[ENTERPRISE]
    name_of = {oid: name for name, oid in view.oids.items()}
    by_entry: dict[str, list[str]] = {}
    for obj in OBJECTS:
        if obj.kind is Kind.INDEX:
            entry = name_of[layout().oid(obj.name)[:-1]]
            by_entry.setdefault(entry, []).append(obj.name)
    assert view.indices == by_entry


@pytest.mark.parametrize("notification", NOTIFICATIONS, ids=lambda n: n.name)
def test_notification_objects_match_the_mib(
    notification: NotificationType,
    mib_dirs: dict[int, Path],
    ietf_mib_dir: Path,
    snmp_tool_env: dict[str, str],
) -> None:
    name = f"{MIB_MODULE}::{notification.name}"
    text = _translate(mib_dirs[ENTERPRISE], ietf_mib_dir, snmp_tool_env, "-Td", name)
    m = re.search(r"OBJECTS\s*\{([^}]*)\}", text)
    assert m is not None, text
    assert tuple(s.strip() for s in m[1].split(",")) == notification.objects
