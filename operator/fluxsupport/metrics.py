"""Prometheus metrics, all in one registry so that tests can read them in-process."""

from __future__ import annotations

import prometheus_client

REGISTRY = prometheus_client.CollectorRegistry(auto_describe=True)

BUILD_INFO = prometheus_client.Info(
    "fluxsupport_build", "Version of the running fluxsupport operator.", registry=REGISTRY)
RECONCILIATIONS = prometheus_client.Counter(
    "fluxsupport_reconciliations_total", "Reconciliations by kind and result.",
    ["kind", "result"], registry=REGISTRY)


def render() -> bytes:
    return prometheus_client.generate_latest(REGISTRY)
