"""The public view of the outcomes engine: immutable, picklable, consistent example, rates in
hundredths of a percent, a JSON form."""

from __future__ import annotations

import json
import pickle
import socket
from dataclasses import FrozenInstanceError

import pytest

from pmta_snmp.addresses import packed_address
from pmta_snmp.outcomes.view import (
    DELAY_BOUNDS,
    OTHER,
    RESULTS,
    DelayHistogram,
    OutcomesView,
    ResultCounts,
    hundredths_of_percent,
    source_ip_text,
)


def test_example_survives_pickling_and_is_frozen() -> None:
    view = OutcomesView.example()
    assert pickle.loads(pickle.dumps(view)) == view
    with pytest.raises(FrozenInstanceError):
        view.complaints = 5  # type: ignore[misc]


def test_example_tables_agree_with_the_totals() -> None:
    view = OutcomesView.example()
    by_provider = ResultCounts()
    for row in view.providers:
        by_provider = by_provider + row.total
    by_ip = ResultCounts()
    for ip_row in view.source_ips:
        by_ip = by_ip + ip_row.total
    assert by_provider == by_ip == view.totals
    assert view.records_of("d") == view.totals.delivered
    assert view.records_of("b") == view.totals.bounced
    assert view.records_of("t") == view.totals.deferred
    assert view.complaints == sum(c.count for c in view.complaints_by)
    assert view.blocklist_rejections_total == sum(b.count for b in view.blocklist_rejections)
    assert view.delay.count == sum(p.delay.count for p in view.providers)
    assert {s.source_ip for s in view.source_ips} >= {OTHER}


def test_source_ip_families() -> None:
    assert packed_address("198.51.100.20") == (4, bytes([198, 51, 100, 20]))
    family, packed = packed_address("2001:db8::25")
    assert family == 6 and len(packed) == 16
    assert packed_address(OTHER) == (0, b"")
    assert packed_address("") == (0, b"")
    rows = {r.source_ip: r for r in OutcomesView.example().source_ips}
    assert rows["2001:db8::25"].family == 6 and rows[OTHER].family == 0


def test_a_zoned_ipv6_address_packs_with_its_zone_index() -> None:
    """RFC 4001's InetAddressIPv6z: the 16 octets, then the zone index in 4 octets, big
    endian: the interface's index on this host, else the zone written as a number; a zone
    this host cannot number is no address it can index."""
    lo = socket.if_nametoindex("lo")
    link = bytes.fromhex("fe80000000000000" "0000000000000001")
    assert packed_address("fe80::1%lo") == (6, link + lo.to_bytes(4, "big"))
    assert packed_address("[FE80::1%lo]") == packed_address(f"fe80::1%{lo}")
    assert packed_address("fe80::1%4294967295") == (6, link + b"\xff\xff\xff\xff")
    assert packed_address("fe80::1%4294967296") == (0, b"")
    assert packed_address("fe80::1%no-such-if9") == (0, b"")
    assert packed_address("fe80::1") == (6, link)
    assert source_ip_text(" FE80::0001%lo ") == "fe80::1%lo"  # the label keeps its zone


@pytest.mark.parametrize(("num", "den", "want"), [
    (0, 0, 0), (1, 0, 0), (1, 3, 3333), (2, 3, 6667), (1, 1, 10000), (1, 20000, 1),
    (1, 20001, 0), (7, 100, 700)])
def test_hundredths_of_percent(num: int, den: int, want: int) -> None:
    assert hundredths_of_percent(num, den) == want


def test_rates_use_final_results_and_attempts_for_deferrals() -> None:
    counts = ResultCounts(delivered=90, hard_bounce=5, block_bounce=5, deferred=100)
    assert counts.final == 100 and counts.attempts == 200
    assert counts.rate("hard_bounce") == 500  # 5 %
    assert counts.rate("deferred") == 5000  # 50 %
    assert ResultCounts().rate("delivered") == 0
    assert [r for r, _ in counts.items()] == list(RESULTS)


def test_delay_histogram_buckets_and_cumulative_counts() -> None:
    hist = DelayHistogram.of([0, 1, 1.5, 60, 400000])
    assert hist.count == 5 and hist.sum == pytest.approx(400062.5)
    cumulative = dict(hist.cumulative())
    assert cumulative[1] == 2  # 0 and 1 (le is inclusive)
    assert cumulative[5] == 3
    assert cumulative[60] == 4
    assert cumulative[DELAY_BOUNDS[-1]] == 4
    assert cumulative[float("inf")] == 5


def test_json_form() -> None:
    data = OutcomesView.example().to_dict()
    text = json.dumps(data)
    back = json.loads(text)
    assert back["totals"]["delivered"] == 1350
    assert back["records"] == {"d": 1350, "b": 78, "t": 52, "tq": 4, "f": 3}
    assert back["providers"][1]["provider"] == "microsoft"
    assert back["source_ips"][0]["blocklists"] == {"microsoft": 20, "spamhaus": 5}
    assert back["counting_since"].startswith("2025-01-14T00:00:00")


def test_source_ip_text_is_one_text_per_address() -> None:
    """Upper case, zero padding and brackets give the compressed lower-case text; an
    IPv4-mapped address keeps its dotted quad on every Python; no IP is only stripped."""
    assert source_ip_text("2001:DB8:0:0::25") == "2001:db8::25"
    assert source_ip_text(" [2001:db8::25] ") == "2001:db8::25"
    assert source_ip_text("::FFFF:198.51.100.2") == "::ffff:198.51.100.2"
    assert source_ip_text("198.51.100.2 ") == "198.51.100.2"
    assert source_ip_text(" not-an-ip ") == "not-an-ip"
    assert source_ip_text("") == ""
