"""A SupportCase that waits on the customer: its clocks pause (status.pauses from the portal
and the waiting-on-customer annotation), the Waiting condition, quiet metrics, reopened and
rejected tickets, one Event per support reply; and the worked examples of docs/sla-policy.md."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from fluxsupport import constants
from fluxsupport.domain import casestatus, evaluation, supportcase
from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import Policy
from tests.fixtures import MONDAY, POLICIES, SLA_POLICY_DOC, doc_moment, doc_table

SPEC = {"title": "HelmReleases stuck", "description": "...", "severity": "High",
        "impact": {"statement": "Deploys blocked", "environment": "production",
                   "outage": "partial", "businessCritical": True},
        "component": "helm-controller", "category": "incident"}
LEVELS = {1: "Urgent", 2: "High", 3: "Normal", 4: "Low"}


def at(hour: float, day: int = 30) -> datetime.datetime:
    month = 11 if day >= 30 else 12
    return datetime.datetime(2026, month, day, tzinfo=datetime.UTC) + \
        datetime.timedelta(hours=hour)


def rfc(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def evaluate(*, annotations: dict[str, str] | None = None,
             previous: dict[str, Any] | None = None, now: datetime.datetime,
             level: int = 2, policy: str = "default", opened: datetime.datetime = MONDAY
             ) -> evaluation.Evaluation[casestatus.CaseMetrics]:
    chosen = POLICIES[policy]
    return supportcase.evaluate(
        spec={**SPEC, "severity": LEVELS[level]}, annotations=annotations or {},
        created=opened, generation=1, previous=previous or {}, policy=chosen,
        calendar=BusinessCalendar(chosen), now=now)


def conditions(result: evaluation.Evaluation[casestatus.CaseMetrics]) -> dict[str, Any]:
    return {c["type"]: c for c in result.status["conditions"]}


def stalled(*runs: tuple[datetime.datetime, datetime.datetime | None]) -> dict[str, Any]:
    return {"submission": {"ticketId": "7", "pauses": [
        {"start": rfc(start), **({"end": rfc(end)} if end else {})} for start, end in runs]}}


def test_a_case_that_never_waits_has_the_status_it_had() -> None:
    result = evaluate(now=at(15))
    assert "pauses" not in result.status
    assert "Waiting" not in conditions(result)
    first = result.status["firstResponse"]
    assert first["deadline"] == "2026-11-30T18:00:00Z"
    assert not {"pausedSeconds", "pausedSince", "remainingSeconds"} & set(first)
    assert first["calendar"] == Policy().fingerprint()


def test_a_stalled_ticket_holds_the_clock_and_silences_its_series() -> None:
    previous = stalled((at(13), None))
    result = evaluate(previous=previous, now=at(12, day=1))  # Tuesday, past the old deadline
    first = result.status["firstResponse"]
    assert first["state"] == "Pending"
    assert first["deadline"] == "2026-11-30T18:00:00Z"
    assert first["pausedSince"] == "2026-11-30T13:00:00Z"
    assert first["remainingSeconds"] == 5 * 3600
    assert result.status["pauses"] == [{"start": "2026-11-30T13:00:00Z", "source": "portal"}]
    waiting = conditions(result)["Waiting"]
    assert (waiting["status"], waiting["reason"]) == ("True", "WaitingOnCustomer")
    assert "5h00m" in waiting["message"]
    assert "stalled" in waiting["message"]
    assert result.next_transition is None  # nothing happens by the clock while held
    assert result.metrics is not None
    assert result.metrics.paused
    assert result.metrics.waiting_since == at(13).timestamp()
    assert not [e for e in result.events if "Breach" in e.reason]


def test_unstalling_resumes_with_the_moved_deadline() -> None:
    held = evaluate(previous=stalled((at(13), None)), now=at(14))
    resumed = evaluate(previous={**held.status, **stalled((at(13), at(15)))}, now=at(15, day=30))
    first = resumed.status["firstResponse"]
    assert first["deadline"] == "2026-12-01T11:00:00Z"  # 8 h + 2 paused
    assert first["pausedSeconds"] == 2 * 3600
    assert "pausedSince" not in first
    assert conditions(resumed)["Waiting"]["status"] == "False"
    assert resumed.next_transition == at(18)  # the moved warning point
    assert resumed.metrics is not None
    assert not resumed.metrics.paused


def test_the_annotation_marks_a_wait_and_its_removal_ends_it() -> None:
    marked = {constants.WAITING_ON_CUSTOMER: "2026-11-30T15:00:00Z"}
    held = evaluate(annotations=marked, now=at(16.5))
    assert held.status["pauses"] == [{"start": "2026-11-30T15:00:00Z", "source": "annotation"}]
    assert held.status["firstResponse"]["state"] == "Pending"  # frozen at 15:00
    # The customer answered: the annotation is removed, seen at Tuesday 10:00.
    ended = evaluate(previous=held.status, now=at(10, day=1))
    assert ended.status["pauses"] == [{"start": "2026-11-30T15:00:00Z",
                                       "end": "2026-12-01T10:00:00Z", "source": "annotation"}]
    assert ended.status["firstResponse"]["deadline"] == "2026-12-01T13:00:00Z"
    # and it stays ended: the next reconcile computes the same status.
    again = evaluate(previous=ended.status, now=at(10.5, day=1))
    assert again.status["pauses"] == ended.status["pauses"]


@pytest.mark.parametrize("value", ["soon", "2026-11-30T15:00:00Z/yesterday", "2027-01-01T00:00Z"])
def test_a_bad_waiting_annotation_is_named_in_ready(value: str) -> None:
    result = evaluate(annotations={constants.WAITING_ON_CUSTOMER: value}, now=at(15))
    ready = conditions(result)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidAnnotation")
    assert constants.WAITING_ON_CUSTOMER in ready["message"]
    assert "pauses" not in result.status


def test_a_wait_after_the_deadline_leaves_the_breach() -> None:
    result = evaluate(previous=stalled((at(9, day=1), None)), now=at(10, day=1))
    assert result.status["firstResponse"]["state"] == "Breached"
    assert result.metrics is not None
    assert not result.metrics.paused


def test_reopening_reopens_the_case_without_counting_the_closed_time() -> None:
    base = {"ticketId": "7", "firstReply": {"at": rfc(at(11)), "by": "alice"}}
    resolved = evaluate(previous={"submission": {**base, "resolvedAt": rfc(at(12))}},
                        now=at(13), policy="2026 EMEA")
    assert resolved.status["closure"]["outcome"] == "Resolved"
    assert resolved.status["resolution"]["state"] == "Met"
    reopened = evaluate(previous={**resolved.status, "submission": {
        **base, "reopenings": [{"start": rfc(at(12)), "end": rfc(at(16))}]}},
        now=at(9.5, day=1), policy="2026 EMEA")
    assert reopened.status["closure"] is None
    resolution = reopened.status["resolution"]
    assert resolution["state"] == "Pending"
    assert resolution["deadline"] == "2026-12-01T14:00:00Z"
    assert resolution["pausedSeconds"] == 4 * 3600
    assert "pauses" not in reopened.status  # a closed interval is no wait on the customer
    assert [e.reason for e in reopened.events] == ["Reopened"]


def test_a_rejected_ticket_dismisses_the_case_with_the_reason() -> None:
    previous = {"submission": {"ticketId": "7", "rejected": {
        "at": rfc(at(11)), "by": "alice", "reason": "Not a Flux problem: see the runbook."}}}
    result = evaluate(previous=previous, now=at(11.5))
    assert result.status["closure"] == {"outcome": "Dismissed", "at": "2026-11-30T11:00:00Z",
                                        "source": "portal", "by": "alice",
                                        "reason": "Not a Flux problem: see the runbook."}
    assert result.status["firstResponse"]["state"] == "Closed"
    [event] = [e for e in result.events if e.reason == "Rejected"]
    assert "runbook" not in event.message
    again = evaluate(previous=result.status, now=at(12))
    assert not [e for e in again.events if e.reason == "Rejected"]


def _replies(count: int) -> dict[str, Any]:
    replies = [{"id": str(100 + n), "at": rfc(at(11 + n / 10)), "by": "alice"}
               for n in range(count)]
    return {"supportReplies": count, "lastSupportReplyAt": replies[-1]["at"],
            "lastSupportReplyBy": "alice", "waitingOn": "customer", "replies": replies}


def test_each_support_reply_gives_one_event_naming_no_text() -> None:
    first = evaluate(previous={"submission": {"ticketId": "7", "conversation": _replies(1)}},
                     now=at(12))
    assert first.status["conversation"]["supportReplies"] == 1
    assert "replies" not in first.status["conversation"]
    assert [e.reason for e in first.events].count("SupportReplied") == 1
    second = evaluate(previous={**first.status, "submission": {"ticketId": "7",
                                                                "conversation": _replies(3)}},
                      now=at(12))
    told = [e.message for e in second.events if e.reason == "SupportReplied"]
    assert len(told) == 2
    assert "transaction 101" in told[0]
    assert "transaction 102" in told[1]
    assert "Reply 2 " in told[0]
    assert "Reply 3 " in told[1]
    # Evaluated again from what that write stored: nothing more is owed.
    third = evaluate(previous=second.status, now=at(13))
    assert not [e for e in third.events if e.reason == "SupportReplied"]


# ---- the worked examples of docs/sla-policy.md ----------------------------------------------

def worked_examples() -> list[list[str]]:
    return doc_table(SLA_POLICY_DOC, "### Worked examples of a case that waits", [
        "Policy", "Level", "Opened", "Waits", "Evaluated", "First response due",
        "First response", "Resolution due", "Resolution", "Waiting"])


def _inputs(waits: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The annotations and the status a row's waits stand for."""
    annotations: dict[str, str] = {}
    submission: dict[str, Any] = {"ticketId": "7"}
    for part in waits.split(";"):
        kind, _, rest = part.strip().partition(" ")
        start, _, end = rest.partition(" to ")
        begun = rfc(doc_moment(start))
        ended = None if end.strip() in ("", "(waiting)") else rfc(doc_moment(end))
        if kind == "stalled":
            submission.setdefault("pauses", []).append(
                {"start": begun, **({"end": ended} if ended else {})})
        elif kind == "marked":
            annotations[constants.WAITING_ON_CUSTOMER] = f"{begun}/{ended}" if ended else begun
        elif kind == "reopened":
            submission.setdefault("reopenings", []).append({"start": begun, "end": ended})
        else:
            assert kind == "responded", part
            annotations[constants.RESPONDED_AT] = begun
    return annotations, {"submission": submission}


