"""The vendor's remediation clock and withdrawn advisories on a SecurityBulletin's status:
domain/securitybulletin.py's evaluation with the policy's remediationFramework
(vendorRemediation, VendorRemediationOverdue, the metric values, the next instant), embargo,
and the Withdrawn condition that stops a withdrawn advisory's verdicts from alerting."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest

from fluxsupport.domain import bulletin, evaluation, remediation, securitybulletin
from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import Policy, load_policy
from tests import fixtures
from tests.unit.test_bulletin_index import components_of

PRE = fixtures.images(fixtures.PRE_FIX_V275)
FIX = fixtures.images(fixtures.FIX_V275)
EMEA = load_policy("preset: support-policy-2026\nregion: EMEA\n")
CVE = "CVE-2026-47680"
#: A Wednesday, in Support Hours in London.
IDENTIFIED = datetime.datetime(2026, 6, 3, 10, 0, tzinfo=datetime.UTC)
CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H"  # 9.9


def clock_of(policy: Policy) -> remediation.Clock:
    assert policy.remediation_framework is not None
    return remediation.Clock(policy.remediation_framework, policy, BusinessCalendar(policy))


CLOCK = clock_of(EMEA)


def spec_of(*, fixed: bool = False, vector: str | None = CRITICAL, score: float | None = None,
            **extra: Any) -> dict[str, Any]:
    """A bulletin about source-controller, with its vendor fix listed or not (then only the
    upstream range)."""
    body = fixtures.bulletin_for("b", CVE, "source-controller", FIX["source-controller"],
                                 published="2026-06-04T12:00:00Z", **extra)
    spec: dict[str, Any] = body["spec"]
    vulnerability = spec["vulnerabilities"][0]
    vulnerability["identifiedAt"] = "2026-06-03T10:00:00Z"
    if vector is not None:
        vulnerability["cvssVector"] = vector
    if score is not None:
        vulnerability["cvssScore"] = score
    if not fixed:
        del spec["fixes"]
        spec["affectedVersions"] = [{"component": "source-controller",
                                     "ranges": [{"introduced": "v1.0.0", "fixed": "v1.7.5"}]}]
    return spec


def evaluate(spec: dict[str, Any], now: datetime.datetime, *,
             previous: dict[str, Any] | None = None, clock: remediation.Clock | None = CLOCK,
             running: dict[str, dict[str, str]] = PRE
             ) -> evaluation.Evaluation[securitybulletin.BulletinMetrics]:
    validated = bulletin.BulletinSpec.model_validate(spec)
    return securitybulletin.evaluate(
        name="b", spec=spec, validated=validated, generation=1, previous=previous or {},
        components=components_of(running), inventory_problems=(), namespaces=("flux-system",),
        fixes=bulletin.FixIndex(), cited=securitybulletin.CitedVex(), compact=False, now=now,
        clock=clock)


def condition(result: evaluation.Evaluation[Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in result.status["conditions"] if c["type"] == kind)
    return found


def entry(result: evaluation.Evaluation[Any]) -> dict[str, Any]:
    [item] = result.status["vendorRemediation"]["vulnerabilities"]
    assert item["id"] == CVE
    return dict(item)


# ---- the clock -------------------------------------------------------------------------------

def test_a_critical_vulnerability_is_due_72_hours_after_it_was_identified_then_overdue() -> None:
    due = IDENTIFIED + datetime.timedelta(hours=72)
    before = evaluate(spec_of(), due - datetime.timedelta(seconds=1))
    assert before.status["vendorRemediation"] == {
        "framework": "standard", "nextDueAt": "2026-06-06T10:00:00Z",
        "vulnerabilities": [{"id": CVE, "state": "Pending", "cvssScore": 9.9,
                             "band": "critical", "budget": "72 hours",
                             "startedAt": "2026-06-03T10:00:00Z",
                             "dueAt": "2026-06-06T10:00:00Z",
                             "unfixedComponents": ["source-controller"]}]}
    pending = condition(before, "VendorRemediationOverdue")
    assert (pending["status"], pending["reason"]) == ("False", "WithinRemediationTime")
    assert CVE in pending["message"]
    assert "2026-06-06T10:00:00Z" in pending["message"]
    # The due time is the next instant: the condition flips without another event.
    assert before.next_transition == due
    assert before.metrics is not None
    assert before.metrics.vendor_due == due.timestamp()
    assert before.metrics.vendor_overdue is False

    at_due = evaluate(spec_of(), due, previous=before.status)
    overdue = condition(at_due, "VendorRemediationOverdue")
    assert (overdue["status"], overdue["reason"]) == ("True", "RemediationDuePassed")
    assert overdue["message"] == (
        "The vendor's fix is past its remediation due time for CVE-2026-47680 (due "
        "2026-06-06T10:00:00Z: critical, 72 hours from 2026-06-03T10:00:00Z under the standard "
        "framework; no fixed digest for source-controller).")
    assert overdue["lastTransitionTime"] == "2026-06-06T10:00:00Z"
    assert entry(at_due)["state"] == "Overdue"
    assert at_due.metrics is not None
    assert at_due.metrics.vendor_overdue is True
    assert at_due.metrics.vendor_due == due.timestamp()
    assert at_due.next_transition is None  # patchBy, embargo: none; the due has passed


def test_other_bands_count_support_days_and_the_upstream_patch_framework_calendar_days() -> None:
    medium = spec_of(vector="CVSS:3.1/AV:N/AC:H/PR:L/UI:N/S:U/C:H/I:N/A:N")  # 5.3
    found = entry(evaluate(medium, IDENTIFIED))
    # 40 Support Hours from Wednesday 11:00 BST: Thu, Fri, Mon, Tue, then Wednesday 11:00.
    assert (found["band"], found["budget"], found["dueAt"]) == (
        "other", "5 Support Days", "2026-06-10T10:00:00Z")

    upstream = clock_of(load_policy(
        "preset: support-policy-2026\nregion: EMEA\nremediationFramework: upstream-patch\n"))
    without_patch = entry(evaluate(spec_of(), IDENTIFIED, clock=upstream))
    assert (without_patch["state"], without_patch["reason"]) == ("NoDeadline",
                                                                 "NoPatchAvailable")
    patched = spec_of()
    patched["vulnerabilities"][0]["patchAvailableAt"] = "2026-06-04T12:00:00Z"
    result = evaluate(patched, IDENTIFIED, clock=upstream)
    assert entry(result)["dueAt"] == "2026-06-11T12:00:00Z"
    assert result.status["vendorRemediation"]["framework"] == "upstream-patch"


def test_a_fix_listed_in_time_is_met_and_one_listed_late_is_late() -> None:
    due = IDENTIFIED + datetime.timedelta(hours=72)
    first = evaluate(spec_of(), IDENTIFIED + datetime.timedelta(hours=1))
    listed = evaluate(spec_of(fixed=True), IDENTIFIED + datetime.timedelta(hours=2),
                      previous=first.status)
    assert entry(listed) == {"id": CVE, "state": "Met", "cvssScore": 9.9, "band": "critical",
                             "budget": "72 hours", "startedAt": "2026-06-03T10:00:00Z",
                             "dueAt": "2026-06-06T10:00:00Z",
                             "fixListedAt": "2026-06-03T12:00:00Z"}
    assert "nextDueAt" not in listed.status["vendorRemediation"]
    met = condition(listed, "VendorRemediationOverdue")
    assert (met["status"], met["reason"]) == ("False", "FixesListed")
    assert listed.metrics is not None
    assert listed.metrics.vendor_due is None
    # The time first seen is kept, whenever the bulletin is evaluated again.
    again = evaluate(spec_of(fixed=True), due + datetime.timedelta(days=3),
                     previous=listed.status)
    assert entry(again)["fixListedAt"] == "2026-06-03T12:00:00Z"
    assert entry(again)["state"] == "Met"

    overdue = evaluate(spec_of(), due + datetime.timedelta(hours=1), previous=first.status)
    late = evaluate(spec_of(fixed=True), due + datetime.timedelta(hours=5),
                    previous=overdue.status)
    assert (entry(late)["state"], entry(late)["fixListedAt"]) == ("Late",
                                                                  "2026-06-06T15:00:00Z")
    cleared = condition(late, "VendorRemediationOverdue")
    assert (cleared["status"], cleared["reason"]) == ("False", "FixesListed")
    assert "(1 listed after it)" in cleared["message"]


def test_a_fix_found_listed_at_first_sight_after_the_due_time_claims_neither_met_nor_late(
) -> None:
    """An old advisory applied today with its fix: when the fix was listed is unknown."""
    later = IDENTIFIED + datetime.timedelta(days=30)
    found = evaluate(spec_of(fixed=True), later)
    assert entry(found)["state"] == "FixListed"
    assert "fixListedAt" not in entry(found)
    assert entry(evaluate(spec_of(fixed=True), later, previous=found.status))["state"] \
        == "FixListed"
    # At first sight before the due time it is Met.
    assert entry(evaluate(spec_of(fixed=True), IDENTIFIED))["state"] == "Met"


def test_a_vulnerability_of_two_components_needs_a_fix_for_both() -> None:
    spec = spec_of(fixed=True)
    spec["vulnerabilities"][0]["components"] = ["source-controller", "helm-controller"]
    due = IDENTIFIED + datetime.timedelta(hours=72)
    result = evaluate(spec, due)
    assert entry(result)["unfixedComponents"] == ["helm-controller"]
    assert condition(result, "VendorRemediationOverdue")["status"] == "True"


def test_without_a_deadline_the_reason_says_why() -> None:
    none = entry(evaluate(spec_of(score=0.0), IDENTIFIED))
    assert (none["state"], none["reason"]) == ("NoDeadline", "CvssNone")
    assert "dueAt" not in none
    out_of_range = spec_of()
    out_of_range["vulnerabilities"][0]["identifiedAt"] = "0001-01-01T00:00:00Z"
    result = evaluate(out_of_range, IDENTIFIED)
    assert entry(result)["reason"] == "ClockStartOutOfRange"
    found = condition(result, "VendorRemediationOverdue")
    assert (found["status"], found["reason"]) == ("False", "NoRemediationDeadline")
    assert result.metrics is not None
    assert result.metrics.vendor_due is None


def test_a_score_from_the_spec_wins_over_the_vector_and_the_severity_decides_without_either(
) -> None:
    assert entry(evaluate(spec_of(score=8.0), IDENTIFIED))["band"] == "other"
    no_score = spec_of(vector=None)
    no_score["vulnerabilities"][0]["severity"] = "Critical"
    found = entry(evaluate(no_score, IDENTIFIED))
    assert (found["band"], "cvssScore" in found) == ("critical", False)


def test_without_a_framework_the_status_and_metrics_are_as_before() -> None:
    """The default policy names no framework: no block, no condition, no series."""
    assert Policy().remediation_framework is None
    due = IDENTIFIED + datetime.timedelta(hours=72)
    result = evaluate(spec_of(), due, clock=None)
    assert "vendorRemediation" not in result.status
    assert [c["type"] for c in result.status["conditions"]] == [
        "Ready", "Compliant", "PatchOverdue", "VexWarning"]
    assert result.metrics is not None
    assert (result.metrics.vendor_due, result.metrics.vendor_overdue) == (None, None)
    assert result.next_transition is None


def test_under_embargo_the_messages_are_fixed_texts_and_the_metrics_are_kept() -> None:
    embargoed = spec_of(embargoUntil="2026-07-01T00:00:00Z")
    due = IDENTIFIED + datetime.timedelta(hours=72)
    for now, reason in ((IDENTIFIED, "WithinRemediationTime"), (due, "RemediationDuePassed")):
        result = evaluate(embargoed, now)
        found = condition(result, "VendorRemediationOverdue")
        assert found["reason"] == reason
        assert found["message"] == securitybulletin.WITHHELD[reason]
        assert CVE.lower() not in found["message"].lower()
        # The series carry the bulletin's name only, as every bulletin series does.
        assert result.metrics is not None
        assert result.metrics.vendor_due == due.timestamp()
    # The status holds the ids, as status.components does under embargo.
    assert entry(evaluate(embargoed, due))["state"] == "Overdue"
    # The embargo's end is the next instant before the due time.
    assert evaluate(embargoed, due).next_transition == datetime.datetime(
        2026, 7, 1, tzinfo=datetime.UTC)


# ---- withdrawn advisories -------------------------------------------------------------------

def test_a_withdrawn_advisory_stops_alerting_and_keeps_its_verdicts() -> None:
    due = IDENTIFIED + datetime.timedelta(hours=72)
    standing = spec_of(patchBy="2026-06-05T00:00:00Z")
    before = evaluate(standing, due)
    assert before.metrics is not None
    assert before.metrics.vulnerable == (("flux-system", "source-controller", True),)
    assert before.metrics.patch_overdue
    assert before.metrics.vendor_overdue
    assert condition(before, "Compliant")["status"] == "False"
    assert "Withdrawn" not in {c["type"] for c in before.status["conditions"]}

    withdrawn = copy.deepcopy(standing)
    withdrawn["withdrawnAt"] = "2026-06-06T09:00:00Z"
    after = evaluate(withdrawn, due, previous=before.status)
    assert after.status["components"][0]["verdict"] == "Vulnerable"
    assert after.status["counts"]["vulnerable"] == 1
    states = {c["type"]: (c["status"], c["reason"]) for c in after.status["conditions"]}
    assert states == {"Ready": ("True", "Evaluated"),
                      "Compliant": ("True", "AdvisoryWithdrawn"),
                      "PatchOverdue": ("False", "AdvisoryWithdrawn"),
                      "VexWarning": ("False", "NoVexDocuments"),
                      "Withdrawn": ("True", "AdvisoryWithdrawn"),
                      "VendorRemediationOverdue": ("False", "AdvisoryWithdrawn")}
    assert entry(after)["state"] == "NoDeadline"
    assert after.metrics is not None
    assert after.metrics.vulnerable == (("flux-system", "source-controller", False),)
    assert not after.metrics.patch_overdue
    assert (after.metrics.vendor_overdue, after.metrics.vendor_due) == (False, None)
    # Counts stay those of the verdicts the status shows.
    assert after.metrics.counts["Vulnerable"] == 1

    # Without a framework too.
    plain = evaluate(withdrawn, due, clock=None)
    assert plain.metrics is not None
    assert not plain.metrics.patch_overdue
    assert condition(plain, "Withdrawn")["status"] == "True"


@pytest.mark.parametrize("embargo", [None, "2026-07-01T00:00:00Z"])
def test_the_withdrawn_messages_quote_nothing_of_the_bulletin(embargo: str | None) -> None:
    spec = spec_of(withdrawnAt="2026-06-06T09:00:00Z",
                   **({"embargoUntil": embargo} if embargo else {}))
    result = evaluate(spec, IDENTIFIED)
    for kind in ("Withdrawn", "Compliant", "PatchOverdue", "VendorRemediationOverdue"):
        found = condition(result, kind)
        assert found["reason"] in securitybulletin.OWN_WORDS
        assert CVE not in found["message"]
