"""How far the running Flux is behind, on the distribution's real release data (vendored in
tests/data/upstream/images) and the vendored Flux Deployments: the domain and `updates check`."""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
from typing import Any

import pytest
import yaml

from fluxsupport.domain import inventory, updatecheck, updates
from tests import fixtures

RELEASES = fixtures.UPSTREAM  # holds images/VERSION and images/<version>/<variant>.yaml
VARIANT = "enterprise-distroless"
REGISTRY = "ghcr.io/controlplaneio-fluxcd/distroless"


def release_data() -> updates.ReleaseData:
    images = RELEASES / "images"
    return updates.parse_release_data(
        (images / "VERSION").read_text(),
        {(p.parent.name, p.stem): p.read_text() for p in images.glob("*/*.yaml")})


def flux2_bundle(version: str) -> dict[str, str]:
    """component -> tag that a Flux release bundled, from the vendored flux2-releases.md table
    (for releases older than the distribution's images/ holds)."""
    text = (fixtures.UPSTREAM / "advisories" / "flux2-releases.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| flux2 tag |"))
    row = next(line for line in text.splitlines() if line.startswith(f"| {version} |"))
    names = [cell.strip() for cell in header.strip("|").split("|")][2:]
    tags = [cell.strip() for cell in row.strip("|").split("|")][2:]
    return {name: tag for name, tag in zip(names, tags, strict=True) if tag != "-"}


def tag_only(bundle: dict[str, str]) -> dict[str, dict[str, str]]:
    """Entries for fixtures.deployments_running without a digest: the image `repo:tag`."""
    return {name: {"name": f"{REGISTRY}/{name}", "newTag": tag, "digest": ""}
            for name, tag in bundle.items()}


def write_inventory(path: pathlib.Path, deployments: list[dict[str, Any]]) -> pathlib.Path:
    for deployment in deployments:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        container["image"] = container["image"].removesuffix("@")
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": deployments}))
    return path


def components(deployments: list[dict[str, Any]]) -> list[inventory.RunningComponent]:
    for deployment in deployments:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        container["image"] = container["image"].removesuffix("@")
    return inventory.build_inventory(deployments)


def by_name(report: updates.UpdateReport) -> dict[str, updates.ComponentUpdate]:
    return {c.name: c for c in report.components}


def fluxsupport(*args: str | pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fluxsupport", "updates", "check",
                           *map(str, args)], capture_output=True, text=True, timeout=120,
                          check=False)


# --- the release data ---------------------------------------------------------------------

def test_the_release_data_parses_in_the_distributions_layout() -> None:
    data = release_data()
    assert data.latest == "v2.9.4"
    assert sorted({r.version for r in data.releases}) == ["v2.7.5", "v2.8.8", "v2.9.4"]
    assert data.variants() == ["enterprise-alpine", "enterprise-distroless",
                               "enterprise-distroless-fips", "upstream-alpine"]
    (latest,) = [r for r in data.of_variant(VARIANT) if r.version == "v2.9.4"]
    source = latest.entry("source-controller")
    assert source is not None
    assert (source.new_tag, source.digest) == (
        "v1.9.4", fixtures.release_images("v2.9.4", VARIANT)["source-controller"]["digest"])
    assert [r.version for r in data.of_variant(VARIANT)] == ["v2.9.4", "v2.8.8", "v2.7.5"]


@pytest.mark.parametrize(("version", "files", "message"), [
    ("2.9.x\n", {("v2.9.4", VARIANT): "images: []"}, "images/VERSION: '2.9.x' is not a semantic"),
    ("v2.9.4\n", {}, "no images/<version>/<variant>.yaml"),
    ("v2.9.4\n", {("v2.9.4", VARIANT): "images: ["}, "not valid YAML"),
    ("v2.9.4\n", {("v2.9.4", VARIANT): "kind: Kustomization"}, "expected a kustomize `images:`"),
    ("v2.9.4\n", {("v2.9.4", VARIANT): "images:\n- {name: a/b, newTag: v1.0.0, digest: md5:1}"},
     "images[0].digest: String should match pattern"),
    ("v3.0.0\n", {("v2.9.4", VARIANT): (RELEASES / "images/v2.9.4" / f"{VARIANT}.yaml"
                                        ).read_text()}, "no images/v3.0.0/"),
])
def test_malformed_release_data_says_what_is_wrong(version: str, files: dict[tuple[str, str], str],
                                                    message: str) -> None:
    with pytest.raises(updates.ReleaseDataError, match=re.escape(message)):
        updates.parse_release_data(version, files)


