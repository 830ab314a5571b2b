"""CLI commands against the real API server, with the session operator reconciling."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
from typing import Any

import yaml

from fluxsupport import constants
from tests import harness


def fluxsupport(kubeconfig: pathlib.Path | None, *args: str,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
    return subprocess.run([sys.executable, "-m", "fluxsupport", *args, *extra],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, **(env or {})})


def state(api: harness.Api, namespace: str, name: str, wanted: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = api.get_case(namespace, name)
        return obj if ((obj.get("status") or {}).get("firstResponse") or {}).get(
            "state") == wanted else None
    return harness.wait_for(probe, what=f"{name} {wanted}")


CREATE = ("case", "create", "--title", "Kustomizations fail", "--statement",
          "Production sync stopped", "--severity", "High", "--outage", "partial",
          "--business-critical", "--component", "kustomize-controller", "--category", "incident",
          "--contact-email", "ops@example.com")


def test_case_lifecycle_through_the_cli(api: harness.Api, operator: harness.OperatorProcess,
                                        namespace: str) -> None:
    kubeconfig = api.kubeconfig
    for name in ("one", "two", "three"):
        created = fluxsupport(kubeconfig, *CREATE[:2], name, *CREATE[2:], "-n", namespace)
        assert created.returncode == 0, created.stderr
    state(api, namespace, "one", "Pending")

    responded = fluxsupport(kubeconfig, "case", "respond", "one", "-n", namespace,
                            "--by", "alice")
    assert responded.returncode == 0, responded.stderr
    assert state(api, namespace, "one", "Met")["status"]["firstResponse"]["respondedBy"] == \
        "alice"

    # A time in the future is refused (the operator would ignore it: AnnotationInFuture).
    future = fluxsupport(kubeconfig, "case", "resolve", "two", "-n", namespace,
                         "--at", "2030-01-01T00:00:00Z")
    assert future.returncode == 2
    assert "is in the future" in future.stderr
    resolved = fluxsupport(kubeconfig, "case", "resolve", "two", "-n", namespace)
    assert resolved.returncode == 0, resolved.stderr
    obj = state(api, namespace, "two", "Met")
    assert obj["status"]["closure"]["outcome"] == "Resolved"

    dismissed = fluxsupport(kubeconfig, "case", "dismiss", "three", "-n", namespace,
                            "--reason", "duplicate")
    assert dismissed.returncode == 0, dismissed.stderr
    obj = state(api, namespace, "three", "Closed")
    assert obj["status"]["closure"] == {"outcome": "Dismissed",
                                        "at": obj["status"]["closure"]["at"],
                                        "reason": "duplicate"}

    listed = fluxsupport(kubeconfig, "case", "list", "-n", namespace, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert {row["name"]: row["state"] for row in json.loads(listed.stdout)} == {
        "one": "Met", "two": "Met", "three": "Closed"}
    table = fluxsupport(kubeconfig, "case", "list", "-A")
    assert "three" in table.stdout
    assert "Closed" in table.stdout


def test_case_respond_writes_the_first_response_once(
        api: harness.Api, operator: harness.OperatorProcess, namespace: str) -> None:
    """Regression: a second respond overwrote the first (Met became Late) and, without --by,
    deleted responded-by."""
    kubeconfig = api.kubeconfig
    created = fluxsupport(kubeconfig, *CREATE[:2], "once", *CREATE[2:], "-n", namespace)
    assert created.returncode == 0, created.stderr
    first = fluxsupport(kubeconfig, "case", "respond", "once", "-n", namespace, "--by", "alice")
    assert first.returncode == 0, first.stderr
    met = state(api, namespace, "once", "Met")
    recorded = met["metadata"]["annotations"][constants.RESPONDED_AT]

    earlier = "2020-01-01T00:00:00Z"  # Before the case: it only has to differ from the first.
    again = fluxsupport(kubeconfig, "case", "respond", "once", "-n", namespace,
                        "--at", earlier)
    assert again.returncode == 1
    assert f"already recorded at {recorded} by alice" in again.stderr
    assert "--force" in again.stderr
    annotations = api.get_case(namespace, "once")["metadata"]["annotations"]
    assert annotations[constants.RESPONDED_AT] == recorded
    assert annotations[constants.RESPONDED_BY] == "alice"

    forced = fluxsupport(kubeconfig, "case", "respond", "once", "-n", namespace,
                         "--at", earlier, "--force")
    assert forced.returncode == 0, forced.stderr
    def forced_in_status() -> dict[str, Any] | None:
        obj = api.get_case(namespace, "once")
        return obj if obj["status"]["firstResponse"].get("respondedAt") == earlier else None
    replaced = harness.wait_for(forced_in_status, what="forced response in status")
    assert replaced["metadata"]["annotations"][constants.RESPONDED_BY] == "alice"
    assert replaced["status"]["firstResponse"]["respondedBy"] == "alice"


def test_case_errors(api: harness.Api, namespace: str, tmp_path: pathlib.Path) -> None:
    missing = fluxsupport(api.kubeconfig, "case", "respond", "ghost", "-n", namespace)
    assert missing.returncode == 2
    assert f"supportcase {namespace}/ghost not found" in missing.stderr
    invalid = fluxsupport(api.kubeconfig, *CREATE[:2], "bad", *CREATE[2:], "-n", namespace,
                          "--outage", "total")
    assert invalid.returncode == 2
    assert "spec.impact.outage" in invalid.stderr
    unreachable = tmp_path / "kubeconfig"
    config = yaml.safe_load(api.kubeconfig.read_text())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    unreachable.write_text(yaml.safe_dump(config))
    down = fluxsupport(unreachable, "case", "list", "-A")
    assert down.returncode == 1
    assert "cannot reach the cluster" in down.stderr
    no_file = fluxsupport(tmp_path / "nope", "case", "list")
    assert no_file.returncode == 2
    assert "does not exist" in no_file.stderr


def test_report_and_bulletin_list(api: harness.Api, operator: harness.OperatorProcess,
                                  namespace: str) -> None:
    created = fluxsupport(api.kubeconfig, *CREATE[:2], "reported", *CREATE[2:], "-n", namespace)
    assert created.returncode == 0, created.stderr
    state(api, namespace, "reported", "Pending")
    report = fluxsupport(api.kubeconfig, "report", "-o", "json")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    row = next(r for r in data["cases"] if r["name"] == "reported")
    assert row["state"] == "Pending"
    assert row["level"] == 2
    assert row["remaining"]
    assert isinstance(data["bulletins"], list)
    table = fluxsupport(api.kubeconfig, "report")
    assert "Support cases" in table.stdout
    bulletins = fluxsupport(api.kubeconfig, "bulletin", "list", "-o", "yaml")
    assert bulletins.returncode == 0, bulletins.stderr
    assert isinstance(yaml.safe_load(bulletins.stdout), list)
    bad_policy = fluxsupport(api.kubeconfig, "report", "--policy", "/nonexistent.yaml")
    assert bad_policy.returncode == 2


def test_run_with_the_metrics_port_taken_exits_1(kubeconfig: pathlib.Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "fluxsupport", "run", "--metrics-host", "127.0.0.1",
             "--metrics-port", str(port)], capture_output=True, text=True, timeout=60,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)}, check=False)
    assert result.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr


def test_demo_once_end_to_end(tmp_path: pathlib.Path) -> None:
    result = fluxsupport(None, "demo", "--once",
                         env={"FLUXSUPPORT_DEMO_DIR": str(tmp_path / "demo"), "COLUMNS": "250"})
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    print(out)
    lines = {line.split("│")[1].strip(): line for line in out.splitlines()
             if line.count("│") > 4}
    assert "Pending" in lines["helmreleases-stuck"]
    assert "FluxComponent" in lines["helmreleases-stuck"]
    assert "ThirdParty" in lines["argo-rollouts-question"]
    assert "ImpactBelowSeverity" in lines["staging-dashboard-slow"]
    # Every case went to the demo's support mailbox, once, with its Message-ID.
    assert all("SubmittedByEmail" in lines[name] for name in (
        "helmreleases-stuck", "argo-rollouts-question", "staging-dashboard-slow"))
    assert "The support mailbox received 3 email(s):" in out
    assert out.count("@fluxsupport>  [fluxsupport:") == 3
    assert "Level 1 (Urgent): Flux UI slow in staging" in out
    source = next(line for line in out.splitlines() if "source-controller" in line
                  and "cpsb-2026-0602" in line)
    assert "Vulnerable" in source
    assert "CVE-2025-66506 NotAffected" in source
    fix = "sha256:1881959c34731d1eca675a69abea9754bde9c0f544f3aed2290abf9ba0709be0"
    assert f"digest: {fix}" in out
    assert "name: ghcr.io/controlplaneio-fluxcd/distroless/source-controller" in out
    assert "export KUBECONFIG=" in out
    # The commands to try use the short names and category that clash with no built-in kind.
    assert "kubectl get fluxsupport -A" in out
    assert "kubectl get fsbulletin cpsb-2026-0602" in out
    assert "kubectl get sc " not in out
    assert "Stopped the operator, kube-apiserver and etcd." in result.stderr


def test_demo_gitops_lets_the_real_flux_apply_the_cases(tmp_path: pathlib.Path) -> None:
    result = fluxsupport(None, "demo", "--once", "--gitops",
                         env={"FLUXSUPPORT_DEMO_DIR": str(tmp_path / "demo"), "COLUMNS": "250"})
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Flux applied deploy/flux/cases at" in result.stderr
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()
             if line.count("│") > 4}
    # The two cases of deploy/flux/cases, not the demo's three.
    assert {"helmreleases-stuck", "upgrade-to-2-8"} <= lines.keys()
    assert "argo-rollouts-question" not in lines
    assert "kubectl get gitrepositories,kustomizations -n flux-system" in result.stdout
