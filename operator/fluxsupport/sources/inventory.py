"""The live Flux inventory: namespaced watches on Deployments, Pods, FluxReports and
FluxInstances, turned into RunningComponents on demand."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from fluxsupport import lifecycle
from fluxsupport.domain import inventory as domain
from fluxsupport.domain.conditions import rfc3339
from fluxsupport.kube import api, objects, reflector

logger = logging.getLogger(__name__)


def _pod_projection(pod: Mapping[str, Any]) -> dict[str, Any]:
    metadata = pod.get("metadata") or {}
    return {
        "metadata": {"name": metadata.get("name"), "namespace": metadata.get("namespace"),
                     "labels": metadata.get("labels") or {}},
        "spec": {"containers": [{"name": c.get("name"), "image": c.get("image")}
                                for c in (pod.get("spec") or {}).get("containers") or []]},
        "status": {"containerStatuses": [
            {"name": s.get("name"), "imageID": s.get("imageID")}
            for s in (pod.get("status") or {}).get("containerStatuses") or []]},
    }


class Inventory:
    def __init__(self, client: api.KubeClient, namespaces: tuple[str, ...]) -> None:
        self.client = client
        self.namespaces = namespaces
        self._listeners: list[Callable[[], None]] = []
        self._cache: list[domain.RunningComponent] | None = None
        self.watches: list[reflector.Watch] = []
        self._tasks = lifecycle.Tasks()
        self.kubernetes_version = ""
        #: The Deployment watch of each Flux namespace.
        self.deployments: dict[str, reflector.Watch] = {}
        for namespace in namespaces:
            self.deployments[namespace] = self._watch(objects.DEPLOYMENTS, namespace)
            self._watch(objects.PODS, namespace, projection=_pod_projection)
            self._watch(objects.FLUXREPORTS, namespace, optional=True)
            self._watch(objects.FLUXINSTANCES, namespace, optional=True)

    def _watch(self, kind: objects.Kind, namespace: str, **options: Any) -> reflector.Watch:
        watch = objects.Objects(self.client, kind, namespace).watch(self._changed, **options)
        self.watches.append(watch)
        return watch

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        self._cache = None
        for listener in self._listeners:
            listener()

    async def start(self) -> None:
        """Read the API server's version (again later, if it fails now) and start the
        watches."""
        loaded = await self.load_server_version()
        for watch in self.watches:
            self._tasks.spawn(watch.run(), name=f"watch {watch.path}")
        if not loaded:
            self._tasks.spawn(self._retry_server_version(), name="kubernetes-version")

    async def stop(self) -> None:
        await self._tasks.cancel()

    def problems(self) -> list[str]:
        """Watches that cannot list: their objects are missing from the inventory."""
        return [f"cannot list {w.path}: {w.error}" for w in self.watches if w.error]

    def _objects(self, suffix: str) -> list[dict[str, Any]]:
        return [obj for w in self.watches if w.path.endswith(suffix)
                for obj in w.objects.values()]

    def components(self) -> list[domain.RunningComponent]:
        if self._cache is None:
            self._cache = domain.build_inventory(
                self._objects("/deployments"), self._objects("/pods"),
                self._objects("/fluxreports"), self._objects("/fluxinstances"))
        return self._cache

    async def load_server_version(self) -> bool:
        """Read the API server's version once; whether that worked.

        Never raises for an unreachable or failing API server: the version is one line of the
        diagnostics, and the start-up must not end on it (``tasks`` retries it).
        """
        try:
            version = await objects.server_version(self.client)
        except (api.ApiError, *api.TRANSPORT_ERRORS, ValueError) as error:
            logger.warning("cannot read the Kubernetes version yet: %s",
                           str(error) or type(error).__name__)
            return False
        self.kubernetes_version = str(version.get("gitVersion", ""))
        return True

    async def _retry_server_version(self) -> None:
        delay = 1.0
        while not await self.load_server_version():
            await self.client.wait_recovery(delay)
            delay = min(delay * 2, 60.0)

    def diagnostics(self) -> dict[str, Any]:
        """The SupportCase diagnostics block: what runs, as of now."""
        components = self.components()
        return {
            "collectedAt": rfc3339(datetime.datetime.now(datetime.UTC)),
            "kubernetesVersion": self.kubernetes_version,
            "fluxVersion": domain.flux_version(components) or "",
            "components": [
                {"name": c.name, "namespace": c.namespace, "component": c.component,
                 "image": c.image, "digests": list(c.digests), "version": c.tag or "",
                 "ready": bool(c.ready)}
                for c in components[:64]],
        }
