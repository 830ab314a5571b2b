"""The email channel against a real SMTP server on loopback (aiosmtpd): which failures mean
the message went nowhere (retry) and which mean it may have arrived (never send again)."""

from __future__ import annotations

import asyncio
import datetime
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
    assert (condition.status, condition.reason) == ("Unknown", "SubmittedByEmail")
    assert "Connection lost" in condition.message
    assert "not sent again" in condition.message
    assert submission.plan(record, 1, channels, False, NOW).action is submission.Action.NONE
