"""Standalone SNMP agent for hosts without snmpd: serves the OidTree itself (pysnmp 7 for v3).

The AgentX subagent is the main path; this agent answers the same immutable OID tree by itself.

- SNMPv1 and SNMPv2c with one read-only community, SNMPv3 USM users at authPriv only (SHA-1/SHA-2
  authentication, AES privacy). Nothing is ever writable: every Set fails with noAccess (v1:
  noSuchName). SNMPv1 managers get no Counter64 (RFC 3584 §4.2.2.1: GetNext skips them, Get
  answers noSuchName).
- One UDP socket, one protocol (`_AgentProtocol`): v1/v2c messages are decoded, answered from
  the tree and encoded right there (`pmta_snmp.snmpfast`, BER in `pmta_snmp.ber`); v3 messages
  go to pysnmp, which does what it is for (message processing, USM authentication and privacy)
  and hands the decrypted PDU to `_V3Responder`, which answers from the tree the same way. The
  tree is fetched from `tree_getter` once per request, so a tree swap after a poll is seen by
  the next request; nothing is built or copied per request beyond the answer.
- Before the tree, SNMPv2-MIB's system group (`system_group`: sysDescr, sysObjectID, sysUpTime
  as the traps carry it, ...), which managers read to discover and to check an agent.
- Only OIDs under 1.3.6.1 (`VIEW_ROOT`, the read view) are served. GetBulk answers are cut to
  the manager's maximum message size (v3 msgMaxSize; v1/v2c: a UDP datagram).
- Notifications go out as SNMPv2c traps (sysUpTime.0, snmpTrapOID.0, then the objects) to every
  configured trap target, from a separate UDP socket.
- Safe by default: the community `public` on a non-loopback address is refused unless
  `snmp.allow_public_community` is set.
- The SNMPv3 snmpEngineID stays the same across restarts and snmpEngineBoots grows by one at
  each start (`pmta_snmp.engineid`, kept in the agent's state directory), never pysnmp's
  per-process default nor its shared /tmp store.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from pysnmp.carrier.asyncio.dgram import udp, udp6
from pysnmp.entity import config as pysnmp_config
from pysnmp.entity.engine import SnmpEngine
from pysnmp.proto import error as pysnmp_error
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.proto.api import v2c

from pmta_snmp import __version__
from pmta_snmp.ber import Tag, encode_tlv
from pmta_snmp.config import ConfigError, SnmpSection, SnmpUser, read_secret
from pmta_snmp.engineid import (
    EngineIdentity,
    format_engine_id,
    load_engine_identity,
    parse_engine_id,
)
from pmta_snmp.mib.layout import ENTERPRISE, base_oid
from pmta_snmp.mib.snapshot import (
    LiveTree,
    Oid,
    OidTree,
    OidTreeError,
    SnmpType,
    Value,
    check_oid,
    check_value,
    oid_key,
)
from pmta_snmp.snmpfast import (
    SNMP_V2C,
    SNMP_V3,
    UDP_MAX_MESSAGE_SIZE,
    VIEW_ROOT,
    Answer,
    CommunityResponder,
    ErrorStatus,
    JoinedTree,
    RequestVarBind,
    ServedTree,
    SnmpCounters,
    TreeResponder,
    message_version,
    name_tlv,
)

__all__ = [
    "DEFAULT_COMMUNITY",
    "VIEW_ROOT",
    "StandaloneAgent",
    "UdpEndpoint",
    "parse_udp_endpoint",
    "to_pysnmp_value",
]

log = logging.getLogger(__name__)

# pyasn1 (pysnmp's ASN.1 library) ships no type hints; mypy only ignores pysnmp's missing ones.
_ber_encoder: Any = importlib.import_module("pyasn1.codec.ber.encoder")
_univ: Any = importlib.import_module("pyasn1.type.univ")

DEFAULT_COMMUNITY: Final = "public"

SYSTEM: Final[Oid] = (1, 3, 6, 1, 2, 1, 1)  # SNMPv2-MIB system group (RFC 3418)
SYS_UPTIME_0: Final[Oid] = (*SYSTEM, 3, 0)
SYS_SERVICES_APPLICATIONS: Final = 72  # layers 4 and 7 (end-to-end, applications), as snmpd
SNMP_GROUP: Final[Oid] = (1, 3, 6, 1, 2, 1, 11)  # SNMPv2-MIB snmp group (RFC 3418)
_SNMP_COUNTERS: Final = (
    (1, "in_pkts"),
    (3, "in_bad_versions"),
    (4, "in_bad_community_names"),
    (5, "in_bad_community_uses"),
    (6, "in_asn_parse_errs"),
)
SNMP_TRAP_OID_0: Final[Oid] = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)

_SECURITY_MODEL_USM: Final = 3
_SECURITY_LEVEL_AUTH_PRIV: Final = 3
_MIN_USM_KEY_LEN: Final = 8  # RFC 3414 §11.2: passphrases of at least 8 octets

# Config names (case-insensitive, '-' and '_' ignored) → pysnmp USM protocol ids.
# SHA-2 per RFC 7860. "aes192"/"aes256" are the Blumenthal key extension, which is what
# net-snmp's AES-192/AES-256 use; "aes192c"/"aes256c" the Reeder (Cisco) variant.
_AUTH_PROTOCOLS: Final[dict[str, Any]] = {
    "sha": pysnmp_config.USM_AUTH_HMAC96_SHA,
    "sha1": pysnmp_config.USM_AUTH_HMAC96_SHA,
    "sha224": pysnmp_config.USM_AUTH_HMAC128_SHA224,
    "sha256": pysnmp_config.USM_AUTH_HMAC192_SHA256,
    "sha384": pysnmp_config.USM_AUTH_HMAC256_SHA384,
    "sha512": pysnmp_config.USM_AUTH_HMAC384_SHA512,
}
_PRIV_PROTOCOLS: Final[dict[str, Any]] = {
    "aes": pysnmp_config.USM_PRIV_CFB128_AES,
    "aes128": pysnmp_config.USM_PRIV_CFB128_AES,
    "aes192": pysnmp_config.USM_PRIV_CFB192_AES_BLUMENTHAL,
    "aes256": pysnmp_config.USM_PRIV_CFB256_AES_BLUMENTHAL,
    "aes192c": pysnmp_config.USM_PRIV_CFB192_AES,
    "aes256c": pysnmp_config.USM_PRIV_CFB256_AES,
}


# --- values ------------------------------------------------------------------------------


def _oid_value(value: Oid) -> Any:
    # An empty OID cannot be BER-encoded; send zeroDotZero, the usual "no OID" value.
    return rfc1902.ObjectIdentifier(value or (0, 0))


_CONVERTERS: Final[dict[SnmpType, Callable[[Any], Any]]] = {
    SnmpType.INTEGER: rfc1902.Integer32,
    SnmpType.OCTET_STRING: rfc1902.OctetString,
    SnmpType.NULL: lambda _v: rfc1902.Null(""),
    SnmpType.OBJECT_IDENTIFIER: _oid_value,
    SnmpType.IP_ADDRESS: rfc1902.IpAddress,
    SnmpType.COUNTER32: rfc1902.Counter32,
    SnmpType.GAUGE32: rfc1902.Gauge32,
    SnmpType.TIME_TICKS: rfc1902.TimeTicks,
    SnmpType.OPAQUE: rfc1902.Opaque,
    SnmpType.COUNTER64: rfc1902.Counter64,
    SnmpType.NO_SUCH_OBJECT: lambda _v: rfc1905.noSuchObject,
    SnmpType.NO_SUCH_INSTANCE: lambda _v: rfc1905.noSuchInstance,
    SnmpType.END_OF_MIB_VIEW: lambda _v: rfc1905.endOfMibView,
}


def to_pysnmp_value(value: Value) -> Any:
    """The pysnmp (rfc1902/rfc1905) object for one of our typed values."""
    return _CONVERTERS[value.type](value.value)


def system_group(
    *,
    enterprise: int,
    uptime: Callable[[], int],
    name: str,
    counters: SnmpCounters | None = None,
) -> OidTree:
    """SNMPv2-MIB's system group (RFC 3418), which every SNMP agent has and managers ask for
    first (discovery reads sysObjectID and sysDescr; Cacti's and others' availability check
    reads sysUpTime): the agent's own identity, sysUpTime computed when read (`uptime`, the
    value the traps carry), sysObjectID our MIB module's OID; with `counters`, its snmp
    group too (snmpInBadCommunityNames...), read when asked. snmpd answers both on the
    AgentX path."""
    text = SnmpType.OCTET_STRING
    items: list[tuple[Oid, Value]] = [
        ((*SYSTEM, 1, 0), Value(text, f"pmta-snmp {__version__}: standalone SNMP agent "
                                      "for PowerMTA".encode())),
        ((*SYSTEM, 2, 0), Value(SnmpType.OBJECT_IDENTIFIER, base_oid(enterprise))),
        (SYS_UPTIME_0, Value(SnmpType.TIME_TICKS, 0)),
        ((*SYSTEM, 4, 0), Value(text, b"")),  # sysContact: unknown
        ((*SYSTEM, 5, 0), Value(text, name.encode("utf-8", "replace")[:255])),
        ((*SYSTEM, 6, 0), Value(text, b"")),  # sysLocation: unknown
        ((*SYSTEM, 7, 0), Value(SnmpType.INTEGER, SYS_SERVICES_APPLICATIONS)),
        ((*SYSTEM, 8, 0), Value(SnmpType.TIME_TICKS, 0)),  # sysORLastChange: no sysORTable
    ]
    live: dict[Oid, Callable[[], Value | None]] = {
        SYS_UPTIME_0: lambda: Value(SnmpType.TIME_TICKS, uptime()),
    }
    if counters is not None:
        zero = Value(SnmpType.COUNTER32, 0)
        for sub, field in _SNMP_COUNTERS:
            items.append(((*SNMP_GROUP, sub, 0), zero))
            live[(*SNMP_GROUP, sub, 0)] = _counter_reader(counters, field)
        items += [
            ((*SNMP_GROUP, 30, 0), Value(SnmpType.INTEGER, 2)),  # snmpEnableAuthenTraps: no
            ((*SNMP_GROUP, 31, 0), zero),  # snmpSilentDrops: an answer never goes unsent
            ((*SNMP_GROUP, 32, 0), zero),  # snmpProxyDrops: no proxy
        ]
    tree = OidTree(items, [oid[:-1] for oid, _ in items])
    return LiveTree.over(tree, live)


def _counter_reader(counters: SnmpCounters, field: str) -> Callable[[], Value | None]:
    def read() -> Value:
        return Value(SnmpType.COUNTER32, getattr(counters, field) % 2**32)

    return read


# --- addresses ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UdpEndpoint:
    """A parsed `udp:HOST:PORT` / `udp6:[HOST]:PORT` address; `host` is not resolved."""

    host: str
    port: int
    ipv6: bool = False

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if self.ipv6 else socket.AF_INET

    def __str__(self) -> str:
        return f"udp6:[{self.host}]:{self.port}" if self.ipv6 else f"udp:{self.host}:{self.port}"


def parse_udp_endpoint(text: str, *, what: str, default_port: int) -> UdpEndpoint:
    """Parse net-snmp style transport addresses: `udp:HOST:PORT`, `udp6:[HOST]:PORT`, `HOST:PORT`,
    `udp:PORT` (all interfaces), `HOST` (port `default_port`). A bare IPv6 literal is only an
    address; give a port with brackets. Raise ConfigError naming `what` when malformed."""
    spec = text.strip()
    ipv6 = False
    scheme, sep, rest = spec.partition(":")
    if sep and scheme.lower() in ("udp", "udp6", "udpv6", "udpipv6"):
        ipv6 = scheme.lower() != "udp"
        spec = rest
    elif sep and scheme.lower() in ("tcp", "tcp6", "unix", "dtlsudp", "tls", "tlstcp"):
        raise ConfigError(f"{what}: only UDP is supported, not {scheme!r} ({text!r})")
    host: str
    port_text: str
    if spec.startswith("["):
        host, bracket, after = spec[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ConfigError(f"{what}: malformed address {text!r}")
        port_text = after[1:]
        ipv6 = True
    elif spec.count(":") > 1:  # bare IPv6 literal, optionally with a trailing :port
        ipv6 = True
        try:
            ipaddress.IPv6Address(spec)
            host, port_text = spec, ""
        except ValueError:
            host, _, port_text = spec.rpartition(":")
    elif ":" in spec:
        host, _, port_text = spec.partition(":")
    elif spec.isdigit():
        host, port_text = "", spec
    else:
        host, port_text = spec, ""
    if not port_text:
        port = default_port
    elif port_text.isdigit() and int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise ConfigError(f"{what}: bad UDP port in {text!r}")
    if not host:
        host = "::" if ipv6 else "0.0.0.0"  # noqa: S104 - net-snmp's "udp:PORT" means all interfaces
    if host.lower() == "localhost":
        host = "::1" if ipv6 else "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        if not host.replace("-", "").replace(".", "").isalnum():
            raise ConfigError(f"{what}: bad host in {text!r}") from None
    else:
        if addr.version == 6 and not ipv6:
            ipv6 = True
        elif addr.version == 4 and ipv6:
            raise ConfigError(f"{what}: IPv4 address {host} given as udp6 ({text!r})")
    return UdpEndpoint(host, port, ipv6)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- USM ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _UsmUser:
    name: str
    auth_protocol: Any
    auth_key: str
    priv_protocol: Any
    priv_key: str


def _protocol(table: dict[str, Any], name: str, what: str) -> Any:
    key = name.lower().replace("-", "").replace("_", "")
    try:
        return table[key]
    except KeyError:
        choices = ", ".join(sorted(table))
        raise ConfigError(f"{what}: unsupported protocol {name!r} (use one of {choices})") from None


def _load_user(user: SnmpUser) -> _UsmUser:
    where = f"snmp.users[{user.name!r}]"
    if not user.name or len(user.name) > 32:
        raise ConfigError(f"{where}: the user name must be 1..32 characters")
    auth = _protocol(_AUTH_PROTOCOLS, user.auth_protocol, f"{where}.auth_protocol")
    priv = _protocol(_PRIV_PROTOCOLS, user.priv_protocol, f"{where}.priv_protocol")
    keys: list[str] = []
    for field, path in (
        ("auth_key_file", user.auth_key_file),
        ("priv_key_file", user.priv_key_file),
    ):
        if not path:
            raise ConfigError(f"{where}.{field} is required (SNMPv3 users are authPriv)")
        key = read_secret(path, f"{where}.{field}")
        if len(key.encode("utf-8")) < _MIN_USM_KEY_LEN:
            raise ConfigError(f"{where}.{field}: the passphrase needs at least 8 characters")
        keys.append(key)
    return _UsmUser(user.name, auth, keys[0], priv, keys[1])


# --- the listening socket -----------------------------------------------------------------


class _AgentProtocol(asyncio.DatagramProtocol):
    """The protocol of the listening socket: SNMPv1/v2c messages are answered here, from the
    tree, by `CommunityResponder`; SNMPv3 messages go to pysnmp's transport (USM, then
    `_V3Responder`), which sends its answers through the same socket."""

    def __init__(self, community: CommunityResponder, v3: Any) -> None:
        self._community = community
        self._counters = community.counters
        self._v3 = v3  # pysnmp's UdpAsyncioTransport, itself an asyncio DatagramProtocol
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._v3.connection_made(transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        # An exception escaping here would make asyncio close the socket: none may.
        try:
            self._counters.in_pkts += 1
            version = message_version(data)
            if version == SNMP_V3:
                self._v3.datagram_received(data, addr)
            elif version is not None and 0 <= version <= SNMP_V2C:
                reply = self._community.answer(data)
                if reply is not None and self.transport is not None:
                    self.transport.sendto(reply, addr)
            elif version is None:
                self._counters.in_asn_parse_errs += 1
            else:
                self._counters.in_bad_versions += 1
        except Exception:
            log.exception("standalone agent: a request from %s failed", addr[0])

    def error_received(self, exc: Exception) -> None:
        log.debug("standalone agent: socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._v3.connection_lost(exc)


_V3_TAGS: Final = {  # the PDU types we answer, as pysnmp's types and as their BER tags
    rfc1905.GetRequestPDU.tagSet: Tag.GET,
    rfc1905.GetNextRequestPDU.tagSet: Tag.GET_NEXT,
    rfc1905.GetBulkRequestPDU.tagSet: Tag.GET_BULK,
    rfc1905.SetRequestPDU.tagSet: Tag.SET,
}
_V3_PDU_TYPES: Final = tuple(_V3_TAGS)
_VIEW_ROOT_NAME: Final = rfc1902.ObjectName(VIEW_ROOT)
# The scoped PDU beside its varbinds: its SEQUENCE, PDU and varbind-list headers (5 octets
# each at most), request-id, error-status and error-index (6 each); plus a margin for the
# response's security parameters, which pysnmp estimates from the request's.
_SCOPED_PDU_OVERHEAD: Final = 3 * 5 + 3 * 6 + 32
_V3_MAX_SCOPED_PDU: Final = UDP_MAX_MESSAGE_SIZE - 256  # the header and USM around it


class _V3Responder:
    """Answers the PDUs of SNMPv3 requests that pysnmp has authenticated and decrypted, from
    the tree, and hands the response back to pysnmp to encrypt, sign and send.

    Registered with pysnmp's message dispatcher as the application for Get, GetNext, GetBulk
    and Set. The varbinds are the same BER the v1/v2c path sends: they ride in the response
    PDU as one pre-encoded value (a pyasn1 `Any`), so pysnmp never builds an object per value.
    """

    def __init__(self, engine: Any, responder: TreeResponder) -> None:
        self._responder = responder
        self._engine_id = engine.snmpEngineID
        engine.message_dispatcher.register_context_engine_id(
            self._engine_id, _V3_PDU_TYPES, self.process_pdu
        )

    def close(self, engine: Any) -> None:
        """Unregister from the engine's dispatcher."""
        engine.message_dispatcher.unregister_context_engine_id(self._engine_id, _V3_PDU_TYPES)

    def process_pdu(
        self,
        engine: Any,
        mp_model: Any,
        security_model: Any,
        security_name: Any,
        security_level: Any,
        context_engine_id: Any,
        context_name: Any,
        pdu_version: Any,
        pdu: Any,
        max_size_response_scoped_pdu: Any,
        state_reference: Any,
    ) -> None:
        """pysnmp's application callback (RFC 3412 §4.2.2.1.3, its processPdu arguments in
        order) for one request PDU."""
        try:
            if bytes(context_name):
                log.debug("standalone agent: SNMPv3 request for an unknown context dropped")
                return
            rsp = self._response(
                engine, int(security_model), security_name, int(security_level),
                context_engine_id, pdu, int(max_size_response_scoped_pdu),
            )
            engine.message_dispatcher.return_response_pdu(
                engine, mp_model, security_model, security_name, security_level,
                context_engine_id, context_name, pdu_version, rsp, max_size_response_scoped_pdu,
                state_reference, {},
            )
        except pysnmp_error.StatusInformation as exc:  # pysnmp refused to send it
            log.debug("standalone agent: SNMPv3 response not sent: %s", exc)
        except Exception:
            log.exception("standalone agent: an SNMPv3 request failed")

    def _allowed(self, engine: Any, model: int, name: Any, level: int) -> bool:
        # Our users are authPriv: USM already refuses lower levels for them, and pysnmp's
        # VACM lookup may fall back to entries of another level, so the level is checked too.
        if model != _SECURITY_MODEL_USM or level != _SECURITY_LEVEL_AUTH_PRIV:
            return False
        try:
            engine.access_control_model[_VACM_ID].is_access_allowed(
                engine, model, name, level, "read", b"", _VIEW_ROOT_NAME
            )
        except pysnmp_error.StatusInformation:
            return False
        return True

    def _response(
        self,
        engine: Any,
        model: int,
        name: Any,
        level: int,
        context_engine_id: Any,
        pdu: Any,
        max_scoped_pdu: int,
    ) -> Any:
        request = v2c.apiPDU.get_varbinds(pdu)
        varbinds: list[RequestVarBind] = []
        for oid, _ in request:
            key = oid_key(tuple(oid))
            varbinds.append(RequestVarBind(key, name_tlv(key)))
        kind = _V3_TAGS[pdu.tagSet]
        budget = (
            min(max_scoped_pdu, _V3_MAX_SCOPED_PDU)
            - _SCOPED_PDU_OVERHEAD
            - len(bytes(context_engine_id))
        )
        if not self._allowed(engine, model, name, level):
            answer = Answer(ErrorStatus.AUTHORIZATION_ERROR, 1 if varbinds else 0, None)
        elif kind == Tag.GET_BULK:
            answer = self._responder.answer(
                kind,
                varbinds,
                int(v2c.apiBulkPDU.get_non_repeaters(pdu)),
                int(v2c.apiBulkPDU.get_max_repetitions(pdu)),
                v1=False,
                budget=budget,
            )
        else:
            answer = self._responder.answer(kind, varbinds, v1=False, budget=budget)
        rsp = v2c.apiPDU.get_response(pdu)
        v2c.apiPDU.set_error_status(rsp, answer.error_status)
        v2c.apiPDU.set_error_index(rsp, answer.error_index)
        if answer.varbinds is None:  # an error: the request's varbinds go back
            v2c.apiPDU.set_varbinds(rsp, request)
        else:
            rsp.setComponentByPosition(
                _PDU_VARBINDS,
                _univ.Any(encode_tlv(Tag.SEQUENCE, answer.varbinds)),
                verifyConstraints=False,
                matchTags=False,
                matchConstraints=False,
            )
        return rsp


