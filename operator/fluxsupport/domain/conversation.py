"""What a ticket's history says about its case: the conversation, the waits, the closures.

Pure functions of the helpdesk's transactions (:class:`~fluxsupport.domain.submission.
Transaction`, oldest first, as ``Portal.history`` returns them) and of who is who
(:class:`People`). The operator reads the history again whenever the ticket changes, and
everything here is derived from the whole of it, never from a previous result: the same
history gives the same answer, whichever replica reads it, however often.

Rules (docs/channels.md, "The conversation"):

* **Who wrote it.** RT's own user (``RT_System``) is the system; the operator's own RT user
  is the operator; an author whose login or address is one of the customer's (the ticket's
  requestors and Ccs, and the channels' ``email.from``) is the customer; anyone else is the
  support team. A comment by the operator that carries a customer's comment (``fluxsupport
  case comment``, marker ``[fluxsupport-update:comment-...]``) is the customer's.
* **Replies** are the support team's correspondence (RT ``Correspond``): what was sent to the
  customer. Comments are the support team's internal notes: never a reply, never shown to
  the customer, never a reason.
* **Waiting on the customer** (a pause of the SLA clock) begins when someone other than the
  customer sets the ticket to ``stalled``, and ends at the first of: a change of status away
  from ``stalled``, or a message from the customer (RT 5 leaves a stalled ticket stalled
  when the customer replies).
* **Closed intervals**: from each change to ``resolved`` or ``rejected`` to the change back to
  an open status (a reopening: by support, or by RT when anyone writes to a resolved ticket),
  or without end while the ticket stays closed. The resolution clock does not count them.
  RT reopens a resolved ticket on the support team's own reply too (a root-cause analysis
  sent after the resolution); closed again within :data:`REOPEN_GRACE` (the reply form's
  status kept at ``resolved`` does it at once), that is no reopening.
* **Rejected**: the ticket's last change of status is to ``rejected``. The reason is the
  support team's reply written with it: the last one at most :data:`REASON_WINDOW` before the
  rejection (RT's Reject action records the reply first), else the first one at most that
  long after it. RT's change of status carries no text of its own.
* **Who the case waits on**: nobody while the ticket is resolved or rejected; the customer
  while it waits on the customer (stalled) or when the last message is a support reply;
  else the support team.
* **The root-cause analysis** is delivered by the first support reply that
  :func:`fluxsupport.domain.rca.marks_delivery` accepts (its subject or text opens with
  ``RCA:``, or it has a file named ``rca*``).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
from collections.abc import Iterable, Sequence

from fluxsupport.domain import rca
from fluxsupport.domain.pause import Pause
from fluxsupport.domain.submission import REPLY_TYPES, SYSTEM_USERS, Transaction

#: Statuses that close a ticket; leaving one for another status reopens it.
CLOSED_STATUSES = frozenset({"resolved", "rejected"})
#: The status in which a ticket waits on the customer.
WAITING_STATUS = "stalled"
#: How far from the rejection a support reply may be and still be its reason.
REASON_WINDOW = datetime.timedelta(minutes=5)
#: RT reopens a resolved ticket on any reply, also on the support team's own (a root-cause
#: analysis sent after the resolution). Closed again within this long, that is no reopening.
REOPEN_GRACE = datetime.timedelta(minutes=5)
#: A rejection's reason is cut to this many characters (it goes into the case's status).
REASON_LIMIT = 500
#: What opens the operator's comment that carries a customer's comment.
_CUSTOMER_UPDATE = re.compile(r"\s*\[fluxsupport-update:comment-")


class Side(enum.StrEnum):
    SUPPORT = "support"
    CUSTOMER = "customer"
    #: The operator's own RT user (the ticket's creation, its updates).
    OPERATOR = "operator"
    #: The helpdesk itself (RT_System: its scrips, the reopening on a customer's reply).
    SYSTEM = "system"


class WaitsOn(enum.StrEnum):
    SUPPORT = "support"
    CUSTOMER = "customer"
    NOBODY = "nobody"


@dataclasses.dataclass(frozen=True)
class People:
    """Who is who in a ticket."""

    #: Login of the operator's own RT user.
    operator: str
    #: Lower-case logins and addresses of the customer's side.
    customers: frozenset[str] = frozenset()

    @classmethod
    def of(cls, operator: str, customers: Iterable[str]) -> People:
        """``customers``: the requestors, the Ccs and ``email.from``, in any case."""
        return cls(operator, frozenset(c.strip().lower() for c in customers if c.strip()))


def side(item: Transaction, people: People) -> Side:
    creator = item.creator.lower()
    if item.creator in SYSTEM_USERS:
        return Side.SYSTEM
    if people.operator and creator == people.operator.lower():
        return Side.OPERATOR
    if {creator, item.creator_email.lower()} & people.customers:
        return Side.CUSTOMER
    return Side.SUPPORT


@dataclasses.dataclass(frozen=True)
class Message:
    """One entry of the thread. ``text`` is the start of what was written: it may be shown
    to the customer (``fluxsupport case show``), and is never put into an Event."""

    id: str
    at: datetime.datetime
    #: Login (or address) of who wrote it.
    author: str
    #: SUPPORT or CUSTOMER: the operator writes for the customer.
    side: Side
    #: ``opened`` (the ticket's first message), ``reply`` (correspondence) or ``update``
    #: (the operator's comment: a customer's comment or a severity change).
    kind: str
    subject: str
    attachments: tuple[str, ...]
    text: str


def _message(item: Transaction, people: People) -> Message | None:
    """The thread's entry for ``item``, or None for what the customer does not see (the
    support team's internal comments, changes, the system's own transactions)."""
    who = side(item, people)
    if who is Side.SYSTEM:
        return None
    if item.type == "Create":
        kind = "opened"
    elif item.type in REPLY_TYPES:
        kind = "reply"
    elif item.type == "Comment" and who is Side.OPERATOR:
        kind = "update"
    else:
        return None
    return Message(item.id, item.created, item.creator,
                   Side.SUPPORT if who is Side.SUPPORT else Side.CUSTOMER, kind,
                   item.subject, item.attachments, item.content)


def thread(history: Iterable[Transaction], people: People) -> list[Message]:
    """What the customer may read of the ticket, oldest first: its opening, the replies of
    both sides and the operator's updates."""
    return [message for item in history if (message := _message(item, people)) is not None]


