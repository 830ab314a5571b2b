"""Escalation tiers and root-cause analyses with the real Request Tracker 5 (tests/rt.py).

The operator runs with a policy that has escalation tiers and root-cause analyses on the test
calendar (24x7, Urgent due in 4 s with its warning point at 2 s: tier 1 within seconds). The
tier's comment reaches the ticket once across a SIGKILL right after RT took it; a support
reply marked "RCA:" delivers the RCA into the case. A tier's email the SMTP server refuses is
sent again after its backoff and arrives once. A SecurityBulletin whose critical vulnerability
passed the vendor's remediation deadline unmitigated reaches tier 3, whose email goes to the
executive sponsor at most once.
"""

from __future__ import annotations

import collections
import secrets
from typing import Any

from tests import fixtures, harness
from tests.integration.test_channels import create, submission, tickets_for
from tests.integration.test_channels_exactly_once import (  # noqa: F401
    Operators,
    channels_policy,
    operators,
    prepared,
)
from tests.rt import MailGateway, RequestTracker

#: Repeated Severity 1 counts per namespace: the Urgent cases of other tests do not count.
ESCALATION = """\
escalation:
  notProgressingAfter: 1h
  commentOnTicket: true
  repeatedSeverity1: {scope: namespace}
  contacts: {accountManager: [am@vendor.example]}
rootCauseAnalysis: {levels: [1, 2], days: 10}
"""
ACCOUNT_MANAGER = "am@vendor.example"


def policy(rt: RequestTracker, gateway: MailGateway) -> str:
    return channels_policy(rt.url, rt, gateway) + ESCALATION


def status(api: harness.Api, namespace: str, name: str) -> dict[str, Any]:
    return dict(api.get_case(namespace, name).get("status") or {})


def reasons(api: harness.Api, namespace: str, name: str) -> collections.Counter[str]:
    return collections.Counter(event.reason for event in api.events_for(namespace, name))


def tier_mails(gateway: MailGateway, uid: str) -> list[list[str]]:
    """The recipients of each tier 1 email of the case the gateway received."""
    marker = f"<case-{uid}-tier1@fluxsupport>".encode()
    return [recipients for _, recipients, data in gateway.messages if marker in data]


def tier_comments(rt: RequestTracker, ticket: str) -> int:
    return rt.ticket_text(ticket).count("[fluxsupport-update:escalation-tier-1]")


def test_a_tiers_comment_reaches_the_ticket_once_across_a_sigkill(
        operators: Operators,  # noqa: F811
        rt: RequestTracker, gateway: MailGateway, api: harness.Api, namespace: str) -> None:
    rules = policy(rt, gateway)
    # Only this case: other tests' Urgent cases escalate, and get comments, too.
    process = operators.start("killed", rules, FLUXSUPPORT_FAILPOINT="after-update-post",
                              FLUXSUPPORT_FAILPOINT_CASE=f"{namespace}/escalated")
    uid = create(api, namespace, "escalated", "Urgent")["metadata"]["uid"]
    harness.wait_for(lambda: not process.alive(), timeout=90,
                     what="the operator killed right after posting the tier's comment")
    assert process.process is not None
    assert process.process.returncode == -9
    [(ticket, _)] = tickets_for(rt, uid)
    assert tier_comments(rt, ticket) == 1
    assert "escalation-tier-1" not in (submission(api, namespace, "escalated").get("updates")
                                       or [])
    escalation = status(api, namespace, "escalated")["escalation"]
    assert escalation["tiers"][0]["trigger"] == "TargetAtRisk"
    operators.start("restarted", rules)
    harness.wait_for(
        lambda: "escalation-tier-1" in (submission(api, namespace, "escalated").get("updates")
                                        or []),
        timeout=90, what="the tier's comment recorded after the restart")
    assert tier_comments(rt, ticket) == 1
    text = rt.ticket_text(ticket)
    assert "Escalated to tier 1 (account manager)" in text
    # The tier keeps the instant first recorded, and its Event was posted once.
    assert status(api, namespace, "escalated")["escalation"]["tiers"][0] == \
        escalation["tiers"][0]
    harness.wait_for(lambda: reasons(api, namespace, "escalated")["EscalatedTier1"],
                     timeout=30, what="the EscalatedTier1 Event")
    assert reasons(api, namespace, "escalated")["EscalatedTier1"] == 1
    condition = harness.condition(api.get_case(namespace, "escalated"), "Escalated")
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "Tier1TargetAtRisk")


