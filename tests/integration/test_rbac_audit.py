"""Least privilege, measured: the API server's audit log of the operator's ServiceAccount.

A kube-apiserver of this module's own writes an audit log of every request the operator's
ServiceAccount makes (devcluster's ``audit_policy``). The chart is installed there with helm,
every feature on (peering, the advisory feed, the update check, the email channel), and the
operator runs with a token of the chart's ServiceAccount and the policy the chart renders. The
test drives every controller path: SupportCases submitted by email, breached, answered, with a
diagnostics snapshot; a SecurityBulletin; the advisory feed creating bulletins from a real
source-controller's artifact, meeting a person's bulletin of the same name, and updating one
whose advisory changed; the FluxUpdateCheck; the Flux inventory with FluxInstances and
FluxReports; Events. Then the audit log must show

* no request of the ServiceAccount refused (403), and
* every verb the chart grants the ServiceAccount used at least once, except EXCEPTIONS: verbs
  of paths no test run reaches, each with its reason (docs/install.md lists them too).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pathlib
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from fluxsupport.constants import ADVISORY_FEED_LABEL, GROUP, RESPONDED_AT
from fluxsupport.devcluster import build, cluster, flux, mailbox
from tests import fixtures, gitsource, harness

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "fluxsupport"
RELEASE = "fluxsupport"
NAMESPACE = "fluxsupport-system"
OPERATOR = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
SOURCE = "flux-data"
SECRET = "fluxsupport-channels"
#: An advisory whose bulletin a person wrote first: the feed's create meets 409, then it reads
#: the bulletin (get) and leaves it alone.
PERSONS = "GHSA-j77r-2fxf-5jrw"
#: An advisory changed in a second commit: the feed updates its bulletin.
MODIFIED = "GHSA-v554-xwgw-hc3w"

#: Verbs the chart grants that no run of this test uses, each with why it is granted. Keep in
#: step with docs/install.md ("Permissions").
EXCEPTIONS: dict[tuple[str, str, str], str] = {
    ("", "configmaps", "delete"):
        "the sweep deletes diagnostics snapshots that no case references once they are an "
        "hour old, every 15 minutes",
    (GROUP, "fluxupdatechecks", "get"):
        "reads the FluxUpdateCheck back when its create meets 409 because another replica "
        "created it between the watch's list and the create",
}

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
    # ResponseStarted marks a watch when it starts; ResponseComplete every other request.
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "users": [OPERATOR]}, {"level": "None"}],
}

def chart_values(smtp_port: int) -> dict[str, Any]:
    """Every feature on; the session's 24x7 policy with Urgent due in 4 s."""
    source = {"sourceRef": {"kind": "GitRepository", "name": SOURCE}}
    return {
        "peering": {"enabled": True},
        "fluxNamespaces": [flux.RUNTIME_NAMESPACE],
        "policy": {
            "timezone": "UTC", "holidays": "", "businessHours": {"alwaysOpen": True},
            "targets": {"Urgent": "4s", "High": "1h", "Medium": "2h", "Low": "3h"},
            "warningRatio": 0.5, "updates": source, "advisories": source,
            "channels": {"cluster": "audited", "secretName": SECRET, "email": {
                "enabled": True, "host": "127.0.0.1", "port": smtp_port, "tls": "none",
                "from": "flux-ops@customer.test", "to": "support@vendor.test",
                "timeout": "5s"}},
        },
    }


@dataclasses.dataclass(frozen=True)
class Grant:
    """One verb on one resource that a Role or ClusterRole bound to the operator grants."""

    group: str
    resource: str  # with /subresource
    verb: str
    namespace: str | None  # None: cluster-wide (a ClusterRoleBinding)
    names: tuple[str, ...] = ()

    def allows(self, event: dict[str, Any]) -> bool:
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "")
        if ref.get("subresource"):
            resource += f"/{ref['subresource']}"
        return (event["verb"] == self.verb and ref.get("apiGroup", "") == self.group
                and resource == self.resource
                and (self.namespace is None or ref.get("namespace") == self.namespace)
                and (not self.names or ref.get("name") in self.names))

    def __str__(self) -> str:
        where = f"in {self.namespace}" if self.namespace else "cluster-wide"
        names = f" {list(self.names)}" if self.names else ""
        return f"{self.verb} {self.group or 'core'}/{self.resource}{names} {where}"


