"""What a SupportCase's status should be, as a pure function of the case, the policy and now.

The handler and the deadline scheduler both call ``evaluate``. Because the result depends
only on the object and the clock, whichever of them writes last writes the right status.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Callable, Mapping
from typing import Any, Literal

import pydantic

from fluxsupport import constants
from fluxsupport.domain import conditions, scope
from fluxsupport.domain import submission as submission_module
from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import LEVEL_NAMES, LEVELS, Policy
from fluxsupport.domain.timing import (
    TimeOutOfRange,
    Timing,
    compute_resolution_timing,
    compute_timing,
    parse_time,
)


class State(enum.StrEnum):
    PENDING = "Pending"
    AT_RISK = "AtRisk"
    BREACHED = "Breached"
    MET = "Met"
    LATE = "Late"
    CLOSED = "Closed"


class Impact(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(populate_by_name=True)

    statement: str
    environment: Literal["production", "staging", "development"]
    outage: Literal["full", "partial", "degraded", "none"]
    business_critical: bool = pydantic.Field(False, alias="businessCritical")


class CaseSpec(pydantic.BaseModel):
    """The fields the SLA logic reads; the CRD schema has already validated them."""

    model_config = pydantic.ConfigDict(populate_by_name=True, extra="ignore")

    title: str
    severity: Literal["Urgent", "High", "Medium", "Low"]
    impact: Impact
    component: str
    category: str
    requires_infrastructure_access: bool = pydantic.Field(
        False, alias="requiresInfrastructureAccess")
    workaround: bool = False

    @property
    def level(self) -> int:
        return LEVELS[self.severity]


def effective_level(case: CaseSpec, policy: Policy) -> int:
    """The level the clocks follow: the claimed one, except that under a policy with
    workaroundLowersSeverity (the 2026 preset) a Level 2 case with a working workaround is
    handled as Level 3."""
    if case.level == 2 and case.workaround and policy.workaround_lowers_severity:
        return 3
    return case.level


def assess_level(impact: Impact) -> int:
    """The level the impact supports: production outages of business-critical services are
    Level 1 (full), 2 (partial) or 3 (degraded); everything else is Level 4."""
    if impact.environment == "production" and impact.business_critical:
        return {"full": 1, "partial": 2, "degraded": 3}.get(impact.outage, 4)
    return 4


def describe_level(level: int) -> str:
    return f"Level {level} ({LEVEL_NAMES[level]})"


@dataclasses.dataclass(frozen=True)
class Lifecycle:
    """The lifecycle annotations, parsed; ``problems`` lists the unparseable ones."""

    responded_at: datetime.datetime | None = None
    responded_by: str | None = None
    resolved_at: datetime.datetime | None = None
    resolved_by: str | None = None
    dismissed_at: datetime.datetime | None = None
    dismissed_by: str | None = None
    dismiss_reason: str | None = None
    problems: tuple[str, ...] = ()
    #: Annotations dated after now (beyond the skew allowance), ignored; what to fix.
    future: tuple[str, ...] = ()
    #: When the earliest ignored future annotation stops being in the future.
    future_until: datetime.datetime | None = None


#: How far ahead of the operator's clock a lifecycle time may be. Clocks of the people and
#: machines that write annotations drift by seconds, not minutes; anything later is a typo
#: (a wrong day or year) that would otherwise decide the SLA outcome for good.
CLOCK_SKEW = datetime.timedelta(minutes=5)


def parse_lifecycle(annotations: Mapping[str, str],
                    now: datetime.datetime | None = None) -> Lifecycle:
    """Parse the lifecycle annotations; with ``now``, ignore times after ``now + CLOCK_SKEW``.

    A response or dismissal cannot have happened in the future. Taking it at its word would
    store a breach (or a Met) that nothing could undo once the typo is fixed, so a future
    time counts as absent, and the Ready condition says which annotation to correct.
    """
    values: dict[str, Any] = {}
    problems = []
    future = []
    future_until: datetime.datetime | None = None
    for key, field in ((constants.RESPONDED_AT, "responded_at"),
                       (constants.RESOLVED_AT, "resolved_at"),
                       (constants.DISMISSED_AT, "dismissed_at")):
        raw = annotations.get(key)
        if raw is None:
            continue
        try:
            moment = parse_time(raw)
        except ValueError as error:
            # Quote a bounded prefix: an annotation may hold up to 256 KiB.
            shown = repr(raw if len(raw) <= 100 else raw[:100] + "...")
            what = "is out of range" if isinstance(error, TimeOutOfRange) else \
                "is not an RFC 3339 time"
            problems.append(f"annotation {key}={shown} {what} ({error}); write an RFC 3339 "
                            "time such as 2026-12-07T11:00:00Z")
            continue
        if now is not None and moment > now + CLOCK_SKEW:
            future.append(f"annotation {key}={_rfc(moment)} is after the operator's clock "
                          f"({_rfc(now)}) by more than the {_minutes(CLOCK_SKEW)} clock-skew "
                          "allowance")
            accepted = moment - CLOCK_SKEW
            future_until = accepted if future_until is None else min(future_until, accepted)
            continue
        values[field] = moment
    for key, field in ((constants.RESPONDED_BY, "responded_by"),
                       (constants.RESOLVED_BY, "resolved_by"),
                       (constants.DISMISSED_BY, "dismissed_by"),
                       (constants.DISMISS_REASON, "dismiss_reason")):
        if annotations.get(key):
            values[field] = annotations[key]
    return Lifecycle(**values, problems=tuple(problems), future=tuple(future),
                     future_until=future_until)


def _minutes(delta: datetime.timedelta) -> str:
    return f"{int(delta.total_seconds() // 60)}-minute"


class AlreadyResponded(ValueError):
    """The case already has a first response; replacing it needs ``--force``."""


def first_response_annotations(existing: Mapping[str, str], at: str, by: str | None,
                               force: bool) -> dict[str, str]:
    """The annotations ``case respond`` writes, given the case's current annotations.

    The first response is a fact recorded once: writing it again would move the SLA outcome
    (Met can become Late), so a second call is refused unless ``force``. Who responded is
    only written when given: leaving ``--by`` out must not erase an earlier ``responded-by``
    (a merge patch deletes keys whose value is null).
    """
    earlier = existing.get(constants.RESPONDED_AT)
    if earlier is not None and not force:
        who = existing.get(constants.RESPONDED_BY)
        shown = earlier if len(earlier) <= 100 else earlier[:100] + "..."
        raise AlreadyResponded(
            f"the first response is already recorded at {shown}"
            + (f" by {who}" if who else "")
            + "; it is written once. Pass --force to replace it.")
    written = {constants.RESPONDED_AT: at}
    if by is not None:
        written[constants.RESPONDED_BY] = by
    return written


def _stored_timing(previous: Mapping[str, Any], block: str = "firstResponse") -> Timing | None:
    held = previous.get(block) or {}
    # Blocks written before they recorded their own level follow the case's.
    level = held.get("level", previous.get("level"))
    if level not in LEVEL_NAMES:
        return None
    try:
        return Timing(parse_time(held["startedAt"]), parse_time(held["warningAt"]),
                      parse_time(held["deadline"]), int(held["targetSeconds"]),
                      str(held.get("calendar", "")), int(level))
    except (KeyError, TypeError, ValueError):
        return None


def _decided(block: Mapping[str, Any]) -> bool:
    """Whether a stored clock had stopped, its outcome decided: ``businessSeconds`` is
    written exactly when a clock stops (a response, a resolution or a dismissal)."""
    return "businessSeconds" in block or block.get("state") in (State.MET, State.LATE,
                                                                State.CLOSED)


@dataclasses.dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Compliance = Literal["met", "missed", "pending"]


def compliance_outcome(status: Mapping[str, Any]) -> Compliance | None:
    """How a case counts towards its month: missed once any of its targets was missed (a
    breach is final), met once every target it has was met, pending until then; None for a
    case without deadlines and for one dismissed before any deadline passed."""
    blocks = [block for block in (status.get("firstResponse"), status.get("resolution"))
              if isinstance(block, Mapping) and block]
    if not blocks:
        return None
    states = [block.get("state") for block in blocks]
    if any(state in (State.BREACHED, State.LATE) for state in states):
        return "missed"
    if (status.get("closure") or {}).get("outcome") == "Dismissed" or State.CLOSED in states:
        return None
    if all(state == State.MET for state in states):
        return "met"
    return "pending"


@dataclasses.dataclass(frozen=True)
class MetricsView:
    """What the metrics collector needs to know about one case."""

    level: int
    state: State
    awaiting_response: bool
    open: bool
    deadline: float
    warning: float
    outcome: Literal["met", "breached"] | None
    response_business_seconds: float | None
    #: The resolution clock, where the policy defines one: deadline and warning point while
    #: the case is open, the outcome and business time once it is resolved.
    resolution_deadline: float | None = None
    resolution_warning: float | None = None
    resolution_outcome: Literal["met", "breached"] | None = None
    resolution_business_seconds: float | None = None
    #: When the case was created, and how it stands for the monthly compliance.
    created: float = 0.0
    compliance: Compliance | None = None


@dataclasses.dataclass(frozen=True)
class Evaluation:
    status: dict[str, Any]
    events: tuple[Event, ...]
    next_transition: datetime.datetime | None
    metrics: MetricsView | None


def _invalid_spec(error: pydantic.ValidationError, old_conditions: list[Any], generation: int,
                  now: datetime.datetime) -> Evaluation:
    message = "; ".join(f"spec.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}"
                        for item in error.errors())
    ready = conditions.Condition(type="Ready", status="False", reason="InvalidSpec",
                                 message=message)
    status = {"observedGeneration": generation,
              "conditions": conditions.merge(old_conditions, [ready], generation, now)}
    return Evaluation(status, (Event("Warning", "InvalidSpec", message),), None, None)


@dataclasses.dataclass(frozen=True)
class _Clock:
    """One clock of this evaluation, and what became of the stored one."""

    timing: Timing | None
    #: same: the stored clock follows the case's level; new: there was none; recomputed: it
    #: followed another level and was still running; kept: it followed another level, but
    #: its outcome was decided, which is final.
    change: Literal["same", "new", "recomputed", "kept"]
    #: The stored clock, when recomputed or kept.
    stored: Timing | None = None


def _clock(previous: Mapping[str, Any], block: str, level: int, stopped: bool,
           compute: Callable[[int], Timing | None]) -> _Clock:
    """The clock ``block`` for a case of ``level``; ``stopped``: its facts stop it now.

    Computed once and stored. When the level changes, a running clock is recomputed from
    the case's creation with the new level's target (as if the case had had that level from
    the start), and a breach already recorded stays. A clock whose outcome was decided (it
    had stopped, and still has) keeps the deadline and the level it was decided against:
    raising the severity of a case that was answered in time does not make it late, and
    lowering it does not excuse a late one.
    """
    stored = _stored_timing(previous, block)
    if stored is None:
        return _Clock(compute(level), "new")
    if stored.level == level:
        return _Clock(stored, "same")
    if stopped and _decided(previous.get(block) or {}):
        return _Clock(stored, "kept", stored)
    return _Clock(compute(level), "recomputed", stored)


def _clocks(previous: Mapping[str, Any], created: datetime.datetime, level: int,
            policy: Policy, calendar: BusinessCalendar, responded: bool, closed: bool
            ) -> tuple[Timing, Timing | None, Event | None, str]:
    """Both clocks of a case of ``level``, with the Event and the note (led by a space) of
    a level change; ``responded``: the first response is given (or the case dismissed);
    ``closed``: the case is resolved or dismissed."""
    first = _clock(previous, "firstResponse", level, responded,
                   lambda at: compute_timing(created, at, policy, calendar))
    resolution = _clock(previous, "resolution", level, closed,
                        lambda at: compute_resolution_timing(created, at, policy, calendar))
    event, note = _recalculation(previous, level, first, resolution)
    assert first.timing is not None  # every level has a first-response target
    return first.timing, resolution.timing, event, f" {note}" if note else ""


def _recalculation(previous: Mapping[str, Any], level: int, first: _Clock,
                   resolution: _Clock) -> tuple[Event | None, str]:
    """The SeverityChanged Event and the note for status and Ready when a level change (or
    a withdrawn response or closure) moved or kept a clock; else the note stored earlier."""
    old_level = previous.get("level")
    changed = first.change in ("recomputed", "kept") and old_level != level
    if not changed and "recomputed" not in (first.change, resolution.change):
        return None, str((previous.get("firstResponse") or {}).get("recalculation") or "")
    parts = [_clock_note(previous, "firstResponse", first, level),
             _clock_note(previous, "resolution", resolution, level)]
    if not changed:
        head = f"A decided outcome was withdrawn; the clock runs again at {describe_level(level)}"
    elif isinstance(old_level, int) and old_level in LEVEL_NAMES:
        head = f"Severity changed from {describe_level(old_level)} to {describe_level(level)}"
    else:
        head = f"Severity changed to {describe_level(level)}"
    note = f"{head}: {'; '.join(part for part in parts if part)}."
    return (Event("Normal", "SeverityChanged", note) if changed else None), note


def _clock_note(previous: Mapping[str, Any], block: str, clock: _Clock, level: int) -> str:
    """What a level change did to one clock, for the recalculation note."""
    first = block == "firstResponse"
    held, timing = clock.stored, clock.timing
    if clock.change == "kept" and held is not None:
        state = (previous.get(block) or {}).get("state")
        return (f"the {'first response' if first else 'resolution'} stays {state}, decided "
                f"against the {describe_level(held.level)} deadline {_rfc(held.deadline)}")
    if clock.change == "recomputed" and held is not None:
        if timing is None:
            return f"{describe_level(level)} has no resolution target, so that clock is dropped"
        return (f"{'deadline' if first else 'resolution deadline'} recomputed from the same "
                f"start, {_rfc(held.deadline)} -> {_rfc(timing.deadline)}")
    if clock.change == "new" and timing is not None and not first:
        return f"resolution due {_rfc(timing.deadline)}"
    return ""


@dataclasses.dataclass(frozen=True)
class PortalFacts:
    """What the portal told about the case's ticket (status.submission, from the sync)."""

    replied_at: datetime.datetime | None = None
    replied_by: str | None = None
    resolved_at: datetime.datetime | None = None
    resolved_by: str | None = None


