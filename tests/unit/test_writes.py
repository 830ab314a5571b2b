"""The shared write path: complete status patches, the Event outbox, Event names and the
bounded Event queue, in-process against a fake API server that applies merge patches."""

from __future__ import annotations

import asyncio
import datetime
import re
from typing import Any

import pytest

from fluxsupport import constants
from fluxsupport.controllers import supportcase, writes
from fluxsupport.controllers.bulletin import BulletinController
from fluxsupport.domain.policy import Policy
from fluxsupport.kube import events, reflector
from fluxsupport.observability import metrics
from fluxsupport.sources.inventory import Inventory
from tests import fakes

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def case_body(fake: fakes.FakeClient, name: str = "late-case") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team", "name": name, "uid": f"uid-{name}",
                     "resourceVersion": str(fake.version), "generation": 1,
                     "creationTimestamp": "2020-01-06T10:00:00Z"},
        "spec": {"title": "Stuck", "description": "...", "severity": "Urgent",
                 "impact": {"statement": "All deploys blocked", "environment": "production",
                            "outage": "full", "businessCritical": True},
                 "component": "helm-controller", "category": "incident"},
        "status": fake.status.get(name, {}),
    }


def controller(fake: fakes.FakeClient, poster: events.EventPoster) -> supportcase.CaseController:
    return supportcase.CaseController(Policy(), fake, poster=poster)


async def settle(poster: events.EventPoster, fake: fakes.FakeClient) -> None:
    """Let the workers post what is queued (bounded: a few hundred loop turns)."""
    for _ in range(200):
        await asyncio.sleep(0)
        if poster._queue.empty() and not poster._inflight:
            return


def test_status_patch_removes_top_level_keys_the_desired_status_lacks() -> None:
    """A bulletin whose spec becomes invalid drops its components and counts."""
    current = {"observedGeneration": 1, "counts": {"vulnerable": 1}, "components": [{"x": 1}],
               "embargoed": False, "diagnostics": {"request": "1"}, "conditions": []}
    desired = {"observedGeneration": 2, "conditions": [{"type": "Ready"}]}
    assert writes.status_patch(current, desired, keep=("diagnostics",)) == {
        "observedGeneration": 2, "conditions": [{"type": "Ready"}],
        "counts": None, "components": None, "embargoed": None}
    assert writes.status_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}) == {"a": {"c": None}}