def test_a_support_reply_marked_rca_delivers_the_root_cause_analysis(
        operators: Operators,  # noqa: F811
        rt: RequestTracker, gateway: MailGateway, api: harness.Api, namespace: str) -> None:
    operators.start("rca", policy(rt, gateway))
    create(api, namespace, "incident", "High")
    ticket = harness.wait_for(lambda: submission(api, namespace, "incident").get("ticketId"),
                              timeout=60, what="a ticket")
    rt.reply_as_support(ticket, "Looking into it.")
    rt.resolve(ticket)
    pending = harness.wait_for(
        lambda: (status(api, namespace, "incident").get("rootCauseAnalysis") or {}).get(
            "dueAt") and status(api, namespace, "incident")["rootCauseAnalysis"],
        timeout=60, what="the RCA due after the resolution")
    assert pending["state"] == "Pending"
    assert "deliveredAt" not in pending
    rt.reply_as_support(ticket, "RCA: the helm-controller upgrade outage\n\nTimeline ...")
    # RT reopens a resolved ticket on any correspondence (its "On Correspond Open Inactive
    # Tickets" scrip), and the case with it; support resolves it again.
    harness.wait_for(lambda: "resolvedAt" not in submission(api, namespace, "incident"),
                     timeout=60, what="the case reopened with its ticket")
    rt.resolve(ticket)
    delivered = harness.wait_for(
        lambda: (rca := status(api, namespace, "incident").get("rootCauseAnalysis") or {}).get(
            "deliveredAt") and rca.get("dueAt") and rca,
        timeout=60, what="the RCA delivered through the ticket")
    assert (delivered["state"], delivered["source"]) == ("Delivered", "portal")
    assert delivered["dueAt"] >= pending["dueAt"]  # from the later resolution
    record = submission(api, namespace, "incident")
    assert record["rootCauseAnalysis"]["at"] == delivered["deliveredAt"]
    # Support's latest reply is recorded once, in the conversation the tiers read.
    assert record["conversation"]["lastSupportReplyAt"] == delivered["deliveredAt"]
    assert "lastReply" not in record
    condition = harness.condition(api.get_case(namespace, "incident"),
                                  "RootCauseAnalysisOverdue")
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", "Delivered")
    harness.wait_for(lambda: reasons(api, namespace, "incident")["RootCauseAnalysisDelivered"],
                     timeout=30, what="the RootCauseAnalysisDelivered Event")
    assert reasons(api, namespace, "incident")["RootCauseAnalysisDelivered"] == 1


def test_a_tier_email_goes_to_its_contacts_at_most_once_across_a_sigkill(
        operators: Operators,  # noqa: F811
        rt: RequestTracker, gateway: MailGateway, api: harness.Api, namespace: str) -> None:
    rules = policy(rt, gateway)
    process = operators.start("killed", rules,
                              FLUXSUPPORT_FAILPOINT="before-escalation-email-send",
                              FLUXSUPPORT_FAILPOINT_CASE=f"{namespace}/unsent")
    killed = create(api, namespace, "unsent", "Urgent")["metadata"]["uid"]
    harness.wait_for(lambda: not process.alive(), timeout=90,
                     what="the operator killed right before the tier's email")
    [intent] = submission(api, namespace, "unsent")["escalationEmails"]
    assert (intent["tier"], intent["messageId"]) == (1, f"<case-{killed}-tier1@fluxsupport>")
    assert "sentAt" not in intent
    assert tier_mails(gateway, killed) == []
    operators.start("restarted", rules)
    sent = create(api, namespace, "sent", "Urgent")["metadata"]["uid"]
    record = harness.wait_for(
        lambda: next((entry for entry in submission(api, namespace, "sent").get(
            "escalationEmails") or [] if entry.get("sentAt")), None),
        timeout=90, what="the tier's email sent")
    assert record["tier"] == 1
    assert tier_mails(gateway, sent) == [[ACCOUNT_MANAGER]]
    # The email whose send was interrupted is not sent again: at most once.
    harness.wait_for(lambda: "escalation-tier-1" in (
        submission(api, namespace, "unsent").get("updates") or []),
        timeout=90, what="the restarted operator acting on the interrupted case")
    assert tier_mails(gateway, killed) == []
    assert submission(api, namespace, "unsent")["escalationEmails"] == [intent]


def test_a_tier_email_the_server_refused_is_sent_again_and_arrives_once(
        operators: Operators,  # noqa: F811
        rt: RequestTracker, gateway: MailGateway, api: harness.Api, namespace: str) -> None:
    # The subject names the case: the server refuses its first tier email, whenever it comes.
    gateway.refuse[f"SupportCase {namespace}/refused".encode()] = 1
    operators.start("refusals", policy(rt, gateway))
    uid = create(api, namespace, "refused", "Urgent")["metadata"]["uid"]
    record = harness.wait_for(
        lambda: next((entry for entry in submission(api, namespace, "refused").get(
            "escalationEmails") or [] if entry.get("sentAt")), None),
        timeout=90, what="the tier's email sent after the refusal")
    assert len([data for data in gateway.refused if uid.encode() in data]) == 1
    assert (record["tier"], record["attempts"]) == (1, 1)
    assert "554" in record["lastError"]
    assert "retryAt" not in record
    assert "error" not in record
    assert tier_mails(gateway, uid) == [[ACCOUNT_MANAGER]]
    # Sent: never again, whatever the operator does next (its comment on the ticket, the
    # syncs of the ticket).
    harness.wait_for(lambda: "escalation-tier-1" in (
        submission(api, namespace, "refused").get("updates") or []),
        timeout=90, what="the tier's ticket comment")
    assert tier_mails(gateway, uid) == [[ACCOUNT_MANAGER]]


