"""Business-time arithmetic: properties (hypothesis) and hand-derived worked examples.

Aspects: exact budget between start and deadline; monotonic deadlines; deadlines never in
closed time except the closing instant; DST in London and New York; UK Christmas and Boxing
Day substitutes; Easter; weekend and after-hours openings; DE-BY versus DE-BE holidays;
24x7 calendars across DST.
"""

from __future__ import annotations

import datetime
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import Policy

UTC = datetime.UTC
LONDON = zoneinfo.ZoneInfo("Europe/London")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")

WEEK = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

CALENDARS = {
    "GB-ENG": BusinessCalendar(Policy()),
    "DE-BY": BusinessCalendar(Policy(timezone="Europe/Berlin", holidays="DE-BY")),
    "US": BusinessCalendar(Policy(timezone="America/New_York", holidays="US")),
    "AU-NSW 08-17": BusinessCalendar(Policy.model_validate({
        "timezone": "Australia/Sydney", "holidays": "AU-NSW",
        "businessHours": {"start": "08:00", "end": "17:00"}})),
    "24x7 Berlin": BusinessCalendar(Policy.model_validate({
        "timezone": "Europe/Berlin", "holidays": "", "businessHours": {"alwaysOpen": True}})),
    "Mon-Sat 00-24": BusinessCalendar(Policy.model_validate({
        "timezone": "Europe/London", "holidays": "GB-ENG",
        "businessHours": {"days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat"],
                          "start": "00:00", "end": "24:00"}})),
    # Openings and closings in DST gaps and repeated hours (London switches at 01:00 UTC).
    "London 01:45-02:15 daily": BusinessCalendar(Policy.model_validate({
        "timezone": "Europe/London", "holidays": "",
        "businessHours": {"days": list(WEEK), "start": "01:45", "end": "02:15"}})),
    "New York 01:30-02:30 Sun": BusinessCalendar(Policy.model_validate({
        "timezone": "America/New_York", "holidays": "",
        "businessHours": {"days": ["Sun"], "start": "01:30", "end": "02:30"}})),
}

instants = st.datetimes(min_value=datetime.datetime(2024, 1, 1),
                        max_value=datetime.datetime(2030, 12, 31),
                        timezones=st.just(UTC)).map(lambda t: t.replace(microsecond=0))
budgets = st.integers(min_value=1, max_value=200 * 3600)
calendar_names = st.sampled_from(sorted(CALENDARS))


@settings(max_examples=300, deadline=None)
@given(calendar_names, instants, budgets)
def test_business_time_between_start_and_deadline_equals_the_target(
        name: str, start: datetime.datetime, budget: int) -> None:
    calendar = CALENDARS[name]
    deadline = calendar.add(start, budget)
    assert calendar.elapsed(start, deadline) == budget


@settings(max_examples=300, deadline=None)
@given(calendar_names, instants, instants, budgets)
def test_deadline_is_monotonic_in_the_opening_time(
        name: str, first: datetime.datetime, second: datetime.datetime, budget: int) -> None:
    calendar = CALENDARS[name]
    early, late = sorted((first, second))
    assert calendar.add(early, budget) <= calendar.add(late, budget)


@settings(max_examples=300, deadline=None)
@given(calendar_names, instants, budgets)
def test_deadline_never_falls_in_closed_time_except_at_closing(
        name: str, start: datetime.datetime, budget: int) -> None:
    calendar = CALENDARS[name]
    deadline = calendar.add(start, budget)
    assert calendar.is_open(deadline) or calendar.is_closing_instant(deadline)
    assert deadline > start


def local(zone: zoneinfo.ZoneInfo, text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=zone)


def due(name: str, zone: zoneinfo.ZoneInfo, opened: str, hours: float) -> str:
    deadline = CALENDARS[name].add(local(zone, opened), hours * 3600)
    return deadline.astimezone(zone).isoformat()


