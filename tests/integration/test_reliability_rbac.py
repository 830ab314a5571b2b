"""Least privilege, for real: the session operator runs with the chart's ServiceAccount token.

tests/conftest.py installs the Helm chart (release `fluxsupport-session`) with the helm binary,
asks the TokenRequest API for a token of its ServiceAccount and runs every operator of the
suite with a kubeconfig holding only that token. Every integration test that needs the operator
therefore passes under the chart's RBAC, not as admin. These tests check that this is so, and
that the token really is that narrow, with real requests rather than `kubectl auth can-i`
(tests/integration/test_chart_rbac.py asks can-i for the full matrix).

A namespace viewer, bound to the built-in `view` ClusterRole, is also checked with a real
token: it reads SupportCases in its namespace and is refused SecurityBulletins.
"""

from __future__ import annotations

import pathlib
import uuid

import kubernetes
import pytest

from fluxsupport.constants import GROUP, VERSION
from tests import harness
from tests.integration.test_chart_rbac import aggregate


def status_of(call: object) -> int:
    """The HTTP status of an API call: 200, or the error's."""
    assert callable(call)
    try:
        call()
    except kubernetes.client.ApiException as error:
        return int(error.status)
    return 200


def test_the_session_operator_runs_as_the_charts_service_account(
        operator: harness.OperatorProcess,
        operator_credentials: harness.OperatorCredentials) -> None:
    assert operator_credentials.service_account is not None, (
        "FLUXSUPPORT_TEST_OPERATOR_AS=admin: the suite ran without least privilege")
    namespace, name = operator_credentials.service_account
    assert operator.kubeconfig == operator_credentials.kubeconfig
    assert harness.whoami(operator.kubeconfig) == \
        f"system:serviceaccount:{namespace}:{name}"
    text = operator.kubeconfig.read_text()
    assert "token:" in text
    assert "client-certificate-data" not in text, "no admin certificate for the operator"
    assert operator.ready()


def test_the_operator_token_is_narrow(api: harness.Api,
                                      operator_credentials: harness.OperatorCredentials
                                      ) -> None:
    client = kubernetes.config.new_client_from_config(str(operator_credentials.kubeconfig))
    try:
        core = kubernetes.client.CoreV1Api(client)
        apps = kubernetes.client.AppsV1Api(client)
        custom = kubernetes.client.CustomObjectsApi(client)
        # What the operator needs works...
        assert status_of(lambda: custom.list_cluster_custom_object(
            GROUP, VERSION, "supportcases")) == 200
        assert status_of(lambda: apps.list_namespaced_deployment("flux-system")) == 200
        assert status_of(lambda: core.list_namespaced_config_map("fluxsupport-system")) == 200
        # ...and nothing else.
        assert status_of(core.list_secret_for_all_namespaces) == 403
        assert status_of(lambda: core.list_namespaced_secret("fluxsupport-system")) == 403
        assert status_of(lambda: core.list_namespaced_config_map("default")) == 403
        assert status_of(apps.list_deployment_for_all_namespaces) == 403
        assert status_of(lambda: apps.patch_namespaced_deployment(
            "missing", "flux-system", {"metadata": {"labels": {"x": "y"}}})) == 403
        assert status_of(lambda: custom.create_cluster_custom_object(
            GROUP, VERSION, "securitybulletins", {"apiVersion": f"{GROUP}/{VERSION}",
                                                  "kind": "SecurityBulletin",
                                                  "metadata": {"name": "nope"}})) == 403
        assert status_of(lambda: custom.delete_namespaced_custom_object(
            GROUP, VERSION, "default", "supportcases", "missing")) == 403
    finally:
        client.close()


def test_a_namespace_viewer_cannot_read_security_bulletins(
        api: harness.Api, kubeconfig: pathlib.Path, namespace: str,
        tmp_path: pathlib.Path) -> None:
    """The same property as test_chart_rbac's can-i check, with a viewer's real token."""
    harness.ensure_namespace(api, "fluxsupport-system")
    aggregate(kubeconfig, "view")  # no controller-manager aggregates ClusterRoles here
    api.core.create_namespaced_service_account(namespace, {"metadata": {"name": "viewer"}})
    harness.kubectl(kubeconfig, "create", "rolebinding", "viewer", "--clusterrole=view",
                    f"--serviceaccount={namespace}:viewer", "-n", namespace)
    token = harness.service_account_token(api, namespace, "viewer", expiration_s=3600)
    path = harness.token_kubeconfig(kubeconfig, token, tmp_path / "viewer", "viewer")
    bulletin = f"viewer-{uuid.uuid4().hex[:6]}"
    api.create_bulletin({"apiVersion": f"{GROUP}/{VERSION}", "kind": "SecurityBulletin",
                         "metadata": {"name": bulletin},
                         "spec": {"title": "t", "publishedAt": "2026-06-02T12:00:00Z",
                                  "severity": "High",
                                  "vulnerabilities": [{"id": "CVE-2026-47680",
                                                       "components": ["source-controller"]}],
                                  "fixes": [{"component": "source-controller",
                                             "version": "v1.7.4",
                                             "images": [{"repository": "ghcr.io/a/b",
                                                         "digest": "sha256:" + "a" * 64}]}]}})
    api.create_case(namespace, harness.case_manifest("visible", namespace))
    client = kubernetes.config.new_client_from_config(str(path))
    try:
        custom = kubernetes.client.CustomObjectsApi(client)
        assert harness.whoami(path) == f"system:serviceaccount:{namespace}:viewer"
        # Positive control: the binding works, the viewer reads cases in its namespace.
        assert status_of(lambda: custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "supportcases", "visible")) == 200
        assert status_of(lambda: custom.list_cluster_custom_object(
            GROUP, VERSION, "securitybulletins")) == 403
        assert status_of(lambda: custom.get_cluster_custom_object(
            GROUP, VERSION, "securitybulletins", bulletin)) == 403
        assert status_of(lambda: custom.get_cluster_custom_object_status(
            GROUP, VERSION, "securitybulletins", bulletin)) == 403
    finally:
        client.close()
        api.delete_bulletin(bulletin)


@pytest.mark.parametrize("verb", ["list", "watch"])
def test_the_operator_cannot_read_secrets_anywhere(
        operator_credentials: harness.OperatorCredentials, verb: str) -> None:
    answer = harness.kubectl(operator_credentials.kubeconfig, "auth", "can-i", verb,
                             "secrets", "--all-namespaces", check=False)
    assert answer.stdout.strip() == "no"
