"""One ticket and at most one email per case across kills, lost answers and two replicas.

The operator runs against the real Request Tracker 5 (tests/rt.py), reached through a proxy on
loopback that loses, delays or holds RT's answers (PortalProxy), and falls back to the real
SMTP gateway whose mail RT's own mail gateway turns into tickets. Each test starts the
operators it needs (the session operator is stopped for the module) and counts tickets in RT
and emails at the gateway.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import pathlib
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests import conftest, harness
from tests.integration.test_channels import (
    CUSTOMER,
    SECRET,
    create,
    submission,
    tickets_for,
)
from tests.integration.test_reliability_peering import peering_object, state  # noqa: F401
from tests.rt import RTNAME, MailGateway, PortalProxy, RequestTracker


def channels_policy(portal_url: str, rt: RequestTracker, gateway: MailGateway, *,
                    timeout_s: int = 10, portal: bool = True) -> str:
    """``timeout_s``: RT makes a ticket in seconds on a loaded machine (it mails its
    autoreply through the gateway meanwhile); a create in doubt settles after three."""
    return conftest.TEST_POLICY + f"""\
channels:
  cluster: test-cluster
  secretName: {SECRET}
  portal: {{enabled: {str(portal).lower()}, url: "{portal_url}", queue: {rt.queue},
           syncInterval: 1s, timeout: {timeout_s}s}}
  email: {{enabled: true, host: 127.0.0.1, port: {gateway.port}, tls: none,
          from: {CUSTOMER}, to: {rt.correspond_address}, timeout: 5s}}
  fallback: {{levels: [1, 2], attempts: 2, after: 1m}}