def replies(history: Iterable[Transaction], people: People) -> list[Message]:
    """The support team's replies, oldest first."""
    return [message for message in thread(history, people)
            if message.kind == "reply" and message.side is Side.SUPPORT]


def _from_customer(item: Transaction, people: People) -> bool:
    """A message by the customer: a reply (email, RT's self-service) or a customer's
    comment that the operator posted."""
    who = side(item, people)
    if item.type in REPLY_TYPES:
        return who is Side.CUSTOMER
    return (item.type == "Comment" and who is Side.OPERATOR
            and _CUSTOMER_UPDATE.match(item.content) is not None)


def status(history: Iterable[Transaction]) -> str:
    """The status the history ends in (``new`` before any change)."""
    changes = [item for item in history if item.type == "Status"]
    return changes[-1].new_value.lower() if changes else "new"


def pauses(history: Iterable[Transaction], people: People) -> tuple[Pause, ...]:
    """The intervals in which the case waited on the customer; the last without end while it
    still waits."""
    found: list[Pause] = []
    since: datetime.datetime | None = None
    for item in history:
        if item.type == "Status":
            new = item.new_value.lower()
            if new == WAITING_STATUS and since is None \
                    and side(item, people) is not Side.CUSTOMER:
                since = item.created
            elif new != WAITING_STATUS and since is not None:
                found.append(Pause(since, max(item.created, since)))
                since = None
        elif since is not None and _from_customer(item, people):
            found.append(Pause(since, max(item.created, since)))
            since = None
    if since is not None:
        found.append(Pause(since))
    return tuple(found)


@dataclasses.dataclass(frozen=True)
class _Run:
    closing: Transaction
    reopening: Transaction | None = None
    #: RT reopened the ticket on a reply of the support team's.
    on_support_reply: bool = False


def _closed_runs(history: Iterable[Transaction], people: People) -> list[_Run]:
    """The closed intervals, oldest first, without the reopenings that do not count."""
    runs: list[_Run] = []
    closing: Transaction | None = None
    replied = False  # the last message was a reply of the support team's
    for item in history:
        if item.type in REPLY_TYPES:
            replied = side(item, people) is Side.SUPPORT
        if item.type != "Status":
            continue
        closed = item.new_value.lower() in CLOSED_STATUSES
        if closed and closing is None:
            last = runs[-1] if runs else None
            if last is not None and last.on_support_reply and last.reopening is not None \
                    and item.created - last.reopening.created <= REOPEN_GRACE:
                closing = runs.pop().closing  # closed again at once: no reopening
            else:
                closing = item
        elif not closed and closing is not None:
            runs.append(_Run(closing, item, replied and side(item, people) is Side.SYSTEM))
            closing = None
    if closing is not None:
        runs.append(_Run(closing))
    return runs