def test_the_docs_have_the_examples_the_rules_need() -> None:
    examples = worked_examples()
    kinds = {part.strip().split(" ")[0] for row in examples for part in row[3].split(";")}
    assert kinds == {"stalled", "marked", "reopened", "responded"}
    assert {row[9] for row in examples} == {"True", "False", "-"}
    assert "Breached" in {row[6] for row in examples}


@pytest.mark.parametrize("row", worked_examples(), ids=lambda row: f"{row[0]}-{row[1]}-{row[3]}")
def test_worked_example(row: list[str]) -> None:
    name, level, opened, waits, evaluated, response_due, response, resolution_due, \
        resolution, waiting = row
    annotations, previous = _inputs(waits)
    result = evaluate(annotations=annotations, previous=previous, now=doc_moment(evaluated),
                      level=int(level), policy=name, opened=doc_moment(opened))
    first = result.status["firstResponse"]
    assert (first["deadline"], first["state"]) == (rfc(doc_moment(response_due)), response)
    clock = result.status.get("resolution")
    if resolution_due == "none":
        assert clock is None
    else:
        assert clock is not None
        assert (clock["deadline"], clock["state"]) == (rfc(doc_moment(resolution_due)), resolution)
    found = conditions(result).get("Waiting")
    assert (found["status"] if found else "-") == waiting


def test_a_spec_that_became_invalid_keeps_the_waits_and_the_counted_replies() -> None:
    """The status write of an invalid spec leaves status.pauses (the annotation's waits are
    remembered nowhere else) and status.conversation (its replies gave their Events) alone."""
    from fluxsupport.controllers import supportcase as controller
    from fluxsupport.controllers import writes

    marked = {constants.WAITING_ON_CUSTOMER: "2026-11-30T15:00:00Z"}
    held = evaluate(annotations=marked, now=at(16), previous={"submission": {
        "ticketId": "7", "conversation": _replies(2)}})
    assert set(held.status) >= {"pauses", "conversation"}
    invalid = supportcase.evaluate(
        spec={**SPEC, "severity": "Whenever"}, annotations=marked, created=MONDAY,
        generation=2, previous=held.status, policy=POLICIES["default"],
        calendar=BusinessCalendar(POLICIES["default"]), now=at(16.5))
    patch = writes.status_patch(held.status, invalid.status, controller.KEPT_STATUS)
    assert "conditions" in patch
    assert not {"pauses", "conversation"} & set(patch)
