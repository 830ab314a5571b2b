"""The ticket's side of the support contract against the real Request Tracker 5 (tests/rt.py):
Priority and Due, the conversation read back page by page, and what its history says about
the case (domain/conversation.py): waits on the customer, reopenings, rejections, the
root-cause analysis.

The support team (alice) acts through REST 2.0, as RT's web interface does; the customer
replies by email through RT's mail gateway. ``FLUXSUPPORT_RECORD_RT_HISTORIES=tests/data/rt``
records each scenario's history for the unit tests (tests/rthistories.py).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import email.message
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiosmtplib
import pytest

from fluxsupport.channels.portal import NewTicket, PortalError, Ticket, Transaction
from fluxsupport.channels.rt import RequestTracker as Portal
from fluxsupport.domain import conversation, submission
from fluxsupport.domain.conversation import Side, WaitsOn
from fluxsupport.domain.pause import Pause
from fluxsupport.domain.ticketsla import SlaFields
from tests import rthistories
from tests.rt import RTNAME, MailGateway, RequestTracker, rt_version

T = TypeVar("T")

CUSTOMER = "oncall@customer.test"
COLLEAGUE = "sre@customer.test"
#: RT keeps whole seconds: steps whose order in time a test checks are this far apart.
TICK = 1.1


def run(factory: Callable[[Portal], Coroutine[Any, Any, T]], rt: RequestTracker,
        token: str | None = None) -> T:
    async def main() -> T:
        portal = Portal(rt.url, rt.queue, token or rt.operator_token, timeout=60.0)
        try:
            return await factory(portal)
        finally:
            await portal.close()
    return asyncio.run(main())


def create(rt: RequestTracker, level: int = 2) -> Ticket:
    ticket = NewTicket(subject=f"[fluxsupport:{uuid.uuid4()}] Level {level}: HelmReleases stuck",
                       body="HelmReleases in apps/prod stay in progress.\n", requestor=CUSTOMER)
    return run(lambda p: p.create(ticket), rt)


def history(rt: RequestTracker, ticket: Ticket) -> list[Transaction]:
    return run(lambda p: p.history(ticket.id), rt)


def people(rt: RequestTracker, ticket: Ticket) -> conversation.People:
    current = run(lambda p: p.ticket(ticket.id), rt)
    return conversation.People.of(rt.operator, (*current.requestors, *current.ccs))


def as_support(rt: RequestTracker, ticket: Ticket, **fields: Any) -> None:
    rt.rest("PUT", f"ticket/{ticket.id}", fields, token=rt.support_token)


def reply(rt: RequestTracker, ticket: Ticket, text: str, **fields: Any) -> None:
    """A reply by alice; ``Status`` in ``fields`` is set after it, as RT's reply form does."""
    rt.rest("POST", f"ticket/{ticket.id}/correspond",
            {"Content": text, "ContentType": "text/plain", **fields}, token=rt.support_token)


def email_from(gateway: MailGateway, ticket: Ticket, text: str, sender: str = CUSTOMER) -> None:
    """The customer answers RT's mail: RT's mail gateway adds it to the ticket."""
    message = email.message.EmailMessage()
    message["From"] = sender
    message["To"] = gateway.correspond_address
    message["Subject"] = f"[{RTNAME} #{ticket.id}] Re: HelmReleases stuck"
    message.set_content(text)
    runs = len(gateway.mailgate_runs)
    asyncio.run(aiosmtplib.send(message, hostname="127.0.0.1", port=gateway.port, timeout=120))
    assert gateway.mailgate_runs[runs][0] == 0, gateway.mailgate_runs[runs]


def record(name: str, rt: RequestTracker, ticket: Ticket, items: list[Transaction],
           who: conversation.People, scenario: str) -> None:
    rthistories.record(name, items, who, rt.ticket(ticket.id)["Status"], {
        "source": f"Request Tracker {rt_version()} (Debian 12 request-tracker5), on loopback",
        "recorded": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "by": "tests/integration/test_rt_conversation.py",
        "scenario": scenario})


def changes(items: list[Transaction], new: str) -> list[Transaction]:
    return [item for item in items if item.type == "Status" and item.new_value == new]


# ---- Priority and Due ------------------------------------------------------------------------


