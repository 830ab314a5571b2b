"""The escalation tiers: the rules of domain/escalation.py, the worked examples of
docs/sla-policy.md and the policy's escalation section."""

from __future__ import annotations

import datetime
import time
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxsupport.domain import escalation, pause, remediation
from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import Policy, PolicyError, load_policy
from tests.fixtures import (
    EMEA,
    FINGERPRINTS,
    MONDAY,
    POLICIES,
    SLA_POLICY_DOC,
    at,
    doc_moment,
    doc_pauses,
    doc_table,
    preset_2026,
)

DEFAULT = POLICIES["default"]
SETTINGS = EMEA.escalation
CALENDAR = BusinessCalendar(EMEA)


def hours(count: float) -> datetime.timedelta:
    return datetime.timedelta(hours=count)


def case(policy: Policy = EMEA, *, level: int = 2, opened: datetime.datetime = MONDAY,
         first_response: datetime.datetime | None = None,
         replies: tuple[datetime.datetime, ...] = (),
         pauses: tuple[pause.Pause, ...] = (), closed_at: datetime.datetime | None = None,
         others: tuple[datetime.datetime, ...] = (),
         now: datetime.datetime) -> escalation.Escalation:
    calendar = BusinessCalendar(policy)
    targets = escalation.case_targets(opened, level, policy, calendar, pauses, first_response,
                                      closed_at)
    return escalation.for_case(policy.escalation, calendar, opened=opened, level=level,
                               targets=targets, first_response=first_response,
                               replies=replies, closed_at=closed_at, pauses=pauses,
                               other_severity1_openings=others, now=now)


# ---- the rules -------------------------------------------------------------------------------

def test_tier_1_is_reached_at_the_warning_point_of_a_running_target() -> None:
    before = case(now=MONDAY + hours(2))
    assert before.reached == ()
    assert before.next_at == MONDAY + hours(3)
    after = case(now=MONDAY + hours(3))  # exactly at the warning point
    reached = after.tier(1)
    assert reached is not None
    assert (reached.at, reached.trigger) == (MONDAY + hours(3), "TargetAtRisk")
    assert "first response" in reached.detail


def test_a_target_met_at_its_warning_point_is_not_at_risk() -> None:
    met = case(first_response=MONDAY + hours(3), now=MONDAY + hours(4))
    assert met.tier(1) is None
    late = case(first_response=MONDAY + hours(3) + datetime.timedelta(seconds=1),
                now=MONDAY + hours(4))
    assert late.tier(1) is not None


def test_a_case_dismissed_before_its_warning_point_reaches_nothing() -> None:
    result = case(closed_at=MONDAY + hours(1), now=MONDAY + hours(30))
    assert result == escalation.Escalation()


def test_a_pause_moves_the_warning_point_of_tier_1() -> None:
    waited = (pause.Pause(MONDAY + hours(1), MONDAY + hours(2)),)
    assert case(pauses=waited, now=MONDAY + hours(3)).tier(1) is None
    reached = case(pauses=waited, now=MONDAY + hours(4)).tier(1)
    assert reached is not None
    assert reached.at == MONDAY + hours(4)
    held = case(pauses=(pause.Pause(MONDAY + hours(1)),), now=MONDAY + hours(30))
    assert held == escalation.Escalation()


def test_not_progressing_restarts_at_every_reply_of_support() -> None:
    responded = MONDAY + hours(1)  # 11:00: Wed 11:00 is 16 Support Hours later
    replies = (at("2026-12-01T16:00:00Z"), at("2026-12-03T10:00:00Z"))
    result = case(level=4, first_response=responded, replies=replies,
                  now=at("2026-12-04T12:00:00Z"))
    # Tue 16:00 + 16 h = Thu 16:00: the reply at Thu 10:00 came in time; from there, Mon 10:00.
    assert result.tier(2) is None
    assert result.next_at == at("2026-12-07T10:00:00Z")
    # Replies before the first response, and repeated ones, change nothing.
    same = case(level=4, first_response=responded,
                replies=(MONDAY, *replies, replies[0]), now=at("2026-12-04T12:00:00Z"))
    assert same == result


