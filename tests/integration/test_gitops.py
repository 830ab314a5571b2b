"""What ships for GitOps is accepted by the real API server: the rendered chart (server-side
dry run), the CRDs from a real `helm install`, and the example cases kept in git."""

from __future__ import annotations

import pathlib
import uuid

import yaml

from tests import harness
from tests.integration.test_chart_rbac import CHART, helm

CASES = harness.ROOT / "deploy" / "flux" / "cases"


def test_helm_template_is_accepted_by_a_server_side_dry_run(api: harness.Api,
                                                            tmp_path: pathlib.Path) -> None:
    namespace = f"dry-{uuid.uuid4().hex[:6]}"
    api.create_namespace(namespace)
    harness.kubectl(api.kubeconfig, "create", "namespace", "flux-system", check=False)
    rendered = helm(api.kubeconfig, "template", "fluxsupport", str(CHART), "--namespace",
                    namespace, "--include-crds", "--set", "dashboard.enabled=true")
    assert rendered.returncode == 0, rendered.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered.stdout) if doc}
    assert {"Deployment", "ClusterRole", "CustomResourceDefinition", "ConfigMap"} <= kinds
    # The chart's Roles for the Flux namespaces carry their own namespace: no -n here.
    applied = harness.kubectl(api.kubeconfig, "apply", "--dry-run=server", "-f", "-",
                              input_text=rendered.stdout, check=False)
    assert applied.returncode == 0, applied.stderr
    assert "deployment.apps/fluxsupport created (server dry run)" in applied.stdout


def test_helm_install_serves_the_crds(api: harness.Api, tmp_path: pathlib.Path) -> None:
    """helm installs the chart's crds/ unless they exist (the session applied the same files),
    and never upgrades them; either way the release installs and the CRDs serve."""
    namespace = f"inst-{uuid.uuid4().hex[:6]}"
    result = helm(api.kubeconfig, "install", f"fs-{namespace}", str(CHART), "--namespace",
                  namespace, "--create-namespace", "--wait=false")
    assert result.returncode == 0, result.stderr
    try:
        for plural in ("supportcases", "securitybulletins"):
            established = harness.kubectl(
                api.kubeconfig, "get", f"crd/{plural}.support.fluxcd.controlplane.io", "-o",
                "jsonpath={.status.conditions[?(@.type=='Established')].status}").stdout
            assert established == "True"
        listed = harness.kubectl(api.kubeconfig, "get", "supportcases", "-A", check=False)
        assert listed.returncode == 0, listed.stderr
    finally:
        helm(api.kubeconfig, "uninstall", f"fs-{namespace}", "--namespace", namespace)


def test_cases_kept_in_git_are_valid(api: harness.Api) -> None:
    built = harness.kubectl(api.kubeconfig, "kustomize", str(CASES))
    cases = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert {case["kind"] for case in cases} == {"SupportCase"}
    assert {case["metadata"]["namespace"] for case in cases} == {"team-a"}
    namespace = f"git-{uuid.uuid4().hex[:6]}"
    api.create_namespace(namespace)
    applied = harness.kubectl(api.kubeconfig, "apply", "--server-side", "--dry-run=server",
                              "-n", namespace, "-f", "-",
                              input_text=built.stdout.replace("namespace: team-a",
                                                              f"namespace: {namespace}"))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("serverside-applied (server dry run)") == len(cases)
