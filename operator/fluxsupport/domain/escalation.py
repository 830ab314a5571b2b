"""The escalation tiers of the Support Policy 2026: which tier a case or bulletin reached, when.

The page names three tiers and their triggers; the policy's ``escalation`` section turns them
on (the ``support-policy-2026`` preset does) and sets what the page leaves open. The rules
(docs/sla-policy.md, "Escalation"):

* **Tier 1, the account manager: a target is at risk.** A first-response or resolution budget
  passed its warning point while it was still running. Reached at the warning point, moved by
  the pauses like the deadline (:mod:`fluxsupport.domain.pause`).
* **Tier 2, the head of customer success: the case is not progressing.** After the first
  response, support did not reply for ``notProgressingAfter`` of business time on the policy's
  calendar (Support Hours, for every level), time waiting on the customer excluded. Reached
  when that much business time has passed since support's last reply.
* **Tier 3, the executive sponsor**, for a case: **repeated Severity 1 cases.** A Severity 1
  case that is still open when a Severity 1 case of its scope (itself included) is opened and
  ``count`` of them were opened within ``window``. Reached at that opening. For a
  SecurityBulletin: **an unmitigated critical vulnerability**, one whose vendor remediation
  deadline (:mod:`fluxsupport.domain.remediation`) passed before a fix was listed. Reached at
  that deadline.

The tiers are independent (a case may reach tier 2 and never tier 1), a closed case reaches
no further tier, and a reply, resolution or fix exactly at the instant is in time, as a
response exactly at its deadline is. Everything is a function of the facts given; the
controller keeps the first instant it recorded for a tier, so that a later change of the facts
(a severity change, a pause recorded late) never takes back an escalation already announced.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from fluxsupport.domain import conditions, pause, remediation, timing
from fluxsupport.domain import submission as submission_module
from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import Escalation as Settings
from fluxsupport.domain.policy import Policy

Trigger = Literal["TargetAtRisk", "NotProgressing", "RepeatedSeverity1",
                  "UnmitigatedCriticalVulnerability"]

#: Who each tier reaches, as the page names them.
ROLES: Mapping[int, str] = {1: "account manager", 2: "head of customer success",
                            3: "executive sponsor"}


@dataclasses.dataclass(frozen=True)
class Target:
    """One budget of a case, as far as tier 1 needs it."""

    #: ``first response`` or ``resolution``.
    name: str
    #: The warning point after the pauses; None while an open pause holds it.
    warning_at: datetime.datetime | None
    #: When the budget stopped: met, or the case closed; None while it runs.
    stopped_at: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Reached:
    tier: int
    at: datetime.datetime
    trigger: Trigger
    #: What reached it, in words: the target, the reply, the openings, the vulnerability.
    detail: str


@dataclasses.dataclass(frozen=True)
class Escalation:
    #: At most one per tier, the earliest trigger of it, in tier order.
    reached: tuple[Reached, ...] = ()
    #: The next instant at which a tier may be reached by time alone, for the scheduler;
    #: None when only new facts (a reply, an opening, a pause's end) can escalate further.
    next_at: datetime.datetime | None = None

    def tier(self, tier: int) -> Reached | None:
        return next((reached for reached in self.reached if reached.tier == tier), None)


def record(stored: Mapping[str, Any], result: Escalation
           ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``status.escalation`` of a case or bulletin: the tiers stored, as first recorded, and
    those reached now that are new (returned apart: each is owed its Event once)."""
    kept = [dict(item) for item in stored.get("tiers") or []
            if isinstance(item, Mapping) and item.get("tier") in ROLES]
    known = {item["tier"] for item in kept}
    fresh = [{"tier": reached.tier, "contact": ROLES[reached.tier],
              "reachedAt": conditions.rfc3339(reached.at), "trigger": reached.trigger,
              "detail": reached.detail}
             for reached in result.reached if reached.tier not in known]
    tiers = sorted(kept + fresh, key=lambda item: int(item["tier"]))
    return {"tier": max((int(item["tier"]) for item in tiers), default=0),
            "tiers": tiers}, fresh


