"""The cluster tier: the operator image installed with helm on a real node, Flux's controllers
as Pods next to it.

The node is ``fluxsupport devcluster up --node``'s (devcluster/node.py): kubelet, containerd
and the control plane in a network namespace of their own, started once for the session and
taken down whatever happens. It needs root (make test runs as root) and ``make node``.

FLUXSUPPORT_TEST_KUBECONFIG points the tier at another cluster instead (kind, for instance):
then FLUXSUPPORT_TEST_IMAGE names the operator image already loaded there (``kind load
image-archive``), and Flux's source-, kustomize- and helm-controller must run in flux-system
(``flux install``). The tests marked ``localnode`` look at the node itself (the host's state, the
API server's audit log, Prometheus inside the node's network namespace) and fail on another
cluster; deselect them with ``-m "not localnode"``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from fluxsupport.devcluster import build, fluxpods, images, node
from tests import harness

ROOT = harness.ROOT
CHART = ROOT / "charts" / "fluxsupport"
OPERATOR_NAMESPACE = "fluxsupport-system"
EXTERNAL = os.environ.get("FLUXSUPPORT_TEST_KUBECONFIG")
IMAGE_NAME = "localhost/fluxsupport"

#: 24x7, short targets: breaches happen during the run (as tests/conftest.py's TEST_POLICY).
POLICY_VALUES: dict[str, Any] = {
    "timezone": "UTC", "holidays": "", "businessHours": {"alwaysOpen": True},
    "targets": {"Urgent": "4s", "High": "1h", "Medium": "2h", "Low": "3h"},
    "warningRatio": 0.5,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The least-privilege check reads the audit log of everything the tier did before it.
    items.sort(key=lambda item: item.path.name == "test_least_privilege.py")


@dataclasses.dataclass
class Cluster:
    """The cluster under test and the tools that talk to it."""

    kubeconfig: pathlib.Path
    #: The local node, or None on FLUXSUPPORT_TEST_KUBECONFIG's cluster.
    node: node.Node | None
    figures: list[str] = dataclasses.field(default_factory=list)

    def kubectl_command(self) -> list[str]:
        """kubectl and its kubeconfig: the node's own build (its server's version), or the
        dev extra's on another cluster."""
        binary = (build.binary_path("kubectl") if self.node is not None
                  else pathlib.Path(sys.executable).parent / "kubectl")
        return [str(binary), f"--kubeconfig={self.kubeconfig}"]

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True,
                timeout: float = 180) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.kubectl_command(), *args], input=input_text,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                     input_text=yaml.safe_dump_all(list(objects)))

    def helm(self, *args: str, check: bool = True,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
        binary = build.build_all(("helm",))["helm"]
        done = subprocess.run([str(binary), "--kubeconfig", str(self.kubeconfig), *args],
                              capture_output=True, text=True, check=False, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}: {done.stderr.strip()}")
        return done

    def ensure_namespace(self, name: str) -> None:
        if self.kubectl("get", "namespace", name, check=False).returncode != 0:
            self.kubectl("create", "namespace", name)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.json("get", "pods", "-n", namespace, "-l",
                                                selector)["items"]
        return items

    def local_node(self) -> node.Node:
        if self.node is None:
            pytest.fail("this test looks at the local node itself (its host, audit log or "
                        "network namespace); on FLUXSUPPORT_TEST_KUBECONFIG's cluster "
                        "deselect it with -m 'not localnode'")
        return self.node


def wait_for(probe: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2,
             what: str = "condition") -> Any:
    return harness.wait_for(probe, timeout=timeout, interval=interval, what=what)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if EXTERNAL:
        yield Cluster(pathlib.Path(EXTERNAL), None)
        return
    if os.geteuid() != 0:
        pytest.fail("tests/cluster runs a node (network namespace, cgroups, containerd): run "
                    "it as root, as `make test` does on CI")
    local = node.Node(tmp_path_factory.mktemp("node") / "state")
    started = time.monotonic()
    local.start()
    elapsed = time.monotonic() - started
    try:
        version = local.kubectl("version", "-o", "json").stdout
        record(request.config, f"node {local.name} Ready in {elapsed:.1f} s (slot "
               f"{local.slot.number}, server {json.loads(version)['serverVersion']['gitVersion']}"
               f" at {local.server})")
        yield Cluster(local.kubeconfig, local)
    finally:
        local.stop()


FIGURES = pytest.StashKey[list[str]]()


def record(config: pytest.Config, line: str) -> None:
    config.stash.setdefault(FIGURES, []).append(line)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\n{line}")


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a measured figure: printed at once and in the run's summary."""
    def note(line: str) -> None:
        record(request.config, f"{request.node.name}: {line}")
    return note


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("cluster figures (docs/install.md)")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def flux_pods(cluster: Cluster, request: pytest.FixtureRequest) -> dict[str, fluxpods.Running]:
    """source-, kustomize- and helm-controller running as Pods in flux-system."""
    if cluster.node is None:
        found = fluxpods.running(cluster)
        missing = set(fluxpods.CONTROLLERS) - set(found)
        if missing:
            pytest.fail(f"{', '.join(sorted(missing))} not Ready in flux-system of "
                        "FLUXSUPPORT_TEST_KUBECONFIG's cluster (flux install)")
        return found
    started = time.monotonic()
    running = fluxpods.install(cluster.node)
    record(request.config, f"Flux controllers Ready as Pods in {time.monotonic() - started:.1f}"
           f" s (images imported, CRDs applied): " + ", ".join(
               f"{name} {pod.digest[:19]}" for name, pod in running.items()))
    return running


@dataclasses.dataclass(frozen=True)
class OperatorImage:
    repository: str
    tag: str

    @property
    def values(self) -> list[str]:
        return ["--set", f"image.repository={self.repository}", "--set", f"image.tag={self.tag}",
                "--set", "image.pullPolicy=Never" if self.repository.startswith("localhost/")
                else "image.pullPolicy=IfNotPresent"]


@pytest.fixture(scope="session")
def operator_image(cluster: Cluster, request: pytest.FixtureRequest) -> OperatorImage:
    """The operator image, imported into the node's containerd."""
    named = os.environ.get("FLUXSUPPORT_TEST_IMAGE")
    if cluster.node is None or named:
        if not named:
            pytest.fail("FLUXSUPPORT_TEST_IMAGE must name the operator image loaded into "
                        "FLUXSUPPORT_TEST_KUBECONFIG's cluster (e.g. kind load image-archive)")
        repository, _, tag = named.rpartition(":")
        return OperatorImage(repository, tag)
    archive = images.operator_archive()
    if not archive.is_file():
        pytest.fail(f"the operator image archive {archive} is missing: run `make image`")
    started = time.monotonic()
    cluster.node.import_image(archive, IMAGE_NAME)
    tag = images.archive_tag(archive)
    assert f"{IMAGE_NAME}:{tag}" in cluster.node.images(), cluster.node.images()
    record(request.config, f"operator image {IMAGE_NAME}:{tag} imported in "
           f"{time.monotonic() - started:.1f} s ({archive.stat().st_size / 1e6:.0f} MB archive)")
    return OperatorImage(IMAGE_NAME, tag)


#: When each uninstall of the tier began (time.time()), for the audit log check: helm deletes
#: the RBAC objects while the operator Pod is still stopping.
UNINSTALLS: list[float] = []


@dataclasses.dataclass
class Release:
    """One helm release of the chart and its operator Pods."""

    cluster: Cluster
    name: str
    namespace: str = OPERATOR_NAMESPACE

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/instance={self.name}"

    @property
    def service_account(self) -> str:
        fullname = self.name if "fluxsupport" in self.name else f"{self.name}-fluxsupport"
        return f"system:serviceaccount:{self.namespace}:{fullname}"

    def install(self, image: OperatorImage, *values: str, chart: pathlib.Path = CHART,
                command: str = "install") -> float:
        """helm install (or upgrade) --wait; returns the seconds it took."""
        started = time.monotonic()
        self.cluster.helm(command, self.name, str(chart), "--namespace", self.namespace,
                          *image.values, "--set-json", f"policy={json.dumps(POLICY_VALUES)}",
                          *values, "--wait", "--timeout", "240s")
        return time.monotonic() - started

    def pods(self) -> list[dict[str, Any]]:
        return [pod for pod in self.cluster.pods(self.namespace, self.selector)
                if pod["metadata"].get("deletionTimestamp") is None]

    def ready_pods(self) -> list[dict[str, Any]]:
        return [pod for pod in self.pods() if pod_ready(pod)]

    def logs(self, pod: str, *extra: str) -> str:
        return self.cluster.kubectl("logs", "-n", self.namespace, pod, *extra).stdout

    def uninstall(self) -> None:
        UNINSTALLS.append(time.time())
        self.cluster.helm("uninstall", self.name, "--namespace", self.namespace, "--wait",
                          check=False)


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions") or [])


def condition_time(pod: dict[str, Any], kind: str) -> float | None:
    for item in pod.get("status", {}).get("conditions") or []:
        if item["type"] == kind and item["status"] == "True":
            return harness.parse_time(item["lastTransitionTime"])
    return None
