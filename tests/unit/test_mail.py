"""The email channel against a real SMTP server on loopback (aiosmtpd): which failures mean
the message went nowhere (retry) and which mean it may have arrived (never send again)."""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from fluxsupport.channels import mail
from fluxsupport.domain import policy, submission

NOW = datetime.datetime(2026, 12, 7, 10, 0, tzinfo=datetime.UTC)
UID = "0c6f1c8e-5d0b-4a8e-9a43-3f7f2f1d9b10"


class Server:
    """Answers DATA as told: accept, refuse with a reply code, or drop the connection."""

    def __init__(self, data: str = "accept", rcpt: str = "250 OK") -> None:
        self.data, self.rcpt = data, rcpt
        self.received: list[bytes] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if self.rcpt.startswith("250"):
            envelope.rcpt_tos.append(address)
        return self.rcpt

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data == "drop":
            server.transport.abort()
            return "250 OK"
        if self.data != "accept":
            return self.data
        self.received.append(envelope.original_content or envelope.content)
        return "250 OK"


@pytest.fixture
def smtp(request: pytest.FixtureRequest) -> Iterator[tuple[Server, int]]:
    from aiosmtpd.controller import Controller

    handler = Server(**getattr(request, "param", {}))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def send(port: int) -> None:
    config = policy.Email.model_validate({
        "enabled": True, "host": "127.0.0.1", "port": port, "tls": "none", "timeout": "10s",
        "from": "ops@customer.example", "to": "support@vendor.example"})
    message = submission.Message(subject=f"[fluxsupport:{UID}] Level 1 (Urgent): down",
                                 body="Everything is down.")
    asyncio.run(mail.send(config, mail.build(config, message, UID)))


def test_an_accepted_email_arrives_once_with_the_case_message_id(
        smtp: tuple[Server, int]) -> None:
    server, port = smtp
    send(port)
    assert len(server.received) == 1
    assert f"Message-ID: {submission.message_id(UID)}".encode() in server.received[0]


@pytest.mark.parametrize("smtp", [{"rcpt": "550 no such user"}, {"data": "554 rejected"}],
                         indirect=True, ids=["recipient refused", "body refused"])
def test_a_refusal_is_certain_so_the_email_may_be_sent_again(
        smtp: tuple[Server, int]) -> None:
    with pytest.raises(mail.EmailError) as caught:
        send(smtp[1])
    assert not caught.value.uncertain
    assert smtp[0].received == []


@pytest.mark.parametrize("smtp", [{"data": "drop"}], indirect=True)
def test_a_connection_lost_during_data_is_uncertain(smtp: tuple[Server, int]) -> None:
    with pytest.raises(mail.EmailError) as caught:
        send(smtp[1])
    assert caught.value.uncertain


def test_no_server_is_a_certain_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(mail.EmailError) as caught:
        send(port)
    assert not caught.value.uncertain


def test_an_uncertain_email_reads_unknown_and_says_what_to_check() -> None:
    record = {"channel": "email", "messageId": submission.message_id(UID),
              "lastError": "email: SMTPServerDisconnected: Connection lost"}
    channels = policy.Channels.model_validate({"email": {
        "enabled": True, "host": "h", "from": "a@b.example", "to": "s@v.example"}})
    condition = submission.condition(record, 1, channels, False, NOW)
    assert (condition.status, condition.reason) == ("Unknown", "EmailUncertain")
    assert "Connection lost" in condition.message
    assert "not sent again" in condition.message
    assert submission.plan(record, 1, channels, False, NOW).action is submission.Action.NONE


#: Line breaks and other control characters a pasted title or contact may hold: each is a
#: line break for str.splitlines(), which the email library refuses in a header value.
BREAKS = ["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028",
          "\u2029", "\t", "\x00", "\x7f"]


@pytest.mark.parametrize("breaks", BREAKS, ids=repr)
def test_header_values_are_one_line_whatever_the_case_holds(breaks: str,
                                                           smtp: tuple[Server, int]) -> None:
    """A title stored before the CRD refused line breaks still goes out, on one line."""
    server, port = smtp
    spec = {"title": f"HelmReleases stuck{breaks}after the upgrade{breaks}", "contact": {
        "name": f"Bob{breaks}Smith", "email": f"bob@customer.example{breaks}"}}
    rendered = submission.render(uid=UID, namespace="team-a", name="stuck", cluster="c",
                                 level=1, spec=spec, diagnostics=None)
    assert rendered.subject == (f"[fluxsupport:{UID}] Level 1 (Urgent): HelmReleases stuck "
                                "after the upgrade")
    [contact] = [line for line in rendered.body.splitlines() if line.startswith("Contact:")]
    assert contact.startswith("Contact: Bob Smith <bob@customer.example")
    config = policy.Email.model_validate({
        "enabled": True, "host": "127.0.0.1", "port": port, "tls": "none",
        "from": "ops@customer.example", "to": "support@vendor.example"})
    built = mail.build(config, rendered, UID, spec["contact"]["email"])
    assert built["Subject"] == rendered.subject
    assert built["Reply-To"] is None  # not one plain address: left out, the body names it
    asyncio.run(mail.send(config, built))
    [received] = server.received
    arrived = email.message_from_bytes(received, policy=email.policy.default)
    assert arrived["Subject"] == rendered.subject  # unfolded: one line as it was written
    assert arrived["Message-ID"] == submission.message_id(UID)


@pytest.mark.parametrize(("contact", "kept"), [
    ("bob@customer.example", True), ("bob@customer.example,eve@evil.example", False),
    ("Bob <bob@customer.example>", False), ("bob@customer.example\u2028", False),
    ("bob\x0b@customer.example", False), ("", False)])
def test_reply_to_is_the_contact_only_when_it_is_one_address(contact: str, kept: bool) -> None:
    config = policy.Email.model_validate({"enabled": True, "host": "h", "from": "a@b.example",
                                          "to": "s@v.example"})
    message = submission.Message(subject="s", body="b")
    assert mail.build(config, message, UID, contact)["Reply-To"] == (contact if kept else None)