def condition(block: Mapping[str, Any], reasons: Mapping[int, str]) -> conditions.Condition:
    """Escalated: False/NotEscalated, or True with ``reasons`` of the highest tier reached."""
    tiers = block["tiers"]
    if not tiers:
        return conditions.Condition(type="Escalated", status="False", reason="NotEscalated",
                                    message="No escalation tier reached.")
    top = tiers[-1]
    reached = "; ".join(f"tier {item['tier']} ({item['contact']}) at {item['reachedAt']}"
                        for item in tiers)
    return conditions.Condition(type="Escalated", status="True",
                                reason=reasons[int(top["tier"])],
                                message=f"Reached {reached}. Highest: {top['detail']}.")


def _result(found: Iterable[Reached],
            upcoming: Iterable[tuple[int, datetime.datetime]]) -> Escalation:
    """The earliest trigger of each tier, and the next instant of a tier not reached yet (a
    tier reached once needs no second announcement)."""
    earliest: dict[int, Reached] = {}
    for reached in found:
        if reached.tier not in earliest or reached.at < earliest[reached.tier].at:
            earliest[reached.tier] = reached
    return Escalation(tuple(earliest[tier] for tier in sorted(earliest)),
                      min((moment for tier, moment in upcoming if tier not in earliest),
                          default=None))


def _on(settings: Settings | None) -> bool:
    return settings is not None and settings.enabled


def _rfc(moment: datetime.datetime) -> str:
    return conditions.rfc3339(moment)


# ---- cases -----------------------------------------------------------------------------------

def case_targets(opened: datetime.datetime, level: int, policy: Policy,
                 calendar: BusinessCalendar, pauses: Iterable[pause.Pause],
                 responded_at: datetime.datetime | None,
                 closed_at: datetime.datetime | None) -> tuple[Target, ...]:
    """The first-response and (where the policy sets one) resolution targets of a case, with
    their warning points moved by ``pauses``; ``closed_at`` is the resolution or dismissal."""
    pauses = tuple(pauses)
    answered = min((moment for moment in (responded_at, closed_at) if moment is not None),
                   default=None)
    response = pause.first_response(opened, level, policy, calendar, pauses, answered)
    targets = [Target("first response", response.warning.due, answered)]
    resolution = pause.resolution(opened, level, policy, calendar, pauses, closed_at)
    if resolution is not None:
        targets.append(Target("resolution", resolution.warning.due, closed_at))
    return tuple(targets)


def for_case(settings: Settings | None, calendar: BusinessCalendar, *,
             opened: datetime.datetime, level: int, targets: Sequence[Target],
             first_response: datetime.datetime | None,
             replies: Iterable[datetime.datetime] = (),
             closed_at: datetime.datetime | None = None,
             pauses: Iterable[pause.Pause] = (),
             other_severity1_openings: Iterable[datetime.datetime] = (),
             now: datetime.datetime) -> Escalation:
    """The tiers a case reached by ``now``.

    ``calendar`` is the policy's (not the 24x7 one of Severity 1); ``replies`` are support's
    replies after the first response (the first response itself may be among them);
    ``other_severity1_openings`` the openings of the other Severity 1 cases of the case's
    scope (``repeatedSeverity1.scope``), dismissed ones left out.
    """
    if not _on(settings):
        return Escalation()
    assert settings is not None
    found: list[Reached] = []
    upcoming: list[tuple[int, datetime.datetime]] = []
    _at_risk(targets, now, found, upcoming)
    if first_response is not None:
        _not_progressing(settings, calendar, first_response, replies, closed_at, tuple(pauses),
                         now, found, upcoming)
    if level == 1:
        _repeated(settings, opened, closed_at, other_severity1_openings, now, found)
    return _result(found, upcoming)


def _at_risk(targets: Sequence[Target], now: datetime.datetime, found: list[Reached],
             upcoming: list[tuple[int, datetime.datetime]]) -> None:
    for target in targets:
        warning = target.warning_at
        if warning is None:
            continue  # held by a pause: its end, a new fact, sets the warning point again
        if target.stopped_at is not None and target.stopped_at <= warning:
            continue  # met (or closed) before it was at risk
        if warning <= now:
            found.append(Reached(1, warning, "TargetAtRisk",
                                 f"the {target.name} target is at risk since {_rfc(warning)}"))
        elif target.stopped_at is None:
            upcoming.append((1, warning))


