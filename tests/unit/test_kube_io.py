"""The kube layer's client, reflector and the Flux inventory source, against fakes and a
loopback aiohttp server (no cluster)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import kubernetes
import pytest
from aiohttp import web

from fluxsupport.kube import api, reflector
from fluxsupport.observability import metrics
from fluxsupport.sources import inventory
from tests import fakes


def _requests(method: str, code: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "fluxsupport_api_requests_total", {"method": method, "code": code})
    return value or 0.0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _client(port: int) -> api.Client:
    configuration = kubernetes.client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.verify_ssl = False
    return api.Client(configuration)


async def _watch_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b'{"type": "ADDED", "object": {"metadata": {"name": "a"}}}\n')
    await response.write_eof()
    return response


async def _ok(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _missing(_: web.Request) -> web.Response:
    return web.json_response({"message": "not found"}, status=404)


async def _serve() -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/ok", _ok)
    app.router.add_get("/missing", _missing)
    app.router.add_get("/watch", _watch_stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    port: int = server.sockets[0].getsockname()[1]
    return runner, port


def test_every_request_and_watch_is_counted_by_method_and_code() -> None:
    keys = [("GET", "200"), ("GET", "404"), ("GET", "transport"), ("POST", "transport")]
    before = {key: _requests(*key) for key in keys}

    async def scenario() -> list[dict[str, Any]]:
        runner, port = await _serve()
        client = _client(port)
        down = _client(_closed_port())
        try:
            assert await client.request("GET", "/ok") == {"ok": True}
            with pytest.raises(api.ApiError):
                await client.request("GET", "/missing")
            events = [e async for e in client.watch_lines("/watch", {}, read_timeout=5)]
            with pytest.raises(api.ApiError):
                async for _ in client.watch_lines("/missing", {}, read_timeout=5):
                    pass
            with pytest.raises(aiohttp.ClientError):
                await down.request("POST", "/ok", {"a": 1})
            with pytest.raises(aiohttp.ClientError):
                async for _ in down.watch_lines("/watch", {}, read_timeout=5):
                    pass
            return events
        finally:
            await client.close()
            await down.close()
            await runner.cleanup()

    events = asyncio.run(scenario())
    assert [e["object"]["metadata"]["name"] for e in events] == ["a"]
    delta = {key: _requests(*key) - before[key] for key in keys}
    assert delta == {("GET", "200"): 2, ("GET", "404"): 2, ("GET", "transport"): 1,
                     ("POST", "transport"): 1}


class ScriptedClient(fakes.FakeClient):
    """Answers lists from a script, whatever their path (recorded in ``requests``); every
    watch ends at once with 410 Gone (a relist)."""

    def __init__(self, script: list[dict[str, Any] | Exception]) -> None:
        super().__init__()
        self.script = script
        self.script_done = asyncio.Event()

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        self.requests.append((method, path))
        if not self.script:
            self.script_done.set()
            await asyncio.Event().wait()  # the state after the script stays as it is
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def watch_lines(self, path: str, params: Mapping[str, str],
                          read_timeout: float) -> AsyncIterator[dict[str, Any]]:
        raise api.ApiError(410, "Gone")
        yield {}  # an async generator, like the real one


def _listing(*names: str) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": "1"},
            "items": [{"metadata": {"name": n}, "spec": {}} for n in names]}


def _run_watch(client: ScriptedClient, optional: bool) -> tuple[reflector.Watch, list[int]]:
    async def scenario() -> tuple[reflector.Watch, list[int]]:
        sizes: list[int] = []
        watch = reflector.Watch(client, "/apis/x/v1/namespaces/f/fluxreports",
                                lambda: sizes.append(len(watch.objects)), optional=optional)
        task = asyncio.create_task(watch.run())
        await asyncio.wait_for(client.script_done.wait(), 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return watch, sizes
    return asyncio.run(scenario())


def test_an_optional_kind_that_disappears_loses_its_objects(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The FluxReport CRD is deleted (the list answers 404): its objects go too."""
    monkeypatch.setattr(reflector, "ABSENT_RETRY_S", 0.0)
    client = ScriptedClient([_listing("flux"), api.ApiError(404, "the server could not find")])
    watch, sizes = _run_watch(client, optional=True)
    assert watch.objects == {}
    assert watch.error is None  # absent is not failing
    assert watch.synced.is_set()
    assert sizes == [1, 0]  # listed one, then told the inventory it is gone


def test_an_optional_kind_absent_from_the_start_notifies_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reflector, "ABSENT_RETRY_S", 0.0)
    client = ScriptedClient([api.ApiError(404, "x"), api.ApiError(404, "x")])
    watch, sizes = _run_watch(client, optional=True)
    assert (watch.objects, sizes, watch.synced.is_set()) == ({}, [], True)


def _case(namespace: str, name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}"},
            "spec": {"title": "x"}, "status": {}}


