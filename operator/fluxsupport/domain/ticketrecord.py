"""What the portal's sync records in status.submission from a ticket's whole history.

domain/conversation.py reads the history; this module turns its summary into the fields of
status.submission that the case's evaluation reads (domain/supportcase.py): the waits on the
customer (``pauses``), the closed-then-reopened intervals (``reopenings``), the rejection
(``rejected``), the resolution (``resolvedAt``, ``resolvedBy``) and the conversation. Every field
is derived from the whole history, so the same history gives the same record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fluxsupport.domain import conditions, conversation, pause
from fluxsupport.domain.submission import Transaction

#: Support replies whose ids the record keeps (each gives one Event; the count covers all).
KEPT_REPLIES = 32
#: Intervals kept per list (the CRD's maxItems); the oldest go first.
KEPT_INTERVALS = 64
#: Fields this module owns in status.submission: set when the history has them, else removed.
OWNED = ("pauses", "reopenings", "rejected", "conversation")
#: What opens the operator's comment that carries a customer's comment.
_CUSTOMER_COMMENT = "[fluxsupport-update:comment-"


def _interval(wait: pause.Pause) -> dict[str, str]:
    entry = {"start": conditions.rfc3339(wait.start)}
    if wait.end is not None:
        entry["end"] = conditions.rfc3339(wait.end)
    return entry


def _conversation(summary: conversation.Summary,
                  thread: Sequence[conversation.Message]) -> dict[str, Any]:
    said: dict[str, Any] = {"supportReplies": summary.reply_count,
                            "waitingOn": summary.waits_on.value}
    last = summary.last_reply
    if last is not None:
        said["lastSupportReplyAt"] = conditions.rfc3339(last.at)
        said["lastSupportReplyBy"] = last.author[:256]
    customer = [message.at for message in thread if message.side is conversation.Side.CUSTOMER
                and (message.kind != "update"
                     or message.text.lstrip().startswith(_CUSTOMER_COMMENT))]
    if customer:
        said["lastCustomerMessageAt"] = conditions.rfc3339(max(customer))
    if summary.rca_delivery is not None:
        said["rcaDeliveredAt"] = conditions.rfc3339(summary.rca_delivery.at)
        said["rcaDeliveredBy"] = summary.rca_delivery.author[:256]
    said["replies"] = [{"id": reply.id[:64], "at": conditions.rfc3339(reply.at),
                        "by": reply.author[:256]}
                       for reply in summary.replies[-KEPT_REPLIES:]]
    return said


def record(history: Sequence[Transaction], people: conversation.People) -> dict[str, Any]:
    """The fields of :data:`OWNED` that ``history`` gives (absent ones are to be removed),
    and ``resolvedAt``/``resolvedBy`` while the ticket is resolved."""
    summary = conversation.summarize(history, people)
    fields: dict[str, Any] = {
        "conversation": _conversation(summary, conversation.thread(history, people))}
    if summary.pauses:
        fields["pauses"] = [_interval(wait) for wait in summary.pauses[-KEPT_INTERVALS:]]
    reopened = [interval for interval in summary.closed if interval.end is not None]
    if reopened:
        fields["reopenings"] = [_interval(gap) for gap in reopened[-KEPT_INTERVALS:]]
    if summary.rejection is not None:
        rejected = {"at": conditions.rfc3339(summary.rejection.at),
                    "by": summary.rejection.by[:256]}
        if summary.rejection.reason:
            rejected["reason"] = summary.rejection.reason
        fields["rejected"] = rejected
    if summary.closure is not None and summary.closure.status == "resolved":
        fields["resolvedAt"] = conditions.rfc3339(summary.closure.at)
        if summary.closure.by:
            fields["resolvedBy"] = summary.closure.by[:256]
    return fields


def reopened(history: Sequence[Transaction], people: conversation.People) -> bool:
    """The history has the ticket open again after its last closure (resolvedAt is to go)."""
    runs = conversation.closed_intervals(history, people)
    return bool(runs) and runs[-1].end is not None
