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

from fluxsupport import constants
from fluxsupport.controllers import scheduler, writes
from fluxsupport.domain import evaluation, updatecheck, updates
from fluxsupport.domain import policy as policy_module
from fluxsupport.kube import api, events, reflector
from fluxsupport.sources import artifacts
from fluxsupport.sources import inventory as inventory_source

logger = logging.getLogger(__name__)

KEY = constants.UPDATECHECK_NAME
PATH = f"/apis/{constants.API_VERSION}/{constants.UPDATECHECK_PLURAL}"
SOURCE_API = "/apis/source.toolkit.fluxcd.io/v1"
SOURCE_PLURALS = {"GitRepository": "gitrepositories", "OCIRepository": "ocirepositories"}
#: A failed download, or an artifact that does not match its digest, is tried again after
#: these delays by the number of consecutive failures: source-controller may be restarting or
#: replacing the file, and an artifact that keeps failing is not downloaded every few seconds
#: for ever. A success starts again from the first.
ARTIFACT_RETRY_S = (15.0, 30.0, 60.0, 120.0, 300.0)


class ArtifactFailures:
    """The failures of one source's artifact: when to try again, and what not to try again.

    An artifact refused for what it is (too large, not a tar.gz, not in the layout) is
    refused again without a download until the source has a new digest: the bytes behind a
    digest do not change. A failure that may pass is retried with backoff.
    """

    def __init__(self) -> None:
        self._consecutive = 0
        #: (digest, reason, message): not the exception, whose traceback would keep the
        #: artifact's bytes alive.
        self._refused: tuple[str, str, str] | None = None

    def refused(self, digest: str) -> tuple[str, str] | None:
        """The reason and message this digest was refused with, if it was."""
        if self._refused is not None and self._refused[0] == digest:
            return self._refused[1], self._refused[2]
        return None

    def refuse(self, digest: str, reason: str, message: str) -> None:
        self._refused = (digest, reason, message)

    def retry_delay(self) -> float:
        """The delay before the next attempt after one more failure."""
        delay = ARTIFACT_RETRY_S[min(self._consecutive, len(ARTIFACT_RETRY_S) - 1)]
        self._consecutive += 1
        return delay

    def succeeded(self) -> None:
        self._consecutive = 0
        self._refused = None


