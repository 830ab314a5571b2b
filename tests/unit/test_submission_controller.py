"""The submission controller's order of writes and sends, with the case store faked and a
real SMTP server on loopback (aiosmtpd): what is recorded before an email or a ticket goes,
and what happens when a write fails or another replica wrote first."""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import json
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from fluxsupport.channels import mail, portal
from fluxsupport.controllers import submission as controller_module
from fluxsupport.controllers.supportcase import CaseSnapshot
from fluxsupport.domain import conditions, policy, submission, timing
from tests import fakes

UID = "0c6f1c8e-5d0b-4a8e-9a43-3f7f2f1d9b10"
KEY = ("team-a", "stuck")
SPEC = {
    "title": "HelmReleases stuck\u2028after the upgrade", "severity": "Urgent",
    "component": "helm-controller", "category": "incident", "description": "Pasted.",
    "impact": {"statement": "Prod down", "environment": "production", "outage": "full",
               "businessCritical": True},
    "contact": {"name": "Bob", "email": "bob@customer.example"},
}


class Cases:
    """The CaseController's part the submission controller uses: get, items, subscribe and
    record_submission, which compares ``expect`` as the real one does."""

    def __init__(self, refuse: Callable[[Mapping[str, Any]], bool] = lambda _: False) -> None:
        created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.cases = {KEY: CaseSnapshot.from_body({
            "metadata": {"namespace": KEY[0], "name": KEY[1], "uid": UID,
                         "resourceVersion": "1", "generation": 1,
                         "creationTimestamp": created},
            "spec": SPEC, "status": {"level": 1}})}
        self.refuse = refuse
        self.records: list[dict[str, Any]] = []

    def get(self, key: tuple[str, str]) -> CaseSnapshot | None:
        return self.cases.get(key)

    def items(self) -> list[tuple[tuple[str, str], CaseSnapshot]]:
        return list(self.cases.items())

    def subscribe(self, listener: Callable[[tuple[str, str]], None]) -> None:
        pass

    async def record_submission(self, key: tuple[str, str], record: Mapping[str, Any],
                                expect: Mapping[str, Any] | None = None) -> bool:
        case = self.cases[key]
        if expect is not None and (case.status.get("submission") or {}) != dict(expect):
            return False
        if self.refuse(record):
            return False
        self.records.append(dict(record))
        case.status_json = json.dumps({**case.status, "submission": dict(record)})
        return True

    def submission(self) -> dict[str, Any]:
        return dict(self.cases[KEY].status.get("submission") or {})


