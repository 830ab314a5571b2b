"""Two replicas with kopf peering: one acts, the other waits, and takes over when it dies.

The session operator is stopped for this test; two `fluxsupport run --peering` processes run
instead, under the same credentials (the chart's ServiceAccount by default), with a peering
lifetime of LIFETIME_S and a policy where Urgent is due after 4 s and High after 30 s:

1. A (priority 100) acts, B (priority 50) stands by: B writes nothing and posts no Event.
2. A is killed with SIGKILL. B takes over once A's keep-alive expires; the takeover time is
   from the kill to the first status B writes for a case created right after it. Deadlines
   that fell in the gap are marked at their deadline.
3. A is started again (priority 100): B yields. A High case that B had scheduled before is
   marked AtRisk and Breached by A alone: the deadline scheduler of a paused replica is gated
   with kopf's pause (fluxsupport/kube/peering.py), not only kopf's handlers.
4. A is stopped gracefully: it removes its keep-alive, and B takes over at once.

Across all of it no status transition is written twice, no Event is posted twice, and each
Event names the replica that posted it (reportingInstance).
"""

from __future__ import annotations

import collections
import datetime
import pathlib
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest

from fluxsupport.constants import PEERING_NAME, RESPONDED_AT
from tests import fakes, harness

LIFETIME_S = 10
TARGETS_S = {"Urgent": 4.0, "High": 30.0, "Medium": 7200.0, "Low": 10800.0}
POLICY = """\
timezone: UTC
holidays: ""
businessHours: {alwaysOpen: true}
targets: {Urgent: 4s, High: 30s, Medium: 2h, Low: 3h}
warningRatio: 0.5
"""
WRITTEN = re.compile(r"^\[(?P<at>[-0-9 :,]+)\] fluxsupport\.\S+ +\[DEBUG +\] SupportCase "
                     r"(?P<namespace>[^/]+)/(?P<name>\S+): status written \((?P<state>\w+)\)",
                     re.MULTILINE)


@pytest.fixture
def peering_object(api: harness.Api) -> None:
    """The ClusterKopfPeering the replicas share; the chart creates it with peering on."""
    try:
        api.custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", {
            "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
            "metadata": {"name": PEERING_NAME}})
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise


class Replicas:
    def __init__(self, credentials: harness.OperatorCredentials, log_dir: pathlib.Path,
                 policy: pathlib.Path) -> None:
        self.credentials, self.log_dir, self.policy = credentials, log_dir, policy
        self.processes: list[harness.OperatorProcess] = []

    def start(self, name: str, priority: int | None) -> harness.OperatorProcess:
        """A replica; without a priority it gets one from its start time (as in the chart)."""
        chosen = ("--priority", str(priority)) if priority is not None else ()
        process = harness.OperatorProcess(
            self.credentials.kubeconfig, self.log_dir, name=name,
            extra_args=("--policy", str(self.policy), "--peering", *chosen,
                        "--peering-lifetime", str(LIFETIME_S)))
        process.start()
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()


def state(process: harness.OperatorProcess) -> str:
    try:
        return str(process.healthz()["peering"])
    except OSError:
        return "unreachable"


def writes(process: harness.OperatorProcess, namespace: str) -> list[tuple[str, str, str]]:
    """(time, case, state) of every status the replica wrote in ``namespace``."""
    return [(m["at"], m["name"], m["state"]) for m in WRITTEN.finditer(process.log_text())
            if m["namespace"] == namespace]


def all_right(api: harness.Api, namespace: str, count: int) -> list[dict[str, Any]] | None:
    cases: list[dict[str, Any]] = api.custom.list_namespaced_custom_object(
        "support.fluxcd.controlplane.io", "v1alpha1", namespace, "supportcases")["items"]
    now = time.time()
    wrong = [p for case in cases for p in harness.case_problems(case, now, TARGETS_S)]
    return cases if len(cases) == count and not wrong else None


def create(api: harness.Api, namespace: str, severity: str, **annotations: str) -> str:
    name = f"{severity.lower()}-{uuid.uuid4().hex[:6]}"
    api.create_case(namespace, harness.case_manifest(name, namespace, severity, **annotations))
    return name


