"""The standalone agent without the network: the instrumentation controller that answers from the
OidTree (Get, GetNext, GetBulk, Set, access checks), value mapping, address parsing and the
configuration checks done before anything is bound."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.smi import error as smi_error

from pmta_snmp.config import ConfigError, SnmpSection, SnmpUser, TrapTarget
from pmta_snmp.mib.snapshot import Oid, OidTree, OidTreeError, SnmpType, Value
from pmta_snmp.standalone import (
    StandaloneAgent,
    UdpEndpoint,
    _TreeInstrumentation,
    parse_udp_endpoint,
    to_pysnmp_value,
)

BASE: Oid = (1, 3, 6, 1, 4, 1, 32473, 99)
A: Oid = (*BASE, 1, 1, 0)
B: Oid = (*BASE, 1, 2, 0)
C: Oid = (*BASE, 1, 3, 0)
OUTSIDE: Oid = (1, 3, 6, 2, 1, 0)  # an OidTree may hold it; the agent never serves it

TREE = OidTree(
    [
        (A, Value(SnmpType.INTEGER, -1)),
        (B, Value(SnmpType.OCTET_STRING, b"x" * 40)),
        (C, Value(SnmpType.COUNTER64, 2**64 - 1)),
        (OUTSIDE, Value(SnmpType.INTEGER, 5)),
    ],
    [A[:-1], B[:-1], C[:-1], OUTSIDE[:-1]],
)


def name(oid: Oid) -> Any:
    return rfc1902.ObjectName(oid)


def vb(*oids: Oid) -> list[tuple[Any, Any]]:
    return [(name(oid), rfc1905.noSuchObject) for oid in oids]


def show(var_binds: list[tuple[Any, Any]]) -> list[tuple[Oid, str, object]]:
    """(OID, pysnmp type name, Python value) for comparison."""
    out: list[tuple[Oid, str, object]] = []
    for n, v in var_binds:
        kind = type(v).__name__
        if kind in ("NoSuchObject", "NoSuchInstance", "EndOfMibView", "Null"):
            out.append((tuple(n), kind, None))
        elif kind in ("OctetString", "Opaque", "IpAddress"):
            out.append((tuple(n), kind, bytes(v)))
        elif kind == "ObjectIdentifier":
            out.append((tuple(n), kind, tuple(v)))
        else:
            out.append((tuple(n), kind, int(v)))
    return out


@pytest.fixture
def instrum() -> _TreeInstrumentation:
    return _TreeInstrumentation(lambda: TREE)


# --- values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (Value(SnmpType.INTEGER, -(2**31)), "Integer32", -(2**31)),
        (Value(SnmpType.OCTET_STRING, b"\x00abc"), "OctetString", b"\x00abc"),
        (Value(SnmpType.NULL), "Null", None),
        (Value(SnmpType.OBJECT_IDENTIFIER, (1, 3, 6)), "ObjectIdentifier", (1, 3, 6)),
        (Value(SnmpType.OBJECT_IDENTIFIER, ()), "ObjectIdentifier", (0, 0)),
        (Value(SnmpType.IP_ADDRESS, b"\xc0\x00\x02\x01"), "IpAddress", b"\xc0\x00\x02\x01"),
        (Value(SnmpType.COUNTER32, 2**32 - 1), "Counter32", 2**32 - 1),
        (Value(SnmpType.GAUGE32, 7), "Gauge32", 7),
        (Value(SnmpType.TIME_TICKS, 100), "TimeTicks", 100),
        (Value(SnmpType.OPAQUE, b"\x9f\x78"), "Opaque", b"\x9f\x78"),
        (Value(SnmpType.COUNTER64, 2**64 - 1), "Counter64", 2**64 - 1),
    ],
)
def test_value_mapping(value: Value, kind: str, expected: object) -> None:
    assert show([(name((1, 3)), to_pysnmp_value(value))]) == [((1, 3), kind, expected)]


# --- Get / GetNext / GetBulk / Set -----------------------------------------------------------


def test_get(instrum: _TreeInstrumentation) -> None:
    out = instrum.read_variables(*vb(A, (*A[:-1], 1), (*BASE, 9, 0), OUTSIDE, (1, 2)))
    assert show(out) == [
        (A, "Integer32", -1),
        ((*A[:-1], 1), "NoSuchInstance", None),
        ((*BASE, 9, 0), "NoSuchObject", None),
        (OUTSIDE, "NoSuchObject", None),
        ((1, 2), "NoSuchObject", None),
    ]


def test_getnext_stays_inside_the_view(instrum: _TreeInstrumentation) -> None:
    out = instrum.read_next_variables(*vb((0,), (1, 3, 6, 1), A, B, C, OUTSIDE))
    assert show(out) == [
        (A, "Integer32", -1),
        (A, "Integer32", -1),
        (B, "OctetString", b"x" * 40),
        (C, "Counter64", 2**64 - 1),
        (C, "EndOfMibView", None),
        (OUTSIDE, "EndOfMibView", None),
    ]


def test_the_tree_is_fetched_per_request() -> None:
    trees = [TREE, OidTree([(A, Value(SnmpType.INTEGER, 2))], [A[:-1]])]
    instrum = _TreeInstrumentation(lambda: trees[0])
    assert show(instrum.read_variables(*vb(A))) == [(A, "Integer32", -1)]
    trees.reverse()
    assert show(instrum.read_variables(*vb(A))) == [(A, "Integer32", 2)]
    assert show(instrum.read_next_variables(*vb(A))) == [(A, "EndOfMibView", None)]


def bulk(
    instrum: _TreeInstrumentation,
    non_repeaters: list[Oid],
    repeaters: list[Oid],
    reps: int,
    *,
    max_varbinds: int = 100,
    max_bytes: int = 65000,
) -> list[tuple[Oid, str, object]]:
    return show(
        instrum.read_bulk_variables(
            vb(*non_repeaters),
            vb(*repeaters),
            reps,
            max_varbinds=max_varbinds,
            max_bytes=max_bytes,
        )
    )


def test_getbulk_interleaves_and_stops_after_the_first_all_end_row(
    instrum: _TreeInstrumentation,
) -> None:
    assert bulk(instrum, [(1,)], [A, B], 10) == [
        (A, "Integer32", -1),  # non-repeater
        (B, "OctetString", b"x" * 40),
        (C, "Counter64", 2**64 - 1),
        (C, "Counter64", 2**64 - 1),
        (C, "EndOfMibView", None),  # the second repeater is at the end ...
        (C, "EndOfMibView", None),  # ... the first one too: this row is the last
        (C, "EndOfMibView", None),
    ]
    assert bulk(instrum, [], [], 10) == []
    assert bulk(instrum, [C, A], [], 10) == [
        (C, "EndOfMibView", None),
        (B, "OctetString", b"x" * 40),
    ]
    assert bulk(instrum, [A], [A], 0) == [(B, "OctetString", b"x" * 40)]


def test_getbulk_limits(instrum: _TreeInstrumentation) -> None:
    assert bulk(instrum, [], [(1,)], 10, max_varbinds=2) == [
        (A, "Integer32", -1),
        (B, "OctetString", b"x" * 40),
    ]
    # the 40-octet string does not fit the byte budget: the response ends before it
    assert bulk(instrum, [], [(1,)], 10, max_bytes=40) == [(A, "Integer32", -1)]
    with pytest.raises(smi_error.TooBigError):
        bulk(instrum, [A], [], 1, max_bytes=10)


def test_set_is_always_refused(instrum: _TreeInstrumentation) -> None:
    for oid in (A, (*BASE, 9, 0)):
        with pytest.raises(smi_error.NoAccessError) as info:
            instrum.write_variables((name(oid), rfc1902.Integer32(1)))
        assert info.value["idx"] == 0


def test_getter_failure_is_a_gen_err() -> None:
    def broken() -> OidTree:
        raise RuntimeError("boom")

    with pytest.raises(smi_error.GenError):
        _TreeInstrumentation(broken).read_variables(*vb(A))


# --- access checks --------------------------------------------------------------------------


class _Observer:
    def __init__(self, model: int, level: int) -> None:
        self.request = {"securityModel": model, "securityLevel": level}

    def get_execution_context(self, point: str) -> dict[str, int]:
        assert point == "rfc3412.receiveMessage:request"
        return self.request


class _Engine:
    def __init__(self, model: int, level: int) -> None:
        self.observer = _Observer(model, level)


@pytest.mark.parametrize(
    ("model", "level", "not_in_view", "allowed"),
    [
        (2, 1, None, True),  # v2c community
        (3, 3, None, True),  # v3 authPriv
        (3, 2, None, False),  # v3 authNoPriv: refused even if VACM would let it through
        (3, 1, None, False),
        (2, 1, True, False),  # VACM: not in the view
    ],
)
def test_access_is_checked_once_per_call(
    instrum: _TreeInstrumentation,
    model: int,
    level: int,
    not_in_view: bool | None,
    allowed: bool,
) -> None:
    calls: list[tuple[str, Oid]] = []

    def ac_fun(view: str, var_bind: tuple[Any, Any], **context: Any) -> bool | None:
        calls.append((view, tuple(var_bind[0])))
        assert context["idx"] == 0
        return not_in_view

    context = {"snmpEngine": _Engine(model, level), "acFun": ac_fun, "cbCtx": None}
    if allowed:
        assert len(instrum.read_next_variables(*vb(A, B, C), **context)) == 3
        assert calls == [("read", (1, 3, 6, 1))]
    else:
        with pytest.raises(smi_error.AuthorizationError):
            instrum.read_variables(*vb(A), **context)
        with pytest.raises(smi_error.AuthorizationError):
            instrum.read_bulk_variables([], vb(A), 5, max_varbinds=10, max_bytes=1000, **context)


# --- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp:127.0.0.1:1161", UdpEndpoint("127.0.0.1", 1161)),
        ("127.0.0.1:0", UdpEndpoint("127.0.0.1", 0)),
        ("udp:161", UdpEndpoint("0.0.0.0", 161)),
        ("udp:localhost:1161", UdpEndpoint("127.0.0.1", 1161)),
        ("10.0.0.1", UdpEndpoint("10.0.0.1", 162)),
        ("UDP:nms.example.com:10162", UdpEndpoint("nms.example.com", 10162)),
        ("udp6:[::1]:1161", UdpEndpoint("::1", 1161, ipv6=True)),
        ("[2001:db8::1]:162", UdpEndpoint("2001:db8::1", 162, ipv6=True)),
        # a bare IPv6 literal is only the address: a port needs the brackets
        ("udp6:::1:1161", UdpEndpoint("::1:1161", 162, ipv6=True)),
        ("udp6:::1", UdpEndpoint("::1", 162, ipv6=True)),
        ("udp6:2001:db8::5", UdpEndpoint("2001:db8::5", 162, ipv6=True)),
        ("udp6:1161", UdpEndpoint("::", 1161, ipv6=True)),
    ],
)
def test_parse_udp_endpoint(text: str, expected: UdpEndpoint) -> None:
    assert parse_udp_endpoint(text, what="x", default_port=162) == expected


@pytest.mark.parametrize(
    "text",
    [
        "tcp:127.0.0.1:161",
        "udp:127.0.0.1:99999",
        "udp:127.0.0.1:port",
        "udp6:127.0.0.1:161",
        "udp:bad host:1",
        "[::1",
        "unix:/var/agentx/master",
    ],
)
def test_parse_udp_endpoint_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match=r"snmp\.listen"):
        parse_udp_endpoint(text, what="snmp.listen", default_port=161)


# --- configuration checks --------------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, text in {"good": "long-enough-1", "short": "short", "empty": ""}.items():
        path = tmp_path / key
        path.write_text(text, encoding="utf-8")
        out[key] = str(path)
    out["missing"] = str(tmp_path / "nope")
    return out


def agent(snmp: SnmpSection, **kwargs: Any) -> StandaloneAgent:
    return StandaloneAgent(lambda: TREE, snmp, **kwargs)


def test_user_checks(keys: dict[str, str]) -> None:
    good, local = keys["good"], "udp:127.0.0.1:0"

    def user(**kw: str) -> SnmpSection:
        fields = {"name": "ops", "auth_key_file": good, "priv_key_file": good, **kw}
        return SnmpSection(listen=local, users=(SnmpUser(**fields),))

    agent(user(auth_protocol="SHA-512", priv_protocol="aes-256-c"))
    for kw, message in [
        ({"auth_protocol": "md5"}, "unsupported protocol 'md5'"),
        ({"priv_protocol": "des"}, "unsupported protocol 'des'"),
        ({"auth_key_file": keys["short"]}, "at least 8 characters"),
        ({"priv_key_file": ""}, "priv_key_file is required"),
        ({"auth_key_file": keys["missing"]}, "cannot read"),
        ({"priv_key_file": keys["empty"]}, "is empty"),
        ({"name": ""}, "1..32 characters"),
    ]:
        with pytest.raises(ConfigError, match=message):
            agent(user(**kw))
    twice = SnmpUser("ops", "sha", good, "aes", good)
    with pytest.raises(ConfigError, match="unique"):
        agent(SnmpSection(listen=local, users=(twice, twice)))


def test_listen_and_community_checks(keys: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="give an IP address"):
        agent(SnmpSection(listen="udp:agent.example.com:161", community_file=keys["good"]))
    with pytest.raises(ConfigError, match="is empty"):
        agent(SnmpSection(listen="udp:127.0.0.1:0", community_file=keys["empty"]))
    with pytest.raises(ConfigError, match="must not be empty"):
        agent(SnmpSection(listen="udp:127.0.0.1:0"), community="")
    with pytest.raises(ConfigError, match=r"snmp\.trap_targets\[0\]\.address"):
        agent(SnmpSection(listen="udp:127.0.0.1:0", trap_targets=(TrapTarget("tcp:x:1"),)))
    # a secret community may listen anywhere; the default one only on loopback
    agent(SnmpSection(listen="udp:0.0.0.0:161", community_file=keys["good"]))
    agent(SnmpSection(listen="udp:0.0.0.0:161"), community="not-public")
    with pytest.raises(ConfigError, match="refusing to serve the default community"):
        agent(SnmpSection(listen="udp:[::]:161"))


def test_lifecycle_and_notification_checks() -> None:
    snmp = SnmpSection(listen="udp:127.0.0.1:0", trap_targets=(TrapTarget("udp:127.0.0.1:9"),))
    sa = agent(snmp)

    def running() -> bool:  # a call, so mypy does not narrow the property across awaits
        return sa.running

    with pytest.raises(RuntimeError, match="not started"):
        _ = sa.address

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="not started"):
            await sa.send_notification((*BASE, 0, 1), [])
        await sa.start()
        try:
            assert running()
            assert sa.address[0] == "127.0.0.1"
            assert sa.address[1] > 0
            with pytest.raises(RuntimeError, match="already started"):
                await sa.start()
            with pytest.raises(OidTreeError):
                await sa.send_notification((), [])
            with pytest.raises(OidTreeError):
                await sa.send_notification((*BASE, 0, 1), [(A, Value(SnmpType.GAUGE32, -1))])
            assert await sa.send_notification((*BASE, 0, 1), [(A, Value(SnmpType.GAUGE32, 1))]) == 1
        finally:
            await sa.stop()
        assert not running()
        await sa.stop()

    asyncio.run(scenario())


def test_a_busy_port_is_a_config_error() -> None:
    async def scenario() -> None:
        first = agent(SnmpSection(listen="udp:127.0.0.1:0"))
        await first.start()
        try:
            port = first.address[1]
            second = agent(SnmpSection(listen=f"udp:127.0.0.1:{port}"))
            with pytest.raises(ConfigError, match="cannot bind"):
                await second.start()
            assert not second.running
        finally:
            await first.stop()

    asyncio.run(scenario())