# --- the verdicts -------------------------------------------------------------------------

def test_an_up_to_date_cluster() -> None:
    report = updates.check(components(fixtures.flux_deployments()), release_data())
    assert (report.running, report.variant, report.latest) == ("v2.9.4", VARIANT, "v2.9.4")
    assert (report.minors_behind, report.supported, report.up_to_date) == (0, True, True)
    assert report.supported_minors == ("v2.9", "v2.8", "v2.7")
    # The six controllers of the fixture; the Flux Operator is not in the release data.
    latest = fixtures.release_images("v2.9.4", VARIANT)
    assert {c.name for c in report.components} == set(latest) - {"source-watcher"}
    for component in report.components:
        assert component.running == component.newest_patch == component.latest \
            == latest[component.name]["newTag"]
        assert component.newer_build is False
        assert component.newest_digest == latest[component.name]["digest"]


def test_one_minor_behind_is_supported_and_names_the_latest_tags() -> None:
    running = fixtures.release_images("v2.8.8", VARIANT)
    report = updates.check(components(fixtures.deployments_running(running, "v2.8.8")),
                           release_data())
    assert (report.running, report.minors_behind, report.supported, report.up_to_date) == (
        "v2.8.8", 1, True, False)
    assert report.newest_patch == "v2.8.8"
    source = by_name(report)["source-controller"]
    assert (source.running, source.newest_patch, source.latest, source.newer_build) == (
        "v1.8.5", "v1.8.5", "v1.9.4", False)


def test_four_minors_behind_is_not_supported() -> None:
    # Flux v2.5.1's controller tags (flux2's own manifests); the distribution's images/ no
    # longer lists v2.5, so there is no newest patch and no digest to compare.
    bundle = flux2_bundle("v2.5.1")
    assert bundle["source-controller"] == "v1.5.0"
    report = updates.check(components(fixtures.deployments_running(tag_only(bundle), "v2.5.1")),
                           release_data())
    assert (report.running, report.minors_behind, report.supported) == ("v2.5.1", 4, False)
    assert report.newest_patch is None
    source = by_name(report)["source-controller"]
    assert (source.running, source.digests, source.newest_patch, source.latest,
            source.newer_build) == ("v1.5.0", (), None, "v1.9.4", None)
    # The threshold is a parameter: five supported minors would cover v2.5.
    assert updates.check(components(fixtures.deployments_running(tag_only(bundle), "v2.5.1")),
                         release_data(), supported_minors=5).supported is True


def test_a_rebuilt_tag_is_a_newer_build() -> None:
    # v2.7.5 as published before the CVE-2026-47680 rebuild: same tags, older source-controller.
    pre = fixtures.images(fixtures.PRE_FIX_V275)
    report = updates.check(components(fixtures.deployments_running(pre, "v2.7.5")),
                           release_data())
    assert (report.running, report.minors_behind, report.supported) == ("v2.7.5", 2, True)
    found = by_name(report)
    current = fixtures.release_images("v2.7.5", VARIANT)
    changed = {name for name in pre if pre[name]["digest"] != current[name]["digest"]}
    assert "source-controller" in changed
    for name in set(found) & set(pre):
        assert found[name].newer_build is (name in changed), name
        assert found[name].newest_digest == current[name]["digest"]
    assert found["source-controller"].running == found["source-controller"].newest_patch


def test_without_version_labels_the_tags_tell_the_release() -> None:
    deployments = fixtures.deployments_running(fixtures.release_images("v2.8.8", VARIANT), "")
    for deployment in deployments:
        deployment["metadata"]["labels"].pop("app.kubernetes.io/version", None)
    report = updates.check(components(deployments), release_data())
    assert (report.running, report.minors_behind) == ("v2.8.8", 1)


def test_the_variant_comes_from_the_images() -> None:
    fips = fixtures.release_images("v2.8.8", "enterprise-distroless-fips")
    report = updates.check(components(fixtures.deployments_running(fips, "v2.8.8")),
                           release_data())
    assert report.variant == "enterprise-distroless-fips"
    assert by_name(report)["source-controller"].newer_build is False


def test_an_inventory_without_distribution_components_is_bad_input() -> None:
    operator_only = [d for d in fixtures.flux_deployments()
                     if d["metadata"]["name"] == "flux-operator"]
    with pytest.raises(updates.ReleaseDataError, match="none of the components"):
        updates.check(components(operator_only), release_data())


# --- the command --------------------------------------------------------------------------

