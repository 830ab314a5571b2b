"""The RT adapter (channels/rt.py) against the real Request Tracker 5 (tests/rt.py): one RT and
one loopback SMTP server for the module, nothing of the kube-apiserver fixtures."""

from __future__ import annotations

import asyncio
import datetime
import email.message
import pathlib
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiosmtplib
import pytest

from fluxsupport.channels.portal import NewTicket, PortalError, Ticket
from fluxsupport.channels.rt import RequestTracker as Portal
from fluxsupport.domain import submission
from tests import channelkit
from tests.rt import MailGateway, RequestTracker

T = TypeVar("T")


def run(factory: Callable[[Portal], Coroutine[Any, Any, T]], rt: RequestTracker,
        *, token: str | None = None, timeout: float = 10.0) -> T:
    """Run one coroutine with a fresh adapter (and its own session), closed afterwards."""
    async def main() -> T:
        portal = Portal(rt.url, rt.queue, token or rt.operator_token, timeout=timeout)
        try:
            return await factory(portal)
        finally:
            await portal.close()
    return asyncio.run(main())


def new_tag() -> str:
    return f"[fluxsupport:{uuid.uuid4()}]"


def create(rt: RequestTracker, tag: str, requestor: str = "") -> Ticket:
    ticket = NewTicket(subject=f"{tag} Level 1 (Urgent): production down",
                       body="Kustomization apps/prod is failing.\n", requestor=requestor)
    return run(lambda p: p.create(ticket), rt)


def test_create_then_find(rt: RequestTracker, figures: Callable[[str], None]) -> None:
    figures(f"RT: install {rt.timings['install']:.0f} s (recorded), database init "
            f"{rt.timings['db_init']:.1f} s (0: cached copy), setup {rt.timings['setup']:.1f} s,"
            f" start-up to first answer {rt.timings['startup']:.1f} s")
    tag = new_tag()
    started = time.monotonic()
    ticket = create(rt, tag, requestor="oncall@customer.test")
    figures(f"RT: ticket create round trip {time.monotonic() - started:.2f} s")
    assert ticket.subject.startswith(tag)
    assert ticket.status == "new"
    assert ticket.url == f"{rt.url}Ticket/Display.html?id={ticket.id}"
    assert ticket.requestors == ("oncall@customer.test",)
    assert ticket.last_updated is not None
    assert ticket.last_updated.tzinfo is not None

    found = run(lambda p: p.find(tag), rt)
    assert found is not None
    assert found.id == ticket.id
    assert found.requestors == ("oncall@customer.test",)
    assert rt.tickets(f"Subject LIKE '{tag}'") == [(ticket.id, ticket.subject)]
    assert run(lambda p: p.find(new_tag()), rt) is None
    assert run(lambda p: p.whoami(), rt) == rt.operator


def test_find_returns_the_oldest(rt: RequestTracker) -> None:
    tag = new_tag()
    first, second = create(rt, tag), create(rt, tag)
    assert int(first.id) < int(second.id)
    found = run(lambda p: p.find(tag), rt)
    assert found is not None
    assert found.id == first.id


def test_updated_since(rt: RequestTracker) -> None:
    older = create(rt, new_tag())
    time.sleep(1.1)  # RT keeps seconds
    since = datetime.datetime.now(datetime.UTC)
    time.sleep(1.1)
    newer = create(rt, new_tag())
    recent = {t.id for t in run(lambda p: p.updated_since("fluxsupport:", since), rt)}
    assert newer.id in recent
    assert older.id not in recent
    every = {t.id for t in run(lambda p: p.updated_since("fluxsupport:", None), rt)}
    assert {older.id, newer.id} <= every


def test_paging(rt: RequestTracker, monkeypatch: pytest.MonkeyPatch) -> None:
    from fluxsupport.channels import rt as adapter

    tags = [new_tag() for _ in range(3)]
    ids = [create(rt, tag).id for tag in tags]
    monkeypatch.setattr(adapter, "PER_PAGE", 2)
    every = [t.id for t in run(lambda p: p.updated_since("fluxsupport:", None), rt)]
    assert set(ids) <= set(every)
    assert len(every) == len(set(every))
    assert every == sorted(every, key=int)


