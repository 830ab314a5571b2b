"""``fluxsupport sla``: what-if deadline arithmetic, without a cluster."""

from __future__ import annotations

import datetime
import json
import pathlib
import zoneinfo
from typing import Annotated

import typer

from fluxsupport.domain import pause as pause_clock
from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import LEVELS, Policy, PolicyError, load_policy, validate_policy
from fluxsupport.domain.timing import (
    TimeOutOfRange,
    compute_resolution_timing,
    compute_timing,
    parse_time,
)

app = typer.Typer(help="Business-hours SLA arithmetic.", no_args_is_help=True)


def _level(value: str) -> int:
    if value.isdigit() and 1 <= int(value) <= 4:
        return int(value)
    if value.capitalize() in LEVELS:
        return LEVELS[value.capitalize()]
    raise typer.BadParameter(f"{value!r} is not a level; use 1-4 or Urgent, High, Medium, Low")


@app.command()
def due(
    level: Annotated[str, typer.Option(help="1-4, or Urgent, High, Medium, Low.")],
    opened: Annotated[str, typer.Option(
        help="When the case was opened, ISO 8601 with an offset, e.g. 2026-12-04T16:00:00Z.")],
    timezone: Annotated[str | None, typer.Option(help="IANA zone; default from the policy.")
                        ] = None,
    holidays: Annotated[str | None, typer.Option(
        help="Holiday calendar CC[-SUBDIV], e.g. GB-ENG, DE-BY; '' for none.")] = None,
    policy: Annotated[pathlib.Path | None, typer.Option(
        help="Policy YAML file; the published defaults otherwise.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=(
        "Print startedAt, warningAt, deadline, and resolutionWarningAt and resolutionDeadline "
        "where the policy sets a resolution target."))] = False,
    paused: Annotated[list[str] | None, typer.Option(
        "--paused", metavar="START/END", help=(
            "An interval in which the case waited on the customer (repeat); END empty while "
            "it still waits. Its business time moves the deadlines."))] = None,
) -> None:
    """Print the first-response deadline of a case opened at --opened.

    Example: fluxsupport sla due --level 1 --opened 2026-12-04T16:00:00Z
    prints 2026-12-07T11:00:00+00:00 (Friday 16:00 + 4 business hours, London).
    A policy file may hold just `preset: support-policy-2026` and `region: AMER`.
    With --paused 2026-12-07T09:00:00Z/2026-12-07T10:00:00Z it prints 2026-12-07T12:00:00+00:00.
    """
    number = _level(level)
    try:
        start = parse_time(opened)
    except TimeOutOfRange as error:
        raise typer.BadParameter(f"{opened!r} is out of range: {error}",
                                 param_hint="--opened") from error
    except ValueError as error:
        raise typer.BadParameter(f"{opened!r} is not an ISO 8601 time with an offset "
                                 f"({error})", param_hint="--opened") from error
    try:
        text = policy.read_text() if policy else ""
    except OSError as error:
        raise typer.BadParameter(f"cannot read {policy}: {error.strerror}",
                                 param_hint="--policy") from error
    try:
        data = load_policy(text, source=str(policy or "defaults")).model_dump(
            by_alias=True, mode="json")
        if timezone is not None:
            data["timezone"] = timezone
        if holidays is not None:
            data["holidays"] = holidays
        merged = validate_policy(data, source="options")
    except PolicyError as error:
        raise typer.BadParameter(str(error)) from error
    calendar = BusinessCalendar(merged)
    zone = zoneinfo.ZoneInfo(merged.timezone)
    if paused:
        _due_paused(start, number, merged, calendar, _pauses(paused), zone, as_json)
        return
    timing = compute_timing(start, number, merged, calendar)
    if as_json:
        shown = {"startedAt": timing.started_at.astimezone(zone).isoformat(),
                 "warningAt": timing.warning_at.astimezone(zone).isoformat(),
                 "deadline": timing.deadline.astimezone(zone).isoformat()}
        resolution = compute_resolution_timing(start, number, merged, calendar)
        if resolution is not None:
            shown["resolutionWarningAt"] = resolution.warning_at.astimezone(zone).isoformat()
            shown["resolutionDeadline"] = resolution.deadline.astimezone(zone).isoformat()
        typer.echo(json.dumps(shown))
    else:
        typer.echo(timing.deadline.astimezone(zone).isoformat())


def _pauses(values: list[str]) -> list[pause_clock.Pause]:
    pauses = []
    for value in values:
        try:
            pauses.append(pause_clock.parse_interval(value))
        except TimeOutOfRange as error:
            raise typer.BadParameter(f"{value!r} is out of range: {error}",
                                     param_hint="--paused") from error
        except ValueError as error:
            raise typer.BadParameter(f"{value!r}: {error}", param_hint="--paused") from error
    return pauses


def _due_paused(start: datetime.datetime, level: int, policy: Policy,
                calendar: BusinessCalendar, pauses: list[pause_clock.Pause],
                zone: zoneinfo.ZoneInfo, as_json: bool) -> None:
    """``sla due --paused``: the deadlines moved by the business time of the pauses."""
    response = pause_clock.first_response(start, level, policy, calendar, pauses)
    if not as_json:
        typer.echo(_shown(response.deadline, zone))
        return
    shown: dict[str, object] = {"startedAt": response.started_at.astimezone(zone).isoformat()}
    clocks = [("", response),
              ("resolution", pause_clock.resolution(start, level, policy, calendar, pauses))]
    for prefix, clock in clocks:
        if clock is None:
            continue
        warning, deadline = clock.warning, clock.deadline
        shown[_key(prefix, "warningAt")] = _instant(warning.due, zone)
        shown[_key(prefix, "deadline")] = _instant(deadline.due, zone)
        shown[_key(prefix, "pausedSeconds")] = round(deadline.paused_seconds)
        if deadline.paused_since is not None and deadline.remaining_seconds is not None:
            shown[_key(prefix, "pausedSince")] = _instant(deadline.paused_since, zone)
            shown[_key(prefix, "remainingSeconds")] = round(deadline.remaining_seconds)
    typer.echo(json.dumps(shown))


def _key(prefix: str, name: str) -> str:
    return prefix + name[0].upper() + name[1:] if prefix else name


def _instant(moment: datetime.datetime | None, zone: zoneinfo.ZoneInfo) -> str | None:
    return None if moment is None else moment.astimezone(zone).isoformat()


def _shown(budget: pause_clock.Budget, zone: zoneinfo.ZoneInfo) -> str:
    """The moved deadline, or how much business time is left while the case still waits."""
    if budget.due is not None:
        return budget.due.astimezone(zone).isoformat()
    assert budget.paused_since is not None
    assert budget.remaining_seconds is not None
    minutes = round(budget.remaining_seconds) // 60
    return (f"paused since {budget.paused_since.astimezone(zone).isoformat()}, "
            f"{minutes // 60}h{minutes % 60:02d}m of business time left")


def remaining(deadline: str, now: datetime.datetime, calendar: BusinessCalendar,
              level: int | None = None) -> str:
    """Business time left until ``deadline`` (negative once passed), for reports; on the
    level's calendar (24x7 for the policy's alwaysOpenLevels) when ``level`` is given."""
    if level is not None:
        calendar = calendar.for_level(level)
    due_at = parse_time(deadline)
    seconds = calendar.elapsed(now, due_at) if due_at > now else -calendar.elapsed(due_at, now)
    sign = "-" if seconds < 0 else ""
    minutes = int(abs(seconds)) // 60
    return f"{sign}{minutes // 60}h{minutes % 60:02d}m"

