"""Diagnostics snapshots: named after their content, created once, swept when unreferenced."""

from __future__ import annotations

import asyncio
import datetime
import json

import pytest

from fluxsupport.controllers import snapshots
from fluxsupport.domain import diagnostics
from tests import fakes

DIGEST = "sha256:" + "1" * 64
COLLECTED = {
    "collectedAt": "2026-12-02T10:00:00Z", "request": "", "kubernetesVersion": "v1.36.3",
    "fluxVersion": "v2.7.5", "components": [
        {"name": "source-controller", "namespace": "flux-system",
         "component": "source-controller", "image": f"ghcr.io/x/source-controller:v1.7.4@{DIGEST}",
         "digests": [DIGEST], "version": "v1.7.4", "ready": True},
        {"name": "helm-controller", "namespace": "flux-system", "component": "helm-controller",
         "image": "ghcr.io/x/helm-controller:v1.4.5", "digests": [], "version": "v1.4.5",
         "ready": False}]}


def test_the_name_follows_the_content_not_when_or_why_it_was_collected() -> None:
    later = {**COLLECTED, "collectedAt": "2026-12-03T10:00:00Z", "request": "again"}
    assert diagnostics.snapshot_name(later) == diagnostics.snapshot_name(COLLECTED)
    upgraded = json.loads(json.dumps(COLLECTED))
    upgraded["components"][0]["digests"] = ["sha256:" + "2" * 64]
    assert diagnostics.snapshot_name(upgraded) != diagnostics.snapshot_name(COLLECTED)
    name = diagnostics.snapshot_name(COLLECTED)
    assert name.startswith(diagnostics.PREFIX)
    assert len(name) <= 63


def test_the_case_keeps_versions_and_readiness_and_points_at_the_rest() -> None:
    block = diagnostics.referencing(COLLECTED, "fluxsupport-diagnostics-x")
    assert block == {"request": "", "collectedAt": "2026-12-02T10:00:00Z",
                     "kubernetesVersion": "v1.36.3", "fluxVersion": "v2.7.5",
                     "snapshot": "fluxsupport-diagnostics-x",
                     "summary": ["source-controller v1.7.4",
                                 "helm-controller v1.4.5 (not ready)"]}
    stored = json.loads(diagnostics.snapshot_data(COLLECTED)[diagnostics.KEY])
    assert stored["components"] == COLLECTED["components"]
    assert "collectedAt" not in stored


#: Where the snapshots live in the fake API server.
CONFIGMAPS = "/api/v1/namespaces/fluxsupport-system/configmaps"


def test_ensure_creates_an_immutable_configmap_once() -> None:
    client = fakes.FakeClient()
    store = snapshots.Snapshots(client, "fluxsupport-system")
    name = asyncio.run(store.ensure(dict(COLLECTED)))
    assert asyncio.run(store.ensure(dict(COLLECTED))) == name
    assert [m for m, _ in client.requests] == ["POST"], "known names are not posted again"
    created = client.named(CONFIGMAPS)[name]
    assert created["immutable"] is True
    assert created["metadata"]["labels"][snapshots.LABEL] == "snapshot"

    # A restarted operator (empty memory) meets the existing one: 409 is success.
    again = snapshots.Snapshots(client, "fluxsupport-system")
    assert asyncio.run(again.ensure(dict(COLLECTED))) == name


@pytest.mark.parametrize(("age_s", "referenced", "deleted"), [
    (7200, False, True), (7200, True, False), (60, False, False)])
def test_sweep_deletes_only_old_unreferenced_snapshots(age_s: int, referenced: bool,
                                                        deleted: bool) -> None:
    client = fakes.FakeClient()
    store = snapshots.Snapshots(client, "fluxsupport-system")
    name = asyncio.run(store.ensure(dict(COLLECTED)))
    now = datetime.datetime(2026, 12, 2, 10, tzinfo=datetime.UTC) + datetime.timedelta(
        seconds=age_s)
    gone = asyncio.run(store.sweep({name} if referenced else set(), now))
    assert (gone == [name]) is deleted
    assert (name not in client.named(CONFIGMAPS)) is deleted


def test_a_snapshot_deleted_under_its_cases_is_found_and_made_again() -> None:
    """Deleted by hand, or by the other replica's sweep: the check names it, forgets that it
    existed, and the next ensure() creates it again instead of trusting its memory."""
    client = fakes.FakeClient()
    store = snapshots.Snapshots(client, "fluxsupport-system")
    name = asyncio.run(store.ensure(dict(COLLECTED)))
    assert asyncio.run(store.check({name})) == set()
    del client.objects[f"{CONFIGMAPS}/{name}"]
    assert asyncio.run(store.check({name, "fluxsupport-diagnostics-other"})) == {
        name, "fluxsupport-diagnostics-other"}
    assert asyncio.run(store.ensure(dict(COLLECTED))) == name
    assert name in client.named(CONFIGMAPS)
    assert [m for m, _ in client.requests] == ["POST", "GET", "GET", "POST"]


def test_cases_naming_a_lost_snapshot_collect_again_and_point_at_one_that_exists(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The run loop finds the snapshot gone and tells the case controller, whose next
    reconcile of the cases naming it collects their diagnostics again: the same Flux gives
    the same name, made again; a changed Flux a new snapshot the case then names."""
    from fluxsupport.controllers.supportcase import CaseController
    from fluxsupport.domain.policy import Policy
    from tests import channelkit

    inventory = json.loads(json.dumps(COLLECTED))

    async def scenario() -> tuple[str, str, str, bool, int, set[str]]:
        kube = channelkit.fake_kube()
        store = snapshots.Snapshots(kube, "fluxsupport-system")
        cases = CaseController(Policy(), kube,
                               diagnostics=lambda: json.loads(json.dumps(inventory)),
                               snapshots=store)
        scheduler = asyncio.create_task(cases.scheduler.run())
        keys = [await channelkit.add(cases, channelkit.case_body(name)) for name in "ab"]
        first = cases.cases[keys[0]].status["diagnostics"]["snapshot"]
        checking = asyncio.create_task(store.run_sweeps(cases.snapshots_referenced,
                                                        lost=cases.snapshots_lost))
        try:
            del kube.objects[f"{CONFIGMAPS}/{first}"]  # by hand
            for _ in range(200):
                await asyncio.sleep(0.01)
                if first in kube.named(CONFIGMAPS):
                    break
            again = first in kube.named(CONFIGMAPS)
            # Flux changed meanwhile, and the snapshot goes again: the cases move on.
            inventory["components"][0]["digests"] = ["sha256:" + "2" * 64]
            del kube.objects[f"{CONFIGMAPS}/{first}"]
            for _ in range(200):
                await asyncio.sleep(0.01)
                named = {cases.cases[key].status["diagnostics"]["snapshot"] for key in keys}
                if named != {first}:
                    break
            second = cases.cases[keys[1]].status["diagnostics"]["snapshot"]
            return (first, second, cases.cases[keys[0]].status["diagnostics"]["snapshot"],
                    again, len(cases._recollect), set(kube.named(CONFIGMAPS)))
        finally:
            checking.cancel()
            scheduler.cancel()

    monkeypatch.setattr(snapshots, "CHECK_INTERVAL_S", 0.02)
    first, second, other, again, pending, existing = asyncio.run(scenario())
    assert again, "the deleted snapshot was not made again"
    assert second != first
    assert other == second
    assert existing == {second}
    assert pending == 0
