"""The metrics the collectors export: counters that never go down, queue depth.

The controller runs in-process against a fake client that applies merge patches, so that a
case's status holds what the operator wrote, as on the API server.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import zoneinfo
from collections.abc import Hashable, Mapping
from typing import Any

import prometheus_client
from prometheus_client.registry import Collector

from fluxsupport import constants
from fluxsupport.controllers.scheduler import Scheduler
from fluxsupport.controllers.supportcase import CaseController
from fluxsupport.domain.policy import Policy
from fluxsupport.kube import api
from fluxsupport.observability import metrics
from tests import fakes

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

#: Monday 10:00 London; answered an hour later, within the 8 business hours of High.
CREATED = "2025-12-01T10:00:00Z"
RESPONDED = "2025-12-01T11:00:00Z"


def fake_client() -> fakes.FakeClient:
    """The fake API server; its status writes fail with a 500 while ``failures`` > 0."""
    client = fakes.FakeClient()
    client.failure = api.ApiError(500, "etcd is slow")
    return client


def case(name: str, uid: str, responded: str | None = RESPONDED,
         status: Mapping[str, Any] | None = None, version: str = "1") -> dict[str, Any]:
    annotations = {constants.RESPONDED_AT: responded} if responded else {}
    return {
        "metadata": {"namespace": "team-a", "name": name, "uid": uid,
                     "resourceVersion": version, "generation": 1,
                     "creationTimestamp": CREATED, "annotations": annotations},
        "spec": {"title": "HelmReleases stuck", "description": "...", "severity": "High",
                 "impact": {"statement": "Deploys blocked", "environment": "production",
                            "outage": "partial", "businessCritical": True},
                 "component": "helm-controller", "category": "incident"},
        "status": dict(status or {}),
    }


def controller(client: fakes.FakeClient | None = None) -> CaseController:
    return CaseController(Policy(), client or fake_client())


def handle(cases: CaseController, body: Mapping[str, Any]) -> None:
    """A watch event of the case, reconciled at once (the case watch hands it to the
    scheduler instead)."""
    key, news = cases.observe(body)
    if news:
        asyncio.run(cases.reconcile(key))


def samples(collector: Collector) -> Samples:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in collector.collect() for sample in family.samples}


def responses(cases: CaseController, outcome: str = "met", level: str = "2") -> float:
    return samples(metrics.CaseCollector(cases))[
        ("supportcase_first_responses_total", (("level", level), ("outcome", outcome)))]


def histogram(cases: CaseController, level: str = "2") -> tuple[float, float]:
    """(count, sum) of the business-seconds histogram of ``level``."""
    found = samples(metrics.CaseCollector(cases))
    labels = (("level", level),)
    return (found[("supportcase_first_response_business_seconds_count", labels)],
            found[("supportcase_first_response_business_seconds_sum", labels)])


def test_deleting_a_case_never_lowers_the_counter_or_the_histogram() -> None:
    cases = controller()
    handle(cases, case("answered", "uid-1"))
    handle(cases, case("also-answered", "uid-2", responded="2025-12-01T12:00:00Z"))
    assert responses(cases) == 2
    assert histogram(cases) == (2, 3600 + 7200)
    cases.forget("team-a", "answered")
    cases.forget("team-a", "also-answered")
    assert responses(cases) == 2
    assert histogram(cases) == (2, 3600 + 7200)
    # The per-case gauges do follow the deletion.
    assert ("supportcase_open_cases", (("level", "2"), ("state", "met"))) in samples(
        metrics.CaseCollector(cases))
    assert samples(metrics.CaseCollector(cases))[
        ("supportcase_open_cases", (("level", "2"), ("state", "met")))] == 0


def test_re_observing_the_same_case_does_not_count_it_again() -> None:
    client = fake_client()
    cases = controller(client)
    handle(cases, case("answered", "uid-1"))
    assert responses(cases) == 1
    written = client.status["uid-1"]
    assert written["firstResponse"]["respondedAt"] == RESPONDED
    # The echo of our own write, then a re-list with a newer resourceVersion: the status
    # holds the response, nothing new to count.
    handle(cases, case("answered", "uid-1", status=written, version="101"))
    handle(cases, case("answered", "uid-1", status=written, version="150"))
    # Someone strips the status; the operator writes the response again but counted it once.
    handle(cases, case("answered", "uid-1", status={}, version="160"))
    assert client.status["uid-1"]["firstResponse"]["respondedAt"] == RESPONDED
    assert responses(cases) == 1
    assert histogram(cases) == (1, 3600)


def test_a_restarted_operator_counts_only_responses_it_records() -> None:
    before = fake_client()
    handle(controller(before), case("answered", "uid-1"))
    recorded = before.status["uid-1"]
    # The new process lists the case whose response the old one recorded, and one answered
    # while no operator ran.
    restarted = controller()
    handle(restarted, case("answered", "uid-1", status=recorded, version="200"))
    handle(restarted, case("answered-meanwhile", "uid-2", version="201"))
    assert responses(restarted) == 1
    assert histogram(restarted) == (1, 3600)


def test_a_late_response_counts_as_breached() -> None:
    cases = controller()
    handle(cases, case("late", "uid-1", responded="2025-12-02T12:00:00Z"))
    assert responses(cases, "breached") == 1
    assert responses(cases, "met") == 0


def test_a_failed_write_counts_the_response_when_it_is_written() -> None:
    client = fake_client()
    client.failures = 1
    cases = controller(client)
    handle(cases, case("answered", "uid-1"))
    assert "uid-1" not in client.status
    assert responses(cases) == 0  # not recorded yet
    asyncio.run(cases.reconcile(("team-a", "answered")))  # the retry
    assert responses(cases) == 1
    asyncio.run(cases.reconcile(("team-a", "answered")))
    assert responses(cases) == 1


def test_unanswered_cases_count_nothing_and_every_series_starts_at_zero() -> None:
    cases = controller()
    handle(cases, case("waiting", "uid-1", responded=None))
    found = samples(metrics.CaseCollector(cases))
    totals = {labels: value for (name, labels), value in found.items()
              if name == "supportcase_first_responses_total"}
    assert len(totals) == 8  # 4 levels x met, breached
    assert set(totals.values()) == {0}
    assert found[("supportcase_first_response_business_seconds_count",
                  (("level", "1"),))] == 0


def test_queue_depth_is_the_pending_keys_of_each_scheduler() -> None:
    async def nothing(_: Hashable) -> None:
        pass

    cases, bulletins = Scheduler(nothing), Scheduler(nothing)
    collector = metrics.QueueCollector()
    collector.queues = {"SupportCase": cases, "SecurityBulletin": bulletins}
    for index in range(3):
        cases.schedule(("team-a", f"case-{index}"), time.time() + 3600)
    cases.replace(("team-a", "case-0"), time.time() + 60)  # a key counts once
    bulletins.schedule("fsb-1", time.time() + 60)

    def depth() -> dict[str, float]:
        return {dict(labels)["kind"]: value for (name, labels), value in
                samples(collector).items() if name == "fluxsupport_queue_depth"}

    assert depth() == {"SupportCase": 3, "SecurityBulletin": 1}
    cases.cancel(("team-a", "case-1"))
    assert depth() == {"SupportCase": 2, "SecurityBulletin": 1}


def test_registering_the_controllers_exports_their_queue_depth() -> None:
    cases = controller()
    registered = dict(metrics.QUEUES.queues)
    try:
        metrics.QUEUES.queues[constants.SUPPORTCASE_KIND] = cases.scheduler
        cases.scheduler.schedule(("team-a", "x"), time.time() + 60)
        assert metrics.REGISTRY.get_sample_value(
            "fluxsupport_queue_depth", {"kind": constants.SUPPORTCASE_KIND}) == 1
    finally:
        metrics.QUEUES.queues = registered


def test_a_scrape_of_the_case_counts_leaves_the_per_case_series_uncollected() -> None:
    cases = controller()
    handle(cases, case("open", "uid-1", responded=None))
    collector = metrics.CaseCollector(cases)
    collected: list[str] = []

    def deadlines() -> Any:
        collected.append("deadlines")
        return collector.deadlines()

    registry = prometheus_client.CollectorRegistry(auto_describe=True)
    registry.register(metrics.Part(deadlines))
    registry.register(metrics.Part(collector.summary))
    collected.clear()  # auto_describe collected once, at registration
    text = prometheus_client.generate_latest(
        registry.restricted_registry(["supportcase_open_cases"])).decode()
    assert 'supportcase_open_cases{level="2",state="breached"} 1.0' in text
    assert "deadline" not in text
    assert collected == []
    assert "supportcase_first_response_deadline_timestamp_seconds{" in \
        prometheus_client.generate_latest(registry).decode()
    assert collected == ["deadlines"]


def test_month_starts_are_the_policy_zones_midnights() -> None:
    zone = zoneinfo.ZoneInfo("Europe/London")
    # 1 March 2026 00:30 in London (GMT): the first of the month, and February has 28 days.
    now = datetime.datetime(2026, 3, 1, 0, 30, tzinfo=zone).timestamp()
    assert metrics.month_starts(now, zone) == {
        "2026-03": (datetime.datetime(2026, 3, 1, tzinfo=zone).timestamp(),
                    datetime.datetime(2026, 4, 1, tzinfo=zone).timestamp()),
        "2026-02": (datetime.datetime(2026, 2, 1, tzinfo=zone).timestamp(),
                    datetime.datetime(2026, 3, 1, tzinfo=zone).timestamp())}
    # April starts at midnight BST, an hour before midnight UTC.
    assert metrics.month_starts(now, zone)["2026-03"][1] == \
        datetime.datetime(2026, 3, 31, 23, 0, tzinfo=datetime.UTC).timestamp()
