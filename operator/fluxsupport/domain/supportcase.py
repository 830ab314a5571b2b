"""What a SupportCase's status should be, as a pure function of the case, the policy and now.

The handler and the deadline scheduler both call ``evaluate``. Because the result depends
only on the object and the clock, whichever of them writes last writes the right status.

The parts: casespec.py (the spec and the level it is handled at), caselifecycle.py (what
happened: the annotations and the portal's facts), caseclocks.py (the two SLA clocks and
their states), casestatus.py (clock states, monthly compliance, metric values). This module
puts them together: the status blocks, the conditions and the Events.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pydantic

from fluxsupport.domain import calendar as calendar_module
from fluxsupport.domain import (
    caseclocks,
    caseescalation,
    caselifecycle,
    casepauses,
    casespec,
    casestatus,
    conditions,
    evaluation,
    pause,
    scope,
)
from fluxsupport.domain import escalation as escalation_module
from fluxsupport.domain import policy as policy_module
from fluxsupport.domain import submission as submission_module
from fluxsupport.domain import timing as timing_module

#: Reasons of FirstResponseAtRisk and FirstResponseBreached, then of ResolutionAtRisk and
#: ResolutionBreached, by the state of their clock.
_AT_RISK_REASONS = {
    casestatus.State.PENDING: "WithinBudget", casestatus.State.AT_RISK: "WarningPointPassed",
    casestatus.State.BREACHED: "DeadlinePassed", casestatus.State.MET: "Responded",
    casestatus.State.LATE: "Responded", casestatus.State.CLOSED: "Dismissed"}
_BREACHED_REASONS = {
    casestatus.State.PENDING: "WithinDeadline", casestatus.State.AT_RISK: "WithinDeadline",
    casestatus.State.BREACHED: "DeadlinePassed", casestatus.State.MET: "RespondedInTime",
    casestatus.State.LATE: "RespondedLate", casestatus.State.CLOSED: "Dismissed"}
_RESOLUTION_AT_RISK_REASONS = {
    casestatus.State.PENDING: "WithinBudget", casestatus.State.AT_RISK: "WarningPointPassed",
    casestatus.State.BREACHED: "DeadlinePassed", casestatus.State.MET: "Resolved",
    casestatus.State.LATE: "Resolved", casestatus.State.CLOSED: "Dismissed"}
_RESOLUTION_BREACHED_REASONS = {
    casestatus.State.PENDING: "WithinDeadline", casestatus.State.AT_RISK: "WithinDeadline",
    casestatus.State.BREACHED: "DeadlinePassed", casestatus.State.MET: "ResolvedInTime",
    casestatus.State.LATE: "ResolvedLate", casestatus.State.CLOSED: "Dismissed"}


#: status.conversation: what the portal's sync found in the ticket's thread (the sync keeps
#: the same fields, with the ids of the replies, in status.submission.conversation).
CONVERSATION_FIELDS = ("supportReplies", "lastSupportReplyAt", "lastSupportReplyBy",
                       "lastCustomerMessageAt", "waitingOn", "rcaDeliveredAt", "rcaDeliveredBy")


def evaluate(*, spec: Mapping[str, Any], annotations: Mapping[str, str],
             created: datetime.datetime, generation: int, previous: Mapping[str, Any],
             policy: policy_module.Policy, calendar: calendar_module.BusinessCalendar,
             now: datetime.datetime, supported: scope.Supported | None = None,
             other_severity1_openings: Sequence[datetime.datetime] = (),
             ) -> evaluation.Evaluation[casestatus.CaseMetrics]:
    """Compute the whole status of a case; see the module docstring. ``supported``: the
    components in scope, from release data where the operator reads it (default: the
    built-in list and the policy's add-ons). ``other_severity1_openings``: when the other
    open or resolved Severity 1 cases of the case's escalation scope were opened (the
    repeated-Severity-1 tier)."""
    old_conditions = list(previous.get("conditions") or [])
    try:
        case = casespec.CaseSpec.model_validate(spec)
    except pydantic.ValidationError as error:
        return evaluation.invalid_spec(evaluation.invalid_spec_condition(error),
                                       old_conditions, generation, now)

    lifecycle = caselifecycle.parse_lifecycle(annotations, now)
    level = casespec.effective_level(case, policy)
    assessed = casespec.assess_level(case.impact)

    submission = previous.get("submission") or {}
    waits, lifecycle = _waits(annotations, submission, previous, now, lifecycle)
    portal = caselifecycle.portal_facts(submission)
    responded_at, responded_by, source = caselifecycle.first_response(lifecycle, portal)
    closure = caselifecycle.closure(lifecycle, portal)
    dismissed_at, closed_at = _closed_at(lifecycle, closure)
    awaiting = responded_at is None and dismissed_at is None

    timing, resolution_timing, timing_event, severity_note = caseclocks.clocks(
        previous, created, level, policy, calendar, not awaiting, closure is not None,
        waits.waits, waits.reopenings, responded_at or dismissed_at, closed_at)
    breached_at = caseclocks.breached_at(previous)
    state = caseclocks.state(timing, responded_at, dismissed_at, now, breached_at)

    first_response: dict[str, Any] = {
        "startedAt": _rfc(timing.started_at), "warningAt": _rfc(timing.warning_at),
        "deadline": _rfc(timing.deadline), "targetSeconds": timing.target_seconds,
        "state": state.value, "calendar": timing.calendar, "level": timing.level,
        **caseclocks.pause_fields(timing),
    }
    if severity_note:
        first_response["recalculation"] = severity_note.strip()
    if state in (casestatus.State.BREACHED, casestatus.State.LATE):
        first_response["breachedAt"] = _rfc(breached_at or min(timing.deadline, now))
    business_seconds = None
    if not awaiting:
        # Only once the clock has stopped: a ticking value would rewrite status forever.
        clock_end = responded_at or dismissed_at
        assert clock_end is not None
        business_seconds = max(0, int(calendar.for_level(timing.level).elapsed(
            created, clock_end) - timing.paused_seconds))
        first_response["businessSeconds"] = business_seconds
    if responded_at is not None:
        first_response["respondedAt"] = _rfc(responded_at)
        if responded_by:
            first_response["respondedBy"] = responded_by
        first_response["source"] = source

    resolution = caseclocks.resolution_block(resolution_timing, closure, previous, now, calendar,
                                             created)
    current = _conditions(case, level, assessed, state, timing, lifecycle, policy,
                          severity_note, responded_at, supported or scope.supported(policy))
    current += [*_resolution_conditions(resolution, resolution_timing, policy),
                *_workaround_condition(case, level, policy),
                *_waiting_condition(waits, timing if awaiting else None,
                                    resolution_timing if closure is None else None)]
    submitted = submission_module.condition(
        submission, level, policy.channels, closure is not None or dismissed_at is not None, now)
    current += [submitted, *submission_module.update_conditions(submission, policy.channels, now)]
    events = [*([timing_event] if timing_event else []),
              *_transition_events(previous, state, current, timing, responded_at),
              *_resolution_events(previous, resolution),
              *_portal_events(previous, closure, submission)]
    escalated = caseescalation.evaluate(
        policy, calendar, previous, annotations,
        _escalation_facts(created, level, timing, resolution_timing, responded_at, closure,
                          submission, other_severity1_openings, waits.waits),
        submission.get("rootCauseAnalysis"), now)

    status: dict[str, Any] = {
        "observedGeneration": generation,
        "level": level,
        "assessedLevel": assessed,
        "firstResponse": first_response,
        "closure": closure,
        "conditions": conditions.merge(old_conditions, [*current, *escalated.conditions],
                                       generation, now),
        **_portal_blocks(waits, submission),
        **escalated.blocks,
    }
    if resolution is not None or previous.get("resolution"):
        # None drops a clock stored for a level that had a resolution target.
        status["resolution"] = resolution
    awaited = resolution_timing if closure is None else None
    next_transition = caseclocks.next_transition(
        now, caseclocks.running(timing if awaiting else None), caseclocks.running(awaited),
        lifecycle.future_until)
    outcome: Literal["met", "breached"] | None = None
    if responded_at is not None:
        outcome = "met" if state is casestatus.State.MET else "breached"
    metrics = casestatus.CaseMetrics(
        level=level, state=state, awaiting_response=awaiting, open=closure is None,
        paused=timing.paused_since is not None,
        waiting_since=_waiting_since(waits, closure),
        deadline=timing.deadline.timestamp(), warning=timing.warning_at.timestamp(),
        outcome=outcome,
        response_business_seconds=business_seconds if responded_at is not None else None,
        created=created.timestamp(), compliance=casestatus.compliance_outcome(status),
        escalation_tier=escalated.tier, rca_due=escalated.rca_due,
        **_resolution_metrics(caseclocks.running(awaited), resolution),
    )
    return evaluation.Evaluation(
        status, (*events, *escalated.events),
        min(filter(None, (next_transition, escalated.next_at)), default=None), metrics)


def _escalation_facts(created: datetime.datetime, level: int, first: timing_module.Timing,
                      resolution: timing_module.Timing | None,
                      responded_at: datetime.datetime | None,
                      closure: Mapping[str, Any] | None, submission: Mapping[str, Any],
                      other_severity1_openings: Sequence[datetime.datetime],
                      waits: Sequence[pause.Pause]) -> caseescalation.Facts:
    """The facts the escalation tiers and the RCA read, from the clocks just computed."""
    closed_at = timing_module.parse_time(closure["at"]) if closure else None
    answered = min(filter(None, (responded_at, closed_at)), default=None)
    targets = [escalation_module.Target("first response", first.warning_at, answered)]
    if resolution is not None:
        targets.append(escalation_module.Target("resolution", resolution.warning_at,
                                                closed_at))
    resolved = closure is not None and closure.get("outcome") == "Resolved"
    return caseescalation.Facts(
        opened=created, level=level, targets=targets, first_response=responded_at,
        replies=caseescalation.support_replies(submission), closed_at=closed_at,
        resolved_at=closed_at if resolved else None,
        dismissed=closure is not None and not resolved,
        other_severity1_openings=other_severity1_openings, pauses=waits)


def _resolution_metrics(awaited: timing_module.Timing | None,
                        block: Mapping[str, Any] | None) -> dict[str, Any]:
    """The resolution fields of CaseMetrics: the clock while awaited, the outcome once
    resolved."""
    fields: dict[str, Any] = {}
    if awaited is not None:
        fields["resolution_deadline"] = awaited.deadline.timestamp()
        fields["resolution_warning"] = awaited.warning_at.timestamp()
    if block is not None and "resolvedAt" in block:
        met = block["state"] == casestatus.State.MET
        fields["resolution_outcome"] = "met" if met else "breached"
        fields["resolution_business_seconds"] = block.get("businessSeconds")
    return fields


def _resolution_conditions(block: Mapping[str, Any] | None, timing: timing_module.Timing | None,
                           policy: policy_module.Policy) -> list[conditions.Condition]:
    if block is None or timing is None:
        return []
    state = casestatus.State(block["state"])
    condition = conditions.Condition
    at_risk = state is casestatus.State.AT_RISK
    breached = state in (casestatus.State.BREACHED, casestatus.State.LATE)
    return [
        condition(
            type="ResolutionAtRisk", status="True" if at_risk else "False",
            reason=_RESOLUTION_AT_RISK_REASONS[state],
            message=f"Resolution warning point {_rfc(timing.warning_at)} "
                    f"({policy.warning_ratio:.0%} of the budget)."),
        condition(
            type="ResolutionBreached", status="True" if breached else "False",
            reason=_RESOLUTION_BREACHED_REASONS[state],
            message=f"Resolution deadline {_rfc(timing.deadline)}."),
    ]


def _waits(annotations: Mapping[str, str], submission: Mapping[str, Any],
           previous: Mapping[str, Any], now: datetime.datetime,
           lifecycle: caselifecycle.Lifecycle
           ) -> tuple[casepauses.CasePauses, caselifecycle.Lifecycle]:
    """The case's waits on the customer, and the lifecycle with what is wrong with them."""
    waits = casepauses.case_pauses(annotations, submission, previous, now)
    if waits.problems:
        lifecycle = dataclasses.replace(lifecycle,
                                        problems=lifecycle.problems + waits.problems)
    return waits, lifecycle


