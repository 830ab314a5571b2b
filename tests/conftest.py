"""Session fixtures: a real kube-apiserver + etcd (or FLUXSUPPORT_TEST_KUBECONFIG), the CRDs,
and one operator process shared by the integration tests."""

from __future__ import annotations

import json
import os
import pathlib
import uuid
from collections.abc import Iterator

import pytest

from fluxsupport.devcluster import build, cluster
from tests import harness


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


def _report(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.fixture(scope="session")
def kubeconfig(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    existing = os.environ.get("FLUXSUPPORT_TEST_KUBECONFIG")
    if existing:
        path = pathlib.Path(existing)
        version = harness.kubectl(path, "version", "-o", "json").stdout
        _report(request.config, f"existing cluster: {json.loads(version)['serverVersion']}")
        yield path
        return
    build.build_all(("etcd", "kube-apiserver"))
    plane = cluster.ControlPlane(tmp_path_factory.mktemp("controlplane"), attached=True)
    plane.prepare()
    try:
        plane.start()
        version = plane.version()
        _report(request.config, f"\nkube-apiserver /version: gitVersion={version['gitVersion']} "
                f"goVersion={version['goVersion']} platform={version['platform']} "
                f"at {plane.server}")
        request.config.stash[CONTROL_PLANE] = plane
        yield plane.kubeconfig
    finally:
        plane.stop()


CONTROL_PLANE = pytest.StashKey[cluster.ControlPlane]()


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest, kubeconfig: pathlib.Path) -> cluster.ControlPlane:
    """The local control plane itself, for tests that stop or restart its processes."""
    plane = request.config.stash.get(CONTROL_PLANE, None)
    if plane is None:
        pytest.fail("this test needs the embedded control plane, not FLUXSUPPORT_TEST_KUBECONFIG")
    return plane


@pytest.fixture(scope="session")
def api(kubeconfig: pathlib.Path) -> harness.Api:
    harness.install_crds(kubeconfig)
    return harness.Api(kubeconfig)


#: The operator under test runs 24x7 with short targets, so that breaches happen during the
#: run. Business-hours arithmetic is covered by the unit tests and the demo test.
TEST_POLICY = """\
timezone: UTC
holidays: ""
businessHours: {alwaysOpen: true}
targets: {Urgent: 4s, High: 1h, Medium: 2h, Low: 3h}
warningRatio: 0.5
"""


@pytest.fixture(scope="session")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(TEST_POLICY)
    return path


@pytest.fixture(scope="session")
def operator(api: harness.Api, kubeconfig: pathlib.Path, policy_file: pathlib.Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.OperatorProcess]:
    log_dir = tmp_path_factory.mktemp("operator")
    process = harness.OperatorProcess(kubeconfig, log_dir,
                                      extra_args=("--policy", str(policy_file)))
    process.start()
    try:
        yield process
    finally:
        process.stop()
        assert "Traceback" not in process.log_text(), process.log_tail(200)


@pytest.fixture
def namespace(api: harness.Api) -> str:
    """A fresh namespace per test; without a controller-manager it is never deleted."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    api.create_namespace(name)
    return name
