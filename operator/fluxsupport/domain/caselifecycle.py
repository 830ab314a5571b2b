"""What happened to a SupportCase: its first response, resolution or dismissal, as people
record them in its annotations and as the portal's sync records them in status.submission.

People write the lifecycle annotations (``fluxsupport case respond``, kubectl annotate);
clocks and outcomes follow from these facts (domain/caseclocks.py).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from fluxsupport import constants
from fluxsupport.domain import conditions, timing


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
            moment = timing.parse_time(raw)
        except ValueError as error:
            # Quote a bounded prefix: an annotation may hold up to 256 KiB.
            shown = repr(raw if len(raw) <= 100 else raw[:100] + "...")
            what = "is out of range" if isinstance(error, timing.TimeOutOfRange) else \
                "is not an RFC 3339 time"
            problems.append(f"annotation {key}={shown} {what} ({error}); write an RFC 3339 "
                            "time such as 2026-12-07T11:00:00Z")
            continue
        if now is not None and moment > now + CLOCK_SKEW:
            future.append(f"annotation {key}={conditions.rfc3339(moment)} is after the "
                          f"operator's clock ({conditions.rfc3339(now)}) by more than the "
                          f"{_minutes(CLOCK_SKEW)} clock-skew allowance")
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


@dataclasses.dataclass(frozen=True)
class PortalFacts:
    """What the portal told about the case's ticket (status.submission, from the sync)."""

    replied_at: datetime.datetime | None = None
    replied_by: str | None = None
    resolved_at: datetime.datetime | None = None
    resolved_by: str | None = None
    #: The ticket was rejected: when, by whom, and the support team's reason.
    rejected_at: datetime.datetime | None = None
    rejected_by: str | None = None
    reject_reason: str | None = None


def portal_facts(submission: Mapping[str, Any]) -> PortalFacts:
    reply = submission.get("firstReply") or {}

    def moment(value: Any) -> datetime.datetime | None:
        try:
            return timing.parse_time(value) if isinstance(value, str) and value else None
        except ValueError:
            return None

    rejected = submission.get("rejected") or {}
    return PortalFacts(moment(reply.get("at")), reply.get("by") or None,
                       moment(submission.get("resolvedAt")),
                       submission.get("resolvedBy") or None,
                       moment(rejected.get("at")), rejected.get("by") or None,
                       rejected.get("reason") or None)


def first_response(lifecycle: Lifecycle, portal: PortalFacts
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


def closure(lifecycle: Lifecycle, portal: PortalFacts) -> dict[str, Any] | None:
    """status.closure: how the case was closed (resolved or dismissed), when, by whom."""
    if lifecycle.resolved_at is not None:
        closed = {"outcome": "Resolved", "at": conditions.rfc3339(lifecycle.resolved_at)}
        if lifecycle.resolved_by:
            closed["by"] = lifecycle.resolved_by
        return closed
    if lifecycle.dismissed_at is not None:
        closed = {"outcome": "Dismissed", "at": conditions.rfc3339(lifecycle.dismissed_at)}
        if lifecycle.dismissed_by:
            closed["by"] = lifecycle.dismissed_by
        if lifecycle.dismiss_reason:
            closed["reason"] = lifecycle.dismiss_reason
        return closed
    if portal.resolved_at is not None:
        closed = {"outcome": "Resolved", "at": conditions.rfc3339(portal.resolved_at),
                  "source": "portal"}
        if portal.resolved_by:
            closed["by"] = portal.resolved_by
        return closed
    if portal.rejected_at is not None:
        closed = {"outcome": "Dismissed", "at": conditions.rfc3339(portal.rejected_at),
                  "source": "portal"}
        if portal.rejected_by:
            closed["by"] = portal.rejected_by
        if portal.reject_reason:
            closed["reason"] = portal.reject_reason
        return closed
    return None
