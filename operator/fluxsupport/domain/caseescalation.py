"""What a SupportCase's status says of its escalation tiers and its root-cause analysis.

The arithmetic is domain/escalation.py and domain/rca.py; this module turns it into the
status blocks ``status.escalation`` and ``status.rootCauseAnalysis``, the conditions
``Escalated`` and ``RootCauseAnalysisOverdue``, the Events and the metric values. Both parts
are off unless the policy has an ``escalation`` or ``rootCauseAnalysis`` section: then the
status has neither block nor condition, as before these sections existed.

A tier once recorded keeps its first instant (``previous`` is the stored status): a later
change of the facts never takes back an escalation already announced, and its Event, which
the status write carries in its outbox, is owed once, by the write that records the tier.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fluxsupport import constants
from fluxsupport.domain import (
    caselifecycle,
    conditions,
    conversation,
    escalation,
    evaluation,
    pause,
    rca,
    timing,
)
from fluxsupport.domain import policy as policy_module
from fluxsupport.domain import submission as submission_module
from fluxsupport.domain.calendar import BusinessCalendar

#: Reasons of the Escalated condition by the highest tier reached.
TIER_REASONS = {1: "Tier1TargetAtRisk", 2: "Tier2NotProgressing", 3: "Tier3RepeatedSeverity1"}
#: Event reasons, one per tier reached.
TIER_EVENTS = {1: "EscalatedTier1", 2: "EscalatedTier2", 3: "EscalatedTier3"}


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the case evaluation knows that the tiers and the RCA read."""

    opened: datetime.datetime
    level: int
    targets: Sequence[escalation.Target]
    first_response: datetime.datetime | None
    #: Support's replies after the first response (the first response may be among them).
    replies: Sequence[datetime.datetime]
    #: The resolution or the dismissal.
    closed_at: datetime.datetime | None
    resolved_at: datetime.datetime | None
    dismissed: bool
    #: Openings of the other Severity 1 cases of the case's scope, dismissed ones left out.
    other_severity1_openings: Sequence[datetime.datetime] = ()
    #: The waits on the customer: not counted as time without progress.
    pauses: Sequence[pause.Pause] = ()


@dataclasses.dataclass(frozen=True)
class Outcome:
    #: The blocks to store under their keys; a None value removes a block stored before.
    blocks: dict[str, dict[str, Any] | None]
    conditions: list[conditions.Condition]
    events: list[evaluation.Event]
    next_at: datetime.datetime | None
    #: The highest tier reached (0: none); None while the policy has no escalation.
    tier: int | None
    #: The RCA's due time while it is owed and not delivered.
    rca_due: float | None


def evaluate(policy: policy_module.Policy, calendar: BusinessCalendar,
             previous: Mapping[str, Any], annotations: Mapping[str, str], facts: Facts,
             portal_delivery: Mapping[str, Any] | None, now: datetime.datetime) -> Outcome:
    """The escalation and RCA parts of the status of a case at ``now``."""
    blocks: dict[str, dict[str, Any] | None] = {}
    found: list[conditions.Condition] = []
    events: list[evaluation.Event] = []
    instants: list[datetime.datetime] = []
    tier: int | None = None
    settings = policy.escalation
    if settings is not None and settings.enabled:
        result = escalation.for_case(
            settings, calendar, opened=facts.opened, level=facts.level, targets=facts.targets,
            first_response=facts.first_response, replies=facts.replies,
            closed_at=facts.closed_at, pauses=facts.pauses,
            other_severity1_openings=facts.other_severity1_openings, now=now)
        block, fresh = escalation.record(previous.get("escalation") or {}, result)
        blocks["escalation"] = block
        tier = int(block["tier"])
        found.append(escalation.condition(block, TIER_REASONS))
        events += [evaluation.Event(
            "Warning", TIER_EVENTS[item["tier"]],
            f"Escalated to tier {item['tier']} ({item['contact']}) at {item['reachedAt']}: "
            f"{item['detail']}.") for item in fresh]
        if result.next_at is not None:
            instants.append(result.next_at)
    elif previous.get("escalation"):
        blocks["escalation"] = None
    rca_due: float | None = None
    delivered_at, delivered_by, source, problem = _delivery(annotations, portal_delivery, now)
    owed = rca.evaluate(policy.root_cause_analysis, policy.timezone, level=facts.level,
                        resolved_at=facts.resolved_at, dismissed=facts.dismissed,
                        delivered_at=delivered_at, now=now)
    if owed is not None:
        block = {"state": owed.state.value}
        if owed.due_at is not None:
            block["dueAt"] = conditions.rfc3339(owed.due_at)
        if owed.delivered_at is not None:
            block["deliveredAt"] = conditions.rfc3339(owed.delivered_at)
            block["source"] = source
            if delivered_by:
                block["deliveredBy"] = delivered_by
        blocks["rootCauseAnalysis"] = block
        found.append(_rca_condition(owed, problem))
        events += _rca_events(previous.get("rootCauseAnalysis") or {}, owed)
        if owed.next_at is not None:
            instants.append(owed.next_at)
        if owed.due_at is not None and owed.delivered_at is None:
            rca_due = owed.due_at.timestamp()
    elif previous.get("rootCauseAnalysis"):
        blocks["rootCauseAnalysis"] = None
    return Outcome(blocks, found, events, min(instants, default=None), tier, rca_due)