def _not_progressing(settings: Settings, calendar: BusinessCalendar,
                     first_response: datetime.datetime,
                     replies: Iterable[datetime.datetime], closed_at: datetime.datetime | None,
                     pauses: tuple[pause.Pause, ...], now: datetime.datetime,
                     found: list[Reached], upcoming: list[tuple[int, datetime.datetime]]) -> None:
    """The first gap between support's replies (from the first response on) longer than the
    setting, in business time less the time waiting on the customer."""
    budget = settings.not_progressing_after
    spoken = sorted({first_response, *(reply for reply in replies if reply > first_response)})
    counted = _counted_time(calendar, pause.merge(pauses, first_response), first_response)
    progress = [counted(reply) for reply in spoken]
    for index, reply in enumerate(spoken):
        if closed_at is not None and closed_at <= reply:
            return
        following = spoken[index + 1] if index + 1 < len(spoken) else None
        if following is not None and progress[index + 1] - progress[index] < budget:
            continue  # clearly in time; a gap of the whole budget is decided by instants
        # The pause arithmetic of the case budgets, from the reply on (its warning share,
        # the 0.5, is not used).
        due = pause.clock(calendar, reply, budget, 0.5, pauses).deadline.due
        if following is not None and (due is None or following <= due):
            continue  # support replied in time, or while the case waited on the customer
        if due is None:
            return  # waiting on the customer: no instant until the wait ends
        if closed_at is not None and closed_at <= due:
            return  # closed in time
        if due <= now:
            found.append(Reached(
                2, due, "NotProgressing",
                f"no reply from support for {_hours(budget)} of business time after the "
                f"reply of {_rfc(reply)}"))
        elif following is None:
            upcoming.append((2, due))
        return


def _counted_time(calendar: BusinessCalendar, merged: tuple[pause.Pause, ...],
                  start: datetime.datetime) -> Callable[[datetime.datetime], float]:
    """Business seconds from ``start`` to an instant, less those of the merged pauses: one
    pass over the pauses, so that a long thread costs a binary search per reply, not a walk
    of every pause."""
    starts = [p.start for p in merged]
    before = [0.0]
    for p in merged:
        before.append(before[-1] + (0.0 if p.end is None else calendar.elapsed(p.start, p.end)))

    def counted(moment: datetime.datetime) -> float:
        index = bisect.bisect_right(starts, moment) - 1
        paused = 0.0
        if index >= 0:
            holding = merged[index]
            end = moment if holding.end is None else min(moment, holding.end)
            paused = before[index] + calendar.elapsed(holding.start, end)
        return calendar.elapsed(start, moment) - paused

    return counted


