"""What a SecurityBulletin's status should be, as a pure function of the bulletin, the running
Flux components, the other bulletins' fixes, the OpenVEX documents it cites and now.

domain/bulletin.py decides each component's verdict; this module turns the verdicts into the
status (counts, components, conditions), the Events of what changed and the metric values.

Under embargo (``embargoUntil`` ahead) the status says nothing the bulletin or its documents
supplied: condition messages are fixed texts (``withheld``), Event messages name only what
runs in the cluster and fixed words. A message built from the spec or an OpenVEX document
cannot be filtered reliably (a CVE id in lower case or JSON-escaped, a title cut in the
middle, a ConfigMap named after the advisory), so none is used.

Two parts are evaluated only when their input is there, so that a bulletin without them keeps
the status it always had: the vendor's remediation clock (``vendorRemediation`` and the
VendorRemediationOverdue condition) when the policy names a ``remediationFramework``
(domain/remediation.py), and the Withdrawn condition when ``spec.withdrawnAt`` is set. A
withdrawn advisory no longer stands: its verdicts are still shown, but it is Compliant, never
PatchOverdue, and its alerting metrics count no component as vulnerable.

With the vendor's clock and the policy's ``escalation`` section, a critical vulnerability whose
remediation deadline passed with no fix listed reaches escalation tier 3
(domain/escalation.py): ``status.escalation`` records it once, with its first instant, the
Escalated condition shows it, and one Warning Event announces it.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from fluxsupport.domain import (
    bulletin,
    conditions,
    escalation,
    evaluation,
    inventory,
    remediation,
    timing,
    vex,
)
from fluxsupport.domain import policy as policy_module

#: Ready when the full status does not fit (``compact``): the controller learns it from the
#: API server's refusal.
TOO_LARGE_MESSAGE = (
    "With per-CVE verdicts the status would push the bulletin past the API server's object size "
    "limit (etcd's, 1.5 MiB by default), so status.components[].cves and .message are left "
    "out; the component verdicts, counts and remediation are complete. Shorten the summaries "
    "or split the bulletin to get them back.")

#: Condition messages of a bulletin under embargo, by reason. They point to where the details
#: can be read by those allowed to: the bulletin and its documents, checked offline with
#: ``fluxsupport bulletin check``.
WITHHELD = {
    "InvalidSpec": "The spec does not match what the operator reads. The details are withheld "
                   "while the bulletin is under embargo: `fluxsupport bulletin check` on the "
                   "manifest names the field.",
    "InvalidVex": "An OpenVEX document that spec.vex references is missing, invalid, or names "
                  "products that can match nothing; verdicts ignore what cannot be used. The "
                  "details are withheld while the bulletin is under embargo: `fluxsupport "
                  "bulletin check --vex FILE` on each document names the problem.",
    "PatchByPassed": "patchBy has passed and a component is still vulnerable.",
    "NotOverdue": "patchBy has not passed, or no component is vulnerable.",
    "RemediationDuePassed": "The vendor's fix for a vulnerability of the bulletin is past its "
                            "remediation due time and no fixed digest is listed; "
                            "status.vendorRemediation names it and since when.",
    "WithinRemediationTime": "No vulnerability of the bulletin is past its remediation due "
                             "time; status.vendorRemediation has the due times.",
    "Tier3UnmitigatedCriticalVulnerability": "Escalated to tier 3 (executive sponsor): a "
                                             "critical vulnerability of the bulletin passed "
                                             "the vendor's remediation deadline with no fix "
                                             "listed; status.escalation names it.",
}
#: For a reason not listed above (a condition added later, say).
WITHHELD_DEFAULT = "The details are withheld while the bulletin is under embargo."
#: Reasons whose messages hold nothing of the bulletin, only counts and what the operator
#: itself reads (its Flux namespaces, the API server's answers): kept under embargo.
OWN_WORDS = frozenset({"Evaluated", "InventoryUnavailable", "NoFluxComponents",
                       "VulnerableComponents", "UnknownDigests", "NoVulnerableComponents",
                       "NoPatchBy", "StatusTooLarge", "AdvisoryWithdrawn", "FixesListed",
                       "NoRemediationDeadline", "NotEscalated"})

#: Reasons of a bulletin's Escalated condition by the highest tier reached: only tier 3
#: concerns bulletins.
TIER_REASONS = {3: "Tier3UnmitigatedCriticalVulnerability"}
#: The Event of a tier reached by a bulletin under embargo: fixed words only.
EMBARGOED_TIER_EVENT = ("Escalated to tier 3 (executive sponsor): a critical vulnerability of "
                        "the bulletin passed the vendor's remediation deadline with no fix "
                        "listed. The details are withheld while the bulletin is under embargo.")

#: status.counts keys by verdict.
_COUNT_FIELDS = {"Vulnerable": "vulnerable", "NotAffected": "notAffected", "Fixed": "fixed",
                 "Unknown": "unknown"}


@dataclasses.dataclass(frozen=True)
class BulletinMetrics:
    """What the metrics collector reads of one bulletin."""

    #: Running components by verdict (Vulnerable, NotAffected, Fixed, Unknown).
    counts: dict[str, int]
    vulnerable: tuple[tuple[str, str, bool], ...]  # namespace, component, vulnerable
    patch_overdue: bool
    #: The earliest due time (epoch seconds) of the vendor's fixes not listed yet; None when
    #: none runs (no framework, every fix listed, withdrawn).
    vendor_due: float | None = None
    #: A vendor's fix past its due time; None when the policy names no framework.
    vendor_overdue: bool | None = None
    #: The escalation tier in force: 3 while a critical vulnerability that reached it still
    #: has no fix listed, else 0; None when the policy has no escalation or no framework.
    escalation_tier: int | None = None


@dataclasses.dataclass(frozen=True)
class CitedVex:
    """What the OpenVEX documents a bulletin cites (spec.vex) gave."""

    #: The usable documents.
    documents: Sequence[vex.IndexedDocument] = ()
    #: Why a cited document cannot be used (missing, not OpenVEX): Ready names them.
    problems: Sequence[str] = ()
    #: Products of usable documents that can match nothing (a bad digest): Ready names them.
    warnings: Sequence[str] = ()
    #: How usable documents deviate from OpenVEX v0.2.0: VexWarning names them.
    deviations: Sequence[str] = ()


def withheld(condition: conditions.Condition) -> conditions.Condition:
    """``condition`` as a bulletin under embargo shows it: its message a fixed text."""
    if condition.reason in OWN_WORDS:
        return condition
    message = WITHHELD.get(condition.reason, WITHHELD_DEFAULT)
    return condition.model_copy(update={"message": message})


def embargo_until(spec: Mapping[str, Any]) -> datetime.datetime | None:
    """The embargoUntil of a spec that did not validate; one that cannot be read is taken as
    an embargo without end, since nothing says it is over."""
    until = spec.get("embargoUntil")
    if until is None:
        return None
    try:
        return timing.parse_time(str(until))
    except ValueError:
        return datetime.datetime.max.replace(tzinfo=datetime.UTC)


def under_embargo(spec: Mapping[str, Any],
                  validated: bulletin.BulletinSpec | pydantic.ValidationError,
                  now: datetime.datetime) -> bool:
    """Whether the bulletin is under embargo at ``now``, whether its spec is valid or not."""
    if isinstance(validated, pydantic.ValidationError):
        until = embargo_until(spec)
        return until is not None and now < until
    return validated.embargoed(now)


def reason_kind(reason: str) -> str:
    """The reason without what follows a colon: a bulletin name (RebuiltIn:) or an OpenVEX
    justification (VexNotAffected:) is user-supplied text."""
    return reason.split(":", 1)[0]


def vex_warning(cited: int, deviations: Sequence[str]) -> conditions.Condition:
    """VexWarning: True when a cited OpenVEX document was read although it deviates from
    OpenVEX v0.2.0 (as go-vex reads it); the message names each deviation by ConfigMap, key
    and JSON path. Its verdicts count; the publisher should fix the document."""
    if deviations:
        return conditions.Condition(
            type="VexWarning", status="True", reason="NonConformingVex",
            message="; ".join(deviations) + ". These documents count as read; ask their "
                    "publisher to conform to OpenVEX v0.2.0.")
    if not cited:
        return conditions.Condition(type="VexWarning", status="False", reason="NoVexDocuments",
                                    message="The bulletin cites no OpenVEX document.")
    return conditions.Condition(type="VexWarning", status="False", reason="ConformingVex",
                                message="Every readable OpenVEX document the bulletin cites "
                                        "conforms to OpenVEX v0.2.0.")


def evaluate(*, name: str, spec: Mapping[str, Any],
             validated: bulletin.BulletinSpec | pydantic.ValidationError, generation: int,
             previous: Mapping[str, Any], components: Sequence[inventory.RunningComponent],
             inventory_problems: Sequence[str], namespaces: Sequence[str],
             fixes: bulletin.FixIndex, cited: CitedVex, compact: bool,
             now: datetime.datetime, clock: remediation.Clock | None = None,
             escalation_settings: policy_module.Escalation | None = None
             ) -> evaluation.Evaluation[BulletinMetrics]:
    """The whole status of the bulletin ``name``.

    ``spec`` is the spec as stored, ``validated`` what it validated to (or why not);
    ``previous`` the stored status; ``components``, ``inventory_problems`` and ``namespaces``
    what the inventory shows; ``fixes`` the fix digests of every valid bulletin (the rebuild
    rule); ``compact``: the full status did not fit, leave the per-CVE details out;
    ``clock``: the vendor's remediation clock of the policy, None when it names no framework;
    ``escalation_settings``: the policy's escalation section (tier 3 needs the clock too).
    """
    old_conditions = list(previous.get("conditions") or [])
    if isinstance(validated, pydantic.ValidationError):
        ready = evaluation.invalid_spec_condition(validated)
        until = embargo_until(spec)
        lifts = until if until is not None and now < until else None
        if lifts is not None:
            ready = withheld(ready)
        return evaluation.invalid_spec(ready, old_conditions, generation, now, lifts)
    verdicts = bulletin.evaluate(bulletin.Bulletin(name, validated), components, fixes,
                                 cited.documents, now=now)
    embargoed = validated.embargoed(now)
    withdrawn = validated.withdrawn_at is not None
    counts = {"vulnerable": 0, "notAffected": 0, "fixed": 0, "unknown": 0}
    for verdict in verdicts:
        counts[_COUNT_FIELDS[verdict.verdict]] += 1
    overdue = bool(validated.patch_by and now >= validated.patch_by and counts["vulnerable"]
                   and not withdrawn)

    current = [_ready([*cited.problems, *inventory_problems], cited.warnings, verdicts,
                      namespaces),
               WITHDRAWN_COMPLIANT if withdrawn else _compliant(counts, bool(components),
                                                                  namespaces),
               WITHDRAWN_NOT_OVERDUE if withdrawn else _patch_overdue(validated, overdue,
                                                                      counts),
               vex_warning(len(validated.vex), cited.deviations)]
    if withdrawn:
        current.append(WITHDRAWN)
    tracked = None
    if clock is not None:
        stored = (previous.get("vendorRemediation") or {}).get("vulnerabilities") or []
        tracked = remediation.track(
            validated, clock, {str(item.get("id")): item for item in stored
                               if isinstance(item, Mapping)}, now)
        current.append(_vendor_overdue(tracked))
    escalated = None
    if tracked is not None and escalation_settings is not None and escalation_settings.enabled:
        escalated = _escalation(escalation_settings, tracked, previous, now)
        current.append(escalated.condition)
    if embargoed:
        current = [withheld(condition) for condition in current]
    items = [_component_status(v) for v in verdicts]
    written = items
    if compact:
        written = [{key: value for key, value in item.items()
                    if key not in ("cves", "message")} for item in items]
        ready = current[0]
        current[0] = conditions.Condition(
            type="Ready", status="False",
            reason=ready.reason if ready.status == "False" else "StatusTooLarge",
            message=(ready.message + " " if ready.status == "False" else "")
            + TOO_LARGE_MESSAGE)
    status: dict[str, Any] = {
        "observedGeneration": generation, "embargoed": embargoed, "counts": counts,
        "components": written,
        "conditions": conditions.merge(old_conditions, current, generation, now),
    }
    events = _events(previous, validated, items, current, embargoed)
    upcoming = [t for t in (validated.embargo_until, validated.patch_by) if t and t > now]
    if escalated is not None:
        status["escalation"] = escalated.block
        events += [evaluation.Event(
            "Warning", "EscalatedTier3", EMBARGOED_TIER_EVENT if embargoed else
            f"Escalated to tier 3 (executive sponsor) at {item['reachedAt']}: "
            f"{item['detail']}.") for item in escalated.fresh]
        if escalated.next_at is not None:
            upcoming.append(escalated.next_at)
    vendor_due = None
    if clock is not None and tracked is not None:
        status["vendorRemediation"] = vendor_status(clock.framework, tracked)
        open_dues = [t.due.due_at for t in tracked if t.open and t.due is not None]
        vendor_due = min(open_dues) if open_dues else None
        # Overdue flips at the due time without another event.
        upcoming += [due for due in open_dues if due > now]
    metrics = BulletinMetrics(
        counts={label: counts[key] for label, key in _COUNT_FIELDS.items()},
        vulnerable=tuple((v.component.namespace, v.component.component,
                          v.verdict == "Vulnerable" and not withdrawn) for v in verdicts),
        patch_overdue=overdue,
        vendor_due=vendor_due.timestamp() if vendor_due is not None else None,
        vendor_overdue=(any(t.state == "Overdue" for t in tracked)
                        if tracked is not None else None),
        escalation_tier=escalated.in_force if escalated is not None else None)
    return evaluation.Evaluation(status, tuple(events), min(upcoming) if upcoming else None,
                                 metrics)


#: The conditions of a withdrawn advisory: fixed texts, since they quote nothing of it.
WITHDRAWN = conditions.Condition(
    type="Withdrawn", status="True", reason="AdvisoryWithdrawn",
    message="The public advisory was withdrawn (spec.withdrawnAt): its verdicts no longer "
            "count. The bulletin is Compliant, never PatchOverdue, has no vendor remediation "
            "deadline, and its metrics count no component as vulnerable.")
WITHDRAWN_COMPLIANT = conditions.Condition(
    type="Compliant", status="True", reason="AdvisoryWithdrawn",
    message="The advisory was withdrawn: no component counts as vulnerable by it.")
WITHDRAWN_NOT_OVERDUE = conditions.Condition(
    type="PatchOverdue", status="False", reason="AdvisoryWithdrawn",
    message="The advisory was withdrawn: patchBy no longer applies.")


@dataclasses.dataclass(frozen=True)
class _Escalated:
    #: status.escalation: the tiers as first recorded, and the emails to their contacts.
    block: dict[str, Any]
    #: The tiers recorded by this evaluation: each is owed its Event.
    fresh: list[dict[str, Any]]
    condition: conditions.Condition
    next_at: datetime.datetime | None
    #: The tier the metric shows (BulletinMetrics.escalation_tier).
    in_force: int


def _escalation(settings: policy_module.Escalation, tracked: Sequence[remediation.Tracked],
                previous: Mapping[str, Any], now: datetime.datetime) -> _Escalated:
    """Tier 3 of a bulletin from its vulnerabilities' clocks. A fix listed when the operator
    first saw the vulnerability (FixListed) has no known time and counts as in time: nothing
    says the vulnerability was ever unmitigated past its deadline."""
    counted = [entry for entry in tracked
               if entry.due is not None and entry.state in ("Pending", "Overdue", "Met", "Late")]
    result = escalation.for_bulletin(settings, {entry.id: entry.due for entry in counted},
                                     {entry.id: entry.fix_listed_at for entry in counted},
                                     now=now)
    stored = previous.get("escalation") or {}
    block, fresh = escalation.record(stored, result)
    emails = [dict(item) for item in stored.get("emails") or [] if isinstance(item, Mapping)]
    if emails:
        block["emails"] = emails
    unmitigated = any(entry.state == "Overdue" and entry.due is not None
                      and entry.due.band == "critical" for entry in tracked)
    return _Escalated(block, fresh, escalation.condition(block, TIER_REASONS), result.next_at,
                      block["tier"] if unmitigated else 0)


def tier_emails(settings: policy_module.Escalation | None, *, uid: str, name: str,
                cluster: str, status: Mapping[str, Any], embargoed: bool
                ) -> list[escalation.TierEmail]:
    """The emails owed to the contacts of the tiers in ``status.escalation``: those with
    no record in ``status.escalation.emails`` yet, or whose last send the SMTP server refused
    (then ``retry_at`` says when). None while the bulletin is under embargo: the email names
    the vulnerability, and goes out once the embargo lifts."""
    if settings is None or not settings.enabled or embargoed:
        return []
    block = status.get("escalation") or {}
    records = {entry.get("tier"): entry for entry in block.get("emails") or []
               if isinstance(entry, Mapping)}
    emails = []
    for item in block.get("tiers") or []:
        if not isinstance(item, Mapping) or item.get("tier") not in escalation.ROLES:
            continue
        tier = int(item["tier"])
        where = name + (f" in {cluster}" if cluster else "")
        email = escalation.tier_email(
            tier, f"<bulletin-{uid}-tier{tier}@fluxsupport>", settings.contacts.for_tier(tier),
            f"[fluxsupport] Escalation tier {tier}: SecurityBulletin {where}",
            f"SecurityBulletin {where}.\n\nEscalated to tier {tier} "
            f"({escalation.ROLES[tier]}) at {item.get('reachedAt', '')}: "
            f"{item.get('detail', '')}.\n\nkubectl get securitybulletin {name} -o "
            "jsonpath='{.status.vendorRemediation}' shows the vendor's due times.\n",
            records.get(tier))
        if email is not None:
            emails.append(email)
    return emails


def vendor_status(framework: remediation.Framework,
                  tracked: Sequence[remediation.Tracked]) -> dict[str, Any]:
    """status.vendorRemediation: the framework, the earliest due time of a fix not listed
    yet (nextDueAt, absent when none), and each vulnerability's clock."""
    items = []
    for entry in tracked:
        item: dict[str, Any] = {"id": entry.id, "state": entry.state}
        if entry.score is not None:
            item["cvssScore"] = entry.score
        if entry.due is not None:
            item.update({"band": entry.due.band, "budget": entry.due.budget,
                         "startedAt": conditions.rfc3339(entry.due.started_at),
                         "dueAt": conditions.rfc3339(entry.due.due_at)})
        if entry.fix_listed_at is not None:
            item["fixListedAt"] = conditions.rfc3339(entry.fix_listed_at)
        if entry.no_deadline is not None:
            item["reason"] = entry.no_deadline
        if entry.open:
            item["unfixedComponents"] = list(entry.unfixed)
        items.append(item)
    block: dict[str, Any] = {"framework": framework}
    open_dues = [entry.due.due_at for entry in tracked if entry.open and entry.due is not None]
    if open_dues:
        block["nextDueAt"] = conditions.rfc3339(min(open_dues))
    block["vulnerabilities"] = items
    return block