def test_reply_and_autoreply_in_history(rt: RequestTracker, gateway: MailGateway) -> None:
    tag = new_tag()
    ticket = create(rt, tag, requestor="customer@example.test")
    rt.reply_as_support(ticket.id, "We are looking at it.")
    history = run(lambda p: p.history(ticket.id), rt)
    kinds = [(t.type, t.creator) for t in history]
    assert kinds[0] == ("Create", rt.operator)
    assert history[0].content.startswith("Kustomization apps/prod is failing.")
    replies = [t for t in history if t.type == "Correspond"]
    assert len(replies) == 1
    assert replies[0].creator == rt.support
    assert replies[0].creator_email == "alice@support.fluxsupport.test"
    assert replies[0].content.startswith("We are looking at it.")
    assert replies[0].created.tzinfo is not None
    assert history == sorted(history, key=lambda t: int(t.id))
    # RT's own transactions (the Status change the reply causes) are RT_System's; the operator
    # cannot see the EmailRecord ones (the autoreply) without ShowOutgoingEmail.
    assert ("Status", "RT_System") in kinds
    assert all(t.type != "EmailRecord" for t in history)
    # The administrator sees the autoreply: an EmailRecord by RT_System right after Create.
    admin = [(h["Type"], h["Creator"]["Name"]) for h in rt.history(ticket.id)]
    assert admin[:2] == [("Create", rt.operator), ("EmailRecord", "RT_System")]
    autoreply = gateway.wait_for(lambda m: tag in str(m["Subject"])
                                 and "customer@example.test" in str(m["To"]))
    # RT puts its own tag in front: "[fluxsupport.test #9] AutoReply: [fluxsupport:...] ...".
    assert f"[fluxsupport.test #{ticket.id}] AutoReply: {tag}" in str(autoreply["Subject"])
    assert str(autoreply["From"]).endswith(f"<{rt.correspond_address}>")


def test_comment(rt: RequestTracker) -> None:
    ticket = create(rt, new_tag())
    run(lambda p: p.comment(ticket.id, "Still failing. [fluxsupport-update:u1]"), rt)
    comments = [t for t in run(lambda p: p.history(ticket.id), rt) if t.type == "Comment"]
    assert len(comments) == 1
    assert comments[0].creator == rt.operator
    assert "[fluxsupport-update:u1]" in comments[0].content


def test_resolve(rt: RequestTracker) -> None:
    tag = new_tag()
    ticket = create(rt, tag)
    rt.resolve(ticket.id)
    found = run(lambda p: p.find(tag), rt)
    assert found is not None
    assert found.status == "resolved"
    types = [(t.type, t.creator) for t in run(lambda p: p.history(ticket.id), rt)]
    assert ("Status", rt.support) in types


def test_the_history_says_who_resolved_the_ticket_and_when(rt: RequestTracker) -> None:
    """The resolution is the Status change to resolved, not the ticket's LastUpdated, which
    a later comment moves."""
    ticket = create(rt, new_tag())
    rt.resolve(ticket.id)
    time.sleep(1.1)  # RT keeps seconds
    rt.rest("POST", f"ticket/{ticket.id}/comment",
            {"Content": "Closing note.", "ContentType": "text/plain"}, token=rt.support_token)
    history = run(lambda p: p.history(ticket.id), rt)
    resolved = submission.resolution(history)
    assert resolved is not None
    assert resolved.by == rt.support
    [change] = [h for h in rt.history(ticket.id)
                if h["Type"] == "Status" and h.get("NewValue") == "resolved"]
    assert resolved.at.strftime("%Y-%m-%dT%H:%M:%SZ") == change["Created"]
    last_updated = run(lambda p: p.ticket(ticket.id), rt).last_updated
    assert last_updated is not None
    assert resolved.at < last_updated


def test_a_long_update_is_posted_once_when_its_record_failed(
        rt: RequestTracker, figures: Callable[[str], None]) -> None:
    """A comment of 11,200 characters (a pasted log) is posted, and the status write that
    records it fails: the next attempt finds it in the history, cut at 4,000 characters, and
    does not post it again."""
    ticket = create(rt, new_tag())
    text = "".join(f"{n:05d} helm-controller: reconciliation failed: timed out\n"
                   for n in range(200))
    assert len(text) > 10_000

    async def scenario() -> dict[str, Any]:
        kube = channelkit.fake_kube(token=rt.operator_token)
        # RT serves one request at a time: on a loaded machine one took 6 s (measured).
        cases, submissions = channelkit.controllers(kube, rt.url, timeout="60s")
        try:
            key = await channelkit.add(cases, channelkit.case_body(
                "long", ticket=ticket.id, comments={"20261207T100000-ab12": text}))
            kube.failures = 1  # the write after the comment fails
            await submissions._act(key)
            assert "updates" not in channelkit.submission(cases, key)
            await submissions._act(key)
            return channelkit.submission(cases, key)
        finally:
            await submissions.close()

    record = asyncio.run(scenario())
    assert record["updates"] == ["comment-20261207T100000-ab12"]
    comments = [t for t in rt.history(ticket.id) if t["Type"] == "Comment"]
    figures(f"RT: a {len(text)}-character update, its record failed once: "
            f"{len(comments)} comment(s) in the ticket")
    assert len(comments) == 1
    assert "[fluxsupport-update:comment-20261207T100000-ab12]" in rt.ticket_text(ticket.id)


