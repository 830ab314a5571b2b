"""The pure half of the support channels: what is sent, when, and what counts as a reply."""

from __future__ import annotations

import datetime

import pytest
import yaml

from fluxsupport.domain import casestatus, evaluation, policy, submission, supportcase
from fluxsupport.domain.calendar import BusinessCalendar

UID = "0c6f1c8e-5d0b-4a8e-9a43-3f7f2f1d9b10"
NOW = datetime.datetime(2026, 12, 7, 10, 0, tzinfo=datetime.UTC)
BOTH = policy.Channels.model_validate({
    "portal": {"enabled": True, "url": "http://rt.example/"},
    "email": {"enabled": True, "host": "smtp.example", "from": "ops@customer.example",
              "to": "support@vendor.example"},
    "fallback": {"levels": [1, 2], "attempts": 3, "after": "5m"},
})
SPEC = {
    "title": "HelmReleases stuck", "severity": "High", "component": "helm-controller",
    "category": "incident", "description": "Upgrades hang since v2.6.1.",
    "impact": {"statement": "Prod deploys blocked", "environment": "production",
               "outage": "partial", "businessCritical": True},
    "contact": {"name": "Bob", "email": "bob@customer.example"},
}


def at(minutes: float) -> str:
    return (NOW + datetime.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_render_names_the_case_its_impact_and_the_cluster() -> None:
    diagnostics = {"kubernetesVersion": "v1.36.3", "fluxVersion": "v2.6.1", "components": [
        {"namespace": "flux-system", "name": "helm-controller",
         "image": "ghcr.io/controlplaneio-fluxcd/helm-controller:v1.3.0",
         "digests": ["sha256:" + "a" * 64], "ready": True}]}
    message = submission.render(uid=UID, namespace="team-a", name="stuck", cluster="prod-eu",
                                level=2, spec=SPEC, diagnostics=diagnostics)
    assert message.subject == f"[fluxsupport:{UID}] Level 2 (High): HelmReleases stuck"
    for text in ("Prod deploys blocked", "production", "partial", "helm-controller",
                 "incident", "Bob <bob@customer.example>", "v1.36.3", "sha256:" + "a" * 64,
                 f"cluster=prod-eu namespace=team-a name=stuck uid={UID}",
                 "Upgrades hang since v2.6.1."):
        assert text in message.body
    assert submission.uid_in(message.subject) == UID


def test_the_tag_survives_rt_prefixes_on_its_own_mail() -> None:
    assert submission.uid_in(f"[fluxsupport.test #7] AutoReply: [fluxsupport:{UID}] x") == UID
    assert submission.uid_in("[fluxsupport.test #7] no tag here") is None


def transaction(type_: str, creator: str, minutes: float, email: str = ""
                ) -> submission.Transaction:
    return submission.Transaction(str(minutes), type_, creator,
                                  NOW + datetime.timedelta(minutes=minutes), email)


def test_first_reply_skips_rt_itself_the_operator_and_the_requestor() -> None:
    history = [
        transaction("Create", "fluxsupport-operator", 0),
        transaction("EmailRecord", "RT_System", 0.1),  # the autoreply
        transaction("Correspond", "RT_System", 0.2),
        transaction("Correspond", "fluxsupport-operator", 0.3),
        transaction("Correspond", "bob@customer.example", 0.4, "bob@customer.example"),
        transaction("Comment", "alice", 0.5),
        transaction("Correspond", "alice", 2),
        transaction("Correspond", "carol", 1),
    ]
    reply = submission.first_reply(history, ["fluxsupport-operator", "BOB@customer.example"])
    assert reply == submission.Reply(NOW + datetime.timedelta(minutes=1), "carol")
    assert submission.first_reply(history[:6], ["fluxsupport-operator",
                                                "bob@customer.example"]) is None


def test_plan_portal_first_then_email_for_emergencies_only() -> None:
    plan, Action = submission.plan, submission.Action
    assert plan({}, 1, BOTH, False, NOW) == submission.Plan(Action.PORTAL)
    failed_once = {"attempts": 1, "firstAttemptAt": at(0), "lastAttemptAt": at(0)}
    assert plan(failed_once, 1, BOTH, False, NOW) == submission.Plan(
        Action.PORTAL, NOW + datetime.timedelta(seconds=5))
    assert plan(failed_once, 1, BOTH, False, NOW + datetime.timedelta(minutes=5)).action \
        is Action.EMAIL
    thrice = {"attempts": 3, "firstAttemptAt": at(0), "lastAttemptAt": at(1)}
    assert plan(thrice, 2, BOTH, False, NOW + datetime.timedelta(minutes=1)).action \
        is Action.EMAIL
    # Level 4 never goes by email while the portal is configured: it waits and retries.
    low = plan(thrice, 4, BOTH, False, NOW + datetime.timedelta(minutes=1))
    assert low == submission.Plan(Action.PORTAL, NOW + datetime.timedelta(minutes=1, seconds=20))
    many = {"attempts": 30, "firstAttemptAt": at(0), "lastAttemptAt": at(60)}
    assert plan(many, 4, BOTH, False, NOW).at == NOW + datetime.timedelta(minutes=65)


def test_plan_sends_nothing_twice_and_nothing_when_off_or_closed() -> None:
    off = policy.Channels()
    assert submission.plan({}, 1, off, False, NOW).action is submission.Action.NONE
    assert submission.plan({}, 1, BOTH, True, NOW).action is submission.Action.NONE
    for done in ({"ticketId": "7"}, {"channel": "email", "messageId": "<x>"}):
        assert submission.plan(done, 1, BOTH, False, NOW).action is submission.Action.NONE
    email_only = policy.Channels.model_validate({"email": BOTH.email.model_dump(by_alias=True)})
    assert submission.plan({}, 4, email_only, False, NOW) == submission.Plan(
        submission.Action.EMAIL)
    refused = {"emailAttempts": 2, "lastEmailAttemptAt": at(0)}
    assert submission.plan(refused, 4, email_only, False, NOW).at == \
        NOW + datetime.timedelta(seconds=10)


@pytest.mark.parametrize(("record", "channels", "reason", "status"), [
    ({}, policy.Channels(), "ChannelDisabled", "False"),
    ({}, BOTH, "Pending", "False"),
    ({"attempts": 1, "firstAttemptAt": at(0), "lastAttemptAt": at(0),
      "lastError": "connection refused"}, BOTH, "Retrying", "False"),
    ({"attempts": 1, "lastAttemptAt": at(0), "lastError": "401", "permanent": True}, BOTH,
     "Failed", "False"),
    ({"channel": "portal", "ticketId": "7", "url": "http://rt/7"}, BOTH, "Submitted", "True"),
    ({"channel": "email", "messageId": "<m>", "submittedAt": at(1)}, BOTH,
     "SubmittedByEmail", "True"),
    ({"channel": "email", "messageId": "<m>"}, BOTH, "SubmittedByEmail", "Unknown"),
])
def test_submitted_condition(record: dict[str, object], channels: policy.Channels, reason: str,
                             status: str) -> None:
    condition = submission.condition(record, 2, channels, False, NOW)
    assert (condition.reason, condition.status) == (reason, status)
    assert condition.message


def test_retrying_says_when_and_about_the_fallback() -> None:
    record = {"attempts": 1, "firstAttemptAt": at(0), "lastAttemptAt": at(0),
              "lastError": "connection refused"}
    message = submission.condition(record, 1, BOTH, False, NOW).message
    assert "connection refused" in message
    assert "2026-12-07T10:00:05Z" in message
    assert "Level 1 may go by email after 3 attempts" in message


POLICY = policy.Policy.model_validate({"timezone": "UTC", "holidays": "",
                                       "businessHours": {"alwaysOpen": True}, "channels": {
                                           "portal": {"enabled": True, "url": "http://rt/"}}})
CALENDAR = BusinessCalendar(POLICY)


def evaluate(annotations: dict[str, str], record: dict[str, object]
             ) -> evaluation.Evaluation[casestatus.CaseMetrics]:
    return supportcase.evaluate(spec=SPEC, annotations=annotations, created=NOW, generation=1,
                                previous={"submission": record}, policy=POLICY,
                                calendar=CALENDAR, now=NOW + datetime.timedelta(hours=1))


def test_the_earliest_response_wins_and_its_source_is_recorded() -> None:
    record = {"channel": "portal", "ticketId": "7", "firstReply": {"at": at(10), "by": "alice"}}
    first = evaluate({}, record).status["firstResponse"]
    assert (first["respondedAt"], first["respondedBy"], first["source"]) == \
        (at(10), "alice", "portal")
    earlier = {"support.fluxcd.controlplane.io/responded-at": at(5),
               "support.fluxcd.controlplane.io/responded-by": "bob"}
    first = evaluate(earlier, record).status["firstResponse"]
    assert (first["respondedAt"], first["respondedBy"], first["source"]) == \
        (at(5), "bob", "annotation")


def test_a_resolved_ticket_resolves_the_case() -> None:
    result = evaluate({}, {"channel": "portal", "ticketId": "7", "resolvedAt": at(20)})
    assert result.status["closure"] == {"outcome": "Resolved", "at": at(20), "source": "portal"}
    assert result.status["firstResponse"]["state"] == "Met"


def test_submitted_event_once_on_the_transition() -> None:
    result = evaluate({}, {"channel": "portal", "ticketId": "7", "url": "http://rt/7"})
    assert [event.reason for event in result.events] == ["Submitted"]


@pytest.mark.parametrize(("channels", "problem"), [
    ({"portal": {"enabled": True}}, "an enabled portal needs url"),
    ({"email": {"enabled": True, "from": "a@b"}}, "enabled email needs host, to"),
    ({"email": {"enabled": True, "host": "h", "from": "a", "to": "b@c"}}, "not an email"),
    ({"email": {"tls": "ssl"}}, "starttls"),
    ({"fallback": {"levels": [5]}}, "unknown level 5"),
])
def test_bad_channel_settings_name_the_field(channels: dict[str, object], problem: str) -> None:
    with pytest.raises(policy.PolicyError, match=problem):
        policy.load_policy(yaml.safe_dump({"channels": channels}))