def test_priority_and_due_are_written_once_and_follow_a_change(rt: RequestTracker) -> None:
    """The first call sets Priority, FinalPriority and Due; the same fields again write
    nothing (no transaction); a severity change and a pause write only what changed."""
    ticket = create(rt, level=1)
    due = datetime.datetime(2026, 12, 8, 9, 30, 15, tzinfo=datetime.UTC)
    assert run(lambda p: p.set_sla(ticket.id, SlaFields(100, due)), rt) is True
    assert run(lambda p: p.set_sla(ticket.id, SlaFields(100, due)), rt) is False
    record_ = rt.ticket(ticket.id)
    assert (record_["Priority"], record_["FinalPriority"], record_["Due"]) == (
        "100", "100", "2026-12-08T09:30:15Z")
    read = run(lambda p: p.ticket(ticket.id), rt)
    assert (read.priority, read.due) == (100, due)

    def sets() -> list[tuple[str, str]]:
        return [(h["Field"], h["NewValue"]) for h in rt.history(ticket.id) if h["Type"] == "Set"]

    assert sets() == [("Due", "2026-12-08 09:30:15"), ("FinalPriority", "100"),
                      ("Priority", "100")]

    later = datetime.datetime(2026, 12, 9, 14, 0, tzinfo=datetime.UTC)
    assert run(lambda p: p.set_sla(ticket.id, SlaFields(50, later)), rt) is True
    assert run(lambda p: p.set_sla(ticket.id, SlaFields(50, None)), rt) is True  # paused
    assert run(lambda p: p.set_sla(ticket.id, SlaFields(50, None)), rt) is False
    assert sets()[3:] == [("Due", "2026-12-09 14:00:00"), ("FinalPriority", "50"),
                          ("Priority", "50"), ("Due", "1970-01-01 00:00:00")]
    assert run(lambda p: p.ticket(ticket.id), rt).due is None
    # None of this is a message: the history the operator reads has no trace of it.
    assert [item.type for item in history(rt, ticket)] == ["Create"]


def test_priority_and_due_refused_say_which_right(rt: RequestTracker) -> None:
    """RT answers a PUT it refuses with 200 and "Permission Denied" per field: the adapter
    reads the ticket back and says which right is missing."""
    ticket = create(rt)
    due = datetime.datetime(2026, 12, 8, 9, 30, tzinfo=datetime.UTC)
    with pytest.raises(PortalError) as refused:
        run(lambda p: p.set_sla(ticket.id, SlaFields(75, due)), rt, token=rt.viewer_token)
    assert not refused.value.transient
    assert "RT did not set Priority, FinalPriority, Due" in str(refused.value)
    assert "Permission Denied" in str(refused.value)
    assert "ModifyTicket" in str(refused.value)
    current = rt.ticket(ticket.id)
    assert (current["Priority"], current["Due"]) == ("0", "1970-01-01T00:00:00Z")


# ---- Reading the whole history ----------------------------------------------------------------


def test_history_reads_every_page_when_rt_hides_rows(
        rt: RequestTracker, monkeypatch: pytest.MonkeyPatch,
        figures: Callable[[str], None]) -> None:
    """RT leaves out of each page the rows the operator's user may not see (the EmailRecord
    of each mail to the requestor) and gives no page count: a short page is not the last.
    With pages of 10, twelve replies are all read, each with its own text."""
    from fluxsupport.channels import rt as adapter

    ticket = create(rt)
    texts = [f"Reply {n}: please check the helm-controller logs." for n in range(12)]
    for text in texts:
        rt.reply_as_support(ticket.id, text)
    monkeypatch.setattr(adapter, "PER_PAGE", 10)
    monkeypatch.setattr(adapter, "IDS_PER_QUERY", 5, raising=False)
    started = time.monotonic()
    items = history(rt, ticket)
    figures(f"RT: history of {len(items)} visible transactions ({len(rt.history(ticket.id))} "
            f"in all) in pages of 10: {time.monotonic() - started:.2f} s")
    replies = [item for item in items if item.type == "Correspond"]
    assert [item.content for item in replies] == texts
    assert all(item.creator == rt.support for item in replies)
    # The administrator sees the rows that were left out.
    assert any(h["Type"] == "EmailRecord" for h in rt.history(ticket.id))


# ---- The conversation --------------------------------------------------------------------------