def _hours(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if rest else f"{hours}h"


def _span(seconds: int) -> str:
    return f"{seconds // 86400}d" if seconds % 86400 == 0 else _hours(seconds)


def _repeated(settings: Settings, opened: datetime.datetime,
              closed_at: datetime.datetime | None,
              others: Iterable[datetime.datetime], now: datetime.datetime,
              found: list[Reached]) -> None:
    """The first opening, from this case's own on and while it is open, at which ``count``
    Severity 1 openings of the scope fall within the window that ends there."""
    rule = settings.repeated_severity1
    window = datetime.timedelta(seconds=rule.window)
    openings = sorted([opened, *others])
    for moment in openings:
        if moment < opened:
            continue
        if moment > now or (closed_at is not None and closed_at <= moment):
            return
        inside = bisect.bisect_right(openings, moment) - bisect.bisect_right(openings,
                                                                             moment - window)
        if inside >= rule.count:
            found.append(Reached(
                3, moment, "RepeatedSeverity1",
                f"{inside} Severity 1 cases of the {rule.scope} opened within "
                f"{_span(rule.window)} up to {_rfc(moment)}"))
            return


def same_scope(settings: Settings, namespace: str, other_namespace: str) -> bool:
    """Whether another case's Severity 1 opening counts for a case of ``namespace``."""
    return settings.repeated_severity1.scope == "cluster" or namespace == other_namespace


# ---- bulletins -------------------------------------------------------------------------------

def for_bulletin(settings: Settings | None,
                 dues: Mapping[str, remediation.Due | None],
                 fixed_at: Mapping[str, datetime.datetime | None], *,
                 now: datetime.datetime) -> Escalation:
    """Tier 3 for a bulletin: ``dues`` are the vendor's deadlines per vulnerability id
    (:func:`fluxsupport.domain.remediation.bulletin_dues`), ``fixed_at`` when a fixed
    digest was first listed for it (None: not yet)."""
    if not _on(settings):
        return Escalation()
    found: list[Reached] = []
    upcoming: list[tuple[int, datetime.datetime]] = []
    for vulnerability, due in sorted(dues.items()):
        if due is None or due.band != "critical":
            continue
        fixed = fixed_at.get(vulnerability)
        if fixed is not None and fixed <= due.due_at:
            continue
        if due.due_at <= now:
            found.append(Reached(
                3, due.due_at, "UnmitigatedCriticalVulnerability",
                f"{vulnerability} is critical and no fix was listed by the vendor's "
                f"remediation deadline {_rfc(due.due_at)} ({due.budget}, {due.framework})"))
        elif fixed is None:
            upcoming.append((3, due.due_at))
    return _result(found, upcoming)


# ---- emails to the contacts ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TierEmail:
    """The email to a tier's contacts, of a case or a bulletin. Its record (a case's
    status.submission.escalationEmails, a bulletin's status.escalation.emails) is stored
    before each send, so that the email goes out at most once, and again only after the SMTP
    server refused it (nothing went out)."""

    tier: int
    #: From the object's uid and the tier: the same message however often it is tried.
    message_id: str
    recipients: tuple[str, ...]
    subject: str
    body: str
    #: Sends of it the SMTP server refused so far (nothing went out), and the last refusal.
    refusals: int = 0
    last_error: str = ""
    #: When it may be tried again after a refusal; None: now.
    retry_at: datetime.datetime | None = None

    def intent(self, now: datetime.datetime) -> dict[str, Any]:
        """The tier's record, stored before each send: from then on the email is not sent
        again unless a refusal is recorded."""
        entry: dict[str, Any] = {"tier": self.tier, "messageId": self.message_id,
                                 "attemptedAt": conditions.rfc3339(now)}
        if self.refusals:
            entry.update(attempts=self.refusals, lastError=self.last_error)
        return entry

    def next_try(self, refused_at: datetime.datetime) -> datetime.datetime:
        """When to try again after a refusal at ``refused_at``: the backoff of the case's
        own email (domain/submission.py), to the second, as status stores it."""
        moment = refused_at + submission_module.retry_delay(self.refusals + 1)
        return moment.replace(microsecond=0)

    def refused(self, error: str, refused_at: datetime.datetime) -> dict[str, Any]:
        """What a refused send adds to the record: the count, the error and when the next
        try is due."""
        return {"attempts": self.refusals + 1, "lastError": error[:1024],
                "retryAt": conditions.rfc3339(self.next_try(refused_at))}


def tier_email(tier: int, message_id: str, recipients: tuple[str, ...], subject: str,
               body: str, record: Mapping[str, Any] | None) -> TierEmail | None:
    """The email of ``tier`` given its ``record``: None when it has no recipients or the
    record says it was sent or may have been (a record without ``retryAt``)."""
    retry_at = _refused_until(record)
    if not recipients or (record is not None and retry_at is None):
        return None
    return TierEmail(tier, message_id, recipients, submission_module.one_line(subject), body,
                     refusals=int(record.get("attempts") or 0) if record else 0,
                     last_error=str(record.get("lastError") or "") if record else "",
                     retry_at=retry_at)


def _refused_until(record: Mapping[str, Any] | None) -> datetime.datetime | None:
    """The retryAt of a record whose last send was refused; None for any other record."""
    if record is None or record.get("sentAt") or record.get("error"):
        return None
    try:
        return timing.parse_time(str(record.get("retryAt") or ""))
    except ValueError:
        return None
