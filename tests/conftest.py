"""Session fixtures: a real kube-apiserver + etcd (or FLUXSUPPORT_TEST_KUBECONFIG), the CRDs,
and one operator process shared by the integration tests."""

from __future__ import annotations

import json
import os
import pathlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fluxsupport.devcluster import build, cluster
from tests import harness
from tests.rt import MailGateway, RequestTracker

#: The tiers below tests/ and their markers; tests/unit needs Python alone and has none.
TIERS = {"integration": pytest.mark.integration, "tools": pytest.mark.tools,
         "packaging": pytest.mark.packaging, "cluster": pytest.mark.cluster}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for folder, marker in TIERS.items():
            if folder in item.path.parts:
                item.add_marker(marker)


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
FIGURES = pytest.StashKey[list[str]]()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a measured figure (recovery time, inputs tried...): it is printed at once and
    again in a "reliability figures" section at the end of the run, captured output or not."""
    def record(line: str) -> None:
        request.config.stash.setdefault(FIGURES, []).append(f"{request.node.name}: {line}")
        _report(request.config, f"\n{line}")
    return record


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("reliability figures (docs/reliability.md)")
        for line in lines:
            terminalreporter.write_line(line)


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


#: Who the session operator runs as. By default the ServiceAccount of the Helm chart, installed
#: for real with helm, with a token from the TokenRequest API: every integration test then also
#: shows that the chart's RBAC is enough. FLUXSUPPORT_TEST_OPERATOR_AS=admin runs it as admin.
OPERATOR_AS = os.environ.get("FLUXSUPPORT_TEST_OPERATOR_AS", "serviceaccount")
#: The release that provides the session operator's ServiceAccount and RBAC. Not `fluxsupport`,
#: which tests/integration/test_chart_rbac.py installs and uninstalls on its own.
SESSION_RELEASE = "fluxsupport-session"
OPERATOR_NAMESPACE = "fluxsupport-system"
CHART = harness.ROOT / "charts" / "fluxsupport"


@pytest.fixture(scope="session")
def operator_credentials(request: pytest.FixtureRequest, api: harness.Api,
                         kubeconfig: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
                         ) -> Iterator[harness.OperatorCredentials]:
    """The kubeconfig the operator processes of the tests use (see OPERATOR_AS)."""
    if OPERATOR_AS == "admin":
        yield harness.OperatorCredentials(kubeconfig, harness.whoami(kubeconfig), None)
        return
    assert OPERATOR_AS == "serviceaccount", f"FLUXSUPPORT_TEST_OPERATOR_AS={OPERATOR_AS!r}"
    for namespace in ("flux-system", OPERATOR_NAMESPACE):  # the chart's Roles live there
        harness.ensure_namespace(api, namespace)
    # Peering on: the two-replica test runs its replicas as this ServiceAccount too.
    installed = harness.helm(kubeconfig, "upgrade", "--install", SESSION_RELEASE, str(CHART),
                             "--namespace", OPERATOR_NAMESPACE, "--skip-crds",
                             "--set", "peering.enabled=true")
    assert installed.returncode == 0, installed.stderr
    try:
        token = harness.service_account_token(api, OPERATOR_NAMESPACE, SESSION_RELEASE)
        path = harness.token_kubeconfig(
            kubeconfig, token, tmp_path_factory.mktemp("operator-sa") / "kubeconfig",
            SESSION_RELEASE)
        user = harness.whoami(path)
        _report(request.config, f"session operator runs as {user} (the chart's RBAC, release "
                f"{SESSION_RELEASE}); FLUXSUPPORT_TEST_OPERATOR_AS=admin runs it as admin")
        yield harness.OperatorCredentials(path, user, (OPERATOR_NAMESPACE, SESSION_RELEASE))
    finally:
        harness.helm(kubeconfig, "uninstall", SESSION_RELEASE, "--namespace",
                     OPERATOR_NAMESPACE)


@pytest.fixture(scope="session")
def operator(operator_credentials: harness.OperatorCredentials, policy_file: pathlib.Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.OperatorProcess]:
    log_dir = tmp_path_factory.mktemp("operator")
    process = harness.OperatorProcess(operator_credentials.kubeconfig, log_dir,
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


@pytest.fixture
def no_session_operator(operator: harness.OperatorProcess) -> Iterator[None]:
    """The test runs operators of its own: the session operator stops for its duration."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()


@pytest.fixture(scope="module")
def gateway() -> Iterator[MailGateway]:
    """A loopback SMTP server that hands mail for RT to rt-mailgate (tests/rt.py)."""
    smtp = MailGateway()
    smtp.start()
    try:
        yield smtp
    finally:
        smtp.stop()


@pytest.fixture(scope="module")
def rt(gateway: MailGateway, tmp_path_factory: pytest.TempPathFactory,
       request: pytest.FixtureRequest) -> Iterator[RequestTracker]:
    """Request Tracker 5 of its own for the module: database, config and port."""
    server = RequestTracker(smtp_port=gateway.port)
    try:
        server.start(tmp_path_factory.mktemp("rt"))
        gateway.rt_url = server.url
        _report(request.config, "\nRequest Tracker " + ", ".join(
            f"{step} {seconds:.1f} s" for step, seconds in server.timings.items()))
        yield server
    finally:
        server.stop()
