"""Hysteresis rules (raise once, clear once) and configuration loading."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from pmta_snmp.addresses import packed_address
from pmta_snmp.config import ConfigError, Thresholds, load_config, read_secret, with_overrides
from pmta_snmp.model import License, QueueTypeCounts, Snapshot, Status
from pmta_snmp.notify import Condition, Rules
from pmta_snmp.outcomes.view import OutcomesView, SourceIpRow


def snap(depth: int, lic: License | None = None) -> Snapshot:
    return Snapshot(status=Status(queue_types=(QueueTypeCounts("smtp", rcp=depth),)), license=lic)


TODAY = date(2026, 11, 25)



def ips(hour: dict[str, int], *, backfilling: bool = False) -> OutcomesView:
    """A view whose source IPs had `hour[ip]` rejections naming a blocklist in the last hour,
    and one row that is no address (the cap's `(other)`, well above any threshold)."""
    rows = [SourceIpRow(ip, *packed_address(ip), blocklist_rejections_last_hour=n,
                        blocklists=(("spamhaus", n + 5),))
            for ip, n in hour.items()]
    rows.append(SourceIpRow("(other)", blocklist_rejections_last_hour=50))
    return OutcomesView.empty().with_changes(source_ips=tuple(rows), backfilling=backfilling)

def test_queue_raises_once_and_clears_once_below_clear_level() -> None:
    rules = Rules(Thresholds(queue_rcpt_raise=100, queue_rcpt_clear=80))
    seq = [50, 101, 150, 90, 85, 80, 120]
    events = [
        rules.evaluate(snap(d), consecutive_failures=0, api_error=None, today=TODAY) for d in seq
    ]
    flat = [(i, e.condition, e.raised, e.value) for i, ev in enumerate(events) for e in ev]
    assert flat == [
        (1, Condition.QUEUE_HIGH, True, 101),
        (5, Condition.QUEUE_HIGH, False, 80),
        (6, Condition.QUEUE_HIGH, True, 120),
    ]
    assert events[1][0].threshold == 100 and events[5][0].threshold == 80


def test_api_lost_and_restored_once_and_queue_not_judged_while_down() -> None:
    rules = Rules(Thresholds(queue_rcpt_raise=10, queue_rcpt_clear=5, api_failures_raise=2))
    s = snap(50)
    first = rules.evaluate(s, consecutive_failures=0, api_error=None, today=TODAY)
    assert [(e.condition, e.raised) for e in first] == [(Condition.QUEUE_HIGH, True)]
    assert rules.evaluate(s, consecutive_failures=1, api_error="refused", today=TODAY) == []
    down = rules.evaluate(s, consecutive_failures=2, api_error="refused", today=TODAY)
    assert [(e.condition, e.raised, e.text) for e in down] == [
        (Condition.API_DOWN, True, "refused")
    ]
    assert rules.evaluate(s, consecutive_failures=3, api_error="refused", today=TODAY) == []
    up = rules.evaluate(snap(1), consecutive_failures=0, api_error=None, today=TODAY)
    assert [(e.condition, e.raised) for e in up] == [
        (Condition.API_DOWN, False),
        (Condition.QUEUE_HIGH, False),
    ]


def test_license_expiring_and_never() -> None:
    rules = Rules(Thresholds(license_days_raise=30, license_days_clear=35))
    soon = License(expires=date(2026, 12, 5))
    ev = rules.evaluate(snap(0, soon), consecutive_failures=0, api_error=None, today=TODAY)
    assert [(e.condition, e.raised, e.value) for e in ev] == [
        (Condition.LICENSE_EXPIRING, True, 10)
    ]
    ev = rules.evaluate(
        snap(0, License(never=True)), consecutive_failures=0, api_error=None, today=TODAY
    )
    assert [(e.condition, e.raised) for e in ev] == [(Condition.LICENSE_EXPIRING, False)]


def test_config_file_env_overrides_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        '[pmta]\nurl = "https://pmta:8080"\n[poll]\ninterval = 30\n'
        '[[snmp.users]]\nname = "mon"\nauth_key_file = "/k"\npriv_key_file = "/p"\n'
        "[thresholds]\nqueue_rcpt_raise = 10\nqueue_rcpt_clear = 5\n"
    )
    cfg = load_config(f, {"PMTA_SNMP_POLL_INTERVAL": "12.5", "PMTA_SNMP_ENTERPRISE": "99999"})
    assert cfg.pmta.url == "https://pmta:8080"
    assert cfg.poll.interval == 12.5 and cfg.enterprise == 99999
    assert cfg.snmp.users[0].name == "mon"
    assert with_overrides(cfg, pmta={"url": "http://x:1", "ca_file": None}).pmta.url == "http://x:1"
    f.write_text("[poll]\nintervall = 3\n")
    with pytest.raises(ConfigError, match="intervall"):
        load_config(f, {})
    f.write_text("[poll]\ninterval = 'soon'\n")
    with pytest.raises(ConfigError, match=r"poll\.interval"):
        load_config(f, {})
    f.write_text("[poll]\nisolation = 'fork'\n")
    with pytest.raises(ConfigError, match=r"poll\.isolation"):
        load_config(f, {})
    assert load_config(f, {"PMTA_SNMP_POLL_ISOLATION": "thread"}).poll.isolation == "thread"
    f.write_text("[thresholds]\nqueue_rcpt_raise = 1\nqueue_rcpt_clear = 2\n")
    with pytest.raises(ConfigError, match="queue_rcpt_clear"):
        load_config(f, {})
    with pytest.raises(ConfigError, match="not valid TOML"):
        f.write_text("[poll")
        load_config(f, {})


