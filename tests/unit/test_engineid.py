"""The standalone agent's SNMPv3 engine ID: RFC 3411 checks, generation, and the state file
that keeps it with the boots counter across restarts."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from pmta_snmp.config import ConfigError, load_config
from pmta_snmp.engineid import (
    ENGINE_STATE_FILE,
    MAX_BOOTS,
    format_engine_id,
    generate_engine_id,
    load_engine_identity,
    parse_engine_id,
)

OURS = bytes.fromhex("80007ed905") + bytes(range(1, 13))


@pytest.mark.parametrize(
    ("text", "octets"),
    [
        ("0x80007ed905010203", "80007ed905010203"),
        ("80:00:7e:d9:05:01", "80007ed90501"),
        ("0X80007ED901C0000201", "80007ed901c0000201"),  # IPv4 format
        ("000001f40102030405060708", "000001f40102030405060708"),  # pre-SNMPv3, 12 octets
        ("0x800007e580" + "ab" * 27, "800007e580" + "ab" * 27),  # enterprise format, 32 octets
    ],
)
def test_valid_engine_ids_parse(text: str, octets: str) -> None:
    assert parse_engine_id(text) == bytes.fromhex(octets)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0x80007e", "3 octets"),
        ("0x80007ed905" + "00" * 28, "33 octets"),
        ("0xnothex0102", "not a hex string"),
        ("0000000000", "all zeros"),
        ("ffffffffffff", "all zeros or all 'ff'H"),
        ("0x80007ed900aabb", "reserved"),
        ("0x80007ed906aabb", "reserved"),
        ("0x80007ed901aabb", "format 1 needs 4 octets"),
        ("0x00007ed90102", "12 octets"),
    ],
)
def test_invalid_engine_ids_are_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_engine_id(text)


def test_generated_ids_are_enterprise_format_octets_and_random() -> None:
    first, second = generate_engine_id(32473), generate_engine_id(32473)
    assert first[:5] == bytes.fromhex("80007ed905") and len(first) == 17
    assert first != second
    assert parse_engine_id(format_engine_id(first)) == first


def test_config_checks_engine_id(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[snmp]\nengine_id = "0x80007ed9050102"\n')
    assert load_config(cfg, environ={}).snmp.engine_id == "0x80007ed9050102"
    cfg.write_text('[snmp]\nengine_id = "0x80007e"\n')
    with pytest.raises(ConfigError, match=r"^snmp\.engine_id: '0x80007e' has 3 octets"):
        load_config(cfg, environ={})


def test_the_id_is_kept_and_boots_grow(tmp_path: Path) -> None:
    first = load_engine_identity(tmp_path / "agent", enterprise=32473)
    second = load_engine_identity(tmp_path / "agent", enterprise=32473)
    assert first.boots == 1 and second.boots == 2
    assert second.engine_id == first.engine_id
    path = tmp_path / "agent" / ENGINE_STATE_FILE
    assert second.path == path
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "agent").stat().st_mode & 0o777 == 0o700


def test_a_configured_id_counts_its_own_boots(tmp_path: Path) -> None:
    generated = load_engine_identity(tmp_path, enterprise=32473)
    assert load_engine_identity(tmp_path, enterprise=32473, configured=OURS).boots == 1
    assert load_engine_identity(tmp_path, enterprise=32473, configured=OURS).boots == 2
    back = load_engine_identity(tmp_path, enterprise=32473)  # the override removed
    assert (back.engine_id, back.boots) == (generated.engine_id, 1)


def test_boots_stop_at_the_maximum(tmp_path: Path) -> None:
    first = load_engine_identity(tmp_path, enterprise=32473)
    stored = json.loads((tmp_path / ENGINE_STATE_FILE).read_text())
    (tmp_path / ENGINE_STATE_FILE).write_text(json.dumps({**stored, "boots": MAX_BOOTS}))
    again = load_engine_identity(tmp_path, enterprise=32473)
    assert (again.engine_id, again.boots) == (first.engine_id, MAX_BOOTS)


def test_a_corrupt_file_gives_a_new_id_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / ENGINE_STATE_FILE).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="pmta_snmp"):
        got = load_engine_identity(tmp_path, enterprise=32473)
    assert got.boots == 1 and got.path is not None
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert load_engine_identity(tmp_path, enterprise=32473).engine_id == got.engine_id


def test_a_planted_link_is_not_followed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    state = tmp_path / "agent"
    state.mkdir(mode=0o700)
    os.symlink(target, state / ENGINE_STATE_FILE)
    with caplog.at_level(logging.WARNING, logger="pmta_snmp"):
        got = load_engine_identity(state, enterprise=32473)
    assert got.path is None and got.boots == 1
    assert target.read_text() == "{}"
    assert len(caplog.records) == 1 and "symbolic link" in caplog.records[0].getMessage()
