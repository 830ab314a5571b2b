"""Flux source artifacts: the tar.gz that source-controller serves at status.artifact.url.

Plain HTTP from source-controller's storage inside the cluster, without credentials: the
digest in the source's status (checked by domain/updates.py) is what makes the content
trustworthy, as kustomize-controller does it.
"""

from __future__ import annotations

import aiohttp

#: The largest artifact read: the release data is a few hundred kilobytes.
MAX_BYTES = 32 * 1024 * 1024
TIMEOUT_S = 60.0


class ArtifactError(Exception):
    """The artifact could not be downloaded; the message says why."""


async def download(url: str, max_bytes: int = MAX_BYTES) -> bytes:
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.get(url) as response:
            if response.status != 200:
                raise ArtifactError(f"HTTP {response.status} from {url}")
            content = await response.content.read(max_bytes + 1)
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        raise ArtifactError(f"{url}: {str(error) or type(error).__name__}") from error
    if len(content) > max_bytes:
        raise ArtifactError(f"{url}: larger than {max_bytes} bytes")
    return content
