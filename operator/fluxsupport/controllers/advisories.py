"""The advisory feed: public OSV advisories in a Flux source artifact become SecurityBulletins
without a person (``advisories:`` in the policy, docs/advisories.md).

Flux fetches the advisories (a GitRepository or OCIRepository, so a mirror in an air-gapped
cluster works the same); the operator downloads the artifact from source-controller once per
digest, checks the digest, and reads its ``*.json`` through the same function as
``bulletin import --from osv`` (domain/advisory.py), so that the two cannot drift.

Each advisory with a Flux component is one cluster-scoped bulletin named after its id in lower
case, labelled with the feed. The name is the idempotency key: a restart, a crash between two
writes or a re-import finds the bulletins there and writes only those whose spec differs.
A bulletin of that name without the feed's label is a person's and is left alone. An
advisory removed from the feed leaves its bulletin in place: the feed never deletes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import logging
import time
from collections.abc import Hashable, Sequence
from typing import Any

import jsonschema

from fluxsupport import constants, lifecycle, resources
from fluxsupport.controllers.scheduler import Scheduler
from fluxsupport.domain import advisory, artifact
from fluxsupport.domain import policy as policy_module
from fluxsupport.kube import api, objects
from fluxsupport.kube.events import EventPoster, PendingEvent
from fluxsupport.sources import artifacts

logger = logging.getLogger(__name__)

KEY = "advisory-feed"
KIND = "AdvisoryFeed"
#: Warning Events per import for invalid files; the rest are summed up in one more.
MAX_INVALID_EVENTS = 10
#: Label values are at most 63 characters.
MAX_LABEL = 63
OUTCOMES = ("created", "updated", "unchanged", "skipped", "invalid", "not_owned")
#: Event names hash this instant instead of the time: the same message about the same source
#: (a restart reading the same revision) is one Event, and the repeat meets a 409.
_FIXED_INSTANT = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def feed_label(namespace: str, name: str) -> str:
    """``<namespace>.<name>`` of the source; past 63 characters cut and made unique by a hash."""
    value = f"{namespace}.{name}"
    if len(value) <= MAX_LABEL:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    return f"{value[:MAX_LABEL - 17].rstrip('.-_')}.{digest}"


@dataclasses.dataclass(frozen=True)
class FeedView:
    """What the metrics collector reads."""

    #: The last attempt read the artifact and wrote what it had to; None before the first.
    up: bool | None = None
    #: When the last import completed (epoch seconds); 0 before the first.
    last_import: float = 0.0
    #: Advisories of the last completed import by outcome (OUTCOMES).
    counts: tuple[tuple[str, int], ...] = ()


class AdvisoryFeed:
    def __init__(self, client: api.KubeClient, flux_namespaces: Sequence[str],
                 settings: policy_module.Advisories, gate: asyncio.Event | None = None,
                 poster: EventPoster | None = None) -> None:
        self.client = client
        self.settings = settings
        self.artifact = artifacts.SourceArtifact(client, settings.source_ref, flux_namespaces[0],
                                                 "advisories.sourceRef", self.reconcile_soon)
        self.namespace = self.artifact.namespace
        self.label = feed_label(self.namespace, settings.source_ref.name)
        self.bulletins = objects.Objects(client, objects.BULLETINS)
        self.poster = poster or EventPoster(client)
        self.scheduler = Scheduler(self._scheduled, gate=gate, kind=KIND,
                                   on_error=self._report_error)
        self.source_watch = self.artifact.watch
        self._osv = jsonschema.Draft202012Validator(resources.osv_schema())
        crd = next(doc for doc in resources.crd_documents()
                   if doc["spec"]["names"]["kind"] == constants.BULLETIN_KIND)
        self._crd = jsonschema.Draft7Validator(
            crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            format_checker=jsonschema.FormatChecker())
        #: The digest whose advisories are all written: nothing to do until the next one.
        self._imported: str | None = None
        #: The message of the last failure Event, so that a retry loop posts it once.
        self._failure: str | None = None
        self.view = FeedView()
        self._lock = asyncio.Lock()
        self._tasks = lifecycle.Tasks()

    @property
    def source(self) -> str:
        return self.artifact.name

    async def start(self) -> None:
        self._tasks.spawn(self.scheduler.run(), name="advisory-feed-scheduler")
        self._tasks.spawn(self.source_watch.run(), name="advisory-feed-source-watch")

    async def stop(self) -> None:
        await self._tasks.cancel()

    def reconcile_soon(self) -> None:
        self.scheduler.schedule(KEY, time.time())

    async def _scheduled(self, key: Hashable) -> None:
        async with self._lock:
            try:
                await self._reconcile()
            except artifacts.Unreadable as failed:
                self._fail(failed)
                if failed.retry_in is not None:
                    self.scheduler.schedule(KEY, time.time() + failed.retry_in)
            else:
                self.scheduler.succeeded(KEY)

    async def _report_error(self, key: Hashable, error: Exception) -> None:
        # The scheduler retries with backoff: an API outage, a conflict while writing.
        self._fail(artifacts.Unreadable("ImportFailed", f"writing the bulletins of "
                                        f"{self.source} failed: {error}; retrying"))

    def _post(self, ref: api.ObjectRef, type_: str, reason: str, message: str, *,
              once: bool = True) -> None:
        """``once``: one Event per message, across restarts (an import's results). A failure
        is posted again when it comes back after a success (``_failure`` stops the repeats of
        a retry loop)."""
        now = datetime.datetime.now(datetime.UTC)
        event = PendingEvent.create(ref, type_, reason, message, _FIXED_INSTANT if once else now)
        event = dataclasses.replace(event, at=now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        if not self.poster.submit(ref, event, lambda name: None):
            logger.warning("advisory feed: Event %s not posted (queue full): %s", reason,
                           message)

    def _fail(self, failed: artifacts.Unreadable) -> None:
        self.view = dataclasses.replace(self.view, up=False)
        if failed.message == self._failure:
            return
        self._failure = failed.message
        logger.warning("advisory feed %s: %s", self.source, failed.message)
        held = self.artifact.current()
        if held is not None:
            self._post(self.artifact.object_ref(held), "Warning", failed.reason, failed.message,
                       once=False)

    async def _artifact(self) -> artifacts.Artifact:
        """The source and its verified artifact; no content when its digest is imported."""
        try:
            return await self.artifact.read(known=self._imported)
        except TimeoutError as error:
            raise artifacts.Unreadable(
                "SourceUnavailable", f"cannot list {self.source} yet",
                self.artifact.failures.retry_delay()) from error

    def _read(self, content: artifact.Content) -> advisory.Feed:
        """The artifact's advisories; CPU work over untrusted input, bounded by
        advisory.LIMITS and run in a thread (see _reconcile)."""
        return advisory.read_feed(
            artifact.json_files(content, self.settings.path, advisory.LIMITS), self._osv,
            self._crd)

    async def _reconcile(self) -> None:
        found = await self._artifact()
        source, digest, revision = found.source, found.digest, found.revision
        content = found.content
        del found  # the content goes once read (below)
        if content is None:
            # The source is readable again after a failure, with the artifact already read.
            self.view = dataclasses.replace(self.view, up=True)
            self._failure = None
            return
        try:
            # Unpacking, JSON and schema validation of thousands of files take seconds of
            # CPU: in a thread, so that the event loop goes on serving everything else.
            feed = await asyncio.to_thread(self._read, content)
        except artifact.ArtifactError as error:
            raise self.artifact.refuse(digest, artifacts.Unreadable(
                error.reason, f"{self.source} revision {revision}: {error}")) from error
        del content  # the bulletins are what is kept, not the artifact
        ref = self.artifact.object_ref(source)
        counts = dict.fromkeys(OUTCOMES, 0)
        counts["skipped"] = len(feed.skipped)
        invalid = list(feed.invalid)
        not_owned = []
        existing = await self._existing()
        for imported in feed.bulletins:
            outcome, why = await self._apply(imported, existing.get(imported.converted.name),
                                             revision)
            counts[outcome] += 1
            if outcome == "invalid":
                invalid.append(advisory.Invalid(imported.path, why))
            elif outcome == "not_owned":
                not_owned.append(imported.converted.name)
        counts["invalid"] = len(invalid)
        self._imported = digest
        self._failure = None
        self.view = FeedView(up=True, last_import=time.time(), counts=tuple(counts.items()))
        summary = (f"{counts['created']} created, {counts['updated']} updated, "
                   f"{counts['unchanged']} unchanged, {counts['skipped']} skipped (no Flux "
                   f"component), {counts['invalid']} invalid, {counts['not_owned']} left "
                   f"alone (not written by the feed), from revision {revision}")
        logger.info("advisory feed %s: %s", self.source, summary)
        self._post(ref, "Normal", "AdvisoriesImported", summary)
        if not feed.files:
            self._post(ref, "Warning", "AdvisoriesNotFound",
                       f"no *.json under {artifact.prefix_of(self.settings.path) or '.'} in "
                       f"revision {revision} (advisories.path)")
        for problem in invalid:
            logger.warning("advisory feed %s: %s: %s", self.source, problem.path,
                           problem.reason)
        for problem in invalid[:MAX_INVALID_EVENTS]:
            self._post(ref, "Warning", "InvalidAdvisory",
                       f"{problem.path}: {problem.reason} (revision {revision}); the other "
                       "advisories were imported")
        if len(invalid) > MAX_INVALID_EVENTS:
            self._post(ref, "Warning", "InvalidAdvisory",
                       f"{len(invalid) - MAX_INVALID_EVENTS} more invalid files in revision "
                       f"{revision}; the operator's log names each")
        for name in not_owned:
            self._post(ref, "Warning", "BulletinNotOwned",
                       f"SecurityBulletin {name} exists without the label "
                       f"{constants.ADVISORY_FEED_LABEL}={self.label}: a person wrote it, so "
                       "the feed leaves it as it is. Delete it or add the label to let the "
                       "feed manage it.")

    async def _existing(self) -> dict[str, dict[str, Any]]:
        """The bulletins this feed wrote: one list per import, not a watch, since the feed acts
        on a new artifact only."""
        listed = await self.bulletins.list(f"{constants.ADVISORY_FEED_LABEL}={self.label}")
        return {item["metadata"]["name"]: item for item in listed}

    async def _apply(self, imported: advisory.Imported, current: dict[str, Any] | None,
                     revision: str) -> tuple[str, str]:
        """Create or update one bulletin: (outcome, why when invalid)."""
        desired = imported.manifest(labels={constants.ADVISORY_FEED_LABEL: self.label},
                                    annotations={constants.ADVISORY_REVISION: revision})
        name = imported.converted.name
        if current is None:
            try:
                created = await self.bulletins.create(desired)
            except objects.Invalid as error:
                return "invalid", f"the API server refused the bulletin: {error}"
            if created is not None:
                logger.info("advisory feed: SecurityBulletin %s created from %s", name,
                            imported.path)
                return "created", ""
            # Written meanwhile, or a person's (outside the label selector).
            current = await self.bulletins.get(name)
        labels = (current.get("metadata") or {}).get("labels") or {}
        if labels.get(constants.ADVISORY_FEED_LABEL) != self.label:
            return "not_owned", ""
        if current.get("spec") == desired["spec"]:
            return "unchanged", ""
        metadata = {key: value for key, value in (current.get("metadata") or {}).items()
                    if key != "managedFields"}
        body = {key: value for key, value in current.items() if key != "status"}
        metadata["annotations"] = {**(metadata.get("annotations") or {}),
                                   constants.ADVISORY_REVISION: revision}
        # A PUT with the listed resourceVersion: a concurrent edit (a person removing the
        # label) fails it with 409, and the import is retried against the new object.
        try:
            await self.bulletins.replace({**body, "metadata": metadata, "spec": desired["spec"]})
        except objects.Invalid as error:
            return "invalid", f"the API server refused the bulletin: {error}"
        logger.info("advisory feed: SecurityBulletin %s updated from %s", name, imported.path)
        return "updated", ""