class MailServer:
    """aiosmtpd's handler: keeps each message it accepts. ``refusals`` lists what the next
    messages meet, one each, first to last: ``RCPT`` (a recipient refused), ``DATA`` (the
    message refused) or ``DROP`` (the connection closed while the message comes in)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.refusals: list[str] = []
        self.port = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if self.refusals and self.refusals[0] == "RCPT":
            self.refusals.pop(0)
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        refusal = self.refusals.pop(0) if self.refusals else ""
        if refusal == "DATA":
            return "554 5.7.1 message refused"
        if refusal == "DROP":
            server.transport.close()
            return "421 closing"
        self.received.append(envelope.original_content or envelope.content)
        return "250 OK"


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    from aiosmtpd.controller import Controller

    handler = MailServer()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        handler.port = probe.getsockname()[1]
    server = Controller(handler, hostname="127.0.0.1", port=handler.port)
    server.start()
    try:
        yield handler
    finally:
        server.stop()


@pytest.fixture
def smtp(mail_server: MailServer) -> tuple[list[bytes], int]:
    return mail_server.received, mail_server.port


def email_channels(port: int) -> policy.Channels:
    return policy.Channels.model_validate({"email": {
        "enabled": True, "host": "127.0.0.1", "port": port, "tls": "none", "timeout": "10s",
        "from": "ops@customer.example", "to": "support@vendor.example"}})


def act(cases: Cases, channels: policy.Channels, setup: Callable[[Any], None] = lambda _: None
        ) -> None:
    async def main() -> None:
        # No Secret in the fake API server: email without SMTP authentication.
        controller = controller_module.SubmissionController(
            cases, channels, fakes.FakeClient(), "fluxsupport-system")
        setup(controller)
        await controller._act(KEY)
    asyncio.run(main())


def test_a_title_with_a_line_break_goes_by_email_once(smtp: tuple[list[bytes], int]) -> None:
    received, port = smtp
    cases = Cases()
    act(cases, email_channels(port))
    assert len(received) == 1
    assert b"HelmReleases stuck after the upgrade" in received[0]
    intent, sent = cases.records
    assert intent["messageId"] == submission.message_id(UID)
    assert "submittedAt" not in intent
    assert sent["submittedAt"]
    condition = submission.condition(sent, 1, email_channels(port), False,
                                     datetime.datetime.now(datetime.UTC))
    assert (condition.status, condition.reason) == ("True", "SubmittedByEmail")


def test_no_intent_is_recorded_for_a_message_that_cannot_be_built(
        smtp: tuple[list[bytes], int], monkeypatch: pytest.MonkeyPatch) -> None:
    received, port = smtp

    def refuse(*args: Any) -> Any:
        raise ValueError("Header values may not contain linefeed or carriage return")

    monkeypatch.setattr(mail, "build", refuse)
    cases = Cases()
    act(cases, email_channels(port))
    assert received == []
    [failed] = cases.records
    assert "messageId" not in failed
    assert failed["emailAttempts"] == 1
    assert "could not be built" in failed["lastError"]
    # Nothing is recorded as sent: it is tried again after the backoff.
    step = submission.plan(failed, 1, email_channels(port), False,
                           datetime.datetime.now(datetime.UTC))
    assert step.action is submission.Action.EMAIL
    assert step.at is not None


def test_the_status_write_after_the_send_is_tried_again(
        smtp: tuple[list[bytes], int], monkeypatch: pytest.MonkeyPatch) -> None:
    """A conflict or an API blip on the write after the send must not leave the case
    Unknown ("may have arrived") for ever."""
    received, port = smtp
    monkeypatch.setattr(controller_module, "EMAIL_END_RETRY_S", (0.0, 0.01, 0.01))
    refusals = [True, True]  # the first two writes with submittedAt fail

    def refuse(record: Mapping[str, Any]) -> bool:
        return bool(record.get("submittedAt") and refusals and refusals.pop())

    cases = Cases(refuse)
    act(cases, email_channels(port))
    assert len(received) == 1
    assert cases.submission()["submittedAt"]
    assert refusals == []


def test_an_email_left_sending_by_a_stopped_operator_is_marked_uncertain(
        smtp: tuple[list[bytes], int]) -> None:
    received, port = smtp
    cases = Cases()
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    left = {"channel": "email", "messageId": submission.message_id(UID), "level": 1,
            "lastEmailAttemptAt": submission.precise(long_ago)}
    cases.cases[KEY].status_json = json.dumps({"level": 1, "submission": left})
    act(cases, email_channels(port))
    assert received == []  # at most once: never sent again
    assert cases.submission() == {**left, "lastError": submission.EMAIL_STOPPED}


class Helpdesk:
    """A portal that has no ticket, and counts creates."""

    def __init__(self, on_find: Callable[[], None] = lambda: None) -> None:
        self.on_find = on_find
        self.created: list[portal.NewTicket] = []

    async def find(self, tag: str) -> portal.Ticket | None:
        self.on_find()
        return None

    async def create(self, ticket: portal.NewTicket) -> portal.Ticket:
        self.created.append(ticket)
        return portal.Ticket("42", "https://rt.example/Ticket/Display.html?id=42",
                             ticket.subject, "new")

    async def close(self) -> None:
        pass


PORTAL = policy.Channels.model_validate({"portal": {"enabled": True,
                                                    "url": "https://rt.example/"}})


def with_helpdesk(helpdesk: Helpdesk) -> Callable[[Any], None]:
    def setup(controller: Any) -> None:
        controller._secret = (time.time(), {"portal-token": "1-2-abc"})
        controller._portal, controller._token = helpdesk, "1-2-abc"
    return setup


def test_the_create_is_recorded_before_it_is_made() -> None:
    helpdesk = Helpdesk()
    cases = Cases()
    act(cases, PORTAL, with_helpdesk(helpdesk))
    assert len(helpdesk.created) == 1
    attempt, linked = cases.records
    assert attempt["createAttemptAt"]
    assert "ticketId" not in attempt
    assert linked["ticketId"] == "42"
    assert "createAttemptAt" not in linked


def test_a_replica_that_another_one_wrote_before_does_not_create() -> None:
    """Between this replica's read and its write, another one recorded its attempt: the
    write that expects the old record fails, and no ticket is created here."""
    cases = Cases()
    other = {"createAttemptAt": submission.precise(datetime.datetime.now(datetime.UTC))}

    def other_replica_writes() -> None:
        cases.cases[KEY].status_json = json.dumps({"level": 1, "submission": other})

    helpdesk = Helpdesk(other_replica_writes)
    act(cases, PORTAL, with_helpdesk(helpdesk))
    assert helpdesk.created == []
    assert cases.records == []
    assert cases.submission() == other


def test_a_replica_paused_after_recording_its_attempt_does_not_create(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Paused longer than a portal timeout while it recorded the attempt (a slow write, a
    frozen process), it may have been taken over by a replica that waited the attempt out
    and created the ticket."""
    helpdesk = Helpdesk()
    start = datetime.datetime.now(datetime.UTC)
    clock = [start]
    monkeypatch.setattr(controller_module, "_now", lambda: clock[0])

    def pause(record: Mapping[str, Any]) -> bool:
        clock[0] += datetime.timedelta(seconds=PORTAL.portal.timeout + 1)
        return False

    cases = Cases(pause)
    act(cases, PORTAL, with_helpdesk(helpdesk))
    assert helpdesk.created == []
    [attempt] = cases.records
    assert attempt["createAttemptAt"] == submission.precise(start)


