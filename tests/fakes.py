"""The one fake API server of the unit tests: an in-memory ``kube.api.KubeClient``.

It stores objects by path and answers as the API server does where the operator relies on
it: a create of an existing name is a 409, a replace with a stale resourceVersion a 409, a
read or delete of a missing object a 404, a list filters by ``labelSelector`` (``k=v``,
``k!=v``), status writes are JSON merge patches (RFC 7386). Status writes are kept apart as
well (``status``, under the object's name and under its uid), since most tests write the
status of objects they never stored. Watches deliver nothing.

Failures are set by the test: ``failures`` status writes fail with ``failure``, ``outage``
requests fail with a 503, ``hold`` keeps status writes waiting, ``answers`` scripts the
answers of one path, ``no_requests`` fails the test at the first request.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from fluxsupport.kube import api

#: The creationTimestamp of created objects that do not set one.
CREATED = "2026-12-02T10:00:00Z"


def merge(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` applied to ``current`` as a JSON merge patch, as a new dict."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def split(path: str) -> tuple[str, str | None]:
    """The collection of a path and the object's name in it (None for the collection):
    ``/api/v1/namespaces/ns/configmaps/x`` -> ``(/api/v1/namespaces/ns/configmaps, x)``."""
    parts = path.strip("/").split("/")
    base = 2 if parts[0] == "api" else 3  # api/v1 or apis/<group>/<version>
    if len(parts) > base + 2 and parts[base] == "namespaces":
        base += 2
    collection = "/" + "/".join(parts[:base + 1])
    return collection, parts[base + 1] if len(parts) > base + 1 else None


def _selected(obj: Mapping[str, Any], selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, _, value = term.partition("!=")
            if labels.get(key) == value:
                return False
        else:
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
    return True


class FakeClient:
    """An in-memory API server; the attributes below are what tests set and read."""

    def __init__(self) -> None:
        #: Stored objects by path.
        self.objects: dict[str, dict[str, Any]] = {}
        #: The status of every object written with patch_status, under its name and its uid.
        self.status: dict[str, dict[str, Any]] = {}
        #: The last resourceVersion given out.
        self.version = 100
        #: (method, path) of every request, in order, failed ones included.
        self.requests: list[tuple[str, str]] = []
        #: (method, name) of every create, replace and delete that took effect.
        self.writes: list[tuple[str, str]] = []
        #: Status writes that took effect.
        self.status_writes = 0
        #: The next ``failures`` status writes fail with ``failure``.
        self.failures = 0
        self.failure: Exception = api.ApiError(409, "the object has been modified")
        #: The next ``outage`` requests fail with a 503, as while etcd is down.
        self.outage = 0
        #: While set to an unset Event, status writes wait for it; ``held`` tells one waits.
        self.hold: asyncio.Event | None = None
        self.held = asyncio.Event()
        #: Answers (or errors) for GET of a path, one per request, before the stored objects.
        self.answers: dict[str, list[dict[str, Any] | Exception]] = {}
        #: True: a request fails the test (the code under test must not ask the API server).
        self.no_requests = False
        #: The timeouts wait_recovery was called with.
        self.waits: list[float] = []
        self.recovery: list[Callable[[], None]] = []

    # -- set up and read by tests ----------------------------------------------------------

    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)

    def put(self, path: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store ``obj`` under ``path`` (a collection: under its name) as it is, with a new
        resourceVersion; what a person or another controller wrote."""
        collection, name = split(path)
        stored = copy.deepcopy(dict(obj))
        metadata = stored.setdefault("metadata", {})
        name = name or metadata["name"]
        metadata.setdefault("name", name)
        metadata["resourceVersion"] = self._next_version()
        self.objects[f"{collection}/{name}"] = stored
        return copy.deepcopy(stored)

    def named(self, collection: str) -> dict[str, dict[str, Any]]:
        """The objects stored in ``collection``, by name (the stored objects themselves)."""
        return {path.rsplit("/", 1)[1]: obj for path, obj in self.objects.items()
                if path.rsplit("/", 1)[0] == collection}

    def add_secret(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        self.put(f"/api/v1/namespaces/{namespace}/secrets/{name}", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {key: base64.b64encode(value.encode()).decode()
                     for key, value in data.items()}})

    @property
    def events(self) -> dict[str, dict[str, Any]]:
        """The Events posted, by name."""
        return {path.rsplit("/", 1)[1]: obj for path, obj in self.objects.items()
                if path.rsplit("/", 2)[1] == "events"}

    def count(self, method: str, suffix: str = "") -> int:
        """Requests of ``method`` whose path (without its query) ends with ``suffix``."""
        return sum(1 for made, path in self.requests
                   if made == method and path.partition("?")[0].endswith(suffix))

    def recover(self) -> None:
        """The API server is back: what the client tells ``on_recovery`` listeners."""
        for listener in self.recovery:
            listener()

    # -- kube.api.KubeClient ---------------------------------------------------------------

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        self.requests.append((method, path))
        if self.no_requests:
            raise AssertionError(f"no API request expected: {method} {path}")
        if self.outage:
            self.outage -= 1
            raise api.ApiError(503, "etcd is down")
        bare, _, query = path.partition("?")
        scripted = self.answers.get(bare)
        if method == "GET" and scripted:
            answer = scripted.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return copy.deepcopy(answer)
        collection, name = split(bare)
        if name is None:
            if method == "GET":
                selector = urllib.parse.parse_qs(query).get("labelSelector", [""])[0]
                return {"metadata": {"resourceVersion": str(self.version)},
                        "items": [copy.deepcopy(obj) for obj in self.named(collection).values()
                                  if _selected(obj, selector)]}
            if method == "POST":
                return self._create(collection, body)
            raise AssertionError(f"unexpected {method} {path}")
        held = self.objects.get(f"{collection}/{name}")
        if held is None:
            raise api.ApiError(404, f'"{name}" not found')
        if method == "GET":
            return copy.deepcopy(held)
        if method == "DELETE":
            del self.objects[f"{collection}/{name}"]
            self.writes.append((method, name))
            return {"kind": "Status", "status": "Success"}
        if method == "PUT":
            return self._replace(collection, name, held, body)
        if method == "PATCH":
            self.objects[f"{collection}/{name}"] = merge(held, {
                **body, "metadata": {**(body.get("metadata") or {}),
                                     "resourceVersion": self._next_version()}})
            self.writes.append((method, name))
            return copy.deepcopy(self.objects[f"{collection}/{name}"])
        raise AssertionError(f"unexpected {method} {path}")

    def _create(self, collection: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        if f"{collection}/{name}" in self.objects:
            raise api.ApiError(409, f'"{name}" already exists')
        stored = copy.deepcopy(dict(body))
        metadata = stored["metadata"]
        metadata.setdefault("uid", f"uid-{name}")
        metadata.setdefault("creationTimestamp", CREATED)
        metadata["resourceVersion"] = self._next_version()
        metadata["generation"] = 1
        self.objects[f"{collection}/{name}"] = stored
        self.writes.append(("POST", name))
        return copy.deepcopy(stored)

    def _replace(self, collection: str, name: str, held: Mapping[str, Any],
                 body: Mapping[str, Any]) -> dict[str, Any]:
        if body["metadata"].get("resourceVersion") != held["metadata"]["resourceVersion"]:
            raise api.ApiError(409, "the object has been modified")
        stored = copy.deepcopy(dict(body))
        stored["metadata"]["resourceVersion"] = self._next_version()
        stored["metadata"]["generation"] = held["metadata"].get("generation", 1) + (
            held.get("spec") != body.get("spec"))
        if "status" in held:  # the status subresource: a replace leaves it as it is
            stored["status"] = copy.deepcopy(held["status"])
        self.objects[f"{collection}/{name}"] = stored
        self.writes.append(("PUT", name))
        return copy.deepcopy(stored)

    async def watch_lines(self, path: str, params: Mapping[str, str],
                          read_timeout: float) -> AsyncIterator[dict[str, Any]]:
        await asyncio.Event().wait()  # a watch on which nothing happens
        yield {}

    async def patch_status(self, ref: api.ObjectRef, status: Mapping[str, Any],
                           resource_version: str | None) -> dict[str, Any]:
        if self.hold is not None and not self.hold.is_set():
            self.held.set()
            await self.hold.wait()
        if self.failures:
            self.failures -= 1
            raise self.failure
        stored = next((self.status[key] for key in (ref.uid, ref.name)
                       if key and key in self.status), {})
        merged = merge(stored, status)
        for key in (ref.name, ref.uid):
            if key:
                self.status[key] = merged
        self.status_writes += 1
        version = self._next_version()
        held = self.objects.get(ref.path)
        if held is not None:
            held["status"] = copy.deepcopy(merged)
            held["metadata"]["resourceVersion"] = version
        return {"metadata": {"name": ref.name, "resourceVersion": version},
                "status": copy.deepcopy(merged)}

    async def writes_idle(self) -> None:
        return None

    def on_recovery(self, listener: Callable[[], None]) -> None:
        self.recovery.append(listener)

    async def wait_recovery(self, timeout: float) -> bool:
        self.waits.append(timeout)
        await asyncio.sleep(0)
        return False


if TYPE_CHECKING:
    # mypy (make lint) checks that the fake offers what the operator's modules use.
    _CHECKED: api.KubeClient = FakeClient()
