"""When a SupportCase waited on the customer, from the portal and from the customer's mark.

Two sources give the waits (docs/sla-policy.md, "Waiting on the customer"):

* **portal**: the ticket's ``stalled`` runs, which the portal's sync stores in
  ``status.submission.pauses`` (domain/conversation.py says when a run begins and ends);
* **annotation**: ``support.fluxcd.controlplane.io/waiting-on-customer`` on the case, for
  installs without a portal. Its value is the RFC 3339 time the wait began, or ``START/END``
  once it is over. Removing it ends the wait when the operator sees it removed; the interval
  stays in ``status.pauses``, which is where it is remembered.

The resolution clock also skips the intervals in which the ticket was closed and then
reopened (``status.submission.reopenings``): those are no waits on the customer, and the first
response is not concerned (a resolution is a response).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from fluxsupport import constants
from fluxsupport.domain import conditions, pause, timing

#: Entries of status.pauses kept at most (the CRD's maxItems); the oldest go first.
MAX_PAUSES = 64


@dataclasses.dataclass(frozen=True)
class CasePauses:
    """What a case's waits are, for its clocks and its status."""

    #: status.pauses: every wait with its source, oldest first.
    recorded: tuple[dict[str, Any], ...] = ()
    #: The waits on the customer, for both clocks.
    waits: tuple[pause.Pause, ...] = ()
    #: The closed-then-reopened intervals, for the resolution clock only.
    reopenings: tuple[pause.Pause, ...] = ()
    #: What is wrong with the annotation, for the Ready condition.
    problems: tuple[str, ...] = ()

    @property
    def waiting_since(self) -> datetime.datetime | None:
        """The start of the wait that has no end yet, or None."""
        open_ = [wait.start for wait in self.waits if wait.end is None]
        return min(open_, default=None)


def _moment(value: Any) -> datetime.datetime | None:
    try:
        return timing.parse_time(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def _intervals(items: Any, start_key: str = "start",
               end_key: str = "end") -> list[pause.Pause]:
    """Well-formed intervals of a stored list; anything else is skipped (status is ours)."""
    found = []
    for item in items or []:
        if not isinstance(item, Mapping):
            continue
        start, end = _moment(item.get(start_key)), _moment(item.get(end_key))
        if start is not None and (end is None or end >= start):
            found.append(pause.Pause(start, end))
    return found


def _entry(wait: pause.Pause, source: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"start": conditions.rfc3339(wait.start)}
    if wait.end is not None:
        entry["end"] = conditions.rfc3339(wait.end)
    entry["source"] = source
    return entry


def _annotation(value: str | None, now: datetime.datetime
                ) -> tuple[pause.Pause | None, str | None]:
    if value is None:
        return None, None
    text = value.strip()
    try:
        wait = pause.parse_interval(text if "/" in text else f"{text}/")
    except ValueError as error:
        shown = repr(value if len(value) <= 100 else value[:100] + "...")
        return None, (f"annotation {constants.WAITING_ON_CUSTOMER}={shown} is not START or "
                      f"START/END in RFC 3339 ({error}); write e.g. 2026-12-07T11:00:00Z")
    if wait.start > now + CLOCK_SKEW or (wait.end is not None and wait.end > now + CLOCK_SKEW):
        return None, (f"annotation {constants.WAITING_ON_CUSTOMER}={text} is after the "
                      f"operator's clock ({conditions.rfc3339(now)}); a wait cannot have "
                      "begun or ended in the future")
    return wait, None


#: As for the lifecycle annotations (domain/caselifecycle.py).
CLOCK_SKEW = datetime.timedelta(minutes=5)


def case_pauses(annotations: Mapping[str, str], submission: Mapping[str, Any],
                previous: Mapping[str, Any], now: datetime.datetime) -> CasePauses:
    """The case's waits from the portal's record, the annotation, and the annotation's waits
    remembered in ``previous`` status.pauses."""
    portal = _intervals(submission.get("pauses"))
    reopenings = _intervals(submission.get("reopenings"))
    marked, problem = _annotation(annotations.get(constants.WAITING_ON_CUSTOMER), now)
    remembered = _intervals([item for item in previous.get("pauses") or []
                             if isinstance(item, Mapping) and item.get("source") == "annotation"])
    annotated: list[pause.Pause] = []
    for wait in remembered:
        if marked is not None and wait.start == marked.start:
            continue  # the annotation says how it stands now
        if wait.end is None:
            # The mark was removed (or replaced): the wait ended when the operator saw it.
            ends = now if marked is None else max(min(now, marked.start), wait.start)
            annotated.append(pause.Pause(wait.start, ends))
        else:
            annotated.append(wait)
    if marked is not None:
        annotated.append(marked)
    recorded = sorted([_entry(wait, "portal") for wait in portal]
                      + [_entry(wait, "annotation") for wait in annotated],
                      key=lambda entry: entry["start"])[-MAX_PAUSES:]
    return CasePauses(tuple(recorded), tuple(portal + annotated), tuple(reopenings),
                      (problem,) if problem else ())
