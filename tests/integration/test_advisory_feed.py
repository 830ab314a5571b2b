"""The advisory feed on the real API server with Flux's real source-controller (`make flux`):
the vendored advisories committed to a loopback git server, fetched by source-controller into an
artifact, and turned into SecurityBulletins by an operator that runs with exactly the chart's
RBAC for `policy.advisories`. A restart writes nothing, a modified advisory updates exactly its
bulletin, an invalid file is named in a Warning while the rest import, a removed advisory keeps
its bulletin, and a person's bulletin of the same name is left alone. Then a thousand generated
advisories in a repository of realistic size (about 5 MB as an artifact) all become
bulletins."""

from __future__ import annotations

import contextlib
import json
import pathlib
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from fluxsupport.constants import ADVISORY_FEED_LABEL, ADVISORY_REVISION, GROUP, VERSION
from fluxsupport.devcluster import flux
from tests import fixtures, gitsource, harness, realsize

ADVISORIES = fixtures.UPSTREAM / "advisories"
SOURCE = "flux-advisories"
LABEL = f"{flux.RUNTIME_NAMESPACE}.{SOURCE}"
#: Written by a person before the feed starts: the feed must leave it alone.
PERSONS = "ghsa-j77r-2fxf-5jrw"
#: Held back from the first commit, added with the invalid file.
LATER = "GHSA-7pwf-jg34-hxwp"
MODIFIED = "GHSA-v554-xwgw-hc3w"
#: Removed from the feed in the last commit; its bulletin stays.
REMOVED = "GHSA-35rf-v2jv-gfg7"
FIRST = ["ghsa-35rf-v2jv-gfg7", "ghsa-4xh5-jcj2-ch8q", "ghsa-v554-xwgw-hc3w",
         "ghsa-vvmq-fwmg-2gjc"]
ALL_NAMES = sorted({p.stem.lower() for p in ADVISORIES.glob("*.json")})


def feed_bulletins(api: harness.Api) -> dict[str, dict[str, Any]]:
    listing = api.custom.list_cluster_custom_object(
        GROUP, VERSION, "securitybulletins", label_selector=f"{ADVISORY_FEED_LABEL}={LABEL}")
    return {item["metadata"]["name"]: item for item in listing["items"]}


def delete_all(api: harness.Api) -> None:
    for name in ALL_NAMES:
        api.delete_bulletin(name)
    harness.wait_for(lambda: not any(_exists(api, n) for n in ALL_NAMES), timeout=30,
                     what="the advisory bulletins deleted")


def _exists(api: harness.Api, name: str) -> bool:
    try:
        api.get_bulletin(name)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def source_events(api: harness.Api, reason: str) -> list[str]:
    return [e.message for e in api.events_for(flux.RUNTIME_NAMESPACE, SOURCE)
            if e.reason == reason]


def artifact_revision(api: harness.Api) -> str:
    source = api.custom.get_namespaced_custom_object(
        "source.toolkit.fluxcd.io", "v1", flux.RUNTIME_NAMESPACE, "gitrepositories", SOURCE)
    return str(((source.get("status") or {}).get("artifact") or {}).get("revision") or "")


def feed_metrics(operator: harness.OperatorProcess) -> set[str]:
    return {line for line in operator.metrics().splitlines()
            if line.startswith("fluxsupport_advisory_feed_") and "timestamp" not in line}


def versions(bulletins: dict[str, dict[str, Any]]) -> dict[str, tuple[str, int]]:
    return {name: (b["metadata"]["resourceVersion"], b["metadata"]["generation"])
            for name, b in bulletins.items()}


def settled(api: harness.Api, names: list[str]) -> dict[str, tuple[str, int]]:
    """The bulletins' versions once the bulletin controller has written their status and
    cleared its Event outbox, and nothing changed for 3 s: no write is still on its way."""
    def current() -> dict[str, tuple[str, int]] | None:
        found = feed_bulletins(api)
        if sorted(found) != names:
            return None
        for body in found.values():
            status = body.get("status") or {}
            if status.get("observedGeneration") != body["metadata"]["generation"] or \
                    status.get("pendingEvents"):
                return None
        return versions(found)

    def quiet() -> dict[str, tuple[str, int]] | None:
        first = current()
        time.sleep(3)
        return first if first is not None and current() == first else None
    return harness.wait_for(quiet, timeout=90, interval=0.5, what="the bulletins settled")


