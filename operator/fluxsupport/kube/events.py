"""Kubernetes Events, posted exactly once across crashes and outages.

An Event is owed from the moment the status write that records its transition succeeds: the
same write stores it in the object's ``status.pendingEvents`` (the outbox). Its name is fixed
when it enters the outbox, so posting it again (after a SIGKILL, after an outage, from the next
reconcile) meets a 409 AlreadyExists, which counts as posted. The in-memory queue below only
carries what the outbox already holds: it is bounded, and what it drops is posted later from
the outbox.

The workers are supervised: one that fails in a way nobody foresaw (a 2xx answer that is not
JSON, from a proxy in front of the API server; a bug) is logged with its traceback and starts
again after a growing delay with the Event it held, which stays owed. An Event that fails that
way every time keeps one worker busy, not all of them. ``problems()`` names a worker that is
down or stuck, for the health endpoint.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from fluxsupport.constants import REPORTING_COMPONENT
from fluxsupport.kube import api, objects
from fluxsupport.observability import metrics

logger = logging.getLogger(__name__)

EVENT_WORKERS = 4
#: Events waiting in memory; past this, new ones wait in their object's outbox instead.
QUEUE_LIMIT = 10_000
#: The longest wait between two attempts at an Event while the API server is unreachable,
#: and before a worker that failed starts again.
MAX_BACKOFF_S = 30.0
#: One attempt at an Event running this long means its worker is stuck: the client's own
#: timeout (30 s per request) should have ended it long before.
STUCK_AFTER_S = 120.0
#: Event names are DNS subdomains (RFC 1123), at most 253 characters.
MAX_NAME = 253
HASH_HEX = 16
#: The CRDs' maxLength of ``pendingEvents[].message``, and what an Event message is cut to.
MAX_MESSAGE = 1024

_INVALID = re.compile(r"[^a-z0-9.-]")


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def event_name(object_name: str, uid: str, reason: str, message: str,
               instant: datetime.datetime) -> str:
    """``<object name>.<16 hex>``, the hash of what identifies the transition.

    The object name is cut so that the whole stays a DNS subdomain of at most 253 characters
    (a SupportCase may have a 253-character name itself); the hash keeps cut names apart.
    """
    digest = hashlib.sha256(
        "\0".join((uid, reason, message, instant.isoformat())).encode()).hexdigest()[:HASH_HEX]
    stem = _INVALID.sub("-", object_name.lower())[:MAX_NAME - HASH_HEX - 1]
    # A label must end alphanumeric, so the cut may not leave a '.' or '-' before ours.
    stem = stem.rstrip(".-") or "event"
    return f"{stem}.{digest}"


@dataclasses.dataclass(frozen=True, slots=True)
class PendingEvent:
    """One entry of ``status.pendingEvents``."""

    name: str
    type: str
    reason: str
    message: str
    at: str

    @classmethod
    def create(cls, ref: api.ObjectRef, type_: str, reason: str, message: str,
               now: datetime.datetime) -> PendingEvent:
        message = message[:MAX_MESSAGE]
        return cls(event_name(ref.name, ref.uid or "", reason, message, now), type_, reason,
                   message, _rfc3339(now))

    @classmethod
    def from_status(cls, item: Any) -> PendingEvent | None:
        """An outbox entry as stored; None for one that is not ours to post (hand-edited)."""
        if not isinstance(item, Mapping):
            return None
        fields = [item.get(key) for key in ("name", "type", "reason", "message", "at")]
        if not all(isinstance(value, str) for value in fields) or not fields[0]:
            return None
        name, type_, reason, message, at = (str(value) for value in fields)
        return cls(name, type_, reason, message, at)

    def to_status(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "reason": self.reason,
                "message": self.message, "at": self.at}


Done = Callable[[str], None]
Item = tuple[api.ObjectRef, PendingEvent, Done]


@dataclasses.dataclass
class _Worker:
    """What the supervisor and the health endpoint know about one worker."""

    index: int
    task: asyncio.Task[None] | None = None
    #: The Event in hand; a worker that fails with it takes it up again when it restarts.
    item: Item | None = None
    #: When the attempt in flight started (monotonic clock); None between attempts.
    attempt_since: float | None = None
    #: Events this worker has delivered: one since its last start resets the restart delay.
    delivered: int = 0
    #: While the worker is down: why, and when it starts again (monotonic clock).
    failure: str | None = None
    restart_at: float = 0.0


class EventPoster:
    """A few workers post the queued Events, after the status writes in flight.

    ``done(name)`` is called once an Event is in the cluster (a 409 included) or was refused
    for good (a 4xx: posting it again would fail the same way); either way its outbox entry
    may go. Transient failures are retried, waiting for the API server, for as long as it
    takes: nothing is dropped on a timer.
    """

    def __init__(self, client: api.KubeClient, queue_limit: int = QUEUE_LIMIT,
                 stuck_after: float = STUCK_AFTER_S) -> None:
        self.client = client
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=queue_limit)
        #: Names queued or being posted: an outbox seen again does not queue them twice.
        self._inflight: set[str] = set()
        self._workers: list[_Worker] = []
        self.stuck_after = stuck_after
        #: Events wait for this (the peering gate) so that a standby replica posts none.
        self._gate: asyncio.Event | None = None
        #: ``reportingInstance`` of the Events: which replica posted them.
        self.instance = REPORTING_COMPONENT
        self._overflowed = False
        self._drained_listeners: list[Callable[[], None]] = []

    def set_gate(self, gate: asyncio.Event, instance: str) -> None:
        """Post Events only while ``gate`` is set, as ``instance``."""
        self._gate = gate
        self.instance = instance[:128]

    def on_drained(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when the queue is empty again after it had to refuse Events, so
        that their owners queue them again from their outboxes."""
        self._drained_listeners.append(listener)

    def submit(self, ref: api.ObjectRef, event: PendingEvent, done: Done) -> bool:
        """Queue ``event`` unless it is queued already; False if the queue is full (it stays
        owed in the outbox, and is queued again later)."""
        if event.name in self._inflight:
            return True
        try:
            self._queue.put_nowait((ref, event, done))
        except asyncio.QueueFull:
            metrics.EVENTS_DROPPED.labels(reason="queue_full").inc()
            self._overflowed = True
            return False
        self._inflight.add(event.name)
        return True

    async def start(self) -> None:
        """Start the workers, each under its supervisor. Before kopf starts: kopf waits 5 s
        at exit for any task created after it, and cancels them only then."""
        loop = asyncio.get_running_loop()
        self._workers = [_Worker(index) for index in range(EVENT_WORKERS)]
        for worker in self._workers:
            worker.task = loop.create_task(self._supervise(worker),
                                           name=f"event-worker-{worker.index}")

    async def stop(self) -> None:
        tasks = [worker.task for worker in self._workers if worker.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def problems(self) -> list[str]:
        """Workers that are down (waiting to start again) or stuck in one attempt; empty
        while every worker runs. For /healthz."""
        now = time.monotonic()
        found = []
        for worker in self._workers:
            name = f"Event worker {worker.index}"
            if worker.task is not None and worker.task.done():
                found.append(f"{name} is not running")
            elif worker.failure is not None:
                found.append(f"{name} failed ({worker.failure}); it starts again in "
                             f"{max(0.0, worker.restart_at - now):.0f} s")
            elif worker.attempt_since is not None and \
                    now - worker.attempt_since > self.stuck_after:
                found.append(f"{name} is stuck: one attempt to post an Event has taken "
                             f"{now - worker.attempt_since:.0f} s")
        return found

    def body(self, ref: api.ObjectRef, event: PendingEvent) -> dict[str, Any]:
        """The core/v1 Event; cluster-scoped objects get theirs in ``default``."""
        return {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": event.name, "namespace": ref.namespace or "default"},
            "involvedObject": {"apiVersion": ref.api_version, "kind": ref.kind,
                               "name": ref.name, "namespace": ref.namespace or "",
                               "uid": ref.uid or ""},
            "type": event.type, "reason": event.reason, "message": event.message,
            "source": {"component": REPORTING_COMPONENT},
            "reportingComponent": REPORTING_COMPONENT, "reportingInstance": self.instance,
            "firstTimestamp": event.at, "lastTimestamp": event.at, "count": 1,
        }

    async def post(self, ref: api.ObjectRef, event: PendingEvent) -> None:
        """Post once; an Event of that name means an earlier attempt (this process or a
        killed one) posted it."""
        await objects.Objects(self.client, objects.EVENTS, ref.namespace or "default").create(
            self.body(ref, event))

    async def _supervise(self, worker: _Worker) -> None:
        """Run ``worker`` for as long as the poster runs: whatever it raises is logged, and
        it starts again, with the Event it held, after a delay that doubles (to at most
        MAX_BACKOFF_S) while it fails without delivering anything."""
        delay = 1.0
        while True:
            delivered = worker.delivered
            try:
                await self._work(worker)
            except Exception as error:  # whatever it is; CancelledError passes
                if worker.delivered > delivered:
                    delay = 1.0
                worker.failure = f"{type(error).__name__}: {error}"[:300]
                worker.restart_at = time.monotonic() + delay
                worker.attempt_since = None
                metrics.EVENT_WORKER_RESTARTS.inc()
                logger.error("Event worker %d failed; it starts again in %.0f s",
                             worker.index, delay, exc_info=error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
                worker.failure = None

    async def _work(self, worker: _Worker) -> None:
        while True:
            if worker.item is None:
                worker.item = await self._queue.get()
            ref, event, done = worker.item
            await self._deliver(ref, event, worker)
            # Delivered (or refused for good): no longer owed by this process.
            worker.item = None
            self._inflight.discard(event.name)
            worker.delivered += 1
            done(event.name)
            if self._overflowed and self._queue.empty():
                self._overflowed = False
                for listener in self._drained_listeners:
                    listener()

    async def _deliver(self, ref: api.ObjectRef, event: PendingEvent, worker: _Worker) -> None:
        backoff = 1.0
        while True:
            # A standby replica posts nothing; it posts what it queued once it leads.
            if self._gate is not None:
                await self._gate.wait()
            # Status writes first: in a wave of breaches every Event would otherwise delay
            # the next case's Breached condition.
            await self.client.writes_idle()
            worker.attempt_since = time.monotonic()
            try:
                await self.post(ref, event)
            except (api.ApiError, *api.TRANSPORT_ERRORS) as error:
                worker.attempt_since = None
                if api.is_transient(error):
                    await self.client.wait_recovery(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
                metrics.EVENTS_DROPPED.labels(reason="refused").inc()
                logger.warning("Event %s for %s/%s refused: %s", event.reason, ref.kind,
                               ref.name, error)
                return
            worker.attempt_since = None
            metrics.EVENTS_POSTED.inc()
            return