_RCA_MESSAGES = {
    rca.State.NOT_DUE: "A root-cause analysis is owed once the case is resolved.",
    rca.State.PENDING: "A root-cause analysis is due {due}.",
    rca.State.DELIVERED: "The root-cause analysis was delivered at {delivered}, due {due}.",
    rca.State.LATE: "The root-cause analysis was delivered at {delivered}, after its due "
                    "time {due}.",
    rca.State.OVERDUE: "The root-cause analysis was due {due} and is not delivered: reply on "
                       "the ticket marked RCA: or set the annotation "
                       f"{constants.GROUP}/rca-delivered-at.",
}


def _rca_condition(owed: rca.Rca, problem: str) -> conditions.Condition:
    message = _RCA_MESSAGES[owed.state].format(
        due=conditions.rfc3339(owed.due_at) if owed.due_at else "at the resolution",
        delivered=conditions.rfc3339(owed.delivered_at) if owed.delivered_at else "")
    if problem:
        message += f" {problem}"
    overdue = owed.state in (rca.State.OVERDUE, rca.State.LATE)
    return conditions.Condition(type="RootCauseAnalysisOverdue",
                                status="True" if overdue else "False",
                                reason=owed.state.value, message=message)


def _rca_events(stored: Mapping[str, Any], owed: rca.Rca) -> list[evaluation.Event]:
    if stored.get("state") == owed.state.value:
        return []
    due = conditions.rfc3339(owed.due_at) if owed.due_at else ""
    if owed.state is rca.State.OVERDUE:
        return [evaluation.Event("Warning", "RootCauseAnalysisOverdue",
                                 f"The root-cause analysis due {due} is not delivered.")]
    if owed.state in (rca.State.DELIVERED, rca.State.LATE) and owed.delivered_at is not None:
        late = ", late" if owed.state is rca.State.LATE else ""
        return [evaluation.Event(
            "Normal", "RootCauseAnalysisDelivered",
            f"Root-cause analysis delivered at {conditions.rfc3339(owed.delivered_at)}{late}.")]
    return []


def _delivery(annotations: Mapping[str, str], portal: Mapping[str, Any] | None,
              now: datetime.datetime) -> tuple[datetime.datetime | None, str | None, str, str]:
    """The earliest delivery: the customer's annotation or the ticket's marked reply
    (status.submission.rootCauseAnalysis); and what is wrong with the annotation, if any."""
    found: list[tuple[datetime.datetime, str | None, str]] = []
    problem = ""
    raw = annotations.get(constants.RCA_DELIVERED_AT)
    if raw is not None:
        try:
            moment = timing.parse_time(raw)
        except ValueError as error:
            shown = repr(raw if len(raw) <= 100 else raw[:100] + "...")
            problem = (f"The annotation {constants.RCA_DELIVERED_AT}={shown} is not an RFC "
                       f"3339 time ({error}) and is ignored; write one such as "
                       "2026-12-07T11:00:00Z.")
        else:
            if moment > now + caselifecycle.CLOCK_SKEW:
                problem = (f"The annotation {constants.RCA_DELIVERED_AT} is in the future "
                           f"({conditions.rfc3339(moment)}) and is ignored until then.")
            else:
                found.append((moment, annotations.get(constants.RCA_DELIVERED_BY),
                              "annotation"))
    if portal:
        try:
            moment = timing.parse_time(str(portal.get("at") or ""))
        except ValueError:
            pass
        else:
            found.append((moment, portal.get("by") or None, "portal"))
    if not found:
        return None, None, "", problem
    moment, by, source = min(found, key=lambda item: item[0])
    return moment, by, source, problem


