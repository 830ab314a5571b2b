"""Flux artifacts of real size over real HTTP: a loopback aiohttp server serves multi-MB tar.gz
files in many network writes, with and without a Content-Length, and the advisory feed and
the update check read them through the operator's own download, digest check and reader.
The OSV feed (1,237 files, 1,200 advisories) and the distribution snapshot (3,001 files,
about 5 MB packed) are generated from the real data in tests/data/upstream (tests/realsize.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import pathlib
import random
import shutil
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp import web

from fluxsupport.controllers import advisories as feed_controller
from fluxsupport.controllers import updates as updates_controller
from fluxsupport.domain import artifact
from fluxsupport.domain.policy import load_policy
from fluxsupport.kube import reflector
from fluxsupport.kube.events import EventPoster
from fluxsupport.sources import artifacts
from fluxsupport.sources.inventory import Inventory
from tests import fakes, fixtures, realsize
from tests.unit.test_advisory_feed import Poster, bulletins, collected

MIB = 1024 * 1024


def sha256(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


class Storage:
    """source-controller's file server as seen over the network: the body goes out in
    ``chunk``-byte writes with a pause between some, so that the client receives it over
    many reads; with ``length`` a Content-Length is sent, without it chunked encoding."""

    def __init__(self, content: bytes = b"", chunk: int = 64 * 1024, length: bool = True,
                 declared: int | None = None) -> None:
        self.content = content
        self.chunk = chunk
        self.length = length
        #: A Content-Length other than the body's (a body longer than it says).
        self.declared = declared
        self.requests = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        response = web.StreamResponse(headers={"Content-Type": "application/gzip"})
        if self.length:
            response.content_length = (self.declared if self.declared is not None
                                       else len(self.content))
        if self.declared is not None:
            response.force_close()  # the connection ends where the body does
        await response.prepare(request)
        for offset in range(0, len(self.content), self.chunk):
            await response.write(self.content[offset:offset + self.chunk])
            if offset // self.chunk % 8 == 0:
                await asyncio.sleep(0.001)
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def serving(storage: Storage) -> AsyncIterator[Storage]:
    app = web.Application()
    app.router.add_get("/gitrepository/flux-system/source/artifact.tar.gz", storage.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    storage.url = f"http://127.0.0.1:{port}/gitrepository/flux-system/source/artifact.tar.gz"
    try:
        yield storage
    finally:
        await runner.cleanup()


def download(storage: Storage, max_bytes: int | None = None) -> bytes:
    async def run() -> bytes:
        async with serving(storage):
            return bytes(await artifacts.download(storage.url, max_bytes))
    return asyncio.run(run())


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
def test_a_multi_mb_artifact_sent_in_many_writes_is_read_to_its_end(length: bool) -> None:
    content = random.Random(1).randbytes(6 * MIB + 12345)
    got = download(Storage(content, chunk=16 * 1024, length=length))
    assert len(got) == len(content)
    artifact.verify_digest(got, sha256(content))


def test_an_artifact_past_the_limit_is_refused_with_what_to_do() -> None:
    content = random.Random(2).randbytes(3 * MIB)
    # A Content-Length past the limit: refused before the body is read.
    with pytest.raises(artifacts.ArtifactTooLarge, match=r"3145728 bytes, more than the "
                       r"2097152 bytes the operator reads; .*spec\.ignore"):
        download(Storage(content), max_bytes=2 * MIB)
    # No length: refused when the body goes past the limit, not cut at it.
    with pytest.raises(artifacts.ArtifactTooLarge, match="more than 2097152 bytes, more than"):
        download(Storage(content, length=False), max_bytes=2 * MIB)
    # Exactly the limit is read.
    assert download(Storage(content, length=False), max_bytes=3 * MIB) == content
    # A server that stops before the length it announced: an error, never a short artifact.
    with pytest.raises(artifacts.ArtifactError, match="Response payload is not completed"):
        download(Storage(content, declared=len(content) + 1))


# --- the advisory feed reads a thousand advisories from a multi-MB artifact ----------------

def feed_repository(tmp_path: pathlib.Path) -> tuple[realsize.OsvFeed, bytes]:
    """1,200 generated advisories under advisories/ in a distribution-sized repository."""
    feed = realsize.osv_feed(1200)
    root = tmp_path / "repository"
    realsize.distribution_snapshot(root, files=1500)
    realsize.write_files(root, feed.files)
    return feed, realsize.tarball(root)


def test_the_advisory_feed_imports_a_thousand_advisories_from_a_multi_mb_artifact(
        tmp_path: pathlib.Path) -> None:
    expected, content = feed_repository(tmp_path)
    assert len(content) > 4 * MIB
    store, poster = fakes.FakeClient(), Poster()
    settings = load_policy("advisories: {sourceRef: {kind: GitRepository, name: source}}"
                           ).advisories
    assert settings is not None
    feed = feed_controller.AdvisoryFeed(store, ("flux-system",), settings,
                                        poster=cast(EventPoster, poster))
    feed.source_watch.synced.set()

    async def run() -> None:
        async with serving(Storage(content, length=False)) as storage:
            feed.source_watch.objects["source"] = {
                "metadata": {"name": "source", "namespace": "flux-system", "uid": "u"},
                "status": {"artifact": {"url": storage.url, "digest": sha256(content),
                                        "revision": "main@sha1:1111"}}}
            await feed._scheduled(feed_controller.KEY)
    asyncio.run(run())

    assert poster.messages("ArtifactDigestMismatch") == []
    assert sorted(bulletins(store)) == sorted(expected.bulletins)
    assert poster.messages("AdvisoriesImported") == [
        f"{len(expected.bulletins)} created, 0 updated, 0 unchanged, {len(expected.skipped)} "
        "skipped (no Flux component), 0 invalid, 0 left alone (not written by the feed), "
        "from revision main@sha1:1111"]
    for name, components in expected.bulletins.items():
        spec = bulletins(store)[name]["spec"]
        assert [a["component"] for a in spec["affectedVersions"]] == components, name
        component, first = expected.first_range[name]
        ranges = next(a["ranges"] for a in spec["affectedVersions"]
                      if a["component"] == component)
        assert ranges[0] == first, name
    for name in expected.superseded & set(expected.bulletins):
        assert "older copy" not in bulletins(store)[name]["spec"]["title"]
    values = collected(feed)
    assert values["fluxsupport_advisory_feed_up"] == 1
    assert values["fluxsupport_advisory_feed_advisories{outcome=created}"] == \
        len(expected.bulletins)


# --- the update check -----------------------------------------------------------------------

def update_check() -> updates_controller.UpdateController:
    settings = load_policy("updates: {sourceRef: {kind: GitRepository, name: source}}").updates
    assert settings is not None
    client = fakes.FakeClient()
    client.no_requests = True  # reading the artifact asks nothing of the API server
    controller = updates_controller.UpdateController(
        client, Inventory(client, ("flux-system",)),
        reflector.Watch(client, "/api/v1/namespaces/fluxsupport-system/configmaps",
                        lambda: None), "fluxsupport-system", settings)
    assert controller.source_watch is not None
    controller.source_watch.synced.set()
    return controller


def publish(controller: updates_controller.UpdateController, url: str, digest: str) -> None:
    assert controller.source_watch is not None
    controller.source_watch.objects["source"] = {
        "metadata": {"name": "source", "namespace": "flux-system"},
        "status": {"artifact": {"url": url, "digest": digest, "revision": "main@sha1:2222"}}}


def release_data(controller: updates_controller.UpdateController) -> Any:
    """The release data, or the reason the check cannot run."""
    assert controller.source_watch is not None
    try:
        return asyncio.run(controller._artifact_data())
    except artifacts.Unreadable as not_ready:
        return not_ready


def test_the_update_check_reads_a_distribution_snapshot_of_several_mb(
        tmp_path: pathlib.Path) -> None:
    counts = realsize.distribution_snapshot(tmp_path / "distribution")
    assert sum(counts.values()) >= 3000
    content = realsize.tarball(tmp_path / "distribution")
    assert len(content) > 4 * MIB
    controller = update_check()

    async def run() -> Any:
        async with serving(Storage(content, length=True)) as storage:
            publish(controller, storage.url, sha256(content))
            assert controller.source_watch is not None
            return await controller._artifact_data()
    data = asyncio.run(run())
    assert data.latest == "v2.9.4"
    # The real releases and the generated older ones, four variants each.
    assert len(data.releases) == counts["images"] - 1
    assert {r.version for r in data.releases} >= {"v2.7.5", "v2.8.8", "v2.9.4", "v2.0.0"}


def test_the_update_check_retries_a_digest_mismatch_with_backoff(tmp_path: pathlib.Path) -> None:
    shutil.copytree(fixtures.UPSTREAM / "images", tmp_path / "images")
    content = realsize.tarball(tmp_path)
    controller = update_check()

    async def attempt(storage: Storage, digest: str) -> Any:
        publish(controller, storage.url, digest)
        assert controller.source_watch is not None
        try:
            return await controller._artifact_data()
        except artifacts.Unreadable as not_ready:
            return not_ready

    async def run() -> None:
        async with serving(Storage(content)) as storage:
            # source-controller is writing a new file: the digest does not match yet.
            delays = []
            for _ in range(3):
                before = time.time()
                failed = await attempt(storage, sha256(b"the next artifact"))
                assert failed.reason == "ArtifactDigestMismatch"
                assert failed.message.endswith("; retrying")
                due = controller.scheduler._due.get(updates_controller.KEY)
                assert due is not None, "a retry is scheduled"
                delays.append(due - before)  # the delay, plus the time the attempt took
                controller.scheduler.cancel(updates_controller.KEY)
            for delay, expected in zip(delays, (15, 30, 60), strict=True):
                assert expected <= delay < expected + 10, delays
            assert storage.requests == 3
            # The file is complete: read, and the backoff starts again from the first delay.
            data = await attempt(storage, sha256(content))
            assert data.latest == "v2.9.4"
            before = time.time()
            failed = await attempt(storage, sha256(b"yet another"))
            assert failed.reason == "ArtifactDigestMismatch"
            due = controller.scheduler._due[updates_controller.KEY]
            assert 15 <= due - before < 25
    asyncio.run(run())


def test_an_artifact_too_large_is_a_reason_and_not_downloaded_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifacts, "MAX_BYTES", MIB // 2)  # the operator's limit, made small
    controller = update_check()
    content = random.Random(3).randbytes(MIB)

    async def run() -> None:
        async with serving(Storage(content)) as storage:
            publish(controller, storage.url, sha256(content))
            assert controller.source_watch is not None
            for _ in range(2):
                with pytest.raises(artifacts.Unreadable) as raised:
                    await controller._artifact_data()
                assert raised.value.reason == "ArtifactTooLarge"
                assert "spec.ignore" in raised.value.message
            assert storage.requests == 1, "the same digest is not downloaded again"
            assert updates_controller.KEY not in controller.scheduler._due, "no retry"
    asyncio.run(run())
