"""Test harness: the real control plane, the operator as a subprocess, and API helpers."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import kubernetes
import yaml

from fluxsupport.constants import GROUP, VERSION
from fluxsupport.devcluster import cluster

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "upstream"
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05,
             what: str = "condition") -> T:
    """Return the first truthy result of ``probe``; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def kubectl(kubeconfig: pathlib.Path, *args: str, input_text: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = pathlib.Path(sys.executable).parent / "kubectl"
    return subprocess.run([str(binary), f"--kubeconfig={kubeconfig}", *args], input=input_text,
                          capture_output=True, text=True, check=check, timeout=120)


class Api:
    """Thin wrapper over the official client for the objects the tests handle."""

    def __init__(self, kubeconfig: pathlib.Path) -> None:
        self.kubeconfig = kubeconfig
        self.client = kubernetes.config.new_client_from_config(str(kubeconfig))
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.apps = kubernetes.client.AppsV1Api(self.client)

    def create_case(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "supportcases", dict(body))
        return result

    def get_case(self, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "supportcases", name)
        return result

    def patch_case(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "supportcases", name, dict(patch))
        return result

    def create_bulletin(self, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.create_cluster_custom_object(
            GROUP, VERSION, "securitybulletins", dict(body))
        return result

    def get_bulletin(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_cluster_custom_object(
            GROUP, VERSION, "securitybulletins", name)
        return result

    def delete_bulletin(self, name: str) -> None:
        with contextlib.suppress(kubernetes.client.ApiException):
            self.custom.delete_cluster_custom_object(GROUP, VERSION, "securitybulletins", name)

    def create_namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name}})

    def events_for(self, namespace: str, name: str) -> list[Any]:
        events = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}")
        return list(events.items)


def condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def install_crds(kubeconfig: pathlib.Path) -> None:
    kubectl(kubeconfig, "apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/supportcases.support.fluxcd.controlplane.io",
            "crd/securitybulletins.support.fluxcd.controlplane.io")


class OperatorProcess:
    """``fluxsupport run`` as a child process, killed with the test run whatever happens."""

    def __init__(self, kubeconfig: pathlib.Path, log_dir: pathlib.Path,
                 extra_args: tuple[str, ...] = (), env: Mapping[str, str] | None = None,
                 name: str = "operator", verbose: bool = True) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_dir / f"{name}.log"
        self.extra_args = extra_args
        self.env = dict(env or {})
        self.verbose = verbose
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self, wait_ready: bool = True) -> None:
        self.port = cluster.free_port()
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fluxsupport", "run", "--metrics-host", "127.0.0.1",
             "--metrics-port", str(self.port), *(["--verbose"] if self.verbose else []),
             *self.extra_args],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=cluster._die_with_parent,  # noqa: PLW1509
        )
        log.close()
        if wait_ready:
            wait_for(self.ready, timeout=60, interval=0.1, what="operator /readyz")

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"operator exited with {self.process.returncode}:\n"
                                 f"{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz",
                                        timeout=1) as response:
                return bool(json.loads(response.read())["ready"])
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text: str = response.read().decode()
            return text

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            cluster.stop_process_group(self.process.pid, grace_s=15)
            self.process.wait(timeout=5)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a node failure or OOM kill would."""
        if self.process is not None and self.process.poll() is None:
            cluster.stop_process_group(self.process.pid, grace_s=0)
            self.process.wait(timeout=5)
        self.process = None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_operator(kubeconfig: pathlib.Path, log_dir: pathlib.Path,
                     **kwargs: Any) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(kubeconfig, log_dir, **kwargs)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


def load_yaml(path: pathlib.Path) -> Any:
    return yaml.safe_load(path.read_text())
