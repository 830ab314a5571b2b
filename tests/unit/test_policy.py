"""Policy parsing: defaults, durations, and errors that name the field."""

from __future__ import annotations

import pytest

from fluxsupport.domain.policy import Policy, PolicyError, load_policy, parse_duration


def test_empty_document_gives_the_published_defaults() -> None:
    policy = load_policy("")
    assert policy == Policy()
    assert policy.timezone == "Europe/London"
    assert policy.holidays == "GB-ENG"
    assert policy.business_hours.days == ("Mon", "Tue", "Wed", "Thu", "Fri")
    assert (policy.business_hours.start, policy.business_hours.end) == ("09:00", "18:00")
    assert [policy.targets.for_level(level) for level in (1, 2, 3, 4)] == \
        [4 * 3600, 8 * 3600, 12 * 3600, 24 * 3600]
    assert policy.warning_ratio == 0.75


@pytest.mark.parametrize(("text", "seconds"), [
    ("4h", 14400), ("1h30m", 5400), ("45s", 45), ("2d", 172800), (30, 30)])
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_24x7_with_targets_in_seconds_is_expressible() -> None:
    policy = load_policy("businessHours: {alwaysOpen: true}\ntargets: {Urgent: 3s}\n")
    assert policy.business_hours.always_open
    assert policy.targets.for_level(1) == 3


@pytest.mark.parametrize(("text", "fragment"), [
    ("timezone: Mars/Olympus", "timezone: Value error, unknown IANA time zone 'Mars/Olympus'"),
    ("holidays: XX", "holidays: Value error, unknown holiday country 'XX'"),
    ("targets: {Urgent: soon}", "targets.Urgent: Value error, expected a duration"),
    ("targets: {Urgent: 0s}", "a target must be positive"),
    ("businessHours: {start: '18:00', end: '09:00'}", "must be after start"),
    ("businessHours: {days: [Funday]}", "unknown weekday 'Fun'"),
    ("warningRatio: 1.5", "warningRatio: Input should be less than 1"),
    ("colour: blue", "colour: Extra inputs are not permitted"),
    ("- a list", "expected a mapping"),
    ("timezone: [unclosed", "not valid YAML"),
])
def test_errors_name_the_field(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as raised:
        load_policy(text, source="policy.yaml")
    assert fragment in str(raised.value)
    assert str(raised.value).startswith("policy.yaml: ")


def test_fingerprint_changes_with_anything_that_moves_a_deadline() -> None:
    assert Policy().fingerprint() == Policy().fingerprint()
    assert Policy().fingerprint() != Policy(timezone="Europe/Paris").fingerprint()


def test_unquoted_times_survive_yaml_base_60() -> None:
    # YAML 1.1 reads `end: 17:00` as the integer 1020.
    policy = load_policy("businessHours: {start: 08:30, end: 17:00}\n")
    assert (policy.business_hours.start, policy.business_hours.end) == ("08:30", "17:00")
