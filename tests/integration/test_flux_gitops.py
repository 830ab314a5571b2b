"""Cases kept in git, applied by Flux itself: the real source-controller and kustomize-controller
(built from their Go modules, hack/flux) reconcile the GitRepository and Kustomization of
deploy/flux/ as shipped, from this repository's content pushed to a git server on loopback.

Only the URL and the intervals differ from what users apply (a test cannot wait 30 minutes).
The shipped Kustomization waits for nothing (no `wait`, no health checks), which matters here:
no kubelet runs pods, so a Kustomization waiting for workloads would never be Ready. The
HelmRelease of deploy/flux is not applied (no helm-controller runs here): test_gitops.py checks
the chart it installs by a server-side dry run.

The tests run in file order on one repository: each commits its change on top of the others'.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from fluxsupport.constants import GROUP, VERSION
from fluxsupport.devcluster import flux
from tests import harness

FLUX = harness.ROOT / "deploy" / "flux"
CASES_DIR = "deploy/flux/cases"
CASE_NAMESPACE = "team-a"  # deploy/flux/cases/kustomization.yaml
BULLETIN = "cpsb-2026-0811"  # examples/securitybulletin.yaml
INTERVAL = "3s"
TIMEOUT = 180.0  # a loaded 2-core machine: git fetch, artifact, apply, operator status


def shipped(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((FLUX / name).read_text())
    return document


@dataclasses.dataclass
class GitOps:
    api: harness.Api
    checkout: flux.Checkout
    controllers: dict[str, flux.Controller]
    git_server: flux.GitServer
    tag: str
    kustomization: str
    revisions: list[str]

    def push(self, message: str) -> str:
        commit = self.checkout.commit(message, tag=self.tag)
        self.revisions.append(commit)
        return commit

    def flux_object(self, plural: str, group: str, version: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.api.custom.get_namespaced_custom_object(
            group, version, flux.RUNTIME_NAMESPACE, plural, name)
        return result

    def kustomization_status(self) -> dict[str, Any]:
        obj = self.flux_object("kustomizations", "kustomize.toolkit.fluxcd.io", "v1",
                               self.kustomization)
        return obj.get("status") or {}

    def applied(self, commit: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Wait until the Kustomization has applied ``commit`` and is Ready."""
        def probe() -> dict[str, Any] | None:
            status = self.kustomization_status()
            ready = harness.condition({"status": status}, "Ready") or {}
            done = (str(status.get("lastAppliedRevision", "")).endswith(commit)
                    and ready.get("status") == "True")
            return status if done else None
        try:
            return harness.wait_for(probe, timeout=timeout, interval=0.5,
                                    what=f"Kustomization {self.kustomization} at {commit}")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.diagnose()}") from None

    def diagnose(self) -> str:
        lines = [f"Kustomization status: {self.kustomization_status()}"]
        with contextlib.suppress(kubernetes.client.ApiException):
            repo = self.flux_object("gitrepositories", "source.toolkit.fluxcd.io", "v1",
                                    "fluxsupport")
            lines.append(f"GitRepository status: {repo.get('status')}")
        lines.append(f"git requests: {self.git_server.requests[-10:]}")
        for controller in self.controllers.values():
            tail = [line[:500] for line in controller.log_tail(6).splitlines()]
            lines.append(f"--- {controller.name} log ({controller.log_path})\n" + "\n".join(tail))
        return "\n".join(lines)

    def cases(self) -> dict[str, dict[str, Any]]:
        listed = self.api.custom.list_namespaced_custom_object(GROUP, VERSION, CASE_NAMESPACE,
                                                              "supportcases")
        return {item["metadata"]["name"]: item for item in listed["items"]}


def with_bulletin(kustomization_yaml: str) -> str:
    """The cases folder's kustomization.yaml, listing the bulletin file too."""
    document = yaml.safe_load(kustomization_yaml)
    document["resources"].append("bulletin.yaml")
    return yaml.safe_dump(document, sort_keys=False)


def apply(api: harness.Api, document: dict[str, Any]) -> None:
    harness.kubectl(api.kubeconfig, "apply", "--server-side", "--field-manager=tests",
                    "-f", "-", input_text=yaml.safe_dump(document))


