"""The clock that pauses while a case waits on the customer: the rules of domain/pause.py, the
worked examples of docs/sla-policy.md and `sla due --paused`."""

from __future__ import annotations

import datetime
import json
import pathlib
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxsupport.domain import pause, timing
from fluxsupport.domain.calendar import BusinessCalendar
from tests.fixtures import (
    DOC_MOMENT,
    EMEA,
    MONDAY,
    POLICIES,
    SLA_POLICY_DOC,
    at,
    doc_moment,
    doc_pauses,
    doc_table,
)

DEFAULT = POLICIES["default"]
CALENDAR = BusinessCalendar(DEFAULT)


def hours(count: float) -> datetime.timedelta:
    return datetime.timedelta(hours=count)


def waited(start: str, end: str | None = None) -> pause.Pause:
    return pause.Pause(at(start), at(end) if end else None)


# ---- the rules -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_without_pauses_the_instants_are_those_of_the_stored_clocks(name: str,
                                                                     level: int) -> None:
    policy = POLICIES[name]
    calendar = BusinessCalendar(policy)
    opened = datetime.datetime(2026, 3, 6, 20, 0, tzinfo=datetime.UTC)  # a Friday evening
    stored = timing.compute_timing(opened, level, policy, calendar)
    clock = pause.first_response(opened, level, policy, calendar, [])
    assert (clock.started_at, clock.warning.due, clock.deadline.due) == (
        stored.started_at, stored.warning_at, stored.deadline)
    assert clock.deadline.paused_seconds == 0
    resolution = pause.resolution(opened, level, policy, calendar, [])
    stored_resolution = timing.compute_resolution_timing(opened, level, policy, calendar)
    if stored_resolution is None:
        assert resolution is None
    else:
        assert resolution is not None
        assert (resolution.warning.due, resolution.deadline.due) == (
            stored_resolution.warning_at, stored_resolution.deadline)


def test_a_pause_in_business_hours_moves_the_deadline_by_its_length() -> None:
    clock = pause.first_response(MONDAY, 2, DEFAULT, CALENDAR,
                                 [waited("2026-11-30T12:00:00Z", "2026-11-30T14:00:00Z")])
    assert clock.deadline.due == at("2026-12-01T11:00:00Z")  # 18:00 + 2 h, over the night
    assert clock.deadline.paused_seconds == 7200
    assert clock.warning.due == at("2026-11-30T18:00:00Z")  # 6 h + 2 h paused


def test_only_the_business_time_of_a_pause_counts() -> None:
    friday = at("2026-12-04T16:00:00Z")
    night = pause.first_response(friday, 1, DEFAULT, CALENDAR,
                                 [waited("2026-12-04T19:00:00Z", "2026-12-07T08:00:00Z")])
    assert night.deadline.due == at("2026-12-07T11:00:00Z")  # unchanged
    assert night.deadline.paused_seconds == 0
    assert night.counted  # it counted, for nothing
    overnight = pause.first_response(MONDAY, 2, DEFAULT, CALENDAR,
                                     [waited("2026-11-30T17:00:00Z", "2026-12-01T10:00:00Z")])
    assert overnight.deadline.paused_seconds == 7200


def test_a_24x7_level_pauses_around_the_clock() -> None:
    saturday = at("2026-12-05T22:30:00Z")
    calendar = BusinessCalendar(EMEA)
    night = [waited("2026-12-05T23:00:00Z", "2026-12-06T01:00:00Z")]
    response = pause.first_response(saturday, 1, EMEA, calendar, night)
    resolution = pause.resolution(saturday, 1, EMEA, calendar, night)
    assert resolution is not None
    assert response.deadline.due == at("2026-12-06T01:30:00Z")
    assert resolution.deadline.due == at("2026-12-06T04:30:00Z")
    # Severity 2 runs on Support Hours: the same night moves nothing.
    assert pause.first_response(saturday, 2, EMEA, calendar, night).deadline.paused_seconds == 0


