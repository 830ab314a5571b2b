"""`helm install` of charts/fluxsupport with the image built from the Dockerfile: the operator
as a Pod with its ServiceAccount, Ready through its real probes, reconciling SupportCases and
SecurityBulletins against the Flux controllers running as Pods next to it, scraped by
Prometheus from inside the node's network namespace."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fluxsupport.devcluster import fluxpods
from tests import fixtures, harness
from tests import prometheus as prom
from tests.cluster.conftest import (
    OPERATOR_NAMESPACE,
    Cluster,
    OperatorImage,
    Release,
    condition_time,
    record,
    wait_for,
)

#: Another build of source-controller v1.9.4: a digest no Pod here runs.
OTHER_DIGEST = "sha256:" + "5c" * 32


@pytest.fixture(scope="module")
def release(cluster: Cluster, operator_image: OperatorImage,
            flux_pods: dict[str, fluxpods.Running],
            request: pytest.FixtureRequest) -> Iterator[Release]:
    cluster.ensure_namespace(OPERATOR_NAMESPACE)
    installed = Release(cluster, "fluxsupport")
    seconds = installed.install(operator_image)
    record(request.config, f"helm install --wait (the operator Pod Ready) {seconds:.1f} s")
    try:
        yield installed
    finally:
        installed.uninstall()


def test_the_pod_is_ready_through_its_probes_as_its_service_account(
        release: Release, figure: Any) -> None:
    pods = release.ready_pods()
    assert len(pods) == 1, pods
    pod = pods[0]
    container = pod["spec"]["containers"][0]
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics",
                                                    "scheme": "HTTP"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 0, status
    started = harness.parse_time(status["state"]["running"]["startedAt"])
    ready = condition_time(pod, "Ready")
    assert ready is not None
    log = release.logs(pod["metadata"]["name"])
    assert "Kubernetes credentials: in-cluster ServiceAccount" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    # The startup probe polls every second: Ready follows the operator's own readiness by
    # about a second, not by a readiness period (10 s) as without it.
    figure(f"operator Pod Ready {ready - started:.0f} s after its container started "
           f"(timestamps in seconds); image {status['image']}")
    assert ready - started < 60


def test_the_pod_runs_unprivileged_with_a_read_only_root(cluster: Cluster,
                                                         release: Release) -> None:
    pod = release.ready_pods()[0]["metadata"]["name"]
    probe = ("import os, json\n"
             "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read()"
             ".splitlines() if ':\\t' in l)\n"
             "def writable(path):\n"
             "    try:\n"
             "        open(path, 'w').close(); os.unlink(path); return True\n"
             "    except OSError:\n"
             "        return False\n"
             "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(),"
             " 'caps': status['CapEff'].strip(), 'nnp': status['NoNewPrivs'].strip(),"
             " 'seccomp': status['Seccomp'].strip(), 'root': writable('/probe'),"
             " 'tmp': writable('/tmp/probe')}))\n")
    done = cluster.kubectl("exec", "-n", OPERATOR_NAMESPACE, pod, "--", "python", "-c", probe)
    seen = json.loads(done.stdout)
    assert seen == {"uid": 65532, "gid": 65532, "caps": "0000000000000000", "nnp": "1",
                    "seccomp": "2", "root": False, "tmp": True}, seen


def _verdict(cluster: Cluster, name: str, component: str) -> dict[str, Any] | None:
    bulletin = cluster.json("get", "securitybulletin", name)
    found = [c for c in (bulletin.get("status") or {}).get("components") or []
             if c["component"] == component]
    return found[0] if found else None


def test_cases_and_bulletins_are_reconciled_by_the_pod(
        cluster: Cluster, release: Release, flux_pods: dict[str, fluxpods.Running],
        figure: Any) -> None:
    namespace = "team-cluster"
    cluster.ensure_namespace(namespace)
    created = time.time()
    cluster.apply(harness.case_manifest("in-cluster", namespace, "High"))

    def reconciled() -> dict[str, Any] | None:
        case: dict[str, Any] = cluster.json("get", "supportcase", "in-cluster", "-n", namespace)
        return case if not harness.case_problems(case, time.time()) else None

    case = wait_for(reconciled, timeout=60, what="the case reconciled by the operator Pod")
    figure(f"a case applied with kubectl is Ready {time.time() - created:.1f} s later")
    assert case["status"]["firstResponse"]["state"] == "Pending"

    running = flux_pods["source-controller"]
    version = running.image.rsplit(":", 1)[-1]
    fixed = {"name": "localhost/source-controller", "newTag": version, "digest": running.digest}
    other = {**fixed, "digest": OTHER_DIGEST}
    # The fix that lists the running build is published first: a later bulletin's fix
    # digests count for earlier ones (rebuilds are cumulative), not the other way round.
    cluster.apply(fixtures.bulletin_for("cpsb-running-build", "CVE-2026-90001",
                                        "source-controller", fixed,
                                        published="2026-06-01T12:00:00Z"),
                  fixtures.bulletin_for("cpsb-other-build", "CVE-2026-90002",
                                        "source-controller", other,
                                        published="2026-06-10T12:00:00Z"))
    try:
        listed = wait_for(lambda: (v := _verdict(cluster, "cpsb-running-build",
                                                 "source-controller")) and v["verdict"] == "Fixed"
                          and v, timeout=60, what="Fixed for the running build")
        assert listed["reason"] == "DigestListed"
        assert listed["digests"] == [running.digest], (listed, running)
        missing = wait_for(lambda: (v := _verdict(cluster, "cpsb-other-build",
                                                  "source-controller"))
                           and v["verdict"] == "Vulnerable" and v,
                           timeout=60, what="Vulnerable for a build the bulletin does not list")
        assert missing["reason"] == "DigestNotListed"
        assert missing["remediation"] == {"name": "localhost/source-controller",
                                          "newTag": version, "digest": OTHER_DIGEST}
    finally:
        cluster.kubectl("delete", "securitybulletin", "cpsb-running-build", "cpsb-other-build",
                        "--ignore-not-found")


class NodePrometheus(prom.Prometheus):
    """Prometheus inside the node's network namespace, listening on the node's address."""

    def __init__(self, enter: list[str], address: str) -> None:
        super().__init__()
        self.enter = enter
        self.address = address

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def _spawn(self, args: Any) -> None:
        args = [arg.replace("127.0.0.1:", f"{self.address}:")
                if arg.startswith("--web.listen-address=") else arg for arg in args]
        super()._spawn([*self.enter, *args])


@pytest.mark.localnode
def test_prometheus_in_the_node_scrapes_the_pod_and_the_breach_alert_fires(
        cluster: Cluster, release: Release, tmp_path: pathlib.Path, figure: Any) -> None:
    local = cluster.local_node()
    service = cluster.json("get", "service", "fluxsupport-metrics", "-n", OPERATOR_NAMESPACE)
    target = f"{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    server = NodePrometheus(local.enter(), local.slot.node_ip)
    # No Alertmanager: the firing alert is read from Prometheus. Nothing listens on port 9.
    server.start(tmp_path / "prometheus", prom.chart_rules(), "http://127.0.0.1:9", [target])
    try:
        up = prom.wait(lambda: [s for s in server.query('up{job="fluxsupport"}')
                                if s["value"][1] == "1"], timeout=60,
                       what="the operator's Service scraped")
        assert up[0]["metric"]["instance"] == target
        namespace = "team-alerts"
        cluster.ensure_namespace(namespace)
        cluster.apply(harness.case_manifest("urgent", namespace, "Urgent"))
        started = time.monotonic()
        firing = prom.wait(lambda: [a for a in server.alert_states(
            "SupportCaseFirstResponseBreached") if a["state"] == "firing"
            and a["labels"].get("supportcase") == "urgent"], timeout=90,
            what="SupportCaseFirstResponseBreached firing")
        assert firing[0]["labels"]["namespace"] == namespace
        figure(f"Prometheus in the node's namespace scraped {target} (the chart's Service); "
               f"breach alert firing {time.monotonic() - started:.1f} s after the Urgent case "
               f"(target 4 s)")
    finally:
        server.stop()