def persons_bulletin() -> dict[str, Any]:
    body = fixtures.bulletin_for(PERSONS, "CVE-2023-33111", "source-controller",
                                 fixtures.release_images("v2.9.4", "enterprise-distroless")[
                                     "source-controller"])
    body["spec"]["title"] = "Our own bulletin, with the distribution's rebuild"
    return body


@pytest.fixture
def feed_operator(operator_credentials: harness.OperatorCredentials, api: harness.Api,
                  kubeconfig: pathlib.Path, no_session_operator: None,
                  session_rbac: Callable[..., None], tmp_path: pathlib.Path
    ) -> Iterator[tuple[harness.OperatorProcess, flux.Checkout]]:
    """source-controller fetching a git repository of advisories, a GitRepository for it, and
    an operator whose policy names it, with the chart's RBAC for policy.advisories."""
    flux.install_crds(kubeconfig)
    harness.ensure_namespace(api, flux.RUNTIME_NAMESPACE)
    delete_all(api)
    session_rbac("--set", "policy.advisories.sourceRef.kind=GitRepository",
                 "--set", f"policy.advisories.sourceRef.name={SOURCE}")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"advisories: {{sourceRef: {{kind: GitRepository, name: {SOURCE}}}}}\n")
    own = harness.OperatorProcess(operator_credentials.kubeconfig, tmp_path,
                                  extra_args=("--policy", str(policy)), name="operator-feed")

    def fill(path: pathlib.Path) -> None:
        # The vendored files with their provenance notes, which are not *.json.
        shutil.copytree(ADVISORIES, path / "advisories")
        (path / "advisories" / f"{LATER}.json").unlink()
        (path / "README.md").write_text("Flux advisories in the OSV format\n")

    api.create_bulletin(persons_bulletin())
    try:
        with gitsource.served(kubeconfig, tmp_path, SOURCE, fill, "Flux advisories") as checkout:
            own.start()
            try:
                yield own, checkout
            finally:
                own.stop()
    finally:
        with contextlib.suppress(AssertionError):
            delete_all(api)
        assert "Traceback" not in own.log_text(), own.log_tail(200)


def test_advisories_in_a_source_artifact_become_bulletins_without_a_person(
        api: harness.Api, feed_operator: tuple[harness.OperatorProcess, flux.Checkout]) -> None:
    own, checkout = feed_operator
    person = api.get_bulletin(PERSONS)
    revision = first_import(api, own, person)
    before = restart_writes_nothing(api, own)
    modified_advisory(api, checkout, before, revision)
    invalid_file_and_removed_advisory(api, own, checkout)
    assert api.get_bulletin(PERSONS)["spec"] == person["spec"]


def first_import(api: harness.Api, own: harness.OperatorProcess,
                 person: dict[str, Any]) -> str:
    """One bulletin per advisory with a Flux component; the person's bulletin untouched."""
    harness.wait_for(lambda: sorted(feed_bulletins(api)) == FIRST or None, timeout=90,
                     interval=0.5, what="the feed's bulletins")
    revision = artifact_revision(api)
    assert revision.startswith("main@sha1:")
    v554 = feed_bulletins(api)[MODIFIED.lower()]
    source = json.loads((ADVISORIES / f"{MODIFIED}.json").read_text())
    assert v554["metadata"]["labels"][ADVISORY_FEED_LABEL] == LABEL
    assert v554["metadata"]["annotations"][ADVISORY_REVISION] == revision
    assert v554["spec"]["affectedVersions"] == [
        {"component": "source-controller", "package": "github.com/fluxcd/source-controller",
         "ranges": [{"fixed": "v1.2.5"}]}]
    assert v554["spec"]["advisory"]["id"] == MODIFIED
    assert v554["spec"]["advisory"]["modified"] == source["modified"]
    assert [v["id"] for v in v554["spec"]["vulnerabilities"]] == ["CVE-2024-31216"]
    stored = api.get_bulletin(PERSONS)
    assert stored["spec"] == person["spec"]
    assert stored["metadata"]["generation"] == 1
    assert ADVISORY_FEED_LABEL not in (stored["metadata"].get("labels") or {})
    summary = (f"4 created, 0 updated, 0 unchanged, 1 skipped (no Flux component), 0 invalid, "
               f"1 left alone (not written by the feed), from revision {revision}")
    harness.wait_for(lambda: summary in source_events(api, "AdvisoriesImported") or None,
                     timeout=30, what="the import's summary Event")
    harness.wait_for(lambda: any(m.startswith(f"SecurityBulletin {PERSONS} exists without the "
                                              f"label {ADVISORY_FEED_LABEL}={LABEL}")
                                 for m in source_events(api, "BulletinNotOwned")) or None,
                     timeout=30, what="the Warning about the person's bulletin")
    harness.wait_for(lambda: {"fluxsupport_advisory_feed_up 1.0",
                              'fluxsupport_advisory_feed_advisories{outcome="created"} 4.0',
                              'fluxsupport_advisory_feed_advisories{outcome="not_owned"} 1.0',
                              'fluxsupport_advisory_feed_advisories{outcome="skipped"} 1.0'}
                     <= feed_metrics(own) or None, timeout=20, what="the feed's metrics")
    return revision


