"""Reconcile SecurityBulletins against the live inventory and the OpenVEX ConfigMaps.

The controller's own watch (kube/reflector.py, as for every kind) feeds ``on_event``; a
bulletin is re-checked when it changes, when the running components it concerns, an OpenVEX
ConfigMap or a bulletin whose fixes may count for it (the rebuild rule) change, and at its
embargoUntil, patchBy and the vendor's remediation due times. domain/securitybulletin.py
computes the status, Events and metric values; this module decides what to re-check and when,
and writes. It also emails the escalation contacts of a tier the bulletin reached
(channels/notices.py), at most once per tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import itertools
import logging
import time
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import pydantic

from fluxsupport import constants, failpoints, lifecycle
from fluxsupport.channels import mail, notices
from fluxsupport.controllers import scheduler, writes
from fluxsupport.domain import bulletin, conditions, evaluation, remediation, securitybulletin
from fluxsupport.domain import inventory as inventory_module
from fluxsupport.domain import policy as policy_module
from fluxsupport.kube import api, events, objects, reflector
from fluxsupport.sources import inventory as inventory_source
from fluxsupport.sources import vexdocuments

logger = logging.getLogger(__name__)


#: How long re-checks caused by another bulletin's arrival wait, so that a burst of arrivals
#: (a restart lists them all) re-checks each bulletin once rather than once per arrival.
COALESCE_S = 1.0
#: Bulletins per list request when the operator starts or lists again.
PAGE_SIZE = 500
#: How long the bulletins' first list waits for the inventory's and the ConfigMaps' first.
FIRST_LISTS_S = 30.0
#: Waits before each try to record how an escalation email ended, when the status changed
#: under the write (the intent is recorded already: the email is never sent twice).
EMAIL_END_RETRY_S = (0.0, 1.0, 5.0)


@dataclasses.dataclass
class BulletinSnapshot:
    name: str
    uid: str
    resource_version: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]
    #: The validated spec, or why it is invalid: carried over to the next snapshot while the
    #: spec stays the same, so that a status echo or a label edit is not validated again.
    parsed: bulletin.BulletinSpec | pydantic.ValidationError | None = dataclasses.field(
        default=None, repr=False)

    def validated(self) -> bulletin.BulletinSpec | pydantic.ValidationError:
        if self.parsed is None:
            try:
                self.parsed = bulletin.BulletinSpec.model_validate(self.spec)
            except pydantic.ValidationError as error:
                self.parsed = error
        return self.parsed

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> BulletinSnapshot:
        metadata = body.get("metadata") or {}
        return cls(metadata["name"], metadata.get("uid", ""),
                   metadata.get("resourceVersion", ""), int(metadata.get("generation") or 0),
                   dict(body.get("spec") or {}), dict(body.get("status") or {}))

    @property
    def ref(self) -> api.ObjectRef:
        return objects.BULLETINS.ref(self.name, uid=self.uid)


def _by_component(components: list[inventory_module.RunningComponent]
                  ) -> dict[str, tuple[inventory_module.RunningComponent, ...]]:
    grouped: dict[str, list[inventory_module.RunningComponent]] = {}
    for component in components:
        grouped.setdefault(component.component, []).append(component)
    return {name: tuple(items) for name, items in grouped.items()}


def too_large(error: api.ApiError) -> bool:
    """The write would make the object exceed the size limit: etcd's 1.5 MiB by default,
    reported as a 500 "etcdserver: request is too large", or the API server's 413."""
    return error.status == 413 or "request is too large" in str(error)


#: Fields of status.components[] that name the component and its verdict. The others (what
#: runs, the reason, the per-CVE verdicts, the remediation, the message) are its details.
VERDICT_FIELDS = ("namespace", "name", "component", "verdict")


