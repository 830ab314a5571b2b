"""``fluxsupport demo``: everything fluxsupport does, on a local control plane, in a minute."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
from typing import Annotated, Any

import typer
import yaml

from fluxsupport.cli import report
from fluxsupport.devcluster import build, cluster, flux, fluxpods, images, mailbox, node, paths
from fluxsupport.domain.policy import Policy
from fluxsupport.kube import blocking, seed

OPERATOR_NAMESPACE = "fluxsupport-system"


def _say(message: str) -> None:
    typer.secho(message, err=True, fg=typer.colors.CYAN)


#: The demo's channel: email into a mailbox on loopback (the portal stays off: no RT here).
DEMO_CHANNELS = """\
channels:
  cluster: fluxsupport-demo
  email: {{enabled: true, host: 127.0.0.1, port: {port}, tls: none,
          from: flux-ops@customer.demo, to: support@vendor.demo}}
"""


def _start_mailbox() -> mailbox.Mailbox | None:
    support = mailbox.Mailbox()
    try:
        support.start()
    except ImportError:
        _say("aiosmtpd is not installed (pip install -e '.[dev]'): no channel in this demo")
        return None
    _say(f"Started a support mailbox (SMTP on 127.0.0.1:{support.port}); cases go there "
         "by email")
    return support


def _policy_args(support: mailbox.Mailbox | None, state_dir: pathlib.Path) -> list[str]:
    if support is None:
        return []
    path = state_dir / "policy.yaml"
    path.write_text(DEMO_CHANNELS.format(port=support.port))
    return ["--policy", str(path)]


def _show_mailbox(support: mailbox.Mailbox) -> None:
    typer.echo(f"\nThe support mailbox received {len(support.messages)} email(s):")
    for message in support.messages:
        typer.echo(f"  {message['Message-ID']}  {message['Subject']}")
    if support.messages:
        body = support.messages[0].get_body(("plain",))
        text = body.get_content() if body is not None else ""
        typer.echo("First one, as the support team reads it:\n  "
                   + "\n  ".join(text.splitlines()[:14]) + "\n  ...")


def _check_gitops() -> None:
    missing = [name for name in flux.CONTROLLERS if not build.binary_path(name).exists()]
    if not (paths.source_root() / "deploy" / "flux").is_dir():
        missing.append("deploy/flux (a checkout of this repository)")
    if missing:
        typer.echo("error: --gitops needs the Flux controllers (make flux) and a checkout; "
                   f"missing: {', '.join(missing)}", err=True)
        raise typer.Exit(1)


def _gitops(stack: contextlib.ExitStack, client: Any, kubeconfig: pathlib.Path,
            workdir: pathlib.Path) -> None:
    """Push this checkout to a git server on loopback and apply deploy/flux's GitRepository
    and cases Kustomization as shipped (only the URL and intervals changed); wait for Flux."""
    shutil.rmtree(workdir, ignore_errors=True)
    seed.ensure_namespace(client, "team-a")  # deploy/flux/cases' targetNamespace
    deploy = paths.source_root() / "deploy" / "flux"
    source = yaml.safe_load((deploy / "gitrepository.yaml").read_text())
    sync = yaml.safe_load((deploy / "cases" / "flux-kustomization.yaml").read_text())
    _say("Starting Flux's source-controller and kustomize-controller and a git server ...")
    flux.install_crds(kubeconfig)
    server = stack.enter_context(flux.running_git_server(workdir / "git"))
    checkout = flux.Checkout.of_working_tree(paths.source_root(), workdir / "checkout",
                                             server.create("fluxsupport"))
    commit = checkout.commit("fluxsupport as shipped", tag=source["spec"]["ref"]["tag"])
    stack.enter_context(flux.running_controllers(kubeconfig, workdir / "controllers"))
    source["spec"].update(url=server.url("fluxsupport"), interval="10s")
    sync["spec"]["interval"] = "10s"
    manifest = workdir / "flux-objects.yaml"
    manifest.write_text(yaml.safe_dump_all([source, sync]))
    flux.kubectl(kubeconfig, "apply", "--server-side", "-f", str(manifest))
    flux.kubectl(kubeconfig, "wait", "-n", flux.RUNTIME_NAMESPACE, "kustomization/"
                 + sync["metadata"]["name"], "--for=condition=Ready", "--timeout=180s")
    _say(f"Flux applied deploy/flux/cases at {commit[:12]} (GitRepository "
         f"{source['metadata']['name']}, Kustomization {sync['metadata']['name']})")


def _start_operator(plane: cluster.ControlPlane, port: int, policy_args: list[str],
                    log_path: pathlib.Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "fluxsupport", "run", "--metrics-host", "127.0.0.1",
             "--metrics-port", str(port), "--namespace", OPERATOR_NAMESPACE,
             "--flux-namespace", "flux-system", *policy_args],
            env={**os.environ, "KUBECONFIG": str(plane.kubeconfig)},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=cluster._die_with_parent,  # noqa: PLW1509 - only prctl runs
        )


def _show_commands(plane: cluster.ControlPlane, port: int, log_path: pathlib.Path,
                   gitops: bool) -> None:
    flux_line = ("\n  kubectl get gitrepositories,kustomizations -n flux-system   # Flux's objects"
                 if gitops else "")
    typer.echo(f"""
