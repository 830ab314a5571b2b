"""Public OSV advisories (the GitHub Advisory Database) as bulletins: the vendored schema, the
module table, version ranges compared as semver, and their place among digests and OpenVEX."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
import yaml

from fluxsupport import resources
from fluxsupport.domain import advisory, bulletin, inventory, vex
from tests import fixtures, realsize

ADVISORIES = fixtures.UPSTREAM / "advisories"
SCHEMA_README = pathlib.Path(resources.__file__).parent / "schemas" / "README.md"
PRE = fixtures.images(fixtures.PRE_FIX_V275)
FIX = fixtures.images(fixtures.FIX_V275)


def osv(advisory_id: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ADVISORIES / f"{advisory_id}.json").read_text())
    return document


def imported(advisory_id: str) -> bulletin.Bulletin:
    converted = advisory.to_bulletin(osv(advisory_id))
    assert converted.spec is not None
    return bulletin.Bulletin(converted.name, bulletin.BulletinSpec.model_validate(converted.spec))


def running(component: str, repository: str, tag: str,
            digest: str = "sha256:" + "e" * 64) -> inventory.RunningComponent:
    entries = {component: {"name": repository, "newTag": tag, "digest": digest}}
    found = inventory.build_inventory(fixtures.deployments_running(entries, "v2.9.4"))
    return next(c for c in found if c.component == component)


def verdict(b: bulletin.Bulletin, component: inventory.RunningComponent,
            documents: tuple[vex.Document, ...] = ()) -> tuple[str, str]:
    result = bulletin.evaluate_component(b, component, (), documents)
    assert result is not None
    return result.verdict, result.reason


def test_vendored_osv_schema_is_the_one_its_provenance_names() -> None:
    recorded = re.search(r"`([0-9a-f]{64})`", SCHEMA_README.read_text())
    assert recorded is not None
    schema_file = SCHEMA_README.parent / "osv-schema.json"
    assert hashlib.sha256(schema_file.read_bytes()).hexdigest() == recorded[1]
    assert resources.osv_schema()["title"] == "Open Source Vulnerability"


@pytest.mark.parametrize("path", sorted(ADVISORIES.glob("*.json")), ids=lambda p: p.stem)
def test_every_real_advisory_is_valid_osv_and_converts(path: pathlib.Path) -> None:
    document = json.loads(path.read_text())
    jsonschema.Draft202012Validator(resources.osv_schema()).validate(document)
    converted = advisory.to_bulletin(document)
    assert converted.name == document["id"].lower()
    if converted.spec is None:  # only the flux2 CLI, which never runs in a cluster
        assert converted.skipped_packages == ("Go:github.com/fluxcd/flux2",)
        return
    spec = bulletin.BulletinSpec.model_validate(converted.spec)
    assert [v.id for v in spec.vulnerabilities] == [
        a for a in document["aliases"] if a.startswith("CVE-")]
    assert spec.advisory is not None
    assert spec.advisory.id == document["id"]


def test_modules_map_to_components_through_the_table_and_versions_to_tags() -> None:
    spec = advisory.to_bulletin(osv("GHSA-vvmq-fwmg-2gjc")).spec
    assert spec is not None
    # flux2 (the CLI) is left out; the two controllers keep their own ranges, as image tags.
    assert spec["affectedVersions"] == [
        {"component": "helm-controller", "package": "github.com/fluxcd/helm-controller",
         "ranges": [{"introduced": "v0.2.0", "fixed": "v0.19.0"}]},
        {"component": "kustomize-controller", "package": "github.com/fluxcd/kustomize-controller",
         "ranges": [{"introduced": "v0.1.0", "fixed": "v0.23.0"}]}]
    assert spec["severity"] == "Critical"
    assert spec["vulnerabilities"][0]["components"] == ["helm-controller",
                                                        "kustomize-controller"]
    # introduced "0" means from the first version: no lower bound.
    v554 = advisory.to_bulletin(osv("GHSA-v554-xwgw-hc3w")).spec
    assert v554 is not None
    assert v554["affectedVersions"][0]["ranges"] == [{"fixed": "v1.2.5"}]
    assert v554["severity"] == "Medium"  # GitHub's MODERATE
    operator = advisory.to_bulletin(osv("GHSA-4xh5-jcj2-ch8q")).spec
    assert operator is not None
    assert operator["affectedVersions"][0]["component"] == "flux-operator"
    assert advisory.MODULE_COMPONENTS["github.com/fluxcd/source-controller"] == \
        "source-controller"
    assert "github.com/fluxcd/source-controller/api" not in advisory.MODULE_COMPONENTS


def test_events_are_evaluated_in_version_order_and_limits_are_not_ranges() -> None:
    events = [{"fixed": "1.3.2"}, {"introduced": "1.3.0"}, {"introduced": "0"},
              {"fixed": "1.2.5"}, {"introduced": "1.4.0"}]
    document = {**osv("GHSA-v554-xwgw-hc3w")}
    document["affected"] = [{**document["affected"][0],
                             "ranges": [{"type": "ECOSYSTEM", "events": events}]}]
    spec = advisory.to_bulletin(document).spec
    assert spec is not None
    assert spec["affectedVersions"][0]["ranges"] == [
        {"fixed": "v1.2.5"}, {"introduced": "v1.3.0", "fixed": "v1.3.2"},
        {"introduced": "v1.4.0"}]
    with pytest.raises(advisory.AdvisoryError, match="not a semantic version"):
        advisory.image_tag("1.2")


@pytest.mark.parametrize(("tag", "expected"), [
    ("v1.2.4", ("Vulnerable", "VersionInAffectedRange")),
    ("v0.1.0", ("Vulnerable", "VersionInAffectedRange")),
    # A pre-release comes before its release (semver, not packaging.version's rules).
    ("v1.2.5-rc.1", ("Vulnerable", "VersionInAffectedRange")),
    ("v1.2.5", ("Fixed", "VersionFixed")),
    ("v1.10.0", ("Fixed", "VersionFixed")),
    ("main", ("Unknown", "UnparseableVersion")),
])
def test_range_verdicts_on_an_upstream_image(tag: str, expected: tuple[str, str]) -> None:
    b = imported("GHSA-v554-xwgw-hc3w")
    assert verdict(b, running("source-controller", "ghcr.io/fluxcd/source-controller",
                              tag)) == expected


def test_before_introduced_is_not_affected_and_no_digest_is_needed() -> None:
    b = imported("GHSA-7pwf-jg34-hxwp")  # kustomize-controller from 0.16.0 to 0.24.0
    older = running("kustomize-controller", "ghcr.io/fluxcd/kustomize-controller", "v0.15.1")
    assert verdict(b, older) == ("NotAffected", "VersionNotAffected")
    inside = running("kustomize-controller", "ghcr.io/fluxcd/kustomize-controller", "v0.22.3")
    inside = inventory.RunningComponent(**{**inside.__dict__, "digests": ()})
    result = bulletin.evaluate_component(b, inside)
    assert result is not None
    assert (result.verdict, result.reason) == ("Vulnerable", "VersionInAffectedRange")
    assert result.message.endswith("upgrade to v0.24.0 or later")


def _enterprise_bulletin() -> bulletin.Bulletin:
    """CVE-2026-47680 as both sources describe it: the public range (source-controller fixed in
    1.8.5) and the distribution's backport rebuild of v1.7.4 (a digest list)."""
    body = fixtures.bulletin_for("cpsb-47680", "CVE-2026-47680", "source-controller",
                                 FIX["source-controller"])
    body["spec"]["affectedVersions"] = [{"component": "source-controller",
                                         "ranges": [{"fixed": "v1.8.5"}]}]
    return bulletin.Bulletin("cpsb-47680", bulletin.BulletinSpec.model_validate(body["spec"]))


