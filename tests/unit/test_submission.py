"""The pure half of the support channels: what is sent, when, and what counts as a reply."""

from __future__ import annotations

import asyncio
import datetime
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from fluxsupport.channels import portal
from fluxsupport.controllers import submission as submission_controller
from fluxsupport.controllers.submission import SubmissionController
from fluxsupport.domain import casestatus, evaluation, policy, submission, supportcase
from fluxsupport.domain.calendar import BusinessCalendar
from tests import channelkit

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


# -- updates: the marker opens the text ------------------------------------------------------

def test_a_long_update_keeps_its_marker_where_a_cut_history_still_shows_it() -> None:
    from fluxsupport.channels import rt

    text = submission.update_text("comment-20261207-ab12", "Pasted log line\n" * 1000)
    assert len(text) > 4 * rt.CONTENT_LIMIT
    assert text.startswith("[fluxsupport-update:comment-20261207-ab12]")
    cut = submission.Transaction("9", "Comment", "fluxsupport-operator", NOW,
                                 content=text[:rt.CONTENT_LIMIT])
    assert submission.posted([cut], "comment-20261207-ab12")
    assert not submission.posted([cut], "comment-20261207-ab13")


def test_the_resolving_change_says_when_and_by_whom_not_the_last_update() -> None:
    history = [
        transaction("Create", "fluxsupport-operator", 0),
        submission.Transaction("2", "Status", "alice", NOW + datetime.timedelta(minutes=5),
                               new_value="resolved"),
        submission.Transaction("3", "Status", "bob", NOW + datetime.timedelta(minutes=6),
                               new_value="open"),
        submission.Transaction("4", "Status", "carol", NOW + datetime.timedelta(minutes=9),
                               new_value="resolved"),
        transaction("Comment", "dave", 30),
    ]
    assert submission.resolution(history) == submission.Reply(
        NOW + datetime.timedelta(minutes=9), "carol")
    assert submission.resolution(history[:1]) is None


@pytest.mark.parametrize(("record", "reason", "status", "words"), [
    ({"channel": "portal", "ticketId": "7"}, "UpToDate", "True", ["ticket 7"]),
    ({"channel": "portal", "ticketId": "7", "updateFailures": 3, "lastUpdateAttemptAt": at(0),
      "updateError": "RT at http://rt/ is unreachable"}, "Retrying", "False",
     ["failed 3 times", "unreachable", "2026-12-07T10:00:20Z"]),
    ({"channel": "portal", "ticketId": "7", "updateFailures": 1, "lastUpdateAttemptAt": at(0),
      "updateError": "RT refused GET ticket/7/history (404: Resource does not exist)",
      "updatePermanent": True}, "Failed", "False", ["404", "ticket exists", "10:00:05Z"]),
])
def test_ticket_updated_condition(record: dict[str, object], reason: str, status: str,
                                  words: list[str]) -> None:
    condition = submission.update_condition(record, BOTH, NOW)
    assert condition is not None
    assert (condition.type, condition.reason, condition.status) == ("TicketUpdated", reason,
                                                                      status)
    for word in words:
        assert word in condition.message
    assert submission.update_condition({}, BOTH, NOW) is None
    assert submission.update_condition(record, policy.Channels(), NOW) is None


def test_update_backoff_doubles_from_5_s_to_5_minutes() -> None:
    def due(failures: int) -> datetime.datetime | None:
        record = {"updateFailures": failures, "lastUpdateAttemptAt": at(0)}
        return submission.update_due(record, NOW)

    waits = [(due(n) or NOW) - NOW for n in (1, 2, 3, 7, 50)]
    assert [int(wait.total_seconds()) for wait in waits] == [5, 10, 20, 300, 300]
    assert submission.update_due({}, NOW) is None
    assert submission.update_due({"updateFailures": 1, "lastUpdateAttemptAt": at(-1)},
                                 NOW) is None


# -- the controller in-process: a real CaseController on a fake API server ------------------

def rt_ticket(ticket_id: str, uid: str, status: str = "open", minutes: float = 0
              ) -> portal.Ticket:
    return portal.Ticket(ticket_id, f"http://rt/Ticket/Display.html?id={ticket_id}",
                         f"[fluxsupport:{uid}] Level 2 (High): HelmReleases stuck", status,
                         NOW + datetime.timedelta(minutes=minutes))


class FakePortal:
    """A helpdesk that answers from memory and remembers each ``since`` the sync asked."""

    def __init__(self, tickets: list[portal.Ticket],
                 histories: dict[str, list[submission.Transaction]]) -> None:
        self.tickets = tickets
        self.histories = histories
        self.sinces: list[datetime.datetime | None] = []
        self.history_reads = 0

    async def whoami(self) -> str:
        return "fluxsupport-operator"

    async def updated_since(self, tag_prefix: str,
                            since: datetime.datetime | None) -> list[portal.Ticket]:
        self.sinces.append(since)
        return list(self.tickets)

    async def history(self, ticket_id: str) -> list[submission.Transaction]:
        self.history_reads += 1
        return list(self.histories.get(ticket_id, []))


