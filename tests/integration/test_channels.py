"""Support channels end to end: the operator on the real API server submits cases to the real
Request Tracker 5 (tests/rt.py), falls back to email through a real SMTP server whose mail
RT's own mail gateway turns into tickets, and brings the support team's replies back.

The operator runs as the chart's ServiceAccount, with the chart's channels Role (the one
Secret by name) applied from `helm template`.
"""

from __future__ import annotations

import base64
import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests import conftest, harness
from tests.integration.test_cli import fluxsupport
from tests.rt import MailGateway, RequestTracker

SECRET = "fluxsupport-channels"
CUSTOMER = "flux-ops@customer.test"


def channels_policy(rt: RequestTracker, gateway: MailGateway) -> str:
    """The portal timeout is the product's default, 10 s: RT serves one request at a time and
    takes seconds to make a ticket on a loaded machine (3.9 s measured with other test runs
    beside it); a create that times out is in doubt, and an update backs off."""
    return conftest.TEST_POLICY + f"""\
channels:
  cluster: test-cluster
  secretName: {SECRET}
  portal: {{enabled: true, url: "{rt.url}", queue: {rt.queue}, syncInterval: 1s, timeout: 10s}}
  email: {{enabled: true, host: 127.0.0.1, port: {gateway.port}, tls: none,
          from: {CUSTOMER}, to: {rt.correspond_address}, timeout: 5s}}
  fallback: {{levels: [1, 2], attempts: 2, after: 1m}}
"""


class ChannelsOperator:
    """The operator with the channels policy; restartable with a failpoint."""

    def __init__(self, credentials: pathlib.Path, log_dir: pathlib.Path,
                 policy: pathlib.Path) -> None:
        self.credentials, self.log_dir, self.policy = credentials, log_dir, policy
        self.process: harness.OperatorProcess | None = None

    def start(self, **env: str) -> harness.OperatorProcess:
        self.process = harness.OperatorProcess(
            self.credentials, self.log_dir, extra_args=("--policy", str(self.policy)),
            env=env, name="channels-operator")
        self.process.start()
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture(scope="module")
def channels_operator(operator: harness.OperatorProcess,
                      operator_credentials: harness.OperatorCredentials, api: harness.Api,
                      kubeconfig: pathlib.Path, rt: RequestTracker, gateway: MailGateway,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChannelsOperator]:
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
    policy = tmp_path_factory.mktemp("channels") / "policy.yaml"
    policy.write_text(channels_policy(rt, gateway))
    operator.stop()  # one operator at a time: the session one has no channels
    runner = ChannelsOperator(operator_credentials.kubeconfig,
                              tmp_path_factory.mktemp("channels-operator"), policy)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()
        log = runner.process.log_text() if runner.process else ""
        operator.start()
        assert "Traceback" not in log, log[-5000:]


def tickets_for(rt: RequestTracker, uid: str) -> list[tuple[str, str]]:
    return rt.tickets(f"Subject LIKE 'fluxsupport:{uid}'")


def submission(api: harness.Api, namespace: str, name: str) -> dict[str, Any]:
    return dict((api.get_case(namespace, name).get("status") or {}).get("submission") or {})


def create(api: harness.Api, namespace: str, name: str, severity: str,
           **spec: Any) -> dict[str, Any]:
    body = harness.case_manifest(name, namespace, severity)
    body["spec"].update(spec)
    return api.create_case(namespace, body)


def last_sync(process: harness.OperatorProcess) -> float:
    for line in process.metrics().splitlines():
        if line.startswith("fluxsupport_portal_last_sync_timestamp_seconds "):
            return float(line.split()[1])
    raise AssertionError("no fluxsupport_portal_last_sync_timestamp_seconds")


