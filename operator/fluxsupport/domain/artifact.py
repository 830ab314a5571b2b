"""Flux source artifacts as bytes: the digest check and the files of a tar.gz, never extracted.

source-controller packs a GitRepository or OCIRepository into a tar.gz and publishes its digest
in ``status.artifact.digest``. The release data (domain/updates.py) and the advisory feed
(controllers/advisories.py) both read one; the download is the caller's (sources/artifacts.py).

An artifact is input the operator does not control: a few MB of gzip can unpack to gigabytes,
or to a million empty files. So the tar stream is read once, front to back, and bounded as a
whole (:class:`Limits`): the bytes inflated (headers and skipped members included), the
number of members, the size of each file read and of all of them. Members are not kept, a
member whose header declares more than the bound is refused before it is inflated, and only
the wanted files are read. The caller runs this off its event loop: it is CPU work of up to a
second or so per 100 MiB.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import zlib
from collections.abc import Callable, Iterator

#: The artifact as downloaded (sources/artifacts.py reads it into a bytearray).
Content = bytes | bytearray | memoryview

#: A slice of inflated data produced per step: what skipping a member holds at a time.
_STEP = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Limits:
    """What reading one artifact may cost: exceeding one refuses the whole artifact, except
    ``file``, which only leaves that file out (the caller says so)."""

    #: The whole tar stream inflated: headers, skipped members and read files alike.
    unpacked: int = 128 * 1024 * 1024
    #: Entries of the tar stream (files, directories, links).
    members: int = 10_000
    #: One file read; a larger wanted file is reported as :class:`TooLarge`, not read.
    file: int = 1024 * 1024
    #: All the files read, together: what the caller parses.
    read: int = 32 * 1024 * 1024


LIMITS = Limits()


class ArtifactError(ValueError):
    """The artifact does not match its digest or is not a readable tar.gz."""

    #: The condition or Event reason that says so.
    reason = "InvalidArtifact"


class ArtifactTooLarge(ArtifactError):
    """The artifact goes past one of :class:`Limits`: a hostile archive, or a source that
    holds much more than the operator reads (Flux's ``spec.ignore`` can leave it out)."""

    reason = "ArtifactTooLarge"


#: What a person can do about an artifact that is too large.
SMALLER_SOURCE = "the source's spec.ignore can leave out what the operator does not read"


def size_text(count: int) -> str:
    """``134217728`` -> ``128 MiB``; other counts in bytes."""
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} bytes"


def _too_large(what: str) -> ArtifactTooLarge:
    return ArtifactTooLarge(f"{what}; {SMALLER_SOURCE}")


@dataclasses.dataclass(frozen=True)
class TooLarge:
    """Stands for a wanted file larger than ``Limits.file``: named, never read."""

    size: int
    limit: int

    def __str__(self) -> str:
        return (f"{self.size} bytes, more than the {size_text(self.limit)} read from one "
                "file")


def verify_digest(content: Content, digest: str) -> None:
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


