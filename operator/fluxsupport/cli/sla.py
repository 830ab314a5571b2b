"""``fluxsupport sla``: what-if deadline arithmetic, without a cluster."""

from __future__ import annotations

import datetime
import json
import pathlib
import zoneinfo
from typing import Annotated

import typer

from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import LEVELS, PolicyError, load_policy, validate_policy
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
) -> None:
    """Print the first-response deadline of a case opened at --opened.

    Example: fluxsupport sla due --level 1 --opened 2026-12-04T16:00:00Z
    prints 2026-12-07T11:00:00+00:00 (Friday 16:00 + 4 business hours, London).
    A policy file may hold just `preset: support-policy-2026` and `region: AMER`.
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
    timing = compute_timing(start, number, merged, calendar)
    zone = zoneinfo.ZoneInfo(merged.timezone)
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

