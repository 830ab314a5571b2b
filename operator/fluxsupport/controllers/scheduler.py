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

logger = logging.getLogger(__name__)

Callback = Callable[[Hashable], Awaitable[None]]
#: Backoff of retry(), by the number of consecutive failures of a key.
RETRY_DELAYS_S = (0.5, 1, 2, 4, 8, 15, 30)


class Scheduler:
    def __init__(self, callback: Callback, concurrency: int = 32,
                 gate: asyncio.Event | None = None) -> None:
        self._callback = callback
        #: Instants only fire while this is set: a standby replica (kopf peering) keeps its
        #: heap but writes nothing, and catches up when it becomes the active one.
        self._gate = gate
        self._heap: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}
        self._counter = itertools.count()
        self._wakeup = asyncio.Event()
        self._limit = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        #: Consecutive failures per key, for the backoff of retry().
        self._failures: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, key: Hashable, when: float) -> None:
        """Run ``callback(key)`` at wall-clock ``when`` (epoch seconds); earliest wins."""
        current = self._due.get(key)
        if current is not None and current <= when:
            return
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._counter), key))
        if self._heap[0][2] == key:
            self._wakeup.set()

    def replace(self, key: Hashable, when: float | None) -> None:
        """Forget any earlier instant of ``key`` and schedule it at ``when`` (if any)."""
        self._due.pop(key, None)
        if when is not None:
            self.schedule(key, when)

    def cancel(self, key: Hashable) -> None:
        self._due.pop(key, None)
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

    def retry_failed_now(self) -> None:
        """After an API outage, retry every failed key at once instead of at its backoff
        (up to 30 s away): breaches that fell inside the outage are written on recovery."""
        now = time.time()
        for key in list(self._failures):
            self.schedule(key, now)

    async def run(self) -> None:
        while True:
            if self._gate is not None:
                await self._gate.wait()
            self._wakeup.clear()
            now = time.time()
            while self._heap and self._heap[0][0] <= now and self._open():
                when, _, key = heapq.heappop(self._heap)
                if self._due.get(key) != when:
                    continue  # Superseded or cancelled.
                del self._due[key]
                await self._limit.acquire()
                task = asyncio.create_task(self._invoke(key))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            timeout = (self._heap[0][0] - time.time()) if self._heap else None
            # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own,
            # and at shutdown kopf waits (up to 5 s) for every task created after it started.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if timeout is None else max(timeout, 0)):
                    await self._wakeup.wait()

    def _open(self) -> bool:
        return self._gate is None or self._gate.is_set()

    async def _invoke(self, key: Hashable) -> None:
        try:
            await self._callback(key)
        except Exception:
            logger.exception("scheduled reconcile of %s failed", key)
        finally:
            self._limit.release()