def test_two_replicas_one_acts_and_the_standby_takes_over(
        api: harness.Api, operator_credentials: harness.OperatorCredentials,
        no_session_operator: None, peering_object: None, namespace: str,
        tmp_path: pathlib.Path, figures: Callable[[str], None]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    replicas = Replicas(operator_credentials, tmp_path, policy)
    try:
        run_scenario(api, replicas, namespace, figures)
    finally:
        replicas.stop_all()


def test_identical_replicas_elect_the_oldest(
        api: harness.Api, operator_credentials: harness.OperatorCredentials,
        no_session_operator: None, peering_object: None, namespace: str,
        tmp_path: pathlib.Path, figures: Callable[[str], None]) -> None:
    """The chart runs identical pods, without --priority: kopf would pause both if they shared
    a priority (operator bug, fixed: the default priority now comes from the start time)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    replicas = Replicas(operator_credentials, tmp_path, policy)
    try:
        older = replicas.start("older", None)
        harness.wait_for(lambda: state(older) == "active", timeout=30, what="older active")
        newer = replicas.start("newer", None)
        harness.wait_for(lambda: state(newer) == "standby", timeout=30, what="newer standby")
        name = create(api, namespace, "High")
        harness.wait_for(lambda: all_right(api, namespace, 1), timeout=30, what="a case")
        # The API server shows the status before the replica has logged its write.
        harness.wait_for(lambda: writes(older, namespace), timeout=10, what="older's write")
        assert [n for _, n, _ in writes(older, namespace)] == [name]
        assert writes(newer, namespace) == []
        older.stop()
        stopped = time.time()
        harness.wait_for(lambda: state(newer) == "active", timeout=30, what="newer active")
        figures(f"peering: identical replicas: the older acts; the newer took over "
                f"{time.time() - stopped:.1f}s after the older stopped")
    finally:
        replicas.stop_all()


def run_scenario(api: harness.Api, replicas: Replicas, namespace: str,
                 figures: Callable[[str], None]) -> None:
    # 1. A acts, B waits.
    a = replicas.start("replica-a", 100)
    harness.wait_for(lambda: state(a) == "active", timeout=30, what="A active")
    b = replicas.start("replica-b", 50)
    harness.wait_for(lambda: state(b) == "standby", timeout=30, what="B standby")
    identity = {a.healthz()["identity"]: "A", b.healthz()["identity"]: "B"}
    names = [create(api, namespace, "Urgent") for _ in range(5)]
    names += [create(api, namespace, "High") for _ in range(3)]
    names.append(create(api, namespace, "Urgent", **{RESPONDED_AT: harness.rfc3339(
        time.time())}))
    harness.wait_for(lambda: all_right(api, namespace, len(names)), timeout=30,
                     what="phase 1 cases")
    assert writes(a, namespace)
    assert writes(b, namespace) == [], "the standby wrote"
    assert state(b) == "standby"

    # 2. SIGKILL the leader: the standby takes over when A's keep-alive expires.
    a.kill()
    killed = time.time()
    after_kill = create(api, namespace, "High")
    gap = [create(api, namespace, "Urgent") for _ in range(3)]  # due inside the gap
    names += [after_kill, *gap]
    harness.wait_for(lambda: (api.get_case(namespace, after_kill).get("status") or {})
                     .get("firstResponse"), timeout=LIFETIME_S + 30, interval=0.05,
                     what="B's first write")
    takeover = time.time() - killed
    assert state(b) == "active"
    harness.wait_for(lambda: all_right(api, namespace, len(names)), timeout=30,
                     what="phase 2 cases")

    # 3. A comes back with the higher priority: B yields, and a deadline B had scheduled is
    #    written by A alone.
    scheduled = create(api, namespace, "High")
    names.append(scheduled)
    harness.wait_for(lambda: (scheduled, "Pending") in {(n, s) for _, n, s in
                                                       writes(b, namespace)},
                     what="B schedules the new case")
    returning = time.time()
    a = replicas.start("replica-a-again", 100)
    identity[a.healthz()["identity"]] = "A"
    harness.wait_for(lambda: state(b) == "standby", timeout=30, what="B yields")
    yielded = time.time()
    b_writes_at_yield = len(writes(b, namespace))
    harness.wait_for(lambda: state(a) == "active", timeout=30, what="A active again")
    harness.wait_for(lambda: all_right(api, namespace, len(names)) and (
        api.get_case(namespace, scheduled)["status"]["firstResponse"]["state"] == "Breached"),
        timeout=TARGETS_S["High"] + 20, what="the scheduled case breached")
    assert len(writes(b, namespace)) == b_writes_at_yield, "B wrote while standing by"
    by_a = {(n, s) for _, n, s in writes(a, namespace)}
    assert {(scheduled, "AtRisk"), (scheduled, "Breached")} <= by_a
    figures(f"peering: B yielded {yielded - returning:.1f}s after A was started again "
            f"(including A's start-up); A wrote "
            f"{sorted(s for n, s in by_a if n == scheduled)} for the case B had scheduled")

    # 4. A graceful stop hands over at once (the leaver removes its keep-alive).
    a.stop()
    stopped = time.time()
    after_stop = create(api, namespace, "High")
    names.append(after_stop)
    harness.wait_for(lambda: (api.get_case(namespace, after_stop).get("status") or {})
                     .get("firstResponse"), timeout=LIFETIME_S + 30, interval=0.05,
                     what="B's write after A's stop")
    handover = time.time() - stopped
    harness.wait_for(lambda: all_right(api, namespace, len(names)), timeout=30,
                     what="all cases")

    writes_count, events_by = check_nothing_doubled(api, replicas, namespace, names, identity)
    figures(f"peering: takeover after SIGKILL of the leader: {takeover:.1f}s (peering lifetime "
            f"{LIFETIME_S}s); after a graceful stop: {handover:.1f}s; {writes_count} status "
            f"writes and Events by replica {events_by}, none doubled")
    assert takeover <= LIFETIME_S + 10
    assert handover <= 10


def check_nothing_doubled(api: harness.Api, replicas: Replicas, namespace: str,
                          names: list[str], identity: dict[str, str]
                          ) -> tuple[int, dict[str, int]]:
    """Never two writes of one transition, never two Events for one; every breach has its
    Event, posted by a known replica. Returns the number of writes and Events by replica."""
    every = [(n, s) for p in replicas.processes for _, n, s in writes(p, namespace)]
    doubled = {k: c for k, c in collections.Counter(every).items() if c > 1}
    assert doubled == {}
    events = api.core.list_namespaced_event(namespace).items
    posted = collections.Counter((e.involved_object.name, e.reason) for e in events)
    assert {k: c for k, c in posted.items() if c > 1} == {}
    instances = collections.Counter(identity.get(e.reporting_instance, "?") for e in events)
    assert set(instances) <= {"A", "B"}, instances
    breached = [n for n in names if api.get_case(namespace, n)["status"]["firstResponse"]
                ["state"] == "Breached"]
    assert {n for n, reason in posted if reason == "FirstResponseBreached"} == set(breached)
    return len(every), dict(instances)


def test_the_gate_applies_kopfs_rule() -> None:
    """fluxsupport.peering in-process: which peers pause a replica, and when it looks again."""
    from fluxsupport.kube import peering

    now = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)

    def peer(priority: int, seen_s_ago: float, lifetime: int = 10) -> dict[str, Any]:
        seen = now - datetime.timedelta(seconds=seen_s_ago)
        return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}

    gate = peering.PeeringGate(fakes.FakeClient(), identity="me", name=PEERING_NAME,
                               priority=50, standalone=False)
    gate._watch.synced.set()
    assert gate.evaluate(now) is None
    assert gate.state == "standby", "no peering object: wait, as kopf does"
    cases: list[tuple[dict[str, Any], str, float | None]] = [
        ({"me": peer(50, 1)}, "active", None),
        ({"me": peer(50, 1), "low": peer(10, 1)}, "active", None),
        ({"me": peer(50, 1), "high": peer(100, 4)}, "standby", 6.0),
        ({"me": peer(50, 1), "same": peer(50, 2)}, "standby", 8.0),
        ({"me": peer(50, 1), "dead": peer(100, 11)}, "active", None),
        ({"me": peer(50, 1), "junk": {"priority": "x"}, "none": None}, "active", None),
    ]
    for status, wanted, recheck_s in cases:
        gate._watch.objects = {PEERING_NAME: {"metadata": {"name": PEERING_NAME},
                                              "status": status}}
        recheck = gate.evaluate(now)
        assert gate.state == wanted, status
        assert (None if recheck is None else (recheck - now).total_seconds()) == recheck_s
    assert peering.PeeringGate(fakes.FakeClient(), identity="x", name="y", priority=0,
                               standalone=True).state == "standalone"