Try it yourself (kube-apiserver {plane.version()['gitVersion']} at {plane.server}):
  export KUBECONFIG={plane.kubeconfig}
  kubectl get fluxsupport -A        # cases and bulletins; short names fscase, fsbulletin
  kubectl get fsbulletin cpsb-2026-0602 -o yaml
  kubectl explain supportcase.status.firstResponse
  kubectl wait --for=condition=Ready supportcase/helmreleases-stuck -n team-a{flux_line}
Metrics: curl -s http://127.0.0.1:{port}/metrics | grep -E '^(supportcase|fluxsupport)_'
Operator log: {log_path}""")


def _node_demo(once: bool, state_dir: pathlib.Path) -> None:
    """The operator installed with helm from its image, and Flux's controllers, as Pods on a
    real node; the same samples and report as the default demo."""
    archive = images.operator_archive()
    if not archive.is_file():
        typer.echo(f"error: --node needs the operator image {archive}: run `make image` (and "
                   "`make node flux` for the node and the controllers)", err=True)
        raise typer.Exit(1)
    local = node.Node(state_dir / "node")
    support = _start_mailbox()
    try:
        _say("Starting a node: the control plane, containerd, kubelet and kube-proxy in a "
             "network namespace of their own ...")
        local.start()
        _say(f"Node {local.name} Ready; Flux's source-, kustomize- and helm-controller as Pods "
             "in flux-system ...")
        for name, running in fluxpods.install(local).items():
            _say(f"  {name}: {running.pod}, imageID {running.image_id}")
        tag = images.archive_tag(archive)
        local.import_image(archive, "localhost/fluxsupport")
        values = ["--set", "image.repository=localhost/fluxsupport", "--set",
                  f"image.tag={tag}", "--set", "image.pullPolicy=Never"]
        if support is not None:
            forwarder = local.forward(support.port)
            values += ["--set-json", "policy.channels=" + json.dumps({
                "cluster": "fluxsupport-demo", "email": {
                    "enabled": True, "host": local.slot.node_ip, "port": forwarder.port,
                    "tls": "none", "from": "flux-ops@customer.demo",
                    "to": "support@vendor.demo"}})]
        _say(f"helm install fluxsupport (image localhost/fluxsupport:{tag}) ...")
        local.kubectl("create", "namespace", OPERATOR_NAMESPACE)
        helm = build.build_all(("helm",))["helm"]
        subprocess.run([str(helm), "--kubeconfig", str(local.kubeconfig), "install",
                        "fluxsupport", str(paths.source_root() / "charts" / "fluxsupport"),
                        "--namespace", OPERATOR_NAMESPACE, *values, "--wait", "--timeout",
                        "300s"], check=True, capture_output=True, text=True, timeout=330)
        pod = local.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-o",
                            "jsonpath={.items[0].metadata.name}").stdout
        _say(f"The operator runs as Pod {pod}; applying a SecurityBulletin, its OpenVEX "
             "ConfigMap and three SupportCases ...")
        client = blocking.api_client(local.kubeconfig)
        seed.apply_samples(client, OPERATOR_NAMESPACE)
        seed.wait_reconciled(client, submitted=support is not None, timeout_s=120)
        typer.echo("")
        report.render(report.collect(blocking.CustomObjects(client), Policy(),
                                     datetime.datetime.now(datetime.UTC)))
        if support is not None:
            _show_mailbox(support)
        typer.echo(f"""
