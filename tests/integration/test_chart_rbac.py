"""The chart installed for real with helm on the session's kube-apiserver; RBAC checked with
`kubectl auth can-i` against the operator's ServiceAccount and against people bound to the
built-in view and edit roles.

There is no controller-manager here, so no Pod runs (only API objects matter) and nobody
aggregates ClusterRoles: `view` starts with no rules at all, which would make "a viewer cannot
list securitybulletins" true for the wrong reason. aggregate() does what the clusterrole-
aggregation controller does, and positive controls show the aggregated roles work.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fluxsupport.devcluster import build
from tests import harness

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "fluxsupport"
RELEASE = "fluxsupport"
NAMESPACE = "fluxsupport-system"
OPERATOR = f"system:serviceaccount:{NAMESPACE}:fluxsupport"
GROUP = "support.fluxcd.controlplane.io"


def helm(kubeconfig: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = build.build_all(("helm",))["helm"]
    return subprocess.run([str(binary), "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, check=False, timeout=180)


def can(kubeconfig: pathlib.Path, user: str, verb: str, resource: str,
        *extra: str) -> bool:
    """`kubectl auth can-i VERB RESOURCE --as=USER ...`.

    For a type the API server does not serve (no Flux or kopf CRDs here), can-i checks the
    literal string as a core-group resource, a wrong question; then ask the same thing with a
    SubjectAccessReview that names the group.
    """
    result = harness.kubectl(kubeconfig, "auth", "can-i", verb, resource, f"--as={user}",
                             *extra, check=False)
    if "doesn't have a resource type" in result.stderr:
        return subject_access_review(kubeconfig, user, verb, resource, *extra)
    answer = result.stdout.strip()
    assert answer in {"yes", "no"}, result.stdout + result.stderr
    return answer == "yes"


def subject_access_review(kubeconfig: pathlib.Path, user: str, verb: str, resource: str,
                          *extra: str) -> bool:
    name, _, group = resource.partition(".")
    attributes = {"verb": verb, "resource": name, "group": group}
    if "-n" in extra:
        attributes["namespace"] = extra[extra.index("-n") + 1]
    assert set(extra) <= {"-n", attributes.get("namespace"), "--all-namespaces"}, extra
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": user, "resourceAttributes": attributes}}
    result = harness.kubectl(kubeconfig, "create", "-f", "-", "-o", "json",
                             input_text=json.dumps(review))
    allowed: bool = json.loads(result.stdout)["status"].get("allowed", False)
    return allowed


def clusterrole(kubeconfig: pathlib.Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        harness.kubectl(kubeconfig, "get", "clusterrole", name, "-o", "json").stdout)
    return data


def aggregate(kubeconfig: pathlib.Path, name: str) -> list[dict[str, Any]]:
    """Set the rules of an aggregated ClusterRole to the union of the roles it selects."""
    rules: list[dict[str, Any]] = []
    for selector in clusterrole(kubeconfig, name)["aggregationRule"]["clusterRoleSelectors"]:
        assert set(selector) == {"matchLabels"}, selector
        labels = ",".join(f"{k}={v}" for k, v in selector["matchLabels"].items())
        selected = json.loads(harness.kubectl(kubeconfig, "get", "clusterroles", "-l", labels,
                                              "-o", "json").stdout)["items"]
        for role in sorted(selected, key=lambda r: r["metadata"]["name"]):
            if role["metadata"]["name"] == name:
                continue
            rules.extend(rule for rule in role.get("rules") or [] if rule not in rules)
    harness.kubectl(kubeconfig, "patch", "clusterrole", name, "--type=merge",
                    "-p", json.dumps({"rules": rules}))
    return rules


def ensure_namespace(kubeconfig: pathlib.Path, name: str) -> None:
    manifest = harness.kubectl(kubeconfig, "create", "namespace", name, "--dry-run=client",
                               "-o", "yaml").stdout
    harness.kubectl(kubeconfig, "apply", "-f", "-", input_text=manifest)


@dataclasses.dataclass(frozen=True)
class Release:
    cases: str  # a namespace for SupportCases
    notes: str  # helm install's output, with the rendered NOTES.txt


@pytest.fixture(scope="module")
def release(api: harness.Api, kubeconfig: pathlib.Path) -> Iterator[Release]:
    """The chart installed in fluxsupport-system."""
    ensure_namespace(kubeconfig, "flux-system")
    cases = f"t-{uuid.uuid4().hex[:10]}"
    ensure_namespace(kubeconfig, cases)
    # The session already applied crds/ server-side (the api fixture); the chart's crds/ are
    # byte-identical (tests/tools/test_chart.py), so helm leaves them alone.
    installed = helm(kubeconfig, "install", RELEASE, str(CHART), "--namespace", NAMESPACE,
                     "--create-namespace", "--skip-crds")
    assert installed.returncode == 0, installed.stderr
    try:
        yield Release(cases, installed.stdout)
    finally:
        if helm(kubeconfig, "status", RELEASE, "--namespace", NAMESPACE).returncode == 0:
            helm(kubeconfig, "uninstall", RELEASE, "--namespace", NAMESPACE)
        for role in ("view", "edit"):
            aggregate(kubeconfig, role)


def test_release_objects_exist(kubeconfig: pathlib.Path, release: Release) -> None:
    # NOTES.txt: how to check the operator, and how to grant access to bulletins.
    assert "kubectl -n fluxsupport-system rollout status deployment/fluxsupport" in release.notes
    assert "--clusterrole=fluxsupport-securitybulletins-reader" in release.notes
    assert "fluxsupport-metrics.fluxsupport-system.svc:8080/metrics" in release.notes
    assert "kubectl get fluxsupport -A" in release.notes  # the category, not a clashing `sc`
    status = helm(kubeconfig, "status", RELEASE, "--namespace", NAMESPACE, "-o", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["info"]["status"] == "deployed"
    names = harness.kubectl(kubeconfig, "get", "deployment,serviceaccount,service,configmap",
                            "-n", NAMESPACE, "-o", "name").stdout.split()
    assert {"deployment.apps/fluxsupport", "serviceaccount/fluxsupport",
            "service/fluxsupport-metrics", "configmap/fluxsupport-policy",
            "configmap/fluxsupport-dashboard"} <= set(names)
    deployment = json.loads(harness.kubectl(kubeconfig, "get", "deployment", "fluxsupport",
                                            "-n", NAMESPACE, "-o", "json").stdout)
    # The API server accepted and kept the hardening (no field was pruned or rejected).
    context = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize(("verb", "resource", "where"), [
    ("list", "deployments.apps", ["-n", "flux-system"]),
    ("watch", "deployments.apps", ["-n", "flux-system"]),
    ("list", "pods", ["-n", "flux-system"]),
    ("watch", "pods", ["-n", "flux-system"]),
    ("patch", f"supportcases.{GROUP}", ["--subresource=status", "-n", "CASES"]),
    ("watch", f"supportcases.{GROUP}", ["--all-namespaces"]),
    ("patch", f"securitybulletins.{GROUP}", ["--subresource=status"]),
    ("create", "events", ["-n", "CASES"]),
    ("list", "configmaps", ["-n", NAMESPACE]),
    ("watch", "configmaps", ["-n", NAMESPACE]),
    ("create", "configmaps", ["-n", NAMESPACE]),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", []),
    ("list", "fluxreports.fluxcd.controlplane.io", ["-n", "flux-system"]),
    ("watch", "fluxinstances.fluxcd.controlplane.io", ["-n", "flux-system"]),
])
def test_operator_can(kubeconfig: pathlib.Path, release: Release, verb: str, resource: str,
                      where: list[str]) -> None:
    extra = [release.cases if arg == "CASES" else arg for arg in where]
    assert can(kubeconfig, OPERATOR, verb, resource, *extra)


@pytest.mark.parametrize(("verb", "resource", "where"), [
    ("get", "secrets", ["-n", NAMESPACE]),
    ("list", "secrets", ["-n", "flux-system"]),
    ("list", "secrets", ["--all-namespaces"]),
    ("patch", "deployments.apps", ["-n", "flux-system"]),
    ("update", "deployments.apps", ["-n", "flux-system"]),
    ("delete", "pods", ["-n", "flux-system"]),
    ("create", "pods", ["-n", NAMESPACE]),
    ("get", "configmaps", ["-n", "flux-system"]),
    ("get", "configmaps", ["-n", "CASES"]),
    ("list", "configmaps", ["--all-namespaces"]),
    ("list", "deployments.apps", ["-n", "CASES"]),
    ("list", "pods", ["--all-namespaces"]),
    ("delete", f"supportcases.{GROUP}", ["-n", "CASES"]),
    ("create", f"securitybulletins.{GROUP}", []),
    ("delete", f"fluxupdatechecks.{GROUP}", []),
    ("patch", "fluxinstances.fluxcd.controlplane.io", ["-n", "flux-system"]),
    ("list", "fluxreports.fluxcd.controlplane.io", ["-n", "CASES"]),
    ("patch", "clusterkopfpeerings.kopf.dev", []),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", []),
    # Granted before, never used (the audit log of tests/integration/test_rbac_audit.py).
    ("patch", f"supportcases.{GROUP}", ["-n", "CASES"]),
    ("get", f"supportcases.{GROUP}", ["-n", "CASES"]),
    ("patch", f"securitybulletins.{GROUP}", []),
    ("update", f"supportcases.{GROUP}", ["--subresource=status", "-n", "CASES"]),
    ("update", f"securitybulletins.{GROUP}", ["--subresource=status"]),
    ("get", f"supportcases.{GROUP}", ["--subresource=status", "-n", "CASES"]),
    ("patch", "events", ["-n", "CASES"]),
    ("watch", "namespaces", []),
    ("get", "customresourcedefinitions.apiextensions.k8s.io", []),
    ("get", "configmaps", ["-n", NAMESPACE]),
    ("get", "pods", ["-n", "flux-system"]),
    # Without policy.updates there is no FluxUpdateCheck to write.
    ("create", f"fluxupdatechecks.{GROUP}", []),
    ("patch", f"fluxupdatechecks.{GROUP}", ["--subresource=status"]),
])
def test_operator_cannot(kubeconfig: pathlib.Path, release: Release, verb: str, resource: str,
                         where: list[str]) -> None:
    extra = [release.cases if arg == "CASES" else arg for arg in where]
    assert not can(kubeconfig, OPERATOR, verb, resource, *extra)


def test_namespace_viewers_and_editors_never_read_security_bulletins(
        kubeconfig: pathlib.Path, release: Release) -> None:
    view_rules = aggregate(kubeconfig, "view")
    aggregate(kubeconfig, "edit")
    assert any("supportcases" in rule.get("resources", []) for rule in view_rules)
    assert not any("securitybulletins" in rule.get("resources", []) or
                   "*" in rule.get("resources", []) for rule in view_rules)
    namespace = release.cases
    viewer, editor = f"viewer-{namespace}", f"editor-{namespace}"
    harness.kubectl(kubeconfig, "create", "rolebinding", "viewer", "--clusterrole=view",
                    f"--user={viewer}", "-n", namespace)
    harness.kubectl(kubeconfig, "create", "rolebinding", "editor", "--clusterrole=edit",
                    f"--user={editor}", "-n", namespace)
    supportcases, bulletins = f"supportcases.{GROUP}", f"securitybulletins.{GROUP}"
    # Positive controls: the bindings and the aggregated SupportCase roles are in effect.
    assert can(kubeconfig, viewer, "list", supportcases, "-n", namespace)
    assert can(kubeconfig, viewer, "get", "configmaps", "-n", namespace)
    assert can(kubeconfig, editor, "create", supportcases, "-n", namespace)
    # Viewers read cases but do not write them; nobody but the operator writes their status.
    assert not can(kubeconfig, viewer, "create", supportcases, "-n", namespace)
    assert not can(kubeconfig, editor, "patch", supportcases, "--subresource=status",
                   "-n", namespace)
    # The embargo: no built-in role grants SecurityBulletins.
    for user in (viewer, editor):
        assert not can(kubeconfig, user, "list", "securitybulletins")
        assert not can(kubeconfig, user, "get", bulletins)
        assert not can(kubeconfig, user, "list", bulletins, "-n", namespace)
        assert not can(kubeconfig, user, "watch", bulletins, "--all-namespaces")


def test_the_bulletin_reader_role_grants_read_only(kubeconfig: pathlib.Path,
                                                  release: Release) -> None:
    reader = f"security-{release.cases}"
    bulletins = f"securitybulletins.{GROUP}"
    assert not can(kubeconfig, reader, "list", bulletins)
    harness.kubectl(kubeconfig, "create", "clusterrolebinding", reader,
                    "--clusterrole=fluxsupport-securitybulletins-reader", f"--user={reader}")
    try:
        assert can(kubeconfig, reader, "list", bulletins)
        assert can(kubeconfig, reader, "get", bulletins, "--subresource=status")
        assert not can(kubeconfig, reader, "patch", bulletins)
        assert not can(kubeconfig, reader, "create", bulletins)
        assert not can(kubeconfig, reader, "list", f"supportcases.{GROUP}", "--all-namespaces")
    finally:
        harness.kubectl(kubeconfig, "delete", "clusterrolebinding", reader)


def test_uninstall_removes_the_release(kubeconfig: pathlib.Path, release: Release) -> None:
    removed = helm(kubeconfig, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait",
                   "--timeout", "60s")
    assert removed.returncode == 0, removed.stderr
    left = harness.kubectl(kubeconfig, "get", "clusterroles,clusterrolebindings", "-o", "name",
                           "-l", "app.kubernetes.io/instance=fluxsupport").stdout.split()
    assert left == []
    for kind, name, namespace in (("deployment", "fluxsupport", NAMESPACE),
                                  ("role", "fluxsupport-flux-reader", "flux-system")):
        gone = harness.kubectl(kubeconfig, "get", kind, name, "-n", namespace, check=False)
        assert gone.returncode != 0
        assert "NotFound" in gone.stderr
    assert not can(kubeconfig, OPERATOR, "list", "deployments.apps", "-n", "flux-system")
    # helm never deletes CRDs: the session's SupportCases and SecurityBulletins are untouched.
    harness.kubectl(kubeconfig, "get", f"crd/supportcases.{GROUP}")
