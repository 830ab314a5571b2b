"""``fluxsupport devcluster``: a real etcd + kube-apiserver on loopback, without Docker; with
``--node``, a whole single-node cluster (kubelet, containerd) in a network namespace."""

from __future__ import annotations

import pathlib
import shlex
import shutil
import time
from typing import Annotated

import typer

from fluxsupport.devcluster import build, cluster, image, node, paths

app = typer.Typer(help="Build and run a local Kubernetes control plane (etcd + kube-apiserver).",
                  no_args_is_help=True)

StateDir = Annotated[pathlib.Path, typer.Option(
    "--state-dir", envvar="FLUXSUPPORT_DEVCLUSTER_DIR",
    help="Where certificates, logs, etcd data and the kubeconfig live.")]


def default_state_dir() -> pathlib.Path:
    return paths.cache_dir() / "devcluster"


@app.command("build")
def build_command(
    tool: Annotated[list[str] | None, typer.Argument(
        help="A tool (kube-apiserver, kubelet, source-controller ...) or a group: node (what "
             "`up --node` runs), flux (the controllers run as Pods). Default: etcd, "
             "kube-apiserver and helm.")] = None,
) -> None:
    """Build the control-plane binaries into the cache (once; later runs reuse them).

    Example: fluxsupport devcluster build kube-apiserver
    """
    names = tuple(tool or ("etcd", "kube-apiserver", "helm"))
    unknown = sorted(set(build.expand(names)) - set(build.tools()))
    if unknown:
        raise typer.BadParameter(f"unknown tool {', '.join(unknown)}; "
                                 f"choose from {', '.join([*build.tools(), *build.GROUPS])}")
    try:
        built = build.build_all(names)
    except build.BuildError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    for name, path in built.items():
        typer.echo(f"{name}: {path}")


@app.command()
def up(state_dir: StateDir = default_state_dir(),
       with_node: Annotated[bool, typer.Option(
           "--node", help="A real node too: kubelet, containerd, kube-proxy, the controller "
           "manager and the scheduler, all in a network namespace of their own, so that Pods "
           "run (needs root and `make node`).")] = False) -> None:
    """Start etcd and kube-apiserver on free loopback ports; print the KUBECONFIG line.

    Example: eval "$(fluxsupport devcluster up | tail -1)"
    """
    if with_node:
        _up_node(state_dir)
        return
    if node.Layout(state_dir).info.exists() and node.Node.load(state_dir).running():
        typer.echo(f"error: a node runs from {state_dir}; `fluxsupport devcluster down` first",
                   err=True)
        raise typer.Exit(1)
    try:
        plane = cluster.up_detached(state_dir)
    except (cluster.ControlPlaneError, build.BuildError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    version = plane.version()["gitVersion"]
    typer.echo(f"kube-apiserver {version} ready at {plane.server} "
               f"(etcd on 127.0.0.1:{plane.etcd_port}); logs in {state_dir}", err=True)
    typer.echo(f"export KUBECONFIG={shlex.quote(str(plane.kubeconfig))}")


def _up_node(state_dir: pathlib.Path) -> None:
    if node.Layout(state_dir).info.exists():
        running = node.Node.load(state_dir)
        if running.running():
            typer.echo(f"a node is already running from {state_dir}", err=True)
            typer.echo(f"export KUBECONFIG={shlex.quote(str(running.kubeconfig))}")
            return
    cluster.down(state_dir)
    started = time.monotonic()
    cluster_node = node.Node(state_dir, attached=False)
    try:
        cluster_node.start()
    except (node.NodeError, build.BuildError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"node {cluster_node.name} Ready in {time.monotonic() - started:.1f} s; "
               f"kube-apiserver at {cluster_node.server} (in the node's network namespace, "
               f"reached through {cluster_node.slot.host_link}); state and logs in {state_dir}",
               err=True)
    typer.echo(f"export KUBECONFIG={shlex.quote(str(cluster_node.kubeconfig))}")


@app.command()
def down(state_dir: StateDir = default_state_dir()) -> None:
    """Stop the control plane (or node) started by `up` and delete its state."""
    if node.Layout(state_dir).info.exists():
        started = node.Node.load(state_dir)
        started.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
        typer.echo(f"stopped node {started.name}", err=True)
        return
    stopped = cluster.down(state_dir)
    typer.echo(f"stopped {', '.join(stopped)}" if stopped else "nothing was running", err=True)


@app.command()
def env(state_dir: StateDir = default_state_dir()) -> None:
    """Print the KUBECONFIG line of the running control plane."""
    kubeconfig = state_dir / "kubeconfig"
    if not kubeconfig.exists():
        typer.echo("error: no control plane is running; start one with "
                   "`fluxsupport devcluster up`", err=True)
        raise typer.Exit(2)
    typer.echo(f"export KUBECONFIG={shlex.quote(str(kubeconfig))}")


@app.command("image")
def image_command(
    sizes: Annotated[bool, typer.Option(
        "--sizes", help="Also print the size of each layer (a Markdown table).")] = False,
) -> None:
    """Build the operator image from the Dockerfile into an OCI archive in the cache (needs root;
    rebuilt only when the Dockerfile, constraints.txt, pyproject.toml, README.md or operator/
    change).

    Load it into a node without a registry:
    ctr -n k8s.io images import --base-name localhost/fluxsupport ARCHIVE

    Example: fluxsupport devcluster image --sizes
    """
    try:
        recorded = image.built()
    except image.ImageError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"archive: {image.archive_path()}")
    typer.echo(f"image: {recorded['reference']}")
    typer.echo(f"digest: {recorded['digest']}")
    if sizes:
        typer.echo(recorded.get("sizes") or image.size_table(image.archive_path()))
