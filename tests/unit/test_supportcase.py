"""SupportCase evaluation: timing, lifecycle states, scope and severity conditions, events."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from fluxsupport import constants
from fluxsupport.domain import (
    caselifecycle,
    casespec,
    casestatus,
    evaluation,
    supportcase,
    timing,
)
from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import Policy, load_policy

POLICY = Policy()
CALENDAR = BusinessCalendar(POLICY)
CREATED = datetime.datetime(2026, 12, 7, 10, 0, tzinfo=datetime.UTC)  # Monday 10:00 London


def spec(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "title": "HelmReleases stuck", "description": "...", "severity": "High",
        "impact": {"statement": "Deploys blocked", "environment": "production",
                   "outage": "partial", "businessCritical": True},
        "component": "helm-controller", "category": "incident",
    }
    base.update(changes)
    return base


def evaluate(case_spec: dict[str, Any] | None = None, annotations: dict[str, str] | None = None,
             previous: dict[str, Any] | None = None, now: datetime.datetime | None = None,
             ) -> evaluation.Evaluation[casestatus.CaseMetrics]:
    """Evaluate; by default one minute after creation or after the latest lifecycle time,
    since the operator sees an annotation only once it is written."""
    if now is None:
        lifecycle = caselifecycle.parse_lifecycle(annotations or {})
        times = [t for t in (lifecycle.responded_at, lifecycle.resolved_at,
                             lifecycle.dismissed_at) if t is not None]
        now = max([CREATED, *times]) + datetime.timedelta(minutes=1)
    return supportcase.evaluate(
        spec=case_spec or spec(), annotations=annotations or {}, created=CREATED,
        generation=1, previous=previous or {}, policy=POLICY, calendar=CALENDAR, now=now)


def conditions(result: evaluation.Evaluation[casestatus.CaseMetrics]
               ) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in result.status["conditions"]}


def test_new_case_gets_its_deadline_and_all_conditions() -> None:
    result = evaluate()
    first = result.status["firstResponse"]
    assert first["startedAt"] == "2026-12-07T10:00:00Z"
    assert first["warningAt"] == "2026-12-07T16:00:00Z"  # 6 of 8 business hours
    assert first["deadline"] == "2026-12-07T18:00:00Z"  # 8 h run out exactly at closing
    assert first["state"] == "Pending"
    assert result.status["level"] == 2
    assert result.status["assessedLevel"] == 2
    assert conditions(result) == {
        "Ready": ("True", "Reconciled"),
        "InScope": ("True", "FluxComponent"),
        "SeverityConsistent": ("True", "ImpactSupportsSeverity"),
        "FirstResponded": ("False", "AwaitingResponse"),
        "FirstResponseAtRisk": ("False", "WithinBudget"),
        "FirstResponseBreached": ("False", "WithinDeadline"),
        "Submitted": ("False", "ChannelDisabled"),
    }
    assert result.events == ()
    assert result.next_transition == datetime.datetime(2026, 12, 7, 16, tzinfo=datetime.UTC)


def test_states_follow_the_clock() -> None:
    first = evaluate().status
    at_risk = evaluate(previous=first, now=datetime.datetime(2026, 12, 7, 16, tzinfo=datetime.UTC))
    assert at_risk.status["firstResponse"]["state"] == "AtRisk"
    assert conditions(at_risk)["FirstResponseAtRisk"] == ("True", "WarningPointPassed")
    assert at_risk.events == ()
    breached = evaluate(previous=at_risk.status,
                        now=datetime.datetime(2026, 12, 7, 18, tzinfo=datetime.UTC))
    assert breached.status["firstResponse"]["state"] == "Breached"
    assert conditions(breached)["FirstResponseBreached"] == ("True", "DeadlinePassed")
    assert breached.next_transition is None
    # The stored deadline never moves, even when re-evaluated much later.
    assert breached.status["firstResponse"]["deadline"] == first["firstResponse"]["deadline"]


def test_response_in_time_is_met_and_late_response_stays_breached() -> None:
    first = evaluate().status
    met = evaluate(annotations={constants.RESPONDED_AT: "2026-12-07T12:00:00Z",
                                constants.RESPONDED_BY: "alice"}, previous=first)
    assert met.status["firstResponse"]["state"] == "Met"
    assert met.status["firstResponse"]["respondedBy"] == "alice"
    assert met.status["firstResponse"]["businessSeconds"] == 2 * 3600
    assert met.metrics is not None
    assert met.metrics.outcome == "met"
    late = evaluate(annotations={constants.RESPONDED_AT: "2026-12-08T09:30:00+00:00"},
                    previous=first, now=datetime.datetime(2026, 12, 8, 10, tzinfo=datetime.UTC))
    assert late.status["firstResponse"]["state"] == "Late"
    assert conditions(late)["FirstResponseBreached"] == ("True", "RespondedLate")
    assert conditions(late)["FirstResponded"] == ("True", "Responded")


def test_response_exactly_at_the_deadline_is_met() -> None:
    first = evaluate().status
    met = evaluate(annotations={constants.RESPONDED_AT: first["firstResponse"]["deadline"]},
                   previous=first)
    assert met.status["firstResponse"]["state"] == "Met"


def test_severity_change_recomputes_from_the_same_start_and_says_so() -> None:
    first = evaluate().status
    urgent = evaluate(spec(severity="Urgent", impact={
        "statement": "All down", "environment": "production", "outage": "full",
        "businessCritical": True}), previous=first)
    assert urgent.status["firstResponse"]["startedAt"] == "2026-12-07T10:00:00Z"
    assert urgent.status["firstResponse"]["deadline"] == "2026-12-07T14:00:00Z"
    assert [e.reason for e in urgent.events] == ["SeverityChanged"]
    ready = next(c for c in urgent.status["conditions"] if c["type"] == "Ready")
    assert "Severity changed from Level 2 (High) to Level 1 (Urgent)" in ready["message"]
    assert "2026-12-07T18:00:00Z -> 2026-12-07T14:00:00Z" in ready["message"]


@pytest.mark.parametrize(("changes", "reason"), [
    ({"component": "other"}, "ThirdParty"),
    ({"requiresInfrastructureAccess": True}, "RequiresInfrastructureAccess"),
])
def test_out_of_scope_cases_keep_their_clock(changes: dict[str, Any], reason: str) -> None:
    result = evaluate(spec(**changes))
    assert conditions(result)["InScope"] == ("False", reason)
    message = next(c["message"] for c in result.status["conditions"] if c["type"] == "InScope")
    assert "support policy" in message
    assert "clock keeps running" in message
    assert result.status["firstResponse"]["state"] == "Pending"
    assert reason in [e.reason for e in result.events]


@pytest.mark.parametrize(("impact", "assessed"), [
    ({"environment": "production", "outage": "full", "businessCritical": True}, 1),
    ({"environment": "production", "outage": "partial", "businessCritical": True}, 2),
    ({"environment": "production", "outage": "degraded", "businessCritical": True}, 3),
    ({"environment": "production", "outage": "full", "businessCritical": False}, 4),
    ({"environment": "staging", "outage": "full", "businessCritical": True}, 4),
    ({"environment": "production", "outage": "none", "businessCritical": True}, 4),
])
def test_assessed_level(impact: dict[str, Any], assessed: int) -> None:
    assert casespec.assess_level(casespec.Impact.model_validate(
        {"statement": "x", **impact})) == assessed


def test_severity_above_impact_is_flagged_but_the_deadline_follows_the_claim() -> None:
    result = evaluate(spec(severity="Urgent", impact={
        "statement": "Staging slow", "environment": "staging", "outage": "degraded"}))
    assert conditions(result)["SeverityConsistent"] == ("False", "ImpactBelowSeverity")
    assert result.status["level"] == 1
    assert result.status["assessedLevel"] == 4
    assert result.status["firstResponse"]["deadline"] == "2026-12-07T14:00:00Z"


def test_dismissal_stops_the_clock() -> None:
    first = evaluate().status
    dismissed = evaluate(annotations={constants.DISMISSED_AT: "2026-12-07T11:00:00Z",
                                      constants.DISMISS_REASON: "third-party tool"},
                         previous=first)
    assert dismissed.status["firstResponse"]["state"] == "Closed"
    assert dismissed.status["closure"] == {"outcome": "Dismissed", "at": "2026-12-07T11:00:00Z",
                                           "reason": "third-party tool"}
    assert dismissed.next_transition is None
    assert dismissed.metrics is not None
    assert not dismissed.metrics.awaiting_response


def test_resolution_counts_as_the_response() -> None:
    resolved = evaluate(annotations={constants.RESOLVED_AT: "2026-12-07T11:00:00Z"})
    assert resolved.status["firstResponse"]["state"] == "Met"
    assert resolved.status["closure"]["outcome"] == "Resolved"


def test_bad_annotation_gives_ready_false_and_keeps_the_rest() -> None:
    result = evaluate(annotations={constants.RESPONDED_AT: "yesterday"})
    assert conditions(result)["Ready"] == ("False", "InvalidAnnotation")
    message = result.status["conditions"][0]["message"]
    assert constants.RESPONDED_AT in message
    assert "RFC 3339" in message
    assert result.status["firstResponse"]["state"] == "Pending"


def test_naive_times_are_rejected() -> None:
    result = evaluate(annotations={constants.RESPONDED_AT: "2026-12-07T11:00:00"})
    assert conditions(result)["Ready"] == ("False", "InvalidAnnotation")


def test_unchanged_case_evaluates_to_the_same_status() -> None:
    first = evaluate().status
    again = evaluate(previous=first, now=CREATED + datetime.timedelta(minutes=5))
    assert again.status == first
    assert again.events == ()


def test_a_breach_is_final_when_the_severity_is_lowered() -> None:
    first = evaluate(spec(severity="Urgent")).status
    breached = evaluate(spec(severity="Urgent"), previous=first,
                        now=datetime.datetime(2026, 12, 7, 14, 1, tzinfo=datetime.UTC))
    assert breached.status["firstResponse"]["state"] == "Breached"
    assert breached.status["firstResponse"]["breachedAt"] == "2026-12-07T14:00:00Z"
    lowered = evaluate(spec(severity="Low"), previous=breached.status,
                       now=datetime.datetime(2026, 12, 7, 14, 2, tzinfo=datetime.UTC))
    assert lowered.status["firstResponse"]["state"] == "Breached"
    assert conditions(lowered)["FirstResponseBreached"] == ("True", "DeadlinePassed")
    answered = evaluate(spec(severity="Low"),
                        annotations={constants.RESPONDED_AT: "2026-12-07T15:00:00Z"},
                        previous=lowered.status)
    assert answered.status["firstResponse"]["state"] == "Late"


def test_dismissal_exactly_at_the_deadline_is_not_a_breach() -> None:
    first = evaluate().status
    result = evaluate(annotations={constants.DISMISSED_AT: first["firstResponse"]["deadline"]},
                      previous=first)
    assert result.status["firstResponse"]["state"] == "Closed"


def test_first_response_is_written_once_unless_forced() -> None:
    """Regression: ``case respond`` overwrote an earlier response and erased responded-by."""
    existing = {constants.RESPONDED_AT: "2026-12-07T11:00:00Z", constants.RESPONDED_BY: "alice"}
    with pytest.raises(caselifecycle.AlreadyResponded,
                       match=r"already recorded at 2026-12-07T11:00:00Z by alice.*--force"):
        caselifecycle.first_response_annotations(existing, "2026-12-08T11:00:00Z", None, False)
    # Forced without --by: responded-by is not in the patch, so the merge patch keeps it.
    assert caselifecycle.first_response_annotations(
        existing, "2026-12-08T11:00:00Z", None, True) == {
        constants.RESPONDED_AT: "2026-12-08T11:00:00Z"}
    assert caselifecycle.first_response_annotations({}, "2026-12-07T11:00:00Z", "bob", False) == {
        constants.RESPONDED_AT: "2026-12-07T11:00:00Z", constants.RESPONDED_BY: "bob"}


def test_future_responded_at_is_ignored_with_a_condition_and_undone_by_fixing_it() -> None:
    """Regression: responded-at 2030 made the case Late and stored a breach for good."""
    now = CREATED + datetime.timedelta(hours=1)
    bad = evaluate(annotations={constants.RESPONDED_AT: "2030-01-01T00:00:00Z"}, now=now)
    first = bad.status["firstResponse"]
    assert first["state"] == "Pending"
    assert "breachedAt" not in first
    assert "respondedAt" not in first
    assert bad.metrics is not None
    assert bad.metrics.outcome is None
    assert bad.metrics.awaiting_response
    ready = next(c for c in bad.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "AnnotationInFuture")
    assert f"{constants.RESPONDED_AT}=2030-01-01T00:00:00Z is after the operator's clock " \
           "(2026-12-07T11:00:00Z) by more than the 5-minute clock-skew allowance" \
           in ready["message"]
    assert "case respond --force --at" in ready["message"]
    assert conditions(bad)["FirstResponseBreached"] == ("False", "WithinDeadline")
    assert bad.next_transition == datetime.datetime(2026, 12, 7, 16, tzinfo=datetime.UTC)

    fixed = evaluate(annotations={constants.RESPONDED_AT: "2026-12-07T10:30:00Z"},
                     previous=bad.status, now=now + datetime.timedelta(minutes=1))
    assert fixed.status["firstResponse"]["state"] == "Met"
    assert "breachedAt" not in fixed.status["firstResponse"]
    assert conditions(fixed)["Ready"] == ("True", "Reconciled")


def test_future_annotation_past_the_deadline_records_no_breach_from_it() -> None:
    now = CREATED + datetime.timedelta(hours=10)  # past the 18:00 deadline
    result = evaluate(annotations={constants.DISMISSED_AT: "2030-01-01T00:00:00Z"}, now=now)
    # The case is breached because nobody answered by 18:00, not because of the annotation.
    assert result.status["firstResponse"]["state"] == "Breached"
    assert result.status["firstResponse"]["breachedAt"] == "2026-12-07T18:00:00Z"
    assert result.status["closure"] is None
    assert conditions(result)["Ready"] == ("False", "AnnotationInFuture")


def test_a_time_within_the_clock_skew_allowance_counts() -> None:
    now = CREATED + datetime.timedelta(hours=1)
    ahead = rfc(now + datetime.timedelta(minutes=4))
    result = evaluate(annotations={constants.RESPONDED_AT: ahead}, now=now)
    assert result.status["firstResponse"]["state"] == "Met"
    assert conditions(result)["Ready"] == ("True", "Reconciled")
    # The skew-limited moment becomes acceptable later: the case is re-evaluated then.
    later = rfc(now + datetime.timedelta(minutes=20))
    waiting = evaluate(annotations={constants.RESPONDED_AT: later}, now=now)
    assert waiting.next_transition == now + datetime.timedelta(minutes=15)


def rfc(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
                                   "9999-12-31T23:59:59Z", "2100-01-01T00:00:00Z",
                                   "9999-12-31T23:59:59-14:00"])
def test_out_of_range_annotation_is_a_condition_not_a_traceback(value: str) -> None:
    """Regression: responded-at 9999-12-31T23:59:59Z (or year 1) raised in the calendar."""
    result = evaluate(annotations={constants.RESPONDED_AT: value},
                      now=CREATED + datetime.timedelta(hours=1))
    assert result.status["firstResponse"]["state"] == "Pending"
    ready = next(c for c in result.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidAnnotation")
    assert "is out of range" in ready["message"]
    assert "outside the supported years 1970-2099" in ready["message"]


def test_supported_years_are_inclusive() -> None:
    assert timing.parse_time("1970-01-01T00:00:00Z").year == 1970
    assert timing.parse_time("2099-12-31T23:59:59Z").year == 2099
    with pytest.raises(timing.TimeOutOfRange):
        timing.parse_time("2099-12-31T23:00:00-02:00")  # 2100 in UTC


# A decided outcome is final: a later severity change moves running clocks only.

EMEA = load_policy("preset: support-policy-2026\nregion: EMEA\n")
EMEA_CALENDAR = BusinessCalendar(EMEA)
OPENED = datetime.datetime(2026, 11, 30, 10, 0, tzinfo=datetime.UTC)  # Monday, London
URGENT = spec(severity="Urgent", impact={"statement": "All down", "environment": "production",
                                         "outage": "full", "businessCritical": True})


def emea(case_spec: dict[str, Any], annotations: dict[str, str], previous: dict[str, Any],
         now: str) -> evaluation.Evaluation[casestatus.CaseMetrics]:
    """Severity 2 is due in 4 Support Hours (14:00) and resolved in 8 (Tue 10:00); Severity
    1 in 1 hour (11:00) and 4 (14:00), wall-clock."""
    return supportcase.evaluate(
        spec=case_spec, annotations=annotations, created=OPENED, generation=1,
        previous=previous, policy=EMEA, calendar=EMEA_CALENDAR,
        now=datetime.datetime.fromisoformat(now))


def test_raising_the_severity_of_a_closed_case_keeps_its_decided_outcomes() -> None:
    closed = {constants.RESPONDED_AT: "2026-11-30T12:00:00Z",
              constants.RESOLVED_AT: "2026-11-30T15:00:00Z"}
    opened = emea(spec(), {}, {}, "2026-11-30T10:01:00+00:00")
    met = emea(spec(), closed, opened.status, "2026-11-30T15:01:00+00:00")
    assert (met.status["firstResponse"]["state"], met.status["resolution"]["state"]) == \
        ("Met", "Met")
    raised = emea(URGENT, closed, met.status, "2026-11-30T16:00:00+00:00")
    first, resolution = raised.status["firstResponse"], raised.status["resolution"]
    # Met against the Severity 2 deadlines it was decided against; Severity 1's would make
    # both Late (11:00 and 14:00).
    assert (first["state"], resolution["state"]) == ("Met", "Met")
    assert raised.status["level"] == 1
    assert (first["level"], first["deadline"]) == (2, "2026-11-30T14:00:00Z")
    assert (resolution["level"], resolution["deadline"]) == (2, "2026-12-01T10:00:00Z")
    for block in ("firstResponse", "resolution"):
        kept = {k: v for k, v in raised.status[block].items() if k != "recalculation"}
        assert kept == met.status[block]
    assert "breachedAt" not in first
    assert "breachedAt" not in resolution
    assert [event.reason for event in raised.events] == ["SeverityChanged"]
    assert first["recalculation"] == (
        "Severity changed from Level 2 (High) to Level 1 (Urgent): the first response stays "
        "Met, decided against the Level 2 (High) deadline 2026-11-30T14:00:00Z; the resolution "
        "stays Met, decided against the Level 2 (High) deadline 2026-12-01T10:00:00Z.")
    assert conditions(raised)["FirstResponseBreached"] == ("False", "RespondedInTime")
    assert conditions(raised)["ResolutionBreached"] == ("False", "ResolvedInTime")
    assert casestatus.compliance_outcome(raised.status) == "met"
    assert raised.metrics is not None
    assert (raised.metrics.outcome, raised.metrics.resolution_outcome) == ("met", "met")
    # Stable: evaluated again, nothing changes and nothing is posted.
    again = emea(URGENT, closed, raised.status, "2026-11-30T17:00:00+00:00")
    assert again.status == raised.status
    assert again.events == ()


def test_a_status_written_before_clocks_recorded_their_level_keeps_its_outcome() -> None:
    closed = {constants.RESPONDED_AT: "2026-11-30T12:00:00Z",
              constants.RESOLVED_AT: "2026-11-30T15:00:00Z"}
    met = emea(spec(), closed, {}, "2026-11-30T15:01:00+00:00").status
    for block in ("firstResponse", "resolution"):
        del met[block]["level"]  # the case's own level (2) applies
    raised = emea(URGENT, closed, met, "2026-11-30T16:00:00+00:00")
    assert raised.status["firstResponse"]["state"] == "Met"
    assert raised.status["resolution"]["state"] == "Met"
    assert raised.status["firstResponse"]["level"] == 2


def test_a_severity_change_after_the_response_moves_only_the_resolution_clock() -> None:
    answered = {constants.RESPONDED_AT: "2026-11-30T12:00:00Z"}
    met = emea(spec(), answered, {}, "2026-11-30T12:01:00+00:00")
    raised = emea(URGENT, answered, met.status, "2026-11-30T12:30:00+00:00")
    first, resolution = raised.status["firstResponse"], raised.status["resolution"]
    assert (first["state"], first["level"]) == ("Met", 2)
    # The running resolution clock follows Severity 1 from the case's creation.
    assert (resolution["state"], resolution["level"]) == ("Pending", 1)
    assert resolution["deadline"] == "2026-11-30T14:00:00Z"
    assert first["recalculation"] == (
        "Severity changed from Level 2 (High) to Level 1 (Urgent): the first response stays "
        "Met, decided against the Level 2 (High) deadline 2026-11-30T14:00:00Z; resolution "
        "deadline recomputed from the same start, 2026-12-01T10:00:00Z -> "
        "2026-11-30T14:00:00Z.")
    assert [event.reason for event in raised.events] == ["SeverityChanged"]
    assert raised.next_transition == datetime.datetime(2026, 11, 30, 13, tzinfo=datetime.UTC)
    resolved = emea(URGENT, {**answered, constants.RESOLVED_AT: "2026-11-30T14:30:00Z"},
                    raised.status, "2026-11-30T14:31:00+00:00")
    assert resolved.status["resolution"]["state"] == "Late"
    assert resolved.status["firstResponse"]["state"] == "Met"
    # The 2026 preset escalates: the resolution's warning point (13:00) passed unresolved.
    assert [event.reason for event in resolved.events] == ["ResolvedLate", "EscalatedTier1"]


def test_a_corrected_response_time_is_judged_against_the_decided_deadline() -> None:
    answered = {constants.RESPONDED_AT: "2026-11-30T12:00:00Z"}
    met = emea(spec(), answered, {}, "2026-11-30T12:01:00+00:00")
    raised = emea(URGENT, answered, met.status, "2026-11-30T12:30:00+00:00")
    # `case respond --force` corrects when the response was given: still Severity 2's 14:00.
    earlier = emea(URGENT, {constants.RESPONDED_AT: "2026-11-30T13:00:00Z"}, raised.status,
                   "2026-11-30T13:30:00+00:00")
    assert earlier.status["firstResponse"]["state"] == "Met"
    later = emea(URGENT, {constants.RESPONDED_AT: "2026-11-30T14:15:00Z"}, raised.status,
                 "2026-11-30T14:20:00+00:00")
    assert later.status["firstResponse"]["state"] == "Late"
    assert later.status["firstResponse"]["deadline"] == "2026-11-30T14:00:00Z"


def test_a_withdrawn_response_runs_the_clock_again_at_the_current_level() -> None:
    answered = {constants.RESPONDED_AT: "2026-11-30T10:30:00Z"}
    met = emea(spec(), answered, {}, "2026-11-30T10:31:00+00:00")
    raised = emea(URGENT, answered, met.status, "2026-11-30T10:40:00+00:00")
    assert raised.status["firstResponse"]["level"] == 2
    withdrawn = emea(URGENT, {}, raised.status, "2026-11-30T10:42:00+00:00")
    first = withdrawn.status["firstResponse"]
    assert (first["state"], first["level"], first["deadline"]) == \
        ("Pending", 1, "2026-11-30T11:00:00Z")
    assert first["recalculation"].startswith(
        "A decided outcome was withdrawn; the clock runs again at Level 1 (Urgent): deadline "
        "recomputed from the same start, 2026-11-30T14:00:00Z -> 2026-11-30T11:00:00Z")
    # The Ready condition says so; no SeverityChanged Event, the severity did not change.
    assert "SeverityChanged" not in [event.reason for event in withdrawn.events]


def test_lowering_the_severity_after_a_late_response_keeps_it_late() -> None:
    late = {constants.RESPONDED_AT: "2026-11-30T11:30:00Z"}
    urgent = emea(URGENT, late, {}, "2026-11-30T11:31:00+00:00")
    assert urgent.status["firstResponse"]["state"] == "Late"
    lowered = emea(spec(), late, urgent.status, "2026-11-30T12:00:00+00:00")
    assert lowered.status["firstResponse"]["state"] == "Late"
    assert lowered.status["firstResponse"]["deadline"] == "2026-11-30T11:00:00Z"
    assert casestatus.compliance_outcome(lowered.status) == "missed"
