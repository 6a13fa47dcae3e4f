"""layout.py's deliverability objects: pmtaAcct, pmtaProviderTable, pmtaSourceIpTable from an
OutcomesView (indices, counters, last-hour rates, the unknown(0) row, caps, no view)."""

from __future__ import annotations

import ipaddress
import socket
from datetime import UTC, datetime
from fractions import Fraction
from itertools import pairwise

from pmta_snmp.addresses import packed_address
from pmta_snmp.config import Thresholds
from pmta_snmp.mib.health import AgentHealth
from pmta_snmp.mib.layout import (
    OBJECTS,
    SNMP_TRAP_OID,
    Notification,
    build_varbinds,
    date_and_time,
    inet_address_index,
    object_prefixes,
    oid,
    source_ip_varbinds,
)
from pmta_snmp.mib.snapshot import MAX_OID_LEN, Oid, OidTree, SnmpType, Value
from pmta_snmp.outcomes.view import (
    OTHER,
    OutcomesView,
    ProviderRow,
    ResultCounts,
    SourceIpRow,
)

C64 = SnmpType.COUNTER64
G = SnmpType.GAUGE32
S = SnmpType.OCTET_STRING
HEALTH = AgentHealth(started_at=datetime(2025, 1, 14, 8, 0, tzinfo=UTC))


def name_index(text: str) -> Oid:
    data = text.encode()
    return (len(data), *data)


def ip_index(text: str) -> Oid:
    ip = ipaddress.ip_address(text)
    return (1 if ip.version == 4 else 2, len(ip.packed), *ip.packed)


def varbinds(view: OutcomesView | None) -> dict[Oid, Value]:
    return dict(build_varbinds(None, HEALTH, outcomes=view))


def inst(name: str) -> Oid:
    return (*oid(name), 0)


def cell(out: dict[Oid, Value], column: str, index: Oid) -> Value:
    return out[(*oid(column), *index)]


def hundredths(numerator: int, denominator: int) -> int:
    """The rate unit, computed here on its own: hundredths of a percent, half up."""
    if denominator == 0:
        return 0
    exact = Fraction(numerator * 10000, denominator)
    return int(exact + Fraction(1, 2))


def column_rows(out: dict[Oid, Value], column: str) -> list[Oid]:
    prefix = oid(column)
    return [o[len(prefix):] for o in sorted(out) if o[: len(prefix)] == prefix]


def test_provider_rows_carry_the_view_counts_as_counter64() -> None:
    view = OutcomesView.example()
    out = varbinds(view)
    for row in view.providers:
        i = name_index(row.provider)
        assert cell(out, "pmtaProviderDisplayName", i) == Value(S, row.provider.encode())
        assert cell(out, "pmtaProviderDescription", i) == Value(S, row.description.encode())
        for column, n in (
            ("pmtaProviderDelivered", row.total.delivered),
            ("pmtaProviderHardBounces", row.total.hard_bounce),
            ("pmtaProviderSoftBounces", row.total.soft_bounce),
            ("pmtaProviderBlockBounces", row.total.block_bounce),
            ("pmtaProviderDeferrals", row.total.deferred),
            ("pmtaProviderExpired", row.total.expired),
            ("pmtaProviderComplaints", row.complaints),
            ("pmtaProviderBlocklistRejections", row.blocklist_rejections),
        ):
            assert cell(out, column, i) == Value(C64, n), column
    assert out[inst("pmtaProviderCount")] == Value(G, 2)
    assert out[inst("pmtaProvidersOmitted")] == Value(G, 0)


def test_provider_last_hour_rates_are_hundredths_of_a_percent() -> None:
    out = varbinds(OutcomesView.example())
    gmail = name_index("gmail")
    # example(): gmail's last hour is 90 delivered, 2 hard, 1 block, 4 deferred.
    final = 90 + 2 + 1
    assert cell(out, "pmtaProviderLastHourRecipients", gmail) == Value(G, final)
    assert cell(out, "pmtaProviderLastHourDelivered", gmail) == Value(G, 90)
    assert cell(out, "pmtaProviderLastHourHardBounceRate", gmail) == Value(G, hundredths(2, final))
    assert cell(out, "pmtaProviderLastHourBlockRate", gmail) == Value(G, hundredths(1, final))
    assert cell(out, "pmtaProviderLastHourDeferralRate", gmail) == Value(
        G, hundredths(4, final + 4))
    ms = name_index("microsoft")
    # microsoft: 1 complaint over 45 deliveries in the hour, 3 over 450 in the day.
    assert cell(out, "pmtaProviderLastHourComplaintRate", ms) == Value(G, hundredths(1, 45))
    assert cell(out, "pmtaProviderLastDayComplaintRate", ms) == Value(G, hundredths(3, 450))
    assert cell(out, "pmtaProviderLastHourBlocklistRejections", ms) == Value(G, 3)


