"""How a case reaches the support team, as pure functions of the case, its status and now.

The ticket's identity comes from the case's uid: its subject carries ``[fluxsupport:<uid>]``
and its email a Message-ID made from the uid. A crash between creating a ticket and writing
status is then repaired by finding the ticket, never by filing it again.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
from collections.abc import Iterable, Mapping
from typing import Any

from fluxsupport.domain import conditions
from fluxsupport.domain.policy import LEVEL_NAMES, Channels

TAG_PREFIX = "fluxsupport:"
_TAG = re.compile(r"\[fluxsupport:([0-9a-fA-F-]{1,64})\]")
#: RT's own user: its scrips (the autoreply to the requestor) are never a reply.
SYSTEM_USERS = frozenset({"RT_System"})
#: History types that carry a reply to the requestor. RT records its autoreply as an
#: EmailRecord by RT_System, and the ticket's opening as Create: neither is a response.
REPLY_TYPES = frozenset({"Correspond"})
#: Helpdesk statuses that mean the problem is solved.
RESOLVED_STATUSES = frozenset({"resolved"})
#: Seconds between portal attempts: doubling from the first, at most the last.
RETRY_S = (5, 10, 20, 40, 80, 160, 300)
#: Annotation key prefix of a comment for the ticket (``case comment``); the rest is its id.
COMMENT_PREFIX = "comment-"
#: A new ticket is created only this many portal timeouts after an earlier create began: the
#: earlier request may be sent up to one timeout after it began (see may_create), takes up to
#: one more, and the third covers the helpdesk's own processing and clock skew between
#: replicas. Until then a ticket that request made may still appear.
CREATE_SETTLE_TIMEOUTS = 3
#: Seconds after the email timeout before an email still being sent is taken for one that
#: a stopped operator left behind.
EMAIL_SETTLE_S = 30
#: status.submission.lastError of an email whose sending the operator did not see end.
EMAIL_STOPPED = "email: the operator stopped while sending it"
#: Reasons of the Submitted condition that post an Event when the case enters them.
EVENT_REASONS = frozenset({"Submitted", "SubmittedByEmail", "Retrying", "Failed",
                           "TicketUncertain", "EmailUncertain"})

#: What may not be in a header value: C0 and C1 controls (line feed, vertical tab, the file
#: separators, NEL) and the Unicode line and paragraph separators, every character that
#: str.splitlines() breaks a line at. The CRD refuses them in the title and the contact
#: (its patterns exclude \p{Cc}, \p{Zl} and \p{Zp}: the same set).
HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
#: A bracketed ticket reference in someone else's words: an RT subject tag ``[rt.example.com
#: #42]`` (RT's mail gateway files the mail into ticket 42) or one of ours.
_FOREIGN_TAG = re.compile(r"\[([^\[\]]*(?:#\s*\d|fluxsupport)[^\[\]]*)\]", re.IGNORECASE)


def one_line(text: str) -> str:
    """``text`` as one header-safe line: each run of control characters and line breaks
    becomes one space (a title stored before the CRD refused them still goes out)."""
    return HEADER_UNSAFE.sub(" ", text).strip()


def neutral(text: str) -> str:
    """``text`` without ticket tags that would file it elsewhere: a bracketed reference to
    a ticket (``[rt.example.com #42]``, ``[fluxsupport:<uid>]``) gets parentheses instead,
    which RT's mail gateway and our own lookup by tag both ignore."""
    return _FOREIGN_TAG.sub(r"(\1)", text)


def subject_text(text: str) -> str:
    """User text for a subject line: one line, with no ticket tag."""
    return neutral(one_line(text))


def tag(uid: str) -> str:
    return f"[{TAG_PREFIX}{uid}]"


def uid_in(subject: str) -> str | None:
    match = _TAG.search(subject)
    return match.group(1) if match else None


def message_id(uid: str) -> str:
    return f"<case-{uid}@fluxsupport>"


def update_marker(update_id: str) -> str:
    return f"[fluxsupport-update:{update_id}]"


@dataclasses.dataclass(frozen=True)
class Transaction:
    """One entry of a ticket's history, as the reply classification needs it."""

    id: str
    #: The helpdesk's type: for RT Create, Correspond, Comment, EmailRecord, Status, ...
    type: str
    #: Login name (or email address) of who made it; RT_System for RT's own scrips.
    creator: str
    created: datetime.datetime
    #: The creator's email address, when the helpdesk knows it.
    creator_email: str = ""
    #: The text of the correspondence or comment, when the helpdesk gave it (may be cut).
    content: str = ""
    #: What a change set its field to: for an RT Status transaction, the new status.
    new_value: str = ""
    #: What the field was before the change: for an RT Status transaction, the old status.
    old_value: str = ""
    #: The subject line of a message (Create, Correspond, Comment), when the helpdesk keeps one.
    subject: str = ""
    #: File names of the message's attachments (never their content).
    attachments: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Message:
    subject: str
    body: str


def _line(label: str, value: Any) -> str:
    return f"{label}: {value}" if value not in (None, "") else ""


def render(*, uid: str, namespace: str, name: str, cluster: str, level: int,
           spec: Mapping[str, Any], diagnostics: Mapping[str, Any] | None) -> Message:
    """Subject and body of the submission: what the support team needs to start, and no
    more (the case's spec and the Flux inventory; never a bulletin, nor a Secret)."""
    impact = spec.get("impact") or {}
    contact = spec.get("contact") or {}
    subject = (f"{tag(uid)} Level {level} ({LEVEL_NAMES[level]}): "
               f"{subject_text(str(spec.get('title', '')))}")
    who = one_line(" ".join(part for part in (contact.get("name"), f"<{contact['email']}>"
                                              if contact.get("email") else "") if part))
    lines = [
        f"Level {level} ({LEVEL_NAMES[level]}) support case from the cluster "
        f"{cluster or '(unnamed)'}.",
        "",
        "Impact",
        _line("  Statement", impact.get("statement")),
        _line("  Environment", impact.get("environment")),
        _line("  Outage", impact.get("outage")),
        _line("  Business critical", "yes" if impact.get("businessCritical") else "no"),
        "",
        _line("Component", spec.get("component")),
        _line("Category", spec.get("category")),
        _line("Flux version (reported)", spec.get("fluxVersion")),
        _line("Contact", who),
    ]
    if spec.get("description"):
        lines += ["", "Description", str(spec["description"])]
    lines += ["", "Diagnostics"]
    if diagnostics:
        lines += [_line("  Kubernetes", diagnostics.get("kubernetesVersion")),
                  _line("  Flux", diagnostics.get("fluxVersion")),
                  _line("  Collected", diagnostics.get("collectedAt"))]
        for component in diagnostics.get("components") or []:
            digests = ", ".join(component.get("digests") or []) or "no digest"
            ready = "ready" if component.get("ready") else "not ready"
            lines.append(f"  - {component.get('namespace', '')}/{component.get('name', '')}: "
                         f"{component.get('image', '')} ({digests}; {ready})")
    else:
        lines.append("  not collected")
    lines += ["", "Case reference",
              f"  cluster={cluster or '(unnamed)'} namespace={namespace} name={name} uid={uid}",
              "  Reply to this ticket: the first reply is recorded as the case's first "
              "response."]
    return Message(subject, "\n".join(line for line in lines if line is not None) + "\n")


@dataclasses.dataclass(frozen=True)
class Reply:
    at: datetime.datetime
    by: str


def first_reply(history: Iterable[Transaction], not_replies: Iterable[str]) -> Reply | None:
    """The support team's first real reply: a correspondence by a person other than RT
    itself, the operator's own user and the requestors (``not_replies``, names or
    addresses). An automated acknowledgement does not count as a response."""
    excluded = {who.lower() for who in (*SYSTEM_USERS, *not_replies) if who}
    replies = [item for item in history if item.type in REPLY_TYPES
               and item.creator.lower() not in excluded
               and item.creator_email.lower() not in excluded]
    if not replies:
        return None
    earliest = min(replies, key=lambda item: item.created)
    return Reply(earliest.created, earliest.creator)


def resolution(history: Iterable[Transaction]) -> Reply | None:
    """The change that resolved the ticket (the latest one, if it was reopened in between):
    when the support team resolved it, not when the ticket last changed (a comment or a
    reply to a resolved ticket moves that)."""
    resolving = [item for item in history
                 if item.type == "Status" and item.new_value.lower() in RESOLVED_STATUSES]
    if not resolving:
        return None
    latest = resolving[-1]
    return Reply(latest.created, latest.creator)


def posted(history: Iterable[Transaction], update_id: str) -> bool:
    """Whether the ticket already has the update: its marker opens the text, so a helpdesk
    that returns only the start of long texts still shows it."""
    marker = update_marker(update_id)
    return any(marker in item.content for item in history)


def update_text(update_id: str, text: str) -> str:
    """The comment for an update: the marker first, where a cut text still has it."""
    return f"{update_marker(update_id)}\n\n{text}"


def retry_delay(failures: int) -> datetime.timedelta:
    """The wait after ``failures`` (at least 1) failed attempts in a row: RETRY_S."""
    return datetime.timedelta(seconds=RETRY_S[min(max(failures, 1), len(RETRY_S)) - 1])


def update_due(submission: Mapping[str, Any], now: datetime.datetime) -> datetime.datetime | None:
    """When to try posting a ticket's updates again after failed attempts (the same backoff
    as submissions: doubling from 5 s, at most every 5 minutes); None: now."""
    failures = int(submission.get("updateFailures") or 0)
    last = _time(submission.get("lastUpdateAttemptAt"))
    if not failures or last is None:
        return None
    at = last + retry_delay(failures)
    return at if at > now else None


def update_conditions(submission: Mapping[str, Any], channels: Channels,
                      now: datetime.datetime) -> list[conditions.Condition]:
    """``TicketUpdated`` while the case has a ticket in an enabled portal, else nothing."""
    condition = update_condition(submission, channels, now)
    return [] if condition is None else [condition]


def update_condition(submission: Mapping[str, Any], channels: Channels,
                     now: datetime.datetime) -> conditions.Condition | None:
    """The ``TicketUpdated`` condition while the case has a ticket in an enabled portal:
    whether its updates reach the ticket, and if not, why and when they are tried again."""
    ticket = submission.get("ticketId")
    if not ticket or not channels.portal.enabled:
        return None
    failures = int(submission.get("updateFailures") or 0)
    if not failures:
        return conditions.Condition(type="TicketUpdated", status="True", reason="UpToDate",
                                    message=f"Every update of the case is posted to ticket "
                                            f"{ticket}.")
    error = str(submission.get("updateError") or "")
    due = update_due(submission, now)
    when = f"next attempt at {conditions.rfc3339(due)}" if due else "next attempt now"
    text = (f"Posting an update to ticket {ticket} failed {failures} time"
            f"{'s' if failures > 1 else ''} in a row: {error}; {when}")
    if submission.get("updatePermanent"):
        return conditions.Condition(
            type="TicketUpdated", status="False", reason="Failed",
            message=f"{text}. The portal refused it in a way retrying does not fix: check that "
                    f"the ticket exists and that the operator's user may see and comment on it "
                    f"in its queue.")
    return conditions.Condition(type="TicketUpdated", status="False", reason="Retrying",
                                message=f"{text}.")


class Action(enum.Enum):
    NONE = "none"
    PORTAL = "portal"
    EMAIL = "email"
    #: An email is recorded as being sent and nothing says how that ended: record the end
    #: this process knows of, or that the operator stopped during the send.
    SETTLE_EMAIL = "settle-email"


@dataclasses.dataclass(frozen=True)
class Plan:
    action: Action
    #: When to act; None means now (or never, for NONE).
    at: datetime.datetime | None = None


def _time(value: Any) -> datetime.datetime | None:
    if not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else None


def precise(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with milliseconds: two attempts in one second are two values, so
    recording one is always a write (the write is what fences the other replicas)."""
    utc = moment.astimezone(datetime.UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="milliseconds") + "Z"


def delivered(submission: Mapping[str, Any]) -> bool:
    """Whether the case has reached a channel, or may have (an email whose sending a crash
    interrupted is never sent twice: its Message-ID is recorded before it goes)."""
    return bool(submission.get("ticketId") or submission.get("messageId"))


def create_settled_at(submission: Mapping[str, Any],
                      channels: Channels) -> datetime.datetime | None:
    """When a ticket that the last recorded create may have made would have appeared; None
    when no create is in doubt. Until then no new ticket is created, and no email is sent
    while any create is in doubt (RT's mail gateway would open a second ticket)."""
    began = _time(submission.get("createAttemptAt"))
    if began is None or submission.get("ticketId"):
        return None
    return began + datetime.timedelta(
        seconds=CREATE_SETTLE_TIMEOUTS * channels.portal.timeout)


def may_create(began: datetime.datetime, now: datetime.datetime, channels: Channels) -> bool:
    """Whether a create whose attempt was recorded at ``began`` may still be sent: within
    one portal timeout. A process paused longer (a frozen leader, a slow status write) may
    have been taken over by a replica that waited out create_settled_at and filed the
    ticket itself."""
    return now - began <= datetime.timedelta(seconds=channels.portal.timeout)


def plan(submission: Mapping[str, Any], level: int, channels: Channels, closed: bool,
         now: datetime.datetime, *, backoff: bool = True) -> Plan:
    """What to do next for a case that has not reached the support team yet. Without
    ``backoff`` (the portal answers again) a portal attempt is not delayed by the failures
    before, but still waits for a create in doubt."""
    if submission.get("messageId") and not submission.get("ticketId") \
            and not submission.get("submittedAt"):
        sending = _email_sending(submission)
        if sending is not None:
            ended = sending + datetime.timedelta(
                seconds=channels.email.timeout + EMAIL_SETTLE_S)
            return Plan(Action.SETTLE_EMAIL, ended if ended > now else None)
    if delivered(submission) or closed or not channels.enabled:
        return Plan(Action.NONE)
    email = _email_plan(submission)
    if not channels.portal.enabled:
        return email
    attempts = int(submission.get("attempts") or 0)
    first = _time(submission.get("firstAttemptAt"))
    fallback = channels.fallback
    settled = create_settled_at(submission, channels)
    may_email = channels.email.enabled and level in fallback.levels and settled is None
    if may_email and attempts and first and (
            attempts >= fallback.attempts
            or now - first >= datetime.timedelta(seconds=fallback.after)):
        return email
    last = _time(submission.get("lastAttemptAt"))
    at: datetime.datetime | None = None
    if backoff and attempts and last is not None:
        at = last + retry_delay(attempts)
        if may_email and first:
            # Wake for the fallback if it comes before the next portal attempt.
            at = min(at, first + datetime.timedelta(seconds=fallback.after))
    if settled is not None:
        at = max(at or settled, settled)
    return Plan(Action.PORTAL, at if at is not None and at > now else None)


def _email_sending(submission: Mapping[str, Any]) -> datetime.datetime | None:
    """When the email being sent was begun, if nothing says how that ended (no
    ``email:`` error); the epoch for a record older than that field."""
    if str(submission.get("lastError") or "").startswith("email: "):
        return None
    return _time(submission.get("lastEmailAttemptAt")) or datetime.datetime.fromtimestamp(
        0, datetime.UTC)


def _email_plan(submission: Mapping[str, Any]) -> Plan:
    """Send now, or after a backoff when the SMTP server refused the last try."""
    failures = int(submission.get("emailAttempts") or 0)
    last = _time(submission.get("lastEmailAttemptAt"))
    if not failures or last is None:
        return Plan(Action.EMAIL)
    return Plan(Action.EMAIL, last + retry_delay(failures))


def condition(submission: Mapping[str, Any], level: int, channels: Channels, closed: bool,
              now: datetime.datetime) -> conditions.Condition:
    """The ``Submitted`` condition: where the case went, or why it has not gone yet."""
    make = conditions.Condition
    ticket, url = submission.get("ticketId"), submission.get("url")
    where = f"ticket {ticket}" + (f" ({url})" if url else "")
    if submission.get("channel") == "email" and submission.get("messageId"):
        return _email_condition(submission, where)
    if ticket:
        return make(type="Submitted", status="True", reason="Submitted",
                    message=f"Submitted to the portal as {where} at "
                            f"{submission.get('submittedAt', '')}.")
    if not channels.enabled:
        return make(type="Submitted", status="False", reason="ChannelDisabled",
                    message="No support channel is enabled in the policy (channels.portal, "
                            "channels.email): nobody outside the cluster hears of this case. "
                            "Open a ticket in the support portal yourself, or enable a "
                            "channel.")
    if closed:
        return make(type="Submitted", status="False", reason="Closed",
                    message="The case was closed before it reached a channel; it is not sent.")
    attempts = int(submission.get("attempts") or 0) + int(submission.get("emailAttempts") or 0)
    if not attempts:
        return make(type="Submitted", status="False", reason="Pending",
                    message="Waiting to be submitted.")
    error = submission.get("lastError", "")
    next_plan = plan(submission, level, channels, closed, now)
    when = f" next at {conditions.rfc3339(next_plan.at)}" if next_plan.at else " next now"
    if submission.get("createUncertain") and create_settled_at(submission, channels):
        return make(type="Submitted", status="Unknown", reason="TicketUncertain",
                    message=f"The portal did not answer the request to create the ticket, "
                            f"begun at {submission.get('createAttemptAt')}: it may have made "
                            "the ticket. The case is sent neither by the portal nor by email "
                            "until the portal shows whether that ticket exists (last error: "
                            f"{error}; attempt {attempts},{when}). If the portal stays "
                            "unreachable, look for the case's tag in the portal, or open a "
                            "ticket by hand.")
    if submission.get("permanent"):
        return make(type="Submitted", status="False", reason="Failed",
                    message=f"The portal refused the case ({error}); fix the channel "
                            "configuration or its Secret. Attempts so far: "
                            f"{attempts}; it is retried every few minutes.")
    fallback = ""
    if channels.email.enabled and level in channels.fallback.levels:
        rule = channels.fallback
        fallback = (f" Level {level} may go by email after {rule.attempts} attempts or "
                    f"{rule.after} s.")
    return make(type="Submitted", status="False", reason="Retrying",
                message=f"Attempt {attempts} to reach the support team failed: {error};"
                        f"{when}.{fallback}")


def _email_condition(submission: Mapping[str, Any], where: str) -> conditions.Condition:
    """Sent, being sent, or perhaps sent (never sent twice: the Message-ID is recorded
    before the message goes)."""
    message_id = submission["messageId"]
    sent = submission.get("submittedAt")
    ticket = submission.get("ticketId")
    error = str(submission.get("lastError") or "")
    made = f" The portal made {where} from it." if ticket else ""
    portal = (f"; the portal could not be reached: {error}"
              if error and not error.startswith("email: ") else "")
    if sent or ticket:  # a ticket made from the email shows that it arrived
        text = (f"Sent by email at {sent} with Message-ID {message_id}" if sent else
                f"The email with Message-ID {message_id} arrived")
        return conditions.Condition(type="Submitted", status="True",
                                    reason="SubmittedByEmail",
                                    message=f"{text}{portal}.{made}")
    if not error.startswith("email: "):
        begun = submission.get("lastEmailAttemptAt") or "an unrecorded time"
        return conditions.Condition(
            type="Submitted", status="Unknown", reason="SendingEmail",
            message=f"Sending the email with Message-ID {message_id}, begun at {begun}"
                    f"{portal}. It is sent at most once.")
    why = ("the operator stopped" if error == EMAIL_STOPPED else
           f"the connection failed while the server took it ({error[7:]})")
    return conditions.Condition(
        type="Submitted", status="Unknown", reason="EmailUncertain",
        message=f"An email with Message-ID {message_id} was being sent when {why}: "
                "it may have arrived. It is not sent again (at most once), so check the "
                "support mailbox, or open a ticket by hand if no ticket appears.")


def comment_updates(annotations: Mapping[str, str], prefix: str) -> dict[str, str]:
    """Comments for the ticket, by id, from the ``<prefix>comment-<id>`` annotations."""
    start = prefix + COMMENT_PREFIX
    return {key[len(prefix):]: value for key, value in sorted(annotations.items())
            if key.startswith(start) and value.strip()}


def severity_update(level: int, generation: int, note: str) -> tuple[str, str]:
    return (f"level-{level}-g{generation}",
            note or f"Severity changed to Level {level} ({LEVEL_NAMES[level]}).")