@pytest.fixture(scope="module")
def gitops(api: harness.Api, operator: harness.OperatorProcess,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitOps]:
    workdir = tmp_path_factory.mktemp("flux")
    crds = flux.install_crds(api.kubeconfig)
    assert "customresourcedefinition.apiextensions.k8s.io/gitrepositories." \
           "source.toolkit.fluxcd.io" in crds
    for namespace in (flux.RUNTIME_NAMESPACE, CASE_NAMESPACE):
        harness.ensure_namespace(api, namespace)
    source = shipped("gitrepository.yaml")
    sync = shipped("cases/flux-kustomization.yaml")
    tag = source["spec"]["ref"]["tag"]
    with flux.running_git_server(workdir / "git") as git_server:
        checkout = flux.Checkout.of_working_tree(
            harness.ROOT, workdir / "checkout", git_server.create("fluxsupport"))
        # A bulletin kept next to the cases: cluster-scoped, through the same Kustomization.
        checkout.write({
            f"{CASES_DIR}/bulletin.yaml": (harness.ROOT / "examples" /
                                           "securitybulletin.yaml").read_text(),
            f"{CASES_DIR}/kustomization.yaml": with_bulletin(
                checkout.read(f"{CASES_DIR}/kustomization.yaml")),
        })
        state = GitOps(api, checkout, {}, git_server, tag, sync["metadata"]["name"], [])
        state.push("fluxsupport as shipped, with a bulletin")
        with flux.running_controllers(api.kubeconfig, workdir / "controllers") as controllers:
            state.controllers = controllers
            source["spec"]["url"] = git_server.url("fluxsupport")
            source["spec"]["interval"] = INTERVAL
            sync["spec"]["interval"] = INTERVAL
            apply(api, source)
            apply(api, sync)
            try:
                yield state
            finally:
                # Deleting a pruning Kustomization deletes what it applied; the controller must
                # still run to remove its finalizer.
                harness.kubectl(api.kubeconfig, "delete", "-n", flux.RUNTIME_NAMESPACE,
                                f"kustomization/{state.kustomization}", "gitrepository/fluxsupport",
                                "--wait=true", "--timeout=120s", check=False)