def test_rates_are_zero_without_recipients_in_the_hour() -> None:
    view = OutcomesView.example().with_changes(providers=(
        ProviderRow("yahoo", total=ResultCounts(delivered=5), complaints=2,
                    complaints_last_hour=2),))
    out = varbinds(view)
    i = name_index("yahoo")
    for column in ("pmtaProviderLastHourHardBounceRate", "pmtaProviderLastHourComplaintRate",
                   "pmtaProviderLastHourDeferralRate", "pmtaProviderLastDayComplaintRate"):
        assert cell(out, column, i) == Value(G, 0), column


def test_source_ips_are_indexed_by_inet_address_type_and_address() -> None:
    view = OutcomesView.example()
    out = varbinds(view)
    rows = column_rows(out, "pmtaSourceIpName")
    # unknown(0) first, then IPv4, then IPv6: the order of the encoded indices.
    assert rows == [(0, 0), ip_index("198.51.100.20"), ip_index("2001:db8::25")]
    assert all(a < b for a, b in pairwise(rows))
    v6 = ip_index("2001:db8::25")
    assert v6[:2] == (2, 16)
    assert cell(out, "pmtaSourceIpName", v6) == Value(S, b"2001:db8::25")
    assert cell(out, "pmtaSourceIpDelivered", v6) == Value(C64, 600)
    assert cell(out, "pmtaSourceIpName", (0, 0)) == Value(S, OTHER.encode())
    assert out[inst("pmtaSourceIpCount")] == Value(G, 3)


def test_source_ip_counts_rates_and_blocklist() -> None:
    view = OutcomesView.example()
    out = varbinds(view)
    row = view.source_ip("198.51.100.20")
    assert row is not None
    i = ip_index("198.51.100.20")
    assert cell(out, "pmtaSourceIpBlockBounces", i) == Value(C64, row.total.block_bounce)
    assert cell(out, "pmtaSourceIpComplaints", i) == Value(C64, 3)
    assert cell(out, "pmtaSourceIpBlocklistRejections", i) == Value(C64, 25)
    assert cell(out, "pmtaSourceIpLastHourBlocklistRejections", i) == Value(G, 3)
    hour = row.last_hour
    final = hour.delivered + hour.hard_bounce + hour.soft_bounce + hour.block_bounce
    assert cell(out, "pmtaSourceIpLastHourBlockRate", i) == Value(
        G, hundredths(hour.block_bounce, final))
    assert cell(out, "pmtaSourceIpLastHourComplaintRate", i) == Value(
        G, hundredths(1, hour.delivered))
    assert cell(out, "pmtaSourceIpTopBlocklist", i) == Value(S, b"microsoft")
    assert cell(out, "pmtaSourceIpTopBlocklist", ip_index("2001:db8::25")) == Value(S, b"")


def test_rows_that_are_no_address_sum_into_the_one_unknown_row() -> None:
    rows = (
        SourceIpRow(OTHER, total=ResultCounts(delivered=7, hard_bounce=1), complaints=1,
                    blocklist_rejections=2, blocklists=(("spamhaus", 2),)),
        SourceIpRow("not-an-ip", total=ResultCounts(delivered=3), blocklist_rejections=4,
                    blocklists=(("barracuda", 4),)),
        SourceIpRow("192.0.2.1", *packed_address("192.0.2.1"), total=ResultCounts(delivered=1)),
    )
    out = varbinds(OutcomesView.example().with_changes(source_ips=rows))
    assert column_rows(out, "pmtaSourceIpDelivered") == [(0, 0), ip_index("192.0.2.1")]
    assert cell(out, "pmtaSourceIpDelivered", (0, 0)) == Value(C64, 10)
    assert cell(out, "pmtaSourceIpHardBounces", (0, 0)) == Value(C64, 1)
    assert cell(out, "pmtaSourceIpComplaints", (0, 0)) == Value(C64, 1)
    assert cell(out, "pmtaSourceIpBlocklistRejections", (0, 0)) == Value(C64, 6)
    assert cell(out, "pmtaSourceIpTopBlocklist", (0, 0)) == Value(S, b"barracuda")