def test_email_through_the_gateway_makes_a_ticket(rt: RequestTracker,
                                                  gateway: MailGateway) -> None:
    uid = uuid.uuid4()
    tag = f"[fluxsupport:{uid}]"
    message = email.message.EmailMessage()
    message["From"] = "fluxsupport@customer.test"
    message["To"] = rt.correspond_address
    message["Subject"] = f"{tag} Level 2 (High): reconciliation stalled"
    message["Message-ID"] = f"<case-{uid}@fluxsupport>"
    message.set_content("Kustomization apps/staging is stalled.\n")
    asyncio.run(aiosmtplib.send(message, hostname="127.0.0.1", port=gateway.port, timeout=60))
    assert gateway.mailgate_runs[-1][0] == 0, gateway.mailgate_runs[-1]

    ticket = run(lambda p: p.find(tag), rt)
    assert ticket is not None
    assert ticket.requestors == ("fluxsupport@customer.test",)
    history = run(lambda p: p.history(ticket.id), rt)
    assert (history[0].type, history[0].creator) == ("Create", "fluxsupport@customer.test")
    admin = [(h["Type"], h["Creator"]["Name"]) for h in rt.history(ticket.id)]
    assert admin[:2] == [("Create", "fluxsupport@customer.test"), ("EmailRecord", "RT_System")]
    gateway.wait_for(lambda m: tag in str(m["Subject"])
                     and "fluxsupport@customer.test" in str(m["To"]))


def test_bad_token_is_not_transient(rt: RequestTracker) -> None:
    bad = rt.operator_token[:-8] + "00000000"
    with pytest.raises(PortalError) as refused:
        run(lambda p: p.find(new_tag()), rt, token=bad)
    assert not refused.value.transient
    assert "401" in str(refused.value)
    assert "portal-token" in str(refused.value)
    with pytest.raises(PortalError) as malformed:
        run(lambda p: p.whoami(), rt, token="not-a-token")
    assert not malformed.value.transient


def test_missing_queue_is_not_transient(rt: RequestTracker) -> None:
    async def create_elsewhere(portal: Portal) -> Ticket:
        portal.queue = "NoSuchQueue"
        return await portal.create(NewTicket(subject=f"{new_tag()} x", body="x"))

    with pytest.raises(PortalError) as refused:
        run(create_elsewhere, rt)
    assert not refused.value.transient
    assert "NoSuchQueue" in str(refused.value)
    assert "channels.portal.queue" in str(refused.value)


def test_unresponsive_portal_times_out(tmp_path: pathlib.Path) -> None:
    """A portal that accepts the connection and never answers costs ``timeout``, no more."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"

        async def main() -> None:
            portal = Portal(url, "General", "1-2-" + "0" * 32, timeout=1.0)
            try:
                await portal.find(new_tag())
            finally:
                await portal.close()

        started = time.monotonic()
        with pytest.raises(PortalError) as stuck:
            asyncio.run(main())
        assert stuck.value.transient
        assert time.monotonic() - started < 3


def test_rt_down_is_transient_then_recovers(rt: RequestTracker,
                                            figures: Callable[[str], None]) -> None:
    """Last in the module: RT goes away (an outage) and comes back on the same port."""
    tag = new_tag()
    ticket = create(rt, tag)
    rt.stop()
    try:
        started = time.monotonic()
        with pytest.raises(PortalError) as down:
            run(lambda p: p.find(tag), rt, timeout=2.0)
        assert down.value.transient
        assert time.monotonic() - started < 3
    finally:
        rt.start_again()
    figures(f"RT: restart after an outage answers in {rt.timings['startup']:.1f} s")
    found = run(lambda p: p.find(tag), rt)
    assert found is not None
    assert found.id == ticket.id
