"""`fluxsupport case show` against the real API server and the real Request Tracker 5: the
case from the cluster, the policy from its ConfigMap, the token from the channels Secret (or
the environment), the thread from RT, and nothing written to RT."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pathlib
import subprocess
import sys
import uuid
from typing import Any

from fluxsupport.channels.portal import NewTicket
from fluxsupport.channels.rt import RequestTracker as Portal
from fluxsupport.domain import submission
from tests import harness
from tests.rt import RequestTracker

CUSTOMER = "oncall@customer.test"


def fluxsupport(kubeconfig: pathlib.Path, *args: str, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLUXSUPPORT_")}
    return subprocess.run([sys.executable, "-m", "fluxsupport", *args, "--kubeconfig",
                           str(kubeconfig)], capture_output=True, text=True, timeout=300,
                          check=False, env={**clean, **(env or {})})


def filed_case(api: harness.Api, namespace: str, name: str, ticket_id: str | None) -> None:
    """A case as the operator leaves it once its ticket exists (no operator runs here)."""
    api.create_case(namespace, harness.case_manifest(name, namespace))
    if ticket_id is not None:
        api.custom.patch_namespaced_custom_object_status(
            harness.GROUP, harness.VERSION, namespace, "supportcases", name,
            {"status": {"submission": {"channel": "portal", "ticketId": ticket_id}}})


def operator_namespace(api: harness.Api, rt: RequestTracker, token: str) -> str:
    """A namespace with the operator's policy ConfigMap and channels Secret, as the chart and
    the administrator make them."""
    name = f"ops-{uuid.uuid4().hex[:8]}"
    api.create_namespace(name)
    policy = (f"channels:\n  portal:\n    enabled: true\n    url: {rt.url}\n"
              f"    queue: {rt.queue}\n    timeout: 60s\n")
    api.core.create_namespaced_config_map(name, {
        "metadata": {"name": "fluxsupport-policy"}, "data": {"policy.yaml": policy}})
    api.core.create_namespaced_secret(name, {
        "metadata": {"name": "fluxsupport-channels"},
        "data": {"portal-token": base64.b64encode(token.encode()).decode()}})
    return name


def test_case_show_prints_the_thread_and_writes_nothing(
        api: harness.Api, namespace: str, rt: RequestTracker, tmp_path: pathlib.Path) -> None:
    uid = uuid.uuid4()

    async def file_ticket() -> str:
        portal = Portal(rt.url, rt.queue, rt.operator_token, timeout=60)
        try:
            ticket = await portal.create(NewTicket(
                f"{submission.tag(str(uid))} Level 2 (High): HelmReleases stuck",
                "HelmReleases in apps/prod stay in progress.\n", CUSTOMER))
            return ticket.id
        finally:
            await portal.close()

    ticket_id = asyncio.run(file_ticket())
    rt.rest("POST", f"ticket/{ticket_id}/comment", {
        "Content": "Internal: the known leader-election bug.", "ContentType": "text/plain"},
        token=rt.support_token)
    rt.rest("POST", f"ticket/{ticket_id}/correspond", {
        "Content": "Please send the output of flux check.\nAnd the controller logs.",
        "ContentType": "text/plain", "Status": "stalled", "Attachments": [
            {"FileName": "how-to-collect.txt", "FileType": "text/plain",
             "FileContent": base64.b64encode(b"kubectl logs ...").decode()}]},
        token=rt.support_token)
    filed_case(api, namespace, "stuck", ticket_id)
    filed_case(api, namespace, "unsent", None)
    ops = operator_namespace(api, rt, rt.operator_token)
    before = (rt.history(ticket_id), rt.ticket(ticket_id)["LastUpdated"])

    shown = fluxsupport(api.kubeconfig, "case", "show", "stuck", "-n", namespace,
                        "--operator-namespace", ops)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == (f"supportcase {namespace}/stuck: ticket {ticket_id} (stalled) "
                        f"{rt.url}Ticket/Display.html?id={ticket_id}")
    assert lines[1] == "priority 0, due -"
    assert lines[2].startswith("waits on customer (stalled since ")
    assert "; 1 support reply, the last at " in lines[2]
    assert lines[2].endswith(" by alice")
    assert "    files: how-to-collect.txt" in lines
    assert "    Please send the output of flux check." in lines
    assert "    And the controller logs." in lines
    assert "Internal" not in shown.stdout
    assert "kubectl logs" not in shown.stdout  # a file's content is never read

    policy = tmp_path / "policy.yaml"
    policy.write_text(f"channels:\n  portal: {{enabled: true, url: '{rt.url}', "
                      f"queue: {rt.queue}}}\n")
    # A person's own token (victor may only read the queue): the operator's transactions
    # are still the operator's.
    as_json = fluxsupport(api.kubeconfig, "case", "show", "stuck", "-n", namespace, "-o",
                          "json", "--policy", str(policy), "--operator-namespace", "nowhere",
                          env={"FLUXSUPPORT_PORTAL_TOKEN": rt.viewer_token})
    assert as_json.returncode == 0, as_json.stderr
    data: dict[str, Any] = json.loads(as_json.stdout)
    assert (data["ticket"]["id"], data["ticket"]["status"], data["waitsOn"], data["replies"]) \
        == (ticket_id, "stalled", "customer", 1)
    assert [(m["kind"], m["side"], m["author"], m["attachments"]) for m in data["thread"]] == [
        ("opened", "customer", rt.operator, []),
        ("reply", "support", rt.support, ["how-to-collect.txt"])]

    assert (rt.history(ticket_id), rt.ticket(ticket_id)["LastUpdated"]) == before

    unsent = fluxsupport(api.kubeconfig, "case", "show", "unsent", "-n", namespace,
                         "--operator-namespace", ops)
    assert unsent.returncode == 1
    assert "has no ticket in the portal yet" in unsent.stderr
    no_secret = fluxsupport(api.kubeconfig, "case", "show", "stuck", "-n", namespace,
                            "--policy", str(policy), "--operator-namespace", namespace)
    assert no_secret.returncode == 1
    assert "cannot read Secret" in no_secret.stderr
    assert "FLUXSUPPORT_PORTAL_TOKEN" in no_secret.stderr
