"""A SupportCase's escalation tiers and root-cause analysis in its status: the blocks, the
conditions, the Events owed once, the next instants, the metrics and the controller's count
of Severity 1 cases."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from fluxsupport import constants
from fluxsupport.controllers import supportcase as controller
from fluxsupport.controllers import writes
from fluxsupport.controllers.supportcase import CaseController
from fluxsupport.domain import (
    caseescalation,
    casestatus,
    conditions,
    conversation,
    evaluation,
    supportcase,
    ticketrecord,
    timing,
)
from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import Policy
from fluxsupport.domain.submission import Transaction
from fluxsupport.observability import metrics
from tests import fakes
from tests.fixtures import EMEA, SLA_POLICY_DOC, at, doc_moment, doc_table

CREATED = timing.parse_time("2026-11-30T10:00:00Z")  # Monday 10:00 London


def spec(severity: str = "High") -> dict[str, Any]:
    return {"title": "HelmReleases stuck", "description": "...", "severity": severity,
            "impact": {"statement": "Deploys blocked", "environment": "production",
                       "outage": "partial", "businessCritical": True},
            "component": "helm-controller", "category": "incident"}


def evaluate(now: str, annotations: dict[str, str] | None = None,
             previous: dict[str, Any] | None = None, *, policy: Policy = EMEA,
             severity: str = "High", others: tuple[datetime.datetime, ...] = (),
             ) -> evaluation.Evaluation[casestatus.CaseMetrics]:
    return supportcase.evaluate(
        spec=spec(severity), annotations=annotations or {}, created=CREATED, generation=1,
        previous=previous or {}, policy=policy, calendar=BusinessCalendar(policy),
        now=at(now), other_severity1_openings=others)


def kinds(result: evaluation.Evaluation[casestatus.CaseMetrics]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in result.status["conditions"]}


def reasons(result: evaluation.Evaluation[casestatus.CaseMetrics]) -> list[str]:
    return [event.reason for event in result.events]


def test_the_default_policy_has_no_escalation_and_no_root_cause_analysis() -> None:
    policy = Policy()
    resolved = {constants.RESPONDED_AT: "2026-11-30T17:00:00Z",
                constants.RESOLVED_AT: "2026-12-03T10:00:00Z"}
    result = evaluate("2026-12-20T10:00:00Z", resolved, policy=policy, severity="Urgent")
    assert "escalation" not in result.status
    assert "rootCauseAnalysis" not in result.status
    assert not {"Escalated", "RootCauseAnalysisOverdue"} & set(kinds(result))
    assert result.metrics is not None
    assert (result.metrics.escalation_tier, result.metrics.rca_due) == (None, None)
    assert policy.fingerprint() == Policy(escalation=None).fingerprint()


def test_tier_1_is_reached_at_the_warning_point_with_one_event() -> None:
    # High, 2026 EMEA: first response due 14:00, warning point 13:00.
    before = evaluate("2026-11-30T12:00:00Z")
    assert before.status["escalation"] == {"tier": 0, "tiers": []}
    assert kinds(before)["Escalated"] == ("False", "NotEscalated")
    assert before.next_transition == at("2026-11-30T13:00:00Z")
    reached = evaluate("2026-11-30T13:00:00Z", previous=before.status)
    assert reached.status["escalation"] == {"tier": 1, "tiers": [{
        "tier": 1, "contact": "account manager", "reachedAt": "2026-11-30T13:00:00Z",
        "trigger": "TargetAtRisk",
        "detail": "the first response target is at risk since 2026-11-30T13:00:00Z"}]}
    assert kinds(reached)["Escalated"] == ("True", "Tier1TargetAtRisk")
    assert reasons(reached) == ["EscalatedTier1"]
    assert reached.metrics is not None
    assert reached.metrics.escalation_tier == 1
    again = evaluate("2026-11-30T13:30:00Z", previous=reached.status)
    assert "EscalatedTier1" not in reasons(again)
    assert again.status["escalation"] == reached.status["escalation"]


def test_a_recorded_tier_keeps_its_instant_when_the_facts_change() -> None:
    reached = evaluate("2026-11-30T13:05:00Z")
    # The response is recorded late, as given before the warning point: the tier stays.
    answered = {constants.RESPONDED_AT: "2026-11-30T12:00:00Z"}
    later = evaluate("2026-11-30T13:10:00Z", answered, reached.status)
    assert later.status["escalation"] == reached.status["escalation"]
    assert kinds(later)["Escalated"] == ("True", "Tier1TargetAtRisk")
    assert reasons(later) == ["FirstResponded"]


def test_tier_2_follows_the_support_replies_the_portal_recorded() -> None:
    # Low (16 and 40 Support Hours): answered Mon 11:00 on the ticket, then silence.
    previous = {"submission": {"ticketId": "7", "firstReply": {"at": "2026-11-30T11:00:00Z",
                                                               "by": "alice"}}}
    waiting = evaluate("2026-12-01T12:00:00Z", previous=previous, severity="Low")
    # 16 Support Hours from Mon 11:00: 6 + 8 + 2, Wed 11:00.
    assert waiting.next_transition == at("2026-12-02T11:00:00Z")
    stuck = evaluate("2026-12-02T11:00:00Z", previous={**previous, **waiting.status},
                     severity="Low")
    assert stuck.status["escalation"]["tiers"][0]["trigger"] == "NotProgressing"
    assert stuck.status["escalation"]["tiers"][0]["reachedAt"] == "2026-12-02T11:00:00Z"
    assert kinds(stuck)["Escalated"] == ("True", "Tier2NotProgressing")
    assert reasons(stuck) == ["EscalatedTier2"]
    # A later reply of support moves the limit instead.
    replied = {"submission": {**previous["submission"], "conversation": {
        "supportReplies": 2, "lastSupportReplyAt": "2026-12-01T16:00:00Z",
        "lastSupportReplyBy": "bob"}}}
    moving = evaluate("2026-12-02T11:00:00Z", previous={**waiting.status, **replied},
                      severity="Low")
    assert moving.status["escalation"]["tiers"] == []


def test_tier_3_for_the_second_severity_1_case_within_the_window() -> None:
    alone = evaluate("2026-11-30T10:20:00Z", severity="Urgent")
    assert alone.status["escalation"]["tier"] == 0
    second = evaluate("2026-11-30T10:20:00Z", severity="Urgent",
                      others=(at("2026-11-15T08:00:00Z"),))
    assert second.status["escalation"]["tiers"][0]["trigger"] == "RepeatedSeverity1"
    assert kinds(second)["Escalated"] == ("True", "Tier3RepeatedSeverity1")
    assert [r for r in reasons(second) if r.startswith("Escalated")] == ["EscalatedTier3"]


def test_the_root_cause_analysis_is_pending_then_overdue_with_one_event() -> None:
    resolved = {constants.RESPONDED_AT: "2026-11-30T11:00:00Z",
                constants.RESOLVED_AT: "2026-11-30T15:00:00Z"}
    pending = evaluate("2026-11-30T15:01:00Z", resolved)
    assert pending.status["rootCauseAnalysis"] == {"state": "Pending",
                                                   "dueAt": "2026-12-10T15:00:00Z"}
    assert kinds(pending)["RootCauseAnalysisOverdue"] == ("False", "Pending")
    assert pending.next_transition == at("2026-12-10T15:00:00Z")
    assert pending.metrics is not None
    assert pending.metrics.rca_due == at("2026-12-10T15:00:00Z").timestamp()
    overdue = evaluate("2026-12-10T15:00:00Z", resolved, pending.status)
    assert overdue.status["rootCauseAnalysis"]["state"] == "Overdue"
    assert kinds(overdue)["RootCauseAnalysisOverdue"] == ("True", "Overdue")
    assert reasons(overdue) == ["RootCauseAnalysisOverdue"]
    assert overdue.next_transition is None
    assert reasons(evaluate("2026-12-11T15:00:00Z", resolved, overdue.status)) == []


def test_the_root_cause_analysis_is_delivered_by_the_customer_or_the_ticket() -> None:
    resolved = {constants.RESPONDED_AT: "2026-11-30T11:00:00Z",
                constants.RESOLVED_AT: "2026-11-30T15:00:00Z"}
    pending = evaluate("2026-12-01T10:00:00Z", resolved)
    by_customer = {**resolved, constants.RCA_DELIVERED_AT: "2026-12-04T09:00:00Z",
                   constants.RCA_DELIVERED_BY: "carol"}
    delivered = evaluate("2026-12-04T09:01:00Z", by_customer, pending.status)
    assert delivered.status["rootCauseAnalysis"] == {
        "state": "Delivered", "dueAt": "2026-12-10T15:00:00Z",
        "deliveredAt": "2026-12-04T09:00:00Z", "source": "annotation", "deliveredBy": "carol"}
    assert reasons(delivered) == ["RootCauseAnalysisDelivered"]
    assert delivered.metrics is not None
    assert delivered.metrics.rca_due is None
    # The ticket's marked reply came earlier: the earliest delivery counts.
    portal = {**pending.status, "submission": {"rootCauseAnalysis": {
        "at": "2026-12-03T12:00:00Z", "by": "alice"}}}
    both = evaluate("2026-12-04T09:01:00Z", by_customer, portal)
    assert both.status["rootCauseAnalysis"]["deliveredAt"] == "2026-12-03T12:00:00Z"
    assert both.status["rootCauseAnalysis"]["source"] == "portal"


def test_a_bad_delivery_annotation_is_named_in_the_condition() -> None:
    resolved = {constants.RESPONDED_AT: "2026-11-30T11:00:00Z",
                constants.RESOLVED_AT: "2026-11-30T15:00:00Z",
                constants.RCA_DELIVERED_AT: "last tuesday"}
    result = evaluate("2026-12-01T10:00:00Z", resolved)
    assert result.status["rootCauseAnalysis"]["state"] == "Pending"
    [condition] = [c for c in result.status["conditions"]
                   if c["type"] == "RootCauseAnalysisOverdue"]
    assert "rca-delivered-at='last tuesday' is not an RFC 3339 time" in condition["message"]


def test_an_invalid_spec_keeps_the_recorded_tiers() -> None:
    """A spec that turns invalid drops no tier: valid again, the tier is not announced
    twice."""
    reached = evaluate("2026-11-30T13:05:00Z")
    invalid = supportcase.evaluate(
        spec={"title": 5}, annotations={}, created=CREATED, generation=2,
        previous=reached.status, policy=EMEA, calendar=BusinessCalendar(EMEA),
        now=at("2026-11-30T13:10:00Z"))
    patch = writes.status_patch(reached.status, invalid.status, controller.KEPT_STATUS)
    assert "escalation" not in patch
    assert "rootCauseAnalysis" in controller.KEPT_STATUS


def _body(name: str, uid: str, created: str, severity: str = "Urgent") -> dict[str, Any]:
    return {"metadata": {"namespace": "team-a", "name": name, "uid": uid,
                         "resourceVersion": "1", "generation": 1,
                         "creationTimestamp": created},
            "spec": spec(severity), "status": {}}


def test_the_controller_counts_the_other_severity_1_cases_and_exports_the_tier() -> None:
    client = fakes.FakeClient()
    cases = CaseController(EMEA, client)
    now = datetime.datetime.now(datetime.UTC)
    first = (now - datetime.timedelta(minutes=10)).isoformat()
    second = (now - datetime.timedelta(minutes=5)).isoformat()
    for name, uid, created in (("one", "u1", first), ("two", "u2", second)):
        body = _body(name, uid, created)
        key, _ = cases.observe(body)
        asyncio.run(cases.reconcile(key))
    assert set(cases.severity1) == {("team-a", "one"), ("team-a", "two")}
    two = cases.get(("team-a", "two"))
    assert two is not None
    assert two.status["escalation"]["tiers"][0]["trigger"] == "RepeatedSeverity1"
    # The first case reaches the tier too, at the second one's opening, once reconciled.
    asyncio.run(cases.reconcile(("team-a", "one")))
    one = cases.get(("team-a", "one"))
    assert one is not None
    assert one.status["escalation"]["tiers"][0]["trigger"] == "RepeatedSeverity1"
    found = {(family.name, sample.labels["supportcase"]): sample.value
             for family in metrics.CaseCollector(cases).collect()
             for sample in family.samples if "supportcase" in sample.labels}
    assert found[("supportcase_escalation_tier", "two")] == 3
    assert found[("supportcase_escalation_tier", "one")] == 3


def test_the_ticket_gives_the_rca_delivery_and_no_second_record_of_the_latest_reply(
        ) -> None:
    people = conversation.People.of("fluxsupport", ["carol@customer.example"])
    history = [
        Transaction("1", "Create", "fluxsupport", at("2026-11-30T10:00:00Z"), content="..."),
        Transaction("2", "Correspond", "alice", at("2026-11-30T11:00:00Z"), content="On it."),
        Transaction("3", "Correspond", "carol", at("2026-11-30T12:00:00Z"),
                    creator_email="carol@customer.example", content="Thanks"),
        Transaction("4", "Comment", "bob", at("2026-11-30T13:00:00Z"),
                    content="RCA: internal note, not a delivery"),
        Transaction("5", "Correspond", "bob", at("2026-12-03T09:00:00Z"),
                    subject="Re: [support #7] HelmReleases stuck", content="Attached.",
                    attachments=("RCA-7.pdf",)),
        Transaction("6", "Correspond", "alice", at("2026-12-04T09:00:00Z"), content="Bye"),
    ]
    assert caseescalation.ticket_facts(history, people) == {
        "rootCauseAnalysis": {"at": "2026-12-03T09:00:00Z", "by": "bob"}}
    assert caseescalation.ticket_facts(history[:3], people) == {}
    # The latest reply is the conversation's, which the tiers read.
    said = ticketrecord.record(history, people)["conversation"]
    assert (said["lastSupportReplyAt"], said["lastSupportReplyBy"]) == (
        "2026-12-04T09:00:00Z", "alice")
    replies = caseescalation.support_replies({
        "firstReply": {"at": "2026-11-30T11:00:00Z", "by": "alice"}, "conversation": said})
    assert replies == [at("2026-11-30T11:00:00Z"), at("2026-12-04T09:00:00Z")]


def test_each_tier_recorded_has_one_ticket_comment() -> None:
    reached = evaluate("2026-11-30T13:05:00Z")
    assert caseescalation.tier_comments(reached.status) == [(
        "escalation-tier-1",
        "Escalated to tier 1 (account manager) at 2026-11-30T13:00:00Z: the first response "
        "target is at risk since 2026-11-30T13:00:00Z.")]
    assert caseescalation.tier_comments(evaluate("2026-11-30T12:00:00Z").status) == []


def _doc_rows() -> list[list[str]]:
    return doc_table(SLA_POLICY_DOC, "### Worked example of a case's escalation and RCA", [
        "Now", "First reply", "Last reply", "Resolved", "RCA reply", "Tier", "Escalated",
        "Events", "RCA", "RCA due"])


def _doc_time(text: str) -> str | None:
    return None if text == "none" else conditions.rfc3339(doc_moment(text))


def test_worked_example_of_a_cases_escalation_and_rca() -> None:
    rows = _doc_rows()
    assert len(rows) >= 6
    status: dict[str, Any] = {}
    for now, first, last, resolved, delivered, tier, escalated, events, state, due in rows:
        submission: dict[str, Any] = {"ticketId": "7",
                                      "firstReply": {"at": _doc_time(first), "by": "alice"}}
        if _doc_time(last):
            submission["conversation"] = {"lastSupportReplyAt": _doc_time(last),
                                          "lastSupportReplyBy": "alice"}
        if _doc_time(delivered):
            submission["rootCauseAnalysis"] = {"at": _doc_time(delivered), "by": "alice"}
        annotations = {constants.RESOLVED_AT: resolved_at} if (
            resolved_at := _doc_time(resolved)) else {}
        result = evaluate(str(_doc_time(now)), annotations,
                          {**status, "submission": submission})
        status = result.status
        assert status["escalation"]["tier"] == int(tier), now
        assert kinds(result)["Escalated"][1] == escalated, now
        owned = [reason for reason in reasons(result)
                 if reason.startswith(("Escalated", "RootCause"))]
        assert owned == ([] if events == "none" else events.split(", ")), now
        assert status["rootCauseAnalysis"]["state"] == state, now
        assert status["rootCauseAnalysis"].get("dueAt") == _doc_time(due), now