def granted(kubeconfig: pathlib.Path) -> list[Grant]:
    """What the bindings of the operator's ServiceAccount grant, as the API server has them."""
    def get(*args: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(
            harness.kubectl(kubeconfig, "get", *args, "-o", "json").stdout)["items"]
        return items

    roles = {(None, r["metadata"]["name"]): r for r in get("clusterroles")}
    roles.update({(r["metadata"]["namespace"], r["metadata"]["name"]): r
                  for r in get("roles", "--all-namespaces")})
    grants = []
    for binding in get("clusterrolebindings,rolebindings", "--all-namespaces"):
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == RELEASE
                   and s.get("namespace") == NAMESPACE for s in binding.get("subjects") or []):
            continue
        namespace = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        role = roles[(None if ref["kind"] == "ClusterRole" else namespace, ref["name"])]
        for rule in role.get("rules") or []:
            grants += [Grant(group, resource, verb, namespace,
                             tuple(rule.get("resourceNames") or ()))
                       for group in rule.get("apiGroups") or []
                       for resource in rule.get("resources") or []
                       for verb in rule.get("verbs") or []]
    return grants


def operator_requests(plane: cluster.ControlPlane) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in plane.audit_log.read_text().splitlines() if line]
    return [e for e in events if (e.get("user") or {}).get("username") == OPERATOR]


@dataclasses.dataclass
class Audited:
    plane: cluster.ControlPlane
    api: harness.Api
    kubeconfig: pathlib.Path
    operator_kubeconfig: pathlib.Path
    policy: pathlib.Path
    mailbox: mailbox.Mailbox


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audited]:
    """A control plane with an audit log, the chart installed with every feature on, and a
    kubeconfig with a token of its ServiceAccount."""
    build.build_all(("etcd", "kube-apiserver"))
    workdir = tmp_path_factory.mktemp("audited")
    policy_file = workdir / "audit-policy.yaml"
    policy_file.write_text(yaml.safe_dump(AUDIT_POLICY))
    plane = cluster.ControlPlane(workdir / "plane", attached=True, audit_policy=policy_file)
    plane.prepare()
    smtp = mailbox.Mailbox()
    smtp.start()
    try:
        plane.start()
        kubeconfig = plane.kubeconfig
        harness.install_crds(kubeconfig)
        flux.install_crds(kubeconfig)
        harness.kubectl(kubeconfig, "apply", "-f", "-", input_text=json.dumps(
            {"apiVersion": "v1", "kind": "List",
             "items": [fixtures.flux_operator_crd(kind) for kind in fixtures.FLUX_OPERATOR_KINDS]}))
        harness.kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
                        *(f"crd/{kind.lower()}s.fluxcd.controlplane.io"
                          for kind in fixtures.FLUX_OPERATOR_KINDS))
        api = harness.Api(kubeconfig)
        for namespace in (flux.RUNTIME_NAMESPACE, NAMESPACE):
            harness.ensure_namespace(api, namespace)
        values = workdir / "values.yaml"
        values.write_text(yaml.safe_dump(chart_values(smtp.port)))
        installed = harness.helm(kubeconfig, "install", RELEASE, str(CHART), "--namespace",
                                 NAMESPACE, "--skip-crds", "-f", str(values))
        assert installed.returncode == 0, installed.stderr
        # The channels' Secret (the chart names it; people create it). No SMTP login to the
        # loopback server, so it holds the portal's key only.
        api.core.create_namespaced_secret(NAMESPACE, {
            "metadata": {"name": SECRET},
            "data": {"portal-token": base64.b64encode(b"unused").decode()}})
        # The policy the Deployment mounts: the chart's rendered ConfigMap.
        rendered = api.core.read_namespaced_config_map(f"{RELEASE}-policy", NAMESPACE)
        policy = workdir / "policy.yaml"
        policy.write_text(rendered.data["policy.yaml"])
        token = harness.service_account_token(api, NAMESPACE, RELEASE)
        operator_kubeconfig = harness.token_kubeconfig(kubeconfig, token,
                                                       workdir / "operator-kubeconfig", RELEASE)
        assert harness.whoami(operator_kubeconfig) == OPERATOR
        yield Audited(plane, api, kubeconfig, operator_kubeconfig, policy, smtp)
    finally:
        smtp.stop()
        plane.stop()