"""


class Operators:
    """Operator processes of one test, with the channels policy given; all stopped after,
    and none may have logged a traceback."""

    def __init__(self, credentials: pathlib.Path, workdir: pathlib.Path) -> None:
        self.credentials, self.workdir = credentials, workdir
        self.processes: list[harness.OperatorProcess] = []

    def start(self, name: str, policy: str, *args: str, **env: str) -> harness.OperatorProcess:
        path = self.workdir / f"{name}-policy.yaml"
        path.write_text(policy)
        process = harness.OperatorProcess(self.credentials, self.workdir,
                                          extra_args=("--policy", str(path), *args),
                                          env=env, name=name)
        process.start()
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.pid is not None:  # a frozen process would not see SIGTERM
                with_pid(process.pid, signal.SIGCONT)
            process.stop()
        logs = {p.log_path.name: p.log_text() for p in self.processes}
        broken = {name: text[-3000:] for name, text in logs.items() if "Traceback" in text}
        assert not broken, broken


def with_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


@pytest.fixture(scope="module")
def prepared(operator: harness.OperatorProcess, api: harness.Api, kubeconfig: pathlib.Path,
             rt: RequestTracker) -> Iterator[None]:
    """The channels Secret and the chart's channels Role; the session operator (no channels)
    stops for the module."""
    namespace = conftest.OPERATOR_NAMESPACE
    harness.ensure_namespace(api, namespace)
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": SECRET, "namespace": namespace},
              "data": {"portal-token": base64.b64encode(rt.operator_token.encode()).decode()}}
    harness.kubectl(kubeconfig, "apply", "-f", "-", input_text=json.dumps(secret))
    role = harness.helm(kubeconfig, "template", conftest.SESSION_RELEASE, str(conftest.CHART),
                        "--namespace", namespace, "--show-only", "templates/rbac-channels.yaml",
                        "--set", "policy.channels.portal.enabled=true",
                        "--set", f"policy.channels.portal.url={rt.url}")
    assert role.returncode == 0, role.stderr
    harness.kubectl(kubeconfig, "apply", "-f", "-", input_text=role.stdout)
    operator.stop()
    try:
        yield
    finally:
        operator.start()


@pytest.fixture
def proxy(rt: RequestTracker) -> Iterator[PortalProxy]:
    server = PortalProxy(rt.url)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def operators(prepared: None, operator_credentials: harness.OperatorCredentials,
              tmp_path: pathlib.Path) -> Iterator[Operators]:
    running = Operators(operator_credentials.kubeconfig, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


def mails_for(gateway: MailGateway, uid: str) -> list[bytes]:
    """The operator's emails for the case: from the customer to RT's address (RT's own mail
    to requestors also carries the tag)."""
    return [data for sender, recipients, data in gateway.messages
            if sender == CUSTOMER and f"fluxsupport:{uid}".encode() in data]


def submitted(api: harness.Api, namespace: str, name: str) -> dict[str, Any]:
    return harness.condition(api.get_case(namespace, name), "Submitted") or {}


def events(api: harness.Api, namespace: str, name: str) -> collections.Counter[tuple[str, str]]:
    return collections.Counter((e.type, e.reason) for e in api.events_for(namespace, name))


def test_a_create_whose_answer_is_lost_is_not_emailed_and_files_one_ticket(
        operators: Operators, proxy: PortalProxy, rt: RequestTracker, gateway: MailGateway,
        api: harness.Api, namespace: str, figures: Any) -> None:
    """RT makes the ticket, its answer is lost, and RT stops answering: the Level 1 case does
    not fall back to email (RT's mail gateway would open a second ticket) but says that the
    ticket may exist, and links it once RT answers."""
    proxy.swallow_creates = 1  # and from then on nothing answers until heal()
    operators.start("lost-answer", channels_policy(proxy.url, rt, gateway, timeout_s=5))
    uid = create(api, namespace, "lost", "Urgent")["metadata"]["uid"]
    harness.wait_for(lambda: proxy.creates, timeout=60, what="the create reaching RT")
    [(ticket, _)] = tickets_for(rt, uid)
    started = time.monotonic()
    # Two failed attempts send a Level 1 case by email (fallback.attempts: 2); wait for a
    # third, or for the email that must not come.
    harness.wait_for(lambda: (submission(api, namespace, "lost").get("attempts") or 0) >= 3
                     or mails_for(gateway, uid), timeout=120, interval=0.2,
                     what="three attempts or an email")
    assert mails_for(gateway, uid) == []
    record = submission(api, namespace, "lost")
    assert "messageId" not in record
    assert record["createUncertain"] is True
    condition = submitted(api, namespace, "lost")
    assert (condition["status"], condition["reason"]) == ("Unknown", "TicketUncertain")
    assert "may have made the ticket" in condition["message"]
    harness.wait_for(lambda: events(api, namespace, "lost")[("Warning", "TicketUncertain")],
                     timeout=30, what="the TicketUncertain Event")
    figures(f"lost create answer: {record['attempts']} attempts in "
            f"{time.monotonic() - started:.1f} s without an email")

    proxy.heal()
    healed = time.monotonic()
    linked = harness.wait_for(lambda: submission(api, namespace, "lost").get("ticketId"),
                              timeout=60, what="the ticket linked once RT answers")
    figures(f"lost create answer: RT answers again -> ticket linked in "
            f"{time.monotonic() - healed:.1f} s")
    assert linked == ticket
    assert [found for found, _ in tickets_for(rt, uid)] == [ticket]
    assert mails_for(gateway, uid) == []
    assert len(proxy.creates) == 1
    assert submitted(api, namespace, "lost")["reason"] == "Submitted"
    assert events(api, namespace, "lost")[("Warning", "TicketUncertain")] == 1


@pytest.mark.parametrize(("failpoint", "tickets_at_kill"), [
    ("before-ticket-create", 0), ("after-ticket-create", 1)])
def test_a_kill_at_each_step_of_a_create_files_one_ticket(
        operators: Operators, proxy: PortalProxy, rt: RequestTracker, gateway: MailGateway,
        api: harness.Api, namespace: str, failpoint: str, tickets_at_kill: int) -> None:
    policy = channels_policy(proxy.url, rt, gateway)
    process = operators.start("killed", policy, FLUXSUPPORT_FAILPOINT=failpoint)
    uid = create(api, namespace, "kill", "High")["metadata"]["uid"]
    harness.wait_for(lambda: not process.alive(), timeout=60, what=f"the kill at {failpoint}")
    assert process.process is not None
    assert process.process.returncode == -signal.SIGKILL
    record = submission(api, namespace, "kill")
    assert record["createAttemptAt"]
    assert "ticketId" not in record
    assert len(tickets_for(rt, uid)) == tickets_at_kill
    operators.start("restarted", policy)
    ticket = harness.wait_for(lambda: submission(api, namespace, "kill").get("ticketId"),
                              timeout=90, what="the ticket after the restart")
    assert [found for found, _ in tickets_for(rt, uid)] == [ticket]
    assert len(proxy.creates) == 1
    assert mails_for(gateway, uid) == []


@pytest.mark.parametrize(("failpoint", "sent"), [("before-email-send", 0),
                                                 ("after-email-send", 1)])
def test_a_kill_at_each_step_of_an_email_sends_it_at_most_once(
        operators: Operators, proxy: PortalProxy, rt: RequestTracker, gateway: MailGateway,
        api: harness.Api, namespace: str, failpoint: str, sent: int) -> None:
    proxy.unavailable = True  # the portal fails: the Level 1 case goes by email
    policy = channels_policy(proxy.url, rt, gateway)
    process = operators.start("killed", policy, FLUXSUPPORT_FAILPOINT=failpoint)
    uid = create(api, namespace, "mail", "Urgent")["metadata"]["uid"]
    harness.wait_for(lambda: not process.alive(), timeout=90, what=f"the kill at {failpoint}")
    record = submission(api, namespace, "mail")
    assert record["messageId"] == f"<case-{uid}@fluxsupport>"
    assert "submittedAt" not in record
    assert len(mails_for(gateway, uid)) == sent
    assert submitted(api, namespace, "mail")["reason"] == "SendingEmail"
    proxy.heal()
    operators.start("restarted", policy)
    if sent:  # RT made a ticket from the email: the sync links it, and so it arrived
        harness.wait_for(lambda: submission(api, namespace, "mail").get("ticketId"),
                         timeout=60, what="the email's ticket linked")
        condition = submitted(api, namespace, "mail")
        assert (condition["status"], condition["reason"]) == ("True", "SubmittedByEmail")
    else:  # nothing says whether it went: it is not sent again, and the case says so
        harness.wait_for(lambda: submitted(api, namespace, "mail").get("reason")
                         == "EmailUncertain", timeout=90, what="EmailUncertain")
        condition = submitted(api, namespace, "mail")
        assert condition["status"] == "Unknown"
        assert "operator stopped" in condition["message"]
    assert len(mails_for(gateway, uid)) == sent
    assert len(tickets_for(rt, uid)) == sent
    assert proxy.creates == []


def test_an_email_send_posts_one_normal_event(
        operators: Operators, rt: RequestTracker, gateway: MailGateway, api: harness.Api,
        namespace: str) -> None:
    """The happy path of `make demo`: no Warning that the email "may have arrived"."""
    operators.start("email-only", channels_policy(rt.url, rt, gateway, portal=False))
    uid = create(api, namespace, "mailed", "High")["metadata"]["uid"]
    harness.wait_for(lambda: submission(api, namespace, "mailed").get("submittedAt"),
                     timeout=60, what="the email sent")
    assert len(mails_for(gateway, uid)) == 1
    condition = submitted(api, namespace, "mailed")
    assert (condition["status"], condition["reason"]) == ("True", "SubmittedByEmail")
    harness.wait_for(lambda: events(api, namespace, "mailed")[("Normal", "SubmittedByEmail")],
                     timeout=30, what="the SubmittedByEmail Event")
    posted = events(api, namespace, "mailed")
    assert posted[("Normal", "SubmittedByEmail")] == 1
    assert not [event for event in posted if event[0] == "Warning"], posted


def test_a_title_naming_another_ticket_opens_a_ticket_of_its_own(
        operators: Operators, rt: RequestTracker, gateway: MailGateway, api: harness.Api,
        namespace: str) -> None:
    """RT's mail gateway files a mail whose subject carries ``[<rtname> #N]`` into ticket N
    and mails it to N's requestors: the title's tag must not reach the subject as a tag."""
    other = rt.rest("POST", "ticket", {"Queue": rt.queue, "Subject": "Another customer",
                                       "Content": "Theirs.", "Requestor": "other@else.test"})
    other_id = str(other["id"])
    history = len(rt.history(other_id))
    operators.start("email-only", channels_policy(rt.url, rt, gateway, portal=False))
    title = f"Rollout stuck, as in [{RTNAME} #{other_id}]"
    uid = create(api, namespace, "tagged", "High", title=title)["metadata"]["uid"]
    mail = gateway.wait_for(lambda m: m["Message-ID"] == f"<case-{uid}@fluxsupport>")
    assert f"Rollout stuck, as in ({RTNAME} #{other_id})" in str(mail["Subject"])
    [(ticket, _)] = harness.wait_for(lambda: tickets_for(rt, uid), timeout=60,
                                     what="RT's ticket made from the email")
    assert ticket != other_id
    assert len(rt.history(other_id)) == history
    assert not [data for _, recipients, data in gateway.messages
                if "other@else.test" in recipients and uid.encode() in data]


def test_two_active_replicas_file_one_ticket_per_case(
        operators: Operators, proxy: PortalProxy, rt: RequestTracker, gateway: MailGateway,
        api: harness.Api, namespace: str, figures: Any) -> None:
    """Both replicas act at once (the overlap of a takeover, at its worst): each records its
    attempt with the case's resourceVersion before it creates, and only one write lands."""
    proxy.delay_creates = 2.0  # a slow RT: both replicas have looked before either created
    policy = channels_policy(proxy.url, rt, gateway)
    operators.start("replica-a", policy)
    operators.start("replica-b", policy)
    names = [f"both-{index}" for index in range(6)]
    uids = [create(api, namespace, name, "High")["metadata"]["uid"] for name in names]
    started = time.monotonic()
    harness.wait_for(lambda: all(submission(api, namespace, name).get("ticketId")
                                 for name in names), timeout=180, interval=0.2,
                     what="a ticket for every case")
    posted = proxy.requests.count(("POST", "/REST/2.0/ticket"))
    figures(f"two active replicas: {len(names)} cases filed in "
            f"{time.monotonic() - started:.1f} s with {posted} create requests")
    assert {uid: len(tickets_for(rt, uid)) for uid in uids} == dict.fromkeys(uids, 1)
    assert all(mails_for(gateway, uid) == [] for uid in uids)


def test_a_frozen_leaders_create_is_waited_for_by_the_standby(
        operators: Operators, proxy: PortalProxy, rt: RequestTracker, gateway: MailGateway,
        api: harness.Api, namespace: str, peering_object: None,  # noqa: F811
        figures: Any) -> None:
    """The leader records its attempt, sends the create and freezes (SIGSTOP) before RT has
    it; the standby takes over while the request is still on its way, and waits for it
    instead of creating a second ticket."""
    policy = channels_policy(proxy.url, rt, gateway)
    peering = ("--peering", "--peering-lifetime", "4")
    leader = operators.start("leader", policy, *peering, "--priority", "100")
    harness.wait_for(lambda: state(leader) == "active", timeout=30, what="the leader active")
    standby = operators.start("standby", policy, *peering, "--priority", "50")
    harness.wait_for(lambda: state(standby) == "standby", timeout=30, what="the standby")
    proxy.hold_creates = 1
    uid = create(api, namespace, "frozen", "High")["metadata"]["uid"]
    harness.wait_for(lambda: proxy.held, timeout=60, what="the leader's create on its way")
    assert leader.pid is not None
    with_pid(leader.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        harness.wait_for(lambda: state(standby) == "active", timeout=60,
                         what="the standby taking over")
        took_over = time.monotonic() - frozen
        # A second create would come now; the leader's reaches RT a little later.
        time.sleep(3)
        second = len(proxy.creates)
        proxy.release()
        harness.wait_for(lambda: len(proxy.creates) > second, timeout=30,
                         what="the leader's create reaching RT")
        ticket = harness.wait_for(lambda: submission(api, namespace, "frozen").get("ticketId"),
                                  timeout=90, what="the ticket linked by the standby")
        figures(f"frozen leader: the standby took over in {took_over:.1f} s and linked the "
                f"leader's ticket {time.monotonic() - frozen:.1f} s after the freeze")
    finally:
        with_pid(leader.pid, signal.SIGCONT)
    assert second == 0, "the standby created a ticket while the leader's create was on its way"
    # The leader runs again (and leads again): it creates nothing more either.
    harness.wait_for(lambda: state(leader) == "active", timeout=60, what="the leader back")
    time.sleep(5)
    assert [found for found, _ in tickets_for(rt, uid)] == [ticket]
    assert len(proxy.creates) == 1
    assert mails_for(gateway, uid) == []