def test_digest_lists_take_precedence_for_enterprise_builds() -> None:
    b = _enterprise_bulletin()
    fixed = FIX["source-controller"]
    pre = PRE["source-controller"]
    # The backported rebuild of v1.7.4 is Fixed although v1.7.4 lies in the range.
    assert verdict(b, running("source-controller", fixed["name"], fixed["newTag"],
                              fixed["digest"])) == ("Fixed", "DigestListed")
    # The enterprise build from before the backport: the digest logic says why.
    assert verdict(b, running("source-controller", pre["name"], pre["newTag"],
                              pre["digest"])) == ("Vulnerable", "DigestNotListed")
    # Upstream's v1.7.4 has no backport: the range decides.
    upstream = fixtures.release_images("v2.7.5", "upstream-alpine")["source-controller"]
    assert verdict(b, running("source-controller", upstream["name"], upstream["newTag"],
                              upstream["digest"])) == ("Vulnerable", "VersionInAffectedRange")
    newest = fixtures.release_images("v2.9.4", "upstream-alpine")["source-controller"]
    assert verdict(b, running("source-controller", newest["name"], newest["newTag"],
                              newest["digest"])) == ("Fixed", "VersionFixed")


def test_openvex_still_applies_to_range_verdicts() -> None:
    b = imported("GHSA-v554-xwgw-hc3w")
    document = vex.parse_document(json.dumps({
        "@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://example.com/vex/1",
        "author": "ControlPlane", "timestamp": "2026-06-01T00:00:00Z", "version": 1,
        "statements": [{"vulnerability": {"name": "CVE-2024-31216"},
                        "products": [{"@id": "pkg:oci/source-controller"}],
                        "status": "not_affected",
                        "justification": "vulnerable_code_not_in_execute_path"}]}), "vex.json")
    component = running("source-controller", "ghcr.io/fluxcd/source-controller", "v1.2.4")
    assert verdict(b, component, (document,)) == ("NotAffected", "AllSuppressedByVex")
    result = bulletin.evaluate_component(b, component, (), (document,))
    assert result is not None
    assert result.cves[0].reason == "VexNotAffected:vulnerable_code_not_in_execute_path"
    # A version-less `fixed` statement never hides a version in the range.
    fixed = vex.parse_document(json.dumps({
        "@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://example.com/vex/2",
        "author": "ControlPlane", "timestamp": "2026-06-01T00:00:00Z", "version": 1,
        "statements": [{"vulnerability": {"name": "CVE-2024-31216"},
                        "products": [{"@id": "pkg:oci/source-controller"}],
                        "status": "fixed"}]}), "vex.json")
    assert verdict(b, component, (fixed,)) == ("Vulnerable", "VersionInAffectedRange")