def with_portal(monkeypatch: pytest.MonkeyPatch, controller: SubmissionController,
                fake: FakePortal) -> None:
    async def helpdesk() -> FakePortal:
        return fake
    monkeypatch.setattr(controller, "_helpdesk", helpdesk)


REPLY = transaction("Correspond", "alice", 20)


def test_the_sync_reads_again_a_ticket_whose_record_failed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A conflict or an API blip while storing a reply loses nothing: the ticket is not marked
    read, and the sync reports itself incomplete, so that ``since`` stays put."""
    async def scenario() -> tuple[list[object], dict[str, object]]:
        kube = channelkit.fake_kube()
        cases, submissions = channelkit.controllers(kube, "https://rt/")
        key = await channelkit.add(cases, channelkit.case_body("replied", ticket="7"))
        fake = FakePortal([rt_ticket("7", channelkit.uid("replied"), minutes=20)],
                          {"7": [transaction("Create", "fluxsupport-operator", 0), REPLY]})
        with_portal(monkeypatch, submissions, fake)
        kube.failures = 1
        outcomes: list[object] = [await submissions.sync_once(None)]
        outcomes.append(channelkit.submission(cases, key).get("firstReply"))
        outcomes.append(await submissions.sync_once(None))
        return outcomes, channelkit.submission(cases, key)

    outcomes, record = asyncio.run(scenario())
    assert outcomes[:2] == [False, None]
    assert outcomes[2] is True
    assert record["firstReply"] == {"at": at(20), "by": "alice"}


def test_since_moves_only_past_a_complete_sync_and_the_first_waits_for_the_case_list(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> tuple[list[datetime.datetime | None], int, dict[str, object]]:
        kube = channelkit.fake_kube()
        listed = asyncio.Event()
        rules = channelkit.policy("https://rt/")
        fast = rules.channels.model_copy(update={"portal": rules.channels.portal.model_copy(
            update={"sync_interval": 0.01})})
        cases, submissions = channelkit.controllers(kube, "https://rt/", listed=listed,
                                                    channels=fast)
        fake = FakePortal([rt_ticket("7", channelkit.uid("late"), minutes=20)],
                          {"7": [transaction("Create", "fluxsupport-operator", 0), REPLY]})
        with_portal(monkeypatch, submissions, fake)
        syncing = asyncio.create_task(submissions.run_sync())
        await asyncio.sleep(0.2)
        before_list = len(fake.sinces)
        # The case arrives with the end of the initial list; its first write then fails.
        key = await channelkit.add(cases, channelkit.case_body("late", ticket="7"))
        kube.failures = 1
        listed.set()
        for _ in range(500):
            await asyncio.sleep(0.01)
            if len(fake.sinces) >= 3:
                break
        syncing.cancel()
        return fake.sinces, before_list, channelkit.submission(cases, key)

    sinces, before_list, record = asyncio.run(scenario())
    assert before_list == 0, "a sync ran before the case list was complete"
    assert sinces[0] is None
    assert sinces[1] is None, "since moved past a ticket whose record failed"
    assert sinces[2] is not None
    assert record["firstReply"] == {"at": at(20), "by": "alice"}


def test_resolved_at_comes_from_the_resolving_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """A comment after the resolution moves the ticket's LastUpdated, not when it was
    resolved."""
    async def scenario() -> tuple[dict[str, object], dict[str, object]]:
        kube = channelkit.fake_kube()
        cases, submissions = channelkit.controllers(kube, "https://rt/")
        key = await channelkit.add(cases, channelkit.case_body("resolved", ticket="7"))
        history = [transaction("Create", "fluxsupport-operator", 0), REPLY,
                   submission.Transaction("5", "Status", "alice",
                                          NOW + datetime.timedelta(minutes=30),
                                          new_value="resolved"),
                   transaction("Comment", "bob", 300)]
        fake = FakePortal([rt_ticket("7", channelkit.uid("resolved"), "resolved", minutes=300)],
                          {"7": history})
        with_portal(monkeypatch, submissions, fake)
        assert await submissions.sync_once(None)
        status = cases.cases[key].status
        return status["submission"], status["closure"]

    record, closure = asyncio.run(scenario())
    assert (record["resolvedAt"], record["resolvedBy"]) == (at(30), "alice")
    assert closure["at"] == at(30)


def test_the_sync_forgets_the_tickets_of_deleted_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> tuple[set[str], set[str], int]:
        kube = channelkit.fake_kube()
        cases, submissions = channelkit.controllers(kube, "https://rt/")
        for name, ticket in (("kept", "7"), ("deleted", "8")):
            await channelkit.add(cases, channelkit.case_body(name, ticket=ticket))
        fake = FakePortal([rt_ticket("7", channelkit.uid("kept")),
                           rt_ticket("8", channelkit.uid("deleted"))], {})
        with_portal(monkeypatch, submissions, fake)
        await submissions.sync_once(None)
        both = set(submissions._seen)
        cases.forget("team-a", "deleted")
        await submissions.sync_once(None)
        return both, set(submissions._seen), fake.history_reads

    both, after, reads = asyncio.run(scenario())
    assert both == {"7", "8"}
    assert after == {"7"}
    assert reads == 2, "an unchanged ticket is not read twice"


# -- ticket updates that fail: a real HTTP server on loopback ----------------------------------

COMMENT = {"20261207T100000-ab12": "Rolled back to v2.6.0; still stuck."}


@pytest.mark.parametrize(("status", "words"), [
    (404, ["404", "Resource does not exist"]), (403, ["403", "Forbidden"])])
def test_refused_updates_back_off_and_never_hold_up_new_cases(
        status: int, words: list[str], figures: Callable[[str], None]) -> None:
    """Six cases whose tickets are gone (or out of the operator's sight) and a new case: the
    refusals are counted and shown, retried after a backoff, and the new case is filed
    meanwhile. The RT answers slowly, so that the stuck cases would hold the 4 slots."""
    stuck = [f"{n}" for n in range(7, 13)]
    window_s = 3.0

    async def scenario() -> tuple[Any, ...]:
        rt = channelkit.LoopbackRT()
        await rt.start()
        rt.refused = dict.fromkeys(stuck, status)
        rt.delay = 0.3
        kube = channelkit.fake_kube()
        cases, submissions = channelkit.controllers(kube, rt.url)
        runner = asyncio.create_task(submissions.scheduler.run())
        try:
            keys = [await channelkit.add(cases, channelkit.case_body(
                f"stuck-{ticket}", ticket=ticket, comments=COMMENT)) for ticket in stuck]
            started = time.monotonic()
            new = await channelkit.add(cases, channelkit.case_body("new"))
            filed = None
            # At least the window; longer only while a loaded machine has not got that far.
            while time.monotonic() - started < 30:
                await asyncio.sleep(0.05)
                if filed is None and channelkit.submission(cases, new).get("ticketId"):
                    filed = time.monotonic() - started
                if time.monotonic() - started >= window_s and filed is not None and all(
                        channelkit.submission(cases, k).get("updateFailures") for k in keys):
                    break
            elapsed = time.monotonic() - started
            # The stuck cases wait at low priority: behind any case waiting to be filed.
            waiting = [(k in submissions.scheduler._low_due, k in submissions.scheduler._due)
                       for k in keys]
            return (dict(rt.requests), elapsed, filed,
                    [channelkit.submission(cases, k) for k in keys],
                    [channelkit.condition(cases, k, "TicketUpdated") for k in keys],
                    dict(submissions._locks), waiting)
        finally:
            runner.cancel()
            await submissions.close()
            await rt.stop()

    requests, elapsed, filed, records, conditions_, locks, waiting = asyncio.run(scenario())
    per_ticket = [requests.get(ticket, 0) for ticket in stuck]
    figures(f"{status} on updates: requests per stuck ticket in {elapsed:.1f} s: "
            f"{per_ticket}; new case filed after "
            f"{'never' if filed is None else f'{filed:.2f} s'}")
    # One request per attempt (the history); attempts 5 s, 10 s, ... apart.
    assert max(per_ticket) <= 1 + int(elapsed // 5), per_ticket
    assert filed is not None, "the new case was not filed while the stuck ones retried"
    for record, condition in zip(records, conditions_, strict=True):
        assert record["updateFailures"] == 1
        assert record["updatePermanent"] is True
        assert "updates" not in record
        assert condition is not None
        assert (condition["status"], condition["reason"]) == ("False", "Failed")
        for word in words:
            assert word in condition["message"]
    assert locks == {}, "locks outlive their use"
    assert waiting == [(True, False)] * len(stuck)


def test_an_unreachable_portal_is_asked_again_after_a_backoff(
        figures: Callable[[str], None]) -> None:
    window_s = 3.0

    async def scenario() -> tuple[int, dict[str, Any], dict[str, Any] | None]:
        server, url, connections = await channelkit.closing_server()
        kube = channelkit.fake_kube()
        cases, submissions = channelkit.controllers(kube, url)
        runner = asyncio.create_task(submissions.scheduler.run())
        try:
            key = await channelkit.add(cases, channelkit.case_body(
                "unreachable", ticket="7", comments=COMMENT))
            for _ in range(600):
                await asyncio.sleep(0.05)
                if channelkit.submission(cases, key).get("updateFailures"):
                    break
            before = len(connections)
            await asyncio.sleep(window_s)
            return (len(connections) - before, channelkit.submission(cases, key),
                    channelkit.condition(cases, key, "TicketUpdated"))
        finally:
            runner.cancel()
            await submissions.close()
            server.close()

    more, record, condition = asyncio.run(scenario())
    figures(f"portal closing connections: {more} more connection(s) in the {window_s:.0f} s "
            "after the first failed attempt")
    assert more <= 2, more  # the next attempt is 5 s after the first
    assert record["updateFailures"] == 1
    assert record["updatePermanent"] is False
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", "Retrying")
    assert "unreachable" in condition["message"]


def test_a_success_ends_the_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ticket is back: the next attempt posts the comment once, clears the failures and
    the condition, and ends the scheduler's own backoff of the case."""
    async def scenario() -> tuple[Any, ...]:
        rt = channelkit.LoopbackRT()
        await rt.start()
        rt.refused = {"7": 404}
        kube = channelkit.fake_kube()
        cases, submissions = channelkit.controllers(kube, rt.url)
        try:
            key = await channelkit.add(cases, channelkit.case_body(
                "back", ticket="7", comments=COMMENT))
            await submissions._act(key)
            failed = channelkit.submission(cases, key)
            await submissions._act(key)  # within the backoff: nothing is asked
            asked = rt.requests["7"]
            submissions.scheduler.retry(key)  # as after a reconcile that raised
            rt.refused = {}
            later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=6)
            monkeypatch.setattr(submission_controller, "_now", lambda: later)
            await submissions._act(key)
            return (failed, asked, channelkit.submission(cases, key),
                    channelkit.condition(cases, key, "TicketUpdated"), rt.comments["7"],
                    dict(submissions.scheduler._failures))
        finally:
            await submissions.close()
            await rt.stop()

    failed, asked, record, condition, comments, failures = asyncio.run(scenario())
    assert failed["updateFailures"] == 1
    assert asked == 1
    assert record["updates"] == ["comment-20261207T100000-ab12"]
    assert not {"updateFailures", "updateError", "lastUpdateAttemptAt",
                "updatePermanent"} & set(record)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "UpToDate")
    assert len(comments) == 1
    assert comments[0].startswith("[fluxsupport-update:comment-20261207T100000-ab12]")
    assert failures == {}, "the scheduler's backoff outlived the success"


