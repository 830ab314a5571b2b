"""FluxUpdateCheck on the real API server: an operator with `updates:` in its policy, running as
the chart's ServiceAccount, creates `cluster`, reads the release data from a ConfigMap built
with kubectl from tests/data/upstream/images, and follows the Flux Deployments through an
upgrade: unsupported, then supported; printer columns, conditions and metrics. Then the same
release data in git, fetched by the real source-controller (`make flux`), read from its
artifact after the digest check, and followed through a new release pushed to git; and the whole
distribution repository of 3,001 files, whose artifact of about 5 MB reaches the operator in
many network reads."""

from __future__ import annotations

import contextlib
import pathlib
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from fluxsupport.constants import GROUP, VERSION
from fluxsupport.devcluster import flux
from tests import fixtures, gitsource, harness, realsize

OPERATOR_NAMESPACE = "fluxsupport-system"
VARIANT = "enterprise-distroless"
IMAGES = fixtures.UPSTREAM / "images"


def get_check(api: harness.Api) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = api.custom.get_cluster_custom_object(
            GROUP, VERSION, "fluxupdatechecks", "cluster")
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return found


def delete_check(api: harness.Api) -> None:
    with contextlib.suppress(kubernetes.client.ApiException):
        api.custom.delete_cluster_custom_object(GROUP, VERSION, "fluxupdatechecks", "cluster")


def conditions_of(check: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (check.get("status") or {}).get("conditions") or []}


def wait_check(api: harness.Api, what: str, running: str | None = None,
               **expected: tuple[str, str]) -> dict[str, Any]:
    """Until every condition type in ``expected`` has that (status, reason), and the check
    has seen the ``running`` version if one is given."""
    def probe() -> dict[str, Any] | None:
        check = get_check(api)
        if check is None:
            return None
        if running is not None and (check.get("status") or {}).get("running") != running:
            return None
        found = conditions_of(check)
        for kind, (status, reason) in expected.items():
            if (found.get(kind, {}).get("status"), found.get(kind, {}).get("reason")) != (
                    status, reason):
                return None
        return check
    return harness.wait_for(probe, timeout=60, interval=0.1, what=what)


def create_release_configmap(kubeconfig: pathlib.Path, name: str) -> None:
    """As docs/updates.md does it: one key per file, `<version>-<variant>.yaml`."""
    sources = [f"--from-file=VERSION={IMAGES / 'VERSION'}"]
    sources += [f"--from-file={path.parent.name}-{path.name}={path}"
                for path in sorted(IMAGES.glob("*/*.yaml"))]
    harness.kubectl(kubeconfig, "create", "configmap", name, "-n", OPERATOR_NAMESPACE,
                    *sources)


def printed_columns(kubeconfig: pathlib.Path) -> dict[str, str]:
    output = harness.kubectl(kubeconfig, "get", "fsupdates", "cluster").stdout.splitlines()
    assert len(output) == 2, output
    header, row = (re.split(r"\s{2,}", line.strip()) for line in output)
    return dict(zip(header, row, strict=True))


def metric_lines(operator: harness.OperatorProcess) -> set[str]:
    return {line for line in operator.metrics().splitlines()
            if line.startswith("fluxsupport_flux_")}


@pytest.fixture
def updates_operator(operator_credentials: harness.OperatorCredentials, api: harness.Api,
                     no_session_operator: None, session_rbac: Callable[..., None],
                     tmp_path: pathlib.Path) -> Iterator[tuple[harness.OperatorProcess, str]]:
    """An operator whose policy supports two minors, so that v2.7.5 (two behind v2.9.4) is
    unsupported and v2.8.8 is supported; its release-data ConfigMap is not created yet. With
    the chart's RBAC for policy.updates (the FluxUpdateCheck)."""
    harness.ensure_namespace(api, OPERATOR_NAMESPACE)
    delete_check(api)
    configmap = f"flux-releases-{uuid.uuid4().hex[:6]}"
    session_rbac("--set", f"policy.updates.configMap={configmap}")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"updates: {{configMap: {configmap}, supportedMinors: 2}}\n")
    own = harness.OperatorProcess(operator_credentials.kubeconfig, tmp_path,
                                  extra_args=("--policy", str(policy)), name="operator-updates")
    own.start()
    try:
        yield own, configmap
    finally:
        own.stop()
        delete_check(api)
        with contextlib.suppress(kubernetes.client.ApiException):
            api.core.delete_namespaced_config_map(configmap, OPERATOR_NAMESPACE)
        assert "Traceback" not in own.log_text(), own.log_tail(200)