def test_spellings_of_one_address_sum_into_its_one_row() -> None:
    """The accounting files may write one address in several ways (zero-padded, upper-case
    IPv6, an IPv4 with spaces around): they share one index, so they are one row holding
    them all, named in the canonical text; not one spelling's row with the others lost."""
    spellings = ("2001:db8::1", "2001:0DB8::1", "2001:db8:0:0:0:0:0:1")
    rows = (
        *(SourceIpRow(text, *packed_address(text), total=ResultCounts(delivered=n, deferred=1),
                      last_hour=ResultCounts(delivered=n), complaints=1,
                      blocklist_rejections=n, blocklists=(("spamhaus", n),))
          for n, text in enumerate(spellings, 1)),
        SourceIpRow(" 192.0.2.1", *packed_address(" 192.0.2.1"),
                    total=ResultCounts(delivered=5)),
        SourceIpRow("192.0.2.1", *packed_address("192.0.2.1"), total=ResultCounts(delivered=6)),
        SourceIpRow("::FFFF:192.0.2.9", *packed_address("::FFFF:192.0.2.9")),
    )
    out = varbinds(OutcomesView.example().with_changes(source_ips=rows))
    v6, v4 = ip_index("2001:db8::1"), ip_index("192.0.2.1")
    mapped = ip_index("::ffff:192.0.2.9")
    assert column_rows(out, "pmtaSourceIpName") == [v4, mapped, v6]
    assert cell(out, "pmtaSourceIpName", mapped) == Value(S, b"::ffff:192.0.2.9")
    assert cell(out, "pmtaSourceIpName", v6) == Value(S, b"2001:db8::1")
    assert cell(out, "pmtaSourceIpDelivered", v6) == Value(C64, 1 + 2 + 3)
    assert cell(out, "pmtaSourceIpDeferrals", v6) == Value(C64, 3)
    assert cell(out, "pmtaSourceIpComplaints", v6) == Value(C64, 3)
    assert cell(out, "pmtaSourceIpBlocklistRejections", v6) == Value(C64, 6)
    assert cell(out, "pmtaSourceIpLastHourDelivered", v6) == Value(G, 6)
    assert cell(out, "pmtaSourceIpName", v4) == Value(S, b"192.0.2.1")
    assert cell(out, "pmtaSourceIpDelivered", v4) == Value(C64, 11)
    assert out[inst("pmtaSourceIpCount")] == Value(G, 3)


def test_addresses_beyond_the_cap_are_counted() -> None:
    view = OutcomesView.example().with_changes(other_items=(("source_ip", 41),))
    assert varbinds(view)[inst("pmtaSourceIpsOther")] == Value(G, 41)
    assert varbinds(OutcomesView.example())[inst("pmtaSourceIpsOther")] == Value(G, 0)


def test_a_provider_id_over_the_index_bound_is_omitted_and_counted() -> None:
    long_id = "p" * 33
    view = OutcomesView.example().with_changes(providers=(
        ProviderRow("gmail", total=ResultCounts(delivered=1)),
        ProviderRow(long_id, total=ResultCounts(delivered=2)),
    ))
    out = varbinds(view)
    assert column_rows(out, "pmtaProviderDelivered") == [name_index("gmail")]
    assert out[inst("pmtaProviderCount")] == Value(G, 1)
    assert out[inst("pmtaProvidersOmitted")] == Value(G, 1)


def test_counters_above_32_bits_stay_exact() -> None:
    big = 2**40 + 7
    view = OutcomesView.example().with_changes(providers=(
        ProviderRow("gmail", total=ResultCounts(delivered=big)),))
    assert cell(varbinds(view), "pmtaProviderDelivered", name_index("gmail")) == Value(C64, big)


def test_acct_scalars_show_the_reader_health() -> None:
    view = OutcomesView.example().with_changes(
        lag_seconds=12.7, backfilling=True, warnings=("no file matches", "second"))
    out = varbinds(view)
    assert out[inst("pmtaAcctFiles")] == Value(S, b"/var/log/pmta/acct-*.csv")
    assert out[inst("pmtaAcctDiscontinuityTime")] == Value(
        S, date_and_time(view.counting_since))
    assert view.updated is not None and view.newest_record is not None
    assert out[inst("pmtaAcctLastRead")] == Value(S, date_and_time(view.updated))
    assert out[inst("pmtaAcctNewestRecord")] == Value(S, date_and_time(view.newest_record))
    assert out[inst("pmtaAcctLag")] == Value(G, 12)
    assert out[inst("pmtaAcctRecordsRead")] == Value(C64, 1350 + 78 + 52 + 4 + 3)
    assert out[inst("pmtaAcctReadErrors")] == Value(C64, 1)
    assert out[inst("pmtaAcctBackfilling")] == Value(SnmpType.INTEGER, 1)
    assert out[inst("pmtaAcctWarnings")] == Value(S, b"no file matches; second")