def test_a_spec_with_a_version_that_is_not_semver_is_refused() -> None:
    body = fixtures.bulletin_for("x", "CVE-2024-31216", "source-controller",
                                 FIX["source-controller"])["spec"]
    body["affectedVersions"] = [{"component": "source-controller", "ranges": [{"fixed": "1.2"}]}]
    with pytest.raises(ValueError, match=r"1\.2 is not valid"):
        bulletin.BulletinSpec.model_validate(body)


def fluxsupport(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fluxsupport", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_import_from_osv_prints_one_bulletin_per_advisory() -> None:
    result = fluxsupport("bulletin", "import", "--from", "osv", str(ADVISORIES))
    assert result.returncode == 0, result.stderr
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(result.stdout)]
    assert names == ["ghsa-35rf-v2jv-gfg7", "ghsa-4xh5-jcj2-ch8q", "ghsa-7pwf-jg34-hxwp",
                     "ghsa-j77r-2fxf-5jrw", "ghsa-v554-xwgw-hc3w", "ghsa-vvmq-fwmg-2gjc"]
    assert "skipped GHSA-xwf3-6rgv-939r: no Flux component" in result.stderr


def test_import_to_a_directory_is_idempotent_and_follows_modified_advisories(
        tmp_path: pathlib.Path) -> None:
    feed, out = tmp_path / "feed", tmp_path / "bulletins"
    feed.mkdir()
    source = osv("GHSA-v554-xwgw-hc3w")
    (feed / "a.json").write_text(json.dumps(source))
    first = fluxsupport("bulletin", "import", "--from", "osv", str(feed), "-o", str(out))
    assert first.returncode == 0, first.stderr
    target = out / "ghsa-v554-xwgw-hc3w.yaml"
    assert f"created {target}" in first.stderr
    written = target.read_text()
    again = fluxsupport("bulletin", "import", "--from", "osv", str(feed), "-o", str(out))
    assert f"unchanged {target}" in again.stderr
    assert target.read_text() == written
    # The advisory is modified upstream: a second copy in the feed, newer; the newer wins.
    modified = json.loads(json.dumps(source))
    modified["modified"] = "2026-12-01T00:00:00Z"
    modified["affected"][0]["ranges"][0]["events"] = [{"introduced": "0"}, {"fixed": "1.2.6"}]
    (feed / "z-old.json").write_text(json.dumps(source))
    (feed / "b.json").write_text(json.dumps(modified))
    updated = fluxsupport("bulletin", "import", "--from", "osv", str(feed), "-o", str(out))
    assert f"updated {target}" in updated.stderr, updated.stderr
    spec = yaml.safe_load(target.read_text())["spec"]
    assert spec["affectedVersions"][0]["ranges"] == [{"fixed": "v1.2.6"}]
    assert spec["advisory"]["modified"] == "2026-12-01T00:00:00Z"
    assert sorted(p.name for p in out.iterdir()) == ["ghsa-v554-xwgw-hc3w.yaml"]