def _portal_facts(submission: Mapping[str, Any]) -> PortalFacts:
    reply = submission.get("firstReply") or {}

    def moment(value: Any) -> datetime.datetime | None:
        try:
            return parse_time(value) if isinstance(value, str) and value else None
        except ValueError:
            return None

    return PortalFacts(moment(reply.get("at")), reply.get("by") or None,
                       moment(submission.get("resolvedAt")),
                       submission.get("resolvedBy") or None)


def _response(lifecycle: Lifecycle, portal: PortalFacts
              ) -> tuple[datetime.datetime | None, str | None, str]:
    """The first response (when, by whom, learned from where): the earliest of the
    annotations and the portal's first reply. A resolution is a response too: nobody
    resolves a case without answering it."""
    at, by = lifecycle.responded_at, lifecycle.responded_by
    if at is None and lifecycle.resolved_at is not None:
        at, by = lifecycle.resolved_at, lifecycle.resolved_by
    portal_at = portal.replied_at or portal.resolved_at
    if portal_at is not None and (at is None or portal_at < at):
        return portal_at, portal.replied_by if portal.replied_at else portal.resolved_by, \
            "portal"
    return at, by, "annotation"


def _breached_at(previous: Mapping[str, Any],
                 block: str = "firstResponse") -> datetime.datetime | None:
    stored = (previous.get(block) or {}).get("breachedAt")
    try:
        return parse_time(stored) if stored else None
    except ValueError:
        return None