def test_waiting_on_the_customer(rt: RequestTracker, gateway: MailGateway) -> None:
    """Stalled by support, the case waits on the customer until the customer's email (RT
    leaves the ticket stalled) or until support opens it again."""
    ticket = create(rt)
    reply(rt, ticket, "Please send the output of `flux check`.", Status="stalled")
    who = people(rt, ticket)
    waiting = conversation.summarize(history(rt, ticket), who)
    assert waiting.waits_on is WaitsOn.CUSTOMER
    assert len(waiting.pauses) == 1
    assert waiting.pauses[0].end is None

    time.sleep(TICK)
    email_from(gateway, ticket, "Here it is: all checks passed.\n")
    assert rt.ticket(ticket.id)["Status"] == "stalled"  # RT 5: stalled is an active status
    answered = conversation.summarize(history(rt, ticket), who)
    assert answered.waits_on is WaitsOn.SUPPORT
    assert answered.pauses[0].end is not None

    time.sleep(TICK)
    as_support(rt, ticket, Status="open")
    as_support(rt, ticket, Status="stalled")
    time.sleep(TICK)
    as_support(rt, ticket, Status="open")
    reply(rt, ticket, "Thanks. A fix is in v2.6.2.")
    items = history(rt, ticket)
    summary = conversation.summarize(items, who)
    stalled = changes(items, "stalled")
    [customer] = [item for item in items if item.type == "Correspond"
                  and conversation.side(item, who) is Side.CUSTOMER]
    assert customer.creator == CUSTOMER
    assert summary.pauses == (Pause(stalled[0].created, customer.created),
                              Pause(stalled[1].created, changes(items, "open")[-1].created))
    assert summary.pauses[1].end is not None
    assert summary.pauses[1].end > summary.pauses[1].start
    assert summary.reply_count == 2
    assert summary.last_reply is not None
    assert summary.last_reply.author == rt.support
    assert summary.waits_on is WaitsOn.CUSTOMER
    assert [(m.kind, m.side) for m in conversation.thread(items, who)] == [
        ("opened", Side.CUSTOMER), ("reply", Side.SUPPORT), ("reply", Side.CUSTOMER),
        ("reply", Side.SUPPORT)]
    assert submission.first_reply(items, [rt.operator, CUSTOMER]) == submission.Reply(
        summary.replies[0].at, rt.support)
    record("waiting-on-the-customer", rt, ticket, items, who,
           "reply with status stalled; the customer's email; open; stalled; open; reply")


def test_reopened_by_the_customer(rt: RequestTracker, gateway: MailGateway) -> None:
    """The customer's email to a resolved ticket reopens it (RT_System); the interval in
    between is a closed interval with an end."""
    ticket = create(rt)
    reply(rt, ticket, "Upgrade to v2.6.2.", Status="resolved")
    time.sleep(TICK)
    email_from(gateway, ticket, "It is back after the upgrade.\n")
    assert rt.ticket(ticket.id)["Status"] == "open"
    who = people(rt, ticket)
    reopened = conversation.summarize(history(rt, ticket), who)
    assert reopened.reopened == 1
    assert reopened.closure is None
    assert reopened.waits_on is WaitsOn.SUPPORT

    time.sleep(TICK)
    reply(rt, ticket, "Fixed by the HelmRelease's new timeout.", Status="resolved")
    items = history(rt, ticket)
    summary = conversation.summarize(items, who)
    resolved = changes(items, "resolved")
    [reopening] = changes(items, "open")[-1:]
    assert reopening.creator == "RT_System"
    assert reopening.old_value == "resolved"
    assert summary.closed == (Pause(resolved[0].created, reopening.created),
                              Pause(resolved[1].created))
    assert summary.closure == conversation.Closure("resolved", resolved[1].created, rt.support)
    assert summary.waits_on is WaitsOn.NOBODY
    assert submission.resolution(items) == submission.Reply(resolved[1].created, rt.support)
    record("reopened-by-the-customer", rt, ticket, items, who,
           "reply with status resolved; the customer's email reopens it; reply with status "
           "resolved")


def test_rejected_with_the_reason_in_the_reply(rt: RequestTracker) -> None:
    """RT's Reject action: a reply, then the status. The reply is the reason; a rejection
    without one has an empty reason."""
    ticket = create(rt)
    reason = ("Out of scope: the chart podinfo is not part of the distribution.\n\n"
              "Please ask its maintainers.")
    reply(rt, ticket, reason, Status="rejected")
    items = history(rt, ticket)
    who = people(rt, ticket)
    summary = conversation.summarize(items, who)
    [change] = changes(items, "rejected")
    assert summary.rejection == conversation.Rejection(
        change.created, rt.support, " ".join(reason.split()), summary.replies[0].id)
    assert summary.closure == conversation.Closure("rejected", change.created, rt.support)
    assert summary.waits_on is WaitsOn.NOBODY
    record("rejected-with-a-reason", rt, ticket, items, who,
           "reply with status rejected (RT's Reject action)")

    bare = create(rt)
    as_support(rt, bare, Status="rejected")
    rejection = conversation.rejection(history(rt, bare), people(rt, bare))
    assert rejection is not None
    assert (rejection.by, rejection.reason, rejection.reply_id) == (rt.support, "", None)