def test_a_reply_exactly_at_the_limit_is_in_time() -> None:
    responded = MONDAY + hours(1)
    limit = at("2026-12-02T11:00:00Z")
    in_time = case(level=4, first_response=responded, replies=(limit,),
                   now=limit + hours(1))
    assert in_time.tier(2) is None
    late = case(level=4, first_response=responded,
                replies=(limit + datetime.timedelta(seconds=1),), now=limit + hours(1))
    reached = late.tier(2)
    assert reached is not None
    assert (reached.at, reached.trigger) == (limit, "NotProgressing")
    assert "16h of business time" in reached.detail


def test_a_reply_while_the_case_waits_moves_on_to_the_next_gap() -> None:
    responded = MONDAY + hours(1)
    waiting = (pause.Pause(MONDAY + hours(2)),)
    reply = at("2026-12-07T10:00:00Z")
    result = case(level=4, first_response=responded, replies=(reply,), pauses=waiting,
                  now=at("2026-12-08T10:00:00Z"))
    assert result.tier(2) is None
    assert result.next_at is None  # still waiting: the open pause holds the new gap too


def test_a_case_closed_after_the_limit_had_reached_tier_2() -> None:
    responded = MONDAY + hours(1)
    result = case(level=4, first_response=responded, closed_at=at("2026-12-03T10:00:00Z"),
                  now=at("2026-12-10T10:00:00Z"))
    reached = result.tier(2)
    assert reached is not None
    assert reached.at == at("2026-12-02T11:00:00Z")
    assert result.next_at is None


def test_repeated_severity1_counts_only_the_scope_given_and_its_window() -> None:
    custom = preset_2026("EMEA", "escalation: {repeatedSeverity1: {count: 3, window: 7d}}\n")
    days = [MONDAY - datetime.timedelta(days=n) for n in (1, 6)]
    assert case(custom, level=1, others=(days[0],), now=MONDAY).tier(3) is None
    reached = case(custom, level=1, others=tuple(days), now=MONDAY).tier(3)
    assert reached is not None
    assert (reached.at, reached.trigger) == (MONDAY, "RepeatedSeverity1")
    assert "3 Severity 1 cases of the cluster opened within 7d" in reached.detail
    week = [MONDAY - datetime.timedelta(days=n) for n in (1, 7)]
    assert case(custom, level=1, others=tuple(week), now=MONDAY).tier(3) is None
    # Openings after now, and the same instant twice, count as given.
    assert case(custom, level=1, others=(MONDAY, MONDAY), now=MONDAY).tier(3) is not None
    assert case(custom, level=1, others=(MONDAY + hours(1),) * 2,
                now=MONDAY + hours(0.5)).tier(3) is None
    assert SETTINGS is not None
    assert escalation.same_scope(SETTINGS, "team-a", "team-b")
    by_namespace = preset_2026("EMEA", "escalation: {repeatedSeverity1: {scope: namespace}}\n")
    assert by_namespace.escalation is not None
    assert not escalation.same_scope(by_namespace.escalation, "team-a", "team-b")
    assert escalation.same_scope(by_namespace.escalation, "team-a", "team-a")


def test_a_disabled_section_escalates_nothing() -> None:
    off = preset_2026("EMEA", "escalation: {enabled: false}\n")
    assert off.escalation is not None
    assert case(off, level=1, others=(MONDAY,), now=MONDAY + hours(100)) == \
        escalation.Escalation()
    gone = preset_2026("EMEA", "escalation: null\n")
    assert gone.escalation is None
    assert escalation.for_bulletin(None, {}, {}, now=MONDAY) == escalation.Escalation()


def test_the_earliest_trigger_of_a_tier_wins() -> None:
    # Severity 2 opened Monday 10:00: the response is at risk at 13:00, the resolution at 16:00.
    result = case(now=MONDAY + hours(7))
    assert [(r.tier, r.at) for r in result.reached] == [(1, MONDAY + hours(3))]


