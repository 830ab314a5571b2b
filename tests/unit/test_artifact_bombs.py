"""Hostile artifacts against the advisory feed and the update check: a zero-bomb (a few
hundred KB of gzip that unpacks to 256 MiB), 50,000 empty members, a 22 MiB advisory, one of
1,500 packages and one of 120,000 schema errors. Each is refused or reported with a reason and
a message, the rest of the feed imports, the memory the read allocates is bounded
(tracemalloc's peak, all threads), and the event loop goes on running while the operator
reads: its thread spends less than a quarter of the read's CPU time, where reading on the loop
would spend all of it there."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import tarfile
import time
import tracemalloc
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

import pytest

from fluxsupport.controllers import advisories as feed_controller
from fluxsupport.controllers import updates as updates_controller
from fluxsupport.domain.policy import load_policy
from fluxsupport.kube.events import EventPoster
from fluxsupport.sources import artifacts
from tests import fakes
from tests.unit.test_advisory_feed import (
    ADVISORIES,
    Artifacts,
    Poster,
    bulletins,
    collected,
    document,
    publish,
    vendored,
)
from tests.unit.test_artifact_download import update_check

MIB = 1024 * 1024
T = TypeVar("T")


# --- the bombs ------------------------------------------------------------------------------

def _gzip_member(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def zero_bomb(members: int = 32, each_mib: int = 8,
              after: list[tuple[str, bytes]] | None = None) -> bytes:
    """``members`` files of ``each_mib`` MiB of zeros, then ``after``: gzip allows members one
    after the other, so one compressed MiB of zeros repeated builds the bomb in no time."""
    zeros = _gzip_member(bytes(MIB))
    parts = []
    for index in range(members):
        header = tarfile.TarInfo(f"assets/blob-{index:02d}.bin")
        header.size = each_mib * MIB
        parts += [_gzip_member(header.tobuf()), zeros * each_mib]
    tail = io.BytesIO()
    with tarfile.open(fileobj=tail, mode="w") as archive:
        for name, data in after or []:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    parts.append(_gzip_member(tail.getvalue()))
    return b"".join(parts)


def empty_members(count: int = 50_000) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in vendored():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for index in range(count):
            archive.addfile(tarfile.TarInfo(f"advisories/empty/{index:05d}.json"))
    return buffer.getvalue()


def many_packages(count: int) -> bytes:
    """A valid OSV advisory of the right id and ``count`` affected Go modules that are no
    Flux component: every one is validated against the OSV schema."""
    advisory = document("GHSA-xwf3-6rgv-939r")
    advisory["affected"] = [{"package": {"ecosystem": "Go", "name": f"example.com/m{i}"},
                             "ranges": [{"type": "SEMVER",
                                         "events": [{"introduced": "0"}, {"fixed": "1.0.0"}]}]}
                            for i in range(count)]
    return json.dumps(advisory).encode()


def tar_gz(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# --- what reading one costs -----------------------------------------------------------------

class Cost:
    def __init__(self) -> None:
        self.peak = 0  # bytes allocated at most, above what was held before
        self.cpu = 0.0  # CPU seconds of the whole process while the work ran
        self.loop_cpu = 0.0  # CPU seconds of those spent on the event loop's thread


def measured(work: Awaitable[T], cost: Cost) -> T:
    """Run ``work`` on an event loop with tracemalloc on, counting where the CPU time went."""
    async def run() -> T:
        tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
        loop_started, started = time.thread_time(), time.process_time()
        try:
            return await work
        finally:
            cost.loop_cpu = time.thread_time() - loop_started
            cost.cpu = time.process_time() - started
            cost.peak = tracemalloc.get_traced_memory()[1] - baseline
            tracemalloc.stop()
    return asyncio.run(run())


def assert_loop_kept_running(cost: Cost) -> None:
    # CPU time, not wall time: a loaded machine slows both threads alike and the ratio holds.
    assert cost.loop_cpu < max(0.05, cost.cpu / 4), (
        f"the event loop's thread spent {cost.loop_cpu:.3f} s of {cost.cpu:.3f} s CPU")


@pytest.fixture
def storage(monkeypatch: pytest.MonkeyPatch) -> Artifacts:
    served = Artifacts()
    monkeypatch.setattr(feed_controller.artifacts, "download", served.download)
    return served


def feed(store: fakes.FakeClient, poster: Poster) -> feed_controller.AdvisoryFeed:
    settings = load_policy("advisories: {sourceRef: {kind: GitRepository, name: feed}}"
                           ).advisories
    assert settings is not None
    made = feed_controller.AdvisoryFeed(store, ("flux-system",), settings,
                                        poster=cast(EventPoster, poster))
    made.source_watch.synced.set()
    return made


def import_feed(storage: Artifacts, content: bytes) -> tuple[fakes.FakeClient, Poster, Cost,
                                                             feed_controller.AdvisoryFeed]:
    store, poster, cost = fakes.FakeClient(), Poster(), Cost()
    controller = feed(store, poster)
    publish(controller, storage, content, "main@sha1:1111")
    measured(controller._scheduled(feed_controller.KEY), cost)
    return store, poster, cost, controller


# --- the advisory feed ----------------------------------------------------------------------

def test_a_zero_bomb_is_refused_after_the_bound_not_unpacked(storage: Artifacts) -> None:
    content = zero_bomb(after=vendored())
    assert len(content) < 400 * 1024
    store, poster, cost, controller = import_feed(storage, content)
    (message,) = poster.messages("ArtifactTooLarge")
    assert message == ("GitRepository flux-system/feed revision main@sha1:1111: the artifact "
                       "unpacks to more than 128 MiB; the source's spec.ignore can leave out "
                       "what the operator does not read")
    assert store.writes == []
    assert collected(controller)["fluxsupport_advisory_feed_up"] == 0
    assert len(controller.scheduler) == 0, "not retried: the same digest is the same bomb"
    assert cost.peak < 4 * MIB, cost.peak
    assert_loop_kept_running(cost)
    # The same digest again (a watch event): refused without a download.
    downloads = storage.downloads
    asyncio.run(controller._scheduled(feed_controller.KEY))
    assert storage.downloads == downloads


def test_fifty_thousand_empty_members_are_refused_without_keeping_them(
        storage: Artifacts) -> None:
    content = empty_members()
    store, poster, cost, _ = import_feed(storage, content)
    (message,) = poster.messages("ArtifactTooLarge")
    assert "the artifact has more than 10000 files and directories; the source's " \
           "spec.ignore" in message
    assert store.writes == []
    assert cost.peak < 8 * MIB, cost.peak
    assert_loop_kept_running(cost)


def test_a_large_advisory_is_named_not_read_and_the_rest_import(storage: Artifacts) -> None:
    large = many_packages(160_000)
    assert len(large) > 20 * MIB
    content = tar_gz([*vendored(), ("advisories/2026/large.json", large)])
    store, poster, cost, _ = import_feed(storage, content)
    assert len(bulletins(store)) == 6
    (warning,) = poster.messages("InvalidAdvisory")
    assert warning.startswith(f"advisories/2026/large.json: not read: {len(large)} bytes, "
                              "more than the 256 KiB read from one file")
    assert cost.peak < 24 * MIB, cost.peak


def test_an_advisory_of_fifteen_hundred_packages_is_read_off_the_event_loop(
        storage: Artifacts) -> None:
    wide = many_packages(1_500)
    assert len(wide) < 256 * 1024
    content = tar_gz([*vendored(), ("advisories/2026/wide.json", wide)])
    store, poster, cost, _ = import_feed(storage, content)
    # A valid advisory of no Flux component: skipped, the other six imported.
    assert len(bulletins(store)) == 6
    assert poster.messages("AdvisoriesImported")[0].startswith(
        "6 created, 0 updated, 0 unchanged, 1 skipped")
    assert cost.peak < 48 * MIB, cost.peak
    assert_loop_kept_running(cost)


def test_a_file_of_a_hundred_thousand_schema_errors_keeps_a_few(storage: Artifacts) -> None:
    advisory = document("GHSA-v554-xwgw-hc3w")
    advisory["aliases"] = [0] * 120_000  # every item a schema error
    wrong = json.dumps(advisory, separators=(",", ":")).encode()
    assert len(wrong) < 256 * 1024
    content = tar_gz([*vendored(), ("advisories/wrong.json", wrong)])
    store, poster, cost, _ = import_feed(storage, content)
    (warning,) = poster.messages("InvalidAdvisory")
    assert warning.startswith("advisories/wrong.json: not an OSV advisory: aliases[0]: 0 is "
                              "not of type 'string'")
    assert len(bulletins(store)) == 6
    assert cost.peak < 48 * MIB, cost.peak


def test_the_vendored_feed_still_imports_within_the_bounds(storage: Artifacts) -> None:
    """The bounds refuse none of the real advisories."""
    store, poster, _, _ = import_feed(storage, tar_gz(vendored()))
    assert sorted(bulletins(store)) == sorted(p.stem.lower() for p in ADVISORIES.glob("*.json")
                                           if "xwf3" not in p.name)
    assert poster.messages("InvalidAdvisory") == []


# --- the update check -----------------------------------------------------------------------

def release_data_of(content: bytes, monkeypatch: pytest.MonkeyPatch, cost: Cost) -> Any:
    controller = update_check()

    async def download(url: str, max_bytes: int | None = None) -> bytes:
        return content
    monkeypatch.setattr(updates_controller.artifacts, "download", download)
    assert controller.source_watch is not None
    controller.source_watch.objects["source"] = {
        "metadata": {"name": "source", "namespace": "flux-system"},
        "status": {"artifact": {"url": "http://source-controller/a.tar.gz",
                                "digest": "sha256:" + hashlib.sha256(content).hexdigest(),
                                "revision": "main@sha1:3333"}}}

    async def read() -> Any:
        assert controller.source_watch is not None
        try:
            return await controller._artifact_data()
        except artifacts.Unreadable as not_ready:
            return not_ready
    return measured(read(), cost)


def test_a_zero_bomb_in_place_of_release_data_is_a_condition_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    images = [(f"images/{p.relative_to(ADVISORIES.parent / 'images')}", p.read_bytes())
              for p in sorted((ADVISORIES.parent / "images").rglob("*")) if p.is_file()]
    cost = Cost()
    result = release_data_of(zero_bomb(after=images), monkeypatch, cost)
    assert isinstance(result, artifacts.Unreadable), result
    assert result.reason == "ArtifactTooLarge"
    assert result.message == (
        "GitRepository flux-system/source artifact main@sha1:3333: the artifact unpacks to "
        "more than 128 MiB; the source's spec.ignore can leave out what the operator does "
        "not read")
    assert cost.peak < 4 * MIB, cost.peak
    assert_loop_kept_running(cost)


def test_a_release_file_of_many_entries_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = ("  - name: ghcr.io/controlplaneio-fluxcd/distroless/source-controller\n"
             "    newTag: v1.7.4\n    digest: sha256:" + "a" * 64 + "\n")
    files = [("images/VERSION", b"v2.9.4\n"),
             ("images/v2.9.4/enterprise-distroless.yaml", ("images:\n" + entry * 300).encode())]
    cost = Cost()
    result = release_data_of(tar_gz(files), monkeypatch, cost)
    assert (result.reason, result.message) == (
        "ArtifactTooLarge", "GitRepository flux-system/source artifact main@sha1:3333: "
        "images/v2.9.4/enterprise-distroless.yaml: 300 images, more than 256")
    big = [("images/VERSION", b"v2.9.4\n"),
           ("images/v2.9.4/enterprise-distroless.yaml", ("images:\n" + entry * 1000).encode())]
    result = release_data_of(tar_gz(big), monkeypatch, Cost())
    assert result.reason == "ArtifactTooLarge"
    assert "images/v2.9.4/enterprise-distroless.yaml: " in result.message
    assert "more than the 64 KiB read from one file" in result.message
