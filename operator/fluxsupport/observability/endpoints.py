"""The operator's HTTP endpoints: /metrics for Prometheus, /healthz and /readyz for probes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from fluxsupport.observability import metrics


class HealthState:
    """What the probes report. Ready once kopf has run its startup handler; healthy while
    the event loop answers and no registered check reports a problem."""

    def __init__(self) -> None:
        self.ready_flag = asyncio.Event()
        self.started = time.monotonic()
        #: ``standalone``, or ``active``/``standby`` with peering; set by the runtime.
        self.peering: Callable[[], str] = lambda: "standalone"
        #: This replica's peering identity, also the ``reportingInstance`` of its Events.
        self.identity = ""
        #: Parts that run beside the event loop's handlers (the Event workers): each returns
        #: what is wrong with it, nothing while it works.
        self.checks: list[Callable[[], list[str]]] = []

    @property
    def ready(self) -> bool:
        return self.ready_flag.is_set()

    def problems(self) -> list[str]:
        return [problem for check in self.checks for problem in check()]


class Server:
    """The HTTP server of the endpoints. ``start`` fails (OSError) when the port is taken:
    the run loop starts it before kopf, so that the process stops with a clear error instead
    of a startup handler retrying for ever."""

    def __init__(self, host: str, port: int, health: HealthState) -> None:
        self.host = host
        self.port = port
        self.health = health
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = await start(self.host, self.port, self.health)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


async def start(host: str, port: int, health: HealthState) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        # Answering at all proves the event loop, which runs every handler, is not stuck; a
        # part that runs beside the handlers (an Event worker down or stuck) fails it.
        problems = health.problems()
        body: dict[str, object] = {
            "status": "failing" if problems else "ok",
            "uptime_s": round(time.monotonic() - health.started, 1),
            "peering": health.peering(), "identity": health.identity}
        if problems:
            body["problems"] = problems
        return web.json_response(body, status=503 if problems else 200)

    async def readyz(_: web.Request) -> web.Response:
        status = 200 if health.ready else 503
        return web.json_response({"ready": health.ready}, status=status)

    app = web.Application()
    # prometheus-client's handler negotiates the format (OpenMetrics when Prometheus asks for
    # it), honours ?name[]= filters and compresses when the scraper accepts gzip.
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.REGISTRY))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