def test_a_bulletin_escalates_each_unmitigated_critical_vulnerability_once() -> None:
    start = MONDAY
    critical = remediation.due("standard", start, 9.8, None, EMEA, CALENDAR)
    later = remediation.due("standard", start + hours(24), 9.0, None, EMEA, CALENDAR)
    high = remediation.due("standard", start, 8.9, None, EMEA, CALENDAR)
    dues = {"CVE-2026-2": later, "CVE-2026-1": critical, "CVE-2026-3": high,
            "CVE-2026-4": None}
    early = escalation.for_bulletin(SETTINGS, dues, {}, now=start + hours(1))
    assert early.reached == ()
    assert early.next_at == start + hours(72)
    result = escalation.for_bulletin(SETTINGS, dues, {"CVE-2026-1": start + hours(80)},
                                     now=start + hours(100))
    reached = result.tier(3)
    assert reached is not None
    assert (reached.at, reached.trigger) == (start + hours(72),
                                             "UnmitigatedCriticalVulnerability")
    assert reached.detail.startswith("CVE-2026-1 is critical")
    assert len(result.reached) == 1
    assert result.next_at is None


def _not_progressing_by_every_gap(first: datetime.datetime,
                                  replies: list[datetime.datetime],
                                  pauses: list[pause.Pause],
                                  now: datetime.datetime) -> tuple[datetime.datetime | None,
                                                                   datetime.datetime | None]:
    """The rule written out: the pause arithmetic for every gap between support's replies."""
    assert SETTINGS is not None
    spoken = sorted({first, *(r for r in replies if r > first)})
    for index, reply in enumerate(spoken):
        due = pause.clock(CALENDAR, reply, SETTINGS.not_progressing_after, 0.5,
                          pauses).deadline.due
        following = spoken[index + 1] if index + 1 < len(spoken) else None
        if following is not None and (due is None or following <= due):
            continue
        if due is None:
            return None, None
        return (due, None) if due <= now else (None, due if following is None else None)
    return None, None


_BASE = datetime.datetime(2026, 3, 23, 8, 0, tzinfo=datetime.UTC)
_moments = st.integers(min_value=0, max_value=21 * 24 * 4).map(
    lambda quarter: _BASE + datetime.timedelta(minutes=15 * quarter))


@settings(max_examples=150, deadline=None)
@given(first=_moments, replies=st.lists(_moments, max_size=8),
       spans=st.lists(st.tuples(_moments, st.one_of(st.none(), st.integers(0, 3 * 24 * 4))),
                      max_size=4),
       later=st.integers(0, 30 * 24 * 4))
def test_not_progressing_is_the_pause_arithmetic_of_every_gap(
        first: datetime.datetime, replies: list[datetime.datetime],
        spans: list[tuple[datetime.datetime, int | None]], later: int) -> None:
    """The single pass over the thread gives what the pause clock of each gap gives, across
    the BST switch of 29 March, closing times and open waits."""
    pauses = [pause.Pause(start, None if length is None
                          else start + datetime.timedelta(minutes=15 * length))
              for start, length in spans]
    now = max([first, *replies]) + datetime.timedelta(minutes=15 * later)
    result = escalation.for_case(SETTINGS, CALENDAR, opened=first, level=3, targets=(),
                                 first_response=first, replies=replies, pauses=pauses, now=now)
    reached = result.tier(2)
    assert ((None if reached is None else reached.at), result.next_at) == \
        _not_progressing_by_every_gap(first, replies, pauses, now)


def test_a_long_thread_is_decided_quickly() -> None:
    """2000 replies and 200 waits, most of a year of a busy case: 0.11-0.18 s measured on a
    shared 2-core machine; running the pause clock for every gap instead takes about 2.3 s."""
    # A reply every 3 hours, but none for 5 days after the 999th.
    replies = [MONDAY + hours(3 * n) for n in range(1, 2001) if not 1000 <= n < 1040]
    waits = [pause.Pause(MONDAY + hours(30 * n + 1), MONDAY + hours(30 * n + 2))
             for n in range(200)]
    started = time.perf_counter()
    result = case(level=4, first_response=replies[0], replies=tuple(replies),
                  pauses=tuple(waits), now=replies[-1])
    elapsed = time.perf_counter() - started
    reached = result.tier(2)
    assert reached is not None
    assert reached.at == pause.clock(CALENDAR, replies[998], 16 * 3600, 0.5,
                                     waits).deadline.due
    assert elapsed < 2, f"{elapsed:.2f} s"


# ---- the worked examples of docs/sla-policy.md -----------------------------------------------

def _optional(text: str) -> datetime.datetime | None:
    return None if text in ("none", "no") else doc_moment(text)


