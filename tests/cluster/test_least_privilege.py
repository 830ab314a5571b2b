"""Least privilege, from the API server's audit log: the operator's ServiceAccount is never
refused (no 403), and every verb the chart grants it is used, but for the exceptions below.

The node's API server logs every request of a ServiceAccount outside kube-system at Metadata
level (devcluster/node.py AUDIT_POLICY). This module runs last in the tier (conftest sorts it
there), so the log holds everything the in-cluster operator did in the other modules (installs,
upgrades, two replicas, channels, GitOps); the test adds a tour of its own, so that it holds on
its own too. The grants are read from the chart as helm renders it with the values the tier
uses (peering and both channels on), whatever the RBAC templates say.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

import pytest
import yaml

from fluxsupport.devcluster import fluxpods
from tests import fixtures, harness
from tests.cluster.conftest import (
    CHART,
    OPERATOR_NAMESPACE,
    UNINSTALLS,
    Cluster,
    OperatorImage,
    Release,
    wait_for,
)
from tests.rt import MailGateway, RequestTracker

pytestmark = pytest.mark.localnode
#: How long after an uninstall began its Pod may still be stopping.
STOPPING_S = 60.0

#: Granted, and not used in the tier, with the reason. (group, resource, verb); the group of
#: the core API is "".
UNUSED_BY_DESIGN = {
    ("", "configmaps", "delete"): "the diagnostics snapshot sweep runs every 15 minutes, on "
    "snapshots unreferenced for an hour (docs/install.md, Permissions)",
}


def granted(rendered: str, service_account: str, namespace: str) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every rule bound to the ServiceAccount in the rendered
    chart (subresources as resource/subresource)."""
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
             for d in documents if d["kind"] in ("Role", "ClusterRole")}
    grants = set()
    for binding in documents:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == service_account
                   and s.get("namespace") == namespace for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], binding["metadata"].get("namespace")
                          if ref["kind"] == "Role" else None, ref["name"]))
        assert role is not None, f"{binding['metadata']['name']} binds a role not in the chart"
        for rule in role.get("rules") or []:
            for group in rule.get("apiGroups") or [""]:
                for resource in rule.get("resources") or []:
                    for verb in rule["verbs"]:
                        grants.add((group, resource, verb))
    return grants


def audited(lines: Iterable[str], user: str) -> list[dict[str, Any]]:
    found = []
    for line in lines:
        entry = json.loads(line)
        # A watch is audited when its response starts and again only when it ends, which may
        # be after the tier; every other request when it completes.
        if entry.get("user", {}).get("username") == user and entry.get("stage") in (
                "ResponseStarted", "ResponseComplete"):
            found.append(entry)
    return found


def used(entries: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    result = set()
    for entry in entries:
        ref = entry.get("objectRef") or {}
        if not ref.get("resource"):
            continue  # discovery and /version: non-resource URLs
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource")
                                      else "")
        result.add((ref.get("apiGroup", ""), resource, entry["verb"]))
    return result


def _tour(cluster: Cluster, release: Release, image: OperatorImage, rt: RequestTracker,
          gateway: MailGateway, running: fluxpods.Running) -> None:
    """What the operator does in a day: a case submitted to RT, a case deleted (its
    diagnostics snapshot swept), a bulletin judged, the peering object kept alive."""
    local = cluster.local_node()
    cluster.apply({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "fluxsupport-channels", "namespace": OPERATOR_NAMESPACE},
                   "data": {"portal-token": base64.b64encode(rt.operator_token.encode()).decode()}})
    portal = local.forward(rt.port, tls=True)
    channels = {"cluster": "audit", "portal": {"enabled": True, "url": f"https://{portal.address}/",
                                               "caBundle": portal.ca_pem,
                                               "queue": rt.queue, "syncInterval": "1s"},
                "email": {"enabled": True, "host": local.slot.node_ip,
                          "port": local.forward(gateway.port).port, "tls": "none",
                          "from": "ops@customer.test", "to": rt.correspond_address}}
    for kind in fixtures.FLUX_OPERATOR_KINDS:  # the inventory watches them where they exist
        cluster.apply(fixtures.flux_operator_crd(kind))
    release.install(image, "--set", "peering.enabled=true",
                    "--set-json", f"policy.channels={json.dumps(channels)}",
                    command="upgrade" if release.pods() else "install")
    namespace = f"audit-{uuid.uuid4().hex[:6]}"
    cluster.ensure_namespace(namespace)
    cluster.apply(harness.case_manifest("tour", namespace, "Medium"))
    wait_for(lambda: (cluster.json("get", "supportcase", "tour", "-n", namespace).get("status")
                      or {}).get("submission", {}).get("ticketId"), timeout=120,
             what="the tour case in RT")
    cluster.apply(fixtures.bulletin_for(
        "cpsb-audit", "CVE-2026-90004", "source-controller",
        {"name": "localhost/source-controller", "newTag": running.image.rsplit(":", 1)[-1],
         "digest": running.digest}))
    wait_for(lambda: (cluster.json("get", "securitybulletin", "cpsb-audit").get("status") or {})
             .get("components"), timeout=60, what="the tour bulletin judged")
    cluster.kubectl("delete", "supportcase", "tour", "-n", namespace)
    cluster.kubectl("delete", "securitybulletin", "cpsb-audit")
    time.sleep(5)  # the audit log is written as requests complete