def closed_intervals(history: Iterable[Transaction], people: People) -> tuple[Pause, ...]:
    """The intervals in which the ticket was resolved or rejected, each ended by its
    reopening; the last without end while the ticket stays closed. A change from one closed
    status to the other (resolved, then rejected) continues the interval, and so does RT's
    reopening on a support reply that is closed again within REOPEN_GRACE."""
    return tuple(Pause(run.closing.created, None if run.reopening is None
                       else max(run.reopening.created, run.closing.created))
                 for run in _closed_runs(history, people))


@dataclasses.dataclass(frozen=True)
class Closure:
    """How the ticket is closed now."""

    #: ``resolved`` or ``rejected``: the status the history ends in.
    status: str
    #: When the ticket was closed, and by whom (the start of the closed interval).
    at: datetime.datetime
    by: str


def closure(history: Sequence[Transaction], people: People) -> Closure | None:
    """The ticket's closure while it is resolved or rejected, else None."""
    runs = _closed_runs(history, people)
    if not runs or runs[-1].reopening is not None:
        return None
    return Closure(status(history), runs[-1].closing.created, runs[-1].closing.creator)


@dataclasses.dataclass(frozen=True)
class Rejection:
    at: datetime.datetime
    #: Who rejected the ticket.
    by: str
    #: The support team's reply written with the rejection, on one line and cut at
    #: REASON_LIMIT characters; empty when there is none.
    reason: str
    #: The id of that reply, or None.
    reply_id: str | None = None


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= REASON_LIMIT else line[:REASON_LIMIT - 1].rstrip() + "…"


def rejection(history: Sequence[Transaction], people: People) -> Rejection | None:
    """The rejection, while the ticket is rejected."""
    changes = [n for n, item in enumerate(history) if item.type == "Status"]
    if not changes or history[changes[-1]].new_value.lower() != "rejected":
        return None
    change = history[changes[-1]]
    said = [n for n, item in enumerate(history)
            if item.type in REPLY_TYPES and side(item, people) is Side.SUPPORT
            and abs(item.created - change.created) <= REASON_WINDOW]
    before = [n for n in said if n < changes[-1]]
    after = [n for n in said if n > changes[-1]]
    chosen = before[-1] if before else after[0] if after else None
    if chosen is None:
        return Rejection(change.created, change.creator, "")
    reply = history[chosen]
    return Rejection(change.created, change.creator, _one_line(reply.content), reply.id)


def rca_delivery(history: Iterable[Transaction], people: People) -> Message | None:
    """The first support reply that delivers the root-cause analysis, or None."""
    return next((reply for reply in replies(history, people)
                 if rca.marks_delivery(reply.subject, reply.text, reply.attachments)), None)


def waits_on(history: Sequence[Transaction], people: People) -> WaitsOn:
    if status(history) in CLOSED_STATUSES:
        return WaitsOn.NOBODY
    waits = pauses(history, people)
    if waits and waits[-1].end is None:
        return WaitsOn.CUSTOMER
    said = [message for message in thread(history, people) if message.kind != "update"
            or _CUSTOMER_UPDATE.match(message.text)]
    if said and said[-1].side is Side.SUPPORT:
        return WaitsOn.CUSTOMER
    return WaitsOn.SUPPORT


@dataclasses.dataclass(frozen=True)
class Summary:
    """Everything the case takes from its ticket's history."""

    #: The status the history ends in.
    status: str
    #: The support team's replies, oldest first.
    replies: tuple[Message, ...]
    waits_on: WaitsOn
    #: Waits on the customer (stalled), for the SLA clocks.
    pauses: tuple[Pause, ...]
    #: Resolved or rejected intervals; those with an end were reopened.
    closed: tuple[Pause, ...]
    #: How the ticket is closed now, or None while it is open.
    closure: Closure | None
    rejection: Rejection | None
    rca_delivery: Message | None

    @property
    def reply_count(self) -> int:
        return len(self.replies)

    @property
    def last_reply(self) -> Message | None:
        return self.replies[-1] if self.replies else None

    @property
    def reopened(self) -> int:
        return sum(1 for interval in self.closed if interval.end is not None)


def summarize(history: Iterable[Transaction], people: People) -> Summary:
    """``history`` oldest first, as ``Portal.history`` returns it."""
    items = list(history)
    return Summary(status=status(items), replies=tuple(replies(items, people)),
                   waits_on=waits_on(items, people), pauses=pauses(items, people),
                   closed=closed_intervals(items, people), closure=closure(items, people),
                   rejection=rejection(items, people),
                   rca_delivery=rca_delivery(items, people))
