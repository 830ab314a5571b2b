"""The support-policy-2026 preset: loading and precedence, the worked examples of
docs/sla-policy.md, resolution targets, the workaround rule and monthly compliance."""

from __future__ import annotations

import datetime
import json
import pathlib
import subprocess
import sys
import time
from typing import Any

import pytest

from fluxsupport import constants
from fluxsupport.cli.report import monthly_compliance
from fluxsupport.domain import casestatus, conditions, evaluation, supportcase, timing
from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import LEVEL_NAMES, Policy, PolicyError, load_policy
from fluxsupport.observability import metrics
from tests.fixtures import EMEA, SLA_POLICY_DOC, at, doc_moment, doc_table, preset_2026
from tests.unit.test_metrics import fake_client, handle, samples

EMEA_CALENDAR = BusinessCalendar(EMEA)
CREATED = datetime.datetime(2026, 11, 30, 10, 0, tzinfo=datetime.UTC)  # Monday, London


def test_preset_and_region_alone_are_a_complete_policy() -> None:
    amer = load_policy("preset: support-policy-2026\nregion: AMER\n")
    assert (amer.timezone, amer.holidays) == ("America/New_York", "US")
    assert (amer.business_hours.start, amer.business_hours.end) == ("09:00", "17:00")
    assert [amer.targets.for_level(level) for level in (1, 2, 3, 4)] == \
        [3600, 4 * 3600, 8 * 3600, 16 * 3600]
    assert [amer.resolution_targets.for_level(level) for level in (1, 2, 3, 4)] == \
        [4 * 3600, 8 * 3600, 16 * 3600, 40 * 3600]
    assert amer.always_open_levels == (1,)
    assert amer.compliance_target == 0.95
    assert amer.workaround_lowers_severity
    apac = load_policy("preset: support-policy-2026\nregion: APAC\n")
    assert (apac.timezone, apac.holidays) == ("Australia/Sydney", "AU-NSW")
    assert (EMEA.timezone, EMEA.holidays) == ("Europe/London", "GB-ENG")


def test_the_default_preset_is_todays_behaviour() -> None:
    default = load_policy("preset: technical-support-policy\n")
    assert default == Policy() == load_policy("")
    assert [default.resolution_targets.for_level(level) for level in (1, 2, 3, 4)] == \
        [None] * 4
    assert default.always_open_levels == ()
    assert not default.workaround_lowers_severity


def test_written_keys_override_the_preset_and_mappings_merge_key_by_key() -> None:
    policy = load_policy("preset: support-policy-2026\nregion: EMEA\ntimezone: Europe/Berlin\n"
                         "holidays: DE-BE\ntargets: {Low: 3d}\nbusinessHours: {end: '18:00'}\n"
                         "resolutionTargets: {Urgent: null}\nalwaysOpenLevels: []\n")
    assert (policy.timezone, policy.holidays) == ("Europe/Berlin", "DE-BE")
    assert [policy.targets.for_level(level) for level in (1, 2, 3, 4)] == \
        [3600, 4 * 3600, 8 * 3600, 3 * 86400]
    assert (policy.business_hours.start, policy.business_hours.end) == ("09:00", "18:00")
    assert policy.resolution_targets.for_level(1) is None
    assert policy.resolution_targets.for_level(2) == 8 * 3600
    assert policy.always_open_levels == ()
    # A dumped policy loads back to itself: `sla due` merges its options that way.
    assert load_policy(json.dumps(policy.model_dump(by_alias=True, mode="json"))) == policy
    assert Policy(timezone="Europe/Berlin").timezone == "Europe/Berlin"


@pytest.mark.parametrize(("text", "fragment"), [
    ("preset: support-policy-2026", "needs region: AMER, EMEA or APAC"),
    ("region: AMER", "region applies to preset support-policy-2026 only"),
    ("preset: support-policy-2027", "preset: Input should be 'technical-support-policy'"),
    ("preset: support-policy-2026\nregion: LATAM", "region: Input should be 'AMER'"),
    ("alwaysOpenLevels: [5]", "unknown level 5"),
    ("complianceTarget: 1.5", "complianceTarget: Input should be less than or equal to 1"),
])
def test_preset_errors_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as raised:
        load_policy(text, source="policy.yaml")
    assert fragment in str(raised.value)