def test_check_json_on_an_up_to_date_cluster_exits_0() -> None:
    result = fluxsupport("--releases", RELEASES, "--inventory",
                         fixtures.UPSTREAM / "flux-deployments.yaml", "-o", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {k: report[k] for k in ("running", "latest", "minorsBehind", "supported")} == {
        "running": "v2.9.4", "latest": "v2.9.4", "minorsBehind": 0, "supported": True}
    source = next(c for c in report["components"] if c["name"] == "source-controller")
    assert {k: source[k] for k in ("running", "newestPatch", "newerBuild")} == {
        "running": "v1.9.4", "newestPatch": "v1.9.4", "newerBuild": False}


def test_check_rebuilt_digest_one_minor_and_table(tmp_path: pathlib.Path) -> None:
    pre = fixtures.images(fixtures.PRE_FIX_V275)
    path = write_inventory(tmp_path / "flux.yaml", fixtures.deployments_running(pre, "v2.7.5"))
    result = fluxsupport("--releases", RELEASES / "images", "--inventory", path)
    assert result.returncode == 0, result.stderr
    assert "Flux v2.7.5 (enterprise-distroless): latest v2.9.4, 2 minor(s) behind, supported" \
        in result.stdout
    (row,) = [line for line in result.stdout.splitlines() if " source-controller " in line]
    assert row.split()[-1] == "yes"


def test_check_four_minors_behind_exits_1(tmp_path: pathlib.Path) -> None:
    path = write_inventory(tmp_path / "flux.yaml", fixtures.deployments_running(
        tag_only(flux2_bundle("v2.5.1")), "v2.5.1"))
    result = fluxsupport("--releases", RELEASES, "--inventory", path, "-o", "json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert (report["running"], report["minorsBehind"], report["supported"]) == (
        "v2.5.1", 4, False)


def test_check_bad_input_exits_2(tmp_path: pathlib.Path) -> None:
    inventory_file = fixtures.UPSTREAM / "flux-deployments.yaml"
    result = fluxsupport("--releases", tmp_path, "--inventory", inventory_file)
    assert result.returncode == 2
    assert "no images/VERSION" in result.stderr

    shutil.copytree(RELEASES / "images", tmp_path / "images")
    (tmp_path / "images" / "v2.8.8" / f"{VARIANT}.yaml").write_text("images: [")
    result = fluxsupport("--releases", tmp_path, "--inventory", inventory_file)
    assert result.returncode == 2
    assert f"images/v2.8.8/{VARIANT}.yaml: not valid YAML" in result.stderr

    (tmp_path / "empty.yaml").write_text(yaml.safe_dump({"kind": "List", "items": []}))
    result = fluxsupport("--releases", RELEASES, "--inventory", tmp_path / "empty.yaml")
    assert result.returncode == 2
    assert "no Flux Deployment found" in result.stderr

    result = fluxsupport("--releases", RELEASES, "--inventory", inventory_file,
                         "--supported-minors", "0")
    assert result.returncode == 2
    assert "--supported-minors" in result.stderr


# --- the in-cluster layout: a ConfigMap and the policy key --------------------------------

def configmap_data() -> dict[str, str]:
    """The data of the ConfigMap that docs/updates.md's kubectl command builds from images/."""
    images = RELEASES / "images"
    data = {"VERSION": (images / "VERSION").read_text()}
    data |= {f"{p.parent.name}-{p.name}": p.read_text() for p in images.glob("*/*.yaml")}
    return data


def test_the_configmap_layout_holds_the_same_release_data() -> None:
    assert updates.parse_configmap_data(configmap_data()) == release_data()


@pytest.mark.parametrize(("key", "message"), [
    ("v2.9.4/enterprise-distroless.yaml", "is not VERSION or <version>-<variant>.yaml"),
    ("enterprise-distroless.yaml", "is not VERSION or <version>-<variant>.yaml"),
    ("v2.9.4-enterprise-distroless.yml", "is not VERSION or <version>-<variant>.yaml"),
])
def test_a_configmap_key_outside_the_layout_is_named(key: str, message: str) -> None:
    data = configmap_data() | {key: "images: []"}
    with pytest.raises(updates.ReleaseDataError, match=re.escape(f"key {key!r} {message}")):
        updates.parse_configmap_data(data)


def test_a_configmap_without_version_is_refused() -> None:
    data = {k: v for k, v in configmap_data().items() if k != "VERSION"}
    with pytest.raises(updates.ReleaseDataError, match="no key VERSION"):
        updates.parse_configmap_data(data)


def test_a_configmap_key_of_a_megabyte_is_refused_before_it_is_parsed() -> None:
    """A ConfigMap holds up to 1 MiB; PyYAML would build a node per scalar of it."""
    data = configmap_data()
    key = "v2.9.4-enterprise-distroless.yaml"
    data[key] = data[key] + "# " + "x" * (1024 * 1024 - 100) + "\n"
    with pytest.raises(updates.ReleaseDataTooLarge,
                       match=r"images/v2\.9\.4/enterprise-distroless\.yaml: \d+ characters, "
                             r"more than the 64 KiB read from one file"):
        updates.parse_configmap_data(data)


def test_the_policy_key_defaults_to_three_minors_and_moves_no_deadline() -> None:
    from fluxsupport.domain import policy

    plain = policy.load_policy("")
    configured = policy.load_policy("updates: {configMap: flux-releases}\n")
    assert plain.updates is None
    assert configured.updates == policy.Updates(config_map="flux-releases", supported_minors=3)
    assert configured.fingerprint() == plain.fingerprint()
    two = policy.load_policy("updates: {configMap: flux-releases, supportedMinors: 2}\n")
    assert two.updates is not None
    assert two.updates.supported_minors == 2
    with pytest.raises(policy.PolicyError, match=r"updates\.supportedMinors"):
        policy.load_policy("updates: {configMap: flux-releases, supportedMinors: 0}\n")
    with pytest.raises(policy.PolicyError, match=r"updates\.configMap"):
        policy.load_policy("updates: {configMap: Flux_Releases}\n")
    with pytest.raises(policy.PolicyError, match="exactly one of configMap and sourceRef"):
        policy.load_policy("updates: {}\n")
    with pytest.raises(policy.PolicyError, match="exactly one of configMap and sourceRef"):
        policy.load_policy("updates: {configMap: a, sourceRef: {kind: GitRepository, name: b}}")
    source = policy.load_policy("updates: {sourceRef: {kind: OCIRepository, name: releases}}")
    assert source.updates is not None
    assert (source.updates.source_ref, source.updates.path) == (
        policy.SourceRef(kind="OCIRepository", name="releases"), "images")


def test_the_conditions_name_what_is_available() -> None:
    data = release_data()
    latest = updates.check(components(fixtures.flux_deployments()), data)
    assert (updatecheck._up_to_date(latest).status, updatecheck._up_to_date(latest).reason) == (
        "True", "LatestRelease")
    rebuilt = fixtures.flux_deployments()
    container = next(d for d in rebuilt if d["metadata"]["name"] == "source-controller")[
        "spec"]["template"]["spec"]["containers"][0]
    container["image"] = container["image"].split("@")[0] + "@sha256:" + "0" * 64
    newer = updatecheck._up_to_date(updates.check(components(rebuilt), data))
    assert (newer.status, newer.reason) == ("False", "NewerBuildAvailable")
    assert "source-controller" in newer.message
    old = updates.check(components(fixtures.deployments_running(
        fixtures.images(fixtures.PRE_FIX_V275), "v2.7.5")), data, supported_minors=2)
    assert updatecheck._up_to_date(old).reason == "MinorAvailable"
    unsupported = updatecheck._supported(old)
    assert (unsupported.status, unsupported.reason) == ("False", "MinorUnsupported")
    assert "only v2.9, v2.8 receive backports" in unsupported.message


# --- a Flux source artifact ---------------------------------------------------------------

def artifact(prefix: str = "images") -> bytes:
    """A tar.gz as source-controller packs a repository holding the distribution's images/."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(RELEASES / "images", arcname=prefix)
        readme = tarfile.TarInfo("README.md")
        text = b"not release data\n"
        readme.size = len(text)
        archive.addfile(readme, io.BytesIO(text))
    return buffer.getvalue()


def sha256(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


def test_an_artifact_holds_the_same_release_data_and_its_digest_is_checked() -> None:
    content = artifact()
    updates.verify_digest(content, sha256(content))
    assert updates.parse_archive(content) == release_data()
    assert updates.parse_archive(artifact("release/images"), "release/images") == release_data()
    with pytest.raises(updates.ReleaseDataError, match="not the"):
        updates.verify_digest(content + b"x", sha256(content))
    with pytest.raises(updates.ReleaseDataError, match="expected sha256:<hex>"):
        updates.verify_digest(content, "md5:0")
    with pytest.raises(updates.ReleaseDataError, match="has no elsewhere/VERSION"):
        updates.parse_archive(content, "elsewhere")
    with pytest.raises(updates.ReleaseDataError, match=r"not a readable tar\.gz"):
        updates.parse_archive(b"plain text")
