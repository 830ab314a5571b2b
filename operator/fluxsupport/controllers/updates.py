"""The cluster's FluxUpdateCheck: the live inventory against the distribution's release data,
read from a ConfigMap or from a Flux source artifact (GitRepository, OCIRepository).

One object, ``cluster``, which the operator creates: there is one Flux per cluster to check,
and a resource (rather than only metrics) makes the answer visible to ``kubectl get``. It is
recomputed whenever the inventory, a ConfigMap of the operator's namespace, or the object
itself changes; domain/updates.py does the comparison and domain/updatecheck.py computes the
status, Events and metric values from it. An artifact is downloaded from
source-controller once per digest, and checked against that digest before it is read.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

from fluxsupport import constants, lifecycle
from fluxsupport.controllers import scheduler, writes
from fluxsupport.domain import evaluation, updatecheck, updates
from fluxsupport.domain import policy as policy_module
from fluxsupport.kube import api, events, objects, reflector
from fluxsupport.sources import artifacts
from fluxsupport.sources import inventory as inventory_source

logger = logging.getLogger(__name__)

KEY = constants.UPDATECHECK_NAME


class UpdateController:
    def __init__(self, client: api.KubeClient, inventory: inventory_source.Inventory,
                 configmaps: reflector.Watch, operator_namespace: str,
                 settings: policy_module.Updates, gate: asyncio.Event | None = None,
                 poster: events.EventPoster | None = None) -> None:
        self.client = client
        self.inventory = inventory
        self.configmaps = configmaps
        self.operator_namespace = operator_namespace
        self.settings = settings
        self.scheduler = scheduler.Scheduler(self._scheduled, gate=gate,
                                             kind=constants.UPDATECHECK_KIND,
                                             on_error=self._report_error)
        self.writer = writes.StatusWriter(client, poster or events.EventPoster(client),
                                          self.scheduler, constants.UPDATECHECK_KIND, logger)
        self.checks = objects.Objects(client, objects.UPDATECHECKS)
        #: The FluxUpdateCheck objects (only ``cluster`` is ours), kept current by a watch.
        self.objects = self.checks.watch(self.reconcile_soon)
        #: The artifact of the Flux source named by updates.sourceRef, if any.
        self.artifact: artifacts.SourceArtifact | None = None
        self.source_watch: reflector.Watch | None = None
        if settings.source_ref is not None:
            self.artifact = artifacts.SourceArtifact(
                client, settings.source_ref, inventory.namespaces[0], "updates.sourceRef",
                self.reconcile_soon)
            self.source_watch = self.artifact.watch
        #: The release data of the last artifact read, by its digest.
        self._artifact: tuple[str, updates.ReleaseData] | None = None
        #: The release data of the ConfigMap, or (reason, message), by its resourceVersion.
        self._configmap: tuple[str, updates.ReleaseData | tuple[str, str]] | None = None
        #: The metric values of the last check that ran; None while it cannot run.
        self.view: updatecheck.UpdateMetrics | None = None
        self._lock = asyncio.Lock()
        #: The stored body after our last write: newer than the watch until its echo arrives.
        self._written: dict[str, Any] | None = None
        #: Called with the release data each time a check reads it.
        self._readers: list[Callable[[updates.ReleaseData], None]] = []
        self._tasks = lifecycle.Tasks()
        inventory.subscribe(self.reconcile_soon)

    def subscribe(self, callback: Callable[[updates.ReleaseData], None]) -> None:
        """Call ``callback`` with the release data each time a check has read it."""
        self._readers.append(callback)

    @property
    def source(self) -> str:
        if self.artifact is not None:
            return self.artifact.name
        return f"ConfigMap {self.operator_namespace}/{self.settings.config_map}"

    async def start(self) -> None:
        self._tasks.spawn(self.scheduler.run(), name="updatecheck-scheduler")
        self._tasks.spawn(self.objects.run(), name="updatecheck-watch")
        if self.source_watch is not None:
            self._tasks.spawn(self.source_watch.run(), name="updatecheck-source-watch")

    async def stop(self) -> None:
        await self._tasks.cancel()

    def reconcile_soon(self) -> None:
        self.scheduler.schedule(KEY, time.time())

    async def _scheduled(self, key: Hashable) -> None:
        async with self._lock:
            await self._reconcile()

    def _current(self) -> dict[str, Any] | None:
        """The newest body known: the watch's, unless our own write is newer."""
        watched = self.objects.objects.get(KEY)
        written = self._written
        if watched is None:
            # Deleted (the watch saw it go) or not created yet.
            self._written = None
            return None
        if written is not None and (written.get("metadata") or {}).get("uid") == (
                watched.get("metadata") or {}).get("uid") and writes.newer_or_equal(
                str(written["metadata"].get("resourceVersion", "")),
                str((watched.get("metadata") or {}).get("resourceVersion", ""))):
            return written
        return watched

    async def _ensure(self) -> dict[str, Any]:
        """The object, created if it does not exist (by a first start, or after a delete)."""
        # Bounded: a watch that cannot list (RBAC) fails the reconcile, which is retried.
        await asyncio.wait_for(self.objects.synced.wait(), 30)
        current = self._current()
        if current is not None:
            return current
        body = {"apiVersion": constants.API_VERSION, "kind": constants.UPDATECHECK_KIND,
                "metadata": {"name": KEY}, "spec": {}}
        created = await self.checks.create(body)
        if created is None:  # created meanwhile (another replica), not seen yet
            created = await self.checks.get(KEY)
        else:
            logger.info("FluxUpdateCheck %s created", KEY)
        self._written = created
        return created

    async def _reconcile(self) -> None:
        body = await self._ensure()
        metadata = body.get("metadata") or {}
        ref = self.checks.ref(KEY, metadata.get("uid"))
        current = dict(body.get("status") or {})
        generation = int(metadata.get("generation") or 0)
        try:
            data: updates.ReleaseData | updatecheck.NotReady = await self._release_data()
        except (_NotReady, artifacts.Unreadable) as not_ready:
            data = updatecheck.NotReady(not_ready.reason, not_ready.message)
        if isinstance(data, updates.ReleaseData):
            for reader in self._readers:
                reader(data)
        now = datetime.datetime.now(datetime.UTC)
        evaluated = self._evaluate(current, generation, now, data)
        self.view = evaluated.metrics
        result = await self.writer.write(KEY, ref, current, evaluated.status,
                                         str(metadata.get("resourceVersion", "")),
                                         evaluated.events, now=now)
        if result.outcome is writes.Outcome.GONE:
            self._written = None
            self.reconcile_soon()  # create it again
            return
        if result.outcome is writes.Outcome.WRITTEN:
            self._written = {**body, "status": result.status or {},
                             "metadata": {**metadata,
                                          "resourceVersion": result.resource_version}}
        if result.outcome in (writes.Outcome.WRITTEN, writes.Outcome.UNCHANGED):
            self.writer.clear_later(KEY)

    async def _report_error(self, key: Hashable, error: Exception) -> None:
        async with self._lock:
            body = self._current()
            if body is None:
                return
            metadata = body.get("metadata") or {}
            ref = self.checks.ref(KEY, metadata.get("uid"))
            await self.writer.write_error(KEY, ref, dict(body.get("status") or {}),
                                          str(metadata.get("resourceVersion", "")),
                                          int(metadata.get("generation") or 0), error)

    async def _release_data(self) -> updates.ReleaseData:
        if self.artifact is not None:
            return await self._artifact_data()
        configmap = self.configmaps.objects.get(str(self.settings.config_map))
        if configmap is None:
            raise _NotReady("ReleaseDataNotFound",
                            f"{self.source} not found; create it with the release data "
                            "(docs/updates.md)")
        version = str((configmap.get("metadata") or {}).get("resourceVersion") or "")
        if self._configmap is None or self._configmap[0] != version or not version:
            # Parsed once per version and off the event loop: YAML parsing is CPU work.
            try:
                parsed: updates.ReleaseData | tuple[str, str] = await asyncio.to_thread(
                    updates.parse_configmap_data, dict(configmap.get("data") or {}))
            except updates.ReleaseDataError as error:
                parsed = ("InvalidReleaseData", f"{self.source}: {error}")
            self._configmap = (version, parsed)
        held = self._configmap[1]
        if isinstance(held, tuple):
            raise _NotReady(*held)
        return held

    async def _artifact_data(self) -> updates.ReleaseData:
        """The release data of the source's current artifact, read once per digest. A
        failure that may pass schedules the next attempt after its backoff."""
        assert self.artifact is not None
        try:
            found = await self.artifact.read(self._artifact[0] if self._artifact else None)
        except artifacts.Unreadable as unreadable:
            if unreadable.retry_in is not None:
                self.scheduler.schedule(KEY, time.time() + unreadable.retry_in)
            raise
        if found.content is None:  # the digest read last time
            assert self._artifact is not None
            return self._artifact[1]
        try:
            # Unpacking megabytes is CPU work: off the event loop.
            data = await asyncio.to_thread(updates.parse_archive, found.content,
                                           self.settings.path)
        except updates.ReleaseDataError as error:
            raise self.artifact.refuse(found.digest, artifacts.Unreadable(
                error.reason, f"{self.source} artifact {found.revision}: {error}")) from error
        logger.info("FluxUpdateCheck: release data of %s at %s (%s)", self.source,
                    found.revision, found.digest)
        self._artifact = (found.digest, data)
        return data

    def _evaluate(self, current: dict[str, Any], generation: int, now: datetime.datetime,
                  data: updates.ReleaseData | updatecheck.NotReady
                  ) -> evaluation.Evaluation[updatecheck.UpdateMetrics]:
        """What to write: the domain's evaluation against the inventory as it is now."""
        return updatecheck.evaluate(
            previous=current, generation=generation, source=self.source,
            components=self.inventory.components(), inventory_problems=self.inventory.problems(),
            namespaces=self.inventory.namespaces, data=data,
            supported_minors=self.settings.supported_minors, now=now)


class _NotReady(Exception):
    """The ConfigMap's release data cannot be read: Ready says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
