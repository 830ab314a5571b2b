"""The one status write path of both controllers: patch, retry, instrument, owe Events.

A reconcile computes the whole desired status and the Events its transitions call for. The
Events enter the status as an outbox (``status.pendingEvents``) in the same write that records
the transitions, then go to the poster (kube/events.py). A posted Event leaves the outbox with
the object's next write, or with a low-priority write CLEAR_DELAY_S later: a wave of breaches
never waits for it. A process killed at any point leaves either no transition (the write did
not land) or a transition with its Events still owed, which its successor posts under the same
names: exactly once.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import logging
import time
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from typing import Any

from fluxsupport.controllers.scheduler import Scheduler
from fluxsupport.domain import conditions
from fluxsupport.kube import api
from fluxsupport.kube.events import EventPoster, PendingEvent
from fluxsupport.observability import metrics

#: The status field of the outbox.
PENDING = "pendingEvents"
#: Entries an outbox holds at most (the CRDs' maxItems); older ones are dropped, counted.
MAX_OUTBOX = 64
#: How long a posted Event may stay in the outbox before a write of its own clears it: long
#: enough that a burst of transitions is over, or that the object's next write clears it.
CLEAR_DELAY_S = 5.0

#: (type, reason, message) of an Event a reconcile owes.
EventSpec = tuple[str, str, str]


def newer_or_equal(candidate: str, current: str) -> bool:
    """Whether a watch event is not older than what we already hold.

    resourceVersions are opaque, but etcd's are integers; only then are they compared.
    """
    if candidate.isdigit() and current.isdigit():
        return int(candidate) >= int(current)
    return True


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any],
                 keep: Collection[str] = ()) -> dict[str, Any]:
    """The smallest merge patch from ``current`` to ``desired``: unchanged keys are left out,
    nested objects recursively; lists (conditions) go whole, as merge patches require.

    ``desired`` is complete: a key it lacks is removed (a bulletin whose spec became invalid
    loses its old components and counts), except the top-level ``keep`` keys, which the
    controller leaves as they are on purpose. Smaller patches cost the API server less, which
    is what bounds a wave of breaches.
    """
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        old = current.get(key)
        if old == value:
            continue
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            patch[key] = status_patch(old, value)
        else:
            patch[key] = value
    patch.update({gone: None for gone, old in current.items()
                  if gone not in desired and gone not in keep and old is not None})
    return patch


class Outcome(enum.Enum):
    WRITTEN = "written"
    UNCHANGED = "unchanged"
    #: Retried with backoff.
    FAILED = "failed"
    #: The object is gone (404): forget it.
    GONE = "gone"
    #: The controller's ``refused`` hook took the error on (and rescheduled the key).
    HANDLED = "handled"


@dataclasses.dataclass(frozen=True)
class Result:
    outcome: Outcome
    #: What the API server stored, after a write; else None.
    status: dict[str, Any] | None = None
    resource_version: str | None = None
    patch: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def transitions(self) -> bool:
        """Whether the write changed more than the outbox (the log line tests count)."""
        return any(key != PENDING for key in self.patch)


def pending_events(status: Mapping[str, Any]) -> list[PendingEvent]:
    held = (PendingEvent.from_status(item) for item in status.get(PENDING) or [])
    return [event for event in held if event is not None]


def reconcile_error(current: Mapping[str, Any], generation: int, error: Exception,
                    now: datetime.datetime) -> list[dict[str, Any]]:
    """The conditions with Ready=False, reason ReconcileError, naming ``error``; the others
    as they are until a reconcile succeeds and computes them all again."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    ready = conditions.Condition(
        type="Ready", status="False", reason="ReconcileError",
        message=f"The operator failed to reconcile this object ({text}); it retries with "
                "backoff (see fluxsupport_scheduled_reconcile_failures_total and its log).")
    old = [item for item in current.get("conditions") or [] if isinstance(item, Mapping)]
    [merged] = conditions.merge(old, [ready], generation, now)
    others = [dict(item) for item in old if item.get("type") != "Ready"]
    return [merged, *others]