def test_the_service_account_is_never_refused_and_uses_what_it_is_granted(
        cluster: Cluster, operator_image: OperatorImage, rt: RequestTracker,
        gateway: MailGateway, flux_pods: dict[str, fluxpods.Running], figure: Any) -> None:
    local = cluster.local_node()
    cluster.ensure_namespace(OPERATOR_NAMESPACE)
    release = Release(cluster, "fluxsupport")
    try:
        _tour(cluster, release, operator_image, rt, gateway, flux_pods["source-controller"])
    finally:
        release.uninstall()
        for kind in fixtures.FLUX_OPERATOR_KINDS:
            cluster.kubectl("delete", "crd", fixtures.flux_operator_crd(kind)["metadata"]["name"],
                            "--ignore-not-found")
    rendered = cluster.helm(
        "template", release.name, str(CHART), "--namespace", OPERATOR_NAMESPACE,
        "--set", "peering.enabled=true", "--set", "policy.channels.portal.enabled=true",
        "--set", "policy.channels.portal.url=https://rt.example/",
        "--set", "policy.channels.email.enabled=true",
        "--set", "policy.channels.email.host=smtp.example",
        "--set", "policy.channels.email.from=ops@customer.test",
        "--set", "policy.channels.email.to=support@vendor.test").stdout
    account = release.service_account.rsplit(":", 1)[1]
    grants = granted(rendered, account, OPERATOR_NAMESPACE)
    entries = audited(local.audit_log.read_text().splitlines(), release.service_account)
    assert entries, f"no request of {release.service_account} in {local.audit_log}"
    refused = [e for e in entries if e.get("responseStatus", {}).get("code") == 403]
    # helm uninstall deletes the RBAC objects while the Pod stops: its last requests (kopf
    # removing its peering keep-alive) may be refused then, and only then.
    stopping = [e for e in refused if any(
        0 <= harness.parse_time(e["stageTimestamp"]) - began <= STOPPING_S
        for began in UNINSTALLS)]
    running = [f"{e['verb']} {e['requestURI']} at {e['stageTimestamp']}" for e in refused
               if e not in stopping]
    assert not running, "refused with 403:\n" + "\n".join(sorted(set(running)))
    seen = used(entries)
    beyond = {g for g in seen if g not in grants and not any(
        (group, resource) == g[:2] and verb == "*" for group, resource, verb in grants)}
    assert not beyond, f"used without a grant (and not refused?): {sorted(beyond)}"
    unused = grants - seen - set(UNUSED_BY_DESIGN)
    assert not unused, ("granted but never used in the tier; drop the grant or add it to "
                        f"UNUSED_BY_DESIGN with the reason: {sorted(unused)}")
    figure(f"audit log: {len(entries)} requests of {release.service_account}, none refused "
           f"while it ran ({len(stopping)} refused while helm uninstall removed its RBAC); "
           f"{len(seen)} of {len(grants)} granted (group, resource, verb) used, "
           f"{len(grants - seen)} unused by design")
