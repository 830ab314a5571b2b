"""Where the operator reads its SLA policy from: a file, or a ConfigMap key."""

from __future__ import annotations

import pathlib

import kubernetes

from fluxsupport.domain.policy import Policy, PolicyError, load_policy
from fluxsupport.kube import blocking

POLICY_KEY = "policy.yaml"


def from_file(path: pathlib.Path) -> Policy:
    try:
        text = path.read_text()
    except OSError as error:
        raise PolicyError(f"cannot read the policy file {path}: {error.strerror}") from error
    return load_policy(text, source=str(path))


def from_configmap(namespace: str, name: str, key: str = POLICY_KEY) -> Policy:
    core = kubernetes.client.CoreV1Api(blocking.api_client())
    try:
        configmap = core.read_namespaced_config_map(name, namespace)
    except kubernetes.client.ApiException as error:
        raise PolicyError(f"cannot read ConfigMap {namespace}/{name}: {error.reason}") from error
    data = configmap.data or {}
    if key not in data:
        raise PolicyError(f"ConfigMap {namespace}/{name} has no key {key!r}")
    return load_policy(data[key], source=f"ConfigMap {namespace}/{name} key {key}")
