"""Flux source artifacts as bytes: the digest check and the files of a tar.gz, never extracted.

source-controller packs a GitRepository or OCIRepository into a tar.gz and publishes its digest
in ``status.artifact.digest``. The release data (domain/updates.py) and the advisory feed
(controllers/advisories.py) both read one; the download is the caller's (sources/artifacts.py).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable

#: What the files read from one artifact may hold in all, uncompressed: a small download can
#: unpack to gigabytes, and the operator keeps what it reads in memory.
MAX_UNPACKED = 128 * 1024 * 1024


class ArtifactError(ValueError):
    """The artifact does not match its digest or is not a readable tar.gz."""


def verify_digest(content: bytes, digest: str) -> None:
    """``digest`` is ``<algorithm>:<hex>`` as source-controller writes status.artifact.digest."""
    algorithm, _, expected = digest.partition(":")
    if algorithm not in ("sha256", "sha384", "sha512") or not expected:
        raise ArtifactError(f"artifact digest {digest!r}: expected sha256:<hex>")
    actual = hashlib.new(algorithm, content).hexdigest()
    if actual != expected.lower():
        raise ArtifactError(f"the artifact's {algorithm} is {actual}, not the "
                            f"{expected} of status.artifact.digest")


def prefix_of(path: str) -> str:
    """``images`` -> ``images/``; ``""``, ``.`` and ``/`` mean the whole artifact."""
    stripped = path.strip("/").removeprefix("./")
    return "" if stripped in ("", ".") else stripped + "/"


def read_files(content: bytes, path: str, wanted: Callable[[str], bool],
               max_unpacked: int = MAX_UNPACKED) -> dict[str, bytes]:
    """The regular files under ``path`` whose name relative to it ``wanted`` accepts, as
    ``{relative name: content}`` in archive order. Links and devices are skipped, and nothing
    is written to disk, so a hostile archive cannot reach outside it."""
    prefix = prefix_of(path)
    files: dict[str, bytes] = {}
    unpacked = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as archive:
            for member in archive.getmembers():
                name = member.name.removeprefix("./")
                if not member.isfile() or not name.startswith(prefix):
                    continue
                relative = name[len(prefix):]
                if not wanted(relative):
                    continue
                unpacked += member.size
                if unpacked > max_unpacked:
                    raise ArtifactError(f"the files under {prefix or '.'} hold more than "
                                        f"{max_unpacked} bytes unpacked")
                extracted = archive.extractfile(member)
                if extracted is not None:
                    files[relative] = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ArtifactError(f"the artifact is not a readable tar.gz: {error}") from error
    return files


def json_files(content: bytes, path: str) -> dict[str, bytes]:
    """Every ``*.json`` under ``path``, at any depth (the advisory database nests them by
    year and month), keyed by its full name in the artifact."""
    prefix = prefix_of(path)
    found = read_files(content, path, lambda name: name.endswith(".json"))
    return {prefix + name: data for name, data in found.items()}