def test_an_invalid_spec_leaves_no_components_counts_or_metrics() -> None:
    """The same, through the bulletin controller."""
    fake = fakes.FakeClient()
    spec = {"title": "t", "severity": "High", "publishedAt": "2026-06-01T12:00:00Z",
            "vulnerabilities": [{"id": "CVE-2026-1", "components": ["source-controller"]}],
            "fixes": []}

    def body(generation: int, bulletin_spec: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"name": "b", "uid": "uid-b", "resourceVersion": str(fake.version),
                             "generation": generation},
                "spec": bulletin_spec, "status": fake.status.get("b", {})}

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], bool]:
        inventory = Inventory(fake, ("flux-system",))
        configmaps = reflector.Watch(fake, "/unused", lambda: None)
        bulletins = BulletinController(fake, inventory, configmaps, "fluxsupport-system")
        bulletins.observe(body(1, spec))
        await bulletins.reconcile("b")
        valid = dict(fake.status["b"])
        fake.version += 1  # the spec edit
        bulletins.observe(body(2, {**spec, "publishedAt": "last tuesday"}))
        await bulletins.reconcile("b")
        return valid, fake.status["b"], "b" in bulletins.views

    valid, invalid, has_view = asyncio.run(scenario())
    assert {"counts", "components", "embargoed"} <= set(valid)
    assert not {"counts", "components", "embargoed"} & set(invalid)
    ready = next(c for c in invalid["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], invalid["observedGeneration"]) == ("InvalidSpec", 2)
    assert not has_view, "the metrics of the valid spec are gone too"


def test_event_names_are_dns_subdomains_of_at_most_253_characters() -> None:
    """An Event name (``name.16hex``) stays a valid name for a 253-character object name."""
    now = datetime.datetime(2026, 12, 7, 10, 0, tzinfo=datetime.UTC)
    longest = "a" * 200 + "." + "b" * 52  # 253 characters, a valid object name
    names = {events.event_name(longest, "uid", reason, "m", now)
             for reason in ("FirstResponseBreached", "FirstResponded")}
    assert len(names) == 2, "cut names stay apart"
    for name in names | {events.event_name("a" * 236 + "-" * 17, "uid", "R", "m", now)}:
        assert len(name) <= 253, name
        assert DNS_SUBDOMAIN.match(name), name
    assert events.event_name("case", "uid", "R", "m", now) == events.event_name(
        "case", "uid", "R", "m", now), "deterministic"


def test_a_restarted_operator_posts_what_a_kill_interrupted_exactly_once() -> None:
    """The crash test's 79 lost Events: the transition is written with its Event in the
    outbox; a new process (its poster never ran) sees the outbox, posts the same name; a
    repeat is a 409 that counts as posted; the clear then empties the outbox."""
    fake = fakes.FakeClient()
    posted = metrics.EVENTS_POSTED._value.get()

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        first = controller(fake, events.EventPoster(fake))
        first.observe(case_body(fake))
        await first.reconcile(("team", "late-case"))
        written = dict(fake.status["late-case"])
        # SIGKILL here: the Event was queued in memory only, never posted.
        for _ in range(2):  # a second restart finds it posted already: 409
            poster = events.EventPoster(fake)
            again = controller(fake, poster)
            again.observe(case_body(fake))
            await again.reconcile(("team", "late-case"))
            await poster.start()
            await settle(poster, fake)
            await poster.stop()
        # The low-priority clear, as the scheduler would run it CLEAR_DELAY_S later.
        assert again.writer._posted
        await again._locked(("team", "late-case"))
        return written, fake.status["late-case"]

    written, cleared = asyncio.run(scenario())
    [owed] = written["pendingEvents"]
    assert (owed["reason"], owed["type"]) == ("FirstResponseBreached", "Warning")
    assert written["firstResponse"]["state"] == "Breached"
    assert list(fake.events) == [owed["name"]]
    assert fake.events[owed["name"]]["firstTimestamp"] == owed["at"]
    assert fake.count("POST", "/events") == 2
    assert metrics.EVENTS_POSTED._value.get() == posted + 2
    assert "pendingEvents" not in cleared
    assert cleared["firstResponse"] == written["firstResponse"]


def test_events_survive_a_long_outage_and_a_full_queue() -> None:
    """An Event is not dropped on a timer during an outage; the queue is bounded, a drop is
    counted, and the Event is still posted from the outbox once the queue drains."""
    fake = fakes.FakeClient()
    fake.outage = 12  # more failed attempts than the old EVENT_ATTEMPTS (5) allowed
    dropped = metrics.EVENTS_DROPPED.labels(reason="queue_full")
    before = dropped._value.get()

    async def scenario() -> tuple[int, int, set[str]]:
        poster = events.EventPoster(fake, queue_limit=1)
        cases = controller(fake, poster)
        for name in ("one", "two", "three"):
            cases.observe(case_body(fake, name))
            await cases.reconcile(("team", name))
        owed = set(cases.writer._owed)
        queued = poster._queue.qsize()
        await poster.start()
        await settle(poster, fake)
        # The queue drained: the owed cases were rescheduled at low priority...
        low = set(cases.scheduler._low_due)
        assert {key[1] for key in owed} <= {key[1] for key in low}
        for key in sorted(low):  # ...and their reconciles queue the outbox again.
            await cases._locked(key)  # type: ignore[arg-type]
            await settle(poster, fake)
        await poster.stop()
        return queued, len(owed), {body["involvedObject"]["name"]
                                   for body in fake.events.values()}

    queued, owed, posted_for = asyncio.run(scenario())
    assert (queued, owed) == (1, 2)
    assert dropped._value.get() == before + 2
    assert posted_for == {"one", "two", "three"}
    assert len(fake.events) == 3


def test_a_failing_reconcile_shows_in_ready_once_a_write_succeeds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The error of a reconcile that raises is in Ready (reason ReconcileError),
    counted, and the key is retried."""
    fake = fakes.FakeClient()
    failures = metrics.SCHEDULED_FAILURES.labels(kind=constants.SUPPORTCASE_KIND)
    before = failures._value.get()

    def broken(**_: Any) -> Any:
        raise ValueError("calendar exploded")

    async def scenario() -> tuple[dict[str, Any], bool]:
        cases = controller(fake, events.EventPoster(fake))
        cases.observe(case_body(fake))
        await cases.reconcile(("team", "late-case"))  # a good status first
        monkeypatch.setattr("fluxsupport.domain.supportcase.evaluate", broken)
        fake.version += 1  # a spec edit
        cases.observe(case_body(fake) | {"metadata": {
            **case_body(fake)["metadata"], "generation": 2}})
        await cases.reconcile(("team", "late-case"))
        return fake.status["late-case"], ("team", "late-case") in cases.scheduler._failures

    status, retrying = asyncio.run(scenario())
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReconcileError")
    assert "calendar exploded" in ready["message"]
    assert status["firstResponse"]["state"] == "Breached", "the rest of the status stays"
    assert retrying
    assert failures._value.get() == before + 1


def test_the_write_path_is_instrumented_by_kind() -> None:
    fake = fakes.FakeClient()
    reconciles = metrics.RECONCILES.labels(kind=constants.SUPPORTCASE_KIND, result="success")
    before = reconciles._value.get()
    writes_before = sum(sample.value for sample in metrics.STATUS_WRITE_SECONDS.collect()[0]
                        .samples if sample.name.endswith("_count")
                        and sample.labels["kind"] == constants.SUPPORTCASE_KIND)

    async def scenario() -> None:
        cases = controller(fake, events.EventPoster(fake))
        cases.observe(case_body(fake))
        await cases.reconcile(("team", "late-case"))
        await cases.reconcile(("team", "late-case"))  # nothing to write

    asyncio.run(scenario())
    writes_after = sum(sample.value for sample in metrics.STATUS_WRITE_SECONDS.collect()[0]
                       .samples if sample.name.endswith("_count")
                       and sample.labels["kind"] == constants.SUPPORTCASE_KIND)
    assert reconciles._value.get() == before + 2
    assert writes_after == writes_before + 1