@pytest.mark.parametrize("advisory_id", [
    "GHSA-x/../../clusters/prod/kustomization", "GHSA-v554/xwgw", "RHSA-2024:1234",
    "x_flux-1", "GHSA-v554-xwgw-hc3w.", "GHSA-v554 xwgw", "GHSA-v554-xwgw-hc3w\n",
    "GHSA-\u212a554-xwgw-hc3w", "GHSA-" + "a" * 250])
def test_an_advisory_id_that_is_no_object_name_is_refused(advisory_id: str) -> None:
    document = {**osv("GHSA-v554-xwgw-hc3w"), "id": advisory_id}
    with pytest.raises(advisory.AdvisoryError, match="cannot name a bulletin: in lower case it "
                       "must be a Kubernetes object name"):
        advisory.to_bulletin(document)


def test_names_are_the_ids_in_lower_case_and_one_name_is_one_bulletin() -> None:
    assert advisory.bulletin_name("GHSA-v554-xwgw-hc3w") == "ghsa-v554-xwgw-hc3w"
    assert advisory.bulletin_name("GO-2024.2611") == "go-2024.2611"
    upper = {**osv("GHSA-v554-xwgw-hc3w"), "id": "GHSA-V554-XWGW-HC3W"}
    feed = advisory.read_feed([("a.json", json.dumps(osv("GHSA-v554-xwgw-hc3w")).encode()),
                               ("b.json", json.dumps(upper).encode())],
                              jsonschema.Draft202012Validator(resources.osv_schema()))
    # The first in id order keeps the name, whatever the order of the files.
    assert [a.advisory_id for a in feed.bulletins] == ["GHSA-V554-XWGW-HC3W"]
    assert feed.invalid == (advisory.Invalid(
        "a.json", "the bulletin would be invalid: metadata.name: ghsa-v554-xwgw-hc3w is "
                  "already the name of the bulletin of advisory GHSA-V554-XWGW-HC3W"),)