# ---- the worked examples of docs/sla-policy.md ----------------------------------------------

def worked_examples() -> list[list[str]]:
    return doc_table(SLA_POLICY_DOC, "### Worked examples for support-policy-2026", [
        "Region", "Severity", "Opened", "First response due", "Resolution due"])


def test_the_docs_have_the_examples_the_issue_asks_for() -> None:
    examples = worked_examples()
    assert len(examples) >= 10
    regions = {row[0] for row in examples}
    assert regions == {"AMER", "EMEA", "APAC"}
    # A DST week in AMER: an offset change between opening and resolution.
    assert any(row[0] == "AMER" and doc_moment(row[2]).utcoffset() != doc_moment(row[4]).utcoffset()
               and row[1] != "1" for row in examples)
    # Severity 1 over a weekend.
    assert any(row[1] == "1" and doc_moment(row[2]).weekday() >= 5 for row in examples)


@pytest.mark.parametrize("row", worked_examples(), ids=lambda row: f"{row[0]}-{row[1]}-{row[2]}")
def test_worked_example(row: list[str]) -> None:
    region, severity, opened, response, resolution = row[:5]
    policy = preset_2026(region)
    calendar = BusinessCalendar(policy)
    level = int(severity.split()[0])
    spec = {"title": "t", "description": "d", "severity": LEVEL_NAMES[level],
            "impact": {"statement": "s", "environment": "production", "outage": "partial",
                       "businessCritical": True},
            "component": "helm-controller", "category": "incident",
            "workaround": "workaround" in severity}
    created = doc_moment(opened)
    result = supportcase.evaluate(spec=spec, annotations={}, created=created, generation=1,
                                  previous={}, policy=policy, calendar=calendar, now=created)
    status = result.status
    assert timing.parse_time(status["firstResponse"]["deadline"]) == doc_moment(response)
    assert timing.parse_time(status["resolution"]["deadline"]) == doc_moment(resolution)
    # Shown in local time, the deadlines have the offsets the table writes.
    local = timing.parse_time(status["resolution"]["deadline"]).astimezone(calendar.zone)
    assert local.utcoffset() == doc_moment(resolution).utcoffset()


