"""Prometheus metrics, all in one registry so that tests can read them in-process.

Gauges of the current state (deadlines, open cases, verdicts, queue depth) come from
collectors that read the controllers' in-memory state at scrape time, so they follow
deletions and restarts by themselves. Counters and histograms never do that: rebuilt from
live objects they would shrink when a case is deleted, which rate() and increase() read as
a reset. They are process-local and only ever incremented (see ``FirstResponses``).

Each collector names what it reads of its controller in a protocol (``Cases``, ``Bulletins``,
``Updates``, ...): mostly the metric values of each object, which the domain evaluation of
its kind returns. This module imports no controller.
"""

from __future__ import annotations

import datetime
import time
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from typing import Protocol

import prometheus_client
from prometheus_client.core import (
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fluxsupport import constants
from fluxsupport.domain import casestatus, securitybulletin, updatecheck
from fluxsupport.domain import policy as policy_module

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
SUBMISSIONS = prometheus_client.Counter(
    "fluxsupport_submissions",
    "Cases sent to the support team, by channel (portal, email) and outcome (submitted; "
    "linked: a ticket found by the case's uid instead of filed again; failed: an attempt).",
    ["channel", "outcome"], registry=REGISTRY)
SUBMISSION_LATENCY = prometheus_client.Histogram(
    "fluxsupport_submission_latency_seconds",
    "From a case's creation to its ticket or email, by channel.", ["channel"],
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600), registry=REGISTRY)
EVENTS_DROPPED = prometheus_client.Counter(
    "fluxsupport_events_dropped",
    "Events not posted from memory (queue full, or refused); by reason.", ["reason"],
    registry=REGISTRY)
EVENT_WORKER_RESTARTS = prometheus_client.Counter(
    "fluxsupport_event_worker_restarts",
    "Event workers that failed unexpectedly (an answer that is not JSON, say) and were "
    "started again; the Event they held is queued again.", registry=REGISTRY)

#: Bucket bounds in business seconds, at the default targets and between them.
RESPONSE_BUCKETS = (900, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800)
STATES = ("pending", "at_risk", "breached", "met", "late")
LEVELS = ("1", "2", "3", "4")


def _snake(state: str) -> str:
    return {"AtRisk": "at_risk"}.get(state, state.lower())


class FirstResponses:
    """``supportcase_first_responses_total`` and the business-seconds histogram.

    ``Resolutions`` counts resolutions against their targets the same way.

    A case counts once, in the process that records its first response in the case's status:
    the stored status had no ``respondedAt`` and this process's write added it. A restarted
    operator finds the responses it did not record in the status already and leaves them
    out, so its counters start again near 0, which Prometheus reads as a counter reset, and
    ``increase()`` over a restart counts every response once. Deleting a case changes
    nothing here. The uids keep a case from counting twice within a process (a response
    annotation removed and given again); a case's uid is forgotten with the case, so that
    memory follows the live cases.
    """

    noun, plural = "first response", "first_responses"

    def __init__(self) -> None:
        # Not in REGISTRY: CaseCollector yields them, so that each controller (and each unit
        # test) has its own.
        singular = self.plural.removesuffix("s")
        self.total = prometheus_client.Counter(
            f"supportcase_{self.plural}",
            f"{self.noun.capitalize()}s recorded by this process, by level and outcome "
            "(met, breached).", ["level", "outcome"], registry=None)
        self.business_seconds = prometheus_client.Histogram(
            f"supportcase_{singular}_business_seconds",
            f"Business time from case creation to the {self.noun}, of the {self.noun}s "
            "recorded by this process.", ["level"], buckets=RESPONSE_BUCKETS, registry=None)
        # Every series exists from the start at 0: increase() misses the first increment of
        # a series that appears already at 1.
        for level in LEVELS:
            self.business_seconds.labels(level)
            for outcome in ("met", "breached"):
                self.total.labels(level, outcome)
        self._counted: set[str] = set()

    @staticmethod
    def _outcome(view: casestatus.CaseMetrics) -> tuple[str | None, float | None]:
        return view.outcome, view.response_business_seconds

    def record(self, uid: str, view: casestatus.CaseMetrics) -> bool:
        """Count the outcome that ``view`` shows, unless ``uid`` already counted."""
        outcome, seconds = self._outcome(view)
        if outcome is None or uid in self._counted:
            return False
        self._counted.add(uid)
        level = str(view.level)
        self.total.labels(level, outcome).inc()
        if seconds is not None:
            self.business_seconds.labels(level).observe(seconds)
        return True

    def forget(self, uid: str) -> None:
        self._counted.discard(uid)

    def collect(self) -> Iterator[Metric]:
        yield from self.total.collect()
        yield from self.business_seconds.collect()


