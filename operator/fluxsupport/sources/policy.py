"""Where the operator reads its SLA policy from: a file, or a ConfigMap key."""

from __future__ import annotations

import pathlib

from fluxsupport.domain.policy import Policy, PolicyError, load_policy
from fluxsupport.kube import blocking

POLICY_KEY = "policy.yaml"


def from_file(path: pathlib.Path) -> Policy:
    try:
        text = path.read_text()
    except OSError as error:
        raise PolicyError(f"cannot read the policy file {path}: {error.strerror}") from error
    return load_policy(text, source=str(path))


def from_configmap(namespace: str, name: str, key: str = POLICY_KEY,
                   kubeconfig: pathlib.Path | None = None) -> Policy:
    try:
        data = blocking.read_configmap_data(namespace, name, kubeconfig)
    except LookupError as error:
        raise PolicyError(str(error)) from error
    if key not in data:
        raise PolicyError(f"ConfigMap {namespace}/{name} has no key {key!r}")
    return load_policy(data[key], source=f"ConfigMap {namespace}/{name} key {key}")