def _vendor_overdue(tracked: Sequence[remediation.Tracked]) -> conditions.Condition:
    """VendorRemediationOverdue: True while a vulnerability's fix is past the vendor's due
    time with no fixed digest listed. The customer's view of the vendor's promise; patchBy
    (PatchOverdue) is the customer's own deadline."""
    def due_of(entry: remediation.Tracked) -> remediation.Due:
        assert entry.due is not None  # Pending and Overdue have one
        return entry.due

    def described(entry: remediation.Tracked) -> str:
        due = due_of(entry)
        return (f"{entry.id} (due {conditions.rfc3339(due.due_at)}: {due.band}, {due.budget} "
                f"from {conditions.rfc3339(due.started_at)} under the {due.framework} "
                f"framework; no fixed digest for {', '.join(entry.unfixed)})")

    late = sorted((t for t in tracked if t.state == "Overdue"),
                  key=lambda t: (due_of(t).due_at, t.id))
    if late:
        return conditions.Condition(
            type="VendorRemediationOverdue", status="True", reason="RemediationDuePassed",
            message="The vendor's fix is past its remediation due time for "
                    + "; ".join(described(entry) for entry in late) + ".")
    pending = sorted((t for t in tracked if t.state == "Pending"),
                     key=lambda t: (due_of(t).due_at, t.id))
    if pending:
        return conditions.Condition(
            type="VendorRemediationOverdue", status="False", reason="WithinRemediationTime",
            message="No vulnerability is past its remediation due time; next: "
                    + described(pending[0]) + ".")
    if any(t.no_deadline == "AdvisoryWithdrawn" for t in tracked):
        return conditions.Condition(
            type="VendorRemediationOverdue", status="False", reason="AdvisoryWithdrawn",
            message="The advisory was withdrawn: the vendor owes no fix.")
    listed = [t for t in tracked if t.state in ("Met", "Late", "FixListed")]
    if listed:
        late_count = sum(1 for t in listed if t.state == "Late")
        return conditions.Condition(
            type="VendorRemediationOverdue", status="False", reason="FixesListed",
            message=f"A fixed digest is listed for each of the {len(listed)} vulnerabilities "
                    f"with a remediation deadline ({late_count} listed after it).")
    return conditions.Condition(
        type="VendorRemediationOverdue", status="False", reason="NoRemediationDeadline",
        message="No vulnerability has a remediation deadline: "
                "status.vendorRemediation.vulnerabilities[].reason says why for each.")


