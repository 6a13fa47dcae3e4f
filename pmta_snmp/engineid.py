"""The standalone agent's SNMPv3 snmpEngineID and snmpEngineBoots, kept across restarts.

Managers cache an agent's snmpEngineID (USM keys are localized to it) and expect it to stay the
same across restarts, with snmpEngineBoots one higher after each (RFC 3411 §3.1.1.1, RFC 3414
§2.2). The ID is generated once (RFC 3411's enterprise format, random octets) and kept with the
boots counter in `snmp-engine.json` of the agent's state directory, written like every state
file (`pmta_snmp.state`: atomic, 0600, never through a link). `[snmp] engine_id` overrides it.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "ENGINE_STATE_FILE",
    "MAX_BOOTS",
    "EngineIdentity",
    "format_engine_id",
    "generate_engine_id",
    "load_engine_identity",
    "parse_engine_id",
]

log = logging.getLogger(__name__)

ENGINE_STATE_FILE: Final = "snmp-engine.json"
MAX_BOOTS: Final = 2**31 - 1  # RFC 3414 §2.2.2: it then stays there
_FORMAT_OCTETS: Final = 5  # RFC 3411 SnmpEngineID: "Octets, administratively assigned"
_RANDOM_OCTETS: Final = 12
# RFC 3411 SnmpEngineID formats with a fixed length: IPv4, IPv6, MAC address.
_FORMAT_LENGTHS: Final = {1: 4, 2: 16, 3: 6}


@dataclass(frozen=True, slots=True)
class EngineIdentity:
    """The engine ID and boots counter of one run; `path` is where they are kept (None: this
    run only, the state file could not be written)."""

    engine_id: bytes
    boots: int
    path: Path | None


def format_engine_id(engine_id: bytes) -> str:
    """The ID as net-snmp's `-e` option and our config take it: `0x` and hex digits."""
    return "0x" + engine_id.hex()


def parse_engine_id(text: str) -> bytes:
    """An snmpEngineID from hex (`0x` prefix and `:` separators allowed), checked against RFC
    3411's SnmpEngineID rules; ValueError saying what is wrong."""
    digits = text.strip().replace(":", "")
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    try:
        engine_id = bytes.fromhex(digits)
    except ValueError:
        raise ValueError(f"{text!r} is not a hex string") from None
    if not 5 <= len(engine_id) <= 32:
        raise ValueError(f"{text!r} has {len(engine_id)} octets; an engine ID has 5..32")
    if engine_id in (bytes(len(engine_id)), b"\xff" * len(engine_id)):
        raise ValueError(f"{text!r}: an engine ID must not be all zeros or all 'ff'H")
    if not engine_id[0] & 0x80:
        if len(engine_id) != 12:
            raise ValueError(f"{text!r}: an engine ID with the first bit 0 (the pre-SNMPv3 "
                             "format) has 12 octets")
        return engine_id
    fmt = engine_id[4]
    if fmt == 0 or 6 <= fmt <= 127:
        raise ValueError(f"{text!r}: octet 5 (the format) is {fmt}, a reserved value")
    want = _FORMAT_LENGTHS.get(fmt)
    if want is not None and len(engine_id) != 5 + want:
        raise ValueError(f"{text!r}: format {fmt} needs {want} octets after the fifth")
    return engine_id


def generate_engine_id(enterprise: int) -> bytes:
    """A new RFC 3411 engine ID: the enterprise number with the high bit set, format 5
    (octets), then random octets."""
    return (
        (0x8000_0000 | enterprise & 0x7FFF_FFFF).to_bytes(4, "big")
        + bytes((_FORMAT_OCTETS,))
        + secrets.token_bytes(_RANDOM_OCTETS)
    )


def _stored_id(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_engine_id(value)
    except ValueError:
        return None


def load_engine_identity(
    directory: Path | None, *, enterprise: int, configured: bytes | None = None
) -> EngineIdentity:
    """This run's engine ID (`configured`, else the one generated once and kept in
    `directory`) and boots (the stored count + 1, saved before returning; 1 for a new ID).

    Without `directory`, or when the state file cannot be used, one warning is logged (not
    with `directory` None) and the ID is new for this run (or `configured`), boots 1."""
    if directory is None:
        return EngineIdentity(configured or generate_engine_id(enterprise), 1, None)
    from pmta_snmp.state import StateError, StateFile

    state = StateFile(directory / ENGINE_STATE_FILE, lock_timeout=5.0)
    try:
        with state.transaction() as data:
            if state.warning is not None:
                log.warning("%s", state.warning)
            generated = _stored_id(data.get("generated_engine_id"))
            if generated is None:
                generated = generate_engine_id(enterprise)
            engine_id = configured or generated
            boots = data.get("boots")
            same = _stored_id(data.get("engine_id")) == engine_id
            if same and isinstance(boots, int) and not isinstance(boots, bool) and boots >= 1:
                boots = min(boots + 1, MAX_BOOTS)
            else:  # a new ID (RFC 3414: boots count since the ID was configured)
                boots = 1
            data.clear()
            data.update(generated_engine_id=format_engine_id(generated),
                        engine_id=format_engine_id(engine_id), boots=boots)
    except (StateError, OSError) as exc:
        engine_id = configured or generate_engine_id(enterprise)
        log.warning(
            "cannot keep the SNMP engine ID and boots in %s (%s): this run uses the engine ID "
            "%s with boots 1, and SNMPv3 managers may need to rediscover the agent after a "
            "restart", state.path, exc, format_engine_id(engine_id))
        return EngineIdentity(engine_id, 1, None)
    return EngineIdentity(engine_id, boots, state.path)
