"""The operator image, built from the repository's ``Dockerfile`` without Docker (``make image``).

Two cached steps, both under ``<cache>/image`` (``FLUXSUPPORT_CACHE`` moves the cache):

1. Base images made from Debian packages: ``mmdebstrap --variant=essential`` of bookworm with
   ``python3.11`` and ``ca-certificates``. The build base keeps ``python3.11-venv`` (venv,
   ensurepip and pip's wheel); the runtime base is the same tree with it and what it pulled
   in purged. They stand in for ``python:3.11-slim`` (``PYTHON_IMAGE``, ``RUNTIME_IMAGE``) and are
   rebuilt only when the recipe below changes.
2. The Dockerfile built by buildah on those bases and pushed as an OCI archive to
   :func:`archive_path`, rebuilt only when the build context (what ``.dockerignore`` lets
   through: pyproject.toml, constraints.txt, README.md, operator/), the Dockerfile or the bases
   change.

buildah keeps its storage (vfs driver) in ``<cache>/image/storage``, not in
/var/lib/containers. Both tools need root (mmdebstrap's root mode, buildah's chroot isolation).

A node without a registry loads the archive with
``ctr -n k8s.io images import --base-name localhost/fluxsupport <archive>``; the image is then
:func:`reference` (``localhost/fluxsupport:<version>-<content key>``).
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import fnmatch
import gzip
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from fluxsupport.devcluster import paths

REPOSITORY = "localhost/fluxsupport"
BASE_REPOSITORY = "localhost/fluxsupport-python"

DEBIAN_SUITE = "bookworm"
DEBIAN_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
BASE_PACKAGES = ("python3.11", "python3.11-venv", "ca-certificates")
# Only `python -m venv` in the build stage uses these (venv, ensurepip and pip's wheel, and
# what python3.11-venv pulls in: distutils, lib2to3 and the python3 default-version packages);
# the runtime base has them purged. /usr/local/bin/python3 stays.
BUILD_ONLY_PACKAGES = ("python3.11-venv", "python3-pip-whl", "python3-setuptools-whl",
                       "python3-distutils", "python3-lib2to3", "python3", "python3-minimal",
                       "libpython3-stdlib")
# dpkg leaves these paths out of every package (the setting stays in the image, in
# /etc/dpkg/dpkg.cfg.d/99mmdebstrap). gconv is glibc's iconv() modules (8 MB), which Python's
# codecs never use. (Python's own files cannot be left out this way: its postinst byte-compiles
# every file its package lists.)
EXCLUDED_PATHS = (
    "/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
    "/usr/share/lintian/*", "/usr/lib/*/gconv/*",
)
# The licences stay; glibc reads locale.alias.
INCLUDED_PATHS = ("/usr/share/doc/*/copyright", "/usr/share/locale/locale.alias")
MERGED_USR_HOOK = pathlib.Path("/usr/share/mmdebstrap/hooks/merged-usr")
CUSTOMIZE_HOOKS = (
    # python and python3 on PATH, as in python:3.11-slim (the Dockerfile runs `python`).
    'ln -s /usr/bin/python3.11 "$1/usr/local/bin/python3"',
    'ln -s /usr/bin/python3.11 "$1/usr/local/bin/python"',
    # mmdebstrap copies the build host's resolver and name in; a runtime provides its own.
    'rm "$1/etc/resolv.conf" "$1/etc/hostname"',
)
BASE_CONFIG = (
    "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "--env", "LANG=C.UTF-8",
    "--cmd", "python3",
)


class ImageError(RuntimeError):
    """The image could not be built; the message says what to do."""


Reporter = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def image_dir() -> pathlib.Path:
    return paths.cache_dir() / "image"


def archive_path() -> pathlib.Path:
    """The OCI archive of the current build: a stable path, replaced when the image changes."""
    return image_dir() / "fluxsupport.oci.tar"


def metadata_path() -> pathlib.Path:
    """What :func:`archive_path` holds: content key, reference, digest, build times (JSON)."""
    return image_dir() / "fluxsupport.oci.json"


# --- what the image is made of ----------------------------------------------------------------


def base_key() -> str:
    """Identifies the recipe of the base images (not the Debian mirror's state that day)."""
    recipe = json.dumps([DEBIAN_SUITE, DEBIAN_SOURCES, BASE_PACKAGES, BUILD_ONLY_PACKAGES,
                         EXCLUDED_PATHS, INCLUDED_PATHS, CUSTOMIZE_HOOKS, BASE_CONFIG])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def base_references() -> tuple[str, str]:
    """(build base, runtime base): the Dockerfile's PYTHON_IMAGE and RUNTIME_IMAGE."""
    key = base_key()
    return (f"{BASE_REPOSITORY}:3.11-{DEBIAN_SUITE}-build-{key}",
            f"{BASE_REPOSITORY}:3.11-{DEBIAN_SUITE}-{key}")


def _dockerignore(root: pathlib.Path) -> tuple[list[str], list[str]]:
    """The sources the build context admits (``!path``) and the names it drops (``**/name``).

    The repository's .dockerignore has exactly that shape ("*" first);
    tests/packaging/test_dockerfile.py ties its ``!`` lines to the Dockerfile's COPY lines.
    """
    included, dropped = [], []
    for raw in (root / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if line.startswith("!"):
            included.append(line[1:].rstrip("/"))
        elif line.startswith("**/"):
            dropped.append(line.removeprefix("**/"))
    return included, dropped


def context_files(root: pathlib.Path | None = None) -> list[str]:
    """Every file buildah sends as the build context, relative to the checkout, sorted."""
    root = root or paths.source_root()
    included, dropped = _dockerignore(root)
    found = {"Dockerfile", ".dockerignore"}
    for name in included:
        path = root / name
        candidates = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for candidate in candidates:
            relative = candidate.relative_to(root)
            if not any(fnmatch.fnmatch(part, pattern) for part in relative.parts
                       for pattern in dropped):
                found.add(relative.as_posix())
    return sorted(found)


def context_key(root: pathlib.Path | None = None) -> str:
    """A hash of the build context's files (names, exec bits, contents) and the base recipe."""
    root = root or paths.source_root()
    digest = hashlib.sha256(base_key().encode())
    for name in context_files(root):
        path = root / name
        digest.update(f"{name}\0{os.access(path, os.X_OK):d}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def version(root: pathlib.Path | None = None) -> str:
    project = tomllib.loads(((root or paths.source_root()) / "pyproject.toml").read_text())
    return str(project["project"]["version"])


def tag(root: pathlib.Path | None = None) -> str:
    """``<package version>-<12 hex digits of the content key>``, e.g. ``0.1.0-3f2a9c1d2e4b``."""
    return f"{version(root)}-{context_key(root)[:12]}"


def reference(root: pathlib.Path | None = None) -> str:
    """The image's name after ``ctr images import --base-name localhost/fluxsupport``."""
    return f"{REPOSITORY}:{tag(root)}"


# --- building ---------------------------------------------------------------------------------


def _buildah(*args: str | pathlib.Path) -> list[str]:
    return ["buildah", "--root", str(image_dir() / "storage"),
            "--runroot", str(image_dir() / "run"), "--storage-driver", "vfs",
            *(str(a) for a in args)]


def _run(command: list[str], *, what: str, env: dict[str, str] | None = None,
         timeout: float = 1800) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False,
                            timeout=timeout, env=env)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise ImageError(f"{what} failed ({' '.join(command[:6])} ...):\n" +
                         "\n".join(output[-60:]))
    return result.stdout


def _require_tools() -> None:
    missing = [tool for tool in ("buildah", "mmdebstrap", "tar")
               if shutil.which(tool) is None]
    if missing:
        raise ImageError(f"{', '.join(missing)} not found: `make image` installs buildah and "
                         "mmdebstrap from Debian's packages (apt-get install buildah mmdebstrap)")
    if not MERGED_USR_HOOK.is_dir():
        raise ImageError(f"mmdebstrap's merged-usr hook is missing ({MERGED_USR_HOOK}); "
                         "mmdebstrap 1.0 or newer has it")
    if os.geteuid() != 0:
        raise ImageError("building the image needs root (mmdebstrap's root mode and buildah's "
                         "chroot isolation): run `make image` as root or with sudo")


def _image_exists(ref: str) -> bool:
    return subprocess.run(_buildah("inspect", "--type", "image", ref), capture_output=True,
                          check=False, timeout=120).returncode == 0


@contextmanager
def _lock() -> Iterator[None]:
    """One build at a time: a test run and `make image` started together must not race."""
    image_dir().mkdir(parents=True, exist_ok=True)
    with (image_dir() / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _tar_rootfs(rootfs: pathlib.Path, target: pathlib.Path) -> None:
    # Numeric owners, file capabilities kept; /dev stays an empty directory (the runtime
    # mounts its own), as in images from a registry.
    _run(["tar", "--create", "--file", str(target), "--directory", str(rootfs),
          "--numeric-owner", "--xattrs", "--xattrs-include=*", "--sort=name",
          "--exclude=./dev/*", "."], what="tar of the base rootfs")


def _commit_base(rootfs_tar: pathlib.Path, ref: str) -> None:
    container = _run(_buildah("from", "scratch"), what="buildah from scratch").strip()
    try:
        _run(_buildah("add", container, rootfs_tar, "/"), what="buildah add")
        _run(_buildah("config", *BASE_CONFIG, container), what="buildah config")
        _run(_buildah("commit", "--quiet", container, ref), what="buildah commit")
    finally:
        subprocess.run(_buildah("rm", container), capture_output=True, check=False,
                       timeout=300)


def build_bases(report: Reporter = _stderr) -> tuple[str, str]:
    """Make the two base images unless buildah's storage has them; return their references."""
    build_ref, runtime_ref = base_references()
    if _image_exists(build_ref) and _image_exists(runtime_ref):
        return build_ref, runtime_ref
    started = time.monotonic()
    report(f"Building the base images {build_ref} and {runtime_ref} from Debian {DEBIAN_SUITE} "
           "packages (mmdebstrap; once, cached afterwards)")
    work = image_dir() / "base.partial"
    _remove_unmounted(work)
    work.mkdir(parents=True)
    rootfs = work / "rootfs"
    # mmdebstrap mounts /proc, /sys and /dev into the tree while it installs: in a mount
    # namespace of its own, those mounts end with it even when it is killed.
    command = ["unshare", "--mount", "--propagation", "private", "--",
               "mmdebstrap", "--variant=essential", "--format=directory",
               f"--include={','.join(BASE_PACKAGES)}", f"--hook-dir={MERGED_USR_HOOK}",
               *(f"--dpkgopt=path-exclude={p}" for p in EXCLUDED_PATHS),
               *(f"--dpkgopt=path-include={p}" for p in INCLUDED_PATHS),
               *(f"--customize-hook={hook}" for hook in CUSTOMIZE_HOOKS),
               DEBIAN_SUITE, str(rootfs), *DEBIAN_SOURCES]
    _run(command, what="mmdebstrap")
    report(f"  debootstrapped in {time.monotonic() - started:.0f}s")
    _tar_rootfs(rootfs, work / "build.tar")
    _run(["chroot", str(rootfs), "dpkg", "--purge", *BUILD_ONLY_PACKAGES],
         what="dpkg --purge in the runtime base")
    _tar_rootfs(rootfs, work / "runtime.tar")
    _commit_base(work / "build.tar", build_ref)
    _commit_base(work / "runtime.tar", runtime_ref)
    _remove_unmounted(work)
    report(f"  base images ready in {time.monotonic() - started:.0f}s")
    return build_ref, runtime_ref


def _remove_unmounted(folder: pathlib.Path) -> None:
    """Delete a work folder, unless something is mounted in it (rmtree would then delete
    through the mount, into the host's /dev for instance)."""
    inside = str(folder.resolve()) + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        mounted = [line.split()[4] for line in mountinfo
                   if (line.split()[4] + "/").startswith(inside)]
    if mounted:
        raise ImageError(f"{', '.join(mounted)} is still mounted (an interrupted build?): "
                         f"unmount it (umount -R), then run the build again")
    shutil.rmtree(folder, ignore_errors=True)


def _host_trust_mounts() -> list[str]:
    """The host's CA bundle and pip configuration, mounted read-only into the RUN steps.

    Where the index is reached through a proxy that re-signs TLS, pip in the build needs the
    host's trust; nothing of these lands in a layer.
    """
    mounts = []
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                      "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and pathlib.Path(candidate).is_file():
            mounts += ["--volume",
                       f"{pathlib.Path(candidate).resolve()}:/etc/ssl/certs/ca-certificates.crt:ro"]
            break
    for candidate in (os.environ.get("PIP_CONFIG_FILE"), "/etc/pip.conf",
                      str(pathlib.Path.home() / ".config/pip/pip.conf")):
        if candidate and pathlib.Path(candidate).is_file():
            mounts += ["--volume", f"{pathlib.Path(candidate).resolve()}:/etc/pip.conf:ro"]
            break
    return mounts


def _stage_context(root: pathlib.Path, target: pathlib.Path) -> None:
    """Copy exactly the hashed files, so the image is built from what the key describes."""
    for name in context_files(root):
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, destination)


def _current() -> dict[str, Any] | None:
    if not (archive_path().is_file() and metadata_path().is_file()):
        return None
    recorded: dict[str, Any] = json.loads(metadata_path().read_text())
    return recorded


def build(report: Reporter = _stderr) -> pathlib.Path:
    """Build the image unless :func:`archive_path` already holds this checkout's; return it.

    The archive's index names the tag only (:func:`tag`), so
    ``ctr -n k8s.io images import --base-name localhost/fluxsupport`` makes it
    :func:`reference`.
    """
    root = paths.source_root()
    key = context_key(root)
    current = _current()
    if current is not None and current.get("key") == key:
        return archive_path()
    _require_tools()
    with _lock():
        current = _current()
        if current is not None and current.get("key") == key:
            return archive_path()
        started = time.monotonic()
        seconds: dict[str, float] = {}
        build_ref, runtime_ref = build_bases(report)
        seconds["bases"] = round(time.monotonic() - started, 1)
        scratch = image_dir() / "tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        # buildah keeps large temporary files in TMPDIR (/var/tmp by default).
        env = {**os.environ, "TMPDIR": str(scratch)}
        # The image is built from a copy of exactly the hashed files, and named by the copy's
        # key: an edit while it builds makes the next build(), not a mislabelled image.
        context = pathlib.Path(tempfile.mkdtemp(dir=scratch, prefix="context-"))
        _stage_context(root, context)
        key = context_key(context)
        image_tag = f"{version(context)}-{key[:12]}"
        ref = f"{REPOSITORY}:{image_tag}"
        report(f"Building {ref} from {root / 'Dockerfile'} (buildah; cached until the "
               "Dockerfile, constraints.txt, pyproject.toml, README.md or operator/ change)")
        step = time.monotonic()
        _run(_buildah("build", "--isolation", "chroot", "--network", "host", "--pull=never",
                      "--build-arg", f"PYTHON_IMAGE={build_ref}",
                      "--build-arg", f"RUNTIME_IMAGE={runtime_ref}",
                      *_host_trust_mounts(), "--file", context / "Dockerfile",
                      "--tag", ref, context), what="buildah build", env=env)
        seconds["build"] = round(time.monotonic() - step, 1)
        step = time.monotonic()
        partial = archive_path().with_suffix(".partial")
        partial.unlink(missing_ok=True)
        digest_file = scratch / "digest"
        _run(_buildah("push", "--quiet", "--digestfile", digest_file, ref,
                      f"oci-archive:{partial}:{image_tag}"), what="buildah push", env=env)
        seconds["push"] = round(time.monotonic() - step, 1)
        metadata_path().unlink(missing_ok=True)
        partial.replace(archive_path())
        seconds["total"] = round(time.monotonic() - started, 1)
        metadata = {"key": key, "tag": image_tag, "reference": ref,
                    "digest": digest_file.read_text().strip(),
                    "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "seconds": seconds, "sizes": size_table(archive_path())}
        metadata_path().write_text(json.dumps(metadata, indent=2) + "\n")
        _prune(keep={build_ref, runtime_ref})
        shutil.rmtree(scratch, ignore_errors=True)
        report(f"  {ref} in {archive_path()} ({archive_path().stat().st_size / 1e6:.0f} MB; "
               f"build {seconds['build']:.0f}s, push {seconds['push']:.0f}s)")
        return archive_path()


def built(report: Reporter = _stderr) -> dict[str, Any]:
    """Build if needed, then what :func:`metadata_path` records (key, tag, reference, digest,
    built, seconds, sizes: the table of :func:`size_table`)."""
    build(report)
    recorded: dict[str, Any] = json.loads(metadata_path().read_text())
    return recorded


def _prune(keep: set[str]) -> None:
    """Drop every image but the current bases from buildah's storage: the archive is the
    product, and the vfs driver stores each layer as a full copy."""
    listed = json.loads(_run(_buildah("images", "--json"), what="buildah images") or "[]")
    for entry in listed:
        if not keep.intersection(entry.get("names") or ()):
            _run(_buildah("rmi", "--force", entry["id"]), what="buildah rmi")


# --- reading the archive ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layer:
    digest: str
    compressed: int  # bytes in the archive
    unpacked: int  # bytes of the uncompressed layer tar (what `buildah images` sums)
    files: int
    created_by: str
    largest: tuple[tuple[str, int], ...]  # the biggest folders, 3 levels deep: bytes


def _blob(outer: tarfile.TarFile, name: str) -> IO[bytes]:
    """A file of the OCI layout by name (``index.json``) or by digest (``sha256:...``)."""
    member = outer.extractfile("blobs/" + name.replace(":", "/") if ":" in name else name)
    if member is None:
        raise ImageError(f"{name} is missing from the OCI archive")
    return member


@contextmanager
def _opened(archive: pathlib.Path) -> Iterator[tuple[tarfile.TarFile, dict[str, Any]]]:
    """The archive, its (only) manifest and its image configuration."""
    with tarfile.open(archive) as outer:
        [entry] = json.load(_blob(outer, "index.json"))["manifests"]
        manifest = json.load(_blob(outer, entry["digest"]))
        config = json.load(_blob(outer, manifest["config"]["digest"]))
        yield outer, {"manifest": manifest, "config": config}


def image_config(archive: pathlib.Path) -> dict[str, Any]:
    """The image's configuration (``config.User``, ``config.Env``, ``rootfs``, ``history``)."""
    with _opened(archive) as (_, parts):
        config: dict[str, Any] = parts["config"]
        return config


def layers(archive: pathlib.Path) -> list[Layer]:
    """Each layer with its compressed and unpacked size and the step that made it."""
    found = []
    with _opened(archive) as (outer, parts):
        steps = [h.get("created_by", "") for h in parts["config"].get("history", [])
                 if not h.get("empty_layer")]
        for number, descriptor in enumerate(parts["manifest"]["layers"]):
            with gzip.open(_blob(outer, descriptor["digest"])) as stream:
                with tarfile.open(fileobj=stream, mode="r|") as layer:
                    files, by_directory = 0, collections.Counter[str]()
                    for entry in layer:
                        files += 1
                        folder = entry.name.removeprefix("./").rpartition("/")[0]
                        by_directory["/" + "/".join(folder.split("/")[:3])] += entry.size
                while stream.read(1 << 20):
                    pass  # the end-of-archive blocks count too
                unpacked = stream.tell()
            found.append(Layer(descriptor["digest"], descriptor["size"], unpacked, files,
                               steps[number] if number < len(steps) else "",
                               tuple(by_directory.most_common(3))))
    return found


def size_table(archive: pathlib.Path) -> str:
    """A Markdown table of the layers, for docs/install.md and `devcluster image --sizes`."""
    rows = ["| layer | files | largest directories (MB) | compressed MB | unpacked MB |",
            "|---|---|---|---|---|"]
    total_compressed = total_unpacked = 0
    for number, layer in enumerate(layers(archive), 1):
        largest = ", ".join(f"{path} {size / 1e6:.1f}" for path, size in layer.largest)
        rows.append(f"| {number} | {layer.files} | {largest} | {layer.compressed / 1e6:.1f} | "
                    f"{layer.unpacked / 1e6:.1f} |")
        total_compressed += layer.compressed
        total_unpacked += layer.unpacked
    rows.append(f"| all | | | {total_compressed / 1e6:.1f} | {total_unpacked / 1e6:.1f} |")
    return "\n".join(rows)


def _safe(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    # tar_filter refuses absolute names and links leading outside; the member keeps its modes,
    # so a check on the unpacked tree sees the permissions the image really has.
    tarfile.tar_filter(member, path)
    return member


def unpack(archive: pathlib.Path, target: pathlib.Path) -> None:
    """The image's root filesystem in ``target``: its layers in order, whiteouts applied.

    As root the files keep their owners, as a container runtime would unpack them.
    """
    with _opened(archive) as (outer, parts):
        for descriptor in parts["manifest"]["layers"]:
            with gzip.open(_blob(outer, descriptor["digest"])) as stream, \
                    tarfile.open(fileobj=stream, mode="r|") as layer:
                for entry in layer:
                    parent, _, name = entry.name.rpartition("/")
                    if name == ".wh..wh..opq":
                        for child in (target / parent).iterdir():
                            _remove(child)
                    elif name.startswith(".wh."):
                        _remove(target / parent / name.removeprefix(".wh."))
                    else:
                        layer.extract(entry, target, numeric_owner=True, filter=_safe)


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