def test_a_case_becomes_an_rt_ticket_with_its_fields(
        channels_operator: ChannelsOperator, api: harness.Api, rt: RequestTracker,
        namespace: str, figures: Any) -> None:
    started = time.monotonic()
    created = create(api, namespace, "ticket", "Medium",
                     contact={"name": "Bob", "email": "bob@customer.test"})
    uid = created["metadata"]["uid"]
    record = harness.wait_for(lambda: submission(api, namespace, "ticket").get("ticketId")
                              and submission(api, namespace, "ticket"), timeout=60,
                              what="a ticket id in status.submission")
    figures(f"case applied -> ticket in status: {time.monotonic() - started:.2f} s")
    assert record["channel"] == "portal"
    assert record["url"] == f"{rt.url}Ticket/Display.html?id={record['ticketId']}"
    [(ticket_id, subject)] = tickets_for(rt, uid)
    assert ticket_id == record["ticketId"]
    assert subject == f"[fluxsupport:{uid}] Level 3 (Medium): Case ticket"
    text = rt.ticket_text(ticket_id)
    for expected in ("Deploys are blocked", "Environment: production", "Outage: degraded",
                     "Component: helm-controller", "Bob <bob@customer.test>", "Kubernetes",
                     f"cluster=test-cluster namespace={namespace} name=ticket uid={uid}"):
        assert expected in text, text
    requestors = rt.ticket(ticket_id)["Requestor"]
    assert [r["id"] for r in requestors] == ["bob@customer.test"]
    case = api.get_case(namespace, "ticket")
    submitted = harness.condition(case, "Submitted")
    assert submitted
    assert submitted["status"] == "True"
    assert submitted["reason"] == "Submitted"
    events = [e.reason for e in api.events_for(namespace, "ticket")]
    assert events.count("Submitted") == 1


def test_a_support_reply_sets_met_and_the_autoreply_does_not(
        channels_operator: ChannelsOperator, api: harness.Api, rt: RequestTracker,
        namespace: str, figures: Any) -> None:
    create(api, namespace, "reply", "Low", contact={"email": "bob@customer.test"})
    ticket = harness.wait_for(lambda: submission(api, namespace, "reply").get("ticketId"),
                              timeout=60, what="a ticket")
    # RT's autoreply to the requestor is in the history (as RT_System's EmailRecord) ...
    harness.wait_for(lambda: any(t["Type"] == "EmailRecord" and t["Creator"]["Name"] ==
                                 "RT_System" for t in rt.history(ticket)),
                     timeout=90, what="RT's autoreply")
    # ... and two syncs that started after it was, it still is no response.
    seen = time.time()
    assert channels_operator.process is not None
    # Bounded by RT, which serves one request at a time: generous on a loaded machine.
    harness.wait_for(lambda: last_sync(channels_operator.process) > seen + 1, timeout=120,
                     interval=0.5, what="two syncs after the autoreply")
    first = api.get_case(namespace, "reply")["status"]["firstResponse"]
    assert "respondedAt" not in first, first
    assert first["state"] == "Pending"

    replied = time.monotonic()
    rt.reply_as_support(ticket, "We are looking into it.")
    first = harness.wait_for(
        lambda: api.get_case(namespace, "reply")["status"]["firstResponse"].get("respondedAt")
        and api.get_case(namespace, "reply")["status"]["firstResponse"], timeout=120,
        what="the reply recorded")
    figures(f"support reply in RT -> Met in status: {time.monotonic() - replied:.2f} s")
    assert (first["state"], first["respondedBy"], first["source"]) == ("Met", "alice", "portal")


