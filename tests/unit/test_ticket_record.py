"""What the portal's sync records from a ticket's history (domain/ticketrecord.py), checked on
histories recorded from RT 5, and the ticket's Priority and Due from a case's status."""

from __future__ import annotations

import datetime

from fluxsupport.domain import ticketrecord, ticketsla
from tests import rthistories


def test_a_stalled_ticket_records_its_waits_and_the_conversation() -> None:
    recorded = rthistories.load("waiting-on-the-customer")
    found = ticketrecord.record(recorded.history, recorded.people)
    assert found["pauses"] == [
        {"start": "2026-12-06T23:59:57Z", "end": "2026-12-07T00:00:00Z"},
        {"start": "2026-12-07T00:00:03Z", "end": "2026-12-07T00:00:05Z"}]
    said = found["conversation"]
    assert said["supportReplies"] == 2
    assert [reply["id"] for reply in said["replies"]] == ["86", "94"]
    assert (said["lastSupportReplyAt"], said["lastSupportReplyBy"]) == (
        "2026-12-07T00:00:05Z", "alice")
    assert said["waitingOn"] == "customer"
    assert said["lastCustomerMessageAt"] == "2026-12-07T00:00:00Z"
    assert not {"reopenings", "rejected", "resolvedAt"} & set(found)
    # No text of any message is recorded.
    texts = [item.content for item in recorded.history if item.content.strip()]
    assert texts
    assert not [text for text in texts if text[:40] in repr(found)]


def test_while_stalled_the_last_wait_has_no_end() -> None:
    recorded = rthistories.load("waiting-on-the-customer")
    found = ticketrecord.record(recorded.history[:4], recorded.people)
    assert found["pauses"] == [{"start": "2026-12-06T23:59:57Z"}]
    assert found["conversation"]["waitingOn"] == "customer"


def test_a_reopened_ticket_records_the_closed_interval_and_its_second_resolution() -> None:
    recorded = rthistories.load("reopened-by-the-customer")
    found = ticketrecord.record(recorded.history, recorded.people)
    assert found["reopenings"] == [{"start": "2026-12-07T00:00:08Z",
                                    "end": "2026-12-07T00:00:10Z"}]
    assert (found["resolvedAt"], found["resolvedBy"]) == ("2026-12-07T00:00:15Z", "alice")
    assert not ticketrecord.reopened(recorded.history, recorded.people)
    # Between the customer's email and the second resolution: open again, no resolution.
    open_again = recorded.history[:6]
    assert ticketrecord.reopened(open_again, recorded.people)
    assert "resolvedAt" not in ticketrecord.record(open_again, recorded.people)


def test_a_rejected_ticket_records_who_and_why() -> None:
    recorded = rthistories.load("rejected-with-a-reason")
    found = ticketrecord.record(recorded.history, recorded.people)
    assert found["rejected"] == {
        "at": "2026-12-07T00:00:18Z", "by": "alice",
        "reason": "Out of scope: the chart podinfo is not part of the distribution. "
                  "Please ask its maintainers."}
    assert "resolvedAt" not in found
    assert found["conversation"]["waitingOn"] == "nobody"


def test_the_rca_delivery_is_recorded() -> None:
    recorded = rthistories.load("root-cause-analysis")
    said = ticketrecord.record(recorded.history, recorded.people)["conversation"]
    assert said["rcaDeliveredBy"] == "alice"
    assert said["rcaDeliveredAt"] <= said["lastSupportReplyAt"]


def test_priority_and_due_follow_the_running_clock_and_not_a_held_one() -> None:
    status = {"level": 2, "firstResponse": {"deadline": "2026-11-30T18:00:00Z"},
              "resolution": {"deadline": "2026-12-01T14:00:00Z"}}
    assert ticketsla.from_status(status) == ticketsla.SlaFields(
        75, datetime.datetime(2026, 11, 30, 18, tzinfo=datetime.UTC))
    answered = {**status, "firstResponse": {**status["firstResponse"],
                                            "respondedAt": "2026-11-30T11:00:00Z"}}
    assert ticketsla.from_status(answered) == ticketsla.SlaFields(
        75, datetime.datetime(2026, 12, 1, 14, tzinfo=datetime.UTC))
    held = {**status, "level": 1, "firstResponse": {**status["firstResponse"],
                                                    "pausedSince": "2026-11-30T13:00:00Z"}}
    assert ticketsla.from_status(held) == ticketsla.SlaFields(100, None)
    assert ticketsla.as_record(ticketsla.SlaFields(100, None)) == {"priority": 100}
    # A closed case, or one that cannot be evaluated, leaves its ticket as it is.
    assert ticketsla.from_status({**status, "closure": {"outcome": "Resolved"}}) is None
    assert ticketsla.from_status({"conditions": []}) is None
