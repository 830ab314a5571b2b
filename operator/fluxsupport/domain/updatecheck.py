"""What the FluxUpdateCheck's status should be, as a pure function of the running Flux
components, the distribution's release data and the policy's supported minors.

domain/updates.py compares the running versions with the release data; this module turns the
report into the status, the Events of what changed and the metric values. While the check
cannot run (no release data, an inventory that cannot be listed) Ready says why, UpToDate and
Supported are Unknown and there are no metric values: an alert must not fire on a missing
ConfigMap as if Flux were unsupported.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from fluxsupport.domain import conditions, evaluation, inventory, updates

#: At most this many components in the status (the CRD's maxItems).
MAX_COMPONENTS = 64


@dataclasses.dataclass(frozen=True)
class NotReady:
    """Why the check cannot run: Ready=False with this reason and message."""

    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class UpdateMetrics:
    """What the metrics collector reads: the result of a check that ran."""

    minors_behind: int
    supported: bool
    #: component -> a newer build of its running tag exists; only where that is known.
    newer_build: tuple[tuple[str, bool], ...]


def evaluate(*, previous: Mapping[str, Any], generation: int, source: str,
             components: Sequence[inventory.RunningComponent],
             inventory_problems: Sequence[str], namespaces: Sequence[str],
             data: updates.ReleaseData | NotReady, supported_minors: int,
             now: datetime.datetime) -> evaluation.Evaluation[UpdateMetrics]:
    """The whole status; ``source`` names where the release data comes from, ``data`` is
    the release data or why it cannot be read. Nothing changes by the clock alone."""
    old = list(previous.get("conditions") or [])
    if inventory_problems:
        data = NotReady("InventoryUnavailable", "; ".join(inventory_problems) + ". Check the "
                        "operator's RBAC and --flux-namespace (now: " + ", ".join(namespaces)
                        + ").")
    if not isinstance(data, NotReady):
        try:
            report = updates.check(components, data, supported_minors)
        except updates.ReleaseDataError as error:
            data = NotReady("NoMatchingRelease", f"{error}.")
    if isinstance(data, NotReady):
        return _not_checked(previous, old, generation, source, data, now)
    current = [
        conditions.Condition(
            type="Ready", status="True", reason="Checked",
            message=f"Compared {len(report.components)} running controller(s) with "
                    f"the release data of {source}."),
        _up_to_date(report), _supported(report)]
    status: dict[str, Any] = {
        "observedGeneration": generation, "source": source,
        "running": report.running, "variant": report.variant, "latest": report.latest,
        "minorsBehind": report.minors_behind, "supported": report.supported,
        "supportedMinors": list(report.supported_minors), "upToDate": report.up_to_date,
        "components": [_component(c) for c in report.components[:MAX_COMPONENTS]],
        "conditions": conditions.merge(old, current, generation, now),
    }
    if report.newest_patch:
        status["newestPatch"] = report.newest_patch
    metrics = UpdateMetrics(report.minors_behind, report.supported,
                            tuple((c.name, c.newer_build) for c in report.components
                                  if c.newer_build is not None))
    return evaluation.Evaluation(status, tuple(_events(previous, current)), None, metrics)


def _not_checked(previous: Mapping[str, Any], old: Sequence[Mapping[str, Any]],
                 generation: int, source: str, not_ready: NotReady,
                 now: datetime.datetime) -> evaluation.Evaluation[UpdateMetrics]:
    unknown = "The check cannot run: see the Ready condition."
    current = [
        conditions.Condition(type="Ready", status="False", reason=not_ready.reason,
                             message=not_ready.message),
        conditions.Condition(type="UpToDate", status="Unknown", reason="NotChecked",
                             message=unknown),
        conditions.Condition(type="Supported", status="Unknown", reason="NotChecked",
                             message=unknown)]
    status = {"observedGeneration": generation, "source": source,
              "conditions": conditions.merge(old, current, generation, now)}
    events: list[evaluation.Event] = []
    if _condition(previous, "Ready").get("message") != not_ready.message:
        events.append(evaluation.Event("Warning", not_ready.reason, not_ready.message))
    return evaluation.Evaluation(status, tuple(events), None, None)


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    found: Mapping[str, Any] = next((c for c in status.get("conditions") or []
                                     if c.get("type") == kind), {})
    return found


def _component(update: updates.ComponentUpdate) -> dict[str, Any]:
    item: dict[str, Any] = {"name": update.name, "repository": update.repository,
                            "running": update.running or "", "digests": list(update.digests)}
    for key, value in (("newestPatch", update.newest_patch), ("latest", update.latest),
                       ("newestDigest", update.newest_digest),
                       ("newerBuild", update.newer_build)):
        if value is not None:
            item[key] = value
    return item


def _up_to_date(report: updates.UpdateReport) -> conditions.Condition:
    rebuilt = sorted(c.name for c in report.components if c.newer_build)
    if report.minors_behind:
        return conditions.Condition(
            type="UpToDate", status="False", reason="MinorAvailable",
            message=f"Flux {report.running} is {report.minors_behind} minor(s) behind "
                    f"the latest release {report.latest}.")
    if report.running != report.latest and updates.parse_version(
            report.running) < updates.parse_version(report.latest):
        return conditions.Condition(
            type="UpToDate", status="False", reason="PatchAvailable",
            message=f"Flux {report.running}: the latest release is {report.latest}.")
    if rebuilt:
        return conditions.Condition(
            type="UpToDate", status="False", reason="NewerBuildAvailable",
            message=f"A newer build of the running tag exists for {', '.join(rebuilt)}; "
                    "see status.components[].newestDigest.")
    return conditions.Condition(type="UpToDate", status="True", reason="LatestRelease",
                                message=f"Flux {report.running} is the latest release.")


def _supported(report: updates.UpdateReport) -> conditions.Condition:
    minors = ", ".join(report.supported_minors)
    if report.supported:
        return conditions.Condition(
            type="Supported", status="True", reason="MinorSupported",
            message=f"Flux {report.running} is on a supported minor ({minors}).")
    return conditions.Condition(
        type="Supported", status="False", reason="MinorUnsupported",
        message=f"Flux {report.running} is {report.minors_behind} minor(s) behind "
                f"{report.latest}; only {minors} receive backports. Upgrade to "
                f"{report.latest}.")


def _events(before: Mapping[str, Any], current: Sequence[conditions.Condition]
            ) -> list[evaluation.Event]:
    """An Event per change of UpToDate's reason or Supported's status, and per new problem."""
    events: list[evaluation.Event] = []
    for condition in current[1:]:
        old = _condition(before, condition.type)
        if (old.get("status"), old.get("reason")) != (condition.status, condition.reason):
            warning = condition.type == "Supported" and condition.status == "False"
            events.append(evaluation.Event("Warning" if warning else "Normal", condition.reason,
                                           condition.message))
    return events