def test_an_empty_view_has_the_scalars_and_empty_tables() -> None:
    out = varbinds(OutcomesView.empty(datetime(2025, 1, 1, tzinfo=UTC)))
    assert inst("pmtaAcctLastRead") not in out  # not read yet
    assert out[inst("pmtaProviderCount")] == Value(G, 0)
    assert out[inst("pmtaSourceIpCount")] == Value(G, 0)
    assert not column_rows(out, "pmtaProviderDelivered")


def test_without_a_view_no_outcome_object_has_an_instance() -> None:
    out = varbinds(None)
    outcome_arcs = {oid(n)[:10] for n in ("pmtaAcctFiles", "pmtaProviderCount",
                                          "pmtaSourceIpCount")}
    assert not [o for o in out if o[:10] in outcome_arcs]


def test_outcome_objects_are_served_without_powermta_data() -> None:
    """The API down, the accounting files still read: the tables stay."""
    out = varbinds(OutcomesView.example())
    assert cell(out, "pmtaProviderDelivered", name_index("gmail")) == Value(C64, 900)
    assert inst("pmtaSmtpQueueRcpt") not in out


def test_outcome_varbinds_make_a_valid_tree_with_short_instances() -> None:
    out = build_varbinds(None, HEALTH, outcomes=OutcomesView.example())
    tree = OidTree(out, object_prefixes())
    assert len(tree) == len(out)
    assert max(len(o) for o, _ in out) <= MAX_OID_LEN
    # the longest source IP instance: base (8) + 1.15.3.1.col (5) + type, len, 20 octets
    assert len((*oid("pmtaSourceIpDelivered"), *zoned_index("fe80::1", 1))) == 35


def test_inet_address_index_refuses_an_address_of_the_wrong_length() -> None:
    assert inet_address_index(4, bytes(4)) == (1, 4, 0, 0, 0, 0)
    assert inet_address_index(6, bytes(4)) is None
    assert inet_address_index(6, bytes(20)) == (4, 20, *bytes(20))  # ipv6z
    assert inet_address_index(4, bytes(20)) is None
    assert inet_address_index(0, b"") == (0, 0)
    assert inet_address_index(5, b"") is None


def test_every_outcome_column_is_in_a_table_entry() -> None:
    names = {o.name for o in OBJECTS}
    for what in ("Provider", "SourceIp"):
        for column in ("Delivered", "HardBounces", "SoftBounces", "BlockBounces", "Deferrals",
                       "Expired", "Complaints", "BlocklistRejections",
                       "LastHourHardBounceRate", "LastHourBlockRate", "LastHourDeferralRate",
                       "LastHourComplaintRate"):
            assert f"pmta{what}{column}" in names


def test_a_source_ip_notification_carries_the_row_columns_with_its_index() -> None:
    """pmtaSourceIpBlocklisted: the row's name, last-hour rejections and top list with the
    row's InetAddress index (what a Get of that row returns), then the threshold `.0`."""
    view = OutcomesView.empty().with_changes(source_ips=(
        SourceIpRow("198.51.100.22", *packed_address("198.51.100.22"),
                    blocklist_rejections=9, blocklist_rejections_last_hour=4,
                    blocklists=(("spamhaus", 7), ("barracuda", 2))),
        SourceIpRow("2001:db8::25", *packed_address("2001:db8::25")),
    ))
    out = source_ip_varbinds(Notification.SOURCE_IP_BLOCKLISTED, view, "198.51.100.22",
                             thresholds=Thresholds(blocklist_raise=2))
    index = ip_index("198.51.100.22")
    assert out == [
        (SNMP_TRAP_OID, Value(SnmpType.OBJECT_IDENTIFIER, oid("pmtaSourceIpBlocklisted"))),
        ((*oid("pmtaSourceIpName"), *index), Value(S, b"198.51.100.22")),
        ((*oid("pmtaSourceIpLastHourBlocklistRejections"), *index), Value(G, 4)),
        ((*oid("pmtaSourceIpTopBlocklist"), *index), Value(S, b"spamhaus")),
        (inst("pmtaCfgBlocklistRaise"), Value(G, 2)),
    ]
    tree = varbinds(view)  # the same values a walk of the row gives
    assert all(tree[o] == v for o, v in out[1:4])
    v6 = source_ip_varbinds(Notification.SOURCE_IP_BLOCKLIST_CLEAR, view, "2001:db8::25")
    assert v6 is not None and v6[1][0] == (*oid("pmtaSourceIpName"), *ip_index("2001:db8::25"))
    assert source_ip_varbinds(Notification.SOURCE_IP_BLOCKLISTED, view, "192.0.2.9") is None
    # the row is found by the address, however the rules' key spells it
    spelled = source_ip_varbinds(Notification.SOURCE_IP_BLOCKLIST_CLEAR, view, "2001:DB8:0::25")
    assert spelled == v6


