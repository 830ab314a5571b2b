"""Bulletin verdicts on real release data: digests decide, version lines, later rebuilds, VEX."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fluxsupport.domain import bulletin, inventory, vex
from tests import fixtures

CVE = "CVE-2026-47680"
PRE = fixtures.images(fixtures.PRE_FIX_V275)
FIX = fixtures.images(fixtures.FIX_V275)
VEX_27 = vex.parse_document((fixtures.UPSTREAM / "vex" / "v2.7.json").read_text(), "v2.7.json")


def make(body: dict[str, Any]) -> bulletin.Bulletin:
    return bulletin.Bulletin(body["metadata"]["name"],
                             bulletin.BulletinSpec.model_validate(body["spec"]))


FIX_BULLETIN = make(fixtures.bulletin_for("cpsb-47680", CVE, "source-controller",
                                          FIX["source-controller"]))


def running(entries: dict[str, dict[str, str]], component: str = "source-controller",
            version: str = "v2.7.5") -> inventory.RunningComponent:
    components = inventory.build_inventory(fixtures.deployments_running(entries, version))
    return next(c for c in components if c.component == component)


def verdict_of(component: inventory.RunningComponent, later: tuple[bulletin.Bulletin, ...] = (),
               documents: tuple[vex.Document, ...] = ()) -> bulletin.ComponentVerdict:
    result = bulletin.evaluate_component(FIX_BULLETIN, component, later, documents)
    assert result is not None
    return result


def test_pre_fix_digest_of_the_same_tag_is_vulnerable() -> None:
    result = verdict_of(running(PRE))
    assert (result.verdict, result.reason) == ("Vulnerable", "DigestNotListed")
    assert result.remediation is not None
    assert result.remediation.as_kustomize_image() == {
        "name": "ghcr.io/controlplaneio-fluxcd/distroless/source-controller",
        "newTag": "v1.7.4", "digest": FIX["source-controller"]["digest"]}


def test_listed_digest_is_fixed() -> None:
    result = verdict_of(running(FIX))
    assert (result.verdict, result.reason) == ("Fixed", "DigestListed")
    assert result.remediation is None


def test_version_less_vex_fixed_statement_never_masks_a_pre_fix_digest() -> None:
    # v2.7.json says CVE-2026-47680 is `fixed` for pkg:oci/source-controller, any version.
    result = verdict_of(running(PRE), documents=(VEX_27,))
    assert result.verdict == "Vulnerable"


def test_later_rebuild_listed_by_a_later_bulletin_counts_as_fixed() -> None:
    current = fixtures.release_images("v2.7.5", "enterprise-distroless")
    rebuild = make(fixtures.bulletin_for("cpsb-later", "CVE-2026-99999", "source-controller",
                                         current["source-controller"],
                                         published="2026-08-14T00:00:00Z"))
    component = running(current)
    assert verdict_of(component).verdict == "Vulnerable"  # same tag, digest not in this bulletin
    result = verdict_of(component, later=(rebuild,))
    assert (result.verdict, result.reason) == ("Fixed", "RebuiltIn:cpsb-later")


def test_not_affected_vex_statement_suppresses_the_cve() -> None:
    suppressed = make(fixtures.bulletin_for("cpsb-fulcio", "CVE-2025-66506", "source-controller",
                                            FIX["source-controller"]))
    result = bulletin.evaluate_component(suppressed, running(PRE), (), (VEX_27,))
    assert result is not None
    assert result.verdict == "NotAffected"
    assert result.reason == "AllSuppressedByVex"


@pytest.mark.parametrize(("tag", "expected"), [
    ("v1.7.3", ("Vulnerable", "VersionBelowFix")),
    ("v1.7.5", ("Fixed", "NewerPatch")),
    ("v1.8.0", ("Fixed", "NewerLine")),
    ("v1.6.9", ("Vulnerable", "NoFixForLine")),
    ("main", ("Unknown", "UnparseableVersion")),
])
def test_version_lines(tag: str, expected: tuple[str, str]) -> None:
    entries = {"source-controller": {**PRE["source-controller"], "newTag": tag,
                                     "digest": "sha256:" + "f" * 64}}
    result = verdict_of(running(entries))
    assert (result.verdict, result.reason) == expected


def test_no_digest_is_unknown() -> None:
    component = running(PRE)
    component = inventory.RunningComponent(**{**component.__dict__, "digests": ()})
    result = verdict_of(component)
    assert (result.verdict, result.reason) == ("Unknown", "NoDigest")


def test_rollout_with_a_vulnerable_digest_is_vulnerable() -> None:
    component = running(FIX)
    component = inventory.RunningComponent(**{
        **component.__dict__,
        "digests": (FIX["source-controller"]["digest"], PRE["source-controller"]["digest"])})
    assert verdict_of(component).verdict == "Vulnerable"


def test_mirror_keeps_its_registry_and_variant_in_the_remediation() -> None:
    mirror = "mirror.example.com/flux/distroless/source-controller"
    mirrored = {"source-controller": {**PRE["source-controller"], "name": mirror}}
    fips = fixtures.release_images("v2.7.5", "enterprise-distroless-fips")["source-controller"]
    base = fixtures.bulletin_for("multi", CVE, "source-controller", FIX["source-controller"])
    multi = make({"metadata": {"name": "multi"}, "spec": {
        **base["spec"],
        "fixes": [{"component": "source-controller", "version": "v1.7.4", "images": [
            {"repository": fips["name"], "digest": fips["digest"]},
            {"repository": FIX["source-controller"]["name"],
             "digest": FIX["source-controller"]["digest"]}]}]}})
    result = bulletin.evaluate_component(multi, running(mirrored))
    assert result is not None
    assert result.remediation is not None
    assert result.remediation.name == mirror
    assert result.remediation.digest == FIX["source-controller"]["digest"]


def test_components_not_named_by_the_bulletin_are_not_judged() -> None:
    assert bulletin.evaluate_component(FIX_BULLETIN, running(PRE, "helm-controller")) is None


def test_secrets_list_everything_an_embargo_hides() -> None:
    body = fixtures.bulletin_for("x", CVE, "source-controller", FIX["source-controller"],
                                 summary="Path traversal in Bucket")
    assert set(make(body).spec.secrets()) >= {CVE, "Fix CVE-2026-47680 in source-controller",
                                              "Path traversal in Bucket"}


# --- OpenVEX against a bulletin that lists no fix yet, and statements the layer ignores ----

NO_FIX_BULLETIN = make({"metadata": {"name": "cpsb-nofix"}, "spec": {
    **FIX_BULLETIN.spec.model_dump(by_alias=True, mode="json"), "fixes": []}})


def vex_document(*statements: dict[str, Any]) -> vex.Document:
    return vex.parse_document(json.dumps({
        "@context": vex.CONTEXT, "@id": "https://example.com/vex-1", "author": "vendor",
        "timestamp": "2026-06-01T00:00:00Z", "version": 1, "statements": list(statements)}),
        "test")


def vex_statement(status: str, product: str, timestamp: str) -> dict[str, Any]:
    body: dict[str, Any] = {"vulnerability": {"name": CVE}, "status": status,
                            "products": [{"@id": product}], "timestamp": timestamp}
    if status == "affected":
        body["action_statement"] = "No fix yet; restrict access to the source API"
    return body


def digest_purl(entries: dict[str, dict[str, str]]) -> str:
    return f"pkg:oci/source-controller@{entries['source-controller']['digest']}"


@pytest.mark.parametrize("product", [digest_purl(PRE), "pkg:oci/source-controller"],
                         ids=["digest-specific", "version-less"])
def test_affected_statement_without_a_published_fix_is_vulnerable(product: str) -> None:
    """Regression: Unknown/NoFixForComponent although the vendor says affected, no fix."""
    documents = (vex_document(vex_statement("affected", product, "2026-06-02T00:00:00Z")),)
    without_vex = bulletin.evaluate_component(NO_FIX_BULLETIN, running(PRE))
    assert without_vex is not None
    assert (without_vex.verdict, without_vex.reason) == ("Unknown", "NoFixForComponent")
    result = bulletin.evaluate_component(NO_FIX_BULLETIN, running(PRE), (), documents)
    assert result is not None
    assert (result.verdict, result.reason) == ("Vulnerable", "AffectedNoFixYet")
    assert result.remediation is None
    assert "Vulnerable, AffectedNoFixYet" in result.message


def test_version_less_affected_does_not_override_a_listed_fixed_digest() -> None:
    documents = (vex_document(vex_statement("affected", "pkg:oci/source-controller",
                                            "2026-06-02T00:00:00Z")),)
    result = verdict_of(running(FIX), documents=documents)
    assert (result.verdict, result.reason) == ("Fixed", "DigestListed")


def test_a_later_version_less_affected_withdraws_an_earlier_not_affected() -> None:
    """The vendor said not_affected in January and affected, for every version, in June: the
    June statement is the vendor's word, so the bulletin's own verdict stands."""
    product = "pkg:oci/source-controller"
    january = vex_statement("not_affected", product, "2026-01-15T00:00:00Z")
    january["justification"] = "vulnerable_code_not_in_execute_path"
    june = vex_statement("affected", product, "2026-06-15T00:00:00Z")
    without_vex = verdict_of(running(PRE))
    assert (without_vex.verdict, without_vex.reason) == ("Vulnerable", "DigestNotListed")
    for statements in ((january, june), (june, january)):  # document order does not matter
        result = verdict_of(running(PRE), documents=(vex_document(*statements),))
        assert (result.verdict, result.reason) == ("Vulnerable", "DigestNotListed")
        assert result.cves == without_vex.cves
    # Each in its own document, the January one listed last: still June's word.
    result = verdict_of(running(PRE), documents=(vex_document(june), vex_document(january)))
    assert (result.verdict, result.reason) == ("Vulnerable", "DigestNotListed")
    # A digest-specific January not_affected is withdrawn the same way.
    specific = {**january, "products": [{"@id": digest_purl(PRE)}]}
    result = verdict_of(running(PRE), documents=(vex_document(specific, june),))
    assert (result.verdict, result.reason) == ("Vulnerable", "DigestNotListed")
    # Only January: suppressed, as before.
    result = verdict_of(running(PRE), documents=(vex_document(january),))
    assert (result.verdict, result.reason) == ("NotAffected", "AllSuppressedByVex")


def test_a_latest_version_less_affected_never_leaves_a_cve_not_affected() -> None:
    """Version ranges put the running version before every affected range (NotAffected), but
    the vendor's latest word is affected: Vulnerable."""
    body = fixtures.bulletin_for("cpsb-range", CVE, "source-controller", FIX["source-controller"])
    body["spec"]["fixes"] = []
    body["spec"]["affectedVersions"] = [{"component": "source-controller", "ranges": [
        {"introduced": "1.8.0", "fixed": "1.8.2"}]}]
    ranged = make(body)
    documents = (vex_document(vex_statement("affected", "pkg:oci/source-controller",
                                            "2026-06-02T00:00:00Z")),)
    without_vex = bulletin.evaluate_component(ranged, running(PRE))
    assert without_vex is not None
    assert (without_vex.verdict, without_vex.reason) == ("NotAffected", "VersionNotAffected")
    result = bulletin.evaluate_component(ranged, running(PRE), (), documents)
    assert result is not None
    assert (result.verdict, result.reason) == ("Vulnerable", "VexAffected")


