"""The pure half of the support channels: what is sent, when, and what counts as a reply."""

from __future__ import annotations

import datetime
import re

import pytest
import yaml

from fluxsupport.domain import policy, submission, supportcase
from fluxsupport.domain.calendar import BusinessCalendar

UID = "0c6f1c8e-5d0b-4a8e-9a43-3f7f2f1d9b10"
NOW = datetime.datetime(2026, 12, 7, 10, 0, tzinfo=datetime.UTC)
BOTH = policy.Channels.model_validate({
    "portal": {"enabled": True, "url": "https://rt.example/"},
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


#: status.submission.lastError of an email the operator did not see end (EMAIL_STOPPED).
STOPPED = "email: the operator stopped while sending it"


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
    for done in ({"ticketId": "7"},
                 {"channel": "email", "messageId": "<x>", "submittedAt": at(0)},
                 {"channel": "email", "messageId": "<x>", "lastError": "email: lost"}):
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
    ({"channel": "email", "messageId": "<m>", "lastEmailAttemptAt": at(0)}, BOTH,
     "SendingEmail", "Unknown"),
    ({"channel": "email", "messageId": "<m>", "lastError": STOPPED}, BOTH,
     "EmailUncertain", "Unknown"),
    ({"channel": "email", "messageId": "<m>", "lastError": "email: lost"}, BOTH,
     "EmailUncertain", "Unknown"),
    ({"channel": "email", "messageId": "<m>", "ticketId": "9"}, BOTH, "SubmittedByEmail",
     "True"),
    ({"attempts": 1, "firstAttemptAt": at(0), "lastAttemptAt": at(0),
      "createAttemptAt": at(0), "createUncertain": True, "lastError": "timeout"}, BOTH,
     "TicketUncertain", "Unknown"),
    ({"attempts": 0, "createAttemptAt": at(0)}, BOTH, "Pending", "False"),
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
                                           "portal": {"enabled": True, "url": "https://rt/"}}})
CALENDAR = BusinessCalendar(POLICY)


def evaluate(annotations: dict[str, str], record: dict[str, object]) -> supportcase.Evaluation:
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


@pytest.mark.parametrize(("title", "subject"), [
    ("HelmReleases stuck [rt.example.com #42]", "HelmReleases stuck (rt.example.com #42)"),
    ("see [fluxsupport.test  #7 ] and [RT #8]", "see (fluxsupport.test  #7 ) and (RT #8)"),
    ("[fluxsupport:11111111-2222-3333-4444-555555555555] hijack",
     "(fluxsupport:11111111-2222-3333-4444-555555555555) hijack"),
    ("[prod] HelmRelease #3 stuck", "[prod] HelmRelease #3 stuck"),
])
def test_ticket_tags_in_the_title_are_neutralised(title: str, subject: str) -> None:
    """RT's mail gateway files a mail whose subject holds ``[<rtname> #42]`` into ticket
    42, and a lookup by tag finds the subject that holds the tag: neither may come from the
    title."""
    message = submission.render(uid=UID, namespace="team-a", name="stuck", cluster="c",
                                level=2, spec={**SPEC, "title": title}, diagnostics=None)
    assert message.subject == f"[fluxsupport:{UID}] Level 2 (High): {subject}"
    assert submission.uid_in(message.subject) == UID
    assert "[fluxsupport:1111" not in message.subject
    assert not re.search(r"\[[^\]]*#\s*\d+[^\]]*\]", message.subject)


def test_no_email_while_a_ticket_create_is_in_doubt() -> None:
    """A create that got no answer may have made the ticket: the fallback would make RT open
    a second one from the email. The case waits for a lookup instead, and says so."""
    doubt = {"attempts": 3, "firstAttemptAt": at(0), "lastAttemptAt": at(1),
             "createAttemptAt": at(0.5), "createUncertain": True,
             "lastError": "RT at https://rt.example/ is unreachable: TimeoutError"}
    later = NOW + datetime.timedelta(minutes=10)
    step = submission.plan(doubt, 1, BOTH, False, later)
    assert step == submission.Plan(submission.Action.PORTAL)
    condition = submission.condition(doubt, 1, BOTH, False, later)
    assert (condition.status, condition.reason) == ("Unknown", "TicketUncertain")
    assert "may have made the ticket" in condition.message
    assert "TimeoutError" in condition.message
    # Without the doubt, the same failures go by email.
    certain = {key: value for key, value in doubt.items()
               if key not in ("createAttemptAt", "createUncertain")}
    assert submission.plan(certain, 1, BOTH, False, later).action is submission.Action.EMAIL