def _component_status(verdict: bulletin.ComponentVerdict) -> dict[str, Any]:
    component = verdict.component
    item: dict[str, Any] = {
        "namespace": component.namespace, "name": component.name,
        "component": component.component, "image": component.image,
        "version": component.tag or "", "digests": list(component.digests),
        "verdict": verdict.verdict, "reason": verdict.reason, "message": verdict.message,
        "cves": [{"id": c.id, "verdict": c.verdict, "reason": c.reason}
                 for c in verdict.cves],
    }
    if verdict.remediation is not None:
        item["remediation"] = verdict.remediation.as_kustomize_image()
    return item


def _ready(problems: Sequence[str], warnings: Sequence[str],
           verdicts: Sequence[bulletin.ComponentVerdict],
           namespaces: Sequence[str]) -> conditions.Condition:
    if any(problem.startswith("cannot list") for problem in problems):
        return conditions.Condition(
            type="Ready", status="False", reason="InventoryUnavailable",
            message="; ".join(problems) + ". Check the operator's RBAC and --flux-namespace "
            "(now: " + ", ".join(namespaces) + ").")
    if problems or warnings:
        message = ""
        if problems:
            message = "; ".join(problems) + ". Verdicts ignore that document until fixed."
        if warnings:
            message += (" " if message else "") + "; ".join(warnings) + (
                ". The rest of that document counts; fix the product to make it match.")
        return conditions.Condition(type="Ready", status="False", reason="InvalidVex",
                                    message=message)
    return conditions.Condition(
        type="Ready", status="True", reason="Evaluated",
        message=f"Checked {len(verdicts)} running component(s) concerned by the bulletin.")


