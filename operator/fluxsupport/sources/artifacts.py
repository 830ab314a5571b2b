"""Flux source artifacts: the tar.gz that source-controller serves at status.artifact.url.

Plain HTTP from source-controller's storage inside the cluster, without credentials: the
digest in the source's status (checked by domain/artifact.py) is what makes the content
trustworthy, as kustomize-controller does it.
"""

from __future__ import annotations

import aiohttp

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