def escalated_cases() -> Cases:
    """A case already submitted by email that reached tiers 1 and 2."""
    cases = Cases()
    case = cases.cases[KEY]
    case.status_json = json.dumps({
        "level": 1,
        "submission": {"channel": "email", "messageId": submission.message_id(UID),
                       "submittedAt": "2026-11-30T10:00:00Z", "level": 1},
        "escalation": {"tier": 2, "tiers": [
            {"tier": 1, "contact": "account manager", "reachedAt": "2026-11-30T10:45:00Z",
             "trigger": "TargetAtRisk", "detail": "the first response target is at risk"},
            {"tier": 2, "contact": "head of customer success",
             "reachedAt": "2026-12-02T11:00:00Z", "trigger": "NotProgressing",
             "detail": "no reply from support for 16h"}]}})
    return cases


def escalation_policy(port: int) -> policy.Policy:
    return policy.Policy.model_validate({
        "preset": "support-policy-2026", "region": "EMEA",
        "channels": {"email": {"enabled": True, "host": "127.0.0.1", "port": port,
                               "tls": "none", "timeout": "10s",
                               "from": "ops@customer.example", "to": "support@vendor.example"}},
        "escalation": {"contacts": {"accountManager": ["am@vendor.example"],
                                    "headOfCustomerSuccess": ["hcs@vendor.example",
                                                              "cs@vendor.example"]}}})


def act_with_policy(cases: Cases, rules: policy.Policy) -> list[float]:
    """One action on the case; the instants it scheduled the case at."""
    async def main() -> list[float]:
        controller = controller_module.SubmissionController(
            cases, rules.channels, fakes.FakeClient(), "fluxsupport-system", policy=rules)
        await controller._act(KEY)
        return sorted(controller.scheduler._due.values())
    return asyncio.run(main())


def test_each_tier_reached_is_emailed_to_its_contacts_once(
        smtp: tuple[list[bytes], int]) -> None:
    received, port = smtp
    cases = escalated_cases()
    rules = escalation_policy(port)
    act_with_policy(cases, rules)
    act_with_policy(cases, rules)
    assert len(received) == 2
    first, second = (email.message_from_bytes(message, policy=email.policy.default)
                     for message in received)
    assert first["Message-ID"] == f"<case-{UID}-tier1@fluxsupport>"
    assert first["To"] == "am@vendor.example"
    body = first.get_body()
    assert body is not None
    assert "Escalated to tier 1 (account manager)" in body.get_content()
    assert second["To"] == "hcs@vendor.example, cs@vendor.example"
    emails = cases.submission()["escalationEmails"]
    assert [(entry["tier"], "sentAt" in entry) for entry in emails] == [(1, True), (2, True)]
    # The intent of each was stored before its send.
    assert [entry.get("sentAt") for entry in cases.records[0]["escalationEmails"]] == [None]


def test_a_tier_email_whose_intent_was_not_stored_is_not_sent(
        smtp: tuple[list[bytes], int]) -> None:
    received, port = smtp
    cases = escalated_cases()
    cases.refuse = lambda record: "escalationEmails" in record
    act_with_policy(cases, escalation_policy(port))
    assert received == []


def test_a_tier_email_recorded_as_being_sent_is_never_sent_again(
        smtp: tuple[list[bytes], int]) -> None:
    """The operator stopped between the intent and the send: the tier is not emailed again
    (at most once); the other tier is."""
    received, port = smtp
    cases = escalated_cases()
    case = cases.cases[KEY]
    status = case.status
    status["submission"]["escalationEmails"] = [
        {"tier": 1, "messageId": f"<case-{UID}-tier1@fluxsupport>",
         "attemptedAt": "2026-11-30T10:46:00Z"}]
    case.status_json = json.dumps(status)
    act_with_policy(cases, escalation_policy(port))
    assert len(received) == 1
    assert email.message_from_bytes(received[0])["Message-ID"].strip() == \
        f"<case-{UID}-tier2@fluxsupport>"


