"""``fluxsupport demo``: everything fluxsupport does, on a local control plane, in a minute."""

from __future__ import annotations

import contextlib
import datetime
import importlib.resources
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Annotated, Any

import kubernetes
import typer
import yaml

from fluxsupport import constants
from fluxsupport.cli import report
from fluxsupport.devcluster import build, cluster, paths
from fluxsupport.domain.policy import Policy
from fluxsupport.kube import blocking

OPERATOR_NAMESPACE = "fluxsupport-system"


def _data(name: str) -> str:
    return importlib.resources.files("fluxsupport.demo").joinpath(name).read_text()


def _say(message: str) -> None:
    typer.secho(message, err=True, fg=typer.colors.CYAN)


def _ensure_namespace(core: Any, name: str) -> None:
    with contextlib.suppress(kubernetes.client.ApiException):
        core.create_namespace({"metadata": {"name": name}})


def install_flux(client: kubernetes.client.ApiClient) -> int:
    """Flux Deployments plus the Pod and status a kubelet would report for each."""
    core, apps = kubernetes.client.CoreV1Api(client), kubernetes.client.AppsV1Api(client)
    _ensure_namespace(core, "flux-system")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    deployments = [d for d in yaml.safe_load_all(_data("flux-system.yaml")) if d]
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


def apply_samples(client: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    core.create_namespaced_config_map(OPERATOR_NAMESPACE, {
        "metadata": {"name": "flux-vex-v2.7"}, "data": {"vex.json": _data("vex.json")}})
    custom.create_cluster_custom_object(constants.GROUP, constants.VERSION,
                                        constants.BULLETIN_PLURAL,
                                        yaml.safe_load(_data("bulletin.yaml")))
    for case in yaml.safe_load_all(_data("cases.yaml")):
        namespace = case["metadata"]["namespace"]
        _ensure_namespace(core, namespace)
        custom.create_namespaced_custom_object(constants.GROUP, constants.VERSION, namespace,
                                               constants.SUPPORTCASE_PLURAL, case)


def wait_reconciled(client: kubernetes.client.ApiClient, timeout_s: float = 60) -> None:
    custom = kubernetes.client.CustomObjectsApi(client)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cases = custom.list_cluster_custom_object(constants.GROUP, constants.VERSION,
                                                  constants.SUPPORTCASE_PLURAL)["items"]
        bulletins = custom.list_cluster_custom_object(constants.GROUP, constants.VERSION,
                                                      constants.BULLETIN_PLURAL)["items"]
        if all((c.get("status") or {}).get("firstResponse") for c in cases) and all(
                (b.get("status") or {}).get("components") for b in bulletins):
            return
        time.sleep(0.2)
    raise TimeoutError(f"the operator did not reconcile the samples within {timeout_s:.0f}s")


def demo(
    once: Annotated[bool, typer.Option(help="Print the report and exit (for scripts and CI).")
                    ] = False,
    metrics_port: Annotated[int, typer.Option(
        help="Port for the operator's /metrics; a free one when 0.")] = 0,
) -> None:
    """Start a local control plane, a realistic flux-system, the operator and samples; report.

    Example: fluxsupport demo --once
    """
    state_dir = pathlib.Path(os.environ.get("FLUXSUPPORT_DEMO_DIR") or paths.cache_dir() / "demo")
    try:
        build.build_all(("etcd", "kube-apiserver"))
        _say("Starting etcd and kube-apiserver on loopback ...")
        plane = cluster.up(state_dir, attached=True)
    except (build.BuildError, cluster.ControlPlaneError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    port = metrics_port or cluster.free_port()
    operator: subprocess.Popen[bytes] | None = None
    try:
        client = blocking.api_client(plane.kubeconfig)
        blocking.install_crds(client)
        _ensure_namespace(kubernetes.client.CoreV1Api(client), OPERATOR_NAMESPACE)
        _say(f"Created {install_flux(client)} Flux Deployments in flux-system "
             "(v2.7.5 enterprise-distroless; source-controller from before a fix)")
        log_path = state_dir / "operator.log"
        with log_path.open("ab") as log:
            operator = subprocess.Popen(
                [sys.executable, "-m", "fluxsupport", "run", "--metrics-host", "127.0.0.1",
                 "--metrics-port", str(port), "--namespace", OPERATOR_NAMESPACE,
                 "--flux-namespace", "flux-system"],
                env={**os.environ, "KUBECONFIG": str(plane.kubeconfig)},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=cluster._die_with_parent,  # noqa: PLW1509 - only prctl runs
            )
        _say("Started the operator; applying a SecurityBulletin, its OpenVEX ConfigMap and "
             "three SupportCases ...")
        apply_samples(client)
        wait_reconciled(client)
        custom = kubernetes.client.CustomObjectsApi(client)
        typer.echo("")
        report.render(report.collect(custom, Policy(), datetime.datetime.now(datetime.UTC)))
        typer.echo(f"""
Try it yourself (kube-apiserver {plane.version()['gitVersion']} at {plane.server}):
  export KUBECONFIG={plane.kubeconfig}
  kubectl get supportcases -A
  kubectl get securitybulletin cpsb-2026-0602 -o yaml
  kubectl wait --for=condition=Ready supportcase/helmreleases-stuck -n team-a
Metrics: curl -s http://127.0.0.1:{port}/metrics | grep -E '^(supportcase|fluxsupport)_'
Operator log: {log_path}""")
        if not once:
            _say("\nRunning until Ctrl-C ...")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    except (kubernetes.client.ApiException, TimeoutError, OSError) as error:
        typer.echo(f"error: the demo failed: {error}", err=True)
        raise typer.Exit(1) from error
    finally:
        if operator is not None:
            cluster.stop_process_group(operator.pid)
        plane.stop()
        _say("Stopped the operator, kube-apiserver and etcd.")
