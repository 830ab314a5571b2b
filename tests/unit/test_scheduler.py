"""The one timer for all objects: it fires due keys, and sleeps without tasks of its own.

kopf waits up to 5 s at shutdown for every task created after it started, so a sleeping
scheduler that holds a helper task (as ``asyncio.wait_for`` creates on Python 3.11) delays
every restart of the operator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable

from fluxsupport.controllers.scheduler import Scheduler


def test_fires_due_keys_and_sleeps_without_helper_tasks() -> None:
    async def scenario() -> tuple[list[Hashable], set[asyncio.Task[object]]]:
        fired: list[Hashable] = []

        async def callback(key: Hashable) -> None:
            fired.append(key)

        scheduler = Scheduler(callback)
        scheduler.schedule("due", time.time())
        scheduler.schedule("in an hour", time.time() + 3600)
        runner = asyncio.create_task(scheduler.run())
        for _ in range(100):
            await asyncio.sleep(0)
        others = asyncio.all_tasks() - {runner, asyncio.current_task()}
        runner.cancel()
        return fired, others

    fired, others = asyncio.run(scenario())
    assert fired == ["due"]
    assert others == set()


def test_a_later_instant_never_delays_an_earlier_one() -> None:
    async def scenario() -> list[Hashable]:
        fired: list[Hashable] = []

        async def callback(key: Hashable) -> None:
            fired.append(key)

        scheduler = Scheduler(callback)
        runner = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0)
        scheduler.schedule("case", time.time() + 3600)
        scheduler.schedule("case", time.time())
        for _ in range(100):
            await asyncio.sleep(0)
        runner.cancel()
        return fired

    assert asyncio.run(scenario()) == ["case"]


def test_retry_backs_off_until_success_or_cancel() -> None:
    async def scenario() -> list[float]:
        async def callback(key: Hashable) -> None:
            return None

        scheduler = Scheduler(callback)
        delays = [scheduler.retry("case") for _ in range(9)]
        scheduler.succeeded("case")
        delays.append(scheduler.retry("case"))
        scheduler.cancel("case")
        delays.append(scheduler.retry("case"))
        return delays

    assert asyncio.run(scenario()) == [0.5, 1, 2, 4, 8, 15, 30, 30, 30, 0.5, 0.5]


def test_retry_failed_now_runs_every_backed_off_key_at_once() -> None:
    async def scenario() -> list[Hashable]:
        fired: list[Hashable] = []

        async def callback(key: Hashable) -> None:
            fired.append(key)

        scheduler = Scheduler(callback)
        for _ in range(7):
            scheduler.retry("failed")  # now 30 s away
        scheduler.schedule("fine", time.time() + 3600)
        scheduler.retry_failed_now()
        runner = asyncio.create_task(scheduler.run())
        for _ in range(100):
            await asyncio.sleep(0)
        runner.cancel()
        return fired

    assert asyncio.run(scenario()) == ["failed"]
