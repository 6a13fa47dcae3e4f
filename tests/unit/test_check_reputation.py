"""Pieces of the reputation plugins: counter bucket widths, tally fields to the one
classifier's outcome, at-least count thresholds, warm-up plan days and caps."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pmta_snmp.checks.acctbase import bucket_width, outcome_of
from pmta_snmp.checks.blocklist import AtLeast, parse_count
from pmta_snmp.checks.warmup import PlanError, Ramp, load_plan

from pmta_snmp.acct.records import AcctRecord
from pmta_snmp.outcomes.classify import Classifier

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"


@pytest.mark.parametrize(("minutes", "width"),
                         [(1, 1), (60, 1), (120, 1), (121, 5), (480, 5), (481, 15),
                          (1440, 15), (1560, 15), (10080, 15)])
def test_bucket_width_divides_a_quarter_hour(minutes: int, width: int) -> None:
    assert bucket_width(minutes) == width
    assert 15 % width == 0


def test_outcome_of_tally_fields_is_the_classifiers_outcome_of_the_record() -> None:
    """The plugins hand the classifier what the tally counted (domains for addresses, the MX
    host for dsnMta, named columns): the outcome is the one of the whole record."""
    classifier = Classifier()
    cases = [
        (AcctRecord("d", orig="b@news.example.net", rcpt="u@corp.example",
                    dsn_mta="aspmx.l.google.com (192.0.2.27)", dlv_source_ip="198.51.100.20",
                    vmta="vmta-a"),
         {"rcpt_domain": "corp.example", "sender_domain": "news.example.net",
          "dsn_mta_host": "aspmx.l.google.com", "dlv_source_ip": "198.51.100.20",
          "vmta": "vmta-a"}),
        (AcctRecord("b", rcpt="u@example.org", bounce_cat="spam-related",
                    dsn_status="5.7.1 (delivery not authorized)",
                    dsn_diag="smtp;554 5.7.1 Client host [198.51.100.22] blocked using "
                             "zen.spamhaus.org", dlv_source_ip="198.51.100.22"),
         {"rcpt_domain": "example.org", "bounce_cat": "spam-related",
          "dsn_status": "5.7.1 (delivery not authorized)",
          "dsn_diag": "smtp;554 5.7.1 Client host [198.51.100.22] blocked using "
                      "zen.spamhaus.org", "dlv_source_ip": "198.51.100.22"}),
        (AcctRecord("f", rcpt="u@contoso.example",
                    extra={"feedbackType": "abuse", "format": "jmrp",
                           "reportingMta": "jmrp.hotmail.com", "reportedDomain": "promo.example",
                           "repSourceIp": "198.51.100.21"}),
         {"rcpt_domain": "contoso.example", "sender_domain": "", "column:feedbackType": "abuse",
          "column:format": "jmrp", "column:reportingMta": "jmrp.hotmail.com",
          "column:reportedDomain": "promo.example", "column:repSourceIp": "198.51.100.21"}),
    ]
    for record, values in cases:
        assert outcome_of(classifier, record.type, values) == classifier.outcome(record)
    assert outcome_of(classifier, "b", cases[1][1]).blocklist == "spamhaus"
    complaint = outcome_of(classifier, "f", cases[2][1])
    assert (complaint.provider, complaint.complaint, complaint.sending_domain,
            complaint.source_ip) == ("microsoft", True, "promo.example", "198.51.100.21")


def test_at_least_counts() -> None:
    three = parse_count("3")
    assert isinstance(three, AtLeast) and three.n == 3
    assert [three.match(n) for n in (0, 2, 3, 10)] == [True, True, False, False]
    assert not parse_count("0").match(0)  # 0 or more: always
    nagios = parse_count("@1:5")
    assert not isinstance(nagios, AtLeast) and not nagios.match(3) and nagios.match(6)


def test_ramp_days_and_caps() -> None:
    ramp = Ramp("198.51.100.20", "", date(2025, 3, 3), (50, 100),
                (("gmail", (20,)),))
    assert [ramp.day(date(2025, 3, d)) for d in (2, 3, 4, 5)] == [0, 1, 2, 3]
    assert [ramp.cap(d) for d in (0, 1, 2, 3)] == [None, 50, 100, None]
    assert ramp.cap(2, dict(ramp.providers)["gmail"]) is None
    assert ramp.key == "ip 198.51.100.20"
    assert Ramp("", "warm-1", date(2025, 3, 3), (1,)).name == "VirtualMTA warm-1"


def test_midnight_is_a_bucket_edge_in_half_hour_zones(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text('timezone = "Asia/Kathmandu"\n[[warmup]]\nsource_ip = "2001:DB8::1"\n'
                    "start = 2025-03-03\ncaps = [5]\n", encoding="utf-8")
    plan = load_plan(str(path))
    assert plan.ramps[0].source_ip == "2001:db8::1"  # as PowerMTA writes it
    minute = plan.midnight_minute(date(2025, 3, 4))
    assert minute % 15 == 0
    assert datetime.fromtimestamp(minute * 60, ZoneInfo("Asia/Kathmandu")).hour == 0


def test_the_contrib_example_is_a_valid_plan() -> None:
    plan = load_plan(str(CONTRIB / "warmup" / "plan.toml.example"))
    assert plan.timezone == "America/New_York" and len(plan.ramps) == 2
    plan.check_providers(Classifier().providers.ids)
    with pytest.raises(PlanError, match="unknown provider 'gmail'"):
        plan.check_providers(("yahoo", "microsoft", "other"))