def details_only(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether ``desired`` differs from ``current`` only in the details of its components:
    the same components with the same verdicts, and the counts and conditions as they are."""
    def verdicts(status: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return [tuple(item.get(key) for key in VERDICT_FIELDS)
                for item in status.get("components") or []]

    others = {key for key in current if key != writes.PENDING} | set(desired)
    return (current.get("components") != desired.get("components")
            and verdicts(current) == verdicts(desired)
            and all(current.get(key) == desired.get(key) for key in others - {"components"}))


class EmbargoedError(Exception):
    """Stands for an error in the reconcile of a bulletin under embargo, in its Ready
    condition and the log: the error's text may quote the bulletin. Only its type is kept."""

    def __init__(self, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}; the details are withheld while the "
                         "bulletin is under embargo")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class BulletinController:
    def __init__(self, client: api.KubeClient, inventory: inventory_source.Inventory,
                 configmaps: reflector.Watch, operator_namespace: str,
                 gate: asyncio.Event | None = None,
                 poster: events.EventPoster | None = None,
                 clock: remediation.Clock | None = None,
                 escalation: policy_module.Escalation | None = None,
                 notifier: notices.Notices | None = None) -> None:
        self.client = client
        self.inventory = inventory
        #: The vendor's remediation clock of the policy; None when it names no framework.
        self.clock = clock
        #: The policy's escalation tiers (tier 3 needs the clock too) and who emails their
        #: contacts; None: no tiers, no emails.
        self.escalation = escalation
        self.notifier = notifier if notifier is not None and notifier.enabled else None
        self.configmaps = configmaps
        self.operator_namespace = operator_namespace
        self.scheduler = scheduler.Scheduler(self._scheduled, gate=gate,
                                             kind=constants.BULLETIN_KIND,
                                             on_error=self._report_error)
        # Nothing kept: every field is computed again, so a spec that became invalid leaves
        # no verdicts, counts or metrics of the spec before.
        self.writer = writes.StatusWriter(client, poster or events.EventPoster(client),
                                          self.scheduler, constants.BULLETIN_KIND, logger)
        self.bulletins: dict[str, BulletinSnapshot] = {}
        self.views: dict[str, securitybulletin.BulletinMetrics] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: Bulletins whose status write waits for the writes that change a verdict.
        self._deferred: set[str] = set()
        #: Bulletins whose inputs (inventory, VEX, other bulletins) changed since their last
        #: evaluation started. One that changes during an evaluation is evaluated again.
        self._requested: set[str] = set()
        #: Bulletins so large (a spec near the size limit) that the full status was refused:
        #: they get a compact one, until their spec changes.
        self._oversized: set[str] = set()
        #: The fix digests of every valid bulletin (the rebuild rule), in the order of
        #: ``bulletins``, and per component the valid bulletins that concern it: updated one
        #: spec at a time, since a thousand bulletins arrive one by one at start-up.
        self._fixes = bulletin.FixIndex()
        self._concerned_by: dict[str, set[str]] = {}
        #: Each bulletin's place in ``bulletins``, which orders the FixIndex as it orders
        #: the dict: given when a name enters it, kept while it stays.
        self._positions: dict[str, int] = {}
        self._next_position = itertools.count()
        #: The OpenVEX documents bulletins cite, parsed once per text.
        self._vex = vexdocuments.VexDocuments(configmaps, operator_namespace)
        #: Inventory problems and running components by name, as of the last notification.
        self._inventory_seen: tuple[tuple[str, ...],
                                    dict[str, tuple[inventory_module.RunningComponent, ...]]
                                    ] | None = None
        inventory.subscribe(self.inventory_changed)
        #: Every SecurityBulletin, handed to on_event (the watch itself keeps names only).
        self.watch = objects.Objects(client, objects.BULLETINS).watch(
            lambda: None, on_event=self.on_event, page_size=PAGE_SIZE)
        self._tasks = lifecycle.Tasks()

    async def start(self) -> None:
        self._tasks.spawn(self.scheduler.run(), name="bulletin-scheduler")
        self._tasks.spawn(self._watch(), name="bulletin-watch")

    async def stop(self) -> None:
        await self._tasks.cancel()

    async def _watch(self) -> None:
        """Verdicts computed from a half-listed inventory would flap, and post Events: the
        bulletins are listed once the inventory and the OpenVEX ConfigMaps are (or
        FIRST_LISTS_S later, when one of them cannot list)."""
        synced = [*(watch.synced for watch in self.inventory.watches), self.configmaps.synced]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in synced)),
                                   FIRST_LISTS_S)
        await self.watch.run()

    def on_event(self, kind: str, body: Mapping[str, Any]) -> None:
        """A watch event. A changed bulletin is reconciled through the scheduler, as a case
        is: on a standby replica (the gate closed) once it takes over."""
        if kind == "DELETED":
            self.forget((body.get("metadata") or {})["name"])
            return
        name, changed = self.observe(body)
        if changed:
            self._reconcile_soon({name})

    def observe(self, body: Mapping[str, Any]) -> tuple[str, bool]:
        """Keep the newest body; say whether it is news (not the echo of our own write)."""
        snapshot = BulletinSnapshot.from_body(body)
        held = self.bulletins.get(snapshot.name)
        if held is not None and held.uid == snapshot.uid and (
                held.resource_version == snapshot.resource_version
                or not writes.newer_or_equal(snapshot.resource_version, held.resource_version)):
            return snapshot.name, False
        self.bulletins[snapshot.name] = snapshot
        if held is None:
            self._positions[snapshot.name] = next(self._next_position)
        if held is None or held.spec != snapshot.spec:
            self._oversized.discard(snapshot.name)
            self._index(snapshot, held)
            # Verdicts depend on other bulletins (later rebuilds): re-check those that concern
            # a component this bulletin lists (or listed) the running build of.
            rebuilt = self._rebuilt_components(snapshot)
            if held is not None:
                rebuilt |= self._rebuilt_components(held)
            self._reconcile_soon({snapshot.name})
            # Coalesced: a thousand bulletins listed at a start would each re-check all the
            # others, a thousand times over.
            self._reconcile_soon(self._concerning(rebuilt) - {snapshot.name},
                                 COALESCE_S)
        else:
            snapshot.parsed = held.parsed
        return snapshot.name, True

    def forget(self, name: str) -> None:
        held = self.bulletins.pop(name, None)
        if held is not None:
            self._index(None, held)
        self._positions.pop(name, None)
        self.views.pop(name, None)
        self._locks.pop(name, None)
        self._requested.discard(name)
        self._deferred.discard(name)
        self._oversized.discard(name)
        self.scheduler.cancel(name)
        self.writer.forget(name)
        if held is not None:
            self._reconcile_soon(self._concerning(self._rebuilt_components(held)))

    def reconcile_all_soon(self) -> None:
        """Re-check every bulletin (an OpenVEX ConfigMap changed, for one)."""
        self._vex.prune()
        self._reconcile_soon(self.bulletins)

    def inventory_changed(self) -> None:
        """Re-check the bulletins that concern a component whose running builds changed: a
        Pod event must not re-evaluate a thousand bulletins about other components. All of
        them when what every status shows changed: a watch that cannot list (Ready), or no
        Flux component found or found again (Compliant)."""
        problems = tuple(self.inventory.problems())
        running = _by_component(self.inventory.components())
        before, self._inventory_seen = self._inventory_seen, (problems, running)
        if before is None or before[0] != problems or bool(before[1]) != bool(running):
            self.reconcile_all_soon()
            return
        changed = {name for name in before[1].keys() | running.keys()
                   if before[1].get(name) != running.get(name)}
        self._reconcile_soon(self._concerning(changed))

    def _reconcile_soon(self, names: Iterable[str], delay: float = 0.0) -> None:
        now = time.time() + delay
        for name in names:
            self._requested.add(name)
            self.scheduler.schedule(name, now)

    def _rebuilt_components(self, snapshot: BulletinSnapshot) -> set[str]:
        """The components whose running digest the bulletin lists as a fix: only for those
        can it make another bulletin's verdict RebuiltIn. A digest that does not run changes
        no verdict; once it runs, inventory_changed re-checks that component's bulletins.
        A bulletin under embargo changes none either (the rebuild rule leaves it out): at
        the lift, _reconcile re-checks those bulletins."""
        spec = snapshot.validated()
        if isinstance(spec, pydantic.ValidationError) or spec.embargoed(_now()):
            return set()
        running = {(c.component, digest) for c in self.inventory.components()
                   for digest in c.digests}
        return {fix.component for fix in spec.fixes for image in fix.images
                if (fix.component, image.digest) in running}

    def _concerning(self, components: Iterable[str]) -> set[str]:
        return {name for component in components
                for name in self._concerned_by.get(component, ())}

    def _index(self, new: BulletinSnapshot | None, old: BulletinSnapshot | None) -> None:
        """Replace ``old``'s spec by ``new``'s in the shared indexes. An invalid spec has no
        verdicts, so nothing to depend on or to be depended on: it is in neither."""
        for snapshot, adding in ((old, False), (new, True)):
            spec = snapshot.validated() if snapshot is not None else None
            if snapshot is None or not isinstance(spec, bulletin.BulletinSpec):
                continue
            for component in bulletin.concerned_components(spec):
                names = self._concerned_by.setdefault(component, set())
                if adding:
                    names.add(snapshot.name)
                else:
                    names.discard(snapshot.name)
            if adding:
                self._fixes.add(bulletin.Bulletin(snapshot.name, spec),
                                self._positions[snapshot.name])
            else:
                self._fixes.remove(snapshot.name)

    async def _scheduled(self, key: Hashable) -> None:
        assert isinstance(key, str)
        await self._locked(key)

    async def reconcile(self, name: str) -> None:
        """Reconcile now, as a scheduled instant would; a failure is retried like one."""
        try:
            await self._locked(name)
        except Exception as error:  # retried with backoff and shown in Ready
            await self.scheduler.failed(name, error)

    async def _locked(self, name: str) -> None:
        async with self._locks.setdefault(name, asyncio.Lock()):
            try:
                await self._reconcile(name)
            except Exception as error:
                # The scheduler logs the error with its traceback, which may quote the spec.
                snapshot = self.bulletins.get(name)
                if snapshot is not None and self._embargoed(snapshot, _now()):
                    raise EmbargoedError(error) from None
                raise

    async def _report_error(self, key: Hashable, error: Exception) -> None:
        assert isinstance(key, str)
        async with self._locks.setdefault(key, asyncio.Lock()):
            snapshot = self.bulletins.get(key)
            if snapshot is None:
                return
            if self._embargoed(snapshot, _now()) and not isinstance(error, EmbargoedError):
                error = EmbargoedError(error)
            result = await self.writer.write_error(key, snapshot.ref, snapshot.status,
                                                   snapshot.resource_version,
                                                   snapshot.generation, error)
            if result.outcome is writes.Outcome.WRITTEN:
                self._stored(snapshot, result)

    @staticmethod
    def _embargoed(snapshot: BulletinSnapshot, now: datetime.datetime) -> bool:
        return securitybulletin.under_embargo(snapshot.spec, snapshot.validated(), now)

    @staticmethod
    def _stored(snapshot: BulletinSnapshot, result: writes.Result) -> None:
        snapshot.status = result.status or {}
        snapshot.resource_version = result.resource_version or snapshot.resource_version

    async def _reconcile(self, name: str) -> None:
        snapshot = self.bulletins.get(name)
        if snapshot is None:
            self.writer.forget(name)
            return
        self._requested.discard(name)  # this evaluation sees every change made so far
        now = _now()
        evaluated = self._evaluate(snapshot, now)
        desired = evaluated.status
        if snapshot.status.get("embargoed") and desired.get("embargoed") is False:
            # The lift: from now on the rebuild rule counts this bulletin for the others.
            self._reconcile_soon(self._concerning(self._rebuilt_components(snapshot)) - {name})
        if evaluated.metrics is not None:
            self.views[name] = evaluated.metrics
        else:
            # An invalid spec: no verdicts, so no metrics of the spec before either.
            self.views.pop(name, None)
        if (name not in self._deferred and not evaluated.events
                and details_only(snapshot.status, desired)):
            # No verdict changed, only what runs and why (digest, reason, per-CVE verdicts):
            # an image change rewrites every bulletin about that component (a thousand
            # bulletins: a hundred writes), and the writes that change a verdict, which the
            # counts, the conditions and the alerts follow, go first. Low instants start
            # once no ordinary one is due or running; that run writes whatever it finds.
            self._deferred.add(name)
            self.scheduler.schedule_low(name, time.time())
            return
        self._deferred.discard(name)
        result = await self.writer.write(name, snapshot.ref, snapshot.status, desired,
                                         snapshot.resource_version, evaluated.events, now=now,
                                         refused=lambda error: self._too_large(name, error))
        if result.outcome is writes.Outcome.GONE:
            self.forget(name)
            return
        if result.outcome in (writes.Outcome.FAILED, writes.Outcome.HANDLED):
            return
        if result.outcome is writes.Outcome.WRITTEN:
            self._stored(snapshot, result)
            logger.debug("SecurityBulletin %s: status written", name)
        email_retry = await self._email_tiers(snapshot, now)
        if name in self._requested:
            # An input changed while the status write was in flight: the evaluation above may
            # have missed it (a bulletin published meanwhile, a new image). replace() would
            # drop the request reconcile_all_soon() queued; evaluate again instead.
            self.scheduler.schedule(name, time.time())
        else:
            when = min(filter(None, (evaluated.next_transition, email_retry)), default=None)
            self.scheduler.replace(name, when.timestamp() if when else None)
        self.writer.clear_later(name)

    async def _email_tiers(self, snapshot: BulletinSnapshot, now: datetime.datetime
                           ) -> datetime.datetime | None:
        """Email the contacts of each tier the stored status records, at most once: the
        intent goes into status.escalation.emails by a write that carries the resourceVersion
        read (of two replicas only one records it) before each send. A send the SMTP server
        refused (nothing went out) is recorded with its backoff and tried again then; a tier
        whose record says sent, or perhaps sent, is never sent again. Returns when the next
        refused send is due."""
        if self.notifier is None:
            return None
        retry: datetime.datetime | None = None
        for notice in securitybulletin.tier_emails(
                self.escalation, uid=snapshot.uid, name=snapshot.name,
                cluster=self.notifier.cluster, status=snapshot.status,
                embargoed=self._embargoed(snapshot, now)):
            if notice.retry_at is not None and notice.retry_at > now:
                retry = min(filter(None, (retry, notice.retry_at)))
                continue
            try:
                message = self.notifier.build(notice.subject, notice.body, notice.message_id,
                                              notice.recipients)
            except (ValueError, TypeError) as error:
                logger.error("SecurityBulletin %s: the tier %d email could not be built: %s",
                             snapshot.name, notice.tier, error)
                continue
            intent = notice.intent(now)
            if not await self._record_email(snapshot, intent, expect_unchanged=True):
                logger.info("SecurityBulletin %s: not sending the tier %d email: the status "
                            "changed since; the next reconcile decides", snapshot.name,
                            notice.tier)
                return None
            failpoints.reach("before-escalation-email-send", (snapshot.name,))
            end: dict[str, Any]
            try:
                await self.notifier.send(message, notice.recipients)
            except mail.EmailError as error:
                if error.uncertain:
                    logger.warning("SecurityBulletin %s: the tier %d email may or may not have "
                                   "arrived; it is not sent again: %s", snapshot.name,
                                   notice.tier, error)
                    end = {"error": f"email: {error}"[:1024]}
                else:
                    # Refused before the server took the message: nothing went out.
                    refused_at = _now()
                    end = notice.refused(f"email: {error}", refused_at)
                    logger.warning("SecurityBulletin %s: the tier %d email failed (%d in a "
                                   "row), tried again at %s: %s", snapshot.name, notice.tier,
                                   end["attempts"], end["retryAt"], error)
                    retry = min(filter(None, (retry, notice.next_try(refused_at))))
            else:
                end = {"sentAt": conditions.rfc3339(_now())}
                logger.info("SecurityBulletin %s: tier %d escalation emailed to %s",
                            snapshot.name, notice.tier, ", ".join(notice.recipients))
            for delay in EMAIL_END_RETRY_S:
                await asyncio.sleep(delay)
                if await self._record_email(snapshot, {**intent, **end}):
                    break
        return retry

    async def _record_email(self, snapshot: BulletinSnapshot, entry: Mapping[str, Any],
                            expect_unchanged: bool = False) -> bool:
        """Store ``entry`` as the record of its tier in status.escalation.emails; True once
        stored. The write carries the resourceVersion of the status it changes: refused
        (409) when another replica wrote since."""
        held = self.bulletins.get(snapshot.name)
        if held is not snapshot and expect_unchanged:
            return False
        current = (held or snapshot).status
        block = dict(current.get("escalation") or {})
        emails = [dict(item) for item in block.get("emails") or []
                  if isinstance(item, Mapping) and item.get("tier") != entry["tier"]]
        block["emails"] = sorted([*emails, dict(entry)], key=lambda item: int(item["tier"]))
        desired = {key: value for key, value in current.items() if key != writes.PENDING}
        desired["escalation"] = block
        target = held or snapshot
        result = await self.writer.write(snapshot.name, target.ref, current, desired,
                                         target.resource_version, now=_now())
        if result.outcome is not writes.Outcome.WRITTEN:
            return False
        self._stored(target, result)
        return True

    def _too_large(self, name: str, error: api.ApiError) -> bool:
        """Retried as is, a status too large to store would fail for ever and the bulletin
        would never get a condition: write a compact status instead, at once."""
        if not too_large(error) or name in self._oversized:
            return False
        logger.warning("SecurityBulletin %s: the full status does not fit (%s); "
                       "writing it without per-CVE details", name, error)
        self._oversized.add(name)
        self.scheduler.schedule(name, time.time())
        return True

    def _evaluate(self, snapshot: BulletinSnapshot, now: datetime.datetime
                  ) -> evaluation.Evaluation[securitybulletin.BulletinMetrics]:
        """What to write: the domain's evaluation of the bulletin against what the
        inventory and the OpenVEX ConfigMaps hold now."""
        spec = snapshot.validated()
        cited = securitybulletin.CitedVex()
        if isinstance(spec, bulletin.BulletinSpec):
            cited = self._vex.read(spec.vex)
        return securitybulletin.evaluate(
            name=snapshot.name, spec=snapshot.spec, validated=spec,
            generation=snapshot.generation, previous=snapshot.status,
            components=self.inventory.components(), inventory_problems=self.inventory.problems(),
            namespaces=self.inventory.namespaces, fixes=self._fixes, cited=cited,
            compact=snapshot.name in self._oversized, now=now, clock=self.clock,
            escalation_settings=self.escalation)
