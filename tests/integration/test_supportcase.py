"""SupportCase on the real API server: deadlines, lifecycle, breach timing, conditions, metrics.

The session operator runs a 24x7 policy with Urgent = 4 s, High = 1 h (conftest.TEST_POLICY).
"""

from __future__ import annotations

import datetime
import time
import uuid
from typing import Any

import kubernetes
import pytest

from fluxsupport import constants
from tests import harness


def case_body(name: str, namespace: str, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "title": "HelmReleases stuck after upgrade",
        "description": "helm-controller times out on every release.",
        "severity": "High",
        "impact": {"statement": "Deploys to prod blocked for 3 teams",
                   "environment": "production", "outage": "partial", "businessCritical": True},
        "component": "helm-controller", "category": "incident",
        "contact": {"name": "Platform", "email": "platform@example.com"},
    }
    spec.update(changes)
    return {"apiVersion": constants.API_VERSION, "kind": "SupportCase",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def urgent(name: str, namespace: str) -> dict[str, Any]:
    return case_body(name, namespace, severity="Urgent", impact={
        "statement": "Flux is down in production", "environment": "production",
        "outage": "full", "businessCritical": True})


def parse(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def wait_state(api: harness.Api, namespace: str, name: str, state: str,
               timeout: float = 20) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = api.get_case(namespace, name)
        first = (obj.get("status") or {}).get("firstResponse") or {}
        return obj if first.get("state") == state else None
    return harness.wait_for(probe, timeout=timeout, interval=0.02,
                            what=f"{namespace}/{name} state {state}")


def test_created_case_gets_its_deadline(api: harness.Api, operator: harness.OperatorProcess,
                                        namespace: str) -> None:
    api.create_case(namespace, case_body("deadline", namespace))
    obj = wait_state(api, namespace, "deadline", "Pending")
    created = parse(obj["metadata"]["creationTimestamp"])
    first = obj["status"]["firstResponse"]
    assert parse(first["startedAt"]) == created
    assert parse(first["deadline"]) == created + datetime.timedelta(hours=1)
    assert parse(first["warningAt"]) == created + datetime.timedelta(minutes=30)
    assert obj["status"]["level"] == 2
    printed = harness.kubectl(api.kubeconfig, "get", "supportcases", "-n", namespace).stdout
    assert "LEVEL" in printed
    assert "DUE" in printed
    assert first["deadline"] in printed
    series = (f'supportcase_first_response_deadline_timestamp_seconds{{level="2",'
              f'namespace="{namespace}",supportcase="deadline"}} ')
    line = next(line for line in operator.metrics().splitlines() if line.startswith(series))
    assert float(line.removeprefix(series)) == parse(first["deadline"]).timestamp()


def test_respond_makes_it_met(api: harness.Api, operator: harness.OperatorProcess,
                              namespace: str) -> None:
    api.create_case(namespace, case_body("respond", namespace))
    wait_state(api, namespace, "respond", "Pending")
    responded = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    api.patch_case(namespace, "respond", {"metadata": {"annotations": {
        constants.RESPONDED_AT: responded, constants.RESPONDED_BY: "alice"}}})
    obj = wait_state(api, namespace, "respond", "Met")
    assert obj["status"]["firstResponse"]["respondedAt"] == responded
    assert harness.condition(obj, "FirstResponded")["status"] == "True"
    harness.wait_for(lambda: "FirstResponded" in [
        e.reason for e in api.events_for(namespace, "respond")], what="FirstResponded Event")
    metrics = operator.metrics()
    assert 'supportcase="respond"' not in metrics  # no deadline series once responded
    assert 'supportcase_first_responses_total{level="2",outcome="met"}' in metrics


def breach_lag(api: harness.Api, namespace: str, name: str) -> float:
    """Seconds from the stored deadline to when the API first shows Breached."""
    def probe() -> tuple[float, dict[str, Any]] | None:
        obj = api.get_case(namespace, name)
        condition = harness.condition(obj, "FirstResponseBreached")
        if condition and condition["status"] == "True":
            return time.time(), obj
        return None
    seen, obj = harness.wait_for(probe, timeout=30, interval=0.02, what="Breached")
    return seen - parse(obj["status"]["firstResponse"]["deadline"]).timestamp()


def test_breach_is_marked_within_a_second_of_the_deadline(
        api: harness.Api, operator: harness.OperatorProcess, namespace: str) -> None:
    api.create_case(namespace, urgent("breach", namespace))
    wait_state(api, namespace, "breach", "AtRisk")
    lag = breach_lag(api, namespace, "breach")
    print(f"breach lag: {lag * 1000:.0f} ms")
    assert 0 <= lag < 1.0
    obj = api.get_case(namespace, "breach")
    assert obj["status"]["firstResponse"]["state"] == "Breached"
    harness.wait_for(lambda: "FirstResponseBreached" in [
        e.reason for e in api.events_for(namespace, "breach")], what="breach Event")
    assert 'supportcase_open_cases{level="1",state="breached"}' in operator.metrics()


def test_breach_is_on_time_across_an_operator_restart(
        api: harness.Api, operator: harness.OperatorProcess, namespace: str) -> None:
    api.create_case(namespace, urgent("restart", namespace))
    obj = wait_state(api, namespace, "restart", "Pending")
    deadline = parse(obj["status"]["firstResponse"]["deadline"])
    operator.stop()
    try:
        time.sleep(max(0.0, deadline.timestamp() - time.time() - 2.5))
    finally:
        operator.start()
    lag = breach_lag(api, namespace, "restart")
    print(f"breach lag across restart: {lag * 1000:.0f} ms")
    assert 0 <= lag < 1.0
    assert api.get_case(namespace, "restart")["status"]["firstResponse"]["deadline"] == \
        obj["status"]["firstResponse"]["deadline"]


def test_breach_while_the_operator_is_down_is_marked_on_resume(
        api: harness.Api, operator: harness.OperatorProcess, namespace: str) -> None:
    api.create_case(namespace, urgent("while-down", namespace))
    obj = wait_state(api, namespace, "while-down", "Pending")
    deadline = parse(obj["status"]["firstResponse"]["deadline"]).timestamp()
    operator.stop()
    try:
        time.sleep(max(0.0, deadline - time.time() + 1))
    finally:
        operator.start()
    restarted = time.time()
    obj = wait_state(api, namespace, "while-down", "Breached", timeout=10)
    print(f"marked {time.time() - restarted:.2f} s after the operator was ready again")
    assert harness.condition(obj, "FirstResponseBreached")["status"] == "True"


@pytest.mark.parametrize(("changes", "reason"), [
    ({"component": "other"}, "ThirdParty"),
    ({"requiresInfrastructureAccess": True}, "RequiresInfrastructureAccess"),
])
def test_scope_conditions(api: harness.Api, operator: harness.OperatorProcess, namespace: str,
                          changes: dict[str, Any], reason: str) -> None:
    api.create_case(namespace, case_body("scope", namespace, **changes))
    obj = wait_state(api, namespace, "scope", "Pending")
    condition = harness.condition(obj, "InScope")
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", reason)
    assert "support policy" in condition["message"]
    harness.wait_for(lambda: reason in [e.reason for e in api.events_for(namespace, "scope")],
                     what=f"{reason} Event")


def test_severity_above_impact(api: harness.Api, operator: harness.OperatorProcess,
                               namespace: str) -> None:
    api.create_case(namespace, case_body("inflated", namespace, severity="Urgent", impact={
        "statement": "The staging dashboard is slow", "environment": "staging",
        "outage": "degraded", "businessCritical": False}))
    obj = harness.wait_for(lambda: (o := api.get_case(namespace, "inflated")).get("status")
                           and o, what="status")
    condition = harness.condition(obj, "SeverityConsistent")
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", "ImpactBelowSeverity")
    assert obj["status"]["level"] == 1
    assert obj["status"]["assessedLevel"] == 4


def test_severity_change_recomputes_and_reports(api: harness.Api,
                                                operator: harness.OperatorProcess,
                                                namespace: str) -> None:
    api.create_case(namespace, case_body("regrade", namespace, severity="Low", impact={
        "statement": "question", "environment": "development", "outage": "none"}))
    before = wait_state(api, namespace, "regrade", "Pending")
    api.patch_case(namespace, "regrade", {"spec": {"severity": "High"}})

    def recomputed() -> dict[str, Any] | None:
        obj = api.get_case(namespace, "regrade")
        return obj if obj["status"].get("level") == 2 else None

    after = harness.wait_for(recomputed, what="level 2")
    assert after["status"]["firstResponse"]["startedAt"] == \
        before["status"]["firstResponse"]["startedAt"]
    assert parse(after["status"]["firstResponse"]["deadline"]) == \
        parse(before["status"]["firstResponse"]["startedAt"]) + datetime.timedelta(hours=1)
    assert "Severity changed from Level 4 (Low) to Level 2 (High)" in \
        harness.condition(after, "Ready")["message"]
    harness.wait_for(lambda: "SeverityChanged" in [
        e.reason for e in api.events_for(namespace, "regrade")], what="SeverityChanged Event")


def test_invalid_case_is_rejected_with_a_message(api: harness.Api, namespace: str) -> None:
    body = case_body("invalid", namespace)
    body["spec"]["impact"]["statement"] = "   "
    body["spec"]["contact"] = {}
    with pytest.raises(kubernetes.client.ApiException) as raised:
        api.create_case(namespace, body)
    assert raised.value.status == 422
    assert "spec.impact.statement" in raised.value.body
    assert "contact needs a name or an email" in raised.value.body


def test_bad_annotation_is_reported_and_other_cases_keep_working(
        api: harness.Api, operator: harness.OperatorProcess, namespace: str) -> None:
    api.create_case(namespace, case_body("bad-annotation", namespace))
    wait_state(api, namespace, "bad-annotation", "Pending")
    api.patch_case(namespace, "bad-annotation", {"metadata": {"annotations": {
        constants.RESPONDED_AT: "last tuesday"}}})

    def not_ready() -> dict[str, Any] | None:
        condition = harness.condition(api.get_case(namespace, "bad-annotation"), "Ready")
        return condition if condition and condition["status"] == "False" else None

    condition = harness.wait_for(not_ready, what="Ready=False")
    assert condition["reason"] == "InvalidAnnotation"
    assert "last tuesday" in condition["message"]
    other = f"after-{uuid.uuid4().hex[:6]}"
    api.create_case(namespace, case_body(other, namespace))
    wait_state(api, namespace, other, "Pending")