@pytest.mark.parametrize(("opened", "hours", "expected"), [
    # Closing-time rule: a budget that runs out at 18:00 is due at 18:00, not 09:00 next day.
    ("2026-12-01T14:00", 4, "2026-12-01T18:00:00+00:00"),
    # Opened exactly at closing: counting starts at the next opening.
    ("2026-12-01T18:00", 4, "2026-12-02T13:00:00+00:00"),
    # Friday afternoon rolls over the weekend.
    ("2026-12-04T16:00", 4, "2026-12-07T11:00:00+00:00"),
    # Saturday and night openings start at Monday 09:00.
    ("2026-12-05T10:00", 4, "2026-12-07T13:00:00+00:00"),
    ("2026-12-07T03:00", 4, "2026-12-07T13:00:00+00:00"),
    # Level 4: 24 business hours = two 9-hour days and 6 hours.
    ("2026-11-30T10:00", 24, "2026-12-02T16:00:00+00:00"),
    # Christmas 2026: Fri 25 and Mon 28 (Boxing Day substitute for Sat 26) are closed.
    ("2026-12-24T16:00", 4, "2026-12-29T11:00:00+00:00"),
    # Christmas 2027 falls on Saturday: substitutes Mon 27 and Tue 28 December.
    ("2027-12-24T17:00", 2, "2027-12-29T10:00:00+00:00"),
    # Easter 2026: Good Friday 3 April and Easter Monday 6 April.
    ("2026-04-02T15:00", 8, "2026-04-07T14:00:00+01:00"),
    # London DST starts Sunday 29 March 2026: Friday 15:00 + 8 h is Monday 14:00 BST.
    ("2026-03-27T15:00", 8, "2026-03-30T14:00:00+01:00"),
    # London DST ends Sunday 25 October 2026.
    ("2026-10-23T15:00", 8, "2026-10-26T14:00:00+00:00"),
])
def test_london_worked_examples(opened: str, hours: float, expected: str) -> None:
    assert due("GB-ENG", LONDON, opened, hours) == expected


@pytest.mark.parametrize(("name", "zone", "opened", "hours", "expected"), [
    ("DE-BY", BERLIN, "2026-03-27T15:00", 8, "2026-03-30T14:00:00+02:00"),
    ("DE-BY", BERLIN, "2026-10-23T15:00", 8, "2026-10-26T14:00:00+01:00"),
    ("DE-BY", BERLIN, "2026-04-30T17:00", 4, "2026-05-04T12:00:00+02:00"),  # May Day
    ("DE-BY", BERLIN, "2026-12-23T16:00", 12, "2026-12-28T10:00:00+01:00"),
    ("US", NEW_YORK, "2026-03-06T15:00", 8, "2026-03-09T14:00:00-04:00"),  # US DST
    ("US", NEW_YORK, "2026-11-25T15:00", 12, "2026-11-27T18:00:00-05:00"),  # Thanksgiving
])
def test_reference_cases_from_the_sla_notes(name: str, zone: zoneinfo.ZoneInfo, opened: str,
                                            hours: float, expected: str) -> None:
    assert due(name, zone, opened, hours) == expected


def test_subdivision_holidays_differ_between_bavaria_and_berlin() -> None:
    bavaria = BusinessCalendar(Policy(timezone="Europe/Berlin", holidays="DE-BY"))
    berlin = BusinessCalendar(Policy(timezone="Europe/Berlin", holidays="DE-BE"))
    # Epiphany, Wed 6 January 2027: a holiday in Bavaria only.
    opened = local(BERLIN, "2027-01-05T17:00")
    assert bavaria.add(opened, 2 * 3600).astimezone(BERLIN).isoformat() == \
        "2027-01-07T10:00:00+01:00"
    assert berlin.add(opened, 2 * 3600).astimezone(BERLIN).isoformat() == \
        "2027-01-06T10:00:00+01:00"
    # International Women's Day, Mon 8 March 2027: a holiday in Berlin only.
    opened = local(BERLIN, "2027-03-05T17:00")
    assert bavaria.add(opened, 2 * 3600).astimezone(BERLIN).isoformat() == \
        "2027-03-08T10:00:00+01:00"
    assert berlin.add(opened, 2 * 3600).astimezone(BERLIN).isoformat() == \
        "2027-03-09T10:00:00+01:00"


def test_24x7_counts_real_elapsed_time_across_the_dst_switch() -> None:
    calendar = CALENDARS["24x7 Berlin"]
    opened = local(BERLIN, "2026-03-29T01:00")
    deadline = calendar.add(opened, 4 * 3600)
    # Wall clock jumps 02:00 -> 03:00, so 4 real hours end at 06:00 CEST, not 05:00.
    assert deadline.astimezone(BERLIN).isoformat() == "2026-03-29T06:00:00+02:00"


def test_closed_dates_are_extra_closures() -> None:
    calendar = BusinessCalendar(Policy.model_validate({"closedDates": ["2026-12-07"]}))
    opened = local(LONDON, "2026-12-04T17:00")
    assert calendar.add(opened, 2 * 3600).isoformat() == "2026-12-08T10:00:00+00:00"


def test_clock_start_is_the_next_opening_outside_hours() -> None:
    calendar = CALENDARS["GB-ENG"]
    assert calendar.clock_start(local(LONDON, "2026-12-05T10:00")).isoformat() == \
        "2026-12-07T09:00:00+00:00"
    assert calendar.clock_start(local(LONDON, "2026-12-07T10:30")).isoformat() == \
        "2026-12-07T10:30:00+00:00"