def _waiting_since(waits: casepauses.CasePauses,
                   closure: Mapping[str, Any] | None) -> float | None:
    since = waits.waiting_since if closure is None else None
    return since.timestamp() if since else None


def _closed_at(lifecycle: caselifecycle.Lifecycle, closure: Mapping[str, Any] | None
               ) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    """When the case was dismissed (by the annotation, or a rejected ticket), and closed."""
    closed_at = timing_module.parse_time(closure["at"]) if closure else None
    dismissed_at = lifecycle.dismissed_at
    if dismissed_at is None and closure is not None and closure["outcome"] == "Dismissed":
        dismissed_at = closed_at
    return dismissed_at, closed_at


def _portal_blocks(waits: casepauses.CasePauses,
                   submission: Mapping[str, Any]) -> dict[str, Any]:
    """status.pauses and status.conversation, where the case has them."""
    blocks: dict[str, Any] = {}
    if waits.recorded:
        blocks["pauses"] = list(waits.recorded)
    conversation = submission.get("conversation")
    if isinstance(conversation, Mapping) and conversation:
        blocks["conversation"] = {key: value for key, value in conversation.items()
                                  if key in CONVERSATION_FIELDS}
    return blocks


def _waiting_condition(waits: casepauses.CasePauses, first: timing_module.Timing | None,
                       resolution: timing_module.Timing | None) -> list[conditions.Condition]:
    """Waiting, for a case that ever waited on the customer: True while it waits, with what
    the held clocks have left."""
    if not waits.recorded:
        return []
    since = waits.waiting_since
    if since is None:
        last = max(wait.end for wait in waits.waits if wait.end is not None)
        return [conditions.Condition(
            type="Waiting", status="False", reason="NotWaiting",
            message=f"The last wait on the customer ended at {_rfc(last)}; the clocks run.")]
    held = [f"{name} has {_hours(clock.remaining_seconds or 0)} of business time left"
            for name, clock in (("the first response", first), ("the resolution", resolution))
            if clock is not None and clock.paused_since is not None]
    source = next((entry["source"] for entry in waits.recorded
                   if "end" not in entry and entry["start"] == _rfc(since)), "portal")
    how = "the ticket is stalled" if source == "portal" else \
        "the waiting-on-customer annotation is set"
    return [conditions.Condition(
        type="Waiting", status="True", reason="WaitingOnCustomer",
        message=f"Waiting on the customer since {_rfc(since)} ({how}); "
                + ("; ".join(held) if held else "no clock is running") + ".")]


