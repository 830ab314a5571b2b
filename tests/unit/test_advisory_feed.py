"""The advisory feed on the real advisories of tests/data/upstream/advisories: the one function
that `bulletin import --from osv` and the operator share, the listing of a tar.gz artifact,
and the feed controller against an in-memory API server (idempotent writes, a person's bulletin
left alone, invalid files reported and skipped, download failures retried)."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import time
from typing import Any, cast

import jsonschema
import pytest
import yaml

from fluxsupport import constants, resources
from fluxsupport.controllers import advisories as controller
from fluxsupport.domain import advisory, artifact
from fluxsupport.domain.policy import load_policy
from fluxsupport.kube import api, objects
from fluxsupport.kube.events import EventPoster, PendingEvent
from fluxsupport.observability import metrics
from fluxsupport.sources import artifacts
from tests import fakes, fixtures

ADVISORIES = fixtures.UPSTREAM / "advisories"
OSV = jsonschema.Draft202012Validator(resources.osv_schema())
BULLETIN_IDS = ["GHSA-35rf-v2jv-gfg7", "GHSA-4xh5-jcj2-ch8q", "GHSA-7pwf-jg34-hxwp",
                "GHSA-j77r-2fxf-5jrw", "GHSA-v554-xwgw-hc3w", "GHSA-vvmq-fwmg-2gjc"]
CLI_ONLY = "GHSA-xwf3-6rgv-939r"  # the flux2 CLI: no component in the cluster


def vendored() -> list[tuple[str, bytes]]:
    return [(f"advisories/{p.name}", p.read_bytes()) for p in sorted(ADVISORIES.glob("*.json"))]


def document(advisory_id: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ADVISORIES / f"{advisory_id}.json").read_text())
    return loaded


def crd_validator() -> jsonschema.Draft7Validator:
    crd = next(d for d in resources.crd_documents()
               if d["spec"]["names"]["kind"] == constants.BULLETIN_KIND)
    return jsonschema.Draft7Validator(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
                                      format_checker=jsonschema.FormatChecker())


# --- the shared function -------------------------------------------------------------------

def test_the_real_advisories_give_six_bulletins_and_one_skip() -> None:
    feed = advisory.read_feed(vendored(), OSV, crd_validator())
    assert feed.invalid == ()
    assert [a.advisory_id for a in feed.bulletins] == BULLETIN_IDS
    assert [a.advisory_id for a in feed.skipped] == [CLI_ONLY]
    v554 = next(a for a in feed.bulletins if a.advisory_id == "GHSA-v554-xwgw-hc3w")
    assert v554.path == "advisories/GHSA-v554-xwgw-hc3w.json"
    manifest = v554.manifest(labels={"a": "b"}, annotations={"c": "d"})
    assert manifest["metadata"] == {"name": "ghsa-v554-xwgw-hc3w", "labels": {"a": "b"},
                                    "annotations": {"c": "d"}}
    assert manifest["spec"]["affectedVersions"] == [
        {"component": "source-controller", "package": "github.com/fluxcd/source-controller",
         "ranges": [{"fixed": "v1.2.5"}]}]
    assert manifest["spec"]["advisory"]["modified"] == \
        document("GHSA-v554-xwgw-hc3w")["modified"]


def test_the_cli_prints_exactly_what_the_shared_function_gives() -> None:
    """`bulletin import --from osv` and the feed cannot drift: the same manifests."""
    result = subprocess.run([sys.executable, "-m", "fluxsupport", "bulletin", "import",
                             "--from", "osv", str(ADVISORIES)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    printed = list(yaml.safe_load_all(result.stdout))
    feed = advisory.read_feed(vendored(), OSV, crd_validator())
    assert printed == [a.manifest() for a in feed.bulletins]


def test_invalid_files_are_reported_with_their_reason_and_the_others_go_on() -> None:
    no_id = document("GHSA-v554-xwgw-hc3w")
    del no_id["id"]
    not_semver = document("GHSA-7pwf-jg34-hxwp")
    not_semver["affected"][0]["ranges"][0]["events"] = [{"introduced": "0"}, {"fixed": "1.2"}]
    # The schema's pattern lets a month 13 through; the time parser does not.
    bad_time = {**document("GHSA-j77r-2fxf-5jrw"), "modified": "2024-13-45T00:00:00Z"}
    files = [("feed/broken.json", b"{not json"), ("feed/deep.json", b"[" * 100_000),
             ("feed/no-id.json", json.dumps(no_id).encode()),
             ("feed/not-semver.json", json.dumps(not_semver).encode()),
             ("feed/bad-time.json", json.dumps(bad_time).encode()),
             *[(n, c) for n, c in vendored() if "7pwf" not in n and "j77r" not in n]]
    feed = advisory.read_feed(files, OSV, crd_validator())
    reasons = {i.path: i.reason for i in feed.invalid}
    assert set(reasons) == {"feed/broken.json", "feed/deep.json", "feed/no-id.json",
                            "feed/not-semver.json", "feed/bad-time.json"}
    assert reasons["feed/deep.json"] == "not valid JSON: nested too deeply"
    assert reasons["feed/broken.json"].startswith("not valid JSON: ")
    assert reasons["feed/no-id.json"] == \
        "not an OSV advisory: (root): 'id' is a required property"
    assert reasons["feed/not-semver.json"] == "version '1.2' is not a semantic version"
    assert reasons["feed/bad-time.json"] == ("not an OSV advisory: modified: "
                                             "'2024-13-45T00:00:00Z' is not an RFC 3339 time")
    assert [a.advisory_id for a in feed.bulletins] == [
        i for i in BULLETIN_IDS if i not in ("GHSA-7pwf-jg34-hxwp", "GHSA-j77r-2fxf-5jrw")]


def test_a_bulletin_the_crd_would_refuse_is_invalid_not_written() -> None:
    long_title = document("GHSA-v554-xwgw-hc3w")
    long_title["aliases"] = ["CVE-2024-31216"] * 300  # past the CRD's maxItems
    feed = advisory.read_feed([("x.json", json.dumps(long_title).encode())], OSV,
                              crd_validator())
    assert feed.bulletins == []
    assert feed.invalid[0].path == "x.json"
    assert feed.invalid[0].reason.startswith("the bulletin would be invalid: spec.")


def test_the_newest_modified_copy_wins_and_the_later_file_on_a_tie() -> None:
    old = document("GHSA-v554-xwgw-hc3w")
    new = copy.deepcopy(old)
    new["modified"] = "2026-12-01T00:00:00Z"
    new["affected"][0]["ranges"][0]["events"] = [{"introduced": "0"}, {"fixed": "1.2.6"}]
    for files in ([("a.json", json.dumps(new).encode()), ("b.json", json.dumps(old).encode())],
                  [("a.json", json.dumps(old).encode()), ("b.json", json.dumps(new).encode())]):
        feed = advisory.read_feed(files, OSV)
        (only,) = feed.bulletins
        assert only.converted.spec is not None
        assert only.converted.spec["affectedVersions"][0]["ranges"] == [{"fixed": "v1.2.6"}]
    tie = copy.deepcopy(old)
    tie["summary"] = "the same moment, another text"
    feed = advisory.read_feed([("a.json", json.dumps(old).encode()),
                               ("b.json", json.dumps(tie).encode())], OSV)
    assert feed.bulletins[0].path == "b.json"


# --- the tar.gz artifact --------------------------------------------------------------------

def tarball(files: dict[str, bytes], links: dict[str, str] | None = None,
            dot_prefix: bool = False) -> bytes:
    """A tar.gz as source-controller packs a repository."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(("./" if dot_prefix else "") + name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def feed_tarball(files: list[tuple[str, bytes]] | None = None) -> bytes:
    return tarball({"README.md": b"a feed\n", **dict(vendored() if files is None else files)})


