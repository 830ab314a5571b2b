"""Send each case to the support team, track its ticket, post its updates.

Every side effect has an identity derived from the case and is recorded in the case's status
(``status.submission``) by the SupportCase controller's one write path:
- a ticket carries ``[fluxsupport:<uid>]`` in its subject and is looked up before one is
  created, so a crash between creating it and writing status links it instead of filing twice;
- an email's Message-ID (from the uid) is stored before it is sent, so it goes at most once;
- an update opens with ``[fluxsupport-update:<id>]`` and the ticket's history is read for it
  before it is posted; an update the portal refuses is tried again after a backoff recorded
  in status (``updateFailures``), never in a loop.
Tracking is one batched query per sync interval for all tickets updated since the last one
whose records were all stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from fluxsupport import constants, failpoints, lifecycle
from fluxsupport.channels import mail, portal, portals
from fluxsupport.controllers import scheduler
from fluxsupport.domain import (
    caseescalation,
    conditions,
    conversation,
    escalation,
    ticketrecord,
    ticketsla,
)
from fluxsupport.domain import policy as policy_module
from fluxsupport.domain import submission as domain
from fluxsupport.kube import api, secrets
from fluxsupport.observability import metrics

logger = logging.getLogger(__name__)

#: Seconds before each try to record how an email send ended.
EMAIL_END_RETRY_S = (0.0, 0.5, 1.0, 2.0, 4.0)
#: The fields of status.submission that record failed attempts to post updates.
UPDATE_FAILURE_FIELDS = ("updateFailures", "lastUpdateAttemptAt", "updateError",
                         "updatePermanent")
#: Seconds the sync looks back beyond its previous start: tickets updated while it ran.
SYNC_OVERLAP_S = 60
#: How long Secret values are reused before they are read again (a rotated token).
SECRET_TTL_S = 300


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _rfc(moment: datetime.datetime) -> str:
    return conditions.rfc3339(moment)


#: A case, by namespace and name.
CaseKey = tuple[str, str]


class Case(Protocol):
    """What the channels read of a case: the case controller's snapshot of it."""

    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def uid(self) -> str: ...
    @property
    def generation(self) -> int: ...
    @property
    def created(self) -> datetime.datetime: ...
    @property
    def annotations(self) -> Mapping[str, str]: ...
    @property
    def spec(self) -> dict[str, Any]: ...
    @property
    def status(self) -> dict[str, Any]: ...


class Cases(Protocol):
    """What the submission controller needs of the case controller: the cases, a word after
    each stored status, and the one write path of status.submission."""

    def get(self, key: CaseKey) -> Case | None: ...
    def items(self) -> Sequence[tuple[CaseKey, Case]]: ...
    def subscribe(self, listener: Callable[[CaseKey], None]) -> None: ...
    async def record_submission(self, key: CaseKey, submission: Mapping[str, Any],
                                expect: Mapping[str, Any] | None = None) -> bool: ...


@dataclasses.dataclass
class _Held:
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    users: int = 0


