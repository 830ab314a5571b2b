"""SecurityBulletin on the real API server: inventory from real Deployments and Pods, verdicts,
remediation, Events, embargo (no leak, lifted on time), malformed VEX."""

from __future__ import annotations

import copy
import datetime
import json
import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from fluxsupport.sources.inventory import Inventory  # noqa: F401 - documents what is exercised
from tests import fixtures, harness

CVE = "CVE-2026-47680"
PRE = fixtures.images(fixtures.PRE_FIX_V275)
FIX = fixtures.images(fixtures.FIX_V275)
OPERATOR_NAMESPACE = "fluxsupport-system"


def ensure_namespace(api: harness.Api, name: str) -> None:
    try:
        api.create_namespace(name)
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise


@pytest.fixture(scope="module")
def flux_system(api: harness.Api) -> Iterator[list[dict[str, Any]]]:
    """Flux v2.7.5 enterprise-distroless, with source-controller from before the fix."""
    ensure_namespace(api, "flux-system")
    ensure_namespace(api, OPERATOR_NAMESPACE)
    deployments = fixtures.deployments_running(PRE, "v2.7.5")
    for deployment in deployments:
        body = copy.deepcopy(deployment)
        body.pop("status", None)
        api.apps.create_namespaced_deployment("flux-system", body)
    yield deployments
    for deployment in deployments:
        api.apps.delete_namespaced_deployment(deployment["metadata"]["name"], "flux-system")


def set_image(api: harness.Api, name: str, image: str) -> None:
    api.apps.patch_namespaced_deployment(name, "flux-system", {"spec": {"template": {"spec": {
        "containers": [{"name": "manager", "image": image}]}}}})


def pinned(entry: dict[str, str]) -> str:
    return f"{entry['name']}:{entry['newTag']}@{entry['digest']}"


def component_status(api: harness.Api, bulletin: str, component: str) -> dict[str, Any] | None:
    status = api.get_bulletin(bulletin).get("status") or {}
    return next((c for c in status.get("components") or [] if c["component"] == component), None)


def wait_verdict(api: harness.Api, bulletin: str, component: str, verdict: str,
                 timeout: float = 20) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = component_status(api, bulletin, component)
        return found if found and found["verdict"] == verdict else None
    return harness.wait_for(probe, timeout=timeout, what=f"{bulletin} {component} {verdict}")


def test_verdicts_remediation_and_events(api: harness.Api, operator: harness.OperatorProcess,
                                         flux_system: list[dict[str, Any]]) -> None:
    api.create_bulletin(fixtures.bulletin_for("cpsb-47680", CVE, "source-controller",
                                              FIX["source-controller"],
                                              patchBy="2026-06-05T12:00:00Z"))
    try:
        found = wait_verdict(api, "cpsb-47680", "source-controller", "Vulnerable")
        assert found["reason"] == "DigestNotListed"
        assert found["digests"] == [PRE["source-controller"]["digest"]]
        assert found["remediation"] == {"name": FIX["source-controller"]["name"],
                                        "newTag": "v1.7.4",
                                        "digest": FIX["source-controller"]["digest"]}
        obj = api.get_bulletin("cpsb-47680")
        assert obj["status"]["counts"]["vulnerable"] == 1
        assert harness.condition(obj, "Compliant")["status"] == "False"
        assert harness.condition(obj, "PatchOverdue")["status"] == "True"
        assert harness.condition(obj, "Ready")["status"] == "True"
        printed = harness.kubectl(api.kubeconfig, "get", "securitybulletins").stdout
        assert "VULNERABLE" in printed
        harness.wait_for(lambda: "VerdictVulnerable" in [
            e.reason for e in api.events_for("default", "cpsb-47680")], what="Event")
        metrics = operator.metrics()
        assert ('fluxsupport_component_vulnerable{bulletin="cpsb-47680",'
                'component="source-controller",namespace="flux-system"} 1.0') in metrics
        assert 'fluxsupport_bulletin_patch_overdue{bulletin="cpsb-47680"} 1.0' in metrics

        # The verdict follows a change of the running image.
        set_image(api, "source-controller", pinned(FIX["source-controller"]))
        fixed = wait_verdict(api, "cpsb-47680", "source-controller", "Fixed", timeout=5)
        assert fixed["reason"] == "DigestListed"
        obj = api.get_bulletin("cpsb-47680")
        assert harness.condition(obj, "Compliant")["status"] == "True"
        assert harness.condition(obj, "PatchOverdue")["status"] == "False"
        harness.wait_for(lambda: "VerdictFixed" in [
            e.reason for e in api.events_for("default", "cpsb-47680")], what="Fixed Event")
    finally:
        set_image(api, "source-controller", pinned(PRE["source-controller"]))
        api.delete_bulletin("cpsb-47680")


