"""Reconcile SupportCases: keep the latest body of each, evaluate it, patch what changed.

The controller's own watch (kube/reflector.py, as for every kind) hands every event to
``on_event``: a changed case is kept as a compact snapshot and scheduled at once. The
scheduler reconciles it then, and again at the case's warning point and deadline, or after a
failed write. domain/supportcase.py computes the status, Events and metric values.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from fluxsupport import constants, lifecycle
from fluxsupport.controllers import scheduler, writes
from fluxsupport.controllers import snapshots as snapshots_module
from fluxsupport.domain import calendar as calendar_module
from fluxsupport.domain import (
    caseescalation,
    casestatus,
    escalation,
    scope,
    supportcase,
    timing,
    updates,
)
from fluxsupport.domain import diagnostics as diagnostics_module
from fluxsupport.domain import policy as policy_module
from fluxsupport.kube import api, events, objects
from fluxsupport.observability import metrics

logger = logging.getLogger(__name__)

CaseKey = tuple[str, str]
#: SupportCases per list request when the operator starts or lists again: one 10,000-case
#: list parsed at once leaves the process 200 MB larger.
PAGE_SIZE = 500
OUR_ANNOTATIONS = f"{constants.GROUP}/"
#: Kept when the desired status lacks them: diagnostics are collected once per request, and
#: the deadline record (with a breach, which is final) survives a spec that became invalid.
#: The submission record is the channels' (controllers/submission.py): a reconcile carries it.
#: The waits and the conversation stay too: the replies they count gave their Events, and a
#: wait marked by the annotation is remembered nowhere else.
KEPT_STATUS = ("diagnostics", "firstResponse", "resolution", "level", "assessedLevel",
               "closure", "submission", "pauses", "conversation", "escalation",
               "rootCauseAnalysis")


def _compact(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def _compact_status(status: Mapping[str, Any]) -> str:
    """The diagnostics block is written once per request: keep only its request marker and
    the snapshot it references (the sweep keeps referenced snapshots)."""
    kept = dict(status)
    if "diagnostics" in kept:
        held = kept["diagnostics"] or {}
        kept["diagnostics"] = {key: held[key] for key in ("request", "snapshot") if key in held}
    return _compact(kept)


@dataclasses.dataclass(slots=True)
class CaseSnapshot:
    """The parts of a case the SLA logic reads, kept as compact JSON.

    Ten thousand cases held as parsed dicts cost about 20 KB each; as JSON text about 2 KB.
    Each reconcile parses them again, which takes microseconds.
    """

    namespace: str
    name: str
    uid: str
    resource_version: str
    generation: int
    created: datetime.datetime
    spec_json: str
    annotations: dict[str, str]
    status_json: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CaseSnapshot:
        metadata = body.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        return cls(
            namespace=metadata["namespace"], name=metadata["name"],
            uid=metadata.get("uid", ""), resource_version=metadata.get("resourceVersion", ""),
            generation=int(metadata.get("generation") or 0),
            created=timing.parse_time(metadata["creationTimestamp"]),
            spec_json=_compact(body.get("spec") or {}),
            annotations={key: value for key, value in annotations.items()
                         if key.startswith(OUR_ANNOTATIONS)},
            status_json=_compact_status(body.get("status") or {}),
        )

    @property
    def spec(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.spec_json)
        return parsed

    @property
    def status(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.status_json)
        return parsed

    @property
    def ref(self) -> api.ObjectRef:
        return objects.SUPPORTCASES.ref(self.name, self.namespace, self.uid)


Diagnostics = Callable[[], dict[str, Any]]


class CaseController:
    def __init__(self, policy: policy_module.Policy, client: api.KubeClient,
                 diagnostics: Diagnostics | None = None,
                 gate: asyncio.Event | None = None, poster: events.EventPoster | None = None,
                 snapshots: snapshots_module.Snapshots | None = None) -> None:
        self.policy = policy
        self.calendar = calendar_module.BusinessCalendar(policy)
        self.client = client
        self.diagnostics = diagnostics
        #: Where the full diagnostics go; without it (or when writing one fails) the case
        #: holds them itself.
        self.snapshots = snapshots
        self.gate = gate
        # Few writes in flight: the API server completes a wave of them sooner that way.
        self.scheduler = scheduler.Scheduler(self._scheduled, concurrency=8, gate=gate,
                                             kind=constants.SUPPORTCASE_KIND,
                                             on_error=self._report_error)
        self.writer = writes.StatusWriter(client, poster or events.EventPoster(client),
                                          self.scheduler, constants.SUPPORTCASE_KIND, logger,
                                          keep=KEPT_STATUS)
        self.cases: dict[CaseKey, CaseSnapshot] = {}
        self.views: dict[CaseKey, casestatus.CaseMetrics] = {}
        #: The components in scope: from release data once the update check has read it.
        self.supported = scope.supported(policy)
        #: The first-response counter and histogram; they never go down (see FirstResponses).
        self.first_responses = metrics.FirstResponses()
        #: The same for resolutions, where the policy sets resolution targets.
        self.resolutions = metrics.Resolutions()
        self._locks: dict[CaseKey, asyncio.Lock] = {}
        #: Cases whose diagnostics snapshot is gone: their next reconcile collects again.
        self._recollect: set[CaseKey] = set()
        #: Told after every stored status (subscribe): the submission controller decides
        #: what to send.
        self._listeners: list[Callable[[CaseKey], None]] = []
        #: The openings of the cases stored at level 1 and not dismissed, for the
        #: repeated-Severity-1 escalation tier: kept as cases are stored, not found by a walk
        #: of every case at every reconcile.
        self.severity1: dict[CaseKey, datetime.datetime] = {}
        #: Every SupportCase of every namespace, handed to on_event (the watch itself keeps
        #: names only); ``watch.synced`` is set once all are listed.
        self.watch = objects.Objects(client, objects.SUPPORTCASES).watch(
            lambda: None, on_event=self.on_event, page_size=PAGE_SIZE)
        self._tasks = lifecycle.Tasks()

    async def start(self) -> None:
        self._tasks.spawn(self.scheduler.run(), name="supportcase-scheduler")
        self._tasks.spawn(self.watch.run(), name="supportcase-watch")
        if self.snapshots is not None:
            self._tasks.spawn(self.snapshots.run_sweeps(self.snapshots_referenced, self.gate,
                                                        self.snapshots_lost),
                              name="diagnostics-snapshot-sweep")

    async def stop(self) -> None:
        await self._tasks.cancel()

    def get(self, key: CaseKey) -> CaseSnapshot | None:
        """The case as last stored or seen, or None once it is deleted."""
        return self.cases.get(key)

    def items(self) -> list[tuple[CaseKey, CaseSnapshot]]:
        """Every case known now: a copy, which the caller may walk while cases come and go."""
        return list(self.cases.items())

    def subscribe(self, listener: Callable[[CaseKey], None]) -> None:
        """Call ``listener(key)`` after every status of a case that is stored (or found
        already stored): the case's channels decide what it needs next."""
        self._listeners.append(listener)

    def observe(self, body: Mapping[str, Any]) -> tuple[CaseKey, bool]:
        """Keep the newest body; say whether it is news (not the echo of our own write)."""
        metadata = body.get("metadata") or {}
        key = (metadata["namespace"], metadata["name"])
        version = metadata.get("resourceVersion", "")
        held = self.cases.get(key)
        # Decided before the snapshot is built: echoes are half of all events in a burst.
        if held is not None and held.uid == metadata.get("uid", "") and (
                held.resource_version == version
                or not writes.newer_or_equal(version, held.resource_version)):
            return key, False
        self.cases[key] = CaseSnapshot.from_body(body)
        self._index_severity1(key, self.cases[key])
        return key, True

    def _index_severity1(self, key: CaseKey, case: CaseSnapshot) -> None:
        """Keep ``severity1`` current; a case that joins it has the other open Severity 1
        cases of its scope reconciled, since it may complete their count (tier 3)."""
        settings = self.policy.escalation
        if settings is None or not settings.enabled:
            return
        status = case.status
        counts = status.get("level") == 1 and (
            status.get("closure") or {}).get("outcome") != "Dismissed"
        if not counts:
            self.severity1.pop(key, None)
            return
        joined = key not in self.severity1
        self.severity1[key] = case.created
        if not joined:
            return
        for other in self.severity1:
            held = self.cases.get(other)
            if other != key and held is not None and not held.status.get("closure") and \
                    escalation.same_scope(settings, key[0], other[0]):
                self.scheduler.schedule(other, time.time())

    def _other_severity1(self, key: CaseKey) -> list[datetime.datetime]:
        others = [(other[0], opened) for other, opened in self.severity1.items()
                  if other != key]
        return caseescalation.severity1_openings(key[0], others, self.policy.escalation)

    def on_event(self, kind: str, body: Mapping[str, Any]) -> None:
        """A watch event. A changed case is reconciled through the scheduler: a burst of new
        cases is taken 8 at a time from the compact snapshots (no handler holds a body while
        it waits), and on a standby replica (the gate closed) what changed is reconciled
        once it takes over."""
        metadata = body.get("metadata") or {}
        if kind == "DELETED":
            self.forget(metadata["namespace"], metadata["name"])
            return
        key, changed = self.observe(body)
        if changed:
            self.scheduler.schedule(key, time.time())

    def use_release_data(self, data: updates.ReleaseData) -> None:
        """Judge the cases' scope by the controllers ``data`` lists; every case is checked
        again when that list changes (a release adds or drops a controller)."""
        supported = scope.supported(self.policy, data)
        if supported.controllers == self.supported.controllers:
            return
        self.supported = supported
        for key in self.cases:
            self.scheduler.schedule_low(key, time.time())

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        case = self.cases.pop(key, None)
        self._locks.pop(key, None)
        self._recollect.discard(key)
        self.scheduler.cancel(key)
        self.writer.forget(key)
        self.views.pop(key, None)
        self.severity1.pop(key, None)
        if case is not None:
            self.first_responses.forget(case.uid)
            self.resolutions.forget(case.uid)

    async def reconcile(self, key: CaseKey) -> None:
        """Reconcile now, as a scheduled instant would; a failure is retried like one."""
        try:
            await self._locked(key)
        except Exception as error:  # retried with backoff and shown in Ready
            await self.scheduler.failed(key, error)

    async def _locked(self, key: CaseKey) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            await self._reconcile(key)

    async def record_submission(self, key: CaseKey, submission: Mapping[str, Any],
                                expect: Mapping[str, Any] | None = None) -> bool:
        """Store ``submission`` as status.submission, with the conditions it changes, in one
        write; True once stored. Whoever sends something records its intent here first.

        With ``expect``, only if status.submission still is ``expect``: the write carries
        the resourceVersion of the status compared, so the API server refuses it (409) when
        another replica wrote since. Of two replicas that decide to act from the same
        record, one records its intent and acts; the other one does not.
        """
        async with self._locks.setdefault(key, asyncio.Lock()):
            if expect is not None:
                case = self.cases.get(key)
                if case is None or (case.status.get("submission") or {}) != dict(expect):
                    return False
            return await self._reconcile(key, dict(submission))

    async def _scheduled(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        await self._locked(key)

    async def _reconcile(self, key: CaseKey, submission: dict[str, Any] | None = None) -> bool:
        """Evaluate and write; with ``submission``, as if status.submission held it."""
        case = self.cases.get(key)
        if case is None:
            self.writer.forget(key)
            return False
        now = datetime.datetime.now(datetime.UTC)
        current = case.status
        previous = current if submission is None else {**current, "submission": submission}
        evaluation = supportcase.evaluate(
            spec=case.spec, annotations=case.annotations, created=case.created,
            generation=case.generation, previous=previous, policy=self.policy,
            calendar=self.calendar, now=now, supported=self.supported,
            other_severity1_openings=self._other_severity1(key))
        desired = dict(evaluation.status)
        if submission is not None:
            desired["submission"] = submission
        diagnostics = await self._diagnostics_for(case, current)
        if diagnostics is not None:
            desired["diagnostics"] = diagnostics
        if evaluation.metrics is not None:
            self.views[key] = evaluation.metrics
        result = await self.writer.write(
            key, case.ref, current, desired, case.resource_version, evaluation.events, now=now)
        if result.outcome is writes.Outcome.GONE:
            self.forget(*key)
            return False
        if result.outcome is writes.Outcome.FAILED:
            return False
        if result.outcome is writes.Outcome.WRITTEN:
            self._stored(case, result)
            if evaluation.metrics is not None and not (
                    current.get("firstResponse") or {}).get("respondedAt"):
                # This write recorded the first response: count it here, once.
                self.first_responses.record(case.uid, evaluation.metrics)
            if evaluation.metrics is not None and not (
                    current.get("resolution") or {}).get("resolvedAt"):
                self.resolutions.record(case.uid, evaluation.metrics)
            if result.transitions:
                logger.debug("SupportCase %s/%s: status written (%s)", key[0], key[1],
                             (desired.get("firstResponse") or {}).get("state", "InvalidSpec"))
            else:
                logger.debug("SupportCase %s/%s: posted Events cleared", key[0], key[1])
        when = evaluation.next_transition
        self.scheduler.replace(key, when.timestamp() if when else None)
        self.writer.clear_later(key)
        for listener in self._listeners:
            listener(key)
        return True

    def _stored(self, case: CaseSnapshot, result: writes.Result) -> None:
        case.status_json = _compact_status(result.status or {})
        case.resource_version = result.resource_version or case.resource_version
        self._index_severity1((case.namespace, case.name), case)

    async def _report_error(self, key: Hashable, error: Exception) -> None:
        assert isinstance(key, tuple)
        async with self._locks.setdefault(key, asyncio.Lock()):
            case = self.cases.get(key)
            if case is None:
                return
            result = await self.writer.write_error(key, case.ref, case.status,
                                                   case.resource_version, case.generation,
                                                   error)
            if result.outcome is writes.Outcome.WRITTEN:
                self._stored(case, result)

    async def _diagnostics_for(self, case: CaseSnapshot,
                               current: Mapping[str, Any]) -> dict[str, Any] | None:
        """New diagnostics at creation, and whenever the request annotation changes."""
        if self.diagnostics is None:
            return None
        requested = case.annotations.get(constants.COLLECT_DIAGNOSTICS, "")
        held = current.get("diagnostics") or {}
        lost = (case.namespace, case.name) in self._recollect
        self._recollect.discard((case.namespace, case.name))
        if held and held.get("request", "") == requested and not lost:
            return None
        collected = self.diagnostics()
        collected["request"] = requested
        if self.snapshots is None:
            return collected
        try:
            snapshot = await self.snapshots.ensure(collected)
        except (api.ApiError, *api.TRANSPORT_ERRORS) as error:
            logger.warning("SupportCase %s/%s: cannot write the diagnostics snapshot (%s); "
                           "the case holds the diagnostics itself", case.namespace, case.name,
                           error)
            return collected
        return diagnostics_module.referencing(collected, snapshot)

    def snapshots_lost(self, names: set[str]) -> None:
        """The snapshots ``names`` are gone: the cases naming them collect their diagnostics
        again now (the snapshot is made again, or they point at a new one)."""
        for key, case in self.cases.items():
            if (case.status.get("diagnostics") or {}).get("snapshot") in names:
                self._recollect.add(key)
                self.scheduler.schedule(key, time.time())

    def snapshots_referenced(self) -> set[str]:
        """The diagnostics snapshots some known case names."""
        names = set()
        for case in self.cases.values():
            snapshot = (case.status.get("diagnostics") or {}).get("snapshot")
            if snapshot:
                names.add(str(snapshot))
        return names