def test_pauses_are_cut_at_the_opening_and_merged() -> None:
    before = pause.first_response(MONDAY, 1, DEFAULT, CALENDAR,
                                  [waited("2026-11-30T09:00:00Z", "2026-11-30T11:00:00Z")])
    assert before.deadline.due == at("2026-11-30T15:00:00Z")
    assert before.counted == (waited("2026-11-30T10:00:00Z", "2026-11-30T11:00:00Z"),)
    gone = pause.first_response(MONDAY, 1, DEFAULT, CALENDAR,
                                [waited("2026-11-27T09:00:00Z", "2026-11-30T10:00:00Z")])
    assert gone.deadline.due == at("2026-11-30T14:00:00Z")
    assert gone.counted == ()
    overlapping = [waited("2026-11-30T12:00:00Z", "2026-11-30T14:00:00Z"),
                   waited("2026-11-30T11:00:00Z", "2026-11-30T13:00:00Z"),
                   waited("2026-11-30T14:00:00Z", "2026-11-30T14:30:00Z")]  # touching
    merged = pause.first_response(MONDAY, 1, DEFAULT, CALENDAR, overlapping)
    assert merged.counted == (waited("2026-11-30T11:00:00Z", "2026-11-30T14:30:00Z"),)
    assert merged.deadline.due == at("2026-11-30T17:30:00Z")
    # The order they are given in does not matter.
    assert pause.first_response(MONDAY, 1, DEFAULT, CALENDAR,
                                reversed(overlapping)) == merged


def test_a_pause_after_the_deadline_leaves_the_breach() -> None:
    late = pause.first_response(MONDAY, 1, DEFAULT, CALENDAR,
                                [waited("2026-11-30T15:00:00Z", "2026-11-30T16:00:00Z")])
    assert late.deadline.due == at("2026-11-30T14:00:00Z")
    assert late.counted == ()
    at_the_deadline = pause.first_response(
        MONDAY, 1, DEFAULT, CALENDAR, [waited("2026-11-30T14:00:00Z", "2026-11-30T16:00:00Z")])
    assert at_the_deadline.deadline.due == at("2026-11-30T14:00:00Z")
    # An open wait that starts after the deadline does not hold the clock either.
    open_late = pause.first_response(MONDAY, 1, DEFAULT, CALENDAR,
                                     [waited("2026-11-30T15:00:00Z")])
    assert open_late.deadline.due == at("2026-11-30T14:00:00Z")


def test_a_pause_moved_into_reach_by_an_earlier_one_counts() -> None:
    two = [waited("2026-11-30T11:00:00Z", "2026-11-30T12:00:00Z"),
           waited("2026-11-30T14:00:00Z", "2026-11-30T15:00:00Z")]
    clock = pause.first_response(MONDAY, 2, EMEA, BusinessCalendar(EMEA), two)
    assert clock.deadline.due == at("2026-11-30T16:00:00Z")
    assert len(clock.counted) == 2


def test_a_pause_after_the_response_changes_only_the_resolution() -> None:
    calendar = BusinessCalendar(EMEA)
    responded = at("2026-11-30T11:30:00Z")
    later = [waited("2026-11-30T12:00:00Z", "2026-11-30T13:00:00Z")]
    response = pause.first_response(MONDAY, 2, EMEA, calendar, later, responded_at=responded)
    resolution = pause.resolution(MONDAY, 2, EMEA, calendar, later)
    assert response.deadline.due == at("2026-11-30T14:00:00Z")
    assert response.counted == ()
    assert resolution is not None
    assert resolution.deadline.due == at("2026-12-01T11:00:00Z")
    # A resolved case is not moved by a wait after its resolution.
    resolved = pause.resolution(MONDAY, 2, EMEA, calendar, later,
                                resolved_at=at("2026-11-30T11:45:00Z"))
    assert resolved is not None
    assert resolved.deadline.due == at("2026-12-01T10:00:00Z")


