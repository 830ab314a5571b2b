"""One identity: the operator's kopf watches and its own reads and writes
authenticate as the same user, inside a pod or with ``--kubeconfig``.

"In a pod" is simulated for real code paths: the operator runs with $KUBERNETES_SERVICE_HOST/
PORT pointing at the test API server, and the ServiceAccount mount
(/var/run/secrets/kubernetes.io/serviceaccount) redirected, for this process alone, to a
directory holding a real ServiceAccount token and the cluster's CA. Whatever reads the mount
(kopf's own login, the kubernetes client's in-cluster loader, kube/credentials.py, ssl's CA
loading) sees that directory.
"""

from __future__ import annotations

import base64
import os
import pathlib
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from fluxsupport.devcluster import cluster
from tests import harness

MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

#: Runs `python -m fluxsupport` with the ServiceAccount mount redirected to $FAKE_SA_DIR.
POD_WRAPPER = f'''\
import builtins, os, runpy, sys

MOUNT = {MOUNT!r}
FAKE = os.environ.pop("FAKE_SA_DIR")


def redirect(path):
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, str) and path.startswith(MOUNT):
        return FAKE + path[len(MOUNT):]
    return path


real_open = builtins.open
builtins.open = lambda file, *args, **kwargs: real_open(redirect(file), *args, **kwargs)
for name in ("exists", "isfile"):
    real = getattr(os.path, name)
    setattr(os.path, name, lambda path, real=real: real(redirect(path)))
# ssl reads the CA in C, out of reach of the redirect above.
import ssl
real_context = ssl.create_default_context
ssl.create_default_context = lambda *args, cafile=None, **kwargs: real_context(
    *args, cafile=redirect(cafile), **kwargs)
sys.argv = ["fluxsupport", *sys.argv[1:]]
runpy.run_module("fluxsupport", run_name="__main__")
'''


class PodOperator(harness.OperatorProcess):
    """``fluxsupport run`` as in a pod whose ServiceAccount token is ``token``."""

    def __init__(self, admin: pathlib.Path, token: str, log_dir: pathlib.Path,
                 extra_args: tuple[str, ...], env: dict[str, str], name: str) -> None:
        super().__init__(admin, log_dir, extra_args=extra_args, env=env, name=name)
        config = yaml.safe_load(admin.read_text())
        cluster_entry = config["clusters"][0]["cluster"]
        server = urllib.parse.urlsplit(cluster_entry["server"])
        self.mount = log_dir / f"{name}-serviceaccount"
        self.mount.mkdir()
        (self.mount / "token").write_text(token)
        (self.mount / "ca.crt").write_bytes(
            base64.b64decode(cluster_entry["certificate-authority-data"]))
        (self.mount / "namespace").write_text("fluxsupport-system")
        self.wrapper = log_dir / f"{name}-pod.py"
        self.wrapper.write_text(POD_WRAPPER)
        self.home = log_dir / f"{name}-home"  # no ~/.kube/config there
        self.home.mkdir()
        self.pod_env = {"KUBERNETES_SERVICE_HOST": str(server.hostname),
                        "KUBERNETES_SERVICE_PORT": str(server.port),
                        "FAKE_SA_DIR": str(self.mount), "HOME": str(self.home)}

    def start(self, wait_ready: bool = True) -> None:
        self.port = cluster.free_port()
        env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
        env.update(self.pod_env)
        env.update(self.env)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(self.wrapper), "run", "--metrics-host", "127.0.0.1",
                 "--metrics-port", str(self.port), "--verbose", *self.extra_args],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=cluster._die_with_parent,  # noqa: PLW1509
            )
        if wait_ready:
            harness.wait_for(self.ready, timeout=60, interval=0.1, what="operator /readyz")


def _token_of(kubeconfig: pathlib.Path) -> str | None:
    user = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]
    token = user.get("token")
    return str(token) if token else None


@pytest.fixture
def privileged_token(api: harness.Api, operator_credentials: harness.OperatorCredentials,
                     namespace: str) -> Iterator[tuple[str, str]]:
    """A token the operator can run with, and its user: the session operator's own (the
    chart's ServiceAccount), or, when the session runs as admin, a cluster-admin account."""
    token = _token_of(operator_credentials.kubeconfig)
    if token is not None:
        yield token, operator_credentials.user
        return
    api.core.create_namespaced_service_account(namespace, {"metadata": {"name": "admin"}})
    rbac = kubernetes.client.RbacAuthorizationV1Api(api.client)
    binding = f"{namespace}-admin"
    rbac.create_cluster_role_binding({
        "metadata": {"name": binding},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "admin", "namespace": namespace}]})
    try:
        yield (harness.service_account_token(api, namespace, "admin"),
               f"system:serviceaccount:{namespace}:admin")
    finally:
        rbac.delete_cluster_role_binding(binding)


def _reconciled(api: harness.Api, namespace: str) -> dict[str, Any]:
    name = f"who-{uuid.uuid4().hex[:6]}"
    api.create_case(namespace, harness.case_manifest(name, namespace, severity="High"))

    def ready() -> dict[str, Any] | None:
        case = api.get_case(namespace, name)
        found = harness.condition(case, "Ready")
        return case if found and found["reason"] == "Reconciled" else None
    return harness.wait_for(ready, timeout=30, what=f"case {name} reconciled")


def test_run_kubeconfig_in_a_pod_reads_and_writes_as_the_kubeconfig_user(
        api: harness.Api, kubeconfig: pathlib.Path, namespace: str, policy_file: pathlib.Path,
        operator_credentials: harness.OperatorCredentials, no_session_operator: None,
        tmp_path: pathlib.Path) -> None:
    """The pod's ServiceAccount may do nothing at all; `--kubeconfig` names a user who may
    run the operator. kopf logged in with the ServiceAccount first, so its watches were
    refused (403 naming that account) while the writes went as the kubeconfig user."""
    api.core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    nobody = f"system:serviceaccount:{namespace}:nobody"
    token = harness.service_account_token(api, namespace, "nobody")
    process = PodOperator(kubeconfig, token, tmp_path, name="pod-kubeconfig", env={},
                          extra_args=("--policy", str(policy_file),
                                      "--kubeconfig", str(operator_credentials.kubeconfig)))
    process.start()
    try:
        _reconciled(api, namespace)  # the case watch delivered the case, the status was written
        log = process.log_text()
    finally:
        process.stop()
    assert f"Kubernetes credentials: kubeconfig {operator_credentials.kubeconfig}" in log
    assert nobody not in log, "something authenticated as the pod's ServiceAccount"
    assert "forbidden" not in log.lower(), process.log_tail(80)


def test_in_a_pod_without_kubeconfig_everything_runs_as_the_service_account(
        api: harness.Api, kubeconfig: pathlib.Path, namespace: str, policy_file: pathlib.Path,
        privileged_token: tuple[str, str], no_session_operator: None,
        tmp_path: pathlib.Path) -> None:
    token, user = privileged_token
    process = PodOperator(kubeconfig, token, tmp_path, name="pod-serviceaccount", env={},
                          extra_args=("--policy", str(policy_file)))
    process.start()
    try:
        case = _reconciled(api, namespace)
        log = process.log_text()
    finally:
        process.stop()
    assert "Kubernetes credentials: in-cluster ServiceAccount" in log
    assert case["status"]["firstResponse"]["deadline"]
    assert "forbidden" not in log.lower(), process.log_tail(80)
    # The identity the API server sees for that token is the one expected.
    path = harness.token_kubeconfig(kubeconfig, token, tmp_path / "check", "check")
    assert harness.whoami(path) == user
