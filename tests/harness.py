"""Test harness: the real control plane, the operator as a subprocess, and API helpers."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import kubernetes
import yaml

from fluxsupport.constants import DISMISSED_AT, GROUP, RESOLVED_AT, RESPONDED_AT, VERSION
from fluxsupport.devcluster import build, cluster
from fluxsupport.kube import api
from tests import fixtures

ROOT = pathlib.Path(__file__).resolve().parents[1]
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05,
             what: str = "condition") -> T:
    """Return the first truthy result of ``probe``; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def kubectl(kubeconfig: pathlib.Path, *args: str, input_text: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = pathlib.Path(sys.executable).parent / "kubectl"
    return subprocess.run([str(binary), f"--kubeconfig={kubeconfig}", *args], input=input_text,
                          capture_output=True, text=True, check=check, timeout=120)


class Api:
    """Thin wrapper over the official client for the objects the tests handle."""

    def __init__(self, kubeconfig: pathlib.Path) -> None:
        self.kubeconfig = kubeconfig
        self.client = kubernetes.config.new_client_from_config(str(kubeconfig))
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.apps = kubernetes.client.AppsV1Api(self.client)

    def create_case(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "supportcases", dict(body))
        return result

    def get_case(self, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "supportcases", name)
        return result

    def patch_case(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "supportcases", name, dict(patch))
        return result

    def create_bulletin(self, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.create_cluster_custom_object(
            GROUP, VERSION, "securitybulletins", dict(body))
        return result

    def get_bulletin(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_cluster_custom_object(
            GROUP, VERSION, "securitybulletins", name)
        return result

    def delete_bulletin(self, name: str) -> None:
        with contextlib.suppress(kubernetes.client.ApiException):
            self.custom.delete_cluster_custom_object(GROUP, VERSION, "securitybulletins", name)

    def create_namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name}})

    def events_for(self, namespace: str, name: str) -> list[Any]:
        events = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}")
        return list(events.items)


def case_manifest(name: str, namespace: str, severity: str = "High",
                  **annotations: str) -> dict[str, Any]:
    """A valid SupportCase; the impact matches the severity, so it is consistent."""
    outage = {"Urgent": "full", "High": "partial", "Medium": "degraded", "Low": "none"}[severity]
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SupportCase",
        "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations)},
        "spec": {
            "title": f"Case {name}", "description": "Created by the reliability tests.",
            "severity": severity,
            "impact": {"statement": "Deploys are blocked", "environment": "production",
                       "outage": outage, "businessCritical": True},
            "component": "helm-controller", "category": "incident",
        },
    }


def rfc3339(moment: float) -> str:
    """Second-precision UTC, as the annotations and the status use."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def parse_time(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def async_client(kubeconfig: pathlib.Path, connections: int = 32) -> api.Client:
    """The operator's own asyncio client, for bursts of writes from a test."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig),
                                       client_configuration=configuration)
    return api.Client(configuration, max_connections=connections)


CASES_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/supportcases"
BULLETINS_PATH = f"/apis/{GROUP}/{VERSION}/securitybulletins"


@contextlib.contextmanager
def flux_inventory(api: Api, entries: Mapping[str, Mapping[str, str]],
                   namespace: str = "flux-system") -> Iterator[list[dict[str, Any]]]:
    """The upstream Flux Deployments in ``namespace``, pinned to ``entries``; removed after."""
    ensure_namespace(api, namespace)
    deployments = fixtures.deployments_running(dict(entries), "v2.7.5", namespace)
    for deployment in deployments:
        body = {key: value for key, value in deployment.items() if key != "status"}
        api.apps.create_namespaced_deployment(namespace, body)
    try:
        yield deployments
    finally:
        for deployment in deployments:
            with contextlib.suppress(kubernetes.client.ApiException):
                api.apps.delete_namespaced_deployment(deployment["metadata"]["name"], namespace)


def pinned(entry: Mapping[str, str]) -> str:
    return f"{entry['name']}:{entry['newTag']}@{entry['digest']}"


#: The session policy (tests/conftest.py TEST_POLICY): 24x7, warning at half the target.
SESSION_TARGETS_S = {"Urgent": 4.0, "High": 3600.0, "Medium": 7200.0, "Low": 10800.0}


def case_problems(case: Mapping[str, Any], now: float,
                  targets: Mapping[str, float] = SESSION_TARGETS_S,
                  grace: float = 1.0) -> list[str]:
    """What is wrong with a case's status at ``now`` under a 24x7 policy; empty when right.

    The expected status follows from the case alone: its creation time and severity give the
    deadline, its lifecycle annotations the state. ``grace`` is how long after the deadline a
    missing breach is tolerated.
    """
    metadata = case["metadata"]
    name = metadata["name"]
    annotations = metadata.get("annotations") or {}
    severity = case["spec"]["severity"]
    created = parse_time(metadata["creationTimestamp"])
    deadline = created + targets[severity]
    status = case.get("status") or {}
    first = status.get("firstResponse") or {}
    if not first.get("deadline"):
        return [f"{name}: no deadline yet"]
    problems = []
    if parse_time(first["deadline"]) != deadline:
        problems.append(f"{name}: deadline {first['deadline']} is not creation + target")
    if status.get("observedGeneration") != metadata.get("generation"):
        problems.append(f"{name}: observedGeneration {status.get('observedGeneration')}")
    ready = condition(case, "Ready")
    if ready is None or (ready["status"], ready["reason"]) != ("True", "Reconciled"):
        problems.append(f"{name}: Ready {ready}")
    responded = annotations.get(RESPONDED_AT) or annotations.get(RESOLVED_AT)
    dismissed = annotations.get(DISMISSED_AT)
    state = first.get("state")
    if responded:
        wanted = "Met" if parse_time(responded) <= deadline else "Late"
        if state != wanted or first.get("respondedAt") != responded:
            problems.append(f"{name}: responded at {responded}: {state}, want {wanted}")
    elif dismissed:
        wanted = "Breached" if parse_time(dismissed) > deadline else "Closed"
        if state != wanted:
            problems.append(f"{name}: dismissed at {dismissed}: {state}, want {wanted}")
    elif now >= deadline + grace:
        if state != "Breached":
            problems.append(f"{name}: {state} {now - deadline:.1f}s after its deadline")
    elif now < deadline and state not in ("Pending", "AtRisk"):
        problems.append(f"{name}: {state} before its deadline")
    if state in ("Breached", "Late") and first.get("breachedAt") != first["deadline"]:
        problems.append(f"{name}: breachedAt {first.get('breachedAt')} is not the deadline")
    outcome = ("Resolved" if annotations.get(RESOLVED_AT)
               else "Dismissed" if dismissed else None)
    if (status.get("closure") or {}).get("outcome") != outcome:
        problems.append(f"{name}: closure {status.get('closure')}, want {outcome}")
    return problems


def condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def install_crds(kubeconfig: pathlib.Path) -> None:
    # The package folder itself: kubectl does not follow the crds/ link without a trailing slash.
    kubectl(kubeconfig, "apply", "--server-side", "-f",
            str(ROOT / "operator" / "fluxsupport" / "crds"))
    crds = ("crd/supportcases.support.fluxcd.controlplane.io",
            "crd/securitybulletins.support.fluxcd.controlplane.io",
            "crd/fluxupdatechecks.support.fluxcd.controlplane.io",
            "crd/clusterkopfpeerings.kopf.dev")
    # A freshly started API server on a loaded machine can fail the wait at once (seen: exit 1
    # after 19 s of a 60 s timeout); try again before giving up.
    for attempt in range(3):
        try:
            kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", *crds)
            return
        except subprocess.CalledProcessError:
            if attempt == 2:
                raise
            time.sleep(2)


def helm(kubeconfig: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The helm binary built from hack/controlplane (built on first use)."""
    binary = build.build_all(("helm",))["helm"]
    return subprocess.run([str(binary), "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, check=False, timeout=180)


def ensure_namespace(api: Api, name: str) -> None:
    try:
        api.create_namespace(name)
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise


def token_kubeconfig(admin: pathlib.Path, token: str, path: pathlib.Path,
                     user: str) -> pathlib.Path:
    """A kubeconfig for the admin kubeconfig's cluster that authenticates with ``token``."""
    config = yaml.safe_load(admin.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c for c in config["clusters"]
                   if c["name"] == context["context"]["cluster"])
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": user,
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user,
                                                "namespace": "default"}}],
    }))
    path.chmod(0o600)
    return path


def service_account_token(api: Api, namespace: str, name: str,
                          expiration_s: int = 86400) -> str:
    """A token for a ServiceAccount from the TokenRequest API (the only way here: no
    controller-manager creates token Secrets)."""
    review = api.core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": expiration_s}})
    token: str = review.status.token
    return token


def whoami(kubeconfig: pathlib.Path) -> str:
    """The user name the API server authenticates ``kubeconfig`` as (SelfSubjectReview)."""
    client = kubernetes.config.new_client_from_config(str(kubeconfig))
    try:
        review = kubernetes.client.AuthenticationV1Api(client).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        name: str = review.status.user_info.username
        return name
    finally:
        client.close()


@dataclasses.dataclass(frozen=True)
class OperatorCredentials:
    """What the test operators authenticate with (the session fixture operator_credentials)."""

    kubeconfig: pathlib.Path
    #: The user name the API server authenticates the kubeconfig as.
    user: str
    #: The ServiceAccount's namespace and name, when not admin.
    service_account: tuple[str, str] | None


class OperatorProcess:
    """``fluxsupport run`` as a child process, killed with the test run whatever happens."""

    def __init__(self, kubeconfig: pathlib.Path, log_dir: pathlib.Path,
                 extra_args: tuple[str, ...] = (), env: Mapping[str, str] | None = None,
                 name: str = "operator", verbose: bool = True) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_dir / f"{name}.log"
        self.extra_args = extra_args
        self.env = dict(env or {})
        self.verbose = verbose
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self, wait_ready: bool = True) -> None:
        self.port = cluster.free_port()
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fluxsupport", "run", "--metrics-host", "127.0.0.1",
             "--metrics-port", str(self.port), *(["--verbose"] if self.verbose else []),
             *self.extra_args],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=cluster._die_with_parent,  # noqa: PLW1509
        )
        log.close()
        if wait_ready:
            wait_for(self.ready, timeout=60, interval=0.1, what="operator /readyz")

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"operator exited with {self.process.returncode}:\n"
                                 f"{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz",
                                        timeout=1) as response:
                return bool(json.loads(response.read())["ready"])
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text: str = response.read().decode()
            return text

    def healthz(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz",
                                    timeout=5) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        cluster.stop_child(self.process, grace_s=15)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a node failure or OOM kill would."""
        cluster.stop_child(self.process, grace_s=0)
        self.process = None

    def log_tail(self, lines: int = 60) -> str:
        return cluster.log_tail(self.log_path, lines)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_operator(kubeconfig: pathlib.Path, log_dir: pathlib.Path,
                     **kwargs: Any) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(kubeconfig, log_dir, **kwargs)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


def load_yaml(path: pathlib.Path) -> Any:
    return yaml.safe_load(path.read_text())
