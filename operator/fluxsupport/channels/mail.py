"""The email channel: one message per case, over SMTP with aiosmtplib.

The Message-ID comes from the case's uid, so the helpdesk (RT's mail gateway) and the
support team's mail client see one message however often a crash interrupts the operator.
"""

from __future__ import annotations

import email.errors
import email.headerregistry
import email.message
import email.utils
from collections.abc import Sequence

import aiosmtplib

from fluxsupport.domain import policy as policy_module
from fluxsupport.domain import submission


class EmailError(Exception):
    """The SMTP server could not be reached, refused the message, or lost the connection
    while the message was being handed over."""

    def __init__(self, message: str, *, uncertain: bool = False) -> None:
        super().__init__(message)
        #: The connection failed after the message body went out and before the server
        #: answered: the message may have been accepted, so sending it again could duplicate it.
        self.uncertain = uncertain


def build(config: policy_module.Email, message: submission.Message, uid: str,
          reply_to: str = "") -> email.message.EmailMessage:
    """The message, complete: the controller builds it before it records that it sends it,
    so that a value the email library refuses never leaves an email half sent. Header values
    are one line whatever the case holds (a title stored before the CRD refused line
    breaks); a contact that is not one plain address is left out of Reply-To (the body
    still names it)."""
    mail = email.message.EmailMessage()
    mail["From"] = config.sender
    mail["To"] = config.to
    mail["Subject"] = submission.one_line(message.subject)
    mail["Message-ID"] = submission.message_id(uid)
    mail["Date"] = email.utils.formatdate(usegmt=True)
    mail["X-Fluxsupport-Case"] = submission.one_line(uid)
    if plain_address(reply_to):
        mail["Reply-To"] = reply_to
    mail.set_content(message.body)
    return mail


def build_notice(config: policy_module.Email, subject: str, body: str, message_id: str,
                 recipients: Sequence[str]) -> email.message.EmailMessage:
    """A notice of the operator to ``recipients`` (escalation contacts), not to the
    support address."""
    mail = email.message.EmailMessage()
    mail["From"] = config.sender
    mail["To"] = ", ".join(recipients)
    mail["Subject"] = submission.one_line(subject)
    mail["Message-ID"] = message_id
    mail["Date"] = email.utils.formatdate(usegmt=True)
    mail.set_content(body)
    return mail


def plain_address(text: str) -> bool:
    """Whether ``text`` is one address, ``local@domain``, that is safe in a header."""
    if not text or submission.HEADER_UNSAFE.search(text):
        return False
    try:
        address = email.headerregistry.Address(addr_spec=text)
    except (ValueError, IndexError, email.errors.HeaderParseError):
        return False
    return bool(address.username and address.domain)


async def send(config: policy_module.Email, mail: email.message.EmailMessage,
               username: str | None = None, password: str | None = None,
               recipients: Sequence[str] = ()) -> None:
    """Send ``mail`` to ``recipients``, by default ``config.to``, step by step so that a
    failure says whether the server may have the message: refusals of the envelope or of
    the body (an SMTP reply code) mean it does not; a lost connection or a timeout during
    DATA means it may."""
    client = aiosmtplib.SMTP(
        hostname=config.host, port=config.port, timeout=config.timeout,
        use_tls=config.tls == "implicit", start_tls=config.tls == "starttls",
        username=username or None, password=password or None)
    in_data = False
    try:
        async with client:  # connects, negotiates TLS and logs in; QUIT errors are ignored
            await client.mail(config.sender)
            for recipient in recipients or (config.to,):
                await client.rcpt(recipient)
            in_data = True
            await client.data(mail.as_bytes())
            in_data = False
    except aiosmtplib.SMTPResponseException as error:
        raise EmailError(f"{type(error).__name__}: {error}") from error
    except (aiosmtplib.SMTPException, OSError) as error:
        raise EmailError(f"{type(error).__name__}: {error}", uncertain=in_data) from error