LO = socket.if_nametoindex("lo")


def zoned_index(address: str, zone: int) -> Oid:
    packed = ipaddress.IPv6Address(address).packed + zone.to_bytes(4, "big")
    return (4, 20, *packed)


def test_a_zoned_ipv6_address_is_an_ipv6z_row_of_its_own() -> None:
    """RFC 4001: an IPv6 address with a zone is ipv6z(4), 16 octets and the 4-octet zone
    index; the same address on another link, or without a zone, is another address. The
    zone is numbered as this host numbers it (the index of interface `lo`), and its
    spellings (`%lo`, `%1` when lo is interface 1) are one row; a zone this host cannot
    number has no truthful index: its counts go to the unknown(0) row (the source_ip label in
    /metrics keeps the text)."""
    rows = (
        SourceIpRow("fe80::1%lo", *packed_address("fe80::1%lo"),
                    total=ResultCounts(delivered=2), blocklist_rejections=1,
                    blocklists=(("spamhaus", 1),)),
        SourceIpRow(f"fe80::1%{LO}", *packed_address(f"fe80::1%{LO}"),
                    total=ResultCounts(delivered=4)),
        SourceIpRow("fe80::1%4000000000", *packed_address("fe80::1%4000000000"),
                    total=ResultCounts(delivered=7)),
        SourceIpRow("fe80::1", *packed_address("fe80::1"), total=ResultCounts(delivered=3)),
        SourceIpRow("fe80::1%no-such-if9", *packed_address("fe80::1%no-such-if9"),
                    total=ResultCounts(delivered=5)),
        SourceIpRow("192.0.2.1", *packed_address("192.0.2.1"), total=ResultCounts(delivered=1)),
    )
    out = varbinds(OutcomesView.example().with_changes(source_ips=rows))
    lo, big = zoned_index("fe80::1", LO), zoned_index("fe80::1", 4_000_000_000)
    assert column_rows(out, "pmtaSourceIpDelivered") == [
        (0, 0), ip_index("192.0.2.1"), ip_index("fe80::1"), lo, big]
    assert cell(out, "pmtaSourceIpDelivered", lo) == Value(C64, 6)
    assert cell(out, "pmtaSourceIpBlocklistRejections", lo) == Value(C64, 1)
    assert cell(out, "pmtaSourceIpName", lo) == Value(S, f"fe80::1%{LO}".encode())  # first
    assert cell(out, "pmtaSourceIpName", big) == Value(S, b"fe80::1%4000000000")
    assert cell(out, "pmtaSourceIpDelivered", big) == Value(C64, 7)
    assert cell(out, "pmtaSourceIpName", ip_index("fe80::1")) == Value(S, b"fe80::1")
    assert cell(out, "pmtaSourceIpDelivered", ip_index("fe80::1")) == Value(C64, 3)
    assert cell(out, "pmtaSourceIpDelivered", (0, 0)) == Value(C64, 5)
    assert out[inst("pmtaSourceIpCount")] == Value(G, 5)
    # the notification of a zoned address carries its ipv6z index, however it is spelled
    listed = source_ip_varbinds(Notification.SOURCE_IP_BLOCKLISTED,
                                OutcomesView.empty().with_changes(source_ips=rows), "FE80::1%lo")
    assert listed is not None and listed[1] == ((*oid("pmtaSourceIpName"), *lo),
                                                Value(S, f"fe80::1%{LO}".encode()))
