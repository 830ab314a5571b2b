"""Root-cause analyses: the rules of domain/rca.py and the worked examples of
docs/sla-policy.md."""

from __future__ import annotations

import datetime
import time
import zoneinfo

import pytest

from fluxsupport.domain import rca
from fluxsupport.domain.policy import load_policy
from tests.fixtures import DOC_MOMENT, EMEA, POLICIES, SLA_POLICY_DOC, at, doc_moment, doc_table

SETTINGS = EMEA.root_cause_analysis
RESOLVED = datetime.datetime(2026, 11, 30, 10, 0, tzinfo=datetime.UTC)
DUE = datetime.datetime(2026, 12, 10, 10, 0, tzinfo=datetime.UTC)


def test_the_states_in_order() -> None:
    def state(resolved_at: datetime.datetime | None, now: datetime.datetime,
              delivered_at: datetime.datetime | None = None) -> rca.Rca | None:
        return rca.evaluate(SETTINGS, EMEA.timezone, level=1, resolved_at=resolved_at,
                            delivered_at=delivered_at, now=now)

    assert state(resolved_at=None, now=RESOLVED) == rca.Rca(rca.State.NOT_DUE, None, None, None)
    pending = state(resolved_at=RESOLVED, now=RESOLVED)
    assert pending == rca.Rca(rca.State.PENDING, DUE, None, DUE)
    assert state(resolved_at=RESOLVED, now=DUE) == rca.Rca(rca.State.OVERDUE, DUE, None, None)
    assert state(resolved_at=RESOLVED, delivered_at=DUE, now=DUE) == rca.Rca(
        rca.State.DELIVERED, DUE, DUE, None)
    late = DUE + datetime.timedelta(seconds=1)
    assert state(resolved_at=RESOLVED, delivered_at=late, now=late).state is rca.State.LATE
    # Delivered before the resolution: in time, and without a due time until resolved.
    early = RESOLVED - datetime.timedelta(hours=1)
    assert state(resolved_at=None, delivered_at=early, now=RESOLVED).state \
        is rca.State.DELIVERED
    assert state(resolved_at=RESOLVED, delivered_at=early, now=DUE).state is rca.State.DELIVERED


def test_only_the_policys_levels_of_undismissed_cases_are_owed_one() -> None:
    assert rca.owed(SETTINGS, 1, dismissed=False)
    assert rca.owed(SETTINGS, 2, dismissed=False)
    assert not rca.owed(SETTINGS, 3, dismissed=False)
    assert not rca.owed(SETTINGS, 1, dismissed=True)
    assert not rca.owed(None, 1, dismissed=False)
    custom = load_policy("rootCauseAnalysis: {levels: [3, 1, 3], days: 3}\n")
    assert custom.root_cause_analysis is not None
    assert custom.root_cause_analysis.levels == (1, 3)
    result = rca.evaluate(custom.root_cause_analysis, custom.timezone, level=3,
                          resolved_at=RESOLVED, now=RESOLVED)
    assert result is not None
    assert result.due_at == at("2026-12-03T10:00:00Z")


# ---- the worked examples of docs/sla-policy.md -----------------------------------------------

def due_examples() -> list[list[str]]:
    return doc_table(SLA_POLICY_DOC, "### Worked examples of root-cause analyses", [
        "Policy", "Level", "Resolved", "RCA delivered", "Now", "RCA due", "State"])


def delivery_examples() -> list[list[str]]:
    return doc_table(SLA_POLICY_DOC, "Replies that deliver the RCA", [
        "Subject", "Text begins", "Attachments", "Delivers"])


def test_the_docs_have_an_example_of_each_rule() -> None:
    examples = due_examples()
    assert {row[6] for row in examples} == {*(state.value for state in rca.State), "none"}
    assert {row[0] for row in examples} >= {"default", "2026 EMEA", "2026 AMER"}
    assert any(row[2] == "dismissed" for row in examples)
    # Across a DST switch.
    assert any(DOC_MOMENT.match(row[2]) and DOC_MOMENT.match(row[5])
               and doc_moment(row[2]).utcoffset() != doc_moment(row[5]).utcoffset()
               for row in examples)
    deliveries = delivery_examples()
    assert {row[3] for row in deliveries} == {"yes", "no"}
    assert any(row[2] != "none" for row in deliveries)


@pytest.mark.parametrize("row", due_examples(), ids=lambda row: f"{row[0]}-{row[1]}-{row[2]}")
def test_worked_example(row: list[str]) -> None:
    name, level, resolved, delivered, now, due, state = row[:7]
    policy = POLICIES[name]
    result = rca.evaluate(
        policy.root_cause_analysis, policy.timezone, level=int(level),
        resolved_at=None if resolved in ("not yet", "dismissed") else doc_moment(resolved),
        dismissed=resolved == "dismissed",
        delivered_at=None if delivered == "none" else doc_moment(delivered), now=doc_moment(now))
    if state == "none":
        assert result is None
        return
    assert result is not None
    assert result.state == state
    assert result.due_at == (None if due == "none" else doc_moment(due))
    if result.due_at is not None:
        # Shown in the policy's zone, the due time has the offset the table writes.
        local = result.due_at.astimezone(zoneinfo.ZoneInfo(policy.timezone))
        assert local.utcoffset() == doc_moment(due).utcoffset()


@pytest.mark.parametrize("row", delivery_examples(), ids=lambda row: f"{row[0]}-{row[2]}")
def test_worked_example_of_delivery(row: list[str]) -> None:
    subject, text, attachments, delivers = row[:4]
    found = rca.marks_delivery(subject, text, [] if attachments == "none" else
                               [name.strip() for name in attachments.split(";")])
    assert found is (delivers == "yes")


def test_delivery_marks_read_no_further_than_they_need() -> None:
    """A pasted multi-megabyte reply, or a subject of nothing but prefixes, is decided in
    linear time."""
    body = "RCA: the upgrade\n" + "x" * 8_000_000
    started = time.perf_counter()
    assert rca.marks_delivery(None, body)
    assert not rca.marks_delivery("Re: " * 50_000 + "x", " " * 8_000_000 + "no")
    assert not rca.marks_delivery(None, None, ["rca" * 100_000 + "x"])
    # Generous: each takes milliseconds; quadratic backtracking would take minutes.
    assert time.perf_counter() - started < 10
    assert rca.marks_delivery(None, "\n\n  rca : yes")
    assert rca.marks_delivery(None, None, ["C:\\reports\\RCA.pdf"])
    assert not rca.marks_delivery("", "", [])