def _hours(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _portal_events(previous: Mapping[str, Any], closure: Mapping[str, Any] | None,
                   submission: Mapping[str, Any]) -> list[evaluation.Event]:
    """An Event per support reply the portal's sync found (its transaction id, when, who:
    never its text), a reopening and a rejection. Each follows from what this write records
    (status.conversation.supportReplies, status.closure), so it is owed exactly once."""
    events = []
    told = int((previous.get("conversation") or {}).get("supportReplies") or 0)
    conversation = submission.get("conversation") or {}
    count = int(conversation.get("supportReplies") or 0)
    replies = [reply for reply in conversation.get("replies") or []
               if isinstance(reply, Mapping)]
    ticket = submission.get("ticketId", "")
    for number, reply in enumerate(replies, start=count - len(replies) + 1):
        if number > told:
            events.append(evaluation.Event(
                "Normal", "SupportReplied",
                f"Reply {number} of the support team in ticket {ticket} (transaction "
                f"{reply.get('id')}) at {reply.get('at')} by {reply.get('by')}."))
    before = previous.get("closure") or {}
    if before.get("source") == "portal" and closure is None:
        events.append(evaluation.Event(
            "Normal", "Reopened", f"Ticket {ticket} was reopened: the case is open again; the "
                                  "time it was closed does not count."))
    if closure is not None and closure.get("source") == "portal" and \
            closure["outcome"] == "Dismissed" and before.get("outcome") != "Dismissed":
        reason = closure.get("reason")
        events.append(evaluation.Event(
            "Normal", "Rejected", f"Ticket {ticket} was rejected by {closure.get('by')}: the "
                                  "case is dismissed" + (" with the support team's reason "
                                                         "in status.closure.reason."
                                                         if reason else ".")))
    return events


def _workaround_condition(case: casespec.CaseSpec, level: int,
                          policy: policy_module.Policy) -> list[conditions.Condition]:
    """WorkaroundApplied, while spec.workaround is true."""
    if not case.workaround:
        return []
    if level != case.level:
        return [conditions.Condition(
            type="WorkaroundApplied", status="True", reason="SeverityLowered",
            message=f"Claimed {casespec.describe_level(case.level)} with a working workaround: "
                    f"handled as {casespec.describe_level(level)}, whose targets the deadlines "
                    f"follow (policy {policy.preset}).")]
    why = ("only Level 2 is lowered" if policy.workaround_lowers_severity
           else f"policy {policy.preset} does not lower the level for a workaround")
    return [conditions.Condition(
        type="WorkaroundApplied", status="False", reason="LevelUnchanged",
        message=f"A workaround is recorded; {casespec.describe_level(level)} stays ({why}).")]


def _resolution_events(previous: Mapping[str, Any],
                       block: Mapping[str, Any] | None) -> list[evaluation.Event]:
    if block is None:
        return []
    old_state = (previous.get("resolution") or {}).get("state")
    if old_state == block["state"]:
        return []
    if block["state"] == casestatus.State.BREACHED:
        return [evaluation.Event("Warning", "ResolutionBreached",
                      f"Not resolved by the resolution deadline {block['deadline']}.")]
    if block["state"] == casestatus.State.LATE:
        return [evaluation.Event("Warning", "ResolvedLate",
                      f"Resolved at {block['resolvedAt']}, after the resolution deadline "
                      f"{block['deadline']}.")]
    return []


def _conditions(case: casespec.CaseSpec, level: int, assessed: int, state: casestatus.State,
                timing: timing_module.Timing, lifecycle: caselifecycle.Lifecycle,
                policy: policy_module.Policy, severity_note: str,
                responded_at: datetime.datetime | None,
                covered: scope.Supported) -> list[conditions.Condition]:
    condition = conditions.Condition
    result = []
    if lifecycle.problems:
        result.append(condition(type="Ready", status="False", reason="InvalidAnnotation",
                                message="; ".join(lifecycle.problems + lifecycle.future)
                                + ". Fix the value; the annotation is ignored until then."))
    elif lifecycle.future:
        result.append(condition(
            type="Ready", status="False", reason="AnnotationInFuture",
            message="; ".join(lifecycle.future) + ". Set it to when it happened (for a first "
                    "response: fluxsupport case respond --force --at TIME); until then it is "
                    "ignored and no response, breach or closure is recorded from it."))
    else:
        summary = {
            casestatus.State.PENDING: f"first response due {_rfc(timing.deadline)}",
            casestatus.State.AT_RISK: f"first response due {_rfc(timing.deadline)}; past the "
                                      "warning point",
            casestatus.State.BREACHED: f"first response was due {_rfc(timing.deadline)}",
            casestatus.State.MET: f"responded at {_rfc(responded_at)}, within the deadline"
            if responded_at else "",
            casestatus.State.LATE: f"responded at {_rfc(responded_at)}, after the deadline "
                                   f"{_rfc(timing.deadline)}" if responded_at else "",
            casestatus.State.CLOSED: "dismissed before the deadline",
        }[state]
        result.append(condition(
            type="Ready", status="True", reason="Reconciled",
            message=f"{casespec.describe_level(level)}: {summary}.{severity_note}"))

    result.append(scope.condition(case.component, case.requires_infrastructure_access, policy,
                                  covered))

    impact = case.impact
    criticality = "business-critical" if impact.business_critical else "not business-critical"
    impact_text = f"{impact.environment}, outage {impact.outage}, {criticality}"
    if level < assessed:
        result.append(condition(
            type="SeverityConsistent", status="False", reason="ImpactBelowSeverity",
            message=f"Claimed {casespec.describe_level(level)}, but the impact ({impact_text}) "
                    f"supports {casespec.describe_level(assessed)}. The deadline follows the "
                    "claimed level."))
    else:
        result.append(condition(
            type="SeverityConsistent", status="True", reason="ImpactSupportsSeverity",
            message=f"The impact ({impact_text}) supports {casespec.describe_level(level)}."))

    if responded_at is not None:
        result.append(condition(type="FirstResponded", status="True", reason="Responded",
                                message=f"First response at {_rfc(responded_at)}."))
    elif state is casestatus.State.CLOSED or lifecycle.dismissed_at is not None:
        result.append(condition(type="FirstResponded", status="False", reason="Dismissed",
                                message="The case was dismissed without a response."))
    else:
        result.append(condition(type="FirstResponded", status="False", reason="AwaitingResponse",
                                message=f"First response due {_rfc(timing.deadline)}."))

    at_risk = state is casestatus.State.AT_RISK
    result.append(condition(
        type="FirstResponseAtRisk", status="True" if at_risk else "False",
        reason=_AT_RISK_REASONS[state],
        message=f"Warning point {_rfc(timing.warning_at)} "
                f"({policy.warning_ratio:.0%} of the budget)."))

    breached = state in (casestatus.State.BREACHED, casestatus.State.LATE)
    result.append(condition(
        type="FirstResponseBreached", status="True" if breached else "False",
        reason=_BREACHED_REASONS[state],
        message=f"Deadline {_rfc(timing.deadline)}."))
    return result


def _transition_events(previous: Mapping[str, Any], state: casestatus.State,
                       current: list[conditions.Condition], timing: timing_module.Timing,
                       responded_at: datetime.datetime | None) -> list[evaluation.Event]:
    events = []
    old_state = (previous.get("firstResponse") or {}).get("state")
    # AtRisk has no Event: the condition, the metric and its alert carry it, and an Event per
    # case at the warning point doubles the API writes of a wave of cases opened together.
    if old_state != state.value:
        if state is casestatus.State.BREACHED:
            events.append(evaluation.Event(
                "Warning", "FirstResponseBreached",
                f"No first response by the deadline {_rfc(timing.deadline)}."))
        elif state is casestatus.State.MET:
            events.append(evaluation.Event(
                "Normal", "FirstResponded",
                f"First response at {_rfc(responded_at)}, within the deadline."))
        elif state is casestatus.State.LATE:
            events.append(evaluation.Event(
                "Warning", "FirstRespondedLate",
                f"First response at {_rfc(responded_at)}, after the deadline "
                f"{_rfc(timing.deadline)}."))
    old = {item.get("type"): item for item in previous.get("conditions") or []}
    for condition in current:
        if condition.type == "Submitted":
            before = old.get("Submitted") or {}
            if before.get("reason") != condition.reason and \
                    condition.reason in submission_module.EVENT_REASONS:
                events.append(evaluation.Event(
                    "Normal" if condition.status == "True" else "Warning",
                    condition.reason, condition.message))
        if condition.type in ("InScope", "SeverityConsistent") and condition.status == "False":
            before = old.get(condition.type) or {}
            if before.get("status") != "False" or before.get("reason") != condition.reason:
                events.append(evaluation.Event("Warning", condition.reason, condition.message))
        if condition.type == "Ready" and condition.status == "False":
            before = old.get("Ready") or {}
            if before.get("message") != condition.message:
                events.append(evaluation.Event("Warning", condition.reason, condition.message))
    return events


def _rfc(moment: datetime.datetime | None) -> str:
    return conditions.rfc3339(moment) if moment is not None else ""