def _compliant(counts: Mapping[str, int], inventory_found: bool,
               namespaces: Sequence[str]) -> conditions.Condition:
    if not inventory_found:
        return conditions.Condition(
            type="Compliant", status="Unknown", reason="NoFluxComponents",
            message="No Flux Deployment was found in " + ", ".join(namespaces)
            + "; nothing could be checked.")
    if counts["vulnerable"]:
        return conditions.Condition(
            type="Compliant", status="False", reason="VulnerableComponents",
            message=f"{counts['vulnerable']} component(s) run a vulnerable image; "
                    "see status.components[].remediation.")
    if counts["unknown"]:
        return conditions.Condition(
            type="Compliant", status="Unknown", reason="UnknownDigests",
            message=f"{counts['unknown']} component(s) could not be checked.")
    return conditions.Condition(type="Compliant", status="True",
                                reason="NoVulnerableComponents",
                                message="No running component is vulnerable.")


def _patch_overdue(spec: bulletin.BulletinSpec, overdue: bool,
                   counts: Mapping[str, int]) -> conditions.Condition:
    if overdue:
        assert spec.patch_by is not None
        return conditions.Condition(
            type="PatchOverdue", status="True", reason="PatchByPassed",
            message=f"patchBy {conditions.rfc3339(spec.patch_by)} has passed and "
                    f"{counts['vulnerable']} component(s) are still vulnerable.")
    if spec.patch_by is None:
        return conditions.Condition(type="PatchOverdue", status="False", reason="NoPatchBy",
                                    message="The bulletin sets no patchBy time.")
    return conditions.Condition(
        type="PatchOverdue", status="False", reason="NotOverdue",
        message=f"patchBy {conditions.rfc3339(spec.patch_by)}.")