def _state(timing: Timing, responded_at: datetime.datetime | None,
           dismissed_at: datetime.datetime | None, now: datetime.datetime,
           breached_at: datetime.datetime | None) -> State:
    """A breach is final: lowering the severity afterwards moves the deadline, not the fact
    that a deadline was missed."""
    deadline = min(timing.deadline, breached_at) if breached_at else timing.deadline
    if responded_at is not None:
        return State.MET if responded_at <= deadline else State.LATE
    if dismissed_at is not None:
        return State.BREACHED if dismissed_at > deadline else State.CLOSED
    if breached_at is not None or now >= timing.deadline:
        return State.BREACHED
    if now >= timing.warning_at:
        return State.AT_RISK
    return State.PENDING


def _closure(lifecycle: Lifecycle, portal: PortalFacts) -> dict[str, Any] | None:
    if lifecycle.resolved_at is not None:
        closure = {"outcome": "Resolved", "at": _rfc(lifecycle.resolved_at)}
        if lifecycle.resolved_by:
            closure["by"] = lifecycle.resolved_by
        return closure
    if lifecycle.dismissed_at is not None:
        closure = {"outcome": "Dismissed", "at": _rfc(lifecycle.dismissed_at)}
        if lifecycle.dismissed_by:
            closure["by"] = lifecycle.dismissed_by
        if lifecycle.dismiss_reason:
            closure["reason"] = lifecycle.dismiss_reason
        return closure
    if portal.resolved_at is not None:
        closure = {"outcome": "Resolved", "at": _rfc(portal.resolved_at), "source": "portal"}
        if portal.resolved_by:
            closure["by"] = portal.resolved_by
        return closure
    return None


