"""``fluxsupport run``: the operator itself."""

from __future__ import annotations

import errno
import os
import pathlib
import time
from typing import Annotated

import typer

from fluxsupport.app import config, runner
from fluxsupport.domain.policy import Policy, PolicyError
from fluxsupport.kube import credentials
from fluxsupport.sources import policy as policy_source


def run(
    kubeconfig: Annotated[pathlib.Path | None, typer.Option(
        envvar="KUBECONFIG",
        help="Kubeconfig to use; else ~/.kube/config, else the in-cluster ServiceAccount.")
    ] = None,
    metrics_port: Annotated[int, typer.Option(
        envvar="FLUXSUPPORT_METRICS_PORT", help="Port for /metrics, /healthz, /readyz.")] = 8080,
    metrics_host: Annotated[str, typer.Option(envvar="FLUXSUPPORT_METRICS_HOST")] = "0.0.0.0",
    namespace: Annotated[str, typer.Option(
        envvar="FLUXSUPPORT_NAMESPACE", help="The operator's own namespace.")
    ] = "fluxsupport-system",
    flux_namespace: Annotated[list[str] | None, typer.Option(
        help="Namespace where Flux runs (repeat for several).")] = None,
    peering: Annotated[bool, typer.Option(
        envvar="FLUXSUPPORT_PEERING",
        help="Coordinate with other replicas through kopf peering (needs its CRDs).")] = False,
    priority: Annotated[int | None, typer.Option(
        envvar="FLUXSUPPORT_PRIORITY",
        help="With --peering, the live replica with the highest priority acts. Default: from "
             "the start time, so that the oldest replica acts.")] = None,
    peering_lifetime: Annotated[int, typer.Option(
        envvar="FLUXSUPPORT_PEERING_LIFETIME", min=2,
        help="Seconds a replica's keep-alive is valid: the longest a standby waits for a "
             "killed leader.")] = 60,
    policy_file: Annotated[pathlib.Path | None, typer.Option(
        "--policy", envvar="FLUXSUPPORT_POLICY",
        help="SLA policy YAML file (time zone, holidays, hours, targets).")] = None,
    policy_configmap: Annotated[str | None, typer.Option(
        envvar="FLUXSUPPORT_POLICY_CONFIGMAP",
        help="Read the policy from key policy.yaml of this ConfigMap in --namespace.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the operator against the cluster of the current kubeconfig.

    Example: fluxsupport run --metrics-port 8080
    """
    if kubeconfig is not None:
        if not kubeconfig.exists():
            raise typer.BadParameter(f"{kubeconfig} does not exist", param_hint="--kubeconfig")
        os.environ["KUBECONFIG"] = str(kubeconfig)
    try:
        if policy_file is not None:
            policy = policy_source.from_file(policy_file)
        elif policy_configmap:
            policy = policy_source.from_configmap(namespace, policy_configmap)
        else:
            policy = Policy()
    except PolicyError as error:
        typer.echo(f"error: invalid SLA policy: {error}", err=True)
        raise typer.Exit(2) from error
    try:
        runner.run(config.OperatorConfig(
            metrics_port=metrics_port, metrics_host=metrics_host, namespace=namespace,
            standalone=not peering, priority=_priority(priority, peering),
            peering_lifetime=peering_lifetime,
            flux_namespaces=_flux_namespaces(flux_namespace),
        ), policy, verbose=verbose)
    except credentials.CredentialsError as error:
        typer.echo(f"error: no usable Kubernetes credentials: {error}", err=True)
        raise typer.Exit(1) from error
    except OSError as error:
        typer.echo(f"error: {_what_failed(error, metrics_host, metrics_port)}: {error}", err=True)
        raise typer.Exit(1) from error


#: What binding a listening socket fails with (a connect gets these only when the machine has
#: no local port left); the operator's only listening socket is the metrics port.
_BIND_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL})
#: What reaching a server fails with; the operator connects to nothing but the API server.
_CONNECT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED,
                             errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH})


def _what_failed(error: OSError, metrics_host: str, metrics_port: int) -> str:
    """Name the failed step: an OSError ends the process from the metrics bind, from the
    connection to the API server, or from a file (kubeconfig, certificates), and each asks the
    user to fix something different."""
    # asyncio words a failed bind "error while attempting to bind on address ..." and keeps
    # the errno; EACCES (a privileged port) is a bind failure only with that wording.
    bind_wording = "attempting to bind" in str(error)
    if error.errno in _BIND_ERRNOS or (bind_wording and error.errno == errno.EACCES):
        return f"cannot serve metrics on {metrics_host}:{metrics_port}"
    if isinstance(error, ConnectionError | TimeoutError) or error.errno in _CONNECT_ERRNOS:
        return "cannot reach the Kubernetes API server"
    if error.filename is not None:
        return "cannot open a file the operator needs"
    return "the operator stopped on an operating-system error"


def _priority(given: int | None, peering: bool) -> int:
    """The peering priority. kopf pauses every replica while two live ones share a priority,
    and the chart's replicas are identical pods: without a given priority, one derived from the
    start time (older is higher, to the microsecond) elects the oldest replica, and a replica
    that restarts waits behind the one that took over."""
    if given is not None or not peering:
        return given or 0
    return -(time.time_ns() // 1000)


def _flux_namespaces(given: list[str] | None) -> tuple[str, ...]:
    if given:
        return tuple(given)
    from_env = os.environ.get("FLUXSUPPORT_FLUX_NAMESPACES", "")
    return tuple(n.strip() for n in from_env.split(",") if n.strip()) or ("flux-system",)