def test_shipped_objects_apply_the_cases_from_git(gitops: GitOps,
                                                  figures: Any) -> None:
    started = time.monotonic()
    status = gitops.applied(gitops.revisions[0])
    figures(f"first sync (push to Ready Kustomization): {time.monotonic() - started:.1f}s")
    assert status["lastAppliedRevision"] == f"{gitops.tag}@sha1:{gitops.revisions[0]}"
    # The artifact is the repository reduced by the GitRepository's ignore rules: the chart
    # and the cases folder, nothing else.
    repo = gitops.flux_object("gitrepositories", "source.toolkit.fluxcd.io", "v1", "fluxsupport")
    with urllib.request.urlopen(repo["status"]["artifact"]["url"], timeout=30) as response:
        data = response.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        names = set(archive.getnames())
    assert "charts/fluxsupport/Chart.yaml" in names
    assert f"{CASES_DIR}/kustomization.yaml" in names
    assert not any(name.startswith(("operator/", "tests/")) for name in names), sorted(names)
    entries = {entry["id"] for entry in status["inventory"]["entries"]}
    assert entries == {
        f"{CASE_NAMESPACE}_helmreleases-stuck_{GROUP}_SupportCase",
        f"{CASE_NAMESPACE}_upgrade-to-2-8_{GROUP}_SupportCase",
        f"_{BULLETIN}_{GROUP}_SecurityBulletin",
    }

    def all_ready() -> dict[str, dict[str, Any]] | None:
        cases = gitops.cases()
        now = time.time()
        done = ({"helmreleases-stuck", "upgrade-to-2-8"} <= set(cases)
                and not any(harness.case_problems(case, now) for case in cases.values()))
        return cases if done else None

    cases = harness.wait_for(all_ready, timeout=60, interval=0.2, what="cases Ready")
    for name, case in cases.items():
        assert case["metadata"]["managedFields"][0]["manager"] == "kustomize-controller", name
        assert case["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] == \
            gitops.kustomization
    assert cases["helmreleases-stuck"]["status"]["level"] == 2
    assert cases["upgrade-to-2-8"]["status"]["level"] == 4
    bulletin = harness.wait_for(
        lambda: (b := gitops.api.get_bulletin(BULLETIN)).get("status") and b,
        timeout=60, what="bulletin status")
    ready = harness.condition(bulletin, "Ready")
    assert ready is not None, bulletin["status"]
    assert ready["status"] == "True", bulletin["status"]


def test_severity_change_in_git_recomputes_the_deadline(gitops: GitOps) -> None:
    name = "upgrade-to-2-8"
    before = gitops.cases()[name]["status"]["firstResponse"]
    path = f"{CASES_DIR}/upgrade-question.yaml"
    gitops.checkout.write({path: gitops.checkout.read(path).replace(
        "severity: Low", "severity: Medium")})
    gitops.applied(gitops.push("upgrade question: Low -> Medium"))

    def recomputed() -> dict[str, Any] | None:
        case = gitops.cases()[name]
        return case if (case.get("status") or {}).get("level") == 3 else None

    case = harness.wait_for(recomputed, timeout=60, interval=0.2, what="level 3")
    first = case["status"]["firstResponse"]
    assert first["startedAt"] == before["startedAt"]
    assert harness.parse_time(first["deadline"]) == \
        harness.parse_time(first["startedAt"]) + harness.SESSION_TARGETS_S["Medium"]
    assert first["recalculation"] == (
        "Severity changed from Level 4 (Low) to Level 3 (Medium): deadline recomputed from "
        f"the same start, {before['deadline']} -> {first['deadline']}.")
    assert first["recalculation"] in harness.condition(case, "Ready")["message"]


def test_case_deleted_from_git_is_pruned_with_its_metrics(
        gitops: GitOps, operator: harness.OperatorProcess) -> None:
    name = "helmreleases-stuck"
    series = (f'supportcase_first_response_deadline_timestamp_seconds{{level="2",'
              f'namespace="{CASE_NAMESPACE}",supportcase="{name}"}}')
    assert series in operator.metrics()
    kustomization = yaml.safe_load(gitops.checkout.read(f"{CASES_DIR}/kustomization.yaml"))
    kustomization["resources"].remove("helmreleases-stuck.yaml")
    gitops.checkout.write({f"{CASES_DIR}/helmreleases-stuck.yaml": None,
                           f"{CASES_DIR}/kustomization.yaml": yaml.safe_dump(
                               kustomization, sort_keys=False)})
    status = gitops.applied(gitops.push("helmreleases-stuck: solved, removed"))
    assert f"{CASE_NAMESPACE}_{name}_{GROUP}_SupportCase" not in {
        entry["id"] for entry in status["inventory"]["entries"]}
    harness.wait_for(lambda: name not in gitops.cases(), timeout=60, what=f"{name} pruned")
    harness.wait_for(lambda: f'supportcase="{name}"' not in operator.metrics(), timeout=60,
                     what=f"{name} gone from the metrics")
    assert 'supportcase="upgrade-to-2-8"' in operator.metrics()


def test_invalid_case_in_git_is_the_kustomizations_failure(gitops: GitOps) -> None:
    remaining = "upgrade-to-2-8"
    before = gitops.cases()[remaining]
    invalid = yaml.safe_load(gitops.checkout.read(f"{CASES_DIR}/upgrade-question.yaml"))
    invalid["metadata"]["name"] = "blank-statement"
    invalid["spec"]["impact"]["statement"] = "   "
    kustomization = yaml.safe_load(gitops.checkout.read(f"{CASES_DIR}/kustomization.yaml"))
    kustomization["resources"].append("blank-statement.yaml")
    gitops.checkout.write({f"{CASES_DIR}/blank-statement.yaml": yaml.safe_dump(invalid),
                           f"{CASES_DIR}/kustomization.yaml": yaml.safe_dump(
                               kustomization, sort_keys=False)})
    commit = gitops.push("a case with a blank impact statement")

    def failed() -> dict[str, Any] | None:
        status = gitops.kustomization_status()
        ready = harness.condition({"status": status}, "Ready") or {}
        done = (ready.get("status") == "False"
                and str(status.get("lastAttemptedRevision", "")).endswith(commit))
        return ready if done else None

    ready = harness.wait_for(failed, timeout=TIMEOUT, interval=0.5, what="Ready=False")
    # The API server's admission (the CRD's validation) refused the case; its message is the
    # Kustomization's.
    assert "blank-statement" in ready["message"], ready
    assert "spec.impact.statement" in ready["message"], ready
    assert "blank-statement" not in gitops.cases()
    # The other case is neither pruned nor touched, and the operator still reconciles it.
    case = gitops.cases()[remaining]
    assert case["metadata"]["uid"] == before["metadata"]["uid"]
    assert not harness.case_problems(case, time.time())
    gitops.api.patch_case(CASE_NAMESPACE, remaining, {"metadata": {"annotations": {
        "support.fluxcd.controlplane.io/responded-at": harness.rfc3339(time.time())}}})
    harness.wait_for(lambda: gitops.cases()[remaining]["status"]["firstResponse"]["state"]
                     == "Met", timeout=60, what=f"{remaining} Met")
    # Removing the bad file in git recovers the Kustomization.
    gitops.checkout.write({f"{CASES_DIR}/blank-statement.yaml": None,
                           f"{CASES_DIR}/kustomization.yaml": yaml.safe_dump(
                               {**kustomization, "resources": [
                                   r for r in kustomization["resources"]
                                   if r != "blank-statement.yaml"]}, sort_keys=False)})
    gitops.applied(gitops.push("drop the invalid case"))
    assert set(gitops.cases()) == {remaining}
