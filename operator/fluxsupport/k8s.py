"""A small asyncio Kubernetes client for the writes the operator makes itself.

kopf delivers the watch events; status patches and Events go through this client, so that
the deadline scheduler, which runs outside any kopf handler, writes exactly like the
handlers do. Credentials come from the kubeconfig or the in-cluster ServiceAccount, read
by the official client's loaders.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import os
import ssl
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import kubernetes

from fluxsupport.constants import REPORTING_COMPONENT

logger = logging.getLogger(__name__)

EVENT_WORKERS = 4


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclasses.dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    plural: str
    name: str
    namespace: str | None = None
    uid: str | None = None

    @property
    def path(self) -> str:
        group_version = self.api_version
        prefix = "/api/" if "/" not in group_version else "/apis/"
        scope = f"/namespaces/{self.namespace}" if self.namespace else ""
        return f"{prefix}{group_version}{scope}/{self.plural}/{self.name}"


def _load_configuration() -> Any:
    configuration = kubernetes.client.Configuration()
    # The client reads $KUBECONFIG when it is imported; `run --kubeconfig` sets it later.
    path = os.environ.get("KUBECONFIG") or None
    try:
        kubernetes.config.load_kube_config(config_file=path, client_configuration=configuration)
    except (kubernetes.config.ConfigException, FileNotFoundError, TypeError):
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    return configuration


class Client:
    """Status patches and Events over one pooled aiohttp session."""

    def __init__(self, configuration: Any | None = None, max_connections: int = 64) -> None:
        self._configuration = configuration or _load_configuration()
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._events: asyncio.Queue[tuple[ObjectRef, str, str, str]] = asyncio.Queue()
        self._event_workers: list[asyncio.Task[None]] = []
        self._status_writes = 0
        self._writes_idle = asyncio.Event()

    def _ssl_context(self) -> ssl.SSLContext | bool:
        cfg = self._configuration
        if not cfg.verify_ssl:
            return False
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
        return context

    async def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections,
                                             ssl=self._ssl_context())
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=30, connect=5))
        return self._session

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        cfg = self._configuration
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        headers = {"Accept": "application/json"}
        token = cfg.get_api_key_with_prefix("authorization") or cfg.get_api_key_with_prefix(
            "BearerToken")
        if token:
            headers["Authorization"] = token
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        session = await self._ensure_session()
        data = None if body is None else json.dumps(body)
        async with session.request(method, self._configuration.host + path, data=data,
                                   headers=self._headers(content_type if data else None)
                                   ) as response:
            text = await response.text()
            if response.status >= 400:
                try:
                    message = json.loads(text).get("message", text)
                except ValueError:
                    message = text
                raise ApiError(response.status, message)
            result: dict[str, Any] = json.loads(text) if text else {}
            return result

    async def watch_lines(self, path: str, params: Mapping[str, str],
                          read_timeout: float) -> AsyncIterator[dict[str, Any]]:
        """Yield watch events of ``path`` until the server closes the stream."""
        session = await self._ensure_session()
        timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=read_timeout)
        async with session.get(self._configuration.host + path, params=dict(params),
                               headers=self._headers(), timeout=timeout) as response:
            if response.status >= 400:
                raise ApiError(response.status, await response.text())
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)

    async def patch_status(self, ref: ObjectRef, status: Mapping[str, Any],
                           resource_version: str | None) -> dict[str, Any]:
        """Merge-patch ``status``; with ``resource_version``, fail with 409 if it is stale."""
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        self._status_writes += 1
        try:
            return await self.request("PATCH", ref.path + "/status", body,
                                      "application/merge-patch+json")
        finally:
            self._status_writes -= 1
            if not self._status_writes:
                self._writes_idle.set()

    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        """Post a core/v1 Event; cluster-scoped objects get theirs in ``default``."""
        now = datetime.datetime.now(datetime.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        namespace = ref.namespace or "default"
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{ref.name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {"apiVersion": ref.api_version, "kind": ref.kind,
                               "name": ref.name, "namespace": ref.namespace or "",
                               "uid": ref.uid or ""},
            "type": type_, "reason": reason, "message": message[:1024],
            "source": {"component": REPORTING_COMPONENT},
            "reportingComponent": REPORTING_COMPONENT, "reportingInstance": REPORTING_COMPONENT,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        await self.request("POST", f"/api/v1/namespaces/{namespace}/events", event)

    def post_event_soon(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        """Queue an Event. A few workers post them, so that a burst of transitions never
        delays the status writes it comes with, and a lost Event never fails a reconcile."""
        self._events.put_nowait((ref, type_, reason, message))

    def start_event_workers(self) -> None:
        """Start the Event posters. Before kopf starts: kopf waits 5 s at exit for any task
        created after it, and cancels them only then."""
        self._event_workers = [asyncio.get_running_loop().create_task(self._post_events())
                               for _ in range(EVENT_WORKERS)]

    async def _post_events(self) -> None:
        while True:
            ref, type_, reason, message = await self._events.get()
            # Status writes first: in a wave of breaches every Event would otherwise delay
            # the next case's Breached condition.
            while self._status_writes:
                self._writes_idle.clear()
                await self._writes_idle.wait()
            try:
                await self.post_event(ref, type_, reason, message)
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as error:
                logger.warning("could not post Event %s for %s/%s: %s", reason,
                               ref.kind, ref.name, error)

    async def close(self) -> None:
        for worker in self._event_workers:
            worker.cancel()
        if self._session is not None:
            await self._session.close()