def test_sla_due_reads_a_file_with_only_preset_and_region(tmp_path: pathlib.Path) -> None:
    policy = tmp_path / "policy-2026.yaml"
    policy.write_text("preset: support-policy-2026\nregion: AMER\n")
    result = subprocess.run(
        [sys.executable, "-m", "fluxsupport", "sla", "due", "--level", "4", "--opened",
         "2026-03-06T15:00:00-05:00", "--policy", str(policy), "--json"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "startedAt": "2026-03-06T15:00:00-05:00", "warningAt": "2026-03-10T11:00:00-04:00",
        "deadline": "2026-03-10T15:00:00-04:00",
        "resolutionWarningAt": "2026-03-12T13:00:00-04:00",
        "resolutionDeadline": "2026-03-13T15:00:00-04:00"}
    # The same command is documented in docs/sla-policy.md.
    assert result.stdout.strip() in SLA_POLICY_DOC.read_text()


# ---- resolution clock, workaround, compliance -----------------------------------------------

def spec(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "title": "HelmReleases stuck", "description": "...", "severity": "High",
        "impact": {"statement": "Deploys blocked", "environment": "production",
                   "outage": "partial", "businessCritical": True},
        "component": "helm-controller", "category": "incident"}
    base.update(changes)
    return base


def evaluate(case_spec: dict[str, Any], now: datetime.datetime,
             annotations: dict[str, str] | None = None, previous: dict[str, Any] | None = None,
             policy: Policy = EMEA) -> evaluation.Evaluation[casestatus.CaseMetrics]:
    return supportcase.evaluate(spec=case_spec, annotations=annotations or {}, created=CREATED,
                                generation=1, previous=previous or {}, policy=policy,
                                calendar=BusinessCalendar(policy), now=now)


def kinds(result: evaluation.Evaluation[casestatus.CaseMetrics]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in result.status["conditions"]}


def test_resolution_clock_pending_at_risk_breached() -> None:
    # High: resolution 8 Support Hours, Mon 10:00 -> Tue 10:00; warning at 6 h, Mon 16:00.
    pending = evaluate(spec(), at("2026-11-30T11:00:00Z"))
    assert pending.status["resolution"] == {
        "startedAt": "2026-11-30T10:00:00Z", "warningAt": "2026-11-30T16:00:00Z",
        "deadline": "2026-12-01T10:00:00Z", "targetSeconds": 28800, "state": "Pending",
        "calendar": EMEA.fingerprint(), "level": 2}
    assert kinds(pending)["ResolutionAtRisk"] == ("False", "WithinBudget")
    assert kinds(pending)["ResolutionBreached"] == ("False", "WithinDeadline")
    # First response due Mon 14:00 comes first, then the resolution's warning point.
    assert pending.next_transition == at("2026-11-30T13:00:00Z")
    assert pending.metrics is not None
    assert pending.metrics.resolution_deadline == at("2026-12-01T10:00:00Z").timestamp()
    responded = {constants.RESPONDED_AT: "2026-11-30T11:30:00Z"}
    later = evaluate(spec(), at("2026-11-30T16:30:00Z"), responded, pending.status)
    assert later.status["resolution"]["state"] == "AtRisk"
    assert kinds(later)["ResolutionAtRisk"] == ("True", "WarningPointPassed")
    assert later.next_transition == at("2026-12-01T10:00:00Z")
    breached = evaluate(spec(), at("2026-12-01T10:00:00Z"), responded, later.status)
    assert breached.status["resolution"]["state"] == "Breached"
    assert breached.status["resolution"]["breachedAt"] == "2026-12-01T10:00:00Z"
    assert kinds(breached)["ResolutionBreached"] == ("True", "DeadlinePassed")
    assert [event.reason for event in breached.events] == ["ResolutionBreached"]
    assert breached.metrics is not None
    assert breached.metrics.compliance == "missed"
    # Resolved later: Late, and the breach stays.
    resolved = {**responded, constants.RESOLVED_AT: "2026-12-01T12:00:00Z"}
    late = evaluate(spec(), at("2026-12-01T12:01:00Z"), resolved, breached.status)
    assert late.status["resolution"]["state"] == "Late"
    assert late.status["resolution"]["resolvedAt"] == "2026-12-01T12:00:00Z"
    assert late.status["resolution"]["businessSeconds"] == 7 * 3600 + 3 * 3600
    assert kinds(late)["ResolutionBreached"] == ("True", "ResolvedLate")
    assert late.metrics is not None
    assert late.metrics.resolution_outcome == "breached"
    assert late.metrics.resolution_deadline is None


def test_resolved_in_time_meets_every_target() -> None:
    annotations = {constants.RESPONDED_AT: "2026-11-30T11:00:00Z",
                   constants.RESOLVED_AT: "2026-11-30T15:00:00Z"}
    result = evaluate(spec(), at("2026-11-30T15:01:00Z"), annotations)
    assert result.status["resolution"]["state"] == "Met"
    assert result.status["resolution"]["businessSeconds"] == 5 * 3600
    assert kinds(result)["ResolutionBreached"] == ("False", "ResolvedInTime")
    assert casestatus.compliance_outcome(result.status) == "met"
    assert result.metrics is not None
    assert (result.metrics.resolution_outcome, result.metrics.resolution_business_seconds) == \
        ("met", 5 * 3600)
    # Nothing left to time but the root-cause analysis Severity 2 is owed: 10 days on.
    assert result.next_transition == at("2026-12-10T15:00:00Z")


def test_severity_1_runs_around_the_clock_for_both_targets() -> None:
    # Sunday 2026-11-29 22:00 London: due 23:00 and Monday 02:00, at night.
    created = at("2026-11-29T22:00:00Z")
    result = supportcase.evaluate(spec=spec(severity="Urgent"), annotations={}, created=created,
                                  generation=1, previous={}, policy=EMEA,
                                  calendar=EMEA_CALENDAR, now=created)
    assert result.status["firstResponse"]["deadline"] == "2026-11-29T23:00:00Z"
    assert result.status["resolution"]["deadline"] == "2026-11-30T02:00:00Z"
    answered = {constants.RESPONDED_AT: "2026-11-29T22:30:00Z"}
    later = supportcase.evaluate(spec=spec(severity="Urgent"), annotations=answered,
                                 created=created, generation=1, previous=result.status,
                                 policy=EMEA, calendar=EMEA_CALENDAR,
                                 now=at("2026-11-29T22:31:00Z"))
    assert later.status["firstResponse"]["businessSeconds"] == 1800  # wall-clock, not 0


def test_a_workaround_lowers_severity_2_to_3_with_a_condition() -> None:
    plain = evaluate(spec(), at("2026-11-30T11:00:00Z"))
    lowered = evaluate(spec(workaround=True), at("2026-11-30T11:00:00Z"), previous=plain.status)
    assert lowered.status["level"] == 3
    assert lowered.status["firstResponse"]["deadline"] == "2026-12-01T10:00:00Z"
    assert lowered.status["resolution"]["deadline"] == "2026-12-02T10:00:00Z"
    assert kinds(lowered)["WorkaroundApplied"] == ("True", "SeverityLowered")
    assert "recomputed from the same start" in lowered.status["firstResponse"]["recalculation"]
    assert [event.reason for event in lowered.events] == ["SeverityChanged"]
    # Under the default preset the workaround is recorded but changes nothing.
    default = evaluate(spec(workaround=True), at("2026-11-30T11:00:00Z"), policy=Policy())
    assert default.status["level"] == 2
    assert kinds(default)["WorkaroundApplied"] == ("False", "LevelUnchanged")
    assert "resolution" not in default.status
    # Only Level 2 is lowered.
    urgent = evaluate(spec(severity="Urgent", workaround=True), at("2026-11-30T11:00:00Z"))
    assert urgent.status["level"] == 1
    assert kinds(urgent)["WorkaroundApplied"] == ("False", "LevelUnchanged")


def test_default_preset_has_no_resolution_clock_and_the_same_conditions() -> None:
    result = evaluate(spec(), at("2026-11-30T11:00:00Z"), policy=Policy())
    assert "resolution" not in result.status
    assert not {"ResolutionAtRisk", "ResolutionBreached", "WorkaroundApplied"} & set(
        kinds(result))
    # A level without a resolution target drops a clock stored for another level.
    custom = Policy.model_validate({"resolutionTargets": {"Urgent": "1d"}})
    urgent = evaluate(spec(severity="Urgent"), at("2026-11-30T11:00:00Z"), policy=custom)
    assert urgent.status["resolution"]["targetSeconds"] == 86400
    high = evaluate(spec(), at("2026-11-30T11:00:00Z"), previous=urgent.status, policy=custom)
    assert high.status["resolution"] is None


def test_compliance_outcomes() -> None:
    met = {"firstResponse": {"state": "Met"}, "resolution": {"state": "Met"}}
    assert casestatus.compliance_outcome(met) == "met"
    assert casestatus.compliance_outcome({"firstResponse": {"state": "Met"}}) == "met"
    assert casestatus.compliance_outcome(
        {"firstResponse": {"state": "Met"}, "resolution": {"state": "Pending"}}) == "pending"
    assert casestatus.compliance_outcome(
        {"firstResponse": {"state": "Late"}, "resolution": {"state": "Met"}}) == "missed"
    assert casestatus.compliance_outcome(
        {"firstResponse": {"state": "Met"}, "resolution": {"state": "Breached"},
         "closure": {"outcome": "Dismissed"}}) == "missed"
    assert casestatus.compliance_outcome(
        {"firstResponse": {"state": "Closed"}, "resolution": {"state": "Closed"},
         "closure": {"outcome": "Dismissed"}}) is None
    assert casestatus.compliance_outcome({}) is None


def _item(created: str, status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"creationTimestamp": created}, "status": status}


