"""What the operator needs from a helpdesk, whichever it is.

The controller talks to this protocol only, and finds the implementation through the
registry of ``portals.py`` by the policy's ``channels.portal.type``: another helpdesk (Zendesk,
Jira Service Management) is one more module beside ``rt.py``, not a change to the controller.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Protocol

from fluxsupport.domain.submission import Transaction
from fluxsupport.domain.ticketsla import SlaFields

__all__ = ["NewTicket", "Portal", "PortalError", "SlaFields", "Ticket", "Transaction"]


class PortalError(Exception):
    """The portal could not be reached, or refused the request.

    ``transient`` is False for a refusal that retrying will not fix (401, 403, a missing
    queue): the condition then says what to configure instead of "retrying". ``uncertain``
    is True when the request may have been carried out all the same.
    """

    def __init__(self, message: str, *, transient: bool = True, uncertain: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        #: The request may have reached the portal and taken effect although no answer
        #: said so (a timeout or a lost connection after it was sent, a 5xx from a proxy):
        #: for a create, the ticket may exist.
        self.uncertain = uncertain


@dataclasses.dataclass(frozen=True)
class Ticket:
    id: str
    #: Where a person opens the ticket in the portal's web interface.
    url: str
    subject: str
    #: The helpdesk's own status name, lower case (RT: new, open, stalled, resolved, ...).
    status: str
    last_updated: datetime.datetime | None = None
    #: Email addresses of the requestors.
    requestors: tuple[str, ...] = ()
    #: Email addresses of the ticket's Cc: the customer's colleagues who get the replies.
    ccs: tuple[str, ...] = ()
    #: The helpdesk's priority, a number (RT: higher is more urgent); None when not read.
    priority: int | None = None
    #: The ticket's due time; None when not set or not read.
    due: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True)
class NewTicket:
    subject: str
    body: str
    #: The requestor (the customer's contact) for replies by email; may be empty.
    requestor: str = ""


class Portal(Protocol):
    """A helpdesk API. Every method raises PortalError when the portal fails."""

    #: Login of the operator's own user: its own transactions are never a reply.
    async def whoami(self) -> str: ...

    async def find(self, tag: str) -> Ticket | None:
        """The ticket whose subject contains ``tag`` (the oldest if several), or None."""

    async def create(self, ticket: NewTicket) -> Ticket: ...

    async def updated_since(self, tag_prefix: str,
                            since: datetime.datetime | None) -> list[Ticket]:
        """Every ticket whose subject contains ``tag_prefix`` updated after ``since`` (all
        of them when None), in one batched query (paged as the helpdesk requires)."""

    async def ticket(self, ticket_id: str) -> Ticket:
        """The ticket, with its priority and due time."""

    async def history(self, ticket_id: str) -> list[Transaction]:
        """The ticket's messages and changes of status, oldest first, every page of them.
        A message has its subject, the start of its text (``content``, never for an Event)
        and the names of its files (never their content). Reading changes nothing."""

    async def set_sla(self, ticket_id: str, fields: SlaFields) -> bool:
        """Give the ticket the priority and due time of ``fields``; only what differs is
        written, so a second call with the same fields changes nothing and leaves no trace in
        the ticket. Returns whether anything was written."""

    async def comment(self, ticket_id: str, text: str) -> None:
        """Add ``text`` to the ticket as a comment (not sent to the requestor)."""

    async def close(self) -> None: ...
