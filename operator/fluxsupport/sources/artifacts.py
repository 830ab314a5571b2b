"""Flux source artifacts: the tar.gz that source-controller serves at status.artifact.url.

Plain HTTP from source-controller's storage inside the cluster, without credentials: the
digest in the source's status (checked by domain/artifact.py) is what makes the content
trustworthy, as kustomize-controller does it.

``SourceArtifact`` is the one reader of the advisory feed and the FluxUpdateCheck: the watch of
the source named in the policy, its status.artifact, the download (once per digest), the digest
check, and the backoff of failures.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import aiohttp

from fluxsupport.domain import artifact
from fluxsupport.domain import policy as policy_module
from fluxsupport.kube import api, objects, reflector

#: The largest artifact read: a Git repository of a few thousand files is a few MB, and the
#: artifact is held in memory while it is read.
MAX_BYTES = 32 * 1024 * 1024
TIMEOUT_S = 60.0
#: What one read from the connection returns at most.
CHUNK_BYTES = 256 * 1024


class ArtifactError(Exception):
    """The artifact could not be downloaded; the message says why."""


class ArtifactTooLarge(ArtifactError):
    """The artifact is larger than the operator reads: retrying does not help, a smaller
    source (Flux's ``spec.ignore``) does."""


def too_large(url: str, size: int | None, max_bytes: int) -> ArtifactTooLarge:
    found = f"{size} bytes" if size is not None else f"more than {max_bytes} bytes"
    return ArtifactTooLarge(f"{url}: {found}, more than the {max_bytes} bytes the operator "
                            "reads; leave out what it does not need with the source's "
                            "spec.ignore (GitRepository) or spec.layerSelector (OCIRepository)")


async def download(url: str, max_bytes: int | None = None) -> bytearray:
    """The whole body, read to its end: a body that arrives in many network reads is one
    artifact, and the digest is checked against all of it. At most ``max_bytes``
    (:data:`MAX_BYTES`), refused past it with :class:`ArtifactTooLarge`."""
    if max_bytes is None:
        max_bytes = MAX_BYTES
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    body = bytearray()
    try:
        # The digest is over the bytes served: never let a Content-Encoding unpack them.
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session, \
                session.get(url) as response:
            if response.status != 200:
                raise ArtifactError(f"HTTP {response.status} from {url}")
            # source-controller's file server sends the length: refuse before reading.
            if response.content_length is not None and response.content_length > max_bytes:
                raise too_large(url, response.content_length, max_bytes)
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                if len(body) + len(chunk) > max_bytes:
                    raise too_large(url, None, max_bytes)
                body += chunk
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        raise ArtifactError(f"{url}: {str(error) or type(error).__name__}") from error
    return body


#: A failed download, or an artifact that does not match its digest, is tried again after
#: these delays by the number of consecutive failures: source-controller may be restarting or
#: replacing the file, and an artifact that keeps failing is not downloaded every few seconds
#: for ever. A success starts again from the first.
RETRY_S = (15.0, 30.0, 60.0, 120.0, 300.0)
#: How long a read waits for the first list of the source.
LIST_TIMEOUT_S = 30.0


class Failures:
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
        delay = RETRY_S[min(self._consecutive, len(RETRY_S) - 1)]
        self._consecutive += 1
        return delay

    def succeeded(self) -> None:
        self._consecutive = 0
        self._refused = None


class Unreadable(Exception):
    """The artifact cannot be read now: ``reason`` and ``message`` for a condition or an
    Event, and when trying again may help (``retry_in`` seconds; None: when the source
    changes, which its watch tells)."""

    def __init__(self, reason: str, message: str, retry_in: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_in = retry_in


@dataclasses.dataclass(frozen=True)
class Artifact:
    #: The source object as its watch holds it.
    source: dict[str, Any]
    url: str
    digest: str
    revision: str
    #: The verified bytes; None when the digest is the one the caller has read already.
    content: bytearray | None


class SourceArtifact:
    """The artifact of the Flux source ``ref`` (``setting`` names where the policy sets it,
    for the messages); ``on_change`` is called when the source changes."""

    def __init__(self, client: api.KubeClient, ref: policy_module.SourceRef,
                 default_namespace: str, setting: str, on_change: Callable[[], None]) -> None:
        self.ref = ref
        self.setting = setting
        self.namespace = ref.namespace or default_namespace
        self.objects = objects.Objects(client, objects.FLUX_SOURCES[ref.kind], self.namespace)
        #: The source's objects (only ``ref.name`` is read); an absent CRD has none.
        self.watch: reflector.Watch = self.objects.watch(on_change, optional=True)
        self.failures = Failures()

    @property
    def name(self) -> str:
        """``GitRepository flux-system/advisories``, as messages name the source."""
        return f"{self.ref.kind} {self.namespace}/{self.ref.name}"

    def current(self) -> dict[str, Any] | None:
        """The source as last seen, if it exists."""
        return self.watch.objects.get(self.ref.name)

    def object_ref(self, source: dict[str, Any]) -> api.ObjectRef:
        """The source as the object of an Event."""
        return self.objects.ref(self.ref.name, (source.get("metadata") or {}).get("uid"))

    async def read(self, known: str | None = None) -> Artifact:
        """The source's artifact, downloaded and checked against its digest; not downloaded
        again (``content`` None) when its digest is ``known``. Raises Unreadable, and
        TimeoutError while the source cannot be listed yet."""
        await asyncio.wait_for(self.watch.synced.wait(), LIST_TIMEOUT_S)
        if self.watch.error:
            # The watch calls back when it lists again.
            raise Unreadable("SourceUnavailable", f"cannot read {self.name}: {self.watch.error}")
        source = self.current()
        if source is None:
            raise Unreadable("SourceNotFound", f"{self.name} not found ({self.setting})")
        found = (source.get("status") or {}).get("artifact") or {}
        url, digest = str(found.get("url") or ""), str(found.get("digest") or "")
        revision = str(found.get("revision") or "")
        if not url or not digest:
            raise Unreadable("ArtifactNotReady", f"{self.name} has no artifact yet; see its "
                             "Ready condition")
        if digest == known:
            return Artifact(source, url, digest, revision, None)
        refused = self.failures.refused(digest)
        if refused is not None:
            raise Unreadable(*refused)
        try:
            content = await download(url)
        except ArtifactTooLarge as error:
            raise self.refuse(digest, Unreadable(
                "ArtifactTooLarge", f"cannot read the artifact of {self.name}: {error}")
                ) from error
        except ArtifactError as error:
            raise Unreadable("ArtifactUnavailable", f"cannot download the artifact of "
                             f"{self.name}: {error}; retrying",
                             self.failures.retry_delay()) from error
        try:
            # Hashing megabytes is CPU work: off the event loop.
            await asyncio.to_thread(artifact.verify_digest, content, digest)
        except artifact.ArtifactError as error:
            # source-controller may be replacing the file: the next attempt may match.
            raise Unreadable("ArtifactDigestMismatch", f"{self.name} artifact {url}: {error}; "
                             "retrying", self.failures.retry_delay()) from error
        self.failures.succeeded()
        return Artifact(source, url, digest, revision, content)

    def refuse(self, digest: str, unreadable: Unreadable) -> Unreadable:
        """Refused for what the artifact is: not downloaded again until its digest changes."""
        self.failures.refuse(digest, unreadable.reason, unreadable.message)
        return unreadable