def _events(previous: Mapping[str, Any], spec: bulletin.BulletinSpec,
            items: Sequence[Mapping[str, Any]], current: Sequence[conditions.Condition],
            embargoed: bool) -> list[evaluation.Event]:
    """Events name components and verdicts. Under embargo they hold nothing the bulletin
    or its documents supplied (no CVE id, reason detail, fixed version or digest), only
    what runs in the cluster and fixed words; the condition messages are fixed texts."""
    events = []
    before = {(c.get("namespace"), c.get("component")): c.get("verdict")
              for c in previous.get("components") or []}
    for item in items:
        old = before.get((item["namespace"], item["component"]))
        if old == item["verdict"]:
            continue
        reason = reason_kind(item["reason"]) if embargoed else item["reason"]
        text = (f"{item['namespace']}/{item['component']}: {old or 'new'} -> "
                f"{item['verdict']} ({reason})")
        if not embargoed:
            ids = ", ".join(c["id"] for c in item["cves"])
            text += f"; {ids}"
        if item["verdict"] == "Vulnerable" and "remediation" in item:
            if embargoed:
                text += "; the fix is in the bulletin's status.components[].remediation"
            else:
                fix = item["remediation"]
                text += f"; fix: {fix['name']}:{fix['newTag']}@{fix['digest']}"
        events.append(evaluation.Event("Warning" if item["verdict"] == "Vulnerable" else "Normal",
                                       f"Verdict{item['verdict']}", text))
    if previous.get("embargoed") and not embargoed:
        ids = ", ".join(v.id for v in spec.vulnerabilities)
        events.append(evaluation.Event("Normal", "EmbargoLifted", f"Disclosed: {ids}"))
    old_ready: Mapping[str, Any] = next((c for c in previous.get("conditions") or []
                                         if c.get("type") == "Ready"), {})
    ready = current[0]
    if ready.status == "False" and old_ready.get("message") != ready.message:
        events.append(evaluation.Event("Warning", ready.reason, ready.message))
    return events
