"""List and watch a few kinds in a few namespaces, keeping small projections in memory.

The Flux inventory lives in one or two namespaces, so these watches are namespaced: the
operator needs no cluster-wide read on Deployments and Pods. A 410 Gone or a broken
stream leads to a fresh list, as client-go's reflector does.

With ``on_event`` a watch hands every object to its owner and keeps only names: how the
SupportCases and SecurityBulletins are watched, by their controllers. It is the operator's one
watch mechanism: kopf's own work per event, beside the handlers, was 29% of the operator's CPU
in a burst of new cases (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from fluxsupport import lifecycle
from fluxsupport.kube import api

logger = logging.getLogger(__name__)

Projection = Callable[[Mapping[str, Any]], dict[str, Any]]
#: ``on_event(type, object)``: ADDED for each listed object, then the watch's events, and
#: DELETED for an object a fresh list no longer holds.
EventHandler = Callable[[str, Mapping[str, Any]], None]
WATCH_TIMEOUT_S = 300
ABSENT_RETRY_S = 30.0


def default_projection(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Drop managedFields and last-applied annotations: they dominate the size."""
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items()
                if k in ("name", "namespace", "uid", "labels", "resourceVersion", "generation")}
    return {**{k: v for k, v in obj.items() if k != "metadata"}, "metadata": metadata}


def identity(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What an ``on_event`` watch keeps of an object: enough to report its deletion."""
    metadata = obj.get("metadata") or {}
    return {"metadata": {k: metadata[k] for k in ("name", "namespace", "uid") if k in metadata}}


class Watch:
    """One list+watch loop; ``objects`` maps name to the latest projection (with
    ``on_event``: namespace/name to the object's identity)."""

    def __init__(self, client: api.KubeClient, path: str, on_change: Callable[[], None], *,
                 optional: bool = False, projection: Projection = default_projection,
                 on_event: EventHandler | None = None, page_size: int = 0) -> None:
        self.client = client
        self.path = path
        self.on_change = on_change
        self.optional = optional
        self.projection = identity if on_event is not None else projection
        self.on_event = on_event
        #: Objects per list request (``limit``); 0 lists all at once. A 10,000-case list
        #: parsed at once leaves the process 200 MB larger.
        self.page_size = page_size
        self.objects: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        #: Why the last list or watch failed, until a list succeeds again.
        self.error: str | None = None
        self._tasks = lifecycle.Tasks()

    async def start(self) -> None:
        self._tasks.spawn(self.run(), name=f"watch {self.path}")

    async def stop(self) -> None:
        await self._tasks.cancel()

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                version = await self._list()
                backoff = 0.5
                await self._watch(version)
            except api.ApiError as error:
                if error.status == 404 and self.optional:
                    # The kind is not installed (FluxReport without the Flux Operator), or
                    # no longer: its CRD was deleted, and its objects with it.
                    self._absent()
                    await asyncio.sleep(ABSENT_RETRY_S)
                    continue
                if error.status != 410:
                    self._failed(f"{error}")
                    logger.warning("watch %s failed: %s; listing again in %.1fs",
                                   self.path, error, backoff)
                    backoff = await self._wait(backoff)
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                self._failed(str(error) or type(error).__name__)
                logger.warning("watch %s interrupted: %s; listing again in %.1fs",
                               self.path, error or type(error).__name__, backoff)
                # Relist as soon as the API server is back, not up to 10 s later.
                backoff = await self._wait(backoff)
            except ValueError as error:
                # A response that does not parse. The task must not end: nothing would
                # restart it, and the objects it holds would silently go stale.
                self._failed(f"unreadable response: {error}")
                logger.warning("watch %s: unreadable response (%s); listing again in %.1fs",
                               self.path, error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)

    async def _wait(self, backoff: float) -> float:
        """Wait ``backoff`` (less if an outage ends) and return the next one. After an outage
        it starts again at 0.5 s: a kube-apiserver that has just started answers lists with
        403 until its authorizer has synced, and a backoff grown to 10 s by the outage would
        leave the inventory unlisted that long."""
        if await self.client.wait_recovery(backoff):
            return 0.5
        return min(backoff * 2, 10)

    def _absent(self) -> None:
        """An absent kind has no objects: keeping the last ones would report components (and
        verdicts) from a CRD that is gone."""
        changed = bool(self.objects) or self.error is not None
        self.objects = {}
        self.error = None
        self.synced.set()
        if changed:
            self.on_change()

    def _failed(self, reason: str) -> None:
        first = self.error is None
        self.error = reason
        if first:
            self.on_change()

    def _key(self, obj: Mapping[str, Any]) -> str:
        metadata = obj["metadata"]
        # An on_event watch lists a namespaced kind in every namespace: names repeat.
        if self.on_event is not None and metadata.get("namespace"):
            return f"{metadata['namespace']}/{metadata['name']}"
        return str(metadata["name"])

    def _deliver(self, kind: str, obj: Mapping[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, obj)
        except Exception:  # one bad object must not end the watch of all the others
            logger.exception("watch %s: handling %s %s failed", self.path, kind,
                             (obj.get("metadata") or {}).get("name"))

    async def _list(self) -> str:
        listed: dict[str, dict[str, Any]] = {}
        token = ""
        while True:
            query = {"limit": str(self.page_size)} if self.page_size else {}
            if token:
                query["continue"] = token
            separator = "&" if "?" in self.path else "?"
            path = self.path + (separator + urllib.parse.urlencode(query) if query else "")
            listing = await self.client.request("GET", path)
            for item in listing.get("items") or []:
                listed[self._key(item)] = self.projection(item)
                self._deliver("ADDED", item)
            metadata = listing.get("metadata") or {}
            token = metadata.get("continue") or ""
            if not token:
                break
        gone = [obj for key, obj in self.objects.items() if key not in listed]
        self.error = None
        self.objects = listed
        for obj in gone:  # deleted while no watch ran
            self._deliver("DELETED", obj)
        self.synced.set()
        self.on_change()
        return str(metadata.get("resourceVersion", ""))

    async def _watch(self, version: str) -> None:
        params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(WATCH_TIMEOUT_S)}
        while True:
            async for event in self.client.watch_lines(self.path, params,
                                                       read_timeout=WATCH_TIMEOUT_S + 30):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise api.ApiError(int(obj.get("code", 500)), str(obj.get("message")))
                params["resourceVersion"] = str(
                    (obj.get("metadata") or {}).get("resourceVersion", params["resourceVersion"]))
                if kind == "BOOKMARK":
                    continue
                key = self._key(obj)
                if kind == "DELETED":
                    self.objects.pop(key, None)
                else:
                    self.objects[key] = self.projection(obj)
                self._deliver(str(kind), obj)
                self.on_change()
