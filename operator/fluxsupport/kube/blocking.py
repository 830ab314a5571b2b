"""The blocking official client, for the CLI and the demo.

The running operator uses the asyncio client of kube/api.py (and kopf) instead; all three log
in through kube/credentials.py, so a command acts as the same user the operator would. The
commands see the client through this module only: ``CustomObjects`` and the errors below.
"""

from __future__ import annotations

import base64
import json
import pathlib
import time
from typing import Any

import kubernetes
import urllib3

from fluxsupport import constants, resources
from fluxsupport.kube import credentials

#: An answer of the API server that is an error; ``status`` holds its HTTP status.
ApiError = kubernetes.client.ApiException
#: No usable kubeconfig or in-cluster credentials.
ConfigError = kubernetes.config.ConfigException
#: What a failed call raises: an HTTP error, or urllib3's give-up after its retries.
CLIENT_ERRORS = (ApiError, OSError, urllib3.exceptions.HTTPError)


def api_client(kubeconfig: pathlib.Path | None = None) -> kubernetes.client.ApiClient:
    """A client for ``kubeconfig``, else by the precedence of kube/credentials.py."""
    return kubernetes.client.ApiClient(credentials.load(kubeconfig).configuration)


class CustomObjects:
    """The operator's custom resources (``support.fluxcd.controlplane.io``): what the case,
    bulletin and report commands read and write. ``namespace`` None is cluster-wide: a
    cluster-scoped kind, or every namespace of a namespaced one."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._api = kubernetes.client.CustomObjectsApi(client)

    def get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        if namespace is None:
            found: dict[str, Any] = self._api.get_cluster_custom_object(
                constants.GROUP, constants.VERSION, plural, name)
        else:
            found = self._api.get_namespaced_custom_object(
                constants.GROUP, constants.VERSION, namespace, plural, name)
        return found

    def list(self, plural: str, namespace: str | None = None) -> dict[str, Any]:
        """The list answer: ``items`` and the list's ``metadata``."""
        if namespace is None:
            listing: dict[str, Any] = self._api.list_cluster_custom_object(
                constants.GROUP, constants.VERSION, plural)
        else:
            listing = self._api.list_namespaced_custom_object(
                constants.GROUP, constants.VERSION, namespace, plural)
        return listing

    def create(self, plural: str, body: dict[str, Any], namespace: str | None = None
               ) -> dict[str, Any]:
        if namespace is None:
            created: dict[str, Any] = self._api.create_cluster_custom_object(
                constants.GROUP, constants.VERSION, plural, body)
        else:
            created = self._api.create_namespaced_custom_object(
                constants.GROUP, constants.VERSION, namespace, plural, body)
        return created

    def patch(self, plural: str, name: str, body: dict[str, Any], namespace: str
              ) -> dict[str, Any]:
        """Patch a namespaced object (a merge patch of ``body``)."""
        patched: dict[str, Any] = self._api.patch_namespaced_custom_object(
            constants.GROUP, constants.VERSION, namespace, plural, name, body)
        return patched


def custom_objects(kubeconfig: pathlib.Path | None = None) -> CustomObjects:
    """``CustomObjects`` for ``kubeconfig``, else by the precedence of kube/credentials.py."""
    return CustomObjects(api_client(kubeconfig))


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