class UpdateController:
    def __init__(self, client: api.Client, inventory: inventory_source.Inventory,
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
        #: The FluxUpdateCheck objects (only ``cluster`` is ours), kept current by a watch.
        self.objects = reflector.Watch(client, PATH, self.reconcile_soon)
        #: The Flux source named by updates.sourceRef, if any (absent CRD: no objects).
        self.source_watch: reflector.Watch | None = None
        ref = settings.source_ref
        if ref is not None:
            self.source_namespace = ref.namespace or inventory.namespaces[0]
            self.source_watch = reflector.Watch(
                client, f"{SOURCE_API}/namespaces/{self.source_namespace}/"
                f"{SOURCE_PLURALS[ref.kind]}", self.reconcile_soon, optional=True)
        #: The release data of the last artifact read, by its digest.
        self._artifact: tuple[str, updates.ReleaseData] | None = None
        self.artifact_failures = ArtifactFailures()
        #: The release data of the ConfigMap, or (reason, message), by its resourceVersion.
        self._configmap: tuple[str, updates.ReleaseData | tuple[str, str]] | None = None
        #: The metric values of the last check that ran; None while it cannot run.
        self.view: updatecheck.UpdateMetrics | None = None
        self._lock = asyncio.Lock()
        #: The stored body after our last write: newer than the watch until its echo arrives.
        self._written: dict[str, Any] | None = None
        #: Called with the release data each time a check reads it.
        self._readers: list[Callable[[updates.ReleaseData], None]] = []
        inventory.subscribe(self.reconcile_soon)

    def subscribe(self, callback: Callable[[updates.ReleaseData], None]) -> None:
        """Call ``callback`` with the release data each time a check has read it."""
        self._readers.append(callback)

    @property
    def source(self) -> str:
        ref = self.settings.source_ref
        if ref is not None:
            return f"{ref.kind} {self.source_namespace}/{ref.name}"
        return f"ConfigMap {self.operator_namespace}/{self.settings.config_map}"

    def tasks(self) -> list[asyncio.Task[None]]:
        tasks = [asyncio.create_task(self.scheduler.run(), name="updatecheck-scheduler"),
                 asyncio.create_task(self.objects.run(), name="updatecheck-watch")]
        if self.source_watch is not None:
            tasks.append(asyncio.create_task(self.source_watch.run(),
                                             name="updatecheck-source-watch"))
        return tasks

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
        try:
            created = await self.client.request("POST", PATH, body)
        except api.ApiError as error:
            if error.status != 409:
                raise
            created = await self.client.request("GET", f"{PATH}/{KEY}")
        else:
            logger.info("FluxUpdateCheck %s created", KEY)
        self._written = created
        return created

    async def _reconcile(self) -> None:
        body = await self._ensure()
        metadata = body.get("metadata") or {}
        ref = api.ObjectRef(constants.API_VERSION, constants.UPDATECHECK_KIND,
                            constants.UPDATECHECK_PLURAL, KEY, None, metadata.get("uid"))
        current = dict(body.get("status") or {})
        generation = int(metadata.get("generation") or 0)
        try:
            data: updates.ReleaseData | updatecheck.NotReady = await self._release_data()
        except _NotReady as not_ready:
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
            ref = api.ObjectRef(constants.API_VERSION, constants.UPDATECHECK_KIND,
                                constants.UPDATECHECK_PLURAL, KEY, None, metadata.get("uid"))
            await self.writer.write_error(KEY, ref, dict(body.get("status") or {}),
                                          str(metadata.get("resourceVersion", "")),
                                          int(metadata.get("generation") or 0), error)

    async def _release_data(self) -> updates.ReleaseData:
        if self.source_watch is not None:
            return await self._artifact_data(self.source_watch)
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

    async def _artifact_data(self, watch: reflector.Watch) -> updates.ReleaseData:
        """The release data of the source's current artifact, downloaded once per digest."""
        ref = self.settings.source_ref
        assert ref is not None
        await asyncio.wait_for(watch.synced.wait(), 30)
        if watch.error:
            raise _NotReady("SourceUnavailable", f"cannot read {self.source}: {watch.error}")
        source = watch.objects.get(ref.name)
        if source is None:
            raise _NotReady("SourceNotFound", f"{self.source} not found (updates.sourceRef)")
        artifact = (source.get("status") or {}).get("artifact") or {}
        url, digest = str(artifact.get("url") or ""), str(artifact.get("digest") or "")
        revision = str(artifact.get("revision") or "")
        if not url or not digest:
            raise _NotReady("ArtifactNotReady", f"{self.source} has no artifact yet; see its "
                            "Ready condition")
        if self._artifact is not None and self._artifact[0] == digest:
            return self._artifact[1]
        failures = self.artifact_failures
        refused = failures.refused(digest)
        if refused is not None:
            raise _NotReady(*refused)
        try:
            content = await artifacts.download(url)
        except artifacts.ArtifactTooLarge as error:
            raise self._refuse(digest, _NotReady(
                "ArtifactTooLarge", f"cannot read the artifact of {self.source}: {error}")
                ) from error
        except artifacts.ArtifactError as error:
            raise self._retry(_NotReady("ArtifactUnavailable",
                                        f"cannot download the artifact of {self.source}: "
                                        f"{error}; retrying")) from error
        try:
            # Hashing and unpacking megabytes is CPU work: off the event loop.
            await asyncio.to_thread(updates.verify_digest, content, digest)
        except updates.ReleaseDataError as error:
            # source-controller may be replacing the file: the next attempt may match.
            raise self._retry(_NotReady("ArtifactDigestMismatch",
                                        f"{self.source} artifact {url}: {error}; retrying")
                              ) from error
        failures.succeeded()
        try:
            data = await asyncio.to_thread(updates.parse_archive, content, self.settings.path)
        except updates.ReleaseDataError as error:
            raise self._refuse(digest, _NotReady(
                error.reason, f"{self.source} artifact {revision}: {error}")) from error
        logger.info("FluxUpdateCheck: release data of %s at %s (%s)", self.source,
                    revision, digest)
        self._artifact = (digest, data)
        return data

    def _retry(self, not_ready: _NotReady) -> _NotReady:
        self.scheduler.schedule(KEY, time.time() + self.artifact_failures.retry_delay())
        return not_ready

    def _refuse(self, digest: str, not_ready: _NotReady) -> _NotReady:
        self.artifact_failures.refuse(digest, not_ready.reason, not_ready.message)
        return not_ready

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
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