def evaluate(*, spec: Mapping[str, Any], annotations: Mapping[str, str],
             created: datetime.datetime, generation: int, previous: Mapping[str, Any],
             policy: Policy, calendar: BusinessCalendar, now: datetime.datetime) -> Evaluation:
    """Compute the whole status of a case; see the module docstring."""
    old_conditions = list(previous.get("conditions") or [])
    try:
        case = CaseSpec.model_validate(spec)
    except pydantic.ValidationError as error:
        return _invalid_spec(error, old_conditions, generation, now)

    lifecycle = parse_lifecycle(annotations, now)
    level, assessed = effective_level(case, policy), assess_level(case.impact)

    submission = previous.get("submission") or {}
    portal = _portal_facts(submission)
    responded_at, responded_by, source = _response(lifecycle, portal)
    dismissed_at = lifecycle.dismissed_at
    awaiting = responded_at is None and dismissed_at is None
    closure = _closure(lifecycle, portal)

    timing, resolution_timing, timing_event, severity_note = _clocks(
        previous, created, level, policy, calendar, not awaiting, closure is not None)
    breached_at = _breached_at(previous)
    state = _state(timing, responded_at, dismissed_at, now, breached_at)

    first_response: dict[str, Any] = {
        "startedAt": _rfc(timing.started_at), "warningAt": _rfc(timing.warning_at),
        "deadline": _rfc(timing.deadline), "targetSeconds": timing.target_seconds,
        "state": state.value, "calendar": timing.calendar, "level": timing.level,
    }
    if severity_note:
        first_response["recalculation"] = severity_note.strip()
    if state in (State.BREACHED, State.LATE):
        first_response["breachedAt"] = _rfc(breached_at or min(timing.deadline, now))
    business_seconds = None
    if not awaiting:
        # Only once the clock has stopped: a ticking value would rewrite status forever.
        clock_end = responded_at or dismissed_at
        assert clock_end is not None
        business_seconds = max(0, int(calendar.for_level(timing.level).elapsed(created,
                                                                               clock_end)))
        first_response["businessSeconds"] = business_seconds
    if responded_at is not None:
        first_response["respondedAt"] = _rfc(responded_at)
        if responded_by:
            first_response["respondedBy"] = responded_by
        first_response["source"] = source

    resolution = _resolution(resolution_timing, closure, previous, now, calendar, created)
    current = _conditions(case, level, assessed, state, timing, lifecycle, policy,
                          severity_note, responded_at)
    current += _resolution_conditions(resolution, resolution_timing, policy)
    current += _workaround_condition(case, level, policy)
    submitted = submission_module.condition(
        submission, level, policy.channels, closure is not None or dismissed_at is not None, now)
    current += [submitted, *submission_module.update_conditions(submission, policy.channels, now)]
    events = [timing_event] if timing_event else []
    events += [*_transition_events(previous, state, current, timing, responded_at),
               *_resolution_events(previous, resolution)]

    status: dict[str, Any] = {
        "observedGeneration": generation,
        "level": level,
        "assessedLevel": assessed,
        "firstResponse": first_response,
        "closure": closure,
        "conditions": conditions.merge(old_conditions, current, generation, now),
    }
    if resolution is not None or previous.get("resolution"):
        # None drops a clock stored for a level that had a resolution target.
        status["resolution"] = resolution
    awaited = resolution_timing if closure is None else None
    next_transition = _next_transition(now, timing if awaiting else None, awaited,
                                       lifecycle.future_until)
    outcome: Literal["met", "breached"] | None = None
    if responded_at is not None:
        outcome = "met" if state is State.MET else "breached"
    metrics = MetricsView(
        level=level, state=state, awaiting_response=awaiting, open=closure is None,
        deadline=timing.deadline.timestamp(), warning=timing.warning_at.timestamp(),
        outcome=outcome,
        response_business_seconds=business_seconds if responded_at is not None else None,
        created=created.timestamp(), compliance=compliance_outcome(status),
        **_resolution_metrics(awaited, resolution),
    )
    return Evaluation(status, tuple(events), next_transition, metrics)