def sha256(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


def test_the_json_files_of_an_artifact_under_a_path_at_any_depth() -> None:
    nested = {f"advisories/github-reviewed/2024/05/{n.rsplit('/', 1)[1]}": c
              for n, c in vendored()}
    content = tarball({"README.md": b"x", "images/VERSION": b"v2.9.4\n",
                       "other/x.json": b"{}", "advisories/notes.md": b"-", **nested},
                      links={"advisories/link.json": "/etc/passwd"})
    found = dict(artifact.json_files(content, "advisories"))
    assert sorted(found) == sorted(nested)
    assert found == nested
    assert sorted(dict(artifact.json_files(content, "."))) == sorted([*nested, "other/x.json"])
    assert dict(artifact.json_files(content, "/advisories/")) == nested
    assert dict(artifact.json_files(content, "elsewhere")) == {}
    # source-controller's archives name their members with or without ./
    assert dict(artifact.json_files(tarball(dict(vendored()), dot_prefix=True),
                                    "advisories")) == dict(vendored())
    feed = advisory.read_feed(found.items(), OSV)
    assert [a.advisory_id for a in feed.bulletins] == BULLETIN_IDS
    artifact.verify_digest(content, sha256(content))
    with pytest.raises(artifact.ArtifactError, match="not the"):
        artifact.verify_digest(content, sha256(b"other"))
    with pytest.raises(artifact.ArtifactError, match=r"not a readable tar\.gz"):
        dict(artifact.json_files(b"plain text", "advisories"))
    # A file larger than one file's bound is named, not read; past the bound of all files
    # read, the artifact is refused.
    bomb = tarball({"advisories/big.json": b" " * 4096, "advisories/a.json": b"{}"})
    assert len(bomb) < 1024
    assert artifact.read_files(bomb, "advisories", lambda name: True,
                               artifact.Limits(file=4000)) == {
        "big.json": artifact.TooLarge(4096, 4000), "a.json": b"{}"}
    with pytest.raises(artifact.ArtifactTooLarge,
                       match="files read under advisories/ hold more than 4000 bytes"):
        artifact.read_files(bomb, "advisories", lambda name: True, artifact.Limits(read=4000))


def test_the_policy_section_is_optional_and_defaults_to_advisories() -> None:
    assert load_policy("").advisories is None
    policy = load_policy("advisories: {sourceRef: {kind: GitRepository, name: feed}}")
    assert policy.advisories is not None
    assert (policy.advisories.source_ref.kind, policy.advisories.path) == (
        "GitRepository", "advisories")
    # Deadlines do not depend on the feed: the policy's fingerprint stays.
    assert policy.fingerprint() == load_policy("").fingerprint()
    with pytest.raises(ValueError, match="sourceRef"):
        load_policy("advisories: {path: x}")


def test_the_feed_label_is_a_label_value_however_long_the_names() -> None:
    assert controller.feed_label("flux-system", "advisories") == "flux-system.advisories"
    long = controller.feed_label("n" * 63, "a" * 253)
    assert len(long) <= 63
    assert long != controller.feed_label("n" * 63, "a" * 252)
    assert long[0].isalnum()
    assert long[-1].isalnum()


# --- the controller against an in-memory API server -----------------------------------------

def bulletins(store: fakes.FakeClient) -> dict[str, dict[str, Any]]:
    """The SecurityBulletins the fake API server holds, by name."""
    return store.named(objects.BULLETINS.path())


def put_person_bulletin(store: fakes.FakeClient, name: str) -> None:
    """A bulletin a person wrote: no label of the feed."""
    store.put(f"{objects.BULLETINS.path()}/{name}", {
        "apiVersion": constants.API_VERSION, "kind": constants.BULLETIN_KIND,
        "metadata": {"name": name}, "spec": {"title": "by hand"}})


class Poster:
    def __init__(self) -> None:
        self.events: list[tuple[api.ObjectRef, PendingEvent]] = []

    def submit(self, ref: api.ObjectRef, event: PendingEvent, done: Any) -> bool:
        self.events.append((ref, event))
        return True

    def reasons(self) -> list[str]:
        return [e.reason for _, e in self.events]

    def messages(self, reason: str) -> list[str]:
        return [e.message for _, e in self.events if e.reason == reason]


class Artifacts:
    """source-controller's storage: what the controller downloads, and how often."""

    def __init__(self) -> None:
        self.content = b""
        self.downloads = 0
        self.fail = False

    async def download(self, url: str, max_bytes: int | None = None) -> bytes:
        self.downloads += 1
        if self.fail:
            raise artifacts.ArtifactError(f"{url}: connection refused")
        return self.content


@pytest.fixture
def storage(monkeypatch: pytest.MonkeyPatch) -> Artifacts:
    served = Artifacts()
    monkeypatch.setattr(artifacts, "download", served.download)
    return served


def feed_controller(store: fakes.FakeClient, poster: Poster) -> controller.AdvisoryFeed:
    settings = load_policy("advisories: {sourceRef: {kind: GitRepository, name: feed}}"
                           ).advisories
    assert settings is not None
    feed = controller.AdvisoryFeed(store, ("flux-system",), settings,
                                   poster=cast(EventPoster, poster))
    feed.source_watch.synced.set()
    return feed


def publish(feed: controller.AdvisoryFeed, storage: Artifacts, content: bytes,
            revision: str, digest: str | None = None) -> None:
    storage.content = content
    feed.source_watch.objects["feed"] = {
        "metadata": {"name": "feed", "namespace": "flux-system", "uid": "uid-feed"},
        "status": {"artifact": {"url": "http://source-controller/feed.tar.gz",
                                "digest": digest or sha256(content), "revision": revision}}}


def run(feed: controller.AdvisoryFeed) -> None:
    asyncio.run(feed._scheduled(controller.KEY))


def collected(feed: controller.AdvisoryFeed) -> dict[str, float]:
    values = {}
    for family in metrics.AdvisoryFeedCollector(feed).collect():
        for sample in family.samples:
            label = ",".join(f"{k}={v}" for k, v in sample.labels.items())
            values[sample.name + (f"{{{label}}}" if label else "")] = sample.value
    return values


def test_import_creates_then_a_restart_writes_nothing(storage: Artifacts) -> None:
    store, poster = fakes.FakeClient(), Poster()
    feed = feed_controller(store, poster)
    assert collected(feed) == {}, "no series before the first attempt"
    publish(feed, storage, feed_tarball(), "main@sha1:1111")
    run(feed)
    assert sorted(bulletins(store)) == [i.lower() for i in BULLETIN_IDS]
    stored = bulletins(store)["ghsa-v554-xwgw-hc3w"]
    assert stored["metadata"]["labels"] == {constants.ADVISORY_FEED_LABEL:
                                            "flux-system.feed"}
    assert stored["metadata"]["annotations"] == {constants.ADVISORY_REVISION: "main@sha1:1111"}
    assert poster.messages("AdvisoriesImported") == [
        "6 created, 0 updated, 0 unchanged, 1 skipped (no Flux component), 0 invalid, 0 left "
        "alone (not written by the feed), from revision main@sha1:1111"]
    ref = poster.events[0][0]
    assert (ref.api_version, ref.kind, ref.namespace, ref.name, ref.uid) == (
        "source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "feed", "uid-feed")
    values = collected(feed)
    assert values["fluxsupport_advisory_feed_up"] == 1
    assert values["fluxsupport_advisory_feed_advisories{outcome=created}"] == 6
    assert values["fluxsupport_advisory_feed_advisories{outcome=skipped}"] == 1
    assert time.time() - values["fluxsupport_advisory_feed_last_import_timestamp_seconds"] < 60

    # The same digest again (a watch event of the source): not even downloaded.
    requests, downloads = len(store.requests), storage.downloads
    run(feed)
    assert (len(store.requests), storage.downloads) == (requests, downloads)

    # A restart: one list, no write; the Event has the same name for the same message.
    writes = list(store.writes)
    again = feed_controller(store, Poster())
    publish(again, storage, storage.content, "main@sha1:1111")
    run(again)
    assert store.writes == writes
    assert len(store.requests) == requests + 1
    summary = cast(Poster, again.poster).events[0][1]
    assert summary.message.startswith("0 created, 0 updated, 6 unchanged, 1 skipped")
    restarted_twice = feed_controller(store, Poster())
    publish(restarted_twice, storage, storage.content, "main@sha1:1111")
    run(restarted_twice)
    assert cast(Poster, restarted_twice.poster).events[0][1].name == summary.name


def test_a_modified_advisory_updates_exactly_its_bulletin(storage: Artifacts) -> None:
    store, poster = fakes.FakeClient(), Poster()
    feed = feed_controller(store, poster)
    publish(feed, storage, feed_tarball(), "main@sha1:1111")
    run(feed)
    before = copy.deepcopy(bulletins(store))
    modified = document("GHSA-v554-xwgw-hc3w")
    modified["modified"] = "2026-12-01T00:00:00Z"
    modified["affected"][0]["ranges"][0]["events"] = [{"introduced": "0"}, {"fixed": "1.2.6"}]
    files = [(n, json.dumps(modified).encode() if "v554" in n else c) for n, c in vendored()]
    publish(feed, storage, feed_tarball(files), "main@sha1:2222")
    run(feed)
    assert store.writes[-1] == ("PUT", "ghsa-v554-xwgw-hc3w")
    assert len(store.writes) == 7
    updated = bulletins(store)["ghsa-v554-xwgw-hc3w"]
    assert updated["spec"]["affectedVersions"][0]["ranges"] == [{"fixed": "v1.2.6"}]
    assert updated["spec"]["advisory"]["modified"] == "2026-12-01T00:00:00Z"
    assert updated["metadata"]["annotations"][constants.ADVISORY_REVISION] == "main@sha1:2222"
    assert updated["metadata"]["generation"] == 2
    for name, body in before.items():
        if name != "ghsa-v554-xwgw-hc3w":
            assert bulletins(store)[name] == body, name
    assert poster.messages("AdvisoriesImported")[-1].startswith(
        "0 created, 1 updated, 5 unchanged")

    # Removed from the feed: the bulletin stays.
    files = [(n, c) for n, c in vendored() if "v554" not in n]
    publish(feed, storage, feed_tarball(files), "main@sha1:3333")
    run(feed)
    assert "ghsa-v554-xwgw-hc3w" in bulletins(store)
    assert len(store.writes) == 7


def test_a_persons_bulletin_of_the_same_name_is_left_alone(storage: Artifacts) -> None:
    store, poster = fakes.FakeClient(), Poster()
    put_person_bulletin(store, "ghsa-v554-xwgw-hc3w")
    person = copy.deepcopy(bulletins(store)["ghsa-v554-xwgw-hc3w"])
    feed = feed_controller(store, poster)
    publish(feed, storage, feed_tarball(), "main@sha1:1111")
    run(feed)
    assert bulletins(store)["ghsa-v554-xwgw-hc3w"] == person
    assert ("PUT", "ghsa-v554-xwgw-hc3w") not in store.writes
    (warning,) = poster.messages("BulletinNotOwned")
    assert warning.startswith("SecurityBulletin ghsa-v554-xwgw-hc3w exists without the label "
                              f"{constants.ADVISORY_FEED_LABEL}=flux-system.feed")
    assert "5 created, 0 updated, 0 unchanged, 1 skipped (no Flux component), 0 invalid, " \
           "1 left alone" in poster.messages("AdvisoriesImported")[0]
    assert collected(feed)["fluxsupport_advisory_feed_advisories{outcome=not_owned}"] == 1


def test_an_invalid_file_is_named_in_a_warning_and_the_rest_import(storage: Artifacts) -> None:
    store, poster = fakes.FakeClient(), Poster()
    feed = feed_controller(store, poster)
    files = [*vendored(), ("advisories/2026/broken.json", b"{")]
    publish(feed, storage, feed_tarball(files), "main@sha1:1111")
    run(feed)
    assert len(bulletins(store)) == 6
    (warning,) = poster.messages("InvalidAdvisory")
    assert warning.startswith("advisories/2026/broken.json: not valid JSON: ")
    assert warning.endswith("(revision main@sha1:1111); the other advisories were imported")
    assert ", 1 invalid," in poster.messages("AdvisoriesImported")[0]
    assert collected(feed)["fluxsupport_advisory_feed_up"] == 1
    # Many invalid files: ten Warnings, then one that counts the rest.
    files = [*vendored(), *((f"advisories/bad-{i}.json", b"[") for i in range(25))]
    publish(feed, storage, feed_tarball(files), "main@sha1:2222")
    run(feed)
    later = poster.messages("InvalidAdvisory")[1:]
    assert len(later) == controller.MAX_INVALID_EVENTS + 1
    assert later[-1].startswith("15 more invalid files in revision main@sha1:2222")


def test_download_failures_are_retried_and_reported_once(storage: Artifacts) -> None:
    store, poster = fakes.FakeClient(), Poster()
    feed = feed_controller(store, poster)
    publish(feed, storage, feed_tarball(), "main@sha1:1111")
    storage.fail = True
    run(feed)
    run(feed)
    assert store.writes == []
    assert poster.reasons() == ["ArtifactUnavailable"], "one Warning for the same failure"
    assert collected(feed)["fluxsupport_advisory_feed_up"] == 0
    assert len(feed.scheduler) == 1, "a retry is scheduled"
    storage.fail = False
    run(feed)
    assert len(bulletins(store)) == 6
    assert collected(feed)["fluxsupport_advisory_feed_up"] == 1
    # A digest that does not match what is served: nothing is read.
    publish(feed, storage, feed_tarball([]), "main@sha1:2222", digest=sha256(b"other"))
    run(feed)
    assert poster.reasons()[-1] == "ArtifactDigestMismatch"
    assert collected(feed)["fluxsupport_advisory_feed_up"] == 0
    # The source disappears: said so, nothing written.
    feed.source_watch.objects.clear()
    run(feed)
    assert collected(feed)["fluxsupport_advisory_feed_up"] == 0
    assert len(store.writes) == 6


def test_an_empty_path_is_a_warning_not_a_failure(storage: Artifacts) -> None:
    store, poster = fakes.FakeClient(), Poster()
    feed = feed_controller(store, poster)
    publish(feed, storage, tarball({"README.md": b"x"}), "main@sha1:1111")
    run(feed)
    assert poster.messages("AdvisoriesNotFound") == [
        "no *.json under advisories/ in revision main@sha1:1111 (advisories.path)"]
    assert collected(feed)["fluxsupport_advisory_feed_up"] == 1


def test_an_api_error_while_writing_is_retried_with_backoff(storage: Artifacts) -> None:
    store, poster = fakes.FakeClient(), Poster()
    feed = feed_controller(store, poster)
    publish(feed, storage, feed_tarball(), "main@sha1:1111")
    original = store.request
    calls = 0

    async def flaky(method: str, path: str, body: Any = None,
                    content_type: str = "application/json") -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if method == "POST" and calls == 3:
            raise api.ApiError(503, "etcd is down")
        return await original(method, path, body, content_type)

    store.request = flaky  # type: ignore[method-assign]
    with pytest.raises(api.ApiError) as raised:
        run(feed)
    # What the scheduler does with a reconcile that raised: retry with backoff, report it.
    asyncio.run(feed.scheduler.failed(controller.KEY, raised.value))
    assert len(bulletins(store)) == 1
    assert collected(feed)["fluxsupport_advisory_feed_up"] == 0
    assert poster.reasons() == ["ImportFailed"]
    assert len(feed.scheduler) == 1
    run(feed)  # the retry: what was written is unchanged, the rest is created
    assert len(bulletins(store)) == 6
    assert poster.messages("AdvisoriesImported")[0].startswith(
        "5 created, 0 updated, 1 unchanged")


def test_an_oci_source_in_another_namespace_is_watched_there() -> None:
    settings = load_policy("advisories: {sourceRef: {kind: OCIRepository, name: osv, "
                           "namespace: tenant-flux}, path: .}").advisories
    assert settings is not None
    feed = controller.AdvisoryFeed(fakes.FakeClient(), ("flux-system",),
                                   settings, poster=cast(EventPoster, Poster()))
    assert feed.source == "OCIRepository tenant-flux/osv"
    assert feed.label == "tenant-flux.osv"
    assert feed.source_watch.path == \
        "/apis/source.toolkit.fluxcd.io/v1/namespaces/tenant-flux/ocirepositories"
