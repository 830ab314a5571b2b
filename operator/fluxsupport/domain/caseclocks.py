"""A SupportCase's two SLA clocks, first response and resolution: when they start, warn and
end, in which state they are, and what a change of level does to them.

domain/timing.py computes a clock from the policy; this module keeps the one stored in the
status unless the level changed, and decides its state from the case's lifecycle facts.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from fluxsupport.domain import calendar as calendar_module
from fluxsupport.domain import casespec, casestatus, conditions, evaluation, pause, timing
from fluxsupport.domain import policy as policy_module


def _stored_timing(previous: Mapping[str, Any],
                   block: str = "firstResponse") -> timing.Timing | None:
    held = previous.get(block) or {}
    # Blocks written before they recorded their own level follow the case's.
    level = held.get("level", previous.get("level"))
    if level not in policy_module.LEVEL_NAMES:
        return None
    try:
        return timing.Timing(timing.parse_time(held["startedAt"]),
                             timing.parse_time(held["warningAt"]),
                             timing.parse_time(held["deadline"]), int(held["targetSeconds"]),
                             str(held.get("calendar", "")), int(level))
    except (KeyError, TypeError, ValueError):
        return None


def _decided(block: Mapping[str, Any]) -> bool:
    """Whether a stored clock had stopped, its outcome decided: ``businessSeconds`` is
    written exactly when a clock stops (a response, a resolution or a dismissal)."""
    decided = (casestatus.State.MET, casestatus.State.LATE, casestatus.State.CLOSED)
    return "businessSeconds" in block or block.get("state") in decided


@dataclasses.dataclass(frozen=True)
class _Clock:
    """One clock of this evaluation, and what became of the stored one."""

    #: The clock this evaluation uses.
    current: timing.Timing | None
    #: same: the stored clock follows the case's level; new: there was none; recomputed: it
    #: followed another level and was still running; kept: it followed another level, but
    #: its outcome was decided, which is final.
    change: Literal["same", "new", "recomputed", "kept"]
    #: The stored clock, when recomputed or kept.
    stored: timing.Timing | None = None


def _clock(previous: Mapping[str, Any], block: str, level: int, stopped: bool,
           compute: Callable[[int], timing.Timing | None], paused: bool = False) -> _Clock:
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
    held = previous.get(block) or {}
    paused = paused or "pausedSeconds" in held or "pausedSince" in held
    if stored.level == level:
        # Waits move the deadline: it is computed again from the opening and every wait
        # (domain/pause.py), which leaves a decided outcome decided.
        return _Clock(compute(level) if paused else stored, "same")
    if stopped and _decided(previous.get(block) or {}):
        return _Clock(stored, "kept", stored)
    return _Clock(compute(level), "recomputed", stored)


def paused_timing(base: timing.Timing | None, created: datetime.datetime,
                  calendar: calendar_module.BusinessCalendar, ratio: float,
                  pauses: Sequence[pause.Pause],
                  stopped_at: datetime.datetime | None) -> timing.Timing | None:
    """``base`` moved by ``pauses`` (none: ``base`` itself). While a wait without an end
    holds it, its warning point and deadline are those in force when the wait began."""
    if base is None or not pauses:
        return base
    level_calendar = calendar.for_level(base.level)
    moved = pause.clock(level_calendar, created, base.target_seconds, ratio, pauses, stopped_at)

    def at(budget: pause.Budget, seconds: int) -> datetime.datetime:
        if budget.due is not None:
            return budget.due
        return level_calendar.add(created, seconds + budget.paused_seconds)

    return dataclasses.replace(
        base, warning_at=at(moved.warning, round(base.target_seconds * ratio)),
        deadline=at(moved.deadline, base.target_seconds),
        paused_seconds=moved.deadline.paused_seconds, paused_since=moved.deadline.paused_since,
        remaining_seconds=moved.deadline.remaining_seconds)


def clocks(previous: Mapping[str, Any], created: datetime.datetime, level: int,
           policy: policy_module.Policy, calendar: calendar_module.BusinessCalendar,
           responded: bool, closed: bool, waits: Sequence[pause.Pause] = (),
           reopenings: Sequence[pause.Pause] = (),
           responded_at: datetime.datetime | None = None,
           closed_at: datetime.datetime | None = None,
           ) -> tuple[timing.Timing, timing.Timing | None, evaluation.Event | None, str]:
    """Both clocks of a case of ``level``, with the Event and the note (led by a space) of
    a level change; ``responded``: the first response is given (or the case dismissed);
    ``closed``: the case is resolved or dismissed. ``waits`` (on the customer) move both
    clocks, ``reopenings`` (closed, then reopened) the resolution clock only; each stops
    counting them at ``responded_at`` and ``closed_at``."""
    ratio = policy.warning_ratio
    both = [*waits, *reopenings]
    first = _clock(previous, "firstResponse", level, responded,
                   lambda at: paused_timing(timing.compute_timing(created, at, policy, calendar),
                                            created, calendar, ratio, waits, responded_at),
                   bool(waits))
    resolution = _clock(previous, "resolution", level, closed,
                        lambda at: paused_timing(
                            timing.compute_resolution_timing(created, at, policy, calendar),
                            created, calendar, ratio, both, closed_at), bool(both))
    event, note = _recalculation(previous, level, first, resolution)
    assert first.current is not None  # every level has a first-response target
    return first.current, resolution.current, event, f" {note}" if note else ""


def _recalculation(previous: Mapping[str, Any], level: int, first: _Clock,
                   resolution: _Clock) -> tuple[evaluation.Event | None, str]:
    """The SeverityChanged Event and the note for status and Ready when a level change (or
    a withdrawn response or closure) moved or kept a clock; else the note stored earlier."""
    old_level = previous.get("level")
    changed = first.change in ("recomputed", "kept") and old_level != level
    if not changed and "recomputed" not in (first.change, resolution.change):
        return None, str((previous.get("firstResponse") or {}).get("recalculation") or "")
    parts = [_clock_note(previous, "firstResponse", first, level),
             _clock_note(previous, "resolution", resolution, level)]
    describe = casespec.describe_level
    if not changed:
        head = f"A decided outcome was withdrawn; the clock runs again at {describe(level)}"
    elif isinstance(old_level, int) and old_level in policy_module.LEVEL_NAMES:
        head = f"Severity changed from {describe(old_level)} to {describe(level)}"
    else:
        head = f"Severity changed to {describe(level)}"
    note = f"{head}: {'; '.join(part for part in parts if part)}."
    return (evaluation.Event("Normal", "SeverityChanged", note) if changed else None), note


def _clock_note(previous: Mapping[str, Any], block: str, clock: _Clock, level: int) -> str:
    """What a level change did to one clock, for the recalculation note."""
    first = block == "firstResponse"
    held, current = clock.stored, clock.current
    if clock.change == "kept" and held is not None:
        state = (previous.get(block) or {}).get("state")
        return (f"the {'first response' if first else 'resolution'} stays {state}, decided "
                f"against the {casespec.describe_level(held.level)} deadline "
                f"{conditions.rfc3339(held.deadline)}")
    if clock.change == "recomputed" and held is not None:
        if current is None:
            return (f"{casespec.describe_level(level)} has no resolution target, so that "
                    "clock is dropped")
        return (f"{'deadline' if first else 'resolution deadline'} recomputed from the same "
                f"start, {conditions.rfc3339(held.deadline)} -> "
                f"{conditions.rfc3339(current.deadline)}")
    if clock.change == "new" and current is not None and not first:
        return f"resolution due {conditions.rfc3339(current.deadline)}"
    return ""


def breached_at(previous: Mapping[str, Any],
                block: str = "firstResponse") -> datetime.datetime | None:
    """When the stored clock ``block`` was breached, if it was: a breach is final."""
    stored = (previous.get(block) or {}).get("breachedAt")
    try:
        return timing.parse_time(stored) if stored else None
    except ValueError:
        return None


def state(clock: timing.Timing, responded_at: datetime.datetime | None,
          dismissed_at: datetime.datetime | None, now: datetime.datetime,
          breached: datetime.datetime | None) -> casestatus.State:
    """A breach is final: lowering the severity afterwards moves the deadline, not the fact
    that a deadline was missed."""
    deadline = min(clock.deadline, breached) if breached else clock.deadline
    if clock.paused_since is not None and breached is None:
        # Held by a wait on the customer: the clock stands where it was when the wait began.
        now = min(now, clock.paused_since)
    if responded_at is not None:
        return casestatus.State.MET if responded_at <= deadline else casestatus.State.LATE
    if dismissed_at is not None:
        return (casestatus.State.BREACHED if dismissed_at > deadline
                else casestatus.State.CLOSED)
    if breached is not None or now >= clock.deadline:
        return casestatus.State.BREACHED
    if now >= clock.warning_at:
        return casestatus.State.AT_RISK
    return casestatus.State.PENDING


def resolution_block(clock: timing.Timing | None, closure: Mapping[str, Any] | None,
                     previous: Mapping[str, Any], now: datetime.datetime,
                     calendar: calendar_module.BusinessCalendar, created: datetime.datetime
                     ) -> dict[str, Any] | None:
    """The resolution clock's block: it stops at the closure (resolved or dismissed)."""
    if clock is None:
        return None
    closed_at = timing.parse_time(closure["at"]) if closure else None
    resolved_at = closed_at if closure and closure["outcome"] == "Resolved" else None
    dismissed_at = closed_at if closure and closure["outcome"] == "Dismissed" else None
    breached = breached_at(previous, "resolution")
    current = state(clock, resolved_at, dismissed_at, now, breached)
    block: dict[str, Any] = {
        "startedAt": conditions.rfc3339(clock.started_at),
        "warningAt": conditions.rfc3339(clock.warning_at),
        "deadline": conditions.rfc3339(clock.deadline), "targetSeconds": clock.target_seconds,
        "state": current.value, "calendar": clock.calendar, "level": clock.level,
    }
    block.update(pause_fields(clock))
    if current in (casestatus.State.BREACHED, casestatus.State.LATE):
        block["breachedAt"] = conditions.rfc3339(breached or min(clock.deadline, now))
    if closed_at is not None:
        block["businessSeconds"] = max(0, int(calendar.for_level(clock.level).elapsed(
            created, closed_at) - clock.paused_seconds))
    if resolved_at is not None:
        block["resolvedAt"] = conditions.rfc3339(resolved_at)
    return block