def _resolution_metrics(awaited: Timing | None,
                        block: Mapping[str, Any] | None) -> dict[str, Any]:
    """The resolution fields of MetricsView: the clock while awaited, the outcome once
    resolved."""
    fields: dict[str, Any] = {}
    if awaited is not None:
        fields["resolution_deadline"] = awaited.deadline.timestamp()
        fields["resolution_warning"] = awaited.warning_at.timestamp()
    if block is not None and "resolvedAt" in block:
        fields["resolution_outcome"] = "met" if block["state"] == State.MET else "breached"
        fields["resolution_business_seconds"] = block.get("businessSeconds")
    return fields


def _resolution(timing: Timing | None, closure: Mapping[str, Any] | None,
                previous: Mapping[str, Any], now: datetime.datetime,
                calendar: BusinessCalendar, created: datetime.datetime
                ) -> dict[str, Any] | None:
    """The resolution clock's block: it stops at the closure (resolved or dismissed)."""
    if timing is None:
        return None
    closed_at = parse_time(closure["at"]) if closure else None
    resolved_at = closed_at if closure and closure["outcome"] == "Resolved" else None
    dismissed_at = closed_at if closure and closure["outcome"] == "Dismissed" else None
    breached_at = _breached_at(previous, "resolution")
    state = _state(timing, resolved_at, dismissed_at, now, breached_at)
    block: dict[str, Any] = {
        "startedAt": _rfc(timing.started_at), "warningAt": _rfc(timing.warning_at),
        "deadline": _rfc(timing.deadline), "targetSeconds": timing.target_seconds,
        "state": state.value, "calendar": timing.calendar, "level": timing.level,
    }
    if state in (State.BREACHED, State.LATE):
        block["breachedAt"] = _rfc(breached_at or min(timing.deadline, now))
    if closed_at is not None:
        block["businessSeconds"] = max(0, int(calendar.for_level(timing.level).elapsed(
            created, closed_at)))
    if resolved_at is not None:
        block["resolvedAt"] = _rfc(resolved_at)
    return block