def test_import_writes_nothing_outside_the_output_directory(tmp_path: pathlib.Path) -> None:
    """An advisory id with a path in it, and a link in the directory, write nothing."""
    repository = tmp_path / "repository"
    kustomization = repository / "clusters" / "prod" / "kustomization.yaml"
    kustomization.parent.mkdir(parents=True)
    kustomization.write_text("kind: Kustomization\n")
    out = repository / "bulletins"
    feed = tmp_path / "feed"
    feed.mkdir()
    hostile = {**osv("GHSA-v554-xwgw-hc3w"), "id": "GHSA-x/../../clusters/prod/kustomization"}
    (feed / "a.json").write_text(json.dumps(osv("GHSA-4xh5-jcj2-ch8q")))
    (feed / "b.json").write_text(json.dumps(hostile))
    result = fluxsupport("bulletin", "import", "--from", "osv", str(feed), "-o", str(out))
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {feed / 'b.json'}: advisory id 'GHSA-x/../../clusters/prod/kustomization' "
        "cannot name a bulletin: in lower case it must be a Kubernetes object name (ASCII "
        "letters, digits, '-' and '.', starting and ending with a letter or digit, at most "
        "253 characters)\n")
    assert kustomization.read_text() == "kind: Kustomization\n"
    assert not out.exists(), "a refused import writes nothing"
    # A link in the directory to a file outside it: refused before anything is written.
    (feed / "b.json").unlink()
    out.mkdir()
    (out / "ghsa-4xh5-jcj2-ch8q.yaml").symlink_to(kustomization)
    result = fluxsupport("bulletin", "import", "--from", "osv", str(feed), "-o", str(out))
    assert result.returncode == 2
    assert f"{out.resolve() / 'ghsa-4xh5-jcj2-ch8q.yaml'}: not written: it resolves to " \
           f"{kustomization.resolve()}, outside {out.resolve()}" in result.stderr
    assert kustomization.read_text() == "kind: Kustomization\n"
    (out / "ghsa-4xh5-jcj2-ch8q.yaml").unlink()
    result = fluxsupport("bulletin", "import", "--from", "osv", str(feed), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ghsa-4xh5-jcj2-ch8q.yaml"]
    assert (out / "ghsa-4xh5-jcj2-ch8q.yaml").stat().st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_import_of_a_thousand_advisories_writes_one_file_per_bulletin(
        tmp_path: pathlib.Path) -> None:
    generated = realsize.osv_feed(1200)
    realsize.write_files(tmp_path, generated.files)
    out = tmp_path / "bulletins"
    result = fluxsupport("bulletin", "import", "--from", "osv", str(tmp_path / "advisories"),
                         "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.stem for p in out.iterdir()) == sorted(generated.bulletins)
    assert result.stderr.count("\ncreated ") + result.stderr.startswith("created ") == \
        len(generated.bulletins)
    assert result.stderr.count("skipped GHSA-") == len(generated.skipped)
    for name, (component, first) in generated.first_range.items():
        spec = yaml.safe_load((out / f"{name}.yaml").read_text())["spec"]
        ranges = next(a["ranges"] for a in spec["affectedVersions"]
                      if a["component"] == component)
        assert ranges[0] == first, name
    again = fluxsupport("bulletin", "import", "--from", "osv", str(tmp_path / "advisories"),
                        "-o", str(out))
    assert again.stderr.count("unchanged ") == len(generated.bulletins)


def test_import_refuses_what_is_not_osv(tmp_path: pathlib.Path) -> None:
    broken = osv("GHSA-v554-xwgw-hc3w")
    del broken["id"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    result = fluxsupport("bulletin", "import", "--from", "osv", str(path))
    assert result.returncode == 2
    assert f"{path}: not an OSV advisory: (root): 'id' is a required property" in result.stderr
    result = fluxsupport("bulletin", "import", "--from", "osv", str(path), "--name", "x")
    assert result.returncode == 2
    assert "--name does not go with --from osv" in result.stderr
    result = fluxsupport("bulletin", "import", "--from", "nvd", str(path))
    assert result.returncode == 2
    assert "the only format is osv" in result.stderr


def test_check_handles_imported_bulletins_offline(tmp_path: pathlib.Path) -> None:
    imported_text = fluxsupport("bulletin", "import", "--from", "osv",
                                str(ADVISORIES / "GHSA-v554-xwgw-hc3w.json")).stdout
    path = tmp_path / "b.yaml"
    path.write_text(imported_text)
    old = {"source-controller": {"name": "ghcr.io/fluxcd/source-controller",
                                 "newTag": "v1.2.4", "digest": "sha256:" + "a" * 64}}
    inventory_file = tmp_path / "inventory.yaml"
    inventory_file.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List",
                                              "items": fixtures.deployments_running(
                                                  old, "v2.2.3")}))
    result = fluxsupport("bulletin", "check", str(path), "--inventory", str(inventory_file),
                         "-o", "json")
    assert result.returncode == 1, result.stderr
    component = json.loads(result.stdout)["bulletins"][0]["components"][0]
    assert (component["component"], component["verdict"], component["reason"]) == (
        "source-controller", "Vulnerable", "VersionInAffectedRange")
    current = fixtures.release_images("v2.9.4", "upstream-alpine")
    inventory_file.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List",
                                              "items": fixtures.deployments_running(
                                                  current, "v2.9.4")}))
    result = fluxsupport("bulletin", "check", str(path), "--inventory", str(inventory_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VersionFixed" in result.stdout