def test_a_resolved_ticket_resolves_the_case_and_updates_reach_the_ticket(
        channels_operator: ChannelsOperator, api: harness.Api, rt: RequestTracker,
        namespace: str, kubeconfig: pathlib.Path) -> None:
    create(api, namespace, "updates", "Low")
    ticket = harness.wait_for(lambda: submission(api, namespace, "updates").get("ticketId"),
                              timeout=60, what="a ticket")
    cli = fluxsupport(kubeconfig, "case", "comment", "updates", "-n", namespace,
                      "Rolled back to v2.6.0; still stuck.")
    assert cli.returncode == 0, cli.stderr
    api.patch_case(namespace, "updates", {"spec": {"severity": "Medium", "impact": {
        "outage": "degraded"}}})
    harness.wait_for(lambda: len(submission(api, namespace, "updates").get("updates") or []) == 2,
                     timeout=90, what="both updates posted")
    comments = [t for t in rt.history(ticket) if t["Type"] == "Comment"]
    assert len(comments) == 2, comments
    text = rt.ticket_text(ticket)
    assert "Rolled back to v2.6.0; still stuck." in text
    assert "Level 3 (Medium)" in text
    assert submission(api, namespace, "updates")["level"] == 3

    rt.resolve(ticket)
    closure = harness.wait_for(lambda: api.get_case(namespace, "updates")["status"].get("closure"),
                               timeout=90, what="the case resolved")
    assert (closure["outcome"], closure["source"]) == ("Resolved", "portal")
    time.sleep(2)  # no update is posted twice, whatever the syncs do
    assert len([t for t in rt.history(ticket) if t["Type"] == "Comment"]) == 2


def test_rt_down_level_1_goes_by_email_level_4_waits_and_nothing_is_filed_twice(
        channels_operator: ChannelsOperator, api: harness.Api, rt: RequestTracker,
        gateway: MailGateway, namespace: str, figures: Any) -> None:
    rt.stop()
    try:
        stopped = time.monotonic()
        urgent = create(api, namespace, "urgent", "Urgent")["metadata"]["uid"]
        low = create(api, namespace, "low", "Low")["metadata"]["uid"]
        record = harness.wait_for(lambda: submission(api, namespace, "urgent").get(
            "submittedAt") and submission(api, namespace, "urgent"), timeout=60,
            what="the Level 1 case sent by email")
        figures(f"RT stopped -> Level 1 case sent by email: {time.monotonic() - stopped:.2f} s "
                "(fallback after 2 failed portal attempts, 5 s apart)")
        assert record["channel"] == "email"
        assert record["attempts"] >= 2
        assert record["messageId"] == f"<case-{urgent}@fluxsupport>"
        mail = gateway.wait_for(lambda m: m["Message-ID"] == record["messageId"])
        assert mail["To"] == rt.correspond_address
        assert mail["From"] == CUSTOMER
        assert f"[fluxsupport:{urgent}]" in mail["Subject"]
        submitted = harness.condition(api.get_case(namespace, "urgent"), "Submitted")
        assert submitted
        assert submitted["reason"] == "SubmittedByEmail"

        waiting = harness.wait_for(lambda: (submission(api, namespace, "low").get("attempts")
                                            or 0) >= 2 and submission(api, namespace, "low"),
                                   timeout=60, what="the Level 4 case retrying")
        assert "messageId" not in waiting
        assert "ticketId" not in waiting
        retrying = harness.condition(api.get_case(namespace, "low"), "Submitted")
        assert retrying, "no Submitted condition"
        assert retrying["reason"] == "Retrying", retrying
        assert not [m for m in gateway.messages if f"fluxsupport:{low}".encode() in m[2]]
    finally:
        rt.start_again()
    assert gateway.redeliver() == 0, gateway.mailgate_runs[-1:]
    back = time.monotonic()
    linked = harness.wait_for(lambda: submission(api, namespace, "urgent").get("ticketId"),
                              timeout=60, what="the emailed case linked to RT's ticket")
    harness.wait_for(lambda: submission(api, namespace, "low").get("ticketId"), timeout=90,
                     what="the Level 4 case submitted once RT is back")
    figures(f"RT back -> both cases linked/submitted: {time.monotonic() - back:.2f} s")
    assert [ticket for ticket, _ in tickets_for(rt, urgent)] == [linked]
    assert len(tickets_for(rt, low)) == 1
    assert submission(api, namespace, "urgent")["channel"] == "email"