def _resolution_conditions(block: Mapping[str, Any] | None, timing: Timing | None,
                           policy: Policy) -> list[conditions.Condition]:
    if block is None or timing is None:
        return []
    state = State(block["state"])
    condition = conditions.Condition
    return [
        condition(
            type="ResolutionAtRisk", status="True" if state is State.AT_RISK else "False",
            reason={State.PENDING: "WithinBudget", State.AT_RISK: "WarningPointPassed",
                    State.BREACHED: "DeadlinePassed", State.MET: "Resolved",
                    State.LATE: "Resolved", State.CLOSED: "Dismissed"}[state],
            message=f"Resolution warning point {_rfc(timing.warning_at)} "
                    f"({policy.warning_ratio:.0%} of the budget)."),
        condition(
            type="ResolutionBreached",
            status="True" if state in (State.BREACHED, State.LATE) else "False",
            reason={State.PENDING: "WithinDeadline", State.AT_RISK: "WithinDeadline",
                    State.BREACHED: "DeadlinePassed", State.MET: "ResolvedInTime",
                    State.LATE: "ResolvedLate", State.CLOSED: "Dismissed"}[state],
            message=f"Resolution deadline {_rfc(timing.deadline)}."),
    ]


def _next_transition(now: datetime.datetime, response: Timing | None,
                     resolution: Timing | None,
                     future_until: datetime.datetime | None) -> datetime.datetime | None:
    """The next instant that changes the status: a warning point or deadline of a running
    clock, or when an ignored future annotation stops being in the future (status is a
    function of the clock), whichever comes first."""
    instants = [moment for clock in (response, resolution) if clock is not None
                for moment in (clock.warning_at, clock.deadline) if moment > now]
    if future_until is not None:
        instants.append(future_until)
    return min(instants, default=None)


