"""The clock that pauses while a case waits on the customer.

The 2026 policy does not measure delays caused by the customer against its targets. A pause is
an interval of time, ``[start, end)``, during which the case waited on the customer; ``end`` is
None while it still waits. The pure functions here move a budget's deadline by the *business*
time of the pauses, on the same calendar the budget runs on, so a pause at night or at a
weekend costs nothing on a business-hours calendar and its full length on a 24x7 one.

Rules (docs/sla-policy.md, "Waiting on the customer"):

* Pauses are merged where they overlap or touch, and cut at the case's opening: time before the
  case existed was never counted.
* A pause counts for a budget only while the budget is still running: one that starts at or
  after the budget's (moved) deadline, or at or after the moment the budget was met, changes
  nothing. A breach is final, and so is a response.
* Paused business time is added to the budget: the deadline is the first instant at which the
  business time since the opening, less the paused business time, equals the budget. The
  warning point moves the same way, with its own share of the budget.
* While a pause that has no end holds a budget, the budget has no deadline: it is paused with
  the business time it has left.

The deadline is always recomputed from the opening and the whole list of pauses, never moved
step by step from a stored value, so the same inputs give the same deadline whoever computes it.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable

from fluxsupport.domain import timing
from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import Policy


@dataclasses.dataclass(frozen=True)
class Pause:
    """One wait on the customer; ``end`` None means the case still waits."""

    start: datetime.datetime
    end: datetime.datetime | None = None

    def __post_init__(self) -> None:
        for moment in (self.start, self.end):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("naive datetimes are ambiguous; pass an aware datetime")
        if self.end is not None and self.end < self.start:
            raise ValueError(f"a pause ends ({self.end.isoformat()}) before it starts "
                             f"({self.start.isoformat()})")


@dataclasses.dataclass(frozen=True)
class Budget:
    """Where one budget (first response or resolution, or its warning share) stands."""

    #: None while a pause without an end holds the budget.
    due: datetime.datetime | None
    #: Business seconds of the pauses that moved the budget.
    paused_seconds: float
    #: The start of the open pause that holds the budget, or None.
    paused_since: datetime.datetime | None = None
    #: Business seconds left when the open pause began, or None when not held.
    remaining_seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class Clock:
    """A budget with its warning point, after the pauses."""

    started_at: datetime.datetime
    target_seconds: int
    warning: Budget
    deadline: Budget
    #: The pauses that counted for the deadline, merged and cut at the opening.
    counted: tuple[Pause, ...]


def merge(pauses: Iterable[Pause], opened: datetime.datetime) -> tuple[Pause, ...]:
    """The pauses in time order, overlapping or touching ones merged, cut at ``opened``; an
    open pause swallows every later one."""
    merged: list[Pause] = []
    for pause in sorted(pauses, key=lambda p: p.start):
        if pause.end is not None and pause.end <= opened:
            continue
        start = max(pause.start, opened)
        if merged and (merged[-1].end is None or start <= merged[-1].end):
            last = merged[-1]
            end = None if last.end is None or pause.end is None else max(last.end, pause.end)
            merged[-1] = Pause(last.start, end)
        else:
            merged.append(Pause(start, pause.end))
    return tuple(merged)


def _walk(calendar: BusinessCalendar, opened: datetime.datetime, seconds: float,
          merged: tuple[Pause, ...], stopped_at: datetime.datetime | None
          ) -> tuple[Budget, tuple[Pause, ...]]:
    """Where ``seconds`` of business time from ``opened`` are used up, the paused business
    time excluded; ``stopped_at`` is when the budget was met (later pauses do not count)."""
    paused = 0.0
    due = calendar.add(opened, seconds)
    counted: list[Pause] = []
    for pause in merged:
        if pause.start >= due or (stopped_at is not None and pause.start >= stopped_at):
            break  # the budget was decided (breached or met) before this pause
        counted.append(pause)
        if pause.end is None:
            used = calendar.elapsed(opened, pause.start) - paused
            return Budget(None, paused, pause.start, max(seconds - used, 0.0)), tuple(counted)
        paused += calendar.elapsed(pause.start, pause.end)
        due = calendar.add(opened, seconds + paused)
    return Budget(due, paused), tuple(counted)


def clock(calendar: BusinessCalendar, opened: datetime.datetime, target_seconds: int,
          warning_ratio: float, pauses: Iterable[Pause],
          stopped_at: datetime.datetime | None = None) -> Clock:
    """A budget of ``target_seconds`` and its warning point, moved by ``pauses``. Without
    pauses the instants are those of :mod:`fluxsupport.domain.timing`."""
    merged = merge(pauses, opened)
    warning, _ = _walk(calendar, opened, round(target_seconds * warning_ratio), merged,
                       stopped_at)
    deadline, counted = _walk(calendar, opened, target_seconds, merged, stopped_at)
    return Clock(calendar.clock_start(opened), target_seconds, warning, deadline, counted)


def first_response(opened: datetime.datetime, level: int, policy: Policy,
                   calendar: BusinessCalendar, pauses: Iterable[Pause],
                   responded_at: datetime.datetime | None = None) -> Clock:
    """The first-response clock of a case of ``level`` opened at ``opened``, after ``pauses``."""
    return clock(calendar.for_level(level), opened, policy.targets.for_level(level),
                 policy.warning_ratio, pauses, responded_at)


def resolution(opened: datetime.datetime, level: int, policy: Policy,
               calendar: BusinessCalendar, pauses: Iterable[Pause],
               resolved_at: datetime.datetime | None = None) -> Clock | None:
    """The resolution clock after ``pauses``, or None where the policy sets no target."""
    target = policy.resolution_targets.for_level(level)
    if target is None:
        return None
    return clock(calendar.for_level(level), opened, target, policy.warning_ratio, pauses,
                 resolved_at)


def parse_interval(text: str) -> Pause:
    """``START/END`` (RFC 3339 with offsets); an empty END means the case still waits.
    ValueError (TimeOutOfRange for a year out of range) says what is wrong."""
    start, separator, end = text.partition("/")
    if not separator:
        raise ValueError("expected START/END, e.g. 2026-12-01T10:00:00Z/2026-12-01T12:00:00Z, "
                         "with END empty while the case still waits")
    return Pause(timing.parse_time(start), timing.parse_time(end) if end.strip() else None)
