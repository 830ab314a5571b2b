"""GitOps for the operator itself: deploy/flux's GitRepository and HelmRelease, applied as
shipped with only the URL and the intervals changed, make the real helm-controller (a Pod on the
node) install charts/fluxsupport from this checkout pushed to a git server; the operator Pod
becomes Ready, and deploy/flux/cases' Kustomization then brings the cases kept in git to Ready.

The git server runs on the host's loopback (devcluster/flux.py); a forwarder in the node's
network namespace lets source-controller's Pod reach it. The HelmRelease enables the chart's
ServiceMonitor and PrometheusRule, whose CRDs come with the Prometheus Operator, which does not
run here: stand-ins of those two CRDs (any spec accepted) are applied first. The chart's default
image, ``fluxsupport:0.1.0``, is the operator image tagged under that name in the node's
containerd, as ``kind load docker-image fluxsupport:0.1.0`` would.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from fluxsupport.devcluster import flux, fluxpods
from tests import harness
from tests.cluster.conftest import UNINSTALLS, Cluster, OperatorImage, record, wait_for

DEPLOY = harness.ROOT / "deploy" / "flux"
CHART_DEFAULT_IMAGE = "docker.io/library/fluxsupport"


def _stand_in_crd(kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com",
                     "labels": {"fluxsupport.test/stand-in": "prometheus-operator"}},
        "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                           "listKind": f"{kind}List"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                     "openAPIV3Schema": {"type": "object",
                                         "x-kubernetes-preserve-unknown-fields": True}}}]},
    }


@pytest.fixture(scope="module")
def git(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[flux.GitServer, str]]:
    local = cluster.local_node()
    with flux.running_git_server(tmp_path_factory.mktemp("git")) as server:
        forwarder = local.forward(server.port)
        yield server, f"http://{forwarder.address}/fluxsupport.git"


@pytest.mark.localnode
def test_helm_controller_installs_the_chart_from_git_and_the_cases_become_ready(
        cluster: Cluster, operator_image: OperatorImage,
        flux_pods: dict[str, fluxpods.Running], git: tuple[flux.GitServer, str],
        tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> None:
    local = cluster.local_node()
    server, url = git
    source = yaml.safe_load((DEPLOY / "gitrepository.yaml").read_text())
    release = yaml.safe_load((DEPLOY / "helmrelease.yaml").read_text())
    sync = yaml.safe_load((DEPLOY / "cases" / "flux-kustomization.yaml").read_text())
    checkout = flux.Checkout.of_working_tree(harness.ROOT, tmp_path / "checkout",
                                             server.create("fluxsupport"))
    commit = checkout.commit("fluxsupport as shipped", tag=source["spec"]["ref"]["tag"])
    local.tag_image(f"{operator_image.repository}:{operator_image.tag}",
                    f"{CHART_DEFAULT_IMAGE}:{release_app_version()}")
    cluster.apply(_stand_in_crd("ServiceMonitor", "servicemonitors"),
                  _stand_in_crd("PrometheusRule", "prometheusrules"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/servicemonitors.monitoring.coreos.com",
                    "crd/prometheusrules.monitoring.coreos.com")
    cluster.ensure_namespace("team-a")  # deploy/flux/cases' namespace
    source["spec"].update(url=url, interval="10s")
    release["spec"]["interval"] = "10s"
    release["spec"]["chart"]["spec"]["interval"] = "10s"
    sync["spec"]["interval"] = "10s"
    started = time.monotonic()
    cluster.apply(source, release)
    try:
        cluster.kubectl("wait", "-n", "flux-system", "helmrelease/fluxsupport",
                        "--for=condition=Ready", "--timeout=300s", timeout=330)
        installed = time.monotonic() - started
        pods = wait_for(lambda: [p for p in cluster.pods("fluxsupport-system",
                                                         "app.kubernetes.io/instance=fluxsupport")
                                 if any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in p["status"].get("conditions") or [])],
                        timeout=120, what="the operator Pod Ready")
        assert pods[0]["spec"]["containers"][0]["image"] == "fluxsupport:0.1.0"
        history = cluster.json("get", "helmrelease", "fluxsupport", "-n", "flux-system")
        # reconcileStrategy: Revision makes the version <chart version>+<commit>.
        assert history["status"]["history"][0]["chartVersion"] == f"0.1.0+{commit[:12]}"
        cluster.apply(sync)
        cluster.kubectl("wait", "-n", "flux-system", "kustomization/support-cases",
                        "--for=condition=Ready", "--timeout=180s", timeout=200)
        cases = wait_for(lambda: [c for c in cluster.json("get", "supportcases", "-n",
                                                          "team-a")["items"]
                                  if (harness.condition(c, "Ready") or {}).get("status")
                                  == "True"], timeout=120, what="the cases from git Ready")
        assert sorted(c["metadata"]["name"] for c in cases) == ["helmreleases-stuck",
                                                                "upgrade-to-2-8"]
        record(request.config, f"{request.node.name}: helm-controller installed the chart from "
               f"git ({commit[:12]}) and the operator Pod was Ready {installed:.1f} s after the "
               f"GitRepository and HelmRelease were applied; the cases from git Ready "
               f"{time.monotonic() - started:.1f} s after")
    finally:
        UNINSTALLS.append(time.time())  # helm-controller uninstalls the release
        cluster.kubectl("delete", "-n", "flux-system", "kustomization/support-cases",
                        "helmrelease/fluxsupport", "gitrepository/fluxsupport",
                        "--ignore-not-found", "--wait=true", timeout=300)
        wait_for(lambda: cluster.kubectl("get", "deployment", "fluxsupport", "-n",
                                         "fluxsupport-system", check=False).returncode != 0,
                 timeout=120, what="helm-controller to uninstall the release")


def release_app_version() -> str:
    chart = yaml.safe_load((harness.ROOT / "charts" / "fluxsupport" / "Chart.yaml").read_text())
    return str(chart["appVersion"])