def test_a_failure_with_nothing_left_to_post_clears() -> None:
    """The customer removed the comment the ticket refused: the condition does not stay
    False for an update nobody wants any more, and the portal is not asked."""
    async def scenario() -> tuple[bool, dict[str, object], dict[str, object] | None]:
        kube = channelkit.fake_kube()
        cases, submissions = channelkit.controllers(kube, "http://127.0.0.1:9/")
        body = channelkit.case_body("removed", ticket="7")
        body["status"]["submission"].update(
            updateFailures=4, lastUpdateAttemptAt=at(0), updatePermanent=True,
            updateError="RT refused GET ticket/7/history (404: Resource does not exist)",
            # The ticket has its Priority and Due already: nothing at all is left to send.
            sla={"priority": 75, "due": "2026-12-07T17:00:00Z"})
        key = await channelkit.add(cases, body)
        scheduled = key in submissions.scheduler._due
        await submissions._act(key)
        return (scheduled, channelkit.submission(cases, key),
                channelkit.condition(cases, key, "TicketUpdated"))

    scheduled, record, condition = asyncio.run(scenario())
    assert scheduled
    assert "updateFailures" not in record
    assert "updateError" not in record
    assert condition is not None
    assert condition["reason"] == "UpToDate"


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


def test_a_portal_ca_bundle_must_be_pem_for_an_https_url() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    portal = {"enabled": True, "url": "https://10.0.0.7/", "caBundle": pem}
    assert policy.load_policy(yaml.safe_dump({"channels": {"portal": portal}})) \
        .channels.portal.ca_bundle == pem
    with pytest.raises(policy.PolicyError, match="no PEM certificate"):
        policy.load_policy(yaml.safe_dump(
            {"channels": {"portal": {**portal, "caBundle": "not a certificate"}}}))
    with pytest.raises(policy.PolicyError, match="caBundle is for an https"):
        policy.load_policy(yaml.safe_dump(
            {"channels": {"portal": {**portal, "url": "http://127.0.0.1/"}}}))


def test_a_ca_bundle_that_does_not_load_is_a_permanent_portal_error() -> None:
    from fluxsupport.channels import portal as portal_module
    from fluxsupport.channels import rt

    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    with pytest.raises(portal_module.PortalError, match="caBundle is not usable") as refused:
        rt.RequestTracker("https://rt.example/", "General", "token", ca_bundle=pem)
    assert refused.value.transient is False
