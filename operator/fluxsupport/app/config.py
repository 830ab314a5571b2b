"""Operator-wide settings, from command-line options or ``FLUXSUPPORT_*`` variables."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    #: Port of the HTTP server for /metrics, /healthz and /readyz.
    metrics_port: int = 8080
    #: Address the HTTP server binds to.
    metrics_host: str = "0.0.0.0"
    #: Without peering only one replica may run; with it, a standby waits.
    standalone: bool = True
    priority: int = 0
    #: Seconds a replica's keep-alive stays valid (kopf peering). A killed active replica is
    #: replaced after at most this long; a stopped one at once (it removes its keep-alive).
    peering_lifetime: int = 60
    #: Kubernetes namespace the operator runs in (its ConfigMaps live there).
    namespace: str = "fluxsupport-system"
    #: Namespaces where the Flux controllers and the Flux Operator run.
    flux_namespaces: tuple[str, ...] = ("flux-system",)