def test_an_event_watch_pages_hands_over_objects_and_reports_what_a_relist_lost() -> None:
    """How the SupportCases are watched: every object goes to ``on_event``, in pages; names
    repeat across namespaces; a case deleted while no watch ran is reported DELETED; and a
    handler that raises loses that one event, not the watch."""
    first = {"metadata": {"resourceVersion": "5", "continue": "page 2"},
             "items": [_case("a", "same"), _case("b", "same")]}
    second = {"metadata": {"resourceVersion": "5"}, "items": [_case("a", "other")]}
    relist = {"metadata": {"resourceVersion": "9"},
              "items": [_case("a", "same"), _case("a", "bad")]}
    client = ScriptedClient([first, second, relist])
    seen: list[tuple[str, str, bool]] = []

    def on_event(kind: str, obj: Mapping[str, Any]) -> None:
        name = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        if name == "a/bad":
            raise KeyError("spec")
        seen.append((kind, name, "spec" in obj))  # the whole object; identity when DELETED

    async def scenario() -> reflector.Watch:
        watch = reflector.Watch(client, "/apis/x/v1/supportcases", lambda: None,
                                on_event=on_event, page_size=2)
        task = asyncio.create_task(watch.run())
        await asyncio.wait_for(client.script_done.wait(), 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return watch

    watch = asyncio.run(scenario())
    assert [path for _, path in client.requests][:2] == ["/apis/x/v1/supportcases?limit=2",
                                "/apis/x/v1/supportcases?limit=2&continue=page+2"]
    assert seen == [("ADDED", "a/same", True), ("ADDED", "b/same", True),
                    ("ADDED", "a/other", True), ("ADDED", "a/same", True),
                    ("DELETED", "b/same", False), ("DELETED", "a/other", False)]
    assert sorted(watch.objects) == ["a/bad", "a/same"]
    assert watch.objects["a/same"] == {"metadata": {"name": "same", "namespace": "a",
                                                    "uid": "uid-same"}}


class RecoveringClient(ScriptedClient):
    """Its API server is down during the first two waits and comes back during the third."""

    async def wait_recovery(self, timeout: float) -> bool:
        self.waits.append(timeout)
        await asyncio.sleep(0)
        return len(self.waits) == 3


def test_the_backoff_starts_again_when_an_outage_ends() -> None:
    """A kube-apiserver that has just started refuses lists with 403 until its authorizer
    has synced (seen in make test): those are retried after 0.5 s, not after the 10 s the
    outage grew the backoff to."""
    down = aiohttp.ClientConnectionError("Connect call failed")
    refused = api.ApiError(403, "deployments.apps is forbidden")
    client = RecoveringClient([down, down, down, refused, refused, _listing("flux")])
    watch, _ = _run_watch(client, optional=False)
    assert client.waits == [0.5, 1, 2, 0.5, 1]
    assert list(watch.objects) == ["flux"]
    assert watch.error is None


def test_a_required_kind_keeps_its_objects_on_a_404(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only optional kinds are 'absent'; a 404 elsewhere is a failure shown as such."""
    client = ScriptedClient([_listing("flux"), api.ApiError(404, "x")])
    watch, _ = _run_watch(client, optional=False)
    assert list(watch.objects) == ["flux"]
    assert watch.error == "HTTP 404: x"


def version_client(answers: list[dict[str, Any] | Exception]) -> fakes.FakeClient:
    """The fake API server, whose ``/version`` answers ``answers`` in turn."""
    client = fakes.FakeClient()
    client.answers["/version"] = answers
    return client


@pytest.mark.parametrize("error", [
    aiohttp.ServerDisconnectedError(), aiohttp.ClientPayloadError("cut"),
    aiohttp.ClientConnectionError("reset"), TimeoutError(), ValueError("not JSON"),
    api.ApiError(503, "unavailable")], ids=type)
def test_the_server_version_never_crashes_the_start_up(error: Exception) -> None:
    """aiohttp errors that are not OSError do not end the start-up."""
    client = version_client([error, {"gitVersion": "v1.35.0"}])
    flux = inventory.Inventory(client, ("flux-system",))
    assert asyncio.run(flux.load_server_version()) is False
    assert flux.kubernetes_version == ""
    # ... and it is read later, as soon as the API server answers.
    asyncio.run(flux._retry_server_version())
    assert (flux.kubernetes_version, client.waits) == ("v1.35.0", [])


def test_the_server_version_retries_with_a_growing_delay() -> None:
    down = aiohttp.ServerDisconnectedError()
    client = version_client([down, down, down, {"gitVersion": "v1.35.0"}])
    flux = inventory.Inventory(client, ("flux-system",))
    asyncio.run(flux._retry_server_version())
    assert (flux.kubernetes_version, client.waits) == ("v1.35.0", [1.0, 2.0, 4.0])


def test_deployments_of_every_flux_namespace_are_kept() -> None:
    """``deployments`` holds one watch per Flux namespace."""
    flux = inventory.Inventory(version_client([]), ("flux-system", "flux-extra"))
    assert {ns: w.path for ns, w in flux.deployments.items()} == {
        "flux-system": "/apis/apps/v1/namespaces/flux-system/deployments",
        "flux-extra": "/apis/apps/v1/namespaces/flux-extra/deployments"}
    assert all(w in flux.watches for w in flux.deployments.values())