def _workaround_condition(case: CaseSpec, level: int,
                          policy: Policy) -> list[conditions.Condition]:
    """WorkaroundApplied, while spec.workaround is true."""
    if not case.workaround:
        return []
    if level != case.level:
        return [conditions.Condition(
            type="WorkaroundApplied", status="True", reason="SeverityLowered",
            message=f"Claimed {describe_level(case.level)} with a working workaround: handled "
                    f"as {describe_level(level)}, whose targets the deadlines follow "
                    f"(policy {policy.preset}).")]
    why = ("only Level 2 is lowered" if policy.workaround_lowers_severity
           else f"policy {policy.preset} does not lower the level for a workaround")
    return [conditions.Condition(
        type="WorkaroundApplied", status="False", reason="LevelUnchanged",
        message=f"A workaround is recorded; {describe_level(level)} stays ({why}).")]


def _resolution_events(previous: Mapping[str, Any],
                       block: Mapping[str, Any] | None) -> list[Event]:
    if block is None:
        return []
    old_state = (previous.get("resolution") or {}).get("state")
    if old_state == block["state"]:
        return []
    if block["state"] == State.BREACHED:
        return [Event("Warning", "ResolutionBreached",
                      f"Not resolved by the resolution deadline {block['deadline']}.")]
    if block["state"] == State.LATE:
        return [Event("Warning", "ResolvedLate",
                      f"Resolved at {block['resolvedAt']}, after the resolution deadline "
                      f"{block['deadline']}.")]
    return []