def test_report_compliance_groups_cases_by_month_of_creation_in_the_policy_zone() -> None:
    met = {"firstResponse": {"state": "Met"}, "resolution": {"state": "Met"}}
    missed = {"firstResponse": {"state": "Met"}, "resolution": {"state": "Late"}}
    pending = {"firstResponse": {"state": "Pending"}, "resolution": {"state": "Pending"}}
    items = [_item(f"2026-11-{day:02d}T12:00:00Z", met) for day in range(2, 21)]
    items += [_item("2026-11-25T12:00:00Z", missed), _item("2026-11-26T12:00:00Z", pending),
              # 23:30 UTC on 30 November is 10:30 on 1 December in Sydney.
              _item("2026-11-30T23:30:00Z", missed)]
    emea = monthly_compliance(items, EMEA)
    assert emea == [{"month": "2026-11", "met": 19, "missed": 2, "pending": 1,
                     "ratio": 19 / 21, "target": 0.95, "belowTarget": True}]
    apac = monthly_compliance(items, load_policy("preset: support-policy-2026\nregion: APAC"))
    assert [(row["month"], row["met"], row["missed"]) for row in apac] == \
        [("2026-12", 0, 1), ("2026-11", 19, 1)]
    assert apac[1]["ratio"] == 0.95
    assert not apac[1]["belowTarget"]