def tier_messages(received: list[bytes], tier: int) -> int:
    marker = f"<case-{UID}-tier{tier}@fluxsupport>"
    return sum(1 for data in received if email.message_from_bytes(data)["Message-ID"].strip()
               == marker)


@pytest.mark.parametrize("refusal", ["RCPT", "DATA"])
def test_a_tier_email_the_server_refused_is_sent_again_after_its_backoff(
        mail_server: MailServer, monkeypatch: pytest.MonkeyPatch, refusal: str) -> None:
    """Refused before the server took it, nothing went out: the tier is tried again at its
    retryAt, with its intent recorded again first, and arrives once."""
    cases = escalated_cases()
    rules = escalation_policy(mail_server.port)
    mail_server.refusals = [refusal]  # tier 1's first send; tier 2 goes through
    start = datetime.datetime.now(datetime.UTC)
    scheduled = act_with_policy(cases, rules)
    assert (tier_messages(mail_server.received, 1), tier_messages(mail_server.received, 2)) \
        == (0, 1)
    first, second = cases.submission()["escalationEmails"]
    assert (first["tier"], first["attempts"]) == (1, 1)
    assert ("550" if refusal == "RCPT" else "554") in first["lastError"]
    assert not {"sentAt", "error"} & first.keys()
    retry_at = timing.parse_time(first["retryAt"])
    assert start + datetime.timedelta(seconds=4) <= retry_at \
        <= datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=6)
    assert retry_at.timestamp() in scheduled  # the case is woken for it
    assert second["sentAt"]

    # Before retryAt: nothing is sent; the case waits for it.
    assert act_with_policy(cases, rules) == [retry_at.timestamp()]
    assert tier_messages(mail_server.received, 1) == 0

    later = retry_at + datetime.timedelta(seconds=1)
    monkeypatch.setattr(controller_module, "_now", lambda: later)
    writes = len(cases.records)
    act_with_policy(cases, rules)
    assert tier_messages(mail_server.received, 1) == 1
    # The intent of the second send was stored before it, without retryAt.
    intent = cases.records[writes]["escalationEmails"][0]
    assert intent == {"tier": 1, "messageId": f"<case-{UID}-tier1@fluxsupport>",
                      "attemptedAt": conditions.rfc3339(later), "attempts": 1,
                      "lastError": first["lastError"]}
    sent = cases.submission()["escalationEmails"][0]
    assert sent == {**intent, "sentAt": conditions.rfc3339(later)}
    # Sent once: never again, however often the case is acted on.
    monkeypatch.setattr(controller_module, "_now",
                        lambda: later + datetime.timedelta(hours=1))
    act_with_policy(cases, rules)
    assert (tier_messages(mail_server.received, 1), tier_messages(mail_server.received, 2)) \
        == (1, 1)


def test_a_tier_email_refused_again_backs_off_longer(
        mail_server: MailServer, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = escalated_cases()
    rules = escalation_policy(mail_server.port)
    mail_server.refusals = ["RCPT"]  # tier 1; tier 2 goes through
    act_with_policy(cases, rules)
    first = timing.parse_time(cases.submission()["escalationEmails"][0]["retryAt"])
    monkeypatch.setattr(controller_module, "_now", lambda: first)
    mail_server.refusals = ["RCPT"]
    act_with_policy(cases, rules)
    again = cases.submission()["escalationEmails"][0]
    assert again["attempts"] == 2
    assert timing.parse_time(again["retryAt"]) == first + datetime.timedelta(seconds=10)
    assert tier_messages(mail_server.received, 1) == 0


def test_a_tier_email_lost_while_the_server_took_it_is_never_sent_again(
        mail_server: MailServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection closed during DATA: the server may have the message (at most once)."""
    cases = escalated_cases()
    rules = escalation_policy(mail_server.port)
    mail_server.refusals = ["DROP"]
    act_with_policy(cases, rules)
    first = cases.submission()["escalationEmails"][0]
    assert first["tier"] == 1
    assert first["error"].startswith("email: ")
    assert not {"retryAt", "attempts"} & first.keys()
    monkeypatch.setattr(controller_module, "_now", lambda: datetime.datetime.now(
        datetime.UTC) + datetime.timedelta(hours=1))
    act_with_policy(cases, rules)
    assert tier_messages(mail_server.received, 1) == 0
    assert cases.submission()["escalationEmails"][0] == first
