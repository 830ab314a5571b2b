"""The one credential loader: whoever asks (kopf's peering keep-alive, the async client that
reads and writes, the CLI's blocking client) gets the same identity.

Precedence, the same as kubectl's:

1. an explicit kubeconfig: the ``kubeconfig`` argument, else ``$KUBECONFIG`` (``run
   --kubeconfig`` sets it). It is used or it fails: falling back to another identity when a
   file named on purpose is unusable would make the operator act as someone else silently;
2. ``~/.kube/config`` when it exists (a developer's machine);
3. the in-cluster ServiceAccount (``$KUBERNETES_SERVICE_HOST``/``PORT`` and its token).

So ``run --kubeconfig`` inside a pod acts as the kubeconfig's user everywhere, and the chart's
pod, which has neither, acts as its ServiceAccount everywhere. $KUBECONFIG is read at each call,
not when the kubernetes client is imported (its own default is frozen then).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import kubernetes

#: Where the kubelet mounts the ServiceAccount token and CA (tests point it elsewhere).
SERVICE_ACCOUNT_DIR = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")


class CredentialsError(kubernetes.config.ConfigException):  # type: ignore[misc]
    """No usable credentials; a ConfigException so that callers of the client's loaders
    need no second except clause."""


@dataclasses.dataclass(frozen=True)
class Connection:
    """What kopf needs to log in, with the field names of ``kopf.ConnectionInfo``.

    Plain data, so that the kube layer needs no kopf and the app layer no kubernetes client.
    """

    server: str
    ca_path: str | None
    insecure: bool
    scheme: str | None
    token: str | None
    username: str | None
    password: str | None
    certificate_path: str | None
    private_key_path: str | None


@dataclasses.dataclass(frozen=True)
class Credentials:
    #: Where they came from, for the start-up log: "kubeconfig /path" or "in-cluster ...".
    source: str
    #: A ``kubernetes.client.Configuration``; never the client's global default.
    configuration: Any

    def connection(self) -> Connection:
        cfg = self.configuration
        # Exec plugins and the in-cluster token refresh through this hook.
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        header = (cfg.get_api_key_with_prefix("BearerToken")
                  or cfg.get_api_key_with_prefix("authorization") or "")
        scheme, _, token = header.partition(" ") if " " in header else ("", "", header)
        return Connection(
            server=cfg.host, ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
            scheme=scheme or None, token=token or None,
            username=cfg.username or None, password=cfg.password or None,
            certificate_path=cfg.cert_file, private_key_path=cfg.key_file)


def _explicit(kubeconfig: pathlib.Path | str | None) -> str | None:
    if kubeconfig is not None and str(kubeconfig):
        return str(kubeconfig)
    return os.environ.get("KUBECONFIG") or None


def load(kubeconfig: pathlib.Path | str | None = None) -> Credentials:
    """The credentials by the precedence of this module's docstring."""
    configuration = kubernetes.client.Configuration()
    path = _explicit(kubeconfig)
    if path is None:
        home = pathlib.Path("~/.kube/config").expanduser()
        if home.is_file():
            path = str(home)
    if path is not None:
        try:
            kubernetes.config.load_kube_config(config_file=path,
                                               client_configuration=configuration)
        except (kubernetes.config.ConfigException, OSError, TypeError, ValueError) as error:
            raise CredentialsError(f"kubeconfig {path}: {error}") from error
        return Credentials(f"kubeconfig {path}", configuration)
    loader = kubernetes.config.incluster_config.InClusterConfigLoader(
        token_filename=str(SERVICE_ACCOUNT_DIR / "token"),
        cert_filename=str(SERVICE_ACCOUNT_DIR / "ca.crt"))
    try:
        loader.load_and_set(configuration)
    except kubernetes.config.ConfigException as error:
        raise CredentialsError(
            f"no kubeconfig ($KUBECONFIG unset, no ~/.kube/config) and no in-cluster "
            f"ServiceAccount ({error})") from error
    return Credentials(f"in-cluster ServiceAccount ({SERVICE_ACCOUNT_DIR})", configuration)
