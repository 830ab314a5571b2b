"""Fixtures the integration tests share; the session ones (control plane, CRDs, the session
operator, RT) are in tests/conftest.py."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import conftest, fixtures, harness

#: Flux v2.7.5 enterprise-distroless, with source-controller from before the CVE-2026-47680 fix.
PRE_FIX = fixtures.images(fixtures.PRE_FIX_V275)


@pytest.fixture(scope="module")
def flux(api: harness.Api) -> Iterator[list[dict[str, Any]]]:
    """The Flux Deployments and Pods of ``PRE_FIX`` in flux-system, as a kubelet would report
    them, for the module's tests; removed after them."""
    with harness.flux_inventory(api, PRE_FIX) as deployments:
        yield deployments


def _upgrade_session_release(kubeconfig: pathlib.Path, *values: str) -> None:
    upgraded = harness.helm(kubeconfig, "upgrade", conftest.SESSION_RELEASE, str(conftest.CHART),
                            "--namespace", conftest.OPERATOR_NAMESPACE, "--skip-crds",
                            "--set", "peering.enabled=true", *values)
    assert upgraded.returncode == 0, upgraded.stderr


@pytest.fixture
def session_rbac(operator_credentials: harness.OperatorCredentials,
                 kubeconfig: pathlib.Path) -> Iterator[Callable[..., None]]:
    """``session_rbac("--set", "policy.updates.configMap=x", ...)`` gives the session
    release's ServiceAccount the RBAC the chart renders for those values, so that an operator
    of the test runs with exactly the chart's rights for its policy; the release's own values
    come back after the test. Nothing to do when the operators run as admin."""
    changed = False

    def apply(*values: str) -> None:
        nonlocal changed
        if operator_credentials.service_account is not None:
            changed = True
            _upgrade_session_release(kubeconfig, *values)

    yield apply
    if changed:
        _upgrade_session_release(kubeconfig)
