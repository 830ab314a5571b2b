"""One timer for all objects: reconcile a key at an instant, or again after a failure.

kopf timers and daemons cost one task per object; ten thousand open cases would mean ten
thousand sleeping tasks. Here a single heap holds the next instant per key and one loop
sleeps until the earliest. Nothing polls the API: a key is only reconciled when its
instant comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable

from fluxsupport.kube import api
from fluxsupport.observability import metrics

#: An answer of the API server or a broken connection: expected on a busy or restarting
#: control plane, and its text says all there is. Any other error is a defect of the operator
#: and is logged with its traceback.
EXPECTED_ERRORS = (api.ApiError, *api.TRANSPORT_ERRORS)

logger = logging.getLogger(__name__)

Callback = Callable[[Hashable], Awaitable[None]]
#: Told of a reconcile that raised, to show the error on the object.
ErrorCallback = Callable[[Hashable, Exception], Awaitable[None]]
Entry = tuple[float, int, Hashable]
#: Stale heap entries (superseded instants) tolerated beyond the live ones before a rebuild.
STALE_SLACK = 64
#: Backoff of retry(), by the number of consecutive failures of a key.
RETRY_DELAYS_S = (0.5, 1, 2, 4, 8, 15, 30)


class Scheduler:
    """Keys due at an instant; ``low`` instants (clearing posted Events from an outbox) start
    only while no ordinary one is due or running, so they never slow a wave of breaches."""

    def __init__(self, callback: Callback, concurrency: int = 32,
                 gate: asyncio.Event | None = None, *, kind: str = "",
                 on_error: ErrorCallback | None = None) -> None:
        self._callback = callback
        #: Instants only fire while this is set: a standby replica (kopf peering) keeps its
        #: heap but writes nothing, and catches up when it becomes the active one.
        self._gate = gate
        #: The ``kind`` label of SCHEDULED_FAILURES.
        self.kind = kind
        self._on_error = on_error
        self._heap: list[Entry] = []
        self._due: dict[Hashable, float] = {}
        self._low_heap: list[Entry] = []
        self._low_due: dict[Hashable, float] = {}
        self._counter = itertools.count()
        self._wakeup = asyncio.Event()
        self._limit = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        #: Ordinary reconciles running: low instants wait for none.
        self._running = 0
        #: Consecutive failures per key, for the backoff of retry().
        self._failures: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self._due)

    @property
    def heap_size(self) -> int:
        """Entries held, live and stale: bounded by twice the live ones plus a constant."""
        return len(self._heap) + len(self._low_heap)

    def schedule(self, key: Hashable, when: float) -> None:
        """Run ``callback(key)`` at wall-clock ``when`` (epoch seconds); earliest wins."""
        self._push(self._heap, self._due, key, when)

    def schedule_low(self, key: Hashable, when: float) -> None:
        """Like schedule(), at low priority; an ordinary run of ``key`` meanwhile serves it."""
        self._push(self._low_heap, self._low_due, key, when)

    def _push(self, heap: list[Entry], due: dict[Hashable, float], key: Hashable,
              when: float) -> None:
        current = due.get(key)
        if current is not None and current <= when:
            return
        due[key] = when
        heapq.heappush(heap, (when, next(self._counter), key))
        if len(heap) > 2 * len(due) + STALE_SLACK:
            # Superseded entries stay in the heap until popped; one reconcile per event
            # would otherwise grow it without bound. Rebuilding costs O(live) and happens
            # once per that many pushes.
            heap[:] = [(at, next(self._counter), item) for item, at in due.items()]
            heapq.heapify(heap)
        if heap[0][2] == key:
            self._wakeup.set()

    def replace(self, key: Hashable, when: float | None) -> None:
        """Forget any earlier instant of ``key`` and schedule it at ``when`` (if any)."""
        self._due.pop(key, None)
        if when is not None:
            self.schedule(key, when)

    def cancel(self, key: Hashable) -> None:
        self._due.pop(key, None)
        self._low_due.pop(key, None)
        self._failures.pop(key, None)

    def retry(self, key: Hashable) -> float:
        """Run ``key`` again after a backoff that grows with its consecutive failures;
        return the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)]
        self.schedule(key, time.time() + delay)
        return delay

    def succeeded(self, key: Hashable) -> None:
        """End the backoff of ``key``."""
        self._failures.pop(key, None)

    async def failed(self, key: Hashable, error: Exception) -> None:
        """A reconcile of ``key`` raised: count it, retry it with backoff, and let the
        controller show the error on the object. A breach must not be missed silently."""
        metrics.SCHEDULED_FAILURES.labels(kind=self.kind).inc()
        delay = self.retry(key)
        if isinstance(error, EXPECTED_ERRORS):
            logger.error("reconcile of %s %s failed: %s; retrying in %ss", self.kind, key,
                         error, delay)
        else:
            logger.error("reconcile of %s %s failed; retrying in %ss", self.kind, key, delay,
                         exc_info=error)
        if self._on_error is not None:
            try:
                await self._on_error(key, error)
            except Exception as report_error:  # the retry above still stands
                logger.warning("could not report the failure of %s: %s", key, report_error)

    def retry_failed_now(self) -> None:
        """After an API outage, retry every failed key at once instead of at its backoff
        (up to 30 s away): breaches that fell inside the outage are written on recovery.

        The backoff starts again too: it grew with the outage, not with the objects. A
        kube-apiserver that has just started can refuse the first writes with 403 until its
        authorizer has synced; those are retried 0.5 s later, not 30 s.
        """
        now = time.time()
        for key in list(self._failures):
            self.schedule(key, now)
        self._failures.clear()

    @staticmethod
    def _pop_due(heap: list[Entry], due: dict[Hashable, float],
                 now: float) -> Hashable | None:
        while heap and heap[0][0] <= now:
            when, _, key = heapq.heappop(heap)
            if due.get(key) == when:
                del due[key]
                return key
        return None

    def _next(self) -> tuple[Hashable, bool] | None:
        """The key to start now, and whether it is an ordinary one."""
        now = time.time()
        key = self._pop_due(self._heap, self._due, now)
        if key is not None:
            self._low_due.pop(key, None)  # this run serves the low instant too
            return key, True
        if self._running:
            return None
        low = self._pop_due(self._low_heap, self._low_due, now)
        return None if low is None else (low, False)

    async def run(self) -> None:
        while True:
            if self._gate is not None:
                await self._gate.wait()
            self._wakeup.clear()
            while self._open() and (picked := self._next()) is not None:
                key, ordinary = picked
                await self._limit.acquire()
                if ordinary:
                    self._running += 1
                task = asyncio.create_task(self._invoke(key, ordinary))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            # Low instants count only while nothing runs: the end of the last ordinary
            # reconcile wakes the loop for them (a due one would otherwise spin it).
            heaps = (self._heap,) if self._running else (self._heap, self._low_heap)
            heads = [heap[0][0] for heap in heaps if heap]
            timeout = (min(heads) - time.time()) if heads else None
            # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own,
            # and at shutdown kopf waits (up to 5 s) for every task created after it started.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if timeout is None else max(timeout, 0)):
                    await self._wakeup.wait()

    def _open(self) -> bool:
        return self._gate is None or self._gate.is_set()

    async def _invoke(self, key: Hashable, ordinary: bool = True) -> None:
        try:
            await self._callback(key)
        except Exception as error:  # retried and reported, never lost
            await self.failed(key, error)
        finally:
            self._limit.release()
            if ordinary:
                self._running -= 1
                if not self._running:
                    self._wakeup.set()  # low instants may start now