def test_read_secret(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("c0mmunity\nignored\n")
    assert read_secret(str(tmp_path / "s"), "community") == "c0mmunity"
    with pytest.raises(ConfigError, match="cannot read community"):
        read_secret(str(tmp_path / "none"), "community")



A, B = "198.51.100.1", "2001:db8::2"


def test_blocklist_raises_per_source_ip_once_and_clears_when_the_hour_has_none() -> None:
    rules = Rules(Thresholds(blocklist_raise=3))
    seq = [
        ips({A: 1, B: 0}),
        ips({A: 3, B: 0}),  # A reaches the threshold
        ips({A: 8, B: 5}),  # A stays raised, B raised
        ips({A: 1, B: 0}),  # A still has one: no clear; B cleared
        ips({A: 0, B: 0}),  # A cleared
    ]
    flat = [(i, e.condition, e.key, e.raised, e.value, e.threshold)
            for i, view in enumerate(seq) for e in rules.evaluate_outcomes(view)]
    assert flat == [
        (1, Condition.BLOCKLISTED, A, True, 3, 3),
        (2, Condition.BLOCKLISTED, B, True, 5, 3),
        (3, Condition.BLOCKLISTED, B, False, 0, 0),
        (4, Condition.BLOCKLISTED, A, False, 0, 0),
    ]
    assert rules.listed == set()


def test_blocklist_is_not_cleared_while_backfilling_nor_for_a_vanished_row() -> None:
    """The first start reads the last hour last, and a row folded into the cap's (other) has
    no count of its own: neither is an all-clear."""
    rules = Rules(Thresholds(blocklist_raise=1))
    assert [e.raised for e in rules.evaluate_outcomes(ips({A: 2}))] == [True]
    assert rules.evaluate_outcomes(ips({A: 0}, backfilling=True)) == []
    assert rules.evaluate_outcomes(ips({})) == []
    assert rules.listed == {A}
    assert [e.raised for e in rules.evaluate_outcomes(ips({A: 0}))] == [False]
    assert rules.evaluate_outcomes(None) == []


def test_raised_conditions_travel_to_a_restarted_worker() -> None:
    rules = Rules(Thresholds(blocklist_raise=1))
    rules.evaluate(snap(10**9), consecutive_failures=0, api_error=None, today=TODAY)
    rules.evaluate_outcomes(ips({A: 1, B: 1}))
    carried = rules.carried()
    assert Condition.QUEUE_HIGH.value in carried  # what agent.py looks for by value
    again = Rules(Thresholds(blocklist_raise=1))
    again.restore(carried | {"no-such-condition"})
    assert again.raised == {Condition.QUEUE_HIGH} and again.listed == {A, B}
    assert again.evaluate_outcomes(ips({A: 4, B: 4})) == []  # no second raise
