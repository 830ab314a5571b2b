"""The alert rules: promtool accepts them, its unit tests pass and cover every alert both firing
and quiet, the unit tests notice a broken rule, and the routing labels follow the level."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from fluxsupport.devcluster import paths

ROOT = pathlib.Path(__file__).resolve().parents[2]
ALERTS = ROOT / "alerts"
RULES = ALERTS / "fluxsupport.rules.yaml"
#: tests.yaml covers every alert; tests-30d.yaml holds the slow 30-day-window case.
TEST_FILES = (ALERTS / "tests.yaml", ALERTS / "tests-30d.yaml")

#: The operator's metrics (names as scraped), plus `up` for the operator-down rule.
KNOWN_METRICS = frozenset({
    "supportcase_first_response_deadline_timestamp_seconds",
    "supportcase_first_response_warning_timestamp_seconds",
    "supportcase_first_responses_total",
    "supportcase_first_response_business_seconds_bucket",
    "supportcase_first_response_business_seconds_sum",
    "supportcase_first_response_business_seconds_count",
    "supportcase_open_cases",
    "supportcase_resolution_deadline_timestamp_seconds",
    "supportcase_resolution_warning_timestamp_seconds",
    "supportcase_resolutions_total",
    "supportcase_waiting_on_customer_since_timestamp_seconds",
    "supportcase_resolution_business_seconds_bucket",
    "supportcase_resolution_business_seconds_sum",
    "supportcase_resolution_business_seconds_count",
    "supportcase_monthly_cases",
    "supportcase_escalation_tier",
    "supportcase_root_cause_analysis_due_timestamp_seconds",
    "supportcase_monthly_compliance_ratio",
    "supportcase_compliance_target_ratio",
    "fluxsupport_bulletin_components",
    "fluxsupport_component_vulnerable",
    "fluxsupport_bulletin_patch_overdue",
    "fluxsupport_bulletin_vendor_remediation_due_timestamp_seconds",
    "fluxsupport_bulletin_vendor_remediation_overdue",
    "fluxsupport_bulletin_escalation_tier",
    "fluxsupport_flux_minors_behind",
    "fluxsupport_flux_supported",
    "fluxsupport_flux_component_newer_build",
    "fluxsupport_advisory_feed_up",
    "fluxsupport_advisory_feed_last_import_timestamp_seconds",
    "fluxsupport_advisory_feed_advisories",
    "fluxsupport_build_info",
    "fluxsupport_submissions_total",
    "fluxsupport_submission_latency_seconds_bucket",
    "fluxsupport_submission_latency_seconds_sum",
    "fluxsupport_submission_latency_seconds_count",
    "fluxsupport_portal_last_sync_timestamp_seconds",
    "fluxsupport_supportcase_submission_pending_seconds",
})

_PROMQL_WORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on",
                           "ignoring", "group_left", "group_right", "inf", "nan", "atan2"})


def promtool_path() -> pathlib.Path:
    """promtool from `make promtool` (unpacked into the cache) or from PATH; fail otherwise."""
    cached = paths.cache_dir() / "prometheus" / "usr" / "bin" / "promtool"
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    found = shutil.which("promtool")
    if found:
        return pathlib.Path(found)
    pytest.fail(f"promtool is missing: run `make promtool` (it unpacks Debian's prometheus package "
                f"into {cached.parent.parent.parent}) or install the prometheus package.")


def promtool(*args: str, cwd: pathlib.Path = ALERTS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool_path()), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a tokenizer, not a parser; promtool parses)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", text):
        if text[match.end():].lstrip().startswith("("):
            continue  # a function or aggregation
        if match.group().lower() not in _PROMQL_WORDS:
            names.add(match.group())
    return names


def load_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_tests() -> list[dict[str, Any]]:
    cases = []
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            cases.extend(test.get("alert_rule_test") or [])
    return cases


def test_promtool_check_rules_accepts_the_rules_file() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", *(path.name for path in TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES), result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case_in_tests_yaml() -> None:
    alerts = {rule["alert"] for rule in load_rules()}
    assert alerts == {
        "SupportCaseFirstResponseAtRisk", "SupportCaseFirstResponseBreached",
        "SupportCaseFirstResponseComplianceLow", "FluxComponentVulnerable",
        "SecurityBulletinPatchOverdue", "FluxSupportOperatorDown",
        "SupportCaseNotSubmitted", "FluxSupportPortalSyncStale",
        "SupportCaseResolutionAtRisk", "SupportCaseResolutionBreached",
        "SupportCaseMonthlyComplianceLow", "FluxReleaseUnsupported",
        "FluxComponentNewerBuildAvailable", "FluxSupportAdvisoryFeedFailing",
        "SupportCaseWaitingOnCustomerLong",
        "SupportCaseEscalated", "SupportCaseRootCauseAnalysisOverdue",
        "SecurityBulletinVendorRemediationOverdue", "SecurityBulletinEscalated"}
    main_file = yaml.safe_load(TEST_FILES[0].read_text())
    cases = [case for test in main_file["tests"] for case in test.get("alert_rule_test") or []]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown quiet"
    assert {case["alertname"] for case in alert_tests()} <= alerts, "tests of unknown alerts"


def test_breached_pages_for_levels_1_and_2_and_opens_tickets_for_3_and_4() -> None:
    routing: dict[str, str] = {}
    for rule in load_rules():
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        if rule["alert"] == "SupportCaseFirstResponseBreached":
            levels = re.search(r'level=~"([0-9|]+)"', rule["expr"])
            assert levels is not None, rule["expr"]
            for level in levels.group(1).split("|"):
                assert level not in routing, f"level {level} routed twice"
                routing[level] = rule["labels"]["severity"]
    assert routing == {"1": "page", "2": "page", "3": "ticket", "4": "ticket"}
    # The tests show it with real series: each level's breach carries the expected severity.
    shown = {(alert["exp_labels"]["level"], alert["exp_labels"]["severity"])
             for case in alert_tests() if case["alertname"] == "SupportCaseFirstResponseBreached"
             for alert in case.get("exp_alerts") or []}
    assert shown == set(routing.items())


def test_rules_select_the_fluxsupport_job_and_known_metrics_only() -> None:
    for rule in load_rules():
        names = metric_names(rule["expr"])
        assert names, rule["expr"]
        assert names <= KNOWN_METRICS | {"up"}, (rule["alert"], names - KNOWN_METRICS)
        selectors = re.findall(r"\b[a-z_:][\w:]*\{([^}]*)\}", rule["expr"])
        assert selectors, rule["expr"]
        for selector in selectors:
            assert 'job="fluxsupport"' in selector, (rule["alert"], selector)
        # Alert labels overwrite series labels: the case label must not be called severity.
        assert "severity" not in rule["expr"]


def test_not_submitted_pages_for_levels_1_and_2_and_opens_tickets_for_3_and_4() -> None:
    routing: dict[str, str] = {}
    for rule in load_rules():
        if rule["alert"] == "SupportCaseNotSubmitted":
            assert "for" not in rule, "15 minutes are in the threshold"
            assert rule["expr"].strip().endswith("> 900"), rule["expr"]
            levels = re.search(r'level=~"([0-9|]+)"', rule["expr"])
            assert levels is not None, rule["expr"]
            for level in levels.group(1).split("|"):
                assert level not in routing, f"level {level} routed twice"
                routing[level] = rule["labels"]["severity"]
    assert routing == {"1": "page", "2": "page", "3": "ticket", "4": "ticket"}


def test_operator_down_uses_absent_and_the_compliance_rule_has_its_guards() -> None:
    rules = {rule["alert"]: rule for rule in load_rules()}
    assert rules["FluxSupportOperatorDown"]["expr"].strip() == 'absent(up{job="fluxsupport"} == 1)'
    compliance = rules["SupportCaseFirstResponseComplianceLow"]
    assert compliance["for"] == "1h"
    assert "< 0.95" in compliance["expr"]
    assert ">= 10" in compliance["expr"]
    assert compliance["expr"].count("[30d]") == 3


@pytest.mark.parametrize(("original", "broken"), [
    pytest.param('level=~"1|2"', 'level=~"1"', id="level-2-breach-not-paged"),
    pytest.param(">= 10", ">= 5", id="volume-guard-weakened"),
    pytest.param("for: 1h", "for: 10m", id="compliance-for-shortened"),
    pytest.param("[30d]", "[40d]", id="compliance-window-widened"),
    # delta() reads a counter reset at a restart as a drop (tests.yaml, "a counter reset ...").
    pytest.param("increase(", "delta(", id="compliance-misreads-a-counter-reset"),
    pytest.param("absent(up{job=\"fluxsupport\"} == 1)", "absent(up{job=\"fluxsupport\"})",
                 id="operator-down-ignores-failed-scrapes"),
    pytest.param("_seconds{job=\"fluxsupport\", level=~\"1|2\"} > 900",
                 "_seconds{job=\"fluxsupport\", level=~\"1|2\"} >= 900",
                 id="not-submitted-fires-at-exactly-15-minutes"),
    pytest.param("_seconds{job=\"fluxsupport\", level=~\"3|4\"} > 900",
                 "_seconds{job=\"fluxsupport\", level=~\"3|4\"} > 1800",
                 id="not-submitted-level-4-delayed"),
    pytest.param("> 600", "> 300", id="portal-sync-stale-too-early"),
    pytest.param('resolution_deadline_timestamp_seconds{job="fluxsupport", level=~"1|2"}',
                 'resolution_deadline_timestamp_seconds{job="fluxsupport", level=~"2"}',
                 id="resolution-breach-of-level-1-not-paged"),
    pytest.param("< on (job, instance) group_left ()", "<= on (job, instance) group_left ()",
                 id="monthly-compliance-fires-at-exactly-the-target"),
    pytest.param("supportcase_compliance_target_ratio{job=\"fluxsupport\"}", "0.8",
                 id="monthly-compliance-fixed-threshold-instead-of-the-policy"),
    pytest.param("vendor_remediation_overdue{job=\"fluxsupport\"} == 1",
                 "vendor_remediation_overdue{job=\"fluxsupport\"} >= 0",
                 id="vendor-remediation-fires-before-the-due-time"),
    pytest.param("fluxsupport_portal_last_sync_timestamp_seconds{job=\"fluxsupport\"} > 0\n",
                 "fluxsupport_portal_last_sync_timestamp_seconds{job=\"fluxsupport\"} >= 0\n",
                 id="portal-sync-stale-before-the-first-sync"),
])
def test_the_unit_tests_catch_a_broken_rule(tmp_path: pathlib.Path, original: str,
                                            broken: str) -> None:
    text = RULES.read_text()
    assert original in text
    (tmp_path / RULES.name).write_text(text.replace(original, broken))
    for path in TEST_FILES:
        shutil.copy(path, tmp_path / path.name)
    result = promtool("test", "rules", *(path.name for path in TEST_FILES), cwd=tmp_path)
    assert result.returncode != 0, f"promtool tests still pass with {broken!r}"
    assert "FAILED" in result.stdout + result.stderr


def test_metric_name_tokenizer() -> None:
    expr = ('histogram_quantile(0.9, sum by (le, level) (increase('
            'supportcase_first_response_business_seconds_bucket{job=~"$job"}[$__range])))'
            ' / on (job) group_left(version) fluxsupport_build_info or vector(0)')
    assert metric_names(expr) == {"supportcase_first_response_business_seconds_bucket",
                                  "fluxsupport_build_info"}
    assert metric_names('absent(up{job="a"} == 1) and bool x offset 5m') == {"up", "x"}