_VACM_ID: Final = 3  # pysnmp's RFC 3415 access control model
_PDU_VARBINDS: Final = 3  # variable-bindings, the fourth component of every RFC 3416 PDU


# --- notifications -----------------------------------------------------------------------


class _TrapProtocol(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        log.warning("standalone agent: sending a trap failed: %s", exc)


@dataclass(frozen=True, slots=True)
class _TrapTarget:
    endpoint: UdpEndpoint
    community: str


# --- the agent ---------------------------------------------------------------------------


def _set_engine_identity(engine: Any, identity: EngineIdentity) -> None:
    """Make pysnmp's engine use our snmpEngineID and snmpEngineBoots: its USM and message
    processing read them from these MIB symbols; call before any user or context is added
    (those take `engine.snmpEngineID`)."""
    engine_id, boots = engine.get_mib_builder().import_symbols(
        "__SNMP-FRAMEWORK-MIB", "snmpEngineID", "snmpEngineBoots"
    )
    engine_id.syntax = engine_id.syntax.clone(identity.engine_id)
    boots.syntax = boots.syntax.clone(identity.boots)
    engine.snmpEngineID = engine_id.syntax


class StandaloneAgent:
    """An SNMP agent serving `tree_getter()` on `snmp.listen` (v2c read-only community, v3 USM).

    Secrets are read and the configuration checked in the constructor (ConfigError); the
    sockets are opened by `start()` and closed by `stop()`, both run in the serving event loop.
    The SNMPv3 engine ID and boots are kept in `state_dir` (without it: new at each start).
    """

    def __init__(
        self,
        tree_getter: Callable[[], OidTree],
        snmp: SnmpSection,
        *,
        community: str | None = None,
        enterprise: int = ENTERPRISE,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._tree_getter = tree_getter
        self._snmp = snmp
        self._enterprise = enterprise
        self._state_dir = None if state_dir is None else Path(state_dir)
        try:
            self._engine_id = None if snmp.engine_id is None else parse_engine_id(snmp.engine_id)
        except ValueError as exc:
            raise ConfigError(f"snmp.engine_id: {exc}") from None
        #: This run's SNMPv3 engine ID and boots, set by `start()`.
        self.identity: EngineIdentity | None = None
        self._listen = parse_udp_endpoint(snmp.listen, what="snmp.listen", default_port=161)
        if not _is_ip_literal(self._listen.host):
            raise ConfigError(f"snmp.listen: give an IP address, not {self._listen.host!r}")
        if community is None:
            if snmp.community_file:
                community = read_secret(snmp.community_file, "snmp.community_file")
            else:
                community = DEFAULT_COMMUNITY
        if not community:
            raise ConfigError("the SNMP community must not be empty")
        self._community = community
        if (
            community == DEFAULT_COMMUNITY
            and not _is_loopback(self._listen.host)
            and not snmp.allow_public_community
        ):
            raise ConfigError(
                f"refusing to serve the default community {DEFAULT_COMMUNITY!r} on the "
                f"non-loopback address {self._listen}: set snmp.community_file to a file holding "
                "a secret community, or set snmp.allow_public_community = true to accept the risk"
            )
        names = [u.name for u in snmp.users]
        if len(set(names)) != len(names):
            raise ConfigError("snmp.users: user names must be unique")
        self._users = tuple(_load_user(u) for u in snmp.users)
        targets: list[_TrapTarget] = []
        for i, target in enumerate(snmp.trap_targets):
            where = f"snmp.trap_targets[{i}]"
            endpoint = parse_udp_endpoint(target.address, what=f"{where}.address", default_port=162)
            trap_community = (
                read_secret(target.community_file, f"{where}.community_file")
                if target.community_file
                else community
            )
            targets.append(_TrapTarget(endpoint, trap_community))
        self._targets = tuple(targets)
        self._started_at = time.monotonic()
        self.counters = SnmpCounters()
        self._system = system_group(
            enterprise=enterprise, uptime=lambda: self.uptime_ticks, name=socket.gethostname(),
            counters=self.counters,
        )
        self._joined: JoinedTree | None = None
        self.responder = TreeResponder(self._served_tree)
        self._community_responder = CommunityResponder(
            self.responder, community.encode("utf-8"), counters=self.counters
        )
        self._engine: Any = None
        self._v3: _V3Responder | None = None
        self._sock: socket.socket | None = None
        self._bound: tuple[str, int] | None = None
        self._trap_endpoints: dict[socket.AddressFamily, asyncio.DatagramTransport] = {}
        self._trap_addresses: list[tuple[tuple[Any, ...], str]] = []

    def _served_tree(self) -> ServedTree:
        """The system group, then the current tree (alone if it holds OIDs before the end of
        the system group, which ours never do). The join is made once per tree, not per
        request: the tree changes once per poll."""
        tree = self._tree_getter()
        joined = self._joined
        if joined is not None and joined.tail is tree:
            return joined
        system = self._system
        if len(tree) and tree.key(0) <= system.key(len(system) - 1):
            return tree
        self._joined = joined = JoinedTree(system, tree)
        return joined

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._engine is not None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): the real port when `listen` asked for port 0."""
        if self._bound is None:
            raise RuntimeError("the standalone agent is not started")
        return self._bound

    @property
    def uptime_ticks(self) -> int:
        """Hundredths of a second since the agent was created (the traps' sysUpTime.0)."""
        return int((time.monotonic() - self._started_at) * 100) % 2**32

    async def start(self) -> None:
        """Bind the socket, set up pysnmp for SNMPv3 and start answering, in the running loop."""
        if self._engine is not None:
            raise RuntimeError("the standalone agent is already started")
        loop = asyncio.get_running_loop()
        listen = self._listen
        sock = socket.socket(listen.family, socket.SOCK_DGRAM)
        try:
            if listen.ipv6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((listen.host, listen.port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"snmp.listen: cannot bind {listen}: {exc.strerror}") from None
        bound = sock.getsockname()
        self._bound = (str(bound[0]), int(bound[1]))

        try:
            identity = load_engine_identity(
                self._state_dir, enterprise=self._enterprise, configured=self._engine_id
            )
        except BaseException:
            sock.close()
            self._bound = None
            raise
        # Without snmpEngineID: given one, pysnmp keeps the boots under a shared /tmp path.
        engine = SnmpEngine()
        try:
            _set_engine_identity(engine, identity)
            v3_transport = self._configure(engine, loop)
            protocol = _AgentProtocol(self._community_responder, v3_transport)
            # Once this returns the agent answers, and stop() closes a real transport.
            await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
            await self._open_trap_endpoints(loop)
        except BaseException:
            sock.close()
            self._close_engine(engine)
            self._close_trap_endpoints()
            self._bound = None
            raise
        self._engine = engine
        self._sock = sock
        self.identity = identity
        self._started_at = time.monotonic()
        log.info(
            "standalone SNMP agent listening on %s:%d (v1/v2c community, %d v3 user(s), "
            "%d trap target(s); engine ID %s, boots %d)",
            self._bound[0],
            self._bound[1],
            len(self._users),
            len(self._targets),
            format_engine_id(identity.engine_id),
            identity.boots,
        )

    def _configure(self, engine: Any, loop: asyncio.AbstractEventLoop) -> Any:
        """Set pysnmp up for SNMPv3 (USM users, their VACM view, our PDU application); returns
        its UDP transport, to which the listening socket's protocol hands v3 messages."""
        transport_cls = udp6.Udp6AsyncioTransport if self._listen.ipv6 else udp.UdpAsyncioTransport
        domain = udp6.DOMAIN_NAME if self._listen.ipv6 else udp.DOMAIN_NAME
        transport = transport_cls(loop=loop)
        pysnmp_config.add_transport(engine, domain, transport)
        for user in self._users:
            pysnmp_config.add_v3_user(
                engine,
                user.name,
                user.auth_protocol,
                user.auth_key,
                user.priv_protocol,
                user.priv_key,
            )
            pysnmp_config.add_vacm_user(
                engine, _SECURITY_MODEL_USM, user.name, "authPriv", readSubTree=VIEW_ROOT
            )
        self._v3 = _V3Responder(engine, self.responder)
        return transport

    async def _open_trap_endpoints(self, loop: asyncio.AbstractEventLoop) -> None:
        addresses: list[tuple[tuple[Any, ...], str]] = []
        for target in self._targets:
            ep = target.endpoint
            try:
                infos = await loop.getaddrinfo(
                    ep.host, ep.port, family=ep.family, type=socket.SOCK_DGRAM
                )
            except OSError as exc:
                raise ConfigError(f"trap target {ep}: cannot resolve {ep.host!r}: {exc}") from None
            family, _, _, _, sockaddr = infos[0]
            if family not in self._trap_endpoints:
                transport, _ = await loop.create_datagram_endpoint(_TrapProtocol, family=family)
                self._trap_endpoints[family] = transport
            addresses.append((sockaddr, target.community))
        self._trap_addresses = addresses

    async def stop(self) -> None:
        """Close the sockets; pending requests are dropped. Safe to call twice."""
        engine, self._engine = self._engine, None
        if engine is not None:
            self._close_engine(engine)
        self._close_trap_endpoints()
        await asyncio.sleep(0)  # let the transports' close callbacks run
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()  # normally closed with its transport already; then a no-op
        self._bound = None

    def _close_engine(self, engine: Any) -> None:
        v3, self._v3 = self._v3, None
        if v3 is not None:
            v3.close(engine)
        dispatcher = engine.transport_dispatcher
        if dispatcher is not None:
            dispatcher.close_dispatcher()
            engine.unregister_transport_dispatcher()

    def _close_trap_endpoints(self) -> None:
        for transport in self._trap_endpoints.values():
            transport.close()
        self._trap_endpoints.clear()
        self._trap_addresses = []

    # --- notifications ----------------------------------------------------------------

    async def send_notification(self, trap_oid: Oid, varbinds: list[tuple[Oid, Value]]) -> int:
        """Send one SNMPv2c trap (sysUpTime.0, snmpTrapOID.0 = `trap_oid`, then `varbinds`) to
        every trap target; returns how many datagrams went out (unacknowledged, as traps are).
        Call it in the agent's event loop (from another thread: run_coroutine_threadsafe).
        Raises OidTreeError for an invalid OID or value, RuntimeError when not started."""
        if self._engine is None:
            raise RuntimeError("the standalone agent is not started")
        check_oid(trap_oid, "trap OID")
        pdu_varbinds: list[tuple[Any, Any]] = [
            (rfc1902.ObjectName(SYS_UPTIME_0), rfc1902.TimeTicks(self.uptime_ticks)),
            (rfc1902.ObjectName(SNMP_TRAP_OID_0), rfc1902.ObjectIdentifier(trap_oid)),
        ]
        for oid, value in varbinds:
            check_oid(oid)
            if type(value) is not Value:
                raise OidTreeError(f"{oid}: not a Value: {value!r}")
            check_value(value)
            pdu_varbinds.append((rfc1902.ObjectName(oid), to_pysnmp_value(value)))
        pdu = v2c.SNMPv2TrapPDU()
        v2c.apiTrapPDU.set_defaults(pdu)
        v2c.apiTrapPDU.set_varbinds(pdu, pdu_varbinds)
        sent = 0
        encoded: dict[str, bytes] = {}
        for sockaddr, community in self._trap_addresses:
            data = encoded.get(community)
            if data is None:
                msg = v2c.Message()
                v2c.apiMessage.set_defaults(msg)
                v2c.apiMessage.set_community(msg, community)
                v2c.apiMessage.set_pdu(msg, pdu)
                data = encoded[community] = _ber_encoder.encode(msg)
            family = socket.AF_INET6 if len(sockaddr) == 4 else socket.AF_INET
            try:
                self._trap_endpoints[family].sendto(data, sockaddr)
            except OSError as exc:
                log.warning("standalone agent: trap to %s failed: %s", sockaddr[:2], exc)
            else:
                sent += 1
        return sent
