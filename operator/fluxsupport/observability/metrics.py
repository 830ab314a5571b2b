"""Prometheus metrics, all in one registry so that tests can read them in-process.

Per-case series come from a collector that reads the controllers' in-memory state at
scrape time. Nothing is incremented in handlers, so a restart, which re-reads every
object, reproduces the same values instead of double-counting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import prometheus_client
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from fluxsupport.controllers.bulletin import BulletinController
    from fluxsupport.controllers.supportcase import CaseController

REGISTRY = prometheus_client.CollectorRegistry(auto_describe=True)

BUILD_INFO = prometheus_client.Info(
    "fluxsupport_build", "Version of the running fluxsupport operator.", registry=REGISTRY)

# Operator health, as controller-runtime reports it for Go operators. Process-local counters:
# they start at 0 with each process, and rate()/increase() handle that reset.
RECONCILES = prometheus_client.Counter(
    "fluxsupport_reconcile", "Reconciles by kind and result (success, error, requeue).",
    ["kind", "result"], registry=REGISTRY)
RECONCILE_ERRORS = prometheus_client.Counter(
    "fluxsupport_reconcile_errors", "Reconciles that failed, by kind.", ["kind"],
    registry=REGISTRY)
SCHEDULED_FAILURES = prometheus_client.Counter(
    "fluxsupport_scheduled_reconcile_failures",
    "Scheduled reconciles that raised and were retried with backoff, by kind.", ["kind"],
    registry=REGISTRY)
STATUS_WRITE_SECONDS = prometheus_client.Histogram(
    "fluxsupport_status_write_duration_seconds", "Latency of status writes, by kind.", ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY)
API_REQUESTS = prometheus_client.Counter(
    "fluxsupport_api_requests",
    "Requests to the Kubernetes API by method and HTTP status code ('transport' when no "
    "answer came).", ["method", "code"], registry=REGISTRY)
EVENTS_POSTED = prometheus_client.Counter(
    "fluxsupport_events_posted", "Kubernetes Events posted (a 409 for one already posted counts "
    "as posted).", registry=REGISTRY)
EVENTS_DROPPED = prometheus_client.Counter(
    "fluxsupport_events_dropped",
    "Events not posted from memory (queue full, or refused); by reason.", ["reason"],
    registry=REGISTRY)

#: Bucket bounds in business seconds, at the default targets and between them.
RESPONSE_BUCKETS = (900, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800)
STATES = ("pending", "at_risk", "breached", "met", "late")
LEVELS = ("1", "2", "3", "4")


def _snake(state: str) -> str:
    return {"AtRisk": "at_risk"}.get(state, state.lower())


class CaseCollector(Collector):
    def __init__(self, cases: CaseController) -> None:
        self.cases = cases

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "supportcase", "level"]
        deadline = GaugeMetricFamily(
            "supportcase_first_response_deadline_timestamp_seconds",
            "When the first response of a case is due (cases awaiting a response only).",
            labels=labels)
        warning = GaugeMetricFamily(
            "supportcase_first_response_warning_timestamp_seconds",
            "When a case awaiting its first response becomes at risk.", labels=labels)
        responses = CounterMetricFamily(
            "supportcase_first_responses", "First responses by level and outcome.",
            labels=["level", "outcome"])
        open_cases = GaugeMetricFamily(
            "supportcase_open_cases", "Cases neither resolved nor dismissed, by state.",
            labels=["level", "state"])
        outcomes: Counter[tuple[str, str]] = Counter(
            {(str(level), outcome): count
             for (level, outcome), count in self.cases.deleted_outcomes.items()})
        open_counts: Counter[tuple[str, str]] = Counter()
        response_times: dict[str, list[float]] = {level: [] for level in LEVELS}
        for (namespace, name), view in list(self.cases.views.items()):
            level = str(view.level)
            if view.awaiting_response:
                deadline.add_metric([namespace, name, level], view.deadline)
                warning.add_metric([namespace, name, level], view.warning)
            if view.outcome is not None:
                outcomes[(level, view.outcome)] += 1
            if view.response_business_seconds is not None:
                response_times[level].append(view.response_business_seconds)
            if view.open:
                open_counts[(level, _snake(view.state.value))] += 1
        for level in LEVELS:
            for outcome in ("met", "breached"):
                responses.add_metric([level, outcome], outcomes[(level, outcome)])
            for state in STATES:
                open_cases.add_metric([level, state], open_counts[(level, state)])
        histogram = HistogramMetricFamily(
            "supportcase_first_response_business_seconds",
            "Business time from case creation to the first response.", labels=["level"])
        for level, values in response_times.items():
            buckets = [(str(bound), sum(1 for v in values if v <= bound))
                       for bound in RESPONSE_BUCKETS]
            buckets.append(("+Inf", len(values)))
            histogram.add_metric([level], buckets, sum_value=sum(values))
        yield deadline
        yield warning
        yield responses
        yield open_cases
        yield histogram


class BulletinCollector(Collector):
    """Bounded labels only: bulletin names, never CVE ids, titles or digests."""

    def __init__(self, bulletins: BulletinController) -> None:
        self.bulletins = bulletins

    def collect(self) -> Iterator[Metric]:
        components = GaugeMetricFamily(
            "fluxsupport_bulletin_components", "Running components by bulletin verdict.",
            labels=["bulletin", "verdict"])
        vulnerable = GaugeMetricFamily(
            "fluxsupport_component_vulnerable",
            "1 when the component runs an image the bulletin shows is vulnerable.",
            labels=["namespace", "component", "bulletin"])
        overdue = GaugeMetricFamily(
            "fluxsupport_bulletin_patch_overdue",
            "1 when patchBy has passed and a component is still vulnerable.",
            labels=["bulletin"])
        for name, view in list(self.bulletins.views.items()):
            for verdict, count in view.counts.items():
                components.add_metric([name, verdict], count)
            for namespace, component, is_vulnerable in view.vulnerable:
                vulnerable.add_metric([namespace, component, name], 1 if is_vulnerable else 0)
            overdue.add_metric([name], 1 if view.patch_overdue else 0)
        yield components
        yield vulnerable
        yield overdue


def register_bulletins(bulletins: BulletinController) -> None:
    REGISTRY.register(BulletinCollector(bulletins))


def register_cases(cases: CaseController) -> None:
    REGISTRY.register(CaseCollector(cases))


def render() -> bytes:
    return prometheus_client.generate_latest(REGISTRY)