# --- DST gaps and repeated hours inside custom hours -----------------------------------------
#
# The rule: business time is the real time that elapses while the wall clock reads inside the
# window. Europe/London, window 01:45-02:15 every day:
#
# * Spring, Sun 2026-03-29: at 01:00 GMT the clock jumps to 02:00 BST. It never reads 01:45;
#   it reads inside the window from 02:00 BST (01:00 UTC) to 02:15 BST (01:15 UTC): 15 minutes.
# * Autumn, Sun 2026-10-25: at 02:00 BST the clock goes back to 01:00 GMT. It reads inside the
#   window 01:45-02:00 BST (00:45-01:00 UTC), then again 01:45-02:15 GMT (01:45-02:15 UTC):
#   45 minutes.

DAILY_NIGHT = CALENDARS["London 01:45-02:15 daily"]


def utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_window_opening_in_the_spring_gap_opens_when_the_clock_jumps() -> None:
    """Regression: the Sunday window came out as -30 min and put deadlines a day late."""
    sunday, monday = utc("2026-03-29T00:00:00"), utc("2026-03-30T00:00:00")
    assert DAILY_NIGHT.elapsed(sunday, monday) == 15 * 60
    # 10 min from Sunday midnight: 02:00 BST + 10 min.
    assert DAILY_NIGHT.add(sunday, 10 * 60).astimezone(LONDON).isoformat() == \
        "2026-03-29T02:10:00+01:00"
    # 20 min: Sunday's 15, then 5 from Monday 01:45 BST.
    assert DAILY_NIGHT.add(sunday, 20 * 60).astimezone(LONDON).isoformat() == \
        "2026-03-30T01:50:00+01:00"
    assert DAILY_NIGHT.clock_start(sunday) == utc("2026-03-29T01:00:00")
    assert not DAILY_NIGHT.is_open(utc("2026-03-29T00:59:59"))


def test_window_over_the_autumn_repeated_hour_counts_it_each_time() -> None:
    sunday, monday = utc("2026-10-25T00:00:00"), utc("2026-10-26T00:00:00")
    assert DAILY_NIGHT.elapsed(sunday, monday) == 45 * 60
    assert DAILY_NIGHT.add(sunday, 10 * 60).astimezone(LONDON).isoformat() == \
        "2026-10-25T01:55:00+01:00"
    # 30 min: 15 in BST, the clock goes back, closed 01:00-01:45 GMT, 15 more in GMT.
    assert DAILY_NIGHT.add(sunday, 30 * 60).astimezone(LONDON).isoformat() == \
        "2026-10-25T02:00:00+00:00"
    assert not DAILY_NIGHT.is_open(utc("2026-10-25T01:30:00"))  # 01:30 GMT, the second time
    assert DAILY_NIGHT.is_open(utc("2026-10-25T00:50:00"))  # 01:50 BST


@pytest.mark.parametrize("zone_name", ["Europe/London", "America/New_York", "Australia/Sydney"])
@pytest.mark.parametrize(("start", "end"), [("01:45", "02:15"), ("00:30", "03:00"),
                                            ("01:00", "02:00"), ("02:00", "03:00"),
                                            ("02:30", "24:00"), ("00:00", "01:30")])
def test_business_time_is_real_time_with_the_wall_clock_inside_the_window(
        zone_name: str, start: str, end: str) -> None:
    """Against a minute-by-minute count of the rule, over both switches of 2026."""
    zone = zoneinfo.ZoneInfo(zone_name)
    calendar = BusinessCalendar(Policy.model_validate({
        "timezone": zone_name, "holidays": "",
        "businessHours": {"days": list(WEEK), "start": start, "end": end}}))
    opening = datetime.time.fromisoformat(start)
    closing = None if end == "24:00" else datetime.time.fromisoformat(end)
    switches = {"Europe/London": ("2026-03-29", "2026-10-25"),
                "America/New_York": ("2026-03-08", "2026-11-01"),
                "Australia/Sydney": ("2026-04-05", "2026-10-04")}[zone_name]
    for switch in switches:
        first = datetime.datetime.fromisoformat(switch).replace(tzinfo=UTC) - \
            datetime.timedelta(days=1)
        minutes = 0
        for step in range(3 * 24 * 60):
            wall = (first + datetime.timedelta(minutes=step)).astimezone(zone).time()
            minutes += opening <= wall and (closing is None or wall < closing)
        assert calendar.elapsed(first, first + datetime.timedelta(days=3)) == minutes * 60, \
            (zone_name, start, end, switch)