Try it yourself (kube-apiserver at {local.server}, in the node's network namespace):
  export KUBECONFIG={local.kubeconfig}
  kubectl get pods -A -o wide          # the operator and Flux, as Pods
  kubectl get pods -n flux-system -o jsonpath='{{..imageID}}'
  kubectl logs -n {OPERATOR_NAMESPACE} {pod}
  kubectl get fluxsupport -A""")
        if not once:
            _say("\nRunning until Ctrl-C ...")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    except (node.NodeError, build.BuildError, subprocess.CalledProcessError, TimeoutError,
            *seed.API_ERRORS, OSError) as error:
        detail = getattr(error, "stderr", "") or ""
        typer.echo(f"error: the demo failed: {error} {detail}".strip(), err=True)
        raise typer.Exit(1) from error
    finally:
        local.stop()
        if support is not None:
            support.stop()
        _say("Stopped the node: its processes, cgroups, namespaces and veth are gone.")


def demo(
    once: Annotated[bool, typer.Option(help="Print the report and exit (for scripts and CI).")
                    ] = False,
    metrics_port: Annotated[int, typer.Option(
        help="Port for the operator's /metrics; a free one when 0.")] = 0,
    gitops: Annotated[bool, typer.Option(
        help="Let Flux's real source- and kustomize-controller apply the cases of "
             "deploy/flux/cases from a local git server (build them first: make flux).")
    ] = False,
    with_node: Annotated[bool, typer.Option(
        "--node", help="Run the operator (the image of make image, installed with helm) and "
        "Flux's controllers as Pods on a real node (root; make node flux image).")] = False,
) -> None:
    """Start a local control plane, a realistic flux-system, the operator and samples; report.

    Example: fluxsupport demo --once
    """
    state_dir = pathlib.Path(os.environ.get("FLUXSUPPORT_DEMO_DIR") or paths.cache_dir() / "demo")
    if with_node:
        _node_demo(once, state_dir)
        return
    if gitops:
        _check_gitops()
    try:
        build.build_all(("etcd", "kube-apiserver"))
        _say("Starting etcd and kube-apiserver on loopback ...")
        plane = cluster.up(state_dir, attached=True)
    except (build.BuildError, cluster.ControlPlaneError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    port = metrics_port or cluster.free_port()
    operator: subprocess.Popen[bytes] | None = None
    stack = contextlib.ExitStack()
    support = _start_mailbox()
    try:
        client = blocking.api_client(plane.kubeconfig)
        blocking.install_crds(client)
        seed.ensure_namespace(client, OPERATOR_NAMESPACE)
        _say(f"Created {seed.install_flux(client)} Flux Deployments in flux-system "
             "(v2.7.5 enterprise-distroless; source-controller from before a fix)")
        log_path = state_dir / "operator.log"
        operator = _start_operator(plane, port, _policy_args(support, state_dir), log_path)
        _say("Started the operator; applying a SecurityBulletin, its OpenVEX ConfigMap and "
             + ("(through Flux) the cases of deploy/flux/cases ..." if gitops
                else "three SupportCases ..."))
        seed.apply_samples(client, OPERATOR_NAMESPACE, cases=not gitops)
        if gitops:
            _gitops(stack, client, plane.kubeconfig, state_dir / "gitops")
        seed.wait_reconciled(client, submitted=support is not None)
        typer.echo("")
        report.render(report.collect(blocking.CustomObjects(client), Policy(),
                                     datetime.datetime.now(datetime.UTC)))
        if support is not None:
            _show_mailbox(support)
        _show_commands(plane, port, log_path, gitops)
        if not once:
            _say("\nRunning until Ctrl-C ...")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    except (*seed.API_ERRORS, TimeoutError, OSError, flux.FluxError) as error:
        typer.echo(f"error: the demo failed: {error}", err=True)
        raise typer.Exit(1) from error
    finally:
        stack.close()
        if operator is not None:
            cluster.stop_process_group(operator.pid)
        if support is not None:
            support.stop()
        plane.stop()
        _say("Stopped the operator, kube-apiserver and etcd.")