def test_root_cause_analysis_and_files(rt: RequestTracker, gateway: MailGateway) -> None:
    """Files come back by name only, HTML replies as text; the RCA is the first reply with
    a file named rca*. Sent with the status kept at resolved, RT's reopening on the reply
    is no reopening."""
    ticket = create(rt, level=1)
    reply(rt, ticket, "Mitigated: rolled back to v2.6.0.", Status="resolved")
    time.sleep(TICK)
    archive = base64.b64encode(b"\x1f\x8b" + b"log archive " * 1000).decode()
    reply(rt, ticket, "The logs we looked at.", Status="resolved", Attachments=[
        {"FileName": "helm-controller-logs.tar.gz", "FileType": "application/gzip",
         "FileContent": archive}])
    pdf = base64.b64encode(b"%PDF-1.4 root cause").decode()
    rt.rest("POST", f"ticket/{ticket.id}/correspond", {
        "Content": "<p>Please find the <b>report</b> attached.</p>", "ContentType": "text/html",
        "Status": "resolved", "Attachments": [
            {"FileName": "RCA-INC-42.pdf", "FileType": "application/pdf", "FileContent": pdf}]},
        token=rt.support_token)
    reply(rt, ticket, "RCA: corrected timeline in section 2.", Status="resolved",
          Subject="RCA: INC-42 (corrected)")
    items = history(rt, ticket)
    who = people(rt, ticket)
    summary = conversation.summarize(items, who)
    replies = summary.replies
    assert [r.attachments for r in replies] == [(), ("helm-controller-logs.tar.gz",),
                                                ("RCA-INC-42.pdf",), ()]
    assert [r.text for r in replies] == [
        "Mitigated: rolled back to v2.6.0.", "The logs we looked at.",
        "Please find the report attached.", "RCA: corrected timeline in section 2."]
    assert [r.subject for r in replies] == ["", "", "", "RCA: INC-42 (corrected)"]
    assert summary.rca_delivery == replies[2]
    # RT reopened the ticket on each reply (RT_System) and alice resolved it in the same
    # step: the case stays resolved since the first resolution.
    assert len(changes(items, "open")) >= 3
    [first] = changes(items, "resolved")[:1]
    assert summary.closed == (Pause(first.created),)
    assert summary.reopened == 0
    assert summary.closure == conversation.Closure("resolved", first.created, rt.support)
    record("root-cause-analysis", rt, ticket, items, who,
           "reply with status resolved; replies with files (a log archive, RCA-INC-42.pdf in "
           "an HTML reply) and an RCA: subject, each with the status kept at resolved")


def test_support_comments_stay_internal_and_customer_comments_end_a_wait(
        rt: RequestTracker, gateway: MailGateway) -> None:
    """The support team's comments are no reply and not in the thread; a customer's comment
    that the operator posts (``fluxsupport case comment``) ends a wait; a Cc is the
    customer."""
    ticket = create(rt)
    as_support(rt, ticket, Cc=[COLLEAGUE])
    rt.rest("POST", f"ticket/{ticket.id}/comment",
            {"Content": "Internal: looks like the known leader-election bug.",
             "ContentType": "text/plain"}, token=rt.support_token)
    reply(rt, ticket, "Which Kubernetes version?", Status="stalled")
    time.sleep(TICK)
    update = submission.update_text("comment-20261207T100000-ab12", "Kubernetes v1.36.3")
    run(lambda p: p.comment(ticket.id, update), rt)
    time.sleep(TICK)
    email_from(gateway, ticket, "Also on the staging cluster.\n", sender=COLLEAGUE)
    items = history(rt, ticket)
    who = people(rt, ticket)
    assert who.customers == {CUSTOMER, COLLEAGUE}
    # The batched search of the sync knows the Ccs too.
    [found] = [t for t in run(lambda p: p.updated_since("fluxsupport:", None), rt)
               if t.id == ticket.id]
    assert (found.requestors, found.ccs) == ((CUSTOMER,), (COLLEAGUE,))
    summary = conversation.summarize(items, who)
    comment = next(item for item in items if item.type == "Comment"
                   and item.creator == rt.operator)
    assert summary.pauses == (Pause(changes(items, "stalled")[0].created, comment.created),)
    assert summary.reply_count == 1
    thread = conversation.thread(items, who)
    assert [(m.kind, m.side, m.author) for m in thread] == [
        ("opened", Side.CUSTOMER, rt.operator), ("reply", Side.SUPPORT, rt.support),
        ("update", Side.CUSTOMER, rt.operator), ("reply", Side.CUSTOMER, COLLEAGUE)]
    assert all("Internal" not in m.text for m in thread)
    assert summary.waits_on is WaitsOn.SUPPORT
    record("internal-comments-and-a-cc", rt, ticket, items, who,
           "a Cc added; support's internal comment; reply with status stalled; a customer's "
           "comment posted by the operator; an email from the Cc")
