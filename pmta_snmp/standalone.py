"""Standalone SNMP agent for hosts without snmpd: serves the OidTree with pysnmp 7 (asyncio).

The AgentX subagent is the main path; this agent answers the same immutable OID tree by itself.

- SNMPv2c with one read-only community, SNMPv3 USM users at authPriv only (SHA-1/SHA-2
  authentication, AES privacy). SNMPv1 is not served (it cannot carry Counter64): v1 messages are
  dropped unanswered. Nothing is ever writable: every Set fails with noAccess.
- Requests are answered by `_TreeInstrumentation`, a pysnmp MIB instrumentation controller that
  looks the OIDs up in the current `OidTree` by binary search, registered as the default
  context of an `SnmpContext` served by pysnmp's Get/Next/Set command responders and by
  `_BulkResponder` (GetBulk in one pass, cut to fit the manager's message size). The tree is
  fetched from `tree_getter` once per request, so a tree swap after a poll is seen by the next
  request; nothing is built or copied per request.
- Only OIDs under 1.3.6.1 (`VIEW_ROOT`, the VACM read view) are served.
- Notifications go out as SNMPv2c traps (sysUpTime.0, snmpTrapOID.0, then the objects) to every
  configured trap target, from a separate UDP socket.
- Safe by default: the community `public` on a non-loopback address is refused unless
  `snmp.allow_public_community` is set.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pysnmp.carrier.asyncio.dgram import udp, udp6
from pysnmp.entity import config as pysnmp_config
from pysnmp.entity.engine import SnmpEngine
from pysnmp.entity.rfc3413 import cmdrsp
from pysnmp.entity.rfc3413.context import SnmpContext
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.proto.api import v2c
from pysnmp.smi import error as smi_error

from pmta_snmp.config import ConfigError, SnmpSection, SnmpUser, read_secret
from pmta_snmp.mib.snapshot import (
    Oid,
    OidTree,
    OidTreeError,
    SnmpType,
    Value,
    check_oid,
    check_value,
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

# pysnmp's BER encoder (pyasn1 ships no type hints; mypy only ignores pysnmp's missing ones).
_ber_encoder: Any = importlib.import_module("pyasn1.codec.ber.encoder")

DEFAULT_COMMUNITY: Final = "public"
VIEW_ROOT: Final[Oid] = (1, 3, 6, 1)
"""The read view: every served OID lies under it (the VACM view of every principal)."""
_VIEW_END: Final[Oid] = (1, 3, 6, 2)

SYS_UPTIME_0: Final[Oid] = (1, 3, 6, 1, 2, 1, 1, 3, 0)
SNMP_TRAP_OID_0: Final[Oid] = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)

_COMMUNITY_INDEX: Final = "pmta-snmp-ro"
_SECURITY_MODEL_V2C: Final = 2
_SECURITY_MODEL_USM: Final = 3
_SECURITY_LEVEL_AUTH_PRIV: Final = 3
_MP_MODEL_V1: Final = 0
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


# --- the instrumentation controller ------------------------------------------------------

_VIEW_ROOT_NAME: Final = rfc1902.ObjectName(VIEW_ROOT)
_REQUEST_CONTEXT: Final = "rfc3412.receiveMessage:request"


def _successor(tree: OidTree, oid: Oid) -> tuple[Oid, Value] | None:
    """The first entry after `oid` inside the view, or None (endOfMibView)."""
    if oid < VIEW_ROOT:
        return tree.next_after(VIEW_ROOT, True, _VIEW_END)
    if oid < _VIEW_END:
        return tree.next_after(oid, False, _VIEW_END)
    return None


_VARBIND_OVERHEAD: Final = 12  # tag and length octets of varbind, name and value, rounded up
_FIXED_SIZES: Final[dict[SnmpType, int]] = {
    SnmpType.INTEGER: 4,
    SnmpType.COUNTER32: 5,
    SnmpType.GAUGE32: 5,
    SnmpType.TIME_TICKS: 5,
    SnmpType.COUNTER64: 9,
    SnmpType.NULL: 0,
}


def _oid_size(oid: Oid) -> int:
    """An upper bound of the BER content length of `oid`."""
    return sum(1 if s < 128 else (s.bit_length() + 6) // 7 for s in oid)


def _value_size(value: Value) -> int:
    """An upper bound of the BER content length of `value`."""
    fixed = _FIXED_SIZES.get(value.type)
    if fixed is not None:
        return fixed
    v = value.value
    if isinstance(v, bytes):
        return len(v)
    if isinstance(v, tuple):
        return _oid_size(v) + 2
    return 0


class _TreeInstrumentation:
    """A pysnmp MIB instrumentation controller (duck-typed `AbstractMibInstrumController`)
    answering Get, GetNext and (through `_BulkResponder`) GetBulk from the current OidTree.

    pysnmp's command responders call `read_variables` / `read_next_variables` /
    `write_variables` with the request's (ObjectName, value) pairs and the keyword context
    (`snmpEngine`, `acFun` = the responder's VACM check, `cbCtx`) and expect a list of
    (name, value) pairs back, or an `smi.error` exception naming the failing index.
    """

    def __init__(self, tree_getter: Callable[[], OidTree]) -> None:
        self._tree_getter = tree_getter

    # Access control: once per call, not per varbind. The view is one subtree (VIEW_ROOT) and
    # the controller never answers outside it, so one VACM check on the view root decides for
    # every varbind. SNMPv3 must be authPriv: USM already refuses lower levels for our users,
    # and pysnmp's VACM access lookup may fall back to entries of another security level, so
    # the level is checked here as well.
    def _authorize(self, context: dict[str, Any]) -> None:
        ac_fun = context.get("acFun")
        if ac_fun is None:  # called by pysnmp internals, not for a request
            return
        context["idx"] = 0
        engine = context["snmpEngine"]
        request = engine.observer.get_execution_context(_REQUEST_CONTEXT)
        if (
            request["securityModel"] == _SECURITY_MODEL_USM
            and request["securityLevel"] != _SECURITY_LEVEL_AUTH_PRIV
        ):
            raise smi_error.AuthorizationError(name=_VIEW_ROOT_NAME, idx=0)
        if ac_fun("read", (_VIEW_ROOT_NAME, None), **context):  # True = not in view
            raise smi_error.AuthorizationError(name=_VIEW_ROOT_NAME, idx=0)

    def _tree(self) -> OidTree:
        try:
            return self._tree_getter()
        except Exception:
            log.exception("standalone agent: the OID tree getter failed")
            raise smi_error.GenError(idx=0) from None

    def read_variables(self, *var_binds: Any, **context: Any) -> list[tuple[Any, Any]]:
        """Get: the value, else noSuchInstance under a known object, else noSuchObject."""
        self._authorize(context)
        tree = self._tree()
        out: list[tuple[Any, Any]] = []
        for name, _ in var_binds:
            oid: Oid = name.asTuple()
            in_view = VIEW_ROOT <= oid < _VIEW_END
            value = tree.get(oid) if in_view else None
            if value is not None:
                out.append((name, _CONVERTERS[value.type](value.value)))
            elif in_view and tree.has_object(oid):
                out.append((name, rfc1905.noSuchInstance))
            else:
                out.append((name, rfc1905.noSuchObject))
        return out

    def read_next_variables(self, *var_binds: Any, **context: Any) -> list[tuple[Any, Any]]:
        """GetNext: the first OID after each name, or the name with endOfMibView."""
        self._authorize(context)
        tree = self._tree()
        out: list[tuple[Any, Any]] = []
        for name, _ in var_binds:
            found = _successor(tree, name.asTuple())
            if found is None:
                out.append((name, rfc1905.endOfMibView))
            else:
                value = found[1]
                out.append((rfc1902.ObjectName(found[0]), _CONVERTERS[value.type](value.value)))
        return out

    def read_bulk_variables(
        self,
        non_repeaters: list[tuple[Any, Any]],
        repeaters: list[tuple[Any, Any]],
        max_repetitions: int,
        *,
        max_varbinds: int,
        max_bytes: int,
        **context: Any,
    ) -> list[tuple[Any, Any]]:
        """GetBulk in one pass (RFC 3416 §4.2.3): the successors of the non-repeaters, then up
        to `max_repetitions` rows of successors of the repeaters. A repeater at the end keeps
        answering endOfMibView; the first row where every repeater is at the end is the last.
        The response stops before `max_varbinds` varbinds or about `max_bytes` encoded octets
        (a response pysnmp cannot send whole would be dropped)."""
        self._authorize(context)
        tree = self._tree()
        out: list[tuple[Any, Any]] = []
        budget = max_bytes
        for name, _ in non_repeaters:
            oid: Oid = name.asTuple()
            found = _successor(tree, oid)
            if found is None:
                out.append((name, rfc1905.endOfMibView))
                budget -= _oid_size(oid) + _VARBIND_OVERHEAD
            else:
                value = found[1]
                out.append((rfc1902.ObjectName(found[0]), _CONVERTERS[value.type](value.value)))
                budget -= _oid_size(found[0]) + _value_size(value) + _VARBIND_OVERHEAD
        if budget < 0:  # RFC 3416 §4.2.3: not even the non-repeaters fit
            raise smi_error.TooBigError(idx=0)
        names: list[Any] = [name for name, _ in repeaters]
        oids: list[Oid] = [name.asTuple() for name in names]
        at_end = [False] * len(oids)
        for _ in range(max_repetitions if oids else 0):
            for i, oid in enumerate(oids):
                if len(out) >= max_varbinds:
                    return out
                found = None if at_end[i] else _successor(tree, oid)
                if found is None:
                    at_end[i] = True
                    budget -= _oid_size(oid) + _VARBIND_OVERHEAD
                    if budget < 0:
                        return out
                    out.append((names[i], rfc1905.endOfMibView))
                    continue
                next_oid, value = found
                budget -= _oid_size(next_oid) + _value_size(value) + _VARBIND_OVERHEAD
                if budget < 0:
                    return out
                names[i] = rfc1902.ObjectName(next_oid)
                oids[i] = next_oid
                out.append((names[i], _CONVERTERS[value.type](value.value)))
            if all(at_end):
                break
        return out

    def write_variables(self, *var_binds: Any, **context: Any) -> list[tuple[Any, Any]]:
        """Set: never. No principal has a write view, so RFC 3416 §4.2.5 says noAccess."""
        name = var_binds[0][0] if var_binds else _VIEW_ROOT_NAME
        raise smi_error.NoAccessError(name=name, idx=0)


_MAX_BULK_VARBINDS: Final = 100  # like net-snmp's maxGetbulkResponses
_PDU_OVERHEAD: Final = 128  # request-id, error fields, context engine id/name, headers


class _BulkResponder(cmdrsp.BulkCommandResponder):  # type: ignore[misc]
    """GetBulk answered by one `read_bulk_variables` call instead of pysnmp's one
    `read_next_variables` call per repetition; stops at the end of the MIB view and before the
    response outgrows the manager's maximum message size."""

    max_varbinds = _MAX_BULK_VARBINDS

    def handle_management_operation(
        self, snmpEngine: Any, stateReference: Any, contextName: Any, PDU: Any
    ) -> None:
        non_repeaters = max(int(v2c.apiBulkPDU.get_non_repeaters(PDU)), 0)
        max_repetitions = max(int(v2c.apiBulkPDU.get_max_repetitions(PDU)), 0)
        var_binds = list(v2c.apiPDU.get_varbinds(PDU))
        n = min(non_repeaters, len(var_binds))
        instrum = self.snmpContext.get_mib_instrum(contextName)
        context = {"snmpEngine": snmpEngine, "acFun": self.verify_access, "cbCtx": self.cbCtx}
        rsp = instrum.read_bulk_variables(
            var_binds[:n],
            var_binds[n:],
            max_repetitions,
            max_varbinds=max(self.max_varbinds, n),
            max_bytes=self._max_response_size(stateReference) - _PDU_OVERHEAD,
            **context,
        )
        self.send_varbinds(snmpEngine, stateReference, 0, 0, rsp)
        self.release_state_information(stateReference)

    def _max_response_size(self, state_reference: Any) -> int:
        # The request's maxSizeResponseScopedPDU, kept by CommandResponderBase.process_pdu in
        # its private per-request table (index 9); 65507 - 128 (pysnmp's v2c value) otherwise.
        pending: Any = getattr(self, "_CommandResponderBase__pendingReqs", None) or {}
        try:
            return int(pending[state_reference][9])
        except (KeyError, TypeError, IndexError, ValueError):
            return 65507 - 128


# --- notifications -----------------------------------------------------------------------


class _TrapProtocol(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        log.warning("standalone agent: sending a trap failed: %s", exc)


@dataclass(frozen=True, slots=True)
class _TrapTarget:
    endpoint: UdpEndpoint
    community: str


# --- the agent ---------------------------------------------------------------------------


class StandaloneAgent:
    """An SNMP agent serving `tree_getter()` on `snmp.listen` (v2c read-only community, v3 USM).

    Secrets are read and the configuration checked in the constructor (ConfigError); the
    sockets are opened by `start()` and closed by `stop()`, both run in the serving event loop.
    """

    def __init__(
        self,
        tree_getter: Callable[[], OidTree],
        snmp: SnmpSection,
        *,
        community: str | None = None,
    ) -> None:
        self._tree_getter = tree_getter
        self._snmp = snmp
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
        self._engine: Any = None
        self._sock: socket.socket | None = None
        self._bound: tuple[str, int] | None = None
        self._started_at = time.monotonic()
        self._trap_endpoints: dict[socket.AddressFamily, asyncio.DatagramTransport] = {}
        self._trap_addresses: list[tuple[tuple[Any, ...], str]] = []

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
        """Bind the socket and register the agent with pysnmp in the running event loop."""
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

        engine = SnmpEngine()
        try:
            transport = self._configure(engine, loop, sock)
            # pysnmp creates the asyncio endpoint in a task: wait for it, so that the agent
            # answers once start() returns and stop() right after closes a real transport.
            endpoint = getattr(transport, "_lport", None)
            if isinstance(endpoint, asyncio.Future):
                await endpoint
            await self._open_trap_endpoints(loop)
        except BaseException:
            sock.close()
            self._close_engine(engine)
            self._close_trap_endpoints()
            self._bound = None
            raise
        self._engine = engine
        self._sock = sock
        self._started_at = time.monotonic()
        log.info(
            "standalone SNMP agent listening on %s:%d (v2c community, %d v3 user(s), "
            "%d trap target(s))",
            self._bound[0],
            self._bound[1],
            len(self._users),
            len(self._targets),
        )

    def _configure(self, engine: Any, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> Any:
        """Configure the pysnmp engine; returns its UDP transport."""
        # SNMPv1 cannot carry Counter64 and is not offered: drop v1 messages unanswered.
        engine.message_processing_subsystems.pop(_MP_MODEL_V1, None)
        transport_cls = udp6.Udp6AsyncioTransport if self._listen.ipv6 else udp.UdpAsyncioTransport
        domain = udp6.DOMAIN_NAME if self._listen.ipv6 else udp.DOMAIN_NAME
        transport = transport_cls(loop=loop).open_server_mode(sock=sock)
        pysnmp_config.add_transport(engine, domain, transport)

        pysnmp_config.add_v1_system(engine, _COMMUNITY_INDEX, self._community)
        pysnmp_config.add_vacm_user(
            engine, _SECURITY_MODEL_V2C, _COMMUNITY_INDEX, "noAuthNoPriv", readSubTree=VIEW_ROOT
        )
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

        context = SnmpContext(engine)
        context.unregister_context_name(b"")
        context.register_context_name(b"", _TreeInstrumentation(self._tree_getter))
        cmdrsp.GetCommandResponder(engine, context)
        cmdrsp.NextCommandResponder(engine, context)
        _BulkResponder(engine, context)
        cmdrsp.SetCommandResponder(engine, context)
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

    @staticmethod
    def _close_engine(engine: Any) -> None:
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
