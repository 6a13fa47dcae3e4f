"""The shipped Prometheus alert rules, checked and unit-tested by the real promtool."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.integration.kit_support import require_program

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "contrib" / "prometheus" / "pmta-alerts.yml"
RULE_TESTS = ROOT / "contrib" / "prometheus" / "pmta-alerts.test.yml"


def _promtool() -> str:
    return require_program("promtool", "prometheus")


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules() -> None:
    out = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_unit_tests_pass() -> None:
    out = subprocess.run([_promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True,
                         text=True, check=False, cwd=RULE_TESTS.parent)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_broken_expectation_fails_promtool(tmp_path: Path) -> None:
    """The unit tests can fail: with one expected alert dropped, promtool says so."""
    shutil.copy(RULES, tmp_path / RULES.name)
    text = RULE_TESTS.read_text().replace("provider: microsoft}", "provider: apple}", 1)
    (tmp_path / RULE_TESTS.name).write_text(text)
    out = subprocess.run([_promtool(), "test", "rules", RULE_TESTS.name], capture_output=True,
                         text=True, check=False, cwd=tmp_path)
    assert out.returncode != 0 and "FAILED" in out.stdout + out.stderr


def test_every_alert_is_tested_firing() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    firing = {case["alertname"] for test in doc["tests"]
              for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert {rule["alert"] for rule in _alerts()} <= firing


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    readme = (ROOT / "README.md").read_text()
    # GitHub's heading anchors: lowercase, spaces to dashes, punctuation dropped.
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    for rule in _alerts():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        anchor = notes["runbook_url"].rpartition("#")[2]
        assert anchor in anchors, f"{rule['alert']}: README has no heading for #{anchor}"