class Resolutions(FirstResponses):
    """``supportcase_resolutions_total`` and ``supportcase_resolution_business_seconds``:
    resolutions of cases whose level has a resolution target."""

    noun, plural = "resolution", "resolutions"

    @staticmethod
    def _outcome(view: casestatus.CaseMetrics) -> tuple[str | None, float | None]:
        return view.resolution_outcome, view.resolution_business_seconds


def month_starts(now: float, zone: datetime.tzinfo) -> dict[str, tuple[float, float]]:
    """The current and the previous calendar month in ``zone``: YYYY-MM -> [start, end) as
    epoch seconds. A scrape buckets every case by comparing numbers, not dates."""
    current = datetime.datetime.fromtimestamp(now, zone).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0)
    previous = (current - datetime.timedelta(days=1)).replace(day=1)
    following = (current + datetime.timedelta(days=32)).replace(day=1)
    return {current.strftime("%Y-%m"): (current.timestamp(), following.timestamp()),
            previous.strftime("%Y-%m"): (previous.timestamp(), current.timestamp())}


class Part(Collector):
    """One method of a collector, registered on its own: a scrape that asks for some names
    (``?name[]=``) collects only the parts that yield them. A check of the case counts then
    costs nothing at 10,000 cases, where the per-case series take the operator about a
    second of CPU to collect and render."""

    def __init__(self, collect: Callable[[], Iterator[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        return self._collect()


CaseKey = tuple[str, str]


class Cases(Protocol):
    """What CaseCollector reads of the case controller."""

    @property
    def views(self) -> Mapping[CaseKey, casestatus.CaseMetrics]: ...
    @property
    def policy(self) -> policy_module.Policy: ...
    @property
    def first_responses(self) -> FirstResponses: ...
    @property
    def resolutions(self) -> Resolutions: ...
    @property
    def scheduler(self) -> Sized: ...


class CaseCollector(Collector):
    def __init__(self, cases: Cases) -> None:
        self.cases = cases

    def collect(self) -> Iterator[Metric]:
        yield from self.deadlines()
        yield from self.summary()

    def deadlines(self) -> Iterator[Metric]:
        """A few series per case: what the alerts on one case need."""
        labels = ["namespace", "supportcase", "level"]
        deadline = GaugeMetricFamily(
            "supportcase_first_response_deadline_timestamp_seconds",
            "When the first response of a case is due (cases awaiting a response only).",
            labels=labels)
        warning = GaugeMetricFamily(
            "supportcase_first_response_warning_timestamp_seconds",
            "When a case awaiting its first response becomes at risk.", labels=labels)
        resolution_deadline = GaugeMetricFamily(
            "supportcase_resolution_deadline_timestamp_seconds",
            "When an open case is due to be resolved (levels with a resolution target only).",
            labels=labels)
        resolution_warning = GaugeMetricFamily(
            "supportcase_resolution_warning_timestamp_seconds",
            "When an open case with a resolution target becomes at risk of missing it.",
            labels=labels)
        waiting = GaugeMetricFamily(
            "supportcase_waiting_on_customer_since_timestamp_seconds",
            "When an open case began waiting on the customer (while it waits; its clocks are "
            "paused and their deadline series absent).", labels=labels)
        tier = GaugeMetricFamily(
            "supportcase_escalation_tier",
            "The highest escalation tier an open case reached (0: none; 1 account manager, 2 "
            "head of customer success, 3 executive sponsor), where the policy has tiers.",
            labels=labels)
        rca_due = GaugeMetricFamily(
            "supportcase_root_cause_analysis_due_timestamp_seconds",
            "When the root-cause analysis of a resolved case is due, while it is owed and not "
            "delivered (past: overdue).", labels=labels)
        for (namespace, name), view in list(self.cases.views.items()):
            level = str(view.level)
            if view.waiting_since is not None:
                waiting.add_metric([namespace, name, level], view.waiting_since)
            if view.escalation_tier is not None and view.open:
                tier.add_metric([namespace, name, level], view.escalation_tier)
            if view.rca_due is not None:
                rca_due.add_metric([namespace, name, level], view.rca_due)
            if view.awaiting_response and not view.paused:
                deadline.add_metric([namespace, name, level], view.deadline)
                warning.add_metric([namespace, name, level], view.warning)
            if view.resolution_deadline is not None and view.resolution_warning is not None:
                resolution_deadline.add_metric([namespace, name, level], view.resolution_deadline)
                resolution_warning.add_metric([namespace, name, level], view.resolution_warning)
        yield deadline
        yield warning
        yield resolution_deadline
        yield resolution_warning
        yield waiting
        yield tier
        yield rca_due

    def summary(self) -> Iterator[Metric]:
        """Counts over all cases, a fixed number of series."""
        open_cases = GaugeMetricFamily(
            "supportcase_open_cases", "Cases neither resolved nor dismissed, by state.",
            labels=["level", "state"])
        monthly = GaugeMetricFamily(
            "supportcase_monthly_cases",
            "Cases opened in the current and the previous calendar month (the policy's zone), "
            "by outcome against their targets: met, missed, or pending (not decided yet).",
            labels=["month", "outcome"])
        ratio = GaugeMetricFamily(
            "supportcase_monthly_compliance_ratio",
            "Share of the month's decided cases that met all their targets (0-1); absent "
            "while none is decided.", labels=["month"])
        target = GaugeMetricFamily(
            "supportcase_compliance_target_ratio",
            "The policy's monthly compliance target (complianceTarget), 0-1.")
        shown = month_starts(time.time(), zoneinfo.ZoneInfo(self.cases.policy.timezone))
        open_counts: Counter[tuple[str, str]] = Counter()
        month_counts: Counter[tuple[str, str]] = Counter()
        for view in list(self.cases.views.values()):
            if view.open:
                open_counts[(str(view.level), _snake(view.state.value))] += 1
            if view.compliance is not None:
                for month, (start, end) in shown.items():
                    if start <= view.created < end:
                        month_counts[(month, view.compliance)] += 1
        for level in LEVELS:
            for state in STATES:
                open_cases.add_metric([level, state], open_counts[(level, state)])
        for month in shown:
            for outcome in ("met", "missed", "pending"):
                monthly.add_metric([month, outcome], month_counts[(month, outcome)])
            decided = month_counts[(month, "met")] + month_counts[(month, "missed")]
            if decided:
                ratio.add_metric([month], month_counts[(month, "met")] / decided)
        target.add_metric([], self.cases.policy.compliance_target)
        yield open_cases
        yield monthly
        yield ratio
        yield target
        yield from self.cases.first_responses.collect()
        yield from self.cases.resolutions.collect()


class QueueCollector(Collector):
    """``fluxsupport_queue_depth``: keys each controller's scheduler holds, by kind.

    controller-runtime's ``workqueue_depth`` counterpart. A key waits here for its next
    instant (a warning point, a deadline, a retry after a failed write), so the gauge is
    about one per case awaiting a response; a steady climb beyond that is a backlog.
    """

    def __init__(self) -> None:
        self.queues: dict[str, Sized] = {}

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "fluxsupport_queue_depth",
            "Keys waiting in a controller's scheduler (next instant or retry), by kind.",
            labels=["kind"])
        for kind, queue in sorted(self.queues.items()):
            depth.add_metric([kind], len(queue))
        yield depth


QUEUES = QueueCollector()
REGISTRY.register(QUEUES)


class Bulletins(Protocol):
    """What BulletinCollector reads of the bulletin controller."""

    @property
    def views(self) -> Mapping[str, securitybulletin.BulletinMetrics]: ...
    @property
    def scheduler(self) -> Sized: ...


class BulletinCollector(Collector):
    """Bounded labels only: bulletin names, never CVE ids, titles or digests."""

    def __init__(self, bulletins: Bulletins) -> None:
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
        vendor_due = GaugeMetricFamily(
            "fluxsupport_bulletin_vendor_remediation_due_timestamp_seconds",
            "The earliest due time of the vendor's fixes the bulletin lists no digest for yet "
            "(policy remediationFramework only).", labels=["bulletin"])
        vendor_overdue = GaugeMetricFamily(
            "fluxsupport_bulletin_vendor_remediation_overdue",
            "1 when the vendor's fix for a vulnerability of the bulletin is past its due time "
            "and no fixed digest is listed (policy remediationFramework only).",
            labels=["bulletin"])
        tier = GaugeMetricFamily(
            "fluxsupport_bulletin_escalation_tier",
            "3 while a critical vulnerability of the bulletin is past the vendor's remediation "
            "deadline with no fix listed (escalation tier 3, the executive sponsor), else 0 "
            "(policy escalation and remediationFramework only).", labels=["bulletin"])
        for name, view in list(self.bulletins.views.items()):
            for verdict, count in view.counts.items():
                components.add_metric([name, verdict], count)
            for namespace, component, is_vulnerable in view.vulnerable:
                vulnerable.add_metric([namespace, component, name], 1 if is_vulnerable else 0)
            overdue.add_metric([name], 1 if view.patch_overdue else 0)
            if view.vendor_due is not None:
                vendor_due.add_metric([name], view.vendor_due)
            if view.vendor_overdue is not None:
                vendor_overdue.add_metric([name], 1 if view.vendor_overdue else 0)
            if view.escalation_tier is not None:
                tier.add_metric([name], view.escalation_tier)
        yield components
        yield vulnerable
        yield overdue
        yield vendor_due
        yield vendor_overdue
        yield tier


def register_bulletins(bulletins: Bulletins) -> None:
    REGISTRY.register(BulletinCollector(bulletins))
    QUEUES.queues[constants.BULLETIN_KIND] = bulletins.scheduler


def register_cases(cases: Cases) -> None:
    collector = CaseCollector(cases)
    REGISTRY.register(Part(collector.deadlines))
    REGISTRY.register(Part(collector.summary))
    QUEUES.queues[constants.SUPPORTCASE_KIND] = cases.scheduler


class Submissions(Protocol):
    """What SubmissionCollector reads of the submission controller."""

    @property
    def last_sync(self) -> float: ...
    @property
    def scheduler(self) -> Sized: ...
    def pending(self, now: float) -> Iterable[tuple[CaseKey, float]]: ...


class SubmissionCollector(Collector):
    """Per case while it has reached no channel; the portal sync's last success. The level
    is the case's, as the case controller evaluated it."""

    def __init__(self, submissions: Submissions, cases: Cases) -> None:
        self.submissions = submissions
        self.cases = cases

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "fluxsupport_supportcase_submission_pending_seconds",
            "Seconds since creation of a case that has reached no channel yet (only while a "
            "channel is enabled).", labels=["namespace", "supportcase", "level"])
        views = self.cases.views
        for (namespace, name), seconds in self.submissions.pending(time.time()):
            view = views.get((namespace, name))
            if view is not None:
                pending.add_metric([namespace, name, str(view.level)], seconds)
        synced = GaugeMetricFamily(
            "fluxsupport_portal_last_sync_timestamp_seconds",
            "When the last successful sync of tickets with the portal started; 0 before it.")
        synced.add_metric([], self.submissions.last_sync)
        yield pending
        yield synced


def register_submissions(submissions: Submissions, cases: Cases) -> None:
    REGISTRY.register(SubmissionCollector(submissions, cases))
    QUEUES.queues["Submission"] = submissions.scheduler


class Updates(Protocol):
    """What UpdateCollector reads of the FluxUpdateCheck controller."""

    @property
    def view(self) -> updatecheck.UpdateMetrics | None: ...
    @property
    def scheduler(self) -> Sized: ...


class UpdateCollector(Collector):
    """The FluxUpdateCheck's result; no series while the check cannot run (its Ready says why),
    so that an alert never fires on a missing ConfigMap as if Flux were unsupported."""

    def __init__(self, updates: Updates) -> None:
        self.updates = updates

    def collect(self) -> Iterator[Metric]:
        behind = GaugeMetricFamily(
            "fluxsupport_flux_minors_behind",
            "Minor versions the running Flux is behind the latest release of the release data.")
        supported = GaugeMetricFamily(
            "fluxsupport_flux_supported",
            "1 when the running Flux minor is among the supported minors (updates."
            "supportedMinors), 0 when not.")
        newer = GaugeMetricFamily(
            "fluxsupport_flux_component_newer_build",
            "1 when the release data has a newer build (digest) of the tag a controller runs.",
            labels=["component"])
        view = self.updates.view
        if view is not None:
            behind.add_metric([], view.minors_behind)
            supported.add_metric([], 1 if view.supported else 0)
            for component, is_newer in view.newer_build:
                newer.add_metric([component], 1 if is_newer else 0)
        yield behind
        yield supported
        yield newer


def register_updates(updates: Updates) -> None:
    REGISTRY.register(UpdateCollector(updates))
    QUEUES.queues[constants.UPDATECHECK_KIND] = updates.scheduler


class FeedState(Protocol):
    """The advisory feed's last attempt and import."""

    @property
    def up(self) -> bool | None: ...
    @property
    def last_import(self) -> float: ...
    @property
    def counts(self) -> Sequence[tuple[str, int]]: ...


class AdvisoryFeed(Protocol):
    """What AdvisoryFeedCollector reads of the advisory feed."""

    @property
    def view(self) -> FeedState: ...
    @property
    def scheduler(self) -> Sized: ...


class AdvisoryFeedCollector(Collector):
    """The advisory feed (``advisories:`` in the policy); no series before its first attempt,
    nor on a standby replica, which reads nothing."""

    def __init__(self, feed: AdvisoryFeed) -> None:
        self.feed = feed

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "fluxsupport_advisory_feed_up",
            "1 when the last attempt read the advisory feed's artifact and wrote every "
            "bulletin it had to, 0 when it failed (the source's Events say why).")
        last = GaugeMetricFamily(
            "fluxsupport_advisory_feed_last_import_timestamp_seconds",
            "When the last import of a new artifact of the advisory feed completed; 0 before "
            "the first.")
        advisories = GaugeMetricFamily(
            "fluxsupport_advisory_feed_advisories",
            "Advisories of the last import by outcome: created, updated, unchanged, skipped "
            "(no Flux component), invalid, not_owned (a bulletin of that name without the "
            "feed's label).", labels=["outcome"])
        view = self.feed.view
        if view.up is not None:
            up.add_metric([], 1 if view.up else 0)
            last.add_metric([], view.last_import)
            for outcome, count in view.counts:
                advisories.add_metric([outcome], count)
        yield up
        yield last
        yield advisories


def register_advisories(feed: AdvisoryFeed) -> None:
    REGISTRY.register(AdvisoryFeedCollector(feed))
    QUEUES.queues["AdvisoryFeed"] = feed.scheduler
