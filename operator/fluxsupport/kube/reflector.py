"""List and watch a few kinds in a few namespaces, keeping small projections in memory.

The Flux inventory lives in one or two namespaces, so these watches are namespaced: the
operator needs no cluster-wide read on Deployments and Pods. A 410 Gone or a broken
stream leads to a fresh list, as client-go's reflector does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from fluxsupport.kube import api

logger = logging.getLogger(__name__)

Projection = Callable[[Mapping[str, Any]], dict[str, Any]]
WATCH_TIMEOUT_S = 300
ABSENT_RETRY_S = 30.0


def default_projection(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Drop managedFields and last-applied annotations: they dominate the size."""
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items()
                if k in ("name", "namespace", "uid", "labels", "resourceVersion", "generation")}
    return {**{k: v for k, v in obj.items() if k != "metadata"}, "metadata": metadata}


class Watch:
    """One list+watch loop; ``objects`` maps name to the latest projection."""

    def __init__(self, client: api.Client, path: str, on_change: Callable[[], None], *,
                 optional: bool = False, projection: Projection = default_projection) -> None:
        self.client = client
        self.path = path
        self.on_change = on_change
        self.optional = optional
        self.projection = projection
        self.objects: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        #: Why the last list or watch failed, until a list succeeds again.
        self.error: str | None = None

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

    async def _list(self) -> str:
        listing = await self.client.request("GET", self.path)
        self.error = None
        self.objects = {item["metadata"]["name"]: self.projection(item)
                        for item in listing.get("items") or []}
        self.synced.set()
        self.on_change()
        return str((listing.get("metadata") or {}).get("resourceVersion", ""))

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
                name = obj["metadata"]["name"]
                if kind == "DELETED":
                    self.objects.pop(name, None)
                else:
                    self.objects[name] = self.projection(obj)
                self.on_change()
