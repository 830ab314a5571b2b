"""What decides an image rebuild (the build context's content key), and reading an OCI archive:
layer sizes and unpacking with whiteouts. The real build runs in tests/packaging/test_image.py."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pathlib
import shutil
import tarfile

import pytest

from fluxsupport.devcluster import image

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_context_is_what_the_dockerfile_copies() -> None:
    files = image.context_files(ROOT)
    top = {name.split("/")[0] for name in files}
    assert top == {"Dockerfile", ".dockerignore", "pyproject.toml", "constraints.txt",
                   "README.md", "operator", "hack"}
    assert "hack/image/compile_imported.py" in files
    assert "operator/fluxsupport/devcluster/image.py" in files
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")
                or ".egg-info" in name]


@pytest.fixture
def checkout(tmp_path: pathlib.Path) -> pathlib.Path:
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "constraints.txt",
                 "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    package = tmp_path / "operator" / "fluxsupport"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""fluxsupport"""\n')
    return tmp_path


def test_the_content_key_follows_the_sources_not_bytecode_or_other_files(
        checkout: pathlib.Path) -> None:
    before = image.context_key(checkout)
    package = checkout / "operator" / "fluxsupport"
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\0" * 16)
    (checkout / "operator" / "fluxsupport.egg-info").mkdir()
    (checkout / "operator" / "fluxsupport.egg-info" / "PKG-INFO").write_text("x")
    (checkout / "tests").mkdir()
    (checkout / "tests" / "test_x.py").write_text("assert True\n")
    assert image.context_key(checkout) == before

    (package / "__init__.py").write_text('"""fluxsupport, changed"""\n')
    changed = image.context_key(checkout)
    assert changed != before
    (package / "__init__.py").chmod(0o755)
    assert image.context_key(checkout) != changed
    (package / "__init__.py").chmod(0o644)
    assert image.context_key(checkout) == changed
    with (checkout / "Dockerfile").open("a") as dockerfile:
        dockerfile.write("# a comment\n")
    assert image.context_key(checkout) != changed


def test_the_tag_is_the_version_and_the_content_key(checkout: pathlib.Path) -> None:
    assert image.tag(checkout) == f"0.1.0-{image.context_key(checkout)[:12]}"
    assert image.reference(checkout) == f"localhost/fluxsupport:{image.tag(checkout)}"


def test_the_base_images_are_named_by_their_recipe() -> None:
    build, runtime = image.base_references()
    assert build != runtime
    assert build.endswith(image.base_key())
    assert runtime.endswith(image.base_key())


def _layer(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A gzipped layer tar; None makes a directory."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as layer:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                layer.addfile(info)
            else:
                info.size, info.mode = len(content), 0o640
                layer.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue())


def _oci_archive(path: pathlib.Path, layers: list[bytes]) -> None:
    blobs: dict[str, bytes] = {}

    def add(content: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        blobs[digest] = content
        return {"digest": digest, "size": len(content)}

    config = add(json.dumps({
        "config": {"User": "65532:65532"},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [{"created_by": f"step {n}"} for n in range(len(layers))]}).encode())
    manifest = add(json.dumps({"schemaVersion": 2, "config": config,
                               "layers": [add(layer) for layer in layers]}).encode())
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {**manifest, "annotations": {"org.opencontainers.image.ref.name": "0.1.0"}}]}).encode()
    with tarfile.open(path, "w") as archive:
        for name, content in [("index.json", index), ("oci-layout", b"{}"),
                              *((f"blobs/sha256/{d.split(':')[1]}", c) for d, c in blobs.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def test_unpack_applies_whiteouts_and_keeps_modes(tmp_path: pathlib.Path) -> None:
    archive = tmp_path / "image.tar"
    layers = [
        _layer([("etc", None), ("etc/gone", b"x"), ("etc/kept", b"kept"), ("opt", None),
                ("opt/app", None), ("opt/app/old", b"old")]),
        _layer([("etc/.wh.gone", b""), ("opt/app/.wh..wh..opq", b""),
                ("opt/app/new", b"new")]),
    ]
    _oci_archive(archive, layers)
    target = tmp_path / "rootfs"
    target.mkdir()
    image.unpack(archive, target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "etc", "etc/kept", "opt", "opt/app", "opt/app/new"]
    assert (target / "etc/kept").stat().st_mode & 0o777 == 0o640
    assert image.image_config(archive)["config"]["User"] == "65532:65532"

    read = image.layers(archive)
    assert [layer.files for layer in read] == [6, 3]
    assert [layer.created_by for layer in read] == ["step 0", "step 1"]
    assert [layer.compressed for layer in read] == [len(layer) for layer in layers]
    assert [layer.unpacked for layer in read] == [len(gzip.decompress(layer))
                                                  for layer in layers]
    assert read[0].largest[0] == ("/etc", 5)
    assert "| all |" in image.size_table(archive)


def test_unpack_refuses_a_layer_that_writes_outside_the_root(tmp_path: pathlib.Path) -> None:
    archive = tmp_path / "image.tar"
    _oci_archive(archive, [_layer([("../escaped", b"x")])])
    target = tmp_path / "rootfs"
    target.mkdir()
    with pytest.raises(tarfile.OutsideDestinationError):
        image.unpack(archive, target)
    assert not (tmp_path / "escaped").exists()