def test_an_open_pause_holds_the_budget_with_what_is_left() -> None:
    calendar = BusinessCalendar(EMEA)
    waiting = [waited("2026-11-30T11:00:00Z")]
    response = pause.first_response(MONDAY, 2, EMEA, calendar, waiting)
    assert response.deadline == pause.Budget(None, 0.0, at("2026-11-30T11:00:00Z"), 3 * 3600)
    assert response.warning.remaining_seconds == 2 * 3600
    # After an earlier, closed pause: 30 min counted, 30 min paused, 1 h counted.
    both = [waited("2026-11-30T10:30:00Z", "2026-11-30T11:00:00Z"),
            waited("2026-11-30T12:00:00Z")]
    held = pause.first_response(MONDAY, 2, EMEA, calendar, both).deadline
    assert (held.due, held.paused_seconds, held.remaining_seconds) == (None, 1800, 2.5 * 3600)
    # An open pause swallows every later one.
    assert pause.merge([*waiting, waited("2026-11-30T13:00:00Z", "2026-11-30T14:00:00Z")],
                       MONDAY) == tuple(waiting)


def test_an_open_pause_after_the_warning_leaves_the_warning() -> None:
    clock = pause.first_response(MONDAY, 2, DEFAULT, CALENDAR, [waited("2026-11-30T17:00:00Z")])
    assert clock.warning.due == at("2026-11-30T16:00:00Z")
    assert clock.deadline.due is None
    assert clock.deadline.remaining_seconds == 3600


def test_a_pause_is_checked() -> None:
    with pytest.raises(ValueError, match=r"ends .* before it starts"):
        waited("2026-11-30T12:00:00Z", "2026-11-30T11:00:00Z")
    with pytest.raises(ValueError, match="naive"):
        pause.Pause(datetime.datetime(2026, 11, 30, 12, 0))
    assert waited("2026-11-30T12:00:00Z", "2026-11-30T12:00:00Z").end is not None  # empty: ok


@pytest.mark.parametrize(("text", "fragment"), [
    ("2026-11-30T12:00:00Z", "expected START/END"),
    ("2026-11-30T12:00:00/2026-11-30T13:00:00Z", "no time-zone offset"),
    ("2026-11-30T12:00:00Z/1969-12-31T00:00:00Z", "outside the supported years"),
    ("soon/later", "Invalid isoformat"),
])
def test_intervals_that_are_not_start_slash_end_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        pause.parse_interval(text)


def test_an_interval_with_an_empty_end_is_still_waiting() -> None:
    assert pause.parse_interval("2026-11-30T12:00:00+01:00/ ") == waited("2026-11-30T11:00:00Z")


_BASE = datetime.datetime(2026, 3, 23, 0, 0, tzinfo=datetime.UTC)
_moments = st.integers(min_value=0, max_value=14 * 24 * 4).map(
    lambda quarter: _BASE + datetime.timedelta(minutes=15 * quarter))


@settings(max_examples=150, deadline=None)
@given(opened=_moments, level=st.integers(1, 4), preset=st.sampled_from(sorted(POLICIES)),
       spans=st.lists(st.tuples(_moments, st.integers(0, 3 * 24 * 4)), max_size=4))
def test_the_deadline_leaves_exactly_the_budget_unpaused(
        opened: datetime.datetime, level: int, preset: str,
        spans: list[tuple[datetime.datetime, int]]) -> None:
    """Business time from the opening to the moved deadline, less the paused business time in
    it, is the budget; and no pause the deadline ignored starts before it."""
    policy = POLICIES[preset]
    calendar = BusinessCalendar(policy).for_level(level)
    pauses = [pause.Pause(start, start + datetime.timedelta(minutes=15 * length))
              for start, length in spans]
    clock = pause.first_response(opened, level, policy, BusinessCalendar(policy), pauses)
    due = clock.deadline.due
    assert due is not None
    paused = sum(calendar.elapsed(p.start, min(p.end or due, due)) for p in clock.counted)
    assert abs(calendar.elapsed(opened, due) - paused - policy.targets.for_level(level)) < 1e-6
    assert paused == pytest.approx(clock.deadline.paused_seconds)
    ignored = [p for p in pause.merge(pauses, opened) if p not in clock.counted]
    assert all(p.start >= due for p in ignored)


# ---- the worked examples of docs/sla-policy.md ----------------------------------------------

_LEFT = re.compile(r"^paused, (\d+(?:\.\d+)?) h left$")


def worked_examples() -> list[list[str]]:
    return doc_table(SLA_POLICY_DOC, "### Worked examples with pauses", [
        "Policy", "Level", "Opened", "Paused", "First response due", "Resolution due"])