class SubmissionController:
    def __init__(self, cases: Cases, channels: policy_module.Channels,
                 client: api.KubeClient, namespace: str, gate: asyncio.Event | None = None,
                 listed: asyncio.Event | None = None,
                 diagnostics: Callable[[], dict[str, Any]] | None = None,
                 policy: policy_module.Policy | None = None) -> None:
        self.cases = cases
        #: The escalation tiers, whose ticket comments and emails this controller sends;
        #: None: none.
        self.escalation = policy.escalation if policy is not None and \
            policy.escalation is not None and policy.escalation.enabled else None
        #: Whether the sync records the reply that delivered the RCA. Support's latest
        #: reply, which the not-progressing tier reads, is in the conversation the sync
        #: always records (domain/ticketrecord.py).
        self.rca = policy is not None and policy.root_cause_analysis is not None
        #: What runs in the cluster now, for the message of a new ticket or email.
        self.diagnostics = diagnostics
        self.channels = channels
        self.client = client
        self.namespace = namespace
        self.gate = gate
        #: Set once the case watch has listed every case: the first sync waits for it, or it
        #: would skip the tickets of cases not listed yet.
        self.listed = listed
        self.scheduler = scheduler.Scheduler(self._act, concurrency=4, gate=gate,
                                             kind="Submission")
        self.last_sync = 0.0
        self._portal: portal.Portal | None = None
        self._token = ""
        self._secret: tuple[float, dict[str, str]] | None = None
        #: A lock per case while someone holds or awaits it (see _locked).
        self._locks: dict[CaseKey, _Held] = {}
        #: Cases whose next portal attempt skips its backoff (the portal is back).
        self._now_keys: set[CaseKey] = set()
        #: Emails this process sent whose end is not recorded yet: when they went.
        self._sent: dict[CaseKey, str] = {}
        #: Per ticket the sync recorded: its case's uid and LastUpdated when read. Entries of
        #: cases that are gone are dropped at each sync.
        self._seen: dict[str, tuple[str, datetime.datetime | None]] = {}
        self._tasks = lifecycle.Tasks()
        cases.subscribe(self.consider)

    async def start(self) -> None:
        self._tasks.spawn(self.scheduler.run(), name="submission-scheduler")
        self._tasks.spawn(self.run_sync(), name="portal-sync")

    async def stop(self) -> None:
        await self._tasks.cancel()
        await self.close()

    # -- deciding ---------------------------------------------------------------------------

    def consider(self, key: CaseKey) -> None:
        """After a stored status: schedule what the case needs next from the channels."""
        case = self.cases.get(key)
        if case is None or not self.channels.enabled:
            return
        status = case.status
        submission = status.get("submission") or {}
        level = int(status.get("level") or 0)
        if not level:  # an invalid spec: nothing to send until it is fixed
            return
        now = _now()
        step = domain.plan(submission, level, self.channels, self._closed(status), now)
        if step.action is not domain.Action.NONE:
            self.scheduler.schedule(key, (step.at or now).timestamp())
        elif self._updates(case, submission) or self._sla(case, submission):
            due = (domain.update_due(submission, now) or now).timestamp()
            if submission.get("updateFailures"):
                # A ticket that refuses its updates waits for its backoff, and behind the
                # cases waiting to be submitted: it never holds the slots they need.
                self.scheduler.schedule_low(key, due)
            else:
                self.scheduler.schedule(key, due)
        elif any(field in submission for field in UPDATE_FAILURE_FIELDS):
            # Nothing is left to post (the comment was removed): clear the failure.
            self.scheduler.schedule(key, now.timestamp())
        elif (email_due := self._tier_email_due(case)) is not None:
            self.scheduler.schedule(key, email_due)

    @staticmethod
    def _closed(status: Mapping[str, Any]) -> bool:
        return bool(status.get("closure"))

    def pending(self, now: float) -> Iterator[tuple[CaseKey, float]]:
        """The cases that have reached no channel, with the seconds since their creation (a
        metric); none while every channel is off."""
        if not self.channels.enabled:
            return
        for key, case in self.cases.items():
            status = case.status
            if not domain.delivered(status.get("submission") or {}) and not self._closed(status):
                yield key, max(0.0, now - case.created.timestamp())

    # -- acting -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _locked(self, key: CaseKey) -> AsyncIterator[None]:
        """One action per case at a time. The lock lives while in use only: a map of every
        case ever seen would grow for the life of the process."""
        held = self._locks.setdefault(key, _Held())
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if not held.users:
                del self._locks[key]

    async def _act(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        async with self._locked(key):
            case = self.cases.get(key)
            if case is None:  # deleted: nothing of it is kept
                self._now_keys.discard(key)
                self._sent.pop(key, None)
                self.scheduler.cancel(key)
                return
            status = case.status
            submission = dict(status.get("submission") or {})
            level = int(status.get("level") or 0)
            if not level:
                return
            # The portal answers again: no need to wait out the backoff (a create in doubt
            # is still waited for).
            hurry = key in self._now_keys
            self._now_keys.discard(key)
            step = domain.plan(submission, level, self.channels, self._closed(status), _now(),
                               backoff=not hurry)
            done = True
            if step.action is domain.Action.PORTAL and step.at is None:
                await self._via_portal(key, case, submission, level)
            elif step.action is domain.Action.EMAIL and step.at is None:
                await self._via_email(key, case, submission, level)
            elif step.action is domain.Action.SETTLE_EMAIL and step.at is None:
                await self._settle_email(key, submission)
            elif step.at is not None:
                self.scheduler.schedule(key, step.at.timestamp())
            else:
                done = await self._post_updates(key, case, submission, hurry=hurry)
                if done:
                    await self._email_tiers(key)
            if done:
                self.scheduler.succeeded(key)

    def _message(self, case: Case, level: int) -> domain.Message:
        diagnostics = self.diagnostics() if self.diagnostics else None
        return domain.render(uid=case.uid, namespace=case.namespace, name=case.name,
                             cluster=self.channels.cluster, level=level, spec=case.spec,
                             diagnostics=diagnostics)

    def _active(self) -> bool:
        """Whether this replica leads (no gate: it runs alone)."""
        return self.gate is None or self.gate.is_set()

    async def _via_portal(self, key: CaseKey, case: Case,
                          submission: dict[str, Any], level: int) -> None:
        """Link the case's ticket, or create it. The attempt to create is recorded first,
        only if status.submission is still what this decision was made from (a write with
        the resourceVersion as precondition): of two replicas during a takeover one creates
        the ticket, and the other sees the attempt and waits for it (plan,
        create_settled_at) instead of creating a second one."""
        now = _now()
        stored = dict(submission)  # what status.submission holds: each write expects it
        creating = False
        try:
            helpdesk = await self._helpdesk()
            ticket = await helpdesk.find(domain.tag(case.uid))
            outcome = "linked"
            settled = domain.create_settled_at(submission, self.channels)
            if ticket is None and settled is not None and settled > now:
                self.scheduler.schedule(key, settled.timestamp())  # an earlier create may land
                return
            if ticket is None:
                message = self._message(case, level)
                contact = (case.spec.get("contact") or {}).get("email", "")
                requestor = contact if mail.plain_address(contact) else \
                    self.channels.email.sender
                began = _now()
                attempt = {**submission, "createAttemptAt": domain.precise(began)}
                attempt.pop("createUncertain", None)  # this find shows no ticket was made
                if not await self.cases.record_submission(key, attempt, expect=stored):
                    logger.info("SupportCase %s/%s: not creating a ticket: the case changed "
                                "since (another replica, or a write that failed)", *key)
                    return
                # As the API server stored it: the next write expects exactly that.
                recorded = self.cases.get(key)
                assert recorded is not None  # stored just now, with no await since
                stored = dict(recorded.status.get("submission") or {})
                submission = dict(stored)
                failpoints.reach("before-ticket-create", key)
                if not self._active() or not domain.may_create(began, _now(), self.channels):
                    # Paused or taken over meanwhile: whoever acts now waits for this
                    # attempt to settle, then looks for the ticket again.
                    logger.warning("SupportCase %s/%s: not creating the ticket: the attempt "
                                   "recorded at %s is too old or this replica stands by",
                                   *key, attempt["createAttemptAt"])
                    return
                creating = True
                ticket = await helpdesk.create(portal.NewTicket(
                    message.subject, message.body, requestor))
                outcome = "submitted"
                failpoints.reach("after-ticket-create", key)
        except portal.PortalError as error:
            if not error.transient:
                self._secret = None  # a fixed Secret takes effect at the next attempt
            metrics.SUBMISSIONS.labels(channel="portal", outcome="failed").inc()
            submission.setdefault("firstAttemptAt", _rfc(now))
            submission.update(attempts=int(submission.get("attempts") or 0) + 1,
                              lastAttemptAt=_rfc(now), lastError=str(error)[:1024],
                              permanent=not error.transient)
            if creating and error.uncertain:
                # The portal may have made the ticket: no email, no second create, until a
                # find shows whether it exists (Submitted=Unknown, TicketUncertain).
                submission["createUncertain"] = True
            elif creating:
                submission.pop("createAttemptAt", None)
                submission.pop("createUncertain", None)
            logger.warning("SupportCase %s/%s: portal attempt %s failed%s: %s", *key,
                           submission["attempts"],
                           " (the ticket may exist)" if submission.get("createUncertain")
                           else "", error)
            await self.cases.record_submission(key, submission, expect=stored)
            return
        submission.setdefault("firstAttemptAt", _rfc(now))
        submission.update(channel="portal", ticketId=ticket.id, url=ticket.url,
                          submittedAt=_rfc(now), ticketStatus=ticket.status, level=level,
                          attempts=int(submission.get("attempts") or 0) + 1,
                          lastAttemptAt=_rfc(now))
        for field in ("permanent", "lastError", "createAttemptAt", "createUncertain"):
            submission.pop(field, None)
        # Not stored (another replica linked it first, or the write failed): the ticket is
        # found by its tag at the next attempt or sync.
        if await self.cases.record_submission(key, submission, expect=stored):
            self._count(case, "portal", outcome, now)
            logger.info("SupportCase %s/%s: %s ticket %s", *key, outcome, ticket.id)

    async def _via_email(self, key: CaseKey, case: Case,
                         submission: dict[str, Any], level: int) -> None:
        config = self.channels.email
        now = _now()
        stored = dict(submission)
        message_id = domain.message_id(case.uid)
        # The whole message first: a value the email library refuses is an error to show,
        # not an email recorded as sent that never went.
        try:
            mail_message = mail.build(config, self._message(case, level), case.uid,
                                      (case.spec.get("contact") or {}).get("email", ""))
        except (ValueError, TypeError) as error:
            submission.setdefault("firstAttemptAt", _rfc(now))
            submission.update(emailAttempts=int(submission.get("emailAttempts") or 0) + 1,
                              lastEmailAttemptAt=_rfc(now),
                              lastError=f"email: the message could not be built: {error}"[:1024])
            logger.error("SupportCase %s/%s: the email could not be built: %s", *key, error)
            await self.cases.record_submission(key, submission, expect=stored)
            return
        intent = {**submission, "channel": "email", "messageId": message_id, "level": level,
                  "lastEmailAttemptAt": _rfc(now)}
        # The intent next: once stored, this email is never sent again, whatever happens.
        if not await self.cases.record_submission(key, intent, expect=stored):
            logger.info("SupportCase %s/%s: not sending the email: the case changed since "
                        "(another replica, or a write that failed)", *key)
            return
        submission = intent
        failpoints.reach("before-email-send", key)
        try:
            secret = await self._secret_data(optional=True)
            await mail.send(config, mail_message, secret.get("smtp-username"),
                            secret.get("smtp-password"))
        except (mail.EmailError, portal.PortalError) as error:
            metrics.SUBMISSIONS.labels(channel="email", outcome="failed").inc()
            if isinstance(error, mail.EmailError) and error.uncertain:
                # The server may have the message: keep the Message-ID, never send it again.
                logger.warning("SupportCase %s/%s: the email may or may not have arrived, "
                               "it is not sent again: %s", *key, error)
                await self._record_email_end(key, message_id, {
                    "lastError": f"email: {error}"[:1024]})
                return
            # Refused before the message was accepted: nothing went out, try again later.
            logger.warning("SupportCase %s/%s: email failed: %s", *key, error)
            await self._record_email_end(key, message_id, {
                "messageId": None, "channel": None, "firstAttemptAt": _rfc(now),
                "emailAttempts": int(submission.get("emailAttempts") or 0) + 1,
                "lastEmailAttemptAt": _rfc(now), "lastError": f"email: {error}"[:1024]})
            return
        failpoints.reach("after-email-send", key)
        self._sent[key] = _rfc(now)
        if await self._record_email_end(key, message_id, {"submittedAt": _rfc(now)}):
            self._count(case, "email", "submitted", now)
            logger.info("SupportCase %s/%s: sent by email to %s", *key, config.to)
        else:
            logger.warning("SupportCase %s/%s: the email went out but the status write "
                           "failed; it is written again", *key)

    async def _record_email_end(self, key: CaseKey, message_id: str,
                                end: Mapping[str, Any]) -> bool:
        """Record how the send of ``message_id`` ended: ``end``'s fields on the latest
        record (None removes one; ``firstAttemptAt`` only where there is none). Retried (a
        conflict with a write of the case meanwhile, an API server blip), so that Submitted
        does not stay Unknown; if it still fails, the SETTLE_EMAIL step records a sent email
        later from ``_sent``."""
        for delay in EMAIL_END_RETRY_S:
            await asyncio.sleep(delay)
            case = self.cases.get(key)
            if case is None:
                self._sent.pop(key, None)
                return False
            current = dict(case.status.get("submission") or {})
            if current.get("messageId") != message_id or current.get("submittedAt"):
                self._sent.pop(key, None)  # recorded already, or not this email's record
                return False
            record = {**current, **end}
            if current.get("firstAttemptAt"):
                record["firstAttemptAt"] = current["firstAttemptAt"]
            record = {field: value for field, value in record.items() if value is not None}
            if await self.cases.record_submission(key, record, expect=current):
                self._sent.pop(key, None)
                return True
        return False

    async def _settle_email(self, key: CaseKey, submission: dict[str, Any]) -> None:
        """An email recorded as being sent, longer than a send can take: if this process
        sent it, record that (its status write failed); else the operator stopped during
        the send, and the email may or may not have gone out (it is not sent again)."""
        message_id = str(submission.get("messageId") or "")
        sent = self._sent.get(key)
        if sent is not None:
            await self._record_email_end(key, message_id, {"submittedAt": sent})
            return
        logger.warning("SupportCase %s/%s: the email %s was being sent when the operator "
                       "stopped; it may have arrived and is not sent again", *key, message_id)
        await self._record_email_end(key, message_id, {"lastError": domain.EMAIL_STOPPED})

    @staticmethod
    def _count(case: Case, channel: str, outcome: str, now: datetime.datetime) -> None:
        metrics.SUBMISSIONS.labels(channel=channel, outcome=outcome).inc()
        metrics.SUBMISSION_LATENCY.labels(channel=channel).observe(
            max(0.0, (now - case.created).total_seconds()))

    # -- updates ----------------------------------------------------------------------------

    def _updates(self, case: Case, submission: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Updates the ticket has not had yet: a severity change and new comments."""
        if not submission.get("ticketId") or not self.channels.portal.enabled:
            return []
        posted = set(submission.get("updates") or [])
        status = case.status
        wanted = []
        level = int(status.get("level") or 0)
        told = submission.get("level")
        if told and level and level != told:
            note = str((status.get("firstResponse") or {}).get("recalculation") or "")
            wanted.append(domain.severity_update(level, case.generation, note))
        comments = domain.comment_updates(case.annotations, f"{constants.GROUP}/")
        wanted += [(update_id, f"Comment from the customer:\n\n{text}")
                   for update_id, text in comments.items()]
        if self.escalation is not None and self.escalation.comment_on_ticket:
            wanted += caseescalation.tier_comments(status)
        return [(update_id, text) for update_id, text in wanted if update_id not in posted]

    async def _post_updates(self, key: CaseKey, case: Case,
                            submission: dict[str, Any], *, hurry: bool = False) -> bool:
        """Post what the ticket lacks; False when not even the outcome could be stored. A
        failure is recorded in status (updateFailures, updateError) and its backoff waited
        out (unless ``hurry``: the portal is back): a deleted ticket or a portal that
        refuses is not asked in a loop."""
        todo = self._updates(case, submission)
        sla = self._sla(case, submission)
        if todo or sla:
            due = domain.update_due(submission, _now())
            if due is not None and not hurry:
                self.scheduler.schedule_low(key, due.timestamp())
                return True
            await self._post(key, case, submission, todo, sla)
        elif any(field in submission for field in UPDATE_FAILURE_FIELDS):
            for field in UPDATE_FAILURE_FIELDS:  # nothing is left to post (comment removed)
                submission.pop(field, None)
        else:
            return True
        if submission.get("updates"):
            submission["updates"] = submission["updates"][-256:]
        if await self.cases.record_submission(key, submission):
            return True
        if self.cases.get(key) is not None:
            self.scheduler.retry(key)  # the record is lost, so is its backoff: keep one here
        return False

    def _sla(self, case: Case, submission: Mapping[str, Any]) -> portal.SlaFields | None:
        """The ticket's Priority and Due (domain/ticketsla.py) when they differ from what it
        was given last (status.submission.sla): after the submission, a severity change, a
        wait that holds or moves a clock, the first response."""
        if not submission.get("ticketId") or not self.channels.portal.enabled:
            return None
        wanted = ticketsla.from_status(case.status)
        if wanted is None or submission.get("sla") == ticketsla.as_record(wanted):
            return None
        return wanted

    async def _post(self, key: CaseKey, case: Case, submission: dict[str, Any],
                    todo: list[tuple[str, str]], sla: portal.SlaFields | None = None) -> None:
        """Post ``todo`` to the ticket unless its history has them, and give it ``sla``
        (written only where the ticket differs); the outcome goes into ``submission``: the
        ids posted and the fields given, or the failure."""
        ticket = str(submission["ticketId"])
        now = _now()
        try:
            helpdesk = await self._helpdesk()
            history = await helpdesk.history(ticket) if todo else []
            for update_id, text in todo:
                if not domain.posted(history, update_id):
                    failpoints.reach("before-update-post", key)
                    await helpdesk.comment(ticket, domain.update_text(update_id, text))
                    failpoints.reach("after-update-post", key)
                submission["updates"] = [*(submission.get("updates") or []), update_id]
                if update_id.startswith("level-"):
                    submission["level"] = int(case.status.get("level") or 0)
            if sla is not None:
                await helpdesk.set_sla(ticket, sla)
                submission["sla"] = ticketsla.as_record(sla)
        except portal.PortalError as error:
            if not error.transient:
                self._secret = None  # a fixed Secret takes effect at the next attempt
            failures = int(submission.get("updateFailures") or 0) + 1
            submission.update(updateFailures=failures, lastUpdateAttemptAt=_rfc(now),
                              updateError=str(error)[:1024], updatePermanent=not error.transient)
            logger.warning("SupportCase %s/%s: posting an update to ticket %s failed (%d in a "
                           "row): %s", *key, ticket, failures, error)
            return
        for field in UPDATE_FAILURE_FIELDS:
            submission.pop(field, None)

    # -- escalation emails -----------------------------------------------------------------

    def _tier_emails(self, case: Case) -> list[escalation.TierEmail]:
        if not self.channels.email.enabled:
            return []
        return caseescalation.tier_emails(self.escalation, uid=case.uid,
                                          namespace=case.namespace, name=case.name,
                                          cluster=self.channels.cluster, status=case.status)

    def _tier_email_due(self, case: Case) -> float | None:
        """When the next tier email of ``case`` is due (now, or after a refusal's backoff);
        None: none is owed."""
        return min(((notice.retry_at or _now()).timestamp()
                    for notice in self._tier_emails(case)), default=None)

    async def _email_tiers(self, key: CaseKey) -> None:
        """Email the contacts of each tier reached, at most once: the intent (the tier and
        its Message-ID) is stored in status.submission.escalationEmails before each send. A
        send the SMTP server refused (nothing went out) is recorded with its backoff
        (``retryAt``) and tried again then, as the case's own email; a tier whose record
        says sent, or perhaps sent, is never sent again."""
        case = self.cases.get(key)
        for notice in self._tier_emails(case) if case is not None else ():
            now = _now()
            if notice.retry_at is not None and notice.retry_at > now:
                self.scheduler.schedule(key, notice.retry_at.timestamp())
                continue
            case = self.cases.get(key)
            if case is None:
                return
            stored = dict(case.status.get("submission") or {})
            entries = [entry for entry in stored.get("escalationEmails") or []
                       if not isinstance(entry, Mapping) or entry.get("tier") != notice.tier]
            try:
                message = mail.build_notice(self.channels.email, notice.subject, notice.body,
                                            notice.message_id, notice.recipients)
            except (ValueError, TypeError) as error:
                logger.error("SupportCase %s/%s: the tier %d email could not be built: %s",
                             *key, notice.tier, error)
                return
            intent = notice.intent(now)
            if not await self.cases.record_submission(
                    key, {**stored, "escalationEmails": sorted(
                        [*entries, intent], key=lambda entry: int(entry.get("tier") or 0))},
                    expect=stored):
                logger.info("SupportCase %s/%s: not sending the tier %d email: the case "
                            "changed since", *key, notice.tier)
                return
            failpoints.reach("before-escalation-email-send", key)
            end: dict[str, Any]
            try:
                secret = await self._secret_data(optional=True)
                await mail.send(self.channels.email, message, secret.get("smtp-username"),
                                secret.get("smtp-password"), recipients=notice.recipients)
            except (mail.EmailError, portal.PortalError) as error:
                if isinstance(error, mail.EmailError) and error.uncertain:
                    logger.warning("SupportCase %s/%s: the tier %d email may or may not have "
                                   "arrived; it is not sent again: %s", *key, notice.tier,
                                   error)
                    end = {"error": f"email: {error}"[:1024]}
                else:
                    # Refused before the server took the message: nothing went out.
                    refused_at = _now()
                    end = notice.refused(f"email: {error}", refused_at)
                    logger.warning("SupportCase %s/%s: the tier %d email failed (%d in a "
                                   "row), tried again at %s: %s", *key, notice.tier,
                                   end["attempts"], end["retryAt"], error)
                    self.scheduler.schedule(key, notice.next_try(refused_at).timestamp())
            else:
                end = {"sentAt": _rfc(_now())}
                logger.info("SupportCase %s/%s: tier %d escalation emailed to %s", *key,
                            notice.tier, ", ".join(notice.recipients))
            await self._record_tier_email_end(key, notice.tier, end)

    async def _record_tier_email_end(self, key: CaseKey, tier: int,
                                     end: Mapping[str, Any]) -> None:
        for delay in EMAIL_END_RETRY_S:
            await asyncio.sleep(delay)
            case = self.cases.get(key)
            if case is None:
                return
            current = dict(case.status.get("submission") or {})
            entries = [dict(entry) for entry in current.get("escalationEmails") or []]
            for entry in entries:
                if entry.get("tier") == tier:
                    entry.update(end)
            if await self.cases.record_submission(
                    key, {**current, "escalationEmails": entries}, expect=current):
                return

    # -- tracking ---------------------------------------------------------------------------

    async def run_sync(self) -> None:
        """One batched query per interval for the tickets of our cases updated since the
        last complete sync; their first replies and resolutions go into the cases' status."""
        if not self.channels.portal.enabled:
            return
        if self.listed is not None:
            await self.listed.wait()
        since: datetime.datetime | None = None
        failing = False
        while True:
            if self.gate is not None:
                await self.gate.wait()
            started = _now()
            try:
                complete = await self.sync_once(since)
            except Exception as error:  # the next interval tries again; the loop never dies
                if not failing:  # once per outage, not once per interval
                    logger.warning("portal sync failed (retrying every %s s): %s",
                                   self.channels.portal.sync_interval, error,
                                   exc_info=not isinstance(error, portal.PortalError))
                failing = True
            else:
                if complete:
                    # Only past what is stored: a ticket whose record failed (a conflict, an
                    # API server blip) is read again by the next sync, not skipped for ever.
                    since = started - datetime.timedelta(seconds=SYNC_OVERLAP_S)
                    self.last_sync = started.timestamp()
                if failing:
                    logger.info("portal sync works again")
                    self._retry_waiting_now()
                failing = False
            await asyncio.sleep(self.channels.portal.sync_interval)

    def _retry_waiting_now(self) -> None:
        """The portal answers again: cases waiting out a backoff go now, submissions and
        updates alike."""
        for key, case in self.cases.items():
            record = case.status.get("submission") or {}
            if (record.get("attempts") and not domain.delivered(record)) or (
                    record.get("updateFailures") and (self._updates(case, record)
                                                      or self._sla(case, record))):
                self._now_keys.add(key)
                self.scheduler.schedule(key, time.time())

    async def sync_once(self, since: datetime.datetime | None) -> bool:
        """Read the tickets updated since ``since`` into their cases; True when every one
        of a known case is stored."""
        helpdesk = await self._helpdesk()
        tickets = await helpdesk.updated_since(domain.TAG_PREFIX, since)
        by_uid = {case.uid: key for key, case in self.cases.items()}
        own = await helpdesk.whoami()
        complete = True
        for ticket in tickets:
            uid = domain.uid_in(ticket.subject) or ""
            key = by_uid.get(uid)
            # No case: another cluster's, or one deleted. The overlap of consecutive syncs
            # returns tickets already read: skip those unchanged since (RT serves one
            # request at a time; each history costs two).
            if key is None or (ticket.last_updated is not None
                               and self._seen.get(ticket.id) == (uid, ticket.last_updated)):
                continue
            async with self._locked(key):
                case = self.cases.get(key)
                if case is None or case.uid != uid:
                    continue
                if await self._track(key, case, ticket, helpdesk, own):
                    self._seen[ticket.id] = (uid, ticket.last_updated)
                elif self.cases.get(key) is not None:
                    complete = False
                    logger.warning("SupportCase %s/%s: could not store what ticket %s says; "
                                   "the next sync reads it again", *key, ticket.id)
        for ticket_id in [t for t, (uid, _) in self._seen.items() if uid not in by_uid]:
            del self._seen[ticket_id]
        return complete

    async def _track(self, key: CaseKey, case: Case, ticket: portal.Ticket,
                     helpdesk: portal.Portal, own: str) -> bool:
        """Store what the ticket says about the case; True once stored (or nothing new)."""
        old = dict(case.status.get("submission") or {})
        new = dict(old)
        now = _now()
        linked = not new.get("ticketId")
        if linked:
            # The ticket of a crash before its status write, or one RT made from our email.
            new.update(ticketId=ticket.id, url=ticket.url)
            new.setdefault("channel", "portal")
            new.setdefault("submittedAt", _rfc(now))
            new.setdefault("level", int(case.status.get("level") or 0) or 4)
        new["ticketStatus"] = ticket.status
        # The whole history, whenever the ticket changed: the waits, the conversation, a
        # reopening or a rejection are derived from all of it (domain/ticketrecord.py).
        history = await helpdesk.history(ticket.id)
        if not new.get("firstReply"):
            not_replies = [own, *ticket.requestors, self.channels.email.sender]
            reply = domain.first_reply(history, not_replies)
            if reply is not None:
                new["firstReply"] = {"at": _rfc(reply.at), "by": reply.by}
        people = conversation.People.of(
            own, [*ticket.requestors, *ticket.ccs, self.channels.email.sender])
        found = ticketrecord.record(history, people)
        for field in ticketrecord.OWNED:
            new.pop(field, None)
        if ticketrecord.reopened(history, people) or ticket.status == "rejected":
            new.pop("resolvedAt", None)  # the case is open again (or dismissed)
            new.pop("resolvedBy", None)
        if "resolvedAt" in found:
            new.pop("resolvedBy", None)
        elif ticket.status in domain.RESOLVED_STATUSES and not new.get("resolvedAt"):
            # No change of status the operator's user may see.
            new["resolvedAt"] = _rfc(ticket.last_updated or now)
        new.update(found)
        if self.rca:
            new.update(caseescalation.ticket_facts(history, people))
        if new == old:
            return True
        if not await self.cases.record_submission(key, new):
            return False
        if linked:
            metrics.SUBMISSIONS.labels(channel=str(new["channel"]), outcome="linked").inc()
            logger.info("SupportCase %s/%s: linked to ticket %s", *key, ticket.id)
        return True

    # -- credentials ------------------------------------------------------------------------

    async def _secret_data(self, *, optional: bool = False) -> dict[str, str]:
        """The channels' Secret (read with the operator's identity; the chart grants this one
        Secret by name), reused for SECRET_TTL_S. ``optional``: no Secret means no SMTP
        authentication (an internal relay), not an error."""
        if self._secret is not None and time.time() - self._secret[0] < SECRET_TTL_S:
            return self._secret[1]
        name = self.channels.secret_name
        try:
            data = await secrets.read(self.client, self.namespace, name)
        except api.ApiError as error:
            if optional and error.status in (403, 404):
                return {}
            hint = {404: f"create it: kubectl -n {self.namespace} create secret generic "
                         f"{name} --from-literal=portal-token=...",
                    403: "the operator may not read it: the chart grants it by name "
                         "(channels.secretName); check the Role"}.get(error.status, "")
            raise portal.PortalError(
                f"Secret {self.namespace}/{name}: {error}" + (f"; {hint}" if hint else ""),
                transient=error.status not in (403, 404)) from error
        except api.TRANSPORT_ERRORS as error:
            raise portal.PortalError(f"reading Secret {self.namespace}/{name}: {error}") \
                from error
        self._secret = (time.time(), data)
        return data

    async def _helpdesk(self) -> portal.Portal:
        """The portal client, made again when the Secret's token changes (a rotation, or the
        fix after a refusal) without a restart."""
        token = (await self._secret_data()).get("portal-token", "").strip()
        if not token:
            self._secret = None  # read it again next time: it may be fixed by then
            raise portal.PortalError(
                f"Secret {self.namespace}/{self.channels.secret_name} has no key "
                "portal-token", transient=False)
        if self._portal is None or self._token != token:
            if self._portal is not None:
                await self._portal.close()
            self._portal = portals.connect(self.channels.portal, token)
            self._token = token
        return self._portal

    async def close(self) -> None:
        if self._portal is not None:
            await self._portal.close()
