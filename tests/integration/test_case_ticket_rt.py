"""A case and its ticket in the real Request Tracker 5, both ways: the operator on the real API
server (the channels operator of test_channels.py) pauses the case's clocks while the support
team stalls the ticket, reopens and dismisses it with the ticket, records every support reply
once across a restart, and gives the ticket the case's Priority and Due.

The support team (alice) acts through REST 2.0 as RT's web interface does. The test policy's
calendar is 24x7, so a wait moves a deadline by exactly its length.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest

from fluxsupport import constants
from fluxsupport.domain import timing
from tests import harness
from tests.integration.test_channels import (  # noqa: F401  (channels_operator: a fixture)
    ChannelsOperator,
    channels_operator,
    create,
    submission,
)
from tests.rt import RequestTracker

#: RT serves one request at a time and the sync runs every second: generous for a loaded
#: machine, bounded all the same.
WAIT_S = 120


@pytest.fixture(scope="module")
def ticket_operator(channels_operator: ChannelsOperator) -> ChannelsOperator:  # noqa: F811
    """The operator with the channels policy (test_channels.py's), for this module."""
    return channels_operator


def status(api: harness.Api, namespace: str, name: str) -> dict[str, Any]:
    return dict(api.get_case(namespace, name).get("status") or {})


def as_support(rt: RequestTracker, ticket: str, **fields: Any) -> None:
    rt.rest("PUT", f"ticket/{ticket}", fields, token=rt.support_token)


def ticket_for(api: harness.Api, namespace: str, name: str) -> str:
    return str(harness.wait_for(lambda: submission(api, namespace, name).get("ticketId"),
                                timeout=WAIT_S, what=f"a ticket for {name}"))


def due_in_rt(rt: RequestTracker, ticket: str) -> str | None:
    """The ticket's Due as RFC 3339, None when not set."""
    due = rt.ticket(ticket).get("Due") or ""
    if not due or due.startswith("1970-01-01"):
        return None
    return timing.parse_time(due).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(api: harness.Api, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = harness.condition(api.get_case(namespace, name), kind)
    return found


def events(api: harness.Api, namespace: str, name: str, reason: str) -> list[str]:
    return [event.message for event in api.events_for(namespace, name)
            if event.reason == reason]


def test_stalling_the_ticket_pauses_the_case_and_unstalling_resumes_it(
        ticket_operator: ChannelsOperator, api: harness.Api, rt: RequestTracker,
        namespace: str, figures: Any) -> None:
    create(api, namespace, "stalled", "Low")
    ticket = ticket_for(api, namespace, "stalled")
    before = harness.wait_for(lambda: status(api, namespace, "stalled")["firstResponse"],
                              timeout=WAIT_S, what="the first-response clock")
    harness.wait_for(lambda: due_in_rt(rt, ticket) == before["deadline"], timeout=WAIT_S,
                     what="Due set to the first-response deadline")

    as_support(rt, ticket, Status="stalled")
    held = harness.wait_for(
        lambda: status(api, namespace, "stalled")["firstResponse"].get("pausedSince")
        and status(api, namespace, "stalled"), timeout=WAIT_S, what="the clock held")
    [wait] = held["pauses"]
    assert wait["source"] == "portal"
    assert "end" not in wait
    assert held["firstResponse"]["pausedSince"] == wait["start"]
    assert held["firstResponse"]["deadline"] == before["deadline"]  # stands still
    assert held["firstResponse"]["state"] == "Pending"
    waiting = condition(api, namespace, "stalled", "Waiting")
    assert waiting is not None
    assert (waiting["status"], waiting["reason"]) == ("True", "WaitingOnCustomer")
    assert held["conversation"]["waitingOn"] == "customer"
    # No deadline series while held: the alerts stay quiet.
    assert ticket_operator.process is not None
    series = [line for line in ticket_operator.process.metrics().splitlines()
              if line.startswith("supportcase_first_response_deadline_timestamp_seconds")
              and 'supportcase="stalled"' in line]
    assert series == []
    harness.wait_for(lambda: due_in_rt(rt, ticket) is None, timeout=WAIT_S,
                     what="Due cleared while the clock is held")

    as_support(rt, ticket, Status="open")
    resumed = harness.wait_for(
        lambda: "end" in (status(api, namespace, "stalled").get("pauses") or [{}])[0]
        and status(api, namespace, "stalled"), timeout=WAIT_S, what="the wait ended")
    [wait] = resumed["pauses"]
    paused = timing.parse_time(wait["end"]) - timing.parse_time(wait["start"])
    first = resumed["firstResponse"]
    assert "pausedSince" not in first
    assert first["pausedSeconds"] == int(paused.total_seconds())
    assert timing.parse_time(first["deadline"]) - timing.parse_time(before["deadline"]) == paused
    assert first["state"] == "Pending"
    waiting = condition(api, namespace, "stalled", "Waiting")
    assert waiting is not None
    assert (waiting["status"], waiting["reason"]) == ("False", "NotWaiting")
    harness.wait_for(lambda: due_in_rt(rt, ticket) == first["deadline"], timeout=WAIT_S,
                     what="Due set to the moved deadline")
    figures(f"RT stall of {paused.total_seconds():.0f} s moved the case's deadline by as much")


def test_priority_and_due_follow_a_severity_change(
        ticket_operator: ChannelsOperator, api: harness.Api, rt: RequestTracker,
        namespace: str) -> None:
    create(api, namespace, "priority", "Low")
    ticket = ticket_for(api, namespace, "priority")
    low = status(api, namespace, "priority")["firstResponse"]["deadline"]
    harness.wait_for(lambda: (rt.ticket(ticket).get("Priority"), due_in_rt(rt, ticket))
                     == ("25", low), timeout=WAIT_S, what="Priority 25 and the Low deadline")
    assert rt.ticket(ticket).get("FinalPriority") == "25"
    api.patch_case(namespace, "priority", {"spec": {"severity": "High", "impact": {
        "outage": "partial"}}})
    high = harness.wait_for(
        lambda: status(api, namespace, "priority").get("level") == 2
        and status(api, namespace, "priority")["firstResponse"]["deadline"],
        timeout=WAIT_S, what="the case at Level 2")
    assert high != low
    harness.wait_for(lambda: (rt.ticket(ticket).get("Priority"), due_in_rt(rt, ticket))
                     == ("75", high), timeout=WAIT_S, what="Priority 75 and the High deadline")
    assert submission(api, namespace, "priority")["sla"] == {"priority": 75, "due": high}
    # Written once: the ticket has one change of each, however often the operator syncs.
    changes = [item for item in rt.history(ticket) if item["Type"] == "Set"
               and item.get("Field") == "Priority"]
    assert len(changes) == 2, changes


def test_a_reopened_ticket_reopens_the_case_and_a_rejected_one_dismisses_it(
        ticket_operator: ChannelsOperator, api: harness.Api, rt: RequestTracker,
        namespace: str) -> None:
    create(api, namespace, "reopened", "Low")
    ticket = ticket_for(api, namespace, "reopened")
    rt.resolve(ticket)
    closure = harness.wait_for(lambda: status(api, namespace, "reopened").get("closure"),
                               timeout=WAIT_S, what="the case resolved")
    assert (closure["outcome"], closure["source"]) == ("Resolved", "portal")
    as_support(rt, ticket, Status="open")
    harness.wait_for(lambda: status(api, namespace, "reopened").get("closure") is None,
                     timeout=WAIT_S, what="the case reopened")
    record = submission(api, namespace, "reopened")
    assert "resolvedAt" not in record
    [gap] = record["reopenings"]
    assert gap["start"] == closure["at"]
    harness.wait_for(lambda: events(api, namespace, "reopened", "Reopened"), timeout=WAIT_S,
                     what="the Reopened Event")

    create(api, namespace, "rejected", "Low")
    ticket = ticket_for(api, namespace, "rejected")
    rt.reply_as_support(ticket, "Out of scope: podinfo is not part of the distribution.")
    as_support(rt, ticket, Status="rejected")
    closure = harness.wait_for(lambda: status(api, namespace, "rejected").get("closure"),
                               timeout=WAIT_S, what="the case dismissed")
    assert (closure["outcome"], closure["source"], closure["by"]) == (
        "Dismissed", "portal", "alice")
    assert closure["reason"] == "Out of scope: podinfo is not part of the distribution."
    rejected = harness.wait_for(lambda: events(api, namespace, "rejected", "Rejected"),
                                timeout=WAIT_S, what="the Rejected Event")
    assert "podinfo" not in rejected[0]


def test_every_support_reply_is_recorded_once_across_a_restart(
        ticket_operator: ChannelsOperator, api: harness.Api, rt: RequestTracker,
        namespace: str) -> None:
    create(api, namespace, "replies", "Low")
    ticket = ticket_for(api, namespace, "replies")
    for text in ("Looking into it.", "Please send the HelmRelease's events."):
        rt.reply_as_support(ticket, text)
    harness.wait_for(lambda: (status(api, namespace, "replies").get("conversation") or {})
                     .get("supportReplies") == 2, timeout=WAIT_S, what="two replies counted")
    harness.wait_for(lambda: len(events(api, namespace, "replies", "SupportReplied")) == 2,
                     timeout=WAIT_S, what="two SupportReplied Events")

    ticket_operator.stop()
    rt.reply_as_support(ticket, "A fix is in helm-controller v1.1.1.")
    ticket_operator.start()
    said = harness.wait_for(
        lambda: (status(api, namespace, "replies").get("conversation") or {})
        .get("supportReplies") == 3 and status(api, namespace, "replies")["conversation"],
        timeout=WAIT_S, what="the third reply counted after the restart")
    assert said["lastSupportReplyBy"] == "alice"
    assert said["waitingOn"] == "customer"
    harness.wait_for(lambda: len(events(api, namespace, "replies", "SupportReplied")) >= 3,
                     timeout=WAIT_S, what="the third SupportReplied Event")
    harness.wait_for(lambda: not status(api, namespace, "replies").get("pendingEvents"),
                     timeout=WAIT_S, what="the outbox empty")
    told = events(api, namespace, "replies", "SupportReplied")
    ids = sorted(message.split("(transaction ")[1].split(")")[0] for message in told)
    replies = [str(item["id"]) for item in rt.history(ticket) if item["Type"] == "Correspond"]
    assert ids == sorted(replies)  # each reply once, none twice
    for message in told:
        assert "Looking" not in message
        assert "HelmRelease's events" not in message
        assert "v1.1.1" not in message


def test_the_customers_mark_pauses_the_case_and_removing_it_resumes(
        ticket_operator: ChannelsOperator, api: harness.Api, namespace: str) -> None:
    """For installs without a portal: the waiting-on-customer annotation, on the real API
    server; the wait is remembered in status once the annotation is gone."""
    create(api, namespace, "marked", "Low")
    before = harness.wait_for(lambda: status(api, namespace, "marked").get("firstResponse"),
                              timeout=WAIT_S, what="the first-response clock")
    began = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    mark = {constants.WAITING_ON_CUSTOMER: began.strftime("%Y-%m-%dT%H:%M:%SZ")}
    api.patch_case(namespace, "marked", {"metadata": {"annotations": mark}})
    held = harness.wait_for(
        lambda: status(api, namespace, "marked")["firstResponse"].get("pausedSince")
        and status(api, namespace, "marked"), timeout=WAIT_S, what="the clock held")
    assert held["pauses"] == [{"start": mark[constants.WAITING_ON_CUSTOMER],
                               "source": "annotation"}]
    assert held["firstResponse"]["deadline"] == before["deadline"]
    waiting = condition(api, namespace, "marked", "Waiting")
    assert waiting is not None
    assert waiting["status"] == "True"
    assert "annotation" in waiting["message"]

    time.sleep(2)  # a wait of whole seconds (status keeps whole seconds)
    api.patch_case(namespace, "marked", {"metadata": {"annotations": {
        constants.WAITING_ON_CUSTOMER: None}}})
    resumed = harness.wait_for(
        lambda: "end" in (status(api, namespace, "marked").get("pauses") or [{}])[0]
        and status(api, namespace, "marked"), timeout=WAIT_S, what="the wait ended")
    [wait] = resumed["pauses"]
    paused = timing.parse_time(wait["end"]) - timing.parse_time(wait["start"])
    assert paused >= datetime.timedelta(seconds=2)
    assert timing.parse_time(resumed["firstResponse"]["deadline"]) - timing.parse_time(
        before["deadline"]) == paused
    waiting = condition(api, namespace, "marked", "Waiting")
    assert waiting is not None
    assert waiting["status"] == "False"
