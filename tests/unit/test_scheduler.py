"""The one timer for all objects: it fires due keys, and sleeps without tasks of its own.

kopf waits up to 5 s at shutdown for every task created after it started, so a sleeping
scheduler that holds a helper task (as ``asyncio.wait_for`` creates on Python 3.11) delays
every restart of the operator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable

import pytest

from fluxsupport.controllers import scheduler as scheduler_module
from fluxsupport.controllers.scheduler import STALE_SLACK, Scheduler
from fluxsupport.kube import api
from fluxsupport.observability import metrics


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
        # A failure just after the recovery (an API server still syncing its authorizer)
        # is retried as a first failure, not 30 s later.
        assert scheduler.retry("failed") == 0.5
        return fired

    assert asyncio.run(scenario()) == ["failed"]


def test_replace_keeps_the_heap_bounded() -> None:
    """Every reconcile replaces its key's instant, and superseded heap entries do not pile up
    (100,000 reconciles of 10 cases keep the heap within twice the keys plus a slack)."""
    async def callback(key: Hashable) -> None:
        return None

    scheduler = Scheduler(callback)
    now = time.time()
    for index in range(100_000):
        scheduler.replace(f"case-{index % 10}", now + 3600 + index)
    assert len(scheduler) == 10
    assert len(scheduler._heap) <= 2 * len(scheduler) + STALE_SLACK
    assert scheduler.heap_size <= 2 * 10 + STALE_SLACK


def test_a_reconcile_that_raises_is_retried_counted_and_reported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A callback that raises is logged, counted and its key run again."""
    monkeypatch.setattr(scheduler_module, "RETRY_DELAYS_S", (0.01,))
    failures = metrics.SCHEDULED_FAILURES.labels(kind="Test")
    before = failures._value.get()

    async def scenario() -> tuple[list[Hashable], list[tuple[Hashable, str]]]:
        calls: list[Hashable] = []
        reported: list[tuple[Hashable, str]] = []

        async def callback(key: Hashable) -> None:
            calls.append(key)
            if len(calls) == 1:
                raise KeyError("boom")

        async def on_error(key: Hashable, error: Exception) -> None:
            reported.append((key, repr(error)))

        scheduler = Scheduler(callback, kind="Test", on_error=on_error)
        scheduler.schedule("case", time.time())
        runner = asyncio.create_task(scheduler.run())
        for _ in range(200):  # bounded: the retry is 10 ms away
            await asyncio.sleep(0.005)
            if len(calls) >= 2:
                break
        runner.cancel()
        return calls, reported

    calls, reported = asyncio.run(scenario())
    assert calls == ["case", "case"]
    assert reported == [("case", "KeyError('boom')")]
    assert failures._value.get() == before + 1


def test_low_priority_instants_wait_for_ordinary_reconciles() -> None:
    """Clearing posted Events from outboxes must not slow a wave of breaches: a low instant
    starts only once no ordinary reconcile runs."""
    async def scenario() -> list[str]:
        order: list[str] = []
        release = asyncio.Event()

        async def callback(key: Hashable) -> None:
            order.append(f"start {key}")
            if key == "breach":
                await release.wait()
            order.append(f"end {key}")

        scheduler = Scheduler(callback)
        scheduler.schedule_low("clear", time.time() - 1)  # due first...
        scheduler.schedule("breach", time.time())
        runner = asyncio.create_task(scheduler.run())
        for _ in range(50):
            await asyncio.sleep(0)
        running_alone = list(order)
        release.set()
        for _ in range(50):
            await asyncio.sleep(0)
        runner.cancel()
        return [*running_alone, "|", *order]

    assert asyncio.run(scenario()) == [
        "start breach", "|", "start breach", "end breach", "start clear", "end clear"]


@pytest.mark.parametrize(("error", "traceback"), [
    (api.ApiError(500, "etcdserver: request timed out"), False),
    (TimeoutError(), False),
    (KeyError("status"), True),
])
def test_an_api_failure_is_logged_in_a_line_and_a_defect_with_its_traceback(
        error: Exception, traceback: bool, caplog: pytest.LogCaptureFixture) -> None:
    async def callback(key: Hashable) -> None:
        raise AssertionError("not run")

    scheduler = Scheduler(callback, kind="SupportCase")
    asyncio.run(scheduler.failed("case", error))
    [record] = [r for r in caplog.records if r.name == scheduler_module.__name__]
    assert record.getMessage().startswith("reconcile of SupportCase case failed")
    assert (record.exc_info is not None) == traceback
    if not traceback:
        assert str(error) in record.getMessage()