def _moments(text: str) -> tuple[datetime.datetime, ...]:
    return () if text == "none" else tuple(doc_moment(part) for part in text.split(";"))


def progress_examples() -> list[list[str]]:
    return doc_table(SLA_POLICY_DOC, "Tiers 1 and 2:\n", [
        "Policy", "Level", "Opened", "First response", "Later replies", "Paused", "Closed",
        "Now", "Tier 1", "Tier 2", "Next"])


def repeated_examples() -> list[list[str]]:
    return doc_table(SLA_POLICY_DOC, "Tier 3 for repeated Severity 1 cases", [
        "Level", "Opened", "Other Severity 1 openings", "Closed", "Now", "Tier 3"])


def vulnerability_examples() -> list[list[str]]:
    return doc_table(SLA_POLICY_DOC, "Tier 3 for a SecurityBulletin's critical vulnerability", [
        "Framework", "CVSS", "Clock start", "Fix listed", "Now", "Tier 3", "Next"])


def test_the_docs_have_an_example_of_each_rule() -> None:
    progress = progress_examples()
    assert len(progress) >= 10
    assert {row[0] for row in progress} >= {"default", "2026 EMEA", "2026 AMER"}
    assert any(row[8] != "no" for row in progress)
    assert any(row[9] != "no" for row in progress)
    assert any("(waiting)" in row[5] for row in progress)
    assert any(row[6] != "none" for row in progress)
    assert any(row[1] == "1" for row in progress)
    # One across a DST switch.
    assert any(doc_moment(row[2]).utcoffset() != doc_moment(row[7]).utcoffset() for row in progress)
    repeated = repeated_examples()
    assert {row[5] == "no" for row in repeated} == {True, False}
    assert any(row[0] != "1" for row in repeated)
    vulnerabilities = vulnerability_examples()
    assert {row[0] for row in vulnerabilities} == {"standard", "upstream-patch"}
    assert {row[5] == "no" for row in vulnerabilities} == {True, False}


@pytest.mark.parametrize("row", progress_examples(),
                         ids=lambda row: f"{row[0]}-{row[1]}-{row[7]}")
def test_worked_example_of_tiers_1_and_2(row: list[str]) -> None:
    name, level, opened, responded, replies, paused, closed, now, one, two, following = row[:11]
    policy = POLICIES[name]
    result = case(policy, level=int(level), opened=doc_moment(opened),
                  first_response=_optional(responded), replies=_moments(replies),
                  pauses=doc_pauses(paused), closed_at=_optional(closed), now=doc_moment(now))
    for tier, expected in ((1, one), (2, two)):
        reached = result.tier(tier)
        assert (None if reached is None else reached.at) == _optional(expected), f"tier {tier}"
    assert result.tier(3) is None
    assert result.next_at == _optional(following)


@pytest.mark.parametrize("row", repeated_examples(), ids=lambda row: f"{row[0]}-{row[2]}-{row[3]}")
def test_worked_example_of_repeated_severity1(row: list[str]) -> None:
    level, opened, others, closed, now, expected = row[:6]
    result = case(EMEA, level=int(level), opened=doc_moment(opened), others=_moments(others),
                  closed_at=_optional(closed), now=doc_moment(now))
    reached = result.tier(3)
    assert (None if reached is None else reached.at) == _optional(expected)


@pytest.mark.parametrize("row", vulnerability_examples(),
                         ids=lambda row: f"{row[0]}-{row[1]}-{row[3]}-{row[4]}")
def test_worked_example_of_an_unmitigated_critical_vulnerability(row: list[str]) -> None:
    framework = typing.cast(remediation.Framework, row[0])
    score, start, fixed, now, expected, following = row[1:7]
    due = remediation.due(framework, doc_moment(start), float(score), None, EMEA, CALENDAR)
    result = escalation.for_bulletin(SETTINGS, {"CVE-2026-00001": due},
                                     {"CVE-2026-00001": _optional(fixed)}, now=doc_moment(now))
    reached = result.tier(3)
    assert (None if reached is None else reached.at) == _optional(expected)
    assert result.next_at == _optional(following)


# ---- the policy setting ----------------------------------------------------------------------

_EMAIL = ("channels: {email: {enabled: true, host: smtp.example.com, from: a@example.com, "
          "to: b@example.com}}\n")


