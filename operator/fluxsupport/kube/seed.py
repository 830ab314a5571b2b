"""The demo's objects in a fresh control plane: a Flux install as a kubelet would report it,
then a SecurityBulletin, its OpenVEX ConfigMap and SupportCases (data in fluxsupport/demo/).

In the kube layer because it writes through the blocking client; ``fluxsupport demo`` (cli)
drives it and never imports the client itself.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from typing import Any

import kubernetes
import yaml

from fluxsupport import constants, resources

#: What a failed call of this module raises besides TimeoutError and OSError.
API_ERRORS = (kubernetes.client.ApiException,)


def _ensure_namespace(core: Any, name: str) -> None:
    with contextlib.suppress(kubernetes.client.ApiException):
        core.create_namespace({"metadata": {"name": name}})


def install_flux(client: kubernetes.client.ApiClient) -> int:
    """Flux Deployments plus the Pod and status a kubelet would report for each."""
    core, apps = kubernetes.client.CoreV1Api(client), kubernetes.client.AppsV1Api(client)
    _ensure_namespace(core, "flux-system")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    deployments = [d for d in yaml.safe_load_all(resources.demo_text("flux-system.yaml")) if d]
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        apps.create_namespaced_deployment("flux-system", deployment)
        apps.patch_namespaced_deployment_status(name, "flux-system", {"status": {
            "replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1,
            "conditions": [{"type": "Available", "status": "True", "reason":
                            "MinimumReplicasAvailable", "lastTransitionTime": now}]}})
        template = deployment["spec"]["template"]
        container = template["spec"]["containers"][0]
        pod_name = f"{name}-demo"
        core.create_namespaced_pod("flux-system", {
            "metadata": {"name": pod_name, "labels": template["metadata"]["labels"]},
            "spec": {"containers": [{"name": container["name"], "image": container["image"]}]}})
        repository = container["image"].split("@")[0].rsplit(":", 1)[0]
        digest = container["image"].partition("@")[2] or "sha256:" + "5" * 64
        core.patch_namespaced_pod_status(pod_name, "flux-system", {"status": {
            "phase": "Running", "containerStatuses": [{
                "name": container["name"], "image": container["image"], "ready": True,
                "restartCount": 0, "imageID": f"{repository}@{digest}",
                "state": {"running": {"startedAt": now}}}]}})
    return len(deployments)


def apply_samples(client: kubernetes.client.ApiClient, operator_namespace: str,
                  cases: bool = True) -> None:
    """The bulletin, its OpenVEX ConfigMap and (unless ``cases`` is False: Flux applies the
    cases of deploy/flux/cases in ``demo --gitops``) the sample cases."""
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    core.create_namespaced_config_map(operator_namespace, {
        "metadata": {"name": "flux-vex-v2.7"},
        "data": {"vex.json": resources.demo_text("vex.json")}})
    custom.create_cluster_custom_object(constants.GROUP, constants.VERSION,
                                        constants.BULLETIN_PLURAL,
                                        yaml.safe_load(resources.demo_text("bulletin.yaml")))
    for case in yaml.safe_load_all(resources.demo_text("cases.yaml")) if cases else ():
        namespace = case["metadata"]["namespace"]
        _ensure_namespace(core, namespace)
        custom.create_namespaced_custom_object(constants.GROUP, constants.VERSION, namespace,
                                               constants.SUPPORTCASE_PLURAL, case)


def _submitted(case: dict[str, Any]) -> bool:
    submission = (case.get("status") or {}).get("submission") or {}
    return bool(submission.get("submittedAt") or submission.get("ticketId"))


def wait_reconciled(client: kubernetes.client.ApiClient, timeout_s: float = 60,
                    submitted: bool = False) -> None:
    """Until every case has its deadline (and, with ``submitted``, reached its channel) and
    every bulletin its verdicts."""
    custom = kubernetes.client.CustomObjectsApi(client)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cases = custom.list_cluster_custom_object(constants.GROUP, constants.VERSION,
                                                  constants.SUPPORTCASE_PLURAL)["items"]
        bulletins = custom.list_cluster_custom_object(constants.GROUP, constants.VERSION,
                                                      constants.BULLETIN_PLURAL)["items"]
        if all((c.get("status") or {}).get("firstResponse") and (
                not submitted or _submitted(c)) for c in cases) and all(
                (b.get("status") or {}).get("components") for b in bulletins):
            return
        time.sleep(0.2)
    raise TimeoutError(f"the operator did not reconcile the samples within {timeout_s:.0f}s")


def ensure_namespace(client: kubernetes.client.ApiClient, name: str) -> None:
    _ensure_namespace(kubernetes.client.CoreV1Api(client), name)