def _conditions(case: CaseSpec, level: int, assessed: int, state: State, timing: Timing,
                lifecycle: Lifecycle, policy: Policy, severity_note: str,
                responded_at: datetime.datetime | None) -> list[conditions.Condition]:
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
            State.PENDING: f"first response due {_rfc(timing.deadline)}",
            State.AT_RISK: f"first response due {_rfc(timing.deadline)}; past the warning point",
            State.BREACHED: f"first response was due {_rfc(timing.deadline)}",
            State.MET: f"responded at {_rfc(responded_at)}, within the deadline"
            if responded_at else "",
            State.LATE: f"responded at {_rfc(responded_at)}, after the deadline "
                        f"{_rfc(timing.deadline)}" if responded_at else "",
            State.CLOSED: "dismissed before the deadline",
        }[state]
        result.append(condition(type="Ready", status="True", reason="Reconciled",
                                message=f"{describe_level(level)}: {summary}.{severity_note}"))

    result.append(scope.condition(case.component, case.requires_infrastructure_access, policy,
                                  scope.supported(policy)))

    impact = case.impact
    criticality = "business-critical" if impact.business_critical else "not business-critical"
    impact_text = f"{impact.environment}, outage {impact.outage}, {criticality}"
    if level < assessed:
        result.append(condition(
            type="SeverityConsistent", status="False", reason="ImpactBelowSeverity",
            message=f"Claimed {describe_level(level)}, but the impact ({impact_text}) supports "
                    f"{describe_level(assessed)}. The deadline follows the claimed level."))
    else:
        result.append(condition(
            type="SeverityConsistent", status="True", reason="ImpactSupportsSeverity",
            message=f"The impact ({impact_text}) supports {describe_level(level)}."))

    if responded_at is not None:
        result.append(condition(type="FirstResponded", status="True", reason="Responded",
                                message=f"First response at {_rfc(responded_at)}."))
    elif state is State.CLOSED or lifecycle.dismissed_at is not None:
        result.append(condition(type="FirstResponded", status="False", reason="Dismissed",
                                message="The case was dismissed without a response."))
    else:
        result.append(condition(type="FirstResponded", status="False", reason="AwaitingResponse",
                                message=f"First response due {_rfc(timing.deadline)}."))

    at_risk = state is State.AT_RISK
    result.append(condition(
        type="FirstResponseAtRisk", status="True" if at_risk else "False",
        reason={State.PENDING: "WithinBudget", State.AT_RISK: "WarningPointPassed",
                State.BREACHED: "DeadlinePassed", State.MET: "Responded",
                State.LATE: "Responded", State.CLOSED: "Dismissed"}[state],
        message=f"Warning point {_rfc(timing.warning_at)} "
                f"({policy.warning_ratio:.0%} of the budget)."))

    breached = state in (State.BREACHED, State.LATE)
    result.append(condition(
        type="FirstResponseBreached", status="True" if breached else "False",
        reason={State.PENDING: "WithinDeadline", State.AT_RISK: "WithinDeadline",
                State.BREACHED: "DeadlinePassed", State.MET: "RespondedInTime",
                State.LATE: "RespondedLate", State.CLOSED: "Dismissed"}[state],
        message=f"Deadline {_rfc(timing.deadline)}."))
    return result


def _transition_events(previous: Mapping[str, Any], state: State,
                       current: list[conditions.Condition], timing: Timing,
                       responded_at: datetime.datetime | None) -> list[Event]:
    events = []
    old_state = (previous.get("firstResponse") or {}).get("state")
    # AtRisk has no Event: the condition, the metric and its alert carry it, and an Event per
    # case at the warning point doubles the API writes of a wave of cases opened together.
    if old_state != state.value:
        if state is State.BREACHED:
            events.append(Event("Warning", "FirstResponseBreached",
                                f"No first response by the deadline {_rfc(timing.deadline)}."))
        elif state is State.MET:
            events.append(Event("Normal", "FirstResponded",
                                f"First response at {_rfc(responded_at)}, within the deadline."))
        elif state is State.LATE:
            events.append(Event("Warning", "FirstRespondedLate",
                                f"First response at {_rfc(responded_at)}, after the deadline "
                                f"{_rfc(timing.deadline)}."))
    old = {item.get("type"): item for item in previous.get("conditions") or []}
    for condition in current:
        if condition.type == "Submitted":
            before = old.get("Submitted") or {}
            if before.get("reason") != condition.reason and \
                    condition.reason in submission_module.EVENT_REASONS:
                events.append(Event("Normal" if condition.status == "True" else "Warning",
                                    condition.reason, condition.message))
        if condition.type in ("InScope", "SeverityConsistent") and condition.status == "False":
            before = old.get(condition.type) or {}
            if before.get("status") != "False" or before.get("reason") != condition.reason:
                events.append(Event("Warning", condition.reason, condition.message))
        if condition.type == "Ready" and condition.status == "False":
            before = old.get("Ready") or {}
            if before.get("message") != condition.message:
                events.append(Event("Warning", condition.reason, condition.message))
    return events


def _rfc(moment: datetime.datetime | None) -> str:
    return conditions.rfc3339(moment) if moment is not None else ""