def pause_fields(clock: timing.Timing) -> dict[str, Any]:
    """pausedSeconds, pausedSince and remainingSeconds of a clock block, where they apply:
    a clock no wait ever moved has none of them."""
    fields: dict[str, Any] = {}
    if clock.paused_seconds:
        fields["pausedSeconds"] = int(clock.paused_seconds)
    if clock.paused_since is not None:
        fields["pausedSince"] = conditions.rfc3339(clock.paused_since)
        fields["remainingSeconds"] = int(clock.remaining_seconds or 0)
    return fields


def running(clock: timing.Timing | None) -> timing.Timing | None:
    """The clock unless a wait holds it: a held clock has no instant ahead."""
    return clock if clock is not None and clock.paused_since is None else None


def next_transition(now: datetime.datetime, response: timing.Timing | None,
                    resolution: timing.Timing | None,
                    future_until: datetime.datetime | None) -> datetime.datetime | None:
    """The next instant that changes the status: a warning point or deadline of a running
    clock, or when an ignored future annotation stops being in the future (status is a
    function of the clock), whichever comes first."""
    instants = [moment for clock in (response, resolution) if clock is not None
                for moment in (clock.warning_at, clock.deadline) if moment > now]
    if future_until is not None:
        instants.append(future_until)
    return min(instants, default=None)
