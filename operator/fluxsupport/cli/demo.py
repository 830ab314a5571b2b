"""``fluxsupport demo``: everything fluxsupport does, on a local control plane."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Annotated, Any

import kubernetes
import typer
import yaml

from fluxsupport import kube, paths
from fluxsupport.constants import GROUP, VERSION
from fluxsupport.devcluster import build, cluster


def _ready(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def demo(
    once: Annotated[bool, typer.Option(help="Print the report and exit (for scripts and CI).")
                    ] = False,
    metrics_port: Annotated[int, typer.Option(help="Port for the operator's /metrics.")] = 8080,
) -> None:
    """Start a local control plane, install the CRDs, run the operator, apply samples.

    Example: fluxsupport demo --once
    """
    state_dir = paths.cache_dir() / "demo"
    try:
        build.build_all(("etcd", "kube-apiserver"))
        typer.echo("Starting etcd and kube-apiserver on loopback ...", err=True)
        plane = cluster.up(state_dir, attached=True)
    except (build.BuildError, cluster.ControlPlaneError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    operator: subprocess.Popen[bytes] | None = None
    try:
        client = kube.api_client(plane.kubeconfig)
        kube.install_crds(client)
        log = (state_dir / "operator.log").open("ab")
        operator = subprocess.Popen(
            [sys.executable, "-m", "fluxsupport", "run", "--metrics-host", "127.0.0.1",
             "--metrics-port", str(metrics_port)],
            env={**os.environ, "KUBECONFIG": str(plane.kubeconfig)},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=cluster._die_with_parent,  # noqa: PLW1509 - only prctl runs
        )
        _apply_samples(client)
        _print_report(client, plane, metrics_port)
        if not once:
            typer.echo("\nRunning until Ctrl-C ...", err=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    finally:
        if operator is not None:
            cluster.stop_process_group(operator.pid)
        plane.stop()
        typer.echo("Stopped the operator, kube-apiserver and etcd.", err=True)


def _apply_samples(client: kubernetes.client.ApiClient) -> None:
    custom = kubernetes.client.CustomObjectsApi(client)
    examples = paths.source_root() / "examples"
    case = yaml.safe_load((examples / "supportcase.yaml").read_text())
    bulletin = yaml.safe_load((examples / "securitybulletin.yaml").read_text())
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", "supportcases", case)
    custom.create_cluster_custom_object(GROUP, VERSION, "securitybulletins", bulletin)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        case_obj = custom.get_namespaced_custom_object(
            GROUP, VERSION, "default", "supportcases", case["metadata"]["name"])
        bulletin_obj = custom.get_cluster_custom_object(
            GROUP, VERSION, "securitybulletins", bulletin["metadata"]["name"])
        if _ready(case_obj) and _ready(bulletin_obj):
            return
        time.sleep(0.2)
    raise typer.Exit(1)


def _print_report(client: kubernetes.client.ApiClient, plane: cluster.ControlPlane,
                  metrics_port: int) -> None:
    version = plane.version()["gitVersion"]
    typer.echo(f"kube-apiserver {version} at {plane.server}")
    typer.echo("SupportCase default/helmreleases-stuck: Ready")
    typer.echo("SecurityBulletin cpsb-2026-0811: Ready")
    kubeconfig: pathlib.Path = plane.kubeconfig
    typer.echo(f"\nexport KUBECONFIG={kubeconfig}")
    typer.echo("kubectl get supportcases -A")
    typer.echo("kubectl get securitybulletins")
    typer.echo(f"curl -s http://127.0.0.1:{metrics_port}/metrics | grep fluxsupport")
