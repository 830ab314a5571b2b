"""kube/credentials.py: one precedence for kopf's login, the async client and the CLI client."""

from __future__ import annotations

import pathlib

import kopf
import pytest
import yaml

from fluxsupport.kube import api, blocking, credentials


def _kubeconfig(path: pathlib.Path, server: str, token: str) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server,
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


@pytest.fixture
def pod(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A process as in a pod: the ServiceAccount mounted (at a fake path), the service env
    set, no $KUBECONFIG and an empty home."""
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("sa-token")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nnot parsed here\n")
    monkeypatch.setattr(credentials, "SERVICE_ACCOUNT_DIR", sa)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def _token(loaded: credentials.Credentials) -> str | None:
    return loaded.connection().token


def test_in_cluster_when_there_is_no_kubeconfig(pod: pathlib.Path) -> None:
    loaded = credentials.load()
    connection = loaded.connection()
    assert loaded.source.startswith("in-cluster")
    assert (connection.server, connection.scheme, connection.token) == (
        "https://10.0.0.1:443", "bearer", "sa-token")
    assert connection.ca_path == str(credentials.SERVICE_ACCOUNT_DIR / "ca.crt")


def test_home_kubeconfig_beats_in_cluster(pod: pathlib.Path) -> None:
    _kubeconfig(pod / ".kube" / "config", "https://home.example:6443", "home-token")
    loaded = credentials.load()
    assert loaded.source == f"kubeconfig {pod / '.kube' / 'config'}"
    assert _token(loaded) == "home-token"


def test_kubeconfig_env_beats_home_and_in_cluster(pod: pathlib.Path, tmp_path: pathlib.Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _kubeconfig(pod / ".kube" / "config", "https://home.example:6443", "home-token")
    env = _kubeconfig(tmp_path / "env", "https://env.example:6443", "env-token")
    monkeypatch.setenv("KUBECONFIG", str(env))
    loaded = credentials.load()
    assert (loaded.connection().server, _token(loaded)) == (
        "https://env.example:6443", "env-token")


def test_explicit_kubeconfig_beats_everything(pod: pathlib.Path, tmp_path: pathlib.Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "env", "https://e:1", "env")))
    explicit = _kubeconfig(tmp_path / "explicit", "https://x.example:6443", "explicit-token")
    assert _token(credentials.load(explicit)) == "explicit-token"


def test_an_unusable_named_kubeconfig_fails_instead_of_falling_back(
        pod: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(credentials.CredentialsError, match="missing"):
        credentials.load()
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n")
    with pytest.raises(credentials.CredentialsError, match="broken"):
        credentials.load(broken)


def test_no_credentials_at_all(pod: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(credentials.CredentialsError, match="no in-cluster ServiceAccount"):
        credentials.load()


def test_kopf_the_async_client_and_the_cli_client_log_in_as_one_user(
        pod: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run --kubeconfig` in a pod sets $KUBECONFIG, so kopf and the writes both use the
    kubeconfig, not the ServiceAccount."""
    from fluxsupport.app import registrations

    kubeconfig = _kubeconfig(tmp_path / "user", "https://k.example:6443", "user-token")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    info = registrations.login(settings=kopf.OperatorSettings())
    assert isinstance(info, kopf.ConnectionInfo)
    assert (info.server, info.as_http_headers()["Authorization"]) == (
        "https://k.example:6443", "Bearer user-token")
    client = api.Client()
    assert client._headers()["Authorization"] == "Bearer user-token"
    cli = blocking.api_client()
    assert cli.configuration.host == "https://k.example:6443"
    assert cli.configuration.get_api_key_with_prefix("BearerToken") == "Bearer user-token"
    # Without it, all three are the ServiceAccount.
    monkeypatch.delenv("KUBECONFIG")
    info = registrations.login(settings=kopf.OperatorSettings())
    assert info.as_http_headers()["Authorization"] == "bearer sa-token"
    assert api.Client()._headers()["Authorization"] == "bearer sa-token"
    assert blocking.api_client().configuration.host == "https://10.0.0.1:443"
