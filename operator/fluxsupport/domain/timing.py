"""When a case's clocks start, warn and end: the deadline arithmetic of a SupportCase, without
the rest of its status, so that ``fluxsupport sla due`` imports no more than it needs."""

from __future__ import annotations

import dataclasses
import datetime

from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import Policy

#: Years a lifecycle or opening time may fall in. Before 1970 nothing here existed (Kubernetes
#: and POSIX time start then). python-holidays publishes public holidays only up to 2100, so
#: a deadline computed later would silently skip none; the calendar also builds the year
#: after each instant, so 2099 is the last year whose deadlines are right. The bound keeps
#: the arithmetic far from ``datetime``'s year 9999, where adding a target overflows.
MIN_YEAR, MAX_YEAR = 1970, 2099


class TimeOutOfRange(ValueError):
    """A well-formed time outside ``MIN_YEAR``-``MAX_YEAR``."""


def parse_time(value: str) -> datetime.datetime:
    """RFC 3339 with an explicit offset, in UTC; naive times are rejected as ambiguous."""
    moment = datetime.datetime.fromisoformat(value.strip().replace("z", "Z"))
    if moment.tzinfo is None:
        raise ValueError("it has no time-zone offset")
    try:
        moment = moment.astimezone(datetime.UTC)
    except OverflowError as error:  # 9999-12-31T23:59:59-14:00 is in year 10000 in UTC
        raise TimeOutOfRange(f"it is outside the supported years {MIN_YEAR}-{MAX_YEAR}"
                             ) from error
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise TimeOutOfRange(f"year {moment.year} is outside the supported years "
                             f"{MIN_YEAR}-{MAX_YEAR}")
    return moment


@dataclasses.dataclass(frozen=True)
class Timing:
    started_at: datetime.datetime
    warning_at: datetime.datetime
    deadline: datetime.datetime
    target_seconds: int
    calendar: str
    #: The level whose target and calendar the clock follows. A case's level may change
    #: after a clock's outcome was decided; the clock keeps the level it was decided at.
    level: int
    #: Business seconds of the waits on the customer that moved the clock.
    paused_seconds: float = 0.0
    #: While a wait without an end holds the clock: since when. The warning point and the
    #: deadline are then those in force when the wait began, and stand still.
    paused_since: datetime.datetime | None = None
    #: Business seconds of the budget left when that wait began.
    remaining_seconds: float | None = None


def _clock(created: datetime.datetime, level: int, target: int, policy: Policy,
           calendar: BusinessCalendar) -> Timing:
    calendar = calendar.for_level(level)
    return Timing(
        started_at=calendar.clock_start(created),
        warning_at=calendar.add(created, round(target * policy.warning_ratio)),
        deadline=calendar.add(created, target),
        target_seconds=target,
        calendar=policy.fingerprint(),
        level=level,
    )


def compute_timing(created: datetime.datetime, level: int, policy: Policy,
                   calendar: BusinessCalendar) -> Timing:
    """The first-response clock of a case of ``level`` opened at ``created``."""
    return _clock(created, level, policy.targets.for_level(level), policy, calendar)


def compute_resolution_timing(created: datetime.datetime, level: int, policy: Policy,
                              calendar: BusinessCalendar) -> Timing | None:
    """The resolution clock, or None where the policy sets no resolution target."""
    target = policy.resolution_targets.for_level(level)
    return None if target is None else _clock(created, level, target, policy, calendar)