def test_a_later_version_less_fixed_supersedes_an_earlier_affected_but_proves_nothing() -> None:
    """The latest statement wins even when the verdict layer then ignores it: a version-less
    `fixed` after a digest-specific `affected` leaves the bulletin's own verdict, which for a
    pre-fix digest is Vulnerable and for a listed digest Fixed."""
    for entries, expected in ((PRE, ("Vulnerable", "DigestNotListed")),
                              (FIX, ("Fixed", "DigestListed"))):
        documents = (vex_document(
            vex_statement("affected", digest_purl(entries), "2026-06-02T00:00:00Z"),
            vex_statement("fixed", "pkg:oci/source-controller", "2026-06-03T00:00:00Z")),)
        result = verdict_of(running(entries), documents=documents)
        assert (result.verdict, result.reason) == expected
    # The digest-specific `affected` alone, or latest, makes a listed digest Vulnerable.
    alone = (vex_document(vex_statement("affected", digest_purl(FIX), "2026-06-02T00:00:00Z")),)
    assert (verdict_of(running(FIX), documents=alone).reason) == "VexAffected"
    # A later digest-specific `fixed` supersedes it too.
    superseded = (vex_document(
        vex_statement("affected", digest_purl(FIX), "2026-06-02T00:00:00Z"),
        vex_statement("fixed", digest_purl(FIX), "2026-06-03T00:00:00Z")),)
    assert verdict_of(running(FIX), documents=superseded).verdict == "Fixed"
