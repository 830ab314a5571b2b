"""Minimal OCI images from local files, for the node's containerd (no registry is reachable).

An image here is one uncompressed layer (the files, their parent folders, nothing else), a
config, a manifest and an index, written as an OCI image layout in a tar archive: what
``ctr images import`` reads. Everything is reproducible (fixed times and owners), so the same
binary always gives the same digests, and the digest the kubelet reports for a Pod is known
before the Pod runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from fluxsupport.devcluster import paths

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
#: Where Debian keeps the CA bundle; images that talk TLS get a copy.
CA_BUNDLE = pathlib.Path("/etc/ssl/certs/ca-certificates.crt")


@dataclasses.dataclass(frozen=True)
class File:
    """A file of the image: its path inside, and where its bytes come from."""

    path: str
    source: pathlib.Path | None = None
    data: bytes | None = None
    mode: int = 0o644


@dataclasses.dataclass(frozen=True)
class Image:
    name: str  # e.g. localhost/source-controller
    tag: str
    files: Sequence[File]
    entrypoint: Sequence[str]
    user: str = "65534:65534"
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Empty folders to create (for mount points such as /tmp).
    folders: Sequence[str] = ()

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"


@dataclasses.dataclass(frozen=True)
class Written:
    archive: pathlib.Path
    reference: str
    #: The manifest's digest: what a Pod's imageID names (``<name>@<digest>``).
    digest: str
    size: int


def operator_archive() -> pathlib.Path:
    """The operator image as an OCI archive, as ``make image`` writes it
    (``FLUXSUPPORT_IMAGE_ARCHIVE`` points elsewhere)."""
    override = os.environ.get("FLUXSUPPORT_IMAGE_ARCHIVE")
    if override:
        return pathlib.Path(override)
    return paths.cache_dir() / "image" / "fluxsupport.oci.tar"


def archive_tag(archive: pathlib.Path) -> str:
    """The tag an OCI layout archive names its image by (the index's ref.name annotation)."""
    with tarfile.open(archive) as layout:
        member = layout.extractfile("index.json")
        if member is None:
            raise ValueError(f"{archive} has no index.json: not an OCI image layout archive")
        index = json.load(member)
    for manifest in index.get("manifests") or []:
        name = (manifest.get("annotations") or {}).get(REF_NAME)
        if name:
            return str(name).rsplit(":", 1)[-1]
    raise ValueError(f"{archive}: no {REF_NAME} annotation names the image")


def _descriptor(media_type: str, blob: bytes | None = None, *, digest: str = "",
                size: int = 0) -> dict[str, Any]:
    if blob is not None:
        digest, size = f"sha256:{hashlib.sha256(blob).hexdigest()}", len(blob)
    return {"mediaType": media_type, "digest": digest, "size": size}


def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = kind, mode, size
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def _write_layer(image: Image, target: pathlib.Path) -> tuple[str, int]:
    """The layer tar; returns its digest and size (also its diff ID: it is uncompressed)."""
    folders: set[str] = {f.strip("/") for f in image.folders}
    for file in image.files:
        parts = file.path.strip("/").split("/")[:-1]
        folders.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as layer:
        for folder in sorted(folders):
            mode = 0o1777 if folder == "tmp" else 0o755
            layer.addfile(_tarinfo(folder, tarfile.DIRTYPE, mode))
        for file in sorted(image.files, key=lambda f: f.path):
            if file.source is not None:
                size = file.source.stat().st_size
                with file.source.open("rb") as content:
                    layer.addfile(_tarinfo(file.path.strip("/"), tarfile.REGTYPE, file.mode,
                                           size), content)
            else:
                data = file.data or b""
                layer.addfile(_tarinfo(file.path.strip("/"), tarfile.REGTYPE, file.mode,
                                       len(data)), io.BytesIO(data))
    digest = hashlib.sha256()
    with target.open("rb") as written:
        while chunk := written.read(1 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}", target.stat().st_size


def write(image: Image, archive: pathlib.Path) -> Written:
    """Write ``image`` as an OCI layout tar at ``archive``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent) as scratch:
        layer_path = pathlib.Path(scratch) / "layer.tar"
        layer_digest, layer_size = _write_layer(image, layer_path)
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": list(image.entrypoint), "User": image.user,
                       "Env": [f"{k}={v}" for k, v in {
                           "PATH": "/usr/local/bin:/usr/bin:/bin", **image.env}.items()],
                       "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created_by": "fluxsupport devcluster (devcluster/images.py)"}],
        }, sort_keys=True).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": _descriptor(CONFIG, config),
            "layers": [_descriptor(LAYER, digest=layer_digest, size=layer_size)],
        }, sort_keys=True).encode()
        manifest_descriptor = {**_descriptor(MANIFEST, manifest),
                               "platform": {"architecture": "amd64", "os": "linux"},
                               "annotations": {REF_NAME: image.tag}}
        index = json.dumps({"schemaVersion": 2, "mediaType": INDEX,
                            "manifests": [manifest_descriptor]}, sort_keys=True).encode()
        partial = archive.with_suffix(".partial")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as layout:
            def add(name: str, data: bytes) -> None:
                layout.addfile(_tarinfo(name, tarfile.REGTYPE, 0o644, len(data)),
                               io.BytesIO(data))

            add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            add("index.json", index)
            for blob in (config, manifest):
                add(f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}", blob)
            with layer_path.open("rb") as content:
                layout.addfile(_tarinfo(f"blobs/sha256/{layer_digest.removeprefix('sha256:')}",
                                        tarfile.REGTYPE, 0o644, layer_size), content)
        partial.replace(archive)
    return Written(archive, image.reference, manifest_descriptor["digest"],
                   archive.stat().st_size)


def static_program(name: str, tag: str, binary: pathlib.Path, program: str, *,
                   args: Sequence[str] = (), user: str = "65534:65534",
                   env: Mapping[str, str] | None = None, with_ca: bool = True) -> Image:
    """An image of one static Go program at /usr/local/bin/``program``, with /tmp, an
    /etc/passwd that names its user, and the machine's CA bundle (for programs that talk
    TLS)."""
    uid, _, gid = user.partition(":")
    path = f"/usr/local/bin/{program}"
    files = [
        File(path, source=binary, mode=0o755),
        File("/etc/passwd", data=f"root:x:0:0:root:/root:/sbin/nologin\n"
                                 f"nobody:x:{uid}:{gid or uid}:nobody:/tmp:/sbin/nologin\n"
                                 .encode()),
        File("/etc/group", data=f"root:x:0:\nnobody:x:{gid or uid}:\n".encode()),
    ]
    if with_ca and CA_BUNDLE.is_file():
        files.append(File(str(CA_BUNDLE), source=CA_BUNDLE))
    return Image(name, tag, files, [path, *args], user=user, env=env or {},
                 folders=("tmp",))
