"""layout.py: varbinds from hand-built snapshots, index encoding, bounds, clamps, re-basing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from itertools import pairwise

import pytest

from pmta_snmp.mib.health import AgentHealth, Thresholds, counters_restarted
from pmta_snmp.mib.layout import (
    ENTERPRISE,
    LICENSE_NEVER_DAYS,
    MAX_DOMAIN_OCTETS,
    MAX_VMTA_OCTETS,
    NOTIFICATIONS,
    OBJECTS,
    SNMP_TRAP_OID,
    Kind,
    Notification,
    base_oid,
    build_varbinds,
    counter32,
    counter64,
    date_and_time,
    decode_string_index,
    encode_string_index,
    gauge32,
    integer32,
    layout,
    notification_varbinds,
    object_prefixes,
    oid,
    utf8_text,
)
from pmta_snmp.mib.rebase import render_mib
from pmta_snmp.mib.snapshot import MAX_OID_LEN, Oid, OidTree, SnmpType, Value
from pmta_snmp.model import (
    ConnCounts,
    Connections,
    Counts,
    Domain,
    License,
    ListCompleteness,
    Lists,
    ListSource,
    Queue,
    QueueMode,
    QueueTypeCounts,
    Resolver,
    Runtime,
    Snapshot,
    Spool,
    Status,
    Traffic,
    TrafficWindow,
    Vmta,
)
from pmta_snmp.outcomes.view import OutcomesView

BASE = (1, 3, 6, 1, 4, 1, 32473, 25)
TODAY = date(2026, 11, 25)
G = SnmpType.GAUGE32
S = SnmpType.OCTET_STRING
I = SnmpType.INTEGER  # noqa: E741


def idx(text: str) -> Oid:
    data = text.encode()
    return (len(data), *data)


def make_snapshot(**overrides: object) -> Snapshot:
    """A small PowerMTA picture with one of everything."""
    traffic = Traffic(
        total=TrafficWindow(Counts(10, 8, 1234.9), Counts(20, 16, 5678.2), 3, 1),
        last_hr=TrafficWindow(Counts(5, 4, 12.5), Counts(6, 5, 7.0), 2, 0),
        last_min=TrafficWindow(Counts(1, 1, 1.0), Counts(300, 150, 9.9), 0, 0),
    )
    status = Status(
        traffic=traffic,
        conn=Connections(ConnCounts(2, 100, 7), ConnCounts(30, 500, 64)),
        queue_types=(
            QueueTypeCounts("smtp", 1200, 3, 512.7),
            QueueTypeCounts("bounceProcessor", 4, 1, 1.0),
        ),
        spool=Spool(100, 4, 10, 2, 12, 1250, 1_000_000),
        resolver=Resolver(50, 1, 2),
        runtime=Runtime(
            version="5.0r3",
            build_date="2024-06-01",
            host_name="mta1.example.net",
            os_name="Linux",
            time_now=datetime(2026, 11, 25, 10, 0, 0),
            startup_time=datetime(2026, 11, 24, 10, 0, 0),
            status="running",
        ),
    )
    snap = Snapshot(
        status=status,
        queues=(
            Queue(
                "example.com/vmta1",
                rcp=1000,
                kb=400.5,
                conn=5,
                paused=True,
                mode=QueueMode.BACKOFF,
                retry_time="2026-11-25 10:05:00",
                last_error="ETIMEDOUT connecting to mx.example.com",
            ),
            Queue("example.org/{default}", rcp=200),
        ),
        domains=(Domain("example.com", 1000, 400.5, 5, "ETIMEDOUT"), Domain("example.org", 200)),
        vmtas=(Vmta("vmta1", 1000, 400.5, 5, 1), Vmta("{default}", 200)),
        license=License(
            expires=date(2026, 12, 5),
            fields=(("serial", "910233"), ("licensee", "Ex Ltd"), ("issued", "2024-06-01")),
        ),
        taken_at=datetime(2026, 11, 25, 9, 0, 1, tzinfo=UTC),
        lists=Lists(
            queues=ListCompleteness(ListSource.PAGE, 2, 3, exact=False),
            domains=ListCompleteness(ListSource.PAGE, 2, 3),
            vmtas=ListCompleteness(ListSource.COMMAND, 2, 2),
        ),
    )
    return replace(snap, **overrides)  # type: ignore[arg-type]


HEALTH = AgentHealth(
    api_reachable=True,
    last_success=datetime(2026, 11, 25, 9, 0, 1, tzinfo=UTC),
    data_age_seconds=2.7,
    poll_successes=5,
    poll_failures=1,
    last_error="connection refused",
    started_at=datetime(2026, 11, 25, 8, 0, 0, tzinfo=UTC),
    counter_discontinuity=datetime(2026, 11, 25, 8, 0, 30, tzinfo=UTC),
    agent_version="0.1.0",
)


def varbinds(snap: Snapshot | None = None, **kw: object) -> dict[Oid, Value]:
    out = build_varbinds(snap, HEALTH, today=TODAY, **kw)  # type: ignore[arg-type]
    return dict(out)


def at(name: str, *index: int) -> Oid:
    return oid(name) + (index or (0,))


# --- structure -------------------------------------------------------------------------


def test_base_arc_is_the_documentation_enterprise() -> None:
    assert ENTERPRISE == 32473
    assert base_oid() == BASE
    assert oid("pmtaQueueHigh") == (*BASE, 0, 1)


def test_varbinds_are_sorted_unique_and_valid_for_an_oid_tree() -> None:
    out = build_varbinds(make_snapshot(), HEALTH, today=TODAY)
    oids = [o for o, _ in out]
    assert all(a < b for a, b in pairwise(oids))
    tree = OidTree(out, object_prefixes())  # validates every value against its type
    assert all(tree.has_object(o) for o in oids)


def test_every_object_has_an_instance_in_a_full_snapshot() -> None:
    out = varbinds(make_snapshot(), outcomes=OutcomesView.example())
    served = {o.name for o in OBJECTS if o.kind is not Kind.INDEX}
    seen = {o.name for o in OBJECTS for vb in out if vb[: len(oid(o.name))] == oid(o.name)}
    assert served <= seen
    for obj in OBJECTS:
        for vb_oid, value in out.items():
            if vb_oid[: len(oid(obj.name))] == oid(obj.name):
                assert value.type is obj.type, obj.name


def test_index_columns_are_not_served() -> None:
    prefixes = set(object_prefixes())
    assert oid("pmtaQueueDomain") not in prefixes
    assert oid("pmtaQueueRcpt") in prefixes
    assert oid("pmtaSmtpQueueRcpt") in prefixes


def test_without_a_snapshot_only_agent_and_config_objects_exist() -> None:
    out = varbinds(None)
    groups = {o[len(BASE) : len(BASE) + 2] for o in out}
    assert groups == {(1, 11), (1, 12)}
    assert out[at("pmtaAgentApiReachable")] == Value(I, 1)
    assert at("pmtaAgentDataAge") not in out  # no data, no age


# --- scalars ---------------------------------------------------------------------------


def test_status_scalars_map_from_the_model() -> None:
    out = varbinds(make_snapshot())
    assert out[at("pmtaTotalRecipientsOut")] == Value(SnmpType.COUNTER64, 20)
    assert out[at("pmtaTotalKBytesOut")] == Value(SnmpType.COUNTER64, 5678)
    assert out[at("pmtaTotalBouncesProcessed")] == Value(SnmpType.COUNTER64, 3)
    assert out[at("pmtaLastHourKBytesIn")] == Value(G, 12)
    assert out[at("pmtaLastMinuteMessagesOut")] == Value(G, 150)
    assert out[at("pmtaOutMessageRate")] == Value(G, 2500)  # 150/min = 2.5/s
    assert out[at("pmtaOutRecipientRate")] == Value(G, 5000)
    assert out[at("pmtaActiveConnOut")] == Value(G, 30)
    assert out[at("pmtaTopConnOut")] == Value(G, 64)
    assert out[at("pmtaSmtpQueueRcpt")] == Value(G, 1200)
    assert out[at("pmtaSmtpQueueKBytes")] == Value(G, 512)
    assert out[at("pmtaSpoolMaxRcp")] == Value(G, 1_000_000)
    assert out[at("pmtaDomainNamesCached")] == Value(G, 50)
    assert out[at("pmtaProductVersion")] == Value(S, b"5.0r3")
    assert out[at("pmtaRunStatus")] == Value(S, b"running")
    assert out[at("pmtaShuttingDown")] == Value(I, 2)
    assert out[at("pmtaUptime")] == Value(G, 86400)
    assert out[at("pmtaStartupTime")] == Value(S, bytes([0x07, 0xEA, 11, 24, 10, 0, 0, 0]))
    assert out[at("pmtaTrafficDiscontinuityTime")].value == bytes(
        [0x07, 0xEA, 11, 25, 8, 0, 30, 0, ord("+"), 0, 0]
    )


def test_missing_optional_values_have_no_instance() -> None:
    snap = make_snapshot(
        status=replace(make_snapshot().status, resolver=None, runtime=Runtime()), license=None
    )
    out = varbinds(snap)
    for name in ("pmtaDomainNamesCached", "pmtaProductVersion", "pmtaStartupTime", "pmtaUptime"):
        assert at(name) not in out, name
    assert at("pmtaLicenseExpires") not in out
    assert at("pmtaLicenseDaysLeft") not in out
    assert out[at("pmtaRunStatus")] == Value(S, b"unknown")


def test_smtp_scalars_are_zero_when_powermta_omits_the_smtp_queue() -> None:
    snap = make_snapshot(status=replace(make_snapshot().status, queue_types=()))
    assert varbinds(snap)[at("pmtaSmtpQueueRcpt")] == Value(G, 0)


def test_agent_health_and_thresholds() -> None:
    out = varbinds(make_snapshot(), thresholds=Thresholds(200, 100, 5, 14))
    assert out[at("pmtaAgentDataAge")] == Value(G, 2)
    assert out[at("pmtaAgentPollSuccesses")] == Value(SnmpType.COUNTER32, 5)
    assert out[at("pmtaAgentPollFailures")] == Value(SnmpType.COUNTER32, 1)
    assert out[at("pmtaAgentLastError")] == Value(S, b"connection refused")
    assert out[at("pmtaAgentVersion")] == Value(S, b"0.1.0")
    assert out[at("pmtaCfgQueueRcptRaise")] == Value(G, 200)
    assert out[at("pmtaCfgQueueRcptClear")] == Value(G, 100)
    assert out[at("pmtaCfgApiFailuresRaise")] == Value(G, 5)
    assert out[at("pmtaCfgLicenseDaysRaise")] == Value(I, 14)


def test_license_days_left_uses_powermta_date_by_default() -> None:
    snap = make_snapshot()  # PowerMTA's clock says 2026-11-25, expiry 2026-12-05
    out = dict(build_varbinds(snap, HEALTH))
    assert out[at("pmtaLicenseDaysLeft")] == Value(I, 10)
    assert out[at("pmtaLicenseExpires")] == Value(S, b"2026-12-05")
    assert out[at("pmtaLicenseSerial")] == Value(S, b"910233")


def test_license_expired_is_negative_and_never_is_int32_max() -> None:
    expired = make_snapshot(license=License(expires=date(2026, 11, 20)))
    assert varbinds(expired)[at("pmtaLicenseDaysLeft")] == Value(I, -5)
    never = varbinds(make_snapshot(license=License(never=True)))
    assert never[at("pmtaLicenseDaysLeft")] == Value(I, LICENSE_NEVER_DAYS)
    assert never[at("pmtaLicenseExpires")] == Value(S, b"never")


# --- tables ----------------------------------------------------------------------------


def test_queue_row_is_indexed_by_domain_then_vmta() -> None:
    out = varbinds(make_snapshot())
    row = idx("example.com") + idx("vmta1")
    assert out[at("pmtaQueueName", *row)] == Value(S, b"example.com/vmta1")
    assert out[at("pmtaQueueRcpt", *row)] == Value(G, 1000)
    assert out[at("pmtaQueueKBytes", *row)] == Value(G, 400)
    assert out[at("pmtaQueueConnections", *row)] == Value(G, 5)
    assert out[at("pmtaQueuePaused", *row)] == Value(I, 1)
    assert out[at("pmtaQueueMode", *row)] == Value(I, 2)
    assert out[at("pmtaQueueRetryTime", *row)] == Value(S, b"2026-11-25 10:05:00")
    assert out[at("pmtaQueueLastError", *row)].value == b"ETIMEDOUT connecting to mx.example.com"
    default = idx("example.org") + idx("{default}")
    assert out[at("pmtaQueuePaused", *default)] == Value(I, 2)
    assert out[at("pmtaQueueMode", *default)] == Value(I, 1)
    assert out[at("pmtaQueueLastError", *default)] == Value(S, b"")
    assert out[at("pmtaQueueCount")] == Value(G, 2)
    assert out[at("pmtaQueuesOmitted")] == Value(G, 0)


def test_domain_vmta_and_queue_type_rows() -> None:
    out = varbinds(make_snapshot())
    assert out[at("pmtaDomainRcpt", *idx("example.com"))] == Value(G, 1000)
    assert out[at("pmtaDomainLastError", *idx("example.com"))] == Value(S, b"ETIMEDOUT")
    assert out[at("pmtaDomainDisplayName", *idx("example.org"))] == Value(S, b"example.org")
    assert out[at("pmtaVmtaDomains", *idx("vmta1"))] == Value(G, 1)
    assert out[at("pmtaQueueTypeRcpt", *idx("bounceProcessor"))] == Value(G, 4)
    assert out[at("pmtaQueueTypeRcpt", 4, 115, 109, 116, 112)] == Value(G, 1200)  # "smtp"
    assert out[at("pmtaDomainCount")] == Value(G, 2)
    assert out[at("pmtaVmtaCount")] == Value(G, 2)


def test_string_index_sorts_by_length_first() -> None:
    snap = make_snapshot(domains=(Domain("aa.example"), Domain("b.co")))
    col = oid("pmtaDomainRcpt")
    out = build_varbinds(snap, HEALTH, today=TODAY)
    keys = [o[len(col) :] for o, _ in out if o[: len(col)] == col]
    assert keys == [idx("b.co"), idx("aa.example")]


def test_rows_over_the_index_bound_are_omitted_and_counted() -> None:
    at_bound = "a" * (MAX_DOMAIN_OCTETS - 4) + ".com"
    too_long = "b" * (MAX_DOMAIN_OCTETS - 3) + ".com"
    wide = "é" * 41  # 82 UTF-8 octets: the bound counts octets, not characters
    snap = make_snapshot(
        domains=(Domain(at_bound, 1), Domain(too_long, 2), Domain(wide, 3), Domain("", 4)),
        queues=(
            Queue(f"{at_bound}/{'v' * MAX_VMTA_OCTETS}", rcp=1),
            Queue(f"example.com/{'v' * (MAX_VMTA_OCTETS + 1)}", rcp=2),
            Queue("/vmta1", rcp=3),
        ),
        vmtas=(Vmta("v" * (MAX_VMTA_OCTETS + 1)),),
    )
    out = build_varbinds(snap, HEALTH, today=TODAY)
    vb = dict(out)
    assert vb[at("pmtaDomainCount")] == Value(G, 1)
    assert vb[at("pmtaDomainsOmitted")] == Value(G, 3)
    assert vb[at("pmtaQueueCount")] == Value(G, 1)
    assert vb[at("pmtaQueuesOmitted")] == Value(G, 2)
    assert vb[at("pmtaVmtaCount")] == Value(G, 0)
    assert vb[at("pmtaVmtasOmitted")] == Value(G, 1)
    assert at("pmtaDomainRcpt", *idx(at_bound)) in vb
    longest = max(len(o) for o, _ in out)
    assert longest == 127 <= MAX_OID_LEN  # 13 + (1 + 80) + (1 + 32)


def test_utf8_names_index_by_octets() -> None:
    snap = make_snapshot(domains=(Domain("bücher.example", 7),))
    name = "bücher.example".encode()
    assert varbinds(snap)[at("pmtaDomainRcpt", len(name), *name)] == Value(G, 7)


def test_indices_are_stable_across_polls() -> None:
    first = varbinds(make_snapshot())
    more = make_snapshot(domains=(Domain("aaa.example", 9), *make_snapshot().domains))
    second = varbinds(more)
    key = at("pmtaDomainRcpt", *idx("example.com"))
    assert first[key] == second[key]


def test_empty_tables_have_zero_counts_and_no_rows() -> None:
    out = varbinds(make_snapshot(queues=(), domains=(), vmtas=()))
    assert out[at("pmtaQueueCount")] == Value(G, 0)
    assert not any(o[: len(oid("pmtaQueueName"))] == oid("pmtaQueueName") for o in out)


# --- clamps and encodings --------------------------------------------------------------


def test_values_are_clamped_to_their_snmp_ranges() -> None:
    huge = 2**40
    snap = make_snapshot(
        status=replace(
            make_snapshot().status,
            conn=Connections(ConnCounts(-3, huge, 0), ConnCounts()),
            traffic=Traffic(total=TrafficWindow(Counts(2**64 + 5, -1, float("nan")))),
        ),
        queues=(Queue("example.com/v", rcp=huge, kb=float("inf")),),
    )
    out = varbinds(snap)
    assert out[at("pmtaActiveConnIn")] == Value(G, 0)
    assert out[at("pmtaMaxConnIn")] == Value(G, 2**32 - 1)
    assert out[at("pmtaTotalRecipientsIn")] == Value(SnmpType.COUNTER64, 5)
    assert out[at("pmtaTotalMessagesIn")] == Value(SnmpType.COUNTER64, 0)
    assert out[at("pmtaTotalKBytesIn")] == Value(SnmpType.COUNTER64, 0)
    row = idx("example.com") + idx("v")
    assert out[at("pmtaQueueRcpt", *row)] == Value(G, 2**32 - 1)
    assert out[at("pmtaQueueKBytes", *row)] == Value(G, 0)


def test_scalar_encoders() -> None:
    assert gauge32(-1) == Value(G, 0)
    assert gauge32(2**32) == Value(G, 2**32 - 1)
    assert counter32(2**32 + 3) == Value(SnmpType.COUNTER32, 3)
    assert counter64(2**64) == Value(SnmpType.COUNTER64, 0)
    assert integer32(2**40) == Value(I, 2**31 - 1)
    assert integer32(-(2**40)) == Value(I, -(2**31))


def test_long_text_is_cut_at_a_character_boundary() -> None:
    value = utf8_text("é" * 300)
    assert isinstance(value.value, bytes)
    assert len(value.value) == 254
    value.value.decode("utf-8")
    assert utf8_text(None) == Value(S, b"")


def test_date_and_time_forms() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5, 600_000)
    assert date_and_time(naive) == bytes([0x07, 0xEA, 1, 2, 3, 4, 5, 6])
    aware = datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert date_and_time(aware) == bytes([0x07, 0xEA, 1, 2, 3, 4, 5, 0, 0x2B, 0, 0])


def test_string_index_round_trip_and_bounds() -> None:
    assert encode_string_index("ab", 32) == (2, 97, 98)
    assert encode_string_index("ab", 32, implied=True) == (97, 98)
    assert encode_string_index("", 32) is None
    assert encode_string_index("x" * 33, 32) is None
    name, rest = decode_string_index((*idx("bücher"), *idx("v")))
    assert name == "bücher"
    assert decode_string_index(rest) == ("v", ())
    with pytest.raises(ValueError):
        decode_string_index((5, 1, 2))


# --- re-basing -------------------------------------------------------------------------


def test_layout_rebases_every_oid() -> None:
    lay = layout(99999)
    assert lay.base == (1, 3, 6, 1, 4, 1, 99999, 25)
    assert lay.oid("pmtaQueueRcpt")[8:] == oid("pmtaQueueRcpt")[8:]
    out = build_varbinds(make_snapshot(), HEALTH, today=TODAY, enterprise=99999)
    assert all(o[:8] == lay.base for o, _ in out)
    assert len(out) == len(build_varbinds(make_snapshot(), HEALTH, today=TODAY))


@pytest.mark.parametrize("bad", [0, -1, 2**32])
def test_invalid_enterprise_numbers_are_rejected(bad: int) -> None:
    with pytest.raises(ValueError):
        base_oid(bad)
    with pytest.raises(ValueError):
        render_mib(bad)


def test_render_mib_replaces_the_one_enterprise_number() -> None:
    text = render_mib(99999)
    assert "pmtaEnterprise OBJECT IDENTIFIER ::= { enterprises 99999 }" in text
    assert "32473" not in text
    assert render_mib(32473).count("32473") == 1


def test_render_mib_refuses_text_without_one_enterprise_definition() -> None:
    with pytest.raises(ValueError):
        render_mib(99999, source="FOO DEFINITIONS ::= BEGIN END")
    twice = render_mib(32473) + render_mib(32473)
    with pytest.raises(ValueError):
        render_mib(99999, source=twice)


# --- notifications ---------------------------------------------------------------------


def test_notifications_carry_trap_oid_value_and_threshold() -> None:
    out = notification_varbinds(
        Notification.QUEUE_HIGH, make_snapshot(), HEALTH, thresholds=Thresholds(1000, 500)
    )
    assert out == [
        (SNMP_TRAP_OID, Value(SnmpType.OBJECT_IDENTIFIER, (*BASE, 0, 1))),
        (at("pmtaSmtpQueueRcpt"), Value(G, 1200)),
        (at("pmtaCfgQueueRcptRaise"), Value(G, 1000)),
    ]


def test_every_notification_builds_and_is_paired() -> None:
    names = {n.name for n in NOTIFICATIONS}
    assert names == set(Notification)
    for n in NOTIFICATIONS:
        if n.objects[0].startswith("pmtaSourceIp"):  # a row's: tests/unit/test_mib_outcomes.py
            continue
        out = notification_varbinds(n.name, make_snapshot(), HEALTH, today=TODAY)
        assert out[0][1].value == oid(n.name)
        assert [o for o, _ in out[1:]] == [at(name) for name in n.objects]
    assert {n.name[:-len("Blocklisted")] for n in NOTIFICATIONS
            if n.name.endswith("Blocklisted")} == {"pmtaSourceIp"}


def test_license_notification_without_license_leaves_out_missing_objects() -> None:
    out = notification_varbinds(Notification.LICENSE_EXPIRING, None, HEALTH)
    assert [o for o, _ in out] == [SNMP_TRAP_OID, at("pmtaCfgLicenseDaysRaise")]


def test_unknown_notification_is_an_error() -> None:
    with pytest.raises(KeyError):
        notification_varbinds("pmtaNoSuch", None, HEALTH)


# --- health helpers --------------------------------------------------------------------


def test_counters_restarted() -> None:
    snap = make_snapshot()
    assert counters_restarted(None, snap)
    assert not counters_restarted(snap, snap)
    moved = replace(
        snap,
        status=replace(
            snap.status,
            runtime=replace(snap.status.runtime, startup_time=datetime(2026, 11, 25, 9, 0)),
        ),
    )
    assert counters_restarted(snap, moved)
    lower = replace(
        snap, status=replace(snap.status, traffic=Traffic(total=TrafficWindow(Counts(1, 1, 1.0))))
    )
    assert counters_restarted(snap, lower)


def test_thresholds_are_validated() -> None:
    with pytest.raises(ValueError):
        Thresholds(queue_rcpt_raise=10, queue_rcpt_clear=20)
    with pytest.raises(ValueError):
        Thresholds(api_failures_raise=0)


# --- scale -----------------------------------------------------------------------------


def test_ten_thousand_domains_and_30k_queues_build_every_row() -> None:
    """Every row at scale (how fast: the build step of `./run bench poll`)."""
    domains = tuple(Domain(f"d{i}.example.com", rcp=i) for i in range(10_000))
    queues = tuple(
        Queue(f"d{i}.example.com/vmta{j}", rcp=i, last_error="4.4.1 timeout")
        for i in range(10_000)
        for j in range(3)
    )
    snap = make_snapshot(domains=domains, queues=queues)
    out = build_varbinds(snap, HEALTH, today=TODAY)
    assert dict(out)[at("pmtaQueueCount")] == Value(G, 30_000)
    assert dict(out)[at("pmtaDomainCount")] == Value(G, 10_000)
    assert len(out) > 30_000 * 8
    assert all(a[0] < b[0] for a, b in pairwise(out))  # ascending, unique


def test_rows_listed_and_known_beside_each_table() -> None:
    """How complete each table is: the rows PowerMTA listed, and how many it has by its own
    count (a lower bound for queues); no instance where it gave no count."""
    out = varbinds(make_snapshot())
    assert out[(*oid("pmtaQueueRowsListed"), 0)] == Value(G, 2)
    assert out[(*oid("pmtaQueueRowsKnown"), 0)] == Value(G, 3)
    assert out[(*oid("pmtaDomainRowsListed"), 0)] == Value(G, 2)
    assert out[(*oid("pmtaDomainRowsKnown"), 0)] == Value(G, 3)
    assert out[(*oid("pmtaVmtaRowsKnown"), 0)] == Value(G, 2)
    unknown = varbinds(make_snapshot(lists=Lists(vmtas=ListCompleteness(listed=2))))
    assert (*oid("pmtaVmtaRowsListed"), 0) in unknown
    assert not any(o[: len(oid("pmtaVmtaRowsKnown"))] == oid("pmtaVmtaRowsKnown")
                   or o[: len(oid("pmtaQueueRowsKnown"))] == oid("pmtaQueueRowsKnown")
                   for o in unknown)
    # The rows stay right after their table, before the next group.
    assert oid("pmtaVmtaRowsListed") == (*BASE, 1, 8, 4)
    assert oid("pmtaQueueRowsKnown") == (*BASE, 1, 10, 5)
