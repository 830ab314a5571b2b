"""Bulletins imported from public OSV advisories, on the real API server: the CRD's validation
of version ranges, the operator's verdicts by range, and a modified advisory updating its
bulletin through `kubectl apply`."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import kubernetes
import pytest

from tests import fixtures, harness

ADVISORIES = fixtures.UPSTREAM / "advisories"
UPSTREAM_275 = fixtures.release_images("v2.7.5", "upstream-alpine")
ADVISORY = "GHSA-v554-xwgw-hc3w"  # source-controller, fixed in 1.2.5
NAME = ADVISORY.lower()


def import_osv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fluxsupport", "bulletin", "import",
                           "--from", "osv", *args], capture_output=True, text=True,
                          timeout=120, check=True)


def source_controller(api: harness.Api, bulletin: str) -> dict[str, Any] | None:
    status = api.get_bulletin(bulletin).get("status") or {}
    return next((c for c in status.get("components") or []
                 if c["component"] == "source-controller"), None)


def wait_reason(api: harness.Api, bulletin: str, verdict: str, reason: str,
                timeout: float = 30) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = source_controller(api, bulletin)
        return found if found and (found["verdict"], found["reason"]) == (verdict, reason) \
            else None
    return harness.wait_for(probe, timeout=timeout, what=f"{bulletin} {verdict} {reason}")


def set_source_controller(api: harness.Api, tag: str, digest: str) -> None:
    image = f"ghcr.io/fluxcd/source-controller:{tag}@{digest}"
    api.apps.patch_namespaced_deployment("source-controller", "flux-system", {"spec": {
        "template": {"spec": {"containers": [{"name": "manager", "image": image}]}}}})


def test_imported_advisory_verdicts_follow_the_running_version(
        api: harness.Api, operator: harness.OperatorProcess, tmp_path: pathlib.Path) -> None:
    feed, out = tmp_path / "feed", tmp_path / "bulletins"
    feed.mkdir()
    source = json.loads((ADVISORIES / f"{ADVISORY}.json").read_text())
    (feed / f"{ADVISORY}.json").write_text(json.dumps(source))
    import_osv(str(feed), "-o", str(out))
    with harness.flux_inventory(api, UPSTREAM_275):
        try:
            applied = harness.kubectl(api.kubeconfig, "apply", "-f", str(out)).stdout
            assert f"securitybulletin.support.fluxcd.controlplane.io/{NAME} created" in applied
            # Flux v2.7.5 runs source-controller v1.7.4: past the fix, no digest list needed.
            fixed = wait_reason(api, NAME, "Fixed", "VersionFixed")
            assert fixed["version"] == "v1.7.4"
            obj = api.get_bulletin(NAME)
            assert obj["spec"]["advisory"]["id"] == ADVISORY
            assert harness.condition(obj, "Compliant")["status"] == "True"

            # A cluster still on Flux v2.2.3 (source-controller v1.2.4, a real digest of it
            # is not needed: the range decides).
            set_source_controller(api, "v1.2.4", "sha256:" + "4" * 64)
            vulnerable = wait_reason(api, NAME, "Vulnerable", "VersionInAffectedRange")
            assert "upgrade to v1.2.5 or later" in vulnerable["message"]
            assert vulnerable["cves"] == [{"id": "CVE-2024-31216", "verdict": "Vulnerable",
                                           "reason": "VersionInAffectedRange"}]
            harness.wait_for(lambda: harness.condition(
                api.get_bulletin(NAME), "Compliant")["status"] == "False", what="Compliant")
            metrics = operator.metrics()
            assert (f'fluxsupport_component_vulnerable{{bulletin="{NAME}",'
                    'component="source-controller",namespace="flux-system"} 1.0') in metrics

            # The advisory is modified upstream (say, the range turns out to be wider): the
            # feed imported again and applied again updates the same bulletin, nothing else.
            again = import_osv(str(feed), "-o", str(out))
            assert "unchanged" in again.stderr
            source["modified"] = "2026-12-01T00:00:00Z"
            source["affected"][0]["ranges"][0]["events"] = [{"introduced": "0"},
                                                            {"fixed": "1.2.3"}]
            (feed / f"{ADVISORY}.json").write_text(json.dumps(source))
            assert "updated" in import_osv(str(feed), "-o", str(out)).stderr
            reapplied = harness.kubectl(api.kubeconfig, "apply", "-f", str(out)).stdout
            assert f"{NAME} configured" in reapplied
            wait_reason(api, NAME, "Fixed", "VersionFixed")
            assert api.get_bulletin(NAME)["spec"]["advisory"]["modified"] == \
                "2026-12-01T00:00:00Z"
        finally:
            api.delete_bulletin(NAME)


def _refusal(api: harness.Api, spec_change: dict[str, Any]) -> str:
    body = fixtures.bulletin_for("range-refused", "CVE-2024-31216", "source-controller",
                                 UPSTREAM_275["source-controller"])
    body["spec"].pop("fixes")
    body["spec"].update(spec_change)
    with pytest.raises(kubernetes.client.ApiException) as refused:
        api.create_bulletin(body)
    api.delete_bulletin("range-refused")
    assert refused.value.status == 422
    return str(refused.value.body)


def test_the_api_server_validates_version_ranges(api: harness.Api) -> None:
    assert "a bulletin needs fixes, affectedVersions or both" in _refusal(api, {})
    assert "introduced must be lower than fixed" in _refusal(api, {"affectedVersions": [{
        "component": "source-controller",
        "ranges": [{"introduced": "v1.3.0", "fixed": "v1.2.5"}]}]})
    assert "a range has fixed or lastAffected, not both" in _refusal(api, {"affectedVersions": [{
        "component": "source-controller",
        "ranges": [{"fixed": "v1.2.5", "lastAffected": "v1.2.4"}]}]})
    assert "must name a component that one of the vulnerabilities lists" in _refusal(
        api, {"affectedVersions": [{"component": "helm-controller",
                                    "ranges": [{"fixed": "v1.0.0"}]}]})
    assert "spec.affectedVersions[0].ranges[0].fixed" in _refusal(api, {"affectedVersions": [{
        "component": "source-controller", "ranges": [{"fixed": "1.2"}]}]})
    # A valid range with a pre-release bound is accepted, v prefix or not.
    body = fixtures.bulletin_for("range-accepted", "CVE-2024-31216", "source-controller",
                                 UPSTREAM_275["source-controller"])
    body["spec"].pop("fixes")
    body["spec"]["affectedVersions"] = [{"component": "source-controller", "ranges": [
        {"introduced": "1.2.0-rc.1", "fixed": "v1.2.5"}]}]
    try:
        created = api.create_bulletin(body)
        assert created["spec"]["affectedVersions"][0]["ranges"][0]["fixed"] == "v1.2.5"
    finally:
        api.delete_bulletin("range-accepted")


def test_the_api_server_keeps_the_remediation_fields_and_validates_them(
        api: harness.Api, tmp_path: pathlib.Path) -> None:
    """`bulletin import --from osv --policy` output, with a withdrawn advisory, is stored as
    written (no field pruned), and the CRD refuses what it must."""
    feed, out = tmp_path / "feed", tmp_path / "bulletins"
    feed.mkdir()
    source = json.loads((ADVISORIES / f"{ADVISORY}.json").read_text())
    source["withdrawn"] = "2024-06-01T10:00:00Z"
    (feed / f"{ADVISORY}.json").write_text(json.dumps(source))
    policy = tmp_path / "policy.yaml"
    policy.write_text("preset: support-policy-2026\nregion: EMEA\n")
    import_osv(str(feed), "-o", str(out), "--policy", str(policy))
    try:
        harness.kubectl(api.kubeconfig, "apply", "-f", str(out))
        spec = api.get_bulletin(NAME)["spec"]
        assert spec["withdrawnAt"] == "2024-06-01T10:00:00Z"
        [vulnerability] = spec["vulnerabilities"]
        assert vulnerability["cvssScore"] == 5.1
        assert vulnerability["cvssVector"].startswith("CVSS:3.1/")
        assert vulnerability["identifiedAt"] == vulnerability["patchAvailableAt"] == \
            source["published"]
        # A withdrawn advisory is owed no fix.
        assert "remediationDueAt" not in vulnerability
        # The same advisory standing: published on Wednesday 2024-05-15 18:09 BST, after
        # Support Hours, it is due 5 Support Days from Thursday 09:00 BST.
        del source["withdrawn"]
        (feed / f"{ADVISORY}.json").write_text(json.dumps(source))
        import_osv(str(feed), "-o", str(out), "--policy", str(policy))
        harness.kubectl(api.kubeconfig, "apply", "-f", str(out))
        spec = api.get_bulletin(NAME)["spec"]
        assert "withdrawnAt" not in spec
        [vulnerability] = spec["vulnerabilities"]
        assert vulnerability["remediationFramework"] == "standard"
        assert vulnerability["remediationDueAt"] == "2024-05-22T16:00:00Z"
    finally:
        api.delete_bulletin(NAME)
    vulnerable = {"id": "CVE-2024-31216", "severity": "High", "components": ["source-controller"]}
    ranges = {"affectedVersions": [{"component": "source-controller",
                                    "ranges": [{"fixed": "v1.2.5"}]}]}
    assert "remediationDueAt and remediationFramework go together" in _refusal(api, {
        **ranges, "vulnerabilities": [{**vulnerable, "remediationDueAt": "2024-05-22T16:00:00Z"}]})
    assert "spec.vulnerabilities[0].cvssScore" in _refusal(api, {
        **ranges, "vulnerabilities": [{**vulnerable, "cvssScore": 10.5}]})
    assert "spec.vulnerabilities[0].cvssVector" in _refusal(api, {
        **ranges, "vulnerabilities": [{**vulnerable, "cvssVector": "AV:N/AC:L"}]})
    assert "spec.withdrawnAt" in _refusal(api, {**ranges, "withdrawnAt": "yesterday"})