def test_sigkill_between_ticket_creation_and_status_write_files_no_second_ticket(
        channels_operator: ChannelsOperator, api: harness.Api, rt: RequestTracker,
        namespace: str) -> None:
    channels_operator.stop()
    process = channels_operator.start(FLUXSUPPORT_FAILPOINT="after-ticket-create")
    uid = create(api, namespace, "crash", "High")["metadata"]["uid"]
    harness.wait_for(lambda: not process.alive(), timeout=60,
                     what="the operator killed right after creating the ticket")
    assert process.process is not None
    assert process.process.returncode == -9
    assert len(tickets_for(rt, uid)) == 1
    assert "ticketId" not in submission(api, namespace, "crash")
    channels_operator.start()
    ticket = harness.wait_for(lambda: submission(api, namespace, "crash").get("ticketId"),
                              timeout=60, what="the ticket linked after the restart")
    assert [found for found, _ in tickets_for(rt, uid)] == [ticket]


#: A pasted controller log, three times longer than RT's history shows of a text.
LONG_COMMENT = "".join(f"{n:05d} kustomize-controller: apps/prod: apply failed: timeout "
                       f"waiting for Deployment/web to become ready\n" for n in range(150))


def comments_in(rt: RequestTracker, ticket: str) -> list[dict[str, Any]]:
    return [t for t in rt.history(ticket) if t["Type"] == "Comment"]


@pytest.mark.parametrize("step", ["before-update-post", "after-update-post"])
def test_a_long_comment_reaches_the_ticket_once_across_a_sigkill(
        channels_operator: ChannelsOperator, api: harness.Api, rt: RequestTracker,
        namespace: str, kubeconfig: pathlib.Path, step: str) -> None:
    """SIGKILL right before or right after RT took the comment, before status records it:
    after the restart the ticket has it exactly once (its marker opens the text, where RT's
    history, read up to 4,000 characters, still shows it)."""
    assert len(LONG_COMMENT) > 10_000
    channels_operator.stop()
    process = channels_operator.start(FLUXSUPPORT_FAILPOINT=step)
    try:
        create(api, namespace, "long-comment", "Low")
        ticket = harness.wait_for(
            lambda: submission(api, namespace, "long-comment").get("ticketId"), timeout=60,
            what="a ticket")
        cli = fluxsupport(kubeconfig, "case", "comment", "long-comment", "-n", namespace,
                          LONG_COMMENT)
        assert cli.returncode == 0, cli.stderr
        harness.wait_for(lambda: not process.alive(), timeout=60,
                         what=f"the operator killed at {step}")
        assert process.process is not None
        assert process.process.returncode == -9
        assert len(comments_in(rt, ticket)) == (1 if step == "after-update-post" else 0)
        assert not submission(api, namespace, "long-comment").get("updates")
    finally:
        channels_operator.stop()
        channels_operator.start()
    harness.wait_for(lambda: submission(api, namespace, "long-comment").get("updates"),
                     timeout=60, what="the comment recorded after the restart")
    assert len(comments_in(rt, ticket)) == 1
    text = rt.ticket_text(ticket)
    assert "[fluxsupport-update:comment-" in text
    assert LONG_COMMENT.splitlines()[-1] in text
    updated = harness.condition(api.get_case(namespace, "long-comment"), "TicketUpdated")
    assert updated is not None
    assert (updated["status"], updated["reason"]) == ("True", "UpToDate")