def ticket_facts(history: Iterable[submission_module.Transaction],
                 people: conversation.People) -> dict[str, Any]:
    """What the RCA takes from the ticket's history, as status.submission stores it: the
    reply that delivered it (``rootCauseAnalysis``, ``{at, by}``), when there is one.
    Support's latest reply is in ``conversation`` (domain/ticketrecord.py)."""
    delivered = conversation.rca_delivery(history, people)
    if delivered is None:
        return {}
    return {"rootCauseAnalysis": {"at": conditions.rfc3339(delivered.at),
                                  "by": delivered.author[:256]}}


def tier_comments(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ticket comment of each tier recorded in ``status.escalation``, as (update id,
    text): posted once, as the case's other updates (domain/submission.py)."""
    return [(f"escalation-tier-{item['tier']}", _notice(item))
            for item in _recorded(status)]


def _recorded(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tiers = (status.get("escalation") or {}).get("tiers") or []
    return [item for item in tiers
            if isinstance(item, Mapping) and item.get("tier") in escalation.ROLES]


def _notice(item: Mapping[str, Any]) -> str:
    return (f"Escalated to tier {item['tier']} ({escalation.ROLES[int(item['tier'])]}) at "
            f"{item.get('reachedAt', '')}: {item.get('detail', '')}.")


def tier_emails(settings: policy_module.Escalation | None, *, uid: str, namespace: str,
                name: str, cluster: str, status: Mapping[str, Any]) -> list[escalation.TierEmail]:
    """The emails to the escalation contacts of the tiers recorded in ``status`` that have
    contacts and no record in ``status.submission.escalationEmails`` yet, or a record of a
    send the SMTP server refused (``retryAt``). A record without ``retryAt`` is never sent
    again: the email was sent, or may have been (at most once)."""
    if settings is None or not settings.enabled:
        return []
    recorded = {entry.get("tier"): entry for entry in
                (status.get("submission") or {}).get("escalationEmails") or []
                if isinstance(entry, Mapping)}
    emails = []
    for item in _recorded(status):
        tier = int(item["tier"])
        where = f"{namespace}/{name}" + (f" in {cluster}" if cluster else "")
        ticket = (status.get("submission") or {}).get("url") or ""
        email = escalation.tier_email(
            tier, f"<case-{uid}-tier{tier}@fluxsupport>", settings.contacts.for_tier(tier),
            f"[fluxsupport] Escalation tier {tier}: SupportCase {where}",
            f"SupportCase {where}.\n\n{_notice(item)}\n"
            + (f"\nTicket: {ticket}\n" if ticket else ""), recorded.get(tier))
        if email is not None:
            emails.append(email)
    return emails


def support_replies(submission: Mapping[str, Any]) -> list[datetime.datetime]:
    """Support's replies the portal sync recorded (status.submission): the first reply and
    the latest one (``conversation.lastSupportReplyAt``, domain/ticketrecord.py). The latest
    reply is all the not-progressing rule needs from now on; an earlier gap that was long
    enough was recorded when it happened."""
    first = submission.get("firstReply")
    said = submission.get("conversation")
    found = (first.get("at") if isinstance(first, Mapping) else None,
             said.get("lastSupportReplyAt") if isinstance(said, Mapping) else None)
    replies = []
    for value in found:
        try:
            replies.append(timing.parse_time(str(value or "")))
        except ValueError:
            continue
    return replies


def severity1_openings(namespace: str, others: Iterable[tuple[str, datetime.datetime]],
                       settings: policy_module.Escalation | None) -> list[datetime.datetime]:
    """The openings among ``others`` (namespace, opened) that count for a case of
    ``namespace`` under the policy's repeatedSeverity1.scope."""
    if settings is None or not settings.enabled:
        return []
    return [opened for other, opened in others
            if escalation.same_scope(settings, namespace, other)]