def test_unsupported_then_supported_through_an_upgrade(
        api: harness.Api, kubeconfig: pathlib.Path,
        updates_operator: tuple[harness.OperatorProcess, str]) -> None:
    own, configmap = updates_operator
    # v2.7.5 with the source-controller build from before the CVE-2026-47680 rebuild.
    pre_fix = fixtures.images(fixtures.PRE_FIX_V275)
    with harness.flux_inventory(api, pre_fix) as deployments:
        # No release data yet: the operator creates the object and says what is missing.
        missing = wait_check(api, "Ready=False ReleaseDataNotFound",
                             Ready=("False", "ReleaseDataNotFound"),
                             Supported=("Unknown", "NotChecked"))
        assert configmap in conditions_of(missing)["Ready"]["message"]
        assert "running" not in missing["status"]
        assert metric_lines(own) == set(), "no series while the check cannot run"

        create_release_configmap(kubeconfig, configmap)
        old = wait_check(api, "v2.7.5 unsupported", Ready=("True", "Checked"),
                         Supported=("False", "MinorUnsupported"),
                         UpToDate=("False", "MinorAvailable"))
        status = old["status"]
        assert (status["running"], status["variant"], status["latest"], status["minorsBehind"],
                status["supported"], status["upToDate"]) == (
            "v2.7.5", VARIANT, "v2.9.4", 2, False, False)
        assert status["supportedMinors"] == ["v2.9", "v2.8"]
        assert status["observedGeneration"] == old["metadata"]["generation"]
        components = {c["name"]: c for c in status["components"]}
        latest_v275 = fixtures.release_images("v2.7.5", VARIANT)["source-controller"]
        source = components["source-controller"]
        assert (source["running"], source["newerBuild"], source["newestDigest"]) == (
            "v1.7.4", True, latest_v275["digest"])
        assert source["digests"] == [pre_fix["source-controller"]["digest"]]
        assert printed_columns(kubeconfig) | {"AGE": ""} == {
            "NAME": "cluster", "RUNNING": "v2.7.5", "LATEST": "v2.9.4", "MINORSBEHIND": "2",
            "SUPPORTED": "False", "AGE": ""}
        harness.wait_for(lambda: {"fluxsupport_flux_minors_behind 2.0",
                                  "fluxsupport_flux_supported 0.0",
                                  'fluxsupport_flux_component_newer_build'
                                  '{component="source-controller"} 1.0'} <= metric_lines(own),
                         timeout=20, what="the v2.7.5 series")

        # The Flux Operator upgrades the Deployments to v2.8.8.
        target = fixtures.release_images("v2.8.8", VARIANT)
        for deployment in deployments:
            name = deployment["metadata"]["name"]
            if name not in target:
                continue
            entry = target[name]
            api.apps.patch_namespaced_deployment(name, "flux-system", {
                "metadata": {"labels": {"app.kubernetes.io/version": "v2.8.8"}},
                "spec": {"template": {"spec": {"containers": [
                    {"name": "manager", "image": harness.pinned(entry)}]}}}})
        new = wait_check(api, "v2.8.8 supported", Ready=("True", "Checked"),
                         Supported=("True", "MinorSupported"),
                         UpToDate=("False", "MinorAvailable"))
        assert (new["status"]["running"], new["status"]["minorsBehind"]) == ("v2.8.8", 1)
        assert not any(c.get("newerBuild") for c in new["status"]["components"])
        assert printed_columns(kubeconfig) | {"AGE": ""} == {
            "NAME": "cluster", "RUNNING": "v2.8.8", "LATEST": "v2.9.4", "MINORSBEHIND": "1",
            "SUPPORTED": "True", "AGE": ""}
        harness.wait_for(lambda: {"fluxsupport_flux_minors_behind 1.0",
                                  "fluxsupport_flux_supported 1.0",
                                  'fluxsupport_flux_component_newer_build'
                                  '{component="source-controller"} 0.0'} <= metric_lines(own),
                         timeout=20, what="the v2.8.8 series")
        harness.wait_for(lambda: {"MinorUnsupported", "MinorSupported"} <= {
            e.reason for e in api.events_for("default", "cluster")}, timeout=20,
            what="the Events of both transitions")

        # Deleted by hand, the object comes back.
        delete_check(api)
        wait_check(api, "cluster recreated", Supported=("True", "MinorSupported"))

        # The release data goes away: the series end, Ready says why.
        api.core.delete_namespaced_config_map(configmap, OPERATOR_NAMESPACE)
        wait_check(api, "Ready=False again", Ready=("False", "ReleaseDataNotFound"),
                   Supported=("Unknown", "NotChecked"))
        harness.wait_for(lambda: not metric_lines(own), timeout=20, what="no series")