class StatusWriter:
    """Status writes, retries and Events of one kind of object (``kind``)."""

    def __init__(self, client: api.KubeClient, poster: EventPoster, scheduler: Scheduler,
                 kind: str, log: logging.Logger, keep: Collection[str] = ()) -> None:
        self.client = client
        self.poster = poster
        self.scheduler = scheduler
        self.kind = kind
        self.log = log
        self.keep = frozenset(keep)
        #: Outbox entries posted but still in the stored status, by key.
        self._posted: dict[Hashable, set[str]] = {}
        #: Keys whose owed Events the poster's queue refused: queued again when it drains.
        self._owed: set[Hashable] = set()
        client.on_recovery(scheduler.retry_failed_now)
        poster.on_drained(self._requeue_owed)

    def outbox(self, key: Hashable, ref: api.ObjectRef, current: Mapping[str, Any],
               new: Iterable[EventSpec], now: datetime.datetime) -> list[PendingEvent]:
        """The outbox to store: what is still owed, then the Events of this reconcile."""
        posted = self._posted.get(key, set())
        held = [event for event in pending_events(current) if event.name not in posted]
        fresh = [PendingEvent.create(ref, type_, reason, message, now)
                 for type_, reason, message in new]
        combined = held + fresh
        if len(combined) > MAX_OUTBOX:
            metrics.EVENTS_DROPPED.labels(reason="outbox_full").inc(len(combined) - MAX_OUTBOX)
            combined = combined[-MAX_OUTBOX:]
        return combined

    async def write(self, key: Hashable, ref: api.ObjectRef, current: Mapping[str, Any],
                    desired: Mapping[str, Any], resource_version: str,
                    events: Iterable[EventSpec] = (), *, now: datetime.datetime | None = None,
                    refused: Callable[[api.ApiError], bool] | None = None,
                    result: str = "success") -> Result:
        """Write ``desired`` (complete, without the outbox) with the Events it owes, then
        queue every owed Event. ``refused(error)`` may take a 4xx/5xx on itself (return
        True), as the bulletin controller does for a status too large to store."""
        now = now or datetime.datetime.now(datetime.UTC)
        outbox = self.outbox(key, ref, current, events, now)
        full = dict(desired)
        if outbox:
            full[PENDING] = [event.to_status() for event in outbox]
        patch = status_patch(current, full, self.keep)
        if not patch:
            metrics.RECONCILES.labels(kind=self.kind, result=result).inc()
            self._send(key, ref, outbox)
            return Result(Outcome.UNCHANGED)
        started = time.perf_counter()
        try:
            stored = await self.client.patch_status(ref, patch, resource_version)
        except api.ApiError as error:
            self._observe(started)
            if error.status == 404:
                metrics.RECONCILES.labels(kind=self.kind, result=result).inc()
                self.forget(key)
                return Result(Outcome.GONE)
            if refused is not None and refused(error):
                metrics.RECONCILES.labels(kind=self.kind, result="requeue").inc()
                return Result(Outcome.HANDLED)
            return self._failed(key, ref, error)
        except api.TRANSPORT_ERRORS as error:
            self._observe(started)
            return self._failed(key, ref, error)
        self._observe(started)
        metrics.RECONCILES.labels(kind=self.kind, result=result).inc()
        if result == "success":  # an error report keeps the backoff of the failed reconcile
            self.scheduler.succeeded(key)
        written = {event.name for event in outbox}
        posted = self._posted.get(key, set()) & written  # the others left with this write
        if posted:
            self._posted[key] = posted
        else:
            self._posted.pop(key, None)
        self._send(key, ref, outbox)
        return Result(Outcome.WRITTEN, dict(stored.get("status") or {}),
                      (stored.get("metadata") or {}).get("resourceVersion", resource_version),
                      patch)

    async def write_error(self, key: Hashable, ref: api.ObjectRef, current: Mapping[str, Any],
                          resource_version: str, generation: int, error: Exception) -> Result:
        """Show a failed reconcile in Ready (the scheduler retries it meanwhile)."""
        metrics.RECONCILE_ERRORS.labels(kind=self.kind).inc()
        now = datetime.datetime.now(datetime.UTC)
        desired = {name: value for name, value in current.items() if name != PENDING}
        desired["conditions"] = reconcile_error(current, generation, error, now)
        result = await self.write(key, ref, current, desired, resource_version, now=now,
                                  result="error")
        if result.outcome is Outcome.WRITTEN:
            self.log.info("%s %s: Ready=False (ReconcileError) written", self.kind, key)
        return result

    def clear_later(self, key: Hashable) -> None:
        """After the controller scheduled ``key``'s next transition (which forgets earlier
        instants): a posted Event still in the outbox gets its low-priority clear."""
        if key in self._posted:
            self.scheduler.schedule_low(key, time.time() + CLEAR_DELAY_S)

    def forget(self, key: Hashable) -> None:
        self._posted.pop(key, None)
        self._owed.discard(key)

    def _failed(self, key: Hashable, ref: api.ObjectRef, error: Exception) -> Result:
        metrics.RECONCILE_ERRORS.labels(kind=self.kind).inc()
        metrics.RECONCILES.labels(kind=self.kind, result="error").inc()
        delay = self.scheduler.retry(key)
        where = f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name
        api.log_write_failure(self.log, f"{self.kind} {where}", error, delay)
        return Result(Outcome.FAILED)

    def _observe(self, started: float) -> None:
        metrics.STATUS_WRITE_SECONDS.labels(kind=self.kind).observe(
            time.perf_counter() - started)

    def _send(self, key: Hashable, ref: api.ObjectRef, outbox: list[PendingEvent]) -> None:
        for event in outbox:
            if not self.poster.submit(ref, event, lambda name: self._posted_one(key, name)):
                self._owed.add(key)

    def _posted_one(self, key: Hashable, name: str) -> None:
        self._posted.setdefault(key, set()).add(name)
        self.scheduler.schedule_low(key, time.time() + CLEAR_DELAY_S)

    def _requeue_owed(self) -> None:
        """The poster has room again: reconcile, at low priority, the objects whose Events
        it refused; each reconcile queues its outbox again."""
        now = time.time()
        for key in self._owed:
            self.scheduler.schedule_low(key, now)
        self._owed.clear()