SPONSOR = "sponsor@vendor.example"


def bulletin_policy(rt: RequestTracker, gateway: MailGateway) -> str:
    """Tier 3 for bulletins: the vendor's remediation clock and an executive sponsor."""
    rules = policy(rt, gateway).replace(
        "contacts: {accountManager: [am@vendor.example]}",
        f"contacts: {{accountManager: [am@vendor.example], executiveSponsor: [{SPONSOR}]}}")
    assert SPONSOR in rules
    return rules + "remediationFramework: standard\n"


def unmitigated(name: str) -> dict[str, Any]:
    """A critical vulnerability identified in June with no fixed digest listed: the standard
    framework's 72 hours have long passed."""
    body = fixtures.bulletin_for(name, "CVE-2026-47680", "source-controller",
                                 fixtures.images(fixtures.FIX_V275)["source-controller"])
    spec = body["spec"]
    del spec["fixes"]
    spec["affectedVersions"] = [{"component": "source-controller",
                                 "ranges": [{"introduced": "v1.0.0", "fixed": "v1.7.5"}]}]
    spec["vulnerabilities"][0].update(identifiedAt="2026-06-03T10:00:00Z", cvssScore=9.8)
    return body


def sponsor_mails(gateway: MailGateway, uid: str) -> list[list[str]]:
    marker = f"<bulletin-{uid}-tier3@fluxsupport>".encode()
    return [recipients for _, recipients, data in gateway.messages if marker in data]


def bulletin_emails(api: harness.Api, name: str) -> list[dict[str, Any]]:
    status = api.get_bulletin(name).get("status") or {}
    return list((status.get("escalation") or {}).get("emails") or [])


def test_a_bulletins_tier_3_email_goes_to_the_sponsor_at_most_once_across_a_sigkill(
        operators: Operators,  # noqa: F811
        rt: RequestTracker, gateway: MailGateway, api: harness.Api) -> None:
    rules = bulletin_policy(rt, gateway)
    killed_name, sent_name = f"esc-{secrets.token_hex(4)}", f"esc-{secrets.token_hex(4)}"
    process = operators.start("killed", rules,
                              FLUXSUPPORT_FAILPOINT="before-escalation-email-send",
                              FLUXSUPPORT_FAILPOINT_CASE=killed_name)
    killed = api.create_bulletin(unmitigated(killed_name))["metadata"]["uid"]
    try:
        harness.wait_for(lambda: not process.alive(), timeout=90,
                         what="the operator killed right before the tier 3 email")
        assert process.process is not None
        assert process.process.returncode == -9
        [intent] = bulletin_emails(api, killed_name)
        assert (intent["tier"], intent["messageId"]) == (
            3, f"<bulletin-{killed}-tier3@fluxsupport>")
        assert "sentAt" not in intent
        [tier] = api.get_bulletin(killed_name)["status"]["escalation"]["tiers"]
        assert (tier["trigger"], tier["reachedAt"]) == ("UnmitigatedCriticalVulnerability",
                                                        "2026-06-06T10:00:00Z")
        restarted = operators.start("restarted", rules)
        # The restarted operator evaluated the interrupted bulletin (its metric is out) ...
        harness.wait_for(
            lambda: f'fluxsupport_bulletin_escalation_tier{{bulletin="{killed_name}"}} 3.0'
            in restarted.metrics(), timeout=60, what="the restarted operator's tier metric")
        sent = api.create_bulletin(unmitigated(sent_name))["metadata"]["uid"]
        record = harness.wait_for(
            lambda: next((entry for entry in bulletin_emails(api, sent_name)
                          if entry.get("sentAt")), None),
            timeout=90, what="the tier 3 email of the second bulletin sent")
        assert record["tier"] == 3
        assert sponsor_mails(gateway, sent) == [[SPONSOR]]
        # ... and did not send its email again: at most once.
        assert sponsor_mails(gateway, killed) == []
        assert bulletin_emails(api, killed_name) == [intent]
        for name in (killed_name, sent_name):
            harness.wait_for(lambda name=name: reasons(api, "default", name)["EscalatedTier3"],
                             timeout=30, what=f"the EscalatedTier3 Event of {name}")
            assert reasons(api, "default", name)["EscalatedTier3"] == 1
            condition = harness.condition(api.get_bulletin(name), "Escalated")
            assert condition is not None
            assert (condition["status"], condition["reason"]) == (
                "True", "Tier3UnmitigatedCriticalVulnerability")
    finally:
        for name in (killed_name, sent_name):
            api.delete_bulletin(name)