def test_collector_exports_monthly_compliance_and_resolution_series() -> None:
    from fluxsupport.controllers.supportcase import CaseController

    cases = CaseController(EMEA, fake_client())
    now = time.time()
    this_month, previous_month = metrics.month_starts(now, cases.calendar.zone)
    created = datetime.datetime.fromtimestamp(now - 120, datetime.UTC)
    stamp = conditions.rfc3339(created)
    body = {
        "metadata": {"namespace": "team-a", "name": "fixed", "uid": "uid-1",
                     "resourceVersion": "1", "generation": 1, "creationTimestamp": stamp,
                     "annotations": {constants.RESPONDED_AT: stamp,
                                     constants.RESOLVED_AT: stamp}},
        "spec": spec(severity="Urgent"), "status": {}}
    handle(cases, body)
    open_body = {**body, "metadata": {**body["metadata"], "name": "open", "uid": "uid-2",
                                      "annotations": {}}}
    handle(cases, open_body)
    found = samples(metrics.CaseCollector(cases))
    assert found[("supportcase_resolutions_total", (("level", "1"), ("outcome", "met")))] == 1
    assert found[("supportcase_compliance_target_ratio", ())] == 0.95
    assert ("supportcase_resolution_deadline_timestamp_seconds",
            (("level", "1"), ("namespace", "team-a"), ("supportcase", "open"))) in found
    assert ("supportcase_resolution_deadline_timestamp_seconds",
            (("level", "1"), ("namespace", "team-a"), ("supportcase", "fixed"))) not in found
    # Created two minutes ago: this month in London unless the month turned meanwhile.
    month = created.astimezone(cases.calendar.zone).strftime("%Y-%m")
    assert month in (this_month, previous_month)
    assert found[("supportcase_monthly_cases", (("month", month), ("outcome", "met")))] == 1
    assert found[("supportcase_monthly_cases", (("month", month), ("outcome", "pending")))] == 1
    assert found[("supportcase_monthly_compliance_ratio", (("month", month),))] == 1.0
    other = previous_month if month == this_month else this_month
    assert found[("supportcase_monthly_cases", (("month", other), ("outcome", "met")))] == 0
    assert ("supportcase_monthly_compliance_ratio", (("month", other),)) not in found
