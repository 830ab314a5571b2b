"""Flux's source-, kustomize- and helm-controller as Pods on the local node.

Each controller is the binary ``make flux`` builds, packed into a one-layer image
(devcluster/images.py) and imported into the node's containerd; the Deployments, Service,
ServiceAccounts and labels follow Flux's own manifests (``config/manager`` of each controller,
``manifests/install`` of flux2), so the operator's inventory sees what it sees in a real
cluster: Deployments labelled ``app.kubernetes.io/part-of: flux``, Pods whose imageID is the
digest the kubelet reports. Differences: the images are ``localhost/<controller>:<version>``,
never pulled; source-controller advertises its artifacts at its Service's ClusterIP (there is
no cluster DNS on the node); no notification-controller (events stay in the API server); the
three ServiceAccounts are bound to cluster-admin (Flux binds kustomize- and helm-controller to
it, and gives source-controller a narrower role).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from typing import Any, Protocol

import yaml

from fluxsupport.devcluster import build, flux, images, node, paths

NAMESPACE = "flux-system"
FLUX_VERSION = "v2.9.4"
CONTROLLERS = build.FLUX_POD_CONTROLLERS


class Kubectl(Protocol):
    """A cluster to run kubectl against: the local node, or a test's other cluster."""

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]: ...


@dataclasses.dataclass(frozen=True)
class Running:
    """A controller's Pod as the kubelet reports it."""

    controller: str
    pod: str
    image: str
    #: The Pod's ``status.containerStatuses[0].imageID``.
    image_id: str

    @property
    def digest(self) -> str:
        return self.image_id.rsplit("@", 1)[-1]


def image_archive(controller: str) -> images.Written:
    """The controller's image archive, made once per binary in the cache."""
    binary = build.build_all((controller,))[controller]
    version = build.tools()[controller].version
    folder = paths.cache_dir() / "images"
    archive = folder / f"{binary.name}.tar"
    recorded = archive.with_suffix(".json")
    if archive.exists() and recorded.exists() and archive.stat().st_mtime >= binary.stat().st_mtime:
        data = json.loads(recorded.read_text())
        return images.Written(archive, data["reference"], data["digest"], archive.stat().st_size)
    written = images.write(images.static_program(
        f"localhost/{controller}", version, binary, controller,
        env={"TUF_ROOT": "/tmp/.sigstore"}), archive)
    recorded.write_text(json.dumps({"reference": written.reference, "digest": written.digest}))
    return written


def _labels(controller: str) -> dict[str, str]:
    return {"app.kubernetes.io/component": controller, "app.kubernetes.io/instance": NAMESPACE,
            "app.kubernetes.io/part-of": "flux", "app.kubernetes.io/version": FLUX_VERSION,
            "control-plane": "controller"}