def test_an_update_rt_refuses_backs_off_shows_why_and_goes_once_allowed(
        channels_operator: ChannelsOperator, api: harness.Api, rt: RequestTracker,
        namespace: str, kubeconfig: pathlib.Path, figures: Any) -> None:
    """The support team moves the ticket to a queue the operator's user may not see: RT 5
    shows it an empty history and refuses the comment (400, Permission Denied). The case says
    so in TicketUpdated, the operator asks again after a growing backoff, not in a loop, and
    posts the comment once the ticket is back."""
    create(api, namespace, "moved", "Low")
    ticket = harness.wait_for(lambda: submission(api, namespace, "moved").get("ticketId"),
                              timeout=60, what="a ticket")
    # The ticket has its Priority and Due before it moves: the refusal is the comment's.
    harness.wait_for(lambda: submission(api, namespace, "moved").get("sla"), timeout=60,
                     what="Priority and Due set")
    elsewhere = f"Elsewhere-{namespace}"
    rt.rest("POST", "queue", {"Name": elsewhere})
    rt.rest("PUT", f"ticket/{ticket}", {"Queue": elsewhere})
    cli = fluxsupport(kubeconfig, "case", "comment", "moved", "-n", namespace,
                      "Rolled back; still stuck.")
    assert cli.returncode == 0, cli.stderr

    def refused() -> dict[str, Any] | None:
        found = harness.condition(api.get_case(namespace, "moved"), "TicketUpdated")
        return found if found and found["status"] == "False" else None

    condition = harness.wait_for(refused, timeout=60, what="TicketUpdated False")
    assert condition["reason"] == "Failed", condition
    assert "400: Permission Denied" in condition["message"], condition
    before = int(submission(api, namespace, "moved")["updateFailures"])
    window_s = 8.0
    time.sleep(window_s)  # an upper bound is measured: a busy machine only lowers it
    after = int(submission(api, namespace, "moved")["updateFailures"])
    figures(f"RT refusing an update (400): {after - before} more attempt(s) in "
            f"{window_s:.0f} s after the first")
    assert after - before <= 2, (before, after)  # 5 s, then 10 s apart

    rt.rest("PUT", f"ticket/{ticket}", {"Queue": rt.queue})
    back = time.monotonic()
    record = harness.wait_for(lambda: submission(api, namespace, "moved").get("updates")
                              and submission(api, namespace, "moved"), timeout=120,
                              what="the comment posted once the ticket is back")
    figures(f"ticket back in the queue -> comment posted: {time.monotonic() - back:.1f} s")
    assert "updateFailures" not in record
    assert len(comments_in(rt, ticket)) == 1
    updated = harness.condition(api.get_case(namespace, "moved"), "TicketUpdated")
    assert updated is not None
    assert updated["reason"] == "UpToDate"


def test_channels_secret_is_readable_by_name_only(
        channels_operator: ChannelsOperator, operator_credentials: harness.OperatorCredentials,
        kubeconfig: pathlib.Path) -> None:
    if operator_credentials.service_account is None:
        pytest.fail("this test checks the chart's RBAC: run it as the ServiceAccount")
    namespace, name = operator_credentials.service_account
    who = f"system:serviceaccount:{namespace}:{name}"
    def can(*args: str) -> bool:
        result = harness.kubectl(kubeconfig, "auth", "can-i", *args, "-n", namespace,
                                 "--as", who, check=False)
        return result.stdout.strip() == "yes"
    assert can("get", f"secret/{SECRET}")
    assert not can("get", "secret/another")
    assert not can("list", "secrets")


def test_the_cli_shows_the_ticket(channels_operator: ChannelsOperator, rt: RequestTracker,
                                  namespace: str, kubeconfig: pathlib.Path) -> None:
    created = fluxsupport(kubeconfig, "case", "create", "from-cli", "-n", namespace,
                          "--title", "Kustomization stuck", "--statement", "Deploys wait",
                          "--component", "kustomize-controller", "--wait", "60")
    assert created.returncode == 0, created.stderr
    [(ticket, _)] = rt.tickets("Subject LIKE 'Kustomization stuck'") or [("", "")]
    assert f"ticket {ticket}: {rt.url}Ticket/Display.html?id={ticket}" in created.stdout
    listed = fluxsupport(kubeconfig, "case", "list", "-n", namespace, "-o", "json")
    [row] = json.loads(listed.stdout)
    assert (row["ticket"], row["channel"]) == (ticket, "portal")
    assert row["ticketState"] in ("new", "open")
    report = fluxsupport(kubeconfig, "report", "-o", "json")
    [mine] = [case for case in json.loads(report.stdout)["cases"]
              if case["namespace"] == namespace]
    assert mine["ticketUrl"] == f"{rt.url}Ticket/Display.html?id={ticket}"
