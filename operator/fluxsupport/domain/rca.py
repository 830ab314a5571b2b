"""The written root-cause analysis owed after a case's resolution.

The Support Policy 2026 promises, "for every confirmed Severity 1 and Severity 2 incident", a
written root-cause analysis (RCA) within ten calendar days of the case being resolved. The
policy's ``rootCauseAnalysis`` section says which levels are owed one and how many days; the
``support-policy-2026`` preset sets Levels 1 and 2 and 10 days, the default sets none.

Rules (docs/sla-policy.md, "Root-cause analyses"):

* A case is owed an RCA when its level (``status.level``: after the workaround rule, so a
  Severity 2 reclassified as Severity 3 is not) is one of the policy's levels and it was not
  dismissed.
* It is due ``days`` calendar days after the resolution, at the same wall-clock time in the
  policy's zone, whatever DST does in between. A reopened case's clock follows its latest
  resolution.
* The RCA is delivered when a reply or attachment marked as one reaches the ticket
  (:func:`marks_delivery`) or when the customer's side records it (the ``rca-delivered-at``
  annotation); the earliest of them counts. Delivered by the due time, inclusive, is in time.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
from collections.abc import Iterable

from fluxsupport.domain import remediation
from fluxsupport.domain.policy import RootCauseAnalysis


class State(enum.StrEnum):
    #: Owed, but the case is not resolved: no clock runs yet.
    NOT_DUE = "NotDue"
    #: Resolved, not delivered, before the due time.
    PENDING = "Pending"
    #: Delivered by the due time.
    DELIVERED = "Delivered"
    #: Delivered after the due time.
    LATE = "Late"
    #: Not delivered, and the due time has passed.
    OVERDUE = "Overdue"


@dataclasses.dataclass(frozen=True)
class Rca:
    state: State
    #: None until the case is resolved.
    due_at: datetime.datetime | None
    delivered_at: datetime.datetime | None
    #: When the state changes by time alone (Pending becomes Overdue), for the scheduler.
    next_at: datetime.datetime | None


def owed(settings: RootCauseAnalysis | None, level: int, dismissed: bool) -> bool:
    return settings is not None and level in settings.levels and not dismissed


def evaluate(settings: RootCauseAnalysis | None, zone: str, *, level: int,
             resolved_at: datetime.datetime | None, dismissed: bool = False,
             delivered_at: datetime.datetime | None = None,
             now: datetime.datetime) -> Rca | None:
    """Where the RCA of a case stands at ``now``; None for a case that is owed none.
    ``zone`` is the policy's time zone."""
    if not owed(settings, level, dismissed):
        return None
    assert settings is not None
    if resolved_at is None:
        state = State.NOT_DUE if delivered_at is None else State.DELIVERED
        return Rca(state, None, delivered_at, None)
    due = remediation.calendar_days(resolved_at, settings.days, zone)
    if delivered_at is not None:
        return Rca(State.DELIVERED if delivered_at <= due else State.LATE, due, delivered_at,
                   None)
    if now >= due:
        return Rca(State.OVERDUE, due, None, None)
    return Rca(State.PENDING, due, None, due)


# ---- how a ticket delivers it ----------------------------------------------------------------

#: "RCA:" or "Root cause analysis:" (any case, hyphen or space) opening the reply.
_MARK = re.compile(r"\s*(?:RCA|root[- ]cause[- ]analysis)\s*:", re.IGNORECASE)
#: What mail and helpdesks put before a subject: "Re:", "Fwd:", "[example.com #123]".
_SUBJECT_PREFIXES = re.compile(r"(?:\s*(?:(?:re|fwd?|aw|wg):|\[[^\]]{0,200}\]))*",
                               re.IGNORECASE)
#: A file named rca..., rca-..., root-cause...: "rca" not followed by another letter.
_ATTACHMENT = re.compile(r"(?:rca|root[-_ ]?cause)(?![a-z])", re.IGNORECASE)


def marks_delivery(subject: str | None, text: str | None, attachments: Iterable[str] = ()
                   ) -> bool:
    """Whether a reply of support delivers the RCA: its subject (after "Re:" and ticket
    tags) or its text opens with ``RCA:``, or one of its attachments is named ``rca*``."""
    if subject is not None:
        subject = subject[:1000]  # a subject is one line; RT keeps 200 characters
        prefix = _SUBJECT_PREFIXES.match(subject)
        if _MARK.match(subject, prefix.end() if prefix else 0):
            return True
    if text is not None and _MARK.match(text):
        return True
    return any(_ATTACHMENT.match(name.replace("\\", "/").rsplit("/", 1)[-1])
               for name in attachments)
