"""Takeover on the node: a deleted operator Pod stops within its grace period and its
replacement reconciles what came meanwhile; with two replicas (kopf peering), deleting the
leader hands over to the standby without a doubled Event, RT ticket or email."""

from __future__ import annotations

import base64
import collections
import email
import email.policy
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fluxsupport.devcluster import fluxpods
from tests import harness
from tests.cluster.conftest import (
    OPERATOR_NAMESPACE,
    Cluster,
    OperatorImage,
    Release,
    condition_time,
    record,
    wait_for,
)
from tests.rt import MailGateway, RequestTracker

SECRET = "fluxsupport-channels"


@pytest.fixture(scope="module")
def release(cluster: Cluster, operator_image: OperatorImage,
            flux_pods: dict[str, fluxpods.Running]) -> Iterator[Release]:
    cluster.ensure_namespace(OPERATOR_NAMESPACE)
    installed = Release(cluster, "fluxsupport")
    installed.install(operator_image)
    try:
        yield installed
    finally:
        installed.uninstall()


def reconciled(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    done = cluster.kubectl("get", "supportcase", name, "-n", namespace, "-o", "json",
                           check=False)
    if done.returncode != 0:
        return None
    case: dict[str, Any] = json.loads(done.stdout)
    return case if not harness.case_problems(case, time.time()) else None


class PodWatch:
    """`kubectl get pod -w` in the background: every state the Pod passes through."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.states: list[dict[str, Any]] = []
        self._process = subprocess.Popen(
            [*cluster.kubectl_command(), "get", "pod", name, "-n", OPERATOR_NAMESPACE, "-w",
             "--output-watch-events", "-o", "json"], stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        decoder, buffer = json.JSONDecoder(), ""
        for line in self._process.stdout:
            buffer += line
            try:
                event, end = decoder.raw_decode(buffer.strip())
            except ValueError:
                continue
            buffer = buffer.strip()[end:]
            self.states.append(event)

    def stop(self) -> None:
        self._process.kill()
        self._process.wait(timeout=10)

    def terminated(self) -> dict[str, Any] | None:
        for event in reversed(self.states):
            for status in event["object"].get("status", {}).get("containerStatuses") or []:
                if "terminated" in status.get("state", {}):
                    return dict(status["state"]["terminated"])
        return None


def test_sigterm_stops_the_pod_within_its_grace_period_and_the_replacement_takes_over(
        cluster: Cluster, release: Release, figure: Any) -> None:
    old = release.ready_pods()[0]
    name = old["metadata"]["name"]
    grace = old["spec"]["terminationGracePeriodSeconds"]
    namespace = f"takeover-{uuid.uuid4().hex[:6]}"
    cluster.ensure_namespace(namespace)
    cluster.apply(harness.case_manifest("before", namespace, "High"))
    wait_for(lambda: reconciled(cluster, namespace, "before"), timeout=60, what="first case")
    watch = PodWatch(cluster, name)
    try:
        started = time.monotonic()
        cluster.kubectl("delete", "pod", name, "-n", OPERATOR_NAMESPACE, "--wait=false")
        wait_for(lambda: name not in [p["metadata"]["name"] for p in release.cluster.pods(
            OPERATOR_NAMESPACE, release.selector)], timeout=grace + 30, what="the old Pod gone")
        gone = time.monotonic() - started
        # Created while no operator runs: only the replacement can reconcile it.
        cluster.apply(harness.case_manifest("meanwhile", namespace, "High"))
        wait_for(lambda: reconciled(cluster, namespace, "meanwhile"), timeout=120,
                 what="the case created while no operator ran")
        takeover = time.monotonic() - started
        replacement = wait_for(release.ready_pods, timeout=120,
                               what="the replacement Ready")[0]
        ready = time.monotonic() - started
    finally:
        watch.stop()
    terminated = watch.terminated()
    assert terminated is not None, watch.states[-1:]
    # SIGTERM, not the SIGKILL at the end of the grace period (exit code 137).
    assert terminated["exitCode"] == 0, terminated
    assert gone < grace, f"the Pod took {gone:.1f} s of its {grace} s grace period"
    assert replacement["metadata"]["name"] != name
    assert reconciled(cluster, namespace, "before"), "the first case lost its status"
    assert condition_time(replacement, "Ready") is not None
    figure(f"delete of the operator Pod: old Pod gone {gone:.1f} s (exit 0, grace {grace} s), "
           f"case created meanwhile reconciled {takeover:.1f} s, replacement Ready {ready:.1f} s "
           "after the delete")


def _healthz(cluster: Cluster, pod: str) -> dict[str, Any]:
    done = cluster.kubectl("get", "--raw", f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods/"
                           f"{pod}:8080/proxy/healthz", check=False, timeout=20)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def _roles(cluster: Cluster, release: Release) -> dict[str, str]:
    return {p["metadata"]["name"]: _healthz(cluster, p["metadata"]["name"]).get("peering", "")
            for p in release.ready_pods()}


def _one_leader(cluster: Cluster, release: Release) -> tuple[str, str] | None:
    roles = _roles(cluster, release)
    leaders = [pod for pod, role in roles.items() if role == "active"]
    standbys = [pod for pod, role in roles.items() if role == "standby"]
    return (leaders[0], standbys[0]) if len(leaders) == 1 and len(standbys) == 1 else None


def _events(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.json("get", "events", "-n", namespace)["items"]
    return [e for e in items if e["involvedObject"].get("kind") == "SupportCase"]


def _doubled_events(cluster: Cluster, namespace: str) -> list[str]:
    seen = collections.Counter((e["involvedObject"]["name"], e["reason"], e["message"])
                               for e in _events(cluster, namespace))
    doubled = [f"{key} x{count}" for key, count in seen.items() if count > 1]
    doubled += [f"{e['involvedObject']['name']} {e['reason']} count {e['count']}"
                for e in _events(cluster, namespace) if (e.get("count") or 1) > 1]
    return doubled


def _channels(cluster: Cluster, rt: RequestTracker, gateway: MailGateway, *,
              portal: bool) -> list[str]:
    local = cluster.local_node()
    # The token goes over TLS to a non-loopback address, as the policy requires: the forwarder
    # terminates TLS in front of the host's RT.
    portal_forward = local.forward(rt.port, tls=True)
    smtp = local.forward(gateway.port)
    channels = {
        "cluster": "node-tests", "secretName": SECRET,
        # RT answers one request at a time, slowly on a loaded machine.
        "portal": {"enabled": portal, "url": f"https://{portal_forward.address}/",
                   "caBundle": portal_forward.ca_pem, "queue": rt.queue,
                   "syncInterval": "2s", "timeout": "30s"},
        # The SMTP server answers once RT's mail gateway has taken the message.
        "email": {"enabled": True, "host": local.slot.node_ip, "port": smtp.port, "tls": "none",
                  "from": "flux-ops@customer.test", "to": rt.correspond_address,
                  "timeout": "60s"},
        "fallback": {"levels": [1, 2], "attempts": 2, "after": "1m"}}
    return ["--set-json", f"policy.channels={json.dumps(channels)}"]


def _ticket_counts(rt: RequestTracker, uids: dict[str, str]) -> dict[str, int]:
    return {name: len(rt.tickets(f"Subject LIKE 'fluxsupport:{uid}'"))
            for name, uid in uids.items()}


def _uid(cluster: Cluster, namespace: str, name: str) -> str:
    return str(cluster.json("get", "supportcase", name, "-n", namespace)["metadata"]["uid"])


def _submission(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    case = cluster.json("get", "supportcase", name, "-n", namespace)
    return dict((case.get("status") or {}).get("submission") or {})


def _submitted(cluster: Cluster, namespace: str, name: str, reason: str) -> bool:
    case = cluster.json("get", "supportcase", name, "-n", namespace)
    found = harness.condition(case, "Submitted") or {}
    return (found.get("status"), found.get("reason")) == ("True", reason)


def _attempts(cluster: Cluster, namespace: str, names: list[str]) -> str:
    """Attempts per case and the errors of failed ones, for the figure."""
    seen = [_submission(cluster, namespace, name) for name in names]
    errors = sorted({s["lastError"] for s in seen if s.get("lastError")})
    return (f"attempts {[s.get('attempts') for s in seen]}"
            + (f", errors {errors}" if errors else ""))


def _leader_handover(cluster: Cluster, release: Release, namespace: str, prefix: str,
                     severity: str, reason: str) -> tuple[list[str], float, float]:
    """Cases created, the leader deleted in their midst; returns the cases, the seconds until
    the standby was active and until every case was submitted."""
    # Until the rollout is over, a Pod of the previous ReplicaSet may still act (one without
    # --peering, after an upgrade from a single replica): only the two new replicas may run.
    wait_for(lambda: len(cluster.pods(OPERATOR_NAMESPACE, release.selector)) == 2
             and len(release.ready_pods()) == 2, timeout=180,
             what="the rollout over: two Pods, both Ready")
    leader, standby = wait_for(lambda: _one_leader(cluster, release), timeout=120,
                               what="one active replica and one standby")
    names = [f"{prefix}-{i}" for i in range(6)]
    for name in names[:3]:
        cluster.apply(harness.case_manifest(name, namespace, severity))
    # The first three are through before the leader goes; the last three come while it stops.
    for name in names[:3]:
        wait_for(lambda n=name: _submitted(cluster, namespace, n, reason), timeout=240,
                 what=f"{name} submitted ({reason})")
    started = time.monotonic()
    cluster.kubectl("delete", "pod", leader, "-n", OPERATOR_NAMESPACE, "--wait=false")
    for name in names[3:]:
        cluster.apply(harness.case_manifest(name, namespace, severity))
    wait_for(lambda: _healthz(cluster, standby).get("peering") == "active", timeout=120,
             what="the standby active")
    active = time.monotonic() - started
    for name in names:
        wait_for(lambda n=name: _submitted(cluster, namespace, n, reason), timeout=240,
                 what=f"{name} submitted ({reason})")
    return names, active, time.monotonic() - started


@pytest.mark.localnode
def test_deleting_the_leader_of_two_replicas_doubles_no_event_ticket_or_email(
        cluster: Cluster, release: Release, operator_image: OperatorImage,
        rt: RequestTracker, gateway: MailGateway, figure: Any,
        request: pytest.FixtureRequest) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": SECRET, "namespace": OPERATOR_NAMESPACE},
              "data": {"portal-token": base64.b64encode(rt.operator_token.encode()).decode()}}
    cluster.apply(secret)
    namespace = f"leader-{uuid.uuid4().hex[:6]}"
    cluster.ensure_namespace(namespace)
    two = ["--set", "replicaCount=2", "--set", "peering.enabled=true"]
    release.install(operator_image, *two, *_channels(cluster, rt, gateway, portal=True),
                    command="upgrade")
    names, active, submitted = _leader_handover(cluster, release, namespace, "portal", "Medium",
                                                "Submitted")
    uids = {name: _uid(cluster, namespace, name) for name in names}
    assert _ticket_counts(rt, uids) == dict.fromkeys(names, 1)
    figure(f"two replicas, leader deleted: standby active {active:.1f} s, 6 cases in RT "
           f"{submitted:.1f} s after the delete, one ticket each "
           f"({_attempts(cluster, namespace, names)})")

    # Email only: every open case goes by email, once; the cases already in RT stay there.
    release.install(operator_image, *two, *_channels(cluster, rt, gateway, portal=False),
                    command="upgrade")
    mailed, active, submitted = _leader_handover(cluster, release, namespace, "email",
                                                 "Urgent", "SubmittedByEmail")
    for name in mailed:
        uids[name] = _uid(cluster, namespace, name)
    time.sleep(3)  # a doubled send would arrive within the SMTP timeout
    sent = collections.Counter(
        email.message_from_bytes(data, policy=email.policy.default)["Message-ID"]
        for _, _, data in gateway.messages)
    for name in mailed:
        assert sent[f"<case-{uids[name]}@fluxsupport>"] == 1, (name, sent)
    for name in names:
        assert sent[f"<case-{uids[name]}@fluxsupport>"] == 0, (name, sent)
    assert _ticket_counts(rt, {n: uids[n] for n in names}) == dict.fromkeys(names, 1)
    assert not _doubled_events(cluster, namespace), _doubled_events(cluster, namespace)
    record(request.config, f"{request.node.name}: email only, leader deleted: standby active "
           f"{active:.1f} s, 6 emails {submitted:.1f} s after the delete, one each "
           f"({_attempts(cluster, namespace, mailed)}); Events "
           f"{len(_events(cluster, namespace))}, none doubled")
