"""The blocking official client, for the CLI and the demo.

The running operator uses the asyncio client of kube/api.py (and kopf) instead; all three log
in through kube/credentials.py, so a command acts as the same user the operator would.
"""

from __future__ import annotations

import base64
import json
import pathlib
import time
from typing import Any

import kubernetes

from fluxsupport import resources
from fluxsupport.kube import credentials


def api_client(kubeconfig: pathlib.Path | None = None) -> kubernetes.client.ApiClient:
    """A client for ``kubeconfig``, else by the precedence of kube/credentials.py."""
    return kubernetes.client.ApiClient(credentials.load(kubeconfig).configuration)


def install_crds(client: kubernetes.client.ApiClient, timeout_s: float = 60.0) -> None:
    """Create or update our CRDs and wait until the API server serves them."""
    extensions = kubernetes.client.ApiextensionsV1Api(client)
    names = []
    for crd in resources.crd_documents():
        name = crd["metadata"]["name"]
        names.append(name)
        try:
            existing = extensions.read_custom_resource_definition(name)
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise
            extensions.create_custom_resource_definition(crd)
        else:
            crd["metadata"]["resourceVersion"] = existing.metadata.resource_version
            extensions.replace_custom_resource_definition(name, crd)
    deadline = time.monotonic() + timeout_s
    for name in names:
        while True:
            status = extensions.read_custom_resource_definition(name).status
            if any(c.type == "Established" and c.status == "True"
                   for c in (status.conditions or [])):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} was not established within {timeout_s:.0f}s")
            time.sleep(0.1)


def read_configmap_data(namespace: str, name: str,
                        kubeconfig: pathlib.Path | None = None) -> dict[str, str]:
    """The data of a ConfigMap; LookupError with a readable reason when it cannot be read."""
    core = kubernetes.client.CoreV1Api(api_client(kubeconfig))
    try:
        configmap = core.read_namespaced_config_map(name, namespace)
    except kubernetes.client.ApiException as error:
        raise LookupError(f"cannot read ConfigMap {namespace}/{name}: {error.reason}") from error
    return dict(configmap.data or {})


def read_secret_data(namespace: str, name: str,
                     kubeconfig: pathlib.Path | None = None) -> dict[str, str]:
    """The decoded data of a Secret; LookupError with a readable reason when it cannot be
    read (missing, or no ``get`` right on it)."""
    core = kubernetes.client.CoreV1Api(api_client(kubeconfig))
    try:
        secret = core.read_namespaced_secret(name, namespace)
    except kubernetes.client.ApiException as error:
        raise LookupError(f"cannot read Secret {namespace}/{name}: {error.status} "
                          f"{error.reason}") from error
    return {key: base64.b64decode(value).decode(errors="replace")
            for key, value in (secret.data or {}).items()}


def api_message(error: Any) -> str:
    """The human part of an ApiException: the Status message, not the whole body."""
    try:
        return str(json.loads(error.body).get("message", error.reason))
    except (TypeError, ValueError):
        return str(error.reason)
