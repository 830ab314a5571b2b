"""Diagnostics snapshots: named after their content, created once, swept when unreferenced."""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

import pytest

from fluxsupport.controllers import snapshots
from fluxsupport.domain import diagnostics
from fluxsupport.kube import api

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


class FakeClient:
    """Records requests; answers a POST of an existing name with 409, as the API server does."""

    def __init__(self, existing: list[dict[str, Any]] | None = None) -> None:
        self.existing = {item["metadata"]["name"]: item for item in existing or []}
        self.requests: list[tuple[str, str]] = []

    async def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.requests.append((method, path))
        if method == "POST":
            name = body["metadata"]["name"]
            if name in self.existing:
                raise api.ApiError(409, "already exists")
            self.existing[name] = {**body, "metadata": {
                **body["metadata"], "creationTimestamp": "2026-12-02T10:00:00Z"}}
            return body
        if method == "GET":
            assert "labelSelector=" in path
            return {"items": list(self.existing.values())}
        if method == "DELETE":
            self.existing.pop(path.rsplit("/", 1)[1], None)
            return {}
        raise AssertionError(method)


def test_ensure_creates_an_immutable_configmap_once() -> None:
    client = FakeClient()
    store = snapshots.Snapshots(client, "fluxsupport-system")  # type: ignore[arg-type]
    name = asyncio.run(store.ensure(dict(COLLECTED)))
    assert asyncio.run(store.ensure(dict(COLLECTED))) == name
    assert [m for m, _ in client.requests] == ["POST"], "known names are not posted again"
    created = client.existing[name]
    assert created["immutable"] is True
    assert created["metadata"]["labels"][snapshots.LABEL] == "snapshot"

    # A restarted operator (empty memory) meets the existing one: 409 is success.
    again = snapshots.Snapshots(client, "fluxsupport-system")  # type: ignore[arg-type]
    assert asyncio.run(again.ensure(dict(COLLECTED))) == name


@pytest.mark.parametrize(("age_s", "referenced", "deleted"), [
    (7200, False, True), (7200, True, False), (60, False, False)])
def test_sweep_deletes_only_old_unreferenced_snapshots(age_s: int, referenced: bool,
                                                        deleted: bool) -> None:
    client = FakeClient()
    store = snapshots.Snapshots(client, "fluxsupport-system")  # type: ignore[arg-type]
    name = asyncio.run(store.ensure(dict(COLLECTED)))
    now = datetime.datetime(2026, 12, 2, 10, tzinfo=datetime.UTC) + datetime.timedelta(
        seconds=age_s)
    gone = asyncio.run(store.sweep({name} if referenced else set(), now))
    assert (gone == [name]) is deleted
    assert (name not in client.existing) is deleted