def _deployment(controller: str, image: str, storage_address: str) -> dict[str, Any]:
    ports = [{"containerPort": 8080, "name": "http-prom", "protocol": "TCP"},
             {"containerPort": 9440, "name": "healthz", "protocol": "TCP"}]
    args = ["--watch-all-namespaces", "--log-level=info", "--log-encoding=json",
            "--enable-leader-election", "--events-addr="]
    mounts = [{"name": "temp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "temp", "emptyDir": {}}]
    readiness: dict[str, Any] = {"httpGet": {"path": "/readyz", "port": "healthz"}}
    grace = {"source-controller": 10, "kustomize-controller": 60, "helm-controller": 600}
    if controller == "source-controller":
        ports.insert(0, {"containerPort": 9090, "name": "http", "protocol": "TCP"})
        args += ["--storage-path=/data", f"--storage-adv-addr={storage_address}"]
        mounts.append({"name": "data", "mountPath": "/data"})
        volumes.append({"name": "data", "emptyDir": {}})
        readiness = {"httpGet": {"path": "/", "port": "http"}}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": controller, "namespace": NAMESPACE, "labels": _labels(controller)},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"} if controller == "source-controller" else {},
            "selector": {"matchLabels": {"app": controller}},
            "template": {
                "metadata": {
                    "labels": {"app": controller, "app.kubernetes.io/component": controller,
                               "app.kubernetes.io/part-of": "flux"},
                    "annotations": {"prometheus.io/scrape": "true",
                                    "prometheus.io/port": "8080"}},
                "spec": {
                    "serviceAccountName": controller,
                    "terminationGracePeriodSeconds": grace[controller],
                    "securityContext": {"fsGroup": 1337},
                    "containers": [{
                        "name": "manager", "image": image,
                        # Imported into the node's containerd; there is no registry to ask.
                        "imagePullPolicy": "Never",
                        "securityContext": {
                            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "ports": ports,
                        "env": [{"name": "RUNTIME_NAMESPACE", "valueFrom": {
                            "fieldRef": {"fieldPath": "metadata.namespace"}}}],
                        "args": args,
                        "readinessProbe": {**readiness, "periodSeconds": 2},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "healthz"}},
                        "resources": {"limits": {"cpu": "1000m", "memory": "1Gi"},
                                      "requests": {"cpu": "50m", "memory": "64Mi"}},
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    }


def _base_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = [{
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {
            "app.kubernetes.io/instance": NAMESPACE, "app.kubernetes.io/part-of": "flux",
            "app.kubernetes.io/version": FLUX_VERSION}}}]
    for controller in CONTROLLERS:
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": {"name": controller, "namespace": NAMESPACE,
                                     "labels": _labels(controller)}})
    objects.append({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "cluster-reconciler-flux-system",
                     "labels": {"app.kubernetes.io/part-of": "flux"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": c, "namespace": NAMESPACE}
                     for c in CONTROLLERS]})
    objects.append({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "source-controller", "namespace": NAMESPACE,
                     "labels": _labels("source-controller")},
        "spec": {"type": "ClusterIP", "selector": {"app": "source-controller"},
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                            "targetPort": "http"}]}})
    return objects


def install_crds(cluster: node.Node) -> None:
    """The controllers' own CRDs, applied server-side; Established before it returns."""
    names: list[str] = []
    for path in flux.crd_files(CONTROLLERS):
        names += cluster.kubectl("apply", "--server-side", "-f", str(path),
                                 "-o", "name").stdout.split()
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=120s", *names)


def _apply(cluster: node.Node, objects: list[dict[str, Any]]) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                    input_text=yaml.safe_dump_all(objects))


def install(cluster: node.Node, timeout: float = 300.0) -> dict[str, Running]:
    """Import the images, apply the objects and wait until the three Deployments are
    available; return each controller's Pod as the kubelet reports it."""
    archives = {controller: image_archive(controller) for controller in CONTROLLERS}
    for controller, written in archives.items():
        cluster.import_image(written.archive, f"localhost/{controller}")
    install_crds(cluster)
    _apply(cluster, _base_objects())
    service_ip = cluster.kubectl("get", "service", "source-controller", "-n", NAMESPACE,
                                 "-o", "jsonpath={.spec.clusterIP}").stdout.strip()
    _apply(cluster, [_deployment(c, archives[c].reference, service_ip) for c in CONTROLLERS])
    deadline = time.monotonic() + timeout
    for controller in CONTROLLERS:
        left = max(deadline - time.monotonic(), 1.0)
        cluster.kubectl("rollout", "status", f"deployment/{controller}", "-n", NAMESPACE,
                        f"--timeout={left:.0f}s", timeout=left + 30)
    return running(cluster)


def running(cluster: Kubectl) -> dict[str, Running]:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout)
    found: dict[str, Running] = {}
    for pod in pods["items"]:
        controller = pod["metadata"].get("labels", {}).get("app")
        statuses = pod.get("status", {}).get("containerStatuses") or []
        if controller in CONTROLLERS and statuses and statuses[0].get("ready") and (
                pod["metadata"].get("deletionTimestamp") is None):
            found[controller] = Running(controller, pod["metadata"]["name"],
                                        statuses[0]["image"], statuses[0]["imageID"])
    return found