def fill(path: pathlib.Path) -> None:
    """The release data (images/) and the advisories (advisories/) in one repository."""
    shutil.copytree(fixtures.UPSTREAM / "images", path / "images")
    shutil.copytree(fixtures.UPSTREAM / "advisories", path / "advisories")


def feed_bulletins(api: harness.Api) -> dict[str, dict[str, Any]]:
    listing = api.custom.list_cluster_custom_object(
        GROUP, "v1alpha1", "securitybulletins",
        label_selector=f"{ADVISORY_FEED_LABEL}={flux.RUNTIME_NAMESPACE}.{SOURCE}")
    return {item["metadata"]["name"]: item for item in listing["items"]}


def exercise(audited: Audited, checkout: flux.Checkout) -> None:
    """Every controller path, each waited for through what it writes."""
    api = audited.api
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    api.create_namespace(namespace)
    # SupportCases: one breaches (Urgent, 4 s) after it went by email, one is answered.
    api.create_case(namespace, harness.case_manifest("urgent", namespace, "Urgent"))
    api.create_case(namespace, harness.case_manifest("answered", namespace, "High"))
    harness.wait_for(lambda: len(audited.mailbox.messages) >= 2, timeout=60,
                     what="both cases sent by email")
    api.patch_case(namespace, "answered", {"metadata": {"annotations": {
        RESPONDED_AT: harness.rfc3339(time.time())}}})

    def state(name: str) -> str:
        return str(((api.get_case(namespace, name).get("status") or {}).get(
            "firstResponse") or {}).get("state"))

    harness.wait_for(lambda: state("urgent") == "Breached", timeout=60, what="the breach")
    harness.wait_for(lambda: state("answered") == "Met", timeout=60, what="the response")
    snapshot = (api.get_case(namespace, "answered")["status"].get("diagnostics") or {}).get(
        "snapshot")
    assert snapshot, "the diagnostics went into a snapshot ConfigMap"
    # A SecurityBulletin written by a person.
    entry = fixtures.images(fixtures.FIX_V275)["source-controller"]
    bulletin = f"audit-{uuid.uuid4().hex[:8]}"
    api.create_bulletin(fixtures.bulletin_for(bulletin, "CVE-2026-47680",
                                              "source-controller", entry))
    harness.wait_for(lambda: harness.condition(api.get_bulletin(bulletin), "Ready"),
                     timeout=60, what="the bulletin's status")
    # The feed: every advisory with a Flux component, but the person's.
    harness.wait_for(lambda: len(feed_bulletins(api)) >= 4, timeout=120, interval=0.5,
                     what="the feed's bulletins")
    assert PERSONS.lower() not in feed_bulletins(api)
    modified = json.loads((fixtures.UPSTREAM / "advisories" / f"{MODIFIED}.json").read_text())
    modified["modified"] = "2026-12-01T00:00:00Z"
    checkout.write({f"advisories/{MODIFIED}.json": json.dumps(modified, indent=2)})
    checkout.commit(f"{MODIFIED}: modified")
    harness.wait_for(lambda: feed_bulletins(api).get(MODIFIED.lower(), {}).get(
        "spec", {}).get("advisory", {}).get("modified") == "2026-12-01T00:00:00Z",
        timeout=120, interval=0.5, what="the modified advisory's bulletin updated")
    # The update check, created and reconciled by the operator.
    harness.wait_for(lambda: harness.condition(api.custom.get_cluster_custom_object(
        GROUP, "v1alpha1", "fluxupdatechecks", "cluster"), "Ready"), timeout=120,
        interval=0.5, what="the FluxUpdateCheck's status")
    # A FluxInstance for the inventory's watch; Events of the cases and the bulletin posted.
    instance = {"apiVersion": "fluxcd.controlplane.io/v1", "kind": "FluxInstance",
                "metadata": {"name": "flux", "namespace": flux.RUNTIME_NAMESPACE},
                "spec": {"distribution": {"version": "2.9.x",
                                          "registry": "ghcr.io/controlplaneio-fluxcd/distroless"}}}
    api.custom.create_namespaced_custom_object("fluxcd.controlplane.io", "v1",
                                               flux.RUNTIME_NAMESPACE, "fluxinstances",
                                               instance)
    harness.wait_for(lambda: not (api.get_case(namespace, "urgent").get("status") or {}).get(
        "pendingEvents"), timeout=60, what="the breach's Events posted")
    assert [e.reason for e in api.events_for(namespace, "urgent")
            if e.reason == "FirstResponseBreached"]