@pytest.mark.parametrize("text", sorted(FINGERPRINTS))
@pytest.mark.parametrize("extra", [
    "", "escalation: null\n", "escalation: {enabled: false}\n",
    "escalation: {notProgressingAfter: 4h, repeatedSeverity1: {count: 5, window: 7d}}\n",
    _EMAIL + "escalation: {contacts: {executiveSponsor: [ceo@example.com]}}\n",
    "rootCauseAnalysis: {levels: [1], days: 5}\n", "rootCauseAnalysis: null\n",
    "addOns: [flux-operator-mcp]\n", "addOns: []\n",
])
def test_the_new_settings_leave_the_fingerprint(text: str, extra: str) -> None:
    assert load_policy(text + extra).fingerprint() == FINGERPRINTS[text]


def test_the_default_policy_has_none_and_the_2026_preset_the_documented_values() -> None:
    assert (DEFAULT.escalation, DEFAULT.root_cause_analysis, DEFAULT.add_ons) == (None, None, ())
    assert SETTINGS is not None
    assert SETTINGS.enabled
    assert SETTINGS.comment_on_ticket
    assert SETTINGS.not_progressing_after == 16 * 3600
    rule = SETTINGS.repeated_severity1
    assert (rule.count, rule.window, rule.scope) == (2, 30 * 86400, "cluster")
    assert not SETTINGS.contacts.any
    assert EMEA.root_cause_analysis is not None
    assert (EMEA.root_cause_analysis.levels, EMEA.root_cause_analysis.days) == ((1, 2), 10)
    # A written section merges with the preset's, key by key.
    merged = preset_2026("EMEA", "escalation: {notProgressingAfter: 8h}\n")
    assert merged.escalation is not None
    assert merged.escalation.not_progressing_after == 8 * 3600
    assert merged.escalation.enabled
    # Under the default preset, a written section takes the model's defaults.
    written = load_policy("escalation: {}\n")
    assert written.escalation == SETTINGS


def test_contacts_are_addresses_per_tier_and_need_the_email_channel() -> None:
    policy = load_policy(_EMAIL + "escalation: {contacts: {accountManager: [am@example.com], "
                                  "executiveSponsor: [a@example.com, b@example.com]}}\n")
    assert policy.escalation is not None
    contacts = policy.escalation.contacts
    assert [contacts.for_tier(tier) for tier in (1, 2, 3)] == [
        ("am@example.com",), (), ("a@example.com", "b@example.com")]
    assert escalation.ROLES[3] == "executive sponsor"
    with pytest.raises(PolicyError, match=r"escalation\.contacts are emailed through "
                                          r"channels\.email"):
        load_policy("escalation: {contacts: {accountManager: [am@example.com]}}\n")
    # Turned off, its contacts need no channel.
    load_policy("escalation: {enabled: false, contacts: {accountManager: [am@example.com]}}\n")


@pytest.mark.parametrize(("text", "fragment"), [
    ("escalation: {contacts: {accountManager: [not-an-address]}}",
     "escalation.contacts.accountManager: Value error, 'not-an-address' is not an email"),
    ("escalation: {contacts: {boss: [a@example.com]}}", "escalation.contacts.boss: Extra"),
    ("escalation: {notProgressingAfter: 0}", "escalation.notProgressingAfter: Value error, "
                                             "a target must be positive"),
    ("escalation: {repeatedSeverity1: {count: 1}}",
     "escalation.repeatedSeverity1.count: Input should be greater than or equal to 2"),
    ("escalation: {repeatedSeverity1: {scope: team}}",
     "escalation.repeatedSeverity1.scope: Input should be 'cluster' or 'namespace'"),
    ("rootCauseAnalysis: {levels: [5]}", "rootCauseAnalysis.levels: Value error, unknown level"),
    ("rootCauseAnalysis: {levels: []}", "rootCauseAnalysis.levels: Value error, at least one"),
    ("rootCauseAnalysis: {days: 0}", "rootCauseAnalysis.days: Input should be greater than"),
    ("addOns: [other]", "addOns: Value error, other marks third-party tools"),
    ("addOns: [Flux_MCP]", "addOns.0: String should match pattern"),
])
def test_bad_settings_say_what_to_fix(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as raised:
        load_policy(text + "\n")
    assert fragment in str(raised.value)