# --- the release data as a Flux source artifact ---------------------------------------------

SOURCE = "distribution"


@contextlib.contextmanager
def operator_on_source(operator_credentials: harness.OperatorCredentials, api: harness.Api,
                       kubeconfig: pathlib.Path, session_rbac: Callable[..., None],
                       tmp_path: pathlib.Path, fill: Callable[[pathlib.Path], None],
                       message: str) -> Iterator[tuple[harness.OperatorProcess, flux.Checkout]]:
    """source-controller fetching a git repository that ``fill`` writes, a GitRepository for
    it, and an operator whose policy names that GitRepository (with the chart's RBAC for
    policy.updates.sourceRef, which grants reading the Flux sources)."""
    flux.install_crds(kubeconfig)
    harness.ensure_namespace(api, flux.RUNTIME_NAMESPACE)
    delete_check(api)
    session_rbac("--set", "policy.updates.sourceRef.kind=GitRepository",
                 "--set", f"policy.updates.sourceRef.name={SOURCE}")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"updates: {{sourceRef: {{kind: GitRepository, name: {SOURCE}}}}}\n")
    own = harness.OperatorProcess(operator_credentials.kubeconfig, tmp_path,
                                  extra_args=("--policy", str(policy)), name="operator-source")
    try:
        with gitsource.served(kubeconfig, tmp_path, SOURCE, fill, message) as checkout:
            own.start()
            try:
                yield own, checkout
            finally:
                own.stop()
                delete_check(api)
    finally:
        assert "Traceback" not in own.log_text(), own.log_tail(200)


@pytest.fixture
def source_operator(operator_credentials: harness.OperatorCredentials, api: harness.Api,
                    kubeconfig: pathlib.Path, no_session_operator: None,
                    session_rbac: Callable[..., None], tmp_path: pathlib.Path
    ) -> Iterator[tuple[harness.OperatorProcess, flux.Checkout]]:
    """The release data alone in the repository: images/."""
    def fill(path: pathlib.Path) -> None:
        shutil.copytree(IMAGES, path / "images")

    with operator_on_source(operator_credentials, api, kubeconfig, session_rbac, tmp_path, fill,
                            "release data as of v2.9.4") as running:
        yield running


@pytest.fixture
def snapshot_operator(operator_credentials: harness.OperatorCredentials, api: harness.Api,
                      kubeconfig: pathlib.Path, no_session_operator: None,
                      session_rbac: Callable[..., None], tmp_path: pathlib.Path
    ) -> Iterator[tuple[harness.OperatorProcess, flux.Checkout]]:
    """The whole distribution repository, without ignore rules: 3,001 files in its layout
    (tests/realsize.py), about 5 MB as source-controller's artifact."""
    def fill(path: pathlib.Path) -> None:
        realsize.distribution_snapshot(path)

    with operator_on_source(operator_credentials, api, kubeconfig, session_rbac, tmp_path, fill,
                            "a snapshot of the distribution repository") as running:
        yield running