def test_the_operator_is_refused_nothing_and_uses_every_verb_the_chart_grants(
        audited: Audited, tmp_path: pathlib.Path, figures: Callable[[str], None]) -> None:
    api = audited.api
    # A person's bulletin named like an advisory: the feed's create meets 409 and reads it.
    api.create_bulletin(fixtures.bulletin_for(
        PERSONS.lower(), "CVE-2023-33111", "source-controller",
        fixtures.release_images("v2.9.4", "enterprise-distroless")["source-controller"]))
    operator = harness.OperatorProcess(
        audited.operator_kubeconfig, tmp_path, name="operator-audited",
        extra_args=("--policy", str(audited.policy), "--peering", "--namespace", NAMESPACE,
                    "--flux-namespace", flux.RUNTIME_NAMESPACE))
    with harness.flux_inventory(api, fixtures.images(fixtures.FIX_V275)), \
            gitsource.served(audited.kubeconfig, tmp_path, SOURCE, fill,
                             "release data and advisories") as checkout:
        started = time.monotonic()
        operator.start()
        try:
            exercise(audited, checkout)
        finally:
            operator.stop()  # a clean stop: the keep-alive leaves the peering object
        figures(f"every controller path exercised in {time.monotonic() - started:.0f} s")
    assert "Traceback" not in operator.log_text(), operator.log_tail(100)

    requests = operator_requests(audited.plane)
    refused = sorted({f"{e['verb']} {e.get('requestURI')}" for e in requests
                      if (e.get("responseStatus") or {}).get("code") == 403})
    assert not refused, f"the operator was refused: {refused}"
    grants = granted(audited.kubeconfig)
    assert grants, "the chart binds roles to the ServiceAccount"
    unused = sorted({str(grant) for grant in grants
                     if not any(grant.allows(event) for event in requests)
                     and (grant.group, grant.resource, grant.verb) not in EXCEPTIONS})
    assert not unused, f"granted but never used: {unused}"
    listed = {(g.group, g.resource, g.verb) for g in grants}
    assert set(EXCEPTIONS) <= listed, "an exception the chart no longer grants"
    verbs = sorted({(e.get("objectRef") or {}).get("resource", "") + " " + e["verb"]
                    for e in requests if e.get("objectRef")})
    figures(f"{len(requests)} audited requests of the operator, 0 refused; "
            f"{len(listed)} granted verbs, {len(EXCEPTIONS)} documented exceptions; "
            f"used: {', '.join(verbs)}")


def test_the_exceptions_are_documented() -> None:
    text = (ROOT / "docs" / "install.md").read_text()
    for group, resource, verb in EXCEPTIONS:
        assert f"`{verb}` on `{resource}`" in text, (group, resource, verb)