def test_digest_comes_from_pods_when_the_image_is_not_pinned(
        api: harness.Api, operator: harness.OperatorProcess,
        flux_system: list[dict[str, Any]]) -> None:
    entry = PRE["notification-controller"]
    set_image(api, "notification-controller", f"{entry['name']}:{entry['newTag']}")
    pod = {"metadata": {"name": "notification-controller-7d9f", "namespace": "flux-system",
                        "labels": {"app": "notification-controller"}},
           "spec": {"containers": [{"name": "manager",
                                    "image": f"{entry['name']}:{entry['newTag']}"}]}}
    api.core.create_namespaced_pod("flux-system", pod)
    fixed_entry = FIX["notification-controller"]
    api.create_bulletin(fixtures.bulletin_for("cpsb-pods", "CVE-2026-40109",
                                              "notification-controller", fixed_entry))
    try:
        unknown = wait_verdict(api, "cpsb-pods", "notification-controller", "Unknown")
        assert unknown["reason"] == "NoDigest"
        # No kubelet here: write the status a kubelet would, through the status subresource.
        api.core.patch_namespaced_pod_status("notification-controller-7d9f", "flux-system", {
            "status": {"containerStatuses": [{
                "name": "manager", "image": entry["name"], "ready": True, "restartCount": 0,
                "imageID": f"{entry['name']}@{fixed_entry['digest']}",
                "state": {"running": {"startedAt": "2026-11-27T10:00:00Z"}}}]}})
        found = wait_verdict(api, "cpsb-pods", "notification-controller", "Fixed", timeout=5)
        assert found["digests"] == [fixed_entry["digest"]]
    finally:
        api.core.delete_namespaced_pod("notification-controller-7d9f", "flux-system",
                                       grace_period_seconds=0)
        set_image(api, "notification-controller", pinned(entry))
        api.delete_bulletin("cpsb-pods")


def test_embargo_leaks_nothing_and_lifts_on_time(
        api: harness.Api, operator: harness.OperatorProcess,
        flux_system: list[dict[str, Any]]) -> None:
    secret_cve, title, summary = "CVE-2026-88881", "Embargoed: zebra-kettle flaw", "quasar-ripple"
    lifts = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=8)
    body = fixtures.bulletin_for("cpsb-embargo", secret_cve, "source-controller",
                                 FIX["source-controller"],
                                 embargoUntil=lifts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                 summary=summary)
    body["spec"]["title"] = title
    body["spec"]["vulnerabilities"][0]["summary"] = summary
    api.create_bulletin(body)
    try:
        wait_verdict(api, "cpsb-embargo", "source-controller", "Vulnerable")
        assert api.get_bulletin("cpsb-embargo")["status"]["embargoed"] is True
        harness.wait_for(lambda: api.events_for("default", "cpsb-embargo"), what="Events")
        secrets = (secret_cve, title, summary, "zebra-kettle", "quasar-ripple")

        def leaks() -> list[str]:
            events = api.core.list_event_for_all_namespaces().items
            text = json.dumps([kubernetes.client.ApiClient().sanitize_for_serialization(e)
                               for e in events])
            text += operator.log_text() + operator.metrics()
            return [s for s in secrets if s in text]

        assert leaks() == []
        lifted = harness.wait_for(
            lambda: (o := api.get_bulletin("cpsb-embargo"))["status"]["embargoed"] is False
            and o, timeout=20, what="embargo lifted")
        lag = time.time() - lifts.timestamp()
        print(f"embargo lifted {lag:.2f} s after embargoUntil")
        assert lag < 2
        assert lifted["status"]["components"][0]["cves"][0]["id"] == secret_cve
        events = harness.wait_for(lambda: [e for e in api.events_for("default", "cpsb-embargo")
                                           if e.reason == "EmbargoLifted"], what="EmbargoLifted")
        assert secret_cve in events[0].message
    finally:
        api.delete_bulletin("cpsb-embargo")


def test_malformed_vex_gives_ready_false_and_others_keep_working(
        api: harness.Api, operator: harness.OperatorProcess,
        flux_system: list[dict[str, Any]]) -> None:
    api.core.create_namespaced_config_map(OPERATOR_NAMESPACE, {
        "metadata": {"name": "broken-vex"}, "data": {"vex.json": '{"@context": "https://op'}})
    broken = fixtures.bulletin_for("cpsb-badvex", CVE, "source-controller",
                                   FIX["source-controller"])
    broken["spec"]["vex"] = [{"configMapKeyRef": {"name": "broken-vex", "key": "vex.json"}}]
    api.create_bulletin(broken)
    healthy = fixtures.bulletin_for("cpsb-healthy", CVE, "source-controller",
                                    FIX["source-controller"])
    try:
        def not_ready() -> dict[str, Any] | None:
            condition = harness.condition(api.get_bulletin("cpsb-badvex"), "Ready")
            return condition if condition and condition["status"] == "False" else None

        condition = harness.wait_for(not_ready, what="Ready=False")
        assert condition["reason"] == "InvalidVex"
        assert "broken-vex" in condition["message"]
        assert "vex.json" in condition["message"]
        api.create_bulletin(healthy)
        wait_verdict(api, "cpsb-healthy", "source-controller", "Vulnerable")
        assert harness.condition(api.get_bulletin("cpsb-healthy"), "Ready")["status"] == "True"
        # Fixing the document clears the condition without touching the bulletin.
        real = (fixtures.UPSTREAM / "vex" / "v2.7.json").read_text()
        api.core.patch_namespaced_config_map("broken-vex", OPERATOR_NAMESPACE,
                                             {"data": {"vex.json": real}})
        harness.wait_for(lambda: harness.condition(api.get_bulletin("cpsb-badvex"),
                                                   "Ready")["status"] == "True",
                         what="Ready=True after the fix")
    finally:
        api.delete_bulletin("cpsb-badvex")
        api.delete_bulletin("cpsb-healthy")
        api.core.delete_namespaced_config_map("broken-vex", OPERATOR_NAMESPACE)