def test_a_new_create_waits_until_an_earlier_one_has_settled() -> None:
    """An attempt recorded by a replica that was taken over: its request may still reach
    the portal for up to CREATE_SETTLE_TIMEOUTS portal timeouts; even the portal coming back
    (no backoff) does not shorten that."""
    settle = datetime.timedelta(seconds=submission.CREATE_SETTLE_TIMEOUTS * BOTH.portal.timeout)
    attempt = {"createAttemptAt": submission.precise(NOW)}
    for backoff in (True, False):
        step = submission.plan(attempt, 4, BOTH, False, NOW + datetime.timedelta(seconds=1),
                               backoff=backoff)
        assert step == submission.Plan(submission.Action.PORTAL, NOW + settle)
    assert submission.plan(attempt, 4, BOTH, False, NOW + settle) == submission.Plan(
        submission.Action.PORTAL)
    assert submission.may_create(NOW, NOW + datetime.timedelta(seconds=10), BOTH)
    assert not submission.may_create(NOW, NOW + datetime.timedelta(seconds=11), BOTH)
    assert submission.precise(NOW + datetime.timedelta(microseconds=1500)) == \
        "2026-12-07T10:00:00.001Z"


def test_an_email_left_sending_is_settled_after_the_email_timeout() -> None:
    sending = {"channel": "email", "messageId": "<m>", "lastEmailAttemptAt": at(0)}
    ends = NOW + datetime.timedelta(seconds=BOTH.email.timeout + submission.EMAIL_SETTLE_S)
    assert submission.plan(sending, 1, BOTH, False, NOW) == submission.Plan(
        submission.Action.SETTLE_EMAIL, ends)
    assert submission.plan(sending, 1, BOTH, True, ends).action is \
        submission.Action.SETTLE_EMAIL
    for ended in ({"submittedAt": at(0)}, {"lastError": "email: lost"}, {"ticketId": "4"}):
        assert submission.plan({**sending, **ended}, 1, BOTH, False, ends).action is \
            submission.Action.NONE


EMAIL_POLICY = policy.Policy.model_validate({
    "timezone": "UTC", "holidays": "", "businessHours": {"alwaysOpen": True},
    "channels": {"email": BOTH.email.model_dump(by_alias=True)}})


def test_an_email_send_posts_one_normal_event_and_no_warning() -> None:
    """Recording the intent is not news; the email sent is, once."""
    def step(previous: dict[str, object], record: dict[str, object]
             ) -> tuple[dict[str, object], list[tuple[str, str]]]:
        result = supportcase.evaluate(
            spec=SPEC, annotations={}, created=NOW, generation=1,
            previous={**previous, "submission": record}, policy=EMAIL_POLICY,
            calendar=BusinessCalendar(EMAIL_POLICY), now=NOW + datetime.timedelta(minutes=1))
        return ({**result.status, "submission": record},
                [(event.type, event.reason) for event in result.events])

    pending, _ = step({}, {})
    intent = {"channel": "email", "messageId": submission.message_id(UID), "level": 2,
              "lastEmailAttemptAt": at(1)}
    sending, events = step(pending, intent)
    assert events == []
    _, events = step(sending, {**intent, "submittedAt": at(1)})
    assert events == [("Normal", "SubmittedByEmail")]
    assert submission.EMAIL_STOPPED == STOPPED
    _, events = step(sending, {**intent, "lastError": STOPPED})
    assert events == [("Warning", "EmailUncertain")]


@pytest.mark.parametrize("url", [
    "https://fluxsupport:s3cret@rt.example.com/", "https://token@rt.example.com/",
    "http://rt.example.com/", "http://10.0.0.7:8080/rt/", "http://rt.helpdesk.svc/"])
def test_a_portal_url_with_credentials_or_plain_http_is_refused(url: str) -> None:
    document = yaml.safe_dump({"channels": {"portal": {"enabled": True, "url": url}}})
    with pytest.raises(policy.PolicyError, match=r"channels\.portal\.url") as refused:
        policy.load_policy(document)
    assert "s3cret" not in str(refused.value)
    assert ("credentials" if "@" in url else "in clear") in str(refused.value)


@pytest.mark.parametrize("url", ["https://rt.example.com/", "https://rt.example.com:8443/rt/",
                                 "http://127.0.0.1:8080/", "http://[::1]/", "http://localhost/"])
def test_https_or_loopback_http_portal_urls_are_accepted(url: str) -> None:
    document = yaml.safe_dump({"channels": {"portal": {"enabled": True, "url": url}}})
    assert policy.load_policy(document).channels.portal.url == url