class _Inflated(io.RawIOBase):
    """The tar stream of a gzip file, inflated as tarfile reads it, forward only.

    zlib inflates in steps of at most ``_STEP`` bytes, so skipping a member holds no more
    than that, and no single read may ask for more than ``max_read`` (tarfile reads a pax or
    GNU long-name header whole, whatever size its header declares). In all, at most
    ``limit`` bytes are inflated: a zero-bomb costs that much CPU, not its full size.
    """

    def __init__(self, content: Content, limit: int, max_read: int) -> None:
        super().__init__()
        self._input = memoryview(content).cast("B")
        self._used = 0  # input bytes given to zlib
        self._inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        self._limit = limit
        self._max_read = max_read
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def _take(self) -> memoryview:
        chunk = self._input[self._used:self._used + _STEP]
        self._used += len(chunk)
        return chunk

    def _inflate(self, size: int) -> bytes:
        """Up to ``size`` more bytes; b"" at the end of the gzip stream."""
        while True:
            data: bytes | memoryview
            if self._inflater.eof:
                # gzip allows several members one after the other, and zeros after them.
                rest = self._inflater.unused_data.lstrip(b"\0")
                if not rest:
                    if self._used >= len(self._input):
                        return b""
                    rest = bytes(self._take()).lstrip(b"\0")
                    if not rest:
                        continue
                self._inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
                data = rest
            elif self._inflater.unconsumed_tail:
                data = self._inflater.unconsumed_tail
            elif self._used < len(self._input):
                data = self._take()
            else:
                data = b""  # what zlib still holds, if anything
            out = self._inflater.decompress(data, size)
            if out:
                self._position += len(out)
                if self._position > self._limit:
                    raise _too_large(f"the artifact unpacks to more than "
                                     f"{size_text(self._limit)}")
                return out
            if not data:
                raise EOFError("the gzip stream ends before its end")

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > self._max_read:
            raise ArtifactTooLarge(f"the artifact holds a tar header of more than "
                                   f"{size_text(self._max_read)}")
        parts = []
        while size > 0 and (out := self._inflate(min(size, _STEP))):
            parts.append(out)
            size -= len(out)
        return b"".join(parts)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._position + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < self._position:
            raise io.UnsupportedOperation("the inflated tar stream is read forward only")
        while self._position < target:
            if not self._inflate(min(target - self._position, _STEP)):
                break
        return self._position


def iter_files(content: Content, path: str, wanted: Callable[[str], bool],
               limits: Limits = LIMITS) -> Iterator[tuple[str, bytes | TooLarge]]:
    """The regular files under ``path`` whose name relative to it ``wanted`` accepts, as
    ``(relative name, content)`` in archive order; a wanted file larger than
    ``limits.file`` comes as :class:`TooLarge`. Links and devices are skipped, and nothing
    is written to disk, so a hostile archive cannot reach outside it. Raises
    :class:`ArtifactTooLarge` past the other limits and :class:`ArtifactError` for what is
    not a tar.gz."""
    prefix = prefix_of(path)
    stream = _Inflated(content, limits.unpacked, limits.file)
    members = read = 0
    try:
        with tarfile.open(fileobj=stream, mode="r:") as archive:
            while (member := archive.next()) is not None:
                # TarFile keeps every header it has read, some 450 bytes each: drop them, the
                # loop needs only this one. The list is the one getmembers() returns, left out
                # of typeshed since it is not documented.
                archive.members.clear()  # type: ignore[attr-defined]
                members += 1
                if members > limits.members:
                    raise _too_large(f"the artifact has more than {limits.members} files "
                                     "and directories")
                # The offset of the next header, from this one's declared size: refused
                # here, a bomb member is never inflated.
                if archive.offset > limits.unpacked:
                    raise _too_large(f"the artifact unpacks to more than "
                                     f"{size_text(limits.unpacked)}")
                name = member.name.removeprefix("./")
                if not member.isfile() or not name.startswith(prefix):
                    continue
                relative = name[len(prefix):]
                if not wanted(relative):
                    continue
                if member.size > limits.file:
                    yield relative, TooLarge(member.size, limits.file)
                    continue
                read += member.size
                if read > limits.read:
                    raise _too_large(f"the files read under {prefix or './'} hold more than "
                                     f"{size_text(limits.read)}")
                extracted = archive.extractfile(member)
                if extracted is not None:
                    yield relative, extracted.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise ArtifactError(f"the artifact is not a readable tar.gz: {error}") from error


def read_files(content: Content, path: str, wanted: Callable[[str], bool],
               limits: Limits = LIMITS) -> dict[str, bytes | TooLarge]:
    """:func:`iter_files` as ``{relative name: content}``."""
    return dict(iter_files(content, path, wanted, limits))


def json_files(content: Content, path: str, limits: Limits = LIMITS
               ) -> Iterator[tuple[str, bytes | TooLarge]]:
    """Every ``*.json`` under ``path``, at any depth (the advisory database nests them by
    year and month), named by its full name in the artifact, one at a time."""
    prefix = prefix_of(path)
    for name, data in iter_files(content, path, lambda name: name.endswith(".json"), limits):
        yield prefix + name, data