def artifact_of(api: harness.Api) -> dict[str, Any]:
    source = api.custom.get_namespaced_custom_object(
        "source.toolkit.fluxcd.io", "v1", flux.RUNTIME_NAMESPACE, "gitrepositories", SOURCE)
    found: dict[str, Any] = (source.get("status") or {}).get("artifact") or {}
    return found


def test_release_data_from_the_whole_distribution_repository_of_several_mb(
        api: harness.Api, kubeconfig: pathlib.Path,
        snapshot_operator: tuple[harness.OperatorProcess, flux.Checkout]) -> None:
    own, _ = snapshot_operator
    with harness.flux_inventory(api, fixtures.release_images("v2.8.8", VARIANT)) as deployments:
        for deployment in deployments:  # flux_inventory labels them v2.7.5
            api.apps.patch_namespaced_deployment(
                deployment["metadata"]["name"], "flux-system",
                {"metadata": {"labels": {"app.kubernetes.io/version": "v2.8.8"}}})
        # Packing and serving 3,000 files takes source-controller a while on a busy machine.
        harness.wait_for(lambda: artifact_of(api).get("digest"), timeout=120,
                         what="source-controller's artifact of the snapshot")
        checked = wait_check(api, "v2.8.8 from the multi-MB artifact", running="v2.8.8",
                             Ready=("True", "Checked"),
                             Supported=("True", "MinorSupported"),
                             UpToDate=("False", "MinorAvailable"))
        status = checked["status"]
        assert (status["running"], status["latest"], status["minorsBehind"]) == (
            "v2.8.8", "v2.9.4", 1)
        assert status["supportedMinors"] == ["v2.9", "v2.8", "v2.7"]
        size = int(artifact_of(api)["size"])
        assert size > 4_000_000, f"the artifact is {size} bytes: not the size of the real one"
        assert "release data of GitRepository" in own.log_text()


def test_release_data_from_a_source_controller_artifact(
        api: harness.Api, kubeconfig: pathlib.Path,
        source_operator: tuple[harness.OperatorProcess, flux.Checkout]) -> None:
    own, checkout = source_operator
    with harness.flux_inventory(api, fixtures.release_images("v2.8.8", VARIANT)) as deployments:
        for deployment in deployments:  # flux_inventory labels them v2.7.5
            api.apps.patch_namespaced_deployment(
                deployment["metadata"]["name"], "flux-system",
                {"metadata": {"labels": {"app.kubernetes.io/version": "v2.8.8"}}})
        checked = wait_check(api, "v2.8.8 from the artifact", running="v2.8.8",
                             Ready=("True", "Checked"),
                             Supported=("True", "MinorSupported"),
                             UpToDate=("False", "MinorAvailable"))
        status = checked["status"]
        assert status["source"] == f"GitRepository {flux.RUNTIME_NAMESPACE}/{SOURCE}"
        assert (status["running"], status["latest"], status["minorsBehind"]) == (
            "v2.8.8", "v2.9.4", 1)
        assert "GitRepository" in conditions_of(checked)["Ready"]["message"]

        # The distribution withdraws v2.9.4 (say, a bad release): v2.8.8 is the latest again.
        checkout.write({"images/VERSION": "v2.8.8\n"} | {
            f"images/v2.9.4/{p.name}": None for p in (IMAGES / "v2.9.4").glob("*.yaml")})
        checkout.commit("withdraw v2.9.4")
        latest = wait_check(api, "the new artifact read", Ready=("True", "Checked"),
                            UpToDate=("True", "LatestRelease"))
        assert (latest["status"]["latest"], latest["status"]["minorsBehind"]) == ("v2.8.8", 0)
        assert printed_columns(kubeconfig) | {"AGE": ""} == {
            "NAME": "cluster", "RUNNING": "v2.8.8", "LATEST": "v2.8.8", "MINORSBEHIND": "0",
            "SUPPORTED": "True", "AGE": ""}
        assert "release data of GitRepository" in own.log_text()
