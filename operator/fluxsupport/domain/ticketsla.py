"""What a case's ticket shows of its SLA, so that the support queue sorts by it.

Rules (docs/channels.md, "Priority and Due"):

* **Priority** is the case's level as a number, higher for more urgent, because RT sorts and
  escalates by a number (0 to 100 by convention; RT 5 shows 0 as Low, 50 as Medium and 100
  as High): Level 1 is 100, Level 2 75, Level 3 50, Level 4 25. The ticket's FinalPriority is
  the same number, so RT's escalation tools leave it alone.
* **Due** is the deadline that is running: the first response's until the case has its first
  response, then the resolution's (none where the policy sets no resolution target). Both
  come after the pauses (:mod:`fluxsupport.domain.pause`). While a pause without an end holds
  the budget, the deadline is not known yet and Due is not set; it is set again, moved, when
  the pause ends.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from fluxsupport.domain import conditions, pause, timing

#: RT Priority per level.
PRIORITIES: dict[int, int] = {1: 100, 2: 75, 3: 50, 4: 25}


@dataclasses.dataclass(frozen=True)
class SlaFields:
    """The ticket's priority and due time; ``due`` None means not set."""

    priority: int
    due: datetime.datetime | None

    def __post_init__(self) -> None:
        if self.due is not None and self.due.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware datetime")


def priority(level: int) -> int:
    return PRIORITIES[level]


def fields(level: int, first_response: pause.Clock, resolution: pause.Clock | None,
           responded: bool) -> SlaFields:
    """The ticket's fields for a case of ``level`` whose clocks are ``first_response`` and
    ``resolution`` (after their pauses); ``responded``: the first response is recorded."""
    running = resolution if responded else first_response
    due = running.deadline.due if running is not None else None
    # RT keeps whole seconds: the deadline rounded down, so Due is never later than it.
    return SlaFields(priority(level), due.replace(microsecond=0) if due else None)


def _deadline(block: Mapping[str, Any]) -> datetime.datetime | None:
    """A clock block's deadline, None while a wait holds it (or it has none)."""
    if "pausedSince" in block or not block.get("deadline"):
        return None
    try:
        return timing.parse_time(str(block["deadline"])).replace(microsecond=0)
    except ValueError:
        return None


def from_status(status: Mapping[str, Any]) -> SlaFields | None:
    """The ticket's fields as a SupportCase's status gives them (the clocks there are already
    moved by the waits); None for a case that is closed or cannot be evaluated: its ticket
    keeps what it has."""
    level = status.get("level")
    if level not in PRIORITIES or status.get("closure"):
        return None
    first = status.get("firstResponse") or {}
    if "respondedAt" not in first:
        return SlaFields(priority(level), _deadline(first))
    return SlaFields(priority(level), _deadline(status.get("resolution") or {}))


def as_record(fields: SlaFields) -> dict[str, Any]:
    """status.submission.sla: what the ticket was given last."""
    record: dict[str, Any] = {"priority": fields.priority}
    if fields.due is not None:
        record["due"] = conditions.rfc3339(fields.due)
    return record