def restart_writes_nothing(api: harness.Api,
                           own: harness.OperatorProcess) -> dict[str, tuple[str, int]]:
    before = settled(api, FIRST)
    own.stop()
    own.start()
    harness.wait_for(lambda: 'fluxsupport_advisory_feed_advisories{outcome="unchanged"} 4.0'
                     in feed_metrics(own) or None, timeout=60, what="the import after restart")
    assert any(m.startswith("0 created, 0 updated, 4 unchanged")
               for m in source_events(api, "AdvisoriesImported"))
    assert settled(api, FIRST) == before, "a restart must not write the bulletins"
    return before


def modified_advisory(api: harness.Api, checkout: flux.Checkout,
                      before: dict[str, tuple[str, int]], revision: str) -> None:
    """A new `modified` and a new range: exactly that bulletin's spec changes."""
    modified = json.loads((ADVISORIES / f"{MODIFIED}.json").read_text())
    modified["modified"] = "2026-12-01T00:00:00Z"
    modified["affected"][0]["ranges"][0]["events"] = [{"introduced": "0"}, {"fixed": "1.2.6"}]
    checkout.write({f"advisories/{MODIFIED}.json": json.dumps(modified, indent=2)})
    checkout.commit("GHSA-v554-xwgw-hc3w: fixed in 1.2.6")

    def updated() -> dict[str, Any] | None:
        found = feed_bulletins(api).get(MODIFIED.lower())
        return found if found and found["spec"]["advisory"]["modified"] == \
            "2026-12-01T00:00:00Z" else None
    new = harness.wait_for(updated, timeout=60, interval=0.5, what="the modified bulletin")
    assert new["spec"]["affectedVersions"][0]["ranges"] == [{"fixed": "v1.2.6"}]
    assert new["metadata"]["generation"] == before[MODIFIED.lower()][1] + 1
    second = artifact_revision(api)
    assert second != revision
    assert new["metadata"]["annotations"][ADVISORY_REVISION] == second
    after = settled(api, FIRST)
    assert {n: v for n, v in after.items() if n != MODIFIED.lower()} == {
        n: v for n, v in before.items() if n != MODIFIED.lower()}, "only that bulletin changed"
    harness.wait_for(lambda: any(m.startswith("0 created, 1 updated, 3 unchanged")
                                 for m in source_events(api, "AdvisoriesImported")) or None,
                     timeout=30, what="the update's summary Event")


def invalid_file_and_removed_advisory(api: harness.Api, own: harness.OperatorProcess,
                                      checkout: flux.Checkout) -> None:
    """An invalid file is named in a Warning and the rest import; a removed one stays."""
    checkout.write({"advisories/2026/broken.json": '{"id": "GHSA-broken", ',
                    f"advisories/{LATER}.json": (ADVISORIES / f"{LATER}.json").read_text(),
                    f"advisories/{REMOVED}.json": None})
    checkout.commit("one more advisory, a broken file, one removed")
    every = sorted([*FIRST, LATER.lower()])
    harness.wait_for(lambda: sorted(feed_bulletins(api)) == every or None, timeout=60,
                     interval=0.5, what="the advisory added with the broken file")
    warnings = harness.wait_for(lambda: source_events(api, "InvalidAdvisory") or None,
                                timeout=30, what="the Warning about the broken file")
    assert len(warnings) == 1
    assert warnings[0].startswith("advisories/2026/broken.json: not valid JSON: ")
    assert warnings[0].endswith("the other advisories were imported")
    assert REMOVED.lower() in feed_bulletins(api), "a removed advisory keeps its bulletin"
    harness.wait_for(lambda: {"fluxsupport_advisory_feed_up 1.0",
                              'fluxsupport_advisory_feed_advisories{outcome="invalid"} 1.0',
                              'fluxsupport_advisory_feed_advisories{outcome="created"} 1.0'}
                     <= feed_metrics(own) or None, timeout=20, what="the invalid file counted")


