"""A small asyncio Kubernetes client: every read, watch and write of the operator.

The watches of every kind (kube/reflector.py), the controllers' writes (through
kube/objects.py and the status write path) and the Events (kube/events.py) all go through this
client, so that they share one connection pool, one outage probe and one metric of API
requests. Only kopf's peering keep-alive does not (app/__init__.py). Credentials come from
kube/credentials.py, the same loader kopf logs in with: one identity for reads and writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

import aiohttp

from fluxsupport.kube import credentials
from fluxsupport.observability.metrics import API_REQUESTS

logger = logging.getLogger(__name__)

#: How often the API server is probed while it is unreachable.
PROBE_INTERVAL_S = 0.5


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        #: The API server's own words (its Status message, else the body).
        self.message = message


#: What a request raises when the API server cannot be reached at all.
USER_AGENT = "fluxsupport"
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


def log_write_failure(log: logging.Logger, what: str, error: Exception, delay: float) -> None:
    """A conflict is routine (the object changed meanwhile); anything else is worth a warning."""
    if isinstance(error, ApiError) and error.status == 409:
        log.debug("%s: status write conflict; retrying in %ss", what, delay)
    else:
        log.warning("%s: status write failed (%s); retrying in %ss", what, error, delay)


def is_transient(error: BaseException) -> bool:
    """An outage rather than a refusal: no connection, a timeout, a 5xx or a 429.

    These say nothing about the request, so it is worth repeating once the API server is
    back; a 4xx (invalid, forbidden, conflict) would fail the same way again.
    """
    if isinstance(error, ApiError):
        return error.status >= 500 or error.status == 429
    return isinstance(error, TRANSPORT_ERRORS)


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


class KubeClient(Protocol):
    """What the operator's modules use of the API server client: ``Client`` below, or the
    in-memory API server of the unit tests (tests/fakes.py)."""

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json") -> dict[str, Any]: ...

    def watch_lines(self, path: str, params: Mapping[str, str],
                    read_timeout: float) -> AsyncIterator[dict[str, Any]]: ...

    async def patch_status(self, ref: ObjectRef, status: Mapping[str, Any],
                           resource_version: str | None) -> dict[str, Any]: ...

    async def writes_idle(self) -> None: ...

    def on_recovery(self, listener: Callable[[], None]) -> None: ...

    async def wait_recovery(self, timeout: float) -> bool: ...


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The non-empty lines of a watch stream, however long.

    Not ``async for line in content``: aiohttp raises LineTooLong past 128 KiB, and one large
    object (a ConfigMap holding a 1 MiB OpenVEX document) would end the watch for good.
    """
    pending = bytearray()
    async for chunk in content.iter_any():
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            if pending[start:end].strip():
                yield bytes(pending[start:end])
            start = end + 1
        del pending[:start]
    if pending.strip():
        yield bytes(pending)


class Client:
    """Status patches, watches and Events (events.py) over one pooled aiohttp session."""

    def __init__(self, configuration: Any | None = None, max_connections: int = 64) -> None:
        self._configuration = configuration or credentials.load().configuration
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._status_writes = 0
        self._writes_idle = asyncio.Event()
        #: Set while requests get through; cleared by a transient failure until a probe of
        #: /readyz answers again.
        self.reachable = asyncio.Event()
        self.reachable.set()
        self._recovery_listeners: list[Callable[[], None]] = []
        self._prober: asyncio.Task[None] | None = None
        self._closing = False

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
        # The API server names the field manager of our writes after the User-Agent.
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        token = cfg.get_api_key_with_prefix("authorization") or cfg.get_api_key_with_prefix(
            "BearerToken")
        if token:
            headers["Authorization"] = token
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def on_recovery(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` each time the API server answers again after an outage.

        Failed status writes are retried with a growing delay (up to 30 s); without this a
        breach that fell inside an outage could wait that long after the API server is back.
        """
        self._recovery_listeners.append(listener)

    def note_failure(self, error: BaseException) -> None:
        """Record a failed request; a transient one starts probing for the recovery."""
        if self._closing or not is_transient(error) or not self.reachable.is_set():
            return
        self.reachable.clear()
        logger.debug("request failed (%s); probing /readyz every %.1fs",
                     str(error) or type(error).__name__, PROBE_INTERVAL_S)
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        """Poll /readyz until it answers. Listeners hear of it only if a probe failed first:
        a 5xx about one object (too large for etcd, say) is no outage, and retrying it at
        every probe would spin."""
        outage = False
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            try:
                session = await self._ensure_session()
                async with session.get(self._configuration.host + "/readyz",
                                       headers=self._headers(),
                                       timeout=aiohttp.ClientTimeout(total=2)) as response:
                    # Anything but a 5xx means the API server and its storage are back: a
                    # hardened cluster may answer 401/403 to /readyz.
                    if response.status >= 500:
                        outage = self._outage(outage, f"/readyz answered {response.status}")
                        continue
            except TRANSPORT_ERRORS as error:
                outage = self._outage(outage, str(error) or type(error).__name__)
                continue
            break
        self.reachable.set()
        if outage:
            logger.warning("API server reachable again")
            for listener in self._recovery_listeners:
                listener()

    @staticmethod
    def _outage(known: bool, why: str) -> bool:
        if not known:
            logger.warning("API server unreachable (%s); retrying when it is back", why)
        return True

    async def wait_recovery(self, timeout: float) -> bool:
        """Sleep ``timeout``, or less if the API server comes back meanwhile: the backoff of
        a retry loop that should resume as soon as the outage ends. True if an outage ended:
        the caller's backoff measured the outage and may start again."""
        if self.reachable.is_set():
            await asyncio.sleep(timeout)
            return False
        with contextlib.suppress(TimeoutError):  # asyncio.timeout: see Scheduler.run
            async with asyncio.timeout(timeout):
                await self.reachable.wait()
        return self.reachable.is_set()

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        try:
            return await self._request(method, path, body, content_type)
        except TRANSPORT_ERRORS as error:
            API_REQUESTS.labels(method, "transport").inc()
            self.note_failure(error)
            raise
        except ApiError as error:
            self.note_failure(error)
            raise

    async def _request(self, method: str, path: str, body: Any,
                       content_type: str) -> dict[str, Any]:
        session = await self._ensure_session()
        data = None if body is None else json.dumps(body)
        async with session.request(method, self._configuration.host + path, data=data,
                                   headers=self._headers(content_type if data else None)
                                   ) as response:
            # Counted once the status is known: a body cut off after it is still that answer.
            API_REQUESTS.labels(method, str(response.status)).inc()
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
        answered = False
        try:
            async with session.get(self._configuration.host + path, params=dict(params),
                                   headers=self._headers(), timeout=timeout) as response:
                answered = True
                API_REQUESTS.labels("GET", str(response.status)).inc()
                if response.status >= 400:
                    raise ApiError(response.status, await response.text())
                async for line in _lines(response.content):
                    yield json.loads(line)
        except (ApiError, *TRANSPORT_ERRORS) as error:
            if not answered:
                API_REQUESTS.labels("GET", "transport").inc()
            self.note_failure(error)
            raise

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

    async def writes_idle(self) -> None:
        """Return once no status write is in flight: Events yield to them (see events.py)."""
        while self._status_writes:
            self._writes_idle.clear()
            await self._writes_idle.wait()

    async def close(self) -> None:
        self._closing = True
        if self._prober is not None:
            self._prober.cancel()
        if self._session is not None:
            await self._session.close()
