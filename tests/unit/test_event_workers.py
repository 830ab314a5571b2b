"""The Event workers under supervision, against a loopback HTTP server standing in for an
authenticating proxy in front of the API server: it answers the events endpoint with 200 and
a login page (not JSON), or holds the request. The poster and the client are the operator's
own; /healthz is the operator's own HTTP server."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from typing import Any

import aiohttp
import kubernetes
import pytest
from aiohttp import web

from fluxsupport.devcluster import cluster
from fluxsupport.kube import api, events
from fluxsupport.observability import endpoints, metrics

REF = api.ObjectRef("support.fluxcd.controlplane.io/v1alpha1", "SupportCase", "supportcases",
                    "db-down", "team", "uid-1")
LOGIN_PAGE = "<html><body>Sign in to continue</body></html>"
#: Bounds, not expectations: restarts take 1 s, then 2 s; a loaded machine may be slower.
WAIT_S = 30.0


class Proxy:
    """The events endpoint behind a proxy: ``mode`` is login (200, HTML), hang or pass."""

    def __init__(self) -> None:
        self.mode = "login"
        self.requests = 0
        self.created: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._released = asyncio.Event()

    async def _events(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.mode == "login":
            return web.Response(status=200, text=LOGIN_PAGE, content_type="text/html")
        if self.mode == "hang":
            await self._released.wait()  # until the test ends
        body = await request.json()
        name = body["metadata"]["name"]
        if name in self.created:
            return web.json_response({"message": "already exists"}, status=409)
        self.created.append(name)
        return web.json_response(body, status=201)

    async def __aenter__(self) -> Proxy:
        app = web.Application()
        app.router.add_post("/api/v1/namespaces/{namespace}/events", self._events)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = cluster.free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        self._released.set()
        await self._runner.cleanup()

    def client(self) -> api.Client:
        configuration = kubernetes.client.Configuration()
        configuration.host = f"http://127.0.0.1:{self.port}"
        configuration.verify_ssl = False
        return api.Client(configuration)


async def healthz(port: int) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{port}/healthz") as response:
        return response.status, json.loads(await response.text())


async def until(probe: Any, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        result = await probe()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")


async def health_until(port: int, status: int) -> tuple[int, dict[str, Any]]:
    async def probe() -> tuple[int, dict[str, Any]] | None:
        answer = await healthz(port)
        return answer if answer[0] == status else None
    found: tuple[int, dict[str, Any]] = await until(probe, f"/healthz answering {status}")
    return found


async def posted_until(posted: list[str], count: int) -> None:
    async def probe() -> bool:
        return len(posted) == count
    await until(probe, f"{count} Events posted")


def pending(reason: str = "FirstResponseBreached") -> events.PendingEvent:
    return events.PendingEvent.create(REF, "Warning", reason, "No first response.",
                                      datetime.datetime(2026, 12, 7, 18, tzinfo=datetime.UTC))


def restarts() -> float:
    return metrics.REGISTRY.get_sample_value("fluxsupport_event_worker_restarts_total") or 0.0


def test_an_answer_that_is_not_json_costs_no_event_and_health_reports_the_worker(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="fluxsupport.kube.events")
    before = restarts()

    async def scenario() -> tuple[list[str], Proxy, list[tuple[int, dict[str, Any]]]]:
        async with Proxy() as proxy:
            client = proxy.client()
            poster = events.EventPoster(client)
            await poster.start()
            health = endpoints.HealthState()
            health.checks.append(poster.problems)
            port = cluster.free_port()
            http = await endpoints.start("127.0.0.1", port, health)
            posted: list[str] = []
            answers = []
            try:
                event = pending()
                assert poster.submit(REF, event, posted.append)

                answers.append(await health_until(port, 503))
                proxy.mode = "pass"  # the proxy lets requests through again
                await posted_until(posted, 1)
                answers.append(await health_until(port, 200))
                # Every worker still takes Events.
                for index in range(8):
                    assert poster.submit(REF, pending(f"Reason{index}"), posted.append)
                await posted_until(posted, 9)
                assert poster.problems() == []
            finally:
                await poster.stop()
                await client.close()
                await http.cleanup()
            return posted, proxy, answers

    posted, proxy, answers = asyncio.run(scenario())
    assert len(posted) == 9
    assert proxy.created == posted  # each once, the first after the proxy let it through
    assert proxy.requests > len(posted)  # the login page was tried first
    (failing_status, failing), (ok_status, ok) = answers
    assert failing_status == 503
    assert failing["status"] == "failing"
    [problem] = failing["problems"]
    assert problem.startswith("Event worker ")
    assert "failed (JSONDecodeError:" in problem
    assert "it starts again in" in problem
    assert (ok_status, ok["status"]) == (200, "ok")
    assert "problems" not in ok
    assert restarts() - before >= 1
    logged = [r for r in caplog.records if r.getMessage().startswith("Event worker ")]
    assert logged
    assert logged[0].exc_info is not None  # the traceback says where it failed


def test_a_worker_stuck_in_one_attempt_fails_the_health_check() -> None:
    async def scenario() -> list[str]:
        async with Proxy() as proxy:
            proxy.mode = "hang"
            client = proxy.client()
            poster = events.EventPoster(client, stuck_after=0.5)
            await poster.start()
            try:
                assert poster.submit(REF, pending(), lambda _: None)

                async def stuck() -> list[str]:
                    return poster.problems()

                return list(await until(stuck, "the stuck worker reported"))
            finally:
                await poster.stop()
                await client.close()

    [problem] = asyncio.run(scenario())
    assert problem.startswith("Event worker ")
    assert "is stuck: one attempt to post an Event has taken" in problem


def test_events_queued_behind_a_login_page_are_all_posted_once_it_lets_them_through() -> None:
    """More Events than workers meet the login page; none is lost, none is posted twice."""
    async def scenario() -> tuple[list[str], list[str], Proxy]:
        async with Proxy() as proxy:
            client = proxy.client()
            poster = events.EventPoster(client)
            await poster.start()
            posted: list[str] = []
            queued = [pending(f"Reason{index}") for index in range(events.EVENT_WORKERS * 2)]
            try:
                for event in queued:
                    assert poster.submit(REF, event, posted.append)

                async def refused() -> bool:
                    return proxy.requests >= events.EVENT_WORKERS

                await until(refused, "every worker to meet the login page")
                proxy.mode = "pass"

                async def all_posted() -> bool:
                    return len(posted) == len(queued)

                await until(all_posted, "every Event posted")
            finally:
                await poster.stop()
                await client.close()
            return posted, [event.name for event in queued], proxy

    posted, names, proxy = asyncio.run(scenario())
    assert sorted(posted) == sorted(names)
    assert sorted(proxy.created) == sorted(names)