def _check(expected: str, budget: pause.Budget | None, zone: datetime.tzinfo) -> None:
    if expected == "none":
        assert budget is None
        return
    assert budget is not None
    left = _LEFT.match(expected)
    if left:
        assert budget.due is None
        assert budget.remaining_seconds == float(left[1]) * 3600
        return
    assert budget.due == doc_moment(expected)
    # Shown in the policy's zone, the deadline has the offset the table writes.
    assert budget.due.astimezone(zone).utcoffset() == doc_moment(expected).utcoffset()


def test_the_docs_have_the_examples_the_rules_need() -> None:
    examples = worked_examples()
    assert len(examples) >= 10
    assert {row[0] for row in examples} >= {"default", "2026 EMEA", "2026 AMER"}
    assert any("(waiting)" in row[3] for row in examples)
    assert any(";" in row[3] for row in examples)
    # One across a DST switch.
    assert any(doc_moment(row[2]).utcoffset() != doc_moment(row[4]).utcoffset() for row in examples
               if DOC_MOMENT.match(row[4]))


@pytest.mark.parametrize("row", worked_examples(), ids=lambda row: f"{row[0]}-{row[1]}-{row[2]}")
def test_worked_example(row: list[str]) -> None:
    name, level, opened, paused, response, resolution = row[:6]
    policy = POLICIES[name]
    calendar = BusinessCalendar(policy)
    pauses = doc_pauses(paused)
    first = pause.first_response(doc_moment(opened), int(level), policy, calendar, pauses)
    _check(response, first.deadline, calendar.zone)
    second = pause.resolution(doc_moment(opened), int(level), policy, calendar, pauses)
    _check(resolution, None if second is None else second.deadline, calendar.zone)


# ---- sla due --paused ------------------------------------------------------------------------

def _console(document: str) -> list[tuple[list[str], str]]:
    """The `$ fluxsupport sla due ... --paused` commands of the doc with their output."""
    found = []
    lines = document.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("$ fluxsupport sla due") and "--paused" in line:
            found.append((line.split()[2:], lines[index + 1]))
    return found


def test_the_documented_commands_print_what_the_docs_say(tmp_path: pathlib.Path) -> None:
    (tmp_path / "policy-2026.yaml").write_text("preset: support-policy-2026\nregion: EMEA\n")
    commands = _console(SLA_POLICY_DOC.read_text())
    assert len(commands) >= 3
    for args, shown in commands:
        result = subprocess.run([sys.executable, "-m", "fluxsupport", *args],
                                capture_output=True, text=True, timeout=120, check=False,
                                cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == shown, " ".join(args)


def test_sla_due_json_says_how_much_is_left_while_waiting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fluxsupport", "sla", "due", "--level", "1", "--opened",
         "2026-11-30T10:00:00Z", "--json", "--paused", "2026-11-30T11:00:00Z/2026-11-30T12:00:00Z",
         "--paused", "2026-11-30T13:00:00Z/"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        # 1 h counted, 1 h paused, 1 h counted: at 13:00 the 3 h warning share and the 4 h
        # budget are both held, with 1 h and 2 h left.
        "startedAt": "2026-11-30T10:00:00+00:00", "warningAt": None, "deadline": None,
        "pausedSeconds": 3600, "pausedSince": "2026-11-30T13:00:00+00:00",
        "remainingSeconds": 7200}


@pytest.mark.parametrize(("interval", "fragment"), [
    ("2026-11-30T13:00:00Z/2026-11-30T12:00:00Z", "before it starts"),
    ("2026-11-30T13:00:00Z", "expected START/END"),
    ("2026-11-30T13:00:00Z/2100-01-01T00:00:00Z", "outside the supported years"),
])
def test_sla_due_refuses_a_bad_interval_with_exit_2(interval: str, fragment: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fluxsupport", "sla", "due", "--level", "1", "--opened",
         "2026-11-30T10:00:00Z", "--paused", interval],
        capture_output=True, text=True, timeout=120, check=False, env={
            "COLUMNS": "300", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "--paused" in result.stderr