# --- a thousand advisories in a repository of realistic size ---------------------------------

def delete_feed_bulletins(api: harness.Api) -> None:
    api.custom.delete_collection_cluster_custom_object(
        GROUP, VERSION, "securitybulletins", label_selector=f"{ADVISORY_FEED_LABEL}={LABEL}")
    harness.wait_for(lambda: not feed_bulletins(api), timeout=120,
                     what="the feed's bulletins deleted")


@pytest.fixture
def large_feed_operator(operator_credentials: harness.OperatorCredentials, api: harness.Api,
                        kubeconfig: pathlib.Path, no_session_operator: None,
                        session_rbac: Callable[..., None], tmp_path: pathlib.Path
    ) -> Iterator[tuple[harness.OperatorProcess, realsize.OsvFeed]]:
    """1,000 advisories generated from the vendored ones (tests/realsize.py) in the advisory
    database's layout, in a repository of the distribution's layout: 2,500 files, about 5 MB
    as source-controller's artifact; an operator with the chart's RBAC reads it."""
    generated = realsize.osv_feed(1000)
    flux.install_crds(kubeconfig)
    harness.ensure_namespace(api, flux.RUNTIME_NAMESPACE)
    delete_feed_bulletins(api)
    session_rbac("--set", "policy.advisories.sourceRef.kind=GitRepository",
                 "--set", f"policy.advisories.sourceRef.name={SOURCE}")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"advisories: {{sourceRef: {{kind: GitRepository, name: {SOURCE}}}}}\n")
    own = harness.OperatorProcess(operator_credentials.kubeconfig, tmp_path,
                                  extra_args=("--policy", str(policy)), name="operator-feed")

    def fill(path: pathlib.Path) -> None:
        realsize.distribution_snapshot(path, files=1500)
        realsize.write_files(path, generated.files)

    try:
        with gitsource.served(kubeconfig, tmp_path, SOURCE, fill, "a thousand advisories"):
            own.start()
            try:
                yield own, generated
            finally:
                own.stop()
    finally:
        with contextlib.suppress(AssertionError):
            delete_feed_bulletins(api)
        assert "Traceback" not in own.log_text(), own.log_tail(200)


def test_a_thousand_advisories_in_a_multi_mb_artifact_become_bulletins(
        api: harness.Api,
        large_feed_operator: tuple[harness.OperatorProcess, realsize.OsvFeed]) -> None:
    own, generated = large_feed_operator
    # Packing 2,500 files takes source-controller a while on a busy machine.
    revision = harness.wait_for(lambda: artifact_revision(api) or None, timeout=120,
                                what="source-controller's artifact")
    created = len(generated.bulletins)
    summary = (f"{created} created, 0 updated, 0 unchanged, {len(generated.skipped)} skipped "
               "(no Flux component), 0 invalid, 0 left alone (not written by the feed), "
               f"from revision {revision}")
    harness.wait_for(lambda: summary in source_events(api, "AdvisoriesImported") or None,
                     timeout=300, interval=1, what="the import's summary Event")
    assert source_events(api, "ArtifactDigestMismatch") == []
    found = feed_bulletins(api)
    assert sorted(found) == sorted(generated.bulletins)
    for name, components in generated.bulletins.items():
        spec = found[name]["spec"]
        assert [a["component"] for a in spec["affectedVersions"]] == components, name
        component, first = generated.first_range[name]
        ranges = next(a["ranges"] for a in spec["affectedVersions"]
                      if a["component"] == component)
        assert ranges[0] == first, name
        assert found[name]["metadata"]["annotations"][ADVISORY_REVISION] == revision
    source = api.custom.get_namespaced_custom_object(
        "source.toolkit.fluxcd.io", "v1", flux.RUNTIME_NAMESPACE, "gitrepositories", SOURCE)
    size = int(source["status"]["artifact"]["size"])
    assert size > 4_000_000, f"the artifact is {size} bytes: not the size of a real one"
    harness.wait_for(lambda: {"fluxsupport_advisory_feed_up 1.0",
                              'fluxsupport_advisory_feed_advisories{outcome="created"} '
                              f"{float(created)}"} <= feed_metrics(own) or None,
                     timeout=20, what="the feed's metrics")
