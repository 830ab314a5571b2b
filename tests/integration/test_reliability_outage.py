"""Control-plane outages: kube-apiserver, then etcd, stopped for 20 s under load.

While a writer creates Urgent (4 s) and High (1 h) cases and responds to some of them, one
control-plane process is stopped for OUTAGE_S and started again on the same ports, with the
same certificates and data. The session operator is not restarted. Afterwards every case that
exists must have the right status, within CATCH_UP_S of the process being back:

* a deadline that fell inside the outage is Breached, with breachedAt at the deadline itself,
  and it has exactly one FirstResponseBreached Event;
* a response recorded before, during (retried by the writer) or after the outage is Met/Late;
* every case created before or after the outage has its deadline, which never moves.

The ground truth is what the API server holds once it is back (an etcd outage makes some
creates time out on the client although they were stored, or the reverse).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fluxsupport.constants import GROUP, RESPONDED_AT, RESPONDED_BY, VERSION
from fluxsupport.devcluster import cluster
from tests import harness

OUTAGE_S = 20.0
CATCH_UP_S = 10.0
WRITE_TIMEOUT = (2, 3)  # connect, read: an etcd outage makes requests hang


class Writer(threading.Thread):
    """Create a case every ``period`` seconds, alternating Urgent and High, and respond to
    some: every fourth Urgent case one second after its creation (Met), every second High
    case two seconds after. Failed writes are retried on the next round; the API being down
    is expected."""

    def __init__(self, api: harness.Api, namespace: str, period: float = 0.25) -> None:
        super().__init__(name="outage-writer", daemon=True)
        self.api, self.namespace, self.period = api, namespace, period
        self.stop = threading.Event()
        self.created: list[str] = []
        self.failures = 0
        self._responses: dict[str, float] = {}  # name -> when to respond
        self._index = 0

    def run(self) -> None:
        while not self.stop.wait(self.period):
            self._create()
            self._respond_due()

    def _create(self) -> None:
        severity = "Urgent" if self._index % 2 == 0 else "High"
        name = f"w{self._index:04d}-{severity.lower()}"
        body = harness.case_manifest(name, self.namespace, severity)
        try:
            self.api.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "supportcases", body,
                _request_timeout=WRITE_TIMEOUT)
        except Exception:  # down or timed out: the final listing decides
            self.failures += 1
            if self._index % 2 == 0:
                self._index += 1  # an Urgent case is only worth creating on time
            return
        self.created.append(name)
        if severity == "Urgent" and self._index % 4 == 0:
            self._responses[name] = time.time() + 1
        elif severity == "High" and self._index % 4 == 1:
            self._responses[name] = time.time() + 2
        self._index += 1

    def _respond_due(self) -> None:
        now = time.time()
        for name, when in list(self._responses.items()):
            if when > now:
                continue
            patch = {"metadata": {"annotations": {RESPONDED_AT: harness.rfc3339(now),
                                                  RESPONDED_BY: "writer"}}}
            try:
                self.api.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, "supportcases", name, patch,
                    _request_timeout=WRITE_TIMEOUT)
            except Exception:  # retried next round
                self.failures += 1
                continue
            del self._responses[name]


def list_cases(api: harness.Api, namespace: str) -> list[dict[str, Any]]:
    listing = api.custom.list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                       "supportcases", _request_timeout=5)
    items: list[dict[str, Any]] = listing["items"]
    return items


def wait_caught_up(api: harness.Api, namespace: str, timeout: float) -> list[dict[str, Any]]:
    """Poll until every case is right; return them."""
    last: list[str] = []

    def probe() -> list[dict[str, Any]] | None:
        nonlocal last
        try:
            cases = list_cases(api, namespace)
        except Exception:  # the API server may still be settling
            last = ["listing failed"]
            return None
        now = time.time()
        last = [problem for case in cases for problem in harness.case_problems(case, now)]
        return cases if not last else None

    try:
        return harness.wait_for(probe, timeout=timeout, interval=0.1, what="catch-up")
    except AssertionError as error:
        raise AssertionError(f"{error}\nstill wrong ({len(last)}): {last[:20]}") from None


@pytest.fixture
def writer(api: harness.Api, namespace: str) -> Iterator[Writer]:
    thread = Writer(api, namespace)
    thread.start()
    try:
        yield thread
    finally:
        thread.stop.set()
        thread.join(timeout=30)


OUTAGES: dict[str, tuple[Callable[[cluster.ControlPlane], None],
                         Callable[[cluster.ControlPlane], None]]] = {
    "kube-apiserver": (cluster.ControlPlane.stop_apiserver, cluster.ControlPlane.start_apiserver),
    "etcd": (cluster.ControlPlane.stop_etcd, cluster.ControlPlane.start_etcd),
}


def wait_writable(api: harness.Api, namespace: str) -> float:
    """When the API server stores writes again: after an etcd restart, kube-apiserver's own
    etcd client reconnects with gRPC backoff (up to several seconds), which no client can
    shorten. Returns the time of the first successful write."""
    def probe() -> float | None:
        try:
            api.core.patch_namespaced_config_map(
                "outage-probe", namespace, {"data": {"at": repr(time.time())}},
                _request_timeout=(1, 2))
        except Exception:  # not yet
            return None
        return time.time()
    return harness.wait_for(probe, timeout=60, interval=0.05, what="a successful write")


@pytest.mark.parametrize("process", list(OUTAGES))
def test_operator_recovers_from_an_outage_on_its_own(
        api: harness.Api, operator: harness.OperatorProcess,
        control_plane: cluster.ControlPlane, namespace: str, writer: Writer,
        process: str, figures: Callable[[str], None]) -> None:
    stop, start = OUTAGES[process]
    pid = operator.pid
    api.core.create_namespaced_config_map(namespace, {"metadata": {"name": "outage-probe"}})
    # Load before the outage: the last Urgent cases created now are due inside it.
    harness.wait_for(lambda: len(writer.created) >= 16, timeout=30, what="cases before")
    stopped = time.time()
    stop(control_plane)
    try:
        time.sleep(max(0.0, OUTAGE_S - (time.time() - stopped)))  # the outage itself
    finally:
        restarted = time.time()
        start(control_plane)
    back = time.time()  # ready: kube-apiserver's /readyz, or etcd's /health
    writable = wait_writable(api, namespace)
    # The writer goes on meanwhile: new cases and responses after the outage flow too.
    cases = wait_caught_up(api, namespace, timeout=60)
    caught_up = time.time()
    writer.stop.set()
    writer.join(timeout=30)
    cases = wait_caught_up(api, namespace, timeout=30)  # the last cases of the writer too
    inside = [case for case in cases
              if case["spec"]["severity"] == "Urgent"
              and stopped <= harness.parse_time(case["status"]["firstResponse"]["deadline"])
              < back and not case["metadata"].get("annotations", {}).get(RESPONDED_AT)]
    responded = [case for case in cases if case["status"]["firstResponse"].get("respondedAt")]
    figures(f"{process} outage: down {restarted - stopped:.1f}s, then {back - restarted:.1f}s "
            f"to start; {len(cases)} cases ({writer.failures} writes failed meanwhile), "
            f"{len(inside)} deadlines inside the outage, {len(responded)} responses. The API "
            f"server took writes {writable - back:.2f}s after {process} was ready; the operator "
            f"had caught up {max(0.0, caught_up - writable):.2f}s after that "
            f"({caught_up - restarted:.2f}s after {process} was started again)")
    assert caught_up - writable <= CATCH_UP_S, f"caught up {caught_up - writable:.1f}s late"
    assert len(inside) >= 3, "the test must put deadlines inside the outage"
    assert operator.alive(), "the operator must not exit"
    assert operator.pid == pid, "the operator must not restart"
    assert "Traceback" not in operator.log_text()

    # Exactly one breach Event per breached case, the ones inside the outage included.
    def breach_events() -> dict[str, int] | None:
        counts: dict[str, int] = {}
        for event in api.core.list_namespaced_event(namespace).items:
            if event.reason == "FirstResponseBreached":
                counts[event.involved_object.name] = counts.get(
                    event.involved_object.name, 0) + 1
        breached = {case["metadata"]["name"] for case in cases
                    if case["status"]["firstResponse"]["state"] == "Breached"}
        return counts if set(counts) >= breached else None

    counts = harness.wait_for(breach_events, timeout=20, what="breach Events")
    assert {case["metadata"]["name"] for case in inside} <= set(counts)
    assert max(counts.values()) == 1, counts
