"""Upgrade from the previous release: the chart and CRDs of commit 15476e4
(tests/data/previous-release), installed with helm; cases and bulletins created under it; then
the current CRDs applied and `helm upgrade` to the current chart, `helm rollback` and
`helm uninstall`. Statuses are kept and nothing is sent twice through any of it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fluxsupport.devcluster import fluxpods
from tests import fixtures, harness
from tests.cluster.conftest import (
    CHART,
    OPERATOR_NAMESPACE,
    Cluster,
    OperatorImage,
    Release,
    wait_for,
)

PREVIOUS = harness.ROOT / "tests" / "data" / "previous-release" / "fluxsupport-15476e4"
CRDS = ("supportcases.support.fluxcd.controlplane.io",
        "securitybulletins.support.fluxcd.controlplane.io",
        "fluxupdatechecks.support.fluxcd.controlplane.io", "clusterkopfpeerings.kopf.dev")
NAMESPACE = "team-upgrade"


@pytest.fixture(scope="module")
def previous(cluster: Cluster, operator_image: OperatorImage,
             flux_pods: dict[str, fluxpods.Running]) -> Iterator[Release]:
    """The previous release installed on a cluster without the CRDs, so that helm creates the
    previous ones from its crds/."""
    cluster.kubectl("delete", "crd", *CRDS, "--ignore-not-found", "--wait=true", timeout=240)
    cluster.ensure_namespace(OPERATOR_NAMESPACE)
    release = Release(cluster, "fluxsupport")
    try:
        yield release
    finally:
        release.uninstall()
        # The later tests expect the current CRDs.
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                        str(CHART / "crds"))


def _objects(cluster: Cluster) -> dict[str, dict[str, Any]]:
    cases = cluster.json("get", "supportcases", "-n", NAMESPACE)["items"]
    bulletins = cluster.json("get", "securitybulletins")["items"]
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in [*cases, *bulletins]}


def _events(cluster: Cluster) -> list[tuple[str, str, str, int]]:
    items = [*cluster.json("get", "events", "-n", NAMESPACE)["items"],
             *cluster.json("get", "events", "-n", "default")["items"]]
    return sorted((e["involvedObject"]["name"], e["reason"], e["message"], e.get("count") or 1)
                  for e in items if e["involvedObject"].get("kind") in
                  ("SupportCase", "SecurityBulletin"))


def _kept(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[str]:
    """What changed in the objects' statuses besides the times a reconcile writes."""
    problems = []
    for key, old in before.items():
        new = after.get(key)
        if new is None:
            problems.append(f"{key} is gone")
            continue
        if old["metadata"]["uid"] != new["metadata"]["uid"]:
            problems.append(f"{key} was recreated")
        if old["kind"] == "SupportCase":
            for field in ("deadline", "state", "breachedAt"):
                if old["status"]["firstResponse"].get(field) != new["status"][
                        "firstResponse"].get(field):
                    problems.append(f"{key} firstResponse.{field}: "
                                    f"{old['status']['firstResponse'].get(field)} -> "
                                    f"{new['status']['firstResponse'].get(field)}")
        else:
            verdicts = [(c["component"], c["verdict"]) for c in old["status"]["components"]]
            if verdicts != [(c["component"], c["verdict"])
                            for c in new["status"]["components"]]:
                problems.append(f"{key} verdicts changed")
        ready = harness.condition(new, "Ready")
        if ready is None or ready["status"] != "True":
            problems.append(f"{key} Ready {ready}")
    return problems


def _valid(cluster: Cluster) -> None:
    """Every object passes the installed CRDs' schema again (a server-side dry-run apply of
    its own spec)."""
    for obj in _objects(cluster).values():
        body = {key: obj[key] for key in ("apiVersion", "kind", "spec")}
        body["metadata"] = {k: obj["metadata"][k] for k in ("name", "namespace")
                            if k in obj["metadata"]}
        cluster.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=check",
                        "--force-conflicts", "-f", "-", input_text=json.dumps(body))


def test_upgrade_rollback_and_uninstall_keep_every_object_and_send_nothing_twice(
        cluster: Cluster, previous: Release, operator_image: OperatorImage,
        flux_pods: dict[str, fluxpods.Running], figure: Any) -> None:
    installed = previous.install(operator_image, chart=PREVIOUS)
    pod = previous.ready_pods()[0]
    assert "startupProbe" not in pod["spec"]["containers"][0]  # the previous chart's Pod
    cluster.ensure_namespace(NAMESPACE)
    for name in ("upgrade-high", "upgrade-low"):
        cluster.apply(harness.case_manifest(name, NAMESPACE,
                                            "High" if name.endswith("high") else "Low"))
    running = flux_pods["source-controller"]
    cluster.apply(fixtures.bulletin_for(
        "cpsb-upgrade", "CVE-2026-90003", "source-controller",
        {"name": "localhost/source-controller", "newTag": running.image.rsplit(":", 1)[-1],
         "digest": running.digest}))

    def settled() -> dict[str, dict[str, Any]] | None:
        objects = _objects(cluster)
        ready = [o for o in objects.values() if (harness.condition(o, "Ready") or {}).get(
            "status") == "True" and (o.get("status") or {}).get("observedGeneration")
            == o["metadata"]["generation"]]
        return objects if len(ready) == 3 else None

    before = wait_for(settled, timeout=90, what="cases and bulletin reconciled")
    events = wait_for(lambda: _events(cluster), timeout=30, what="Events")
    time.sleep(2)
    events = _events(cluster)

    started = time.monotonic()
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    previous.install(operator_image, command="upgrade")
    upgraded = time.monotonic() - started
    pod = previous.ready_pods()[0]
    assert "startupProbe" in pod["spec"]["containers"][0]
    after = wait_for(settled, timeout=90, what="objects Ready after the upgrade")
    assert not _kept(before, after), _kept(before, after)
    _valid(cluster)
    time.sleep(3)  # what the new operator would re-send, it sends at its first reconcile
    assert _events(cluster) == events

    started = time.monotonic()
    cluster.helm("rollback", previous.name, "1", "--namespace", OPERATOR_NAMESPACE, "--wait",
                 "--timeout", "240s")
    rolled_back = time.monotonic() - started
    wait_for(lambda: [p for p in previous.ready_pods()
                      if "startupProbe" not in p["spec"]["containers"][0]],
             timeout=120, what="the previous chart's Pod Ready again")
    after = wait_for(settled, timeout=90, what="objects Ready after the rollback")
    assert not _kept(before, after), _kept(before, after)
    time.sleep(3)
    assert _events(cluster) == events

    previous.uninstall()
    kept = _objects(cluster)
    assert set(kept) == set(before), "helm uninstall deletes no case or bulletin"
    for crd in CRDS:
        cluster.kubectl("get", "crd", crd)
    assert cluster.kubectl("get", "clusterrole", "fluxsupport", check=False).returncode != 0
    assert cluster.kubectl("get", "deployment", "fluxsupport", "-n", OPERATOR_NAMESPACE,
                           check=False).returncode != 0
    figure(f"previous chart (15476e4) install {installed:.1f} s; CRDs + helm upgrade "
           f"{upgraded:.1f} s; rollback {rolled_back:.1f} s; {len(before)} objects kept with "
           f"their statuses, {len(events)} Events before and after, none re-sent; uninstall "
           "kept the CRDs, cases and bulletins")
